"""Tests of settings: TOML < environment < flags, strict keys, clear errors, no leaked secrets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from deepdraft.config import ENVIRONMENT, home_dir, load_settings
from deepdraft.errors import ConfigError, UserError
from deepdraft.settings import Settings


@pytest.fixture(autouse=True)
def _empty_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets an empty workspace, so a real ~/.deepdraft/config.toml never leaks in."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("DEEPDRAFT_HOME", str(home))
    return home


def _toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


def _error(**kwargs: object) -> str:
    with pytest.raises(ConfigError) as caught:
        load_settings(**kwargs)  # type: ignore[arg-type]
    return str(caught.value)


# ---- defaults and precedence ---------------------------------------------------------------------


def test_defaults_without_any_source() -> None:
    settings = load_settings(environ={})
    assert settings == Settings()
    assert settings.llm.base_url is None
    assert settings.research.policy == "warp"
    assert settings.research.max_steps == 140
    assert settings.research.max_expansions == 12
    assert settings.research.outline_evidence == 20
    assert settings.research.node_evidence == 10
    assert settings.retrieval.chunk_overlap < settings.retrieval.chunk_tokens


def test_toml_then_environment_then_flags(tmp_path: Path) -> None:
    config = _toml(
        tmp_path,
        """
        [llm]
        base_url = "http://toml:1/v1"
        model = "toml-model"
        temperature = 0.2

        [research]
        max_steps = 10
        max_expansions = 3
        """,
    )
    environ = {"DEEPDRAFT_MODEL": "env-model", "DEEPDRAFT_MAX_STEPS": "20"}
    flags = {"research": {"max_steps": 30, "max_expansions": None}, "llm": {"temperature": None}}
    settings = load_settings(config, flags=flags, environ=environ)
    assert settings.llm.base_url == "http://toml:1/v1"  # only in TOML
    assert settings.llm.model == "env-model"  # environment beats TOML
    assert settings.research.max_steps == 30  # a flag beats both
    assert settings.research.max_expansions == 3  # a flag of None is no flag
    assert settings.llm.temperature == 0.2


def test_the_default_config_file_is_read_from_the_workspace(_empty_home: Path) -> None:
    (_empty_home / "config.toml").write_text('[llm]\nmodel = "from-home"\n', encoding="utf-8")
    assert home_dir() == _empty_home
    assert load_settings(environ={}).llm.model == "from-home"


def test_environment_variables_are_a_fixed_list() -> None:
    environ = {
        "OPENAI_BASE_URL": "http://openai-style:8000/v1/",
        "OPENAI_API_KEY": "sk-openai",
        "DEEPDRAFT_POLICY": "plan-write",
        "DEEPDRAFT_MAX_EXPANSIONS": "4",
        "DEEPDRAFT_HOME": "/elsewhere",  # not a setting: never an unknown-key error
        "DEEPDRAFT_TEMPERATURE": "1.9",  # not in the list: ignored
    }
    settings = load_settings(environ=environ)
    assert settings.llm.base_url == "http://openai-style:8000/v1"
    assert settings.llm.api_key == "sk-openai"
    assert settings.research.policy == "plan-write"
    assert settings.research.max_expansions == 4
    assert settings.llm.temperature == 0.7
    assert {variable for variable, _, _ in ENVIRONMENT} >= {"OPENAI_BASE_URL", "OPENAI_API_KEY"}


def test_deepdraft_variables_beat_the_openai_ones() -> None:
    environ = {
        "OPENAI_BASE_URL": "http://a:1/v1",
        "DEEPDRAFT_BASE_URL": "http://b:2/v1",
        "OPENAI_API_KEY": "sk-a",
        "DEEPDRAFT_API_KEY": "sk-b",
    }
    settings = load_settings(environ=environ)
    assert (settings.llm.base_url, settings.llm.api_key) == ("http://b:2/v1", "sk-b")


def test_empty_environment_variables_are_ignored(tmp_path: Path) -> None:
    config = _toml(tmp_path, '[llm]\nmodel = "toml-model"\n')
    settings = load_settings(config, environ={"DEEPDRAFT_MODEL": "", "DEEPDRAFT_MAX_STEPS": ""})
    assert settings.llm.model == "toml-model"
    assert settings.research.max_steps == 140


def test_an_api_key_alone_never_selects_a_hosted_service() -> None:
    settings = load_settings(environ={"OPENAI_API_KEY": "sk-secret"})
    assert settings.llm.base_url is None


def test_process_environment_is_used_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEEPDRAFT_MODEL", "from-process")
    assert load_settings().llm.model == "from-process"


# ---- errors --------------------------------------------------------------------------------------


def test_unknown_key_in_toml_is_an_error(tmp_path: Path) -> None:
    message = _error(config_file=_toml(tmp_path, '[llm]\nmodle = "x"\n'), environ={})
    assert "llm.modle: unknown setting" in message
    assert message.startswith("invalid settings:")


def test_unknown_section_in_toml_is_an_error(tmp_path: Path) -> None:
    message = _error(config_file=_toml(tmp_path, "[reserch]\nmax_steps = 3\n"), environ={})
    assert "reserch: unknown setting" in message


def test_top_level_value_must_be_a_table(tmp_path: Path) -> None:
    config = _toml(tmp_path, "max_steps = 3\n")
    message = _error(config_file=config, environ={})
    assert "`max_steps` must be a table" in message
    assert str(config) in message


def test_unknown_flag_is_an_error() -> None:
    assert "research.max_step: unknown setting" in _error(flags={"research": {"max_step": 3}}, environ={})


def test_invalid_toml_is_a_config_error(tmp_path: Path) -> None:
    config = _toml(tmp_path, "[llm\nmodel = \n")
    message = _error(config_file=config, environ={})
    assert "not valid TOML" in message
    assert str(config) in message


def test_non_utf8_config_is_a_config_error(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_bytes(b'[llm]\nmodel = "\xff\xfe"\n')
    assert "not valid TOML" in _error(config_file=config, environ={})


def test_a_missing_explicit_config_file_is_an_error(tmp_path: Path) -> None:
    assert "config file not found" in _error(config_file=tmp_path / "nope.toml", environ={})


@pytest.mark.parametrize("url", ["ftp://host/v1", "localhost:8000/v1", "file:///etc/passwd", "HTTP//x"])
def test_base_url_must_be_http(url: str) -> None:
    message = _error(flags={"llm": {"base_url": url}}, environ={})
    assert "llm.base_url" in message
    assert "http:// or https://" in message


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://localhost:8000/v1/", "http://localhost:8000/v1"),
        ("https://api.example.org/v1", "https://api.example.org/v1"),
        ("", None),
    ],
)
def test_base_url_is_normalised(url: str, expected: str | None) -> None:
    assert load_settings(flags={"llm": {"base_url": url}}, environ={}).llm.base_url == expected


@pytest.mark.parametrize(
    ("retrieval", "ok"),
    [
        ({"chunk_tokens": 100, "chunk_overlap": 99}, True),
        ({"chunk_tokens": 100, "chunk_overlap": 0}, True),
        ({"chunk_tokens": 100, "chunk_overlap": 100}, False),
        ({"chunk_tokens": 100, "chunk_overlap": 150}, False),
        ({"chunk_tokens": 32}, False),  # the default overlap (40) is not smaller
        ({"chunk_overlap": 300}, False),  # against the default chunk size (220)
    ],
)
def test_chunk_overlap_must_be_smaller_than_chunk_tokens(retrieval: dict[str, int], ok: bool) -> None:
    if ok:
        settings = load_settings(flags={"retrieval": retrieval}, environ={})
        assert settings.retrieval.chunk_overlap < settings.retrieval.chunk_tokens
    else:
        message = _error(flags={"retrieval": retrieval}, environ={})
        assert "must be smaller than chunk_tokens" in message


@pytest.mark.parametrize(
    ("flags", "where"),
    [
        ({"llm": {"temperature": 3.0}}, "llm.temperature"),
        ({"llm": {"top_p": 0}}, "llm.top_p"),
        ({"llm": {"context_window": 100}}, "llm.context_window"),
        ({"research": {"max_steps": 0}}, "research.max_steps"),
        ({"research": {"policy": "magic"}}, "research.policy"),
        ({"research": {"draft_budget_tokens": "lots"}}, "research.draft_budget_tokens"),
    ],
)
def test_out_of_range_values_name_the_setting(flags: dict[str, dict[str, object]], where: str) -> None:
    assert where in _error(flags=flags, environ={})


def test_environment_values_are_validated_too() -> None:
    assert load_settings(environ={"DEEPDRAFT_MAX_STEPS": "50"}).research.max_steps == 50
    assert "research.max_steps" in _error(environ={"DEEPDRAFT_MAX_STEPS": "many"})
    assert "llm.base_url" in _error(environ={"OPENAI_BASE_URL": "localhost:8000"})


def test_several_problems_are_reported_together() -> None:
    message = _error(flags={"llm": {"temperature": 9.0, "colour": "red"}}, environ={})
    assert "llm.temperature" in message and "llm.colour: unknown setting" in message


def test_config_error_is_a_user_error() -> None:
    with pytest.raises(UserError) as caught:
        load_settings(flags={"llm": {"nope": 1}}, environ={})
    assert caught.value.exit_code == 2


def test_assignment_is_validated() -> None:
    settings = Settings()
    with pytest.raises(ValidationError):
        settings.research.max_steps = 0
    with pytest.raises(ValidationError):
        settings.llm.base_url = "gopher://x"
    with pytest.raises(ValidationError):
        settings.retrieval.chunk_tokens = 33  # below the current overlap of 40


# ---- what is recorded ----------------------------------------------------------------------------


def test_public_dict_hides_the_api_key() -> None:
    settings = load_settings(environ={"OPENAI_API_KEY": "sk-very-secret", "OPENAI_BASE_URL": "http://h:1/v1"})
    public = settings.public_dict()
    assert public["llm"]["api_key"] == "***"
    assert "sk-very-secret" not in json.dumps(public)
    assert public["llm"]["base_url"] == "http://h:1/v1"
    assert public["research"]["max_steps"] == 140
    assert settings.llm.api_key == "sk-very-secret"  # the settings themselves keep it


def test_public_dict_without_a_key() -> None:
    public = Settings().public_dict()
    assert public["llm"]["api_key"] is None
    assert public["embedding"]["api_key"] is None
    assert set(public) == {"llm", "research", "retrieval", "embedding", "web", "output", "kb"}
    json.dumps(public)  # serialisable as it is


def test_public_dict_hides_the_embedding_key_and_serialises_the_template(tmp_path: Path) -> None:
    settings = Settings.model_validate(
        {"embedding": {"api_key": "sk-embed"}, "output": {"template": str(tmp_path / "t.md.j2")}}
    )
    public = settings.public_dict()
    assert public["embedding"]["api_key"] == "***"
    assert public["output"]["template"] == str(tmp_path / "t.md.j2")
    assert "sk-embed" not in json.dumps(public)


def test_new_sections_validate_urls_and_formats() -> None:
    with pytest.raises(ConfigError, match=r"embedding\.base_url"):
        load_settings(flags={"embedding": {"base_url": "localhost:8080"}}, environ={})
    with pytest.raises(ConfigError, match=r"web\.searxng_url"):
        load_settings(flags={"web": {"searxng_url": "ftp://x"}}, environ={})
    with pytest.raises(ConfigError, match=r"output\.formats"):
        load_settings(flags={"output": {"formats": ["odt"]}}, environ={})
    settings = load_settings(
        flags={"web": {"searxng_url": "http://localhost:8888/"}}, environ={"DEEPDRAFT_EMBED_MODEL": "bge"}
    )
    assert settings.web.searxng_url == "http://localhost:8888"
    assert settings.embedding.model == "bge"


def test_home_dir_default_and_tilde(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("DEEPDRAFT_HOME")
    assert home_dir() == tmp_path / ".deepdraft"
    monkeypatch.setenv("DEEPDRAFT_HOME", "~/work")
    assert home_dir() == tmp_path / "work"


def test_a_default_depth_applies_only_where_nothing_was_chosen() -> None:
    quick = load_settings(environ={}, flags={"research": {"max_steps": 50}}).with_default_depth("quick")
    assert quick.research.depth == "quick" and quick.research.max_steps == 50  # explicit value kept
    assert quick.research.max_expansions == 2 and quick.llm.max_tokens == 480
    assert quick.output.verify_policy == "recite" and quick.output.judge_floor == 0.5
    assert load_settings(environ={}).output.judge_floor == 0.0  # a served model judges alone
    chosen = load_settings(environ={}, flags={"research": {"depth": "deep"}})
    assert chosen.with_default_depth("quick") == chosen
