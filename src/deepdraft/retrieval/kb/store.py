"""`KnowledgeBase`: a KB folder, open for searching and (under its write lock) for changing.

How a change is made (`add`, `remove`): under the write lock, one SQLite transaction applies every
document and chunk change; the next generation is built from that transaction's own view, *before*
the commit, into a temporary folder that is then renamed to ``gen-<revision+1>``; then the commit;
then the pointer flip. A crash before the commit leaves the KB exactly as it was (SQLite rolls the
transaction back; the orphan folder is deleted by the next writer). A crash between commit and flip
is repaired by the next writer, or by a reader that can take the lock: the generation of the
committed revision is already complete on disk, else it is rebuilt from the database.

This module drives those steps; the helpers it calls do them (`ingest` for the documents and chunks,
`generations` for the search files, `schema`, `lock`). How files and documents are diffed is told in
`ingest`, how generations are built and repaired in `generations`.

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
from typing import Any, Literal, TypedDict, Unpack

import numpy as np
import numpy.typing as npt

from deepdraft.core.evidence import Passage, Source
from deepdraft.errors import KnowledgeBaseError
from deepdraft.retrieval.documents.corpus import discover, read_documents
from deepdraft.retrieval.documents.limits import DocumentLimits
from deepdraft.retrieval.documents.values import Failure
from deepdraft.retrieval.index.analysis import analyze
from deepdraft.retrieval.index.fusion import DEFAULT_K
from deepdraft.retrieval.index.hybrid import DEFAULT_DEPTH, HybridSearcher, SearchMode
from deepdraft.retrieval.kb.filters import DocumentMatcher
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
    _fail,
    _file_hash,
    _FileCounts,
    _migrate_terms,
    _NothingUsable,
    _prune,
    _record_failures,
    _root_of,
    _select_for_removal,
    _set_embedder_meta,
    _store_document,
    _upsert_source,
)
from deepdraft.retrieval.kb.lock import _WriteLock
from deepdraft.retrieval.kb.schema import _SELECT_BATCH, DB_NAME, _connect, _initialise, _read_meta
from deepdraft.retrieval.kb.values import AddResult, IngestNote, KBInfo, ProgressSink, _count, _ignore
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


class KnowledgeBase:
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
            return self._passages(generation, ranked, k)

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
                    changed = self._ingest(db, meta, paths, result, limit, bounds, ocr, prune, say)
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
        with self._lock:
            db = self._db
            documents, pages = db.execute(
                "SELECT count(*), coalesce(sum(pages), 0) FROM documents"
            ).fetchone()
            (chunks,) = db.execute("SELECT count(*) FROM chunks").fetchone()
            formats = dict(
                db.execute("SELECT format, count(*) FROM documents GROUP BY format ORDER BY 2 DESC")
            )
            failures = [
                {"location": location, "reason": reason}
                for location, reason in db.execute("SELECT location, reason FROM failures ORDER BY rowid")
            ]
            meta = _read_meta(db, self.label)
        dimension = meta.get("embedder_dimension")
        return KBInfo(
            path=str(self.folder),
            format_version=int(meta["format_version"]),
            revision=int(meta.get("revision", 0)),
            documents=int(documents),
            chunks=int(chunks),
            pages=int(pages),
            size_bytes=_tree_size(self.folder),
            formats={str(k): int(v) for k, v in formats.items()},
            embedder=meta.get("embedder"),
            dimension=int(dimension) if dimension else None,
            chunking={
                "chunk_tokens": int(meta["chunk_tokens"]),
                "chunk_overlap": int(meta["chunk_overlap"]),
            },
            analyzer=str(meta["analyzer"]),
            failures=failures,
            created=str(meta.get("created", "")),
            updated=str(meta.get("updated", "")),
        )

    def documents(self) -> Iterator[dict[str, Any]]:
        """Every document: doc_id, title, location, format, pages, chunks — in the order added."""
        with self._lock:
            rows = self._db.execute(
                "SELECT d.doc_id, d.title, d.location, d.format, d.pages,"
                " (SELECT count(*) FROM chunks c WHERE c.document = d.id) FROM documents d ORDER BY d.id"
            ).fetchall()
        for doc_id, title, location, fmt, pages, chunks in rows:
            yield {
                "doc_id": doc_id,
                "title": title,
                "location": location,
                "format": fmt,
                "pages": pages,
                "chunks": chunks,
            }

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

    def _ingest(
        self,
        db: sqlite3.Connection,
        meta: dict[str, Any],
        paths: Sequence[str | Path],
        result: AddResult,
        max_bytes: int,
        limits: DocumentLimits,
        ocr: bool,
        prune: bool,
        say: ProgressSink,
    ) -> bool:
        """Apply every file's changes inside `db`'s transaction; True if any document changed."""
        revision = int(meta.get("revision", 0)) + 1
        chunk_tokens, overlap = int(meta["chunk_tokens"]), int(meta["chunk_overlap"])
        changed = False
        roots: list[Path] = []
        for raw in paths:
            files, failures = discover([raw])
            for failure in failures:
                _fail(result, say, failure)
            root = _root_of(raw)
            roots.append(root)
            for file in files:
                changed |= self._ingest_file(
                    db, file, root, revision, chunk_tokens, overlap, result, max_bytes, limits, ocr, say
                )
        if prune:
            for location in _prune(db, roots):
                result.documents_removed += 1
                changed = True
                say(IngestNote("removed", location, "file no longer exists"))
        return changed

    def _ingest_file(
        self,
        db: sqlite3.Connection,
        file: Path,
        root: Path,
        revision: int,
        chunk_tokens: int,
        overlap: int,
        result: AddResult,
        max_bytes: int,
        limits: DocumentLimits,
        ocr: bool,
        say: ProgressSink,
    ) -> bool:
        path = str(file.absolute())
        try:
            size = file.stat().st_size
            if size > max_bytes and file.suffix.lower() != ".jsonl":  # JSONL is streamed: no limit
                # Not even hashed: the reader refuses it from its size alone, with the limit to raise.
                for item in read_documents(file, max_bytes=max_bytes, ocr=ocr, root=root):
                    if isinstance(item, Failure):
                        _fail(result, say, item)
                return False
            digest = _file_hash(file)
        except OSError as exc:
            _fail(result, say, Failure(path, f"unreadable ({exc.strerror or exc})"))
            return False
        known = db.execute("SELECT id, content_hash FROM sources WHERE path = ?", (path,)).fetchone()
        if known is not None and known[1] == digest:
            (count,) = db.execute("SELECT count(*) FROM documents WHERE source = ?", (known[0],)).fetchone()
            result.documents_unchanged += count
            say(IngestNote("unchanged", path))
            return False
        now = datetime.now(UTC).isoformat(timespec="seconds")
        # A savepoint per file: a file that yields nothing usable (or whose reader gives up midway)
        # leaves its previous version in place, and the next add tries it again.
        db.execute("SAVEPOINT file")
        counts = _FileCounts()
        try:
            source_row = _upsert_source(db, known, path, digest, size, now)
            seen_keys: dict[str, int] = {}
            for item in read_documents(file, max_bytes=max_bytes, ocr=ocr, root=root, limits=limits):
                if isinstance(item, Failure):
                    counts.failures.append(item)
                    continue
                _store_document(
                    db, item, source_row, path, revision, chunk_tokens, overlap, now, seen_keys, counts
                )
            if counts.added + counts.updated + counts.unchanged == 0:
                raise _NothingUsable()
            stale = db.execute(
                "SELECT id FROM documents WHERE source = ? AND seen < ?", (source_row, revision)
            ).fetchall()
            for (row,) in stale:
                _delete_document(db, row)
            counts.removed = len(stale)
        except (_NothingUsable, KnowledgeBaseError) as exc:
            db.execute("ROLLBACK TO file")
            db.execute("RELEASE file")
            if isinstance(exc, KnowledgeBaseError):
                counts.failures.append(Failure(path, str(exc)))
            for failure in counts.failures or [Failure(path, "no text found")]:
                _fail(result, say, failure)
            return False
        db.execute("RELEASE file")
        for failure in counts.failures:
            _fail(result, say, failure)
        result.documents_added += counts.added
        result.documents_updated += counts.updated
        result.documents_unchanged += counts.unchanged
        result.documents_removed += counts.removed
        result.chunks_added += counts.chunks
        result.pages_added += counts.pages
        if counts.added or counts.updated:
            kind: Literal["added", "updated"] = "updated" if known is not None else "added"
            detail = f"{_count(counts.added + counts.updated, 'document')}, {_count(counts.chunks, 'chunk')}"
            if counts.pages:
                detail += f", {_count(counts.pages, 'page')}"
            say(IngestNote(kind, path, detail))
        elif counts.removed:
            say(IngestNote("removed", path, _count(counts.removed, "document")))
        return bool(counts.added or counts.updated or counts.removed)

    # -- internals: embedders ----------------------------------------------------------------------

    def _cache_path(self) -> Path:
        return self.folder / EMBEDDING_CACHE

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
        include, leave_out = DocumentMatcher(only), DocumentMatcher(exclude)
        allowed: list[int] = []
        for row, doc_id, location in self._db.execute("SELECT id, doc_id, location FROM documents"):
            if (not include or include.matches(doc_id, location)) and not leave_out.matches(doc_id, location):
                allowed.append(row)
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

    def _passages(self, generation: _Generation, ranked: list[tuple[int, float]], k: int) -> list[Passage]:
        chunk_ids = [int(generation.rows[row]) for row, _ in ranked]
        found: dict[int, tuple[str, Source]] = {}
        for i in range(0, len(chunk_ids), _SELECT_BATCH):
            batch = chunk_ids[i : i + _SELECT_BATCH]
            marks = ",".join("?" * len(batch))
            cursor = self._db.execute(
                "SELECT c.id, c.text, c.start_char, c.end_char, c.page, c.headings, d.doc_id, d.title,"
                f" d.location FROM chunks c JOIN documents d ON d.id = c.document WHERE c.id IN ({marks})",
                batch,
            )
            for chunk_id, text, start, end, page, headings, doc_id, title, location in cursor:
                source = Source(
                    doc_id, title, location, page, start, end, headings=tuple(json.loads(headings))
                )
                found[chunk_id] = (text, source)
        passages = []
        for chunk_id, (_, score) in zip(chunk_ids, ranked, strict=True):
            if chunk_id in found:  # gone if a later change deleted it: this reader is on an older generation
                text, source = found[chunk_id]
                passages.append(Passage(text=text, source=source, score=score))
            if len(passages) == k:
                break
        return passages


def _bm25_ranking(
    bm25: Any, query: str, k: int, allowed: npt.NDArray[np.bool_] | None
) -> list[tuple[int, float]]:
    """The `k` best (row, BM25 score) pairs of a generation's bm25s index, best first.

    `bm25` may be None (no chunk has a term); `allowed` (one bool per row) restricts the rows. The
    query is analysed exactly as the chunks were; rows without any query term are never returned.
    """
    if bm25 is None or k <= 0:
        return []
    vocabulary: dict[str, int] = bm25.vocab_dict
    ids = [vocabulary[term] for term in analyze(query) if term in vocabulary]
    if not ids:
        return []
    scores: npt.NDArray[np.float32] = bm25.get_scores_from_ids(ids)
    if allowed is not None:
        scores = np.where(allowed, scores, 0).astype(np.float32)
    count = int(scores.shape[0])
    top = np.arange(count) if k >= count else np.argpartition(-scores, k - 1)[:k]
    top = top[scores[top] > 0]  # Lucene idf is positive: zero means no query term occurs
    top = top[np.lexsort((top, -scores[top]))]  # best first; ties by row, deterministic
    return [(int(row), float(scores[row])) for row in top]


def _tree_size(folder: Path) -> int:
    total = 0
    for path in folder.rglob("*"):
        try:
            if path.is_file():
                total += path.stat().st_size
        except OSError:
            continue  # a file a writer just deleted
    return total
