"""A batch on a real local Ray cluster (two CPUs, real worker processes) against a scripted server.

A worker is SIGKILLed while it waits for an LLM reply: Ray runs its task again, the task finds
the run in the driver's journal and resumes it, so the batch completes with the reports of an
uninterrupted local batch, and only the request in flight at the kill is asked twice. The workers
are denied the driver's workspace, as on a node without shared storage: each task works in a
scratch folder of its own, so whatever the retried task knows of the run came through the driver.
"""

from __future__ import annotations

import json
import os
import re
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from deepdraft.config import load_settings
from deepdraft.retrieval.kb.names import create_kb
from deepdraft.run.batch import BatchLine, run_batch
from deepdraft.run.runs import Runs, run_folder
from tests.run.test_resume import comparable
from tests.support.openai_server import FakeOpenAIServer
from tests.support.scenario import ScenarioModel, as_responder

ray = pytest.importorskip("ray")

pytestmark = pytest.mark.slow

MODEL = ScenarioModel(expansions=1)
REQUESTS_PER_RUN = 14
LINES = [BatchLine(number, f"q{number}", "How did presidents argue about tariffs?") for number in (1, 2, 3)]


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    for attempt in range(3):
        try:
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
            break
        except Exception as exc:  # Ray gives its node a fixed 30 s to register: a loaded machine misses it
            ray.shutdown()
            if "timed out during startup" not in str(exc) or attempt == 2:
                raise
    try:
        yield
    finally:
        ray.shutdown()


