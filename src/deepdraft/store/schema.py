"""The journal's SQLite schema, as an append-only list of named migrations.

A file records the names of the migrations applied to it (table ``migrations``); opening it applies
the ones it lacks, in order, each in the opening transaction. Never edit, reorder or remove an
entry once released: files in the wild record these names.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import NamedTuple


class Migration(NamedTuple):
    """One schema change. `apply` is SQL (one or more statements) or a function given the connection.

    Migrations run inside the caller's transaction: a function must not commit or roll back.
    """

    name: str
    apply: str | Callable[[sqlite3.Connection], None]


_INITIAL_SCHEMA = """
CREATE TABLE runs (
    id          TEXT PRIMARY KEY,
    question    TEXT NOT NULL,
    policy      TEXT NOT NULL,
    settings    TEXT NOT NULL,              -- JSON object
    status      TEXT NOT NULL,
    created_at  REAL NOT NULL,
    updated_at  REAL NOT NULL,
    steps       INTEGER NOT NULL DEFAULT 0,
    error       TEXT,
    report_path TEXT
);
CREATE INDEX runs_by_created ON runs (created_at DESC);

CREATE TABLE steps (
    run_id            TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    step              INTEGER NOT NULL,
    action            TEXT NOT NULL,
    prompt            TEXT NOT NULL,
    reply             TEXT NOT NULL,
    parsed            TEXT,                 -- JSON object, NULL when the reply did not parse
    valid             INTEGER NOT NULL,
    reason            TEXT,
    prompt_tokens     INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    started_at        REAL NOT NULL,
    finished_at       REAL NOT NULL,
    cached            INTEGER NOT NULL,
    target            TEXT NOT NULL,        -- "outline" or the node position the action worked on
    PRIMARY KEY (run_id, step)
);

CREATE TABLE checkpoints (
    run_id   TEXT NOT NULL,
    step     INTEGER NOT NULL,
    encoding TEXT NOT NULL,                 -- how `state` is encoded, so a later version may change it
    state    BLOB NOT NULL,
    PRIMARY KEY (run_id, step),
    FOREIGN KEY (run_id, step) REFERENCES steps (run_id, step) ON DELETE CASCADE
);

CREATE TABLE events (
    run_id     TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    seq        INTEGER NOT NULL,
    kind       TEXT NOT NULL,
    payload    TEXT NOT NULL,               -- JSON object
    created_at REAL NOT NULL,
    PRIMARY KEY (run_id, seq)
);

CREATE TABLE llm_cache (
    key        TEXT PRIMARY KEY,
    value      TEXT NOT NULL,               -- JSON object
    created_at REAL NOT NULL
);
"""

_EGRESS_SCHEMA = """
CREATE TABLE egress (
    run_id   TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    seq      INTEGER NOT NULL,
    at       REAL NOT NULL,
    kind     TEXT NOT NULL,                 -- web-search, page-fetch, llm, embeddings
    endpoint TEXT NOT NULL,                 -- scheme://host:port/path, never a query string or key
    detail   TEXT NOT NULL,                 -- the query or the URL
    bytes    INTEGER NOT NULL,
    requests INTEGER NOT NULL,              -- 1 for one request; a running count for an endpoint row
    PRIMARY KEY (run_id, seq)
);
"""

# Long texts (LLM replies) live once in `texts`, named by their SHA-256, and the cache entry and
# the step row that both hold a reply point there instead of each carrying a copy.
_TEXTS_SCHEMA = """
CREATE TABLE texts (
    sha256 TEXT PRIMARY KEY,                -- hex SHA-256 of the UTF-8 text
    text   TEXT NOT NULL
);
ALTER TABLE steps ADD COLUMN reply_sha256 TEXT;   -- set: the reply is texts.text, `reply` is empty
"""

# A step taken for a command the user gave a finished run (`deepdraft deepen` …): the user chose
# what the policy worked on, so training data must leave it out.
_DIRECTED_SCHEMA = """
ALTER TABLE steps ADD COLUMN directed INTEGER NOT NULL DEFAULT 0;
"""

# Follow-up questions asked of a finished run (`deepdraft ask`) and their answers. An answer is
# named by the journal step that began its question: a resumed ask stores its answer once.
_ASKS_SCHEMA = """
CREATE TABLE asks (
    run_id      TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    step        INTEGER NOT NULL,           -- the journal step that began the question
    question    TEXT NOT NULL,
    asked_at    REAL NOT NULL,
    answered_at REAL NOT NULL,
    answer      TEXT NOT NULL,              -- Markdown, citing in the report's numbering; "" when none
    note        TEXT NOT NULL,              -- why there is no answer ("" when there is one)
    detail      TEXT NOT NULL,              -- JSON object: the cited text and the new sources
    section     TEXT,                       -- --into-report: the section the answer became
    PRIMARY KEY (run_id, step)
);
"""

# Append only: never edit, reorder or remove an entry once released — files in the wild record
# these names, and a renamed migration would be reapplied or make the file look newer.
MIGRATIONS: tuple[Migration, ...] = (
    Migration("0001_initial", _INITIAL_SCHEMA),
    Migration("0002_egress", _EGRESS_SCHEMA),
    Migration("0003_texts", _TEXTS_SCHEMA),
    Migration("0004_directed_steps", _DIRECTED_SCHEMA),
    Migration("0005_asks", _ASKS_SCHEMA),
)


def split_sql(script: str) -> list[str]:
    """Split a script into statements.

    `sqlite3.Connection.executescript` would be simpler, but it COMMITs any open transaction first,
    which would break the one-transaction-per-migration guarantee. `complete_statement` knows about
    ``;`` inside strings and trigger bodies, so a naive split on ``;`` is re-joined where needed.
    """
    statements: list[str] = []
    buffer = ""
    for chunk in script.split(";"):
        buffer += chunk + ";"
        if sqlite3.complete_statement(buffer):
            if buffer.strip(" \t\r\n;"):
                statements.append(buffer.strip())
            buffer = ""
    if buffer.strip(" \t\r\n;"):
        statements.append(buffer.strip())
    return statements
