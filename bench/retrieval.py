"""Retrieval benchmark: ingestion, embedding, hybrid latency at scale, and retrieval quality.

Prints, in order:

1. **Ingestion** of the demo corpus (233 State of the Union addresses, `deepdraft setup`) into a real
   KB through `deepdraft.retrieval.kb_store` (BM25 only, as `kb add` does by default): documents,
   chunks, pages per second, size on disk, peak RSS. The speeches are JSONL records without pages, so
   pages are counted as 500-word page equivalents (said in the output).
2. **Embedding throughput** of the configured embedder (MiniLM unless ``--embed-base-url``) on a
   sample of corpus passages, and the latency of embedding one query.
3. **Retrieval quality** of BM25, dense and hybrid (`HybridSearcher`) over an evaluation subset of
   the speeches (dense over all 233 is hours of MiniLM on 2 cores): known-item queries (a 10-word span
   copied from a random passage, seeded; a hit is any passage containing the span) and topic
   questions labelled by hand at document level (`bench/data/retrieval_labels.jsonl`: its first line
   lists the evaluation speeches, each further line a question and the speeches that discuss the
   topic substantially). Recall@10 and MRR for both; for topics, recall@10 counts the distinct
   relevant speeches among the top 10 passages out of min(relevant, 10), and P@10 the share of the
   top 10 passages that come from a relevant speech. A small sweep over candidate depth and the RRF
   constant follows (on the same queries: it shows sensitivity, it is not a held-out tuning).
4. **Latency at scale** (100k and 1M passages by default): synthetic passages (Zipf-distributed
   pseudo-words, see `retrieval_scale.py`) in a real `BM25Index`, synthetic 384-d vectors (clustered
   like embeddings) in a real `VectorIndex` (HNSW from 200k rows), queried one at a time through
   `HybridSearcher` with a precomputed query vector (query embedding is timed in section 2), k=10.
   BM25-only and dense-only beside hybrid, and the recall of the HNSW graph against exact search.

Built indexes and vectors are cached under ``--cache`` (default ``~/.cache/deepdraft/bench``), so a
rerun takes minutes; the first run at 1M passages takes about half an hour on 2 cores and ~5 GB of
disk. No number here is asserted anywhere: the bench reports, `tests/test_bench_retrieval.py` only
checks that it runs.

    .venv/bin/python bench/retrieval.py
    .venv/bin/python bench/retrieval.py --scales 100000 --skip-ingest      # quicker
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import resource
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

sys.path.insert(0, str(Path(__file__).resolve().parent))
from deepdraft.demo import demo_corpus_path
from deepdraft.retrieval.bm25_index import CHUNKS_DB, BM25Index
from deepdraft.retrieval.corpus import Document, iter_documents
from deepdraft.retrieval.embedders import Embedder, build_embedder
from deepdraft.retrieval.hybrid import DEFAULT_DEPTH, HybridSearcher, SearchMode
from deepdraft.retrieval.vectors import HNSW_THRESHOLD, VectorIndex
from deepdraft.settings import EmbeddingSettings, RetrievalSettings
from retrieval_scale import make_vocabulary, write_corpus

MODES: tuple[SearchMode, ...] = ("bm25", "dense", "hybrid")
WORDS_PER_PAGE = 500
SPAN_WORDS = 10
K = 10


# -- measuring -------------------------------------------------------------------------------------


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux


def rss_mib() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def folder_mib(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**20


def percentile(values: Sequence[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def say(*parts: object) -> None:
    print(*parts, flush=True)


def note(message: str) -> None:
    print(f"  … {message}", file=sys.stderr, flush=True)


# -- 1. ingestion ----------------------------------------------------------------------------------


def bench_ingestion(corpus: Path) -> dict[str, Any]:
    from deepdraft.retrieval.kb_store import KnowledgeBase

    say("\n== 1. Ingestion (kb_store, BM25 only) ==")
    words = sum(len(doc.text.split()) for doc in iter_documents(corpus))
    with tempfile.TemporaryDirectory(prefix="deepdraft-bench-kb-") as tmp:
        rss_before = rss_mib()
        started = time.perf_counter()
        with KnowledgeBase.create(Path(tmp) / "kb") as kb:
            kb.add([corpus])
            seconds = time.perf_counter() - started
            info = kb.info()
        size = info.size_bytes / 2**20
    pages = info.pages or words / WORDS_PER_PAGE
    page_kind = "pages" if info.pages else f"{WORDS_PER_PAGE}-word page equivalents (JSONL has no pages)"
    say(f"corpus            {corpus} ({corpus.stat().st_size / 2**20:.1f} MiB, {words:,} words)")
    say(f"documents         {info.documents:,} in {seconds:.1f} s ({info.documents / seconds:.1f}/s)")
    say(f"pages             {pages:,.0f} {page_kind}: {pages / seconds:,.0f} pages/s")
    say(f"chunks            {info.chunks:,}: {info.chunks / seconds:,.0f} chunks/s")
    say(f"KB on disk        {size:.1f} MiB")
    say(f"RSS               {rss_before:.0f} MiB before, process peak {peak_rss_mib():.0f} MiB")
    return {
        "documents": info.documents,
        "chunks": info.chunks,
        "seconds": seconds,
        "pages_per_s": pages / seconds,
        "chunks_per_s": info.chunks / seconds,
        "size_mib": size,
        "peak_rss_mib": peak_rss_mib(),
    }


# -- the evaluation subset -------------------------------------------------------------------------


@dataclass
class EvalCorpus:
    index: BM25Index
    doc_of_row: list[str]
    text_of_row: list[str]
    topics: list[dict[str, Any]]


def load_eval_corpus(corpus: Path, labels_path: Path, folder: Path) -> EvalCorpus:
    lines = [
        json.loads(line) for line in labels_path.read_text(encoding="utf-8").splitlines() if line.strip()
    ]
    header, topics = lines[0], lines[1:]
    subset = set(header["evaluation_documents"])
    documents: list[Document] = [doc for doc in iter_documents(corpus) if doc.doc_id in subset]
    missing = subset - {doc.doc_id for doc in documents}
    if missing:
        raise SystemExit(
            f"{len(missing)} evaluation documents are not in {corpus}, e.g. {sorted(missing)[0]}"
        )
    index = BM25Index.build(documents, folder / "eval-bm25", RetrievalSettings())
    db = sqlite3.connect(folder / "eval-bm25" / CHUNKS_DB)
    rows = db.execute(
        "SELECT d.doc_id, c.text FROM chunks c JOIN documents d ON d.row = c.document ORDER BY c.row"
    ).fetchall()
    db.close()
    for topic in topics:
        topic["relevant"] = [doc for doc in topic["relevant"] if doc in subset]
    return EvalCorpus(index, [doc for doc, _ in rows], [text for _, text in rows], topics)


def cached_vectors(embedder: Embedder, texts: list[str], cache: Path, batch: int) -> VectorIndex:
    """Embeds `texts` once per (embedder, texts); later runs open the cached vectors."""
    digest = hashlib.sha256(embedder.name.encode())
    for text in texts:
        digest.update(text.encode() + b"\0")
    folder = cache / f"eval-vectors-{digest.hexdigest()[:16]}"
    try:
        return VectorIndex.open(folder)
    except Exception:
        pass
    started = time.perf_counter()

    def batches() -> Iterator[npt.NDArray[np.float32]]:
        for start in range(0, len(texts), batch):
            yield embedder.embed(texts[start : start + batch])
            done = min(start + batch, len(texts))
            rate = done / (time.perf_counter() - started)
            note(f"embedded {done:,}/{len(texts):,} passages ({rate:.1f}/s)")

    return VectorIndex.write(folder, batches(), embedder.dimension, metadata={"embedder": embedder.name})


# -- 2. embedding throughput -----------------------------------------------------------------------


def bench_embedding(embedder: Embedder, texts: list[str], sample: int) -> dict[str, Any]:
    say(f"\n== 2. Embedding throughput ({embedder.name}) ==")
    rng = random.Random(11)
    passages = rng.sample(texts, min(sample, len(texts)))
    started = time.perf_counter()
    embedder.embed(passages[:8])  # loads the model: not part of the rate
    loaded = time.perf_counter() - started
    started = time.perf_counter()
    embedder.embed(passages)
    seconds = time.perf_counter() - started
    queries = [" ".join(p.split()[:8]) for p in passages[:30]]
    latencies = []
    for query in queries:
        started = time.perf_counter()
        embedder.embed([query])
        latencies.append((time.perf_counter() - started) * 1000)
    words = statistics.mean(len(p.split()) for p in passages)
    say(f"model load + first batch  {loaded:.1f} s")
    say(
        f"passages                  {len(passages)} of ~{words:.0f} words: "
        f"{len(passages) / seconds:.1f} passages/s"
    )
    say(f"one query (8 words)       p50 {percentile(latencies, 0.5):.1f} ms")
    say(f"process RSS               {rss_mib():.0f} MiB (peak {peak_rss_mib():.0f} MiB)")
    return {"passages_per_s": len(passages) / seconds, "query_ms_p50": percentile(latencies, 0.5)}


# -- 3. quality ------------------------------------------------------------------------------------


def known_items(data: EvalCorpus, count: int, seed: int) -> list[tuple[str, set[int]]]:
    """(span, rows containing it): spans of SPAN_WORDS words from random passages."""
    rng = random.Random(seed)
    rows = list(range(len(data.text_of_row)))
    rng.shuffle(rows)
    queries: list[tuple[str, set[int]]] = []
    for row in rows:
        words = data.text_of_row[row].split()
        if len(words) < 3 * SPAN_WORDS:
            continue
        start = rng.randrange(SPAN_WORDS, len(words) - 2 * SPAN_WORDS)
        span = " ".join(words[start : start + SPAN_WORDS])
        pattern = re.compile(r"\s+".join(map(re.escape, span.split())))
        holders = {r for r, text in enumerate(data.text_of_row) if pattern.search(text)}
        queries.append((span, holders))
        if len(queries) == count:
            break
    return queries


def quality(
    searcher: HybridSearcher, data: EvalCorpus, spans: list[tuple[str, set[int]]], modes: Sequence[SearchMode]
) -> dict[str, dict[str, float]]:
    results: dict[str, dict[str, float]] = {}
    for mode in modes:
        recall = mrr = 0.0
        for span, holders in spans:
            rows = [row for row, _ in searcher.search(span, K, mode=mode)]
            ranks = [i for i, row in enumerate(rows, 1) if row in holders]
            recall += bool(ranks)
            mrr += 1 / ranks[0] if ranks else 0.0
        t_recall = t_mrr = t_precision = 0.0
        for topic in data.topics:
            relevant = set(topic["relevant"])
            docs = [data.doc_of_row[row] for row, _ in searcher.search(topic["question"], K, mode=mode)]
            ranks = [i for i, doc in enumerate(docs, 1) if doc in relevant]
            t_recall += len(relevant & set(docs)) / min(len(relevant), K)
            t_mrr += 1 / ranks[0] if ranks else 0.0
            t_precision += len(ranks) / K
        n, t = len(spans), len(data.topics)
        results[mode] = {
            "known_recall@10": recall / n,
            "known_mrr": mrr / n,
            "topic_recall@10": t_recall / t,
            "topic_mrr": t_mrr / t,
            "topic_p@10": t_precision / t,
        }
    return results


def bench_quality(
    data: EvalCorpus, embedder: Embedder, cache: Path, known: int, batch: int, sweep: bool
) -> dict[str, Any]:
    say("\n== 3. Retrieval quality (demo corpus subset) ==")
    documents = len(set(data.doc_of_row))
    say(
        f"evaluation subset  {documents} speeches, {len(data.text_of_row):,} passages (all modes search "
        f"the same passages; dense vectors by {embedder.name}, cached under {cache})"
    )
    vectors = cached_vectors(embedder, data.text_of_row, cache, batch)
    spans = known_items(data, known, seed=1790)
    searcher = HybridSearcher(data.index.rank, vectors, embedder)
    results = quality(searcher, data, spans, MODES)
    say(f"known-item queries {len(spans)} ({SPAN_WORDS}-word spans, seed 1790)")
    say(f"topic questions    {len(data.topics)} (document-level labels)")
    say(
        f"{'':8} {'known R@10':>11} {'known MRR':>10} {'topic R@10':>11} {'topic MRR':>10} {'topic P@10':>11}"
    )
    for mode, row in results.items():
        say(
            f"{mode:8} {row['known_recall@10']:11.3f} {row['known_mrr']:10.3f} "
            f"{row['topic_recall@10']:11.3f} {row['topic_mrr']:10.3f} {row['topic_p@10']:11.3f}"
        )
    for metric in ("known_recall@10", "topic_recall@10"):
        best_single = max(results["bm25"][metric], results["dense"][metric])
        verdict = "meets" if results["hybrid"][metric] >= best_single else "MISSES"
        say(f"target hybrid {metric} ≥ max(bm25, dense) = {best_single:.3f}: {verdict}")
    summary: dict[str, Any] = {
        "subset_documents": documents,
        "passages": len(data.text_of_row),
        "modes": results,
    }
    if sweep:
        say("sweep of hybrid (candidate depth × RRF k): known R@10 / topic R@10 / topic P@10")
        grid = []
        remembered = Remembered(embedder)
        for depth in (20, 50, 100, 200):
            cells = []
            for rrf_k in (10, 30, 60, 100):
                tuned = HybridSearcher(data.index.rank, vectors, remembered, depth=depth, rrf_k=rrf_k)
                row = quality(tuned, data, spans, ["hybrid"])["hybrid"]
                cells.append(
                    f"k={rrf_k:<3} {row['known_recall@10']:.2f}/{row['topic_recall@10']:.2f}"
                    f"/{row['topic_p@10']:.2f}"
                )
                grid.append({"depth": depth, "rrf_k": rrf_k, **row})
            say(f"  depth {depth:<4} " + "   ".join(cells))
        summary["sweep"] = grid
    return summary


class Remembered:
    """An embedder that embeds each text once: the sweep asks the same queries sixteen times."""

    def __init__(self, embedder: Embedder) -> None:
        self._embedder = embedder
        self._seen: dict[str, npt.NDArray[np.float32]] = {}

    @property
    def name(self) -> str:
        return self._embedder.name

    @property
    def dimension(self) -> int:
        return self._embedder.dimension

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        for text in texts:
            if text not in self._seen:
                self._seen[text] = self._embedder.embed([text])[0]
        return np.stack([self._seen[text] for text in texts])


# -- 4. latency at scale ---------------------------------------------------------------------------


class SyntheticQueries:
    """An `Embedder` for synthetic queries: each text maps to a fixed vector near a cluster centre."""

    def __init__(self, centres: npt.NDArray[np.float32], noise: float) -> None:
        self._centres = centres
        self._noise = noise

    @property
    def name(self) -> str:
        return "synthetic"

    @property
    def dimension(self) -> int:
        return int(self._centres.shape[1])

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        rows = []
        for text in texts:
            rng = np.random.default_rng(int(hashlib.sha256(text.encode()).hexdigest()[:12], 16))
            centre = self._centres[rng.integers(len(self._centres))]
            rows.append(centre + self._noise * rng.standard_normal(self.dimension))
        matrix = np.asarray(rows, dtype=np.float32)
        return matrix / np.linalg.norm(matrix, axis=1, keepdims=True)


def synthetic_batches(
    rows: int, centres: npt.NDArray[np.float32], noise: float, seed: int
) -> Iterator[npt.NDArray[np.float32]]:
    rng = np.random.default_rng(seed)
    for start in range(0, rows, 50_000):
        size = min(50_000, rows - start)
        picks = rng.integers(len(centres), size=size)
        yield (centres[picks] + noise * rng.standard_normal((size, centres.shape[1]))).astype(np.float32)


def scale_indexes(passages: int, cache: Path, dimension: int) -> tuple[BM25Index, VectorIndex, Any]:
    folder = cache / f"scale-{passages}"
    rng = random.Random(7)
    vocabulary = make_vocabulary(30_000, rng)
    try:
        index = BM25Index.open(folder / "bm25")
    except Exception:
        folder.mkdir(parents=True, exist_ok=True)
        corpus = folder / "corpus.jsonl"
        note(f"writing {passages:,} synthetic passages")
        write_corpus(corpus, passages, 120, vocabulary, rng)
        note("building the BM25 index (minutes per million passages)")
        started = time.perf_counter()
        # One chunk a passage: the scale is counted in passages as a KB stores them.
        settings = RetrievalSettings(chunk_tokens=1000, chunk_overlap=0)
        index = BM25Index.build(iter_documents(corpus), folder / "bm25", settings)
        note(f"BM25 built in {time.perf_counter() - started:.0f} s")
        corpus.unlink()
    centres = np.random.default_rng(3).standard_normal((2000, dimension)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    noise = 1.2 / np.sqrt(dimension)  # neighbours of a centre: cosine ≈ 0.6 to it, like related passages
    try:
        vectors = VectorIndex.open(folder / "vectors")
        if len(vectors) != len(index):
            raise ValueError("stale")
    except Exception:
        note(
            f"writing {len(index):,} synthetic vectors"
            + (" and the HNSW graph" if len(index) >= HNSW_THRESHOLD else "")
        )
        started = time.perf_counter()
        vectors = VectorIndex.write(
            folder / "vectors", synthetic_batches(len(index), centres, noise, 5), dimension
        )
        note(f"vectors written in {time.perf_counter() - started:.0f} s")
    return index, vectors, (vocabulary, centres, noise)


def bench_scale(
    passages: int, cache: Path, queries: int, depth: int, rrf_k: int, ef_search: int
) -> dict[str, Any]:
    say(f"\n== 4. Latency at {passages:,} passages (synthetic passages and vectors, k={K}) ==")
    index, vectors, (vocabulary, centres, noise) = scale_indexes(passages, cache, 384)
    vectors.ef_search = ef_search
    searcher = HybridSearcher(index.rank, vectors, SyntheticQueries(centres, noise), depth=depth, rrf_k=rrf_k)
    rng = random.Random(passages)
    texts = [" ".join(rng.choices(vocabulary[50:5000], k=rng.randint(2, 4))) for _ in range(queries)]
    # One untimed pass first: query vectors are given (section 2 times the embedding), and every mode
    # is then timed on warm memory maps — otherwise whichever mode runs first pays the page faults.
    for text in texts:
        searcher.search(text, K)
    say(
        f"BM25 index {folder_mib(index.path):.0f} MiB, vectors {folder_mib(vectors.path):.0f} MiB on disk "
        f"({'HNSW graph, ef_search ' + str(ef_search) if vectors.has_graph else 'exact brute force'}); "
        f"hybrid depth {depth}, RRF k {rrf_k}"
    )
    summary: dict[str, Any] = {"passages": len(index)}
    latencies: dict[str, list[float]] = {mode: [] for mode in MODES}
    for text in texts:  # modes interleaved, so that a busy moment of the machine hits all of them
        for mode in MODES:
            started = time.perf_counter()
            searcher.search(text, K, mode=mode)
            latencies[mode].append((time.perf_counter() - started) * 1000)
    for mode in MODES:
        p50, p99 = percentile(latencies[mode], 0.5), percentile(latencies[mode], 0.99)
        summary[mode] = {"p50_ms": p50, "p99_ms": p99}
        say(f"{mode:8} p50 {p50:7.1f} ms   p99 {p99:7.1f} ms")
    if vectors.has_graph:
        found, exact_ms = 0, []
        matrix = vectors.vectors
        for text in texts:
            query = searcher.embed_query(text)
            started = time.perf_counter()
            scores = matrix @ query
            truth = set(np.argpartition(-scores, K)[:K].tolist())
            exact_ms.append((time.perf_counter() - started) * 1000)
            found += len(truth & {row for row, _ in vectors.search(query, K)})
        recall = found / (K * len(texts))
        summary["hnsw_recall@10"] = recall
        summary["exact_dense_p50_ms"] = percentile(exact_ms, 0.5)
        say(
            f"HNSW recall@10 vs exact {recall:.3f}; exact brute force would take "
            f"p50 {percentile(exact_ms, 0.5):.0f} ms"
        )
    target = "meets" if summary["hybrid"]["p50_ms"] < 50 else "MISSES"
    say(
        f"target hybrid p50 < 50 ms: {target}; process RSS {rss_mib():.0f} MiB, peak {peak_rss_mib():.0f} MiB"
    )
    index.close()
    return summary


# -- main ------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=None, help="JSONL corpus (default: the demo corpus)")
    parser.add_argument(
        "--labels", type=Path, default=Path(__file__).parent / "data" / "retrieval_labels.jsonl"
    )
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "deepdraft" / "bench")
    parser.add_argument(
        "--scales", default="100000,1000000", help="comma-separated passage counts ('' for none)"
    )
    parser.add_argument("--queries", type=int, default=200, help="latency queries per scale and mode")
    parser.add_argument("--known-items", type=int, default=60)
    parser.add_argument("--sample", type=int, default=256, help="passages for the embedding throughput")
    parser.add_argument("--depth", type=int, default=DEFAULT_DEPTH, help="hybrid candidates per side")
    parser.add_argument("--rrf-k", type=int, default=60)
    parser.add_argument("--ef-search", type=int, default=128)
    parser.add_argument("--embed-base-url", default=None, help="an OpenAI-compatible /embeddings endpoint")
    parser.add_argument("--embed-model", default=None)
    parser.add_argument("--skip-ingest", action="store_true")
    parser.add_argument("--no-sweep", action="store_true")
    parser.add_argument("--json", action="store_true", help="also print a JSON summary as the last line")
    args = parser.parse_args()

    corpus = args.corpus or demo_corpus_path()
    if not corpus.is_file():
        raise SystemExit(f"no corpus at {corpus}: run `deepdraft setup` first (or pass --corpus)")
    args.cache.mkdir(parents=True, exist_ok=True)
    embedding = EmbeddingSettings(base_url=args.embed_base_url, model=args.embed_model, batch_size=32)
    embedder = build_embedder(embedding)
    summary: dict[str, Any] = {}
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    say(
        f"deepdraft retrieval bench: {os.cpu_count()} CPUs (load average {load} at start), "
        f"corpus {corpus.name}"
    )
    if not args.skip_ingest:
        summary["ingestion"] = bench_ingestion(corpus)
    with tempfile.TemporaryDirectory(prefix="deepdraft-bench-eval-") as tmp:
        data = load_eval_corpus(corpus, args.labels, Path(tmp))
        summary["embedding"] = bench_embedding(embedder, data.text_of_row, args.sample)
        summary["quality"] = bench_quality(
            data, embedder, args.cache, args.known_items, 32, not args.no_sweep
        )
        data.index.close()
    scales = [int(s) for s in args.scales.split(",") if s.strip()]
    summary["scale"] = [
        bench_scale(n, args.cache, args.queries, args.depth, args.rrf_k, args.ef_search) for n in scales
    ]
    if args.json:
        print(json.dumps(summary))


if __name__ == "__main__":
    main()
