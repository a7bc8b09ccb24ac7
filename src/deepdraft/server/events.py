"""A run's events as Server-Sent Events: replayed from the journal, then followed live.

Every event comes from the journal, live ones included: the stream reads the events after the
last one it sent, sends them, and polls again a moment later. So a late subscriber and a client
that reconnects with ``Last-Event-ID`` see every event exactly once and in order (each SSE ``id``
is the event's per-run journal ``seq``), and runs driven by another process — the CLI, another
server — stream just the same. Any event kind passes through unchanged: the stream knows none of
them.

Trade-offs: polling costs one small indexed SELECT per stream every `POLL_S` seconds, and events
reach clients up to that late; the runner journals an action's events when the action ends, so
that is the stream's granularity anyway. Three messages carry no ``id`` because they are not
journal events: ``review_requested`` (the run waits for a plan review; sent again after a
reconnect while it still waits), ``stopped`` (nobody drives the run any more but it can go on —
cancelled, interrupted or failed) and ``end`` (the run is finished; the stream closes).

A stopped run keeps its stream open: when it is resumed — through this server, another one or
the CLI — its new events follow on the same connection, so a watching client needs to do nothing.
While stopped the stream polls less often (`STOPPED_POLL_S`); a client that only wanted to follow
the run until it stops closes the connection on ``stopped``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from sse_starlette import ServerSentEvent

from deepdraft.run.manager import RESUMABLE, RunManager
from deepdraft.run.runs import RunEvent, Runs

POLL_S = 0.2
STOPPED_POLL_S = 1.0
FINAL_STATUSES = frozenset({"finished"})
"""Statuses after which no event can follow; every other stop can be resumed."""


def _message(record: RunEvent) -> ServerSentEvent:
    return ServerSentEvent(
        data=json.dumps(record.payload, ensure_ascii=False), event=record.kind, id=str(record.seq)
    )


def _note(kind: str, payload: dict[str, Any]) -> ServerSentEvent:
    return ServerSentEvent(data=json.dumps({"kind": kind, **payload}, ensure_ascii=False), event=kind)


async def run_events(run_id: str, manager: RunManager, after: int = 0) -> AsyncIterator[ServerSentEvent]:
    """The events of `run_id` with a seq above `after`, then live ones until the run is finished."""
    runs = await asyncio.to_thread(Runs.open)
    offered = None  # the proposed outline last announced, so a review is announced once
    stopped_as = None  # the status last announced by a `stopped` note, so a stop is announced once
    try:
        while True:
            records = await asyncio.to_thread(runs.events, run_id, after)
            for record in records:
                yield _message(record)
                after = record.seq
            proposed = manager.pending_review(run_id)
            if proposed is not None and proposed is not offered:
                yield _note("review_requested", {"outline": proposed.model_dump()})
            offered = proposed
            if records:
                continue
            if await asyncio.to_thread(manager.is_live, run_id):
                stopped_as = None  # queued or driven (again): its next stop is news
                await asyncio.sleep(POLL_S)
                continue
            # The owner journals its last events before it lets go of the run: read once more.
            last = await asyncio.to_thread(runs.events, run_id, after)
            for record in last:
                yield _message(record)
                after = record.seq
            status = manager.status(await asyncio.to_thread(runs.get, run_id))
            if status in FINAL_STATUSES:
                yield _note("end", {"status": status})
                return
            if status not in RESUMABLE:
                continue  # resumed between the two looks: follow it
            if status != stopped_as:
                yield _note("stopped", {"status": status, "resumable": True})
                stopped_as = status
            await asyncio.sleep(STOPPED_POLL_S)
    finally:
        await asyncio.to_thread(runs.close)


def parse_last_event_id(value: str | None) -> int:
    """The `Last-Event-ID` a client sent (0 when none); `ValueError` for anything but a seq."""
    if value is None or value.strip() == "":
        return 0
    seq = int(value.strip())
    if seq < 0:
        raise ValueError("negative")
    return seq
