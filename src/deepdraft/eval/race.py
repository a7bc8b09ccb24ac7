"""RACE (DeepResearch Bench): a target report scored against a reference report, criterion by criterion.

Per task the benchmark ships weighted criteria in four dimensions (comprehensiveness, insight,
instruction following, readability) and a weight per dimension. The judge sees the task, both
reports and the criteria (weights hidden) and scores each report 0–10 on each criterion. Then,
for each report x and dimension d, exactly as upstream computes it:

    S_d(x) = Σ_c w_dc · s_dc(x) / Σ_c w_dc          (over the criteria the judge scored)
    S(x)   = Σ_d W_d · S_d(x)
    per dimension:  S_d(target) / (S_d(target) + S_d(reference))
    overall:        S(target) / (S(target) + S(reference))

The overall score is the ratio of the weighted *sums*, not the weighted mean of the per-dimension
ratios: for DRB task 1 the two differ (0.3779 published versus 0.3766). A judged criterion is
matched to the stored one by exact text, then case-insensitively, then by substring; one that
matches none is weighted with its dimension's mean weight, as upstream does. Reported figures are
means over the tasks that were scored; tasks whose judgment FAILED are listed, never counted.

Differences from upstream, on purpose: the target report is cleaned by rules (citation marks,
links, reference lists removed) instead of by a judge call — cheaper and deterministic, but a
reference file must already be clean as upstream's is; the judge is whatever the user names, so
numbers are "RACE-local(judge)" and comparable only under the same judge and references.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from statistics import fmean
from typing import Any

from deepdraft.eval.data import DIMENSIONS, DataError, DrbTask, read_jsonl
from deepdraft.eval.judge import Judge, JudgmentError, read_number, require_dict

__all__ = [
    "CriterionScore",
    "RaceResult",
    "RaceTaskScore",
    "aggregate",
    "clean_article",
    "judge_task",
    "read_raw_results",
    "score_race",
    "task_score",
]

JUDGE_MAX_TOKENS = 8192  # ~25 criteria, each with a short analysis and two scores


@dataclass(frozen=True)
class CriterionScore:
    """The judge's scores of one criterion: target (article 1) and reference (article 2), 0–10."""

    criterion: str
    target: float
    reference: float


@dataclass(frozen=True)
class RaceTaskScore:
    """Per-task relative scores in [0, 1], as in upstream's raw_results.jsonl."""

    id: int
    prompt: str
    dimensions: dict[str, float]
    overall: float

    def as_row(self) -> dict[str, Any]:
        return {"id": self.id, "prompt": self.prompt, **self.dimensions, "overall_score": self.overall}


@dataclass
class RaceResult:
    scores: list[RaceTaskScore] = field(default_factory=list)
    failed: dict[int, str] = field(default_factory=dict)
    """Task id → why its judgment failed (retried, then given up)."""
    skipped: dict[int, str] = field(default_factory=dict)
    """Task id → why it was not judged (no target or no reference report)."""

    def summary(self) -> dict[str, float]:
        return aggregate(self.scores)


# ---- the arithmetic -----------------------------------------------------------------------------


def _weight_of(task: DrbTask, dimension: str, criterion: str) -> float:
    stored = task.checklist.in_dimension(dimension)
    for same in (
        lambda c: c.text == criterion,
        lambda c: c.text.lower() == criterion.lower(),
        lambda c: criterion.lower() in c.text.lower() or c.text.lower() in criterion.lower(),
    ):
        for item in stored:
            if same(item):
                return item.weight
    return fmean(c.weight for c in stored) if stored else 1.0


def dimension_means(
    task: DrbTask, judged: Mapping[str, Sequence[CriterionScore]]
) -> dict[str, tuple[float, float]]:
    """S_d(target), S_d(reference) for every dimension: criterion-weighted means of the scores."""
    means = {}
    for dimension in DIMENSIONS:
        scores = judged.get(dimension, ())
        weights = [_weight_of(task, dimension, s.criterion) for s in scores]
        total = sum(weights)
        if not scores or total <= 0:
            raise JudgmentError(f"no usable criterion scores for {dimension}")
        means[dimension] = (
            sum(w * s.target for w, s in zip(weights, scores, strict=True)) / total,
            sum(w * s.reference for w, s in zip(weights, scores, strict=True)) / total,
        )
    return means


