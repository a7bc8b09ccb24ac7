"""Searching a Postgres KB: full text ranked by BM25, vectors, or both fused by RRF in SQL.

The lexical half scores BM25 exactly as the embedded engine's bm25s index does (Lucene's idf and
term-frequency saturation, `analysis.BM25_K1` and `BM25_B`; a repeated query term counts again) from
the statistics the writers keep (`statistics`): document frequencies, N and the average length, and
each candidate passage's term frequencies, read from its tsvector (a term's positions). The dense
half orders by cosine distance through the HNSW index (``hnsw.iterative_scan`` keeps filtered
searches from coming back short); hybrid fuses the two ranked lists, each `depth` deep, with the same
rule as `fusion.reciprocal_rank_fusion` (each side's first hit first, then by summed 1/(k + rank),
ties by best rank and chunk id), so both engines order a fused list alike.

How full text avoids scoring every passage that holds a common word (MaxScore, as search engines
prune): a passage's BM25 share for a term is below that term's weight (its idf times the times the
query repeats it), so the query's terms are taken rarest first and only the passages holding the
terms taken so far are scored, through the GIN index; once the `limit`-th best score is at least the
summed weights of the terms not taken, no passage holding only those can enter the list, and the
list is exact. Otherwise the other terms are taken too. Trade-off: a term held by more than
`COMMON_SHARE` of the passages (and more than `COMMON_MINIMUM`) is never enumerated once the rarer
terms have filled the list — it still counts in the score of every passage scored — so a passage
that holds only such words may be missed where the bound cannot prove it would not rank; a query
made only of common words still enumerates its rarest one, and a KB under `COMMON_MINIMUM`
passages always gets the exact ranking.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from typing import Any

from deepdraft.core.evidence import Passage, Source
from deepdraft.retrieval.index.analysis import BM25_B, BM25_K1, analyze
from deepdraft.retrieval.index.hybrid import SearchMode

COMMON_SHARE = 0.001
COMMON_MINIMUM = 2000
"""A term held by more than this share of the passages, and more than this many, is a common one:
scoring every passage that holds it costs ~8 µs a passage on 2 cores, so 2,000 take ~15 ms."""

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


_SCORED = """
SELECT c.id, (
    SELECT sum(q.weight * cardinality(u.positions)
               / (cardinality(u.positions) + %(k1)s * (1 - %(b)s + %(b)s * c.length / %(avgdl)s)))
    FROM unnest(ts_filter(setweight(c.tsv, 'A', %(terms)s::text[]), '{{a}}')) AS u
    JOIN unnest(%(terms)s::text[], %(weights)s::float8[]) AS q(term, weight) ON q.term = u.lexeme
) AS score
FROM chunks c
WHERE c.tsv @@ %(candidates)s::tsquery {filter}
ORDER BY score DESC, c.id
LIMIT %(limit)s
"""
# The candidates' scores: setweight marks the query's lexemes in the tsvector and ts_filter keeps only
# them, so unnest yields a few rows, not one per lexeme of the passage.

_LEGACY = """
SELECT id, ts_rank(tsv, %(candidates)s::tsquery, 1) FROM chunks
WHERE tsv @@ %(candidates)s::tsquery {filter}
ORDER BY 2 DESC, id
LIMIT %(limit)s
"""
# A KB whose writers have not yet counted its statistics (made before they existed: its next add
# does) ranks as it did then.

_DENSE = """
SELECT id FROM chunks
WHERE embedding IS NOT NULL {filter}
ORDER BY embedding <=> %(v)s
LIMIT %(depth)s
"""

_FUSED = """
WITH lexical AS (
    SELECT id, rank FROM unnest(%(lexical)s::bigint[]) WITH ORDINALITY AS l(id, rank)
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
    *,
    bm25: bool = True,
) -> list[tuple[int, float]]:
    """The `k` best (chunk id, score) pairs, best first (`bm25` False: the KB has no statistics yet)."""
    where = "AND document = ANY(%(allowed)s)" if allowed is not None else ""
    lexical_rank = bm25_ranking if bm25 else legacy_ranking
    if mode == "bm25" or (mode == "hybrid" and vector is None):
        return lexical_rank(conn, query, k, allowed)
    conn.execute("SET hnsw.ef_search = {}".format(max(40, min(1000, depth if mode == "hybrid" else k))))
    conn.execute("SET hnsw.iterative_scan = relaxed_order")
    params: dict[str, Any] = {"allowed": allowed, "k": k, "rrf_k": rrf_k}
    if mode == "dense":
        rows = conn.execute(
            "SELECT id, 1 - (embedding <=> %(v)s) FROM chunks WHERE embedding IS NOT NULL "
            + where
            + " ORDER BY embedding <=> %(v)s LIMIT %(k)s",
            {**params, "v": vector},
        ).fetchall()
        return [(int(i), float(s)) for i, s in rows]
    lexical = [chunk for chunk, _ in lexical_rank(conn, query, max(depth, k), allowed)]
    sql = _FUSED.format(dense=_DENSE.format(filter=where))
    rows = conn.execute(sql, {**params, "lexical": lexical, "v": vector, "depth": max(depth, k)}).fetchall()
    return [(int(i), float(s)) for i, s in rows]


