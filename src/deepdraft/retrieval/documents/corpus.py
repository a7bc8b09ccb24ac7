"""Reading a corpus: which files a user's paths name, and the `Document`s in each file.

Two steps, both of which report problems as values instead of raising:

* `discover` expands files, folders and glob patterns into a sorted list of supported files, and a
  `Failure` for every path it cannot use (missing, empty folder, unsupported format).
* `read_documents` turns one file into documents: one for most formats (the per-format work is in
  `extract.py`), a stream of them for a JSONL corpus. A file it cannot use yields one `Failure`.

A knowledge base can then add what it can, show one line per failure, and go on. `iter_documents`
packages both steps for the callers that index a folder on the fly; it raises `KnowledgeBaseError`
only when nothing at all can be read.

Trade-offs:

* Files are read whole, up to a size limit (`max_bytes`, from ``retrieval.max_file_mb``): a
  document has to be parsed and chunked as a whole anyway, and a limit says clearly what a silent
  out-of-memory would not. JSONL is exempt and streamed line by line, never loaded at once: that is
  the format of multi-gigabyte corpora (Wikipedia dumps in the paper's and UltraRAG's format).
* What a file may unpack and the text a document may yield are bounded too (`DocumentLimits`, see
  `limits.py`); for JSONL, each record is a document and is bounded as one, and a line too long to
  hold a record within the bound is skipped without being held in memory whole.
* A JSONL line that is not a usable record is one `Failure` (``path:line``) and reading goes on, so
  one bad line in a million does not lose the million. A file whose first lines are all bad is not
  a corpus at all; it is abandoned after `MAX_BAD_LEADING_LINES` with one more `Failure`.
* Ids are paths relative to the root the caller names, not content hashes: an edited file keeps
  its id, so citations made by earlier runs still name the right document, and two files with the
  same text remain two documents. `content_hash` is what tells whether a file changed.
* Paged formats become one text with the pages separated by a blank line; `Document.pages` maps
  character offsets back to page numbers, and the chunker never lets a passage cross a page.
* Line endings are normalised to ``\\n``: offsets into `Document.text` are offsets into that text.
* Titles are shortened to `MAX_HEADING_CHARS` (chunking.py): every passage is indexed with its
  document's title, so a title of a million characters would cost a million per passage.
"""

from __future__ import annotations

import errno
import glob
import hashlib
import json
import logging
import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO

from deepdraft.errors import KnowledgeBaseError
from deepdraft.retrieval.documents.chunking import shorten
from deepdraft.retrieval.documents.extract import CONVERT_HINTS, EXTRACTORS
from deepdraft.retrieval.documents.formats.extracted import Extracted, Unreadable, normalise_newlines
from deepdraft.retrieval.documents.formats.text import decode_text
from deepdraft.retrieval.documents.limits import DocumentLimits, too_much_text
from deepdraft.retrieval.documents.values import Document, Failure, Page

__all__ = [
    "MAX_FILE_BYTES",
    "SUPPORTED_SUFFIXES",
    "Document",
    "Failure",
    "Page",
    "corpus_files",
    "corpus_stamp",
    "decode_text",
    "discover",
    "iter_documents",
    "read_documents",
]

log = logging.getLogger(__name__)

JSONL_SUFFIXES = frozenset({".jsonl"})
SUPPORTED_SUFFIXES: frozenset[str] = frozenset(EXTRACTORS) | JSONL_SUFFIXES
SUPPORTED = ", ".join(sorted(SUPPORTED_SUFFIXES))

MAX_FILE_BYTES = 200 * 1024 * 1024
"""The default size limit of one file (the default of ``retrieval.max_file_mb``)."""

MAX_TITLE_LINE = 200
"""A JSONL `contents` whose first line is shorter than this is taken to start with its title."""

MAX_BAD_LEADING_LINES = 20
"""A JSONL file whose first this many records are all unusable is abandoned: it is not a corpus."""

STAMP_HASH_LIMIT = 32 * 1024 * 1024
"""Corpora up to this size are content-hashed in `corpus_stamp` (tens of ms); larger ones are stat-ed."""

