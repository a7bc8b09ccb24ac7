"""Pairwise comparison, DeepConsult's protocol: a candidate report against a baseline, per query.

For every query the judge compares the two reports on four dimensions — instruction following,
comprehensiveness (breadth), completeness (depth), writing quality — naming the better report and
a gap from 0 (similar) to 5 (far apart). Each of `repeats` trials asks twice, once with the
baseline as report A and once with the reports swapped, so position bias cancels: 6 judgments a
query by default. Then, per query and dimension, as upstream computes it:

    a vote is "candidate preferred" (swapped answers are turned back);
    grade = win if the candidate won more votes than it lost, lose if fewer, tie if equal;
    score = 5 + mean over judgments of (+gap when the candidate was preferred, else -gap)  ∈ [0, 10]

Per dimension the win/tie/lose rates over queries and the mean score are reported, plus the net
win rate wins / (wins + losses); "overall" is the mean of the four dimensions. A baseline compared
with itself scores 5.00 with 100 % ties only if the judge is unbiased — which is what the swap is for.

Failed judgments (unreadable after the retries) are left out of their query's votes and counted;
a query with no usable judgment at all is reported as failed, never graded. Markdown links are
removed from both reports first, as upstream does.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from statistics import fmean
from typing import Any

from deepdraft.errors import UserError
from deepdraft.eval.judge import Judge, read_choice, read_number, require_dict

__all__ = ["DIMENSIONS", "Comparison", "PairwiseResult", "QueryGrade", "compare", "grade", "read_pairs_csv"]

DIMENSIONS = ("instruction_following", "comprehensiveness", "completeness", "writing_quality")
_LINK = re.compile(r"\[([^\]]*)\]\((?:[^()]|\([^)]*\))*\)")


@dataclass(frozen=True)
class Comparison:
    question: str
    baseline: str
    candidate: str


@dataclass(frozen=True)
class Vote:
    candidate_preferred: bool
    gap: float


@dataclass(frozen=True)
class QueryGrade:
    grade: str  # "win", "tie" or "lose", from the candidate's side
    score: float


def grade(votes: Sequence[Vote]) -> QueryGrade:
    """One query's grade and score on one dimension from its votes (see the module docstring)."""
    wins = sum(v.candidate_preferred for v in votes)
    losses = len(votes) - wins
    outcome = "win" if wins > losses else "lose" if wins < losses else "tie"
    return QueryGrade(outcome, 5 + fmean(v.gap if v.candidate_preferred else -v.gap for v in votes))


@dataclass
class PairwiseResult:
    grades: dict[str, dict[str, QueryGrade]] = field(default_factory=dict)
    """question → dimension → grade."""
    failed_judgments: int = 0
    failed_queries: dict[str, str] = field(default_factory=dict)

    def summary(self) -> dict[str, dict[str, float]]:
        """dimension (and "overall") → win/tie/lose rates in %, mean score, net win rate in %."""
        table: dict[str, dict[str, float]] = {}
        for dimension in DIMENSIONS:
            grades = [by_dim[dimension] for by_dim in self.grades.values()]
            if not grades:
                continue
            counts = {g: sum(x.grade == g for x in grades) for g in ("win", "tie", "lose")}
            decided = counts["win"] + counts["lose"]
            table[dimension] = {
                "win": 100 * counts["win"] / len(grades),
                "tie": 100 * counts["tie"] / len(grades),
                "lose": 100 * counts["lose"] / len(grades),
                "score": fmean(x.score for x in grades),
                "net_win_rate": 100 * counts["win"] / decided if decided else 50.0,
            }
        if table:
            table["overall"] = {
                key: fmean(row[key] for row in table.values()) for key in next(iter(table.values()))
            }
        return table


_SYSTEM = (
    "You are an expert evaluator of research reports. You compare two reports written for the same "
    "request, without favouring either position or the longer report: length is not quality."
)


