"""Reading a corpus: a folder of text files, one text file, or a JSONL file, as a stream of `Document`s.

This module only turns bytes on disk into `Document(doc_id, title, location, text)`; chunking and
indexing happen elsewhere, so that later formats (PDF, DOCX, HTML) plug in here without touching
them.

Trade-offs:

* Text files are read whole (a document has to be chunked as a whole anyway); files above
  `MAX_FILE_BYTES` are skipped rather than risk the memory — such corpora belong in JSONL.
  JSONL is streamed line by line and never loaded at once, because that is the format of the
  multi-gigabyte corpora (Wikipedia dumps in the paper's and UltraRAG's format).
* Decoding never fails: UTF-8 first, then the encodings a BOM announces, then cp1252 and finally
  latin-1 (which accepts any byte). A wrong guess garbles a few accented letters; refusing the file
  would lose all of it. Files that look binary (NUL bytes without a UTF-16/32 BOM) are skipped.
* Nothing that is wrong with *one* file stops the run: unreadable, binary, empty or oversized files
  are reported through the `skipped` list the caller passes in (and logged), so a CLI can show them.
  A malformed JSONL line is different — it means the file is not what the user thinks it is — and
  raises `KnowledgeBaseError` with the file and line number.
* Line endings are normalised to ``\\n``: offsets into `Document.text` are offsets into that text,
  and chunking only has to know one kind of line break.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deepdraft.errors import KnowledgeBaseError
from deepdraft.retrieval.chunking import first_heading

log = logging.getLogger(__name__)

TEXT_SUFFIXES: tuple[str, ...] = (".txt", ".md", ".markdown")
JSONL_SUFFIXES: tuple[str, ...] = (".jsonl",)
SUPPORTED = ", ".join(TEXT_SUFFIXES + JSONL_SUFFIXES)

MAX_FILE_BYTES = 200 * 1024 * 1024
"""Text files above this are skipped: one document that large should be split or put into JSONL."""

MAX_TITLE_LINE = 200
"""A JSONL `contents` whose first line is shorter than this is taken to start with its title."""

STAMP_HASH_LIMIT = 32 * 1024 * 1024
"""Corpora up to this size are content-hashed in `corpus_stamp` (tens of ms); larger ones are stat-ed."""

_BOMS: tuple[tuple[bytes, str], ...] = (
    # UTF-32 first: its little-endian BOM starts with the UTF-16 one.
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


@dataclass(frozen=True)
class Document:
    """One source document, as text. `location` is an absolute path or a URL (what a citation shows)."""

    doc_id: str
    title: str
    location: str
    text: str


def iter_documents(path: Path, skipped: list[str] | None = None) -> Iterator[Document]:
    """The documents of a folder (recursively), a single text file, or a JSONL file.

    Problems with the path itself (missing, unsupported type, no supported files) raise
    `KnowledgeBaseError` right away, before the first document is asked for. Files that cannot be
    used are skipped and described in `skipped` (``"<path>: <reason>"``). If nothing usable is
    left, the iterator raises `KnowledgeBaseError` when it is exhausted.
    """
    files = corpus_files(path)  # validates eagerly
    notes: list[str] = skipped if skipped is not None else []
    root = path if path.is_dir() else path.parent
    return _documents(files, root.absolute(), notes)


def corpus_files(path: Path) -> list[Path]:
    """The files that make up the corpus at `path`, in a deterministic order."""
    if not path.exists():
        raise KnowledgeBaseError(f"corpus not found: {path}")
    if path.is_file():
        if path.suffix.lower() not in TEXT_SUFFIXES + JSONL_SUFFIXES:
            raise KnowledgeBaseError(f"unsupported corpus file {path}: supported types are {SUPPORTED}")
        return [path]
    if not path.is_dir():
        raise KnowledgeBaseError(f"corpus is neither a file nor a folder: {path}")
    found: list[Path] = []
    # os.walk without following directory links: a link cycle cannot make the walk endless.
    for folder, dirnames, filenames in os.walk(path):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        found.extend(
            Path(folder, name)
            for name in filenames
            if not name.startswith(".") and Path(name).suffix.lower() in TEXT_SUFFIXES
        )
    if not found:
        raise KnowledgeBaseError(
            f"no supported files in {path}: a folder is read for {', '.join(TEXT_SUFFIXES)} files "
            f"(hidden files and folders are ignored); a single {', '.join(JSONL_SUFFIXES)} file also works"
        )
    # Sorted by relative path (not walk order) so the document order never depends on the filesystem.
    return sorted(found, key=lambda p: p.relative_to(path).as_posix())


def corpus_stamp(path: Path) -> str:
    """A hash that changes when a file of the corpus is added, removed or modified.

    Paths relative to the corpus root, sizes and modification times cover ordinary edits. Small
    corpora (the common case) are content-hashed too, which also catches edits that keep size and
    timestamp (copies with preserved times, coarse filesystem clocks). Large ones are not: reading
    gigabytes at every start would defeat the cache.
    """
    files = corpus_files(path)
    root = path if path.is_dir() else path.parent
    stats = [(f, f.stat()) for f in files]
    total = sum(st.st_size for _, st in stats)
    digest = hashlib.sha256(b"deepdraft-corpus-stamp-1\0")
    for file, st in stats:
        digest.update(f"{file.relative_to(root).as_posix()}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())
        if total <= STAMP_HASH_LIMIT:
            try:
                digest.update(hashlib.sha256(file.read_bytes()).digest())
            except OSError as exc:  # unreadable files are skipped by the reader too
                digest.update(f"unreadable:{exc.errno}".encode())
    return digest.hexdigest()[:16]


def decode_text(data: bytes) -> str | None:
    """Decode file bytes to text with newlines normalised; None if the bytes look binary."""
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            return _normalise(data.decode(encoding, errors="replace"))
    if b"\x00" in data[:8192]:
        return None  # binary, or UTF-16 without a BOM — either way not text we can trust
    for encoding in ("utf-8", "cp1252"):
        try:
            return _normalise(data.decode(encoding))
        except UnicodeDecodeError:
            continue
    return _normalise(data.decode("latin-1"))  # total: every byte is a character


def _normalise(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _documents(files: list[Path], root: Path, skipped: list[str]) -> Iterator[Document]:
    produced = 0
    for file in files:
        if file.suffix.lower() in JSONL_SUFFIXES:
            for document in _jsonl_documents(file):
                produced += 1
                yield document
            continue
        text_document = _text_document(file, root, skipped)
        if text_document is not None:
            produced += 1
            yield text_document
    if produced == 0:
        detail = f" (skipped: {'; '.join(skipped[:5])})" if skipped else ""
        where = files[0] if len(files) == 1 else root
        raise KnowledgeBaseError(f"no readable documents in {where}{detail}")


def _skip(skipped: list[str], file: Path, reason: str) -> None:
    message = f"{file}: {reason}"
    log.warning("skipping %s", message)
    skipped.append(message)


def _text_document(file: Path, root: Path, skipped: list[str]) -> Document | None:
    absolute = file.absolute()
    try:
        size = absolute.stat().st_size
        if size > MAX_FILE_BYTES:
            _skip(skipped, absolute, f"too large ({size} bytes); split it or convert it to JSONL")
            return None
        data = absolute.read_bytes()
    except OSError as exc:
        _skip(skipped, absolute, f"unreadable ({exc.strerror or exc})")
        return None
    text = decode_text(data)
    if text is None:
        _skip(skipped, absolute, "looks binary (NUL bytes), not a text file")
        return None
    if not text.strip():
        _skip(skipped, absolute, "empty")
        return None
    # The id is the path relative to the corpus root, not a content hash: it stays the same when a
    # file is edited, so citations recorded by earlier runs still name the right document (the index
    # fingerprint is what tracks content), and two files with the same text remain two documents.
    doc_id = absolute.relative_to(root).as_posix()
    return Document(doc_id=doc_id, title=first_heading(text) or file.stem, location=str(absolute), text=text)


def _jsonl_documents(file: Path) -> Iterator[Document]:
    location = str(file.absolute())
    try:
        handle = file.open("rb")
    except OSError as exc:
        raise KnowledgeBaseError(f"cannot read {file}: {exc.strerror or exc}") from exc
    with handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            record = _parse_line(raw, file, number)
            yield _record_document(record, file, number, location)


def _parse_line(raw: bytes, file: Path, number: int) -> dict[str, Any]:
    try:
        record = json.loads(raw.decode("utf-8-sig" if number == 1 else "utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise KnowledgeBaseError(f"{file}:{number}: not a JSON line ({exc})") from exc
    if not isinstance(record, dict):
        raise KnowledgeBaseError(f"{file}:{number}: expected a JSON object, got {type(record).__name__}")
    return record


def _record_document(record: dict[str, Any], file: Path, number: int, location: str) -> Document:
    key = "contents" if "contents" in record else "text"
    text = record.get(key)
    if not isinstance(text, str):
        raise KnowledgeBaseError(f'{file}:{number}: needs a string "contents" or "text" field')
    text = _normalise(text)
    raw_id = record.get("id")
    if raw_id is None:
        doc_id = f"{file.stem}:{number}"  # stable as long as the file is not reordered
    elif isinstance(raw_id, str | int):
        doc_id = str(raw_id)
    else:
        raise KnowledgeBaseError(f'{file}:{number}: "id" must be a string or a number')
    title = record.get("title")
    if title is not None and not isinstance(title, str):
        raise KnowledgeBaseError(f'{file}:{number}: "title" must be a string')
    if not title and key == "contents":
        title = _title_line(text)
    url = record.get("url")
    if url is not None and not isinstance(url, str):
        raise KnowledgeBaseError(f'{file}:{number}: "url" must be a string')
    return Document(doc_id=doc_id, title=title or doc_id, location=url or location, text=text)


def _title_line(contents: str) -> str | None:
    """UltraRAG/FlashRAG passages are ``"Title"\\nbody``: a short first line followed by more text."""
    first, newline, rest = contents.partition("\n")
    first = first.strip()
    if not newline or not rest.strip() or not first or len(first) >= MAX_TITLE_LINE:
        return None
    if len(first) >= 2 and first[0] == first[-1] == '"':
        first = first[1:-1].strip()
    return first or None
