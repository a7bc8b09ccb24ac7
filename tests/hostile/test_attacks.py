"""Attacks on a real `deepdraft serve` app (uvicorn on loopback), one probe per parametrised case.

What a hostile client or a hostile web page tries: requests without or with a mangled token, cross-site
writes (CSRF), requests under a foreign host name (DNS rebinding), path traversal through every path and
name parameter, and oversized or malformed bodies. The routes come from the app's own routers, and one
probe checks that they are all of the app's routes, so a new route is attacked without editing this file.

Every probe sends its request on a raw socket: an HTTP client would clean up `..` segments and
percent-encodings before they left, and the attack is precisely what it would clean up. A probe passes
when the server refuses (a 4xx with a one-line reason), answers nothing it should not (no planted secret
in the reply, no file written outside the upload folder) and keeps answering afterwards.

Reproductions from issue 12 that stay in tests/server/test_security.py are not repeated here.
"""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.routing import APIRoute

from deepdraft.config import ENVIRONMENT
from deepdraft.http import security
from deepdraft.server.routes import asks, events, kbs, page, reports, runs, sections
from tests.server.conftest import TOKEN, LiveServer, make_app

pytestmark = pytest.mark.slow

SECRET = "planted-secret-5f2c9e"
EVIL = "http://evil.example"
UNSAFE_METHODS = ("POST", "PUT", "PATCH", "DELETE")


# ---- the app's routes ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Route:
    method: str
    path: str  # with {name} placeholders

    @property
    def params(self) -> list[str]:
        return re.findall(r"{(\w+)}", self.path)

    def fill(self, **values: str) -> str:
        """The path with each parameter replaced (as sent on the wire: no encoding added)."""
        return re.sub(r"{(\w+)}", lambda m: values.get(m.group(1), "some-name"), self.path)

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


def declared_routes() -> list[Route]:
    """Every route deepdraft declares, from its routers (no app needed to collect the probes)."""
    found = []
    for module in (runs, events, reports, kbs, page, sections, asks):
        for route in module.router.routes:
            assert isinstance(route, APIRoute)
            found += [Route(method, route.path) for method in sorted(route.methods or ())]
    return [*found, Route("GET", "/static/{path}")]


ROUTES = declared_routes()
API_ROUTES = [route for route in ROUTES if route.path.startswith("/api/")]
WITH_PARAMS = [route for route in ROUTES if route.params]


# ---- a raw HTTP/1.1 client -------------------------------------------------------------------------


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def detail(self) -> str:
        return str(json.loads(self.body)["detail"])


def send(
    live: LiveServer,
    method: str,
    target: str,
    headers: dict[str, str] | None = None,
    body: bytes = b"",
    *,
    send_length: bool = True,
) -> Answer:
    """One request exactly as written (`target` is not normalised or encoded), on its own connection.

    With ``Expect: 100-continue`` among the headers the body is sent only if the server asks for it,
    as a careful client does: a server that refuses a body by its declared length never reads it.
    """
    port = live.server.config.port
    fields = {"Host": f"127.0.0.1:{port}", "Connection": "close", **(headers or {})}
    if send_length and "Content-Length" not in fields:
        fields["Content-Length"] = str(len(body))
    head = f"{method} {target} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in fields.items()) + "\r\n"
    with socket.create_connection((live.host, port), timeout=30) as connection:
        reader = connection.makefile("rb")
        if fields.get("Expect") == "100-continue":
            connection.sendall(head.encode("latin-1"))
            answer = read_answer(reader)
            if answer.status != 100:
                return answer
            connection.sendall(body)
        else:
            connection.sendall(head.encode("latin-1") + body)
        return read_answer(reader)


def read_answer(reader: Any) -> Answer:
    """One response off the connection: its head, then the body up to its length (or to the close)."""
    status_line = reader.readline().decode("latin-1")
    headers: dict[str, str] = {}
    while (line := reader.readline().decode("latin-1").rstrip("\r\n")) != "":
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    status = int(status_line.split()[1])
    if status == 100:
        return Answer(status, headers, b"")
    if "content-length" in headers:
        body = reader.read(int(headers["content-length"]))
    elif headers.get("transfer-encoding") == "chunked":
        body = b""
        while (size := int(reader.readline().split(b";")[0], 16)) > 0:
            body += reader.read(size)
            reader.readline()
    else:
        body = reader.read()
    return Answer(status, headers, body)


