"""Named knowledge bases: name rules, layout under the workspace, and the errors a user sees."""

from __future__ import annotations

from pathlib import Path

import pytest

from deepdraft.errors import KnowledgeBaseError
from deepdraft.retrieval.kb.lock import write_lock
from deepdraft.retrieval.kb.names import (
    create_kb,
    kb_dir,
    kb_exists,
    kb_has_documents,
    kb_root,
    list_kbs,
    open_kb,
    remove_kb,
    validate_kb_name,
)


def build_kb(name: str, corpus: Path, home: Path | None = None) -> Path:
    with create_kb(name, home=home) as kb:
        kb.add([corpus])
        return kb.folder


@pytest.mark.parametrize("name", ["demo", "default", "a", "7", "work_2024", "my.kb-1", "A" * 64])
def test_valid_names(name: str) -> None:
    assert validate_kb_name(name) == name


@pytest.mark.parametrize(
    "name", ["", ".", "..", ".hidden", "-x", "_x", "a/b", "a\\b", "a b", "ü", "a" * 65, "demo\n"]
)
def test_invalid_names_are_refused_before_any_path_is_built(name: str) -> None:
    for use in (kb_dir, open_kb, create_kb, remove_kb):
        with pytest.raises(KnowledgeBaseError, match="invalid knowledge base name"):
            use(name)


def test_layout_is_under_the_workspace(isolated_workspace: Path, tmp_path: Path) -> None:
    assert kb_root() == isolated_workspace / "kbs"
    assert kb_dir("work") == isolated_workspace / "kbs" / "work"
    assert kb_dir("work", tmp_path / "other") == tmp_path / "other" / "kbs" / "work"


def test_a_kb_exists_once_created_and_has_documents_once_added(corpus_dir: Path) -> None:
    assert not kb_exists("work") and not kb_has_documents("work") and list_kbs() == []
    create_kb("work").close()
    assert kb_exists("work") and not kb_has_documents("work") and list_kbs() == ["work"]
    build_kb("work", corpus_dir)
    assert kb_has_documents("work")
    with open_kb("work") as kb:
        assert kb.search("tariff of abominations", 1)[0].source.doc_id == "address-1832.md"


def test_list_ignores_folders_that_are_not_kbs(corpus_dir: Path, isolated_workspace: Path) -> None:
    build_kb("zeta", corpus_dir)
    build_kb("alpha", corpus_dir)
    root = isolated_workspace / "kbs"
    (root / "empty").mkdir()
    (root / ".hidden").mkdir()
    (root / ".hidden" / "kb.sqlite").write_text("x")
    (root / "stray.txt").write_text("x")
    assert list_kbs() == ["alpha", "zeta"]


def test_missing_demo_says_run_setup() -> None:
    with pytest.raises(KnowledgeBaseError) as caught:
        open_kb("demo")
    assert str(caught.value) == "the demo knowledge base is not set up yet; run: deepdraft setup"


def test_missing_kb_names_the_existing_ones_and_how_to_create_it(
    corpus_dir: Path, isolated_workspace: Path
) -> None:
    root = isolated_workspace / "kbs"
    hint = "create it with: deepdraft kb add PATH... --kb work"
    with pytest.raises(KnowledgeBaseError) as caught:
        open_kb("work")
    assert str(caught.value) == f"no knowledge base named 'work' in {root} (none exist yet); {hint}"
    build_kb("papers", corpus_dir)
    with pytest.raises(KnowledgeBaseError) as caught:
        open_kb("work")
    assert str(caught.value) == f"no knowledge base named 'work' in {root} (existing: papers); {hint}"


def test_a_kb_of_an_older_deepdraft_is_named_as_such_and_replaced_on_add(
    corpus_dir: Path, isolated_workspace: Path
) -> None:
    legacy = isolated_workspace / "kbs" / "old" / "index"
    legacy.mkdir(parents=True)
    (legacy / "manifest.json").write_text("{}")
    assert not kb_exists("old") and list_kbs() == []
    with pytest.raises(
        KnowledgeBaseError, match=r"built by an older deepdraft .* deepdraft kb add PATH\.\.\. --kb old"
    ):
        open_kb("old")
    build_kb("old", corpus_dir)
    assert kb_has_documents("old") and not legacy.exists()


def test_a_damaged_database_holds_no_documents(corpus_dir: Path) -> None:
    folder = build_kb("work", corpus_dir)
    (folder / "kb.sqlite").write_bytes(b"not a database" * 100)
    for leftover in folder.glob("kb.sqlite-*"):
        leftover.unlink()
    assert kb_exists("work") and not kb_has_documents("work")
    with pytest.raises(KnowledgeBaseError, match="cannot be read"):
        open_kb("work")


def test_remove_deletes_the_whole_kb_but_not_under_a_writer(corpus_dir: Path) -> None:
    folder = build_kb("work", corpus_dir)
    with write_lock(folder, "work"), pytest.raises(KnowledgeBaseError, match="is being written"):
        remove_kb("work")
    assert kb_has_documents("work")
    remove_kb("work")
    assert not folder.exists() and list_kbs() == [] and not list(folder.parent.iterdir())
    with pytest.raises(KnowledgeBaseError, match="no knowledge base named 'work'"):
        remove_kb("work")


def test_open_kb_takes_every_search_option_of_knowledge_base_open(tmp_path: Path) -> None:
    """`open_kb` and `create_kb` pass `SearchOptions` through: it must name every keyword of `open`."""
    import inspect
    from typing import get_type_hints

    from deepdraft.retrieval.kb.store import KnowledgeBase, SearchOptions

    keywords = set(inspect.signature(KnowledgeBase.open).parameters) - {"folder", "label"}
    assert keywords == set(get_type_hints(SearchOptions))
