"""Training queries and their weighted checklists; `make-queries` builds new ones with an LLM.

A query set is a JSON Lines file in the DeepResearch Bench criteria format, one query a line:

    {"id": 7, "prompt": "...", "dimension_weight": {"comprehensiveness": 0.3, ...},
     "criterions": {"comprehensiveness": [{"criterion": "...", "explanation": "...", "weight": 0.2}, ...],
                    "insight": [...], "instruction_following": [...], "readability": [...]}}

so the benchmark's own `criteria.jsonl` is a valid query set. The checklist is what the report-level
scorer (pruning, pipeline RL) weighs a report against. A line with only `prompt` (and `id`) is a query
without a checklist: collection accepts it, scoring does not (`make-queries --checklists` adds one).

`make-queries` follows spec §5.1 in our own words: "reverse construction" asks an LLM which request
a user would have made to get a given survey, without reusing the survey's title; checklist
generation asks for weighted criteria in the four DRB dimensions. Both go through the eval `Judge`
(cached, JSON-schema constrained where the server can, re-asked with the reason when unusable), and
the answers are validated and normalised (weights re-scaled to sum to 1) rather than trusted, by the
same checklist parser that reads the benchmark's file (`eval.data.parse_checklist`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deepdraft.core.language import is_chinese
from deepdraft.errors import UserError
from deepdraft.eval.data import DIMENSIONS, Checklist, ChecklistError, parse_checklist, read_jsonl
from deepdraft.eval.judge import Judge, JudgmentError, require_dict

__all__ = [
    "Query",
    "QuerySetError",
    "checklist_schema",
    "generate_checklist",
    "load_queries",
    "reverse_construct",
    "write_queries",
]


class QuerySetError(UserError):
    """A query-set file is missing or not in the expected format."""


@dataclass(frozen=True)
class Query:
    id: str
    prompt: str
    checklist: Checklist | None = None
    """None for a query given as a prompt only (collection takes it; scoring needs a checklist)."""

    @property
    def language(self) -> str:
        return "zh" if is_chinese(self.prompt) else "en"

    def as_row(self) -> dict[str, Any]:
        """The query in the DRB criteria format (what `load_queries` reads)."""
        row: dict[str, Any] = {"id": self.id, "prompt": self.prompt}
        if self.checklist is not None:
            row.update(self.checklist.as_row())
        return row


def query_id_for(prompt: str) -> str:
    """A stable id for a query that came without one (the first 12 hex digits of its SHA-1)."""
    return hashlib.sha1(prompt.strip().encode("utf-8")).hexdigest()[:12]


# ---- reading and writing -------------------------------------------------------------------------


def load_queries(path: Path, *, require_checklist: bool = False) -> list[Query]:
    """Every query of a JSONL query set (DRB criteria format, or prompts only) or a .txt file.

    A .txt file holds one query a line (no checklists). Ids must be unique; a line without an id
    gets one derived from its prompt, so reruns name it the same.
    """
    if not path.is_file():
        raise QuerySetError(f"query set not found: {path}")
    if path.suffix == ".txt":
        lines = path.read_text(encoding="utf-8").splitlines()
        rows: list[dict[str, Any]] = [{"prompt": line.strip()} for line in lines if line.strip()]
    else:
        rows = read_jsonl(path, error=QuerySetError)
    queries = [_query_from_row(row, f"{path}:{number}") for number, row in enumerate(rows, 1)]
    if not queries:
        raise QuerySetError(f"{path} holds no queries")
    seen: set[str] = set()
    for query in queries:
        if query.id in seen:
            raise QuerySetError(f"{path}: query id {query.id} appears twice; ids must be unique")
        seen.add(query.id)
        if require_checklist and query.checklist is None:
            raise QuerySetError(
                f"{path}: query {query.id} has no checklist; add one with "
                "`deepdraft train make-queries --checklists` first"
            )
    return queries


def _query_from_row(row: dict[str, Any], where: str) -> Query:
    prompt = row.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise QuerySetError(f"{where}: `prompt` must be a non-empty string")
    query_id = str(row["id"]) if row.get("id") is not None else query_id_for(prompt)
    if "criterions" not in row:
        return Query(query_id, prompt.strip())
    try:
        checklist = parse_checklist(row, normalise=True)
    except ChecklistError as exc:
        raise QuerySetError(f"{where}: {exc}") from exc
    return Query(query_id, prompt.strip(), checklist)


def write_queries(path: Path, queries: Iterable[Query]) -> None:
    """Write a query set (atomically: a crash leaves the old file or the new one, never half)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    with partial.open("w", encoding="utf-8") as handle:
        for query in queries:
            handle.write(json.dumps(query.as_row(), ensure_ascii=False) + "\n")
    partial.replace(path)


