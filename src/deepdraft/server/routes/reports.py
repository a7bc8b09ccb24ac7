"""`/api/runs/{run_id}/report`: a finished run's report in the format a client asks for."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from fastapi.responses import Response

from deepdraft.run import reports

router = APIRouter(tags=["runs"])


@router.get(
    "/api/runs/{run_id}/report",
    response_class=Response,
    responses={200: {"content": {t: {} for t in reports.MEDIA_TYPES.values()}, "description": "The report."}},
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
