"""`deepdraft batch`: one report per line of a JSONL file of questions, several runs at once, resumable.

A line is ``{"id", "question"}`` with optional ``kb``, ``policy``, ``depth``, ``language`` and
``length``; what a line leaves out comes from the command's settings. The whole file is checked
before anything runs (`read_questions`), so a typo on line 80 does not surface after an hour.

Every line is an ordinary run (`runner.start`/`runner.resume`: same journal, same folder, so
`deepdraft runs`, `show`, `export` and `resume` work on it). The batch's own state is
``batch.jsonl`` in the output folder: one line per id with its run id, status, attempts, timings
and tokens. It is rewritten whole and atomically at every change, and a line's run id is written
there *before* its run starts, so a batch killed at any moment loses nothing: the next call with
the same output folder skips the finished ids, resumes the unfinished runs from their last
checkpoint (the journal's LLM cache replays the replies already paid for) and retries failed ones,
each up to `attempts` times per call.

The runs go through a `RunPool` (the bounded pool every interface uses for runs against one
endpoint) and spend from its one budget, so `--rpm` and `--max-tokens-total` hold for the batch as
a whole; a new call counts the tokens its runs spent before.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, suppress
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, get_args

from deepdraft.errors import DeepdraftError, RunCancelled, UserError
from deepdraft.events import Event
from deepdraft.export import FORMATS, default_name
from deepdraft.fsutil import atomic_write_bytes, atomic_write_text
from deepdraft.ports import LLM
from deepdraft.retrieval.kb import names as kbs
from deepdraft.run import runner, wiring
from deepdraft.run.drivers import RunDriver, open_driver
from deepdraft.run.locks import held_alone
from deepdraft.run.manager import settings_for_run
from deepdraft.run.pool import RunOrder, RunPool
from deepdraft.run.runs import get_run, run_exists, run_folder, run_state, tokens_spent
from deepdraft.settings import Depth, PolicyName, Settings

__all__ = [
    "STATE_FILE",
    "BatchLine",
    "LineState",
    "read_questions",
    "run_batch",
]

STATE_FILE = "batch.jsonl"
LINE_FIELDS = ("id", "question", "kb", "policy", "depth", "language", "length")
_ID = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,99}")

Status = Literal["pending", "running", "finished", "failed", "interrupted"]


@dataclass(frozen=True)
class BatchLine:
    """One question of the batch, as its line gives it (None: the batch's default)."""

    number: int
    id: str
    question: str
    kb: str | None = None
    policy: PolicyName | None = None
    depth: Depth | None = None
    language: str | None = None
    length: int | None = None

    def settings(self, base: Settings) -> Settings:
        return settings_for_run(
            base,
            {
                "research": {
                    "policy": self.policy,
                    "depth": self.depth,
                    "language": self.language,
                    "length_words": self.length,
                }
            },
        )


@dataclass
class LineState:
    """One line of ``batch.jsonl``: where a question of the batch stands."""

    id: str
    question: str
    run_id: str = ""
    status: Status = "pending"
    attempts: int = 0
    """Runs started or resumed for this line, over every call of the batch."""
    error: str = ""
    started_at: float | None = None
    finished_at: float | None = None
    seconds: float = 0.0
    """Wall time spent driving the run, over every attempt."""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    reports: dict[str, str] = field(default_factory=dict)
    """Format → file in the output folder."""

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


# ---- the questions file ----------------------------------------------------------------------------


def read_questions(path: Path, *, default_kb: str | None = None) -> list[BatchLine]:
    """Every line of `path`, checked; bad lines are reported together with their numbers.

    `default_kb` is the KB of lines that name none (None: the workspace default, see `resolve_kb`).
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"no questions file {path}") from None
    except IsADirectoryError:
        raise UserError(f"{path} is a folder; give a JSONL file with one question per line") from None
    except UnicodeDecodeError as exc:
        raise UserError(f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    lines: list[BatchLine] = []
    problems: list[str] = []
    seen: dict[str, int] = {}
    known_kbs: dict[str, str | None] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        if not raw.strip():
            continue
        try:
            line = _parse_line(number, raw)
        except ValueError as exc:
            problems.append(f"line {number}: {exc}")
            continue
        if line.id in seen:
            problems.append(f"line {number}: id {line.id!r} is already used on line {seen[line.id]}")
            continue
        seen[line.id] = number
        kb = line.kb if line.kb is not None else default_kb
        if kb is not None:
            if kb not in known_kbs:
                known_kbs[kb] = _kb_problem(kb)
            if known_kbs[kb] is not None:
                problems.append(f"line {number}: {known_kbs[kb]}")
                continue
        lines.append(line)
    if problems:
        shown = "; ".join(problems[:20]) + (f"; and {len(problems) - 20} more" if len(problems) > 20 else "")
        raise UserError(f"{path}: {len(problems)} bad line(s), nothing was run: {shown}")
    if not lines:
        raise UserError(f'{path} holds no questions (one JSON object per line: {{"id", "question"}})')
    return lines


def _parse_line(number: int, raw: str) -> BatchLine:
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise ValueError(f"not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ValueError('not a JSON object; write {"id": ..., "question": ...}')
    unknown = sorted(set(data) - set(LINE_FIELDS))
    if unknown:
        raise ValueError(
            f"unknown field(s) {', '.join(map(repr, unknown))} (allowed: {', '.join(LINE_FIELDS)})"
        )
    line_id = data.get("id")
    if isinstance(line_id, int) and not isinstance(line_id, bool):
        line_id = str(line_id)
    if not isinstance(line_id, str) or not _ID.fullmatch(line_id):
        raise ValueError(
            "missing or bad id: give a string or number of letters, digits, '.', '_' or '-' "
            "(at most 100 characters; it names the report files)"
        )
    question = data.get("question")
    if not isinstance(question, str) or not question.strip():
        raise ValueError("missing question (a non-empty string)")
    return BatchLine(
        number=number,
        id=line_id,
        question=question.strip(),
        kb=_optional_text(data, "kb"),
        policy=_choice(data, "policy", get_args(PolicyName)),  # type: ignore[arg-type]
        depth=_choice(data, "depth", get_args(Depth)),  # type: ignore[arg-type]
        language=_optional_text(data, "language"),
        length=_length(data),
    )


def _optional_text(data: dict[str, Any], key: str) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{key} must be a non-empty string")
    return value.strip()


def _choice(data: dict[str, Any], key: str, choices: tuple[str, ...]) -> str | None:
    value = data.get(key)
    if value is None or value in choices:
        return value
    raise ValueError(f"{key} {value!r} is not one of {', '.join(choices)}")


def _length(data: dict[str, Any]) -> int | None:
    value = data.get("length")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError("length must be a positive whole number of words")
    return value


def _kb_problem(kb: str) -> str | None:
    """Why `kb` (a KB name or a path) cannot be searched, or None when it can."""
    if kbs.is_kb_name(kb) and kbs.kb_exists(kb):
        return None
    if Path(kb).expanduser().exists():
        return None
    return f"no knowledge base named {kb!r} and no file or folder {kb} (see: deepdraft kb list)"


# ---- the batch's state -----------------------------------------------------------------------------


class BatchState:
    """``batch.jsonl``: the state of every line, rewritten atomically whenever one changes."""

    def __init__(self, folder: Path, lines: Sequence[BatchLine]) -> None:
        self.path = folder / STATE_FILE
        self._lock = threading.Lock()
        known = self._read()
        self.lines: dict[str, LineState] = {}
        for line in lines:
            state = known.pop(line.id, None)
            if state is not None and state.question != line.question:
                raise UserError(
                    f"line {line.number}: id {line.id!r} was asked {state.question!r} in {self.path}; "
                    "give the new question a new id, or use another --out folder"
                )
            if state is not None and state.status == "running":
                # Whoever ran it died (this process holds the batch's lock now): it was interrupted.
                state = replace(state, status="interrupted")
            self.lines[line.id] = state or LineState(line.id, line.question)
        self._others = known  # ids no longer in the file: kept, never lost

    def _read(self) -> dict[str, LineState]:
        if not self.path.is_file():
            return {}
        states: dict[str, LineState] = {}
        for number, raw in enumerate(self.path.read_text(encoding="utf-8").splitlines(), 1):
            if not raw.strip():
                continue
            try:
                state = LineState(**json.loads(raw))
            except (ValueError, TypeError) as exc:
                raise UserError(f"{self.path}:{number}: not a batch state line ({exc})") from exc
            states[state.id] = state
        return states

    def update(self, line_id: str, **changes: Any) -> LineState:
        with self._lock:
            state = replace(self.lines[line_id], **changes)
            self.lines[line_id] = state
            self._write()
            return state

    def _write(self) -> None:
        rows = [*self.lines.values(), *self._others.values()]
        text = "".join(json.dumps(asdict(row), ensure_ascii=False) + "\n" for row in rows)
        atomic_write_text(self.path, text)


def _only_driver(folder: Path) -> AbstractContextManager[None]:
    """One process drives a batch folder at a time (the kernel drops the lock if it dies)."""
    return held_alone(
        folder / "batch.lock", lambda owner: f"the batch in {folder} is being run by {owner} right now"
    )


# ---- running ---------------------------------------------------------------------------------------


LineListener = Callable[[LineState], None]
EventListener = Callable[[str, Event], None]


@dataclass
class BatchOutcome:
    lines: list[LineState]
    interrupted: bool = False

    @property
    def failed(self) -> list[LineState]:
        return [line for line in self.lines if line.status != "finished"]


def run_batch(
    lines: Sequence[BatchLine],
    settings: Settings,
    folder: Path,
    *,
    concurrency: int | None = None,
    attempts: int = 2,
    default_kb: str | None = None,
    llm: LLM | None = None,
    on_line: LineListener = lambda state: None,
    on_event: EventListener = lambda line_id, event: None,
    cancel: threading.Event | None = None,
    ray: str | None = None,
) -> BatchOutcome:
    """Drive every line not finished yet, `concurrency` at a time; each is tried up to `attempts` times.

    `concurrency` None: `pool.default_concurrency` (4 with a server, 1 with the embedded model).
    `ray`: run the lines on Ray — "auto" starts a local Ray, anything else is the address of
    a cluster to join (see `run.cluster`); None drives them in this process.

    `llm` replaces the endpoint `settings` name (tests; not with `ray`); `cancel`, once set, stops
    every run before its next action and the call returns with the unfinished lines interrupted.
    """
    if concurrency is not None and concurrency < 1:
        raise UserError("--concurrency must be at least 1")
    if attempts < 1:
        raise UserError("--attempts must be at least 1")
    folder = folder.expanduser().resolve()  # batch.jsonl names the reports by absolute paths
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create the output folder {folder}: {exc.strerror or exc}") from None
    cancel = cancel or threading.Event()
    if llm is None and ray is None and not settings.llm.base_url:
        # The embedded model: loaded once for the batch, not once per line, and with the quick
        # preset that a single run gets on it (an explicit --depth or a line's depth still wins).
        settings = settings.with_default_depth("quick")
        llm = wiring.build_llm(settings)
    with _only_driver(folder):
        state = BatchState(folder, lines)
        spent = sum(tokens_spent(line.run_id) for line in state.lines.values() if line.run_id)
        pool = RunPool.for_settings(settings, concurrency, name="deepdraft-batch", spent=spent)
        for line_state in state.lines.values():
            on_line(line_state)
        todo = [line for line in lines if state.lines[line.id].status != "finished"]
        with open_driver(pool, settings, ray=ray, llm=llm, spent=spent, cancel=cancel) as runs:
            driver = _LineDriver(
                state, settings, folder, runs, attempts, default_kb, on_line, on_event, cancel
            )
            # On Ctrl-C every run stops before its next action (a reply in flight is still kept)
            # and lines not started keep their status: the next call goes on from there.
            with pool, suppress(KeyboardInterrupt):
                pool.run_all(driver.drive, todo, cancel=cancel)
        return BatchOutcome([state.lines[line.id] for line in lines], interrupted=cancel.is_set())


class _LineDriver:
    """Drives one line to its end: start or resume its run, retry it, copy its reports out."""

    def __init__(
        self,
        state: BatchState,
        settings: Settings,
        folder: Path,
        runs: RunDriver,
        attempts: int,
        default_kb: str | None,
        on_line: LineListener,
        on_event: EventListener,
        cancel: threading.Event,
    ) -> None:
        self.state, self.settings, self.folder, self.runs = state, settings, folder, runs
        self.attempts, self.default_kb = attempts, default_kb
        self.on_line, self.on_event, self.cancel = on_line, on_event, cancel

    def drive(self, line: BatchLine) -> None:
        for _ in range(self.attempts):
            if self.cancel.is_set():
                self._set(line.id, status="interrupted")
                return
            if self.runs.exhausted() and not self._run_finished(line.id):
                cap = self.settings.llm.max_tokens_total or 0
                self._set(
                    line.id, status="failed", error=f"not run: the batch's token budget of {cap:,} is spent"
                )
                return
            if self._attempt(line):
                return

    def _run_finished(self, line_id: str) -> bool:
        """True when the line's run finished though the line does not say so (its call was killed
        in between): it needs no more tokens, only its report copied."""
        run_id = self.state.lines[line_id].run_id
        return bool(run_id) and run_exists(run_id) and get_run(run_id).recorded_status == "finished"

    def _attempt(self, line: BatchLine) -> bool:
        """One start or resume of the line's run; True when nothing is left to do for it now."""
        current = self.state.lines[line.id]
        run_id = current.run_id or f"{runner.new_run_id()}-{line.id}"[:100]
        # The run id is in batch.jsonl before the run exists: a kill from here on loses nothing.
        current = self._set(
            line.id,
            run_id=run_id,
            status="running",
            error="",
            attempts=current.attempts + 1,
            started_at=current.started_at or time.time(),
        )
        began = time.monotonic()
        settings = line.settings(self.settings)
        order = RunOrder(run_id, line.question, line.kb if line.kb is not None else self.default_kb, settings)

        def forward(event: Event) -> None:
            self.on_event(line.id, event)

        try:
            problems = self.runs.drive(order, forward)
        except RunCancelled:
            self._set(line.id, status="interrupted", **self._usage(run_id, current, began))
            return True
        except DeepdraftError as exc:
            self._set(line.id, status="failed", error=str(exc), **self._usage(run_id, current, began))
            return False
        except Exception as exc:  # a bug: recorded for this line, the other lines go on
            error = f"{type(exc).__name__}: {exc}"
            self._set(line.id, status="failed", error=error, **self._usage(run_id, current, began))
            return False
        reports = self._copy_reports(line.id, run_id, settings, problems)
        self._set(
            line.id,
            status="finished",
            finished_at=time.time(),
            reports=reports,
            error="; ".join(problems),
            **self._usage(run_id, current, began),
        )
        return True

    def _copy_reports(
        self, line_id: str, run_id: str, settings: Settings, problems: list[str]
    ) -> dict[str, str]:
        """The run's report in every format it has, copied to the output folder as ID.<ext>."""
        reports: dict[str, str] = {}
        for fmt in dict.fromkeys(["md", *settings.output.formats]):
            source = run_folder(run_id) / default_name(fmt)
            if not source.is_file():
                continue  # not written: the reason is among the problems
            target = self.folder / f"{line_id}{FORMATS[fmt]}"
            try:
                atomic_write_bytes(target, source.read_bytes())
                reports[fmt] = str(target)
            except OSError as exc:  # the run is finished; its folder still holds the file
                problems.append(f"{fmt}: cannot copy {source} to {target}: {exc.strerror or exc}")
        return reports

    def _usage(self, run_id: str, before: LineState, began: float) -> dict[str, Any]:
        saved = run_state(run_id) if run_exists(run_id) else None
        return {
            "seconds": round(before.seconds + time.monotonic() - began, 2),
            "prompt_tokens": saved.prompt_tokens if saved else before.prompt_tokens,
            "completion_tokens": saved.completion_tokens if saved else before.completion_tokens,
        }

    def _set(self, line_id: str, **changes: Any) -> LineState:
        state = self.state.update(line_id, **changes)
        self.on_line(state)
        return state
