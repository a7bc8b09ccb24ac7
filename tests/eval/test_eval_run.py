"""`eval run`: every policy on the same questions, model and corpus; scored, tabled, plotted, resumable."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from deepdraft.config import load_settings
from deepdraft.eval.judge import Judge
from deepdraft.eval.suite import DEMO_QUESTIONS, run_suite, suite_questions
from deepdraft.llm.cache import CachingLLM
from deepdraft.llm.scripted import FunctionLLM
from deepdraft.run import runner
from deepdraft.store.journal import Journal
from tests.eval.judges import DATA, respond
from tests.support.scenario import SOTU_LIKE, ScenarioModel, WordOverlapRetriever

POLICIES = ["warp", "plan-write", "single-pass"]


def test_single_pass_researches_once_and_writes_the_whole_report_in_one_call() -> None:
    writer = FunctionLLM(ScenarioModel())
    settings = load_settings(
        flags={"research": {"policy": "single-pass"}, "output": {"verify": False, "synthesis": False}}
    )
    report = runner.start(DEMO_QUESTIONS[0], settings, llm=writer, retriever=WordOverlapRetriever(SOTU_LIKE))
    prompts = [r.messages[-1].content for r in writer.requests]
    assert [("Searcher" in p, "Writer" in p) for p in prompts] == [(True, False), (False, True)]
    assert report.outline.count() == 1 and report.stop_reason == "the report was written in one pass"
    assert report.references and "[1]" in report.markdown


def test_eval_run_compares_policies_writes_table_csv_plot_and_resumes(
    isolated_workspace: Path, tmp_path: Path
) -> None:
    questions = suite_questions("demo", None, limit=2)
    settings = load_settings(flags={"research": {"depth": "quick"}})
    writer = FunctionLLM(ScenarioModel(expansions=1))
    judge_llm = FunctionLLM(respond)
    out = tmp_path / "results"
    with Journal(isolated_workspace / "eval-cache.sqlite") as cache:
        result = run_suite(
            questions,
            POLICIES,
            settings,
            Judge(CachingLLM(judge_llm, cache, "eval"), concurrency=3),
            out,
            llm=writer,
            retriever=WordOverlapRetriever(SOTU_LIKE),
            concurrency=3,  # the six runs three at a time through the pool
        )
        assert list(result.table) == POLICIES and not result.failures
        for row in result.table.values():
            assert row["reports"] == 2 and row["quality"] is not None and row["citation_accuracy"] is not None
            assert "kpr" not in row and "race" not in row  # demo questions have no key points or references
        with (out / "comparison.csv").open() as handle:
            rows = list(csv.DictReader(handle))
        assert [r["policy"] for r in rows] == POLICIES and float(rows[0]["quality"]) > 0
        assert (out / "comparison.png").read_bytes().startswith(b"\x89PNG")
        assert len(list(csv.DictReader((out / "per_question.csv").open()))) == 6
        assert json.loads((out / "summary.json").read_text())["judge_usage"]["failures"] == 0
        runs = [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]
        assert {(r["question_id"], r["policy"]) for r in runs} == {
            (q.id, p) for q in questions for p in POLICIES
        }
        policies_used = {runner.load_run(r["run_id"])[0].policy for r in runs}
        assert policies_used == set(POLICIES)

        # A rerun reuses every finished run and every judgment: no new model call at all.
        writer_calls, judge_calls = len(writer.requests), len(judge_llm.requests)
        again = run_suite(
            questions,
            POLICIES,
            settings,
            Judge(CachingLLM(judge_llm, cache, "eval")),
            out,
            llm=writer,
            retriever=WordOverlapRetriever(SOTU_LIKE),
        )
        assert again.table == result.table
        assert (len(writer.requests), len(judge_llm.requests)) == (writer_calls, judge_calls)


def test_gym_suite_adds_key_point_recall(isolated_workspace: Path, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("DEEPDRAFT_BENCHMARKS", str(DATA))
    questions = suite_questions("gym", None, limit=1)
    assert questions[0].key_points
    settings = load_settings(
        flags={"research": {"depth": "quick"}, "output": {"verify": False, "synthesis": False}}
    )
    result = run_suite(
        questions,
        ["single-pass"],
        settings,
        Judge(FunctionLLM(respond)),
        tmp_path / "gym",
        llm=FunctionLLM(ScenarioModel()),
        retriever=WordOverlapRetriever(SOTU_LIKE),
    )
    assert result.table["single-pass"]["kpr"] is not None
