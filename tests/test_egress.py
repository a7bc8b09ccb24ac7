"""The egress audit: what a run sends off this machine is recorded, shown, and — with the web off — nothing.

Full runs here use the real runner, journal and indexes with a scripted model in-process or a real
OpenAI-compatible server on loopback, and the web is played by a real HTTP server on loopback.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from deepdraft.cli.app import app
from deepdraft.config import home_dir, load_settings
from deepdraft.egress import EgressLog, EgressRecord, is_loopback_url, public_endpoint
from deepdraft.errors import ConfigError, RunNotFound, UserError
from deepdraft.llm.scripted import FunctionLLM
from deepdraft.ports import ChatRequest
from deepdraft.retrieval.kb import names as kbs
from deepdraft.run import runner
from deepdraft.run.wiring import audit_endpoints
from deepdraft.settings import EmbeddingSettings, Settings
from deepdraft.store.journal import Journal
from tests.support.openai_server import FakeOpenAIServer
from tests.support.scenario import SOTU_LIKE, ScenarioModel, WordOverlapRetriever, as_responder
from tests.support.web_server import FakeWeb, PageRoute, html_page

QUESTION = "How did presidents argue about tariffs?"
QUIET = {"verify": False, "synthesis": False}  # no post-processing calls: the scripts cover the loop only


# ---- endpoints and the recording policy ----------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "endpoint"),
    [
        ("https://api.example.com/v1", "https://api.example.com:443/v1"),
        ("http://user:sk-secret@llm.example.com:8000/v1?api_key=abc#frag", "http://llm.example.com:8000/v1"),
        ("https://search.example.org/search?q=private+question", "https://search.example.org:443/search"),
        ("http://[2001:db8::1]:8080", "http://[2001:db8::1]:8080/"),
    ],
)
def test_endpoints_never_carry_credentials_or_queries(url: str, endpoint: str) -> None:
    assert public_endpoint(url) == endpoint


@pytest.mark.parametrize(
    ("url", "loopback"),
    [
        ("http://127.0.0.1:8000/v1", True),
        ("http://127.3.2.1/v1", True),
        ("http://localhost:11434", True),
        ("http://[::1]:8080/v1", True),
        ("http://api.localhost/v1", True),
        ("http://10.0.0.5:8000/v1", False),  # another machine on the LAN is egress
        ("https://api.openai.com/v1", False),
        ("http://my-gpu-box:8000/v1", False),  # names are not resolved: counted as remote
    ],
)
def test_loopback_is_decided_without_dns(url: str, loopback: bool) -> None:
    assert is_loopback_url(url) is loopback


def test_loopback_llms_are_skipped_but_web_requests_always_recorded() -> None:
    log = EgressLog()
    assert log.endpoint("llm", "http://127.0.0.1:8000/v1", "chat") is None
    log.record("web-search", "http://127.0.0.1:8888/search?q=x", "x")
    log.record("page-fetch", "http://127.0.0.1:9/page", "http://127.0.0.1:9/page", 10)
    assert [(r.kind, r.endpoint) for r in log.records] == [
        ("web-search", "http://127.0.0.1:8888/search"),
        ("page-fetch", "http://127.0.0.1:9/page"),
    ]
    verbose = EgressLog(include_loopback=True)
    meter = verbose.endpoint("llm", "http://127.0.0.1:8000/v1", "chat")
    assert meter is not None
    meter.add(2, 300)
    assert [(r.kind, r.requests, r.bytes) for r in verbose.records] == [("llm", 2, 300)]


def test_records_go_to_the_journal_at_once_and_meters_count_into_them(tmp_path: Path) -> None:
    log = EgressLog(clock=lambda: 1234.5)
    log.record("web-search", "https://search.example.org/search", "first query", 100)  # before attach
    with Journal(tmp_path / "journal.sqlite") as journal:
        journal.create_run("r1", "q", "warp", {})
        with log.attached(journal, "r1"):
            assert [r.detail for r in journal.egress("r1")] == ["first query"]
            meter = log.endpoint("llm", "https://llm.example.com/v1", "chat completions")
            assert meter is not None
            meter.add(1, 50)
            meter.add(1, 70)
            assert journal.egress("r1")[1] == EgressRecord(
                "llm", "https://llm.example.com:443/v1", "chat completions", 1234.5, 120, 2, seq=2
            )
        log.record("page-fetch", "https://example.org/after", "https://example.org/after")
        assert len(journal.egress("r1")) == 2  # detached: kept in memory only
        assert [r.seq for r in log.records] == [1, 2, 0]
        with pytest.raises(RunNotFound):
            journal.egress("no-such-run")


def test_the_journal_migrates_an_old_file_to_hold_the_audit(tmp_path: Path) -> None:
    import sqlite3

    from deepdraft.store.schema import _INITIAL_SCHEMA

    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as conn:  # a journal written before the egress table existed
        conn.executescript(_INITIAL_SCHEMA)
        conn.execute("CREATE TABLE migrations (name TEXT PRIMARY KEY, applied_at REAL NOT NULL)")
        conn.execute("INSERT INTO migrations VALUES ('0001_initial', 0)")
    with Journal(path) as journal:
        journal.create_run("r1", "q", "warp", {})
        assert journal.record_egress("r1", EgressRecord("web-search", "e", "d", 0.0)) == 1
        assert journal.record_egress("r1", EgressRecord("web-search", "e", "d2", 0.0)) == 2


class RemoteLookingLLM(FunctionLLM):
    """A scripted model that says it lives on a remote host, as `OpenAICompatibleLLM` does."""

    base_url = "https://user:sk-secret@llm.example.com:8443/v1?key=abc"


def test_a_remote_llm_is_recorded_once_per_session_with_its_requests_counted() -> None:
    calls = 0

    def crash_on_fifth(request: ChatRequest) -> str:
        nonlocal calls
        calls += 1
        if calls == 5:
            raise KeyboardInterrupt
        return ScenarioModel(expansions=0)(request)

    settings = load_settings(flags={"output": QUIET})
    retriever = WordOverlapRetriever(SOTU_LIKE)
    with pytest.raises(KeyboardInterrupt):
        runner.start(
            QUESTION, settings, llm=RemoteLookingLLM(crash_on_fifth), retriever=retriever, run_id="r1"
        )
    second = RemoteLookingLLM(ScenarioModel(expansions=0))
    runner.resume("r1", settings, llm=second, retriever=retriever)

    with runner.open_journal() as journal:
        records = journal.egress("r1")
    assert [(r.kind, r.endpoint, r.requests) for r in records] == [
        ("llm", "https://llm.example.com:8443/v1", 5),  # four replies and the call that crashed
        ("llm", "https://llm.example.com:8443/v1", len(second.requests)),
    ]
    assert records[1].bytes > sum(len(m.content) for m in second.requests[0].messages)
    assert (
        "sk-secret" not in json.dumps([r.__dict__ for r in records]) and "key=abc" not in records[0].endpoint
    )


def test_role_models_share_their_endpoint_record_and_embeddings_are_recorded() -> None:
    settings = Settings.model_validate(
        {"embedding": {"enabled": True, "base_url": "https://embed.example.com/v1", "model": "e5"}}
    )
    log = EgressLog()
    main, roles = audit_endpoints(
        log, settings, RemoteLookingLLM(str), {"writer": RemoteLookingLLM(str), "local": FunctionLLM(str)}
    )
    assert roles["local"].__class__ is FunctionLLM  # in-process: nothing to meter
    main.complete(ChatRequest.user("hello"))
    roles["writer"].complete(ChatRequest.user("hi"))
    assert [(r.kind, r.endpoint, r.requests, r.detail) for r in log.records] == [
        ("embeddings", "https://embed.example.com:443/v1", 0, "embeddings, model e5"),
        ("llm", "https://llm.example.com:8443/v1", 2, "chat completions, model function"),
    ]


def test_a_kb_built_by_an_embedding_endpoint_has_its_query_embeddings_audited(
    corpus_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with FakeOpenAIServer.for_embeddings(dimension=32) as server:
        embedding = EmbeddingSettings(enabled=True, base_url=server.base_url, model="hashed")
        with kbs.create_kb("speeches") as kb:
            kb.add([corpus_dir], embedding=embedding)
        indexing = len(server.embedding_requests)
        # The server is on loopback, which a run's audit leaves out unless asked to list it.
        monkeypatch.setattr(runner, "EgressLog", lambda: EgressLog(include_loopback=True))
        settings = load_settings(flags={"output": QUIET})  # no embedding flags: the KB names its endpoint
        runner.start(
            QUESTION, settings, kb="speeches", llm=FunctionLLM(ScenarioModel(expansions=0)), run_id="e1"
        )
        queries = server.embedding_requests[indexing:]
    assert queries, "hybrid search embeds the run's queries"
    with runner.open_journal() as journal:
        records = journal.egress("e1")
    assert [(r.kind, r.endpoint, r.requests, r.detail) for r in records] == [
        ("embeddings", public_endpoint(server.base_url), len(queries), "embeddings, model hashed")
    ]
    assert records[0].bytes == sum(len(text.encode()) for request in queries for text in request["input"])


# ---- the privacy guarantee -----------------------------------------------------------------------


@pytest.fixture
def network_calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[str, Any]]]:
    """Every socket connection and name lookup made while the test runs (they still happen)."""
    calls: list[tuple[str, Any]] = []
    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex
    real_create, real_lookup = socket.create_connection, socket.getaddrinfo

    def connect(self: socket.socket, address: Any) -> None:
        calls.append(("connect", address))
        real_connect(self, address)

    def connect_ex(self: socket.socket, address: Any) -> int:
        calls.append(("connect_ex", address))
        return real_connect_ex(self, address)

    def create_connection(address: Any, *args: Any, **kwargs: Any) -> socket.socket:
        calls.append(("create_connection", address))
        return real_create(address, *args, **kwargs)

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(("getaddrinfo", (host, port)))
        return real_lookup(host, port, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    monkeypatch.setattr(socket, "create_connection", create_connection)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    yield calls


def test_with_the_web_off_an_in_process_run_opens_no_socket_at_all(
    corpus_dir: Path, network_calls: list[tuple[str, Any]]
) -> None:
    settings = load_settings(flags={"output": QUIET})
    report = runner.start(
        QUESTION, settings, kb=str(corpus_dir), llm=FunctionLLM(ScenarioModel(expansions=1)), run_id="local"
    )
    assert report.references and "address-" in report.markdown  # a real run over the real index
    assert network_calls == []
    with runner.open_journal() as journal:
        assert journal.egress("local") == []


def test_with_the_web_off_a_served_model_is_the_only_connection(
    corpus_dir: Path, network_calls: list[tuple[str, Any]]
) -> None:
    with FakeOpenAIServer(as_responder(ScenarioModel(expansions=0))) as server:
        settings = load_settings(flags={"llm": {"base_url": server.base_url}, "output": QUIET})
        report = runner.start(QUESTION, settings, kb=str(corpus_dir), run_id="served")
        assert len(server.requests) >= 8
    assert report.references
    assert network_calls, "the model was reached through a socket"
    assert {address[:2] for _, address in network_calls} == {("127.0.0.1", server.port)}
    with runner.open_journal() as journal:
        assert journal.egress("served") == []  # loopback: not egress


# ---- a research run with the web on --------------------------------------------------------------


@pytest.fixture
def web() -> Iterator[FakeWeb]:
    with FakeWeb() as server:
        server.pages["/tariff-history"] = html_page(
            "A short history of American tariffs",
            "Tariffs protected young industries in the early republic, and the history of the tariff "
            "is a history of sectional conflict between manufacturers and farmers.",
        )
        server.pages["/smoot-hawley"] = html_page(
            "The Smoot-Hawley tariff",
            "The tariffs of 1930 raised duties on thousands of imports; trading partners retaliated and "
            "world trade shrank during the depression.",
        )
        server.pages["/moved"] = PageRoute(status=301, headers={"location": "/smoot-hawley"})
        server.pages["/chart.png"] = PageRoute(b"\x89PNG", content_type="image/png")
        server.results = [
            ("/tariff-history", "Tariff history", "Tariffs and sectional conflict."),
            ("/moved", "Smoot-Hawley", "The 1930 tariffs."),
            ("/chart.png", "Tariff chart", "A chart of tariff rates over time."),
        ]
        yield server


def web_settings(web: FakeWeb, **web_flags: Any) -> Settings:
    flags = {"enabled": True, "searxng_url": web.base_url, "allow_private": True, "timeout_s": 5, **web_flags}
    return load_settings(flags={"web": flags, "output": QUIET})


def show_egress(run_id: str) -> list[dict[str, Any]]:
    result = CliRunner().invoke(app, ["show", run_id, "--egress", "--json"])
    assert result.exit_code == 0, result.output
    rows: list[dict[str, Any]] = json.loads(result.output)
    return rows


def test_a_web_run_cites_urls_and_its_audit_lists_every_query_and_url(web: FakeWeb, corpus_dir: Path) -> None:
    report = runner.start(
        QUESTION,
        web_settings(web),
        kb=str(corpus_dir),
        llm=FunctionLLM(ScenarioModel(expansions=1)),
        run_id="w1",
    )
    locations = {reference.source.location for reference in report.references}
    cited_urls = {location for location in locations if location.startswith(web.base_url)}
    assert cited_urls and all(f"<{url}>" in report.markdown for url in cited_urls), locations
    assert any(location.endswith(".md") for location in locations), locations  # the KB is searched too

    rows = show_egress("w1")
    searches = [r["detail"] for r in rows if r["kind"] == "web-search"]
    fetched = [r["detail"] for r in rows if r["kind"] == "page-fetch"]
    assert searches == web.queries() and len(searches) >= 2
    assert sorted(fetched) == sorted(web.url(p) for p in web.paths() if p != "/search")
    assert web.url("/moved") in fetched and web.url("/smoot-hawley") in fetched  # each redirect hop
    assert {r["kind"] for r in rows} == {"web-search", "page-fetch"}  # the model ran in-process
    assert all(
        r["endpoint"] == f"http://127.0.0.1:{web.port}/search" for r in rows if r["kind"] == "web-search"
    )

    assert f"{corpus_dir.resolve()} (fingerprint " in report.markdown
    assert f"), with web search via searxng at {web.base_url}" in report.markdown

    table = CliRunner().invoke(app, ["show", "w1", "--egress"])
    assert table.exit_code == 0 and "tariffs" in table.output and web.url("/moved") in table.output


def test_a_resumed_web_run_sends_no_query_or_fetch_twice(web: FakeWeb, corpus_dir: Path) -> None:
    calls = 0

    def crash_on_sixth(request: ChatRequest) -> str:
        nonlocal calls
        calls += 1
        if calls == 6:
            raise KeyboardInterrupt
        return ScenarioModel(expansions=1)(request)

    settings = web_settings(web)
    with pytest.raises(KeyboardInterrupt):
        runner.start(QUESTION, settings, kb=str(corpus_dir), llm=FunctionLLM(crash_on_sixth), run_id="w2")
    sent_before = len(web.requests)
    report = runner.resume("w2", load_settings(), llm=FunctionLLM(ScenarioModel(expansions=1)))
    assert report.references and len(web.requests) > sent_before  # the resumed part searched anew
    assert len(web.queries()) == len(set(web.queries()))
    pages = [p for p in web.paths() if p not in ("/search", "/chart.png")]  # failures may be retried
    assert len(pages) == len(set(pages))
    assert [r["detail"] for r in show_egress("w2") if r["kind"] == "web-search"] == web.queries()


def test_a_web_only_run_needs_no_knowledge_base(web: FakeWeb) -> None:
    settings = web_settings(web, only=True)
    report = runner.start(QUESTION, settings, llm=FunctionLLM(ScenarioModel(expansions=0)), run_id="w3")
    assert report.references
    assert all(ref.source.location.startswith(web.base_url) for ref in report.references)
    record, _ = runner.load_run("w3")
    assert record.settings["kb"] is None and record.settings["settings"]["web"]["only"] is True
    # The report's "About" footer names what was searched: the provider, not a nameless retriever.
    assert f"- **Web search:** searxng at {web.base_url}" in report.markdown
    assert "custom retriever" not in report.markdown
    assert not (Path(home_dir()) / "kbs").exists() and not (Path(home_dir()) / "indexes").exists()


def test_show_egress_says_when_nothing_left_the_machine() -> None:
    runner.start(
        QUESTION,
        load_settings(flags={"output": QUIET}),
        llm=FunctionLLM(ScenarioModel(expansions=0)),
        retriever=WordOverlapRetriever(SOTU_LIKE),
        run_id="quiet",
    )
    result = CliRunner().invoke(app, ["show", "quiet", "--egress"])
    assert result.exit_code == 0 and "recorded no requests off this machine" in result.output
    assert show_egress("quiet") == []


def test_web_only_with_a_knowledge_base_is_a_contradiction(web: FakeWeb, corpus_dir: Path) -> None:
    result = CliRunner().invoke(
        app,
        ["research", QUESTION, "--web-only", "--kb", str(corpus_dir), "--base-url", "http://127.0.0.1:9/v1"],
    )
    assert isinstance(result.exception, UserError)
    assert "--web-only searches no knowledge base" in str(result.exception)
    assert web.requests == []


def test_web_search_without_a_provider_says_what_to_set(corpus_dir: Path) -> None:
    settings = load_settings(flags={"web": {"enabled": True}})
    with pytest.raises(ConfigError, match="set SEARXNG_URL"):
        runner.start(QUESTION, settings, kb=str(corpus_dir), llm=FunctionLLM(ScenarioModel()))
    with runner.open_journal() as journal:
        assert journal.list_runs() == []  # refused before a run was recorded
