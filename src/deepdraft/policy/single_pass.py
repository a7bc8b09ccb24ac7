"""Single-pass: research once, then write the whole report in one call — the simplest baseline.

It is the "no planning, no drafting loop" end of the paper's ablation, composed of WARP's public
steps: the same opening search (keywords for the whole question), the same write prompt,
evidence, citation validation, retries and checkpoints. Instead of asking the model for an
outline, the report is a single node whose plan is the whole answer, written from the opening
evidence in one write call; then the run stops. Headings the model puts inside that text are kept
(pushed below the node's level when rendered).

Trade-offs: one call means the report can cite at most the 1–12 passages a write may cite, and its
length is bounded by one reply's token limit — which is exactly the weakness the comparison is
meant to show. A refused write gets the usual re-asks and one fresh search, like any WARP node.
"""

from __future__ import annotations

from typing import Any

from deepdraft.core.outline import Outline
from deepdraft.core.state import RunState
from deepdraft.events import EventSink, OutlineChanged, ignore
from deepdraft.policy.warp import WarpPolicy
from deepdraft.ports import LLM, Retriever
from deepdraft.protocol.action_prompts import whole_length
from deepdraft.settings import ResearchSettings

REPORT_PART = "Report"
REPORT_PLAN = (
    "The complete report answering the request in one piece: a short introduction, the main findings "
    "under a few ### headings of your own, and a brief conclusion."
)
_TITLE_CHARS = 120


class SinglePassPolicy:
    name = "single-pass"

    def __init__(
        self,
        llm: LLM,
        retriever: Retriever,
        budgets: ResearchSettings,
        on_event: EventSink = ignore,
        **options: Any,
    ) -> None:
        """`options`: the rest of `WarpPolicy`'s arguments (prompt limit, token counter, roles, review)."""
        self.steps = WarpPolicy(llm, retriever, budgets, on_event, **options)

    def run(self, state: RunState) -> RunState:
        return self.steps.guarded(state, self.research)

    def research(self, state: RunState) -> None:
        if state.outline is None:
            if state.phase == "search":
                self.steps.search(state)  # background for the whole question
            self._one_part_outline(state)
        self.steps.draft_all(state, length=whole_length)
        self.steps.stop(state, "the report was written in one pass")

    def _one_part_outline(self, state: RunState) -> None:
        # Deterministic, so no LLM call and no checkpoint: a resume from the search's checkpoint
        # builds the same one-node outline again.
        title = " ".join(state.question.split())
        if len(title) > _TITLE_CHARS:
            title = title[: _TITLE_CHARS - 1].rstrip() + "…"
        state.outline = Outline.create(title, [(REPORT_PART, REPORT_PLAN)])
        self.steps.emit(
            OutlineChanged(state.outline.model_dump(), [n.position for n in state.outline.walk()])
        )
        node = state.outline.first_pending()
        assert node is not None
        # The opening search's evidence stays the current evidence: the write cites from it.
        state.target, state.phase = node.position, "write"
        state.retries, state.feedback, state.researched_again = 0, "", False
