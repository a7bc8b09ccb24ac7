"""Starting and resuming runs: settings → LLM, retriever, journal → policy → report.

Together with `wiring` (which builds each part from the settings) this is the composition root:
the only place objects are wired together. A run gets an id and a folder under
`DEEPDRAFT_HOME/runs/`, its settings and corpus are recorded in the journal, and every action's
checkpoint is written as the policy reports it. `resume` rebuilds the same policy from what was
recorded and continues from the last checkpoint: finished actions are never redone, and the LLM
cache hands back any reply that arrived after the last checkpoint, so an interrupted run ends with
the report it would have had.

A file lock on the run folder keeps two processes from driving the same run at once; the kernel
drops it when a process dies, even by SIGKILL.
"""

from __future__ import annotations

import copy
import json
import secrets
import threading
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from deepdraft.core.outline import Outline
from deepdraft.core.state import AskProgress, RunState
from deepdraft.egress import EgressLog
from deepdraft.errors import (
    CommandRefused,
    DeepdraftError,
    KnowledgeBaseError,
    ReportEdited,
    RunAlreadyFinished,
    RunCancelled,
    RunFailed,
    RunNotFound,
    UserError,
)
from deepdraft.events import (
    ActionFinished,
    ActionStarted,
    Event,
    EventSink,
    RunStarted,
    ignore,
)
from deepdraft.events import RunCancelled as RunCancelledEvent
from deepdraft.events import RunFailed as RunFailedEvent
from deepdraft.events import RunFinished as RunFinishedEvent
from deepdraft.export.report import Reference, render_markdown
from deepdraft.llm.cache import CachingLLM
from deepdraft.llm.limits import Budget, LimitedLLM, Limiter
from deepdraft.policy import asks, sections
from deepdraft.policy.finishing.synthesis import Synthesizer
from deepdraft.policy.finishing.verify import Verifier
from deepdraft.policy.sections import SectionCommand, SectionSteps
from deepdraft.policy.warp import ReviewOutline, WarpPolicy
from deepdraft.ports import LLM, Retriever
from deepdraft.run import answers, refresh, versions
from deepdraft.run.answers import Answer
from deepdraft.run.interrupts import ctrl_c_recorded
from deepdraft.run.locks import held_alone
from deepdraft.run.refresh import Findings
from deepdraft.run.runs import current_status, run_folder, workspace_journal
from deepdraft.run.sources import add_source, pinned_passages
from deepdraft.run.wiring import (
    POLICIES,
    audit_endpoints,
    build_llm,
    build_role_llms,
    meter_kb_embedders,
    resolve_kb,
    with_web,
)
from deepdraft.settings import Settings
from deepdraft.store.journal import Journal, RunRecord


@dataclass
class Report:
    """A finished (or budget-stopped) research report."""

    run_id: str
    question: str
    title: str
    markdown: str
    path: Path | None
    stop_reason: str
    outline: Outline
    references: list[Reference] = field(default_factory=list)
    unwritten: list[str] = field(default_factory=list)
    manifest: dict[str, Any] = field(default_factory=dict)
    exports: dict[str, Path] = field(default_factory=dict)
    """Every file written for the report, by format ("md", "html", …)."""
    problems: list[str] = field(default_factory=list)
    """Formats that could not be written, and why (the run itself is finished)."""
    command_outcome: str = ""
    """A command on the finished run (deepen, rewrite, recheck) that did not do all it was asked:
    why (a refused split, a budget); "" otherwise."""

    def __str__(self) -> str:
        return self.markdown


def open_journal() -> Journal:
    """The workspace's journal, for driving runs (reading them is `deepdraft.run.runs`')."""
    return workspace_journal()


run_dir = run_folder


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)


# ---- running -------------------------------------------------------------------------------------


def start(
    question: str,
    settings: Settings,
    *,
    kb: str | None = None,
    llm: LLM | None = None,
    retriever: Retriever | None = None,
    output: Path | None = None,
    on_event: EventSink = ignore,
    run_id: str | None = None,
    cancel: threading.Event | None = None,
    review_outline: ReviewOutline | None = None,
    budget: Limiter | None = None,
) -> Report:
    """Start a new run and drive it to the end. `kb`: a KB name or a path (see `resolve_kb`).

    `cancel`, once set, stops the run before its next action (`RunCancelled`; it stays resumable);
    `review_outline` lets the user edit the first outline (see `WarpPolicy`); `budget`, shared by
    several runs, holds the run too, on top of its own limits (see `llm.limits`).
    """
    question = _checked_question(question)
    settings = _default_depth(settings, llm)
    kb_ref = None
    if settings.web.only and (kb is not None or retriever is not None):
        raise UserError("--web-only searches no knowledge base: drop --kb, or use --web to search both")
    egress = EgressLog()
    if retriever is None and not settings.web.only:
        retriever, kb_ref = resolve_kb(kb, settings)
    retriever = with_web(retriever, settings, egress)
    llm = llm or build_llm(settings)
    run_id = run_id or new_run_id()
    _record_run(run_id, question, settings, kb_ref, retriever, llm.model_name, output)
    return _drive(
        run_id,
        RunState(question=question),
        settings,
        llm,
        retriever,
        output,
        on_event,
        cancel,
        review_outline,
        egress=egress,
        budget=budget,
    )


