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
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles

from deepdraft._version import __version__
from deepdraft.errors import (
    CommandRefused,
    DeepdraftError,
    ReportEdited,
    RunNotFound,
    SectionNotFound,
    StoreError,
    UserError,
    VersionNotFound,
)
from deepdraft.http import security
from deepdraft.run.manager import LLMFactory, RunConflict, RunManager
from deepdraft.run.reports import ReportNotReady
from deepdraft.server import kbs
from deepdraft.server.body_limit import LimitBody
from deepdraft.server.routes import asks as ask_routes
from deepdraft.server.routes import events, page, reports, runs, sections
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
    routers = (runs.router, sections.router, events.router, reports.router, kb_routes.router, page.router)
    for router in routers:
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
    app.add_exception_handler(SectionNotFound, answer(404))
    app.add_exception_handler(RunConflict, answer(409))
    app.add_exception_handler(CommandRefused, answer(409))
    app.add_exception_handler(ReportEdited, answer(409))
    app.add_exception_handler(ReportNotReady, answer(409))
    app.add_exception_handler(UserError, answer(400))
    app.add_exception_handler(StoreError, answer(500))
    app.add_exception_handler(DeepdraftError, answer(500))
    app.add_exception_handler(RequestValidationError, _invalid_request)


async def _invalid_request(_: Request, exc: Exception) -> JSONResponse:
    """A request whose body, query or path is out of its bounds: 422 with one line that names each
    field, like every other error (FastAPI's own answer is a list of objects)."""
    assert isinstance(exc, RequestValidationError)
    return JSONResponse({"detail": validation_problems(exc.errors())}, status_code=422)


def validation_problems(errors: Any) -> str:
    """FastAPI's validation errors as one line, e.g. `invalid request: into: input should be less
    than or equal to 7 (got 9)`."""
    problems = []
    for problem in errors:
        where = [str(part) for part in problem.get("loc", ())]
        if where and where[0] in ("body", "query", "path", "header") and len(where) > 1:
            where = where[1:]
        message = str(problem.get("msg", "invalid"))
        message = message[:1].lower() + message[1:]
        shown = problem.get("type") != "missing" and "input" in problem
        given = f" (got {_short(problem['input'])})" if shown else ""
        problems.append(f"{'.'.join(where) or 'request'}: {message}{given}")
    return "invalid request: " + "; ".join(problems)


def _short(value: Any) -> str:
    text = repr(value).replace("\n", " ")
    return text if len(text) <= 60 else text[:57] + "..."
