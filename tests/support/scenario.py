"""A deterministic stand-in for a model that follows the WARP protocol.

`ScenarioModel` answers every request from what it shows (which action its reply shape asks for,
for which node, which evidence keys are listed: see request_kinds.py), never from a counter. So a run that is killed and resumed in
another process gets exactly the replies an uninterrupted run gets, and the final reports match.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from deepdraft.core.evidence import Passage, Source
from deepdraft.ports import ChatRequest
from tests.support.request_kinds import (
    classify,
    classify_body,
    evidence_keys,
    outline_positions,
    recognise,
    request_from_body,
    subsection_bounds,
)

__all__ = [
    "SOTU_LIKE",
    "ScenarioModel",
    "WordOverlapRetriever",
    "as_responder",
    "classify",
    "classify_body",
    "evidence_keys",
    "listed_keys",
    "outline_positions",
    "recognise",
]


def listed_keys(prompt: str) -> list[str]:
    """The keys a synthesis prompt allows: its one list of keys outside any `\\cite{...}`."""
    bare = re.sub(r"\\cite\{[^}]*\}", " ", prompt)
    return max(re.findall(r"textid\d+(?:, textid\d+)*", bare), key=len).split(", ")


@dataclass
class ScenarioModel:
    """Valid replies: 3 sections, one citation per write, `expansions` splits, then nop."""

    expansions: int = 2
    topic: str = "tariffs"

    def __call__(self, request: ChatRequest) -> str:
        prompt = request.messages[-1].content
        recognised = recognise(request)
        kind, target = recognised.kind, recognised.target
        if kind == "search":
            words = [self.topic] if target == "outline" else [self.topic, f"history {target}"]
            return _reply("search", {"name": "search", "keywords": words})
        if kind == "init-plan":
            sections = [
                {"title": f"Part {name}", "plan": f"Cover the {name} side of {self.topic}."}
                for name in ("early", "middle", "late")
            ]
            return _reply(
                "plan", {"name": "init-plan", "title": f"A report on {self.topic}", "sections": sections}
            )
        if kind == "full-plan":
            sub = [{"title": f"Aspect {i}", "plan": f"Aspect {i} of the part."} for i in (1, 2)]
            sections = [
                {"title": f"Part {name}", "plan": f"Cover {name}.", "subsections": sub}
                for name in ("early", "middle", "late")
            ]
            return _reply(
                "plan", {"name": "init-plan", "title": f"A report on {self.topic}", "sections": sections}
            )
        if kind == "write":
            keys = evidence_keys(prompt)
            cite = ", ".join(keys[:2])
            return (
                f"<thought>Use {cite}.</thought><action>This part ({target}) explains how {self.topic} "
                f"were argued over, as the sources show \\cite{{{cite}}}. It adds context.</action>"
            )
        if kind == "write-passage":  # report the passage's opening words, framed as a small model does
            key = evidence_keys(prompt)[0]
            passage = prompt.split(f"bibkey:{key}\n", 1)[1].split("\n")[0]
            words = " ".join(passage.split()[:10]).rstrip(".,;")
            return f"The source states that {words}, on {self.topic}. It adds context."
        if kind == "extend-plan" and target != "outline":  # the node the user chose: split it
            low, _ = subsection_bounds(request)
            subsections = [
                {"title": f"Facet {i} of {target}", "plan": f"Go deeper into {target}, point {i}."}
                for i in range(1, low + 1)
            ]
            return _reply("split", {"name": "extend-plan", "position": target, "subsections": subsections})
        if kind == "extend-plan":
            positions = outline_positions(prompt)
            done = sum(1 for p in positions if p.count(".") >= 1) // 2
            if done >= self.expansions:
                return _reply("stop", {"name": "nop"})
            top = [p for p in positions if "." not in p]
            free = [p for p in top if not any(q.startswith(p + ".") for q in positions)]
            subsections = [
                {"title": f"Detail {i} of {free[0]}", "plan": f"Go deeper, point {i}."} for i in (1, 2)
            ]
            return _reply(
                "deepen",
                {"name": "extend-plan", "position": f"section-{free[0]}", "subsections": subsections},
            )
        if kind in ("verify", "constraint-check"):  # every claim holds
            verdicts = [{"claim": n, "supported": "yes"} for n in range(1, recognised.count + 1)]
            return json.dumps({"verdicts": verdicts})
        if kind == "repair":  # restate the first passage's opening words (fewer than a pasted run)
            keys = evidence_keys(prompt)
            passage = prompt.split(f"bibkey:{keys[0]}\n", 1)[1].split("\n")[0]
            words = " ".join(passage.split()[:10]).rstrip(".,;")
            return f"<thought>restate</thought><action>{words} \\cite{{{', '.join(keys)}}}.</action>"
        if kind in ("summary", "conclusion"):
            keys = listed_keys(prompt)
            first, last = keys[0], keys[-1]
            text = (
                f"Across the record, {self.topic} were argued over as a matter of revenue and of protection "
                f"\\cite{{{first}}}. Later addresses weighed the burden on farmers and the wish for open "
                f"markets against the needs of industry \\cite{{{last}}}. This {kind} gathers what the "
                "sections found, in the order of the report, without adding anything new to it."
            )
            return f"<thought>gather</thought><action>{text}</action>"
        if kind == "ask":  # every passage shown, cited twice: the report's and the fresh ones
            cite = ", ".join(evidence_keys(prompt))
            text = (
                f"The passages shown answer the question in part: {self.topic} and the matters around "
                f"them were argued over as revenue, protection and the burden on farmers \\cite{{{cite}}}. "
                "Where they do not settle it, the record is silent, and this answer says so rather than "
                f"guess at what the addresses meant \\cite{{{cite}}}."
            )
            return f"<thought>answer</thought><action>{text}</action>"
        if kind == "constraints":
            return json.dumps({"required_items": [], "audience": ""})
        raise AssertionError(f"unrecognised prompt: {prompt[:200]}")


def _reply(thought: str, action: dict[str, object]) -> str:
    return f"<thought>{thought}</thought><action>{json.dumps(action)}</action>"


class WordOverlapRetriever:
    """A tiny in-memory retriever for unit tests of the loop (the real index is tested apart)."""

    def __init__(self, texts: Sequence[tuple[str, str]]) -> None:
        self.passages = [
            Passage(
                text,
                Source(
                    doc_id=f"doc{i}", title=title, location=f"/corpus/{title}.txt", start=0, end=len(text)
                ),
            )
            for i, (title, text) in enumerate(texts, start=1)
        ]

    def search(self, query: str, k: int) -> list[Passage]:
        words = set(re.findall(r"\w+", query.lower()))
        scored = [
            (len(words & set(re.findall(r"\w+", p.text.lower()))), i, p) for i, p in enumerate(self.passages)
        ]
        return [p for score, _, p in sorted(scored, key=lambda t: (-t[0], t[1])) if score > 0][:k]

    def fingerprint(self) -> str:
        return "memory"


SOTU_LIKE = [
    ("Address 1790", "The tariffs on imports protect our manufactures and raise revenue for the debt."),
    ("Address 1832", "High tariffs burden the farmer; the history of tariffs shows reform is needed."),
    ("Address 1890", "The tariffs act of this year brought history and protection to industry."),
    ("Address 1930", "Tariffs and trade walls deepened the depression, a lesson of history."),
    ("Address 1962", "Trade expansion lowers tariffs and opens markets; history favours openness."),
]


def as_responder(model: Callable[[ChatRequest], str]) -> Callable[[dict[str, Any], int], str]:
    """Adapt a model to FakeOpenAIServer's responder signature (body, index) -> text: the body's
    grammar or response_format comes back as the request's reply shape or schema."""

    def respond(body: dict[str, Any], index: int) -> str:
        return model(request_from_body(body))

    return respond
