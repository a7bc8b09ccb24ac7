"""The MCP server, driven by the SDK's own client over stdio: `python -m deepdraft mcp` in a subprocess,
its LLM the scripted research model behind a real OpenAI-compatible server on loopback."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import anyio
import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters

from deepdraft.mcp import server as mcp_server
from deepdraft.run import runner
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
            assert set(tools) == {"deep_research", "search_kb", "list_runs", "get_report"}
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
