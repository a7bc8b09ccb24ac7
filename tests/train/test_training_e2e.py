"""The whole pipeline on CPU: collect → prune → export → SFT → atomic RL → pipeline RL → research.

A tiny randomly initialised model (built here from the exported texts; nothing is downloaded)
goes through every stage with `--profile cpu-smoke`; each stage is stopped early and resumed from
its checkpoint. The numbers prove the plumbing, not quality.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deepdraft.eval.judge import Judge
from deepdraft.llm.scripted import FunctionLLM
from deepdraft.ports import ChatRequest
from deepdraft.run import runner, wiring
from deepdraft.settings import Settings
from deepdraft.train.collect import collect, collection_settings
from deepdraft.train.dataset import export, load_samples
from deepdraft.train.hf_llm import HFLocalLLM
from deepdraft.train.profiles import get_profile
from deepdraft.train.prune import prune
from deepdraft.train.queries import load_queries
from deepdraft.train.rewards import ChecklistScorer
from deepdraft.train.rl import run_atomic, run_pipeline
from deepdraft.train.sft import run_sft
from deepdraft.train.tiny import build_tiny_model
from tests.train.support import DATA, ForcedTeacher, scripted_judge, write_kb

pytestmark = pytest.mark.slow


def fixed_batch_loss(model_dir: Path, rows: list[dict[str, object]]) -> float:
    """Mean loss on the reply tokens of `rows` (the prompt is context, as in SFT)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(model_dir))
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    losses = []
    with torch.no_grad():
        for row in rows:
            messages = row["messages"]
            assert isinstance(messages, list)
            prompt = tokenizer.apply_chat_template(
                messages[:1], add_generation_prompt=True, tokenize=True, return_dict=True
            )["input_ids"]
            full = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"]
            labels = [-100] * len(prompt) + full[len(prompt) :]
            out = model(torch.tensor([full]), labels=torch.tensor([labels]))
            losses.append(float(out.loss))
    return sum(losses) / len(losses)


def same_weights(one: Path, other: Path) -> bool:
    """Whether two saved model folders hold exactly the same tensors."""
    import torch
    from safetensors.torch import load_file

    left, right = load_file(str(one / "model.safetensors")), load_file(str(other / "model.safetensors"))
    return left.keys() == right.keys() and all(torch.equal(left[name], right[name]) for name in left)


def test_every_stage_runs_resumes_and_the_result_does_research(tmp_path: Path) -> None:
    profile = get_profile("cpu-smoke")
    kb = write_kb(tmp_path / "kb")
    queries = load_queries(DATA / "criteria.jsonl", require_checklist=True)
    settings = collection_settings(Settings(), 2)
    settings = settings.model_copy(
        update={"research": settings.research.model_copy(update={"node_evidence": 3, "outline_evidence": 4})}
    )
    collect(
        queries,
        settings,
        tmp_path / "c",
        llm=FunctionLLM(ForcedTeacher(expansions=0, topic="history")),
        kb=str(kb),
        workers=2,
    )
    judge = Judge(FunctionLLM(scripted_judge(best_parts=5)))
    prune(tmp_path / "c", ChecklistScorer(judge))
    data = tmp_path / "data"
    export(tmp_path / "c", data, validation=0.34)
    rows = load_samples(data / "train.jsonl")
    base = build_tiny_model((m["content"] for row in rows for m in row["messages"]), tmp_path / "tiny")

    # SFT: stop after 4 steps, resume to 8; the loss on a fixed batch must fall by at least 15 %.
    batch = rows[:4]
    before = fixed_batch_loss(base, batch)
    run_sft(data, base, tmp_path / "sft", profile, max_steps=4)
    assert (tmp_path / "sft" / "checkpoint-4").is_dir()
    sft_model = run_sft(data, base, tmp_path / "sft", profile, max_steps=8)
    state = json.loads((tmp_path / "sft" / "checkpoint-8" / "trainer_state.json").read_text())
    assert state["global_step"] == 8
    after = fixed_batch_loss(sft_model, batch)
    assert after < 0.85 * before, (before, after)

    # Atomic-skill GRPO with the real reward functions (judge and retriever included), resumed.
    retriever = wiring.resolve_kb(str(kb), Settings())[0]
    run_atomic(data, sft_model, tmp_path / "atomic", profile, judge=judge, retriever=retriever, max_steps=1)
    atomic_model = run_atomic(
        data, sft_model, tmp_path / "atomic", profile, judge=judge, retriever=retriever, max_steps=2
    )
    state = json.loads((tmp_path / "atomic" / "checkpoint-2" / "trainer_state.json").read_text())
    steps = [entry for entry in state["log_history"] if "reward" in entry]
    assert state["global_step"] == 2 and [entry["step"] for entry in steps] == [1, 2]
    # No KL term (beta 0): a step whose every group scored alike has no gradient at all, and one
    # with a difference inside a group has one. The tiny model rarely gets a difference.
    for entry in steps:
        assert (entry["grad_norm"] > 0) == (entry["frac_reward_zero_std"] < 1), entry
    if all(entry["grad_norm"] == 0 for entry in steps):
        assert same_weights(sft_model, atomic_model)

    # Pipeline RL: every rollout is a real WARP run of the policy over the KB; 1 step, then resume to 2.
    runs_before = len(runner.open_journal().list_runs())
    run_pipeline(
        queries[:1],
        atomic_model,
        tmp_path / "pipeline",
        profile,
        ChecklistScorer(judge),
        Settings(),
        kb=str(kb),
        max_steps=1,
    )
    final = run_pipeline(
        queries[:1],
        atomic_model,
        tmp_path / "pipeline",
        profile,
        ChecklistScorer(judge),
        Settings(),
        kb=str(kb),
        max_steps=2,
    )
    log = [json.loads(line) for line in (tmp_path / "pipeline" / "log.jsonl").read_text().splitlines()]
    assert [row["step"] for row in log] == [1, 2]
    assert all(len(row["rewards"][0]) == profile.pipeline_rollouts for row in log)
    # A step learns exactly when some query's rollouts scored differently; otherwise the model stays
    # as it was (the tiny model's runs usually all fail to plan, so all score 0).
    signal = [any(len(set(group)) > 1 for group in row["rewards"]) for row in log]
    assert [row["loss"] != 0 for row in log] == signal, log
    assert same_weights(atomic_model, final) == (not any(signal))
    with runner.open_journal() as journal:
        rollouts = journal.list_runs()[: len(journal.list_runs()) - runs_before]
        assert len(rollouts) == 2 * profile.pipeline_rollouts
        assert all(journal.steps(run.id) for run in rollouts)  # the policy model really acted

    # The trained checkpoint answers a WARP prompt through deepdraft's LLM port: the whole prompt
    # goes in, the reply stops at the end-of-turn token or at the limit, and greedy decoding of the
    # saved folder gives the same reply every time it is loaded.
    llm = HFLocalLLM.load(final, max_new_tokens=32, temperature=0)
    prompt = rows[0]["messages"][0]["content"]
    result = llm.complete(ChatRequest.user(prompt))
    assert result.model == "final"
    assert result.usage.prompt_tokens > llm.count_tokens(prompt)  # the prompt inside the chat template
    assert 0 < result.usage.completion_tokens <= 32
    assert result.finish_reason == ("length" if result.usage.completion_tokens == 32 else "stop")
    again = HFLocalLLM.load(final, max_new_tokens=32, temperature=0).complete(ChatRequest.user(prompt))
    assert again.text == result.text and again.usage == result.usage
