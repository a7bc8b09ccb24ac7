"""What a KB holds, read from kb.sqlite: its summary (`KBInfo`) and its documents, in the order added."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from deepdraft.retrieval.kb.schema import _read_meta
from deepdraft.retrieval.kb.values import KBInfo


def _read_info(db: sqlite3.Connection, folder: Path, label: str, size_bytes: int) -> KBInfo:
    """Counts, formats, embedder and the failures of the last add; `size_bytes` is measured apart."""
    documents, pages = db.execute("SELECT count(*), coalesce(sum(pages), 0) FROM documents").fetchone()
    (chunks,) = db.execute("SELECT count(*) FROM chunks").fetchone()
    formats = dict(db.execute("SELECT format, count(*) FROM documents GROUP BY format ORDER BY 2 DESC"))
    failures = [
        {"location": location, "reason": reason}
        for location, reason in db.execute("SELECT location, reason FROM failures ORDER BY rowid")
    ]
    meta = _read_meta(db, label)
    dimension = meta.get("embedder_dimension")
    return KBInfo(
        path=str(folder),
        format_version=int(meta["format_version"]),
        revision=int(meta.get("revision", 0)),
        documents=int(documents),
        chunks=int(chunks),
        pages=int(pages),
        size_bytes=size_bytes,
        formats={str(k): int(v) for k, v in formats.items()},
        embedder=meta.get("embedder"),
        dimension=int(dimension) if dimension else None,
        chunking={
            "chunk_tokens": int(meta["chunk_tokens"]),
            "chunk_overlap": int(meta["chunk_overlap"]),
        },
        analyzer=str(meta["analyzer"]),
        failures=failures,
        created=str(meta.get("created", "")),
        updated=str(meta.get("updated", "")),
    )


def _document_rows(db: sqlite3.Connection) -> list[dict[str, Any]]:
    """Every document: doc_id, title, location, format, pages, chunks and content hash."""
    rows = db.execute(
        "SELECT d.doc_id, d.title, d.location, d.format, d.pages,"
        " (SELECT count(*) FROM chunks c WHERE c.document = d.id), d.content_hash"
        " FROM documents d ORDER BY d.id"
    ).fetchall()
    return [
        {
            "doc_id": doc_id,
            "title": title,
            "location": location,
            "format": fmt,
            "pages": pages,
            "chunks": chunks,
            "content_hash": content_hash,
        }
        for doc_id, title, location, fmt, pages, chunks, content_hash in rows
    ]


def _tree_size(folder: Path) -> int:
    total = 0
    for path in folder.rglob("*"):
        try:
            if path.is_file():
                total += path.stat().st_size
        except OSError:
            continue  # a file a writer just deleted
    return total
