"""Reciprocal rank fusion: the formula, agreement between lists, ties, limits."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from deepdraft.retrieval.index.fusion import reciprocal_rank_fusion


def test_one_ranking_keeps_its_order_with_the_standard_scores() -> None:
    fused = reciprocal_rank_fusion([[7, 3, 9]], k=60)
    assert [item for item, _ in fused] == [7, 3, 9]
    assert [score for _, score in fused] == pytest.approx([1 / 61, 1 / 62, 1 / 63])


def test_agreement_between_lists_beats_one_first_place() -> None:
    # 5 is second in both lists; 1 and 2 are first in one list and absent from the other.
    fused = reciprocal_rank_fusion([[1, 5, 3], [2, 5, 4]], k=60)
    assert fused[0] == (5, pytest.approx(2 / 62))
    assert {item for item, _ in fused} == {1, 2, 3, 4, 5}


def test_ties_are_broken_by_best_rank_then_by_id() -> None:
    # 8 and 4 tie exactly (first in one list each); 4 wins on its id. 6 ties 9 on score, ranks equal.
    fused = reciprocal_rank_fusion([[8, 6], [4, 9]])
    assert [item for item, _ in fused] == [4, 8, 6, 9]
    assert reciprocal_rank_fusion([[4, 9], [8, 6]]) == fused


def test_limit_duplicates_and_empty_input() -> None:
    assert (
        reciprocal_rank_fusion([[1, 2, 3], [3, 2, 1]], limit=2)
        == reciprocal_rank_fusion([[1, 2, 3], [3, 2, 1]])[:2]
    )
    # A repeat counts once, at its first place; the items after it keep their positions.
    assert reciprocal_rank_fusion([[1, 1, 2]], k=0) == [(1, 1.0), (2, pytest.approx(1 / 3))]
    assert reciprocal_rank_fusion([]) == [] == reciprocal_rank_fusion([[], []])
    assert reciprocal_rank_fusion([[1]], limit=0) == []
    with pytest.raises(ValueError, match="negative"):
        reciprocal_rank_fusion([[1]], k=-1)


rankings = st.lists(st.lists(st.integers(0, 30), max_size=15, unique=True), max_size=4)


@given(rankings, st.integers(0, 100))
def test_fused_scores_follow_the_formula_and_are_sorted(lists: list[list[int]], k: int) -> None:
    fused = reciprocal_rank_fusion(lists, k=k)
    items = [item for item, _ in fused]
    assert sorted(items) == sorted({item for ranking in lists for item in ranking})
    for item, score in fused:
        expected = sum(1 / (k + ranking.index(item) + 1) for ranking in lists if item in ranking)
        assert score == pytest.approx(expected)
    scores = [score for _, score in fused]
    assert scores == sorted(scores, reverse=True)


def test_keep_first_puts_each_rankings_top_item_ahead_of_the_fused_rest() -> None:
    # 7 is ranked first by BM25 only; 3 and 4 are ranked well by both, so plain RRF puts them ahead.
    lexical = [7, 3, 4, 5]
    semantic = [3, 4, 8, 9]
    plain = [item for item, _ in reciprocal_rank_fusion([lexical, semantic])]
    assert plain.index(7) > plain.index(4)
    kept = reciprocal_rank_fusion([lexical, semantic], keep_first=1)
    assert [item for item, _ in kept][:3] == [7, 3, 4]
    scores = [score for _, score in kept]
    assert scores == sorted(scores, reverse=True)  # still best first
    assert sorted(item for item, _ in kept) == sorted(
        item for item, _ in reciprocal_rank_fusion([lexical, semantic])
    )


def test_keep_first_with_a_shared_head_and_a_limit() -> None:
    fused = reciprocal_rank_fusion([[1, 2], [1, 3]], keep_first=1, limit=2)
    assert [item for item, _ in fused] == [1, 2]
    with pytest.raises(ValueError, match="keep_first"):
        reciprocal_rank_fusion([[1]], keep_first=-1)
