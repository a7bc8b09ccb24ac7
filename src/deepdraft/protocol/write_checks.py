"""Checks of a node's text against the passages it cites, before the text is accepted.

Citations that are well-formed can still carry a bad text: a small model writes a name or a year
that none of its passages holds, cites a passage for a sentence that shares nothing with it,
pastes a passage whole, or leaves the numbering of a list it never finished (`3.4.5.`, a lone
`3.`). Verification later checks claims one by one, but a fault caught here costs one re-ask
instead of a repaired or dropped sentence in the finished report.

- `without_debris` removes numbering left without text: it is never content, so it is cut at
  once, without asking the model again; `without_own_title` likewise a first line repeating the
  part's title, `before_protocol_tags` a second `<thought>`/`<action>` block written into the
  text, and `without_broken_start` the end of a sentence its notes began;
- `sentence_faults` lists each cited sentence's faults, phrased for the model to read:
  a number (3+ digits) or a name (a capitalised word inside the sentence) that none of its cited
  passages contains, few content words in common with them (under `min_support` of its own), or
  a verbatim run of `COPIED_RUN` words;
- `without_sentences` drops the sentences whose faults cannot be mended by rewording alone (the
  unsupported, unrelated and pasted ones), for when asking again is not worth it;
- `pasted_sentences` lists the uncited sentences that copy a passage word for word, and
  `copies_passage` tells whether a text does;
- `without_repeats` drops the sentences another part of the report (or the part itself) already
  says word for word;
- `before_loop` keeps what a model wrote before it started repeating itself;
- `without_unfounded` drops from an outline node's plan the sentences naming what no passage does.

Lexical rules, English and Chinese; the same measures a reader can recompute from the report.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from deepdraft.core.citations import CITE, cited_keys
from deepdraft.core.sentences import sentence_spans
from deepdraft.protocol.attach import content_words

COPIED_RUN = 12
"""A run of this many words shared with a cited passage is pasting, not writing."""
MIN_SUPPORT = 0.2
"""Below this share of its content words found in its passages, a sentence is about something else."""

# Numbering that lost its text: a line that is only a number ("3."), numbers run together at the
# end of a line ("3.4.5."), a bare number left after a sentence's full stop ("tariffs. 3."), and
# outline numbering before a paragraph ("1.2. Background: ...").
_LONE_NUMBER_LINE = re.compile(r"(?m)^[ \t]*(?:\d+\.)+\d*[ \t]*$\n?")
_NUMBER_RUN_AT_END = re.compile(r"(?m)[ \t]*(?:\b\d+\.[ \t]*){2,}$")
_HTML_PARAGRAPH = re.compile(r"[ \t]*<(?:p|br)\s*/?>[ \t]*", re.IGNORECASE)  # a small model's HTML
_NUMBER_AFTER_STOP = re.compile(r"(?m)(?<=[.!?。！？])[ \t]+\d+\.[ \t]*$")
# A list begun on the line of the sentence before it ("… currency question [1].1. There was …"):
# the item goes on a line of its own. Not "version 2.1. The": the stop follows no digit.
_LIST_AFTER_STOP = re.compile(r"(?<![\d\s])([.!?])[ \t]*(\d{1,2}\.[ \t]+)(?=[A-Z])")
_OUTLINE_NUMBER = re.compile(r"(?m)^([ \t]*)\d+\.\d+(?:\.\d+)*\.?[ \t]+")
_NUMBER = re.compile(r"(?<![\d.,])\d{3,}(?![\d])")
_NAME = re.compile(r"(?<=[a-z,;] )[A-Z][a-z]{2,}")
_WORD = re.compile(r"[^\W_]+", re.UNICODE)


def without_own_title(text: str, title: str) -> str:
    """`text` without the part's `title` repeated at its start — alone on the first line (as a
    heading, in bold, or bare) or before a colon that opens the text: the title is printed above
    the part already, and a small model asked for the part's text sometimes answered with its title
    alone (which citations placed by deepdraft would then have passed off as a part)."""
    name = title.strip()
    body = re.sub(r"^[\s#*_]+", "", text)
    if not name or not body.lower().startswith(name.lower()):
        return text
    rest = body[len(name) :]
    # The title's own end: a colon opening the text, or the end of its line (emphasis marks aside).
    end = re.match(r"[*_]*[ \t]*(?:[:：][*_]*\s*|[*_]*[ \t]*(?:\n|$))", rest)
    return rest[end.end() :].strip() if end else text


# A tag of the reply's frame inside a part's text: the model closed its text with a misspelt tag
# ("< /action>") or began a new <thought>/<action> block, and what follows is notes, not text.
_PROTOCOL_TAG = re.compile(r"<\s*/?\s*(?:thought|action)\s*>", re.IGNORECASE)


def before_protocol_tags(text: str) -> str:
    """`text` up to the first tag of the reply's frame in it (all of it when there is none).

    Seen in the README's main job: a write closed with "< /action>", went on with "from textid4",
    a second <thought> and <action>, and the tags and notes were printed as the part's text."""
    tag = _PROTOCOL_TAG.search(text)
    return text if tag is None else text[: tag.start()].rstrip()


