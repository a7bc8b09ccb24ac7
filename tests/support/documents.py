"""Real document files of every format deepdraft reads, built on the fly in a test's tmp folder.

Nothing is checked in: each function writes a genuine file with the library a user's software would
use (pypdf, python-docx, python-pptx, openpyxl, Pillow, zipfile), so the tests read what users have.

Typical use::

    files = make_document_folder(tmp_path / "docs")
    # files["pdf"] is a 3-page PDF whose page 2 holds PDF_PAGES[1], files["corrupt_pdf"] a broken one …
    for key, reason in EXPECTED_FAILURES.items():
        ...  # reading files[key] fails with a reason containing `reason`

Each good document carries a distinctive phrase (the constants below), so a search test can ask for
it and check that the right document — and, for paged formats, the right page — comes back. One
writer per format is public too, for tests that need a variation.

PDFs are written by hand: one Helvetica text object per page (the standard-14 font needs no
embedding), which pypdf, poppler and every viewer read. `write_scanned_pdf` writes an image-only
page, as a scanner does, for the OCR path.
"""

from __future__ import annotations

import textwrap
import zipfile
from collections.abc import Sequence
from pathlib import Path

PDF_TITLE = "Glacier Survey 2023"
PDF_PAGES: tuple[str, ...] = (
    "Glacier Survey 2023. Introduction to the survey of the northern ice fields.",
    "Page two reports that the Vatnajokull outlet glaciers retreated forty metres in one summer.",
    "Page three lists the instruments: theodolites, ground radar and a tethered weather balloon.",
)
DOCX_TITLE = "Harbour Authority Annual Report"
DOCX_FACT = "Container traffic through the eastern quay rose by eleven percent."
DOCX_TABLE_ROW = ("Quay", "Ships", "Tonnage")
PPTX_SLIDES: tuple[tuple[str, str], ...] = (
    ("Orchard Cooperative", "Quarterly review for the apple growers of the valley."),
    ("Frost Damage", "Late frost destroyed the blossoms of the Bramley trees in April."),
    ("Next Steps", "Install wind machines before the next flowering season."),
)
PPTX_NOTES = "Mention the insurance claim deadline in May."
XLSX_SHEETS: tuple[tuple[str, tuple[tuple[object, ...], ...]], ...] = (
    (
        "Rainfall",
        (("Station", "Month", "Millimetres"), ("Aberdeen", "March", 71.5), ("Inverness", "March", 48)),
    ),
    ("Empty", ()),
    ("Stations", (("Code", "Name"), ("ABZ", "Aberdeen Dyce observatory"))),
)
EPUB_TITLE = "The Lighthouse Keeper"
EPUB_CHAPTERS: tuple[tuple[str, str], ...] = (
    ("Chapter One", "The keeper trimmed the wick of the great lamp every evening at dusk."),
    ("Chapter Two", "A schooner carrying slate ran aground on the reef during the October gale."),
)
HTML_TITLE = "Tariffs in History"
HTML_URL = "https://example.org/history/tariffs"
HTML_FACT = "The Tariff of Abominations of 1828 angered the planters of South Carolina."
MARKDOWN_TITLE = "Beekeeping Notes"
MARKDOWN_FACT = "Varroa mites are counted with a sugar roll test every three weeks."
TEXT_UTF8_FACT = "The ferry to Stornoway leaves at half past seven — weather permitting."
TEXT_LATIN1_FACT = "Le café de la gare servait des crêpes à volonté, même à Noël."
TEXT_UTF16_FACT = "UTF-16 notes: the smörgåsbord was served at the Göteborg meeting."
CHINESE_TXT_FACT = "长江是中国最长的河流，全长约六千三百公里。"
CHINESE_MD_TITLE = "茶叶笔记"
CHINESE_MD_FACT = "龙井茶产于杭州西湖一带，以色绿、香郁、味甘、形美著称。"
CHINESE_GB18030_FACT = "黄河流经九个省区，最后注入渤海。"

EXPECTED_FAILURES: dict[str, str] = {
    "corrupt_pdf": "corrupt PDF",
    "encrypted_pdf": "encrypted PDF (no password support)",
    "binary": "binary file, not a document",
    "empty": "empty file",
    "legacy_doc": "unsupported format .doc (save it as .docx)",
}
"""Keys of `make_document_folder` that give no document, and a part of the reason each gives."""


