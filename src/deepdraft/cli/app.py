"""The `deepdraft` command line.

Errors meant for the user (`DeepdraftError`) print as one line with an exit code; anything else is a
bug and shows a traceback. `--debug` shows the traceback for everything.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from deepdraft.cli import batch as cli_batch
from deepdraft.cli import review as cli_review
from deepdraft.cli import serve as cli_serve
from deepdraft.cli import versions as cli_versions
from deepdraft.cli.eval import eval_app
from deepdraft.cli.export import export_command
from deepdraft.cli.kb import kb_app
from deepdraft.cli.options import (
    NO_RESEARCH_OPTIONS,
    ApiKeyOption,
    BaseUrlOption,
    ConfigOption,
    KbOption,
    ModelOption,
    ResearchOptions,
    with_research_options,
)
from deepdraft.cli.progress import Progress
from deepdraft.cli.train import train_app
from deepdraft.config import load_settings
from deepdraft.errors import DeepdraftError, LLMError, RunAlreadyFinished, UserError
from deepdraft.llm import embedded_models as models
from deepdraft.policy.sections import SectionCommand
from deepdraft.run import runner, wiring
from deepdraft.run.answers import Answer
from deepdraft.run.runs import Runs, run_exists
from deepdraft.settings import Settings

app = typer.Typer(
    name="deepdraft",
    help="Local-first deep research: a cited report whose outline grows while it is written.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()

_debug = False


@app.callback()
def _main(
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks.")] = False,
) -> None:
    global _debug
    _debug = debug


def _settings(config: Path | None, **flags: dict[str, Any]) -> Settings:
    return load_settings(config, flags=flags)


@app.command()
@with_research_options
def research(
    question: Annotated[str, typer.Argument(help="The research question.")],
    kb: KbOption = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Where to write the Markdown report.")
    ] = None,
    research: ResearchOptions = NO_RESEARCH_OPTIONS,
    review_outline: Annotated[
        bool, typer.Option("--review-outline", help="Show the first outline and let me edit it first.")
    ] = False,
    config: ConfigOption = None,
) -> None:
    """Research QUESTION in your documents and write a cited report."""
    settings = _settings(config, **research.flags())
    if kb is None and not settings.web.only:
        console.print(wiring.default_kb()[1], markup=False, highlight=False, soft_wrap=True)
    run_id = runner.new_run_id()
    with Progress(console, settings.research.max_steps) as progress:
        review = cli_review.terminal_review(console, question, progress) if review_outline else None
        report = _interruptible(
            run_id,
            lambda: runner.start(
                question,
                settings,
                kb=kb,
                output=output,
                on_event=progress.update,
                run_id=run_id,
                review_outline=review,
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
    force: cli_versions.ForceOption = False,
) -> None:
    """Continue a run exactly where it stopped."""
    settings = _settings(config, llm={"base_url": base_url, "model": model, "api_key": api_key})
    with Runs.open() as runs:
        record, outline = runs.get(run_id), runs.outline(run_id)
    stored_steps = record.settings.research.max_steps
    try:
        runner.ensure_unfinished(record.id)
        with Progress(console, stored_steps, start_step=record.steps, outline=outline) as progress:
            report = _interruptible(
                record.id, lambda: runner.resume(record.id, settings, on_event=progress.update, force=force)
            )
    except RunAlreadyFinished as done:  # not a failure: the run has what was asked of it
        typer.echo(str(done))
        return
    _print_outcome(report)


# ---- commands on a finished run's report (policy/sections.py) -------------------------------------

SectionArgument = Annotated[
    str, typer.Argument(help="The section as the report numbers it (3, 3.2) or by position (section-3.2).")
]
InstructionsOption = Annotated[
    str | None,
    typer.Option(
        "--instructions", help="What you want of this part; shown to the model in the command's prompts."
    ),
]
CommandStepsOption = Annotated[
    int | None,
    typer.Option(
        "--max-steps", help="Most LLM actions the command may take (default: the run's --max-steps)."
    ),
]


@app.command()
def deepen(
    run_id: Annotated[str, typer.Argument(help="A finished run (an id or a unique prefix).")],
    section: SectionArgument,
    into: Annotated[
        int | None,
        typer.Option(
            "--into", help="Split it into exactly N subsections (2–7; default: the model's choice)."
        ),
    ] = None,
    instructions: InstructionsOption = None,
    max_steps: CommandStepsOption = None,
    force: cli_versions.ForceOption = False,
    base_url: BaseUrlOption = None,
    model: ModelOption = None,
    api_key: ApiKeyOption = None,
    config: ConfigOption = None,
) -> None:
    """Split one section of a finished report into subsections, research and write them."""
    command = SectionCommand("deepen", section, into, instructions or "", max_steps)
    _section_command(run_id, command, _llm_settings(config, base_url, model, api_key), force)


@app.command()
def rewrite(
    run_id: Annotated[str, typer.Argument(help="A finished run (an id or a unique prefix).")],
    section: SectionArgument,
    instructions: InstructionsOption = None,
    max_steps: CommandStepsOption = None,
    force: cli_versions.ForceOption = False,
    base_url: BaseUrlOption = None,
    model: ModelOption = None,
    api_key: ApiKeyOption = None,
    config: ConfigOption = None,
) -> None:
    """Search again for one section of a finished report and write it again."""
    command = SectionCommand("rewrite", section, None, instructions or "", max_steps)
    _section_command(run_id, command, _llm_settings(config, base_url, model, api_key), force)


@app.command()
def recheck(
    run_id: Annotated[str, typer.Argument(help="A finished run (an id or a unique prefix).")],
    section: Annotated[
        str | None, typer.Argument(help="The section to check (3, 3.2); default: the whole report.")
    ] = None,
    force: cli_versions.ForceOption = False,
    base_url: BaseUrlOption = None,
    model: ModelOption = None,
    api_key: ApiKeyOption = None,
    config: ConfigOption = None,
) -> None:
    """Verify the citations of one section of a finished report (or all of it) again, with repair."""
    command = SectionCommand("recheck", section)
    _section_command(run_id, command, _llm_settings(config, base_url, model, api_key), force)


@app.command("add-source")
def add_source(
    run_id: Annotated[str, typer.Argument(help="A finished run (an id or a unique prefix).")],
    source: Annotated[
        str,
        typer.Argument(help="A file to add to the run's knowledge base, or a URL when the run uses the web."),
    ],
    to: Annotated[
        str | None, typer.Option("--to", help="The section to write again with it (3, 3.2, section-3.2).")
    ] = None,
    instructions: InstructionsOption = None,
    max_steps: CommandStepsOption = None,
    force: cli_versions.ForceOption = False,
    base_url: BaseUrlOption = None,
    model: ModelOption = None,
    api_key: ApiKeyOption = None,
    config: ConfigOption = None,
) -> None:
    """Add a document to a finished run's knowledge base and write one section again with it."""
    command = SectionCommand("add-source", to, None, instructions or "", max_steps, source=source)
    _section_command(run_id, command, _llm_settings(config, base_url, model, api_key), force)


