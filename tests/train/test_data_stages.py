"""Queries, forced deepening, collection, pruning and export, on real DRB rows and a real KB on disk."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deepdraft.errors import LLMServerError
from deepdraft.eval.judge import Judge
from deepdraft.llm.scripted import FunctionLLM
from deepdraft.ports import ChatRequest
from deepdraft.run import runner
from deepdraft.run.runs import Runs
from deepdraft.settings import Settings
from deepdraft.train.collect import collect, collection_settings, decision_points, read_collection
from deepdraft.train.dataset import export, load_samples, parse_ratios
from deepdraft.train.prune import prune
from deepdraft.train.queries import QuerySetError, generate_checklist, load_queries, reverse_construct
from deepdraft.train.rewards import ChecklistScorer
from tests.train.support import DATA, ForcedTeacher, scripted_judge, write_kb


def small(settings: Settings) -> Settings:
    research = settings.research.model_copy(update={"node_evidence": 3, "outline_evidence": 4})
    return settings.model_copy(update={"research": research})


@pytest.fixture
def collected(tmp_path: Path) -> Path:
    folder = tmp_path / "collection"
    queries = load_queries(DATA / "criteria.jsonl", require_checklist=True)
    teacher = FunctionLLM(ForcedTeacher(expansions=1, topic="history"))
    settings = small(collection_settings(Settings(), 3))
    outcomes = collect(queries, settings, folder, llm=teacher, kb=str(write_kb(tmp_path / "kb")), workers=2)
    assert [o.status for o in outcomes] == ["finished"] * 3
    return folder


def test_real_drb_rows_load_as_a_query_set_with_normalised_checklists() -> None:
    queries = load_queries(DATA / "criteria.jsonl", require_checklist=True)
    assert [q.id for q in queries] == ["51", "52", "53"]
    for query in queries:
        assert query.checklist is not None
        assert sum(query.checklist.dimension_weights.values()) == pytest.approx(1)
        for dimension in query.checklist.dimension_weights:
            assert sum(c.weight for c in query.checklist.in_dimension(dimension)) == pytest.approx(1)


def test_query_set_errors_say_what_to_do(tmp_path: Path) -> None:
    plain = tmp_path / "plain.txt"
    plain.write_text("What drives sovereign fund returns?\n", encoding="utf-8")
    with pytest.raises(QuerySetError, match="make-queries --checklists"):
        load_queries(plain, require_checklist=True)
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"prompt": "x", "criterions": {}, "dimension_weight": {}}\n', encoding="utf-8")
    with pytest.raises(QuerySetError, match=r"broken\.jsonl:1"):
        load_queries(broken)
    with pytest.raises(QuerySetError, match="not found"):
        load_queries(tmp_path / "missing.jsonl")


def test_make_queries_validates_what_the_llm_returns() -> None:
    def respond(request: ChatRequest) -> str:
        prompt = request.messages[-1].content
        if "resembled a survey paper" in prompt:
            # One request copies the title and must be dropped; the other is kept.
            return json.dumps(
                {
                    "thinking": "t",
                    "instructions": [
                        "A survey of graph neural networks",
                        "Compare how message passing models learn on molecules and social graphs.",
                    ],
                }
            )
        criteria = {
            d: [{"criterion": f"{d} ok", "explanation": "e", "weight": 2}]
            for d in ("comprehensiveness", "insight", "instruction_following", "readability")
        }
        return json.dumps(
            {
                "dimension_weight": {
                    "comprehensiveness": 2,
                    "insight": 1,
                    "instruction_following": 1,
                    "readability": 0,
                },
                "criterions": criteria,
            }
        )

    judge = Judge(FunctionLLM(respond))
    queries = reverse_construct(judge, ["A Survey of Graph Neural Networks"], per_title=2)
    assert [q.prompt for q in queries] == [
        "Compare how message passing models learn on molecules and social graphs."
    ]
    with_checklist = generate_checklist(judge, queries[0])
    assert not isinstance(with_checklist, str)
    assert with_checklist.checklist is not None
    assert with_checklist.checklist.dimension_weights == {
        "comprehensiveness": 0.5,
        "insight": 0.25,
        "instruction_following": 0.25,
        "readability": 0.0,
    }
    assert all(c.weight == 1.0 for c in with_checklist.checklist.criteria)


def test_forced_deepening_refuses_stopping_without_spending_the_budget(
    tmp_path: Path, corpus_dir: Path
) -> None:
    settings = small(collection_settings(Settings(), 2))
    report = runner.start(
        "How were tariffs argued over?",
        settings,
        kb=str(corpus_dir),
        llm=FunctionLLM(ForcedTeacher(expansions=0)),
    )
    record, state = runner.load_run(report.run_id)
    assert state is not None
    with runner.open_journal() as journal:
        steps = journal.steps(record.id)
    refused = [s for s in steps if s.action == "extend-plan" and not s.valid]
    assert refused and all("do not stop yet" in (s.reason or "") for s in refused)
    # Two forced splits, then the free decision (the scenario stops): three drafts, each decided.
    assert state.expansions == 2
    assert state.stop_reason == "the model judged the report complete"


def test_the_teacher_answers_every_action_itself_even_with_the_quick_preset() -> None:
    from deepdraft.config import load_settings
    from deepdraft.train.dataset import not_the_models

    quick = load_settings(flags={"research": {"depth": "quick"}})
    assert quick.research.plan_searches and quick.research.write_by_passage
    collecting = collection_settings(quick, 2).research
    assert not collecting.plan_searches and not collecting.write_by_passage
    # A journal whose searches or writes deepdraft put together gives no samples of them.
    assert not_the_models("search", quick.research) and not_the_models("write", quick.research)
    assert not not_the_models("extend-plan", quick.research)
    assert not not_the_models("search", collecting) and not not_the_models("write", collecting)


def test_collect_prune_export_keeps_the_policys_exact_prompts(collected: Path, tmp_path: Path) -> None:
    judge = Judge(FunctionLLM(scripted_judge(best_parts=7)))
    results = prune(collected, ChecklistScorer(judge))
    assert len(results) == 3
    for result in results:
        # Drafts have 3, 5, 7, 9 written parts; the judge prefers 7: D2 is the best, D3 is cut.
        assert result.best == 2 and len(result.scores) == 4
        assert result.drafts_dropped == 1 and result.steps_dropped > 0
    out = tmp_path / "dataset"
    stats = export(
        collected, out, validation=0.34, ratios=parse_ratios("search=1,write=1,init=1,extend=1,terminate=1")
    )
    assert stats.trajectories == {"validation": 1, "train": 2}
    rows = load_samples(out / "train.jsonl") + load_samples(out / "validation.jsonl")
    assert sum(stats.samples["train"].values()) + sum(stats.samples["validation"].values()) == len(rows)
    assert sum(stats.actions.values()) == len(rows)  # ratio 1 everywhere: every valid action once
    assert stats.actions["terminate"] == 3 and stats.actions["init"] == 3
    with runner.open_journal() as journal:
        prompts = {run: {s.prompt for s in journal.steps(run)} for run in read_collection(collected).values()}
    for row in rows:  # byte-identical to a prompt the policy saw in that very run
        assert row["messages"][0]["content"] in prompts[row["run_id"]]
    by_split = {json.loads(line)["query_id"] for line in (out / "validation.jsonl").read_text().splitlines()}
    train_queries = {r["query_id"] for r in load_samples(out / "train.jsonl")}
    assert not by_split & train_queries  # split by query, never by action
    terminate = [r for r in rows if r["action"] == "terminate"]
    assert all('"name": "nop"' in r["messages"][1]["content"] for r in terminate)
    assert (out / "hf" / "dataset_dict.json").is_file()


def test_balanced_sampling_follows_the_ratios(collected: Path, tmp_path: Path) -> None:
    prune(collected, ChecklistScorer(Judge(FunctionLLM(scripted_judge()))))
    stats = export(
        collected, tmp_path / "d", validation=0, ratios=parse_ratios("init=3,terminate=2,search=0,write=0.5")
    )
    samples = stats.samples["train"]
    assert samples["init"] == 3 * stats.actions["init"]
    assert samples["terminate"] == 2 * stats.actions["terminate"]
    assert "search" not in samples
    assert 0 < samples["write"] < stats.actions["write"]


def test_collect_resumes_interrupted_runs_and_skips_finished_ones(tmp_path: Path) -> None:
    queries = load_queries(DATA / "criteria.jsonl")[:2]
    kb = str(write_kb(tmp_path / "kb"))
    settings = small(collection_settings(Settings(), 2))
    folder = tmp_path / "c"
    calls = {"n": 0}
    teacher = ForcedTeacher(expansions=0, topic="history")

    def flaky(request: ChatRequest) -> str:
        calls["n"] += 1
        if calls["n"] == 12:
            raise LLMServerError("the teacher went away")
        return teacher(request)

    first = collect(queries, settings, folder, llm=FunctionLLM(flaky), kb=kb, workers=1)
    assert [o.status for o in first] == ["failed", "finished"]
    runs = read_collection(folder)
    with runner.open_journal() as journal:
        done_before = len(journal.steps(runs["51"]))
    second = collect(queries, settings, folder, llm=FunctionLLM(teacher), kb=kb, workers=1)
    assert [(o.status, o.skipped) for o in second] == [("finished", False), ("finished", True)]
    assert read_collection(folder) == runs  # the same runs, continued
    with runner.open_journal() as journal:
        steps = journal.steps(runs["51"])
        assert len(steps) > done_before and [s.step for s in steps] == list(range(1, len(steps) + 1))
    with Runs.open() as journal_runs:
        assert len(decision_points(journal_runs, runs["51"])) == 3


def test_checklists_made_after_collection_began_are_taken_and_a_changed_question_is_refused(
    tmp_path: Path,
) -> None:
    from dataclasses import replace

    from deepdraft.errors import UserError
    from deepdraft.train.collect import collection_queries

    with_checklist = load_queries(DATA / "criteria.jsonl", require_checklist=True)[0]
    prompt_only = replace(with_checklist, checklist=None)
    settings = small(collection_settings(Settings(), 1))
    folder, kb = tmp_path / "c", str(write_kb(tmp_path / "kb"))
    teacher = FunctionLLM(ForcedTeacher(expansions=0, topic="history"))
    assert [o.status for o in collect([prompt_only], settings, folder, llm=teacher, kb=kb)] == ["finished"]
    assert collection_queries(folder)[0].checklist is None

    # The same question, now with its checklist: the finished run is kept, and prune can score it.
    again = collect([with_checklist], settings, folder, llm=teacher, kb=kb)
    assert [(o.status, o.skipped) for o in again] == [("finished", True)]
    assert collection_queries(folder) == [with_checklist]

    changed = replace(with_checklist, prompt="Something else entirely?")
    with pytest.raises(UserError, match="asks something else"):
        collect([changed], settings, folder, llm=teacher, kb=kb)


def test_prune_skips_trajectories_already_pruned(collected: Path) -> None:
    first_judge = FunctionLLM(scripted_judge())
    prune(collected, ChecklistScorer(Judge(first_judge)))
    assert len(first_judge.requests) == 12  # 3 runs × 4 drafts
    second_judge = FunctionLLM(scripted_judge())
    again = prune(collected, ChecklistScorer(Judge(second_judge)))
    assert len(again) == 3 and not second_judge.requests


def test_steps_the_user_directed_are_left_out_of_the_training_data(collected: Path, tmp_path: Path) -> None:
    """A collected run the user deepened afterwards (`deepdraft deepen`): the split was the user's
    choice, not the teacher's, so it is no decision point, and no step of the command is a sample."""
    from dataclasses import replace

    from deepdraft.policy.sections import SectionCommand
    from deepdraft.train.dataset import trajectory_samples
    from deepdraft.train.prune import read_pruned

    run_id = sorted(read_collection(collected).values())[0]
    with Runs.open() as runs:
        points = decision_points(runs, run_id)
        settings = runs.get(run_id).settings
    teacher = FunctionLLM(ForcedTeacher(expansions=1, topic="history"))
    runner.run_command(run_id, SectionCommand("deepen", "1.1", into=2), settings, llm=teacher)

    with Runs.open() as runs:
        directed = {step.step for step in runs.steps(run_id) if step.directed}
        assert {step.action for step in runs.steps(run_id) if step.step in directed} >= {
            "extend-plan",
            "write",
        }
        assert [point.step for point in decision_points(runs, run_id)] == [point.step for point in points]
        prune(collected, ChecklistScorer(Judge(FunctionLLM(scripted_judge()))))
        pruned = next(result for result in read_pruned(collected).values() if result.run_id == run_id)
        # Even with no cut at all, no sample comes from a step of the command.
        whole = replace(pruned, cut_step=max(directed) + 1)
        samples = trajectory_samples(runs, whole, runs.get(run_id).question)
    assert samples and not {sample.step for sample in samples} & directed


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        # No server: the embedded model teaches, with the quick preset's budget and deepening, one run at a time.
        ((), {"base_url": None, "depth": "quick", "max_steps": 40, "force": 2, "workers": None, "pool": 1}),
        (
            ("--base-url", "http://127.0.0.1:9/v1", "--model", "m"),
            {
                "base_url": "http://127.0.0.1:9/v1",
                "depth": "standard",
                "force": 12,
                "workers": None,
                "pool": 4,
            },
        ),
        (("--force-expansions", "5", "--workers", "3"), {"depth": "quick", "force": 5, "workers": 3}),
    ],
)
def test_collect_command_picks_the_teacher_and_its_budget(
    flags: tuple[str, ...], expected: dict[str, object], monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    import deepdraft.train.collect as collect_module
    from deepdraft.cli.train import train_app
    from deepdraft.run.pool import default_concurrency

    seen: dict[str, object] = {}

    def capture(queries: object, settings: Settings, folder: Path, **options: object) -> list[object]:
        research = settings.research
        seen.update(
            base_url=settings.llm.base_url,
            depth=research.depth,
            max_steps=research.max_steps,
            force=research.force_expansions,
            workers=options["workers"],
            pool=default_concurrency(settings),
        )
        return []

    monkeypatch.setattr(collect_module, "collect", capture)
    result = CliRunner().invoke(
        train_app, ["collect", str(DATA / "criteria.jsonl"), "--out", "unused", *flags]
    )
    assert result.exit_code == 0, result.output
    assert {key: seen[key] for key in expected} == expected
