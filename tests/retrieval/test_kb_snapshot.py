"""A KB folder as one archive and back (what `batch --ray` ships to workers that cannot see a KB)."""

from __future__ import annotations

from pathlib import Path

import pytest

from deepdraft.errors import KnowledgeBaseError
from deepdraft.retrieval.kb import snapshot
from deepdraft.retrieval.kb.names import create_kb, kb_dir, open_kb
from deepdraft.retrieval.kb.store import KnowledgeBase


def test_a_restored_snapshot_searches_exactly_as_the_kb_it_was_taken_from(
    corpus_dir: Path, tmp_path: Path
) -> None:
    with create_kb("work") as kb:
        kb.add([corpus_dir])
    data = snapshot.take(kb_dir("work"), "work")
    copy = tmp_path / "elsewhere" / "work"
    snapshot.restore(data, copy)
    assert not (copy / "write.lock").exists() and not list(copy.parent.glob(".work-*"))
    with open_kb("work") as original, KnowledgeBase.open(copy, label="work") as restored:
        assert restored.fingerprint() == original.fingerprint()
        query = "tariffs on imported steel"
        assert [p.text for p in restored.search(query, 5)] == [p.text for p in original.search(query, 5)]
    assert snapshot.size_of(kb_dir("work")) >= len(data) // 2  # counted before anything is read


def test_a_snapshot_is_not_unpacked_over_a_kb_nor_from_garbage(corpus_dir: Path, tmp_path: Path) -> None:
    with create_kb("work") as kb:
        kb.add([corpus_dir])
    data = snapshot.take(kb_dir("work"), "work")
    with pytest.raises(KnowledgeBaseError, match="already holds a knowledge base"):
        snapshot.restore(data, kb_dir("work"))
    with pytest.raises(KnowledgeBaseError, match="cannot be unpacked"):
        snapshot.restore(b"not an archive", tmp_path / "broken")
    assert not (tmp_path / "broken").exists()
    with pytest.raises(KnowledgeBaseError, match="no knowledge base 'gone'"):
        snapshot.take(tmp_path / "gone", "gone")