@app.command()
def refresh(
    run_id: Annotated[str, typer.Argument(help="A finished run (an id or a unique prefix).")],
    max_steps: CommandStepsOption = None,
    force: cli_versions.ForceOption = False,
    base_url: BaseUrlOption = None,
    model: ModelOption = None,
    api_key: ApiKeyOption = None,
    config: ConfigOption = None,
) -> None:
    """Write again the sections of a finished report that its knowledge base's changes concern."""
    settings = _llm_settings(config, base_url, model, api_key)
    with Runs.open() as runs:
        record = runs.get(run_id)
    findings = runner.find_stale(record.id, settings)
    if not findings.stale:
        console.print(
            runner.nothing_to_refresh(record.id, findings), markup=False, highlight=False, soft_wrap=True
        )
        return
    console.print(
        f"the knowledge base changed ({findings.changes.describe()}); writing again:",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    for stale in findings.stale:
        console.print(f"  {stale.describe()}", markup=False, highlight=False, soft_wrap=True)
    command = SectionCommand("refresh", None, max_steps=max_steps, stale=tuple(findings.stale))
    _section_command(record.id, command, settings, force)


def _llm_settings(
    config: Path | None, base_url: str | None, model: str | None, api_key: str | None
) -> Settings:
    """The settings a command on a run needs of this session: how to reach the LLM (the rest is the run's)."""
    return _settings(config, llm={"base_url": base_url, "model": model, "api_key": api_key})


def _section_command(run_id: str, command: SectionCommand, settings: Settings, force: bool) -> None:
    """Continue the finished run with `command` and write its report again (see `runner.run_command`)."""
    with Runs.open() as runs:
        record = runs.get(run_id)
        outline = runs.outline(record.id)
    # A bad section, a busy run or a hand edit in the way: one line, before any display.
    runner.ensure_commandable(record.id, command, force=force)
    allowance = command.max_steps or record.settings.research.max_steps
    with Progress(console, record.steps + allowance, start_step=record.steps, outline=outline) as progress:
        report = _interruptible(
            record.id,
            lambda: runner.run_command(record.id, command, settings, on_event=progress.update, force=force),
        )
    _print_outcome(report)
    if report.command_outcome:
        console.print(
            f"[yellow]{escape(command.describe())}:[/yellow] {escape(report.command_outcome)}", soft_wrap=True
        )


@app.command()
def ask(
    run_id: Annotated[str, typer.Argument(help="A finished run (an id or a unique prefix).")],
    question: Annotated[str, typer.Argument(help="The follow-up question.")],
    into_report: Annotated[
        bool,
        typer.Option(
            "--into-report", help="Add the answer to the report as a new section (a new report version)."
        ),
    ] = False,
    force: cli_versions.ForceOption = False,
    base_url: BaseUrlOption = None,
    model: ModelOption = None,
    api_key: ApiKeyOption = None,
    config: ConfigOption = None,
) -> None:
    """Answer a follow-up question from a finished run's evidence and its knowledge base.

    The answer cites in the report's numbering and is kept with the run (deepdraft show RUN --asks);
    the report is left as it is unless --into-report.
    """
    if into_report:
        command = SectionCommand("ask", None, question=question)
        _section_command(run_id, command, _llm_settings(config, base_url, model, api_key), force)
        return
    if force:
        raise UserError("--force is for --into-report (the report is left as it is without it)")
    settings = _settings(config, llm={"base_url": base_url, "model": model, "api_key": api_key})
    with Runs.open() as runs:
        record = runs.get(run_id)
    asked = runner.ensure_askable(record.id, question)  # one line for a bad question or an unfinished run
    with console.status("answering") if console.is_terminal else nullcontext():
        try:
            answer = runner.ask(record.id, asked, settings)
        except KeyboardInterrupt:
            typer.echo(f'\ninterrupted — ask again to finish it: deepdraft ask {record.id} "…"', err=True)
            raise typer.Exit(130) from None
    _print_answer(answer)


def _print_answer(answer: Answer) -> None:
    if not answer.markdown:
        console.print(f"[yellow]no answer:[/yellow] {escape(answer.note)}", soft_wrap=True)
        return
    typer.echo(answer.markdown.rstrip("\n"))


@app.command()
def runs(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """List research runs, newest first."""
    with Runs.open() as runs:
        records = runs.all()
    rows = [
        {
            "id": r.id,
            "status": r.status,
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
    egress: Annotated[
        bool,
        typer.Option("--egress", help="List what the run sent off this machine: queries, URLs, endpoints."),
    ] = False,
    versions: Annotated[
        bool,
        typer.Option("--versions", help="List the report's versions: why each was written, what changed."),
    ] = False,
    asks: Annotated[
        bool,
        typer.Option("--asks", help="List the follow-up questions asked of the run, with their answers."),
    ] = False,
) -> None:
    """Show a run: status, outline and where its report is."""
    if egress + versions + asks > 1:
        raise UserError("--egress, --versions and --asks are separate listings: ask for one at a time")
    if asks:
        _show_asks(run_id, as_json)
        return
    if egress:
        _show_egress(run_id, as_json)
        return
    if versions:
        cli_versions.show_versions(run_id, as_json)
        return
    with Runs.open() as runs:
        record = runs.get(run_id)
        state = runs.state(record.id)
    status = record.status
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
    console.print(f"question: {record.question}", markup=False, highlight=False)
    if record.error:
        console.print(f"error: {record.error}", markup=False, highlight=False)
    if outline is not None:
        from deepdraft.cli.progress import outline_tree

        console.print(outline_tree(outline))
    if record.report_path:
        console.print(f"report: {record.report_path}")
    elif status in ("interrupted", "failed"):
        console.print(f"continue with: deepdraft resume {record.id}")


def _show_asks(run_id: str, as_json: bool) -> None:
    """The follow-up questions asked of the run: question, when, answer."""
    with Runs.open() as runs:
        record = runs.get(run_id)
        answers = runs.asks(record.id)
    if as_json:
        rows = [
            {
                "question": answer.question,
                "asked_at": datetime.fromtimestamp(answer.asked_at).isoformat(timespec="seconds"),
                "answer": answer.markdown,
                "note": answer.note or None,
                "section": answer.section,
            }
            for answer in answers
        ]
        typer.echo(json.dumps(rows, indent=2, ensure_ascii=False))
        return
    if not answers:
        console.print(
            f'no questions asked of run {record.id} yet — ask one with: deepdraft ask {record.id} "…"',
            markup=False,
            soft_wrap=True,
        )
        return
    for number, answer in enumerate(answers, start=1):
        when = datetime.fromtimestamp(answer.asked_at).isoformat(timespec="seconds")
        where = (
            f" (added to the report as section {answer.section.removeprefix('section-')})"
            if answer.section
            else ""
        )
        console.print(f"[bold]{number}. {escape(answer.question)}[/bold]", soft_wrap=True)
        console.print(f"asked {when}{where}", markup=False, highlight=False)
        text = answer.markdown.rstrip("\n") if answer.markdown else f"no answer: {answer.note}"
        console.print(text + "\n", markup=False, highlight=False, soft_wrap=True)


def _show_egress(run_id: str, as_json: bool) -> None:
    """The run's egress audit: one line per web query, page fetch and remote endpoint."""
    with Runs.open() as runs:
        record = runs.get(run_id)
        records = runs.egress(record.id)
    rows = [
        {
            "seq": r.seq,
            "at": datetime.fromtimestamp(r.at).isoformat(timespec="seconds"),
            "kind": r.kind,
            "endpoint": r.endpoint,
            "detail": r.detail,
            "requests": r.requests,
            "bytes": r.bytes,
        }
        for r in records
    ]
    if as_json:
        typer.echo(json.dumps(rows, indent=2, ensure_ascii=False))
        return
    if not rows:
        console.print(
            f"run {record.id} recorded no requests off this machine (no web search; the LLM and any "
            "embedding endpoint were in-process or on loopback)",
            markup=False,
            soft_wrap=True,
        )
        return
    columns = ("seq", "at", "kind", "requests", "bytes", "endpoint", "detail")
    if not console.is_terminal:  # pipes and logs get whole values, one record per line
        for row in rows:
            typer.echo("\t".join(str(row[column]) for column in columns))
        return
    from rich.table import Table

    table = Table(box=None)
    for column in columns:
        table.add_column(column, no_wrap=column not in ("detail", "endpoint"), overflow="fold")
    for row in rows:
        table.add_row(*(escape(str(row[column])) for column in columns))
    console.print(table)


@app.command()
def setup(
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            help=f"Embedded model to install (default {models.DEFAULT_MODEL}); see: deepdraft models",
        ),
    ] = None,
    skip_model: Annotated[bool, typer.Option("--skip-model", help="Leave the embedded model out.")] = False,
    skip_demo: Annotated[
        bool, typer.Option("--skip-demo", help="Leave the demo knowledge base out.")
    ] = False,
) -> None:
    """Install the embedded model and the demo knowledge base — the one step that downloads."""
    spec = models.get_spec(model or models.DEFAULT_MODEL)  # an unknown name fails before any download
    failures: list[DeepdraftError] = []
    if not skip_model:
        ready = _setup_step(f"model {spec.name}", lambda say: _setup_model(spec, say), failures)
        if ready and importlib.util.find_spec("llama_cpp") is None:
            console.print(
                "note: the model files are ready, but running the embedded model needs llama-cpp-python: "
                'pip install -c constraints.txt -e ".[local]"',
                markup=False,
                soft_wrap=True,
            )
    if not skip_demo:
        _setup_step("demo knowledge base", _setup_demo, failures)
    if failures:
        raise typer.Exit(failures[0].exit_code)
    if not skip_demo:
        console.print(
            'next: deepdraft research "How did presidents argue about tariffs?" --kb demo', markup=False
        )


def _setup_step(
    label: str, work: Callable[[Callable[[str], None]], str], failures: list[DeepdraftError]
) -> bool:
    """Run one part of `setup` with live progress; a failure is reported and the next part still runs."""
    started = time.monotonic()
    try:
        if console.is_terminal:  # a spinner with the latest step; logs get every line instead
            with console.status(f"{label}: starting") as status:
                summary = work(lambda line: status.update(escape(f"{label}: {line}")))
        else:
            summary = work(
                lambda line: console.print(f"{label}: {line}", markup=False, highlight=False, soft_wrap=True)
            )
    except DeepdraftError as exc:
        if _debug:
            raise
        console.print(f"[red]failed[/red] {escape(label)}: {escape(str(exc))}", soft_wrap=True)
        failures.append(exc)
        return False
    seconds = time.monotonic() - started
    console.print(
        f"[green]ready[/green] {escape(label)}: {escape(summary)} ({seconds:.1f} s)", soft_wrap=True
    )
    return True


def _setup_model(spec: models.ModelSpec, say: Callable[[str], None]) -> str:
    result = models.install_model(spec, say)
    how = "downloaded and verified" if result.fetched else "already installed, verified"
    return f"{how}, {_size(result.size)} at {result.path}"


def _setup_demo(say: Callable[[str], None]) -> str:
    from deepdraft.retrieval.kb.names import DEMO_KB, open_kb
    from deepdraft.run import demo

    folder = demo.ensure_demo_kb(None, say)
    corpus = demo.demo_corpus_path()
    with open_kb(DEMO_KB) as kb:
        info = kb.info()
    size = _size(corpus.stat().st_size)
    return (
        f"{info.documents} addresses, {info.chunks} passages; corpus {size} at {corpus}, "
        f"knowledge base at {folder}"
    )


@app.command("models")
def list_models(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """List the embedded models deepdraft knows, and which are installed."""
    active = models.DEFAULT_MODEL
    rows = [
        {
            "name": status.spec.name,
            "active": status.spec.name == active,
            "state": status.state,
            "size": status.size,
            "path": str(status.path),
            "title": status.spec.title,
            "purpose": status.spec.purpose,
            "license": status.spec.license,
            "provenance": status.spec.provenance,
        }
        for status in map(models.model_status, models.MODELS)
    ]
    if as_json:
        typer.echo(json.dumps(rows, indent=2, ensure_ascii=False))
        return
    for row in rows:
        marker = "*" if row["active"] else " "
        size = _size(row["size"]) if isinstance(row["size"], int) else "-"
        console.print(
            f"{marker} {row['name']:<20} {row['state']:<10} {size:>9}  {row['path']}\n"
            f"    {row['title']}: {row['purpose']}",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
    console.print("* active (the default); install another with: deepdraft setup --model NAME")
    console.print(f"cache: {models.models_dir()}", markup=False, highlight=False, soft_wrap=True)


def _size(size: int) -> str:
    return f"{size / 1e9:.2f} GB" if size >= 1e9 else f"{size / 1e6:.1f} MB"


def _interruptible(run_id: str, work: Callable[[], runner.Report]) -> runner.Report:
    try:
        return work()
    except KeyboardInterrupt:
        # Ctrl-C while the knowledge base was still being opened (indexing a big folder can take a
        # while) comes before the run is recorded: there is nothing to resume then.
        if run_exists(run_id):
            typer.echo(f"\ninterrupted — continue with: deepdraft resume {run_id}", err=True)
        else:
            typer.echo("\ninterrupted before the run started; nothing to resume", err=True)
        raise typer.Exit(130) from None
    except LLMError as exc:
        if run_exists(run_id):
            raise LLMError(f"{exc} (the run is saved: deepdraft resume {run_id})") from exc
        raise


def _print_outcome(report: runner.Report) -> None:
    console.print(f"[green]report written[/green] ({report.stop_reason}): {report.path}")
    if report.unwritten:
        console.print(
            f"[yellow]{len(report.unwritten)} part(s) left unwritten:[/yellow] {', '.join(report.unwritten)}"
        )
    for problem in report.problems:  # formats that could not be written; the run itself is done
        console.print(f"[yellow]not exported[/yellow] {escape(problem)}", soft_wrap=True)


app.command("batch")(cli_batch.batch)
app.command("serve")(cli_serve.serve)
app.command("serve-model")(cli_serve.serve_model)
app.command("mcp")(cli_serve.mcp)
app.command("export")(export_command)
app.command("diff")(cli_versions.diff)
app.command("restore")(cli_versions.restore)
app.add_typer(eval_app, name="eval")
app.add_typer(kb_app, name="kb")
app.add_typer(train_app, name="train")


def main() -> None:
    try:
        app()
    except DeepdraftError as exc:
        if _debug:
            raise
        typer.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
