"""Spending limits for paid endpoints: a total token cap and a requests-per-minute rate.

A `Budget` holds the limits and what has been spent; `LimitedLLM` wraps any LLM and asks a budget
before each call. One budget can be shared by many runs at once (a batch, a server's pool), so the
cap and the rate hold for all of them together; where runs live in other processes (Ray), anything
with the same two methods (`Limiter`) can stand in for it. The rate limit waits (it never fails a
request); the token cap raises `LLMBudgetExhausted` before a call that would start past it, and the
policy then finishes the report from what it has instead of failing the run.
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
        """Return when a request may start; raise `LLMBudgetExhausted` when the tokens are spent."""
        ...

    def spend(self, tokens: int) -> None:
        """Count the tokens of a request that reached the endpoint."""
        ...


class Budget:
    """A token cap and a request rate, safe to share between threads."""

    def __init__(
        self,
        *,
        max_tokens_total: int | None = None,
        requests_per_minute: float | None = None,
        spent: int = 0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.max_tokens_total = max_tokens_total
        self.requests_per_minute = requests_per_minute
        self.tokens_used = spent
        """Tokens spent so far (`spent`: what earlier sessions of the same batch already used)."""
        self._clock, self._sleep = clock, sleep
        self._recent: deque[float] = deque()  # booked start times of the last minute's requests, in order
        self._tokens_lock = threading.Lock()
        self._rate_lock = threading.Lock()

    @property
    def exhausted(self) -> bool:
        return self.max_tokens_total is not None and self.tokens_used >= self.max_tokens_total

    def admit(self) -> None:
        self.check()
        delay = self.reserve()
        if delay > 0:
            self._sleep(delay)

    def check(self) -> None:
        """Raise `LLMBudgetExhausted` once the tokens are spent."""
        if self.exhausted:
            raise LLMBudgetExhausted(
                f"the token budget of {self.max_tokens_total:,} is spent ({self.tokens_used:,} used)"
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
    """`inner`, asking `budget` before each call (or a budget of its own built from the limits given)."""

    def __init__(
        self,
        inner: LLM,
        *,
        max_tokens_total: int | None = None,
        requests_per_minute: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        budget: Limiter | None = None,
    ) -> None:
        self.inner = inner
        self.budget: Limiter = budget or Budget(
            max_tokens_total=max_tokens_total,
            requests_per_minute=requests_per_minute,
            clock=clock,
            sleep=sleep,
        )

    @property
    def model_name(self) -> str:
        return self.inner.model_name

    @property
    def tokens_used(self) -> int:
        return int(getattr(self.budget, "tokens_used", 0))

    def complete(self, request: ChatRequest) -> ChatResult:
        self.budget.admit()
        result = self.inner.complete(request)
        if not result.cached:  # a reply replayed from the journal costs nothing
            self.budget.spend(result.usage.prompt_tokens + result.usage.completion_tokens)
        return result
