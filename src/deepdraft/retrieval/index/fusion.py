"""Reciprocal rank fusion (RRF): one ranking from several, using ranks only.

An item's fused score is the sum, over the rankings that contain it, of ``1 / (k + rank)`` with ranks
counted from 1 (Cormack, Clarke and Büttcher, SIGIR 2009). Ranks rather than scores are fused because
BM25 scores and cosine similarities live on unrelated scales that change with every query; ``k``
(60 in the paper) flattens the curve, so an item ranked well by two lists beats an item ranked first
by one. An item missing from a ranking contributes nothing for it, so a list cut at depth ``n`` can
only lift items, never push them down.

Plain RRF can bury an item that one ranking is sure of: a quoted span that BM25 ranks first and the
embeddings rank nowhere scores 1/61 against a paraphrase both lists rank tenth (2/70). `keep_first`
guards against that: the first item of every ranking is placed ahead of the fused rest. Measured by
`bench/retrieval.py` on the demo corpus, it lifts copied-span recall@10 from 0.97 to 1.00 (BM25
alone: 1.00) and leaves topic-question recall unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

DEFAULT_K = 60
DEFAULT_KEEP_FIRST = 1


def reciprocal_rank_fusion(
    rankings: Sequence[Sequence[int]],
    k: int = DEFAULT_K,
    limit: int | None = None,
    keep_first: int = 0,
) -> list[tuple[int, float]]:
    """Fuse `rankings` (item ids, best first) into ``(item, score)`` pairs, best first.

    Ties are broken by the best rank the item reached in any list, then by the item id, so equal
    inputs always give the same order. A repeated item within one ranking counts at its first place.
    `limit` keeps only that many of the fused items (None: all). The top `keep_first` items of each
    ranking come first (round robin over the rankings) and share the best fused score, so scores
    never increase down the list.
    """
    if k < 0:
        raise ValueError(f"k must not be negative (got {k})")
    if keep_first < 0:
        raise ValueError(f"keep_first must not be negative (got {keep_first})")
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
    if keep_first and fused:
        fused = _heads_first(rankings, fused, keep_first)
    return fused if limit is None else fused[: max(limit, 0)]


def _heads_first(
    rankings: Sequence[Sequence[int]], fused: list[tuple[int, float]], keep_first: int
) -> list[tuple[int, float]]:
    top_score = fused[0][1]
    heads: list[int] = []
    for position in range(keep_first):
        for ranking in rankings:
            if position < len(ranking) and ranking[position] not in heads:
                heads.append(ranking[position])
    kept = set(heads)
    return [(item, top_score) for item in heads] + [pair for pair in fused if pair[0] not in kept]
