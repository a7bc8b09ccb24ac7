"""Hybrid search through a real knowledge base (BM25 and vectors on disk), with a small concept embedder."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from deepdraft.errors import KnowledgeBaseError
from deepdraft.retrieval.index.fusion import DEFAULT_KEEP_FIRST, reciprocal_rank_fusion
from deepdraft.retrieval.index.hybrid import DEFAULT_DEPTH, HybridSearcher, SearchMode
from deepdraft.retrieval.index.vectors import VectorIndex
from deepdraft.retrieval.kb.store import KnowledgeBase

# Words that mean the same thing share a dimension: the embedder "understands" paraphrases that
# share no word, which is what dense retrieval adds to BM25.
CONCEPTS = {
    "tariff": 0, "tariffs": 0, "duties": 0, "duty": 0, "customs": 0,
    "immigration": 1, "immigrants": 1, "newcomers": 1, "naturalization": 1,
    "debt": 2, "borrowing": 2, "bonds": 2, "deficit": 2,
    "moon": 3, "astronauts": 3, "rockets": 3,
    "farmers": 4, "harvest": 4, "crops": 4,
}  # fmt: skip

TEXTS = [
    "Protective tariffs shielded manufacturers; the tariff act raised rates.",  # 0: literal
    "Customs duties on imported goods were raised to protect industry.",  # 1: paraphrase of 0
    "Newcomers arrived by the million and naturalization laws changed.",  # 2
    "The government relied on borrowing and issued bonds to cover the deficit.",  # 3
    "Astronauts flew rockets to the Moon in 1969.",  # 4
    "Farmers lost their harvest when crops failed in the drought.",  # 5
    "The tariff on wool angered farmers who sold their crops abroad.",  # 6: tariffs and farmers
]


class ConceptEmbedder:
    """Bag of concepts; counts its calls so the query cache can be checked."""

    def __init__(self, dimension: int = len(set(CONCEPTS.values())) + 1) -> None:
        self.calls = 0
        self._dimension = dimension

    @property
    def name(self) -> str:
        return "test:concepts"

    @property
    def dimension(self) -> int:
        return self._dimension

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        self.calls += 1
        matrix = np.zeros((len(texts), self._dimension), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in re.findall(r"\w+", text.lower()):
                matrix[row, CONCEPTS.get(word, self._dimension - 1)] += 1.0 if word in CONCEPTS else 0.05
        norms = np.linalg.norm(matrix, axis=1, keepdims=True)
        return matrix / np.where(norms == 0, 1, norms)


@pytest.fixture
def kb(tmp_path: Path) -> Iterator[KnowledgeBase]:
    """A KB of one passage per text (document ``d<i>`` is TEXTS[i]) with concept vectors."""
    corpus = tmp_path / "passages.jsonl"
    records = [{"id": f"d{i}", "title": f"Passage {i}", "contents": text} for i, text in enumerate(TEXTS)]
    corpus.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    embedder = ConceptEmbedder()
    with KnowledgeBase.create(tmp_path / "kb", embedder=embedder) as opened:
        opened.add([corpus], embedder=embedder)
        assert opened.info().chunks == len(TEXTS)
        yield opened


def found(kb: KnowledgeBase, query: str, k: int, mode: SearchMode, **filters: list[str]) -> list[int]:
    """The text numbers (i of TEXTS[i]) the KB finds, best first."""
    return [int(p.source.doc_id[1:]) for p in kb.search(query, k, mode=mode, **filters)]  # type: ignore[arg-type]


def no_lexical_hits(query: str, k: int, allowed: npt.NDArray[np.bool_] | None) -> list[tuple[int, float]]:
    return []


def test_bm25_mode_is_lexical(kb: KnowledgeBase) -> None:
    lexical = found(kb, "tariff", 5, "bm25")
    assert {0, 6} <= set(lexical) and 1 not in lexical  # the paraphrase has no such word


def test_dense_mode_finds_paraphrases(kb: KnowledgeBase) -> None:
    assert {0, 1} <= set(found(kb, "tariff", 3, "dense"))


def test_hybrid_fuses_both_rankings(kb: KnowledgeBase) -> None:
    hits = found(kb, "tariff farmers", 4, "hybrid")
    assert hits[0] == 6  # the one passage about both wins on both sides
    assert {0, 1} & set(hits)
    lexical = found(kb, "tariff farmers", DEFAULT_DEPTH, "bm25")
    dense = found(kb, "tariff farmers", DEFAULT_DEPTH, "dense")
    fused = reciprocal_rank_fusion([lexical, dense], limit=4, keep_first=DEFAULT_KEEP_FIRST)
    assert hits == [row for row, _ in fused]


def test_every_mode_honours_the_document_filter(kb: KnowledgeBase) -> None:
    for mode in ("bm25", "dense", "hybrid"):
        hits = found(kb, "tariff debt harvest", 10, mode, only=["d1", "d3", "d5"])  # type: ignore[arg-type]
        assert hits and set(hits) <= {1, 3, 5}


def test_without_vectors_hybrid_is_bm25_and_dense_is_an_error() -> None:
    lexical_only = HybridSearcher(no_lexical_hits)
    assert not lexical_only.has_dense and lexical_only.search("debt", 3) == []
    with pytest.raises(KnowledgeBaseError, match="no dense vectors"):
        lexical_only.search("debt", 3, mode="dense")
    with pytest.raises(ValueError, match="both"):
        HybridSearcher(no_lexical_hits, embedder=ConceptEmbedder())


def test_query_vectors_are_cached(tmp_path: Path) -> None:
    embedder = ConceptEmbedder()
    vectors = VectorIndex.write(tmp_path / "v", [embedder.embed(TEXTS)], embedder.dimension)
    searcher = HybridSearcher(no_lexical_hits, vectors, embedder, cache_size=2)
    calls = embedder.calls
    for query in ["debt", "moon", "debt", "debt"]:
        searcher.search(query, 3)
    assert embedder.calls == calls + 2
    searcher.search("harvest", 3)  # evicts "moon", the least recently used
    searcher.search("moon", 3)
    assert embedder.calls == calls + 4


def test_a_kb_caches_its_query_vectors_too(kb: KnowledgeBase) -> None:
    embedder = ConceptEmbedder()
    with KnowledgeBase.open(kb.folder, embedder=embedder) as reader:
        for _ in range(3):
            reader.search("debt", 3)
        reader.search("debt", 3, mode="dense")
        assert embedder.calls == 1
        reader.search("debt", 3, mode="bm25")
        assert embedder.calls == 1


def test_an_embedder_of_another_dimension_is_refused(tmp_path: Path) -> None:
    vectors = VectorIndex.write(tmp_path / "v", [ConceptEmbedder().embed(TEXTS)], ConceptEmbedder().dimension)
    searcher = HybridSearcher(no_lexical_hits, vectors, ConceptEmbedder(dimension=3))
    with pytest.raises(KnowledgeBaseError, match="dimensions"):
        searcher.search("debt", 3)


def test_empty_queries_and_k_find_nothing(kb: KnowledgeBase) -> None:
    assert kb.search("   ", 5) == [] == kb.search("debt", 0)
    assert kb.search("zzzz qqqq", 5, mode="bm25") == []
