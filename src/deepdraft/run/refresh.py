"""`deepdraft refresh`: which sections of a finished report a change of its knowledge base concerns, and why.

What the report was written from: the manifest written with every report version lists the
knowledge base's documents with their content hashes (`run/manifest`). Compared with the KB's
documents now, that says which were added, changed or removed since. A written section is then
out of date when

1. a passage it cites comes from a document that was removed ("was removed"), or from one that
   changed and no longer holds that passage word for word ("changed") — looked up by searching the
   KB for the passage's own text;
2. a passage of an added or changed document, never shown to the run, is now among the evidence a
   search for the section would show the writer: the section's own query and the keywords of its
   latest search, through WARP's own choice of passages (`warp.find_evidence`).

Only the knowledge base is searched, never the web: a run with web search keeps its pages, and
passage texts are not sent to a search engine to be looked up. Nothing here changes the run; the
runner gives the sections found to the refresh command (`policy/sections`), which writes them again.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deepdraft.core.citations import cited_keys
from deepdraft.core.evidence import EvidenceItem, fingerprint
from deepdraft.core.state import RunState
from deepdraft.errors import UserError
from deepdraft.events import StepRecord
from deepdraft.policy.sections import Stale
from deepdraft.policy.warp import find_evidence
from deepdraft.ports import Retriever
from deepdraft.settings import ResearchSettings

MANIFEST = "manifest.json"
SHOWN_REASONS = 2
"""Reasons a section's line names before it counts the rest."""


@dataclass(frozen=True)
class KBChanges:
    """How the knowledge base's documents differ from those the report was written from."""

    added: frozenset[str] = frozenset()
    changed: frozenset[str] = frozenset()
    removed: frozenset[str] = frozenset()

    def __bool__(self) -> bool:
        return bool(self.added or self.changed or self.removed)

    def describe(self) -> str:
        """How many documents changed, e.g. "1 document added, 2 changed"."""
        counts = [
            (len(ids), what)
            for ids, what in ((self.added, "added"), (self.changed, "changed"), (self.removed, "removed"))
            if ids
        ]
        if not counts:
            return "no document added, changed or removed"
        (first, what), rest = counts[0], counts[1:]
        said = f"{first} document{'' if first == 1 else 's'} {what}"
        return ", ".join([said, *(f"{count} {what}" for count, what in rest)])


@dataclass(frozen=True)
class Findings:
    """What `refresh` found: the KB's changes and the sections to write again, in document order."""

    changes: KBChanges
    stale: list[Stale] = field(default_factory=list)


def recorded_documents(folder: Path, run_id: str) -> dict[str, str]:
    """The KB's documents (id → content hash) as the manifest of the current report lists them."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        documents = manifest["kb"]["documents"]
    except (OSError, ValueError, KeyError, TypeError):
        documents = None
    if not isinstance(documents, list):
        raise UserError(
            f"run {run_id} has no list of the documents its report was written from ({folder / MANIFEST}), "
            f"so deepdraft cannot tell what changed; rewrite sections with: deepdraft rewrite {run_id} N"
        )
    return {
        str(entry["doc_id"]): str(entry.get("hash", "")) for entry in documents if isinstance(entry, dict)
    }


def knowledge_base(retriever: Retriever) -> Retriever | None:
    """The part of `retriever` that is a knowledge base listing its documents (None: none is)."""
    for part in getattr(retriever, "parts", (retriever,)):  # a KB searched with the web
        if callable(getattr(part, "documents", None)):
            return part
    return None


def listed_documents(kb: Retriever) -> dict[str, str]:
    """The KB's documents now: id → content hash."""
    listing: Any = kb
    return {str(row["doc_id"]): str(row.get("content_hash", "")) for row in listing.documents()}


def compare(before: Mapping[str, str], now: Mapping[str, str]) -> KBChanges:
    return KBChanges(
        added=frozenset(now.keys() - before.keys()),
        changed=frozenset(doc for doc in now.keys() & before.keys() if now[doc] != before[doc]),
        removed=frozenset(before.keys() - now.keys()),
    )


def latest_keywords(steps: Sequence[StepRecord]) -> dict[str, list[str]]:
    """The keywords of each node's latest accepted search (position → keywords)."""
    keywords: dict[str, list[str]] = {}
    for step in steps:
        words = (step.parsed or {}).get("keywords")
        if step.action == "search" and step.valid and isinstance(words, list):
            keywords[step.target] = [str(word) for word in words]
    return keywords


def stale_sections(
    state: RunState,
    kb: Retriever,
    changes: KBChanges,
    keywords: Mapping[str, list[str]],
    budgets: ResearchSettings,
    numbers: Mapping[str, int],
) -> list[Stale]:
    """The written sections `changes` concern, each with why, in document order (see the module
    doc). `numbers`: the report's source numbers (document id → number), for the reasons."""
    if not changes or state.outline is None:
        return []
    stale: list[Stale] = []
    for located in state.outline.walk():
        if located.node.content is None:
            continue
        reasons = _cited_reasons(state, located.node.content, kb, changes, budgets, numbers)
        reasons += _new_passage_reasons(state, located.position, kb, changes, keywords, budgets)
        reasons = list(dict.fromkeys(reasons))
        if reasons:
            more = len(reasons) - SHOWN_REASONS
            line = "; ".join(reasons[:SHOWN_REASONS]) + (f" (and {more} more)" if more > 0 else "")
            stale.append(Stale(located.position, line))
    return stale


def _cited_reasons(
    state: RunState,
    content: str,
    kb: Retriever,
    changes: KBChanges,
    budgets: ResearchSettings,
    numbers: Mapping[str, int],
) -> list[str]:
    reasons = []
    keys = dict.fromkeys(key for group in cited_keys(content) for key in group if key in state.registry)
    for key in keys:
        item = state.registry[key]
        doc = item.source.doc_id
        number = f"source [{numbers[doc]}], " if doc in numbers else ""
        if doc in changes.removed:
            reasons.append(f"a cited passage ({number}{doc}) was removed")
        elif doc in changes.changed and not _still_there(kb, item, budgets):
            reasons.append(f"a cited passage ({number}{doc}) changed")
    return reasons


def _still_there(kb: Retriever, item: EvidenceItem, budgets: ResearchSettings) -> bool:
    """Whether the KB still holds `item`'s text in its document (a search for the text itself)."""
    identity = fingerprint(item.text)
    return any(
        hit.source.doc_id == item.source.doc_id and fingerprint(hit.text) == identity
        for hit in kb.search(item.text, budgets.hits_per_keyword)
    )


def _new_passage_reasons(
    state: RunState,
    position: str,
    kb: Retriever,
    changes: KBChanges,
    keywords: Mapping[str, list[str]],
    budgets: ResearchSettings,
) -> list[str]:
    fresh = changes.added | changes.changed
    view = state.model_copy(update={"target": position})  # shallow: only the target differs
    reasons = []
    for passage in find_evidence(kb, view, keywords.get(position, []), budgets, budgets.node_evidence):
        doc = passage.source.doc_id
        if doc in fresh and fingerprint(passage.text) not in state.registry.by_fingerprint:
            how = "added" if doc in changes.added else "changed"
            reasons.append(f"a new passage ranks in its top results ({doc}, {how})")
    return reasons
