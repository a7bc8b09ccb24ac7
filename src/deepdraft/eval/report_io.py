"""Reading the reports an evaluation scores: a file, a folder, a JSONL of outputs, or a run id.

Accepted forms, tried in this order:

- a ``.jsonl`` file of outputs, one object a line, as DeepResearch Bench ships them:
  ``{"id": …, "prompt": …, "article": …}`` (``question``/``query`` and ``report``/``answer``/
  ``markdown`` are accepted aliases);
- a folder: every ``*.md`` file is one report, and DRGym's ``<id>.q`` + ``<id>.a`` pairs are read as
  question + report;
- any other file: one Markdown report (its question comes from the command line);
- a deepdraft run id (or a unique prefix): the run's report and question from the journal.

Reports are matched to benchmark items by their question text (whitespace-normalised), the way
DRB joins outputs to tasks, or by id when the item has one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from deepdraft.errors import RunNotFound, UserError
from deepdraft.eval.data import read_jsonl

__all__ = ["ReportText", "load_reports", "match_key"]

_QUESTION_KEYS = ("prompt", "question", "query")
_TEXT_KEYS = ("article", "report", "answer", "markdown", "candidate_answer")


@dataclass(frozen=True)
class ReportText:
    text: str
    question: str | None = None
    id: str | None = None
    run_id: str | None = None


def match_key(question: str) -> str:
    """How questions are compared: case and spacing do not matter."""
    return " ".join(question.split()).casefold()


def load_reports(spec: str) -> list[ReportText]:
    """The reports named by `spec` (see the module docstring); never empty."""
    path = Path(spec).expanduser()
    if path.is_file():
        reports = _from_jsonl(path) if path.suffix == ".jsonl" else [_from_text(path)]
    elif path.is_dir():
        reports = _from_folder(path)
    else:
        reports = [_from_run(spec)]
    if not reports:
        raise UserError(f"{spec}: no reports found (see docs/eval.md for the accepted forms)")
    return reports


def _from_text(path: Path, question: str | None = None, id: str | None = None) -> ReportText:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read the report {path}: {exc}") from exc
    if not text.strip():
        raise UserError(f"the report {path} is empty")
    return ReportText(text, question, id or path.stem)


def _from_jsonl(path: Path) -> list[ReportText]:
    reports = []
    for number, row in enumerate(read_jsonl(path), 1):
        question = next((row[k] for k in _QUESTION_KEYS if isinstance(row.get(k), str)), None)
        text = next((row[k] for k in _TEXT_KEYS if isinstance(row.get(k), str)), None)
        if text is None:
            keys = "/".join(_TEXT_KEYS)
            raise UserError(f"{path}:{number}: no report text (expected a field {keys})")
        identifier = row.get("id")
        reports.append(ReportText(text, question, None if identifier is None else str(identifier)))
    return reports


def _from_folder(folder: Path) -> list[ReportText]:
    reports = [_from_text(p) for p in sorted(folder.glob("*.md"))]
    for answer in sorted(folder.glob("*.a")):
        question_file = answer.with_suffix(".q")
        question = question_file.read_text(encoding="utf-8").strip() if question_file.is_file() else None
        reports.append(_from_text(answer, question, answer.stem))
    return reports


def _from_run(spec: str) -> ReportText:
    from deepdraft.run.runs import get_run

    try:
        record = get_run(spec)
    except RunNotFound:
        raise UserError(f"{spec}: no such file, folder or run id") from None
    if not record.report_path or not Path(record.report_path).is_file():
        raise UserError(
            f"run {record.id} has no report yet ({record.status}); finish it with deepdraft resume"
        )
    report = _from_text(Path(record.report_path), record.question, record.id)
    return ReportText(report.text, record.question, record.id, run_id=record.id)
