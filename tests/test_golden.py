"""Golden tests: what the code did when the fixtures in tests/golden/ were made, it must still do.

* The exact request sequence (messages, reply shape, sampling parameters, tags, in order) of
  scripted WARP runs at the standard and quick depths and of a plan-write run over a real KB, and
  the HTTP bodies an OpenAI-compatible endpoint receives: the protocol stays byte-identical.
* A journal written by that code (a finished and an interrupted run): `runs`, `show`, `resume`
  and `export` still read it and print the same; `resume` finishes the interrupted run.
* A KB folder built by that code and a config.toml with every section: they still open, load and
  search the same.

The fixtures are rebuilt only on purpose, by `python -m tests.golden.regenerate` (see there).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.golden import scenarios

EXPECTED = scenarios.EXPECTED


@pytest.fixture
def home(isolated_workspace: Path) -> Path:
    scenarios.install_home(isolated_workspace)
    return isolated_workspace


def expected_text(name: str) -> str:
    return (EXPECTED / name).read_text(encoding="utf-8")


@pytest.mark.parametrize("name", list(scenarios.RUNS))
def test_request_sequence_is_unchanged(home: Path, name: str) -> None:
    recorded = scenarios.dump(scenarios.record_requests(name))
    expected = expected_text(f"requests-{name}.json")
    if recorded != expected:  # name the first request that differs, not a 100 kB diff
        got, want = json.loads(recorded), json.loads(expected)
        first = next((i for i, (g, w) in enumerate(zip(got, want, strict=False)) if g != w), None)
        assert first is None, f"request {first} differs:\n{scenarios.dump(got[first])}"
        assert len(got) == len(want), f"{len(got)} requests, {len(want)} expected"
    assert recorded == expected


def test_http_bodies_are_unchanged(home: Path) -> None:
    assert scenarios.dump(scenarios.record_http_bodies()) == expected_text("http-warp-standard.json")


def test_commands_read_the_journal_as_before(home: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    printed = scenarios.run_cli(scenarios.COMMANDS, home, out)
    assert list(printed) == [name for name, _ in scenarios.COMMANDS]
    for name, text in printed.items():
        assert text == expected_text(f"cli-{name}.txt"), name
    exported = sorted(path.name for path in out.iterdir())
    assert exported == ["report.json", "report.md"]
    for file in exported:
        assert (out / file).read_bytes() == (EXPECTED / f"export-{file}").read_bytes(), file


def test_resume_finishes_the_interrupted_run(home: Path) -> None:
    assert scenarios.resume_interrupted() == expected_text("resumed-report.md")


def test_kb_and_config_open_and_search_as_before(home: Path) -> None:
    found, expected = json.loads(scenarios.search_hits()), json.loads(expected_text("search-hits.json"))
    # Settings added since the fixture was made take their defaults; every setting that existed
    # then must still load to the value it had.
    found["settings"] = {
        section: {key: found["settings"][section][key] for key in values}
        for section, values in expected["settings"].items()
    }
    assert found == expected