def make_document_folder(folder: Path) -> dict[str, Path]:
    """Write one file of every supported format, plus the bad files of `EXPECTED_FAILURES`.

    Returns the files by key. Also writes a hidden file (``.hidden.md``) that a folder walk must
    skip and that is not in the result. Chinese documents sit in a sub-folder with a Chinese name.
    """
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "pdf": write_pdf(folder / "glacier-survey.pdf", PDF_PAGES, title=PDF_TITLE),
        "pdf_open_encrypted": write_pdf(
            folder / "restricted.pdf", ["Printing is restricted, reading is not."], owner_password="owner"
        ),
        "docx": write_docx(folder / "harbour-report.docx"),
        "pptx": write_pptx(folder / "orchard.pptx"),
        "xlsx": write_xlsx(folder / "rainfall.xlsx"),
        "epub": write_epub(folder / "lighthouse.epub"),
        "html": write_html(folder / "tariffs.html"),
        "markdown": write_text(
            folder / "beekeeping.md", f"# {MARKDOWN_TITLE}\n\n## Pests\n\n{MARKDOWN_FACT}\n", "utf-8"
        ),
        "text_utf8": write_text(folder / "ferry.txt", TEXT_UTF8_FACT + "\n", "utf-8"),
        "text_latin1": write_text(folder / "cafe.txt", TEXT_LATIN1_FACT + "\n", "latin-1"),
        "text_utf16": write_text(folder / "meeting.txt", TEXT_UTF16_FACT + "\n", "utf-16"),
        "chinese_txt": write_text(folder / "中文" / "长江.txt", CHINESE_TXT_FACT + "\n", "utf-8"),
        "chinese_md": write_text(
            folder / "中文" / "茶叶.md", f"# {CHINESE_MD_TITLE}\n\n## 绿茶\n\n{CHINESE_MD_FACT}\n", "utf-8"
        ),
        "chinese_gb18030": write_text(
            folder / "中文" / "黄河.txt", CHINESE_GB18030_FACT * 3 + "\n", "gb18030"
        ),
        "corrupt_pdf": write_bytes(
            folder / "broken.pdf", b"%PDF-1.7\n1 0 obj\n<< /Type /Catalog" + b"\x8f" * 64
        ),
        "encrypted_pdf": write_pdf(folder / "secret.pdf", ["Top secret."], user_password="secret"),
        "binary": write_bytes(folder / "blob.txt", bytes(range(256)) * 8),
        "empty": write_bytes(folder / "empty.md", b""),
        "legacy_doc": write_bytes(
            folder / "old-memo.doc", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 504
        ),
    }
    write_text(folder / ".hidden.md", "# Hidden\n\nNever read.\n", "utf-8")
    return files


# -- one writer per format ----------------------------------------------------------------------------


