"""Tests of the tokenizer-free token estimate and of head…tail cutting."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from deepdraft.core.tokens import count_tokens, head_tail

# Text mixing the scripts the estimate treats differently: Latin words, digits, CJK, punctuation.
_MIXED = st.text(
    alphabet=st.sampled_from(list("abcXYZ019 _.,;!?'-\n\t") + list("中文字研究かなカナ한글é")),
    max_size=200,
)
_ANY = st.text(max_size=200)


# ---- count_tokens --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", 0),
        ("   \n\t ", 0),
        ("hello", 1),
        ("abcdef", 1),  # one token per started six characters
        ("abcdefg", 2),
        ("abcdefghijkl", 2),
        ("abcdefghijklm", 3),
        ("2024", 4),  # digits one by one, as Qwen- and Llama-3-style tokenizers split them
        ("a, b.", 4),  # every punctuation mark is one token
        ("a_b", 3),  # an underscore is punctuation, not part of a word
        ("...", 3),
        ("中文字", 3),  # every CJK character is one token
        ("ひらがな", 4),
        ("한국어", 3),
        ("The cat sat on the mat.", 7),
    ],
)
def test_count_tokens_examples(text: str, expected: int) -> None:
    assert count_tokens(text) == expected


def test_cjk_characters_count_one_each_even_glued_to_latin_words() -> None:
    # Chinese prose embeds English names without spaces; every CJK character still counts.
    assert count_tokens("使用PyTorch训练模型") == count_tokens("使用 PyTorch 训练模型") == 8
    assert count_tokens("abc中") == 2
    assert count_tokens("中abc") == 2


def test_english_prose_errs_on_the_high_side() -> None:
    prose = (
        "Solid-state batteries replace the flammable liquid electrolyte with a solid one, which "
        "promises higher energy density and better safety, but interface degradation remains an "
        "unsolved engineering problem for manufacturers."
    )
    words = len(prose.split())
    assert 1.0 * words <= count_tokens(prose) <= 1.8 * words


@given(_ANY)
def test_every_whitespace_separated_word_costs_at_least_one_token(text: str) -> None:
    assert count_tokens(text) >= len(re.findall(r"\S+", text))


@given(_MIXED, _MIXED)
def test_estimate_is_subadditive(a: str, b: str) -> None:
    # The chunker relies on this: the sum of the parts' counts bounds the count of their span.
    assert count_tokens(a + b) <= count_tokens(a) + count_tokens(b)


@given(_MIXED, _MIXED)
def test_estimate_is_additive_across_whitespace(a: str, b: str) -> None:
    # Prompt views are budgeted line by line, which relies on this.
    assert count_tokens(a + " " + b) == count_tokens(a) + count_tokens(b)


@given(_MIXED)
def test_estimate_never_decreases_as_a_prefix_grows(text: str) -> None:
    counts = [count_tokens(text[:i]) for i in range(len(text) + 1)]
    assert counts == sorted(counts)


# ---- head_tail -----------------------------------------------------------------------------------


def _words(n: int) -> str:
    """n one-token words: wa, wb, ... (letters only: a digit would be a token of its own)."""
    return " ".join(f"w{chr(ord('a') + i)}" for i in range(n))


def test_short_text_is_returned_unchanged() -> None:
    text = _words(10)
    assert head_tail(text, 6, 4) == text
    assert head_tail(text, 100, 50) == text


def test_long_text_keeps_head_and_tail_joined_by_an_ellipsis() -> None:
    assert head_tail(_words(20), 3, 2) == "wa wb wc ... ws wt"


def test_zero_head_or_zero_tail() -> None:
    assert head_tail(_words(20), 0, 2) == "... ws wt"
    assert head_tail(_words(20), 2, 0) == "wa wb ..."


def test_cut_on_cjk_text_keeps_characters_whole() -> None:
    text = "固态电池的界面稳定性仍然是一个难题"
    assert head_tail(text, 2, 2) == "固态 ... 难题"


@given(
    st.lists(st.from_regex(r"[a-z]{1,6}", fullmatch=True), max_size=80),  # one token each
    st.integers(0, 20),
    st.integers(0, 20),
)
def test_head_tail_never_splits_a_word(words: list[str], head: int, tail: int) -> None:
    text = " ".join(words)
    result = head_tail(text, head, tail)
    if len(words) <= head + tail + 3:  # cutting would not save anything over the " ... " marker
        assert result == text
        return
    expected = [*words[:head], "...", *words[len(words) - tail :]] if tail else [*words[:head], "..."]
    assert result.split() == expected


_NO_DOTS = st.text(alphabet=st.sampled_from(list("abcXYZ019 _,;!?'-\n") + list("中文字研究")), max_size=200)


@given(_NO_DOTS, st.integers(0, 30), st.integers(0, 30))
def test_head_tail_keeps_a_prefix_and_a_suffix_of_the_text(text: str, head: int, tail: int) -> None:
    result = head_tail(text, head, tail)
    if result == text:
        return
    # Without dots in the text, the only "..." is the one head_tail inserted.
    assert result.count("...") == 1
    start, end = (part.strip() for part in result.split("..."))
    assert text.lstrip().startswith(start)
    assert text.rstrip().endswith(end)
    assert count_tokens(start) <= head
    assert count_tokens(end) <= tail
    assert count_tokens(start) + count_tokens(end) < count_tokens(text)
