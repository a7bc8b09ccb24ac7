"""Live progress for the terminal: the outline growing, the current action, running counts; a batch's counts.

On a terminal a `rich.live.Live` panel is redrawn on every event; elsewhere (pipes, CI, logs) each
finished action is printed as one plain line, so the output stays readable in a file.
"""

from __future__ import annotations

import threading
import time
from types import TracebackType
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.text import Text
from rich.tree import Tree

from deepdraft.core.outline import Outline
from deepdraft.events import (
    ActionFinished,
    ActionStarted,
    Event,
    EvidenceAdded,
    NodeSkipped,
    NodeWritten,
    OutlineChanged,
    RunStarted,
)
from deepdraft.export.report import clean_title
from deepdraft.run.batch import LineState

POLICY_ACTIONS = frozenset({"search", "init-plan", "write", "extend-plan", "full-plan"})
"""The actions a policy takes (and `max_steps` counts); the rest are finishing passes."""


def outline_tree(outline: Outline, highlight: frozenset[str] = frozenset()) -> Tree:
    """The outline as a rich tree: ✓ written, · pending, ✗ given up; new nodes highlighted."""
    root = Tree(Text(outline.title, style="bold"))
    branches: dict[str, Tree] = {}
    for located in outline.walk():
        node = located.node
        mark = "✓" if node.written else ("✗" if node.note else "·")
        style = "green" if node.written else ("red" if node.note else "dim")
        if located.position in highlight:
            style = "bold yellow"
        number = located.position.removeprefix("section-")
        label = Text(f"{mark} {number} {clean_title(node.title)}", style=style)
        parent_position = located.position.rsplit(".", 1)[0] if "." in located.position else None
        parent = branches.get(parent_position, root) if parent_position else root
        branches[located.position] = parent.add(label)
    return root


class Progress:
    def __init__(
        self, console: Console, max_steps: int, start_step: int = 0, outline: Outline | None = None
    ) -> None:
        self.console = console
        self.max_steps = max_steps
        self.step = start_step
        self.current = "starting"
        self.outline = outline
        self.new_nodes: frozenset[str] = frozenset()
        self.sources: set[str] = set()
        self.written = 0
        self.tokens = 0
        self.live: Live | None = None

    def __enter__(self) -> Progress:
        if self.console.is_terminal:
            self.live = Live(self._render(), console=self.console, refresh_per_second=4, transient=False)
            self.live.__enter__()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.live is not None:
            self.live.update(self._render())
            self.live.__exit__(kind, value, tb)

    def update(self, event: Event) -> None:
        match event:
            case RunStarted(run_id=run_id, resumed_at_step=step, max_steps=max_steps):
                self.step = step or self.step
                self.max_steps = max_steps or self.max_steps
                verb = f"resuming run {run_id} at step {step}" if step else f"run {run_id}"
                self.console.print(verb, markup=False, highlight=False)
            case ActionStarted(step=step, action=action, target=target):
                self.step, self.current = step, f"{action} {target}"
            case EvidenceAdded(sources=sources):
                self.sources.update(sources)
            case OutlineChanged(outline=data, added=added):
                self.outline = Outline.model_validate(data)
                self.new_nodes = frozenset(added)
            case NodeWritten(position=position) | NodeSkipped(position=position):
                if self.outline is not None and (located := self.outline.find(position)) is not None:
                    if isinstance(event, NodeWritten):
                        located.node.content = event.text
                        self.written += 1
                    else:
                        located.node.note = event.note
            case ActionFinished(record=record):
                self.tokens += record.prompt_tokens + record.completion_tokens
                if self.live is None:
                    self._print_line(record)
        if self.live is not None:
            self.live.update(self._render())

    def _print_line(self, record: Any) -> None:
        status = "ok" if record.valid else f"refused: {record.reason}"
        cached = " (cached)" if record.cached else ""
        # Verification and synthesis come after the policy's budgeted actions and are not counted
        # against it: "step 23/22" would read as a broken budget.
        counter = f"step {record.step}/{self.max_steps}" if record.action in POLICY_ACTIONS else "finishing:"
        self.console.print(
            f"{counter} {record.action} {record.target}: {status}{cached}",
            markup=False,
            highlight=False,
        )

    def _render(self) -> Group:
        status = Text.assemble(
            ("step ", "dim"),
            (f"{self.step}/{self.max_steps}", "bold"),
            ("  now: ", "dim"),
            (self.current, "cyan"),
            ("  written: ", "dim"),
            (str(self.written), "bold"),
            ("  sources: ", "dim"),
            (str(len(self.sources)), "bold"),
            ("  tokens: ", "dim"),
            (f"{self.tokens:,}", "bold"),
        )
        if self.outline is None:
            return Group(status)
        return Group(outline_tree(self.outline, self.new_nodes), status)


