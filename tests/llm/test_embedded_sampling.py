"""The embedded runtime's sampling seeds, on a real model (SmolLM2-135M, which `deepdraft setup
--model smollm2-135m` puts in the model cache; CI installs it; skipped where it is missing)."""

from __future__ import annotations

import pytest

from deepdraft.llm import embedded_models
from deepdraft.llm.embedded import EmbeddedLLM
from deepdraft.ports import ChatRequest
from tests.conftest import REAL_MODELS

pytest.importorskip("llama_cpp")


@pytest.fixture(scope="module")
def smollm2() -> EmbeddedLLM:
    path = REAL_MODELS / embedded_models.get_spec("smollm2-135m").file_name
    if not path.exists():
        pytest.skip("SmolLM2 is not installed: deepdraft setup --model smollm2-135m")
    return EmbeddedLLM(path, name="smollm2-135m", context=512, temperature=1.0, top_p=1.0, max_tokens=24)


def test_the_same_prompt_asked_again_without_a_seed_gets_a_new_sample(smollm2: EmbeddedLLM) -> None:
    # A run with no --seed asked every action with the runtime's seed 0: a part searched again
    # found the same passages, so its prompt was the same, and the refused reply came back word for
    # word. Another prompt in between, as a search is, so the prompt is read afresh each time.
    asked = ChatRequest.user("Write one sentence about the tariff of 1828.")
    between = ChatRequest.user("Name a colour.")
    replies = []
    for _ in range(2):
        replies.append(smollm2.complete(asked).text)
        smollm2.complete(between)
    assert replies[0] != replies[1]
    # A seed asked for still repeats its sample: runs with --seed stay reproducible.
    seeded = ChatRequest.user("Write one sentence about the tariff of 1828.", seed=7)
    first = smollm2.complete(seeded).text
    smollm2.complete(between)
    assert smollm2.complete(seeded).text == first
