"""A corpus of hostile documents, written on demand: each case writes its file (or folder) and says
what a correct reader does with it.

The cases are what a hostile or careless user can hand `deepdraft kb add` or the server's upload:
zip bombs in every zip-based format, XML entity bombs, deep nesting, invalid encodings, symlink
loops and special files, odd file names, and encrypted, corrupt or booby-trapped PDFs. Nothing here
is large on disk: the bombs are about 1 MB each (see `tests.support.archive_bombs`), and every file
is written in well under a second (the shared 1 GiB of deflated zeros once, in two or three).

`expect` is what a correct reader does: ``"refused"`` (one line saying why, nothing added),
``"accepted"`` (the document is added), or ``"either"`` where both are defensible (a file the
parsers may repair or give up on) — never a traceback, a hang, or a process killed at its limits.
`upload` is false for the cases the server's upload cannot express (a folder, a symlink, a pipe, a
file name that is not UTF-8): those go through `kb add` only.

Typical use::

    for case in CASES:
        target = case.write(tmp_path / case.id)
"""

from __future__ import annotations

import os
import struct
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from tests.support import archive_bombs as bombs
from tests.support.archive_bombs import MiB
from tests.support.documents import write_bytes, write_pdf

Expect = Literal["refused", "accepted", "either"]


@dataclass(frozen=True)
class HostileCase:
    id: str
    """Readable, unique, usable as a pytest id."""
    write: Callable[[Path], Path]
    """Writes the input into an empty folder and returns what to add (a file or a folder)."""
    expect: Expect
    upload: bool = True
    """Whether the case also goes through the server's upload (one file with a UTF-8 name)."""


# -- zip-based formats ---------------------------------------------------------------------------

ZIP_FORMATS = {"docx": "docx", "pptx": "pptx", "xlsx": "xlsx", "xlsm": "xlsx", "epub": "epub"}
"""File suffix → the format whose sample and main part a bomb of that suffix uses."""


def _zip_bomb(suffix: str, *, declared: int | None = None) -> Callable[[Path], Path]:
    def write(folder: Path) -> Path:
        return bombs.write_bomb(
            folder / f"bomb.{suffix}", ZIP_FORMATS[suffix], bombs.zeros(), declared_size=declared
        )

    return write


def _element_bomb(folder: Path) -> Path:
    sample = bombs.write_sample("docx", folder / "sample.docx")
    payload = bombs.tiny_paragraphs("docx", sample)
    sample.unlink()
    return bombs.write_bomb(folder / "paragraphs.docx", "docx", payload)


def _entry_flood(folder: Path) -> Path:
    # More directory entries than any document has (each an empty part), written by hand: past
    # 65,535 entries a zip needs zip64 records, and a hostile one need not bother — the count field
    # of its end record simply wraps.
    body, directory = bytearray(), bytearray()
    entries = 120_000
    for n in range(entries):
        name = b"word/media/%d.bin" % n
        fields = (0, 0, 0x21, 0, 0, 0, len(name), 0)  # stored, no data, CRC and sizes 0
        offset = len(body)
        body += struct.pack("<4sHHHHHIIIHH", b"PK\x03\x04", 20, 0, *fields) + name
        directory += struct.pack("<4sHHHHHHIIIHHHHHII", b"PK\x01\x02", 20, 20, 0, *fields, 0, 0, 0, 0, offset)
        directory += name
    count = entries & 0xFFFF
    end = struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, count, count, len(directory), len(body), 0)
    return write_bytes(folder / "entries.docx", bytes(body + directory + end))


