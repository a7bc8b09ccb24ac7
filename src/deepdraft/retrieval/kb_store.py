"""A knowledge base on disk: documents in, passages out, changed only by whole transactions.

Layout of a KB folder::

    kb.sqlite          the source of truth: files, documents, chunks (text, offsets, page, heading
                       path, index terms), the failures of the last add, and metadata (format version,
                       chunking, analyzer, embedder, revision)
    embeddings.sqlite  a cache of passage vectors keyed by (embedder, sha256 of the embedded text)
    CURRENT            names the generation readers use; replaced atomically (temp + fsync + rename)
    gen-<revision>/    derived search files for one revision: BM25 (bm25s, memory-mapped), the chunk
                       id and document of every BM25 row, dense vectors (`VectorIndex`) when the KB
                       has an embedder, and a manifest with the content fingerprint
    write.lock         `flock`-ed by the one process writing; readers never take it

How a change is made (`add`, `remove`): under the write lock, one SQLite transaction applies every
document and chunk change; the next generation is built from that transaction's own view, *before*
the commit, into a temporary folder that is then renamed to ``gen-<revision+1>``; then the commit;
then the pointer flip. A crash before the commit leaves the KB exactly as it was (SQLite rolls the
transaction back; the orphan folder is deleted by the next writer). A crash between commit and flip
is repaired by the next writer, or by a reader that can take the lock: the generation of the
committed revision is already complete on disk, else it is rebuilt from the database.

Trade-offs:

* Search is `HybridSearcher` (BM25, dense or both fused) over the generation's rows; the rows are
  then turned into passages. Readers open the generation the pointer names and read passage text
  from SQLite (WAL mode) by chunk id, so they never wait for a writer and a long ingestion never
  blocks searching. A reader stays on the generation it opened (a research run sees one consistent
  index); when a later change deletes a chunk it still ranks, that hit is dropped. `refresh()`
  moves to the newest generation.
* Each generation is complete: BM25 is rebuilt over all chunks for every change. bm25s has no
  incremental update, and rebuilding from the stored index terms (no re-tokenising) is a few seconds
  per million passages — cheaper than the bookkeeping of segment merging. Building holds the term ids
  of every chunk in memory (about 4 bytes a term), which suits millions of passages, not billions
  (that is the remote engine's job, DESIGN §5).
* Chunk ids are SQLite AUTOINCREMENT keys: never reused, so an id in an old generation can only name
  the chunk it named then, or nothing.
* Dense vectors are computed once per (embedder, text) and kept in `embeddings.sqlite`, a separate
  database committed in small batches: an interrupted add keeps the vectors it paid for (the slow
  part on a CPU), and the cache can never make the KB itself inconsistent. A KB records the embedder
  that built it and refuses another one.
* A file is unchanged when the sha256 of its bytes is; then it is not even parsed. A changed file is
  re-read and diffed by document (a JSONL corpus with one edited line keeps every other passage and
  its chunk ids); documents it no longer contains are removed.
* Document ids are what citations group by, so they are unique in a KB: the extractor's id (the path
  relative to the folder given to `add`, or a JSONL record's id) when it is free, else qualified by
  the file's path.
"""

from __future__ import annotations

import fcntl
import glob
import hashlib
import json
import logging
import os
import re
import shutil
import sqlite3
import tempfile
import threading
import time
import uuid
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Literal

import numpy as np
import numpy.typing as npt

from deepdraft.errors import KnowledgeBaseError
from deepdraft.evidence import Passage, Source
from deepdraft.fsutil import atomic_write_text, fsync_dir, fsync_tree
from deepdraft.retrieval.analysis import ANALYZER_VERSION, analyze, context_header, passage_terms
from deepdraft.retrieval.chunking import chunk_document
from deepdraft.retrieval.corpus import Document, Failure, discover, read_documents
from deepdraft.retrieval.fusion import DEFAULT_K
from deepdraft.retrieval.hybrid import DEFAULT_DEPTH, HybridSearcher, SearchMode
from deepdraft.settings import EmbeddingSettings, RetrievalSettings, Settings

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
"""Bumped whenever the database schema or the generation layout changes incompatibly."""

DB_NAME = "kb.sqlite"
EMBEDDING_CACHE = "embeddings.sqlite"
POINTER = "CURRENT"
LOCK_NAME = "write.lock"
GEN_PREFIX = "gen-"
_BUILDING_PREFIX = ".building-"
_GEN_MANIFEST = "manifest.json"