JSONL_BYTES_PER_CHAR = 8
"""A JSONL line longer than this many bytes per allowed character cannot hold a record within the
text bound (JSON writes a character in at most 6 bytes, ``\\u00e9``; the rest is for the other
fields): it is skipped unread."""

JSONL_LINE_SLACK = 1024 * 1024
"""Bytes a JSONL line may have beyond that, for ids, titles, URLs and fields deepdraft ignores."""

PAGE_SEPARATOR = "\n\n"
"""Between the pages of a paged document: a paragraph break, so no paragraph spans two pages."""


# -- which files ------------------------------------------------------------------------------------


def discover(paths: Sequence[str | Path], *, recursive: bool = True) -> tuple[list[Path], list[Failure]]:
    """Expand files, folders and glob patterns into the supported files they name, and the failures.

    Folders are walked recursively (unless `recursive` is false), following links to folders but
    never into a folder already on the walk, and skipping hidden files and folders (a hidden file
    named explicitly is taken). ``~`` is expanded; a path that does not exist but contains ``*``,
    ``?`` or ``[`` is a glob pattern (``**`` matches folders at any depth). The files come back
    absolute, sorted and de-duplicated (two names of one file count once). Failures: a missing path,
    a pattern matching nothing, a folder without supported documents, each unsupported file.
    """
    found: dict[str, Path] = {}  # real path → the first absolute name it was found under
    failures: list[Failure] = []

    def add(file: Path) -> None:
        found.setdefault(os.path.realpath(file), file)

    for raw in paths:
        text = os.path.expanduser(str(raw))
        path = Path(os.path.abspath(text))
        if not os.path.lexists(path) and any(char in text for char in "*?["):
            matches = sorted(glob.glob(text, recursive=True))
            if not matches:
                failures.append(Failure(str(raw), "no files match this pattern"))
            for match in matches:
                _expand(Path(os.path.abspath(match)), recursive, add, failures)
        else:
            _expand(path, recursive, add, failures)
    return sorted(found.values(), key=lambda p: str(p)), failures


def _expand(path: Path, recursive: bool, add: Any, failures: list[Failure]) -> None:
    if path.is_dir():
        if _walk(path, recursive, add, failures) == 0:
            failures.append(
                Failure(
                    str(path),
                    f"no supported documents in this folder (looked for {SUPPORTED}; hidden files and "
                    "folders are skipped)",
                )
            )
    elif path.is_file():
        _add_file(path, add, failures)
    elif path.is_symlink() or path.exists():
        failures.append(Failure(str(path), _not_a_file(path)))
    else:
        failures.append(Failure(str(path), "not found"))


def _walk(root: Path, recursive: bool, add: Any, failures: list[Failure]) -> int:
    """Add the supported files under `root`; return how many it found (unsupported ones fail)."""
    count = 0
    stat = root.stat()
    on_walk = {(stat.st_dev, stat.st_ino)}  # folders already visited: a link cycle ends here
    pending = [root]
    while pending:
        folder = pending.pop()
        try:
            entries = sorted(os.scandir(folder), key=lambda entry: entry.name)
        except OSError as exc:
            failures.append(Failure(str(folder), f"cannot list this folder ({exc.strerror or exc})"))
            continue
        for entry in entries:
            if entry.name.startswith("."):
                continue
            path = Path(entry.path)
            try:
                if entry.is_dir():  # follows links: a linked folder is read like any other
                    if recursive:
                        info = entry.stat()
                        if (info.st_dev, info.st_ino) not in on_walk:
                            on_walk.add((info.st_dev, info.st_ino))
                            pending.append(path)
                elif entry.is_file():
                    count += _add_file(path, add, failures)
                else:
                    failures.append(Failure(str(path), _not_a_file(path)))
            except OSError as exc:  # a link loop makes even the question "is it a folder?" fail
                reason = _LINK_LOOP if exc.errno == errno.ELOOP else f"cannot read it ({exc.strerror or exc})"
                failures.append(Failure(str(path), reason))
    return count


