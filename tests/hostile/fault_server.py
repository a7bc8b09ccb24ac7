"""A fault-injecting OpenAI-compatible server on loopback, with a scripted model behind it.

`FaultServer` is a real HTTP server (`tests.support.openai_server.FakeOpenAIServer`) whose replies
come from a model that follows the protocol (`ScenarioModel`), except that the first requests of
one kind — a search, a plan, a write, a deepening decision, a verification, a summary… told apart
by `tests.support.request_kinds` — get a fault instead. Each fault in `FAULTS` is something real
servers and the proxies in front of them do:

    transport   the HTTP exchange fails, and the client's retries must carry the run through it:
                a 5xx, a 429 with Retry-After, no answer within the client's timeout, a 200 whose
                body is cut-off JSON, an HTML page, empty, has no choices or a null content;
    content     a well-formed completion the protocol must refuse and ask again: a reply that is
                only hidden reasoning (`<think>…` and no answer), a 40 MB reply; and a
                context-overflow error, which the policy answers with a smaller prompt;
    fatal       the server is gone (connection refused): the run must stop resumably and a resume
                against a working server must end with the report an uninterrupted run writes.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from deepdraft.ports import ChatRequest
from tests.support.openai_server import (
    ErrorReply,
    FakeOpenAIServer,
    Fault,
    HangUp,
    RawReply,
    Reply,
    SlowReply,
)
from tests.support.request_kinds import Kind, evidence_keys, recognise, request_from_body
from tests.support.scenario import ScenarioModel

HANG_S = 60.0
"""How long a hanging answer waits: far past any client timeout a test sets (closing the server ends it)."""
FLOOD_BYTES = 40_000_000

Outcome = Literal["same", "finished", "resumed", "either"]
"""What a fault must lead to: the uninterrupted run's report in one go ("same"), a finished report
("finished": the fault changed what the model was asked, so the report may differ), a stop that a
resume against a working server turns into the uninterrupted run's report ("resumed"), or one of
the last two ("either": a context overflow is answered with a smaller prompt where there is one to
make, and stops the run where the prompt is already as small as prompts get)."""


@dataclass(frozen=True)
class FaultKind:
    answer: Callable[[FakeOpenAIServer], str | Reply | Fault]
    outcome: Outcome
    needs_short_timeout: bool = False


def _refuse_connections(server: FakeOpenAIServer) -> Fault:
    server.stop_listening()  # the client's retries now find nothing listening
    return HangUp()


_COMPLETION = b'{"id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": "fake-model", '

FAULTS: dict[str, FaultKind] = {
    "http-503": FaultKind(lambda s: ErrorReply(503, "the model is loading, try again"), "same"),
    "http-429-retry-after": FaultKind(
        lambda s: ErrorReply(429, "rate limit reached", headers={"retry-after": "1"}), "same"
    ),
    "hang-past-timeout": FaultKind(lambda s: SlowReply(HANG_S, "too late"), "same", needs_short_timeout=True),
    "truncated-json": FaultKind(
        lambda s: RawReply(_COMPLETION + b'"choices": [{"index": 0, "message": {"role": "assistant", "cont'),
        "same",
    ),
    "html-page": FaultKind(
        lambda s: RawReply(
            b"<!DOCTYPE html><html><head><title>Service Unavailable</title></head>"
            b"<body><h1>Service Unavailable</h1></body></html>",
            content_type="text/html",
        ),
        "same",
    ),
    "empty-body": FaultKind(lambda s: RawReply(b""), "same"),
    "no-choices": FaultKind(lambda s: RawReply(_COMPLETION + b'"choices": []}'), "same"),
    "null-content": FaultKind(
        lambda s: RawReply(
            _COMPLETION + b'"choices": [{"index": 0, "message": {"role": "assistant", "content": null},'
            b' "finish_reason": "stop"}]}'
        ),
        "same",
    ),
    "think-only-flood": FaultKind(
        lambda s: Reply("<think>" + "Let me weigh the sources once more. " * 30_000, finish_reason="length"),
        "finished",
    ),
    "context-overflow": FaultKind(
        lambda s: ErrorReply(
            400,
            "This model's maximum context length is 4096 tokens. However, you requested 9120 tokens "
            "(7072 in the messages, 2048 in the completion). Please reduce the length of the messages.",
        ),
        "either",
    ),
    "reply-40mb": FaultKind(lambda s: Reply("lorem ipsum " * (FLOOD_BYTES // 12)), "finished"),
    "connection-refused": FaultKind(_refuse_connections, "resumed"),
}


@dataclass
class EveryCallScenario:
    """`ScenarioModel`, with sections whose sentences need every finishing call: one the word
    overlap cannot settle (the judge is asked: "verify"), which the judge finds unsupported
    ("repair")."""

    model: ScenarioModel = field(default_factory=lambda: ScenarioModel(expansions=1))

    def __call__(self, request: ChatRequest) -> str:
        recognised = recognise(request)
        if recognised.kind == "verify":
            # The judge finds the first sentence unsupported, so verification asks for a repair: a
            # write whose sentence shared (almost) nothing with its passages would be refused or
            # trimmed before verification ever saw it.
            lines = dict(re.findall(r"^(\d+)\. (.*)$", request.messages[-1].content, re.M))
            verdicts = [
                {"claim": n, "supported": "no" if "weighed" in lines.get(str(n), "") else "yes"}
                for n in range(1, recognised.count + 1)
            ]
            return json.dumps({"verdicts": verdicts})
        if recognised.kind != "write":
            return self.model(request)
        cite = ", ".join(evidence_keys(request.messages[-1].content)[:2])
        return (
            f"<thought>Use {cite}.</thought><action>Presidents weighed tariffs on imports against the "
            f"burden they placed on farmers \\cite{{{cite}}}. Later addresses favoured open markets and "
            f"lower duties as the lesson of history \\cite{{{cite}}}.</action>"
        )


class FaultServer(FakeOpenAIServer):
    """`model` answers every request, except the first `times` requests of `kind`, which get `fault`."""

    def __init__(
        self,
        model: Callable[[ChatRequest], str],
        fault: str | None = None,
        kind: Kind | None = None,
        *,
        times: int = 1,
    ) -> None:
        super().__init__(self._respond)
        self.model, self.fault, self.kind, self.times = model, fault, kind, times
        self.injected = 0
        self.kinds: list[Kind] = []
        """The kind of every chat request, in arrival order (retries included)."""
        self._count = threading.Lock()

    def _respond(self, body: dict[str, Any], index: int) -> str | Reply | Fault:
        request = request_from_body(body)
        kind = recognise(request).kind
        with self._count:
            self.kinds.append(kind)
            inject = self.fault is not None and kind == self.kind and self.injected < self.times
            if inject:
                self.injected += 1
        if inject:
            assert self.fault is not None
            return FAULTS[self.fault].answer(self)
        return self.model(request)
