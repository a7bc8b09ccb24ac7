"""The judge's answer: one yes/no per numbered claim, as a schema, a grammar, and a tolerant reader.

Shared by verification (is this sentence supported by its passages?) and synthesis (does the
report cover this item, suit this audience?).
"""

from __future__ import annotations

import re
from typing import Any

from deepdraft.ports import ReplyShape
from deepdraft.protocol.actions import split_reply
from deepdraft.protocol.json_reply import find_json

JUDGE_TRIES = 2
"""An unreadable judge answer is asked once more; then its claims stay unverified."""
_YES = {"yes", "y", "true", "supported", "support", "1"}
_NO = {"no", "n", "false", "unsupported", "not supported", "0"}
_LISTED = re.compile(r"^\s*(?:claim\s*)?(\d{1,2})\s*[.):\-]?\s*[:\-]?\s*\**(yes|no)\b", re.I | re.M)
_FENCE = re.compile(r"```[a-zA-Z]*\s*\n?(.*?)\n?\s*```", re.S)


def verdict_schema(count: int) -> dict[str, Any]:
    """JSON schema of the judge's answer: one yes/no per numbered claim, `count` of them."""
    item = {
        "type": "object",
        "properties": {
            "claim": {"type": "integer", "minimum": 1, "maximum": count},
            "supported": {"type": "string", "enum": ["yes", "no"]},
        },
        "required": ["claim", "supported"],
        "additionalProperties": False,
    }
    return {
        "type": "object",
        "properties": {"verdicts": {"type": "array", "items": item, "minItems": count, "maxItems": count}},
        "required": ["verdicts"],
        "additionalProperties": False,
    }


def verdict_shape(count: int) -> ReplyShape:
    """The same answer as a GBNF grammar (llama.cpp, the embedded model) and a schema."""
    item = (
        r'"{" ws "\"claim\"" ws ":" ws [1-9] [0-9]? ws "," ws "\"supported\"" ws ":" ws '
        r'( "\"yes\"" | "\"no\"" ) ws "}"'
    )
    repeat = f'( ws "," ws item ){{{count - 1}}}' if count > 1 else ""
    grammar = (
        f'root ::= ws "{{" ws "\\"verdicts\\"" ws ":" ws "[" ws item {repeat} ws "]" ws "}}" ws\n'
        f"item ::= {item}\n"
        "ws ::= [ \\t\\n]{0,8}\n"
    )
    return ReplyShape(grammar, verdict_schema(count))


def _yes_no(value: object) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str | int):
        word = str(value).strip().strip(".!").lower()
        if word in _YES:
            return True
        if word in _NO:
            return False
    return None


def parse_verdicts(raw: str, count: int) -> dict[int, bool] | str:
    """Claim number → supported, for claims 1..`count`; or why the answer cannot be used."""
    body = split_reply(raw).body or ""
    fenced = _FENCE.search(body)
    if fenced:
        body = fenced.group(1)
    verdicts: dict[int, bool] = {}
    data = find_json(body, (dict, list))
    entries: list[object] = []
    if isinstance(data, dict):
        found = next((data[k] for k in ("verdicts", "claims", "answers", "results") if k in data), None)
        entries = found if isinstance(found, list) else []
    elif isinstance(data, list):
        entries = data
    for position, entry in enumerate(entries, start=1):
        number, value = position, entry
        if isinstance(entry, dict):
            number_value = next((entry[k] for k in ("claim", "item", "id", "number") if k in entry), position)
            number = number_value if isinstance(number_value, int) else _as_int(number_value, position)
            value = next((entry[k] for k in ("supported", "verdict", "answer") if k in entry), None)
        verdict = _yes_no(value)
        if verdict is not None and 1 <= number <= count:
            verdicts.setdefault(number, verdict)
    if not verdicts:  # a plain list, "1. yes / 2. no", as small models write without a grammar
        for match in _LISTED.finditer(body):
            number = int(match.group(1))
            if 1 <= number <= count:
                verdicts.setdefault(number, match.group(2).lower() == "yes")
    missing = [n for n in range(1, count + 1) if n not in verdicts]
    if missing:
        return (
            f'answer with only the JSON object {{"verdicts": [...]}} holding a "yes" or "no" for each of '
            f"the {count} claims; claim(s) {', '.join(map(str, missing))} had no readable verdict"
        )
    return verdicts


def _as_int(value: object, default: int) -> int:
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return default
