"""The report as a reader sees it: numbered headings, resolved citations and a References list.

The model cites passages by key (`\\cite{textid7}`); readers want sources. A `Bibliography` turns
keys into references to *source documents*, with these guarantees (citation hygiene):

* every passage of one document shares one References entry; the pages of the passages cited
  are given inline (`[3, p. 12]`, `[3, pp. 3, 7]`) and collected in the entry;
* numbers follow the order in which sources are first cited, reading the summary, the sections
  and the conclusion in document order; a report changed after it was finished (`deepdraft
  deepen` …) keeps the numbers its sources had, and new sources take the next free ones;
* one source cited twice in one `\\cite{}` is one number, and adjacent citations merge
  (`\\cite{a}\\cite{b}` → `[1, 2]`);
* the set of sources cited in the text and the set of References entries are the same: a key the
  registry does not know is dropped (validation keeps them out; this is the last line of
  defence), and a source is listed only if the text cites it.

Two styles: `numbered` (`[1, p. 12]`, References in citation order) and `author-date`
(`(Title, 1998, p. 12)`, References sorted alphabetically). Sources rarely carry authors, so the
author-date label falls back to a short title; the year comes from the source's metadata when it
has one, else "n.d.". Two sources with the same label get `a`, `b`… after the year.

Node text is cleaned for reading: a heading that only repeats the node's title is dropped,
headings inside the text are pushed below the node's own level, and runs of blank lines collapse.
A node that was never written shows its plan and the reason in italics, so a gap is never silent.
An executive summary comes first and a conclusion last when the run wrote them; the fixed
headings follow the report's language (English or Chinese).

Pure functions: no I/O. `document.py` builds on this for the exporters.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import PurePosixPath
from typing import Any, Literal

from deepdraft.core.citations import cited_keys, repair_cite_commands
from deepdraft.core.evidence import EvidenceRegistry, Source
from deepdraft.core.language import wants_chinese
from deepdraft.core.outline import Located, Outline
from deepdraft.export.facts import readable_facts

CitationStyle = Literal["numbered", "author-date"]
STYLES: tuple[CitationStyle, ...] = ("numbered", "author-date")

_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_FENCE = re.compile(r"^\s*(```|~~~)")
# Numbering models like to add to titles: "1.", "2.3", "Section 2:", "第一章", "一、", "(1)".
# A bare number must be short and end the word, so "3D Printing", "5G" and "2024 Outlook" survive.
_TITLE_NUMBERING = re.compile(
    r"^\s*(?:(?:section|chapter)[\s-]*\d+(?:\.\d+)*[.:：]?|\d+(?:\.\d+)*[.:：、)](?!\d)|\d{1,2}(?:\.\d+)*(?=\s)|"
    r"第[一二三四五六七八九十百\d]+[章节部分]|[一二三四五六七八九十]+、|[(（]\d+[)）])\s*",
    re.IGNORECASE,
)
# A run of citation commands with the blanks before and between them: adjacent citations are
# one mark, and a citation that resolves to nothing takes its leading blank with it.
_CITE_RUN = re.compile(r"[ \t]*\\cite\{[^{}]*\}(?:[ \t]*\\cite\{[^{}]*\})*")
_SHORT_TITLE_WORDS = 6
_SHORT_TITLE_CHARS = 48


@dataclass(frozen=True)
class Labels:
    """The fixed headings and phrases of a report, in its language."""

    summary: str
    conclusion: str
    references: str
    about: str
    question: str
    contents: str
    no_date: str

    @staticmethod
    def for_language(chinese: bool) -> Labels:
        if chinese:
            return Labels("摘要", "结论", "参考文献", "关于本报告", "研究问题", "目录", "无日期")
        return Labels(
            "Executive summary",
            "Conclusion",
            "References",
            "About this report",
            "Question",
            "Contents",
            "n.d.",
        )


@dataclass(frozen=True)
class Reference:
    """One References entry: a cited source document."""

    number: int
    """Its place in the References list (1-based); the number the text shows in numbered style."""
    source: Source
    pages: tuple[int, ...] = ()
    """Every page of this source cited anywhere in the report, ascending."""
    label: str = ""
    """How the text cites it in author-date style, e.g. "Annual message, 1790"."""
    keys: tuple[str, ...] = ()
    """The passage keys cited for this source, in order of first citation."""
    year: str = ""
    """The year shown in author-date style ("1790", "1790a", or the no-date marker)."""
    name: str = ""
    """The author, or a short title when the source names none."""


@dataclass(frozen=True)
class Citation:
    """One citation mark in the text: the references it points to and the pages cited there."""

    refs: tuple[tuple[Reference, tuple[int, ...]], ...]
    keys: tuple[str, ...]


class Bibliography:
    """Numbers and labels for the sources cited in a sequence of texts (see the module docstring)."""

    def __init__(
        self,
        references: list[Reference],
        by_doc: dict[str, Reference],
        registry: EvidenceRegistry,
        style: CitationStyle,
    ) -> None:
        self.references = references
        self._by_doc = by_doc
        self._registry = registry
        self.style = style

    @classmethod
    def collect(
        cls,
        texts: Iterable[str],
        registry: EvidenceRegistry,
        style: CitationStyle = "numbered",
        no_date: str = "n.d.",
        numbering: Mapping[str, int] | None = None,
    ) -> Bibliography:
        """Number every source cited in `texts` (read in this order) that the registry knows.

        `numbering` (document id → number): the numbers an earlier version of the report gave its
        sources, which they keep in numbered style; a source it lacks takes the next free number.
        """
        if style not in STYLES:
            raise ValueError(f"unknown references style {style!r}; use one of {', '.join(STYLES)}")
        order: dict[str, Source] = {}
        pages: dict[str, set[int]] = {}
        keys: dict[str, dict[str, None]] = {}
        for text in texts:
            for group in cited_keys(text):
                for key in group:
                    if key not in registry:
                        continue
                    source = registry[key].source
                    order.setdefault(source.doc_id, source)
                    keys.setdefault(source.doc_id, {})[key] = None
                    if source.page is not None:
                        pages.setdefault(source.doc_id, set()).add(source.page)
        names = {doc: _author_or_short_title(source) for doc, source in order.items()}
        years = _disambiguated_years(order, names, no_date)
        entries = [
            Reference(
                number=0,
                source=source,
                pages=tuple(sorted(pages.get(doc, ()))),
                label=f"{names[doc]}, {years[doc]}",
                keys=tuple(keys[doc]),
                year=years[doc],
                name=names[doc],
            )
            for doc, source in order.items()
        ]
        if style == "author-date":
            # Alphabetical by name, then year; a stable sort keeps first-citation order for ties.
            entries.sort(key=lambda entry: (entry.name.casefold(), entry.year))
        if style == "numbered" and numbering:
            references = _keep_numbers(entries, numbering)
        else:
            references = [_renumber(entry, number) for number, entry in enumerate(entries, start=1)]
        return cls(references, {r.source.doc_id: r for r in references}, registry, style)

    def citation(self, keys: Iterable[str]) -> Citation | None:
        """The mark for these keys (sources in first-seen order, pages merged); None if none is known."""
        cited: dict[str, set[int]] = {}
        known: list[str] = []
        for key in keys:
            if key not in self._registry:
                continue
            source = self._registry[key].source
            if source.doc_id not in self._by_doc:
                continue  # a text that was not collected; never invent an entry for it
            known.append(key)
            cited.setdefault(source.doc_id, set())
            if source.page is not None:
                cited[source.doc_id].add(source.page)
        if not cited:
            return None
        refs = [(self._by_doc[doc], tuple(sorted(found))) for doc, found in cited.items()]
        if self.style == "numbered":
            refs.sort(key=lambda pair: pair[0].number)
        return Citation(tuple(refs), tuple(dict.fromkeys(known)))

    def mark(self, citation: Citation) -> str:
        """The citation as plain text: `[1, 2]`, `[1, p. 12; 2]`, `(Title, 1790, p. 12; Other, n.d.)`."""
        if self.style == "author-date":
            return "(" + "; ".join(ref.label + _pages_suffix(found) for ref, found in citation.refs) + ")"
        if any(found for _, found in citation.refs):
            return (
                "[" + "; ".join(f"{ref.number}{_pages_suffix(found)}" for ref, found in citation.refs) + "]"
            )
        return "[" + ", ".join(str(ref.number) for ref, _ in citation.refs) + "]"

    def resolve(self, text: str, mark: Callable[[Citation], str] | None = None) -> str:
        """`text` with every run of `\\cite{...}` replaced by its mark (by default `self.mark`)."""
        render = mark or self.mark

        def replace(match: re.Match[str]) -> str:
            keys = [key for group in cited_keys(match.group(0)) for key in group]
            citation = self.citation(keys)
            if citation is None:
                return ""
            leading = match.group(0)[: len(match.group(0)) - len(match.group(0).lstrip(" \t"))]
            return leading + render(citation)

        return _CITE_RUN.sub(replace, text)

    def reference_line(self, reference: Reference) -> str:
        """The References entry as one line of Markdown."""
        source = reference.source
        title = _one_line(source.title) or source.location
        where = _where(source.location)
        pages = _pages_suffix(reference.pages)
        if self.style == "author-date":
            lead = f"{reference.name} ({reference.year})."
            named = "" if _one_line(source.title) in ("", reference.name) else f" {title}."
            return f"{lead}{named} {where}{pages}"
        return f"[{reference.number}] {title} — {where}{pages}"


@dataclass(frozen=True)
class RenderedSection:
    """One outline node as the reader sees it."""

    position: str
    number: str
    level: int
    title: str
    heading: str
    """The Markdown heading line, e.g. `### 2.1 Oxides`."""
    source: str
    """The cleaned body, citations still as `\\cite{key}` (for renderers with their own marks)."""
    body: str
    """The cleaned body with citations resolved; for an unwritten node, the italic note."""
    written: bool
    node_id: str = ""


@dataclass(frozen=True)
class RenderedReport:
    markdown: str
    references: list[Reference] = field(default_factory=list)
    unwritten: list[str] = field(default_factory=list)  # positions left without text
    title: str = ""
    summary: str = ""
    """The executive summary with citations resolved ("" when the run wrote none)."""
    conclusion: str = ""
    sections: list[RenderedSection] = field(default_factory=list)
    labels: Labels = field(default_factory=lambda: Labels.for_language(False))
    style: CitationStyle = "numbered"
    bibliography: Bibliography | None = None
    summary_source: str = ""
    conclusion_source: str = ""


def clean_title(title: str) -> str:
    cleaned = _TITLE_NUMBERING.sub("", title).strip()
    return cleaned or title.strip()


def render_markdown(
    outline: Outline,
    registry: EvidenceRegistry,
    stop_note: str = "",
    *,
    style: CitationStyle = "numbered",
    summary: str = "",
    conclusion: str = "",
    question: str = "",
    language: str | None = None,
    manifest: Mapping[str, Any] | None = None,
    numbering: Mapping[str, int] | None = None,
) -> RenderedReport:
    """The whole report in Markdown, and its parts for other renderers.

    `summary` and `conclusion` are Markdown citing `\\cite{key}` like node contents. With a
    `manifest`, a collapsed "About this report" block closes the document (see `about_markdown`).
    `numbering`: the numbers the sources had in an earlier version of the report, which they keep
    (see `Bibliography.collect`).
    """
    labels = Labels.for_language(wants_chinese(question or outline.title, language))
    summary_source, conclusion_source = _clean_text(summary), _clean_text(conclusion)
    located = list(outline.walk())
    texts = [
        summary_source,
        *(repair_cite_commands(item.node.content or "") for item in located),
        conclusion_source,
    ]
    bibliography = Bibliography.collect(texts, registry, style, labels.no_date, numbering)

    sections: list[RenderedSection] = []
    unwritten: list[str] = []
    for item in located:
        node = item.node
        number = item.position.removeprefix("section-")
        title = clean_title(node.title)
        heading = f"{'#' * (item.level + 1)} {number} {title}"
        if node.content is not None:
            source = _clean_body(node.content, item)
            body = bibliography.resolve(source)
        else:
            unwritten.append(item.position)
            why = node.note or stop_note or "the run ended before this part was written"
            source = body = f"*Not written — {_one_line(why)}. Planned: {_one_line(node.plan)}*"
        sections.append(
            RenderedSection(
                position=item.position,
                number=number,
                level=item.level,
                title=title,
                heading=heading,
                source=source,
                body=body,
                written=node.content is not None,
                node_id=node.id,
            )
        )

    rendered = RenderedReport(
        markdown="",
        references=bibliography.references,
        unwritten=unwritten,
        title=clean_title(outline.title),
        summary=bibliography.resolve(summary_source),
        conclusion=bibliography.resolve(conclusion_source),
        sections=sections,
        labels=labels,
        style=style,
        bibliography=bibliography,
        summary_source=summary_source,
        conclusion_source=conclusion_source,
    )
    markdown = assemble_markdown(rendered, manifest)
    return replace(rendered, markdown=markdown)


def assemble_markdown(rendered: RenderedReport, manifest: Mapping[str, Any] | None = None) -> str:
    """The default layout: title, summary, numbered sections, conclusion, References, about."""
    labels = rendered.labels
    lines = [f"# {rendered.title}", ""]
    if rendered.summary:
        lines += [f"## {labels.summary}", "", rendered.summary, ""]
    for section in rendered.sections:
        lines += [section.heading, "", section.body, ""]
    if rendered.conclusion:
        lines += [f"## {labels.conclusion}", "", rendered.conclusion, ""]
    if rendered.references and rendered.bibliography is not None:
        lines += [f"## {labels.references}", ""]
        for reference in rendered.references:
            bullet = "- " if rendered.style == "author-date" else ""
            lines += [bullet + rendered.bibliography.reference_line(reference), ""]
    if manifest:
        lines += [about_markdown(manifest, labels), ""]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip() + "\n"


def about_markdown(manifest: Mapping[str, Any], labels: Labels) -> str:
    """The manifest at the end of the Markdown report, as a collapsed `<details>` block.

    Why this form: a `<details>` block stays folded in the renderers people read Markdown in
    (GitHub, GitLab, VS Code, most static-site generators), so the report ends with its last
    reference rather than with bookkeeping, yet anyone can open it; in plain text it is still a
    short list of readable facts. An HTML comment would be invisible everywhere, which defeats a
    manifest's purpose. The complete manifest, with every document hash, is in `manifest.json`
    next to the report and in the JSON export.
    """
    facts = "\n".join(f"- **{name}:** {value}" for name, value in readable_facts(manifest))
    return f"<details>\n<summary>{labels.about}</summary>\n\n{facts}\n\n</details>"


def _renumber(reference: Reference, number: int) -> Reference:
    return replace(reference, number=number)


def _keep_numbers(entries: list[Reference], numbering: Mapping[str, int]) -> list[Reference]:
    """`entries` (in first-citation order) numbered as `numbering` says, the others after them.

    A source the report no longer cites leaves its number unused rather than move every later
    number down: a reader's "[7]" must mean the same source in every version of the report.
    """
    taken = set(numbering.values())
    following = max(taken, default=0) + 1
    numbered: list[Reference] = []
    for entry in entries:
        number = numbering.get(entry.source.doc_id)
        if number is None:
            number, following = following, following + 1
        numbered.append(_renumber(entry, number))
    return sorted(numbered, key=lambda entry: entry.number)


def _author_or_short_title(source: Source) -> str:
    """The first author's name when the source has one (duck-typed metadata), else a short title."""
    authors = getattr(source, "authors", None) or getattr(source, "author", None)
    if isinstance(authors, str) and authors.strip():
        return _one_line(authors)
    if isinstance(authors, Sequence) and authors and str(authors[0]).strip():
        names = [_one_line(str(author)) for author in authors]
        if len(names) > 2:
            return f"{names[0]} et al."
        return " and ".join(names)
    title = _one_line(source.title) or PurePosixPath(source.location.rstrip("/")).stem or source.location
    words = title.split()
    short = " ".join(words[:_SHORT_TITLE_WORDS])
    if len(short) > _SHORT_TITLE_CHARS:
        short = short[:_SHORT_TITLE_CHARS].rstrip()
    return short + ("…" if short != title else "")


