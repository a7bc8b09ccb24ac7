"""Follow-up questions on a finished run (`deepdraft ask`), driven in-process on a scripted model with
a real knowledge base on disk.

The CLI, kill -9 and asking again are in tests/cli/test_cli_asks.py; here what an answer cites and
in which numbering, what is stored, what stays as it was, and `--into-report`.
"""

from __future__ import annotations

import os
import re
import sqlite3
from pathlib import Path

import pytest

from deepdraft.errors import UserError
from deepdraft.llm.scripted import FunctionLLM
from deepdraft.policy.asks import MAX_QUESTION_CHARS
from deepdraft.policy.sections import SectionCommand
from deepdraft.ports import ChatRequest
from deepdraft.run import runner
from deepdraft.run.answers import NEW_SOURCES
from deepdraft.run.runs import Runs
from deepdraft.settings import Settings
from deepdraft.store.journal import AskRecord, Journal
from tests.support.scenario import ScenarioModel, evidence_keys, recognise

QUESTION = "How did presidents argue about tariffs?"
FOLLOW_UP = "What did the silver coinage quarrel mean for farmers?"
# In the knowledge base from the start, but sharing no word with the run's searches: only the
# follow-up question finds it, so its source is new to the report.
SILVER = (
    "silver-coinage.md",
    "# Coinage quarrel\n\nThe free coinage of silver split farmers from bankers in 1896: "
    "cheap money for debtors against sound money for creditors.\n",
)


def settings(*, verify: bool = False, synthesis: bool = False, attach: int | None = 1) -> Settings:
    return Settings.model_validate(
        {"output": {"verify": verify, "synthesis": synthesis}, "research": {"attach_citations_after": attach}}
    )


class Model:
    """The scenario model, keeping what it is asked."""

    def __init__(self) -> None:
        self.scenario = ScenarioModel(expansions=1)
        self.requests: list[ChatRequest] = []

    def __call__(self, request: ChatRequest) -> str:
        self.requests.append(request)
        return self.scenario(request)


@pytest.fixture
def kb(corpus_dir: Path) -> Path:
    (corpus_dir / SILVER[0]).write_text(SILVER[1], encoding="utf-8")
    return corpus_dir


def finished_run(kb: Path, config: Settings | None = None) -> runner.Report:
    return runner.start(QUESTION, config or settings(), kb=str(kb), llm=FunctionLLM(Model()))


def references_of(markdown: str) -> dict[str, int]:
    """Source title → its number, from a report's References or an answer's new sources."""
    return {
        title: int(number)
        for number, title in re.findall(r"^\[(\d+)\] (.+?) — ", markdown, flags=re.MULTILINE)
    }


def marks(markdown: str) -> set[int]:
    """Every source number the text's citation marks name."""
    return {int(n) for mark in re.findall(r"\[([\d, ]+)\]", markdown) for n in mark.split(", ")}


def report_file(run_id: str) -> Path:
    return Path(os.environ["DEEPDRAFT_HOME"]) / "runs" / run_id / "report.md"


def journal_rows(run_id: str) -> list[tuple[int, str, int]]:
    with sqlite3.connect(Path(os.environ["DEEPDRAFT_HOME"]) / "journal.sqlite") as db:
        return list(
            db.execute("SELECT step, action, directed FROM steps WHERE run_id = ? ORDER BY step", (run_id,))
        )