def _add_file(path: Path, add: Any, failures: list[Failure]) -> int:
    # A name in another encoding (Latin-1 from an old archive) arrives with undecodable bytes as
    # surrogates: it could be neither stored nor printed, so it is refused under a printable name.
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        printable = str(path).encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        failures.append(Failure(printable, "its name is not valid UTF-8: rename it to add it"))
        return 0
    suffix = path.suffix.lower()
    if suffix in SUPPORTED_SUFFIXES:
        add(path)
        return 1
    failures.append(Failure(str(path), unsupported_reason(suffix)))
    return 0


_LINK_LOOP = "link loop: following this link leads back to it"


def _not_a_file(path: Path) -> str:
    """Why `path`, which exists as a name but is neither a regular file nor a folder, is not read."""
    try:
        path.stat()
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return _LINK_LOOP
        return "broken link: its target does not exist"
    return "not a regular file or folder"  # a device, a pipe, a socket, or a link to one


def unsupported_reason(suffix: str) -> str:
    if not suffix:
        return f"unsupported format (no file name extension; supported: {SUPPORTED})"
    hint = CONVERT_HINTS.get(suffix)
    return f"unsupported format {suffix}" + (f" ({hint})" if hint else "")


# -- the documents of one file --------------------------------------------------------------------


def read_documents(
    file: Path,
    *,
    max_bytes: int,
    ocr: bool = True,
    root: Path | None = None,
    limits: DocumentLimits | None = None,
) -> Iterator[Document | Failure]:
    """The documents of one file, or one `Failure` saying why it has none.

    One document for most formats; for JSONL one per record, streamed (a bad line is a `Failure`
    and reading goes on). Never raises for what is in the file (corrupt, encrypted, binary, too
    large, an archive bomb, too much text, undecodable, empty). `doc_id` is the path relative to
    `root` when the file is under it, else the absolute path; for JSONL it is the record's ``id``.
    `limits` (default: `DocumentLimits()`) bounds each document; `max_bytes` bounds the file.
    """
    path = Path(os.path.abspath(file))
    suffix = path.suffix.lower()
    bounds = limits if limits is not None else DocumentLimits()
    if suffix in JSONL_SUFFIXES:
        yield from _jsonl_documents(path, bounds)
        return
    if suffix not in EXTRACTORS:
        yield Failure(str(path), unsupported_reason(suffix))
        return
    yield _file_document(path, suffix, max_bytes, ocr, root, bounds)


def _file_document(
    path: Path, suffix: str, max_bytes: int, ocr: bool, root: Path | None, limits: DocumentLimits
) -> Document | Failure:
    location = str(path)
    try:
        size = path.stat().st_size
        if size > max_bytes:
            limit = f"{max_bytes / (1024 * 1024):g}"
            return Failure(location, f"larger than the {limit} MB limit (set retrieval.max_file_mb)")
        data = path.read_bytes()
    except OSError as exc:
        return Failure(location, f"cannot read it ({exc.strerror or exc})")
    if not data.strip():
        return Failure(location, "empty file")
    doc_format, extractor = EXTRACTORS[suffix]
    try:
        extracted = extractor(data, ocr, limits)
    except Unreadable as exc:
        return Failure(location, str(exc))
    except Exception as exc:  # third-party parsers raise anything on malformed input
        log.debug("extracting %s failed", location, exc_info=True)
        detail = " ".join(f"{type(exc).__name__}: {exc}".split())[:160]
        return Failure(location, f"unreadable {doc_format} file ({detail})")
    text, pages = _assemble(extracted)
    if len(text) > limits.max_document_chars:  # extractors stop early; this holds for every format
        return Failure(location, too_much_text(limits))
    if not text.strip():
        return Failure(location, "no text in this document")
    return Document(
        doc_id=_doc_id(path, root),
        title=shorten(extracted.title or path.stem),
        location=extracted.url or location,
        text=text,
        pages=pages,
        format=doc_format,
        content_hash=hashlib.sha256(data).hexdigest(),
    )


def _assemble(extracted: Extracted) -> tuple[str, tuple[Page, ...]]:
    """The document text, and the offsets of its pages when the format has pages."""
    if not extracted.pages:
        return extracted.text, ()
    parts: list[str] = []
    pages: list[Page] = []
    offset = 0
    for number, text in extracted.pages:
        if not text.strip():
            continue
        if parts:
            parts.append(PAGE_SEPARATOR)
            offset += len(PAGE_SEPARATOR)
        parts.append(text)
        pages.append(Page(number, offset, offset + len(text)))
        offset += len(text)
    return "".join(parts), tuple(pages)


