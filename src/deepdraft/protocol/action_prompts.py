"""The prompt of each WARP action, built from the run's state, and the other words the policy says.

One builder per action kind; each takes the state, the research settings and a `Fit` (how much
draft and evidence the prompt may show, see `fitting.py`) and renders its template. What the
model reads lives here and in the templates, so the policy itself holds no model-facing text.
"""

from __future__ import annotations

import json

from deepdraft.core.citations import without_citations
from deepdraft.core.evidence import render_evidence
from deepdraft.core.outline import empty_outline_view
from deepdraft.core.sentences import sentences
from deepdraft.core.state import RunState
from deepdraft.protocol import prompts
from deepdraft.protocol.actions import MAX_KEYWORDS, SECTIONS_RANGE, SUBSECTIONS_RANGE
from deepdraft.protocol.fitting import Fit
from deepdraft.protocol.topic import salient_terms, subject_title
from deepdraft.settings import ResearchSettings

NOTHING_FOUND = "these keywords matched nothing in the documents; try other, broader ones"


def must_deepen(forced: int) -> str:
    """Why a stop is refused before `force_expansions` deepening steps were taken."""
    return f"do not stop yet: choose one node to split ({forced} deepening steps required)"


def plan_keywords(state: RunState) -> list[str]:
    """What a search decided by deepdraft looks for (`research.plan_searches`, and a search whose
    keywords the model never gave usably): before there is an outline, the request's subject; for
    a part, its title and each sentence of its plan, which say what the part is to cover in the
    planner's own words."""
    if state.outline is None or state.target == "outline":
        return [subject_title(state.question)]
    located = state.outline.find(state.target)
    assert located is not None
    node = located.node
    wanted = [node.title, *sentences(node.plan, lines="every")]
    return list(dict.fromkeys(text.strip() for text in wanted if text.strip()))[:MAX_KEYWORDS]


PLANNED_SEARCH = (
    "No request to the model: this search was decided by deepdraft (research.plan_searches), "
    "from the part's title and the sentences of its plan, or before an outline the request's subject."
)
"""The journal's prompt for a search decided without the model, saying what was done instead."""


def planned_search_reply(keywords: list[str]) -> str:
    """A search decided without the model, written as the model's reply would be, for the journal
    and the reader that takes any search."""
    action = json.dumps({"name": "search", "keywords": keywords}, ensure_ascii=False)
    return f"<thought>searched by deepdraft, not chosen by the model</thought>\n<action>{action}</action>"


def count_ranges(research: ResearchSettings) -> tuple[tuple[int, int], tuple[int, int]]:
    """(sections, subsections) count bounds: the protocol's, narrowed by the settings."""
    return (
        (SECTIONS_RANGE[0], research.max_sections),
        (SUBSECTIONS_RANGE[0], research.max_subsections),
    )


def search_prompt(state: RunState, research: ResearchSettings, fit: Fit) -> str:
    return prompts.render(
        "search",
        question=state.question,
        # Citation keys tell a search nothing (and the writer is shown none either: see below).
        outline=without_citations(_draft_view(state, fit.draft, focus=state.target)),
        instruction=prompts.instruction(state.target),
        instructions=state.user_instructions(),
        feedback=state.feedback,
        language=research.language or "",
    )


def plan_prompt(
    state: RunState, research: ResearchSettings, fit: Fit, template: prompts.TemplateName = "init_plan"
) -> str:
    """The first outline: `init_plan` (WARP's sparse one) or `full_plan` (the baseline's)."""
    return prompts.render(
        template,
        question=state.question,
        evidence=_evidence(state, fit),
        # A re-ask leaves the documents' titles out: asked again, a small model titled its sections
        # after them (measured: 3 of 20 re-asked outlines of the smoke runs, none of 30 first ones).
        found=search_findings(state, with_titles=not state.feedback),
        feedback=state.feedback,
        language=research.language or "",
        **_bounds(research),
    )


MOST_DOCUMENTS_SHOWN = 10


def search_findings(state: RunState, *, with_titles: bool = True) -> str:
    """What the background search found, in brief: the documents it came from (unless not
    `with_titles`) and the words its passages share — so the outline's sections can be facets of
    the evidence, not essay parts."""
    items = [state.registry[key] for key in state.evidence]
    if not items:
        return ""
    titles = list(dict.fromkeys(i.source.title for i in items if i.source.title)) if with_titles else []
    # Plain sentences under the evidence, not a header of their own: a small model lists a
    # prompt's headers as the sections of its outline.
    lines = []
    if titles:
        shown = "; ".join(titles[:MOST_DOCUMENTS_SHOWN])
        more = f" and {len(titles) - MOST_DOCUMENTS_SHOWN} more" if len(titles) > MOST_DOCUMENTS_SHOWN else ""
        lines.append(f"These passages come from: {shown}{more}.")
    terms = salient_terms(item.text for item in items)
    if terms:
        lines.append(f"Words they share: {', '.join(terms)}.")
    return "\n".join(lines)


