"""Commands on a finished run's report (deepen, rewrite, recheck), driven in-process on a scripted model.

The CLI, kill -9 and resume are in tests/cli/test_cli_sections.py; here each command's effect on the
run: what changes, what stays byte for byte, the journal, the budgets and the errors.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
from pathlib import Path

import pytest

from deepdraft.config import load_settings
from deepdraft.core.outline import WRITTEN_FROM_EVIDENCE
from deepdraft.errors import UserError
from deepdraft.llm.scripted import FunctionLLM
from deepdraft.policy.sections import SectionCommand
from deepdraft.ports import ChatRequest
from deepdraft.run import runner
from deepdraft.run.runs import Runs
from deepdraft.settings import Settings
from tests.support.scenario import SOTU_LIKE, ScenarioModel, WordOverlapRetriever, recognise

QUESTION = "How did presidents argue about tariffs?"
WISH = "USER-WISH compare the farm states"
# A document added to the knowledge base after the run, which the new subsections' searches find
# first (their titles are its words).
FACETS = ("Facet notes", "Facet 1 facet 2 facet 3 of section-2: how tariffs were argued in the farm states.")


def settings(*, verify: bool = True, synthesis: bool = True) -> Settings:
    return Settings.model_validate({"output": {"verify": verify, "synthesis": synthesis}})


class Model:
    """The scenario model, counting what it is asked; a write for a prompt that shows the user's
    instructions says so in its text, so a rewrite can be told from the text it replaced."""

    def __init__(self, scenario: ScenarioModel | None = None) -> None:
        self.scenario = scenario or ScenarioModel(expansions=1)
        self.requests: list[ChatRequest] = []

    def __call__(self, request: ChatRequest) -> str:
        self.requests.append(request)
        reply = self.scenario(request)
        if WISH in request.messages[-1].content and recognise(request).kind == "write":
            # Numbered, so the parts written on one wish are not word-for-word repeats of each other.
            reply = reply.replace(
                " explains how ", f" explains, as the user asked ({len(self.requests)}), how "
            )
        return reply


def finished_run(retriever: WordOverlapRetriever, config: Settings | None = None) -> runner.Report:
    return runner.start(QUESTION, config or settings(), llm=FunctionLLM(Model()), retriever=retriever)


def sections_of(markdown: str) -> dict[str, str]:
    """Heading number → the section's own text (up to the next heading)."""
    body = markdown.split("## References")[0]
    parts = re.split(r"^#{2,4} (?:(\d+(?:\.\d+)*) )?.*$", body, flags=re.MULTILINE)
    return {parts[i]: parts[i + 1].strip() for i in range(1, len(parts) - 1, 2) if parts[i]}


def references_of(markdown: str) -> dict[str, str]:
    """Source title → its number in the References."""
    found = re.findall(r"^\[(\d+)\] (.+?) — ", markdown.split("## References")[1], flags=re.MULTILINE)
    return {title: number for number, title in found}


def journal_rows(run_id: str) -> list[tuple[int, str, str, int]]:
    with sqlite3.connect(Path(os.environ["DEEPDRAFT_HOME"]) / "journal.sqlite") as db:
        return list(
            db.execute(
                "SELECT step, action, target, directed FROM steps WHERE run_id = ? ORDER BY step", (run_id,)
            )
        )


