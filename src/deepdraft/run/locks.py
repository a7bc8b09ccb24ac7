"""One process at a time: an exclusive lock on a file that names its holder.

A run folder and a batch folder are each driven by one process at a time. The lock is the
kernel's (`flock`), so it is dropped when its holder dies, however it dies; the file says which
process holds it, for the message the next one gets.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from deepdraft.errors import UserError


@contextmanager
def held_alone(lock_path: Path, busy: Callable[[str], str]) -> Iterator[None]:
    """Hold `lock_path` for the block, or raise UserError(busy(owner)) at once when another
    process holds it (`owner` as the lock file names it, e.g. "pid 4242")."""
    handle = lock_path.open("a+")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            owner = handle.read().strip() or "another process"
            raise UserError(busy(owner)) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}")
        handle.flush()
        yield
    finally:
        handle.close()
