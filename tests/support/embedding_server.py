"""A real OpenAI-compatible embeddings server on 127.0.0.1, for tests.

    POST /v1/embeddings   {"model", "input": [texts]} → {"data": [{"index", "embedding"}], ...}

Vectors come from a deterministic bag-of-words hash (`hashed_embedding`): texts sharing words get
similar vectors, so retrieval over them behaves like retrieval, not like noise. A *script* of
faults (the `ErrorReply` / `RawReply` types of `openai_server`) can replace the answers to the first
requests; ``shuffle=True`` returns the items in reverse order (clients must sort by ``index``).
Every request body and its headers are recorded.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import threading
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.support.openai_server import ErrorReply, RawReply, _QuietServer

EmbeddingFault = ErrorReply | RawReply


def hashed_embedding(text: str, dimension: int) -> list[float]:
    """A unit vector: each lower-cased word adds 1 to the coordinate its hash picks."""
    vector = [0.0] * dimension
    for word in re.findall(r"\w+", text.lower()):
        digest = hashlib.blake2b(word.encode(), digest_size=4).digest()
        vector[int.from_bytes(digest, "little") % dimension] += 1.0
    norm = math.sqrt(sum(x * x for x in vector)) or 1.0
    return [x / norm for x in vector]


class EmbeddingServer:
    """Serves /v1/embeddings from a daemon thread; use it as a context manager."""

    def __init__(
        self,
        dimension: int = 64,
        *,
        script: Sequence[EmbeddingFault | None] = (),
        shuffle: bool = False,
    ) -> None:
        self.dimension = dimension
        self.script = list(script)
        """Answers for the first requests: a fault, or None for a normal answer."""
        self.shuffle = shuffle
        self._lock = threading.Lock()
        self._requests: list[dict[str, Any]] = []
        self._headers: list[dict[str, str]] = []
        handler = type("_BoundHandler", (_Handler,), {"server_state": self})
        self._httpd = _QuietServer(("127.0.0.1", 0), handler)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def __enter__(self) -> EmbeddingServer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    @property
    def requests(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._requests)

    @property
    def headers(self) -> list[dict[str, str]]:
        with self._lock:
            return list(self._headers)

    def _record(self, body: dict[str, Any], headers: dict[str, str]) -> int:
        with self._lock:
            self._requests.append(body)
            self._headers.append(headers)
            return len(self._requests) - 1


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_state: EmbeddingServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("content-length") or 0))
        if self.path.rstrip("/") != "/v1/embeddings":
            self._send_json(404, {"error": {"message": f"no route for POST {self.path}", "code": 404}})
            return
        body = json.loads(raw)
        state = self.server_state
        index = state._record(body, {k.lower(): v for k, v in self.headers.items()})
        fault = state.script[index] if index < len(state.script) else None
        if isinstance(fault, ErrorReply):
            error = {"message": fault.message, "type": "invalid_request_error", "code": fault.status}
            self._send_json(fault.status, {"error": error}, fault.headers)
            return
        if isinstance(fault, RawReply):
            self._send(fault.status, fault.body, fault.content_type)
            return
        texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
        data = [
            {"object": "embedding", "index": i, "embedding": hashed_embedding(text, state.dimension)}
            for i, text in enumerate(texts)
        ]
        if state.shuffle:
            data.reverse()
        usage = {"prompt_tokens": sum(len(t.split()) for t in texts), "total_tokens": 0}
        self._send_json(200, {"object": "list", "data": data, "model": body.get("model"), "usage": usage})

    def _send_json(self, status: int, payload: object, headers: Any = None) -> None:
        self._send(status, json.dumps(payload).encode(), "application/json", headers)

    def _send(self, status: int, data: bytes, content_type: str, headers: Any = None) -> None:
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)
