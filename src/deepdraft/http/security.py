"""Who may talk to deepdraft's HTTP servers, and from where: one set of rules for all of them.

`deepdraft serve` (the REST API and page), `deepdraft serve-model` (the embedded model's
OpenAI-compatible endpoint) and `deepdraft mcp --transport http` all go through `protect`, so the
three answer the same request the same way. The rules, and why:

* **Where it listens.** 127.0.0.1 unless told otherwise. Anything else exposes the user's documents
  and LLM to the network, so a non-loopback address without a token is refused at start-up —
  there is no "I know what I'm doing" switch that skips it.
* **The token.** With one, every protected request must carry ``Authorization: Bearer <token>``
  (the scheme in any case, as HTTP defines it); the comparison is constant-time. The REST
  server's page carries no data and is served without it (the page asks for the token and sends
  it with each request; it never goes into a URL, where logs and browser history would keep it).
* **Host names (DNS rebinding).** A web page can point a name it controls at 127.0.0.1; its
  scripts then talk to the loopback server as if it were their own origin, and read the answers.
  Without a token, only requests addressed to a loopback name (127.0.0.1, localhost, [::1], or
  the loopback address the server is bound to) are answered; any other ``Host`` gets 400, from
  Starlette's `TrustedHostMiddleware`. With a token any name is answered: a rebinding page
  cannot send a token it does not know, and a server behind a proxy or on a LAN name has a name
  nobody could list in advance.
* **Cross-site writes.** Browsers send a form POST — a multipart upload included — to any site
  without asking it first, so a page could plant documents or start runs. A request that may
  change something (any method but GET, HEAD and OPTIONS) is refused with 403 when a browser says
  it comes from elsewhere: ``Sec-Fetch-Site`` other than ``same-origin`` or ``none``, or, from a
  browser too old to send that, an ``Origin`` other than the server's own. A request with neither
  header does not come from a browser (curl, the Python client, the MCP SDK) and is let through:
  whoever sends it can already reach the port. This holds with a token too.
* **CORS** is off: a page from another origin cannot read the API. ``--cors-origin`` allows named
  origins only (no wildcard); those may then also send changes.

Together: a token-less loopback server is never readable by a web page the user happens to visit
(no CORS, no foreign host name), nor changed by one (no cross-site writes).
"""

from __future__ import annotations

import ipaddress
import secrets
from collections.abc import Sequence

from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from deepdraft.errors import ConfigError

LOOPBACK_NAMES = frozenset({"localhost", "ip6-localhost"})
# The names a browser on this machine uses for a loopback server; the bound address is added to them.
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")
TOKEN_ENV = "DEEPDRAFT_TOKEN"
# Methods that only read: everything else may change something and gets the cross-site check.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# Sec-Fetch-Site values for a request the server's own page made, or the user made by hand.
OWN_FETCH_SITES = frozenset({"same-origin", "none"})
DEFAULT_PORTS = {"http": 80, "https": 443}


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and `localhost` — addresses no other machine can reach."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # any other name may resolve to a public address


def check_bind(host: str, token: str | None) -> None:
    """Refuse to listen beyond this machine without a token (a `ConfigError` saying what to do)."""
    if not is_loopback(host) and not token:
        raise ConfigError(
            f"refusing to listen on {host} without a token: anyone who can reach it could read your "
            f"documents and use your LLM. Pass --token (or set {TOKEN_ENV}), or keep the default "
            "--host 127.0.0.1"
        )
    if token is not None and len(token) < 16:
        raise ConfigError("the token is too short: use at least 16 characters (e.g. `openssl rand -hex 24`)")


def check_origins(origins: Sequence[str]) -> list[str]:
    """CORS origins must be explicit `scheme://host[:port]` values; a wildcard is refused."""
    checked = []
    for origin in origins:
        origin = origin.rstrip("/")
        if origin == "*" or not origin.startswith(("http://", "https://")) or origin.count("/") != 2:
            raise ConfigError(
                f"--cors-origin {origin!r}: give an exact origin such as http://localhost:3000 (no paths, "
                "no wildcard)"
            )
        checked.append(origin)
    return checked


def allowed_hosts(bind_host: str, token: str | None) -> list[str]:
    """The `Host` names the server answers to: any with a token, else this machine's loopback names.

    `TrustedHostMiddleware` compares names, not address ranges, so a server bound to another
    loopback address (127.0.0.2, ::1 written out) gets that address added as it appears in a URL.
    """
    if token:
        return ["*"]
    names = list(LOOPBACK_HOSTS)
    if is_loopback(bind_host):
        bound = (f"[{bind_host.strip('[]')}]" if ":" in bind_host else bind_host).lower()
        if bound not in names:
            names.append(bound)
    return names


