"""Crash-safe file writes: a file or folder is replaced whole or not at all, and survives a power loss.

    atomic_write_bytes(path, data)      write a file through a temporary sibling and a rename
    atomic_write_text(path, text)       the same for text (UTF-8)
    swap_into_place(built, target)      rename a fully built folder over `target`
    fsync_tree(folder) / fsync_dir(d)   flush files and directory entries to the disk

Why it is done this way: `rename` within one filesystem is atomic on POSIX, so a reader (or the
next process after a crash) sees the old version or the new one, never half of either. That only
holds if the new content is on the disk *before* the rename is: otherwise a power loss can persist
the rename but not the data, leaving an empty or truncated file under the final name (ext4 and XFS
both reorder that way). So the content is fsync-ed first, then renamed, then the parent directory
is fsync-ed, which is what makes the rename itself durable. Temporary files and folders are
siblings of their target (same filesystem, so the rename cannot turn into a copy) with hidden
names, and are removed when the write fails; a crash at the wrong moment leaves at worst a hidden
``.<name>.…`` leftover next to an intact target.

Trade-offs: every fsync costs a disk flush (milliseconds on an SSD, more on a spinning disk or a
network filesystem). Writers that only need atomicity, not durability (a cache that is cheap to
refill), pass ``durable=False`` and skip the flushes. A new file gets the usual permissions of
a newly created file (0666 less the umask), like any editor's save would give it.
"""

from __future__ import annotations

import errno
import os
import shutil
import uuid
from pathlib import Path

__all__ = ["atomic_write_bytes", "atomic_write_text", "fsync_dir", "fsync_tree", "swap_into_place"]


def fsync_dir(folder: Path) -> None:
    """Flush `folder`'s entries (names created, renamed or removed in it) to the disk."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(folder: Path) -> None:
    """Flush every file and every directory entry under `folder`, and `folder` itself."""
    for path in folder.rglob("*"):
        if path.is_symlink():
            continue
        if path.is_dir():
            fsync_dir(path)
        elif path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    fsync_dir(folder)


def swap_into_place(built: Path, target: Path) -> None:
    """Rename the folder `built` to `target`; an existing `target` is moved aside and then deleted.

    `built` must be complete and flushed (`fsync_tree`) and a sibling of `target`. `rename` cannot
    replace a non-empty folder, so an old `target` steps aside (as ``.<name>.old-…``) for the instant
    of the swap, and is put back if the rename fails. `FileExistsError` when another process put a
    folder at `target` in that instant.
    """
    aside: Path | None = None
    if target.exists():
        aside = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
        os.rename(target, aside)
    try:
        os.rename(built, target)
    except OSError as exc:
        if aside is not None and not target.exists():
            os.rename(aside, target)
        if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
            raise FileExistsError(
                errno.EEXIST, "another process wrote it at the same time", str(target)
            ) from exc
        raise
    fsync_dir(target.parent)
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)


def atomic_write_bytes(path: Path, data: bytes, *, durable: bool = True) -> None:
    """Replace the file at `path` with `data`: readers see the old content or the new, never a mix.

    The parent folder must exist. With `durable` (the default) the data and the rename are flushed
    to the disk before this returns. OS errors propagate; the temporary file never stays behind.
    """
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    # O_EXCL: never write through a file (or a link) someone else put there; mode 0o666 lets the
    # umask decide the permissions, as for any newly created file (mkstemp would force 0600).
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            if durable:
                out.flush()
                os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    if durable:
        fsync_dir(path.parent)


def atomic_write_text(path: Path, text: str, *, encoding: str = "utf-8", durable: bool = True) -> None:
    """`atomic_write_bytes` for text."""
    atomic_write_bytes(path, text.encode(encoding), durable=durable)
