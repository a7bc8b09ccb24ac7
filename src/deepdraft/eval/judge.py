"""The judge every metric asks: an LLM call that must come back as JSON, cached, retried, counted.

Which model judges follows the same privacy rule as research: an OpenAI-compatible endpoint only
when the user named one (`--judge-base-url`), else the embedded model. Nothing is read from the
environment here, so an endpoint configured for *writing* never silently becomes the judge.

Trade-offs:

- Every call goes through `CachingLLM` backed by a `Journal` at `DEEPDRAFT_HOME/eval/cache.sqlite`
  (only its ``llm_cache`` table is used). A rerun of the same evaluation costs nothing, and an
  interrupted one resumes: finished judgments are cache hits, only the missing ones are asked.
  The key holds the whole request, so changing a prompt, the judge model or a report re-asks.
- Judgments are parsed tolerantly (code fences, ``<think>`` blocks, prose around the JSON, trailing
  commas), then checked by the metric's own reader. A reply that still cannot be read is asked
  again with the reason and the bad reply shown (a different request, hence a fresh cache entry),
  at most `max_attempts` times; after that the item is recorded as FAILED with its reason. A
  failure is never scored as zero: metrics leave failed items out of their means and report them.
- Calls run in a bounded thread pool (`concurrency`); the embedded model serialises them itself.
- Temperature 0 by default: a judge should be as repeatable as the backend allows.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from deepdraft.config import home_dir
from deepdraft.errors import ConfigError
from deepdraft.llm.cache import CachingLLM
from deepdraft.ports import LLM, ChatRequest, ChatResult, Message
from deepdraft.protocol.actions import Refused
from deepdraft.protocol.exchange import Attempt, Turn, exchange
from deepdraft.protocol.json_reply import find_json
from deepdraft.settings import LLMSettings, Settings

if TYPE_CHECKING:
    from deepdraft.run.wiring import ReplyCache

__all__ = [
    "Judge",
    "Judged",
    "JudgmentError",
    "TokenTally",
    "eval_cache_path",
    "open_judge",
    "parse_json_reply",
]

T = TypeVar("T")
R = TypeVar("R")
I = TypeVar("I")  # noqa: E741 - the item type of `Judge.map`


REASK = "That reply could not be used: {reason}. Answer again with the JSON only."


class JudgmentError(ValueError):
    """A judge reply that cannot be read as the metric needs it; the message says why."""


@dataclass(frozen=True)
class Judged(Generic[T]):
    """The outcome of one judgment: a value, or the reason it FAILED and the last raw reply."""

    value: T | None
    failure: str | None = None
    raw: str = ""

    @property
    def ok(self) -> bool:
        return self.failure is None


@dataclass
class TokenTally:
    """Calls and tokens, split into paid (asked now) and replayed (from the cache); thread-safe."""

    calls: int = 0
    cached_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_prompt_tokens: int = 0
    cached_completion_tokens: int = 0
    retries: int = 0
    failures: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, result: ChatResult) -> None:
        with self._lock:
            self.calls += 1
            if result.cached:
                self.cached_calls += 1
                self.cached_prompt_tokens += result.usage.prompt_tokens
                self.cached_completion_tokens += result.usage.completion_tokens
            else:
                self.prompt_tokens += result.usage.prompt_tokens
                self.completion_tokens += result.usage.completion_tokens

    def count(self, *, retry: bool = False, failure: bool = False) -> None:
        with self._lock:
            self.retries += retry
            self.failures += failure

    def cost(self, price_in: float | None, price_out: float | None) -> float | None:
        """US dollars for the paid tokens, given prices per million tokens (None: unknown)."""
        if price_in is None or price_out is None:
            return None
        return (self.prompt_tokens * price_in + self.completion_tokens * price_out) / 1e6

    def summary(self, price_in: float | None = None, price_out: float | None = None) -> str:
        cost = self.cost(price_in, price_out)
        money = f", ${cost:.4f}" if cost is not None else ""
        return (
            f"judge: {self.calls} calls ({self.cached_calls} from the cache, {self.retries} re-asked, "
            f"{self.failures} failed); paid {self.prompt_tokens} prompt + {self.completion_tokens} "
            f"completion tokens{money}; replayed {self.cached_prompt_tokens + self.cached_completion_tokens}"
        )

    def as_dict(self) -> dict[str, int]:
        return {
            "calls": self.calls,
            "cached_calls": self.cached_calls,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cached_prompt_tokens": self.cached_prompt_tokens,
            "cached_completion_tokens": self.cached_completion_tokens,
            "retries": self.retries,
            "failures": self.failures,
        }


ProgressHook = Callable[[str, int], Callable[[], None]]
"""Given a label and a total, returns the function to call once per finished item."""


def _no_progress(label: str, total: int) -> Callable[[], None]:
    return lambda: None


class Judge:
    """Asks `llm` for JSON judgments; see the module docstring for caching, retries and failures."""

    def __init__(
        self,
        llm: LLM,
        *,
        concurrency: int = 4,
        max_attempts: int = 3,
        temperature: float = 0.0,
        max_tokens: int = 2048,
        progress: ProgressHook = _no_progress,
    ) -> None:
        if concurrency < 1 or max_attempts < 1:
            raise ValueError("concurrency and max_attempts must be at least 1")
        self.llm = llm
        self.concurrency = concurrency
        self.max_attempts = max_attempts
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.progress = progress
        self.tally = TokenTally()

    @property
    def model_name(self) -> str:
        return self.llm.model_name

    def ask(
        self,
        prompt: str,
        read: Callable[[Any], T],
        *,
        tag: str,
        system: str | None = None,
        schema: dict[str, Any] | None = None,
        max_tokens: int | None = None,
    ) -> Judged[T]:
        """One judgment: `read` turns the parsed JSON into the metric's value or raises JudgmentError.

        `tag` names the item (e.g. ``"race/12/target"``); it keeps distinct items with identical
        prompts apart in the cache.
        """
        messages: list[Message] = [Message("system", system)] if system else []
        messages.append(Message("user", prompt))

        def request(turn: Turn) -> ChatRequest:
            return ChatRequest(
                messages=tuple(messages),
                max_tokens=max_tokens or self.max_tokens,
                temperature=self.temperature,
                json_schema=schema,
                tag=tag,
            )

        def judged(result: ChatResult, turn: Turn) -> Judged[T] | Refused:
            try:
                return Judged(read(parse_json_reply(result.text)), raw=result.text)
            except JudgmentError as exc:
                return Refused(str(exc))

        def record(attempt: Attempt[Judged[T]], turn: Turn | None) -> None:
            self.tally.add(attempt.result)
            if turn is not None:
                self.tally.count(retry=True)
                # Showing the bad reply and why it failed both helps the model and makes the retry
                # a different request, so the cache keeps both and a rerun replays the same path.
                reask = REASK.format(reason=turn.feedback)
                messages.extend([Message("assistant", attempt.result.text), Message("user", reask)])

        last = exchange(self.llm.complete, request, judged, tries=self.max_attempts, record=record)
        if isinstance(last.outcome, Judged):
            return last.outcome
        self.tally.count(failure=True)
        reason = last.outcome.reason
        return Judged(None, failure=f"{reason} (after {self.max_attempts} tries)", raw=last.result.text)

    def map(self, items: Sequence[I], work: Callable[[I], R], label: str) -> list[R]:
        """`work` over `items` in the judge's thread pool, results in input order, with progress."""
        advance = self.progress(label, len(items))

        def run(item: I) -> R:
            try:
                return work(item)
            finally:
                advance()

        if self.concurrency == 1 or len(items) <= 1:
            return [run(item) for item in items]
        with ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="judge") as pool:
            return list(pool.map(run, items))


