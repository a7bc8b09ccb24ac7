"""`kb copy`: a KB moved between the engines as it is — rows copied, nothing re-extracted or re-embedded.

Embedded → Postgres: the sources, documents and chunks of kb.sqlite, and each chunk's vector from the
KB's embedding cache, go into a new Postgres KB in one transaction (a failure leaves no half KB:
the KB is created and filled in that transaction's wake only if it commits). Postgres → embedded: the
same rows into a new kb.sqlite, the vectors into its embedding cache, then its first generation is
built from them (BM25 from the stored terms; the embedder is never called).

The target must not exist yet: a copy never merges into, or overwrites, a KB.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path
from typing import Any, Literal

import numpy as np

from deepdraft.errors import KnowledgeBaseError
from deepdraft.retrieval.kb import names
from deepdraft.retrieval.kb.generations import (
    EMBEDDING_CACHE,
    _build_generation,
    _flip_pointer,
    _open_cache,
)
from deepdraft.retrieval.kb.schema import DB_NAME, _connect, _initialise, _read_meta
from deepdraft.retrieval.kb.values import IngestNote, ProgressSink, _ignore
from deepdraft.settings import RetrievalSettings

_BATCH = 2000
_DOCUMENT_COLUMNS = (
    "id, source, source_key, doc_id, location, title, format, content_hash, chars, pages, added_at, seen"
)
_META_COPIED = ("created", "updated", "chunk_tokens", "chunk_overlap", "analyzer", "revision",
                "embedder", "embedder_dimension", "embedder_spec")  # fmt: skip


class _RecordedEmbedder:
    """The embedder a KB records, by name and dimension only: every vector must come from the copy."""

    def __init__(self, name: str, dimension: int) -> None:
        self.name, self.dimension = name, dimension

    def embed(self, texts: Any) -> Any:
        raise KnowledgeBaseError(f"{len(texts)} passages of the copied KB have no vector: copy it again")


def copy_kb(
    name: str,
    to: Literal["embedded", "postgres"],
    *,
    target: str | None = None,
    dsn: str | None = None,
    home: Path | None = None,
    progress: ProgressSink | None = None,
) -> str:
    """Copy KB `name` onto engine `to` as KB `target` (default: `name` + "-" + `to`); the target's name."""
    say = progress or _ignore
    target = names.validate_kb_name(target or f"{name}-{to}")
    source_engine = names.kb_engine(name, home)
    if not names.kb_exists(name, home):
        names.open_kb(name, home)  # the usual "no knowledge base named ..." message
    if source_engine == to:
        raise KnowledgeBaseError(f"knowledge base {name!r} is already on the {to} engine")
    if names.kb_exists(target, home):
        raise KnowledgeBaseError(f"knowledge base {target!r} exists already; name another with --as")
    if to == "postgres":
        if dsn is None:
            raise KnowledgeBaseError("copying to Postgres needs --dsn postgresql://user@host:port/dbname")
        names.use_dsn(dsn)
        copy_folder_to_postgres(names.kb_dir(name, home), target, dsn, say)
        _write_link(names.kb_dir(target, home), dsn)
    else:
        _postgres_to_embedded(name, names.kb_dir(target, home), home)
    return target


def copy_folder_to_postgres(folder: Path, target: str, dsn: str, progress: ProgressSink | None = None) -> int:
    """Copy the embedded KB in `folder` into Postgres as KB `target` (no name link); the passages copied."""
    from deepdraft.retrieval.kb.postgres import database as pg
    from deepdraft.retrieval.kb.postgres import statistics
    from deepdraft.retrieval.kb.postgres.search import tsvector_literal

    source = _connect(folder / DB_NAME, readonly=True)
    cache = _open_cache(folder / EMBEDDING_CACHE)
    try:
        meta = _read_meta(source, str(folder))
        embedder = meta.get("embedder")
        with pg.connection(pg.check_dsn(dsn)) as conn:
            if pg.schema_of(conn, target) is not None:
                raise KnowledgeBaseError(f"Postgres at {pg.safe_dsn(dsn)} already has a KB named {target!r}")
            schema = pg.create_schema(conn, target, RetrievalSettings())
            try:
                with conn.transaction():
                    pg.use_schema(conn, schema)
                    for key in _META_COPIED:
                        if meta.get(key) is not None:
                            pg.set_meta(conn, key, str(meta[key]))
                    if embedder is not None:  # the HNSW graph is built once, after the rows are in
                        pg.ensure_vector_column(conn, int(meta["embedder_dimension"]))
                    _copy_rows(source, conn, "sources", "id, path, content_hash, size, added_at")
                    _copy_rows(source, conn, "documents", _DOCUMENT_COLUMNS)
                    copied = _copy_chunks(source, cache, conn, embedder, tsvector_literal)
                    statistics.rebuild(conn)
                    if embedder is not None:
                        pg.create_vector_index(conn)
                    for table in ("sources", "documents", "chunks"):  # new rows continue after the copied ids
                        conn.execute(
                            f"SELECT setval(pg_get_serial_sequence('{table}', 'id'),"
                            f" greatest((SELECT max(id) FROM {table}), 1))"
                        )
            except BaseException:
                pg.drop_schema(conn, target)
                raise
        (progress or _ignore)(IngestNote("indexing", "", f"copied {copied} passages"))
    finally:
        source.close()
        cache.close()
    return copied


