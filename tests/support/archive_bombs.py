"""Hostile zip-based documents (DOCX, PPTX, XLSX, EPUB), written in a second or two, about 1 MB each.

A bomb is a real sample document (from `tests.support.documents`) whose main part — the one the
format's library reads first — is replaced by a payload that inflates far beyond its packed size:

* `zeros`: 1 GiB of zero bytes (deflate packs it about 1000 to 1, into about 1 MB);
* `tiny_paragraphs`: 64 MiB of well-formed, one-letter paragraphs (rows, for a spreadsheet), which
  packs into a few hundred KB and, accepted, becomes millions of blocks of text;
* `lying`: the zeros, under a header that declares the part's original, harmless size.

The payload is deflated once, streaming, and its packed bytes are copied into each archive, so a
test never holds the inflated payload in memory. That needs a zip writer that takes packed data
as it is (`zipfile` always compresses what it is given), which is also what lets a header lie; the
archives it writes are plain zip files (no zip64, no data descriptors), as Office and EPUB use.

Typical use::

    zeros = deflated(Payload(unit=bytes(MiB), count=1024))
    bomb = write_bomb(tmp_path / "zeros.docx", "docx", zeros)
"""

from __future__ import annotations

import struct
import zipfile
import zlib
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from tests.support.documents import write_docx, write_epub, write_pptx, write_xlsx

MiB = 1024 * 1024

FORMATS = ("docx", "pptx", "xlsx", "epub")

MAIN_PART = {
    "docx": "word/document.xml",
    "pptx": "ppt/slides/slide1.xml",
    "xlsx": "xl/worksheets/sheet1.xml",
    "epub": "OEBPS/text/ch1.xhtml",
}
"""The part each format's reader opens first: a bomb replaces it."""

# Where repeated content may go in each main part, and the unit repeated there (one-letter paragraphs,
# rows for a spreadsheet): after this marker they are well-formed XML of the part's own vocabulary.
_INSERT_AFTER = {"docx": b"<w:body>", "pptx": b"<p:txBody>", "xlsx": b"<sheetData>", "epub": b"<body>"}
TINY_UNIT = {
    "docx": b"<w:p><w:r><w:t>x</w:t></w:r></w:p>",
    "pptx": b"<a:p><a:r><a:t>x</a:t></a:r></a:p>",
    "xlsx": b'<row><c t="inlineStr"><is><t>x</t></is></c></row>',
    "epub": b"<p>x</p>",
}


@dataclass(frozen=True)
class Payload:
    """``prefix + unit * count + suffix``: a part's content, described rather than held."""

    unit: bytes
    count: int
    prefix: bytes = b""
    suffix: bytes = b""


@dataclass(frozen=True)
class Packed:
    """A payload deflated (raw deflate, as zip stores it), with the size and CRC a header records."""

    data: bytes
    size: int
    crc: int


