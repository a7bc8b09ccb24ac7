"""Full-text ranking on Postgres is the embedded engine's BM25, and its statistics stay true.

The same corpus goes into a KB on each engine; the lexical rankings must agree (the same passages in
the same order, the same scores up to bm25s's float32). The BM25 statistics that the writers keep
must equal a recount after every kind of change, and a KB whose analyzer changed (or made before the
statistics existed) is brought up to date by its next add.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import psycopg
import pytest

from deepdraft.retrieval.kb import names
from deepdraft.retrieval.kb.postgres import search as pg_search
from deepdraft.retrieval.kb.postgres import statistics
from deepdraft.retrieval.kb.postgres.database import schema_of
from deepdraft.settings import RetrievalSettings

COMMON = ["tariff", "trade", "duty", "congress", "nation", "revenue", "import", "export"]
RARE = ["abomination", "reciprocity", "smuggling", "molasses", "retaliation", "wool", "silver", "canal"]
QUERIES = [
    "tariff",  # a common word alone: every passage holding it is scored
    "tariff trade congress",  # common words only
    "molasses tariff",  # a rare word and a common one: the bound prunes the common one
    "wool wool duty",  # a repeated query term counts twice, as in bm25s
    "silver canal reciprocity smuggling",
    "retaliation against imports of wool",  # stopwords and a stemmed plural
    "zeppelin tariff",  # a word no passage holds
]


def write_corpus(folder: Path, passages: int = 120, seed: int = 11) -> Path:
    """Passages of varied length drawn from a few common words and some rare ones (JSONL, one a line)."""
    rng = random.Random(seed)
    weights = [1.0 / rank for rank in range(1, len(COMMON) + 1)]
    folder.mkdir(parents=True, exist_ok=True)
    corpus = folder / "corpus.jsonl"
    with corpus.open("w", encoding="utf-8") as out:
        for number in range(passages):
            words = rng.choices(COMMON, weights=weights, k=rng.randint(4, 60))
            words += rng.sample(RARE, k=rng.randint(0, 2)) * rng.randint(1, 3)
            rng.shuffle(words)
            record = {"id": f"p{number}", "contents": f"Passage {number}\n" + " ".join(words) + "."}
            out.write(json.dumps(record) + "\n")
    return corpus


def ranking(kb: object, query: str, k: int = 10) -> list[tuple[str, float]]:
    return [(hit.source.doc_id, hit.score) for hit in kb.search(query, k, mode="bm25")]  # type: ignore[attr-defined]


def assert_same_ranking(embedded: list[tuple[str, float]], postgres: list[tuple[str, float]]) -> None:
    assert [doc for doc, _ in postgres] == [doc for doc, _ in embedded]
    for (_, expected), (_, score) in zip(embedded, postgres, strict=True):
        assert score == pytest.approx(expected, rel=1e-5)


def test_postgres_ranks_full_text_by_the_embedded_engines_bm25(tmp_path: Path, postgres_dsn: str) -> None:
    corpus = write_corpus(tmp_path / "corpus")
    settings = RetrievalSettings(chunk_tokens=1000, chunk_overlap=0)  # one passage a record
    with (
        names.create_kb("local", settings) as local,
        names.create_kb("shared", settings, engine="postgres", dsn=postgres_dsn) as shared,
    ):
        local.add([corpus])
        shared.add([corpus])
        for query in QUERIES:
            expected = ranking(local, query)
            assert expected or query.startswith("zeppelin"), query
            assert_same_ranking(expected, ranking(shared, query))
        # A filter restricts the passages, not the statistics: the scores stay those of the whole KB.
        only = [f"p{n}" for n in range(0, 120, 3)]
        for query in ("molasses tariff", "tariff"):
            expected = [(h.source.doc_id, h.score) for h in local.search(query, 5, mode="bm25", only=only)]
            found = [(h.source.doc_id, h.score) for h in shared.search(query, 5, mode="bm25", only=only)]
            assert_same_ranking(expected, found)


def test_common_words_left_unenumerated_still_rank_a_query_made_only_of_them(
    tmp_path: Path, postgres_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every word counts as common here: only the rarest is enumerated, so the list still fills, every
    # score is the embedded engine's, and the first hits (far above what a passage holding only the
    # words left out can score) are the embedded engine's.
    monkeypatch.setattr(pg_search, "COMMON_SHARE", 0.0)
    monkeypatch.setattr(pg_search, "COMMON_MINIMUM", 0)
    corpus = write_corpus(tmp_path / "corpus")
    settings = RetrievalSettings(chunk_tokens=1000, chunk_overlap=0)
    with (
        names.create_kb("local", settings) as local,
        names.create_kb("shared", settings, engine="postgres", dsn=postgres_dsn) as shared,
    ):
        local.add([corpus])
        shared.add([corpus])
        for query in ("tariff trade congress", "molasses wool"):
            expected, found = ranking(local, query, 60), ranking(shared, query, 10)
            assert len(found) == 10
            assert_same_ranking(expected[:3], found[:3])
            every = dict(expected)
            assert all(score == pytest.approx(every[doc], rel=1e-5) for doc, score in found)


Statistics = tuple[dict[str, int], tuple[int, int]]


def recounted(dsn: str, name: str) -> tuple[Statistics, Statistics]:
    """The statistics the writers kept, and a recount of them from the chunks (then rolled back)."""

    def read(conn: psycopg.Connection[tuple[object, ...]]) -> Statistics:
        terms = {str(term): int(str(df)) for term, df in conn.execute("SELECT term, df FROM term_stats")}
        row = conn.execute("SELECT passages, terms FROM corpus_stats").fetchone()
        assert row is not None
        return terms, (int(str(row[0])), int(str(row[1])))

    with psycopg.connect(dsn) as conn:
        conn.execute(f'SET search_path TO "{schema_of(conn, name)}", public')
        kept = read(conn)
        statistics.rebuild(conn)
        fresh = read(conn)
        conn.rollback()
    return kept, fresh


def test_the_statistics_follow_every_change_of_the_kb(tmp_path: Path, postgres_dsn: str) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "a.md").write_text(
        "# Wool\n\nThe wool duty rose.\n\n## Silver\n\nSilver and wool, wool again.\n"
    )
    (folder / "b.txt").write_text("Molasses smuggling defied the duty.\n")
    (folder / "c.txt").write_text("The canal carried trade.\n")
    (folder / "empty.txt").write_text("   \n")
    with names.create_kb("team", engine="postgres", dsn=postgres_dsn) as kb:
        kb.add([folder])
        (kept, kept_corpus), fresh = recounted(postgres_dsn, "team")
        assert kept["wool"] == 2 and kept_corpus[0] == 4  # a.md has two passages, both with "wool"
        assert (kept, kept_corpus) == fresh
        (folder / "a.md").write_text("# Wool\n\nThe wool tariff fell.\n")  # an edited file
        (folder / "c.txt").unlink()
        (folder / "d.txt").write_text("Retaliation against the tariff.\n")
        kb.add([folder], prune=True)  # edited, pruned, added
        (kept, kept_corpus), fresh = recounted(postgres_dsn, "team")
        assert "canal" not in kept and "silver" not in kept and kept["tariff"] == 2
        assert (kept, kept_corpus) == fresh
        kb.remove(["b.txt"])
        (kept, kept_corpus), fresh = recounted(postgres_dsn, "team")
        assert "molass" not in kept and kept_corpus[0] == 2
        assert (kept, kept_corpus) == fresh


def test_a_kb_whose_analyzer_changed_is_re_analysed_by_its_next_add(
    tmp_path: Path, postgres_dsn: str
) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "a.txt").write_text("The tariff of abominations.\n")
    (folder / "b.txt").write_text("Reciprocity treaties.\n")
    with names.create_kb("team", engine="postgres", dsn=postgres_dsn) as kb:
        kb.add([folder])
    # What an older deepdraft's analyzer left: other terms (here, none) under another version.
    with psycopg.connect(postgres_dsn) as conn:
        conn.execute(f'SET search_path TO "{schema_of(conn, "team")}", public')
        conn.execute("UPDATE chunks SET terms = 'old', tsv = 'old:1'::tsvector")
        conn.execute("UPDATE meta SET value = 'older-analyzer' WHERE key = 'analyzer'")
        statistics.rebuild(conn)
    with names.open_kb("team") as kb:
        assert kb.search("abominations", 3, mode="bm25") == []
        result = kb.add([folder])  # nothing new to read: the add still re-analyses
        assert result.changed and result.documents_unchanged == 2
        assert [hit.source.doc_id for hit in kb.search("abominations", 3, mode="bm25")] == ["a.txt"]
        assert kb.info().analyzer != "older-analyzer"
    (kept, kept_corpus), fresh = recounted(postgres_dsn, "team")
    assert "old" not in kept and (kept, kept_corpus) == fresh


def test_a_kb_made_before_the_statistics_gets_them_on_its_next_add(tmp_path: Path, postgres_dsn: str) -> None:
    corpus = write_corpus(tmp_path / "corpus", passages=40)
    with names.create_kb("team", engine="postgres", dsn=postgres_dsn) as kb:
        kb.add([corpus])
    with psycopg.connect(postgres_dsn) as conn:  # the schema as the first Postgres engine made it
        conn.execute(f'SET search_path TO "{schema_of(conn, "team")}", public')
        conn.execute("DROP TABLE term_stats, corpus_stats")
        conn.execute("ALTER TABLE chunks DROP COLUMN length")
        conn.execute("DELETE FROM meta WHERE key = %s", (statistics.META_KEY,))
    with names.open_kb("team") as kb:
        assert kb.search("molasses tariff", 3, mode="bm25")  # ts_rank until the statistics exist
        kb.add([corpus])
        assert kb.search("molasses tariff", 3, mode="bm25")
    (kept, kept_corpus), fresh = recounted(postgres_dsn, "team")
    assert kept_corpus[0] == 40 and (kept, kept_corpus) == fresh
