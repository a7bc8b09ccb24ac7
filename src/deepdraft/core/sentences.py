"""The one sentence splitter: where sentences end in report prose and in documents.

Used by citation attaching and claim verification (`protocol.attach`, `policy.finishing.verify`),
the export's per-sentence citation keys (`export.document`), FACT's statements (`eval.fact`) and
chunking (`retrieval.documents.chunking`). It returns character spans, so a caller can cut,
rewrite or cite the text in place.

A sentence ends

* after ``.``, ``!`` or ``?`` (a run of them, plus closing quotes and brackets) when whitespace
  follows — so decimals (3.5), versions and domain names (example.com) are never cut;
* after the CJK full stop, exclamation and question marks ``。！？`` (plus closing quotes and
  brackets), whatever follows: Chinese and Japanese put no space after them;
* at a line break: at every one (``lines="every"``: model output, where a line is a unit — a
  heading, a list item, a table row), or only where a block ends (``lines="blocks"``: a blank
  line, a list item, a heading or a table row next, or a heading's end; a hard-wrapped line goes
  on) for Markdown written by anyone.

In prose (``prose=True``, every caller but chunking) two more rules hold:

* no end after an abbreviation or initials ("e.g.", "U.S.", "Dr.", "etc.", "p." and the like) or
  after the number of a numbered list item ("1. ") — unless
  a citation follows, which marks the end of a sentence however it is written;
* citation marks that follow a full stop (``\\cite{key}``, ``[3]``, ``[3, p. 4]``) belong to the
  sentence before them, and a full stop inside a mark ("p. 4") ends nothing.

Chunking keeps the plain rules: its cuts decide a knowledge base's passages, and only units longer
than a chunk are cut at sentences at all.

Spans run from the end of the previous sentence (line breaks before a sentence skipped, other
whitespace kept) to the end of its own punctuation, citations or line break; whitespace-only spans
are left out.
"""

from __future__ import annotations

import itertools
import re
from bisect import bisect_left
from collections.abc import Iterator
from typing import Literal

LineBreaks = Literal["every", "blocks"]

_STOP = r"[.!?]+[\"'”’)\]]*(?=\s)|[。！？]+[”’」』）]*"
# A line break before a blank line, a list item, a heading or a table row; a heading line whole.
_BLOCK_BREAK = r"\n(?=[ \t]*(?:\n|(?:[-*+]|\d{1,3}[.)])[ \t]|#|\|))|(?m:^[ \t]*#{1,6}(?:[ \t][^\n]*)?\n)"
_ENDS: dict[LineBreaks, re.Pattern[str]] = {
    "every": re.compile(rf"{_STOP}|\n"),
    "blocks": re.compile(rf"{_STOP}|{_BLOCK_BREAK}"),
}
CITATION_MARK = re.compile(r"\\cite\{[^{}]*\}|\[\d+(?:,\s*pp?\.\s*[\d,\s–-]+)?\]")
"""A citation as deepdraft writes it (``\\cite{key}``) or as a rendered report shows it (``[3, p. 4]``)."""
_TRAILING_MARKS = re.compile(rf"\s*(?:(?:{CITATION_MARK.pattern})[ \t]*)+")
_LIST_NUMBER = re.compile(r"(?:^|\n)[ \t]*\d{1,3}$")
_INITIALS = re.compile(r"(?:[A-Za-z]\.)*[A-Za-z]")  # "U.S", "e.g", "J" (the final full stop is cut)
ABBREVIATIONS = frozenset(
    ["etc", "vs", "mr", "mrs", "ms", "dr", "st", "no", "p", "pp", "fig", "jr", "al", "cf"]
)
"""Words that a full stop abbreviates without ending the sentence (lowercase, without the stop)."""


def sentence_ends(
    text: str, start: int = 0, end: int | None = None, *, lines: LineBreaks = "every", prose: bool = True
) -> Iterator[int]:
    """Where the sentences of ``text[start:end]`` end (offsets into `text`), in order."""
    stop = len(text) if end is None else end
    pattern = _ENDS[lines]
    if not prose:
        yield from (match.end() for match in pattern.finditer(text, start, stop))
        return
    marks = [m.span() for m in CITATION_MARK.finditer(text, start, stop)]
    mark_starts = [a for a, _ in marks]
    position = start
    for match in pattern.finditer(text, start, stop):
        inside = bisect_left(mark_starts, match.start()) - 1  # the last mark starting before it
        if match.start() < position or (inside >= 0 and match.start() < marks[inside][1]):
            continue  # inside citations already taken, or a full stop inside a mark ("p. 4")
        after = _TRAILING_MARKS.match(text, match.end(), stop)
        if after is None and _abbreviation_before(text, start, match):
            continue
        position = after.end() if after else match.end()
        yield position


def sentence_spans(
    text: str, start: int = 0, end: int | None = None, *, lines: LineBreaks = "every", prose: bool = True
) -> list[tuple[int, int]]:
    """Spans of the sentences of ``text[start:end]`` (see the module docstring for the rules)."""
    return list(iter_sentence_spans(text, start, end, lines=lines, prose=prose))


def iter_sentence_spans(
    text: str, start: int = 0, end: int | None = None, *, lines: LineBreaks = "every", prose: bool = True
) -> Iterator[tuple[int, int]]:
    """`sentence_spans` one at a time, for texts of more sentences than are worth holding at once."""
    stop = len(text) if end is None else end
    cursor = start
    for cut in itertools.chain(sentence_ends(text, start, stop, lines=lines, prose=prose), [stop]):
        begin = cursor
        while begin < cut and text[begin] == "\n":
            begin += 1
        if text[begin:cut].strip():
            yield begin, cut
        cursor = cut


def sentences(text: str, *, lines: LineBreaks = "every") -> list[str]:
    """The sentences of prose `text`, each with the whitespace around it cut."""
    return [text[a:b].strip() for a, b in sentence_spans(text, lines=lines)]


def _abbreviation_before(text: str, start: int, match: re.Match[str]) -> bool:
    """Whether the single full stop of `match` closes an abbreviation or initials ("e.g.", "Dr.")."""
    if match.group() != ".":  # "?", "...", a closing quote: the sentence ends there
        return False
    if _LIST_NUMBER.search(text, max(start, match.start() - 8), match.start()):
        return True  # "1. " opening a line is a list item's number
    # The word before the stop; a window suffices, abbreviations are short (a cut-off word is none).
    words = text[max(start, match.start() - 24) : match.start()].split()
    if not words:
        return False
    word = words[-1].lstrip("([\"'“‘")
    return word.lower() in ABBREVIATIONS or _INITIALS.fullmatch(word) is not None
