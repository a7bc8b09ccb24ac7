"""Plan review: the user edits a run's first outline before anything is written.

The policy offers its first outline through a hook (`warp.ReviewOutline`); the server answers it
from the web page, the CLI from a terminal (`research --review-outline`). Both go through
`reviewed_outline`, which holds a person's edit to the rules a model's init-plan must meet — one
level, a title, 3–12 sections each with a title and a plan — so the rest of the run never sees an
outline it could not have produced itself.

The CLI's text form is one section per line, ``title :: plan``, after a ``Title:`` line: simple
enough to edit in any editor, and robust to reordering, deleting and adding lines.
"""

from __future__ import annotations

from collections.abc import Callable

from deepdraft.core.outline import Outline
from deepdraft.errors import UserError
from deepdraft.protocol.actions import ESSAY_PART, OFF_SUBJECT, InitPlan, PlannedNode, validate_init_plan

SEPARATOR = "::"
TITLE_PREFIX = "Title:"
FORM_HELP = (
    "# Edit the outline, then save and close the editor to continue.\n"
    f"# The first line is the report's title; then one section per line: title {SEPARATOR} what it covers.\n"
    "# Reorder, rename, add or delete section lines (3 to 12). Lines starting with # are ignored.\n"
)


def reviewed_outline(question: str, title: str, sections: list[tuple[str, str]]) -> Outline:
    """The user's outline as a fresh `Outline`; `UserError` saying what is wrong otherwise."""
    plan = InitPlan(
        title=title.strip(),
        sections=tuple(PlannedNode(t.strip(), p.strip()) for t, p in sections),
    )
    refused = validate_init_plan(plan, question)
    # The rules on the subject and on essay parts steer a model; a person's outline is theirs.
    if refused is not None and refused.code not in (OFF_SUBJECT, ESSAY_PART):
        raise UserError(f"the edited outline is not valid: {refused.reason}")
    return Outline.create(plan.title, [(node.title, node.plan) for node in plan.sections])


def outline_form(outline: Outline) -> str:
    """The outline as the text form a user edits."""
    lines = [f"{TITLE_PREFIX} {outline.title}"]
    lines += [f"{node.title} {SEPARATOR} {' '.join(node.plan.split())}" for node in outline.sections]
    return FORM_HELP + "\n".join(lines) + "\n"


def parse_outline_form(text: str) -> tuple[str, list[tuple[str, str]]]:
    """(title, [(section title, plan)]) from an edited form; `UserError` naming the bad line."""
    title: str | None = None
    sections: list[tuple[str, str]] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if title is None:
            if not line.startswith(TITLE_PREFIX):
                raise UserError(f"line {number}: the first line must be '{TITLE_PREFIX} <report title>'")
            title = line.removeprefix(TITLE_PREFIX).strip()
            continue
        section, separator, plan = line.partition(SEPARATOR)
        if not separator or not section.strip() or not plan.strip():
            raise UserError(f"line {number}: write a section as 'title {SEPARATOR} what it covers'")
        sections.append((section.strip(), plan.strip()))
    if title is None:
        raise UserError(f"the outline is empty: keep the '{TITLE_PREFIX}' line and the section lines")
    return title, sections


def edit_in_form(
    question: str, outline: Outline, edit: Callable[[str], str | None], complain: Callable[[str], bool]
) -> Outline | None:
    """Let a user edit `outline` as text until it is valid; None keeps the proposed outline.

    `edit` shows the form and returns the edited text (None: the user did not save); `complain`
    shows why an edit was refused and returns whether to try again.
    """
    text = outline_form(outline)
    while True:
        edited = edit(text)
        if edited is None or edited.strip() == text.strip():
            return None
        try:
            return reviewed_outline(question, *parse_outline_form(edited))
        except UserError as exc:
            if not complain(str(exc)):
                return None
            text = edited
