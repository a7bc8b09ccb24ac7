"""Citing for a model that will not: attach each sentence to the passage it overlaps most.

Small local models often write a fair section from the evidence and still put no `\\cite{}` in it,
whatever the prompt says (measured: a 1.5B model cited nothing in 5 of 5 sections). Re-asking
costs minutes on a CPU and rarely helps. So, when a reply's only fault is the missing citations,
each sentence is matched against the evidence it was written from:

- a sentence that shares enough content words with a passage gets that passage's key;
- a sentence that matches no passage is dropped — it is not supported by the evidence shown, and
  keeping it uncited would let an unsupported claim into the report.

This is lexical overlap, not entailment: it places citations where the words came from, and the
journal marks such a write (`citations_attached`), so a later verification step knows to check
it. The model's own citations, when it gives any, are never touched. Where the settings ask that
every sentence be cited (`cite_every_sentence`, the `quick` preset), the sentences a model left
uncited beside cited ones are dealt with the same way (`cite_uncited`).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping

from deepdraft.core.citations import CITE_WITH_SPACE, cited_keys
from deepdraft.core.scripts import HAN
from deepdraft.core.sentences import sentence_spans

_WORD = re.compile(r"[^\W\d_]{3,}|\d{3,}", re.UNICODE)
_HAN_RUN = re.compile(f"[{HAN}]+")
_STOPWORDS = frozenset(
    [
        "the",
        "and",
        "for",
        "that",
        "this",
        "with",
        "from",
        "were",
        "was",
        "are",
        "have",
        "has",
        "had",
        "not",
        "but",
        "its",
        "their",
        "they",
        "them",
        "which",
        "who",
        "whom",
        "what",
        "when",
        "where",
        "while",
        "been",
        "being",
        "into",
        "than",
        "then",
        "also",
        "more",
        "most",
        "such",
        "these",
        "those",
        "over",
        "under",
        "about",
        "after",
        "before",
        "between",
        "other",
        "some",
        "many",
        "much",
        "very",
        "would",
        "could",
        "should",
        "will",
        "can",
        "our",
        "your",
        "his",
        "her",
        "all",
        "any",
        "each",
        "there",
        "here",
        "only",
        "just",
        "both",
    ]
)
MIN_SHARED = 2  # content words a sentence must share with a passage
MIN_SHARE = 0.34  # ... and the share of the sentence's content words they make up


def content_words(text: str) -> set[str]:
    words = {w.lower() for w in _WORD.findall(text)} - _STOPWORDS
    for run in _HAN_RUN.findall(text):  # Chinese has no spaces: character bigrams stand in for words
        words.update(run[i : i + 2] for i in range(len(run) - 1))
    return words


def attach_citations(text: str, evidence: Mapping[str, str]) -> str | None:
    """`text` with a `\\cite{key}` after each supported sentence and the others dropped.

    None when no sentence is supported by any passage.
    """
    result, _ = cite_uncited(text, evidence)
    return result if "\\cite{" in result else None


def cite_uncited(text: str, evidence: Mapping[str, str]) -> tuple[str, int]:
    """`text` with each sentence that cites nothing cited from the passage of `evidence` it shares
    most content words with, or dropped when no passage shares enough of them (`MIN_SHARED`,
    `MIN_SHARE`); sentences the model cited stay as they are. Also: how many sentences were cited.
    """
    passages = {key: content_words(passage) for key, passage in evidence.items()}
    kept: list[str] = []
    cursor, placed = 0, 0
    for start, end in sentence_spans(text):
        # Line breaks between two sentences (a paragraph break after a full stop) are kept whether
        # or not the sentences around them are: they are the text's structure, not a claim.
        kept.append("\n" * text.count("\n", cursor, start))
        cursor = end
        sentence = text[start:end]
        words = content_words(sentence)
        if not words or cited_keys(sentence):  # structure (a heading, a table rule), or cited
            kept.append(sentence)
            continue
        best_key, best_shared = "", 0
        for key, passage_words in passages.items():
            shared = len(words & passage_words)
            if shared > best_shared:
                best_key, best_shared = key, shared
        if best_shared >= MIN_SHARED and best_shared / len(words) >= MIN_SHARE:
            kept.append(cite_sentence(sentence, best_key))
            placed += 1
    return re.sub(r"\n{3,}", "\n\n", "".join(kept)).strip(), placed


def cite_sentence(sentence: str, key: str) -> str:
    """Put the citation before the sentence's closing punctuation (and keep a trailing newline)."""
    body = sentence.rstrip()
    tail = sentence[len(body) :]
    end = re.search(r"[.!?。！？]+$", body)
    if end:
        return f"{body[: end.start()].rstrip()} \\cite{{{key}}}{end.group()}{tail}"
    return f"{body} \\cite{{{key}}}{tail}"


EXTRACT_WORDS = (8, 60)
"""Sentences shorter or longer than this (in words) are not taken whole into a report."""


def extract_from_evidence(focus: str, evidence: Mapping[str, str], most: int = 3) -> str | None:
    """A node's text made of its evidence, for a node every draft of which was refused: from each
    of up to `most` passages, the sentence sharing most content words with `focus` (the node's
    title and plan, the request), cited to its passage. None when no passage has such a sentence.

    Quoting is not writing, so this is the last resort, and the run says where it was used.
    """
    wanted = content_words(focus)
    picked: list[tuple[int, int, str]] = []
    for order, (key, passage) in enumerate(evidence.items()):
        best, best_shared = "", 0
        for start, end in sentence_spans(passage):
            sentence = " ".join(passage[start:end].split())
            if not EXTRACT_WORDS[0] <= len(sentence.split()) <= EXTRACT_WORDS[1] or not _whole(sentence):
                continue
            shared = len(content_words(sentence) & wanted)
            if shared > best_shared:
                best, best_shared = sentence, shared
        if best:
            picked.append((-best_shared, order, cite_sentence(best, key)))
    if not picked:
        return None
    chosen = sorted(sorted(picked)[:most], key=lambda item: item[1])  # the best, in evidence order
    return " ".join(sentence for _, _, sentence in chosen)


def _whole(sentence: str) -> bool:
    """Whether `sentence` is a whole one: a passage cut from a longer text begins and ends with
    pieces of sentences ("to deal with commerce in its broadest sense; …"), which read as debris."""
    first = next((char for char in sentence if char.isalnum()), "")
    return not first.islower() and sentence.rstrip("\"'”’)]").endswith((".", "!", "?"))


def merged_citations(text: str) -> str:
    """`text` with each run of sentences citing the same passages cited once, after its last
    sentence, inside each paragraph.

    A model told to cite every claim (or citations placed sentence by sentence) can exceed the
    protocol's twelve citations in a long part; citing a run once says the same thing.
    """
    spans = sentence_spans(text)
    drop: list[tuple[int, int]] = []
    for (start, end), (next_start, next_end) in itertools.pairwise(spans):
        keys = _keys_of(text[start:end])
        same_paragraph = "\n\n" not in text[end:next_start]
        if keys and same_paragraph and keys == _keys_of(text[next_start:next_end]):
            drop.extend((m.start(), m.end()) for m in CITE_WITH_SPACE.finditer(text, start, end))
    kept, cursor = [], 0
    for start, end in drop:
        kept.append(text[cursor:start])
        cursor = end
    kept.append(text[cursor:])
    return "".join(kept)


def _keys_of(sentence: str) -> frozenset[str]:
    return frozenset(key for group in cited_keys(sentence) for key in group)
