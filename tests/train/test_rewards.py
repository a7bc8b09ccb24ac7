"""Every reward component of spec §5.4/§5.5 against values computed by hand."""

from __future__ import annotations

import json

import pytest

from deepdraft.eval.data import Checklist, Criterion
from deepdraft.eval.judge import Judge, JudgmentError
from deepdraft.llm.scripted import FunctionLLM
from deepdraft.train.queries import Query
from deepdraft.train.rewards import (
    AtomicReward,
    ChecklistScorer,
    checklist_score,
    citation_precision,
    decision_accuracy,
    format_validity,
    planning_basic,
    planning_faithfulness,
    planning_quality,
    retrieval_recall,
    writing_basic,
    writing_faithfulness,
    writing_quality,
)
from tests.train.support import scripted_judge

Q = "How do tariffs affect farmers?"


def plan(n: int, title: str = "Tariffs") -> str:
    sections = [{"title": f"Part {i}", "plan": f"Cover point {i}."} for i in range(n)]
    return f"<action>{json.dumps({'name': 'init-plan', 'title': title, 'sections': sections})}</action>"


def test_planning_basic_counts_and_language() -> None:
    assert planning_basic(plan(4), Q) == 1.0
    assert planning_basic(plan(2), Q) == 0.5  # too few sections, right language
    sections = [{"title": "第一部分关于关税", "plan": "讨论关税的历史背景"}] * 4
    chinese = json.dumps({"name": "init-plan", "title": "关税与农民", "sections": sections})
    assert planning_basic(f"<action>{chinese}</action>", Q) == 0.5  # count fine, wrong language
    extend = json.dumps(
        {"name": "extend-plan", "position": "section-1", "subsections": [{"title": "A", "plan": "a"}] * 8}
    )
    assert planning_basic(f"<action>{extend}</action>", Q) == 0.5  # 8 > 7 subsections
    assert planning_basic("no action here", Q) == 0.0


def test_retrieval_recall() -> None:
    assert retrieval_recall(["a", "b", "x"], ["a", "b", "c", "d"]) == 0.5
    assert retrieval_recall([], []) == 1.0


def test_writing_basic_length_citations_language() -> None:
    words = " ".join(["word"] * 150)
    assert writing_basic(f"{words} \\cite{{textid1}}.", Q) == 1.0
    assert writing_basic("Short \\cite{textid1}.", Q) == pytest.approx(2 / 3)  # under 100 tokens
    many = " ".join(f"w \\cite{{textid{i}}}" for i in range(13))
    assert writing_basic(words + many, Q) == pytest.approx(2 / 3)  # 13 citations > 12


def test_citation_precision() -> None:
    text = "A \\cite{textid1, textid2}. B \\cite{textid3}."
    # used {1,2,3}, golden {1,2,4}: P = 2/3, R = 2/3, F1 = 2/3
    assert citation_precision(
        text, ["textid1", "textid2", "textid3", "textid4"], ["textid1", "textid2", "textid4"]
    ) == pytest.approx(2 / 3)
    assert citation_precision(text, ["textid1", "textid2"], ["textid1"]) == 0.0  # textid3 was never shown
    assert citation_precision("No citations.", ["textid1"], []) == 1.0


def test_decision_accuracy() -> None:
    assert decision_accuracy('<action>{"name": "nop"}</action>', "terminate") == 1.0
    assert decision_accuracy('<action>{"name": "nop"}</action>', "extend") == 0.0
    extend = '<action>{"name": "extend-plan", "position": "section-1", "subsections": []}</action>'
    assert decision_accuracy(extend, "extend") == 1.0
    assert decision_accuracy("gibberish", "terminate") == 0.0


@pytest.fixture
def judge() -> Judge:
    return Judge(FunctionLLM(scripted_judge()))


def test_judge_rubrics_map_one_to_five_onto_zero_to_one(judge: Judge) -> None:
    # guidance 5, hierarchy 4, coherence 3 → mean 4 → (4 − 1) / 4
    assert planning_quality(judge, Q, "outline", "reference", "t") == pytest.approx(0.75)
    # relevance 5, coverage 4, depth 3, novelty 2 → mean 3.5 → 2.5 / 4
    assert writing_quality(judge, Q, "Part", "text", "reference", "t") == pytest.approx(0.625)
    # one claim of two supported
    assert planning_faithfulness(judge, Q, "outline", "t") == 0.5
    assert writing_faithfulness(judge, "A \\cite{textid1}.", {"textid1": "passage"}, "t") == 0.5


