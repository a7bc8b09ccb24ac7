"""The WARP protocol: the actions a model may take, their grammar and schemas, prompt templates and
fitting prompts into a context window.
"""