SEARCH_MODES: tuple[SearchMode, ...] = ("hybrid", "bm25", "dense")
_STREAM_BATCH = 5000
_SELECT_BATCH = 500  # below SQLite's bound-parameter limit in every version
_EMBED_BATCH = 256

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sources (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    path TEXT NOT NULL UNIQUE,
    content_hash TEXT NOT NULL,
    size INTEGER NOT NULL,
    added_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS documents (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    source INTEGER NOT NULL REFERENCES sources(id),
    source_key TEXT NOT NULL,
    doc_id TEXT NOT NULL UNIQUE,
    location TEXT NOT NULL,
    title TEXT NOT NULL,
    format TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    chars INTEGER NOT NULL,
    pages INTEGER NOT NULL,
    added_at TEXT NOT NULL,
    seen INTEGER NOT NULL,
    UNIQUE (source, source_key)
);
CREATE TABLE IF NOT EXISTS chunks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    document INTEGER NOT NULL REFERENCES documents(id),
    start_char INTEGER NOT NULL,
    end_char INTEGER NOT NULL,
    page INTEGER,
    headings TEXT NOT NULL,
    text TEXT NOT NULL,
    terms TEXT NOT NULL,
    embed_key BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS chunks_document ON chunks(document);
CREATE TABLE IF NOT EXISTS failures (location TEXT NOT NULL, reason TEXT NOT NULL);
"""


# ---- values ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class IngestNote:
    """One line of progress from `add` or `remove`; `kind` says what happened to `location`."""

    kind: Literal["added", "updated", "unchanged", "failed", "removed", "indexing"]
    location: str
    detail: str = ""


ProgressSink = Callable[[IngestNote], None]


def _ignore(_: IngestNote) -> None:
    pass


@dataclass
class AddResult:
    """What one `add` did. `changed` is False when the KB's searchable content is as before."""

    documents_added: int = 0
    documents_updated: int = 0
    documents_unchanged: int = 0
    documents_removed: int = 0
    chunks_added: int = 0
    pages_added: int = 0
    failures: list[Failure] = field(default_factory=list)
    revision: int = 0
    changed: bool = False
    seconds: float = 0.0

    def summary(self) -> str:
        """One line for people, e.g. "added 12 documents (340 chunks), 2 unchanged, 3 failed"."""
        new = self.documents_added + self.documents_updated
        parts = [f"added {_count(new, 'document')} ({_count(self.chunks_added, 'chunk')})"]
        if self.documents_updated:
            parts.append(f"{self.documents_updated} of them updated")
        parts.append(f"{self.documents_unchanged} unchanged")
        if self.documents_removed:
            parts.append(f"{self.documents_removed} removed")
        parts.append(f"{len(self.failures)} failed")
        return ", ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "documents_added": self.documents_added,
            "documents_updated": self.documents_updated,
            "documents_unchanged": self.documents_unchanged,
            "documents_removed": self.documents_removed,
            "chunks_added": self.chunks_added,
            "pages_added": self.pages_added,
            "failures": [{"location": f.location, "reason": f.reason} for f in self.failures],
            "revision": self.revision,
            "changed": self.changed,
            "seconds": round(self.seconds, 3),
        }


@dataclass(frozen=True)
class KBInfo:
    """A summary of a KB, as `deepdraft kb info` shows it."""

    path: str
    format_version: int
    revision: int
    documents: int
    chunks: int
    pages: int
    size_bytes: int
    formats: dict[str, int]
    embedder: str | None
    dimension: int | None
    chunking: dict[str, int]
    analyzer: str
    failures: list[dict[str, str]]
    created: str
    updated: str

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


# ---- document filters ---------------------------------------------------------------------------------


def glob_regex(pattern: str) -> re.Pattern[str]:
    """A glob as a regex: `*` and `?` stay within one path segment, `**` crosses them, ``[...]`` sets."""
    out: list[str] = []
    i, size = 0, len(pattern)
    while i < size:
        char = pattern[i]
        if pattern.startswith("**", i):
            i += 2
            if pattern.startswith("/", i):  # "**/" also matches no folder at all
                out.append("(?:.*/)?")
                i += 1
            else:
                out.append(".*")
            continue
        if char == "*":
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif char == "[" and (close := pattern.find("]", i + 2)) > 0:
            body = pattern[i + 1 : close]
            negate = body.startswith("!")
            members = (body[1:] if negate else body).replace("\\", "\\\\").replace("^", "\\^")
            out.append("[" + ("^" if negate else "") + members + "]")
            i = close
        else:
            out.append(re.escape(char))
        i += 1
    return re.compile("".join(out) + r"\Z", re.DOTALL)


class DocumentMatcher:
    """Tests a document (its id and location) against glob patterns.

    A pattern matches the whole id or location; a pattern without ``/`` also matches the last path
    segment, so ``*.pdf`` finds every PDF wherever it lives (as in .gitignore). ``~`` is expanded.
    """

    def __init__(self, patterns: Iterable[str]) -> None:
        self.patterns = [os.path.expanduser(p) for p in patterns if p]
        self._anchored = [glob_regex(p) for p in self.patterns]
        self._basename = [glob_regex(p) for p in self.patterns if "/" not in p]

    def __bool__(self) -> bool:
        return bool(self.patterns)

    def matches(self, doc_id: str, location: str) -> bool:
        for value in (doc_id, location):
            if any(regex.match(value) for regex in self._anchored):
                return True
            name = value.rstrip("/").rsplit("/", 1)[-1]
            if any(regex.match(name) for regex in self._basename):
                return True
        return False


