"""`train export`: pruned trajectories → one chat sample per action, balanced, split by query.

Each sample is the exact prompt the policy saw (read from the journal, byte for byte) as the user
turn and the teacher's reply as the assistant turn — except at the cut, where the reply is the
terminate action (`nop`). Only valid actions are kept: a refused reply is not something to imitate
(the retry that followed it, with the reason in its prompt, is kept when it succeeded).

Action-level balanced sampling (spec §5.1): a trajectory holds one initial plan, a few deepening
steps, one stop, and dozens of searches and writes. Each action type has a ratio: an integer part
copies every sample that many times, the fraction keeps one more copy with that probability (a
seeded RNG, so an export is reproducible). Defaults up-weight planning and deciding and down-weight
search and write.

The train/validation split is by query, never by action: actions of one trajectory share their
context, so splitting them would leak the validation set into training.

Every sample also carries a `reference` (JSON text) with what the atomic-skill rewards need: the
teacher's reply, the evidence shown and the keys it cited, the passages its search retrieved, the
pruned decision label. Output: `train.jsonl`, `validation.jsonl`, `stats.json` and a
`datasets.DatasetDict` saved under `hf/`. Export is cheap and deterministic, so a rerun simply
rewrites all of it.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deepdraft.core.citations import cited_keys
from deepdraft.core.state import RunState
from deepdraft.errors import UserError
from deepdraft.run.runs import Runs
from deepdraft.settings import ResearchSettings
from deepdraft.train.collect import collection_queries, policy_steps
from deepdraft.train.prune import PruneResult, read_pruned
from deepdraft.train.rewards import passage_id

__all__ = ["DEFAULT_RATIOS", "ExportStats", "Sample", "export", "parse_ratios", "trajectory_samples"]

ACTION_TYPES = ("init", "search", "write", "extend", "terminate")
DEFAULT_RATIOS: dict[str, float] = {"init": 2.0, "extend": 2.0, "terminate": 3.0, "search": 0.5, "write": 0.5}
TERMINATE_REPLY = (
    "<thought>Every part of the report is written and the structure answers the request at the depth "
    "it needs; splitting a section further would add length, not value.</thought>"
    '<action>{"name": "nop"}</action>'
)
_TYPE_OF = {"init-plan": "init", "search": "search", "write": "write", "extend-plan": "extend"}


def not_the_models(action: str, research: ResearchSettings) -> bool:
    """Whether the run's replies to `action` were put together by deepdraft rather than said by the
    model (searches with `plan_searches`, writes with `write_by_passage`): no reply to learn from."""
    return (action == "search" and research.plan_searches) or (
        action == "write" and research.write_by_passage
    )


@dataclass(frozen=True)
class Sample:
    query_id: str
    run_id: str
    step: int
    action: str
    """init, search, write, extend or terminate."""
    prompt: str
    reply: str
    reference: dict[str, Any]

    def as_row(self) -> dict[str, Any]:
        return {
            "messages": [
                {"role": "user", "content": self.prompt},
                {"role": "assistant", "content": self.reply},
            ],
            "action": self.action,
            "query_id": self.query_id,
            "run_id": self.run_id,
            "step": self.step,
            "reference": json.dumps(self.reference, ensure_ascii=False),
        }


@dataclass(frozen=True)
class ExportStats:
    trajectories: dict[str, int]
    """Queries in each split."""
    actions: dict[str, int]
    """Valid actions before balancing, per action type."""
    samples: dict[str, dict[str, int]]
    """Samples after balancing, per split and action type."""

    def as_dict(self) -> dict[str, Any]:
        return {"trajectories": self.trajectories, "actions": self.actions, "samples": self.samples}


def parse_ratios(text: str | None) -> dict[str, float]:
    """`init=2,search=0.5,...` → ratios (unnamed types keep their defaults)."""
    ratios = dict(DEFAULT_RATIOS)
    if not text:
        return ratios
    for part in text.split(","):
        name, _, value = part.partition("=")
        name = name.strip()
        if name not in ACTION_TYPES:
            raise UserError(f"--ratios: unknown action type {name!r} (use {', '.join(ACTION_TYPES)})")
        try:
            ratios[name] = float(value)
        except ValueError:
            raise UserError(f"--ratios: {name}={value!r} is not a number") from None
        if ratios[name] < 0:
            raise UserError(f"--ratios: {name} must not be negative")
    return ratios


def trajectory_samples(runs: Runs, pruned: PruneResult, question: str) -> list[Sample]:
    """The samples of one pruned trajectory, in step order, before balancing."""
    research = runs.get(pruned.run_id).settings.research
    language = research.language
    samples: list[Sample] = []
    previous: RunState | None = None
    first_prompt, attempt = "", ("", "")
    for step in policy_steps(runs, pruned.run_id):  # a step the user directed teaches nothing
        if step.step > pruned.cut_step:
            break
        # A reply accepted after refusals is paired with the first, clean prompt of that action
        # (also byte-identical to a prompt the policy saw): the student should learn to answer
        # right at once, not to expect the reasons of failed tries in its prompt.
        if (step.action, step.target) != attempt:
            first_prompt, attempt = step.prompt, (step.action, step.target)
        prompt = first_prompt
        state = runs.state_after(pruned.run_id, step.step)
        before = previous
        previous = state
        common: dict[str, Any] = {"question": question, "language": language, "teacher_reply": step.reply}
        if step.step == pruned.cut_step:
            reference = {**common, "action": "terminate", "label": "terminate"}
            samples.append(
                Sample(
                    pruned.query_id, pruned.run_id, step.step, "terminate", prompt, TERMINATE_REPLY, reference
                )
            )
            continue
        if not step.valid or step.action not in _TYPE_OF or not_the_models(step.action, research):
            continue
        reference = {**common, "action": step.action}
        if step.action == "extend-plan":
            reference["label"] = "extend"
        elif step.action == "search":
            # What the teacher's search retrieved: the evidence of the state after it.
            reference["golden_passages"] = [passage_id(state.registry[k].text) for k in state.evidence]
            reference["budget"] = (
                research.outline_evidence if step.target == "outline" else research.node_evidence
            )
            reference["hits_per_keyword"] = research.hits_per_keyword
        elif step.action == "write" and before is not None:
            reference["evidence"] = {k: before.registry[k].text for k in before.evidence}
            text = (step.parsed or {}).get("text", "")
            reference["teacher_citations"] = sorted({k for group in cited_keys(str(text)) for k in group})
            node = before.outline.find(step.target) if before.outline else None
            reference["title"] = node.node.title if node else ""
        samples.append(
            Sample(
                pruned.query_id,
                pruned.run_id,
                step.step,
                _TYPE_OF[step.action],
                prompt,
                step.reply,
                reference,
            )
        )
    return samples


def balance(samples: Sequence[Sample], ratios: Mapping[str, float], rng: random.Random) -> list[Sample]:
    """Each sample repeated int(ratio) times, plus once more with probability frac(ratio)."""
    kept: list[Sample] = []
    for sample in samples:
        ratio = ratios.get(sample.action, 1.0)
        copies = int(ratio) + (rng.random() < ratio - int(ratio))
        kept.extend([sample] * copies)
    rng.shuffle(kept)
    return kept


def export(
    folder: Path,
    out: Path,
    *,
    ratios: Mapping[str, float] = DEFAULT_RATIOS,
    validation: float = 0.1,
    seed: int = 0,
) -> ExportStats:
    """Write the SFT/RL dataset of a pruned collection to `out` (see the module docstring)."""
    if not 0 <= validation < 1:
        raise UserError("--validation must be at least 0 and below 1")
    pruned = read_pruned(folder)
    if not pruned:
        raise UserError(f"{folder}: no pruned trajectories; run `deepdraft train prune` first")
    questions = {q.id: q.prompt for q in collection_queries(folder)}
    with Runs.open() as runs:
        by_query: dict[str, list[Sample]] = {}
        for result in pruned.values():
            by_query.setdefault(result.query_id, []).extend(
                trajectory_samples(runs, result, questions[result.query_id])
            )
    rng = random.Random(seed)
    query_ids = sorted(by_query)
    rng.shuffle(query_ids)
    # At least one validation query whenever a fraction was asked for and two queries exist.
    held_out = min(len(query_ids) - 1, max(1, round(validation * len(query_ids)))) if validation > 0 else 0
    splits = {"validation": query_ids[:held_out], "train": query_ids[held_out:]}
    out.mkdir(parents=True, exist_ok=True)
    actions = Counter(s.action for samples in by_query.values() for s in samples)
    counts: dict[str, dict[str, int]] = {}
    rows_by_split: dict[str, list[dict[str, Any]]] = {}
    for split, ids in splits.items():
        chosen = balance([s for q in ids for s in by_query[q]], ratios, rng)
        rows = [s.as_row() for s in chosen]
        rows_by_split[split] = rows
        counts[split] = {a: n for a, n in sorted(Counter(s.action for s in chosen).items())}
        with (out / f"{split}.jsonl").open("w", encoding="utf-8") as handle:
            for row in rows:
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    stats = ExportStats({k: len(v) for k, v in splits.items()}, dict(sorted(actions.items())), counts)
    (out / "stats.json").write_text(json.dumps(stats.as_dict(), indent=2) + "\n", encoding="utf-8")
    _save_hf(out / "hf", rows_by_split)
    return stats


def _save_hf(path: Path, rows: Mapping[str, list[dict[str, Any]]]) -> None:
    """The same rows as a `datasets.DatasetDict` on disk (what `train sft`/`rl` load)."""
    try:
        from datasets import Dataset, DatasetDict
    except ImportError as exc:  # pragma: no cover - the train extra brings it
        raise UserError('saving the dataset needs the "train" extra: pip install "deepdraft[train]"') from exc
    DatasetDict({split: Dataset.from_list(r) for split, r in rows.items() if r}).save_to_disk(str(path))


def load_samples(path: Path) -> list[dict[str, Any]]:
    """The rows of an exported split (JSONL)."""
    if not path.is_file():
        raise UserError(f"dataset split not found: {path} (run `deepdraft train export`)")
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
