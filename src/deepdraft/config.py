"""Where settings come from: `config.toml`, then the environment, then flags; and the workspace.

Each later source overrides the earlier ones key by key, and the merged tree is validated as
`deepdraft.settings.Settings`. The environment variables are a short, fixed list — including the
conventional `OPENAI_BASE_URL` / `OPENAI_API_KEY` — rather than a prefix scheme, so that a stray
`DEEPDRAFT_*` variable (such as `DEEPDRAFT_HOME`) is never mistaken for a setting.

The workspace (`home_dir`) is the folder holding journals, knowledge bases, indexes and
`config.toml`; `DEEPDRAFT_HOME` moves it.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from deepdraft.errors import ConfigError
from deepdraft.settings import Settings, fill_preset

# (environment variable, section, key) — the complete list, documented in the README.
ENVIRONMENT: tuple[tuple[str, str, str], ...] = (
    ("OPENAI_BASE_URL", "llm", "base_url"),
    ("DEEPDRAFT_BASE_URL", "llm", "base_url"),
    ("DEEPDRAFT_MODEL", "llm", "model"),
    ("OPENAI_API_KEY", "llm", "api_key"),
    ("DEEPDRAFT_API_KEY", "llm", "api_key"),
    ("DEEPDRAFT_POLICY", "research", "policy"),
    ("DEEPDRAFT_DEPTH", "research", "depth"),
    ("DEEPDRAFT_MAX_STEPS", "research", "max_steps"),
    ("DEEPDRAFT_MAX_EXPANSIONS", "research", "max_expansions"),
    ("DEEPDRAFT_EMBED_BASE_URL", "embedding", "base_url"),
    ("DEEPDRAFT_EMBED_MODEL", "embedding", "model"),
    ("DEEPDRAFT_EMBED_API_KEY", "embedding", "api_key"),
    ("SEARXNG_URL", "web", "searxng_url"),
    ("DEEPDRAFT_KB_DSN", "kb", "dsn"),
)


def home_dir() -> Path:
    """The workspace: journals, indexes, config. `DEEPDRAFT_HOME` moves it (tests use a tmp dir)."""
    return Path(os.environ.get("DEEPDRAFT_HOME") or Path.home() / ".deepdraft").expanduser()


def load_settings(
    config_file: Path | None = None,
    flags: Mapping[str, Mapping[str, Any]] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Merge TOML < environment < flags and validate. `flags` values of None are ignored."""
    environ = os.environ if environ is None else environ
    merged: dict[str, dict[str, Any]] = {}

    path = config_file if config_file is not None else home_dir() / "config.toml"
    if config_file is not None and not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    if path.is_file():
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: not valid TOML ({exc})") from exc
        for section, values in data.items():
            if not isinstance(values, dict):
                raise ConfigError(f"{path}: `{section}` must be a table like [{section}]")
            merged.setdefault(section, {}).update(values)

    for variable, section, key in ENVIRONMENT:
        if environ.get(variable):
            merged.setdefault(section, {})[key] = environ[variable]

    for section, values in (flags or {}).items():
        for key, value in values.items():
            if value is not None:
                merged.setdefault(section, {})[key] = value

    fill_preset(merged, merged.get("research", {}).get("depth", "standard"))

    try:
        return Settings.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from exc


def _describe(exc: ValidationError) -> str:
    problems = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"])
        message = "unknown setting" if error["type"] == "extra_forbidden" else error["msg"]
        problems.append(f"{where}: {message}")
    return "invalid settings: " + "; ".join(problems)
