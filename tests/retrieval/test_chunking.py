"""Chunking: exact offsets, bounded sizes, overlap within sections, heading paths, Chinese text."""

from __future__ import annotations

import sys
import tracemalloc
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deepdraft.core.tokens import count_tokens
from deepdraft.retrieval.documents import chunking
from deepdraft.retrieval.documents.chunking import Chunk, chunk_document, first_heading, iter_blocks
from deepdraft.retrieval.documents.values import Document, Page


def doc(text: str) -> Document:
    return Document("d", "Title", "/tmp/d.md", text)


def check_invariants(document: Document, chunks: list[Chunk], budget: int, overlap: int) -> None:
    text = document.text
    for chunk in chunks:
        assert chunk.text == text[chunk.start : chunk.end]
        assert chunk.text and chunk.text == chunk.text.strip()
        assert count_tokens(chunk.text) <= budget
        assert (chunk.doc_id, chunk.title, chunk.location) == ("d", "Title", "/tmp/d.md")
    for before, after in pairwise(chunks):
        assert before.start < after.start and before.end < after.end
        if after.start < before.end:  # overlapping: same section, and no more than asked
            assert overlap > 0 and after.headings == before.headings
            assert count_tokens(text[after.start : before.end]) <= overlap
    covered = [False] * len(text)
    for chunk in chunks:
        covered[chunk.start : chunk.end] = [True] * (chunk.end - chunk.start)
    assert all(covered[i] for i, char in enumerate(text) if not char.isspace())


FRAGMENTS = st.sampled_from(
    [
        "alpha ",
        "beta",
        "gamma. ",
        "Delta! ",
        "中",
        "文字",
        "。",
        "？",
        "\n",
        "\n\n",
        "# ",
        "## Heading\n",
        "```\n",
        "    ",
        "supercalifragilisticexpialidocious",
        "x" * 40,
        "——",
        "\t",
        "é",
    ]
)


@settings(max_examples=300, deadline=None)
@given(
    parts=st.lists(FRAGMENTS, max_size=120),
    budget=st.integers(min_value=1, max_value=60),
    overlap=st.integers(min_value=0, max_value=40),
)
def test_chunk_invariants_hold_for_any_text(parts: list[str], budget: int, overlap: int) -> None:
    document = doc("".join(parts))
    chunks = chunk_document(document, budget, overlap)
    check_invariants(document, chunks, budget, min(overlap, budget - 1))


@settings(max_examples=100, deadline=None)
@given(text=st.text(max_size=400), budget=st.integers(1, 30), overlap=st.integers(0, 10))
def test_chunk_invariants_hold_for_arbitrary_unicode(text: str, budget: int, overlap: int) -> None:
    document = doc(text)
    check_invariants(document, chunk_document(document, budget, overlap), budget, min(overlap, budget - 1))


@settings(max_examples=300, deadline=None)
@given(
    parts=st.lists(FRAGMENTS, max_size=120),
    budget=st.integers(min_value=1, max_value=60),
    overlap=st.integers(min_value=0, max_value=40),
)
def test_cutting_a_unit_a_few_parts_at_a_time_gives_the_same_chunks(
    parts: list[str], budget: int, overlap: int
) -> None:
    document = doc("".join(parts))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(chunking, "CUT_BATCH", 10**9)
        at_once = chunk_document(document, budget, overlap)
        patch.setattr(chunking, "CUT_BATCH", 1)
        lazily = chunk_document(document, budget, overlap)
    assert lazily == at_once


def test_an_endless_paragraph_is_chunked_in_bounded_memory() -> None:
    # 400,000 words without a full stop: cut into all of its words at once, they took ~50 MB.
    document = doc("word " * 400_000)
    tracemalloc.start()
    try:
        chunks = chunk_document(document, 220, 40)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    check_invariants(document, chunks, 220, 40)
    chunk_bytes = sum(sys.getsizeof(chunk.text) + 200 for chunk in chunks)
    assert peak < chunk_bytes + 5 * 1024 * 1024, (peak, chunk_bytes)


