"""Proving that a zip-based document (DOCX, PPTX, XLSX, EPUB) cannot bomb, before anything opens it.

`verify_archive` inflates every member of the archive once, through a counter, and throws the
bytes away; it refuses the archive as soon as one member, all members together, the ratio of
inflated to packed bytes, or the XML elements of the parts that are parsed whole pass their limit
(`DocumentLimits`). Only then does the format's library (python-docx, python-pptx, openpyxl, or
`zipfile` for EPUB) get the same bytes.

Trade-offs:

* Validate-then-hand-over rather than hand over a re-packed, verified archive. Those libraries open
  the zip themselves, and a re-packed copy would hold every inflated member in memory at once (up to
  the limit) before the library even starts; streaming the members through a counter holds one
  1 MiB piece. The price is inflating the archive twice — zlib runs at hundreds of MB/s, a
  document's parse is slower. What passed is what the library reads: the same immutable bytes, the
  same central directory parsed by the same `zipfile`.
* Sizes are counted as they inflate, never read from the headers: a member's declared size
  (``ZipInfo.file_size``) is whatever the archive's author wrote, and `zipfile` only cuts its
  output to it after inflating (``read()`` inflates all the packed data in one buffer first: a
  small declared size in front of a gigabyte of zeros still costs the gigabyte). The member is read
  in pieces, as if it declared no size at all, so what is counted is what it holds, and reading
  stops at the piece that passes a limit. A member within the limits that holds other than it
  declares is broken.
* Every entry of the central directory is inflated, referenced or not, and entries that share data
  count once each: that is what a library that reads them all would inflate.
* XML elements are counted as start tags (``<`` not followed by ``/``) in every member that starts
  like markup, whatever its name: the libraries choose parts by content type, not file name. The
  count is approximate (comments and declarations count too; a tag cut between two pieces may count
  wrong), which does not matter at millions. Members the caller names as streamed do not count.
* The entry count is bounded before `zipfile` parses the directory (it builds an object per entry):
  a directory of millions of empty entries is a memory bomb with nothing to inflate. No document has
  `MAX_MEMBERS` parts, so that bound has no setting.
"""

from __future__ import annotations

import copy
import io
import sys
import zipfile
from collections.abc import Callable

from deepdraft.retrieval.documents.limits import DocumentLimits, megabytes

PIECE = 1024 * 1024
"""Bytes inflated at a time: the memory verification needs, whatever the archive holds."""

MAX_MEMBERS = 100_000
"""Entries in one archive's directory; a large EPUB has a few thousand."""

_DIRECTORY_ENTRY = b"PK\x01\x02"  # every central directory entry starts with this signature
_LEADING = b"\xef\xbb\xbf\xff\xfe\x00 \t\r\n"  # BOMs, UTF-16 zero bytes and blanks before markup


class ArchiveRefused(Exception):
    """The archive is over one of the limits; the message is one line naming the setting to raise."""


class BrokenArchive(Exception):
    """The archive cannot be read (not a zip, damaged, encrypted, an unknown compression method)."""


def verify_archive(
    data: bytes, limits: DocumentLimits, *, streamed: Callable[[str], bool] | None = None
) -> None:
    """Inflate every member of the zip archive `data` within `limits`, or raise why not.

    `streamed(name)` is true for the members the reader parses as a stream rather than whole (an
    XLSX's sheets): their XML elements cost no memory and are not counted.
    """
    # An upper bound on the entries `zipfile` would parse: each one starts with the signature.
    if data.count(_DIRECTORY_ENTRY) > MAX_MEMBERS:
        raise ArchiveRefused(f"archive of more than {MAX_MEMBERS:,} files: not a document")
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as exc:
        raise BrokenArchive("not a zip archive") from exc
    except Exception as exc:  # a damaged directory makes zipfile raise struct, value and OS errors
        raise BrokenArchive(_one_line(exc)) from exc
    counter = _Counter(limits, packed=len(data))
    with archive:
        for info in archive.infolist():
            whole = streamed is None or not streamed(info.filename)
            try:
                _inflate(archive, info, counter, count_elements=whole)
            except ArchiveRefused:
                raise
            except Exception as exc:  # bad CRC, truncated data, encryption, unsupported methods
                raise BrokenArchive(f"{info.filename}: {_one_line(exc)}") from exc


class _Counter:
    """The bytes inflated so far, refused the moment they pass a limit."""

    def __init__(self, limits: DocumentLimits, packed: int) -> None:
        self.limits = limits
        self.packed = max(packed, 1)
        self.total = 0
        self.elements = 0

    def add(self, name: str, member: int, piece: int) -> None:
        limits = self.limits
        self.total += piece
        if member > limits.max_member_bytes:
            raise ArchiveRefused(
                f"archive member {name} unpacks to more than {megabytes(limits.max_member_bytes)} "
                "(set retrieval.max_unpacked_member_mb to read it)"
            )
        if self.total > limits.max_unpacked_bytes:
            raise ArchiveRefused(
                f"archive unpacks to more than {megabytes(limits.max_unpacked_bytes)} "
                "(set retrieval.max_unpacked_mb to read it)"
            )
        ratio = limits.max_compression_ratio
        if self.total > limits.ratio_floor_bytes and self.total > ratio * self.packed:
            raise ArchiveRefused(
                f"archive unpacks to more than {ratio:g} times its size past "
                f"{megabytes(limits.ratio_floor_bytes)}, as zip bombs do "
                "(set retrieval.max_compression_ratio to read it)"
            )

    def add_elements(self, piece: bytes) -> None:
        self.elements += piece.count(b"<") - piece.count(b"</")
        if self.elements > self.limits.max_xml_elements:
            raise ArchiveRefused(
                f"archive holds more than {self.limits.max_xml_elements:,} XML elements "
                "(set retrieval.max_xml_elements to read it)"
            )


def _inflate(
    archive: zipfile.ZipFile, info: zipfile.ZipInfo, counter: _Counter, *, count_elements: bool
) -> None:
    # A copy that declares no bound: the truth, not the header, is what has to be counted (see the
    # module docstring), and the counter, not zipfile, decides when to stop.
    unbounded = copy.copy(info)
    unbounded.file_size = sys.maxsize
    size = 0
    markup: bool | None = None if count_elements else False  # None: not known until the first bytes
    with archive.open(unbounded) as member:
        while piece := member.read(PIECE):
            size += len(piece)
            counter.add(info.filename, size, len(piece))
            if markup is None:
                markup = piece.lstrip(_LEADING).startswith(b"<")
            if markup:
                counter.add_elements(piece)
    if size != info.file_size:  # within the limits, but the libraries would read a truncated part
        raise ValueError(f"its header says {info.file_size:,} bytes, it holds {size:,}")


def _one_line(value: object) -> str:
    text = " ".join(str(value).split())
    return text if len(text) <= 160 else text[:157] + "..."
