"""Embedders: an OpenAI-compatible endpoint over a real loopback server, and the MiniLM model for real."""

from __future__ import annotations

import importlib.util
import socket

import numpy as np
import pytest

from deepdraft.errors import ConfigError, LLMBadResponse, LLMRefused, LLMServerError, LLMUnreachable
from deepdraft.retrieval.index.embedders import MiniLMEmbedder, OpenAIEmbedder, build_embedder
from deepdraft.settings import EmbeddingSettings
from tests.support.openai_server import (
    NOT_JSON,
    ErrorReply,
    FakeOpenAIServer,
    RawReply,
    fast_sdk_backoff,
    hashed_embedding,
)

TEXTS = [f"passage number {i} about tariffs and trade" for i in range(7)]


def test_batches_keep_order_and_rows_are_unit_length() -> None:
    with FakeOpenAIServer.for_embeddings(dimension=48, shuffle=True) as server:
        embedder = OpenAIEmbedder(server.base_url, "embed-model", batch_size=3)
        vectors = embedder.embed(TEXTS)
        requests = server.embedding_requests
    assert [len(r["input"]) for r in requests] == [3, 3, 1]
    assert all(r["model"] == "embed-model" for r in requests)
    assert vectors.dtype == np.float32 and vectors.shape == (7, 48)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    # The server answered each batch in reverse order: rows must still follow the input.
    expected = np.array([hashed_embedding(text, 48) for text in TEXTS], dtype=np.float32)
    np.testing.assert_allclose(vectors, expected, atol=1e-6)
    assert embedder.dimension == 48
    assert embedder.name == f"openai:{server.base_url}#embed-model"


def test_dimension_is_learned_with_one_small_request_when_nothing_was_embedded() -> None:
    with FakeOpenAIServer.for_embeddings(dimension=24) as server:
        embedder = OpenAIEmbedder(server.base_url + "/", "m")
        assert embedder.dimension == 24
        assert embedder.dimension == 24
        assert len(server.embedding_requests) == 1
        assert embedder.embed([]).shape == (0, 24)


def test_the_api_key_is_sent_only_when_configured_and_empty_texts_are_accepted() -> None:
    with FakeOpenAIServer.for_embeddings() as server:
        OpenAIEmbedder(server.base_url, "m", api_key="sk-secret").embed(["a", ""])
        OpenAIEmbedder(server.base_url, "m").embed(["b"])
        headers, requests = server.embedding_headers, server.embedding_requests
    assert headers[0]["authorization"] == "Bearer sk-secret"
    assert "sk-secret" not in headers[1].get("authorization", "")
    assert requests[0]["input"] == ["a", " "]


@pytest.mark.parametrize(
    ("fault", "error", "words"),
    [
        (ErrorReply(401, "bad key"), LLMRefused, "embedding.api_key"),
        (ErrorReply(404, "model not found"), LLMRefused, "unknown model"),
        (ErrorReply(400, "input too long"), LLMRefused, "chunk_tokens"),
        (ErrorReply(500, "boom", headers={"x-should-retry": "false"}), LLMServerError, "HTTP 500"),
        (NOT_JSON, LLMBadResponse, "embedding endpoint"),
        (RawReply(b'{"object": "list", "data": []}'), LLMBadResponse, "0 vectors for 2 texts"),
        (
            RawReply(b'{"data": [{"index": 0, "embedding": [1, 2]}, {"index": 1, "embedding": [1]}]}'),
            LLMBadResponse,
            "one length",
        ),
    ],
)
def test_endpoint_failures_become_one_line_errors(fault: object, error: type[Exception], words: str) -> None:
    with fast_sdk_backoff(), FakeOpenAIServer.for_embeddings(script=[fault]) as server:  # type: ignore[list-item]
        embedder = OpenAIEmbedder(server.base_url, "m", max_retries=0)
        with pytest.raises(error) as caught:
            embedder.embed(["one", "two"])
    message = str(caught.value)
    assert words in message and server.base_url in message and "\n" not in message


def test_server_errors_are_retried_before_failing() -> None:
    with (
        fast_sdk_backoff(),
        FakeOpenAIServer.for_embeddings(script=[ErrorReply(503), ErrorReply(503)]) as server,
    ):
        vectors = OpenAIEmbedder(server.base_url, "m", max_retries=2).embed(["x"])
        assert len(server.embedding_requests) == 3
    assert vectors.shape[0] == 1


def test_an_endpoint_that_changes_its_dimension_is_refused() -> None:
    with FakeOpenAIServer.for_embeddings(dimension=16) as server:
        embedder = OpenAIEmbedder(server.base_url, "m")
        embedder.embed(["first"])
        server.embedding_dimension = 32
        with pytest.raises(LLMBadResponse, match="from 16 to 32"):
            embedder.embed(["second"])


def test_an_unreachable_endpoint_says_so() -> None:
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    embedder = OpenAIEmbedder(f"http://127.0.0.1:{port}/v1", "m", max_retries=0)
    with pytest.raises(LLMUnreachable, match=r"cannot reach the embedding endpoint.*connection refused"):
        embedder.embed(["x"])


def test_build_embedder_picks_the_endpoint_or_the_builtin_model() -> None:
    remote = build_embedder(EmbeddingSettings(base_url="http://127.0.0.1:9/v1", model="e5", batch_size=8))
    assert isinstance(remote, OpenAIEmbedder) and remote.batch_size == 8
    assert remote.name == "openai:http://127.0.0.1:9/v1#e5"
    with pytest.raises(ConfigError, match="--embed-model"):
        build_embedder(EmbeddingSettings(base_url="http://127.0.0.1:9/v1"))
    local = build_embedder(EmbeddingSettings())
    # Nothing is loaded yet: the name and dimension come from the package's files.
    assert isinstance(local, MiniLMEmbedder)
    assert (local.name, local.dimension) == ("minilm:all-MiniLM-L6-v2", 384)


def test_a_missing_dense_extra_is_a_config_error_with_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    real_find_spec = importlib.util.find_spec

    def without_sentence_transformers(name: str, *args: object) -> object:
        return None if name == "sentence_transformers" else real_find_spec(name, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(importlib.util, "find_spec", without_sentence_transformers)
    with pytest.raises(ConfigError, match=r"deepdraft\[dense\]"):
        build_embedder(EmbeddingSettings())


@pytest.mark.slow
def test_minilm_puts_similar_sentences_closer_than_unrelated_ones() -> None:
    embedder = MiniLMEmbedder(batch_size=4)
    vectors = embedder.embed(
        [
            "Congress raised the tariff on imported steel to protect American manufacturers.",
            "Import duties on foreign steel were increased to shield domestic industry.",
            "The astronauts landed on the Moon and planted a flag.",
            "Heavy rain flooded the valley and farmers lost their harvest.",
        ]
    )
    assert vectors.shape == (4, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-4)
    similar = float(vectors[0] @ vectors[1])
    assert similar > float(vectors[0] @ vectors[2]) + 0.2
    assert similar > float(vectors[0] @ vectors[3]) + 0.2
    # A query is embedded like a passage: the same text alone gives the same vector as in a batch.
    alone = embedder.embed(["The astronauts landed on the Moon and planted a flag."])[0]
    np.testing.assert_allclose(alone, vectors[2], atol=1e-4)
