"""A follow-up question's answer as the reader sees it: cited in the report's own numbering.

The model cites passages by key (`\\cite{textid7}`), like a section. The answer is read next to
the report, so its marks must mean what the report's do: a source the report cites keeps its
number there, and a source only the answer cites takes the next free number after the report's
(`Bibliography.collect` with the report's numbering). Those new sources are listed under the
answer with their bibliography entries; the report's own are in its References.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from deepdraft.core.evidence import EvidenceRegistry
from deepdraft.core.state import AskProgress
from deepdraft.export.report import Bibliography, CitationStyle
from deepdraft.store.journal import AskRecord

NEW_SOURCES = "Sources not in the report"


@dataclass(frozen=True)
class Answer:
    """A stored answer to a follow-up question."""

    run_id: str
    question: str
    markdown: str
    """The answer with its citations resolved, its new sources listed under it; "" when none."""
    note: str = ""
    """Why there is no answer ("" when there is one)."""
    sources: list[str] = field(default_factory=list)
    """The entries of the sources the report does not cite, as listed under the answer."""
    section: str | None = None
    """`--into-report`: the section the answer became."""
    asked_at: float = 0.0
    answered_at: float = 0.0

    @staticmethod
    def of(record: AskRecord) -> Answer:
        return Answer(
            run_id=record.run_id,
            question=record.question,
            markdown=record.answer,
            note=record.note,
            sources=list(record.detail.get("sources", [])),
            section=record.section,
            asked_at=record.asked_at,
            answered_at=record.answered_at,
        )


def render_answer(
    text: str,
    registry: EvidenceRegistry,
    numbering: Mapping[str, int],
    style: CitationStyle = "numbered",
    *,
    report_sources: Mapping[str, int] | None = None,
) -> tuple[str, list[str]]:
    """`text` with its citations resolved in the report's `numbering` (document id → number), and
    the entries of the sources it cites that the report does not (`report_sources`, by default
    `numbering`), which the Markdown lists under the answer."""
    bibliography = Bibliography.collect([text], registry, style, numbering=numbering)
    known = numbering if report_sources is None else report_sources
    new = [
        bibliography.reference_line(reference)
        for reference in bibliography.references
        if reference.source.doc_id not in known
    ]
    markdown = bibliography.resolve(text).strip()
    if new:
        bullet = "- " if style == "author-date" else ""
        markdown += f"\n\n{NEW_SOURCES}:\n\n" + "\n".join(bullet + line for line in new)
    return markdown + "\n", new


def ask_record(
    run_id: str,
    ask: AskProgress,
    registry: EvidenceRegistry,
    numbering: Mapping[str, int],
    style: CitationStyle,
    *,
    report_sources: Mapping[str, int] | None = None,
    text: str | None = None,
) -> AskRecord:
    """The journal row of a finished ask (`ask.done`). `text`: the answer as it stands in the report
    (`--into-report`, after verification may have repaired it); by default the model's answer."""
    text = ask.answer if text is None else text
    markdown, new = "", list[str]()
    if text is not None:
        markdown, new = render_answer(text, registry, numbering, style, report_sources=report_sources)
    return AskRecord(
        run_id=run_id,
        step=ask.begun_at_step,
        question=ask.question,
        asked_at=ask.asked_at,
        answered_at=time.time(),
        answer=markdown,
        note="" if text is not None else ask.note,
        detail={"text": text or "", "keys": list(ask.keys), "sources": new},
        section=ask.into,
    )
