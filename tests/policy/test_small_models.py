"""Robustness with small local models: constraints, hidden reasoning, loops, context overflow, presets."""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deepdraft.config import load_settings
from deepdraft.core.evidence import EvidenceRegistry, Passage, Source, render_evidence
from deepdraft.core.outline import Outline
from deepdraft.core.state import RunState
from deepdraft.core.tokens import count_tokens
from deepdraft.errors import LLMContextOverflow
from deepdraft.events import ActionFinished, Event
from deepdraft.llm.scripted import FunctionLLM
from deepdraft.policy.warp import WarpPolicy
from deepdraft.ports import ChatRequest
from deepdraft.protocol import prompts
from deepdraft.protocol.action_replies import read_plan
from deepdraft.protocol.actions import InitPlan, Refused, Search, Write, parse, repetition, validate_write
from deepdraft.protocol.grammar import reply_shape
from deepdraft.settings import ResearchSettings
from tests.support.openai_server import ErrorReply, FakeOpenAIServer
from tests.support.request_kinds import request_from_body
from tests.support.scenario import SOTU_LIKE, ScenarioModel, WordOverlapRetriever, classify

QUESTION = "How did presidents argue about tariffs?"


# ---- hidden reasoning -------------------------------------------------------------------------


@pytest.mark.parametrize("tag", ["think", "thinking", "reasoning", "THINK"])
def test_reasoning_blocks_are_stripped(tag: str) -> None:
    raw = f'<{tag}>Let me think... <action>{{"name": "nop"}}</action> no wait</{tag}>\n<thought>ok</thought><action>{{"name": "search", "keywords": ["a"]}}</action>'
    assert parse(raw, {"search"}) == Search(("a",))


def test_an_unclosed_reasoning_block_hides_everything_after_it() -> None:
    assert isinstance(parse('<think>{"name": "search", "keywords": ["a"]}', {"search"}), Refused)


# ---- degenerate output ------------------------------------------------------------------------


def test_a_looping_text_is_refused_with_a_reason() -> None:
    loop = "Tariffs protect industry and raise revenue for the nation. " * 4 + "\\cite{textid1}"
    refused = validate_write(Write(loop), QUESTION, {"textid1"})
    assert isinstance(refused, Refused) and "repeats itself" in refused.reason


def test_varied_prose_is_not_flagged() -> None:
    text = (
        "Early presidents treated duties on imports as the main source of federal revenue, while later "
        "ones argued about protection for manufacturing, the burden on farmers and the effect on trade."
    )
    assert repetition(text) is None


def test_chinese_loops_are_caught_too() -> None:
    assert repetition("关税保护了本国工业。" * 4) is not None
    assert (
        repetition("早期总统把关税视为联邦收入的主要来源，后来的总统则争论保护主义对农民和贸易的影响。")
        is None
    )


def test_a_tiny_vocabulary_is_flagged() -> None:
    assert repetition(" ".join(["tariff", "trade", "duty", "tax"] * 20)) is not None


# ---- constrained decoding shapes --------------------------------------------------------------


def test_every_action_sends_its_shape_and_write_only_its_frame() -> None:
    llm = FunctionLLM(ScenarioModel(expansions=1))
    WarpPolicy(llm, WordOverlapRetriever(SOTU_LIKE), ResearchSettings()).run(RunState(question=QUESTION))
    by_kind: dict[str, set[str]] = {}
    for request in llm.requests:
        kind, _ = classify(request)
        assert request.reply_shape is not None
        by_kind.setdefault(kind, set()).add(request.reply_shape.grammar)
    assert by_kind["search"] == {reply_shape("search").grammar}
    assert by_kind["write"] == {reply_shape("write").grammar}
    assert reply_shape("write").action_schema is None
    assert '"{" ws' not in reply_shape("write").grammar.split("action ::=")[1].split("\n")[0]
    assert "{2,11}" in next(iter(by_kind["init-plan"]))  # 3–12 sections