def _prompt(question: str, report_a: str, report_b: str) -> str:
    example = (
        f'"{DIMENSIONS[0]}": {{"preferred": "a", "explanation": "<what is better and what the other '
        'lacks>", "gap_score": 2}'
    )
    return (
        f"## Request\n{question}\n\n## Report A\n<report_a>\n{report_a}\n</report_a>\n\n"
        f"## Report B\n<report_b>\n{report_b}\n</report_b>\n\n"
        "## What to do\nCompare the reports on each dimension:\n"
        "- instruction_following: does it do what the request asks, within its scope and constraints?\n"
        "- comprehensiveness: breadth — does it cover the relevant aspects?\n"
        "- completeness: depth — is each aspect treated thoroughly, with specifics?\n"
        "- writing_quality: clear, well organised, precise prose.\n"
        'For each, name the preferred report ("a" or "b"), explain briefly with specifics, and give '
        "the gap from 0 (about equal) to 5 (very different).\n"
        f"Answer with one JSON object keyed by the four dimensions, e.g. {{{example}, ...}}\n"
    )


def _read(value: Any) -> dict[str, tuple[str, float]]:
    data = require_dict(value)
    judged = {}
    for dimension in DIMENSIONS:
        item = require_dict(data.get(dimension), f"`{dimension}`")
        judged[dimension] = (
            read_choice(item.get("preferred"), f"{dimension} preferred", ("a", "b")),
            read_number(item.get("gap_score"), f"{dimension} gap_score", 0, 5),
        )
    return judged


def compare(judge: Judge, comparisons: Sequence[Comparison], repeats: int = 3) -> PairwiseResult:
    """Judge every comparison `repeats` times in both orders and grade it."""
    if repeats < 1:
        raise UserError("--repeats must be at least 1")
    jobs = [(c, trial, flipped) for c in comparisons for trial in range(repeats) for flipped in (False, True)]

    def work(job: tuple[Comparison, int, bool]) -> dict[str, tuple[str, float]] | None:
        comparison, trial, flipped = job
        baseline, candidate = _LINK.sub(r"\1", comparison.baseline), _LINK.sub(r"\1", comparison.candidate)
        a, b = (candidate, baseline) if flipped else (baseline, candidate)
        order = "flipped" if flipped else "original"
        return judge.ask(
            _prompt(comparison.question, a, b), _read, tag=f"pairwise/{trial}/{order}", system=_SYSTEM
        ).value

    outcomes = judge.map(jobs, work, "pairwise")
    result = PairwiseResult()
    votes: dict[str, dict[str, list[Vote]]] = {}
    for (comparison, _, flipped), judged in zip(jobs, outcomes, strict=True):
        if judged is None:
            result.failed_judgments += 1
            continue
        per_dim = votes.setdefault(comparison.question, {d: [] for d in DIMENSIONS})
        for dimension, (preferred, gap) in judged.items():
            # Unflipped, the candidate is report B; flipped, it is report A.
            per_dim[dimension].append(Vote((preferred == "a") == flipped, gap))
    for comparison in comparisons:
        if comparison.question not in votes:
            result.failed_queries[comparison.question] = "every judgment failed"
            continue
        result.grades[comparison.question] = {d: grade(v) for d, v in votes[comparison.question].items()}
    return result


def read_pairs_csv(path: Path) -> list[Comparison]:
    """DeepConsult's evaluation CSV: columns question, baseline_answer, candidate_answer."""
    if not path.is_file():
        raise UserError(f"file not found: {path}")
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        needed = {"question", "baseline_answer", "candidate_answer"}
        if reader.fieldnames is None or not needed <= set(reader.fieldnames):
            raise UserError(f"{path}: expected the columns question, baseline_answer, candidate_answer")
        rows = [Comparison(r["question"], r["baseline_answer"], r["candidate_answer"]) for r in reader]
    if not rows:
        raise UserError(f"{path}: no rows")
    return rows
