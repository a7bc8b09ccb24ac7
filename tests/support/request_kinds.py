"""Which request of the protocol a `ChatRequest` (or an HTTP chat body) is, read from its structure.

Fake models must tell a search from a write from a verification without reading the prompt's
English: templates get reworded, and a fake that keys on their phrases breaks every test that uses
it. So the kind comes from what the request constrains the reply to:

- in-process, `ChatRequest.reply_shape` (its action schema: the action's `name` constant and key
  set; else its GBNF grammar) or `ChatRequest.json_schema`;
- over HTTP, the body's `grammar` (llama.cpp servers) or `response_format` JSON schema (JSON mode,
  possibly the `{"thought", "action"}` envelope), rebuilt into a `ChatRequest` by `request_from_body`.

Free-text replies (write, repair, summary, conclusion) share one shape by design, and nothing else
in the request (max_tokens, temperature, roles) differs between them; over HTTP not even the tag is
sent. They are told apart by the protocol *data* the prompt carries, never by template wording:
a write shows the Analyst's instruction line (`prompts.instruction`, the line the WARP model was
trained with); a repair shows evidence as `bibkey:textidN` blocks; a synthesis shows neither, and
its `part_name` value says which part it writes; a follow-up question's answer shows evidence
too, and names its task with `asks.TASK`. One passage of a part written passage by passage
(`research.write_by_passage`) is the one request with no reply constraint at all, and shows
exactly one evidence block. Verdict requests likewise: verification shows
evidence blocks, the constraint check shows none.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from deepdraft.policy.asks import TASK as ASK_TASK
from deepdraft.policy.finishing.synthesis import PART_NAMES
from deepdraft.ports import ChatRequest, Message, ReplyShape
from deepdraft.protocol.prompts import instruction

Kind = Literal[
    "search",
    "init-plan",
    "full-plan",
    "extend-plan",
    "write",
    "write-passage",
    "verify",
    "repair",
    "summary",
    "conclusion",
    "constraints",
    "constraint-check",
    "ask",
]

_INSTRUCTION = re.compile("^" + re.escape(instruction("")) + r"(\S+)$", flags=re.MULTILINE)
_EVIDENCE = re.compile(r"^bibkey:(textid\d+)$", flags=re.MULTILINE)
_OUTLINE_LINE = re.compile(r"^\s*#+ Section-([\d.]+) \[", flags=re.MULTILINE)
_GRAMMAR_NAME = re.compile(r'"\\"name\\"" ws ":" ws "\\"([a-z-]+)\\""')
_GRAMMAR_REPEAT = re.compile(r'\( ws "," ws item \)\{(\d+)\}')


@dataclass(frozen=True)
class Recognised:
    kind: Kind
    target: str = "outline"
    """The node the Analyst's instruction names (search, write); "outline" otherwise."""
    count: int = 0
    """How many verdicts a verify or constraint-check request asks for."""


def recognise(request: ChatRequest) -> Recognised:
    """The kind of `request`, from its reply constraint, then (free text only) its protocol data."""
    prompt = request.messages[-1].content
    constraint = _constraint(request)
    target = _target(prompt)
    if constraint is None:
        # The one request asked as plain text: a part written passage by passage, one passage each.
        if len(evidence_keys(prompt)) == 1:
            return Recognised("write-passage")
        raise AssertionError(f"an unconstrained request has no recognisable kind: {prompt[:200]}")
    kind, count = constraint
    if kind == "verdicts":
        return Recognised("verify" if evidence_keys(prompt) else "constraint-check", count=count)
    if kind != "free-text":
        # A split the user asked for (`deepdraft deepen`) names its node like a search does.
        targeted = kind in ("search", "extend-plan")
        return Recognised(kind, target if targeted else "outline")  # type: ignore[arg-type]
    if _INSTRUCTION.search(prompt):
        return Recognised("write", target)
    if ASK_TASK in prompt:  # a follow-up question's answer says what it is by `asks.TASK`
        return Recognised("ask")
    if evidence_keys(prompt):
        return Recognised("repair")
    return Recognised("summary" if PART_NAMES["summary"] in prompt else "conclusion")


def classify(request: ChatRequest) -> tuple[Kind, str]:
    """(kind, target) of `request`."""
    recognised = recognise(request)
    return recognised.kind, recognised.target


def classify_body(body: dict[str, Any]) -> tuple[Kind, str]:
    """(kind, target) of an OpenAI chat-completion body."""
    return classify(request_from_body(body))


