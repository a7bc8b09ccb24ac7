"""Reading a repaired sentence, and writing every decision of the pass back into a node's text."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from deepdraft.core.citations import cited_keys, normalise_citations
from deepdraft.core.verification import SentenceCheck
from deepdraft.policy.finishing.lexical import PREFIX, TextFeatures, claim_text, lexical_support
from deepdraft.protocol.actions import language_problem, split_reply
from deepdraft.protocol.attach import cite_sentence, content_words
from deepdraft.protocol.write_checks import copies_passage

REWRITE_SHARE = 0.5
"""Share a repaired sentence must reach: it was written from the passages, so it should echo them."""
MAX_REWRITE_CHARS = 3000
"""A repaired sentence replaces one sentence; a reply longer than this is refused before it is read
word by word (a runaway 40 MB reply took a quarter of a minute of language and overlap checks)."""
_FENCE = re.compile(r"```[a-zA-Z]*\s*\n?(.*?)\n?\s*```", re.S)
_BARE_MARKER = re.compile(r"^[ \t]*(?:[-*+]|\d{1,3}[.)]|>)[ \t]*$", re.MULTILINE)


@dataclass(frozen=True)
class Rewrite:
    text: str
    share: float


def read_rewrite(
    raw: str,
    keys: Sequence[str],
    passages: Sequence[str],
    question: str,
    language: str | None,
    features: Callable[[str], TextFeatures] = TextFeatures.of,
) -> Rewrite | str:
    """A repaired sentence from the model's reply, validated; or why it was refused."""
    body = split_reply(raw).body or ""
    fenced = _FENCE.search(body)
    text = " ".join((fenced.group(1) if fenced else body).split())
    if len(text) > MAX_REWRITE_CHARS:
        return f"the rewrite is {len(text):,} characters long: write one sentence"
    text = normalise_citations(text).strip().strip('"“”')
    # A sentence replaces a sentence: heading or list markers the model copied from a passage
    # ("# Address of 1832 …") would turn the repaired sentence into a heading or a list.
    text = re.sub(r"^(?:#{1,6}\s+|[-*+]\s+|>\s*)+", "", text)
    if not content_words(claim_text(text)) or claim_text(text).strip(".").upper() in {"NONE", "NO SUPPORT"}:
        return "the rewrite is empty: the passages support nothing of it"
    cited = {key for group in cited_keys(text) for key in group}
    if cited - set(keys):
        return f"the rewrite cites {', '.join(sorted(cited - set(keys)))}, which the sentence did not cite"
    if not cited:  # small models drop the citation; the keys are known, so put it back
        text = cite_sentence(text, ", ".join(keys))
    if problem := language_problem(text, question, language):
        return problem
    if copies_passage(claim_text(text), passages):
        # Measured in the README's main job: a one-sentence repair came back as five sentences of
        # its passage, which the report then printed as the part's text.
        return "the rewrite copies its passage word for word: say what it says in one sentence of your own"
    lexical = lexical_support(claim_text(text), passages, features)
    if lexical.verdict == "unsupported" or lexical.share < REWRITE_SHARE:
        return f"the rewrite does not follow its passages ({lexical.reason})"
    return Rewrite(text, lexical.share)


def rewrite_node(content: str, decided: Sequence[tuple[tuple[int, int], SentenceCheck]]) -> str:
    """`content` with each checked sentence replaced by its final text (removed ones dropped)."""
    pieces: list[str] = []
    last = 0
    for (start, end), check in sorted(decided, key=lambda pair: pair[0]):
        original = content[start:end]
        pieces.append(content[last:start])
        prefix = PREFIX.match(original)
        lead = prefix.group() if prefix else ""
        trail = original[len(original.rstrip()) :]
        if check.final_text:
            pieces.append(f"{lead}{check.final_text}{trail}")
        else:
            pieces.append(lead.rstrip(" ") + ("\n" if "\n" in trail else ""))
        last = end
    pieces.append(content[last:])
    # Tidy what removals leave behind: list markers with nothing after them, trailing blanks, runs of
    # empty lines, and the single space that separated a removed first sentence from the next one
    # (two or more spaces are indentation, and stay).
    text = _BARE_MARKER.sub("", "".join(pieces))
    text = re.sub(r"[ \t]+\n", "\n", text)
    text = re.sub(r"\n(?: ?\n)+", "\n\n", text)
    lines = text.split("\n")
    return "\n".join(line[1:] if re.match(r" \S", line) else line for line in lines).strip()
