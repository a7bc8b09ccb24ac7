"""Reading the files one `add` names into a Postgres KB's open transaction, one savepoint per file.

The same steps, in the same order, as the embedded engine's `adding` and `ingest` (unchanged bytes
are skipped unread; a changed file is diffed by document, so only the documents that changed lose
their chunks; a file that yields nothing usable keeps its previous version) — written in Postgres's
SQL, with each new chunk's tsvector and (when the KB has an embedder) vector stored in the same
transaction. Document hashing, chunking and term analysis are the embedded engine's own functions,
so both engines hold the same passages for the same files.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from deepdraft.errors import KnowledgeBaseError
from deepdraft.retrieval.documents.chunking import chunk_document
from deepdraft.retrieval.documents.corpus import read_documents
from deepdraft.retrieval.documents.limits import DocumentLimits
from deepdraft.retrieval.documents.values import Document, Failure
from deepdraft.retrieval.index.analysis import ANALYZER_VERSION, context_header, passage_terms
from deepdraft.retrieval.kb.filters import DocumentMatcher
from deepdraft.retrieval.kb.ingest import (
    _document_hash,
    _fail,
    _file_hash,
    _FileCounts,
    _NothingUsable,
    _stored_terms,
    walk_paths,
)
from deepdraft.retrieval.kb.postgres import statistics
from deepdraft.retrieval.kb.postgres.search import tsvector_literal
from deepdraft.retrieval.kb.postgres.statistics import StatisticsDelta
from deepdraft.retrieval.kb.values import AddResult, IngestNote, ProgressSink, _count

Conn = Any  # psycopg.Connection: typed loosely so this module imports without the extra installed


class _Options:
    def __init__(
        self,
        revision: int,
        meta: dict[str, Any],
        max_bytes: int,
        limits: DocumentLimits,
        ocr: bool,
        embedder: Any,
        stats: StatisticsDelta,
    ) -> None:
        self.revision = revision
        self.chunk_tokens = int(meta["chunk_tokens"])
        self.overlap = int(meta["chunk_overlap"])
        self.max_bytes = max_bytes
        self.limits = limits
        self.ocr = ocr
        self.embedder = embedder
        self.stats = stats


def ingest_paths(
    conn: Conn,
    meta: dict[str, Any],
    paths: Sequence[str | Path],
    result: AddResult,
    max_bytes: int,
    limits: DocumentLimits,
    ocr: bool,
    prune: bool,
    embedder: Any,
    stats: StatisticsDelta,
    say: ProgressSink,
) -> bool:
    """Apply every file's changes inside `conn`'s transaction, counting what they change in the BM25
    statistics into `stats` (for the caller to flush); True if any document changed."""
    options = _Options(int(meta.get("revision", 0)) + 1, meta, max_bytes, limits, ocr, embedder, stats)
    return walk_paths(
        paths,
        prune=prune,
        result=result,
        say=say,
        ingest_file=lambda file, root: _ingest_file(conn, file, root, options, result, say),
        prune_missing=lambda roots: _prune(conn, roots, stats),
    )


def _ingest_file(
    conn: Conn, file: Path, root: Path, options: _Options, result: AddResult, say: ProgressSink
) -> bool:
    path = str(file.absolute())
    try:
        size = file.stat().st_size
        if size > options.max_bytes and file.suffix.lower() != ".jsonl":
            for item in read_documents(file, max_bytes=options.max_bytes, ocr=options.ocr, root=root):
                if isinstance(item, Failure):
                    _fail(result, say, item)
            return False
        digest = _file_hash(file)
    except OSError as exc:
        _fail(result, say, Failure(path, f"unreadable ({exc.strerror or exc})"))
        return False
    known = conn.execute("SELECT id, content_hash FROM sources WHERE path = %s", (path,)).fetchone()
    if known is not None and known[1] == digest:
        (count,) = conn.execute("SELECT count(*) FROM documents WHERE source = %s", (known[0],)).fetchone()
        result.documents_unchanged += int(count)
        say(IngestNote("unchanged", path))
        return False
    counts = _store_file(conn, file, root, path, known, digest, size, options)
    for failure in counts.failures:
        _fail(result, say, failure)
    if counts.kept_previous:
        return False
    result.documents_added += counts.added
    result.documents_updated += counts.updated
    result.documents_unchanged += counts.unchanged
    result.documents_removed += counts.removed
    result.chunks_added += counts.chunks
    result.pages_added += counts.pages
    if counts.added or counts.updated:
        kind: Literal["added", "updated"] = "updated" if known is not None else "added"
        detail = f"{_count(counts.added + counts.updated, 'document')}, {_count(counts.chunks, 'chunk')}"
        if counts.pages:
            detail += f", {_count(counts.pages, 'page')}"
        say(IngestNote(kind, path, detail))
    elif counts.removed:
        say(IngestNote("removed", path, _count(counts.removed, "document")))
    return bool(counts.added or counts.updated or counts.removed)


class _Rollback(Exception):
    def __init__(self, reason: BaseException) -> None:
        self.reason = reason


def _store_file(
    conn: Conn,
    file: Path,
    root: Path,
    path: str,
    known: tuple[int, str] | None,
    digest: str,
    size: int,
    options: _Options,
) -> _FileCounts:
    """Read a changed file and store its documents under a savepoint (rolled back if nothing usable)."""
    now = datetime.now(UTC).isoformat(timespec="seconds")
    counts = _FileCounts()
    stats = StatisticsDelta()  # this file's: merged into the add's only if its savepoint is kept
    try:
        with conn.transaction():  # nested: a savepoint
            try:
                source_row = _upsert_source(conn, known, path, digest, size, now)
                seen_keys: dict[str, int] = {}
                for item in read_documents(
                    file, max_bytes=options.max_bytes, ocr=options.ocr, root=root, limits=options.limits
                ):
                    if isinstance(item, Failure):
                        counts.failures.append(item)
                        continue
                    _store_document(conn, item, source_row, path, options, now, seen_keys, counts, stats)
                if counts.added + counts.updated + counts.unchanged == 0:
                    raise _NothingUsable()
                stale = [
                    int(row)
                    for (row,) in conn.execute(
                        "SELECT id FROM documents WHERE source = %s AND seen < %s",
                        (source_row, options.revision),
                    )
                ]
                stats.forget_documents(conn, stale)
                conn.execute("DELETE FROM documents WHERE id = ANY(%s)", (stale,))
                counts.removed = len(stale)
            except (_NothingUsable, KnowledgeBaseError) as exc:
                raise _Rollback(exc) from None
    except _Rollback as rollback:
        if isinstance(rollback.reason, KnowledgeBaseError):
            counts.failures.append(Failure(path, str(rollback.reason)))
        counts.failures = counts.failures or [Failure(path, "no text found")]
        counts.kept_previous = True
        counts.added = counts.updated = counts.unchanged = counts.chunks = counts.pages = 0
    else:
        options.stats.merge(stats)
    return counts


def _upsert_source(
    conn: Conn, known: tuple[int, str] | None, path: str, digest: str, size: int, now: str
) -> int:
    if known is None:
        row = conn.execute(
            "INSERT INTO sources (path, content_hash, size, added_at) VALUES (%s, %s, %s, %s) RETURNING id",
            (path, digest, size, now),
        ).fetchone()
        return int(row[0])
    conn.execute(
        "UPDATE sources SET content_hash = %s, size = %s, added_at = %s WHERE id = %s",
        (digest, size, now, known[0]),
    )
    return int(known[0])


def _store_document(
    conn: Conn,
    doc: Document,
    source_row: int,
    source_path: str,
    options: _Options,
    now: str,
    seen_keys: dict[str, int],
    counts: _FileCounts,
    stats: StatisticsDelta,
) -> None:
    key = doc.doc_id
    occurrence = seen_keys.get(key, 0) + 1
    seen_keys[key] = occurrence
    if occurrence > 1:
        key = f"{key}#{occurrence}"
    content_hash = _document_hash(doc)
    # One round trip for what a new document needs to know: is there a previous version, and is
    # its id taken (for a replaced document the id is asked again once the old version is gone).
    found, taken = conn.execute(
        "SELECT (SELECT ARRAY[id::text, content_hash] FROM documents WHERE source = %s AND source_key = %s),"
        " EXISTS (SELECT 1 FROM documents WHERE doc_id = %s)",
        (source_row, key, key),
    ).fetchone()
    existing = (int(found[0]), str(found[1])) if found is not None else None
    if existing is not None and existing[1] == content_hash:
        conn.execute("UPDATE documents SET seen = %s WHERE id = %s", (options.revision, existing[0]))
        counts.unchanged += 1
        return
    chunks = chunk_document(doc, options.chunk_tokens, options.overlap)
    if not chunks:
        counts.failures.append(Failure(doc.location, f"document {doc.doc_id!r} has no text"))
        return
    reusable: dict[bytes, Any] = {}
    if existing is not None:
        if options.embedder is not None:  # an edited document keeps the vectors of its unchanged chunks
            reusable = {
                bytes(k): v
                for k, v in conn.execute(
                    "SELECT embed_key, embedding FROM chunks WHERE document = %s", (existing[0],)
                )
            }
        stats.forget_documents(conn, [existing[0]])
        conn.execute("DELETE FROM documents WHERE id = %s", (existing[0],))
    doc_id = key if existing is None and not taken else _unique_doc_id(conn, key, source_path)
    (row,) = conn.execute(
        "INSERT INTO documents (source, source_key, doc_id, location, title, format, content_hash, chars,"
        " pages, added_at, seen) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
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
            options.revision,
        ),
    ).fetchone()
    pending = []
    embed_texts = []
    for chunk in chunks:
        context = context_header(doc.title, chunk.headings)
        terms = _stored_terms(passage_terms(doc.title, chunk.headings, chunk.text))
        stats.add_passage(terms.split())
        embed_text = f"{context}\n{chunk.text}"
        embed_key = hashlib.sha256(embed_text.encode("utf-8", "surrogatepass")).digest()
        embed_texts.append(embed_text)
        pending.append(
            [
                row,
                chunk.start,
                chunk.end,
                chunk.page,
                json.dumps(chunk.headings),
                chunk.text,
                terms,
                embed_key,
            ]
        )
    if options.embedder is None:
        conn.cursor().executemany(
            "INSERT INTO chunks (document, start_char, end_char, page, headings, text, terms, embed_key, tsv)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s::tsvector)",
            [(*values, tsvector_literal(values[6])) for values in pending],
        )
    else:
        vectors = _vectors(options.embedder, embed_texts, [values[7] for values in pending], reusable)
        conn.cursor().executemany(
            "INSERT INTO chunks (document, start_char, end_char, page, headings, text, terms, embed_key, tsv,"
            " embedding) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s::tsvector, %s)",
            [
                (*values, tsvector_literal(values[6]), vector)
                for values, vector in zip(pending, vectors, strict=True)
            ],
        )
    if existing is None:
        counts.added += 1
    else:
        counts.updated += 1
    counts.chunks += len(chunks)
    counts.pages += len(doc.pages)


def _vectors(embedder: Any, texts: list[str], keys: list[bytes], reusable: dict[bytes, Any]) -> list[Any]:
    """One vector per text: reused by embed key where the old version had it, else embedded now."""
    import numpy as np

    missing = [i for i, key in enumerate(keys) if reusable.get(key) is None]
    fresh = np.asarray(embedder.embed([texts[i] for i in missing]), dtype=np.float32) if missing else None
    out: list[Any] = [reusable.get(key) for key in keys]
    for position, i in enumerate(missing):
        assert fresh is not None
        out[i] = fresh[position]
    return out


def _unique_doc_id(conn: Conn, key: str, source_path: str) -> str:
    def taken(candidate: str) -> bool:
        return conn.execute("SELECT 1 FROM documents WHERE doc_id = %s", (candidate,)).fetchone() is not None

    if not taken(key):
        return key
    qualified = f"{source_path}#{key}"
    candidate, n = qualified, 2
    while taken(candidate):
        candidate, n = f"{qualified}~{n}", n + 1
    return candidate


def _prune(conn: Conn, roots: list[Path], stats: StatisticsDelta) -> list[str]:
    removed: list[str] = []
    for source_row, path in conn.execute("SELECT id, path FROM sources").fetchall():
        under = any(path == str(root) or path.startswith(str(root).rstrip("/") + "/") for root in roots)
        if not under or Path(path).exists():
            continue
        documents = conn.execute("SELECT id FROM documents WHERE source = %s", (source_row,)).fetchall()
        stats.forget_documents(conn, [int(row) for (row,) in documents])
        conn.execute("DELETE FROM sources WHERE id = %s", (source_row,))  # cascades to documents, chunks
        removed.append(path)
    return removed


_REANALYSE_BATCH = 2000


def reanalyse(conn: Conn, meta: dict[str, Any], say: ProgressSink) -> bool:
    """Re-analyse every passage when the KB's terms were made by another analyzer (a deepdraft
    upgrade), as the embedded engine does on its next add: new terms and tsvectors, then the BM25
    statistics recounted. Inside the add's transaction, under the writers' lock; True if it had to."""
    if meta.get("analyzer") == ANALYZER_VERSION:
        return False
    say(IngestNote("indexing", "", "the text analyzer changed: re-analysing every passage"))
    last = 0
    while True:
        rows = conn.execute(
            "SELECT c.id, c.text, c.headings, d.title FROM chunks c JOIN documents d ON d.id = c.document"
            " WHERE c.id > %s ORDER BY c.id LIMIT %s",
            (last, _REANALYSE_BATCH),
        ).fetchall()
        if not rows:
            break
        updates = []
        for chunk_id, text, headings, title in rows:
            terms = _stored_terms(passage_terms(title, json.loads(headings), text))
            updates.append((terms, tsvector_literal(terms), chunk_id))
        conn.cursor().executemany("UPDATE chunks SET terms = %s, tsv = %s::tsvector WHERE id = %s", updates)
        last = rows[-1][0]
    statistics.rebuild(conn)
    conn.execute(
        "INSERT INTO meta VALUES ('analyzer', %s) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        (ANALYZER_VERSION,),
    )
    return True


def select_for_removal(conn: Conn, selectors: Sequence[str]) -> dict[int, tuple[str, str]]:
    """The documents `selectors` name (doc id, location or glob); an error naming any that match none."""
    import os

    documents = conn.execute("SELECT id, doc_id, location FROM documents").fetchall()
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
        chosen.update((int(row), (doc_id, location)) for row, doc_id, location in hits)
    if unmatched:
        raise KnowledgeBaseError(
            f"no document matches {', '.join(map(repr, unmatched))}; nothing was removed "
            "(give doc ids, paths, URLs or globs as `deepdraft kb info NAME --documents` lists them)"
        )
    return chosen


def record_failures(conn: Conn, failures: list[Failure]) -> None:
    conn.execute("DELETE FROM failures")
    conn.cursor().executemany(
        "INSERT INTO failures (location, reason) VALUES (%s, %s)", [(f.location, f.reason) for f in failures]
    )
