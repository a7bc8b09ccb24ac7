"""From a query to passages over one generation: the rows the filters allow, BM25 ranking, and
ranked rows turned back into passages.

The searcher (`HybridSearcher`) knows rows only; these functions give it the generation's BM25 half
and turn what it ranks into `Passage`s, reading text and source from SQLite by chunk id. A reader
stays on the generation it opened, so a hit whose chunk a later change deleted is dropped here.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

import numpy as np
import numpy.typing as npt

from deepdraft.core.evidence import Passage, Source
from deepdraft.retrieval.index.analysis import analyze
from deepdraft.retrieval.kb.filters import DocumentMatcher
from deepdraft.retrieval.kb.generations import _Generation
from deepdraft.retrieval.kb.schema import _SELECT_BATCH


def _allowed_documents(db: sqlite3.Connection, only: tuple[str, ...], exclude: tuple[str, ...]) -> list[int]:
    """The row ids of the documents `only` lets in (all when empty) and `exclude` does not leave out."""
    include, leave_out = DocumentMatcher(only), DocumentMatcher(exclude)
    allowed: list[int] = []
    for row, doc_id, location in db.execute("SELECT id, doc_id, location FROM documents"):
        if (not include or include.matches(doc_id, location)) and not leave_out.matches(doc_id, location):
            allowed.append(row)
    return allowed


def _bm25_ranking(
    bm25: Any, query: str, k: int, allowed: npt.NDArray[np.bool_] | None
) -> list[tuple[int, float]]:
    """The `k` best (row, BM25 score) pairs of a generation's bm25s index, best first.

    `bm25` may be None (no chunk has a term); `allowed` (one bool per row) restricts the rows. The
    query is analysed exactly as the chunks were; rows without any query term are never returned.
    """
    if bm25 is None or k <= 0:
        return []
    vocabulary: dict[str, int] = bm25.vocab_dict
    ids = [vocabulary[term] for term in analyze(query) if term in vocabulary]
    if not ids:
        return []
    scores: npt.NDArray[np.float32] = bm25.get_scores_from_ids(ids)
    if allowed is not None:
        scores = np.where(allowed, scores, 0).astype(np.float32)
    count = int(scores.shape[0])
    top = np.arange(count) if k >= count else np.argpartition(-scores, k - 1)[:k]
    top = top[scores[top] > 0]  # Lucene idf is positive: zero means no query term occurs
    top = top[np.lexsort((top, -scores[top]))]  # best first; ties by row, deterministic
    return [(int(row), float(scores[row])) for row in top]


def _passages(
    db: sqlite3.Connection, generation: _Generation, ranked: list[tuple[int, float]], k: int
) -> list[Passage]:
    """The passages of the `k` best ranked rows that still exist, best first."""
    chunk_ids = [int(generation.rows[row]) for row, _ in ranked]
    found: dict[int, tuple[str, Source]] = {}
    for i in range(0, len(chunk_ids), _SELECT_BATCH):
        batch = chunk_ids[i : i + _SELECT_BATCH]
        marks = ",".join("?" * len(batch))
        cursor = db.execute(
            "SELECT c.id, c.text, c.start_char, c.end_char, c.page, c.headings, d.doc_id, d.title,"
            f" d.location FROM chunks c JOIN documents d ON d.id = c.document WHERE c.id IN ({marks})",
            batch,
        )
        for chunk_id, text, start, end, page, headings, doc_id, title, location in cursor:
            source = Source(doc_id, title, location, page, start, end, headings=tuple(json.loads(headings)))
            found[chunk_id] = (text, source)
    passages = []
    for chunk_id, (_, score) in zip(chunk_ids, ranked, strict=True):
        if chunk_id in found:  # gone if a later change deleted it: this reader is on an older generation
            text, source = found[chunk_id]
            passages.append(Passage(text=text, source=source, score=score))
        if len(passages) == k:
            break
    return passages
