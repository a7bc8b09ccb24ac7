"""Tests of the run journal: lifecycle, checkpoints, events, cache, migrations, several processes."""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
import zlib
from pathlib import Path
from typing import Any

import pytest

import deepdraft
from deepdraft.errors import RunNotFound, StoreError
from deepdraft.events import StateChanges
from deepdraft.store import journal as journal_mod
from deepdraft.store.journal import AskRecord, Journal, Migration, StepRecord


def _step(n: int, **overrides: Any) -> StepRecord:
    fields: dict[str, Any] = {
        "step": n,
        "action": "search",
        "prompt": f"prompt {n}",
        "reply": f"reply {n}",
        "parsed": {"query": f"q{n}"},
        "valid": True,
        "reason": None,
        "prompt_tokens": 10 * n,
        "completion_tokens": n,
        "started_at": 1000.0 + n,
        "finished_at": 1000.5 + n,
        "cached": False,
    }
    fields.update(overrides)
    return StepRecord(**fields)


@pytest.fixture
def journal(tmp_path: Path) -> Any:
    with Journal(tmp_path / "runs" / "journal.sqlite") as j:
        yield j


# -- opening ---------------------------------------------------------------------------------------


def test_open_creates_parent_dirs_and_uses_wal(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "journal.sqlite"
    with Journal(path) as j:
        assert j.list_runs() == []
    assert path.exists()
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        names = [r[0] for r in conn.execute("SELECT name FROM migrations")]
    finally:
        conn.close()
    assert names == [m.name for m in journal_mod.MIGRATIONS]


def test_reopening_applies_nothing_twice(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    def extra(conn: sqlite3.Connection) -> None:
        calls.append("extra")
        conn.execute("CREATE TABLE extra_table (x INTEGER)")

    migrations = (*journal_mod.MIGRATIONS, Migration("9000_test_extra", extra))
    monkeypatch.setattr(journal_mod, "MIGRATIONS", migrations)
    path = tmp_path / "j.sqlite"
    with Journal(path) as j:
        j.create_run("run-1", "q", "warp", {})
    with Journal(path) as j:
        assert j.get_run("run-1").question == "q"
    with Journal(path):
        pass
    assert calls == ["extra"]
    conn = sqlite3.connect(path)
    try:
        rows = [r[0] for r in conn.execute("SELECT name FROM migrations ORDER BY rowid")]
    finally:
        conn.close()
    assert rows == [m.name for m in migrations]


def test_new_migration_is_applied_to_an_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "j.sqlite"
    with Journal(path) as j:
        j.create_run("run-1", "q", "warp", {})
    monkeypatch.setattr(
        journal_mod,
        "MIGRATIONS",
        (
            *journal_mod.MIGRATIONS,
            Migration("9001_add_table", "CREATE TABLE later (x); CREATE INDEX li ON later (x)"),
        ),
    )
    with Journal(path) as j:
        assert j.get_run("run-1").id == "run-1"
    conn = sqlite3.connect(path)
    try:
        assert (
            conn.execute("SELECT count(*) FROM sqlite_master WHERE name IN ('later', 'li')").fetchone()[0]
            == 2
        )
    finally:
        conn.close()


def test_failing_migration_leaves_no_trace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "j.sqlite"
    with Journal(path):
        pass

    def broken(conn: sqlite3.Connection) -> None:
        conn.execute("CREATE TABLE half_done (x)")
        conn.execute("THIS IS NOT SQL")

    monkeypatch.setattr(
        journal_mod, "MIGRATIONS", (*journal_mod.MIGRATIONS, Migration("9002_broken", broken))
    )
    with pytest.raises(StoreError):
        Journal(path)
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("SELECT count(*) FROM sqlite_master WHERE name = 'half_done'").fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM migrations WHERE name = '9002_broken'").fetchone()[0] == 0
    finally:
        conn.close()


def test_file_from_newer_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    with Journal(path):
        pass
    conn = sqlite3.connect(path)
    conn.execute("INSERT INTO migrations (name, applied_at) VALUES ('9999_from_the_future', 0)")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match=r"newer version of deepdraft.*9999_from_the_future"):
        Journal(path)


def test_non_sqlite_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "notes.sqlite"
    path.write_text("# just some notes, certainly not a database\n" * 50)
    with pytest.raises(StoreError, match="not an SQLite database"):
        Journal(path)
    assert path.read_text().startswith("# just some notes")  # untouched


def test_foreign_sqlite_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE something_else (x)")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="not a deepdraft journal"):
        Journal(path)


# -- runs ------------------------------------------------------------------------------------------


def test_run_lifecycle(journal: Journal) -> None:
    settings = {"preset": "quick", "langue": "français", "nested": {"b": 2, "a": 1}}
    created = journal.create_run("20250101-abcdef", "什么是关税?", "warp", settings)
    assert created.status == "created"
    assert created.steps == 0
    assert created.error is None and created.report_path is None
    assert journal.get_run("20250101-abcdef") == created

    time.sleep(0.01)
    journal.update_run(created.id, status="running")
    running = journal.get_run(created.id)
    assert running.status == "running"
    assert running.updated_at > created.updated_at
    assert running.settings == settings

    journal.update_run(created.id, status="failed", error="LLM unreachable")
    journal.update_run(created.id, report_path="/tmp/report.md")  # leaves status and error alone
    final = journal.get_run(created.id)
    assert (final.status, final.error, final.report_path) == ("failed", "LLM unreachable", "/tmp/report.md")
    assert final.question == "什么是关税?"


def test_duplicate_run_id_rejected(journal: Journal) -> None:
    journal.create_run("dup-1", "q", "warp", {})
    with pytest.raises(StoreError, match="already exists"):
        journal.create_run("dup-1", "q2", "warp", {})


def test_list_runs_newest_first_with_limit(journal: Journal) -> None:
    for i in range(5):
        journal.create_run(f"run-{i}", f"question {i}", "warp", {"i": i})
    assert [r.id for r in journal.list_runs()] == ["run-4", "run-3", "run-2", "run-1", "run-0"]
    assert [r.id for r in journal.list_runs(limit=2)] == ["run-4", "run-3"]


def test_unknown_run(journal: Journal) -> None:
    with pytest.raises(RunNotFound, match=r"no run with id nope \(see `deepdraft runs`\)"):
        journal.get_run("nope")
    with pytest.raises(RunNotFound):
        journal.update_run("nope", status="running")
    with pytest.raises(RunNotFound):
        journal.record_step("nope", _step(1), {})
    with pytest.raises(RunNotFound):
        journal.append_event("nope", "started", {})
    with pytest.raises(RunNotFound):
        journal.steps("nope")
    with pytest.raises(RunNotFound):
        journal.latest_checkpoint("nope")
    with pytest.raises(RunNotFound):
        journal.events("nope")


def test_prefixes(journal: Journal) -> None:
    journal.create_run("abcd1234", "q1", "warp", {})
    journal.create_run("abcd5678", "q2", "warp", {})
    journal.create_run("zz_x%yy", "q3", "warp", {})
    assert journal.get_run("abcd1").id == "abcd1234"
    assert journal.get_run("abcd5678").id == "abcd5678"
    with pytest.raises(RunNotFound, match=r"ambiguous.*abcd1234.*abcd5678|ambiguous.*abcd5678.*abcd1234"):
        journal.get_run("abcd")
    with pytest.raises(RunNotFound, match="no run with id abc "):
        journal.get_run("abc")  # shorter than 4 characters: only an exact id
    with pytest.raises(RunNotFound, match="no run with id ABCD1"):
        journal.get_run("ABCD1")  # prefixes are case-sensitive
    assert journal.get_run("zz_x").id == "zz_x%yy"
    with pytest.raises(RunNotFound):
        journal.get_run("zz%x")  # % and _ are not wildcards


# -- steps and checkpoints -------------------------------------------------------------------------


def test_steps_and_checkpoints(journal: Journal) -> None:
    journal.create_run("r1", "q", "warp", {})
    assert journal.latest_checkpoint("r1") is None
    assert journal.steps("r1") == []
    records = [
        _step(1),
        _step(2, parsed=None, valid=False, reason="no <action> tag", cached=True),
        _step(3, action="write", reply="写作 \\cite{a}"),
    ]
    for record in records:
        journal.record_step("r1", record, {"step": record.step, "outline": ["intro"] * record.step})
    assert journal.steps("r1") == records
    assert journal.get_run("r1").steps == 3
    assert journal.latest_checkpoint("r1") == (3, {"step": 3, "outline": ["intro"] * 3})
    assert journal.checkpoint("r1", 2) == {"step": 2, "outline": ["intro", "intro"]}
    with pytest.raises(StoreError, match="no checkpoint for step 7"):
        journal.checkpoint("r1", 7)


def test_a_step_the_user_directed_reads_back_as_such(journal: Journal) -> None:
    journal.create_run("r1", "q", "warp", {})
    journal.record_step("r1", _step(1), {"step": 1})
    journal.record_step("r1", _step(2, action="extend-plan", directed=True), {"step": 2})
    assert [step.directed for step in journal.steps("r1")] == [False, True]


def test_state_key_order_survives(journal: Journal) -> None:
    journal.create_run("r1", "q", "warp", {})
    state = {"sections": {"zeta": 1, "alpha": 2, "mid": 3}}
    journal.record_step("r1", _step(1), state)
    assert list(journal.checkpoint("r1", 1)["sections"]) == ["zeta", "alpha", "mid"]


def test_duplicate_step_rejected(journal: Journal) -> None:
    journal.create_run("r1", "q", "warp", {})
    journal.record_step("r1", _step(1), {"v": "first"})
    with pytest.raises(StoreError, match="step 1 is already recorded"):
        journal.record_step("r1", _step(1, reply="redo"), {"v": "second"})
    assert journal.checkpoint("r1", 1) == {"v": "first"}
    assert [s.reply for s in journal.steps("r1")] == ["reply 1"]
    assert journal.get_run("r1").steps == 1


def test_unserialisable_state_leaves_no_step(journal: Journal) -> None:
    journal.create_run("r1", "q", "warp", {})
    with pytest.raises(StoreError, match="not JSON-serialisable"):
        journal.record_step("r1", _step(1), {"bad": object()})
    assert journal.steps("r1") == []
    assert journal.latest_checkpoint("r1") is None
    assert journal.get_run("r1").steps == 0


def test_step_and_checkpoint_are_atomic(journal: Journal) -> None:
    """If the checkpoint insert fails inside the transaction, the step row is rolled back too."""
    journal.create_run("r1", "q", "warp", {})
    journal.record_step("r1", _step(1), {"ok": True})
    side = sqlite3.connect(journal.path)
    side.execute(
        "CREATE TRIGGER fail_checkpoint BEFORE INSERT ON checkpoints "
        "BEGIN SELECT RAISE(ABORT, 'simulated failure'); END"
    )
    side.commit()
    side.close()
    with pytest.raises(StoreError, match="simulated failure"):
        journal.record_step("r1", _step(2), {"ok": False})
    assert [s.step for s in journal.steps("r1")] == [1]
    assert journal.latest_checkpoint("r1") == (1, {"ok": True})
    assert journal.get_run("r1").steps == 1


def test_big_state_round_trip(journal: Journal) -> None:
    journal.create_run("r1", "q", "warp", {})
    state: dict[str, Any] = {
        "draft": "Lorem ipsum dolor sit amet, 关税与贸易 — " * 12_000,  # ~500 KB of text
        "evidence": [{"id": f"e{i}", "text": f"passage {i} " * 20, "score": i / 7} for i in range(2000)],
        "nested": {"deep": [[{"x": None, "y": True, "z": 1.5e-9}]]},
    }
    journal.record_step("r1", _step(1), state)
    assert journal.checkpoint("r1", 1) == state
    conn = sqlite3.connect(journal.path)
    try:
        size = conn.execute("SELECT length(state) FROM checkpoints").fetchone()[0]
    finally:
        conn.close()
    assert size < len(state["draft"]) // 10  # it is compressed


def test_a_checkpoint_of_changes_is_rebuilt_on_its_base(journal: Journal) -> None:
    """A step may store only what changed since the checkpoint before it (`StateChanges`)."""
    journal.create_run("r1", "q", "warp", {})
    base = {"step": 1, "zeta": {"a/b": 1, "~x": 2}, "checks": [{"v": "a"}, {"v": "b"}], "tail": None}
    journal.record_step("r1", _step(1), base)
    journal.record_step("r1", _step(2), StateChanges(1, {"/step": 2, "/checks/1": {"v": "B"}}))
    journal.record_step("r1", _step(3), StateChanges(2, {"/zeta/a~1b": 10, "/zeta/~0x": 20, "/step": 3}))
    third = {"step": 3, "zeta": {"a/b": 10, "~x": 20}, "checks": [{"v": "a"}, {"v": "B"}], "tail": None}
    assert journal.latest_checkpoint("r1") == (3, third)
    assert list(journal.checkpoint("r1", 3)) == ["step", "zeta", "checks", "tail"]  # key order kept
    assert journal.checkpoint("r1", 2) == {**base, "step": 2, "checks": [{"v": "a"}, {"v": "B"}]}
    assert journal.checkpoint("r1", 1) == base
    journal.record_step("r1", _step(4), {"step": 4})  # a whole checkpoint again
    journal.record_step("r1", _step(5), StateChanges(4, {"/step": 5}))
    assert journal.latest_checkpoint("r1") == (5, {"step": 5})


def test_changes_must_follow_the_latest_checkpoint(journal: Journal) -> None:
    journal.create_run("r1", "q", "warp", {})
    with pytest.raises(StoreError, match="changes since step 0, but the latest checkpoint is of step None"):
        journal.record_step("r1", _step(1), StateChanges(0, {"/step": 1}))
    journal.record_step("r1", _step(1), {"step": 1})
    journal.record_step("r1", _step(2), {"step": 2})
    with pytest.raises(StoreError, match="changes since step 1, but the latest checkpoint is of step 2"):
        journal.record_step("r1", _step(3), StateChanges(1, {"/step": 3}))
    assert journal.latest_checkpoint("r1") == (2, {"step": 2}) and journal.get_run("r1").steps == 2


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        (
            {"since": 1, "set": {"/missing/x": 1}},
            "the checkpoint changes '/missing/x', which the state it builds on lacks",
        ),
        (
            {"since": 1, "set": {"/list/5": 1}},
            "the checkpoint changes '/list/5', which the state it builds on lacks",
        ),
        ({"since": 2, "set": {}}, "the checkpoint's changes are malformed"),
        ({"set": {}}, "the checkpoint's changes are malformed"),
    ],
)
def test_changes_that_do_not_fit_their_base_are_reported(
    journal: Journal, changes: dict[str, Any], problem: str
) -> None:
    journal.create_run("r1", "q", "warp", {})
    journal.record_step("r1", _step(1), {"list": [1, 2]})
    journal.record_step("r1", _step(2), StateChanges(1, {"/list/0": 0}))
    side = sqlite3.connect(journal.path)
    side.execute(
        "UPDATE checkpoints SET state = ? WHERE step = 2",
        (zlib.compress(json.dumps(changes).encode("utf-8")),),
    )
    side.commit()
    side.close()
    with pytest.raises(StoreError, match=re.escape(f"run r1, step 2: {problem}")):
        journal.latest_checkpoint("r1")


