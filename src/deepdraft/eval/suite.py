"""`eval run`: research a suite's questions with several policies, then score and compare them.

Every policy runs on the same model, corpus and settings (through `deepdraft.run.runner`, so output
verification and synthesis apply as configured); only `research.policy` differs. Then the reports
are scored with what needs no reference: the six DRGym quality criteria and FACT-local citation
support (from each run's stored evidence); KPR/KPC too on the `gym` suite, whose questions ship key
points; RACE on `drb` when reference reports are given. The result is one table, policy × metric,
printed and written to ``comparison.csv`` with ``per_question.csv``, ``summary.json`` and a bar chart
``comparison.png`` in the output folder.

Resumable: ``runs.jsonl`` in the output folder records each (question, policy) → run id *before*
the run starts. A rerun reuses finished runs, resumes interrupted ones from their last checkpoint,
and the judge's cache answers every judgment already made; nothing is lost to an interruption.
"""

from __future__ import annotations

import csv
import json
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deepdraft.errors import RunFailed, RunNotFound, UserError
from deepdraft.eval.data import KeyPoint, benchmarks_dir, load_deepconsult, load_drb, load_gym
from deepdraft.eval.fact import FactReport, judge_statements, pairs_from_run_state, summarize
from deepdraft.eval.gym import (
    QUALITY_CRITERIA,
    KeyPointResult,
    QualityResult,
    judge_key_points,
    judge_quality,
)
from deepdraft.eval.judge import Judge
from deepdraft.eval.race import score_race
from deepdraft.eval.report_io import match_key
from deepdraft.ports import LLM, Retriever
from deepdraft.settings import Settings

if TYPE_CHECKING:
    from deepdraft.run.drivers import RunDriver

__all__ = ["DEMO_QUESTIONS", "SUITES", "SuiteQuestion", "SuiteResult", "run_suite", "suite_questions"]

SUITES = ("demo", "drb", "deepconsult", "gym")

# Questions the bundled State of the Union corpus can answer (the `demo` knowledge base).
DEMO_QUESTIONS = (
    "How did presidents argue about tariffs and free trade in their State of the Union addresses?",
    "How has the way presidents talk about immigration changed from the nineteenth century to today?",
    "What reasons did presidents give for paying down or for increasing the national debt?",
    "How did presidents justify going to war in their State of the Union addresses?",
    "How did presidents describe the role of the federal government in the economy during depressions?",
    "How have presidents spoken about civil rights and equality before the law?",
)


@dataclass(frozen=True)
class SuiteQuestion:
    id: str
    question: str
    key_points: tuple[KeyPoint, ...] = ()


def suite_questions(suite: str, data_dir: Path | None, limit: int | None) -> list[SuiteQuestion]:
    """The first `limit` questions of a suite (all when None)."""
    questions: list[SuiteQuestion]
    if suite == "demo":
        questions = [SuiteQuestion(f"demo-{i}", q) for i, q in enumerate(DEMO_QUESTIONS, 1)]
    elif suite == "drb":
        questions = [SuiteQuestion(f"drb-{t.id}", t.prompt) for t in load_drb(benchmarks_dir(data_dir))]
    elif suite == "deepconsult":
        queries = load_deepconsult(benchmarks_dir(data_dir))
        questions = [SuiteQuestion(f"deepconsult-{i}", q) for i, q in enumerate(queries, 1)]
    elif suite == "gym":
        questions = [
            SuiteQuestion(f"gym-{q.id}", q.query, q.key_points) for q in load_gym(benchmarks_dir(data_dir))
        ]
    else:
        raise UserError(f"unknown suite {suite!r}: choose one of {', '.join(SUITES)}")
    return questions[:limit] if limit is not None else questions


@dataclass
class RunOutcome:
    question: SuiteQuestion
    policy: str
    run_id: str
    report: str | None = None
    error: str | None = None


