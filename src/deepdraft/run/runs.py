"""The read side of runs: what the interfaces, the evaluation and the training code may know of a run.

Everything here reads the workspace's journal (and a finished run's folder) and answers in typed
values: `RunInfo` for a run, `RunEvent` for a journalled event, `RunState` / `Outline` for where a
run stands, `ReportDocument` for a finished report. Callers never see journal rows or the raw
settings dictionaries the journal keeps, so the journal's layout can change behind this module.

    with Runs.open() as runs:
        info = runs.get("2026")          # an id or a unique prefix (at least 4 characters)
        later = runs.events(info.id, after=12)

A run whose journal says "running" (or "continuing": a command on its finished report is under
way) while no process holds its lock was killed (or its machine went off): its `status` is
"interrupted", as `deepdraft runs` shows it; `recorded_status` keeps what the journal says. The
few writes an interface makes (the server marks orphaned runs interrupted, records a
cancellation) go through `Runs.mark` and `Runs.record_cancelled`.
"""

from __future__ import annotations

import fcntl
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, cast

from deepdraft.config import home_dir
from deepdraft.core.outline import Outline
from deepdraft.core.state import RunState
from deepdraft.egress import EgressRecord
from deepdraft.errors import ConfigError, RunNotFound, StoreError, UserError
from deepdraft.events import StepRecord
from deepdraft.export.document import ReportDocument, build_document
from deepdraft.export.report import STYLES, CitationStyle
from deepdraft.fsutil import atomic_write_bytes
from deepdraft.run import versions
from deepdraft.run.answers import Answer
from deepdraft.run.manifest import build_manifest
from deepdraft.settings import Settings
from deepdraft.store.journal import Journal, RunRecord


@dataclass(frozen=True)
class RunInfo:
    """One run as the journal records it, with its status as it really is."""

    id: str
    question: str
    policy: str
    status: str
    """The recorded status, except "interrupted" for a "running" run that nobody drives."""
    recorded_status: str
    created_at: float
    updated_at: float
    steps: int
    error: str | None
    """Why the run failed (None when it did not)."""
    report_path: str | None
    kb: str | None
    """The knowledge base as given: a folder, or ``kb:<name>`` for a named one."""
    model: str
    max_steps: int
    """The step budget the run was recorded with (0 when the record has none)."""
    language: str | None
    """The language the report was asked in (None: the question's)."""
    _recorded: dict[str, Any] = field(repr=False, compare=False)

    @property
    def kb_name(self) -> str | None:
        """The knowledge base without the ``kb:`` mark of a named one."""
        return self.kb.removeprefix("kb:") if self.kb is not None else None

    @property
    def settings(self) -> Settings:
        """The settings the run was recorded with (raises `StoreError` if they no longer validate)."""
        try:
            return Settings.model_validate(self._recorded)
        except ValueError as exc:
            raise StoreError(f"run {self.id} recorded settings this version cannot read: {exc}") from exc


@dataclass(frozen=True)
class RunEvent:
    """One journalled event of a run; `seq` numbers a run's events 1, 2, 3…"""

    seq: int
    kind: str
    payload: dict[str, Any]
    created_at: float


JournalOpener = Callable[[], Journal]
_opener: JournalOpener | None = None


def workspace_journal() -> Journal:
    """The journal of the current workspace (``DEEPDRAFT_HOME/journal.sqlite``).

    Inside `journal_elsewhere` it is the journal that opener gives instead (a Ray worker's runs are
    journaled on the driver, see `run.cluster`).
    """
    if _opener is not None:
        return _opener()
    return Journal(home_dir() / "journal.sqlite")


@contextmanager
def journal_elsewhere(opener: JournalOpener) -> Iterator[None]:
    """For the length of the block, every run of this process is journaled where `opener` says.

    For a process whose every run is journaled elsewhere (a Ray worker's): the setting is process-wide.
    """
    global _opener
    previous, _opener = _opener, opener
    try:
        yield
    finally:
        _opener = previous


def run_folder(run_id: str) -> Path:
    """Where a run's report, manifest and lock live."""
    return home_dir() / "runs" / run_id


