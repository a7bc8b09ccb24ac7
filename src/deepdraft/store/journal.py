"""The run journal: one SQLite file holding every run's history, checkpoints, events and LLM cache.

What it stores
    ``runs``         one row per research run (question, policy, settings, status, step count).
    ``steps``        one row per action: prompt, raw reply, parsed action, validity, token usage.
    ``checkpoints``  the policy state after every step, zlib-compressed JSON. All of them are kept:
                     resuming needs only the latest, but later tooling reads intermediate drafts.
                     A checkpoint is the whole state, or (encoding ``zlib+json-changes``) the values
                     that changed since an earlier step's checkpoint (`StateChanges`): a pass
                     that takes hundreds of small steps — verification — would otherwise store
                     the whole report and its evidence at each one. Reading one rebuilds the state.
    ``events``       the typed progress stream, numbered 1, 2, 3… per run, so a server can replay it
                     to a client that reconnects (``events(run_id, after=last_seen)``).
    ``llm_cache``    LLM replies keyed by request hash (see `deepdraft.llm.cache.CachingLLM`).
    ``egress``       the run's requests off this machine (web searches, page fetches, remote LLM and
                     embedding endpoints), numbered per run; see `deepdraft.egress`.
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

import json
import sqlite3
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple

from deepdraft.egress import EgressRecord
from deepdraft.errors import RunNotFound, StoreError
from deepdraft.events import StateChanges, StepRecord

__all__ = [
    "MIGRATIONS",
    "EventRecord",
    "Journal",
    "Migration",
    "RunRecord",
    "StepRecord",
]

BUSY_TIMEOUT_S = 30.0
MIN_PREFIX = 4
_STATE_ENCODING = "zlib+json"
_CHANGES_ENCODING = "zlib+json-changes"


class Migration(NamedTuple):
    """One schema change. `apply` is SQL (one or more statements) or a function given the connection.

    Migrations run inside the caller's transaction: a function must not commit or roll back.
    """

    name: str
    apply: str | Callable[[sqlite3.Connection], None]


_INITIAL_SCHEMA = """
CREATE TABLE runs (
    id          TEXT PRIMARY KEY,
    question    TEXT NOT NULL,
    policy      TEXT NOT NULL,
    settings    TEXT NOT NULL,              -- JSON object
    status      TEXT NOT NULL,
    created_at  REAL NOT NULL,
    updated_at  REAL NOT NULL,
    steps       INTEGER NOT NULL DEFAULT 0,
    error       TEXT,
    report_path TEXT
);
CREATE INDEX runs_by_created ON runs (created_at DESC);

CREATE TABLE steps (
    run_id            TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    step              INTEGER NOT NULL,
    action            TEXT NOT NULL,
    prompt            TEXT NOT NULL,
    reply             TEXT NOT NULL,
    parsed            TEXT,                 -- JSON object, NULL when the reply did not parse
    valid             INTEGER NOT NULL,
    reason            TEXT,
    prompt_tokens     INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    started_at        REAL NOT NULL,
    finished_at       REAL NOT NULL,
    cached            INTEGER NOT NULL,
    target            TEXT NOT NULL,        -- "outline" or the node position the action worked on
    PRIMARY KEY (run_id, step)
);

CREATE TABLE checkpoints (
    run_id   TEXT NOT NULL,
    step     INTEGER NOT NULL,
    encoding TEXT NOT NULL,                 -- how `state` is encoded, so a later version may change it
    state    BLOB NOT NULL,
    PRIMARY KEY (run_id, step),
    FOREIGN KEY (run_id, step) REFERENCES steps (run_id, step) ON DELETE CASCADE
);

CREATE TABLE events (
    run_id     TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    seq        INTEGER NOT NULL,
    kind       TEXT NOT NULL,
    payload    TEXT NOT NULL,               -- JSON object
    created_at REAL NOT NULL,
    PRIMARY KEY (run_id, seq)
);

