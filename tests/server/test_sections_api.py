"""Commands on a finished report's sections over REST (deepen, rewrite, recheck) and a section's
evidence: a real server on loopback, its runs' model the scripted research model."""

from __future__ import annotations

import re
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest

from deepdraft.run import runner
from deepdraft.run.runs import Runs, run_folder
from tests.server.conftest import (
    QUESTION,
    LiveServer,
    make_app,
    read_sse,
    scenario_llm,
    server_settings,
    wait_for,
)

MISSING_RUN = "20990101-000000-ffffff"


def finished_run(corpus_dir: Path) -> str:
    """A run finished in this process on the corpus folder; the server continues it."""
    report = runner.start(QUESTION, server_settings(), kb=str(corpus_dir), llm=scenario_llm())
    return report.run_id


def status_of(client: httpx.Client, run_id: str) -> str:
    return str(client.get(f"/api/runs/{run_id}").json()["status"])


def references(markdown: str) -> dict[str, int]:
    """Source title → its number in the References."""
    found = re.findall(r"^\[(\d+)\] (.+?) — ", markdown.split("## References")[1], flags=re.MULTILINE)
    return {title: int(number) for number, title in found}


def versions_of(client: httpx.Client, run_id: str) -> list[tuple[int, str, bool]]:
    listed = client.get(f"/api/runs/{run_id}/versions").json()["versions"]
    return [(v["number"], v["kind"], v["current"]) for v in listed]


def test_deepen_runs_in_the_background_streams_its_progress_and_writes_a_new_version(
    corpus_dir: Path,
) -> None:
    run_id = finished_run(corpus_dir)
    gate = threading.Event()  # the command's model calls wait here until the test has looked
    with LiveServer(make_app(lambda _: scenario_llm(gate=gate))) as live, live.client() as client:
        before = client.get(f"/api/runs/{run_id}").json()
        assert before["status"] == "finished" and before["outline"]["sections"][1]["children"] == []
        with Runs.open() as runs:
            last_seq = runs.events(run_id)[-1].seq

        started = client.post(
            f"/api/runs/{run_id}/deepen", json={"section": "2", "into": 3, "instructions": "the farm states"}
        )
        assert started.status_code == 202, started.text
        body = started.json()
        assert (body["id"], body["command"], body["section"], body["events_after"]) == (
            run_id,
            "deepen",
            "2",
            last_seq,
        )
        assert body["status"] in ("queued", "continuing")
        wait_for(lambda: status_of(client, run_id) == "continuing", what="the command to be driven")
        busy = client.post(f"/api/runs/{run_id}/rewrite", json={"section": "3"})
        assert busy.status_code == 409 and "wait until it is finished" in busy.json()["detail"]
        gate.set()

        # The command's events alone, on the run's own stream, until the run is finished again.
        messages = read_sse(client, f"/api/runs/{run_id}/events?after={last_seq}")
        journaled = [m for m in messages if m.id is not None]
        assert journaled[0].id == last_seq + 1 and journaled[0].event == "run_started"
        grown = next(m for m in journaled if m.event == "outline_changed")
        assert grown.data["added"] == ["section-2.1", "section-2.2", "section-2.3"]
        written = [m.data["position"] for m in journaled if m.event == "node_written"]
        assert written == ["section-2.1", "section-2.2", "section-2.3"]
        assert journaled[-1].event == "run_finished"
        assert messages[-1].event == "end" and messages[-1].data["status"] == "finished"

        after = client.get(f"/api/runs/{run_id}").json()
        assert after["status"] == "finished" and after["error"] is None
        assert len(after["outline"]["sections"][1]["children"]) == 3
        assert versions_of(client, run_id) == [(1, "research", False), (2, "deepen", True)]
        diff = client.get(f"/api/runs/{run_id}/diff").json()
        added = [(s["key"], s["change"]) for s in diff["sections"] if s["change"] == "added"]
        assert added == [("2.1", "added"), ("2.2", "added"), ("2.3", "added")]


def test_rewrite_and_recheck_each_write_their_version(corpus_dir: Path) -> None:
    run_id = finished_run(corpus_dir)
    with LiveServer(make_app()) as live, live.client() as client:
        rewrite = client.post(
            f"/api/runs/{run_id}/rewrite", json={"section": "section-3", "instructions": "shorter"}
        )
        assert rewrite.status_code == 202, rewrite.text
        assert read_sse(client, f"/api/runs/{run_id}/events")[-1].data["status"] == "finished"
        recheck = client.post(f"/api/runs/{run_id}/recheck")  # no body: the whole report
        assert recheck.status_code == 202 and recheck.json()["section"] is None, recheck.text
        assert read_sse(client, f"/api/runs/{run_id}/events")[-1].data["status"] == "finished"
        kinds = [kind for _, kind, _ in versions_of(client, run_id)]
        assert kinds[0] == "research" and kinds[1] == "rewrite"
        # A recheck that changes nothing in the Markdown keeps the current version as it is.
        assert set(kinds[2:]) <= {"recheck"}
    with Runs.open() as runs:
        directed = [(s.action, s.target) for s in runs.steps(run_id) if s.directed]
    assert directed[0] == ("rewrite", "section-3") and ("recheck", "report") in directed
    assert ("search", "section-3") in directed and ("write", "section-3") in directed


