"""Ingestion helpers: storing a changed file's documents and chunks, hashing, pruning, choosing the
documents to remove, recording failures.

All of them work inside the writer's open transaction; `adding` (for `KnowledgeBase.add`) and
`KnowledgeBase.remove` drive them (with a savepoint per file, so a file that yields nothing usable
keeps its previous version).

Trade-offs:

* A file is unchanged when the sha256 of its bytes is; then it is not even parsed. A changed file is
  re-read and diffed by document (a JSONL corpus with one edited line keeps every other passage and
  its chunk ids); documents it no longer contains are removed.
* Document ids are what citations group by, so they are unique in a KB: the extractor's id (the path
  relative to the folder given to `add`, or a JSONL record's id) when it is free, else qualified by
  the file's path.
* A chunk's index terms are stored with it (`_stored_terms`), so building a generation never
  re-tokenises; when the analyzer changes, `_migrate_terms` re-analyses every chunk once.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deepdraft.errors import KnowledgeBaseError
from deepdraft.retrieval.documents.chunking import chunk_document
from deepdraft.retrieval.documents.corpus import discover
from deepdraft.retrieval.documents.values import Document, Failure
from deepdraft.retrieval.index.analysis import ANALYZER_VERSION, context_header, passage_terms
from deepdraft.retrieval.kb.filters import DocumentMatcher
from deepdraft.retrieval.kb.schema import _STREAM_BATCH
from deepdraft.retrieval.kb.values import AddResult, IngestNote, ProgressSink
from deepdraft.settings import EmbeddingSettings


@dataclass
class _FileCounts:
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    removed: int = 0
    chunks: int = 0
    pages: int = 0
    failures: list[Failure] = field(default_factory=list)
    kept_previous: bool = False  # nothing usable: the file's previous version stays, untouched


def _store_document(
    db: sqlite3.Connection,
    doc: Document,
    source_row: int,
    source_path: str,
    revision: int,
    chunk_tokens: int,
    overlap: int,
    now: str,
    seen_keys: dict[str, int],
    counts: _FileCounts,
) -> None:
    """Insert, replace or keep one document of a changed file."""
    key = doc.doc_id
    occurrence = seen_keys.get(key, 0) + 1
    seen_keys[key] = occurrence
    if occurrence > 1:  # a repeated id in one file (a JSONL corpus): each record stays a document
        key = f"{key}#{occurrence}"
    content_hash = _document_hash(doc)
    existing = db.execute(
        "SELECT id, content_hash FROM documents WHERE source = ? AND source_key = ?", (source_row, key)
    ).fetchone()
    if existing is not None and existing[1] == content_hash:
        db.execute("UPDATE documents SET seen = ? WHERE id = ?", (revision, existing[0]))
        counts.unchanged += 1
        return
    chunks = chunk_document(doc, chunk_tokens, overlap)
    if not chunks:
        counts.failures.append(Failure(doc.location, f"document {doc.doc_id!r} has no text"))
        return
    if existing is not None:
        _delete_document(db, existing[0])
    doc_id = _unique_doc_id(db, key, source_path)
    row = db.execute(
        "INSERT INTO documents (source, source_key, doc_id, location, title, format, content_hash, chars,"
        " pages, added_at, seen) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            source_row,
            key,
            doc_id,
            doc.location,
            doc.title,
            doc.format,
            content_hash,
            len(doc.text),
            len(doc.pages),
            now,
            revision,
        ),
    ).lastrowid
    pending = []
    for chunk in chunks:
        # Title and heading path are indexed and embedded with the chunk; the stored text is the chunk.
        context = context_header(doc.title, chunk.headings)
        terms = _stored_terms(passage_terms(doc.title, chunk.headings, chunk.text))
        embed_key = hashlib.sha256(f"{context}\n{chunk.text}".encode("utf-8", "surrogatepass")).digest()
        pending.append(
            (
                row,
                chunk.start,
                chunk.end,
                chunk.page,
                json.dumps(chunk.headings),
                chunk.text,
                terms,
                embed_key,
            )
        )
    db.executemany(
        "INSERT INTO chunks (document, start_char, end_char, page, headings, text, terms, embed_key)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        pending,
    )
    if existing is None:
        counts.added += 1
    else:
        counts.updated += 1
    counts.chunks += len(chunks)
    counts.pages += len(doc.pages)


class _NothingUsable(Exception):
    """A changed file gave no document: keep its previous version."""


def _upsert_source(
    db: sqlite3.Connection, known: tuple[int, str] | None, path: str, digest: str, size: int, now: str
) -> int:
    if known is None:
        cursor = db.execute(
            "INSERT INTO sources (path, content_hash, size, added_at) VALUES (?, ?, ?, ?)",
            (path, digest, size, now),
        )
        return int(cursor.lastrowid or 0)
    db.execute(
        "UPDATE sources SET content_hash = ?, size = ?, added_at = ? WHERE id = ?",
        (digest, size, now, known[0]),
    )
    return int(known[0])


def _root_of(raw: str | Path) -> Path:
    """The folder document ids are relative to: the folder given, a file's folder, a glob's fixed part."""
    text = os.path.expanduser(str(raw))
    path = Path(os.path.abspath(text))
    if not os.path.lexists(path) and glob.has_magic(text):
        parts = []
        for part in Path(text).parts:
            if glob.has_magic(part):
                break
            parts.append(part)
        path = Path(os.path.abspath(os.path.join(*parts))) if parts else Path.cwd()
        return path
    return path if path.is_dir() else path.parent


def _unique_doc_id(db: sqlite3.Connection, key: str, source_path: str) -> str:
    if db.execute("SELECT 1 FROM documents WHERE doc_id = ?", (key,)).fetchone() is None:
        return key
    qualified = f"{source_path}#{key}"
    candidate, n = qualified, 2
    while db.execute("SELECT 1 FROM documents WHERE doc_id = ?", (candidate,)).fetchone() is not None:
        candidate, n = f"{qualified}~{n}", n + 1
    return candidate


def _delete_document(db: sqlite3.Connection, row: int) -> None:
    db.execute("DELETE FROM chunks WHERE document = ?", (row,))
    db.execute("DELETE FROM documents WHERE id = ?", (row,))


def _document_hash(doc: Document) -> str:
    digest = hashlib.sha256(b"deepdraft-document-1\0")
    pages = [(page.number, page.start, page.end) for page in doc.pages]
    for part in (doc.title, doc.location, doc.format, json.dumps(pages), doc.text):
        data = part.encode("utf-8", "surrogatepass")
        digest.update(len(data).to_bytes(8, "little") + data)
    return digest.hexdigest()


def _file_hash(file: Path) -> str:
    with file.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _prune(db: sqlite3.Connection, roots: list[Path]) -> list[str]:
    """Delete the documents of files under `roots` that no longer exist; their locations."""
    removed: list[str] = []
    for source_row, path in db.execute("SELECT id, path FROM sources").fetchall():
        under = any(path == str(root) or path.startswith(str(root).rstrip("/") + "/") for root in roots)
        if not under or Path(path).exists():
            continue
        for (row,) in db.execute("SELECT id FROM documents WHERE source = ?", (source_row,)).fetchall():
            _delete_document(db, row)
        db.execute("DELETE FROM sources WHERE id = ?", (source_row,))
        removed.append(path)
    return removed


def _select_for_removal(db: sqlite3.Connection, selectors: Sequence[str]) -> dict[int, tuple[str, str]]:
    documents = db.execute("SELECT id, doc_id, location FROM documents").fetchall()
    chosen: dict[int, tuple[str, str]] = {}
    unmatched = []
    for selector in selectors:
        exact = {selector, os.path.abspath(os.path.expanduser(selector))}
        matcher = DocumentMatcher([selector])
        hits = [
            (row, doc_id, location)
            for row, doc_id, location in documents
            if doc_id in exact or location in exact or matcher.matches(doc_id, location)
        ]
        if not hits:
            unmatched.append(selector)
        chosen.update((row, (doc_id, location)) for row, doc_id, location in hits)
    if unmatched:
        raise KnowledgeBaseError(
            f"no document matches {', '.join(map(repr, unmatched))}; nothing was removed "
            "(give doc ids, paths, URLs or globs as `deepdraft kb info NAME --documents` lists them)"
        )
    return chosen


def _record_failures(db: sqlite3.Connection, failures: list[Failure]) -> None:
    db.execute("DELETE FROM failures")
    db.executemany("INSERT INTO failures VALUES (?, ?)", [(f.location, f.reason) for f in failures])


def _fail(result: AddResult, say: ProgressSink, failure: Failure) -> None:
    result.failures.append(failure)
    say(IngestNote("failed", failure.location, failure.reason))


def _migrate_terms(db: sqlite3.Connection, meta: dict[str, Any], say: ProgressSink) -> bool:
    """Re-analyse every chunk when the analyzer changed since the KB was built (inside the transaction)."""
    if meta.get("analyzer") == ANALYZER_VERSION:
        return False
    say(IngestNote("indexing", "", "the text analyzer changed: re-analysing every passage"))
    last = 0
    while True:
        rows = db.execute(
            "SELECT c.id, c.text, c.headings, d.title FROM chunks c JOIN documents d ON d.id = c.document"
            " WHERE c.id > ? ORDER BY c.id LIMIT ?",
            (last, _STREAM_BATCH),
        ).fetchall()
        if not rows:
            break
        updates = []
        for chunk_id, text, headings, title in rows:
            updates.append((_stored_terms(passage_terms(title, json.loads(headings), text)), chunk_id))
        db.executemany("UPDATE chunks SET terms = ? WHERE id = ?", updates)
        last = rows[-1][0]
    db.execute("INSERT OR REPLACE INTO meta VALUES ('analyzer', ?)", (ANALYZER_VERSION,))
    return True


def _set_embedder_meta(db: sqlite3.Connection, embedder: Any, embedding: EmbeddingSettings | None) -> None:
    spec = {"base_url": embedding.base_url, "model": embedding.model} if embedding is not None else {}
    for key, value in (
        ("embedder", embedder.name),
        ("embedder_dimension", str(embedder.dimension)),
        ("embedder_spec", json.dumps(spec)),
    ):
        db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))


def _stored_terms(terms: list[str]) -> str:
    """Index terms as the chunks table keeps them: space-separated (a term holding a space is left out)."""
    return " ".join(term for term in terms if " " not in term)


def walk_paths(
    paths: Sequence[str | Path],
    *,
    prune: bool,
    result: AddResult,
    say: ProgressSink,
    ingest_file: Callable[[Path, Path], bool],
    prune_missing: Callable[[list[Path]], Iterable[str]],
) -> bool:
    """The engine-independent part of one add: find the files under each path (reporting what cannot
    be used), hand each to the engine's `ingest_file(file, root)`, then, with `prune`, let the engine
    drop documents whose files are gone. True if any document changed."""
    changed = False
    roots: list[Path] = []
    for raw in paths:
        files, failures = discover([raw])
        for failure in failures:
            _fail(result, say, failure)
        root = _root_of(raw)
        roots.append(root)
        for file in files:
            changed |= ingest_file(file, root)
    if prune:
        for location in prune_missing(roots):
            result.documents_removed += 1
            changed = True
            say(IngestNote("removed", location, "file no longer exists"))
    return changed