# ---- the knowledge base ---------------------------------------------------------------------------------


@dataclass
class _Generation:
    """The derived search files of one revision, opened (memory-mapped)."""

    name: str
    revision: int
    fingerprint: str
    rows: npt.NDArray[np.int64]  # BM25/vector row → chunk id
    documents: npt.NDArray[np.int64]  # BM25/vector row → document id
    bm25: Any  # bm25s.BM25, or None when no chunk has a term
    vectors: Any  # VectorIndex, or None when the KB has no embedder

    @property
    def size(self) -> int:
        return int(self.rows.shape[0])


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
        **options: Any,
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
        ocr: bool = True,
        prune: bool = False,
        wait: bool = False,
    ) -> AddResult:
        """Ingest files, folders (recursively) and globs; see the module docstring for the guarantees.

        `embedder` (or `embedding`, to build one) gives the KB dense vectors; a KB that already has
        an embedder keeps using it and refuses another. `prune` also removes the documents of files
        that no longer exist under the given folders. Problems with single files are reported to
        `progress` and in the result; they never stop the others.
        """
        say = progress or _ignore
        started = time.monotonic()
        result = AddResult()
        settings = RetrievalSettings()
        limit = max_bytes if max_bytes is not None else int(settings.max_file_mb * 1024 * 1024)
        with _WriteLock(self.folder, self.label, wait=wait):
            db = _connect(self.folder / DB_NAME, readonly=False)
            try:
                meta = _read_meta(db, self.label)
                new_embedder = self._writer_embedder(meta, embedder, embedding)
                _repair(self.folder, db, meta, self._cache_path(), self._embedder_for(meta), say)
                meta = _read_meta(db, self.label)
                db.execute("BEGIN IMMEDIATE")
                try:
                    changed = self._ingest(db, meta, paths, result, limit, ocr, prune, say)
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
                    db, file, root, revision, chunk_tokens, overlap, result, max_bytes, ocr, say
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
            for item in read_documents(file, max_bytes=max_bytes, ocr=ocr, root=root):
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
            from deepdraft.retrieval.embedders import build_embedder

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
            from deepdraft.retrieval.embedders import build_embedder

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


# ---- knowledge bases of a folder, built on the fly ---------------------------------------------------


def open_folder_kb(corpus: Path, cache_root: Path, settings: Settings) -> KnowledgeBase:
    """The documents at `corpus` as a KB cached in `cache_root`, brought up to date first.

    One cache entry per corpus path and embedder (``<name>-<hash>``). Unchanged files cost only a
    hash; files deleted from the folder are pruned; a change of chunking settings rebuilds the entry.
    `KnowledgeBaseError` when nothing in `corpus` is readable, naming the first problems.
    """
    retrieval, embedding = settings.retrieval, settings.embedding
    spec = [embedding.base_url, embedding.model] if embedding.enabled else None
    digest = hashlib.sha256(json.dumps([str(corpus), spec]).encode()).hexdigest()[:12]
    readable = re.sub(r"[^A-Za-z0-9_-]+", "-", corpus.name).strip("-")[:40] or "corpus"
    folder = Path(cache_root) / f"{readable}-{digest}"
    label = str(corpus)
    wanted = {"chunk_tokens": retrieval.chunk_tokens, "chunk_overlap": retrieval.chunk_overlap}
    if (folder / DB_NAME).is_file():
        with KnowledgeBase.open(folder, label=label) as cached:
            stale = cached.chunking != wanted
        if stale:  # a cache entry, not user data: rebuilt rather than migrated
            with _WriteLock(folder, label, wait=True):
                trash = folder.with_name(f".deleting-{folder.name}-{uuid.uuid4().hex[:8]}")
                folder.rename(trash)
            shutil.rmtree(trash, ignore_errors=True)
    with KnowledgeBase.create(folder, retrieval, label=label) as kb:
        result = kb.add(
            [corpus],
            embedding=embedding if embedding.enabled else None,
            max_bytes=int(retrieval.max_file_mb * 1024 * 1024),
            ocr=retrieval.ocr,
            prune=True,
            wait=True,
        )
        if kb.document_count() == 0:
            shown = "; ".join(str(failure) for failure in result.failures[:3])
            more = f" (+{len(result.failures) - 3} more)" if len(result.failures) > 3 else ""
            raise KnowledgeBaseError(
                f"no readable documents in {corpus}" + (f": {shown}{more}" if shown else "")
            )
    return KnowledgeBase.open(
        folder,
        label=label,
        only=retrieval.only,
        exclude=retrieval.exclude,
        mode=retrieval.mode,
        embedding=embedding,
    )


# ---- ingestion helpers ----------------------------------------------------------------------------------


@dataclass
class _FileCounts:
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    removed: int = 0
    chunks: int = 0
    pages: int = 0
    failures: list[Failure] = field(default_factory=list)