# -- events ----------------------------------------------------------------------------------------


def test_events_ordering_and_after(journal: Journal) -> None:
    journal.create_run("r1", "q", "warp", {})
    journal.create_run("r2", "q", "warp", {})
    seqs = [journal.append_event("r1", "action_started", {"n": i, "text": "é"}) for i in range(5)]
    assert seqs == [1, 2, 3, 4, 5]
    assert journal.append_event("r2", "run_started", {}) == 1  # numbering is per run
    events = journal.events("r1")
    assert [e.seq for e in events] == [1, 2, 3, 4, 5]
    assert [e.payload["n"] for e in events] == [0, 1, 2, 3, 4]
    assert all(e.run_id == "r1" and e.kind == "action_started" for e in events)
    assert [e.seq for e in journal.events("r1", after=3)] == [4, 5]
    assert journal.events("r1", after=5) == []
    assert [e.kind for e in journal.events("r2")] == ["run_started"]


# -- cache -----------------------------------------------------------------------------------------


def test_cache_round_trip(journal: Journal) -> None:
    assert journal.cache_get("k") is None
    journal.cache_put("k", {"text": "héllo", "usage": {"prompt_tokens": 3}})
    assert journal.cache_get("k") == {"text": "héllo", "usage": {"prompt_tokens": 3}}
    journal.cache_put("k", {"text": "replaced"})
    assert journal.cache_get("k") == {"text": "replaced"}


