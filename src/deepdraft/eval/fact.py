"""FACT-local: does each cited statement hold up against the passage it cites, *as stored*?

DeepResearch Bench's FACT extracts (statement, URL) pairs from a report, scrapes every URL and has
a judge label each statement supported / unsupported / unknown against the page. Offline, the
faithful equivalent is to judge against the text the writer actually saw:

- a deepdraft run: every sentence carrying ``\\cite{textidN}`` is paired with passage N from the
  run's evidence registry (its final checkpoint) — no LLM call is needed to extract pairs, since
  the citations are structured;
- any Markdown report with numbered citations (``[3]``, ``[3, p. 4]``) plus a sources file that
  maps each number to its stored text (JSON ``{"3": "text"}`` or JSONL ``{"number", "text"}``).

Statements are grouped by cited passage (upstream groups by URL) and exact duplicates within a
group are judged once (upstream asks a judge for "same meaning"; exact text is cheaper and
stricter). One judge call labels all statements of a passage. A statement whose citation has no
stored text is "unknown", as a page that could not be fetched is upstream. Nothing is fetched:
this version has no ``--fetch``.

Statistics, as upstream defines them over reports with at least one citation:
citation accuracy = Σ supported / Σ (supported + unsupported) (micro-averaged);
effective citations = mean number of supported statements per report;
total citations = mean number of supported + unsupported statements per report.
Statements of a FAILED judgment are counted apart and left out of all three.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from statistics import fmean
from typing import Any

from deepdraft.core.citations import cited_keys
from deepdraft.core.sentences import sentence_spans
from deepdraft.core.state import RunState
from deepdraft.errors import UserError
from deepdraft.eval.data import read_jsonl
from deepdraft.eval.judge import Judge, JudgmentError, read_choice, require_dict

__all__ = [
    "CitedStatement",
    "FactReport",
    "FactSummary",
    "judge_statements",
    "pairs_from_markdown",
    "pairs_from_run_state",
    "read_sources",
    "summarize",
]

LABELS = ("supported", "unsupported", "unknown")

_CITE = re.compile(r"\\cite\{[^}]*\}")
_NUMBERED = re.compile(r"\[(\d+)(?:,\s*pp?\.\s*[\d,\s–-]+)?\]")


@dataclass(frozen=True)
class CitedStatement:
    statement: str
    citation: str
    """The cited passage's key (``textid7``) or reference number (``3``)."""
    passage: str | None
    """The stored text of the cited passage; None when there is none (labelled unknown)."""


@dataclass
class FactReport:
    name: str
    labels: dict[str, int] = field(default_factory=lambda: dict.fromkeys(LABELS, 0))
    failed: int = 0
    """Statements whose judgment failed after the retries (not counted in any rate)."""
    failures: list[str] = field(default_factory=list)

    @property
    def checked(self) -> int:
        return self.labels["supported"] + self.labels["unsupported"]


@dataclass(frozen=True)
class FactSummary:
    reports: int
    """Reports with at least one checkable citation (the denominator of the means)."""
    citation_accuracy: float | None
    effective_citations: float | None
    total_citations: float | None
    failed_statements: int


def summarize(reports: Sequence[FactReport]) -> FactSummary:
    counted = [r for r in reports if r.checked]
    supported = sum(r.labels["supported"] for r in counted)
    checked = sum(r.checked for r in counted)
    return FactSummary(
        reports=len(counted),
        citation_accuracy=supported / checked if checked else None,
        effective_citations=fmean(r.labels["supported"] for r in counted) if counted else None,
        total_citations=fmean(r.checked for r in counted) if counted else None,
        failed_statements=sum(r.failed for r in reports),
    )


# ---- extracting (statement, citation) pairs -----------------------------------------------------------


def sentences(text: str) -> list[str]:
    """Sentences of a report's Markdown (`core.sentences`: a new block — a blank line, a list item, a
    heading — starts one, a wrapped line does not; citation marks after a full stop stay with it)."""
    return [text[start:end].strip() for start, end in sentence_spans(text, lines="blocks")]


def _plain(sentence: str) -> str:
    text = _NUMBERED.sub("", _CITE.sub("", sentence))
    text = re.sub(r"^[#>*\-+\s]+", "", text)
    return re.sub(r"\s+([.,;:!?])", r"\1", " ".join(text.split())).strip()


def pairs_from_run_state(state: RunState) -> list[CitedStatement]:
    """(statement, passage) pairs of a deepdraft run: every cited key of every written sentence."""
    if state.outline is None:
        return []
    pairs = []
    for located in state.outline.walk():
        for sentence in sentences(located.node.content or ""):
            keys = dict.fromkeys(key for group in cited_keys(sentence) for key in group)
            statement = _plain(sentence)
            if not statement:
                continue
            for key in keys:
                passage = state.registry[key].text if key in state.registry else None
                pairs.append(CitedStatement(statement, key, passage))
    return pairs


