"""Hybrid search over a real BM25 index and real vectors on disk, with a small concept embedder."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from deepdraft.errors import KnowledgeBaseError
from deepdraft.retrieval.bm25_index import BM25Index
from deepdraft.retrieval.corpus import Document
from deepdraft.retrieval.fusion import reciprocal_rank_fusion
from deepdraft.retrieval.hybrid import HybridSearcher
from deepdraft.retrieval.vectors import VectorIndex
from deepdraft.settings import RetrievalSettings

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
def bm25(tmp_path: Path) -> Iterator[BM25Index]:
    documents = [Document(f"d{i}", f"Passage {i}", f"p{i}.txt", text) for i, text in enumerate(TEXTS)]
    with BM25Index.build(documents, tmp_path / "bm25", RetrievalSettings()) as index:
        assert len(index) == len(TEXTS)  # one chunk each: row i is TEXTS[i]
        yield index


@pytest.fixture
def searcher(bm25: BM25Index, tmp_path: Path) -> HybridSearcher:
    embedder = ConceptEmbedder()
    vectors = VectorIndex.write(tmp_path / "vectors", [embedder.embed(TEXTS)], embedder.dimension)
    return HybridSearcher(bm25.rank, vectors, embedder)


def rows(hits: list[tuple[int, float]]) -> list[int]:
    return [row for row, _ in hits]


def test_bm25_mode_is_the_lexical_ranking(searcher: HybridSearcher, bm25: BM25Index) -> None:
    assert searcher.search("tariff", 5, mode="bm25") == bm25.rank("tariff", 5)
    assert 1 not in rows(searcher.search("tariff", 5, mode="bm25"))  # the paraphrase has no such word


def test_dense_mode_finds_paraphrases(searcher: HybridSearcher) -> None:
    found = rows(searcher.search("tariff", 3, mode="dense"))
    assert {0, 1} <= set(found)


def test_hybrid_fuses_both_rankings(searcher: HybridSearcher, bm25: BM25Index) -> None:
    hits = searcher.search("tariff farmers", 4)
    assert rows(hits)[0] == 6  # the one passage about both wins on both sides
    assert {0, 1} & set(rows(hits))
    lexical = rows(bm25.rank("tariff farmers", searcher.depth))
    dense = rows(searcher.search("tariff farmers", searcher.depth, mode="dense"))
    assert hits == reciprocal_rank_fusion([lexical, dense], k=searcher.rrf_k, limit=4)


def test_every_mode_honours_the_row_filter(searcher: HybridSearcher) -> None:
    allowed = np.zeros(len(TEXTS), dtype=bool)
    allowed[[1, 3, 5]] = True
    for mode in ("bm25", "dense", "hybrid"):
        hits = searcher.search("tariff debt harvest", 10, mode=mode, allowed=allowed)  # type: ignore[arg-type]
        assert hits and set(rows(hits)) <= {1, 3, 5}


def test_without_vectors_hybrid_is_bm25_and_dense_is_an_error(bm25: BM25Index) -> None:
    lexical_only = HybridSearcher(bm25.rank)
    assert not lexical_only.has_dense
    assert lexical_only.search("deficit", 3) == bm25.rank("deficit", 3) != []
    with pytest.raises(KnowledgeBaseError, match="no dense vectors"):
        lexical_only.search("debt", 3, mode="dense")
    with pytest.raises(ValueError, match="both"):
        HybridSearcher(bm25.rank, embedder=ConceptEmbedder())


def test_query_vectors_are_cached(bm25: BM25Index, tmp_path: Path) -> None:
    embedder = ConceptEmbedder()
    vectors = VectorIndex.write(tmp_path / "v", [embedder.embed(TEXTS)], embedder.dimension)
    searcher = HybridSearcher(bm25.rank, vectors, embedder, cache_size=2)
    calls = embedder.calls
    for query in ["debt", "moon", "debt", "debt"]:
        searcher.search(query, 3)
    assert embedder.calls == calls + 2
    searcher.search("harvest", 3)  # evicts "moon", the least recently used
    searcher.search("moon", 3)
    assert embedder.calls == calls + 4


def test_an_embedder_of_another_dimension_is_refused(bm25: BM25Index, tmp_path: Path) -> None:
    vectors = VectorIndex.write(tmp_path / "v", [ConceptEmbedder().embed(TEXTS)], ConceptEmbedder().dimension)
    searcher = HybridSearcher(bm25.rank, vectors, ConceptEmbedder(dimension=3))
    with pytest.raises(KnowledgeBaseError, match="dimensions"):
        searcher.search("debt", 3)
    assert rows(searcher.search("deficit", 3, mode="bm25")) == [3]  # lexical search still works


def test_empty_queries_and_k_find_nothing(searcher: HybridSearcher) -> None:
    assert searcher.search("   ", 5) == [] == searcher.search("debt", 0)
    assert searcher.search("zzzz qqqq", 5, mode="bm25") == []
