"""The server itself (`/api/health`) and the web page with its static files."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse

from deepdraft._version import __version__
from deepdraft.run import reports
from deepdraft.server.models import Health

STATIC = Path(__file__).parent.parent / "static"

router = APIRouter()


@router.get("/api/health", tags=["server"])
async def health(request: Request) -> Health:
    state = request.app.state
    return Health(
        version=__version__,
        workers=state.workers,
        token_required=state.token_required,
        formats=reports.formats(),
    )


@router.get("/", include_in_schema=False)
async def page() -> FileResponse:
    return FileResponse(STATIC / "index.html", media_type="text/html")
