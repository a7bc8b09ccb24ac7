"""LLMs that answer from a script, for tests, demos and docs. Public API, not test helpers.

`ScriptedLLM` replays queued replies in order and records every request it got. `FunctionLLM`
answers with a function of the request, which suits replies that depend on the prompt (and makes a
run reproducible even when it is interrupted and resumed in another process).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable

from deepdraft.core.tokens import count_tokens
from deepdraft.errors import LLMBadResponse
from deepdraft.ports import ChatRequest, ChatResult, Usage


def _result(text: str, request: ChatRequest, model: str) -> ChatResult:
    prompt_tokens = sum(count_tokens(m.content) for m in request.messages)
    return ChatResult(text, Usage(prompt_tokens, count_tokens(text)), model, "stop")


class ScriptedLLM:
    def __init__(self, replies: Iterable[str] = (), model: str = "scripted") -> None:
        self._replies: deque[str] = deque(replies)
        self._model = model
        self.requests: list[ChatRequest] = []

    @property
    def model_name(self) -> str:
        return self._model

    def enqueue(self, *replies: str) -> None:
        self._replies.extend(replies)

    @property
    def remaining(self) -> int:
        return len(self._replies)

    def complete(self, request: ChatRequest) -> ChatResult:
        self.requests.append(request)
        if not self._replies:
            raise LLMBadResponse(f"the scripted LLM has no reply left for request {len(self.requests)}")
        return _result(self._replies.popleft(), request, self._model)


class FunctionLLM:
    def __init__(self, respond: Callable[[ChatRequest], str], model: str = "function") -> None:
        self._respond = respond
        self._model = model
        self.requests: list[ChatRequest] = []

    @property
    def model_name(self) -> str:
        return self._model

    def complete(self, request: ChatRequest) -> ChatResult:
        self.requests.append(request)
        return _result(self._respond(request), request, self._model)
