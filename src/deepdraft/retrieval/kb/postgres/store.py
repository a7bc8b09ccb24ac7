"""`PostgresKnowledgeBase`: a KB in a Postgres database, behind the same methods as the embedded
`KnowledgeBase` (the `Retriever` port, `add`, `remove`, `info`, `documents`, ...), so the runner,
the CLI, the server and MCP use either without knowing which.

How a change is made: reading and chunking happen inside one transaction that first takes the KB's
advisory lock (`database.lock_key`): writers queue in Postgres, not on a file, and a crash anywhere
before the commit leaves the KB as it was (Postgres rolls back). Readers never wait: each search is
one statement on a pooled connection and sees the last committed revision.

Trade-offs:

* A reader is not pinned to one revision (the embedded engine's generations are): every search sees
  the newest committed content, and `fingerprint()` follows the revision, which `refresh()` rereads.
* The lexical score is BM25 with the embedded engine's parameters, from statistics the writers keep
  (`statistics`); a KB made before they existed ranks with ``ts_rank`` until its next add counts them.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from deepdraft.core.evidence import Passage
from deepdraft.errors import KnowledgeBaseError
from deepdraft.retrieval.documents.limits import DocumentLimits
from deepdraft.retrieval.index.fusion import DEFAULT_K
from deepdraft.retrieval.index.hybrid import DEFAULT_DEPTH, SearchMode
from deepdraft.retrieval.kb.embedder_rules import EmbedderRules
from deepdraft.retrieval.kb.filters import DocumentMatcher
from deepdraft.retrieval.kb.postgres import database as pg
from deepdraft.retrieval.kb.postgres import statistics
from deepdraft.retrieval.kb.postgres.ingest import (
    ingest_paths,
    reanalyse,
    record_failures,
    select_for_removal,
)
from deepdraft.retrieval.kb.postgres.search import passages, ranked_ids
from deepdraft.retrieval.kb.values import AddResult, IngestNote, KBInfo, ProgressSink, _ignore
from deepdraft.settings import EmbeddingSettings, RetrievalSettings

_SEARCH_MODES = ("hybrid", "bm25", "dense")


class PostgresKnowledgeBase(EmbedderRules):
    """KB `label` in the database `dsn` names. Thread-safe; searches share the process's pool."""

    def __init__(
        self,
        dsn: str,
        schema: str,
        *,
        label: str,
        only: Sequence[str] = (),
        exclude: Sequence[str] = (),
        mode: SearchMode = "hybrid",
        embedder: Any = None,
        embedding: EmbeddingSettings | None = None,
        depth: int = DEFAULT_DEPTH,
        rrf_k: int = DEFAULT_K,
    ) -> None:
        self._dsn = dsn
        self.schema = schema
        self.label = label
        self.location = f"{pg.safe_dsn(dsn)}#{label}"
        self.only = tuple(only)
        self.exclude = tuple(exclude)
        self.mode: SearchMode = mode
        self._embedder = embedder
        self._embedding = embedding or EmbeddingSettings()
        self._depth = depth
        self._rrf_k = rrf_k
        self._lock = threading.RLock()
        self._allowed_cache: dict[tuple[tuple[str, ...], tuple[str, ...]], list[int] | None] = {}
        self._query_vectors: dict[str, Any] = {}
        self._closed = False
        self._meter: Any = None  # counts searches for the egress audit once a run asks (`meter_searches`)
        self._meta: dict[str, Any] = {}
        self.refresh()

    # -- opening -----------------------------------------------------------------------------------

    @classmethod
    def create(
        cls, dsn: str, name: str, settings: RetrievalSettings | None = None, **options: Any
    ) -> PostgresKnowledgeBase:
        with pg.connection(dsn) as conn:
            pg.create_schema(conn, name, settings or RetrievalSettings())
        return cls.open(dsn, name, **options)

    @classmethod
    def open(cls, dsn: str, name: str, *, label: str | None = None, **options: Any) -> PostgresKnowledgeBase:
        mode = options.get("mode", "hybrid")
        if mode not in _SEARCH_MODES:
            raise KnowledgeBaseError(f"unknown search mode {mode!r}: use hybrid, bm25 or dense")
        with pg.connection(dsn) as conn:
            schema = pg.schema_of(conn, name)
        if schema is None:
            raise KnowledgeBaseError(f"no knowledge base named {name!r} in Postgres at {pg.safe_dsn(dsn)}")
        kb = cls(dsn, schema, label=label or name, **options)
        try:
            if kb._embedder is not None:
                kb._check_embedder(kb._embedder)
            kb._effective_mode(mode)
            if kb.only or kb.exclude:
                kb._allowed(kb.only, kb.exclude, strict=True)
        except BaseException:
            kb.close()
            raise
        return kb

    # -- the Retriever port ----------------------------------------------------------------------------

    def search(
        self,
        query: str,
        k: int,
        *,
        only: Sequence[str] | None = None,
        exclude: Sequence[str] | None = None,
        mode: SearchMode | None = None,
    ) -> list[Passage]:
        if k <= 0 or not query.strip() or self._closed:
            return []
        allowed = self._allowed(
            self.only if only is None else tuple(only),
            self.exclude if exclude is None else tuple(exclude),
            strict=False,
        )
        if allowed is not None and not allowed:
            return []
        mode = self._effective_mode(mode or self.mode)
        vector = self._query_vector(query) if mode != "bm25" else None
        pool = max(k, self._depth) if mode == "hybrid" else k
        if self._meter is not None:
            self._meter.add(1, len(query.encode("utf-8", "surrogatepass")))
        bm25 = self.lexical_ranking == "bm25"
        with self._connection() as conn, conn.transaction():
            # One snapshot for the statistics, the ranking and the passages: a commit between them
            # would score with counts that do not match the passages scored.
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            ranked = ranked_ids(conn, query, pool, mode, vector, allowed, self._depth, self._rrf_k, bm25=bm25)
            return passages(conn, ranked)[:k]

    def fingerprint(self) -> str:
        view = json.dumps(
            [
                self.schema,
                self.revision,
                sorted(self.only),
                sorted(self.exclude),
                self._effective_mode(self.mode),
            ]
        )
        return hashlib.sha256(view.encode()).hexdigest()[:16]

    # -- changing ---------------------------------------------------------------------------------------

    def add(
        self,
        paths: Sequence[str | Path],
        *,
        progress: ProgressSink | None = None,
        embedder: Any = None,
        embedding: EmbeddingSettings | None = None,
        max_bytes: int | None = None,
        limits: DocumentLimits | None = None,
        ocr: bool = True,
        prune: bool = False,
        wait: bool = True,
    ) -> AddResult:
        """As `KnowledgeBase.add`; concurrent writers queue on the KB's advisory lock (`wait` unused:
        Postgres always waits, and a writer that dies releases its lock with its connection)."""
        say = progress or _ignore
        started = time.monotonic()
        result = AddResult()
        settings = RetrievalSettings()
        limit = max_bytes if max_bytes is not None else int(settings.max_file_mb * 1024 * 1024)
        bounds = limits if limits is not None else DocumentLimits.from_settings(settings)
        with self._connection() as conn:
            new_embedder = self._writer_embedder(pg.read_meta(conn, self.label), embedder, embedding)
            if new_embedder is not None:
                with conn.transaction():  # short: see `ensure_vector_column`
                    conn.execute("SELECT pg_advisory_xact_lock(%s)", (pg.lock_key(self.schema),))
                    if pg.read_meta(conn, self.label).get("embedder") is None:
                        pg.ensure_vector_column(conn, int(new_embedder.dimension))
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (pg.lock_key(self.schema),))
                meta = pg.read_meta(conn, self.label)
                self._writer_embedder(meta, new_embedder, None)  # another writer may have set one since
                changed = False
                if new_embedder is not None and meta.get("embedder") is None:
                    self._set_embedder(conn, new_embedder, embedding)
                    meta = pg.read_meta(conn, self.label)
                    changed = True
                changed |= statistics.ensure(conn, meta)
                changed |= reanalyse(conn, meta, say)
                writer_embedder = self._embedder_for(meta)
                index_after = writer_embedder is not None and not pg.has_vector_index(conn)
                counted = statistics.StatisticsDelta()
                changed |= ingest_paths(
                    conn, meta, paths, result, limit, bounds, ocr, prune, writer_embedder, counted, say
                )
                counted.flush(conn)
                if index_after:
                    say(IngestNote("indexing", "", "building the HNSW graph over the vectors"))
                    pg.create_vector_index(conn)
                record_failures(conn, result.failures)
                revision = int(meta.get("revision", 0))
                if changed:
                    revision = self._bump_revision(conn, meta)
                result.revision = revision
                result.changed = changed
        self.refresh()
        result.seconds = time.monotonic() - started
        return result

    def remove(
        self, selectors: Sequence[str], *, progress: ProgressSink | None = None, wait: bool = True
    ) -> list[str]:
        say = progress or _ignore
        if not selectors:
            raise KnowledgeBaseError("name the documents to remove (doc ids, paths, URLs or globs)")
        with self._connection() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (pg.lock_key(self.schema),))
            meta = pg.read_meta(conn, self.label)
            removed = select_for_removal(conn, selectors)
            statistics.ensure(conn, meta)
            counted = statistics.StatisticsDelta()
            counted.forget_documents(conn, removed)
            conn.execute("DELETE FROM documents WHERE id = ANY(%s)", (list(removed),))
            counted.flush(conn)
            for doc_id, location in removed.values():
                say(IngestNote("removed", location, doc_id))
            conn.execute("DELETE FROM sources WHERE id NOT IN (SELECT DISTINCT source FROM documents)")
            self._bump_revision(conn, meta)
        self.refresh()
        return [doc_id for doc_id, _ in removed.values()]

    # -- reading the rest -------------------------------------------------------------------------------

    def info(self) -> KBInfo:
        with self._connection() as conn:
            documents, pages = conn.execute(
                "SELECT count(*), coalesce(sum(pages), 0) FROM documents"
            ).fetchone()
            (chunks,) = conn.execute("SELECT count(*) FROM chunks").fetchone()
            formats = dict(
                conn.execute("SELECT format, count(*) FROM documents GROUP BY format ORDER BY 2 DESC")
            )
            failures = [
                {"location": location, "reason": reason}
                for location, reason in conn.execute("SELECT location, reason FROM failures ORDER BY seq")
            ]
            (size,) = conn.execute(
                "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c"
                " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relkind = 'r'",
                (self.schema,),
            ).fetchone()
            meta = pg.read_meta(conn, self.label)
        dimension = meta.get("embedder_dimension")
        return KBInfo(
            path=self.location,
            format_version=int(meta["format_version"]),
            revision=int(meta.get("revision", 0)),
            documents=int(documents),
            chunks=int(chunks),
            pages=int(pages),
            size_bytes=int(size),
            formats={str(k): int(v) for k, v in formats.items()},
            embedder=meta.get("embedder"),
            dimension=int(dimension) if dimension else None,
            chunking={"chunk_tokens": int(meta["chunk_tokens"]), "chunk_overlap": int(meta["chunk_overlap"])},
            analyzer=str(meta["analyzer"]),
            failures=failures,
            created=str(meta.get("created", "")),
            updated=str(meta.get("updated", "")),
        )

    def documents(self) -> Iterator[dict[str, Any]]:
        with self._connection() as conn:
            rows = conn.execute(
                "SELECT d.doc_id, d.title, d.location, d.format, d.pages,"
                " (SELECT count(*) FROM chunks c WHERE c.document = d.id), d.content_hash"
                " FROM documents d ORDER BY d.id"
            ).fetchall()
        for doc_id, title, location, fmt, pages, chunks, content_hash in rows:
            yield {
                "doc_id": doc_id,
                "title": title,
                "location": location,
                "format": fmt,
                "pages": pages,
                "chunks": chunks,
                "content_hash": content_hash,
            }

    def document_count(self) -> int:
        with self._connection() as conn:
            (count,) = conn.execute("SELECT count(*) FROM documents").fetchone()
        return int(count)

    def endpoint_embedder(self) -> Any:
        if self._meta.get("embedder") is None:
            return None
        if self._embedder is None:
            spec = json.loads(str(self._meta.get("embedder_spec") or "{}"))
            if not spec.get("base_url"):
                return None
        embedder = self._embedder_for(self._meta)
        return embedder if getattr(embedder, "base_url", None) else None

    def database_endpoint(self) -> str | None:
        """The database searches go to, as the egress audit records it (None: a socket on this machine)."""
        return pg.egress_endpoint(self._dsn)

    def meter_searches(self, meter: Any) -> None:
        """Count each search (and its query's bytes) on `meter`, an `egress.EndpointMeter`."""
        self._meter = meter

    @property
    def embedder_name(self) -> str | None:
        value = self._meta.get("embedder")
        return str(value) if value else None

    @property
    def chunking(self) -> dict[str, int]:
        return {
            "chunk_tokens": int(self._meta["chunk_tokens"]),
            "chunk_overlap": int(self._meta["chunk_overlap"]),
        }

    @property
    def revision(self) -> int:
        return int(self._meta.get("revision", 0))

    @property
    def lexical_ranking(self) -> str:
        """``bm25``, or ``ts_rank`` for a KB whose BM25 statistics its next add will count."""
        return "bm25" if self._meta.get(statistics.META_KEY) == statistics.META_VALUE else "ts_rank"

    @property
    def vectors(self) -> None:
        """The embedded engine's in-process vector index; Postgres keeps the vectors itself."""
        return None

    def refresh(self) -> None:
        with self._lock, self._connection() as conn:
            self._meta = pg.read_meta(conn, self.label)
            self._allowed_cache.clear()

    def close(self) -> None:
        self._closed = True

    def __enter__(self) -> PostgresKnowledgeBase:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()

    # -- internals ------------------------------------------------------------------------------------------

    def _connection(self) -> Any:
        return _SchemaConnection(self._dsn, self.schema)

    def _bump_revision(self, conn: Any, meta: dict[str, Any]) -> int:
        revision = int(meta.get("revision", 0)) + 1
        pg.set_meta(conn, "revision", str(revision))
        pg.set_meta(conn, "updated", datetime.now(UTC).isoformat(timespec="seconds"))
        return revision

    def _set_embedder(self, conn: Any, embedder: Any, embedding: EmbeddingSettings | None) -> None:
        spec = {"base_url": embedding.base_url, "model": embedding.model} if embedding is not None else {}
        pg.set_meta(conn, "embedder", embedder.name)
        pg.set_meta(conn, "embedder_dimension", str(embedder.dimension))
        pg.set_meta(conn, "embedder_spec", json.dumps(spec))
        self._embed_existing(conn, embedder)

    def _embed_existing(self, conn: Any, embedder: Any) -> None:
        """Vectors for the chunks added before the KB had an embedder."""
        import numpy as np

        from deepdraft.retrieval.index.analysis import context_header

        while True:
            rows = conn.execute(
                "SELECT c.id, c.text, c.headings, d.title FROM chunks c JOIN documents d ON d.id = c.document"
                " WHERE c.embedding IS NULL ORDER BY c.id LIMIT 256"
            ).fetchall()
            if not rows:
                return
            texts = [
                context_header(title, json.loads(headings)) + "\n" + text for _, text, headings, title in rows
            ]
            vectors = np.asarray(embedder.embed(texts), dtype=np.float32)
            conn.cursor().executemany(
                "UPDATE chunks SET embedding = %s WHERE id = %s",
                [(vector, row[0]) for vector, row in zip(vectors, rows, strict=True)],
            )

    def _query_vector(self, query: str) -> Any:
        with self._lock:
            cached = self._query_vectors.get(query)
        if cached is not None:
            return cached
        vector = self._embedder_for(self._meta).embed([query])[0]
        with self._lock:
            if len(self._query_vectors) >= 256:
                self._query_vectors.pop(next(iter(self._query_vectors)))
            self._query_vectors[query] = vector
        return vector

    def _allowed(self, only: tuple[str, ...], exclude: tuple[str, ...], *, strict: bool) -> list[int] | None:
        """The document rows the filters allow (None: all), cached per filter set and revision."""
        if not only and not exclude:
            return None
        key = (only, exclude)
        with self._lock:
            if key in self._allowed_cache:
                return self._allowed_cache[key]
        include, leave_out = DocumentMatcher(only), DocumentMatcher(exclude)
        with self._connection() as conn:
            rows = conn.execute("SELECT id, doc_id, location FROM documents").fetchall()
        allowed = [
            int(row)
            for row, doc_id, location in rows
            if (not include or include.matches(doc_id, location)) and not leave_out.matches(doc_id, location)
        ]
        if not allowed and strict:
            what = []
            if only:
                what.append("--only " + " ".join(only))
            if exclude:
                what.append("--exclude " + " ".join(exclude))
            raise KnowledgeBaseError(
                f"no document of knowledge base {self.label!r} is left by {' and '.join(what)} "
                "(patterns match a document's id or location; see: deepdraft kb info)"
            )
        with self._lock:
            self._allowed_cache[key] = allowed
        return allowed


class _SchemaConnection:
    """A pooled connection pointed at one KB's schema, for a ``with`` block."""

    def __init__(self, dsn: str, schema: str) -> None:
        self._context = pg.connection(dsn)
        self._schema = schema

    def __enter__(self) -> Any:
        conn = self._context.__enter__()
        pg.use_schema(conn, self._schema)
        return conn

    def __exit__(self, *exc: Any) -> None:
        self._context.__exit__(*exc)
