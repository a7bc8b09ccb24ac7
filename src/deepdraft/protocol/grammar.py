"""What a reply must look like, written for backends that can constrain generation.

Small models drift from the protocol (two sections where 3–12 were asked, prose around the JSON,
a missing tag). Backends that accept a grammar can rule that out: the *whole* reply is constrained,
the `<thought>…</thought><action>…</action>` frame as well as the action's JSON with its count
bounds. Measured on a 1.5B model, this fixed its outlines at no extra cost.

Each `ReplyShape` carries two descriptions of the same thing:
- `grammar`: GBNF (llama.cpp, in-process or as a server) for the whole reply;
- `action_schema`: a JSON schema of the action alone, for backends that only have a JSON mode
  (OpenAI structured outputs, Ollama); they get an envelope `{"thought", "action"}` instead.

`write` is deliberately constrained only to its frame: forcing citations through a grammar made a
small model's prose degenerate (DESIGN §5), so its citations are checked by validation instead.
The JSON grammars fix the key order the prompts show, which every model follows anyway.
"""

from __future__ import annotations

from functools import cache
from typing import Any, Literal

from deepdraft.ports import ReplyShape
from deepdraft.protocol.actions import MAX_KEYWORDS, SECTIONS_RANGE, SUBSECTIONS_RANGE

ShapeName = Literal["search", "init-plan", "full-plan", "extend-plan", "write"]

_WS = r"""
ws ::= [ \t\n]{0,12}
"""
# A string may not hold "<": no title, plan or keyword needs one, and a model that wrote
# `</action>` inside a plan (then commas to the token limit) lost a whole extend-plan reply; without
# "<" the string has to close. (Measured: once in 442 plan and search steps, 68 s.)
_VALUES = r"""string ::= "\"" char+ "\""
char ::= [^"\\<\x00-\x1F] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F]{4})
node ::= "{" ws "\"title\"" ws ":" ws string ws "," ws "\"plan\"" ws ":" ws string ws "}"
"""


def _common(thought_chars: int | None = None) -> str:
    """The rules every reply shares; its thought is free text of at most `thought_chars` (None: any)."""
    thought = "[^<]*" if thought_chars is None else f"[^<]{{0,{thought_chars}}}"
    return f"{_WS}thought ::= {thought}\n{_VALUES}"


_COMMON = _common()

_FRAME = 'root ::= ws "<thought>" thought "</thought>" ws "<action>" ws action ws "</action>" ws\n'


def _list(item: str, low: int, high: int) -> str:
    """A JSON array of `low`..`high` items."""
    return f'"[" ws {item} ( ws "," ws {item} ){{{low - 1},{high - 1}}} ws "]"'


def _key(name: str) -> str:
    return f'"\\"{name}\\"" ws ":" ws'


def _name(value: str) -> str:
    return f'"{{" ws {_key("name")} "\\"{value}\\""'


_SEARCH = (
    f'action ::= {_name("search")} ws "," ws {_key("keywords")} {_list("string", 1, MAX_KEYWORDS)} ws "}}"\n'
)
_POSITION = r'"\"section-" [1-9] [0-9]{0,2} ( "." [1-9] [0-9]{0,2} )? "\""'


def _init(sections: tuple[int, int]) -> str:
    return (
        f'action ::= {_name("init-plan")} ws "," ws {_key("title")} string ws "," ws {_key("sections")} '
        f'{_list("node", *sections)} ws "}}"\n'
    )


def _extend(subsections: tuple[int, int], positions: tuple[str, ...] | None, may_stop: bool) -> str:
    """`positions`: the nodes that may be split (None: any position); with none, only a stop.
    `may_stop` False: only a split, while some node can still be split."""
    nop = f'nop ::= {_name("nop")} ws "}}"\n'
    if positions == ():
        return "action ::= nop\n" + nop
    position = _POSITION if positions is None else " | ".join(f'"\\"{p}\\""' for p in positions)
    return (
        ("action ::= extend | nop\n" + nop if may_stop else "action ::= extend\n")
        + f'extend ::= {_name("extend-plan")} ws "," ws {_key("position")} ( {position} ) ws "," ws '
        f'{_key("subsections")} {_list("node", *subsections)} ws "}}"\n'
    )


