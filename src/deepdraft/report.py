"""The report as a reader sees it: numbered headings, numbered citations and a References list.

The model cites passages by key (`\\cite{textid7}`); readers want sources. So citations are
numbered by *source document*, in order of first appearance in the report: every passage of the
same document shares one number and one References entry, and a passage with a page number is
cited as `[3, p. 12]`. Each References entry names the document's title and where it is (path or
URL).

Node text is cleaned for reading: a heading that only repeats the node's title is dropped,
headings inside the text are pushed below the node's own level, and runs of blank lines collapse.
A node that was never written shows its plan and the reason in italics, so a gap is never silent.

Pure functions: no I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from deepdraft.actions import CITE, cited_keys
from deepdraft.evidence import EvidenceRegistry, Source
from deepdraft.outline import Located, Outline

_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_FENCE = re.compile(r"^\s*(```|~~~)")
# Numbering models like to add to titles: "1.", "2.3", "Section 2:", "第一章", "一、", "(1)".
# A bare number must be short and end the word, so "3D Printing", "5G" and "2024 Outlook" survive.
_TITLE_NUMBERING = re.compile(
    r"^\s*(?:(?:section|chapter)[\s-]*\d+(?:\.\d+)*[.:：]?|\d+(?:\.\d+)*[.:：、)](?!\d)|\d{1,2}(?:\.\d+)*(?=\s)|"
    r"第[一二三四五六七八九十百\d]+[章节部分]|[一二三四五六七八九十]+、|[(（]\d+[)）])\s*",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Reference:
    number: int
    source: Source
    pages: tuple[int, ...] = ()


@dataclass(frozen=True)
class RenderedReport:
    markdown: str
    references: list[Reference] = field(default_factory=list)
    unwritten: list[str] = field(default_factory=list)  # positions left without text


def clean_title(title: str) -> str:
    cleaned = _TITLE_NUMBERING.sub("", title).strip()
    return cleaned or title.strip()


def render_markdown(outline: Outline, registry: EvidenceRegistry, stop_note: str = "") -> RenderedReport:
    numbering = _number_sources(outline, registry)
    pages: dict[int, set[int]] = {}
    lines = [f"# {clean_title(outline.title)}", ""]
    unwritten: list[str] = []
    for located in outline.walk():
        node = located.node
        number = located.position.removeprefix("section-")
        lines += [f"{'#' * (located.level + 1)} {number} {clean_title(node.title)}", ""]
        if node.content is not None:
            body = _clean_body(node.content, located)
            lines += [_render_citations(body, registry, numbering, pages), ""]
        else:
            unwritten.append(located.position)
            why = node.note or stop_note or "the run ended before this part was written"
            lines += [f"*Not written — {_one_line(why)}. Planned: {_one_line(node.plan)}*", ""]

    references = [
        Reference(number, source, tuple(sorted(pages.get(number, ()))))
        for source, number in sorted(numbering.values(), key=lambda pair: pair[1])
    ]
    if references:
        lines += ["## References", ""]
        for reference in references:
            lines += [_reference_line(reference), ""]
    markdown = re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip() + "\n"
    return RenderedReport(markdown, references, unwritten)


def _number_sources(outline: Outline, registry: EvidenceRegistry) -> dict[str, tuple[Source, int]]:
    """doc_id → (a representative source, its reference number), by first citation in the report."""
    numbering: dict[str, tuple[Source, int]] = {}
    for located in outline.walk():
        for group in cited_keys(located.node.content or ""):
            for key in group:
                if key not in registry:
                    continue
                source = registry[key].source
                if source.doc_id not in numbering:
                    numbering[source.doc_id] = (source, len(numbering) + 1)
    return numbering


def _render_citations(
    text: str,
    registry: EvidenceRegistry,
    numbering: dict[str, tuple[Source, int]],
    pages: dict[int, set[int]],
) -> str:
    def replace(match: re.Match[str]) -> str:
        cited: dict[int, set[int]] = {}
        for group in cited_keys(match.group(0)):
            for key in group:
                if key not in registry:
                    continue  # validation keeps unknown keys out; drop any that slipped through
                source = registry[key].source
                number = numbering[source.doc_id][1]
                cited.setdefault(number, set())
                if source.page is not None:
                    cited[number].add(source.page)
                    pages.setdefault(number, set()).add(source.page)
        return "".join(_citation_mark(number, sorted(cited[number])) for number in sorted(cited))

    return CITE.sub(replace, text)


def _citation_mark(number: int, pages: list[int]) -> str:
    if not pages:
        return f"[{number}]"
    label = "p." if len(pages) == 1 else "pp."
    return f"[{number}, {label} {', '.join(str(p) for p in pages)}]"


def _reference_line(reference: Reference) -> str:
    source = reference.source
    location = source.location
    where = f"<{location}>" if location.startswith(("http://", "https://")) else f"`{location}`"
    pages = ""
    if reference.pages:
        label = "p." if len(reference.pages) == 1 else "pp."
        pages = f", {label} {', '.join(str(p) for p in reference.pages)}"
    title = _one_line(source.title) or location
    return f"[{reference.number}] {title} — {where}{pages}"


def _clean_body(text: str, located: Located) -> str:
    """Make a node's text sit well under its heading."""
    lines = text.strip().splitlines()
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