def test_deepen_splits_the_section_writes_its_subsections_and_finishes_the_report_again() -> None:
    first = finished_run(WordOverlapRetriever(SOTU_LIKE))
    retriever = WordOverlapRetriever([*SOTU_LIKE, FACETS])
    before = journal_rows(first.run_id)
    model = Model()

    report = runner.run_command(
        first.run_id, SectionCommand("deepen", "2", into=3, instructions=WISH), settings(),
        llm=FunctionLLM(model), retriever=retriever,
    )  # fmt: skip

    assert report.run_id == first.run_id and report.command_outcome == ""
    assert [s.title for s in report.outline.sections[1].children] == [
        f"Facet {i} of section-2" for i in (1, 2, 3)
    ]
    # Every other section is as it was, under the same number.
    old, new = sections_of(first.markdown), sections_of(report.markdown)
    assert set(new) == set(old) | {"2.1", "2.2", "2.3"}
    assert all(new[number] == text for number, text in old.items())
    with Runs.open() as runs:
        writes = [step for step in runs.steps(first.run_id) if step.action == "write" and step.directed]
    assert [step.target for step in writes] == ["section-2.1", "section-2.2", "section-2.3"]
    assert all("as the user asked" in str((step.parsed or {})["text"]) for step in writes)
    # Sources keep their numbers; the new one takes the next free number.
    old_refs, new_refs = references_of(first.markdown), references_of(report.markdown)
    assert {title: new_refs[title] for title in old_refs} == old_refs
    assert new_refs.get("Facet notes") == str(len(old_refs) + 1)

    # The same run: its journal goes on, and every step of the command is flagged as directed.
    rows = journal_rows(first.run_id)
    assert rows[: len(before)] == before and all(directed == 0 for *_, directed in before)
    added = rows[len(before) :]
    assert [row[0] for row in added] == list(range(len(before) + 1, len(rows) + 1))
    assert all(directed == 1 for *_, directed in added)
    actions = [(action, target) for _, action, target, _ in added]
    assert actions[:2] == [("deepen", "section-2"), ("extend-plan", "section-2")]
    assert [a for a in actions if a[0] in ("search", "write")] == [
        (kind, f"section-2.{i}") for i in (1, 2, 3) for kind in ("search", "write")
    ]
    assert ("verify", "report") in actions and ("synthesis", "report") in actions

    # The split prompt names the node, the count and the user's words; so do the new parts' prompts.
    split = next(r for r in model.requests if recognise(r).kind == "extend-plan")
    assert recognise(split).target == "section-2" and WISH in split.messages[-1].content
    assert "exactly 3" in split.messages[-1].content
    asked = [r for r in model.requests if recognise(r).kind in ("search", "write")]
    assert asked and all(WISH in r.messages[-1].content for r in asked)
    # Only the new subsections were verified again; the others keep their earlier verdicts.
    with Runs.open() as runs:
        state = runs.state(first.run_id)
        info = runs.get(first.run_id)
    assert state is not None and state.verification is not None and info.status == "finished"
    judged = {check.position for check in state.verification.sentences}
    assert {"section-2.1", "section-2.2", "section-2.3"} <= judged
    assert (Path(os.environ["DEEPDRAFT_HOME"]) / "runs" / first.run_id / "report.md").read_text(
        encoding="utf-8"
    ) == report.markdown


def test_rewrite_searches_again_and_writes_only_that_section() -> None:
    retriever = WordOverlapRetriever(SOTU_LIKE)
    first = finished_run(retriever, settings(verify=False, synthesis=False))
    model = Model()
    report = runner.run_command(
        first.run_id, SectionCommand("rewrite", "section-3", instructions=WISH), settings(),
        llm=FunctionLLM(model), retriever=retriever,
    )  # fmt: skip
    old, new = sections_of(first.markdown), sections_of(report.markdown)
    assert new["3"] != old["3"] and "as the user asked" in new["3"]
    assert {n: t for n, t in new.items() if n != "3"} == {n: t for n, t in old.items() if n != "3"}
    assert [(recognise(r).kind, recognise(r).target) for r in model.requests] == [
        ("search", "section-3"),
        ("write", "section-3"),
    ]  # the run's settings hold: no verification, no synthesis


def test_a_rewrite_that_gets_no_new_text_keeps_the_earlier_one() -> None:
    retriever = WordOverlapRetriever(SOTU_LIKE)
    first = finished_run(retriever, settings(verify=False, synthesis=False))

    def refuse_writes(request: ChatRequest) -> str:
        if recognise(request).kind == "write":
            return "<thought>no</thought><action>Too short.</action>"
        return ScenarioModel(expansions=1)(request)

    report = runner.run_command(
        first.run_id, SectionCommand("rewrite", "1"), settings(), llm=FunctionLLM(refuse_writes),
        retriever=retriever,
    )  # fmt: skip
    assert sections_of(report.markdown) == sections_of(first.markdown)
    assert "its earlier text stays" in report.command_outcome
    assert WRITTEN_FROM_EVIDENCE not in report.markdown


