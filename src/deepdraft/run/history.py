"""A run's report versions as the interfaces show them: by run id, with what each version changed.

    listing(run_id)               → VersionListing: every version with its summary of changes
    version_markdown(run_id, n)   → one version's Markdown
    compare_versions(run_id, a, b) → the section-level changes from version a to version b

The CLI (`show --versions`, `diff`, `export --version`), the REST API and the web page read the
same answers here; `run.versions` is where versions are written and stored.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from deepdraft.errors import StoreError, UserError
from deepdraft.export.changes import ReportChanges, compare
from deepdraft.run import versions
from deepdraft.run.runs import Runs, run_folder


@dataclass(frozen=True)
class VersionEntry:
    version: versions.Version
    changed: str
    """What it changed from the version before, in one line ("first version" for version 1)."""
    path: Path
    current: bool


@dataclass(frozen=True)
class VersionListing:
    run_id: str
    entries: list[VersionEntry]
    unrecorded_edit: versions.HandEdit | None
    """report.md's changes that no version holds yet (they are kept before anything overwrites them)."""


@dataclass(frozen=True)
class VersionChanges:
    run_id: str
    older: versions.Version
    newer: versions.Version
    changes: ReportChanges


def _folder(run_id: str) -> tuple[str, Path]:
    with Runs.open() as runs:
        found = runs.get(run_id).id
    return found, run_folder(found)


def listing(run_id: str) -> VersionListing:
    """Every version of the run's report, oldest first, each with what it changed."""
    run, folder = _folder(run_id)
    listed = versions.list_versions(folder)
    entries: list[VersionEntry] = []
    previous: str | None = None
    for version in listed:
        try:
            markdown: str | None = versions.read_version(folder, version)
        except StoreError as exc:  # one damaged file must not hide the others: say so in its row
            markdown, changed = None, f"cannot be read: {exc}"
        if markdown is not None:
            if previous is None:
                changed = "first version" if version.number == 1 else "(no readable version before it)"
            else:
                changed = compare(previous, markdown).summary()
        entries.append(VersionEntry(version, changed, folder / version.file, version is listed[-1]))
        previous = markdown
    return VersionListing(run, entries, versions.find_hand_edit(folder))


def version_markdown(run_id: str, number: int) -> tuple[str, str]:
    """The run's id and the Markdown of its version `number`."""
    run, folder = _folder(run_id)
    return run, versions.read_version(folder, versions.get_version(folder, number))


def compare_versions(run_id: str, older: int | None = None, newer: int | None = None) -> VersionChanges:
    """The changes from version `older` to version `newer`; by default `newer` is the current
    version and `older` the one before `newer`."""
    run, folder = _folder(run_id)
    listed = versions.list_versions(folder)
    if not listed:
        raise UserError(f"run {run} has no report versions yet, so there is nothing to compare")
    b = versions.get_version(folder, newer) if newer is not None else listed[-1]
    if older is not None:
        a = versions.get_version(folder, older)
    elif b.number > 1:
        a = versions.get_version(folder, b.number - 1)
    else:
        raise UserError(f"run {run} has only version 1; there is nothing before it to compare with")
    changes = compare(versions.read_version(folder, a), versions.read_version(folder, b))
    return VersionChanges(run, a, b, changes)
