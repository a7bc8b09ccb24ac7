"""`deepdraft export RUN_ID --format FMT`: write a finished run's report in another format.

The report is rebuilt from the run journal (the last checkpoint) and the manifest written when the
run finished, so any finished run can be exported again at any time, in any references style or
through a different Markdown template. Without `--output` the file goes into the run folder as
`report.<ext>`; an existing file is replaced atomically (the old one stays intact if the export
fails). A run that is not finished is refused with what to do about it.

The run's own `report.md` is only ever replaced as a new report version (`run.versions`): the
report it replaces stays as a version, and an edit the user made to it by hand is kept as a
version first (or, without `--force`, refused). `--version N` writes an earlier version, as the
Markdown it was kept as.
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
    version: Annotated[
        str | None,
        typer.Option(
            "--version", help="A report version (see: deepdraft show RUN_ID --versions); Markdown only."
        ),
    ] = None,
    force: Annotated[
        bool,
        typer.Option(
            "--force", help="Replace report.md even where it was edited by hand (the edit is kept first)."
        ),
    ] = False,
) -> None:
    """Export a finished run's report as md, html, pdf, docx, json, bibtex or csl."""
    from deepdraft.export import default_name, export, render
    from deepdraft.run import versions
    from deepdraft.run.runs import Runs, run_folder

    if template is not None and fmt != "md":
        raise UserError("--template shapes the Markdown report only; use it with --format md")
    if version is not None:
        _export_version(run_id, version, fmt, output, references_style, template)
        return
    with Runs.open() as runs:
        document = runs.report_document(run_id, style=references_style)
        state = runs.state(document.run_id)
    folder = run_folder(document.run_id)
    path = output if output is not None else folder / default_name(fmt)
    if fmt == "md" and path.expanduser().absolute() == (folder / versions.REPORT).absolute():
        # The run's own report.md: written as a report version, so neither the report it replaces
        # nor an edit the user made to it is lost.
        markdown = render(document, "md", template=template).decode("utf-8")
        how = ", ".join(
            part
            for part in (
                f"references style {references_style}" if references_style else "",
                f"template {template}" if template else "",
            )
            if part
        )
        written = versions.replace_report(
            folder,
            markdown,
            kind="export",
            note=f"{versions.KINDS['export']}{f' ({how})' if how else ''}",
            step=state.step if state is not None else None,
            force=force,
        )
        typer.echo(f"{fmt} written: {path} (version {written.number})")
        return
    written_path = export(document, fmt, path, template=template)
    typer.echo(f"{fmt} written: {written_path}")


def _export_version(
    run_id: str,
    version: str,
    fmt: str,
    output: Path | None,
    references_style: str | None,
    template: Path | None,
) -> None:
    """`--version N`: a version is kept as the Markdown it was, so it exports as that Markdown."""
    from deepdraft.export import write_atomically
    from deepdraft.run import versions
    from deepdraft.run.runs import Runs, run_folder

    number = versions.version_number(version)
    if fmt != "md" or references_style is not None or template is not None:
        raise UserError(
            "a report version is kept as the Markdown it was: --version exports --format md only, "
            "without --references-style or --template"
        )
    with Runs.open() as runs:
        run = runs.get(run_id).id
    folder = run_folder(run)
    chosen = versions.get_version(folder, number)
    if output is None:
        typer.echo(f"md of version {number}: {folder / chosen.file}")
        return
    write_atomically(output, versions.read_version(folder, chosen).encode("utf-8", errors="surrogateescape"))
    typer.echo(f"md of version {number} written: {output}")