def test_quick_depth_narrows_outline_bounds_in_prompt_grammar_and_validation() -> None:
    settings_ = load_settings(flags={"research": {"depth": "quick"}})
    research = settings_.research
    assert (research.max_sections, research.max_subsections, research.max_expansions) == (4, 3, 2)
    assert settings_.llm.max_tokens == 480
    llm = FunctionLLM(ScenarioModel(expansions=1))
    WarpPolicy(llm, WordOverlapRetriever(SOTU_LIKE), research).run(RunState(question=QUESTION))
    plan_request = next(r for r in llm.requests if classify(r)[0] == "init-plan")
    # The prompt shows 3 and 4 where the template puts the bounds, whatever its wording around them.
    marked = prompts.render("init_plan", question="Q", evidence="E", min_sections="\x00", max_sections="\x01")
    between = marked[marked.index("\x00") + 1 : marked.index("\x01")]
    assert f"3{between}4" in plan_request.messages[-1].content
    assert plan_request.reply_shape is not None and "{2,3}" in plan_request.reply_shape.grammar
    five = {
        "name": "init-plan",
        "title": "Tariff debates",
        "sections": [{"title": f"Tariffs, part {i}", "plan": "p"} for i in range(5)],
    }
    outcome = read_plan(
        f"<thought/><action>{json.dumps(five)}</action>", RunState(question=QUESTION), research
    )
    assert isinstance(outcome, Refused) and "between 3 and 4 sections" in outcome.reason
    ok = {**five, "sections": five["sections"][:4]}
    assert isinstance(
        read_plan(f"<action>{json.dumps(ok)}</action>", RunState(question=QUESTION), research), InitPlan
    )


def test_quick_writes_bound_the_writers_notes_in_the_grammar() -> None:
    # A whole write's prompt (the quick preset writes passage by passage: see test_passage_write).
    research = load_settings(flags={"research": {"depth": "quick", "write_by_passage": False}}).research
    assert research.write_notes_chars == 300
    llm = FunctionLLM(ScenarioModel(expansions=1))
    WarpPolicy(llm, WordOverlapRetriever(SOTU_LIKE), research).run(RunState(question=QUESTION))
    writes = [r for r in llm.requests if classify(r)[0] == "write"]
    assert writes and all(r.reply_shape == reply_shape("write", notes=300) for r in writes)
    assert "thought ::= [^<]{0,300}\n" in reply_shape("write", notes=300).grammar
    # Only the write's thought is bounded, and only where a preset asks for it.
    assert "thought ::= [^<]*\n" in reply_shape("write").grammar
    assert ResearchSettings().write_notes_chars is None


def test_quick_reports_take_both_deepening_steps_unless_nothing_can_be_split() -> None:
    research = load_settings(flags={"research": {"depth": "quick"}}).research
    assert (research.force_expansions, research.max_expansions) == (2, 2)
    # An outline with nothing left to split: the model's stop is taken at once, not refused
    # (its grammar allows nothing else).
    outline = Outline(title="Tariffs")
    outline.add_tree(
        None,
        [
            (
                f"Tariffs {i}",
                "p",
                [
                    (f"Tariffs {i}.{j}", "p", [(f"Tariffs {i}.{j}.{k}", "p", []) for k in (1, 2)])
                    for j in (1, 2)
                ],
            )
            for i in (1, 2, 3)
        ],
    )
    for located in outline.walk():
        located.node.content = "Written \\cite{textid1}."
    assert outline.splittable() == []
    llm = FunctionLLM(lambda request: '<thought></thought><action>{"name": "nop"}</action>')
    policy = WarpPolicy(llm, WordOverlapRetriever(SOTU_LIKE), research, force_expansions=2)
    state = RunState(question=QUESTION, outline=outline)
    policy.deepen(state)
    assert len(llm.requests) == 1 and state.stop_reason == "the model judged the report complete"


def test_a_required_deepening_is_asked_with_a_shape_that_allows_only_a_split() -> None:
    research = load_settings(flags={"research": {"depth": "quick"}}).research
    llm = FunctionLLM(ScenarioModel(expansions=2))
    WarpPolicy(llm, WordOverlapRetriever(SOTU_LIKE), research, force_expansions=2).run(
        RunState(question=QUESTION)
    )
    deepenings = [r for r in llm.requests if classify(r)[0] == "extend-plan"]
    assert len(deepenings) == 2
    for request in deepenings:
        assert request.reply_shape is not None and "nop" not in request.reply_shape.grammar
    # Without a required deepening (the standard preset), a stop stays one of the replies.
    llm = FunctionLLM(ScenarioModel(expansions=0))
    WarpPolicy(llm, WordOverlapRetriever(SOTU_LIKE), ResearchSettings()).run(RunState(question=QUESTION))
    [stop] = [r for r in llm.requests if classify(r)[0] == "extend-plan"]
    assert stop.reply_shape is not None and "nop ::=" in stop.reply_shape.grammar


