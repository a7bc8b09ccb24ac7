"""Reading a Markdown report back into sections, and comparing two versions of it section by section."""

from __future__ import annotations

import pytest

from deepdraft.export.changes import compare
from deepdraft.export.sections import (
    cited_sources,
    covers,
    headings,
    references,
    report_sections,
    section_texts,
)

REPORT = """# Tariffs in presidential addresses

## Executive summary

Revenue came first [1], protection later [2].

## 1 Revenue

Duties paid the public debt [1].

### Background

A heading the model wrote inside the node's text.

```
# not a heading: a line of a code block
```

### 1.1 The debt

Tied to the federal debt [1, p. 12; 2].

## 2 Protection

Industry and labor [2, 3].

## Conclusion

Both mattered [1, 2, 3].

## References

[1] Address of 1790 — `/kb/address-1790.md`

[2] Address of 1890 — `/kb/address-1890.md`, p. 12

[3] Address of 1930 — `/kb/address-1930.md`

<details>
<summary>About this report</summary>

- **Wall time:** 0.1 s

</details>
"""


def test_sections_are_cut_at_headings_only_where_markdown_has_them() -> None:
    sections = report_sections(REPORT)
    assert [(s.key, s.level, s.part_of) for s in sections] == [
        ("Tariffs in presidential addresses", 1, "Tariffs in presidential addresses"),
        ("Executive summary", 2, "Executive summary"),
        ("1", 2, "1"),
        ("Background", 3, "1"),  # inside node 1's text: an edit there is an edit of node 1
        ("1.1", 3, "1.1"),
        ("2", 2, "2"),
        ("Conclusion", 2, "Conclusion"),
        ("References", 2, "References"),
    ]
    background = sections[3]
    assert "# not a heading" in background.text  # a code block's line is text
    assert list(section_texts(REPORT)) == [
        "Tariffs in presidential addresses", "Executive summary", "1", "1.1", "2", "Conclusion", "References"
    ]  # fmt: skip
    assert "### Background" in section_texts(REPORT)["1"]
    assert "### 1.3 Notes" in headings(REPORT.replace("### 1.1 The debt", "### 1.3 Notes"))


def test_text_before_the_first_heading_and_repeated_headings_get_keys_of_their_own() -> None:
    sections = report_sections("Preface.\n\n## Notes\n\nOne.\n\n## Notes\n\nTwo.\n")
    assert [(s.key, s.text) for s in sections] == [("", "Preface."), ("Notes", "One."), ("Notes (2)", "Two.")]


@pytest.mark.parametrize(
    ("wanted", "key", "covered"),
    [
        ("3", "3", True),
        ("3", "3.2.1", True),
        ("section-3.2", "3.2", True),
        ("3", "33", False),
        ("3.2", "3", False),
        ("conclusion", "Conclusion", True),
        ("Conclusion", "3", False),
    ],
)
def test_a_section_id_covers_its_node_and_the_nodes_under_it(wanted: str, key: str, covered: bool) -> None:
    assert covers(wanted, key) is covered


def test_citations_map_to_references_entries_in_both_styles() -> None:
    assert references(REPORT)["2"] == "Address of 1890 — `/kb/address-1890.md`"  # pages are not the source
    cited = cited_sources(REPORT)
    assert cited["1.1"] == {
        "Address of 1790 — `/kb/address-1790.md`",
        "Address of 1890 — `/kb/address-1890.md`",
    }
    assert cited["2"] == {
        "Address of 1890 — `/kb/address-1890.md`",
        "Address of 1930 — `/kb/address-1930.md`",
    }
    assert "References" not in cited
    dated = (
        "# T\n\n## 1 Revenue\n\nDuties (Address, 1790, p. 3; Message, 1890).\n\n## 2 Other\n\nNone.\n\n"
        "## References\n\n- Address (1790). `/kb/a.md`, p. 3\n\n- Message (1890). `/kb/b.md`\n"
    )
    assert cited_sources(dated)["1"] == {"Address — `/kb/a.md`", "Message — `/kb/b.md`"}
    assert cited_sources(dated)["2"] == set()
    titled = "## References\n\n- Smith (1790). Annual message. <https://example.org/a>, pp. 3, 4\n"
    assert references(titled) == {"Smith, 1790": "Annual message — <https://example.org/a>"}
    # The same sources in the other style are the same sources: only the marks changed.
    numbered = "# T\n\n## 1 Revenue\n\nDuties [1, p. 3; 2].\n\n## 2 Other\n\nNone.\n\n## References\n\n"
    numbered += "[1] Address — `/kb/a.md`, p. 3\n\n[2] Message — `/kb/b.md`\n"
    changes = compare(numbered, dated)
    assert changes.sources_added == changes.sources_removed == []
    [revenue, listing] = changes.sections
    assert (revenue.key, revenue.sources_added, revenue.sources_removed) == ("1", (), ())
    assert listing.key == "References"


def test_compare_names_rewritten_added_removed_and_renumbered_sections_and_sources() -> None:
    newer = (
        REPORT.replace("Industry and labor [2, 3].", "Industry, labor and farms [3].")
        .replace("## 2 Protection", "## 2 Reform\n\nReformers [1].\n\n## 3 Protection")
        .replace("### 1.1 The debt\n\nTied to the federal debt [1, p. 12; 2].\n\n", "")
        .replace("- **Wall time:** 0.1 s", "- **Wall time:** 0.2 s")
    )
    changes = compare(REPORT, newer)
    by_key = {(c.key, c.change): c for c in changes.sections}
    assert set(by_key) == {
        ("2", "added"),
        ("3", "renumbered"),
        ("1.1", "removed"),
        ("References", "rewritten"),
    }
    protection = by_key[("3", "renumbered")]
    assert protection.old_heading == "## 2 Protection" and protection.heading == "## 3 Protection"
    assert protection.lines == ("-Industry and labor [2, 3].", "+Industry, labor and farms [3].")
    assert protection.sources_removed == ("Address of 1890 — `/kb/address-1890.md`",)
    assert changes.sources_added == [] and changes.sources_removed == []
    assert changes.summary() == "1 section rewritten, 1 added, 1 removed, 1 renumbered"
    readable = "\n".join(changes.readable())
    assert "~ 2 Protection → 3 Protection (renumbered)" in readable
    assert "+ 2 Reform (added)" in readable and "- 1.1 The debt (removed)" in readable
    assert "    no longer cites: Address of 1890 — `/kb/address-1890.md`" in readable


def test_compare_of_a_report_with_itself_is_no_change_and_sources_are_compared_as_entries() -> None:
    assert compare(REPORT, REPORT).unchanged and compare(REPORT, REPORT).summary() == "no change"
    fewer = REPORT.replace("[3] Address of 1930 — `/kb/address-1930.md`\n\n", "").replace("[2, 3]", "[2]")
    changes = compare(REPORT, fewer.replace("[1, 2, 3]", "[1, 2]"))
    assert changes.sources_removed == ["Address of 1930 — `/kb/address-1930.md`"]
    assert changes.summary() == "3 sections rewritten; 1 source removed"
    heading = compare(REPORT, REPORT.replace("## 2 Protection", "## 2 Protection of industry"))
    [renamed] = heading.sections
    assert renamed.change == "rewritten" and renamed.old_heading == "## 2 Protection"
    assert heading.readable()[0] == "~ 2 Protection → 2 Protection of industry (heading rewritten)"