_GRAMMAR_NODES = re.compile(r'node \( ws "," ws node \)\{(\d+),(\d+)\}')


def subsection_bounds(request: ChatRequest) -> tuple[int, int]:
    """How many subsections an extend-plan request allows, from its schema or its grammar."""
    shape = request.reply_shape
    schema = shape.action_schema if shape is not None else None
    if schema is not None:
        subsections = schema["anyOf"][0]["properties"]["subsections"]
        return int(subsections["minItems"]), int(subsections["maxItems"])
    assert shape is not None
    found = _GRAMMAR_NODES.search(shape.grammar)
    assert found is not None, "an extend-plan grammar without a list of nodes"
    return int(found.group(1)) + 1, int(found.group(2)) + 1


def evidence_keys(prompt: str) -> list[str]:
    """The keys of the evidence blocks a prompt shows (`bibkey:textidN` lines), in order."""
    return _EVIDENCE.findall(prompt)


def outline_positions(prompt: str) -> list[str]:
    """The positions of the outline lines a prompt shows (`# Section-1.2 [...]`), in order."""
    return _OUTLINE_LINE.findall(prompt)


def request_from_body(body: dict[str, Any]) -> ChatRequest:
    """The `ChatRequest` an OpenAI chat-completion body carries, its reply constraint included.

    `OpenAICompatibleLLM` sends a reply shape as a GBNF `grammar`, or in JSON mode as an envelope
    schema `{"thought", "action"}`; a plain JSON schema (no shape) as `response_format`.
    """
    messages = tuple(Message(m["role"], m["content"]) for m in body["messages"])
    grammar = body.get("grammar")
    schema = (body.get("response_format") or {}).get("json_schema", {}).get("schema")
    shape: ReplyShape | None = None
    json_schema = None
    if schema is not None and set(schema.get("properties", {})) == {"thought", "action"}:
        action = schema["properties"]["action"]
        shape = ReplyShape(grammar or "", None if action.get("type") == "string" else action)
    elif grammar is not None:
        shape = ReplyShape(grammar, None)
        json_schema = schema
    else:
        json_schema = schema
    return ChatRequest(
        messages=messages,
        max_tokens=body.get("max_tokens"),
        temperature=body.get("temperature"),
        top_p=body.get("top_p"),
        json_schema=json_schema,
        reply_shape=shape,
        seed=body.get("seed"),
    )


def _target(prompt: str) -> str:
    found = _INSTRUCTION.search(prompt)
    return found.group(1) if found else "outline"


def _constraint(request: ChatRequest) -> tuple[str, int] | None:
    """("search" | "init-plan" | "full-plan" | "extend-plan" | "verdicts" | "constraints" |
    "free-text", verdict count) from the request's schema or grammar; None when it has neither."""
    shape = request.reply_shape
    for schema in (shape.action_schema if shape else None, request.json_schema):
        if schema is not None:
            return _from_schema(schema)
    if shape is not None:
        return _from_grammar(shape.grammar)
    return None


def _from_schema(schema: dict[str, Any]) -> tuple[str, int]:
    if "anyOf" in schema:
        names = {alternative["properties"]["name"]["const"] for alternative in schema["anyOf"]}
        if names and names <= {"extend-plan", "nop"}:  # a split, a stop, or (required) only a split
            return "extend-plan", 0
    properties = schema.get("properties", {})
    name = properties.get("name", {}).get("const")
    if name == "search":
        return "search", 0
    if name == "init-plan":
        nested = "subsections" in properties["sections"]["items"]["properties"]
        return ("full-plan" if nested else "init-plan"), 0
    if set(properties) == {"verdicts"}:
        return "verdicts", int(properties["verdicts"]["minItems"])
    if set(properties) == {"required_items", "audience"}:
        return "constraints", 0
    raise AssertionError(f"a schema of no known request: {schema}")


def _from_grammar(grammar: str) -> tuple[str, int]:
    if '"\\"verdicts\\""' in grammar:
        repeat = _GRAMMAR_REPEAT.search(grammar)
        return "verdicts", 1 + (int(repeat.group(1)) if repeat else 0)
    names = set(_GRAMMAR_NAME.findall(grammar))
    if names == {"extend-plan", "nop"} or names == {"extend-plan"}:
        return "extend-plan", 0
    if names == {"search"}:
        return "search", 0
    if names == {"init-plan"}:
        return ("full-plan" if '"\\"subsections\\""' in grammar else "init-plan"), 0
    if not names:
        return "free-text", 0
    raise AssertionError(f"a grammar of no known request: {grammar[:200]}")
