"""`/api/runs/{run_id}/events`: a run's events as Server-Sent Events (see `deepdraft.server.events`)."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Header, Query
from sse_starlette import EventSourceResponse

from deepdraft.errors import UserError
from deepdraft.run.runs import get_run
from deepdraft.server import events
from deepdraft.server.routes.shared import Manager

router = APIRouter(tags=["runs"])


@router.get(
    "/api/runs/{run_id}/events",
    response_class=EventSourceResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "The run's events."}},
)
async def run_events(
    run_id: str,
    manager: Manager,
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
    record = await asyncio.to_thread(get_run, run_id)
    return EventSourceResponse(events.run_events(record.id, manager, since), ping=10)
