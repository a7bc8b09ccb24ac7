"""A finished run's report in the format a client asks for.

Markdown is the file the run wrote (`report.md`, what the CLI user gets too). Every other format is
rendered in memory by `deepdraft.export` from the run's final state — nothing is written on the
server for a download, and a client never names a path: the run id is looked up in the journal.
PDF and DOCX are offered only when their optional libraries are installed.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from deepdraft import export
from deepdraft.errors import UserError
from deepdraft.run.runs import Runs

MEDIA_TYPES = {
    "md": "text/markdown; charset=utf-8",
    "html": "text/html; charset=utf-8",
    "json": "application/json",
    "pdf": "application/pdf",
    "docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "bibtex": "application/x-bibtex; charset=utf-8",
    "csl": "application/vnd.citationstyles.csl+json",
}
NEEDS = {"pdf": "weasyprint", "docx": "docx"}
"""Formats that need an optional library, and the module that must be importable."""


class ReportNotReady(UserError):
    """The run has no report yet (it is still running, or stopped before the end)."""


@dataclass(frozen=True)
class ReportFile:
    content: bytes
    media_type: str
    filename: str


def formats() -> list[str]:
    """The formats this installation can serve."""
    return [
        name
        for name in export.FORMATS
        if name in MEDIA_TYPES and (name not in NEEDS or importlib.util.find_spec(NEEDS[name]) is not None)
    ]


def report(run_id: str, fmt: str) -> ReportFile:
    if fmt not in formats():
        raise UserError(f"unknown report format {fmt!r}: choose one of {', '.join(formats())}")
    with Runs.open() as runs:
        record = runs.get(run_id)
        if record.recorded_status != "finished" or not record.report_path:
            raise ReportNotReady(f"run {record.id} has no report yet (it is {record.recorded_status})")
        name = f"{record.id}{export.FORMATS[fmt]}"
        if fmt == "md":
            content = Path(record.report_path).read_bytes()
        else:
            content = export.render(runs.report_document(record.id), fmt)
    return ReportFile(content, MEDIA_TYPES[fmt], name)
