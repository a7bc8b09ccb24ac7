"""The retrieval bench still runs end to end on a tiny corpus (it reports numbers; nothing is timed here)."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

from tests.support.openai_server import FakeOpenAIServer

BENCH = Path(__file__).resolve().parents[1] / "bench" / "retrieval.py"

TOPICS = {
    "tariffs": "tariff duties imports protection manufacturers customs revenue trade",
    "immigration": "immigrants naturalization newcomers border citizenship settlers aliens",
    "debt": "debt bonds borrowing interest treasury deficit creditors loans",
    "war": "army navy soldiers battle enemy victory peace treaty",
}
FILLER = [
    "the",
    "nation",
    "congress",
    "people",
    "government",
    "states",
    "year",
    "country",
    "great",
    "public",
    "present",
]


def write_corpus(folder: Path) -> tuple[Path, Path]:
    rng = random.Random(5)
    records, relevant = [], {topic: [] for topic in TOPICS}
    for number in range(12):
        topic = list(TOPICS)[number % len(TOPICS)]
        words = TOPICS[topic].split()
        text = " ".join(rng.choice(words if rng.random() < 0.3 else FILLER) for _ in range(400))
        doc_id = f"speech-{number}"
        records.append({"id": doc_id, "title": f"Speech {number}", "contents": text + "."})
        relevant[topic].append(doc_id)
    corpus = folder / "speeches.jsonl"
    corpus.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    labels = folder / "labels.jsonl"
    lines = [{"evaluation_documents": [r["id"] for r in records]}]
    lines += [
        {"topic": t, "question": f"What was said about {t}?", "relevant": docs}
        for t, docs in relevant.items()
    ]
    labels.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    return corpus, labels


def test_the_retrieval_bench_runs_on_a_tiny_corpus(tmp_path: Path) -> None:
    corpus, labels = write_corpus(tmp_path)
    with FakeOpenAIServer.for_embeddings(dimension=32) as server:
        result = subprocess.run(
            [
                sys.executable, str(BENCH), "--corpus", str(corpus), "--labels", str(labels),
                "--cache", str(tmp_path / "cache"), "--scales", "2000", "--queries", "10",
                "--known-items", "8", "--sample", "16", "--embed-base-url", server.base_url,
                "--embed-model", "hashed", "--json",
            ],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.splitlines()[-1])
    assert summary["ingestion"]["documents"] == 12 and summary["ingestion"]["chunks"] > 12
    assert set(summary["quality"]["modes"]) == {"bm25", "dense", "hybrid"}
    assert all(0 <= value <= 1 for row in summary["quality"]["modes"].values() for value in row.values())
    assert len(summary["quality"]["sweep"]) == 16
    scale = summary["scale"][0]
    assert scale["passages"] == 2000 and scale["hybrid"]["p50_ms"] > 0
    assert scale["build_s"] > 0 and scale["open_ms"] > 0  # built in this run: nothing was cached yet
    for heading in ("Ingestion", "Embedding throughput", "Retrieval quality", "Latency at 2,000 passages"):
        assert heading in result.stdout


def test_the_retrieval_bench_runs_the_postgres_engine_beside_the_embedded_one(
    tmp_path: Path, postgres_dsn: str
) -> None:
    corpus, labels = write_corpus(tmp_path)
    with FakeOpenAIServer.for_embeddings(dimension=32) as server:
        result = subprocess.run(
            [
                sys.executable, str(BENCH), "--corpus", str(corpus), "--labels", str(labels),
                "--cache", str(tmp_path / "cache"), "--scales", "1000", "--queries", "10",
                "--known-items", "8", "--sample", "16", "--embed-base-url", server.base_url,
                "--embed-model", "hashed", "--skip-ingest", "--no-sweep", "--postgres", postgres_dsn, "--json",
            ],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.splitlines()[-1])
    assert set(summary["postgres_quality"]["modes"]) == {"bm25", "dense", "hybrid"}
    assert all(0 <= v <= 1 for row in summary["postgres_quality"]["modes"].values() for v in row.values())
    scale = summary["postgres_scale"][0]
    assert scale["passages"] == 1000 and scale["build_s"] > 0 and scale["hybrid"]["p50_ms"] > 0
    assert "Postgres engine at 1,000 passages" in result.stdout
