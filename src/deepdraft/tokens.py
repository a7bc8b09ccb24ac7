"""A tokenizer-free token estimate, used to budget prompts and to size chunks.

Real tokenizers differ between models and none ships with the core install, so prompt budgets are
computed with an estimate that errs on the high side for BPE vocabularies: every CJK character
counts as one token, every punctuation mark as one, and a word as one token per started six
characters. For English prose this gives 1.3–1.5 tokens per word, slightly above GPT- and
Qwen-style tokenizers, so a budget computed with it is a safe one.
"""

from __future__ import annotations

import re

_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af"  # CJK, kana, hangul
_PIECE = re.compile(
    rf"[{_CJK}]"  # one CJK/kana/hangul char
    rf"|[^\W_{_CJK}]+"  # a run of other letters/digits (a CJK char never joins it: "用PyTorch训练")
    r"|[^\w\s]|_",  # one punctuation mark
)


def count_tokens(text: str) -> int:
    total = 0
    for match in _PIECE.finditer(text):
        piece = match.group()
        total += (len(piece) + 5) // 6
    return total


def head_tail(text: str, head: int, tail: int) -> str:
    """Keep about `head` tokens from the start and `tail` from the end, joined by " ... ".

    Cuts fall on token boundaries of the estimate above, so the result never splits a word.
    """
    pieces = list(_PIECE.finditer(text))
    if len(pieces) <= head + tail:
        return text
    start = text[: pieces[head - 1].end()] if head > 0 else ""
    end = text[pieces[len(pieces) - tail].start() :] if tail > 0 else ""
    return f"{start.rstrip()} ... {end.lstrip()}".strip()
