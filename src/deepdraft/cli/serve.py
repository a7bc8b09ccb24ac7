"""The commands that listen on a port: `deepdraft serve`, `deepdraft mcp` and `deepdraft serve-model`.

`serve` and `mcp` (the server extra's entry points) read settings the way `research` does (config
file < environment < flags), so the LLM they use is the one the user named, or the embedded model;
`serve-model` serves the embedded model itself (the local extra). All three follow the same access
rules (`deepdraft.http.security`). The heavy imports (FastAPI, uvicorn, the MCP SDK, llama.cpp)
happen inside the commands: the rest of the CLI starts without them installed.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Annotated, Literal

import typer

from deepdraft.cli.options import ApiKeyOption, BaseUrlOption, ConfigOption, ModelOption
from deepdraft.config import load_settings
from deepdraft.errors import ConfigError
from deepdraft.settings import Settings

TOKEN_ENV = "DEEPDRAFT_TOKEN"

TokenOption = Annotated[
    str | None,
    typer.Option("--token", help=f"Bearer token every request must carry (or set {TOKEN_ENV})."),
]
CorsOriginOption = Annotated[
    list[str] | None,
    typer.Option("--cors-origin", help="Allow this web origin to call the server (repeatable)."),
]


def _need_server_extra() -> None:
    missing = [
        name
        for name in ("fastapi", "uvicorn", "sse_starlette", "mcp")
        if importlib.util.find_spec(name) is None
    ]
    if missing:
        raise ConfigError(
            f'the server needs {", ".join(missing)}: pip install -c constraints.txt -e ".[server]"'
        )


def _load(config: Path | None, base_url: str | None, model: str | None, api_key: str | None) -> Settings:
    return load_settings(config, flags={"llm": {"base_url": base_url, "model": model, "api_key": api_key}})


def serve(
    host: Annotated[
        str, typer.Option("--host", help="Address to listen on (only loopback without a token).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port to listen on.")] = 8765,
    token: TokenOption = None,
    workers: Annotated[
        int | None,
        typer.Option("--workers", help="Runs driven at once (default: 2 with --base-url, else 1)."),
    ] = None,
    cors_origin: CorsOriginOption = None,
    base_url: BaseUrlOption = None,
    model: ModelOption = None,
    api_key: ApiKeyOption = None,
    config: ConfigOption = None,
) -> None:
    """Serve the REST API and the web page (http://127.0.0.1:8765 by default)."""
    _need_server_extra()
    from deepdraft.http import security

    token = token or os.environ.get(TOKEN_ENV) or None
    security.check_bind(host, token)
    origins = security.check_origins(cors_origin or [])
    settings = _load(config, base_url, model, api_key)
    if workers is None:
        workers = 2 if settings.llm.base_url else 1  # one embedded model in memory is enough
    if workers < 1:
        raise ConfigError("--workers must be at least 1")

    import uvicorn

    from deepdraft.server.app import create_app

    app = create_app(settings, token=token, workers=workers, cors_origins=tuple(origins), host=host)
    shown = f"[{host}]" if ":" in host else host
    typer.echo(
        f"deepdraft serving at http://{shown}:{port} with {workers} worker(s); "
        "Ctrl-C stops after the actions under way"
    )
    uvicorn.run(app, host=host, port=port, log_level="warning")


def mcp(
    transport: Annotated[
        str, typer.Option("--transport", help="stdio (for a local client) or http (streamable HTTP).")
    ] = "stdio",
    host: Annotated[
        str, typer.Option("--host", help="Address for --transport http (loopback only).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port for --transport http.")] = 8767,
    base_url: BaseUrlOption = None,
    model: ModelOption = None,
    api_key: ApiKeyOption = None,
    config: ConfigOption = None,
) -> None:
    """Serve deepdraft as an MCP server: other agents call deep research as a tool."""
    _need_server_extra()
    if transport not in ("stdio", "http"):
        raise ConfigError(f"--transport {transport!r}: use stdio or http")
    from deepdraft.http import security
    from deepdraft.mcp import server as mcp_server

    if transport == "http" and not security.is_loopback(host):
        raise ConfigError(
            f"refusing to serve MCP on {host}: the MCP endpoint has no token, so --transport http listens "
            "on loopback only (reach it from elsewhere through an SSH tunnel)"
        )
    settings = _load(config, base_url, model, api_key)
    chosen: Literal["stdio", "http"] = "stdio" if transport == "stdio" else "http"
    mcp_server.run(settings, transport=chosen, host=host, port=port)


def serve_model(
    model: Annotated[
        str | None, typer.Option("--model", help="An embedded model (see `deepdraft models`).")
    ] = None,
    host: Annotated[
        str, typer.Option("--host", help="Address to listen on (only loopback without a token).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port to listen on.")] = 8766,
    context: Annotated[int | None, typer.Option("--context", help="Context window in tokens.")] = None,
    token: TokenOption = None,
    cors_origin: CorsOriginOption = None,
) -> None:
    """Serve the embedded model as an OpenAI-compatible endpoint (for other tools, and for tests)."""
    from deepdraft.server.embedded_model import model_server_app

    token = token or os.environ.get(TOKEN_ENV) or None
    # Refuses a public address without a token before it loads the model.
    app = model_server_app(model, host=host, context=context, token=token, cors_origins=cors_origin or [])

    import uvicorn  # there whenever llama-cpp-python's server is

    shown = f"[{host}]" if ":" in host else host
    typer.echo(f"serving {model or 'the default embedded model'} at http://{shown}:{port}/v1 (Ctrl-C stops)")
    uvicorn.run(app, host=host, port=port, log_level="warning")
