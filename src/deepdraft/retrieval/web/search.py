"""Web search, opt-in: three search providers and a `Retriever` that reads the pages they find.

Providers (each one HTTP request per query; every base URL can be overridden, which is how the
tests point them at servers on loopback):

    `SearxngSearch`  ``GET {base}/search?q=…&format=json`` on a SearXNG instance — self-hosted, no
                     key, the privacy-respecting default. The instance must allow the ``json`` format.
    `TavilySearch`   ``POST https://api.tavily.com/search`` with a JSON body; key from TAVILY_API_KEY,
                     sent as ``Authorization: Bearer``.
    `BraveSearch`    ``GET https://api.search.brave.com/res/v1/web/search?q=…``; key from
                     BRAVE_API_KEY, sent as ``X-Subscription-Token``.

Keys are read from the environment only and always travel in headers, so they never reach the
settings file, the journal or the egress audit (which records query texts and endpoints).

`WebRetriever.search(query, k)`: search → fetch each result's page (`deepdraft.retrieval.web.fetch`:
http(s) only, no private addresses unless allowed, size and time limits) → chunk the pages like
documents of a knowledge base → rank the chunks for the query with BM25 → passages whose source is
the page's URL and title. A page that cannot be fetched is represented by its search snippet, and
every result keeps at least one passage even when BM25 finds none of the query's words in it (the
search engine matched it for reasons our analyzer cannot see, such as synonyms).

Trade-offs:

* Search results and extracted pages are cached as JSON under ``DEEPDRAFT_HOME/web-cache/``, keyed
  by a hash of the query (with provider and endpoint) or of the URL, for `CACHE_MAX_AGE_S`. A
  resumed run therefore sees the same results and fetches nothing again; a run a week later sees
  today's web. Pages that failed are remembered only for the life of the retriever (a server that
  was down may be up tomorrow).
* Pages are fetched a few at a time (`PAGE_WORKERS`) so one slow site costs its own timeout, not
  the sum of all of them.
* A provider that fails (unreachable, key refused, broken reply) raises `WebSearchError`: the run
  stops with one line and can be resumed, instead of quietly writing a report without the web.
"""

from __future__ import annotations

import hashlib
import html
import importlib.util
import json
import logging
import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar, Protocol

import httpx
import numpy as np

from deepdraft.egress import EgressLog, public_endpoint
from deepdraft.errors import ConfigError, WebSearchError
from deepdraft.fsutil import atomic_write_text
from deepdraft.ports import Passage, Source
from deepdraft.retrieval.documents.chunking import Chunk, chunk_document
from deepdraft.retrieval.documents.values import Document
from deepdraft.retrieval.index.analysis import analyze, new_bm25, passage_terms
from deepdraft.retrieval.web.fetch import USER_AGENT, Page, PageFetcher, PageRefused
from deepdraft.settings import Settings

__all__ = [
    "CACHE_MAX_AGE_S",
    "BraveSearch",
    "SearchProvider",
    "SearchResult",
    "SearxngSearch",
    "TavilySearch",
    "WebCache",
    "WebRetriever",
    "WebSearchError",
    "provider_from_settings",
    "web_retriever",
]

log = logging.getLogger(__name__)

CACHE_MAX_AGE_S = 7 * 24 * 3600
PAGE_WORKERS = 4
_TAG = re.compile(r"<[^>]+>")


@dataclass(frozen=True)
class SearchResult:
    url: str
    title: str
    snippet: str


class SearchProvider(Protocol):
    @property
    def name(self) -> str:
        """The provider, as a user knows it (e.g. "SearXNG")."""
        ...

    @property
    def endpoint(self) -> str:
        """Where queries go, as ``scheme://host:port/path`` (for the audit and the fingerprint)."""
        ...

    def search(self, query: str, count: int) -> list[SearchResult]: ...

    def close(self) -> None: ...


# ---- providers -----------------------------------------------------------------------------------