def _store_document(
    db: sqlite3.Connection,
    doc: Document,
    source_row: int,
    source_path: str,
    revision: int,
    chunk_tokens: int,
    overlap: int,
    now: str,
    seen_keys: dict[str, int],
    counts: _FileCounts,
) -> None:
    """Insert, replace or keep one document of a changed file."""
    key = doc.doc_id
    occurrence = seen_keys.get(key, 0) + 1
    seen_keys[key] = occurrence
    if occurrence > 1:  # a repeated id in one file (a JSONL corpus): each record stays a document
        key = f"{key}#{occurrence}"
    content_hash = _document_hash(doc)
    existing = db.execute(
        "SELECT id, content_hash FROM documents WHERE source = ? AND source_key = ?", (source_row, key)
    ).fetchone()
    if existing is not None and existing[1] == content_hash:
        db.execute("UPDATE documents SET seen = ? WHERE id = ?", (revision, existing[0]))
        counts.unchanged += 1
        return
    chunks = chunk_document(doc, chunk_tokens, overlap)
    if not chunks:
        counts.failures.append(Failure(doc.location, f"document {doc.doc_id!r} has no text"))
        return
    if existing is not None:
        _delete_document(db, existing[0])
    doc_id = _unique_doc_id(db, key, source_path)
    row = db.execute(
        "INSERT INTO documents (source, source_key, doc_id, location, title, format, content_hash, chars,"
        " pages, added_at, seen) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            source_row,
            key,
            doc_id,
            doc.location,
            doc.title,
            doc.format,
            content_hash,
            len(doc.text),
            len(doc.pages),
            now,
            revision,
        ),
    ).lastrowid
    pending = []
    for chunk in chunks:
        # Title and heading path are indexed and embedded with the chunk; the stored text is the chunk.
        context = context_header(doc.title, chunk.headings)
        terms = _stored_terms(passage_terms(doc.title, chunk.headings, chunk.text))
        embed_key = hashlib.sha256(f"{context}\n{chunk.text}".encode("utf-8", "surrogatepass")).digest()
        pending.append(
            (
                row,
                chunk.start,
                chunk.end,
                chunk.page,
                json.dumps(chunk.headings),
                chunk.text,
                terms,
                embed_key,
            )
        )
    db.executemany(
        "INSERT INTO chunks (document, start_char, end_char, page, headings, text, terms, embed_key)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        pending,
    )
    if existing is None:
        counts.added += 1
    else:
        counts.updated += 1
    counts.chunks += len(chunks)
    counts.pages += len(doc.pages)


class _NothingUsable(Exception):
    """A changed file gave no document: keep its previous version."""


def _upsert_source(
    db: sqlite3.Connection, known: tuple[int, str] | None, path: str, digest: str, size: int, now: str
) -> int:
    if known is None:
        cursor = db.execute(
            "INSERT INTO sources (path, content_hash, size, added_at) VALUES (?, ?, ?, ?)",
            (path, digest, size, now),
        )
        return int(cursor.lastrowid or 0)
    db.execute(
        "UPDATE sources SET content_hash = ?, size = ?, added_at = ? WHERE id = ?",
        (digest, size, now, known[0]),
    )
    return int(known[0])


def _root_of(raw: str | Path) -> Path:
    """The folder document ids are relative to: the folder given, a file's folder, a glob's fixed part."""
    text = os.path.expanduser(str(raw))
    path = Path(os.path.abspath(text))
    if not os.path.lexists(path) and glob.has_magic(text):
        parts = []
        for part in Path(text).parts:
            if glob.has_magic(part):
                break
            parts.append(part)
        path = Path(os.path.abspath(os.path.join(*parts))) if parts else Path.cwd()
        return path
    return path if path.is_dir() else path.parent


def _unique_doc_id(db: sqlite3.Connection, key: str, source_path: str) -> str:
    if db.execute("SELECT 1 FROM documents WHERE doc_id = ?", (key,)).fetchone() is None:
        return key
    qualified = f"{source_path}#{key}"
    candidate, n = qualified, 2
    while db.execute("SELECT 1 FROM documents WHERE doc_id = ?", (candidate,)).fetchone() is not None:
        candidate, n = f"{qualified}~{n}", n + 1
    return candidate


def _delete_document(db: sqlite3.Connection, row: int) -> None:
    db.execute("DELETE FROM chunks WHERE document = ?", (row,))
    db.execute("DELETE FROM documents WHERE id = ?", (row,))


def _document_hash(doc: Document) -> str:
    digest = hashlib.sha256(b"deepdraft-document-1\0")
    pages = [(page.number, page.start, page.end) for page in doc.pages]
    for part in (doc.title, doc.location, doc.format, json.dumps(pages), doc.text):
        data = part.encode("utf-8", "surrogatepass")
        digest.update(len(data).to_bytes(8, "little") + data)
    return digest.hexdigest()


