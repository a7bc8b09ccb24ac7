"""OpenAICompatibleLLM against a real HTTP server on 127.0.0.1 (tests/support/openai_server.py)."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from deepdraft.errors import (
    ConfigError,
    LLMBadResponse,
    LLMRefused,
    LLMServerError,
    LLMTimeout,
    LLMUnreachable,
)
from deepdraft.llm.openai_compat import OpenAICompatibleLLM
from deepdraft.ports import LLM, ChatRequest, Message
from deepdraft.settings import LLMSettings
from tests.support.openai_server import (
    NO_CHOICES,
    NOT_JSON,
    ErrorReply,
    FakeOpenAIServer,
    RawReply,
    Reply,
    SlowReply,
    fast_sdk_backoff,
)

SCHEMA: dict[str, Any] = {"type": "object", "properties": {"name": {"type": "string"}}}


@pytest.fixture(autouse=True)
def _fast_backoff() -> Iterator[None]:
    # The SDK waits 0.5 s, 1 s, 2 s ... between retries; 10 ms keeps every retry test fast.
    with fast_sdk_backoff(0.01):
        yield


def ask(prompt: str = "Hello there", **kwargs: Any) -> ChatRequest:
    return ChatRequest.user(prompt, **kwargs)


def test_completion_sends_defaults_and_returns_text_and_usage() -> None:
    with FakeOpenAIServer.replaying(["General Kenobi."]) as server:
        llm = OpenAICompatibleLLM(server.base_url, "fake-model")
        request = ChatRequest(
            messages=(Message("system", "Be brief."), Message("user", "Hello there")), tag="step-1"
        )
        result = llm.complete(request)

    assert isinstance(llm, LLM)
    assert result.text == "General Kenobi."
    assert result.usage.completion_tokens == 2
    assert result.usage.prompt_tokens > 0
    assert result.model == "fake-model"
    assert result.finish_reason == "stop"
    assert result.cached is False
    body = server.requests[0]
    assert body == {
        "model": "fake-model",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hello there"},
        ],
        "temperature": 0.7,
        "top_p": 0.8,
        "max_tokens": 2048,
    }  # no tag, no response_format, nothing else


def test_request_overrides_beat_instance_defaults() -> None:
    with FakeOpenAIServer.replaying(["a", "b"]) as server:
        llm = OpenAICompatibleLLM(server.base_url, "fake-model", temperature=0.2, top_p=0.5, max_tokens=64)
        llm.complete(ask())
        llm.complete(ask(temperature=0.0, top_p=1.0, max_tokens=16))

    first, second = server.requests
    assert (first["temperature"], first["top_p"], first["max_tokens"]) == (0.2, 0.5, 64)
    assert (second["temperature"], second["top_p"], second["max_tokens"]) == (0.0, 1.0, 16)


def test_missing_usage_gives_zeros_and_finish_reason_is_passed_on() -> None:
    with FakeOpenAIServer.replaying([Reply("cut", finish_reason="length", usage=False)]) as server:
        result = OpenAICompatibleLLM(server.base_url, "fake-model").complete(ask())
    assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (0, 0)
    assert result.finish_reason == "length"


def test_environment_never_redirects_or_authenticates(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-must-not-leak")
    with FakeOpenAIServer.replaying(["x", "y"]) as server:
        OpenAICompatibleLLM(server.base_url, "fake-model").complete(ask())
        OpenAICompatibleLLM(server.base_url, "fake-model", api_key="sk-mine").complete(ask())
    assert server.headers[0]["authorization"] == "Bearer no-key"
    assert server.headers[1]["authorization"] == "Bearer sk-mine"


def test_from_settings() -> None:
    with FakeOpenAIServer.replaying(["ok"], models=["served"]) as server:
        settings = LLMSettings.model_validate(
            {"base_url": server.base_url, "temperature": 0.1, "max_tokens": 100}
        )
        llm = OpenAICompatibleLLM.from_settings(settings)
        assert llm.complete(ask()).text == "ok"
    body = server.requests[0]
    assert (body["model"], body["temperature"], body["top_p"], body["max_tokens"]) == (
        "served",
        0.1,
        0.8,
        100,
    )
    with pytest.raises(ConfigError, match="base URL"):
        OpenAICompatibleLLM.from_settings(LLMSettings.model_validate({}))


def test_single_served_model_is_discovered() -> None:
    with FakeOpenAIServer.replaying(["ok"], models=["qwen2.5-7b-instruct"]) as server:
        llm = OpenAICompatibleLLM(server.base_url)
        assert llm.model_name == "qwen2.5-7b-instruct"
        llm.complete(ask())
    assert server.requests[0]["model"] == "qwen2.5-7b-instruct"


def test_several_or_no_served_models_need_explicit_model() -> None:
    with FakeOpenAIServer.replaying([], models=["model-b", "model-a"]) as server:
        with pytest.raises(ConfigError, match=r"model-a, model-b.*--model"):
            OpenAICompatibleLLM(server.base_url).complete(ask())
        server.models = []
        with pytest.raises(ConfigError, match="no models"):
            _ = OpenAICompatibleLLM(server.base_url).model_name
        assert server.requests == []


@pytest.mark.parametrize("status", [500, 503, 429])
def test_transient_failure_is_retried(status: int) -> None:
    with FakeOpenAIServer.replaying([ErrorReply(status, "busy"), "recovered"]) as server:
        result = OpenAICompatibleLLM(
            server.base_url, "fake-model", max_retries=2, retry_backoff_s=0.01
        ).complete(ask())
    assert result.text == "recovered"
    assert len(server.requests) == 2


@pytest.mark.parametrize("status", [500, 429])
def test_persistent_failure_becomes_server_error(status: int) -> None:
    with FakeOpenAIServer(lambda body, i: ErrorReply(status, "GPU on fire")) as server:
        llm = OpenAICompatibleLLM(server.base_url, "fake-model", max_retries=2, retry_backoff_s=0.01)
        with pytest.raises(LLMServerError) as caught:
            llm.complete(ask())
    message = str(caught.value)
    assert server.base_url in message
    assert f"HTTP {status}" in message and "after 3 attempts" in message and "GPU on fire" in message
    assert "\n" not in message
    assert isinstance(caught.value.__cause__, openai.APIStatusError)
    assert len(server.requests) == 3  # one try and max_retries retries


def test_no_answer_in_time_is_a_timeout() -> None:
    with FakeOpenAIServer(lambda body, i: SlowReply(5.0, "too late")) as server:
        llm = OpenAICompatibleLLM(
            server.base_url, "fake-model", timeout_s=0.3, max_retries=1, retry_backoff_s=0.01
        )
        started = time.monotonic()
        with pytest.raises(LLMTimeout) as caught:
            llm.complete(ask())
        elapsed = time.monotonic() - started
    assert elapsed < 3.0
    assert server.base_url in str(caught.value) and "0.3 s" in str(caught.value)
    assert len(server.requests) == 2  # timeouts are retried too


MALFORMED = {
    "html": (NOT_JSON, "an HTML page instead of JSON (HTTP 200)"),
    "no-choices": (NO_CHOICES, "a chat completion with no choices (HTTP 200)"),
    "empty-choices": (
        RawReply(b'{"object": "chat.completion", "choices": []}'),
        "a chat completion with no choices (HTTP 200)",
    ),
    "null-content": (
        RawReply(b'{"choices": [{"index": 0, "message": {"role": "assistant", "content": null}}]}'),
        "a chat completion whose message has no text (HTTP 200)",
    ),
    "truncated-json": (
        RawReply(b'{"choices": [{"index": 0, "message": {"role": "assistant", "content": "Hal'),
        "JSON that breaks off after 74 bytes (HTTP 200)",
    ),
    "broken-json": (RawReply(b"{truncated"), "malformed JSON"),
    "empty-body": (RawReply(b""), "an empty body (HTTP 200)"),
    "json-null": (RawReply(b"null"), "a JSON null instead of a chat completion (HTTP 200)"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_a_malformed_body_is_asked_again_then_named_in_one_line(case: str) -> None:
    reply, what = MALFORMED[case]
    with FakeOpenAIServer(lambda body, i: reply) as server, pytest.raises(LLMBadResponse) as caught:
        OpenAICompatibleLLM(server.base_url, "fake-model", max_retries=2, retry_backoff_s=0).complete(ask())
    message = str(caught.value)
    assert message.startswith(f"the LLM at {server.base_url} sent {what}")
    assert message.endswith("after 3 attempts")
    assert "\n" not in message and "ChatCompletion(" not in message and "<html" not in message
    assert len(server.requests) == 3  # like a 5xx: one try and max_retries more


@pytest.mark.parametrize("case", list(MALFORMED))
def test_a_malformed_body_once_is_a_transient_fault(case: str) -> None:
    reply, _ = MALFORMED[case]
    waits: list[float] = []
    with FakeOpenAIServer.replaying([reply, "recovered"]) as server:
        llm = OpenAICompatibleLLM(server.base_url, "fake-model", max_retries=1, sleep=waits.append)
        assert llm.complete(ask()).text == "recovered"
    assert len(server.requests) == 2
    assert len(waits) == 1 and 0.375 <= waits[0] <= 0.5  # retry_backoff_s, less up to a quarter of jitter


def test_every_transient_failure_waits_by_the_same_policy() -> None:
    # One policy for HTTP errors and unusable 200s: retry_backoff_s doubling, or what Retry-After says.
    script = [ErrorReply(503, "busy"), NOT_JSON, ErrorReply(429, "slow down", {"retry-after": "2"}), "fine"]
    waits: list[float] = []
    with FakeOpenAIServer.replaying(script) as server:
        llm = OpenAICompatibleLLM(
            server.base_url, "fake-model", max_retries=3, retry_backoff_s=1.0, sleep=waits.append
        )
        assert llm.complete(ask()).text == "fine"
    assert len(waits) == 3
    assert 0.75 <= waits[0] <= 1.0 and 1.5 <= waits[1] <= 2.0 and waits[2] == 2.0


def test_a_server_asking_for_a_long_pause_is_not_waited_for() -> None:
    script = [ErrorReply(429, "come back tomorrow", {"retry-after": "86400"}), "never asked"]
    waits: list[float] = []
    with (
        FakeOpenAIServer.replaying(script) as server,
        pytest.raises(LLMServerError, match="HTTP 429: come back"),
    ):
        OpenAICompatibleLLM(server.base_url, "fake-model", sleep=waits.append).complete(ask())
    assert waits == [] and len(server.requests) == 1


def test_a_proxy_error_page_is_named_not_quoted() -> None:
    page = b"<html><head><title>502 Bad Gateway</title></head><body><center>nginx</center></body></html>"
    reply = RawReply(page, status=502, content_type="text/html")
    with FakeOpenAIServer(lambda body, i: reply) as server, pytest.raises(LLMServerError) as caught:
        OpenAICompatibleLLM(server.base_url, "fake-model", max_retries=0).complete(ask())
    assert str(caught.value).endswith("HTTP 502: an HTML error page (502 Bad Gateway)")


@pytest.mark.parametrize("status", [401, 403])
def test_rejected_key_is_refused_with_a_hint(status: int) -> None:
    server = FakeOpenAIServer.replaying([ErrorReply(status, "invalid api key")])
    with server, pytest.raises(LLMRefused) as caught:
        OpenAICompatibleLLM(server.base_url, "fake-model", api_key="wrong").complete(ask())
    assert "API key" in str(caught.value) and server.base_url in str(caught.value)
    assert len(server.requests) == 1  # auth errors are not retried


def test_unknown_model_is_refused_with_base_url_hint() -> None:
    server = FakeOpenAIServer.replaying([ErrorReply(404, "The model `nope` does not exist")])
    with server, pytest.raises(LLMRefused) as caught:
        OpenAICompatibleLLM(server.base_url, "nope").complete(ask())
    message = str(caught.value)
    assert "'nope'" in message and "/v1" in message and "does not exist" in message


def test_base_url_without_v1_is_refused() -> None:
    with FakeOpenAIServer.replaying(["unused"]) as server:
        root = server.base_url.removesuffix("/v1")
        with pytest.raises(LLMRefused, match=r"404.*/v1"):
            OpenAICompatibleLLM(root, "fake-model").complete(ask())


def test_other_client_error_carries_the_server_message() -> None:
    server = FakeOpenAIServer.replaying([ErrorReply(422, "max_tokens must be at least 1")])
    with server, pytest.raises(LLMRefused, match=r"HTTP 422.*max_tokens must be at least 1"):
        OpenAICompatibleLLM(server.base_url, "fake-model").complete(ask())
    assert len(server.requests) == 1


def test_nothing_listening_is_unreachable() -> None:
    with socket.socket() as sock:  # find a port that is free, then leave it closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1"
    with pytest.raises(LLMUnreachable) as caught:
        OpenAICompatibleLLM(url, "fake-model", max_retries=1, retry_backoff_s=0.01).complete(ask())
    assert str(caught.value) == f"cannot reach the LLM at {url}: connection refused. Is the server running?"
    assert isinstance(caught.value.__cause__, openai.APIConnectionError)
    with pytest.raises(LLMUnreachable, match="connection refused"):
        _ = OpenAICompatibleLLM(url, max_retries=0).model_name


def test_json_schema_is_sent_as_response_format() -> None:
    with FakeOpenAIServer.replaying(['{"name": "x"}']) as server:
        OpenAICompatibleLLM(server.base_url, "fake-model").complete(ask(json_schema=SCHEMA))
    assert server.requests[0]["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "action", "schema": SCHEMA, "strict": False},
    }


def test_schema_rejected_by_server_falls_back_once_and_for_good() -> None:
    rejection = ErrorReply(400, "Unrecognized request argument supplied: response_format")
    with FakeOpenAIServer.replaying([rejection, "plain 1", "plain 2"]) as server:
        llm = OpenAICompatibleLLM(server.base_url, "fake-model")
        assert llm.complete(ask(json_schema=SCHEMA)).text == "plain 1"
        assert llm.complete(ask(json_schema=SCHEMA)).text == "plain 2"
    sent = ["response_format" in body for body in server.requests]
    assert sent == [True, False, False]


def test_other_bad_request_is_not_mistaken_for_a_schema_problem() -> None:
    with FakeOpenAIServer.replaying([ErrorReply(400, "prompt is too long"), "unused"]) as server:
        llm = OpenAICompatibleLLM(server.base_url, "fake-model")
        with pytest.raises(LLMRefused, match="prompt is too long"):
            llm.complete(ask(json_schema=SCHEMA))
    assert len(server.requests) == 1


def test_on_request_hook_sees_each_call() -> None:
    seen: list[tuple[int, str]] = []
    with FakeOpenAIServer.replaying(
        ["one", "two"], on_request=lambda body, i: seen.append((i, body["messages"][0]["content"]))
    ) as server:
        llm = OpenAICompatibleLLM(server.base_url, "fake-model")
        llm.complete(ask("first"))
        llm.complete(ask("second"))
    assert seen == [(0, "first"), (1, "second")]


def test_exhausted_script_fails_fast_and_says_why() -> None:
    with FakeOpenAIServer.replaying(["only"]) as server:
        llm = OpenAICompatibleLLM(server.base_url, "fake-model", max_retries=3)
        llm.complete(ask())
        with pytest.raises(LLMServerError, match="no reply scripted for chat request #1"):
            llm.complete(ask())
    assert len(server.requests) == 2  # x-should-retry: false stops the SDK from retrying


def test_plain_text_error_body_is_quoted() -> None:
    server = FakeOpenAIServer.replaying([RawReply(b"bad\nthing", status=400, content_type="text/plain")])
    with server, pytest.raises(LLMRefused, match=r"HTTP 400\): bad thing$"):
        OpenAICompatibleLLM(server.base_url, "fake-model").complete(ask())


def test_caller_supplied_httpx_client_is_used() -> None:
    seen: list[str] = []
    client = httpx.Client(event_hooks={"request": [lambda request: seen.append(str(request.url))]})
    with FakeOpenAIServer.replaying(["via my client"]) as server, client:
        llm = OpenAICompatibleLLM(server.base_url, "fake-model", http_client=client)
        assert llm.complete(ask()).text == "via my client"
    assert seen == [f"{server.base_url}/chat/completions"]


# ---- constrained decoding ----------------------------------------------------------------------


def shaped(name: str = "search") -> ChatRequest:
    from deepdraft.protocol.grammar import reply_shape

    return ChatRequest.user("pick keywords", reply_shape=reply_shape(name), seed=7)  # type: ignore[arg-type]


def test_grammar_is_sent_to_servers_that_accept_it() -> None:
    from deepdraft.protocol.grammar import reply_shape

    with FakeOpenAIServer.replaying(["<thought>t</thought><action>{}</action>"]) as server:
        OpenAICompatibleLLM(server.base_url, "fake-model").complete(shaped())
    body = server.requests[0]
    assert body["grammar"] == reply_shape("search").grammar
    assert body["seed"] == 7
    assert "response_format" not in body


def test_a_server_rejecting_the_grammar_is_asked_again_without_it_and_never_again() -> None:
    replies = [ErrorReply(400, "unknown field: grammar"), "first", "second"]
    with FakeOpenAIServer.replaying(replies) as server:
        llm = OpenAICompatibleLLM(server.base_url, "fake-model")
        assert llm.complete(shaped()).text == "first"
        assert llm.complete(shaped()).text == "second"
    assert "grammar" in server.requests[0]
    assert "grammar" not in server.requests[1] and "grammar" not in server.requests[2]


def test_constrain_off_sends_nothing_extra() -> None:
    with FakeOpenAIServer.replaying(["plain"]) as server:
        OpenAICompatibleLLM(server.base_url, "fake-model", constrain="off").complete(shaped())
    assert "grammar" not in server.requests[0] and "response_format" not in server.requests[0]


def test_json_mode_sends_an_envelope_and_returns_the_tagged_form() -> None:
    envelope = json.dumps({"thought": "why", "action": {"name": "search", "keywords": ["a", "b"]}})
    with FakeOpenAIServer.replaying([envelope]) as server:
        result = OpenAICompatibleLLM(server.base_url, "fake-model", constrain="json").complete(shaped())
    schema = server.requests[0]["response_format"]["json_schema"]["schema"]
    assert schema["required"] == ["thought", "action"]
    assert schema["properties"]["action"]["properties"]["keywords"]["maxItems"] == 5
    assert "grammar" not in server.requests[0]
    assert result.text == '<thought>why</thought><action>{"name": "search", "keywords": ["a", "b"]}</action>'

    from deepdraft.protocol.actions import Search, parse

    assert parse(result.text, {"search"}) == Search(("a", "b"))


def test_json_mode_free_text_action_and_non_json_replies_pass_through() -> None:
    write_envelope = json.dumps({"thought": "t", "action": "Text \\cite{textid1}."})
    with FakeOpenAIServer.replaying([write_envelope, "not json at all"]) as server:
        llm = OpenAICompatibleLLM(server.base_url, "fake-model", constrain="json")
        assert (
            llm.complete(shaped("write")).text == "<thought>t</thought><action>Text \\cite{textid1}.</action>"
        )
        assert llm.complete(shaped("write")).text == "not json at all"
    assert (
        server.requests[0]["response_format"]["json_schema"]["schema"]["properties"]["action"]["type"]
        == "string"
    )


@pytest.mark.parametrize(
    "message",
    [
        "This model's maximum context length is 4096 tokens. However, you requested 5000 tokens.",
        "the request exceeds the available context size, try increasing it",
        "Requested tokens (5000) exceed context window of 4096",
        "context_length_exceeded",
    ],
)
def test_context_overflow_is_its_own_error(message: str) -> None:
    from deepdraft.errors import LLMContextOverflow

    with (
        FakeOpenAIServer.replaying([ErrorReply(400, message)]) as server,
        pytest.raises(LLMContextOverflow, match="longer than the model's context"),
    ):
        OpenAICompatibleLLM(server.base_url, "fake-model").complete(ask())


def test_extra_body_fields_are_sent_with_every_request() -> None:
    with FakeOpenAIServer.replaying(["a", "b"]) as server:
        llm = OpenAICompatibleLLM(
            server.base_url, "fake-model", extra_body={"chat_template_kwargs": {"enable_thinking": False}}
        )
        llm.complete(ask())
        llm.complete(shaped())
    assert all(body["chat_template_kwargs"] == {"enable_thinking": False} for body in server.requests)
    assert "grammar" in server.requests[1]


def test_the_served_context_window_is_read_from_model_metadata() -> None:
    with FakeOpenAIServer.replaying([]) as server:
        assert OpenAICompatibleLLM(server.base_url, "fake-model").context_window is None
        server.model_fields = {"max_model_len": 4096}
        assert OpenAICompatibleLLM(server.base_url, "fake-model").context_window == 4096
        assert OpenAICompatibleLLM(server.base_url, "other-model").context_window is None
    closed = f"http://127.0.0.1:{closed_port()}/v1"
    assert OpenAICompatibleLLM(closed, "m", max_retries=0).context_window is None


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_grammar_goes_alone_even_when_the_request_also_has_a_schema() -> None:
    # The verification judge asks with both; llama-cpp-python's server fails on a json_schema
    # response_format, and the grammar already fixes the JSON.
    from deepdraft.protocol.grammar import reply_shape

    request = ChatRequest.user("judge", json_schema=SCHEMA, reply_shape=reply_shape("search"))
    with FakeOpenAIServer.replaying(["<action>{}</action>", "{}"]) as server:
        OpenAICompatibleLLM(server.base_url, "fake-model").complete(request)
        OpenAICompatibleLLM(server.base_url, "fake-model", constrain="off").complete(request)
    assert "grammar" in server.requests[0] and "response_format" not in server.requests[0]
    assert "grammar" not in server.requests[1] and "response_format" in server.requests[1]


def test_a_schema_rejected_with_http_500_is_dropped_too() -> None:
    # llama-cpp-python answers an unknown response_format type with a 500 naming the field.
    rejection = ErrorReply(500, "validation error: body.response_format.type: Input should be 'text'")
    with FakeOpenAIServer.replaying([rejection, "plain"]) as server:
        llm = OpenAICompatibleLLM(server.base_url, "fake-model", max_retries=0)
        assert llm.complete(ask(json_schema=SCHEMA)).text == "plain"
    assert ["response_format" in body for body in server.requests] == [True, False]
