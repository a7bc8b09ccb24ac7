"""The write lock: `flock` on ``write.lock``, one writer per KB across processes.

Readers never take it, so they never wait for a writer. The kernel frees it on any exit: a writer
that dies leaves no stale lock, only (at worst) unfinished work that the next writer repairs (see
`generations`).
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from deepdraft.errors import KnowledgeBaseError

LOCK_NAME = "write.lock"


class _WriteLock:
    """`flock` on ``write.lock``: one writer per KB, across processes; the kernel frees it on any exit."""

    def __init__(self, folder: Path, label: str, *, wait: bool) -> None:
        self.path = folder / LOCK_NAME
        self.label = label
        self.wait = wait
        self.handle: IO[str] | None = None

    def __enter__(self) -> _WriteLock:
        handle = self.path.open("a+", encoding="utf-8")
        try:
            flags = fcntl.LOCK_EX if self.wait else fcntl.LOCK_EX | fcntl.LOCK_NB
            fcntl.flock(handle, flags)
        except BlockingIOError:
            handle.seek(0)
            owner = handle.read().strip() or "another process"
            handle.close()
            raise KnowledgeBaseError(
                f"knowledge base {self.label!r} is being written by {owner}; try again when it finishes"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"another process (pid {os.getpid()})")
        handle.flush()
        self.handle = handle
        return self

    def __exit__(self, *exc: object) -> None:
        if self.handle is not None:
            self.handle.close()  # closing the file releases the lock
            self.handle = None


@contextmanager
def write_lock(folder: Path, label: str, *, wait: bool = False) -> Iterator[None]:
    """Hold a KB's write lock (used to delete a whole KB without racing a writer)."""
    with _WriteLock(folder, label, wait=wait):
        yield
