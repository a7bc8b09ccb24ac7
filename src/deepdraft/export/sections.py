"""A Markdown report read back into its sections, and the sources each section cites.

    report_sections(markdown)     every heading and the Markdown under it, in order
    section_texts(markdown)       one entry per report section: a numbered node with the headings
                                  inside its text, the summary, the conclusion, the References
    cited_sources(markdown)       which References entries each report section cites
    covers(section_id, key)       whether a section id the user gave ("3", "section-3") covers a key

Written reports come back to deepdraft when a user edits `report.md` by hand or compares two
versions; both need the report cut where a reader sees its parts. Headings are found by
markdown-it (already used by the HTML and DOCX exports), not by a line pattern, so a `#` line in
a fenced code block or an indented block is text, and setext headings count.

A section's key is its number when the heading has one (`### 3.2 Oxides` → "3.2"), else its
heading text ("Conclusion"); the text before the first heading has the key "". Node texts can
hold headings of their own (the report pushes them below the node's level): such an unnumbered
heading deeper than the numbered heading before it belongs to that numbered section, so an edit
under it is an edit of that node.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from markdown_it import MarkdownIt

from deepdraft.export.report import Labels

_NUMBER = re.compile(r"^(\d+(?:\.\d+)*)\s+\S")
_POSITION = re.compile(r"^section-(\d+(?:\.\d+)*)$")
# A numbered citation mark as `Bibliography.mark` draws it: [1], [1, 2], [1, p. 12; 2], [3, pp. 4, 5].
_NUMBERED_MARK = re.compile(r"\[(\d+(?:, p{1,2}\. [\d, ]+)?(?:[;,] \d+(?:, p{1,2}\. [\d, ]+)?)*)\]")
_PAGES = re.compile(r", p{1,2}\. [\d, ]+$")
# References entries as `Bibliography.reference_line` writes them, pages already cut off:
# "[3] Title — `path`" and "- Name (1790). Title. <https://…>" (the title left out when it is the name).
_WHERE = r"(?P<where>`[^`]+`|<[^>]+>)"
_NUMBERED_ENTRY = re.compile(rf"^\[(?P<number>\d+)\] (?P<title>.*) — {_WHERE}$")
_DATED_ENTRY = re.compile(rf"^- (?P<name>.+?) \((?P<year>[^()]+)\)\.(?: (?P<title>.+?)\.)? {_WHERE}$")
_REFERENCE_HEADINGS = {Labels.for_language(chinese).references for chinese in (False, True)}


@dataclass(frozen=True)
class Section:
    """One heading of a report and the Markdown under it, up to the next heading."""

    key: str
    """The heading's number ("3.2"), else its text; "" for the text before the first heading."""
    heading: str
    """The heading as written, e.g. "### 3.2 Oxides" ("" for the text before the first heading)."""
    level: int
    """1 to 6 (0 for the text before the first heading)."""
    text: str
    """The Markdown under the heading, without the heading, blank lines at either end removed."""
    part_of: str
    """The report section it belongs to: the numbered node whose text holds this heading, else its key."""


def report_sections(markdown: str) -> list[Section]:
    """Every heading of `markdown` with its text, in order (the text before the first heading first,
    when there is any). A key that repeats gets " (2)", " (3)", … so keys are unique."""
    lines = markdown.splitlines()
    tokens = MarkdownIt("commonmark").parse(markdown)
    headings: list[tuple[int, int, int, str]] = []  # first line, line after, level, heading text
    for index, token in enumerate(tokens):
        if token.type == "heading_open" and token.map is not None:
            headings.append(
                (token.map[0], token.map[1], int(token.tag[1]), tokens[index + 1].content.strip())
            )
    sections: list[Section] = []
    first = headings[0][0] if headings else len(lines)
    preamble = "\n".join(lines[:first]).strip()
    if preamble:
        sections.append(Section("", "", 0, preamble, ""))
    seen: dict[str, int] = {}
    numbered: tuple[int, str] | None = None  # the level and key of the last numbered heading
    for place, (start, end, level, title) in enumerate(headings):
        following = headings[place + 1][0] if place + 1 < len(headings) else len(lines)
        number = _NUMBER.match(title)
        key = number.group(1) if number else title
        seen[key] = seen.get(key, 0) + 1
        if seen[key] > 1:
            key = f"{key} ({seen[key]})"
        if number:
            numbered = (level, key)
            part_of = key
        elif numbered is not None and level > numbered[0]:
            part_of = numbered[1]
        else:
            numbered = None
            part_of = key
        heading = "\n".join(lines[start:end]).strip()
        sections.append(Section(key, heading, level, "\n".join(lines[end:following]).strip(), part_of))
    return sections