def _file_hash(file: Path) -> str:
    with file.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _prune(db: sqlite3.Connection, roots: list[Path]) -> list[str]:
    """Delete the documents of files under `roots` that no longer exist; their locations."""
    removed: list[str] = []
    for source_row, path in db.execute("SELECT id, path FROM sources").fetchall():
        under = any(path == str(root) or path.startswith(str(root).rstrip("/") + "/") for root in roots)
        if not under or Path(path).exists():
            continue
        for (row,) in db.execute("SELECT id FROM documents WHERE source = ?", (source_row,)).fetchall():
            _delete_document(db, row)
        db.execute("DELETE FROM sources WHERE id = ?", (source_row,))
        removed.append(path)
    return removed


def _select_for_removal(db: sqlite3.Connection, selectors: Sequence[str]) -> dict[int, tuple[str, str]]:
    documents = db.execute("SELECT id, doc_id, location FROM documents").fetchall()
    chosen: dict[int, tuple[str, str]] = {}
    unmatched = []
    for selector in selectors:
        exact = {selector, os.path.abspath(os.path.expanduser(selector))}
        matcher = DocumentMatcher([selector])
        hits = [
            (row, doc_id, location)
            for row, doc_id, location in documents
            if doc_id in exact or location in exact or matcher.matches(doc_id, location)
        ]
        if not hits:
            unmatched.append(selector)
        chosen.update((row, (doc_id, location)) for row, doc_id, location in hits)
    if unmatched:
        raise KnowledgeBaseError(
            f"no document matches {', '.join(map(repr, unmatched))}; nothing was removed "
            "(give doc ids, paths, URLs or globs as `deepdraft kb info NAME --documents` lists them)"
        )
    return chosen


def _record_failures(db: sqlite3.Connection, failures: list[Failure]) -> None:
    db.execute("DELETE FROM failures")
    db.executemany("INSERT INTO failures VALUES (?, ?)", [(f.location, f.reason) for f in failures])


def _fail(result: AddResult, say: ProgressSink, failure: Failure) -> None:
    result.failures.append(failure)
    say(IngestNote("failed", failure.location, failure.reason))


def _migrate_terms(db: sqlite3.Connection, meta: dict[str, Any], say: ProgressSink) -> bool:
    """Re-analyse every chunk when the analyzer changed since the KB was built (inside the transaction)."""
    if meta.get("analyzer") == ANALYZER_VERSION:
        return False
    say(IngestNote("indexing", "", "the text analyzer changed: re-analysing every passage"))
    last = 0
    while True:
        rows = db.execute(
            "SELECT c.id, c.text, c.headings, d.title FROM chunks c JOIN documents d ON d.id = c.document"
            " WHERE c.id > ? ORDER BY c.id LIMIT ?",
            (last, _STREAM_BATCH),
        ).fetchall()
        if not rows:
            break
        updates = []
        for chunk_id, text, headings, title in rows:
            updates.append((_stored_terms(passage_terms(title, json.loads(headings), text)), chunk_id))
        db.executemany("UPDATE chunks SET terms = ? WHERE id = ?", updates)
        last = rows[-1][0]
    db.execute("INSERT OR REPLACE INTO meta VALUES ('analyzer', ?)", (ANALYZER_VERSION,))
    return True


def _set_embedder_meta(db: sqlite3.Connection, embedder: Any, embedding: EmbeddingSettings | None) -> None:
    spec = {"base_url": embedding.base_url, "model": embedding.model} if embedding is not None else {}
    for key, value in (
        ("embedder", embedder.name),
        ("embedder_dimension", str(embedder.dimension)),
        ("embedder_spec", json.dumps(spec)),
    ):
        db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))


# ---- generations ----------------------------------------------------------------------------------------


def _gen_name(revision: int) -> str:
    return f"{GEN_PREFIX}{revision}"


def _revision_of(name: str) -> int:
    try:
        return int(name.removeprefix(GEN_PREFIX))
    except ValueError:
        return -1


