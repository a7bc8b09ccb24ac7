"""The code passes its own linters: ruff (style, common bugs) and mypy --strict (types)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def tool(name: str) -> str:
    found = shutil.which(name, path=str(Path(sys.executable).parent))
    if found is None:
        pytest.fail(f"{name} is not installed next to {sys.executable}; install the [dev] extra")
    return found


def test_ruff_is_clean() -> None:
    result = subprocess.run(
        [tool("ruff"), "check", "src", "tests", "bench"], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format_is_clean() -> None:
    result = subprocess.run(
        [tool("ruff"), "format", "--check", "src", "tests", "bench"], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict_is_clean() -> None:
    result = subprocess.run([tool("mypy")], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_policy_never_touches_io_layers() -> None:
    """The model, protocol and policy layers import no HTTP, SQL or CLI code (DESIGN §3)."""
    forbidden = (
        "sqlite3",
        "httpx",
        "openai",
        "typer",
        "rich",
        "deepdraft.store.journal",
        "deepdraft.cli.app",
    )
    pure = [
        "outline",
        "evidence",
        "report",
        "state",
        "actions",
        "attach",
        "grammar",
        "fitting",
        "warp",
        "baseline",
        "events",
        "tokens",
    ]
    for module in pure:
        source = (ROOT / "src" / "deepdraft" / f"{module}.py").read_text(encoding="utf-8")
        imports = [line for line in source.splitlines() if line.startswith(("import ", "from "))]
        for line in imports:
            assert not any(f" {name}" in line.split(" import ")[0] for name in forbidden), (module, line)
