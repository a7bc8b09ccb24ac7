"""The Python API: `deepdraft.research` / `aresearch` drive the same engine as the CLI."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

import deepdraft
from deepdraft.events import Event, NodeWritten, RunFinished
from tests.support.openai_server import FakeOpenAIServer
from tests.support.scenario import SOTU_LIKE, ScenarioModel, WordOverlapRetriever, as_responder


def test_public_names_are_exactly_all() -> None:
    public = {name for name in dir(deepdraft) if not name.startswith("_")}
    modules = {name for name in public if type(getattr(deepdraft, name)).__name__ == "module"}
    assert public - modules == set(deepdraft.__all__) - {"__version__"}
    for name in deepdraft.__all__:
        assert getattr(deepdraft, name) is not None


def test_research_with_objects(tmp_path: Path) -> None:
    events: list[Event] = []
    report = deepdraft.research(
        "How did presidents argue about tariffs?",
        kb=WordOverlapRetriever(SOTU_LIKE),
        llm=deepdraft.FunctionLLM(ScenarioModel(expansions=1)),
        output=tmp_path / "out.md",
        on_event=events.append,
    )
    assert isinstance(report, deepdraft.Report)
    assert report.path == tmp_path / "out.md" and report.path.read_text(encoding="utf-8") == report.markdown
    assert report.title == "A report on tariffs"
    assert [n.position for n in report.outline.walk()][:3] == ["section-1", "section-1.1", "section-1.2"]
    assert report.references and report.references[0].number == 1
    assert sum(isinstance(e, NodeWritten) for e in events) == 5
    assert isinstance(events[-1], RunFinished)
    assert report.manifest["model"] == "function" and report.manifest["steps"] == 14
    assert report.manifest["settings"]["llm"]["api_key"] is None


def test_research_over_http_and_a_folder(corpus_dir: Path) -> None:
    with FakeOpenAIServer(as_responder(ScenarioModel(expansions=0))) as server:
        report = deepdraft.research(
            "How did presidents argue about tariffs?",
            kb=corpus_dir,
            base_url=server.base_url,
            api_key="sk-test",
        )
        assert all(h.get("authorization") == "Bearer sk-test" for h in server.headers)
    assert "## References" in report.markdown and "address-" in report.markdown
    assert report.manifest["settings"]["llm"]["api_key"] == "***"
    assert report.manifest["model"] == "fake-model"


def test_aresearch_runs_in_a_worker_thread() -> None:
    async def main() -> deepdraft.Report:
        return await deepdraft.aresearch(
            "How did presidents argue about tariffs?",
            kb=WordOverlapRetriever(SOTU_LIKE),
            llm=deepdraft.FunctionLLM(ScenarioModel(expansions=0)),
        )

    report = asyncio.run(main())
    assert report.stop_reason == "the model judged the report complete"


def test_resume_through_the_api_continues_a_crashed_run() -> None:
    calls = 0

    def crash_on_fifth(request: deepdraft.ChatRequest) -> str:
        nonlocal calls
        calls += 1
        if calls == 5:
            raise KeyboardInterrupt
        return ScenarioModel(expansions=0)(request)

    retriever = WordOverlapRetriever(SOTU_LIKE)
    with pytest.raises(KeyboardInterrupt):
        deepdraft.research("Tariffs?", kb=retriever, llm=deepdraft.FunctionLLM(crash_on_fifth))
    from deepdraft.run.runner import open_journal

    with open_journal() as journal:
        (run,) = journal.list_runs()
    assert run.status == "interrupted" and run.steps == 4
    report = deepdraft.resume(
        run.id, llm=deepdraft.FunctionLLM(ScenarioModel(expansions=0)), retriever=retriever
    )
    assert report.manifest["steps"] == 9


def test_no_llm_and_no_kb_are_clear_errors(corpus_dir: Path) -> None:
    with pytest.raises(deepdraft.ConfigError, match="no LLM configured"):
        deepdraft.research("q?", kb=corpus_dir)
    with pytest.raises(
        deepdraft.KnowledgeBaseError, match="demo knowledge base is not set up yet; run: deepdraft setup"
    ):
        deepdraft.research("q?", llm=deepdraft.ScriptedLLM())
    with pytest.raises(deepdraft.UserError, match="empty"):
        deepdraft.research("   ", kb=corpus_dir, llm=deepdraft.ScriptedLLM())