def without_broken_start(text: str) -> str:
    """`text` without the words before its first finished sentence when it begins inside one (with
    a lowercase letter); nothing when that piece is all there is.

    The writer's notes are bounded (`write_notes_chars`); a small model whose notes were cut off
    mid-sentence finished that sentence as the first words of its text ("standard is necessary for
    monetary use …"), or as its whole text ("reliable supplies of energy to keep our economy
    growing …" was once a subsection), which is then no part at all."""
    body = text.lstrip()
    if not body[:1].islower():  # capitals, digits, list marks, and scripts without case start well
        return text
    first = _FINISHED.search(body)
    return body[first.end() :].strip() if first is not None else ""


def without_debris(text: str) -> str:
    """`text` with numbering that has no text of its own removed, and without a last sentence cut
    off by the token limit (a reply that stops mid-sentence)."""
    text = _HTML_PARAGRAPH.sub("\n\n", text)
    text = _LONE_NUMBER_LINE.sub("", text)
    text = _NUMBER_RUN_AT_END.sub("", text)
    text = _NUMBER_AFTER_STOP.sub("", text)
    text = _LIST_AFTER_STOP.sub(r"\1\n\n\2", text)
    text = _OUTLINE_NUMBER.sub(r"\1", text)
    return _without_unfinished_tail(re.sub(r"\n{3,}", "\n\n", text).strip())


# The end of a finished sentence: its stop, then any citations and closing quotes or brackets.
_FINISHED = re.compile(
    r"[.!?][\"'”’)\]]*(?:\s*\\cite\{[^}]*\}[.!?]?)*(?=\s|$)"  # Latin stops: a space follows
    r"|[。！？][”’）」]*(?:\\cite\{[^}]*\}[。！？]?)*"  # CJK stops: nothing need follow
)


def _without_unfinished_tail(text: str) -> str:
    """Cut words after the last finished sentence when they run on to the end of the text without
    a stop of their own, on the same line (a list item, table row or heading is left alone)."""
    last_line = text.rsplit("\n", 1)[-1]
    ends = list(_FINISHED.finditer(text))
    if not ends or re.match(r"\s*(?:[-*+|#>]|\d+[.)])", last_line):
        return text
    tail = text[ends[-1].end() :]
    if not tail.strip() or "\n" in tail.strip():
        return text
    return text[: ends[-1].end()].rstrip()


@dataclass(frozen=True)
class Fault:
    start: int
    end: int
    problem: str
    droppable: bool
    """Whether dropping the sentence mends it (unsupported, unrelated, pasted), or only rewording does."""


def _runs(text: str, size: int) -> set[tuple[str, ...]]:
    words = [w.lower() for w in _WORD.findall(text)]
    return {tuple(words[i : i + size]) for i in range(len(words) - size + 1)}


def sentence_faults(text: str, evidence: Mapping[str, str], min_support: float = MIN_SUPPORT) -> list[Fault]:
    """The faults of each sentence of `text` that cites passages of `evidence` (keys to texts)."""
    faults: list[Fault] = []
    for start, end in sentence_spans(text):
        sentence = text[start:end]
        keys = [key for group in cited_keys(sentence) for key in group if key in evidence]
        if not keys:
            continue
        claim = CITE.sub(" ", sentence)
        passages = " ".join(evidence[key] for key in keys)
        lowered = passages.lower()
        shown = _shorten(claim)
        numbers = [n for n in _NUMBER.findall(claim) if n not in passages]
        names = [n for n in dict.fromkeys(_NAME.findall(claim)) if n.lower() not in lowered]
        if numbers or names:
            missing = ", ".join([*numbers, *names][:3])
            faults.append(Fault(start, end, f"“{shown}” names {missing}, which its passages do not", True))
            continue
        words = content_words(claim)
        if words and len(words & content_words(passages)) / len(words) < min_support:
            faults.append(Fault(start, end, f"“{shown}” says little that its cited passage says", True))
            continue
        if _runs(claim, COPIED_RUN) & _runs(passages, COPIED_RUN):
            faults.append(Fault(start, end, f"“{shown}” copies its passage word for word", True))
    return faults


def copies_passage(text: str, passages: Iterable[str]) -> bool:
    """Whether `text` shares a verbatim run of `COPIED_RUN` words with one of the `passages`."""
    runs = _runs(text, COPIED_RUN)
    return any(runs & _runs(passage, COPIED_RUN) for passage in passages) if runs else False


def pasted_sentences(text: str, evidence: Mapping[str, str]) -> list[Fault]:
    """The sentences of `text` that cite nothing and copy one of the `evidence` passages word for
    word: a passage pasted into the text, which a small model does to fill a part (measured: one
    part was four passages pasted end to end under a single citation)."""
    passages: set[tuple[str, ...]] = set()
    for passage in evidence.values():
        passages |= _runs(passage, COPIED_RUN)
    faults = []
    for start, end in sentence_spans(text):
        sentence = text[start:end]
        if not CITE.search(sentence) and _runs(sentence, COPIED_RUN) & passages:
            faults.append(Fault(start, end, f"“{_shorten(sentence)}” copies a passage word for word", True))
    return faults


