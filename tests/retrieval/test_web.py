"""Web search: the address policy, safe page fetching, the three providers, the retriever and its cache.

Every request goes to a real HTTP server on 127.0.0.1 (`tests.support.web_server.FakeWeb`); host
names that must resolve elsewhere are answered by a stand-in resolver, so nothing leaves the machine.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from deepdraft.egress import EgressLog
from deepdraft.errors import ConfigError
from deepdraft.ports import Passage, Retriever, Source
from deepdraft.retrieval.combined import CombinedRetriever
from deepdraft.retrieval.web import fetch
from deepdraft.retrieval.web.fetch import (
    BlockedAddress,
    PageFetcher,
    PageRefused,
    address_problem,
    extract_page,
    vet_host,
)
from deepdraft.retrieval.web.search import (
    BraveSearch,
    SearxngSearch,
    TavilySearch,
    WebCache,
    WebRetriever,
    WebSearchError,
    provider_from_settings,
    web_retriever,
)
from deepdraft.settings import Settings
from tests.support.web_server import FakeWeb, PageRoute, html_page

DENDRITES = html_page(
    "Why solid-state batteries fail",
    "Lithium dendrites grow through the ceramic electrolyte and short the cell. Dendrite growth is the "
    "main failure mode of solid-state batteries during fast charging.",
    "Cracks in the separator open paths for the dendrites.",
)
INTERFACES = html_page(
    "Interface resistance in solid electrolytes",
    "The cathode contracts during cycling and loses contact with the electrolyte, so interface "
    "resistance rises and capacity fades.",
)


@pytest.fixture
def web() -> Iterator[FakeWeb]:
    with FakeWeb() as server:
        server.pages["/dendrites"] = DENDRITES
        server.pages["/interfaces"] = INTERFACES
        server.pages["/paper.pdf"] = PageRoute(b"%PDF-1.7 binary", content_type="application/pdf")
        server.results = [
            ("/interfaces", "Interfaces <strong>matter</strong>", "Contact loss at the cathode."),
            ("/dendrites", "Dendrites", "Dendrites short the cell."),
            ("/paper.pdf", "A PDF about &quot;dendrite&quot; suppression", "Coatings suppress dendrites."),
        ]
        yield server


def resolver(table: dict[str, list[str]]) -> Any:
    """A stand-in for socket.getaddrinfo answering from `table` (host → addresses)."""

    def resolve(host: str, port: int, family: int = 0, kind: int = 0, *rest: Any) -> list[tuple[Any, ...]]:
        if host not in table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [
            (socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port))
            for a in table[host]
        ]

    return resolve


# ---- the address policy --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "problem"),
    [
        ("127.0.0.1", "loopback"),
        ("127.8.9.10", "loopback"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.5.4", "private"),
        ("192.168.1.1", "private"),
        ("fc00::1", "private"),
        ("169.254.169.254", "link-local"),
        ("fe80::1%eth0", "link-local"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("240.0.0.1", "reserved"),
        ("100.64.0.1", "not publicly routable"),
        ("8.8.8.8", None),
        ("2606:4700:4700::1111", None),
    ],
)
def test_address_problem_names_each_refused_range(address: str, problem: str | None) -> None:
    assert address_problem(address) == problem


def test_a_host_is_refused_when_any_of_its_addresses_is() -> None:
    resolve = resolver(
        {
            "rebind.test": ["93.184.216.34", "127.0.0.1"],
            "metadata.test": ["169.254.169.254"],
            "intranet.test": ["10.0.0.7"],
            "six.test": ["::1"],
            "public.test": ["93.184.216.34", "2606:2800:220:1::248"],
        }
    )
    for host in ("rebind.test", "metadata.test", "intranet.test", "six.test"):
        with pytest.raises(BlockedAddress, match=f"{host} resolves to"):
            vet_host(host, 80, allow_private=False, resolve=resolve)
        assert vet_host(host, 80, allow_private=True, resolve=resolve)
    assert vet_host("public.test", 443, allow_private=False, resolve=resolve) == [
        "93.184.216.34",
        "2606:2800:220:1::248",
    ]
    with pytest.raises(PageRefused, match=r"cannot resolve nowhere\.test"):
        vet_host("nowhere.test", 80, allow_private=True, resolve=resolve)


# ---- fetching pages ------------------------------------------------------------------------------


def test_a_loopback_page_is_refused_unless_private_addresses_are_allowed(web: FakeWeb) -> None:
    egress = EgressLog()
    with pytest.raises(BlockedAddress, match=r"127\.0\.0\.1 \(loopback\)"):
        PageFetcher(allow_private=False, egress=egress).fetch(web.url("/dendrites"))
    assert web.requests == [] and egress.records == []  # refused before connecting: nothing sent

    page = PageFetcher(allow_private=True, egress=egress).fetch(web.url("/dendrites"))
    assert page.title == "Why solid-state batteries fail"
    assert (
        "Lithium dendrites grow" in page.text and "Copyright" not in page.text and "Home |" not in page.text
    )
    assert page.final_url == web.url("/dendrites") and page.content_type == "text/html"
    assert [(r.kind, r.detail) for r in egress.records] == [("page-fetch", web.url("/dendrites"))]
    assert egress.records[0].bytes == len(DENDRITES.body)


def test_localhost_by_name_is_refused_too(web: FakeWeb) -> None:
    with pytest.raises(BlockedAddress, match="localhost resolves to"):
        PageFetcher().fetch(f"http://localhost:{web.port}/dendrites")
    assert web.requests == []


def test_a_redirect_to_a_private_address_is_checked_again(
    web: FakeWeb, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Treat this server's 127.0.0.1 as if it were public, so the first hop is allowed with the
    # check on; the redirect target resolves to a private address and must be refused.
    policy = fetch.address_problem
    monkeypatch.setattr(fetch, "address_problem", lambda a: None if a == "127.0.0.1" else policy(a))
    web.pages["/moved"] = PageRoute(status=302, headers={"location": "http://intranet.test/admin"})
    fetcher = PageFetcher(resolve=resolver({"127.0.0.1": ["127.0.0.1"], "intranet.test": ["10.0.0.7"]}))
    with pytest.raises(BlockedAddress, match=r"intranet\.test resolves to 10\.0\.0\.7 \(private\)"):
        fetcher.fetch(web.url("/moved"))
    assert web.paths() == ["/moved"]


def test_redirects_are_followed_within_a_limit(web: FakeWeb) -> None:
    web.pages["/old"] = PageRoute(status=301, headers={"location": "/dendrites"})
    page = PageFetcher(allow_private=True).fetch(web.url("/old"))
    assert page.url == web.url("/old") and page.final_url == web.url("/dendrites")
    for hop in range(fetch.MAX_REDIRECTS + 1):
        web.pages[f"/loop{hop}"] = PageRoute(status=302, headers={"location": f"/loop{hop + 1}"})
    with pytest.raises(PageRefused, match="more than 5 redirects"):
        PageFetcher(allow_private=True).fetch(web.url("/loop0"))
    web.pages["/to-file"] = PageRoute(status=302, headers={"location": "file:///etc/passwd"})
    with pytest.raises(PageRefused, match=r"not an http\(s\) URL \(file\)"):
        PageFetcher(allow_private=True).fetch(web.url("/to-file"))


@pytest.mark.parametrize("url", ["ftp://example.org/file.txt", "file:///etc/passwd", "javascript:alert(1)"])
def test_only_http_urls_are_fetched(url: str) -> None:
    with pytest.raises(PageRefused, match="not an http"):
        PageFetcher(allow_private=True).fetch(url)


@pytest.mark.parametrize("declare_length", [True, False])
def test_an_oversized_page_is_refused(web: FakeWeb, declare_length: bool) -> None:
    big = html_page("Big", "word " * 5000)  # about 25 kB
    web.pages["/big"] = PageRoute(big.body, declare_length=declare_length)
    with pytest.raises(PageRefused, match="too large"):
        PageFetcher(allow_private=True, max_bytes=10_000).fetch(web.url("/big"))
    assert PageFetcher(allow_private=True, max_bytes=100_000).fetch(web.url("/big")).title == "Big"


def test_only_web_pages_and_plain_text_are_read(web: FakeWeb) -> None:
    with pytest.raises(PageRefused, match=r"not a web page \(application/pdf\)"):
        PageFetcher(allow_private=True).fetch(web.url("/paper.pdf"))
    web.pages["/notes.txt"] = PageRoute(
        "Notes on électrolytes\n\nPlain text is read as it is.".encode("latin-1"),
        content_type="text/plain; charset=latin-1",
    )
    page = PageFetcher(allow_private=True).fetch(web.url("/notes.txt"))
    assert page.text.startswith("Notes on électrolytes") and page.content_type == "text/plain"
    web.pages["/empty"] = PageRoute(b"<html><body><script>var shown = 0;</script></body></html>")
    with pytest.raises(PageRefused, match="no readable text"):
        PageFetcher(allow_private=True).fetch(web.url("/empty"))
    with pytest.raises(PageRefused, match="HTTP 404"):
        PageFetcher(allow_private=True).fetch(web.url("/missing"))


def test_a_page_nested_past_the_parsers_depth_says_so() -> None:
    nest = b"<div>" * 80_000 + b"Inside." + b"</div>" * 80_000
    page = b"<html><body><p>Before the nest, a paragraph of text.</p>" + nest + b"</body></html>"
    with pytest.raises(PageRefused, match=r"^nested more than 2,048 elements deep"):
        extract_page(page, "text/html", "https://example.org/deep")


def test_a_page_nested_past_trafilaturas_depth_is_read_whole() -> None:
    nest = b"<div>" * 1500 + b"Inside the nest, the second paragraph." + b"</div>" * 1500
    page = (
        b"<html><body><p>Before the nest, a paragraph of text.</p>"
        + nest
        + b"<p>After it, the end.</p></body></html>"
    )
    _, text = extract_page(page, "text/html; charset=utf-8", "https://example.org/deep")
    assert (
        text
        == "Before the nest, a paragraph of text.\n\nInside the nest, the second paragraph.\n\nAfter it, the end."
    )


def test_a_slow_page_times_out(web: FakeWeb) -> None:
    web.pages["/slow"] = PageRoute(DENDRITES.body, delay_s=3.0)
    started = time.monotonic()
    with pytest.raises(PageRefused, match=r"timed out after 0\.3 s"):
        PageFetcher(allow_private=True, timeout_s=0.3).fetch(web.url("/slow"))
    assert time.monotonic() - started < 2.0


# ---- providers -----------------------------------------------------------------------------------


def test_searxng_speaks_its_json_api(web: FakeWeb) -> None:
    egress = EgressLog()
    results = SearxngSearch(web.base_url, egress=egress).search("battery failure", 2)
    assert [(r.url, r.title, r.snippet) for r in results] == [
        (web.url("/interfaces"), "Interfaces matter", "Contact loss at the cathode."),
        (web.url("/dendrites"), "Dendrites", "Dendrites short the cell."),
    ]
    (request,) = web.requests
    assert request.path == "/search" and request.query == {"q": ["battery failure"], "format": ["json"]}
    (record,) = egress.records
    assert (record.kind, record.endpoint, record.detail) == (
        "web-search",
        f"http://127.0.0.1:{web.port}/search",
        "battery failure",
    )
    assert record.bytes > 0


def test_searxng_without_the_json_format_says_how_to_enable_it(web: FakeWeb) -> None:
    web.searxng_json = False
    with pytest.raises(WebSearchError, match=r"add `json` to `search.formats`"):
        SearxngSearch(web.base_url).search("anything", 5)


def test_tavily_sends_the_key_in_a_header_and_the_query_as_json(web: FakeWeb) -> None:
    egress = EgressLog()
    results = TavilySearch("test-key", base_url=web.base_url, egress=egress).search("dendrites", 1)
    assert [r.url for r in results] == [web.url("/interfaces")]
    (request,) = web.requests
    assert request.method == "POST" and request.headers["authorization"] == "Bearer test-key"
    assert b"test-key" not in request.body
    assert all("test-key" not in f"{r.endpoint} {r.detail}" for r in egress.records)
    with pytest.raises(
        WebSearchError, match=r"Tavily refused the API key \(HTTP 401\): check TAVILY_API_KEY"
    ):
        TavilySearch("wrong", base_url=web.base_url).search("dendrites", 1)


def test_brave_sends_the_subscription_token(web: FakeWeb) -> None:
    results = BraveSearch("test-key", base_url=web.base_url).search("dendrites", 3)
    assert [r.title for r in results] == [
        "Interfaces matter",
        "Dendrites",
        'A PDF about "dendrite" suppression',
    ]
    (request,) = web.requests
    assert request.path == "/res/v1/web/search" and request.query["q"] == ["dendrites"]
    assert request.headers["x-subscription-token"] == "test-key"
    with pytest.raises(WebSearchError, match="check BRAVE_API_KEY"):
        BraveSearch("wrong", base_url=web.base_url).search("dendrites", 1)


def test_an_unreachable_provider_is_one_clear_error() -> None:
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(WebSearchError, match=f"cannot reach SearXNG at http://127.0.0.1:{port}/search"):
        SearxngSearch(f"http://127.0.0.1:{port}").search("anything", 5)


def test_provider_settings_name_what_is_missing() -> None:
    with pytest.raises(ConfigError, match="set SEARXNG_URL"):
        provider_from_settings(Settings())
    tavily = Settings.model_validate({"web": {"provider": "tavily"}})
    with pytest.raises(ConfigError, match="set TAVILY_API_KEY"):
        provider_from_settings(tavily, environ={})
    assert provider_from_settings(tavily, environ={"TAVILY_API_KEY": "k"}).name == "Tavily"
    brave = Settings.model_validate({"web": {"provider": "brave"}})
    with pytest.raises(ConfigError, match="set BRAVE_API_KEY"):
        provider_from_settings(brave, environ={"TAVILY_API_KEY": "k"})


# ---- the retriever -------------------------------------------------------------------------------


def retriever_for(web: FakeWeb, cache_dir: Path, egress: EgressLog | None = None) -> WebRetriever:
    settings = Settings.model_validate(
        {
            "web": {"enabled": True, "searxng_url": web.base_url, "allow_private": True, "timeout_s": 5},
            "retrieval": {"chunk_tokens": 64, "chunk_overlap": 8},
        }
    )
    return web_retriever(settings, egress=egress, cache_dir=cache_dir)


def test_the_web_retriever_ranks_passages_from_the_pages_it_read(web: FakeWeb, tmp_path: Path) -> None:
    egress = EgressLog()
    retriever = retriever_for(web, tmp_path / "cache", egress)
    assert isinstance(retriever, Retriever)
    passages = retriever.search("dendrite growth during fast charging", 10)

    # The page that talks about dendrites ranks first although the engine listed it second.
    assert passages[0].source.location == web.url("/dendrites")
    assert passages[0].source.title == "Why solid-state batteries fail"
    assert "Lithium dendrites grow" in passages[0].text and passages[0].score > 0
    assert passages[0].source.end > passages[0].source.start
    # Every result is represented; the PDF, which cannot be read, by its snippet.
    by_url = {p.source.location: p for p in passages}
    assert set(by_url) == {web.url("/dendrites"), web.url("/interfaces"), web.url("/paper.pdf")}
    assert by_url[web.url("/paper.pdf")].text == "Coatings suppress dendrites."
    assert by_url[web.url("/paper.pdf")].source.title == 'A PDF about "dendrite" suppression'
    assert not any("<" in p.text or "Copyright" in p.text for p in passages)  # text, no markup
    assert retriever.problems == {web.url("/paper.pdf"): "not a web page (application/pdf)"}
    assert (egress.records[0].kind, egress.records[0].detail) == (
        "web-search",
        "dendrite growth during fast charging",
    )
    assert sorted(r.detail for r in egress.records if r.kind == "page-fetch") == sorted(
        web.url(p) for p in ("/interfaces", "/dendrites", "/paper.pdf")
    )
    assert len(retriever.search("dendrites", 2)) == 2 and retriever.search("dendrites", 0) == []


def test_a_second_retriever_answers_from_the_cache(web: FakeWeb, tmp_path: Path) -> None:
    first = retriever_for(web, tmp_path / "cache").search("dendrite growth", 10)
    sent = len(web.requests)
    assert web.queries() == ["dendrite growth"] and sent == 4  # one search, three pages
    egress = EgressLog()
    again = retriever_for(web, tmp_path / "cache", egress).search("dendrite growth", 10)
    assert again == first
    # Nothing new was sent, except the PDF, whose failure is not cached (it may work later).
    assert web.paths()[sent:] == ["/paper.pdf"]
    assert [r.detail for r in egress.records] == [web.url("/paper.pdf")]
    assert (
        retriever_for(web, tmp_path / "cache").fingerprint()
        == retriever_for(web, tmp_path / "x").fingerprint()
    )


def test_the_cache_forgets_old_entries(tmp_path: Path) -> None:
    now = [1000.0]
    cache = WebCache(tmp_path, max_age_s=60, clock=lambda: now[0])
    cache.put("search", "q", {"results": []})
    assert cache.get("search", "q") == {"results": []}
    assert cache.get("search", "other") is None
    now[0] += 61
    assert cache.get("search", "q") is None
    (tmp_path / "page").mkdir()
    next(iter((tmp_path / "search").iterdir())).write_text("{not json", encoding="utf-8")
    assert cache.get("search", "q") is None


def test_pages_read_with_private_addresses_allowed_are_not_served_when_they_are_not(
    web: FakeWeb, tmp_path: Path
) -> None:
    retriever_for(web, tmp_path / "cache").search("dendrites", 10)
    settings = Settings.model_validate({"web": {"enabled": True, "searxng_url": web.base_url}})
    strict = web_retriever(settings, cache_dir=tmp_path / "cache")
    passages = strict.search("dendrites", 10)
    assert {p.text for p in passages} == {s for _, _, s in web.results}  # snippets only
    assert all("loopback" in reason for reason in strict.problems.values())


def test_snippets_only_when_pages_are_not_fetched(web: FakeWeb, tmp_path: Path) -> None:
    settings = Settings.model_validate(
        {"web": {"enabled": True, "searxng_url": web.base_url, "fetch_pages": False}}
    )
    passages = web_retriever(settings, cache_dir=tmp_path).search("cathode contact", 5)
    assert passages[0].text == "Contact loss at the cathode."
    assert web.paths() == ["/search"]


# ---- KB and web together -------------------------------------------------------------------------


class Fixed:
    def __init__(self, name: str, texts: list[str]) -> None:
        self.name, self.texts = name, texts

    def search(self, query: str, k: int) -> list[Passage]:
        return [
            Passage(t, Source(f"{self.name}{i}", t, f"/{self.name}/{i}")) for i, t in enumerate(self.texts)
        ][:k]

    def fingerprint(self) -> str:
        return self.name


def test_combined_results_interleave_so_both_sources_are_represented() -> None:
    kb = Fixed("kb", ["kb one", "kb two", "kb three", "shared text"])
    web = Fixed("web", ["web one", "shared  text"])
    combined = CombinedRetriever(kb, web)
    assert [p.text for p in combined.search("q", 10)] == [
        "kb one",
        "web one",
        "kb two",
        "shared  text",
        "kb three",
    ]
    assert [p.text for p in combined.search("q", 3)] == ["kb one", "web one", "kb two"]
    assert combined.fingerprint() != CombinedRetriever(kb, Fixed("web2", [])).fingerprint()
    assert combined.search("q", 0) == []
