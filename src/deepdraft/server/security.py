"""Who may talk to the server: loopback by default, a bearer token otherwise, CORS only when asked.

The rules, and why:

* The server binds 127.0.0.1 unless told otherwise. Anything else exposes the user's documents
  and LLM to the network, so a non-loopback address without a token is refused at start-up —
  there is no "I know what I'm doing" switch that skips it.
* With a token, every `/api` request must carry ``Authorization: Bearer <token>``; the comparison
  is constant-time. The static page itself carries no data and is served without a token (the
  page asks for the token and sends it with each request; it never goes into a URL, where logs
  and browser history would keep it).
* CORS is off: a page from another origin cannot read the API. ``--cors-origin`` allows named
  origins only (no wildcard), so a token-less loopback server is never readable by any web page
  the user happens to visit.
"""

from __future__ import annotations

import ipaddress
import secrets
from collections.abc import Awaitable, Callable, Sequence

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.middleware.cors import CORSMiddleware

from deepdraft.errors import ConfigError

LOOPBACK_NAMES = frozenset({"localhost", "ip6-localhost"})
TOKEN_ENV = "DEEPDRAFT_TOKEN"


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


def install(app: FastAPI, *, token: str | None, cors_origins: Sequence[str] = ()) -> None:
    """Add the token check for `/api` (when a token is set) and CORS (when origins are given)."""
    if token:
        expected = f"Bearer {token}".encode()

        @app.middleware("http")
        async def require_token(
            request: Request, call_next: Callable[[Request], Awaitable[Response]]
        ) -> Response:
            if request.url.path.startswith("/api") and request.method != "OPTIONS":
                given = request.headers.get("authorization", "").encode()
                if not secrets.compare_digest(given, expected):
                    return JSONResponse(
                        {"detail": "missing or wrong token: send the header Authorization: Bearer <token>"},
                        status_code=401,
                        headers={"WWW-Authenticate": "Bearer"},
                    )
            return await call_next(request)

    if cors_origins:
        # Added last so it runs first: preflight requests carry no token and must still be answered.
        app.add_middleware(
            CORSMiddleware,
            allow_origins=check_origins(cors_origins),
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "Last-Event-ID"],
        )
