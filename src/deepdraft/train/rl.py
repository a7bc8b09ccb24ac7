"""`train rl`: the two reinforcement-learning stages of spec §5.3.

**Atomic-skill RL** (`run_atomic`): TRL's `GRPOTrainer` over single actions. Each prompt is one
action's exact context from a teacher trajectory; the policy samples `rollouts` replies, each is
scored by `rewards.AtomicReward` (the ability-specific rewards of spec §5.4, teacher as reference),
and rewards are normalised within the group. No KL term (beta = 0), as in current GRPO practice.

**Pipeline RL** (`run_pipeline`): here one rollout is a *whole WARP run* of the policy model from a
bare query, and its reward is the report-level checklist score. TRL's GRPOTrainer cannot express
that cleanly: its rollout is one prompt → one completion (or one growing multi-turn conversation
with tools), while a WARP run is dozens of independent calls, each with a fresh prompt built from
the state, whose replies change what later prompts contain. So this stage is a small explicit
group-relative policy-gradient loop with transformers + torch:

    for each query of the step: run `rollouts` WARP runs with the current model (sampling on),
        recording every (prompt ids, completion ids) it generated; score each report;
        advantage of a run = (reward − group mean) / (group std + ε)
    loss = − mean over all generated actions of  advantage(run) · mean log-prob of its tokens
    one AdamW step (gradient clipped at 1.0)

Every action of a run shares the run's advantage — the reward is only known for the whole report.
With one update per batch of rollouts the ratio π/π_old is 1, so PPO-style clipping would be a
no-op and is left out. A run that fails (e.g. no valid outline) is a real outcome with reward 0.

Both stages resume from their last checkpoint: GRPO through `resume_from_checkpoint`, the pipeline
loop from `checkpoint-N` (model, optimizer and step) under its output folder; `log.jsonl` keeps
each step's rewards and loss.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from statistics import fmean, pstdev
from typing import Any

from deepdraft.errors import DeepdraftError, UserError
from deepdraft.eval.judge import Judge
from deepdraft.ports import Retriever
from deepdraft.run import runner
from deepdraft.run.runs import run_state
from deepdraft.settings import Settings
from deepdraft.train.collect import draft_markdown
from deepdraft.train.dataset import load_samples
from deepdraft.train.hf_llm import Generation, GenerationRecorder, HFLocalLLM
from deepdraft.train.profiles import Profile
from deepdraft.train.queries import Query
from deepdraft.train.rewards import AtomicReward, ReportScorer
from deepdraft.train.sft import last_checkpoint, save_final

__all__ = ["group_advantages", "policy_gradient_step", "run_atomic", "run_pipeline"]


# ---- atomic-skill RL ----------------------------------------------------------------------------------


def atomic_reward_function(reward: AtomicReward) -> Callable[..., list[float | None]]:
    """`reward` in the shape TRL calls reward functions: completions plus dataset columns."""

    def warp_atomic_reward(completions: list[Any], reference: list[str], **_: Any) -> list[float | None]:
        scores: list[float | None] = []
        for completion, ref in zip(completions, reference, strict=True):
            text = completion[-1]["content"] if isinstance(completion, list) else str(completion)
            tag = "train/atomic/" + hashlib.sha1((ref + "\0" + text).encode("utf-8")).hexdigest()[:16]
            scores.append(reward(text, json.loads(ref), tag=tag))
        return scores

    return warp_atomic_reward


def run_atomic(
    dataset: Path,
    model: Path,
    output: Path,
    profile: Profile,
    *,
    judge: Judge | None = None,
    retriever: Retriever | None = None,
    split: str = "train",
    max_steps: int | None = None,
) -> Path:
    """GRPO over the single actions of `dataset/<split>.jsonl`; returns the final model folder."""
    if not (model / "config.json").is_file():
        raise UserError(f"{model} is not a Hugging Face model folder (no config.json)")
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer  # type: ignore[attr-defined]

    rows = load_samples(dataset / f"{split}.jsonl")
    train = Dataset.from_list(
        [
            {"prompt": row["messages"][:-1], "reference": row["reference"], "action": row["action"]}
            for row in rows
        ]
    )
    config = GRPOConfig(
        output_dir=str(output),
        learning_rate=profile.atomic_lr,
        # One device micro-batch is one prompt's group of rollouts; the paper's batch counts prompts.
        per_device_train_batch_size=profile.atomic_rollouts,
        gradient_accumulation_steps=profile.atomic_batch,
        num_generations=profile.atomic_rollouts,
        max_completion_length=profile.max_new_tokens,
        max_steps=max_steps if max_steps is not None else profile.atomic_steps,
        beta=0.0,
        temperature=1.0,
        save_strategy="steps",
        save_steps=profile.save_steps,
        logging_steps=1,
        bf16=profile.bf16,
        use_cpu=not profile.bf16,
        report_to=[],
        seed=0,
        dataloader_num_workers=0,
    )
    tokenizer = AutoTokenizer.from_pretrained(str(model))
    trainer = GRPOTrainer(
        model=AutoModelForCausalLM.from_pretrained(str(model)),
        reward_funcs=atomic_reward_function(AtomicReward(judge, retriever)),
        args=config,
        train_dataset=train,
        processing_class=tokenizer,
    )
    trainer.train(resume_from_checkpoint=last_checkpoint(output))
    return save_final(trainer.model, tokenizer, output / "final")


# ---- pipeline RL ------------------------------------------------------------------------------------


def group_advantages(rewards: Sequence[float], eps: float = 1e-4) -> list[float]:
    """(r − mean) / (std + eps) within one query's group; all equal → all 0 (nothing to learn)."""
    if max(rewards) == min(rewards):
        # Exactly 0, not the rounding error of the mean (three 0.7s average to 0.7000000000000001):
        # Adam would scale that ~1e-12 signal up to a full step in an arbitrary direction.
        return [0.0] * len(rewards)
    mean, spread = fmean(rewards), pstdev(rewards)
    return [(r - mean) / (spread + eps) for r in rewards]


