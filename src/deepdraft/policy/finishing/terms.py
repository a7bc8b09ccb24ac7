"""The question's explicit terms: what it asks of the report's length, language, format, sections,
audience and coverage, found by rules (English and Chinese regular expressions), and the checks of
them that counting settles (see `synthesis.py` for the ones a judge settles).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from deepdraft.core.citations import CITE
from deepdraft.core.language import cjk_share, is_chinese
from deepdraft.core.scripts import CJK, HAN, HANGUL, KANA
from deepdraft.core.verification import ConstraintCheck
from deepdraft.protocol.attach import content_words
from deepdraft.settings import ResearchSettings

ABOUT_TOLERANCE = 0.25
""""About N words" is met within ±25%."""
MAX_ITEMS = 12

_CJK = re.compile(f"[{CJK}]")
_LATIN_WORD = re.compile(rf"[^\W_{CJK}]+(?:['’-][^\W_{CJK}]+)*")


def count_words(text: str) -> int:
    """Words of `text` without its citations; each CJK character counts as one (a Chinese 字)."""
    plain = CITE.sub(" ", text)
    return len(_CJK.findall(plain)) + len(_LATIN_WORD.findall(_CJK.sub(" ", plain)))


# ---- the question's explicit terms (pure) ---------------------------------------------------------

_NUMBER_WORDS = {
    "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
    "nine": 9, "ten": 10, "eleven": 11, "twelve": 12,
    "一": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7, "八": 8, "九": 9, "十": 10,
    "十一": 11, "十二": 12,
}  # fmt: skip
_AT_MOST = (
    r"at most|no more than|not more than|not exceeding|under|below|less than|fewer than|up to"
    r"|max(?:imum)?(?: of)?|within"
)
_AT_LEAST = r"at least|no less than|not less than|no fewer than|more than|over|min(?:imum)?(?: of)?"
_ABOUT = r"about|around|approximately|roughly|some|~|circa"
_LENGTH_EN = re.compile(
    rf"(?:(?P<mode>{_AT_MOST}|{_AT_LEAST}|{_ABOUT})\s+)?(?P<n>\d{{1,3}}(?:,\d{{3}})+|\d+)\s*(?:-\s*)?words?\b",
    re.I,
)
_LENGTH_ZH = re.compile(
    r"(?P<pre>不少于|至少|不低于|不超过|不多于|最多|少于|约|大约|大概)?\s*(?P<n>\d+)\s*(?:个)?(?:字|词)(?P<post>左右|以内|以下|以上)?"
)
_LANGUAGES = {
    "english": "English", "chinese": "Chinese", "mandarin": "Chinese", "french": "French",
    "german": "German", "spanish": "Spanish", "portuguese": "Portuguese", "italian": "Italian",
    "japanese": "Japanese", "korean": "Korean", "russian": "Russian",
    "中文": "Chinese", "汉语": "Chinese", "英文": "English", "英语": "English", "日文": "Japanese",
    "日语": "Japanese", "法语": "French", "德语": "German", "韩语": "Korean", "俄语": "Russian",
    "zh": "Chinese", "en": "English", "fr": "French", "de": "German", "es": "Spanish",
}  # fmt: skip
_LANGUAGE_NAMES = "|".join(name for name in _LANGUAGES if name.isascii() and len(name) > 2)
_LANGUAGE_EN = re.compile(
    rf"\b(?:write|written|answer|respond|reply|report|draft|produce|explain)\b[^.?!]{{0,60}}?\bin\s+({_LANGUAGE_NAMES})\b"
    rf"|\bin\s+({_LANGUAGE_NAMES})\s*[.?!]?\s*$",
    re.I,
)
_LANGUAGE_ZH = re.compile(
    r"(?:用|以|使用)(中文|汉语|英文|英语|日文|日语|法语|德语|韩语|俄语)|(中文|英文)(?:回答|撰写|写作|写)"
)
_TABLE_ASKED = re.compile(r"\btables?\b|\btabular\b|表格", re.I)
_BULLETS_ASKED = re.compile(r"\bbullet[- ]points?\b|\bbullet(?:ed|s)?\b|要点|分点|列表", re.I)
_SECTIONS_ASKED = re.compile(
    r"\b(\d{1,2}|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve)\s+"
    r"(?:main\s+|top-level\s+|major\s+)?(?:sections|parts|chapters)\b"
    r"|(\d{1,2}|十[一二]?|[一二两三四五六七八九])\s*个?\s*(?:部分|章节|章)",
    re.I,
)
_AUDIENCE_EN = re.compile(
    r"\b(?:for|aimed at|targeted at|written for)\s+(?:an?\s+|the\s+)?((?:[\w-]+\s+){0,3}?"
    r"(?:audience|readers|readership|beginners|novices|executives|experts|specialists|students|"
    r"children|policy\s?makers|investors|engineers|managers|practitioners|laypeople|lay people|"
    r"non-experts|newcomers))\b",
    re.I,
)
_AUDIENCE_ZH = re.compile(rf"(?:面向|针对|适合|写给|给)([{HAN}]{{1,8}}?)(?:的?(?:读者|受众|阅读|看|人士))")
_EXTRACTION_TRIGGER = re.compile(
    r"\b(?:must|should|need to|needs to|have to|has to|required?|include|including|cover|covering|"
    r"address|mention|compare|comparing|both|as well as)\b"
    r"|必须|需要|应该|应当|包括|包含|涵盖|覆盖|涉及|比较|对比",
    re.I,
)
_ITEMS_EN = re.compile(
    r"(?:\b(?:must|should|needs? to|has to|have to|be sure to|make sure to)\s+"
    r"(?:cover|include|address|discuss|mention|explain|compare|treat)|\bcovering|\bincluding"
    r"|(?:^|[.?!:]\s+)(?:please\s+)?(?:also\s+)?(?:cover|include|address|mention))\s+"
    r"(?:both\s+)?(?P<items>[^.?!;:]+)",
    re.I,
)
_ITEM_TAIL = re.compile(r"\s+(?:too|as well|also)$", re.I)
_ITEMS_ZH = re.compile(
    r"(?:(?:必须|需要|应该|应当|要)(?:讨论|涉及|包括|包含|涵盖|覆盖)|包括|包含|涵盖|覆盖)(?P<items>[^。？！；，?!;：:,]+)"
)
_ITEM_SPLIT = re.compile(
    r"\s*(?:,\s*(?:and|or)\s+|,|;|\s+and\s+|\s+or\s+|\s+as well as\s+|、|和|与|及|以及)\s*", re.I
)
_ARTICLE = re.compile(r"^(?:the|a|an|its|their)\s+", re.I)
_TABLE_ROW = re.compile(r"^\s*\|.*\|\s*$", re.M)
_TABLE_RULE = re.compile(r"^\s*\|?\s*:?-{3,}:?\s*(?:\|\s*:?-{3,}:?\s*)*\|?\s*$", re.M)
_BULLET = re.compile(r"^\s*(?:[-*+•]|\d{1,3}[.)])\s+\S", re.M)
_STOPWORDS = {
    "French": {"le", "la", "les", "des", "et", "est", "une", "du", "que", "dans", "pour", "pas"},
    "German": {"der", "die", "das", "und", "ist", "nicht", "ein", "eine", "mit", "den", "von", "zu"},
    "Spanish": {"el", "la", "los", "las", "y", "es", "una", "del", "que", "en", "por", "para"},
    "Portuguese": {"o", "os", "as", "e", "uma", "do", "da", "que", "em", "para", "não", "com"},
    "Italian": {"il", "la", "gli", "le", "e", "una", "del", "che", "di", "per", "non", "con"},
    "English": {"the", "and", "is", "of", "to", "in", "that", "for", "with", "are", "was", "on"},
}  # fmt: skip
_SCRIPTS = {"Japanese": f"[{KANA}]", "Korean": f"[{HANGUL}]", "Russian": "[\u0400-\u04ff]"}


@dataclass(frozen=True)
class Terms:
    """The question's explicit requirements found by rules."""

    length: tuple[str, int, str] | None = None  # (mode: about | most | least, words, as asked)
    language: tuple[str, str] | None = None  # (language, as asked)
    table: str | None = None
    bullets: str | None = None
    sections: tuple[int, str] | None = None
    audience: str = ""
    items: tuple[str, ...] = ()


