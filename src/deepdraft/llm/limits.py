"""Spending limits: a total token cap, a wall-time cap and a requests-per-minute rate.

`LimitedLLM` wraps any LLM. The rate limit waits (it never fails a request); the token cap and the
time cap raise `LLMBudgetExhausted` before a call that would start past them, and the policy then
finishes the report from what it has instead of failing the run.

The caps are a run's, not a process's: a resumed run starts from what the journal says the run
already spent (`spent_tokens`, `spent_seconds`), and the models a run uses for single roles share
one tally with its main model (`sharing`), so that neither a resume nor a planner model escapes them.
Every reply counts once: the journaled steps before a resume, each reply after it (one replayed from
the run's cache included, since no journaled step holds it yet).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from deepdraft.errors import LLMBudgetExhausted
from deepdraft.ports import LLM, ChatRequest, ChatResult


def format_duration(seconds: float) -> str:
    """A duration as people write it: 45s, 12m 5s, 2h 3m."""
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes}m" if minutes else f"{hours}h"
    if minutes:
        return f"{minutes}m {secs}s" if secs else f"{minutes}m"
    return f"{secs}s"


@dataclass
class _Tally:
    """What every model of one run has spent, and the limits it is held to."""

    max_tokens_total: int | None
    max_time_s: float | None
    requests_per_minute: float | None
    tokens_used: int
    seconds_before: float
    started: float
    lock: threading.Lock = field(default_factory=threading.Lock)
    recent: deque[float] = field(default_factory=deque)  # start times of the requests of the last minute


class LimitedLLM:
    def __init__(
        self,
        inner: LLM,
        *,
        max_tokens_total: int | None = None,
        requests_per_minute: float | None = None,
        max_time_s: float | None = None,
        spent_tokens: int = 0,
        spent_seconds: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.inner = inner
        self._clock, self._sleep = clock, sleep
        self._tally = _Tally(
            max_tokens_total=max_tokens_total,
            max_time_s=max_time_s,
            requests_per_minute=requests_per_minute,
            tokens_used=spent_tokens,
            seconds_before=spent_seconds,
            started=clock(),
        )

    def sharing(self, inner: LLM) -> LimitedLLM:
        """`inner` held to these same limits, its spending counted in the same tally."""
        other = LimitedLLM(inner, clock=self._clock, sleep=self._sleep)
        other._tally = self._tally
        return other

    @property
    def model_name(self) -> str:
        return self.inner.model_name

    @property
    def max_tokens_total(self) -> int | None:
        return self._tally.max_tokens_total

    @property
    def requests_per_minute(self) -> float | None:
        return self._tally.requests_per_minute

    @property
    def tokens_used(self) -> int:
        return self._tally.tokens_used

    @property
    def seconds_used(self) -> float:
        """Time the run has been driven: earlier sessions' and this one's so far."""
        return self._tally.seconds_before + (self._clock() - self._tally.started)

    def complete(self, request: ChatRequest) -> ChatResult:
        tally = self._tally
        if tally.max_tokens_total is not None and tally.tokens_used >= tally.max_tokens_total:
            raise LLMBudgetExhausted(
                f"the token budget of {tally.max_tokens_total:,} is spent ({tally.tokens_used:,} used)"
            )
        if tally.max_time_s is not None and self.seconds_used >= tally.max_time_s:
            raise LLMBudgetExhausted(
                f"the time budget of {format_duration(tally.max_time_s)} is spent "
                f"({format_duration(self.seconds_used)} used)"
            )
        self._wait_for_rate()
        result = self.inner.complete(request)
        # A reply replayed from the run's cache counts too: it was paid for by a session that
        # stopped before journaling its step, so `spent_tokens` (the journaled steps) lacks it.
        with tally.lock:
            tally.tokens_used += result.usage.prompt_tokens + result.usage.completion_tokens
        return result

    def _wait_for_rate(self) -> None:
        tally = self._tally
        if not tally.requests_per_minute:
            return
        with tally.lock:
            window = 60.0
            now = self._clock()
            while tally.recent and now - tally.recent[0] >= window:
                tally.recent.popleft()
            if len(tally.recent) >= tally.requests_per_minute:
                self._sleep(window - (now - tally.recent[0]))
                now = self._clock()
                tally.recent.popleft()
            tally.recent.append(now)