def cited_sentences(text: str) -> list[str]:
    """The sentences of `text` that carry a citation."""
    return [text[start:end] for start, end in sentence_spans(text) if CITE.search(text[start:end])]


def faults_reason(faults: Sequence[Fault], most: int = 3) -> str:
    """One reason for the model: the first faults, and what to do about them."""
    listed = "; ".join(fault.problem for fault in faults[:most])
    more = f" (and {len(faults) - most} more)" if len(faults) > most else ""
    return (
        f"{listed}{more}. Write every sentence in your own words from what its cited passages say, "
        "with no name or number they do not contain"
    )


def without_sentences(text: str, faults: Sequence[Fault]) -> str:
    """`text` without the sentences of the droppable `faults`."""
    kept, cursor = [], 0
    for fault in sorted((f for f in faults if f.droppable), key=lambda f: f.start):
        kept.append(text[cursor : fault.start])
        cursor = fault.end
    kept.append(text[cursor:])
    return re.sub(r"[ \t]+\n", "\n", re.sub(r"\n{3,}", "\n\n", "".join(kept))).strip()


def _shorten(sentence: str, most: int = 70) -> str:
    plain = re.sub(r"\s+([.,;:!?])", r"\1", " ".join(sentence.split()))
    return plain if len(plain) <= most else plain[: most - 1].rstrip() + "…"


REPEAT_WORDS = 5
"""Sentences shorter than this ("See below.") may well recur; longer ones say the same thing twice."""


def without_repeats(text: str, others: Iterable[str]) -> str:
    """`text` without the sentences that one of the `others` (the report's other parts) already
    holds, or that it said before itself — the same sentence, or a run of `COPIED_RUN` words in
    common — citations and case aside.

    A small model shown the same passage for two parts pastes the same sentences into both
    (measured: one report repeated 14 sentences); the second copy tells the reader nothing.
    """
    said: set[tuple[str, ...]] = set()
    for other in others:
        said |= _runs(CITE.sub(" ", other), COPIED_RUN)
        said |= {key for a, b in sentence_spans(other) if (key := _sentence_key(other[a:b]))}
    kept, cursor = [], 0
    for start, end in sentence_spans(text):
        sentence = CITE.sub(" ", text[start:end])
        key = _sentence_key(sentence)
        runs = _runs(sentence, COPIED_RUN)
        if (key is not None and key in said) or runs & said:
            kept.append(text[cursor:start])
            cursor = end
        else:  # what the part says once it does not say again either
            said |= runs | ({key} if key else set())
    kept.append(text[cursor:])
    return re.sub(r"[ \t]+\n", "\n", re.sub(r"\n{3,}", "\n\n", "".join(kept))).strip()


def _sentence_key(sentence: str) -> tuple[str, ...] | None:
    words = tuple(w.lower() for w in _WORD.findall(CITE.sub(" ", sentence)))
    return words if len(words) >= REPEAT_WORDS else None


LOOP_RUN = 6
LOOP_COUNT = 3
"""A run of `LOOP_RUN` words seen `LOOP_COUNT` times means the model is going round in circles."""


def before_loop(text: str) -> str | None:
    """The text a model wrote before it went round in circles (the second time the looping run of
    words began), cut back to its last finished sentence; None when it does not loop.

    A small model at low temperature can repeat its last paragraphs until the token limit; what
    came before the loop is usually sound, and asking again costs a whole write.
    """
    words = list(_WORD.finditer(CITE.sub(lambda m: " " * len(m.group()), text)))
    first_seen: dict[tuple[str, ...], list[int]] = {}
    for i in range(len(words) - LOOP_RUN + 1):
        gram = tuple(w.group().lower() for w in words[i : i + LOOP_RUN])
        starts = first_seen.setdefault(gram, [])
        starts.append(words[i].start())
        if len(starts) >= LOOP_COUNT:
            return _without_unfinished_tail(text[: starts[1]].rstrip())
    return None


def without_unfounded(plan: str, known: str) -> str:
    """`plan` without its sentences that name a number (3+ digits) or a name that `known` (the
    passages the outline was made from, and the request) does not contain.

    A small model fills an outline's plans from its own memory ("from Andrew Johnson in 1867 to
    the Smoot-Hawley Tariff of 1930"); the writer then follows the plan rather than its evidence
    (measured: four drafts of one part wrote the plan's invented story and cited nothing).
    """
    lowered = known.lower()
    kept = []
    for start, end in sentence_spans(plan):
        sentence = plan[start:end]
        numbers = [n for n in _NUMBER.findall(sentence) if n not in known]
        names = [n for n in _NAME.findall(sentence) if n.lower() not in lowered]
        if not numbers and not names:
            kept.append(sentence.strip())
    return " ".join(kept)
