"""The HTTP application: the REST API under `/api`, a run's live events as SSE, and the web page.

`create_app` wires the parts together — the run manager (`runs`), the event stream (`events`),
knowledge bases (`kbs`), reports (`reports`) and the access rules (`security`) — and maps
deepdraft's errors to HTTP: a user's mistake is a 4xx with the one-line message the CLI would
print, never a traceback. Request and response bodies are pydantic models, so the OpenAPI schema
at `/openapi.json` documents every route exactly.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, Header, Query, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field
from sse_starlette import EventSourceResponse

from deepdraft._version import __version__
from deepdraft.errors import DeepdraftError, RunNotFound, StoreError, UserError
from deepdraft.policy.review import reviewed_outline
from deepdraft.run import runner
from deepdraft.server import events, kbs, reports, security
from deepdraft.server.runs import LLMFactory, RunConflict, RunManager, Status
from deepdraft.settings import Depth, PolicyName, Settings
from deepdraft.store.journal import RunRecord

STATIC = Path(__file__).parent / "static"
# The page loads only its own files: no inline script, nothing from elsewhere. Model text shown on
# the page is inserted as text, and this policy is the second line of defence.
PAGE_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)


# ---- request and response bodies -----------------------------------------------------------------


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CreateRun(_Body):
    question: str = Field(min_length=1, max_length=4000)
    kb: str | None = Field(None, description="A knowledge base name (default: `default`, else `demo`).")
    depth: Depth | None = None
    policy: PolicyName | None = None
    model: str | None = Field(None, description="Model name on the server's LLM endpoint.")
    max_steps: int | None = Field(None, ge=1, le=10_000)
    max_expansions: int | None = Field(None, ge=0, le=100)
    max_tokens_total: int | None = Field(None, ge=1)
    language: str | None = Field(None, max_length=40)
    review_outline: bool = Field(False, description="Pause after the first outline for the user to edit it.")


class ResumeRun(_Body):
    review_outline: bool = False


class RunSummary(BaseModel):
    id: str
    question: str
    status: Status
    policy: str
    steps: int
    max_steps: int
    kb: str | None
    created_at: float
    updated_at: float
    error: str | None


class RunDetail(RunSummary):
    title: str | None
    stop_reason: str
    outline: dict[str, Any] | None
    review: dict[str, Any] | None = Field(description="The outline waiting for review, if any.")
    formats: list[str]


class CancelResult(BaseModel):
    id: str
    status: str


class OutlineSection(_Body):
    title: str = Field(min_length=1, max_length=300)
    plan: str = Field(min_length=1, max_length=2000)


class OutlineReview(_Body):
    """Either accept the proposed outline as it is, or send the edited one (3–12 sections)."""

    accept: bool = False
    title: str | None = Field(None, max_length=300)
    sections: list[OutlineSection] | None = Field(None, max_length=50)


class KBSummary(BaseModel):
    name: str
    documents: int | None = None
    passages: int | None = None


class IngestJobOut(BaseModel):
    id: str
    kb: str
    files: list[str]
    status: str
    message: str
    progress: list[str]
    summary: dict[str, Any] | None
    created_at: float
    finished_at: float | None


class PassageOut(BaseModel):
    text: str
    title: str
    location: str
    doc_id: str
    page: int | None
    score: float


class Health(BaseModel):
    version: str
    workers: int
    token_required: bool
    formats: list[str]


# ---- the application ---------------------------------------------------------------------------


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
    _errors(app)
    security.protect(app, bind_host=host, token=token, cors_origins=cors_origins, token_paths="/api")

    @app.middleware("http")
    async def page_headers(request: Request, call_next: Any) -> Response:
        response: Response = await call_next(request)
        response.headers.setdefault("Content-Security-Policy", PAGE_POLICY)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        return response

    def summary(record: RunRecord) -> dict[str, Any]:
        recorded = record.settings.get("settings", {})
        kb = record.settings.get("kb")
        return {
            "id": record.id,
            "question": record.question,
            "status": manager.status(record),
            "policy": record.policy,
            "steps": record.steps,
            "max_steps": recorded.get("research", {}).get("max_steps", 0),
            "kb": kb.removeprefix("kb:") if isinstance(kb, str) else None,
            "created_at": record.created_at,
            "updated_at": record.updated_at,
            "error": record.error or None,
        }

    def detail(run_id: str) -> dict[str, Any]:
        record, state = runner.load_run(run_id)
        proposed = manager.pending_review(record.id)
        outline = state.outline if state is not None else None
        return {
            **summary(record),
            "title": outline.title if outline is not None else None,
            "stop_reason": state.stop_reason if state is not None else "",
            "outline": outline.model_dump() if outline is not None else None,
            "review": proposed.model_dump() if proposed is not None else None,
            "formats": reports.formats() if record.report_path else [],
        }

    # -- runs ------------------------------------------------------------------------------------

    @app.post("/api/runs", status_code=201, tags=["runs"])
    async def create_run(body: CreateRun) -> RunDetail:
        """Start a research run; it is queued and driven by the next free worker."""
        overrides = {
            "llm": {"model": body.model, "max_tokens_total": body.max_tokens_total},
            "research": {
                "depth": body.depth,
                "policy": body.policy,
                "max_steps": body.max_steps,
                "max_expansions": body.max_expansions,
                "language": body.language,
            },
        }
        run_id = await asyncio.to_thread(
            manager.create, body.question, kb=body.kb, overrides=overrides, review=body.review_outline
        )
        return RunDetail.model_validate(await asyncio.to_thread(detail, run_id))

    @app.get("/api/runs", tags=["runs"])
    async def list_runs(limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[RunSummary]:
        """Runs, newest first."""

        def read() -> list[RunRecord]:
            with runner.open_journal() as journal:
                return journal.list_runs(limit)

        return [RunSummary.model_validate(summary(r)) for r in await asyncio.to_thread(read)]

    @app.get("/api/runs/{run_id}", tags=["runs"])
    async def get_run(run_id: str) -> RunDetail:
        """A run: its status, its outline as it stands, and a plan waiting for review."""
        return RunDetail.model_validate(await asyncio.to_thread(detail, run_id))

    @app.post("/api/runs/{run_id}/cancel", tags=["runs"])
    async def cancel_run(run_id: str) -> CancelResult:
        """Stop a run before its next action; it stays resumable."""
        status = await asyncio.to_thread(manager.cancel, run_id)
        return CancelResult(id=run_id, status=status)

    @app.post("/api/runs/{run_id}/resume", status_code=202, tags=["runs"])
    async def resume_run(run_id: str, body: ResumeRun | None = None) -> RunDetail:
        """Continue a stopped run (interrupted, cancelled or failed) from its last checkpoint."""
        review = body.review_outline if body is not None else False
        resumed = await asyncio.to_thread(manager.resume, run_id, review=review)
        return RunDetail.model_validate(await asyncio.to_thread(detail, resumed))

    @app.post("/api/runs/{run_id}/outline", tags=["runs"])
    async def review_outline(run_id: str, body: OutlineReview) -> RunDetail:
        """Answer a plan review: accept the proposed outline, or send an edited one."""
        record, _ = await asyncio.to_thread(runner.load_run, run_id)
        if body.accept:
            edited = None
        else:
            if body.title is None or body.sections is None:
                raise UserError("send either accept: true, or the edited title and sections")
            edited = reviewed_outline(
                record.question, body.title, [(section.title, section.plan) for section in body.sections]
            )
        manager.submit_review(record.id, edited)
        return RunDetail.model_validate(await asyncio.to_thread(detail, record.id))

    @app.get(
        "/api/runs/{run_id}/events",
        tags=["runs"],
        response_class=EventSourceResponse,
        responses={200: {"content": {"text/event-stream": {}}, "description": "The run's events."}},
    )
    async def run_events(
        run_id: str,
        last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
        after: Annotated[
            int | None, Query(ge=0, description="Like Last-Event-ID, for clients without headers.")
        ] = None,
    ) -> EventSourceResponse:
        """The run's events as Server-Sent Events, from the start (or after `Last-Event-ID`), then live."""
        try:
            since = events.parse_last_event_id(last_event_id) if after is None else after
        except ValueError:
            raise UserError(f"Last-Event-ID must be an event number, not {last_event_id!r}") from None
        record, _ = await asyncio.to_thread(runner.load_run, run_id)
        return EventSourceResponse(events.run_events(record.id, manager, since), ping=10)

    @app.get(
        "/api/runs/{run_id}/report",
        tags=["runs"],
        response_class=Response,
        responses={
            200: {"content": {t: {} for t in reports.MEDIA_TYPES.values()}, "description": "The report."}
        },
    )
    async def get_report(run_id: str, format: str = "md", download: bool = False) -> Response:
        """The finished report, as md, html, json (and pdf, docx, bibtex, csl where installed)."""
        found = await asyncio.to_thread(reports.report, run_id, format)
        disposition = "attachment" if download else "inline"
        return Response(
            found.content,
            media_type=found.media_type,
            headers={"Content-Disposition": f'{disposition}; filename="{found.filename}"'},
        )

    # -- knowledge bases ----------------------------------------------------------------------------

    @app.get("/api/kbs", tags=["knowledge bases"])
    async def list_kbs() -> list[KBSummary]:
        return [KBSummary.model_validate(entry) for entry in await asyncio.to_thread(kbs.list_kbs)]

    @app.post(
        "/api/kbs/{kb}/documents",
        status_code=202,
        tags=["knowledge bases"],
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "multipart/form-data": {
                        "schema": {
                            "type": "object",
                            "properties": {
                                "files": {"type": "array", "items": {"type": "string", "format": "binary"}}
                            },
                            "required": ["files"],
                        }
                    }
                },
            }
        },
    )
    async def upload(kb: str, request: Request) -> IngestJobOut:
        """Upload documents (multipart field `files`) into a KB, then index them as a background job."""
        kbs.uploads_dir(kb)  # validates the name before anything is read
        length = request.headers.get("content-length")
        if length is None or not length.isdigit():
            raise kbs.UploadRejected("send the upload with a Content-Length", status=411)
        if int(length) > kbs.MAX_REQUEST_BYTES:
            raise kbs.UploadRejected(
                f"the upload is larger than the limit of {kbs.MAX_REQUEST_BYTES // (1024 * 1024)} MB",
                status=413,
            )
        form = await request.form(max_files=100, max_fields=10)
        try:
            files = [item for item in form.getlist("files") if not isinstance(item, str)]
            if not files:
                raise kbs.UploadRejected("no files: send them in the multipart field `files`")
            for item in files:  # check every file before storing any, so a refusal stores nothing
                kbs.safe_filename(item.filename)
                if item.size is not None and item.size > kbs.MAX_FILE_BYTES:
                    limit = kbs.MAX_FILE_BYTES // (1024 * 1024)
                    raise kbs.UploadRejected(
                        f"{item.filename} is larger than the limit of {limit} MB", status=413
                    )
            stored = [
                await asyncio.to_thread(kbs.store_upload, kb, item.filename, item.file.read) for item in files
            ]
        finally:
            await form.close()
        return IngestJobOut.model_validate(ingest.submit(kb, stored).to_dict())

    @app.get("/api/jobs/{job_id}", tags=["knowledge bases"])
    async def get_job(job_id: str) -> IngestJobOut:
        """An ingestion job: queued, running, done or failed, with its progress lines."""
        return IngestJobOut.model_validate(ingest.get(job_id).to_dict())

    @app.get("/api/kbs/{kb}/search", tags=["knowledge bases"])
    async def search(
        kb: str,
        q: Annotated[str, Query(min_length=1, max_length=1000)],
        k: Annotated[int, Query(ge=1, le=100)] = 10,
    ) -> list[PassageOut]:
        """The best passages of a KB for a query."""
        passages = await asyncio.to_thread(kbs.search, kb, q, k)
        return [
            PassageOut(
                text=p.text,
                title=p.source.title,
                location=p.source.location,
                doc_id=p.source.doc_id,
                page=p.source.page,
                score=p.score,
            )
            for p in passages
        ]

    # -- the server and the page ------------------------------------------------------------------

    @app.get("/api/health", tags=["server"])
    async def health() -> Health:
        return Health(
            version=__version__, workers=workers, token_required=bool(token), formats=reports.formats()
        )

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


def _errors(app: FastAPI) -> None:
    """deepdraft's errors as HTTP answers: `{"detail": "<one line>"}` with a fitting status."""

    def answer(status: int) -> Any:
        async def handler(_: Request, exc: Exception) -> JSONResponse:
            return JSONResponse({"detail": str(exc)}, status_code=getattr(exc, "status", status))

        return handler

    app.add_exception_handler(RunNotFound, answer(404))
    app.add_exception_handler(RunConflict, answer(409))
    app.add_exception_handler(reports.ReportNotReady, answer(409))
    app.add_exception_handler(UserError, answer(400))
    app.add_exception_handler(StoreError, answer(500))
    app.add_exception_handler(DeepdraftError, answer(500))