def pairs_from_markdown(markdown: str, sources: Mapping[str, str]) -> list[CitedStatement]:
    """Pairs of a Markdown report with numbered citations; the References section is skipped."""
    body = re.split(
        r"^#{1,6}\s*(?:References|Sources|Bibliography)\s*$", markdown, flags=re.MULTILINE | re.IGNORECASE
    )[0]
    pairs: list[CitedStatement] = []
    for sentence in sentences(body):
        if _HEADING_LINE.match(sentence):
            continue
        numbers = dict.fromkeys(m.group(1) for m in _NUMBERED.finditer(sentence))
        statement = _plain(sentence)
        if statement:
            pairs.extend(CitedStatement(statement, n, sources.get(n)) for n in numbers)
    return pairs


_HEADING_LINE = re.compile(r"^#{1,6}\s")


def read_sources(path: Path) -> dict[str, str]:
    """Citation number → stored passage text, from JSON ``{"3": "…"}`` or JSONL ``{"number", "text"}``."""
    if not path.is_file():
        raise UserError(f"sources file not found: {path}")
    if path.suffix == ".jsonl":
        sources = {}
        for number, row in enumerate(read_jsonl(path), 1):
            key = row.get("number", row.get("id"))
            text = row.get("text", row.get("content"))
            if key is None or not isinstance(text, str):
                raise UserError(f"{path}:{number}: each line needs `number` and `text`")
            sources[str(key)] = text
        return sources
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise UserError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise UserError(f'{path}: expected an object of citation number → text, e.g. {{"1": "…"}}')
    return {str(k): v for k, v in data.items()}


# ---- judging -----------------------------------------------------------------------------------------

_SYSTEM = "You check whether statements in a report are supported by the source passage they cite."


def _prompt(passage: str, statements: Sequence[str]) -> str:
    numbered = "\n".join(f"{i}. {s}" for i, s in enumerate(statements, 1))
    return (
        f"## Source passage\n{passage}\n\n## Statements that cite it\n{numbered}\n\n"
        "## What to do\nFor each statement decide, from the passage alone:\n"
        "- supported: the passage states the facts of the statement, fully or in part (rounding is fine);\n"
        "- unsupported: the passage does not state them, or contradicts them;\n"
        "- unknown: the passage has no usable content (empty, an error page, navigation only).\n"
        'Answer with JSON only: {"labels": [{"statement": 1, "label": "supported"}, ...]} '
        "with one entry per statement.\n"
    )


def _reader(count: int) -> Any:
    def read(value: Any) -> list[str]:
        entries = require_dict(value).get("labels")
        if not isinstance(entries, list):
            raise JudgmentError("`labels` must be a list")
        labels: dict[int, str] = {}
        for entry in entries:
            item = require_dict(entry, "each label")
            number = item.get("statement")
            if isinstance(number, str) and number.strip().isdigit():
                number = int(number)
            if not isinstance(number, int) or not 1 <= number <= count:
                raise JudgmentError(f"`statement` must be a number from 1 to {count}")
            labels[number] = read_choice(item.get("label"), f"statement {number}'s label", LABELS)
        missing = [n for n in range(1, count + 1) if n not in labels]
        if missing:
            raise JudgmentError(f"no label for statement(s) {', '.join(map(str, missing))}")
        return [labels[n] for n in range(1, count + 1)]

    return read


def judge_statements(judge: Judge, reports: Mapping[str, Sequence[CitedStatement]]) -> list[FactReport]:
    """Label every report's statements, one judge call per (report, cited passage)."""
    groups: list[tuple[str, str, str, list[str]]] = []  # report, citation, passage, statements
    results = {name: FactReport(name) for name in reports}
    for name, pairs in reports.items():
        by_citation: dict[tuple[str, str], list[str]] = {}
        for pair in pairs:
            if pair.passage is None or not pair.passage.strip():
                results[name].labels["unknown"] += 1
                continue
            statements = by_citation.setdefault((pair.citation, pair.passage), [])
            if pair.statement not in statements:
                statements.append(pair.statement)
        groups += [(name, cite, passage, s) for (cite, passage), s in by_citation.items()]

    def work(group: tuple[str, str, str, list[str]]) -> tuple[list[str] | None, str]:
        name, citation, passage, statements = group
        judged = judge.ask(
            _prompt(passage, statements),
            _reader(len(statements)),
            tag=f"fact/{name}/{citation}",
            system=_SYSTEM,
        )
        return judged.value, judged.failure or ""

    for (name, citation, _, statements), (labels, failure) in zip(
        groups, judge.map(groups, work, "FACT"), strict=True
    ):
        report = results[name]
        if labels is None:
            report.failed += len(statements)
            report.failures.append(f"{citation}: {failure}")
            continue
        for label in labels:
            report.labels[label] += 1
    return list(results.values())
