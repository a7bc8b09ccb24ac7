"""One report, as every exporter sees it: `ReportDocument`, built from a run's state and manifest.

Every format (Markdown, HTML, PDF, DOCX, JSON, BibTeX, CSL-JSON) renders from this one object, so
they agree by construction: the same numbering, the same References, the same manifest. It holds

* the title, the question, the language and the references style;
* the executive summary and the conclusion (when the run wrote them);
* the sections as a tree: position, number, title, plan, the Markdown body with citations
  resolved to references, the raw body with its `\\cite{key}`s (for renderers that draw their own
  citation marks, such as HTML links), and the citation keys of each sentence;
* the references: each cited source with the pages and the passages cited (text and offsets);
* every passage the run saw (the evidence registry), the verification results and constraint
  checks when the run produced them, and the manifest.

The state is all it needs, so the document of any finished run can be rebuilt from the journal's
last checkpoint. Sentences (split by `core.sentences`, as verification splits them, citations that
follow a full stop kept with their sentence) give the JSON export its per-sentence citation keys;
the verification pass records its own sentences, which the JSON export carries as well.

Pure data and pure functions: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from deepdraft.core.citations import cited_keys
from deepdraft.core.evidence import EvidenceRegistry
from deepdraft.core.language import wants_chinese
from deepdraft.core.outline import Node
from deepdraft.core.sentences import sentence_spans
from deepdraft.core.state import RunState
from deepdraft.export.facts import for_readers
from deepdraft.export.report import (
    Bibliography,
    CitationStyle,
    RenderedReport,
    RenderedSection,
    assemble_markdown,
    render_markdown,
)

DOCUMENT_FORMAT = "deepdraft-report"
DOCUMENT_VERSION = 1


@dataclass(frozen=True)
class Sentence:
    text: str
    """The sentence as written, citations still as `\\cite{key}`."""
    keys: tuple[str, ...]
    references: tuple[int, ...]
    """The References numbers its citations resolve to (unknown keys resolve to nothing)."""


@dataclass(frozen=True)
class Block:
    """A piece of prose outside the outline: the executive summary or the conclusion."""

    markdown: str
    source: str
    sentences: tuple[Sentence, ...]


@dataclass(frozen=True)
class Section:
    id: str
    position: str
    number: str
    level: int
    title: str
    plan: str
    written: bool
    note: str | None
    heading: str
    markdown: str
    """The body with citations resolved (for an unwritten node: the italic note)."""
    source: str
    """The cleaned body with `\\cite{key}`s; empty for an unwritten node."""
    sentences: tuple[Sentence, ...]
    children: tuple[Section, ...] = ()


@dataclass(frozen=True)
class CitedPassage:
    key: str
    text: str
    page: int | None
    start: int
    end: int


@dataclass(frozen=True)
class ReferenceEntry:
    number: int
    label: str
    """The in-text label in author-date style; the number in brackets in numbered style."""
    line: str
    """The entry as the Markdown References list shows it."""
    doc_id: str
    title: str
    location: str
    year: str | None
    pages: tuple[int, ...]
    passages: tuple[CitedPassage, ...]

    @property
    def url(self) -> str | None:
        return self.location if self.location.startswith(("http://", "https://")) else None


@dataclass(frozen=True)
class ReportDocument:
    run_id: str
    title: str
    question: str
    language: str
    """"zh" for a Chinese report, else "en" (the fixed headings follow it)."""
    style: CitationStyle
    summary: Block | None
    conclusion: Block | None
    sections: tuple[Section, ...]
    references: tuple[ReferenceEntry, ...]
    rendered: RenderedReport
    """The Markdown rendering and the bibliography behind it (for renderers with their own marks)."""
    registry: EvidenceRegistry
    manifest: dict[str, Any] = field(default_factory=dict)
    verification: dict[str, Any] | None = None
    constraints: tuple[dict[str, Any], ...] = ()
    stop_reason: str = ""

    @property
    def markdown(self) -> str:
        """The default Markdown document, with the readers' manifest at its end."""
        return assemble_markdown(self.rendered, self.readers_manifest() or None)

    def walk(self) -> Iterator[Section]:
        """Every section in document order."""

        def visit(sections: tuple[Section, ...]) -> Iterator[Section]:
            for section in sections:
                yield section
                yield from visit(section.children)

        return visit(self.sections)

    def readers_manifest(self) -> dict[str, Any]:
        """The manifest with KB documents cut to the cited ones (see `export.facts.for_readers`)."""
        if not self.manifest:
            return {}
        return for_readers(self.manifest, (entry.doc_id for entry in self.references))

    @property
    def unwritten(self) -> list[str]:
        return list(self.rendered.unwritten)


