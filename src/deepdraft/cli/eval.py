"""`deepdraft eval …`: the benchmark commands (see docs/eval.md for what every number means).

Each command reads reports (files, JSONL outputs or run ids), asks the judge named by
``--judge-base-url``/``--judge-model`` (the embedded model when none is named), prints a table, a
list of FAILED judgments and the judge's token summary, and can write its results as JSON. Judge
calls are cached under ``DEEPDRAFT_HOME/eval``: rerunning a command costs nothing, and an
interrupted one picks up where it stopped.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from deepdraft.cli.options import NO_JUDGE_OPTIONS, JudgeOptions, RayOption, with_judge_options
from deepdraft.errors import UserError
from deepdraft.eval.data import DrbTask
from deepdraft.eval.judge import Judge, open_eval_cache, open_judge
from deepdraft.eval.report_io import ReportText, load_reports, match_key
from deepdraft.settings import Depth

eval_app = typer.Typer(
    help="Score reports on the paper's benchmarks (RACE, FACT, DeepConsult, DRGym, FreshWiki) "
    "and compare research policies.",
    no_args_is_help=True,
)
console = Console()

DataDir = Annotated[
    Path | None,
    typer.Option(
        "--data-dir", help="Benchmark data folder [env: DEEPDRAFT_BENCHMARKS; default ../shared/benchmarks]"
    ),
]
OutputJson = Annotated[
    Path | None, typer.Option("--output", "-o", help="Also write the results here (JSON).")
]


@contextmanager
def _judge(options: JudgeOptions, **kwargs: Any) -> Iterator[Judge]:
    """A cached judge with progress bars; prints its token summary at the end, even on Ctrl-C."""
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with open_eval_cache() as cache, Progress(*columns, console=console, transient=False) as bars:

        def hook(label: str, total: int) -> Callable[[], None]:
            task = bars.add_task(label, total=total)
            return lambda: bars.advance(task)

        judge = open_judge(
            options.base_url,
            options.model,
            options.api_key,
            concurrency=options.concurrency,
            cache=cache,
            progress=hook,
            **kwargs,
        )
        try:
            yield judge
        finally:
            bars.stop()
            summary = judge.tally.summary(options.price_in, options.price_out)
            console.print(summary, markup=False, highlight=False)


def _print_failures(failures: Sequence[str]) -> None:
    if failures:
        console.print(f"[red]{len(failures)} FAILED[/red] (left out of every figure above):")
        for line in failures:
            console.print(f"  {line}", markup=False, highlight=False, soft_wrap=True)


def _table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    table = Table(title=title)
    for column in columns:
        table.add_column(
            column, justify="left" if column in ("", "policy", "dimension", "report") else "right"
        )
    for row in rows:
        table.add_row(*(_cell(value) for value in row))
    console.print(table)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def _write_json(path: Path | None, data: Any) -> None:
    if path is not None:
        path.write_text(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
        console.print(f"results written to {path}", markup=False, highlight=False)


def _by_question(reports: Sequence[ReportText], what: str) -> dict[str, ReportText]:
    keyed = {}
    for report in reports:
        if report.question is None:
            raise UserError(
                f"{what}: a report without its question; give a JSONL with a `prompt` field or --task"
            )
        keyed[match_key(report.question)] = report
    return keyed


# ---- race --------------------------------------------------------------------------------------------


@eval_app.command()
@with_judge_options
def race(
    target: Annotated[
        str | None, typer.Argument(help="Reports to score: a JSONL of outputs, a Markdown file or a run id.")
    ] = None,
    reference: Annotated[
        str | None, typer.Option("--reference", help="Reference reports (same forms as TARGET).")
    ] = None,
    task: Annotated[
        int | None, typer.Option("--task", help="The DRB task id of a single Markdown TARGET/--reference.")
    ] = None,
    limit: Annotated[int | None, typer.Option("--limit", help="Score at most this many tasks.")] = None,
    from_raw: Annotated[
        Path | None,
        typer.Option("--from-raw", help="Only aggregate per-task scores from a raw_results.jsonl file."),
    ] = None,
    data_dir: DataDir = None,
    judge: JudgeOptions = NO_JUDGE_OPTIONS,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write per-task scores here (raw_results JSONL).")
    ] = None,
) -> None:
    """RACE (DeepResearch Bench): score reports against reference reports, criterion by criterion."""
    from deepdraft.eval import race as race_metric
    from deepdraft.eval.data import benchmarks_dir, load_drb

    if from_raw is not None:
        summary = race_metric.aggregate(race_metric.read_raw_results(from_raw))
        _print_race(summary, len(race_metric.read_raw_results(from_raw)))
        return
    if target is None or reference is None:
        raise UserError("give the reports to score and --reference FILE (or --from-raw RESULTS.jsonl)")
    tasks = load_drb(benchmarks_dir(data_dir))
    targets, references = _race_inputs(tasks, target, reference, task)
    chosen = [t for t in tasks if t.prompt in targets][:limit]
    if not chosen:
        raise UserError("no report matches a DRB task prompt (use --task ID for a single Markdown report)")
    with _judge(judge) as judged:
        result = race_metric.score_race(judged, chosen, targets, references)
    _print_race(result.summary(), len(result.scores))
    skipped = [f"task {i}: skipped ({why})" for i, why in result.skipped.items()]
    _print_failures([f"task {i}: {why}" for i, why in result.failed.items()] + skipped)
    if output is not None:
        with output.open("w", encoding="utf-8") as handle:
            for score in result.scores:
                handle.write(json.dumps(score.as_row(), ensure_ascii=False) + "\n")
        console.print(f"per-task scores written to {output}", markup=False, highlight=False)


def _race_inputs(
    tasks: Sequence[DrbTask], target: str, reference: str, task_id: int | None
) -> tuple[dict[str, str], dict[str, str]]:
    by_id = {t.id: t for t in tasks}
    prompts = {match_key(t.prompt): t.prompt for t in tasks}

    def keyed(spec: str, what: str) -> dict[str, str]:
        reports = load_reports(spec)
        if task_id is not None and len(reports) == 1:
            if task_id not in by_id:
                raise UserError(f"--task {task_id}: no such DRB task")
            return {by_id[task_id].prompt: reports[0].text}
        found = {}
        for key, report in _by_question(reports, what).items():
            if key in prompts:
                found[prompts[key]] = report.text
        return found

    return keyed(target, "TARGET"), keyed(reference, "--reference")


def _print_race(summary: dict[str, float], tasks: int) -> None:
    rows = [[name.replace("_", " "), 100 * value] for name, value in summary.items()]
    _table(f"RACE over {tasks} task(s) (×100; 50 = as good as the reference)", ["dimension", "score"], rows)


# ---- fact --------------------------------------------------------------------------------------------


@eval_app.command()
@with_judge_options
def fact(
    reports: Annotated[list[str], typer.Argument(help="Run ids, or one Markdown report with --sources.")],
    sources: Annotated[
        Path | None,
        typer.Option(
            "--sources", help='For a Markdown report: JSON {"1": "cited text", …} or JSONL {number, text}.'
        ),
    ] = None,
    judge: JudgeOptions = NO_JUDGE_OPTIONS,
    output: OutputJson = None,
) -> None:
    """FACT-local: check each cited statement against the passage it cites, as stored (offline)."""
    from deepdraft.eval import fact as fact_metric
    from deepdraft.run.runs import Runs

    pairs: dict[str, list[fact_metric.CitedStatement]] = {}
    for spec in reports:
        path = Path(spec).expanduser()
        if path.is_file():
            if sources is None:
                raise UserError(
                    f"{spec}: a Markdown report needs --sources (the text each citation number points to)"
                )
            pairs[path.name] = fact_metric.pairs_from_markdown(
                load_reports(spec)[0].text, fact_metric.read_sources(sources)
            )
        else:
            try:
                with Runs.open() as runs:
                    record = runs.get(spec)
                    state = runs.state(record.id)
            except UserError:
                raise UserError(f"{spec}: neither a report file nor a run id") from None
            if state is None:
                raise UserError(f"run {record.id} has no checkpoint yet: nothing to check")
            pairs[record.id] = fact_metric.pairs_from_run_state(state)
    with _judge(judge) as judged:
        results = fact_metric.judge_statements(judged, pairs)
    summary = fact_metric.summarize(results)
    rows = [
        [r.name, r.labels["supported"], r.labels["unsupported"], r.labels["unknown"], r.failed]
        for r in results
    ]
    _table("Cited statements", ["report", "supported", "unsupported", "unknown", "failed"], rows)
    accuracy = None if summary.citation_accuracy is None else 100 * summary.citation_accuracy
    _table(
        "FACT-local",
        ["citation accuracy %", "effective citations", "total citations", "reports"],
        [[accuracy, summary.effective_citations, summary.total_citations, summary.reports]],
    )
    _print_failures([f"{r.name}: {f}" for r in results for f in r.failures])
    _write_json(output, {"summary": summary.__dict__, "reports": [r.__dict__ for r in results]})


# ---- pairwise ----------------------------------------------------------------------------------------


@eval_app.command()
@with_judge_options
def pairwise(
    input_csv: Annotated[
        Path | None,
        typer.Option("--input", help="DeepConsult CSV: question, baseline_answer, candidate_answer."),
    ] = None,
    baseline: Annotated[
        str | None, typer.Option("--baseline", help="Baseline reports (JSONL, folder).")
    ] = None,
    candidate: Annotated[
        str | None, typer.Option("--candidate", help="Candidate reports (same forms).")
    ] = None,
    repeats: Annotated[int, typer.Option("--repeats", help="Trials per query, each in both orders.")] = 3,
    limit: Annotated[int | None, typer.Option("--limit", help="Compare at most this many queries.")] = None,
    judge: JudgeOptions = NO_JUDGE_OPTIONS,
    output: OutputJson = None,
) -> None:
    """DeepConsult pairwise: candidate vs baseline, both orders, repeated; win/tie/lose and score."""
    from deepdraft.eval import pairwise as metric

    if input_csv is not None:
        comparisons = metric.read_pairs_csv(input_csv)
    elif baseline and candidate:
        base = _by_question(load_reports(baseline), "--baseline")
        cand = _by_question(load_reports(candidate), "--candidate")
        comparisons = [
            metric.Comparison(base[k].question or k, base[k].text, cand[k].text) for k in base if k in cand
        ]
        if not comparisons:
            raise UserError("no question appears in both --baseline and --candidate")
    else:
        raise UserError("give --input CSV, or --baseline and --candidate")
    with _judge(judge) as judged:
        result = metric.compare(judged, comparisons[:limit], repeats)
    summary = result.summary()
    rows = [
        [d.replace("_", " "), r["win"], r["tie"], r["lose"], r["score"], r["net_win_rate"]]
        for d, r in summary.items()
    ]
    _table(
        f"Pairwise over {len(result.grades)} queries (candidate vs baseline; score 5 = parity)",
        ["dimension", "win %", "tie %", "lose %", "score", "net win %"],
        rows,
    )
    failures = [f"{q[:60]}: {why}" for q, why in result.failed_queries.items()]
    if result.failed_judgments:
        failures.append(
            f"{result.failed_judgments} judgment(s) FAILED and were left out of their query's votes"
        )
    _print_failures(failures)
    _write_json(output, {"summary": summary, "failed_judgments": result.failed_judgments})


# ---- gym ----------------------------------------------------------------------------------------------


@eval_app.command()
@with_judge_options
def gym(
    reports: Annotated[
        str | None, typer.Argument(help="Reports: a folder of <id>.q/<id>.a, a JSONL of outputs or a run id.")
    ] = None,
    query_id: Annotated[
        str | None, typer.Option("--query-id", help="The DRGym query id of a single Markdown report.")
    ] = None,
    kpr: Annotated[bool, typer.Option("--kpr/--no-kpr", help="Key-point recall and contradiction.")] = True,
    quality: Annotated[bool, typer.Option("--quality/--no-quality", help="The six quality criteria.")] = True,
    from_labels: Annotated[
        Path | None,
        typer.Option("--from-labels", help="Only recompute KPR/KPC from an upstream KPR results file."),
    ] = None,
    limit: Annotated[int | None, typer.Option("--limit", help="Score at most this many reports.")] = None,
    data_dir: DataDir = None,
    judge: JudgeOptions = NO_JUDGE_OPTIONS,
    output: OutputJson = None,
) -> None:
    """DeepResearch Gym: KPR/KPC against the shipped key points, and the six 0–100 quality criteria."""
    from deepdraft.eval import gym as metric
    from deepdraft.eval.data import benchmarks_dir, load_gym

    if from_labels is not None:
        rates = {
            q: metric.rates_from_labels(labels) for q, labels in metric.read_kpr_results(from_labels).items()
        }
        rows = [[q, r["support_rate"], r["contradicted_rate"]] for q, r in rates.items()]
        kpr_mean = sum(r["support_rate"] for r in rates.values()) / len(rates) if rates else None
        kpc_mean = sum(r["contradicted_rate"] for r in rates.values()) / len(rates) if rates else None
        rows.append(["mean", kpr_mean, kpc_mean])
        _table("KPR/KPC from labels", ["report", "KPR", "KPC"], rows)
        return
    if reports is None:
        raise UserError("give the reports to score (or --from-labels FILE)")
    queries = {q.id: q for q in load_gym(benchmarks_dir(data_dir))}
    by_text = {match_key(q.query): q for q in queries.values()}
    items = []
    for report in load_reports(reports):
        query = queries.get(query_id or "") or queries.get(report.id or "")
        if query is None and report.question:
            query = by_text.get(match_key(report.question))
        if query is None:
            raise UserError(f"report {report.id}: no DRGym query with that id or question (use --query-id)")
        items.append((query, report))
    items = items[:limit]
    with _judge(judge) as judged:
        kpr_result = (
            metric.judge_key_points(judged, [(q.id, q.query, q.key_points, r.text) for q, r in items])
            if kpr
            else None
        )
        quality_result = (
            metric.judge_quality(judged, {q.id: (q.query, r.text) for q, r in items}) if quality else None
        )
    failures: list[str] = []
    data: dict[str, Any] = {}
    if kpr_result is not None:
        rows = [[q, r["support_rate"], r["contradicted_rate"]] for q, r in kpr_result.rates.items()]
        totals = kpr_result.summary()
        rows.append(["mean", totals.get("kpr"), totals.get("kpc")])
        _table("Key points (%)", ["report", "KPR", "KPC"], rows)
        failures += [f"query {q}: {n} key-point judgment(s) FAILED" for q, n in kpr_result.failed.items()]
        failures += [f"query {q}: skipped (no key points or no usable judgment)" for q in kpr_result.skipped]
        data["kpr"] = {"per_query": kpr_result.rates, "summary": totals}
    if quality_result is not None:
        summary = quality_result.summary()
        _table("Quality (0–100)", ["criterion", "score"], [[c, v] for c, v in summary.items()])
        failures += [
            f"report {n}: quality FAILED for {', '.join(c)}" for n, c in quality_result.failed.items()
        ]
        data["quality"] = {"per_report": quality_result.ratings, "summary": summary}
    _print_failures(failures)
    _write_json(output, data)


# ---- outline ------------------------------------------------------------------------------------------


@eval_app.command()
def outline(
    reports: Annotated[
        list[str], typer.Argument(help="Generated articles: Markdown files, a JSONL or run ids.")
    ],
    topic: Annotated[
        str | None,
        typer.Option("--topic", help="The FreshWiki topic (default: the report's question or file name)."),
    ] = None,
    data_dir: DataDir = None,
    output: OutputJson = None,
) -> None:
    """FreshWiki outline quality: heading soft recall, heading entity recall, ROUGE-L (no judge)."""
    from deepdraft.eval import outline as metric
    from deepdraft.eval.data import benchmarks_dir, load_freshwiki

    root = benchmarks_dir(data_dir)
    generated = [
        (r, topic or r.question or (r.id or "").replace("_", " "))
        for spec in reports
        for r in load_reports(spec)
    ]
    articles = [(load_freshwiki(root, t), r) for r, t in generated]
    with console.status("loading the MiniLM embedder"):
        embed = metric.load_minilm()
    scores = [metric.score_outline(article, report.text, embed) for article, report in articles]
    rows = [
        [
            s.topic,
            _pct(s.heading_soft_recall),
            _pct(s.heading_entity_recall),
            100 * s.rouge_l_recall,
            100 * s.rouge_l_f1,
        ]
        for s in scores
    ]
    _table(
        "FreshWiki outline quality (%)",
        ["topic", "heading soft recall", "heading entity recall*", "ROUGE-L R", "ROUGE-L F1"],
        rows,
    )
    console.print(f"* {metric.ENTITY_NOTE}", markup=False, highlight=False)
    _write_json(output, {"scores": [s.__dict__ for s in scores], "note": metric.ENTITY_NOTE})


def _pct(value: float | None) -> float | None:
    return None if value is None else 100 * value


# ---- run ----------------------------------------------------------------------------------------------


@eval_app.command("run")
@with_judge_options
def run_suite_command(
    suite: Annotated[str, typer.Argument(help="demo, drb, deepconsult or gym.")],
    policies: Annotated[
        str, typer.Option("--policies", help="Comma-separated policies to compare.")
    ] = "warp,plan-write,single-pass",
    limit: Annotated[int | None, typer.Option("--limit", help="The first N questions of the suite.")] = None,
    kb: Annotated[
        str | None, typer.Option("--kb", help="Knowledge base name or path (default as research).")
    ] = None,
    depth: Annotated[Depth | None, typer.Option("--depth", help="quick, standard or deep.")] = None,
    base_url: Annotated[
        str | None, typer.Option("--base-url", help="OpenAI-compatible endpoint of the writer.")
    ] = None,
    model: Annotated[str | None, typer.Option("--model", help="Writer model name.")] = None,
    api_key: Annotated[str | None, typer.Option("--api-key", help="Writer API key.")] = None,
    references: Annotated[
        str | None, typer.Option("--references", help="drb: reference reports (JSONL) to add RACE.")
    ] = None,
    output_dir: Annotated[
        Path, typer.Option("--output-dir", help="Where the table, CSV files and plot go (and runs.jsonl).")
    ] = Path("eval-results"),
    concurrency: Annotated[
        int | None,
        typer.Option(
            "--concurrency", help="Runs at once (default: 4 with --base-url, 1 with the embedded model)."
        ),
    ] = None,
    ray: RayOption = None,
    data_dir: DataDir = None,
    config: Annotated[Path | None, typer.Option("--config", help="TOML settings file.")] = None,
    judge: JudgeOptions = NO_JUDGE_OPTIONS,
) -> None:
    """Research a suite's questions with each policy on the same model and corpus, then compare them."""
    from deepdraft.config import load_settings
    from deepdraft.eval import suite as suite_runner
    from deepdraft.run.wiring import build_llm

    names = [p.strip() for p in policies.split(",") if p.strip()]
    if not names:
        raise UserError("--policies is empty")
    settings = load_settings(
        config,
        flags={
            "llm": {"base_url": base_url, "model": model, "api_key": api_key},
            "research": {"depth": depth},
        },
    )
    if not settings.llm.base_url:
        settings = settings.with_default_depth("quick")
    questions = suite_runner.suite_questions(suite, data_dir, limit)
    refs = None
    if references:
        refs = {r.question: r.text for r in load_reports(references) if r.question}
    # With no endpoint named for either, writer and judge are the same embedded model: load it once.
    writer = build_llm(settings) if not settings.llm.base_url and not judge.base_url and not ray else None
    with _judge(judge, llm=writer) as judged:
        result = suite_runner.run_suite(
            questions,
            names,
            settings,
            judged,
            output_dir,
            kb=kb,
            llm=writer,
            references=refs,
            data_dir=data_dir,
            on_run=lambda label: console.print(f"research {label}", markup=False, highlight=False),
            concurrency=concurrency,
            ray=ray,
        )
    metrics = suite_runner.metric_names(result)
    rows = [[policy, *(row[m] for m in metrics)] for policy, row in result.table.items()]
    _table(f"{suite}: {len(questions)} question(s)", ["policy", *metrics], rows)
    console.print(suite_runner.CAVEAT, markup=False, highlight=False)
    _print_failures(result.failures)
    console.print(
        f"written: {output_dir}/comparison.csv, per_question.csv, summary.json, comparison.png", markup=False
    )