# ---- servers shared by the probes of this module ---------------------------------------------------


@pytest.fixture(scope="module")
def module_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A workspace for the module's servers while they start (each probe then has its own)."""
    home = tmp_path_factory.mktemp("attacks-home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DEEPDRAFT_HOME", str(home))
        patch.setenv("DEEPDRAFT_MODELS", str(home / "models"))
        for variable, _, _ in ENVIRONMENT:
            patch.delenv(variable, raising=False)
        yield home


@pytest.fixture(scope="module")
def open_server(module_home: Path) -> Iterator[LiveServer]:
    """A token-less server on loopback: the default `deepdraft serve`."""
    with LiveServer(make_app()) as live:
        yield live


@pytest.fixture(scope="module")
def token_server(module_home: Path) -> Iterator[LiveServer]:
    with LiveServer(make_app(token=TOKEN)) as live:
        yield live


@pytest.fixture
def planted(isolated_workspace: Path, tmp_path: Path) -> list[Path]:
    """Secrets a traversal would reach: in the workspace, beside it, and in the run folder."""
    places = [
        isolated_workspace / "secret.txt",
        isolated_workspace / "runs" / "secret.txt",
        tmp_path / "secret.txt",
    ]
    for place in places:
        place.parent.mkdir(parents=True, exist_ok=True)
        place.write_text(SECRET)
    return places


def assert_still_serving(live: LiveServer, headers: dict[str, str] | None = None) -> None:
    assert send(live, "GET", "/api/health", headers).status == 200


def files_written(home: Path, planted: list[Path]) -> list[Path]:
    """Files in the workspace that neither the probe planted nor deepdraft keeps (journal, its WAL)."""
    ignored = {"journal.sqlite", "journal.sqlite-wal", "journal.sqlite-shm"}
    return sorted(
        path
        for path in home.rglob("*")
        if path.is_file() and path.name not in ignored and path not in planted
    )


def test_the_probes_cover_every_route_of_the_app() -> None:
    def served(routes: Any) -> Iterator[Route]:
        for route in routes:
            if isinstance(route, APIRoute):
                yield from (Route(method, route.path) for method in route.methods or ())
            elif hasattr(route, "original_router"):  # FastAPI keeps an included router whole
                yield from served(route.original_router.routes)
            elif getattr(route, "path", "") == "/static":
                yield Route("GET", "/static/{path}")

    documentation = {"/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"}
    app_routes = {route for route in served(make_app().routes) if route.path not in documentation}
    assert app_routes == set(ROUTES)


# ---- the token -------------------------------------------------------------------------------------

REFUSED_CREDENTIALS = {
    "no-header": None,
    "wrong-token": "Bearer wrong-token-0123456789abcdef",
    "basic-scheme": f"Basic {TOKEN}",
    "no-scheme": TOKEN,
    "empty-bearer": "Bearer ",
    "token-prefix": f"Bearer {TOKEN[:-1]}",
    "token-with-suffix": f"Bearer {TOKEN}x",
    "token-twice": f"Bearer {TOKEN} {TOKEN}",
    "scheme-glued": f"Bearer{TOKEN}",
    "other-scheme-ending-bearer": f"NotBearer {TOKEN}",
}


@pytest.mark.parametrize("credentials", REFUSED_CREDENTIALS.values(), ids=REFUSED_CREDENTIALS.keys())
def test_a_missing_or_mangled_token_is_refused(token_server: LiveServer, credentials: str | None) -> None:
    headers = {} if credentials is None else {"Authorization": credentials}
    answer = send(token_server, "GET", "/api/runs", headers)
    assert answer.status == 401 and answer.headers["www-authenticate"] == "Bearer"
    assert "Authorization: Bearer" in answer.detail()


def test_the_token_in_the_query_string_is_refused(token_server: LiveServer) -> None:
    # Tokens in URLs end up in logs and browser history: only the header counts.
    for name in ("token", "access_token"):
        assert send(token_server, "GET", f"/api/runs?{name}={TOKEN}").status == 401


ACCEPTED_SCHEMES = ["Bearer", "bearer", "BEARER", "bEaReR"]


