"""What a KB reports: a line of progress (`IngestNote`), what an add did (`AddResult`), a summary (`KBInfo`).

These live apart from `store` so that the helpers that report progress (`ingest`, `generations`)
need not import the store, which imports them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from deepdraft.retrieval.documents.values import Failure


@dataclass(frozen=True)
class IngestNote:
    """One line of progress from `add` or `remove`; `kind` says what happened to `location`."""

    kind: Literal["added", "updated", "unchanged", "failed", "removed", "indexing"]
    location: str
    detail: str = ""


ProgressSink = Callable[[IngestNote], None]


def _ignore(_: IngestNote) -> None:
    pass


@dataclass
class AddResult:
    """What one `add` did. `changed` is False when the KB's searchable content is as before."""

    documents_added: int = 0
    documents_updated: int = 0
    documents_unchanged: int = 0
    documents_removed: int = 0
    chunks_added: int = 0
    pages_added: int = 0
    failures: list[Failure] = field(default_factory=list)
    revision: int = 0
    changed: bool = False
    seconds: float = 0.0

    def summary(self) -> str:
        """One line for people, e.g. "added 12 documents (340 chunks), 2 unchanged, 3 failed"."""
        new = self.documents_added + self.documents_updated
        parts = [f"added {_count(new, 'document')} ({_count(self.chunks_added, 'chunk')})"]
        if self.documents_updated:
            parts.append(f"{self.documents_updated} of them updated")
        parts.append(f"{self.documents_unchanged} unchanged")
        if self.documents_removed:
            parts.append(f"{self.documents_removed} removed")
        parts.append(f"{len(self.failures)} failed")
        return ", ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "documents_added": self.documents_added,
            "documents_updated": self.documents_updated,
            "documents_unchanged": self.documents_unchanged,
            "documents_removed": self.documents_removed,
            "chunks_added": self.chunks_added,
            "pages_added": self.pages_added,
            "failures": [{"location": f.location, "reason": f.reason} for f in self.failures],
            "revision": self.revision,
            "changed": self.changed,
            "seconds": round(self.seconds, 3),
        }


@dataclass(frozen=True)
class KBInfo:
    """A summary of a KB, as `deepdraft kb info` shows it."""

    path: str
    format_version: int
    revision: int
    documents: int
    chunks: int
    pages: int
    size_bytes: int
    formats: dict[str, int]
    embedder: str | None
    dimension: int | None
    chunking: dict[str, int]
    analyzer: str
    failures: list[dict[str, str]]
    created: str
    updated: str

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"