def test_explicit_settings_win_over_the_depth_preset() -> None:
    research = load_settings(flags={"research": {"depth": "quick", "max_steps": 99}}).research
    assert research.max_steps == 99 and research.node_evidence == 8
    deep = load_settings(flags={"research": {"depth": "deep"}}).research
    assert deep.max_steps == 220 and deep.max_expansions == 12


def test_seed_changes_with_every_step_so_a_retry_is_a_new_sample() -> None:
    llm = FunctionLLM(ScenarioModel(expansions=0))
    WarpPolicy(llm, WordOverlapRetriever(SOTU_LIKE), ResearchSettings(seed=1000)).run(
        RunState(question=QUESTION)
    )
    assert [r.seed for r in llm.requests] == [1000 + i for i in range(1, len(llm.requests) + 1)]


def test_passages_are_cut_for_slow_prefill() -> None:
    registry = EvidenceRegistry()
    key = registry.register(Passage("word " * 500, Source("d", "D", "/d.txt")))
    assert count_tokens(render_evidence(registry, [key], passage_tokens=50)) < 70
    assert count_tokens(render_evidence(registry, [key])) > 500


# ---- context overflow -------------------------------------------------------------------------


def test_a_server_context_overflow_shrinks_later_prompts_instead_of_failing() -> None:
    limit = 900
    events: list[Event] = []

    def tight_server(request: ChatRequest) -> str:
        if count_tokens(request.messages[-1].content) > limit:
            raise LLMContextOverflow(f"prompt longer than {limit}")
        return ScenarioModel(expansions=1)(request)

    retriever = WordOverlapRetriever(
        [(t, text + " More words about tariffs and trade. " * 30) for t, text in SOTU_LIKE]
    )
    policy = WarpPolicy(FunctionLLM(tight_server), retriever, ResearchSettings(), events.append)
    state = policy.run(RunState(question=QUESTION))
    assert state.stop_reason == "the model judged the report complete"
    assert policy.prompt_limit is not None, "the policy learned a prompt limit from the refusals"
    steps = [e.record.step for e in events if isinstance(e, ActionFinished)]
    assert steps == list(range(1, len(steps) + 1)), "a refused-for-length call is not a step"


def test_overflow_over_http_recovers_too() -> None:
    limit = 900

    def respond(body: dict[str, Any], index: int) -> str | ErrorReply:
        prompt = body["messages"][-1]["content"]
        if count_tokens(prompt) > limit:
            return ErrorReply(400, f"This model's maximum context length is {limit} tokens.")
        return ScenarioModel(expansions=0)(request_from_body(body))

    from deepdraft.llm.openai_compat import OpenAICompatibleLLM

    retriever = WordOverlapRetriever(
        [(t, text + " More words about tariffs and trade. " * 30) for t, text in SOTU_LIKE]
    )
    with FakeOpenAIServer(respond) as server:
        llm = OpenAICompatibleLLM(server.base_url, "fake-model")
        state = WarpPolicy(llm, retriever, ResearchSettings()).run(RunState(question=QUESTION))
        accepted = [b for b in server.requests if count_tokens(b["messages"][-1]["content"]) <= limit]
    assert state.outline is not None and all(n.node.written for n in state.outline.walk())
    assert len(accepted) == state.step


# ---- prompt budgeting (property) ---------------------------------------------------------------


def render_all_prompts(
    node_words: list[int], passage_words: list[int], limit: int, count: Callable[[str], int] | None
) -> list[str]:
    """Every kind of prompt the policy sends, for a random draft and random evidence."""
    outline = Outline.create("Tariffs", [(f"Section {i}", f"plan {i}") for i in range(3)])
    for position in ("section-1", "section-2.1"[: 9 if len(node_words) > 6 else 0] or "section-2"):
        outline.add_children(position, [("Part a", "plan a"), ("Part b", "plan b")])
    for located, words in zip(outline.walk(), node_words, strict=False):
        located.node.content = " ".join(f"claim{j} about tariffs" for j in range(words)) or None
    state = RunState(question=QUESTION, outline=outline, target=outline.sections[-1].id and "section-3")
    for i, words in enumerate(passage_words):
        text = f"passage {i}: " + " ".join(f"evidence{j}" for j in range(words))
        state.evidence.append(state.registry.register(Passage(text, Source(f"d{i}", "D", "/d"))))
    prompts: list[str] = []

    def capture(request: ChatRequest) -> str:
        prompts.append(request.messages[-1].content)
        raise LLMContextOverflow("stop here: only the prompt is wanted")

    for step in ("search", "plan", "write", "deepen"):
        policy = WarpPolicy(
            FunctionLLM(capture),
            WordOverlapRetriever(SOTU_LIKE),
            ResearchSettings(),
            prompt_limit=limit,
            count_tokens=count,
        )
        with contextlib.suppress(LLMContextOverflow):
            getattr(policy, step)(state.model_copy(deep=True))
    assert len(prompts) == 4
    return prompts


