"""Asking the model on the engine, numbered, tagged and journaled: for the policy and the finishing passes.

Every exchange with the model is a journal step with a checkpoint of the state, numbered and
tagged so that a resumed run asks the very requests it asked before and the LLM cache answers the
ones already paid for:

- `ActionCalls`: the policy's actions, tagged ``step-N``; they count against `max_steps`
  (`StepBudgetSpent`), and a prompt the server finds too long shrinks the context window for every
  later one (`PromptsShrunk`: ask the same action again);
- `FinishingCalls`: the finishing passes (verify, synthesis), tagged ``finish-N``; they are not
  policy actions, so `max_steps` never refuses them.

Both number their steps after every step the run journaled so far, ``state.step`` policy actions
plus ``state.finishing_steps`` finishing records (`journal_step`): while the policy drafts there
are no finishing records yet, and a command on a finished run (`policy/sections.py`) takes policy
actions again after them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

from deepdraft.core.state import RunState
from deepdraft.errors import LLMContextOverflow
from deepdraft.events import ActionFinished, ActionStarted, EventSink, StateChanges
from deepdraft.ports import LLM, ChatRequest, ChatResult, ReplyShape
from deepdraft.protocol.action_replies import describe
from deepdraft.protocol.actions import Action, Refused
from deepdraft.protocol.exchange import Attempt, Turn, exchange, step_record
from deepdraft.protocol.fitting import ContextWindow
from deepdraft.settings import ResearchSettings

ROLES = {"init-plan": "planner", "extend-plan": "planner", "write": "writer"}


def journal_step(state: RunState) -> int:
    """The number of the run's latest journal step: its policy actions and finishing records."""
    return state.step + state.finishing_steps


Compose = Callable[[ChatRequest, LLM], ChatResult]
"""Puts an action's reply together from several requests to the model, or from none when deepdraft
decides the action itself (see `ActionCalls.act`)."""


class StepBudgetSpent(Exception):
    """`max_steps` actions were taken; raised instead of asking for one more."""


class PromptsShrunk(LLMContextOverflow):
    """The server refused a prompt as too long and later prompts were made smaller: ask again."""


class ActionCalls:
    """One policy action as an exchange on the engine, journaled try by try."""

    def __init__(
        self,
        llm: LLM,
        roles: Mapping[str, LLM],
        budgets: ResearchSettings,
        window: ContextWindow,
        emit: EventSink,
    ) -> None:
        self.llm, self.roles, self.budgets, self.window, self.emit = llm, dict(roles), budgets, window, emit

    def act(
        self,
        state: RunState,
        action: str,
        prompt: Callable[[], str],
        shape: ReplyShape,
        read: Callable[[str], Action | Refused],
        settle: Callable[[Attempt[Action]], None],
        give_up: Callable[[Attempt[Action]], bool] = lambda attempt: False,
        compose: Compose | None = None,
    ) -> Attempt[Action]:
        """Ask `action` about `state.target` until a reply is read or the retries are spent.

        The turn (refusals so far, the last reason) lives in the state, so the prompt shows the
        reason and a resumed run re-asks from where it stopped; `settle` applies the last outcome
        to the state before its checkpoint is journaled. `compose`: the reply is put together
        from several smaller requests rather than asked for whole (a part written passage by
        passage), or decided without the model (a planned search); it is one action all the same.
        """
        target = state.target

        def request(turn: Turn) -> ChatRequest:
            step, seed = journal_step(state) + 1, self.budgets.seed
            # The tag makes the cache key unique per step, so a resumed run replays this very reply.
            return ChatRequest.user(
                prompt(), reply_shape=shape, seed=None if seed is None else seed + step, tag=f"step-{step}"
            )

        def record(attempt: Attempt[Action], turn: Turn | None) -> None:
            if turn is not None:  # asked again next, with the reason
                state.retries, state.feedback = turn.refused, turn.feedback
            outcome = attempt.outcome
            parsed = None if isinstance(outcome, Refused) else describe(outcome)
            self.emit(
                ActionFinished(
                    step_record(journal_step(state), action, target, attempt, parsed), state.snapshot()
                )
            )

        return exchange(
            lambda sent: self._complete(state, action, target, sent, compose),
            request,
            lambda result, turn: read(result.text),
            tries=self.budgets.max_retries + 1,
            start=Turn(state.retries, state.feedback),
            record=record,
            settle=settle,
            give_up=give_up,
        )

    def _complete(
        self, state: RunState, action: str, target: str, request: ChatRequest, compose: Compose | None
    ) -> ChatResult:
        if state.step >= self.budgets.max_steps:
            raise StepBudgetSpent
        self.emit(ActionStarted(journal_step(state) + 1, action, target))
        llm = self.roles.get(ROLES.get(action, ""), self.llm)
        try:
            result = compose(request, llm) if compose is not None else llm.complete(request)
        except LLMContextOverflow:
            # Prompts are budgeted with an estimate; if the server still finds one too long, every
            # later prompt is fitted under a smaller limit and this action is asked again.
            if self.window.refused(request.messages[-1].content):
                raise PromptsShrunk from None
            raise
        self.window.accepted()
        state.step += 1
        state.prompt_tokens += result.usage.prompt_tokens
        state.completion_tokens += result.usage.completion_tokens
        return result


