"""Hybrid search over the chunk rows of one knowledge base: BM25, dense vectors, or both fused.

The searcher knows rows only — the KB store (`kb.store.KnowledgeBase.search`) turns rows into
passages — and gets its two halves from outside: a BM25 ranking function over the generation's
bm25s index and, when the KB has them, a `VectorIndex` plus the `Embedder` that made it.

Modes:

* ``bm25``: lexical only (scores are BM25 scores).
* ``dense``: vectors only (scores are cosine similarities); an error if the KB has no vectors.
* ``hybrid``: both rankings, each `depth` deep, fused by reciprocal rank fusion (scores are RRF
  scores). Lexical search finds exact names, numbers and quoted spans, which embeddings blur; dense
  search finds paraphrases and topics without the query's words. Fusing ranks (not scores) needs no
  calibration between the two. Without vectors, hybrid is BM25, so a KB built without embeddings
  still answers.

Trade-offs:

* Equal-weight RRF cannot be better than the better side on every kind of query. Measured by
  `bench/retrieval.py` on the demo corpus (MiniLM): on copied spans BM25 finds 100% and dense 42%;
  on paraphrased topic questions dense beats BM25 (recall@10 0.59 vs 0.44). Plain RRF (each side
  50 deep, k=60) got 0.97 and 0.56. Keeping each side's first hit ahead of the fused rest
  (`fusion.DEFAULT_KEEP_FIRST`) gets every span (1.00, MRR 0.99) at the same topic recall (0.56),
  at the cost of the topic questions' first-hit rank (MRR 0.71; plain RRF 0.85) — the writer sees
  the whole top k, so recall matters more here than the order within it.
* Query embeddings are cached (a run searches the same keywords again and again, and MiniLM spends
  ~10–20 ms a query); the cache is small and per searcher.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Literal

import numpy as np
import numpy.typing as npt

from deepdraft.errors import KnowledgeBaseError
from deepdraft.retrieval.index.fusion import DEFAULT_K, DEFAULT_KEEP_FIRST, reciprocal_rank_fusion

if TYPE_CHECKING:  # annotations only: the KB store imports this module, and must stay quick to import
    from deepdraft.retrieval.index.embedders import Embedder, FloatMatrix
    from deepdraft.retrieval.index.vectors import VectorIndex

SearchMode = Literal["hybrid", "bm25", "dense"]
RowMask = npt.NDArray[np.bool_]
BM25Ranker = Callable[[str, int, RowMask | None], list[tuple[int, float]]]
"""(query, k, allowed rows or None) → up to k (row, score) pairs, best first."""

DEFAULT_DEPTH = 50
"""Candidates taken from each side before fusing (at least k)."""


class HybridSearcher:
    """Searches one KB's rows by BM25, by vectors, or by both fused. Thread-safe."""

    def __init__(
        self,
        bm25: BM25Ranker,
        vectors: VectorIndex | None = None,
        embedder: Embedder | None = None,
        *,
        depth: int = DEFAULT_DEPTH,
        rrf_k: int = DEFAULT_K,
        cache_size: int = 256,
    ) -> None:
        if (vectors is None) != (embedder is None):
            raise ValueError("dense search needs both the vectors and the embedder that made them")
        self._bm25 = bm25
        self._vectors = vectors
        self._embedder = embedder
        self.depth = depth
        self.rrf_k = rrf_k
        self._cache: OrderedDict[str, FloatMatrix] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()

    @property
    def has_dense(self) -> bool:
        return self._vectors is not None

    def search(
        self, query: str, k: int, *, mode: SearchMode = "hybrid", allowed: RowMask | None = None
    ) -> list[tuple[int, float]]:
        """The `k` best (row, score) pairs for `query`, best first; `allowed` restricts the rows."""
        if k <= 0 or not query.strip():
            return []
        if mode == "bm25" or (mode == "hybrid" and not self.has_dense):
            return self._bm25(query, k, allowed)
        if mode == "dense":
            return self._dense(query, k, allowed)
        if mode != "hybrid":
            raise ValueError(f"unknown search mode {mode!r}")
        depth = max(self.depth, k)
        lexical = [row for row, _ in self._bm25(query, depth, allowed)]
        semantic = [row for row, _ in self._dense(query, depth, allowed)]
        return reciprocal_rank_fusion(
            [lexical, semantic], k=self.rrf_k, limit=k, keep_first=DEFAULT_KEEP_FIRST
        )

    def embed_query(self, query: str) -> FloatMatrix:
        """The query's vector, from the cache when the same text was embedded recently."""
        if self._embedder is None:
            raise KnowledgeBaseError("this knowledge base has no dense vectors")
        with self._lock:
            cached = self._cache.get(query)
            if cached is not None:
                self._cache.move_to_end(query)
                return cached
        # Outside the lock: a slow embedding must not block searches whose vector is cached.
        vector: FloatMatrix = self._embedder.embed([query])[0]
        with self._lock:
            self._cache[query] = vector
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return vector

    def _dense(self, query: str, k: int, allowed: RowMask | None) -> list[tuple[int, float]]:
        if self._vectors is None or self._embedder is None:
            raise KnowledgeBaseError(
                "this knowledge base has no dense vectors: search it with mode bm25 or hybrid, or "
                "re-add its documents with embeddings enabled"
            )
        vector = self.embed_query(query)
        if vector.shape[0] != self._vectors.dimension:
            raise KnowledgeBaseError(
                f"the knowledge base's vectors have {self._vectors.dimension} dimensions but "
                f"{self._embedder.name} makes {vector.shape[0]}: search with the embedder that built "
                "them, or rebuild them"
            )
        return self._vectors.search(vector, k, allowed)