def _build_generation(
    folder: Path,
    db: sqlite3.Connection,
    meta: dict[str, Any],
    revision: int,
    cache_path: Path,
    embedder: Any,
    say: ProgressSink,
) -> Path:
    """Write ``gen-<revision>`` from what `db` (possibly mid-transaction) holds; returns its path."""
    from deepdraft.retrieval.vectors import VectorIndex

    building = Path(tempfile.mkdtemp(prefix=f"{_BUILDING_PREFIX}{revision}-", dir=folder))
    try:
        (total,) = db.execute("SELECT count(*) FROM chunks").fetchone()
        say(IngestNote("indexing", "", f"building the search index over {_count(total, 'passage')}"))
        rows = array("q")
        documents = array("q")
        vocabulary: dict[str, int] = {}
        token_ids: list[array[int]] = []  # 4 bytes a term instead of a list's 8 plus int objects
        for chunk_id, document, terms in _stream(db, "id, document, terms", "chunks"):
            rows.append(chunk_id)
            documents.append(document)
            split = terms.split()
            for new_term in set(split).difference(vocabulary):
                vocabulary[new_term] = len(vocabulary)
            token_ids.append(array("i", map(vocabulary.__getitem__, split)))
        np.save(building / "rows.npy", np.frombuffer(rows, dtype=np.int64) if rows else np.zeros(0, np.int64))
        np.save(
            building / "documents.npy",
            np.frombuffer(documents, dtype=np.int64) if documents else np.zeros(0, np.int64),
        )
        has_bm25 = bool(vocabulary)
        if has_bm25:
            import bm25s

            bm25 = bm25s.BM25(method="lucene", k1=1.5, b=0.75, backend="numpy", csc_backend="numpy")
            # A (term id lists, vocabulary) pair: bm25s skips its own tokenizer and uses our analyzer's.
            bm25.index((token_ids, vocabulary), create_empty_token=False, show_progress=False)
            bm25.save(str(building / "bm25"), show_progress=False)
            del bm25
        del token_ids, vocabulary
        if embedder is not None and total:
            VectorIndex.write(
                building / "vectors",
                _vector_batches(db, cache_path, embedder, total, say),
                int(embedder.dimension),
            )
        manifest = {
            "format_version": FORMAT_VERSION,
            "revision": revision,
            "chunks": len(rows),
            "bm25": has_bm25,
            "vectors": embedder is not None and bool(total),
            "embedder": embedder.name if embedder is not None else None,
            "analyzer": meta.get("analyzer"),
            "fingerprint": _content_fingerprint(db, meta, embedder),
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        (building / _GEN_MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        fsync_tree(building)
        target = folder / _gen_name(revision)
        if target.exists():  # the orphan of a writer that died before its commit
            shutil.rmtree(target)
        os.rename(building, target)
        fsync_dir(folder)
        return target
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise


def _vector_batches(
    db: sqlite3.Connection, cache_path: Path, embedder: Any, total: int, say: ProgressSink
) -> Iterator[npt.NDArray[np.float32]]:
    """The vectors of every chunk in id order, from the cache or newly embedded (and then cached)."""
    name = str(embedder.name)
    dimension = int(embedder.dimension)
    cache = _open_cache(cache_path)
    done = computed = 0
    try:
        batch: list[tuple[bytes, str, str, str]] = []
        source = "chunks c JOIN documents d ON d.id = c.document"
        for item in _stream(db, "c.embed_key, c.text, c.headings, d.title", source, key="c.id"):
            batch.append(item)
            if len(batch) == _EMBED_BATCH:
                vectors, fresh = _embed_batch(cache, embedder, name, dimension, batch)
                done, computed = done + len(batch), computed + fresh
                if fresh:
                    say(IngestNote("indexing", "", f"embedded {done}/{total} passages"))
                batch = []
                yield vectors
        if batch:
            vectors, fresh = _embed_batch(cache, embedder, name, dimension, batch)
            computed += fresh
            yield vectors
    finally:
        cache.close()
    log.info("vectors: %d passages, %d newly embedded", total, computed)


def _embed_batch(
    cache: sqlite3.Connection,
    embedder: Any,
    name: str,
    dimension: int,
    batch: list[tuple[bytes, str, str, str]],
) -> tuple[npt.NDArray[np.float32], int]:
    keys = [key for key, _, _, _ in batch]
    marks = ",".join("?" * len(keys))
    known = {
        key: np.frombuffer(blob, dtype=np.float32)
        for key, blob in cache.execute(
            f"SELECT key, vector FROM vectors WHERE embedder = ? AND key IN ({marks})", [name, *keys]
        )
    }
    missing = [(key, text, headings, title) for key, text, headings, title in batch if key not in known]
    if missing:
        texts = [
            context_header(title, json.loads(headings)) + "\n" + text for _, text, headings, title in missing
        ]
        fresh = np.asarray(embedder.embed(texts), dtype=np.float32)
        if fresh.shape != (len(texts), dimension):
            raise KnowledgeBaseError(
                f"the embedder {name!r} returned vectors of shape {fresh.shape}, "
                f"expected ({len(texts)}, {dimension})"
            )
        with cache:
            cache.executemany(
                "INSERT OR REPLACE INTO vectors VALUES (?, ?, ?)",
                [
                    (name, key, vector.tobytes())
                    for (key, _, _, _), vector in zip(missing, fresh, strict=True)
                ],
            )
        for (key, _, _, _), vector in zip(missing, fresh, strict=True):
            known[key] = vector
    return np.stack([known[key] for key in keys]).astype(np.float32, copy=False), len(missing)


def _open_cache(path: Path) -> sqlite3.Connection:
    cache = sqlite3.connect(path, timeout=30)
    cache.execute("PRAGMA journal_mode = WAL")
    cache.execute(
        "CREATE TABLE IF NOT EXISTS vectors (embedder TEXT NOT NULL, key BLOB NOT NULL, vector BLOB NOT NULL,"
        " PRIMARY KEY (embedder, key)) WITHOUT ROWID"
    )
    return cache


def _content_fingerprint(db: sqlite3.Connection, meta: dict[str, Any], embedder: Any) -> str:
    """A hash of every document's content and id plus everything that decides what search finds."""
    config = [
        FORMAT_VERSION,
        meta.get("analyzer"),
        meta.get("chunk_tokens"),
        meta.get("chunk_overlap"),
        embedder.name if embedder is not None else None,
    ]
    digest = hashlib.sha256(json.dumps(config).encode())
    for doc_id, content_hash in _stream(db, "doc_id, content_hash", "documents"):
        digest.update(f"{doc_id}\0{content_hash}\n".encode("utf-8", "surrogatepass"))
    return digest.hexdigest()[:16]


def _stream(db: sqlite3.Connection, columns: str, source: str, key: str = "id") -> Iterator[Any]:
    """``SELECT columns FROM source`` in `key` order, fetched in batches (never all in memory).

    Keyset pagination on an integer key (AUTOINCREMENT ids start at 1); safe to interleave with
    other statements on the same connection, since each batch is fetched completely.
    """
    last = 0
    while True:
        rows = db.execute(
            f"SELECT {key}, {columns} FROM {source} WHERE {key} > ? ORDER BY {key} LIMIT ?",
            (last, _STREAM_BATCH),
        ).fetchall()
        if not rows:
            return
        for row in rows:
            yield row[1:]
        last = rows[-1][0]


def _open_generation(path: Path, meta: dict[str, Any]) -> _Generation:
    """Open a generation for searching; FileNotFoundError if it vanished, else KnowledgeBaseError."""
    if not path.is_dir():
        raise FileNotFoundError(path)
    try:
        manifest = json.loads((path / _GEN_MANIFEST).read_text(encoding="utf-8"))
        rows = np.load(path / "rows.npy", mmap_mode="r")
        documents = np.load(path / "documents.npy", mmap_mode="r")
        bm25 = None
        if manifest["bm25"]:
            import bm25s

            bm25 = bm25s.BM25.load(str(path / "bm25"), mmap=True, show_progress=False)
        vectors = None
        if manifest["vectors"]:
            from deepdraft.retrieval.vectors import VectorIndex

            vectors = VectorIndex.open(path / "vectors")
    except FileNotFoundError:
        raise
    except Exception as exc:  # numpy, json and bm25s raise all sorts: each means "damaged"
        raise KnowledgeBaseError(
            f"the search files in {path} are damaged ({exc}); add a document again to rebuild them"
        ) from exc
    if manifest.get("embedder") != meta.get("embedder") and manifest["vectors"]:
        raise KnowledgeBaseError(f"the search files in {path} do not match the knowledge base's embedder")
    return _Generation(
        name=path.name,
        revision=int(manifest["revision"]),
        fingerprint=str(manifest["fingerprint"]),
        rows=rows,
        documents=documents,
        bm25=bm25,
        vectors=vectors,
    )


def _read_pointer(folder: Path) -> str | None:
    try:
        name = (folder / POINTER).read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    return name if name.startswith(GEN_PREFIX) and _revision_of(name) > 0 else None


def _flip_pointer(folder: Path, revision: int) -> None:
    """Make ``gen-<revision>`` current: the pointer file is replaced atomically and durably.

    A crash leaves at worst a ``.CURRENT.…`` temporary file, which `_remove_stale_generations` deletes.
    """
    atomic_write_text(folder / POINTER, _gen_name(revision) + "\n")


def _remove_stale_generations(folder: Path, keep: str) -> None:
    """Delete every generation but `keep`, and the remains of interrupted builds.

    Readers that opened an old generation keep their memory maps (POSIX unlinks only the names).
    """
    for entry in folder.iterdir():
        stale_build = entry.name.startswith(_BUILDING_PREFIX) or entry.name.startswith(f".{POINTER}.")
        old_generation = entry.name.startswith(GEN_PREFIX) and entry.name != keep
        if stale_build or old_generation:
            if entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)


def _repair(
    folder: Path,
    db: sqlite3.Connection,
    meta: dict[str, Any],
    cache_path: Path,
    embedder: Any,
    say: ProgressSink,
) -> None:
    """Finish what a writer that died left undone (call with the write lock held)."""
    committed = int(meta.get("revision", 0))
    current = _read_pointer(folder)
    if committed > 0 and (current is None or _revision_of(current) != committed):
        target = folder / _gen_name(committed)
        complete = False
        if (target / _GEN_MANIFEST).is_file():
            try:
                complete = (
                    json.loads((target / _GEN_MANIFEST).read_text(encoding="utf-8"))["revision"] == committed
                )
            except (OSError, ValueError, KeyError):
                complete = False
        if not complete:
            say(IngestNote("indexing", "", "rebuilding the search index an interrupted write left behind"))
            _build_generation(folder, db, meta, committed, cache_path, embedder, say)
        _flip_pointer(folder, committed)
    _remove_stale_generations(folder, keep=_gen_name(committed))


def _try_repair(folder: Path, label: str, cache_path: Path, embedder: Any) -> bool:
    """Repair from a reader, if no writer holds the lock right now; True if it did."""
    try:
        lock = _WriteLock(folder, label, wait=False)
        lock.__enter__()
    except KnowledgeBaseError:
        return False
    except OSError:  # a read-only folder: nothing a reader can do
        return False
    try:
        db = _connect(folder / DB_NAME, readonly=False)
        try:
            _repair(folder, db, _read_meta(db, label), cache_path, embedder, _ignore)
        finally:
            db.close()
    finally:
        lock.__exit__(None, None, None)
    return True


# ---- the database ---------------------------------------------------------------------------------------


def _connect(path: Path, *, readonly: bool) -> sqlite3.Connection:
    try:
        if readonly:
            db = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True, check_same_thread=False)
        else:
            db = sqlite3.connect(path, isolation_level=None, timeout=30)
            db.execute("PRAGMA journal_mode = WAL")
            # FULL: the commit must be on disk before the pointer names the generation built for it.
            db.execute("PRAGMA synchronous = FULL")
        db.execute("PRAGMA busy_timeout = 10000")
        db.execute("PRAGMA foreign_keys = OFF")  # integrity is kept by the code paths above, in bulk
    except sqlite3.Error as exc:
        raise KnowledgeBaseError(f"cannot open the knowledge base database {path} ({exc})") from exc
    return db


