"""Plan review and cancellation in the runner: the edited outline is what gets written, it is journaled
so a resumed run does not ask again, and a cancelled run stops between actions and resumes."""

from __future__ import annotations

import threading

import pytest

from deepdraft.config import load_settings
from deepdraft.core.outline import Outline
from deepdraft.errors import RunCancelled, UserError
from deepdraft.events import Event, NodeWritten
from deepdraft.llm.scripted import FunctionLLM
from deepdraft.policy.review import edit_in_form, outline_form, parse_outline_form, reviewed_outline
from deepdraft.run import runner
from tests.support.scenario import SOTU_LIKE, ScenarioModel, WordOverlapRetriever

QUESTION = "How did presidents argue about tariffs?"


def proposed() -> Outline:
    return Outline.create("A report", [("One", "First."), ("Two", "Second."), ("Three", "Third.")])


def test_the_text_form_round_trips() -> None:
    outline = proposed()
    title, sections = parse_outline_form(outline_form(outline))
    assert title == "A report"
    assert sections == [("One", "First."), ("Two", "Second."), ("Three", "Third.")]


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("One :: first\n", "the first line must be 'Title:"),
        ("Title: T\nno separator here\n", "line 2: write a section as"),
        ("Title: T\nTitle only :: \n", "line 2"),
        ("# only comments\n", "the outline is empty"),
    ],
)
def test_a_broken_form_names_the_line(text: str, reason: str) -> None:
    with pytest.raises(UserError, match=reason):
        parse_outline_form(text)


def test_an_edit_is_held_to_the_init_plan_rules() -> None:
    with pytest.raises(UserError, match="between 3 and 12 sections"):
        reviewed_outline(QUESTION, "T", [("A", "a"), ("B", "b")])
    with pytest.raises(UserError, match="title"):
        reviewed_outline(QUESTION, " ", [("A", "a"), ("B", "b"), ("C", "c")])
    edited = reviewed_outline(QUESTION, "T", [("C", "c"), ("A", "a"), ("New", "n"), ("B", "b")])
    assert [(s.title, s.plan) for s in edited.sections] == [("C", "c"), ("A", "a"), ("New", "n"), ("B", "b")]


def test_editing_in_the_form_retries_until_valid_or_the_user_gives_up() -> None:
    attempts = iter(
        [
            "Title: Tariffs\nOnly one :: part\n",  # too few sections: refused, the user tries again
            "Title: Tariffs\nThree :: c\nOne :: a\nFour :: d\n",
        ]
    )
    complaints: list[str] = []
    edited = edit_in_form(
        QUESTION, proposed(), edit=lambda _: next(attempts), complain=lambda r: complaints.append(r) or True
    )
    assert edited is not None and [s.title for s in edited.sections] == ["Three", "One", "Four"]
    assert len(complaints) == 1 and "between 3 and 12" in complaints[0]
    # Not saving, or saving it unchanged, keeps the proposal.
    assert edit_in_form(QUESTION, proposed(), edit=lambda _: None, complain=lambda _: True) is None
    assert edit_in_form(QUESTION, proposed(), edit=lambda text: text, complain=lambda _: True) is None
    gave_up = edit_in_form(QUESTION, proposed(), edit=lambda _: "Title: T\n", complain=lambda _: False)
    assert gave_up is None


def test_the_reviewed_outline_is_written_journaled_and_not_asked_for_again_after_a_cancel() -> None:
    settings = load_settings(flags={"research": {"depth": "standard"}})
    retriever = WordOverlapRetriever(SOTU_LIKE)
    llm = FunctionLLM(ScenarioModel(expansions=1))
    cancel = threading.Event()
    asked: list[Outline] = []

    def review(outline: Outline) -> Outline:
        asked.append(outline)
        return reviewed_outline(
            QUESTION, "Tariffs, reviewed", [("Late", "l"), ("Early", "e"), ("Middle", "m")]
        )

    def stop_after_two_sections(event: Event) -> None:
        if isinstance(event, NodeWritten) and event.position == "section-2":
            cancel.set()

    run_id = runner.new_run_id()
    with pytest.raises(RunCancelled):
        runner.start(
            QUESTION,
            settings,
            llm=llm,
            retriever=retriever,
            run_id=run_id,
            on_event=stop_after_two_sections,
            cancel=cancel,
            review_outline=review,
        )
    assert len(asked) == 1 and [s.title for s in asked[0].sections] == [
        "Part early",
        "Part middle",
        "Part late",
    ]
    record, state = runner.load_run(run_id)
    assert record.status == "cancelled"
    assert state is not None and state.outline is not None
    assert state.outline.title == "Tariffs, reviewed"  # the checkpoint holds the edit
    written = [s.title for s in state.outline.sections if s.content]
    assert written == ["Late", "Early"]  # it stopped right after the action that wrote section 2
    with runner.open_journal() as journal:
        kinds = [e.kind for e in journal.events(run_id)]
    assert kinds.count("outline_reviewed") == 1 and kinds[-1] == "run_cancelled"

    def must_not_ask(outline: Outline) -> Outline:
        raise AssertionError("a resumed run asked for the review again")

    report = runner.resume(run_id, settings, llm=llm, retriever=retriever, review_outline=must_not_ask)
    assert report.title == "Tariffs, reviewed"
    assert [s.title for s in report.outline.sections] == ["Late", "Early", "Middle"]
    assert all(s.content for s in report.outline.sections)
    assert runner.load_run(run_id)[0].status == "finished"


def test_a_persons_outline_is_not_held_to_the_rules_that_steer_the_model() -> None:
    edited = reviewed_outline(
        QUESTION, "My notes", [("Introduction", "a"), ("Duties", "b"), ("Conclusion", "c")]
    )
    assert edited.title == "My notes" and edited.sections[0].title == "Introduction"
