"""`deepdraft add-source` and `refresh` through the command line, killed with SIGKILL and resumed.

The runs search a folder of speeches (`--kb PATH`), which the tests change between the research and
the command. What each command changes in the run is tested in tests/run/test_refresh_and_add_source.py.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.cli.test_cli import cli
from tests.cli.test_cli_sections import MODEL, body, journal_steps, report, research, run_info
from tests.run.test_refresh_and_add_source import MIDDLE_NOTES
from tests.support.openai_server import FakeOpenAIServer
from tests.support.scenario import as_responder, classify_body

LATE_NOTES = "# Late notes\n\nThe late tariff debates turned on reciprocity treaties.\n"


def versions_of(run_id: str) -> list[str]:
    folder = Path(os.environ["DEEPDRAFT_HOME"]) / "runs" / run_id
    return sorted(path.name for path in folder.glob("report.v*.md"))


def killed_and_resumed(run_id: str, command: list[str], kill_at: int) -> list[dict[str, Any]]:
    """Run `deepdraft COMMAND` on `run_id`, SIGKILL it while the model holds its request number
    `kill_at`, resume it; the model's requests from the command's start to the end."""
    victim: dict[str, subprocess.Popen[str]] = {}

    def kill_client(body: dict[str, Any], index: int) -> None:
        if index == kill_at:
            os.kill(victim["process"].pid, signal.SIGKILL)

    with FakeOpenAIServer(as_responder(MODEL), on_request=kill_client) as server:
        before = journal_steps(run_id)
        victim["process"] = subprocess.Popen(
            [sys.executable, "-m", "deepdraft", *command, "--base-url", server.base_url],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        assert victim["process"].wait(timeout=120) == -signal.SIGKILL
        assert run_info(run_id)["status"] == "interrupted"
        resumed = cli("resume", run_id, "--base-url", server.base_url)
        assert resumed.returncode == 0, resumed.stderr
        requests = list(server.requests)
    assert run_info(run_id)["status"] == "finished"
    rows = journal_steps(run_id)
    assert rows[: len(before)] == before and [row[0] for row in rows] == list(range(1, len(rows) + 1))
    return requests


@pytest.mark.slow
def test_sigkill_during_refresh_then_resume_repeats_only_the_request_in_flight(corpus_dir: Path) -> None:
    """Three runs of the same question on the same folder; a document is added; one run is
    refreshed uninterrupted, the others killed at one of the command's requests each, then resumed:
    they ask that request once more and nothing else, and end with the same report."""
    with FakeOpenAIServer(as_responder(MODEL)) as server:
        reference, *victims = (research(corpus_dir, server.base_url) for _ in range(3))
    (corpus_dir / "middle-notes.md").write_text(MIDDLE_NOTES, encoding="utf-8")

    with FakeOpenAIServer(as_responder(MODEL)) as server:
        done = cli("refresh", reference, "--base-url", server.base_url)
        assert done.returncode == 0, done.stderr
        expected_requests = list(server.requests)
    assert (
        "the knowledge base changed (1 document added); writing again:\n"
        "  2: a new passage ranks in its top results (middle-notes.md, added)\n"
    ) in done.stdout
    assert [classify_body(b) for b in expected_requests[:2]] == [
        ("search", "section-2"),
        ("write", "section-2"),
    ]
    expected = body(report(reference)).replace(reference, "RUN")

    for run_id, kill_at in zip(
        victims, (1, len(expected_requests) - 1), strict=True
    ):  # the write, the last pass
        requests = killed_and_resumed(run_id, ["refresh", run_id], kill_at)
        assert len(requests) == len(expected_requests) + 1  # only the request in flight was asked again
        assert requests[kill_at] == requests[kill_at + 1]
        assert body(report(run_id)).replace(run_id, "RUN") == expected

    # The KB is as the reports now saw it: nothing to refresh, exit 0, no new version.
    kept = versions_of(reference)
    again = cli("refresh", reference)
    assert again.returncode == 0, again.stderr
    assert (
        again.stdout.strip()
        == f"nothing to refresh: the knowledge base of run {reference} is as its report saw it"
    )
    assert versions_of(reference) == kept


@pytest.mark.slow
def test_sigkill_during_add_source_then_resume_repeats_only_the_request_in_flight(
    corpus_dir: Path, tmp_path: Path
) -> None:
    notes = tmp_path / "late-notes.md"
    notes.write_text(LATE_NOTES, encoding="utf-8")
    with FakeOpenAIServer(as_responder(MODEL)) as server:
        reference, *victims = (research(corpus_dir, server.base_url) for _ in range(3))
    with FakeOpenAIServer(as_responder(MODEL)) as server:
        done = cli("add-source", reference, str(notes), "--to", "3", "--base-url", server.base_url)
        assert done.returncode == 0, done.stderr
        expected_requests = list(server.requests)
    assert [classify_body(b) for b in expected_requests[:2]] == [
        ("search", "section-3"),
        ("write", "section-3"),
    ]
    assert "reciprocity treaties" in expected_requests[1]["messages"][-1]["content"]  # shown to the writer
    expected = body(report(reference)).replace(reference, "RUN")
    assert (corpus_dir / "late-notes.md").read_text(encoding="utf-8") == LATE_NOTES

    for run_id, kill_at in zip(victims, (0, 1), strict=True):  # the search, the write
        command = ["add-source", run_id, str(notes), "--to", "3"]
        requests = killed_and_resumed(run_id, command, kill_at)
        assert len(requests) == len(expected_requests) + 1
        assert requests[kill_at] == requests[kill_at + 1]
        assert body(report(run_id)).replace(run_id, "RUN") == expected


@pytest.mark.slow
def test_add_source_and_refresh_refuse_in_one_line(corpus_dir: Path, tmp_path: Path) -> None:
    with FakeOpenAIServer(as_responder(MODEL)) as server:
        run_id = research(corpus_dir, server.base_url)
        asked = len(server.requests)
        cases = {
            ("add-source", run_id, "https://example.org/page.html", "--to", "2"): (
                f"error: run {run_id} does not use the web (it was started without --web), so deepdraft "
                f"fetches no URL for it; save the page and add the file: deepdraft add-source {run_id} "
                "page.html --to 2 (or start a run with --web)"
            ),
            ("add-source", run_id, str(tmp_path / "missing.pdf"), "--to", "2"): (
                f"error: no file {tmp_path / 'missing.pdf'} (add-source takes a file or, when the run "
                "allows the web, a URL)"
            ),
            ("add-source", run_id, str(tmp_path), "--to", "9"): f"error: run {run_id} has no section 9",
        }
        for args, message in cases.items():
            result = cli(*args, "--base-url", server.base_url)
            assert result.returncode == 2, (args, result.stderr)
            assert result.stderr.strip().splitlines() == [result.stderr.strip()]  # one line, no traceback
            assert result.stderr.startswith(message), (args, result.stderr)
        nothing = cli("refresh", run_id, "--base-url", server.base_url)
        assert nothing.returncode == 0 and "nothing to refresh" in nothing.stdout
        assert len(server.requests) == asked  # no command asked the model anything
    assert versions_of(run_id) == ["report.v1.md"] and sorted(p.name for p in corpus_dir.iterdir()) == sorted(
        p.name for p in corpus_dir.iterdir() if p.name.startswith("address-")
    )
