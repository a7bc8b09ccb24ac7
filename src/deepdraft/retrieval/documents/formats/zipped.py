"""The archive guard of the zip-based formats (DOCX, PPTX, XLSX, EPUB).

Every such file is inflated once through `verify_archive` before its library opens it, so an archive
bomb is refused after at most the limits' worth of counting, and a file that is no zip at all gets a
message naming what it probably is.
"""

from __future__ import annotations

from collections.abc import Callable

from deepdraft.retrieval.documents.archive import ArchiveRefused, BrokenArchive, verify_archive
from deepdraft.retrieval.documents.formats.extracted import Unreadable, one_line
from deepdraft.retrieval.documents.limits import DocumentLimits


def verify_zip(
    data: bytes, suffix: str, limits: DocumentLimits, streamed: Callable[[str], bool] | None = None
) -> None:
    """Refuse a zip-based document that inflates past `limits`, before any library opens it."""
    try:
        verify_archive(data, limits, streamed=streamed)
    except ArchiveRefused as exc:
        raise Unreadable(str(exc)) from exc
    except BrokenArchive as exc:
        raise invalid_zip_document(data, suffix, exc) from exc


def invalid_zip_document(data: bytes, suffix: str, exc: Exception) -> Unreadable:
    # Password-protected Office files are OLE containers, not zips; so are the pre-2007 formats.
    legacy = {".docx": ".doc", ".pptx": ".ppt", ".xlsx": ".xls"}.get(suffix)
    if legacy is not None and data.startswith(b"\xd0\xcf\x11\xe0"):
        return Unreadable(f"password-protected, or an old {legacy} file renamed: save it as {suffix}")
    return Unreadable(f"not a valid {suffix} file ({one_line(exc)})")