def eval_cache_path() -> Path:
    return home_dir() / "eval" / "cache.sqlite"


def open_judge(
    base_url: str | None = None,
    model: str | None = None,
    api_key: str | None = None,
    *,
    concurrency: int | None = None,
    max_tokens: int = 2048,
    cache: ReplyCache | None = None,
    progress: ProgressHook = _no_progress,
    llm: LLM | None = None,
) -> Judge:
    """The judge the user named (an OpenAI-compatible endpoint), else the embedded model, cached.

    `cache`: where judgments are kept (default: the eval cache under `DEEPDRAFT_HOME`); the caller
    owns it and closes it. `llm`: an already built model to judge with (e.g. the embedded model
    that also writes, so it is loaded once).
    """
    from deepdraft.run.wiring import build_llm

    settings = Settings(
        llm=LLMSettings(
            base_url=base_url, model=model, api_key=api_key, temperature=0.0, max_tokens=max_tokens
        )
    )
    llm = llm or build_llm(settings)
    store = cache if cache is not None else open_eval_cache()
    # An endpoint takes parallel requests; the embedded model runs one at a time anyway.
    workers = concurrency if concurrency is not None else (4 if base_url else 1)
    if workers < 1:
        raise ConfigError("--judge-concurrency must be at least 1")
    return Judge(
        CachingLLM(llm, store, namespace="eval"),
        concurrency=workers,
        max_tokens=max_tokens,
        progress=progress,
    )


def open_eval_cache() -> ReplyCache:
    from deepdraft.run.wiring import open_reply_cache

    return open_reply_cache(eval_cache_path())


# ---- tolerant JSON ---------------------------------------------------------------------------------


def parse_json_reply(text: str) -> Any:
    """The JSON value in a model reply (see `protocol.json_reply`); JudgmentError when there is none."""
    value = find_json(text)
    if value is None:
        raise JudgmentError("the reply holds no readable JSON")
    return value


# ---- small readers shared by the metrics -----------------------------------------------------------


def require_dict(value: Any, what: str = "the reply") -> dict[str, Any]:
    if not isinstance(value, dict):
        raise JudgmentError(f"{what} must be a JSON object")
    return value


def read_number(value: Any, what: str, low: float, high: float) -> float:
    """A number in [low, high]; numeric strings such as "7.5" or "7/10" are accepted."""
    if isinstance(value, str):
        match = re.match(r"\s*(-?\d+(?:\.\d+)?)", value)
        value = float(match.group(1)) if match else value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise JudgmentError(f"{what} must be a number")
    if not low <= value <= high:
        raise JudgmentError(f"{what} must lie between {low:g} and {high:g} (got {value:g})")
    return float(value)


def read_choice(value: Any, what: str, choices: Sequence[str]) -> str:
    """One of `choices`, matched case-insensitively and ignoring surrounding punctuation."""
    if isinstance(value, str):
        cleaned = value.strip().strip(".\"'*").lower()
        for choice in choices:
            if cleaned == choice.lower():
                return choice
    raise JudgmentError(f"{what} must be one of {', '.join(choices)}")
