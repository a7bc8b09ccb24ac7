"""RACE: the benchmark's arithmetic (checked against its published numbers) and the judged pipeline."""

from __future__ import annotations

import json
import re

import pytest

from deepdraft.eval.data import DIMENSIONS, load_drb
from deepdraft.eval.judge import Judge
from deepdraft.eval.race import (
    CriterionScore,
    aggregate,
    clean_article,
    read_raw_results,
    score_race,
    task_score,
)
from deepdraft.llm.cache import CachingLLM
from deepdraft.llm.scripted import FunctionLLM
from deepdraft.store.journal import Journal
from tests.eval.judges import DATA, race_scores, respond

SAMPLES = DATA / "deepresearch_bench" / "sample_outputs"


def published_result() -> dict[str, float]:
    text = (SAMPLES / "claude-3-7-sonnet-latest.race_result.txt").read_text()
    names = {
        "Comprehensiveness": "comprehensiveness",
        "Insight": "insight",
        "Instruction Following": "instruction_following",
        "Readability": "readability",
        "Overall Score": "overall_score",
    }
    return {names[k]: float(v) for k, v in re.findall(r"^(.+?): ([\d.]+)$", text, flags=re.MULTILINE)}


def task(task_id: int):  # type: ignore[no-untyped-def]
    return next(t for t in load_drb(DATA) if t.id == task_id)


def test_shipped_per_task_scores_aggregate_to_the_published_figures() -> None:
    scores = read_raw_results(SAMPLES / "claude-3-7-sonnet-latest.race_raw_results.jsonl")
    summary = aggregate(scores)
    published = published_result()
    assert len(scores) == 100
    assert published == {
        "comprehensiveness": 0.4110,
        "insight": 0.4051,
        "instruction_following": 0.4621,
        "readability": 0.4172,
        "overall_score": 0.4218,
    }
    for name, value in published.items():
        assert round(summary[name], 4) == value


def test_task_1_hand_worked_reproduces_the_published_overall_not_the_naive_mean() -> None:
    """Per-criterion scores chosen by hand so each dimension's weighted mean is a round number.

    Task 1 (criteria shipped with DRB; dimension weights C .30, I .36, IF .20, R .14):

    dimension (criterion weights)            target scores → S_d(t)   reference scores → S_d(r)
    comprehensiveness (.15 .15 .15 .2 .2 .1 .05)  4 4 4 4 4 4 3.6 → 3.98    7 7 7 8 8 7 7 → 7.40
    insight (.25 .25 .2 .15 .15)              4 4.4 5 4 4.4 → 4.36       7 8 7 8 7.4 → 7.46
    instruction following (.2 .15 .15 .15 .35)   4 6 6 6 6 → 5.60        7.2 7 7 7 7.4 → 7.18
    readability (.2 .15 .15 .15 .1 .1 .05 .05 .05) 4 4 4 4 5 5 4 4 4 → 4.20  7 7 7 8 7 8 7 7 7.6 → 7.28

    Per dimension S_d(t)/(S_d(t)+S_d(r)): 3.98/11.38 = .34974, 4.36/11.82 = .36887, 5.60/12.78 = .43818,
    4.20/11.48 = .36585 — the four published per-dimension scores of task 1. Overall, the benchmark
    divides the weighted sums: (.3·3.98 + .36·4.36 + .2·5.60 + .14·4.20) / (.3·11.38 + .36·11.82 +
    .2·12.78 + .14·11.48) = 4.4716 / 11.8324 = .37791, the published 0.3779; the weighted mean of
    the four ratios would be .37657 (0.3766).
    """
    drb_task = task(1)
    chosen = {
        "comprehensiveness": ([4, 4, 4, 4, 4, 4, 3.6], [7, 7, 7, 8, 8, 7, 7]),
        "insight": ([4, 4.4, 5, 4, 4.4], [7, 8, 7, 8, 7.4]),
        "instruction_following": ([4, 6, 6, 6, 6], [7.2, 7, 7, 7, 7.4]),
        "readability": ([4, 4, 4, 4, 5, 5, 4, 4, 4], [7, 7, 7, 8, 7, 8, 7, 7, 7.6]),
    }
    judged = {
        dim: [
            CriterionScore(c.text, t, r)
            for c, t, r in zip(drb_task.checklist.in_dimension(dim), *chosen[dim], strict=True)
        ]
        for dim in DIMENSIONS
    }
    score = task_score(drb_task, judged)
    published = next(
        s for s in read_raw_results(SAMPLES / "claude-3-7-sonnet-latest.race_raw_results.jsonl") if s.id == 1
    )
    for dim in DIMENSIONS:
        assert score.dimensions[dim] == pytest.approx(published.dimensions[dim], abs=1e-12)
    assert score.overall == pytest.approx(published.overall, abs=1e-12)
    assert round(score.overall, 4) == 0.3779
    naive = sum(drb_task.checklist.dimension_weights[d] * score.dimensions[d] for d in DIMENSIONS)
    assert round(naive, 4) == 0.3766


