"""Tests of the reader's Markdown: headings, numbered source citations, References, gaps."""

from __future__ import annotations

import re
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deepdraft.core.evidence import EvidenceRegistry, Passage, Source
from deepdraft.core.outline import Outline
from deepdraft.export.report import clean_title, render_markdown


def _registry(*passages: tuple[str, str, int | None]) -> EvidenceRegistry:
    """(text, doc id, page) triples registered in order: textid1, textid2, ..."""
    registry = EvidenceRegistry()
    for text, doc, page in passages:
        location = f"https://example.org/{doc}" if doc.startswith("web") else f"/corpus/{doc}.pdf"
        registry.register(Passage(text, Source(doc, f"Document {doc}", location, page=page)))
    return registry


def _body(markdown: str) -> str:
    return markdown.split("## References")[0]


def _references(markdown: str) -> list[str]:
    if "## References" not in markdown:
        return []
    tail = markdown.split("## References")[1].split("<details>")[0]
    return [line for line in tail.splitlines() if line.strip()]


# ---- headings ------------------------------------------------------------------------------------


def test_headings_are_numbered_by_position() -> None:
    outline = Outline.create("Battery Report", [("Background", "a"), ("Families", "b"), ("Outlook", "c")])
    outline.add_children("section-2", [("Oxides", "x"), ("Sulfides", "y")])
    outline.add_children("section-2.1", [("Garnets", "g"), ("Perovskites", "p")])
    for loc in outline.walk():
        loc.node.content = f"Text of {loc.node.title}."
    markdown = render_markdown(outline, EvidenceRegistry()).markdown
    headings = [line for line in markdown.splitlines() if line.startswith("#")]
    assert headings == [
        "# Battery Report",
        "## 1 Background",
        "## 2 Families",
        "### 2.1 Oxides",
        "#### 2.1.1 Garnets",
        "#### 2.1.2 Perovskites",
        "### 2.2 Sulfides",
        "## 3 Outlook",
    ]
    assert "Text of Garnets." in markdown
    assert "## References" not in markdown  # nothing cited, no empty References section
    assert markdown.endswith("\n") and not markdown.endswith("\n\n")
    assert "\n\n\n" not in markdown


@pytest.mark.parametrize(
    ("title", "expected"),
    [
        ("1. Introduction", "Introduction"),
        ("2.3 Methods", "Methods"),
        ("2.1. Sub", "Sub"),
        ("1) First", "First"),
        ("1 Introduction", "Introduction"),
        ("Section 2: Results", "Results"),
        ("section-3 Outlook", "Outlook"),
        ("Chapter 4. Limits", "Limits"),
        ("第一章 绪论", "绪论"),
        ("第3节 方法", "方法"),
        ("一、背景", "背景"),
        ("十二、结论", "结论"),
        ("(1) Scope", "Scope"),
        ("（2）范围", "范围"),
        ("1、引言", "引言"),
        # Titles that merely start with a number or a digit-word keep it.
        ("3D Printing of Electrodes", "3D Printing of Electrodes"),
        ("5G Networks", "5G Networks"),
        ("2024 Market Outlook", "2024 Market Outlook"),
        ("2024年市场回顾", "2024年市场回顾"),
        ("1.5x Faster Charging", "1.5x Faster Charging"),
        ("Sectional Views", "Sectional Views"),
        ("  Plain Title ", "Plain Title"),
        ("1.", "1."),  # nothing would be left: keep the original
    ],
)
def test_clean_title(title: str, expected: str) -> None:
    assert clean_title(title) == expected


def test_title_numbering_is_removed_from_headings() -> None:
    outline = Outline.create("1. Report", [("1. Intro", "a"), ("Section 2: Body", "b"), ("第三章 结论", "c")])
    for section in outline.sections:
        section.content = "Some text."
    markdown = render_markdown(outline, EvidenceRegistry()).markdown
    assert [line for line in markdown.splitlines() if line.startswith("#")] == [
        "# Report",
        "## 1 Intro",
        "## 2 Body",
        "## 3 结论",
    ]


