"""Report versions: every finishing keeps its report, hand edits are never lost, the guard refuses.

Runs are real in-process runs of a scripted model over an in-memory retriever; the versions are
read back from the run folder as a later process would.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest

from deepdraft.config import load_settings
from deepdraft.errors import ReportEdited, StoreError, UserError
from deepdraft.events import ActionFinished, Event
from deepdraft.llm.scripted import FunctionLLM
from deepdraft.run import runner, versions
from deepdraft.run.runs import restore_report, run_folder
from deepdraft.settings import Settings
from tests.support.scenario import SOTU_LIKE, ScenarioModel, WordOverlapRetriever

QUESTION = "How did presidents argue about tariffs?"


def settings() -> Settings:
    return load_settings(flags={"output": {"verify": False, "synthesis": False}})


def finished(run_id: str = "versions-1") -> Path:
    runner.start(
        QUESTION,
        settings(),
        llm=FunctionLLM(ScenarioModel(expansions=1)),
        retriever=WordOverlapRetriever(SOTU_LIKE),
        run_id=run_id,
    )
    return run_folder(run_id)


def edit(folder: Path, old: str, new: str) -> None:
    report = folder / "report.md"
    text = report.read_text(encoding="utf-8")
    assert old in text
    report.write_text(text.replace(old, new), encoding="utf-8")


def test_a_finished_run_has_its_report_as_version_1(isolated_workspace: Path) -> None:
    folder = finished()
    [version] = versions.list_versions(folder)
    state = runner.load_run("versions-1")[1]
    assert state is not None
    assert (version.number, version.kind, version.step) == (1, "research", state.step)
    assert "research finished" in version.note
    assert (folder / "report.v1.md").read_bytes() == (folder / "report.md").read_bytes()
    assert json.loads((folder / "versions.json").read_text())["versions"][0]["sha256"] == version.sha256


def test_a_run_finished_by_resume_records_a_resumed_version(isolated_workspace: Path) -> None:
    cancel = threading.Event()

    def stop_after_the_first_action(event: Event) -> None:
        if isinstance(event, ActionFinished):
            cancel.set()

    llm, retriever = FunctionLLM(ScenarioModel(expansions=1)), WordOverlapRetriever(SOTU_LIKE)
    with pytest.raises(Exception, match="cancelled"):
        runner.start(QUESTION, settings(), llm=llm, retriever=retriever, run_id="later-1",
                     cancel=cancel, on_event=stop_after_the_first_action)  # fmt: skip
    assert versions.list_versions(run_folder("later-1")) == []
    runner.resume("later-1", settings(), llm=llm, retriever=retriever)
    [version] = versions.list_versions(run_folder("later-1"))
    assert version.kind == "resumed" and "resumed session" in version.note


def test_a_finishing_repeated_after_a_kill_updates_its_version_instead_of_adding_one(
    isolated_workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed after the version was recorded but before the journal said "finished": the resume
    writes the report again from the same checkpoint, and the list keeps one version of it."""
    record = versions.record_version

    def killed_right_after(*args: Any, **kwargs: Any) -> versions.Version:
        record(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(versions, "record_version", killed_right_after)
    llm, retriever = FunctionLLM(ScenarioModel(expansions=1)), WordOverlapRetriever(SOTU_LIKE)
    with pytest.raises(KeyboardInterrupt):
        runner.start(QUESTION, settings(), llm=llm, retriever=retriever, run_id="killed-1")
    assert runner.load_run("killed-1")[0].status == "interrupted"
    monkeypatch.setattr(versions, "record_version", record)
    runner.resume("killed-1", settings(), llm=llm, retriever=retriever)
    folder = run_folder("killed-1")
    [version] = versions.list_versions(folder)
    assert version.kind == "research"  # what the first attempt was; its facts are the resume's
    assert versions.read_version(folder, version) == (folder / "report.md").read_text(encoding="utf-8")


def test_the_guard_refuses_an_edited_section_and_keeps_the_edit_when_forced(isolated_workspace: Path) -> None:
    folder = finished()
    edit(folder, "## 2 Part middle\n\n", "## 2 Part middle\n\nMy own first sentence. ")
    assert versions.ensure_unedited(folder, ["3"]) is not None  # another section: the edit is kept, go on
    [_, kept] = versions.list_versions(folder)
    assert (kept.kind, kept.note, kept.step) == ("hand-edit", "edited by hand: 2 Part middle", None)
    assert "My own first sentence." in versions.read_version(folder, kept)
    assert versions.ensure_unedited(folder, None) is None  # report.md is a version now

    edit(folder, "## 3 Part late\n\n", "## 3 Part late\n\nMine too. ")
    for sections in (["3"], ["section-3"], None):
        with pytest.raises(ReportEdited) as refused:
            versions.ensure_unedited(folder, sections)
        message = str(refused.value)
        assert "\n" not in message and "3 Part late" in message and "--force" in message
        assert "since version 2" in message
    assert len(versions.list_versions(folder)) == 2  # refusing recorded nothing
    forced = versions.ensure_unedited(folder, ["3"], force=True)
    assert forced is not None and forced.number == 3 and forced.kind == "hand-edit"


def test_when_headings_no_longer_match_every_command_is_refused_without_force(
    isolated_workspace: Path,
) -> None:
    folder = finished()
    edit(folder, "## 3 Part late", "## 3 The late years")
    for sections in (["1"], ["Conclusion"], None):
        with pytest.raises(ReportEdited, match="headings no longer match version 1; add --force"):
            versions.ensure_unedited(folder, sections)
    kept = versions.ensure_unedited(folder, ["1"], force=True)
    assert kept is not None and kept.note == "its headings no longer match version 1"


def test_resume_goes_through_the_guard(isolated_workspace: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run killed after its report was written but before it was marked finished; the user then
    edited report.md. Resuming would overwrite the edit: refused, and with force the edit is kept."""
    record = versions.record_version

    def killed_right_after(*args: Any, **kwargs: Any) -> versions.Version:
        record(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(versions, "record_version", killed_right_after)
    llm, retriever = FunctionLLM(ScenarioModel(expansions=1)), WordOverlapRetriever(SOTU_LIKE)
    with pytest.raises(KeyboardInterrupt):
        runner.start(QUESTION, settings(), llm=llm, retriever=retriever, run_id="edited-1")
    monkeypatch.setattr(versions, "record_version", record)
    folder = run_folder("edited-1")
    edit(folder, "## 1 Part early\n\n", "## 1 Part early\n\nWritten by me. ")
    with pytest.raises(ReportEdited, match="1 Part early"):
        runner.resume("edited-1", settings(), llm=llm, retriever=retriever)
    stopped = runner.load_run("edited-1")[0]  # why, for a client that queued the resume (the server)
    assert stopped.status == "interrupted" and "1 Part early" in (stopped.error or "")
    assert "Written by me." in (folder / "report.md").read_text(encoding="utf-8")
    runner.resume("edited-1", settings(), llm=llm, retriever=retriever, force=True)
    kinds = [(v.number, v.kind) for v in versions.list_versions(folder)]
    assert kinds == [(1, "research"), (2, "hand-edit"), (3, "resumed")]
    assert "Written by me." in versions.read_version(folder, versions.get_version(folder, 2))
    assert "Written by me." not in (folder / "report.md").read_text(encoding="utf-8")


def test_restore_makes_a_new_version_and_deletes_none(isolated_workspace: Path) -> None:
    folder = finished()
    edit(folder, "## 2 Part middle\n\n", "## 2 Part middle\n\nEdited. ")
    versions.ensure_unedited(folder, ["1"])  # kept as version 2
    restored = versions.restore_version(folder, 1)
    assert restored.number == 3 and (restored.kind, restored.note) == ("restore", "version 1 restored")
    assert (folder / "report.md").read_bytes() == (folder / "report.v1.md").read_bytes()
    assert [v.number for v in versions.list_versions(folder)] == [1, 2, 3]
    assert versions.restore_version(folder, 3).number == 3  # already current: nothing new


def test_a_report_from_before_versions_becomes_version_1_when_replaced(isolated_workspace: Path) -> None:
    folder = finished()
    (folder / "versions.json").unlink()
    (folder / "report.v1.md").unlink()
    edit(folder, "## 2 Part middle\n\n", "## 2 Part middle\n\nOld edit. ")
    assert versions.ensure_unedited(folder, None) is None  # nothing to compare with
    versions.record_version(folder, "# New\n", kind="export")
    [earlier, new] = versions.list_versions(folder)
    assert (earlier.kind, new.kind) == ("earlier", "export")
    assert "Old edit." in versions.read_version(folder, earlier)


def test_an_orphan_version_file_from_a_kill_is_replaced_and_a_damaged_index_is_never_overwritten(
    isolated_workspace: Path,
) -> None:
    folder = finished()
    (folder / "report.v2.md").write_text("# half-recorded\n", encoding="utf-8")  # killed before the index
    second = versions.record_version(folder, "# Second\n", kind="export")
    assert second.number == 2 and versions.read_version(folder, second) == "# Second\n"

    (folder / "versions.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(StoreError, match=r"versions\.json is damaged"):
        versions.record_version(folder, "# Third\n", kind="export")
    assert (folder / "versions.json").read_text(encoding="utf-8") == "{not json"
    assert not (folder / "report.v3.md").exists()


def test_a_lost_report_md_comes_back_as_the_current_version(isolated_workspace: Path) -> None:
    folder = finished()
    edit(folder, "## 2 Part middle\n\n", "## 2 Part middle\n\nKept. ")
    versions.ensure_unedited(folder, None, force=True)
    (folder / "report.md").unlink()
    restore_report("versions-1")
    assert "Kept." in (folder / "report.md").read_text(encoding="utf-8")


@pytest.mark.parametrize(
    ("typed", "message"),
    [("0", "there is no version 0"), ("x", "'x' is not a version number"), ("-1", "not a version number")],
)
def test_version_numbers_a_user_types_are_checked(typed: str, message: str) -> None:
    with pytest.raises(UserError, match=message):
        versions.version_number(typed)
    assert versions.version_number("v2") == 2


def test_an_unknown_version_names_the_versions_there_are(isolated_workspace: Path) -> None:
    folder = finished()
    with pytest.raises(
        UserError, match=r"run versions-1 has no version 4: its versions are 1 \(deepdraft show"
    ):
        versions.get_version(folder, 4)


def test_a_version_file_changed_after_it_was_recorded_is_named_and_the_others_still_listed(
    isolated_workspace: Path,
) -> None:
    from deepdraft.run import history

    folder = finished()
    versions.restore_version(folder, 1)  # the same report: nothing new
    edit(folder, "## 2 Part middle\n\n", "## 2 Part middle\n\nMine. ")
    versions.ensure_unedited(folder, None, force=True)  # version 2
    (folder / "report.v1.md").write_text("tampered\n", encoding="utf-8")
    with pytest.raises(StoreError, match=r"report\.v1\.md was changed after it was recorded"):
        versions.restore_version(folder, 1)
    rows = history.listing("versions-1").entries
    assert (
        rows[0].changed.startswith("cannot be read: ")
        and rows[1].changed == "(no readable version before it)"
    )