def test_an_answer_cites_in_the_reports_numbering_and_leaves_the_report_as_it_was(kb: Path) -> None:
    first = finished_run(kb)
    old_refs = references_of(first.markdown.split("## References")[1])
    assert "Coinage quarrel" not in old_refs  # the run never found it
    report_before = report_file(first.run_id).read_bytes()
    files_before = sorted(p.name for p in report_file(first.run_id).parent.iterdir())
    rows_before = journal_rows(first.run_id)
    model = Model()

    answer = runner.ask(first.run_id, f"  {FOLLOW_UP} ", settings(), llm=FunctionLLM(model))

    # One request: the answer, showing the run's passages and the fresh search's.
    assert [recognise(r).kind for r in model.requests] == ["ask"]
    prompt = model.requests[0].messages[-1].content
    assert FOLLOW_UP in prompt and "free coinage of silver" in prompt
    shown = evidence_keys(prompt)
    with Runs.open() as runs:
        state = runs.state(first.run_id)
    assert state is not None
    shown_sources = {state.registry[key].source.title for key in shown}
    assert shown_sources & set(old_refs) and "Coinage quarrel" in shown_sources

    # The report's sources keep their numbers; the new one takes the next free number and is
    # listed under the answer with its entry.
    body, _, listed = answer.markdown.partition(f"{NEW_SOURCES}:")
    new_refs = references_of(listed)
    assert list(new_refs) == ["Coinage quarrel"]
    assert new_refs["Coinage quarrel"] == max(old_refs.values()) + 1
    assert answer.sources == [line for line in listed.strip().splitlines() if line]
    cited_old = {old_refs[title] for title in shown_sources if title in old_refs}
    assert marks(body) == cited_old | {new_refs["Coinage quarrel"]}
    assert "\\cite" not in answer.markdown and "textid" not in answer.markdown

    # Stored with the run and listed; the report and its versions are untouched.
    with Runs.open() as runs:
        stored = runs.asks(first.run_id)
        info = runs.get(first.run_id)
    assert [(a.question, a.markdown, a.section) for a in stored] == [(FOLLOW_UP, answer.markdown, None)]
    assert stored[0].asked_at <= stored[0].answered_at
    assert report_file(first.run_id).read_bytes() == report_before
    assert sorted(p.name for p in report_file(first.run_id).parent.iterdir()) == files_before
    assert info.status == "finished"

    # The same journal, numbered on; the ask's steps are directed (left out of training data).
    rows = journal_rows(first.run_id)
    assert rows[: len(rows_before)] == rows_before
    added = rows[len(rows_before) :]
    assert [(action, directed) for _, action, directed in added] == [("ask", 1), ("ask", 1)]
    assert [step for step, *_ in added] == [len(rows_before) + 1, len(rows_before) + 2]


def test_a_second_question_is_stored_after_the_first_and_the_same_question_again_is_asked_again(
    kb: Path,
) -> None:
    first = finished_run(kb)
    runner.ask(first.run_id, FOLLOW_UP, settings(), llm=FunctionLLM(Model()))
    runner.ask(
        first.run_id, "Which addresses spoke of the public debt?", settings(), llm=FunctionLLM(Model())
    )
    model = Model()
    runner.ask(first.run_id, FOLLOW_UP, settings(), llm=FunctionLLM(model))
    assert [recognise(r).kind for r in model.requests] == ["ask"]  # answered again, not replayed
    with Runs.open() as runs:
        asked = [a.question for a in runs.asks(first.run_id)]
    assert asked == [FOLLOW_UP, "Which addresses spoke of the public debt?", FOLLOW_UP]


def test_a_refused_reply_is_asked_again_with_the_reason(kb: Path) -> None:
    first = finished_run(kb)
    model = Model()

    def uncited_first(request: ChatRequest) -> str:
        if recognise(request).kind == "ask" and not model.requests:
            model.requests.append(request)
            return (
                "<thought>x</thought><action>Farmers in debt wanted cheap money, and silver promised "
                "it; bankers and creditors held to gold because it kept the value of what they were "
                "owed. The quarrel therefore ran along the line between those who borrowed and those "
                "who lent.</action>"
            )
        return model(request)

    answer = runner.ask(first.run_id, FOLLOW_UP, settings(attach=None), llm=FunctionLLM(uncited_first))
    assert len(model.requests) == 2 and answer.markdown
    assert "cite the passages the answer rests on" in model.requests[1].messages[-1].content
    assert [action for _, action, _ in journal_rows(first.run_id)][-3:] == ["ask", "ask", "ask"]


