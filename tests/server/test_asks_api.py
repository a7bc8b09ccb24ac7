"""Follow-up questions over REST: ask one of a finished run, list those asked, and the refusals."""

from __future__ import annotations

import re
from pathlib import Path

from deepdraft.run import runner
from tests.server.conftest import QUESTION, LiveServer, scenario_llm, server_settings


def test_a_question_is_answered_stored_and_listed(live: LiveServer, corpus_dir: Path) -> None:
    report = runner.start(QUESTION, server_settings(), kb=str(corpus_dir), llm=scenario_llm())
    before = report.path.read_bytes() if report.path else b""
    with live.client() as client:
        assert client.get(f"/api/runs/{report.run_id}/asks").json() == []
        asked = client.post(f"/api/runs/{report.run_id[:12]}/asks", json={"question": "Who paid the duties?"})
        assert asked.status_code == 201, asked.text
        answer = asked.json()
        assert answer["run_id"] == report.run_id and answer["question"] == "Who paid the duties?"
        assert re.search(r"\[\d+(, \d+)*\]", answer["answer"]) and answer["note"] == ""
        assert answer["section"] is None and answer["asked_at"] <= answer["answered_at"]
        listed = client.get(f"/api/runs/{report.run_id}/asks")
        assert listed.status_code == 200 and listed.json() == [answer]
    assert report.path is not None and report.path.read_bytes() == before


def test_bad_questions_and_runs_get_one_line_answers(live: LiveServer, corpus_dir: Path) -> None:
    report = runner.start(QUESTION, server_settings(), kb=str(corpus_dir), llm=scenario_llm())
    unfinished = runner.create(QUESTION, server_settings(), kb=str(corpus_dir))
    with live.client() as client:
        for run_id, body, status, phrase in [
            ("no-such-run", {"question": "Why?"}, 404, "no run with id no-such-run"),
            (unfinished, {"question": "Why?"}, 409, "is not finished"),
            (report.run_id, {"question": "   "}, 400, "the question is empty"),
            (
                report.run_id,
                {"question": "why " * 600},
                422,
                "question: string should have at most 2000 characters",
            ),
            (
                report.run_id,
                {"question": "Why?", "into": 3},
                422,
                "invalid request: into: extra inputs are not permitted",
            ),
        ]:
            answer = client.post(f"/api/runs/{run_id}/asks", json=body)
            assert answer.status_code == status, (body, answer.text)
            assert phrase in answer.text, answer.text
        assert client.get("/api/runs/no-such-run/asks").status_code == 404
        assert client.get(f"/api/runs/{report.run_id}/asks").json() == []