def _initialise(folder: Path, settings: RetrievalSettings) -> None:
    """Create kb.sqlite complete under a temporary name, then rename it: it exists whole or not at all."""
    temporary = folder / f".{DB_NAME}.{uuid.uuid4().hex[:8]}"
    try:
        db = _connect(temporary, readonly=False)
        try:
            db.executescript(_SCHEMA)
            now = datetime.now(UTC).isoformat(timespec="seconds")
            db.executemany(
                "INSERT INTO meta VALUES (?, ?)",
                [
                    ("format_version", str(FORMAT_VERSION)),
                    ("created", now),
                    ("updated", now),
                    ("chunk_tokens", str(settings.chunk_tokens)),
                    ("chunk_overlap", str(settings.chunk_overlap)),
                    ("analyzer", ANALYZER_VERSION),
                    ("revision", "0"),
                ],
            )
            db.execute("PRAGMA journal_mode = DELETE")  # fold the WAL in, so one file is renamed
        finally:
            db.close()
        os.replace(temporary, folder / DB_NAME)
        fsync_dir(folder)
    finally:
        for leftover in folder.glob(f"{temporary.name}*"):
            leftover.unlink(missing_ok=True)


def _read_meta(db: sqlite3.Connection, label: str) -> dict[str, Any]:
    try:
        meta: dict[str, Any] = dict(db.execute("SELECT key, value FROM meta").fetchall())
    except sqlite3.DatabaseError as exc:
        raise KnowledgeBaseError(f"knowledge base {label!r} cannot be read ({exc})") from exc
    try:
        version = int(meta.get("format_version", ""))
    except ValueError:
        raise KnowledgeBaseError(f"knowledge base {label!r} has no format version: it is damaged") from None
    if version > FORMAT_VERSION:
        raise KnowledgeBaseError(
            f"knowledge base {label!r} has format version {version}, written by a newer deepdraft "
            f"(this one reads up to {FORMAT_VERSION}); upgrade deepdraft to use it"
        )
    return meta


