"""The text analyzer of the BM25 index: text in, index terms out, for documents and queries alike.

What it does to a text:

* NFKC normalisation and lowercasing; accents are folded (café = cafe) word by word.
* Latin, Greek, Cyrillic, … words: English stopwords dropped, Snowball English stemming (PyStemmer).
  Runs of letters longer than `MAX_TERM_CHARS` (hashes, base64) are not indexed.
* Han characters (Chinese, and the kanji of Japanese): each run is segmented into words by `jieba` in
  its search-engine mode, which also emits the dictionary words inside a long word (中华人民共和国 →
  中华, 人民, 共和国, …), so a query for a part of a compound still matches. A few function words
  (的, 了, 是, …) are dropped like English stopwords.
* Kana and Hangul: jieba knows no Japanese or Korean words, so their runs are indexed as characters
  plus character bigrams, which finds words without a segmenter at the price of a larger index.

Trade-offs:

* jieba runs with its HMM off: the HMM guesses unknown words from context, so the same name could be
  one term in a document and two in a query and then not match. Dictionary-only segmentation is the
  same everywhere; an unknown word falls apart into single characters, which still match each other.
* jieba is imported and its dictionary (≈1 s) loaded only when a text first contains Han characters,
  once per process, on a private `jieba.Tokenizer` (so nobody else's jieba settings change ours), with
  its log lines silenced.
* `ANALYZER_VERSION` names every rule above plus jieba's version (its dictionary decides the Chinese
  terms). An index records it; an index built with another analyzer must be rebuilt, not mis-searched.
"""

from __future__ import annotations

import importlib.metadata
import logging
import re
import threading
import unicodedata
from collections.abc import Sequence
from typing import Any

import bm25s
import Stemmer
from bm25s.stopwords import STOPWORDS_EN

from deepdraft.core.scripts import CJK, HAN, HANGUL, KANA


def _jieba_version() -> str:
    try:
        return importlib.metadata.version("jieba")
    except importlib.metadata.PackageNotFoundError:  # only Chinese text needs it; it fails there
        return "missing"


ANALYZER_VERSION = (
    f"nfkc-lower-fold/stop-en/snowball-en/han-jieba{_jieba_version()}-search-nohmm/kana-hangul-uni-bi/v2"
)
"""Changes whenever the terms of some text change: an index built with another value is rebuilt."""

MAX_TERM_CHARS = 40
"""Longer letter runs (hashes, base64) are not indexed: nobody searches them; they bloat the vocabulary."""

BM25_METHOD = "lucene"
BM25_K1 = 1.5
BM25_B = 0.75
"""Lucene's BM25 with its usual saturation (k1) and length normalisation (b): the one parameter set
of every BM25 index here, a knowledge base's and a web search's re-ranking alike."""


def new_bm25() -> bm25s.BM25:
    """An empty BM25 index with the parameters above, held in numpy arrays (no numba, no scipy)."""
    return bm25s.BM25(method=BM25_METHOD, k1=BM25_K1, b=BM25_B, backend="numpy", csc_backend="numpy")


_HAN_RUN = re.compile(f"[{HAN}]+")
_SYLLABIC_RUN = re.compile(f"[{KANA}{HANGUL}]+")  # the CJK scripts that are not Han
_CJK = re.compile(f"[{CJK}]")
_WORD = re.compile(rf"[^\W_{CJK}]+")  # letters and digits, CJK excluded
_COMBINING = re.compile("[\u0300-\u036f]")  # the diacritics of Latin, Greek and Cyrillic letters
_STOPWORDS = frozenset(STOPWORDS_EN)
# Chinese function words so frequent that they only bloat postings (the BM25 idf of each is near 0).
_HAN_STOPWORDS = frozenset("的了是在和与及或也都而之其这那着把被于")  # one character each

_local = threading.local()  # PyStemmer objects must not be shared between threads
_jieba_lock = threading.Lock()
_jieba: Any = None


def context_header(title: str, headings: Sequence[str]) -> str:
    """A passage's document title and heading path (each once), indexed and embedded with it.

    Contextual headers: a passage deep in a section about tariffs should match "tariffs" even if
    only the heading says it. The stored passage text stays the passage alone.
    """
    return " \n ".join(dict.fromkeys((title, *headings)))


def passage_terms(title: str, headings: Sequence[str], text: str) -> list[str]:
    """The index terms of one passage: those of its context header, then those of its text."""
    return analyze(context_header(title, headings)) + analyze(text)


def analyze(text: str) -> list[str]:
    """The index terms of `text`. Order carries no meaning (BM25 is a bag of words)."""
    text = unicodedata.normalize("NFKC", text).lower()
    # Two findall passes instead of one loop over matches: the scanning stays in C (3x faster).
    words = [w for w in _WORD.findall(text) if len(w) <= MAX_TERM_CHARS and w not in _STOPWORDS]
    if text.isascii():
        return list(_stemmer().stemWords(words))
    words = [w if w.isascii() else _fold_accents(w) for w in words]
    terms: list[str] = _stemmer().stemWords(words)
    if _CJK.search(text) is None:
        return terms
    han_runs = _HAN_RUN.findall(text)
    if han_runs:
        segmenter = _han_segmenter()
        for run in han_runs:
            terms.extend(w for w in segmenter.cut_for_search(run, HMM=False) if w not in _HAN_STOPWORDS)
    for run in _SYLLABIC_RUN.findall(text):
        terms.extend(run)
        terms.extend(run[i : i + 2] for i in range(len(run) - 1))
    return terms


def _fold_accents(word: str) -> str:
    # Per word, not per text: NFKD would also decompose Hangul syllables and kana.
    return _COMBINING.sub("", unicodedata.normalize("NFKD", word))


def _stemmer() -> Any:
    stemmer = getattr(_local, "stemmer", None)
    if stemmer is None:
        stemmer = _local.stemmer = Stemmer.Stemmer("english")
    return stemmer


def _han_segmenter() -> Any:
    """The process's jieba tokenizer, its dictionary loaded on first use (thread-safe, once)."""
    global _jieba
    if _jieba is None:
        with _jieba_lock:
            if _jieba is None:
                import jieba

                # jieba announces every dictionary load on stderr ("Building prefix dict…").
                jieba.setLogLevel(logging.WARNING)
                segmenter = jieba.Tokenizer()
                segmenter.initialize()
                _jieba = segmenter
    return _jieba