def _write_link(folder: Path, dsn: str) -> None:
    from deepdraft.retrieval.kb.postgres.database import without_password

    folder.mkdir(parents=True, exist_ok=True)
    temporary = folder / f".{names.POSTGRES_LINK}.tmp"
    temporary.write_text(
        json.dumps({"engine": "postgres", "dsn": without_password(dsn)}) + "\n", encoding="utf-8"
    )
    temporary.replace(folder / names.POSTGRES_LINK)


def _copy_rows(source: sqlite3.Connection, conn: Any, table: str, columns: str) -> None:
    marks = ", ".join(["%s"] * len(columns.split(",")))
    cursor = source.execute(f"SELECT {columns} FROM {table} ORDER BY id")
    while rows := cursor.fetchmany(_BATCH):
        conn.cursor().executemany(f"INSERT INTO {table} ({columns}) VALUES ({marks})", rows)


def _copy_chunks(
    source: sqlite3.Connection, cache: sqlite3.Connection, conn: Any, embedder: Any, tsv: Any
) -> int:
    columns = "id, document, start_char, end_char, page, headings, text, terms, embed_key"
    cursor = source.execute(f"SELECT {columns} FROM chunks ORDER BY id")
    count = 0
    while rows := cursor.fetchmany(_BATCH):
        if embedder is None:
            conn.cursor().executemany(
                f"INSERT INTO chunks ({columns}, tsv) VALUES ({', '.join(['%s'] * 9)}, %s::tsvector)",
                [(*row, tsv(row[7])) for row in rows],
            )
        else:
            vectors = _cached_vectors(cache, str(embedder), [bytes(row[8]) for row in rows])
            conn.cursor().executemany(
                f"INSERT INTO chunks ({columns}, tsv, embedding)"
                f" VALUES ({', '.join(['%s'] * 9)}, %s::tsvector, %s)",
                [(*row, tsv(row[7]), vectors[bytes(row[8])]) for row in rows],
            )
        count += len(rows)
    return count


def _cached_vectors(cache: sqlite3.Connection, embedder: str, keys: list[bytes]) -> dict[bytes, Any]:
    found: dict[bytes, Any] = {}
    for i in range(0, len(keys), 500):
        batch = keys[i : i + 500]
        marks = ",".join("?" * len(batch))
        for key, blob in cache.execute(
            f"SELECT key, vector FROM vectors WHERE embedder = ? AND key IN ({marks})", [embedder, *batch]
        ):
            found[bytes(key)] = np.frombuffer(blob, dtype=np.float32)
    if len(found) < len(set(keys)):
        raise KnowledgeBaseError(
            "the KB's embedding cache lacks vectors of some passages; "
            "run `deepdraft kb add` on it once, then copy"
        )
    return found


def _as_array(vector: Any) -> Any:
    """A pgvector value (a `Vector`, or already an array) as float32 numpy."""
    return np.asarray(vector.to_numpy() if hasattr(vector, "to_numpy") else vector, dtype=np.float32)


def _postgres_to_embedded(name: str, folder: Path, home: Path | None) -> None:
    from deepdraft.retrieval.kb.postgres.store import PostgresKnowledgeBase

    with names.open_kb(name, home) as kb:
        if not isinstance(kb, PostgresKnowledgeBase):
            raise KnowledgeBaseError(f"knowledge base {name!r} is not on the postgres engine")
        connection = kb._connection()
    folder.mkdir(parents=True)
    try:
        with connection as conn:
            from deepdraft.retrieval.kb.postgres import database as pg

            meta = pg.read_meta(conn, name)
            settings = RetrievalSettings(
                chunk_tokens=int(meta["chunk_tokens"]), chunk_overlap=int(meta["chunk_overlap"])
            )
            _initialise(folder, settings)
            db = _connect(folder / DB_NAME, readonly=False)
            cache = _open_cache(folder / EMBEDDING_CACHE)
            try:
                db.execute("BEGIN IMMEDIATE")
                for key in _META_COPIED:
                    if meta.get(key) is not None:
                        db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, str(meta[key])))
                for table, columns in (
                    ("sources", "id, path, content_hash, size, added_at"),
                    (
                        "documents",
                        "id, source, source_key, doc_id, location, title, format, content_hash, chars,"
                        " pages, added_at, seen",
                    ),
                    ("chunks", "id, document, start_char, end_char, page, headings, text, terms, embed_key"),
                ):
                    marks = ",".join("?" * len(columns.split(",")))
                    with conn.cursor() as cursor:
                        cursor.execute(f"SELECT {columns} FROM {table} ORDER BY id")
                        while rows := cursor.fetchmany(_BATCH):
                            db.executemany(f"INSERT INTO {table} ({columns}) VALUES ({marks})", rows)
                embedder = None
                if meta.get("embedder"):
                    embedder = _RecordedEmbedder(str(meta["embedder"]), int(meta["embedder_dimension"]))
                    with conn.cursor() as cursor:
                        cursor.execute("SELECT embed_key, embedding FROM chunks WHERE embedding IS NOT NULL")
                        while rows := cursor.fetchmany(_BATCH):
                            with cache:
                                cache.executemany(
                                    "INSERT OR REPLACE INTO vectors VALUES (?, ?, ?)",
                                    [(embedder.name, bytes(k), _as_array(v).tobytes()) for k, v in rows],
                                )
                revision = int(meta.get("revision", 0))
                local_meta = _read_meta(db, name)
                _build_generation(
                    folder, db, local_meta, revision, folder / EMBEDDING_CACHE, embedder, _ignore
                )
                db.commit()
            except BaseException:
                db.rollback()
                raise
            finally:
                db.close()
                cache.close()
        _flip_pointer(folder, revision)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
