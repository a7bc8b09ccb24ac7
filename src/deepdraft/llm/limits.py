"""Spending limits for paid endpoints: a total token cap and a requests-per-minute rate.

`LimitedLLM` wraps any LLM. The rate limit waits (it never fails a request); the token cap raises
`LLMBudgetExhausted` before a call that would start past it, and the policy then finishes the report
from what it has instead of failing the run.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

from deepdraft.errors import LLMBudgetExhausted
from deepdraft.ports import LLM, ChatRequest, ChatResult


class LimitedLLM:
    def __init__(
        self,
        inner: LLM,
        *,
        max_tokens_total: int | None = None,
        requests_per_minute: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.inner = inner
        self.max_tokens_total = max_tokens_total
        self.requests_per_minute = requests_per_minute
        self.tokens_used = 0
        self._clock, self._sleep = clock, sleep
        self._recent: deque[float] = deque()  # start times of the requests of the last minute
        self._lock = threading.Lock()

    @property
    def model_name(self) -> str:
        return self.inner.model_name

    def complete(self, request: ChatRequest) -> ChatResult:
        if self.max_tokens_total is not None and self.tokens_used >= self.max_tokens_total:
            raise LLMBudgetExhausted(
                f"the token budget of {self.max_tokens_total:,} is spent ({self.tokens_used:,} used)"
            )
        self._wait_for_rate()
        result = self.inner.complete(request)
        if not result.cached:  # a reply replayed from the journal costs nothing
            self.tokens_used += result.usage.prompt_tokens + result.usage.completion_tokens
        return result

    def _wait_for_rate(self) -> None:
        if not self.requests_per_minute:
            return
        with self._lock:
            window = 60.0
            now = self._clock()
            while self._recent and now - self._recent[0] >= window:
                self._recent.popleft()
            if len(self._recent) >= self.requests_per_minute:
                self._sleep(window - (now - self._recent[0]))
                now = self._clock()
                self._recent.popleft()
            self._recent.append(now)
