"""Reading the files one `add` names into the writer's open transaction, one file at a time.

A file whose bytes are unchanged is skipped unread. A new or changed file is read and stored under a
savepoint of its own: a file that yields nothing usable (or whose reader gives up midway) leaves its
previous version in place, and the next add tries it again. What happened to each file is tallied
into the `AddResult` and told to the progress sink. The row-level work (documents, chunks, sources)
is `ingest`'s; the transaction around all files is `KnowledgeBase.add`'s.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from deepdraft.errors import KnowledgeBaseError
from deepdraft.retrieval.documents.corpus import read_documents
from deepdraft.retrieval.documents.limits import DocumentLimits
from deepdraft.retrieval.documents.values import Failure
from deepdraft.retrieval.kb.ingest import (
    _delete_document,
    _fail,
    _file_hash,
    _FileCounts,
    _NothingUsable,
    _prune,
    _store_document,
    _upsert_source,
    walk_paths,
)
from deepdraft.retrieval.kb.values import AddResult, IngestNote, ProgressSink, _count


@dataclass(frozen=True)
class _AddOptions:
    """What stays the same for every file of one `add`."""

    revision: int  # the revision the add will commit; every document it reads is marked seen in it
    chunk_tokens: int
    overlap: int
    max_bytes: int
    limits: DocumentLimits
    ocr: bool


def _ingest_paths(
    db: sqlite3.Connection,
    meta: dict[str, Any],
    paths: Sequence[str | Path],
    result: AddResult,
    max_bytes: int,
    limits: DocumentLimits,
    ocr: bool,
    prune: bool,
    say: ProgressSink,
) -> bool:
    """Apply every file's changes inside `db`'s transaction; True if any document changed."""
    options = _AddOptions(
        revision=int(meta.get("revision", 0)) + 1,
        chunk_tokens=int(meta["chunk_tokens"]),
        overlap=int(meta["chunk_overlap"]),
        max_bytes=max_bytes,
        limits=limits,
        ocr=ocr,
    )
    return walk_paths(
        paths,
        prune=prune,
        result=result,
        say=say,
        ingest_file=lambda file, root: _ingest_file(db, file, root, options, result, say),
        prune_missing=lambda roots: _prune(db, roots),
    )


def _ingest_file(
    db: sqlite3.Connection, file: Path, root: Path, options: _AddOptions, result: AddResult, say: ProgressSink
) -> bool:
    """Store one file's documents unless its bytes are unchanged; True if any document changed."""
    path = str(file.absolute())
    try:
        size = file.stat().st_size
        if size > options.max_bytes and file.suffix.lower() != ".jsonl":  # JSONL is streamed: no limit
            # Not even hashed: the reader refuses it from its size alone, with the limit to raise.
            for item in read_documents(file, max_bytes=options.max_bytes, ocr=options.ocr, root=root):
                if isinstance(item, Failure):
                    _fail(result, say, item)
            return False
        digest = _file_hash(file)
    except OSError as exc:
        _fail(result, say, Failure(path, f"unreadable ({exc.strerror or exc})"))
        return False
    known = db.execute("SELECT id, content_hash FROM sources WHERE path = ?", (path,)).fetchone()
    if known is not None and known[1] == digest:
        (count,) = db.execute("SELECT count(*) FROM documents WHERE source = ?", (known[0],)).fetchone()
        result.documents_unchanged += count
        say(IngestNote("unchanged", path))
        return False
    counts = _store_file(db, file, root, path, known, digest, size, options)
    for failure in counts.failures:
        _fail(result, say, failure)
    if counts.kept_previous:
        return False
    _tally(result, counts)
    if counts.added or counts.updated:
        kind: Literal["added", "updated"] = "updated" if known is not None else "added"
        detail = f"{_count(counts.added + counts.updated, 'document')}, {_count(counts.chunks, 'chunk')}"
        if counts.pages:
            detail += f", {_count(counts.pages, 'page')}"
        say(IngestNote(kind, path, detail))
    elif counts.removed:
        say(IngestNote("removed", path, _count(counts.removed, "document")))
    return bool(counts.added or counts.updated or counts.removed)


def _store_file(
    db: sqlite3.Connection,
    file: Path,
    root: Path,
    path: str,
    known: tuple[int, str] | None,
    digest: str,
    size: int,
    options: _AddOptions,
) -> _FileCounts:
    """Read a new or changed file and store its documents under a savepoint of its own.

    When it yields nothing usable the savepoint is rolled back, the counts say `kept_previous`, and
    their failures say why.
    """
    now = datetime.now(UTC).isoformat(timespec="seconds")
    db.execute("SAVEPOINT file")
    counts = _FileCounts()
    try:
        source_row = _upsert_source(db, known, path, digest, size, now)
        seen_keys: dict[str, int] = {}
        for item in read_documents(
            file, max_bytes=options.max_bytes, ocr=options.ocr, root=root, limits=options.limits
        ):
            if isinstance(item, Failure):
                counts.failures.append(item)
                continue
            _store_document(
                db,
                item,
                source_row,
                path,
                options.revision,
                options.chunk_tokens,
                options.overlap,
                now,
                seen_keys,
                counts,
            )
        if counts.added + counts.updated + counts.unchanged == 0:
            raise _NothingUsable()
        stale = db.execute(
            "SELECT id FROM documents WHERE source = ? AND seen < ?", (source_row, options.revision)
        ).fetchall()
        for (row,) in stale:
            _delete_document(db, row)
        counts.removed = len(stale)
    except (_NothingUsable, KnowledgeBaseError) as exc:
        db.execute("ROLLBACK TO file")
        db.execute("RELEASE file")
        if isinstance(exc, KnowledgeBaseError):
            counts.failures.append(Failure(path, str(exc)))
        counts.failures = counts.failures or [Failure(path, "no text found")]
        counts.kept_previous = True
        return counts
    db.execute("RELEASE file")
    return counts


def _tally(result: AddResult, counts: _FileCounts) -> None:
    result.documents_added += counts.added
    result.documents_updated += counts.updated
    result.documents_unchanged += counts.unchanged
    result.documents_removed += counts.removed
    result.chunks_added += counts.chunks
    result.pages_added += counts.pages
