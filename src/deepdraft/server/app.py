"""The HTTP application: the REST API under `/api`, a run's live events as SSE, and the web page.

`create_app` wires the parts together — the run manager (`deepdraft.run.manager`), the routers
of each resource (`routes`), the ingestion queue (`kbs`) and the access rules
(`deepdraft.http.security`) — and maps deepdraft's errors to HTTP: a user's mistake is a 4xx
with the one-line message the CLI would print, never a traceback. Request and response bodies are
pydantic models (`models`), so the OpenAPI schema at `/openapi.json` documents every route exactly.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles

from deepdraft._version import __version__
from deepdraft.errors import DeepdraftError, RunNotFound, StoreError, UserError, VersionNotFound
from deepdraft.http import security
from deepdraft.run.manager import LLMFactory, RunConflict, RunManager
from deepdraft.run.reports import ReportNotReady
from deepdraft.server import kbs
from deepdraft.server.body_limit import LimitBody
from deepdraft.server.routes import asks as ask_routes
from deepdraft.server.routes import events, page, reports, runs
from deepdraft.server.routes import kbs as kb_routes
from deepdraft.settings import Settings

# The page loads only its own files: no inline script, nothing from elsewhere. Model text shown on
# the page is inserted as text, and this policy is the second line of defence.
PAGE_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)


def create_app(
    settings: Settings,
    *,
    token: str | None = None,
    workers: int = 2,
    llm_factory: LLMFactory | None = None,
    cors_origins: tuple[str, ...] = (),
    host: str = "127.0.0.1",
) -> FastAPI:
    """The deepdraft server. `llm_factory` builds each run's LLM (default: from the settings);
    `host` is the address it will listen on (a token-less server answers only to loopback names)."""
    manager = RunManager(settings, workers=workers, llm_factory=llm_factory)
    ingest = kbs.IngestQueue(settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await asyncio.to_thread(manager.recover)
        yield
        await asyncio.to_thread(manager.close)
        await asyncio.to_thread(ingest.close)

    app = FastAPI(
        title="deepdraft",
        version=__version__,
        summary="Deep research runs, their live events and reports, and knowledge bases.",
        lifespan=lifespan,
    )
    app.state.manager, app.state.ingest = manager, ingest
    app.state.workers, app.state.token_required = workers, bool(token)
    _errors(app)
    app.add_middleware(LimitBody)  # added before `protect`: the access rules answer first
    security.protect(app, bind_host=host, token=token, cors_origins=cors_origins, token_paths="/api")
    app.middleware("http")(_page_headers)
    for router in (runs.router, events.router, reports.router, kb_routes.router, page.router):
        app.include_router(router)
    for router in (ask_routes.router,):
        app.include_router(router)
    app.mount("/static", StaticFiles(directory=page.STATIC), name="static")
    return app


async def _page_headers(request: Request, call_next: Any) -> Response:
    response: Response = await call_next(request)
    response.headers.setdefault("Content-Security-Policy", PAGE_POLICY)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    return response


def _errors(app: FastAPI) -> None:
    """deepdraft's errors as HTTP answers: `{"detail": "<one line>"}` with a fitting status."""

    def answer(status: int) -> Any:
        async def handler(_: Request, exc: Exception) -> JSONResponse:
            return JSONResponse({"detail": str(exc)}, status_code=getattr(exc, "status", status))

        return handler

    app.add_exception_handler(RunNotFound, answer(404))
    app.add_exception_handler(VersionNotFound, answer(404))
    app.add_exception_handler(RunConflict, answer(409))
    app.add_exception_handler(ReportNotReady, answer(409))
    app.add_exception_handler(UserError, answer(400))
    app.add_exception_handler(StoreError, answer(500))
    app.add_exception_handler(DeepdraftError, answer(500))