RANDOM_DRAFTS = {
    "node_words": st.lists(st.integers(min_value=0, max_value=700), min_size=3, max_size=9),
    "passage_words": st.lists(st.integers(min_value=5, max_value=500), min_size=1, max_size=20),
    "limit": st.integers(min_value=1600, max_value=6000),
}


@settings(max_examples=40, deadline=None)
@given(**RANDOM_DRAFTS)
def test_no_prompt_exceeds_the_limit(node_words: list[int], passage_words: list[int], limit: int) -> None:
    prompts = render_all_prompts(node_words, passage_words, limit, None)
    assert all(count_tokens(prompt) <= limit for prompt in prompts)


@pytest.mark.embedded
def test_the_estimate_keeps_prompts_inside_the_real_tokenizers_count() -> None:
    """Budgeted with the estimator, measured with the embedded model's own tokenizer."""
    tokenizer = real_tokenizer()

    @settings(max_examples=30, deadline=None)
    @given(**RANDOM_DRAFTS)
    def check(node_words: list[int], passage_words: list[int], limit: int) -> None:
        for prompt in render_all_prompts(node_words, passage_words, limit, None):
            assert tokenizer(prompt) <= limit

    check()


def real_tokenizer() -> Callable[[str], int]:
    llama_cpp = pytest.importorskip("llama_cpp")
    from deepdraft.llm import embedded_models as models

    try:
        path = models.resolve_model(None)
    except Exception as exc:  # the model is not set up on this machine
        pytest.skip(f"embedded model not installed: {exc}")
    vocab = llama_cpp.Llama(str(path), vocab_only=True, verbose=False)
    return lambda text: len(vocab.tokenize(text.encode("utf-8"), add_bos=False, special=False))


# ---- citations attached for a model that will not cite ---------------------------------------


def test_attach_citations_cites_supported_sentences_and_drops_the_rest() -> None:
    from deepdraft.protocol.attach import attach_citations, cite_uncited

    evidence = {
        "textid1": "The tariffs on imports protect our manufactures and raise revenue to pay the public debt.",
        "textid2": "High tariffs burden the farmer of the South; the history shows reform is needed.",
    }
    text = (
        "Tariffs on imports protected manufactures and raised revenue. "
        "Farmers in the South felt the burden of high tariffs! Aliens landed on Mars in 1850."
    )
    assert attach_citations(text, evidence) == (
        "Tariffs on imports protected manufactures and raised revenue \\cite{textid1}. "
        "Farmers in the South felt the burden of high tariffs \\cite{textid2}!"
    )
    assert attach_citations("Nothing here matches at all.", evidence) is None
    # A text the model cited in part: its own citations stay, the rest is cited or left out.
    mixed = "Tariffs raised revenue to pay the public debt \\cite{textid1}. " + text
    cited, placed = cite_uncited(mixed, evidence)
    assert placed == 2 and cited.startswith("Tariffs raised revenue to pay the public debt \\cite{textid1}. ")
    assert cited.endswith("high tariffs \\cite{textid2}!") and "Mars" not in cited
    assert (
        attach_citations("关税保护了本国的制造业。", {"textid1": "关税保护制造业"})
        == "关税保护了本国的制造业 \\cite{textid1}。"
    )


