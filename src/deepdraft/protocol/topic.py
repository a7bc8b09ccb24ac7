"""What a request is about: its subject words, and whether a title names them or is an essay part.

A small model asked for an outline readily writes the parts of a school essay — "Introduction",
"Background", "Conclusion" — under a report title that could head any report. Such an outline
sends retrieval after nothing in particular. These rules let the outline's validation refuse it
with a reason the model can act on, and let retrieval add the request's subject to weak keywords.

The subject is the request's content words without the words that frame a question ("how did",
"discuss", "describe", "what did ... say") or name who is being asked about in general
("presidents", "leaders", "experts"): a title that only repeats the frame names no subject.
English words match on a shared stem (a common prefix), Chinese on a shared character pair.
Pure functions, no I/O; the word lists are about questions and essays, never about one corpus.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from deepdraft.core.scripts import HAN
from deepdraft.core.sentences import sentence_spans
from deepdraft.core.tokens import count_tokens, head_tail

_LATIN = re.compile(r"[^\W\d_]+", re.UNICODE)
_HAN_RUN = re.compile(f"[{HAN}]+")


def _set(words: str) -> frozenset[str]:
    return frozenset(words.split())


_STOPWORDS = _set(
    """a an the and or of to in on for by with as at from that this these those is are was were be
    been being it its their his her they he she we our us you your i not no but if then than so
    such which who whom whose what when where why how all any each other some more most many
    much can could would should will shall may might must do does did has have had also into
    over under about between through during before after above below up down out off again
    further once here there both few own same too very just only new one two three first second
    already another upon within without however therefore thus since because whether every well
    made make makes even still yet like others having become became given"""
)
# Words that frame a question or name, in general, whose views it asks about: never its subject.
_FRAME = _set(
    """say says said saying discuss discusses discussed discussing talk talks talked talking
    describe describes described describing argue argues argued arguing address addresses
    addressed addressing explain explains explained view views viewed treat treats treated think
    thought approach approached characterize characterized portray portrayed present presented
    respond responded frame framed change changed changes compare compared propose proposed role
    roles way ways over time question questions issue issues topic topics report reports
    research overview analysis analyze analyse study give write summary summarize summarise
    president presidents presidential leader leaders government governments official officials
    people person author authors writer writers expert experts scholar scholars researcher
    researchers speaker speakers politician politicians administration administrations state
    union speech speeches era eras period periods history historical years year"""
)
# Parts of an essay, and the modifiers that leave a title an essay part ("Historical Background").
_ESSAY_PARTS = _set(
    """introduction introductions background backgrounds purpose purposes structure overview
    overviews methodology methodologies methods method discussion analysis results result
    conclusion conclusions summary summaries references appendix scope context findings finding
    implications directions outlook remarks thoughts notes preface foreword abstract synopsis
    recap recapitulation recommendations prospects perspectives developments state"""
)
_MODIFIERS = _set(
    """historical history general key main brief final concluding introductory executive future
    further overall short detailed major primary important current present recent and the of a
    an to in for on our its this report study evidence search documents document sources source
    terms passages"""
)
# The headers of deepdraft's own prompts: a small model sometimes lists them as its sections.
_PROMPT_HEADERS = frozenset(
    re.sub(r"[^a-z ]+", "", header.lower())
    for header in (
        "The user's request",
        "Background evidence from the document collection",
        "What the search found",
        "What to do",
        "Answer format",
        "Your previous reply was rejected",
        "The report so far",
        "Evidence you may cite",
    )
)
# Chinese: question frames and essay parts, matched as whole phrases.
_FRAME_ZH = (
    "如何", "怎样", "怎么", "什么", "哪些", "为什么", "是否", "讨论", "论述", "描述", "谈论", "看待", "评价",
    "分析", "介绍", "总统", "领导人", "政府", "官员", "学者", "专家", "报告", "研究", "问题", "历史",
)  # fmt: skip
_ESSAY_PARTS_ZH = (
    "引言", "前言", "导言", "绪论", "背景", "研究背景", "历史背景", "概述", "简介", "介绍", "目的",
    "结构", "方法", "研究方法", "讨论", "分析", "结果", "结论", "总结", "小结", "摘要", "主要发现",
    "关键发现", "展望", "未来展望", "参考文献", "附录", "范围", "意义", "启示", "建议",
)  # fmt: skip
_MODIFIERS_ZH = ("主要", "关键", "总体", "简要", "最终", "历史", "研究", "报告", "的", "与", "和", "及")

STEM_CHARS = 5
"""English words match when one is a prefix of the other (4+ letters) or they share this many."""


def _latin_words(text: str) -> list[str]:
    return [w for w in (m.lower() for m in _LATIN.findall(text)) if w.isascii() or not _HAN_RUN.match(w)]


def _han_pairs(text: str, drop: Iterable[str] = ()) -> set[str]:
    pairs: set[str] = set()
    for run in _HAN_RUN.findall(text):
        for phrase in drop:
            run = run.replace(phrase, " ")
        for piece in run.split():
            pairs.update(piece[i : i + 2] for i in range(len(piece) - 1))
    return pairs


def subject_terms(question: str) -> list[str]:
    """The request's subject words in order: content words that frame no question (Chinese: the
    character pairs left once the frame phrases are taken out)."""
    latin = [
        w
        for w in _latin_words(question)
        if len(w) > 2 and not _HAN_RUN.search(w) and w not in _STOPWORDS and w not in _FRAME
    ]
    terms = list(dict.fromkeys(latin))
    terms.extend(sorted(_han_pairs(question, _FRAME_ZH)))
    return terms


def _same_word(a: str, b: str) -> bool:
    if a == b:
        return True
    short, long_ = sorted((a, b), key=len)
    if len(short) >= 4 and long_.startswith(short):
        return True
    return len(short) >= STEM_CHARS and long_[:STEM_CHARS] == short[:STEM_CHARS]


def names_subject(title: str, subject: Iterable[str]) -> bool:
    """Whether `title` shares a subject word with the request (a stem, or a Chinese character pair)."""
    subject = list(subject)
    words = [w for w in _latin_words(title) if len(w) > 2]
    pairs = _han_pairs(title)
    for term in subject:
        if _HAN_RUN.match(term):
            if term in pairs:
                return True
        elif any(_same_word(term, word) for word in words):
            return True
    return False


def is_essay_part(title: str) -> bool:
    """A title made only of essay-part words and generic modifiers ("Background", "Key Findings",
    "研究背景"), or one of our prompts' own headers ("What to Do"): it names a part of an essay
    or of the instructions, not a facet of the subject."""
    text = re.sub(r"^[\s\d.、:：-]+", "", title).strip()
    if not text:
        return False
    if _HAN_RUN.search(text):
        rest = re.sub(r"[\s\W\d_]+", "", text)
        for phrase in sorted(_MODIFIERS_ZH + _ESSAY_PARTS_ZH, key=len, reverse=True):
            rest = rest.replace(phrase, "")
        return not rest and any(part in text for part in _ESSAY_PARTS_ZH)
    if " ".join(re.sub(r"[^a-z ]+", "", text.lower()).split()) in _PROMPT_HEADERS:
        return True
    words = _latin_words(text)
    return (
        bool(words)
        and all(w in _ESSAY_PARTS or w in _MODIFIERS for w in words)
        and any(w in _ESSAY_PARTS for w in words)
    )


def subject_phrase(question: str, most: int = 4) -> str:
    """A few subject words, quoted, for a reason the model reads ("gold", "silver", "currency")."""
    shown = subject_terms(question)[:most]
    return ", ".join(f'"{term}"' for term in shown)


def subject_title(question: str) -> str:
    """The request from its first subject word on, as a title: "How did presidents discuss the
    gold standard?" gives "Gold standard". The request itself when no subject word is found
    (a Chinese request is kept whole: its frame words are not cut off)."""
    plain = question.strip().rstrip("?？.。!！").strip()
    subject = subject_terms(question)
    if not subject or _HAN_RUN.search(plain):
        return plain
    match = re.search(rf"\b{re.escape(subject[0])}", plain, re.IGNORECASE)
    if match is None:
        return plain
    rest = plain[match.start() :]
    return rest[:1].upper() + rest[1:]


def subject_label(question: str, most: int = 3) -> str:
    """The first phrase of `subject_title`, at most `most` words, as a label to put before another
    title ("Gold: The rise of bimetallism"): it ends before the first "and", "or" or comma, and
    never on a word that names no subject."""
    title = subject_title(question)
    if _HAN_RUN.search(title):
        return title
    words = title.split()
    for index in range(1, len(words)):
        if words[index].lower() in {"and", "or"} or words[index - 1].endswith(","):
            words = words[:index]
            break
    words = words[:most]
    while len(words) > 1 and words[-1].lower() in _STOPWORDS | _FRAME:
        words.pop()
    return " ".join(words).rstrip(",;:")


def salient_terms(texts: Iterable[str], most: int = 12) -> list[str]:
    """The content words found in the most of `texts` (at least two), most widespread first: what
    a set of search results is about, for an outline to be made of facets of the evidence."""
    counts: dict[str, int] = {}
    seen = list(texts)
    for text in seen:
        words = {w for w in _latin_words(text) if len(w) > 3 and w not in _STOPWORDS and w not in _FRAME}
        words |= _han_pairs(text, _FRAME_ZH)
        for word in words:
            counts[word] = counts.get(word, 0) + 1
    # A word in a third of the passages at least (two at the fewest): what they have in common,
    # not what one of them happens to repeat.
    floor = max(2, -(-len(seen) // 3))
    ranked = sorted((word for word, count in counts.items() if count >= floor), key=lambda w: (-counts[w], w))
    return ranked[:most]


def subject_excerpt(text: str, question: str, tokens: int | None) -> str:
    """The run of whole sentences of `text`, at most about `tokens` long, that names the request's
    subject words most often (the earliest such run), with " ... " where text was left out;
    `text` itself when it fits or `tokens` is None.

    A prompt that cuts long passages to save a slow CPU's prefill used to keep their first tokens,
    wherever the subject was: in three smoke runs a third of the words written passage by passage
    came from the part of a passage that the fact-checker, shown its first 110 tokens, never saw.
    The writer and the fact-checker are shown this same excerpt instead."""
    if tokens is None or count_tokens(text) <= tokens:
        return text
    subject = subject_terms(question)
    spans = sentence_spans(text, lines="blocks")
    if not spans:
        return head_tail(text, tokens, 0)
    sizes = [count_tokens(text[start:end]) for start, end in spans]
    named = [sum(names_subject(text[start:end], [term]) for term in subject) for start, end in spans]
    best, best_score, first, used, score = (0, 0), -1, 0, 0, 0
    for last in range(len(spans)):  # the window spans[first..last], slid along the sentences
        used, score = used + sizes[last], score + named[last]
        while used > tokens and first < last:
            used, score, first = used - sizes[first], score - named[first], first + 1
        if score > best_score or (score == best_score and first == best[0]):  # or the same, longer
            best, best_score = (first, last), score
    first, last = best
    start, end = spans[first][0], spans[last][1]
    excerpt = text[start:end].strip()
    if count_tokens(excerpt) > tokens:  # one sentence longer than the whole budget
        excerpt = head_tail(excerpt, tokens, 0)
    return f"{'... ' if start > 0 else ''}{excerpt}{' ...' if text[end:].strip() else ''}"