def test_a_heading_repeating_the_node_title_is_dropped() -> None:
    outline = Outline.create("T", [("Introduction", "a"), ("Methods", "b"), ("Results", "c")])
    outline.sections[0].content = "## Introduction\n\nThe body."
    outline.sections[1].content = "# 2. methods ##\nMethod body."  # numbering, case, closing hashes
    outline.sections[2].content = "## Key Results\nResult body."  # a different title is kept
    markdown = render_markdown(outline, EvidenceRegistry()).markdown
    assert markdown.count("Introduction") == 1
    assert markdown.count("ethods") == 1
    assert "### Key Results" in markdown
    assert "## 1 Introduction\n\nThe body." in markdown
    assert "## 2 Methods\n\nMethod body." in markdown


def test_inner_headings_are_pushed_below_the_node_level() -> None:
    outline = Outline.create("T", [("A", "a"), ("B", "b"), ("C", "c")])
    outline.add_children("section-2", [("B1", "x"), ("B2", "y")])
    outline.sections[0].content = "Intro.\n# Big\ntext\n#### Small\nmore"
    outline.find("section-2.1").node.content = "Sub text.\n## Inner\nbody"  # type: ignore[union-attr]
    outline.sections[
        2
    ].content = "Code:\n```python\n# a comment, not a heading\nx = 1\n```\nC# and #hashtags stay."
    markdown = render_markdown(outline, EvidenceRegistry()).markdown
    lines = markdown.splitlines()
    assert "### Big" in lines  # under "## 1 A"
    assert "#### Small" in lines  # already deep enough: kept
    assert "#### Inner" in lines  # under "### 2.1 B1"
    assert "# a comment, not a heading" in lines
    assert "C# and #hashtags stay." in lines
    # Demoted headings sit on their own paragraph.
    assert "Intro.\n\n### Big\n\ntext" in markdown


def test_headings_are_never_deeper_than_six() -> None:
    outline = Outline.create("T", [("A", "a"), ("B", "b"), ("C", "c")])
    outline.add_children("section-1", [("A1", "x"), ("A2", "y")])
    outline.add_children("section-1.1", [("A1a", "x"), ("A1b", "y")])
    outline.find("section-1.1.1").node.content = "x\n## Deep\n###### Deepest\ny"  # type: ignore[union-attr]
    markdown = render_markdown(outline, EvidenceRegistry()).markdown
    assert "##### Deep" in markdown.splitlines()
    assert "###### Deepest" in markdown.splitlines()


# ---- citations and references ---------------------------------------------------------------------


def test_citations_are_numbered_by_source_in_order_of_first_appearance() -> None:
    registry = _registry(
        ("passage one of A", "docA", None),  # textid1
        ("passage two of B", "docB", None),  # textid2
        ("passage three of A", "docA", None),  # textid3
        ("passage four of C", "webC", None),  # textid4
    )
    outline = Outline.create("T", [("S1", "a"), ("S2", "b"), ("S3", "c")])
    outline.sections[0].content = "First claim \\cite{textid2}. Second claim \\cite{textid1, textid4}."
    outline.sections[1].content = "Again A \\cite{textid3} and B \\cite{textid2, textid3}."
    outline.sections[2].content = "No citation here."
    report = render_markdown(outline, registry)
    body = _body(report.markdown)
    assert "First claim [1]. Second claim [2, 3]." in body
    assert "Again A [2] and B [1, 2]." in body  # a passage of A shares A's number
    assert "\\cite" not in report.markdown
    assert [(r.number, r.source.doc_id) for r in report.references] == [(1, "docB"), (2, "docA"), (3, "webC")]
    assert _references(report.markdown) == [
        "[1] Document docB — `/corpus/docB.pdf`",
        "[2] Document docA — `/corpus/docA.pdf`",
        "[3] Document webC — <https://example.org/webC>",
    ]


