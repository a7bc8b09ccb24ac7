"""The manifest: what produced a report, recorded with every report and export.

A reader who finds a report months later should be able to tell what wrote it and from what:
the deepdraft version, the policy and its settings, the models and endpoints, the embedder, the
knowledge base (fingerprint, and each document with its content hash when the retriever can list
them), how many actions of each kind the run took, tokens in and out, wall time over every session
of the run (a resumed run has several), and the verification figures.

No secrets, ever: API keys are masked (any setting whose name says key, token, secret or password,
at any depth), and endpoints lose user names, passwords, query strings and fragments, which is
where credentials hide in URLs. They are written as the egress audit writes them
(`egress.public_endpoint`: ``scheme://host:port/path``, the port always explicit), so a manifest's
endpoint and the run's egress records name one server the same way.

Collaborators are duck-typed so this module stays a pure function of what it is given: a
retriever may expose `embedder_name` and `documents()` (→ (doc_id, location, content_hash)
triples); a run state may carry `verification` and `constraints`. `readable_facts` turns a
manifest into short lines for the human-facing formats.
"""

from __future__ import annotations

import copy
import datetime as dt
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from deepdraft._version import __version__
from deepdraft.core.citations import CITE
from deepdraft.core.outline import WRITTEN_FROM_EVIDENCE
from deepdraft.core.sentences import sentences
from deepdraft.egress import public_endpoint
from deepdraft.events import StepRecord

MANIFEST_FORMAT = 1
_SECRET_WORDS = ("key", "token", "secret", "password", "authorization", "cookie")
_ENDPOINT_SETTINGS = (("llm", "base_url"), ("embedding", "base_url"), ("web", "searxng_url"))


class EventRecord(Protocol):
    """What the wall-time count needs of a journaled event (`journal.EventRecord` has it)."""

    @property
    def seq(self) -> int: ...
    @property
    def kind(self) -> str: ...
    @property
    def created_at(self) -> float: ...


def build_manifest(
    *,
    run_id: str,
    question: str,
    settings: Mapping[str, Any],
    model: str,
    state: Any,
    steps: Sequence[StepRecord] = (),
    events: Sequence[EventRecord] = (),
    retriever: object | None = None,
    kb: str | None = None,
    fingerprint: str | None = None,
    created_at: float | None = None,
    finished_at: float | None = None,
    unwritten: Sequence[str] = (),
    sources_cited: int = 0,
    references_style: str = "numbered",
) -> dict[str, Any]:
    """The manifest of one finished run.

    `settings` is `Settings.public_dict()` (or the copy the journal recorded); it is cleaned again
    here, so a caller cannot leak a key by passing the raw tree. `state` is the `RunState`.
    `events` (the journal's, including this session's) give the wall time of every session;
    `finished_at` closes the last one.
    """
    public = scrub_settings(settings)
    llm = public.get("llm", {})
    research = public.get("research", {})
    embedding = public.get("embedding", {})
    seconds, sessions = wall_time(events, finished_at)
    actions = Counter(step.action for step in steps)
    outline = getattr(state, "outline", None)
    documents = _documents(retriever)
    return {
        "format": MANIFEST_FORMAT,
        "deepdraft": __version__,
        "run_id": run_id,
        "question": question,
        "created_at": _iso(created_at),
        "finished_at": _iso(finished_at),
        "policy": str(research.get("policy", "")),
        "policy_settings": research,
        "model": model,
        "models": {
            "llm": {"model": model, "endpoint": llm.get("base_url") or "in-process"},
            "planner": llm.get("planner_model") or model,
            "writer": llm.get("writer_model") or model,
        },
        "embedder": _embedder(retriever, embedding),
        "kb": {
            "ref": kb,
            "fingerprint": fingerprint,
            "document_count": None if documents is None else len(documents),
            "documents": documents,
        },
        "actions": dict(sorted(actions.items())),
        "refused_actions": sum(1 for step in steps if not step.valid),
        "cached_actions": sum(1 for step in steps if step.cached),
        "steps": int(getattr(state, "step", len(steps))),
        "expansions": int(getattr(state, "expansions", 0)),
        "tokens": {
            "prompt": int(getattr(state, "prompt_tokens", 0)),
            "completion": int(getattr(state, "completion_tokens", 0)),
        },
        "wall_seconds": round(seconds, 2),
        "sessions": sessions,
        "verification": _verification(state),
        "constraints": _constraints(state),
        "report": {
            "nodes": outline.count() if outline is not None else 0,
            "unwritten": list(unwritten),
            "sources_cited": sources_cited,
            "passages_seen": len(getattr(getattr(state, "registry", None), "items", {}) or {}),
            "stop_reason": str(getattr(state, "stop_reason", "")),
            "references_style": references_style,
            **_citations_attached(steps),
            **_written_from_evidence(outline),
        },
        "settings": public,
    }


