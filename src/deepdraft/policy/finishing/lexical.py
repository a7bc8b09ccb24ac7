"""Word overlap: what a sentence's own passages say of it without asking a model.

A sentence whose content words nearly all occur in its passages, with no figure or negation the
passages lack, is supported; one that shares (almost) nothing with them, or states a number or a
name (a capitalised word inside the sentence) that none of them contains, is unsupported; anything
between is unclear and goes to the judge. Where a caller sets a floor (`judge_floor`: a judge too
weak to trust on loose paraphrase), a sentence with less than that share is unsupported too.
Overlap is not entailment, so the thresholds are strict on the "supported" side: a wrongly passed
claim is worse than a call. Also here: a sentence's claim (its words without citations or list
marker).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import Literal

from deepdraft.core.citations import CITE
from deepdraft.core.evidence import EvidenceRegistry
from deepdraft.protocol.attach import content_words

SUPPORTED_SHARE = 0.75
"""Share of a sentence's content words that must occur in its passages to pass without a call..."""
SUPPORTED_MIN_SHARED = 3
"""... and at least this many of them (a three-word sentence proves little)."""
UNSUPPORTED_SHARE = 0.2
"""Below this share, with at most one shared word, a sentence is unsupported without a call."""

# Figures: at least two digits or a decimal ("1890", "45%", "3.5"); single digits are too often
# written out in words ("three") for their absence from a passage to mean anything.
_NUMBER = re.compile(r"\d[\d,]*(?:\.\d+)?")
# Names: a capitalised word inside a sentence (after a lower-case word or a comma), the way a
# reader spots one; a sentence's first word is capitalised anyway and says nothing.
_NAME = re.compile(r"(?<=[a-z,;] )[A-Z][a-z]{2,}")
_NEGATION = re.compile(r"\b(?:not|no|never|neither|nor|none|without|cannot)\b|n't|不|没有|未|无|非", re.I)
# What opens a line without being part of the claim: indentation, a list marker, a quote mark.
PREFIX = re.compile(r"^\s*(?:(?:[-*+]|\d{1,3}[.)])\s+|>\s*)?")
_SPACE_BEFORE_PUNCT = re.compile(r"\s+([.,;:!?。，；：！？])")


def claim_text(sentence: str) -> str:
    """The sentence without its citations, list marker and surrounding space."""
    text = CITE.sub(" ", sentence)
    text = PREFIX.sub("", text, count=1)
    return _SPACE_BEFORE_PUNCT.sub(r"\1", " ".join(text.split()))


def _figures(text: str) -> frozenset[str]:
    found = set()
    for match in _NUMBER.finditer(text):
        number = match.group().replace(",", "").rstrip(".")
        if len(number.replace(".", "")) >= 2 or "." in number:
            found.add(number)
    return frozenset(found)


@dataclass(frozen=True)
class TextFeatures:
    """What word overlap compares in a text: its content words, its figures, whether it negates.

    A passage's features are derived once per pass (`Verifier` keeps them by text): re-citing weighs
    a sentence against every passage of the run, and re-deriving them per pair dominated the pass.
    """

    words: frozenset[str]
    figures: frozenset[str]
    negated: bool
    names: frozenset[str] = frozenset()
    """Names inside the text, lower-cased (they are compared with a passage's `words`)."""

    @classmethod
    def of(cls, text: str) -> TextFeatures:
        negated = _NEGATION.search(text) is not None
        names = frozenset(name.lower() for name in _NAME.findall(text))
        return cls(frozenset(content_words(text)), _figures(text), negated, names)


@dataclass(frozen=True)
class Lexical:
    """What word overlap alone says about a claim and its passages."""

    verdict: Literal["supported", "unsupported", "unclear"]
    share: float
    reason: str


