"""`deepdraft show --versions`, `diff`, `restore` and `export --version` on a scripted run's folder.

The run is finished in-process (a scripted model, an in-memory retriever); every command then runs
as a real `deepdraft` process on the same workspace, as a user would type it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deepdraft.config import load_settings
from deepdraft.llm.scripted import FunctionLLM
from deepdraft.run import runner
from deepdraft.run.runs import run_folder
from tests.cli.test_cli import assert_one_line_error, cli
from tests.support.scenario import SOTU_LIKE, ScenarioModel, WordOverlapRetriever

RUN = "20260102-090000-abcdef"


@pytest.fixture
def folder(isolated_workspace: Path) -> Path:
    settings = load_settings(flags={"output": {"verify": False, "synthesis": False}})
    runner.start("How did presidents argue about tariffs?", settings, llm=FunctionLLM(ScenarioModel(expansions=1)),
                 retriever=WordOverlapRetriever(SOTU_LIKE), run_id=RUN)  # fmt: skip
    return run_folder(RUN)


def ok(*args: str) -> str:
    result = cli(*args)
    assert result.returncode == 0, result.stderr
    return result.stdout


def listed(run: str) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = json.loads(ok("show", run, "--versions", "--json"))["versions"]
    return rows


def test_versions_listed_compared_exported_and_restored(folder: Path, tmp_path: Path) -> None:
    [first] = listed(RUN[:12])  # a unique prefix names the run too
    assert (first["version"], first["kind"], first["changed"], first["current"]) == (
        1,
        "research",
        "first version",
        True,
    )

    # Another references style rewrites every citation: a version of its own, with what changed.
    assert "(version 2)" in ok("export", RUN, "--references-style", "author-date")
    rows = listed(RUN)
    assert [(r["version"], r["kind"]) for r in rows] == [(1, "research"), (2, "export")]
    assert "sections rewritten" in str(rows[1]["changed"]) and "author-date" in str(rows[1]["note"])
    plain = ok("show", RUN, "--versions")
    assert "  1  " in plain and "  2* " in plain and "export" in plain

    diff = ok("diff", RUN).splitlines()  # the previous version against the current one
    assert diff[0].startswith("version 1 (research) → version 2 (export): ")
    assert any(line.startswith("~ 1 Part early (rewritten)") for line in diff)
    assert any(line.startswith("    -") and "[1" in line for line in diff)  # the numbered mark went
    assert ok("diff", RUN, "2", "2").splitlines() == ["version 2 (export) → version 2 (export): no change"]

    out = tmp_path / "v1.md"
    assert f"md of version 1 written: {out}" in ok("export", RUN, "--version", "1", "--output", str(out))
    assert out.read_bytes() == (folder / "report.v1.md").read_bytes()
    assert str(folder / "report.v1.md") in ok("export", RUN, "--version", "1")

    assert "version 1 restored as version 3" in ok("restore", RUN, "1")
    assert (folder / "report.md").read_bytes() == out.read_bytes()
    assert ok("diff", RUN, "1", "3").endswith("no change\n")
    assert [r["kind"] for r in listed(RUN)] == ["research", "export", "restore"]
    assert "already the current report" in ok("restore", RUN, "3")


def test_a_hand_edit_is_refused_named_and_kept_with_force(folder: Path) -> None:
    report = folder / "report.md"
    report.write_text(report.read_text(encoding="utf-8").replace("## 2 Part middle\n\n", "## 2 Part middle\n\nMine. "),
                      encoding="utf-8")  # fmt: skip
    assert "report.md has changes no version holds yet (edited by hand: 2 Part middle)" in ok(
        "show", RUN, "--versions"
    )
    refused = cli("export", RUN)
    assert_one_line_error(refused, 2, "edited by hand in 2 Part middle", "--force")
    assert "Mine." in report.read_text(encoding="utf-8")
    assert "version 1 is already" not in ok("restore", RUN, "1", "--force")
    rows = listed(RUN)
    assert [(r["kind"], r["note"]) for r in rows[1:]] == [
        ("hand-edit", "edited by hand: 2 Part middle"),
        ("restore", "version 1 restored"),
    ]
    assert "Mine." in Path(str(rows[1]["file"])).read_text(encoding="utf-8")
    assert "Mine." not in report.read_text(encoding="utf-8")

    report.write_text(
        report.read_text(encoding="utf-8").replace("## 3 Part late", "## 3 Later"), encoding="utf-8"
    )
    assert_one_line_error(cli("restore", RUN, "2"), 2, "headings no longer match version 3", "--force")


@pytest.mark.parametrize(
    ("args", "phrases"),
    [
        (("diff", RUN, "0"), ("there is no version 0",)),
        (("diff", RUN, "two"), ("'two' is not a version number",)),
        (("diff", RUN, "7", "1"), ("has no version 7", "its versions are 1")),
        (("diff", RUN), ("has only version 1",)),
        (("restore", RUN, "5"), ("has no version 5",)),
        (("restore", RUN, "v0"), ("there is no version 0",)),
        (("export", RUN, "--version", "1", "--format", "html"), ("--format md only",)),
        (("export", RUN, "--version", "x"), ("'x' is not a version number",)),
        (("show", RUN, "--versions", "--egress"), ("one at a time",)),
        (("restore", "20990101-000000-ffffff", "1"), ("no run with id",)),
        (("diff", "20990101-000000-ffffff"), ("no run with id",)),
    ],
)
def test_bad_input_gets_one_line_errors(
    folder: Path, args: tuple[str, ...], phrases: tuple[str, ...]
) -> None:
    assert_one_line_error(cli(*args), 2, *phrases)