def test_earlier_numbers_are_kept_and_new_sources_take_the_next_free_ones() -> None:
    """A report changed after it was finished (`deepdraft deepen`): "[2]" still means the source it
    meant, a source cited first in a new part ahead of the others gets a new number, and a source
    no longer cited leaves its number unused rather than hand it to another."""
    registry = _registry(
        ("passage of A", "docA", None),  # textid1
        ("passage of B", "docB", None),  # textid2
        ("passage of C", "docC", None),  # textid3
        ("passage of N", "docN", None),  # textid4, new
    )
    outline = Outline.create("T", [("S1", "a"), ("S2", "b"), ("S3", "c")])
    outline.sections[0].content = "About N \\cite{textid4} and A \\cite{textid1}."
    outline.sections[1].content = "About C \\cite{textid3}."
    earlier = {"docA": 1, "docB": 2, "docC": 3}
    report = render_markdown(outline, registry, numbering=earlier)
    assert [(r.number, r.source.doc_id) for r in report.references] == [(1, "docA"), (3, "docC"), (4, "docN")]
    assert "About N [4] and A [1]." in _body(report.markdown) and "About C [3]." in _body(report.markdown)
    assert _references(report.markdown)[0].startswith("[1] Document docA")
    # Without earlier numbers, the order of first citation decides, as for any new report.
    fresh = render_markdown(outline, registry)
    assert [(r.number, r.source.doc_id) for r in fresh.references] == [(1, "docN"), (2, "docA"), (3, "docC")]


def test_a_passage_with_a_page_is_cited_with_it() -> None:
    registry = _registry(
        ("page twelve", "book", 12),  # textid1
        ("page three", "book", 3),  # textid2
        ("no page", "web1", None),  # textid3
    )
    outline = Outline.create("T", [("S1", "a"), ("S2", "b"), ("S3", "c")])
    outline.sections[0].content = "One \\cite{textid1}. Two \\cite{textid3, textid1}."
    outline.sections[1].content = "Both pages \\cite{textid2, textid1}."
    outline.sections[2].content = "Three \\cite{textid2}."
    report = render_markdown(outline, registry)
    body = _body(report.markdown)
    assert "One [1, p. 12]. Two [1, p. 12; 2]." in body
    assert "Both pages [1, pp. 3, 12]." in body
    assert "Three [1, p. 3]." in body
    assert report.references[0].pages == (3, 12)
    assert _references(report.markdown)[0] == "[1] Document book — `/corpus/book.pdf`, pp. 3, 12"


def test_unknown_keys_are_dropped_and_never_numbered() -> None:
    registry = _registry(("real", "docA", None))
    outline = Outline.create("T", [("S1", "a"), ("S2", "b"), ("S3", "c")])
    outline.sections[
        0
    ].content = "Ghost \\cite{textid9}. Mixed \\cite{textid9, textid1}. Prefixed \\cite{bibkey: textid1}."
    report = render_markdown(outline, registry)
    assert "Ghost. Mixed [1]. Prefixed [1]." in report.markdown  # no blank left before the full stop
    assert len(report.references) == 1


def test_malformed_citation_commands_render_as_citations_or_not_at_all() -> None:
    # Text journaled as the model wrote it: no `\\citetextid1` may reach the reader verbatim.
    registry = _registry(("real", "docA", None), ("other", "docB", None))
    outline = Outline.create("T", [("S1", "a"), ("S2", "b"), ("S3", "c")])
    outline.sections[0].content = "Glued \\citetextid1. Bracketed \\cite[textid2]. Bare \\cite."
    report = render_markdown(outline, registry, summary="In short \\citep{textid2}.")
    assert "Glued [2]. Bracketed [1]. Bare." in report.markdown
    assert "In short [1]." in report.markdown  # the summary is numbered first
    assert "cite" not in report.markdown.split("<details>")[0]
    assert len(report.references) == 2


def test_reference_entry_falls_back_to_location_without_a_title() -> None:
    registry = EvidenceRegistry()
    registry.register(Passage("text", Source("d", "  ", "notes/file.md")))
    outline = Outline.create("T", [("S1", "a"), ("S2", "b"), ("S3", "c")])
    outline.sections[0].content = "Claim \\cite{textid1}."
    assert _references(render_markdown(outline, registry).markdown) == ["[1] notes/file.md — `notes/file.md`"]


# ---- unwritten nodes -----------------------------------------------------------------------------