def rollout_settings(base: Settings, profile: Profile) -> Settings:
    """A tiny-budget, sampling WARP run: no cache (each rollout is a fresh sample), no finishing passes."""
    return base.model_copy(
        update={
            "research": base.research.model_copy(
                update={"max_steps": profile.pipeline_max_actions, "seed": None, "force_expansions": None}
            ),
            "llm": base.llm.model_copy(update={"cache": False, "max_tokens": profile.max_new_tokens}),
            "output": base.output.model_copy(update={"verify": False, "synthesis": False}),
        }
    )


def run_pipeline(
    queries: Sequence[Query],
    model: Path,
    output: Path,
    profile: Profile,
    scorer: ReportScorer,
    settings: Settings,
    *,
    kb: str | None = None,
    retriever: Retriever | None = None,
    max_steps: int | None = None,
    on_step: Callable[[dict[str, Any]], None] = lambda row: None,
) -> Path:
    """Group-relative policy gradient over whole WARP runs (see the module docstring)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not queries:
        raise UserError("pipeline RL needs at least one query")
    if any(q.checklist is None for q in queries):
        raise UserError(
            "every pipeline-RL query needs a checklist (`deepdraft train make-queries --checklists`)"
        )
    resume = last_checkpoint(output)
    source = Path(resume) if resume else model
    if not (source / "config.json").is_file():
        raise UserError(f"{source} is not a Hugging Face model folder (no config.json)")
    policy = AutoModelForCausalLM.from_pretrained(str(source))
    tokenizer = AutoTokenizer.from_pretrained(str(source))
    optimizer = torch.optim.AdamW(policy.parameters(), lr=profile.pipeline_lr)
    start = 0
    if resume:
        saved = torch.load(Path(resume) / "trainer_state.pt", weights_only=True)
        optimizer.load_state_dict(saved["optimizer"])
        start = int(saved["step"])
    total = max_steps if max_steps is not None else profile.pipeline_steps
    rollout = rollout_settings(settings, profile)
    output.mkdir(parents=True, exist_ok=True)
    for step in range(start, total):
        batch = [
            queries[(step * profile.pipeline_batch + i) % len(queries)] for i in range(profile.pipeline_batch)
        ]
        groups: list[tuple[list[float], list[list[Generation]]]] = []
        for query in batch:
            rewards, generations = [], []
            for _ in range(profile.pipeline_rollouts):
                reward, generated = _rollout(
                    policy, tokenizer, query, rollout, profile, scorer, kb, retriever
                )
                rewards.append(reward)
                generations.append(generated)
            groups.append((rewards, generations))
        loss = policy_gradient_step(policy, optimizer, groups)
        row = {"step": step + 1, "rewards": [g[0] for g in groups], "loss": loss}
        with (output / "log.jsonl").open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(row) + "\n")
        _save_checkpoint(policy, tokenizer, optimizer, output / f"checkpoint-{step + 1}", step + 1)
        on_step(row)
    return save_final(policy, tokenizer, output / "final")


def _rollout(
    policy: Any,
    tokenizer: Any,
    query: Query,
    settings: Settings,
    profile: Profile,
    scorer: ReportScorer,
    kb: str | None,
    retriever: Retriever | None,
) -> tuple[float, list[Generation]]:
    """One whole WARP run of the policy; its report's score and every generation it made."""
    recorder = GenerationRecorder()
    llm = HFLocalLLM(
        policy,
        tokenizer,
        name="policy",
        max_new_tokens=profile.max_new_tokens,
        temperature=1.0,
        recorder=recorder,
    )
    policy.eval()
    try:
        report = runner.start(query.prompt, settings, kb=kb, llm=llm, retriever=retriever)
        state = run_state(report.run_id)
        score = scorer.score(query, draft_markdown(state)) if state is not None else None
    except DeepdraftError:
        score = None  # the run could not finish (e.g. no valid outline): a real outcome, reward 0
    return (score or 0.0), recorder.take()


