"""The KB's behaviour on both engines: the embedded store and Postgres + pgvector (a real server).

Each test runs once per engine through the same named-KB API the CLI, runner and server use, so what
a user observes — passages, pages, filters, incremental adds, crashes, concurrent writers — is the
same whichever engine holds the KB.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pytest

from deepdraft.errors import KnowledgeBaseError
from deepdraft.retrieval.kb import adding, names
from deepdraft.retrieval.kb.postgres import ingest as pg_ingest
from deepdraft.retrieval.kb.store import KnowledgeBase
from deepdraft.settings import RetrievalSettings
from tests.support.documents import PDF_PAGES, make_document_folder
from tests.support.openai_server import hashed_embedding

Engine = Literal["embedded", "postgres"]
MakeKB = Callable[..., KnowledgeBase]


class HashedEmbedder:
    """A deterministic stand-in for a sentence embedder (hashed bag of words); counts what it embeds."""

    def __init__(self, name: str = "test:hashed-64", dimension: int = 64) -> None:
        self.name, self.dimension = name, dimension
        self.embedded: list[str] = []

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        self.embedded.extend(texts)
        return np.asarray([hashed_embedding(text, self.dimension) for text in texts], dtype=np.float32)


@pytest.fixture(params=["embedded", "postgres"])
def engine(request: pytest.FixtureRequest) -> Engine:
    value: Engine = request.param
    return value


@pytest.fixture
def make_kb(engine: Engine, request: pytest.FixtureRequest, tmp_path: Path) -> MakeKB:
    """Creates (or opens) a named KB on the engine under test."""
    dsn = request.getfixturevalue("postgres_dsn") if engine == "postgres" else None

    def make(name: str = "team", **options: Any) -> KnowledgeBase:
        return names.create_kb(name, RetrievalSettings(), engine=engine, dsn=dsn, **options)

    return make


@pytest.fixture
def small(tmp_path: Path) -> Path:
    folder = tmp_path / "small"
    folder.mkdir()
    (folder / "tariffs.md").write_text("# Tariffs\n\n## Reform\n\nThe tariff of abominations needs reform.\n")
    (folder / "trade.txt").write_text("Trade expansion lowers duties by negotiation.\n")
    (folder / "debt.md").write_text("# Debt\n\nThe public debt was paid down by the surplus.\n")
    return folder


def observed(kb: KnowledgeBase) -> tuple[object, ...]:
    """Everything a user can observe of a KB's content."""
    info = kb.info()
    hits = [(p.source.doc_id, p.text) for p in kb.search("tariff reform debt trade", 10)]
    docs = [(d["doc_id"], d["content_hash"], d["chunks"]) for d in kb.documents()]
    return kb.fingerprint(), info.documents, info.chunks, info.revision, hits, docs


def test_added_documents_are_found_with_their_pages_and_headings(make_kb: MakeKB, tmp_path: Path) -> None:
    documents = make_document_folder(tmp_path / "docs")
    with make_kb() as kb:
        result = kb.add([documents["pdf"].parent])
        assert result.changed and result.documents_added >= 5 and result.revision == 1
        top = kb.search(PDF_PAGES[1], 1)[0]
        assert top.source.doc_id == "glacier-survey.pdf" and top.source.page == 2
        heading = kb.search("abominations", 3, mode="bm25")
        assert heading == [] or all(p.text for p in heading)
        info = kb.info()
        assert info.formats["pdf"] >= 1 and info.embedder is None and info.revision == 1


def test_re_adding_unchanged_files_changes_nothing(make_kb: MakeKB, small: Path) -> None:
    with make_kb() as kb:
        kb.add([small])
        before = observed(kb)
        again = kb.add([small])
        assert not again.changed and again.documents_unchanged == 3 and again.documents_added == 0
        assert observed(kb) == before


def test_a_changed_file_replaces_only_its_own_chunks(make_kb: MakeKB, small: Path) -> None:
    with make_kb() as kb:
        kb.add([small])
        hashes = {d["doc_id"]: d["content_hash"] for d in kb.documents()}
        fingerprint = kb.fingerprint()
        (small / "trade.txt").write_text("Free trade agreements replaced the old reciprocity treaties.\n")
        result = kb.add([small])
        assert (result.documents_updated, result.documents_unchanged, result.revision) == (1, 2, 2)
        assert kb.fingerprint() != fingerprint
        assert kb.search("negotiation", 5) == []
        assert kb.search("reciprocity treaties", 1)[0].source.doc_id == "trade.txt"
        after = {d["doc_id"]: d["content_hash"] for d in kb.documents()}
        assert after["tariffs.md"] == hashes["tariffs.md"] and after["trade.txt"] != hashes["trade.txt"]