def test_unwritten_nodes_show_the_reason_and_plan_in_italics() -> None:
    outline = Outline.create(
        "T", [("Written", "a"), ("Skipped", "plan of skipped."), ("Pending", "plan\nof pending")]
    )
    outline.sections[0].content = "Done."
    outline.sections[1].note = "no evidence for it was found in the documents"
    report = render_markdown(outline, EvidenceRegistry(), stop_note="the step budget ran out")
    lines = report.markdown.splitlines()
    assert "*Not written — no evidence for it was found in the documents. Planned: plan of skipped*" in lines
    assert "*Not written — the step budget ran out. Planned: plan of pending*" in lines
    assert report.unwritten == ["section-2", "section-3"]


def test_unwritten_node_without_any_reason_still_says_so() -> None:
    outline = Outline.create("T", [("A", "a"), ("B", "b"), ("C", "c")])
    report = render_markdown(outline, EvidenceRegistry())
    assert report.markdown.count("*Not written — the run ended before this part was written. Planned:") == 3
    assert report.unwritten == ["section-1", "section-2", "section-3"]


def test_a_split_parent_keeps_its_text_before_its_children() -> None:
    outline = Outline.create("T", [("A", "a"), ("B", "b"), ("C", "c")])
    outline.sections[1].content = "Parent text."
    outline.add_children("section-2", [("B1", "x"), ("B2", "y")])
    outline.find("section-2.1").node.content = "Child text."  # type: ignore[union-attr]
    markdown = render_markdown(outline, EvidenceRegistry()).markdown
    assert markdown.index("Parent text.") < markdown.index("### 2.1 B1") < markdown.index("Child text.")


# ---- merging, summary, conclusion, language ----------------------------------------------------


def test_duplicates_in_one_citation_and_adjacent_citations_merge() -> None:
    registry = _registry(("a1", "docA", None), ("a2", "docA", None), ("b", "docB", None))
    outline = Outline.create("T", [("S1", "a"), ("S2", "b"), ("S3", "c")])
    outline.sections[
        0
    ].content = "Same source twice \\cite{textid1, textid2}. Adjacent \\cite{textid1}\\cite{textid3}."
    outline.sections[
        1
    ].content = "Spaced \\cite{textid3} \\cite{textid2}. Repeated key \\cite{textid3, textid3}."
    body = _body(render_markdown(outline, registry).markdown)
    assert "Same source twice [1]. Adjacent [1, 2]." in body
    assert "Spaced [1, 2]. Repeated key [2]." in body  # numbers in a mark ascend


def test_summary_comes_first_and_is_numbered_first_conclusion_comes_last() -> None:
    registry = _registry(("a", "docA", None), ("b", "docB", None))
    outline = Outline.create("Tariffs", [("S1", "a"), ("S2", "b"), ("S3", "c")])
    for section in outline.sections:
        section.content = "Body \\cite{textid1}."
    report = render_markdown(
        outline,
        registry,
        summary="In short \\cite{textid2}.",
        conclusion="So \\cite{textid1, textid2}.",
        question="How did presidents argue about tariffs?",
    )
    headings = [line for line in report.markdown.splitlines() if line.startswith("## ")]
    assert headings == [
        "## Executive summary",
        "## 1 S1",
        "## 2 S2",
        "## 3 S3",
        "## Conclusion",
        "## References",
    ]
    assert "## Executive summary\n\nIn short [1]." in report.markdown  # docB is cited first, in the summary
    assert "## 1 S1\n\nBody [2]." in report.markdown
    assert "## Conclusion\n\nSo [1, 2]." in report.markdown
    assert report.summary == "In short [1]." and report.conclusion == "So [1, 2]."


def test_a_chinese_report_has_chinese_headings() -> None:
    registry = _registry(("甲", "docA", None))
    outline = Outline.create("关税报告", [("背景", "a"), ("争论", "b"), ("结论部分", "c")])
    for section in outline.sections:
        section.content = "正文内容\\cite{textid1}。"
    report = render_markdown(
        outline,
        registry,
        summary="总之\\cite{textid1}。",
        conclusion="综上。",
        question="总统们如何讨论关税？",
    )
    headings = [line for line in report.markdown.splitlines() if line.startswith("## ")]
    assert headings[0] == "## 摘要" and headings[-2:] == ["## 结论", "## 参考文献"]
    assert "正文内容[1]。" in report.markdown