def build_document(
    state: RunState,
    *,
    run_id: str = "",
    manifest: Mapping[str, Any] | None = None,
    style: CitationStyle = "numbered",
    language: str | None = None,
    stop_note: str | None = None,
) -> ReportDocument:
    """The document of a run whose state has an outline (any finished, or stopped, run)."""
    if state.outline is None:
        raise ValueError("a report needs an outline; this run has none yet")
    summary_text = str(getattr(state, "summary", "") or "")
    conclusion_text = str(getattr(state, "conclusion", "") or "")
    if stop_note is None:
        stop_note = f"run stopped: {state.stop_reason}" if state.stop_reason else ""
    rendered = render_markdown(
        state.outline,
        state.registry,
        stop_note,
        style=style,
        summary=summary_text,
        conclusion=conclusion_text,
        question=state.question,
        language=language,
        numbering=getattr(state, "source_numbers", None),
    )
    bibliography = rendered.bibliography
    assert bibliography is not None  # render_markdown always sets it
    numbers = {reference.source.doc_id: reference.number for reference in rendered.references}

    def block(markdown: str, source: str) -> Block | None:
        return Block(markdown, source, _sentences(source, state.registry, numbers)) if source else None

    tree = _section_tree(state.outline.sections, rendered, state.registry, numbers)
    references = _reference_entries(rendered, bibliography, state.registry, style)
    verification = getattr(state, "verification", None)
    constraints = getattr(state, "constraints", None) or ()
    return ReportDocument(
        run_id=run_id,
        title=rendered.title,
        question=state.question,
        language="zh" if wants_chinese(state.question or rendered.title, language) else "en",
        style=style,
        summary=block(rendered.summary, rendered.summary_source),
        conclusion=block(rendered.conclusion, rendered.conclusion_source),
        sections=tree,
        references=references,
        rendered=rendered,
        registry=state.registry,
        manifest=dict(manifest or {}),
        verification=_as_dict(verification),
        constraints=tuple(item for item in (_as_dict(check) for check in constraints) if item is not None),
        stop_reason=state.stop_reason,
    )


def _sentences(text: str, registry: EvidenceRegistry, numbers: Mapping[str, int]) -> tuple[Sentence, ...]:
    """Each sentence of `text` with its citation keys and the reference numbers they resolve to."""
    found = []
    for sentence in split_sentences(text):
        keys = tuple(key for group in cited_keys(sentence) for key in group)
        refs = tuple(dict.fromkeys(numbers[registry[key].source.doc_id] for key in keys if key in registry))
        found.append(Sentence(sentence, keys, refs))
    return tuple(found)


def _section_tree(
    nodes: Sequence[Node], rendered: RenderedReport, registry: EvidenceRegistry, numbers: Mapping[str, int]
) -> tuple[Section, ...]:
    """The outline's sections as `Section`s, each joined to its rendered part by position."""
    by_position = {section.position: section for section in rendered.sections}

    def section(node: Node, position: str) -> Section:
        part: RenderedSection = by_position[position]
        children = tuple(
            section(child, f"{position}.{index}") for index, child in enumerate(node.children, start=1)
        )
        return Section(
            id=node.id,
            position=position,
            number=part.number,
            level=part.level,
            title=part.title,
            plan=node.plan,
            written=part.written,
            note=node.note,
            heading=part.heading,
            markdown=part.body,
            source=part.source if part.written else "",
            sentences=_sentences(part.source, registry, numbers) if part.written else (),
            children=children,
        )

    return tuple(section(node, f"section-{index}") for index, node in enumerate(nodes, start=1))


def _reference_entries(
    rendered: RenderedReport, bibliography: Bibliography, registry: EvidenceRegistry, style: CitationStyle
) -> tuple[ReferenceEntry, ...]:
    """The References in their rendered order, each with its line and the passages cited from it."""
    return tuple(
        ReferenceEntry(
            number=reference.number,
            label=reference.label if style == "author-date" else f"[{reference.number}]",
            line=bibliography.reference_line(reference),
            doc_id=reference.source.doc_id,
            title=reference.source.title,
            location=reference.source.location,
            year=None
            if reference.year == rendered.labels.no_date or not reference.year[:1].isdigit()
            else reference.year,
            pages=reference.pages,
            passages=tuple(
                CitedPassage(
                    key=key,
                    text=registry[key].text,
                    page=registry[key].source.page,
                    start=registry[key].source.start,
                    end=registry[key].source.end,
                )
                for key in reference.keys
            ),
        )
        for reference in rendered.references
    )


def split_sentences(text: str) -> list[str]:
    """The sentences of Markdown prose (`core.sentences`, a line break ending one only where a block
    ends), each on one line: the lines of a hard-wrapped sentence are joined by a space."""
    return [
        " ".join(line.strip() for line in text[start:end].splitlines() if line.strip())
        for start, end in sentence_spans(text, lines="blocks")
    ]


def _as_dict(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if hasattr(value, "model_dump"):
        dumped: dict[str, Any] = value.model_dump(mode="json")
        return dumped
    if isinstance(value, Mapping):
        return dict(value)
    return None
