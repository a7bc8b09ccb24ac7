"""Generations: the derived search files of one revision, built, opened, made current and repaired.

``gen-<revision>/`` holds BM25 (bm25s, memory-mapped), the chunk id and document of every BM25 row,
dense vectors (`VectorIndex`) when the KB has an embedder, and a manifest with the content
fingerprint. ``CURRENT`` names the generation readers use; it is replaced atomically (temp + fsync +
rename). A writer builds the next generation from its open transaction, *before* the commit, into a
temporary folder renamed to ``gen-<revision+1>``, and flips the pointer after the commit (see
`store`). A crash between commit and flip is repaired by the next writer, or by a reader that can
take the lock (`_repair`, `_try_repair`): the generation of the committed revision is already
complete on disk, else it is rebuilt from the database. Orphans of interrupted builds and old
generations are deleted by the next writer (`_remove_stale_generations`).

Trade-offs:

* Each generation is complete: BM25 is rebuilt over all chunks for every change. bm25s has no
  incremental update, and rebuilding from the stored index terms (no re-tokenising) is a few seconds
  per million passages — cheaper than the bookkeeping of segment merging. Building holds the term ids
  of every chunk in memory (about 4 bytes a term), which suits millions of passages, not billions
  (that is the remote engine's job, DESIGN §5).
* Dense vectors are computed once per (embedder, text) and kept in `embeddings.sqlite`, a separate
  database committed in small batches: an interrupted add keeps the vectors it paid for (the slow
  part on a CPU), and the cache can never make the KB itself inconsistent.
* Readers that opened an old generation keep their memory maps when it is deleted (POSIX unlinks only
  the names).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import sqlite3
import tempfile
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from deepdraft.errors import KnowledgeBaseError
from deepdraft.fsutil import atomic_write_text, fsync_dir, fsync_tree
from deepdraft.retrieval.index.analysis import context_header, new_bm25
from deepdraft.retrieval.kb.lock import _WriteLock
from deepdraft.retrieval.kb.schema import DB_NAME, FORMAT_VERSION, _connect, _read_meta, _stream
from deepdraft.retrieval.kb.values import IngestNote, ProgressSink, _count, _ignore

log = logging.getLogger(__name__)


EMBEDDING_CACHE = "embeddings.sqlite"
POINTER = "CURRENT"
GEN_PREFIX = "gen-"
_BUILDING_PREFIX = ".building-"
_GEN_MANIFEST = "manifest.json"

_EMBED_BATCH = 256


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
    from deepdraft.retrieval.index.vectors import VectorIndex

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
            bm25 = new_bm25()
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
            from deepdraft.retrieval.index.vectors import VectorIndex

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
