"""`/api/runs`: start, list, show, cancel and resume runs, and answer a plan review."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Query

from deepdraft.errors import UserError
from deepdraft.policy.review import reviewed_outline
from deepdraft.run import reports
from deepdraft.run.manager import RunManager
from deepdraft.run.runs import RunInfo, Runs
from deepdraft.run.runs import get_run as read_run
from deepdraft.server.models import CancelResult, CreateRun, OutlineReview, ResumeRun, RunDetail, RunSummary
from deepdraft.server.routes.shared import Manager

router = APIRouter(tags=["runs"])


def summary(manager: RunManager, record: RunInfo) -> dict[str, Any]:
    return {
        "id": record.id,
        "question": record.question,
        "status": manager.status(record),
        "policy": record.policy,
        "steps": record.steps,
        "max_steps": record.max_steps,
        "kb": record.kb_name,
        "created_at": record.created_at,
        "updated_at": record.updated_at,
        "error": record.error or None,
    }


def detail(manager: RunManager, run_id: str) -> RunDetail:
    with Runs.open() as runs:
        record = runs.get(run_id)
        state = runs.state(record.id)
    proposed = manager.pending_review(record.id)
    outline = state.outline if state is not None else None
    return RunDetail.model_validate(
        {
            **summary(manager, record),
            "title": outline.title if outline is not None else None,
            "stop_reason": state.stop_reason if state is not None else "",
            "outline": outline.model_dump() if outline is not None else None,
            "review": proposed.model_dump() if proposed is not None else None,
            "formats": reports.formats() if record.report_path else [],
        }
    )


@router.post("/api/runs", status_code=201)
async def create_run(body: CreateRun, manager: Manager) -> RunDetail:
    """Start a research run; it is queued and driven by the next free worker."""
    overrides: dict[str, dict[str, Any]] = {
        "llm": {"model": body.model, "max_tokens_total": body.max_tokens_total},
        "research": {
            "depth": body.depth,
            "policy": body.policy,
            "max_steps": body.max_steps,
            "max_expansions": body.max_expansions,
            "max_time": body.max_time,
            "language": body.language,
        },
    }
    run_id = await asyncio.to_thread(
        manager.create, body.question, kb=body.kb, overrides=overrides, review=body.review_outline
    )
    return await asyncio.to_thread(detail, manager, run_id)


@router.get("/api/runs")
async def list_runs(manager: Manager, limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[RunSummary]:
    """Runs, newest first."""

    def read() -> list[RunInfo]:
        with Runs.open() as runs:
            return runs.all(limit)

    return [RunSummary.model_validate(summary(manager, r)) for r in await asyncio.to_thread(read)]


@router.get("/api/runs/{run_id}")
async def get_run(run_id: str, manager: Manager) -> RunDetail:
    """A run: its status, its outline as it stands, and a plan waiting for review."""
    return await asyncio.to_thread(detail, manager, run_id)


@router.post("/api/runs/{run_id}/cancel")
async def cancel_run(run_id: str, manager: Manager) -> CancelResult:
    """Stop a run before its next action; it stays resumable."""
    status = await asyncio.to_thread(manager.cancel, run_id)
    return CancelResult(id=run_id, status=status)


@router.post("/api/runs/{run_id}/resume", status_code=202)
async def resume_run(run_id: str, manager: Manager, body: ResumeRun | None = None) -> RunDetail:
    """Continue a stopped run (interrupted, cancelled or failed) from its last checkpoint."""
    review = body.review_outline if body is not None else False
    force = body.force if body is not None else False
    resumed = await asyncio.to_thread(manager.resume, run_id, review=review, force=force)
    return await asyncio.to_thread(detail, manager, resumed)


@router.post("/api/runs/{run_id}/outline")
async def review_outline(run_id: str, body: OutlineReview, manager: Manager) -> RunDetail:
    """Answer a plan review: accept the proposed outline, or send an edited one."""
    record = await asyncio.to_thread(read_run, run_id)
    if body.accept:
        edited = None
    else:
        if body.title is None or body.sections is None:
            raise UserError("send either accept: true, or the edited title and sections")
        edited = reviewed_outline(
            record.question, body.title, [(section.title, section.plan) for section in body.sections]
        )
    manager.submit_review(record.id, edited)
    return await asyncio.to_thread(detail, manager, record.id)
