"""Every reward of spec §5.4 (atomic skills) and §5.5 (whole report), as plain functions.

Rule-based rewards are exact and need nothing but their arguments, so any RL framework (TRL, verl,
a custom loop) can call them. Judge-based rewards take an eval `Judge` (an `LLM` behind the cache,
with retries; see `deepdraft.eval.judge`) and return None when the judgment failed — a failure is
never silently scored as 0; `AtomicReward` then leaves that component out of the mean.

All rewards lie in [0, 1]. The paper does not say how components are combined; `AtomicReward`
takes their plain mean, after a format gate: a reply that is not the expected action scores 0.

| ability (actions)          | component            | function                 |
| every action               | format validity      | `format_validity`        |
| planning (init, extend)    | basic properties     | `planning_basic`         |
|                            | holistic quality     | `planning_quality`       |
|                            | faithfulness         | `planning_faithfulness`  |
| retrieval (search)         | relevance recall     | `retrieval_recall`       |
| writing (write)            | basic properties     | `writing_basic`          |
|                            | holistic quality     | `writing_quality`        |
|                            | faithfulness         | `writing_faithfulness`   |
|                            | citation precision   | `citation_precision`     |
| decision (terminate)       | accuracy             | `decision_accuracy`      |
| whole report (pipeline RL) | weighted checklist   | `ChecklistScorer`        |
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from statistics import fmean
from typing import Any, Literal, Protocol

from deepdraft.core.citations import cited_keys
from deepdraft.core.evidence import select_passages
from deepdraft.core.tokens import count_tokens
from deepdraft.eval.data import DIMENSIONS, Checklist
from deepdraft.eval.judge import Judge, JudgmentError, read_number, require_dict
from deepdraft.ports import Retriever
from deepdraft.protocol.actions import (
    SECTIONS_RANGE,
    SUBSECTIONS_RANGE,
    ActionName,
    ExtendPlan,
    InitPlan,
    Nop,
    PlannedNode,
    Refused,
    Search,
    Write,
    language_problem,
    parse,
    parse_json_action,
    split_reply,
)
from deepdraft.train.queries import Query

__all__ = [
    "AtomicReward",
    "ChecklistScorer",
    "ReportScorer",
    "checklist_score",
    "citation_precision",
    "decision_accuracy",
    "expected_kinds",
    "format_validity",
    "passage_id",
    "planning_basic",
    "planning_faithfulness",
    "planning_quality",
    "retrieval_recall",
    "writing_basic",
    "writing_faithfulness",
    "writing_quality",
]

WRITE_TOKENS = (100, 2000)
WRITE_CITATIONS = (0, 12)
Decision = Literal["extend", "terminate"]


def passage_id(text: str) -> str:
    """How passages are compared across runs: the SHA-1 of their stripped text."""
    return hashlib.sha1(text.strip().encode("utf-8")).hexdigest()


# ---- rule-based ---------------------------------------------------------------------------------------


_KINDS: dict[str, frozenset[ActionName]] = {
    "init-plan": frozenset({"init-plan"}),
    "search": frozenset({"search"}),
    "write": frozenset({"write"}),
    # A deepening step may stop instead: that is a (right or wrong) decision, not a format error.
    "extend-plan": frozenset({"extend-plan", "nop"}),
    "terminate": frozenset({"extend-plan", "nop"}),
}


def expected_kinds(action: str) -> frozenset[ActionName]:
    """The action names a reply to a sample of type `action` (a reference's "action") may take."""
    try:
        return _KINDS[action]
    except KeyError:
        raise ValueError(f"no reward for action {action!r}") from None


def format_validity(reply: str, action: str) -> float:
    """Whether the reply is an action of the kind asked for: 1.0 if it parses as one, else 0.

    Between the two, 0.5 for a reply that holds a JSON object that is not such an action (wrong
    name, keys or value types): graded so that a small model whose replies are all invalid still
    shows GRPO which of them came closer. Structure only — the policy's rules (counts, language,
    citations) are the other components' job.
    """
    if not isinstance(parse(reply, expected_kinds(action)), Refused):
        return 1.0
    body = split_reply(reply).body
    if action != "write" and body is not None and isinstance(parse_json_action(body), dict):
        return 0.5
    return 0.0


def _plan_nodes(action: InitPlan | ExtendPlan) -> tuple[PlannedNode, ...]:
    return action.sections if isinstance(action, InitPlan) else action.subsections


def planning_basic(reply: str, question: str, language: str | None = None) -> float:
    """Planning basic properties: mean of (count in range, language consistent); 0 if not a plan.

    Count ranges: 3–12 sections for an initial outline, 2–7 subsections for a deepening step.
    The language check is the policy's own (character statistics over titles and plans).
    """
    action = parse(reply, {"init-plan", "extend-plan"})
    if not isinstance(action, InitPlan | ExtendPlan):
        return 0.0
    nodes = _plan_nodes(action)
    low, high = SECTIONS_RANGE if isinstance(action, InitPlan) else SUBSECTIONS_RANGE
    count_ok = low <= len(nodes) <= high
    title = action.title if isinstance(action, InitPlan) else ""
    text = " ".join([title, *(f"{n.title} {n.plan}" for n in nodes)])
    language_ok = language_problem(text, question, language) is None
    return (count_ok + language_ok) / 2


def retrieval_recall(found: Collection[str], golden: Collection[str]) -> float:
    """Share of the teacher's ("golden") passages that the policy's search also retrieved.

    No golden passages: nothing could be missed, 1.0.
    """
    golden_set = set(golden)
    if not golden_set:
        return 1.0
    return len(golden_set & set(found)) / len(golden_set)


def writing_basic(
    text: str, question: str, language: str | None = None, count: Callable[[str], int] = count_tokens
) -> float:
    """Writing basic properties: mean of (100–2000 tokens, 0–12 citations, language consistent)."""
    tokens = count(text)
    length_ok = WRITE_TOKENS[0] <= tokens <= WRITE_TOKENS[1]
    citations_ok = WRITE_CITATIONS[0] <= len(cited_keys(text)) <= WRITE_CITATIONS[1]
    language_ok = language_problem(text, question, language) is None
    return (length_ok + citations_ok + language_ok) / 3


def citation_precision(text: str, available: Collection[str], golden: Collection[str]) -> float:
    """0 if any cited key is not in the evidence shown (hallucinated), else F1 against the teacher's.

    Neither the policy nor the teacher cited anything: they agree, 1.0.
    """
    used = {key for group in cited_keys(text) for key in group}
    if used - set(available):
        return 0.0
    reference = set(golden)
    if not used and not reference:
        return 1.0
    overlap = len(used & reference)
    if overlap == 0:
        return 0.0
    precision, recall = overlap / len(used), overlap / len(reference)
    return 2 * precision * recall / (precision + recall)


def decision_accuracy(reply: str, label: Decision) -> float:
    """1.0 if the deepen-or-stop decision matches the pruned label, else 0.0 (also when unreadable)."""
    action = parse(reply, {"extend-plan", "nop"})
    decided = "extend" if isinstance(action, ExtendPlan) else "terminate" if isinstance(action, Nop) else None
    return 1.0 if decided == label else 0.0


# ---- judge-based ----------------------------------------------------------------------------------------


def _rubric_reader(keys: Sequence[str]) -> Callable[[Any], float]:
    """Reads {"major_errors": [...], "minor_errors": [...], "<key>": 1..5, ...} → mean mapped to [0, 1]."""

    def read(value: Any) -> float:
        data = require_dict(value)
        scores = [read_number(data.get(key), f"`{key}`", 1, 5) for key in keys]
        return (fmean(scores) - 1) / 4

    return read


def _rubric_schema(keys: Sequence[str]) -> dict[str, Any]:
    properties: dict[str, Any] = {
        "major_errors": {"type": "array", "items": {"type": "string"}},
        "minor_errors": {"type": "array", "items": {"type": "string"}},
    }
    properties.update({key: {"type": "integer", "minimum": 1, "maximum": 5} for key in keys})
    return {"type": "object", "properties": properties, "required": [*properties]}


_PLAN_CRITERIA = ("guidance", "hierarchy", "coherence")
_PLAN_QUALITY = """\
Grade a report outline (or the subsections added to one) written for this request:
<request>{question}</request>

The outline to grade:
<response>{response}</response>

An outline that deserves the top score, for comparison:
<reference>{reference}</reference>

Rubric, each criterion scored 1 (poor) to 5 (as good as the reference or better):
- guidance: do the titles and plans tell a writer precisely what each part must contain?
- hierarchy: are the parts at a sensible level of detail, neither overlapping nor too coarse?
- coherence: do the parts follow a logical order that answers the request as a whole?
First list the major and the minor errors, then score.
Answer with JSON only: {{"major_errors": [...], "minor_errors": [...], "guidance": n, "hierarchy": n, \
"coherence": n}}"""

_WRITE_CRITERIA = ("relevance", "coverage", "depth", "novelty")
_WRITE_QUALITY = """\
Grade one section of a research report written for this request:
<request>{question}</request>
The section is titled "{title}". Its text:
<response>{response}</response>

A version of the section that deserves the top score, for comparison:
<reference>{reference}</reference>

Rubric, each criterion scored 1 (poor) to 5 (excellent):
- relevance: does it stay on the section's subject and the request?
- coverage: does it cover the important aspects of its subject?
- depth: does it analyse, compare and explain rather than list?
- novelty: does it offer non-obvious points or connections?
First list the major and the minor errors, then score.
Answer with JSON only: {{"major_errors": [...], "minor_errors": [...], "relevance": n, "coverage": n, \
"depth": n, "novelty": n}}"""


def planning_quality(judge: Judge, question: str, response: str, reference: str, tag: str) -> float | None:
    """Planning holistic quality: 1–5 rubric against a reference outline, mapped to [0, 1]."""
    prompt = _PLAN_QUALITY.format(question=question, response=response, reference=reference)
    judged = judge.ask(
        prompt,
        _rubric_reader(_PLAN_CRITERIA),
        tag=f"{tag}/plan-quality",
        schema=_rubric_schema(_PLAN_CRITERIA),
    )
    return judged.value


def writing_quality(
    judge: Judge, question: str, title: str, response: str, reference: str, tag: str
) -> float | None:
    """Writing holistic quality: 1–5 rubric on relevance, coverage, depth, novelty, mapped to [0, 1]."""
    prompt = _WRITE_QUALITY.format(question=question, title=title, response=response, reference=reference)
    judged = judge.ask(
        prompt,
        _rubric_reader(_WRITE_CRITERIA),
        tag=f"{tag}/write-quality",
        schema=_rubric_schema(_WRITE_CRITERIA),
    )
    return judged.value


_CLAIMS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "claims": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"claim": {"type": "string"}, "supported": {"type": "boolean"}},
                "required": ["claim", "supported"],
            },
        }
    },
    "required": ["claims"],
}


