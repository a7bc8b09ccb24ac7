"""Loaders for the benchmark files, as shipped upstream (see docs/eval.md for the sources).

The data folder is `--data-dir`, else `DEEPDRAFT_BENCHMARKS`, else `../shared/benchmarks` relative to
the working directory when it exists. Its layout is the one of the project's benchmark copy:

    deepresearch_bench/{query,criteria}.jsonl   DeepResearch Bench tasks and RACE criteria
    deepconsult/queries.csv                     DeepConsult queries
    deepresearch_gym/researchy_queries_sample_doc_click.jsonl, key_points/aggregated/<id>_aggregated.json
    storm_freshwiki/{json,txt}/<Topic>.{json,txt}

Loaders read only what a metric needs and fail with one line naming the file that is missing or
broken. They never download anything.
"""

from __future__ import annotations

import csv
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deepdraft.errors import UserError

__all__ = [
    "Checklist",
    "ChecklistError",
    "Criterion",
    "DataError",
    "DrbTask",
    "FreshWikiArticle",
    "GymQuery",
    "KeyPoint",
    "benchmarks_dir",
    "load_deepconsult",
    "load_drb",
    "load_freshwiki",
    "load_gym",
    "parse_checklist",
    "read_jsonl",
]

DIMENSIONS = ("comprehensiveness", "insight", "instruction_following", "readability")


class DataError(UserError):
    """A benchmark file is missing or not in the shipped format."""


def benchmarks_dir(option: Path | None = None) -> Path:
    """The benchmark data folder: the option, else DEEPDRAFT_BENCHMARKS, else ../shared/benchmarks."""
    chosen = option or (
        Path(os.environ["DEEPDRAFT_BENCHMARKS"]) if os.environ.get("DEEPDRAFT_BENCHMARKS") else None
    )
    if chosen is None:
        fallback = Path.cwd().parent / "shared" / "benchmarks"
        if fallback.is_dir():
            return fallback
        raise DataError(
            "no benchmark data: pass --data-dir DIR (a copy of the benchmark files, see docs/eval.md) "
            "or set DEEPDRAFT_BENCHMARKS"
        )
    chosen = chosen.expanduser()
    if not chosen.is_dir():
        raise DataError(f"benchmark data folder not found: {chosen}")
    return chosen


def read_jsonl(path: Path, *, error: type[UserError] = DataError) -> list[dict[str, Any]]:
    """Every object of a JSON Lines file; a bad line is an `error` naming the file and line."""
    if not path.is_file():
        raise error(f"file not found: {path}")
    rows = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as exc:
                raise error(f"{path}:{number}: not valid JSON ({exc})") from exc
            if not isinstance(row, dict):
                raise error(f"{path}:{number}: each line must be a JSON object")
            rows.append(row)
    return rows


