"""What changed between two versions of a report, section by section.

    compare(old_markdown, new_markdown) → ReportChanges
    changes.summary()      one line: "2 sections rewritten, 1 added; 1 source added"
    changes.readable()     the lines `deepdraft diff` prints

Reports are compared as a reader would: by section (see `export.sections`), not as one long text,
so a rewritten paragraph shows under its heading and a new subsection is one line, not a hundred.
Sections are matched by number and title; a section whose number changed but whose title did not
(a section inserted before it) is shown as renumbered, one whose title changed under the same
number as rewritten, heading included. Inside a rewritten section a line diff (difflib) shows the
text; the sources a section cites (References entries, not their numbers, which shift when a
citation is added earlier in the report) are compared as sets.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from deepdraft.export.sections import cited_sources, references, report_sections, section_texts

Change = Literal["added", "removed", "rewritten", "renumbered"]


@dataclass(frozen=True)
class SectionChange:
    key: str
    """The section's key in the newer version (the older one's when it was removed)."""
    change: Change
    heading: str
    """The heading in the newer version (the older one's when removed)."""
    old_heading: str = ""
    """The heading in the older version, when it differs."""
    lines: tuple[str, ...] = ()
    """A line diff of the section's Markdown ("-" old, "+" new), for a rewritten section."""
    sources_added: tuple[str, ...] = ()
    sources_removed: tuple[str, ...] = ()


@dataclass(frozen=True)
class ReportChanges:
    sections: list[SectionChange] = field(default_factory=list)
    sources_added: list[str] = field(default_factory=list)
    """References entries the newer version has and the older had not."""
    sources_removed: list[str] = field(default_factory=list)

    @property
    def unchanged(self) -> bool:
        return not (self.sections or self.sources_added or self.sources_removed)

    def summary(self) -> str:
        """One line for a version list: what changed, counted."""
        if self.unchanged:
            return "no change"
        counts: dict[str, int] = {}
        for section in self.sections:
            counts[section.change] = counts.get(section.change, 0) + 1
        kinds = [change for change in ("rewritten", "added", "removed", "renumbered") if change in counts]
        # "2 sections rewritten, 1 added": the noun once, on the first count.
        parts = [
            f"{counts[change]} section{'s' if counts[change] > 1 else ''} {change}"
            if place == 0
            else f"{counts[change]} {change}"
            for place, change in enumerate(kinds)
        ]
        sources = [
            f"{len(found)} source{'s' if len(found) > 1 else ''} {what}"
            for found, what in ((self.sources_added, "added"), (self.sources_removed, "removed"))
            if found
        ]
        return "; ".join(part for part in (", ".join(parts), ", ".join(sources)) if part)

    def readable(self) -> list[str]:
        """The changes as lines for a terminal: one block per changed section, then the sources."""
        if self.unchanged:
            return ["no change"]
        out: list[str] = []
        marks = {"added": "+", "removed": "-", "rewritten": "~", "renumbered": "~"}
        for section in self.sections:
            title = _title(section.heading)
            if section.change == "renumbered":
                out.append(f"~ {_title(section.old_heading)} → {title} (renumbered)")
            elif section.old_heading and section.old_heading != section.heading:
                out.append(f"~ {_title(section.old_heading)} → {title} (heading rewritten)")
            else:
                out.append(f"{marks[section.change]} {title} ({section.change})")
            out += [f"    {line}" for line in section.lines]
            out += [f"    cites now: {source}" for source in section.sources_added]
            out += [f"    no longer cites: {source}" for source in section.sources_removed]
        out += [f"+ source: {source}" for source in self.sources_added]
        out += [f"- source: {source}" for source in self.sources_removed]
        return out


def compare(old: str, new: str) -> ReportChanges:
    """The section-level changes from the report `old` to the report `new` (both Markdown)."""
    old_texts, new_texts = section_texts(old), section_texts(new)
    old_headings, new_headings = _own_headings(old), _own_headings(new)
    old_cites, new_cites = cited_sources(old), cited_sources(new)
    matched = _match(old_headings, new_headings)
    changes: list[SectionChange] = []
    for key, text in new_texts.items():
        old_key = matched.get(key)
        if old_key is None:
            changes.append(
                SectionChange(
                    key, "added", new_headings[key], sources_added=tuple(sorted(new_cites.get(key, ())))
                )
            )
            continue
        gained = tuple(sorted(new_cites.get(key, set()) - old_cites.get(old_key, set())))
        lost = tuple(sorted(old_cites.get(old_key, set()) - new_cites.get(key, set())))
        same_text = _body(old_texts[old_key]) == _body(text)
        if old_key != key:
            lines = () if same_text else _line_diff(_body(old_texts[old_key]), _body(text))
            changes.append(
                SectionChange(
                    key, "renumbered", new_headings[key], old_headings[old_key], lines, gained, lost
                )
            )
        elif old_texts[key] != text:
            old_heading = old_headings[key] if old_headings[key] != new_headings[key] else ""
            lines = () if same_text else _line_diff(_body(old_texts[key]), _body(text))
            changes.append(
                SectionChange(key, "rewritten", new_headings[key], old_heading, lines, gained, lost)
            )
    kept = set(matched.values())
    for key in (key for key in old_texts if key not in kept):
        changes.append(
            SectionChange(
                key, "removed", old_headings[key], sources_removed=tuple(sorted(old_cites.get(key, ())))
            )
        )
    old_sources, new_sources = set(references(old).values()), set(references(new).values())
    return ReportChanges(changes, sorted(new_sources - old_sources), sorted(old_sources - new_sources))


def _match(old: dict[str, str], new: dict[str, str]) -> dict[str, str]:
    """Which older section each newer one is (new key → old key), in three passes: the same number
    and title; then the same title under another number (a section inserted or removed before it);
    then the same number under another title (its heading was rewritten)."""
    matched: dict[str, str] = {}

    def pair(same: Callable[[str, str], bool]) -> None:
        taken = set(matched.values())
        for key in new:
            if key not in matched:
                found = next((o for o in old if o not in taken and same(o, key)), None)
                if found is not None:
                    matched[key] = found
                    taken.add(found)

    pair(lambda o, n: o == n and _title_without_number(old[o]) == _title_without_number(new[n]))
    pair(
        lambda o, n: (
            bool(_title_without_number(new[n]))
            and _title_without_number(old[o]) == _title_without_number(new[n])
        )
    )
    pair(lambda o, n: o == n)
    return matched


def _own_headings(markdown: str) -> dict[str, str]:
    """Each report section's own heading line, by key."""
    return {
        section.key: section.heading
        for section in report_sections(markdown)
        if section.key == section.part_of
    }


def _body(text: str) -> str:
    """A report section's Markdown without its first heading line."""
    first, _, rest = text.partition("\n")
    return rest.strip() if first.startswith("#") else text


def _line_diff(old: str, new: str) -> tuple[str, ...]:
    """The changed lines only (no context): a report's paragraphs are long single lines, so a
    context line would repeat a whole paragraph that did not change."""
    diff = difflib.unified_diff(old.splitlines(), new.splitlines(), lineterm="", n=0)
    return tuple(
        line for line in diff if line[:1] in "+-" and not line.startswith(("+++", "---")) and line[1:].strip()
    )


def _title(heading: str) -> str:
    return heading.lstrip("#").strip() or "(text before the first heading)"


def _title_without_number(heading: str) -> str:
    title = _title(heading)
    first, _, rest = title.partition(" ")
    return rest if first.replace(".", "").isdigit() else title


__all__ = ["Change", "ReportChanges", "SectionChange", "compare"]