def test_into_report_adds_the_answer_as_a_new_section_in_a_new_report_version(kb: Path) -> None:
    first = finished_run(kb, settings(verify=True))
    old_refs = references_of(first.markdown.split("## References")[1])
    rows_before = journal_rows(first.run_id)
    with Runs.open() as runs:
        before = runs.state(first.run_id)
    assert before is not None and before.verification is not None
    earlier_checks = before.verification.sentences
    model = Model()

    report = runner.run_command(
        first.run_id, SectionCommand("ask", None, question=FOLLOW_UP), settings(verify=True),
        llm=FunctionLLM(model),
    )  # fmt: skip

    sections = [s.title for s in report.outline.sections]
    assert sections[:-1] == [s.title for s in first.outline.sections] and sections[-1] == FOLLOW_UP
    number = len(sections)
    assert re.search(rf"^## {number} {re.escape(FOLLOW_UP)}$", report.markdown, flags=re.MULTILINE)
    # Every earlier section is as it was; the earlier sources keep their numbers, the new one
    # takes the next free number in the References.
    assert (
        report.markdown.split(f"## {number} ")[0]
        == first.markdown.split("## References")[0].rstrip() + "\n\n"
    )
    new_refs = references_of(report.markdown.split("## References")[1])
    assert {title: new_refs[title] for title in old_refs} == old_refs
    assert new_refs["Coinage quarrel"] == max(old_refs.values()) + 1
    # Only the answer was asked for and verified (no synthesis again), and only its sentences.
    kinds = [recognise(r).kind for r in model.requests]
    assert kinds[:2] == ["ask", "verify"] and set(kinds[2:]) <= {"verify", "repair"}
    with Runs.open() as runs:
        state = runs.state(first.run_id)
    assert state is not None and state.verification is not None
    checked = state.verification.sentences
    assert [c for c in checked if c.position != f"section-{number}"] == earlier_checks
    assert any(c.position == f"section-{number}" for c in checked)
    with Runs.open() as runs:
        stored = runs.asks(first.run_id)
        info = runs.get(first.run_id)
    assert info.status == "finished"
    assert [(a.question, a.section) for a in stored] == [(FOLLOW_UP, f"section-{number}")]
    assert "Coinage quarrel" in stored[0].markdown
    folder = report_file(first.run_id).parent
    assert (folder / "report.v2.md").read_text(encoding="utf-8") == report.markdown
    # The command's start, the choice of evidence, the answer, then its verification: all directed.
    added = journal_rows(first.run_id)[len(rows_before) :]
    assert [(action, directed) for _, action, directed in added][:3] == [("ask", 1)] * 3
    assert {action for _, action, _ in added[3:]} <= {"verify", "repair"} and all(d for *_, d in added)


@pytest.mark.parametrize(
    ("question", "message"),
    [
        ("   ", "the question is empty"),
        ("x" * (MAX_QUESTION_CHARS + 1), f"the question is too long ({MAX_QUESTION_CHARS + 1:,} characters"),
    ],
)
def test_a_bad_question_is_refused_before_anything_is_asked(kb: Path, question: str, message: str) -> None:
    first = finished_run(kb)
    rows = journal_rows(first.run_id)
    model = Model()
    with pytest.raises(UserError, match=re.escape(message)):
        runner.ask(first.run_id, question, settings(), llm=FunctionLLM(model))
    with pytest.raises(UserError, match=re.escape(message)):
        runner.run_command(
            first.run_id, SectionCommand("ask", None, question=question), settings(), llm=FunctionLLM(model)
        )
    assert model.requests == [] and journal_rows(first.run_id) == rows


def test_an_unknown_or_unfinished_run_is_refused(kb: Path) -> None:
    with pytest.raises(UserError, match="no run with id nope"):
        runner.ask("nope", FOLLOW_UP, settings(), llm=FunctionLLM(Model()))
    run_id = runner.create(QUESTION, settings(), kb=str(kb))
    with pytest.raises(UserError, match=f"run {run_id} is not finished"):
        runner.ask(run_id, FOLLOW_UP, settings(), llm=FunctionLLM(Model()))


def test_a_question_nothing_can_be_found_for_is_stored_with_why_and_asks_nothing(kb: Path) -> None:
    first = finished_run(kb)
    model = Model()
    answer = runner.ask(first.run_id, "Zyxwv qwrtp?", settings(), llm=FunctionLLM(model))
    assert model.requests == [] and answer.markdown == ""
    assert answer.note == "neither the run's evidence nor its knowledge base has passages on it"
    with Runs.open() as runs:
        assert [(a.question, a.note) for a in runs.asks(first.run_id)] == [("Zyxwv qwrtp?", answer.note)]


