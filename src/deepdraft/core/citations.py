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
# Keys mentioned outside \cite{...}: "[textid3]", "(textid3, textid4)", "<textid3>", "bibkey:textid3",
# "textid3". The brackets go with the keys: left behind, "<textid3>" was printed as "<[1]>".
_LOOSE_KEYS = re.compile(
    rf"[\[(（【<]\s*(?:bibkey\s*[:：]\s*)?{KEY_PREFIX}\d+(?:\s*[,，;；]\s*(?:bibkey\s*[:：]\s*)?{KEY_PREFIX}\d+)*\s*[\])）】>]"
    rf"|(?:bibkey\s*[:：]\s*)?\b{KEY_PREFIX}\d+\b",
    re.IGNORECASE,
)


_KEY_LIST = rf"(?:bibkey\s*[:：]\s*)?{KEY_PREFIX}\d+(?:\s*[,，;；]\s*(?:bibkey\s*[:：]\s*)?{KEY_PREFIX}\d+)*"
# Every way models were seen to write a citation command, well-formed or not. The first branch
# that fits wins, so `\citetextid1` is read as \cite + textid1, not as natbib's \citet + "extid1".
_COMMAND = re.compile(
    r"(?P<space>[ \t]*)(?:\\+|(?<![\w\\])(?=cite\s*\{))cite"  # \cite, \\cite, or cite{ without one
    r"(?:"
    r"(?:alp|alt|author|year|p|t)?\*?\s*(?:\[[^\[\]\n]*\]\s*)?\{(?P<brace>[^{}\n]*)\}"  # \citep[p. 4]{...}
    rf"|[\s:：{{]*(?P<bare>{_KEY_LIST})\}}?"  # \citetextid1, \cite textid1, \cite{{textid1 unclosed
    r"|(?:alp|alt|author|year|p|t)?\*?\s*(?:\[(?P<bracket>[^\[\]\n]*)\]|\((?P<paren>[^()\n]*)\))"
    r"|(?:alp|alt|author|year|p|t)?\*?(?![^\W\d_])"  # a \cite with nothing after it
    r")",
    re.IGNORECASE,
)
CITE_WITH_SPACE = re.compile(r"[ \t]*\\cite\{[^{}]*\}")
"""One well-formed citation command with the spaces before it (what removing it should remove)."""


def repair_cite_commands(text: str) -> str:
    """Rewrite malformed citation commands as `\\cite{keys}`, and drop those that name no key.

    Models write `\\citetextid1`, `\\cite textid1`, `\\cite[textid1]`, `\\citep{textid1}`, an
    unclosed `\\cite{textid1` or a doubled backslash. Left alone they would reach the report
    verbatim, next to the citation deepdraft attaches for the sentence. A well-formed
    `\\cite{...}` that names no key is kept as it is: validation refuses it with a reason the model
    can act on, and the report drops it.
    """

    def repair(match: re.Match[str]) -> str:
        if CITE_WITH_SPACE.fullmatch(match.group(0)):
            return match.group(0)  # nothing to repair (an empty one is for validation to refuse)
        content = next((group for group in match.group("brace", "bare", "bracket", "paren") if group), "")
        keys = [m.group(1).lower() for m in _KEY.finditer(content)]
        if not keys:
            return ""  # a marker that cites nothing says nothing to the reader
        return match.group("space") + "\\cite{" + ", ".join(keys) + "}"

    return _COMMAND.sub(repair, text)


def cited_keys(text: str) -> list[list[str]]:
    """The keys of every `\\cite{...}` in order, one list per citation command."""
    return [[m.group(1).lower() for m in _KEY.finditer(group)] for group in CITE.findall(text)]


def normalise_citations(text: str) -> str:
    """Rewrite citation keys written in prose as `\\cite{...}` so they count and render.

    Malformed citation commands are repaired first (`repair_cite_commands`). Text already inside
    `\\cite{...}` is only cleaned (a stray `bibkey:` prefix is dropped).
    """
    text = repair_cite_commands(text)
    pieces = []
    last = 0
    for match in CITE.finditer(text):
        pieces.append(_cite_loose(text[last : match.start()]))
        keys = [m.group(1).lower() for m in _KEY.finditer(match.group(1))]
        pieces.append("\\cite{" + ", ".join(keys) + "}" if keys else match.group(0))
        last = match.end()
    pieces.append(_cite_loose(text[last:]))
    return _cited_subjects_named("".join(pieces))


# A citation starting a sentence and followed by its verb: the model named the passage by its key
# ("bibkey:textid7 discusses how …", "[2] shows that …", "The passage from textid6 mentions …").
# Not "\cite{a} and \cite{b} show".
_CITED_SUBJECT = re.compile(
    r"(?:(?i:(?:the|this|that)[ \t]+)?(?i:passage|source|text|document|excerpt|evidence)s?[ \t]+"
    r"(?i:(?:from|in|of|at)[ \t]+)?)?"
    r"\\cite\{[^{}]*\}[ \t]*[:,]?[ \t]+(?=[a-z]+\b(?![ \t]+\\cite))"
)
_BEFORE_SENTENCE = re.compile(r"(?:^|\n|[.!?][\"'”’)]*)[ \t]*$")
_SENTENCE_STOP = re.compile(r"[.!?]+[\"'”’)]*(?=\s|$)")
CITED_SUBJECT = "One source"
"""What stands for a passage a model named by its key as a sentence's subject."""


def _cited_subjects_named(text: str) -> str:
    """Each sentence whose subject is a citation gets `CITED_SUBJECT` as its subject and the
    citation at its end ("One source discusses how … \\cite{textid7}.").

    Left alone, the citation was read as the end of the sentence before it (a citation may follow
    a full stop), and the report printed "… in circulation.discusses how …".
    """
    pieces, cursor = [], 0
    for match in _CITED_SUBJECT.finditer(text):
        if match.start() < cursor or not _BEFORE_SENTENCE.search(text, 0, match.start()):
            continue
        stop = _SENTENCE_STOP.search(text, match.end())
        end = stop.start() if stop else len(text.rstrip())
        citation = CITE.search(text, match.start(), match.end())
        assert citation is not None  # the pattern holds one
        pieces += [text[cursor : match.start()], f"{CITED_SUBJECT} ", text[match.end() : end].rstrip()]
        pieces.append(f" {citation.group(0)}")
        cursor = end
    pieces.append(text[cursor:])
    return "".join(pieces)


def _cite_loose(text: str) -> str:
    def replace(match: re.Match[str]) -> str:
        keys = [m.group(1).lower() for m in _KEY.finditer(match.group(0))]
        return "\\cite{" + ", ".join(keys) + "}"

    return _LOOSE_KEYS.sub(replace, text)


def without_citations(text: str) -> str:
    """`text` with its citation commands removed (and the space before each)."""
    return CITE_WITH_SPACE.sub("", text)


def keeping_keys(text: str, allowed: set[str]) -> str:
    """`text` with each citation's keys narrowed to `allowed`; a citation left with none is removed."""

    def narrow(match: re.Match[str]) -> str:
        keys = [key for key in (m.group(1).lower() for m in _KEY.finditer(match.group(0))) if key in allowed]
        return " \\cite{" + ", ".join(keys) + "}" if keys else ""

    return CITE_WITH_SPACE.sub(narrow, text)
