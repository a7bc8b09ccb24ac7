"""The one tolerant JSON reader for model replies: actions, verification verdicts, eval judgments.

Models wrap JSON in what they were trained to write around it: hidden reasoning (`<think>…</think>`),
code fences, a sentence before or after, a trailing comma. `find_json` looks past all of these.
It never raises on model output; `None` means no JSON value could be read (a reply that is the
bare JSON `null` reads the same: no caller can use it).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

# Closed reasoning blocks only: JSON after an unclosed one is still an answer worth reading.
_THINK = re.compile(r"<(think|thinking|reasoning)>.*?</\1>", re.DOTALL | re.IGNORECASE)
_FENCE = re.compile(r"```[a-zA-Z]*[ \t]*\n?(.*?)\n?\s*```", re.DOTALL)
_TRAILING_COMMA = re.compile(r",(\s*[}\]])")


def find_json(text: str, kinds: tuple[type, ...] = (object,)) -> Any:
    """The first JSON value of one of `kinds` (e.g. `(dict,)`) found in `text`, or None.

    Tried in order: each fenced block's contents, the whole text, the span from the first opening
    brace to the last closing one (then the same for brackets), and each balanced top-level
    `{…}` or `[…]` span; each as it stands, then without trailing commas. Control characters
    inside strings are accepted (models write raw newlines in long strings).
    """
    for candidate in _candidates(_THINK.sub("", text or "").strip()):
        for variant in (candidate, _TRAILING_COMMA.sub(r"\1", candidate)):
            try:
                value = json.loads(variant, strict=False)
            except (ValueError, RecursionError):  # also a 5000-digit number or absurd nesting
                continue
            if value is not None and isinstance(value, kinds):
                return value
    return None


def has_json_object(text: str) -> bool:
    """Whether `text` has at least the shape of an object (an opening brace before a closing one)."""
    start, end = text.find("{"), text.rfind("}")
    return 0 <= start < end


def _candidates(text: str) -> Iterator[str]:
    yield from (match.group(1) for match in _FENCE.finditer(text))
    yield text
    for opening, closing in (("{", "}"), ("[", "]")):
        start, end = text.find(opening), text.rfind(closing)
        if 0 <= start < end:
            yield text[start : end + 1]
    yield from _balanced_spans(text)


def _balanced_spans(text: str) -> Iterator[str]:
    """Each top-level `{…}`/`[…]` span, found by bracket counting outside JSON strings."""
    start, depth, in_string, escaped = -1, 0, False, False
    for index, char in enumerate(text):
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
            continue
        if char == '"' and depth:
            in_string = True
        elif char in "{[":
            if depth == 0:
                start = index
            depth += 1
        elif char in "}]" and depth:
            depth -= 1
            if depth == 0:
                yield text[start : index + 1]
