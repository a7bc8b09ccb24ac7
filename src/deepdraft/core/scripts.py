"""The one table of CJK character ranges, as regex class bodies (``f"[{CJK}]"``).

Chinese, Japanese and Korean are written without spaces between words, so every module that counts
words, cuts text or builds index terms treats these characters apart: the token estimate, language
detection, chunking, the BM25 analyzer, citation attaching. They all take their ranges from here,
so a range added for one is seen by all.
"""

from __future__ import annotations

HAN = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
"""Han ideographs: extension A, the unified block and the compatibility ideographs."""
KANA = "\u3040-\u30ff"
"""Japanese hiragana and katakana."""
HANGUL = "\uac00-\ud7af"
"""Korean hangul syllables."""
CJK = KANA + HAN + HANGUL
"""Every character of a script written without spaces: Han, kana and hangul."""
CJK_SYMBOLS = "\u3000-\u303f\uff00-\uffef"
"""CJK punctuation (。、「」) and the fullwidth forms (，！？ and fullwidth Latin): not letters, but
found only in CJK text."""
