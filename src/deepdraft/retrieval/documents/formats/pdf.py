"""PDF: pypdf's text layer page by page, and Tesseract for pages that have none.

Layout analysis (columns, tables) is left to pypdf: good enough for search, not for typesetting.
Pages without a text layer are OCR'd by running the ``tesseract`` binary on the page's embedded
images; Tesseract is a system package, not a Python one, so its absence is reported, not papered
over. OCR uses Tesseract's default language (English). pypdf logs a warning for every flaw it
repairs in a damaged file; while deepdraft extracts, those are kept below ERROR, since the file's
`Failure` (or its silent repair) already says what matters.
"""

from __future__ import annotations

import io
import logging
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from deepdraft.retrieval.documents.formats.extracted import (
    Extracted,
    PageText,
    TextBudget,
    Unreadable,
    clean,
    one_line,
    require_parser,
)
from deepdraft.retrieval.documents.limits import DocumentLimits

if TYPE_CHECKING:
    from pypdf import PageObject

log = logging.getLogger(__name__)

OCR_TIMEOUT_S = 120
"""Seconds Tesseract may spend on one image before the image is given up."""

MIN_PAGE_CHARS = 16
"""A PDF page with fewer non-space characters than this in its text layer is treated as scanned."""

MIN_OCR_PIXELS = 100 * 100
"""Images smaller than this (icons, rules, logos) are not worth an OCR run."""

INSTALL_TESSERACT = "install tesseract-ocr (Debian: apt install tesseract-ocr) to read it"


def extract_pdf(data: bytes, ocr: bool, limits: DocumentLimits) -> Extracted:
    """The text layer of each page; scanned pages OCR'd with Tesseract when allowed and installed."""
    pypdf = require_parser("pypdf", ".pdf")
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
                raise Unreadable(f"encrypted PDF this installation cannot decrypt ({one_line(exc)})") from exc
            if not opened:
                raise Unreadable("encrypted PDF (no password support)")
        pages = list(reader.pages)
    except Unreadable:
        raise
    except Exception as exc:  # PdfReadError, and whatever a damaged xref table makes pypdf raise
        raise Unreadable(f"corrupt PDF ({one_line(exc)})") from exc
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
        log.warning("page %d: text layer unreadable (%s)", number, one_line(exc))
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
        log.warning("page %d: images unreadable (%s)", number, one_line(exc))
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
            log.warning("page %d: OCR failed (%s)", number, one_line(exc))
            continue
        if done.returncode != 0:
            log.warning(
                "page %d: tesseract failed: %s", number, one_line(done.stderr.decode(errors="replace"))
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
