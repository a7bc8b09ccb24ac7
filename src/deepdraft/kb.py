"""Named knowledge bases: a name maps to a search index under ``DEEPDRAFT_HOME/kbs/<name>/index``.

This module only knows the layout and opens what is there; building indexes belongs to whoever
ingests documents (`demo.ensure_demo_kb` for the bundled corpus, an ingestion command later).

Trade-offs:

* A knowledge base *exists* when its index manifest exists. The index is written atomically (see
  `retrieval.bm25_index`), so a half-built index is never mistaken for a KB, and no separate registry
  file can drift out of step with the folders.
* Names are restricted to ``[A-Za-z0-9][A-Za-z0-9_.-]{0,63}``: they become folder names, so no path
  separators, no leading dot (hidden folders, ``..``) and a length every filesystem accepts. A name
  is checked before any path is built from it.
* Every function takes an optional `home` so that callers holding a workspace path (tests, setup) do
  not have to go through the environment; by default it is `settings.home_dir()`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from deepdraft.errors import KnowledgeBaseError
from deepdraft.retrieval.bm25_index import MANIFEST, BM25Index
from deepdraft.settings import home_dir

DEMO_KB = "demo"
"""The bundled State of the Union corpus, created by ``deepdraft setup``."""
DEFAULT_KB = "default"
"""The KB used when none is named, if it has documents."""

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def validate_kb_name(name: str) -> str:
    """Return `name` if it is a valid KB name, else raise `KnowledgeBaseError` saying what is allowed."""
    if not _NAME.fullmatch(name):
        raise KnowledgeBaseError(
            f"invalid knowledge base name {name!r}: use 1-64 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit"
        )
    return name


def is_kb_name(name: str) -> bool:
    return _NAME.fullmatch(name) is not None


def kb_root(home: Path | None = None) -> Path:
    """The folder that holds every KB of the workspace."""
    return (home if home is not None else home_dir()) / "kbs"


def kb_index_dir(name: str, home: Path | None = None) -> Path:
    """Where the index of KB `name` lives (whether or not it has been built)."""
    return kb_root(home) / validate_kb_name(name) / "index"


def kb_exists(name: str, home: Path | None = None) -> bool:
    """True when KB `name` has a built index."""
    return (kb_index_dir(name, home) / MANIFEST).is_file()


def kb_has_documents(name: str, home: Path | None = None) -> bool:
    """True when KB `name` has an index holding at least one document (read from its manifest only)."""
    try:
        manifest = json.loads((kb_index_dir(name, home) / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    documents = manifest.get("documents") if isinstance(manifest, dict) else None
    return isinstance(documents, int) and documents > 0


def list_kbs(home: Path | None = None) -> list[str]:
    """The names of the KBs that have an index, sorted."""
    root = kb_root(home)
    if not root.is_dir():
        return []
    return sorted(
        entry.name
        for entry in root.iterdir()
        if _NAME.fullmatch(entry.name) and (entry / "index" / MANIFEST).is_file()
    )


def open_kb(name: str, home: Path | None = None) -> BM25Index:
    """Open KB `name` for searching; `KnowledgeBaseError` with what to do when it is not there."""
    index_dir = kb_index_dir(name, home)
    if not (index_dir / MANIFEST).is_file():
        if name == DEMO_KB:
            raise KnowledgeBaseError("the demo knowledge base is not set up yet; run: deepdraft setup")
        known = list_kbs(home)
        have = f"existing: {', '.join(known)}" if known else "none exist yet"
        raise KnowledgeBaseError(f"no knowledge base named {name!r} in {kb_root(home)} ({have})")
    return BM25Index.open(index_dir)
