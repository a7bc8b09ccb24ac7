"""Document formats: real PDF, DOCX, PPTX, XLSX, EPUB, HTML and text files, read into documents.

The files are written by `tests.support.documents` with the libraries users' software uses. Each test
reads them through `read_documents`, the entry point a knowledge base uses, and checks the text,
title, location, pages and the chunks' pages and heading paths — or the one-line failure.
"""

from __future__ import annotations

import io
import shutil
import stat
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

from deepdraft.retrieval.documents import extract
from deepdraft.retrieval.documents.chunking import Chunk, chunk_document
from deepdraft.retrieval.documents.corpus import read_documents
from deepdraft.retrieval.documents.formats import markup, office
from deepdraft.retrieval.documents.formats.extracted import Extracted
from deepdraft.retrieval.documents.limits import DocumentLimits
from deepdraft.retrieval.documents.values import Document, Failure
from tests.support import archive_bombs as bombs
from tests.support import documents as sample
from tests.support.documents import EXPECTED_FAILURES, make_document_folder, write_bytes, write_pdf

MB = 1024 * 1024


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One folder of sample documents for the whole module (building it takes about a second)."""
    return make_document_folder(tmp_path_factory.mktemp("documents"))


def read(path: Path, **options: object) -> Document:
    items = list(read_documents(path, max_bytes=MB, **options))  # type: ignore[arg-type]
    assert len(items) == 1
    (item,) = items
    assert isinstance(item, Document), item
    return item


def fail(path: Path, **options: object) -> str:
    items = list(read_documents(path, max_bytes=MB, **options))  # type: ignore[arg-type]
    assert len(items) == 1
    (item,) = items
    assert isinstance(item, Failure), item
    assert item.location == str(path)
    return item.reason


def chunk_with(doc: Document, phrase: str) -> Chunk:
    """The chunk holding `phrase`; chunks are small so that each page or section is its own chunk."""
    matches = [c for c in chunk_document(doc, 60, 10) if phrase in c.text]
    assert matches, f"{phrase!r} in no chunk"
    return matches[0]


# -- PDF --------------------------------------------------------------------------------------------


def test_pdf_pages_are_kept_and_every_chunk_names_its_page(files: dict[str, Path]) -> None:
    doc = read(files["pdf"])

    assert (doc.format, doc.title, doc.location) == ("pdf", sample.PDF_TITLE, str(files["pdf"]))
    assert [page.number for page in doc.pages] == [1, 2, 3]
    for page, expected in zip(doc.pages, sample.PDF_PAGES, strict=True):
        assert " ".join(doc.text[page.start : page.end].split()) == expected
    for number, expected in enumerate(sample.PDF_PAGES, start=1):
        chunk = chunk_with(doc, expected[:40])  # pypdf breaks the wrapped lines; 40 chars are on one
        assert chunk.page == number == doc.page_at(chunk.start)


def test_pdf_encrypted_with_only_an_owner_password_opens(files: dict[str, Path]) -> None:
    assert read(files["pdf_open_encrypted"]).text == "Printing is restricted, reading is not."


def test_pdf_needing_a_password_is_reported(files: dict[str, Path]) -> None:
    assert fail(files["encrypted_pdf"]) == "encrypted PDF (no password support)"


def test_pdf_corrupt_or_truncated_is_reported(files: dict[str, Path], tmp_path: Path) -> None:
    assert fail(files["corrupt_pdf"]).startswith("corrupt PDF (")
    whole = files["pdf"].read_bytes()
    truncated = write_bytes(tmp_path / "truncated.pdf", whole[: len(whole) // 3])
    items = list(read_documents(truncated, max_bytes=MB))
    # pypdf may salvage the first page of a truncated file; what it must never do is raise.
    assert len(items) == 1
    if isinstance(items[0], Failure):
        assert items[0].reason.startswith(("corrupt PDF", "no text"))


def test_pdf_without_text_is_reported(tmp_path: Path) -> None:
    blank = write_pdf(tmp_path / "blank.pdf", [""])
    assert fail(blank) == "no text in this PDF"


def test_scanned_pdf_without_tesseract_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scanned = sample.write_scanned_pdf(tmp_path / "scan.pdf", ["FROZEN LAKE REPORT"])
    monkeypatch.setenv("PATH", str(tmp_path / "no-binaries"))
    assert fail(scanned) == (
        "scanned PDF with no text layer: install tesseract-ocr (Debian: apt install tesseract-ocr) to read it"
    )
    assert fail(scanned, ocr=False) == "scanned PDF with no text layer, and OCR is turned off (retrieval.ocr)"


def test_scanned_pdf_images_are_piped_to_tesseract(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The OCR plumbing with a stand-in `tesseract` that checks its input is a PNG of the page image
    and answers with fixed text (the real engine is tested below when it is installed)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stand_in = bin_dir / "tesseract"
    stand_in.write_text(
        textwrap.dedent(
            f"""\
            #!{sys.executable}
            import io, sys
            from PIL import Image
            assert sys.argv[1:] == ["stdin", "stdout"], sys.argv
            image = Image.open(io.BytesIO(sys.stdin.buffer.read()))
            assert image.format == "PNG" and image.width > 1000, (image.format, image.size)
            print("FROZEN LAKE REPORT\\f")
            """
        ),
        encoding="utf-8",
    )
    stand_in.chmod(stand_in.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", str(bin_dir))
    text_page = write_pdf(tmp_path / "text.pdf", ["A typed cover page with enough text to need no OCR."])
    scanned = sample.write_scanned_pdf(tmp_path / "scan.pdf", ["FROZEN LAKE REPORT"])

    doc = read(scanned)

    assert doc.text == "FROZEN LAKE REPORT" and [p.number for p in doc.pages] == [1]
    assert read(text_page).text == "A typed cover page with enough text to need no OCR."
    assert fail(scanned, ocr=False).startswith("scanned PDF with no text layer, and OCR is turned off")


@pytest.mark.skipif(
    shutil.which("tesseract") is None, reason="tesseract-ocr is not installed (CI installs it)"
)
def test_scanned_pdf_is_read_by_real_tesseract(tmp_path: Path) -> None:
    scanned = sample.write_scanned_pdf(tmp_path / "scan.pdf", ["FROZEN LAKE REPORT", "ICE IS THIN"])
    doc = read(scanned)
    words = doc.text.upper().split()
    assert "FROZEN" in words and "LAKE" in words and "THIN" in words
    assert chunk_with(doc, doc.text.split()[0]).page == 1


# -- Office formats -----------------------------------------------------------------------------------


def test_docx_headings_become_the_heading_path(files: dict[str, Path]) -> None:
    doc = read(files["docx"])

    assert (doc.format, doc.title, doc.pages) == ("docx", sample.DOCX_TITLE, ())
    assert doc.text.startswith(f"# {sample.DOCX_TITLE}\n\nPrepared for the board")
    assert "- Dredging of the channel is complete." in doc.text
    assert " | ".join(sample.DOCX_TABLE_ROW) + "\nEast | 412 | 1.2 million" in doc.text
    assert chunk_with(doc, sample.DOCX_FACT).headings == ("Traffic", "Containers")
    # A body paragraph that starts with "#" stays a paragraph of its section.
    berths = chunk_with(doc, "berths leased")
    assert berths.headings == ("Finance",) and "\\# of berths leased" in berths.text


def test_pptx_one_page_per_slide_titled_by_the_slide(files: dict[str, Path]) -> None:
    doc = read(files["pptx"])

    assert (doc.format, doc.title) == ("pptx", sample.PPTX_SLIDES[0][0])
    assert [page.number for page in doc.pages] == [1, 2, 3]
    for number, (title, body) in enumerate(sample.PPTX_SLIDES, start=1):
        chunk = chunk_with(doc, body)
        assert (chunk.page, chunk.headings) == (number, (title,))
        assert chunk.text.startswith(f"# {title}\n\n{body}")
    assert chunk_with(doc, sample.PPTX_NOTES).page == 2


def test_xlsx_one_page_per_sheet_rows_tab_separated(files: dict[str, Path]) -> None:
    doc = read(files["xlsx"])

    assert (doc.format, doc.title) == ("xlsx", "rainfall")
    assert [page.number for page in doc.pages] == [1, 3]  # sheet positions; the empty sheet has no text
    rainfall = chunk_with(doc, "Aberdeen\tMarch")
    assert (rainfall.page, rainfall.headings) == (1, ("Rainfall",))
    assert (
        rainfall.text
        == "# Rainfall\n\nStation\tMonth\tMillimetres\nAberdeen\tMarch\t71.5\nInverness\tMarch\t48"
    )
    assert chunk_with(doc, "Dyce observatory").page == 3


def test_xlsx_long_sheets_are_cut_and_say_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import openpyxl

    workbook = openpyxl.Workbook()
    for number in range(1, 51):
        workbook.active.append([f"row {number}", number])
    workbook.save(tmp_path / "long.xlsx")
    monkeypatch.setattr(office, "MAX_SHEET_ROWS", 20)

    text = read(tmp_path / "long.xlsx").text

    assert "row 20\t20\n[rows after the first 20 not read]" in text and "row 21" not in text


def test_password_protected_office_file_is_named(tmp_path: Path) -> None:
    # Office encrypts .docx/.xlsx/.pptx into an OLE container: the same magic as the old .doc.
    ole = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 1024
    for suffix in (".docx", ".xlsx", ".pptx"):
        reason = fail(write_bytes(tmp_path / f"locked{suffix}", ole))
        assert reason.startswith("password-protected, or an old ") and reason.endswith(f"save it as {suffix}")


def test_office_file_that_is_not_one_is_reported(tmp_path: Path) -> None:
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as handle:
        handle.writestr("hello.txt", "not a word document")
    assert fail(write_bytes(tmp_path / "fake.docx", archive.getvalue())).startswith(
        "not a valid .docx file ("
    )
    assert fail(write_bytes(tmp_path / "fake.xlsx", b"plain text")).startswith("not a valid .xlsx file (")


# -- EPUB and HTML -------------------------------------------------------------------------------------


def test_epub_chapters_in_spine_order_with_headings(files: dict[str, Path]) -> None:
    doc = read(files["epub"])

    assert (doc.format, doc.title) == ("epub", sample.EPUB_TITLE)
    expected = "\n\n".join(f"# {heading}\n\n{body}" for heading, body in sample.EPUB_CHAPTERS)
    assert doc.text == expected
    assert chunk_with(doc, sample.EPUB_CHAPTERS[1][1]).headings == (sample.EPUB_CHAPTERS[1][0],)


@pytest.mark.parametrize(
    ("members", "reason"),
    [
        ({"mimetype": "application/epub+zip"}, "not a valid .epub file (META-INF/container.xml is missing)"),
        (
            {"META-INF/container.xml": "<container><rootfiles><rootfile full-path='p.opf'/></rootfiles>"},
            "not a valid .epub file (META-INF/container.xml: ",
        ),
        (
            {
                "META-INF/container.xml": "<container><rootfiles><rootfile full-path='p.opf'/></rootfiles></container>",
                "p.opf": "<package><manifest/><spine/></package>",
            },
            "EPUB without chapters (empty spine)",
        ),
    ],
)
def test_broken_epub_is_reported(tmp_path: Path, members: dict[str, str], reason: str) -> None:
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as handle:
        for name, content in members.items():
            handle.writestr(name, content)
    assert fail(write_bytes(tmp_path / "book.epub", archive.getvalue())).startswith(reason)
    assert fail(write_bytes(tmp_path / "notzip.epub", b"PK but not really")) == (
        "not a valid .epub file (not a zip archive)"
    )


def test_html_main_text_title_and_canonical_url(files: dict[str, Path]) -> None:
    doc = read(files["html"])

    assert (doc.format, doc.title, doc.location) == ("html", sample.HTML_TITLE, sample.HTML_URL)
    assert doc.text.startswith(f"# {sample.HTML_TITLE}\n\n{sample.HTML_FACT}")
    assert "About us" not in doc.text and "Copyright" not in doc.text  # navigation and footer dropped
    assert chunk_with(doc, "compromise tariff").headings == (sample.HTML_TITLE, "Nullification")


def test_html_short_page_keeps_its_text_but_not_style_or_script(tmp_path: Path) -> None:
    page = write_bytes(
        tmp_path / "stub.htm",
        b"<html><head><title>Stub</title><style>p{color:red}</style></head>"
        b"<body><h2>Only heading</h2><p>One line &amp; <b>bold</b> word.</p><script>var x=1;</script></body></html>",
    )
    doc = read(page)
    assert doc.title == "Stub" and doc.location == str(page)
    assert doc.text.startswith("## Only heading\n\nOne line & ") and "bold" in doc.text
    assert "color" not in doc.text and "var x" not in doc.text


def test_html_block_fallback_keeps_headings_and_escapes_hash_lines() -> None:
    """What is read when trafilatura finds no main text, and for every EPUB chapter."""
    html = b"<body><h1>Top</h1><div># not a heading</div><ul><li>one</li><li>two</li></ul>tail</body>"
    assert markup.html_blocks_text(html) == "# Top\n\n\\# not a heading\n\none\n\ntwo\n\ntail"
    assert markup.html_blocks_text(b"<html></html>") == ""


def nested(depth: int, inner: str) -> bytes:
    return b"<div>" * depth + inner.encode() + b"</div>" * depth


def test_html_nested_deeper_than_the_parser_reads_is_refused_not_read_as_empty(tmp_path: Path) -> None:
    # libxml2 stops parsing at its depth bound: the text inside (and after) would silently vanish.
    page = write_bytes(
        tmp_path / "deep.html",
        b"<html><body><p>Before the nest.</p>"
        + nested(80_000, "Inside the nest.")
        + b"<p>After.</p></body></html>",
    )
    assert fail(page) == (
        "nested more than 2,048 elements deep: the HTML parser stops there, "
        "so the rest of the document could not be read"
    )


def test_html_nested_deeper_than_trafilatura_reads_is_read_whole(tmp_path: Path) -> None:
    # Past trafilatura's 256 levels and Python's recursion limit, within the parser's bound.
    page = write_bytes(
        tmp_path / "deep.html",
        b"<html><body><p>Before the nest.</p>"
        + nested(1500, "Inside the nest.")
        + b"<p>After it.</p></body></html>",
    )
    assert read(page).text == "Before the nest.\n\nInside the nest.\n\nAfter it."


def test_epub_chapter_nested_too_deep_is_refused(tmp_path: Path) -> None:
    sample_epub = bombs.write_sample("epub", tmp_path / "sample.epub")
    payload = bombs.repeated("epub", sample_epub, b"<div>", 100_000 * len(b"<div>"))
    book = bombs.write_bomb(tmp_path / "deep.epub", "epub", payload)
    assert fail(book).startswith("nested more than 2,048 elements deep")


# -- text and Markdown ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "expected", "title"),
    [
        ("text_utf8", sample.TEXT_UTF8_FACT, "ferry"),
        ("text_latin1", sample.TEXT_LATIN1_FACT, "cafe"),
        ("text_utf16", sample.TEXT_UTF16_FACT, "meeting"),
        ("chinese_txt", sample.CHINESE_TXT_FACT, "长江"),
        ("chinese_gb18030", sample.CHINESE_GB18030_FACT * 3, "黄河"),
    ],
)
def test_text_in_any_common_encoding(files: dict[str, Path], key: str, expected: str, title: str) -> None:
    doc = read(files[key])
    assert (doc.text, doc.title, doc.format) == (expected + "\n", title, "text")


def test_chinese_markdown_keeps_its_headings(files: dict[str, Path]) -> None:
    doc = read(files["chinese_md"])
    assert (doc.title, doc.format) == (sample.CHINESE_MD_TITLE, "markdown")
    chunk = chunk_with(doc, sample.CHINESE_MD_FACT)
    assert chunk.headings == (sample.CHINESE_MD_TITLE, "绿茶")


# -- across formats ---------------------------------------------------------------------------------------


def test_every_sample_is_read_or_fails_with_its_reason(files: dict[str, Path]) -> None:
    for key, path in files.items():
        items = list(read_documents(path, max_bytes=MB, root=path.parent))
        assert len(items) == 1, key
        (item,) = items
        if key in EXPECTED_FAILURES:
            assert isinstance(item, Failure) and item.reason.startswith(EXPECTED_FAILURES[key]), (key, item)
        else:
            assert isinstance(item, Document) and item.text.strip(), (key, item)
            assert item.doc_id == path.name and len(item.content_hash) == 64
            chunks = chunk_document(item, 220, 40)
            assert chunks and all(c.text == item.text[c.start : c.end] for c in chunks)
            assert all(c.page == item.page_at(c.start) for c in chunks)


def test_missing_parser_names_the_extra_to_install(
    files: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "pypdf", None)  # what an install without the extra looks like
    assert (
        fail(files["pdf"])
        == "reading .pdf files needs the documents extra: pip install 'deepdraft[documents]'"
    )
    assert read(files["markdown"]).title == sample.MARKDOWN_TITLE  # text formats need no extra


def test_parser_crash_is_a_failure_not_an_exception(
    files: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    def explode(data: bytes, ocr: bool, limits: DocumentLimits) -> Extracted:
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setitem(extract.EXTRACTORS, ".docx", ("docx", explode))
    assert fail(files["docx"]) == "unreadable docx file (RecursionError: maximum recursion depth exceeded)"