def is_active(run_id: str) -> bool:
    """True while some process holds the run's lock (i.e. the run is really running)."""
    lock_path = run_folder(run_id) / "lock"
    if not lock_path.exists():
        return False
    with lock_path.open("a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
        return False


def current_status(run_id: str, recorded: str) -> str:
    """A run recorded as running (or continuing, see `policy/sections.py`) whose process is gone is
    really interrupted."""
    return "interrupted" if recorded in ("running", "continuing") and not is_active(run_id) else recorded


class Runs:
    """The runs of one journal; open with `Runs.open()` and use as a context manager."""

    def __init__(self, journal: Journal) -> None:
        self._journal = journal

    @classmethod
    def open(cls) -> Runs:
        return cls(workspace_journal())

    def close(self) -> None:
        self._journal.close()

    def __enter__(self) -> Runs:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()

    # ---- runs ------------------------------------------------------------------------------------

    def all(self, limit: int | None = None) -> list[RunInfo]:
        """Runs, newest first."""
        return [_info(record) for record in self._journal.list_runs(limit)]

    def get(self, run_id: str) -> RunInfo:
        """The run with this id or unique prefix; `RunNotFound` for an unknown or ambiguous one."""
        return _info(self._journal.get_run(run_id))

    def exists(self, run_id: str) -> bool:
        try:
            self._journal.get_run(run_id)
        except RunNotFound:
            return False
        return True

    # ---- where a run stands ----------------------------------------------------------------------

    def state(self, run_id: str) -> RunState | None:
        """The run's latest checkpointed state (None before its first checkpoint)."""
        checkpoint = self._journal.latest_checkpoint(self._journal.get_run(run_id).id)
        return None if checkpoint is None else RunState.restore(checkpoint[1])

    def state_after(self, run_id: str, step: int) -> RunState:
        """The state checkpointed after step `step` (`StoreError` when there is none)."""
        return RunState.restore(self._journal.checkpoint(run_id, step))

    def outline(self, run_id: str) -> Outline | None:
        """The outline as it stands (None before the first plan)."""
        state = self.state(run_id)
        return state.outline if state is not None else None

    def steps(self, run_id: str) -> list[StepRecord]:
        """Every LLM action of the run, in order, with its exact prompt and reply."""
        return self._journal.steps(self._journal.get_run(run_id).id)

    def events(self, run_id: str, after: int = 0) -> list[RunEvent]:
        """The run's events with a sequence number above `after`, in order.

        `run_id` is a whole id (from `get`), not a prefix: a live stream asks this several times
        a second, with one indexed query each.
        """
        return [
            RunEvent(seq=e.seq, kind=e.kind, payload=e.payload, created_at=e.created_at)
            for e in self._journal.events(run_id, after)
        ]

    def egress(self, run_id: str) -> list[EgressRecord]:
        """What the run sent off this machine: web queries, page fetches, remote endpoints."""
        return self._journal.egress(self._journal.get_run(run_id).id)

    def asks(self, run_id: str) -> list[Answer]:
        """The follow-up questions asked of the run and their answers, in the order asked."""
        return [Answer.of(record) for record in self._journal.asks(self._journal.get_run(run_id).id)]

    # ---- a finished run's outputs ----------------------------------------------------------------

    def manifest(self, run_id: str) -> dict[str, Any]:
        """The run's manifest: the one written when it finished, else rebuilt from the journal.

        A rebuilt manifest lacks the KB's document list (that needs the knowledge base itself).
        """
        record = self._journal.get_run(run_id)
        stored = _stored_manifest(run_folder(record.id) / "manifest.json")
        if stored is not None:
            return stored
        state = self.state(record.id)
        return build_manifest(
            run_id=record.id,
            question=record.question,
            settings=record.settings.get("settings", {}),
            model=str(record.settings.get("model", "")),
            state=state,
            steps=self._journal.steps(record.id),
            events=self._journal.events(record.id),
            kb=record.settings.get("kb"),
            fingerprint=record.settings.get("corpus_fingerprint"),
            created_at=record.created_at,
            finished_at=record.updated_at,
        )

    def report_document(self, run_id: str, *, style: CitationStyle | None = None) -> ReportDocument:
        """The document of a finished run, from its last checkpoint and its manifest.

        `style` overrides the references style the run used. A run that is not finished is a
        `UserError` that says how to continue it.
        """
        info = self.get(run_id)
        if info.recorded_status != "finished":
            hint = (
                f"; continue it with: deepdraft resume {info.id}"
                if info.status in ("interrupted", "failed")
                else ""
            )
            raise UserError(
                f"run {info.id} is not finished (it is {info.status}), so it has no report yet{hint}"
            )
        state = self.state(info.id)
        if state is None:
            raise StoreError(f"run {info.id} is marked finished but the journal has no checkpoint of it")
        manifest = self.manifest(info.id)
        # The recorded settings are read as plain data: a run from an older version may hold keys
        # today's Settings no longer accepts, and an export must still work for it.
        recorded = info._recorded
        chosen = style or recorded.get("output", {}).get("references_style") or "numbered"
        if chosen not in STYLES:
            raise ConfigError(f"unknown references style {chosen!r}; use one of {', '.join(STYLES)}")
        language = recorded.get("research", {}).get("language")
        if state.outline is None:
            raise StoreError(f"run {info.id} is marked finished but its last checkpoint has no outline")
        if not state.stop_reason:
            # A cap that stopped the run refused a call, so no step (and no checkpoint) followed:
            # the reason the report was written with is in the run's run_finished event.
            finished = [e for e in self._journal.events(info.id) if e.kind == "run_finished"]
            if finished:
                state.stop_reason = str(finished[-1].payload.get("stop_reason") or "")
        return build_document(
            state, run_id=info.id, manifest=manifest, style=cast(CitationStyle, chosen), language=language
        )

    # ---- the few status changes an interface makes -----------------------------------------------

    def mark(self, run_id: str, status: str, *, error: str | None = None) -> None:
        """Record a run's status (and why it failed): a server recording orphaned or failed runs."""
        self._journal.update_run(run_id, status=status, error=error)

    def record_cancelled(self, run_id: str) -> None:
        """A run cancelled before it started: its status and the event a driven run would journal."""
        info = self.get(run_id)
        self._journal.update_run(info.id, status="cancelled")
        self._journal.append_event(info.id, "run_cancelled", {"kind": "run_cancelled", "step": info.steps})


def _info(record: RunRecord) -> RunInfo:
    recorded = record.settings.get("settings") or {}
    kb = record.settings.get("kb")
    return RunInfo(
        id=record.id,
        question=record.question,
        policy=record.policy,
        status=current_status(record.id, record.status),
        recorded_status=record.status,
        created_at=record.created_at,
        updated_at=record.updated_at,
        steps=record.steps,
        error=record.error or None,
        report_path=record.report_path,
        kb=kb if isinstance(kb, str) else None,
        model=str(record.settings.get("model", "")),
        max_steps=recorded.get("research", {}).get("max_steps", 0),
        language=recorded.get("research", {}).get("language"),
        _recorded=recorded,
    )


def _stored_manifest(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


# ---- one-shot reads, for callers that need a single answer -------------------------------------------


def get_run(run_id: str) -> RunInfo:
    """`Runs.get` on the workspace's journal."""
    with Runs.open() as runs:
        return runs.get(run_id)


def run_state(run_id: str) -> RunState | None:
    """`Runs.state` on the workspace's journal."""
    with Runs.open() as runs:
        return runs.state(run_id)


def run_exists(run_id: str) -> bool:
    with Runs.open() as runs:
        return runs.exists(run_id)


def tokens_spent(run_id: str) -> int:
    """Tokens a run's journaled steps spent (0 for an unknown run): what earlier sessions used of a
    budget shared by several runs, counted as a run's own budget counts them (`Journal.spending`)."""
    with Runs.open() as runs:
        if not runs.exists(run_id):
            return 0
        return runs._journal.spending(runs.get(run_id).id)[0]


def restore_report(run_id: str) -> None:
    """Write a finished run's report.md into its folder again, from the journal, if the file is gone.

    A call that finished a run can stop before it recorded so (a batch line left 'running', a Ray
    worker that died before its files came back); the run is not driven again
    (`RunAlreadyFinished`), and its report, kept in the journal, stands.
    """
    folder = run_folder(run_id)
    path = folder / "report.md"
    if path.is_file():
        return
    listed = versions.list_versions(folder)
    if listed:  # the current version is the report as it stood, hand edits and restores included
        markdown = versions.read_version(folder, listed[-1])
    else:
        with Runs.open() as runs:
            markdown = runs.report_document(run_id).markdown
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, markdown.encode("utf-8", errors="surrogateescape"))
