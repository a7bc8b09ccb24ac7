"""The Postgres side of a KB: DSNs shown without secrets, the connection pool, the registry of KBs
and the schema each KB lives in.

One database holds any number of KBs. ``public.deepdraft_kbs`` maps a KB name to a schema of its own
(``dd_kb_<n>``: KB names may be longer than Postgres identifiers and hold '.' or '-'); the schema has
the tables `meta`, `sources`, `documents`, `chunks` and `failures`, shaped like kb.sqlite's so a
KB can be copied between engines row for row, and the BM25 statistics of `statistics`.

Trade-offs:

* Full text is a ``tsvector`` (with positions, whose count is a term's frequency) built from the
  terms the KB's own analyzer made (Snowball stemming for Latin scripts, jieba for Chinese, the same
  as the embedded engine's BM25): both engines agree on what a term is, and Chinese needs no
  Postgres parser.
* Vectors are a ``vector(d)`` column with an HNSW index (cosine), made when the KB gets an embedder
  (the dimension is known only then).
* Writers serialise on a transaction-scoped advisory lock per KB, taken only for the short write
  phase: reading and chunking files happens before it, and readers never wait for it.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from deepdraft.egress import public_dsn
from deepdraft.errors import KnowledgeBaseError
from deepdraft.retrieval.index.analysis import ANALYZER_VERSION
from deepdraft.retrieval.kb.postgres import statistics
from deepdraft.retrieval.kb.schema import FORMAT_VERSION
from deepdraft.settings import KBSettings, RetrievalSettings

if TYPE_CHECKING:
    import psycopg
    from psycopg_pool import ConnectionPool

POSTGRES_EXTRA_HINT = "pip install 'deepdraft[postgres]'"
REGISTRY = "deepdraft_kbs"

_SCHEMA = """
CREATE TABLE meta (key text PRIMARY KEY, value text NOT NULL);
CREATE TABLE sources (
    id bigserial PRIMARY KEY,
    path text NOT NULL UNIQUE,
    content_hash text NOT NULL,
    size bigint NOT NULL,
    added_at text NOT NULL
);
CREATE TABLE documents (
    id bigserial PRIMARY KEY,
    source bigint NOT NULL REFERENCES sources(id) ON DELETE CASCADE,
    source_key text NOT NULL,
    doc_id text NOT NULL UNIQUE,
    location text NOT NULL,
    title text NOT NULL,
    format text NOT NULL,
    content_hash text NOT NULL,
    chars bigint NOT NULL,
    pages integer NOT NULL,
    added_at text NOT NULL,
    seen bigint NOT NULL,
    UNIQUE (source, source_key)
);
CREATE TABLE chunks (
    id bigserial PRIMARY KEY,
    document bigint NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
    start_char integer NOT NULL,
    end_char integer NOT NULL,
    page integer,
    headings text NOT NULL,
    text text NOT NULL,
    terms text NOT NULL,
    embed_key bytea NOT NULL,
    tsv tsvector NOT NULL
);
CREATE INDEX chunks_document ON chunks(document);
CREATE INDEX chunks_tsv ON chunks USING gin (tsv);
CREATE TABLE failures (seq bigserial PRIMARY KEY, location text NOT NULL, reason text NOT NULL);
"""


def safe_dsn(dsn: str) -> str:
    """`dsn` as it may be shown and recorded, never with its password (see `egress.public_dsn`)."""
    return public_dsn(dsn)


def egress_endpoint(dsn: str) -> str | None:
    """The database as the egress audit records it (no password), or None for a Unix socket on this
    machine, which is not egress."""
    shown = safe_dsn(dsn)
    if shown == "<invalid DSN>" or "@/" in shown or shown.startswith("postgresql:///"):
        return None
    return shown


def without_password(dsn: str) -> str:
    """`dsn` with its password removed (libpq then takes it from PGPASSWORD or ~/.pgpass)."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    parts = {k: v for k, v in conninfo_to_dict(dsn).items() if k != "password" and v is not None}
    return make_conninfo("", **parts)


