"""The benchmarks still run, and the prompt-size target holds (token counts, not timings)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


def run_bench(name: str, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, str(BENCH / name), *args], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.slow
def test_condensed_prompts_stay_within_a_third_of_the_whole_draft_baseline() -> None:
    summary = json.loads(run_bench("prompt_tokens.py", "--json"))
    total = summary["total"]
    assert summary["meets_target"] and total["deepdraft_tokens"] <= total["baseline_tokens"] / 3
    # Per written node, deepdraft's cost levels off while the baseline's keeps growing.
    assert all(growth < 1.15 for growth in summary["deepdraft_per_node_growth"].values())
    assert all(growth > 1.4 for growth in summary["baseline_per_node_growth"].values())


@pytest.mark.slow
def test_overhead_bench_runs_on_a_small_corpus() -> None:
    summary = json.loads(run_bench("overhead.py", "--passages", "2000", "--json"))
    # Deep enough to exercise every part of the profile (the exact shape follows the policy's rules).
    assert summary["steps"] > 40 and summary["nodes"] > 20 and summary["expansions"] >= 5
    # Every component of the profile was found and timed (a moved function fails the bench).
    assert "unaccounted" in summary["profile_s"] and summary["profile_s"]["verification: the rest"] > 0


SCORER = """
import json, sys
for pair in sys.argv[3:]:
    qid, path = pair.split("=", 1)
    report = json.load(open(path))
    print(json.dumps({"id": qid, "words": len(json.dumps(report).split()), "title": report["title"]}))
"""


def quality_inputs(folder: Path) -> list[str]:
    """A quality bench's arguments over the test speeches: one question, the corpus as the KB, and
    the stand-in scorer."""
    from tests.conftest import SPEECHES

    corpus = folder / "speeches.jsonl"
    corpus.write_text(
        "".join(
            json.dumps({"id": name, "title": name, "text": text}) + "\n" for name, text in SPEECHES.items()
        ),
        encoding="utf-8",
    )
    questions = folder / "questions.jsonl"
    questions.write_text(
        json.dumps({"id": "q1", "question": "How did presidents argue about tariffs?"}) + "\n"
    )
    scorer = folder / "scorer.py"
    scorer.write_text(SCORER, encoding="utf-8")
    return [str(questions), str(corpus), "--scorer", str(scorer), "--kb", str(corpus)]


@pytest.mark.slow
def test_quality_bench_scores_every_run_and_skips_finished_ones_when_run_again(tmp_path: Path) -> None:
    """bench/quality.py end to end against a scripted model on loopback, with a stand-in scorer
    (the real one lives outside the repository): a report per question, scored, in a table."""
    from tests.support.openai_server import FakeOpenAIServer
    from tests.support.scenario import ScenarioModel, as_responder

    out = tmp_path / "runs"
    args = [*quality_inputs(tmp_path), "--out", str(out)]
    with FakeOpenAIServer(as_responder(ScenarioModel(expansions=1))) as server:
        env = {"DEEPDRAFT_BASE_URL": server.base_url, "DEEPDRAFT_MODEL": "fake"}
        first = run_bench_env("quality.py", env, *args, "--json")
        asked = len(server.requests)
        again = run_bench_env("quality.py", env, *args)
        assert len(server.requests) == asked  # the finished run is not written again
    [(key, row)] = json.loads(first).items()
    assert key == "q1@warp" and row["actions"] > 0 and row["words"] > 0 and "tariff" in row["title"].lower()
    assert (out / "q1.warp.json").is_file()
    assert "q1@warp" in again and "median warp" in again


def run_bench_env(name: str, env: dict[str, str], *args: str) -> str:
    import os

    result = subprocess.run(
        [sys.executable, str(BENCH / name), *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **env},
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def load_bench(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


JUNIT = """<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest" tests="7">
  <testcase classname="tests.hostile.test_documents" name="test_probe[kb-add-zip-bomb-docx]" time="1.2"/>
  <testcase classname="tests.hostile.test_documents" name="test_probe[upload-zip-bomb-docx]" time="0.8">
    <failure message="died">the server died</failure>
  </testcase>
  <testcase classname="tests.hostile.test_documents" name="test_probe[kb-add-named-pipe]" time="0.1">
    <skipped message="no fifo here"/>
  </testcase>
  <testcase classname="tests.hostile.test_attacks.TestRebinding" name="test_host[evil]" time="0.1"/>
  <testcase classname="tests.hostile.test_attacks.TestRebinding" name="test_host[other]" time="0.1">
    <error message="fixture">broken fixture</error>
  </testcase>
  <testcase classname="tests.hostile.test_injection" name="test_forged_key" time="0.3"/>
  <testcase classname="tests.hostile.test_llm_faults" name="test_fault[truncated-json]" time="0.3"/>
