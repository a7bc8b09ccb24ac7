"""A real OpenAI-compatible HTTP server on 127.0.0.1, for tests.

It speaks just enough of the OpenAI protocol for any OpenAI client (the official SDK, deepdraft's
`OpenAICompatibleLLM` and `OpenAIEmbedder`, curl in a subprocess) to talk to it over a real socket:

    POST /v1/chat/completions   answered by a *responder* you supply
    POST /v1/embeddings         vectors from `hashed_embedding` (see "Embeddings" below)
    GET  /v1/models             lists `server.models`

Everything else gets an OpenAI-style 404. Streaming is not implemented.

Typical use::

    with FakeOpenAIServer.replaying(["first reply", ErrorReply(500), "second reply"]) as server:
        llm = OpenAICompatibleLLM(server.base_url, "fake-model")
        ...
        assert server.requests[0]["messages"][0]["content"] == "..."

A responder is any callable ``(body, index) -> str | Reply | Fault``: ``body`` is the decoded JSON
request, ``index`` counts chat-completion HTTP requests from 0. Every HTTP request counts, so a
client's automatic retry of a failed request consumes the next index — which is exactly what lets a
script such as ``[ErrorReply(500), "ok"]`` test retries.

Faults (the `Fault` union) make the server misbehave on purpose:

- ``ErrorReply(status, message)``: an HTTP error with an OpenAI-style JSON error body (401, 404, 429, 500…);
- ``SlowReply(delay_s, then)``: wait, then answer with ``then`` (to trigger client timeouts);
- ``RawReply(body)``: send these exact bytes, e.g. `NOT_JSON` or `NO_CHOICES`;
- ``HangUp()``: close the connection without answering (with `stop_listening`, a server that died).

The optional ``on_request(body, index)`` hook runs in the server thread after the request is recorded
and before the responder is asked. Tests use it to observe or interfere with the client mid-call, e.g.
to SIGKILL a client subprocess while it waits for its answer. If the hook raises, that request is
answered with HTTP 500 (and the client will not retry it).

Embeddings: a text's vector is a deterministic bag-of-words hash (`hashed_embedding`), so texts
sharing words get similar vectors and retrieval over them behaves like retrieval, not like noise.
``FakeOpenAIServer.for_embeddings(dimension)`` is a server for embedding tests (chat requests fail).
``embedding_script`` replaces the answers to the first embedding requests (an `ErrorReply` or
`RawReply`, or None for a normal answer); ``shuffle_embeddings=True`` returns the items in reverse
order (clients must sort by ``index``). Embedding requests are recorded apart from chat ones
(`embedding_requests`, `embedding_headers`) and counted from 0 on their own.

The server binds a random free port, serves from a daemon thread, and stops (interrupting any pending
`SlowReply`) when the ``with`` block ends or `close()` is called.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self, TypeAlias

__all__ = [
    "NOT_JSON",
    "NO_CHOICES",
    "ErrorReply",
    "FakeOpenAIServer",
    "Fault",
    "HangUp",
    "RawReply",
    "Reply",
    "Responder",
    "SlowReply",
    "fast_sdk_backoff",
    "hashed_embedding",
]


@dataclass(frozen=True)
class Reply:
    """A normal completion with control over the metadata (a plain `str` is ``Reply(text)``)."""

    text: str
    finish_reason: str = "stop"
    usage: bool = True
    """False: omit the `usage` object, as some servers do."""


@dataclass(frozen=True)
class ErrorReply:
    """An HTTP error whose body is ``{"error": {"message": ..., "type": ..., "code": status}}``."""

    status: int
    message: str = "injected error"
    headers: Mapping[str, str] = field(default_factory=dict)
    """Extra response headers, e.g. ``{"retry-after": "1"}`` or ``{"x-should-retry": "false"}``."""


@dataclass(frozen=True)
class RawReply:
    """Exactly these bytes as the response body, whatever the request was."""

    body: bytes
    status: int = 200
    content_type: str = "application/json"


@dataclass(frozen=True)
class SlowReply:
    """Sleep ``delay_s`` seconds, then answer with ``then``."""

    delay_s: float
    then: str | Reply | ErrorReply | RawReply | HangUp = "a slow reply"


@dataclass(frozen=True)
class HangUp:
    """Close the connection without sending any answer."""


Fault: TypeAlias = ErrorReply | RawReply | SlowReply | HangUp
Responder: TypeAlias = Callable[[dict[str, Any], int], "str | Reply | Fault"]
RequestHook: TypeAlias = Callable[[dict[str, Any], int], None]

NOT_JSON = RawReply(b"<html><body>502 Bad Gateway</body></html>", content_type="text/html")
"""A 200 answer that is not JSON at all (a misconfigured proxy)."""
NO_CHOICES = RawReply(b'{"id": "chatcmpl-x", "object": "chat.completion", "created": 0, "model": "m"}')
"""A 200 JSON answer without `choices`."""


def hashed_embedding(text: str, dimension: int) -> list[float]:
    """A unit vector: each lower-cased word adds 1 to the coordinate its hash picks."""
    vector = [0.0] * dimension
    for word in re.findall(r"\w+", text.lower()):
        digest = hashlib.blake2b(word.encode(), digest_size=4).digest()
        vector[int.from_bytes(digest, "little") % dimension] += 1.0
    norm = math.sqrt(sum(x * x for x in vector)) or 1.0
    return [x / norm for x in vector]


def _rough_tokens(text: str) -> int:
    # Words are close enough to tokens for tests that only check that usage is plausible and summed.
    return len(text.split())


class FakeOpenAIServer:
    """An OpenAI chat-completions and embeddings server on 127.0.0.1; use it as a context manager."""

    def __init__(
        self,
        responder: Responder,
        *,
        models: Sequence[str] = ("fake-model",),
        on_request: RequestHook | None = None,
        embedding_dimension: int = 64,
        embedding_script: Sequence[ErrorReply | RawReply | None] = (),
        shuffle_embeddings: bool = False,
    ) -> None:
        self.responder = responder
        self.models: list[str] = list(models)
        """Model ids listed by GET /v1/models; may be changed at any time."""
        self.model_fields: dict[str, Any] = {}
        """Extra fields of every /v1/models entry, e.g. vLLM's {"max_model_len": 4096}."""
        self.on_request = on_request
        self.embedding_dimension = embedding_dimension
        self.embedding_script = list(embedding_script)
        self.shuffle_embeddings = shuffle_embeddings
        self._lock = threading.Lock()
        self._requests: list[dict[str, Any]] = []
        self._headers: list[dict[str, str]] = []
        self._embedding_requests: list[dict[str, Any]] = []
        self._embedding_headers: list[dict[str, str]] = []
        self._closing = threading.Event()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @classmethod
    def replaying(
        cls,
        replies: Sequence[str | Reply | Fault],
        *,
        models: Sequence[str] = ("fake-model",),
        on_request: RequestHook | None = None,
    ) -> FakeOpenAIServer:
        """A server answering the i-th chat request with ``replies[i]``.

        Once the script is exhausted it answers HTTP 500 naming the request, with
        ``x-should-retry: false`` so that the OpenAI SDK fails at once instead of retrying.
        """
        script = list(replies)

        def respond(body: dict[str, Any], index: int) -> str | Reply | Fault:
            if index < len(script):
                return script[index]
            return ErrorReply(
                500,
                f"FakeOpenAIServer: no reply scripted for chat request #{index} "
                f"(the script has {len(script)} replies)",
                headers={"x-should-retry": "false"},
            )

        return cls(respond, models=models, on_request=on_request)

    @classmethod
    def for_embeddings(
        cls,
        dimension: int = 64,
        *,
        script: Sequence[ErrorReply | RawReply | None] = (),
        shuffle: bool = False,
    ) -> FakeOpenAIServer:
        """A server for embedding tests: `dimension`-d hashed vectors; chat requests get HTTP 500."""
        server = cls.replaying([])
        server.embedding_dimension = dimension
        server.embedding_script = list(script)
        server.shuffle_embeddings = shuffle
        return server

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> Self:
        if self._httpd is not None:
            raise RuntimeError("FakeOpenAIServer already started")
        handler = type("_BoundHandler", (_Handler,), {"fake": self})
        self._httpd = _QuietServer(("127.0.0.1", 0), handler)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def close(self) -> None:
        self._closing.set()  # wakes handlers sleeping in a SlowReply
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def stop_listening(self) -> None:
        """Close the listening socket: new connections are refused, as by a server that died.

        Safe from a handler thread (the accept loop runs in a thread of its own); answers already
        under way finish.
        """
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- what tests look at ------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("FakeOpenAIServer is not started")
        return int(self._httpd.server_address[1])

    @property
    def base_url(self) -> str:
        """What an OpenAI client should be given, e.g. ``http://127.0.0.1:41234/v1``."""
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def requests(self) -> list[dict[str, Any]]:
        """A snapshot of the chat-completion request bodies received so far, in arrival order."""
        with self._lock:
            return list(self._requests)

    @property
    def headers(self) -> list[dict[str, str]]:
        """The HTTP headers (names lower-cased) of those requests, parallel to `requests`."""
        with self._lock:
            return list(self._headers)

    @property
    def embedding_requests(self) -> list[dict[str, Any]]:
        """A snapshot of the /v1/embeddings request bodies received so far, in arrival order."""
        with self._lock:
            return list(self._embedding_requests)

    @property
    def embedding_headers(self) -> list[dict[str, str]]:
        """The HTTP headers (names lower-cased) of those requests, parallel to `embedding_requests`."""
        with self._lock:
            return list(self._embedding_headers)

    # -- request handling (called from handler threads) --------------------------------------

    def _record(self, body: dict[str, Any], headers: dict[str, str]) -> int:
        with self._lock:
            self._requests.append(body)
            self._headers.append(headers)
            return len(self._requests) - 1

    def _record_embedding(self, body: dict[str, Any], headers: dict[str, str]) -> int:
        with self._lock:
            self._embedding_requests.append(body)
            self._embedding_headers.append(headers)
            return len(self._embedding_requests) - 1

    def _embeddings(self, body: dict[str, Any]) -> dict[str, Any]:
        texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
        data = [
            {"object": "embedding", "index": i, "embedding": hashed_embedding(text, self.embedding_dimension)}
            for i, text in enumerate(texts)
        ]
        if self.shuffle_embeddings:
            data.reverse()
        usage = {"prompt_tokens": sum(_rough_tokens(t) for t in texts), "total_tokens": 0}
        return {"object": "list", "data": data, "model": body.get("model"), "usage": usage}

    def _completion(self, body: dict[str, Any], index: int, reply: Reply) -> dict[str, Any]:
        messages = body.get("messages") or []
        prompt = sum(4 + _rough_tokens(str(m.get("content") or "")) for m in messages if isinstance(m, dict))
        completion: dict[str, Any] = {
            "id": f"chatcmpl-fake-{index}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model") or (self.models[0] if self.models else "fake-model"),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": reply.text},
                    "finish_reason": reply.finish_reason,
                }
            ],
        }
        if reply.usage:
            tokens = _rough_tokens(reply.text)
            completion["usage"] = {
                "prompt_tokens": prompt,
                "completion_tokens": tokens,
                "total_tokens": prompt + tokens,
            }
        return completion


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that timed out or was killed hangs up mid-answer; that is the test's point, not noise.
        pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like real servers; every answer has a Content-Length
    # Headers and body go out in two writes; with Nagle's algorithm the body then waits for the
    # client's delayed ACK (40 ms on Linux), which made every request in a test cost 40 ms.
    disable_nagle_algorithm = True
    fake: FakeOpenAIServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        if self.path.rstrip("/") == "/v1/models":
            data = [
                {"id": m, "object": "model", "created": 0, "owned_by": "fake", **self.fake.model_fields}
                for m in self.fake.models
            ]
            self._send_json(200, {"object": "list", "data": data})
        else:
            self._send_error(ErrorReply(404, f"no route for GET {self.path}"))

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("content-length") or 0))
        route = self.path.rstrip("/")
        if route not in ("/v1/chat/completions", "/v1/embeddings"):
            self._send_error(ErrorReply(404, f"no route for POST {self.path}"))
            return
        try:
            body = json.loads(raw)
        except ValueError:
            self._send_error(ErrorReply(400, "request body is not JSON"))
            return
        headers = {k.lower(): v for k, v in self.headers.items()}
        if route == "/v1/embeddings":
            self._answer_embeddings(body, self.fake._record_embedding(body, headers))
            return
        index = self.fake._record(body, headers)
        try:
            if self.fake.on_request is not None:
                self.fake.on_request(body, index)
            answer = self.fake.responder(body, index)
        except Exception as exc:  # a bug in the test's hook or responder: make it visible to the client
            answer = ErrorReply(
                500, f"FakeOpenAIServer: {type(exc).__name__}: {exc}", {"x-should-retry": "false"}
            )
        self._answer(body, index, answer)

    def _answer(self, body: dict[str, Any], index: int, answer: str | Reply | Fault) -> None:
        if isinstance(answer, SlowReply):
            if self.fake._closing.wait(answer.delay_s):
                self.close_connection = True
                return  # the server is shutting down
            answer = answer.then
        if isinstance(answer, HangUp):
            self.close_connection = True  # no answer: the socket is closed once this returns
            return
        if isinstance(answer, str):
            answer = Reply(answer)
        if isinstance(answer, Reply):
            self._send_json(200, self.fake._completion(body, index, answer))
        elif isinstance(answer, ErrorReply):
            self._send_error(answer)
        else:
            self._send(answer.status, answer.body, answer.content_type)

    def _answer_embeddings(self, body: dict[str, Any], index: int) -> None:
        script = self.fake.embedding_script
        fault = script[index] if index < len(script) else None
        if isinstance(fault, ErrorReply):
            self._send_error(fault)
        elif isinstance(fault, RawReply):
            self._send(fault.status, fault.body, fault.content_type)
        else:
            self._send_json(200, self.fake._embeddings(body))

    def _send_error(self, error: ErrorReply) -> None:
        kind = "server_error" if error.status >= 500 else "invalid_request_error"
        payload = {"error": {"message": error.message, "type": kind, "code": error.status}}
        self._send_json(error.status, payload, error.headers)

    def _send_json(self, status: int, payload: object, headers: Mapping[str, str] | None = None) -> None:
        self._send(status, json.dumps(payload).encode(), "application/json", headers)

    def _send(
        self, status: int, data: bytes, content_type: str, headers: Mapping[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)


@contextmanager
def fast_sdk_backoff(seconds: float = 0.01) -> Iterator[None]:
    """Shrink the OpenAI SDK's retry backoff (0.5 s doubling up to 8 s) to ``seconds`` for a test.

    The SDK reads the module constants `INITIAL_RETRY_DELAY` and `MAX_RETRY_DELAY` of
    `openai._base_client` at every retry, so patching them there is enough. They are private names:
    if a future SDK renames them this raises AttributeError rather than silently slowing tests down.
    """
    import openai._base_client as base_client

    names = ("INITIAL_RETRY_DELAY", "MAX_RETRY_DELAY")
    saved = {name: getattr(base_client, name) for name in names}
    for name in names:
        setattr(base_client, name, seconds)
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(base_client, name, value)
