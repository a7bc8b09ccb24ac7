"""Plan-then-write: the baseline WARP is compared against in the paper's ablation.

It is composed of WARP's own public steps — the same search and write prompts, evidence
handling, budgets, retries and checkpoints — and differs in two places only: the first outline is
complete (sections *and* subsections, up to three levels) and is never changed afterwards, and
the run stops as soon as every node has been written instead of deepening the draft.
"""

from __future__ import annotations

from typing import Any

from deepdraft.core.state import RunState
from deepdraft.events import EventSink, ignore
from deepdraft.policy.warp import WarpPolicy
from deepdraft.ports import LLM, Retriever
from deepdraft.settings import ResearchSettings


class PlanThenWritePolicy:
    name = "plan-write"

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
        self.steps.open(state, full=True)  # background search → the complete, nested outline
        self.steps.draft_all(state)
        self.steps.stop(state, "every planned node is written")
