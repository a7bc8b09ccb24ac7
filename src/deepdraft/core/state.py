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

    def snapshot(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    @classmethod
    def restore(cls, data: dict[str, Any]) -> RunState:
        return cls.model_validate(data)
