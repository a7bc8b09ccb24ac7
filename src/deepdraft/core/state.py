"""The whole state of a research run: what a checkpoint stores and a resume restores.

The policy is a function of this state and the replies it gets, so a run restored from its last
checkpoint continues exactly as it would have without the interruption.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from deepdraft.core.evidence import EvidenceRegistry
from deepdraft.core.outline import Outline
from deepdraft.core.verification import (
    ConstraintCheck,
    SynthesisProgress,
    Verification,
    VerificationProgress,
)

Phase = Literal["search", "plan", "write", "extend", "done"]
STATE_FORMAT = 1

Command = Literal["deepen", "rewrite", "recheck", "add-source", "refresh", "ask"]
Stage = Literal["split", "draft", "answer", "finish", "done"]


class AskProgress(BaseModel):
    """A follow-up question on the finished run (`deepdraft ask`), as far as it got.

    It lives in the state so that the journal step of each exchange carries it: an ask killed
    mid-call and asked again re-asks exactly the request in flight, from the evidence chosen when
    it began (the KB may have changed since), and an ask whose answer was journaled but not yet
    stored is stored, not asked again.
    """

    question: str
    keys: list[str]
    """The evidence shown to the model, in order: the run's passages first, then fresh ones."""
    begun_at_step: int
    """The journal step that began it: together with the run, the ask's identity."""
    asked_at: float
    tries: int = 0
    """Replies refused so far, and why the last one was (the turn a resumed ask goes on with)."""
    feedback: str = ""
    answer: str | None = None
    """The answer, citing `\\cite{textidN}` like a section; None until one was read."""
    note: str = ""
    """Why no answer could be had (every reply refused), when none was."""
    into: str | None = None
    """`--into-report`: the position of the section the answer becomes (None: a stored answer)."""

    @property
    def done(self) -> bool:
        return self.answer is not None or bool(self.note)


class SetAside(BaseModel):
    """A written node a command writes again, with what it said before (put back if no new text
    can be had) and why the command chose it."""

    node_id: str
    position: str
    """Where the node was when the command was given ("section-3.2")."""
    earlier_text: str | None = None
    earlier_note: str | None = None
    reason: str = ""
    """refresh: why this node is written again, as the user is told ("a cited passage … was removed")."""


class Continuation(BaseModel):
    """A command the user gave a finished run (`deepdraft deepen`, `rewrite`, `recheck`,
    `add-source`, `refresh`).

    It lives in the state, so every checkpoint of the command carries it and a resumed run knows
    what it was doing; `stage` says how far it got: splitting the node ("split", deepen only),
    researching and writing what has no text ("draft"), the finishing passes over what changed
    ("finish"), or over ("done").
    """

    command: Command
    node_id: str | None
    """The node the command is about (a stable id, see `Outline`); None: the whole report."""
    position: str
    """Where that node was when the command was given, as the user named it ("section-3")."""
    into: int | None = None
    """deepen: how many subsections exactly (None: the run's bounds)."""
    instructions: str = ""
    """What the user asked for this part; shown in the command's prompts."""
    max_steps: int
    """The policy's step count at which this command must stop (the run's step count when the
    command began, plus its allowance)."""
    stage: Stage
    earlier_text: str | None = None
    earlier_note: str | None = None
    """rewrite: the node's text and note before the command, put back if it cannot be written again."""
    question: str = ""
    """ask: the follow-up question whose answer becomes the command's new section."""
    outcome: str = ""
    """How the command ended when it did not do what was asked (the model refused the split, a
    budget ran out); "" when it did."""
    # Fields added with add-source and refresh; their defaults keep older checkpoints readable.
    rewrites: list[SetAside] = Field(default_factory=list)
    """add-source and refresh: the nodes written again, in document order (rewrite keeps its one
    node in `earlier_text` and `earlier_note`, as checkpoints from before these fields have it)."""
    source: str = ""
    """add-source: the file or URL the user added, as given."""
    pinned: list[str] = Field(default_factory=list)
    """add-source: evidence keys of the added document's passages, shown to the writer of the node
    first whatever its search finds."""

    def set_aside(self) -> list[SetAside]:
        """The nodes this command writes again, with their earlier text ([] for deepen, recheck)."""
        if self.command == "rewrite" and self.node_id is not None:
            return [
                SetAside(
                    node_id=self.node_id,
                    position=self.position,
                    earlier_text=self.earlier_text,
                    earlier_note=self.earlier_note,
                )
            ]
        return list(self.rewrites)


