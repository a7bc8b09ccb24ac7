"""The action dialect: turning a model's reply into a typed action, or into a reason it was refused.

Every reply is `<thought>…</thought><action>…</action>`. The action is JSON for `search`,
`init-plan`, `extend-plan` and `nop`, and raw Markdown for `write`, which cites evidence as
`\\cite{textid3}` or `\\cite{textid1, textid4}`. This is the protocol the published AgentCPM-Report
weights were trained on, so the key sets and names are kept exactly.

Two steps, both total functions (they never raise on model output):
- `parse` is tolerant of what models really send: `<think>` blocks, code fences, text around the
  JSON, trailing commas, a missing closing tag, citation keys written in prose.
- `validate_*` checks the rules of the method (counts, depth, positions, citations, language) and
  returns a reason a model can act on when it is fed back.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from deepdraft.core.citations import CITE, cited_keys, normalise_citations
from deepdraft.core.evidence import KEY_PREFIX
from deepdraft.core.language import CJK_THRESHOLD, cjk_share, wants_chinese
from deepdraft.core.outline import MAX_DEPTH, Outline, format_position, parse_position
from deepdraft.core.scripts import CJK
from deepdraft.protocol.json_reply import find_json, has_json_object
from deepdraft.protocol.prompts import WRITE_EXAMPLE_ACTION
from deepdraft.protocol.topic import is_essay_part, names_subject, subject_phrase, subject_terms
from deepdraft.protocol.write_checks import LOOP_COUNT, LOOP_RUN

ActionName = Literal["search", "init-plan", "extend-plan", "nop", "write"]

MAX_KEYWORDS = 5
SECTIONS_RANGE = (3, 12)
SUBSECTIONS_RANGE = (2, 7)
CITATIONS_RANGE = (1, 12)
MIN_WRITE_CHARS = 50


@dataclass(frozen=True)
class Search:
    keywords: tuple[str, ...]


@dataclass(frozen=True)
class PlannedNode:
    title: str
    plan: str
    children: tuple[PlannedNode, ...] = ()


@dataclass(frozen=True)
class InitPlan:
    title: str
    sections: tuple[PlannedNode, ...]


@dataclass(frozen=True)
class ExtendPlan:
    position: str
    subsections: tuple[PlannedNode, ...]


@dataclass(frozen=True)
class Nop:
    pass


@dataclass(frozen=True)
class Write:
    text: str
    citations_attached: bool = False
    """True when deepdraft placed the citations (see `attach_citations`), not the model."""
    sentences_cited: int = 0
    """Sentences the model left uncited beside cited ones that deepdraft cited (`cite_uncited`)."""


Action = Search | InitPlan | ExtendPlan | Nop | Write


@dataclass(frozen=True)
class Refused:
    """A reply that cannot be used, and why (phrased for the model to read)."""

    reason: str
    code: str = ""
    """A stable name for the reasons code acts on (e.g. NO_CITATIONS)."""


NO_CITATIONS = "no-citations"
OFF_SUBJECT = "off-subject"  # a report title that does not name what the request is about
ESSAY_PART = "essay-part"  # a section titled as a part of an essay ("Background"), not a topic
TITLES_OFF_SUBJECT = "titles-off-subject"  # too few section titles name what the request is about
TOO_MANY_CITATIONS = "too-many-citations"
LOOPING = "looping"  # a text that repeats itself over and over
FOREIGN_KEYS = "foreign-keys"  # citations of passages this write was not shown


@dataclass(frozen=True)
class Reply:
    thought: str
    body: str | None  # what stood inside <action>…</action>; None when nothing usable was found


# ---- parsing ---------------------------------------------------------------------------------

# Hidden reasoning some models emit before answering (an unclosed block runs to the end).
_THINK = re.compile(r"<(think|thinking|reasoning)>.*?(?:</\1>|$)", re.DOTALL | re.IGNORECASE)
_THOUGHT = re.compile(r"<thought>(.*?)(?:</thought>|(?=<action>)|$)", re.DOTALL | re.IGNORECASE)
_ACTION = re.compile(r"<action>(.*?)(?:</action>|$)", re.DOTALL | re.IGNORECASE)


def split_reply(raw: str) -> Reply:
    """Separate the thought from the action body, ignoring hidden reasoning blocks."""
    text = _THINK.sub("", raw or "")
    thought_match = _THOUGHT.search(text)
    thought = thought_match.group(1).strip() if thought_match else ""
    action_match = _ACTION.search(text)
    if action_match:
        body = action_match.group(1).strip()
    else:
        # No <action> tag: take whatever follows the thought. Small models often drop the tags.
        rest = text[thought_match.end() :] if thought_match else text
        body = re.sub(r"</?thought>", "", rest).strip()
    return Reply(thought=thought, body=body or None)


def parse_json_action(body: str) -> dict[str, Any] | Refused:
    data = find_json(body, (dict,))
    if isinstance(data, dict):
        return data
    if not has_json_object(body):
        return Refused('the action must be a JSON object, e.g. {"name": "search", ...}')
    return Refused("the action is not valid JSON; write one JSON object with double-quoted keys")


def parse(raw: str, expected: Collection[ActionName]) -> Action | Refused:
    """Read a reply into an action of one of the `expected` kinds (structure only, no rules)."""
    reply = split_reply(raw)
    if reply.body is None:
        return Refused("the reply has no <action>…</action> block")
    if "write" in expected:
        return Write(text=normalise_citations(reply.body))
    data = parse_json_action(reply.body)
    if isinstance(data, Refused):
        return data
    name = data.get("name")
    if not isinstance(name, str) or name not in expected:
        allowed = " or ".join(f'"{n}"' for n in sorted(expected))  # stable text: prompts are cache keys
        return Refused(f"the action name must be {allowed}, not {json.dumps(name, ensure_ascii=False)}")
    return _typed(name, data)


_KEYS: dict[str, set[str]] = {
    "search": {"name", "keywords"},
    "init-plan": {"name", "title", "sections"},
    "extend-plan": {"name", "position", "subsections"},
    "nop": {"name"},
}


def _typed(name: str, data: dict[str, Any]) -> Action | Refused:
    if set(data) != _KEYS[name]:
        expected = ", ".join(sorted(_KEYS[name]))
        return Refused(f'"{name}" takes exactly the keys {expected} (got {", ".join(sorted(data))})')
    if name == "nop":
        return Nop()
    if name == "search":
        keywords = data["keywords"]
        if not isinstance(keywords, list) or not all(isinstance(k, str) for k in keywords):
            return Refused('"keywords" must be a list of strings')
        return Search(tuple(k.strip() for k in keywords))
    nodes = _planned_nodes(data["sections" if name == "init-plan" else "subsections"], allow_children=False)
    if isinstance(nodes, Refused):
        return nodes
    if name == "init-plan":
        if not isinstance(data["title"], str):
            return Refused('"title" must be a string')
        return InitPlan(data["title"].strip(), nodes)
    if not isinstance(data["position"], str):
        return Refused('"position" must be a string such as "section-2"')
    return ExtendPlan(data["position"].strip(), nodes)


def _planned_nodes(value: Any, *, allow_children: bool) -> tuple[PlannedNode, ...] | Refused:
    if not isinstance(value, list):
        return Refused("sections must be a list of objects with a title and a plan")
    nodes = []
    for item in value:
        keys = {"title", "plan", "subsections"} if allow_children else {"title", "plan"}
        if not isinstance(item, dict) or not {"title", "plan"} <= set(item) or not set(item) <= keys:
            shown = ", ".join(f'"{k}"' for k in sorted(keys))
            return Refused(f"each section must be an object with exactly the keys {shown}")
        if not isinstance(item["title"], str) or not isinstance(item["plan"], str):
            return Refused("a section's title and plan must be strings")
        children: tuple[PlannedNode, ...] = ()
        if "subsections" in item:
            parsed = _planned_nodes(item["subsections"], allow_children=True)
            if isinstance(parsed, Refused):
                return parsed
            children = parsed
        nodes.append(PlannedNode(item["title"].strip(), item["plan"].strip(), children))
    return tuple(nodes)


def parse_full_plan(raw: str) -> InitPlan | Refused:
    """The plan-then-write baseline's outline: an init-plan whose sections may nest subsections."""
    reply = split_reply(raw)
    if reply.body is None:
        return Refused("the reply has no <action>…</action> block")
    data = parse_json_action(reply.body)
    if isinstance(data, Refused):
        return data
    if data.get("name") != "init-plan" or set(data) != _KEYS["init-plan"]:
        return Refused('the action must be {"name": "init-plan", "title": ..., "sections": [...]}')
    nodes = _planned_nodes(data["sections"], allow_children=True)
    if isinstance(nodes, Refused):
        return nodes
    if not isinstance(data["title"], str):
        return Refused('"title" must be a string')
    return InitPlan(data["title"].strip(), nodes)