def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise DataError(f"file not found: {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from exc


# ---- DeepResearch Bench ------------------------------------------------------------------------------


class ChecklistError(ValueError):
    """A checklist is not in the DRB criteria format; the message says what is wrong, in one line."""


@dataclass(frozen=True)
class Criterion:
    """One criterion of a checklist: what a report is judged on, within one of the four dimensions."""

    dimension: str
    text: str
    explanation: str
    weight: float


@dataclass(frozen=True)
class Checklist:
    """A weighted checklist in the DeepResearch Bench criteria format: a weight per dimension and
    weighted criteria in each. RACE scores a report against it; training's rewards do too."""

    dimension_weights: dict[str, float]
    criteria: tuple[Criterion, ...]

    def in_dimension(self, dimension: str) -> list[Criterion]:
        return [c for c in self.criteria if c.dimension == dimension]

    def as_row(self) -> dict[str, Any]:
        """The fields of a DRB criteria row (``dimension_weight``, ``criterions``)."""
        return {
            "dimension_weight": dict(self.dimension_weights),
            "criterions": {
                d: [
                    {"criterion": c.text, "explanation": c.explanation, "weight": c.weight}
                    for c in self.in_dimension(d)
                ]
                for d in DIMENSIONS
            },
        }


def parse_checklist(row: Mapping[str, Any], *, normalise: bool) -> Checklist:
    """The checklist of a DRB criteria row (``dimension_weight`` and ``criterions``).

    Every dimension needs a non-empty list of criteria, each with text and a weight; weights are
    non-negative numbers (numeric strings such as "0.3" are read) and must not all be 0 within a
    dimension, nor across dimensions. `normalise` re-scales them to sum to 1 per dimension and
    across dimensions, as in the benchmark's own file — for checklists written by an LLM or by
    hand; without it the weights are kept exactly as given (RACE weighs with the shipped values).
    `ChecklistError` names the first thing that is wrong.
    """
    weights = {
        d: _weight(
            _mapping(row.get("dimension_weight"), "`dimension_weight`").get(d), f"dimension_weight.{d}"
        )
        for d in DIMENSIONS
    }
    if sum(weights.values()) <= 0:
        raise ChecklistError("the dimension weights must not all be 0")
    listed = _mapping(row.get("criterions"), "`criterions`")
    criteria: list[Criterion] = []
    for dimension in DIMENSIONS:
        entries = listed.get(dimension)
        if not isinstance(entries, list) or not entries:
            raise ChecklistError(f"`criterions.{dimension}` must be a non-empty list")
        items = []
        for number, entry in enumerate(entries, 1):
            item = _mapping(entry, f"{dimension} criterion {number}")
            text = item.get("criterion")
            if not isinstance(text, str) or not text.strip():
                raise ChecklistError(f"{dimension} criterion {number} has no `criterion` text")
            weight = _weight(item.get("weight"), f"{dimension} criterion {number} weight")
            explanation = str(item.get("explanation", "") or "")
            items.append(Criterion(dimension, text.strip(), explanation.strip(), weight))
        total = sum(c.weight for c in items)
        if total <= 0:
            raise ChecklistError(f"the {dimension} criteria weights must not all be 0")
        if normalise:
            items = [Criterion(c.dimension, c.text, c.explanation, c.weight / total) for c in items]
        criteria += items
    if normalise:
        weight_total = sum(weights.values())
        weights = {d: w / weight_total for d, w in weights.items()}
    return Checklist(weights, tuple(criteria))


def _mapping(value: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ChecklistError(f"{what} must be a JSON object")
    return value


def _weight(value: Any, what: str) -> float:
    """A non-negative number; a numeric string ("0.3", "7/10" → 7) is read as its leading number."""
    if isinstance(value, str):
        match = re.match(r"\s*(-?\d+(?:\.\d+)?)", value)
        value = float(match.group(1)) if match else value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ChecklistError(f"{what} must be a number")
    if not 0 <= value <= 1e6:
        raise ChecklistError(f"{what} must lie between 0 and 1e+06 (got {value:g})")
    return float(value)


@dataclass(frozen=True)
class DrbTask:
    id: int
    prompt: str
    language: str
    topic: str
    checklist: Checklist


def load_drb(root: Path) -> list[DrbTask]:
    """DRB tasks joined with their RACE criteria by prompt text, as upstream joins them.

    The criteria are taken as shipped (no re-scaling); a malformed row is an error naming the task.
    """
    folder = root / "deepresearch_bench"
    queries = read_jsonl(folder / "query.jsonl")
    criteria = {row.get("prompt"): row for row in read_jsonl(folder / "criteria.jsonl")}
    tasks = []
    for row in queries:
        match = criteria.get(row.get("prompt"))
        if match is None:
            continue  # a task without criteria cannot be scored by RACE
        try:
            checklist = parse_checklist(match, normalise=False)
            task = DrbTask(
                int(row["id"]),
                str(row["prompt"]),
                str(row.get("language", "en")),
                str(row.get("topic", "")),
                checklist,
            )
        except (ChecklistError, KeyError, TypeError, ValueError) as exc:
            raise DataError(
                f"{folder / 'criteria.jsonl'}: task {row.get('id')} is malformed ({exc})"
            ) from exc
        tasks.append(task)
    if not tasks:
        raise DataError(f"{folder}: no task has criteria (query.jsonl and criteria.jsonl do not match)")
    return tasks


# ---- DeepConsult --------------------------------------------------------------------------------------


def load_deepconsult(root: Path) -> list[str]:
    path = root / "deepconsult" / "queries.csv"
    if not path.is_file():
        raise DataError(f"file not found: {path}")
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None or "query" not in reader.fieldnames:
            raise DataError(f"{path}: expected a `query` column")
        return [row["query"].strip() for row in reader if row["query"] and row["query"].strip()]


# ---- DeepResearch Gym ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class KeyPoint:
    number: int
    content: str


@dataclass(frozen=True)
class GymQuery:
    id: str
    query: str
    key_points: tuple[KeyPoint, ...]


def load_gym(root: Path, *, key_points_dir: Path | None = None) -> list[GymQuery]:
    """DRGym queries with their aggregated key points (a query without a key-point file has none)."""
    folder = root / "deepresearch_gym"
    points_dir = key_points_dir or folder / "key_points" / "aggregated"
    queries = []
    for row in read_jsonl(folder / "researchy_queries_sample_doc_click.jsonl"):
        qid = str(row.get("id", ""))
        path = points_dir / f"{qid}_aggregated.json"
        points = read_key_points(path) if path.is_file() else ()
        queries.append(GymQuery(qid, str(row.get("query", "")), points))
    return queries


def read_key_points(path: Path) -> tuple[KeyPoint, ...]:
    """`{"key_points": [{point_number, point_content}, ...]}` (aggregated or deduplicated files)."""
    data = _read_json(path)
    try:
        return tuple(KeyPoint(int(p["point_number"]), str(p["point_content"])) for p in data["key_points"])
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(f"{path}: not a key-point file ({exc})") from exc


# ---- FreshWiki ------------------------------------------------------------------------------------------

# Sections STORM leaves out of outline evaluation: they hold no content to plan.
_NON_CONTENT = {
    "references",
    "external links",
    "see also",
    "notes",
    "further reading",
    "bibliography",
    "gallery",
    "footnotes",
    "citations",
    "sources",
}
_MD_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$", re.MULTILINE)


@dataclass(frozen=True)
class FreshWikiArticle:
    topic: str
    text: str
    """The human article (the txt file): reference for ROUGE."""
    headings: tuple[str, ...]
    """The reference outline's headings, without reference-like sections."""


def topic_file_stem(topic: str) -> str:
    """FreshWiki's file name for a topic (spaces, slashes and colons become underscores)."""
    return re.sub(r"[ /:]", "_", topic)


def load_freshwiki(root: Path, topic: str) -> FreshWikiArticle:
    folder = root / "storm_freshwiki" / "txt"
    path = folder / f"{topic_file_stem(topic)}.txt"
    if not path.is_file():
        known = sorted(p.stem.replace("_", " ") for p in folder.glob("*.txt"))[:5] if folder.is_dir() else []
        hint = f" (e.g. {', '.join(known)})" if known else ""
        raise DataError(f"no FreshWiki article for topic {topic!r}: {path} not found{hint}")
    text = path.read_text(encoding="utf-8")
    return FreshWikiArticle(topic, text, tuple(content_headings(text)))


def content_headings(markdown: str) -> list[str]:
    """Markdown headings, minus reference-like sections; levels are dropped (STORM compares sets)."""
    headings = []
    for match in _MD_HEADING.finditer(markdown):
        title = match.group(2).strip()
        if title.lower() not in _NON_CONTENT:
            headings.append(title)
    return headings
