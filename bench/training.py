"""Training that learns, measured: GRPO on SmolLM2 with the format-validity reward, and the stage table.

grpo
    The atomic-RL algorithm of `deepdraft.train.rl` — sample a group of replies per prompt through
    `HFLocalLLM`, score each, `policy_gradient_step` on the group-relative advantages (no KL term,
    one update per batch) — run on SmolLM2-135M-Instruct, loaded from the GGUF that `deepdraft setup
    --model smollm2-135m` installs (nothing downloaded here). The reward is
    `rewards.format_validity`: 1 for a reply that is the action asked for, 0.5 for a JSON object
    that is not, 0 otherwise. The prompts are real WARP prompts: the `train.jsonl` of a `deepdraft
    train export` folder (`--data`), or, without one, the prompts of a scripted teacher's runs over
    a five-document KB (the training e2e test's teacher; prompts only — the replies are not used).
    Each seed starts from the same base; per step it prints the mean reward, the step's wall time
    and the process's peak memory. The claim checked: over `--steps` (≤ 20) steps the mean reward
    of the last three steps exceeds that of the first three by `--target` (0.2) on average over the
    seeds.

table
    The learning table of issue 20, part 4, from runs already made (this bench starts none): one
    column per `deepdraft batch` output folder, named STAGE/CONSTRAIN (e.g. base/off, sft/on,
    rl/off), over the same questions. Rows: first-try acceptance of each action kind (an attempt
    at an action is accepted at first try when its first reply was valid), the share of runs that
    finished with every node written by the model, the mean of each rule-based reward component
    over the runs' actions, and the mean of each numeric proxy of the quality scorer (`--score`,
    `../shared/quality/score.py`) over the finished reports.

Usage:
    python bench/training.py grpo [--data DIR] [--seeds 0 1 2] [--steps 20] [--json]
    python bench/training.py table --column base/off=BATCH_DIR [--column sft/off=DIR ...] \\
        [--score score.py --questions dev_questions.jsonl --corpus corpus.jsonl]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import resource
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from statistics import fmean
from typing import Any

from deepdraft.core.citations import cited_keys
from deepdraft.core.outline import WRITTEN_FROM_EVIDENCE
from deepdraft.ports import ChatRequest, Message
from deepdraft.run import reports
from deepdraft.run.runs import Runs
from deepdraft.train.dataset import load_samples
from deepdraft.train.gguf_models import gguf_source, import_gguf
from deepdraft.train.hf_llm import GenerationRecorder, HFLocalLLM
from deepdraft.train.rewards import format_validity, planning_basic, reference_of, writing_basic
from deepdraft.train.rl import policy_gradient_step

ROOT = Path(__file__).resolve().parents[1]
ACTION_KINDS = ("search", "init-plan", "write", "extend-plan")
EDGE = 3  # steps averaged at each end of a training curve


# ---- grpo ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StepRow:
    seed: int
    step: int
    reward: float
    rewards: list[float]
    seconds: float
    peak_mib: float


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def scripted_prompts(folder: Path) -> Path:
    """A dataset folder of real WARP prompts from a scripted teacher's runs (see the module docstring)."""
    sys.path.insert(0, str(ROOT))  # the repository root, for tests.train.support
    from tests.train.support import DATA, ForcedTeacher, scripted_judge, write_kb

    from deepdraft.eval.judge import Judge
    from deepdraft.llm.scripted import FunctionLLM
    from deepdraft.settings import Settings
    from deepdraft.train.collect import collect, collection_settings
    from deepdraft.train.dataset import export
    from deepdraft.train.prune import prune
    from deepdraft.train.queries import load_queries
    from deepdraft.train.rewards import ChecklistScorer

    kb = write_kb(folder / "kb")
    queries = load_queries(DATA / "criteria.jsonl", require_checklist=True)
    settings = collection_settings(Settings(), 2)
    teacher = FunctionLLM(ForcedTeacher(expansions=0, topic="history"))
    collect(queries, settings, folder / "collection", llm=teacher, kb=str(kb), workers=1)
    prune(folder / "collection", ChecklistScorer(Judge(FunctionLLM(scripted_judge(best_parts=5)))))
    export(folder / "collection", folder / "data", validation=0.0)
    return folder / "data"


def prompt_rows(data: Path, actions: Sequence[str]) -> list[dict[str, Any]]:
    """One row per distinct prompt of the wanted action kinds."""
    rows, seen = [], set()
    for row in load_samples(data / "train.jsonl"):
        prompt = row["messages"][0]["content"]
        if reference_of(row)["action"] in actions and prompt not in seen:
            seen.add(prompt)
            rows.append(row)
    if not rows:
        raise SystemExit(f"no {' or '.join(actions)} prompts in {data / 'train.jsonl'}")
    return rows


