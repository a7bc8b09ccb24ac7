"""`deepdraft eval …` end to end: real benchmark rows, a real judge endpoint on loopback, real files."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from deepdraft.cli import app as cli
from deepdraft.cli.app import app
from deepdraft.cli.options import NO_JUDGE_OPTIONS, JudgeOptions, with_judge_options
from tests.eval.judges import DATA, server_responder
from tests.support.openai_server import FakeOpenAIServer

runner = CliRunner()
DRB_OUTPUTS = DATA / "deepresearch_bench" / "sample_outputs" / "claude-3-7-sonnet-latest.raw.jsonl"


@pytest.fixture
def judge_server():  # type: ignore[no-untyped-def]
    with FakeOpenAIServer(server_responder, models=["judge-model"]) as server:
        yield server


def invoke(*args: str) -> str:
    result = runner.invoke(app, ["eval", *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def judge_flags(server: FakeOpenAIServer) -> list[str]:
    return ["--judge-base-url", server.base_url, "--data-dir", str(DATA)]


def test_race_command_scores_real_outputs_and_a_rerun_is_free(judge_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    rows = [json.loads(line) for line in DRB_OUTPUTS.read_text().splitlines()]
    reference = tmp_path / "reference.jsonl"
    reference.write_text(
        "".join(json.dumps({"prompt": r["prompt"], "article": "Reference text."}) + "\n" for r in rows)
    )
    results = tmp_path / "race.jsonl"
    output = invoke(
        "race",
        str(DRB_OUTPUTS),
        "--reference",
        str(reference),
        "--output",
        str(results),
        *judge_flags(judge_server),
    )
    assert "RACE over 2 task(s)" in output and "overall score" in output
    assert "judge: 2 calls (0 from the cache" in output
    assert [json.loads(line)["id"] for line in results.read_text().splitlines()] == [1, 51]
    again = invoke("race", str(DRB_OUTPUTS), "--reference", str(reference), *judge_flags(judge_server))
    assert "judge: 2 calls (2 from the cache" in again and len(judge_server.requests) == 2


def test_race_from_raw_prints_the_published_aggregate() -> None:
    output = invoke(
        "race",
        "--from-raw",
        str(
            DATA / "deepresearch_bench" / "sample_outputs" / "claude-3-7-sonnet-latest.race_raw_results.jsonl"
        ),
    )
    assert "42.18" in output and "41.10" in output and "46.21" in output


def test_fact_command_on_a_markdown_report_with_sources(judge_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    report = tmp_path / "report.md"
    report.write_text("# T\n\nTariffs protected manufactures [1]. Farmers suffered [2]. Nothing here [3].\n")
    sources = tmp_path / "sources.json"
    sources.write_text(
        json.dumps({"1": "tariffs protect our manufactures", "2": "unrelated text about ships"})
    )
    output = invoke(
        "fact",
        str(report),
        "--sources",
        str(sources),
        "--judge-base-url",
        judge_server.base_url,
        "-o",
        str(tmp_path / "f.json"),
    )
    data = json.loads((tmp_path / "f.json").read_text())
    assert data["reports"][0]["labels"] == {"supported": 1, "unsupported": 1, "unknown": 1}
    assert data["summary"]["citation_accuracy"] == 0.5 and "FACT-local" in output


def test_pairwise_command_with_a_deepconsult_csv(judge_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import csv

    queries = (DATA / "deepconsult" / "queries.csv").read_text().splitlines()[1:]
    path = tmp_path / "pairs.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["question", "baseline_answer", "candidate_answer"])
        for query in queries:
            writer.writerow(
                [query, "Short.", "A longer candidate with [a link](https://example.org) and detail."]
            )
    output = invoke(
        "pairwise", "--input", str(path), "--repeats", "1", "--judge-base-url", judge_server.base_url
    )
    assert len(judge_server.requests) == len(queries) * 2
    assert "https://example.org" not in json.dumps(judge_server.requests)  # links are stripped first
    overall = next(line for line in output.splitlines() if "overall" in line)
    assert "100.00" in overall and "7.00" in overall


def test_gym_command_on_shipped_reports_and_from_labels(judge_server) -> None:  # type: ignore[no-untyped-def]
    reports = DATA / "deepresearch_gym" / "mini10" / "reports" / "GPTResearcher_custom"
    output = invoke("gym", str(reports), *judge_flags(judge_server))
    assert "Key points (%)" in output and "Quality (0–100)" in output and "FAILED" not in output
    labels = invoke(
        "gym",
        "--from-labels",
        str(DATA / "deepresearch_gym" / "mini10" / "kpr_results_gpt-4.1-mini" / "GPTResearcher.json"),
    )
    assert "1004305" in labels and "mean" in labels


def test_outline_command_against_freshwiki(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from deepdraft.eval import outline

    def bag_of_words(texts):  # type: ignore[no-untyped-def]
        vocabulary = sorted({w for t in texts for w in t.lower().split()})
        return np.array([[t.lower().split().count(w) for w in vocabulary] for t in texts], dtype=float)

    monkeypatch.setattr(outline, "load_minilm", lambda: bag_of_words)  # the real model: test_outline (slow)
    article = tmp_path / "2022_Luzon_earthquake.md"
    article.write_text(
        "# 2022 Luzon earthquake\n\n## Earthquake\n\nA quake struck Luzon.\n\n## Aftershocks\n\nMany.\n"
    )
    output = invoke("outline", str(article), "--data-dir", str(DATA), "-o", str(tmp_path / "o.json"))
    score = json.loads((tmp_path / "o.json").read_text())["scores"][0]
    assert score["topic"] == "2022 Luzon earthquake" and 0 < score["heading_soft_recall"] < 1
    assert "not comparable with STORM" in output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["race", "missing.jsonl", "--reference", "missing.jsonl", "--data-dir", "/nonexistent"],
            "benchmark data folder not found",
        ),
        (
            ["race", "no-such-run", "--reference", "x", "--data-dir", str(DATA)],
            "no-such-run: no such file, folder or run id",
        ),
        (["fact", str(DRB_OUTPUTS)], "needs --sources"),
        (["pairwise"], "give --input CSV"),
        (["run", "nosuite"], "unknown suite 'nosuite'"),
    ],
)
def test_user_mistakes_get_one_line_and_exit_code_2(
    args: list[str], message: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "argv", ["deepdraft", "eval", *args])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and message in err and "Traceback" not in err


def test_run_command_with_a_served_writer_and_judge(judge_server, corpus_dir: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from tests.support.scenario import ScenarioModel, as_responder

    out = tmp_path / "results"
    with FakeOpenAIServer(as_responder(ScenarioModel(expansions=0)), models=["writer"]) as writer:
        output = invoke(
            "run",
            "demo",
            "--policies",
            "warp,single-pass",
            "--limit",
            "1",
            "--depth",
            "quick",
            "--kb",
            str(corpus_dir),
            "--base-url",
            writer.base_url,
            "--judge-base-url",
            judge_server.base_url,
            "--output-dir",
            str(out),
        )
    assert "demo: 1 question(s)" in output and "single-pass" in output and "FAILED" not in output
    assert (out / "comparison.csv").is_file() and (out / "comparison.png").is_file()


def test_the_judge_options_declared_once_reach_each_command_as_one_value() -> None:
    given: list[JudgeOptions] = []
    probe = typer.Typer()

    @probe.command()
    @with_judge_options
    def score(name: str = "x", judge: JudgeOptions = NO_JUDGE_OPTIONS, last: int = 0) -> None:
        given.append(judge)

    result = runner.invoke(probe, ["--judge-model", "m", "--judge-price-in", "2", "--last", "1"])
    assert result.exit_code == 0, result.output
    assert given == [JudgeOptions(model="m", price_in=2.0)]
    for command in ("race", "fact", "pairwise", "gym", "run"):  # every judged command, options in place
        shown = re.findall(r"--[a-z-]+", invoke(command, "--help"))
        judge_flags_shown = [flag for flag in shown if flag.startswith("--judge")]
        assert judge_flags_shown == [
            "--judge-base-url",
            "--judge-model",
            "--judge-api-key",
            "--judge-concurrency",
            "--judge-price-in",
            "--judge-price-out",
        ], command
