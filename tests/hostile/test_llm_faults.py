"""Hostile LLM servers: every fault of `fault_server.FAULTS` at every kind of request, and kill -9.

Each case is one probe (its id names the fault and where it struck) and must end one of two ways:
finished — with the report an uninterrupted run writes, wherever the fault only cost retries — or
stopped resumably, with a one-line reason, and then resumed against a working server to the very
report an uninterrupted run writes. The runs are real: `runner.start` with the OpenAI-compatible
client over loopback HTTP, the journal on disk; the kill -9 cases kill a real `python -m deepdraft
research` process at seeded random steps, waiting on the journal, not on the clock.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from deepdraft.errors import LLMError
from deepdraft.run import runner
from deepdraft.settings import Settings
from deepdraft.store.journal import REFUSED_REPLY_KEEP, Journal
from tests.hostile.fault_server import FAULTS, FLOOD_BYTES, EveryCallScenario, FaultServer
from tests.support.request_kinds import Kind
from tests.support.scenario import SOTU_LIKE, WordOverlapRetriever

pytestmark = pytest.mark.slow

QUESTION = "How did presidents argue about tariffs?"
MODEL = EveryCallScenario()
RETRIEVER = WordOverlapRetriever(SOTU_LIKE)
KINDS: tuple[Kind, ...] = (
    "search", "init-plan", "write", "extend-plan", "verify", "repair", "summary", "conclusion"
)  # fmt: skip
"""Every action of the method, and the finishing passes' calls (verify and repair: verification's)."""
CASES = [(fault, kind) for fault in FAULTS for kind in KINDS]
RUN_ID = "under-fire"


def settings(base_url: str, *, timeout_s: float = 30.0) -> Settings:
    # Fast retries come from the settings: two more tries, 10 ms apart (a 429's Retry-After is
    # still honoured as sent).
    return Settings.model_validate(
        {
            "llm": {
                "base_url": base_url,
                "model": "fake-model",
                "timeout_s": timeout_s,
                "max_retries": 2,
                "retry_backoff_s": 0.01,
            }
        }
    )


def comparable(markdown: str) -> str:
    """The report without its About block (run id, timings), which differs between any two runs."""
    body, about, _ = markdown.partition("<details>")
    assert about, "the report has no About block"
    return body


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> str:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DEEPDRAFT_HOME", str(tmp_path_factory.mktemp("reference")))
        with FaultServer(MODEL) as server:
            report = runner.start(QUESTION, settings(server.base_url), retriever=RETRIEVER)
        assert set(KINDS) <= set(server.kinds), "the scenario must reach every kind of request"
    return comparable(report.markdown)


@pytest.mark.parametrize(("fault", "kind"), CASES, ids=[f"{fault}-at-{kind}" for fault, kind in CASES])
def test_an_llm_fault_ends_finished_or_resumably(fault: str, kind: Kind, reference: str) -> None:
    spec = FAULTS[fault]
    stopped: LLMError | None = None
    with FaultServer(MODEL, fault, kind) as server:
        # 1 s: short enough to meet a hang soon, long enough that a busy machine's slow answer is
        # not taken for one (the other faults keep a timeout they never come near).
        config = settings(server.base_url, timeout_s=1.0 if spec.needs_short_timeout else 30.0)
        try:
            report = runner.start(QUESTION, config, retriever=RETRIEVER, run_id=RUN_ID)
        except LLMError as exc:
            stopped = exc
        assert server.injected == 1, "the fault never struck"

    if stopped is None:
        assert spec.outcome != "resumed", f"{fault} should have stopped the run"  # not the server's doing
        if spec.outcome == "same":
            assert comparable(report.markdown) == reference
        else:
            # The report may differ: a refused repair falls back to re-citing or removing its sentence,
            # a refused deepening decision spends one of the run's expansions.
            assert report.path is not None and report.path.is_file()
            assert runner.load_run(RUN_ID)[0].status == "finished"
    else:
        message = str(stopped)
        assert spec.outcome in ("resumed", "either"), f"the run stopped: {message}"
        assert "\n" not in message and "Error(" not in message and "<" not in message
        record, _ = runner.load_run(RUN_ID)
        assert record.status == "failed" and record.error == message
        with FaultServer(MODEL) as healthy:
            resumed = runner.resume(RUN_ID, settings(healthy.base_url), retriever=RETRIEVER)
        assert comparable(resumed.markdown) == reference

    journal_file = Path(os.environ["DEEPDRAFT_HOME"]) / "journal.sqlite"
    with Journal(journal_file) as journal:
        longest = max(len(step.reply) for step in journal.steps(RUN_ID))
    if fault == "reply-40mb":  # refused, re-asked, and kept in part, once
        assert longest < REFUSED_REPLY_KEEP + 100
        assert journal_file.stat().st_size < 1.25 * FLOOD_BYTES


# ---- kill -9 ---------------------------------------------------------------------------------------

REQUESTS_PER_RUN = 23  # over the speeches: 14 actions, 2 verifications, 5 repairs, a summary and a conclusion
# Kill points are request numbers: the kill comes once that many steps are journaled, and the next
# request is held until it has come (steps outnumber requests: some finishing steps ask nothing).
POLICY_REQUESTS = 14
_rng = random.Random(20261206)
# Seeded: two kill points among the method's actions, one in the finishing passes.
KILL_AFTER = sorted(
    [*_rng.sample(range(1, POLICY_REQUESTS), 2), _rng.randrange(POLICY_REQUESTS, REQUESTS_PER_RUN)]
)


def research(corpus: Path, base_url: str, output: Path) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "deepdraft", "research", QUESTION, "--kb", str(corpus),
               "--base-url", base_url, "--model", "fake-model", "--output", str(output)]  # fmt: skip
    return subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True
    )


def recorded_steps(home: Path) -> list[int]:
    path = home / "journal.sqlite"
    if not path.exists():
        return []
    with sqlite3.connect(path, timeout=30) as db:
        try:
            return [row[0] for row in db.execute("SELECT step FROM steps ORDER BY step")]
        except sqlite3.OperationalError:  # the schema is still being created
            return []


def only_run(home: Path) -> tuple[str, str]:
    with sqlite3.connect(home / "journal.sqlite") as db:
        rows = db.execute("SELECT id, status FROM runs").fetchall()
    assert len(rows) == 1
    return rows[0][0], rows[0][1]


def report_text(path: Path, corpus: Path) -> str:
    return comparable(path.read_text(encoding="utf-8").replace(str(corpus.resolve()), "<corpus>"))


@pytest.fixture(scope="module")
def killed_reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, list[int]]:
    """The report of an uninterrupted `deepdraft research` process, and the steps it journaled."""
    from tests.conftest import SPEECHES

    folder = tmp_path_factory.mktemp("kill-reference")
    corpus = folder / "corpus"
    corpus.mkdir()
    for name, text in SPEECHES.items():
        (corpus / name).write_text(text + "\n", encoding="utf-8")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DEEPDRAFT_HOME", str(folder / "home"))
        with FaultServer(MODEL) as server:
            process = research(corpus, server.base_url, folder / "report.md")
            _, stderr = process.communicate(timeout=120)
            assert process.returncode == 0, stderr
            assert len(server.requests) == REQUESTS_PER_RUN
        steps = recorded_steps(folder / "home")
    return report_text(folder / "report.md", corpus), steps


@pytest.mark.parametrize("after", KILL_AFTER, ids=[f"kill-9-after-step-{k}" for k in KILL_AFTER])
def test_kill_9_then_resume_gives_the_uninterrupted_report(
    after: int,
    corpus_dir: Path,
    tmp_path: Path,
    isolated_workspace: Path,
    killed_reference: tuple[str, list[int]],
) -> None:
    expected_report, expected_steps = killed_reference
    output = tmp_path / "report.md"
    killed = threading.Event()

    def hold_the_next_call(body: dict[str, Any], index: int) -> None:
        # The run cannot get past the call after step `after` until it is killed: the kill lands
        # somewhere after that step's checkpoint — searching, writing the prompt or waiting here.
        if index == after:
            killed.wait(timeout=60)

    with FaultServer(MODEL) as server:
        server.on_request = hold_the_next_call
        process = research(corpus_dir, server.base_url, output)
        while len(recorded_steps(isolated_workspace)) < after and process.poll() is None:
            time.sleep(0.005)  # polling the journal's state, not waiting for a moment
        os.kill(process.pid, signal.SIGKILL)
        assert process.wait(timeout=60) == -signal.SIGKILL
        killed.set()
        run_id, status = only_run(isolated_workspace)
        assert status in ("running", "interrupted") and recorded_steps(isolated_workspace)[:after] == list(
            range(1, after + 1)
        )

        resume = [sys.executable, "-m", "deepdraft", "resume", run_id, "--base-url", server.base_url]
        resumed = subprocess.run(
            resume, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL
        )
        assert resumed.returncode == 0, resumed.stderr
        # Nothing finished is asked again: at most the call in flight at the kill.
        assert len(server.requests) <= REQUESTS_PER_RUN + 1

    assert report_text(output, corpus_dir) == expected_report
    assert recorded_steps(isolated_workspace) == expected_steps  # each step once, none lost
    assert only_run(isolated_workspace)[1] == "finished"
