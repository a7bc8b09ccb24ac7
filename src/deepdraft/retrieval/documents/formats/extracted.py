"""What an extractor returns, and the rules every extractor's text follows.

An extractor gives `Extracted` (flat text, or the text of each numbered page) or raises `Unreadable`
with one line for the user. Its text goes through `clean` and `escape_markdown`, and is counted
against the document's `TextBudget` while it is produced (see `limits.py`).
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

from deepdraft.retrieval.documents.limits import DocumentLimits, too_much_text

INSTALL_DOCUMENTS = "pip install 'deepdraft[documents]'"

CONTROL_CHARACTERS = re.compile("[\x00-\x08\x0b\x0e-\x1f\x7f-\x9f]")
# Lines that Markdown (and so the chunker) would read as a heading or a code fence.
_MARKDOWN_LINE = re.compile(r"^( {0,3})(#{1,6}(?=\s|$)|`{3,}|~{3,})", re.MULTILINE)
_BLANK_LINES = re.compile(r"\n{3,}")
_TRAILING_SPACE = re.compile(r"[ \t]+\n")


class Unreadable(Exception):
    """The file cannot be turned into text; the message is one line for the user."""


class PageText(NamedTuple):
    number: int  # 1-based: PDF page, slide, or sheet position
    text: str


@dataclass(frozen=True)
class Extracted:
    """What an extractor found: flat `text`, or `pages` for paged formats (then `text` is empty)."""

    text: str = ""
    pages: tuple[PageText, ...] = ()
    title: str | None = None
    url: str | None = None


Extractor = Callable[[bytes, bool, DocumentLimits], Extracted]
"""``extractor(data, ocr, limits)``: `ocr` allows running Tesseract on scanned pages; `limits`
bounds what the file may unpack and the text it may yield (`Unreadable` past them)."""


class TextBudget:
    """The characters one document may still yield; extraction stops the moment they run out.

    Counted while extracting, not after: a document over the limit is refused without first being
    assembled whole (for a paged format, without reading the pages after the limit at all).
    """

    def __init__(self, limits: DocumentLimits) -> None:
        self.limits = limits
        self.left = limits.max_document_chars

    def spend(self, text: str) -> str:
        """`text`, counted; `Unreadable` if it takes the document over the limit."""
        self.left -= len(text)
        if self.left < 0:
            raise Unreadable(too_much_text(self.limits))
        return text


def normalise_newlines(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


def clean(text: str) -> str:
    """Newlines normalised, control characters and trailing spaces dropped, blank runs collapsed."""
    text = CONTROL_CHARACTERS.sub("", normalise_newlines(text).replace("\x0c", "\n").replace("\x0b", "\n"))
    text = _TRAILING_SPACE.sub("\n", text)
    return _BLANK_LINES.sub("\n\n", text).strip()


def escape_markdown(text: str) -> str:
    """Backslash-escape body lines that Markdown would read as a heading or a code fence."""
    return _MARKDOWN_LINE.sub(lambda m: f"{m.group(1)}\\{m.group(2)}", text)


def one_line(value: object) -> str:
    """`value` on one line and cut short: a library's error message fit for a `Failure` reason."""
    text = " ".join(str(value).split())
    return text if len(text) <= 160 else text[:157] + "..."


def require_parser(module: str, suffix: str) -> Any:
    """Import an optional parser, or fail the file with the command that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise Unreadable(f"reading {suffix} files needs the documents extra: {INSTALL_DOCUMENTS}") from exc
