"""One SQLite file opened the journal's way: WAL, a busy timeout, and short explicit transactions.

`Database` owns the connection and its lock; `Journal` builds its tables and queries on it (see the
journal's module docstring for why each setting is what it is).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Self

from deepdraft.errors import StoreError

BUSY_TIMEOUT_S = 30.0


class Database:
    """An open SQLite file; subclasses bring their schema by overriding `_migrate`."""

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

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r})"

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

    def _migrate(self) -> None:
        """Bring the file's schema up to date (called once, right after opening)."""