def _supported_share(value: Any) -> float:
    claims = require_dict(value).get("claims")
    if not isinstance(claims, list):
        raise JudgmentError("`claims` must be a list")
    verdicts = []
    for number, item in enumerate(claims, 1):
        verdict = require_dict(item, f"claim {number}").get("supported")
        if not isinstance(verdict, bool):
            raise JudgmentError(f"claim {number}: `supported` must be true or false")
        verdicts.append(verdict)
    return fmean(verdicts) if verdicts else 1.0  # a text that claims nothing claims nothing false


_PLAN_FAITHFULNESS = """\
Below is a report outline written for the request "{question}". Split its titles and plans into \
the factual claims they make about the world (names, events, figures, relations; not intentions \
such as "this section will discuss"). For each claim say whether it is true and reliable to the \
best of your knowledge.
<outline>{response}</outline>
Answer with JSON only: {{"claims": [{{"claim": "...", "supported": true}}, ...]}} (an empty list \
if it makes no factual claim)."""

_WRITE_FAITHFULNESS = """\
Below is a section of a report and the passages it cites (by key). Split the section into its \
factual claims. For each, say whether the passages its citations point to support it; a claim \
with no citation, or citing a passage that does not say it, is not supported.
<section>{text}</section>
<passages>
{passages}
</passages>
Answer with JSON only: {{"claims": [{{"claim": "...", "supported": true}}, ...]}}"""