def _full(sections: tuple[int, int], subsections: tuple[int, int]) -> str:
    """The baseline's complete outline: sections may nest subsections, which may nest once more."""
    return (
        f'action ::= {_name("init-plan")} ws "," ws {_key("title")} string ws "," ws {_key("sections")} '
        f'{_list("outer", *sections)} ws "}}"\n'
        f'outer ::= "{{" ws {_key("title")} string ws "," ws {_key("plan")} string '
        f'( ws "," ws {_key("subsections")} {_list("middle", *subsections)} )? ws "}}"\n'
        f'middle ::= "{{" ws {_key("title")} string ws "," ws {_key("plan")} string '
        f'( ws "," ws {_key("subsections")} {_list("node", *subsections)} )? ws "}}"\n'
    )


# Free Markdown that cannot close the action early: no "</" inside.
_WRITE = 'action ::= ( [^<] | "<" [^/] )+\n'


def _string_schema() -> dict[str, Any]:
    return {"type": "string", "minLength": 1}


def _nodes_schema(low: int, high: int) -> dict[str, Any]:
    node = {
        "type": "object",
        "properties": {"title": _string_schema(), "plan": _string_schema()},
        "required": ["title", "plan"],
        "additionalProperties": False,
    }
    return {"type": "array", "items": node, "minItems": low, "maxItems": high}


def _action_schema(name: str, **properties: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {"name": {"const": name}, **properties},
        "required": ["name", *properties],
        "additionalProperties": False,
    }


@cache
def reply_shape(
    name: ShapeName,
    sections: tuple[int, int] = SECTIONS_RANGE,
    subsections: tuple[int, int] = SUBSECTIONS_RANGE,
    positions: tuple[str, ...] | None = None,
    *,
    notes: int | None = None,
    may_stop: bool = True,
) -> ReplyShape:
    """The constraint for a reply to the prompt of action `name`, with the run's count bounds;
    for extend-plan, `positions` are the nodes it may split (None: any) and `may_stop` whether it
    may stop instead; for write, `notes` is the most characters its thought may have (None: any)."""
    if name == "search":
        keywords = {"type": "array", "items": _string_schema(), "minItems": 1, "maxItems": MAX_KEYWORDS}
        return ReplyShape(_FRAME + _SEARCH + _COMMON, _action_schema("search", keywords=keywords))
    if name == "init-plan":
        schema = _action_schema("init-plan", title=_string_schema(), sections=_nodes_schema(*sections))
        return ReplyShape(_FRAME + _init(sections) + _COMMON, schema)
    if name == "full-plan":
        # JSON-only backends get the init-plan schema with open-ended nesting; validation still
        # enforces the three levels and the counts.
        nested = _nodes_schema(*sections)
        nested["items"]["properties"]["subsections"] = {"type": "array", "items": {"type": "object"}}
        schema = _action_schema("init-plan", title=_string_schema(), sections=nested)
        return ReplyShape(_FRAME + _full(sections, subsections) + _COMMON, schema)
    if name == "extend-plan":
        position: dict[str, Any] = {"type": "string", "pattern": r"^section-[1-9][0-9]*(\.[1-9][0-9]*)?$"}
        if positions is not None:
            position = {"type": "string", "enum": list(positions)}
        extend = _action_schema("extend-plan", position=position, subsections=_nodes_schema(*subsections))
        if positions == ():
            choices = [_action_schema("nop")]
        else:
            choices = [extend, _action_schema("nop")] if may_stop else [extend]
        return ReplyShape(_FRAME + _extend(subsections, positions, may_stop) + _COMMON, {"anyOf": choices})
    return ReplyShape(_FRAME + _WRITE + _common(notes), None)