def _doc_id(path: Path, root: Path | None) -> str:
    if root is not None:
        try:
            return path.relative_to(Path(os.path.abspath(root))).as_posix()
        except ValueError:
            pass
    return path.as_posix()


def _jsonl_documents(file: Path, limits: DocumentLimits) -> Iterator[Document | Failure]:
    location = str(file)
    try:
        handle = file.open("rb")
    except OSError as exc:
        yield Failure(location, f"cannot read it ({exc.strerror or exc})")
        return
    good = bad = 0
    longest = JSONL_BYTES_PER_CHAR * limits.max_document_chars + JSONL_LINE_SLACK
    with handle:
        for number, raw in enumerate(_bounded_lines(handle, longest), start=1):
            line = raw.strip() if raw is not None else None
            if line == b"":
                continue
            try:
                if line is None:
                    raise Unreadable(too_much_text(limits))
                record = _parse_line(line, number)
                document = _record_document(record, line, file, number, location, limits)
            except Unreadable as exc:
                bad += 1
                yield Failure(f"{location}:{number}", str(exc))
                if good == 0 and bad >= MAX_BAD_LEADING_LINES:
                    yield Failure(location, f"not a JSONL corpus: its first {bad} records are unusable")
                    return
                continue
            good += 1
            yield document
    if good == 0 and bad == 0:
        yield Failure(location, "empty file")


def _bounded_lines(handle: BinaryIO, longest: int) -> Iterator[bytes | None]:
    """The lines of `handle`; None for a line longer than `longest` bytes, which is skipped unread."""
    while raw := handle.readline(longest + 1):
        if len(raw) <= longest or raw.endswith(b"\n"):
            yield raw
            continue
        while (rest := handle.readline(1024 * 1024)) and not rest.endswith(b"\n"):
            pass
        yield None


