"""`deepdraft deepen`, `rewrite` and `recheck` on a finished run, through the command line.

The model behind the loopback server answers from the prompt's content (`ScenarioModel`), so a
command killed with SIGKILL and resumed in another process gets the replies an uninterrupted one
gets. What each command changes in the run is tested in tests/run/test_sections.py.
"""

from __future__ import annotations

import fcntl
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
MODEL = ScenarioModel(expansions=1)


def research(corpus: Path, base_url: str) -> str:
    """A finished run (verification and synthesis on); its id."""
    result = cli("research", QUESTION, "--kb", str(corpus), "--base-url", base_url, "--model", "fake-model")
    assert result.returncode == 0, result.stderr
    return re.search(r"^run (\S+)", result.stdout, flags=re.MULTILINE).group(1)  # type: ignore[union-attr]


def run_info(run_id: str) -> dict[str, Any]:
    runs = json.loads(cli("runs", "--json").stdout)
    found: dict[str, Any] = next(run for run in runs if run["id"] == run_id)
    return found


def report(run_id: str) -> str:
    return (Path(os.environ["DEEPDRAFT_HOME"]) / "runs" / run_id / "report.md").read_text(encoding="utf-8")


def body(markdown: str) -> str:
    """The report without its About block (run id and wall time differ between runs)."""
    return markdown.partition("<details>")[0]


def journal_steps(run_id: str) -> list[tuple[int, str, int]]:
    with sqlite3.connect(Path(os.environ["DEEPDRAFT_HOME"]) / "journal.sqlite") as db:
        return list(
            db.execute("SELECT step, action, directed FROM steps WHERE run_id = ? ORDER BY step", (run_id,))
        )


@pytest.mark.slow
def test_deepen_rewrite_and_recheck_continue_the_same_run(corpus_dir: Path) -> None:
    with FakeOpenAIServer(as_responder(MODEL)) as server:
        run_id = research(corpus_dir, server.base_url)
        first = report(run_id)
        steps = run_info(run_id)["steps"]
        asked = len(server.requests)

        deepened = cli("deepen", run_id[:12], "3", "--into", "3", "--instructions", "the farm states",
                       "--base-url", server.base_url)  # fmt: skip
        assert deepened.returncode == 0, deepened.stderr
        assert "report written" in deepened.stdout and f"runs/{run_id}/report.md" in deepened.stdout.replace(
            "\n", ""
        )
        kinds = [classify_body(b) for b in server.requests[asked:]]
        assert kinds[0] == ("extend-plan", "section-3")
        assert kinds[1:7] == [(k, f"section-3.{i}") for i in (1, 2, 3) for k in ("search", "write")]
        assert "the farm states" in server.requests[asked]["messages"][-1]["content"]
        deep = report(run_id)
        assert re.findall(r"^### (3\.\d) ", deep, flags=re.MULTILINE) == ["3.1", "3.2", "3.3"]
        assert deep.split("## 3 ")[0].split("## 1 ")[1] == first.split("## 3 ")[0].split("## 1 ")[1]

        rewritten = cli("rewrite", run_id, "section-3.2", "--base-url", server.base_url)
        assert rewritten.returncode == 0, rewritten.stderr
        rechecked = cli("recheck", run_id, "3.1", "--base-url", server.base_url)
        assert rechecked.returncode == 0, rechecked.stderr
        whole = cli("recheck", run_id, "--base-url", server.base_url)
        assert whole.returncode == 0, whole.stderr

    info = run_info(run_id)
    assert info["status"] == "finished" and info["steps"] > steps
    rows = journal_steps(run_id)
    assert [row[0] for row in rows] == list(range(1, len(rows) + 1))  # one journal, numbered on
    assert [
        action for _, action, directed in rows if directed and action in ("deepen", "rewrite", "recheck")
    ] == [
        "deepen",
        "rewrite",
        "recheck",
        "recheck",
    ]
    assert all(directed for _, _, directed in rows[steps:]) and not any(
        directed for *_, directed in rows[:steps]
    )
    shown = json.loads(cli("show", run_id, "--json").stdout)
    assert [s["title"] for s in shown["outline"]["sections"][2]["children"]] == [
        f"Facet {i} of section-3" for i in (1, 2, 3)
    ]


