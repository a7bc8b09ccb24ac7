"""HTML pages and EPUB books: their text as Markdown, headings ``<h1>``–``<h6>`` as ``#`` lines.

A web page goes through trafilatura, which drops navigation and boilerplate. An EPUB is read with
`zipfile` and `xml.etree` in spine (reading) order (EbookLib is AGPL), and each chapter's XHTML is
taken whole: web-page boilerplate removal has nothing to remove in a book.
"""

from __future__ import annotations

import io
import logging
import posixpath
import re
import zipfile
from typing import TYPE_CHECKING
from urllib.parse import unquote
from xml.etree import ElementTree

from deepdraft.retrieval.documents.chunking import first_heading
from deepdraft.retrieval.documents.formats.extracted import (
    Extracted,
    TextBudget,
    Unreadable,
    clean,
    escape_markdown,
    require_parser,
)
from deepdraft.retrieval.documents.formats.zipped import verify_zip
from deepdraft.retrieval.documents.limits import DocumentLimits

if TYPE_CHECKING:
    from lxml.html import HtmlElement

log = logging.getLogger(__name__)


def extract_html(data: bytes, ocr: bool, limits: DocumentLimits) -> Extracted:
    """The main text of a web page as Markdown; title and URL from its metadata."""
    trafilatura = require_parser("trafilatura", ".html")
    text = TextBudget(limits).spend(html_to_markdown(data))
    try:
        metadata = trafilatura.extract_metadata(data)
    except Exception:  # metadata is a nicety; the text is what matters
        metadata = None
    title = getattr(metadata, "title", None) or first_heading(text)
    url = getattr(metadata, "url", None)
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        url = None
    return Extracted(text=text, title=title or None, url=url)


def html_to_markdown(data: bytes) -> str:
    """Main text with headings as ``#`` lines: trafilatura, or every text block if it finds none.

    trafilatura drops navigation and boilerplate, but also returns nothing for pages with little
    text (a short EPUB chapter, a stub page); then all text of ``<body>`` is taken instead.
    """
    import trafilatura

    try:
        text = trafilatura.extract(
            data, output_format="markdown", include_tables=True, include_comments=False, favor_recall=True
        )
    except Exception as exc:
        log.debug("trafilatura failed (%s); reading all text blocks", exc)
        text = None
    return clean(text) if text and text.strip() else html_blocks_text(data)


_BLOCK_TAGS = frozenset(
    {"address", "article", "aside", "blockquote", "body", "br", "dd", "details", "div", "dl", "dt"}
    | {"fieldset", "figcaption", "figure", "footer", "form", "h1", "h2", "h3", "h4", "h5", "h6"}
    | {"header", "hr", "li", "main", "nav", "ol", "p", "pre", "section", "summary", "table"}
    | {"tbody", "td", "th", "thead", "tr", "ul"}
)
_SKIPPED_TAGS = frozenset({"script", "style", "noscript", "template", "head", "svg", "math"})


def html_blocks_text(data: bytes) -> str:
    """All visible text of an HTML document, one paragraph per block element, headings as ``#``."""
    import lxml.html
    from lxml import etree

    try:
        root = lxml.html.document_fromstring(data)
    except (etree.ParserError, ValueError):
        return ""
    blocks: list[str] = []
    line: list[str] = []

    def flush(prefix: str = "") -> None:
        text = " ".join("".join(line).split())
        line.clear()
        if text:
            blocks.append(prefix + text if prefix else escape_markdown(text))

    def walk(element: HtmlElement) -> None:
        tag = element.tag if isinstance(element.tag, str) else ""
        if tag in _SKIPPED_TAGS:
            line.append(" ")  # the tail still counts
        else:
            block = tag in _BLOCK_TAGS
            if block:
                flush()
            line.append(element.text or "")
            for child in element:
                walk(child)
            if block:
                heading = re.fullmatch(r"h([1-6])", tag)
                flush(f"{'#' * int(heading.group(1))} " if heading else "")
        line.append(element.tail or "")

    walk(root)
    flush()
    return "\n\n".join(blocks)


def extract_epub(data: bytes, ocr: bool, limits: DocumentLimits) -> Extracted:
    """Chapters in spine (reading) order, all their text; title from the package metadata.

    A chapter is content from end to end, so it is not put through trafilatura: main-text detection
    is for web pages, and on a book it drops short paragraphs (dialogue, verse) and heading markup.
    """
    require_parser("lxml", ".epub")
    verify_zip(data, ".epub", limits)
    budget = TextBudget(limits)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        package_path = _epub_package_path(archive)
        package = _xml(archive, package_path)
        base = posixpath.dirname(package_path)
        manifest = {
            item.get("id"): posixpath.normpath(posixpath.join(base, unquote(item.get("href", ""))))
            for item in package.iter()
            if _local(item.tag) == "item" and item.get("id") and item.get("href")
        }
        spine = [item.get("idref") for item in package.iter() if _local(item.tag) == "itemref"]
        chapters = [manifest[idref] for idref in spine if idref in manifest]
        if not chapters:
            raise Unreadable("EPUB without chapters (empty spine)")
        texts = [budget.spend(html_blocks_text(_member(archive, chapter))) for chapter in chapters]
        title = next((" ".join((el.text or "").split()) for el in package.iter() if _is_dc_title(el)), None)
    text = "\n\n".join(chapter for chapter in texts if chapter)
    return Extracted(text=text, title=title or first_heading(text))


def _epub_package_path(archive: zipfile.ZipFile) -> str:
    container = _xml(archive, "META-INF/container.xml")
    for element in container.iter():
        if _local(element.tag) == "rootfile" and element.get("full-path"):
            return str(element.get("full-path"))
    raise Unreadable("not a valid .epub file (META-INF/container.xml names no package)")


def _xml(archive: zipfile.ZipFile, name: str) -> ElementTree.Element:
    try:
        return ElementTree.fromstring(_member(archive, name))
    except ElementTree.ParseError as exc:
        raise Unreadable(f"not a valid .epub file ({name}: {exc})") from exc


def _member(archive: zipfile.ZipFile, name: str) -> bytes:
    """A member of an archive `verify_archive` has passed: no larger than the member limit."""
    try:
        info = archive.getinfo(name)
    except KeyError as exc:
        raise Unreadable(f"not a valid .epub file ({name} is missing)") from exc
    return archive.read(info)


def _local(tag: object) -> str:
    """An XML tag without its namespace (``{http://www.idpf.org/2007/opf}item`` → ``item``)."""
    return tag.rpartition("}")[2] if isinstance(tag, str) else ""


def _is_dc_title(element: ElementTree.Element) -> bool:
    return (
        _local(element.tag) == "title" and "purl.org/dc" in element.tag and bool((element.text or "").strip())
    )