CREATE TABLE llm_cache (
    key        TEXT PRIMARY KEY,
    value      TEXT NOT NULL,               -- JSON object
    created_at REAL NOT NULL
);
"""

_EGRESS_SCHEMA = """
CREATE TABLE egress (
    run_id   TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    seq      INTEGER NOT NULL,
    at       REAL NOT NULL,
    kind     TEXT NOT NULL,                 -- web-search, page-fetch, llm, embeddings
    endpoint TEXT NOT NULL,                 -- scheme://host:port/path, never a query string or key
    detail   TEXT NOT NULL,                 -- the query or the URL
    bytes    INTEGER NOT NULL,
    requests INTEGER NOT NULL,              -- 1 for one request; a running count for an endpoint row
    PRIMARY KEY (run_id, seq)
);
"""

# Append only: never edit, reorder or remove an entry once released — files in the wild record
# these names, and a renamed migration would be reapplied or make the file look newer.
MIGRATIONS: tuple[Migration, ...] = (
    Migration("0001_initial", _INITIAL_SCHEMA),
    Migration("0002_egress", _EGRESS_SCHEMA),
)


@dataclass(frozen=True)
class RunRecord:
    id: str
    question: str
    policy: str
    settings: dict[str, Any]
    status: str
    created_at: float
    updated_at: float
    steps: int
    error: str | None
    report_path: str | None


@dataclass(frozen=True)
class EventRecord:
    seq: int
    run_id: str
    kind: str
    payload: dict[str, Any]
    created_at: float


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def _encode_state(state: dict[str, Any]) -> bytes:
    """A checkpoint as stored: compressed JSON. No sort_keys: key order in a state may carry
    meaning (e.g. the order sections were added) and must survive a resume."""
    return zlib.compress(json.dumps(state, ensure_ascii=False).encode("utf-8"))


def _set_pointer(document: Any, pointer: str, value: Any) -> None:
    """Replace the part of `document` at the JSON pointer `pointer` (RFC 6901) with `value`.

    The part's parent must exist; a list item must exist too (a changed list is replaced whole).
    """
    if not pointer.startswith("/"):
        raise ValueError("a JSON pointer starts with /")
    *parents, last = (part.replace("~1", "/").replace("~0", "~") for part in pointer[1:].split("/"))
    for part in parents:
        document = document[int(part)] if isinstance(document, list) else document[part]
    if isinstance(document, list):
        document[int(last)] = value
    elif isinstance(document, dict):
        document[last] = value
    else:
        raise TypeError(f"{type(document).__name__} has no parts")


def _split_sql(script: str) -> list[str]:
    """Split a script into statements.

    `sqlite3.Connection.executescript` would be simpler, but it COMMITs any open transaction first,
    which would break the one-transaction-per-migration guarantee. `complete_statement` knows about
    ``;`` inside strings and trigger bodies, so a naive split on ``;`` is re-joined where needed.
    """
    statements: list[str] = []
    buffer = ""
    for chunk in script.split(";"):
        buffer += chunk + ";"
        if sqlite3.complete_statement(buffer):
            if buffer.strip(" \t\r\n;"):
                statements.append(buffer.strip())
            buffer = ""
    if buffer.strip(" \t\r\n;"):
        statements.append(buffer.strip())
    return statements


def _run_from_row(row: sqlite3.Row) -> RunRecord:
    return RunRecord(
        id=row["id"],
        question=row["question"],
        policy=row["policy"],
        settings=json.loads(row["settings"]),
        status=row["status"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        steps=row["steps"],
        error=row["error"],
        report_path=row["report_path"],
    )


def _step_from_row(row: sqlite3.Row) -> StepRecord:
    return StepRecord(
        step=row["step"],
        action=row["action"],
        prompt=row["prompt"],
        reply=row["reply"],
        parsed=None if row["parsed"] is None else json.loads(row["parsed"]),
        valid=bool(row["valid"]),
        reason=row["reason"],
        prompt_tokens=row["prompt_tokens"],
        completion_tokens=row["completion_tokens"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        cached=bool(row["cached"]),
        target=row["target"],
    )


class Journal:
    """The run journal in one SQLite file. See the module docstring for the guarantees."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.RLock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StoreError(f"cannot create the directory for journal {self.path}: {e}") from e
        try:
            # isolation_level=None: the sqlite3 module must not open transactions behind our back;
            # every write below says BEGIN IMMEDIATE itself. check_same_thread=False because the
            # lock above serialises use of the connection across threads.
            self._conn = sqlite3.connect(
                str(self.path), timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as e:
            raise StoreError(f"cannot open journal {self.path}: {e}") from e
        self._conn.row_factory = sqlite3.Row
        try:
            self._configure()
            self._migrate()
        except sqlite3.DatabaseError as e:
            self._conn.close()
            if "not a database" in str(e):
                raise StoreError(f"{self.path} is not a deepdraft journal (not an SQLite database)") from e
            if "malformed" in str(e):
                raise StoreError(f"journal {self.path} is damaged ({e}); restore it or move it aside") from e
            raise StoreError(f"cannot open journal {self.path}: {e}") from e
        except BaseException:
            self._conn.close()
            raise

    # -- lifecycle -------------------------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Journal({str(self.path)!r})"

    def _configure(self) -> None:
        conn = self._conn
        # The connect() timeout already installs a busy handler; the pragma states it explicitly
        # (in ms) so it also holds for anything that resets handlers.
        conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        conn.execute("PRAGMA foreign_keys = ON")
        self._ensure_wal()
        conn.execute("PRAGMA synchronous = NORMAL")

    def _ensure_wal(self) -> None:
        """Put the file in WAL mode (a persistent setting), waiting out other processes doing the same.

        Only a new file needs the switch, so opening an existing journal never contends with a
        running writer. The switch needs an exclusive lock and SQLite reports SQLITE_BUSY for it
        at once, without calling the busy handler — so two processes creating the same journal at
        the same moment would fail. Hence the explicit retry, bounded by the same busy timeout.
        """
        deadline = time.monotonic() + BUSY_TIMEOUT_S
        pause = 0.005
        while True:
            try:
                mode = str(self._conn.execute("PRAGMA journal_mode").fetchone()[0]).lower()
                if mode != "wal":
                    mode = str(self._conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]).lower()
            except sqlite3.OperationalError as e:
                message = str(e).lower()
                if ("locked" not in message and "busy" not in message) or time.monotonic() > deadline:
                    raise
                time.sleep(pause)
                pause = min(pause * 2, 0.1)
                continue
            if mode != "wal":
                raise StoreError(f"journal {self.path}: cannot switch to WAL mode (got {mode!r})")
            return

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
                    for statement in _split_sql(migration.apply):
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

    # -- transactions ----------------------------------------------------------------------------

    @contextmanager
    def _write(self, what: str) -> Iterator[sqlite3.Connection]:
        """One short write transaction, holding the write lock from its first statement."""
        with self._lock:
            conn = self._conn
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as e:
                raise StoreError(f"journal {self.path}: {what}: {e}") from e
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException as e:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                if isinstance(e, sqlite3.Error):
                    raise StoreError(f"journal {self.path}: {what}: {e}") from e
                raise

    @contextmanager
    def _read(self, what: str) -> Iterator[sqlite3.Connection]:
        """A read transaction: several SELECTs see one snapshot, and never block the writer (WAL)."""
        with self._lock:
            conn = self._conn
            try:
                conn.execute("BEGIN")
            except sqlite3.Error as e:
                raise StoreError(f"journal {self.path}: {what}: {e}") from e
            try:
                yield conn
            except sqlite3.Error as e:
                raise StoreError(f"journal {self.path}: {what}: {e}") from e
            finally:
                if conn.in_transaction:
                    conn.execute("COMMIT")

    def _require_run(self, conn: sqlite3.Connection, run_id: str) -> None:
        if conn.execute("SELECT 1 FROM runs WHERE id = ?", (run_id,)).fetchone() is None:
            raise RunNotFound(f"no run with id {run_id} (see `deepdraft runs`)")

    # -- runs ------------------------------------------------------------------------------------

    def create_run(self, run_id: str, question: str, policy: str, settings: dict[str, Any]) -> RunRecord:
        if not run_id:
            raise StoreError("a run id must not be empty")
        settings_json = _dumps(settings)
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
                return _run_from_row(row)
            if len(run_id) >= MIN_PREFIX:
                # substr() rather than LIKE: LIKE is case-insensitive and treats _ and % as wildcards.
                rows = conn.execute(
                    "SELECT * FROM runs WHERE substr(id, 1, ?) = ? ORDER BY created_at DESC LIMIT 11",
                    (len(run_id), run_id),
                ).fetchall()
                if len(rows) == 1:
                    return _run_from_row(rows[0])
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
        return [_run_from_row(r) for r in rows]

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
        try:
            if isinstance(state, StateChanges):
                encoding, blob = _CHANGES_ENCODING, _encode_state({"since": state.since, "set": state.values})
            else:
                encoding, blob = _STATE_ENCODING, _encode_state(state)
            parsed = None if record.parsed is None else _dumps(record.parsed)
            event_rows = [(kind, _dumps(payload)) for kind, payload in events]
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
                " prompt_tokens, completion_tokens, started_at, finished_at, cached, target)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    run_id,
                    record.step,
                    record.action,
                    record.prompt,
                    record.reply,
                    parsed,
                    int(record.valid),
                    record.reason,
                    record.prompt_tokens,
                    record.completion_tokens,
                    record.started_at,
                    record.finished_at,
                    int(record.cached),
                    record.target,
                ),
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
            rows = conn.execute("SELECT * FROM steps WHERE run_id = ? ORDER BY step", (run_id,)).fetchall()
        return [_step_from_row(r) for r in rows]

    def latest_checkpoint(self, run_id: str) -> tuple[int, dict[str, Any]] | None:
        """The last step recorded and the state after it; None for a run with no steps yet."""
        with self._read("read checkpoint") as conn:
            self._require_run(conn, run_id)
            row = conn.execute("SELECT max(step) FROM checkpoints WHERE run_id = ?", (run_id,)).fetchone()
            if row[0] is None:
                return None
            return row[0], self._load_state(conn, run_id, row[0])

    def checkpoint(self, run_id: str, step: int) -> dict[str, Any]:
        """The state after `step`."""
        with self._read("read checkpoint") as conn:
            self._require_run(conn, run_id)
            return self._load_state(conn, run_id, step)

    def _load_state(self, conn: sqlite3.Connection, run_id: str, step: int) -> dict[str, Any]:
        """The state after `step`: its checkpoint, or the whole one it builds on with every change
        since applied in order."""
        changes: list[tuple[int, list[tuple[str, Any]]]] = []
        at = step
        while True:
            row = conn.execute(
                "SELECT encoding, state FROM checkpoints WHERE run_id = ? AND step = ?", (run_id, at)
            ).fetchone()
            if row is None:
                raise StoreError(f"run {run_id} has no checkpoint for step {at}")
            if row["encoding"] == _STATE_ENCODING:
                state = self._decode(run_id, at, row["state"])
                break
            if row["encoding"] != _CHANGES_ENCODING:
                raise StoreError(f"run {run_id}, step {at}: unknown checkpoint encoding {row['encoding']!r}")
            delta = self._decode(run_id, at, row["state"])
            since, values = delta.get("since"), delta.get("set")
            if not isinstance(since, int) or since >= at or not isinstance(values, dict):
                raise StoreError(f"run {run_id}, step {at}: the checkpoint's changes are malformed")
            changes.append((at, list(values.items())))
            at = since
        for at, values in reversed(changes):
            for pointer, value in values:
                try:
                    _set_pointer(state, pointer, value)
                except (KeyError, IndexError, TypeError, ValueError) as e:
                    raise StoreError(
                        f"run {run_id}, step {at}: the checkpoint changes {pointer!r}, "
                        f"which the state it builds on lacks ({e})"
                    ) from e
        return state

    @staticmethod
    def _decode(run_id: str, step: int, blob: bytes) -> dict[str, Any]:
        try:
            state = json.loads(zlib.decompress(blob).decode("utf-8"))
        except (zlib.error, UnicodeDecodeError, ValueError) as e:
            raise StoreError(f"run {run_id}, step {step}: the checkpoint is corrupt: {e}") from e
        if not isinstance(state, dict):
            raise StoreError(f"run {run_id}, step {step}: the checkpoint is not a JSON object")
        return state

    # -- events ----------------------------------------------------------------------------------

    def append_event(self, run_id: str, kind: str, payload: dict[str, Any]) -> int:
        """Append an event; returns its sequence number (1, 2, 3… per run)."""
        payload_json = _dumps(payload)
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
        return [
            EventRecord(
                seq=r["seq"],
                run_id=r["run_id"],
                kind=r["kind"],
                payload=json.loads(r["payload"]),
                created_at=r["created_at"],
            )
            for r in rows
        ]

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
        return [
            EgressRecord(
                kind=r["kind"],
                endpoint=r["endpoint"],
                detail=r["detail"],
                at=r["at"],
                bytes=r["bytes"],
                requests=r["requests"],
                seq=r["seq"],
            )
            for r in rows
        ]

    # -- LLM cache -------------------------------------------------------------------------------

    def cache_get(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            try:
                row = self._conn.execute("SELECT value FROM llm_cache WHERE key = ?", (key,)).fetchone()
            except sqlite3.Error as e:
                raise StoreError(f"journal {self.path}: read cache: {e}") from e
        if row is None:
            return None
        value = json.loads(row["value"])
        return value if isinstance(value, dict) else None

    def cache_put(self, key: str, value: dict[str, Any]) -> None:
        value_json = _dumps(value)
        with self._write("write cache") as conn:
            conn.execute(
                "INSERT OR REPLACE INTO llm_cache (key, value, created_at) VALUES (?, ?, ?)",
                (key, value_json, time.time()),
            )
