"""Office formats: DOCX, PPTX and XLSX, through python-docx, python-pptx and openpyxl.

Headings the format marks as such (DOCX heading styles, slide titles, sheet names) become ``#``
lines. Spreadsheets are read row by row (openpyxl's read-only mode streams the sheet XML) and capped
at `MAX_SHEET_ROWS` rows per sheet: a data dump of a million rows is not prose, and indexing all of
it would drown every other document in the knowledge base. The cut is stated in the text.
"""

from __future__ import annotations

import io
import re
import warnings
from collections.abc import Iterator
from datetime import date, datetime, time
from typing import Any

from deepdraft.retrieval.documents.formats.extracted import (
    Extracted,
    PageText,
    TextBudget,
    clean,
    escape_markdown,
    require_parser,
)
from deepdraft.retrieval.documents.formats.zipped import invalid_zip_document, verify_zip
from deepdraft.retrieval.documents.limits import DocumentLimits

MAX_SHEET_ROWS = 10_000
"""Rows read per spreadsheet sheet; the rest is cut (and the cut is written into the text)."""

_HEADING_STYLE = re.compile(r"heading (\d)", re.IGNORECASE)


def extract_docx(data: bytes, ocr: bool, limits: DocumentLimits) -> Extracted:
    """Paragraphs and tables in document order; heading styles become ``#`` headings."""
    docx = require_parser("docx", ".docx")
    from docx.table import Table

    verify_zip(data, ".docx", limits)
    try:
        document = docx.Document(io.BytesIO(data))
    except Exception as exc:  # python-docx raises zipfile, KeyError and lxml errors alike
        raise invalid_zip_document(data, ".docx", exc) from exc
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
    pptx = require_parser("pptx", ".pptx")
    verify_zip(data, ".pptx", limits)
    try:
        presentation = pptx.Presentation(io.BytesIO(data))
    except Exception as exc:
        raise invalid_zip_document(data, ".pptx", exc) from exc
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
    openpyxl = require_parser("openpyxl", ".xlsx")
    verify_zip(data, ".xlsx", limits, streamed=_is_worksheet)
    try:
        with warnings.catch_warnings():
            # openpyxl warns about every extension it does not implement (data validation, slicers).
            warnings.simplefilter("ignore")
            workbook = openpyxl.load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except Exception as exc:
        raise invalid_zip_document(data, ".xlsx", exc) from exc
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
