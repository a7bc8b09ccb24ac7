"""The report versions over REST: list them, fetch one, and get what changed between two."""

from __future__ import annotations

from pathlib import Path

from deepdraft.config import load_settings
from deepdraft.llm.scripted import FunctionLLM
from deepdraft.run import runner, versions
from deepdraft.run.runs import run_folder
from tests.server.conftest import QUESTION, LiveServer
from tests.support.scenario import SOTU_LIKE, ScenarioModel, WordOverlapRetriever

RUN = "20260103-100000-abcdef"


def finished_with_two_versions() -> Path:
    settings = load_settings(flags={"output": {"verify": False, "synthesis": False}})
    runner.start(QUESTION, settings, llm=FunctionLLM(ScenarioModel(expansions=1)),
                 retriever=WordOverlapRetriever(SOTU_LIKE), run_id=RUN)  # fmt: skip
    folder = run_folder(RUN)
    first = (folder / "report.md").read_text(encoding="utf-8")
    second = first.replace("## 3 Part late\n\n", "## 3 Part late\n\nA new opening sentence. ")
    versions.replace_report(folder, second, kind="rewrite", note="section 3 written again")
    return folder


def test_versions_are_listed_served_and_compared(live: LiveServer) -> None:
    folder = finished_with_two_versions()
    with live.client() as client:
        listed = client.get(f"/api/runs/{RUN[:12]}/versions")
        assert listed.status_code == 200, listed.text
        body = listed.json()
        assert body["run_id"] == RUN and body["unrecorded_edit"] is None
        assert [(v["number"], v["kind"], v["current"]) for v in body["versions"]] == [
            (1, "research", False),
            (2, "rewrite", True),
        ]
        assert body["versions"][1]["changed"] == "1 section rewritten"

        one = client.get(f"/api/runs/{RUN}/versions/1")
        assert one.status_code == 200 and one.headers["content-type"].startswith("text/markdown")
        assert one.content == (folder / "report.v1.md").read_bytes()

        diff = client.get(f"/api/runs/{RUN}/diff").json()
        assert (diff["older"], diff["newer"], diff["summary"]) == (1, 2, "1 section rewritten")
        [section] = diff["sections"]
        assert (section["key"], section["change"], section["heading"]) == ("3", "rewritten", "## 3 Part late")
        assert any(line.startswith("+A new opening sentence.") for line in section["lines"])
        assert (
            client.get(f"/api/runs/{RUN}/diff", params={"older": 2, "newer": 2}).json()["summary"]
            == "no change"
        )


def test_bad_version_requests_get_one_line_answers(live: LiveServer) -> None:
    finished_with_two_versions()
    with live.client() as client:
        for path, status, phrase in [
            (f"/api/runs/{RUN}/versions/9", 404, "has no version 9"),
            (f"/api/runs/{RUN}/versions/0", 400, "there is no version 0"),
            (f"/api/runs/{RUN}/versions/two", 400, "'two' is not a version number"),
            (f"/api/runs/{RUN}/diff?older=5", 404, "has no version 5"),
            ("/api/runs/20990101-000000-ffffff/versions", 404, "no run with id"),
        ]:
            answer = client.get(path)
            assert answer.status_code == status, (path, answer.text)
            assert phrase in answer.json()["detail"] and "\n" not in answer.json()["detail"]