def test_a_refused_split_changes_nothing_and_finishes_nothing_again() -> None:
    retriever = WordOverlapRetriever(SOTU_LIKE)
    first = finished_run(retriever)
    model = Model(ScenarioModel(expansions=0))

    def stop_instead(request: ChatRequest) -> str:
        if recognise(request).kind == "extend-plan":
            return '<thought>done</thought><action>{"name": "nop"}</action>'
        return model(request)

    report = runner.run_command(
        first.run_id,
        SectionCommand("deepen", "3"),
        settings(),
        llm=FunctionLLM(stop_instead),
        retriever=retriever,
    )
    assert "no valid split of section-3" in report.command_outcome
    assert sections_of(report.markdown) == sections_of(first.markdown)
    assert model.requests == []  # no verification or synthesis was asked again


def test_the_commands_step_budget_ends_it_with_notes_and_the_report_still_written() -> None:
    retriever = WordOverlapRetriever(SOTU_LIKE)
    first = finished_run(retriever, settings(verify=False, synthesis=False))
    report = runner.run_command(
        first.run_id, SectionCommand("deepen", "3", into=2, max_steps=3), settings(),
        llm=FunctionLLM(Model()), retriever=retriever,
    )  # fmt: skip
    assert report.command_outcome == "the command's step budget ran out"
    new = sections_of(report.markdown)
    assert (
        "as the user asked" not in new["3.1"] and "This part (section-3.1)" in new["3.1"]
    )  # split, search, write
    assert new["3.2"].startswith("*Not written — not written: the command's step budget ran out")
    assert report.unwritten == ["section-3.2"]


def test_recheck_verifies_one_section_again_with_repair() -> None:
    retriever = WordOverlapRetriever(SOTU_LIKE)
    first = finished_run(retriever, settings(verify=False, synthesis=False))
    model = Model()
    report = runner.run_command(
        first.run_id, SectionCommand("recheck", "2"), settings(verify=False), llm=FunctionLLM(model),
        retriever=retriever,
    )  # fmt: skip
    kinds = [recognise(r).kind for r in model.requests]
    assert kinds and set(kinds) <= {"verify", "repair"}  # checked although the run's settings say no
    with Runs.open() as runs:
        state = runs.state(first.run_id)
    assert state is not None and state.verification is not None
    assert {check.position for check in state.verification.sentences} == {"section-2"}
    old, new = sections_of(first.markdown), sections_of(report.markdown)
    assert {n: t for n, t in new.items() if n != "2"} == {n: t for n, t in old.items() if n != "2"}

    # The whole report: every section is checked, and the earlier results are replaced.
    model.requests.clear()
    runner.run_command(
        first.run_id, SectionCommand("recheck", None), settings(), llm=FunctionLLM(model), retriever=retriever
    )
    with Runs.open() as runs:
        state = runs.state(first.run_id)
    assert state is not None and state.verification is not None
    positions = [check.position for check in state.verification.sentences]
    assert {p for p in positions if "." not in p} == {"section-1", "section-2", "section-3"}
    assert len(positions) == len(set(positions))  # one result per sentence, none kept twice


@pytest.mark.parametrize(
    ("command", "message"),
    [
        (SectionCommand("deepen", "9"), "has no section 9 (its sections are 1–3"),
        (SectionCommand("rewrite", "2.7"), "has no section 2.7"),
        (SectionCommand("deepen", "two"), '"two" is not a section number'),
        (SectionCommand("deepen", "2", into=1), "--into must be between 2 and 7 (got 1)"),
        (SectionCommand("deepen", "2", into=8), "--into must be between 2 and 7 (got 8)"),
        (SectionCommand("deepen", "1"), "section 1 already has subsections (1.1–1.2); deepen one of them"),
        (SectionCommand("deepen", "1.1", max_steps=0), "--max-steps must be at least 1"),
        (SectionCommand("rewrite", None), "rewrite needs a section"),
        (
            SectionCommand("rewrite", "2", instructions="x" * 2001),
            "--instructions may be at most 2000 characters (got 2001)",
        ),
    ],
)
def test_commands_that_cannot_apply_are_refused_in_one_line(command: SectionCommand, message: str) -> None:
    retriever = WordOverlapRetriever(SOTU_LIKE)
    first = finished_run(retriever, settings(verify=False, synthesis=False))
    steps = len(journal_rows(first.run_id))
    with pytest.raises(UserError, match=re.escape(message)):
        runner.run_command(first.run_id, command, settings(), llm=FunctionLLM(Model()), retriever=retriever)
    assert len(journal_rows(first.run_id)) == steps  # nothing was journaled


