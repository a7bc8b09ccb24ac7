"""Shared pieces of the server tests: a real uvicorn on a loopback port, a scripted research model,
a knowledge base built through the upload API, and an SSE reader."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from deepdraft.config import load_settings
from deepdraft.llm.scripted import FunctionLLM
from deepdraft.ports import LLM, ChatRequest
from deepdraft.server.app import create_app
from deepdraft.settings import Settings
from tests.support.scenario import ScenarioModel

QUESTION = "How did presidents argue about tariffs?"
TOKEN = "test-token-0123456789abcdef"


class LiveServer:
    """An ASGI app served by uvicorn on a loopback address (127.0.0.1 unless told) in a thread,
    with its lifespan."""

    def __init__(self, app: Any, host: str = "127.0.0.1") -> None:
        self.app, self.host = app, host
        self.server = uvicorn.Server(
            uvicorn.Config(app, host=host, port=free_port(host), log_level="warning", lifespan="on")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.server.config.port}"

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def scenario_llm(delay_s: float = 0.0, expansions: int = 1, gate: threading.Event | None = None) -> LLM:
    """The scripted WARP model; `delay_s` per call makes a run slow enough to watch or cancel, and
    `gate` (when given) holds every call until it is set."""
    model = ScenarioModel(expansions=expansions)

    def respond(request: ChatRequest) -> str:
        if gate is not None:
            gate.wait(timeout=30)
        if delay_s:
            time.sleep(delay_s)
        return model(request)

    return FunctionLLM(respond, model="scenario")


def server_settings() -> Settings:
    # No LLM endpoint: the tests inject the model with `llm_factory`. The LLM cache stays on, as in use.
    return load_settings(flags={"research": {"depth": "standard"}})


def make_app(
    llm: Callable[[Settings], LLM] | None = None, *, token: str | None = None, workers: int = 2, **kw: Any
) -> Any:
    return create_app(
        server_settings(), token=token, workers=workers, llm_factory=llm or (lambda _: scenario_llm()), **kw
    )


@pytest.fixture
def live() -> Iterator[LiveServer]:
    with LiveServer(make_app()) as server:
        yield server


def upload_kb(client: httpx.Client, kb: str, folder: Path) -> dict[str, Any]:
    """Upload every file of `folder` into `kb` and wait for the ingestion job to finish."""
    files = [("files", (path.name, path.read_bytes(), "text/markdown")) for path in sorted(folder.iterdir())]
    answer = client.post(f"/api/kbs/{kb}/documents", files=files)
    assert answer.status_code == 202, answer.text
    job = answer.json()
    deadline = time.monotonic() + 30
    while job["status"] in ("queued", "running"):
        assert time.monotonic() < deadline, job
        time.sleep(0.05)
        job = client.get(f"/api/jobs/{job['id']}").json()
    assert job["status"] == "done", job
    return job  # type: ignore[no-any-return]


@dataclass
class SSEMessage:
    event: str
    data: dict[str, Any]
    id: int | None


def read_sse(client: httpx.Client, path: str, headers: dict[str, str] | None = None) -> list[SSEMessage]:
    """Every message of an event stream until the server closes it (after its `end` message)."""
    with client.stream("GET", path, headers=headers or {}, timeout=60) as response:
        return list(iter_sse(response))


def iter_sse(response: httpx.Response) -> Iterator[SSEMessage]:
    """The messages of an open event stream, as they arrive."""
    assert response.status_code == 200, response.read()
    assert response.headers["content-type"].startswith("text/event-stream")
    fields: dict[str, str] = {}
    for line in response.iter_lines():
        if line.startswith(":"):
            continue  # a keep-alive comment
        if line == "":
            if "data" in fields:
                seq = fields.get("id")
                yield SSEMessage(
                    fields.get("event", "message"), json.loads(fields["data"]), int(seq) if seq else None
                )
            fields = {}
            continue
        name, _, value = line.partition(":")
        fields[name] = value[1:] if value.startswith(" ") else value


class SSEFollower:
    """One event-stream connection read in a thread, so a test can act on the run while it watches.

    `connections` counts the requests made: a test that wants one connection across a run's life
    checks it stays 1. Leaving the block closes the connection, also when the stream is still open.
    """

    def __init__(self, url: str, path: str) -> None:
        self.client = httpx.Client(base_url=url, timeout=httpx.Timeout(30, read=120))
        self.path = path
        self.messages: list[SSEMessage] = []
        self.connections = 0
        self.closed = threading.Event()
        self.thread = threading.Thread(target=self._read, daemon=True)

    def _read(self) -> None:
        try:
            with self.client.stream("GET", self.path) as response:
                self.connections += 1
                for message in iter_sse(response):
                    self.messages.append(message)
        except httpx.HTTPError:
            pass  # closed from the test's side
        finally:
            self.closed.set()

    def __enter__(self) -> SSEFollower:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.close()
        self.thread.join(timeout=30)

    def wait_for_event(self, event: str, what: str | None = None) -> SSEMessage:
        def seen() -> SSEMessage | None:
            return next((m for m in self.messages if m.event == event), None)

        return wait_for(seen, what=what or f"a {event!r} message")  # type: ignore[no-any-return]


def wait_for(check: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)
