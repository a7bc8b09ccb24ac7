"""A run's report versions from the command line: `show --versions`, `diff` and `restore`.

Version numbers are read here from text, not by the option parser, so "0" or "x" get the
same one-line error as an unknown version (see `run.versions.version_number`).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated

import typer

from deepdraft.run import history, versions
from deepdraft.run.runs import Runs, run_folder

ForceOption = Annotated[
    bool,
    typer.Option(
        "--force",
        help="Overwrite report.md even where it was edited by hand (the edit is kept as a version first).",
    ),
]


def show_versions(run_id: str, as_json: bool) -> None:
    """`deepdraft show RUN_ID --versions`: each version, why it was written, and what it changed."""
    listed = history.listing(run_id)
    run, edit = listed.run_id, listed.unrecorded_edit
    rows = [
        {
            "version": entry.version.number,
            "kind": entry.version.kind,
            "note": entry.version.note,
            "created": datetime.fromtimestamp(entry.version.created_at).isoformat(timespec="seconds"),
            "step": entry.version.step,
            "changed": entry.changed,
            "file": str(entry.path),
            "current": entry.current,
        }
        for entry in listed.entries
    ]
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
    found = history.compare_versions(
        run_id,
        versions.version_number(older) if older is not None else None,
        versions.version_number(newer) if newer is not None else None,
    )
    a, b, changes = found.older, found.newer, found.changes
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
    number = versions.version_number(version)
    with Runs.open() as runs:
        folder = run_folder(runs.get(run_id).id)
    before = versions.list_versions(folder)
    restored = versions.restore_version(folder, number, force=force)
    if before and restored.number == before[-1].number:
        typer.echo(f"version {number} is already the current report (version {restored.number})")
        return
    typer.echo(f"version {number} restored as version {restored.number}: {folder / 'report.md'}")