def find_terms(question: str, research: ResearchSettings | None = None) -> Terms:
    """Rule-based reading of the question (and of --length / --language, which are explicit too)."""
    length = _length_term(question)
    if length is None and research is not None and research.length_words:
        length = ("about", research.length_words, f"about {research.length_words} words (--length)")
    language = _language_term(question)
    if language is None and research is not None and research.language:
        named = _LANGUAGES.get(research.language.strip().lower(), research.language.strip())
        language = (named, f"{research.language} (--language)")
    table = _TABLE_ASKED.search(question)
    bullets = _BULLETS_ASKED.search(question)
    sections = _SECTIONS_ASKED.search(question)
    audience = _AUDIENCE_EN.search(question) or _AUDIENCE_ZH.search(question)
    return Terms(
        length=length,
        language=language,
        table=table.group() if table else None,
        bullets=bullets.group() if bullets else None,
        sections=(_number(sections.group(1) or sections.group(2)), sections.group()) if sections else None,
        audience=" ".join(audience.group(1).split()) if audience else "",
        items=tuple(rule_items(question)),
    )


def _length_term(question: str) -> tuple[str, int, str] | None:
    if match := _LENGTH_ZH.search(question):
        hint = (match.group("pre") or "") + (match.group("post") or "")
        mode = "least" if re.search("不少于|至少|不低于|以上", hint) else "about"
        mode = "most" if re.search("不超过|不多于|最多|(?<!不)少于|以内|以下", hint) else mode
        return mode, int(match.group("n")), match.group().strip()
    found = list(_LENGTH_EN.finditer(question))
    if found:
        # "A 1,200-word brief, no more than 1,200 words": the mention that says how strict wins.
        match = next((m for m in found if m.group("mode")), found[0])
        said = (match.group("mode") or "").lower()
        mode = "about"
        if said and re.fullmatch(_AT_MOST, said, re.I):
            mode = "most"
        elif said and re.fullmatch(_AT_LEAST, said, re.I):
            mode = "least"
        return mode, int(match.group("n").replace(",", "")), match.group().strip()
    return None


