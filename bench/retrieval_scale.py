"""How the local BM25 index scales: build time, size on disk, memory, and query latency.

Generates a synthetic JSONL corpus (deterministic pseudo-words drawn with a Zipf-like distribution
from a fixed vocabulary, ~120 words a passage, UltraRAG layout with the title on the first line) in
a temporary folder, builds a `BM25Index` over it with the default chunk settings, reopens it the way
a run does (memory-mapped matrix, chunk texts in SQLite) and times queries of 2–4 words.

Random words are harder than prose for BM25 (no stopwords, flat vocabulary), so the build time is a
pessimistic one; the latency depends mostly on how many postings the query terms have.

    .venv/bin/python bench/retrieval_scale.py                 # 100k passages
    .venv/bin/python bench/retrieval_scale.py --passages 10000
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import resource
import statistics
import tempfile
import time
from itertools import accumulate
from pathlib import Path

from deepdraft.retrieval.bm25_index import BM25Index
from deepdraft.retrieval.corpus import iter_documents
from deepdraft.settings import RetrievalSettings

SYLLABLES = [c + v for c in "bcdfghjklmnprstvwz" for v in ("a", "e", "i", "o", "u", "ai", "ou")]


def make_vocabulary(size: int, rng: random.Random) -> list[str]:
    words: set[str] = set()
    while len(words) < size:
        words.add("".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 4))))
    return sorted(words)


def write_corpus(path: Path, passages: int, words: int, vocabulary: list[str], rng: random.Random) -> None:
    # Zipf-like: the word of rank r is drawn with weight 1/r, like word frequencies in text.
    cumulative = list(accumulate(1.0 / rank for rank in range(1, len(vocabulary) + 1)))
    with path.open("w", encoding="utf-8") as out:
        for number in range(passages):
            length = rng.randint(words - 20, words + 20)
            body = " ".join(rng.choices(vocabulary, cum_weights=cumulative, k=length))
            title = " ".join(rng.choices(vocabulary, k=3)).title()
            out.write(json.dumps({"id": f"p{number}", "contents": f'"{title}"\n{body}.'}) + "\n")


def rss_mib() -> float:
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux


def folder_mib(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--passages", type=int, default=100_000)
    parser.add_argument("--words", type=int, default=120, help="mean words per passage")
    parser.add_argument("--vocabulary", type=int, default=30_000)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    rng = random.Random(args.seed)

    with tempfile.TemporaryDirectory(prefix="deepdraft-bench-") as tmp:
        root = Path(tmp)
        vocabulary = make_vocabulary(args.vocabulary, rng)
        corpus = root / "corpus.jsonl"
        started = time.perf_counter()
        write_corpus(corpus, args.passages, args.words, vocabulary, rng)
        generated = time.perf_counter() - started
        print(f"corpus:           {args.passages:,} passages, {corpus.stat().st_size / 2**20:.1f} MiB JSONL")
        print(f"  generated in    {generated:.1f} s")

        rss_before = rss_mib()
        started = time.perf_counter()
        with BM25Index.build(iter_documents(corpus), root / "index", RetrievalSettings()) as index:
            built = time.perf_counter() - started
            manifest = index.manifest
        print(f"build:            {built:.1f} s ({args.passages / built:,.0f} passages/s)")
        print(f"  chunks          {manifest['chunks']:,} (vocabulary {manifest['vocabulary']:,} terms)")
        print(f"  index on disk   {folder_mib(root / 'index'):.1f} MiB")
        print(f"  RSS             {rss_before:.0f} MiB before, peak {peak_rss_mib():.0f} MiB (process)")

        gc.collect()
        rss_closed = rss_mib()
        started = time.perf_counter()
        index = BM25Index.open(root / "index")
        opened = time.perf_counter() - started
        queries = [
            " ".join(rng.choices(vocabulary[50:5000], k=rng.randint(2, 4))) for _ in range(args.queries)
        ]
        index.search(queries[0], args.k)  # first touch of the memory map
        latencies, hits = [], 0
        for query in queries:
            started = time.perf_counter()
            hits += len(index.search(query, args.k))
            latencies.append((time.perf_counter() - started) * 1000)
        rss_open = rss_mib()
        index.close()
        latencies.sort()
        p50, p95 = latencies[len(latencies) // 2], latencies[int(len(latencies) * 0.95)]
        print(f"open:             {opened * 1000:.0f} ms; RSS +{rss_open - rss_closed:.0f} MiB after queries")
        print(
            f"search (k={args.k}):    mean {statistics.mean(latencies):.1f} ms, "
            f"p50 {p50:.1f} ms, p95 {p95:.1f} ms "
            f"over {len(latencies)} queries ({hits / len(latencies):.1f} hits each)"
        )


if __name__ == "__main__":
    main()
