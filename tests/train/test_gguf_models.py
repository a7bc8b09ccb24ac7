"""SmolLM2 from its GGUF into transformers and back: the base model of training and the file llama.cpp serves.

The tests marked `embedded` read the real SmolLM2-135M-Instruct GGUF that `deepdraft setup --model
smollm2-135m` puts in the model cache (CI installs it); they skip where it is missing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from deepdraft.errors import ConfigError, UserError
from deepdraft.llm import embedded_models
from deepdraft.llm.embedded import EmbeddedLLM
from deepdraft.ports import ChatRequest
from deepdraft.train.gguf_models import export_gguf, gguf_source, import_gguf
from deepdraft.train.hf_llm import HFLocalLLM
from tests.conftest import REAL_MODELS

gguf = pytest.importorskip("gguf")
torch = pytest.importorskip("torch")

QUESTION = "What is the capital of France? Answer in one word."


def test_a_missing_gguf_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"GGUF file .*nothing\.gguf does not exist"):
        gguf_source(str(tmp_path / "nothing.gguf"))
    with pytest.raises(UserError, match=r"is not a GGUF file"):
        gguf_source(str(tmp_path))
    with pytest.raises(ConfigError, match="unknown embedded model 'no-such-model'"):
        gguf_source("no-such-model")


def test_an_embedded_model_that_is_not_installed_says_how_to_install_it() -> None:
    with pytest.raises(ConfigError, match="run: deepdraft setup --model smollm2-135m"):
        gguf_source("smollm2-135m")  # the test's model cache is empty


def test_export_refuses_an_unknown_type(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="unknown GGUF type 'q4'"):
        export_gguf(tmp_path, tmp_path / "t.gguf", tmp_path / "o.gguf", "q4")  # type: ignore[arg-type]


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "deepdraft", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ, COLUMNS="200"),
        stdin=subprocess.DEVNULL,
    )


def test_the_commands_fail_in_one_line_that_says_what_to_do(tmp_path: Path) -> None:
    done = cli("train", "base-model", "smollm2-135m", "--out", str(tmp_path / "base"))
    assert done.returncode != 0
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("error: ") and line.endswith("run: deepdraft setup --model smollm2-135m")
    assert not (tmp_path / "base").exists()

    done = cli(
        "train",
        "export-gguf",
        "--model",
        str(tmp_path),
        "--like",
        "x.gguf",
        "--out",
        "o.gguf",
        "--type",
        "q4",
    )
    assert done.returncode != 0
    assert done.stderr.strip().splitlines() == [
        "error: --type must be one of f32, f16, q8_0, source (got 'q4')"
    ]


# ---- the real SmolLM2 ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def smollm2() -> Path:
    spec = embedded_models.get_spec("smollm2-135m")
    path = REAL_MODELS / spec.file_name
    if not path.is_file() or path.stat().st_size != spec.size:
        pytest.skip("SmolLM2 is not installed: deepdraft setup --model smollm2-135m")
    return path


@pytest.fixture(scope="module")
def base(smollm2: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return import_gguf(smollm2, tmp_path_factory.mktemp("smollm2") / "base")


@pytest.mark.embedded
@pytest.mark.slow
def test_the_installed_model_is_found_by_name(smollm2: Path) -> None:
    assert gguf_source("smollm2-135m") == smollm2


@pytest.mark.embedded
@pytest.mark.slow
def test_the_imported_model_answers_through_the_llm_port(base: Path) -> None:
    llm = HFLocalLLM.load(base, max_new_tokens=8, temperature=0)
    reply = llm.complete(ChatRequest.user(QUESTION))
    assert "Paris" in reply.text, reply.text  # dequantised weights that were wrong would not know
    # A plain model: nothing in its config sends a later load looking for the GGUF file.
    assert json.loads((base / "config.json").read_text()).get("quantization_config") is None


@pytest.mark.embedded
@pytest.mark.slow
def test_exporting_the_untrained_model_in_its_own_types_gives_back_the_file(
    smollm2: Path, base: Path, tmp_path: Path
) -> None:
    exported = export_gguf(base, smollm2, tmp_path / "again.gguf", "source")
    original, again = gguf.GGUFReader(smollm2), gguf.GGUFReader(exported)
    # Bit for bit: names, layout of the rotary rows, types and the requantised blocks.
    assert [(t.name, t.tensor_type) for t in again.tensors] == [
        (t.name, t.tensor_type) for t in original.tensors
    ]
    assert all((a.data == b.data).all() for a, b in zip(original.tensors, again.tensors, strict=True))
    fields = {name for name in original.fields if not name.startswith("GGUF.")}
    assert {name for name in again.fields if not name.startswith("GGUF.")} == fields
    assert all(again.fields[name].contents() == original.fields[name].contents() for name in fields)


def trained_copy(base: Path, folder: Path) -> dict[str, Any]:
    """One optimiser step on a sentence, saved to `folder`; the trained weights."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(base))
    tokenizer = AutoTokenizer.from_pretrained(str(base))
    ids = torch.tensor([tokenizer("The report cites its sources.")["input_ids"]])
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.0)
    model(ids, labels=ids).loss.backward()
    optimizer.step()
    model.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return {name: p.detach().clone() for name, p in model.named_parameters()}


@pytest.mark.embedded
@pytest.mark.slow
def test_a_trained_model_exported_as_f16_keeps_its_training_and_the_embedded_runtime_serves_it(
    smollm2: Path, base: Path, tmp_path: Path
) -> None:
    pytest.importorskip("llama_cpp")
    trained = trained_copy(base, tmp_path / "trained")
    exported = export_gguf(tmp_path / "trained", smollm2, tmp_path / "trained.gguf", "f16")

    from transformers import AutoModelForCausalLM

    back = AutoModelForCausalLM.from_pretrained(str(exported.parent), gguf_file=exported.name)
    before = dict(AutoModelForCausalLM.from_pretrained(str(base)).named_parameters())
    for name, value in back.named_parameters():
        moved = (trained[name] - before[name].detach()).abs().mean()
        error = (value.detach() - trained[name]).abs().mean()
        # float16 keeps the training: per tensor it rounds away at most about half of what the step
        # changed (0.48 for the worst one measured), where an export of the untrained weights would
        # lose all of it (1.0) and misplaced rows far more.
        assert error <= 0.75 * moved, (name, float(error), float(moved))

    # deepdraft's embedded runtime (llama.cpp in this process) serves the exported file.
    served = EmbeddedLLM(exported, name="trained", context=512, temperature=0, max_tokens=8)
    assert "Paris" in served.complete(ChatRequest.user(QUESTION)).text
