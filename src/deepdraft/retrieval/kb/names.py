"""Named knowledge bases: a name maps to a KB folder under ``DEEPDRAFT_HOME/kbs/<name>/``.

What a KB folder holds and how it changes is the business of the other modules of this package
(`store` above all); this module only knows
names, where they live, and what to tell a user who names a KB that is not there.

Trade-offs:

* A knowledge base *exists* when its ``kb.sqlite`` exists. The store creates that file whole (written
  under a temporary name and renamed), so a half-created KB is never mistaken for one, and no
  separate registry can drift out of step with the folders.
* Names are restricted to ``[A-Za-z0-9][A-Za-z0-9_.-]{0,63}``: they become folder names, so no path
  separators, no leading dot (hidden folders, ``..``) and a length every filesystem accepts. A name
  is checked before any path is built from it.
* Deleting a KB first takes its write lock (so an ingestion in progress is not cut off), then renames
  the folder to a hidden name and deletes that: a crash midway never leaves half a KB under its name,
  and processes still searching the old files keep their open files.
* A KB on the Postgres engine is named the same way: its folder holds only ``postgres.json``, the
  link to its database (the DSN without password: libpq takes that from PGPASSWORD or ~/.pgpass,
  or from a DSN this process was given, see `use_dsn`). So every caller — research, serve, batch,
  MCP — opens either engine by name, and `list_kbs` shows both.
* Every function takes an optional `home` so that callers holding a workspace path (tests, setup) do
  not have to go through the environment; by default it is `config.home_dir()`.
"""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Unpack

from deepdraft.config import home_dir
from deepdraft.errors import KnowledgeBaseError
from deepdraft.retrieval.kb.lock import write_lock
from deepdraft.retrieval.kb.schema import DB_NAME
from deepdraft.retrieval.kb.store import KnowledgeBase, SearchOptions
from deepdraft.settings import RetrievalSettings

if TYPE_CHECKING:  # the Postgres engine is imported only when a KB on it is opened
    from deepdraft.retrieval.kb.postgres.store import PostgresKnowledgeBase

    AnyKB = KnowledgeBase | PostgresKnowledgeBase
    """A KB on either engine: the same public methods (the `Retriever` port, add, remove, info, ...)."""

DEMO_KB = "demo"
"""The bundled State of the Union corpus, created by ``deepdraft setup``."""
DEFAULT_KB = "default"
"""The KB used when none is named, if it has documents."""

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_LEGACY_MANIFEST = Path("index") / "manifest.json"
POSTGRES_LINK = "postgres.json"
"""In a KB folder: the KB lives in Postgres, at the DSN (without password) this file names."""
_DSNS: dict[str, str] = {}


def use_dsn(dsn: str) -> None:
    """Let this process open the Postgres KBs linked to `dsn`'s database with `dsn` (password included)."""
    from deepdraft.retrieval.kb.postgres.database import safe_dsn

    _DSNS[safe_dsn(dsn)] = dsn