@pytest.mark.slow
def test_sigkill_during_a_command_then_resume_repeats_only_the_request_in_flight(
    corpus_dir: Path, tmp_path: Path
) -> None:
    """Twin runs are deepened, one uninterrupted, one killed at each request of the command in turn
    (the kill lands while the server holds that request); resumed, it asks that request once more
    and nothing else, and ends with the same report."""
    with FakeOpenAIServer(as_responder(MODEL)) as server:
        reference = research(corpus_dir, server.base_url)
        asked = len(server.requests)
        done = cli("deepen", reference, "2", "--base-url", server.base_url)
        assert done.returncode == 0, done.stderr
        command_requests = len(server.requests) - asked
    expected = body(report(reference)).replace(reference, "RUN")
    assert command_requests >= 8  # split, 2 × (search, write), verification, summary, conclusion

    for kill_at in (0, 2, command_requests - 1):  # the split, a subsection's search, the last pass
        victim: dict[str, subprocess.Popen[str]] = {}
        start: dict[str, int] = {}

        def kill_client(
            body: dict[str, Any], index: int, kill_at: int = kill_at, victim: Any = victim, start: Any = start
        ) -> None:
            if "at" in start and index == start["at"] + kill_at:
                os.kill(victim["process"].pid, signal.SIGKILL)

        with FakeOpenAIServer(as_responder(MODEL), on_request=kill_client) as server:
            run_id = research(corpus_dir, server.base_url)
            before = journal_steps(run_id)
            start["at"] = len(server.requests)
            victim["process"] = subprocess.Popen(
                [sys.executable, "-m", "deepdraft", "deepen", run_id, "2", "--base-url", server.base_url],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
            )  # fmt: skip
            assert victim["process"].wait(timeout=120) == -signal.SIGKILL
            assert run_info(run_id)["status"] == "interrupted"
            refused = cli("rewrite", run_id, "1", "--base-url", server.base_url)
            assert (
                refused.returncode == 2
                and f"stopped during `deepen 2`; finish that first with: deepdraft resume {run_id}"
                in refused.stderr
            )

            resumed = cli("resume", run_id, "--base-url", server.base_url)
            assert resumed.returncode == 0, resumed.stderr
            requests = server.requests[start["at"] :]
            assert len(requests) == command_requests + 1  # only the request in flight was asked again
            assert requests[kill_at] == requests[kill_at + 1]
        assert run_info(run_id)["status"] == "finished"
        assert body(report(run_id)).replace(run_id, "RUN") == expected
        rows = journal_steps(run_id)
        assert rows[: len(before)] == before
        assert [row[0] for row in rows] == list(range(1, len(rows) + 1))


@pytest.mark.slow
def test_bad_commands_are_refused_in_one_line(corpus_dir: Path) -> None:
    with FakeOpenAIServer(as_responder(MODEL)) as server:
        run_id = research(corpus_dir, server.base_url)
        asked = len(server.requests)
        cases = {
            ("deepen", run_id, "7"): f"error: run {run_id} has no section 7 (its sections are 1–3; see: deepdraft show {run_id})",
            ("deepen", run_id, "1", "--into", "9"): "error: --into must be between 2 and 7 (got 9)",
            ("deepen", run_id, "section-x"): 'error: "section-x" is not a section number; use one as the report prints it, e.g. 3 or 3.2',
            ("rewrite", "no-such-run", "1"): "error: no run with id no-such-run (see `deepdraft runs`)",
            ("recheck", run_id, "4.1"): f"error: run {run_id} has no section 4.1",
        }  # fmt: skip
        for args, message in cases.items():
            result = cli(*args, "--base-url", server.base_url)
            assert result.returncode == 2, (args, result.stderr)
            assert result.stderr.strip().splitlines() == [result.stderr.strip()]  # one line, no traceback
            assert result.stderr.startswith(message), (args, result.stderr)

        # A run some process is driving right now (its lock is held) takes no command.
        with (Path(os.environ["DEEPDRAFT_HOME"]) / "runs" / run_id / "lock").open("a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            with sqlite3.connect(Path(os.environ["DEEPDRAFT_HOME"]) / "journal.sqlite") as db:
                db.execute("UPDATE runs SET status = 'continuing' WHERE id = ?", (run_id,))
            busy = cli("recheck", run_id, "--base-url", server.base_url)
            assert busy.returncode == 2
            assert (
                busy.stderr.strip()
                == f"error: run {run_id} is being driven right now; wait until it is finished"
            )
        assert len(server.requests) == asked  # no command asked the model anything
