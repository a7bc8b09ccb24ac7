"""JSON export: the whole report as data, described by docs/report.schema.json.

Top-level keys (all always present; `null` or empty when the run has no such part):

    format, version         "deepdraft-report", 1
    run_id, title, question, language, references_style, stop_reason
    summary, conclusion     {markdown, source, sentences} or null
    outline                 the section tree: id, position, number, level, title, plan, status,
                            note, markdown (citations resolved), source (with \\cite{key}),
                            sentences [{text, keys, references}], children
    references              cited sources: number, label, doc_id, title, location, url, year,
                            pages, bibtex_key, passages [{key, text, page, start, end}]
    evidence                every passage the run saw: key, doc_id, title, location, page,
                            start, end, text, cited
    verification            the verification pass's figures and per-sentence verdicts, or null
    constraints             the checks of the question's explicit constraints
    unwritten               positions left without text
    markdown                the default Markdown rendering
    manifest                the complete manifest (every KB document with its hash)

The schema is strict (`additionalProperties: false`) so a consumer can rely on it; a change of
shape is a new `version`.
"""

from __future__ import annotations

import json
from typing import Any

from deepdraft.export.bibtex import citation_keys
from deepdraft.export.document import (
    DOCUMENT_FORMAT,
    DOCUMENT_VERSION,
    Block,
    ReportDocument,
    Section,
    Sentence,
)


def render(document: ReportDocument) -> str:
    return json.dumps(to_data(document), indent=2, ensure_ascii=False) + "\n"


def to_data(document: ReportDocument) -> dict[str, Any]:
    keys = citation_keys(document)
    cited = {passage.key for entry in document.references for passage in entry.passages}
    return {
        "format": DOCUMENT_FORMAT,
        "version": DOCUMENT_VERSION,
        "run_id": document.run_id,
        "title": document.title,
        "question": document.question,
        "language": document.language,
        "references_style": document.style,
        "stop_reason": document.stop_reason,
        "summary": _block(document.summary),
        "conclusion": _block(document.conclusion),
        "outline": [_section(section) for section in document.sections],
        "references": [
            {
                "number": entry.number,
                "label": entry.label,
                "doc_id": entry.doc_id,
                "title": entry.title,
                "location": entry.location,
                "url": entry.url,
                "year": entry.year,
                "pages": list(entry.pages),
                "bibtex_key": keys[entry.doc_id],
                "passages": [
                    {"key": p.key, "text": p.text, "page": p.page, "start": p.start, "end": p.end}
                    for p in entry.passages
                ],
            }
            for entry in document.references
        ],
        "evidence": [
            {
                "key": item.key,
                "doc_id": item.source.doc_id,
                "title": item.source.title,
                "location": item.source.location,
                "page": item.source.page,
                "start": item.source.start,
                "end": item.source.end,
                "text": item.text,
                "cited": item.key in cited,
            }
            for item in document.registry.items.values()
        ],
        "verification": document.verification,
        "constraints": list(document.constraints),
        "unwritten": document.unwritten,
        "markdown": document.markdown,
        "manifest": document.manifest,
    }


def _block(block: Block | None) -> dict[str, Any] | None:
    if block is None:
        return None
    return {"markdown": block.markdown, "source": block.source, "sentences": _sentences(block.sentences)}


def _section(section: Section) -> dict[str, Any]:
    return {
        "id": section.id,
        "position": section.position,
        "number": section.number,
        "level": section.level,
        "title": section.title,
        "plan": section.plan,
        "status": "written" if section.written else "unwritten",
        "note": section.note,
        "markdown": section.markdown,
        "source": section.source,
        "sentences": _sentences(section.sentences),
        "children": [_section(child) for child in section.children],
    }


def _sentences(sentences: tuple[Sentence, ...]) -> list[dict[str, Any]]:
    return [
        {"text": sentence.text, "keys": list(sentence.keys), "references": list(sentence.references)}
        for sentence in sentences
    ]
