"""A BM25 index on disk: build it from documents, open it, search it (the `Retriever` of a local corpus).

Layout of an index directory::

    manifest.json     format name + version, analyzer, chunk settings, counts, corpus fingerprint;
                      written last, so a directory without it is never taken for an index
    bm25/             the bm25s score matrix (CSC arrays, memory-mapped when searching) and vocabulary
    chunks.sqlite     table `documents` (row, doc_id, title, location) and table `chunks` (row = the
                      bm25s document number, document, start_char, end_char, headings JSON, text)

Trade-offs:

* Scoring is bm25s (Lucene's BM25 variant, k1=1.5, b=0.75) over our own analyzer (`analysis`:
  lowercase + NFKC, accents folded, English stopwords and stemming, Chinese segmented by jieba).
  `ANALYZER` is recorded in the manifest, so an index built by another analyzer is rebuilt, not
  silently mis-searched. The same function analyses documents and queries.
* Each chunk is indexed together with its document title and heading path (contextual headers): a
  passage deep in a section about tariffs should match "tariffs" even if the word is only in the
  heading. The stored and returned text is the raw passage.
* Chunk texts live in SQLite, keyed by chunk number, so a search reads only its hits and memory does
  not grow with the corpus; the score matrix is memory-mapped. Building still holds the token ids of
  every chunk in RAM (bm25s needs them all to compute document frequencies): about 4 bytes per
  token, fine for millions of passages, not for a full Wikipedia — that is the job of the remote
  engine (DESIGN §5). The chunk table is deliberately independent of BM25, so dense vectors and
  hybrid search can later be stored next to it, keyed by the same chunk number.
* Builds are atomic: everything is written into a temporary sibling directory, flushed, and renamed
  into place; an existing index is moved aside only for the instant of the swap. A crash leaves the
  old index or the new one, plus at worst a hidden ``.<name>.building-*`` directory to delete.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import sqlite3
import tempfile
import uuid
from array import array
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import bm25s
import numpy as np
import numpy.typing as npt

from deepdraft.errors import KnowledgeBaseError
from deepdraft.ports import Passage, Source
from deepdraft.retrieval.analysis import ANALYZER_VERSION, analyze
from deepdraft.retrieval.chunking import chunk_document
from deepdraft.retrieval.corpus import Document, corpus_stamp, iter_documents
from deepdraft.settings import RetrievalSettings

FORMAT = "deepdraft-bm25"
FORMAT_VERSION = 1
ANALYZER = ANALYZER_VERSION
MANIFEST = "manifest.json"
CHUNKS_DB = "chunks.sqlite"
BM25_DIR = "bm25"

_INSERT_BATCH = 2000
_SELECT_BATCH = 500  # stays below SQLite's limit on bound parameters in every version

__all__ = ["ANALYZER", "BM25Index", "analyze", "cache_key", "open_or_build"]


class BM25Index:
    """A built index, open for searching. Thread-safe for concurrent `search` calls."""

    def __init__(self, index_dir: Path, manifest: dict[str, Any], bm25: Any, db: sqlite3.Connection):
        self._dir = index_dir
        self._manifest = manifest
        self._bm25 = bm25
        self._vocab: dict[str, int] = bm25.vocab_dict
        self._db = db

    # -- building ---------------------------------------------------------------------------------

    @classmethod
    def build(
        cls,
        documents: Iterable[Document],
        index_dir: Path,
        settings: RetrievalSettings,
        *,
        skipped: Sequence[str] = (),
        source: dict[str, str] | None = None,
    ) -> BM25Index:
        """Chunk and index `documents` into `index_dir`, replacing any index there, atomically.

        `skipped` is recorded in the manifest after `documents` is exhausted, so it may be the list
        that `iter_documents` fills while it is read. `source` (path and stamp of the corpus) is
        recorded for `open_or_build`. A directory that exists but is not an index is never replaced.
        """
        index_dir = Path(index_dir)
        _check_replaceable(index_dir)
        index_dir.parent.mkdir(parents=True, exist_ok=True)
        # A sibling of the target, so the final rename stays within one filesystem.
        building = Path(tempfile.mkdtemp(prefix=f".{index_dir.name}.building-", dir=index_dir.parent))
        try:
            manifest = _write_index(documents, building, settings)
            manifest["skipped"] = list(skipped)
            manifest["source"] = source
            _write_json(building / MANIFEST, manifest)
            _fsync_tree(building)
            _swap_into_place(building, index_dir)
        except BaseException:
            shutil.rmtree(building, ignore_errors=True)
            raise
        return cls.open(index_dir)

    # -- opening ----------------------------------------------------------------------------------

    @classmethod
    def open(cls, index_dir: Path) -> BM25Index:
        """Open a built index; `KnowledgeBaseError` if it is missing, damaged or of another version."""
        index_dir = Path(index_dir)
        manifest = _read_manifest(index_dir)
        try:
            bm25 = bm25s.BM25.load(str(index_dir / BM25_DIR), mmap=True, show_progress=False)
            matrix_docs = int(bm25.scores["num_docs"])
        except Exception as exc:  # bm25s raises whatever numpy/json raise: all mean "damaged"
            raise KnowledgeBaseError(f"search index at {index_dir} is damaged ({exc}); rebuild it") from exc
        if matrix_docs != manifest["chunks"]:
            raise KnowledgeBaseError(f"search index at {index_dir} is inconsistent; rebuild it")
        db_path = index_dir / CHUNKS_DB
        if not db_path.is_file():
            raise KnowledgeBaseError(f"search index at {index_dir} has no {CHUNKS_DB}; rebuild it")
        try:
            # immutable: the file never changes once built, so SQLite can skip locking entirely.
            uri = f"{db_path.absolute().as_uri()}?mode=ro&immutable=1"
            db = sqlite3.connect(uri, uri=True, check_same_thread=False)
            (last,) = db.execute("SELECT max(row) FROM chunks").fetchone()
        except sqlite3.Error as exc:
            raise KnowledgeBaseError(f"search index at {index_dir} is damaged ({exc}); rebuild it") from exc
        if last != manifest["chunks"] - 1:
            db.close()
            raise KnowledgeBaseError(f"search index at {index_dir} is inconsistent; rebuild it")
        return cls(index_dir, manifest, bm25, db)

    # -- the Retriever protocol -------------------------------------------------------------------

    def search(self, query: str, k: int) -> list[Passage]:
        """The `k` best passages for `query`, best first; [] if no query term is in the corpus."""
        ranked = self.rank(query, k)
        rows = self._fetch([row for row, _ in ranked])
        return [Passage(text=rows[row][0], source=rows[row][1], score=score) for row, score in ranked]

    def rank(
        self, query: str, k: int, allowed: npt.NDArray[np.bool_] | None = None
    ) -> list[tuple[int, float]]:
        """The `k` best (chunk row, BM25 score) pairs for `query`, best first, reading no chunk text.

        `allowed` (one bool per chunk row) restricts the search to the rows that are True.
        """
        if k <= 0:
            return []
        ids = [self._vocab[term] for term in analyze(query) if term in self._vocab]
        if not ids:
            return []
        scores: npt.NDArray[np.float32] = self._bm25.get_scores_from_ids(ids)
        if allowed is not None:
            if allowed.shape != scores.shape:
                raise ValueError(f"allowed has {allowed.shape[0]} rows, the index {scores.shape[0]}")
            scores = np.where(allowed, scores, np.float32(0))
        count = int(scores.shape[0])
        top = np.arange(count) if k >= count else np.argpartition(-scores, k - 1)[:k]
        top = top[scores[top] > 0]  # Lucene IDF is positive: zero means no query term occurs
        top = top[np.lexsort((top, -scores[top]))]  # best first; ties by chunk number, deterministic
        return [(row, float(scores[row])) for row in top.tolist()]

    def fingerprint(self) -> str:
        """Hash of the indexed documents, chunk settings and analyzer (from the manifest)."""
        return str(self._manifest["fingerprint"])

    # -- the rest ---------------------------------------------------------------------------------

    @property
    def path(self) -> Path:
        return self._dir

    @property
    def manifest(self) -> dict[str, Any]:
        return dict(self._manifest)

    @property
    def skipped(self) -> list[str]:
        """Files the corpus reader skipped when this index was built (to show to the user)."""
        return list(self._manifest.get("skipped") or [])

    def __len__(self) -> int:
        return int(self._manifest["chunks"])

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> BM25Index:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()

    def _fetch(self, rows: list[int]) -> dict[int, tuple[str, Source]]:
        found: dict[int, tuple[str, Source]] = {}
        for i in range(0, len(rows), _SELECT_BATCH):
            batch = rows[i : i + _SELECT_BATCH]
            marks = ",".join("?" * len(batch))
            cursor = self._db.execute(
                "SELECT c.row, c.text, c.start_char, c.end_char, d.doc_id, d.title, d.location"
                f" FROM chunks c JOIN documents d ON d.row = c.document WHERE c.row IN ({marks})",
                batch,
            )
            for row, text, start, end, doc_id, title, location in cursor:
                found[row] = (text, Source(doc_id, title, location, None, start, end))
        return found


def open_or_build(corpus_path: Path, cache_root: Path, settings: RetrievalSettings) -> BM25Index:
    """Search a folder or file of documents, reusing the cached index while the corpus is unchanged.

    The cache entry is ``cache_root/<name>-<hash of the absolute path>``. It is rebuilt when the
    corpus stamp (relative paths, sizes, times, and contents of small corpora) or the chunk settings
    differ from the ones it was built with, or when it cannot be opened (damaged, older format).
    """
    corpus_path = Path(corpus_path).expanduser().resolve()
    stamp = corpus_stamp(corpus_path)  # raises KnowledgeBaseError for a missing or empty corpus
    index_dir = Path(cache_root) / cache_key(corpus_path)
    try:
        index = BM25Index.open(index_dir)
    except KnowledgeBaseError:
        pass
    else:
        source = index.manifest.get("source") or {}
        if source.get("stamp") == stamp and index.manifest.get("chunking") == _chunking(settings):
            return index
        index.close()
    skipped: list[str] = []
    return BM25Index.build(
        iter_documents(corpus_path, skipped),
        index_dir,
        settings,
        skipped=skipped,
        source={"path": str(corpus_path), "stamp": stamp},
    )


def cache_key(corpus_path: Path) -> str:
    """A readable, collision-safe directory name for the index of the corpus at `corpus_path`."""
    name = re.sub(r"[^A-Za-z0-9_-]+", "-", corpus_path.name).strip("-")[:40] or "corpus"
    return f"{name}-{hashlib.sha256(str(corpus_path).encode()).hexdigest()[:12]}"


# -- helpers ----------------------------------------------------------------------------------------


def _chunking(settings: RetrievalSettings) -> dict[str, int]:
    return {"chunk_tokens": settings.chunk_tokens, "chunk_overlap": settings.chunk_overlap}


def _write_index(documents: Iterable[Document], folder: Path, settings: RetrievalSettings) -> dict[str, Any]:
    """Chunk, store and index the documents into `folder`; return the manifest (not yet written)."""
    chunking = _chunking(settings)
    digest = hashlib.sha256(json.dumps([FORMAT_VERSION, ANALYZER, chunking]).encode())
    vocab: dict[str, int] = {}
    token_ids: list[array[int]] = []  # 4 bytes a token instead of a list's 8 + int objects
    db = sqlite3.connect(folder / CHUNKS_DB)
    try:
        # No journal and no syncs while building: on a crash the whole folder is thrown away, and
        # the files are fsync-ed once before the rename.
        db.executescript(
            """
            PRAGMA journal_mode = OFF;
            PRAGMA synchronous = OFF;
            CREATE TABLE documents (
                row INTEGER PRIMARY KEY, doc_id TEXT NOT NULL, title TEXT NOT NULL, location TEXT NOT NULL
            );
            CREATE TABLE chunks (
                row INTEGER PRIMARY KEY, document INTEGER NOT NULL, start_char INTEGER NOT NULL,
                end_char INTEGER NOT NULL, headings TEXT NOT NULL, text TEXT NOT NULL
            );
            """
        )
        pending: list[tuple[int, int, int, int, str, str]] = []
        n_docs = 0
        for doc in documents:
            for field in (doc.doc_id, doc.title, doc.location, doc.text):
                data = field.encode("utf-8", errors="surrogatepass")
                digest.update(len(data).to_bytes(8, "little") + data)
            chunks = chunk_document(doc, settings.chunk_tokens, settings.chunk_overlap)
            if not chunks:
                continue
            db.execute(
                "INSERT INTO documents VALUES (?, ?, ?, ?)", (n_docs, doc.doc_id, doc.title, doc.location)
            )
            for chunk in chunks:
                # Title and heading path are indexed with the chunk (once each, even if the first
                # heading repeats the title) but not stored in its text.
                context = " \n ".join(dict.fromkeys((doc.title, *chunk.headings)))
                terms = analyze(context) + analyze(chunk.text)
                for new_term in set(terms).difference(vocab):
                    vocab[new_term] = len(vocab)
                token_ids.append(array("i", map(vocab.__getitem__, terms)))
                pending.append(
                    (
                        len(token_ids) - 1,
                        n_docs,
                        chunk.start,
                        chunk.end,
                        json.dumps(chunk.headings),
                        chunk.text,
                    )
                )
            n_docs += 1
            if len(pending) >= _INSERT_BATCH:
                db.executemany("INSERT INTO chunks VALUES (?, ?, ?, ?, ?, ?)", pending)
                pending.clear()
        db.executemany("INSERT INTO chunks VALUES (?, ?, ?, ?, ?, ?)", pending)
        db.commit()
    finally:
        db.close()
    if not token_ids or not vocab:
        raise KnowledgeBaseError(
            "the corpus has no searchable text (only empty files, punctuation or stopwords)"
        )
    bm25 = bm25s.BM25(method="lucene", k1=1.5, b=0.75, backend="numpy", csc_backend="numpy")
    # A (token id lists, vocabulary) pair: bm25s skips its own tokenizer and uses our analyzer's terms.
    bm25.index((token_ids, vocab), create_empty_token=False, show_progress=False)
    bm25.save(str(folder / BM25_DIR), show_progress=False)
    return {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "analyzer": ANALYZER,
        "chunking": chunking,
        "bm25": {"method": "lucene", "k1": 1.5, "b": 0.75, "library": f"bm25s {bm25s.__version__}"},
        "documents": n_docs,
        "chunks": len(token_ids),
        "vocabulary": len(vocab),
        "fingerprint": digest.hexdigest()[:16],
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def _read_manifest(index_dir: Path) -> dict[str, Any]:
    path = index_dir / MANIFEST
    if not path.is_file():
        raise KnowledgeBaseError(f"no search index at {index_dir} ({MANIFEST} missing); build it first")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise KnowledgeBaseError(f"search index at {index_dir} is damaged ({exc}); rebuild it") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise KnowledgeBaseError(f"{index_dir} is not a deepdraft BM25 index")
    if manifest.get("version") != FORMAT_VERSION:
        raise KnowledgeBaseError(
            f"search index at {index_dir} has format version {manifest.get('version')}, this deepdraft "
            f"reads version {FORMAT_VERSION}; rebuild it"
        )
    if manifest.get("analyzer") != ANALYZER:
        raise KnowledgeBaseError(f"search index at {index_dir} was built with another tokenizer; rebuild it")
    if not isinstance(manifest.get("chunks"), int) or not isinstance(manifest.get("fingerprint"), str):
        raise KnowledgeBaseError(f"search index at {index_dir} has a damaged manifest; rebuild it")
    return manifest


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _check_replaceable(index_dir: Path) -> None:
    """Refuse to replace anything that is not (the remains of) an index: it may be the user's data."""
    if not index_dir.exists():
        return
    if not index_dir.is_dir():
        raise KnowledgeBaseError(f"cannot build an index at {index_dir}: it is a file")
    if any(index_dir.iterdir()) and not (index_dir / MANIFEST).is_file():
        raise KnowledgeBaseError(
            f"cannot build an index at {index_dir}: the folder is not empty and holds no index; "
            "choose another folder"
        )


def _fsync_tree(folder: Path) -> None:
    """Flush every file so that, once renamed, the index survives a power loss too."""
    for path in folder.rglob("*"):
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def _swap_into_place(built: Path, index_dir: Path) -> None:
    """Rename `built` to `index_dir`; an existing index is moved aside first and deleted after."""
    aside: Path | None = None
    if index_dir.exists():
        # rename() cannot replace a non-empty directory, so the old one steps aside for a moment.
        aside = index_dir.with_name(f".{index_dir.name}.old-{uuid.uuid4().hex[:8]}")
        os.rename(index_dir, aside)
    try:
        os.rename(built, index_dir)
    except OSError as exc:
        if aside is not None and not index_dir.exists():
            os.rename(aside, index_dir)  # put the old index back
        if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
            raise KnowledgeBaseError(
                f"another process built the index at {index_dir} at the same time"
            ) from exc
        raise
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)