def task_score(task: DrbTask, judged: Mapping[str, Sequence[CriterionScore]]) -> RaceTaskScore:
    """The benchmark's per-task score from per-criterion judge scores (see the module docstring)."""
    means = dimension_means(task, judged)
    relative = {}
    for dimension, (target, reference) in means.items():
        if target + reference <= 0:
            raise JudgmentError(f"both reports scored 0 on every {dimension} criterion")
        relative[dimension] = target / (target + reference)
    weights = task.checklist.dimension_weights
    target_total = sum(weights[d] * means[d][0] for d in DIMENSIONS)
    reference_total = sum(weights[d] * means[d][1] for d in DIMENSIONS)
    return RaceTaskScore(task.id, task.prompt, relative, target_total / (target_total + reference_total))


def aggregate(scores: Sequence[RaceTaskScore]) -> dict[str, float]:
    """Means over tasks of each dimension and of the overall score (the published figures ÷ 100)."""
    if not scores:
        return {}
    summary = {d: fmean(s.dimensions[d] for s in scores) for d in DIMENSIONS}
    summary["overall_score"] = fmean(s.overall for s in scores)
    return summary


def read_raw_results(path: Path) -> list[RaceTaskScore]:
    """Per-task scores in upstream's raw_results.jsonl format (also what `eval race` writes)."""
    scores = []
    for row in read_jsonl(path):
        try:
            scores.append(
                RaceTaskScore(
                    int(row["id"]),
                    str(row.get("prompt", "")),
                    {d: float(row[d]) for d in DIMENSIONS},
                    float(row["overall_score"]),
                )
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"{path}: not a RACE results file ({exc})") from exc
    return scores


# ---- cleaning --------------------------------------------------------------------------------------

_REFERENCE_HEADING = re.compile(
    r"^#{1,6}\s*(?:\d+[.)]?\s*)?"
    r"(references|sources|bibliography|works cited|citations|参考文献|参考资料|引用)\s*$",
    re.IGNORECASE,
)
_ANY_HEADING = re.compile(r"^(#{1,6})\s")
_CITATION_MARKS = [
    re.compile(r"\\cite\{[^}]*\}"),
    re.compile(
        r"\[\^?\d+(?:†[^\]]*)?(?:,\s*(?:p{1,2}\.\s*)?[\d\s,–-]+)*\]"
    ),  # [3], [3, p. 4], [15†L10], [^2]
    re.compile(r"【\d+[^】]*】"),
]
_LINK = re.compile(r"!?\[([^\]]*)\]\((?:[^()]|\([^)]*\))*\)")
_BARE_URL = re.compile(r"<?https?://[^\s>)]+>?")


def clean_article(markdown: str) -> str:
    """The report without citation marks, links and reference lists (RACE judges content only)."""
    kept: list[str] = []
    skipping_level = 0
    for line in markdown.splitlines():
        heading = _ANY_HEADING.match(line)
        if skipping_level and heading and len(heading.group(1)) <= skipping_level:
            skipping_level = 0
        if _REFERENCE_HEADING.match(line.strip()):
            skipping_level = len(line) - len(line.lstrip("#"))
            continue
        if not skipping_level:
            kept.append(line)
    text = "\n".join(kept)
    text = _LINK.sub(lambda m: m.group(1), text)
    for pattern in _CITATION_MARKS:
        text = pattern.sub("", text)
    text = _BARE_URL.sub("", text)
    text = re.sub(r"[ \t]+([.,;:])", r"\1", text)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


# ---- asking the judge --------------------------------------------------------------------------------