def test_the_manifest_closes_the_report_in_a_collapsed_block() -> None:
    registry = _registry(("a", "docA", None))
    outline = Outline.create("T", [("S1", "a"), ("S2", "b"), ("S3", "c")])
    outline.sections[0].content = "Claim \\cite{textid1}."
    manifest = {
        "deepdraft": "9.9",
        "run_id": "r1",
        "model": "m",
        "tokens": {"prompt": 1200, "completion": 30},
    }
    markdown = render_markdown(outline, registry, manifest=manifest).markdown
    about = markdown[markdown.index("<details>") :]
    assert about.startswith("<details>\n<summary>About this report</summary>")
    assert "- **deepdraft:** 9.9" in about and "- **Tokens:** 1,200 in, 30 out" in about
    assert markdown.rstrip().endswith("</details>")
    assert _references(markdown) == ["[1] Document docA — `/corpus/docA.pdf`"]


# ---- author-date style ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _DatedSource(Source):
    """A source with the bibliographic metadata some retrievers provide (read by duck typing)."""

    year: int | None = None
    authors: tuple[str, ...] = ()


def test_author_date_style_uses_short_titles_years_and_sorts_alphabetically() -> None:
    registry = EvidenceRegistry()
    registry.register(
        Passage("p1", _DatedSource("d1", "Zebra migration across the great plains of Kenya", "/z.pdf"))
    )
    registry.register(Passage("p2", _DatedSource("d2", "Annual message", "/a.md", page=4, year=1790)))
    registry.register(
        Passage("p3", _DatedSource("d3", "Survey", "https://x.org/s", year=2001, authors=("Ada Lovelace",)))
    )
    outline = Outline.create("T", [("S1", "a"), ("S2", "b"), ("S3", "c")])
    outline.sections[0].content = "First \\cite{textid1}. Then \\cite{textid2, textid3}."
    report = render_markdown(outline, registry, style="author-date")
    body = _body(report.markdown)
    assert "First (Zebra migration across the great plains…, n.d.)." in body
    assert "Then (Annual message, 1790, p. 4; Ada Lovelace, 2001)." in body
    assert _references(report.markdown) == [
        "- Ada Lovelace (2001). Survey. <https://x.org/s>",
        "- Annual message (1790). `/a.md`, p. 4",
        "- Zebra migration across the great plains… (n.d.). Zebra migration across the great plains of Kenya. "
        "`/z.pdf`",
    ]
    assert [r.number for r in report.references] == [1, 2, 3]


def test_author_date_labels_that_would_collide_get_letters() -> None:
    registry = EvidenceRegistry()
    registry.register(Passage("p1", _DatedSource("d1", "Report", "/one.md", year=1990)))
    registry.register(Passage("p2", _DatedSource("d2", "Report", "/two.md", year=1990)))
    registry.register(Passage("p3", _DatedSource("d3", "Notes", "/n1.md")))
    registry.register(Passage("p4", _DatedSource("d4", "Notes", "/n2.md")))
    outline = Outline.create("T", [("S1", "a"), ("S2", "b"), ("S3", "c")])
    outline.sections[0].content = "A \\cite{textid1}. B \\cite{textid2}. C \\cite{textid3, textid4}."
    body = _body(render_markdown(outline, registry, style="author-date").markdown)
    assert "A (Report, 1990a). B (Report, 1990b). C (Notes, n.d.-a; Notes, n.d.-b)." in body


def test_an_unknown_style_is_refused() -> None:
    outline = Outline.create("T", [("S1", "a"), ("S2", "b"), ("S3", "c")])
    with pytest.raises(ValueError, match="unknown references style"):
        render_markdown(outline, EvidenceRegistry(), style="harvard")  # type: ignore[arg-type]


# ---- property: numbers and References always agree -----------------------------------------------

_DOCS = ["docA", "docB", "webC", "docD"]
_NUMBERED_MARK = re.compile(r"\[(\d+(?:, pp?\. [\d, ]+)?(?:(?:; |, )\d+(?:, pp?\. [\d, ]+)?)*)\]")


