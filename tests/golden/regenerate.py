"""Rebuild the golden fixtures and their expected outputs. Run it only on purpose:

    PYTHONPATH=src python -m tests.golden.regenerate

The fixtures freeze what the code did when they were made: the exact requests a scripted run sends,
a workspace (a KB and a journal with a finished and an interrupted run) written by that code, and
what the commands print over it. Regenerating after a change would make the golden tests agree with
the change instead of checking it — do it only when a change of protocol or format is intended, and
say so in the commit.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import tempfile
import time
from pathlib import Path

from deepdraft.settings import ENVIRONMENT, RetrievalSettings
from tests.conftest import SPEECHES
from tests.golden import scenarios


def _workspace(home: Path) -> None:
    os.environ["DEEPDRAFT_HOME"] = str(home)
    os.environ["DEEPDRAFT_MODELS"] = str(home / "no-models")


def build_fixtures() -> None:
    """The KB (chunked small, so the corpus gives more than one passage a speech) and the journal."""
    from deepdraft import kb as kbs

    shutil.rmtree(scenarios.GENERATED_AT, ignore_errors=True)
    documents = scenarios.GENERATED_AT / "documents"
    documents.mkdir(parents=True)
    for name, text in SPEECHES.items():
        (documents / name).write_text(text + "\n", encoding="utf-8")
    home = scenarios.GENERATED_AT / "home"
    _workspace(home)
    with kbs.create_kb(scenarios.KB_NAME, RetrievalSettings(chunk_tokens=32, chunk_overlap=8)) as kb:
        kb.add([documents])
    scenarios.make_journal_runs()
    journal = home / "journal.sqlite"
    with sqlite3.connect(journal) as db:  # fold the WAL in and drop free pages: a small, single file
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        db.execute("VACUUM")
    db.close()
    shutil.rmtree(scenarios.HOME_FIXTURE, ignore_errors=True)
    shutil.copytree(
        home,
        scenarios.HOME_FIXTURE,
        ignore=shutil.ignore_patterns("*-wal", "*-shm", "*.lock", "no-models", "indexes"),
    )


def write_expected() -> None:
    expected = scenarios.EXPECTED
    shutil.rmtree(expected, ignore_errors=True)
    expected.mkdir()
    for name in scenarios.RUNS:
        with tempfile.TemporaryDirectory() as scratch:
            _workspace(Path(scratch) / "home")
            scenarios.install_home(Path(scratch) / "home")
            requests = scenarios.record_requests(name)
        (expected / f"requests-{name}.json").write_text(scenarios.dump(requests), encoding="utf-8")
    with tempfile.TemporaryDirectory() as scratch:
        _workspace(Path(scratch) / "home")
        scenarios.install_home(Path(scratch) / "home")
        bodies = scenarios.record_http_bodies()
    (expected / "http-warp-standard.json").write_text(scenarios.dump(bodies), encoding="utf-8")
    with tempfile.TemporaryDirectory() as scratch:
        home, out = Path(scratch) / "home", Path(scratch) / "out"
        scenarios.install_home(home)
        out.mkdir()
        for name, printed in scenarios.run_cli(scenarios.COMMANDS, home, out).items():
            (expected / f"cli-{name}.txt").write_text(printed, encoding="utf-8")
        for exported in sorted(out.iterdir()):
            shutil.copy(exported, expected / f"export-{exported.name}")
    with tempfile.TemporaryDirectory() as scratch:
        _workspace(Path(scratch) / "home")
        scenarios.install_home(Path(scratch) / "home")
        markdown = scenarios.resume_interrupted()
    (expected / "resumed-report.md").write_text(markdown, encoding="utf-8")
    with tempfile.TemporaryDirectory() as scratch:
        _workspace(Path(scratch) / "home")
        scenarios.install_home(Path(scratch) / "home")
        (expected / "search-hits.json").write_text(scenarios.search_hits(), encoding="utf-8")


def main() -> None:
    for variable, _, _ in ENVIRONMENT:
        os.environ.pop(variable, None)
    os.environ["TZ"] = "UTC"
    time.tzset()
    build_fixtures()
    write_expected()


if __name__ == "__main__":
    main()
