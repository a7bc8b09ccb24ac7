"""`train sft`: cold-start supervised fine-tuning on the exported action samples (spec §5.3, stage 1).

TRL's `SFTTrainer` on prompt–completion pairs: the user turn is the exact WARP prompt, the
assistant turn the teacher's action, and the loss covers the completion only (the prompt is
context, not something to imitate). LoRA via peft is optional (`lora_rank`); without it the whole
model is trained, as in the paper.

Resumable: checkpoints are saved every `save_steps` under the output folder, and a rerun continues
from the latest one (`resume_from_checkpoint`). The final model (merged, when LoRA was used) is
saved to `output/final` as a plain Hugging Face folder that `HFLocalLLM`, vLLM or llama.cpp's
converter can load.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from deepdraft.errors import UserError
from deepdraft.train.dataset import load_samples
from deepdraft.train.profiles import Profile, per_device

__all__ = ["last_checkpoint", "prompt_completion_rows", "run_sft"]


def prompt_completion_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Exported chat samples as TRL's conversational prompt–completion format."""
    return [{"prompt": row["messages"][:-1], "completion": row["messages"][-1:]} for row in rows]


def last_checkpoint(output: Path) -> str | None:
    """The newest `checkpoint-N` folder of a Trainer output folder, if any."""
    found = sorted(
        (p for p in output.glob("checkpoint-*") if p.is_dir() and p.name.split("-")[-1].isdigit()),
        key=lambda p: int(p.name.split("-")[-1]),
    )
    return str(found[-1]) if found else None


def _check_model(model: Path) -> None:
    if not (model / "config.json").is_file():
        raise UserError(f"{model} is not a Hugging Face model folder (no config.json)")


def run_sft(
    dataset: Path,
    model: Path,
    output: Path,
    profile: Profile,
    *,
    lora_rank: int | None = None,
    max_steps: int | None = None,
    processes: int = 1,
) -> Path:
    """Fine-tune `model` on `dataset/train.jsonl`; returns the folder of the final model."""
    _check_model(model)
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer  # type: ignore[attr-defined]

    train = Dataset.from_list(prompt_completion_rows(load_samples(dataset / "train.jsonl")))
    validation_path = dataset / "validation.jsonl"
    evaluation = (
        Dataset.from_list(prompt_completion_rows(load_samples(validation_path)))
        if validation_path.is_file() and validation_path.stat().st_size
        else None
    )
    batch, accumulation = per_device(profile.sft_batch, processes)
    config = SFTConfig(
        output_dir=str(output),
        learning_rate=profile.sft_lr,
        per_device_train_batch_size=batch,
        gradient_accumulation_steps=accumulation,
        num_train_epochs=profile.sft_epochs,
        max_steps=max_steps if max_steps is not None else profile.sft_max_steps,
        max_length=profile.max_length,
        completion_only_loss=True,
        save_strategy="steps",
        save_steps=profile.save_steps,
        logging_steps=1,
        eval_strategy="no",
        bf16=profile.bf16,
        use_cpu=not profile.bf16,
        report_to=[],
        seed=0,
        dataloader_num_workers=0,
    )
    tokenizer = AutoTokenizer.from_pretrained(str(model))
    peft_config = None
    if lora_rank:
        from peft import LoraConfig

        peft_config = LoraConfig(
            r=lora_rank, lora_alpha=2 * lora_rank, target_modules="all-linear", task_type="CAUSAL_LM"
        )
    trainer = SFTTrainer(
        model=AutoModelForCausalLM.from_pretrained(str(model)),
        args=config,
        train_dataset=train,
        eval_dataset=evaluation,
        processing_class=tokenizer,
        peft_config=peft_config,
    )
    trainer.train(resume_from_checkpoint=last_checkpoint(output))
    return save_final(trainer.model, tokenizer, output / "final")


def save_final(model: Any, tokenizer: Any, folder: Path) -> Path:
    """Save a servable folder: a LoRA model is merged into its base first."""
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    model.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return folder
