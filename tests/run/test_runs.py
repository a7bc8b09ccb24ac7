"""The read-side runs API over a real journal, written by real (scripted-model) runs."""

from __future__ import annotations

import fcntl
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from deepdraft.config import load_settings
from deepdraft.egress import EgressRecord
from deepdraft.errors import RunNotFound, UserError
from deepdraft.llm.scripted import FunctionLLM
from deepdraft.run import runner
from deepdraft.run.runs import RunEvent, Runs, get_run, run_exists, run_folder, run_state
from deepdraft.settings import Settings
from deepdraft.store.journal import Journal
from tests.support.scenario import ScenarioModel

QUESTION = "How did presidents argue about tariffs?"
QUIET = {"verify": False, "synthesis": False}


def finished_run(corpus: Path, run_id: str = "finished-1") -> runner.Report:
    settings = load_settings(flags={"output": QUIET, "research": {"max_steps": 40}})
    return runner.start(
        QUESTION, settings, kb=str(corpus), llm=FunctionLLM(ScenarioModel(expansions=1)), run_id=run_id
    )


def created_run(corpus: Path, run_id: str) -> str:
    """A run recorded but never driven (what the server queues)."""
    return runner.create(QUESTION, load_settings(flags={"output": QUIET}), kb=str(corpus), run_id=run_id)


