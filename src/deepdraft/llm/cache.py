"""An `LLM` wrapper that answers repeated requests from a cache (normally the run journal).

Why: a resumed run replays the calls it already paid for, and a rerun with the same settings costs
nothing. The key is the SHA-256 of canonical JSON of the inner model's name, a caller-chosen
namespace and the whole request — including its `tag`, so the same prompt asked twice within a run
(where a fresh sample is wanted) is two entries. Credentials and the base URL are deliberately not
part of the key: rotating an API key or moving a server must not throw the cache away; pointing
the same model name at a different model is the caller's business (use the namespace).

Trade-offs: only successful completions are stored (an error is retried next time, never replayed);
a hit returns the original usage with ``cached=True``, so token accounting can tell paid tokens from
replayed ones. An entry that cannot be read back (written by some other tool, damaged) counts as a
miss and is overwritten.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Protocol

from deepdraft.ports import LLM, ChatRequest, ChatResult, Usage

__all__ = ["CacheStore", "CachingLLM", "cache_key"]

# Bump when the stored value's layout changes; old entries then become misses instead of errors.
_VALUE_VERSION = 1


class CacheStore(Protocol):
    """Where cached replies live; `deepdraft.store.journal.Journal` is one."""

    def cache_get(self, key: str) -> dict[str, Any] | None: ...

    def cache_put(self, key: str, value: dict[str, Any]) -> None: ...


def cache_key(model_name: str, namespace: str, request: ChatRequest) -> str:
    """The cache key of a request: hex SHA-256 of canonical JSON."""
    canonical = json.dumps(
        {"model": model_name, "namespace": namespace, "request": request.to_dict()},
        ensure_ascii=False,
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


class CachingLLM:
    """Implements the `LLM` protocol by consulting `cache` before calling `inner`."""

    def __init__(self, inner: LLM, cache: CacheStore, namespace: str = "") -> None:
        self.inner = inner
        self.cache = cache
        self.namespace = namespace

    @property
    def model_name(self) -> str:
        return self.inner.model_name

    def key(self, request: ChatRequest) -> str:
        return cache_key(self.model_name, self.namespace, request)

    def complete(self, request: ChatRequest) -> ChatResult:
        key = self.key(request)
        hit = _decode(self.cache.cache_get(key))
        if hit is not None:
            return hit
        result = self.inner.complete(request)  # errors propagate and are not cached
        self.cache.cache_put(
            key,
            {
                "v": _VALUE_VERSION,
                "text": result.text,
                "usage": {
                    "prompt_tokens": result.usage.prompt_tokens,
                    "completion_tokens": result.usage.completion_tokens,
                },
                "model": result.model,
                "finish_reason": result.finish_reason,
            },
        )
        # A real backend returns cached=False; its result is passed through unchanged so that an
        # inner cache (should anyone stack two) can still say the tokens were not paid for.
        return result


def _decode(value: dict[str, Any] | None) -> ChatResult | None:
    if value is None or value.get("v") != _VALUE_VERSION:
        return None
    try:
        usage = value["usage"]
        text, model, finish = value["text"], value["model"], value["finish_reason"]
        prompt_tokens, completion_tokens = usage["prompt_tokens"], usage["completion_tokens"]
    except (KeyError, TypeError):
        return None
    if not (
        isinstance(text, str)
        and isinstance(model, str)
        and isinstance(finish, str)
        and isinstance(prompt_tokens, int)
        and isinstance(completion_tokens, int)
    ):
        return None
    return ChatResult(
        text=text,
        usage=Usage(prompt_tokens, completion_tokens),
        model=model,
        finish_reason=finish,
        cached=True,
    )