@dataclass
class SuiteResult:
    policies: list[str]
    outcomes: list[RunOutcome]
    table: dict[str, dict[str, float | None]] = field(default_factory=dict)
    """policy → metric → value."""
    per_question: list[dict[str, Any]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


ProgressFn = Callable[[str], None]


def _policy_settings(settings: Settings, policy: str) -> Settings:
    research = settings.research.model_copy(update={"policy": policy})
    return settings.model_copy(update={"research": research})


class _RunLedger:
    """``runs.jsonl``: which run answers which (question, policy); appended before each run starts."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()  # runs of the suite start from several threads at once
        self.entries: dict[tuple[str, str], str] = {}
        if path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    row = json.loads(line)
                    self.entries[(row["question_id"], row["policy"])] = row["run_id"]

    def record(self, question_id: str, policy: str, run_id: str) -> None:
        with self._lock, self.path.open("a", encoding="utf-8") as handle:
            self.entries[(question_id, policy)] = run_id
            handle.write(json.dumps({"question_id": question_id, "policy": policy, "run_id": run_id}) + "\n")
            handle.flush()
            os.fsync(handle.fileno())


def _research(
    question: SuiteQuestion,
    policy: str,
    settings: Settings,
    ledger: _RunLedger,
    *,
    kb: str | None,
    runs: RunDriver,
) -> RunOutcome:
    from deepdraft.events import ignore
    from deepdraft.run import runner
    from deepdraft.run.pool import RunOrder
    from deepdraft.run.runs import Runs, get_run, run_folder

    recorded = ledger.entries.get((question.id, policy))
    run_id = recorded or runner.new_run_id()
    record = None
    try:
        if recorded is not None:
            try:
                record = get_run(run_id)
            except RunNotFound:
                record = None
            if record is not None and record.recorded_status == "finished":
                path = Path(record.report_path or "")
                if record.report_path and path.is_file():
                    return RunOutcome(question, policy, run_id, path.read_text(encoding="utf-8"))
                # The file is gone; the journal still holds the finished report (a finished run
                # is never driven again).
                with Runs.open() as stored:
                    markdown = stored.report_document(run_id).markdown
                return RunOutcome(question, policy, run_id, markdown)
        if record is None:  # a new pair, or one whose run was lost with its journal: start it
            ledger.record(question.id, policy, run_id)
        runs.drive(RunOrder(run_id, question.question, kb, settings), ignore)
        report = (run_folder(run_id) / "report.md").read_text(encoding="utf-8")
        return RunOutcome(question, policy, run_id, report)
    except RunFailed as exc:  # the model could not produce a report; other policies still run
        return RunOutcome(question, policy, run_id, error=str(exc))


def run_suite(
    questions: Sequence[SuiteQuestion],
    policies: Sequence[str],
    settings: Settings,
    judge: Judge,
    output_dir: Path,
    *,
    kb: str | None = None,
    llm: LLM | None = None,
    retriever: Retriever | None = None,
    references: dict[str, str] | None = None,
    data_dir: Path | None = None,
    on_run: ProgressFn = lambda label: None,
    concurrency: int | None = None,
    ray: str | None = None,
) -> SuiteResult:
    """Research every question with every policy, score the reports, write the comparison files.

    The runs go through one `RunPool`: `concurrency` at a time (default: 4 with a server, 1 with
    the embedded model), all spending from one budget; `ray` ("auto" or a cluster address) runs
    them on Ray, as `deepdraft batch --ray` does.
    """
    from deepdraft.run.drivers import open_driver
    from deepdraft.run.pool import RunPool
    from deepdraft.run.wiring import POLICIES

    unknown = [p for p in policies if p not in POLICIES]
    if unknown:
        raise UserError(f"unknown policy {', '.join(unknown)}: choose from {', '.join(POLICIES)}")
    output_dir.mkdir(parents=True, exist_ok=True)
    ledger = _RunLedger(output_dir / "runs.jsonl")
    pool = RunPool.for_settings(settings, concurrency, name="eval-run")
    pairs = [(q, policy) for q in questions for policy in policies]
    cancel = threading.Event()  # Ctrl-C stops the runs before their next action, resumable
    with pool, open_driver(pool, settings, ray=ray, llm=llm, retriever=retriever, cancel=cancel) as runs:

        def research(pair: tuple[SuiteQuestion, str]) -> RunOutcome:
            question, policy = pair
            on_run(f"{policy}: {question.id}")
            return _research(question, policy, _policy_settings(settings, policy), ledger, kb=kb, runs=runs)

        outcomes = pool.run_all(research, pairs, cancel=cancel)
    result = SuiteResult(list(policies), outcomes)
    result.failures += [f"{o.policy} {o.question.id}: run failed: {o.error}" for o in outcomes if o.error]
    done = [o for o in outcomes if o.report is not None]
    scores = _judge_reports(judge, done, references, data_dir, result)
    result.failures += scores.failures()
    for policy in policies:
        result.table[policy] = scores.policy_row([o for o in done if o.policy == policy])
    result.per_question += [scores.question_row(outcome) for outcome in outcomes]
    write_outputs(result, judge, output_dir)
    return result


def _name(outcome: RunOutcome) -> str:
    """The key an outcome's report is judged under."""
    return f"{outcome.question.id}/{outcome.policy}"


@dataclass(frozen=True)
class _Scores:
    """Every judgment of a suite's reports, each keyed by `_name` of the outcome."""

    quality: QualityResult
    fact_reports: list[FactReport]
    key_points: KeyPointResult
    race: dict[str, float]
    has_key_points: bool  # some question ships key points (the `gym` suite): KPR/KPC are columns
    has_references: bool  # reference reports were given (`drb`): RACE is a column

    @property
    def facts(self) -> dict[str, FactReport]:
        return {report.name: report for report in self.fact_reports}

    def failures(self) -> list[str]:
        """One line per judgment that failed, so that a missing score is never mistaken for a low one."""
        lines = [
            f"{name}: quality judgment FAILED for {', '.join(failed)}"
            for name, failed in self.quality.failed.items()
        ]
        for report in self.fact_reports:
            lines += [f"{report.name}: citation judgment FAILED: {f}" for f in report.failures]
        failed_key_points = self.key_points.failed.items()
        lines += [f"{qid}: {count} key-point judgment(s) FAILED" for qid, count in failed_key_points]
        return lines

    def policy_row(self, mine: Sequence[RunOutcome]) -> dict[str, float | None]:
        """One policy's line of the comparison table: the metrics over its reports."""
        names = {_name(o) for o in mine}
        row: dict[str, float | None] = {"reports": float(len(mine))}
        q = QualityResult(ratings={k: v for k, v in self.quality.ratings.items() if k in names}).summary()
        row["quality"] = q.get("overall")
        for criterion in QUALITY_CRITERIA:
            row[criterion] = q.get(criterion)
        facts = self.facts
        f = summarize([facts[n] for n in names if n in facts])
        row["citation_accuracy"] = None if f.citation_accuracy is None else 100 * f.citation_accuracy
        row["effective_citations"] = f.effective_citations
        if self.has_key_points:
            k = KeyPointResult(rates={n: r for n, r in self.key_points.rates.items() if n in names}).summary()
            row["kpr"], row["kpc"] = k.get("kpr"), k.get("kpc")
        if self.has_references:
            values = [self.race[n] for n in names if n in self.race]
            row["race"] = 100 * sum(values) / len(values) if values else None
        return row

    def question_row(self, outcome: RunOutcome) -> dict[str, Any]:
        """One (question, policy) line of ``per_question.csv``."""
        key = _name(outcome)
        ratings = self.quality.ratings.get(key, {})
        fact = self.facts.get(key, FactReport(key))
        return {
            "question_id": outcome.question.id,
            "policy": outcome.policy,
            "run_id": outcome.run_id,
            "error": outcome.error or "",
            "words": len((outcome.report or "").split()),
            **{c: ratings.get(c) for c in QUALITY_CRITERIA},
            "supported": fact.labels["supported"],
            "unsupported": fact.labels["unsupported"],
            "unknown": fact.labels["unknown"],
            "kpr": self.key_points.rates.get(key, {}).get("support_rate"),
            "race": self.race.get(key),
        }


def _judge_reports(
    judge: Judge,
    done: Sequence[RunOutcome],
    references: dict[str, str] | None,
    data_dir: Path | None,
    result: SuiteResult,
) -> _Scores:
    """Judge the finished reports: quality, citation support, key points, then RACE, in that order."""
    from deepdraft.run.runs import run_state

    quality = judge_quality(judge, {_name(o): (o.question.question, o.report or "") for o in done})
    fact_reports = judge_statements(
        judge, {_name(o): pairs_from_run_state(_final_state(run_state, o.run_id)) for o in done if o.run_id}
    )
    gym = [o for o in done if o.question.key_points]
    key_points = judge_key_points(
        judge, [(_name(o), o.question.question, o.question.key_points, o.report or "") for o in gym]
    )
    race = _race(judge, done, references, data_dir, result) if references else {}
    return _Scores(quality, fact_reports, key_points, race, bool(gym), bool(references))


def _final_state(load: Callable[[str], Any], run_id: str) -> Any:
    from deepdraft.core.state import RunState

    state = load(run_id)
    return state if state is not None else RunState(question="")


def _race(
    judge: Judge,
    done: Sequence[RunOutcome],
    references: dict[str, str],
    data_dir: Path | None,
    result: SuiteResult,
) -> dict[str, float]:
    tasks = {match_key(t.prompt): t for t in load_drb(benchmarks_dir(data_dir))}
    refs = {match_key(q): text for q, text in references.items()}
    scores: dict[str, float] = {}
    for outcome in done:
        task = tasks.get(match_key(outcome.question.question))
        if task is None or match_key(task.prompt) not in refs:
            continue
        race = score_race(
            judge, [task], {task.prompt: outcome.report or ""}, {task.prompt: refs[match_key(task.prompt)]}
        )
        key = f"{outcome.question.id}/{outcome.policy}"
        if race.scores:
            scores[key] = race.scores[0].overall
        result.failures += [f"{key}: RACE judgment FAILED: {why}" for why in race.failed.values()]
    return scores


# ---- outputs -----------------------------------------------------------------------------------------

CAVEAT = (
    "Judge-based numbers move with the judge: compare policies under one judge; a small local judge's "
    "absolute numbers mean little."
)


def metric_names(result: SuiteResult) -> list[str]:
    return list(next(iter(result.table.values()))) if result.table else []


def write_outputs(result: SuiteResult, judge: Judge, folder: Path) -> None:
    metrics = metric_names(result)
    with (folder / "comparison.csv").open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["policy", *metrics])
        for policy, row in result.table.items():
            writer.writerow([policy, *("" if row[m] is None else f"{row[m]:.4f}" for m in metrics)])
    if result.per_question:
        with (folder / "per_question.csv").open("w", encoding="utf-8", newline="") as handle:
            dict_writer = csv.DictWriter(handle, fieldnames=list(result.per_question[0]))
            dict_writer.writeheader()
            dict_writer.writerows(result.per_question)
    summary = {
        "judge": judge.model_name,
        "judge_usage": judge.tally.as_dict(),
        "table": result.table,
        "failures": result.failures,
        "note": CAVEAT,
    }
    (folder / "summary.json").write_text(
        json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    plot_comparison(result, folder / "comparison.png")


def plot_comparison(result: SuiteResult, path: Path) -> None:
    """Grouped bars of the 0–100 metrics, one colour per policy (matplotlib, Agg: no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [m for m in metric_names(result) if m not in ("reports", "effective_citations")]
    figure, axes = plt.subplots(figsize=(max(6.0, 1.1 * len(metrics) + 2), 4.2))
    width = 0.8 / max(1, len(result.table))
    for index, (policy, row) in enumerate(result.table.items()):
        values = [0.0 if row[m] is None else float(row[m] or 0.0) for m in metrics]
        positions = [m + index * width for m in range(len(metrics))]
        axes.bar(positions, values, width, label=policy)
    axes.set_xticks([m + width * (len(result.table) - 1) / 2 for m in range(len(metrics))])
    axes.set_xticklabels([m.replace("_", " ") for m in metrics], rotation=30, ha="right")
    axes.set_ylim(0, 100)
    axes.set_ylabel("score (0–100)")
    axes.set_title("Policies compared (missing values drawn as 0)")
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
