"""The REST API through real HTTP: uvicorn on a loopback port, a scripted research model behind it."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from deepdraft.config import load_settings
from deepdraft.errors import LLMRefused
from deepdraft.llm.scripted import FunctionLLM
from deepdraft.ports import LLM, ChatRequest
from deepdraft.run import runner
from deepdraft.server.app import create_app
from tests.server.conftest import (
    QUESTION,
    LiveServer,
    SSEFollower,
    free_port,
    make_app,
    read_sse,
    scenario_llm,
    upload_kb,
    wait_for,
)
from tests.support.openai_server import FakeOpenAIServer
from tests.support.scenario import ScenarioModel, as_responder


def create_run(client: httpx.Client, **body: object) -> dict[str, object]:
    answer = client.post(
        "/api/runs", json={"question": QUESTION, "kb": "speeches", "depth": "standard", **body}
    )
    assert answer.status_code == 201, answer.text
    return answer.json()  # type: ignore[no-any-return]


def status_of(client: httpx.Client, run_id: str) -> str:
    return str(client.get(f"/api/runs/{run_id}").json()["status"])


def test_a_run_streams_every_event_in_order_and_its_report_is_served(
    live: LiveServer, corpus_dir: Path
) -> None:
    with live.client() as client:
        upload_kb(client, "speeches", corpus_dir)
        run = create_run(client)
        assert run["status"] in ("queued", "running")

        messages = read_sse(client, f"/api/runs/{run['id']}/events")

        journaled = [m for m in messages if m.id is not None]
        with runner.open_journal() as journal:
            expected = journal.events(str(run["id"]))
        assert [m.id for m in journaled] == [e.seq for e in expected] == list(range(1, len(expected) + 1))
        assert [m.event for m in journaled] == [e.kind for e in expected]
        assert [m.data for m in journaled] == [e.payload for e in expected]
        kinds = [m.event for m in journaled]
        assert kinds[0] == "run_started" and kinds[-1] == "run_finished"
        assert {"outline_changed", "node_written", "evidence_added", "action_finished"} <= set(kinds)
        assert messages[-1].event == "end" and messages[-1].data["status"] == "finished"

        # A client reconnecting with Last-Event-ID gets exactly the events after it.
        middle = len(journaled) // 2
        rest = read_sse(client, f"/api/runs/{run['id']}/events", {"Last-Event-ID": str(middle)})
        assert [m.id for m in rest if m.id is not None] == list(range(middle + 1, len(journaled) + 1))

        detail = client.get(f"/api/runs/{run['id']}").json()
        assert detail["status"] == "finished" and detail["steps"] > 5
        assert {"md", "html", "json"} <= set(detail["formats"])
        titles = [section["title"] for section in detail["outline"]["sections"]]
        assert titles == ["Part early", "Part middle", "Part late"]

        markdown = client.get(f"/api/runs/{run['id']}/report", params={"format": "md"})
        assert markdown.status_code == 200 and markdown.headers["content-type"].startswith("text/markdown")
        assert markdown.text == Path(detail_report_path(str(run["id"]))).read_text(encoding="utf-8")
        assert "## References" in markdown.text and "[1]" in markdown.text

        html = client.get(f"/api/runs/{run['id']}/report", params={"format": "html"})
        assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")
        assert "Part early" in html.text and "<h1" in html.text

        document = client.get(f"/api/runs/{run['id']}/report", params={"format": "json"})
        assert document.status_code == 200
        assert "Part early" in json.dumps(document.json())

        wrong = client.get(f"/api/runs/{run['id']}/report", params={"format": "exe"})
        assert wrong.status_code == 400 and "unknown report format" in wrong.json()["detail"]


def detail_report_path(run_id: str) -> str:
    record, _ = runner.load_run(run_id)
    assert record.report_path
    return record.report_path


def test_runs_are_listed_newest_first_and_unknown_ones_are_404(live: LiveServer, corpus_dir: Path) -> None:
    with live.client() as client:
        upload_kb(client, "speeches", corpus_dir)
        first, second = create_run(client), create_run(client)
        for run in (first, second):
            wait_for(
                lambda run=run: status_of(client, str(run["id"])) == "finished", what="the runs to finish"
            )
        listed = client.get("/api/runs").json()
        assert [r["id"] for r in listed] == [second["id"], first["id"]]
        assert all(r["status"] == "finished" and r["kb"] == "speeches" for r in listed)

        missing = client.get("/api/runs/no-such-run")
        assert missing.status_code == 404 and "no run with id" in missing.json()["detail"]
        assert client.get("/api/runs/no-such-run/events").status_code == 404


def test_bad_requests_get_one_clear_line(live: LiveServer, corpus_dir: Path) -> None:
    with live.client() as client:
        unknown_kb = client.post("/api/runs", json={"question": QUESTION, "kb": "nope"})
        assert (
            unknown_kb.status_code == 400 and "no knowledge base named 'nope'" in unknown_kb.json()["detail"]
        )
        # A KB is a name over HTTP, never a server path.
        path_kb = client.post("/api/runs", json={"question": QUESTION, "kb": str(corpus_dir)})
        assert path_kb.status_code == 400 and "invalid knowledge base name" in path_kb.json()["detail"]
        # Bodies out of their bounds: 422, and one line naming the field like every other error.
        empty = client.post("/api/runs", json={"question": ""})
        assert empty.status_code == 422
        assert empty.json()["detail"] == (
            "invalid request: question: string should have at least 1 character (got '')"
        )
        extra = client.post("/api/runs", json={"question": QUESTION, "temperature": 3})
        assert extra.status_code == 422
        assert (
            extra.json()["detail"] == "invalid request: temperature: extra inputs are not permitted (got 3)"
        )


def test_a_run_can_be_cancelled_and_resumed(corpus_dir: Path) -> None:
    drives = itertools.count()  # the first drive is slow enough to cancel; the resumed one is not
    app = make_app(lambda _: scenario_llm(delay_s=0.15 if next(drives) == 0 else 0.0))
    with LiveServer(app) as live, live.client() as client:
        upload_kb(client, "speeches", corpus_dir)
        run_id = str(create_run(client)["id"])
        wait_for(lambda: client.get(f"/api/runs/{run_id}").json()["steps"] >= 2, what="two steps")

        cancelled = client.post(f"/api/runs/{run_id}/cancel")
        assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelling"
        wait_for(lambda: status_of(client, run_id) == "cancelled", what="the cancellation")
        steps_when_cancelled = client.get(f"/api/runs/{run_id}").json()["steps"]
        again = client.post(f"/api/runs/{run_id}/cancel")
        assert again.status_code == 409

        resumed = client.post(f"/api/runs/{run_id}/resume")
        assert resumed.status_code == 202, resumed.text
        messages = read_sse(client, f"/api/runs/{run_id}/events")
        kinds = [m.event for m in messages if m.id is not None]
        assert (
            kinds.count("run_cancelled") == 1
            and kinds.count("run_started") == 2
            and kinds[-1] == "run_finished"
        )
        detail = client.get(f"/api/runs/{run_id}").json()
        assert detail["status"] == "finished" and detail["steps"] > steps_when_cancelled
        # A finished run is not resumed again.
        assert client.post(f"/api/runs/{run_id}/resume").status_code == 409


def stopping_llm(how: str, drives: itertools.count[int]) -> LLM:
    """The scripted model; on the first drive it stops the run `how` after a few calls
    (cancelled: slow enough for the test to cancel it)."""
    if next(drives) > 0:
        return scenario_llm()
    if how == "cancelled":
        return scenario_llm(delay_s=0.15)
    model, calls = ScenarioModel(expansions=1), itertools.count()

    def respond(request: ChatRequest) -> str:
        if next(calls) == 3:
            if how == "interrupted":
                raise KeyboardInterrupt  # what a Ctrl-C in the driving process does
            raise LLMRefused("the endpoint refused the request")
        return model(request)

    return FunctionLLM(respond, model="scenario")


@pytest.mark.parametrize("how", ["cancelled", "interrupted", "failed"])
def test_a_stream_stays_open_across_a_stop_and_a_resume(corpus_dir: Path, how: str) -> None:
    drives = itertools.count()
    with LiveServer(make_app(lambda _: stopping_llm(how, drives))) as live, live.client() as client:
        upload_kb(client, "speeches", corpus_dir)
        run_id = str(create_run(client)["id"])
        with SSEFollower(live.url, f"/api/runs/{run_id}/events") as stream:
            if how == "cancelled":
                wait_for(lambda: client.get(f"/api/runs/{run_id}").json()["steps"] >= 2, what="two steps")
                assert client.post(f"/api/runs/{run_id}/cancel").status_code == 200
            stopped = stream.wait_for_event("stopped", what=f"the stream to say the run is {how}")
            assert stopped.data == {"kind": "stopped", "status": how, "resumable": True}
            assert not stream.closed.is_set()

            assert client.post(f"/api/runs/{run_id}/resume").status_code == 202
            end = stream.wait_for_event("end", what="the resumed run to finish on the same stream")
            assert end.data["status"] == "finished"
            stream.closed.wait(timeout=10)
            assert stream.connections == 1
            kinds = [m.event for m in stream.messages]
            assert kinds.count("stopped") == 1 and kinds.count("run_started") == 2
            seqs = [m.id for m in stream.messages if m.id is not None]
            assert seqs == list(range(1, len(seqs) + 1))  # every journal event once, in order


def test_plan_review_pauses_the_run_until_an_edited_outline_is_sent(corpus_dir: Path) -> None:
    with LiveServer(make_app()) as live, live.client() as client:
        upload_kb(client, "speeches", corpus_dir)
        run_id = str(create_run(client, review_outline=True)["id"])
        wait_for(lambda: status_of(client, run_id) == "awaiting_review", what="the plan review")
        proposed = client.get(f"/api/runs/{run_id}").json()["review"]
        assert [s["title"] for s in proposed["sections"]] == ["Part early", "Part middle", "Part late"]

        too_few = {"title": "Tariffs", "sections": [{"title": "Only", "plan": "One part."}] * 2}
        refused = client.post(f"/api/runs/{run_id}/outline", json=too_few)
        assert refused.status_code == 400 and "between 3 and 12 sections" in refused.json()["detail"]
        assert status_of(client, run_id) == "awaiting_review"

        edited = {
            "title": "Tariffs in presidential addresses",
            "sections": [
                {"title": "Part late", "plan": "The twentieth century."},
                {"title": "Part early", "plan": "The founding years."},
                {"title": "Protection and industry", "plan": "The 1890 tariff act."},
                {"title": "Trade expansion", "plan": "Lower tariffs by negotiation."},
            ],
        }
        accepted = client.post(f"/api/runs/{run_id}/outline", json=edited)
        assert accepted.status_code == 200, accepted.text
        messages = read_sse(client, f"/api/runs/{run_id}/events")
        reviewed = [m.data for m in messages if m.event == "outline_reviewed"]
        assert len(reviewed) == 1 and reviewed[0]["edited"] is True
        detail = client.get(f"/api/runs/{run_id}").json()
        assert detail["status"] == "finished" and detail["title"] == edited["title"]
        titles = [s["title"] for s in detail["outline"]["sections"]]
        assert titles == [s["title"] for s in edited["sections"]]
        assert all(s["content"] for s in detail["outline"]["sections"])
        assert client.post(f"/api/runs/{run_id}/outline", json={"accept": True}).status_code == 409


@pytest.mark.slow
def test_a_run_interrupted_by_a_server_crash_is_resumed_by_the_next_server(
    corpus_dir: Path, tmp_path: Path
) -> None:
    """A real `deepdraft serve` process is killed mid-run; a new one finds the run and finishes it."""
    model = ScenarioModel(expansions=1)
    slow = threading.Event()
    slow.set()

    def respond(body: dict[str, object], index: int) -> str:
        if slow.is_set():
            time.sleep(0.2)  # slow enough that the kill lands mid-run
        return as_responder(model)(body, index)

    with FakeOpenAIServer(respond) as llm:
        port = free_port()
        command = [sys.executable, "-m", "deepdraft", "serve", "--port", str(port),
                   "--base-url", llm.base_url, "--model", "fake-model", "--workers", "1"]  # fmt: skip
        env = {**os.environ, "DEEPDRAFT_DEPTH": "standard"}
        url = f"http://127.0.0.1:{port}"

        def serve() -> subprocess.Popen[bytes]:
            process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            wait_for(lambda: _answers(url), timeout=30, what="the server to start")
            return process

        first = serve()
        try:
            with httpx.Client(base_url=url, timeout=30) as client:
                upload_kb(client, "speeches", corpus_dir)
                run_id = str(create_run(client)["id"])
                wait_for(lambda: client.get(f"/api/runs/{run_id}").json()["steps"] >= 3, what="three steps")
        finally:
            first.send_signal(signal.SIGKILL)
            first.wait(timeout=10)
        slow.clear()

        second = serve()
        try:
            with httpx.Client(base_url=url, timeout=30) as client:
                detail = client.get(f"/api/runs/{run_id}").json()
                assert detail["status"] == "interrupted"
                with runner.open_journal() as journal:
                    assert journal.get_run(run_id).status == "interrupted"  # recorded, not just shown
                assert client.post(f"/api/runs/{run_id}/resume").status_code == 202
                messages = read_sse(client, f"/api/runs/{run_id}/events")
                assert messages[-1].data["status"] == "finished"
                seqs = [m.id for m in messages if m.id is not None]
                assert seqs == list(range(1, len(seqs) + 1))  # nothing lost or doubled by the crash
                report = client.get(f"/api/runs/{run_id}/report")
                assert report.status_code == 200 and "## References" in report.text
        finally:
            second.terminate()
            second.wait(timeout=30)


def _answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/api/health", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_openapi_schema_documents_every_route(live: LiveServer) -> None:
    with live.client() as client:
        schema = client.get("/openapi.json").json()
    paths = schema["paths"]
    expected = {
        ("/api/runs", "post"): "CreateRun",
        ("/api/runs", "get"): None,
        ("/api/runs/{run_id}", "get"): None,
        ("/api/runs/{run_id}/cancel", "post"): None,
        ("/api/runs/{run_id}/resume", "post"): None,
        ("/api/runs/{run_id}/outline", "post"): "OutlineReview",
        ("/api/runs/{run_id}/events", "get"): None,
        ("/api/runs/{run_id}/report", "get"): None,
        ("/api/runs/{run_id}/versions", "get"): None,  # tested in test_versions_api.py
        ("/api/runs/{run_id}/versions/{number}", "get"): None,
        ("/api/runs/{run_id}/diff", "get"): None,
        ("/api/runs/{run_id}/deepen", "post"): "DeepenSection",  # tested in test_sections_api.py
        ("/api/runs/{run_id}/rewrite", "post"): "RewriteSection",
        ("/api/runs/{run_id}/recheck", "post"): None,  # the body is optional
        ("/api/runs/{run_id}/sections/{section}/evidence", "get"): None,
        ("/api/runs/{run_id}/refresh", "get"): None,  # tested in test_refresh_add_source_api.py
        ("/api/runs/{run_id}/refresh", "post"): None,  # the body is optional
        ("/api/runs/{run_id}/add-source", "post"): None,  # a file upload, or JSON
        ("/api/runs/{run_id}/asks", "post"): "AskQuestion",  # tested in test_asks_api.py
        ("/api/runs/{run_id}/asks", "get"): None,
        ("/api/kbs", "get"): None,
        ("/api/kbs/{kb}/documents", "post"): None,
        ("/api/kbs/{kb}/search", "get"): None,
        ("/api/jobs/{job_id}", "get"): None,
        ("/api/health", "get"): None,
    }
    for (path, method), body in expected.items():
        assert method in paths.get(path, {}), f"{method.upper()} {path} is not in the schema"
        operation = paths[path][method]
        if body is not None:
            ref = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
            assert ref.endswith(f"/{body}")
    routes = {(p, m) for p, methods in paths.items() for m in methods}
    assert routes == set(expected), "a route is served without being tested here"
    components = schema["components"]["schemas"]
    assert {"question", "kb", "depth", "review_outline"} <= set(components["CreateRun"]["properties"])
    assert {"id", "status", "outline", "review", "formats"} <= set(components["RunDetail"]["properties"])
    detail = paths["/api/runs/{run_id}"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert detail["$ref"].endswith("/RunDetail")
    assert "text/event-stream" in paths["/api/runs/{run_id}/events"]["get"]["responses"]["200"]["content"]
    upload = paths["/api/kbs/{kb}/documents"]["post"]["requestBody"]["content"]
    assert "multipart/form-data" in upload


def test_kb_search_and_listing(live: LiveServer, corpus_dir: Path) -> None:
    with live.client() as client:
        assert client.get("/api/kbs").json() == []
        job = upload_kb(client, "speeches", corpus_dir)
        assert sorted(job["files"]) == sorted(p.name for p in corpus_dir.iterdir())
        kbs = client.get("/api/kbs").json()
        assert kbs == [{"name": "speeches", "documents": 5, "passages": kbs[0]["passages"]}]
        hits = client.get("/api/kbs/speeches/search", params={"q": "abominations", "k": 3}).json()
        assert hits and "abominations" in hits[0]["text"]
        assert client.get("/api/kbs/nope/search", params={"q": "x"}).status_code == 400


@pytest.mark.parametrize("missing", ["report", "outline"])
def test_answers_that_need_a_finished_or_waiting_run_are_409(corpus_dir: Path, missing: str) -> None:
    gate = threading.Event()
    with LiveServer(make_app(lambda _: scenario_llm(gate=gate))) as live, live.client() as client:
        upload_kb(client, "speeches", corpus_dir)
        run_id = str(create_run(client)["id"])
        if missing == "report":
            answer = client.get(f"/api/runs/{run_id}/report")
            assert answer.status_code == 409 and "has no report yet" in answer.json()["detail"]
        else:
            answer = client.post(f"/api/runs/{run_id}/outline", json={"accept": True})
            assert answer.status_code == 409 and "not waiting for a plan review" in answer.json()["detail"]
        gate.set()
        wait_for(lambda: status_of(client, run_id) == "finished", what="the run to finish")


def test_uploads_are_bounded_by_the_servers_own_retrieval_settings(tmp_path: Path) -> None:
    # A server configured with a lower text limit refuses a document past it, naming the setting.
    settings = load_settings(
        flags={"research": {"depth": "standard"}, "retrieval": {"max_document_chars": 1_000}}
    )
    app = create_app(settings, workers=1, llm_factory=lambda _: scenario_llm())
    folder = tmp_path / "upload"
    folder.mkdir()
    (folder / "short.md").write_text("# Tariffs\n\nDuties protect manufactures.\n", encoding="utf-8")
    (folder / "long.md").write_text("# Debt\n\n" + "The public debt grew. " * 200, encoding="utf-8")
    with LiveServer(app) as server, server.client() as client:
        job = upload_kb(client, "bounded", folder)
    assert job["summary"]["documents_added"] == 1
    [failure] = job["summary"]["failures"]
    assert failure["location"].endswith("long.md") and "max_document_chars" in failure["reason"]


def test_an_upload_creates_a_new_kb_on_the_configured_engine(tmp_path: Path, postgres_dsn: str) -> None:
    from deepdraft.retrieval.kb.names import kb_engine

    settings = load_settings(
        flags={"research": {"depth": "standard"}, "kb": {"engine": "postgres", "dsn": postgres_dsn}}
    )
    app = create_app(settings, workers=1, llm_factory=lambda _: scenario_llm())
    folder = tmp_path / "upload"
    folder.mkdir()
    (folder / "tariffs.md").write_text("# Tariffs\n\nDuties protect manufactures.\n", encoding="utf-8")
    with LiveServer(app) as server, server.client() as client:
        job = upload_kb(client, "shared", folder)
        hits = client.get("/api/kbs/shared/search", params={"q": "duties", "k": 3}).json()
    assert job["summary"]["documents_added"] == 1 and kb_engine("shared") == "postgres"
    assert hits and "Duties" in hits[0]["text"]