@st.composite
def _reports(draw: st.DrawFn) -> tuple[Outline, EvidenceRegistry, str, str]:
    registry = EvidenceRegistry()
    for i in range(draw(st.integers(1, 8))):
        doc = draw(st.sampled_from(_DOCS))
        page = draw(st.one_of(st.none(), st.integers(1, 40)))
        year = draw(st.one_of(st.none(), st.integers(1700, 2030)))
        title = draw(st.sampled_from(["Title", "Title", f"Title {doc}", "  "]))
        source = _DatedSource(doc, title, f"/c/{doc}", page=page, year=year)
        registry.register(Passage(f"passage {i}", source))
    keys = [*registry.items, "textid77"]  # an unknown key now and then

    def text() -> str:
        groups = draw(st.lists(st.lists(st.sampled_from(keys), min_size=1, max_size=3), max_size=4))
        joiner = draw(st.sampled_from(["", " ", ". "]))  # adjacent citations, or separate sentences
        cites = joiner.join("\\cite{" + ", ".join(g) + "}" for g in groups)
        return f"Claim {cites}." if groups else "Plain."

    outline = Outline.create("T", [(f"S{i}", "p") for i in range(draw(st.integers(3, 5)))])
    if draw(st.booleans()):
        outline.add_children("section-2", [("X", "x"), ("Y", "y")])
    for loc in outline.walk():
        if draw(st.booleans()):
            loc.node.content = text()
    summary = text() if draw(st.booleans()) else ""
    conclusion = text() if draw(st.booleans()) else ""
    return outline, registry, summary, conclusion


def _mark_numbers(mark: str) -> list[int]:
    """The reference numbers in a numbered mark's inside: "1, 2" or "1, pp. 3, 7; 2"."""
    if "p." in mark:  # with pages, references are separated by semicolons
        return [int(piece.split(",")[0]) for piece in mark.split("; ")]
    return [int(piece) for piece in mark.split(", ")]


def _cited_docs(registry: EvidenceRegistry, *texts: str) -> set[str]:
    return {
        registry[key].source.doc_id
        for text in texts
        for key in re.findall(r"textid\d+", text)
        if key in registry
    }


@settings(max_examples=80, deadline=None)
@given(_reports())
def test_every_number_has_exactly_one_reference_and_every_reference_is_cited(
    case: tuple[Outline, EvidenceRegistry, str, str],
) -> None:
    outline, registry, summary, conclusion = case
    report = render_markdown(outline, registry, summary=summary, conclusion=conclusion)
    body = _body(report.markdown)
    marks = _NUMBERED_MARK.findall(body)
    cited = [number for mark in marks for number in _mark_numbers(mark)]
    numbers = [r.number for r in report.references]
    # Every number used has one entry; every entry is used; numbers run 1..k by first appearance.
    assert sorted(set(cited)) == numbers == list(range(1, len(numbers) + 1))
    assert list(dict.fromkeys(cited)) == numbers
    entries = _references(report.markdown)
    assert [int(re.match(r"\[(\d+)\]", e).group(1)) for e in entries] == numbers  # type: ignore[union-attr]
    # One entry per cited source document.
    texts = [summary, conclusion, *(loc.node.content or "" for loc in outline.walk())]
    assert sorted(r.source.doc_id for r in report.references) == sorted(_cited_docs(registry, *texts))
    assert "\\cite" not in report.markdown
    assert "][" not in body  # adjacent citations are always merged


@settings(max_examples=50, deadline=None)
@given(_reports())
def test_author_date_labels_in_the_text_are_exactly_the_references(
    case: tuple[Outline, EvidenceRegistry, str, str],
) -> None:
    outline, registry, summary, conclusion = case
    report = render_markdown(outline, registry, summary=summary, conclusion=conclusion, style="author-date")
    labels = {r.label for r in report.references}
    assert len(labels) == len(report.references)  # labels are unique, so a reader can find the entry
    body = _body(report.markdown)
    cited = {
        piece.split(", p.")[0].split(", pp.")[0]
        for mark in re.findall(r"\(([^()]*)\)", body)
        for piece in mark.split("; ")
    }
    assert cited == labels
    order = [(r.name.casefold(), r.year) for r in report.references]
    assert order == sorted(order)  # alphabetical, as author-date lists are
    entries = _references(report.markdown)
    assert [entry.split(" (")[0] for entry in entries] == [f"- {r.name}" for r in report.references]