def refused(client: httpx.Client, path: str, body: Any = None) -> tuple[int, str]:
    answer = client.post(path, json=body)
    detail = answer.json()["detail"]
    assert isinstance(detail, str) and "\n" not in detail, detail
    return answer.status_code, detail


def test_commands_that_cannot_apply_are_refused_in_one_line_and_change_nothing(corpus_dir: Path) -> None:
    run_id = finished_run(corpus_dir)
    calls: list[object] = []

    def no_model(_: object) -> Any:
        calls.append(_)
        raise AssertionError("a refused command must not build a model")

    with LiveServer(make_app(no_model)) as live, live.client() as client:
        cases = [
            (f"/api/runs/{MISSING_RUN}/deepen", {"section": "2"}, 404, "no run with id"),
            (f"/api/runs/{run_id}/deepen", {"section": "9"}, 404, "has no section 9 (its sections are 1–3"),
            (f"/api/runs/{run_id}/rewrite", {"section": "2.5"}, 404, "has no section 2.5"),
            (f"/api/runs/{run_id}/recheck", {"section": "4"}, 404, "has no section 4"),
            # The first research deepened section 1 already.
            (f"/api/runs/{run_id}/deepen", {"section": "1"}, 409, "section 1 already has subsections"),
            (
                f"/api/runs/{run_id}/deepen",
                {"section": "2", "into": 9},
                422,
                "into: input should be less than",
            ),
            (f"/api/runs/{run_id}/deepen", {"section": "2", "into": 1}, 422, "into: input should be greater"),
            (f"/api/runs/{run_id}/deepen", {"section": "two"}, 422, "section: string should match pattern"),
            (f"/api/runs/{run_id}/deepen", {}, 422, "section: field required"),
            (f"/api/runs/{run_id}/deepen", {"section": "2", "depth": 3}, 422, "depth: extra inputs"),
            (
                f"/api/runs/{run_id}/rewrite",
                {"section": "2", "instructions": "x" * 2001},
                422,
                "instructions:",
            ),
            (
                f"/api/runs/{run_id}/rewrite",
                {"section": "2", "max_steps": 0},
                422,
                "max_steps: input should be",
            ),
        ]
        for path, body, status, phrase in cases:
            got, detail = refused(client, path, body)
            assert (got, phrase in detail) == (status, True), (path, body, detail)

        # A run that is not finished takes no command.
        with Runs.open() as runs:
            runs.mark(run_id, "failed", error="stopped by the test")
        status, detail = refused(client, f"/api/runs/{run_id}/recheck")
        assert status == 409 and "is not finished (it is failed)" in detail
        with Runs.open() as runs:
            runs.mark(run_id, "finished", error="")

        # A hand edit of the section is not overwritten without force, and nothing is recorded.
        report = run_folder(run_id) / "report.md"
        edited = report.read_text(encoding="utf-8").replace(
            "## 2 Part middle\n\n", "## 2 Part middle\n\nMy note. "
        )
        report.write_text(edited, encoding="utf-8")
        status, detail = refused(client, f"/api/runs/{run_id}/rewrite", {"section": "2"})
        assert status == 409 and "edited by hand in 2 Part middle" in detail
        assert versions_of(client, run_id) == [(1, "research", True)]
        assert report.read_text(encoding="utf-8") == edited
        with Runs.open() as runs:
            assert runs.get(run_id).status == "finished"
    assert calls == []


def test_a_hand_edit_is_kept_as_a_version_when_the_command_is_forced(corpus_dir: Path) -> None:
    run_id = finished_run(corpus_dir)
    report = run_folder(run_id) / "report.md"
    edited = report.read_text(encoding="utf-8").replace(
        "## 2 Part middle\n\n", "## 2 Part middle\n\nMy note. "
    )
    report.write_text(edited, encoding="utf-8")
    with LiveServer(make_app()) as live, live.client() as client:
        started = client.post(f"/api/runs/{run_id}/rewrite", json={"section": "2", "force": True})
        assert started.status_code == 202, started.text
        assert read_sse(client, f"/api/runs/{run_id}/events")[-1].data["status"] == "finished"
        assert versions_of(client, run_id) == [
            (1, "research", False),
            (2, "hand-edit", False),
            (3, "rewrite", True),
        ]
        assert "My note." in client.get(f"/api/runs/{run_id}/versions/2").text


