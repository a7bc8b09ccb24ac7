"""One `Retriever` over several: a knowledge base and the web, searched together.

Results are interleaved — the first passage of each source, then the second of each, and so on —
rather than merged by score: BM25 scores of a large local index and of a handful of web pages are
not on one scale, and interleaving guarantees that every source is represented in the evidence a
prompt shows, whichever scores higher. A passage whose text another source already gave is dropped.
"""

from __future__ import annotations

import hashlib
from itertools import zip_longest

from deepdraft.ports import Passage, Retriever

__all__ = ["CombinedRetriever"]


class CombinedRetriever:
    """Searches every part for each query and interleaves their results, first part first."""

    def __init__(self, *parts: Retriever) -> None:
        if not parts:
            raise ValueError("CombinedRetriever needs at least one retriever")
        self.parts = parts

    def search(self, query: str, k: int) -> list[Passage]:
        if k <= 0:
            return []
        ranked = [part.search(query, k) for part in self.parts]
        merged: list[Passage] = []
        seen: set[str] = set()
        for rank in zip_longest(*ranked):
            for passage in rank:
                if passage is None:
                    continue
                text = " ".join(passage.text.split())
                if text not in seen:
                    seen.add(text)
                    merged.append(passage)
        return merged[:k]

    def fingerprint(self) -> str:
        """Changes when any part's fingerprint does."""
        joined = "\0".join(part.fingerprint() for part in self.parts)
        return hashlib.sha256(joined.encode("utf-8")).hexdigest()[:16]