def _link(folder: Path) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads((folder / POSTGRES_LINK).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise KnowledgeBaseError(
            f"the Postgres link {folder / POSTGRES_LINK} cannot be read ({exc})"
        ) from None
    return data


def _link_dsn(link: dict[str, Any]) -> str:
    """The DSN to open a linked KB with: the one this process was given for that database, else the
    workspace's ``[kb] dsn`` when it names the same database (it may carry the password), else the
    link's own (libpq then finds the password in PGPASSWORD or ~/.pgpass)."""
    from deepdraft.retrieval.kb.postgres.database import safe_dsn, set_pool_size

    dsn = str(link["dsn"])
    shown = safe_dsn(dsn)
    if shown not in _DSNS:
        from deepdraft.config import load_settings
        from deepdraft.errors import ConfigError

        try:
            workspace = load_settings().kb
        except ConfigError:
            workspace = None
        if workspace is not None:
            set_pool_size(workspace.pool_size)
            if workspace.dsn and safe_dsn(workspace.dsn) == shown:
                _DSNS[shown] = workspace.dsn
    return _DSNS.get(shown, dsn)


def _exists(folder: Path) -> bool:
    return (folder / DB_NAME).is_file() or (folder / POSTGRES_LINK).is_file()


def kb_engine(name: str, home: Path | None = None) -> Literal["embedded", "postgres"]:
    return "postgres" if (kb_dir(name, home) / POSTGRES_LINK).is_file() else "embedded"


"""Where KBs of deepdraft before the `retrieval.kb` format kept their index: only ever rebuilt, not read."""


def validate_kb_name(name: str) -> str:
    """Return `name` if it is a valid KB name, else raise `KnowledgeBaseError` saying what is allowed."""
    if not _NAME.fullmatch(name):
        raise KnowledgeBaseError(
            f"invalid knowledge base name {name!r}: use 1-64 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit"
        )
    return name


def is_kb_name(name: str) -> bool:
    return _NAME.fullmatch(name) is not None


def kb_root(home: Path | None = None) -> Path:
    """The folder that holds every KB of the workspace."""
    return (home if home is not None else home_dir()) / "kbs"


def kb_dir(name: str, home: Path | None = None) -> Path:
    """The folder of KB `name` (whether or not it exists)."""
    return kb_root(home) / validate_kb_name(name)


def kb_exists(name: str, home: Path | None = None) -> bool:
    """True when KB `name` has been created (it may still hold no documents)."""
    return _exists(kb_dir(name, home))


def kb_has_documents(name: str, home: Path | None = None) -> bool:
    """True when KB `name` holds at least one document (a damaged or missing KB holds none)."""
    folder = kb_dir(name, home)
    if (folder / POSTGRES_LINK).is_file():
        try:
            with open_kb(name, home) as kb:
                return kb.document_count() > 0
        except KnowledgeBaseError:
            return False
    database = folder / DB_NAME
    if not database.is_file():
        return False
    try:
        db = sqlite3.connect(f"{database.absolute().as_uri()}?mode=ro", uri=True)
        try:
            return db.execute("SELECT 1 FROM documents LIMIT 1").fetchone() is not None
        finally:
            db.close()
    except sqlite3.Error:
        return False


def list_kbs(home: Path | None = None) -> list[str]:
    """The names of the KBs of the workspace, sorted."""
    root = kb_root(home)
    if not root.is_dir():
        return []
    return sorted(entry.name for entry in root.iterdir() if _NAME.fullmatch(entry.name) and _exists(entry))


def open_kb(
    name: str,
    home: Path | None = None,
    **options: Unpack[SearchOptions],
) -> AnyKB:
    """Open KB `name` for searching (`options` as `KnowledgeBase.open` takes them);
    `KnowledgeBaseError` with what to do when it is not there."""
    folder = kb_dir(name, home)
    link = _link(folder)
    if link is not None:
        from deepdraft.retrieval.kb.postgres.store import PostgresKnowledgeBase

        return PostgresKnowledgeBase.open(_link_dsn(link), name, label=name, **options)
    if not (folder / DB_NAME).is_file():
        raise KnowledgeBaseError(_missing_message(name, home))
    return KnowledgeBase.open(folder, label=name, **options)


def create_kb(
    name: str,
    settings: RetrievalSettings | None = None,
    home: Path | None = None,
    *,
    engine: Literal["embedded", "postgres"] | None = None,
    dsn: str | None = None,
    **options: Unpack[SearchOptions],
) -> AnyKB:
    """Open KB `name`, creating it empty (with `settings`' chunking) if it does not exist yet.

    `engine` (default: "embedded") and `dsn` say where a new KB lives; naming another engine than an
    existing KB's is an error (`kb copy` moves a KB between engines).

    A folder left by an older deepdraft (an ``index/`` folder, no database) is replaced: those indexes
    kept no record of their sources, so there is nothing to migrate, only to add again.
    """
    folder = kb_dir(name, home)
    if engine is not None and _exists(folder) and kb_engine(name, home) != engine:
        raise KnowledgeBaseError(
            f"knowledge base {name!r} lives on the {kb_engine(name, home)} engine, not {engine}; "
            f"move it with: deepdraft kb copy {name} --to {engine}"
        )
    if engine == "postgres" or (folder / POSTGRES_LINK).is_file():
        return _create_postgres(name, folder, settings, dsn, options)
    if (folder / _LEGACY_MANIFEST).is_file() and not (folder / DB_NAME).is_file():
        shutil.rmtree(folder / "index", ignore_errors=True)
    return KnowledgeBase.create(folder, settings, label=name, **options)


def _create_postgres(
    name: str, folder: Path, settings: RetrievalSettings | None, dsn: str | None, options: Any
) -> PostgresKnowledgeBase:
    from deepdraft.retrieval.kb.postgres.database import check_dsn, without_password
    from deepdraft.retrieval.kb.postgres.store import PostgresKnowledgeBase

    link = _link(folder)
    if link is not None and dsn is None:
        dsn = _link_dsn(link)
    if dsn is None:
        raise KnowledgeBaseError("the postgres engine needs a DSN: --dsn postgresql://user@host:port/dbname")
    use_dsn(check_dsn(dsn))
    kb = PostgresKnowledgeBase.create(dsn, name, settings, label=name, **options)
    if link is None:
        folder.mkdir(parents=True, exist_ok=True)
        temporary = folder / f".{POSTGRES_LINK}.{uuid.uuid4().hex[:8]}"
        temporary.write_text(json.dumps({"engine": "postgres", "dsn": without_password(dsn)}) + "\n")
        temporary.replace(folder / POSTGRES_LINK)
    return kb


def remove_kb(name: str, home: Path | None = None, *, wait: bool = False) -> None:
    """Delete KB `name` and everything in its folder (for a Postgres KB: its schema, then its link)."""
    folder = kb_dir(name, home)
    if not folder.is_dir():
        raise KnowledgeBaseError(_missing_message(name, home))
    link = _link(folder)
    if link is not None:
        from deepdraft.retrieval.kb.postgres.database import connection, drop_schema

        with connection(_link_dsn(link)) as conn:
            drop_schema(conn, name)
        shutil.rmtree(folder, ignore_errors=True)
        return
    with write_lock(folder, name, wait=wait):
        trash = folder.with_name(f".deleting-{name}-{uuid.uuid4().hex[:8]}")
        folder.rename(trash)
    shutil.rmtree(trash, ignore_errors=True)


def _missing_message(name: str, home: Path | None) -> str:
    folder = kb_dir(name, home)
    if name == DEMO_KB:
        return "the demo knowledge base is not set up yet; run: deepdraft setup"
    if (folder / _LEGACY_MANIFEST).is_file():
        return (
            f"knowledge base {name!r} was built by an older deepdraft and must be built again: "
            f"deepdraft kb add PATH... --kb {name}"
        )
    known = list_kbs(home)
    have = f"existing: {', '.join(known)}" if known else "none exist yet"
    return (
        f"no knowledge base named {name!r} in {kb_root(home)} ({have}); "
        f"create it with: deepdraft kb add PATH... --kb {name}"
    )
