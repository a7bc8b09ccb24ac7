"""A KB folder as one archive, and back: how a small KB travels to a machine that cannot see it.

`deepdraft batch --ray` ships a knowledge base to the workers whose nodes do not share the
driver's storage (see `run.cluster`). What travels is the KB folder — its database and its search
indexes — never the source documents, so a worker searches exactly what the driver would (same
chunks, same vectors, same fingerprint) without reading, extracting or embedding anything again.

Trade-offs:

* The snapshot is taken under the KB's write lock, so no ingestion changes it halfway; readers
  are not held up. The database is copied with SQLite's backup API (one consistent file, whatever
  its write-ahead log holds); the generation folders are immutable once written.
* `size_of` counts the bytes before anything is read, so a KB above the caller's limit is refused
  without being loaded into memory.
* A KB on the Postgres engine is a folder holding only its link (``postgres.json``): it travels
  the same way, and the worker opens the same database (its password from PGPASSWORD, ~/.pgpass or
  its own configuration).
"""

from __future__ import annotations

import io
import sqlite3
import tarfile
import tempfile
from pathlib import Path

from deepdraft.errors import KnowledgeBaseError
from deepdraft.retrieval.kb.lock import LOCK_NAME, write_lock
from deepdraft.retrieval.kb.names import POSTGRES_LINK
from deepdraft.retrieval.kb.schema import DB_NAME

__all__ = ["restore", "size_of", "take"]

_LEFT_OUT = {LOCK_NAME, f"{DB_NAME}-wal", f"{DB_NAME}-shm"}
"""Local to one machine: the lock file, and the database's log and shared memory (the backup
copy of the database already holds what the log held)."""


def _files(folder: Path) -> list[Path]:
    return sorted(
        path
        for path in folder.rglob("*")
        if path.is_file() and path.name not in _LEFT_OUT and not path.name.startswith(".")
    )


def size_of(folder: Path) -> int:
    """The bytes a snapshot of the KB in `folder` holds (before compression, roughly its size)."""
    return sum(path.stat().st_size for path in _files(folder))


def take(folder: Path, label: str) -> bytes:
    """The KB in `folder` as one uncompressed tar archive (indexes compress poorly; time matters more)."""
    if not (folder / DB_NAME).is_file() and not (folder / POSTGRES_LINK).is_file():
        raise KnowledgeBaseError(f"no knowledge base {label!r} in {folder}")
    buffer = io.BytesIO()
    with write_lock(folder, label, wait=True), tarfile.open(fileobj=buffer, mode="w") as archive:
        if (folder / DB_NAME).is_file():
            with tempfile.TemporaryDirectory(prefix="deepdraft-kb-snapshot-") as scratch:
                archive.add(_database_copy(folder / DB_NAME, Path(scratch)), arcname=DB_NAME)
        for path in _files(folder):
            if path != folder / DB_NAME:
                archive.add(path, arcname=str(path.relative_to(folder)))
    return buffer.getvalue()


def _database_copy(database: Path, scratch: Path) -> Path:
    """One consistent file holding the database and whatever its write-ahead log holds."""
    copy = scratch / DB_NAME
    source = sqlite3.connect(f"{database.absolute().as_uri()}?mode=ro", uri=True)
    target = sqlite3.connect(copy)
    try:
        source.backup(target)
    finally:
        target.close()
        source.close()
    return copy


def restore(data: bytes, folder: Path) -> None:
    """Unpack a snapshot into `folder` (created; it must not hold a KB yet).

    Unpacked beside `folder` and renamed into place, so a reader never sees half a KB there.
    """
    if (folder / DB_NAME).exists():
        raise KnowledgeBaseError(f"{folder} already holds a knowledge base")
    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{folder.name}-", dir=folder.parent) as scratch:
        unpacked = Path(scratch) / "kb"
        try:
            with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as archive:
                archive.extractall(unpacked, filter="data")  # no links, no paths outside the folder
        except (tarfile.TarError, OSError) as exc:
            raise KnowledgeBaseError(
                f"the knowledge base sent as {folder.name} cannot be unpacked ({exc})"
            ) from None
        unpacked.rename(folder)
