"""Evidence: passages, where they come from, and the per-run registry of citation keys.

A passage gets a key (`textid1`, `textid2`, ...) the first time the run sees it, and keeps it for the
whole run: the same text found again by a later search gets the same key, so a citation means the
same thing wherever it appears. Keys are what the model cites (`\\cite{textid3}`); the reader sees
numbered references to *sources* instead (see `report.py`).

Pure data and pure functions: no I/O.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from pydantic import BaseModel, Field

from deepdraft.core.tokens import head_tail

KEY_PREFIX = "textid"


@dataclass(frozen=True)
class Source:
    """Where a passage comes from; enough to cite it in a bibliography."""

    doc_id: str
    title: str
    location: str  # a file path or a URL
    page: int | None = None  # 1-based page, when the document has pages
    start: int = 0  # character offsets of the passage in the document's text
    end: int = 0
    headings: tuple[str, ...] = ()  # the section path the passage sits under, outermost first


@dataclass(frozen=True)
class Passage:
    text: str
    source: Source
    score: float = 0.0


class EvidenceItem(BaseModel):
    key: str
    text: str
    source: Source


def fingerprint(text: str) -> str:
    """The identity of a passage's text (the registry keys a text once, whoever found it)."""
    return hashlib.sha1(text.strip().encode("utf-8")).hexdigest()


class EvidenceRegistry(BaseModel):
    """Every passage the run has shown the model, by key, in order of first appearance."""

    items: dict[str, EvidenceItem] = Field(default_factory=dict)
    by_fingerprint: dict[str, str] = Field(default_factory=dict)

    def register(self, passage: Passage) -> str:
        """Return the passage's key, assigning the next one if its text is new."""
        identity = fingerprint(passage.text)
        if identity in self.by_fingerprint:
            return self.by_fingerprint[identity]
        key = f"{KEY_PREFIX}{len(self.items) + 1}"
        self.items[key] = EvidenceItem(key=key, text=passage.text.strip(), source=passage.source)
        self.by_fingerprint[identity] = key
        return key

    def __getitem__(self, key: str) -> EvidenceItem:
        return self.items[key]

    def __contains__(self, key: object) -> bool:
        return key in self.items


def select_passages(
    hits_per_keyword: Sequence[Sequence[Passage]],
    budget: int,
    *,
    per_document: int | None = None,
    avoid: Collection[str] = (),
) -> list[Passage]:
    """Choose up to `budget` distinct passages from ranked per-keyword result lists.

    Every keyword first gets an equal quota of its best results (so one broad keyword cannot crowd
    out the others); leftover slots are then filled from the remaining results, keyword by keyword.
    Passages with identical text are taken once.

    Diversity: at most `per_document` passages come from one document, and passages whose
    fingerprint (`fingerprint`) is in `avoid` (already cited enough elsewhere) are left out — both
    only while other results can fill the budget; the slots still empty afterwards are filled
    from what those rules held back, in the same order.
    """
    if not hits_per_keyword or budget <= 0:
        return []
    quota = max(1, budget // len(hits_per_keyword))
    chosen: list[Passage] = []
    seen: set[str] = set()
    per_doc: dict[str, int] = {}
    held_back: list[Passage] = []
    leftovers: list[list[Passage]] = []

    def take(passage: Passage, strict: bool = True) -> bool:
        print_ = fingerprint(passage.text)
        if print_ in seen or not passage.text.strip():
            return False
        doc = passage.source.doc_id
        crowded = per_document is not None and per_doc.get(doc, 0) >= per_document
        if strict and (crowded or print_ in avoid):
            held_back.append(passage)
            return False
        seen.add(print_)
        per_doc[doc] = per_doc.get(doc, 0) + 1
        chosen.append(passage)
        return True

    for hits in hits_per_keyword:
        taken = 0
        rest: list[Passage] = []
        for passage in hits:
            if taken < quota and len(chosen) < budget:
                taken += take(passage)
            else:
                rest.append(passage)
        leftovers.append(rest)
    for rest in leftovers:
        for passage in rest:
            if len(chosen) >= budget:
                return chosen
            take(passage)
    for passage in held_back:
        if len(chosen) >= budget:
            break
        take(passage, strict=False)
    return chosen


# What in a document could pass for the prompt's own structure: a citation key or the `bibkey:`
# that introduces one, and the tags of a reply or of a chat template.
_KEY_WORDS = re.compile(rf"({KEY_PREFIX[:4]})({KEY_PREFIX[4:]})|(bib)(key)", re.IGNORECASE)
_TAG = re.compile(r"<(\s*/?\s*(?:action|thought|think)\b[^<>]{0,40})>|<(\|)", re.IGNORECASE)


def quote_passage(text: str) -> str:
    """`text` as a prompt shows it: nothing in it can look like another passage's key or a tag.

    Evidence reaches the model as `bibkey:textidN` lines followed by the passage — the format the
    AgentCPM-Report weights were trained on — so a document holding a line `bibkey:textid4` would
    start a forged passage 4 inside its own, and the model would cite its claims to another
    document; `textid4` in prose would even become a citation when the model copies it. Such words
    are broken with a hyphen (`text-id4`, `bib-key`), and `<action>`, `<thought>` and `<|...`
    lose their angle brackets (`‹action›`). Text without them is returned unchanged, so ordinary
    prompts are exactly what they were.
    """
    text = _KEY_WORDS.sub(lambda m: "-".join(part for part in m.groups() if part), text)
    return _TAG.sub(lambda m: f"‹{m.group(1)}›" if m.group(1) is not None else "‹|", text)


def evidence_entry(key: str, text: str) -> str:
    """One passage of a prompt's evidence: `bibkey:<key>` on its own line, then the quoted text."""
    return f"bibkey:{key}\n{quote_passage(text)}"


def render_evidence(
    registry: EvidenceRegistry, keys: Sequence[str], passage_tokens: int | None = None
) -> str:
    """The evidence block of a prompt: `bibkey:textidN` on its own line, then the passage.

    `passage_tokens` cuts long passages to their first tokens, for models with slow prefill.
    """
    if not keys:
        return "No evidence was found."

    def text(key: str) -> str:
        passage = registry[key].text
        return passage if passage_tokens is None else head_tail(passage, passage_tokens, 0)

    return "\n\n".join(evidence_entry(key, text(key)) for key in keys)
