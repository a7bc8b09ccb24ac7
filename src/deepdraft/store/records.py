"""The journal's rows as values: a run, an event, and the conversions from SQLite rows."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from typing import Any

from deepdraft.egress import EgressRecord
from deepdraft.events import StepRecord


@dataclass(frozen=True)
class RunRecord:
    id: str
    question: str
    policy: str
    settings: dict[str, Any]
    status: str
    created_at: float
    updated_at: float
    steps: int
    error: str | None
    report_path: str | None


@dataclass(frozen=True)
class EventRecord:
    seq: int
    run_id: str
    kind: str
    payload: dict[str, Any]
    created_at: float


@dataclass(frozen=True)
class AskRecord:
    """A follow-up question asked of a finished run, and its answer (`deepdraft ask`)."""

    run_id: str
    step: int
    """The journal step that began the question (its identity within the run)."""
    question: str
    asked_at: float
    answered_at: float
    answer: str
    """Markdown citing in the report's numbering, new sources listed under it; "" when none."""
    note: str
    """Why there is no answer; "" when there is one."""
    detail: dict[str, Any]
    """The answer citing passage keys (``text``) and its new sources (``sources``)."""
    section: str | None = None
    """`--into-report`: the section the answer became."""


def ask_from_row(row: sqlite3.Row) -> AskRecord:
    return AskRecord(
        run_id=row["run_id"],
        step=row["step"],
        question=row["question"],
        asked_at=row["asked_at"],
        answered_at=row["answered_at"],
        answer=row["answer"],
        note=row["note"],
        detail=json.loads(row["detail"]),
        section=row["section"],
    )


def dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def run_from_row(row: sqlite3.Row) -> RunRecord:
    return RunRecord(
        id=row["id"],
        question=row["question"],
        policy=row["policy"],
        settings=json.loads(row["settings"]),
        status=row["status"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        steps=row["steps"],
        error=row["error"],
        report_path=row["report_path"],
    )


def step_from_row(row: sqlite3.Row) -> StepRecord:
    return StepRecord(
        step=row["step"],
        action=row["action"],
        prompt=row["prompt"],
        reply=row["reply"],
        parsed=None if row["parsed"] is None else json.loads(row["parsed"]),
        valid=bool(row["valid"]),
        reason=row["reason"],
        prompt_tokens=row["prompt_tokens"],
        completion_tokens=row["completion_tokens"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        cached=bool(row["cached"]),
        target=row["target"],
        directed=bool(row["directed"]),
    )


def event_from_row(row: sqlite3.Row) -> EventRecord:
    return EventRecord(
        seq=row["seq"],
        run_id=row["run_id"],
        kind=row["kind"],
        payload=json.loads(row["payload"]),
        created_at=row["created_at"],
    )


def egress_from_row(row: sqlite3.Row) -> EgressRecord:
    return EgressRecord(
        kind=row["kind"],
        endpoint=row["endpoint"],
        detail=row["detail"],
        at=row["at"],
        bytes=row["bytes"],
        requests=row["requests"],
        seq=row["seq"],
    )