def test_cache_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    with Journal(path) as j:
        j.cache_put("k", {"v": 1})
    with Journal(path) as j:
        assert j.cache_get("k") == {"v": 1}


def test_closed_journal_raises_store_error(tmp_path: Path) -> None:
    j = Journal(tmp_path / "j.sqlite")
    j.close()
    with pytest.raises(StoreError):
        j.list_runs()


# -- several processes -----------------------------------------------------------------------------

_WORKER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from deepdraft.store.journal import Journal, StepRecord

    path, name, count, ready, go = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
    with Journal(path) as j:
        Path(ready).touch()
        while not Path(go).exists():  # start together, so the writes really interleave
            time.sleep(0.002)
        for i in range(1, count + 1):
            if i == count // 2 + 1:
                # Halfway, wait until the other worker has written too: however the scheduler runs the
                # two, neither can write all its ticks before the other starts (so >= 2 switches).
                deadline = time.monotonic() + 60
                while not any(e.payload["worker"] != name for e in j.events("shared")):
                    if time.monotonic() > deadline:
                        sys.exit("the other worker never wrote")
                    time.sleep(0.002)
            rec = StepRecord(i, "write", "p" * 200, "r" * 200, {"i": i}, True, None, 1, 1, 0.0, 0.0, False)
            j.record_step(name, rec, {"worker": name, "i": i, "draft": "x" * 2000})
            j.append_event(name, "step", {"i": i})
            j.append_event("shared", "tick", {"worker": name, "i": i})
            j.cache_put(f"{name}-{i}", {"i": i})
    """
)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    src = str(Path(deepdraft.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _wait_for(paths: list[Path], procs: list[subprocess.Popen[bytes]], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not all(p.exists() for p in paths):
        for proc in procs:
            if proc.poll() is not None:
                _, err = proc.communicate()
                pytest.fail(f"worker exited early ({proc.returncode}): {err.decode()}")
        if time.monotonic() > deadline:
            pytest.fail("workers did not start in time")
        time.sleep(0.01)


def test_two_processes_write_at_once(tmp_path: Path) -> None:
    path = tmp_path / "shared.sqlite"
    count = 1000
    with Journal(path) as j:
        for name in ("alpha", "beta", "shared"):
            j.create_run(name, "q", "warp", {})
    go = tmp_path / "go"
    ready = [tmp_path / "ready-alpha", tmp_path / "ready-beta"]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, str(path), name, str(count), str(flag), str(go)],
            env=_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for name, flag in zip(("alpha", "beta"), ready, strict=True)
    ]
    try:
        _wait_for(ready, procs)
        go.touch()
        # Read while they write: a reader must never see a step without its checkpoint.
        with Journal(path) as reader:
            while any(p.poll() is None for p in procs):
                for name in ("alpha", "beta"):
                    latest = reader.latest_checkpoint(name)
                    if latest is not None:
                        assert reader.get_run(name).steps >= latest[0]
                time.sleep(0.005)
        results = [p.communicate(timeout=30) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for proc, (_, err) in zip(procs, results, strict=True):
        assert proc.returncode == 0, err.decode()
        assert b"locked" not in err

    with Journal(path) as j:
        for name in ("alpha", "beta"):
            assert [s.step for s in j.steps(name)] == list(range(1, count + 1))
            assert j.get_run(name).steps == count
            assert j.latest_checkpoint(name) == (count, {"worker": name, "i": count, "draft": "x" * 2000})
            assert [e.payload["i"] for e in j.events(name)] == list(range(1, count + 1))
            assert j.cache_get(f"{name}-{count}") == {"i": count}
        shared = j.events("shared")
        assert [e.seq for e in shared] == list(range(1, 2 * count + 1))
        for name in ("alpha", "beta"):
            mine = [e.payload["i"] for e in shared if e.payload["worker"] == name]
            assert mine == list(range(1, count + 1))
        # The writes really interleaved (the halfway rendezvous makes at least two switches certain;
        # dozens in practice), so each process wrote while the other held the file open.
        workers = [e.payload["worker"] for e in shared]
        assert sum(a != b for a, b in itertools.pairwise(workers)) >= 2


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_sigkill_mid_run_leaves_a_consistent_journal(tmp_path: Path) -> None:
    path = tmp_path / "killed.sqlite"
    with Journal(path) as j:
        j.create_run("victim", "q", "warp", {})
        j.create_run("shared", "q", "warp", {})
    go, ready = tmp_path / "go", tmp_path / "ready"
    go.touch()
    proc = subprocess.Popen(
        [sys.executable, "-c", _WORKER, str(path), "victim", "100000", str(ready), str(go)],
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        _wait_for([ready], [proc])
        with Journal(path) as watcher:
            deadline = time.monotonic() + 10
            while watcher.get_run("victim").steps < 30 and time.monotonic() < deadline:
                assert proc.poll() is None, proc.communicate()[1].decode()
                time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()

    with Journal(path) as j:
        steps = [s.step for s in j.steps("victim")]
        assert len(steps) >= 30
        assert steps == list(range(1, len(steps) + 1))
        assert j.get_run("victim").steps == len(steps)
        latest = j.latest_checkpoint("victim")
        assert latest is not None and latest[0] == steps[-1]
        assert latest[1]["i"] == steps[-1]
        # A resumed run continues after the checkpoint; redoing the last step is refused.
        with pytest.raises(StoreError, match="already recorded"):
            j.record_step("victim", _step(steps[-1]), {})
        j.record_step("victim", _step(steps[-1] + 1), {"resumed": True})


_OPENER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from deepdraft.store.journal import Journal

    path, name, ready, go = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4])
    ready.touch()
    while not go.exists():
        time.sleep(0.001)
    with Journal(path) as j:
        j.cache_put(name, {"opened": True})
    """
)