def test_a_sections_evidence_names_its_passages_with_the_reports_source_numbers(corpus_dir: Path) -> None:
    run_id = finished_run(corpus_dir)
    with LiveServer(make_app()) as live, live.client() as client:
        answer = client.get(f"/api/runs/{run_id}/sections/2/evidence")
        assert answer.status_code == 200, answer.text
        evidence = answer.json()
        assert (evidence["run_id"], evidence["number"], evidence["position"]) == (run_id, "2", "section-2")
        assert evidence["title"] == "Part middle" and evidence["written"] is True
        passages = evidence["passages"]
        assert passages and all(p["written_from"] for p in passages)  # the scenario cites its own evidence
        cited = [p for p in passages if p["cited"]]
        assert len(cited) == 2  # the scenario's write cites two passages
        numbers = references(client.get(f"/api/runs/{run_id}/report").text)
        assert all(p["number"] == numbers[p["title"]] and p["label"] == f"[{p['number']}]" for p in cited)
        section_text = (
            client.get(f"/api/runs/{run_id}/report").text.split("## 2 Part middle")[1].split("\n## ")[0]
        )
        marks = {
            int(n) for mark in re.findall(r"\[([^\]]+)\]", section_text) for n in re.findall(r"\d+", mark)
        }
        assert {p["number"] for p in cited} <= marks

        # A subsection by its position; unknown and malformed sections.
        assert client.get(f"/api/runs/{run_id}/sections/section-1.1/evidence").json()["number"] == "1.1"
        missing = client.get(f"/api/runs/{run_id}/sections/7/evidence")
        assert missing.status_code == 404 and "has no section 7" in missing.json()["detail"]
        malformed = client.get(f"/api/runs/{run_id}/sections/x1/evidence")
        assert malformed.status_code == 422 and malformed.json()["detail"].startswith(
            "invalid request: section:"
        )
        assert client.get(f"/api/runs/{MISSING_RUN}/sections/1/evidence").status_code == 404


@pytest.mark.parametrize("command", ["deepen", "rewrite", "recheck"])
def test_the_openapi_schema_documents_each_command(live: LiveServer, command: str) -> None:
    with live.client() as client:
        paths = client.get("/openapi.json").json()["paths"]
    operation = paths[f"/api/runs/{{run_id}}/{command}"]["post"]
    assert "202" in operation["responses"]
    assert "/api/runs/{run_id}/sections/{section}/evidence" in paths


def test_a_cancelled_command_resumes_into_the_same_command(corpus_dir: Path) -> None:
    run_id = finished_run(corpus_dir)
    gate = threading.Event()
    with LiveServer(make_app(lambda _: scenario_llm(gate=gate))) as live, live.client() as client:
        assert client.post(f"/api/runs/{run_id}/deepen", json={"section": "3", "into": 2}).status_code == 202
        wait_for(lambda: status_of(client, run_id) == "continuing", what="the command to be driven")
        cancelled = client.post(f"/api/runs/{run_id}/cancel")
        assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelling"
        gate.set()  # the call in flight ends; the command stops before its next action
        wait_for(lambda: status_of(client, run_id) == "cancelled", what="the cancellation")
        refused = client.post(f"/api/runs/{run_id}/rewrite", json={"section": "2"})
        assert refused.status_code == 409 and "stopped during `deepen 3`" in refused.json()["detail"]

        assert client.post(f"/api/runs/{run_id}/resume").status_code == 202
        assert read_sse(client, f"/api/runs/{run_id}/events")[-1].data["status"] == "finished"
        after = client.get(f"/api/runs/{run_id}").json()
        assert [c["title"] for c in after["outline"]["sections"][2]["children"]] == [
            "Facet 1 of section-3",
            "Facet 2 of section-3",
        ]
        assert versions_of(client, run_id) == [(1, "research", False), (2, "deepen", True)]
    with Runs.open() as runs:
        split = [s for s in runs.steps(run_id) if s.action == "extend-plan" and s.directed]
    assert len(split) == 1  # the split was not asked again after the resume


def test_a_command_cancelled_before_it_started_leaves_the_run_finished(corpus_dir: Path) -> None:
    busy, waiting = finished_run(corpus_dir), finished_run(corpus_dir)
    gate = threading.Event()
    with LiveServer(make_app(lambda _: scenario_llm(gate=gate), workers=1)) as live, live.client() as client:
        assert client.post(f"/api/runs/{busy}/recheck").status_code == 202
        wait_for(lambda: status_of(client, busy) == "continuing", what="the first command to hold the worker")
        queued = client.post(f"/api/runs/{waiting}/deepen", json={"section": "2"})
        assert queued.status_code == 202 and queued.json()["status"] == "queued"
        cancelled = client.post(f"/api/runs/{waiting}/cancel")
        assert cancelled.json()["status"] == "cancelled"
        # Nothing of the command happened: the run is finished with its report, and takes commands.
        assert status_of(client, waiting) == "finished"
        assert versions_of(client, waiting) == [(1, "research", True)]
        assert client.get(f"/api/runs/{waiting}/report").status_code == 200
        gate.set()
        assert read_sse(client, f"/api/runs/{busy}/events")[-1].data["status"] == "finished"
        assert client.post(f"/api/runs/{waiting}/recheck", json={"section": "2"}).status_code == 202
        assert read_sse(client, f"/api/runs/{waiting}/events")[-1].data["status"] == "finished"