def test_a_write_without_citations_is_cited_from_its_evidence_after_the_allowed_re_asks() -> None:
    # A part of its own for each section (a part repeating another's sentences is asked again).
    claims = [
        "The tariffs on imports protect manufactures and raise revenue for the debt, presidents said.",
        "High tariffs burden the farmer, and the history of tariffs shows that reform is needed.",
        "Tariffs and trade walls deepened the depression, which became a lesson of history.",
    ]
    writes_asked: list[ChatRequest] = []

    def respond(request: ChatRequest) -> str:
        kind, _ = classify(request)
        if kind != "write":
            return ScenarioModel(expansions=0)(request)
        writes_asked.append(request)
        claim = claims[(len(writes_asked) - 1) // 2 % len(claims)]  # two tries a section
        return f"<thought>x</thought><action>{claim} Unicorns voted for free trade in every single election.</action>"

    events: list[Event] = []
    llm = FunctionLLM(respond)
    state = WarpPolicy(
        llm, WordOverlapRetriever(SOTU_LIKE), ResearchSettings(attach_citations_after=1), events.append
    ).run(RunState(question=QUESTION))
    writes = [e.record for e in events if isinstance(e, ActionFinished) and e.record.action == "write"]
    # Each section: one refusal fed back to the model, then the second reply gets its citations placed.
    assert [w.valid for w in writes] == [False, True] * 3
    assert writes[0].reason and "found 0" in writes[0].reason
    assert writes[1].parsed is not None and writes[1].parsed["citations_attached"] is True
    assert state.outline is not None
    for section in state.outline.sections:
        assert section.content is not None and "\\cite{textid" in section.content
        assert "Unicorns" not in section.content  # unsupported by any passage: dropped


def test_attaching_can_be_turned_off() -> None:
    uncited = "<thought>x</thought><action>The tariffs on imports protect manufactures and raise revenue, presidents said.</action>"

    def respond(request: ChatRequest) -> str:
        kind, _ = classify(request)
        return uncited if kind == "write" else ScenarioModel(expansions=0)(request)

    state = WarpPolicy(
        FunctionLLM(respond), WordOverlapRetriever(SOTU_LIKE), ResearchSettings(attach_citations_after=None)
    ).run(RunState(question=QUESTION))
    assert state.outline is not None and all(s.note and "refused" in s.note for s in state.outline.sections)


# ---- language and length ----------------------------------------------------------------------


def test_an_explicit_language_overrides_the_question_in_prompts_and_validation() -> None:
    plan = {
        "name": "init-plan",
        "title": "关税辩论",
        "sections": [{"title": t, "plan": f"讨论{t}的论点"} for t in ("起源", "保护", "开放")],
    }
    chinese_write = (
        "<thought>x</thought><action>早期总统把关税视为联邦财政收入和保护本国制造业的重要手段 \\cite{textid1}，"
        "批评者则强调高关税加重了农民的负担。</action>"
    )
    english_write = "<thought>x</thought><action>Presidents defended tariffs as protection for manufactures \\cite{textid1}.</action>"
    writes = iter([english_write, chinese_write, chinese_write, chinese_write])

    def respond(request: ChatRequest) -> str:
        kind, _ = classify(request)
        if kind == "init-plan":
            return f"<thought>t</thought><action>{json.dumps(plan, ensure_ascii=False)}</action>"
        if kind == "write":
            return next(writes)
        return ScenarioModel(expansions=0)(request)

    llm = FunctionLLM(respond)
    events: list[Event] = []
    state = WarpPolicy(
        llm, WordOverlapRetriever(SOTU_LIKE), ResearchSettings(language="zh"), events.append
    ).run(
        RunState(question=QUESTION)  # an English question, a Chinese report
    )
    assert all("in zh." in r.messages[-1].content for r in llm.requests)
    refused = [e.record.reason for e in events if isinstance(e, ActionFinished) and not e.record.valid]
    assert refused == ["write in Chinese"]
    assert state.outline is not None and all(s.content for s in state.outline.sections)


def test_a_target_length_guides_writes_and_the_deepening_decision() -> None:
    llm = FunctionLLM(ScenarioModel(expansions=1))
    WarpPolicy(llm, WordOverlapRetriever(SOTU_LIKE), ResearchSettings(length_words=1200)).run(
        RunState(question=QUESTION)
    )
    writes = [r.messages[-1].content for r in llm.requests if classify(r)[0] == "write"]
    assert "Aim for about 400 words in this part (the whole report: about 1200 words)." in writes[0]
    extend = next(r.messages[-1].content for r in llm.requests if classify(r)[0] == "extend-plan")
    assert "the user asked for about 1200" in extend


def test_the_quick_preset_asks_each_part_for_a_length_and_standard_does_not() -> None:
    for depth, expected in (("quick", "Aim for about 180 words in this part"), ("standard", None)):
        research = load_settings(flags={"research": {"depth": depth, "write_by_passage": False}}).research
        llm = FunctionLLM(ScenarioModel(expansions=0))
        WarpPolicy(llm, WordOverlapRetriever(SOTU_LIKE), research).run(RunState(question=QUESTION))
        writes = [r.messages[-1].content for r in llm.requests if classify(r)[0] == "write"]
        assert writes
        assert all((expected in w) if expected else ("Aim for about" not in w) for w in writes)


def test_a_quick_write_lists_the_passages_it_shows_as_a_checklist_and_a_standard_one_does_not() -> None:
    for depth, listed in (("quick", True), ("standard", False)):
        research = load_settings(flags={"research": {"depth": depth, "write_by_passage": False}}).research
        llm = FunctionLLM(ScenarioModel(expansions=0))
        WarpPolicy(llm, WordOverlapRetriever(SOTU_LIKE), research).run(RunState(question=QUESTION))
        write = next(r for r in llm.requests if classify(r)[0] == "write").messages[-1].content
        shown = re.findall(r"^bibkey:(textid\d+)$", write, flags=re.MULTILINE)
        assert shown
        checklist = "Take the passages in this order, leaving out any that is not about “"
        assert (checklist in write) is listed
        if listed:
            assert write.split(checklist)[1].split("”: ")[1].startswith(", ".join(shown) + ".")


def test_a_deepening_step_may_name_only_a_node_it_can_split() -> None:
    llm = FunctionLLM(ScenarioModel(expansions=2))
    state = WarpPolicy(llm, WordOverlapRetriever(SOTU_LIKE), ResearchSettings()).run(
        RunState(question=QUESTION)
    )
    assert state.outline is not None
    first, second = [request for request in llm.requests if classify(request)[0] == "extend-plan"][:2]

    def allowed(request: Any) -> list[str]:
        assert request.reply_shape is not None and request.reply_shape.action_schema is not None
        positions: list[str] = request.reply_shape.action_schema["anyOf"][0]["properties"]["position"]["enum"]
        for position in positions:  # the grammar offers the same, and nothing else
            assert f'"\\"{position}\\""' in request.reply_shape.grammar
        assert "[1-9] [0-9]{0,2}" not in request.reply_shape.grammar.split("extend ::=")[1]
        assert f"can be split: {', '.join(positions)}." in request.messages[-1].content
        return positions

    sections = [f"section-{n}" for n in range(1, len(state.outline.sections) + 1)]
    assert allowed(first) == sections  # a fresh outline: every section
    # After the first split, that node is no longer offered and its new subsections are.
    [split] = set(sections) - set(allowed(second))
    added = set(allowed(second)) - set(sections)
    assert added and all(position.startswith(split + ".") for position in added)


def test_the_position_constrained_grammars_compile_in_llama_cpp() -> None:
    llama_cpp = pytest.importorskip("llama_cpp")
    for positions in (None, ("section-1", "section-2.3"), ()):
        grammar = reply_shape("extend-plan", (3, 4), (2, 3), positions=positions).grammar
        assert llama_cpp.LlamaGrammar.from_string(grammar, verbose=False) is not None
    for notes in (None, 300):
        grammar = reply_shape("write", notes=notes).grammar
        assert llama_cpp.LlamaGrammar.from_string(grammar, verbose=False) is not None
    only_stop = reply_shape("extend-plan", (3, 4), (2, 3), positions=())
    assert "extend ::=" not in only_stop.grammar
    assert only_stop.action_schema == {"anyOf": [only_stop.action_schema["anyOf"][0]]}
    assert only_stop.action_schema["anyOf"][0]["properties"]["name"] == {"const": "nop"}
    # A deepening the settings still require: a split is the only reply, in grammar and schema.
    must_split = reply_shape("extend-plan", (3, 4), (2, 3), positions=("section-1",), may_stop=False)
    assert llama_cpp.LlamaGrammar.from_string(must_split.grammar, verbose=False) is not None
    assert "nop" not in must_split.grammar
    assert [c["properties"]["name"] for c in must_split.action_schema["anyOf"]] == [{"const": "extend-plan"}]


def test_a_string_in_an_action_cannot_hold_an_angle_bracket() -> None:
    # A model that wrote `</action>` inside a plan string, then commas to the token limit, lost a
    # whole extend-plan reply: without "<" the string has to close instead.
    llama_cpp = pytest.importorskip("llama_cpp")
    for name in ("search", "init-plan", "full-plan", "extend-plan"):
        grammar = reply_shape(name).grammar
        [char] = [line for line in grammar.splitlines() if line.startswith("char ::=")]
        unescaped = char.split("|")[0]
        assert unescaped.startswith("char ::= [^") and "<" in unescaped
        assert llama_cpp.LlamaGrammar.from_string(grammar, verbose=False) is not None