def _year(source: Source) -> str | None:
    year = getattr(source, "year", None)
    if isinstance(year, int) and not isinstance(year, bool):
        return str(year)
    if isinstance(year, str) and year.strip():
        return year.strip()
    return None


def _disambiguated_years(
    order: Mapping[str, Source], names: Mapping[str, str], no_date: str
) -> dict[str, str]:
    """Each source's year, with a, b, … added where two sources would share a label."""
    years = {doc: _year(source) or no_date for doc, source in order.items()}
    groups: dict[tuple[str, str], list[str]] = {}
    for doc in order:
        groups.setdefault((names[doc], years[doc]), []).append(doc)
    for docs in groups.values():
        if len(docs) > 1:
            for index, doc in enumerate(docs):
                letter = _letters(index)
                years[doc] = f"{years[doc]}{letter}" if years[doc] != no_date else f"{no_date}-{letter}"
    return years


def _letters(index: int) -> str:
    """0 → a, 25 → z, 26 → aa: enough suffixes for any number of look-alike sources."""
    letters = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        letters = chr(ord("a") + rest) + letters
    return letters


def _pages_suffix(pages: Sequence[int]) -> str:
    if not pages:
        return ""
    label = "p." if len(pages) == 1 else "pp."
    return f", {label} {', '.join(str(page) for page in pages)}"