_SYSTEM = (
    "You are a strict, objective expert who evaluates research reports. You compare two reports on a "
    "list of criteria and score each report on each criterion, fairly and independently of length."
)


def judge_prompt(task: DrbTask, target: str, reference: str) -> str:
    blocks = []
    for dimension in DIMENSIONS:
        lines = [f"### {dimension}"]
        for item in task.checklist.in_dimension(dimension):
            lines.append(f"- criterion: {item.text}\n  explanation: {item.explanation}")
        blocks.append("\n".join(lines))
    criteria = "\n\n".join(blocks)
    example = (
        '{"comprehensiveness": [{"criterion": "<criterion text as given>", "analysis": "<one or two '
        'sentences comparing the articles>", "article_1_score": 6.5, "article_2_score": 8.0}], '
        '"insight": [...], "instruction_following": [...], "readability": [...]}'
    )
    return (
        f"## Research task\n{task.prompt}\n\n"
        f"## Article 1\n<article_1>\n{target}\n</article_1>\n\n"
        f"## Article 2\n<article_2>\n{reference}\n</article_2>\n\n"
        f"## Criteria, by dimension\n{criteria}\n\n"
        "## What to do\n"
        "For every criterion above, compare how well each article meets it, then give each article a "
        "score from 0 to 10 (decimals allowed): 0–2 very poor, 2–4 poor, 4–6 average, 6–8 good, "
        "8–10 excellent. Judge each criterion on its own. Copy each criterion's text exactly.\n"
        f"Answer with one JSON object and nothing else, keyed by the four dimensions:\n{example}\n"
    )


def read_judgment(value: Any) -> dict[str, list[CriterionScore]]:
    """The judge's reply as scores per dimension; every dimension must have at least one score."""
    data = require_dict(value)
    judged: dict[str, list[CriterionScore]] = {}
    for dimension in DIMENSIONS:
        entries = data.get(dimension)
        if not isinstance(entries, list) or not entries:
            raise JudgmentError(f"`{dimension}` must be a non-empty list of criterion scores")
        scores = []
        for number, entry in enumerate(entries, 1):
            item = require_dict(entry, f"{dimension} entry {number}")
            criterion = item.get("criterion")
            if not isinstance(criterion, str) or not criterion.strip():
                raise JudgmentError(f"{dimension} entry {number} has no `criterion` text")
            scores.append(
                CriterionScore(
                    criterion.strip(),
                    read_number(
                        item.get("article_1_score"), f"{dimension} entry {number} article_1_score", 0, 10
                    ),
                    read_number(
                        item.get("article_2_score"), f"{dimension} entry {number} article_2_score", 0, 10
                    ),
                )
            )
        judged[dimension] = scores
    return judged


def judge_task(judge: Judge, task: DrbTask, target: str, reference: str) -> RaceTaskScore | str:
    """One task's score, or the reason its judgment failed."""
    judged = judge.ask(
        judge_prompt(task, clean_article(target), reference),
        lambda value: task_score(task, read_judgment(value)),
        tag=f"race/{task.id}",
        system=_SYSTEM,
        max_tokens=JUDGE_MAX_TOKENS,
    )
    return judged.value if judged.value is not None else judged.failure or "failed"


def score_race(
    judge: Judge, tasks: Sequence[DrbTask], targets: Mapping[str, str], references: Mapping[str, str]
) -> RaceResult:
    """RACE over the tasks that have a target and a reference report (both keyed by task prompt)."""
    result = RaceResult()
    runnable = []
    for task in tasks:
        if task.prompt not in targets:
            result.skipped[task.id] = "no target report"
        elif task.prompt not in references:
            result.skipped[task.id] = "no reference report"
        else:
            runnable.append(task)
    outcomes = judge.map(
        runnable, lambda t: judge_task(judge, t, targets[t.prompt], references[t.prompt]), "RACE"
    )
    for task, outcome in zip(runnable, outcomes, strict=True):
        if isinstance(outcome, str):
            result.failed[task.id] = outcome
        else:
            result.scores.append(outcome)
    return result
