"""Runs driven for a long-lived interface: a bounded pool of workers, and what a client is told of them.

The REST server drives its runs here; the MCP server shares `settings_for_run` and `LLMFactory`.

A run is recorded in the journal the moment it is requested (`runner.create`), then waits in the
pool's queue; a worker drives it with `runner.resume`, which starts a run with no checkpoint from
the beginning. So a queued run survives a restart like a running one does, and there is one code
path for "start" and "continue".

Trade-offs:

* Threads, not processes: the runs go through a `RunPool`, the bounded pool every interface uses.
  A run spends its time waiting on the LLM (I/O) and on short searches; threads share the
  process's indexes and the event loop stays free. `workers` bounds the runs driven at once; the
  rest wait in the pool's queue, in order. A request rate in the server's settings holds for all
  its runs together (the pool's budget); a token cap stays each run's own.
* The journal is the truth. Statuses shown to clients are the journal's, refined by what only this
  process knows (queued here, waiting for a plan review) and by the run-folder lock: a run the
  journal calls "running" that nobody drives — the server was killed — is "interrupted". At
  start-up such runs are marked interrupted in the journal, and stay resumable.
* Cancelling is cooperative: the run stops before its next action, never mid-call, so no paid
  LLM reply is thrown away and the run can be resumed later.
* Stopping the server (Ctrl-C) cancels every run the same way and records it as interrupted; it
  returns once the LLM calls in flight have ended.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from deepdraft.core.outline import Outline
from deepdraft.errors import CommandRefused, DeepdraftError, KnowledgeBaseError, RunCancelled, UserError
from deepdraft.policy.sections import SectionCommand
from deepdraft.ports import LLM
from deepdraft.retrieval.kb import names as kbs
from deepdraft.run import runner
from deepdraft.run.answers import Answer
from deepdraft.run.pool import RunPool
from deepdraft.run.refresh import Findings
from deepdraft.run.runs import RunInfo, Runs, is_active, run_folder
from deepdraft.settings import Settings

LLMFactory = Callable[[Settings], LLM]
"""Builds the LLM for a run from that run's settings (tests inject a scripted model here)."""

Status = Literal[
    "queued", "running", "continuing", "awaiting_review", "finished", "failed", "cancelled", "interrupted"
]
"""A run as clients see it; "continuing": a command on its finished report is under way (deepen,
rewrite, recheck, add-source, refresh), after which it is "finished" again with a new report version."""
RESUMABLE = frozenset({"interrupted", "failed", "cancelled"})
"""Statuses (as `RunManager.status` reports them) of runs that nobody drives and that can go on."""
STALE_AFTER_S = 30.0
"""A run created this long ago that nobody started was orphaned by a dead server."""


class RunConflict(UserError):
    """The run is not in a state that allows this (e.g. resuming a run that is being driven)."""


class ReviewGate:
    """The plan-review handshake: a worker waits here with the proposed outline until a user answers.

    The worker calls the gate (it is the policy's `review_outline` hook); an HTTP request calls
    `submit`. Cancelling the run releases the waiting worker, which then stops like any cancelled run.
    """

    def __init__(self, cancel: threading.Event) -> None:
        self._cancel = cancel
        self._changed = threading.Condition()
        self.proposed: Outline | None = None
        self._answer: Outline | None = None
        self._answered = False

    def __call__(self, outline: Outline) -> Outline | None:
        with self._changed:
            self.proposed, self._answered = outline, False
            while not self._answered and not self._cancel.is_set():
                self._changed.wait(timeout=0.5)  # wakes on submit; the timeout notices a cancel
            self.proposed = None
            if not self._answered:
                raise RunCancelled("the run was cancelled during plan review")
            return self._answer

    def submit(self, outline: Outline | None) -> None:
        with self._changed:
            if self.proposed is None:
                raise RunConflict("the run is not waiting for a plan review")
            self._answer, self._answered = outline, True
            self._changed.notify_all()


@dataclass
class LiveRun:
    """A run this server has queued or is driving."""

    run_id: str
    cancel: threading.Event = field(default_factory=threading.Event)
    started: bool = False
    gate: ReviewGate | None = None
    future: Future[None] | None = None
    command: SectionCommand | None = None
    """A command on the finished run's report, driven instead of a resume."""