def check_dsn(dsn: str) -> str:
    """`dsn` if libpq can parse it, else `KnowledgeBaseError` (without echoing the DSN's text)."""
    try:
        from psycopg.conninfo import conninfo_to_dict
    except ImportError:
        raise KnowledgeBaseError(f"the postgres engine needs psycopg: {POSTGRES_EXTRA_HINT}") from None
    try:
        conninfo_to_dict(dsn)
    except Exception:
        raise KnowledgeBaseError(
            "the Postgres DSN cannot be parsed: give postgresql://user@host:port/dbname "
            "or 'host=... dbname=...'"
        ) from None
    return dsn


_POOLS: dict[str, ConnectionPool] = {}


def pool_for(dsn: str, size: int | None = None) -> ConnectionPool:
    """The process's pool for `dsn` (one per DSN: every KB of a database shares it), of `size`
    connections at most (default: the workspace's ``[kb] pool_size``)."""
    pool = _POOLS.get(dsn)
    if pool is not None and not pool.closed:
        return pool
    if size is None:
        size = _pool_size
    try:
        from pgvector.psycopg import register_vector
        from psycopg_pool import ConnectionPool
    except ImportError:
        raise KnowledgeBaseError(
            f"the postgres engine needs psycopg and pgvector: {POSTGRES_EXTRA_HINT}"
        ) from None

    def configure(connection: psycopg.Connection[Any]) -> None:
        connection.autocommit = True
        connection.execute("CREATE EXTENSION IF NOT EXISTS vector")
        register_vector(connection)

    pool = ConnectionPool(
        check_dsn(dsn),
        min_size=1,
        max_size=max(size, 1),
        configure=configure,
        open=False,
        name=f"deepdraft-{os.getpid()}",
    )
    try:
        pool.open(wait=True, timeout=15)
    except Exception as exc:
        pool.close()
        raise KnowledgeBaseError(
            f"cannot connect to Postgres at {safe_dsn(dsn)} ({type(exc).__name__})"
        ) from None
    _POOLS[dsn] = pool
    return pool


_pool_size = KBSettings().pool_size


def set_pool_size(size: int) -> None:
    """The size of the pools opened from now on (`names` sets it from the workspace's ``[kb] pool_size``)."""
    global _pool_size
    _pool_size = max(int(size), 1)


@contextmanager
def connection(dsn: str) -> Iterator[psycopg.Connection[Any]]:
    """A pooled connection (autocommit; use ``with conn.transaction()`` to change anything)."""
    import psycopg

    pool = pool_for(dsn)
    try:
        with pool.connection(timeout=30) as conn:
            yield conn
    except psycopg.OperationalError as exc:
        raise KnowledgeBaseError(f"Postgres at {safe_dsn(dsn)} failed: {_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0]


def ensure_registry(conn: psycopg.Connection[Any]) -> None:
    conn.execute(
        f"CREATE TABLE IF NOT EXISTS public.{REGISTRY} ("
        " name text PRIMARY KEY, schema_name text NOT NULL UNIQUE, created text NOT NULL)"
    )


def schema_of(conn: psycopg.Connection[Any], name: str) -> str | None:
    """The schema of KB `name`, or None when the database has no such KB."""
    if not _registry_exists(conn):
        return None
    row = conn.execute(f"SELECT schema_name FROM public.{REGISTRY} WHERE name = %s", (name,)).fetchone()
    return str(row[0]) if row else None


def kb_names(conn: psycopg.Connection[Any]) -> list[str]:
    if not _registry_exists(conn):
        return []
    return [str(r[0]) for r in conn.execute(f"SELECT name FROM public.{REGISTRY} ORDER BY name")]


def _registry_exists(conn: psycopg.Connection[Any]) -> bool:
    row = conn.execute("SELECT to_regclass(%s)", (f"public.{REGISTRY}",)).fetchone()
    return row is not None and row[0] is not None


def create_schema(conn: psycopg.Connection[Any], name: str, settings: RetrievalSettings) -> str:
    """Create KB `name` (registry row, schema, tables, metadata) in one transaction; its schema.

    Two processes creating the same KB at once: the registry's key makes one of them wait and then
    find the other's KB.
    """
    from psycopg import sql

    with conn.transaction():
        # Under the lock: two first KBs of a database must not both create the registry table.
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (lock_key("registry"),))
        ensure_registry(conn)
        existing = schema_of(conn, name)
        if existing is not None:
            return existing
        schema = "dd_kb_" + hashlib.sha256(name.encode()).hexdigest()[:16]
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        conn.execute(sql.SQL("SET LOCAL search_path TO {}, public").format(sql.Identifier(schema)))
        for statement in filter(str.strip, (_SCHEMA + statistics.SCHEMA).split(";")):
            conn.execute(statement)  # fixed DDL, no user input
        now = datetime.now(UTC).isoformat(timespec="seconds")
        conn.cursor().executemany(
            "INSERT INTO meta VALUES (%s, %s)",
            [
                ("format_version", str(FORMAT_VERSION)),
                ("created", now),
                ("updated", now),
                ("chunk_tokens", str(settings.chunk_tokens)),
                ("chunk_overlap", str(settings.chunk_overlap)),
                ("analyzer", ANALYZER_VERSION),
                ("revision", "0"),
                (statistics.META_KEY, statistics.META_VALUE),
            ],
        )
        conn.execute(f"INSERT INTO public.{REGISTRY} VALUES (%s, %s, %s)", (name, schema, now))
    return schema


