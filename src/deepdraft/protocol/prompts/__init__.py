"""Prompt templates, one per action, rendered with Jinja's StrictUndefined.

The wording is ours; the structure each template shows the model (outline lines, `bibkey:textidN`
evidence, the `<thought>`/`<action>` answer format) follows the WARP protocol.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Literal

import jinja2

TemplateName = Literal["search", "init_plan", "write", "extend_plan", "full_plan"]
"""The policy's action prompts (the WARP protocol's answer format)."""
FinishingTemplateName = Literal["verify", "repair", "synthesis", "constraints"]
"""The finishing passes' prompts (verify.py, synthesis.py): JSON verdicts or free text."""


@cache
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FunctionLoader(_load),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=False,
        autoescape=False,  # prompts are plain text, not HTML
    )


def _load(name: str) -> str:
    return resources.files(__package__).joinpath(f"{name}.jinja").read_text(encoding="utf-8")


def render(name: TemplateName | FinishingTemplateName, **variables: str | int) -> str:
    """Render a template; `feedback` (why the last reply was refused) defaults to none, the output
    language to the question's, the length guidance and the search findings to none."""
    variables.setdefault("feedback", "")
    variables["language"] = variables.get("language") or "the language of the user's request"
    variables.setdefault("length", "")
    variables.setdefault("found", "")
    return _environment().get_template(name).render(**variables).strip() + "\n"


def instruction(target: str) -> str:
    """The Analyst's instruction line the WARP model was trained with."""
    return f"You need to update {target}"
