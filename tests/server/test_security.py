"""Who may use the server: loopback or a token, uploads fenced into the workspace, no CORS unless asked."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from deepdraft.config import home_dir
from deepdraft.errors import ConfigError
from deepdraft.http import security
from deepdraft.server import kbs
from tests.server.conftest import TOKEN, LiveServer, make_app, upload_kb


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.20", "::", "example.org"])
def test_a_non_loopback_bind_without_a_token_is_refused(host: str) -> None:
    with pytest.raises(ConfigError, match="without a token"):
        security.check_bind(host, None)
    security.check_bind(host, TOKEN)  # with one it is allowed


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "localhost"])
def test_loopback_needs_no_token(host: str) -> None:
    security.check_bind(host, None)


def test_a_short_token_is_refused() -> None:
    with pytest.raises(ConfigError, match="too short"):
        security.check_bind("0.0.0.0", "secret")


@pytest.mark.parametrize(
    ("command", "refusal"),
    [
        (["serve"], "refusing to listen on 0.0.0.0 without a token"),
        # Refused before the model is looked for: this needs no model.
        (["serve-model"], "refusing to listen on 0.0.0.0 without a token"),
        (["mcp", "--transport", "http"], "the MCP endpoint has no token"),
    ],
)
def test_the_commands_refuse_to_start_on_a_public_address_without_a_token(
    command: list[str], refusal: str
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "deepdraft", *command, "--host", "0.0.0.0", "--port", "9"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert refusal in result.stderr
    assert "Traceback" not in result.stderr


def test_requests_without_or_with_a_wrong_token_get_401() -> None:
    with LiveServer(make_app(token=TOKEN)) as live:
        with live.client() as anonymous:
            denied = anonymous.get("/api/runs")
            assert denied.status_code == 401 and denied.headers["www-authenticate"] == "Bearer"
            assert "Authorization: Bearer" in denied.json()["detail"]
            assert anonymous.get("/api/kbs/x/search", params={"q": "x"}).status_code == 401
            assert anonymous.post("/api/runs", json={"question": "q"}).status_code == 401
            # The page itself holds no data; it asks for the token.
            page = anonymous.get("/")
            assert page.status_code == 200 and "deepdraft" in page.text
        with live.client("wrong-token-0123456789") as wrong:
            assert wrong.get("/api/runs").status_code == 401
        with live.client(TOKEN) as allowed:
            assert allowed.get("/api/runs").status_code == 200
            assert allowed.get("/api/health").json()["token_required"] is True


def test_the_bearer_scheme_is_accepted_in_any_case() -> None:
    # HTTP auth schemes are case-insensitive: `bearer` got 401 before.
    with LiveServer(make_app(token=TOKEN)) as live, live.client() as client:
        for scheme in ("Bearer", "bearer", "BEARER", "bEaReR"):
            answer = client.get("/api/runs", headers={"Authorization": f"{scheme} {TOKEN}"})
            assert answer.status_code == 200, scheme
        assert client.get("/api/runs", headers={"Authorization": f"Basic {TOKEN}"}).status_code == 401


@pytest.mark.parametrize(
    "name",
    ["../escape.md", "..", "/etc/passwd.md", "a/b.md", "a\\b.md", ".hidden.md", "C:evil.md"],
)
def test_upload_names_that_could_leave_the_upload_folder_are_refused(name: str) -> None:
    with LiveServer(make_app()) as live, live.client() as client:
        answer = client.post(
            "/api/kbs/notes/documents", files=[("files", (name, b"# text\n\nsome words", "text/plain"))]
        )
    assert answer.status_code == 400, answer.text
    assert "not allowed" in answer.json()["detail"] or "file name" in answer.json()["detail"]
    assert not any(home_dir().rglob("escape.md"))
    uploads = home_dir() / "uploads"
    assert not uploads.exists() or not any(p.is_file() for p in uploads.rglob("*"))


@pytest.mark.parametrize("name", ["nul\x00.md", "line\nbreak.md", " padded.md", "", "x" * 201 + ".md"])
def test_names_with_control_characters_or_odd_shapes_are_refused(name: str) -> None:
    # HTTP clients percent-encode these before they reach the server; the check must hold anyway.
    with pytest.raises(kbs.UploadRejected):
        kbs.safe_filename(name)


def test_uploads_of_unknown_types_and_bad_kb_names_are_refused() -> None:
    with LiveServer(make_app()) as live, live.client() as client:
        exe = client.post(
            "/api/kbs/notes/documents", files=[("files", ("tool.exe", b"MZ...", "application/x"))]
        )
        assert exe.status_code == 400 and "not accepted" in exe.json()["detail"]
        bad_kb = client.post(
            "/api/kbs/..hidden/documents", files=[("files", ("a.md", b"words", "text/plain"))]
        )
        assert bad_kb.status_code == 400 and "invalid knowledge base name" in bad_kb.json()["detail"]
        nothing = client.post("/api/kbs/notes/documents", data={"x": "y"})
        assert nothing.status_code == 400 and "no files" in nothing.json()["detail"]


def test_oversize_uploads_are_refused_and_nothing_is_stored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kbs, "MAX_FILE_BYTES", 1000)
    with LiveServer(make_app()) as live, live.client() as client:
        small = ("small.md", b"# Small\n\nA short note about tariffs.", "text/markdown")
        big = ("big.md", b"x" * 1001, "text/markdown")
        answer = client.post("/api/kbs/notes/documents", files=[("files", small), ("files", big)])
        assert answer.status_code == 413 and "larger than the limit" in answer.json()["detail"]
        # One refused file refuses the whole upload: not even the small one was stored.
        assert not (home_dir() / "uploads" / "notes" / "small.md").exists()

        monkeypatch.setattr(kbs, "MAX_REQUEST_BYTES", 500)
        whole = client.post(
            "/api/kbs/notes/documents", files=[("files", ("a.md", b"y" * 600, "text/markdown"))]
        )
        assert whole.status_code == 413


def test_stored_uploads_stay_inside_the_upload_folder(corpus_dir: Path) -> None:
    stored = kbs.store_upload("notes", "address-1790.md", (corpus_dir / "address-1790.md").open("rb").read)
    assert stored.parent == (home_dir() / "uploads" / "notes").resolve()
    assert not list(stored.parent.glob(".*.part"))  # the temporary file was renamed into place


def test_cors_headers_are_absent_by_default_and_only_for_named_origins() -> None:
    preflight = {"Origin": "http://evil.example", "Access-Control-Request-Method": "GET"}
    with LiveServer(make_app()) as live, live.client() as client:
        answer = client.get("/api/runs", headers={"Origin": "http://evil.example"})
        assert answer.status_code == 200 and "access-control-allow-origin" not in answer.headers
        assert "access-control-allow-origin" not in client.options("/api/runs", headers=preflight).headers
    with LiveServer(make_app(cors_origins=("http://localhost:3000",))) as live, live.client() as client:
        allowed = client.get("/api/runs", headers={"Origin": "http://localhost:3000"})
        assert allowed.headers["access-control-allow-origin"] == "http://localhost:3000"
        other = client.get("/api/runs", headers={"Origin": "http://evil.example"})
        assert "access-control-allow-origin" not in other.headers
    with pytest.raises(ConfigError, match="exact origin"):
        security.check_origins(["*"])


def test_the_page_forbids_scripts_from_elsewhere() -> None:
    with LiveServer(make_app()) as live, live.client() as client:
        page = client.get("/")
        policy = page.headers["content-security-policy"]
        assert "script-src 'self'" in policy and "default-src 'self'" in policy
        assert page.headers["x-content-type-options"] == "nosniff"
        for asset in ("/static/app.js", "/static/app.css"):
            assert client.get(asset).status_code == 200
        assert "http" not in client.get("/static/app.css").text  # nothing loaded from a CDN


# ---- cross-site requests and DNS rebinding (issue 12) ------------------------------------------------

EVIL = "http://evil.example"


def test_a_cross_site_form_upload_is_refused_and_nothing_reaches_the_kb(tmp_path: Path) -> None:
    # The reproduction: curl -H "Origin: http://evil.example" -H "Sec-Fetch-Site: cross-site"
    #   -F "files=@u.txt;filename=planted.txt" http://127.0.0.1:PORT/api/kbs/default/documents
    # A multipart form POST is what any web page can send cross-site without a preflight.
    with LiveServer(make_app()) as live, live.client() as client:
        answer = client.post(
            "/api/kbs/default/documents",
            headers={"Origin": EVIL, "Sec-Fetch-Site": "cross-site"},
            files=[("files", ("planted.txt", b"Planted: the tariff was abolished in 1999.", "text/plain"))],
        )
        assert answer.status_code == 403, answer.text
        detail = answer.json()["detail"]
        assert "cross-site" in detail and "\n" not in detail
        assert client.get("/api/kbs").json() == []
    assert not (home_dir() / "uploads").exists()


# Every route against every unsafe method and cross-site header: tests/hostile/test_attacks.py.


@pytest.mark.parametrize(
    "headers",
    [
        {"Sec-Fetch-Site": "same-site", "Origin": "http://localhost:3000"},  # another port is another origin
        {"Sec-Fetch-Site": "cross-site"},
        {"Origin": "null"},  # a sandboxed frame, or a page opened from a file
        {"Origin": "https://127.0.0.1"},
    ],
)
def test_fetch_metadata_or_an_origin_that_is_not_the_servers_own_is_refused(headers: dict[str, str]) -> None:
    with LiveServer(make_app()) as live, live.client() as client:
        answer = client.post("/api/runs", headers=headers, json={"question": "q"})
        assert answer.status_code == 403, answer.text
        assert client.get("/api/runs").json() == []


def test_same_origin_and_non_browser_requests_still_change_things(corpus_dir: Path) -> None:
    with LiveServer(make_app()) as live, live.client() as client:
        upload_kb(client, "notes", corpus_dir)
        note = [
            ("files", ("address-1790.md", (corpus_dir / "address-1790.md").read_bytes(), "text/markdown"))
        ]
        browsers = [
            {"Origin": live.url, "Sec-Fetch-Site": "same-origin"},  # the page itself
            {"Origin": live.url},  # a browser without fetch metadata
            {"Sec-Fetch-Site": "none"},  # typed by the user
            {},  # curl, the Python client, the MCP SDK
        ]
        for headers in browsers:
            answer = client.post("/api/kbs/notes/documents", headers=headers, files=note)
            assert answer.status_code == 202, (headers, answer.text)
        created = client.post("/api/runs", headers=browsers[0], json={"question": "q", "kb": "notes"})
        assert created.status_code == 201, created.text


def test_an_origin_named_with_cors_origin_may_change_things(corpus_dir: Path) -> None:
    app = make_app(cors_origins=("http://localhost:3000",))
    with LiveServer(app) as live, live.client() as client:
        upload_kb(client, "notes", corpus_dir)
        headers = {"Origin": "http://localhost:3000", "Sec-Fetch-Site": "same-site"}
        allowed = client.post("/api/runs", headers=headers, json={"question": "q", "kb": "notes"})
        assert allowed.status_code == 201, allowed.text
        assert allowed.headers["access-control-allow-origin"] == "http://localhost:3000"
        refused = client.post("/api/runs", headers={"Origin": EVIL}, json={"question": "q"})
        assert refused.status_code == 403


def test_a_token_does_not_let_a_cross_site_request_through() -> None:
    with LiveServer(make_app(token=TOKEN)) as live, live.client(TOKEN) as client:
        answer = client.post("/api/runs", headers={"Origin": EVIL}, json={"question": "q"})
        assert answer.status_code == 403, answer.text


def test_a_foreign_host_name_is_refused_without_a_token(corpus_dir: Path) -> None:
    # The reproduction of DNS rebinding:
    #   curl -H "Host: attacker.example:PORT" "http://127.0.0.1:PORT/api/kbs/default/search?q=coral"
    with LiveServer(make_app()) as live, live.client() as client:
        upload_kb(client, "default", corpus_dir)
        port = live.server.config.port
        search = "/api/kbs/default/search?q=tariff"
        assert client.get(search).status_code == 200
        for host in (f"attacker.example:{port}", "attacker.example", f"127.0.0.1.nip.io:{port}"):
            for path in (search, "/api/runs", "/", "/static/app.js"):
                answer = client.get(path, headers={"Host": host})
                assert answer.status_code in (400, 421), (host, path, answer.text)
                assert "tariff" not in answer.text
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}", "localhost"):
            assert client.get(search, headers={"Host": host}).status_code == 200, host


def test_a_server_bound_to_another_loopback_address_answers_to_it() -> None:
    assert "127.0.0.2" in security.allowed_hosts("127.0.0.2", None)
    assert "[::1]" in security.allowed_hosts("::1", None)
    assert "attacker.example" not in security.allowed_hosts("127.0.0.1", None)


def test_with_a_token_any_host_name_is_answered() -> None:
    # Behind a reverse proxy or on a LAN name the token is what protects the server: a page that
    # rebinds a name to it still cannot send the token.
    with LiveServer(make_app(token=TOKEN)) as live, live.client(TOKEN) as client:
        assert client.get("/api/runs", headers={"Host": "research.example.org"}).status_code == 200


def test_a_token_guards_every_path_of_a_server_without_a_page() -> None:
    # serve-model's arrangement (the default token_paths "/"), on a bare app: no model needed.
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    app = Starlette(routes=[Route("/v1/models", lambda _: PlainTextResponse("models"))])
    security.protect(app, bind_host="127.0.0.1", token=TOKEN)
    with LiveServer(app) as live:
        with live.client() as anonymous:
            assert anonymous.get("/v1/models").status_code == 401
            assert anonymous.get("/v1/models", headers={"Host": "model.example.org"}).status_code == 401
        with live.client(TOKEN) as allowed:
            assert allowed.get("/v1/models", headers={"Host": "model.example.org"}).text == "models"