def protect(
    app: Starlette,
    *,
    bind_host: str,
    token: str | None,
    cors_origins: Sequence[str] = (),
    token_paths: str = "/",
    how_to_allow: str = " (allow another origin with --cors-origin)",
) -> None:
    """Apply every rule above to `app` before it first starts.

    `token_paths` is the path prefix the token guards (the REST server leaves its page open);
    `how_to_allow` ends the cross-site refusal (empty for a server that has no --cors-origin).
    """
    origins = check_origins(cors_origins)
    # Starlette runs the middleware added last first: the host check, then CORS (a preflight must
    # be answered before anything asks it for a token), the cross-site check, then the token.
    if token:
        app.add_middleware(RequireToken, token=token, path_prefix=token_paths)
    app.add_middleware(RefuseCrossSiteChanges, trusted_origins=origins, how_to_allow=how_to_allow)
    if origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "Last-Event-ID"],
        )
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts(bind_host, token))


class RequireToken:
    """Answer 401 to a request under `path_prefix` without ``Authorization: Bearer <token>``."""

    def __init__(self, app: ASGIApp, *, token: str, path_prefix: str) -> None:
        self.app, self.path_prefix = app, path_prefix
        self.expected = token.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # A CORS preflight never carries credentials; the CORS middleware in front answers it.
        if (
            scope["type"] == "http"
            and scope["method"] != "OPTIONS"
            and scope["path"].startswith(self.path_prefix)
        ):
            given = bearer_credentials(Headers(scope=scope).get("authorization", ""))
            if not secrets.compare_digest(given.encode(), self.expected):
                detail = "missing or wrong token: send the header Authorization: Bearer <token>"
                refusal = JSONResponse({"detail": detail}, 401, headers={"WWW-Authenticate": "Bearer"})
                await refusal(scope, receive, send)
                return
        await self.app(scope, receive, send)


def bearer_credentials(header: str) -> str:
    """The token of an ``Authorization: Bearer <token>`` header ("" for any other kind of header).

    HTTP auth schemes are case-insensitive (RFC 9110, section 11.1): clients send ``bearer`` and
    ``BEARER`` as well, and refusing them would lock out a correctly configured client.
    """
    scheme, _, credentials = header.strip().partition(" ")
    return credentials.strip() if scheme.lower() == "bearer" else ""


class RefuseCrossSiteChanges:
    """Answer 403 to a request that may change something and that a browser sent from another origin."""

    def __init__(self, app: ASGIApp, *, trusted_origins: Sequence[str], how_to_allow: str) -> None:
        self.app, self.how_to_allow = app, how_to_allow
        self.trusted_origins = frozenset(origin.lower() for origin in trusted_origins)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] not in SAFE_METHODS:
            reason = self.foreign(scope)
            if reason is not None:
                detail = (
                    f"refused a cross-site {scope['method']} {reason}: changes are accepted only from "
                    f"this server's own origin{self.how_to_allow}"
                )
                await JSONResponse({"detail": detail}, 403)(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def foreign(self, scope: Scope) -> str | None:
        """Why the request comes from another origin (a few words), or None when it does not."""
        headers = Headers(scope=scope)
        origin = headers.get("origin")
        if origin is not None and origin.lower() in self.trusted_origins:
            return None
        site = headers.get("sec-fetch-site")
        if site is not None:  # the browser's own verdict, which no page can forge
            if site.lower() in OWN_FETCH_SITES:
                return None
            return f"(Sec-Fetch-Site: {site}" + (f", Origin: {origin})" if origin else ")")
        if origin is None:
            return None  # not a browser
        if _same_origin(origin, scope["scheme"], headers.get("host", "")):
            return None
        return f"from {origin}"


def _same_origin(origin: str, scheme: str, host: str) -> bool:
    """Whether `origin` is scheme://host[:port] of the request itself (default ports may be left out)."""
    own_scheme = scheme.lower()
    default = DEFAULT_PORTS.get(own_scheme)

    def normal(value: str) -> str:
        value = value.lower()
        return value.removesuffix(f":{default}") if default is not None else value

    return normal(origin) == f"{own_scheme}://{normal(host)}"
