"""What reading documents yields: `Document` (with its `Page`s) and `Failure`, plain values.

Apart from the readers (`corpus`, `extract`) so that what consumes documents — chunking, the KB,
web search — needs only their shape, not the code that reads files.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass


@dataclass(frozen=True)
class Page:
    """Where one page lies in `Document.text`: ``text[start:end]`` is its text."""

    number: int  # 1-based: PDF page, PPTX slide, XLSX sheet index
    start: int
    end: int


@dataclass(frozen=True)
class Document:
    """One source document, as text. `location` is an absolute path or a URL (what a citation shows).

    `pages` lists the pages that have text, in order (a blank page has no entry); it is empty for
    formats without pages. `content_hash` is the sha256 of the file's bytes (JSONL: of the line).
    """

    doc_id: str
    title: str
    location: str
    text: str
    pages: tuple[Page, ...] = ()
    format: str = "text"
    content_hash: str = ""

    def page_at(self, offset: int) -> int | None:
        """The number of the page holding character `offset`; None between pages or without pages."""
        index = bisect.bisect_right(self.pages, offset, key=lambda page: page.start) - 1
        if index < 0:
            return None
        page = self.pages[index]
        return page.number if offset < page.end else None


@dataclass(frozen=True)
class Failure:
    """A path (or ``path:line`` of a JSONL file) that gave no document, and why, in one line."""

    location: str
    reason: str

    def __str__(self) -> str:
        return f"{self.location}: {self.reason}"