def _laughs(doc_format: str) -> Callable[[Path], Path]:
    units = {
        "docx": b"<w:p><w:r><w:t>%s</w:t></w:r></w:p>",
        "pptx": b"<a:p><a:r><a:t>%s</a:t></a:r></a:p>",
        "xlsx": b'<row><c t="inlineStr"><is><t>%s</t></is></c></row>',
        "epub": b"<p>%s</p>",
    }

    def write(folder: Path) -> Path:
        doctype, reference = bombs.laughs()
        sample = bombs.write_sample(doc_format, folder / f"sample.{doc_format}")
        payload = bombs.repeated(doc_format, sample, units[doc_format] % reference, 1, doctype=doctype)
        sample.unlink()
        return bombs.write_bomb(folder / f"laughs.{doc_format}", doc_format, payload)

    return write


def _epub_with_package(package_prefix: bytes, name: str) -> Callable[[Path], Path]:
    """An EPUB whose package document (content.opf, read with xml.etree) starts with a DTD."""

    def write(folder: Path) -> Path:
        sample = bombs.write_sample("epub", folder / "sample.epub")
        target = folder / name
        with zipfile.ZipFile(sample) as source, zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as out:
            for info in source.infolist():
                data = source.read(info)
                if info.filename.endswith(".opf"):
                    declaration_end = data.index(b"?>") + 2
                    data = data[:declaration_end] + package_prefix + data[declaration_end:]
                    data = data.replace(b"<dc:title>", b"<dc:title>&bomb;", 1)
                out.writestr(info, data)
        sample.unlink()
        return target

    return write


_QUADRATIC = b'<!DOCTYPE package [<!ENTITY bomb "' + b"x" * 100_000 + b'">]>'
_LAUGHS_PACKAGE = (
    bombs.laughs()[0]
    .replace(b"<!DOCTYPE root [", b"<!DOCTYPE package [")
    .replace(b"]>", b'<!ENTITY bomb "&a9;">]>')
)
_EXTERNAL_PACKAGE = b'<!DOCTYPE package [<!ENTITY bomb SYSTEM "file:///etc/passwd">]>'


def _deep(unit_open: bytes, unit_close: bytes, depth: int = 100_000) -> bytes:
    return unit_open * depth + b"Deep inside." + unit_close * depth


def _deep_html(folder: Path) -> Path:
    return write_bytes(
        folder / "nested.html", b"<html><body>" + _deep(b"<div>", b"</div>") + b"</body></html>"
    )


def _deep_epub(folder: Path) -> Path:
    sample = bombs.write_sample("epub", folder / "sample.epub")
    payload = bombs.repeated("epub", sample, b"<div>", 100_000 * len(b"<div>"))
    sample.unlink()
    return bombs.write_bomb(folder / "nested.epub", "epub", payload)


def _deep_docx(folder: Path) -> Path:
    sample = bombs.write_sample("docx", folder / "sample.docx")
    payload = bombs.repeated("docx", sample, b"<w:sdt><w:sdtContent>", 100_000 * 21)
    sample.unlink()
    return bombs.write_bomb(folder / "nested.docx", "docx", payload)


def _text(name: str, data: bytes) -> Callable[[Path], Path]:
    return lambda folder: write_bytes(folder / name, data)


# -- PDFs ----------------------------------------------------------------------------------------


def raw_pdf(objects: list[bytes], root: int = 1) -> bytes:
    """A PDF of `objects` (numbered from 1, bodies without ``obj``/``endobj``) with a correct xref."""
    out = bytearray(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root %d 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, root, xref)
    return bytes(out)


_FONT = b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"


def _page_tree_loop(folder: Path) -> Path:
    # The page tree's only kid is the tree itself: a reader that follows kids blindly never ends.
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [2 0 R] /Count 1 >>"]
    return write_bytes(folder / "loop.pdf", raw_pdf(objects))


def _page_count_lie(folder: Path) -> Path:
    content = b"BT /F1 12 Tf 72 720 Td (One honest page, two billion claimed.) Tj ET"
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 2000000000 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream",
        _FONT,
    ]
    return write_bytes(folder / "count.pdf", raw_pdf(objects))


