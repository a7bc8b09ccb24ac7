"""Reading each WARP action's reply against the run's state: parse, then validate (`actions.py`).

Each reader returns the typed action or a `Refused` with the reason the model is shown when it is
asked again. `describe` is how an action is written into the journal.
"""

from __future__ import annotations

import re
from dataclasses import replace

from deepdraft.core.citations import keeping_keys
from deepdraft.core.outline import NodeSpec, Outline, parse_position
from deepdraft.core.state import RunState
from deepdraft.protocol.action_prompts import count_ranges
from deepdraft.protocol.actions import (
    ESSAY_PART,
    FOREIGN_KEYS,
    LOOPING,
    NO_CITATIONS,
    OFF_SUBJECT,
    TITLES_OFF_SUBJECT,
    TOO_MANY_CITATIONS,
    Action,
    ExtendPlan,
    InitPlan,
    Nop,
    PlannedNode,
    Refused,
    Search,
    Write,
    check_subject_titles,
    parse,
    parse_full_plan,
    validate_extend_plan,
    validate_full_plan,
    validate_init_plan,
    validate_search,
    validate_write,
)
from deepdraft.protocol.attach import attach_citations, cite_uncited, merged_citations
from deepdraft.protocol.topic import is_essay_part, names_subject, subject_label, subject_terms, subject_title
from deepdraft.protocol.write_checks import (
    before_loop,
    before_protocol_tags,
    cited_sentences,
    faults_reason,
    pasted_sentences,
    sentence_faults,
    without_broken_start,
    without_debris,
    without_own_title,
    without_repeats,
    without_sentences,
    without_unfounded,
)
from deepdraft.settings import ResearchSettings

UNGROUNDED = "ungrounded"  # cited sentences that their passages do not bear out
_MENDABLE = {OFF_SUBJECT, ESSAY_PART, TITLES_OFF_SUBJECT}
"""Outline faults mended on the last try instead of failing the plan (see `_mended_plan`)."""


def read_search(raw: str) -> Action | Refused:
    action = parse(raw, {"search"})
    if isinstance(action, Search):
        return validate_search(action) or action
    return action


def read_plan(
    raw: str, state: RunState, research: ResearchSettings, *, full: bool = False, refused: int = 0
) -> Action | Refused:
    """An init-plan: WARP's one level of sections, or (`full`) the baseline's nested outline.

    Essay-part sections are left out at once when enough other sections remain. On the last try
    (`refused` re-asks spent) an outline whose only faults are a title off the subject or
    essay-part sections is mended rather than refused: a run without an outline has no report at
    all, and an imperfect outline still has one.
    """
    sections, subsections = count_ranges(research)
    action: Action | Refused = parse_full_plan(raw) if full else parse(raw, {"init-plan"})
    if not isinstance(action, InitPlan):
        return action

    def validate(plan: InitPlan) -> Refused | None:
        if full:
            return validate_full_plan(plan, state.question, sections, subsections, research.language)
        return validate_init_plan(plan, state.question, sections, research.language)

    def on_subject(plan: InitPlan) -> Refused | None:
        if research.subject_titles is None:
            return None
        return check_subject_titles(
            plan.sections, state.question, "sections", research.subject_titles, research.language
        )

    problem = validate(action)
    if problem and problem.code == ESSAY_PART:
        # Leaving the essay parts out costs nothing when enough topical sections remain; a re-ask
        # costs a whole action, which a small budget cannot spare.
        topical = InitPlan(action.title, _without_essay_parts(action.sections, sections[0]))
        if topical.sections != action.sections:
            action, problem = topical, validate(topical)
    problem = problem or on_subject(action)
    if problem and problem.code in _MENDABLE and refused >= research.max_retries:
        mended = _mended_plan(action, state.question, sections[0])
        mended = InitPlan(mended.title, _named_after_subject(mended.sections, state.question, research))
        left = validate(mended)
        # Essay parts kept because too few others remain are still accepted now: an outline with
        # an "Introduction" yields a report, a failed run none.
        return _grounded(mended, state) if left is None or left.code in _MENDABLE else left
    return problem or _grounded(action, state)


