"""DRGym: KPR/KPC (reproducing the shipped published rates from the shipped labels) and quality."""

from __future__ import annotations

from pathlib import Path

import pytest

from deepdraft.eval.data import load_gym
from deepdraft.eval.gym import (
    QUALITY_CRITERIA,
    QualityResult,
    judge_key_points,
    judge_quality,
    rates_from_labels,
    read_kpr_results,
)
from deepdraft.eval.judge import Judge
from deepdraft.eval.report_io import load_reports
from deepdraft.llm.scripted import FunctionLLM
from tests.eval.judges import DATA, respond, supported

MINI10 = DATA / "deepresearch_gym" / "mini10"
SHARED_MINI10 = Path(__file__).resolve().parents[3] / "shared" / "benchmarks" / "deepresearch_gym" / "mini10"

# Mean KPR per system over the 10 mini queries, as published in the DRGym repo's results/mini.
PUBLISHED_MEAN_KPR = {
    "GPTResearcher_custom": 72.88,
    "GPTResearcher": 64.55,
    "gpt-4o-search-preview": 54.74,
    "open_deep_search": 42.71,
    "hf_deepresearch_gpt-4o-mini": 41.90,
}


def published_rates(path: Path) -> dict[str, dict[str, float]]:
    import json

    return {
        q: {k: v for k, v in entry.items() if k != "labels"}
        for q, entry in json.loads(path.read_text()).items()
    }


def test_kpr_from_the_shipped_labels_reproduces_the_shipped_per_query_rates() -> None:
    path = MINI10 / "kpr_results_gpt-4.1-mini" / "GPTResearcher.json"
    published = published_rates(path)
    labels = read_kpr_results(path)
    assert set(labels) == set(published) == {"1004305", "188169"}
    for query, entry in published.items():
        ours = rates_from_labels(labels[query])
        assert ours["support_rate"] == pytest.approx(entry["support_rate"], abs=1e-9)
        assert ours["omitted_rate"] == pytest.approx(entry["ommitted_rate"], abs=1e-9)  # (sic) upstream's key
        assert ours["contradicted_rate"] == pytest.approx(entry["contradicted_rate"], abs=1e-9)


@pytest.mark.skipif(
    not SHARED_MINI10.is_dir(), reason="the full benchmark copy (../shared/benchmarks) is absent"
)
def test_kpr_over_all_shipped_systems_reproduces_the_published_means() -> None:
    for system, mean in PUBLISHED_MEAN_KPR.items():
        path = SHARED_MINI10 / "kpr_results_gpt-4.1-mini" / f"{system}.json"
        published = published_rates(path)
        ours = {q: rates_from_labels(labels)["support_rate"] for q, labels in read_kpr_results(path).items()}
        assert ours == pytest.approx({q: e["support_rate"] for q, e in published.items()}, abs=1e-9)
        assert round(sum(ours.values()) / len(ours), 2) == mean


def test_key_points_are_judged_one_by_one_on_real_reports_and_key_points() -> None:
    queries = {q.id: q for q in load_gym(DATA)}
    reports = load_reports(str(MINI10 / "reports" / "GPTResearcher_custom"))
    items = [(r.id or "", queries[r.id or ""].query, queries[r.id or ""].key_points, r.text) for r in reports]
    judge_llm = FunctionLLM(respond)
    result = judge_key_points(Judge(judge_llm, concurrency=3), items)
    assert len(judge_llm.requests) == sum(len(points) for _, _, points, _ in items)
    for qid, _, points, text in items:
        expected = 100 * sum(supported(p.content, text) for p in points) / len(points)
        assert result.rates[qid]["support_rate"] == pytest.approx(expected)
        assert result.rates[qid]["contradicted_rate"] == 0
    assert result.summary()["kpr"] == pytest.approx(sum(r["support_rate"] for r in result.rates.values()) / 2)


def test_a_query_without_key_points_is_skipped_and_failures_are_counted() -> None:
    queries = load_gym(DATA)
    point = queries[0].key_points[0]
    judge = Judge(FunctionLLM(lambda r: '{"label": "Maybe"}'), max_attempts=2)
    result = judge_key_points(judge, [("none", "q", (), "report"), ("bad", "q", (point,), "report")])
    assert result.rates == {} and result.failed == {"bad": 1}
    assert sorted(result.skipped) == ["bad", "none"]


def test_quality_criteria_scale_and_overall() -> None:
    judge_llm = FunctionLLM(respond)
    result = judge_quality(
        Judge(judge_llm), {"r1": ("why startups fail", "A report."), "r2": ("q", "Another.")}
    )
    assert len(judge_llm.requests) == 2 * len(QUALITY_CRITERIA)
    expected = {c: 4 + len(c) % 4 for c in QUALITY_CRITERIA}  # what the scripted judge rates
    summary = result.summary()
    assert {c: summary[c] for c in QUALITY_CRITERIA} == {c: 10 * v for c, v in expected.items()}
    assert summary["overall"] == pytest.approx(sum(expected.values()) / 60 * 100)
    partial = QualityResult(ratings={"a": {"clarity": 10.0}, "b": dict.fromkeys(QUALITY_CRITERIA, 5.0)})
    assert partial.summary()["clarity"] == 75 and partial.summary()["overall"] == 50  # only complete reports


def test_a_rating_outside_the_scale_is_retried_then_failed() -> None:
    judge = Judge(FunctionLLM(lambda r: '{"rating": 11}'), max_attempts=2)
    result = judge_quality(judge, {"r": ("q", "text")})
    assert result.ratings == {} and set(result.failed["r"]) == set(QUALITY_CRITERIA)
    assert result.summary() == {}