class RunState(BaseModel):
    format: int = STATE_FORMAT
    question: str
    phase: Phase = "search"
    target: str = "outline"
    """What the current action works on: "outline" before there is one, else a node position."""
    outline: Outline | None = None
    registry: EvidenceRegistry = Field(default_factory=EvidenceRegistry)
    evidence: list[str] = Field(default_factory=list)
    """Keys of the evidence retrieved for the current target (the only ones it may cite)."""
    step: int = 0
    expansions: int = 0
    retries: int = 0
    """Refused replies in a row for the current action."""
    researched_again: bool = False
    """Whether the current target already had its one extra search after repeated refusals."""
    feedback: str = ""
    """Why the last reply was refused; shown to the model when it is asked again."""
    stop_reason: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    # ---- the finishing passes after the policy stops (verify.py, synthesis.py) ----
    finished_phases: list[str] = Field(default_factory=list)
    """Finishing passes already complete ("verify", "synthesis"); a resume skips them."""
    finishing_steps: int = 0
    """Journal records made by the finishing passes. They are not policy actions, so they do not
    count against `max_steps`; their journal step numbers continue after `step`."""
    verification: Verification | None = None
    verification_progress: VerificationProgress | None = None
    summary: str = ""
    """Executive summary (Markdown citing `\\cite{textidN}` like node contents); "" when none."""
    conclusion: str = ""
    constraints: list[ConstraintCheck] = Field(default_factory=list)
    synthesis_progress: SynthesisProgress | None = None
    synthesis_notes: list[str] = Field(default_factory=list)
    """What the synthesis pass left out and why (e.g. a summary that failed validation)."""
    # ---- a command on the finished run (policy/sections.py) ----
    source_numbers: dict[str, int] = Field(default_factory=dict)
    """The numbers the finished report gave its sources (document id → number), set when a command
    begins: the report written after it keeps them, and new sources take the next free numbers."""
    continuation: Continuation | None = None
    """The user's latest command on the finished run; while its stage is not "done", the run is
    continuing and a resume takes the command up where it stopped."""
    ask: AskProgress | None = None
    """The latest follow-up question asked of the finished run (see `AskProgress`)."""

    @property
    def continuing(self) -> bool:
        return self.continuation is not None and self.continuation.stage != "done"

    def user_instructions(self) -> str:
        """The user's instructions for the current target: those of the command under way, when the
        target is the node it is about or lies under it; "" otherwise."""
        command = self.continuation
        if command is None or not self.continuing or not command.instructions or self.outline is None:
            return ""
        located = self.outline.find_id(command.node_id) if command.node_id else None
        if located is None:
            return ""
        inside = self.target == located.position or self.target.startswith(located.position + ".")
        return command.instructions if inside else ""

    def pinned_evidence(self) -> list[str]:
        """The evidence keys the user added for the current target (`deepdraft add-source`): those
        of the command under way when the target is the node it is about; [] otherwise."""
        command = self.continuation
        if command is None or not self.continuing or not command.pinned or self.outline is None:
            return []
        located = self.outline.find_id(command.node_id) if command.node_id else None
        if located is None or located.position != self.target:
            return []
        return [key for key in command.pinned if key in self.registry]

    def snapshot(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    @classmethod
    def restore(cls, data: dict[str, Any]) -> RunState:
        return cls.model_validate(data)
