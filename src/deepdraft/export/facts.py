"""The manifest as readers see it: short facts for the report's "About this report" block, and the
manifest trimmed to the cited documents for the human-facing formats.

The manifest itself is built when a run finishes (`deepdraft.run.manifest`); the exporters only read
it, as plain data.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import Any


def for_readers(manifest: Mapping[str, Any], cited_doc_ids: Iterable[str]) -> dict[str, Any]:
    """The manifest as the human-facing formats embed it: KB documents cut to the cited ones.

    A knowledge base may hold tens of thousands of documents; listing each in an HTML or DOCX
    report would bury it. The fingerprint still pins the whole KB, the hashes of the documents
    the report actually cites stay (they show which version of each source was read), and the
    full list remains in `manifest.json` and the JSON export.
    """
    kb = manifest.get("kb")
    documents = kb.get("documents") if isinstance(kb, Mapping) else None
    if not isinstance(kb, Mapping) or not isinstance(documents, list):
        return copy.deepcopy(dict(manifest))
    # Copy all but the document list, and of that only what is kept: copying a list of 100,000
    # documents to keep ten took longer than the rest of writing the report.
    cited = set(cited_doc_ids)
    trimmed = copy.deepcopy({**manifest, "kb": {**kb, "documents": []}})
    trimmed["kb"]["documents"] = copy.deepcopy([doc for doc in documents if doc.get("doc_id") in cited])
    trimmed["kb"]["documents_listed"] = "cited only"
    return trimmed


def readable_facts(manifest: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Short (name, value) lines for readers; missing parts are left out, not shown as blanks."""
    facts: list[tuple[str, str]] = [("deepdraft", str(manifest.get("deepdraft", "?")))]
    if manifest.get("run_id"):
        facts.append(("Run", str(manifest["run_id"])))
    models = manifest.get("models") or {}
    llm = models.get("llm") or {}
    if llm:
        facts.append(("Model", f"{llm.get('model', '?')} ({llm.get('endpoint', '?')})"))
        for role in ("planner", "writer"):
            if models.get(role) and models[role] != llm.get("model"):
                facts.append((f"{role.capitalize()} model", str(models[role])))
    elif manifest.get("model"):
        facts.append(("Model", str(manifest["model"])))
    embedder = manifest.get("embedder")
    if isinstance(embedder, dict) and embedder.get("name"):
        facts.append(("Embedder", str(embedder["name"])))
    policy = manifest.get("policy")
    if policy:
        research = manifest.get("policy_settings") or {}
        detail = ", ".join(
            f"{name} {research[name]}"
            for name in ("depth", "max_steps", "max_expansions")
            if name in research
        )
        facts.append(("Policy", f"{policy}" + (f" ({detail})" if detail else "")))
        if research.get("plan_searches"):
            facts.append(
                (
                    "Searching",
                    "by deepdraft, not the model: each part's title and the sentences of its plan "
                    "were its search keywords",
                )
            )
        if research.get("write_by_passage"):
            # A reader checking a paragraph against its source should know where in it to look.
            excerpted = (
                "; a long passage was shown as its sentences that name the request's subject, the "
                "excerpt the fact-checker saw too"
                if research.get("passage_tokens")
                else ""
            )
            facts.append(
                (
                    "Writing",
                    "passage by passage: the model reported each passage found for a part in a sentence "
                    "or two, and each paragraph holds what one source says that held up against it"
                    + excerpted,
                )
            )
    kb = manifest.get("kb") or {}
    if kb.get("ref") or kb.get("fingerprint"):
        count = kb.get("document_count")
        pinned = f"(fingerprint {kb.get('fingerprint')}{'' if count is None else f', {count} documents'})"
        web = _web_search(manifest.get("settings") or {})
        if web is not None and not kb.get("ref"):  # --web-only: the web was all the run searched
            facts.append(("Web search", f"{web} {pinned}"))
        else:
            also = f", with web search via {web}" if web is not None else ""
            facts.append(("Knowledge base", f"{kb.get('ref') or 'custom retriever'} {pinned}{also}"))
    actions = manifest.get("actions") or {}
    if actions:
        listed = ", ".join(f"{count} {name}" for name, count in actions.items())
        refused = manifest.get("refused_actions") or 0
        facts.append(("Actions", listed + (f"; {refused} refused and re-asked" if refused else "")))
    tokens = manifest.get("tokens") or {}
    if tokens:
        facts.append(("Tokens", f"{tokens.get('prompt', 0):,} in, {tokens.get('completion', 0):,} out"))
    if manifest.get("wall_seconds") is not None:
        sessions = manifest.get("sessions") or 1
        over = f" over {sessions} sessions" if sessions > 1 else ""
        facts.append(("Wall time", _duration(float(manifest["wall_seconds"])) + over))
    verification = manifest.get("verification")
    if isinstance(verification, dict):
        counts = ", ".join(
            f"{verification[name]} {name}"
            for name in ("supported", "repaired", "recited", "removed", "unverified")
            if verification.get(name)
        )
        facts.append(
            (
                "Verification",
                f"{verification.get('checked', 0)} cited sentences checked"
                + (f": {counts}" if counts else ""),
            )
        )
    constraints = manifest.get("constraints")
    if isinstance(constraints, dict) and constraints.get("total"):
        facts.append(
            ("Constraints", f"{constraints.get('satisfied', 0)} of {constraints['total']} satisfied")
        )
    report = manifest.get("report") or {}
    attached = report.get("citations_attached") or {}
    if attached.get("sections"):
        facts.append(
            (
                "Citations placed by deepdraft",
                f"{attached.get('sentences', 0)} sentences in {attached['sections']} sections that the "
                "model left uncited: each was cited from the passage it shares most words with, and "
                "those no passage shares enough words with were left out",
            )
        )
    quoted = report.get("written_from_evidence") or []
    if quoted:
        facts.append(
            (
                "Quoted from the evidence",
                f"{len(quoted)} part(s) ({', '.join(quoted)}): every draft the model wrote was refused, so "
                "deepdraft quoted the passages found for it",
            )
        )
    if report.get("stop_reason"):
        facts.append(("Stopped", str(report["stop_reason"])))
    facts.append(("Full manifest", "manifest.json in the run folder, and the JSON export"))
    return facts


def _web_search(settings: Mapping[str, Any]) -> str | None:
    """The web search provider a run used, e.g. "searxng at http://localhost:8888/"; None without one."""
    web = settings.get("web") or {}
    if not isinstance(web, Mapping) or not (web.get("enabled") or web.get("only")):
        return None
    provider = str(web.get("provider") or "searxng")
    url = web.get("searxng_url")
    return f"{provider} at {url}" if provider == "searxng" and url else provider


def _duration(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min {rest} s" if minutes else f"{seconds:.1f} s"