def test_a_failed_judgment_is_none_not_zero() -> None:
    judge = Judge(FunctionLLM(lambda request: "no json at all"), max_attempts=2)
    assert planning_quality(judge, Q, "outline", "reference", "t") is None


CHECKLIST = Checklist(
    {"comprehensiveness": 0.5, "insight": 0.2, "instruction_following": 0.2, "readability": 0.1},
    (
        Criterion("comprehensiveness", "covers farmers", "", 0.75),
        Criterion("comprehensiveness", "covers history", "", 0.25),
        Criterion("insight", "explains causes", "", 1.0),
        Criterion("instruction_following", "answers the question", "", 1.0),
        Criterion("readability", "clear", "", 1.0),
    ),
)
QUERY = Query("q1", Q, CHECKLIST)


def test_checklist_score_weighs_criteria_then_dimensions() -> None:
    scores = {1: 8.0, 2: 4.0, 3: 5.0, 4: 10.0, 5: 6.0}
    # comprehensiveness 0.75·8 + 0.25·4 = 7; total 0.5·7 + 0.2·5 + 0.2·10 + 0.1·6 = 7.1 → 0.71
    assert checklist_score(CHECKLIST, scores) == pytest.approx(0.71)
    with pytest.raises(JudgmentError, match="5 were not scored"):
        checklist_score(CHECKLIST, {1: 1.0, 2: 1.0, 3: 1.0, 4: 1.0})


def test_checklist_scorer_asks_the_judge_for_every_criterion(judge: Judge) -> None:
    report = "# R\n\n" + "This part (a). " * 5  # 5 written parts; the scripted judge prefers 7 → 8/10
    assert ChecklistScorer(judge).score(QUERY, report) == pytest.approx(0.8)


def test_atomic_reward_combines_components_after_a_format_gate(judge: Judge) -> None:
    write_ref = {
        "action": "write",
        "question": Q,
        "teacher_reply": "<action>Teacher text \\cite{textid1}.</action>",
        "evidence": {"textid1": "p1", "textid2": "p2"},
        "teacher_citations": ["textid1"],
    }
    text = " ".join(["word"] * 120) + " \\cite{textid1}."
    # rule-based only: basic 1.0, citation precision F1({1},{1}) = 1.0
    assert AtomicReward()(f"<action>{text}</action>", write_ref) == 1.0
    # with the judge: mean(1.0, 1.0, quality 0.625, faithfulness 0.5)
    assert AtomicReward(judge)(f"<action>{text}</action>", write_ref, "t") == pytest.approx(0.78125)
    terminate = {"action": "terminate", "question": Q, "teacher_reply": ""}
    assert AtomicReward()('<action>{"name": "nop"}</action>', terminate) == 1.0
    extend = {"action": "extend-plan", "question": Q, "teacher_reply": ""}
    assert AtomicReward()('<action>{"name": "nop"}</action>', extend) == 0.0


def test_format_validity_grades_how_close_a_reply_came_to_the_action_asked_for() -> None:
    search = '<action>{"name": "search", "keywords": ["tariffs", "farmers"]}</action>'
    assert format_validity(search, "search") == 1.0
    assert format_validity('{"name": "search", "keywords": ["tariffs"]}', "search") == 1.0  # tags optional
    assert format_validity('<action>{"name": "search", "keywords": "tariffs"}</action>', "search") == 0.5
    assert format_validity('<action>{"name": "search"}</action>', "search") == 0.5  # a key missing
    assert format_validity(search, "init-plan") == 0.5  # a valid action, but not the one asked for
    assert format_validity("<action>search for tariffs</action>", "search") == 0.0  # no JSON object
    assert format_validity("I would search for tariffs.", "search") == 0.0
    assert format_validity(plan(4), "init-plan") == 1.0
    assert format_validity('<action>{"name": "nop"}</action>', "extend-plan") == 1.0  # stopping is a decision
    assert format_validity('<action>{"name": "nop"}</action>', "terminate") == 1.0
    assert format_validity("<action>Tariffs raised prices [textid1].</action>", "write") == 1.0
    assert format_validity("<thought>Nothing to say.</thought>", "write") == 0.0
    with pytest.raises(ValueError, match="no reward for action 'summarise'"):
        format_validity(search, "summarise")
