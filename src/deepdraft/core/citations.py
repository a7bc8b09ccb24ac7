"""Citations in written text: `\\cite{textid3}` commands, and keys a model wrote in prose.

The protocol's writers cite evidence by key; the policies check them, the finishing passes re-cite
them and the exporters number them. All of them read citations through these functions.
"""

from __future__ import annotations

import re

from deepdraft.core.evidence import KEY_PREFIX

CITE = re.compile(r"\\cite\{([^{}]*)\}")
"""One citation command; group 1 holds its keys."""
_KEY = re.compile(rf"(?:bibkey\s*[:：]\s*)?({KEY_PREFIX}\d+)", re.IGNORECASE)
# Keys mentioned outside \cite{...}: "[textid3]", "(textid3, textid4)", "bibkey:textid3", "textid3".
_LOOSE_KEYS = re.compile(
    rf"[\[(（【]\s*(?:bibkey\s*[:：]\s*)?{KEY_PREFIX}\d+(?:\s*[,，;；]\s*(?:bibkey\s*[:：]\s*)?{KEY_PREFIX}\d+)*\s*[\])）】]"
    rf"|(?:bibkey\s*[:：]\s*)?\b{KEY_PREFIX}\d+\b",
    re.IGNORECASE,
)


def cited_keys(text: str) -> list[list[str]]:
    """The keys of every `\\cite{...}` in order, one list per citation command."""
    return [[m.group(1).lower() for m in _KEY.finditer(group)] for group in CITE.findall(text)]


def normalise_citations(text: str) -> str:
    """Rewrite citation keys written in prose as `\\cite{...}` so they count and render.

    Text already inside `\\cite{...}` is only cleaned (a stray `bibkey:` prefix is dropped).
    """
    pieces = []
    last = 0
    for match in CITE.finditer(text):
        pieces.append(_cite_loose(text[last : match.start()]))
        keys = [m.group(1).lower() for m in _KEY.finditer(match.group(1))]
        pieces.append("\\cite{" + ", ".join(keys) + "}" if keys else match.group(0))
        last = match.end()
    pieces.append(_cite_loose(text[last:]))
    return "".join(pieces)


def _cite_loose(text: str) -> str:
    def replace(match: re.Match[str]) -> str:
        keys = [m.group(1).lower() for m in _KEY.finditer(match.group(0))]
        return "\\cite{" + ", ".join(keys) + "}"

    return _LOOSE_KEYS.sub(replace, text)