class Killed(BaseException):
    """Stands for the process dying where it is raised (nothing after it runs)."""


def test_an_answer_journaled_but_not_stored_is_stored_when_asked_again_not_asked_for_again(
    kb: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = finished_run(kb)
    original = Journal.record_ask

    def die(self: Journal, record: AskRecord) -> bool:
        raise Killed

    monkeypatch.setattr(Journal, "record_ask", die)
    with pytest.raises(Killed):
        runner.ask(first.run_id, FOLLOW_UP, settings(), llm=FunctionLLM(Model()))
    monkeypatch.setattr(Journal, "record_ask", original)
    rows = journal_rows(first.run_id)

    model = Model()
    answer = runner.ask(first.run_id, FOLLOW_UP, settings(), llm=FunctionLLM(model))
    assert model.requests == [] and journal_rows(first.run_id) == rows
    with Runs.open() as runs:
        assert [a.markdown for a in runs.asks(first.run_id)] == [answer.markdown]
    assert "Coinage quarrel" in answer.markdown


def test_an_ask_stopped_mid_call_repeats_that_request_and_another_question_starts_afresh(kb: Path) -> None:
    first = finished_run(kb)
    sent: list[ChatRequest] = []

    def dies_while_answering(request: ChatRequest) -> str:
        sent.append(request)
        raise Killed

    with pytest.raises(Killed):
        runner.ask(first.run_id, FOLLOW_UP, settings(), llm=FunctionLLM(dies_while_answering))
    model = Model()
    runner.ask(first.run_id, FOLLOW_UP, settings(), llm=FunctionLLM(model))
    assert model.requests == sent  # the very request in flight, nothing else
    assert [action for _, action, _ in journal_rows(first.run_id)][-2:] == ["ask", "ask"]

    with pytest.raises(Killed):
        runner.ask(
            first.run_id, "Which addresses spoke of debt?", settings(), llm=FunctionLLM(dies_while_answering)
        )
    model = Model()
    runner.ask(first.run_id, "Who paid the duties?", settings(), llm=FunctionLLM(model))
    assert len(model.requests) == 1 and "Who paid the duties?" in model.requests[0].messages[-1].content
    with Runs.open() as runs:
        assert [a.question for a in runs.asks(first.run_id)] == [FOLLOW_UP, "Who paid the duties?"]


PROMPT_LIMIT = 500
"""Tokens for an ask's prompt that hold one of the three passages found for FOLLOW_UP."""


def test_a_key_the_fitted_prompt_left_out_may_not_be_cited(kb: Path) -> None:
    # The run's own window holds the prompt with a few passages only: fitting leaves the
    # lowest-ranked ones out (an ask fits its prompt as the run was set up).
    small = settings().model_copy(
        update={"llm": settings().llm.model_copy(update={"max_tokens": 32768 - PROMPT_LIMIT})}
    )
    first = finished_run(kb, small)
    replies: list[str] = []

    def cites_every_key_it_was_given(request: ChatRequest) -> str:
        prompt = request.messages[-1].content
        with Runs.open() as runs:
            state = runs.state(first.run_id)
        assert state is not None and state.ask is not None
        hidden = [key for key in state.ask.keys if key not in evidence_keys(prompt)]
        assert hidden, "the window should have left a passage out"
        cite = ", ".join(state.ask.keys if not replies else evidence_keys(prompt))
        replies.append(cite)
        return (
            "<thought>all</thought><action>Farmers in debt wanted cheap money and silver promised it, "
            f"while creditors held to gold \\cite{{{cite}}}. The quarrel ran between those who "
            f"borrowed and those who lent, and the record says little more \\cite{{{cite}}}.</action>"
        )

    answer = runner.ask(first.run_id, FOLLOW_UP, settings(), llm=FunctionLLM(cites_every_key_it_was_given))
    assert len(replies) == 2 and answer.markdown
    with Runs.open() as runs:
        refused = [step for step in runs.steps(first.run_id) if step.action == "ask" and not step.valid]
    assert len(refused) == 1 and (refused[0].reason or "").startswith("cite only the keys listed; not ")
