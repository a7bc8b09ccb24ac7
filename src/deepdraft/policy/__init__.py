"""Policies: what to ask the model next (WARP, plan-then-write, single pass) and the finishing passes.
No I/O: they talk to an `LLM` and a `Retriever`.
"""
