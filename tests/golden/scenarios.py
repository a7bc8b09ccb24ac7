"""The runs, commands and searches whose results the golden fixtures freeze.

`regenerate.py` runs these once to write the expected files; `tests/test_golden.py` runs them again
against the committed fixtures and compares byte for byte. Both sides use these functions, so the
only thing that can differ is the code under test.

The fixtures were generated under `GENERATED_AT` (a fixed path): the KB stores its documents'
paths, and the journal its run folders and report paths, as absolute paths under it. Those paths
are data here — nothing reads the files behind them — so the fixtures work from any checkout.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from deepdraft.config import load_settings
from deepdraft.events import Event
from deepdraft.llm.scripted import FunctionLLM
from deepdraft.ports import ChatRequest
from deepdraft.run import runner
from tests.support.openai_server import FakeOpenAIServer
from tests.support.scenario import ScenarioModel, as_responder

HERE = Path(__file__).resolve().parent
HOME_FIXTURE = HERE / "home"
"""A workspace: `kbs/golden` (the KB fixture), `journal.sqlite` and `runs/` (the journal fixture)."""
CONFIG = HERE / "config.toml"
EXPECTED = HERE / "expected"
GENERATED_AT = Path("/tmp/deepdraft-golden")

KB_NAME = "golden"
QUESTION = "How did presidents argue about tariffs?"
FINISHED_RUN = "20260101-120000-aaaaaa"
INTERRUPTED_RUN = "20260101-120500-bbbbbb"
INTERRUPT_AT_CALL = 6
"""The interrupted run stops while asking the model for its sixth reply."""

# (name, settings flags): the request sequences frozen in expected/requests-<name>.json.
RUNS: dict[str, dict[str, dict[str, Any]]] = {
    "warp-standard": {"research": {"policy": "warp", "depth": "standard"}},
    "warp-quick": {"research": {"policy": "warp", "depth": "quick"}},
    "plan-write-standard": {"research": {"policy": "plan-write", "depth": "standard"}},
}
SEARCHES = ["tariffs", "history of protection", "farmer debt revenue", "depression trade walls"]


def install_home(home: Path) -> None:
    """Copy the workspace fixture to `home` (the tests never touch the committed files)."""
    shutil.copytree(HOME_FIXTURE, home, dirs_exist_ok=True)


def dump(value: Any) -> str:
    return json.dumps(value, indent=1, ensure_ascii=False, sort_keys=True) + "\n"


def record_requests(name: str) -> list[dict[str, Any]]:
    """Every ChatRequest a scripted run over the golden KB sends, in order (the workspace must hold it)."""
    settings = load_settings(flags=RUNS[name])
    llm = FunctionLLM(ScenarioModel(expansions=2))
    runner.start(QUESTION, settings, kb=KB_NAME, llm=llm, run_id=f"golden-{name}")
    return [request.to_dict() for request in llm.requests]


def record_http_bodies() -> list[dict[str, Any]]:
    """The HTTP bodies a WARP run sends to an OpenAI-compatible endpoint, in order."""
    with FakeOpenAIServer(as_responder(ScenarioModel(expansions=2))) as server:
        settings = load_settings(flags={"llm": {"base_url": server.base_url, "model": "fake-model"}})
        runner.start(QUESTION, settings, kb=KB_NAME, run_id="golden-http")
        return list(server.requests)


class _Interrupting:
    """ScenarioModel replies until call `INTERRUPT_AT_CALL`, which is cut off like Ctrl-C would."""

    def __init__(self) -> None:
        self.calls = 0
        self.model = ScenarioModel(expansions=1)

    def __call__(self, request: ChatRequest) -> str:
        self.calls += 1
        if self.calls == INTERRUPT_AT_CALL:
            raise KeyboardInterrupt
        return self.model(request)


def make_journal_runs() -> None:
    """The journal fixture's two runs: one finished, one interrupted (quick depth keeps them small)."""
    settings = load_settings(flags={"research": {"depth": "quick"}})
    runner.start(
        QUESTION, settings, kb=KB_NAME, llm=FunctionLLM(ScenarioModel(expansions=1)), run_id=FINISHED_RUN
    )
    try:
        runner.start(QUESTION, settings, kb=KB_NAME, llm=FunctionLLM(_Interrupting()), run_id=INTERRUPTED_RUN)
    except KeyboardInterrupt:
        pass
    else:  # pragma: no cover - the scripted model always interrupts
        raise AssertionError("the interrupted run finished")


