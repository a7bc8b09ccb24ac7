"""HTML pages and EPUB books: their text as Markdown, headings ``<h1>``–``<h6>`` as ``#`` lines.

A web page goes through trafilatura, which drops navigation and boilerplate. An EPUB is read with
`zipfile` and `xml.etree` in spine (reading) order (EbookLib is AGPL), and each chapter's XHTML is
taken whole: web-page boilerplate removal has nothing to remove in a book.

Nesting depth: libxml2, under lxml and trafilatura alike, stops parsing at a fixed depth (256
elements by default, `MAX_HTML_DEPTH` with lxml's ``huge_tree``) and hands back what it had, so
whatever follows the deep part would silently go missing (text inside 100,000 nested ``<div>``
elements read as no text at all). Pages are therefore parsed once by us with the larger
bound: a page that passes it is refused in one line saying so, one nested deeper than trafilatura's
parser reaches is read block by block from our tree, and the walk over the tree keeps its own stack
rather than recursing, so no depth the parser accepts can exhaust Python's.
"""

from __future__ import annotations

import io
import logging
import posixpath
import re
import zipfile
from typing import TYPE_CHECKING, Any
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
    text (a short EPUB chapter, a stub page); then all text of ``<body>`` is taken instead. A page
    nested deeper than trafilatura's parser reaches is read block by block (see the module docstring).
    """
    import trafilatura

    root = parse_html(data)
    text = None
    if root is not None and nesting_depth(root) < TRAFILATURA_DEPTH:
        try:
            text = trafilatura.extract(
                data, output_format="markdown", include_tables=True, include_comments=False, favor_recall=True
            )
        except Exception as exc:
            log.debug("trafilatura failed (%s); reading all text blocks", exc)
    return clean(text) if text and text.strip() else blocks_text(root)


MAX_HTML_DEPTH = 2048
"""Elements libxml2 nests at most under lxml's ``huge_tree`` option; it stops parsing past them."""

TRAFILATURA_DEPTH = 256
"""The same bound without ``huge_tree``, as trafilatura parses."""

_BLOCK_TAGS = frozenset(
    {"address", "article", "aside", "blockquote", "body", "br", "dd", "details", "div", "dl", "dt"}
    | {"fieldset", "figcaption", "figure", "footer", "form", "h1", "h2", "h3", "h4", "h5", "h6"}
    | {"header", "hr", "li", "main", "nav", "ol", "p", "pre", "section", "summary", "table"}
    | {"tbody", "td", "th", "thead", "tr", "ul"}
)
_SKIPPED_TAGS = frozenset({"script", "style", "noscript", "template", "head", "svg", "math"})


def parse_html(data: bytes) -> HtmlElement | None:
    """The document's tree, None if lxml finds no document; `Unreadable` if nested past `MAX_HTML_DEPTH`."""
    import lxml.html
    from lxml import etree

    parser = lxml.html.HTMLParser(huge_tree=True)
    try:
        root = lxml.html.document_fromstring(data, parser=parser)
    except (etree.ParserError, ValueError):
        root = None
    if any(_is_depth_limit(error) for error in parser.error_log):
        raise Unreadable(
            f"nested more than {MAX_HTML_DEPTH:,} elements deep: the HTML parser stops there, "
            "so the rest of the document could not be read"
        )
    return root


def _is_depth_limit(error: Any) -> bool:
    # libxml2 2.13 and later report it as a resource limit; older ones only say it in the message.
    return "Excessive depth" in str(error.message) or error.type_name == "ERR_RESOURCE_LIMIT"


def nesting_depth(root: HtmlElement) -> int:
    """How many elements deep the tree goes (the root alone is 1), found without recursing."""
    deepest = 0
    stack = [(root, 1)]
    while stack:
        element, depth = stack.pop()
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in element)
    return deepest


def html_blocks_text(data: bytes) -> str:
    """All visible text of an HTML document, one paragraph per block element, headings as ``#``."""
    return blocks_text(parse_html(data))


def blocks_text(root: HtmlElement | None) -> str:
    """All visible text under `root`, one paragraph per block element, headings as ``#``.

    The tree is walked with a stack of its own: each element is visited once on the way in (its
    text) and once on the way out (the end of its block, then its tail).
    """
    if root is None:
        return ""
    blocks: list[str] = []
    line: list[str] = []

    def flush(prefix: str = "") -> None:
        text = " ".join("".join(line).split())
        line.clear()
        if text:
            blocks.append(prefix + text if prefix else escape_markdown(text))

    stack: list[tuple[HtmlElement, bool]] = [(root, False)]
    while stack:
        element, leaving = stack.pop()
        tag = element.tag if isinstance(element.tag, str) else ""
        block = tag in _BLOCK_TAGS
        if not leaving:
            if tag in _SKIPPED_TAGS:
                line.append(" ")  # the tail still counts
                line.append(element.tail or "")
                continue
            if block:
                flush()
            line.append(element.text or "")
            stack.append((element, True))
            stack.extend((child, False) for child in reversed(element))
            continue
        if block:
            heading = re.fullmatch(r"h([1-6])", tag)
            flush(f"{'#' * int(heading.group(1))} " if heading else "")
        line.append(element.tail or "")
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
