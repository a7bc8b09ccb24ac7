"""A local transformers model behind deepdraft's `LLM` port: a trained checkpoint does research.

`HFLocalLLM` renders the request with the model's chat template, samples (or decodes greedily at
temperature 0) and returns the new text. It exposes `context_window` and `count_tokens` like the
embedded model, so the policy budgets prompts with the model's own tokenizer.

For pipeline RL it can also record what it generated (`recorder`): the prompt and completion token
ids of every call, which the policy-gradient step needs exactly as sampled (re-tokenising the text
would not give back the same ids).

This is the path for checking and smoke-testing checkpoints on CPU; for real serving, convert the
folder to GGUF (docs/training.md) or serve it with vLLM and use `--base-url`.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deepdraft.errors import ConfigError, LLMContextOverflow
from deepdraft.ports import ChatRequest, ChatResult, Usage

__all__ = ["Generation", "HFLocalLLM"]


@dataclass(frozen=True)
class Generation:
    prompt_ids: list[int]
    completion_ids: list[int]


@dataclass
class GenerationRecorder:
    """Collects every generation (thread-safe); `take` empties it."""

    items: list[Generation] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, item: Generation) -> None:
        with self._lock:
            self.items.append(item)

    def take(self) -> list[Generation]:
        with self._lock:
            taken, self.items = self.items, []
        return taken


class HFLocalLLM:
    """Chat completions from a Hugging Face causal LM folder (or an already loaded model)."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        name: str = "local",
        max_new_tokens: int = 512,
        temperature: float = 0.7,
        top_p: float = 0.95,
        recorder: GenerationRecorder | None = None,
    ) -> None:
        self.model, self.tokenizer, self._name = model, tokenizer, name
        self.max_new_tokens, self.temperature, self.top_p = max_new_tokens, temperature, top_p
        self.recorder = recorder
        self._lock = threading.Lock()  # one generate() at a time on one model

    @classmethod
    def load(cls, folder: Path, **kwargs: Any) -> HFLocalLLM:
        """Load a checkpoint folder (full model, or a LoRA adapter over its base model)."""
        if not (folder / "config.json").is_file() and not (folder / "adapter_config.json").is_file():
            raise ConfigError(f"{folder} is not a Hugging Face model folder (no config.json)")
        try:
            from transformers import AutoModelForCausalLM, AutoTokenizer
        except ImportError as exc:  # pragma: no cover - the train extra brings it
            raise ConfigError(
                'local checkpoints need the "train" extra: pip install "deepdraft[train]"'
            ) from exc
        if (folder / "adapter_config.json").is_file():
            from peft import AutoPeftModelForCausalLM

            model = AutoPeftModelForCausalLM.from_pretrained(str(folder)).merge_and_unload()
        else:
            model = AutoModelForCausalLM.from_pretrained(str(folder))
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
        model.eval()
        return cls(model, tokenizer, name=kwargs.pop("name", folder.name), **kwargs)

    @property
    def model_name(self) -> str:
        return self._name

    @property
    def context_window(self) -> int:
        return int(getattr(self.model.config, "max_position_embeddings", 4096))

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def complete(self, request: ChatRequest) -> ChatResult:
        import torch

        messages = [{"role": m.role, "content": m.content} for m in request.messages]
        prompt_ids: list[int] = list(
            self.tokenizer.apply_chat_template(
                messages, add_generation_prompt=True, tokenize=True, return_dict=True
            )["input_ids"]
        )
        limit = request.max_tokens or self.max_new_tokens
        if len(prompt_ids) + limit > self.context_window:
            raise LLMContextOverflow(
                f"the prompt has {len(prompt_ids)} tokens; with {limit} for the reply it exceeds the "
                f"model's context of {self.context_window}"
            )
        temperature = self.temperature if request.temperature is None else request.temperature
        sampling: dict[str, Any] = (
            {"do_sample": True, "temperature": temperature, "top_p": request.top_p or self.top_p}
            if temperature > 0
            else {"do_sample": False}
        )
        with self._lock, torch.no_grad():
            if request.seed is not None:
                torch.manual_seed(request.seed)
            output = self.model.generate(
                torch.tensor([prompt_ids], device=self.model.device),
                attention_mask=torch.ones(1, len(prompt_ids), dtype=torch.long, device=self.model.device),
                max_new_tokens=limit,
                pad_token_id=self.tokenizer.pad_token_id,
                eos_token_id=self.tokenizer.eos_token_id,
                **sampling,
            )
        completion_ids = [int(t) for t in output[0][len(prompt_ids) :]]
        if self.recorder is not None:
            self.recorder.add(Generation(prompt_ids, completion_ids))
        finished = bool(completion_ids) and completion_ids[-1] == self.tokenizer.eos_token_id
        text = self.tokenizer.decode(completion_ids, skip_special_tokens=True)
        return ChatResult(
            text=text,
            usage=Usage(len(prompt_ids), len(completion_ids)),
            model=self._name,
            finish_reason="stop" if finished else "length",
        )