def drop_schema(conn: psycopg.Connection[Any], name: str) -> bool:
    """Delete KB `name` and its schema in one transaction, after any writer of it is done."""
    from psycopg import sql

    with conn.transaction():
        schema = schema_of(conn, name)
        if schema is None:
            return False
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (lock_key(schema),))
        conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
        conn.execute(f"DELETE FROM public.{REGISTRY} WHERE name = %s", (name,))
    return True


def lock_key(schema: str) -> int:
    """The advisory-lock key of a KB's writers: a stable signed 64-bit number from its schema name."""
    return int.from_bytes(hashlib.sha256(f"deepdraft:{schema}".encode()).digest()[:8], "big", signed=True)


def use_schema(conn: psycopg.Connection[Any], schema: str) -> None:
    """Point unqualified table names at the KB's schema (for this connection until it is returned)."""
    from psycopg import sql

    conn.execute(sql.SQL("SET search_path TO {}, public").format(sql.Identifier(schema)))


def read_meta(conn: psycopg.Connection[Any], label: str) -> dict[str, Any]:
    meta: dict[str, Any] = dict(conn.execute("SELECT key, value FROM meta").fetchall())
    version = int(meta.get("format_version", "0") or 0)
    if version > FORMAT_VERSION:
        raise KnowledgeBaseError(
            f"knowledge base {label!r} has format version {version}, written by a newer deepdraft "
            f"(this one reads up to {FORMAT_VERSION}); upgrade deepdraft to use it"
        )
    return meta


def set_meta(conn: psycopg.Connection[Any], key: str, value: str) -> None:
    conn.execute(
        "INSERT INTO meta VALUES (%s, %s) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        (key, value),
    )


def ensure_vector_column(conn: psycopg.Connection[Any], dimension: int) -> None:
    """Give the chunks a ``vector(dimension)`` column (no index yet); a no-op, taking no lock, if it is there.

    Run in a short transaction of its own before a long ingestion: ALTER TABLE locks the table
    against readers until its transaction ends. A column of another dimension (left by an add that
    failed before recording its embedder) is replaced.
    """
    row = conn.execute(
        "SELECT atttypmod FROM pg_attribute WHERE attrelid = 'chunks'::regclass"
        " AND attname = 'embedding' AND NOT attisdropped"
    ).fetchone()
    if row is not None and int(row[0]) == int(dimension):
        return
    if row is not None:
        conn.execute("DROP INDEX IF EXISTS chunks_embedding")
        conn.execute("ALTER TABLE chunks DROP COLUMN embedding")
    conn.execute(f"ALTER TABLE chunks ADD COLUMN embedding vector({int(dimension)})")


def has_vector_index(conn: psycopg.Connection[Any]) -> bool:
    row = conn.execute("SELECT to_regclass('chunks_embedding')").fetchone()
    return row is not None and row[0] is not None


def create_vector_index(conn: psycopg.Connection[Any]) -> None:
    """The HNSW graph over the vectors (cosine). Built once over every row after a bulk load, which is
    several times faster than growing it row by row; CREATE INDEX blocks other writers, not readers."""
    conn.execute(
        "CREATE INDEX IF NOT EXISTS chunks_embedding ON chunks USING hnsw (embedding vector_cosine_ops)"
    )


def close_pools() -> None:
    """Close every pool this process opened (tests; a long-lived process keeps them)."""
    while _POOLS:
        _, pool = _POOLS.popitem()
        pool.close()