def language_problem(text: str, question: str, language: str | None = None) -> str | None:
    """Reject only text clearly in the wrong script; quoted names in another script pass."""
    share = cjk_share(text)
    chinese = wants_chinese(question, language)
    if chinese and share < CJK_THRESHOLD:
        return "write in Chinese" if language else "the question is in Chinese, so write in Chinese"
    if not chinese and share > CJK_THRESHOLD:
        wanted = language or "the language of the question"
        return f"write in {wanted}, not in Chinese"
    return None


# ---- validation ------------------------------------------------------------------------------


def validate_search(action: Search) -> Refused | None:
    if not action.keywords or any(not k for k in action.keywords):
        return Refused('"keywords" must hold 1 to 5 non-empty strings')
    if len(action.keywords) > MAX_KEYWORDS:
        return Refused(f'"keywords" holds {len(action.keywords)} entries; give at most {MAX_KEYWORDS}')
    return None


def _validate_nodes(
    nodes: Sequence[PlannedNode],
    bounds: tuple[int, int],
    what: str,
    question: str,
    language: str | None = None,
) -> Refused | None:
    low, high = bounds
    if not low <= len(nodes) <= high:
        return Refused(f"give between {low} and {high} {what} (got {len(nodes)})")
    for node in nodes:
        if not node.title or not node.plan:
            return Refused(f"every one of the {what} needs a non-empty title and plan")
        if _PLACEHOLDER.search(node.title) or _PLACEHOLDER.search(node.plan):
            return Refused(
                f"replace the <…> placeholders of the example with real titles and plans for the {what}"
            )
        problem = language_problem(f"{node.title} {node.plan}", question, language)
        if problem:
            return Refused(f"{what} “{node.title}”: {problem}")
    for node in nodes:
        if is_essay_part(node.title):
            return Refused(essay_part_reason(node.title, what, question), ESSAY_PART)
    return None


