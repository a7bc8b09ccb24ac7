"""From a user's documents to a cited report: `kb add` real files, then `deepdraft research` on them."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from deepdraft.config import load_settings
from deepdraft.errors import KnowledgeBaseError
from deepdraft.retrieval.kb import snapshot
from deepdraft.retrieval.kb.names import create_kb
from deepdraft.run import wiring
from tests.support.documents import PDF_TITLE, make_document_folder
from tests.support.openai_server import FakeOpenAIServer
from tests.support.scenario import ScenarioModel, as_responder

QUESTION = "How fast are the Vatnajokull glaciers retreating?"


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "deepdraft", *args],
        capture_output=True,
        text=True,
        timeout=180,
        env=dict(os.environ, COLUMNS="200"),
        stdin=subprocess.DEVNULL,
    )


@pytest.fixture
def documents(tmp_path: Path) -> Path:
    folder = tmp_path / "docs"
    make_document_folder(folder)
    return folder


def test_research_on_the_default_kb_cites_documents_and_pages(documents: Path, tmp_path: Path) -> None:
    added = cli("kb", "add", str(documents))  # no --kb: the KB "default"
    assert added.returncode == 0, added.stderr
    output = tmp_path / "report.md"
    model = ScenarioModel(expansions=0, topic="Vatnajokull outlet glaciers retreated")
    with FakeOpenAIServer(as_responder(model)) as server:
        result = cli("research", QUESTION, "--base-url", server.base_url, "--model", "fake",
                     "--no-verify", "--no-synthesis", "--output", str(output))  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "using knowledge base 'default'" in result.stdout
    report = output.read_text(encoding="utf-8")
    body, _, references = report.partition("References")
    assert references, report
    entry = next(line for line in references.splitlines() if PDF_TITLE in line)
    number = re.match(r"\s*\[(\d+)\]", entry)
    assert number is not None and "glacier-survey.pdf" in entry
    assert re.search(r", pp?\. [\d, ]*\b2\b", entry)  # page 2 holds the passage searched for
    assert re.search(rf"\[{number.group(1)}, pp?\. [\d, ]*\b2\b\]", body)  # so does the citation


def test_without_documents_in_default_the_run_says_it_uses_demo(tmp_path: Path) -> None:
    result = cli("research", "q?", "--base-url", "http://127.0.0.1:9/v1", "--no-verify")
    assert result.stdout.startswith(
        "using knowledge base 'demo' (no documents in 'default' yet; add some with: deepdraft kb add PATH)"
    )
    assert result.returncode == 2 and "deepdraft setup" in result.stderr  # the demo is not set up here


def test_filters_and_search_mode_come_from_the_settings_and_survive_resume(documents: Path) -> None:
    with create_kb("work") as kb:
        kb.add([documents])
    settings = load_settings(flags={"retrieval": {"only": ["*.pdf", "*.docx"], "mode": "bm25"}})
    retriever, ref = wiring.resolve_kb("work", settings)
    hits = retriever.search("glaciers harbour container traffic quay", 20)
    assert ref == "kb:work" and {Path(p.source.doc_id).suffix for p in hits} == {".pdf", ".docx"}
    # What resume does: the recorded reference and the recorded settings give the same view.
    again, _ = wiring.resolve_kb(ref, settings)
    assert again.fingerprint() == retriever.fingerprint()
    unfiltered, _ = wiring.resolve_kb(ref, load_settings())
    assert unfiltered.fingerprint() != retriever.fingerprint()
    nothing = load_settings(flags={"retrieval": {"exclude": ["**"]}})
    with pytest.raises(KnowledgeBaseError, match="no document of knowledge base 'work' is left by --exclude"):
        wiring.resolve_kb("work", nothing)


def test_a_corpus_not_on_this_machine_is_searched_in_a_copy_of_its_index_under_its_own_path(
    corpus_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a Ray worker does with a corpus the driver indexed (see `run.cluster`)."""
    monkeypatch.setattr(wiring, "_index_copies", {})
    settings = load_settings()
    original, ref = wiring.resolve_kb(str(corpus_dir), settings)
    data = snapshot.take(original.folder, ref)  # type: ignore[attr-defined]  # a KnowledgeBase
    query = "tariffs on imported steel"
    expected = [(p.source.doc_id, p.text) for p in original.search(query, 5)]
    corpus_dir.rename(tmp_path / "not-here")
    with pytest.raises(KnowledgeBaseError, match="no file or folder"):
        wiring.resolve_kb(ref, settings)
    snapshot.restore(data, tmp_path / "copy")
    wiring.use_index_copy(ref, tmp_path / "copy")
    copy, copy_ref = wiring.resolve_kb(ref, settings)
    assert copy_ref == ref  # recorded as the corpus, so references and resume name the documents
    assert copy.fingerprint() == original.fingerprint()
    assert [(p.source.doc_id, p.text) for p in copy.search(query, 5)] == expected


def test_a_folder_is_indexed_on_the_fly_and_a_name_wins_over_a_path(
    documents: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = load_settings()
    retriever, ref = wiring.resolve_kb(str(documents), settings)
    assert ref == str(documents.resolve())
    top = retriever.search("Vatnajokull outlet glaciers", 1)[0]
    assert top.source.doc_id == "glacier-survey.pdf" and top.source.page == 2
    (documents / "glacier-survey.pdf").unlink()  # the on-the-fly KB follows the folder
    retriever, _ = wiring.resolve_kb(str(documents), settings)
    assert all(p.source.doc_id != "glacier-survey.pdf" for p in retriever.search("glaciers", 10))

    monkeypatch.chdir(documents.parent)
    with create_kb("docs") as kb:  # a KB named like the folder in the current directory
        kb.add([documents / "beekeeping.md"])
    retriever, ref = wiring.resolve_kb("docs", settings)
    assert ref == "kb:docs" and {p.source.doc_id for p in retriever.search("varroa mites glaciers", 50)} == {
        "beekeeping.md"
    }