def create(
    question: str,
    settings: Settings,
    *,
    kb: str | None = None,
    model: str | None = None,
    run_id: str | None = None,
) -> str:
    """Record a new run without driving it, and return its id; `resume` drives it later.

    For callers that queue runs (the server): the KB is checked now, so a bad request fails at
    once, and a queued run is in the journal — a server restart cannot lose it. `model` names the
    LLM that will be used (None: the one `settings` configure).
    """
    question = _checked_question(question)
    settings = _default_depth(settings, None)
    retriever, kb_ref = (None, None) if settings.web.only else resolve_kb(kb, settings)
    retriever = with_web(retriever, settings, EgressLog())
    run_id = run_id or new_run_id()
    _record_run(run_id, question, settings, kb_ref, retriever, model or settings.llm.model or "", None)
    return run_id


def _checked_question(question: str) -> str:
    question = question.strip()
    if not question:
        raise UserError("the question is empty")
    return question


def _default_depth(settings: Settings, llm: LLM | None) -> Settings:
    if llm is None and not settings.llm.base_url:
        # The small embedded model will write the report: only the quick preset finishes in
        # minutes on a CPU, so it is the default there (an explicit --depth still wins).
        return settings.with_default_depth("quick")
    return settings


def _record_run(
    run_id: str,
    question: str,
    settings: Settings,
    kb_ref: str | None,
    retriever: Retriever,
    model: str,
    output: Path | None,
) -> None:
    recorded = {
        "settings": settings.public_dict(),
        "kb": kb_ref,
        "corpus_fingerprint": retriever.fingerprint(),
        "model": model,
        "output": str(output) if output else None,
    }
    with open_journal() as journal:
        journal.create_run(run_id, question, settings.research.policy, recorded)


def resume(
    run_id: str,
    settings: Settings,
    *,
    llm: LLM | None = None,
    retriever: Retriever | None = None,
    on_event: EventSink = ignore,
    cancel: threading.Event | None = None,
    review_outline: ReviewOutline | None = None,
    budget: Limiter | None = None,
    force: bool = False,
) -> Report:
    """Continue a run from its last checkpoint, with the settings it was started with.

    Only how to reach the LLM (`settings.llm` connection fields) is taken from the current
    settings, since keys are never stored. A finished run is not driven again
    (`RunAlreadyFinished`): it would journal another start and finish of a run that did nothing.
    A run stopped during a command on its report (`run_command`) takes that command up again.
    A report.md edited by hand since the run's last report version is not overwritten unless
    `force` (`ReportEdited`; see `versions.ensure_unedited`).
    """
    return _drive_recorded(
        run_id,
        settings,
        None,
        llm=llm,
        retriever=retriever,
        on_event=on_event,
        cancel=cancel,
        review_outline=review_outline,
        budget=budget,
        force=force,
    )


def run_command(
    run_id: str,
    command: SectionCommand,
    settings: Settings,
    *,
    llm: LLM | None = None,
    retriever: Retriever | None = None,
    on_event: EventSink = ignore,
    cancel: threading.Event | None = None,
    budget: Limiter | None = None,
    force: bool = False,
) -> Report:
    """Continue a finished run with a command on its report (`policy/sections.py`), and finish it again.

    The run is the same run: same journal, same settings and budgets (`command.max_steps` aside),
    every LLM call a step. Its status goes finished → continuing → finished; stopped on the way,
    it is resumed (`resume`) into the same command. A section the user edited by hand since the
    last report version is not overwritten unless `force` (`ReportEdited`).
    """
    ensure_commandable(run_id, command, force=force)
    if command.command == "add-source" and not command.pinned:
        command, retriever = with_added_source(run_id, command, settings, retriever)
    elif command.command == "refresh" and not command.stale:
        findings = find_stale(run_id, settings, retriever=retriever)
        if not findings.stale:
            raise UserError(nothing_to_refresh(run_id, findings))
        command = replace(command, stale=tuple(findings.stale))
    return _drive_recorded(
        run_id,
        settings,
        command,
        llm=llm,
        retriever=retriever,
        on_event=on_event,
        cancel=cancel,
        budget=budget,
        force=force,
    )


