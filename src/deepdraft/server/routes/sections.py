"""Commands on one section of a finished report, and a section's evidence.

`POST /api/runs/{run_id}/deepen`, `/rewrite` and `/recheck` queue the command like a resumed run
(`RunManager.command`): the run goes finished → continuing → finished, with a new report version,
and its progress follows on the run's event stream. A refusal comes at once and changes nothing:
404 for an unknown run or section, 409 for a run that is not finished or is being driven, a section
that cannot take the command, or a hand edit of report.md in the way (unless `force`), 422 for
arguments out of their bounds. `GET /api/runs/{run_id}/sections/{section}/evidence` shows what a
section was written from and what it cites.
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter
from fastapi import Path as PathParam

from deepdraft.policy.sections import SECTION_PATTERN, SectionCommand
from deepdraft.run.section_evidence import section_evidence
from deepdraft.server.models import (
    CommandStarted,
    DeepenSection,
    EvidencePassageOut,
    RecheckSection,
    RewriteSection,
    SectionEvidenceOut,
)
from deepdraft.server.routes.runs import detail
from deepdraft.server.routes.shared import Manager

router = APIRouter(tags=["runs"])


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
