"""What the `openai` SDK's exceptions mean for deepdraft: one `LLMError`, one human line.

Every endpoint deepdraft reaches through the SDK (chat completions in `openai_compat`, embeddings in
`retrieval.embedders`) reports its failures the same way: the line names the endpoint, says what
went wrong (refused connection, timeout after n attempts, HTTP status with the server's own
message) and what to check. The SDK error is not part of the line; callers chain it as
``__cause__`` so that --debug still shows it.
"""

from __future__ import annotations

import re

import openai

from deepdraft.errors import (
    LLMBadResponse,
    LLMContextOverflow,
    LLMError,
    LLMRefused,
    LLMServerError,
    LLMTimeout,
    LLMUnreachable,
)

__all__ = ["map_openai_error", "one_line"]

# How vLLM, llama.cpp, llama-cpp-python, SGLang and hosted APIs word "the prompt is too long".
_CONTEXT_OVERFLOW = re.compile(
    r"context[ _](length|window|size)|maximum context|exceeds? (the )?(available )?context|too many tokens"
    r"|prompt is too long",
    re.IGNORECASE,
)


def map_openai_error(
    exc: Exception,
    *,
    where: str,
    what: str,
    timeout_s: float,
    key_hint: str,
    rejected_hint: str = "",
    detect_overflow: bool = False,
    attempts: int | None = None,
) -> LLMError:
    """The `LLMError` for an SDK exception (or a ValueError from a 200 body that is not JSON).

    `where` names the endpoint ("the LLM at http://…"), `what` the request ("model 'x'"),
    `key_hint` what to check on 401/403, `rejected_hint` what to try on another 4xx. With
    `detect_overflow`, a 400/413/422 that says the prompt is too long becomes `LLMContextOverflow`
    (which the policy answers with shorter prompts). `attempts`: how often the request was sent, for
    a caller that retries on its own (else the SDK's count of its retries is read from the request).
    """
    tries = _attempts(exc) if attempts is None else (f" after {attempts} attempts" if attempts > 1 else "")
    if isinstance(exc, openai.APITimeoutError):
        return LLMTimeout(f"{where} did not answer within {timeout_s:g} s{tries}")
    if isinstance(exc, openai.APIConnectionError):
        reason, hint = _connection_problem(exc)
        return LLMUnreachable(f"cannot reach {where}: {reason}. {hint}")
    if isinstance(exc, openai.APIStatusError):
        status, message = exc.status_code, _server_message(exc)
        if status in (401, 403):
            return LLMRefused(f"{where} refused the request (HTTP {status}: {message}); {key_hint}")
        if status == 404:
            return LLMRefused(
                f"{where} answered 404 for {what}: unknown model or wrong base URL "
                f"(OpenAI-compatible base URLs usually end in /v1): {message}"
            )
        if detect_overflow and status in (400, 413, 422) and _CONTEXT_OVERFLOW.search(message):
            return LLMContextOverflow(f"{where}: the prompt is longer than the model's context ({message})")
        if status == 429 or status >= 500:
            return LLMServerError(f"{where} failed with HTTP {status}{tries}: {message}")
        hint = f"; {rejected_hint}" if rejected_hint else ""
        return LLMRefused(f"{where} rejected the request for {what} (HTTP {status}): {message}{hint}")
    return LLMBadResponse(f"{where} sent an unusable answer: {one_line(str(exc))}")


def one_line(text: str, limit: int = 300) -> str:
    """`text` with its white space folded, cut to `limit` characters (an error line stays a line)."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _attempts(exc: Exception) -> str:
    """A suffix like " after 4 attempts" when the SDK retried (it numbers each try in a header)."""
    request = getattr(exc, "request", None)
    try:
        retries = int(request.headers.get("x-stainless-retry-count", 0)) if request is not None else 0
    except ValueError:
        retries = 0
    return f" after {retries + 1} attempts" if retries else ""


_HTML_TITLE = re.compile(r"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)


def _server_message(exc: openai.APIStatusError) -> str:
    body = exc.body  # the SDK has already unwrapped {"error": {...}}; servers differ in what is left
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        body = body["message"]
    text = body if isinstance(body, str) else exc.response.text
    if text.lstrip()[:1] == "<" or "html" in exc.response.headers.get("content-type", "").lower():
        # A proxy's error page: its markup says nothing, its title at most what happened.
        title = _HTML_TITLE.search(text)
        return "an HTML error page" + (f" ({one_line(title.group(1), 120)})" if title else "")
    return one_line(text) or "no details"


def _connection_problem(exc: openai.APIConnectionError) -> tuple[str, str]:
    """(what went wrong, what to check), read from the httpx error the SDK wrapped."""
    cause = exc.__cause__
    detail = str(cause or exc).lower()
    if "refused" in detail:
        return "connection refused", "Is the server running?"
    if any(s in detail for s in ("name or service", "nodename", "getaddrinfo", "name resolution")):
        return "host name not found", "Check the base URL."
    if any(s in detail for s in ("ssl", "certificate", "tls")):
        return f"TLS error ({one_line(str(cause))})", "Check the URL scheme and the certificate."
    return one_line(str(cause or exc)) or "connection failed", "Is the server running?"
