"""DeepResearch Gym: key-point recall and contradiction (KPR/KPC), and six report-quality criteria.

KPR/KPC. Each query ships key points that a good report should contain. The judge reads the report
and labels every key point Supported, Omitted or Contradicted (one call per key point and
report). Per query, KPR = % Supported and KPC = % Contradicted of the labelled key points; the
reported figures are means over queries. Key points whose judgment FAILED are left out of their
query's denominator and counted. Upstream counts queries without key points in the mean's
denominator (scoring them 0); here they are skipped and listed, which only matters for the 24 of
1,000 queries that have none.

Quality. One call per criterion — clarity, depth, balance, breadth, support, insightfulness — each
an integer from 0 to 10 from a deliberately harsh judge. A criterion's figure is the mean rating
×10 (0–100); a report's overall quality is the sum of its six ratings / 60 × 100. Support asks for
claims tied to sources: a report with no citations at all cannot score well, as upstream intends.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from statistics import fmean
from typing import Any

from deepdraft.eval.data import DataError, KeyPoint
from deepdraft.eval.judge import Judge, JudgmentError, read_choice, read_number, require_dict

__all__ = [
    "KPR_LABELS",
    "QUALITY_CRITERIA",
    "KeyPointResult",
    "QualityResult",
    "judge_key_points",
    "judge_quality",
    "rates_from_labels",
    "read_kpr_results",
]

KPR_LABELS = ("Supported", "Omitted", "Contradicted")

QUALITY_CRITERIA: dict[str, str] = {
    "clarity": "Is the report clearly structured, with distinct points that do not overlap or repeat?",
    "depth": "Does it analyse causes, mechanisms and consequences beyond surface facts? A report that "
    "only lists facts without explaining them scores 5 at most.",
    "balance": "Does it present several perspectives fairly where the question admits them?",
    "breadth": "Does it cover the distinct relevant subtopics and angles of the question?",
    "support": "Are its claims tied to identifiable sources through citations? With no citations at all "
    "it scores 0; above 8 only if nearly every substantive claim is cited.",
    "insightfulness": "Does it offer non-obvious synthesis and concrete, grounded conclusions or "
    "recommendations? Vague recommendations score 8 at most.",
}


# ---- KPR / KPC ----------------------------------------------------------------------------------------


def rates_from_labels(labels: Sequence[str]) -> dict[str, float]:
    """Per-query rates in % of the given labels: support (KPR), omitted, contradicted (KPC)."""
    if not labels:
        raise ValueError("no labels")
    return {
        "support_rate": 100 * labels.count("Supported") / len(labels),
        "omitted_rate": 100 * labels.count("Omitted") / len(labels),
        "contradicted_rate": 100 * labels.count("Contradicted") / len(labels),
    }


def read_kpr_results(path: Path) -> dict[str, list[str]]:
    """Query id → labels in key-point order, from upstream's evaluation_results_kpr_*.json."""
    import json

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return {
            qid: [entry["labels"][n][0] for n in sorted(entry["labels"], key=int)]
            for qid, entry in data.items()
        }
    except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
        raise DataError(f"{path}: not a KPR results file ({exc})") from exc


@dataclass
class KeyPointResult:
    rates: dict[str, dict[str, float]] = field(default_factory=dict)
    """Query id → its rates (see `rates_from_labels`)."""
    failed: dict[str, int] = field(default_factory=dict)
    """Query id → key points whose judgment failed."""
    skipped: list[str] = field(default_factory=list)
    """Queries without key points, or without any usable judgment."""

    def summary(self) -> dict[str, float]:
        if not self.rates:
            return {}
        return {
            "kpr": fmean(r["support_rate"] for r in self.rates.values()),
            "kpc": fmean(r["contradicted_rate"] for r in self.rates.values()),
        }


_KPR_SYSTEM = "You check whether a research report covers given key points from source documents."


def _kpr_prompt(query: str, point: KeyPoint, report: str) -> str:
    return (
        f"## Question\n{query}\n\n## Report\n<report>\n{report}\n</report>\n\n"
        f"## Key point\n{point.content}\n\n"
        "## What to do\nLabel the key point against the report:\n"
        "- Supported: the report states or clearly implies it;\n"
        "- Omitted: the report does not mention it;\n"
        "- Contradicted: the report says something incompatible with it.\n"
        'Answer with JSON only: {"label": "Supported", "justification": "<one sentence>"}\n'
    )


