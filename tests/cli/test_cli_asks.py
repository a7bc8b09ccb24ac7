"""`deepdraft ask` and `show --asks` through the command line, on a real knowledge base on disk.

The model behind the loopback server answers from the prompt's content (`ScenarioModel`), so an ask
killed with SIGKILL and asked again in another process gets the reply an uninterrupted one gets.
What an answer cites and in which numbering is tested in tests/run/test_asks.py.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.cli.test_cli import cli
from tests.support.openai_server import FakeOpenAIServer
from tests.support.scenario import ScenarioModel, as_responder, classify_body

QUESTION = "How did presidents argue about tariffs?"
FOLLOW_UP = "What did the silver coinage quarrel mean for farmers?"
MODEL = ScenarioModel(expansions=1)


@pytest.fixture
def kb(corpus_dir: Path) -> Path:
    (corpus_dir / "silver-coinage.md").write_text(
        "# Coinage quarrel\n\nThe free coinage of silver split farmers from bankers in 1896.\n",
        encoding="utf-8",
    )
    return corpus_dir


def research(corpus: Path, base_url: str) -> str:
    result = cli(
        "research",
        QUESTION,
        "--kb",
        str(corpus),
        "--base-url",
        base_url,
        "--model",
        "fake-model",
        "--no-verify",
    )
    assert result.returncode == 0, result.stderr
    return re.search(r"^run (\S+)", result.stdout, flags=re.MULTILINE).group(1)  # type: ignore[union-attr]


def report(run_id: str) -> str:
    return (Path(os.environ["DEEPDRAFT_HOME"]) / "runs" / run_id / "report.md").read_text(encoding="utf-8")


def journal_steps(run_id: str) -> list[tuple[int, str, int]]:
    with sqlite3.connect(Path(os.environ["DEEPDRAFT_HOME"]) / "journal.sqlite") as db:
        return list(
            db.execute("SELECT step, action, directed FROM steps WHERE run_id = ? ORDER BY step", (run_id,))
        )


def asks(run_id: str) -> list[dict[str, Any]]:
    shown = cli("show", run_id, "--asks", "--json")
    assert shown.returncode == 0, shown.stderr
    rows: list[dict[str, Any]] = json.loads(shown.stdout)
    return rows


@pytest.mark.slow
def test_ask_prints_the_answer_keeps_it_and_show_lists_it(kb: Path) -> None:
    with FakeOpenAIServer(as_responder(MODEL)) as server:
        run_id = research(kb, server.base_url)
        before = report(run_id)
        asked = cli("ask", run_id[:12], FOLLOW_UP, "--base-url", server.base_url)
    assert asked.returncode == 0, asked.stderr
    assert re.search(r"\[\d+(, \d+)*\]", asked.stdout) and "Sources not in the report:" in asked.stdout
    assert "Coinage quarrel" in asked.stdout.split("Sources not in the report:")[1]
    assert report(run_id) == before

    rows = asks(run_id)
    assert [(row["question"], row["section"]) for row in rows] == [(FOLLOW_UP, None)]
    assert rows[0]["answer"].strip() == asked.stdout.strip()
    listed = cli("show", run_id, "--asks")
    assert listed.returncode == 0 and f"1. {FOLLOW_UP}" in listed.stdout and "asked 20" in listed.stdout


@pytest.mark.slow
def test_sigkill_during_an_ask_then_asking_again_repeats_only_the_request_in_flight(kb: Path) -> None:
    victim: dict[str, subprocess.Popen[str]] = {}
    start: dict[str, int] = {}

    def kill_client(body: dict[str, Any], index: int) -> None:
        if "at" in start and index == start["at"]:
            os.kill(victim["process"].pid, signal.SIGKILL)

    with FakeOpenAIServer(as_responder(MODEL), on_request=kill_client) as server:
        run_id = research(kb, server.base_url)
        before = journal_steps(run_id)
        start["at"] = len(server.requests)
        victim["process"] = subprocess.Popen(
            [sys.executable, "-m", "deepdraft", "ask", run_id, FOLLOW_UP, "--base-url", server.base_url],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        assert victim["process"].wait(timeout=120) == -signal.SIGKILL
        assert asks(run_id) == []  # nothing half-stored
        del start["at"]

        again = cli("ask", run_id, FOLLOW_UP, "--base-url", server.base_url)
        assert again.returncode == 0, again.stderr
        requests = server.requests[len(server.requests) - 2 :]
        assert classify_body(requests[0])[0] == "ask" and requests[0] == requests[1]  # exactly the same
    rows = journal_steps(run_id)
    assert rows[: len(before)] == before
    assert rows[len(before) :] == [(len(before) + 1, "ask", 1), (len(before) + 2, "ask", 1)]
    assert [row["question"] for row in asks(run_id)] == [FOLLOW_UP]  # one answer, not two
    info = json.loads(cli("show", run_id, "--json").stdout)
    assert info["status"] == "finished"


@pytest.mark.slow
def test_sigkill_during_ask_into_report_then_resume_repeats_only_the_request_in_flight(kb: Path) -> None:
    victim: dict[str, subprocess.Popen[str]] = {}
    start: dict[str, int] = {}

    def kill_client(body: dict[str, Any], index: int) -> None:
        if "at" in start and index == start["at"]:
            os.kill(victim["process"].pid, signal.SIGKILL)

    with FakeOpenAIServer(as_responder(MODEL), on_request=kill_client) as server:
        run_id = research(kb, server.base_url)
        start["at"] = len(server.requests)
        victim["process"] = subprocess.Popen(
            [sys.executable, "-m", "deepdraft", "ask", run_id, FOLLOW_UP, "--into-report",
             "--base-url", server.base_url],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        assert victim["process"].wait(timeout=120) == -signal.SIGKILL
        del start["at"]
        refused = cli("ask", run_id, "Anything else?", "--base-url", server.base_url)
        assert refused.returncode == 2 and (
            f"stopped during `ask --into-report`; finish that first with: deepdraft resume {run_id}"
            in refused.stderr
        )
        killed_at = len(server.requests) - 1
        resumed = cli("resume", run_id, "--base-url", server.base_url)
        assert resumed.returncode == 0, resumed.stderr
        requests = server.requests[killed_at:]
        assert classify_body(requests[0])[0] == "ask" and requests[0] == requests[1]
        assert [classify_body(body)[0] for body in requests[2:]] == []  # --no-verify: nothing more
    assert re.search(rf"^## 4 {re.escape(FOLLOW_UP)}$", report(run_id), flags=re.MULTILINE)
    assert [(row["question"], row["section"]) for row in asks(run_id)] == [(FOLLOW_UP, "section-4")]


@pytest.mark.slow
def test_ask_into_report_writes_a_new_version_and_guards_a_hand_edit(kb: Path) -> None:
    with FakeOpenAIServer(as_responder(MODEL)) as server:
        run_id = research(kb, server.base_url)
        path = Path(os.environ["DEEPDRAFT_HOME"]) / "runs" / run_id / "report.md"
        path.write_text(path.read_text(encoding="utf-8").replace("## 1 ", "## 1 Edited "), encoding="utf-8")
        refused = cli("ask", run_id, FOLLOW_UP, "--into-report", "--base-url", server.base_url)
        assert refused.returncode == 2 and "edited by hand" in refused.stderr and "--force" in refused.stderr
        added = cli("ask", run_id, FOLLOW_UP, "--into-report", "--force", "--base-url", server.base_url)
    assert added.returncode == 0, added.stderr
    assert "report written" in added.stdout
    assert re.search(rf"^## 4 {re.escape(FOLLOW_UP)}$", report(run_id), flags=re.MULTILINE)
    versions = json.loads(cli("show", run_id, "--versions", "--json").stdout)["versions"]
    assert [v["kind"] for v in versions][-2:] == ["hand-edit", "ask"]
    assert [(row["question"], row["section"]) for row in asks(run_id)] == [(FOLLOW_UP, "section-4")]


@pytest.mark.slow
def test_bad_asks_are_refused_in_one_line(kb: Path) -> None:
    with FakeOpenAIServer(as_responder(MODEL)) as server:
        run_id = research(kb, server.base_url)
        asked = len(server.requests)
        with sqlite3.connect(Path(os.environ["DEEPDRAFT_HOME"]) / "journal.sqlite") as db:
            db.execute("INSERT INTO runs SELECT 'unfinished-1', question, policy, settings, 'interrupted',"
                       " created_at, updated_at, 0, NULL, NULL FROM runs WHERE id = ?", (run_id,))  # fmt: skip
        cases = {
            ("nope-nope", FOLLOW_UP): "error: no run with id nope-nope (see `deepdraft runs`)",
            ("unfinished-1", FOLLOW_UP): "error: run unfinished-1 is not finished (it is interrupted)",
            (run_id, "  "): "error: the question is empty",
            (run_id, "why " * 600): "error: the question is too long (2,399 characters; at most 2,000)",
            (run_id, "  ", "--into-report"): "error: the question is empty",
            (run_id, FOLLOW_UP, "--force"): "error: --force is for --into-report",
        }
        for args, message in cases.items():
            result = cli("ask", *args, "--base-url", server.base_url)
            assert result.returncode == 2, (args, result.stderr)
            assert result.stderr.strip().splitlines() == [result.stderr.strip()]  # one line, no traceback
            assert result.stderr.startswith(message), (args, result.stderr)
        assert len(server.requests) == asked  # nothing was asked of the model
    assert cli("show", run_id, "--asks", "--versions").returncode == 2