class Checkpoints(Protocol):
    """Makes a finishing step's checkpoint smaller than the whole state (see `verify.PassCheckpoints`)."""

    def checkpoint(self, state: RunState, step: int) -> dict[str, Any] | StateChanges: ...

    def recorded(self) -> None: ...


class FinishingCalls:
    """Exchanges of a finishing pass on the engine, each journaled as a step with its checkpoint.

    Steps are numbered after the run's latest (`journal_step`) and tagged by that number. The pass
    keeps the turn of each exchange (tries so far, the last reason) in its own progress record and
    passes it as `start`, so an interrupted pass re-asks what it would have.
    """

    def __init__(self, llm: LLM, emit: EventSink, seed: int | None) -> None:
        self.llm, self.emit, self.seed = llm, emit, seed

    def request(
        self,
        state: RunState,
        prompt: str,
        *,
        shape: ReplyShape | None = None,
        schema: dict[str, Any] | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
    ) -> ChatRequest:
        step = journal_step(state) + 1
        return ChatRequest.user(
            prompt,
            reply_shape=shape,
            json_schema=schema,
            max_tokens=max_tokens,
            temperature=temperature,
            seed=None if self.seed is None else self.seed + step,
            tag=f"finish-{step}",
        )

    def exchange(
        self,
        state: RunState,
        action: str,
        target: str,
        request: Callable[[Turn], ChatRequest],
        read: Callable[[ChatResult, Turn], Any],
        *,
        tries: int,
        start: Turn,
        keep: Callable[[Attempt[Any], Turn | None], None],
        settle: Callable[[Attempt[Any]], None],
        parsed: Callable[[Attempt[Any]], dict[str, Any] | None],
        changes: Checkpoints | None = None,
    ) -> Attempt[Any]:
        """One exchange of the pass. `keep` is called after every try, before it is journaled: it
        stores the next turn in the pass's progress (None: the exchange is over) and counts the call;
        `parsed` is what the journal row holds of an attempt."""

        def record(attempt: Attempt[Any], turn: Turn | None) -> None:
            keep(attempt, turn)
            self.record(state, action, target, attempt, parsed(attempt), changes=changes)

        return exchange(
            lambda sent: self.complete(state, action, target, sent),
            request,
            read,
            tries=tries,
            start=start,
            record=record,
            settle=settle,
        )

    def complete(self, state: RunState, action: str, target: str, request: ChatRequest) -> ChatResult:
        self.emit(ActionStarted(journal_step(state) + 1, action, target))
        result = self.llm.complete(request)
        state.finishing_steps += 1
        state.prompt_tokens += result.usage.prompt_tokens
        state.completion_tokens += result.usage.completion_tokens
        return result

    def record(
        self,
        state: RunState,
        action: str,
        target: str,
        attempt: Attempt[Any] | None = None,
        parsed: dict[str, Any] | None = None,
        *,
        changes: Checkpoints | None = None,
    ) -> None:
        """Journal an exchange (or, with no `attempt`, a decision made without a call).

        The checkpoint is the whole state, unless `changes` can tell what changed since the
        previous one.
        """
        if attempt is None:
            state.finishing_steps += 1
        row = step_record(journal_step(state), action, target, attempt, parsed)
        if changes is None:
            self.emit(ActionFinished(row, state.snapshot()))
        else:
            self.emit(ActionFinished(row, changes.checkpoint(state, row.step)))
            changes.recorded()
