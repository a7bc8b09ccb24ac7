"""`LLM` over any OpenAI-compatible chat-completions endpoint (vLLM, llama.cpp, Ollama, SGLang, ...).

Trade-offs:

- The official `openai` SDK does the HTTP work. The price is that its exception types must not
  leak: every failure is turned into one `LLMError` whose message is a single line naming the base
  URL (`errors.openai_sdk.map_openai_error`, shared with the embeddings client), and the SDK error
  is kept as `__cause__` for --debug.
- Retries are this module's, not the SDK's, because the SDK cannot see every transient failure: a
  200 whose body is no chat completion (an HTML page from a proxy, JSON cut off mid-way, an empty
  body, `choices: []`, `content: null`) is what overloaded servers and gateways send under load,
  just like a 5xx. So one policy covers them all: timeouts, refused or dropped connections, 408,
  409, 429 and 5xx (unless the server says `x-should-retry: false`) and unusable 200s are asked
  again `max_retries` times, waiting `retry_backoff_s`, doubling (at most 8 s, less up to a quarter
  of jitter), or what `Retry-After` asks for (up to a minute). The body is read here rather than by
  the SDK, so that an error says in one line what came back instead of quoting a parsed object.
- Privacy: the base URL is always passed explicitly, so the SDK never falls back to `OPENAI_BASE_URL`
  or api.openai.com, and the key is never read from the environment here (settings decide that).
- Constrained decoding is requested the portable way (`response_format` with a JSON schema). Servers
  that reject it get the request once more without it, and it is not sent to them again: validation
  downstream catches malformed actions anyway, so a schema is an optimisation, not a requirement.
- Streaming is not used: the policy needs whole replies, and a non-streamed call is easier to retry.
"""

from __future__ import annotations

import email.utils
import json
import logging
import math
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any, Literal

import httpx
import openai

from deepdraft.errors import ConfigError, LLMBadResponse, LLMError
from deepdraft.errors.openai_sdk import map_openai_error
from deepdraft.ports import ChatRequest, ChatResult, ReplyShape, Usage
from deepdraft.settings import LLMSettings

log = logging.getLogger(__name__)

ConstrainMode = Literal["auto", "grammar", "json", "off"]

_KEY_HINT = "check the API key (llm.api_key, DEEPDRAFT_API_KEY or OPENAI_API_KEY)"
_MAX_BACKOFF_S = 8.0  # the longest wait between two tries (as the SDK's own retries)
_MAX_RETRY_AFTER_S = 60.0  # a server asking for a longer pause is not waited for: the run stops