def _language_term(question: str) -> tuple[str, str] | None:
    match = _LANGUAGE_ZH.search(question) or _LANGUAGE_EN.search(question)
    if match is None:
        return None
    said = next(group for group in match.groups() if group)
    return _LANGUAGES[said.lower()], match.group().strip()


def _number(word: str) -> int:
    return int(word) if word.isdigit() else _NUMBER_WORDS.get(word.lower(), 0)


def rule_items(question: str) -> list[str]:
    """Items a "must cover A, B and C" clause names (the fallback when no LLM extraction is had)."""
    match = _ITEMS_EN.search(question) or _ITEMS_ZH.search(question)
    if match is None:
        return []
    parts = _ITEM_SPLIT.split(match.group("items"))
    items = [_ITEM_TAIL.sub("", _ARTICLE.sub("", part.strip(" \"'“”"))) for part in parts]
    return [item for item in items if item][:MAX_ITEMS]


def needs_extraction(question: str) -> bool:
    """Whether the question has words that announce required items or an audience."""
    return _EXTRACTION_TRIGGER.search(question) is not None or _AUDIENCE_EN.search(question) is not None


def grounded_items(items: object, question: str) -> list[str]:
    """The extracted items that the question really names (an extraction must not invent topics)."""
    if not isinstance(items, list):
        return []
    asked = content_words(question)
    kept: list[str] = []
    for item in items:
        if not isinstance(item, str) or not item.strip() or len(item) > 80:
            continue
        item = " ".join(item.split())
        words = content_words(item)
        if (words & asked or item in question) and item not in kept:
            kept.append(item)
    return kept[:MAX_ITEMS]


