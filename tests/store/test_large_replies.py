"""A long reply costs the journal its own size once: the step and the reply cache share one copy,
and a refused reply keeps only its beginning. Sizes are measured on the SQLite file itself."""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from deepdraft.llm.scripted import FunctionLLM
from deepdraft.ports import ChatRequest
from deepdraft.run import runner
from deepdraft.settings import Settings
from deepdraft.store import journal as journal_mod
from deepdraft.store.journal import REFUSED_REPLY_KEEP, Journal, StepRecord
from tests.support.request_kinds import recognise
from tests.support.scenario import SOTU_LIKE, ScenarioModel, WordOverlapRetriever

QUESTION = "How did presidents argue about tariffs?"
REPLY_BYTES = 12_000_000  # big enough to dwarf everything else a run writes
SETTINGS = Settings.model_validate({"output": {"verify": False, "synthesis": False}})


def padding() -> str:
    # Random hex: nothing in SQLite or the checkpoint compression can shrink it.
    return os.urandom(REPLY_BYTES // 2).hex()


def run_with(first_search: Callable[[str], str]) -> tuple[int, int]:
    """A whole run whose first search reply is `first_search(normal reply)`: (bytes in use, file size)."""
    model = ScenarioModel(expansions=0)
    seen: list[str] = []

    def respond(request: ChatRequest) -> str:
        text = model(request)
        if recognise(request).kind == "search" and not seen:
            seen.append("x")
            return first_search(text)
        return text

    runner.start(QUESTION, SETTINGS, llm=FunctionLLM(respond), retriever=WordOverlapRetriever(SOTU_LIKE))
    return journal_size()


def journal_size() -> tuple[int, int]:
    path = Path(os.environ["DEEPDRAFT_HOME"]) / "journal.sqlite"
    with sqlite3.connect(path) as db:
        pages, free, page = (
            db.execute(f"PRAGMA {name}").fetchone()[0]
            for name in ("page_count", "freelist_count", "page_size")
        )
    return (pages - free) * page, path.stat().st_size


def fresh_workspace(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, name: str) -> None:
    monkeypatch.setenv("DEEPDRAFT_HOME", str(tmp_path / name))


def test_a_long_valid_reply_is_stored_once(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    used_plain, file_plain = run_with(lambda text: text)
    fresh_workspace(monkeypatch, tmp_path, "long")
    # A valid search whose thought is 12 MB long: the step and the cache both hold this reply.
    used, size = run_with(lambda text: text.replace("<thought>", "<thought>" + padding(), 1))
    # Before: 2.0 times the reply (the step's copy and the cache's).
    assert used - used_plain < 1.1 * REPLY_BYTES
    assert size - file_plain < 1.1 * REPLY_BYTES
    with Journal(Path(os.environ["DEEPDRAFT_HOME"]) / "journal.sqlite") as journal:
        run = journal.list_runs()[0]
        first = journal.steps(run.id)[0]
    assert len(first.reply) > REPLY_BYTES and first.valid  # read back whole


def test_a_long_refused_reply_is_cut_and_not_kept_whole(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    used_plain, file_plain = run_with(lambda text: text)
    fresh_workspace(monkeypatch, tmp_path, "refused")
    used, size = run_with(lambda text: padding())  # no action at all: refused, asked again
    with Journal(Path(os.environ["DEEPDRAFT_HOME"]) / "journal.sqlite") as journal:
        run = journal.list_runs()[0]
        first = journal.steps(run.id)[0]
    assert not first.valid
    assert len(first.reply) < REFUSED_REPLY_KEEP + 100 and first.reply.endswith(
        "refused reply were not kept]"
    )
    assert used - used_plain < 1_000_000  # before: twice the whole reply
    # The file grew while the cache held the reply for a resume; those pages are free for reuse now.
    assert size - file_plain < 1.1 * REPLY_BYTES


def test_journals_written_before_the_texts_table_are_read_as_before(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "old.sqlite"
    long_reply = "word " * 5000
    # A journal as deepdraft wrote it before 0003_texts: the reply inline in the step and the cache.
    monkeypatch.setattr(journal_mod, "MIGRATIONS", journal_mod.MIGRATIONS[:2])
    with Journal(path) as old:
        old.create_run("r1", "q", "warp", {})
    monkeypatch.undo()
    with sqlite3.connect(path) as db:
        db.execute(
            "INSERT INTO steps (run_id, step, action, prompt, reply, parsed, valid, reason, prompt_tokens,"
            " completion_tokens, started_at, finished_at, cached, target)"
            " VALUES ('r1', 1, 'search', 'p', ?, NULL, 1, NULL, 1, 1, 0, 0, 0, 'outline')",
            (long_reply,),
        )
        db.execute(
            "INSERT INTO llm_cache (key, value, created_at) VALUES ('k', ?, 0)",
            (json.dumps({"v": 1, "text": long_reply}),),
        )
    with Journal(path) as journal:
        assert journal.steps("r1")[0].reply == long_reply
        assert journal.cache_get("k") == {"v": 1, "text": long_reply}
        journal.record_step("r1", step(long_reply, number=2), {"question": "q"})  # now stored by hash
        assert [s.reply for s in journal.steps("r1")] == [long_reply, long_reply]


def step(reply: str, number: int = 1) -> StepRecord:
    values: dict[str, Any] = dict(
        step=number, action="search", target="outline", prompt="p", reply=reply, parsed=None,
        valid=True, reason=None, prompt_tokens=1, completion_tokens=1, started_at=0.0, finished_at=0.0,
        cached=False,
    )  # fmt: skip
    return StepRecord(**values)
