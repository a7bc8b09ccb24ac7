"""Which script a text is in, and whether a report must be Chinese (the question's, or as asked)."""

from __future__ import annotations

import re

from deepdraft.core.citations import CITE
from deepdraft.core.scripts import CJK

CJK_THRESHOLD = 0.30
"""Share of CJK characters among a text's letters above which it counts as Chinese."""

# The design's rule counts letters: a CJK character against each letter of other scripts, so a
# question such as "What is 量子计算 used for in practice?" stays English. Names in another script
# do not count ("quotes and names in another script pass"): a Latin word with a capital inside it
# (PyTorch, CATL) or a capitalised word that does not open a sentence (Kubernetes, Samsung) is a
# name, so Chinese text full of English product names stays Chinese.
_CJK = re.compile(rf"[{CJK}]")
_OTHER_WORD = re.compile(rf"[^\W\d_{CJK}]+")
_SENTENCE_OPENERS = frozenset(".!?。！？\n\"“'‘(（[")


def cjk_share(text: str) -> float:
    """Share of CJK characters among the letters of `text`, names in other scripts left out.

    Digits, punctuation and citations are ignored.
    """
    plain = CITE.sub("", text)
    cjk = len(_CJK.findall(plain))
    letters = sum(len(word.group()) for word in _OTHER_WORD.finditer(plain) if not _is_name(plain, word))
    if cjk + letters == 0:
        return 0.0
    return cjk / (cjk + letters)


def _is_name(text: str, word: re.Match[str]) -> bool:
    """A word that is a name rather than running text: a capital inside it, or a capital first
    letter anywhere but at the start of a sentence."""
    token = word.group()
    if any(char.isupper() for char in token[1:]):
        return True
    if not token[0].isupper():
        return False
    at = word.start() - 1
    while at >= 0 and text[at] in " \t":
        at -= 1
    return at >= 0 and text[at] not in _SENTENCE_OPENERS


def is_chinese(question: str) -> bool:
    return cjk_share(question) > CJK_THRESHOLD


_CHINESE_NAMES = {
    "zh",
    "zh-cn",
    "zh-tw",
    "zh-hans",
    "zh-hant",
    "chinese",
    "mandarin",
    "中文",
    "汉语",
    "简体中文",
}


def wants_chinese(question: str, language: str | None = None) -> bool:
    """Whether the report must be Chinese: an explicit `language`, else the question's own."""
    if language:
        return language.strip().lower() in _CHINESE_NAMES
    return is_chinese(question)
