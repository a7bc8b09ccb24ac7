"""The one tolerant JSON reader and the one ask → read → re-ask → record engine."""

from __future__ import annotations

from typing import Any

import pytest

from deepdraft.ports import ChatRequest, ChatResult
from deepdraft.protocol.actions import Refused
from deepdraft.protocol.exchange import Attempt, Turn, exchange
from deepdraft.protocol.json_reply import find_json


@pytest.mark.parametrize(
    ("reply", "kinds", "expected"),
    [
        ('{"a": 1}', (object,), {"a": 1}),
        ('<think>{"no": 1}</think> sure: {"a": 1,}', (object,), {"a": 1}),
        ('Here:\n```json\n{"a": [1, 2,]}\n```\nDone.', (object,), {"a": [1, 2]}),
        ('[{"a": 1}]', (dict,), {"a": 1}),
        ('[{"a": 1}, {"a": 2}]', (dict, list), [{"a": 1}, {"a": 2}]),
        ('first {"a": 1} then {"b": 2}', (dict,), {"a": 1}),
        ('{"text": "two\nlines"}', (dict,), {"text": "two\nlines"}),
        ("no json here", (object,), None),
        ("null", (object,), None),
        ('"just a string"', (dict,), None),
    ],
)
def test_json_is_found_in_what_models_send(reply: str, kinds: tuple[type, ...], expected: Any) -> None:
    assert find_json(reply, kinds) == expected


def _replies(*texts: str) -> tuple[list[ChatRequest], Any]:
    asked: list[ChatRequest] = []
    queue = list(texts)

    def complete(request: ChatRequest) -> ChatResult:
        asked.append(request)
        return ChatResult(text=queue.pop(0))

    return asked, complete


def _read(result: ChatResult, turn: Turn) -> int | Refused:
    return int(result.text) if result.text.isdigit() else Refused(f"{result.text!r} is not a number")


def test_a_refused_reply_is_asked_again_with_the_reason_and_every_try_is_recorded() -> None:
    asked, complete = _replies("seven", "7")
    recorded: list[tuple[Attempt[int], Turn | None]] = []
    settled: list[Attempt[int]] = []
    last = exchange(
        complete,
        lambda turn: ChatRequest.user(f"a number please. {turn.feedback}".strip()),
        _read,
        tries=3,
        record=lambda attempt, turn: recorded.append((attempt, turn)),
        settle=settled.append,
    )
    assert last.outcome == 7
    assert [r.messages[0].content for r in asked] == [
        "a number please.",
        "a number please. 'seven' is not a number",
    ]
    assert [turn for _, turn in recorded] == [Turn(1, "'seven' is not a number"), None]
    assert settled == [last]


def test_the_exchange_ends_after_its_tries_or_when_the_caller_gives_up() -> None:
    asked, complete = _replies("a", "b", "c", "d")
    last = exchange(complete, lambda t: ChatRequest.user("n"), _read, tries=3, record=lambda a, t: None)
    assert len(asked) == 3 and last.refusal == Refused("'c' is not a number")
    asked, complete = _replies("a", "b")
    exchange(
        complete, lambda t: ChatRequest.user("n"), _read, tries=3, record=lambda a, t: None,
        give_up=lambda attempt: True,
    )  # fmt: skip
    assert len(asked) == 1


def test_a_resumed_exchange_starts_from_its_stored_turn() -> None:
    asked, complete = _replies("x")
    last = exchange(
        complete,
        lambda turn: ChatRequest.user(turn.feedback),
        _read,
        tries=3,
        start=Turn(2, "why"),
        record=lambda a, t: None,
    )
    assert asked[0].messages[0].content == "why"
    assert last.refusal is not None  # the third refusal of three ends it
