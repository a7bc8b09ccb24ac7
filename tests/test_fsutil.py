"""Crash-safe writes on a real filesystem: whole replacements, no leftovers, ordinary permissions."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from deepdraft.fsutil import atomic_write_bytes, atomic_write_text, fsync_tree, swap_into_place


def test_atomic_write_replaces_the_file_and_leaves_nothing_else(tmp_path: Path) -> None:
    target = tmp_path / "report.md"
    atomic_write_text(target, "first\n")
    atomic_write_bytes(target, b"zweite Fassung\n")
    assert target.read_text(encoding="utf-8") == "zweite Fassung\n"
    assert [p.name for p in tmp_path.iterdir()] == ["report.md"]


def test_a_new_file_gets_the_permissions_the_umask_gives(tmp_path: Path) -> None:
    previous = os.umask(0o027)
    try:
        atomic_write_text(tmp_path / "shared.txt", "x", durable=False)
    finally:
        os.umask(previous)
    assert (tmp_path / "shared.txt").stat().st_mode & 0o777 == 0o640


def test_a_failed_write_keeps_the_old_file_and_removes_the_temporary(tmp_path: Path) -> None:
    target = tmp_path / "data.json"
    target.write_text("old", encoding="utf-8")
    with pytest.raises(TypeError):
        atomic_write_bytes(target, "not bytes")  # type: ignore[arg-type]
    assert target.read_text(encoding="utf-8") == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["data.json"]


def test_swap_into_place_replaces_a_folder_whole(tmp_path: Path) -> None:
    target = tmp_path / "index"
    target.mkdir()
    (target / "old.bin").write_bytes(b"old")
    built = tmp_path / ".index.building"
    (built / "sub").mkdir(parents=True)
    (built / "sub" / "new.bin").write_bytes(b"new")
    fsync_tree(built)
    swap_into_place(built, target)
    assert [p.relative_to(target).as_posix() for p in sorted(target.rglob("*"))] == ["sub", "sub/new.bin"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index"]  # the old folder is gone too


def test_swap_into_place_puts_the_old_folder_back_when_the_rename_fails(tmp_path: Path) -> None:
    target = tmp_path / "index"
    target.mkdir()
    (target / "keep.bin").write_bytes(b"keep")
    with pytest.raises(FileNotFoundError):
        swap_into_place(tmp_path / "never-built", target)
    assert (target / "keep.bin").read_bytes() == b"keep"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index"]