class _JSONSearchAPI:
    """What the three providers share: one JSON request per query, errors turned into one line."""

    name: ClassVar[str]
    key_variable: ClassVar[str] = ""

    def __init__(
        self, base_url: str, *, timeout_s: float = 20.0, egress: EgressLog | None = None, retries: int = 1
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.egress = egress
        self.retries = retries
        # Environment proxies are honoured here (unlike page fetches): the endpoint is one the user
        # chose, and a corporate network may only reach it through its proxy.
        self._client = httpx.Client(timeout=httpx.Timeout(timeout_s), headers={"User-Agent": USER_AGENT})

    @property
    def endpoint(self) -> str:
        return public_endpoint(self._url())

    def _url(self) -> str:
        raise NotImplementedError

    def close(self) -> None:
        self._client.close()

    def _call(self, query: str, request: Callable[[httpx.Client], httpx.Response]) -> Any:
        """Send one query (retrying timeouts, 429 and 5xx `retries` times); the decoded JSON reply."""
        for attempt in range(self.retries + 1):
            size = 0
            try:
                response = request(self._client)
                size = len(response.content)
            except httpx.TimeoutException as exc:
                failure = f"no answer within the timeout ({type(exc).__name__})"
            except httpx.HTTPError as exc:
                raise WebSearchError(f"cannot reach {self.name} at {self.endpoint}: {exc}") from exc
            else:
                if response.status_code < 400:
                    self._record(query, size)
                    return self._decode(response)
                failure = f"HTTP {response.status_code}"
                if response.status_code != 429 and response.status_code < 500:
                    self._record(query, size)
                    raise WebSearchError(self._refusal(response.status_code))
            self._record(query, size)
            if attempt < self.retries:
                time.sleep(0.5 * (attempt + 1))
        raise WebSearchError(f"{self.name} at {self.endpoint} failed: {failure} (tried {self.retries + 1}x)")

    def _record(self, query: str, size: int) -> None:
        if self.egress is not None:
            self.egress.record("web-search", self._url(), query, size)

    def _decode(self, response: httpx.Response) -> Any:
        try:
            return response.json()
        except ValueError as exc:
            raise WebSearchError(
                f"{self.name} at {self.endpoint} did not answer with JSON (is that the right URL?)"
            ) from exc

    def _refusal(self, status: int) -> str:
        if status in (401, 403) and self.key_variable:
            return f"{self.name} refused the API key (HTTP {status}): check {self.key_variable}"
        return f"{self.name} at {self.endpoint} refused the query (HTTP {status})"

    def _results(self, items: Any, url: str, title: str, snippet: str, count: int) -> list[SearchResult]:
        """Results from a list of JSON objects: http(s) URLs only, each once, at most `count`."""
        if not isinstance(items, list):
            raise WebSearchError(f"{self.name} at {self.endpoint} sent a reply without a result list")
        found: dict[str, SearchResult] = {}
        for item in items:
            if not isinstance(item, dict):
                continue
            link = item.get(url)
            if not isinstance(link, str) or not link.startswith(("http://", "https://")) or link in found:
                continue
            found[link] = SearchResult(link, _plain(item.get(title)), _plain(item.get(snippet)))
            if len(found) == count:
                break
        return list(found.values())


class SearxngSearch(_JSONSearchAPI):
    name = "SearXNG"

    def _url(self) -> str:
        return f"{self.base_url}/search"

    def search(self, query: str, count: int) -> list[SearchResult]:
        data = self._call(
            query, lambda client: client.get(self._url(), params={"q": query, "format": "json"})
        )
        results = data.get("results") if isinstance(data, dict) else None
        return self._results(results, "url", "title", "content", count)

    def _refusal(self, status: int) -> str:
        if status == 403:
            return (
                f"SearXNG at {self.endpoint} refused the JSON format (HTTP 403): add `json` to "
                "`search.formats` in the instance's settings.yml"
            )
        return super()._refusal(status)


class TavilySearch(_JSONSearchAPI):
    name = "Tavily"
    key_variable = "TAVILY_API_KEY"
    DEFAULT_URL = "https://api.tavily.com"

    def __init__(self, api_key: str, base_url: str = DEFAULT_URL, **options: Any) -> None:
        super().__init__(base_url, **options)
        self._client.headers["Authorization"] = f"Bearer {api_key}"

    def _url(self) -> str:
        return f"{self.base_url}/search"

    def search(self, query: str, count: int) -> list[SearchResult]:
        body = {"query": query, "max_results": min(count, 20), "search_depth": "basic"}
        data = self._call(query, lambda client: client.post(self._url(), json=body))
        results = data.get("results") if isinstance(data, dict) else None
        return self._results(results, "url", "title", "content", count)


class BraveSearch(_JSONSearchAPI):
    name = "Brave Search"
    key_variable = "BRAVE_API_KEY"
    DEFAULT_URL = "https://api.search.brave.com"

    def __init__(self, api_key: str, base_url: str = DEFAULT_URL, **options: Any) -> None:
        super().__init__(base_url, **options)
        self._client.headers["X-Subscription-Token"] = api_key
        self._client.headers["Accept"] = "application/json"

    def _url(self) -> str:
        return f"{self.base_url}/res/v1/web/search"

    def search(self, query: str, count: int) -> list[SearchResult]:
        params = {"q": query, "count": str(min(count, 20))}
        data = self._call(query, lambda client: client.get(self._url(), params=params))
        web = data.get("web") if isinstance(data, dict) else None
        # A query with no web results has no `web` object at all.
        results = web.get("results") if isinstance(web, dict) else []
        return self._results(results, "url", "title", "description", count)


def _plain(value: Any) -> str:
    """A title or snippet as plain text: providers mark matches up with <strong> and entities."""
    if not isinstance(value, str):
        return ""
    return " ".join(html.unescape(_TAG.sub("", value)).split())


def provider_from_settings(
    settings: Settings, *, egress: EgressLog | None = None, environ: Mapping[str, str] | None = None
) -> SearchProvider:
    """The provider `settings.web` names; `ConfigError` saying what is missing."""
    environ = os.environ if environ is None else environ
    web = settings.web
    options: dict[str, Any] = {"timeout_s": web.timeout_s, "egress": egress}
    if web.provider == "searxng":
        if not web.searxng_url:
            raise ConfigError(
                "web search uses SearXNG unless told otherwise: set SEARXNG_URL (or web.searxng_url), "
                "e.g. http://localhost:8888, or choose web.provider = tavily or brave"
            )
        return SearxngSearch(web.searxng_url, **options)
    variable = "TAVILY_API_KEY" if web.provider == "tavily" else "BRAVE_API_KEY"
    key = environ.get(variable, "").strip()
    if not key:
        raise ConfigError(f"web.provider is {web.provider}: set {variable} in the environment")
    if web.provider == "tavily":
        return TavilySearch(key, **options)
    return BraveSearch(key, **options)


# ---- the cache -----------------------------------------------------------------------------------


class WebCache:
    """JSON values in files named by a hash of their key; a value older than `max_age_s` is a miss.

    Written atomically (temporary file + rename), so a crash never leaves a half-written entry; an
    entry that cannot be read is a miss. Failing to write only costs a later refetch, so it is logged,
    not raised.
    """

    def __init__(
        self, folder: Path, max_age_s: float = CACHE_MAX_AGE_S, clock: Callable[[], float] = time.time
    ) -> None:
        self.folder = Path(folder)
        self.max_age_s = max_age_s
        self._clock = clock

    def _path(self, kind: str, key: str) -> Path:
        return self.folder / kind / f"{hashlib.sha256(key.encode('utf-8')).hexdigest()[:40]}.json"

    def get(self, kind: str, key: str) -> dict[str, Any] | None:
        try:
            entry = json.loads(self._path(kind, key).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(entry, dict) or entry.get("key") != key:
            return None
        stored, value = entry.get("stored_at"), entry.get("value")
        if not isinstance(stored, int | float) or self._clock() - stored > self.max_age_s:
            return None
        return value if isinstance(value, dict) else None

    def put(self, kind: str, key: str, value: dict[str, Any]) -> None:
        path = self._path(kind, key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            entry = {"key": key, "stored_at": self._clock(), "value": value}
            # Atomic but not flushed: an entry lost to a power cut is simply fetched again.
            atomic_write_text(path, json.dumps(entry, ensure_ascii=False), durable=False)
        except OSError as exc:
            log.warning("cannot write the web cache at %s: %s", path, exc)


# ---- the retriever -------------------------------------------------------------------------------


class WebRetriever:
    """A `Retriever` over the web: search, read the pages, rank their passages for the query."""

    def __init__(
        self,
        provider: SearchProvider,
        fetcher: PageFetcher | None,
        cache: WebCache | None = None,
        *,
        results_per_query: int = 5,
        chunk_tokens: int = 220,
        chunk_overlap: int = 40,
    ) -> None:
        self.provider = provider
        self.fetcher = fetcher
        self.cache = cache
        self.results_per_query = results_per_query
        self.chunk_tokens = chunk_tokens
        self.chunk_overlap = chunk_overlap
        self._failed: dict[str, str] = {}

    # -- the Retriever protocol ------------------------------------------------------------------

    def search(self, query: str, k: int) -> list[Passage]:
        """Up to `k` passages from the pages the provider finds for `query`, best first."""
        query = " ".join(query.split())
        if k <= 0 or not query:
            return []
        results = self._search(query)
        pages = self._pages([result.url for result in results])
        documents = [
            document
            for result in results
            if (document := _document(result, pages.get(result.url))) is not None
        ]
        chunks = [chunk_document(doc, self.chunk_tokens, self.chunk_overlap) for doc in documents]
        return _rank(query, chunks, k)

    def fingerprint(self) -> str:
        """Hash of where and how the web is searched (the web itself has no version to hash)."""
        described = {
            "provider": self.provider.name,
            "endpoint": self.provider.endpoint,
            "results_per_query": self.results_per_query,
            "pages": None if self.fetcher is None else {"allow_private": self.fetcher.allow_private},
            "chunking": [self.chunk_tokens, self.chunk_overlap],
        }
        digest = hashlib.sha256(json.dumps(described, sort_keys=True).encode("utf-8"))
        return "web-" + digest.hexdigest()[:12]

    # -- the rest --------------------------------------------------------------------------------

    @property
    def problems(self) -> dict[str, str]:
        """Pages that could not be used so far, URL → reason (their snippets stood in)."""
        return dict(self._failed)

    def close(self) -> None:
        self.provider.close()
        if self.fetcher is not None:
            self.fetcher.close()

    def __enter__(self) -> WebRetriever:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()

    def _search(self, query: str) -> list[SearchResult]:
        key = json.dumps([self.provider.name, self.provider.endpoint, query, self.results_per_query])
        cached = self.cache.get("search", key) if self.cache is not None else None
        if cached is not None and isinstance(cached.get("results"), list):
            return [SearchResult(**item) for item in cached["results"]]
        results = self.provider.search(query, self.results_per_query)
        if self.cache is not None:
            self.cache.put("search", key, {"query": query, "results": [asdict(r) for r in results]})
        return results

    def _pages(self, urls: Sequence[str]) -> dict[str, Page]:
        """The readable pages among `urls`, from the cache or fetched (a few at a time)."""
        if self.fetcher is None:
            return {}
        pages: dict[str, Page] = {}
        missing: list[str] = []
        for url in dict.fromkeys(urls):
            cached = self.cache.get("page", self._page_key(url)) if self.cache is not None else None
            if cached is not None:
                try:
                    pages[url] = Page(**cached)
                    continue
                except TypeError:  # written by another version: fetch again
                    pass
            if url not in self._failed:
                missing.append(url)
        if missing:
            with ThreadPoolExecutor(max_workers=min(PAGE_WORKERS, len(missing))) as pool:
                for url, outcome in zip(missing, pool.map(self._fetch, missing), strict=True):
                    if isinstance(outcome, Page):
                        pages[url] = outcome
                    else:
                        self._failed[url] = outcome
        return pages

    def _fetch(self, url: str) -> Page | str:
        """The page, or why it could not be used."""
        assert self.fetcher is not None
        try:
            page = self.fetcher.fetch(url)
        except PageRefused as exc:
            log.info("web page not used: %s: %s", url, exc)
            return str(exc)
        if self.cache is not None:
            self.cache.put("page", self._page_key(url), asdict(page))
        return page

    def _page_key(self, url: str) -> str:
        # A page read while private addresses were allowed must not be served once they are not.
        allowed = self.fetcher is not None and self.fetcher.allow_private
        return f"private-ok {url}" if allowed else url


def _document(result: SearchResult, page: Page | None) -> Document | None:
    """A search result as a document: its page's text, else its snippet, else nothing."""
    if page is not None:
        title = page.title or result.title or page.final_url
        return Document(doc_id=page.final_url, title=title, location=page.final_url, text=page.text)
    if result.snippet:
        return Document(
            doc_id=result.url, title=result.title or result.url, location=result.url, text=result.snippet
        )
    return None


def _rank(query: str, per_document: Sequence[Sequence[Chunk]], k: int) -> list[Passage]:
    """BM25 over the chunks of this query's documents; then each document's first chunk, if unseen."""
    chunks = [chunk for document in per_document for chunk in document]
    if not chunks:
        return []
    scores = _bm25_scores(query, chunks)
    order = sorted((i for i in range(len(chunks)) if scores[i] > 0), key=lambda i: (-scores[i], i))
    chosen = dict.fromkeys(order)
    start = 0
    for document in per_document:  # in the provider's order: its best result first
        if document:
            chosen.setdefault(start)
        start += len(document)
    return [_passage(chunks[i], float(scores[i])) for i in list(chosen)[:k]]


def _bm25_scores(query: str, chunks: Sequence[Chunk]) -> list[float]:
    """Lucene BM25 of each chunk for `query`, indexed like a knowledge base (title and headings too)."""
    vocabulary: dict[str, int] = {}
    token_ids: list[list[int]] = []
    for chunk in chunks:
        terms = passage_terms(chunk.title, chunk.headings, chunk.text)
        token_ids.append([vocabulary.setdefault(term, len(vocabulary)) for term in terms])
    wanted = [vocabulary[term] for term in analyze(query) if term in vocabulary]
    if not wanted:
        return [0.0] * len(chunks)
    bm25 = new_bm25()
    bm25.index((token_ids, vocabulary), create_empty_token=False, show_progress=False)
    scores: np.ndarray[Any, np.dtype[np.float32]] = bm25.get_scores_from_ids(wanted)
    return [float(score) for score in scores]


def _passage(chunk: Chunk, score: float) -> Passage:
    source = Source(chunk.doc_id, chunk.title, chunk.location, None, chunk.start, chunk.end)
    return Passage(text=chunk.text, source=source, score=score)


def web_retriever(
    settings: Settings,
    *,
    cache_dir: Path,
    egress: EgressLog | None = None,
    environ: Mapping[str, str] | None = None,
) -> WebRetriever:
    """The web retriever `settings` describe, caching pages and results under `cache_dir`."""
    web = settings.web
    if web.fetch_pages and importlib.util.find_spec("trafilatura") is None:
        raise ConfigError(
            'reading web pages needs trafilatura: pip install "deepdraft[documents]" '
            "(or set web.fetch_pages = false to use the search snippets alone)"
        )
    provider = provider_from_settings(settings, egress=egress, environ=environ)
    fetcher = None
    if web.fetch_pages:
        fetcher = PageFetcher(
            allow_private=web.allow_private,
            max_bytes=web.max_page_bytes,
            timeout_s=web.timeout_s,
            egress=egress,
        )
    return WebRetriever(
        provider,
        fetcher,
        WebCache(cache_dir),
        results_per_query=web.results_per_query,
        chunk_tokens=settings.retrieval.chunk_tokens,
        chunk_overlap=settings.retrieval.chunk_overlap,
    )