def test_heading_paths_and_title_travelling_with_first_section() -> None:
    text = (
        "# Report\n\nIntro text.\n\n## Trade\n\nAbout tariffs.\n\n### Details\n\nSmall print.\n\n"
        "## Migration\n\nAbout borders.\n"
    )
    chunks = chunk_document(doc(text), 200, 20)
    assert [(c.headings, c.text) for c in chunks] == [
        (("Report",), "# Report\n\nIntro text."),
        (("Report", "Trade"), "## Trade\n\nAbout tariffs."),
        (("Report", "Trade", "Details"), "### Details\n\nSmall print."),
        (("Report", "Migration"), "## Migration\n\nAbout borders."),
    ]


def test_empty_headings_join_the_next_section() -> None:
    chunks = chunk_document(doc("# Book\n\n## Chapter 1\n\nIt begins."), 200, 20)
    assert [(c.headings, c.text) for c in chunks] == [
        (("Book", "Chapter 1"), "# Book\n\n## Chapter 1\n\nIt begins.")
    ]


def test_code_fences_are_one_block_and_hide_hash_lines() -> None:
    text = "Intro.\n\n```sh\n# install\n\npip install x\n```\n\nAfter."
    blocks = list(iter_blocks(text))
    assert [text[b.start : b.end] for b in blocks] == [
        "Intro.",
        "```sh\n# install\n\npip install x\n```",
        "After.",
    ]
    assert all(b.level == 0 for b in blocks)
    assert first_heading(text) is None


def test_short_paragraphs_are_packed_and_paragraph_boundaries_respected() -> None:
    paragraphs = [f"Paragraph {i} talks about topic {i} in a few words." for i in range(12)]
    text = "\n\n".join(paragraphs)
    chunks = chunk_document(doc(text), 60, 0)
    assert 1 < len(chunks) < len(paragraphs)
    for chunk in chunks:  # every chunk is whole paragraphs
        assert chunk.text.startswith("Paragraph") and chunk.text.endswith(".")
        assert all(p in paragraphs for p in chunk.text.split("\n\n"))


def sentences(n: int) -> list[str]:
    return [f"Sentence number {i} explains one more fact about the economy of the state." for i in range(n)]


def test_long_paragraph_is_cut_at_sentences_with_overlap() -> None:
    items = sentences(30)
    text = " ".join(items)
    chunks = chunk_document(doc(text), 80, 20)
    check_invariants(doc(text), chunks, 80, 20)
    assert len(chunks) > 3
    for chunk in chunks:
        assert chunk.text.startswith("Sentence number") and chunk.text.endswith("state.")
    for before, after in pairwise(chunks):
        shared = count_tokens(text[after.start : before.end])
        assert 10 <= shared <= 20  # about the overlap, from a sentence start


def test_overlap_falls_back_to_words_when_sentences_are_long() -> None:
    text = " ".join(f"word{i}" for i in range(400))  # one endless sentence
    chunks = chunk_document(doc(text), 50, 10)
    check_invariants(doc(text), chunks, 50, 10)
    for before, after in pairwise(chunks):
        assert count_tokens(text[after.start : before.end]) >= 8
        assert text[after.start - 1] == " "  # starts at a word


def test_no_overlap_across_sections() -> None:
    body = " ".join(sentences(12))
    text = f"## One\n\n{body}\n\n## Two\n\n{body}"
    chunks = chunk_document(doc(text), 60, 20)
    two = text.index("## Two")
    first_of_two = next(c for c in chunks if c.headings == ("Two",))
    assert first_of_two.start == two
    assert all(c.end < two for c in chunks if c.headings == ("One",))


def test_chinese_text_is_cut_at_full_stops() -> None:
    sentence = "政府今年提出了新的关税政策，引起了广泛的讨论。"
    text = sentence * 40
    chunks = chunk_document(doc(text), 60, 12)
    check_invariants(doc(text), chunks, 60, 12)
    assert len(chunks) > 5
    assert all(c.text.endswith("。") for c in chunks)
    for before, after in pairwise(chunks):
        assert after.start < before.end  # overlapping, even without spaces


