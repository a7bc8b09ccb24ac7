"""Hyper-parameter profiles for the three training stages.

`gpu-paper` is spec §5.6 (Table 7 of the paper, run there on 8× A100): SFT lr 1.5e-5, batch 32,
4 epochs; atomic-skill RL lr 2.5e-6, batch 8, 8 rollouts, 200 steps; pipeline RL lr 1e-6, batch 8,
4 rollouts, 50 steps. Batch sizes are *global*: the per-device batch is derived from the number of
processes by gradient accumulation (see `per_device`).

`cpu-smoke` proves that each stage runs end to end on a laptop CPU with a tiny model: a few steps,
short sequences, and a learning rate high enough that a randomly initialised model visibly learns.
Its numbers mean nothing for quality.
"""

from __future__ import annotations

from dataclasses import dataclass

from deepdraft.errors import UserError

__all__ = ["PROFILES", "Profile", "get_profile", "per_device"]


@dataclass(frozen=True)
class Profile:
    name: str
    # SFT
    sft_lr: float
    sft_batch: int
    sft_epochs: float
    sft_max_steps: int  # -1: run the epochs
    max_length: int
    # atomic-skill RL (GRPO over single actions)
    atomic_lr: float
    atomic_batch: int
    atomic_rollouts: int
    atomic_steps: int
    # pipeline RL (whole WARP runs)
    pipeline_lr: float
    pipeline_batch: int
    """Queries per step."""
    pipeline_rollouts: int
    pipeline_steps: int
    pipeline_max_actions: int
    """Step budget of one rollout's WARP run."""
    max_new_tokens: int
    save_steps: int
    bf16: bool


PROFILES: dict[str, Profile] = {
    "gpu-paper": Profile(
        name="gpu-paper",
        sft_lr=1.5e-5,
        sft_batch=32,
        sft_epochs=4,
        sft_max_steps=-1,
        max_length=16384,
        atomic_lr=2.5e-6,
        atomic_batch=8,
        atomic_rollouts=8,
        atomic_steps=200,
        pipeline_lr=1e-6,
        pipeline_batch=8,
        pipeline_rollouts=4,
        pipeline_steps=50,
        pipeline_max_actions=140,
        max_new_tokens=2048,
        save_steps=50,
        bf16=True,
    ),
    "cpu-smoke": Profile(
        name="cpu-smoke",
        sft_lr=1e-2,
        sft_batch=4,
        sft_epochs=1,
        sft_max_steps=12,
        max_length=2048,
        atomic_lr=1e-4,
        atomic_batch=2,
        atomic_rollouts=2,
        atomic_steps=2,
        pipeline_lr=1e-4,
        pipeline_batch=1,
        pipeline_rollouts=2,
        pipeline_steps=2,
        pipeline_max_actions=6,
        max_new_tokens=48,
        save_steps=1,
        bf16=False,
    ),
}


def get_profile(name: str) -> Profile:
    try:
        return PROFILES[name]
    except KeyError:
        raise UserError(f"unknown profile {name!r} (choose {', '.join(PROFILES)})") from None


def per_device(global_batch: int, processes: int) -> tuple[int, int]:
    """(per-device batch, gradient accumulation steps) that make `global_batch` over `processes`.

    Accumulation is preferred over large per-device batches: WARP prompts are long (up to 16k
    tokens), so one or two sequences per device is what fits in memory.
    """
    if global_batch < 1 or processes < 1:
        raise UserError("batch sizes and process counts must be at least 1")
    per_process = max(1, global_batch // processes)
    device_batch = min(per_process, 2)
    return device_batch, max(1, per_process // device_batch)