def test_criteria_are_matched_exactly_then_loosely_and_unknown_ones_get_the_mean_weight() -> None:
    drb_task = task(51)
    insight = drb_task.checklist.in_dimension("insight")
    first, second = insight[0], insight[1]
    others = {
        d: [CriterionScore(c.text, 5, 5) for c in drb_task.checklist.in_dimension(d)] for d in DIMENSIONS
    }
    others["insight"] = [
        CriterionScore(first.text.upper(), 10, 0),  # case-insensitive match: weight of `first`
        CriterionScore(second.text[5:-5], 0, 10),  # substring match: weight of `second`
        CriterionScore("a criterion the judge made up", 10, 10),  # the dimension's mean weight
    ]
    mean_weight = sum(c.weight for c in insight) / len(insight)
    total = first.weight + second.weight + mean_weight
    expected_target = (10 * first.weight + 10 * mean_weight) / total
    expected_reference = (10 * second.weight + 10 * mean_weight) / total
    score = task_score(drb_task, others)
    assert score.dimensions["insight"] == pytest.approx(
        expected_target / (expected_target + expected_reference)
    )


def test_cleaning_removes_citations_links_and_the_reference_list() -> None:
    article = (
        "# Report\n\nTariffs rose in 1890 [1][2, p. 4]. See [the act](https://example.org/act) \\cite{textid3}.\n\n"
        "## Analysis\n\nIt mattered【3†L10】.\n\n## References\n\n[1] A source — <https://example.org>\n\n"
        "## Appendix\n\nKept."
    )
    cleaned = clean_article(article)
    assert (
        cleaned
        == "# Report\n\nTariffs rose in 1890. See the act.\n\n## Analysis\n\nIt mattered.\n\n## Appendix\n\nKept."
    )


def test_race_end_to_end_on_real_tasks_with_a_scripted_judge(isolated_workspace) -> None:  # type: ignore[no-untyped-def]
    tasks = load_drb(DATA)
    outputs = [
        json.loads(line) for line in (SAMPLES / "claude-3-7-sonnet-latest.raw.jsonl").read_text().splitlines()
    ]
    targets = {row["prompt"]: row["article"] for row in outputs}
    references = {tasks[0].prompt: "A short reference report."}  # task 51 has none: skipped, not scored
    judge_llm = FunctionLLM(respond, model="scripted-judge")
    with Journal(isolated_workspace / "eval.sqlite") as cache:
        judge = Judge(CachingLLM(judge_llm, cache, "eval"), concurrency=2)
        result = score_race(judge, tasks, targets, references)
        assert [s.id for s in result.scores] == [tasks[0].id]
        assert result.skipped == {tasks[1].id: "no reference report"} and not result.failed
        expected = task_score(
            tasks[0],
            {
                d: [CriterionScore(c.text, *race_scores(c.text)) for c in tasks[0].checklist.in_dimension(d)]
                for d in DIMENSIONS
            },
        )
        assert result.scores[0].overall == pytest.approx(expected.overall)
        prompt = judge_llm.requests[0].messages[-1].content
        assert "weight" not in prompt.split("## Criteria")[1]  # weights stay hidden from the judge
        # The judge was shown the cleaned target: no citation marks or reference list.
        assert "[1]" not in prompt.split("<article_1>")[1].split("</article_1>")[0]

        # A rerun costs nothing: every judgment comes from the cache.
        again = Judge(CachingLLM(judge_llm, cache, "eval"))
        assert score_race(again, tasks, targets, references).scores == result.scores
        assert len(judge_llm.requests) == 1 and again.tally.cached_calls == 1


def test_a_malformed_judgment_is_retried_then_recorded_as_failed_never_zero(isolated_workspace) -> None:  # type: ignore[no-untyped-def]
    tasks = load_drb(DATA)[:1]
    replies = iter(["I think article 1 is worse.", '{"comprehensiveness": []}'])
    flaky = FunctionLLM(lambda request: next(replies, "still no JSON"))
    judge = Judge(flaky, max_attempts=3)
    result = score_race(judge, tasks, {tasks[0].prompt: "target"}, {tasks[0].prompt: "reference"})
    assert result.scores == [] and result.summary() == {}
    assert "no readable JSON (after 3 tries)" in result.failed[tasks[0].id]
    assert len(flaky.requests) == 3 and judge.tally.failures == 1 and judge.tally.retries == 2
    # Each retry shows the model its bad reply and the reason.
    assert "could not be used" in flaky.requests[1].messages[-1].content

    recovering = iter(["not json", None])
    good = FunctionLLM(lambda request: next(recovering) or respond(request))
    recovered = score_race(Judge(good), tasks, {tasks[0].prompt: "target"}, {tasks[0].prompt: "reference"})
    assert len(recovered.scores) == 1 and not recovered.failed