def test_chinese_without_punctuation_is_cut_at_characters() -> None:
    text = "移民" * 200
    chunks = chunk_document(doc(text), 50, 0)
    check_invariants(doc(text), chunks, 50, 0)
    assert [len(c.text) for c in chunks] == [50] * 8


def test_endless_token_is_cut_at_token_boundaries() -> None:
    text = "A" * 1000
    chunks = chunk_document(doc(text), 40, 5)
    check_invariants(doc(text), chunks, 40, 5)
    assert [c.end - c.start for c in chunks[:-1]] == [240] * (len(chunks) - 1)


def test_empty_document_has_no_chunks() -> None:
    assert chunk_document(doc(""), 100, 10) == []
    assert chunk_document(doc(" \n\n\t"), 100, 10) == []


# -- documents with pages ------------------------------------------------------------------------------


def paged(*pages: str) -> Document:
    """A document whose pages are joined the way `corpus` joins them (a blank line between)."""
    text, spans = "", []
    for number, page in enumerate(pages, start=1):
        if text:
            text += "\n\n"
        spans.append(Page(number, len(text), len(text) + len(page)))
        text += page
    return Document("d", "Title", "/tmp/d.md", text, pages=tuple(spans), format="pdf")


def test_chunks_never_cross_pages_and_name_their_page() -> None:
    document = paged("Short first page.", "Second page, also short.", "Third.")
    chunks = chunk_document(document, 200, 20)  # everything would fit in one chunk without pages
    assert [(c.page, c.text) for c in chunks] == [
        (1, "Short first page."),
        (2, "Second page, also short."),
        (3, "Third."),
    ]


def test_long_pages_are_cut_within_the_page_with_overlap() -> None:
    body = " ".join(sentences(20))
    document = paged(body, body)
    chunks = chunk_document(document, 60, 20)
    check_invariants(document, chunks, 60, 20)
    second = document.pages[1].start
    for chunk in chunks:
        assert chunk.page == (1 if chunk.end <= document.pages[0].end else 2)
        assert chunk.start >= second or chunk.end <= document.pages[0].end
    assert chunks[0].page == 1 and chunks[-1].page == 2


def test_each_page_starts_a_new_heading_path() -> None:
    document = paged("# Slide one\n\nApples.\n\n## Detail\n\nPears.", "Untitled slide body.", "# Slide three")
    chunks = chunk_document(document, 200, 20)
    assert [(c.page, c.headings, c.text) for c in chunks] == [
        (1, ("Slide one",), "# Slide one\n\nApples."),
        (1, ("Slide one", "Detail"), "## Detail\n\nPears."),
        (2, (), "Untitled slide body."),
        (3, ("Slide three",), "# Slide three"),  # a lone heading stays on its page
    ]


def test_unclosed_code_fence_ends_with_its_page() -> None:
    document = paged("Code:\n\n```\nprint(1)", "# Next page\n\nStill read as a page.")
    chunks = chunk_document(document, 200, 20)
    assert [(c.page, c.headings) for c in chunks] == [(1, ()), (2, ("Next page",))]


@settings(max_examples=150, deadline=None)
@given(
    pages=st.lists(st.lists(FRAGMENTS, min_size=1, max_size=40).map("".join), min_size=1, max_size=5),
    budget=st.integers(min_value=1, max_value=40),
    overlap=st.integers(min_value=0, max_value=20),
)
def test_paged_chunk_invariants(pages: list[str], budget: int, overlap: int) -> None:
    document = paged(*pages)
    chunks = chunk_document(document, budget, overlap)
    for chunk in chunks:
        assert chunk.text == document.text[chunk.start : chunk.end] and count_tokens(chunk.text) <= budget
        assert chunk.page is not None and chunk.page == document.page_at(chunk.start)
        page = document.pages[chunk.page - 1]
        assert page.start <= chunk.start < chunk.end <= page.end
    covered = {i for c in chunks for i in range(c.start, c.end)}
    for page in document.pages:  # every visible character of every page is in some chunk
        assert all(i in covered for i in range(page.start, page.end) if not document.text[i].isspace())