@pytest.mark.parametrize("scheme", ACCEPTED_SCHEMES)
def test_the_scheme_may_be_written_in_any_case(token_server: LiveServer, scheme: str) -> None:
    assert send(token_server, "GET", "/api/runs", {"Authorization": f"{scheme} {TOKEN}"}).status == 200


@pytest.mark.parametrize("route", API_ROUTES, ids=str)
def test_every_api_route_needs_the_token(token_server: LiveServer, route: Route, planted: list[Path]) -> None:
    answer = send(token_server, route.method, route.fill(), {"Content-Type": "application/json"}, b"{}")
    assert answer.status == 401, answer.text
    assert SECRET not in answer.text


@pytest.fixture(scope="module")
def model_endpoint() -> Iterator[LiveServer]:
    """serve-model's arrangement (the token on every path, no page), on a bare app: no model needed."""
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route as StarletteRoute

    app = Starlette(routes=[StarletteRoute("/v1/models", lambda _: PlainTextResponse("models"))])
    security.protect(app, bind_host="127.0.0.1", token=TOKEN)
    with LiveServer(app) as live:
        yield live


@pytest.mark.parametrize("scheme", ACCEPTED_SCHEMES)
def test_the_model_endpoint_takes_the_scheme_in_any_case(model_endpoint: LiveServer, scheme: str) -> None:
    answer = send(model_endpoint, "GET", "/v1/models", {"Authorization": f"{scheme} {TOKEN}"})
    assert answer.status == 200 and answer.text == "models"


@pytest.mark.parametrize("credentials", REFUSED_CREDENTIALS.values(), ids=REFUSED_CREDENTIALS.keys())
def test_the_model_endpoint_refuses_a_missing_or_mangled_token(
    model_endpoint: LiveServer, credentials: str | None
) -> None:
    headers = {} if credentials is None else {"Authorization": credentials}
    assert send(model_endpoint, "GET", "/v1/models", headers).status == 401


# ---- cross-site writes (CSRF) ----------------------------------------------------------------------

CROSS_SITE = {
    "origin": {"Origin": EVIL},
    "fetch-metadata": {"Origin": EVIL, "Sec-Fetch-Site": "cross-site"},
    "same-site-other-port": {"Origin": "http://localhost:3000", "Sec-Fetch-Site": "same-site"},
    "null-origin": {"Origin": "null"},
}


@pytest.mark.parametrize("route", [r for r in ROUTES if r.method in UNSAFE_METHODS], ids=str)
@pytest.mark.parametrize("headers", CROSS_SITE.values(), ids=CROSS_SITE.keys())
def test_a_cross_site_write_is_refused_before_it_reaches_the_route(
    open_server: LiveServer, route: Route, headers: dict[str, str], isolated_workspace: Path
) -> None:
    body = json.dumps({"question": "Planted question?", "accept": True}).encode()
    answer = send(
        open_server, route.method, route.fill(), {**headers, "Content-Type": "application/json"}, body
    )
    assert answer.status == 403, answer.text
    assert "cross-site" in answer.detail()
    assert send(open_server, "GET", "/api/runs").body == b"[]"  # nothing was started
    assert not (isolated_workspace / "uploads").exists()


@pytest.mark.parametrize("method", UNSAFE_METHODS)
def test_a_cross_site_write_to_a_path_no_route_serves_is_refused_too(
    open_server: LiveServer, method: str
) -> None:
    assert send(open_server, method, "/nowhere", {"Origin": EVIL}).status == 403


# ---- DNS rebinding ---------------------------------------------------------------------------------

FOREIGN_HOSTS = ["attacker.example", "127.0.0.1.nip.io", "localhost.attacker.example", "0x7f000001"]


@pytest.mark.parametrize("route", [r for r in ROUTES if r.method == "GET"], ids=str)
@pytest.mark.parametrize("host", FOREIGN_HOSTS)
def test_a_foreign_host_name_gets_nothing(
    open_server: LiveServer, route: Route, host: str, planted: list[Path]
) -> None:
    port = open_server.server.config.port
    answer = send(open_server, "GET", route.fill(path="app.js"), {"Host": f"{host}:{port}"})
    assert answer.status == 400, answer.text
    assert SECRET not in answer.text and "deepdraft" not in answer.text.lower()