def bm25_ranking(conn: Any, query: str, limit: int, allowed: list[int] | None) -> list[tuple[int, float]]:
    """The `limit` best (chunk id, BM25 score) pairs for `query`, best first (see the module's notes)."""
    wanted = Counter(analyze(query))
    if not wanted or limit <= 0:
        return []
    rows = conn.execute(
        "SELECT s.passages, s.terms, t.term, t.df FROM corpus_stats s"
        " LEFT JOIN term_stats t ON t.term = ANY(%s)",
        (list(wanted),),
    ).fetchall()
    passages, total = int(rows[0][0]), int(rows[0][1])
    frequencies = {str(term): int(df) for _, _, term, df in rows if term is not None}
    if not frequencies or not passages or not total:
        return []  # no query term occurs: as in the embedded engine, nothing matches
    # Rarest first; equal frequencies by term, so that the order (and so the work) is deterministic.
    terms = sorted(frequencies, key=lambda term: (frequencies[term], term))
    weights = [wanted[term] * _idf(frequencies[term], passages) for term in terms]
    common = max(COMMON_SHARE * passages, COMMON_MINIMUM)
    params: dict[str, Any] = {
        "terms": terms,
        "weights": weights,
        "k1": BM25_K1,
        "b": BM25_B,
        "avgdl": total / passages,
        "allowed": allowed,
        "limit": limit,
    }
    sql = _SCORED.format(filter="AND c.document = ANY(%(allowed)s)" if allowed is not None else "")
    taken = 1
    while True:
        params["candidates"] = _or_query(terms[:taken])
        scored = [(int(chunk), float(score)) for chunk, score in conn.execute(sql, params)]
        if taken == len(terms):
            return scored
        full = len(scored) == limit
        if sum(weights[taken:]) <= (scored[-1][1] if full else 0.0):
            return scored  # exact: no passage holding only the terms not taken can score above the list
        # Every term not too common at once: taking them one by one would score the first ones'
        # passages again at each step, and with a list `depth` deep the bound rarely stops early.
        enumerable = taken
        while enumerable < len(terms) and frequencies[terms[enumerable]] <= common:
            enumerable += 1
        if enumerable > taken:
            taken = enumerable
        elif full:
            return scored  # early termination: the terms left are too common to enumerate
        else:
            taken += 1  # the list is not full yet: a common term must fill it


def legacy_ranking(conn: Any, query: str, limit: int, allowed: list[int] | None) -> list[tuple[int, float]]:
    """``ts_rank`` over the query's terms OR-ed: a KB whose BM25 statistics are not counted yet."""
    candidates = tsquery_literal(query)
    if candidates is None:
        return []
    sql = _LEGACY.format(filter="AND document = ANY(%(allowed)s)" if allowed is not None else "")
    rows = conn.execute(sql, {"candidates": candidates, "allowed": allowed, "limit": limit}).fetchall()
    return [(int(i), float(s)) for i, s in rows]


def _idf(df: int, passages: int) -> float:
    """Lucene's idf, as bm25s computes it (always positive)."""
    return math.log(1 + (passages - df + 0.5) / (df + 0.5))


def _or_query(terms: list[str]) -> str:
    return " | ".join(_quote(term) for term in terms)


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
