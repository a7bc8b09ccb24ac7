"""`deepdraft export RUN_ID --format FMT`: write a finished run's report in another format.

The report is rebuilt from the run journal (the last checkpoint) and the manifest written when the
run finished, so any finished run can be exported again at any time, in any references style or
through a different Markdown template. Without `--output` the file goes into the run folder as
`report.<ext>`; an existing file is replaced atomically (the old one stays intact if the export
fails). A run that is not finished is refused with what to do about it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from deepdraft.errors import UserError
from deepdraft.settings import ExportFormat, ReferencesStyle


def export_command(
    run_id: Annotated[str, typer.Argument(help="A finished run (an id or a unique prefix).")],
    fmt: Annotated[
        ExportFormat, typer.Option("--format", "-f", help="md, html, pdf, docx, json, bibtex or csl.")
    ] = "md",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Where to write (default: the run folder).")
    ] = None,
    references_style: Annotated[
        ReferencesStyle | None,
        typer.Option("--references-style", help="numbered or author-date (default: the run's)."),
    ] = None,
    template: Annotated[
        Path | None, typer.Option("--template", help="A Jinja2 template for Markdown (see docs/exports.md).")
    ] = None,
) -> None:
    """Export a finished run's report as md, html, pdf, docx, json, bibtex or csl."""
    from deepdraft.export import default_name, export
    from deepdraft.run.runs import Runs, run_folder

    if template is not None and fmt != "md":
        raise UserError("--template shapes the Markdown report only; use it with --format md")
    with Runs.open() as runs:
        document = runs.report_document(run_id, style=references_style)
    path = output if output is not None else run_folder(document.run_id) / default_name(fmt)
    written = export(document, fmt, path, template=template)
    typer.echo(f"{fmt} written: {written}")
