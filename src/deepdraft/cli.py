"""The `deepdraft` command line.

Errors meant for the user (`DeepdraftError`) print as one line with an exit code; anything else is a
bug and shows a traceback. `--debug` shows the traceback for everything.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from deepdraft import runner
from deepdraft.errors import DeepdraftError, LLMError
from deepdraft.progress import Progress
from deepdraft.settings import PolicyName, Settings, load_settings

app = typer.Typer(
    name="deepdraft",
    help="Local-first deep research: a cited report whose outline grows while it is written.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()

_debug = False

ConfigOption = Annotated[
    Path | None, typer.Option("--config", help="TOML settings file (default: DEEPDRAFT_HOME/config.toml).")
]
BaseUrlOption = Annotated[
    str | None,
    typer.Option(
        "--base-url", help="OpenAI-compatible endpoint, e.g. http://localhost:8000/v1 [env: OPENAI_BASE_URL]"
    ),
]
ModelOption = Annotated[
    str | None, typer.Option("--model", help="Model name on that endpoint [env: DEEPDRAFT_MODEL]")
]
ApiKeyOption = Annotated[
    str | None, typer.Option("--api-key", help="API key, if the endpoint needs one [env: OPENAI_API_KEY]")
]


@app.callback()
def _main(
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks.")] = False,
) -> None:
    global _debug
    _debug = debug


def _settings(config: Path | None, **flags: dict[str, Any]) -> Settings:
    return load_settings(config, flags=flags)


@app.command()
def research(
    question: Annotated[str, typer.Argument(help="The research question.")],
    kb: Annotated[
        Path | None, typer.Option("--kb", help="Folder of .txt/.md documents, or a .jsonl corpus.")
    ] = None,
    base_url: BaseUrlOption = None,
    model: ModelOption = None,
    api_key: ApiKeyOption = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Where to write the Markdown report.")
    ] = None,
    policy: Annotated[
        PolicyName | None, typer.Option("--policy", help="warp (default) or plan-write.")
    ] = None,
    max_steps: Annotated[
        int | None, typer.Option("--max-steps", help="Most LLM actions in the run (default 140).")
    ] = None,
    max_expansions: Annotated[
        int | None, typer.Option("--max-expansions", help="Most deepening decisions (default 12).")
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Research QUESTION in your documents and write a cited report."""
    settings = _settings(
        config,
        llm={"base_url": base_url, "model": model, "api_key": api_key},
        research={"policy": policy, "max_steps": max_steps, "max_expansions": max_expansions},
    )
    run_id = runner.new_run_id()
    with Progress(console, settings.research.max_steps) as progress:
        report = _interruptible(
            run_id,
            lambda: runner.start(
                question, settings, kb=kb, output=output, on_event=progress.update, run_id=run_id
            ),
        )
    _print_outcome(report)


@app.command()
def resume(
    run_id: Annotated[str, typer.Argument(help="The run to continue (an id or a unique prefix).")],
    base_url: BaseUrlOption = None,
    model: ModelOption = None,
    api_key: ApiKeyOption = None,
    config: ConfigOption = None,
) -> None:
    """Continue a run exactly where it stopped."""
    settings = _settings(config, llm={"base_url": base_url, "model": model, "api_key": api_key})
    record, state = runner.load_run(run_id)
    stored_steps = Settings.model_validate(record.settings["settings"]).research.max_steps
    outline = state.outline if state else None
    with Progress(console, stored_steps, start_step=record.steps, outline=outline) as progress:
        report = _interruptible(
            record.id, lambda: runner.resume(record.id, settings, on_event=progress.update)
        )
    _print_outcome(report)


@app.command()
def runs(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """List research runs, newest first."""
    with runner.open_journal() as journal:
        records = journal.list_runs()
    rows = [
        {
            "id": r.id,
            "status": _status(r.id, r.status),
            "question": r.question,
            "started": datetime.fromtimestamp(r.created_at).isoformat(timespec="seconds"),
            "steps": r.steps,
        }
        for r in records
    ]
    if as_json:
        typer.echo(json.dumps(rows, indent=2, ensure_ascii=False))
        return
    if not rows:
        console.print('no runs yet — start one with: deepdraft research "your question" --kb PATH')
        return
    columns = ("id", "status", "steps", "started", "question")
    if not console.is_terminal:  # pipes and logs get whole values, one run per line
        for row in rows:
            typer.echo("\t".join(str(row[column]) for column in columns))
        return
    from rich.table import Table

    table = Table(box=None)
    for column in columns:
        table.add_column(column, no_wrap=column != "question", overflow="ellipsis")
    for row in rows:
        table.add_row(*(str(row[column]) for column in columns))
    console.print(table)


@app.command()
def show(
    run_id: Annotated[str, typer.Argument(help="An id or a unique prefix.")],
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Show a run: status, outline and where its report is."""
    record, state = runner.load_run(run_id)
    status = _status(record.id, record.status)
    outline = state.outline if state else None
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "id": record.id,
                    "status": status,
                    "question": record.question,
                    "policy": record.policy,
                    "steps": record.steps,
                    "error": record.error or None,
                    "report_path": record.report_path,
                    "stop_reason": state.stop_reason if state else "",
                    "outline": outline.model_dump() if outline else None,
                },
                indent=2,
                ensure_ascii=False,
            )
        )
        return
    console.print(f"[bold]{record.id}[/bold]  {status}  ({record.steps} steps, policy {record.policy})")
    console.print(f"question: {record.question}")
    if record.error:
        console.print(f"error: {record.error}")
    if outline is not None:
        from deepdraft.progress import outline_tree

        console.print(outline_tree(outline))
    if record.report_path:
        console.print(f"report: {record.report_path}")
    elif status in ("interrupted", "failed"):
        console.print(f"continue with: deepdraft resume {record.id}")


def _status(run_id: str, recorded: str) -> str:
    # A run recorded as running whose process is gone (killed, machine off) can be resumed.
    if recorded == "running" and not runner.is_active(run_id):
        return "interrupted"
    return recorded


def _interruptible(run_id: str, work: Callable[[], runner.Report]) -> runner.Report:
    try:
        return work()
    except KeyboardInterrupt:
        typer.echo(f"\ninterrupted — continue with: deepdraft resume {run_id}", err=True)
        raise typer.Exit(130) from None
    except LLMError as exc:
        if runner.run_exists(run_id):
            raise LLMError(f"{exc} (the run is saved: deepdraft resume {run_id})") from exc
        raise


def _print_outcome(report: runner.Report) -> None:
    console.print(f"[green]report written[/green] ({report.stop_reason}): {report.path}")
    if report.unwritten:
        console.print(
            f"[yellow]{len(report.unwritten)} part(s) left unwritten:[/yellow] {', '.join(report.unwritten)}"
        )


def main() -> None:
    try:
        app()
    except DeepdraftError as exc:
        if _debug:
            raise
        typer.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