def _deep_pdf_arrays(folder: Path) -> Path:
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R /Deep " + b"[" * 100_000 + b"]" * 100_000 + b" >>",
        b"<< /Type /Pages /Kids [] /Count 0 >>",
    ]
    return write_bytes(folder / "arrays.pdf", raw_pdf(objects))


def _flate_bomb_pdf(folder: Path) -> Path:
    # One page whose content stream inflates to 1 GiB of zeros (zlib-wrapped, as FlateDecode wants).
    raw = bombs.zeros()
    adler = 1
    for _ in range(1024):
        adler = zlib.adler32(bytes(MiB), adler)
    stream = b"\x78\x9c" + raw.data + adler.to_bytes(4, "big")
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R >>",
        b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(stream) + stream + b"\nendstream",
    ]
    return write_bytes(folder / "flate.pdf", raw_pdf(objects))


def _truncated_pdf(folder: Path) -> Path:
    whole = write_pdf(folder / "whole.pdf", [f"Page {n} of a survey of glaciers." for n in range(1, 4)])
    data = whole.read_bytes()
    whole.unlink()
    return write_bytes(folder / "truncated.pdf", data[: len(data) // 2])


# -- the file system -----------------------------------------------------------------------------

_FACT = b"# Field notes\n\nThe glacier retreated forty metres between the two surveys.\n"


def _symlink_loops(folder: Path) -> Path:
    root = folder / "notes"
    root.mkdir()
    (root / "real.md").write_bytes(_FACT)
    (root / "itself").symlink_to(".")
    (root / "up").symlink_to("..")
    (root / "ping.md").symlink_to("pong.md")
    (root / "pong.md").symlink_to("ping.md")
    return root


def _self_link(folder: Path) -> Path:
    link = folder / "self.md"
    link.symlink_to("self.md")
    return link


def _device_link(folder: Path) -> Path:
    # A "text file" that is /dev/zero: its size says 0, reading it never ends.
    link = folder / "endless.txt"
    link.symlink_to("/dev/zero")
    return link


def _fifo(folder: Path) -> Path:
    # A named pipe with no writer: opening it for reading blocks forever.
    pipe = folder / "pipe.md"
    os.mkfifo(pipe)
    return pipe


def _named(name: str | bytes) -> Callable[[Path], Path]:
    """A folder holding one good Markdown file under an odd `name` (bytes: not UTF-8)."""

    def write(folder: Path) -> Path:
        root = folder / "odd"
        root.mkdir()
        path = os.path.join(os.fsencode(root), name) if isinstance(name, bytes) else root / name
        with open(path, "wb") as handle:
            handle.write(_FACT)
        return root

    return write


def _named_file(name: str) -> Callable[[Path], Path]:
    """One good Markdown file under an odd `name`, given as the file itself."""
    return lambda folder: write_bytes(folder / name, _FACT)


# -- the corpus ----------------------------------------------------------------------------------

CASES: tuple[HostileCase, ...] = (
    *(HostileCase(f"zip-bomb-{suffix}", _zip_bomb(suffix), "refused") for suffix in ZIP_FORMATS),
    *(
        HostileCase(f"lying-zip-bomb-{suffix}", _zip_bomb(suffix, declared=4096), "refused")
        for suffix in ("docx", "epub")
    ),
    HostileCase("xml-element-bomb-docx", _element_bomb, "refused"),
    HostileCase("zip-entry-flood-docx", _entry_flood, "refused"),
    HostileCase("not-a-zip-docx", _text("memo.docx", b"Just text, renamed to .docx.\n" * 20), "refused"),
    *(
        HostileCase(f"billion-laughs-{fmt}", _laughs(fmt), "either")
        for fmt in ("docx", "pptx", "xlsx", "epub")
    ),
    HostileCase(
        "billion-laughs-epub-package", _epub_with_package(_LAUGHS_PACKAGE, "laughs-opf.epub"), "either"
    ),
    HostileCase("quadratic-blowup-epub-package", _epub_with_package(_QUADRATIC, "quadratic.epub"), "either"),
    HostileCase("external-entity-epub-package", _epub_with_package(_EXTERNAL_PACKAGE, "xxe.epub"), "either"),
    HostileCase(
        "billion-laughs-html",
        _text(
            "laughs.html",
            bombs.laughs()[0].replace(b"root", b"html") + b"<html><body><p>&a9;</p></body></html>",
        ),
        "either",
    ),
    HostileCase("deep-nesting-html", _deep_html, "refused"),
    HostileCase("deep-nesting-epub", _deep_epub, "refused"),
    HostileCase("deep-nesting-docx", _deep_docx, "either"),
    HostileCase(
        "deep-nesting-jsonl",
        _text("nested.jsonl", b'{"id": "a", "text": ' + _deep(b"[", b"]") + b"}\n"),
        "refused",
    ),
    HostileCase("deep-nesting-markdown", _text("quotes.md", b"> " * 100_000 + b"Deep inside.\n"), "accepted"),
    HostileCase("invalid-utf8-text", _text("mojibake.txt", b"Caf\xe9 \xff\xfe\xc3\x28 ok\n" * 200), "either"),
    HostileCase(
        "invalid-utf8-jsonl", _text("bad.jsonl", b'{"id": "a", "text": "caf\xe9 \xff"}\n'), "refused"
    ),
    HostileCase(
        "lone-surrogate-jsonl",
        _text("surrogate.jsonl", b'{"id": "a", "text": "half \\ud800 pair"}\n'),
        "refused",
    ),
    HostileCase(
        "utf16-without-bom",
        _text("wide.txt", "Notes on the glacier survey.\n".encode("utf-16-le") * 50),
        "either",
    ),
    HostileCase(
        "bogus-charset-html",
        _text(
            "charset.html",
            b'<html><head><meta charset="x-no-such-charset"></head><body><p>Caf\xe9 notes on ice.</p></body></html>',
        ),
        "either",
    ),
    HostileCase("nul-bytes-markdown", _text("nul.md", b"# Title\n\n" + b"\x00" * 4096), "refused"),
    HostileCase(
        "overlong-utf8-markdown", _text("overlong.md", b"# Title\n\n\xc0\xaf\xe0\x80\xaf text\n"), "either"
    ),
    HostileCase("symlink-loops", _symlink_loops, "accepted", upload=False),
    HostileCase("symlink-to-itself", _self_link, "refused", upload=False),
    HostileCase("symlink-to-dev-zero", _device_link, "refused", upload=False),
    HostileCase("named-pipe", _fifo, "refused", upload=False),
    HostileCase("name-with-newline", _named("two\nlines.md"), "accepted", upload=False),
    HostileCase("name-not-utf8", _named(b"caf\xe9-notes.md"), "refused", upload=False),
    HostileCase("name-of-255-bytes", _named_file("n" * 252 + ".md"), "either"),
    HostileCase("name-with-leading-dash", _named_file("-rf --help.md"), "accepted"),
    HostileCase("name-with-newline-upload", _named_file("two\nlines.md"), "either"),
    HostileCase(
        "pdf-encrypted",
        lambda folder: write_pdf(folder / "secret.pdf", ["Top secret."], user_password="pw"),
        "refused",
    ),
    HostileCase(
        "pdf-corrupt", _text("broken.pdf", b"%PDF-1.7\n1 0 obj\n<< /Type /Catalog" + b"\x8f" * 64), "refused"
    ),
    HostileCase("pdf-truncated", _truncated_pdf, "either"),
    HostileCase("pdf-page-tree-loop", _page_tree_loop, "refused"),
    HostileCase("pdf-page-count-lie", _page_count_lie, "either"),
    HostileCase("pdf-deep-arrays", _deep_pdf_arrays, "refused"),
    HostileCase("pdf-flate-bomb", _flate_bomb_pdf, "refused"),
)