def grpo(base: Path, rows: list[dict[str, Any]], seed: int, args: argparse.Namespace) -> Iterator[StepRow]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(seed)
    order = random.Random(seed).sample(rows, len(rows))
    model = AutoModelForCausalLM.from_pretrained(str(base))
    tokenizer = AutoTokenizer.from_pretrained(str(base))
    recorder = GenerationRecorder()
    policy = HFLocalLLM(
        model, tokenizer, max_new_tokens=args.max_new_tokens, temperature=1.0, top_p=1.0, recorder=recorder
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    for step in range(args.steps):
        started = time.monotonic()
        groups, scores = [], []
        for i in range(args.prompts):
            row = order[(step * args.prompts + i) % len(order)]
            request = ChatRequest(
                messages=tuple(Message(m["role"], m["content"]) for m in row["messages"][:-1])
            )
            action = reference_of(row)["action"]
            rewards, runs = [], []
            for _ in range(args.group):
                rewards.append(format_validity(policy.complete(request).text, action))
                runs.append(recorder.take())
            groups.append((rewards, runs))
            scores += rewards
        policy_gradient_step(model, optimizer, groups)
        yield StepRow(seed, step + 1, fmean(scores), scores, time.monotonic() - started, peak_mib())


def run_grpo(args: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix="deepdraft-bench-training-"))
    os.environ.setdefault("DEEPDRAFT_HOME", str(work / "home"))  # scripted runs stay out of the workspace
    data = args.data or scripted_prompts(work)
    rows = prompt_rows(data, args.actions)
    base = args.base or work / "base"
    if not (base / "config.json").is_file():
        started = time.monotonic()
        import_gguf(gguf_source(args.model), base)
        print(f"base model: {args.model} → {base} in {time.monotonic() - started:.0f} s", flush=True)
    print(
        f"{len(rows)} prompts ({', '.join(args.actions)}); {args.steps} steps × {args.prompts} prompt(s)"
        f" × {args.group} replies, lr {args.lr}, ≤ {args.max_new_tokens} new tokens;"
        f" load {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    curves: dict[int, list[StepRow]] = {}
    for seed in args.seeds:
        curves[seed] = []
        for row in grpo(base, rows, seed, args):
            curves[seed].append(row)
            print(
                json.dumps(asdict(row))
                if args.json
                else (
                    f"seed {seed} step {row.step:2d}  reward {row.reward:.3f}  {row.seconds:6.1f} s  "
                    f"peak {row.peak_mib:,.0f} MiB  load {os.getloadavg()[0]:.1f}"
                ),
                flush=True,
            )
    gains = []
    for seed, rows_of_seed in curves.items():
        first = fmean(r.reward for r in rows_of_seed[:EDGE])
        last = fmean(r.reward for r in rows_of_seed[-EDGE:])
        gains.append(last - first)
        print(
            f"seed {seed}: first {EDGE} steps {first:.3f}, last {EDGE} steps {last:.3f},"
            f" gain {last - first:+.3f}"
        )
    mean_gain = fmean(gains)
    verdict = "reached" if mean_gain >= args.target else "NOT reached"
    print(f"mean gain over {len(gains)} seed(s): {mean_gain:+.3f} (target +{args.target}: {verdict})")


# ---- table --------------------------------------------------------------------------------------------


def batch_runs(folder: Path) -> dict[str, str]:
    """Question id → run id, from a `deepdraft batch` output folder."""
    state = folder / "batch.jsonl"
    if not state.is_file():
        raise SystemExit(f"{folder} is not a batch output folder (no batch.jsonl)")
    lines = [json.loads(line) for line in state.read_text(encoding="utf-8").splitlines() if line.strip()]
    return {line["id"]: line["run_id"] for line in lines if line.get("run_id")}


def first_try(steps: Sequence[Any]) -> dict[str, list[bool]]:
    """Per action kind, whether each attempt's first reply was valid (retries on one target: one attempt)."""
    outcomes: dict[str, list[bool]] = defaultdict(list)
    attempt: tuple[str, str] | None = None
    for step in steps:
        if (step.action, step.target) != attempt:
            attempt = (step.action, step.target)
            outcomes[step.action].append(bool(step.valid))
    return outcomes


def components(step: Any, question: str) -> dict[str, float]:
    """The rule-based reward components of one journaled action (judge-free)."""
    kind = "terminate" if step.action == "nop" else step.action
    if kind not in (*ACTION_KINDS, "terminate"):
        return {}
    scores = {"format_validity": format_validity(step.reply, kind)}
    if kind in ("init-plan", "extend-plan"):
        scores["planning_basic"] = planning_basic(step.reply, question)
    if kind == "write" and step.parsed is not None:
        text = str(step.parsed.get("text", step.reply))
        scores["writing_basic"] = writing_basic(text, question)
        keys = {key for group in cited_keys(text) for key in group}
        # A cited key that was not in the evidence the prompt showed is invented.
        shown = set(re.findall(r"\btextid\d+\b", step.prompt.lower()))
        scores["citation_validity"] = float(keys <= shown)
    return scores


def proxies(run_ids: dict[str, str], args: argparse.Namespace) -> dict[str, list[float]]:
    """The quality scorer's numeric fields over the finished reports of one column."""
    values: dict[str, list[float]] = defaultdict(list)
    if not args.score:
        return values
    with tempfile.TemporaryDirectory() as folder:
        pairs = []
        for qid, run_id in run_ids.items():
            try:
                content = reports.report(run_id, "json").content
            except Exception:  # an unfinished run has no report: it counts in the other rows
                continue
            path = Path(folder) / f"{qid}.json"
            path.write_bytes(content)
            pairs.append(f"{qid}={path}")
        if not pairs:
            return values
        result = subprocess.run(
            [sys.executable, str(args.score), str(args.questions), str(args.corpus), *pairs],
            capture_output=True,
            text=True,
            check=True,
        )
    for line in result.stdout.splitlines():
        for name, value in json.loads(line).items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                values[name].append(float(value))
    return values


def column(folder: Path, args: argparse.Namespace) -> dict[str, float | None]:
    run_ids = batch_runs(folder)
    accepted: dict[str, list[bool]] = defaultdict(list)
    rewards: dict[str, list[float]] = defaultdict(list)
    complete = []
    with Runs.open() as runs:
        for run_id in run_ids.values():
            if not runs.exists(run_id):
                continue
            info = runs.get(run_id)
            steps = runs.steps(run_id)
            for kind, outcomes in first_try(steps).items():
                accepted[kind] += outcomes
            for step in steps:
                for name, value in components(step, info.question).items():
                    rewards[name].append(value)
            outline = runs.outline(run_id)
            complete.append(
                info.recorded_status == "finished"
                and outline is not None
                and all(
                    loc.node.written and not (loc.node.note or "").startswith(WRITTEN_FROM_EVIDENCE)
                    for loc in outline.walk()
                )
            )
    row: dict[str, float | None] = {"runs": float(len(complete))}
    for kind in ACTION_KINDS:
        row[f"first-try {kind}"] = fmean(accepted[kind]) if accepted[kind] else None
    row["every node written"] = fmean(complete) if complete else None
    for name, values in sorted(rewards.items()):
        row[f"reward {name}"] = fmean(values)
    for name, values in sorted(proxies(run_ids, args).items()):
        row[f"proxy {name}"] = fmean(values)
    return row


def run_table(args: argparse.Namespace) -> None:
    columns: dict[str, dict[str, float | None]] = {}
    for spec in args.column:
        label, _, folder = spec.partition("=")
        if not folder:
            raise SystemExit(f"--column wants STAGE/CONSTRAIN=BATCH_DIR, not {spec!r}")
        columns[label] = column(Path(folder), args)
    if args.json:
        print(json.dumps(columns, indent=2))
        return
    names = list(dict.fromkeys(name for values in columns.values() for name in values))
    width = max(len(n) for n in names) + 2
    print("".ljust(width) + "".join(label.rjust(12) for label in columns))
    for name in names:
        cells = [columns[label].get(name) for label in columns]
        print(name.ljust(width) + "".join(("–" if c is None else f"{c:.3f}").rjust(12) for c in cells))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    g = commands.add_parser("grpo", help="GRPO on SmolLM2 with the format-validity reward")
    g.add_argument("--data", type=Path, help="a `train export` folder (default: scripted-teacher prompts)")
    g.add_argument("--model", default="smollm2-135m", help="embedded model name or .gguf file")
    g.add_argument("--base", type=Path, help="Hugging Face folder of the base model (made once if missing)")
    g.add_argument("--actions", nargs="+", default=["search", "init-plan"], help="action kinds to train on")
    g.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    g.add_argument("--steps", type=int, default=20)
    g.add_argument("--prompts", type=int, default=1, help="prompts per step")
    g.add_argument("--group", type=int, default=4, help="replies sampled per prompt")
    g.add_argument("--lr", type=float, default=2e-5)
    g.add_argument("--max-new-tokens", type=int, default=48)
    g.add_argument("--target", type=float, default=0.2)
    g.add_argument("--json", action="store_true", help="one JSON line per step")
    t = commands.add_parser("table", help="the base / SFT / RL table from batches already run")
    t.add_argument("--column", action="append", required=True, help="STAGE/CONSTRAIN=BATCH_DIR")
    t.add_argument("--score", type=Path, help="the quality scorer (../shared/quality/score.py)")
    t.add_argument("--questions", type=Path, help="its questions file (dev_questions.jsonl)")
    t.add_argument("--corpus", type=Path, help="the demo corpus JSONL the runs searched")
    t.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.command == "grpo":
        run_grpo(args)
    else:
        if args.score and not (args.questions and args.corpus):
            parser.error("--score needs --questions and --corpus")
        run_table(args)


if __name__ == "__main__":
    main()
