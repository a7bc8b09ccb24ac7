"""Prompt templates, one per action, rendered with Jinja's StrictUndefined.

The wording is ours; the structure each template shows the model (outline lines, `bibkey:textidN`
evidence, the `<thought>`/`<action>` answer format) follows the WARP protocol.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Literal

import jinja2

TemplateName = Literal["search", "init_plan", "write", "extend_plan", "full_plan", "split_section"]
"""The policy's action prompts (the WARP protocol's answer format)."""
FinishingTemplateName = Literal["verify", "repair", "synthesis", "constraints", "ask", "write_passage"]
"""The finishing passes' prompts (verify.py, synthesis.py), a follow-up question's (asks.py) and
the prompt for one passage of a part written passage by passage (`protocol/passage_write.py`):
JSON verdicts or free text."""


# Keys no early passage of a run has: when a part's evidence opened with the example's own first
# key (textid2, as it once was), a small model answered with the example (measured: 3 of the 4
# echoed writes of two runs).
WRITE_EXAMPLE_THOUGHT = (
    "textid91 gives the conductivity of sulfides and their reaction with air; "
    "textid94 confirms the air sensitivity; textid97 gives the cost of dry rooms."
)
# A paragraph per passage, every sentence cited: a small model copies the example's length and
# shape more than it follows a word count (measured: with a two-sentence example its parts ran to
# about 66 words whatever length was asked).
WRITE_EXAMPLE_ACTION = (
    "Sulfide electrolytes conduct lithium ions about as well as liquid electrolytes \\cite{textid91}. "
    "That makes them the strongest candidate for solid-state cells, since conductivity was the "
    "long-standing weakness of solid electrolytes \\cite{textid91}.\n\n"
    "Their weakness is chemical: they react with moist air and release hydrogen sulfide "
    "\\cite{textid91, textid94}. Cells must therefore be assembled in dry rooms \\cite{textid94}, "
    "and the cost of keeping those rooms dry adds to every cell made \\cite{textid97}."
)
"""The write prompt's worked example, on a subject far from any request. Kept here so that a
reply repeating it can be recognised (a small model with weak evidence sometimes answers with
the example itself) and the re-ask can leave it out."""


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
    language to the question's, the length guidance, the search findings and the user's instructions
    (a command on a finished run) to none, the write prompt's worked example to `WRITE_EXAMPLE_*`
    (a re-ask passes it empty)."""
    variables.setdefault("feedback", "")
    variables["language"] = variables.get("language") or "the language of the user's request"
    variables.setdefault("length", "")
    variables.setdefault("found", "")
    variables.setdefault("instructions", "")
    variables.setdefault("paragraph_keys", "")
    variables.setdefault("splittable", "")
    variables.setdefault("example_thought", WRITE_EXAMPLE_THOUGHT)
    variables.setdefault("example_action", WRITE_EXAMPLE_ACTION)
    return _environment().get_template(name).render(**variables).strip() + "\n"


def instruction(target: str) -> str:
    """The Analyst's instruction line the WARP model was trained with."""
    return f"You need to update {target}"
