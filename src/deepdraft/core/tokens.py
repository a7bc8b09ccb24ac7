"""A tokenizer-free token estimate, used to budget prompts and to size chunks.

Real tokenizers differ between models and none ships with the core install, so prompt budgets are
computed with an estimate that errs on the high side for BPE vocabularies: every CJK character
counts as one token, every punctuation mark and every digit as one (Qwen- and Llama-3-style
vocabularies split numbers into single digits), and a word as one token per started six letters.
For English prose this gives 1.3–1.5 tokens per word, slightly above GPT- and Qwen-style
tokenizers, so a budget computed with it is a safe one; a test checks it against the embedded
model's own tokenizer.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from deepdraft.core.scripts import CJK

_PIECE = re.compile(
    rf"[{CJK}]"  # one CJK/kana/hangul char
    rf"|[^\W\d_{CJK}]+"  # a run of other letters (a CJK char never joins it: "用PyTorch训练")
    r"|\d"  # one digit
    r"|[^\w\s]|_",  # one punctuation mark
)
_WORD = re.compile(rf"[{CJK}]|[^\s{CJK}]+")


def count_tokens(text: str) -> int:
    total = 0
    for match in _PIECE.finditer(text):
        piece = match.group()
        total += (len(piece) + 5) // 6
    return total


def head_tail(text: str, head: int, tail: int) -> str:
    """Keep at most `head` tokens from the start and `tail` from the end, joined by " ... ".

    Cuts fall between words (a CJK character counts as a word), so no word is ever split. Only
    the words kept are measured, so cutting a long text costs little more than finding its words.
    """
    words = list(_WORD.finditer(text))
    first = _fill((word.group() for word in words), head)
    last = len(words) - _fill((word.group() for word in reversed(words[first:])), tail)
    if last - first <= 3:  # the " ... " marker costs tokens too: cut only if it saves some
        return text
    start = text[: words[first - 1].end()] if first > 0 else ""
    end = text[words[last].start() :] if last < len(words) else ""
    return f"{start.rstrip()} ... {end.lstrip()}".strip()


def _fill(words: Iterable[str], budget: int) -> int:
    """How many of the leading words fit in `budget` tokens."""
    used = taken = 0
    for word in words:
        used += count_tokens(word)
        if used > budget:
            break
        taken += 1
    return taken
