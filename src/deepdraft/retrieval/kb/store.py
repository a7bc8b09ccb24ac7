"""`KnowledgeBase`: a KB folder, open for searching and (under its write lock) for changing.

How a change is made (`add`, `remove`): under the write lock, one SQLite transaction applies every
document and chunk change; the next generation is built from that transaction's own view, *before*
the commit, into a temporary folder that is then renamed to ``gen-<revision+1>``; then the commit;
then the pointer flip. A crash before the commit leaves the KB exactly as it was (SQLite rolls the
transaction back; the orphan folder is deleted by the next writer). A crash between commit and flip
is repaired by the next writer, or by a reader that can take the lock: the generation of the
committed revision is already complete on disk, else it is rebuilt from the database.

This module drives those steps and keeps a reader's state (connection, generation, embedder, filter
masks); the helpers it calls do the work: `adding` reads the named files into the transaction and
`ingest` stores their documents and chunks, `generations` builds the search files, `search` turns a
query into passages over a generation, `listing` reads the summary and the documents, `schema` and
`lock` the rest. How files and documents are diffed is told in `ingest`, how generations are built
and repaired in `generations`.

Trade-offs:

* Search is `HybridSearcher` (BM25, dense or both fused) over the generation's rows; the rows are
  then turned into passages. Readers open the generation the pointer names and read passage text
  from SQLite (WAL mode) by chunk id, so they never wait for a writer and a long ingestion never
  blocks searching. A reader stays on the generation it opened (a research run sees one consistent
  index); when a later change deletes a chunk it still ranks, that hit is dropped. `refresh()`
  moves to the newest generation.
* A KB records the embedder that built it and refuses another one.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import Any, TypedDict, Unpack

import numpy as np
import numpy.typing as npt

from deepdraft.core.evidence import Passage
from deepdraft.errors import KnowledgeBaseError
from deepdraft.retrieval.documents.limits import DocumentLimits
from deepdraft.retrieval.index.fusion import DEFAULT_K
from deepdraft.retrieval.index.hybrid import DEFAULT_DEPTH, HybridSearcher, SearchMode
from deepdraft.retrieval.kb.adding import _ingest_paths
from deepdraft.retrieval.kb.embedder_rules import EmbedderRules
from deepdraft.retrieval.kb.generations import (
    EMBEDDING_CACHE,
    _build_generation,
    _flip_pointer,
    _gen_name,
    _Generation,
    _open_generation,
    _read_pointer,
    _remove_stale_generations,
    _repair,
    _revision_of,
    _try_repair,
)
from deepdraft.retrieval.kb.ingest import (
    _delete_document,
    _migrate_terms,
    _record_failures,
    _select_for_removal,
    _set_embedder_meta,
)
from deepdraft.retrieval.kb.listing import _document_rows, _read_info, _tree_size
from deepdraft.retrieval.kb.lock import _WriteLock
from deepdraft.retrieval.kb.schema import DB_NAME, _connect, _initialise, _read_meta
from deepdraft.retrieval.kb.search import _allowed_documents, _bm25_ranking, _passages
from deepdraft.retrieval.kb.values import AddResult, IngestNote, KBInfo, ProgressSink, _ignore
from deepdraft.settings import EmbeddingSettings, RetrievalSettings

SEARCH_MODES: tuple[SearchMode, ...] = ("hybrid", "bm25", "dense")


class SearchOptions(TypedDict, total=False):
    """How an opened KB searches: the keywords of `KnowledgeBase.open` after the folder and label,
    which the functions that open a KB for someone else (`create`, `names.open_kb`) pass through."""

    only: Sequence[str]
    exclude: Sequence[str]
    mode: SearchMode
    embedder: Any
    embedding: EmbeddingSettings | None
    depth: int
    rrf_k: int


class KnowledgeBase(EmbedderRules):
    """A KB folder, open for searching and (under its write lock) for changing.

    Satisfies the `Retriever` port: `search(query, k)` and `fingerprint()`, with the document filters
    and search mode given at `open` (each call may override them). Searches are thread-safe.
    """

    def __init__(
        self,
        folder: Path,
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
        self.folder = folder
        self.location = str(folder)
        """Where the KB lives, as shown to people (the Postgres engine shows its secret-free DSN)."""
        self.label = label
        self.only = tuple(only)
        self.exclude = tuple(exclude)
        self.mode: SearchMode = mode
        self._embedder = embedder
        self._embedding = embedding or EmbeddingSettings()
        self._lock = threading.RLock()
        self._db = _connect(folder / DB_NAME, readonly=True)
        self._meta = _read_meta(self._db, label)
        self._masks: dict[tuple[tuple[str, ...], tuple[str, ...]], npt.NDArray[np.bool_] | None] = {}
        self._depth = depth
        self._rrf_k = rrf_k
        # Per generation: one searcher without the dense half, one with it (built on first need, so a
        # BM25-only search never loads the embedder). Each keeps its own cache of query vectors.
        self._searchers: dict[bool, HybridSearcher] = {}
        self._generation: _Generation | None = None
        self._load_generation()

    # -- opening -------------------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        folder: Path,
        settings: RetrievalSettings | None = None,
        *,
        label: str | None = None,
        **options: Unpack[SearchOptions],
    ) -> KnowledgeBase:
        """Open the KB in `folder`, creating an empty one (with `settings`' chunking) if there is none."""
        folder = Path(folder)
        if not (folder / DB_NAME).is_file():
            folder.mkdir(parents=True, exist_ok=True)
            settings = settings or RetrievalSettings()
            with _WriteLock(folder, label or str(folder), wait=True):
                if not (folder / DB_NAME).is_file():
                    _initialise(folder, settings)
        return cls.open(folder, label=label, **options)

    @classmethod
    def open(
        cls,
        folder: Path,
        *,
        label: str | None = None,
        only: Sequence[str] = (),
        exclude: Sequence[str] = (),
        mode: SearchMode = "hybrid",
        embedder: Any = None,
        embedding: EmbeddingSettings | None = None,
        depth: int = DEFAULT_DEPTH,
        rrf_k: int = DEFAULT_K,
    ) -> KnowledgeBase:
        """Open an existing KB; `KnowledgeBaseError` if there is none or it cannot be read.

        `depth` and `rrf_k` tune hybrid search (see `HybridSearcher`; `bench/retrieval.py` sweeps them).
        """
        folder = Path(folder)
        label = label or str(folder)
        if not (folder / DB_NAME).is_file():
            raise KnowledgeBaseError(f"no knowledge base at {folder}")
        if mode not in SEARCH_MODES:
            raise KnowledgeBaseError(f"unknown search mode {mode!r}: use hybrid, bm25 or dense")
        kb = cls(
            folder,
            label=label,
            only=only,
            exclude=exclude,
            mode=mode,
            embedder=embedder,
            embedding=embedding,
            depth=depth,
            rrf_k=rrf_k,
        )
        try:
            if embedder is not None:
                kb._check_embedder(embedder)
            kb._effective_mode(mode)  # "dense" on a KB without vectors fails here, not mid-run
            if kb.only or kb.exclude:
                kb._allowed(kb.only, kb.exclude, strict=True)
        except BaseException:
            kb.close()
            raise
        return kb

    # -- the Retriever port ------------------------------------------------------------------------

    def search(
        self,
        query: str,
        k: int,
        *,
        only: Sequence[str] | None = None,
        exclude: Sequence[str] | None = None,
        mode: SearchMode | None = None,
    ) -> list[Passage]:
        """The `k` best passages for `query`, best first, from the documents the filters allow."""
        with self._lock:
            generation = self._generation
            if k <= 0 or generation is None or generation.size == 0 or not query.strip():
                return []
            mask = self._allowed(
                self.only if only is None else tuple(only),
                self.exclude if exclude is None else tuple(exclude),
                strict=False,
            )
            mode = self._effective_mode(mode or self.mode)
            dense = mode != "bm25" and generation.vectors is not None
            if mode == "dense" and not dense:
                return []  # a generation from before the KB had an embedder
            # Hybrid ranks `depth` candidates (not just k) so that hits dropped by `_passages` (chunks
            # a later change deleted) leave the fused top k intact.
            pool = max(k, self._depth) if mode == "hybrid" else k
            ranked = self._searcher(generation, dense=dense).search(query, pool, mode=mode, allowed=mask)
            return _passages(self._db, generation, ranked, k)

    def fingerprint(self) -> str:
        """Changes whenever what this object can find changes: content, filters or search mode."""
        generation = self._generation
        content = generation.fingerprint if generation is not None else "empty"
        view = json.dumps([content, sorted(self.only), sorted(self.exclude), self._effective_mode(self.mode)])
        return hashlib.sha256(view.encode()).hexdigest()[:16]

    # -- changing -----------------------------------------------------------------------------------

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
        wait: bool = False,
    ) -> AddResult:
        """Ingest files, folders (recursively) and globs; see the module docstring for the guarantees.

        `embedder` (or `embedding`, to build one) gives the KB dense vectors; a KB that already has
        an embedder keeps using it and refuses another. `prune` also removes the documents of files
        that no longer exist under the given folders. Problems with single files are reported to
        `progress` and in the result; they never stop the others. `max_bytes` bounds each file and
        `limits` what one document may unpack and yield (defaults: the settings' defaults).
        """
        say = progress or _ignore
        started = time.monotonic()
        result = AddResult()
        settings = RetrievalSettings()
        limit = max_bytes if max_bytes is not None else int(settings.max_file_mb * 1024 * 1024)
        bounds = limits if limits is not None else DocumentLimits.from_settings(settings)
        with _WriteLock(self.folder, self.label, wait=wait):
            db = _connect(self.folder / DB_NAME, readonly=False)
            try:
                meta = _read_meta(db, self.label)
                new_embedder = self._writer_embedder(meta, embedder, embedding)
                _repair(self.folder, db, meta, self._cache_path(), self._embedder_for(meta), say)
                meta = _read_meta(db, self.label)
                db.execute("BEGIN IMMEDIATE")
                try:
                    changed = _ingest_paths(db, meta, paths, result, limit, bounds, ocr, prune, say)
                    if new_embedder is not None and meta.get("embedder") is None:
                        _set_embedder_meta(db, new_embedder, embedding)
                        self._embedder = new_embedder
                        changed = True
                    if _migrate_terms(db, meta, say):
                        changed = True
                    _record_failures(db, result.failures)
                    if changed:
                        result.revision = self._commit_generation(db, say)
                    else:
                        db.commit()
                        result.revision = int(meta.get("revision", 0))
                except BaseException:
                    db.rollback()
                    raise
                result.changed = changed
                if changed:
                    _flip_pointer(self.folder, result.revision)
                    _remove_stale_generations(self.folder, keep=_gen_name(result.revision))
            finally:
                db.close()
        self.refresh()
        result.seconds = time.monotonic() - started
        return result

    def remove(
        self, selectors: Sequence[str], *, progress: ProgressSink | None = None, wait: bool = False
    ) -> list[str]:
        """Remove documents by doc_id, location (path or URL) or glob; returns the removed doc_ids.

        A selector that matches nothing is an error naming it, and then nothing is removed.
        """
        say = progress or _ignore
        if not selectors:
            raise KnowledgeBaseError("name the documents to remove (doc ids, paths, URLs or globs)")
        with _WriteLock(self.folder, self.label, wait=wait):
            db = _connect(self.folder / DB_NAME, readonly=False)
            try:
                meta = _read_meta(db, self.label)
                _repair(self.folder, db, meta, self._cache_path(), self._embedder_for(meta), say)
                db.execute("BEGIN IMMEDIATE")
                try:
                    removed = _select_for_removal(db, selectors)
                    for doc_key, (doc_id, location) in removed.items():
                        _delete_document(db, doc_key)
                        say(IngestNote("removed", location, doc_id))
                    db.execute("DELETE FROM sources WHERE id NOT IN (SELECT DISTINCT source FROM documents)")
                    revision = self._commit_generation(db, say)
                except BaseException:
                    db.rollback()
                    raise
                _flip_pointer(self.folder, revision)
                _remove_stale_generations(self.folder, keep=_gen_name(revision))
            finally:
                db.close()
        self.refresh()
        return [doc_id for doc_id, _ in removed.values()]

    # -- reading the rest ----------------------------------------------------------------------------

    def info(self) -> KBInfo:
        """Counts, size on disk, formats, embedder and the failures of the last add."""
        size = _tree_size(self.folder)  # walking the folder needs no connection, so not the lock
        with self._lock:
            return _read_info(self._db, self.folder, self.label, size)

    def documents(self) -> Iterator[dict[str, Any]]:
        """Every document: doc_id, title, location, format, pages, chunks and content hash — in the
        order added."""
        with self._lock:
            rows = _document_rows(self._db)
        yield from rows

    def document_count(self) -> int:
        with self._lock:
            (count,) = self._db.execute("SELECT count(*) FROM documents").fetchone()
        return int(count)

    def endpoint_embedder(self) -> Any:
        """The embedder queries go to when the KB's vectors come from an OpenAI-compatible endpoint.

        None for a KB without vectors or with a local model (which is then not loaded here). The
        runner uses it to audit and count the requests a run sends there.
        """
        with self._lock:
            if self._meta.get("embedder") is None:
                return None
            if self._embedder is None:
                spec = json.loads(str(self._meta.get("embedder_spec") or "{}"))
                if not spec.get("base_url"):
                    return None
            embedder = self._embedder_for(self._meta)
        return embedder if getattr(embedder, "base_url", None) else None

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
        return self._generation.revision if self._generation is not None else 0

    def refresh(self) -> None:
        """Move to the newest committed generation (a no-op when this one is still current)."""
        with self._lock:
            self._meta = _read_meta(self._db, self.label)
            self._load_generation()

    def close(self) -> None:
        with self._lock:
            self._db.close()
            self._generation = None

    def __enter__(self) -> KnowledgeBase:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()

    # -- internals: generations ------------------------------------------------------------------------

    def _load_generation(self) -> None:
        committed = int(self._meta.get("revision", 0))
        for _ in range(5):  # a writer may delete the named generation between reading and opening
            name = _read_pointer(self.folder)
            if name is None or _revision_of(name) < committed:
                # The last writer died between commit and flip: finish its work if nobody writes now.
                if committed > 0 and _try_repair(self.folder, self.label, self._cache_path(), self._embedder):
                    continue
                if name is None:
                    if committed > 0:
                        raise KnowledgeBaseError(
                            f"knowledge base {self.label!r} is being written for the first time; "
                            "try again when that finishes"
                        )
                    self._generation = None
                    self._masks.clear()
                    self._searchers.clear()
                    return
            if self._generation is not None and self._generation.name == name:
                return
            try:
                self._generation = _open_generation(self.folder / name, self._meta)
            except FileNotFoundError:
                continue
            self._masks.clear()
            self._searchers.clear()
            return
        raise KnowledgeBaseError(f"knowledge base {self.label!r} changes too fast to open; try again")

    def _commit_generation(self, db: sqlite3.Connection, say: ProgressSink) -> int:
        """Build the next generation from `db`'s open transaction, then commit it (not yet current)."""
        meta = _read_meta(db, self.label)
        revision = int(meta.get("revision", 0)) + 1
        _build_generation(self.folder, db, meta, revision, self._cache_path(), self._embedder_for(meta), say)
        db.execute("INSERT OR REPLACE INTO meta VALUES ('revision', ?)", (str(revision),))
        db.execute(
            "INSERT OR REPLACE INTO meta VALUES ('updated', ?)",
            (datetime.now(UTC).isoformat(timespec="seconds"),),
        )
        db.commit()
        return revision

    # -- internals: ingestion -------------------------------------------------------------------------
    # -- internals: embedders ----------------------------------------------------------------------

    def _cache_path(self) -> Path:
        return self.folder / EMBEDDING_CACHE

    # -- internals: searching ----------------------------------------------------------------------

    def _allowed(
        self, only: tuple[str, ...], exclude: tuple[str, ...], *, strict: bool
    ) -> npt.NDArray[np.bool_] | None:
        """The rows the filters allow (None: all), cached per filter set and generation."""
        if not only and not exclude:
            return None
        key = (only, exclude)
        if key in self._masks:
            return self._masks[key]
        allowed = _allowed_documents(self._db, only, exclude)
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
        generation = self._generation
        mask = None
        if generation is not None:
            mask = np.isin(generation.documents, np.asarray(allowed, dtype=np.int64))
        self._masks[key] = mask
        return mask

    def _searcher(self, generation: _Generation, *, dense: bool) -> HybridSearcher:
        """The generation's searcher, with its dense half (and so the embedder) only when asked for."""
        searcher = self._searchers.get(dense)
        if searcher is None:
            vectors = generation.vectors if dense else None
            embedder = self._embedder_for(self._meta) if dense else None
            searcher = HybridSearcher(
                partial(_bm25_ranking, generation.bm25),
                vectors,
                embedder,
                depth=self._depth,
                rrf_k=self._rrf_k,
            )
            self._searchers[dense] = searcher
        return searcher

    @property
    def vectors(self) -> Any:
        """The `VectorIndex` of the generation this reader is on (None without an embedder).

        For tuning and measuring (`ef_search`, recall against exact search); searches go through `search`.
        """
        generation = self._generation
        return generation.vectors if generation is not None else None
