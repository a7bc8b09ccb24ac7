"""Fetching a web page safely and turning it into text.

A search result's URL comes from the internet, so it is untrusted input: fetched naively it could
make deepdraft read a router's admin page, a cloud metadata service (169.254.169.254) or a service
on this machine — server-side request forgery. `PageFetcher` therefore:

* fetches only ``http`` and ``https`` URLs;
* refuses every address that is not publicly routable — loopback, private, link-local, multicast,
  reserved, unspecified, shared (CGNAT) and IPv4-mapped forms of them — unless `allow_private`.
  The check runs inside the connection itself (`_GuardedBackend.connect_tcp`): the host name is
  resolved once, *every* address it resolves to must pass, and the socket then connects to an
  address that passed. Checking the URL first and connecting later would resolve twice, and a
  hostile DNS server could answer differently the second time (DNS rebinding).
* follows at most `MAX_REDIRECTS` redirects by hand, checking the scheme of each hop, whose
  connection goes through the same check;
* refuses a declared body over `max_bytes` before reading it, stops reading once `max_bytes` have
  arrived (the page is then refused, not cut: a truncated page would be cited as if whole), bounds
  every network operation by `timeout_s` and the whole fetch, redirects included, by the same time;
* reads only HTML and plain text (by ``Content-Type``; a missing type is tried as HTML).

HTML is reduced to its main text by trafilatura, from the bytes fetched here — trafilatura never
fetches anything itself. Its Markdown output keeps headings, which chunking turns into heading paths.

Trade-offs: proxies from the environment are ignored for page fetches (``trust_env=False``) — through
a proxy the address check would only see the proxy. httpx has no public way to give its connection
pool a network backend, so `_GuardedTransport` replaces the pool its parent built; a test fetches a
loopback page with the check on to prove the backend is really used.
"""

from __future__ import annotations

import codecs
import ipaddress
import socket
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpcore
import httpx

from deepdraft._version import __version__
from deepdraft.egress import EgressLog
from deepdraft.retrieval.documents.corpus import decode_text
from deepdraft.retrieval.documents.formats import markup
from deepdraft.retrieval.documents.formats.extracted import Unreadable

__all__ = [
    "MAX_REDIRECTS",
    "USER_AGENT",
    "BlockedAddress",
    "Page",
    "PageFetcher",
    "PageRefused",
    "Resolver",
    "address_problem",
    "extract_page",
    "vet_host",
]

MAX_REDIRECTS = 5
USER_AGENT = f"deepdraft/{__version__} (research assistant; fetches pages a user's web search found)"
_PAGE_TYPES = {"text/html": "html", "application/xhtml+xml": "html", "text/plain": "text"}
_READ_CHUNK = 64 * 1024

Resolver = Callable[..., Sequence[tuple[Any, ...]]]
"""`socket.getaddrinfo`, or a stand-in with its signature (tests)."""


class PageRefused(Exception):
    """A page that is not used, and why (one line, shown to the user); its snippet stands in."""


class BlockedAddress(PageRefused):
    """The host resolves to an address that may not be fetched (loopback, private, …)."""


@dataclass(frozen=True)
class Page:
    """A fetched page's main text. `final_url` is where it came from after redirects."""

    url: str
    final_url: str
    title: str
    text: str
    content_type: str


# ---- the address policy --------------------------------------------------------------------------


