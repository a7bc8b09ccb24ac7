"""Which script a text is in, and whether a report must be Chinese (the question's, or as asked)."""

from __future__ import annotations

import re

from deepdraft.core.citations import CITE
from deepdraft.core.scripts import CJK

CJK_THRESHOLD = 0.30
"""Share of CJK script units above which a text counts as Chinese."""

# A CJK character, or a whole run of other letters: one CJK character carries about as much as one
# English word, so counting words (not letters) on the other side keeps Chinese text full of English
# product names ("在 Kubernetes 上部署 TensorFlow Serving") recognisably Chinese.
_SCRIPT_UNIT = re.compile(rf"[{CJK}]|[^\W\d_{CJK}]+")
_CJK = re.compile(rf"[{CJK}]")


def cjk_share(text: str) -> float:
    """Share of CJK among the script units of `text`: CJK characters and words in other scripts.

    Digits, punctuation and citations are ignored.
    """
    units = _SCRIPT_UNIT.findall(CITE.sub("", text))
    if not units:
        return 0.0
    return sum(1 for unit in units if _CJK.match(unit)) / len(units)


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
