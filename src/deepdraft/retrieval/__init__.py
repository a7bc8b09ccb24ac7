"""Retrieval adapters: reading a corpus, chunking it, and searching it."""
