"""Ctrl-C stops a run resumably, even where Python cannot raise it (see `deepdraft.run.interrupts`).

The runs here are in-process, in pytest's main thread, so the SIGINT handler a run installs is the
real one; the signal is sent to this very process with `signal.raise_signal` at exactly the moment
under test. The end-to-end Ctrl-C of a `deepdraft research` process is in test_resume.py.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer

from deepdraft.cli import app as cli
from deepdraft.config import load_settings
from deepdraft.llm.scripted import FunctionLLM
from deepdraft.ports import ChatRequest
from deepdraft.run import runner
from deepdraft.run.interrupts import ctrl_c_recorded
from deepdraft.settings import Settings
from tests.support.scenario import SOTU_LIKE, ScenarioModel, WordOverlapRetriever

QUESTION = "How did presidents argue about tariffs?"


class CtrlCInAFinalizer:
    """Presses Ctrl-C while Python runs this object's finalizer.

    That is where a real Ctrl-C lands when the garbage collector happens to close an HTTP response
    stream or a client at that instant: the KeyboardInterrupt cannot leave a finalizer, so Python
    reports it as "Exception ignored" and the program carries on.
    """

    def __del__(self) -> None:
        signal.raise_signal(signal.SIGINT)


@pytest.fixture
def swallowed(monkeypatch: pytest.MonkeyPatch) -> list[type[BaseException]]:
    """The exceptions Python reported as unraisable (and so dropped) during the test."""
    dropped: list[type[BaseException]] = []

    def record(unraisable: Any) -> None:
        dropped.append(unraisable.exc_type)

    monkeypatch.setattr(sys, "unraisablehook", record)
    return dropped


@pytest.fixture
def default_ctrl_c() -> Iterator[None]:
    """SIGINT as a Python program normally has it, even if pytest was started with it ignored."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def settings() -> Settings:
    return load_settings(flags={"research": {"depth": "standard"}, "output": {"verify": False}})


