"""Cutting a document into passages that follow its structure.

A chunk is a contiguous span of the document text — ``doc.text[chunk.start:chunk.end] == chunk.text``
always holds — so a citation can point back into the source, and nothing is rewritten or joined.

How a document is cut:

1. Markdown structure first. Lines are read into blocks: ATX headings (``#`` … ``######``) and
   paragraphs (separated by blank lines; a fenced code block is one paragraph, and a ``#`` inside it
   is not a heading). A heading opens a section; every chunk records the heading path above it.
   Headings with no text of their own before the next heading are kept with that next section, so a
   document title travels with the first paragraph instead of becoming a chunk of its own.
2. Paragraphs are packed into chunks of at most `chunk_tokens` (the estimate of `deepdraft.core.tokens`).
   A paragraph that does not fit starts the next chunk — unless the current chunk is less than half
   full, in which case it is cut at sentence boundaries to fill it (a paragraph boundary is the better
   place to cut, but not at the price of many tiny chunks).
3. Units longer than a chunk are cut at sentences (`deepdraft.core.sentences`' plain rules: ``.!?``
   followed by a space, ``。！？``, line breaks),
   then at words (a CJK character counts as a word: Chinese has no spaces), and as a last resort at
   token boundaries of the estimate (base64 blobs, endless CJK runs without punctuation).
4. Consecutive chunks of one section overlap by about `overlap_tokens`: the next chunk starts with the
   tail of the previous one, from a sentence start when that gives at least half the overlap,
   otherwise from a word start. Sections never overlap each other.
5. Documents with pages (PDF pages, slides, sheets) are cut page by page: a chunk never crosses a
   page boundary, so it can cite one page, and records that page. Each page starts with an empty
   heading path — slides and sheets bring their own titles, and a PDF's text layer has no Markdown
   headings — and a heading left alone at the end of a page becomes a chunk of its own rather than
   travel to the next page. Text outside the pages (the separators between them) is not chunked.

A unit is cut lazily: its first `CUT_BATCH` parts are queued, and the rest waits as one span
that is cut the same way when packing reaches it. A paragraph of millions of words without a full
stop (a 19 MB one-line file) would otherwise queue millions of spans at once — gigabytes — to pack
the same chunks.

The size bound is strict (`count_tokens(chunk.text) <= chunk_tokens`): the estimate is subadditive,
so the sum of the parts' counts bounds the count of their span. Setext headings (underlined with
``===``) and other Markdown are treated as plain paragraphs: cheap, and only the chunk boundaries
suffer.
"""

from __future__ import annotations

import itertools
import re
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from deepdraft.core.scripts import CJK
from deepdraft.core.sentences import iter_sentence_spans, sentence_ends
from deepdraft.core.tokens import count_tokens

if TYPE_CHECKING:
    from deepdraft.retrieval.documents.values import Document

_FENCE = re.compile(r" {0,3}(`{3,}|~{3,})")
_HEADING = re.compile(r" {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*")
_WORD = re.compile(rf"[{CJK}]|[^\s{CJK}]+")

MAX_HEADING_CHARS = 200
"""Headings longer than this are shortened in a chunk's heading path: the path is indexed with every
passage of its section, so one endless heading (a whole slide in its title box) would otherwise be
repeated into each of them — work that grows with the square of the document."""

# Granularity of a unit waiting to be packed; a unit can be cut into units of the next level.
_PARAGRAPH, _SENTENCE, _WORD_LEVEL, _PIECE = 0, 1, 2, 3

CUT_BATCH = 1024
"""Parts of a cut unit queued at once; the rest of the unit waits, uncut, behind them."""


@dataclass(frozen=True)
class Chunk:
    """A passage: `text` is exactly ``document.text[start:end]``; `headings` is its section path."""

    text: str
    doc_id: str
    title: str
    location: str
    start: int
    end: int
    headings: tuple[str, ...] = ()
    page: int | None = None  # the 1-based page it lies on, for documents with pages


@dataclass(frozen=True)
class Block:
    """A heading line (`level` 1–6, `heading` its text) or a paragraph (`level` 0), trimmed."""

    start: int
    end: int
    level: int = 0
    heading: str = ""