def policy_gradient_step(
    policy: Any, optimizer: Any, groups: Sequence[tuple[Sequence[float], Sequence[Sequence[Generation]]]]
) -> float:
    """One group-relative update: each group is (the rewards of its runs, each run's generations).

    Every generation of a run is weighted by its run's advantage within the group; returns the loss.
    """
    import torch

    weighted: list[tuple[float, Generation]] = []
    for rewards, generations in groups:
        for advantage, run in zip(group_advantages(rewards), generations, strict=True):
            weighted += [(advantage, g) for g in run if g.completion_ids]
    policy.train()
    optimizer.zero_grad()
    if not weighted or all(a == 0 for a, _ in weighted):
        return 0.0  # every run of every group scored the same: no signal this step
    total = 0.0
    for advantage, generated in weighted:
        ids = torch.tensor([generated.prompt_ids + generated.completion_ids], device=policy.device)
        logits = policy(ids).logits[0, len(generated.prompt_ids) - 1 : -1]
        targets = ids[0, len(generated.prompt_ids) :]
        logprob = torch.log_softmax(logits.float(), dim=-1).gather(1, targets[:, None]).mean()
        # Backward per action keeps memory at one sequence; the sum of the parts is the batch loss.
        loss = -advantage * logprob / len(weighted)
        loss.backward()  # type: ignore[no-untyped-call]
        total += loss.item()
    torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
    optimizer.step()
    return total if math.isfinite(total) else float("nan")


def _save_checkpoint(policy: Any, tokenizer: Any, optimizer: Any, folder: Path, step: int) -> None:
    import torch

    partial = folder.with_name(folder.name + ".partial")
    policy.save_pretrained(str(partial))
    tokenizer.save_pretrained(str(partial))
    torch.save({"optimizer": optimizer.state_dict(), "step": step}, partial / "trainer_state.pt")
    partial.replace(folder)  # a checkpoint folder exists only once it is complete
