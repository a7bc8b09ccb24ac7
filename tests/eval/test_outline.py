"""FreshWiki outline metrics: soft heading recall, entity recall, ROUGE-L."""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import pytest

from deepdraft.eval.data import load_freshwiki
from deepdraft.eval.outline import (
    extract_entities,
    generated_headings,
    heading_entity_recall,
    heading_soft_recall,
    load_minilm,
    rouge_l,
    score_outline,
    soft_cardinality,
)
from tests.eval.judges import DATA

TOPIC = "2022 Luzon earthquake"


def bag_of_words(texts: Sequence[str]) -> np.ndarray:
    """A stand-in embedder for fast tests: one dimension per word (the real MiniLM is tested apart)."""
    vocabulary = sorted({w for t in texts for w in re.findall(r"\w+", t.lower())})
    return np.array([[t.lower().split().count(w) for w in vocabulary] for t in texts], dtype=float)


def test_reference_headings_leave_out_reference_sections() -> None:
    article = load_freshwiki(DATA, TOPIC)
    assert article.headings[:3] == ("Earthquake", "Characteristics", "Aftershocks")
    assert not {"See also", "References", "External links", "Gallery"} & set(article.headings)


def test_soft_cardinality_counts_near_duplicates_once() -> None:
    assert soft_cardinality(np.eye(3)) == pytest.approx(3.0)
    assert soft_cardinality(np.ones((4, 2))) == pytest.approx(1.0)


def test_heading_soft_recall_is_one_for_the_reference_itself_and_lower_for_a_partial_outline() -> None:
    reference = load_freshwiki(DATA, TOPIC).headings
    assert heading_soft_recall(reference, reference, bag_of_words) == pytest.approx(1.0)
    partial = heading_soft_recall(reference, reference[:3], bag_of_words)
    assert partial is not None and 0 < partial < 1
    assert heading_soft_recall(reference, [], bag_of_words) == 0
    assert heading_soft_recall([], reference, bag_of_words) is None


def test_entities_and_entity_recall() -> None:
    assert extract_entities("Response of the Philippine National Police in 2022") == {
        "philippine national police",
        "2022",
    }
    assert extract_entities("Aftershocks") == set()
    assert (
        heading_entity_recall(["Abra River Fault", "Impact on Vigan"], ["Abra River Fault activity"]) == 0.5
    )
    assert heading_entity_recall(["Aftershocks"], ["Anything"]) is None


def test_generated_headings_drop_numbering_and_the_document_title() -> None:
    report = "# The 2022 Luzon earthquake\n\n## 1 Earthquake\n\n### 1.1 Aftershocks\n\n## References\n"
    assert generated_headings(report) == ["Earthquake", "Aftershocks"]


def test_score_outline_against_the_real_article() -> None:
    article = load_freshwiki(DATA, TOPIC)
    generated = "# Luzon earthquake\n\n## Earthquake\n\nAn earthquake struck the island of Luzon in the Philippines.\n\n## Response\n\nRelief followed."
    score = score_outline(article, generated, bag_of_words)
    assert score.heading_soft_recall is not None and 0 < score.heading_soft_recall < 1
    recall, f1 = rouge_l(article.text, generated)
    assert (score.rouge_l_recall, score.rouge_l_f1) == (recall, f1)
    assert 0 < recall < 1 and 0 < f1 < 1


@pytest.mark.slow
def test_minilm_loads_offline_and_separates_related_from_unrelated_headings() -> None:
    embed = load_minilm()
    vectors = embed(["Earthquake damage", "Damage caused by the quake", "Football final"])
    assert vectors.shape == (3, 384)
    reference = ["Damage caused by the quake"]
    near = heading_soft_recall(reference, ["Earthquake damage"], embed)
    far = heading_soft_recall(reference, ["Football final"], embed)
    assert near is not None and far is not None and near > far