def test_a_level_three_section_cannot_be_deepened() -> None:
    retriever = WordOverlapRetriever(SOTU_LIKE)
    first = finished_run(retriever, settings(verify=False, synthesis=False))
    llm = FunctionLLM(Model())
    runner.run_command(
        first.run_id, SectionCommand("deepen", "1.1"), settings(), llm=llm, retriever=retriever
    )
    with pytest.raises(UserError, match=r"section 1\.1\.1 is at level 3, the deepest an outline goes"):
        runner.run_command(
            first.run_id, SectionCommand("deepen", "1.1.1"), settings(), llm=llm, retriever=retriever
        )


def test_only_a_finished_run_takes_a_command() -> None:
    retriever = WordOverlapRetriever(SOTU_LIKE)
    run_id = "unfinished"
    with runner.open_journal() as journal:
        journal.create_run(run_id, QUESTION, "warp", {"settings": settings().public_dict(), "kb": None})
        journal.update_run(run_id, status="interrupted")
    with pytest.raises(
        UserError, match=r"run unfinished is not finished \(it is interrupted\); finish it first"
    ):
        runner.run_command(
            run_id, SectionCommand("recheck", None), settings(), llm=FunctionLLM(Model()), retriever=retriever
        )


def test_the_start_of_a_command_is_recorded_with_what_the_user_asked() -> None:
    retriever = WordOverlapRetriever(SOTU_LIKE)
    first = finished_run(retriever, settings(verify=False, synthesis=False))
    runner.run_command(
        first.run_id, SectionCommand("deepen", "section-3", into=2, instructions=" " + WISH + " "), settings(),
        llm=FunctionLLM(Model()), retriever=retriever,
    )  # fmt: skip
    with Runs.open() as runs:
        start = next(s for s in runs.steps(first.run_id) if s.action == "deepen")
    assert start.directed and start.prompt == "" and start.target == "section-3"
    assert start.parsed == {"command": "deepen", "position": "section-3", "into": 2, "instructions": WISH}
    assert json.dumps(start.parsed)  # plain JSON in the journal


def test_a_command_keeps_the_users_hand_edit_and_overwrites_only_its_own_section() -> None:
    from deepdraft.errors import ReportEdited
    from deepdraft.run import versions

    retriever = WordOverlapRetriever(SOTU_LIKE)
    first = finished_run(retriever, settings(verify=False, synthesis=False))
    report_md = Path(os.environ["DEEPDRAFT_HOME"]) / "runs" / first.run_id / "report.md"
    section_3 = sections_of(first.markdown)["3"]
    report_md.write_text(first.markdown.replace(section_3, "My own words about section three."))
    rewrite = SectionCommand("rewrite", "section-3", instructions=WISH)
    with pytest.raises(ReportEdited, match="--force"):
        runner.run_command(first.run_id, rewrite, settings(), llm=FunctionLLM(Model()), retriever=retriever)
    assert "My own words" in report_md.read_text()  # refused before anything was overwritten
    report = runner.run_command(
        first.run_id, rewrite, settings(), llm=FunctionLLM(Model()), retriever=retriever, force=True
    )
    assert "as the user asked" in sections_of(report.markdown)["3"]
    kinds = [version.kind for version in versions.list_versions(report_md.parent)]
    assert kinds[-2:] == ["hand-edit", "rewrite"]  # the edit is kept as a version of its own


def test_a_rewrite_written_passage_by_passage_shows_the_users_instructions_with_every_passage() -> None:
    retriever = WordOverlapRetriever(SOTU_LIKE)
    flags = {"research": {"depth": "quick"}, "output": {"verify": False, "synthesis": False}}
    first = finished_run(retriever, load_settings(flags=flags))
    model = Model()
    runner.run_command(
        first.run_id, SectionCommand("rewrite", "section-3", instructions=WISH), load_settings(flags=flags),
        llm=FunctionLLM(model), retriever=retriever,
    )  # fmt: skip
    passages = [r.messages[-1].content for r in model.requests if recognise(r).kind == "write-passage"]
    assert passages and all(WISH in prompt for prompt in passages)