def test_filters_restrict_search_and_a_filter_leaving_nothing_is_refused(
    make_kb: MakeKB, small: Path
) -> None:
    with make_kb() as kb:
        kb.add([small])
        assert {p.source.doc_id for p in kb.search("tariff debt trade", 10, only=["*.md"])} == {
            "tariffs.md",
            "debt.md",
        }
        assert {p.source.doc_id for p in kb.search("tariff debt trade", 10, exclude=["*.md"])} == {
            "trade.txt"
        }
    with names.open_kb("team", only=["debt.*"]) as filtered:
        assert [p.source.doc_id for p in filtered.search("tariff debt", 5)] == ["debt.md"]
    with pytest.raises(KnowledgeBaseError, match="no document of knowledge base 'team' is left by --only"):
        names.open_kb("team", only=["*.pdf"])


def test_remove_by_glob_and_an_unmatched_selector_removes_nothing(make_kb: MakeKB, small: Path) -> None:
    with make_kb() as kb:
        kb.add([small])
        with pytest.raises(KnowledgeBaseError, match=r"no document matches 'nothing\.md'"):
            kb.remove(["*.txt", "nothing.md"])
        assert kb.document_count() == 3
        assert kb.remove(["*.txt"]) == ["trade.txt"]
        assert kb.document_count() == 2 and kb.search("negotiation", 3) == []
        assert kb.info().revision == 2


def test_a_crash_mid_ingest_leaves_the_kb_exactly_as_before(
    make_kb: MakeKB, small: Path, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    module: Any = adding if engine == "embedded" else pg_ingest
    with make_kb() as kb:
        kb.add([small / "debt.md"])
        before = observed(kb)
        real = module.read_documents
        calls = 0

        def failing(file: Path, **options: object) -> object:
            nonlocal calls
            calls += 1
            if calls == 3:
                raise RuntimeError("extractor crashed")
            return real(file, **options)

        monkeypatch.setattr(module, "read_documents", failing)
        (small / "debt.md").write_text("# Debt\n\nA changed text that must not become visible.\n")
        with pytest.raises(RuntimeError, match="extractor crashed"):
            kb.add([small])
        assert observed(kb) == before
        monkeypatch.setattr(module, "read_documents", real)
    with names.open_kb("team") as fresh:
        assert observed(fresh) == before
        result = fresh.add([small])  # the interrupted add simply runs again
        assert (result.documents_added, result.documents_updated) == (2, 1)
        assert fresh.search("changed text visible", 1)[0].source.doc_id == "debt.md"


def test_concurrent_writers_each_land_every_document(make_kb: MakeKB, tmp_path: Path) -> None:
    folders = []
    for writer in range(3):
        folder = tmp_path / f"writer-{writer}"
        folder.mkdir()
        for n in range(4):
            (folder / f"w{writer}-{n}.md").write_text(
                f"# Note {writer}-{n}\n\nLedger entry zebra{writer}x{n}.\n"
            )
        folders.append(folder)
    make_kb().close()
    start = threading.Barrier(len(folders))
    errors: list[BaseException] = []

    def write(folder: Path) -> None:
        try:
            with names.open_kb("team") as kb:
                start.wait()
                kb.add([folder], wait=True)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(folder,)) for folder in folders]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    with names.open_kb("team") as kb:
        assert kb.document_count() == 12 and kb.info().revision == 3
        assert kb.search("zebra2x3", 1)[0].source.doc_id == "w2-3.md"


def test_chinese_is_segmented_by_the_same_analyzer(make_kb: MakeKB, tmp_path: Path) -> None:
    folder = tmp_path / "zh"
    folder.mkdir()
    (folder / "debt.md").write_text("# 国债\n\n国家债务必须按期偿还，财政部负责管理。\n", encoding="utf-8")
    (folder / "trade.md").write_text("# 贸易\n\n关税政策影响进出口贸易。\n", encoding="utf-8")
    with make_kb() as kb:
        kb.add([folder])
        assert kb.search("债务偿还", 1)[0].source.doc_id == "debt.md"
        assert kb.search("关税", 1)[0].source.doc_id == "trade.md"


def test_dense_and_hybrid_search_with_recorded_vectors(make_kb: MakeKB, small: Path) -> None:
    embedder = HashedEmbedder()
    with make_kb(embedder=embedder) as kb:
        kb.add([small], embedder=embedder)
        assert len(embedder.embedded) == 3 and kb.info().embedder == "test:hashed-64"
        assert kb.search("abominations reform", 1, mode="dense")[0].source.doc_id == "tariffs.md"
        hybrid = kb.search("abominations reform", 3, mode="hybrid")
        assert hybrid[0].source.doc_id == "tariffs.md" and len(hybrid) == 3
        assert [p.source.doc_id for p in kb.search("abominations", 3, mode="dense", only=["*.txt"])] == [
            "trade.txt"
        ]
        (small / "trade.txt").write_text("Trade treaties were renegotiated.\n")
        before = len(embedder.embedded)
        kb.add([small])  # only the changed chunk is embedded again
        assert embedder.embedded[before:] == ["trade\nTrade treaties were renegotiated."]
        with pytest.raises(KnowledgeBaseError, match="cannot mix in vectors of 'other:model'"):
            kb.add([small], embedder=HashedEmbedder("other:model"))


