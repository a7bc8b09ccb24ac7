"""LLM adapters: the OpenAI-compatible client and the scripted fakes used by tests."""
