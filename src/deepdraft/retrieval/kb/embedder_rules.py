"""The rules both KB engines apply to embedders: one model per KB, recorded when its first vectors are
made, and searched only with that model.

Shared as a base class because both engines keep the same state for it: `label`, `_meta` (the KB's
recorded settings), `_embedding` (the caller's embedding settings) and `_embedder` (built once).
"""

from __future__ import annotations

import json
from typing import Any

from deepdraft.errors import KnowledgeBaseError
from deepdraft.retrieval.index.hybrid import SearchMode
from deepdraft.settings import EmbeddingSettings


class EmbedderRules:
    label: str
    _meta: dict[str, Any]
    _embedding: EmbeddingSettings
    _embedder: Any

    def _writer_embedder(
        self, meta: dict[str, Any], embedder: Any, embedding: EmbeddingSettings | None
    ) -> Any:
        """The embedder this add brings (None: none asked for); refuses one the KB was not built with."""
        if embedder is None and embedding is not None and embedding.enabled:
            from deepdraft.retrieval.index.embedders import build_embedder

            embedder = build_embedder(embedding)
        if embedder is None:
            return None
        recorded = meta.get("embedder")
        if recorded is not None and recorded != embedder.name:
            raise KnowledgeBaseError(
                f"knowledge base {self.label!r} was built with the embedder {recorded!r}; it cannot mix in "
                f"vectors of {embedder.name!r} (add without an embedder option, or use another KB)"
            )
        self._embedder = embedder
        return embedder

    def _embedder_for(self, meta: dict[str, Any]) -> Any:
        """The embedder the KB was built with (built on first use from what it recorded), or None."""
        if meta.get("embedder") is None:
            return None
        if self._embedder is None:
            from deepdraft.retrieval.index.embedders import build_embedder

            spec = json.loads(str(meta.get("embedder_spec") or "{}"))
            settings = self._embedding.model_copy(
                update={"enabled": True, "base_url": spec.get("base_url"), "model": spec.get("model")}
            )
            self._embedder = build_embedder(settings)
            self._check_embedder(self._embedder)
        return self._embedder

    def _check_embedder(self, embedder: Any) -> None:
        recorded = self._meta.get("embedder")
        if recorded is not None and recorded != embedder.name:
            raise KnowledgeBaseError(
                f"knowledge base {self.label!r} was built with the embedder {recorded!r}, "
                f"not {embedder.name!r}; its vectors cannot be searched with another model"
            )

    def _effective_mode(self, mode: SearchMode) -> SearchMode:
        has_vectors = self._meta.get("embedder") is not None
        if mode == "dense" and not has_vectors:
            raise KnowledgeBaseError(
                f"knowledge base {self.label!r} has no dense vectors (it was built without an embedder); "
                "search it with mode bm25 or hybrid, or add its documents again with --embed"
            )
        return mode if has_vectors else "bm25"
