"""`/api/runs/{run_id}/report`: a finished run's report in the format a client asks for; its
versions (`/versions`, `/versions/{n}`) and what changed between two of them (`/diff`)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from fastapi.responses import Response

from deepdraft.run import history, reports, versions
from deepdraft.server.models import SectionChangeOut, VersionDiff, VersionList, VersionOut

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


@router.get("/api/runs/{run_id}/versions")
async def list_versions(run_id: str) -> VersionList:
    """The report's versions, oldest first: why each was written and what it changed."""
    found = await asyncio.to_thread(history.listing, run_id)
    edit = found.unrecorded_edit
    return VersionList(
        run_id=found.run_id,
        versions=[
            VersionOut(
                number=entry.version.number,
                kind=entry.version.kind,
                note=entry.version.note,
                created_at=entry.version.created_at,
                step=entry.version.step,
                changed=entry.changed,
                current=entry.current,
            )
            for entry in found.entries
        ],
        unrecorded_edit=edit.describe() if edit is not None else None,
    )


@router.get(
    "/api/runs/{run_id}/versions/{number}",
    response_class=Response,
    responses={200: {"content": {reports.MEDIA_TYPES["md"]: {}}, "description": "The version's Markdown."}},
)
async def get_version(run_id: str, number: str) -> Response:
    """One report version, as the Markdown it was kept as."""
    wanted = versions.version_number(number)
    run, markdown = await asyncio.to_thread(history.version_markdown, run_id, wanted)
    return Response(
        markdown.encode("utf-8", errors="surrogateescape"),
        media_type=reports.MEDIA_TYPES["md"],
        headers={"Content-Disposition": f'inline; filename="{run}.v{wanted}.md"'},
    )


@router.get("/api/runs/{run_id}/diff")
async def diff_versions(run_id: str, older: str | None = None, newer: str | None = None) -> VersionDiff:
    """What changed from version `older` to version `newer`, section by section (by default the
    version before the current one against the current one)."""
    a = versions.version_number(older) if older is not None else None
    b = versions.version_number(newer) if newer is not None else None
    found = await asyncio.to_thread(history.compare_versions, run_id, a, b)
    changes = found.changes
    return VersionDiff(
        run_id=found.run_id,
        older=found.older.number,
        newer=found.newer.number,
        summary=changes.summary(),
        sections=[
            SectionChangeOut(
                key=section.key,
                change=section.change,
                heading=section.heading,
                old_heading=section.old_heading,
                lines=list(section.lines),
                sources_added=list(section.sources_added),
                sources_removed=list(section.sources_removed),
            )
            for section in changes.sections
        ],
        sources_added=changes.sources_added,
        sources_removed=changes.sources_removed,
    )
