"""A run's report versions from the command line: `show --versions`, `diff` and `restore`.

Version numbers are read here from text, not by the option parser, so "0", "x" or "-1" get the
same one-line error as an unknown version (see `run.versions.version_number`).
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from deepdraft.errors import UserError
from deepdraft.export.changes import compare
from deepdraft.run import versions
from deepdraft.run.runs import Runs, run_folder

console = Console()
ForceOption = Annotated[
    bool,
    typer.Option(
        "--force",
        help="Overwrite report.md even where it was edited by hand (the edit is kept as a version first).",
    ),
]


def _folder(run_id: str) -> tuple[str, Path]:
    with Runs.open() as runs:
        info = runs.get(run_id)
    return info.id, run_folder(info.id)


def show_versions(run_id: str, as_json: bool) -> None:
    """`deepdraft show RUN_ID --versions`: each version, why it was written, and what it changed."""
    run, folder = _folder(run_id)
    listed = versions.list_versions(folder)
    rows = []
    previous: str | None = None
    for version in listed:
        markdown = versions.read_version(folder, version)
        changed = "first version" if previous is None else compare(previous, markdown).summary()
        previous = markdown
        rows.append(
            {
                "version": version.number,
                "kind": version.kind,
                "note": version.note,
                "created": datetime.fromtimestamp(version.created_at).isoformat(timespec="seconds"),
                "step": version.step,
                "changed": changed,
                "file": str(folder / version.file),
                "current": version is listed[-1],
            }
        )
    edit = versions.find_hand_edit(folder)
    if as_json:
        typer.echo(
            json.dumps(
                {"run": run, "versions": rows, "unrecorded_edit": edit.describe() if edit else None},
                indent=2,
                ensure_ascii=False,
            )
        )
        return
    if not rows:
        typer.echo(f"run {run} has no report versions yet (they are kept from its next finishing on)")
        return
    for row in rows:
        mark = "*" if row["current"] else " "
        typer.echo(
            f"{row['version']:>3}{mark} {row['created']}  {row['kind']:<9}  {row['changed']}  — {row['note']}"
        )
    typer.echo(f"* current: report.md; compare two with: deepdraft diff {run} A B")
    if edit is not None:
        typer.echo(
            f"report.md has changes no version holds yet ({edit.describe()}); "
            "they are kept as a version before anything overwrites them"
        )


def diff(
    run_id: Annotated[str, typer.Argument(help="A run (an id or a unique prefix).")],
    older: Annotated[
        str | None, typer.Argument(help="The older version (default: the one before NEWER).")
    ] = None,
    newer: Annotated[str | None, typer.Argument(help="The newer version (default: the current one).")] = None,
) -> None:
    """Show what changed between two report versions, section by section."""
    run, folder = _folder(run_id)
    listed = versions.list_versions(folder)
    if not listed:
        raise UserError(f"run {run} has no report versions yet, so there is nothing to compare")
    b = versions.get_version(folder, versions.version_number(newer)) if newer is not None else listed[-1]
    if older is not None:
        a = versions.get_version(folder, versions.version_number(older))
    elif b.number > 1:
        a = versions.get_version(folder, b.number - 1)
    else:
        raise UserError(f"run {run} has only version 1; there is nothing before it to compare with")
    changes = compare(versions.read_version(folder, a), versions.read_version(folder, b))
    typer.echo(f"version {a.number} ({a.kind}) → version {b.number} ({b.kind}): {changes.summary()}")
    if not changes.unchanged:
        for line in changes.readable():
            typer.echo(line)


def restore(
    run_id: Annotated[str, typer.Argument(help="A run (an id or a unique prefix).")],
    version: Annotated[
        str, typer.Argument(help="The version to bring back (see: deepdraft show RUN_ID --versions).")
    ],
    force: ForceOption = False,
) -> None:
    """Make an earlier report version current again, as a new version (nothing is deleted)."""
    _, folder = _folder(run_id)
    number = versions.version_number(version)
    before = versions.list_versions(folder)
    restored = versions.restore_version(folder, number, force=force)
    if before and restored.number == before[-1].number:
        typer.echo(f"version {number} is already the current report (version {restored.number})")
        return
    typer.echo(f"version {number} restored as version {restored.number}: {folder / 'report.md'}")