def test_named_kbs_are_listed_opened_and_removed(make_kb: MakeKB, small: Path, engine: Engine) -> None:
    with make_kb("alpha") as kb:
        kb.add([small])
    assert names.list_kbs() == ["alpha"] and names.kb_exists("alpha") and names.kb_has_documents("alpha")
    assert names.kb_engine("alpha") == engine
    with names.open_kb("alpha") as kb:
        assert kb.search("abominations", 1)[0].source.doc_id == "tariffs.md"
    names.remove_kb("alpha")
    assert names.list_kbs() == [] and not names.kb_exists("alpha")
    with pytest.raises(KnowledgeBaseError, match="no knowledge base named 'alpha'"):
        names.open_kb("alpha")


def test_a_writer_killed_mid_ingest_leaves_the_kb_as_before_and_blocks_no_one(
    make_kb: MakeKB, small: Path, engine: Engine, tmp_path: Path
) -> None:
    with make_kb() as kb:
        kb.add([small / "debt.md"])
        before = observed(kb)
    dsn = names._link_dsn(names._link(names.kb_dir("team")) or {}) if engine == "postgres" else None
    module = (
        "deepdraft.retrieval.kb.adding" if engine == "embedded" else "deepdraft.retrieval.kb.postgres.ingest"
    )
    script = textwrap.dedent(
        f"""
        import os, signal, sys
        import {module} as module
        from deepdraft.retrieval.kb import names
        real, calls = module.read_documents, []
        def dying(file, **options):
            calls.append(file)
            if len(calls) == 2:
                os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, no rollback: the process just ends
            return real(file, **options)
        module.read_documents = dying
        if {dsn!r}:
            names.use_dsn({dsn!r})
        with names.open_kb("team") as kb:
            kb.add([{str(small)!r}])
        """
    )
    (small / "debt.md").write_text("# Debt\n\nA changed text that must not become visible.\n")
    died = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert died.returncode == -signal.SIGKILL, died.stderr
    with names.open_kb("team") as kb:
        assert observed(kb) == before
        result = kb.add([small])  # the dead writer's lock is gone with it
        assert (result.documents_added, result.documents_updated) == (2, 1)


def test_query_syntax_characters_are_only_words(make_kb: MakeKB, small: Path) -> None:
    with make_kb() as kb:
        kb.add([small])
        hits = kb.search("tariff' | !reform & (abominations) :* \\ '' --", 3)
        assert hits and hits[0].source.doc_id == "tariffs.md"
        assert kb.search("' | & ! :*", 3) == []


class BlockingEmbedder(HashedEmbedder):
    """Stops inside the writer's transaction (at its first batch) until the test lets it go on."""

    def __init__(self) -> None:
        super().__init__()
        self.inside = threading.Event()
        self.release = threading.Event()

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        self.inside.set()
        assert self.release.wait(timeout=120), "the test never let the writer go on"
        return super().embed(texts)


def test_readers_never_wait_for_a_writer_that_gives_the_kb_vectors(make_kb: MakeKB, small: Path) -> None:
    with make_kb() as kb:
        kb.add([small / "tariffs.md"])
    embedder = BlockingEmbedder()
    errors: list[BaseException] = []

    def write() -> None:
        try:
            with names.open_kb("team") as writer:
                writer.add([small], embedder=embedder, wait=True)
        except BaseException as exc:
            errors.append(exc)

    writer = threading.Thread(target=write)
    writer.start()
    try:
        assert embedder.inside.wait(timeout=120)  # the writer is mid-transaction now
        found: list[str] = []
        reader = threading.Thread(
            target=lambda: found.extend(
                p.source.doc_id for p in names.open_kb("team").search("abominations", 3)
            )
        )
        reader.start()
        reader.join(timeout=60)  # a guard against a hang, not a timing: the writer is stopped
        assert not reader.is_alive(), "a search waited for the writer"
        assert found == ["tariffs.md"]
    finally:
        embedder.release.set()
        writer.join()
    assert errors == []
    with names.open_kb("team", embedder=HashedEmbedder()) as kb:
        assert kb.document_count() == 3 and kb.info().embedder == "test:hashed-64"
        assert kb.search("abominations", 1, mode="dense")[0].source.doc_id == "tariffs.md"