def _where(location: str) -> str:
    return f"<{location}>" if location.startswith(("http://", "https://")) else f"`{location}`"


def _clean_text(text: str) -> str:
    # Text journaled before citation commands were repaired on reading may still hold malformed ones.
    return re.sub(r"\n{3,}", "\n\n", repair_cite_commands(text).strip())


def _clean_body(text: str, located: Located) -> str:
    """Make a node's text sit well under its heading."""
    lines = repair_cite_commands(text).strip().splitlines()
    first = _HEADING.match(lines[0]) if lines else None
    if first and _same_title(first.group(2), located.node.title):
        lines = lines[1:]
    own_level = located.level + 1  # the node's heading level in the reader's Markdown
    out, in_code = [], False
    for line in lines:
        if _FENCE.match(line):
            in_code = not in_code
        heading = None if in_code else _HEADING.match(line)
        if heading:
            level = min(6, max(len(heading.group(1)), own_level + 1))
            out += ["", f"{'#' * level} {heading.group(2)}", ""]
        else:
            out.append(line)
    return re.sub(r"\n{3,}", "\n\n", "\n".join(out)).strip()


def _same_title(heading: str, title: str) -> bool:
    def norm(text: str) -> str:
        return re.sub(r"\W+", "", clean_title(text)).lower()

    return norm(heading) == norm(title)


def _one_line(text: str) -> str:
    return " ".join(text.split()).rstrip(".")


__all__ = [
    "STYLES",
    "Bibliography",
    "Citation",
    "CitationStyle",
    "Labels",
    "Reference",
    "RenderedReport",
    "RenderedSection",
    "about_markdown",
    "assemble_markdown",
    "clean_title",
    "render_markdown",
]