def resume_interrupted() -> str:
    """Finish the interrupted run with the scripted model; its report's Markdown."""
    events: list[Event] = []
    report = runner.resume(
        INTERRUPTED_RUN, load_settings(), llm=FunctionLLM(ScenarioModel(expansions=1)), on_event=events.append
    )
    # The wall time is the one thing a rerun cannot reproduce (0.0 s or 0.1 s, as the machine is busy).
    return mask_wall_time(report.markdown)


def mask_wall_time(markdown: str) -> str:
    return re.sub(r"(\*\*Wall time:\*\* )[^\n]*", r"\1<masked>", markdown)


# (name, argv): CLI commands over the journal fixture; expected/cli-<name>.txt holds what each printed.
COMMANDS: list[tuple[str, list[str]]] = [
    ("runs", ["runs"]),
    ("runs-json", ["runs", "--json"]),
    ("show-finished", ["show", FINISHED_RUN]),
    ("show-finished-json", ["show", FINISHED_RUN[:16], "--json"]),  # a unique prefix
    ("show-interrupted", ["show", INTERRUPTED_RUN]),
    ("show-interrupted-json", ["show", INTERRUPTED_RUN, "--json"]),
    ("export-md", ["export", FINISHED_RUN, "--format", "md", "--output", "{out}/report.md"]),
    ("export-json", ["export", FINISHED_RUN, "--format", "json", "--output", "{out}/report.json"]),
    # A finished run is not driven again: one line says so, and the model is asked nothing (a
    # closed port as the endpoint shows that). The path is the one recorded when the fixture was made.
    ("resume-finished", ["resume", FINISHED_RUN, "--base-url", "http://127.0.0.1:9/v1", "--model", "m"]),
]


# Runs `python -m deepdraft ARGV` once per command inside one interpreter: the commands are
# the real entry point, and the suite pays for one start-up instead of one per command.
_DRIVER = """
import contextlib, io, json, runpy, sys
printed = {}
for name, argv in json.loads(sys.argv[1]):
    out, err = io.StringIO(), io.StringIO()
    sys.argv = ["deepdraft", *argv]
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            runpy.run_module("deepdraft", run_name="__main__", alter_sys=True)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    printed[name] = f"exit {code}\\n--- stdout\\n{out.getvalue()}--- stderr\\n{err.getvalue()}"
sys.__stdout__.write(json.dumps(printed))
"""


def run_cli(commands: list[tuple[str, list[str]]], home: Path, out: Path) -> dict[str, str]:
    """What each `deepdraft ARGV` printed (exit code, stdout, stderr) in workspace `home`, paths masked."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("DEEPDRAFT_", "OPENAI_"))}
    environ.update(
        DEEPDRAFT_HOME=str(home), DEEPDRAFT_MODELS=str(home / "no-models"), TZ="UTC", COLUMNS="200"
    )
    argvs = [(name, [arg.format(out=out) for arg in argv]) for name, argv in commands]
    result = subprocess.run(
        [sys.executable, "-c", _DRIVER, json.dumps(argvs)],
        capture_output=True,
        text=True,
        timeout=120,
        env=environ,
        stdin=subprocess.DEVNULL,
        check=True,
    )
    printed: dict[str, str] = json.loads(result.stdout)
    return {
        name: text.replace(str(out), "<OUT>").replace(str(home), "<HOME>") for name, text in printed.items()
    }


def search_hits() -> str:
    """The config fixture as loaded, and what the KB fixture returns for `SEARCHES` under it."""
    from deepdraft.retrieval.kb import names as kbs

    settings = load_settings(CONFIG)
    retrieval = settings.retrieval
    hits: dict[str, Any] = {}
    with kbs.open_kb(
        KB_NAME,
        only=retrieval.only,
        exclude=retrieval.exclude,
        mode=retrieval.mode,
        embedding=settings.embedding,
    ) as kb:
        fingerprint = kb.fingerprint()
        for query in SEARCHES:
            hits[query] = [
                {
                    "text": p.text,
                    "score": round(p.score, 6),
                    "source": {
                        "doc_id": p.source.doc_id,
                        "title": p.source.title,
                        "location": p.source.location,
                        "page": p.source.page,
                        "start": p.source.start,
                        "end": p.source.end,
                        "headings": list(p.source.headings),
                    },
                }
                for p in kb.search(query, 5)
            ]
    return dump({"settings": settings.public_dict(), "fingerprint": fingerprint, "hits": hits})
