"""`refresh` and `add-source` over REST: a real server on loopback, its runs' model the scripted
research model, the run's knowledge base a folder of documents changed between the run and the
command."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from deepdraft.run import runner
from deepdraft.run.runs import Runs, run_folder
from tests.server.conftest import LiveServer, make_app, read_sse, server_settings
from tests.server.test_sections_api import MISSING_RUN, finished_run, references, versions_of

MIDDLE_NOTES = (
    "# Notes on the middle years\n\nIn the middle decades presidents sought a middle course between "
    "protection and free trade.\n"
)
LATE_NOTES = "# Late notes\n\nThe late tariff debates turned on reciprocity treaties.\n"


def one_line(answer: httpx.Response) -> str:
    detail = answer.json()["detail"]
    assert isinstance(detail, str) and "\n" not in detail, detail
    return detail


def test_refresh_says_what_it_would_write_again_then_writes_it(corpus_dir: Path) -> None:
    run_id = finished_run(corpus_dir)
    with LiveServer(make_app()) as live, live.client() as client:
        # Nothing changed yet: the dry run says so, and a refresh is refused without queueing anything.
        same = client.get(f"/api/runs/{run_id}/refresh")
        assert same.status_code == 200, same.text
        assert same.json()["stale"] == []
        nothing = f"nothing to refresh: the knowledge base of run {run_id} is as its report saw it"
        assert same.json()["message"] == nothing
        refused = client.post(f"/api/runs/{run_id}/refresh")
        assert (refused.status_code, one_line(refused)) == (409, nothing)
        assert client.get(f"/api/runs/{run_id}").json()["status"] == "finished"

        (corpus_dir / "middle-notes.md").write_text(MIDDLE_NOTES, encoding="utf-8")
        expected = runner.find_stale(run_id, server_settings())
        assert expected.stale  # the new document ranks for some section
        lines = [stale.describe() for stale in expected.stale]

        plan = client.get(f"/api/runs/{run_id[:12]}/refresh").json()
        assert (plan["run_id"], plan["changes"]) == (run_id, "1 document added")
        assert [item["line"] for item in plan["stale"]] == lines
        assert all(item["line"] == f"{item['section']}: {item['reason']}" for item in plan["stale"])
        assert plan["message"] == "the knowledge base changed (1 document added); a refresh writes again:"
        assert versions_of(client, run_id) == [(1, "research", True)]  # the dry run changed nothing

        started = client.post(f"/api/runs/{run_id}/refresh", json={"max_steps": 40})
        assert started.status_code == 202, started.text
        body = started.json()
        assert (body["command"], body["section"], body["changes"]) == ("refresh", None, "1 document added")
        assert [item["line"] for item in body["stale"]] == lines
        assert read_sse(client, f"/api/runs/{run_id}/events")[-1].data["status"] == "finished"
        assert versions_of(client, run_id) == [(1, "research", False), (2, "refresh", True)]

        # The report now stands on the knowledge base as it is.
        assert client.get(f"/api/runs/{run_id}/refresh").json()["stale"] == []
        assert client.post(f"/api/runs/{run_id}/refresh").status_code == 409


def test_refresh_of_an_unknown_or_unfinished_run_is_refused(corpus_dir: Path) -> None:
    run_id = finished_run(corpus_dir)
    with LiveServer(make_app()) as live, live.client() as client:
        assert client.get(f"/api/runs/{MISSING_RUN}/refresh").status_code == 404
        assert client.post(f"/api/runs/{MISSING_RUN}/refresh").status_code == 404
        bad = client.post(f"/api/runs/{run_id}/refresh", json={"max_steps": 0})
        assert bad.status_code == 422 and "max_steps: input should be" in one_line(bad)
        extra = client.post(f"/api/runs/{run_id}/refresh", json={"section": "2"})
        assert extra.status_code == 422 and "section: extra inputs" in one_line(extra)
        with Runs.open() as runs:
            runs.mark(run_id, "failed", error="stopped by the test")
        for answer in (client.get(f"/api/runs/{run_id}/refresh"), client.post(f"/api/runs/{run_id}/refresh")):
            assert answer.status_code == 409 and "is not finished (it is failed)" in one_line(answer)


def upload(client: httpx.Client, run_id: str, name: str, text: str, **fields: Any) -> httpx.Response:
    return client.post(
        f"/api/runs/{run_id}/add-source",
        files={"file": (name, text.encode(), "text/markdown")},
        data={key: str(value) for key, value in fields.items()},
    )


def test_an_uploaded_document_is_added_to_the_runs_kb_and_its_section_written_with_it(
    corpus_dir: Path,
) -> None:
    run_id = finished_run(corpus_dir)
    with LiveServer(make_app()) as live, live.client() as client:
        started = upload(client, run_id, "late-notes.md", LATE_NOTES, to="3", instructions="the treaties")
        assert started.status_code == 202, started.text
        body = started.json()
        assert (body["command"], body["section"], body["source"]) == ("add-source", "3", "late-notes.md")
        assert body["documents"] == ["Late notes"]
        assert read_sse(client, f"/api/runs/{run_id}/events")[-1].data["status"] == "finished"
        kinds = [kind for _, kind, _ in versions_of(client, run_id)]
        assert kinds == ["research", "add-source"]
        assert "Late notes" in references(client.get(f"/api/runs/{run_id}/report").text)
    # Kept with the run, and taken into the run's folder of documents (its knowledge base).
    kept = run_folder(run_id) / "sources" / "late-notes.md"
    assert kept.read_text(encoding="utf-8") == LATE_NOTES
    assert (corpus_dir / "late-notes.md").read_text(encoding="utf-8") == LATE_NOTES


def test_add_source_refusals_are_one_line_and_store_nothing(corpus_dir: Path) -> None:
    run_id = finished_run(corpus_dir)
    calls: list[object] = []

    def no_model(_: object) -> Any:
        calls.append(_)
        raise AssertionError("a refused command must not build a model")

    path = f"/api/runs/{run_id}/add-source"
    with LiveServer(make_app(no_model)) as live, live.client() as client:
        cases: list[tuple[httpx.Response, int, str]] = [
            (
                client.post(path, json={"to": "2", "path": str(corpus_dir / "protection.md")}),
                400,
                "add-source reads no file on the server by its path",
            ),
            (
                client.post(path, json={"to": "2", "url": "https://example.org/tariffs.html"}),
                400,
                "does not use the web (it was started without --web), so deepdraft fetches no URL",
            ),
            (client.post(path, json={"to": "2"}), 400, "upload a file (field `file`) or give a url"),
            (
                client.post(path, json={"to": "two", "url": "https://example.org/"}),
                422,
                "to: string should match pattern",
            ),
            (client.post(path, json={"url": "https://example.org/"}), 422, "to: field required"),
            (client.post(path, content=b"not json"), 400, "send add-source as JSON"),
            (upload(client, run_id, "notes.exe", LATE_NOTES, to="2"), 400, "file type .exe is not accepted"),
            (upload(client, run_id, "notes.md", LATE_NOTES, to="9"), 404, "has no section 9"),
            (upload(client, run_id, "notes.md", "", to="2"), 400, "notes.md is empty"),
            (
                upload(client, MISSING_RUN, "notes.md", LATE_NOTES, to="2"),
                404,
                "no run with id",
            ),
            (
                upload(client, run_id, "notes.md", LATE_NOTES, to="2", depth=3),
                422,
                "depth: extra inputs",
            ),
        ]
        for answer, status, phrase in cases:
            detail = one_line(answer)
            assert (answer.status_code, phrase in detail) == (status, True), detail
        assert versions_of(client, run_id) == [(1, "research", True)]
        assert client.get(f"/api/runs/{run_id}").json()["status"] == "finished"
    assert calls == []
    sources = run_folder(run_id) / "sources"
    assert not sources.exists() or not any(sources.iterdir())
    assert not (corpus_dir / "notes.md").exists()
    with Runs.open() as runs:
        assert runs.egress(run_id) == []  # nothing was fetched


def test_a_file_that_gives_no_document_is_refused_and_not_kept(corpus_dir: Path) -> None:
    run_id = finished_run(corpus_dir)
    with LiveServer(make_app()) as live, live.client() as client:
        answer = upload(client, run_id, "notes.jsonl", "this is not JSON\n", to="2")
        assert answer.status_code == 400, answer.text
        assert "gave no readable document" in one_line(answer)
        assert not (run_folder(run_id) / "sources" / "notes.jsonl").exists()  # a mended one may be sent
        assert not (corpus_dir / "notes.jsonl").exists()  # nor is it left in the run's folder of documents
        assert versions_of(client, run_id) == [(1, "research", True)]


def test_a_file_larger_than_a_json_body_may_be_uploaded_but_a_json_body_is_capped(corpus_dir: Path) -> None:
    run_id = finished_run(corpus_dir)
    big = "# Long notes\n\n" + "Tariff notes. " * 100_000  # 1.4 MB, over the 1 MB of a JSON body
    with LiveServer(make_app()) as live, live.client() as client:
        # Past the body cap: refused for its section (checked before the file is stored), not its size.
        answer = upload(client, run_id, "long-notes.md", big, to="9")
        assert (answer.status_code, "has no section 9" in one_line(answer)) == (404, True)
        too_big = client.post(
            f"/api/runs/{run_id}/add-source",
            json={"to": "2", "url": "https://example.org/" + "x" * 2_000_000},
        )
        assert too_big.status_code == 413 and "larger than the limit" in one_line(too_big)


def test_a_different_file_under_a_name_added_before_is_refused(corpus_dir: Path) -> None:
    run_id = finished_run(corpus_dir)
    with LiveServer(make_app()) as live, live.client() as client:
        assert upload(client, run_id, "late-notes.md", LATE_NOTES, to="2").status_code == 202
        assert read_sse(client, f"/api/runs/{run_id}/events")[-1].data["status"] == "finished"
        other = upload(client, run_id, "late-notes.md", "# Other\n\nSomething else.\n", to="2")
        assert other.status_code == 409
        assert "a different file named late-notes.md was added before" in one_line(other)
        assert (run_folder(run_id) / "sources" / "late-notes.md").read_text(encoding="utf-8") == LATE_NOTES
        assert [kind for _, kind, _ in versions_of(client, run_id)] == ["research", "add-source"]


def test_the_openapi_schema_documents_refresh_and_add_source(live: LiveServer) -> None:
    with live.client() as client:
        paths = client.get("/openapi.json").json()["paths"]
    assert "202" in paths["/api/runs/{run_id}/refresh"]["post"]["responses"]
    assert "200" in paths["/api/runs/{run_id}/refresh"]["get"]["responses"]
    content = paths["/api/runs/{run_id}/add-source"]["post"]["requestBody"]["content"]
    assert set(content) == {"multipart/form-data", "application/json"}
    assert "file" in content["multipart/form-data"]["schema"]["properties"]
