"""Searching a Postgres KB in one SQL statement: full text, vectors, or both fused by RRF in SQL.

The lexical half ranks with ``ts_rank`` (length-normalised) over the GIN-indexed tsvector; the dense
half orders by cosine distance through the HNSW index (``hnsw.iterative_scan`` keeps filtered
searches from coming back short); hybrid fuses the two ranked lists, each `depth` deep, with the same
rule as `fusion.reciprocal_rank_fusion` (each side's first hit first, then by summed 1/(k + rank),
ties by best rank and chunk id), so both engines order a fused list alike.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from deepdraft.core.evidence import Passage, Source
from deepdraft.retrieval.index.analysis import analyze
from deepdraft.retrieval.index.hybrid import SearchMode

_MAX_POSITION = 16383  # Postgres's largest tsvector position


def tsvector_literal(terms: str) -> str:
    """A chunk's stored terms (space-separated, already analysed) as a tsvector literal with positions.

    Built here rather than by `to_tsvector` so Postgres's parser (whose idea of a letter depends on
    the server's locale) never re-splits what the KB's analyzer, jieba included, decided.
    """
    positions: dict[str, list[int]] = {}
    for position, term in enumerate(terms.split(), start=1):
        positions.setdefault(term, []).append(min(position, _MAX_POSITION))
    return " ".join(f"{_quote(term)}:{','.join(map(str, spots[:256]))}" for term, spots in positions.items())


def tsquery_literal(query: str) -> str | None:
    """The query's analysed terms OR-ed together as a tsquery literal (None: no term to look for)."""
    terms = list(Counter(analyze(query)))
    return " | ".join(_quote(term) for term in terms) if terms else None


def _quote(term: str) -> str:
    return "'" + term.replace("\\", "\\\\").replace("'", "''") + "'"


_LEXICAL = """
SELECT id FROM chunks
WHERE tsv @@ %(q)s::tsquery {filter}
ORDER BY ts_rank(tsv, %(q)s::tsquery, 1) DESC, id
LIMIT %(depth)s
"""

_DENSE = """
SELECT id FROM chunks
WHERE embedding IS NOT NULL {filter}
ORDER BY embedding <=> %(v)s
LIMIT %(depth)s
"""

_FUSED = """
WITH lexical AS (
    SELECT id, row_number() OVER () AS rank FROM ({lexical}) l
), dense AS (
    SELECT id, row_number() OVER () AS rank FROM ({dense}) d
), both_sides AS (
    SELECT id, rank FROM lexical UNION ALL SELECT id, rank FROM dense
), fused AS (
    SELECT id, sum(1.0 / (%(rrf_k)s + rank)) AS score, min(rank) AS best FROM both_sides GROUP BY id
)
SELECT id, CASE WHEN best = 1 THEN (SELECT max(score) FROM fused) ELSE score END AS shown
FROM fused
ORDER BY (best = 1) DESC,
         (id IS NOT DISTINCT FROM (SELECT l.id FROM lexical l WHERE l.rank = 1)) DESC,
         score DESC, best, id
LIMIT %(k)s
"""


def ranked_ids(
    conn: Any,
    query: str,
    k: int,
    mode: SearchMode,
    vector: Any,
    allowed: list[int] | None,
    depth: int,
    rrf_k: int,
) -> list[tuple[int, float]]:
    """The `k` best (chunk id, score) pairs, best first."""
    where = "AND document = ANY(%(allowed)s)" if allowed is not None else ""
    params: dict[str, Any] = {"allowed": allowed, "k": k, "rrf_k": rrf_k}
    q = tsquery_literal(query)
    if mode == "bm25" or (mode == "hybrid" and vector is None):
        if q is None:
            return []
        rows = conn.execute(
            "SELECT id, ts_rank(tsv, %(q)s::tsquery, 1) FROM chunks WHERE tsv @@ %(q)s::tsquery "
            + where
            + " ORDER BY 2 DESC, id LIMIT %(k)s",
            {**params, "q": q},
        ).fetchall()
        return [(int(i), float(s)) for i, s in rows]
    conn.execute("SET hnsw.ef_search = {}".format(max(40, min(1000, depth if mode == "hybrid" else k))))
    conn.execute("SET hnsw.iterative_scan = relaxed_order")
    if mode == "dense":
        rows = conn.execute(
            "SELECT id, 1 - (embedding <=> %(v)s) FROM chunks WHERE embedding IS NOT NULL "
            + where
            + " ORDER BY embedding <=> %(v)s LIMIT %(k)s",
            {**params, "v": vector},
        ).fetchall()
        return [(int(i), float(s)) for i, s in rows]
    lexical = _LEXICAL.format(filter=where) if q is not None else "SELECT NULL::bigint AS id WHERE false"
    sql = _FUSED.format(lexical=lexical, dense=_DENSE.format(filter=where))
    rows = conn.execute(sql, {**params, "q": q, "v": vector, "depth": max(depth, k)}).fetchall()
    return [(int(i), float(s)) for i, s in rows]


def passages(conn: Any, ranked: list[tuple[int, float]]) -> list[Passage]:
    """The ranked chunks as passages, in the ranked order (chunks deleted since are dropped)."""
    if not ranked:
        return []
    found: dict[int, tuple[str, Source]] = {}
    rows = conn.execute(
        "SELECT c.id, c.text, c.start_char, c.end_char, c.page, c.headings, d.doc_id, d.title, d.location"
        " FROM chunks c JOIN documents d ON d.id = c.document WHERE c.id = ANY(%s)",
        ([chunk for chunk, _ in ranked],),
    )
    for chunk_id, text, start, end, page, headings, doc_id, title, location in rows:
        source = Source(doc_id, title, location, page, start, end, headings=tuple(json.loads(headings)))
        found[int(chunk_id)] = (text, source)
    return [
        Passage(text=found[chunk][0], source=found[chunk][1], score=score)
        for chunk, score in ranked
        if chunk in found
    ]
