"""The BM25 analyzer: English stemming and folding, Chinese words by jieba, kana and Hangul bigrams."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from deepdraft.retrieval.index.analysis import ANALYZER_VERSION, MAX_TERM_CHARS, analyze
from deepdraft.retrieval.kb.store import KnowledgeBase


def test_latin_text_is_lowercased_folded_stemmed_and_stopped() -> None:
    assert analyze("The Presidents are protecting CAFÉS and Tariffs!") == [
        "presid",
        "protect",
        "cafe",
        "tariff",
    ]
    assert analyze("naïve Ångström") == analyze("naive angstrom")
    assert analyze("x" * (MAX_TERM_CHARS + 1) + " debt") == ["debt"]
    assert analyze("") == [] == analyze("the of and ...")


def test_chinese_is_cut_into_words_with_the_words_inside_compounds() -> None:
    terms = analyze("中华人民共和国国务院总理")
    assert {"中华人民共和国国务院", "共和国", "国务院", "人民", "总理"} <= set(terms)
    assert analyze("关税政策") == ["关税", "政策"]
    assert "的" not in analyze("政府的债务")  # function words are dropped like English stopwords


def test_unknown_chinese_words_split_the_same_way_in_every_context() -> None:
    # No HMM guessing: a name jieba does not know gives the same terms alone and inside a sentence.
    alone = analyze("瓦德尔")
    assert alone and set(alone) <= set(analyze("总统瓦德尔发表了讲话"))


def test_kana_and_hangul_become_characters_and_bigrams() -> None:
    assert analyze("ひらがな") == ["ひ", "ら", "が", "な", "ひら", "らが", "がな"]
    assert analyze("한국어") == ["한", "국", "어", "한국", "국어"]


def test_mixed_text_keeps_every_script() -> None:
    terms = analyze("Tariffs 关税 カタカナ 2021")
    assert {"tariff", "关税", "カタ", "2021"} <= set(terms)


def test_the_version_names_the_chinese_segmenter() -> None:
    assert "jieba" in ANALYZER_VERSION


def test_chinese_queries_find_parts_of_compounds(tmp_path: Path) -> None:
    records = [
        {"id": "a", "title": "国务院", "contents": "中华人民共和国国务院发布了新的关税政策。"},
        {"id": "b", "title": "移民", "contents": "新移民带来了劳动力，国会辩论移民政策。"},
        {"id": "c", "title": "Debt", "contents": "The national debt grew during the war."},
    ]
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    with KnowledgeBase.create(tmp_path / "kb") as kb:
        kb.add([corpus])
        assert [hit.source.doc_id for hit in kb.search("国务院", 3)] == ["a"]
        assert kb.search("关税", 3)[0].source.doc_id == "a"
        assert [hit.source.doc_id for hit in kb.search("劳动力", 3)] == ["b"]
        assert [hit.source.doc_id for hit in kb.search("national debt", 3)] == ["c"]
        assert kb.info().analyzer == ANALYZER_VERSION


def test_jieba_loads_lazily_quietly_and_once_across_threads() -> None:
    script = """
import sys, threading
from deepdraft.retrieval.index.analysis import analyze
analyze("English only, with café")
print("jieba" in sys.modules)
results = []
threads = [threading.Thread(target=lambda: results.append(analyze("国债利息和关税"))) for _ in range(4)]
for thread in threads: thread.start()
for thread in threads: thread.join()
print(len({tuple(r) for r in results}), results[0])
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["False", "1 ['国债', '利息', '关税']"]
    assert done.stderr == ""  # jieba's "Building prefix dict" lines are silenced
