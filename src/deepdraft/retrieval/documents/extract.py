"""Turning the bytes of one document file into text: one extractor per format.

An extractor takes the file's bytes and returns `Extracted`: either one flat text (DOCX, EPUB, HTML,
Markdown, plain text) or the text of each numbered page (PDF pages, PPTX slides, XLSX sheets), plus
a title and a URL when the file names them. It raises `Unreadable` with one line for the user when
the file cannot be used. Assembling a `Document` (ids, page offsets, hashes) is `corpus.py`'s job.

The text is Markdown-ish on purpose: headings a format marks as such (DOCX heading styles, slide
titles, sheet names, HTML ``<h1>``–``<h6>``) become ``#`` lines, so the chunker can keep the heading
path of every passage without knowing any format. Body lines that would read as Markdown headings or
code fences are escaped with a backslash, so that a paragraph starting with "#" stays a paragraph.

Trade-offs:

* The parsers (pypdf, python-docx, python-pptx, openpyxl, trafilatura) are the optional
  ``documents`` extra and are imported only when a file of their format is read; without them that
  format fails with the install command, and text formats still work.
* PDF: pypdf's text layer, page by page. Layout analysis (columns, tables) is left to pypdf: good
  enough for search, not for typesetting. Pages without a text layer are OCR'd by running the
  ``tesseract`` binary on the page's embedded images; Tesseract is a system package, not a Python
  one, so its absence is reported, not papered over. OCR uses Tesseract's default language
  (English).
* Spreadsheets are read row by row (openpyxl read-only mode streams the sheet XML) and capped at
  `MAX_SHEET_ROWS` rows per sheet: a data dump of a million rows is not prose, and indexing all of it
  would drown every other document in the knowledge base. The cut is stated in the text.
* EPUB is read with `zipfile` and `xml.etree` in spine (reading) order (EbookLib is AGPL), and each
  chapter's XHTML is taken whole: web-page boilerplate removal has nothing to remove in a book.
* Every zip-based format (DOCX, PPTX, XLSX, EPUB) is inflated once through `verify_archive` before
  its library opens it, so an archive bomb is refused after at most the limits' worth of counting,
  and every format's text is bounded by `DocumentLimits.max_document_chars`, counted as it is
  extracted so that extraction stops at the limit instead of finishing first (see `limits.py`).
* XML entity expansion ("billion laughs") needs no guard of ours: python-docx and python-pptx
  parse with ``resolve_entities=False``, openpyxl likewise (and with defusedxml when installed),
  `xml.etree` runs on expat, which refuses entity amplification since 2.4, libxml2 (lxml) refuses it
  too, and lxml's HTML parser (EPUB chapters, HTML) never expands declared entities. None of them
  loads external entities. `tests/retrieval/test_archive_limits.py` keeps that true.
* pypdf logs a warning for every flaw it repairs in a damaged file; while deepdraft extracts, those
  are kept below ERROR, since the file's `Failure` (or its silent repair) already says what matters.
* Text encodings: BOMs, then UTF-8, then charset-normalizer's guess when it is trustworthy (a CJK
  encoding that decodes to CJK text, or a guess backed by language evidence or enough bytes), then
  cp1252, then latin-1, which accepts any byte. A wrong guess garbles some letters; refusing the
  file would lose all of it. Bytes that decode to mostly control characters are binary.
"""

from __future__ import annotations

import codecs
import io
import logging
import posixpath
import re
import shutil
import subprocess
import threading
import warnings
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime, time
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import unquote
from xml.etree import ElementTree

from deepdraft.core.scripts import CJK, CJK_SYMBOLS
from deepdraft.retrieval.documents.archive import ArchiveRefused, BrokenArchive, verify_archive
from deepdraft.retrieval.documents.chunking import first_heading
from deepdraft.retrieval.documents.limits import DocumentLimits, too_much_text

if TYPE_CHECKING:
    from lxml.html import HtmlElement
    from pypdf import PageObject

