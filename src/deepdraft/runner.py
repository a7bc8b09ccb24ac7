"""The composition root: settings → LLM, retriever, journal → policy → report.

This is the only place objects are wired together. A run gets an id and a folder under
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
import fcntl
import json
import os
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from deepdraft._version import __version__
from deepdraft.baseline import PlanThenWritePolicy
from deepdraft.errors import (
    ConfigError,
    DeepdraftError,
    KnowledgeBaseError,
    RunFailed,
    RunNotFound,
    UserError,
)
from deepdraft.events import (
    ActionFinished,
    Event,
    EventSink,
    RunStarted,
    ignore,
)
from deepdraft.events import RunFailed as RunFailedEvent
from deepdraft.events import RunFinished as RunFinishedEvent
from deepdraft.journal import Journal, RunRecord
from deepdraft.llm.cache import CachingLLM
from deepdraft.llm.limits import LimitedLLM
from deepdraft.outline import Outline
from deepdraft.ports import LLM, Retriever
from deepdraft.report import Reference, render_markdown
from deepdraft.settings import Settings, home_dir
from deepdraft.state import RunState
from deepdraft.warp import WarpPolicy

POLICIES: dict[str, type[WarpPolicy]] = {"warp": WarpPolicy, "plan-write": PlanThenWritePolicy}

NO_LLM_MESSAGE = (
    "no LLM configured and the embedded model is not ready ({why}). Run `deepdraft setup` for the "
    "embedded model, or pass --base-url (an OpenAI-compatible server such as vLLM, llama.cpp, Ollama "
    "or LM Studio, e.g. http://localhost:8000/v1) and --model. deepdraft never sends your text to a "
    "service you did not name."
)


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

    def __str__(self) -> str:
        return self.markdown


# ---- building the parts ------------------------------------------------------------------------


def build_llm(settings: Settings) -> LLM:
    """The endpoint the user named, else the embedded model — never a service nobody named."""
    if settings.llm.base_url:
        from deepdraft.llm.openai_compat import OpenAICompatibleLLM

        return OpenAICompatibleLLM.from_settings(settings.llm)
    from deepdraft.llm.embedded import load_embedded

    try:
        return load_embedded(
            settings.llm.model,
            temperature=settings.llm.temperature,
            top_p=settings.llm.top_p,
            max_tokens=settings.llm.max_tokens,
            seed=settings.research.seed or 0,
        )
    except ConfigError as exc:
        raise ConfigError(NO_LLM_MESSAGE.format(why=str(exc).rstrip("."))) from exc


def build_role_llms(settings: Settings) -> dict[str, LLM]:
    """Models chosen for single roles (`--planner-model`, `--writer-model`), on the same endpoint."""
    roles: dict[str, LLM] = {}
    for role, name in (("planner", settings.llm.planner_model), ("writer", settings.llm.writer_model)):
        if name and name != settings.llm.model:
            roles[role] = build_llm(
                settings.model_copy(update={"llm": settings.llm.model_copy(update={"model": name})})
            )
    return roles


def resolve_kb(kb: str | None, settings: Settings) -> tuple[Retriever, str]:
    """The retriever for `--kb`, and how to find it again on resume.

    `kb` is a knowledge-base name or a path (a name wins when both exist). Without one: the KB
    `default` if it has documents, else the bundled `demo` corpus.
    """
    from deepdraft import kb as kbs

    if kb is None:
        name = kbs.DEFAULT_KB if kbs.kb_has_documents(kbs.DEFAULT_KB) else kbs.DEMO_KB
        if name == kbs.DEMO_KB and not kbs.kb_exists(name):
            _index_demo_if_present()
        return kbs.open_kb(name), f"kb:{name}"
    if kb.startswith("kb:"):
        return kbs.open_kb(kb.removeprefix("kb:")), kb
    if kbs.is_kb_name(kb) and kbs.kb_exists(kb):
        return kbs.open_kb(kb), f"kb:{kb}"
    path = Path(kb).expanduser()
    if not path.exists():
        raise KnowledgeBaseError(
            f"no knowledge base named {kb!r} and no file or folder {path} "
            "(give a KB name, a folder of .txt/.md files or a .jsonl corpus)"
        )
    return open_corpus(path, settings), str(path.resolve())


def _index_demo_if_present() -> None:
    """A new workspace indexes the demo corpus that `deepdraft setup` left in the shared cache."""
    from deepdraft import demo

    if demo.demo_corpus_path().is_file():
        demo.ensure_demo_kb()


def open_corpus(path: Path, settings: Settings) -> Retriever:
    """Index a folder or file of documents on the fly (cached under the workspace)."""
    from deepdraft.retrieval.bm25_index import open_or_build

    path = path.expanduser()
    if not path.exists():
        raise KnowledgeBaseError(
            f"knowledge base not found: {path} (give a folder of .txt/.md files or a .jsonl)"
        )
    return open_or_build(path.resolve(), home_dir() / "indexes", settings.retrieval)


def open_journal() -> Journal:
    return Journal(home_dir() / "journal.sqlite")


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)


def run_dir(run_id: str) -> Path:
    return home_dir() / "runs" / run_id


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
) -> Report:
    """Start a new run and drive it to the end. `kb`: a KB name or a path (see `resolve_kb`)."""
    question = question.strip()
    if not question:
        raise UserError("the question is empty")
    if llm is None and not settings.llm.base_url:
        # The small embedded model will write the report: only the quick preset finishes in
        # minutes on a CPU, so it is the default there (an explicit --depth still wins).
        settings = settings.with_default_depth("quick")
    kb_ref = None
    if retriever is None:
        retriever, kb_ref = resolve_kb(kb, settings)
    llm = llm or build_llm(settings)
    run_id = run_id or new_run_id()
    recorded = {
        "settings": settings.public_dict(),
        "kb": kb_ref,
        "corpus_fingerprint": retriever.fingerprint(),
        "model": llm.model_name,
        "output": str(output) if output else None,
    }
    with open_journal() as journal:
        journal.create_run(run_id, question, settings.research.policy, recorded)
    return _drive(run_id, RunState(question=question), settings, llm, retriever, output, on_event)


def resume(
    run_id: str,
    settings: Settings,
    *,
    llm: LLM | None = None,
    retriever: Retriever | None = None,
    on_event: EventSink = ignore,
) -> Report:
    """Continue a run from its last checkpoint, with the settings it was started with.

    Only how to reach the LLM (`settings.llm` connection fields) is taken from the current
    settings, since keys are never stored.
    """
    with open_journal() as journal:
        record = journal.get_run(run_id)
        checkpoint = journal.latest_checkpoint(record.id)
    stored = Settings.model_validate(_restore_secret(record.settings["settings"], settings))
    if retriever is None:
        kb = record.settings.get("kb")
        if kb is None:
            raise KnowledgeBaseError(
                f"run {record.id} was started with a retriever object; pass it to resume"
            )
        retriever = open_corpus(Path(kb), stored)
    llm = llm or build_llm(stored)
    state = RunState(question=record.question) if checkpoint is None else RunState.restore(checkpoint[1])
    output = record.settings.get("output")
    return _drive(record.id, state, stored, llm, retriever, Path(output) if output else None, on_event)


def _restore_secret(stored: dict[str, Any], current: Settings) -> dict[str, Any]:
    """The recorded settings, with how to reach the LLM taken from now (keys are never stored)."""
    data: dict[str, Any] = copy.deepcopy(stored)
    for key in ("base_url", "model", "api_key"):
        value = getattr(current.llm, key)
        if value or key == "api_key":
            data["llm"][key] = value
    return data


def _drive(
    run_id: str,
    state: RunState,
    settings: Settings,
    llm: LLM,
    retriever: Retriever,
    output: Path | None,
    on_event: EventSink,
) -> Report:
    folder = run_dir(run_id)
    folder.mkdir(parents=True, exist_ok=True)
    started = time.time()
    with _exclusive(folder, run_id), open_journal() as journal:
        # The model's own window and tokenizer when it has them (the embedded model does), before
        # the cache wrapper hides them.
        window = getattr(llm, "context_window", None) or settings.llm.context_window
        counter = getattr(llm, "count_tokens", None)
        roles = build_role_llms(settings)
        if settings.llm.cache:
            llm = CachingLLM(llm, journal, namespace=run_id)
            roles = {role: CachingLLM(model, journal, namespace=run_id) for role, model in roles.items()}
        if settings.llm.max_tokens_total or settings.llm.requests_per_minute:
            llm = LimitedLLM(
                llm,
                max_tokens_total=settings.llm.max_tokens_total,
                requests_per_minute=settings.llm.requests_per_minute,
            )
        sink = _JournalSink(journal, run_id, on_event)
        policy = POLICIES[settings.research.policy](
            llm,
            retriever,
            settings.research,
            sink,
            prompt_limit=window - settings.llm.max_tokens,
            count_tokens=counter,
            roles=roles,
        )
        journal.update_run(run_id, status="running", error="")
        sink(RunStarted(run_id, state.question, policy.name, state.step, settings.research.max_steps))
        try:
            state = policy.run(state)
        except KeyboardInterrupt:
            journal.update_run(run_id, status="interrupted")
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
        report = _write_report(run_id, state, settings, llm, retriever, output, folder, time.time() - started)
        journal.update_run(run_id, status="finished", report_path=str(report.path))
        sink(RunFinishedEvent(state.stop_reason, str(report.path)))
        return report


class _JournalSink:
    """Forwards every event at once and journals it.

    Events raised while an action is under way are held back and written in the same transaction
    as that action's step and checkpoint, so after a crash the journal never shows events of a step
    that the resumed run will do again.
    """

    def __init__(self, journal: Journal, run_id: str, forward: EventSink) -> None:
        self.journal, self.run_id, self.forward = journal, run_id, forward
        self.pending: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, event: Event) -> None:
        self.forward(event)
        if isinstance(event, RunStarted | RunFinishedEvent | RunFailedEvent):
            self.pending = []  # events of an action that never finished are not kept
            self.journal.append_event(self.run_id, event.kind, event.to_dict())
            return
        self.pending.append((event.kind, event.to_dict()))
        if isinstance(event, ActionFinished):
            self.journal.record_step(self.run_id, event.record, event.state, self.pending)
            self.pending = []


@contextmanager
def _exclusive(folder: Path, run_id: str) -> Iterator[None]:
    lock_path = folder / "lock"
    handle: TextIO = lock_path.open("a+")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            owner = handle.read().strip() or "another process"
            raise UserError(f"run {run_id} is being driven by {owner} right now") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}")
        handle.flush()
        yield
    finally:
        handle.close()


def is_active(run_id: str) -> bool:
    """True while some process holds the run's lock (i.e. the run is really running)."""
    lock_path = run_dir(run_id) / "lock"
    if not lock_path.exists():
        return False
    with lock_path.open("a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
        return False


def _write_report(
    run_id: str,
    state: RunState,
    settings: Settings,
    llm: LLM,
    retriever: Retriever,
    output: Path | None,
    folder: Path,
    seconds: float,
) -> Report:
    assert state.outline is not None
    rendered = render_markdown(state.outline, state.registry, stop_note=f"run stopped: {state.stop_reason}")
    manifest = {
        "deepdraft": __version__,
        "run_id": run_id,
        "policy": settings.research.policy,
        "settings": settings.public_dict(),
        "model": llm.model_name,
        "corpus_fingerprint": retriever.fingerprint(),
        "steps": state.step,
        "expansions": state.expansions,
        "nodes": state.outline.count(),
        "unwritten": rendered.unwritten,
        "sources_cited": len(rendered.references),
        "passages_seen": len(state.registry.items),
        "prompt_tokens": state.prompt_tokens,
        "completion_tokens": state.completion_tokens,
        "stop_reason": state.stop_reason,
        "seconds_this_session": round(seconds, 2),
    }
    path = output or folder / "report.md"
    _atomic_write(path, rendered.markdown)
    _atomic_write(folder / "manifest.json", json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    return Report(
        run_id=run_id,
        question=state.question,
        title=state.outline.title,
        markdown=rendered.markdown,
        path=path,
        stop_reason=state.stop_reason,
        outline=state.outline,
        references=rendered.references,
        unwritten=rendered.unwritten,
        manifest=manifest,
    )


def _atomic_write(path: Path, text: str) -> None:
    """Write via a temporary file and rename, so a crash never leaves half a report."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)


def run_exists(run_id: str) -> bool:
    with open_journal() as journal:
        try:
            journal.get_run(run_id)
        except RunNotFound:
            return False
    return True


def load_run(run_id: str) -> tuple[RunRecord, RunState | None]:
    """A run's record and its latest state (None before the first checkpoint)."""
    with open_journal() as journal:
        record = journal.get_run(run_id)
        checkpoint = journal.latest_checkpoint(record.id)
    return record, None if checkpoint is None else RunState.restore(checkpoint[1])