def planning_faithfulness(judge: Judge, question: str, response: str, tag: str) -> float | None:
    """Planning faithfulness (FActScore-style): share of the plan's factual claims judged reliable."""
    prompt = _PLAN_FAITHFULNESS.format(question=question, response=response)
    return judge.ask(prompt, _supported_share, tag=f"{tag}/plan-faith", schema=_CLAIMS_SCHEMA).value


def writing_faithfulness(judge: Judge, text: str, evidence: Mapping[str, str], tag: str) -> float | None:
    """Writing faithfulness: share of the section's claims supported by the passages they cite."""
    cited = dict.fromkeys(key for group in cited_keys(text) for key in group)
    passages = "\n\n".join(f"[{key}] {evidence[key]}" for key in cited if key in evidence) or "(none)"
    prompt = _WRITE_FAITHFULNESS.format(text=text, passages=passages)
    return judge.ask(prompt, _supported_share, tag=f"{tag}/write-faith", schema=_CLAIMS_SCHEMA).value


# ---- the report-level reward (pruning and pipeline RL) ----------------------------------------------


class ReportScorer(Protocol):
    """Scores a whole report for a query in [0, 1]; None when the judgment failed."""

    def score(self, query: Query, markdown: str) -> float | None: ...


def checklist_score(checklist: Checklist, scores: Mapping[int, float]) -> float:
    """Σ_d W_d · (Σ_c w_c s_c / Σ_c w_c) / 10, with criteria numbered 1… in `checklist.criteria` order.

    `scores` holds the judge's 0–10 score per criterion number; every criterion must be scored.
    """
    missing = [n for n in range(1, len(checklist.criteria) + 1) if n not in scores]
    if missing:
        raise JudgmentError(f"criteria {', '.join(map(str, missing))} were not scored")
    total = 0.0
    for dimension in DIMENSIONS:
        numbered = [(n, c) for n, c in enumerate(checklist.criteria, 1) if c.dimension == dimension]
        weight = sum(c.weight for _, c in numbered)
        if not numbered or weight <= 0:
            continue
        mean = sum(c.weight * scores[n] for n, c in numbered) / weight
        total += checklist.dimension_weights.get(dimension, 0.0) * mean
    return total / 10


