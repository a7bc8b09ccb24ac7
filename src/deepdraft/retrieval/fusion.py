"""Reciprocal rank fusion (RRF): one ranking from several, using ranks only.

An item's fused score is the sum, over the rankings that contain it, of ``1 / (k + rank)`` with ranks
counted from 1 (Cormack, Clarke and Büttcher, SIGIR 2009). Ranks rather than scores are fused because
BM25 scores and cosine similarities live on unrelated scales that change with every query; ``k``
(60 in the paper) flattens the curve, so an item ranked well by two lists beats an item ranked first
by one. An item missing from a ranking contributes nothing for it, so a list cut at depth ``n`` can
only lift items, never push them down.
"""

from __future__ import annotations

from collections.abc import Sequence

DEFAULT_K = 60


def reciprocal_rank_fusion(
    rankings: Sequence[Sequence[int]], k: int = DEFAULT_K, limit: int | None = None
) -> list[tuple[int, float]]:
    """Fuse `rankings` (item ids, best first) into ``(item, score)`` pairs, best first.

    Ties are broken by the best rank the item reached in any list, then by the item id, so equal
    inputs always give the same order. A repeated item within one ranking counts at its first place.
    `limit` keeps only that many of the fused items (None: all).
    """
    if k < 0:
        raise ValueError(f"k must not be negative (got {k})")
    scores: dict[int, float] = {}
    best_rank: dict[int, int] = {}
    for ranking in rankings:
        seen: set[int] = set()
        for rank, item in enumerate(ranking, start=1):
            if item in seen:
                continue
            seen.add(item)
            scores[item] = scores.get(item, 0.0) + 1.0 / (k + rank)
            best_rank[item] = min(best_rank.get(item, rank), rank)
    fused = sorted(scores.items(), key=lambda pair: (-pair[1], best_rank[pair[0]], pair[0]))
    return fused if limit is None else fused[: max(limit, 0)]