</testsuite></testsuites>
"""


def test_hostile_bench_counts_cases_per_file_and_says_which_files_are_missing() -> None:
    hostile = load_bench("hostile")

    counts = hostile.count_cases(JUNIT)

    assert {name: (c.cases, c.passed) for name, c in counts.items()} == {
        "test_documents.py": (2, 1),  # the skipped case is not counted
        "test_attacks.py": (2, 1),
        "test_injection.py": (1, 1),
        "test_llm_faults.py": (1, 1),
    }
    figures = hostile.suite_figures(counts, present={"test_documents.py", "test_attacks.py"})
    by_name = {row["figure"]: row for row in figures}
    assert (by_name["faults"]["cases"], by_name["faults"]["missing"]) == (None, ["test_llm_faults.py"])
    assert (by_name["bad inputs"]["cases"], by_name["bad inputs"]["passed"]) == (2, 1)
    assert (by_name["attacks"]["cases"], by_name["attacks"]["passed"]) == (2, 1)
    assert by_name["attacks"]["missing"] == ["test_injection.py"]


@pytest.mark.slow
def test_throughput_bench_feeds_the_batching_server_and_counts_every_request() -> None:
    summary = json.loads(run_bench("throughput.py", "--runs", "1,3", "--speedup", "40", "--json"))
    one, three = summary["batches"]
    assert (one["requests"], three["requests"]) == (14, 42)  # every report took the whole path
    # Three runs at once keep about three of the sixteen slots busy, one run about one.
    assert 0 < one["utilisation"] < three["utilisation"] <= 3 / 16
    assert three["reports_per_hour"] > one["reports_per_hour"]


def step(
    action: str, target: str, valid: bool, reply: str = "", parsed: dict[str, object] | None = None
) -> Any:
    from deepdraft.events import StepRecord

    prompt = "Evidence: bibkey:textid1 and bibkey:textid10"
    return StepRecord(1, action, prompt, reply, parsed, valid, None, 1, 1, 0.0, 0.0, False, target)


def test_training_bench_counts_retries_of_one_target_as_one_attempt() -> None:
    training = load_bench("training")
    steps = [
        step("search", "section-1", False),
        step("search", "section-1", True),  # the retry: the attempt was not accepted at first try
        step("write", "section-1", True),
        step("search", "section-2", True),
        step("write", "section-2", False),
        step("write", "section-2", False),
    ]
    assert training.first_try(steps) == {"search": [False, True], "write": [True, False]}


def test_training_bench_scores_the_rule_components_of_an_action() -> None:
    training = load_bench("training")
    from deepdraft.core.citations import normalise_citations

    text = normalise_citations("Tariffs rose [textid1] and fell [textid9].")
    write = step("write", "section-1", True, f"<action>{text}</action>", {"name": "write", "text": text})
    scores = training.components(write, "How did tariffs change?")
    assert scores["format_validity"] == 1.0
    assert scores["citation_validity"] == 0.0  # textid9 was not in the evidence the prompt showed
    shown = normalise_citations("Tariffs rose [textid1] and [textid10].")
    cited = step("write", "section-1", True, shown, {"name": "write", "text": shown})
    assert training.components(cited, "How did tariffs change?")["citation_validity"] == 1.0
    search = step("search", "section-1", False, '<action>{"name": "search"}</action>')
    assert training.components(search, "How did tariffs change?") == {"format_validity": 0.5}


@pytest.mark.slow
def test_deepen_bench_deepens_the_thinnest_section_and_scores_before_and_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """bench/deepen.py end to end against a scripted model on loopback: a quick report, its
    thinnest section deepened through the runner, both versions scored, done once."""
    from tests.support.openai_server import FakeOpenAIServer
    from tests.support.scenario import ScenarioModel, as_responder

    out = tmp_path / "deepened"
    args = [*quality_inputs(tmp_path), "--out", str(out)]
    with FakeOpenAIServer(as_responder(ScenarioModel(expansions=1))) as server:
        env = {"DEEPDRAFT_BASE_URL": server.base_url, "DEEPDRAFT_MODEL": "fake"}
        table = run_bench_env("deepen.py", env, *args)
        asked = len(server.requests)
        again = run_bench_env("deepen.py", env, *args)
        assert len(server.requests) == asked  # a run is deepened once
    [row] = [json.loads(line) for line in (out / "deepened.jsonl").read_text().splitlines()]
    before = json.loads((out / "q1.before.json").read_text())
    after = json.loads((out / "q1.after.json").read_text())
    monkeypatch.syspath_prepend(str(BENCH))
    bench = load_bench("deepen")
    assert row["section"] == bench.weakest_section(before)["number"]
    deepened = next(node for node in after["outline"] if node["number"] == row["section"].split(".")[0])
    split = (
        deepened
        if "." not in row["section"]
        else next(child for child in deepened["children"] if child["number"] == row["section"])
    )
    assert split["children"] and row["calls"] > 0 and row["minutes"] >= 0
    assert f"q1\t{row['section']}\t" in table and "median minutes" in table and table == again


def test_the_weakest_section_is_the_thinnest_one_deepen_accepts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(BENCH))  # the deepen bench imports the quality bench as a sibling
    bench = load_bench("deepen")

    def node(number: str, words: int, refs: list[int], children: list[Any] | None = None) -> dict[str, Any]:
        level = number.count(".") + 1
        sentences = [{"references": refs}]
        text = " ".join(["word"] * words)
        return {"number": number, "level": level, "status": "written", "markdown": text,
                "sentences": sentences, "children": children or []}  # fmt: skip

    report = {
        "run_id": "r",
        "outline": [
            node("1", 90, [1]),
            node("2", 10, [1], children=[node("2.1", 5, [2], children=[node("2.1.1", 1, [3])])]),
            node("3", 30, [1, 2]),
            node("4", 30, [3]),
        ],
    }
    # 2.1.1 is the thinnest but at the deepest level, 2 and 2.1 are split already; 3 and 4 tie
    # on words, and 4 cites fewer sources.
    assert bench.weakest_section(report)["number"] == "4"