def write_prompt(state: RunState, research: ResearchSettings, fit: Fit, length: str) -> str:
    """Write the node at `state.target`; `length` is the guidance toward the requested length."""
    assert state.outline is not None
    located = state.outline.find(state.target)
    assert located is not None
    return prompts.render(
        "write",
        question=state.question,
        # The other parts are shown without their citations: their keys name passages this part is
        # not shown, and a small model copied them into its own text (measured: a third of the
        # refused writes of ten quick runs cited a key from the report so far).
        outline=without_citations(_draft_view(state, fit.draft, focus=state.target)),
        instruction=prompts.instruction(state.target),
        title=located.node.title,
        plan=located.node.plan,
        length=length,
        # The passages in the order shown, as a checklist: asked for "a paragraph per passage", a
        # small model wrote two or three sentences whatever the evidence.
        paragraph_keys=", ".join(state.evidence[: fit.passages]) if length else "",
        instructions=state.user_instructions(),
        evidence=_evidence(state, fit),
        feedback=state.feedback,
        language=research.language or "",
        # A re-ask leaves the worked example out: a small model that wrote nothing usable from weak
        # evidence tends to hand back the example itself, and the reason it was refused now says
        # what to do instead.
        example_thought="" if state.feedback else prompts.WRITE_EXAMPLE_THOUGHT,
        example_action="" if state.feedback else prompts.WRITE_EXAMPLE_ACTION,
    )


def extend_prompt(state: RunState, research: ResearchSettings, fit: Fit) -> str:
    return prompts.render(
        "extend_plan",
        question=state.question,
        length=report_length(state, research),
        outline=_draft_view(state, fit.draft, focus=None),
        # Named, since a small model picked a part it had split already (then asked again).
        splittable=", ".join(state.outline.splittable()) if state.outline is not None else "",
        feedback=state.feedback,
        language=research.language or "",
        **_bounds(research),
    )


def split_prompt(state: RunState, research: ResearchSettings, fit: Fit, subsections: tuple[int, int]) -> str:
    """Split the node at `state.target`, which the user chose, into `subsections` (low, high) parts."""
    assert state.outline is not None
    located = state.outline.find(state.target)
    assert located is not None
    low, high = subsections
    return prompts.render(
        "split_section",
        question=state.question,
        outline=_draft_view(state, fit.draft, focus=state.target),
        instruction=prompts.instruction(state.target),
        position=located.position,
        title=located.node.title,
        plan=located.node.plan,
        instructions=state.user_instructions(),
        feedback=state.feedback,
        language=research.language or "",
        min_subsections=low,
        max_subsections=high,
    )


def node_length(state: RunState, research: ResearchSettings) -> str:
    """Guidance toward the requested report length for one node's text: from `length_words` when
    a length was asked, else `node_words` (a preset's default), else none ("")."""
    target = research.length_words
    if target and state.outline is not None:
        per_node = max(60, target // max(3, state.outline.count()))
        return f"Aim for about {per_node} words in this part (the whole report: about {target} words)."
    if research.node_words:
        # A small model left to itself writes two sentences; one short paragraph per passage
        # gives the part its length, its citations and its spread over the evidence.
        return (
            f"Aim for about {research.node_words} words in this part: one paragraph for each passage "
            "that bears on it, two or three sentences in your own words on what that passage says, "
            "each sentence ending with the passage's citation."
        )
    return ""


def whole_length(state: RunState, research: ResearchSettings) -> str:
    """The same for a report written in one piece (the single-pass baseline)."""
    target = research.length_words
    return f"Aim for about {target} words in all." if target else ""


def report_length(state: RunState, research: ResearchSettings) -> str:
    """Guidance for the deepening decision: how long the report is against what was asked."""
    target = research.length_words
    if not target or state.outline is None:
        return ""
    written = sum(len((n.node.content or "").split()) for n in state.outline.walk())
    return (
        f"The report has about {written} words; the user asked for about {target}. "
        "Once it is that long, stop unless a part is clearly missing."
    )


def _bounds(research: ResearchSettings) -> dict[str, int]:
    (min_sections, max_sections), (min_subsections, max_subsections) = count_ranges(research)
    return {
        "min_sections": min_sections,
        "max_sections": max_sections,
        "min_subsections": min_subsections,
        "max_subsections": max_subsections,
    }


def _evidence(state: RunState, fit: Fit) -> str:
    return render_evidence(state.registry, state.evidence[: fit.passages], fit.passage_tokens)


def _draft_view(state: RunState, budget: int, focus: str | None) -> str:
    if state.outline is None:
        return empty_outline_view()
    return state.outline.condensed_view(budget, focus=focus)