class BatchProgress:
    """Progress of a batch: lines done / running / failed, tokens and an ETA.

    On a terminal one status line is redrawn as runs move; elsewhere each line that ends prints
    one plain line. Listeners are called from the batch's worker threads, hence the lock.
    """

    def __init__(self, console: Console, total: int) -> None:
        self.console = console
        self.total = total
        self.statuses: dict[str, str] = {}
        self.tokens_by_line: dict[str, int] = {}
        self.started = time.monotonic()
        self.finished_here = 0
        """Lines finished by this call (the ETA is measured on them, not on earlier calls' lines)."""
        self.live: Live | None = None
        self._lock = threading.Lock()

    def __enter__(self) -> BatchProgress:
        if self.console.is_terminal:
            self.live = Live(self._render(), console=self.console, refresh_per_second=4, transient=True)
            self.live.__enter__()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.live is not None:
            self.live.__exit__(kind, value, tb)

    def line(self, state: LineState) -> None:
        with self._lock:
            before = self.statuses.get(state.id)
            self.statuses[state.id] = state.status
            self.tokens_by_line[state.id] = state.tokens
            ended = before is not None and before != state.status and state.status != "running"
            if ended and state.status == "finished" and before == "running":
                self.finished_here += 1
            if ended and before == "running" and self.live is None:
                detail = state.error if state.status != "finished" else state.reports.get("md", "")
                self.console.print(
                    f"{state.id}: {state.status} ({state.seconds:.0f} s, {state.tokens:,} tokens) {detail}",
                    markup=False,
                    highlight=False,
                    soft_wrap=True,
                )
            self._refresh()

    def event(self, line_id: str, event: Event) -> None:
        if isinstance(event, ActionFinished) and not event.record.cached:
            with self._lock:
                used = event.record.prompt_tokens + event.record.completion_tokens
                self.tokens_by_line[line_id] = self.tokens_by_line.get(line_id, 0) + used
                self._refresh()

    def _refresh(self) -> None:
        if self.live is not None:
            self.live.update(self._render())

    def counts(self) -> dict[str, int]:
        counted = {"finished": 0, "running": 0, "failed": 0}
        for status in self.statuses.values():
            if status in counted:
                counted[status] += 1
        return counted

    def eta(self) -> str:
        counted = self.counts()
        left = self.total - counted["finished"] - counted["failed"]
        if not self.finished_here or not left:
            return "-"
        seconds = (time.monotonic() - self.started) / self.finished_here * left
        return f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"

    def _render(self) -> Text:
        counted = self.counts()
        return Text.assemble(
            ("done ", "dim"),
            (f"{counted['finished']}/{self.total}", "bold green"),
            ("  running ", "dim"),
            (str(counted["running"]), "bold cyan"),
            ("  failed ", "dim"),
            (str(counted["failed"]), "bold red" if counted["failed"] else "bold"),
            ("  tokens ", "dim"),
            (f"{sum(self.tokens_by_line.values()):,}", "bold"),
            ("  ETA ", "dim"),
            (self.eta(), "bold"),
        )