def _grounded(plan: InitPlan, state: RunState) -> InitPlan:
    """The outline with its plans held to what the evidence and the request name."""
    return InitPlan(plan.title, _grounded_nodes(plan.sections, _known(state)))


def _known(state: RunState) -> str:
    return "\n".join([state.question, *(item.text for item in state.registry.items.values())])


def _grounded_nodes(nodes: tuple[PlannedNode, ...], known: str) -> tuple[PlannedNode, ...]:
    # A plan left with nothing is the node's title: the part is then written from its evidence.
    return tuple(
        replace(
            node,
            plan=without_unfounded(node.plan, known) or node.title,
            children=_grounded_nodes(node.children, known),
        )
        for node in nodes
    )


def _named_after_subject(
    nodes: tuple[PlannedNode, ...], question: str, research: ResearchSettings
) -> tuple[PlannedNode, ...]:
    """The nodes, with the subject's first words put before the titles that do not name it
    ("Tariffs: Economic growth") when too few do (`research.subject_titles`): how an outline's
    last try and every split are mended. A part's search and text follow its title; measured,
    a re-asked outline came back titled after the speeches its evidence came from, and each such
    section was written about whatever its speech said."""
    share = research.subject_titles
    if share is None or check_subject_titles(nodes, question, "sections", share, research.language) is None:
        return nodes
    subject, prefix = subject_terms(question), subject_label(question)
    return tuple(
        node if names_subject(node.title, subject) else replace(node, title=f"{prefix}: {node.title}")
        for node in nodes
    )


def _mended_plan(plan: InitPlan, question: str, fewest: int) -> InitPlan:
    """The request itself as the title when the model's names no subject; essay-part sections
    left out while enough others remain (the summary and conclusion are written anyway), else the
    first one titled after the request's subject instead."""
    title = plan.title
    if validate_init_plan(InitPlan(title, ()), question, (0, 12)) is not None:
        title = question.strip().rstrip("?？.。!！").strip() or title
    sections = plan.sections
    topical = [node for node in sections if not is_essay_part(node.title)]
    if len(topical) < min(fewest, len(sections)):
        # An "Introduction" kept for want of other sections gets a plan's worth of generic text
        # from a small model (measured: three drafts of one such part cited nothing); titled
        # after the subject, its search and its text are about the request.
        first = next(i for i, node in enumerate(sections) if is_essay_part(node.title))
        named = replace(sections[first], title=subject_title(question))
        sections = (*sections[:first], named, *sections[first + 1 :])
    sections = _without_essay_parts(sections, fewest)
    return InitPlan(title, sections)


def _without_essay_parts(nodes: tuple[PlannedNode, ...], fewest: int) -> tuple[PlannedNode, ...]:
    """The nodes without their essay parts, as many as can go while `fewest` remain: the last
    ones first, since a closing "Conclusion" repeats the conclusion written for every report
    (measured: a kept one said the same as it in other words)."""
    kept = list(nodes)
    for index in reversed(range(len(nodes))):
        if len(kept) <= fewest:
            break
        if is_essay_part(nodes[index].title):
            del kept[index]
    return tuple(kept)