def iter_blocks(text: str) -> Iterator[Block]:
    """Headings and paragraphs of Markdown (or plain) text, in order, as spans of `text`."""
    para_start = para_end = -1
    fence: tuple[str, int] | None = None  # fence character and length while inside a code fence
    pos, size = 0, len(text)
    while pos < size:
        newline = text.find("\n", pos)
        line_end = size if newline < 0 else newline
        line = text[pos:line_end]
        content = line.rstrip()
        lead = len(line) - len(line.lstrip())
        if fence is not None:
            if content:
                para_end = pos + len(content)
                marker = content.strip()
                if marker[0] == fence[0] and len(marker) >= fence[1] and marker == marker[0] * len(marker):
                    fence = None
        elif opening := _FENCE.match(line):
            fence = (opening.group(1)[0], len(opening.group(1)))
            if para_start < 0:
                para_start = pos + lead
            para_end = pos + len(content)
        elif heading := _HEADING.fullmatch(content):
            if para_start >= 0:
                yield Block(para_start, para_end)
                para_start = -1
            level = len(heading.group(1))
            yield Block(pos + lead, pos + len(content), level, (heading.group(2) or "").strip())
        elif not content.strip():
            if para_start >= 0:
                yield Block(para_start, para_end)
                para_start = -1
        else:
            if para_start < 0:
                para_start = pos + lead
            para_end = pos + len(content)
        pos = line_end + 1
    if para_start >= 0:
        yield Block(para_start, para_end)


def first_heading(text: str) -> str | None:
    """The text of the first level-1 heading (``# Title``), if the text has one."""
    return next((b.heading for b in iter_blocks(text) if b.level == 1 and b.heading), None)


