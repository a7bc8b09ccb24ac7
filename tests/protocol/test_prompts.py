"""Tests of the prompt templates: strict variables, the answer format, feedback only when given."""

from __future__ import annotations

import json
import re
from typing import get_args

import jinja2
import pytest

from deepdraft.protocol import prompts
from deepdraft.protocol.actions import ExtendPlan, InitPlan, Nop, Search, Write, parse, parse_full_plan
from deepdraft.protocol.prompts import TemplateName, instruction, render

VARIABLES: dict[str, dict[str, str]] = {
    "search": {"question": "Q-TEXT", "outline": "OUTLINE-TEXT", "instruction": "INSTRUCTION-TEXT"},
    "init_plan": {
        "question": "Q-TEXT",
        "evidence": "EVIDENCE-TEXT",
        "min_sections": "31",
        "max_sections": "39",
    },
    "write": {
        "question": "Q-TEXT",
        "outline": "OUTLINE-TEXT",
        "instruction": "INSTRUCTION-TEXT",
        "evidence": "EVIDENCE-TEXT",
        "title": "TITLE-TEXT",
        "plan": "PLAN-TEXT",
    },
    "extend_plan": {
        "question": "Q-TEXT",
        "outline": "OUTLINE-TEXT",
        "min_subsections": "21",
        "max_subsections": "29",
    },
    "full_plan": {
        "question": "Q-TEXT",
        "evidence": "EVIDENCE-TEXT",
        "min_sections": "31",
        "max_sections": "39",
        "min_subsections": "21",
        "max_subsections": "29",
    },
    "split_section": {
        "question": "Q-TEXT",
        "outline": "OUTLINE-TEXT",
        "instruction": "INSTRUCTION-TEXT",
        "position": "POSITION-TEXT",
        "title": "TITLE-TEXT",
        "plan": "PLAN-TEXT",
        "min_subsections": "21",
        "max_subsections": "29",
    },
}
NAMES = list(get_args(TemplateName))
EXAMPLE_ACTION = re.compile(r"<action>(.*?)</action>", re.DOTALL)


def test_every_template_is_covered() -> None:
    assert sorted(NAMES) == sorted(VARIABLES)


@pytest.mark.parametrize("name", NAMES)
def test_template_shows_every_variable(name: TemplateName) -> None:
    text = render(name, **VARIABLES[name])
    for value in VARIABLES[name].values():
        assert value in text
    assert text.endswith("\n") and not text.endswith("\n\n")
    assert "{{" not in text and "{%" not in text


@pytest.mark.parametrize("name", NAMES)
def test_template_contains_the_answer_format(name: TemplateName) -> None:
    text = render(name, **VARIABLES[name])
    assert "<thought>" in text and "</thought>" in text
    assert "<action>" in text and "</action>" in text
    assert text.index("<thought>") < text.rindex("<action>")


@pytest.mark.parametrize(("name", "missing"), [(name, var) for name in NAMES for var in VARIABLES[name]])
def test_a_missing_variable_is_an_error_not_an_empty_string(name: TemplateName, missing: str) -> None:
    variables = {k: v for k, v in VARIABLES[name].items() if k != missing}
    with pytest.raises(jinja2.UndefinedError):
        render(name, **variables)


@pytest.mark.parametrize("name", NAMES)
def test_feedback_appears_only_when_given(name: TemplateName) -> None:
    without = render(name, **VARIABLES[name])
    explicit_empty = render(name, **VARIABLES[name], feedback="")
    with_feedback = render(name, **VARIABLES[name], feedback="FEEDBACK: give at most 5 keywords")
    assert without == explicit_empty
    assert "rejected" not in without.lower()
    assert "FEEDBACK: give at most 5 keywords" in with_feedback
    assert "rejected" in with_feedback.lower()
    # The feedback comes before the answer format, so the format is the last thing the model reads.
    assert with_feedback.index("FEEDBACK") < with_feedback.rindex("<action>")


@pytest.mark.parametrize("name", NAMES)
def test_values_are_inserted_verbatim(name: TemplateName) -> None:
    tricky = "<b>&amp;</b> {{ not a variable }} {% raw %} \\cite{textid1} 中文"
    text = render(name, **{k: tricky for k in VARIABLES[name]})
    assert tricky in text  # no HTML escaping, no second template pass