def write_bytes(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def write_text(path: Path, text: str, encoding: str) -> Path:
    """Text in `encoding` (``"utf-16"`` writes a BOM, as Windows editors do)."""
    return write_bytes(path, text.encode(encoding))


def write_pdf(
    path: Path,
    pages: Sequence[str],
    *,
    title: str | None = None,
    user_password: str | None = None,
    owner_password: str | None = None,
) -> Path:
    """A PDF with one page per string (cp1252 characters only), lines wrapped at 80 characters.

    With `owner_password` only, the PDF is encrypted but opens with the empty user password (as
    "print-protected" PDFs do); with `user_password` it needs that password to be read at all.
    """
    from pypdf import PdfWriter
    from pypdf.generic import ContentStream, DictionaryObject, NameObject

    writer = PdfWriter()
    font = DictionaryObject(
        {
            NameObject("/Type"): NameObject("/Font"),
            NameObject("/Subtype"): NameObject("/Type1"),
            NameObject("/BaseFont"): NameObject("/Helvetica"),
            NameObject("/Encoding"): NameObject("/WinAnsiEncoding"),
        }
    )
    for text in pages:
        page = writer.add_blank_page(612, 792)
        page[NameObject("/Resources")] = DictionaryObject(
            {NameObject("/Font"): DictionaryObject({NameObject("/F1"): font})}
        )
        lines = [line for paragraph in text.split("\n") for line in textwrap.wrap(paragraph, 80) or [""]]
        shown = b" T* ".join(b"(" + _pdf_string(line) + b") Tj" for line in lines)
        stream = ContentStream(None, None)
        stream.set_data(b"BT /F1 12 Tf 15 TL 72 720 Td " + shown + b" ET")
        page.replace_contents(stream)
    if title is not None:
        writer.add_metadata({"/Title": title})
    if user_password is not None or owner_password is not None:
        writer.encrypt(user_password or "", owner_password, algorithm="AES-256")
    with path.open("wb") as handle:
        writer.write(handle)
    return path


def _pdf_string(text: str) -> bytes:
    raw = text.encode("cp1252")
    return raw.replace(b"\\", b"\\\\").replace(b"(", b"\\(").replace(b")", b"\\)")


def write_scanned_pdf(path: Path, lines: Sequence[str]) -> Path:
    """A one-page PDF that is only a picture of `lines` (black on white, large type): no text layer."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=56)
    image = Image.new("L", (1800, 140 + 100 * len(lines)), color=255)
    draw = ImageDraw.Draw(image)
    for index, line in enumerate(lines):
        draw.text((80, 70 + 100 * index), line, fill=0, font=font)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="PDF", resolution=200)
    return path


def write_docx(path: Path) -> Path:
    """Title, headings at two levels, a bullet, a table, and a paragraph that starts with "#"."""
    import docx

    document = docx.Document()
    document.core_properties.title = DOCX_TITLE
    document.add_heading(DOCX_TITLE, level=0)
    document.add_paragraph("Prepared for the board of the harbour authority.")
    document.add_heading("Traffic", level=1)
    document.add_heading("Containers", level=2)
    document.add_paragraph(DOCX_FACT)
    document.add_paragraph("Dredging of the channel is complete.", style="List Bullet")
    table = document.add_table(rows=2, cols=3)
    for cell, value in zip(table.rows[0].cells, DOCX_TABLE_ROW, strict=True):
        cell.text = value
    for cell, value in zip(table.rows[1].cells, ("East", "412", "1.2 million"), strict=True):
        cell.text = value
    document.add_heading("Finance", level=1)
    document.add_paragraph("# of berths leased: twelve.")
    path.parent.mkdir(parents=True, exist_ok=True)
    document.save(str(path))
    return path


def write_pptx(path: Path) -> Path:
    """One "Title and Content" slide per entry of `PPTX_SLIDES`; notes on the second slide."""
    import pptx

    presentation = pptx.Presentation()
    layout = presentation.slide_layouts[1]
    for index, (title, body) in enumerate(PPTX_SLIDES):
        slide = presentation.slides.add_slide(layout)
        slide.shapes.title.text = title
        slide.placeholders[1].text = body
        if index == 1:
            slide.notes_slide.notes_text_frame.text = PPTX_NOTES
    path.parent.mkdir(parents=True, exist_ok=True)
    presentation.save(str(path))
    return path


def write_xlsx(path: Path) -> Path:
    """The sheets of `XLSX_SHEETS` in order (the second one empty)."""
    import openpyxl

    workbook = openpyxl.Workbook()
    workbook.remove(workbook.active)
    for name, rows in XLSX_SHEETS:
        sheet = workbook.create_sheet(name)
        for row in rows:
            sheet.append(list(row))
    path.parent.mkdir(parents=True, exist_ok=True)
    workbook.save(path)
    return path


def write_epub(path: Path) -> Path:
    """An EPUB 3 whose manifest lists the chapters in reverse: only the spine gives reading order."""
    chapters = {
        f"text/ch{index}.xhtml": (
            '<?xml version="1.0" encoding="utf-8"?>\n<html xmlns="http://www.w3.org/1999/xhtml">'
            f"<head><title>{heading}</title></head><body><h1>{heading}</h1><p>{body}</p></body></html>"
        )
        for index, (heading, body) in enumerate(EPUB_CHAPTERS, start=1)
    }
    manifest = "".join(
        f'<item id="c{index}" href="{name}" media-type="application/xhtml+xml"/>'
        for index, name in reversed(list(enumerate(chapters, start=1)))
    )
    spine = "".join(f'<itemref idref="c{index}"/>' for index in range(1, len(chapters) + 1))
    package = (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        '<package xmlns="http://www.idpf.org/2007/opf" version="3.0" unique-identifier="id">'
        '<metadata xmlns:dc="http://purl.org/dc/elements/1.1/">'
        f'<dc:identifier id="id">urn:uuid:0</dc:identifier><dc:title>{EPUB_TITLE}</dc:title>'
        f"<dc:language>en</dc:language></metadata><manifest>{manifest}</manifest>"
        f"<spine>{spine}</spine></package>"
    )
    container = (
        '<?xml version="1.0"?>\n<container version="1.0" xmlns="urn:oasis:names:tc:opendocument:xmlns:container">'
        '<rootfiles><rootfile full-path="OEBPS/content.opf" media-type="application/oebps-package+xml"/>'
        "</rootfiles></container>"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as archive:
        # The EPUB rule: "mimetype" first and stored uncompressed, so tools can sniff the type.
        archive.writestr("mimetype", "application/epub+zip", compress_type=zipfile.ZIP_STORED)
        archive.writestr("META-INF/container.xml", container, compress_type=zipfile.ZIP_DEFLATED)
        archive.writestr("OEBPS/content.opf", package, compress_type=zipfile.ZIP_DEFLATED)
        for name, xhtml in chapters.items():
            archive.writestr(f"OEBPS/{name}", xhtml, compress_type=zipfile.ZIP_DEFLATED)
    return path


def write_html(path: Path) -> Path:
    """An article page with navigation and footer boilerplate, a canonical URL and two headings."""
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{HTML_TITLE} | Example History</title>
<link rel="canonical" href="{HTML_URL}"><meta property="og:url" content="{HTML_URL}">
<meta property="og:title" content="{HTML_TITLE}"></head>
<body><nav><a href="/">Home</a> <a href="/about">About us</a> <a href="/shop">Shop</a></nav>
<article><h1>{HTML_TITLE}</h1>
<p>{HTML_FACT} Southern opponents argued that it favoured northern manufacturers at their expense.</p>
<h2>Nullification</h2>
<p>South Carolina declared the tariff void within its borders in 1832, which led to a constitutional
crisis that a compromise tariff resolved in 1833, lowering the rates over a decade.</p>
</article><footer>Copyright 2024 Example History. All rights reserved.</footer></body></html>
"""
    return write_text(path, page, "utf-8")