def read_write(raw: str, state: RunState, research: ResearchSettings, refused: int) -> Action | Refused:
    """A node's text; after `research.attach_citations_after` refusals, uncited text gets citations
    placed from the evidence it was shown (a small model that will not cite).

    Faults that need no new text are mended at once, since a re-ask costs a whole write on a
    CPU: numbering debris is cut; a loop is cut where it began; keys of passages the part was not
    shown are dropped (where citations may be placed); a run of sentences citing the same
    passages is cited once when there are too many citations; sentences said already in another
    part are left out. A text whose cited sentences do not hold up against their passages
    (`write_checks`) is asked again when much of it is at fault and a re-ask is left, unless
    enough of it holds up to a stricter test (`KEEP_SUPPORT`); otherwise the sentences at fault
    are dropped, and so are uncited sentences pasted from a passage (a text with nothing left once
    they are gone is kept as it is). With `research.cite_every_sentence`, the uncited sentences
    left are then cited from the evidence, or dropped where no passage holds their words.
    """
    action = parse(raw, {"write"})
    if not isinstance(action, Write):
        return action
    located = state.outline.find(state.target) if state.outline is not None else None
    title = located.node.title if located is not None else ""
    text = without_broken_start(without_own_title(before_protocol_tags(action.text), title))
    action = Write(without_debris(text))
    problem = validate_write(action, state.question, state.evidence, research.language)
    attach_after = research.attach_citations_after
    may_attach = attach_after is not None and refused >= attach_after
    for _ in range(len(_MENDS)):  # each mend takes away one kind of fault, so each applies once
        if problem is None or (mended := _mended(action, problem.code, state, may_attach)) is None:
            break
        left = validate_write(mended, state.question, state.evidence, research.language)
        if left is not None and left.code not in _MENDS:
            break  # the mend left a text the model must redo: it hears of its own fault
        action, problem = mended, left
    if problem:
        return problem
    action = _without_repeats(action, state, research)
    checked = _checked(action, state, research, last_try=refused >= research.max_retries)
    if isinstance(checked, Write) and research.cite_every_sentence and not checked.citations_attached:
        return _every_sentence_cited(checked, state, research)
    return checked


def _every_sentence_cited(action: Write, state: RunState, research: ResearchSettings) -> Write:
    """The write with its uncited sentences cited from the part's evidence, or dropped where no
    passage holds their words (`cite_uncited`), when what is left is still a valid write; else
    the write as it is."""
    evidence = {key: state.registry[key].text for key in state.evidence}
    text, placed = cite_uncited(action.text, evidence)
    if text == action.text:
        return action
    cited = Write(text, sentences_cited=placed)
    return cited if _valid(cited, state, research) else action


_MENDS = (LOOPING, FOREIGN_KEYS, NO_CITATIONS, TOO_MANY_CITATIONS)


def _mended(action: Write, fault: str, state: RunState, may_attach: bool) -> Write | None:
    """The write with `fault` mended without asking the model again, or None when it cannot be."""
    evidence = {key: state.registry[key].text for key in state.evidence}
    if fault == LOOPING:
        # What came before the loop is kept when it makes a part; else the model is asked again.
        start = before_loop(action.text)
        return Write(start, action.citations_attached) if start else None
    if fault == FOREIGN_KEYS and may_attach:
        # Keys of passages this part was not shown are dropped; where deepdraft may place
        # citations itself, the sentences left uncited are placed in the next round.
        return Write(keeping_keys(action.text, set(evidence)), action.citations_attached)
    if fault == NO_CITATIONS and may_attach:
        attached = attach_citations(action.text, evidence)
        return Write(attached, citations_attached=True) if attached is not None else None
    if fault == TOO_MANY_CITATIONS:
        merged = merged_citations(action.text)
        return Write(merged, action.citations_attached) if merged != action.text else None
    return None


def _without_repeats(action: Write, state: RunState, research: ResearchSettings) -> Write:
    """The write without the sentences other written parts hold already, when what is left is
    still a valid write; else the write as it is (a part is never left empty for this)."""
    walk = state.outline.walk() if state.outline is not None else ()
    others = [item.node.content for item in walk if item.position != state.target and item.node.content]
    text = without_repeats(action.text, others)
    if text == action.text:
        return action
    trimmed = Write(text, action.citations_attached)
    return trimmed if _valid(trimmed, state, research) else action


