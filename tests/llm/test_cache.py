"""Tests of CachingLLM: keys, hits, misses, errors; against a dict store and the real journal."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from deepdraft.errors import LLMServerError
from deepdraft.llm.cache import CachingLLM, cache_key
from deepdraft.ports import LLM, ChatRequest, ChatResult, Message, Usage
from deepdraft.store.journal import Journal


class CountingLLM:
    """Answers every request with a numbered reply, or fails while `fail` is set."""

    def __init__(self, model: str = "fake-model") -> None:
        self.model = model
        self.calls: list[ChatRequest] = []
        self.fail = False

    @property
    def model_name(self) -> str:
        return self.model

    def complete(self, request: ChatRequest) -> ChatResult:
        self.calls.append(request)
        if self.fail:
            raise LLMServerError("503 from the fake")
        n = len(self.calls)
        return ChatResult(f"reply {n}", Usage(100 + n, n), model=f"{self.model}-v1", finish_reason="stop")


class DictStore:
    def __init__(self) -> None:
        self.data: dict[str, dict[str, Any]] = {}

    def cache_get(self, key: str) -> dict[str, Any] | None:
        return self.data.get(key)

    def cache_put(self, key: str, value: dict[str, Any]) -> None:
        self.data[key] = value


def test_is_an_llm() -> None:
    assert isinstance(CachingLLM(CountingLLM(), DictStore()), LLM)
    assert CachingLLM(CountingLLM("m1"), DictStore()).model_name == "m1"


def test_miss_then_hit() -> None:
    inner, store = CountingLLM(), DictStore()
    llm = CachingLLM(inner, store)
    request = ChatRequest.user("Summarise the tariff debate", temperature=0.7, tag="step-1")
    first = llm.complete(request)
    assert first == ChatResult("reply 1", Usage(101, 1), "fake-model-v1", "stop", cached=False)
    second = llm.complete(request)
    assert second == ChatResult("reply 1", Usage(101, 1), "fake-model-v1", "stop", cached=True)
    assert len(inner.calls) == 1
    assert len(store.data) == 1


def test_everything_in_the_request_is_in_the_key() -> None:
    inner = CountingLLM()
    llm = CachingLLM(inner, DictStore())
    base = ChatRequest.user("hello", tag="step-1")
    variants = [
        base,
        ChatRequest.user("hello", tag="step-2"),  # same prompt, later in the run: a fresh sample
        ChatRequest.user("hello!", tag="step-1"),
        ChatRequest.user("hello", tag="step-1", temperature=0.2),
        ChatRequest.user("hello", tag="step-1", max_tokens=50),
        ChatRequest.user("hello", tag="step-1", json_schema={"type": "object"}),
        ChatRequest(messages=(Message("system", "be brief"), Message("user", "hello")), tag="step-1"),
    ]
    replies = [llm.complete(r).text for r in variants]
    assert len(set(replies)) == len(variants)
    assert len(inner.calls) == len(variants)


def test_model_and_namespace_are_in_the_key() -> None:
    request = ChatRequest.user("hello")
    keys = {
        cache_key("m1", "", request),
        cache_key("m2", "", request),
        cache_key("m1", "run-7", request),
    }
    assert len(keys) == 3
    # Canonical: a schema written with its keys in another order is the same request.
    a = ChatRequest.user("x", json_schema={"type": "object", "required": ["a"]})
    b = ChatRequest.user("x", json_schema={"required": ["a"], "type": "object"})
    assert cache_key("m", "", a) == cache_key("m", "", b)
    assert len(cache_key("m", "", a)) == 64


def test_shared_store_different_models_do_not_collide() -> None:
    store = DictStore()
    one, two = CountingLLM("small"), CountingLLM("large")
    request = ChatRequest.user("hello")
    assert CachingLLM(one, store).complete(request).model == "small-v1"
    assert CachingLLM(two, store).complete(request).model == "large-v1"
    assert CachingLLM(one, store, namespace="other").complete(request).cached is False
    assert (len(one.calls), len(two.calls)) == (2, 1)


def test_errors_propagate_and_are_not_cached() -> None:
    inner, store = CountingLLM(), DictStore()
    llm = CachingLLM(inner, store)
    request = ChatRequest.user("hello")
    inner.fail = True
    with pytest.raises(LLMServerError):
        llm.complete(request)
    assert store.data == {}
    inner.fail = False
    result = llm.complete(request)
    assert result.cached is False
    assert len(inner.calls) == 2


def test_unreadable_entry_is_a_miss() -> None:
    inner, store = CountingLLM(), DictStore()
    llm = CachingLLM(inner, store)
    request = ChatRequest.user("hello")
    store.data[llm.key(request)] = {"v": 1, "text": 42}
    result = llm.complete(request)
    assert result.cached is False
    assert llm.complete(request).cached is True  # overwritten with a good entry
    assert len(inner.calls) == 1


def test_with_the_journal_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    request = ChatRequest.user("什么是关税?", tag="step-3", temperature=0.7)
    inner = CountingLLM()
    with Journal(path) as journal:
        first = CachingLLM(inner, journal, namespace="run-1").complete(request)
    with Journal(path) as journal:
        again = CachingLLM(inner, journal, namespace="run-1").complete(request)
    assert len(inner.calls) == 1
    assert again.cached is True
    assert (again.text, again.usage, again.model, again.finish_reason) == (
        first.text,
        first.usage,
        first.model,
        first.finish_reason,
    )