# ---- the write lock -------------------------------------------------------------------------------------


class _WriteLock:
    """`flock` on ``write.lock``: one writer per KB, across processes; the kernel frees it on any exit."""

    def __init__(self, folder: Path, label: str, *, wait: bool) -> None:
        self.path = folder / LOCK_NAME
        self.label = label
        self.wait = wait
        self.handle: IO[str] | None = None

    def __enter__(self) -> _WriteLock:
        handle = self.path.open("a+", encoding="utf-8")
        try:
            flags = fcntl.LOCK_EX if self.wait else fcntl.LOCK_EX | fcntl.LOCK_NB
            fcntl.flock(handle, flags)
        except BlockingIOError:
            handle.seek(0)
            owner = handle.read().strip() or "another process"
            handle.close()
            raise KnowledgeBaseError(
                f"knowledge base {self.label!r} is being written by {owner}; try again when it finishes"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"another process (pid {os.getpid()})")
        handle.flush()
        self.handle = handle
        return self

    def __exit__(self, *exc: object) -> None:
        if self.handle is not None:
            self.handle.close()  # closing the file releases the lock
            self.handle = None


@contextmanager
def write_lock(folder: Path, label: str, *, wait: bool = False) -> Iterator[None]:
    """Hold a KB's write lock (used to delete a whole KB without racing a writer)."""
    with _WriteLock(folder, label, wait=wait):
        yield


# ---- small helpers --------------------------------------------------------------------------------------


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


def _stored_terms(terms: list[str]) -> str:
    """Index terms as the chunks table keeps them: space-separated (a term holding a space is left out)."""
    return " ".join(term for term in terms if " " not in term)


def _tree_size(folder: Path) -> int:
    total = 0
    for path in folder.rglob("*"):
        try:
            if path.is_file():
                total += path.stat().st_size
        except OSError:
            continue  # a file a writer just deleted
    return total


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"
