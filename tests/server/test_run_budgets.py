"""A run started over HTTP takes the same budgets as one started from the command line."""

from __future__ import annotations

from pathlib import Path

from deepdraft.run.runs import Runs
from tests.server.conftest import QUESTION, LiveServer, upload_kb


def test_a_time_budget_is_read_like_the_command_line_one(live: LiveServer, corpus_dir: Path) -> None:
    with live.client() as client:
        upload_kb(client, "speeches", corpus_dir)
        created = client.post("/api/runs", json={"question": QUESTION, "kb": "speeches", "max_time": "30m"})
        assert created.status_code == 201, created.text
        with Runs.open() as runs:
            assert runs.get(created.json()["id"]).settings.research.max_time == 1800

        bad = client.post("/api/runs", json={"question": QUESTION, "max_time": "soon"})
        assert bad.status_code == 422 and "give a duration such as 90s, 30m" in bad.text
