"""WARP with `research.plan_searches`: each search a journaled step whose keywords deepdraft chose
from the part's title and plan, with no request to the model."""

from __future__ import annotations

import json
import re

from deepdraft.config import load_settings
from deepdraft.core.outline import Outline
from deepdraft.core.state import RunState
from deepdraft.events import ActionFinished, Event, EvidenceAdded
from deepdraft.llm.scripted import FunctionLLM
from deepdraft.policy.warp import WarpPolicy
from deepdraft.protocol.action_prompts import PLANNED_SEARCH, plan_keywords
from deepdraft.protocol.actions import MAX_KEYWORDS
from tests.support.scenario import SOTU_LIKE, ScenarioModel, WordOverlapRetriever, classify

QUESTION = "How did presidents argue about tariffs?"


def test_a_part_is_searched_for_its_title_and_each_sentence_of_its_plan() -> None:
    state = RunState(question=QUESTION)
    assert plan_keywords(state) == ["Tariffs"]  # no outline yet: the request's subject
    state.outline = Outline(title="Tariffs")
    state.outline.add_tree(
        None,
        [
            ("Protective tariffs", "How tariffs shielded young industry. Who paid for them.\nTheir end.", []),
            ("Tariff", "Tariff", []),  # the plan repeats the title: searched once
            ("Revenue", "One. Two. Three. Four. Five. Six.", []),
        ],
    )
    state.target = "section-1"
    assert plan_keywords(state) == [
        "Protective tariffs",
        "How tariffs shielded young industry.",
        "Who paid for them.",
        "Their end.",
    ]
    state.target = "section-2"
    assert plan_keywords(state) == ["Tariff"]
    state.target = "section-3"
    assert len(plan_keywords(state)) == MAX_KEYWORDS  # never more than the protocol allows


def test_searches_ask_the_model_nothing_and_are_journaled_as_steps() -> None:
    research = load_settings(flags={"research": {"depth": "quick", "seed": 3}}).research
    assert research.plan_searches
    llm, events = FunctionLLM(ScenarioModel(expansions=1)), list[Event]()
    state = WarpPolicy(llm, WordOverlapRetriever(SOTU_LIKE), research, on_event=events.append).run(
        RunState(question=QUESTION)
    )
    assert "search" not in {classify(request)[0] for request in llm.requests}
    searches = [e.record for e in events if isinstance(e, ActionFinished) and e.record.action == "search"]
    found = [e for e in events if isinstance(e, EvidenceAdded)]
    assert state.outline is not None
    # One search before the outline, then one for every part (in the order they were drafted),
    # each a valid step of its own number.
    assert searches[0].target == "outline"
    assert sorted(row.target for row in searches[1:]) == sorted(n.position for n in state.outline.walk())
    assert all(row.valid and row.prompt == PLANNED_SEARCH for row in searches)
    assert all(row.prompt_tokens == 0 and row.completion_tokens == 0 for row in searches)
    assert len({row.step for row in searches}) == len(searches)
    for row, added in zip(searches, found, strict=True):
        action = re.search(r"<action>(.*)</action>", row.reply, re.S)
        assert action is not None
        assert json.loads(action.group(1)) == {"name": "search", "keywords": added.keywords}
        assert added.keys  # the part's own words found its evidence
    # The steps count against the budget like any: the run's step count includes them.
    assert state.step == len([e for e in events if isinstance(e, ActionFinished)])


def test_with_the_setting_off_the_model_chooses_the_keywords() -> None:
    research = load_settings(flags={"research": {"depth": "quick", "plan_searches": False}}).research
    llm = FunctionLLM(ScenarioModel(expansions=0))
    WarpPolicy(llm, WordOverlapRetriever(SOTU_LIKE), research).run(RunState(question=QUESTION))
    assert "search" in {classify(request)[0] for request in llm.requests}
