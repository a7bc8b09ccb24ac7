"""FACT-local: statement extraction from runs and Markdown, judged support, the benchmark's statistics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deepdraft.config import load_settings
from deepdraft.eval.fact import (
    CitedStatement,
    FactReport,
    judge_statements,
    pairs_from_markdown,
    pairs_from_run_state,
    read_sources,
    summarize,
)
from deepdraft.eval.judge import Judge
from deepdraft.llm.scripted import FunctionLLM
from deepdraft.run import runner
from tests.eval.judges import respond, supported
from tests.support.scenario import SOTU_LIKE, ScenarioModel, WordOverlapRetriever


def test_pairs_from_markdown_use_the_stored_source_text(tmp_path: Path) -> None:
    markdown = (
        "# Tariffs\n\n## 1 Early\n\nThe 1790 address tied tariffs to the public debt [1]. "
        "Duties were moderate [1][2, p. 3]. An uncited sentence.\n\n## References\n\n[1] Address 1790 — `a.md`\n"
    )
    sources = tmp_path / "sources.jsonl"
    sources.write_text(
        json.dumps({"number": 1, "text": "tariffs raise revenue to pay the public debt"}) + "\n"
    )
    pairs = pairs_from_markdown(markdown, read_sources(sources))
    assert pairs == [
        CitedStatement(
            "The 1790 address tied tariffs to the public debt.",
            "1",
            "tariffs raise revenue to pay the public debt",
        ),
        CitedStatement("Duties were moderate.", "1", "tariffs raise revenue to pay the public debt"),
        CitedStatement("Duties were moderate.", "2", None),  # no stored text: unknown, as an unfetchable URL
    ]


def test_statistics_follow_the_benchmark_definitions() -> None:
    a, b, empty = FactReport("a"), FactReport("b"), FactReport("no citations")
    a.labels.update(supported=3, unsupported=1, unknown=2)
    b.labels.update(supported=1, unsupported=3)
    b.failed = 5  # failed judgments never count as unsupported
    summary = summarize([a, b, empty])
    assert summary.reports == 2  # a report without checkable citations is left out of the means
    assert summary.citation_accuracy == pytest.approx(4 / 8)  # micro: Σ supported / Σ checked
    assert summary.effective_citations == pytest.approx(2.0)
    assert summary.total_citations == pytest.approx(4.0)
    assert summary.failed_statements == 5


def test_fact_on_a_real_run_judges_each_citation_against_its_stored_passage() -> None:
    settings = load_settings(flags={"output": {"verify": False, "synthesis": False}})
    report = runner.start(
        "How did presidents argue about tariffs?",
        settings,
        llm=FunctionLLM(ScenarioModel(expansions=0)),
        retriever=WordOverlapRetriever(SOTU_LIKE),
    )
    _, state = runner.load_run(report.run_id)
    assert state is not None
    pairs = pairs_from_run_state(state)
    assert pairs and all(p.passage == state.registry[p.citation].text for p in pairs)
    assert all("\\cite" not in p.statement for p in pairs)

    judge_llm = FunctionLLM(respond)
    [result] = judge_statements(Judge(judge_llm), {report.run_id: pairs})
    distinct = {(p.citation, p.statement): p for p in pairs}  # exact duplicates are judged once
    expected = sum(supported(p.statement, p.passage or "") for p in distinct.values())
    assert result.labels["supported"] == expected
    assert result.labels["supported"] + result.labels["unsupported"] == len(distinct)
    assert len(judge_llm.requests) == len({p.citation for p in pairs})  # one call per cited passage


def test_a_failed_judgment_counts_its_statements_as_failed_not_unsupported() -> None:
    pairs = {
        "r": [
            CitedStatement("Tariffs rose sharply.", "1", "tariffs rose"),
            CitedStatement("Other.", "2", "x"),
        ]
    }
    judge = Judge(
        FunctionLLM(lambda request: '{"labels": [{"statement": 9, "label": "supported"}]}'), max_attempts=2
    )
    [result] = judge_statements(judge, pairs)
    assert result.failed == 2 and result.checked == 0
    assert len(result.failures) == 2 and "from 1 to 1" in result.failures[0]
    assert summarize([result]).citation_accuracy is None