log = logging.getLogger(__name__)

MAX_SHEET_ROWS = 10_000
"""Rows read per spreadsheet sheet; the rest is cut (and the cut is written into the text)."""

OCR_TIMEOUT_S = 120
"""Seconds Tesseract may spend on one image before the image is given up."""

MIN_PAGE_CHARS = 16
"""A PDF page with fewer non-space characters than this in its text layer is treated as scanned."""

MIN_OCR_PIXELS = 100 * 100
"""Images smaller than this (icons, rules, logos) are not worth an OCR run."""

INSTALL_DOCUMENTS = "pip install 'deepdraft[documents]'"
INSTALL_TESSERACT = "install tesseract-ocr (Debian: apt install tesseract-ocr) to read it"

_BOMS: tuple[tuple[bytes, str], ...] = (
    # UTF-32 first: its little-endian BOM starts with the UTF-16 one.
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
# Multi-byte encodings of Chinese, Japanese and Korean, as charset-normalizer names them.
_CJK_ENCODINGS = frozenset(
    {"gb18030", "gbk", "gb2312", "hz", "big5", "big5hkscs", "cp950", "shift_jis", "cp932"}
    | {"euc_jp", "euc_jis_2004", "iso2022_jp", "euc_kr", "cp949", "johab", "iso2022_kr"}
)
_TIE_PREFERENCE = ("cp1252", "gb18030")
_CJK_CHAR = re.compile(f"[{CJK}{CJK_SYMBOLS}]")
_CONTROL = re.compile("[\x00-\x08\x0b\x0e-\x1f\x7f-\x9f]")
_BINARY_CONTROL_SHARE = 0.1  # decoded text with more control characters than this is not text
_SNIFF_BYTES = 64 * 1024
# Lines that Markdown (and so the chunker) would read as a heading or a code fence.
_MARKDOWN_LINE = re.compile(r"^( {0,3})(#{1,6}(?=\s|$)|`{3,}|~{3,})", re.MULTILINE)
_BLANK_LINES = re.compile(r"\n{3,}")
_TRAILING_SPACE = re.compile(r"[ \t]+\n")
_HEADING_STYLE = re.compile(r"heading (\d)", re.IGNORECASE)


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


# -- plain text and Markdown ---------------------------------------------------------------------


def decode_text(data: bytes) -> str | None:
    """Decode file bytes to text with newlines normalised; None if the bytes look binary."""
    text = _decode(data)
    if text is None:
        return None
    sample = text[:_SNIFF_BYTES]
    if sample and len(_CONTROL.findall(sample)) > _BINARY_CONTROL_SHARE * len(sample):
        return None
    return normalise_newlines(text)


def normalise_newlines(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _decode(data: bytes) -> str | None:
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            return data.decode(encoding, errors="replace")
    if b"\x00" in data[:_SNIFF_BYTES]:
        return _utf16_without_bom(data)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    guessed = _guess_encoding(data)
    if guessed is not None:
        return guessed
    try:
        return data.decode("cp1252")
    except UnicodeDecodeError:
        return data.decode("latin-1")  # total: every byte is a character


def _utf16_without_bom(data: bytes) -> str | None:
    """UTF-16 text of mostly ASCII has a NUL in every other byte; anything else with NULs is binary."""
    sample = data[: _SNIFF_BYTES - _SNIFF_BYTES % 2]
    even, odd = sample[0::2], sample[1::2]
    if not even or not odd:
        return None
    even_nul, odd_nul = even.count(0) / len(even), odd.count(0) / len(odd)
    if odd_nul > 0.3 and even_nul < 0.02:
        encoding = "utf-16-le"
    elif even_nul > 0.3 and odd_nul < 0.02:
        encoding = "utf-16-be"
    else:
        return None
    try:
        return data.decode(encoding)
    except UnicodeDecodeError:
        return None


def _guess_encoding(data: bytes) -> str | None:
    """charset-normalizer's decoding of `data`, when the guess deserves trust; else None.

    On short Western text its pick among single-byte code pages is close to random (cp1006 for a
    French "naïve"), so a guess is taken only with evidence: a CJK encoding that yields CJK text,
    a detected language, or enough bytes for its statistics to mean something. Short Cyrillic or
    Greek text in a legacy code page can therefore come out as cp1252 mojibake; UTF-8 is safe.
    """
    from charset_normalizer import from_bytes

    matches = from_bytes(data)
    best = matches.best()
    if best is None:
        return None
    encoding = best.encoding
    # Short text fits several code pages equally well (French in cp1250, cp1252, cp1257; Chinese in
    # gb18030 and cp949): ties go to the encodings of the languages deepdraft is made for.
    tied = [m for m in matches if (m.chaos, m.coherence) == (best.chaos, best.coherence)]
    encoding = next(
        (name for name in _TIE_PREFERENCE if any(name in m.could_be_from_charset for m in tied)), encoding
    )
    try:
        text = data.decode(encoding)
    except (UnicodeDecodeError, LookupError):
        return None
    if encoding in _CJK_ENCODINGS:
        non_ascii = [char for char in text[:_SNIFF_BYTES] if ord(char) > 127]
        cjk = sum(1 for char in non_ascii if _CJK_CHAR.match(char))
        return text if non_ascii and cjk >= 0.5 * len(non_ascii) else None
    if best.coherence > 0 or len(data) >= 1024:
        return text
    return None


def extract_text(data: bytes, ocr: bool, limits: DocumentLimits) -> Extracted:
    """Plain text or Markdown, decoded; the title is the first ``# heading`` if there is one."""
    text = decode_text(data)
    if text is None:
        raise Unreadable("binary file, not a document")
    return Extracted(text=TextBudget(limits).spend(text), title=first_heading(text))


# -- PDF ------------------------------------------------------------------------------------------


def extract_pdf(data: bytes, ocr: bool, limits: DocumentLimits) -> Extracted:
    """The text layer of each page; scanned pages OCR'd with Tesseract when allowed and installed."""
    pypdf = _require("pypdf", ".pdf")
    with _quiet("pypdf"):
        return _extract_pdf(pypdf, data, ocr, TextBudget(limits))


def _extract_pdf(pypdf: Any, data: bytes, ocr: bool, budget: TextBudget) -> Extracted:
    from pypdf.errors import DependencyError

    try:
        reader = pypdf.PdfReader(io.BytesIO(data), strict=False)
        if reader.is_encrypted:
            # Many "encrypted" PDFs only restrict printing or copying: the empty password opens them.
            try:
                opened = reader.decrypt("")
            except (DependencyError, NotImplementedError) as exc:
                raise Unreadable(
                    f"encrypted PDF this installation cannot decrypt ({_one_line(exc)})"
                ) from exc
            if not opened:
                raise Unreadable("encrypted PDF (no password support)")
        pages = list(reader.pages)
    except Unreadable:
        raise
    except Exception as exc:  # PdfReadError, and whatever a damaged xref table makes pypdf raise
        raise Unreadable(f"corrupt PDF ({_one_line(exc)})") from exc
    tesseract = shutil.which("tesseract") if ocr else None
    texts: list[PageText] = []
    scanned = 0  # pages with images but (almost) no text layer
    for number, page in enumerate(pages, start=1):
        text = _page_text(page, number)
        if len(text) - text.count(" ") - text.count("\n") < MIN_PAGE_CHARS and _has_images(page):
            scanned += 1
            if tesseract is not None:
                recognised = _ocr_page(page, number, tesseract)
                text = f"{text}\n\n{recognised}".strip() if recognised else text
        if text:
            texts.append(PageText(number, budget.spend(text)))
    if not texts:
        if scanned == 0:
            raise Unreadable("no text in this PDF")
        if not ocr:
            raise Unreadable("scanned PDF with no text layer, and OCR is turned off (retrieval.ocr)")
        if tesseract is None:
            raise Unreadable(f"scanned PDF with no text layer: {INSTALL_TESSERACT}")
        raise Unreadable("scanned PDF: OCR found no text in its images")
    if scanned and tesseract is None:
        log.warning("%d scanned page(s) without a text layer not read: %s", scanned, INSTALL_TESSERACT)
    return Extracted(pages=tuple(texts), title=_pdf_title(reader))


def _page_text(page: PageObject, number: int) -> str:
    try:
        return clean(page.extract_text())
    except Exception as exc:  # a malformed content stream costs this page, not the document
        log.warning("page %d: text layer unreadable (%s)", number, _one_line(exc))
        return ""


def _has_images(page: PageObject) -> bool:
    try:
        return len(page.images) > 0
    except Exception:  # broken image dictionaries: nothing to OCR either way
        return False


def _ocr_page(page: PageObject, number: int, tesseract: str) -> str:
    """Tesseract's text for the images of one page, in their order on the page's resources."""
    recognised: list[str] = []
    try:
        images = list(page.images)
    except Exception as exc:  # broken image dictionaries: nothing to OCR
        log.warning("page %d: images unreadable (%s)", number, _one_line(exc))
        return ""
    for image_file in images:
        try:
            image = image_file.image
            if image is None or image.width * image.height < MIN_OCR_PIXELS:
                continue
            if image.mode not in ("1", "L", "RGB", "RGBA"):
                image = image.convert("RGB")  # CMYK, palettes with odd depths: PNG cannot carry them
            png = io.BytesIO()
            image.save(png, format="PNG")
        except Exception as exc:  # an undecodable image costs this image only
            log.warning("page %d: image %s not decodable for OCR (%s)", number, image_file.name, exc)
            continue
        try:
            done = subprocess.run(
                [tesseract, "stdin", "stdout"],
                input=png.getvalue(),
                capture_output=True,
                timeout=OCR_TIMEOUT_S,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            log.warning("page %d: OCR failed (%s)", number, _one_line(exc))
            continue
        if done.returncode != 0:
            log.warning(
                "page %d: tesseract failed: %s", number, _one_line(done.stderr.decode(errors="replace"))
            )
            continue
        text = clean(done.stdout.decode("utf-8", errors="replace"))
        if text:
            recognised.append(text)
    return "\n\n".join(recognised)


def _pdf_title(reader: Any) -> str | None:
    try:
        title = reader.metadata.title if reader.metadata is not None else None
    except Exception:  # a damaged info dictionary only costs the title
        return None
    if not isinstance(title, str):
        return None
    title = " ".join(title.split())
    # Producers often store the source file name ("Microsoft Word - report.docx"): no title at all.
    if not title or re.search(r"\.(docx?|pdf|tex|odt|rtf|pptx?|indd)$", title, re.IGNORECASE):
        return None
    return title


# -- Office formats ---------------------------------------------------------------------------------


def extract_docx(data: bytes, ocr: bool, limits: DocumentLimits) -> Extracted:
    """Paragraphs and tables in document order; heading styles become ``#`` headings."""
    docx = _require("docx", ".docx")
    from docx.table import Table

    _verify_zip(data, ".docx", limits)
    try:
        document = docx.Document(io.BytesIO(data))
    except Exception as exc:  # python-docx raises zipfile, KeyError and lxml errors alike
        raise _invalid_zip_document(data, ".docx", exc) from exc
    budget = TextBudget(limits)
    # python-docx resolves `paragraph.style` by scanning every style of the document (a millisecond
    # each: minutes for a long document), so each style id is resolved once.
    kinds: dict[str | None, tuple[int, bool]] = {}
    blocks: list[str] = []
    first_title: str | None = None
    for item in document.iter_inner_content():
        if isinstance(item, Table):
            blocks.append(budget.spend(_table_text(item)))
            continue
        text = clean(item.text)
        if not text:
            continue
        style_id = item._p.style  # the paragraph's style id as written (pStyle), None for the default
        if style_id not in kinds:
            kinds[style_id] = (_heading_level(item.style), _style_name(item.style).lower().startswith("list"))
        level, listed = kinds[style_id]
        if level:
            line = " ".join(text.split())
            blocks.append(budget.spend(f"{'#' * level} {line}"))
            if first_title is None and level == 1:
                first_title = line
        elif listed:
            blocks.append(budget.spend("- " + escape_markdown(text)))
        else:
            blocks.append(budget.spend(escape_markdown(text)))
    title = clean(document.core_properties.title or "") or first_title
    return Extracted(text="\n\n".join(block for block in blocks if block), title=title or None)


def _style_name(style: Any) -> str:
    name = getattr(style, "name", None)
    return name if isinstance(name, str) else ""


def _heading_level(style: Any) -> int:
    """1–6 for Title and Heading N styles (or styles based on them), 0 for anything else."""
    for _ in range(5):  # styles inherit from styles; real chains are short, cycles are possible
        if style is None:
            return 0
        name = _style_name(style)
        if name.lower() == "title":
            return 1
        if match := _HEADING_STYLE.fullmatch(name):
            return min(int(match.group(1)), 6)
        style = getattr(style, "base_style", None)
    return 0


def _table_text(table: Any) -> str:
    """One line per row, cells separated by `` | ``; a merged cell is written once."""
    rows: list[str] = []
    for row in table.rows:
        cells: list[str] = []
        previous: Any = None
        for cell in row.cells:
            if previous is not None and cell._tc is previous:  # python-docx repeats merged cells
                continue
            previous = cell._tc
            cells.append(" ".join(cell.text.split()))
        if any(cells):
            rows.append(escape_markdown(" | ".join(cells)))
    return "\n".join(rows)


def extract_pptx(data: bytes, ocr: bool, limits: DocumentLimits) -> Extracted:
    """One page per slide: its title as a ``#`` heading, then its text, tables and notes."""
    pptx = _require("pptx", ".pptx")
    _verify_zip(data, ".pptx", limits)
    try:
        presentation = pptx.Presentation(io.BytesIO(data))
    except Exception as exc:
        raise _invalid_zip_document(data, ".pptx", exc) from exc
    budget = TextBudget(limits)
    pages: list[PageText] = []
    first_title: str | None = None
    for number, slide in enumerate(presentation.slides, start=1):
        title_shape = slide.shapes.title
        title = " ".join(title_shape.text_frame.text.split()) if title_shape is not None else ""
        blocks = [f"# {title}"] if title else []
        first_title = first_title or title or None
        title_id = title_shape.shape_id if title_shape is not None else None
        blocks.extend(_shape_texts(slide.shapes, title_id))
        if slide.has_notes_slide and slide.notes_slide.notes_text_frame is not None:
            notes = clean(slide.notes_slide.notes_text_frame.text)
            if notes:
                blocks.append("Notes: " + escape_markdown(notes))
        text = "\n\n".join(blocks)
        if text:
            pages.append(PageText(number, budget.spend(text)))
    given = clean(presentation.core_properties.title or "")
    return Extracted(pages=tuple(pages), title=given or first_title)


def _shape_texts(shapes: Any, skip_id: int | None) -> Iterator[str]:
    """Text of the shapes in z-order (the order they were drawn), groups flattened."""
    for shape in shapes:
        if shape.shape_id == skip_id:
            continue
        if getattr(shape, "shapes", None) is not None:  # a group shape
            yield from _shape_texts(shape.shapes, skip_id)
        elif getattr(shape, "has_table", False) and shape.has_table:
            yield _table_text(shape.table)
        elif getattr(shape, "has_text_frame", False) and shape.has_text_frame:
            text = clean(shape.text_frame.text)
            if text:
                yield escape_markdown(text)


def extract_xlsx(data: bytes, ocr: bool, limits: DocumentLimits) -> Extracted:
    """One page per worksheet: its name as a ``#`` heading, then rows as tab-separated lines."""
    openpyxl = _require("openpyxl", ".xlsx")
    _verify_zip(data, ".xlsx", limits, streamed=_is_worksheet)
    try:
        with warnings.catch_warnings():
            # openpyxl warns about every extension it does not implement (data validation, slicers).
            warnings.simplefilter("ignore")
            workbook = openpyxl.load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except Exception as exc:
        raise _invalid_zip_document(data, ".xlsx", exc) from exc
    budget = TextBudget(limits)
    try:
        pages: list[PageText] = []
        for number, sheet in enumerate(workbook.worksheets, start=1):
            rows = _sheet_rows(sheet, budget)
            if rows:
                name = " ".join(str(sheet.title).split())
                pages.append(PageText(number, f"# {name}\n\n" + "\n".join(rows)))
        title = clean(workbook.properties.title or "") or None
    finally:
        workbook.close()  # read-only workbooks keep the archive open until closed
    return Extracted(pages=tuple(pages), title=title)


def _is_worksheet(name: str) -> bool:
    """Sheets are where openpyxl puts them; read-only mode streams them (see `verify_archive`)."""
    return name.startswith("xl/worksheets/") and name.endswith(".xml")


def _sheet_rows(sheet: Any, budget: TextBudget) -> list[str]:
    rows: list[str] = []
    for values in sheet.iter_rows(values_only=True):
        cells = [_cell_text(value) for value in values]
        while cells and not cells[-1]:
            cells.pop()
        if not cells:
            continue
        if len(rows) == MAX_SHEET_ROWS:
            rows.append(f"[rows after the first {MAX_SHEET_ROWS} not read]")
            break
        rows.append(budget.spend(escape_markdown("\t".join(cells))))
    return rows


def _cell_text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, datetime):
        return value.date().isoformat() if value.time() == time() else value.isoformat(sep=" ")
    if isinstance(value, date | time):
        return value.isoformat()
    return " ".join(str(value).split())  # tabs and newlines inside a cell would break the row


def _verify_zip(
    data: bytes, suffix: str, limits: DocumentLimits, streamed: Callable[[str], bool] | None = None
) -> None:
    """Refuse a zip-based document that inflates past `limits`, before any library opens it."""
    try:
        verify_archive(data, limits, streamed=streamed)
    except ArchiveRefused as exc:
        raise Unreadable(str(exc)) from exc
    except BrokenArchive as exc:
        raise _invalid_zip_document(data, suffix, exc) from exc


def _invalid_zip_document(data: bytes, suffix: str, exc: Exception) -> Unreadable:
    # Password-protected Office files are OLE containers, not zips; so are the pre-2007 formats.
    legacy = {".docx": ".doc", ".pptx": ".ppt", ".xlsx": ".xls"}.get(suffix)
    if legacy is not None and data.startswith(b"\xd0\xcf\x11\xe0"):
        return Unreadable(f"password-protected, or an old {legacy} file renamed: save it as {suffix}")
    return Unreadable(f"not a valid {suffix} file ({_one_line(exc)})")


# -- HTML and EPUB ----------------------------------------------------------------------------------


def extract_html(data: bytes, ocr: bool, limits: DocumentLimits) -> Extracted:
    """The main text of a web page as Markdown; title and URL from its metadata."""
    trafilatura = _require("trafilatura", ".html")
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
    return clean(text) if text and text.strip() else _html_blocks_text(data)


_BLOCK_TAGS = frozenset(
    {"address", "article", "aside", "blockquote", "body", "br", "dd", "details", "div", "dl", "dt"}
    | {"fieldset", "figcaption", "figure", "footer", "form", "h1", "h2", "h3", "h4", "h5", "h6"}
    | {"header", "hr", "li", "main", "nav", "ol", "p", "pre", "section", "summary", "table"}
    | {"tbody", "td", "th", "thead", "tr", "ul"}
)
_SKIPPED_TAGS = frozenset({"script", "style", "noscript", "template", "head", "svg", "math"})


def _html_blocks_text(data: bytes) -> str:
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
    _require("lxml", ".epub")
    _verify_zip(data, ".epub", limits)
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
        texts = [budget.spend(_html_blocks_text(_member(archive, chapter))) for chapter in chapters]
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


# -- shared helpers ---------------------------------------------------------------------------------


def clean(text: str) -> str:
    """Newlines normalised, control characters and trailing spaces dropped, blank runs collapsed."""
    text = _CONTROL.sub("", normalise_newlines(text).replace("\x0c", "\n").replace("\x0b", "\n"))
    text = _TRAILING_SPACE.sub("\n", text)
    return _BLANK_LINES.sub("\n\n", text).strip()


def escape_markdown(text: str) -> str:
    """Backslash-escape body lines that Markdown would read as a heading or a code fence."""
    return _MARKDOWN_LINE.sub(lambda m: f"{m.group(1)}\\{m.group(2)}", text)


_quiet_lock = threading.Lock()
_quiet_depth: dict[str, tuple[int, int]] = {}  # logger name → (nesting depth, level to restore)


@contextmanager
def _quiet(logger_name: str) -> Iterator[None]:
    """Keep a library's logger (and its children) below ERROR for the duration, then restore it.

    A level, not a filter: filters do not apply to child loggers (``pypdf._reader``). The depth count
    makes overlapping uses from several threads restore the original level exactly once.
    """
    logger = logging.getLogger(logger_name)
    with _quiet_lock:
        depth, saved = _quiet_depth.get(logger_name, (0, logger.level))
        if depth == 0:
            logger.setLevel(logging.ERROR)
        _quiet_depth[logger_name] = (depth + 1, saved)
    try:
        yield
    finally:
        with _quiet_lock:
            depth, saved = _quiet_depth.pop(logger_name)
            if depth > 1:
                _quiet_depth[logger_name] = (depth - 1, saved)
            else:
                logger.setLevel(saved)


def _one_line(value: object) -> str:
    text = " ".join(str(value).split())
    return text if len(text) <= 160 else text[:157] + "..."


def _require(module: str, suffix: str) -> Any:
    """Import an optional parser, or fail the file with the command that installs it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise Unreadable(f"reading {suffix} files needs the documents extra: {INSTALL_DOCUMENTS}") from exc


# Suffix → (format name, extractor). JSONL is not here: it holds many documents and is streamed.
EXTRACTORS: dict[str, tuple[str, Extractor]] = {
    ".pdf": ("pdf", extract_pdf),
    ".docx": ("docx", extract_docx),
    ".pptx": ("pptx", extract_pptx),
    ".xlsx": ("xlsx", extract_xlsx),
    ".xlsm": ("xlsx", extract_xlsx),
    ".epub": ("epub", extract_epub),
    ".html": ("html", extract_html),
    ".htm": ("html", extract_html),
    ".xhtml": ("html", extract_html),
    ".md": ("markdown", extract_text),
    ".markdown": ("markdown", extract_text),
    ".txt": ("text", extract_text),
    ".text": ("text", extract_text),
    ".rst": ("text", extract_text),
}

CONVERT_HINTS: dict[str, str] = {
    ".doc": "save it as .docx",
    ".ppt": "save it as .pptx",
    ".xls": "save it as .xlsx",
    ".odt": "save it as .docx or PDF",
    ".odp": "save it as .pptx or PDF",
    ".ods": "save it as .xlsx",
    ".rtf": "save it as .docx or PDF",
    ".mobi": "convert it to EPUB",
    ".azw3": "convert it to EPUB",
}
"""For formats people often have: what to do instead (shown with "unsupported format")."""
