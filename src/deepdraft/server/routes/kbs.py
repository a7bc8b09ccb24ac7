"""`/api/kbs` and `/api/jobs`: list knowledge bases, upload documents into one, follow the job, search."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Query, Request

from deepdraft.retrieval.kb import lookup
from deepdraft.server import kbs
from deepdraft.server.models import IngestJobOut, KBSummary, PassageOut
from deepdraft.server.routes.shared import Ingest

router = APIRouter(tags=["knowledge bases"])

_UPLOAD_BODY = {
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
}


@router.get("/api/kbs")
async def list_kbs() -> list[KBSummary]:
    return [KBSummary.model_validate(entry) for entry in await asyncio.to_thread(kbs.list_kbs)]


@router.post("/api/kbs/{kb}/documents", status_code=202, openapi_extra=_UPLOAD_BODY)
async def upload(kb: str, request: Request, ingest: Ingest) -> IngestJobOut:
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


@router.get("/api/jobs/{job_id}")
async def get_job(job_id: str, ingest: Ingest) -> IngestJobOut:
    """An ingestion job: queued, running, done or failed, with its progress lines."""
    return IngestJobOut.model_validate(ingest.get(job_id).to_dict())


@router.get("/api/kbs/{kb}/search")
async def search(
    kb: str,
    q: Annotated[str, Query(min_length=1, max_length=1000)],
    k: Annotated[int, Query(ge=1, le=100)] = 10,
) -> list[PassageOut]:
    """The best passages of a KB for a query."""
    passages = await asyncio.to_thread(lookup.search, kb, q, k)
    return [PassageOut.model_validate(lookup.passage_json(p)) for p in passages]