def lexical_support(
    claim: str,
    passages: Sequence[str],
    features: Callable[[str], TextFeatures] = TextFeatures.of,
    floor: float = 0.0,
) -> Lexical:
    """Judge `claim` against `passages` by word overlap (see the module docstring).

    `features` derives a passage's features; a caller judging many claims passes a cached one.
    Below the `floor` share of its content words in them, a claim is unsupported rather than
    unclear: a judge is not asked to pass it.
    """
    return lexical_verdict(TextFeatures.of(claim), [features(text) for text in passages], floor)


def lexical_verdict(claim: TextFeatures, passages: Sequence[TextFeatures], floor: float = 0.0) -> Lexical:
    """`lexical_support` from features. The passages count as one text: a word, figure or negation
    found in any of them is found (none of the three can span two passages)."""
    words = claim.words
    if not words:
        return Lexical("unclear", 0.0, "the sentence has no content words to compare")
    if not passages:
        return Lexical("unsupported", 0.0, "it cites no passage the run has seen")
    if len(passages) == 1:
        shared = len(words & passages[0].words)
    else:
        shared = sum(1 for word in words if any(word in passage.words for passage in passages))
    share = shared / len(words)
    missing = sorted(n for n in claim.figures if not any(n in passage.figures for passage in passages))
    if missing:
        return Lexical(
            "unsupported", share, f"the figure(s) {', '.join(missing)} appear in none of its passages"
        )
    absent = sorted(n for n in claim.names if not any(n in passage.words for passage in passages))
    if absent:
        return Lexical(
            "unsupported", share, f"the name(s) {', '.join(absent)} appear in none of its passages"
        )
    if shared <= 1 and share < UNSUPPORTED_SHARE:
        return Lexical("unsupported", share, f"it shares almost no words with its passages ({share:.0%})")
    if share < floor:
        reason = f"only {share:.0%} of its content words are in its passages (under {floor:.0%})"
        return Lexical("unsupported", share, reason)
    negated = claim.negated and not any(passage.negated for passage in passages)
    if share >= SUPPORTED_SHARE and shared >= SUPPORTED_MIN_SHARED and not negated:
        return Lexical("supported", share, f"{share:.0%} of its content words are in its passages")
    return Lexical("unclear", share, f"{share:.0%} of its content words are in its passages")


class PassageIndex:
    """The run's passages with their features, and which passages hold each content word.

    Built once per pass, when the first sentence is re-cited (the evidence no longer changes then).
    """

    def __init__(self, registry: EvidenceRegistry, features: Callable[[str], TextFeatures]) -> None:
        self.registry, self.size = registry, len(registry.items)
        self.keys = list(registry.items)
        self.features = [features(item.text) for item in registry.items.values()]
        self.holding: dict[str, list[int]] = {}
        for position, passage in enumerate(self.features):
            for word in passage.words:
                self.holding.setdefault(word, []).append(position)

    def describes(self, registry: EvidenceRegistry) -> bool:
        return registry is self.registry and len(registry.items) == self.size

    def best(
        self, claim: TextFeatures, exclude: Sequence[str], count: int, floor: float = 0.0
    ) -> list[tuple[Lexical, str]]:
        """The `count` passages, other than `exclude`, holding the largest share of the claim's
        content words (ties in the run's order), each with what word overlap says of it.

        Only passages sharing a content word with the claim are weighed: any other shares none, so
        it ranks below every passage that does, and word overlap finds it unsupported — re-citing
        could never choose it. (A claim without content words shares nothing with any passage:
        then all rank alike, in the run's order.)
        """
        shared: dict[int, int] = {}
        for word in claim.words:
            for position in self.holding.get(word, ()):
                shared[position] = shared.get(position, 0) + 1
        order: Iterable[int] = (
            sorted(shared, key=lambda position: (-shared[position], position))
            if claim.words
            else range(len(self.keys))
        )
        chosen = islice((p for p in order if self.keys[p] not in exclude), count)
        return [(lexical_verdict(claim, [self.features[p]], floor), self.keys[p]) for p in chosen]