def _room_to_ask_again(state: RunState, research: ResearchSettings) -> bool:
    """Whether the step budget still covers a re-ask and a search and a write for every other node
    without text, and a deepening decision: a re-ask must not leave later parts unwritten."""
    pending = [] if state.outline is None else [n for n in state.outline.walk() if not n.node.settled]
    others = len(pending) - 1
    return research.max_steps - state.step - 1 > 2 * max(0, others) + 1


REASK_SHARE = 0.3
"""Ask again when at least this share of the cited sentences is at fault (and a re-ask is left)."""
KEEP_SHARE = 0.5
KEEP_SUPPORT = 0.5
"""A write much at fault is kept rather than asked again when, once its faulty sentences and those
with under `KEEP_SUPPORT` of their content words in their passages are dropped, it still has
`KEEP_SHARE` of the words its part aims for. Asked again, a small model answered a long write's
faults with a short one (measured over four smoke runs: nine re-asks of writes of 150–360 words
came back with 35–217, median 67); held to the stricter floor, what is kept is no less grounded
than a re-ask's text (at the usual floor, a kept write lowered its report's support)."""


def _long_enough(text: str, research: ResearchSettings) -> bool:
    aim = research.node_words
    return aim is not None and len(text.split()) >= KEEP_SHARE * aim


def _checked(
    action: Write, state: RunState, research: ResearchSettings, *, last_try: bool
) -> Action | Refused:
    evidence = {key: state.registry[key].text for key in state.evidence}
    faults = sentence_faults(action.text, evidence)
    pasted = pasted_sentences(action.text, evidence)
    if not faults and not pasted:
        return action
    cited = sum(1 for _ in cited_sentences(action.text))
    if not last_try and len(faults) >= max(2, REASK_SHARE * cited) and _room_to_ask_again(state, research):
        # Kept rather than asked again when enough is left of it held to the stricter floor.
        strict = sentence_faults(action.text, evidence, min_support=KEEP_SUPPORT)
        kept = Write(without_sentences(action.text, [*strict, *pasted]), action.citations_attached)
        if _long_enough(kept.text, research) and _valid(kept, state, research):
            return kept
        return Refused(faults_reason(faults), UNGROUNDED)
    # Uncited pasted sentences never cost a re-ask: they are left out, as the faults are now.
    trimmed = Write(without_sentences(action.text, [*faults, *pasted]), action.citations_attached)
    return trimmed if _valid(trimmed, state, research) else action


def _valid(action: Write, state: RunState, research: ResearchSettings) -> bool:
    return validate_write(action, state.question, state.evidence, research.language) is None


def read_extend(raw: str, state: RunState, research: ResearchSettings, refused: int = 0) -> Action | Refused:
    """A deepening decision; essay-part subsections, and those titled as a part the outline has
    already, are left out when enough others remain, and on the last try in any case (see
    `read_plan`); a split left with too few is asked for again while a re-ask is left."""
    assert state.outline is not None
    action = parse(raw, {"extend-plan", "nop"})
    if isinstance(action, ExtendPlan):
        subsections = count_ranges(research)[1]
        fresh = _new_titles(action.subsections, state.outline, state.question)
        if len(fresh) < len(action.subsections):
            if len(fresh) >= subsections[0]:
                action = ExtendPlan(action.position, fresh)
            elif refused < research.max_retries:
                return Refused(_repeated_titles_reason(action, fresh), REPEATED_TITLE)
        problem = validate_extend_plan(action, state.outline, state.question, subsections, research.language)
        if problem and problem.code == ESSAY_PART:
            mended = ExtendPlan(action.position, _without_essay_parts(action.subsections, subsections[0]))
            still = validate_extend_plan(
                mended, state.outline, state.question, subsections, research.language
            )
            # As for an outline: mended at once when enough subsections remain, else on the last try.
            if still is not None and still.code == ESSAY_PART and refused >= research.max_retries:
                # The essay parts kept for want of others are named after the subject, as an
                # outline's are: a refused split ends the report's deepening (seen twice in the
                # README's main job: a split with an "Overview" ended it with no subsection).
                mended = ExtendPlan(
                    mended.position, _essay_parts_on_subject(mended.subsections, state.question)
                )
                still = validate_extend_plan(
                    mended, state.outline, state.question, subsections, research.language
                )
            if still is None:  # what is left is named after the subject below, as any split is
                action, problem = mended, None
            elif refused >= research.max_retries:
                return still
        if problem is None:
            # Mended at once, not asked for again: asked again, a small model answered with a stop
            # once in seven (the report's deepening ended there), and a re-ask costs an action.
            named = _named_after_subject(action.subsections, state.question, research)
            action = ExtendPlan(action.position, named)
        return problem or _grounded_extension(action, state)
    return action


