"""How much one document may unpack and produce: the bounds that keep a hostile file from taking
the machine, and the setting that raises each of them.

A 1 MB DOCX can hold a gigabyte of zeros, and a 200 KB one sixty megabytes of one-letter paragraphs
that become millions of passages. Size limits on the file (``retrieval.max_file_mb``) cannot see
either, so archives are bounded by what they inflate to (`deepdraft.retrieval.documents.archive`) and every
document, whatever its format, by the text it yields.

Trade-offs:

* The compression-ratio cap applies only once an archive has inflated past a floor: below it, a
  spreadsheet of one repeated value packs a hundred to one quite honestly, and its size does no
  harm; above it, such a ratio is what a bomb looks like.
* Bytes alone do not bound the cost of XML: python-docx, python-pptx and lxml build a tree of the
  whole part, at a few hundred bytes per element, so 40 MB of one-letter paragraphs (below the
  ratio floor, and packing well under 1 MB) would cost gigabytes. The elements of the parts parsed
  whole are therefore counted too. Two million is ten times a 2,000-page report written by
  python-docx, and about three times one formatted by Word at 40 elements a paragraph (an
  estimate: runs split by revisions, each with its own properties); spreadsheet sheets are read as a
  stream (openpyxl's read-only mode, which stops after `MAX_SHEET_ROWS` rows) and do not count.
* The text bound counts characters, not bytes or passages: it is what chunking and indexing cost,
  and what a user can relate to. The default, 20 million, is
  about five Bibles, or three dense 2,000-page books; a JSONL corpus is many documents, so the
  bound applies to each record, never to the file.
* The defaults are repeated here from `RetrievalSettings` (settings never import the retrieval
  package); `DocumentLimits.from_settings` is how callers with settings build them, and a test
  keeps the two in step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from deepdraft.settings import RetrievalSettings

MB = 1024 * 1024


@dataclass(frozen=True)
class DocumentLimits:
    """The bounds on one document (`RetrievalSettings` names each one's setting)."""

    max_unpacked_bytes: int = 512 * MB
    """All members of one archive together, as inflated (``retrieval.max_unpacked_mb``)."""
    max_member_bytes: int = 256 * MB
    """One member of an archive, as inflated (``retrieval.max_unpacked_member_mb``)."""
    max_compression_ratio: float = 100.0
    """Inflated bytes per byte of archive, checked past the floor (``retrieval.max_compression_ratio``)."""
    ratio_floor_bytes: int = 50 * MB
    """Inflated bytes below which any ratio is allowed (``retrieval.compression_ratio_floor_mb``)."""
    max_xml_elements: int = 2_000_000
    """XML elements in the parts of one archive that are parsed whole (``retrieval.max_xml_elements``)."""
    max_document_chars: int = 20_000_000
    """Characters of text one document (one JSONL record) may yield (``retrieval.max_document_chars``)."""

    @classmethod
    def from_settings(cls, retrieval: RetrievalSettings) -> DocumentLimits:
        return cls(
            max_unpacked_bytes=int(retrieval.max_unpacked_mb * MB),
            max_member_bytes=int(retrieval.max_unpacked_member_mb * MB),
            max_compression_ratio=retrieval.max_compression_ratio,
            ratio_floor_bytes=int(retrieval.compression_ratio_floor_mb * MB),
            max_xml_elements=retrieval.max_xml_elements,
            max_document_chars=retrieval.max_document_chars,
        )


def megabytes(size: int) -> str:
    """A byte count as the settings write it: ``512 MB``, ``0.5 MB``."""
    return f"{size / MB:g} MB"


def too_much_text(limits: DocumentLimits) -> str:
    """The one-line reason for a document whose text is over `limits.max_document_chars`."""
    return (
        f"more than {limits.max_document_chars:,} characters of text "
        "(set retrieval.max_document_chars to read it)"
    )
