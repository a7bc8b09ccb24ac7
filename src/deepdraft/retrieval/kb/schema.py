"""kb.sqlite: the schema, the format version, connecting, reading the metadata.

The database is the source of truth: files, documents, chunks (text, offsets, page, heading path,
index terms), the failures of the last add, and metadata (format version, chunking, analyzer,
embedder, revision). It is created whole under a temporary name and renamed into place. Readers
connect read-only and, in WAL mode, never wait for a writer; writers commit with
``synchronous = FULL``, because a commit must be on disk before the pointer names the generation
built for it. `FORMAT_VERSION` covers the schema and the generation layout: a KB of a newer format
is refused, not guessed at.

Trade-offs:

* Chunk ids are SQLite AUTOINCREMENT keys: never reused, so an id in an old generation can only name
  the chunk it named then, or nothing.
* Foreign keys are not enforced by SQLite: the code paths that change the tables keep integrity, in
  bulk.
* Large reads go through `_stream` (keyset pagination, in batches), so building an index never holds
  a whole table's rows in memory.
"""

from __future__ import annotations

import os
import sqlite3
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from deepdraft.errors import KnowledgeBaseError
from deepdraft.fsutil import fsync_dir
from deepdraft.retrieval.index.analysis import ANALYZER_VERSION
from deepdraft.settings import RetrievalSettings

FORMAT_VERSION = 1
"""Bumped whenever the database schema or the generation layout changes incompatibly."""

DB_NAME = "kb.sqlite"

_STREAM_BATCH = 5000
_SELECT_BATCH = 500  # below SQLite's bound-parameter limit in every version

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