def address_problem(address: str) -> str | None:
    """Why `address` (an IP literal) may not be fetched, or None for a public address."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone (fe80::1%eth0)
    except ValueError:
        return "not an IP address"
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
    # Order matters: loopback and link-local ranges are also "private"; name the specific reason.
    checks = (
        ("loopback", ip.is_loopback),
        ("link-local", ip.is_link_local),
        ("multicast", ip.is_multicast),  # is_global is True for global multicast: check it apart
        ("unspecified", ip.is_unspecified),
        ("reserved", ip.is_reserved),  # before "private": Python counts 240.0.0.0/4 as both
        ("private", ip.is_private),
        ("not publicly routable", not ip.is_global),
    )
    return next((name for name, applies in checks if applies), None)


def vet_host(
    host: str, port: int, *, allow_private: bool, resolve: Resolver = socket.getaddrinfo
) -> list[str]:
    """The addresses of `host` that may be connected to; raises if *any* of them is refused.

    One bad address refuses the host: a name that resolves to both a public and a private address is
    exactly what a rebinding attack looks like, and which one a connection uses is not ours to pick.
    """
    try:
        infos = resolve(host, port, 0, socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise PageRefused(f"cannot resolve {host}: {getattr(exc, 'strerror', None) or exc}") from exc
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not addresses:
        raise PageRefused(f"{host} resolves to no address")
    if not allow_private:
        for address in addresses:
            problem = address_problem(address)
            if problem is not None:
                raise BlockedAddress(
                    f"{host} resolves to {address} ({problem}); web.allow_private = true allows it"
                )
    return addresses


class _GuardedBackend(httpcore.SyncBackend):
    """Connects only to addresses `vet_host` accepts, and only to those it vetted."""

    def __init__(self, *, allow_private: bool, resolve: Resolver) -> None:
        self.allow_private = allow_private
        self.resolve = resolve

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        addresses = vet_host(host, port, allow_private=self.allow_private, resolve=self.resolve)
        options = list(socket_options) if socket_options is not None else None
        failure: httpcore.ConnectError | None = None
        for address in addresses:
            try:
                return super().connect_tcp(address, port, timeout, local_address, options)
            except httpcore.ConnectError as exc:
                failure = exc
        assert failure is not None  # vet_host returns at least one address
        raise failure


class _GuardedTransport(httpx.HTTPTransport):
    """httpx's transport with a connection pool whose every connection goes through `_GuardedBackend`."""

    def __init__(self, *, allow_private: bool, resolve: Resolver) -> None:
        super().__init__(trust_env=False)
        self._pool = httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context(trust_env=False),
            network_backend=_GuardedBackend(allow_private=allow_private, resolve=resolve),
        )


# ---- fetching ------------------------------------------------------------------------------------


