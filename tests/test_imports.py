"""The direction of imports (docs/architecture.md), checked by import-linter's contracts in pyproject.toml.

`lint-imports` runs over this checkout's `src/` (PYTHONPATH first, so an installed copy elsewhere
is never what gets checked). The second test shows the contracts have teeth: a copy of the
package with one wrong-way import added fails them, naming the import.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    """`lint-imports` over the package under `root/src`, with the contracts of `root/pyproject.toml`."""
    found = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    if found is None:
        pytest.fail(f"lint-imports is not installed next to {sys.executable}; install the [dev] extra")
    environ = dict(os.environ, PYTHONPATH=str(root / "src"))
    return subprocess.run(
        [found, "--no-cache", "--no-logo", str(root / "pyproject.toml")],
        cwd=root,
        capture_output=True,
        text=True,
        env=environ,
        timeout=120,
    )


def test_every_import_contract_is_kept() -> None:
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "wrong_import", "contract"),
    [
        ("core/outline.py", "import deepdraft.cli.app", "Layers"),
        ("policy/warp.py", "import httpx", "do no I/O of their own"),
        ("retrieval/kb/store.py", "import deepdraft.protocol.actions", "Adapters depend only on"),
        ("settings.py", "import tomllib", "Settings are values"),
        ("train/prune.py", "import deepdraft.store.journal", "read runs through deepdraft.run.runs"),
        ("cli/app.py", "import deepdraft.store.journal", "read runs through deepdraft.run.runs"),
        ("mcp/server.py", "import deepdraft.server.kbs", "The two servers are apart"),
        (
            "retrieval/documents/chunking.py",
            "import deepdraft.retrieval.documents.corpus",
            "No import cycles",
        ),
    ],
)
def test_a_wrong_way_import_breaks_a_contract(
    tmp_path: Path, module: str, wrong_import: str, contract: str
) -> None:
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    package = tmp_path / "src" / "deepdraft"
    shutil.copytree(
        ROOT / "src" / "deepdraft", package, ignore=shutil.ignore_patterns("__pycache__", "static")
    )
    target = package / module
    source = target.read_text(encoding="utf-8")
    # After `from __future__ import annotations`, where an import may stand.
    head, future, rest = source.partition("from __future__ import annotations\n")
    assert future, f"{module} has no `from __future__` line to anchor the import"
    target.write_text(f"{head}{future}{wrong_import}\n{rest}", encoding="utf-8")

    result = lint_imports(tmp_path)
    assert result.returncode != 0, result.stdout
    broken = result.stdout.split("Broken contracts", 1)[-1]
    assert contract in broken, result.stdout
    imported = wrong_import.split()[-1]
    assert imported.split(".")[0] in broken, result.stdout
