"""A research run over a KB on the Postgres engine: the runner, its citations and pages, unchanged."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.support.documents import PDF_TITLE, make_document_folder
from tests.support.openai_server import FakeOpenAIServer
from tests.support.scenario import ScenarioModel, as_responder

QUESTION = "How fast are the Vatnajokull glaciers retreating?"


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "deepdraft", *args],
        capture_output=True,
        text=True,
        timeout=180,
        env=dict(os.environ, COLUMNS="200"),
        stdin=subprocess.DEVNULL,
    )


def test_research_over_a_postgres_kb_cites_documents_and_pages(tmp_path: Path, postgres_dsn: str) -> None:
    documents = tmp_path / "docs"
    make_document_folder(documents)
    added = cli("kb", "add", str(documents), "--kb", "team", "--engine", "postgres", "--dsn", postgres_dsn)
    assert added.returncode == 0, added.stderr
    output = tmp_path / "report.md"
    model = ScenarioModel(expansions=0, topic="Vatnajokull outlet glaciers retreated")
    with FakeOpenAIServer(as_responder(model)) as server:
        result = cli("research", QUESTION, "--kb", "team", "--base-url", server.base_url, "--model", "fake",
                     "--no-verify", "--no-synthesis", "--output", str(output))  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    report = output.read_text(encoding="utf-8")
    body, _, references = report.partition("References")
    entry = next(line for line in references.splitlines() if PDF_TITLE in line)
    number = re.match(r"\s*\[(\d+)\]", entry)
    assert number is not None and "glacier-survey.pdf" in entry
    assert re.search(r", pp?\. [\d, ]*\b2\b", entry)  # page 2 holds the passage searched for
    assert re.search(rf"\[{number.group(1)}, pp?\. [\d, ]*\b2\b\]", body)
