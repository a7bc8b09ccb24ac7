"""The on-disk knowledge base: real files of every format in, passages with pages out, transactionally."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from deepdraft.errors import KnowledgeBaseError
from deepdraft.retrieval.documents.values import Document, Failure
from deepdraft.retrieval.kb import adding, schema, store
from deepdraft.retrieval.kb.filters import DocumentMatcher, glob_regex
from deepdraft.retrieval.kb.lock import write_lock
from deepdraft.retrieval.kb.store import KnowledgeBase
from deepdraft.retrieval.kb.values import IngestNote
from deepdraft.settings import EmbeddingSettings, RetrievalSettings
from tests.support.documents import (
    CHINESE_MD_FACT,
    EXPECTED_FAILURES,
    HTML_URL,
    MARKDOWN_FACT,
    MARKDOWN_TITLE,
    PDF_PAGES,
    TEXT_LATIN1_FACT,
    make_document_folder,
)
from tests.support.openai_server import FakeOpenAIServer, hashed_embedding


class HashedEmbedder:
    """A deterministic stand-in for a sentence embedder: hashed bag of words (counts its calls)."""

    def __init__(self, name: str = "test:hashed-64", dimension: int = 64) -> None:
        self.name = name
        self.dimension = dimension
        self.embedded: list[str] = []

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        self.embedded.extend(texts)
        return np.asarray([hashed_embedding(text, self.dimension) for text in texts], dtype=np.float32)


@pytest.fixture(scope="module")
def documents(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One real file of every format plus the bad ones (written once; tests only read them)."""
    return make_document_folder(tmp_path_factory.mktemp("docs") / "docs")


@pytest.fixture
def small(tmp_path: Path) -> Path:
    folder = tmp_path / "small"
    folder.mkdir()
    (folder / "tariffs.md").write_text("# Tariffs\n\n## Reform\n\nThe tariff of abominations needs reform.\n")
    (folder / "trade.txt").write_text("Trade expansion lowers duties by negotiation.\n")
    (folder / "debt.md").write_text("# Debt\n\nThe public debt was paid down by the surplus.\n")
    return folder


def state(kb: KnowledgeBase) -> tuple[object, ...]:
    """Everything a user can observe of a KB's content."""
    info = kb.info()
    hits = [(p.source.doc_id, p.text) for p in kb.search("tariff reform debt trade", 10)]
    return kb.fingerprint(), info.documents, info.chunks, info.revision, hits


def chunk_ids(folder: Path) -> dict[str, list[int]]:
    db = sqlite3.connect(folder / schema.DB_NAME)
    try:
        rows = db.execute(
            "SELECT d.doc_id, c.id FROM chunks c JOIN documents d ON d.id = c.document"
        ).fetchall()
    finally:
        db.close()
    found: dict[str, list[int]] = {}
    for doc_id, chunk in rows:
        found.setdefault(doc_id, []).append(chunk)
    return found


# -- every format --------------------------------------------------------------------------------------


def test_every_format_is_ingested_and_searchable_with_pages(
    documents: dict[str, Path], tmp_path: Path
) -> None:
    notes: list[IngestNote] = []
    with KnowledgeBase.create(tmp_path / "kb") as kb:
        result = kb.add([documents["pdf"].parent], progress=notes.append)
        good = set(documents) - set(EXPECTED_FAILURES)
        assert result.documents_added == len(good)
        assert result.changed and result.revision == 1
        failed = {Path(f.location).name: f.reason for f in result.failures}
        for key, reason in EXPECTED_FAILURES.items():
            assert reason in failed[documents[key].name]
        assert sum(note.kind == "failed" for note in notes) == len(result.failures)
        assert result.summary().startswith(f"added {len(good)} documents (")

        top = kb.search("Vatnajokull outlet glaciers retreated", 3)[0]
        assert top.source.doc_id == "glacier-survey.pdf" and top.source.page == 2
        assert PDF_PAGES[1].split(".")[0] in " ".join(top.text.split())

        bees = kb.search("varroa mites sugar roll", 1)[0]
        assert MARKDOWN_FACT in bees.text and bees.source.headings == (MARKDOWN_TITLE, "Pests")
        assert kb.search("crêpes volonté", 1)[0].text.strip() == TEXT_LATIN1_FACT
        assert kb.search("Tariff of Abominations planters", 1)[0].source.location == HTML_URL
        chinese = kb.search("龙井茶 杭州", 1)[0]
        assert CHINESE_MD_FACT in chinese.text and chinese.source.doc_id == "中文/茶叶.md"

        info = kb.info()
        assert info.documents == len(good) and info.pages >= len(PDF_PAGES)
        assert info.formats["pdf"] == 2 and info.embedder is None and info.format_version == 1
        assert {f["location"] for f in info.failures} == {f.location for f in result.failures}