def test_processes_creating_the_same_new_file_at_once(tmp_path: Path) -> None:
    """Switching a new file to WAL is not covered by SQLite's busy handler; the journal retries."""
    for attempt in range(3):
        path = tmp_path / f"new-{attempt}.sqlite"
        go = tmp_path / f"go-{attempt}"
        ready = [tmp_path / f"ready-{attempt}-{i}" for i in range(4)]
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", _OPENER, str(path), f"p{i}", str(flag), str(go)],
                env=_env(),
                stderr=subprocess.PIPE,
            )
            for i, flag in enumerate(ready)
        ]
        try:
            _wait_for(ready, procs)
            go.touch()
            errors = [p.communicate(timeout=30)[1] for p in procs]
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
        for proc, err in zip(procs, errors, strict=True):
            assert proc.returncode == 0, err.decode()
        with Journal(path) as j:
            assert all(j.cache_get(f"p{i}") == {"opened": True} for i in range(4))


def test_one_journal_shared_by_threads(journal: Journal) -> None:
    journal.create_run("r1", "q", "warp", {})
    failures: list[BaseException] = []

    def work(worker: int) -> None:
        try:
            for i in range(50):
                journal.append_event("r1", "tick", {"worker": worker, "i": i})
                journal.events("r1", after=i)
        except BaseException as e:  # report it in the main thread
            failures.append(e)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    assert [e.seq for e in journal.events("r1")] == list(range(1, 201))