def _read_label(value: Any) -> str:
    return read_choice(require_dict(value).get("label"), "`label`", KPR_LABELS)


def judge_key_points(
    judge: Judge, items: Sequence[tuple[str, str, Sequence[KeyPoint], str]]
) -> KeyPointResult:
    """KPR/KPC for (query id, query, key points, report) items."""
    result = KeyPointResult()
    jobs = [(qid, query, point, report) for qid, query, points, report in items for point in points]
    result.skipped = [qid for qid, _, points, _ in items if not points]

    def work(job: tuple[str, str, KeyPoint, str]) -> str | None:
        qid, query, point, report = job
        return judge.ask(
            _kpr_prompt(query, point, report),
            _read_label,
            tag=f"gym-kpr/{qid}/{point.number}",
            system=_KPR_SYSTEM,
        ).value

    labels: dict[str, list[str]] = {}
    for (qid, _, _, _), label in zip(jobs, judge.map(jobs, work, "key points"), strict=True):
        if label is None:
            result.failed[qid] = result.failed.get(qid, 0) + 1
        else:
            labels.setdefault(qid, []).append(label)
    for qid, _, points, _ in items:
        if qid in labels:
            result.rates[qid] = rates_from_labels(labels[qid])
        elif points:
            result.skipped.append(qid)
    return result


# ---- quality -----------------------------------------------------------------------------------------


@dataclass
class QualityResult:
    ratings: dict[str, dict[str, float]] = field(default_factory=dict)
    """Report name → criterion → rating 0–10 (criteria whose judgment failed are absent)."""
    failed: dict[str, list[str]] = field(default_factory=dict)
    """Report name → criteria whose judgment failed."""

    def summary(self) -> dict[str, float]:
        """Criterion → mean rating ×10, and "overall": the mean per-report Σ ratings / 60 × 100
        over reports rated on all six criteria."""
        table: dict[str, float] = {}
        for criterion in QUALITY_CRITERIA:
            values = [r[criterion] for r in self.ratings.values() if criterion in r]
            if values:
                table[criterion] = 10 * fmean(values)
        complete = [r for r in self.ratings.values() if len(r) == len(QUALITY_CRITERIA)]
        if complete:
            table["overall"] = fmean(sum(r.values()) / 60 * 100 for r in complete)
        return table


_QUALITY_SYSTEM = (
    "You are a strict and harsh expert evaluator of research reports. Do not be generous: reserve 8 "
    "and above for outstanding work, and give the minimum to a report that tries to game the criterion."
)


def _quality_prompt(query: str, report: str, criterion: str) -> str:
    return (
        f"## Question\n{query}\n\n## Report\n<report>\n{report}\n</report>\n\n"
        f"## Criterion: {criterion}\n{QUALITY_CRITERIA[criterion]}\n\n"
        "Rate the report on this criterion only, with an integer from 0 to 10.\n"
        'Answer with JSON only: {"rating": 6, "justification": "<one or two sentences>"}\n'
    )


def _read_rating(value: Any) -> float:
    rating = read_number(require_dict(value).get("rating"), "`rating`", 0, 10)
    if rating != int(rating):
        raise JudgmentError("`rating` must be a whole number from 0 to 10")
    return rating


def judge_quality(judge: Judge, reports: Mapping[str, tuple[str, str]]) -> QualityResult:
    """The six criteria for each report: name → (question, report text)."""
    jobs = [(name, criterion) for name in reports for criterion in QUALITY_CRITERIA]

    def work(job: tuple[str, str]) -> float | None:
        name, criterion = job
        query, report = reports[name]
        return judge.ask(
            _quality_prompt(query, report, criterion),
            _read_rating,
            tag=f"gym-quality/{name}/{criterion}",
            system=_QUALITY_SYSTEM,
            max_tokens=512,
        ).value

    result = QualityResult()
    for (name, criterion), rating in zip(jobs, judge.map(jobs, work, "quality"), strict=True):
        if rating is None:
            result.failed.setdefault(name, []).append(criterion)
        else:
            result.ratings.setdefault(name, {})[criterion] = rating
    return result
