"""`deepdraft train …`: the multi-stage training pipeline (docs/training.md has the full recipe).

    make-queries  reverse-constructed queries from survey titles; checklists for queries without one
    collect       a teacher model runs WARP over a query set (forced deepening), resumable
    prune         score every draft, cut each trajectory at its best one
    export        one chat sample per action, balanced, split by query
    sft, rl       the training stages (`--profile cpu-smoke` for a few steps on CPU)
    tiny-model    a random tiny model + tokenizer built from a dataset, for smoke runs offline
    base-model    an embedded model's GGUF (e.g. SmolLM2) as a Hugging Face folder to train from
    export-gguf   a trained folder as a GGUF the embedded runtime serves

Every stage skips or resumes finished work when run again. Heavy libraries are imported only by
the commands that need them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from deepdraft.cli.options import JudgeKeyOption, JudgeModelOption, JudgeUrlOption, RayOption
from deepdraft.config import load_settings
from deepdraft.errors import UserError
from deepdraft.eval.judge import Judge, open_eval_cache, open_judge

train_app = typer.Typer(
    help="Train a WARP policy model from run journals: collect, prune, export, SFT, RL.",
    no_args_is_help=True,
)
console = Console()

BaseUrl = Annotated[
    str | None, typer.Option("--base-url", help="OpenAI-compatible endpoint of the teacher/policy LLM.")
]
Model = Annotated[str | None, typer.Option("--model", help="Model name at that endpoint.")]
ApiKey = Annotated[str | None, typer.Option("--api-key", help="API key of that endpoint.")]
ConfigFile = Annotated[Path | None, typer.Option("--config", help="TOML settings file.")]
ProfileName = Annotated[
    str, typer.Option("--profile", help="gpu-paper (spec §5.6) or cpu-smoke (a few CPU steps).")
]
MaxSteps = Annotated[int | None, typer.Option("--max-steps", help="Stop after this many optimiser steps.")]
KbOption = Annotated[str | None, typer.Option("--kb", help="Knowledge base name or path the runs search.")]


@contextmanager
def _judge(base_url: str | None, model: str | None, api_key: str | None) -> Iterator[Judge]:
    with open_eval_cache() as cache:
        judge = open_judge(base_url, model, api_key, cache=cache)
        try:
            yield judge
        finally:
            console.print(judge.tally.summary(), markup=False, highlight=False)


@train_app.command("make-queries")
def make_queries(
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Query set to write (JSONL, DRB criteria format).")
    ],
    titles: Annotated[
        Path | None,
        typer.Option("--titles", help="Survey titles, one a line: reverse-construct queries from them."),
    ] = None,
    checklists: Annotated[
        Path | None,
        typer.Option("--checklists", help="A query set: give every query without a checklist one."),
    ] = None,
    per_title: Annotated[int, typer.Option("--per-title", help="Queries per survey title.")] = 1,
    base_url: BaseUrl = None,
    model: Model = None,
    api_key: ApiKey = None,
) -> None:
    """Build training queries (spec §5.1) and their weighted checklists with an LLM."""
    from deepdraft.train.queries import generate_checklist, load_queries, reverse_construct, write_queries

    if (titles is None) == (checklists is None):
        raise UserError("give exactly one of --titles FILE or --checklists QUERIES")
    with _judge(base_url, model, api_key) as judge:
        if titles is not None:
            if not titles.is_file():
                raise UserError(f"titles file not found: {titles}")
            lines = titles.read_text(encoding="utf-8").splitlines()
            queries = reverse_construct(judge, lines, per_title)
            console.print(f"{len(queries)} queries from {sum(1 for t in lines if t.strip())} titles")
        else:
            assert checklists is not None
            queries = []
            for query in load_queries(checklists):
                outcome = query if query.checklist is not None else generate_checklist(judge, query)
                if isinstance(outcome, str):
                    console.print(f"[yellow]no checklist[/yellow] for {query.id}: {outcome}", soft_wrap=True)
                queries.append(query if isinstance(outcome, str) else outcome)
    write_queries(output, queries)
    console.print(f"written: {output}", markup=False, highlight=False)


EMBEDDED_TEACHER_STEPS = 40
"""The embedded teacher's step budget: the quick preset's, with room for its forced deepening."""


@train_app.command()
def collect(
    queries: Annotated[Path, typer.Argument(help="Query set (JSONL in DRB criteria format, or .txt).")],
    out: Annotated[Path, typer.Option("--out", help="Collection folder (created; rerun to resume).")],
    kb: KbOption = None,
    base_url: BaseUrl = None,
    model: Model = None,
    api_key: ApiKey = None,
    force_expansions: Annotated[
        int | None,
        typer.Option(
            "--force-expansions",
            help="Deepening steps the teacher must take (spec §2.10; default: 12, or the quick "
            "preset's 2 with the embedded model).",
        ),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers",
            help="Queries run at the same time (default: 4 with --base-url, 1 with the embedded model).",
        ),
    ] = None,
    ray: RayOption = None,
    config: ConfigFile = None,
) -> None:
    """Run a teacher model over a query set with forced deepening; journals are the trajectories.

    Without --base-url the embedded model is the teacher, with the quick preset (as `research`).
    """
    from deepdraft.train.collect import DEFAULT_FORCED_EXPANSIONS, CollectOutcome, collection_settings
    from deepdraft.train.collect import collect as run_collect
    from deepdraft.train.queries import load_queries

    settings = load_settings(
        config, flags={"llm": {"base_url": base_url, "model": model, "api_key": api_key}}
    )
    if not settings.llm.base_url:
        # Only the quick preset finishes a run in minutes on a CPU; its forced deepening (2) is
        # what such a teacher can afford within its step budget.
        steps_chosen = "max_steps" in settings.research.model_fields_set
        settings = settings.with_default_depth("quick")
        if not steps_chosen and settings.research.depth == "quick":
            # The quick preset's 26 actions left a teacher whose writes were refused short of its
            # forced deepening (measured: 1 of 2 splits, stopped at 22 steps); a trajectory
            # that never reaches its later drafts teaches nothing about when to stop.
            research = settings.research.model_copy(update={"max_steps": EMBEDDED_TEACHER_STEPS})
            settings = settings.model_copy(update={"research": research})
    if force_expansions is None:
        force_expansions = settings.research.force_expansions or DEFAULT_FORCED_EXPANSIONS

    def show(outcome: CollectOutcome) -> None:
        state = "skipped (done)" if outcome.skipped else outcome.status
        console.print(
            f"{outcome.query_id}: {state} {outcome.run_id} {outcome.error}", markup=False, highlight=False
        )

    outcomes = run_collect(
        load_queries(queries),
        collection_settings(settings, force_expansions),
        out,
        kb=kb,
        workers=workers,
        on_done=show,
        ray=ray,
    )
    failed = [o for o in outcomes if o.status != "finished"]
    console.print(f"{len(outcomes) - len(failed)} finished, {len(failed)} failed (rerun to resume them)")


@train_app.command()
def prune(
    folder: Annotated[Path, typer.Argument(help="Collection folder.")],
    judge_base_url: JudgeUrlOption = None,
    judge_model: JudgeModelOption = None,
    judge_api_key: JudgeKeyOption = None,
) -> None:
    """Score every draft with the checklist judge and cut each trajectory at its best draft."""
    from deepdraft.train.prune import PruneResult
    from deepdraft.train.prune import prune as run_prune
    from deepdraft.train.rewards import ChecklistScorer

    def show(result: PruneResult) -> None:
        if not result.ok:
            console.print(f"{result.query_id}: FAILED {result.failure}", markup=False, highlight=False)
            return
        scores = " ".join(f"{s:.2f}" for s in result.scores)
        console.print(
            f"{result.query_id}: drafts [{scores}] → stop at D{result.best}; cut {result.drafts_dropped} "
            f"draft(s), {result.steps_dropped} of {result.total_steps} steps",
            markup=False,
            highlight=False,
        )

    with _judge(judge_base_url, judge_model, judge_api_key) as judge:
        results = run_prune(folder, ChecklistScorer(judge), on_done=show)
    ok = [r for r in results if r.ok]
    if ok:
        cut = sum(r.steps_dropped for r in ok) / sum(r.total_steps for r in ok)
        console.print(f"{len(ok)} trajectories pruned; {cut:.0%} of their steps cut", markup=False)


@train_app.command("export")
def export_dataset(
    folder: Annotated[Path, typer.Argument(help="Pruned collection folder.")],
    out: Annotated[Path, typer.Option("--out", help="Dataset folder.")],
    ratios: Annotated[
        str | None,
        typer.Option(
            "--ratios", help="Sampling ratios, e.g. init=2,extend=2,terminate=3,search=0.5,write=0.5"
        ),
    ] = None,
    validation: Annotated[float, typer.Option("--validation", help="Share of queries held out.")] = 0.1,
    seed: Annotated[int, typer.Option("--seed")] = 0,
) -> None:
    """Write one chat sample per action (balanced, split by query) as JSONL and a `datasets` folder."""
    from deepdraft.train.dataset import export, parse_ratios

    stats = export(folder, out, ratios=parse_ratios(ratios), validation=validation, seed=seed)
    console.print(f"queries per split: {stats.trajectories}", markup=False, highlight=False)
    console.print(f"actions before balancing: {stats.actions}", markup=False, highlight=False)
    for split, counts in stats.samples.items():
        console.print(f"{split} samples: {counts}", markup=False, highlight=False)


@train_app.command()
def sft(
    data: Annotated[Path, typer.Option("--data", help="Dataset folder from `train export`.")],
    model: Annotated[Path, typer.Option("--model", help="Base model (a Hugging Face folder).")],
    out: Annotated[Path, typer.Option("--out", help="Output folder (rerun to resume).")],
    profile: ProfileName = "gpu-paper",
    lora_rank: Annotated[
        int | None, typer.Option("--lora-rank", help="Train a LoRA adapter of this rank.")
    ] = None,
    max_steps: MaxSteps = None,
) -> None:
    """Cold-start SFT (TRL SFTTrainer) on the exported action samples."""
    from deepdraft.train.profiles import get_profile
    from deepdraft.train.sft import run_sft

    final = run_sft(data, model, out, get_profile(profile), lora_rank=lora_rank, max_steps=max_steps)
    console.print(f"model written: {final}", markup=False, highlight=False)


@train_app.command()
def rl(
    stage: Annotated[str, typer.Option("--stage", help="atomic (single actions) or pipeline (whole runs).")],
    model: Annotated[Path, typer.Option("--model", help="Policy model (a Hugging Face folder).")],
    out: Annotated[Path, typer.Option("--out", help="Output folder (rerun to resume).")],
    data: Annotated[
        Path | None, typer.Option("--data", help="atomic: dataset folder from `train export`.")
    ] = None,
    queries: Annotated[
        Path | None, typer.Option("--queries", help="pipeline: query set with checklists.")
    ] = None,
    kb: KbOption = None,
    profile: ProfileName = "gpu-paper",
    judge_base_url: JudgeUrlOption = None,
    judge_model: JudgeModelOption = None,
    judge_api_key: JudgeKeyOption = None,
    no_judge: Annotated[bool, typer.Option("--no-judge", help="atomic: rule-based rewards only.")] = False,
    max_steps: MaxSteps = None,
    config: ConfigFile = None,
) -> None:
    """GRPO over single actions (atomic) or group-relative RL over whole WARP runs (pipeline)."""
    from deepdraft.run import wiring
    from deepdraft.train.profiles import get_profile
    from deepdraft.train.queries import load_queries
    from deepdraft.train.rewards import ChecklistScorer
    from deepdraft.train.rl import run_atomic, run_pipeline

    chosen = get_profile(profile)
    settings = load_settings(config)
    if stage == "atomic":
        if data is None:
            raise UserError("--stage atomic needs --data (a dataset folder from `deepdraft train export`)")
        retriever = wiring.resolve_kb(kb, settings)[0] if kb else None
        if no_judge:
            final = run_atomic(data, model, out, chosen, retriever=retriever, max_steps=max_steps)
        else:
            with _judge(judge_base_url, judge_model, judge_api_key) as judge:
                final = run_atomic(
                    data, model, out, chosen, judge=judge, retriever=retriever, max_steps=max_steps
                )
    elif stage == "pipeline":
        if queries is None:
            raise UserError("--stage pipeline needs --queries (a query set with checklists)")
        query_set = load_queries(queries, require_checklist=True)
        with _judge(judge_base_url, judge_model, judge_api_key) as judge:
            final = run_pipeline(
                query_set,
                model,
                out,
                chosen,
                ChecklistScorer(judge),
                settings,
                kb=kb,
                max_steps=max_steps,
                on_step=lambda row: console.print(row, markup=False, highlight=False),
            )
    else:
        raise UserError(f"--stage must be atomic or pipeline (got {stage!r})")
    console.print(f"model written: {final}", markup=False, highlight=False)


@train_app.command("tiny-model")
def tiny_model(
    data: Annotated[Path, typer.Option("--data", help="Dataset folder: its texts train the tokenizer.")],
    out: Annotated[Path, typer.Option("--out", help="Model folder to write.")],
) -> None:
    """A randomly initialised tiny model for smoke runs with `--profile cpu-smoke` (nothing downloaded)."""
    from deepdraft.train.dataset import load_samples
    from deepdraft.train.tiny import build_tiny_model

    rows = load_samples(data / "train.jsonl")
    build_tiny_model((m["content"] for row in rows for m in row["messages"]), out)
    console.print(f"model written: {out}", markup=False, highlight=False)


@train_app.command("base-model")
def base_model(
    model: Annotated[
        str, typer.Argument(help="Embedded model name (see `deepdraft models`) or a .gguf file.")
    ],
    out: Annotated[Path, typer.Option("--out", help="Model folder to write.")],
) -> None:
    """A GGUF model, dequantised, as a Hugging Face folder for `train sft` (nothing downloaded)."""
    from deepdraft.train.gguf_models import gguf_source, import_gguf

    import_gguf(gguf_source(model), out)
    console.print(f"model written: {out}", markup=False, highlight=False)


@train_app.command("export-gguf")
def export_gguf_file(
    model: Annotated[Path, typer.Option("--model", help="Trained model folder (e.g. sft/final).")],
    like: Annotated[
        str, typer.Option("--like", help="The GGUF it was trained from: embedded model name or file.")
    ],
    out: Annotated[Path, typer.Option("--out", help="GGUF file to write.")],
    kind: Annotated[
        str, typer.Option("--type", help="f16 (default), q8_0, f32, or source (the template's types).")
    ] = "f16",
) -> None:
    """Write a trained model as a GGUF shaped like the one it came from, for llama.cpp to serve."""
    from deepdraft.train.gguf_models import EXPORT_TYPES, export_gguf, gguf_source

    chosen = next((t for t in EXPORT_TYPES if t == kind), None)
    if chosen is None:
        raise UserError(f"--type must be one of {', '.join(EXPORT_TYPES)} (got {kind!r})")
    written = export_gguf(model, gguf_source(like), out, chosen)
    console.print(f"GGUF written: {written}", markup=False, highlight=False)
