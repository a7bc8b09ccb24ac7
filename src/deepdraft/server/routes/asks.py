"""`/api/runs/{id}/asks`: ask a finished run a follow-up question, and list those asked so far."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter

from deepdraft.run.answers import Answer
from deepdraft.run.runs import Runs
from deepdraft.server.models import AskAnswer, AskQuestion
from deepdraft.server.routes.shared import Manager

router = APIRouter(tags=["asks"])


def answer_out(answer: Answer) -> AskAnswer:
    return AskAnswer(
        run_id=answer.run_id,
        question=answer.question,
        answer=answer.markdown,
        note=answer.note,
        new_sources=answer.sources,
        section=answer.section,
        asked_at=answer.asked_at,
        answered_at=answer.answered_at,
    )


@router.post("/api/runs/{run_id}/asks", status_code=201)
async def ask_run(run_id: str, body: AskQuestion, manager: Manager) -> AskAnswer:
    """Answer a follow-up question from the run's evidence and a fresh search of its knowledge base,
    cited in the report's numbering; the report is left as it is. The call returns with the answer
    (seconds with a remote model, minutes with the embedded one)."""
    return answer_out(await asyncio.to_thread(manager.ask, run_id, body.question))


@router.get("/api/runs/{run_id}/asks")
async def list_asks(run_id: str) -> list[AskAnswer]:
    """The follow-up questions asked of the run, in the order asked, with their answers."""

    def read() -> list[Answer]:
        with Runs.open() as runs:
            return runs.asks(run_id)

    return [answer_out(answer) for answer in await asyncio.to_thread(read)]
