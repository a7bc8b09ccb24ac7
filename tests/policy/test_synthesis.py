"""The final synthesis pass: summary and conclusion grounded in the sections, and the question's terms."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

import deepdraft
from deepdraft.core.citations import CITE, cited_keys
from deepdraft.core.evidence import EvidenceRegistry, Passage, Source
from deepdraft.core.outline import Outline
from deepdraft.core.state import RunState
from deepdraft.errors import LLMBudgetExhausted
from deepdraft.events import ActionFinished, Event, SynthesisFinished
from deepdraft.llm.scripted import FunctionLLM
from deepdraft.policy.finishing.synthesis import Synthesizer, sections_keys
from deepdraft.policy.finishing.terms import find_terms
from deepdraft.ports import ChatRequest
from deepdraft.run.runner import load_run, open_journal
from deepdraft.settings import ResearchSettings
from tests.support.scenario import SOTU_LIKE, ScenarioModel, WordOverlapRetriever, classify, recognise

QUESTION = "How did presidents argue about tariffs and the public debt?"
SECTIONS = [
    ("Revenue and debt", "Early tariffs raised revenue to pay the public debt \\cite{textid1}."),
    ("Protection", "The act of 1890 raised duties to protect industry and labor \\cite{textid3}."),
    ("Reform", "Farmers of the South called the high tariff a burden and asked for reform \\cite{textid2}."),
]
SUMMARY = (
    "Presidents first defended tariffs as the revenue that paid the public debt \\cite{textid1}. Later "
    "they argued about protection for industry and labor \\cite{textid3}, while farmers pressed for "
    "reform of duties they saw as a burden \\cite{textid2}. The record shows the argument moving from "
    "paying for the government to choosing whom trade policy should serve."
)
CONCLUSION = (
    "Across the addresses the tariff was never only about money: revenue for the debt \\cite{textid1} "
    "gave way to a fight over protection \\cite{textid3} and over the burden on farmers \\cite{textid2}. "
    "What stays open is how far these arguments changed the duties actually levied, which the sources "
    "shown here do not measure."
)


def make_state(question: str = QUESTION, sections: list[tuple[str, str]] = SECTIONS) -> RunState:
    registry = EvidenceRegistry()
    for i, title in enumerate(["1790", "1832", "1890", "1930"], start=1):
        registry.register(
            Passage(f"Passage {i} of the address of {title}.", Source(f"doc{i}", title, f"/{title}.txt"))
        )
    outline = Outline.create("Presidents on Tariffs", [(title, "plan") for title, _ in sections])
    for node, (_, text) in zip(outline.sections, sections, strict=True):
        node.content = text
    return RunState(question=question, outline=outline, registry=registry, phase="done")


def editor(summary: str = SUMMARY, conclusion: str = CONCLUSION) -> Callable[[ChatRequest], str]:
    def respond(request: ChatRequest) -> str:
        recognised = recognise(request)
        kind = recognised.kind
        if kind in ("summary", "conclusion"):
            return f"<thought>the findings</thought><action>{summary if kind == 'summary' else conclusion}</action>"
        if kind == "constraints":
            return '{"required_items": ["tariffs", "immigration", "debt", "climate change"], "audience": ""}'
        if kind == "constraint-check":
            verdicts = [{"claim": n, "supported": "no"} for n in range(1, recognised.count + 1)]
            return json.dumps({"verdicts": verdicts})
        raise AssertionError(f"unexpected request: {request.messages[-1].content[:120]}")

    return respond


def synthesize(
    respond: Callable[[ChatRequest], str],
    state: RunState | None = None,
    research: ResearchSettings | None = None,
) -> tuple[RunState, FunctionLLM, list[Event]]:
    llm = FunctionLLM(respond)
    events: list[Event] = []
    state = Synthesizer(llm, research or ResearchSettings(), events.append).run(state or make_state())
    return state, llm, events


def kinds(llm: FunctionLLM) -> list[str]:
    return [classify(r)[0] for r in llm.requests]


def keys_of(text: str) -> set[str]:
    return {key for group in cited_keys(text) for key in group}


def prose_words(*texts: str) -> int:
    """Words as a reader counts them: whitespace-separated runs holding a letter or digit."""
    return sum(1 for text in texts for word in CITE.sub(" ", text).split() if any(c.isalnum() for c in word))


# ---- summary and conclusion ---------------------------------------------------------------------


def test_summary_and_conclusion_cite_only_what_the_sections_cite() -> None:
    replies = iter([SUMMARY.replace("textid2", "textid4"), SUMMARY])  # textid4: seen, but cited by no section

    def respond(request: ChatRequest) -> str:
        if classify(request)[0] == "summary":
            return f"<action>{next(replies)}</action>"
        return editor()(request)

    state, llm, events = synthesize(respond)
    assert state.summary == SUMMARY and state.conclusion == CONCLUSION
    assert kinds(llm) == ["summary", "summary", "conclusion"]  # no required items: no extraction
    assert "cite only keys the report's sections cite; not textid4" in llm.requests[1].messages[-1].content
    allowed = set(sections_keys(state))
    assert allowed == {"textid1", "textid2", "textid3"}
    assert keys_of(state.summary) <= allowed and keys_of(state.conclusion) <= allowed
    finished = [e for e in events if isinstance(e, SynthesisFinished)]
    assert len(finished) == 1 and finished[0].summary and finished[0].conclusion
    assert state.finished_phases == ["synthesis"] and state.synthesis_progress is None


def test_a_part_that_keeps_failing_validation_is_left_out_with_a_note() -> None:
    chinese = "总结：关税的争论从财政收入转向保护工业与劳工，再转向农民对高关税负担的不满和改革要求" * 2
    state, llm, _ = synthesize(editor(conclusion=chinese + " \\cite{textid1}"))
    assert kinds(llm) == ["summary", "conclusion", "conclusion", "conclusion"]
    assert state.summary == SUMMARY and state.conclusion == ""
    assert len(state.synthesis_notes) == 1 and state.synthesis_notes[0].startswith(
        "The conclusion was left out"
    )
    assert "not in Chinese" in state.synthesis_notes[0]


def test_a_heading_the_model_adds_is_dropped_and_a_bare_reply_without_citations_refused() -> None:
    replies = iter(
        ["The report says tariffs mattered a great deal to everyone.", "## Executive summary\n" + SUMMARY]
    )

    def respond(request: ChatRequest) -> str:
        if classify(request)[0] == "summary":
            return f"<action>{next(replies)}</action>"
        return editor()(request)

    state, llm, _ = synthesize(respond)
    assert state.summary == SUMMARY
    assert "between 40 and 300 words" in llm.requests[1].messages[-1].content


def test_out_of_budget_omits_the_parts_with_a_note_and_checks_what_needs_no_llm() -> None:
    def exhausted(request: ChatRequest) -> str:
        raise LLMBudgetExhausted("the token budget of 100 is spent")

    question = "In about 500 words: how did presidents argue about tariffs? Cover immigration and debt too."
    state, _, _ = synthesize(exhausted, make_state(question))
    assert state.summary == "" and len(state.synthesis_notes) == 2
    assert all("no LLM budget was left" in note for note in state.synthesis_notes)
    checks = {check.requirement: check for check in state.constraints}
    assert not checks["about 500 words"].satisfied
    assert checks["debt"].satisfied  # found by its words, no call needed
    assert not checks["immigration"].satisfied and "could not be judged" in checks["immigration"].detail
    assert state.conclusion == "**Not covered:** immigration."


# ---- the question's terms -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("question", "expected"),
    [
        ("Explain the tariff debates in about 500 words.", {"length": ("about", 500, "about 500 words")}),
        (
            "A 1,200-word brief on tariffs, no more than 1,200 words",
            {"length": ("most", 1200, "no more than 1,200 words")},
        ),
        ("Write at least 800 words on the debt.", {"length": ("least", 800, "at least 800 words")}),
        ("关税争论的历史，不少于3000字", {"length": ("least", 3000, "不少于3000字")}),
        ("用中文介绍美国总统对关税的看法", {"language": ("Chinese", "用中文")}),
        ("Summarise the debt debates and answer in French.", {"language": ("French", "answer in French")}),
        (
            "Compare tariff acts in a table, in five sections.",
            {"table": "table", "sections": (5, "five sections")},
        ),
        (
            "List the arguments as bullet points for policy makers.",
            {"bullets": "bullet points", "audience": "policy makers"},
        ),
        (
            "The report must cover tariffs, immigration and debt.",
            {"items": ("tariffs", "immigration", "debt")},
        ),
        ("报告必须包括关税、移民和国债。", {"items": ("关税", "移民", "国债")}),
        ("How did presidents argue about tariffs?", {}),
    ],
)
def test_rule_based_terms(question: str, expected: dict[str, object]) -> None:
    terms = find_terms(question)
    found = {name: value for name, value in vars(terms).items() if value not in (None, "", ())}
    assert found == expected


def test_constraints_are_checked_and_a_missing_item_is_named_in_the_conclusion() -> None:
    question = (
        "In about 500 words, how did presidents argue? The report must cover tariffs, immigration and debt."
    )
    state, llm, events = synthesize(editor(), make_state(question))
    assert kinds(llm) == ["summary", "conclusion", "constraints", "constraint-check"]
    judge_prompt = llm.requests[-1].messages[-1].content
    assert (
        "1. The report covers immigration." in judge_prompt
        and "2." not in judge_prompt.split("covers immigration")[1]
    )
    checks = {check.requirement: check for check in state.constraints}
    assert set(checks) == {
        "about 500 words",
        "tariffs",
        "immigration",
        "debt",
    }  # "climate change" was not asked
    length = checks["about 500 words"]
    words = prose_words(SUMMARY, *(text for _, text in SECTIONS), CONCLUSION)
    assert not length.satisfied and f"the report has {words} words" in length.detail
    assert checks["tariffs"].satisfied and checks["debt"].detail.startswith("a heading names it")
    assert (
        not checks["immigration"].satisfied
        and "neither its words nor the judge" in checks["immigration"].detail
    )
    assert state.conclusion == CONCLUSION + "\n\n**Not covered:** immigration."
    finished = next(e for e in events if isinstance(e, SynthesisFinished))
    assert finished.unmet == ["about 500 words", "immigration"]


def test_a_chinese_request_checks_language_and_length_in_characters_without_extra_calls() -> None:
    sections = [
        ("早期的关税", "早期的总统把关税看作偿还国债的收入来源 \\cite{textid1}。"),
        ("保护主义", "一八九零年的关税法提高税率以保护工业和劳工 \\cite{textid3}。"),
        ("改革", "南方农民认为高关税是沉重负担并要求改革 \\cite{textid2}。"),
    ]
    summary = (
        "总统们最初把关税当作偿还国债的财政收入来源 \\cite{textid1}，后来争论的焦点转向保护工业与劳工 "
        "\\cite{textid3}，而南方农民则把高关税视为负担并呼吁改革 \\cite{textid2}。整体来看，关税之争从如何"
        "支付政府开支，逐渐变成贸易政策应当为谁服务的问题。"
    )
    question = "请用中文写一份关于美国总统如何讨论关税的报告，不少于3000字"  # "讨论" alone asks for nothing
    state, llm, _ = synthesize(
        editor(summary, summary.replace("整体来看", "总而言之")), make_state(question, sections)
    )
    assert kinds(llm) == ["summary", "conclusion"]
    checks = {check.name: check for check in state.constraints}
    assert checks["language"].satisfied and checks["language"].requirement == "用中文"
    assert not checks["length"].satisfied and "characters" in checks["length"].detail


# ---- in a real run -------------------------------------------------------------------------------


def test_a_default_run_gets_a_summary_and_conclusion_whose_citations_resolve() -> None:
    llm = FunctionLLM(ScenarioModel(expansions=1))
    report = deepdraft.research(
        "How did presidents argue about tariffs?", kb=WordOverlapRetriever(SOTU_LIKE), llm=llm
    )
    _, state = load_run(report.run_id)
    assert state is not None and state.summary and state.conclusion
    allowed = set(sections_keys(state))
    for text in (state.summary, state.conclusion):
        assert (
            keys_of(text) and keys_of(text) <= allowed and all(key in state.registry for key in keys_of(text))
        )
    assert "\\cite" not in report.markdown


def test_a_run_killed_during_synthesis_replays_the_paid_summary() -> None:
    def crash_on_summary(event: Event) -> None:
        if isinstance(event, ActionFinished) and event.record.action == "summary":
            raise KeyboardInterrupt

    retriever = WordOverlapRetriever(SOTU_LIKE)
    first = FunctionLLM(ScenarioModel(expansions=0))
    with pytest.raises(KeyboardInterrupt):
        deepdraft.research("Tariffs?", kb=retriever, llm=first, on_event=crash_on_summary)
    with open_journal() as journal:
        (run,) = journal.list_runs()
    second = FunctionLLM(ScenarioModel(expansions=0))
    deepdraft.resume(run.id, llm=second, retriever=retriever)
    assert kinds(first)[-1] == "summary" and kinds(second) == ["conclusion"]
    _, state = load_run(run.id)
    assert state is not None and state.summary and state.finished_phases == ["verify", "synthesis"]


def test_a_summary_without_citations_is_cited_from_the_sections_passages() -> None:
    # A small model that will not cite (as writes get, see attach.py): each sentence is cited from
    # the sections' passage it overlaps most, and a sentence that matches none is dropped.
    state = make_state()
    texts = {
        "textid1": "Early tariffs raised revenue to pay the public debt of the new republic.",
        "textid2": "Farmers of the South called the high tariff a burden and asked for its reform.",
        "textid3": "The act of 1890 raised duties to protect American industry and labor.",
    }
    for key, text in texts.items():
        state.registry.items[key] = state.registry.items[key].model_copy(update={"text": text})
    uncited = (
        "Early tariffs raised revenue to pay the public debt of the republic. "
        "Farmers of the South called the high tariff a burden and asked for reform. "
        "The act of 1890 raised duties to protect industry and labor at home. "
        "Meanwhile the weather over the oceans was mild and pleasant for sailors everywhere."
    )

    def respond(request: ChatRequest) -> str:
        if classify(request)[0] == "summary":
            return f"<action>{uncited}</action>"
        return editor()(request)

    state, llm, _ = synthesize(respond, state, ResearchSettings(attach_citations_after=0))
    assert kinds(llm) == ["summary", "conclusion"]  # accepted at the first draft
    assert keys_of(state.summary) == {"textid1", "textid2", "textid3"}
    assert "public debt of the republic \\cite{textid1}." in state.summary
    assert "weather" not in state.summary


def test_the_summary_gets_as_many_drafts_as_an_action_then_is_left_out() -> None:
    def respond(request: ChatRequest) -> str:
        if classify(request)[0] == "summary":
            return (
                "<action>A findings paragraph with no citations at all, long enough to pass the length check easily. "
                * 3
                + "</action>"
            )
        return editor()(request)

    state, llm, _ = synthesize(respond, research=ResearchSettings(max_retries=1, attach_citations_after=None))
    assert kinds(llm) == ["summary", "summary", "conclusion"]
    assert state.summary == "" and state.conclusion == CONCLUSION
    assert any("2 drafts were refused" in note for note in state.synthesis_notes)


def test_a_summary_loses_its_numbering_debris_and_its_cut_off_last_sentence() -> None:
    from deepdraft.policy.finishing.synthesis import read_part

    body = (
        "Early presidents defended tariffs as revenue for the federal debt \\cite{textid1}. "
        "Later ones argued over protection for manufactures and the burden it put on farmers, "
        "and reformers asked for lower duties when the treasury ran a surplus \\cite{textid1}. "
        "In the depression the walls of trade were blamed for deepening the slump \\cite{textid1}."
    )
    raw = f"<action>{body}\n3.4.5.\nLater presidents argued that the walls of</action>"
    text = read_part(raw, "summary", ["textid1"], "How did presidents argue about tariffs?", None)
    assert isinstance(text, str)
    assert text.endswith("slump \\cite{textid1}.") and "3.4" not in text


def test_a_conclusion_that_says_its_findings_twice_says_them_once() -> None:
    from deepdraft.policy.finishing.synthesis import read_part

    # As the embedded model concluded a quick run: the findings, then "In conclusion," and again.
    findings = (
        "Efficiency standards and tax credits for insulation were urged to cut long-term consumption "
        "and improve energy security \\cite{textid1}. Oil imports left the economy open to shocks, "
        "and every disruption in the Gulf raised the call for domestic supply \\cite{textid2}. "
        "Later addresses tied clean energy to jobs at home \\cite{textid2}."
    )
    again = findings.replace("Efficiency", "In conclusion, the findings highlight that efficiency")
    raw = f"<action>{findings}\n\n{again}</action>"
    text = read_part(raw, "conclusion", ["textid1", "textid2"], "How did presidents discuss energy?", None)
    assert text == findings


def test_a_summary_that_restates_its_instructions_is_refused_and_asked_again() -> None:
    """A 1.5B model asked for a summary answered with what a summary should be; the pass refuses
    that draft with a reason and keeps the next one, about the findings."""
    echo = (  # what the model wrote, in substance
        "The executive summary should open with one or two sentences that answer the request "
        "directly, then give the main findings behind that answer, most important first. It is read "
        "before the report, so it should stand on its own, and it should back each finding with the "
        "citations the sections give for it \\cite{textid1}."
    )
    drafts = iter([echo, SUMMARY])
    base = editor()
    asked: list[str] = []

    def respond(request: ChatRequest) -> str:
        if recognise(request).kind == "summary":
            asked.append(request.messages[-1].content)
            return f"<thought>t</thought><action>{next(drafts)}</action>"
        return base(request)

    state, _, _ = synthesize(respond, research=ResearchSettings(max_retries=1))
    assert len(asked) == 2 and "do not restate these instructions" in asked[1]
    assert state.summary == SUMMARY


def test_a_runaway_summary_is_refused_by_its_length_before_it_is_read() -> None:
    from deepdraft.policy.finishing.synthesis import read_part

    flood = (
        "<thought>sum up</thought><action>"
        + "Tariffs were argued over \\cite{textid1}. " * 50_000
        + "</action>"
    )
    refused = read_part(flood, "summary", ["textid1"], "How did presidents argue about tariffs?", None)
    assert refused == (None, "write between 40 and 300 words (this has 2,049,999 characters)")


def test_a_summary_that_goes_round_in_circles_keeps_what_came_before() -> None:
    from deepdraft.policy.finishing.synthesis import read_part

    opening = (
        "Presidents argued about tariffs as protection for industry \\cite{textid1}. "
        "Some defended them as revenue, others attacked them as a tax on farmers \\cite{textid1}. "
        "The argument shifted with each depression and each war, and it never settled \\cite{textid1}. "
    )
    loop = "The tariff debate went on and on in every era. " * 5
    text = read_part(
        f"<action>{opening}{loop}</action>",
        "summary",
        ["textid1"],
        "How did presidents argue about tariffs?",
        None,
    )
    assert text == opening + "The tariff debate went on and on in every era."


def test_what_the_model_wrote_about_the_summary_goes_and_the_findings_stay() -> None:
    """As the embedded model summed up two quick runs: a description of the summary with the
    answer quoted as an example, and findings followed by lines of section names and keys."""
    from deepdraft.policy.finishing.synthesis import read_part, without_scaffolding

    question = "How did presidents argue about tariffs?"
    described = (
        "<action>The executive summary should begin with a clear statement that answers the request. "
        'This could be something like "Presidents defended tariffs first as revenue and later as '
        'protection \\cite{textid1}."\n'
        "Next, the report should provide the main findings, most important first. This could include:\n"
        "1. Early tariffs paid the interest of the public debt and the costs of a small government \\cite{textid1}.\n"
        "2. Protection for manufactures and wool growers was argued over for a century, in every depression \\cite{textid2}.\n"
        "</action>"
    )
    assert read_part(described, "summary", ["textid1", "textid2"], question, None) == (
        "Presidents defended tariffs first as revenue and later as protection \\cite{textid1}.\n"
        "1. Early tariffs paid the interest of the public debt and the costs of a small government \\cite{textid1}.\n"
        "2. Protection for manufactures and wool growers was argued over for a century, in every depression \\cite{textid2}."
    )
    listed = (
        "<action>The executive summary should start with two sentences that answer the request:\n"
        "1. Tariffs were defended as the revenue that paid the public debt, the army and the navy in the years of peace \\cite{textid1}.\n"
        "2. Later presidents argued that high duties protected industry and labor at a cost to farmers and consumers \\cite{textid2}.\n"
        "The main findings behind these answers are supported by:\n"
        "- Section-1: <textid1>, <textid2>\n"
        "- Section-2.1: <textid2>\n"
        "</action>"
    )
    text = read_part(listed, "summary", ["textid1", "textid2"], question, None)
    assert text == (
        "1. Tariffs were defended as the revenue that paid the public debt, the army and the navy in the years of peace \\cite{textid1}.\n"
        "2. Later presidents argued that high duties protected industry and labor at a cost to farmers and consumers \\cite{textid2}."
    )
    # Only what is about the part goes: a conclusion that says what its findings mean is kept whole.
    kept = (
        "The tariff was argued over as revenue \\cite{textid1} and then as protection \\cite{textid2}. "
        "This conclusion rests on the addresses shown, which say little about the duties actually paid, "
        "and the report leaves open how far the arguments moved the schedules that Congress wrote in each decade."
    )
    assert read_part(f"<action>{kept}</action>", "conclusion", ["textid1", "textid2"], question, None) == kept
    # The answer quoted after a sentence about the summary is kept, and nothing before it goes.
    quoted = (
        'Tariffs paid the debt \\cite{textid1}. The first sentence of the executive summary is: "Tariffs '
        'were first revenue and then protection \\cite{textid2}."'
    )
    assert without_scaffolding(quoted) == (
        "Tariffs paid the debt \\cite{textid1}. Tariffs were first revenue and then protection \\cite{textid2}."
    )
    # A quotation in a finding is the finding's.
    finding = 'Carter called conservation "the cheapest energy we have" \\cite{textid2}.'
    assert without_scaffolding(finding) == finding
    # A line of Chinese is one run of letters without spaces, and is kept.
    chinese = "关税先是财政收入 \\cite{textid1}。\n后来成为保护工业的手段 \\cite{textid2}。"
    assert without_scaffolding(chinese) == chinese