def deflated(payload: Payload) -> Packed:
    """Deflate `payload` in 1 MiB pieces, so that only the packed bytes are ever held."""
    packer = zlib.compressobj(6, zlib.DEFLATED, -15)
    per_piece = max(1, MiB // max(1, len(payload.unit)))
    pieces = [packer.compress(payload.prefix)]
    crc, size = zlib.crc32(payload.prefix), len(payload.prefix)
    left = payload.count
    while left:
        n = min(left, per_piece)
        piece = payload.unit * n
        pieces.append(packer.compress(piece))
        crc, size, left = zlib.crc32(piece, crc), size + len(piece), left - n
    pieces.append(packer.compress(payload.suffix))
    pieces.append(packer.flush())
    return Packed(b"".join(pieces), size + len(payload.suffix), zlib.crc32(payload.suffix, crc))


@cache
def zeros() -> Packed:
    """1 GiB of zero bytes, deflated (about 1 MB); computed once per test session."""
    return deflated(Payload(unit=bytes(MiB), count=1024))


def tiny_paragraphs(doc_format: str, sample: Path, total: int = 64 * MiB) -> Packed:
    """The sample's main part with one-letter paragraphs (rows) inserted until it holds `total` bytes."""
    return repeated(doc_format, sample, TINY_UNIT[doc_format], total)


def repeated(doc_format: str, sample: Path, unit: bytes, total: int, *, doctype: bytes = b"") -> Packed:
    """The sample's main part with `unit` inserted at the start of its content, about `total` bytes.

    `doctype` (a ``<!DOCTYPE ...>`` declaration) is put before the root element.
    """
    with zipfile.ZipFile(sample) as archive:
        part = archive.read(MAIN_PART[doc_format])
    marker = _INSERT_AFTER[doc_format]
    cut = part.index(marker) + len(marker)
    declared = part.index(b"?>") + 2 if part.startswith(b"<?xml") else 0
    prefix = part[:declared] + doctype + part[declared:cut]
    return deflated(Payload(unit=unit, count=max(1, total // len(unit)), prefix=prefix, suffix=part[cut:]))


def laughs(levels: int = 9) -> tuple[bytes, bytes]:
    """A "billion laughs" DTD (each entity ten of the one before) and a reference to its last entity.

    Expanded, the reference is 10 to the `levels` times 40 characters: 40 GB for the default.
    """
    entities = b'<!ENTITY a0 "haha haha haha haha haha haha haha haha ">' + b"".join(
        b'<!ENTITY a%d "%s">' % (level, b"&a%d;" % (level - 1) * 10) for level in range(1, levels + 1)
    )
    return b"<!DOCTYPE root [" + entities + b"]>", b"&a%d;" % levels


def write_sample(doc_format: str, path: Path) -> Path:
    """A genuine document of `doc_format`, written by the library users' software uses."""
    writers = {"docx": write_docx, "pptx": write_pptx, "xlsx": write_xlsx, "epub": write_epub}
    return writers[doc_format](path)


def write_bomb(path: Path, doc_format: str, packed: Packed, *, declared_size: int | None = None) -> Path:
    """A genuine `doc_format` document whose main part is `packed`.

    `declared_size` makes the headers lie: they record it as the part's size instead of the truth.
    """
    sample = write_sample(doc_format, path.with_name(f"sample-of-{path.name}"))
    members: list[tuple[str, Packed, int]] = []
    with zipfile.ZipFile(sample) as archive:
        for info in archive.infolist():
            if info.filename == MAIN_PART[doc_format]:
                size = packed.size if declared_size is None else declared_size
                members.append((info.filename, packed, size))
            else:
                content = deflated(Payload(unit=archive.read(info), count=1))
                members.append((info.filename, content, content.size))
    sample.unlink()
    return write_zip(path, members)


def write_zip(path: Path, members: list[tuple[str, Packed, int]]) -> Path:
    """A zip of deflated members ``(name, packed, declared size)``, headers written by hand."""
    body = bytearray()
    directory = bytearray()
    for name, packed, declared in members:
        encoded = name.encode()
        offset = len(body)
        fields = (zipfile.ZIP_DEFLATED, 0, 0x21, packed.crc, len(packed.data), declared, len(encoded), 0)
        # Local header: signature, version needed, flags, method, time, date, CRC, sizes, name, extra.
        body += struct.pack("<4sHHHHHIIIHH", b"PK\x03\x04", 20, 0, *fields) + encoded + packed.data
        # Central directory entry: the same, plus version made by, comment, disk, attributes, offset.
        directory += struct.pack("<4sHHHHHHIIIHHHHHII", b"PK\x01\x02", 20, 20, 0, *fields, 0, 0, 0, 0, offset)
        directory += encoded
    end = struct.pack(
        "<4sHHHHIIH", b"PK\x05\x06", 0, 0, len(members), len(members), len(directory), len(body), 0
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(body + directory + end))
    return path