REPEATED_TITLE = "repeated-title"
"""A split whose subsections repeat titles of the outline (its parent's own, or another part's)."""


def _new_titles(nodes: tuple[PlannedNode, ...], outline: Outline, question: str) -> tuple[PlannedNode, ...]:
    """The subsections whose titles no node of the outline (nor an earlier subsection) has.

    A small model split a part into a subsection titled as the part itself and another titled as
    the part's next sibling; each was searched and written again, and the report printed the
    same title twice, one heading under the other. Titles compare by their words, ignoring case
    and the subject label that `_named_after_subject` puts before some of them."""
    label = subject_label(question)
    known = {_title_words(located.node.title, label) for located in outline.walk()}
    fresh = []
    for node in nodes:
        words = _title_words(node.title, label)
        if words not in known:
            known.add(words)
            fresh.append(node)
    return tuple(fresh)


def _title_words(title: str, label: str) -> tuple[str, ...]:
    words, prefix = _WORDS.findall(title.casefold()), _WORDS.findall(label.casefold())
    while prefix and len(words) > len(prefix) and words[: len(prefix)] == prefix:
        words = words[len(prefix) :]  # "Gold: Bimetallism" and "Bimetallism" are one title
    return tuple(words)


_WORDS = re.compile(r"[^\W_]+")


def _repeated_titles_reason(action: ExtendPlan, fresh: tuple[PlannedNode, ...]) -> str:
    repeated = next(node.title for node in action.subsections if node not in fresh)
    return (
        f"“{repeated}” is already a title in the outline: give {action.position} subsections that are "
        "new, distinct facets of it, each with a title of its own"
    )


def _essay_parts_on_subject(nodes: tuple[PlannedNode, ...], question: str) -> tuple[PlannedNode, ...]:
    """The nodes, with the subject's first words before each essay-part title ("Tariffs: Overview")."""
    label = subject_label(question)
    return tuple(
        replace(node, title=f"{label}: {node.title}") if is_essay_part(node.title) else node for node in nodes
    )


def _grounded_extension(action: ExtendPlan, state: RunState) -> ExtendPlan:
    return ExtendPlan(action.position, _grounded_nodes(action.subsections, _known(state)))


def read_split(
    raw: str, state: RunState, research: ResearchSettings, subsections: tuple[int, int], refused: int = 0
) -> Action | Refused:
    """The split of the node the user chose (`state.target`): an extend-plan of that very node,
    with `subsections` (low, high) new parts; a stop or another node is refused."""
    assert state.outline is not None
    action = parse(raw, {"extend-plan", "nop"})
    if isinstance(action, Nop):
        return Refused(f"the user asked for {state.target} to be split; do not stop, answer with extend-plan")
    if not isinstance(action, ExtendPlan):
        return action
    if parse_position(action.position) != parse_position(state.target):
        return Refused(f"split {state.target}, the part the user chose (not {action.position})")
    bounded = research.model_copy(update={"max_subsections": subsections[1]})
    decision = read_extend(raw, state, bounded, refused)
    if isinstance(decision, ExtendPlan) and len(decision.subsections) < subsections[0]:
        return Refused(
            f"give {state.target} exactly {subsections[0]} subsections (got {len(decision.subsections)})"
        )
    return decision


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
