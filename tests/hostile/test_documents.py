"""Hostile documents, each given to `deepdraft kb add` and to the server's upload in a process under
resource limits: every one ends in a one-line refusal (or, when it is legitimately readable, is
added) — never a traceback, a hang, or a process killed at its limits.

The corpus is `tests.support.hostile_documents`, written per case under the test's tmp_path. Each
parametrised case is one probe: one input through one channel.

* ``kb-add``: the real CLI in a fresh interpreter (``python -m deepdraft kb add --json``), under
  `RLIMIT_AS` (`ADDRESS_SPACE`) and `RLIMIT_CPU` (`CPU_SECONDS`); reaped with ``wait4`` for its own
  peak RSS and CPU time.
* ``upload``: a server forked for the probe by `tests.support.forking_server` (the same limits), on
  a loopback port; the file is posted to ``/api/kbs/<kb>/documents`` and the ingestion job followed
  until it ends; the server must then still stop cleanly.

A probe that does not end within `WALL_S` is killed and fails as a hang. Peak RSS and wall time of
every probe are recorded, never asserted (the limits are what bound them); with the environment
variable ``DEEPDRAFT_HOSTILE_REPORT`` naming a file, they are written there as JSON for
``bench/hostile.py``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import IO, Any

import httpx
import pytest

from tests.support.hostile_documents import CASES, HostileCase
from tests.support.probes import ADDRESS_SPACE, CPU_SECONDS, KB, WALL_S, Probe, clean_environment, kb_add

pytestmark = pytest.mark.slow

REPORT_ENV = "DEEPDRAFT_HOSTILE_REPORT"
TOKEN = "hostile-probe-token-0123456789"
FORKING_SERVER = Path(__file__).resolve().parents[1] / "support" / "forking_server.py"
# What a crash, or a process that ran out of its limits or of Python's stack, says; never a refusal.
CRASH_MARKERS = ("Traceback (most recent call last)", "MemoryError", "RecursionError")
# A Python exception's name and message passed on as the reason ("UnicodeEncodeError: 'utf-8' ...").
PYTHON_ERROR = re.compile(r"\b[A-Z][A-Za-z]*(Error|Exception): ")


class ForkingServer:
    """The `forking_server` process: one server per probe, forked with the limits."""

    def __init__(self, log: Path) -> None:
        self.log_path = log
        self._log = log.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, str(FORKING_SERVER), str(ADDRESS_SPACE), str(CPU_SECONDS)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            env=clean_environment(),
            text=True,
        )

    def _ask(self, request: dict[str, Any]) -> dict[str, Any]:
        stdin, stdout = self.process.stdin, self.process.stdout
        assert stdin is not None and stdout is not None
        stdin.write(json.dumps(request) + "\n")
        stdin.flush()
        line = stdout.readline()
        assert line, f"the forking server ended: {self.log_path.read_text(errors='replace')[-3000:]}"
        answer: dict[str, Any] = json.loads(line)
        return answer

    def start(self, home: Path) -> tuple[int, int]:
        answer = self._ask({"home": str(home), "token": TOKEN})
        return int(answer["pid"]), int(answer["port"])

    def stop(self, pid: int) -> dict[str, Any]:
        return self._ask({"stop": pid})

    def log_size(self) -> int:
        self._log.flush()
        return self.log_path.stat().st_size

    def log_since(self, offset: int) -> str:
        with self.log_path.open("rb") as log:
            log.seek(offset)
            return log.read().decode(errors="replace")

    def close(self) -> None:
        stdin: IO[str] | None = self.process.stdin
        if stdin is not None:
            stdin.close()
        self.process.wait(timeout=60)
        self._log.close()


def upload(case: HostileCase, target: Path, home: Path, server: ForkingServer) -> Probe:
    probe = Probe(case.id, "upload")
    offset = server.log_size()
    start = time.monotonic()
    pid, port = server.start(home)
    try:
        with httpx.Client(
            base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=WALL_S
        ) as client:
            probe.outcome = _upload_and_follow(client, target, probe, start + WALL_S)
    except httpx.HTTPError as exc:  # the server went away, or never answered
        probe.outcome, probe.messages = "no answer", [f"{type(exc).__name__}: {exc}"]
    finally:
        stopped = server.stop(pid)
    probe.seconds = round(time.monotonic() - start, 3)
    probe.exit, probe.cpu_s = stopped["exit"], stopped["cpu_s"]
    probe.peak_rss_mb = round(stopped["peak_rss_kb"] / 1024, 1)
    probe.log = server.log_since(offset)
    if not stopped["clean"] and probe.outcome in ("accepted", "refused"):
        probe.outcome = "died"  # it answered, then did not stop cleanly (killed at a limit, or hung)
    return probe


def _upload_and_follow(client: httpx.Client, target: Path, probe: Probe, deadline: float) -> str:
    files = [("files", (target.name, target.read_bytes(), "application/octet-stream"))]
    answer = client.post(f"/api/kbs/{KB}/documents", files=files)
    if answer.status_code != 202:
        probe.messages = [str(answer.json().get("detail"))]
        return "refused" if 400 <= answer.status_code < 500 else f"HTTP {answer.status_code}"
    job = answer.json()
    while job["status"] in ("queued", "running"):
        if time.monotonic() > deadline:
            return "hang"
        time.sleep(0.05)
        job = client.get(f"/api/jobs/{job['id']}").json()
    if job["status"] == "failed":
        probe.messages = [job["message"]]
        return "refused"
    summary = job["summary"]
    probe.messages = [failure["reason"] for failure in summary["failures"]]
    return "accepted" if summary["documents_added"] else "refused"


# -- fixtures --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def probes() -> Iterator[list[Probe]]:
    """Every probe of the module, written as JSON to ``$DEEPDRAFT_HOSTILE_REPORT`` at the end."""
    recorded: list[Probe] = []
    yield recorded
    report = os.environ.get(REPORT_ENV)
    if report:
        rows = [{key: value for key, value in asdict(probe).items() if key != "log"} for probe in recorded]
        Path(report).write_text(json.dumps(rows, indent=2, ensure_ascii=False), encoding="utf-8")


@pytest.fixture(scope="module")
def forking_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ForkingServer]:
    server = ForkingServer(tmp_path_factory.mktemp("forking-server") / "server.log")
    yield server
    server.close()


# -- the probes ------------------------------------------------------------------------------------

PROBES = [
    pytest.param(case, channel, id=f"{channel}-{case.id}")
    for case in CASES
    for channel in ("kb-add", "upload")
    if channel == "kb-add" or case.upload
]


@pytest.mark.parametrize(("case", "channel"), PROBES)
def test_hostile_document_is_refused_in_one_line_or_read(
    request: pytest.FixtureRequest, tmp_path: Path, probes: list[Probe], case: HostileCase, channel: str
) -> None:
    folder = tmp_path / "input"
    folder.mkdir()
    try:
        target = case.write(folder)
    except OSError as exc:  # a file system that takes only UTF-8 names (APFS), or no named pipes
        pytest.skip(f"this file system cannot hold the input: {exc}")
    home = tmp_path / "home"
    if channel == "kb-add":
        probe = kb_add(case.id, target, home)
    else:
        probe = upload(case, target, home, request.getfixturevalue("forking_server"))
    probes.append(probe)

    assert probe.outcome in ("accepted", "refused"), (
        f"{probe.outcome} (exit {probe.exit}): {probe.log[-3000:]}"
    )
    assert not any(marker in probe.log for marker in CRASH_MARKERS), probe.log[-3000:]
    if case.expect != "either":
        assert probe.outcome == case.expect, probe.messages
    if probe.outcome == "refused":
        assert probe.messages, "refused without saying why"
    for message in probe.messages:
        assert message.strip() and "\n" not in message, repr(message)
        assert not any(marker in message for marker in CRASH_MARKERS), message
        assert not PYTHON_ERROR.search(message), f"a Python error, not a reason: {message}"