def settings_for_run(base: Settings, overrides: dict[str, dict[str, Any]]) -> Settings:
    """`base` with a request's choices (None: keep); a chosen depth fills in what its preset sets."""
    data = base.model_dump(exclude_unset=True)
    depth = overrides.get("research", {}).get("depth")
    for section, values in overrides.items():
        for key, value in values.items():
            if value is not None and (section, key) != ("research", "depth"):
                data.setdefault(section, {})[key] = value
    if depth is not None:
        data.get("research", {}).pop("depth", None)
    try:
        settings = Settings.model_validate(data)
    except ValueError as exc:
        raise UserError(f"invalid run settings: {exc}") from exc
    return settings.with_default_depth(depth) if depth is not None else settings


class RunManager:
    """Creates, queues, drives, cancels and resumes runs for the HTTP API (one per server), and
    queues the commands on a finished run's report (`command`) the same way."""

    def __init__(self, settings: Settings, *, workers: int, llm_factory: LLMFactory | None = None) -> None:
        if workers < 1:
            raise UserError("--workers must be at least 1")
        self.settings = settings
        self.llm_factory = llm_factory
        self.workers = workers
        self._pool = RunPool.for_settings(settings, workers, name="deepdraft-run", share_tokens=False)
        self._live: dict[str, LiveRun] = {}
        self._lock = threading.Lock()
        self._closing = False

    # ---- lifecycle -------------------------------------------------------------------------------

    def recover(self) -> list[str]:
        """Mark runs a dead process left "running" (or queued) as interrupted; returns their ids."""
        now = time.time()
        orphaned: list[str] = []
        with Runs.open() as runs:
            for record in runs.all():
                stale = record.recorded_status in ("running", "continuing") or (
                    record.recorded_status == "created" and now - record.updated_at > STALE_AFTER_S
                )
                if stale and record.id not in self._live and not is_active(record.id):
                    runs.mark(record.id, "interrupted")
                    orphaned.append(record.id)
        return orphaned

    def close(self, timeout: float = 30.0) -> None:
        """Stop taking runs, stop the running ones before their next action, record them interrupted."""
        with self._lock:
            self._closing = True
            live = list(self._live.values())
        for run in live:
            run.cancel.set()
        self._pool.shutdown(wait=False, cancel_futures=True)
        deadline = time.monotonic() + timeout
        for run in live:
            if run.future is not None and not run.future.cancelled():
                try:
                    run.future.exception(timeout=max(0.0, deadline - time.monotonic()))
                except TimeoutError:
                    continue  # still in an LLM call; its status is fixed by the next start-up
        with Runs.open() as runs:
            for run in live:
                if runs.get(run.run_id).recorded_status in ("running", "continuing", "created", "cancelled"):
                    runs.mark(run.run_id, "interrupted")

    # ---- requests --------------------------------------------------------------------------------

    def create(
        self,
        question: str,
        *,
        kb: str | None,
        overrides: dict[str, dict[str, Any]],
        review: bool = False,
    ) -> str:
        """Record a run and queue it; returns its id. Bad questions, KBs or settings fail here."""
        settings = settings_for_run(self.settings, overrides)
        if review and settings.research.policy != "warp":
            raise UserError("plan review is available with the warp policy only")
        if kb is not None:
            # Over HTTP a KB is a name, never a server path: a client must not index what it likes.
            if not kbs.kb_exists(kbs.validate_kb_name(kb)):
                raise KnowledgeBaseError(f"no knowledge base named {kb!r} (see GET /api/kbs)")
            kb = f"kb:{kb}"
        run_id = runner.create(question, settings, kb=kb, model=settings.llm.model)
        self._submit(run_id, review=review)
        return run_id

    def resume(self, run_id: str, *, review: bool = False, force: bool = False) -> str:
        """Queue a stopped run again; it continues from its last checkpoint. `force`: write its
        report even over a hand edit of report.md (kept as a report version first)."""
        with Runs.open() as runs:
            record = runs.get(run_id)
        status = self.status(record)
        if status not in RESUMABLE:
            raise RunConflict(f"run {record.id} is {status.replace('_', ' ')}; only a stopped run can resume")
        self._submit(record.id, review=review, force=force)
        return record.id

    def command(self, run_id: str, command: SectionCommand, *, force: bool = False) -> tuple[str, int]:
        """Queue a command on a finished run's report (deepen, rewrite, recheck; see
        `runner.run_command`); returns the run's id and the number of its last event before the
        command, after which the command's events follow on the run's event stream.

        Refused at once, with nothing changed: a run queued or driven (`RunConflict`), one that is
        not finished, a section it lacks or that cannot take the command, a hand edit of report.md
        in the way unless `force` (see `runner.ensure_commandable`).
        """
        run_id, after = self._idle(run_id)
        runner.ensure_commandable(run_id, command, force=force)
        self._submit(run_id, review=False, force=force, command=command)
        return run_id, after

    def refresh(
        self, run_id: str, *, max_steps: int | None = None, force: bool = False
    ) -> tuple[str, int, Findings]:
        """Queue `refresh` on a finished run, with the sections its knowledge base's changes
        concern (`runner.find_stale`); returns them with the run's id and last event, as `command`.
        `CommandRefused` (saying why) when there is nothing to refresh: no command is queued."""
        run_id, after = self._idle(run_id)
        findings = runner.find_stale(run_id, self.settings)
        if not findings.stale:
            raise CommandRefused(runner.nothing_to_refresh(run_id, findings))
        command = SectionCommand("refresh", None, max_steps=max_steps, stale=tuple(findings.stale))
        runner.ensure_commandable(run_id, command, force=force)
        self._submit(run_id, review=False, force=force, command=command)
        return run_id, after, findings

    def add_source(
        self,
        run_id: str,
        command: SectionCommand,
        *,
        force: bool = False,
        upload: Callable[[Path], tuple[Path, bool]] | None = None,
    ) -> tuple[str, int, SectionCommand]:
        """Add the document of an add-source `command` to the run's knowledge base now, then queue
        the command (returned with the passages it pins, and the rest as `command` returns): a file
        or URL that cannot be added is refused in the request, before anything is queued
        (`runner.with_added_source`).

        `upload`: stores a file the client sent in the folder it is given (the run folder's
        `sources/`) and returns its path, which becomes the command's source, and whether it is
        new there. It is called once the run and the command's section are known to be fine, so a
        command refused for them stores nothing; a new file that cannot be added is removed again,
        so that the user can send a mended one under the same name.
        """
        run_id, after = self._idle(run_id)
        runner.ensure_commandable(run_id, command, force=force)
        stored, new = None, False
        if upload is not None:
            stored, new = upload(run_folder(run_id) / "sources")
            command = replace(command, source=str(stored))
        try:
            command, _ = runner.with_added_source(run_id, command, self.settings, None)
        except DeepdraftError:
            if stored is not None and new:
                stored.unlink(missing_ok=True)
            raise
        self._submit(run_id, review=False, force=force, command=command)
        return run_id, after, command

    def _idle(self, run_id: str) -> tuple[str, int]:
        """The run's full id and its last event's number; `RunConflict` when it is queued or driven."""
        with Runs.open() as runs:
            record = runs.get(run_id)
            events = runs.events(record.id)
        status = self.status(record)
        if status in ("queued", "running", "continuing", "awaiting_review"):
            raise RunConflict(f"run {record.id} is {status.replace('_', ' ')}; wait until it is finished")
        return record.id, events[-1].seq if events else 0

    def cancel(self, run_id: str) -> Literal["cancelled", "cancelling"]:
        """Stop a queued run now ("cancelled"), or a running one before its next action ("cancelling")."""
        with Runs.open() as runs:
            record = runs.get(run_id)
        with self._lock:
            live = self._live.get(record.id)
        if live is None:
            raise RunConflict(f"run {record.id} is not queued or running here ({self.status(record)})")
        live.cancel.set()
        if live.future is not None and live.future.cancel():
            # It never started: nothing will record the cancellation but us. A command that never
            # started leaves the run as it was: finished, with its report.
            self._forget(record.id)
            if live.command is None:
                with Runs.open() as runs:
                    runs.record_cancelled(record.id)
            return "cancelled"
        return "cancelling"

    def submit_review(self, run_id: str, edited: Outline | None) -> None:
        gate = self.review_gate(run_id)
        if gate is None:
            raise RunConflict(f"run {run_id} is not waiting for a plan review")
        gate.submit(edited)

    # ---- what clients see ------------------------------------------------------------------------

    def review_gate(self, run_id: str) -> ReviewGate | None:
        with self._lock:
            live = self._live.get(run_id)
        return live.gate if live is not None else None

    def pending_review(self, run_id: str) -> Outline | None:
        gate = self.review_gate(run_id)
        return gate.proposed if gate is not None else None

    def is_live(self, run_id: str) -> bool:
        """Queued or driven by this server, or driven by another process (the CLI, another server)."""
        with self._lock:
            if run_id in self._live:
                return True
        return is_active(run_id)

    def status(self, record: RunInfo) -> Status:
        with self._lock:
            live = self._live.get(record.id)
        recorded = record.recorded_status
        if live is not None:
            if not live.started:
                return "queued"
            if live.command is not None or recorded == "continuing":
                return "continuing"
            return (
                "awaiting_review" if live.gate is not None and live.gate.proposed is not None else "running"
            )
        # "continuing": a command on the finished report (`deepdraft deepen` …) is under way.
        if recorded in ("running", "created", "continuing"):
            if not is_active(record.id):
                return "interrupted"
            return "continuing" if recorded == "continuing" else "running"
        if recorded in ("finished", "failed", "cancelled", "interrupted"):
            return recorded  # type: ignore[return-value]  # checked just above
        return "interrupted"

    # ---- internals -------------------------------------------------------------------------------

    def ask(self, run_id: str, question: str) -> Answer:
        """Answer a follow-up question on a finished run in the caller's thread (`runner.ask`); the
        run's lock keeps it apart from a command driven on the same run meanwhile."""
        with Runs.open() as runs:
            record = runs.get(run_id)
        with self._lock:
            if record.id in self._live:
                raise RunConflict(f"run {record.id} is queued or running; ask once it is finished")
        llm = self.llm_factory(record.settings) if self.llm_factory is not None else None
        return runner.ask(record.id, question, self.settings, llm=llm)

    def _submit(
        self, run_id: str, *, review: bool, force: bool = False, command: SectionCommand | None = None
    ) -> None:
        with self._lock:
            if self._closing:
                raise RunConflict("the server is shutting down")
            if run_id in self._live:
                raise RunConflict(f"run {run_id} is already queued or running")
            live = LiveRun(run_id, command=command)
            if review:
                live.gate = ReviewGate(live.cancel)
            self._live[run_id] = live
            live.future = self._pool.submit(self._drive, live, force)

    def _drive(self, live: LiveRun, force: bool = False) -> None:
        with self._lock:
            live.started = True
        try:
            llm = None
            if self.llm_factory is not None:
                with Runs.open() as runs:
                    llm = self.llm_factory(runs.get(live.run_id).settings)
            if live.command is not None:
                runner.run_command(
                    live.run_id,
                    live.command,
                    self.settings,
                    llm=llm,
                    cancel=live.cancel,
                    budget=self._pool.budget,
                    force=force,
                )
            else:
                runner.resume(
                    live.run_id,
                    self.settings,
                    llm=llm,
                    cancel=live.cancel,
                    review_outline=live.gate,
                    budget=self._pool.budget,
                    force=force,
                )
        except DeepdraftError as exc:
            # Once driving, the runner records the status and the reason itself; an error before
            # that (the KB was deleted, no LLM; for a command, the run changed since it was
            # queued) is recorded here so the user sees why. A command leaves the run finished.
            with Runs.open() as runs:
                recorded = runs.get(live.run_id).recorded_status
                if recorded == "created" or (live.command is not None and recorded == "finished"):
                    runs.mark(live.run_id, recorded if recorded == "finished" else "failed", error=str(exc))
        except Exception as exc:
            # A bug, not a user mistake; still never lose the run: record it and keep serving others.
            with Runs.open() as runs:
                if runs.get(live.run_id).recorded_status in ("created", "running", "continuing"):
                    runs.mark(live.run_id, "failed", error=f"{type(exc).__name__}: {exc}")
            raise
        finally:
            self._forget(live.run_id)

    def _forget(self, run_id: str) -> None:
        with self._lock:
            self._live.pop(run_id, None)