def test_a_ctrl_c_lost_in_a_finalizer_still_stops_the_run_before_its_next_action(
    isolated_workspace: Path, swallowed: list[type[BaseException]], default_ctrl_c: None
) -> None:
    scenario = ScenarioModel(expansions=1)

    def interrupted_at_the_third_call(request: ChatRequest) -> str:
        if request.tag == "step-3":
            CtrlCInAFinalizer()  # dropped at once: the Ctrl-C lands in its finalizer
        return scenario(request)

    llm = FunctionLLM(interrupted_at_the_third_call)
    retriever = WordOverlapRetriever(SOTU_LIKE)
    run_id = runner.new_run_id()
    with pytest.raises(KeyboardInterrupt):
        runner.start(QUESTION, settings(), llm=llm, retriever=retriever, run_id=run_id)
    assert swallowed == [KeyboardInterrupt]  # Python itself dropped it, as it does for a real Ctrl-C there
    record, _ = runner.load_run(run_id)
    # The third action had its reply and was kept; the fourth was never asked.
    assert record.status == "interrupted" and record.steps == 3
    assert [r.tag for r in llm.requests] == ["step-1", "step-2", "step-3"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the run's handler is gone

    report = runner.resume(run_id, settings(), llm=FunctionLLM(scenario), retriever=retriever)
    assert runner.load_run(run_id)[0].status == "finished"
    assert all(section.content for section in report.outline.sections)


def test_a_ctrl_c_lost_after_the_last_action_keeps_the_report_unwritten(
    isolated_workspace: Path, swallowed: list[type[BaseException]], default_ctrl_c: None, tmp_path: Path
) -> None:
    scenario = ScenarioModel(expansions=0)

    def interrupted_at_the_last_call(request: ChatRequest) -> str:
        reply = scenario(request)
        if '"nop"' in reply:  # the policy's last action: it decides not to deepen
            CtrlCInAFinalizer()
        return reply

    output = tmp_path / "report.md"
    run_id = runner.new_run_id()
    with pytest.raises(KeyboardInterrupt):
        runner.start(
            QUESTION,
            settings(),
            llm=FunctionLLM(interrupted_at_the_last_call),
            retriever=WordOverlapRetriever(SOTU_LIKE),
            run_id=run_id,
            output=output,
        )
    assert swallowed == [KeyboardInterrupt]
    assert runner.load_run(run_id)[0].status == "interrupted" and not output.exists()


def test_ctrl_c_while_the_report_is_written_leaves_a_run_that_resume_finishes(
    isolated_workspace: Path, default_ctrl_c: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_report = runner._write_report

    def interrupted_while_writing(*args: Any) -> runner.Report:
        signal.raise_signal(signal.SIGINT)
        raise AssertionError("Ctrl-C did not raise")

    monkeypatch.setattr(runner, "_write_report", interrupted_while_writing)
    llm = FunctionLLM(ScenarioModel(expansions=0))
    retriever = WordOverlapRetriever(SOTU_LIKE)
    run_id = runner.new_run_id()
    with pytest.raises(KeyboardInterrupt):
        runner.start(QUESTION, settings(), llm=llm, retriever=retriever, run_id=run_id)
    assert runner.load_run(run_id)[0].status == "interrupted"

    monkeypatch.setattr(runner, "_write_report", write_report)
    asked = len(llm.requests)
    report = runner.resume(run_id, settings(), llm=llm, retriever=retriever)
    assert report.path is not None and report.path.is_file()
    assert len(llm.requests) == asked  # every action was kept: only the report was written
    assert runner.load_run(run_id)[0].status == "finished"


def test_ctrl_c_during_a_call_raises_there_and_marks_the_run_interrupted(
    isolated_workspace: Path, default_ctrl_c: None
) -> None:
    scenario = ScenarioModel(expansions=1)
    replies_after_the_interrupt: list[str] = []

    def interrupted_in_the_second_call(request: ChatRequest) -> str:
        if request.tag == "step-2":
            signal.raise_signal(signal.SIGINT)
            replies_after_the_interrupt.append(request.tag)  # never reached: it raised right here
        return scenario(request)

    run_id = runner.new_run_id()
    llm = FunctionLLM(interrupted_in_the_second_call)
    with pytest.raises(KeyboardInterrupt):
        runner.start(QUESTION, settings(), llm=llm, retriever=WordOverlapRetriever(SOTU_LIKE), run_id=run_id)
    assert replies_after_the_interrupt == []
    record, _ = runner.load_run(run_id)
    assert record.status == "interrupted" and record.steps == 1


def test_the_handler_records_every_ctrl_c_and_is_removed_afterwards(default_ctrl_c: None) -> None:
    with ctrl_c_recorded() as pressed:
        assert not pressed.is_set()
        for _ in range(2):  # a second Ctrl-C raises again, at once
            with pytest.raises(KeyboardInterrupt):
                signal.raise_signal(signal.SIGINT)
        assert pressed.is_set()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_an_ignored_ctrl_c_stays_ignored() -> None:
    """A background job of a shell script starts with SIGINT ignored, and must survive Ctrl-C."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with ctrl_c_recorded() as pressed:
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
            signal.raise_signal(signal.SIGINT)
        assert not pressed.is_set()
    finally:
        signal.signal(signal.SIGINT, previous)


def test_outside_the_main_thread_the_handler_is_left_alone(default_ctrl_c: None) -> None:
    seen: list[object] = []

    def in_a_worker() -> None:  # e.g. a run in the server's worker pool, stopped by its cancel event
        with ctrl_c_recorded() as pressed:
            seen.extend([signal.getsignal(signal.SIGINT), pressed.is_set()])

    worker = threading.Thread(target=in_a_worker)
    worker.start()
    worker.join()
    assert seen == [signal.default_int_handler, False]


def test_an_interrupt_before_the_run_was_recorded_offers_no_resume(
    isolated_workspace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def interrupted_while_indexing() -> runner.Report:
        raise KeyboardInterrupt

    with pytest.raises(typer.Exit) as stopped:
        cli._interruptible("20260101-000000-abcdef", interrupted_while_indexing)
    assert stopped.value.exit_code == 130
    error = capsys.readouterr().err
    assert "interrupted before the run started; nothing to resume" in error
    assert "deepdraft resume" not in error
