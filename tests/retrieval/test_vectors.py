"""Vectors on disk: exact and HNSW search, row filters, memory mapping, atomic writes, damage."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from deepdraft.errors import KnowledgeBaseError
from deepdraft.retrieval.index.vectors import HNSW_FILE, MANIFEST_FILE, VECTORS_FILE, VectorIndex


def clustered(rows: int, dimension: int, seed: int) -> npt.NDArray[np.float32]:
    """Unit vectors around 40 random centres: shaped like embeddings, unlike uniform noise."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((40, dimension))
    data = centres[rng.integers(0, 40, rows)] + 0.6 * rng.standard_normal((rows, dimension))
    data /= np.linalg.norm(data, axis=1, keepdims=True)
    return data.astype(np.float32)


def in_batches(data: npt.NDArray[np.float32], size: int) -> Iterator[npt.NDArray[np.float32]]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def exact_top(data: npt.NDArray[np.float32], query: npt.NDArray[np.float32], k: int) -> list[int]:
    scores = data @ (query / np.linalg.norm(query))
    return [int(i) for i in np.argsort(-scores, kind="stable")[:k]]


def test_written_vectors_reopen_memory_mapped_and_search_exactly(tmp_path: Path) -> None:
    data = clustered(1000, 16, seed=1)
    written = VectorIndex.write(tmp_path / "vec", in_batches(data * 3, 128), 16, metadata={"embedder": "e"})
    index = VectorIndex.open(tmp_path / "vec")
    assert isinstance(index.vectors, np.memmap) and not index.vectors.flags.writeable
    assert (len(index), index.dimension, index.metadata) == (1000, 16, {"embedder": "e"})
    assert not index.has_graph and not (tmp_path / "vec" / HNSW_FILE).exists()
    np.testing.assert_allclose(index.vectors, data, atol=1e-6)  # rows were normalised on the way
    queries = clustered(20, 16, seed=2)
    for query in queries:
        hits = index.search(query * 5, 10)
        assert [row for row, _ in hits] == exact_top(data, query, 10)
        scores = [score for _, score in hits]
        assert scores == sorted(scores, reverse=True)
        np.testing.assert_allclose(scores[0], float(data[hits[0][0]] @ query), rtol=1e-5)
    assert written.search(queries[0], 10) == index.search(queries[0], 10)


def test_hnsw_and_brute_force_agree_on_recall(tmp_path: Path) -> None:
    pytest.importorskip("faiss")
    data = clustered(4000, 32, seed=3)
    graph = VectorIndex.write(tmp_path / "graph", in_batches(data, 1000), 32, hnsw_threshold=1000)
    exact = VectorIndex.write(tmp_path / "exact", in_batches(data, 1000), 32)
    assert graph.has_graph and (tmp_path / "graph" / HNSW_FILE).is_file() and not exact.has_graph
    queries = clustered(50, 32, seed=4)
    found = 0
    for query in queries:
        truth = {row for row, _ in exact.search(query, 10)}
        hits = graph.search(query, 10)
        assert len(hits) == 10
        found += len(truth & {row for row, _ in hits})
    assert found / (10 * len(queries)) >= 0.95


@pytest.mark.parametrize("graph", [False, True])
def test_a_row_filter_is_honoured_exactly(tmp_path: Path, graph: bool) -> None:
    if graph:
        pytest.importorskip("faiss")
    data = clustered(3000, 16, seed=5)
    index = VectorIndex.write(tmp_path / "v", [data], 16, hnsw_threshold=1000 if graph else 10**9)
    rng = np.random.default_rng(6)
    for share in (0.002, 0.1, 0.6):  # a handful of rows, a few, most
        allowed = rng.random(3000) < share
        query = clustered(1, 16, seed=int(share * 1000))[0]
        hits = index.search(query, 10, allowed=allowed)
        rows = [row for row, _ in hits]
        assert all(allowed[row] for row in rows)
        assert len(rows) == min(10, int(allowed.sum()))
        truth = [
            int(i) for i in np.flatnonzero(allowed)[np.argsort(-(data[allowed] @ query), kind="stable")][:10]
        ]
        if not graph or share < 0.3:  # exact path: identical; graph path: near-identical
            assert rows == truth
        else:
            assert len(set(rows) & set(truth)) >= 8
    assert index.search(data[0], 10, allowed=np.zeros(3000, dtype=bool)) == []


