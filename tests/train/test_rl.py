"""The group-relative policy gradient of pipeline RL, piece by piece, on a tiny model.

`group_advantages` against values worked out by hand; one `policy_gradient_step` on a fixed batch
moves the log-probabilities the way the rewards say; and the two together, sampling through the
same `HFLocalLLM` the rollouts use, learn a rule reward within a few steps for three seeds.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from pathlib import Path
from statistics import fmean
from typing import Any

import pytest

from deepdraft.ports import ChatRequest
from deepdraft.train.hf_llm import Generation, GenerationRecorder, HFLocalLLM
from deepdraft.train.rl import group_advantages, policy_gradient_step
from deepdraft.train.tiny import build_tiny_model

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

EPS = 1e-4  # group_advantages' default


def test_advantages_of_two_runs_are_plus_and_minus_one() -> None:
    # mean 0.5, population std 0.5
    assert group_advantages([1.0, 0.0]) == pytest.approx([0.5 / (0.5 + EPS), -0.5 / (0.5 + EPS)])


def test_advantages_centre_and_scale_by_the_group() -> None:
    # [0, 0, 3]: mean 1, population std sqrt((1 + 1 + 4) / 3) = sqrt(2)
    spread = math.sqrt(2) + EPS
    assert group_advantages([0.0, 0.0, 3.0]) == pytest.approx([-1 / spread, -1 / spread, 2 / spread])
    # [0.2, 0.4, 0.6, 0.8]: mean 0.5, population std sqrt(0.05)
    spread = math.sqrt(0.05) + EPS
    expected = [-0.3 / spread, -0.1 / spread, 0.1 / spread, 0.3 / spread]
    assert group_advantages([0.2, 0.4, 0.6, 0.8]) == pytest.approx(expected)


def test_a_group_whose_runs_all_score_the_same_teaches_nothing() -> None:
    assert group_advantages([0.7, 0.7, 0.7]) == [0.0, 0.0, 0.0]
    assert group_advantages([0.0, 0.0]) == [0.0, 0.0]


def test_a_single_run_has_no_one_to_be_compared_with() -> None:
    assert group_advantages([0.9]) == [0.0]


# ---- the update on a tiny model --------------------------------------------------------------------------

WORDS = ["alpha", "beta", "gamma", "delta", "report", "section"]


def tokenizer_texts(seed: int = 0) -> list[str]:
    """Words and numbers, so the tokenizer has whole tokens for both."""
    rng = random.Random(seed)
    return [" ".join(rng.choice([*WORDS, str(rng.randint(0, 999))]) for _ in range(40)) for _ in range(50)]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(
        tokenizer_texts(), tmp_path_factory.mktemp("tiny"), vocab_size=300, hidden=32, seed=0
    )


def load(folder: Path) -> tuple[Any, Any]:
    model = transformers.AutoModelForCausalLM.from_pretrained(str(folder))
    return model, transformers.AutoTokenizer.from_pretrained(str(folder))


def generation(tokenizer: Any, prompt: str, reply: str) -> Generation:
    prompt_ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=True, return_dict=True
    )["input_ids"]
    reply_ids = tokenizer(reply, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return Generation(list(prompt_ids), list(reply_ids))


def mean_logprob(model: Any, generated: Generation) -> float:
    ids = torch.tensor([generated.prompt_ids + generated.completion_ids])
    with torch.no_grad():
        logits = model(ids).logits[0, len(generated.prompt_ids) - 1 : -1]
    targets = ids[0, len(generated.prompt_ids) :]
    return float(torch.log_softmax(logits, dim=-1).gather(1, targets[:, None]).mean())


def weights(model: Any) -> dict[str, Any]:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def test_one_step_raises_the_rewarded_reply_and_lowers_the_penalised_one(tiny: Path) -> None:
    torch.manual_seed(0)
    model, tokenizer = load(tiny)
    rewarded = generation(tokenizer, "Name a section.", "alpha section report")
    penalised = generation(tokenizer, "Name a section.", "delta 123 gamma")
    other_rewarded = generation(tokenizer, "Name a number.", "417")
    other_penalised = generation(tokenizer, "Name a number.", "beta beta")
    replies = [rewarded, penalised, other_rewarded, other_penalised]
    before = [mean_logprob(model, g) for g in replies]
    start = weights(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)

    # Two groups (one per prompt) of two runs each; a run may hold several generations.
    loss = policy_gradient_step(
        model,
        optimizer,
        [([1.0, 0.0], [[rewarded], [penalised]]), ([0.0, 1.0], [[other_penalised], [other_rewarded]])],
    )

    after = [mean_logprob(model, g) for g in replies]
    assert after[0] > before[0] and after[2] > before[2], (before, after)
    assert after[1] < before[1] and after[3] < before[3], (before, after)
    assert math.isfinite(loss)
    changed = [name for name, value in weights(model).items() if not torch.equal(value, start[name])]
    assert changed, "no weight moved"


def test_a_step_without_signal_leaves_the_weights_alone(tiny: Path) -> None:
    model, tokenizer = load(tiny)
    start = weights(model)
    replies = [generation(tokenizer, "Name a section.", text) for text in ("alpha", "beta", "gamma")]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)  # weight decay would move them

    # The mean of three 0.7s is 0.7000000000000001: rounding must not pass for a difference, since
    # Adam scales even a 1e-12 gradient up to a full step in a random direction.
    loss = policy_gradient_step(model, optimizer, [([0.7, 0.7, 0.7], [[r] for r in replies])])

    assert loss == 0.0
    assert all(torch.equal(value, start[name]) for name, value in weights(model).items())


# ---- learning a rule reward -------------------------------------------------------------------------------


def digit_share(reply: str) -> float:
    """The rule reward: how much of the reply (ignoring spaces) is digits."""
    characters = [c for c in reply if not c.isspace()]
    return sum(c.isdigit() for c in characters) / len(characters) if characters else 0.0


def grpo_means(folder: Path, seed: int, *, steps: int, group: int) -> Iterator[float]:
    """GRPO as the pipeline stage does it, on one prompt: sample a group, score, one update; repeat."""
    torch.manual_seed(seed)
    model, tokenizer = load(folder)
    recorder = GenerationRecorder()
    policy = HFLocalLLM(model, tokenizer, max_new_tokens=8, temperature=1.0, top_p=1.0, recorder=recorder)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-2)
    for _ in range(steps):
        rewards, runs = [], []
        for _ in range(group):
            rewards.append(digit_share(policy.complete(ChatRequest.user("Write something.")).text))
            runs.append(recorder.take())
        yield fmean(rewards)
        policy_gradient_step(model, optimizer, [(rewards, runs)])


@pytest.mark.slow  # seconds on an idle machine: three short training runs
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_grpo_learns_a_rule_reward(tiny: Path, seed: int) -> None:
    means = list(grpo_means(tiny, seed, steps=12, group=8))
    first, last = fmean(means[:3]), fmean(means[-3:])
    # The untrained model writes digits in about a fifth of its replies' characters.
    assert last > first + 0.3, means
