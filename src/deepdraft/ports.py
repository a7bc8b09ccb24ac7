"""The two seams between the policy and the outside world: an `LLM` and a `Retriever`.

Both are small Protocols so that any object with the right methods plugs in: the OpenAI-compatible
client, the scripted fake used by tests, a BM25 index on disk. The value types they exchange live
here too, because both sides need them and neither should import the other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from deepdraft.core.evidence import Passage, Source

__all__ = [
    "LLM",
    "ChatRequest",
    "ChatResult",
    "Message",
    "Passage",
    "ReplyShape",
    "Retriever",
    "Source",
    "Usage",
]

Role = Literal["system", "user", "assistant"]


@dataclass(frozen=True)
class Message:
    role: Role
    content: str


@dataclass(frozen=True)
class ReplyShape:
    """The form a reply must take, for backends that can constrain generation (see grammar.py).

    Backends that cannot constrain ignore it; the reply is validated either way.
    """

    grammar: str
    """GBNF of the whole reply, `<thought>…</thought><action>…</action>`."""
    action_schema: dict[str, Any] | None
    """JSON schema of the action alone; None when the action is free text (write)."""


@dataclass(frozen=True)
class ChatRequest:
    """One chat completion, independent of any backend.

    `tag` names the call within its run (e.g. ``"step-12"``). It is part of the cache key, so a
    resumed run replays exactly the replies it already paid for, while an identical prompt asked
    again later in the run still gets a fresh sample.
    """

    messages: tuple[Message, ...]
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    json_schema: dict[str, Any] | None = None
    reply_shape: ReplyShape | None = None
    seed: int | None = None
    tag: str = ""

    @staticmethod
    def user(prompt: str, **kwargs: Any) -> ChatRequest:
        return ChatRequest(messages=(Message("user", prompt),), **kwargs)

    def to_dict(self) -> dict[str, Any]:
        return {
            "messages": [{"role": m.role, "content": m.content} for m in self.messages],
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "json_schema": self.json_schema,
            "reply_shape": None
            if self.reply_shape is None
            else {"grammar": self.reply_shape.grammar, "action_schema": self.reply_shape.action_schema},
            "seed": self.seed,
            "tag": self.tag,
        }


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.prompt_tokens + other.prompt_tokens, self.completion_tokens + other.completion_tokens
        )


@dataclass(frozen=True)
class ChatResult:
    text: str
    usage: Usage = field(default_factory=Usage)
    model: str = ""
    finish_reason: str = ""
    cached: bool = False


@runtime_checkable
class LLM(Protocol):
    """Anything that completes a chat. Implementations raise `errors.LLMError` subclasses."""

    @property
    def model_name(self) -> str: ...

    def complete(self, request: ChatRequest) -> ChatResult: ...


@runtime_checkable
class Retriever(Protocol):
    """Keyword search over some corpus, best passages first."""

    def search(self, query: str, k: int) -> list[Passage]: ...

    def fingerprint(self) -> str:
        """A short hash that changes whenever the searchable content changes."""
        ...
