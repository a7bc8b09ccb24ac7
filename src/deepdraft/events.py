"""The typed event stream of a run.

The policy emits events to one callback; the run journal, the CLI's live display and (later) the
server's event stream all consume the same events. Every event serialises to a small JSON object
(`to_dict`) — except the checkpointed state in `ActionFinished`, which only the journal stores.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar


@dataclass(frozen=True)
class Event:
    kind: ClassVar[str] = "event"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **asdict(self)}


@dataclass(frozen=True)
class RunStarted(Event):
    kind: ClassVar[str] = "run_started"
    run_id: str
    question: str
    policy: str
    resumed_at_step: int = 0
    max_steps: int = 0


@dataclass(frozen=True)
class ActionStarted(Event):
    kind: ClassVar[str] = "action_started"
    step: int
    action: str  # search | init-plan | write | extend-plan | full-plan
    target: str  # "outline" or a position such as "section-2.1"


@dataclass(frozen=True)
class StepRecord:
    """Everything about one LLM action, as the journal keeps it."""

    step: int
    action: str
    prompt: str
    reply: str
    parsed: dict[str, Any] | None
    valid: bool
    reason: str | None
    prompt_tokens: int
    completion_tokens: int
    started_at: float
    finished_at: float
    cached: bool
    target: str = ""  # "outline" or the position the action worked on
    directed: bool = False
    """Taken for a command the user gave the finished run (deepen, rewrite, recheck): the user,
    not the policy, chose what to work on, so training data leaves the step out."""


@dataclass(frozen=True)
class StateChanges:
    """A checkpoint written as what changed since an earlier one: the state after step `since`,
    with each JSON pointer (RFC 6901) of `values` set to its value.

    Pointers address the state as `RunState.snapshot` writes it ("/finishing_steps",
    "/verification/sentences/3") and name parts that exist there; a pointer's value replaces that
    part whole. The journal stores such a checkpoint as it is and rebuilds the state on reading.
    """

    since: int
    values: dict[str, Any]


@dataclass(frozen=True)
class ActionFinished(Event):
    """One action is complete and its effects are in `state` (the checkpoint to resume from):
    the whole state, or what changed since the previous step's checkpoint."""

    kind: ClassVar[str] = "action_finished"
    record: StepRecord
    state: dict[str, Any] | StateChanges = field(repr=False)

    def to_dict(self) -> dict[str, Any]:
        r = self.record
        return {
            "kind": self.kind,
            "step": r.step,
            "action": r.action,
            "target": r.target,
            "valid": r.valid,
            "reason": r.reason,
            "prompt_tokens": r.prompt_tokens,
            "completion_tokens": r.completion_tokens,
            "seconds": round(r.finished_at - r.started_at, 3),
            "cached": r.cached,
        }


@dataclass(frozen=True)
class EvidenceAdded(Event):
    kind: ClassVar[str] = "evidence_added"
    target: str
    keywords: list[str]
    keys: list[str]  # the evidence now in view, by citation key
    new_keys: list[str]  # those seen for the first time in this run
    sources: list[str]  # titles of the documents the evidence comes from


@dataclass(frozen=True)
class OutlineChanged(Event):
    kind: ClassVar[str] = "outline_changed"
    outline: dict[str, Any]
    added: list[str]  # positions of the new nodes


@dataclass(frozen=True)
class OutlineReviewed(Event):
    """The user saw the first outline before any writing (plan review); `outline` is what goes on."""

    kind: ClassVar[str] = "outline_reviewed"
    outline: dict[str, Any]
    edited: bool


@dataclass(frozen=True)
class NodeWritten(Event):
    kind: ClassVar[str] = "node_written"
    position: str
    title: str
    text: str


@dataclass(frozen=True)
class NodeSkipped(Event):
    kind: ClassVar[str] = "node_skipped"
    position: str
    title: str
    note: str


@dataclass(frozen=True)
class RunFinished(Event):
    kind: ClassVar[str] = "run_finished"
    stop_reason: str
    report_path: str | None = None


@dataclass(frozen=True)
class RunFailed(Event):
    kind: ClassVar[str] = "run_failed"
    error: str


@dataclass(frozen=True)
class RunCancelled(Event):
    """The run stopped between two actions because someone cancelled it; it can be resumed."""

    kind: ClassVar[str] = "run_cancelled"
    step: int


@dataclass(frozen=True)
class VerificationFinished(Event):
    """Every cited sentence of the report was checked against its passages (see verify.py)."""

    kind: ClassVar[str] = "verification_finished"
    checked: int
    supported: int
    repaired: int
    recited: int
    removed: int
    unverified: int
    llm_calls: int
    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True)
class SynthesisFinished(Event):
    """The summary and conclusion were written (or omitted) and the question's constraints checked."""

    kind: ClassVar[str] = "synthesis_finished"
    summary: bool
    conclusion: bool
    constraints_checked: int
    unmet: list[str]  # requirements the report does not meet, in the user's words


EventSink = Callable[[Event], None]


def ignore(_: Event) -> None:
    """The default sink: drop every event."""