@contextmanager
def driven(run_id: str) -> Iterator[None]:
    """Hold the run's lock the way a process that drives it does."""
    folder = run_folder(run_id)
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "lock").open("a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def test_a_finished_run_reads_back_with_typed_settings(corpus_dir: Path) -> None:
    report = finished_run(corpus_dir)
    with Runs.open() as runs:
        [info] = runs.all()
        assert runs.get(report.run_id) == info
    assert (info.id, info.question, info.status, info.recorded_status) == (
        report.run_id,
        QUESTION,
        "finished",
        "finished",
    )
    assert info.steps > 0 and info.created_at <= info.updated_at
    assert info.report_path == str(report.path) and info.error is None
    assert info.kb == str(corpus_dir) and info.kb_name == str(corpus_dir)
    assert isinstance(info.settings, Settings)
    assert info.settings.research.max_steps == info.max_steps == 40
    assert get_run(report.run_id[:8]) == info  # a unique prefix finds it too
    assert run_exists(report.run_id) and not run_exists("nope-1234")


def test_events_since_a_sequence_number_are_exactly_the_later_ones(corpus_dir: Path) -> None:
    report = finished_run(corpus_dir)
    with Runs.open() as runs:
        every = runs.events(report.run_id)
        assert [e.seq for e in every] == list(range(1, len(every) + 1))
        assert every[0].kind == "run_started" and every[-1].kind == "run_finished"
        assert all(isinstance(e, RunEvent) and e.payload["kind"] == e.kind for e in every)
        middle = len(every) // 2
        assert runs.events(report.run_id, after=middle) == every[middle:]
        assert runs.events(report.run_id, after=every[-1].seq) == []


def test_outline_state_and_steps_are_where_the_run_stands(corpus_dir: Path) -> None:
    report = finished_run(corpus_dir)
    with Runs.open() as runs:
        outline = runs.outline(report.run_id)
        state = runs.state(report.run_id)
        steps = runs.steps(report.run_id)
        first = runs.state_after(report.run_id, 1)
    assert outline is not None and outline.title == report.title
    assert state is not None and state.outline == outline and state.stop_reason == report.stop_reason
    assert [s.step for s in steps] == list(range(1, len(steps) + 1)) and steps[0].prompt
    assert first.question == QUESTION
    assert run_state(report.run_id) == state


def test_report_document_and_manifest_of_a_finished_run(corpus_dir: Path) -> None:
    report = finished_run(corpus_dir)
    with Runs.open() as runs:
        manifest = runs.manifest(report.run_id)
        document = runs.report_document(report.run_id)
        author_date = runs.report_document(report.run_id, style="author-date")
    written = json.loads((run_folder(report.run_id) / "manifest.json").read_text(encoding="utf-8"))
    assert manifest == written == report.manifest
    assert document.run_id == report.run_id and document.manifest == written
    assert document.markdown.strip() and report.title in document.markdown
    assert author_date.markdown != document.markdown

    # Without the manifest file (a run folder cleaned up), one is rebuilt from the journal.
    (run_folder(report.run_id) / "manifest.json").unlink()
    with Runs.open() as runs:
        rebuilt = runs.manifest(report.run_id)
    assert rebuilt["run_id"] == report.run_id and rebuilt["steps"] == written["steps"]


def test_egress_records_come_back_in_order(corpus_dir: Path, isolated_workspace: Path) -> None:
    report = finished_run(corpus_dir)
    with Runs.open() as runs:
        assert runs.egress(report.run_id) == []  # a local run sends nothing off the machine
    with Journal(isolated_workspace / "journal.sqlite") as journal:
        journal.record_egress(report.run_id, EgressRecord("web-search", "https://s.example", "tariffs", 1.0))
        journal.record_egress(report.run_id, EgressRecord("web-fetch", "https://p.example", "/a", 2.0))
    with Runs.open() as runs:
        records = runs.egress(report.run_id[:10])
    assert [(r.seq, r.kind, r.detail) for r in records] == [
        (1, "web-search", "tariffs"),
        (2, "web-fetch", "/a"),
    ]


def test_a_running_run_that_nobody_drives_is_interrupted(corpus_dir: Path, isolated_workspace: Path) -> None:
    run_id = created_run(corpus_dir, "dead-run-1")
    with Journal(isolated_workspace / "journal.sqlite") as journal:
        journal.update_run(run_id, status="running")
    info = get_run(run_id)
    assert (info.status, info.recorded_status) == ("interrupted", "running")
    with driven(run_id):
        assert get_run(run_id).status == "running"
    assert get_run(run_id).status == "interrupted"


def test_an_unfinished_run_has_no_report_document_and_says_how_to_continue(
    corpus_dir: Path, isolated_workspace: Path
) -> None:
    run_id = created_run(corpus_dir, "unfinished-1")
    with Journal(isolated_workspace / "journal.sqlite") as journal:
        journal.update_run(run_id, status="running")
    with Runs.open() as runs:
        assert runs.state(run_id) is None and runs.outline(run_id) is None
        with pytest.raises(
            UserError, match=r"not finished \(it is interrupted\).*deepdraft resume unfinished-1"
        ):
            runs.report_document(run_id)


def test_unknown_and_ambiguous_run_ids_are_clear_errors(corpus_dir: Path) -> None:
    created_run(corpus_dir, "abcd-first")
    created_run(corpus_dir, "abcd-second")
    with Runs.open() as runs:
        with pytest.raises(RunNotFound, match="no run with id zzzz-1"):
            runs.get("zzzz-1")
        with pytest.raises(RunNotFound, match="prefix abcd is ambiguous: it matches abcd-"):
            runs.get("abcd")
        with pytest.raises(RunNotFound, match="ambiguous"):
            runs.outline("abcd")
        assert runs.get("abcd-s").id == "abcd-second"


def test_status_changes_an_interface_records(corpus_dir: Path) -> None:
    run_id = created_run(corpus_dir, "queued-1")
    with Runs.open() as runs:
        runs.record_cancelled(run_id)
        assert runs.get(run_id).status == "cancelled"
        assert [(e.kind, e.payload) for e in runs.events(run_id)] == [
            ("run_cancelled", {"kind": "run_cancelled", "step": 0})
        ]
        runs.mark(run_id, "failed", error="the KB was deleted")
        info = runs.get(run_id)
    assert (info.status, info.error) == ("failed", "the KB was deleted")
