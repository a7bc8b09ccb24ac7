"""The live terminal display follows the event stream: outline, current action, counts."""

from __future__ import annotations

import io

from rich.console import Console

from deepdraft.cli.progress import Progress
from deepdraft.core.state import RunState
from deepdraft.llm.scripted import FunctionLLM
from deepdraft.policy.warp import WarpPolicy
from deepdraft.settings import ResearchSettings
from tests.support.scenario import SOTU_LIKE, ScenarioModel, WordOverlapRetriever


def drive(console: Console) -> Progress:
    with Progress(console, max_steps=140) as progress:
        WarpPolicy(
            FunctionLLM(ScenarioModel(expansions=1)),
            WordOverlapRetriever(SOTU_LIKE),
            ResearchSettings(),
            progress.update,
        ).run(RunState(question="How did presidents argue about tariffs?"))
    return progress


def test_terminal_display_shows_the_grown_outline_and_counts() -> None:
    console = Console(file=io.StringIO(), force_terminal=True, width=120, record=True)
    progress = drive(console)
    screen = console.export_text()
    assert "A report on tariffs" in screen
    assert "✓ 1.1 Detail 1 of 1" in screen and "✓ 3 Part late" in screen
    assert "step 14/140" in screen
    assert progress.written == 5 and len(progress.sources) >= 2


def test_plain_output_prints_one_line_per_action() -> None:
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=False, width=200)
    drive(console)
    lines = buffer.getvalue().splitlines()
    assert lines[0] == "step 1/140 search outline: ok"
    assert lines[-1] == "step 14/140 extend-plan outline: ok"
    assert len(lines) == 14


def test_the_step_budget_shown_is_the_runs_own() -> None:
    """The CLI cannot know the budget a depth preset will give; the run says so when it starts."""
    from deepdraft.events import ActionFinished, RunStarted, StepRecord

    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=False, width=200)
    with Progress(console, max_steps=140) as progress:
        progress.update(RunStarted("r1", "q", "warp", 0, max_steps=22))
        record = StepRecord(1, "search", "p", "r", None, True, None, 1, 1, 0.0, 0.0, False, "outline")
        progress.update(ActionFinished(record, {}))
    assert buffer.getvalue().splitlines() == ["run r1", "step 1/22 search outline: ok"]


def test_finishing_passes_are_not_counted_against_the_step_budget() -> None:
    from deepdraft.events import ActionFinished, RunStarted, StepRecord

    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=False, width=200)
    with Progress(console, max_steps=140) as progress:
        progress.update(RunStarted("r1", "q", "warp", 0, max_steps=22))
        write = StepRecord(22, "write", "p", "r", None, True, None, 1, 1, 0.0, 0.0, False, "section-3")
        summary = StepRecord(
            23, "summary", "p", "r", None, False, "no citations", 1, 1, 0.0, 0.0, False, "report"
        )
        progress.update(ActionFinished(write, {}))
        progress.update(ActionFinished(summary, {}))
    assert buffer.getvalue().splitlines()[1:] == [
        "step 22/22 write section-3: ok",
        "finishing: summary report: refused: no citations",
    ]


def test_batch_display_counts_lines_and_tokens() -> None:
    from deepdraft.cli.progress import BatchProgress
    from deepdraft.run.batch import LineState

    console = Console(file=io.StringIO(), force_terminal=True, width=120, record=True)
    with BatchProgress(console, total=3) as progress:
        for line_id in ("a", "b", "c"):
            progress.line(LineState(line_id, "q"))
        progress.line(LineState("a", "q", status="running"))
        progress.line(LineState("b", "q", status="running"))
        progress.line(LineState("a", "q", status="finished", prompt_tokens=900, completion_tokens=100))
        progress.line(LineState("b", "q", status="failed", error="boom"))
        assert progress.counts() == {"finished": 1, "running": 0, "failed": 1}
        assert progress.eta() != "-"
        console.print(progress._render())
    screen = console.export_text()
    assert "done 1/3" in screen and "failed 1" in screen and "tokens 1,000" in screen


def test_batch_plain_output_prints_one_line_per_ended_line() -> None:
    from deepdraft.cli.progress import BatchProgress
    from deepdraft.run.batch import LineState

    buffer = io.StringIO()
    with BatchProgress(Console(file=buffer, force_terminal=False, width=200), total=1) as progress:
        progress.line(LineState("a", "q"))
        progress.line(LineState("a", "q", status="running"))
        progress.line(LineState("a", "q", status="failed", error="the server fell over", seconds=3))
    assert buffer.getvalue() == "a: failed (3 s, 0 tokens) the server fell over\n"