# ---- path traversal --------------------------------------------------------------------------------

TRAVERSALS = {
    "dot-dot": "..",
    "dot-dot-slashes": "../../secret.txt",
    "encoded-slashes": "..%2F..%2Fsecret.txt",
    "encoded-dots": "%2e%2e%2f%2e%2e%2fsecret.txt",
    "double-encoded": "%252e%252e%252fsecret.txt",
    "backslashes": "..%5C..%5Csecret.txt",
    "absolute": "%2Ftmp%2Fsecret.txt",
    "nul-byte": "secret.txt%00.md",
    "dots-and-slashes": "....%2F%2F....%2F%2Fsecret.txt",
    "home": "~%2Fsecret.txt",
}
PARAMETER_PROBES = [
    pytest.param(route, name, payload, id=f"{route}-{name}-{label}")
    for route in WITH_PARAMS
    for name in route.params
    for label, payload in TRAVERSALS.items()
]


@pytest.mark.parametrize(("route", "name", "payload"), PARAMETER_PROBES)
def test_a_path_parameter_cannot_climb_out(
    open_server: LiveServer,
    route: Route,
    name: str,
    payload: str,
    planted: list[Path],
    isolated_workspace: Path,
) -> None:
    body = json.dumps({"accept": True}).encode()
    answer = send(
        open_server, route.method, route.fill(**{name: payload}), {"Content-Type": "application/json"}, body
    )
    assert 400 <= answer.status < 500, (answer.status, answer.text)
    assert SECRET not in answer.text
    assert files_written(isolated_workspace, planted) == []
    assert_still_serving(open_server)


@pytest.mark.parametrize(
    "payload", [pytest.param(payload, id=label) for label, payload in TRAVERSALS.items()]
)
def test_a_report_format_cannot_name_a_file(
    open_server: LiveServer, payload: str, planted: list[Path]
) -> None:
    answer = send(open_server, "GET", f"/api/runs/some-run/report?format={payload}")
    assert 400 <= answer.status < 500 and SECRET not in answer.text


@pytest.mark.parametrize(
    "payload",
    [pytest.param(payload, id=label) for label, payload in TRAVERSALS.items()]
    + [
        pytest.param(str(Path("/tmp")), id="absolute-folder"),
        pytest.param("../secret", id="relative-folder"),
    ],
)
def test_a_run_cannot_use_a_folder_or_path_as_its_kb(
    open_server: LiveServer, payload: str, planted: list[Path], isolated_workspace: Path
) -> None:
    # Over HTTP a knowledge base is a name: a path would let a client index any folder on the server.
    body = json.dumps({"question": "What does the secret say?", "kb": payload}).encode()
    answer = send(open_server, "POST", "/api/runs", {"Content-Type": "application/json"}, body)
    assert answer.status in (400, 404), answer.text
    assert "\n" not in answer.detail()
    assert send(open_server, "GET", "/api/runs").body == b"[]"


STATIC_TRAVERSALS = {
    "dot-dot": "../routes/page.py",
    "encoded": "..%2Froutes%2Fpage.py",
    "deep": "../../../../../../../../etc/hostname",
    "encoded-deep": "%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/hostname",
}


@pytest.mark.parametrize("target", STATIC_TRAVERSALS.values(), ids=STATIC_TRAVERSALS.keys())
def test_static_files_stay_inside_the_static_folder(open_server: LiveServer, target: str) -> None:
    answer = send(open_server, "GET", f"/static/{target}")
    assert answer.status == 404, answer.text
    assert "APIRouter" not in answer.text


# ---- oversized and malformed bodies ----------------------------------------------------------------

MIB = 1024 * 1024


def json_body(size: int) -> bytes:
    return json.dumps({"question": "q" * size}).encode()


OVERSIZED = {
    "run-8-MiB-question": ("POST", "/api/runs", json_body(8 * MIB)),
    "outline-8-MiB": ("POST", "/api/runs/some-run/outline", json.dumps({"title": "t" * 8 * MIB}).encode()),
    "resume-8-MiB": ("POST", "/api/runs/some-run/resume", json.dumps({"x": "y" * 8 * MIB}).encode()),
}


