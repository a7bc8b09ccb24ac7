"""A run's report versions: every report a run's folder has held, kept, numbered and explained.

    record_version(run_dir, markdown, kind=…, note=…, step=…)   the one way report.md is replaced
    ensure_unedited(run_dir, sections, force=…)                  the guard for hand edits of report.md
    replace_report(run_dir, markdown, kind=…, …)                 both, under the run's lock, for a
                                                                 command that does not drive the run
    list_versions(run_dir) / get_version(run_dir, n) / read_version(run_dir, version)
    version_number(text)                                         a version number a user typed

Every time a run's report is written (the research finished, a resume finished it, `export`
rendered it again, `restore` brought an old one back, the user's own edit was about to be
overwritten) the Markdown is kept as `report.v<N>.md` in the run folder, and `report.md` is the
current version. Nothing is ever deleted: restoring version 2 makes a new version equal to it.

What each version is and why is listed in `versions.json` next to them (number, kind, note, when,
the checkpoint step it was rendered from, a SHA-256 of its bytes). Why a file in the run folder and
not a table in the journal: the versions are files in that folder already, so the list belongs
with them — a run folder copied elsewhere (or returned by a Ray worker, which sends back the run
folder's files) keeps its history whole; and it needs no journal migration. The index is written
with `fsutil` (a temporary file, fsync, rename), so it is always either the old list or the new.

Crash safety, in the order of the writes of `record_version`:
1. `report.v<N>.md` is written first. A kill right after leaves a file the index does not list;
   the next recording takes the same number and replaces it. Nothing is lost by that: its
   content is still in report.md (a hand edit not yet recorded) or can be rendered again from the
   journal (a finishing that did not complete, which the resume repeats).
2. `versions.json` then lists it. From here on the version exists.
3. `report.md` is replaced last. A kill before leaves report.md equal to an earlier version,
   which the guard does not take for a hand edit (it only protects content no version holds).
A finishing repeated after a kill between these writes and the journal's "finished" (the resume
writes the report again) renders the same checkpoint step to the same text, all but the
"About this report" facts (wall time): such a version is updated in place rather than listed
twice. A hand-edited report.md is recorded as its own version before anything replaces it.

Callers hold the run folder's lock (`runner` does while it drives a run; `replace_report` takes
it), so two processes never number a version at once. A command that continues a finished run
(rewriting one section, say) gets both through the runner: it drives the run with
`Writing("rewrite", "3.2 written again", sections=["3.2"], force=force)`, and the runner calls
`ensure_unedited` before any work and again right before the write, then `record_version`.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Collection
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from deepdraft.errors import ReportEdited, StoreError, UserError, VersionNotFound
from deepdraft.export.sections import covers, headings, report_sections, section_texts
from deepdraft.fsutil import atomic_write_bytes, atomic_write_text
from deepdraft.run.locks import held_alone

INDEX = "versions.json"
INDEX_FORMAT = 1
REPORT = "report.md"

KINDS = {
    "research": "the research finished",
    "resumed": "the research finished in a resumed session",
    "export": "deepdraft export wrote the report again",
    "restore": "an earlier version brought back",
    "hand-edit": "report.md as edited by hand, kept before it was overwritten",
    "earlier": "report.md of a run finished before deepdraft kept versions",
}
"""The kinds deepdraft writes so far, and what each means. Commands that continue a finished run
record their own kind (the command's name, e.g. "deepen"): any short word is accepted."""
_KIND = re.compile(r"^[a-z][a-z0-9-]{0,31}$")
# The collapsed facts that close a report (`export.report.about_markdown`): they hold the wall
# time, so two renderings of one checkpoint differ there and nowhere else.
_FACTS = re.compile(r"\n<details>\n<summary>[^\n]*</summary>\n.*?</details>\s*\Z", re.DOTALL)


@dataclass(frozen=True)
class Version:
    """One report version of a run."""

    number: int
    kind: str
    """What wrote it: a key of `KINDS`, or the name of the command that did."""
    note: str
    """Why, in words: "expansion budget of 1 reached", "version 2 restored", "edited by hand: 3.2 …"."""
    created_at: float
    step: int | None
    """The journal step (checkpoint) it was rendered from; None for a hand edit or a restore."""
    sha256: str

    @property
    def file(self) -> str:
        return f"report.v{self.number}.md"


@dataclass(frozen=True)
class Writing:
    """What a command that writes a run's report says about it, for the version it records."""

    kind: str = "research"
    """The version's kind (see `KINDS`; a command's own name, e.g. "rewrite")."""
    note: str = ""
    """Why, in words ("" for the kind's own description and the run's stop reason)."""
    sections: Collection[str] | None = None
    """The report sections it rewrites ("3.2", "section-3.2"); None for the whole report."""
    force: bool = False
    """Write even over a hand edit of those sections (the edit is kept as a version first)."""


@dataclass(frozen=True)
class HandEdit:
    """report.md holds Markdown that no version holds: the user's own edit."""

    since: Version
    """The current version, which the edit changed."""
    sections: tuple[str, ...]
    """The keys of the report sections that differ (see `export.sections`)."""
    titles: tuple[str, ...]
    """Those sections' headings as a reader names them ("3.2 Oxides", "Conclusion")."""
    headings_match: bool
    """False when headings were added, removed or changed: sections can no longer be told apart."""

    def describe(self) -> str:
        if not self.headings_match:
            return f"its headings no longer match version {self.since.number}"
        return f"edited by hand: {', '.join(self.titles)}"


# ---- reading -------------------------------------------------------------------------------------


def list_versions(run_dir: Path) -> list[Version]:
    """The run's versions, oldest first ([] for a run that never finished, or finished before
    versions were kept). `StoreError` when versions.json cannot be read: it is never overwritten
    then, since that would drop the history it lists."""
    path = run_dir / INDEX
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise StoreError(f"cannot read {path}: {exc.strerror or exc}") from exc
    try:
        data = json.loads(raw)
        return [_version(entry) for entry in data["versions"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise StoreError(f"{path} is damaged ({exc}); fix or move it aside, the report files stay") from exc


def get_version(run_dir: Path, number: int) -> Version:
    """Version `number` of the run; a `UserError` naming the versions there are when it has none."""
    listed = list_versions(run_dir)
    for version in listed:
        if version.number == number:
            return version
    run = run_dir.name
    if not listed:
        raise VersionNotFound(
            f"run {run} has no report versions yet (it has not finished since they were kept)"
        )
    numbers = f"1 to {listed[-1].number}" if len(listed) > 1 else "1"
    raise VersionNotFound(
        f"run {run} has no version {number}: its versions are {numbers} (deepdraft show {run} --versions)"
    )


def read_version(run_dir: Path, version: Version) -> str:
    """The Markdown of `version` (`StoreError` when its file is gone or does not match the index)."""
    path = run_dir / version.file
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise StoreError(f"version {version.number} of run {run_dir.name} is missing: {path}") from exc
    if _digest(data) != version.sha256:
        raise StoreError(f"{path} was changed after it was recorded (its checksum differs from {INDEX})")
    return data.decode("utf-8", errors="surrogateescape")


def version_number(text: str) -> int:
    """A version number as a user typed it ("3", "v3"): a `UserError` for anything else."""
    cleaned = text.strip().lower().removeprefix("v")
    if not cleaned.isdigit():
        raise UserError(f"{text!r} is not a version number: versions are numbered 1, 2, 3, …")
    number = int(cleaned)
    if number < 1:
        raise UserError("versions are numbered from 1: there is no version 0")
    return number


def find_hand_edit(run_dir: Path) -> HandEdit | None:
    """What the user changed in report.md since the current version (None when report.md is
    missing, holds some version's Markdown, or differs in blank space only)."""
    text = _read_report(run_dir)
    listed = list_versions(run_dir)
    if text is None or not listed:
        return None  # a run from before versions: `record_version` keeps its report.md first
    if _digest(_bytes(text)) in {version.sha256 for version in listed}:
        return None
    current = listed[-1]
    recorded = read_version(run_dir, current)
    if headings(text) != headings(recorded):
        return HandEdit(current, (), (), headings_match=False)
    before, now = section_texts(recorded), section_texts(text)
    edited = tuple(key for key in now if now[key] != before.get(key))
    if not edited:
        return None
    names = {section.key: section.heading.lstrip("#").strip() for section in report_sections(text)}
    return HandEdit(
        current, edited, tuple(names.get(key) or "the text before the first heading" for key in edited), True
    )


# ---- writing -------------------------------------------------------------------------------------


def ensure_unedited(
    run_dir: Path, sections: Collection[str] | None = None, *, force: bool = False
) -> Version | None:
    """Refuse to go on when a command would overwrite what the user edited in report.md by hand;
    otherwise keep that edit as a version of its own, so overwriting report.md loses nothing.

    `sections`: the report sections the command rewrites, as the user names them ("3.2",
    "section-3.2", "Conclusion"; a number covers the nodes under it); None when it rewrites the
    whole report (a finishing, a restore). Raises `ReportEdited` (one line naming the edited
    sections and --force) when an edited section is among them, or whatever `sections` says when
    the headings no longer match (sections cannot be matched then) — unless `force`. Returns the
    version the edit was kept as, or None when report.md held no edit. Call it before the command
    starts its work and again right before it writes; the caller holds the run's lock.
    """
    edit = find_hand_edit(run_dir)
    if edit is None:
        return None
    if not force:
        _refuse_over(edit, run_dir.name, sections)
    text = _read_report(run_dir)
    assert text is not None  # find_hand_edit found it
    return record_version(run_dir, text, kind="hand-edit", note=edit.describe())


def refuse_if_edited(run_dir: Path, sections: Collection[str] | None = None, *, force: bool = False) -> None:
    """`ensure_unedited`'s refusal alone, writing nothing: for a caller that queues a command and
    wants to refuse it at once (the server), without the run's lock. The command asks again when
    it runs, and keeps the edit then."""
    edit = find_hand_edit(run_dir)
    if edit is not None and not force:
        _refuse_over(edit, run_dir.name, sections)


def _refuse_over(edit: HandEdit, run: str, sections: Collection[str] | None) -> None:
    if not edit.headings_match:
        raise ReportEdited(
            f"report.md of run {run} was edited by hand and its headings no longer match version "
            f"{edit.since.number}; add --force to go on (the edit is kept as a version first)"
        )
    clashing = [
        title
        for key, title in zip(edit.sections, edit.titles, strict=True)
        if sections is None or any(covers(wanted, key) for wanted in sections)
    ]
    if clashing:
        raise ReportEdited(
            f"report.md of run {run} was edited by hand in {'; '.join(clashing)} since version "
            f"{edit.since.number}; this would overwrite it: add --force to go on (the edit is kept "
            "as a version first)"
        )


def record_version(
    run_dir: Path, markdown: str, *, kind: str, note: str = "", step: int | None = None
) -> Version:
    """Keep `markdown` as the run's next version and make it the current report.md.

    `kind` says what wrote it (see `KINDS`), `note` why; `step` is the journal step whose
    checkpoint it was rendered from (None when it was not rendered: a hand edit, a restore).
    The same Markdown as the current version records nothing new; the same checkpoint rendered
    again, the same but for the closing facts, updates the current version in place (a finishing
    repeated after a kill, see the module docstring). Call `ensure_unedited` first: this replaces
    report.md whatever it holds. The caller holds the run's lock.
    """
    if not _KIND.match(kind):
        raise ValueError(f"a version kind is a short lowercase word, not {kind!r}")
    run_dir.mkdir(parents=True, exist_ok=True)
    listed = list_versions(run_dir)
    earlier = _read_report(run_dir)
    if not listed and earlier is not None and earlier != markdown:
        # A run that finished before versions were kept: its report.md becomes version 1.
        listed = _append(run_dir, listed, _entry(1, "earlier", KINDS["earlier"], None, earlier), earlier)
    current = listed[-1] if listed else None
    data = _bytes(markdown)
    if current is not None and current.sha256 == _digest(data):
        atomic_write_bytes(run_dir / REPORT, data)  # a kill may have left report.md behind
        return current
    if current is not None and _same_rendering(run_dir, current, step, markdown):
        listed, entry = listed[:-1], _entry(current.number, current.kind, current.note, step, markdown)
    else:
        entry = _entry(current.number + 1 if current else 1, kind, note, step, markdown)
    listed = _append(run_dir, listed, entry, markdown)
    atomic_write_bytes(run_dir / REPORT, data)
    return entry


def replace_report(
    run_dir: Path,
    markdown: str,
    *,
    kind: str,
    note: str = "",
    step: int | None = None,
    force: bool = False,
) -> Version:
    """`ensure_unedited` and `record_version` under the run's lock, for a command that writes
    report.md without driving the run (`export`, `restore`)."""
    busy = f"run {run_dir.name} is being driven by {{}} right now; try again when it stops"
    with held_alone(run_dir / "lock", busy.format):
        ensure_unedited(run_dir, None, force=force)
        return record_version(run_dir, markdown, kind=kind, note=note, step=step)


def restore_version(run_dir: Path, number: int, *, force: bool = False) -> Version:
    """Make version `number` the current report again, as a new version (none is ever deleted)."""
    version = get_version(run_dir, number)
    markdown = read_version(run_dir, version)
    return replace_report(run_dir, markdown, kind="restore", note=f"version {number} restored", force=force)


# ---- the files -----------------------------------------------------------------------------------


def _append(run_dir: Path, listed: list[Version], entry: Version, markdown: str) -> list[Version]:
    """Write the version's file, then the index that lists it (in that order: see the docstring)."""
    atomic_write_bytes(run_dir / entry.file, _bytes(markdown))
    listed = [*listed, entry]
    index = {"format": INDEX_FORMAT, "versions": [asdict(version) for version in listed]}
    atomic_write_text(run_dir / INDEX, json.dumps(index, indent=2, ensure_ascii=False) + "\n")
    return listed


def _same_rendering(run_dir: Path, current: Version, step: int | None, markdown: str) -> bool:
    if step is None or current.step != step:
        return False
    try:
        recorded = read_version(run_dir, current)
    except StoreError:
        return False
    return _FACTS.sub("", recorded) == _FACTS.sub("", markdown)


def _entry(number: int, kind: str, note: str, step: int | None, markdown: str) -> Version:
    return Version(number, kind, note, round(time.time(), 3), step, _digest(_bytes(markdown)))


def _version(entry: dict[str, Any]) -> Version:
    step = entry.get("step")
    return Version(
        number=int(entry["number"]),
        kind=str(entry["kind"]),
        note=str(entry.get("note", "")),
        created_at=float(entry["created_at"]),
        step=None if step is None else int(step),
        sha256=str(entry["sha256"]),
    )


def _read_report(run_dir: Path) -> str | None:
    try:
        # surrogateescape: bytes that are not UTF-8 (an editor's other encoding) come back unchanged.
        return (run_dir / REPORT).read_bytes().decode("utf-8", errors="surrogateescape")
    except FileNotFoundError:
        return None


def _bytes(markdown: str) -> bytes:
    return markdown.encode("utf-8", errors="surrogateescape")


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


__all__ = [
    "INDEX",
    "KINDS",
    "HandEdit",
    "Version",
    "Writing",
    "ensure_unedited",
    "find_hand_edit",
    "get_version",
    "list_versions",
    "read_version",
    "record_version",
    "refuse_if_edited",
    "replace_report",
    "restore_version",
    "version_number",
]
