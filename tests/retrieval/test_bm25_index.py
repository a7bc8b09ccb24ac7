"""The BM25 index on disk: relevance, CJK, persistence, atomic builds, and the corpus cache."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import bm25s
import pytest

from deepdraft.errors import KnowledgeBaseError
from deepdraft.ports import Retriever
from deepdraft.retrieval.bm25_index import BM25Index, analyze, open_or_build
from deepdraft.retrieval.corpus import Document, iter_documents
from deepdraft.settings import RetrievalSettings

SETTINGS = RetrievalSettings(chunk_tokens=64, chunk_overlap=12)

CORPUS = {
    "tariffs.md": (
        "# Tariffs\n\nThe Tariff Act of 1930 raised import duties on thousands of goods. Protective "
        "tariffs shielded domestic manufacturers from foreign competition.\n\n## Retaliation\n\n"
        "Trading partners answered with duties of their own, and exports collapsed."
    ),
    "immigration.md": (
        "# Immigration\n\nMillions of immigrants arrived through Ellis Island. Congress debated quotas "
        "and the naturalization of newcomers for decades."
    ),
    "debt.txt": (
        "The national debt grew during every war. Interest payments on the debt became a large share "
        "of federal spending, and the Treasury issued bonds to refinance it."
    ),
    "space/apollo.md": (
        "# Moon landing\n\nThe Apollo program landed astronauts on the Moon in 1969. Rockets, capsules "
        "and guidance computers were built for the mission."
    ),
    "zh/guozhai.txt": "国债规模在战争期间迅速扩大。财政部发行债券以支付利息。",
    "zh/yimin.txt": "移民政策一直是国会辩论的焦点。新移民带来了劳动力。",
}


def make_corpus(root: Path, files: dict[str, str] = CORPUS) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    return make_corpus(tmp_path / "corpus")


@pytest.fixture
def index(corpus: Path, tmp_path: Path) -> Iterator[BM25Index]:
    with BM25Index.build(iter_documents(corpus), tmp_path / "index", SETTINGS) as built:
        yield built


def top_doc(index: BM25Index, query: str) -> str:
    hits = index.search(query, 3)
    assert hits, f"no hits for {query!r}"
    return hits[0].source.doc_id


def test_is_a_retriever(index: BM25Index) -> None:
    assert isinstance(index, Retriever)


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("protective tariffs on imports", "tariffs.md"),
        ("immigrating newcomers and quotas", "immigration.md"),  # stemming: immigrating ~ immigrants
        ("interest on the national debt", "debt.txt"),
        ("astronauts landing on the moon", "space/apollo.md"),
        ("retaliation", "tariffs.md"),  # only in a heading: indexed with the chunk
        ("国债利息", "zh/guozhai.txt"),
        ("新移民", "zh/yimin.txt"),
    ],
)
def test_the_right_document_comes_first(index: BM25Index, query: str, expected: str) -> None:
    assert top_doc(index, query) == expected


def test_passages_point_back_into_their_documents(index: BM25Index, corpus: Path) -> None:
    hits = index.search("duties exports", 10)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    for hit in hits:
        source = hit.source
        text = (corpus / source.doc_id).read_text(encoding="utf-8")
        assert text[source.start : source.end] == hit.text
        assert source.location == str((corpus / source.doc_id).absolute())
        assert source.page is None
        assert hit.score > 0
    assert hits[0].source.title == "Tariffs"


def test_queries_without_known_terms_return_nothing(index: BM25Index) -> None:
    assert index.search("", 5) == []
    assert index.search("the and of to", 5) == []  # stopwords only
    assert index.search("zyxwvut", 5) == []
    assert index.search("tariffs", 0) == []


def test_k_larger_than_the_corpus(index: BM25Index) -> None:
    hits = index.search("war debt tariffs moon", 1000)
    assert 0 < len(hits) <= len(index)
    assert len({(h.source.doc_id, h.source.start) for h in hits}) == len(hits)


def test_analyzer_stems_folds_and_splits_cjk() -> None:
    assert analyze("The Tariffs, CAFÉ!") == ["tariff", "cafe"]
    assert analyze("国债利息") == ["国债", "利息"]  # jieba words (more in retrieval/test_analysis.py)


def test_reopening_gives_identical_results(index: BM25Index, tmp_path: Path) -> None:
    queries = ["tariffs", "national debt", "移民", "moon rockets"]
    before = [index.search(q, 5) for q in queries]
    with BM25Index.open(tmp_path / "index") as reopened:
        assert [reopened.search(q, 5) for q in queries] == before
        assert reopened.fingerprint() == index.fingerprint()
        manifest = reopened.manifest
    assert manifest["chunks"] == len(index) and manifest["documents"] == len(CORPUS)
    assert manifest["chunking"] == {"chunk_tokens": 64, "chunk_overlap": 12}


def test_fingerprint_tracks_content_and_settings(corpus: Path, tmp_path: Path) -> None:
    def fingerprint(settings: RetrievalSettings, name: str) -> str:
        with BM25Index.build(iter_documents(corpus), tmp_path / name, settings) as built:
            return built.fingerprint()

    first = fingerprint(SETTINGS, "a")
    assert fingerprint(SETTINGS, "b") == first  # same content, same fingerprint
    assert fingerprint(RetrievalSettings(chunk_tokens=100, chunk_overlap=12), "c") != first
    (corpus / "debt.txt").write_text("Changed.", encoding="utf-8")
    assert fingerprint(SETTINGS, "d") != first


def failing_after(documents: Iterator[Document], count: int) -> Iterator[Document]:
    for number, document in enumerate(documents):
        if number == count:
            raise RuntimeError("crash in the middle of the build")
        yield document


def test_a_failed_build_leaves_the_old_index_intact(index: BM25Index, corpus: Path, tmp_path: Path) -> None:
    expected = index.search("tariffs", 5)
    fingerprint = index.fingerprint()
    with pytest.raises(RuntimeError, match="crash"):
        BM25Index.build(failing_after(iter_documents(corpus), 3), tmp_path / "index", SETTINGS)
    with BM25Index.open(tmp_path / "index") as survivor:
        assert survivor.search("tariffs", 5) == expected
        assert survivor.fingerprint() == fingerprint
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus", "index"]  # no temp dirs left


def test_a_crash_while_saving_leaves_the_old_index_intact(
    index: BM25Index, corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_save(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(bm25s.BM25, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        BM25Index.build(iter_documents(corpus), tmp_path / "index", SETTINGS)
    monkeypatch.undo()
    with BM25Index.open(tmp_path / "index") as survivor:
        assert top_doc(survivor, "tariffs") == "tariffs.md"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus", "index"]


def test_rebuild_replaces_an_existing_index(index: BM25Index, corpus: Path, tmp_path: Path) -> None:
    docs = [Document("new", "New", "/x", "Completely different text about volcanoes.")]
    with BM25Index.build(docs, tmp_path / "index", SETTINGS) as rebuilt:
        assert top_doc(rebuilt, "volcano") == "new"
        assert rebuilt.search("tariffs", 5) == []
    assert index.search("tariffs", 1)  # the handle opened before keeps working (POSIX)


def test_refuses_to_replace_a_folder_that_is_not_an_index(corpus: Path) -> None:
    with pytest.raises(KnowledgeBaseError, match="not empty"):
        BM25Index.build(iter_documents(corpus), corpus, SETTINGS)
    assert (corpus / "tariffs.md").is_file()


def test_corpus_without_searchable_text(tmp_path: Path) -> None:
    with pytest.raises(KnowledgeBaseError, match="no searchable text"):
        BM25Index.build([Document("a", "the", "/a", "the and of ...")], tmp_path / "i", SETTINGS)
    assert not (tmp_path / "i").exists()


def test_jsonl_corpus(tmp_path: Path) -> None:
    rows = [
        {"id": "p1", "contents": '"Volcano"\nA volcano erupts lava and ash.', "url": "https://w.org/Volcano"},
        {"id": "p2", "contents": '"Glacier"\nA glacier is a slow river of ice.'},
    ]
    file = tmp_path / "wiki.jsonl"
    file.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    with BM25Index.build(iter_documents(file), tmp_path / "index", SETTINGS) as built:
        (hit,) = built.search("lava", 5)
    assert (hit.source.doc_id, hit.source.title, hit.source.location) == (
        "p1",
        "Volcano",
        "https://w.org/Volcano",
    )


def test_open_errors_are_knowledge_base_errors(index: BM25Index, tmp_path: Path) -> None:
    with pytest.raises(KnowledgeBaseError, match="no search index"):
        BM25Index.open(tmp_path / "missing")
    folder = tmp_path / "index"
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))

    (folder / "manifest.json").write_text(json.dumps({**manifest, "version": 99}), encoding="utf-8")
    with pytest.raises(KnowledgeBaseError, match="format version 99"):
        BM25Index.open(folder)

    (folder / "manifest.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(KnowledgeBaseError, match="damaged"):
        BM25Index.open(folder)

    (folder / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    (folder / "bm25" / "vocab.index.json").unlink()
    with pytest.raises(KnowledgeBaseError, match="damaged"):
        BM25Index.open(folder)


def test_open_or_build_reuses_the_cache(
    corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    with open_or_build(corpus, cache, SETTINGS) as first:
        expected = first.search("tariffs", 3)
        path = first.path
    assert path.parent == cache and path.name.startswith("corpus-")

    def no_rebuild(*args: object, **kwargs: object) -> BM25Index:
        raise AssertionError("rebuilt an unchanged corpus")

    monkeypatch.setattr(BM25Index, "build", no_rebuild)
    with open_or_build(corpus, cache, SETTINGS) as second:
        assert second.search("tariffs", 3) == expected
        assert second.manifest["source"]["path"] == str(corpus.resolve())


def test_open_or_build_rebuilds_on_change(corpus: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    with open_or_build(corpus, cache, SETTINGS) as first:
        stamp, fingerprint = first.manifest["source"]["stamp"], first.fingerprint()
        assert first.search("volcano", 1) == []

    (corpus / "volcano.md").write_text("# Volcano\n\nA volcano erupts lava.", encoding="utf-8")
    with open_or_build(corpus, cache, SETTINGS) as second:
        assert top_doc(second, "volcano eruption") == "volcano.md"
        assert second.manifest["source"]["stamp"] != stamp
        assert second.fingerprint() != fingerprint
        fingerprint = second.fingerprint()

    with open_or_build(corpus, cache, RetrievalSettings(chunk_tokens=128, chunk_overlap=0)) as third:
        assert third.manifest["chunking"] == {"chunk_tokens": 128, "chunk_overlap": 0}
        assert third.fingerprint() != fingerprint
    assert len(list(cache.iterdir())) == 1  # one entry per corpus, replaced in place


def test_open_or_build_records_skipped_files(corpus: Path, tmp_path: Path) -> None:
    (corpus / "blob.txt").write_bytes(b"\x00\x01\x02")
    with open_or_build(corpus, tmp_path / "cache", SETTINGS) as built:
        assert len(built.skipped) == 1 and "blob.txt" in built.skipped[0]
