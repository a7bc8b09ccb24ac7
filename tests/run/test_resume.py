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
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import pytest

from tests.cli.test_cli import NO_FINISHING, cli
from tests.support.openai_server import FakeOpenAIServer
from tests.support.scenario import ScenarioModel, as_responder

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
            # Somewhere in the run — in a call, a checkpoint, a write: after a random number of
            # requests (a state, not a duration: scripted runs take a fraction of a second), then a
            # random instant of up to 20 ms.
            asked = rng.randrange(1, 12)
            deadline = time.monotonic() + 60
            while len(server.requests) < asked and process.poll() is None and time.monotonic() < deadline:
                time.sleep(0.002)
            time.sleep(rng.uniform(0.0, 0.02))
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


@contextmanager
def ctrl_c_reaches_children() -> Iterator[None]:
    """Children started inside get SIGINT at its default, whatever pytest itself was started with.

    A shell script without job control starts its background jobs with SIGINT ignored (so that a
    Ctrl-C meant for the foreground spares them), every child inherits that, and a Python program
    started so ignores SIGINT for good. Tests that play a user pressing Ctrl-C must not depend on
    how pytest was launched: a handler installed here is reset to the default in the child.
    """
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@pytest.mark.slow
def test_ctrl_c_marks_the_run_interrupted_and_resume_finishes_it(
    corpus_dir: Path, tmp_path: Path, reference_report: tuple[str, int]
) -> None:
    expected, requests_per_run = reference_report
    output = tmp_path / "report.md"
    interrupt_at = 6
    victim: dict[str, subprocess.Popen[str]] = {}

    def interrupt(body: dict[str, Any], index: int) -> None:
        if index == interrupt_at:
            victim["process"].send_signal(signal.SIGINT)
            # No reply until the client is gone: Ctrl-C must stop it while it waits for this one.
            # (If it does not stop, the reply goes out after the timeout and the checks below fail.)
            with suppress(subprocess.TimeoutExpired):
                victim["process"].wait(timeout=60)

    with FakeOpenAIServer(as_responder(MODEL), on_request=interrupt) as server:
        with ctrl_c_reaches_children():
            victim["process"] = start_research(corpus_dir, server.base_url, output)
        _, stderr = victim["process"].communicate(timeout=120)
        run = only_run()
        assert victim["process"].returncode == 130, stderr
        assert f"interrupted — continue with: deepdraft resume {run['id']}" in stderr
        assert "Traceback" not in stderr
        assert run["status"] == "interrupted" and run["steps"] == interrupt_at
        assert len(server.requests) == interrupt_at + 1  # nothing was asked after the interrupt

        assert cli("resume", run["id"], "--base-url", server.base_url).returncode == 0
        # Only the request that was waiting for its reply is asked again.
        assert len(server.requests) == requests_per_run + 1
    assert comparable(output, corpus_dir) == expected
    assert only_run()["status"] == "finished"


def test_resume_of_a_finished_run_says_so_and_changes_nothing(corpus_dir: Path, tmp_path: Path) -> None:
    output = tmp_path / "report.md"
    with FakeOpenAIServer(as_responder(ScenarioModel(expansions=0))) as server:
        assert cli("research", QUESTION, "--kb", str(corpus_dir), "--base-url", server.base_url,
                   "--output", str(output)).returncode == 0  # fmt: skip
        run_id = only_run()["id"]
        events = journal_events(run_id)
        report = output.read_bytes()
        count = len(server.requests)
        for _ in range(2):
            resumed = cli("resume", run_id, "--base-url", server.base_url)
            assert resumed.returncode == 0, resumed.stderr
            assert resumed.stdout.strip().splitlines() == [
                f"run {run_id} is already finished (report: {output}); nothing to resume "
                f"(deepdraft export {run_id} writes its report again)"
            ]
        assert len(server.requests) == count
    # No second run_started / run_finished pair: the event stream still ends with the one finish.
    assert journal_events(run_id) == events
    assert [kind for kind in events if kind in ("run_started", "run_finished")] == [
        "run_started",
        "run_finished",
    ]
    assert output.read_bytes() == report and only_run()["status"] == "finished"


def test_the_python_api_refuses_to_drive_a_finished_run_again(corpus_dir: Path) -> None:
    from deepdraft.errors import RunAlreadyFinished
    from deepdraft.llm.scripted import FunctionLLM
    from deepdraft.run import runner
    from deepdraft.settings import Settings

    settings = Settings.model_validate({"output": {"verify": False, "synthesis": False}})
    llm = FunctionLLM(ScenarioModel(expansions=0))
    report = runner.start(QUESTION, settings, kb=str(corpus_dir), llm=llm)
    asked = len(llm.requests)
    with pytest.raises(RunAlreadyFinished, match="already finished"):
        runner.resume(report.run_id, settings, llm=llm)
    assert len(llm.requests) == asked


def journal_events(run_id: str) -> list[str]:
    home = Path(os.environ["DEEPDRAFT_HOME"])
    with sqlite3.connect(home / "journal.sqlite") as db:
        rows = db.execute("SELECT kind FROM events WHERE run_id = ? ORDER BY seq", (run_id,))
        return [row[0] for row in rows]