class OpenAICompatibleLLM:
    """Chat completions from the server at `base_url`; thread-safe, one HTTP connection pool."""

    def __init__(
        self,
        base_url: str,
        model: str | None = None,
        api_key: str | None = None,
        *,
        temperature: float = 0.7,
        top_p: float = 0.8,
        max_tokens: int = 2048,
        timeout_s: float = 300.0,
        max_retries: int = 3,
        retry_backoff_s: float = 0.5,
        constrain: ConstrainMode = "auto",
        extra_body: dict[str, Any] | None = None,
        http_client: httpx.Client | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.temperature = temperature
        self.top_p = top_p
        self.max_tokens = max_tokens
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.retry_backoff_s = retry_backoff_s
        self._sleep = sleep
        self._model = model
        self._model_lock = threading.Lock()
        self._context_window: int | Literal[False] | None = False  # False: not asked yet
        self._send_schema = True  # cleared once the server has rejected `response_format`
        self.constrain = constrain
        self.extra_body = dict(extra_body or {})
        self._send_grammar = constrain in ("auto", "grammar")  # cleared once a server rejects it
        self._client = openai.OpenAI(
            base_url=self.base_url,
            # Local servers accept anything; the SDK insists on a non-empty key, and reading
            # OPENAI_API_KEY itself would send a hosted key to whatever host was named.
            api_key=api_key or "no-key",
            # A short connect timeout: an unreachable host should fail in seconds, not in timeout_s
            # times the number of attempts; slow generation only affects the read timeout.
            timeout=openai.Timeout(timeout_s, connect=min(timeout_s, 10.0)),
            max_retries=max_retries,  # for listing models; completions are retried here
            # The SDK accepts both httpx and httpx2 clients but only annotates the latter.
            http_client=http_client,  # type: ignore[arg-type]
        )
        self._completions = self._client.with_options(max_retries=0).chat.completions

    @classmethod
    def from_settings(cls, settings: LLMSettings) -> OpenAICompatibleLLM:
        if not settings.base_url:
            raise ConfigError("no LLM base URL configured: pass --base-url (e.g. http://localhost:8000/v1)")
        return cls(
            settings.base_url,
            settings.model,
            settings.api_key,
            temperature=settings.temperature,
            top_p=settings.top_p,
            max_tokens=settings.max_tokens,
            timeout_s=settings.timeout_s,
            max_retries=settings.max_retries,
            retry_backoff_s=settings.retry_backoff_s,
            constrain=settings.constrain,
            extra_body=settings.extra_body,
        )

    @property
    def model_name(self) -> str:
        """The configured model, or the only model the server lists (asked once, on first use)."""
        with self._model_lock:
            if self._model is None:
                self._model = self._discover_model()
            return self._model

    @property
    def context_window(self) -> int | None:
        """The served context length when the server says (vLLM and SGLang list `max_model_len`)."""
        if self._context_window is False:
            self._context_window = self._served_context()
        return self._context_window

    def _served_context(self) -> int | None:
        try:
            entries = self._client.models.list().data
        except (openai.OpenAIError, ValueError):
            return None  # metadata is a nicety: the settings' context_window applies instead
        for entry in entries:
            if entry.id == self.model_name:
                value = getattr(entry, "max_model_len", None)
                return value if isinstance(value, int) and value > 0 else None
        return None

    def _discover_model(self) -> str:
        try:
            served = sorted(m.id for m in self._client.models.list().data)
        except (openai.OpenAIError, ValueError) as exc:
            raise self._translate(exc, "listing models") from exc
        if len(served) == 1:
            log.debug("using the only model served at %s: %s", self.base_url, served[0])
            return served[0]
        if not served:
            raise ConfigError(f"the LLM at {self.base_url} lists no models; pass --model")
        raise ConfigError(
            f"the LLM at {self.base_url} serves several models ({', '.join(served)}); "
            "pass --model to choose one"
        )

    def complete(self, request: ChatRequest) -> ChatResult:
        model = self.model_name
        params: dict[str, Any] = {
            "model": model,
            "messages": [{"role": m.role, "content": m.content} for m in request.messages],
            "temperature": self.temperature if request.temperature is None else request.temperature,
            "top_p": self.top_p if request.top_p is None else request.top_p,
            # `max_tokens`, not `max_completion_tokens`: the latter is unknown to several local servers.
            "max_tokens": self.max_tokens if request.max_tokens is None else request.max_tokens,
        }
        shape = request.reply_shape
        envelope = shape is not None and self.constrain == "json"
        schema = _envelope_schema(shape) if envelope and shape is not None else request.json_schema
        # A GBNF grammar already fixes the whole reply, JSON included; llama-cpp-python's server
        # even fails (HTTP 500) on a `json_schema` response_format, so the grammar goes alone.
        grammar = shape is not None and self._send_grammar
        if schema is not None and self._send_schema and not grammar:
            params["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "action", "schema": schema, "strict": False},
            }
        extra = dict(self.extra_body)
        if grammar and shape is not None:
            # llama.cpp's servers read a GBNF `grammar` beside the OpenAI fields; most other servers
            # ignore unknown fields, and those that reject it are not sent one again.
            extra["grammar"] = shape.grammar
        if extra:
            params["extra_body"] = extra
        if request.seed is not None:
            params["seed"] = request.seed
        result = self._complete_with_retries(params, model)
        if envelope and "response_format" in params:
            return replace(result, text=_from_envelope(result.text))
        return result

    def _complete_with_retries(self, params: dict[str, Any], model: str) -> ChatResult:
        """One completion, asked again after a transient failure, `max_retries` times."""
        tries = self.max_retries + 1
        for attempt in range(1, tries + 1):
            wait: float | None = None
            try:
                response = self._create(params)
                return self._result(response.status_code, response.headers, response.content, model)
            except LLMBadResponse as exc:
                if attempt == tries:
                    raise LLMBadResponse(f"{exc}{_after(tries)}") from None
                log.debug("%s; asking again", exc)
            except openai.APIStatusError as exc:
                if attempt == tries or not _worth_retrying(exc.status_code, exc.response.headers):
                    raise self._translate(exc, f"model {model!r}", attempt) from exc
                wait = _retry_after(exc.response.headers)
                if wait is not None and wait > _MAX_RETRY_AFTER_S:
                    raise self._translate(exc, f"model {model!r}", attempt) from exc
            except (openai.APITimeoutError, openai.APIConnectionError) as exc:
                if attempt == tries:
                    raise self._translate(exc, f"model {model!r}", attempt) from exc
            except (openai.OpenAIError, ValueError) as exc:
                raise self._translate(exc, f"model {model!r}", attempt) from exc
            self._sleep(self._backoff(attempt) if wait is None else wait)
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    def _backoff(self, attempt: int) -> float:
        """The wait before try `attempt + 1`: doubling from `retry_backoff_s`, jittered like the SDK's."""
        delay = min(self.retry_backoff_s * 2 ** (attempt - 1), _MAX_BACKOFF_S)
        return float(delay * (1 - 0.25 * random.random()))

    def _create(self, params: dict[str, Any]) -> Any:
        """One chat completion's raw 2xx response; drops a constraint the server rejects (a 400
        naming it) and asks again. The body is read by `_result`, not by the SDK."""
        while True:
            try:
                return self._completions.with_raw_response.create(**params)
            # Servers report an unsupported field as 400 or 422, and some (llama-cpp-python) as 500.
            except (
                openai.BadRequestError,
                openai.UnprocessableEntityError,
                openai.InternalServerError,
            ) as exc:
                body = exc.response.text.lower()
                if "response_format" in params and ("response_format" in body or "json_schema" in body):
                    log.debug("%s rejected response_format; sending no schema from now on", self.base_url)
                    self._send_schema = False
                    del params["response_format"]
                elif "grammar" in params.get("extra_body", {}) and "grammar" in body:
                    log.debug("%s rejected a grammar; sending none from now on", self.base_url)
                    self._send_grammar = False
                    params["extra_body"] = {k: v for k, v in params["extra_body"].items() if k != "grammar"}
                else:
                    raise

    def _result(self, status: int, headers: Any, body: bytes, model: str) -> ChatResult:
        """The completion in a 2xx response, or `LLMBadResponse` saying in one line what came instead.

        Servers behind proxies answer 200 with HTML, gateways cut bodies short, and some servers
        send a completion with no choices or no text under load: each is named, never quoted.
        """
        where = f"the LLM at {self.base_url} sent"
        completion = _completion_body(where, status, headers.get("content-type", ""), body)
        choices = completion.get("choices")
        choice = choices[0] if isinstance(choices, list) and choices else None
        if not isinstance(choice, dict):
            raise LLMBadResponse(f"{where} a chat completion with no choices (HTTP {status})")
        message = choice.get("message")
        text = message.get("content") if isinstance(message, dict) else None
        finish = choice.get("finish_reason")
        if not isinstance(text, str):
            why = f", finish_reason {finish}" if isinstance(finish, str) and finish else ""
            raise LLMBadResponse(f"{where} a chat completion whose message has no text (HTTP {status}{why})")
        usage = completion.get("usage")
        served = completion.get("model")
        return ChatResult(
            text=text,
            usage=Usage(_count(usage, "prompt_tokens"), _count(usage, "completion_tokens")),
            model=served if isinstance(served, str) and served else model,
            finish_reason=str(finish or ""),
        )

    def _translate(self, exc: Exception, what: str, attempts: int | None = None) -> LLMError:
        """One human line for an SDK error; the caller chains `exc` as the cause."""
        return map_openai_error(
            exc,
            where=f"the LLM at {self.base_url}",
            what=what,
            timeout_s=self.timeout_s,
            key_hint=_KEY_HINT,
            detect_overflow=True,
            attempts=attempts,
        )


def _after(tries: int) -> str:
    return f" after {tries} attempts" if tries > 1 else ""


def _worth_retrying(status: int, headers: Mapping[str, str]) -> bool:
    """Whether a failed HTTP answer may succeed when asked again (the SDK's rules; the server's word
    first)."""
    said = headers.get("x-should-retry")
    if said in ("true", "false"):
        return said == "true"
    return status in (408, 409, 429) or status >= 500


def _retry_after(headers: Mapping[str, str]) -> float | None:
    """The pause a server asks for (`retry-after-ms`, or `retry-after` in seconds or as a date)."""
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            seconds = float(value) * scale
        except ValueError:
            continue
        return seconds if math.isfinite(seconds) and seconds >= 0 else None
    when = headers.get("retry-after")
    parsed = email.utils.parsedate_tz(when) if when else None
    if parsed is None:
        return None
    return max(0.0, email.utils.mktime_tz(parsed) - time.time())


_JSON_NAMES: dict[type, str] = {
    list: "array",
    str: "string",
    int: "number",
    float: "number",
    bool: "boolean",
    type(None): "null",
}


def _completion_body(where: str, status: int, content_type: str, body: bytes) -> dict[str, Any]:
    """The JSON object of a 2xx body, or `LLMBadResponse` naming what the body is instead."""
    if not body.strip():
        raise LLMBadResponse(f"{where} an empty body (HTTP {status})")
    if "html" in content_type.lower() or body.lstrip()[:1] == b"<":
        raise LLMBadResponse(f"{where} an HTML page instead of JSON (HTTP {status})")
    try:
        data = json.loads(body)
    except UnicodeDecodeError:
        raise LLMBadResponse(f"{where} a body that is not UTF-8 text (HTTP {status})") from None
    except json.JSONDecodeError as exc:
        if exc.pos >= len(body.rstrip()) - 1 or "Unterminated" in exc.msg:
            what = f"JSON that breaks off after {len(body):,} bytes"
        else:
            what = f"malformed JSON ({exc.msg} at character {exc.pos:,})"
        raise LLMBadResponse(f"{where} {what} (HTTP {status})") from None
    if not isinstance(data, dict):
        kind = _JSON_NAMES.get(type(data), "value")
        raise LLMBadResponse(f"{where} a JSON {kind} instead of a chat completion (HTTP {status})")
    return data


def _count(usage: object, name: str) -> int:
    value = usage.get(name) if isinstance(usage, dict) else None  # servers may omit usage: count zero
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _envelope_schema(shape: ReplyShape) -> dict[str, Any]:
    """JSON-mode backends answer `{"thought": ..., "action": ...}`; free-text actions are strings."""
    action = shape.action_schema if shape.action_schema is not None else {"type": "string", "minLength": 1}
    return {
        "type": "object",
        "properties": {"thought": {"type": "string"}, "action": action},
        "required": ["thought", "action"],
        "additionalProperties": False,
    }


def _from_envelope(text: str) -> str:
    """Turn an envelope reply back into the tagged form the parser reads; anything else passes."""
    try:
        data = json.loads(text)
    except ValueError:
        return text
    if not isinstance(data, dict) or "action" not in data:
        return text
    action = data["action"]
    body = action if isinstance(action, str) else json.dumps(action, ensure_ascii=False)
    return f"<thought>{data.get('thought', '')}</thought><action>{body}</action>"
