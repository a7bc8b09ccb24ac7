"""The run's budgets hold across resumes, and the time budget finishes the report like the others."""

from __future__ import annotations

import os
import sqlite3
import threading
from pathlib import Path

import pytest

from deepdraft.errors import RunCancelled
from deepdraft.events import ActionFinished, Event, EventSink
from deepdraft.llm.scripted import FunctionLLM
from deepdraft.run import runner
from deepdraft.settings import Settings
from tests.cli.test_cli import cli
from tests.support.scenario import SOTU_LIKE, ScenarioModel, WordOverlapRetriever

QUESTION = "How did presidents argue about tariffs?"


def settings(**research: object) -> Settings:
    return Settings.model_validate(
        {
            "llm": {"max_tokens_total": 6000},
            "research": research,
            "output": {"verify": False, "synthesis": False},
        }
    )


def steps_and_tokens(run_id: str) -> tuple[int, int]:
    with sqlite3.connect(Path(os.environ["DEEPDRAFT_HOME"]) / "journal.sqlite") as db:
        row = db.execute(
            "SELECT count(*), sum(prompt_tokens + completion_tokens) FROM steps WHERE run_id = ?", (run_id,)
        ).fetchone()
    return int(row[0]), int(row[1])


def stopped_after(steps: int) -> tuple[threading.Event, EventSink]:
    cancel = threading.Event()
    done = [0]

    def on_event(event: Event) -> None:
        if isinstance(event, ActionFinished):
            done[0] += 1
            if done[0] == steps:
                cancel.set()

    return cancel, on_event


def test_the_token_budget_counts_what_earlier_sessions_spent() -> None:
    retriever = WordOverlapRetriever(SOTU_LIKE)
    whole = runner.start(
        QUESTION, settings(), llm=FunctionLLM(ScenarioModel(expansions=5)), retriever=retriever
    )
    assert "token budget of 6,000" in whole.stop_reason  # the budget, not the model, ends this run
    expected = steps_and_tokens(whole.run_id)

    # The same run, stopped three times and resumed: it ends where the uninterrupted one ended.
    # The three sessions take every step but the last, which the crash below needs.
    third = (expected[0] - 1) // 3
    run_id = "stopped-and-resumed"
    for session, stop_at in enumerate((expected[0] - 1 - 2 * third, third, third)):
        cancel, on_event = stopped_after(stop_at)
        llm = FunctionLLM(ScenarioModel(expansions=5))
        with pytest.raises(RunCancelled):
            if session == 0:
                runner.start(QUESTION, settings(), llm=llm, retriever=retriever, cancel=cancel,
                             on_event=on_event, run_id=run_id)  # fmt: skip
            else:
                runner.resume(
                    run_id, settings(), llm=llm, retriever=retriever, cancel=cancel, on_event=on_event
                )
    # Then a crash right after the last step's reply arrived, before its step was journaled: the
    # resume replays that reply from the cache, and it must count (the journal does not hold it yet).
    last_step = expected[0]

    def crash_on_the_last_step(event: Event) -> None:
        if isinstance(event, ActionFinished) and event.record.step == last_step:
            raise Crash

    with pytest.raises(Crash):
        runner.resume(run_id, settings(), llm=FunctionLLM(ScenarioModel(expansions=5)), retriever=retriever,
                      on_event=crash_on_the_last_step)  # fmt: skip
    llm = FunctionLLM(ScenarioModel(expansions=5))
    report = runner.resume(run_id, settings(), llm=llm, retriever=retriever)
    assert llm.requests == []  # the last reply came from the cache, and then the budget was spent
    assert report.stop_reason == whole.stop_reason
    # Before the fix every resume started from zero: the resumed run took more steps and tokens.
    assert steps_and_tokens(run_id) == expected


class Crash(Exception):
    """The process dies here (as far as the run can tell: nothing after it is journaled)."""


def test_a_spent_time_budget_finishes_the_report_from_what_exists() -> None:
    retriever = WordOverlapRetriever(SOTU_LIKE)
    run_id = "slow-run"
    cancel, on_event = stopped_after(6)
    with pytest.raises(RunCancelled):
        runner.start(QUESTION, settings(max_time="1m"), llm=FunctionLLM(ScenarioModel(expansions=5)),
                     retriever=retriever, cancel=cancel, on_event=on_event, run_id=run_id)  # fmt: skip
    # That session ran for 70 s, as the journal's timestamps tell (moved back: no test waits a minute).
    with sqlite3.connect(Path(os.environ["DEEPDRAFT_HOME"]) / "journal.sqlite") as db:
        db.execute("UPDATE events SET created_at = created_at - 70 WHERE run_id = ? AND seq = 1", (run_id,))
    llm = FunctionLLM(ScenarioModel(expansions=5))
    report = runner.resume(run_id, settings(max_time="1m"), llm=llm, retriever=retriever)
    assert llm.requests == []  # past the budget: nothing more is asked
    assert report.stop_reason.startswith("the time budget of 1m is spent (1m 1")
    assert report.path is not None and "run stopped: the time budget of 1m is spent" in report.markdown
    assert steps_and_tokens(run_id)[0] == 6


def test_an_unspent_time_budget_changes_nothing() -> None:
    retriever = WordOverlapRetriever(SOTU_LIKE)
    plain = runner.start(
        QUESTION, settings(), llm=FunctionLLM(ScenarioModel(expansions=1)), retriever=retriever
    )
    timed = runner.start(
        QUESTION, settings(max_time="2h"), llm=FunctionLLM(ScenarioModel(expansions=1)), retriever=retriever
    )
    assert timed.stop_reason == plain.stop_reason and "time" not in timed.stop_reason


@pytest.mark.parametrize("given", ["soon", "10x", "-5m", "0"])
def test_a_bad_max_time_is_one_clear_line(given: str) -> None:
    result = cli("research", QUESTION, "--base-url", "http://127.0.0.1:9/v1", "--max-time", given)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: invalid settings: research.max_time: ")
    assert "Traceback" not in result.stderr


def test_batch_takes_max_time_as_every_runs_default_and_reads_it_as_research_does(tmp_path: Path) -> None:
    questions = tmp_path / "q.jsonl"
    result = cli("batch", str(questions), "--base-url", "http://127.0.0.1:9/v1", "--max-time", "soon")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: invalid settings: research.max_time: ")
    assert "Traceback" not in result.stderr
