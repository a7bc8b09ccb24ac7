"""Reading each WARP action's reply against the run's state: parse, then validate (`actions.py`).

Each reader returns the typed action or a `Refused` with the reason the model is shown when it is
asked again. `describe` is how an action is written into the journal.
"""

from __future__ import annotations

from deepdraft.core.outline import NodeSpec
from deepdraft.core.state import RunState
from deepdraft.protocol.action_prompts import count_ranges
from deepdraft.protocol.actions import (
    NO_CITATIONS,
    Action,
    ExtendPlan,
    InitPlan,
    Nop,
    PlannedNode,
    Refused,
    Search,
    Write,
    parse,
    parse_full_plan,
    validate_extend_plan,
    validate_full_plan,
    validate_init_plan,
    validate_search,
    validate_write,
)
from deepdraft.protocol.attach import attach_citations
from deepdraft.settings import ResearchSettings


def read_search(raw: str) -> Action | Refused:
    action = parse(raw, {"search"})
    if isinstance(action, Search):
        return validate_search(action) or action
    return action


def read_plan(
    raw: str, state: RunState, research: ResearchSettings, *, full: bool = False
) -> Action | Refused:
    """An init-plan: WARP's one level of sections, or (`full`) the baseline's nested outline."""
    sections, subsections = count_ranges(research)
    if full:
        action: Action | Refused = parse_full_plan(raw)
        if isinstance(action, InitPlan):
            return (
                validate_full_plan(action, state.question, sections, subsections, research.language) or action
            )
        return action
    action = parse(raw, {"init-plan"})
    if isinstance(action, InitPlan):
        return validate_init_plan(action, state.question, sections, research.language) or action
    return action


def read_write(raw: str, state: RunState, research: ResearchSettings, refused: int) -> Action | Refused:
    """A node's text; after `research.attach_citations_after` refusals, uncited text gets citations
    placed from the evidence it was shown (a small model that will not cite)."""
    action = parse(raw, {"write"})
    if not isinstance(action, Write):
        return action
    problem = validate_write(action, state.question, state.evidence, research.language)
    attach_after = research.attach_citations_after
    if problem and problem.code == NO_CITATIONS and attach_after is not None and refused >= attach_after:
        evidence = {key: state.registry[key].text for key in state.evidence}
        attached = attach_citations(action.text, evidence)
        if attached is not None:
            repaired = Write(attached, citations_attached=True)
            return validate_write(repaired, state.question, state.evidence, research.language) or repaired
    return problem or action


def read_extend(raw: str, state: RunState, research: ResearchSettings) -> Action | Refused:
    assert state.outline is not None
    action = parse(raw, {"extend-plan", "nop"})
    if isinstance(action, ExtendPlan):
        subsections = count_ranges(research)[1]
        problem = validate_extend_plan(action, state.outline, state.question, subsections, research.language)
        return problem or action
    return action


def as_pairs(nodes: tuple[PlannedNode, ...]) -> list[tuple[str, str]]:
    return [(node.title, node.plan) for node in nodes]


def as_spec(nodes: tuple[PlannedNode, ...]) -> list[NodeSpec]:
    return [(node.title, node.plan, as_spec(node.children)) for node in nodes]


def describe(action: Action) -> dict[str, object]:
    """The action as the journal's `parsed` column holds it."""
    match action:
        case Search(keywords):
            return {"name": "search", "keywords": list(keywords)}
        case InitPlan(title, sections):
            return {"name": "init-plan", "title": title, "sections": as_spec(sections)}
        case ExtendPlan(position, subsections):
            return {"name": "extend-plan", "position": position, "subsections": as_pairs(subsections)}
        case Nop():
            return {"name": "nop"}
        case Write(text, citations_attached):
            return {"name": "write", "text": text, "citations_attached": citations_attached}
    raise AssertionError(action)
