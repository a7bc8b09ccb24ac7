"""The one pool for concurrent runs: bounded, ordered, and one budget that every run spends from."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from deepdraft.errors import UserError
from deepdraft.llm.scripted import FunctionLLM
from deepdraft.run.manager import RunManager
from deepdraft.run.pool import RunPool, default_concurrency
from deepdraft.run.runs import tokens_spent
from deepdraft.settings import Settings
from deepdraft.train.collect import collect, collection_settings
from deepdraft.train.queries import load_queries
from tests.train.support import DATA, ForcedTeacher, write_kb


def test_at_most_size_runs_are_driven_at_once_and_results_keep_their_order() -> None:
    changed = threading.Condition()
    release = threading.Event()
    running: list[int] = []
    most = [0]

    def work(item: int) -> int:
        with changed:
            running.append(item)
            most[0] = max(most[0], len(running))
            changed.notify_all()
        release.wait()
        with changed:
            running.remove(item)
        return item * 10

    with RunPool(2) as pool:
        results: list[list[int]] = []
        driver = threading.Thread(target=lambda: results.append(pool.run_all(work, range(5))))
        driver.start()
        with changed:
            assert changed.wait_for(lambda: len(running) == 2, timeout=30)
            assert sorted(running) == [0, 1]  # the other three wait in the queue
        release.set()
        driver.join(timeout=30)
    assert results == [[0, 10, 20, 30, 40]] and most[0] == 2


def test_a_bug_in_one_item_is_raised_after_the_others_are_done() -> None:
    done: list[int] = []

    def work(item: int) -> None:
        if item == 0:
            raise RuntimeError("a bug")
        done.append(item)

    with RunPool(2) as pool, pytest.raises(RuntimeError, match="a bug"):
        pool.run_all(work, range(4))
    assert sorted(done) == [1, 2, 3]


def test_the_pool_budget_comes_from_the_settings_and_a_server_shares_only_the_rate() -> None:
    settings = Settings.model_validate(
        {"llm": {"base_url": "http://127.0.0.1:9/v1", "max_tokens_total": 1000, "requests_per_minute": 30}}
    )
    assert default_concurrency(settings) == 4 and default_concurrency(Settings()) == 1
    pool = RunPool.for_settings(settings, spent=400)
    assert pool.size == 4 and pool.budget is not None
    assert (pool.budget.max_tokens_total, pool.budget.requests_per_minute, pool.budget.tokens_used) == (
        1000,
        30,
        400,
    )
    assert RunPool.for_settings(Settings()).budget is None  # no limits: nothing to wait on
    manager = RunManager(settings, workers=2)
    try:
        budget = manager._pool.budget
        assert budget is not None and budget.max_tokens_total is None and budget.requests_per_minute == 30
    finally:
        manager.close()
    with pytest.raises(UserError, match="at least 1"):
        RunPool(0)


def test_a_token_cap_holds_for_a_whole_collection_not_for_each_run(tmp_path: Path) -> None:
    queries = load_queries(DATA / "criteria.jsonl")
    kb = str(write_kb(tmp_path / "kb"))
    base = collection_settings(Settings(), 0)

    single = FunctionLLM(ForcedTeacher(expansions=0, topic="history"))
    [alone] = collect(queries[:1], base, tmp_path / "one", llm=single, kb=kb, workers=1)
    per_run = tokens_spent(alone.run_id)
    assert alone.status == "finished" and per_run > 0

    capped = base.model_copy(
        update={"llm": base.llm.model_copy(update={"max_tokens_total": per_run + per_run // 2})}
    )
    teacher = FunctionLLM(ForcedTeacher(expansions=0, topic="history"))
    collect(queries, capped, tmp_path / "all", llm=teacher, kb=kb, workers=1)
    # Three runs with a cap of one and a half: the calls stop within the second run.
    assert len(single.requests) < len(teacher.requests) < 2 * len(single.requests)


def test_the_cluster_budget_books_rate_slots_without_sleeping_and_refuses_once_spent() -> None:
    from deepdraft.run.cluster import BudgetService  # the class the budget actor runs (no Ray needed)

    service = BudgetService(max_tokens_total=100, requests_per_minute=2, spent=40)
    waits = [service.admit() for _ in range(3)]
    assert [refusal for refusal, _ in waits] == ["", "", ""]
    assert waits[0][1] == waits[1][1] == 0 and 59 < waits[2][1] <= 60  # the third waits on its own side
    service.spend(60)
    refusal, wait = service.admit()
    assert service.exhausted() and "100" in refusal and wait == 0