def test_bad_input_is_reported_per_file_and_nothing_is_added(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    big = tmp_path / "big.txt"
    big.write_text("word " * 400)
    with KnowledgeBase.create(tmp_path / "kb") as kb:
        result = kb.add([empty, tmp_path / "missing", big, tmp_path / "*.nothing"], max_bytes=1000)
        reasons = [f.reason for f in result.failures]
        assert len(reasons) == 4 and not result.changed and result.revision == 0
        assert any("no supported documents" in r for r in reasons)
        assert any("not found" in r for r in reasons)
        assert any("limit" in r for r in reasons)
        assert any("no files match" in r for r in reasons)
        assert kb.search("word", 5) == [] and kb.info().documents == 0
        assert result.summary() == "added 0 documents (0 chunks), 0 unchanged, 4 failed"


# -- incremental and transactional ----------------------------------------------------------------------


def test_re_adding_unchanged_files_changes_nothing_not_even_the_index(small: Path, tmp_path: Path) -> None:
    with KnowledgeBase.create(tmp_path / "kb") as kb:
        kb.add([small])
        before = state(kb)
        generation = (tmp_path / "kb" / "gen-1" / "manifest.json").stat()
        again = kb.add([small])
        assert not again.changed and again.documents_unchanged == 3 and again.documents_added == 0
        assert state(kb) == before
        assert (tmp_path / "kb" / "gen-1" / "manifest.json").stat().st_mtime_ns == generation.st_mtime_ns
        assert sorted(p.name for p in (tmp_path / "kb").glob("gen-*")) == ["gen-1"]


def test_a_changed_file_replaces_its_chunks_and_keeps_the_others(small: Path, tmp_path: Path) -> None:
    with KnowledgeBase.create(tmp_path / "kb") as kb:
        kb.add([small])
        ids = chunk_ids(tmp_path / "kb")
        fingerprint = kb.fingerprint()
        (small / "trade.txt").write_text("Free trade agreements replaced the old reciprocity treaties.\n")
        result = kb.add([small])
        assert (result.documents_updated, result.documents_unchanged, result.revision) == (1, 2, 2)
        assert kb.fingerprint() != fingerprint
        assert kb.search("negotiation", 5) == []
        assert kb.search("reciprocity treaties", 1)[0].source.doc_id == "trade.txt"
        after = chunk_ids(tmp_path / "kb")
        assert after["tariffs.md"] == ids["tariffs.md"] and after["debt.md"] == ids["debt.md"]
        assert min(after["trade.txt"]) > max(max(v) for v in ids.values())  # ids are never reused
        assert sorted(p.name for p in (tmp_path / "kb").glob("gen-*")) == ["gen-2"]


def test_a_failure_mid_ingest_leaves_the_kb_exactly_as_before(
    small: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with KnowledgeBase.create(tmp_path / "kb") as kb:
        kb.add([small / "debt.md"])
        before = state(kb)
        real = adding.read_documents
        calls = 0

        def failing(file: Path, **options: object) -> object:
            nonlocal calls
            calls += 1
            if calls == 3:
                raise RuntimeError("extractor crashed")
            return real(file, **options)  # type: ignore[arg-type]

        monkeypatch.setattr(adding, "read_documents", failing)
        (small / "debt.md").write_text("# Debt\n\nA changed text that must not become visible.\n")
        with pytest.raises(RuntimeError, match="extractor crashed"):
            kb.add([small])
        assert state(kb) == before
        monkeypatch.setattr(adding, "read_documents", real)
        with KnowledgeBase.open(tmp_path / "kb") as fresh:
            assert state(fresh) == before
        assert not [p for p in (tmp_path / "kb").iterdir() if p.name.startswith(".building")]
        result = kb.add([small])  # the interrupted add simply runs again
        assert (result.documents_added, result.documents_updated) == (2, 1)
        assert kb.search("changed text visible", 1)[0].source.doc_id == "debt.md"


def test_a_killed_process_mid_ingest_leaves_the_kb_exactly_as_before(small: Path, tmp_path: Path) -> None:
    folder = tmp_path / "kb"
    with KnowledgeBase.create(folder) as kb:
        kb.add([small / "debt.md"])
        before = state(kb)
    script = textwrap.dedent(
        f"""
        import os
        from pathlib import Path
        from deepdraft.retrieval.kb import adding, store

        real = adding.read_documents
        seen = []

        def dying(file, **options):
            seen.append(file)
            if len(seen) == 2:
                os._exit(9)  # no cleanup, no rollback: as if the power went
            return real(file, **options)

        adding.read_documents = dying
        store.KnowledgeBase.create(Path({str(folder)!r})).add([{str(small)!r}])
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 9, done.stderr
    with KnowledgeBase.open(folder) as kb:
        assert state(kb) == before
        assert kb.add([small]).documents_added == 2
        assert {p.source.doc_id for p in kb.search("tariff trade debt", 10)} == {
            "debt.md",
            "tariffs.md",
            "trade.txt",
        }


def test_a_crash_between_commit_and_pointer_flip_is_repaired_on_next_open(
    small: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "kb"
    with KnowledgeBase.create(folder) as kb:
        kb.add([small / "debt.md"])
        real_flip = store._flip_pointer

        def crash(*args: object) -> None:
            raise KeyboardInterrupt  # interrupted right after the commit

        monkeypatch.setattr(store, "_flip_pointer", crash)
        with pytest.raises(KeyboardInterrupt):
            kb.add([small])
        monkeypatch.setattr(store, "_flip_pointer", real_flip)
    assert (folder / "CURRENT").read_text().strip() == "gen-1"  # the commit happened, the flip did not
    shutil_generation = folder / "gen-2"
    assert shutil_generation.is_dir()
    with KnowledgeBase.open(folder) as kb:  # a reader that can take the lock finishes the job
        assert kb.revision == 2
        assert {p.source.doc_id for p in kb.search("tariff trade debt", 10)} == {
            "debt.md",
            "tariffs.md",
            "trade.txt",
        }
    assert (folder / "CURRENT").read_text().strip() == "gen-2"


def test_a_missing_generation_is_rebuilt_by_the_next_writer(small: Path, tmp_path: Path) -> None:
    folder = tmp_path / "kb"
    with KnowledgeBase.create(folder) as kb:
        kb.add([small])
        expected = state(kb)
    import shutil

    shutil.rmtree(folder / "gen-1")
    (folder / "CURRENT").unlink()
    # Nobody can repair while a writer holds the lock: the reader says so instead of guessing.
    with write_lock(folder, "kb"), pytest.raises(KnowledgeBaseError, match="being written"):
        KnowledgeBase.open(folder)
    with KnowledgeBase.open(folder) as kb:
        assert state(kb) == expected


def test_one_writer_at_a_time_and_readers_never_wait(small: Path, tmp_path: Path) -> None:
    folder = tmp_path / "kb"
    with KnowledgeBase.create(folder, label="work") as kb:
        kb.add([small / "debt.md"])
        with write_lock(folder, "work"):
            with pytest.raises(KnowledgeBaseError) as caught:
                kb.add([small])
            assert str(caught.value) == (
                f"knowledge base 'work' is being written by another process (pid {os.getpid()}); "
                "try again when it finishes"
            )
            assert kb.search("debt surplus", 1)[0].source.doc_id == "debt.md"  # reading goes on
        assert kb.add([small]).documents_added == 2


def test_a_reader_keeps_its_generation_until_it_refreshes(small: Path, tmp_path: Path) -> None:
    folder = tmp_path / "kb"
    with KnowledgeBase.create(folder) as writer, KnowledgeBase.create(folder) as reader:
        writer.add([small / "debt.md"])
        reader.refresh()
        fingerprint = reader.fingerprint()
        writer.add([small])
        assert not (folder / "gen-1").exists()  # deleted; the reader's memory maps stay valid
        assert reader.fingerprint() == fingerprint
        assert [p.source.doc_id for p in reader.search("surplus debt tariff", 5)] == ["debt.md"]
        reader.refresh()
        assert reader.fingerprint() == writer.fingerprint() != fingerprint
        assert {p.source.doc_id for p in reader.search("tariff reform", 5)} >= {"tariffs.md"}


def test_a_newer_format_is_refused_and_an_old_analyzer_is_migrated(small: Path, tmp_path: Path) -> None:
    folder = tmp_path / "kb"
    with KnowledgeBase.create(folder, label="work") as kb:
        kb.add([small])
        expected = [p.source.doc_id for p in kb.search("tariff reform", 3)]
    db = sqlite3.connect(folder / schema.DB_NAME)
    db.execute("UPDATE meta SET value = 'an-old-analyzer' WHERE key = 'analyzer'")
    db.execute("UPDATE chunks SET terms = ''")  # what an older analyzer left: useless terms
    db.commit()
    with KnowledgeBase.open(folder, label="work") as kb:
        result = kb.add([small])
        assert result.changed and result.documents_added == 0 and result.revision == 2
        assert [p.source.doc_id for p in kb.search("tariff reform", 3)] == expected
    db.execute("UPDATE meta SET value = '99' WHERE key = 'format_version'")
    db.commit()
    db.close()
    with pytest.raises(KnowledgeBaseError, match=r"format version 99, written by a newer deepdraft"):
        KnowledgeBase.open(folder, label="work")


# -- JSONL corpora -----------------------------------------------------------------------------------------


def test_a_jsonl_corpus_is_diffed_record_by_record(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.jsonl"
    records = [
        {"id": f"p{i}", "title": f"Passage {i}", "contents": f"Passage {i} tells about topic{i} and rivers."}
        for i in range(50)
    ]
    corpus.write_text("".join(json.dumps(r) + "\n" for r in records))
    with KnowledgeBase.create(tmp_path / "kb") as kb:
        assert kb.add([corpus]).documents_added == 50
        ids = chunk_ids(tmp_path / "kb")
        records[7]["contents"] = "Passage 7 now speaks of glaciers."
        del records[30]
        corpus.write_text("".join(json.dumps(r) + "\n" for r in records))
        result = kb.add([corpus])
        assert (result.documents_updated, result.documents_unchanged, result.documents_removed) == (1, 48, 1)
        after = chunk_ids(tmp_path / "kb")
        assert "p30" not in after and after["p8"] == ids["p8"] and after["p7"] != ids["p7"]
        assert kb.search("glaciers", 1)[0].source.doc_id == "p7"


# -- ranking ---------------------------------------------------------------------------------------------

RANKING_CORPUS = {
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


@pytest.fixture(scope="module")
def ranked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[KnowledgeBase, Path]]:
    """A BM25-only KB over `RANKING_CORPUS` with small chunks (built once; tests only search it)."""
    root = tmp_path_factory.mktemp("ranking")
    corpus = root / "corpus"
    for name, text in RANKING_CORPUS.items():
        (corpus / name).parent.mkdir(parents=True, exist_ok=True)
        (corpus / name).write_text(text, encoding="utf-8")
    settings = RetrievalSettings(chunk_tokens=64, chunk_overlap=12)
    with KnowledgeBase.create(root / "kb", settings) as kb:
        kb.add([corpus])
        yield kb, corpus


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
def test_the_right_document_comes_first(
    ranked: tuple[KnowledgeBase, Path], query: str, expected: str
) -> None:
    kb, _ = ranked
    assert kb.search(query, 3)[0].source.doc_id == expected


def test_passages_point_back_into_their_documents(ranked: tuple[KnowledgeBase, Path]) -> None:
    kb, corpus = ranked
    hits = kb.search("duties exports", 10)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    for hit in hits:
        source = hit.source
        text = (corpus / source.doc_id).read_text(encoding="utf-8")
        assert text[source.start : source.end] == hit.text
        assert source.location == str((corpus / source.doc_id).absolute())
        assert source.page is None and hit.score > 0
    assert hits[0].source.title == "Tariffs"


def test_queries_without_known_terms_find_nothing(ranked: tuple[KnowledgeBase, Path]) -> None:
    kb, _ = ranked
    assert kb.search("", 5) == []
    assert kb.search("the and of to", 5) == []  # stopwords only
    assert kb.search("zyxwvut", 5) == []
    assert kb.search("tariffs", 0) == []


def test_k_larger_than_the_kb(ranked: tuple[KnowledgeBase, Path]) -> None:
    kb, _ = ranked
    hits = kb.search("war debt tariffs moon", 1000)
    assert 0 < len(hits) <= kb.info().chunks
    assert len({(h.source.doc_id, h.source.start) for h in hits}) == len(hits)


# -- dense vectors ------------------------------------------------------------------------------------------


def test_dense_vectors_are_cached_and_the_embedder_is_recorded(small: Path, tmp_path: Path) -> None:
    embedder = HashedEmbedder()
    folder = tmp_path / "kb"
    with KnowledgeBase.create(folder, embedder=embedder) as kb:
        kb.add([small], embedder=embedder)
        assert len(embedder.embedded) == 3 and kb.info().embedder == "test:hashed-64"
        dense = kb.search("abominations reform", 1, mode="dense")[0]
        assert dense.source.doc_id == "tariffs.md"
        assert kb.search("abominations reform", 1, mode="hybrid")[0].source.doc_id == "tariffs.md"
        (small / "trade.txt").write_text("Trade treaties were renegotiated.\n")
        before = len(embedder.embedded)
        kb.add([small])  # the recorded embedder is reused; only the changed chunk is embedded
        assert embedder.embedded[before:] == ["trade\nTrade treaties were renegotiated."]
    with pytest.raises(KnowledgeBaseError, match=r"built with the embedder 'test:hashed-64'.*'other:model'"):
        KnowledgeBase.open(folder, embedder=HashedEmbedder("other:model"))
    with (
        KnowledgeBase.open(folder, embedder=HashedEmbedder()) as kb,
        pytest.raises(KnowledgeBaseError, match="cannot mix in vectors of 'other:model'"),
    ):
        kb.add([small], embedder=HashedEmbedder("other:model"))


def test_a_kb_without_vectors_refuses_dense_search_and_hybrid_is_bm25(small: Path, tmp_path: Path) -> None:
    with KnowledgeBase.create(tmp_path / "kb", label="plain") as kb:
        kb.add([small])
        assert kb.search("tariff", 3, mode="hybrid") == kb.search("tariff", 3, mode="bm25")
        with pytest.raises(KnowledgeBaseError, match="'plain' has no dense vectors"):
            kb.search("tariff", 3, mode="dense")


def test_an_embedding_endpoint_builds_the_vectors_and_is_rebuilt_on_open(small: Path, tmp_path: Path) -> None:
    with FakeOpenAIServer.for_embeddings(dimension=32) as server:
        settings = EmbeddingSettings(enabled=True, base_url=server.base_url, model="hashed")
        with KnowledgeBase.create(tmp_path / "kb") as kb:
            kb.add([small], embedding=settings)
            assert kb.info().dimension == 32 and server.base_url in str(kb.info().embedder)
        requests = len(server.embedding_requests)
        with KnowledgeBase.open(tmp_path / "kb", mode="dense") as kb:  # the embedder comes from the KB
            assert kb.search("public debt surplus", 1)[0].source.doc_id == "debt.md"
        assert len(server.embedding_requests) == requests + 1  # just the query


# -- filters and removal ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "value", "matches"),
    [
        ("*.pdf", "a.pdf", True),
        ("*.pdf", "docs/a.pdf", False),
        ("docs/**", "docs/x/y.md", True),
        ("**/y.md", "y.md", True),
        ("docs/*.md", "docs/x/y.md", False),
        ("report-[0-9].txt", "report-7.txt", True),
        ("report-[!0-9].txt", "report-7.txt", False),
    ],
)
def test_glob_patterns(pattern: str, value: str, matches: bool) -> None:
    assert (glob_regex(pattern).match(value) is not None) == matches


def test_filters_restrict_search_to_matching_documents(documents: dict[str, Path], tmp_path: Path) -> None:
    with KnowledgeBase.create(tmp_path / "kb") as kb:
        kb.add([documents["pdf"].parent])
        everything = kb.fingerprint()
    assert DocumentMatcher(["*.pdf"]).matches("x", str(documents["pdf"]))
    with KnowledgeBase.open(tmp_path / "kb", only=["*.pdf"]) as kb:
        hits = kb.search("the", 20) + kb.search("glacier tariff varroa", 20)
        assert hits and {Path(p.source.doc_id).suffix for p in hits} == {".pdf"}
        assert kb.fingerprint() != everything
        assert kb.search("varroa", 5, only=[]) != []  # a call may widen the view
    with KnowledgeBase.open(tmp_path / "kb", exclude=["中文/**", "**/*.md"]) as kb:
        assert kb.search("龙井茶", 5) == [] and kb.search("varroa mites", 5) == []
    with pytest.raises(KnowledgeBaseError, match=r"no document .* is left by --only \*\.odt"):
        KnowledgeBase.open(tmp_path / "kb", only=["*.odt"])


def test_remove_documents_by_id_path_or_glob(small: Path, tmp_path: Path) -> None:
    with KnowledgeBase.create(tmp_path / "kb") as kb:
        kb.add([small])
        with pytest.raises(KnowledgeBaseError, match=r"no document matches 'nope\.md'; nothing was removed"):
            kb.remove(["trade.txt", "nope.md"])
        assert kb.info().documents == 3
        assert kb.remove(["trade.txt"]) == ["trade.txt"]
        assert kb.remove([str(small / "debt.md")]) == ["debt.md"]
        assert kb.remove(["*.md"]) == ["tariffs.md"]
        assert kb.info().documents == 0 and kb.search("tariff", 5) == []
        assert kb.add([small]).documents_added == 3  # removed files are new again


def test_doc_ids_stay_unique_across_folders(tmp_path: Path) -> None:
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "notes.md").write_text(f"# Notes {name}\n\nShared name, text {name}.\n")
    with KnowledgeBase.create(tmp_path / "kb") as kb:
        kb.add([tmp_path / "a", tmp_path / "b"])
        ids = sorted(doc["doc_id"] for doc in kb.documents())
        assert ids == [f"{tmp_path / 'b' / 'notes.md'}#notes.md", "notes.md"]


def test_a_file_that_breaks_keeps_its_previous_version(small: Path, tmp_path: Path) -> None:
    with KnowledgeBase.create(tmp_path / "kb") as kb:
        kb.add([small])
        (small / "trade.txt").write_bytes(b"\x00\x01\x02binary now")
        result = kb.add([small])
        assert not result.changed and [Path(f.location).name for f in result.failures] == ["trade.txt"]
        assert kb.search("negotiation", 1)[0].source.doc_id == "trade.txt"
        assert kb.info().failures == [
            {"location": str(small / "trade.txt"), "reason": result.failures[0].reason}
        ]


def test_documents_the_reader_yields_as_failures_are_reported(
    small: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def partly(file: Path, **options: object) -> object:
        yield Failure(f"{file}:2", "not a JSON object")
        yield Document(doc_id=file.name, title="T", location=str(file), text="Some rivers and lakes.")

    monkeypatch.setattr(adding, "read_documents", partly)
    with KnowledgeBase.create(tmp_path / "kb") as kb:
        result = kb.add([small / "debt.md"])
        assert result.documents_added == 1 and [f.reason for f in result.failures] == ["not a JSON object"]