def section_texts(markdown: str) -> dict[str, str]:
    """The Markdown of each report section (its headings included), by key, in report order."""
    texts: dict[str, list[str]] = {}
    for section in report_sections(markdown):
        texts.setdefault(section.part_of, []).append(f"{section.heading}\n\n{section.text}".strip())
    return {key: "\n\n".join(parts) for key, parts in texts.items()}


def headings(markdown: str) -> list[str]:
    """Every heading line of the report, in order."""
    return [section.heading for section in report_sections(markdown) if section.level]


def covers(section_id: str, key: str) -> bool:
    """Whether the section a user or a command named covers the report section `key`.

    A number or a position ("3", "section-3") covers that node and every node under it ("3.1",
    "3.1.2"); any other name (e.g. "Conclusion") covers the section with that heading, in any case.
    """
    wanted = section_id.strip()
    position = _POSITION.match(wanted)
    if position:
        wanted = position.group(1)
    if _NUMBER.match(wanted + " x"):
        return key == wanted or key.startswith(wanted + ".")
    return key.casefold() == wanted.casefold()


def references(markdown: str) -> dict[str, str]:
    """The References entries, by how the text cites them: "3" in numbered style, the label
    ("Annual message, 1790") in author-date style. Each maps to the source as "title — `where`",
    the same in both styles and without pages, so two versions name one source alike."""
    for section in report_sections(markdown):
        if section.level == 2 and section.key in _REFERENCE_HEADINGS:
            entries: dict[str, str] = {}
            for paragraph in section.text.split("\n\n"):
                entry = _PAGES.sub("", " ".join(paragraph.split()))
                if entry.startswith("<details"):
                    break  # the "About this report" facts close the References
                numbered = _NUMBERED_ENTRY.match(entry)
                dated = _DATED_ENTRY.match(entry)
                if numbered:
                    entries[numbered["number"]] = f"{numbered['title']} — {numbered['where']}"
                elif dated:
                    title = dated["title"] or dated["name"]
                    entries[f"{dated['name']}, {dated['year']}"] = f"{title} — {dated['where']}"
            return entries
    return {}


def cited_sources(markdown: str) -> dict[str, set[str]]:
    """Which References entries each report section cites (sections that cite none map to an
    empty set; the References section itself is left out)."""
    entries = references(markdown)
    numbered = all(label.isdigit() for label in entries)
    cited: dict[str, set[str]] = {}
    for key, text in section_texts(markdown).items():
        if key in _REFERENCE_HEADINGS:
            continue
        found: set[str] = set()
        if numbered:
            for mark in _NUMBERED_MARK.finditer(text):
                for number in _mark_numbers(mark.group(1)):
                    if number in entries:
                        found.add(entries[number])
        else:
            found = {entry for label, entry in entries.items() if label in text}
        cited[key] = found
    return cited


def _mark_numbers(inside: str) -> list[str]:
    """The reference numbers of one mark's inside: "1, 2" → 1, 2; "1, p. 12; 2" → 1, 2."""
    if "p." in inside:  # with pages, sources are separated by ";" and each starts with its number
        return [part.strip().split(",")[0] for part in inside.split(";")]
    return [part.strip() for part in inside.split(",")]


__all__ = ["Section", "cited_sources", "covers", "headings", "references", "report_sections", "section_texts"]
