"""The run journal: one SQLite file holding every run's history, checkpoints, events and LLM cache.

What it stores
    ``runs``         one row per research run (question, policy, settings, status, step count).
    ``steps``        one row per action: prompt, raw reply, parsed action, validity, token usage,
                     and whether the user directed it (a command on a finished run).
    ``checkpoints``  the policy state after every step, zlib-compressed JSON. All of them are kept:
                     resuming needs only the latest, but later tooling reads intermediate drafts.
                     A checkpoint is the whole state, or (encoding ``zlib+json-changes``) the values
                     that changed since an earlier step's checkpoint (`StateChanges`): a pass
                     that takes hundreds of small steps — verification — would otherwise store
                     the whole report and its evidence at each one. Reading one rebuilds the state.
    ``events``       the typed progress stream, numbered 1, 2, 3… per run, so a server can replay it
                     to a client that reconnects (``events(run_id, after=last_seen)``).
    ``llm_cache``    LLM replies keyed by request hash (see `deepdraft.llm.cache.CachingLLM`).
    ``texts``        long replies, once, by SHA-256: a cache entry and a step row holding the same
                     reply both point here (a 40 MB reply costs 40 MB, not twice that). A refused
                     reply's step keeps only its first `REFUSED_REPLY_KEEP` characters, and its
                     full text is dropped once the step is recorded: the cache needs a reply only
                     until its step is journaled, since a recorded step is never asked again.
    ``egress``       the run's requests off this machine (web searches, page fetches, remote LLM and
                     embedding endpoints), numbered per run; see `deepdraft.egress`.
    ``asks``         follow-up questions asked of a finished run and their answers, one row per
                     question, named by the step that began it (see `deepdraft.policy.asks`).
    ``migrations``   the names of the schema migrations applied to this file.

Trade-offs, chosen on purpose
    * Crash safety over speed. A step row and its checkpoint are written in one transaction, so a
      run killed with SIGKILL at any moment leaves either both or neither, and resumes from the
      latest checkpoint. ``synchronous=NORMAL`` with WAL keeps every committed transaction through a
      process crash; only a power cut or OS crash may lose the last few commits (never corrupt the
      file). ``FULL`` would fsync on every step for little gain here: losing the last step on power
      loss means redoing one LLM call, which the cache usually answers anyway.
    * Several processes, one file. The CLI and a server may use the same journal at once. WAL lets
      readers run alongside the single writer; every write is a short ``BEGIN IMMEDIATE``
      transaction (take the write lock up front, so two writers never deadlock trying to upgrade
      a read lock), and a 30 s busy timeout makes a writer wait for the other instead of failing
      with "database is locked". Expensive work (JSON encoding, compression) happens before the
      lock is taken. WAL does not work on network filesystems: keep the workspace on a local disk.
    * Threads. A `Journal` owns one connection, guarded by a lock: it may be shared between
      threads, but their calls run one at a time. For parallel throughput open one `Journal` per
      thread. Never carry a `Journal` across ``fork``; open a new one in the child process.
    * Plain JSON, no ORM. Columns hold JSON text (``ensure_ascii=False, sort_keys=True``) so the
      file stays readable with the ``sqlite3`` shell. Checkpoints are the exception: they are
      large, so they are compressed, and their keys keep their order (a state's dict order can
      carry meaning, e.g. the order sections were added).
    * Append-only migrations. The schema evolves by appending named migrations to `MIGRATIONS`;
      each file records which ones it has. A file that records a migration this version does not
      know was written by a newer deepdraft and is refused rather than misread.

Run ids are exact in every method except `Journal.get_run`, which also resolves a unique prefix of
at least four characters (what a user types); callers pass ``get_run(...).id`` onwards.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from collections.abc import Sequence
from typing import Any

from deepdraft.egress import EgressRecord
from deepdraft.errors import RunNotFound, StoreError
from deepdraft.events import StateChanges, StepRecord
from deepdraft.store.checkpoints import encode_checkpoint, load_state
from deepdraft.store.connection import BUSY_TIMEOUT_S, Database
from deepdraft.store.records import (
    AskRecord,
    EventRecord,
    RunRecord,
    ask_from_row,
    dumps,
    egress_from_row,
    event_from_row,
    run_from_row,
    step_from_row,
)
from deepdraft.store.schema import MIGRATIONS, Migration, split_sql

__all__ = [
    "BUSY_TIMEOUT_S",
    "MIGRATIONS",
    "AskRecord",
    "EventRecord",
    "Journal",
    "Migration",
    "RunRecord",
    "StepRecord",
]

MIN_PREFIX = 4

LONG_TEXT = 4096
"""Replies longer than this (characters) are stored once in `texts` and pointed at."""
REFUSED_REPLY_KEEP = 65_536
"""How much of a refused reply a step keeps: enough to see what went wrong, not a 40 MB flood."""

_DRIVE_ENDS = frozenset({"run_finished", "run_failed", "run_cancelled"})
"""Events that end a drive of a run (see `Journal.spending`)."""

_STEP_COLUMNS = (
    "steps.run_id, steps.step, action, prompt, coalesce(texts.text, reply) AS reply, parsed, valid,"
    " reason, prompt_tokens, completion_tokens, started_at, finished_at, cached, target, directed"
)


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _kept_reply(record: StepRecord) -> str:
    """The reply as a step keeps it: whole, unless it was refused and is very long."""
    reply = record.reply
    if record.valid or len(reply) <= REFUSED_REPLY_KEEP:
        return reply
    cut = len(reply) - REFUSED_REPLY_KEEP
    return f"{reply[:REFUSED_REPLY_KEEP]}\n[… {cut:,} more characters of this refused reply were not kept]"


class Journal(Database):
    """The run journal in one SQLite file. See the module docstring for the guarantees."""

    def _migrate(self) -> None:
        migrations = MIGRATIONS
        known = [m.name for m in migrations]
        # Fast path without the write lock: an up-to-date file (the common case) needs nothing.
        applied = self._applied_migrations()
        if applied is not None:
            self._refuse_unknown(applied, known)
            if set(known) <= set(applied):
                return
        with self._write("migrate"):
            # Look again under the write lock: another process may have migrated meanwhile.
            applied = self._applied_migrations()
            if applied is None:
                others = self._conn.execute(
                    "SELECT count(*) FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'"
                ).fetchone()[0]
                if others:
                    raise StoreError(
                        f"{self.path} is an SQLite database but not a deepdraft journal "
                        "(it has tables but no migration record)"
                    )
                self._conn.execute(
                    "CREATE TABLE migrations (name TEXT PRIMARY KEY, applied_at REAL NOT NULL)"
                )
                applied = []
            self._refuse_unknown(applied, known)
            for migration in migrations:
                if migration.name in applied:
                    continue
                if isinstance(migration.apply, str):
                    for statement in split_sql(migration.apply):
                        self._conn.execute(statement)
                else:
                    migration.apply(self._conn)
                self._conn.execute(
                    "INSERT INTO migrations (name, applied_at) VALUES (?, ?)", (migration.name, time.time())
                )

    def _applied_migrations(self) -> list[str] | None:
        exists = self._conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'migrations'"
        ).fetchone()
        if exists is None:
            return None
        return [row[0] for row in self._conn.execute("SELECT name FROM migrations ORDER BY rowid")]

    def _refuse_unknown(self, applied: list[str], known: list[str]) -> None:
        unknown = [name for name in applied if name not in known]
        if unknown:
            raise StoreError(
                f"journal {self.path} was written by a newer version of deepdraft "
                f"(unknown schema migrations: {', '.join(unknown)}); upgrade deepdraft to open it"
            )

    def _require_run(self, conn: sqlite3.Connection, run_id: str) -> None:
        if conn.execute("SELECT 1 FROM runs WHERE id = ?", (run_id,)).fetchone() is None:
            raise RunNotFound(f"no run with id {run_id} (see `deepdraft runs`)")

    # -- runs ------------------------------------------------------------------------------------

    def create_run(self, run_id: str, question: str, policy: str, settings: dict[str, Any]) -> RunRecord:
        if not run_id:
            raise StoreError("a run id must not be empty")
        settings_json = dumps(settings)
        now = time.time()
        with self._write("create run") as conn:
            if conn.execute("SELECT 1 FROM runs WHERE id = ?", (run_id,)).fetchone() is not None:
                raise StoreError(f"a run with id {run_id} already exists in {self.path}")
            conn.execute(
                "INSERT INTO runs (id, question, policy, settings, status, created_at, updated_at, steps)"
                " VALUES (?, ?, ?, ?, 'created', ?, ?, 0)",
                (run_id, question, policy, settings_json, now, now),
            )
        return RunRecord(
            id=run_id,
            question=question,
            policy=policy,
            settings=json.loads(settings_json),
            status="created",
            created_at=now,
            updated_at=now,
            steps=0,
            error=None,
            report_path=None,
        )

    def get_run(self, run_id: str) -> RunRecord:
        """The run with this id, or with this unique id prefix (at least 4 characters)."""
        with self._read("get run") as conn:
            row = conn.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
            if row is not None:
                return run_from_row(row)
            if len(run_id) >= MIN_PREFIX:
                # substr() rather than LIKE: LIKE is case-insensitive and treats _ and % as wildcards.
                rows = conn.execute(
                    "SELECT * FROM runs WHERE substr(id, 1, ?) = ? ORDER BY created_at DESC LIMIT 11",
                    (len(run_id), run_id),
                ).fetchall()
                if len(rows) == 1:
                    return run_from_row(rows[0])
                if rows:
                    names = ", ".join(r["id"] for r in rows[:10]) + (", …" if len(rows) > 10 else "")
                    raise RunNotFound(
                        f"run id prefix {run_id} is ambiguous: it matches {names} (give more characters)"
                    )
        raise RunNotFound(f"no run with id {run_id} (see `deepdraft runs`)")

    def list_runs(self, limit: int | None = None) -> list[RunRecord]:
        """Runs, newest first."""
        with self._read("list runs") as conn:
            rows = conn.execute(
                "SELECT * FROM runs ORDER BY created_at DESC, rowid DESC LIMIT ?",
                (-1 if limit is None else max(limit, 0),),
            ).fetchall()
        return [run_from_row(r) for r in rows]

    def update_run(
        self,
        run_id: str,
        *,
        status: str | None = None,
        error: str | None = None,
        report_path: str | None = None,
    ) -> None:
        """Set the given fields (None leaves a field as it is) and touch `updated_at`."""
        with self._write("update run") as conn:
            cursor = conn.execute(
                "UPDATE runs SET status = coalesce(?, status), error = coalesce(?, error),"
                " report_path = coalesce(?, report_path), updated_at = ? WHERE id = ?",
                (status, error, report_path, time.time(), run_id),
            )
            if cursor.rowcount == 0:
                raise RunNotFound(f"no run with id {run_id} (see `deepdraft runs`)")

    # -- steps and checkpoints -------------------------------------------------------------------

    def record_step(
        self,
        run_id: str,
        record: StepRecord,
        state: dict[str, Any] | StateChanges,
        events: Sequence[tuple[str, dict[str, Any]]] = (),
    ) -> None:
        """Write a step, the state after it and the step's events, atomically.

        A step number may be recorded only once. Writing the events in the same transaction means a
        crash can never leave the events of a step that a resume will redo. `state` given as
        changes must be relative to the run's latest checkpoint.
        """
        # Encode before taking the write lock: big states take milliseconds to serialise and
        # compress, and the other process should not wait for that.
        reply = _kept_reply(record)
        long_reply = len(reply) > LONG_TEXT
        reply_sha = _sha256(reply) if long_reply else None
        full_sha = _sha256(record.reply) if len(reply) != len(record.reply) else None  # a cut refused reply
        try:
            encoding, blob = encode_checkpoint(state)
            parsed = None if record.parsed is None else dumps(record.parsed)
            event_rows = [(kind, dumps(payload)) for kind, payload in events]
        except (TypeError, ValueError) as e:
            raise StoreError(
                f"run {run_id}, step {record.step}: state or parsed action is not JSON-serialisable: {e}"
            ) from e
        with self._write("record step") as conn:
            self._require_run(conn, run_id)
            if (
                conn.execute(
                    "SELECT 1 FROM steps WHERE run_id = ? AND step = ?", (run_id, record.step)
                ).fetchone()
                is not None
            ):
                raise StoreError(
                    f"run {run_id}: step {record.step} is already recorded; "
                    "a resumed run must continue after its latest checkpoint, not redo work"
                )
            if isinstance(state, StateChanges):
                latest = conn.execute(
                    "SELECT max(step) FROM checkpoints WHERE run_id = ?", (run_id,)
                ).fetchone()[0]
                if latest != state.since:
                    raise StoreError(
                        f"run {run_id}, step {record.step}: its checkpoint holds the changes since "
                        f"step {state.since}, but the latest checkpoint is of step {latest}"
                    )
            conn.execute(
                "INSERT INTO steps (run_id, step, action, prompt, reply, parsed, valid, reason,"
                " prompt_tokens, completion_tokens, started_at, finished_at, cached, target, reply_sha256,"
                " directed) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    run_id,
                    record.step,
                    record.action,
                    record.prompt,
                    "" if long_reply else reply,
                    parsed,
                    int(record.valid),
                    record.reason,
                    record.prompt_tokens,
                    record.completion_tokens,
                    record.started_at,
                    record.finished_at,
                    int(record.cached),
                    record.target,
                    reply_sha,
                    int(record.directed),
                ),
            )
            if reply_sha is not None:
                conn.execute("INSERT OR IGNORE INTO texts (sha256, text) VALUES (?, ?)", (reply_sha, reply))
            if full_sha is not None:
                # The whole refused reply was kept only for the cache, to replay it should the run
                # stop before this step was journaled; now nothing will ask for it again.
                conn.execute(
                    "DELETE FROM texts WHERE sha256 = ?"
                    " AND NOT EXISTS (SELECT 1 FROM steps WHERE reply_sha256 = ?)",
                    (full_sha, full_sha),
                )
            conn.execute(
                "INSERT INTO checkpoints (run_id, step, encoding, state) VALUES (?, ?, ?, ?)",
                (run_id, record.step, encoding, blob),
            )
            conn.execute(
                "UPDATE runs SET steps = steps + 1, updated_at = ? WHERE id = ?", (time.time(), run_id)
            )
            for kind, payload_json in event_rows:
                self._insert_event(conn, run_id, kind, payload_json)

    def steps(self, run_id: str) -> list[StepRecord]:
        with self._read("read steps") as conn:
            self._require_run(conn, run_id)
            rows = conn.execute(
                f"SELECT {_STEP_COLUMNS} FROM steps LEFT JOIN texts ON texts.sha256 = steps.reply_sha256"
                " WHERE steps.run_id = ? ORDER BY steps.step",
                (run_id,),
            ).fetchall()
        return [step_from_row(r) for r in rows]

    def spending(self, run_id: str) -> tuple[int, float]:
        """What the run has spent so far: (tokens of its recorded steps, seconds it was driven).

        Tokens: every step's prompt and completion, a step answered from the cache included (it
        was paid for by the process that stopped before journaling it). Seconds: each time the run
        was driven, from its `run_started` event to the last event journaled before the next one;
        the time between a crash and the last journaled step is not known, so it is not counted.
        A drive ends at its run_finished (run_failed, run_cancelled) event: what is journaled after
        it without a new start (a follow-up question's steps) is not the run being driven, and the
        days a finished run lay unused must not count.
        """
        with self._read("read spending") as conn:
            self._require_run(conn, run_id)
            tokens = conn.execute(
                "SELECT coalesce(sum(prompt_tokens + completion_tokens), 0) FROM steps WHERE run_id = ?",
                (run_id,),
            ).fetchone()[0]
            events = conn.execute(
                "SELECT kind, created_at FROM events WHERE run_id = ? ORDER BY seq", (run_id,)
            ).fetchall()
        seconds, started, last = 0.0, None, None
        for kind, at in events:
            if kind == "run_started":
                if started is not None and last is not None:
                    seconds += last - started
                started = at
            if started is not None:
                last = at
            if kind in _DRIVE_ENDS and started is not None and last is not None:
                seconds += last - started
                started = last = None
        if started is not None and last is not None:
            seconds += last - started
        return int(tokens), seconds

    def latest_checkpoint(self, run_id: str) -> tuple[int, dict[str, Any]] | None:
        """The last step recorded and the state after it; None for a run with no steps yet."""
        with self._read("read checkpoint") as conn:
            self._require_run(conn, run_id)
            row = conn.execute("SELECT max(step) FROM checkpoints WHERE run_id = ?", (run_id,)).fetchone()
            if row[0] is None:
                return None
            return row[0], load_state(conn, run_id, row[0])

    def checkpoint(self, run_id: str, step: int) -> dict[str, Any]:
        """The state after `step`."""
        with self._read("read checkpoint") as conn:
            self._require_run(conn, run_id)
            return load_state(conn, run_id, step)

    # -- events ----------------------------------------------------------------------------------

    def append_event(self, run_id: str, kind: str, payload: dict[str, Any]) -> int:
        """Append an event; returns its sequence number (1, 2, 3… per run)."""
        payload_json = dumps(payload)
        with self._write("append event") as conn:
            self._require_run(conn, run_id)
            return self._insert_event(conn, run_id, kind, payload_json)

    @staticmethod
    def _insert_event(conn: sqlite3.Connection, run_id: str, kind: str, payload_json: str) -> int:
        # Safe without a counter table: BEGIN IMMEDIATE means no other writer runs between the
        # max() and the insert, and the primary key would reject a duplicate anyway.
        seq: int = conn.execute(
            "SELECT coalesce(max(seq), 0) + 1 FROM events WHERE run_id = ?", (run_id,)
        ).fetchone()[0]
        conn.execute(
            "INSERT INTO events (run_id, seq, kind, payload, created_at) VALUES (?, ?, ?, ?, ?)",
            (run_id, seq, kind, payload_json, time.time()),
        )
        return seq

    def events(self, run_id: str, after: int = 0) -> list[EventRecord]:
        """The run's events with a sequence number greater than `after`, in order."""
        with self._read("read events") as conn:
            self._require_run(conn, run_id)
            rows = conn.execute(
                "SELECT * FROM events WHERE run_id = ? AND seq > ? ORDER BY seq", (run_id, after)
            ).fetchall()
        return [event_from_row(r) for r in rows]

    # -- egress audit ----------------------------------------------------------------------------

    def record_egress(self, run_id: str, record: EgressRecord) -> int:
        """Store one egress record (its `seq` is ignored); returns its number within the run (1, 2, 3…).

        Written at once in its own transaction, not with a step: the request has already happened.
        """
        with self._write("record egress") as conn:
            self._require_run(conn, run_id)
            seq: int = conn.execute(
                "SELECT coalesce(max(seq), 0) + 1 FROM egress WHERE run_id = ?", (run_id,)
            ).fetchone()[0]
            conn.execute(
                "INSERT INTO egress (run_id, seq, at, kind, endpoint, detail, bytes, requests)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    run_id,
                    seq,
                    record.at,
                    record.kind,
                    record.endpoint,
                    record.detail,
                    record.bytes,
                    record.requests,
                ),
            )
        return seq

    def add_egress_traffic(self, run_id: str, seq: int, requests: int, bytes: int) -> None:
        """Add requests and bytes to an endpoint's egress record (an LLM endpoint counts its calls)."""
        with self._write("count egress") as conn:
            cursor = conn.execute(
                "UPDATE egress SET requests = requests + ?, bytes = bytes + ? WHERE run_id = ? AND seq = ?",
                (requests, bytes, run_id, seq),
            )
            if cursor.rowcount == 0:
                raise StoreError(f"run {run_id} has no egress record {seq}")

    def egress(self, run_id: str) -> list[EgressRecord]:
        """The run's egress records, in the order they were made."""
        with self._read("read egress") as conn:
            self._require_run(conn, run_id)
            rows = conn.execute("SELECT * FROM egress WHERE run_id = ? ORDER BY seq", (run_id,)).fetchall()
        return [egress_from_row(r) for r in rows]

    # -- follow-up questions --------------------------------------------------------------------

    def record_ask(self, record: AskRecord) -> bool:
        """Store an answered question; False when it was stored already (a resumed ask's second
        try at storing it), which leaves the first row as it is."""
        detail = dumps(record.detail)
        with self._write("record ask") as conn:
            self._require_run(conn, record.run_id)
            cursor = conn.execute(
                "INSERT OR IGNORE INTO asks (run_id, step, question, asked_at, answered_at, answer, note,"
                " detail, section) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    record.run_id,
                    record.step,
                    record.question,
                    record.asked_at,
                    record.answered_at,
                    record.answer,
                    record.note,
                    detail,
                    record.section,
                ),
            )
            return cursor.rowcount == 1

    def asks(self, run_id: str) -> list[AskRecord]:
        """The run's stored questions and answers, in the order they were asked."""
        with self._read("read asks") as conn:
            self._require_run(conn, run_id)
            rows = conn.execute("SELECT * FROM asks WHERE run_id = ? ORDER BY step", (run_id,)).fetchall()
        return [ask_from_row(row) for row in rows]

    # -- LLM cache -------------------------------------------------------------------------------

    def cache_get(self, key: str) -> dict[str, Any] | None:
        """The cached value, its long text read back from `texts`; None when there is none (or its
        text was dropped after its step was journaled: a miss, as for any entry that cannot be read)."""
        with self._lock:
            try:
                row = self._conn.execute(
                    "SELECT value, texts.text AS text FROM llm_cache"
                    " LEFT JOIN texts ON texts.sha256 = json_extract(llm_cache.value, '$.text_sha256')"
                    " WHERE key = ?",
                    (key,),
                ).fetchone()
            except sqlite3.Error as e:
                raise StoreError(f"journal {self.path}: read cache: {e}") from e
        if row is None:
            return None
        value = json.loads(row["value"])
        if not isinstance(value, dict):
            return None
        if "text_sha256" in value:
            if row["text"] is None:
                return None
            value["text"] = row["text"]
            del value["text_sha256"]
        return value

    def cache_put(self, key: str, value: dict[str, Any]) -> None:
        """Store `value`; a long ``text`` in it goes to `texts`, where a step holding the same reply
        finds it (one copy for both)."""
        text = value.get("text")
        long_text = isinstance(text, str) and len(text) > LONG_TEXT
        if long_text:
            assert isinstance(text, str)
            sha = _sha256(text)
            value = {**{k: v for k, v in value.items() if k != "text"}, "text_sha256": sha}
        value_json = dumps(value)
        with self._write("write cache") as conn:
            if long_text:
                conn.execute("INSERT OR IGNORE INTO texts (sha256, text) VALUES (?, ?)", (sha, text))
            conn.execute(
                "INSERT OR REPLACE INTO llm_cache (key, value, created_at) VALUES (?, ?, ?)",
                (key, value_json, time.time()),
            )
