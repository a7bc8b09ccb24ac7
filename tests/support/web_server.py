"""A real HTTP server on 127.0.0.1 that plays a small web: three search APIs and some pages.

    GET  /search?q=…&format=json      SearXNG's JSON API
    POST /search  {"query": …}         Tavily's API (``Authorization: Bearer KEY``)
    GET  /res/v1/web/search?q=…       Brave's API (``X-Subscription-Token: KEY``)
    GET  anything else                 a page from `server.pages` (404 when there is none)

Each search API answers every query with `server.results` (path or URL, title, snippet) in its own
reply format. Every request is kept in `server.requests`, so a test can check what was sent, and
that a cached or refused fetch sent nothing. HTTP/1.0: one connection per request, and a page without
a Content-Length simply ends when the connection closes.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

__all__ = ["FakeWeb", "PageRoute", "Request", "html_page"]


@dataclass(frozen=True)
class PageRoute:
    """How to answer a page request."""

    body: bytes = b""
    content_type: str = "text/html; charset=utf-8"
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    """Wait this long before answering (a slow site)."""
    declare_length: bool = True
    """False: no Content-Length; the body ends when the connection closes."""


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes


def html_page(title: str, *paragraphs: str) -> PageRoute:
    """An article page with navigation and footer boilerplate around its text."""
    text = "".join(f"<p>{p}</p>" for p in paragraphs)
    body = (
        f"<html><head><title>{title}</title></head><body><nav>Home | About | Contact</nav>"
        f"<article><h1>{title}</h1>{text}</article><footer>Copyright the authors</footer></body></html>"
    )
    return PageRoute(body.encode("utf-8"))


class FakeWeb:
    def __init__(self, api_key: str = "test-key") -> None:
        self.api_key = api_key
        self.pages: dict[str, PageRoute] = {}
        self.results: list[tuple[str, str, str]] = []
        self.searxng_json = True
        """False: answer SearXNG's JSON format with 403, as an instance that does not enable it."""
        self._requests: list[Request] = []
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle --------------------------------------------------------------------------------

    def __enter__(self) -> FakeWeb:
        handler = type("_BoundHandler", (_Handler,), {"web": self})
        self._httpd = _QuietServer(("127.0.0.1", 0), handler)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._closing.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    # -- what tests use ---------------------------------------------------------------------------

    @property
    def port(self) -> int:
        assert self._httpd is not None, "use FakeWeb as a context manager"
        return int(self._httpd.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return path if "://" in path else f"{self.base_url}{path}"

    @property
    def requests(self) -> list[Request]:
        with self._lock:
            return list(self._requests)

    def paths(self) -> list[str]:
        """The paths requested so far, in order."""
        return [r.path for r in self.requests]

    def queries(self) -> list[str]:
        """The search queries received so far by any of the three APIs, in order."""
        found = []
        for r in self.requests:
            if r.method == "POST":
                found.append(json.loads(r.body)["query"])
            elif r.path in ("/search", "/res/v1/web/search"):
                found.append(r.query["q"][0])
        return found

    # -- called from handler threads --------------------------------------------------------------

    def _record(self, request: Request) -> None:
        with self._lock:
            self._requests.append(request)

    def _items(self) -> list[dict[str, str]]:
        return [{"url": self.url(p), "title": t, "snippet": s} for p, t, s in self.results]


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients hang up on purpose (size limits, timeouts)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"
    web: FakeWeb

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _request(self) -> Request:
        parts = urlsplit(self.path)
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        request = Request(
            self.command,
            parts.path,
            parse_qs(parts.query),
            {k.lower(): v for k, v in self.headers.items()},
            body,
        )
        self.web._record(request)
        return request

    def do_GET(self) -> None:
        request = self._request()
        if request.path == "/search":
            if request.query.get("format") != ["json"] or not self.web.searxng_json:
                self._send(403, b"Forbidden", "text/html")
                return
            results = [
                {"url": i["url"], "title": i["title"], "content": i["snippet"], "engine": "fake"}
                for i in self.web._items()
            ]
            self._json(
                {"query": request.query["q"][0], "number_of_results": len(results), "results": results}
            )
        elif request.path == "/res/v1/web/search":
            if request.headers.get("x-subscription-token") != self.web.api_key:
                self._json({"error": "unauthorized"}, 401)
                return
            count = int(request.query.get("count", ["20"])[0])
            results = [
                {"url": i["url"], "title": i["title"], "description": i["snippet"]}
                for i in self.web._items()[:count]
            ]
            self._json({"type": "search", "web": {"type": "search", "results": results}})
        else:
            self._page(request.path)

    def do_POST(self) -> None:
        request = self._request()
        if request.path != "/search":
            self._send(404, b"not found", "text/plain")
            return
        if request.headers.get("authorization") != f"Bearer {self.web.api_key}":
            self._json({"detail": {"error": "Unauthorized: missing or invalid API key."}}, 401)
            return
        body = json.loads(request.body)
        results = [
            {"url": i["url"], "title": i["title"], "content": i["snippet"], "score": 0.9}
            for i in self.web._items()[: body.get("max_results", 5)]
        ]
        self._json({"query": body["query"], "results": results, "response_time": 0.01})

    def _page(self, path: str) -> None:
        route = self.web.pages.get(path)
        if route is None:
            self._send(404, b"<html><body>not found</body></html>", "text/html")
            return
        if route.delay_s and self.web._closing.wait(route.delay_s):
            return
        self._send(route.status, route.body, route.content_type, route.headers, route.declare_length)

    def _json(self, payload: object, status: int = 200) -> None:
        self._send(status, json.dumps(payload).encode(), "application/json")

    def _send(
        self,
        status: int,
        body: bytes,
        content_type: str,
        headers: dict[str, str] | None = None,
        declare_length: bool = True,
    ) -> None:
        self.send_response(status)
        self.send_header("content-type", content_type)
        if declare_length:
            self.send_header("content-length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        try:
            for start in range(0, len(body), 65536):
                self.wfile.write(body[start : start + 65536])
        except OSError:
            pass  # the client stopped reading (a size limit): expected
