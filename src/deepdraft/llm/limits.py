"""Spending limits: a total token cap, a wall-time cap and a requests-per-minute rate.

A `Budget` holds limits and what has been spent against them, safe to share between threads. The
same mechanism serves two scopes, and a call may be held to both:

* a run's own budget (its settings' token cap, rate and `max_time`). It is the run's, not a
  process's: a resumed run starts from what the journal says the run already spent
  (`spent_tokens`, `spent_seconds`), and the models a run uses for single roles spend from the same
  budget as its main model (`LimitedLLM.sharing`), so that neither a resume nor a planner model
  escapes the caps;
* a budget shared by many runs at once (a `RunPool`'s: a batch, a server, an evaluation), so that a
  cap or a rate holds for all of them together; a new session of the same work starts it from what
  the work's runs already spent. Where runs live in other processes (Ray), anything with the same
  two methods (`Limiter`) stands in for it.

`LimitedLLM` wraps any LLM and asks each of its budgets before each call. The rate limit waits (it
never fails a request); the token and time caps raise `LLMBudgetExhausted` before a call that would
start past them, and the policy then finishes the report from what it has instead of failing the run.

Every reply counts once: the journaled steps before a resume, each reply after it (one replayed
from the run's cache included, since no journaled step holds it yet).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol

from deepdraft.errors import LLMBudgetExhausted
from deepdraft.ports import LLM, ChatRequest, ChatResult


class Limiter(Protocol):
    """What `LimitedLLM` asks before and tells after each call."""

    def admit(self) -> None:
        """Return when a request may start; raise `LLMBudgetExhausted` when a cap is spent."""
        ...

    def spend(self, tokens: int) -> None:
        """Count the tokens of a request that was answered."""
        ...


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


class Budget:
    """A token cap, a time cap and a request rate, and what has been spent: safe to share between threads.

    `spent_tokens` and `spent_seconds` are what earlier sessions of the same work already used (a
    run's journal, or the runs of a batch); the time counted in this session starts when the
    budget is made.
    """

    def __init__(
        self,
        *,
        max_tokens_total: int | None = None,
        requests_per_minute: float | None = None,
        max_time_s: float | None = None,
        spent_tokens: int = 0,
        spent_seconds: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.max_tokens_total = max_tokens_total
        self.requests_per_minute = requests_per_minute
        self.max_time_s = max_time_s
        self.tokens_used = spent_tokens
        self._seconds_before = spent_seconds
        self._clock, self._sleep = clock, sleep
        self._started = clock()
        self._recent: deque[float] = deque()  # booked start times of the last minute's requests, in order
        self._tokens_lock = threading.Lock()
        self._rate_lock = threading.Lock()

    @property
    def seconds_used(self) -> float:
        """Time the work has been driven: earlier sessions' and this one's so far."""
        return self._seconds_before + (self._clock() - self._started)

    @property
    def exhausted(self) -> bool:
        """True once the token cap or the time cap is spent (the next request would be refused)."""
        tokens_spent = self.max_tokens_total is not None and self.tokens_used >= self.max_tokens_total
        return tokens_spent or (self.max_time_s is not None and self.seconds_used >= self.max_time_s)

    def admit(self) -> None:
        self.check()
        delay = self.reserve()
        if delay > 0:
            self._sleep(delay)

    def check(self) -> None:
        """Raise `LLMBudgetExhausted` once the tokens or the time are spent."""
        if self.max_tokens_total is not None and self.tokens_used >= self.max_tokens_total:
            raise LLMBudgetExhausted(
                f"the token budget of {self.max_tokens_total:,} is spent ({self.tokens_used:,} used)"
            )
        if self.max_time_s is not None:
            used = self.seconds_used
            if used >= self.max_time_s:
                raise LLMBudgetExhausted(
                    f"the time budget of {format_duration(self.max_time_s)} is spent "
                    f"({format_duration(used)} used)"
                )

    def reserve(self) -> float:
        """Book the next free start within the rate, and return how long to wait for it (seconds).

        It never sleeps itself, so a budget serving other processes (a Ray actor) is never blocked
        by one caller's wait: every caller gets its own slot and waits on its side.
        """
        if not self.requests_per_minute:
            return 0.0
        window = 60.0
        allowed = max(1, int(self.requests_per_minute))
        with self._rate_lock:
            now = self._clock()
            while self._recent and now - self._recent[0] >= window:
                self._recent.popleft()
            start = now
            if len(self._recent) >= allowed:
                # The slot frees when the request `allowed` places back is a window old.
                start = max(now, self._recent[-allowed] + window)
            self._recent.append(start)
            return start - now

    def spend(self, tokens: int) -> None:
        with self._tokens_lock:
            self.tokens_used += tokens


class LimitedLLM:
    """`inner`, held to every one of `budgets` (none given: one of its own, built from the limits given).

    The first budget is the one `tokens_used` reports: the run's own where a run has one.
    """

    def __init__(
        self,
        inner: LLM,
        *budgets: Limiter,
        max_tokens_total: int | None = None,
        requests_per_minute: float | None = None,
        max_time_s: float | None = None,
        spent_tokens: int = 0,
        spent_seconds: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.inner = inner
        self.budgets: tuple[Limiter, ...] = budgets or (
            Budget(
                max_tokens_total=max_tokens_total,
                requests_per_minute=requests_per_minute,
                max_time_s=max_time_s,
                spent_tokens=spent_tokens,
                spent_seconds=spent_seconds,
                clock=clock,
                sleep=sleep,
            ),
        )

    def sharing(self, inner: LLM) -> LimitedLLM:
        """`inner` held to these same budgets, its spending counted in them."""
        return LimitedLLM(inner, *self.budgets)

    @property
    def model_name(self) -> str:
        return self.inner.model_name

    @property
    def tokens_used(self) -> int:
        return int(getattr(self.budgets[0], "tokens_used", 0))

    def complete(self, request: ChatRequest) -> ChatResult:
        for budget in self.budgets:
            budget.admit()
        result = self.inner.complete(request)
        # A reply replayed from the run's cache counts too: it was paid for by a session that
        # stopped before journaling its step, so what the journal says was spent lacks it.
        tokens = result.usage.prompt_tokens + result.usage.completion_tokens
        for budget in self.budgets:
            budget.spend(tokens)
        return result
