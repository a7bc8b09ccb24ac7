"""Commands on one section of a finished report (and on the whole of it), and a section's evidence.

`POST /api/runs/{run_id}/deepen`, `/rewrite`, `/recheck`, `/add-source` and `/refresh` queue the
command like a resumed run (`RunManager.command`): the run goes finished → continuing → finished,
with a new report version, and its progress follows on the run's event stream. A refusal comes at
once and changes nothing: 404 for an unknown run or section, 409 for a run that is not finished or
is being driven, a section that cannot take the command, a hand edit of report.md in the way
(unless `force`), or a refresh with nothing to refresh, 422 for arguments out of their bounds.
`GET /api/runs/{run_id}/refresh` says what a refresh would write again and why, changing nothing.
`GET /api/runs/{run_id}/sections/{section}/evidence` shows what a section was written from and
what it cites.

add-source never reads a path on the server (a client must not index what it likes, as with
`/api/kbs`): a document is uploaded (multipart field `file`, under the checks of the KB upload
route) and kept in the run folder's `sources/`, or it is a URL, fetched only for a run that uses
the web. The document is added to the run's knowledge base before the answer, so a file or page
that cannot be added is refused in the request.
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.datastructures import UploadFile

from deepdraft.errors import UserError
from deepdraft.policy.sections import SECTION_PATTERN, SectionCommand, Stale
from deepdraft.run import runner
from deepdraft.run.refresh import Findings
from deepdraft.run.section_evidence import section_evidence
from deepdraft.server import kbs
from deepdraft.server.models import (
    AddSource,
    AddSourceStarted,
    CommandStarted,
    DeepenSection,
    EvidencePassageOut,
    RecheckSection,
    RefreshPlan,
    RefreshRun,
    RefreshStarted,
    RewriteSection,
    SectionEvidenceOut,
    StaleSectionOut,
)
from deepdraft.server.routes.runs import detail
from deepdraft.server.routes.shared import Manager

router = APIRouter(tags=["runs"])

MAX_ADD_SOURCE_BYTES = kbs.MAX_FILE_BYTES + 1024 * 1024
"""The largest add-source request: one file of the KB upload's limit, and room for the form fields."""
_ADD_SOURCE_FIELDS = {
    "to": {"type": "string", "examples": ["3.2"]},
    "url": {"type": "string"},
    "instructions": {"type": "string"},
    "max_steps": {"type": "integer"},
    "force": {"type": "boolean"},
}
_ADD_SOURCE_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"file": {"type": "string", "format": "binary"}, **_ADD_SOURCE_FIELDS},
                    "required": ["to"],
                }
            },
            "application/json": {"schema": AddSource.model_json_schema()},
        },
    }
}


async def _queue(manager: Manager, run_id: str, command: SectionCommand, force: bool) -> CommandStarted:
    queued, after = await asyncio.to_thread(manager.command, run_id, command, force=force)
    run = await asyncio.to_thread(detail, manager, queued)
    return CommandStarted.model_validate(
        {**run.model_dump(), "command": command.command, "section": command.section, "events_after": after}
    )


@router.post("/api/runs/{run_id}/deepen", status_code=202)
async def deepen_section(run_id: str, body: DeepenSection, manager: Manager) -> CommandStarted:
    """Split one section of a finished report into subsections, research and write them."""
    command = SectionCommand("deepen", body.section, body.into, body.instructions, body.max_steps)
    return await _queue(manager, run_id, command, body.force)


@router.post("/api/runs/{run_id}/rewrite", status_code=202)
async def rewrite_section(run_id: str, body: RewriteSection, manager: Manager) -> CommandStarted:
    """Search again for one section of a finished report and write it again."""
    command = SectionCommand("rewrite", body.section, None, body.instructions, body.max_steps)
    return await _queue(manager, run_id, command, body.force)


@router.post("/api/runs/{run_id}/recheck", status_code=202)
async def recheck_section(
    run_id: str, manager: Manager, body: RecheckSection | None = None
) -> CommandStarted:
    """Verify the citations of one section of a finished report (or of all of it) again, with repair."""
    body = body or RecheckSection()
    return await _queue(manager, run_id, SectionCommand("recheck", body.section), body.force)


@router.get("/api/runs/{run_id}/refresh")
async def plan_refresh(run_id: str, manager: Manager) -> RefreshPlan:
    """What a refresh would write again, and why: how the run's knowledge base changed since its
    report was written. Changes nothing."""
    with_id = await asyncio.to_thread(detail, manager, run_id)
    found = await asyncio.to_thread(runner.find_stale, with_id.id, manager.settings)
    if found.stale:
        message = f"the knowledge base changed ({found.changes.describe()}); a refresh writes again:"
    else:
        message = runner.nothing_to_refresh(with_id.id, found)
    return RefreshPlan(
        run_id=with_id.id, changes=found.changes.describe(), stale=_stale_out(found), message=message
    )


