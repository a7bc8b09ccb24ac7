"""The MCP server, driven by the SDK's own client over stdio: `python -m deepdraft mcp` in a subprocess,
its LLM the scripted research model behind a real OpenAI-compatible server on loopback."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import anyio
import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.shared.exceptions import MCPError

from deepdraft.mcp import server as mcp_server
from deepdraft.ports import LLM
from deepdraft.run import runner
from deepdraft.run.runs import Runs
from tests.server.conftest import LiveServer, scenario_llm, server_settings
from tests.support.openai_server import FakeOpenAIServer
from tests.support.scenario import ScenarioModel, as_responder

QUESTION = "How did presidents argue about tariffs?"


def server_parameters(base_url: str) -> StdioServerParameters:
    return StdioServerParameters(
        command=sys.executable,
        args=["-m", "deepdraft", "mcp", "--base-url", base_url, "--model", "fake-model"],
        env={
            "DEEPDRAFT_HOME": os.environ["DEEPDRAFT_HOME"],
            "DEEPDRAFT_MODELS": os.environ["DEEPDRAFT_MODELS"],
            "HF_HUB_OFFLINE": "1",
        },
        cwd=str(Path(__file__).resolve().parents[2]),
    )


@pytest.mark.slow  # a subprocess that imports the MCP SDK: several seconds on a small machine
def test_deep_research_over_stdio_reports_progress_and_returns_the_report(corpus_dir: Path) -> None:
    progress: list[tuple[float, float | None, str | None]] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append((value, total, message))

    async def session(base_url: str) -> None:
        async with Client(server_parameters(base_url), read_timeout_seconds=120) as client:
            tools = {tool.name: tool for tool in (await client.list_tools()).tools}
            assert set(tools) == {
                "deep_research",
                "search_kb",
                "list_runs",
                "get_report",
                "deepen_section",
                "rewrite_section",
                "recheck_section",
                "refresh_report",
                "add_source",
                "ask_run",
            }
            assert {"question", "kb", "depth"} <= set(tools["deep_research"].input_schema["properties"])

            result = await client.call_tool(
                "deep_research",
                {"question": QUESTION, "kb": str(corpus_dir), "depth": "standard"},
                progress_callback=on_progress,
            )
            assert not result.is_error, result.content
            report = result.structured_content
            assert report is not None
            run_id = report["run_id"]
            assert report["title"] == "A report on tariffs"
            assert "## References" in report["markdown"] and "Part early" in report["markdown"]

            listed = await client.call_tool("list_runs", {})
            runs = listed.structured_content["result"]  # type: ignore[index]
            assert [(r["id"], r["status"], r["has_report"]) for r in runs] == [(run_id, "finished", True)]

            fetched = await client.call_tool("get_report", {"run_id": run_id, "format": "md"})
            assert fetched.structured_content == {"result": report["markdown"]}
            resource = await client.read_resource(f"deepdraft://runs/{run_id}/report")
            assert resource.contents[0].text == report["markdown"]  # type: ignore[union-attr]

            missing = await client.call_tool("get_report", {"run_id": "no-such-run"})
            assert missing.is_error and "no run with id" in missing.content[0].text  # type: ignore[union-attr]
            no_kb = await client.call_tool("search_kb", {"kb": "nope", "query": "tariffs"})
            assert no_kb.is_error and "no knowledge base named 'nope'" in no_kb.content[0].text  # type: ignore[union-attr]

    with FakeOpenAIServer(as_responder(ScenarioModel(expansions=1))) as llm:
        anyio.run(session, llm.base_url)

    # One notification per finished action, in order, each naming the step it reports.
    with runner.open_journal() as journal:
        (record,) = journal.list_runs()
    assert record.status == "finished"
    assert [value for value, _, _ in progress] == list(range(1, record.steps + 1))
    assert all(total and total >= record.steps for _, total, _ in progress)
    assert progress[0][2] == "step 1: search outline"


def test_the_http_transport_serves_sdk_clients_and_refuses_pages_and_foreign_names() -> None:
    # The SDK's own check covers 127.0.0.1 but not another loopback address, and lets a page on any
    # localhost port post to it; deepdraft's rules apply in front of it, wherever it is bound.
    for host in ("127.0.0.1", "127.0.0.2"):
        app = mcp_server.http_app(server_settings(), host=host, llm_factory=lambda _: scenario_llm())
        with LiveServer(app, host=host) as live:

            async def session(url: str) -> None:
                async with Client(url) as client:
                    tools = {tool.name for tool in (await client.list_tools()).tools}
                    assert "deep_research" in tools

            anyio.run(session, f"{live.url}/mcp")
            port = live.server.config.port
            initialize = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
            accept = {"Accept": "application/json, text/event-stream"}
            with live.client() as client:
                for origin in ("http://localhost:3000", "http://evil.example"):
                    refused = client.post("/mcp", json=initialize, headers={**accept, "Origin": origin})
                    assert refused.status_code == 403, (host, origin, refused.text)
                    assert "cross-site" in refused.json()["detail"]
                foreign = client.post(
                    "/mcp", json=initialize, headers={**accept, "Host": f"attacker.example:{port}"}
                )
                assert foreign.status_code == 400, (host, foreign.text)


# ---- arguments (issue 18: k=-1 was quietly clamped to 1) ---------------------------------------------

BAD_ARGUMENTS = [
    pytest.param(
        "search_kb",
        {"kb": "notes", "query": "tariffs", "k": -1},
        "k: input should be greater than or equal to 1",
        id="search_kb-k-negative",
    ),
    pytest.param(
        "search_kb",
        {"kb": "notes", "query": "tariffs", "k": 0},
        "k: input should be greater than or equal to 1",
        id="search_kb-k-zero",
    ),
    pytest.param(
        "search_kb",
        {"kb": "notes", "query": "tariffs", "k": 51},
        "k: input should be less than or equal to 50",
        id="search_kb-k-too-large",
    ),
    pytest.param(
        "search_kb",
        {"kb": "notes", "query": "tariffs", "k": "many"},
        "k: input should be a valid integer",
        id="search_kb-k-not-a-number",
    ),
    pytest.param(
        "search_kb",
        {"kb": "notes", "query": "tariffs", "top_k": 3},
        "search_kb takes no argument 'top_k'",
        id="search_kb-unknown-argument",
    ),
    pytest.param(
        "search_kb",
        {"kb": "notes", "query": "   "},
        "query: value error, must not be blank",
        id="search_kb-blank-query",
    ),
    pytest.param(
        "search_kb",
        {"kb": "notes", "query": "x" * 1001},
        "query: string should have at most 1000 characters",
        id="search_kb-long-query",
    ),
    pytest.param(
        "search_kb",
        {"kb": "", "query": "tariffs"},
        "kb: string should have at least 1 character",
        id="search_kb-empty-kb",
    ),
    pytest.param("search_kb", {"query": "tariffs"}, "kb: field required", id="search_kb-missing-kb"),
    pytest.param(
        "list_runs",
        {"limit": -1},
        "limit: input should be greater than or equal to 1",
        id="list_runs-limit-negative",
    ),
    pytest.param(
        "list_runs",
        {"limit": 501},
        "limit: input should be less than or equal to 500",
        id="list_runs-limit-too-large",
    ),
    pytest.param(
        "list_runs",
        {"status": "finished"},
        "list_runs takes no argument 'status'",
        id="list_runs-unknown-argument",
    ),
    pytest.param(
        "get_report",
        {"run_id": "../../etc/passwd"},
        "run_id: string should match pattern",
        id="get_report-path-in-run-id",
    ),
    pytest.param(
        "get_report",
        {"run_id": ""},
        "run_id: string should have at least 1 character",
        id="get_report-empty-run-id",
    ),
    pytest.param(
        "get_report",
        {"run_id": "x", "format": "exe"},
        "format: input should be 'md'",
        id="get_report-unknown-format",
    ),
    pytest.param(
        "deep_research",
        {"question": ""},
        "question: string should have at least 1 character",
        id="deep_research-empty-question",
    ),
    pytest.param(
        "deep_research",
        {"question": " \n "},
        "question: value error, must not be blank",
        id="deep_research-blank-question",
    ),
    pytest.param(
        "deep_research",
        {"question": "q" * 4001},
        "question: string should have at most 4000 characters",
        id="deep_research-long-question",
    ),
    pytest.param(
        "deep_research",
        {"question": "tariffs?", "depth": "huge"},
        "depth: input should be 'quick'",
        id="deep_research-unknown-depth",
    ),
    pytest.param(
        "deep_research",
        {"question": "tariffs?", "kb": " "},
        "kb: value error, must not be blank",
        id="deep_research-blank-kb",
    ),
    pytest.param(
        "deep_research",
        {"question": "tariffs?", "max_steps": 3},
        "deep_research takes no argument 'max_steps'",
        id="deep_research-unknown-argument",
    ),
    pytest.param(
        "deepen_section",
        {"run_id": "20260101-000000-abcdef", "section": "2", "into": 9},
        "into: input should be less than or equal to 7",
        id="deepen_section-into-too-many",
    ),
    pytest.param(
        "deepen_section",
        {"run_id": "20260101-000000-abcdef", "section": "2", "into": 1},
        "into: input should be greater than or equal to 2",
        id="deepen_section-into-too-few",
    ),
    pytest.param(
        "deepen_section",
        {"run_id": "20260101-000000-abcdef", "section": "the middle"},
        "section: string should match pattern",
        id="deepen_section-section-not-a-number",
    ),
    pytest.param(
        "deepen_section",
        {"run_id": "20260101-000000-abcdef", "section": "1.2.3.4"},
        "section: string should match pattern",
        id="deepen_section-section-too-deep",
    ),
    pytest.param(
        "deepen_section", {"run_id": "x"}, "section: field required", id="deepen_section-no-section"
    ),
    pytest.param(
        "deepen_section",
        {"run_id": "../x", "section": "2"},
        "run_id: string should match pattern",
        id="deepen_section-path-in-run-id",
    ),
    pytest.param(
        "rewrite_section",
        {"run_id": "x", "section": "2", "instructions": "y" * 2001},
        "instructions: string should have at most 2000 characters",
        id="rewrite_section-long-instructions",
    ),
    pytest.param(
        "rewrite_section",
        {"run_id": "x", "section": "2", "into": 3},
        "rewrite_section takes no argument 'into'",
        id="rewrite_section-unknown-argument",
    ),
    pytest.param(
        "recheck_section",
        {"run_id": "x", "section": "0"},
        "section: string should match pattern",
        id="recheck_section-section-zero",
    ),
    pytest.param(
        "recheck_section",
        {"run_id": "x", "force": "sometimes"},
        "force: input should be a valid boolean",
        id="recheck_section-force-not-a-boolean",
    ),
    pytest.param(
        "refresh_report",
        {"run_id": "x", "max_steps": 0},
        "max_steps: input should be greater than or equal to 1",
        id="refresh_report-no-steps",
    ),
    pytest.param(
        "refresh_report",
        {"run_id": "x", "section": "2"},
        "refresh_report takes no argument 'section'",
        id="refresh_report-section",
    ),
    pytest.param(
        "add_source",
        {"run_id": "x", "source": " ", "to": "2"},
        "source: value error, must not be blank",
        id="add_source-blank-source",
    ),
    pytest.param(
        "add_source", {"run_id": "x", "source": "a.md"}, "to: field required", id="add_source-no-to"
    ),
    pytest.param(
        "add_source",
        {"run_id": "x", "source": "a.md", "to": "2.x"},
        "to: string should match pattern",
        id="add_source-bad-section",
    ),
    pytest.param(
        "ask_run",
        {"run_id": "20260101-000000-abcdef", "question": "  "},
        "question: value error, must not be blank",
        id="ask_run-blank-question",
    ),
    pytest.param(
        "ask_run",
        {"run_id": "20260101-000000-abcdef", "question": "why " * 600},
        "question: string should have at most 2000 characters",
        id="ask_run-long-question",
    ),
]


@pytest.mark.parametrize(("tool", "arguments", "problem"), BAD_ARGUMENTS)
def test_every_tool_refuses_arguments_out_of_range_in_one_line(
    tool: str, arguments: dict[str, object], problem: str
) -> None:
    calls: list[object] = []

    def no_model(_: object) -> LLM:
        calls.append(_)
        raise AssertionError("the model must not be built for refused arguments")

    async def session() -> None:
        async with Client(mcp_server.build(server_settings(), llm_factory=no_model)) as client:
            result = await client.call_tool(tool, arguments)
            assert result.is_error, result.structured_content
            text = result.content[0].text  # type: ignore[union-attr]
            assert problem in text and "\n" not in text and "pydantic" not in text, text

    anyio.run(session)
    assert calls == []


def test_the_bounds_are_in_each_tools_schema() -> None:
    async def session() -> dict[str, dict[str, object]]:
        async with Client(mcp_server.build(server_settings())) as client:
            return {tool.name: tool.input_schema["properties"] for tool in (await client.list_tools()).tools}

    schemas = anyio.run(session)
    assert schemas["search_kb"]["k"] == {
        "default": 5,
        "maximum": 50,
        "minimum": 1,
        "title": "K",
        "type": "integer",
    }
    assert schemas["list_runs"]["limit"]["maximum"] == 500  # type: ignore[index]
    into = schemas["deepen_section"]["into"]["anyOf"][0]  # type: ignore[index]
    assert (into["minimum"], into["maximum"]) == (2, 7)
    assert schemas["rewrite_section"]["instructions"]["maxLength"] == 2000  # type: ignore[index]
    assert "pattern" in schemas["recheck_section"]["section"]["anyOf"][0]  # type: ignore[index]


def test_a_resource_uri_with_a_path_for_a_run_id_is_refused() -> None:
    async def session() -> None:
        async with Client(mcp_server.build(server_settings())) as client:
            with pytest.raises(MCPError, match=r"not a run id|Unknown resource"):
                await client.read_resource("deepdraft://runs/..%2F..%2Fsecret/report")
            with pytest.raises(MCPError, match="not a run id"):
                await client.read_resource("deepdraft://runs/a.b/report")

    anyio.run(session)


# ---- commands on a finished report's sections --------------------------------------------------------


def test_section_tools_continue_a_finished_run_and_return_the_new_version(corpus_dir: Path) -> None:
    run_id = runner.start(QUESTION, server_settings(), kb=str(corpus_dir), llm=scenario_llm()).run_id
    progress: list[tuple[float, float | None, str | None]] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append((value, total, message))

    async def session() -> None:
        server = mcp_server.build(server_settings(), llm_factory=lambda _: scenario_llm())
        async with Client(server) as client:
            deepened = await client.call_tool(
                "deepen_section",
                {"run_id": run_id[:12], "section": "2", "into": 2, "instructions": "the farm states"},
                progress_callback=on_progress,
            )
            assert not deepened.is_error, deepened.content
            result = deepened.structured_content
            assert result is not None
            assert (result["run_id"], result["command"], result["version"], result["outcome"]) == (
                run_id,
                "deepen",
                2,
                "",
            )
            assert "2 added" in result["changed"]  # the subsections (the synthesis is written again too)
            assert "### 2.1 Facet 1 of section-2" in result["markdown"]

            rechecked = await client.call_tool("recheck_section", {"run_id": run_id, "section": "2.1"})
            assert not rechecked.is_error, rechecked.content
            assert rechecked.structured_content["command"] == "recheck"  # type: ignore[index]

            missing = await client.call_tool("rewrite_section", {"run_id": run_id, "section": "9"})
            text = missing.content[0].text  # type: ignore[union-attr]
            assert missing.is_error and f"run {run_id} has no section 9" in text and "\n" not in text
            split = await client.call_tool("deepen_section", {"run_id": run_id, "section": "2"})
            assert split.is_error and "already has subsections" in split.content[0].text  # type: ignore[union-attr]

    anyio.run(session)
    # One notification per action of the command, numbered on from the run's earlier steps.
    with runner.open_journal() as journal:
        directed = [step.step for step in journal.steps(run_id) if step.directed]
    steps = [value for value, _, _ in progress]
    assert steps and steps == sorted(steps) and set(steps) <= set(directed)
    assert progress[0][2] == f"step {steps[0]:g}: deepen section-2"


def test_refresh_and_add_source_tools_continue_a_finished_run(corpus_dir: Path, tmp_path: Path) -> None:
    run_id = runner.start(QUESTION, server_settings(), kb=str(corpus_dir), llm=scenario_llm()).run_id

    async def session() -> None:
        server = mcp_server.build(server_settings(), llm_factory=lambda _: scenario_llm())
        async with Client(server) as client:
            nothing = await client.call_tool("refresh_report", {"run_id": run_id})
            text = nothing.content[0].text  # type: ignore[union-attr]
            assert nothing.is_error and text.endswith(
                f"nothing to refresh: the knowledge base of run {run_id} is as its report saw it"
            )

            (corpus_dir / "middle-notes.md").write_text(
                "# Notes on the middle years\n\nIn the middle decades presidents sought a middle course "
                "between protection and free trade.\n",
                encoding="utf-8",
            )
            lines = [stale.describe() for stale in runner.find_stale(run_id, server_settings()).stale]
            assert lines
            refreshed = await client.call_tool("refresh_report", {"run_id": run_id[:12]})
            assert not refreshed.is_error, refreshed.content
            result = refreshed.structured_content
            assert result is not None
            assert (result["run_id"], result["command"], result["version"]) == (run_id, "refresh", 2)
            assert result["reasons"] == lines

            notes = tmp_path / "late-notes.md"
            notes.write_text(
                "# Late notes\n\nThe late tariff debates turned on reciprocity.\n", encoding="utf-8"
            )
            added = await client.call_tool("add_source", {"run_id": run_id, "source": str(notes), "to": "3"})
            assert not added.is_error, added.content
            result = added.structured_content
            assert result is not None
            assert (result["command"], result["section"], result["version"]) == ("add-source", "3", 3)
            assert "Late notes" in result["markdown"].split("## References")[1]

            url = await client.call_tool(
                "add_source", {"run_id": run_id, "source": "https://example.org/page", "to": "2"}
            )
            text = url.content[0].text  # type: ignore[union-attr]
            assert url.is_error and "does not use the web" in text and "\n" not in text
            missing = await client.call_tool(
                "add_source", {"run_id": run_id, "source": str(tmp_path / "none.md"), "to": "2"}
            )
            assert missing.is_error and "no file" in missing.content[0].text  # type: ignore[union-attr]

    anyio.run(session)


def test_ask_run_answers_a_follow_up_question_in_the_reports_numbering(corpus_dir: Path) -> None:
    settings = server_settings()
    report = runner.start(QUESTION, settings, kb=str(corpus_dir), llm=scenario_llm())

    async def session() -> None:
        async with Client(mcp_server.build(settings, llm_factory=lambda _: scenario_llm())) as client:
            result = await client.call_tool(
                "ask_run", {"run_id": report.run_id[:12], "question": "Who paid the duties?"}
            )
            assert not result.is_error, result.content
            answer = result.structured_content
            assert answer is not None and answer["run_id"] == report.run_id
            assert answer["question"] == "Who paid the duties?" and re.search(
                r"\[\d+(, \d+)*\]", answer["answer"]
            )
            missing = await client.call_tool(
                "ask_run", {"run_id": "no-such-run", "question": "Who paid the duties?"}
            )
            assert missing.is_error and "no run with id" in missing.content[0].text  # type: ignore[union-attr]

    anyio.run(session)
    with Runs.open() as runs:
        assert [a.question for a in runs.asks(report.run_id)] == ["Who paid the duties?"]