class PageFetcher:
    """Fetches pages under the policy in the module docstring; thread-safe (one shared client)."""

    def __init__(
        self,
        *,
        allow_private: bool = False,
        max_bytes: int = 3_000_000,
        timeout_s: float = 20.0,
        egress: EgressLog | None = None,
        resolve: Resolver = socket.getaddrinfo,
    ) -> None:
        self.allow_private = allow_private
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s
        self.egress = egress
        self._client = httpx.Client(
            transport=_GuardedTransport(allow_private=allow_private, resolve=resolve),
            timeout=httpx.Timeout(timeout_s),
            follow_redirects=False,  # every hop is checked below
            trust_env=False,
            headers={
                "User-Agent": USER_AGENT,
                "Accept": "text/html, application/xhtml+xml, text/plain",
                # Uncompressed: the size limit then bounds what is held in memory, not a zip bomb's
                # compressed size (a server that compresses anyway is still decoded and limited).
                "Accept-Encoding": "identity",
            },
        )

    def close(self) -> None:
        self._client.close()

    def fetch(self, url: str) -> Page:
        """The page at `url`, extracted; `PageRefused` says why it cannot be used."""
        deadline = time.monotonic() + self.timeout_s
        current = url
        for _ in range(MAX_REDIRECTS + 1):
            _check_scheme(current)
            if time.monotonic() > deadline:
                raise PageRefused(f"took longer than {self.timeout_s:g} s")
            location, data, content_type = self._hop(current, deadline)
            if location is None:
                title, text = extract_page(data, content_type, current)
                return Page(url, current, title, text, _media_type(content_type) or "text/html")
            current = urljoin(current, location)
        raise PageRefused(f"more than {MAX_REDIRECTS} redirects")

    def _hop(self, url: str, deadline: float) -> tuple[str | None, bytes, str]:
        """One request: (redirect target, b"", "") or (None, body, Content-Type header)."""
        body = bytearray()
        blocked = False
        try:
            with self._client.stream("GET", url) as response:
                return self._read(response, body, deadline)
        except BlockedAddress:
            blocked = True  # nothing was sent: the address check refused before connecting
            raise
        except httpx.TimeoutException as exc:
            raise PageRefused(f"timed out after {self.timeout_s:g} s") from exc
        except httpx.HTTPError as exc:
            raise PageRefused(f"request failed ({type(exc).__name__}: {exc})") from exc
        finally:
            if not blocked and self.egress is not None:
                self.egress.record("page-fetch", url, url, len(body))

    def _read(
        self, response: httpx.Response, body: bytearray, deadline: float
    ) -> tuple[str | None, bytes, str]:
        if response.is_redirect:
            location = response.headers.get("location")
            if not location:
                raise PageRefused(f"HTTP {response.status_code} redirect without a Location")
            return location, b"", ""
        if response.status_code >= 400:
            raise PageRefused(f"HTTP {response.status_code}")
        header = response.headers.get("content-type", "")
        if _media_type(header) and _media_type(header) not in _PAGE_TYPES:
            raise PageRefused(f"not a web page ({_media_type(header)})")
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            raise PageRefused(f"too large ({int(declared):,} bytes; the limit is {self.max_bytes:,})")
        for piece in response.iter_bytes(_READ_CHUNK):
            body += piece
            if len(body) > self.max_bytes:
                raise PageRefused(f"too large (over the limit of {self.max_bytes:,} bytes)")
            if time.monotonic() > deadline:
                raise PageRefused(f"took longer than {self.timeout_s:g} s")
        return None, bytes(body), header


def extract_page(data: bytes, content_type: str, url: str) -> tuple[str, str]:
    """(title, main text) of a page's bytes; `PageRefused` when no readable text is left.

    HTML goes through trafilatura (boilerplate such as menus and footers removed, headings kept as
    Markdown); plain text is decoded like a text file of a corpus. A page nested deeper than
    trafilatura's parser reads is read block by block, and one past the deeper bound of our own
    parse is refused as such, as a document would be (see `deepdraft.retrieval.documents.formats.markup`).
    """
    charset = _charset(content_type)
    if _media_type(content_type) == "text/plain":
        text = data.decode(charset, errors="replace") if charset else decode_text(data)
        title = ""
    else:
        import trafilatura  # imported on first use: it takes a while, and only web pages need it

        # With a declared charset, decode here; otherwise trafilatura reads <meta charset> itself.
        document: str | bytes = data.decode(charset, errors="replace") if charset else data
        try:
            root = markup.parse_html(data)
        except Unreadable as exc:
            raise PageRefused(str(exc)) from exc
        if root is not None and markup.nesting_depth(root) >= markup.TRAFILATURA_DEPTH:
            text = markup.blocks_text(root)
        else:
            text = trafilatura.extract(
                document,
                url=url,
                output_format="markdown",
                include_formatting=True,
                include_comments=False,
                include_links=False,
                include_images=False,
            )
        metadata = trafilatura.extract_metadata(document)
        title = (metadata.title or "") if metadata is not None else ""
    if not text or not text.strip():
        raise PageRefused("no readable text on the page")
    return " ".join(title.split()), text.strip()


def _media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def _charset(content_type: str) -> str | None:
    """The charset a Content-Type header declares, if Python knows it."""
    for parameter in content_type.split(";")[1:]:
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "charset":
            charset = value.strip().strip('"').lower()
            try:
                codecs.lookup(charset)
            except LookupError:
                return None
            return charset
    return None


def _check_scheme(url: str) -> None:
    scheme = urlsplit(url).scheme.lower()
    if scheme not in ("http", "https"):
        raise PageRefused(f"not an http(s) URL ({scheme or 'no scheme'})")