# -- follow-up questions and the time a run was driven -----------------------------------------------


def _ask(run_id: str, step: int, answer: str) -> AskRecord:
    return AskRecord(
        run_id=run_id,
        step=step,
        question="Why?",
        asked_at=1.0,
        answered_at=2.0,
        answer=answer,
        note="",
        detail={"text": answer, "sources": []},
    )


def test_an_answer_is_stored_once_per_question_and_listed_in_order(journal: Journal) -> None:
    journal.create_run("r1", "q", "warp", {})
    assert journal.record_ask(_ask("r1", 7, "later")) is True
    assert journal.record_ask(_ask("r1", 3, "first")) is True
    assert journal.record_ask(_ask("r1", 7, "again")) is False  # a resumed ask storing it again
    assert [(a.step, a.answer, a.detail["text"]) for a in journal.asks("r1")] == [
        (3, "first", "first"),
        (7, "later", "later"),
    ]
    with pytest.raises(RunNotFound):
        journal.record_ask(_ask("nope", 1, "x"))


def test_time_after_a_run_finished_does_not_count_as_driving_it(journal: Journal) -> None:
    journal.create_run("r1", "q", "warp", {})
    for kind in ("run_started", "action_started", "run_finished", "action_started", "action_finished"):
        journal.append_event("r1", kind, {})
    # Driven from 100 to 130; a follow-up question's steps a day later are not the run being driven.
    times = {1: 100.0, 2: 110.0, 3: 130.0, 4: 86_500.0, 5: 86_510.0}
    with sqlite3.connect(journal.path) as db:
        for seq, at in times.items():
            db.execute("UPDATE events SET created_at = ? WHERE run_id = 'r1' AND seq = ?", (at, seq))
    assert journal.spending("r1")[1] == pytest.approx(30.0)
    journal.append_event("r1", "run_started", {})  # a later command on the run counts again
    journal.append_event("r1", "action_started", {})
    with sqlite3.connect(journal.path) as db:
        db.execute("UPDATE events SET created_at = 90000 WHERE run_id = 'r1' AND seq = 6")
        db.execute("UPDATE events SET created_at = 90005 WHERE run_id = 'r1' AND seq = 7")
    assert journal.spending("r1")[1] == pytest.approx(35.0)
