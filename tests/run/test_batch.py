"""The batch's questions file and its state file, without running anything."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from deepdraft.errors import UserError
from deepdraft.run.batch import STATE_FILE, BatchLine, BatchState, LineState, read_questions
from deepdraft.settings import Settings


def test_numbers_are_ids_and_optional_fields_are_read(tmp_path: Path, corpus_dir: Path) -> None:
    questions = tmp_path / "q.jsonl"
    questions.write_text(
        '{"id": 7, "question": "  Why?  "}\n'
        f'{{"id": "b-2", "question": "How?", "kb": "{corpus_dir}", "policy": "plan-write", '
        '"depth": "quick", "language": "zh", "length": 800}\n',
        encoding="utf-8",
    )
    first, second = read_questions(questions)
    assert (first.id, first.question, first.kb, first.number) == ("7", "Why?", None, 1)
    assert (second.policy, second.depth, second.language, second.length) == ("plan-write", "quick", "zh", 800)
    settings = second.settings(Settings())
    assert settings.research.policy == "plan-write" and settings.research.length_words == 800


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ('{"id": "a", "question": "Q", "colour": "red"}', "unknown field(s) 'colour'"),
        ('{"id": "a", "question": "Q", "length": 0}', "length must be a positive whole number"),
        ('{"id": true, "question": "Q"}', "missing or bad id"),
        ('{"id": "../etc", "question": "Q"}', "missing or bad id"),
        ('["a", "Q"]', "not a JSON object"),
    ],
)
def test_each_bad_line_is_named_with_its_number(tmp_path: Path, line: str, reason: str) -> None:
    questions = tmp_path / "q.jsonl"
    questions.write_text('{"id": "ok", "question": "Fine"}\n' + line + "\n", encoding="utf-8")
    with pytest.raises(UserError, match="line 2: " + re.escape(reason)):
        read_questions(questions)


def test_an_empty_or_missing_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "empty.jsonl").write_text("\n\n", encoding="utf-8")
    with pytest.raises(UserError, match="holds no questions"):
        read_questions(tmp_path / "empty.jsonl")
    with pytest.raises(UserError, match="no questions file"):
        read_questions(tmp_path / "absent.jsonl")


def test_a_changed_question_under_a_known_id_is_refused(tmp_path: Path) -> None:
    BatchState(tmp_path, [BatchLine(1, "a", "Old question?")]).update("a", run_id="r1")
    with pytest.raises(UserError, match="line 3: id 'a' was asked 'Old question\\?'"):
        BatchState(tmp_path, [BatchLine(3, "a", "New question?")])


def test_state_keeps_every_line_and_a_dead_calls_running_line_reads_as_interrupted(tmp_path: Path) -> None:
    (tmp_path / STATE_FILE).write_text(
        json.dumps(vars(LineState("a", "Q?", run_id="r1", status="running", attempts=1))) + "\n"
        + json.dumps(vars(LineState("gone", "Removed from the file?", run_id="r2", status="finished"))) + "\n",
        encoding="utf-8",
    )  # fmt: skip
    state = BatchState(tmp_path, [BatchLine(1, "a", "Q?"), BatchLine(2, "b", "New?")])
    assert state.lines["a"].status == "interrupted" and state.lines["a"].run_id == "r1"
    assert state.lines["b"].status == "pending"
    state.update("b", status="running")
    kept = [json.loads(line)["id"] for line in (tmp_path / STATE_FILE).read_text().splitlines()]
    assert kept == ["a", "b", "gone"]  # a line no longer in the questions file is never dropped


def test_the_embedded_model_is_loaded_once_for_the_whole_batch(
    tmp_path: Path, corpus_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from deepdraft.llm.scripted import FunctionLLM
    from deepdraft.run.batch import run_batch
    from tests.support.scenario import ScenarioModel

    loaded: list[Settings] = []

    def load(settings: Settings) -> FunctionLLM:  # stands in for the embedded model (no base URL)
        loaded.append(settings)
        return FunctionLLM(ScenarioModel(expansions=0))

    monkeypatch.setattr("deepdraft.run.wiring.build_llm", load)
    monkeypatch.setattr("deepdraft.run.runner.build_llm", load)
    settings = Settings.model_validate({"output": {"verify": False, "synthesis": False}})
    lines = [BatchLine(1, "a", "How did presidents argue about tariffs?"), BatchLine(2, "b", "And duties?")]
    outcome = run_batch(lines, settings, tmp_path / "out", default_kb=str(corpus_dir))
    assert [line.status for line in outcome.lines] == ["finished", "finished"]
    assert len(loaded) == 1 and loaded[0].research.depth == "quick"


def test_a_line_left_running_after_its_run_finished_is_finished_from_the_journal(
    tmp_path: Path, corpus_dir: Path
) -> None:
    # A call killed after the run finished but before batch.jsonl said so: the next call must not
    # drive the run again (a finished run refuses to resume) nor fail the line; its report stands.
    from deepdraft.llm.scripted import FunctionLLM
    from deepdraft.run.batch import run_batch
    from deepdraft.run.runs import run_folder
    from tests.support.scenario import ScenarioModel

    # The run ends on the batch's token cap, so the next call finds that budget spent as well.
    settings = Settings.model_validate(
        {"llm": {"max_tokens_total": 3000}, "output": {"verify": False, "synthesis": False}}
    )
    lines = [BatchLine(1, "a", "How did presidents argue about tariffs?")]
    out = tmp_path / "out"
    first = run_batch(
        lines, settings, out, llm=FunctionLLM(ScenarioModel(expansions=0)), default_kb=str(corpus_dir)
    )
    [line] = first.lines
    assert line.status == "finished" and "token budget of 3,000" in (out / "a.md").read_text(encoding="utf-8")
    report = (out / "a.md").read_text(encoding="utf-8")
    row = json.loads((out / STATE_FILE).read_text(encoding="utf-8"))
    (out / STATE_FILE).write_text(json.dumps({**row, "status": "running"}) + "\n", encoding="utf-8")
    (out / "a.md").unlink()
    (run_folder(line.run_id) / "report.md").unlink()  # gone too: the journal still has the report

    again = FunctionLLM(ScenarioModel(expansions=0))
    second = run_batch(lines, settings, out, llm=again, default_kb=str(corpus_dir))
    assert [(x.status, x.run_id, x.error) for x in second.lines] == [("finished", line.run_id, "")]
    assert again.requests == []
    assert (out / "a.md").read_text(encoding="utf-8") == report
