"""Crash safety: a run killed at any moment is resumed without redoing work and ends identically.

The model behind the loopback server answers from the prompt's content (`ScenarioModel`), so the
same question always gets the same replies, in any process. The kill is a real SIGKILL of the
`deepdraft research` process, sent by the server while it holds that process's LLM request.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support.openai_server import FakeOpenAIServer
from tests.support.scenario import ScenarioModel, as_responder
from tests.test_cli import NO_FINISHING, cli

QUESTION = "How did presidents argue about tariffs?"
MODEL = ScenarioModel(expansions=2)


def research_command(corpus: Path, base_url: str, output: Path) -> list[str]:
    return [sys.executable, "-m", "deepdraft", "research", QUESTION, "--kb", str(corpus),
            "--base-url", base_url, "--model", "fake-model", "--output", str(output), *NO_FINISHING]  # fmt: skip


def start_research(corpus: Path, base_url: str, output: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        research_command(corpus, base_url, output),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )


def only_run() -> dict[str, Any]:
    runs = json.loads(cli("runs", "--json").stdout)
    assert len(runs) == 1
    return runs[0]  # type: ignore[no-any-return]


def journal_steps(home: Path, run_id: str) -> list[int]:
    with sqlite3.connect(home / "journal.sqlite") as db:
        return [
            row[0] for row in db.execute("SELECT step FROM steps WHERE run_id = ? ORDER BY step", (run_id,))
        ]


@pytest.fixture(scope="module")
def reference_report(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, int]:
    """The report of an uninterrupted run, and how many LLM requests it made."""
    from tests.conftest import SPEECHES

    folder = tmp_path_factory.mktemp("reference")
    corpus = folder / "corpus"
    corpus.mkdir()
    for name, text in SPEECHES.items():
        (corpus / name).write_text(text + "\n", encoding="utf-8")
    env = dict(os.environ, DEEPDRAFT_HOME=str(folder / "home"))
    with FakeOpenAIServer(as_responder(MODEL)) as server:
        result = subprocess.run(
            research_command(corpus, server.base_url, folder / "report.md"),
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        count = len(server.requests)
    return comparable(folder / "report.md", corpus), count


def comparable(report: Path, corpus: Path) -> str:
    """The report as two runs of the same actions must agree on it.

    The corpus path is part of the References, so it is replaced; the About block at the end holds
    the run id and wall time, which differ between runs (it must still be there).
    """
    text = report.read_text(encoding="utf-8").replace(str(corpus.resolve()), "<corpus>")
    body, about, _ = text.partition("<details>")
    assert about, "the report has no About block"
    return body


@pytest.mark.slow
def test_sigkill_during_every_llm_call_then_resume_gives_the_same_report(
    corpus_dir: Path, tmp_path: Path, isolated_workspace: Path, reference_report: tuple[str, int]
) -> None:
    expected, requests_per_run = reference_report
    assert requests_per_run == 19  # 3 sections, 2 splits of 2 subsections, then nop
    for kill_at in range(requests_per_run):
        output = tmp_path / f"report-{kill_at}.md"
        victim: dict[str, subprocess.Popen[str]] = {}

        def kill_client(
            body: dict[str, Any], index: int, kill_at: int = kill_at, victim: dict[str, Any] = victim
        ) -> None:
            if index == kill_at:
                os.kill(victim["process"].pid, signal.SIGKILL)

        with FakeOpenAIServer(as_responder(MODEL), on_request=kill_client) as server:
            victim["process"] = start_research(corpus_dir, server.base_url, output)
            assert victim["process"].wait(timeout=120) == -signal.SIGKILL
            run = only_run()
            assert run["status"] == "interrupted" and run["steps"] == kill_at

            resumed = cli("resume", run["id"], "--base-url", server.base_url)
            assert resumed.returncode == 0, resumed.stderr
            # Only the request in flight at the kill is asked again; no finished action is redone.
            assert len(server.requests) == requests_per_run + 1

        assert comparable(output, corpus_dir) == expected
        assert journal_steps(isolated_workspace, run["id"]) == list(range(1, requests_per_run + 1))
        assert only_run()["status"] == "finished"
        cleanup_runs(isolated_workspace)


def cleanup_runs(home: Path) -> None:
    (home / "journal.sqlite").unlink()
    for suffix in ("-wal", "-shm"):
        Path(f"{home / 'journal.sqlite'}{suffix}").unlink(missing_ok=True)


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume(
    corpus_dir: Path, tmp_path: Path, isolated_workspace: Path, reference_report: tuple[str, int]
) -> None:
    expected, _ = reference_report
    rng = random.Random(20261129)
    interrupted = 0
    for attempt in range(4):
        output = tmp_path / f"random-{attempt}.md"
        with FakeOpenAIServer(as_responder(MODEL)) as server:
            process = start_research(corpus_dir, server.base_url, output)
            deadline = time.monotonic() + 60
            while not server.requests and time.monotonic() < deadline:
                time.sleep(0.01)
            time.sleep(rng.uniform(0.0, 0.4))  # somewhere in the run: in a call, a checkpoint, a write
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=60)
            run = only_run()
            if run["status"] != "finished":
                interrupted += 1
                resumed = cli("resume", run["id"], "--base-url", server.base_url)
                assert resumed.returncode == 0, resumed.stderr
        assert comparable(output, corpus_dir) == expected
        cleanup_runs(isolated_workspace)
    assert interrupted >= 2, "the kills should mostly land inside the run"


@pytest.mark.slow
def test_ctrl_c_marks_the_run_interrupted_and_resume_finishes_it(
    corpus_dir: Path, tmp_path: Path, reference_report: tuple[str, int]
) -> None:
    expected, _ = reference_report
    output = tmp_path / "report.md"
    victim: dict[str, subprocess.Popen[str]] = {}

    def interrupt(body: dict[str, Any], index: int) -> None:
        if index == 6:
            os.kill(victim["process"].pid, signal.SIGINT)
            time.sleep(0.5)  # let the signal land before the reply does

    with FakeOpenAIServer(as_responder(MODEL), on_request=interrupt) as server:
        victim["process"] = start_research(corpus_dir, server.base_url, output)
        assert victim["process"].wait(timeout=120) == 130
        _, stderr = victim["process"].communicate()
        assert "deepdraft resume" in stderr and "Traceback" not in stderr
        run = only_run()
        assert run["status"] == "interrupted"
        assert cli("resume", run["id"], "--base-url", server.base_url).returncode == 0
    assert comparable(output, corpus_dir) == expected


def test_resume_of_a_finished_run_only_rewrites_the_report(corpus_dir: Path, tmp_path: Path) -> None:
    output = tmp_path / "report.md"
    with FakeOpenAIServer(as_responder(ScenarioModel(expansions=0))) as server:
        assert cli("research", QUESTION, "--kb", str(corpus_dir), "--base-url", server.base_url,
                   "--output", str(output)).returncode == 0  # fmt: skip
        first = comparable(output, corpus_dir)
        output.unlink()
        count = len(server.requests)
        assert cli("resume", only_run()["id"], "--base-url", server.base_url).returncode == 0
        assert len(server.requests) == count
    assert comparable(output, corpus_dir) == first