def essay_part_reason(title: str, what: str, question: str) -> str:
    subject = subject_phrase(question)
    aspect = f"one aspect of {subject}" if subject else "one aspect of the request"
    return (
        f"“{title}” is a part of an essay, not a topic: title each of the {what} after {aspect} "
        "that the evidence shows (the summary and the conclusion are written separately)"
    )


def _subject_words(question: str, language: str | None) -> list[str]:
    """The request's subject words a title is held to; none for a report asked in another script
    than the question's, which cannot repeat its words."""
    translated = wants_chinese(question, language) != wants_chinese(question)
    return [] if translated else subject_terms(question)


def check_subject_titles(
    nodes: Sequence[PlannedNode], question: str, what: str, share: float, language: str | None = None
) -> Refused | None:
    """Refused when fewer than `share` of the nodes' titles name the request's subject (a report
    asked in another script than the question's is not held to its words)."""
    subject = _subject_words(question, language)
    off = [node.title for node in nodes if subject and not names_subject(node.title, subject)]
    if not off or len(nodes) - len(off) >= share * len(nodes):
        return None
    return Refused(
        f"“{off[0]}” does not say what it has to do with the request: title each of the {what} "
        f"after one aspect of {subject_phrase(question)}, in those words",
        TITLES_OFF_SUBJECT,
    )


_PLACEHOLDER = re.compile(r"<[^<>]{1,60}>")  # the prompts' examples use <…> for what to fill in


def validate_init_plan(
    action: InitPlan, question: str, sections: tuple[int, int] = SECTIONS_RANGE, language: str | None = None
) -> Refused | None:
    if not action.title:
        return Refused('"title" must not be empty')
    if _PLACEHOLDER.search(action.title):
        return Refused("replace the <…> placeholder of the example with a real report title")
    if problem := language_problem(action.title, question, language):
        return Refused(f"title: {problem}")
    if refused := _validate_nodes(action.sections, sections, "sections", question, language):
        return refused
    subject = _subject_words(question, language)
    if subject and not names_subject(action.title, subject):
        return Refused(
            f"the title “{action.title}” does not say what the report is about: "
            f"put the request's subject ({subject_phrase(question)}) in the title",
            OFF_SUBJECT,
        )
    return None


def validate_full_plan(
    action: InitPlan,
    question: str,
    sections: tuple[int, int] = SECTIONS_RANGE,
    subsections: tuple[int, int] = SUBSECTIONS_RANGE,
    language: str | None = None,
) -> Refused | None:
    """Baseline outline: 3–12 sections, nested at most three levels, 2–7 children per split."""
    refused = validate_init_plan(action, question, sections, language)
    if refused:
        return refused

    def check(nodes: Sequence[PlannedNode], depth: int) -> Refused | None:
        for node in nodes:
            if not node.children:
                continue
            if depth >= MAX_DEPTH:
                return Refused(f"the outline has at most {MAX_DEPTH} levels")
            problem = _validate_nodes(node.children, subsections, "subsections", question, language)
            if problem or (problem := check(node.children, depth + 1)):
                return problem
        return None

    return check(action.sections, 1)


