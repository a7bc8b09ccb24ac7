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
    messages: list[SSEMessage] = []
    fields: dict[str, str] = {}
    with client.stream("GET", path, headers=headers or {}, timeout=60) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith(":"):
                continue  # a keep-alive comment
            if line == "":
                if "data" in fields:
                    seq = fields.get("id")
                    messages.append(
                        SSEMessage(
                            fields.get("event", "message"),
                            json.loads(fields["data"]),
                            int(seq) if seq else None,
                        )
                    )
                fields = {}
                continue
            name, _, value = line.partition(":")
            fields[name] = value[1:] if value.startswith(" ") else value
    return messages


def wait_for(check: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)
