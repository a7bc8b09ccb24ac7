"""DeepConsult pairwise: both orders, repeats, grades and scores as the benchmark defines them."""

from __future__ import annotations

import pytest

from deepdraft.eval.data import load_deepconsult
from deepdraft.eval.judge import Judge
from deepdraft.eval.pairwise import DIMENSIONS, Comparison, Vote, compare, grade
from deepdraft.llm.scripted import FunctionLLM
from tests.eval.judges import DATA, respond


def test_grade_and_score_follow_the_protocol() -> None:
    four_two = [Vote(True, 3)] * 4 + [Vote(False, 1)] * 2
    assert grade(four_two) == grade(list(reversed(four_two)))
    assert grade(four_two).grade == "win"
    assert grade(four_two).score == pytest.approx(5 + (4 * 3 - 2 * 1) / 6)
    three_three = [Vote(True, 2)] * 3 + [Vote(False, 4)] * 3
    assert grade(three_three).grade == "tie"  # a tie only on an even split
    assert grade(three_three).score == pytest.approx(5 - 1)
    assert grade([Vote(False, 5)] * 6) == grade([Vote(False, 5)]) and grade([Vote(False, 5)]).score == 0


def comparisons(candidate_longer: bool) -> list[Comparison]:
    queries = load_deepconsult(DATA)
    short, long = "A brief report.", "A much longer report with many more specifics and figures."
    return [Comparison(q, short, long) if candidate_longer else Comparison(q, long, short) for q in queries]


def test_both_orders_and_repeats_are_judged_and_graded_on_real_queries() -> None:
    judge_llm = FunctionLLM(respond)  # this judge prefers the longer report, whatever its position
    result = compare(Judge(judge_llm), comparisons(candidate_longer=True), repeats=2)
    assert len(judge_llm.requests) == 3 * 2 * 2
    prompts = [r.messages[-1].content for r in judge_llm.requests]
    assert sum("<report_a>\nA brief report." in p for p in prompts) == 6  # half of them flipped
    summary = result.summary()
    assert set(summary) == {*DIMENSIONS, "overall"}
    assert summary["overall"]["win"] == 100 and summary["overall"]["score"] == pytest.approx(7.0)
    losing = compare(Judge(FunctionLLM(respond)), comparisons(candidate_longer=False), repeats=1).summary()
    assert losing["overall"]["lose"] == 100 and losing["overall"]["score"] == pytest.approx(3.0)


def test_a_position_biased_judge_cancels_out_to_ties() -> None:
    def always_a(request: object) -> str:
        return (
            "```json\n"
            + str({d: {"preferred": "A", "gap_score": "3"} for d in DIMENSIONS}).replace("'", '"')
            + "\n```"
        )

    summary = compare(Judge(FunctionLLM(always_a)), comparisons(candidate_longer=True), repeats=3).summary()
    assert summary["overall"]["tie"] == 100 and summary["overall"]["score"] == pytest.approx(5.0)


def test_failed_judgments_are_left_out_and_reported() -> None:
    calls = iter(range(1000))

    def flaky(request: object) -> str:  # every other call is unreadable, retries included
        return respond(request) if next(calls) % 2 else "no"  # type: ignore[arg-type]

    result = compare(
        Judge(FunctionLLM(flaky), max_attempts=1), comparisons(candidate_longer=True)[:1], repeats=2
    )
    assert result.failed_judgments == 2 and len(result.grades) == 1
    assert compare(Judge(FunctionLLM(lambda r: "no"), max_attempts=1), comparisons(True)[:1]).failed_queries