def validate_extend_plan(
    action: ExtendPlan,
    outline: Outline,
    question: str,
    subsections: tuple[int, int] = SUBSECTIONS_RANGE,
    language: str | None = None,
) -> Refused | None:
    numbers = parse_position(action.position)
    if numbers is None:
        return Refused(f'"position" must look like "section-2" or "section-2.1" (got "{action.position}")')
    if len(numbers) >= MAX_DEPTH:
        return Refused(f"only level-1 and level-2 nodes can be split; {format_position(numbers)} is deeper")
    target = outline.find(action.position)
    if target is None:
        return Refused(f"there is no {format_position(numbers)} in the outline")
    if target.node.children:
        return Refused(f"{target.position} already has subsections; choose a node without any")
    return _validate_nodes(action.subsections, subsections, "subsections", question, language)


def validate_write(
    action: Write, question: str, evidence_keys: Collection[str], language: str | None = None
) -> Refused | None:
    text = action.text.strip()
    if len(text) <= MIN_WRITE_CHARS:
        return Refused(f"the section text is too short ({len(text)} characters); write a full section")
    if echoes_example(text):
        return Refused(
            "your text repeats the worked example of the instructions, which is about another subject; "
            "write this part about its own topic, from the evidence shown"
        )
    citations = cited_keys(text)
    low, high = CITATIONS_RANGE
    if not low <= len(citations) <= high:
        return Refused(
            f"use between {low} and {high} \\cite{{...}} citations (found {len(citations)}); "
            "cite the evidence keys shown, like \\cite{textid1}",
            NO_CITATIONS if not citations else TOO_MANY_CITATIONS,
        )
    unknown = sorted({key for group in citations for key in group} - set(evidence_keys))
    if unknown:
        allowed = ", ".join(sorted(evidence_keys, key=_key_number)) or "none"
        return Refused(
            f"cite only the evidence shown now ({allowed}); not {', '.join(unknown)}", FOREIGN_KEYS
        )
    if any(not group for group in citations):
        return Refused("a \\cite{} holds no evidence key")
    if problem := repetition(text):
        return Refused(problem, LOOPING)
    if problem := language_problem(text, question, language):
        return Refused(problem)
    return None


_ECHO_WORDS = 6  # a run of this many words of the worked example ...


def echoes_example(text: str) -> bool:
    """Whether `text` repeats the write prompt's worked example (a run of six of its words)."""
    return shares_run(text, WRITE_EXAMPLE_ACTION, _ECHO_WORDS)


def shares_run(text: str, other: str, size: int) -> bool:
    """Whether `text` and `other` share a run of `size` words (citations aside, any case)."""

    def runs(value: str) -> set[tuple[str, ...]]:
        words = [w.lower() for w in _WORD.findall(CITE.sub(" ", value))]
        return {tuple(words[i : i + size]) for i in range(len(words) - size + 1)}

    return not runs(text).isdisjoint(runs(other))


_WORD = re.compile(r"[^\W_]+", re.UNICODE)
_CJK = re.compile(rf"[{CJK}]")


def repetition(text: str) -> str | None:
    """Why `text` looks degenerate (a model stuck in a loop), or None.

    Small models at low temperature can repeat one phrase until the token limit. Two signs: the
    same run of six words three times or more, or a long text made of very few distinct words.
    CJK text has no spaces, so each character counts as a word there.
    """
    words = [w.lower() for w in _WORD.findall(CITE.sub(" ", text))]
    words = [piece for w in words for piece in (list(w) if _CJK.search(w) else [w])]
    seen: dict[tuple[str, ...], int] = {}
    for i in range(len(words) - LOOP_RUN + 1):
        gram = tuple(words[i : i + LOOP_RUN])
        seen[gram] = seen.get(gram, 0) + 1
        if seen[gram] >= LOOP_COUNT:
            return f'the text repeats itself ("{" ".join(gram)}" again and again); make each point once'
    if len(words) >= 60 and len(set(words)) / len(words) < 0.25:
        return "the text uses very few distinct words over and over; write varied, informative prose"
    return None


def _key_number(key: str) -> int:
    digits = key[len(KEY_PREFIX) :]
    return int(digits) if digits.isdigit() else 0
