"""One real research run with the embedded model, served over HTTP by `deepdraft serve-model`.

This is the slowest test of the suite (a few minutes on two cores): a `quick` run with a fixed seed
on the demo corpus. Its assertions read the model's own replies from the run journal, not the
rendered report, so no later repair step could make them pass by construction.
"""

from __future__ import annotations

import json
import os
import re
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from deepdraft.core.citations import cited_keys

pytestmark = [pytest.mark.slow, pytest.mark.embedded]

QUESTION = "How did presidents argue about tariffs?"


def require_embedded_setup() -> None:
    """In CI the model must be there (`.ci/run` runs `deepdraft setup`); elsewhere, say what is missing."""
    from deepdraft.llm import embedded_models as models
    from deepdraft.run import demo

    try:
        import llama_cpp  # noqa: F401

        models.resolve_model(None)
        assert demo.demo_corpus_path().is_file(), "the demo corpus is missing"
    except Exception as exc:
        message = f"embedded model or demo corpus not set up ({exc}); run `deepdraft setup`"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def model_server() -> Iterator[str]:
    require_embedded_setup()
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "deepdraft", "serve-model", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{base_url}/models", timeout=2) as reply:
                    assert json.load(reply)["data"][0]["id"] == "qwen2.5-coder-1.5b"
                break
            except OSError as exc:
                if server.poll() is not None or time.monotonic() > deadline:
                    stderr = server.stderr.read() if server.stderr else ""
                    raise AssertionError(f"serve-model did not start: {stderr}") from exc
                time.sleep(0.5)
        yield base_url
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.mark.timeout(900)
def test_quick_research_with_the_embedded_model_over_http(model_server: str, tmp_path: Path) -> None:
    output = tmp_path / "report.md"
    started = time.monotonic()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "deepdraft",
            "research",
            QUESTION,
            "--depth",
            "quick",
            "--seed",
            "7",
            "--max-steps",  # about 35 s an action on two cores, plus verification and synthesis
            "11",  # (4-6 calls): keeps the run within ten minutes
            "--base-url",
            model_server,
            "--output",
            str(output),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    minutes = (time.monotonic() - started) / 60
    assert result.returncode == 0, result.stderr
    print(f"quick embedded run: {minutes:.1f} min")  # shown with -s; the bench records timings

    home = Path(os.environ["DEEPDRAFT_HOME"])
    with sqlite3.connect(home / "journal.sqlite") as db:
        (run_id,) = db.execute("SELECT id FROM runs").fetchone()
        steps = db.execute(
            "SELECT step, action, target, reply, valid, parsed, prompt FROM steps WHERE run_id = ? ORDER BY step",
            (run_id,),
        ).fetchall()
        (blob,) = db.execute(
            "SELECT state FROM checkpoints WHERE run_id = ? ORDER BY step DESC LIMIT 1", (run_id,)
        ).fetchone()
    state = json.loads(zlib.decompress(blob))

    # The structure: a title and at least three top-level sections, most of them written.
    outline = state["outline"]
    assert outline["title"].strip()
    assert len(outline["sections"]) >= 3
    written = [s for s in outline["sections"] if s.get("content")]
    assert len(written) >= 2, [s.get("note") for s in outline["sections"]]

    # Citations, read from the model's own accepted write replies as journaled: every key it cited
    # was in the evidence shown for that very write (the prompt lists it), and the key is known.
    accepted_writes = [s for s in steps if s[1] == "write" and s[4]]
    assert accepted_writes
    seen = set(state["registry"]["items"])
    for _, _, target, reply, _, parsed, prompt in accepted_writes:
        text = json.loads(parsed)["text"]
        keys = {key for group in cited_keys(text) for key in group}
        shown = set(re.findall(r"^bibkey:(textid\d+)$", prompt, flags=re.MULTILINE))
        assert keys, f"{target}: the accepted text cites nothing"
        assert keys <= shown <= seen, f"{target}: cites evidence it was not shown: {keys - shown}"
        assert "\\cite" in reply or re.search(r"textid\d+", reply), (
            f"{target}: the model itself cited nothing"
        )

    # The report: [n] citations that all resolve to References entries naming demo documents.
    report = output.read_text(encoding="utf-8")
    assert report.startswith("# ")
    body, references = report.split("\n## References\n")
    cited = {
        int(number)
        for group in re.findall(r"\[(\d[^\]]*)\]", body)  # [1], [1, 2], [1, p. 3; 2]
        for number in re.findall(r"\d+", re.sub(r"pp?\. [\d, –-]+", "", group))
    }
    listed = {int(n) for n in re.findall(r"^\[(\d+)\] ", references, flags=re.MULTILINE)}
    assert cited and cited == listed
    assert "State of the Union" in references

    # The finishing passes ran for real: the manifest counts the checked sentences.
    manifest = json.loads((home / "runs" / run_id / "manifest.json").read_text(encoding="utf-8"))
    verification = manifest["verification"]
    assert verification["checked"] >= 1, verification
    assert verification["checked"] == sum(
        verification[verdict] for verdict in ("supported", "repaired", "recited", "removed", "unverified")
    )