# ---- making new queries with an LLM ----------------------------------------------------------------

_REVERSE_PROMPT = """\
A researcher asked an assistant for a long, well-sourced research report, and the report they got \
back resembled a survey paper titled:

"{title}"

Imagine the request that researcher typed. Write {count} distinct request(s) a real person could \
have sent: each names the topic with its own words (domain keywords, synonyms, the problem it \
solves) and never copies the title; each says what the report should cover or compare and who it \
is for. Think it through first in "thinking", then give the requests.

Answer with JSON only: {{"thinking": "...", "instructions": ["...", ...]}}"""

_REVERSE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "thinking": {"type": "string"},
        "instructions": {"type": "array", "items": {"type": "string"}, "minItems": 1},
    },
    "required": ["thinking", "instructions"],
}


def reverse_construct(judge: Judge, titles: Sequence[str], per_title: int = 1) -> list[Query]:
    """Requests a user might have made to get each survey (spec §5.1 "reverse construction").

    A title whose answer stays unusable after the judge's retries is skipped, not fatal; the
    caller sees fewer queries than titles.
    """

    def read(value: Any, title: str) -> list[str]:
        data = require_dict(value)
        found = data.get("instructions")
        if not isinstance(found, list):
            raise JudgmentError("`instructions` must be a list of strings")
        requests = [s.strip() for s in found if isinstance(s, str) and len(s.strip()) >= 15]
        # The whole point is a request phrased independently of the title; one that reuses it
        # verbatim would teach the agent to expect survey titles as questions.
        requests = [s for s in requests if title.lower().strip() not in s.lower()]
        if not requests:
            raise JudgmentError("give at least one request of a full sentence that does not copy the title")
        return requests[:per_title]

    def one(title: str) -> list[str]:
        judged = judge.ask(
            _REVERSE_PROMPT.format(title=title, count=per_title),
            lambda value: read(value, title),
            tag=f"train/reverse/{query_id_for(title)}",
            schema=_REVERSE_SCHEMA,
        )
        return judged.value or []

    results = judge.map([t.strip() for t in titles if t.strip()], one, "reverse construction")
    return [Query(query_id_for(p), p) for prompts in results for p in prompts]


_CHECKLIST_PROMPT = """\
You design the grading checklist for a research report written in answer to this request:

<request>
{prompt}
</request>

Grade along four dimensions: comprehensiveness (coverage of what the request needs), insight \
(depth, analysis, original conclusions), instruction_following (does it do exactly what was asked, \
for whom, in which form) and readability (structure, clarity, language). Weigh the dimensions for \
THIS request (weights sum to 1). For each dimension write 3 to 8 criteria that are specific to the \
request — not generic advice — each with a one-sentence explanation of what a good report does and \
a weight (a dimension's weights sum to 1). Write the criteria in the language of the request.

Answer with JSON only:
{{"dimension_weight": {{"comprehensiveness": 0.3, "insight": 0.3, "instruction_following": 0.25, \
"readability": 0.15}}, "criterions": {{"comprehensiveness": [{{"criterion": "...", "explanation": \
"...", "weight": 0.4}}, ...], "insight": [...], "instruction_following": [...], "readability": [...]}}}}"""


def checklist_schema() -> dict[str, Any]:
    """JSON schema of a checklist answer (for servers that constrain generation)."""
    criterion = {
        "type": "object",
        "properties": {
            "criterion": {"type": "string"},
            "explanation": {"type": "string"},
            "weight": {"type": "number"},
        },
        "required": ["criterion", "explanation", "weight"],
    }
    per_dimension = {"type": "array", "items": criterion, "minItems": 1}
    return {
        "type": "object",
        "properties": {
            "dimension_weight": {
                "type": "object",
                "properties": {d: {"type": "number"} for d in DIMENSIONS},
                "required": list(DIMENSIONS),
            },
            "criterions": {
                "type": "object",
                "properties": {d: per_dimension for d in DIMENSIONS},
                "required": list(DIMENSIONS),
            },
        },
        "required": ["dimension_weight", "criterions"],
    }


def generate_checklist(judge: Judge, query: Query) -> Query | str:
    """The query with an LLM-written checklist, or the reason none could be had."""

    def read(value: Any) -> Checklist:
        try:
            return parse_checklist(require_dict(value), normalise=True)
        except ChecklistError as exc:  # the judge re-asks with the reason
            raise JudgmentError(str(exc)) from exc

    judged = judge.ask(
        _CHECKLIST_PROMPT.format(prompt=query.prompt),
        read,
        tag=f"train/checklist/{query.id}",
        schema=checklist_schema(),
        max_tokens=4096,
    )
    if judged.value is None:
        return judged.failure or "failed"
    return Query(query.id, query.prompt, judged.value)