def test_degenerate_queries_and_empty_indexes(tmp_path: Path) -> None:
    empty = VectorIndex.write(tmp_path / "empty", iter([]), 8)
    assert len(empty) == 0 and empty.search(np.ones(8), 5) == []
    index = VectorIndex.write(tmp_path / "v", [clustered(5, 8, seed=7)], 8)
    assert index.search(np.zeros(8), 5) == []  # no direction, no similarity
    assert index.search(np.ones(8), 0) == []
    assert len(index.search(np.ones(8), 50)) == 5
    with pytest.raises(ValueError, match="dimension 3"):
        index.search(np.ones(3), 5)
    with pytest.raises(ValueError, match="allowed"):
        index.search(np.ones(8), 5, allowed=np.ones(4, dtype=bool))


def test_bad_batches_are_refused_and_leave_nothing_behind(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"expected \(n, 8\)"):
        VectorIndex.write(tmp_path / "v", [np.ones((3, 7))], 8)
    with pytest.raises(ValueError, match="NaN"):
        VectorIndex.write(tmp_path / "v", [np.full((2, 8), np.nan)], 8)
    assert list(tmp_path.iterdir()) == []


def test_a_failed_rewrite_keeps_the_previous_vectors(tmp_path: Path) -> None:
    old = clustered(100, 8, seed=8)
    VectorIndex.write(tmp_path / "v", [old], 8, metadata={"version": 1})

    def crashing() -> Iterator[npt.NDArray[np.float32]]:
        yield clustered(50, 8, seed=9)
        raise KeyboardInterrupt  # e.g. Ctrl-C while the embedder works on the next batch

    with pytest.raises(KeyboardInterrupt):
        VectorIndex.write(tmp_path / "v", crashing(), 8, metadata={"version": 2})
    index = VectorIndex.open(tmp_path / "v")
    assert index.metadata == {"version": 1} and len(index) == 100
    np.testing.assert_allclose(index.vectors, old, atol=1e-6)
    assert [p.name for p in tmp_path.iterdir()] == ["v"]  # no temporary folder left over
    # A successful rewrite replaces it.
    assert len(VectorIndex.write(tmp_path / "v", [old[:10]], 8)) == 10


def test_user_folders_are_never_overwritten(tmp_path: Path) -> None:
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("keep me")
    with pytest.raises(KnowledgeBaseError, match="not empty"):
        VectorIndex.write(tmp_path / "notes", [np.ones((1, 4))], 4)
    (tmp_path / "file").write_text("x")
    with pytest.raises(KnowledgeBaseError, match="is a file"):
        VectorIndex.write(tmp_path / "file", [np.ones((1, 4))], 4)
    assert (tmp_path / "notes" / "todo.txt").read_text() == "keep me"


def test_missing_or_damaged_vectors_are_reported(tmp_path: Path) -> None:
    with pytest.raises(KnowledgeBaseError, match="no dense vectors"):
        VectorIndex.open(tmp_path / "nothing")
    VectorIndex.write(tmp_path / "v", [np.ones((10, 4))], 4)
    manifest = json.loads((tmp_path / "v" / MANIFEST_FILE).read_text())
    (tmp_path / "v" / MANIFEST_FILE).write_text(json.dumps({**manifest, "rows": 11}))
    with pytest.raises(KnowledgeBaseError, match="do not match"):
        VectorIndex.open(tmp_path / "v")
    (tmp_path / "v" / MANIFEST_FILE).write_text(json.dumps({**manifest, "version": 99}))
    with pytest.raises(KnowledgeBaseError, match="version 99"):
        VectorIndex.open(tmp_path / "v")
    (tmp_path / "v" / MANIFEST_FILE).write_text(json.dumps(manifest))
    (tmp_path / "v" / VECTORS_FILE).write_bytes(b"not numpy")
    with pytest.raises(KnowledgeBaseError, match="damaged"):
        VectorIndex.open(tmp_path / "v")