def test_example_actions_parse_as_the_actions_they_show() -> None:
    """The answer-format examples are valid protocol: a model copying them is understood."""
    expected = {
        "search": [Search],
        "init_plan": [InitPlan],
        "extend_plan": [ExtendPlan, Nop],
        "write": [Write],
        "split_section": [ExtendPlan],
    }
    kinds = {
        "search": {"search"},
        "init_plan": {"init-plan"},
        "extend_plan": {"extend-plan", "nop"},
        "write": {"write"},
        "split_section": {"extend-plan"},
    }
    for name, types in expected.items():
        variables = (
            {**VARIABLES[name], "position": "section-2"} if name == "split_section" else VARIABLES[name]
        )
        text = render(name, **variables)  # type: ignore[arg-type]
        examples = [
            body for body in EXAMPLE_ACTION.findall(text) if body.strip()
        ]  # not "inside <action></action>"
        assert len(examples) == len(types), name
        for body, kind in zip(examples, types, strict=True):
            parsed = parse(f"<thought>x</thought><action>{body}</action>", kinds[name])  # type: ignore[arg-type]
            assert isinstance(parsed, kind), (name, parsed)


def test_full_plan_example_nests_subsections() -> None:
    text = render("full_plan", **VARIABLES["full_plan"])
    (body,) = [body for body in EXAMPLE_ACTION.findall(text) if body.strip()]
    parsed = parse_full_plan(f"<action>{body}</action>")
    assert isinstance(parsed, InitPlan)
    assert any(section.children for section in parsed.sections)
    assert json.loads(body)["name"] == "init-plan"


def test_write_prompt_teaches_the_citation_syntax() -> None:
    text = render("write", **VARIABLES["write"])
    assert "\\cite{textid1}" in text
    assert "\\cite{textid1, textid2}" in text


def test_instruction_line() -> None:
    assert instruction("outline") == "You need to update outline"
    assert instruction("section-2.1") == "You need to update section-2.1"
    assert "You need to update section-2.1" in render(
        "search", **{**VARIABLES["search"], "instruction": instruction("section-2.1")}
    )


def test_unknown_template_is_an_error() -> None:
    with pytest.raises(FileNotFoundError):
        render("no_such_template", question="q")  # type: ignore[arg-type]


def test_templates_are_loaded_once() -> None:
    assert prompts._environment() is prompts._environment()


def test_write_prompt_shows_its_worked_example_except_on_a_re_ask() -> None:
    first = render("write", **VARIABLES["write"])
    assert prompts.WRITE_EXAMPLE_ACTION in first and "An example for a different question" in first
    again = render("write", **VARIABLES["write"], feedback="REASON", example_thought="", example_action="")
    assert prompts.WRITE_EXAMPLE_ACTION not in again and "An example" not in again
    assert "REASON" in again and "inside <action></action>" in again  # the answer format stays


@pytest.mark.parametrize("name", ["search", "write", "split_section"])
def test_the_users_instructions_appear_only_when_given(name: TemplateName) -> None:
    """A command on a finished report (`deepdraft deepen --instructions`) shows them; without any,
    the prompt is the research run's own, byte for byte."""
    without = render(name, **VARIABLES[name])
    assert without == render(name, **VARIABLES[name], instructions="")
    given = render(name, **VARIABLES[name], instructions="USER-WISH: compare the farm states")
    assert "USER-WISH: compare the farm states" not in without
    assert given.index("USER-WISH") < given.rindex("<action>")
    assert (
        given.replace("The user's own instructions for this part: USER-WISH: compare the farm states\n", "")
        == without
    )


def test_split_prompt_asks_for_an_exact_count_when_one_was_given() -> None:
    counts: dict[str, str | int] = {"min_subsections": 3, "max_subsections": 3}
    exact = render("split_section", **{**VARIABLES["split_section"], **counts})
    assert "into exactly 3 new subsections" in exact
    assert "between 21 and 29" in render("split_section", **VARIABLES["split_section"])


def test_the_deepening_prompt_names_the_parts_that_can_be_split_when_told_them() -> None:
    told = render("extend_plan", **VARIABLES["extend_plan"], splittable="section-1, section-2.1")
    assert "that has no subsections yet can be split: section-1, section-2.1." in told
    assert "that has no subsections yet can be split. " in render("extend_plan", **VARIABLES["extend_plan"])