def running_tasks() -> list[int]:
    """Our Ray's line workers (Ray titles a process after its actor)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                title = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if title.startswith(b"ray::LineWorker") and descends_from_us(int(entry.name)):
                pids.append(int(entry.name))
    return pids


def descends_from_us(pid: int) -> bool:
    """The local Ray that this process started runs its workers under it (not another session's)."""
    while pid > 1:
        if pid == os.getpid():
            return True
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return False
        pid = int(stat.rsplit(")", 1)[1].split()[1])  # the parent's pid follows the state letter
    return False


def settings_for(base_url: str) -> Any:
    return load_settings(
        flags={
            "llm": {"base_url": base_url, "model": "fake-model"},
            "output": {"verify": False, "synthesis": False},
        }
    )


def test_a_killed_worker_loses_one_request_and_the_batch_ends_as_if_nothing_happened(
    local_ray: None, corpus_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from deepdraft.run import cluster

    monkeypatch.setattr(cluster, "offered_workspace", lambda: str(tmp_path / "not-on-this-node"))
    with FakeOpenAIServer(as_responder(MODEL)) as server:
        local = run_batch(
            LINES,
            settings_for(server.base_url),
            tmp_path / "local",
            concurrency=1,
            default_kb=str(corpus_dir),
        )
        assert [line.status for line in local.lines] == ["finished"] * 3
        assert len(server.requests) == REQUESTS_PER_RUN * len(LINES)

    killed: list[int] = []

    def kill_the_worker(body: dict[str, Any], index: int) -> None:
        if index == REQUESTS_PER_RUN + 5:  # the second line, in the middle of its writing
            [pid] = running_tasks()
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

    with FakeOpenAIServer(as_responder(MODEL), on_request=kill_the_worker) as server:
        outcome = run_batch(
            LINES,
            settings_for(server.base_url),
            tmp_path / "ray",
            concurrency=1,
            default_kb=str(corpus_dir),
            ray="auto",
        )
        asked = len(server.requests)
    assert killed, "no worker was killed"
    assert [line.status for line in outcome.lines] == ["finished"] * 3
    assert [line.attempts for line in outcome.lines] == [1, 1, 1]  # Ray retried the task, not the batch
    assert asked == REQUESTS_PER_RUN * len(LINES) + 1  # only the request in flight was asked again
    for line in LINES:
        ours, theirs = tmp_path / "ray" / f"{line.id}.md", tmp_path / "local" / f"{line.id}.md"
        assert comparable(ours, corpus_dir) == comparable(theirs, corpus_dir)
    with Runs.open() as runs:  # the runs are in the driver's workspace, as local runs are
        for state in outcome.lines:
            info = runs.get(state.run_id)
            assert info.status == "finished" and info.report_path == str(
                run_folder(state.run_id) / "report.md"
            )
            assert (run_folder(state.run_id) / "manifest.json").is_file()
            assert [step.step for step in runs.steps(state.run_id)] == list(range(1, REQUESTS_PER_RUN + 1))


def test_train_collect_runs_its_queries_on_ray_through_the_same_path(local_ray: None, tmp_path: Path) -> None:
    from deepdraft.settings import Settings
    from deepdraft.train.collect import collect, collection_settings
    from deepdraft.train.queries import load_queries
    from tests.train.support import DATA, ForcedTeacher, write_kb

    queries = load_queries(DATA / "criteria.jsonl")[:2]
    with FakeOpenAIServer(as_responder(ForcedTeacher(expansions=0, topic="history"))) as server:
        base = collection_settings(Settings(), 0)
        settings = base.model_copy(
            update={"llm": base.llm.model_copy(update={"base_url": server.base_url, "model": "fake-model"})}
        )
        outcomes = collect(
            queries, settings, tmp_path / "c", kb=str(write_kb(tmp_path / "kb")), workers=2, ray="auto"
        )
    assert [o.status for o in outcomes] == ["finished", "finished"]
    with Runs.open() as runs:
        for outcome in outcomes:
            assert runs.get(outcome.run_id).status == "finished" and runs.steps(outcome.run_id)


NOT_DRIVING = (  # Ray's own processes, idle workers, and the batch's actors on the driver's node
    b"ray::IDLE",
    b"ray::DashboardAgent",
    b"ray::RuntimeEnvAgent",
    b"ray::DriverNodeService",
    b"ray::BudgetService",
)


def line_drivers() -> dict[int, bytes]:
    """Our Ray's processes that drive batch lines, with their titles."""
    pids = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                title = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if (
                title.startswith(b"ray::")
                and not title.startswith(NOT_DRIVING)
                and descends_from_us(int(entry.name))
            ):
                pids[int(entry.name)] = title.split(b"\0")[0]
    return pids


def test_ten_runs_at_once_are_driven_by_two_worker_processes_not_ten(
    local_ray: None, corpus_dir: Path, tmp_path: Path
) -> None:
    """A worker process per run in flight made a batch wait for as many processes to start."""
    from deepdraft.run.cluster import RUNS_PER_WORKER

    count = RUNS_PER_WORKER + 2  # a full worker and one more
    lines = [
        BatchLine(n, f"q{n}", f"How did presidents argue about tariffs? (report {n})")
        for n in range(1, count + 1)
    ]
    respond = as_responder(MODEL)
    seen: set[str] = set()
    lock = threading.Lock()
    drivers: list[dict[int, bytes]] = []
    # Every run's first request waits here until all of them are in flight: then they are counted.
    all_in_flight = threading.Barrier(len(lines), action=lambda: drivers.append(line_drivers()), timeout=600)

    def answer(body: dict[str, Any], index: int) -> str:
        text = json.dumps(body["messages"])
        tag = re.search(r"\(report (\d+)\)", text)
        assert tag is not None
        with lock:
            first = tag.group(1) not in seen
            seen.add(tag.group(1))
        if first:
            all_in_flight.wait()
        return respond(body, index)

    with FakeOpenAIServer(answer) as server:
        outcome = run_batch(
            lines,
            settings_for(server.base_url),
            tmp_path / "ray",
            concurrency=len(lines),
            default_kb=str(corpus_dir),
            ray="auto",
        )
    assert [line.status for line in outcome.lines] == ["finished"] * len(lines)
    assert len(drivers) == 1 and len(drivers[0]) == 2, drivers  # eight runs in one, two in the other


def test_a_named_kb_is_shipped_to_workers_without_shared_storage(
    local_ray: None, corpus_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from deepdraft.run import cluster

    with create_kb("speeches") as kb:
        kb.add([corpus_dir])
    with FakeOpenAIServer(as_responder(MODEL)) as server:
        local = run_batch(LINES[:2], settings_for(server.base_url), tmp_path / "local", default_kb="speeches")
    assert [line.status for line in local.lines] == ["finished"] * 2

    # The workers' nodes see neither the driver's workspace nor its KBs: the KB travels to them.
    monkeypatch.setattr(cluster, "offered_workspace", lambda: str(tmp_path / "not-on-this-node"))
    with FakeOpenAIServer(as_responder(MODEL)) as server:
        outcome = run_batch(
            LINES[:2], settings_for(server.base_url), tmp_path / "ray", default_kb="speeches", ray="auto"
        )
    assert [line.status for line in outcome.lines] == ["finished"] * 2, [line.error for line in outcome.lines]
    for line in LINES[:2]:
        ours, theirs = tmp_path / "ray" / f"{line.id}.md", tmp_path / "local" / f"{line.id}.md"
        assert comparable(ours, corpus_dir) == comparable(theirs, corpus_dir)

    # Above the size limit nothing is shipped, and every line says what to do instead.
    small = load_settings(
        flags={
            "llm": {"base_url": server.base_url, "model": "fake-model"},
            "output": {"verify": False, "synthesis": False},
            "kb": {"ship_max_mb": 0.001},
        }
    )
    refused = run_batch(LINES[2:], small, tmp_path / "too-big", default_kb="speeches", ray="auto")
    [refusal] = refused.lines
    assert refusal.status == "failed"
    assert "knowledge base 'speeches' is not on this worker's node" in refusal.error
    assert (
        "kb.ship_max_mb" in refusal.error
        and "PostgreSQL" in refusal.error
        and "shared storage" in refusal.error
    )


def test_a_batch_after_ray_was_started_again_in_the_same_process_gets_workers_of_the_new_ray(
    local_ray: None, corpus_dir: Path, tmp_path: Path
) -> None:
    """A finished batch keeps its workers for the next batch of the process; a Ray shut down and
    started again numbers its first job as the last one's, and the kept workers of the earlier Ray
    were taken for the new one's: the second batch waited for workers that no longer existed."""
    from deepdraft.run import cluster

    lines = LINES[:1]
    with FakeOpenAIServer(as_responder(MODEL)) as server:
        settings = settings_for(server.base_url)
        first = run_batch(lines, settings, tmp_path / "first", default_kb=str(corpus_dir), ray="auto")
        earlier = cluster._this_ray()
        ray.shutdown()
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        assert cluster._this_ray() != earlier
        outcome: list[Any] = []
        # The batch runs in a thread so that a wait for workers that never come fails the test
        # (after a generous bound) instead of hanging the suite.
        second = threading.Thread(
            target=lambda: outcome.append(
                run_batch(lines, settings, tmp_path / "second", default_kb=str(corpus_dir), ray="auto")
            ),
            daemon=True,
        )
        second.start()
        second.join(timeout=600)
    assert [line.status for line in first.lines] == ["finished"]
    assert outcome and [line.status for line in outcome[0].lines] == ["finished"]
