"""The one model of the DeepResearch Bench checklist: parsed as shipped for RACE, normalised for training."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from deepdraft.errors import UserError
from deepdraft.eval.data import DIMENSIONS, ChecklistError, DataError, load_drb, parse_checklist
from deepdraft.train.queries import QuerySetError, load_queries
from tests.eval.judges import DATA


def row(**weights: Any) -> dict[str, Any]:
    return {
        "prompt": "p",
        "dimension_weight": {d: 2 for d in DIMENSIONS},
        "criterions": {
            d: [{"criterion": f" {d} a ", "explanation": "why", "weight": 3}, {"criterion": "b", "weight": 1}]
            for d in DIMENSIONS
        },
        **weights,
    }


def test_as_shipped_the_weights_stay_as_given_and_normalised_they_sum_to_one() -> None:
    shipped = parse_checklist(row(), normalise=False)
    assert shipped.dimension_weights == dict.fromkeys(DIMENSIONS, 2.0)
    assert [c.weight for c in shipped.in_dimension("insight")] == [3.0, 1.0]
    normalised = parse_checklist(row(), normalise=True)
    assert normalised.dimension_weights == dict.fromkeys(DIMENSIONS, 0.25)
    assert [c.weight for c in normalised.in_dimension("insight")] == [0.75, 0.25]
    first = normalised.criteria[0]
    assert (first.dimension, first.text, first.explanation) == (
        "comprehensiveness",
        "comprehensiveness a",
        "why",
    )
    assert parse_checklist(normalised.as_row(), normalise=True) == normalised  # written back unchanged


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"dimension_weight": None}, "`dimension_weight` must be a JSON object"),
        ({"dimension_weight": dict.fromkeys(DIMENSIONS, 0)}, "the dimension weights must not all be 0"),
        (
            {"dimension_weight": {**dict.fromkeys(DIMENSIONS, 1), "insight": "much"}},
            "insight must be a number",
        ),
        ({"dimension_weight": {**dict.fromkeys(DIMENSIONS, 1), "insight": -1}}, "must lie between 0"),
        ({"criterions": {"insight": []}}, "`criterions.comprehensiveness` must be a non-empty list"),
        ({"criterions": {d: [{"weight": 1}] for d in DIMENSIONS}}, "comprehensiveness criterion 1 has no"),
        (
            {"criterions": {d: [{"criterion": "x", "weight": 0}] for d in DIMENSIONS}},
            "weights must not all be 0",
        ),
    ],
)
def test_a_malformed_checklist_is_refused_with_its_reason_in_either_mode(
    change: dict[str, Any], reason: str
) -> None:
    for normalise in (False, True):
        with pytest.raises(ChecklistError, match=reason.replace("(", r"\(")):
            parse_checklist(row(**change), normalise=normalise)


def test_the_benchmark_loader_keeps_the_shipped_weights_and_names_a_broken_task(tmp_path: Path) -> None:
    task = load_drb(DATA)[0]
    shipped = next(
        json.loads(line)
        for line in (DATA / "deepresearch_bench" / "criteria.jsonl").read_text(encoding="utf-8").splitlines()
        if json.loads(line)["prompt"] == task.prompt
    )
    assert task.checklist.dimension_weights == {d: shipped["dimension_weight"][d] for d in DIMENSIONS}
    assert [c.weight for c in task.checklist.in_dimension("insight")] == [
        c["weight"] for c in shipped["criterions"]["insight"]
    ]
    folder = tmp_path / "deepresearch_bench"
    folder.mkdir()
    (folder / "query.jsonl").write_text(json.dumps({"id": 9, "prompt": "p"}) + "\n", encoding="utf-8")
    (folder / "criteria.jsonl").write_text(json.dumps(row(criterions={})) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"task 9 is malformed \(`criterions.comprehensiveness` must be"):
        load_drb(tmp_path)


def test_a_query_set_takes_prompt_only_rows_and_normalises_checklists(tmp_path: Path) -> None:
    path = tmp_path / "queries.jsonl"
    path.write_text(json.dumps({"id": 1, "prompt": "bare"}) + "\n" + json.dumps({"id": 2, **row()}) + "\n")
    bare, checked = load_queries(path)
    assert bare.checklist is None
    assert checked.checklist == parse_checklist(row(), normalise=True)
    path.write_text(json.dumps({"id": 3, **row(dimension_weight={})}) + "\n", encoding="utf-8")
    with pytest.raises(QuerySetError, match=r"queries.jsonl:1: dimension_weight.comprehensiveness must be"):
        load_queries(path)
    assert issubclass(QuerySetError, UserError)
