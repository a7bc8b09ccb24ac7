"""Plan-then-write: the baseline WARP is compared against in the paper's ablation.

It runs on the same machinery as WARP — the same prompts for search and write, the same evidence
handling, budgets, retries and checkpoints — and differs in two places only: the first outline is
complete (sections *and* subsections, up to three levels) and is never changed afterwards, and
the run stops as soon as every node has been written instead of deepening the draft.
"""

from __future__ import annotations

from deepdraft.core.state import RunState
from deepdraft.policy.warp import WarpPolicy
from deepdraft.protocol.actions import Action, InitPlan, Refused, parse_full_plan, validate_full_plan


class PlanThenWritePolicy(WarpPolicy):
    name = "plan-write"
    plan_template = "full_plan"
    plan_shape = "full-plan"

    def _read_plan(self, raw: str, state: RunState) -> Action | Refused:
        action = parse_full_plan(raw)
        if isinstance(action, InitPlan):
            return (
                validate_full_plan(action, state.question, *self._ranges(), self.budgets.language) or action
            )
        return action

    def _draft_complete(self, state: RunState) -> None:
        self._stop(state, "every planned node is written")
