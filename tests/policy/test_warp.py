"""Whole WARP runs driven by scripted models: the order of actions, retries, budgets, events."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from deepdraft.core.evidence import Passage
from deepdraft.core.outline import WRITTEN_FROM_EVIDENCE
from deepdraft.core.state import RunState
from deepdraft.errors import RunFailed
from deepdraft.events import (
    ActionFinished,
    ActionStarted,
    Event,
    NodeSkipped,
    NodeWritten,
    OutlineChanged,
)
from deepdraft.export.report import render_markdown
from deepdraft.llm.scripted import FunctionLLM, ScriptedLLM
from deepdraft.policy.plan_write import PlanThenWritePolicy
from deepdraft.policy.single_pass import SinglePassPolicy
from deepdraft.policy.warp import Policy, WarpPolicy
from deepdraft.ports import LLM, ChatRequest
from deepdraft.settings import ResearchSettings
from tests.support.scenario import SOTU_LIKE, ScenarioModel, WordOverlapRetriever, classify, evidence_keys

QUESTION = "How did presidents argue about tariffs?"


def run(llm: LLM, budgets: ResearchSettings | None = None, policy: Callable[..., Policy] = WarpPolicy):
    events: list[Event] = []
    state = policy(llm, WordOverlapRetriever(SOTU_LIKE), budgets or ResearchSettings(), events.append).run(
        RunState(question=QUESTION)
    )
    return state, events


def actions_of(llm: FunctionLLM | ScriptedLLM) -> list[tuple[str, str]]:
    return [classify(request) for request in llm.requests]


def reply(action: dict[str, object], thought: str = "t") -> str:
    return f"<thought>{thought}</thought><action>{json.dumps(action)}</action>"


SEARCH = reply({"name": "search", "keywords": ["tariffs"]})
THREE_SECTIONS = reply(
    {
        "name": "init-plan",
        "title": "Tariffs in presidential speech",
        "sections": [{"title": t, "plan": f"About {t}."} for t in ("Origins", "Protection", "Openness")],
    }
)
GOOD_WRITE = "<thought>x</thought><action>Presidents defended tariffs as protection for manufactures \\cite{textid1}.</action>"


def good_write(part: int) -> str:
    """A valid write whose sentence is its own (a part repeating another's sentences is asked again)."""
    return (
        "<thought>x</thought><action>Presidents defended tariffs as protection for manufactures "
        f"in part {part} \\cite{{textid1}}.</action>"
    )


def drafts(parts: int, first: int = 1) -> list[str]:
    """The search and the write of `parts` parts in a row, numbered from `first`."""
    return [reply for part in range(first, first + parts) for reply in (SEARCH, good_write(part))]


NO_CITATION = "<thought>x</thought><action>Presidents defended tariffs as protection for manufactures, said many.</action>"
NOP = reply({"name": "nop"})


def test_full_run_follows_the_method_order() -> None:
    llm = FunctionLLM(ScenarioModel(expansions=2))
    state, events = run(llm)

    expected = [("search", "outline"), ("init-plan", "outline")]
    for position in ("section-1", "section-2", "section-3"):
        expected += [("search", position), ("write", position)]
    expected.append(("extend-plan", "outline"))
    expected += [
        ("search", "section-1.1"),
        ("write", "section-1.1"),
        ("search", "section-1.2"),
        ("write", "section-1.2"),
    ]
    expected.append(("extend-plan", "outline"))
    expected += [
        ("search", "section-2.1"),
        ("write", "section-2.1"),
        ("search", "section-2.2"),
        ("write", "section-2.2"),
    ]
    expected.append(("extend-plan", "outline"))
    assert actions_of(llm) == expected

    assert state.phase == "done"
    assert state.stop_reason == "the model judged the report complete"
    assert state.expansions == 2
    assert state.step == len(expected)
    assert state.outline is not None
    positions = [located.position for located in state.outline.walk()]
    assert positions == [
        "section-1",
        "section-1.1",
        "section-1.2",
        "section-2",
        "section-2.1",
        "section-2.2",
        "section-3",
    ]
    assert all(located.node.written for located in state.outline.walk())

    finished = [e for e in events if isinstance(e, ActionFinished)]
    assert [e.record.step for e in finished] == list(range(1, len(expected) + 1))
    assert all(e.record.valid for e in finished)
    assert [e.record.target for e in finished] == [target for _, target in expected]
    assert len([e for e in events if isinstance(e, NodeWritten)]) == 7
    changes = [e for e in events if isinstance(e, OutlineChanged)]
    assert [c.added for c in changes] == [
        ["section-1", "section-2", "section-3"],
        ["section-1.1", "section-1.2"],
        ["section-2.1", "section-2.2"],
    ]
    # Every action is bracketed: started, (effects), finished — and the checkpoint is the final state.
    kinds = [type(e) for e in events]
    assert kinds[0] is ActionStarted and kinds[-1] is ActionFinished
    assert finished[-1].state == state.snapshot()


def test_search_prompt_sees_the_draft_and_write_sees_the_evidence() -> None:
    llm = FunctionLLM(ScenarioModel(expansions=0))
    run(llm)
    prompts = [r.messages[-1].content for r in llm.requests]
    search_two = next(r.messages[-1].content for r in llm.requests if classify(r) == ("search", "section-2"))
    assert "# Section-1 [Part early]: [OK] This part (section-1)" in search_two
    assert "# Section-2 [Part middle]: [PLAN]" in search_two
    write_one = next(r.messages[-1].content for r in llm.requests if classify(r) == ("write", "section-1"))
    assert "You need to update section-1" in write_one
    assert evidence_keys(write_one), "the write prompt lists evidence as bibkey:textidN lines"
    first_search = prompts[0]
    assert "There is no survey." in first_search


def test_refused_reply_is_asked_again_with_the_reason() -> None:
    two_sections = reply(
        {
            "name": "init-plan",
            "title": "T",
            "sections": [{"title": "A", "plan": "a"}, {"title": "B", "plan": "b"}],
        }
    )
    llm = ScriptedLLM([SEARCH, two_sections, THREE_SECTIONS])
    llm.enqueue(*drafts(3), NOP)
    state, events = run(llm)
    assert state.outline is not None and state.outline.count() == 3
    retry_prompt = llm.requests[2].messages[-1].content
    assert "between 3 and 12 sections (got 2)" in retry_prompt  # why the last reply was refused
    first_plan_prompt = llm.requests[1].messages[-1].content
    assert "(got 2)" not in first_plan_prompt
    refused = [e.record for e in events if isinstance(e, ActionFinished) and not e.record.valid]
    assert [(r.step, r.action) for r in refused] == [(2, "init-plan")]
    assert refused[0].reason and "got 2" in refused[0].reason
    assert llm.remaining == 0


def test_a_node_that_keeps_failing_gets_one_fresh_search_then_is_quoted_from_its_evidence() -> None:
    llm = ScriptedLLM([SEARCH, THREE_SECTIONS])
    llm.enqueue(SEARCH, *[NO_CITATION] * 4)  # first try + 3 re-asks
    llm.enqueue(SEARCH, *[NO_CITATION] * 4)  # one fresh search, then 4 more tries
    llm.enqueue(*drafts(2), NOP)
    state, events = run(llm)

    assert actions_of(llm)[2:13] == [("search", "section-1")] + [("write", "section-1")] * 4 + [
        ("search", "section-1")
    ] + [("write", "section-1")] * 4 + [("search", "section-2")]
    assert state.outline is not None
    node = state.outline.sections[0]
    assert node.content and node.content.startswith("The tariffs on imports protect our manufactures")
    assert node.note and node.note.startswith(WRITTEN_FROM_EVIDENCE) and "refused" in node.note
    assert not [e for e in events if isinstance(e, NodeSkipped)]
    assert state.stop_reason == "the model judged the report complete"
    markdown = render_markdown(state.outline, state.registry).markdown
    assert "## 1 Origins\n\nThe tariffs on imports protect our manufactures" in markdown
    assert llm.remaining == 0


def test_write_may_cite_only_the_current_evidence() -> None:
    stale = "<thought>x</thought><action>Presidents defended tariffs as protection for manufactures \\cite{textid99}.</action>"
    llm = ScriptedLLM([SEARCH, THREE_SECTIONS, SEARCH, stale, good_write(1), *drafts(2, first=2), NOP])
    state, events = run(llm)
    refused = [e.record for e in events if isinstance(e, ActionFinished) and not e.record.valid]
    assert len(refused) == 1 and refused[0].reason and "textid99" in refused[0].reason
    assert "cite only the evidence shown now" in llm.requests[4].messages[-1].content
    assert state.outline is not None and all(n.node.written for n in state.outline.walk())


def test_step_budget_still_yields_a_complete_report() -> None:
    llm = FunctionLLM(ScenarioModel(expansions=2))
    state, _ = run(llm, ResearchSettings(max_steps=7))
    assert state.step == 7
    assert state.stop_reason == "step budget of 7 actions reached"
    assert state.outline is not None
    markdown = render_markdown(
        state.outline, state.registry, stop_note=f"run stopped: {state.stop_reason}"
    ).markdown
    # Sections 1 and 2 are written; section 3 had only its search: it is shown, with why it is empty.
    assert "## 1 Part early\n\nThis part" in markdown
    assert "## 3 Part late\n\n*Not written — run stopped: step budget of 7 actions reached" in markdown
    assert "## References" in markdown


def test_step_budget_before_any_outline_fails_clearly() -> None:
    llm = FunctionLLM(ScenarioModel())
    with pytest.raises(RunFailed, match="before an outline existed"):
        run(llm, ResearchSettings(max_steps=1))


def test_a_refused_deepening_is_asked_again_and_spends_no_expansion() -> None:
    # One refused reply used to spend the expansion it was refused for: the quick preset's second
    # deepening ended there, without the re-ask `max_retries` allows (10 of 15 measured runs).
    bad_extend = reply({"name": "extend-plan", "position": "section-9", "subsections": []})
    good_extend = reply(
        {
            "name": "extend-plan",
            "position": "section-1",
            "subsections": [
                {"title": "Tariffs of the early years", "plan": "Revenue duties."},
                {"title": "Tariffs and manufactures", "plan": "Protection."},
            ],
        }
    )
    llm = ScriptedLLM(
        [
            SEARCH,
            THREE_SECTIONS,
            *drafts(3),
            bad_extend,
            good_extend,
            *drafts(2, first=4),
        ]
    )
    state, _ = run(llm, ResearchSettings(max_expansions=1, max_retries=1))
    assert "there is no section-9" in llm.requests[9].messages[-1].content  # the re-ask says why
    assert state.expansions == 1
    assert state.outline is not None and len(state.outline.sections[0].children) == 2
    assert state.stop_reason == "expansion budget of 1 reached"
    assert llm.remaining == 0


def test_deepening_stops_when_every_re_ask_is_refused() -> None:
    bad_extend = reply({"name": "extend-plan", "position": "section-9", "subsections": []})
    llm = ScriptedLLM([SEARCH, THREE_SECTIONS, *drafts(3), bad_extend, bad_extend])
    state, _ = run(llm, ResearchSettings(max_expansions=2, max_retries=1))
    assert state.expansions == 0
    assert state.stop_reason is not None
    assert state.stop_reason.startswith("the model gave no valid deepening decision (there is no section-9")
    assert llm.remaining == 0


def test_no_expansion_budget_means_no_extend_prompt() -> None:
    llm = FunctionLLM(ScenarioModel(expansions=3))
    state, _ = run(llm, ResearchSettings(max_expansions=0))
    assert all(kind != "extend-plan" for kind, _ in actions_of(llm))
    assert state.stop_reason == "expansion budget of 0 reached"


class _Recording:
    """A retriever that records the queries it is asked and finds nothing for some of them."""

    def __init__(self, blind_to: tuple[str, ...] = ()) -> None:
        self.inner, self.blind_to = WordOverlapRetriever(SOTU_LIKE), blind_to
        self.queries: list[str] = []

    def search(self, query: str, k: int) -> list[Passage]:
        self.queries.append(query)
        return [] if any(word in query for word in self.blind_to) else self.inner.search(query, k)

    def fingerprint(self) -> str:
        return "recording"


def _vague_searches_for_section_1(request: ChatRequest) -> str:
    if classify(request) == ("search", "section-1"):
        return reply({"name": "search", "keywords": ["zzzz qqqq"]})
    return ScenarioModel(expansions=0)(request)


def test_vague_keywords_are_searched_with_the_subject_and_the_node_title() -> None:
    llm, retriever = FunctionLLM(_vague_searches_for_section_1), _Recording()
    events: list[Event] = []
    state = WarpPolicy(llm, retriever, ResearchSettings(), events.append).run(RunState(question=QUESTION))
    assert "zzzz qqqq tariffs" in retriever.queries  # the keyword, with the subject it lacked
    assert "Part early tariffs" in retriever.queries  # the node's own title
    assert not any("matched nothing" in r.messages[-1].content for r in llm.requests)
    assert state.outline is not None and state.outline.sections[0].written


def test_keywords_that_find_nothing_are_refused_then_the_node_is_given_up() -> None:
    llm, retriever = FunctionLLM(_vague_searches_for_section_1), _Recording(blind_to=("zzzz", "early"))
    events: list[Event] = []
    state = WarpPolicy(llm, retriever, ResearchSettings(), events.append).run(RunState(question=QUESTION))
    searches = [r.messages[-1].content for r in llm.requests if classify(r) == ("search", "section-1")]
    assert len(searches) == 4  # the first try and three re-asks
    assert "matched nothing in the documents" in searches[1]
    assert [e.position for e in events if isinstance(e, NodeSkipped)] == ["section-1"]
    assert state.outline is not None and not state.outline.sections[0].written


def test_chinese_question_requires_chinese_text() -> None:
    question = "总统们如何讨论关税问题？"
    plan = reply(
        {
            "name": "init-plan",
            "title": "关税辩论",
            "sections": [{"title": t, "plan": f"讨论{t}的论点"} for t in ("起源", "保护", "开放")],
        }
    )
    chinese_write = (
        "<thought>x</thought><action>历任总统把关税视为保护本国制造业、增加财政收入的重要手段 \\cite{textid1}，"
        "也有总统认为高关税加重了南方农民的负担，主张通过谈判逐步降低关税。</action>"
    )
    llm = ScriptedLLM([SEARCH, plan, SEARCH, GOOD_WRITE, chinese_write, *[SEARCH, chinese_write] * 2, NOP])
    events: list[Event] = []
    WarpPolicy(llm, WordOverlapRetriever(SOTU_LIKE), ResearchSettings(), events.append).run(
        RunState(question=question)
    )
    refused = [e.record for e in events if isinstance(e, ActionFinished) and not e.record.valid]
    assert len(refused) == 1 and refused[0].reason == "the question is in Chinese, so write in Chinese"


def test_plan_then_write_writes_a_full_outline_and_never_deepens() -> None:
    llm = FunctionLLM(ScenarioModel())
    state, _ = run(llm, policy=PlanThenWritePolicy)
    assert state.outline is not None
    positions = [located.position for located in state.outline.walk()]
    assert positions == [
        "section-1", "section-1.1", "section-1.2",
        "section-2", "section-2.1", "section-2.2",
        "section-3", "section-3.1", "section-3.2",
    ]  # fmt: skip
    assert all(located.node.written for located in state.outline.walk())
    kinds = [kind for kind, _ in actions_of(llm)]
    assert kinds[:2] == ["search", "full-plan"]
    assert "extend-plan" not in kinds
    assert kinds.count("write") == 9
    assert state.stop_reason == "every planned node is written"


def test_each_action_is_asked_with_a_fresh_single_message_prompt() -> None:
    llm = FunctionLLM(ScenarioModel(expansions=1))
    run(llm)
    assert all(len(r.messages) == 1 and r.messages[0].role == "user" for r in llm.requests)
    assert [r.tag for r in llm.requests] == [f"step-{i}" for i in range(1, len(llm.requests) + 1)]


class Crash(Exception):
    pass


def first_writes_refused(request: ChatRequest) -> str:
    """The scenario, except that each node's first draft cites nothing (the re-ask, which shows
    the reason, is answered as usual): runs then stop between the tries of an action."""
    kind, _ = classify(request)
    if kind == "write" and "citations (found 0)" not in request.messages[-1].content:
        return NO_CITATION
    return ScenarioModel(expansions=1)(request)


@pytest.mark.parametrize("policy", [WarpPolicy, PlanThenWritePolicy, SinglePassPolicy])
@pytest.mark.parametrize("model", [ScenarioModel(expansions=1), first_writes_refused])
def test_a_run_continued_from_any_checkpoint_ends_in_the_same_state(
    policy: Callable[..., Policy], model: Callable[[ChatRequest], str]
) -> None:
    reference, _ = run(FunctionLLM(model), policy=policy)
    assert reference.outline is not None and all(n.node.written for n in reference.outline.walk())
    for crash_at in range(1, reference.step + 1):
        calls = 0

        def flaky(request: ChatRequest, crash_at: int = crash_at) -> str:
            nonlocal calls
            calls += 1
            if calls == crash_at:
                raise Crash
            return model(request)

        events: list[Event] = []
        with pytest.raises(Crash):
            policy(
                FunctionLLM(flaky), WordOverlapRetriever(SOTU_LIKE), ResearchSettings(), events.append
            ).run(RunState(question=QUESTION))
        checkpoints = [e.state for e in events if isinstance(e, ActionFinished)]
        state = (
            RunState.restore(json.loads(json.dumps(checkpoints[-1])))
            if checkpoints
            else RunState(question=QUESTION)
        )
        final = policy(FunctionLLM(model), WordOverlapRetriever(SOTU_LIKE), ResearchSettings()).run(state)
        assert final.snapshot() == reference.snapshot(), crash_at


def test_request_objects_carry_no_sampling_overrides() -> None:
    """Sampling defaults (temperature 0.7, top_p 0.8) belong to the LLM adapter, not the policy."""
    llm = FunctionLLM(ScenarioModel(expansions=0))
    run(llm)
    request: ChatRequest = llm.requests[0]
    assert request.temperature is None and request.top_p is None and request.max_tokens is None


def test_the_manifest_names_the_parts_quoted_from_their_evidence() -> None:
    from deepdraft.run.manifest import build_manifest

    unrelated = "<thought>t</thought><action>Zebras graze quietly on the open savanna at dawn, far from town.</action>"

    def respond(request: ChatRequest) -> str:
        if classify(request) == ("write", "section-2"):
            return unrelated
        return ScenarioModel(expansions=0)(request)

    state, events = run(FunctionLLM(respond), ResearchSettings(max_retries=1))
    assert state.outline is not None
    node = state.outline.sections[1]
    assert node.content and "\\cite{textid" in node.content and "Zebras" not in node.content
    assert (node.note or "").startswith(WRITTEN_FROM_EVIDENCE)
    assert not any(isinstance(e, NodeSkipped) for e in events)
    manifest = build_manifest(run_id="r", question=QUESTION, settings={}, model="m", state=state)
    assert manifest["report"]["written_from_evidence"] == ["section-2"]


def test_the_node_title_is_searched_first_so_it_always_contributes_evidence() -> None:
    from deepdraft.policy.warp import search_queries

    state, _ = run(FunctionLLM(ScenarioModel(expansions=0)))
    state.target = "section-1"
    assert search_queries(state, ["duties", "protection of industry"]) == [
        "Part early tariffs",
        "duties tariffs",
        "protection of industry tariffs",
    ]
    # Before the outline, the request's subject is searched rather than its wording: the frame
    # words ("how did presidents talk about") would be scored like any other.
    railroads = RunState(question="How did presidents talk about railroads and their regulation?")
    assert search_queries(railroads, []) == ["Railroads and their regulation"]


def test_passages_naming_two_subject_words_rank_before_those_naming_one() -> None:
    from deepdraft.core.evidence import Source
    from deepdraft.policy.warp import on_subject_first

    def passage(doc: str, text: str) -> Passage:
        return Passage(text, Source(doc, doc, f"/{doc}"))

    hits = [
        passage("a", "Foreign fleets and our harbour forts."),  # one subject word, in passing
        passage("b", "Oil and more oil."),
        passage("c", "Imported oil made us dependent on foreign supply."),
        passage("d", "Canals."),
        passage("e", "Energy from foreign oil."),
    ]
    subject = ["energy", "supply", "dependence", "foreign", "oil"]
    assert [p.source.doc_id for p in on_subject_first(hits, subject)] == ["c", "e", "a", "b", "d"]


def test_a_search_puts_documents_the_report_does_not_cite_yet_first_among_those_on_the_subject() -> None:
    from deepdraft.core.evidence import Source
    from deepdraft.core.outline import Outline
    from deepdraft.policy.warp import cited_documents, on_subject_first

    def passage(doc: str, text: str) -> Passage:
        return Passage(text, Source(doc, doc, f"/{doc}"))

    hits = [
        passage("a", "The tariff of 1828."),
        passage("b", "A tariff for revenue."),
        passage("c", "Railroads and canals."),
        passage("a", "Canals again."),
        passage("d", "Tariff reform."),
    ]
    ordered = on_subject_first(hits, ["tariff"], cited={"a"})
    # On the subject first (new documents, then cited ones), then the rest in the same order.
    assert [(p.source.doc_id, p.text) for p in ordered] == [
        ("b", "A tariff for revenue."),
        ("d", "Tariff reform."),
        ("a", "The tariff of 1828."),
        ("c", "Railroads and canals."),
        ("a", "Canals again."),
    ]
    assert on_subject_first(hits, ["tariff"]) == [hits[0], hits[1], hits[4], hits[2], hits[3]]

    state = RunState(question=QUESTION)
    keys = [state.registry.register(p) for p in hits]
    state.outline = Outline.create("Tariffs", [("One", "p"), ("Two", "p")])
    state.outline.sections[0].content = f"The tariff of 1828 \\cite{{{keys[0]}}}."
    state.outline.sections[1].content = f"Revenue \\cite{{{keys[1]}}}."
    state.target = "section-2"  # the part being searched for: its own citations do not count
    assert cited_documents(state) == {"a"}


def test_a_split_is_held_to_what_the_actions_left_can_write() -> None:
    # 8 actions open and draft three sections; with 13 in all, a split leaves room for 2 parts
    # (a search and a write each), not the 3 the settings allow.
    two_parts = reply(
        {
            "name": "extend-plan",
            "position": "section-1",
            "subsections": [
                {"title": "Tariffs of the early years", "plan": "Revenue duties."},
                {"title": "Tariffs and manufactures", "plan": "Protection."},
            ],
        }
    )
    llm = ScriptedLLM([SEARCH, THREE_SECTIONS, *drafts(3), two_parts, *drafts(2, first=4)])
    state, _ = run(llm, ResearchSettings(max_steps=13, max_expansions=2, max_subsections=3))
    split = llm.requests[8]
    assert split.reply_shape is not None and "{1,1}" in split.reply_shape.grammar  # exactly two
    assert "between 2 and 2 new subsections" in split.messages[-1].content
    assert state.outline is not None and all(found.node.content for found in state.outline.walk())
    assert state.stop_reason == "too few of the 13 actions left to deepen again"
    assert llm.remaining == 0


def test_no_split_is_asked_for_when_the_actions_left_cannot_write_two_parts() -> None:
    llm = ScriptedLLM([SEARCH, THREE_SECTIONS, *drafts(3)])
    state, _ = run(llm, ResearchSettings(max_steps=12, max_expansions=2))
    assert state.expansions == 0 and state.stop_reason == "too few of the 12 actions left to deepen again"
    assert llm.remaining == 0
