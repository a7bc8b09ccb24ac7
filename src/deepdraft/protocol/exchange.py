"""The one engine every model exchange runs on: ask → read → re-ask with the reason → record.

WARP's actions, the finishing passes (verification, synthesis) and the eval judge all ask a model
for a reply that must follow rules, and ask again, saying why, when it does not. They differ in
what they ask, how they read a reply, how a re-ask is phrased (WARP renders the reason into a fresh
prompt; the judge appends the bad reply and the reason to the conversation) and what they record
(a journal step and checkpoint; a token tally). Those are the engine's inputs:

- `request(turn)`: the request for this try; `turn` says how many replies were refused so far and
  why the last one was, which is how a re-ask carries the reason;
- `read(result, turn)`: parse and validate the reply: the value, or a `Refused` with the reason;
- `tries`: how many replies may be read in all (the first and the re-asks);
- `record(attempt, next_turn)`: called after every try; `next_turn` is the turn the exchange goes
  on with, or None when the exchange is over (then `settle` has already applied its outcome).

A resumable caller keeps the turn in its own state (refused count, feedback) and passes it back as
`start`: a run stopped between two tries re-asks exactly the request it would have asked.
Exceptions from `complete` (budget spent, context overflow) pass through untouched; the caller
decides what they mean, and can simply run the exchange again from its stored turn.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from deepdraft.events import StepRecord
from deepdraft.ports import ChatRequest, ChatResult
from deepdraft.protocol.actions import Refused

T = TypeVar("T")


@dataclass(frozen=True)
class Turn:
    """Where an exchange stands: replies refused so far, and why the last one was."""

    refused: int = 0
    feedback: str = ""


@dataclass(frozen=True)
class Attempt(Generic[T]):
    """One try: what was asked, what came back, and what reading it gave."""

    turn: Turn
    request: ChatRequest
    result: ChatResult
    outcome: T | Refused
    started: float
    """When the request was sent (seconds since the epoch)."""

    @property
    def refusal(self) -> Refused | None:
        return self.outcome if isinstance(self.outcome, Refused) else None


def _never(attempt: Attempt[T]) -> bool:
    return False


def _nothing(attempt: Attempt[T]) -> None:
    return None


def exchange(
    complete: Callable[[ChatRequest], ChatResult],
    request: Callable[[Turn], ChatRequest],
    read: Callable[[ChatResult, Turn], T | Refused],
    *,
    tries: int,
    record: Callable[[Attempt[T], Turn | None], None],
    start: Turn = Turn(),
    settle: Callable[[Attempt[T]], None] = _nothing,
    give_up: Callable[[Attempt[T]], bool] = _never,
) -> Attempt[T]:
    """Ask until a reply is read as a value or `tries` replies were refused; the last attempt.

    `settle` applies the final attempt's outcome (a value, or the last refusal) to the caller's
    state before it is recorded; `give_up` ends the exchange early after a refusal the caller
    knows no re-ask can mend (e.g. the budget the refusals spend is gone).
    """
    turn = start
    while True:
        sent = request(turn)
        started = time.time()
        result = complete(sent)
        attempt = Attempt(turn, sent, result, read(result, turn), started)
        refusal = attempt.refusal
        if refusal is None or turn.refused + 1 >= tries or give_up(attempt):
            settle(attempt)
            record(attempt, None)
            return attempt
        turn = Turn(turn.refused + 1, refusal.reason)
        record(attempt, turn)


def step_record(
    step: int,
    action: str,
    target: str,
    attempt: Attempt[Any] | None,
    parsed: dict[str, Any] | None,
    reason: str | None = None,
) -> StepRecord:
    """The journal row of one exchange (`attempt`), or of a decision made without a call (None).

    `reason` defaults to the attempt's refusal; a row is valid when there is none.
    """
    now = time.time()
    if reason is None and attempt is not None and attempt.refusal is not None:
        reason = attempt.refusal.reason
    result = attempt.result if attempt is not None else None
    return StepRecord(
        step=step,
        action=action,
        target=target,
        prompt=attempt.request.messages[-1].content if attempt is not None else "",
        reply=result.text if result else "",
        parsed=parsed,
        valid=reason is None,
        reason=reason,
        prompt_tokens=result.usage.prompt_tokens if result else 0,
        completion_tokens=result.usage.completion_tokens if result else 0,
        started_at=attempt.started if attempt is not None else now,
        finished_at=now,
        cached=result.cached if result else False,
    )
