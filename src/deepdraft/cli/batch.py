"""`deepdraft batch QUESTIONS.jsonl`: one report per line, several runs at once (see `run.batch`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from deepdraft.cli.options import (
    NO_RESEARCH_OPTIONS,
    ConfigOption,
    KbOption,
    RayOption,
    ResearchOptions,
    with_research_options,
)
from deepdraft.cli.progress import BatchProgress
from deepdraft.config import load_settings
from deepdraft.run.batch import STATE_FILE, BatchOutcome, read_questions, run_batch

console = Console()

DEFAULT_ATTEMPTS = 2


def default_out(questions: Path) -> Path:
    """`questions.jsonl` → `questions-reports/` beside it: the same command finds the same folder."""
    return questions.with_name(f"{questions.stem}-reports")


@with_research_options
def batch(
    questions: Annotated[
        Path,
        typer.Argument(
            help='A JSONL file, one {"id", "question"} per line (optional: kb, policy, depth, language, '
            "length)."
        ),
    ],
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help=f"Folder for the reports (ID.md and each --format) and {STATE_FILE} "
            "(default: QUESTIONS-reports beside the file). Re-running with it resumes the batch.",
        ),
    ] = None,
    concurrency: Annotated[
        int | None,
        typer.Option(
            "--concurrency", help="Runs at once (default: 4 with --base-url, 1 with the embedded model)."
        ),
    ] = None,
    attempts: Annotated[
        int,
        typer.Option(
            "--attempts", help="Tries per line in one call (a failed run is resumed, not restarted)."
        ),
    ] = DEFAULT_ATTEMPTS,
    ray: RayOption = None,
    kb: KbOption = None,
    research: ResearchOptions = NO_RESEARCH_OPTIONS,
    config: ConfigOption = None,
) -> None:
    """Write one report per line of QUESTIONS; the research options are every line's defaults."""
    settings = load_settings(config, flags=research.flags())
    lines = read_questions(questions, default_kb=kb)  # every bad line is reported before anything runs
    if concurrency is None:
        concurrency = 4 if settings.llm.base_url else 1  # the embedded model answers one call at a time
    folder = out if out is not None else default_out(questions)
    with BatchProgress(console, len(lines)) as progress:
        outcome = run_batch(
            lines,
            settings,
            folder,
            concurrency=concurrency,
            attempts=attempts,
            default_kb=kb,
            on_line=progress.line,
            on_event=progress.event,
            ray=ray,
        )
    _print_summary(outcome, folder)
    if outcome.interrupted:
        typer.echo("interrupted — run the same command again to continue", err=True)
        raise typer.Exit(130)
    if outcome.failed:
        raise typer.Exit(1)


def _print_summary(outcome: BatchOutcome, folder: Path) -> None:
    columns = ("id", "status", "run", "tries", "seconds", "tokens", "report or error")
    rows = [
        (
            line.id,
            line.status,
            line.run_id,
            str(line.attempts),
            f"{line.seconds:.0f}",
            f"{line.tokens:,}",
            line.reports.get("md", "") if line.status == "finished" else line.error,
        )
        for line in outcome.lines
    ]
    if console.is_terminal:
        table = Table(box=None)
        for column in columns:
            table.add_column(column, no_wrap=column != "report or error", overflow="fold")
        for row in rows:
            table.add_row(*map(escape, row))
        console.print(table)
    else:  # pipes and logs get whole values, one line per question
        for row in rows:
            typer.echo("\t".join(row))
    finished = sum(1 for line in outcome.lines if line.status == "finished")
    tokens = sum(line.tokens for line in outcome.lines)
    console.print(
        f"{finished}/{len(outcome.lines)} reports in {folder} ({tokens:,} tokens); "
        f"state: {folder / STATE_FILE}",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    if outcome.failed and not outcome.interrupted:
        console.print(
            f"{len(outcome.failed)} line(s) not finished; run the same command again to retry them",
            markup=False,
            highlight=False,
        )
