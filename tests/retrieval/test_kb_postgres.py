"""What only the Postgres engine has: copying KBs between engines, DSNs kept secret, its settings and CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from deepdraft.config import load_settings
from deepdraft.egress import EgressLog, public_dsn
from deepdraft.errors import ConfigError, KnowledgeBaseError
from deepdraft.retrieval.kb import names
from deepdraft.retrieval.kb.copying import copy_kb
from deepdraft.retrieval.kb.postgres.database import close_pools, egress_endpoint, pool_for
from deepdraft.run.wiring import meter_kb_embedders
from deepdraft.settings import Settings
from tests.retrieval.test_kb_engines import HashedEmbedder

SECRET = "pa55-w0rd-never-shown"


@pytest.fixture
def small(tmp_path: Path) -> Path:
    folder = tmp_path / "small"
    folder.mkdir()
    (folder / "tariffs.md").write_text("# Tariffs\n\n## Reform\n\nThe tariff of abominations needs reform.\n")
    (folder / "trade.txt").write_text("Trade expansion lowers duties by negotiation.\n")
    (folder / "debt.md").write_text("# Debt\n\nThe public debt was paid down by the surplus.\n")
    return folder


def with_password(dsn: str) -> str:
    """The test server trusts local connections, so a password is accepted and ignored: one to leak."""
    return make_conninfo(
        "", **{**{k: v for k, v in conninfo_to_dict(dsn).items() if v is not None}, "password": SECRET}
    )


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "deepdraft", *args],
        capture_output=True,
        text=True,
        timeout=180,
        env=dict(os.environ, COLUMNS="200"),
        stdin=subprocess.DEVNULL,
    )


def test_a_kb_is_copied_to_postgres_and_back_with_its_vectors_not_re_embedded(
    small: Path, postgres_dsn: str
) -> None:
    embedder = HashedEmbedder()
    with names.create_kb("local", embedder=embedder) as kb:
        kb.add([small], embedder=embedder)
        expected = [(p.source.doc_id, p.text) for p in kb.search("tariff debt negotiation", 3, mode="dense")]
    embedded = len(embedder.embedded)
    assert copy_kb("local", "postgres", target="shared", dsn=postgres_dsn) == "shared"
    assert names.kb_engine("shared") == "postgres"
    with names.open_kb("shared", embedder=embedder) as shared:
        info = shared.info()
        assert (info.documents, info.embedder, info.dimension) == (3, "test:hashed-64", 64)
        hits = shared.search("tariff debt negotiation", 3, mode="dense")
        assert [(p.source.doc_id, p.text) for p in hits] == expected
        (small / "trade.txt").write_text("Trade treaties were renegotiated.\n")
        assert shared.add([small]).documents_updated == 1  # the copy keeps adding incrementally
    assert (
        len(embedder.embedded) == embedded + 2
    )  # the copy embedded nothing; the add one chunk (+ the query)
    back = copy_kb("shared", "embedded", target="snapshot")
    assert names.kb_engine(back) == "embedded"
    with names.open_kb(back, embedder=embedder) as snapshot:
        assert snapshot.document_count() == 3
        assert snapshot.search("renegotiated treaties", 1, mode="dense")[0].source.doc_id == "trade.txt"
        assert snapshot.search("abominations", 1, mode="bm25")[0].source.doc_id == "tariffs.md"
    assert len(embedder.embedded) == embedded + 3  # only the two queries: no passage embedded again
    with pytest.raises(KnowledgeBaseError, match="'snapshot' exists already"):
        copy_kb("shared", "embedded", target="snapshot")
    with pytest.raises(KnowledgeBaseError, match="already on the postgres engine"):
        copy_kb("shared", "postgres", dsn=postgres_dsn)


def test_the_password_is_never_written_shown_or_recorded(
    small: Path, postgres_dsn: str, tmp_path: Path
) -> None:
    dsn = with_password(postgres_dsn)
    with names.create_kb("team", engine="postgres", dsn=dsn) as kb:
        kb.add([small])
        assert SECRET not in json.dumps(kb.info().to_dict())
        assert SECRET not in kb.fingerprint() and SECRET not in kb.location
    link = (names.kb_dir("team") / names.POSTGRES_LINK).read_text()
    assert SECRET not in link and "dbname" in link
    settings = Settings.model_validate({"kb": {"engine": "postgres", "dsn": dsn}})
    assert SECRET not in json.dumps(settings.public_dict())
    assert settings.public_dict()["kb"]["dsn"] == public_dsn(dsn)
    unreachable = f"postgresql://someone:{SECRET}@127.0.0.1:1/nothing"
    with pytest.raises(KnowledgeBaseError) as failure:
        pool_for(unreachable)
    assert SECRET not in str(failure.value) and "127.0.0.1:1" in str(failure.value)
    assert (failure.value.__cause__ is None and failure.value.__context__ is None) or SECRET not in repr(
        failure.value.__context__
    )


@pytest.mark.parametrize(
    ("dsn", "shown"),
    [
        ("postgresql://bob:secret@db.example:6543/team", "postgresql://bob@db.example:6543/team"),
        ("postgres://db.example/team", "postgresql://db.example:5432/team"),
        ("host=db port=5433 dbname=kb user=al password='a b'", "postgresql://al@db:5433/kb"),
        ("hunter2", "<invalid DSN>"),
    ],
)
def test_dsns_are_shown_without_secrets(dsn: str, shown: str) -> None:
    assert public_dsn(dsn) == shown


def test_kb_settings_are_validated(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[kb]\nengine = "postgres"\n')
    with pytest.raises(ConfigError, match="engine 'postgres' needs a dsn"):
        load_settings(config)
    config.write_text(f'[kb]\nengine = "postgres"\ndsn = "mysql://x:{SECRET}@h/db"\n')
    with pytest.raises(ConfigError, match="must be a postgresql:// URL") as failure:
        load_settings(config)
    assert SECRET not in str(failure.value)
    config.write_text('[kb]\nengine = "elastic"\n')
    with pytest.raises(ConfigError, match=r"kb\.engine"):
        load_settings(config)


def test_the_cli_adds_lists_searches_copies_and_removes_on_postgres(
    small: Path, postgres_dsn: str, tmp_path: Path
) -> None:
    dsn = with_password(postgres_dsn)
    added = cli("kb", "add", str(small), "--kb", "team", "--engine", "postgres", "--dsn", dsn)
    assert added.returncode == 0, added.stderr
    assert "added 3 documents" in added.stdout and SECRET not in added.stdout + added.stderr
    listed = cli("kb", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [entry["name"] for entry in json.loads(listed.stdout)] == ["team"]
    found = cli("kb", "search", "team", "abominations", "--json")
    assert found.returncode == 0, found.stderr
    assert json.loads(found.stdout)[0]["doc_id"] == "tariffs.md"
    info = cli("kb", "info", "team", "--json")
    assert info.returncode == 0 and json.loads(info.stdout)["documents"] == 3, info.stderr
    assert SECRET not in info.stdout
    copied = cli("kb", "copy", "team", "--to", "embedded", "--as", "offline")
    assert copied.returncode == 0, copied.stderr
    assert cli("kb", "search", "offline", "negotiation", "--json").returncode == 0
    removed = cli("kb", "remove", "team", "--yes")
    assert removed.returncode == 0, removed.stderr
    assert json.loads(cli("kb", "list", "--json").stdout)[0]["name"] == "offline"
    bad = cli("kb", "add", str(small), "--kb", "other", "--engine", "postgres")
    assert bad.returncode != 0 and "needs a dsn" in bad.stderr
    implied = cli(
        "kb", "add", str(small / "debt.md"), "--kb", "implied", "--dsn", dsn
    )  # --dsn alone: postgres
    assert implied.returncode == 0, implied.stderr
    assert names.kb_engine("implied") == "postgres"
    wrong = cli("kb", "add", str(small), "--kb", "offline", "--dsn", dsn)  # an embedded KB stays embedded
    assert wrong.returncode != 0 and "lives on the embedded engine" in wrong.stderr


def test_the_workspace_config_gives_the_pool_size_and_the_password(
    small: Path, postgres_dsn: str, isolated_workspace: Path
) -> None:
    dsn = with_password(postgres_dsn)
    names.create_kb("team", engine="postgres", dsn=dsn).close()
    names._DSNS.clear()  # a new process: it knows only the link, which has no password
    close_pools()
    isolated_workspace.mkdir(parents=True, exist_ok=True)
    (isolated_workspace / "config.toml").write_text(f'[kb]\ndsn = "{dsn}"\npool_size = 2\n')
    with names.open_kb("team") as kb:
        assert kb._dsn == dsn  # the configured DSN, password included, for the same database
    assert pool_for(dsn).max_size == 2


@pytest.mark.parametrize(
    ("dsn", "recorded"),
    [
        (f"postgresql://team:{SECRET}@db.example:5433/kb", "postgresql://team@db.example:5433/kb"),
        ("host=/var/run/postgresql dbname=kb", None),  # a socket on this machine is not egress
        ("postgresql://postgres:@/postgres?host=/tmp/pg", None),
    ],
)
def test_the_database_a_kb_searches_is_an_egress_endpoint_without_secrets(
    dsn: str, recorded: str | None
) -> None:
    assert egress_endpoint(dsn) == recorded


def test_a_run_audits_the_searches_sent_to_a_remote_kb_database(
    small: Path, postgres_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with names.create_kb("team", engine="postgres", dsn=postgres_dsn) as kb:
        kb.add([small])
        remote = f"postgresql://team@db.example:5432/{conninfo_to_dict(postgres_dsn)['dbname']}"
        monkeypatch.setattr(kb, "database_endpoint", lambda: remote)  # as if the server were elsewhere
        log = EgressLog()
        meter_kb_embedders(kb, log)
        kb.search("abominations", 3)
        kb.search("negotiation", 3)
    (record,) = log.records
    assert (record.kind, record.requests) == ("kb-database", 2)
    assert record.endpoint == "postgresql://db.example:5432/" + str(conninfo_to_dict(postgres_dsn)["dbname"])
    assert SECRET not in json.dumps([record.endpoint, record.detail])