_CHECKLIST_PROMPT = """\
Score the research report below against each numbered criterion, independently, from 0 to 10 \
(decimals allowed): 0–2 very poor, 2–4 poor, 4–6 average, 6–8 good, 8–10 excellent. Judge content, \
not length.

<request>{question}</request>

<report>
{report}
</report>

Criteria:
{criteria}

Answer with JSON only: {{"scores": [{{"id": 1, "score": 6.5}}, ...]}} with one entry per criterion."""


class ChecklistScorer:
    """The report-level reward: a judge scores the report on the query's weighted checklist.

    Unlike RACE it needs no reference report (none exists for training queries): each criterion
    is scored on an absolute 0–10 scale and combined with the checklist's weights
    (`checklist_score`). The same scorer prunes trajectories and rewards whole-pipeline RL.
    `max_report_tokens` keeps the judge's prompt bounded: longer reports are cut at the end.
    """

    def __init__(self, judge: Judge, max_report_tokens: int = 24_000) -> None:
        self.judge = judge
        self.max_report_tokens = max_report_tokens

    def score(self, query: Query, markdown: str) -> float | None:
        checklist = query.checklist
        if checklist is None:
            raise JudgmentError(f"query {query.id} has no checklist to score against")
        criteria = "\n".join(
            f"{n}. [{c.dimension}] {c.text}" + (f" — {c.explanation}" if c.explanation else "")
            for n, c in enumerate(checklist.criteria, 1)
        )
        report = (
            markdown
            if count_tokens(markdown) <= self.max_report_tokens
            else _cut(markdown, self.max_report_tokens)
        )

        def read(value: Any) -> float:
            entries = require_dict(value).get("scores")
            if not isinstance(entries, list):
                raise JudgmentError("`scores` must be a list")
            scores: dict[int, float] = {}
            for number, entry in enumerate(entries, 1):
                item = require_dict(entry, f"score {number}")
                criterion = int(read_number(item.get("id"), f"score {number} id", 1, len(checklist.criteria)))
                scores[criterion] = read_number(item.get("score"), f"score {number}", 0, 10)
            return checklist_score(checklist, scores)

        digest = hashlib.sha1(markdown.encode("utf-8")).hexdigest()[:16]
        judged = self.judge.ask(
            _CHECKLIST_PROMPT.format(question=query.prompt, report=report, criteria=criteria),
            read,
            tag=f"train/report/{query.id}/{digest}",
            max_tokens=4096,
        )
        return judged.value


