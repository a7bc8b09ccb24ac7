"""`deepdraft batch` as a user runs it: real subprocesses against a scripted server on loopback.

The model answers from each prompt's content (`ScenarioModel`), so a line gets the same replies in
any process and after any kill: reports of a killed-and-resumed batch must equal an uninterrupted one.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.cli.test_cli import NO_FINISHING, cli
from tests.run.test_resume import comparable
from tests.support.openai_server import ErrorReply, FakeOpenAIServer, Fault, Reply
from tests.support.scenario import ScenarioModel, as_responder, classify_body

MODEL = ScenarioModel(expansions=1)
QUESTION = "How did presidents argue about tariffs?"
REQUESTS_PER_RUN = 14  # search, plan, 3 × (search, write), extend, 2 × (search, write), nop


def write_questions(path: Path, ids: list[str], question: str = QUESTION) -> Path:
    path.write_text(
        "".join(json.dumps({"id": i, "question": question}) + "\n" for i in ids), encoding="utf-8"
    )
    return path


def batch_command(questions: Path, corpus: Path, base_url: str, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "deepdraft", "batch", str(questions), "--out", str(out), "--kb", str(corpus),
            "--base-url", base_url, "--model", "fake-model", *NO_FINISHING, *extra]  # fmt: skip


def run_batch(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(command), capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL,
        env=dict(os.environ, COLUMNS="200"),
    )  # fmt: skip


def state(out: Path) -> dict[str, dict[str, Any]]:
    rows = [json.loads(line) for line in (out / "batch.jsonl").read_text(encoding="utf-8").splitlines()]
    return {row["id"]: row for row in rows}


def test_bad_lines_are_all_reported_with_their_numbers_before_anything_runs(
    tmp_path: Path, corpus_dir: Path
) -> None:
    questions = tmp_path / "q.jsonl"
    questions.write_text(
        '{"id": "a", "question": "Why?"}\n'
        "{not json\n"
        '{"id": "b"}\n'
        '{"id": "a", "question": "Again?"}\n'
        "\n"
        '{"id": "c", "question": "Where?", "kb": "no-such-kb"}\n'
        '{"id": "d", "question": "How?", "policy": "guess"}\n'
        '{"id": "e f", "question": "Who?"}\n',
        encoding="utf-8",
    )
    with FakeOpenAIServer(as_responder(MODEL)) as server:
        result = run_batch(*batch_command(questions, corpus_dir, server.base_url, tmp_path / "out"))
        assert server.requests == []
    assert result.returncode == 2
    error = result.stderr.strip()
    assert error.count("\n") == 0 and "6 bad line(s), nothing was run" in error
    for expected in ("line 2: not valid JSON", "line 3: missing question", "line 4: id 'a' is already used on line 1",
                     "line 6: no knowledge base named 'no-such-kb'", "line 7: policy 'guess'", "line 8: missing or bad id"):  # fmt: skip
        assert expected in error
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_a_batch_killed_midway_resumes_and_ends_with_the_reports_of_an_uninterrupted_one(
    tmp_path: Path, corpus_dir: Path
) -> None:
    ids = ["one", "two", "three"]
    questions = write_questions(tmp_path / "q.jsonl", ids)
    reference = tmp_path / "reference"
    with FakeOpenAIServer(as_responder(MODEL)) as server:
        result = run_batch(*batch_command(questions, corpus_dir, server.base_url, reference, "-f", "html"))
        assert result.returncode == 0, result.stderr
        assert len(server.requests) == REQUESTS_PER_RUN * len(ids)
    assert {row["status"] for row in state(reference).values()} == {"finished"}
    assert sorted(p.name for p in reference.glob("*.html")) == ["one.html", "three.html", "two.html"]

    out = tmp_path / "out"
    victim: dict[str, subprocess.Popen[str]] = {}
    kill_at = REQUESTS_PER_RUN + 3  # two runs at once: both are in the middle of their work

    def kill(body: dict[str, Any], index: int) -> None:
        if index == kill_at:
            os.kill(victim["process"].pid, signal.SIGKILL)

    with FakeOpenAIServer(as_responder(MODEL), on_request=kill) as server:
        command = batch_command(
            questions, corpus_dir, server.base_url, out, "--concurrency", "2", "-f", "html"
        )
        victim["process"] = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True
        )
        assert victim["process"].wait(timeout=180) == -signal.SIGKILL
        before = state(out)
        assert any(row["status"] == "running" for row in before.values())  # the kill left work undone

        resumed = run_batch(*command)
        assert resumed.returncode == 0, resumed.stderr
        # Only the requests in flight at the kill (one per running run) were asked twice.
        assert len(server.requests) <= REQUESTS_PER_RUN * len(ids) + 2
    after = state(out)
    for line_id in ids:
        assert after[line_id]["status"] == "finished"
        assert after[line_id]["run_id"] == before[line_id]["run_id"] or not before[line_id]["run_id"]
        assert comparable(out / f"{line_id}.md", corpus_dir) == comparable(
            reference / f"{line_id}.md", corpus_dir
        )
        assert (out / f"{line_id}.html").is_file()
    # The runs are ordinary runs of the workspace: listed, finished, one per line.
    listed = {run["id"]: run["status"] for run in json.loads(cli("runs", "--json").stdout)}
    assert [listed[after[line_id]["run_id"]] for line_id in ids] == ["finished"] * len(ids)

    again = run_batch(*command)  # everything is finished: nothing is asked again
    assert again.returncode == 0, again.stderr


def test_a_failing_line_is_retried_reported_and_fails_the_batch_then_a_rerun_finishes_it(
    tmp_path: Path, corpus_dir: Path
) -> None:
    questions = tmp_path / "q.jsonl"
    questions.write_text(
        json.dumps({"id": "good", "question": QUESTION}) + "\n"
        + json.dumps({"id": "bad", "question": "How did presidents argue about tariffs, doomed?"}) + "\n",
        encoding="utf-8",
    )  # fmt: skip
    healthy = as_responder(MODEL)

    def broken_for_doomed(body: dict[str, Any], index: int) -> str | Reply | Fault:
        # The doomed line gets its outline, then the server fails every write of it.
        if "doomed" in json.dumps(body) and classify_body(body)[0] == "write":
            return ErrorReply(500, "the server fell over", headers={"x-should-retry": "false"})
        return healthy(body, index)

    out = tmp_path / "out"
    with FakeOpenAIServer(broken_for_doomed) as server:
        result = run_batch(*batch_command(questions, corpus_dir, server.base_url, out, "--attempts", "2"))
    assert result.returncode == 1
    rows = state(out)
    assert rows["good"]["status"] == "finished" and rows["good"]["attempts"] == 1
    assert rows["bad"]["status"] == "failed" and rows["bad"]["attempts"] == 2
    assert "fell over" in rows["bad"]["error"]
    summary = [line.split("\t") for line in result.stdout.splitlines() if "\t" in line]
    assert [(row[0], row[1]) for row in summary] == [("good", "finished"), ("bad", "failed")]

    with FakeOpenAIServer(healthy) as server:
        result = run_batch(*batch_command(questions, corpus_dir, server.base_url, out))
        # "good" is skipped; "bad" resumes the same run: its search and plan are not asked again.
        assert 0 < len(server.requests) < REQUESTS_PER_RUN
    assert result.returncode == 0, result.stderr
    rows2 = state(out)
    assert rows2["bad"]["status"] == "finished" and rows2["bad"]["run_id"] == rows["bad"]["run_id"]
    assert rows2["bad"]["attempts"] == 3 and (out / "bad.md").is_file()


def test_the_token_cap_holds_across_the_whole_batch(tmp_path: Path, corpus_dir: Path) -> None:
    questions = write_questions(tmp_path / "q.jsonl", ["a", "b", "c"])
    out = tmp_path / "out"
    with FakeOpenAIServer(as_responder(MODEL)) as server:
        one_run = run_batch(*batch_command(write_questions(tmp_path / "one.jsonl", ["x"]), corpus_dir,
                                           server.base_url, tmp_path / "one"))  # fmt: skip
        assert one_run.returncode == 0
        per_run = (
            state(tmp_path / "one")["x"]["prompt_tokens"] + state(tmp_path / "one")["x"]["completion_tokens"]
        )
        served_before = len(server.requests)
        cap = per_run + per_run // 2  # one run and a half
        result = run_batch(*batch_command(questions, corpus_dir, server.base_url, out,
                                          "--concurrency", "1", "--max-tokens-total", str(cap)))  # fmt: skip
        asked = len(server.requests) - served_before
    assert result.returncode == 1
    rows = state(out)
    assert rows["a"]["status"] == "finished"
    assert rows["b"]["status"] == "finished"  # stopped by the budget, finished from what it had
    assert "token budget" in (out / "b.md").read_text(encoding="utf-8")
    assert rows["c"]["status"] == "failed" and "token budget" in rows["c"]["error"]
    assert REQUESTS_PER_RUN < asked < 2 * REQUESTS_PER_RUN


@pytest.mark.slow
def test_ctrl_c_stops_every_run_after_its_current_action_and_a_rerun_repeats_nothing(
    tmp_path: Path, corpus_dir: Path
) -> None:
    ids = ["one", "two", "three"]
    questions = write_questions(tmp_path / "q.jsonl", ids)
    out = tmp_path / "out"
    victim: dict[str, subprocess.Popen[str]] = {}
    sent: list[int] = []

    def ctrl_c(body: dict[str, Any], index: int) -> None:
        # Ctrl-C once both lines are running (their rows say so): on a loaded machine the second run
        # may start well after the first has asked several requests, so a fixed request count races.
        if sent or index < 5 or not (out / "batch.jsonl").is_file():
            return
        if sum(row["status"] == "running" for row in state(out).values()) == 2:
            sent.append(index)
            victim["process"].send_signal(signal.SIGINT)

    with FakeOpenAIServer(as_responder(MODEL), on_request=ctrl_c) as server:
        command = batch_command(questions, corpus_dir, server.base_url, out, "--concurrency", "2")
        victim["process"] = subprocess.Popen(
            command,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            # SIGINT handled as at a terminal, even when the suite runs as a background job (which
            # starts every child with SIGINT ignored, so the Ctrl-C would never arrive).
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        _, stderr = victim["process"].communicate(timeout=180)
        assert sent and victim["process"].returncode == 130, stderr
        assert "run the same command again" in stderr
        stopped = state(out)
        assert {row["status"] for row in stopped.values()} <= {"interrupted", "pending"}
        assert sum(row["status"] == "interrupted" for row in stopped.values()) == 2  # the two running

        resumed = run_batch(*command)
        assert resumed.returncode == 0, resumed.stderr
        # The replies in flight at Ctrl-C were kept: no request was asked twice.
        assert len(server.requests) == REQUESTS_PER_RUN * len(ids)
    assert {row["status"] for row in state(out).values()} == {"finished"}


def test_a_ray_address_that_is_wrong_or_unreachable_fails_at_once_in_one_line(
    tmp_path: Path, corpus_dir: Path
) -> None:
    pytest.importorskip("ray")
    questions = write_questions(tmp_path / "q.jsonl", ["one"])
    with socket.socket() as unused:  # a port nobody listens on
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    for address, expected in (
        (f"127.0.0.1:{port}", "cannot reach the Ray cluster"),
        ("head-node", "HOST:PORT"),
    ):
        result = run_batch(*batch_command(questions, corpus_dir, "http://127.0.0.1:9/v1", tmp_path / "out",
                                          "--ray", address))  # fmt: skip
        assert result.returncode == 2 and expected in result.stderr
        assert result.stderr.strip().count("\n") == 0


@pytest.mark.slow
def test_ctrl_c_stops_a_batch_on_ray_at_once_and_a_rerun_finishes_it(
    tmp_path: Path, corpus_dir: Path
) -> None:
    """On Ray the workers are stopped at once: only the replies in flight at Ctrl-C are asked again."""
    pytest.importorskip("ray")
    ids = ["one", "two", "three"]
    questions = write_questions(tmp_path / "q.jsonl", ids)
    out = tmp_path / "out"
    victim: dict[str, subprocess.Popen[str]] = {}
    sent: list[int] = []

    def ctrl_c(body: dict[str, Any], index: int) -> None:
        if sent:  # every later request waits for the batch to stop, so no run can finish first
            victim["process"].wait(timeout=300)
            return
        if index < 5 or not (out / "batch.jsonl").is_file():
            return
        if sum(row["status"] == "running" for row in state(out).values()) == 2:
            sent.append(index)
            victim["process"].send_signal(signal.SIGINT)

    with FakeOpenAIServer(as_responder(MODEL), on_request=ctrl_c) as server:
        command = batch_command(
            questions, corpus_dir, server.base_url, out, "--concurrency", "2", "--ray", "auto"
        )
        victim["process"] = subprocess.Popen(
            command,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # as at a terminal
        )
        _, stderr = victim["process"].communicate(timeout=300)
        assert sent and victim["process"].returncode == 130, stderr
        stopped = state(out)
        assert sum(row["status"] == "interrupted" for row in stopped.values()) == 2, [
            (row["status"], row["error"]) for row in stopped.values()
        ]

        resumed = subprocess.run(
            command, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL
        )
        assert resumed.returncode == 0, resumed.stderr
        assert len(server.requests) <= REQUESTS_PER_RUN * len(ids) + 2  # at most the two in flight
    assert {row["status"] for row in state(out).values()} == {"finished"}