def _citations_attached(steps: Sequence[StepRecord]) -> dict[str, Any]:
    """Where deepdraft, not the model, placed citations by word overlap — a write that cited
    nothing (all its cited sentences), or the sentences a write left uncited beside cited ones
    (`sentences_cited`), in each node's last accepted write: {"citations_attached": {"sections":
    n, "sentences": m}}, or {} when nowhere."""
    placed: dict[str, int] = {}
    for step in steps:
        if step.action != "write" or not step.valid or not step.parsed:
            continue
        if step.parsed.get("citations_attached"):
            text = str(step.parsed.get("text", ""))
            placed[step.target] = sum(1 for sentence in sentences(text) if CITE.search(sentence))
        else:
            placed[step.target] = int(step.parsed.get("sentences_cited") or 0)
    placed = {target: count for target, count in placed.items() if count}
    if not placed:
        return {}
    return {"citations_attached": {"sections": len(placed), "sentences": sum(placed.values())}}


def _written_from_evidence(outline: Any) -> dict[str, Any]:
    """The nodes deepdraft quoted from their evidence because every draft was refused:
    {"written_from_evidence": [positions]}, or {} when none."""
    if outline is None:
        return {}
    quoted = [
        located.position
        for located in outline.walk()
        if located.node.content is not None and (located.node.note or "").startswith(WRITTEN_FROM_EVIDENCE)
    ]
    return {"written_from_evidence": quoted} if quoted else {}


def scrub_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """A deep copy with secrets masked and credentials stripped from endpoint URLs."""
    cleaned: dict[str, Any] = _mask(copy.deepcopy(dict(settings)))
    for section, key in _ENDPOINT_SETTINGS:
        block = cleaned.get(section)
        if isinstance(block, dict) and isinstance(block.get(key), str):
            block[key] = public_endpoint(block[key])
    return cleaned


def wall_time(events: Sequence[EventRecord], finished_at: float | None = None) -> tuple[float, int]:
    """Seconds spent running, summed over sessions, and the number of sessions.

    A session starts with a `run_started` event and lasts until the last event before the next
    one; the last session lasts until `finished_at` when given. Time between sessions (a run
    interrupted overnight) is not counted.
    """
    spans: list[list[float]] = []
    for event in sorted(events, key=lambda e: e.seq):
        if event.kind == "run_started":
            spans.append([event.created_at, event.created_at])
        elif spans:
            spans[-1][1] = max(spans[-1][1], event.created_at)
    if spans and finished_at is not None:
        spans[-1][1] = max(spans[-1][1], finished_at)
    return sum(end - start for start, end in spans), len(spans)


def _mask(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            key: ("***" if item and _is_secret(key) and not isinstance(item, dict | list) else _mask(item))
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_mask(item) for item in value]
    return value


def _is_secret(name: object) -> bool:
    lowered = str(name).lower()
    # "max_tokens" and "passage_tokens" are budgets, not credentials.
    if lowered.endswith("tokens") or lowered.endswith("tokens_total"):
        return False
    return any(word in lowered for word in _SECRET_WORDS)


def _documents(retriever: object | None) -> list[dict[str, str]] | None:
    listing = getattr(retriever, "documents", None)
    if not callable(listing):
        # A knowledge base searched together with the web: the documents are the KB's (what
        # `deepdraft refresh` compares the KB with later).
        for part in getattr(retriever, "parts", ()):
            if callable(getattr(part, "documents", None)):
                return _documents(part)
        return None
    documents = []
    for entry in listing():
        if isinstance(entry, tuple | list) and len(entry) >= 3:
            doc_id, location, content_hash = entry[0], entry[1], entry[2]
        elif isinstance(entry, Mapping):  # a knowledge base lists its documents as mappings
            doc_id = entry.get("doc_id", "")
            location = entry.get("location", "")
            content_hash = entry.get("content_hash", "")
        else:
            doc_id = getattr(entry, "doc_id", "")
            location = getattr(entry, "location", "")
            content_hash = getattr(entry, "content_hash", "")
        documents.append({"doc_id": str(doc_id), "location": str(location), "hash": str(content_hash)})
    return documents


def _embedder(retriever: object | None, embedding: Mapping[str, Any]) -> dict[str, Any] | None:
    name = getattr(retriever, "embedder_name", None)
    if callable(name):
        name = name()
    if not name:
        return None
    return {"name": str(name), "endpoint": embedding.get("base_url") or "in-process"}


def _verification(state: Any) -> dict[str, Any] | None:
    verification = getattr(state, "verification", None)
    if verification is None:
        return None
    data = verification.model_dump(mode="json") if hasattr(verification, "model_dump") else dict(verification)
    data.pop("sentences", None)  # per-sentence results belong to the JSON export, not the manifest
    return {key: value for key, value in data.items() if isinstance(value, int | float | str | bool)}


def _constraints(state: Any) -> dict[str, Any] | None:
    checks = getattr(state, "constraints", None)
    if not checks:
        return None
    satisfied = sum(1 for check in checks if getattr(check, "satisfied", False))
    return {"total": len(checks), "satisfied": satisfied}


def _iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return dt.datetime.fromtimestamp(timestamp, tz=dt.UTC).isoformat(timespec="seconds")