@router.post("/api/runs/{run_id}/refresh", status_code=202)
async def refresh_report(run_id: str, manager: Manager, body: RefreshRun | None = None) -> RefreshStarted:
    """Write again the sections of a finished report that its knowledge base's changes concern
    (409, saying why, when there are none: nothing is queued)."""
    body = body or RefreshRun()
    queued, after, found = await asyncio.to_thread(
        manager.refresh, run_id, max_steps=body.max_steps, force=body.force
    )
    run = await asyncio.to_thread(detail, manager, queued)
    return RefreshStarted.model_validate(
        {
            **run.model_dump(),
            "command": "refresh",
            "section": None,
            "events_after": after,
            "changes": found.changes.describe(),
            "stale": _stale_out(found),
        }
    )


def _stale_out(found: Findings) -> list[StaleSectionOut]:
    return [_stale(stale) for stale in found.stale]


def _stale(stale: Stale) -> StaleSectionOut:
    return StaleSectionOut(
        section=stale.position.removeprefix("section-"), reason=stale.reason, line=stale.describe()
    )


@router.post("/api/runs/{run_id}/add-source", status_code=202, openapi_extra=_ADD_SOURCE_BODY)
async def add_source(run_id: str, request: Request, manager: Manager) -> AddSourceStarted:
    """Add a document to a finished run's knowledge base and write one section again with it: a
    file uploaded as multipart/form-data (field `file`, the options as form fields), or a URL
    (form field or JSON body) for a run that uses the web."""
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        length = request.headers.get("content-length")
        if length is None or not length.isdigit():
            raise kbs.UploadRejected("send the upload with a Content-Length", status=411)
        if int(length) > MAX_ADD_SOURCE_BYTES:
            limit = kbs.MAX_FILE_BYTES // (1024 * 1024)
            raise kbs.UploadRejected(f"the upload is larger than the limit of {limit} MB", status=413)
        form = await request.form(max_files=1, max_fields=10)
        try:
            files = [item for item in form.getlist("file") if isinstance(item, UploadFile)]
            fields = {key: value for key, value in form.multi_items() if isinstance(value, str) and value}
            return await _add_source(run_id, manager, _add_source_body(fields), files[0] if files else None)
        finally:
            await form.close()
    try:
        data = await request.json()
    except ValueError as exc:
        raise UserError(
            "send add-source as JSON (a URL) or as multipart/form-data (a file in the field `file`)"
        ) from exc
    return await _add_source(run_id, manager, _add_source_body(data), None)


def _add_source_body(data: Any) -> AddSource:
    if isinstance(data, dict) and ("path" in data or "file" in data):
        raise UserError(
            "add-source reads no file on the server by its path; upload the file as multipart/form-data "
            "in the field `file`"
        )
    try:
        return AddSource.model_validate(data)
    except ValidationError as exc:
        raise RequestValidationError(
            [{**error, "loc": ("body", *error["loc"])} for error in exc.errors(include_url=False)]
        ) from exc


async def _add_source(
    run_id: str, manager: Manager, body: AddSource, file: UploadFile | None
) -> AddSourceStarted:
    if (file is None) == (body.url is None):
        raise UserError("add-source takes one document: upload a file (field `file`) or give a url, not both")
    upload = None
    if file is not None:
        name = kbs.safe_filename(file.filename)  # checked before anything else is done
        if file.size is not None and file.size > kbs.MAX_FILE_BYTES:
            limit = kbs.MAX_FILE_BYTES // (1024 * 1024)
            raise kbs.UploadRejected(f"{name} is larger than the limit of {limit} MB", status=413)
        read = file.file.read

        def upload(folder: Path) -> tuple[Path, bool]:
            new = not (folder / name).exists()
            return kbs.store_file(folder, name, read, replace=False), new

    source = body.url if body.url is not None else str(file.filename if file is not None else "")
    command = SectionCommand("add-source", body.to, None, body.instructions, body.max_steps, source=source)
    queued, after, command = await asyncio.to_thread(
        manager.add_source, run_id, command, force=body.force, upload=upload
    )
    run = await asyncio.to_thread(detail, manager, queued)
    documents = list(dict.fromkeys(passage.source.title for passage in command.pinned))
    return AddSourceStarted.model_validate(
        {
            **run.model_dump(),
            "command": "add-source",
            "section": body.to,
            "events_after": after,
            "source": source,
            "documents": documents,
        }
    )


@router.get("/api/runs/{run_id}/sections/{section}/evidence")
async def get_section_evidence(
    run_id: str,
    section: Annotated[str, PathParam(max_length=40, pattern=SECTION_PATTERN, examples=["3.2"])],
) -> SectionEvidenceOut:
    """The passages a section of the finished report was written from and those it cites, with
    their sources' numbers in the References."""
    found = await asyncio.to_thread(section_evidence, run_id, section)
    return SectionEvidenceOut(
        run_id=found.run_id,
        number=found.number,
        position=found.position,
        title=found.title,
        written=found.written,
        passages=[EvidencePassageOut.model_validate(asdict(passage)) for passage in found.passages],
    )