@pytest.mark.parametrize(("method", "path", "body"), OVERSIZED.values(), ids=OVERSIZED.keys())
@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_an_oversized_body_is_refused_unread(
    open_server: LiveServer, method: str, path: str, body: bytes, framing: str
) -> None:
    headers = {"Content-Type": "application/json"}
    if framing == "chunked":
        # No length to refuse by: the server counts while it reads, and stops just past the limit
        # (the body is only a little over it, so it is sent whole before the answer comes).
        body = body[: MIB + 4096]
        headers["Transfer-Encoding"] = "chunked"
        pieces = [body[i : i + 65536] for i in range(0, len(body), 65536)]
        body = b"".join(f"{len(piece):x}\r\n".encode() + piece + b"\r\n" for piece in pieces) + b"0\r\n\r\n"
    else:
        headers["Expect"] = "100-continue"
    answer = send(open_server, method, path, headers, body, send_length=framing == "content-length")
    assert answer.status == 413, (answer.status, answer.text[:300])
    assert "larger than the limit" in answer.detail()
    assert send(open_server, "GET", "/api/runs").body == b"[]"
    assert_still_serving(open_server)


def test_a_large_declared_body_is_refused_on_a_route_that_takes_none(open_server: LiveServer) -> None:
    headers = {"Content-Type": "application/json", "Expect": "100-continue"}
    answer = send(open_server, "POST", "/api/runs/some-run/cancel", headers, b" " * 2 * MIB)
    assert answer.status == 413 and "larger than the limit" in answer.detail()


BODIES = {
    "run-deeply-nested-json": ("POST", "/api/runs", b"[" * 100_000 + b"]" * 100_000),
    "run-invalid-utf8": ("POST", "/api/runs", b'{"question": "\xff\xfe"}'),
    "run-not-json": ("POST", "/api/runs", b"question=planted"),
}


@pytest.mark.parametrize(("method", "path", "body"), BODIES.values(), ids=BODIES.keys())
def test_a_malformed_body_is_refused(open_server: LiveServer, method: str, path: str, body: bytes) -> None:
    answer = send(open_server, method, path, {"Content-Type": "application/json"}, body)
    assert answer.status in (400, 404, 413, 422), (answer.status, answer.text[:300])
    assert "Traceback" not in answer.text
    assert send(open_server, "GET", "/api/runs").body == b"[]"
    assert_still_serving(open_server)


def multipart(files: list[tuple[str, bytes]]) -> tuple[str, bytes]:
    boundary = "deepdraft-probe-boundary"
    parts = b"".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="{name}"\r\n'
        f"Content-Type: text/markdown\r\n\r\n".encode()
        + content
        + b"\r\n"
        for name, content in files
    )
    return f"multipart/form-data; boundary={boundary}", parts + f"--{boundary}--\r\n".encode()


def test_an_upload_declaring_more_than_the_limit_is_refused_before_it_is_read(
    open_server: LiveServer,
) -> None:
    kind, _ = multipart([])
    answer = send(
        open_server,
        "POST",
        "/api/kbs/notes/documents",
        {"Content-Type": kind, "Content-Length": str(10**12)},
        b"",
    )
    assert answer.status == 413 and "larger than the limit" in answer.detail()


def test_an_upload_without_a_length_is_refused(open_server: LiveServer, isolated_workspace: Path) -> None:
    kind, body = multipart([("a.md", b"# A\n\nwords")])
    chunked = f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n"
    answer = send(
        open_server,
        "POST",
        "/api/kbs/notes/documents",
        {"Content-Type": kind, "Transfer-Encoding": "chunked"},
        chunked,
        send_length=False,
    )
    assert answer.status == 411, answer.text
    assert not (isolated_workspace / "uploads").exists()


def test_too_many_files_in_one_upload_are_refused(open_server: LiveServer, isolated_workspace: Path) -> None:
    kind, body = multipart([(f"n{i}.md", b"# N\n\nwords") for i in range(101)])
    answer = send(open_server, "POST", "/api/kbs/notes/documents", {"Content-Type": kind}, body)
    assert answer.status == 400, answer.text
    assert not (isolated_workspace / "uploads").exists() or not any(
        (isolated_workspace / "uploads").rglob("*.md")
    )
