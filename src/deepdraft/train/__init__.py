"""The paper's multi-stage agentic training pipeline (spec §5), built on the run journal.

    queries   query sets with weighted checklists (DeepResearch Bench criteria format); make-queries
    collect   a teacher runs WARP over the queries, forced to keep deepening (spec §2.10)
    prune     every intermediate draft is scored; each trajectory is cut at its best draft
    dataset   one chat sample per action, balanced by action type, split by query
    rewards   every reward of spec §5.4 and §5.5 as a plain function
    sft, rl   TRL SFT, GRPO over single actions, and group-relative RL over whole WARP runs
    hf_llm    a transformers model behind deepdraft's `LLM` port (a trained checkpoint does research)

Everything heavy (torch, transformers, trl, peft, datasets) is imported inside the functions that
need it, so `deepdraft train --help` and the data stages work without the `train` extra.
"""

from __future__ import annotations

import os

# Training libraries must never try to reach a model hub: there may be none, and a hang is worse.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