def _parse_line(line: bytes, number: int) -> dict[str, Any]:
    try:
        record = json.loads(line.decode("utf-8-sig" if number == 1 else "utf-8"))
    except UnicodeDecodeError as exc:
        raise Unreadable(f"not UTF-8 ({exc.reason} at byte {exc.start})") from exc
    except json.JSONDecodeError as exc:
        raise Unreadable(f"not a JSON line ({exc.msg} at column {exc.colno})") from exc
    except RecursionError as exc:  # the json module recurses once per nested array or object
        raise Unreadable("not a JSON line (nested too deeply to read)") from exc
    if not isinstance(record, dict):
        raise Unreadable(f"expected a JSON object, got {type(record).__name__}")
    if _SURROGATE_ESCAPE.search(line):
        # JSON may escape half of a UTF-16 pair on its own ("\\ud800"), which json.loads turns into
        # a string that no UTF-8 file or database can hold; pairs decode to one character and pass.
        try:
            json.dumps(record, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError as exc:
            raise Unreadable(
                "not Unicode text (a lone surrogate escape such as \\ud800 in a string)"
            ) from exc
    return record


_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def _record_document(
    record: dict[str, Any], line: bytes, file: Path, number: int, location: str, limits: DocumentLimits
) -> Document:
    key = "contents" if "contents" in record else "text"
    text = record.get(key)
    if not isinstance(text, str):
        raise Unreadable('needs a string "contents" or "text" field')
    if len(text) > limits.max_document_chars:
        raise Unreadable(too_much_text(limits))
    text = normalise_newlines(text)
    if not text.strip():
        raise Unreadable(f'empty "{key}"')
    raw_id = record.get("id")
    if raw_id is None:
        doc_id = f"{file.stem}:{number}"  # stable as long as the file is not reordered
    elif isinstance(raw_id, str | int) and not isinstance(raw_id, bool):
        doc_id = str(raw_id)
    else:
        raise Unreadable('"id" must be a string or a number')
    title = record.get("title")
    if title is not None and not isinstance(title, str):
        raise Unreadable('"title" must be a string')
    if not title and key == "contents":
        title = _title_line(text)
    url = record.get("url")
    if url is not None and not isinstance(url, str):
        raise Unreadable('"url" must be a string')
    return Document(
        doc_id=doc_id,
        title=shorten(title or doc_id),
        location=url or location,
        text=text,
        format="jsonl",
        content_hash=hashlib.sha256(line).hexdigest(),
    )


def _title_line(contents: str) -> str | None:
    """UltraRAG/FlashRAG passages are ``"Title"\\nbody``: a short first line followed by more text."""
    first, newline, rest = contents.partition("\n")
    first = first.strip()
    if not newline or not rest.strip() or not first or len(first) >= MAX_TITLE_LINE:
        return None
    if len(first) >= 2 and first[0] == first[-1] == '"':
        first = first[1:-1].strip()
    return first or None


# -- a whole corpus at once (the on-the-fly index of `--kb PATH`) -----------------------------------


def iter_documents(
    path: Path,
    skipped: list[str] | None = None,
    *,
    max_bytes: int = MAX_FILE_BYTES,
    ocr: bool = True,
    limits: DocumentLimits | None = None,
) -> Iterator[Document]:
    """The documents of a folder (recursively), a single document file, or a JSONL file.

    Problems with the path itself (missing, unsupported format, no supported files) raise
    `KnowledgeBaseError` right away, before the first document is asked for. Files and JSONL lines
    that cannot be used are skipped and described in `skipped` (``"<location>: <reason>"``). If
    nothing usable is left, the iterator raises `KnowledgeBaseError` when it is exhausted.
    """
    files, failures = _corpus(path)
    notes: list[str] = skipped if skipped is not None else []
    root = path if path.is_dir() else path.parent
    return _documents(files, failures, Path(os.path.abspath(root)), notes, max_bytes, ocr, limits)


def corpus_files(path: Path) -> list[Path]:
    """The supported files of the corpus at `path`, sorted; `KnowledgeBaseError` if there are none."""
    return _corpus(path)[0]


def _corpus(path: Path) -> tuple[list[Path], list[Failure]]:
    files, failures = discover([path])
    if not files:
        # `discover` reports the path itself last (missing, empty folder, unsupported file).
        failure = failures[-1] if failures else Failure(str(path), "no supported documents")
        raise KnowledgeBaseError(f"corpus {failure}")
    return files, failures


def corpus_stamp(path: Path) -> str:
    """A hash that changes when a file of the corpus is added, removed or modified.

    Paths relative to the corpus root, sizes and modification times cover ordinary edits. Small
    corpora (the common case) are content-hashed too, which also catches edits that keep size and
    timestamp (copies with preserved times, coarse filesystem clocks). Large ones are not: reading
    gigabytes at every start would defeat the cache.
    """
    files = corpus_files(path)
    root = Path(os.path.abspath(path if path.is_dir() else path.parent))
    stats = [(f, f.stat()) for f in files]
    total = sum(st.st_size for _, st in stats)
    digest = hashlib.sha256(b"deepdraft-corpus-stamp-1\0")
    for file, st in stats:
        digest.update(f"{_doc_id(file, root)}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())
        if total <= STAMP_HASH_LIMIT:
            try:
                digest.update(hashlib.sha256(file.read_bytes()).digest())
            except OSError as exc:  # unreadable files are skipped by the reader too
                digest.update(f"unreadable:{exc.errno}".encode())
    return digest.hexdigest()[:16]


def _documents(
    files: list[Path],
    failures: list[Failure],
    root: Path,
    notes: list[str],
    max_bytes: int,
    ocr: bool,
    limits: DocumentLimits | None,
) -> Iterator[Document]:
    for failure in failures:
        _note(notes, failure)
    produced = 0
    for file in files:
        for item in read_documents(file, max_bytes=max_bytes, ocr=ocr, root=root, limits=limits):
            if isinstance(item, Failure):
                _note(notes, item)
            else:
                produced += 1
                yield item
    if produced == 0:
        detail = f" (skipped: {'; '.join(notes[:5])})" if notes else ""
        where = files[0] if len(files) == 1 else root
        raise KnowledgeBaseError(f"no readable documents in {where}{detail}")


def _note(notes: list[str], failure: Failure) -> None:
    log.warning("skipping %s", failure)
    notes.append(str(failure))