def with_added_source(
    run_id: str, command: SectionCommand, settings: Settings, retriever: Retriever | None
) -> tuple[SectionCommand, Retriever]:
    """`command` with the passages of the document it adds, once that is in the run's knowledge
    base (`run/sources`); and the retriever the command searches (the KB, opened with it).

    Done before the command's first step (by a server, before the command is queued, so that a
    file or URL it cannot add is refused at once): adding is idempotent, so a command that is
    killed before its start is journaled is simply given again."""
    record, state = load_run(run_id)
    assert state is not None and state.outline is not None and command.section is not None  # checked
    stored = _stored_settings(record, settings)
    egress = EgressLog()
    with open_journal() as journal, egress.attached(journal, record.id):  # a fetched page is audited
        added = add_source(
            record.id, record.settings.get("kb"), command.source, stored, run_dir(record.id), egress,
            command.section,
        )  # fmt: skip
    located = state.outline.find(command.section)
    assert located is not None
    count = max(1, stored.research.node_evidence // 2)  # the search still fills the other half
    pinned = pinned_passages(added.kb, added, state, located.position, count)
    return replace(command, pinned=tuple(pinned)), retriever or added.kb


def find_stale(run_id: str, settings: Settings, *, retriever: Retriever | None = None) -> Findings:
    """The sections of a finished run that `deepdraft refresh` would write again, and why: how its
    knowledge base changed since the current report was written (`run/refresh`). Changes nothing.

    `retriever`: the knowledge base to compare with (None: the one the run recorded)."""
    with open_journal() as journal:
        record = journal.get_run(run_id)
        checkpoint = journal.latest_checkpoint(record.id)
        steps = journal.steps(record.id)
    state = None if checkpoint is None else RunState.restore(checkpoint[1])
    _refuse_unless_finished(record, state)
    if state is None or state.outline is None:
        raise UserError(f"run {record.id} has no outline to work on")
    stored = _stored_settings(record, settings)
    if retriever is None:
        kb_ref = record.settings.get("kb")
        if kb_ref is None:
            raise UserError(
                f"run {record.id} searched no knowledge base of its own (a --web-only run, or one given a "
                "retriever object), so there is no change to refresh it from"
            )
        retriever, _ = resolve_kb(kb_ref, stored)
    kb = refresh.knowledge_base(retriever)
    if kb is None:
        raise UserError(
            f"the knowledge base of run {record.id} cannot list its documents, so refresh cannot compare"
        )
    before = refresh.recorded_documents(run_dir(record.id), record.id)
    changes = refresh.compare(before, refresh.listed_documents(kb))
    keywords = refresh.latest_keywords(steps)
    numbers = _source_numbers(state)
    stale = refresh.stale_sections(state, kb, changes, keywords, stored.research, numbers)
    return Findings(changes, stale)


def nothing_to_refresh(run_id: str, findings: Findings) -> str:
    """What `refresh` says when no section needs writing again."""
    if not findings.changes:
        return f"nothing to refresh: the knowledge base of run {run_id} is as its report saw it"
    return (
        f"nothing to refresh: the knowledge base of run {run_id} changed ({findings.changes.describe()}), "
        "but no section cites what changed or would be shown a new passage"
    )


def ensure_commandable(run_id: str, command: SectionCommand, *, force: bool = False) -> None:
    """A `UserError` unless `command` can be given to the run now: the run is finished (not running,
    not stopped during a command; `CommandRefused`), the command's section and options fit its
    outline (`SectionNotFound` for a section it lacks, see `sections.check`), and it would not
    overwrite a section the user edited in report.md by hand unless `force` (`ReportEdited`).

    Asked before the command is driven (or queued), so that a refusal comes at once and changes
    nothing; the drive asks again under the run's lock.
    """
    with open_journal() as journal:
        record = journal.get_run(run_id)
        checkpoint = journal.latest_checkpoint(record.id)
    state = None if checkpoint is None else RunState.restore(checkpoint[1])
    _refuse_unless_finished(record, state)
    located = sections.check(state, command, record.id)
    touched = None if located is None else [located.position]
    versions.refuse_if_edited(run_dir(record.id), touched, force=force)


def ask(
    run_id: str,
    question: str,
    settings: Settings,
    *,
    llm: LLM | None = None,
    retriever: Retriever | None = None,
    on_event: EventSink = ignore,
) -> Answer:
    """Answer a follow-up question on a finished run from its evidence and a fresh search of its KB
    (`policy/asks.py`), cited in the report's numbering; the answer is stored with the run
    (`Runs.asks`) and the report is left as it is (`run_command` with an "ask" command writes the
    answer into it instead).

    Every LLM call is a directed journal step: an ask stopped on the way and asked again with the
    same question goes on from its last step, re-asking the request that was in flight, and an
    answer journaled but not yet stored is stored rather than asked for again. A different question
    starts afresh (the unanswered one is dropped: it has nothing to keep).
    """
    question = ensure_askable(run_id, question)
    with open_journal() as journal:
        record = journal.get_run(run_id)
    stored = Settings.model_validate(_restore_secret(record.settings["settings"], settings))
    egress = EgressLog()
    retriever = _recorded_retriever(record, stored, retriever, egress)
    llm = llm or build_llm(stored)
    folder = run_dir(record.id)
    with _exclusive(folder, record.id), open_journal() as journal, egress.attached(journal, record.id):
        # Read again under the lock: a command may have changed the run meanwhile.
        record = journal.get_run(record.id)
        checkpoint = journal.latest_checkpoint(record.id)
        state = None if checkpoint is None else RunState.restore(checkpoint[1])
        _refuse_unless_finished(record, state, locked=True)
        assert state is not None and state.outline is not None  # a finished run has both
        prompt_limit = (
            getattr(llm, "context_window", None) or stored.llm.context_window
        ) - stored.llm.max_tokens
        counter = getattr(llm, "count_tokens", None)
        llm, _ = _run_models(record.id, stored, llm, retriever, egress, journal)
        sink = _JournalSink(journal, record.id, on_event, directed=True)
        asker = asks.Asker(llm, retriever, stored.research, sink, prompt_limit, counter)
        style = stored.output.references_style
        numbering = _source_numbers(state)
        stored_steps = {row.step for row in journal.asks(record.id)}

        def store(ask: AskProgress) -> None:
            journal.record_ask(answers.ask_record(record.id, ask, state.registry, numbering, style))

        # An ask of an earlier session that was stopped before its answer was stored: the same
        # question goes on from its last step (an answered one is only stored); another question
        # starts afresh, after storing that one's answer if it has one.
        ask = state.ask
        unstored = ask is not None and ask.into is None and ask.begun_at_step not in stored_steps
        if unstored and ask is not None and ask.done and ask.question != question:
            store(ask)
        if not unstored or ask is None or ask.question != question:
            ask = asker.begin(state, question)
        asker.run(state)
        store(ask)
        return _stored_ask(journal, record.id, ask.begun_at_step)


def ensure_askable(run_id: str, question: str) -> str:
    """`question` as it will be asked (`UserError` when it is empty or too long), once the run is
    known to be finished (not running, not stopped during a command)."""
    question = asks.checked_question(question)
    with open_journal() as journal:
        record = journal.get_run(run_id)
        checkpoint = journal.latest_checkpoint(record.id)
    _refuse_unless_finished(record, None if checkpoint is None else RunState.restore(checkpoint[1]))
    return question


def _stored_ask(journal: Journal, run_id: str, step: int) -> Answer:
    return Answer.of(next(row for row in journal.asks(run_id) if row.step == step))


def _store_answer_section(journal: Journal, run_id: str, state: RunState, settings: Settings) -> None:
    """An "ask" command's answer, kept with the run's answers once its section is in the report."""
    command, ask = state.continuation, state.ask
    if command is None or command.command != "ask" or ask is None or ask.into != command.position:
        return
    assert state.outline is not None and command.node_id is not None
    section = state.outline.find_id(command.node_id)
    journal.record_ask(
        answers.ask_record(
            run_id,
            ask,
            state.registry,
            _source_numbers(state),
            settings.output.references_style,
            report_sources=state.source_numbers,
            text=section.node.content if section is not None else None,
        )
    )


def _refuse_unless_finished(record: RunRecord, state: RunState | None, *, locked: bool = False) -> None:
    """A command is given to a finished run only (`CommandRefused` otherwise). `locked`: asked under
    the run's lock, where a run recorded as running or continuing is one whose process died (see
    `runs.current_status`)."""
    status = "interrupted" if locked and record.status in ("running", "continuing") else record.status
    status = current_status(record.id, status)
    if status == "finished":
        return
    if status in ("running", "continuing"):
        raise CommandRefused(f"run {record.id} is being driven right now; wait until it is finished")
    if state is not None and state.continuing and state.continuation is not None:
        command = state.continuation
        given = command.command if command.node_id is None else f"{command.command} {command.position}"
        if command.command == "ask":
            given = "ask --into-report"
        raise CommandRefused(
            f"run {record.id} stopped during `{given.replace('section-', '')}`; "
            f"finish that first with: deepdraft resume {record.id}"
        )
    raise CommandRefused(
        f"run {record.id} is not finished (it is {status}); "
        f"finish it first with: deepdraft resume {record.id}"
    )


def _drive_recorded(
    run_id: str,
    settings: Settings,
    command: SectionCommand | None,
    *,
    llm: LLM | None = None,
    retriever: Retriever | None = None,
    on_event: EventSink = ignore,
    cancel: threading.Event | None = None,
    review_outline: ReviewOutline | None = None,
    budget: Limiter | None = None,
    force: bool = False,
) -> Report:
    """Drive a recorded run from its last checkpoint (with `command`: a command on its report)."""
    with open_journal() as journal:
        record = journal.get_run(run_id)
        checkpoint = journal.latest_checkpoint(record.id)
    if command is None:
        _refuse_finished(record)
    stored = _stored_settings(record, settings)
    egress = EgressLog()
    retriever = _recorded_retriever(record, stored, retriever, egress)
    llm = llm or build_llm(stored)
    state = RunState(question=record.question) if checkpoint is None else RunState.restore(checkpoint[1])
    output = record.settings.get("output")
    return _drive(
        record.id,
        state,
        stored,
        llm,
        retriever,
        Path(output) if output else None,
        on_event,
        cancel,
        review_outline,
        egress=egress,
        budget=budget,
        command=command,
        kind="resumed",
        force=force,
    )


def _recorded_retriever(
    record: RunRecord, stored: Settings, retriever: Retriever | None, egress: EgressLog
) -> Retriever:
    """The run's own KB (the one it recorded), with the web search its settings allow."""
    if retriever is None and not stored.web.only:
        kb = record.settings.get("kb")
        if kb is None:
            raise KnowledgeBaseError(
                f"run {record.id} was started with a retriever object; pass it to resume"
            )
        retriever, _ = resolve_kb(kb, stored)  # "kb:NAME" or the path recorded at the start
    return with_web(retriever, stored, egress)  # the same web search, answered from its cache


def ensure_unfinished(run_id: str) -> None:
    """`RunAlreadyFinished` when the run has its report already (checked before showing progress)."""
    with open_journal() as journal:
        _refuse_finished(journal.get_run(run_id))


def _refuse_finished(record: RunRecord) -> None:
    if record.status == "finished":
        where = f" (report: {record.report_path})" if record.report_path else ""
        raise RunAlreadyFinished(
            f"run {record.id} is already finished{where}; nothing to resume "
            f"(deepdraft export {record.id} writes its report again)"
        )


def _stored_settings(record: RunRecord, current: Settings) -> Settings:
    """The settings the run was started with, reaching the LLM as `current` says."""
    return Settings.model_validate(_restore_secret(record.settings["settings"], current))


def _restore_secret(stored: dict[str, Any], current: Settings) -> dict[str, Any]:
    """The recorded settings, with how to reach the LLM taken from now (keys are never stored)."""
    data: dict[str, Any] = copy.deepcopy(stored)
    for key in ("base_url", "model", "api_key"):
        value = getattr(current.llm, key)
        if value or key == "api_key":
            data["llm"][key] = value
    # Older runs recorded no embedding section; their KB was opened without an embedding key.
    if "embedding" in data:
        data["embedding"]["api_key"] = current.embedding.api_key
    return data


def _writing(state: RunState, kind: str, force: bool) -> versions.Writing:
    """How the report this drive ends with is recorded: as `kind` (a research run's first
    report, a resumed one's), or as a command's on the sections it works on (also when the
    command is resumed)."""
    command = state.continuation if state.continuing else None
    if command is None:
        return versions.Writing(kind, force=force)
    if command.command in ("add-source", "refresh"):
        touched = [item.position for item in command.set_aside()]
        names = ", ".join(position.removeprefix("section-") for position in touched)
        why = (
            f"with {command.source}"
            if command.command == "add-source"
            else "after the knowledge base changed"
        )
        return versions.Writing(
            command.command, f"{names} written again {why}", sections=touched, force=force
        )
    whole = command.node_id is None  # recheck of the whole report
    return versions.Writing(command.command, sections=None if whole else [command.position], force=force)


def _drive(
    run_id: str,
    state: RunState,
    settings: Settings,
    llm: LLM,
    retriever: Retriever,
    output: Path | None,
    on_event: EventSink,
    cancel: threading.Event | None = None,
    review_outline: ReviewOutline | None = None,
    *,
    egress: EgressLog | None = None,
    budget: Limiter | None = None,
    command: SectionCommand | None = None,
    kind: str = "research",
    force: bool = False,
) -> Report:
    """Drive the run to its report: the policy and the finishing passes, or, for a command on a
    finished run (`command`, or one a resumed run was stopped in), that command's steps and the
    finishing passes over what it changed. Either way `_write_report` writes the report as a new
    report version (see `run/versions`): one that would overwrite a section the user edited by
    hand since the last version is refused unless `force`."""
    folder = run_dir(run_id)
    folder.mkdir(parents=True, exist_ok=True)
    # Every request off this machine is written to the journal as it happens (see `egress`).
    egress = egress or EgressLog()
    with (
        _exclusive(folder, run_id),
        ctrl_c_recorded() as interrupted,
        open_journal() as journal,
        egress.attached(journal, run_id),
    ):
        # Asked again under the lock: another process may have finished the run meanwhile (or,
        # for a command, started one on it).
        if command is None:
            _refuse_finished(journal.get_run(run_id))
        else:
            _refuse_unless_finished(journal.get_run(run_id), state, locked=True)
            state.source_numbers = _source_numbers(state)
            sections.begin(state, command, settings.research, run_id)
        continuing = state.continuing
        writing = _writing(state, kind, force)
        # Refused now, before any work, rather than after the research: a hand edit is checked
        # again right before the report is written (the user may edit while the run goes on).
        # The reason is recorded so that a client that queued the resume (the server) can show it.
        try:
            versions.ensure_unedited(folder, writing.sections, force=writing.force)
        except ReportEdited as exc:
            journal.update_run(run_id, error=str(exc))
            raise
        # The model's own window and tokenizer when it has them (the embedded model does), before
        # the cache wrapper hides them.
        prompt_limit = (
            getattr(llm, "context_window", None) or settings.llm.context_window
        ) - settings.llm.max_tokens
        counter = getattr(llm, "count_tokens", None)
        llm, roles = _run_models(run_id, settings, llm, retriever, egress, journal, budget)
        # Every step of a command on the finished run was directed by the user (see `StepRecord`).
        sink = _JournalSink(journal, run_id, on_event, cancel, interrupted, directed=continuing)
        research = settings.research
        if state.continuation is not None and continuing:
            # A command takes WARP's steps whatever policy wrote the report, within its own steps.
            research = research.model_copy(update={"max_steps": state.continuation.max_steps})
        policy = (WarpPolicy if continuing else POLICIES[settings.research.policy])(
            llm,
            retriever,
            research,
            sink,
            prompt_limit=prompt_limit,
            count_tokens=counter,
            roles=roles,
            review_outline=review_outline,
            force_expansions=settings.research.force_expansions,
        )
        # A command: "continuing" before its start is journaled, so a kill in between leaves a run
        # that a resume simply finishes again, never a finished run whose state is mid-command.
        journal.update_run(run_id, status="continuing" if continuing else "running", error="")
        sink(RunStarted(run_id, state.question, policy.name, state.step, research.max_steps))
        try:
            if command is not None:
                assert isinstance(policy, WarpPolicy)
                SectionSteps(policy).record_start(state)
            if continuing:
                assert isinstance(policy, WarpPolicy)
                state = _continue(policy, state, settings, llm, sink, prompt_limit, counter)
            else:
                state = _finish(policy.run(state), settings, llm, sink, prompt_limit, counter)
            sink.stop_if_interrupted()  # a Ctrl-C during the last action leaves the report unwritten
        except KeyboardInterrupt:
            journal.update_run(run_id, status="interrupted")
            raise
        except RunCancelled:
            journal.update_run(run_id, status="cancelled")
            sink(RunCancelledEvent(state.step))
            raise
        except DeepdraftError as exc:
            journal.update_run(run_id, status="failed", error=str(exc))
            sink(RunFailedEvent(str(exc)))
            raise
        except BaseException as exc:
            journal.update_run(run_id, status="failed", error=f"{type(exc).__name__}: {exc}")
            raise
        if state.outline is None:  # pragma: no cover - the policy raises before this can happen
            raise RunFailed("the run ended without an outline")
        try:
            report = _write_report(run_id, state, settings, llm, retriever, output, folder, writing)
        except KeyboardInterrupt:  # every action is kept: a resume only writes the report
            journal.update_run(run_id, status="interrupted")
            raise
        except ReportEdited as exc:  # the user edited report.md meanwhile: resume --force goes on
            journal.update_run(run_id, status="interrupted", error=str(exc))
            raise
        _store_answer_section(journal, run_id, state, settings)
        journal.update_run(run_id, status="finished", report_path=str(report.path))
        sink(RunFinishedEvent(state.stop_reason, str(report.path)))
        return report


def _finish(
    state: RunState,
    settings: Settings,
    llm: LLM,
    sink: EventSink,
    prompt_limit: int,
    counter: Any,
    *,
    scope: set[str] | None = None,
    verify: bool | None = None,
) -> RunState:
    """The finishing passes over the policy's draft: verification, then synthesis.

    They resume like the policy does; they are not policy actions, so the step budget never
    refuses them (the token budget does, see verify/synthesis). `scope`: the nodes verification
    checks (None: all); `verify`: whether it runs (None: as the settings say).
    """
    if settings.output.verify if verify is None else verify:
        verifier = Verifier(llm, settings.research, settings.output, sink, prompt_limit, counter, scope)
        state = verifier.run(state)
    if settings.output.synthesis:
        state = Synthesizer(llm, settings.research, sink, prompt_limit, counter).run(state)
    return state


def _source_numbers(state: RunState) -> dict[str, int]:
    """The numbers the finished report gives its sources (numbered style), with those of sources an
    earlier command left uncited, so that no number ever passes to another source."""
    assert state.outline is not None
    rendered = render_markdown(
        state.outline,
        state.registry,
        summary=state.summary,
        conclusion=state.conclusion,
        question=state.question,
        numbering=state.source_numbers,
    )
    return {**state.source_numbers, **{ref.source.doc_id: ref.number for ref in rendered.references}}


def _continue(
    policy: WarpPolicy,
    state: RunState,
    settings: Settings,
    llm: LLM,
    sink: EventSink,
    prompt_limit: int,
    counter: Any,
) -> RunState:
    """A command on a finished run: its policy actions, then the finishing passes over what it
    changed (a recheck verifies whatever the settings say: that is what it was asked to do)."""
    state = SectionSteps(policy).run(state)
    assert state.continuation is not None
    recheck = state.continuation.command == "recheck"
    verify = settings.output.verify or recheck
    state = _finish(
        state, settings, llm, sink, prompt_limit, counter, scope=sections.verify_scope(state), verify=verify
    )
    sections.concluded(state)
    return state


def _run_models(
    run_id: str,
    settings: Settings,
    llm: LLM,
    retriever: Retriever,
    egress: EgressLog,
    journal: Journal,
    budget: Limiter | None = None,
) -> tuple[LLM, dict[str, LLM]]:
    """The run's model and role models, metered for the egress audit, cached and budgeted.

    A cap, a rate or a time limit in the run's settings gives the run a budget of its own, counted
    from what the journal says the run spent before; `budget`, shared with other runs (a
    `RunPool`'s), applies on top of it. The role models spend from the same budgets.
    """
    roles = build_role_llms(settings)
    # Metered inside the cache: only requests that really reach the endpoint are counted.
    llm, roles = audit_endpoints(egress, settings, llm, roles)
    meter_kb_embedders(retriever, egress)
    if settings.llm.cache:
        llm = CachingLLM(llm, journal, namespace=run_id)
        roles = {role: CachingLLM(model, journal, namespace=run_id) for role, model in roles.items()}
    budgets: list[Limiter] = []
    if settings.llm.max_tokens_total or settings.llm.requests_per_minute or settings.research.max_time:
        # The run's own budget is the run's, not this process's: what earlier sessions spent counts.
        tokens, seconds = journal.spending(run_id)
        budgets.append(
            Budget(
                max_tokens_total=settings.llm.max_tokens_total,
                requests_per_minute=settings.llm.requests_per_minute,
                max_time_s=settings.research.max_time,
                spent_tokens=tokens,
                spent_seconds=seconds,
            )
        )
    if budget is not None:
        budgets.append(budget)
    if budgets:
        # The role models spend from the same budgets as the main model.
        limited = LimitedLLM(llm, *budgets)
        llm, roles = limited, {role: limited.sharing(model) for role, model in roles.items()}
    return llm, roles


class _JournalSink:
    """Forwards every event at once and journals it.

    Events raised while an action is under way are held back and written in the same transaction
    as that action's step and checkpoint, so after a crash the journal never shows events of a step
    that the resumed run will do again.

    It is also where a stop takes effect: once `cancel` is set, the next action is refused before
    it starts (a finished action is never thrown away, and the run can be resumed); so is it once
    `interrupted` is, in case the KeyboardInterrupt of that Ctrl-C got lost (see `interrupts`).
    """

    def __init__(
        self,
        journal: Journal,
        run_id: str,
        forward: EventSink,
        cancel: threading.Event | None = None,
        interrupted: threading.Event | None = None,
        *,
        directed: bool = False,
    ) -> None:
        self.journal, self.run_id, self.forward = journal, run_id, forward
        self.cancel, self.interrupted, self.directed = cancel, interrupted, directed
        self.pending: list[tuple[str, dict[str, Any]]] = []

    def stop_if_interrupted(self) -> None:
        if self.interrupted is not None and self.interrupted.is_set():
            raise KeyboardInterrupt

    def __call__(self, event: Event) -> None:
        if isinstance(event, ActionStarted):
            self.stop_if_interrupted()
            if self.cancel is not None and self.cancel.is_set():
                raise RunCancelled(
                    f"run {self.run_id} was cancelled; continue it with: deepdraft resume {self.run_id}"
                )
        self.forward(event)
        if isinstance(event, RunStarted | RunFinishedEvent | RunFailedEvent | RunCancelledEvent):
            self.pending = []  # events of an action that never finished are not kept
            self.journal.append_event(self.run_id, event.kind, event.to_dict())
            return
        self.pending.append((event.kind, event.to_dict()))
        if isinstance(event, ActionFinished):
            record = replace(event.record, directed=True) if self.directed else event.record
            self.journal.record_step(self.run_id, record, event.state, self.pending)
            self.pending = []


def _exclusive(folder: Path, run_id: str) -> AbstractContextManager[None]:
    return held_alone(folder / "lock", lambda owner: f"run {run_id} is being driven by {owner} right now")


def _write_report(
    run_id: str,
    state: RunState,
    settings: Settings,
    llm: LLM,
    retriever: Retriever,
    output: Path | None,
    folder: Path,
    writing: versions.Writing,
) -> Report:
    """Write report.md (a new report version), manifest.json and every format in
    `settings.output.formats` to the run folder.

    A format that cannot be produced (a missing optional package, a broken template) does not
    fail the finished run: the default Markdown is always written, and the problem is returned in
    `Report.problems` so the caller can say how to export again (`deepdraft export`).
    """
    assert state.outline is not None
    from deepdraft.export import default_name, export, render, write_atomically
    from deepdraft.export.document import build_document
    from deepdraft.run.manifest import build_manifest

    with open_journal() as journal:
        record = journal.get_run(run_id)
        steps, events = journal.steps(run_id), journal.events(run_id)
    style = settings.output.references_style
    document = build_document(state, run_id=run_id, style=style, language=settings.research.language)
    manifest = build_manifest(
        run_id=run_id,
        question=state.question,
        settings=settings.public_dict(),
        model=llm.model_name,
        state=state,
        steps=steps,
        events=events,
        retriever=retriever,
        kb=record.settings.get("kb"),
        fingerprint=retriever.fingerprint(),
        created_at=record.created_at,
        finished_at=time.time(),
        unwritten=document.unwritten,
        sources_cited=len(document.references),
        references_style=style,
    )
    document = replace(document, manifest=manifest)
    problems: list[str] = []
    try:
        markdown = render(document, "md", template=settings.output.template).decode("utf-8")
    except UserError as exc:
        problems.append(f"md: {exc} (the default layout was written instead)")
        markdown = document.markdown
    path = output or folder / "report.md"
    versions.ensure_unedited(folder, writing.sections, force=writing.force)
    note = writing.note or f"{versions.KINDS.get(writing.kind, writing.kind)} ({state.stop_reason or 'done'})"
    versions.record_version(folder, markdown, kind=writing.kind, note=note, step=state.step)
    if path != folder / "report.md":
        write_atomically(path, markdown.encode("utf-8"))
    manifest_json = json.dumps(manifest, indent=2, ensure_ascii=False) + "\n"
    write_atomically(folder / "manifest.json", manifest_json.encode("utf-8"))
    exports: dict[str, Path] = {"md": path}
    for fmt in dict.fromkeys(settings.output.formats):
        if fmt == "md":
            continue
        try:
            exports[fmt] = export(document, fmt, folder / default_name(fmt))
        except UserError as exc:
            problems.append(f"{fmt}: {exc} (retry with: deepdraft export {run_id} --format {fmt})")
    return Report(
        run_id=run_id,
        question=state.question,
        title=state.outline.title,
        markdown=markdown,
        path=path,
        stop_reason=state.stop_reason,
        outline=state.outline,
        references=document.rendered.references,
        unwritten=document.unwritten,
        manifest=manifest,
        exports=exports,
        problems=problems,
        command_outcome=state.continuation.outcome if state.continuation is not None else "",
    )


def run_exists(run_id: str) -> bool:
    with open_journal() as journal:
        try:
            journal.get_run(run_id)
        except RunNotFound:
            return False
    return True


def load_run(run_id: str) -> tuple[RunRecord, RunState | None]:
    """A run's journal record and its latest state (None before the first checkpoint).

    For the run package and its tests; everything else reads runs through `deepdraft.run.runs`.
    """
    with open_journal() as journal:
        record = journal.get_run(run_id)
        checkpoint = journal.latest_checkpoint(record.id)
    return record, None if checkpoint is None else RunState.restore(checkpoint[1])