def shorten(label: str, limit: int = MAX_HEADING_CHARS) -> str:
    """`label` cut to at most `limit` characters, at a word when one ends late enough, marked with …."""
    if len(label) <= limit:
        return label
    cut = label[: limit - 1]
    space = cut.rfind(" ")
    return (cut[:space] if space > limit // 2 else cut).rstrip() + "…"


def chunk_document(doc: Document, chunk_tokens: int, overlap_tokens: int) -> list[Chunk]:
    """Cut `doc` into chunks of at most `chunk_tokens` estimated tokens (see the module docstring)."""
    if chunk_tokens < 1:
        raise ValueError("chunk_tokens must be at least 1")
    overlap = max(0, min(overlap_tokens, chunk_tokens - 1))
    text = doc.text
    spans = [(p.start, p.end, p.number) for p in doc.pages] if doc.pages else [(0, len(text), None)]
    chunks: list[Chunk] = []
    for span_start, span_end, page in spans:
        for headings, units in _sections(text, span_start, span_end):
            for start, end in _pack(text, units, chunk_tokens, overlap):
                chunks.append(
                    Chunk(text[start:end], doc.doc_id, doc.title, doc.location, start, end, headings, page)
                )
    return chunks


def _sections(text: str, begin: int, stop: int) -> Iterator[tuple[tuple[str, ...], list[tuple[int, int]]]]:
    """(heading path, unit spans) per section of ``text[begin:stop]``; units start with headings."""
    stack: list[tuple[int, str]] = []
    path: tuple[str, ...] = ()
    units: list[tuple[int, int]] = []
    has_body = False
    # Blocks of the span alone (a page), so an unclosed code fence cannot swallow the next page.
    whole = begin == 0 and stop == len(text)
    for local in iter_blocks(text if whole else text[begin:stop]):
        block = local if whole else Block(local.start + begin, local.end + begin, local.level, local.heading)
        if block.level:
            if has_body:
                yield path, units
                units, has_body = [], False
            while stack and stack[-1][0] >= block.level:
                stack.pop()
            stack.append((block.level, shorten(block.heading)))
            path = tuple(heading for _, heading in stack if heading)
        else:
            has_body = True
        units.append((block.start, block.end))
    if units:
        yield path, units


def _pack(text: str, units: list[tuple[int, int]], budget: int, overlap: int) -> list[tuple[int, int]]:
    """Greedily pack unit spans into chunk spans of at most `budget` tokens, with overlap."""
    queue = deque((start, end, _PARAGRAPH) for start, end in units)
    spans: list[tuple[int, int]] = []
    cur_start = cur_end = -1  # the chunk being filled; -1: none yet
    cur_tokens = 0  # an upper bound of its token count (sum of its parts)
    while queue:
        start, end, level = queue.popleft()
        if level < 0:  # the rest of a unit whose first parts were queued: the next parts, cut now
            queue.extendleft(reversed(_batch(text, start, end, -level, budget)))
            continue
        tokens = count_tokens(text[start:end])
        room = budget - cur_tokens if cur_start >= 0 else budget
        if tokens <= room:
            if cur_start < 0:
                cur_start = start
            cur_end, cur_tokens = end, cur_tokens + tokens
            continue
        too_long = tokens > budget
        fill = cur_start >= 0 and 2 * cur_tokens < budget and level == _PARAGRAPH
        if too_long or fill:
            parts = _refine(text, start, end, level, budget, deepest=_PIECE if too_long else _SENTENCE)
            if parts:
                queue.extendleft(reversed(parts))
                continue
        # The unit fits in an empty chunk: close the current one, start the next with its tail.
        spans.append((cur_start, cur_end))
        tail = _overlap_start(text, cur_start, cur_end, min(overlap, budget - tokens))
        if tail is None:
            cur_start, cur_tokens = -1, 0
        else:
            cur_start, cur_tokens = tail, count_tokens(text[tail:cur_end])
        queue.appendleft((start, end, level))
    if cur_start >= 0:
        spans.append((cur_start, cur_end))
    return spans


def _refine(
    text: str, start: int, end: int, level: int, budget: int, deepest: int
) -> list[tuple[int, int, int]] | None:
    """Cut a unit at the next finer level that actually cuts it (down to `deepest`); None if none.

    At most `CUT_BATCH` parts come back, then (if the unit has more) the rest of it, as one span
    whose level is the parts' level negated (see `_batch`).
    """
    while level < deepest:
        level += 1
        parts = _batch(text, start, end, level, budget)
        if len(parts) > 1:
            return parts
    return None


def _batch(text: str, start: int, end: int, level: int, budget: int) -> list[tuple[int, int, int]]:
    """The first `CUT_BATCH` parts of ``text[start:end]`` cut at `level`, and the rest as one span.

    The rest starts where its first part does, so cutting it later gives the very parts that
    cutting the whole unit at once would have: each cut only looks forward from its start.
    """
    parts = itertools.islice(_cut(text, start, end, level, budget), CUT_BATCH + 1)
    batch = [(a, b, level) for a, b in parts]
    if len(batch) > CUT_BATCH:
        rest_start = batch.pop()[0]
        batch.append((rest_start, end, -level))
    return batch


def _cut(text: str, start: int, end: int, level: int, budget: int) -> Iterator[tuple[int, int]]:
    if level == _SENTENCE:
        return _sentences(text, start, end)
    if level == _WORD_LEVEL:
        return (match.span() for match in _WORD.finditer(text, start, end))
    return _pieces(text, start, end, budget)


def _sentences(text: str, start: int, end: int) -> Iterator[tuple[int, int]]:
    """Sentence spans without the whitespace around them (the plain rules: a line break ends one)."""
    for a, b in iter_sentence_spans(text, start, end, prose=False):
        while a < b and text[a].isspace():
            a += 1
        while b > a and text[b - 1].isspace():
            b -= 1
        yield a, b


def _pieces(text: str, start: int, end: int, budget: int) -> Iterator[tuple[int, int]]:
    """Cut a whitespace-free run into the longest prefixes of at most `budget` tokens.

    The estimate never decreases as a prefix grows, so a binary search finds each cut. A piece of at
    most `budget` tokens is at most ``6 * budget`` characters long (one token per started six), which
    bounds the search window and keeps this linear in the run length.
    """
    while start < end:
        low, high = start + 1, min(end, start + 6 * budget + 6)
        while low < high:  # largest cut in [low, high] whose prefix fits
            middle = (low + high + 1) // 2
            if count_tokens(text[start:middle]) <= budget:
                low = middle
            else:
                high = middle - 1
        yield start, low
        start = low


def _overlap_start(text: str, start: int, end: int, limit: int) -> int | None:
    """Where the next chunk should start inside ``text[start:end]`` to repeat ≤ `limit` tokens of it.

    Walks the words of the chunk backwards while their counts add up to at most `limit` (a sum of
    counts bounds the count of the span). Prefers the earliest sentence start reached if it carries
    at least half of the limit; otherwise the earliest word start. Never the chunk start itself.
    """
    if limit <= 0:
        return None
    words = [(m.start(), m.end()) for m in _WORD.finditer(text, start, end)]
    total = 0
    word_start: int | None = None
    sentence_start: int | None = None
    sentence_tokens = 0
    for index in range(len(words) - 1, 0, -1):
        total += count_tokens(text[words[index][0] : words[index][1]])
        if total > limit:
            break
        word_start = words[index][0]
        if next(sentence_ends(text, words[index - 1][0], word_start, prose=False), None) is not None:
            sentence_start, sentence_tokens = word_start, total
    if sentence_start is not None and 2 * sentence_tokens >= limit:
        return sentence_start
    return word_start
