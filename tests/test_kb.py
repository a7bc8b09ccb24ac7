"""Named knowledge bases: name rules, layout under the workspace, and the errors a user sees."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deepdraft.errors import KnowledgeBaseError
from deepdraft.kb import (
    kb_exists,
    kb_has_documents,
    kb_index_dir,
    kb_root,
    list_kbs,
    open_kb,
    validate_kb_name,
)
from deepdraft.retrieval.bm25_index import BM25Index
from deepdraft.retrieval.corpus import iter_documents
from deepdraft.settings import RetrievalSettings


def build_kb(name: str, corpus: Path, home: Path | None = None) -> Path:
    index_dir = kb_index_dir(name, home)
    BM25Index.build(iter_documents(corpus), index_dir, RetrievalSettings()).close()
    return index_dir


@pytest.mark.parametrize("name", ["demo", "default", "a", "7", "work_2024", "my.kb-1", "A" * 64])
def test_valid_names(name: str) -> None:
    assert validate_kb_name(name) == name


@pytest.mark.parametrize(
    "name", ["", ".", "..", ".hidden", "-x", "_x", "a/b", "a\\b", "a b", "ü", "a" * 65, "demo\n"]
)
def test_invalid_names_are_refused_before_any_path_is_built(name: str) -> None:
    with pytest.raises(KnowledgeBaseError, match="invalid knowledge base name"):
        kb_index_dir(name)
    with pytest.raises(KnowledgeBaseError, match="invalid knowledge base name"):
        open_kb(name)


def test_layout_is_under_the_workspace(isolated_workspace: Path, tmp_path: Path) -> None:
    assert kb_root() == isolated_workspace / "kbs"
    assert kb_index_dir("work") == isolated_workspace / "kbs" / "work" / "index"
    assert kb_index_dir("work", tmp_path / "other") == tmp_path / "other" / "kbs" / "work" / "index"


def test_a_built_kb_exists_and_opens(corpus_dir: Path) -> None:
    assert not kb_exists("work") and not kb_has_documents("work") and list_kbs() == []
    build_kb("work", corpus_dir)
    assert kb_exists("work") and kb_has_documents("work")
    assert list_kbs() == ["work"]
    with open_kb("work") as kb:
        assert kb.search("tariff of abominations", 1)[0].source.doc_id == "address-1832.md"


def test_list_ignores_folders_that_are_not_kbs(corpus_dir: Path, isolated_workspace: Path) -> None:
    build_kb("zeta", corpus_dir)
    build_kb("alpha", corpus_dir)
    root = isolated_workspace / "kbs"
    (root / "empty").mkdir()  # no index yet
    (root / "half" / "index").mkdir(parents=True)  # an index folder without a manifest
    (root / ".hidden" / "index").mkdir(parents=True)
    (root / ".hidden" / "index" / "manifest.json").write_text("{}")
    (root / "stray.txt").write_text("x")
    assert list_kbs() == ["alpha", "zeta"]


def test_missing_demo_says_run_setup() -> None:
    with pytest.raises(KnowledgeBaseError) as caught:
        open_kb("demo")
    assert str(caught.value) == "the demo knowledge base is not set up yet; run: deepdraft setup"


def test_missing_kb_names_the_existing_ones(corpus_dir: Path, isolated_workspace: Path) -> None:
    root = isolated_workspace / "kbs"
    with pytest.raises(KnowledgeBaseError) as caught:
        open_kb("work")
    assert str(caught.value) == f"no knowledge base named 'work' in {root} (none exist yet)"
    build_kb("papers", corpus_dir)
    with pytest.raises(KnowledgeBaseError) as caught:
        open_kb("work")
    assert str(caught.value) == f"no knowledge base named 'work' in {root} (existing: papers)"


def test_damaged_manifest_means_no_documents(corpus_dir: Path) -> None:
    index_dir = build_kb("work", corpus_dir)
    manifest = index_dir / "manifest.json"
    manifest.write_text("{broken")
    assert kb_exists("work") and not kb_has_documents("work")
    with pytest.raises(KnowledgeBaseError, match="damaged"):
        open_kb("work")
    manifest.write_text(json.dumps({"documents": 0}))
    assert not kb_has_documents("work")