def _cut(text: str, budget: int) -> str:
    words = text.split(" ")
    while count_tokens(" ".join(words)) > budget and len(words) > 10:
        words = words[: int(len(words) * 0.9)]
    return " ".join(words) + "\n\n[… the rest of the report was cut for length]"


# ---- one scalar per action, for atomic-skill RL -----------------------------------------------------


@dataclass
class AtomicReward:
    """The ability-specific reward of one sampled action, given the sample's reference.

    `reference` is the JSON object `dataset.export` stores with each sample (the teacher's reply,
    its evidence and citations, the pruned decision label, …). Without a `judge` only the
    rule-based components count; without a `retriever` a search is scored on format alone.
    """

    judge: Judge | None = None
    retriever: Retriever | None = None

    def __call__(self, completion: str, reference: Mapping[str, Any], tag: str = "") -> float:
        action = reference["action"]
        question = str(reference["question"])
        language = reference.get("language") or None
        parsed = parse(completion, expected_kinds(action))
        components: list[float | None]
        if action == "terminate":
            components = [decision_accuracy(completion, "terminate")]
        elif action in ("init-plan", "extend-plan"):
            if not isinstance(parsed, InitPlan | ExtendPlan):
                # For a deepening step, stopping is still a (wrong) decision, not a format error.
                return 0.0
            components = [planning_basic(completion, question, language)]
            if action == "extend-plan":
                components.append(decision_accuracy(completion, "extend"))
            if self.judge is not None:
                body = _action_body(completion)
                teacher = _action_body(str(reference["teacher_reply"]))
                components += [
                    planning_quality(self.judge, question, body, teacher, tag),
                    planning_faithfulness(self.judge, question, body, tag),
                ]
        elif action == "search":
            if not isinstance(parsed, Search):
                return 0.0
            if self.retriever is None:
                return 1.0
            hits = [self.retriever.search(k, int(reference["hits_per_keyword"])) for k in parsed.keywords]
            found = [passage_id(p.text) for p in select_passages(hits, int(reference["budget"]))]
            components = [retrieval_recall(found, reference["golden_passages"])]
        elif action == "write":
            if not isinstance(parsed, Write):
                return 0.0
            evidence: dict[str, str] = dict(reference["evidence"])
            text = parsed.text
            components = [
                writing_basic(text, question, language),
                citation_precision(text, evidence, reference["teacher_citations"]),
            ]
            if self.judge is not None:
                teacher = _action_body(str(reference["teacher_reply"]))
                title = str(reference.get("title", ""))
                components += [
                    writing_quality(self.judge, question, title, text, teacher, tag),
                    writing_faithfulness(self.judge, text, evidence, tag),
                ]
        else:
            raise ValueError(f"no reward for action {action!r}")
        known = [c for c in components if c is not None]
        return fmean(known) if known else 0.0


def _action_body(reply: str) -> str:
    """What stood inside <action>…</action> (the whole reply when the tags are missing)."""
    start, end = reply.find("<action>"), reply.rfind("</action>")
    return reply[start + len("<action>") : end].strip() if start >= 0 and end > start else reply.strip()


def reference_of(row: Mapping[str, Any]) -> dict[str, Any]:
    """A sample's reference object (stored as JSON text so the dataset keeps one schema)."""
    value = row["reference"]
    return dict(json.loads(value) if isinstance(value, str) else value)
