"""`open_folder_kb`: a folder (or file) of documents searched as a KB built on the fly and cached.

The cache entry is an ordinary KB, brought up to date on every open by `add(prune=True)`: unchanged
files cost only a hash, deleted files are pruned. It is a cache, not user data, so a change of
chunking settings rebuilds it rather than migrating it; each embedder gets its own entry.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import uuid
from pathlib import Path

from deepdraft.errors import KnowledgeBaseError
from deepdraft.retrieval.documents.limits import DocumentLimits
from deepdraft.retrieval.kb.lock import _WriteLock
from deepdraft.retrieval.kb.schema import DB_NAME
from deepdraft.retrieval.kb.store import KnowledgeBase
from deepdraft.settings import Settings


def open_folder_kb(corpus: Path, cache_root: Path, settings: Settings) -> KnowledgeBase:
    """The documents at `corpus` as a KB cached in `cache_root`, brought up to date first.

    One cache entry per corpus path and embedder (``<name>-<hash>``). Unchanged files cost only a
    hash; files deleted from the folder are pruned; a change of chunking settings rebuilds the entry.
    `KnowledgeBaseError` when nothing in `corpus` is readable, naming the first problems.
    """
    retrieval, embedding = settings.retrieval, settings.embedding
    spec = [embedding.base_url, embedding.model] if embedding.enabled else None
    digest = hashlib.sha256(json.dumps([str(corpus), spec]).encode()).hexdigest()[:12]
    readable = re.sub(r"[^A-Za-z0-9_-]+", "-", corpus.name).strip("-")[:40] or "corpus"
    folder = Path(cache_root) / f"{readable}-{digest}"
    label = str(corpus)
    wanted = {"chunk_tokens": retrieval.chunk_tokens, "chunk_overlap": retrieval.chunk_overlap}
    if (folder / DB_NAME).is_file():
        with KnowledgeBase.open(folder, label=label) as cached:
            stale = cached.chunking != wanted
        if stale:  # a cache entry, not user data: rebuilt rather than migrated
            with _WriteLock(folder, label, wait=True):
                trash = folder.with_name(f".deleting-{folder.name}-{uuid.uuid4().hex[:8]}")
                folder.rename(trash)
            shutil.rmtree(trash, ignore_errors=True)
    with KnowledgeBase.create(folder, retrieval, label=label) as kb:
        result = kb.add(
            [corpus],
            embedding=embedding if embedding.enabled else None,
            max_bytes=int(retrieval.max_file_mb * 1024 * 1024),
            limits=DocumentLimits.from_settings(retrieval),
            ocr=retrieval.ocr,
            prune=True,
            wait=True,
        )
        if kb.document_count() == 0:
            shown = "; ".join(str(failure) for failure in result.failures[:3])
            more = f" (+{len(result.failures) - 3} more)" if len(result.failures) > 3 else ""
            raise KnowledgeBaseError(
                f"no readable documents in {corpus}" + (f": {shown}{more}" if shown else "")
            )
    return open_folder_index(folder, label, settings)


def open_folder_index(folder: Path, label: str, settings: Settings) -> KnowledgeBase:
    """The cached KB of a corpus in `folder`, as it is (documents not looked at), searched as
    `settings.retrieval` says; `label` names the corpus (its path where it was indexed)."""
    retrieval = settings.retrieval
    return KnowledgeBase.open(
        folder,
        label=label,
        only=retrieval.only,
        exclude=retrieval.exclude,
        mode=retrieval.mode,
        embedding=settings.embedding,
    )