def _stems(words: set[str]) -> set[str]:
    """Crude English plural folding, so "tariff" finds "tariffs"; bigrams of CJK pass unchanged."""
    return {
        w[:-2] if w.endswith("es") and len(w) > 5 else w[:-1] if w.endswith("s") and len(w) > 4 else w
        for w in words
    }


def item_found(item: str, headings: Sequence[str], text: str) -> str | None:
    """Where the report names `item` (every content word of it present), or None."""
    wanted = _stems(content_words(item))
    if not wanted:
        return None
    for heading in headings:
        if wanted <= _stems(content_words(heading)):
            return f"a heading names it: “{heading}”"
    if wanted <= _stems(content_words(text)):
        return "the text discusses it (all its words occur)"
    return None


def language_of(text: str, language: str) -> tuple[bool, str]:
    """Whether `text` is written in `language`, by script or by its commonest words."""
    share = cjk_share(text)
    if language == "Chinese":
        return share > 0.3, f"{share:.0%} of the text is Chinese script"
    if language in _SCRIPTS:
        letters = len(re.findall(r"[^\W\d_]", text)) or 1
        found = len(re.findall(_SCRIPTS[language], text)) / letters
        return found > 0.3, f"{found:.0%} of its letters are in {language} script"
    if share > 0.3:
        return False, f"{share:.0%} of the text is Chinese script"
    words = [w.lower() for w in _LATIN_WORD.findall(CITE.sub(" ", text))]
    if language not in _STOPWORDS or not words:
        return True, "written in a Latin script (not checked further)"
    scores = {name: sum(w in stop for w in words) / len(words) for name, stop in _STOPWORDS.items()}
    best = max(scores, key=lambda name: scores[name])
    return best == language, f"its commonest words look {best}"


def rule_checks(terms: Terms, question: str, text: str, sections: int) -> list[ConstraintCheck]:
    """Length, language, format and section count of the report (`text`, with `sections`
    top-level sections): settled by counting, no LLM."""
    checks: list[ConstraintCheck] = []
    if terms.length is not None:
        mode, wanted, asked = terms.length
        words = count_words(text)
        unit = "characters" if is_chinese(question) and re.search("字", asked) else "words"
        if mode == "most":
            ok = words <= wanted
        elif mode == "least":
            ok = words >= wanted
        else:
            ok = abs(words - wanted) <= ABOUT_TOLERANCE * wanted
        detail = f"the report has {words} {unit}"
        if not ok:
            detail += "; left as it is (deepdraft does not pad or cut a finished report)"
        checks.append(ConstraintCheck(name="length", requirement=asked, satisfied=ok, detail=detail))
    if terms.language is not None:
        language, asked = terms.language
        ok, detail = language_of(text, language)
        checks.append(ConstraintCheck(name="language", requirement=asked, satisfied=ok, detail=detail))
    if terms.table is not None:
        ok = bool(_TABLE_ROW.search(text) and _TABLE_RULE.search(text))
        detail = "the report has a Markdown table" if ok else "the report has no table"
        checks.append(ConstraintCheck(name="format", requirement=terms.table, satisfied=ok, detail=detail))
    if terms.bullets is not None:
        count = len(_BULLET.findall(text))
        checks.append(
            ConstraintCheck(
                name="format",
                requirement=terms.bullets,
                satisfied=count > 0,
                detail=f"{count} list items",
            )
        )
    if terms.sections is not None:
        wanted, asked = terms.sections
        have = sections
        checks.append(
            ConstraintCheck(
                name="sections",
                requirement=asked,
                satisfied=have == wanted,
                detail=f"the report has {have} top-level sections",
            )
        )
    return checks
