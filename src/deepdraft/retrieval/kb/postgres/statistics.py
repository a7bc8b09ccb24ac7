"""The corpus statistics BM25 needs on Postgres, kept current by the transaction that changes the KB.

BM25 weighs a query term by how rare it is in the whole KB (its document frequency, df, out of N
passages) and a passage's term counts by its length against the average. Postgres's own ``ts_rank``
knows neither, so each KB keeps them in two tables of its schema:

* ``term_stats (term, df)``: for every index term of the KB's analyzer, the passages that hold it;
* ``corpus_stats (passages, terms)``: one row, N and the sum of the passages' lengths (avgdl is the
  quotient); each passage's own length is the generated column ``chunks.length``.

Trade-offs:

* The changes of one add are counted in Python (`StatisticsDelta`) and written once, when the add is
  about to commit, not row by row: an add of a million passages would otherwise update the row of a
  common term a million times in one transaction, and Postgres keeps every one of those row versions
  until the commit. The writers' advisory lock makes the read-modify-write safe.
* A passage that leaves the KB is counted out by reading its terms (from its tsvector) before the
  delete, so every delete of documents or sources goes through `forget_documents`.
* `rebuild` recounts everything from the chunks: after a copy, a re-analysis, or for a KB made before
  these tables existed (`ensure`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

Conn = Any  # psycopg.Connection: typed loosely so this module imports without the extra installed

LENGTH_COLUMN = (
    "ALTER TABLE chunks ADD COLUMN length integer"
    " GENERATED ALWAYS AS (cardinality(string_to_array(terms, ' '))) STORED"
)
"""A passage's length in index terms (its stored terms are single-space separated): BM25's dl."""

TABLES = """
CREATE TABLE term_stats (term text PRIMARY KEY, df integer NOT NULL);
CREATE TABLE corpus_stats (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    passages bigint NOT NULL,
    terms bigint NOT NULL
);
INSERT INTO corpus_stats (passages, terms) VALUES (0, 0);
"""

SCHEMA = LENGTH_COLUMN + ";" + TABLES
"""What a new KB's schema gets after its `chunks` table."""

META_KEY = "lexical"
META_VALUE = "bm25"
"""Set in a KB's metadata once its statistics exist; a KB without it still ranks with ``ts_rank``."""


class StatisticsDelta:
    """What an add changes in the statistics, counted as it goes and written by `flush`."""

    def __init__(self) -> None:
        self.df: Counter[str] = Counter()
        self.passages = 0
        self.terms = 0

    def add_passage(self, terms: Sequence[str]) -> None:
        """Count in a new passage, given its index terms as stored."""
        self.df.update(set(terms))
        self.passages += 1
        self.terms += len(terms)

    def merge(self, other: StatisticsDelta) -> None:
        """Take over `other`'s counts (a file's, once its savepoint is released)."""
        self.df.update(other.df)  # Counter.update adds, negative counts included
        self.passages += other.passages
        self.terms += other.terms

    def forget_documents(self, conn: Conn, documents: Iterable[int]) -> None:
        """Count out the passages of `documents`; call it before deleting them (or their sources)."""
        ids = list(documents)
        if not ids:
            return
        for term, count in conn.execute(
            "SELECT t.term, count(*) FROM chunks c, unnest(tsvector_to_array(c.tsv)) AS t(term)"
            " WHERE c.document = ANY(%s) GROUP BY t.term",
            (ids,),
        ):
            self.df[term] -= int(count)
        passages, terms = conn.execute(
            "SELECT count(*), coalesce(sum(length), 0) FROM chunks WHERE document = ANY(%s)", (ids,)
        ).fetchone()
        self.passages -= int(passages)
        self.terms -= int(terms)

    def flush(self, conn: Conn) -> None:
        """Write the counts into the KB's tables (inside the add's transaction) and start again."""
        changed = [(term, count) for term, count in self.df.items() if count]
        if changed:
            conn.execute(
                "INSERT INTO term_stats (term, df) SELECT * FROM unnest(%s::text[], %s::integer[])"
                " ON CONFLICT (term) DO UPDATE SET df = term_stats.df + excluded.df",
                ([term for term, _ in changed], [count for _, count in changed]),
            )
            if any(count < 0 for _, count in changed):
                conn.execute("DELETE FROM term_stats WHERE df <= 0")
        if self.passages or self.terms:
            conn.execute(
                "UPDATE corpus_stats SET passages = passages + %s, terms = terms + %s",
                (self.passages, self.terms),
            )
        self.df, self.passages, self.terms = Counter(), 0, 0


def rebuild(conn: Conn) -> None:
    """Recount every statistic from the chunks as they are now (inside the caller's transaction)."""
    conn.execute("DELETE FROM term_stats")
    conn.execute(
        "INSERT INTO term_stats (term, df)"
        " SELECT t.term, count(*) FROM chunks c, unnest(tsvector_to_array(c.tsv)) AS t(term) GROUP BY t.term"
    )
    conn.execute(
        "UPDATE corpus_stats SET (passages, terms) = (SELECT count(*), coalesce(sum(length), 0) FROM chunks)"
    )


def ensure(conn: Conn, meta: dict[str, Any]) -> bool:
    """Give a KB made before the statistics existed its tables and counts (under the writers' lock);
    True if it had to."""
    if meta.get(META_KEY) == META_VALUE:
        return False
    if _missing_column(conn, "chunks", "length"):
        conn.execute(LENGTH_COLUMN)
    if _missing(conn, "term_stats"):
        for statement in filter(str.strip, TABLES.split(";")):
            conn.execute(statement)  # fixed DDL, no user input
    rebuild(conn)
    conn.execute(
        "INSERT INTO meta VALUES (%s, %s) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        (META_KEY, META_VALUE),
    )
    return True


def _missing(conn: Conn, table: str) -> bool:
    row = conn.execute("SELECT to_regclass(%s)", (table,)).fetchone()
    return row is None or row[0] is None


def _missing_column(conn: Conn, table: str, column: str) -> bool:
    row = conn.execute(
        "SELECT 1 FROM pg_attribute WHERE attrelid = %s::regclass AND attname = %s AND NOT attisdropped",
        (table, column),
    ).fetchone()
    return row is None
