"""Claim-level citation verification: pre-checks, the batched judge, the three policies, resuming."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import jinja2
import pytest

import deepdraft
from deepdraft.core.evidence import EvidenceRegistry, Passage, Source
from deepdraft.core.outline import WRITTEN_FROM_EVIDENCE, Outline
from deepdraft.core.sentences import sentence_spans
from deepdraft.core.state import RunState
from deepdraft.errors import LLMBudgetExhausted
from deepdraft.events import ActionFinished, Event, VerificationFinished
from deepdraft.llm.cache import CachingLLM
from deepdraft.llm.scripted import FunctionLLM
from deepdraft.policy.finishing.lexical import claim_text, lexical_support
from deepdraft.policy.finishing.rewrite import read_rewrite, rewrite_node
from deepdraft.policy.finishing.verdicts import parse_verdicts
from deepdraft.policy.finishing.verify import EMPTIED_NOTE, Verifier
from deepdraft.ports import ChatRequest
from deepdraft.protocol import prompts
from deepdraft.run.runner import _JournalSink, load_run, open_journal
from deepdraft.settings import OutputSettings, ResearchSettings
from deepdraft.store.journal import Journal
from tests.support.scenario import SOTU_LIKE, ScenarioModel, WordOverlapRetriever, classify, recognise

PASSAGES = [
    (
        "Address 1790",
        "The tariffs on imports protect our manufactures and raise revenue to pay the public debt.",
    ),
    (
        "Address 1832",
        "High tariffs burden the farmer of the South; the tariff of abominations shows that reform is needed.",
    ),
    (
        "Address 1890",
        "The tariff act of this year raised duties to protect industry and labor, and brought a surplus.",
    ),
    (
        "Address 1930",
        "Tariffs and trade walls deepened the depression abroad; retaliation closed markets to farmers.",
    ),
    ("Address 1894", "The tariff act of 1894 lowered duties, which hurt industry and labor in the mills."),
    (
        "Address 1931",
        "After 1929 the new walls made the slump abroad far worse, said the address on tariffs.",
    ),
]
SUPPORTED = (
    "Tariffs on imports protected manufactures and raised revenue to pay the public debt \\cite{textid1}."
)
UNRELATED = "Presidents rarely agreed with Congress on anything \\cite{textid1}."
JUDGED_YES = "High duties weighed on southern farmers and fed calls for reform \\cite{textid2}."
JUDGED_NO = "The tariff act lowered duties and hurt industry and labor \\cite{textid3}."
WRONG_YEAR = "Tariffs deepened the depression of 1929 abroad \\cite{textid4}."
LONELY = "Presidents never mentioned the weather in these speeches \\cite{textid2}."
PLANTED = (SUPPORTED, UNRELATED, JUDGED_YES, JUDGED_NO, WRONG_YEAR, LONELY)
SECTION_1 = " ".join([SUPPORTED, UNRELATED, JUDGED_YES, JUDGED_NO, WRONG_YEAR]) + "\n\nIt adds context."

REPAIRS = {  # what the fact-checker model rewrites each sentence into ("" = the passages support nothing)
    "lowered": "The tariff act raised duties to protect industry and labor \\cite{textid3}.",
    "1929": "Tariffs and trade walls deepened the depression abroad \\cite{textid4}.",
}


def make_state() -> RunState:
    registry = EvidenceRegistry()
    for i, (title, text) in enumerate(PASSAGES, start=1):
        registry.register(Passage(text, Source(f"doc{i}", title, f"/corpus/{title}.txt")))
    outline = Outline.create("Tariffs", [("Arguments", "The arguments."), ("Asides", "Other remarks.")])
    outline.sections[0].content = SECTION_1
    outline.sections[1].content = LONELY
    return RunState(
        question="How did presidents argue about tariffs?", outline=outline, registry=registry, phase="done"
    )


def judge_claims(prompt: str) -> list[tuple[str, str]]:
    """(claim, cited keys) of each numbered claim of a judge prompt."""
    return re.findall(r"^\d+\. (.*) \[cites: ([^\]]+)\]$", prompt, flags=re.MULTILINE)


def truthful(request: ChatRequest) -> str:
    """A fact-checker that knows which planted claims hold (and which passage backs the 1929 claim)."""
    prompt = request.messages[-1].content
    kind, _ = classify(request)
    if kind == "verify":
        verdicts = []
        for number, (claim, keys) in enumerate(judge_claims(prompt), start=1):
            holds = "reform" in claim or ("1929" in claim and keys == "textid6")
            verdicts.append({"claim": number, "supported": "yes" if holds else "no"})
        return '```json\n{"verdicts": ' + str(verdicts).replace("'", '"') + "}\n```"
    if kind == "repair":  # which planted sentence is under repair: its claim text is in the prompt
        sentence = next(claim_text(s) for s in PLANTED if claim_text(s) in prompt)
        rewrite = next((text for marker, text in REPAIRS.items() if marker in sentence), "")
        return f"<thought>what the passages say</thought><action>{rewrite}</action>"
    raise AssertionError(f"unexpected prompt: {prompt[:120]}")


def verify(
    policy: str, respond: object = truthful, state: RunState | None = None
) -> tuple[RunState, FunctionLLM, list[Event]]:
    llm = FunctionLLM(respond)  # type: ignore[arg-type]
    events: list[Event] = []
    verifier = Verifier(llm, ResearchSettings(), OutputSettings(verify_policy=policy), events.append)  # type: ignore[arg-type]
    return verifier.run(state or make_state()), llm, events


def kinds(llm: FunctionLLM) -> list[str]:
    return [classify(r)[0] for r in llm.requests]


def figures(state: RunState) -> dict[str, int]:
    assert state.verification is not None
    return state.verification.model_dump(
        include={"checked", "supported", "repaired", "recited", "removed", "unverified"}
    )


def verdict_of(state: RunState, start: str) -> str:
    assert state.verification is not None
    return next(c.verdict for c in state.verification.sentences if c.sentence.startswith(start))


# ---- pure parts ---------------------------------------------------------------------------------


def test_lexical_pre_checks() -> None:
    passage = [PASSAGES[0][1]]
    assert (
        lexical_support(
            "Tariffs on imports protected manufactures and raised revenue to pay the public debt.", passage
        ).verdict
        == "supported"
    )
    assert (
        lexical_support("Presidents rarely agreed with Congress on anything.", passage).verdict
        == "unsupported"
    )
    wrong_year = lexical_support("In 1816 tariffs on imports raised revenue to pay the public debt.", passage)
    assert wrong_year.verdict == "unsupported" and "1816" in wrong_year.reason
    negated = lexical_support("Tariffs on imports did not raise revenue to pay the public debt.", passage)
    assert negated.verdict == "unclear"  # high overlap, but the passage never says "not"
    assert lexical_support("关税保护了制造业", ["关税保护了本国的制造业并增加收入"]).verdict == "supported"


def test_a_name_none_of_the_passages_holds_fails_the_lexical_pre_check() -> None:
    passage = [PASSAGES[0][1]]
    named = lexical_support(
        "Tariffs on imports protected manufactures, said Jackson, and raised revenue to pay the public debt.",
        passage,
    )
    assert named.verdict == "unsupported" and "jackson" in named.reason


@pytest.mark.parametrize(
    "reply",
    [
        '{"verdicts": [{"claim": 1, "supported": "yes"}, {"claim": 2, "supported": "no"}]}',
        'Sure! ```json\n{"verdicts": [{"claim": 2, "supported": "no"}, {"claim": 1, "supported": "Yes"},]}\n``` Done.',
        "<thought>checking</thought><action>[true, false]</action>",
        "1. yes\n2. no",
    ],
)
def test_judge_answers_are_read_tolerantly(reply: str) -> None:
    assert parse_verdicts(reply, 2) == {1: True, 2: False}


def test_an_incomplete_judge_answer_is_refused_with_a_reason() -> None:
    reason = parse_verdicts('{"verdicts": [{"claim": 1, "supported": "yes"}]}', 2)
    assert isinstance(reason, str) and "claim(s) 2" in reason
    assert isinstance(parse_verdicts("They all look fine to me.", 3), str)


def test_removing_sentences_keeps_the_structure_around_them() -> None:
    from deepdraft.core.verification import SentenceCheck

    content = (
        "- First claim \\cite{textid1}.\n- Second claim \\cite{textid2}. Kept claim \\cite{textid2}.\n\nTail."
    )
    spans = sentence_spans(content)

    def check(final: str) -> SentenceCheck:
        return SentenceCheck(node_id="n1", position="section-1", sentence="", keys=[], verdict="removed",
                             final_text=final, reason="", method="lexical")  # fmt: skip

    decided = [(spans[0], check("")), (spans[1], check("")), (spans[2], check("Kept claim \\cite{textid2}."))]
    # The emptied first item disappears; the second keeps its bullet for the sentence that stays.
    assert rewrite_node(content, decided) == "- Kept claim \\cite{textid2}.\n\nTail."


FINISHING_PROMPTS: dict[str, dict[str, str | int]] = {
    "verify": {"passages": "PASSAGES-TEXT", "claims": "CLAIMS-TEXT", "count": 7},
    "repair": {"question": "Q-TEXT", "sentence": "SENTENCE-TEXT", "passages": "PASSAGES-TEXT", "citation": "CITE-TEXT"},
    "synthesis": {
        "part": "summary", "part_name": "PART-NAME", "question": "Q-TEXT", "report": "REPORT-TEXT",
        "min_words": 11, "max_words": 99, "keys": "KEYS-TEXT",
    },
    "constraints": {"task": "extract", "question": "Q-TEXT"},
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(FINISHING_PROMPTS))
def test_finishing_prompts_show_every_variable_and_feedback_only_when_given(name: str) -> None:
    variables = FINISHING_PROMPTS[name]
    text = prompts.render(name, **variables)  # type: ignore[arg-type]
    assert all(str(value) in text for key, value in variables.items() if key not in ("part", "task"))
    if name != "repair":  # a repair is asked once: there is never a reason to feed back
        assert "FEEDBACK-TEXT" in prompts.render(name, **variables, feedback="FEEDBACK-TEXT")  # type: ignore[arg-type]
    assert "previous" not in text
    for missing in variables:
        with pytest.raises(jinja2.UndefinedError):
            prompts.render(name, **{k: v for k, v in variables.items() if k != missing})  # type: ignore[arg-type]


def test_the_verdict_example_in_the_judge_prompt_is_readable() -> None:
    text = prompts.render("verify", passages="P", claims="C", count=2)
    example = text.rsplit("for example:\n", 1)[1]
    assert parse_verdicts(example, 2) == {1: True, 2: False}


# ---- the policies -------------------------------------------------------------------------------


def test_remove_policy_removes_every_unsupported_sentence_with_one_batched_judge_call() -> None:
    state, llm, events = verify("remove")
    assert figures(state) == {
        "checked": 6,
        "supported": 2,
        "repaired": 0,
        "recited": 0,
        "removed": 4,
        "unverified": 0,
    }
    # Two sentences were clear by word overlap alone, three clearly unsupported: only the two
    # unclear ones reached the judge, together, in one request.
    assert kinds(llm) == ["verify"]
    assert [claim for claim, _ in judge_claims(llm.requests[0].messages[-1].content)] == [
        "High duties weighed on southern farmers and fed calls for reform.",
        "The tariff act lowered duties and hurt industry and labor.",
    ]
    assert llm.requests[0].json_schema is not None and llm.requests[0].temperature == 0.0
    assert state.outline is not None
    assert state.outline.sections[0].content == f"{SUPPORTED} {JUDGED_YES}\n\nIt adds context."
    finished = [e for e in events if isinstance(e, VerificationFinished)]
    assert len(finished) == 1 and finished[0].removed == 4 and finished[0].llm_calls == 1


def test_below_the_judge_floor_a_sentence_is_unsupported_without_asking_the_judge() -> None:
    # The planted paraphrase shares a quarter of its content words with its passage: word overlap
    # leaves it unclear, and the judge would pass it; a small model's judge passes nearly anything.
    paraphrase = lexical_support(claim_text(JUDGED_YES), [PASSAGES[1][1]])
    assert paraphrase.verdict == "unclear" and paraphrase.share == 0.25
    floored = lexical_support(claim_text(JUDGED_YES), [PASSAGES[1][1]], floor=0.5)
    assert floored.verdict == "unsupported" and floored.reason == (
        "only 25% of its content words are in its passages (under 50%)"
    )
    # A figure the passages lack is still named as the reason, floor or not.
    assert "1929" in lexical_support(claim_text(WRONG_YEAR), [PASSAGES[3][1]], floor=0.9).reason

    llm = FunctionLLM(truthful)
    verifier = Verifier(
        llm, ResearchSettings(), OutputSettings(verify_policy="remove", judge_floor=0.5), [].append
    )
    state = verifier.run(make_state())
    # Only the sentence above the floor (71% of its words in its passage) reached the judge.
    assert kinds(llm) == ["verify"]
    assert [claim for claim, _ in judge_claims(llm.requests[0].messages[-1].content)] == [
        "The tariff act lowered duties and hurt industry and labor."
    ]
    assert verdict_of(state, "High duties") == "removed"
    assert figures(state)["supported"] == 1 and figures(state)["removed"] == 5


def test_re_citing_under_a_judge_floor_offers_the_judge_no_passage_below_it() -> None:
    # The 1929 claim's other passage (the 1931 address) shares too few of its words to clear the
    # floor, so no judge is asked about it and the claim goes; without the floor the judge
    # re-cites it to that passage (`test_recite_policy_finds_other_passages_by_overlap_then_by_the_judge`).
    llm = FunctionLLM(truthful)
    verifier = Verifier(
        llm, ResearchSettings(), OutputSettings(verify_policy="recite", judge_floor=0.7), [].append
    )
    state = verifier.run(make_state())
    assert verdict_of(state, "Tariffs deepened") == "removed"
    assert all(
        "textid6" not in keys
        for request in llm.requests
        for _, keys in judge_claims(request.messages[-1].content)
    )


def test_a_node_whose_every_claim_fails_is_quoted_from_the_passages_it_cited_and_says_so() -> None:
    state, _, _ = verify("remove")
    assert state.outline is not None
    asides = state.outline.sections[1]
    # Its one claim cited the 1832 address: the part now quotes that passage's sentence, cited.
    assert asides.content == f"{PASSAGES[1][1][:-1]} \\cite{{textid2}}."
    assert asides.note == f"{WRITTEN_FROM_EVIDENCE}: {EMPTIED_NOTE}"


def test_a_node_whose_every_claim_fails_and_whose_passages_give_no_sentence_keeps_a_visible_note() -> None:
    state = make_state()
    state.registry.items["textid2"].text = "Too short."  # no sentence of 8 to 60 words to quote
    state, _, _ = verify("remove", state=state)
    assert state.outline is not None
    asides = state.outline.sections[1]
    assert asides.content is None and asides.note == EMPTIED_NOTE


def test_recite_policy_finds_other_passages_by_overlap_then_by_the_judge() -> None:
    state, llm, events = verify("recite")
    assert figures(state) == {
        "checked": 6,
        "supported": 2,
        "repaired": 0,
        "recited": 2,
        "removed": 2,
        "unverified": 0,
    }
    assert kinds(llm) == ["verify", "verify"]  # the batch, then one question about other passages
    assert state.verification is not None
    recited = {c.sentence: c for c in state.verification.sentences if c.verdict == "recited"}
    assert (
        recited[JUDGED_NO].final_text
        == "The tariff act lowered duties and hurt industry and labor \\cite{textid5}."
    )
    assert recited[JUDGED_NO].method == "judge"  # how the sentence as written was found unsupported
    assert recited[WRONG_YEAR].final_text == "Tariffs deepened the depression of 1929 abroad \\cite{textid6}."
    assert state.outline is not None and "\\cite{textid6}" in (state.outline.sections[0].content or "")
    # The journal records what the judge was asked: every candidate passage was weighed against
    # the one sentence being re-cited (not against other sentences of the report).
    judged = [
        e.record.parsed
        for e in events
        if isinstance(e, ActionFinished) and e.record.action == "verify" and e.record.target != "report"
    ]
    assert len(judged) == 2 and judged[1] is not None
    assert judged[1]["claims"] == [WRONG_YEAR] and judged[1]["keys"] == [["textid6"]]


def test_repair_policy_rewrites_from_the_cited_passages_and_falls_back_to_removal() -> None:
    state, llm, events = verify("repair")
    assert figures(state) == {
        "checked": 6,
        "supported": 2,
        "repaired": 2,
        "recited": 0,
        "removed": 2,
        "unverified": 0,
    }
    # One batch, then one repair per unsupported sentence; the two the passages cannot back at all
    # find no other passage either, so they go without further calls.
    assert sorted(kinds(llm)) == ["repair"] * 4 + ["verify"]
    assert state.outline is not None
    assert state.outline.sections[0].content == (
        f"{SUPPORTED} {JUDGED_YES} {REPAIRS['lowered']} {REPAIRS['1929']}\n\nIt adds context."
    )
    assert state.verification is not None and state.verification.llm_calls == 5
    steps = [e.record for e in events if isinstance(e, ActionFinished)]
    assert [s.action for s in steps].count("repair") == 4 and steps[-1].action == "verify"
    assert [s.step for s in steps] == list(range(1, 7))  # numbered after the policy's (0) steps
    refused = [s for s in steps if s.action == "repair" and not s.valid]
    assert len(refused) == 2 and all("support nothing" in (s.reason or "") for s in refused)


def test_a_rewrite_citing_another_passage_is_refused() -> None:
    def sneaky(request: ChatRequest) -> str:
        if classify(request)[0] == "repair":
            return "<action>The tariff act raised duties to protect industry \\cite{textid5}.</action>"
        return truthful(request)

    state, _, _ = verify("repair", sneaky)
    assert state.verification is not None
    check = next(c for c in state.verification.sentences if c.sentence == JUDGED_NO)
    assert check.verdict == "recited" and "which the sentence did not cite" in check.reason


# ---- failures -----------------------------------------------------------------------------------


def test_an_unreadable_judge_is_asked_once_more_then_its_claims_stay_unverified() -> None:
    def mumbling(request: ChatRequest) -> str:
        return "They all look fine to me."

    state, llm, _ = verify("remove", mumbling)
    assert figures(state) == {
        "checked": 6,
        "supported": 1,
        "repaired": 0,
        "recited": 0,
        "removed": 3,
        "unverified": 2,
    }
    assert kinds(llm) == ["verify", "verify"]
    why = parse_verdicts("They all look fine to me.", recognise(llm.requests[0]).count)
    assert isinstance(why, str) and why in llm.requests[1].messages[-1].content  # the retry says why
    assert why not in llm.requests[0].messages[-1].content
    assert state.outline is not None and JUDGED_YES in (state.outline.sections[0].content or "")


def test_one_unreadable_answer_is_forgiven() -> None:
    answers = iter(
        ["no idea", '{"verdicts": [{"claim": 1, "supported": "yes"}, {"claim": 2, "supported": "yes"}]}']
    )
    state, llm, _ = verify("remove", lambda request: next(answers))
    assert len(llm.requests) == 2 and figures(state)["supported"] == 3 and figures(state)["unverified"] == 0


def test_out_of_budget_leaves_unjudged_sentences_unverified_and_removes_unsupported_ones() -> None:
    def exhausted(request: ChatRequest) -> str:
        raise LLMBudgetExhausted("the token budget of 100 is spent")

    state, _, _ = verify("repair", exhausted)
    assert figures(state) == {
        "checked": 6,
        "supported": 1,
        "repaired": 0,
        "recited": 0,
        "removed": 3,
        "unverified": 2,
    }
    assert state.verification is not None
    assert all("token budget" in c.reason for c in state.verification.sentences if c.verdict == "unverified")
    assert state.finished_phases == ["verify"]


# ---- in a real run: the runner, the journal, the cache ------------------------------------------


def research(llm: FunctionLLM, **kwargs: object) -> deepdraft.Report:
    return deepdraft.research(
        "How did presidents argue about tariffs?",
        kb=WordOverlapRetriever(SOTU_LIKE),
        llm=llm,
        **kwargs,  # type: ignore[arg-type]
    )


def test_a_default_run_verifies_and_the_switches_turn_the_passes_off(tmp_path: Path) -> None:
    events: list[Event] = []
    llm = FunctionLLM(ScenarioModel(expansions=0))
    report = research(llm, on_event=events.append)
    _, state = load_run(report.run_id)
    assert state is not None and state.verification is not None
    assert state.verification.checked == 3 and state.finished_phases == ["verify", "synthesis"]
    assert "repair" in kinds(llm) and any(isinstance(e, VerificationFinished) for e in events)
    assert report.manifest["steps"] == 9  # the finishing passes are not policy actions

    config = tmp_path / "config.toml"
    config.write_text("[output]\nverify = false\nsynthesis = false\n", encoding="utf-8")
    quiet = FunctionLLM(ScenarioModel(expansions=0))
    report = research(quiet, config=config)
    _, state = load_run(report.run_id)
    assert state is not None and state.verification is None and not state.summary
    assert set(kinds(quiet)) == {"search", "init-plan", "write", "extend-plan"}


def test_the_step_budget_never_refuses_verification() -> None:
    llm = FunctionLLM(ScenarioModel(expansions=1))
    report = research(llm, max_steps=7)
    assert report.manifest["steps"] == 7 and report.stop_reason.startswith("step budget")
    with open_journal() as journal:
        steps = journal.steps(report.run_id)
    assert [s.step for s in steps] == list(range(1, len(steps) + 1))
    assert {s.action for s in steps if s.step > 7} >= {"repair", "verify", "summary", "conclusion"}


def test_a_run_killed_mid_verification_resumes_without_paying_twice() -> None:
    reference_llm = FunctionLLM(ScenarioModel(expansions=1))
    reference = research(reference_llm)
    _, expected = load_run(reference.run_id)
    repairs = kinds(reference_llm).count("repair")
    assert repairs >= 3

    seen = 0

    def crash_after_second_repair_reply(event: Event) -> None:
        # Raised once the reply is in the LLM cache but before its step is journaled: the worst moment.
        nonlocal seen
        if isinstance(event, ActionFinished) and event.record.action == "repair":
            seen += 1
            if seen == 2:
                raise KeyboardInterrupt

    first = FunctionLLM(ScenarioModel(expansions=1))
    with pytest.raises(KeyboardInterrupt):
        research(first, on_event=crash_after_second_repair_reply)
    with open_journal() as journal:
        run = next(r for r in journal.list_runs() if r.id != reference.run_id)
    assert run.status == "interrupted" and kinds(first).count("repair") == 2

    second = FunctionLLM(ScenarioModel(expansions=1))
    report = deepdraft.resume(run.id, llm=second, retriever=WordOverlapRetriever(SOTU_LIKE))
    # Both repairs asked before the crash came back from the journal and the cache, not the model.
    assert kinds(second).count("repair") == repairs - 2
    assert len(second.requests) == len(reference_llm.requests) - len(first.requests)
    _, resumed = load_run(report.run_id)
    assert expected is not None and resumed is not None
    assert resumed.verification == expected.verification
    assert resumed.outline == expected.outline and resumed.summary == expected.summary


def test_a_rewrite_that_copies_a_passage_heading_stays_a_sentence() -> None:
    from deepdraft.policy.finishing.rewrite import Rewrite, read_rewrite

    passage = "# Address of 1832\n\nThe tariff of 1832 lowered duties on many goods to calm the South."
    rewrite = read_rewrite(
        "<action># Address of 1832 The tariff of 1832 cut duties on many goods \\cite{textid1}.</action>",
        ["textid1"],
        [passage],
        "How did presidents argue about tariffs?",
        None,
    )
    assert isinstance(rewrite, Rewrite)
    assert rewrite.text.startswith("Address of 1832 The tariff") and "#" not in rewrite.text


def test_each_passage_is_read_for_word_overlap_once_per_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    """Re-citing weighs sentences against every passage of the run: their words and figures are
    derived once, not once per pair (that made verification quadratic in the run's evidence)."""
    from deepdraft.policy.finishing.lexical import TextFeatures
    from tests.support.verification_scenario import FactChecker
    from tests.support.verification_scenario import make_state as make_large_state

    derived: list[str] = []
    original = TextFeatures.of

    def counting(cls: type[TextFeatures], text: str) -> TextFeatures:
        derived.append(text)
        return original(text)

    monkeypatch.setattr(TextFeatures, "of", classmethod(counting))
    state = make_large_state()
    passages = [item.text for item in state.registry.items.values()]
    state, _, _ = verify("recite", FactChecker(), state)
    assert state.verification is not None and state.verification.recited > 3
    assert max(derived.count(text) for text in passages) == 1
    assert len(derived) <= len(passages) + 2 * len(state.verification.sentences)


# ---- checkpoints ---------------------------------------------------------------------------------


def journaled_pass(
    journal: Journal, policy: str, state: RunState, crash_at: int | None = None
) -> tuple[RunState, FunctionLLM, dict[int, dict[str, object]]]:
    """Verify `state` with every step journaled as the runner does (replies cached in the journal).

    Returns the state, the model, and the whole state as it was when each step was journaled.
    `crash_at`: interrupt the pass when step `crash_at` finishes, before it is journaled.
    """
    from tests.support.verification_scenario import FactChecker

    model = FunctionLLM(FactChecker())
    truth: dict[int, dict[str, object]] = {}

    def watch(event: Event) -> None:
        if isinstance(event, ActionFinished):
            if event.record.step == crash_at:
                raise KeyboardInterrupt
            truth[event.record.step] = state.snapshot()

    sink = _JournalSink(journal, "run", watch)
    llm = CachingLLM(model, journal, namespace="run")
    verifier = Verifier(llm, ResearchSettings(), OutputSettings(verify_policy=policy), sink)
    return verifier.run(state), model, truth


def checkpoint_encodings(journal: Journal) -> list[str]:
    with sqlite3.connect(journal.path) as db:
        return [row[0] for row in db.execute("SELECT encoding FROM checkpoints ORDER BY step")]


@pytest.mark.parametrize("policy", ["repair", "recite"])
def test_verification_steps_checkpoint_only_what_changed(tmp_path: Path, policy: str) -> None:
    from tests.support.verification_scenario import make_state as make_large_state

    with Journal(tmp_path / "journal.sqlite") as journal:
        journal.create_run("run", "q", "warp", {})
        state, _, truth = journaled_pass(journal, policy, make_large_state())
        assert len(truth) > 5 and state.finished_phases == ["verify"]  # several steps between first and last
        for step, expected in truth.items():  # every step's checkpoint reads back as the state was
            assert journal.checkpoint("run", step) == expected
        encodings = checkpoint_encodings(journal)
        # The first step of the pass stores the whole state, and so does the last (which rewrites
        # the report); every step between stores its changes only.
        assert encodings == ["zlib+json"] + ["zlib+json-changes"] * (len(truth) - 2) + ["zlib+json"]
        with sqlite3.connect(journal.path) as db:
            sizes = [row[0] for row in db.execute("SELECT length(state) FROM checkpoints ORDER BY step")]
        assert max(sizes[1:-1]) < sizes[0] / 5


def test_a_pass_interrupted_at_any_step_resumes_from_its_changes_without_paying_twice(
    tmp_path: Path,
) -> None:
    from tests.support.verification_scenario import make_state as make_large_state

    with Journal(tmp_path / "reference.sqlite") as journal:
        journal.create_run("run", "q", "warp", {})
        expected, reference, truth = journaled_pass(journal, "repair", make_large_state())
    for crash_at in sorted(truth)[2:-1:3]:  # inside the pass, where checkpoints are changes
        with Journal(tmp_path / f"crash-{crash_at}.sqlite") as journal:
            journal.create_run("run", "q", "warp", {})
            with pytest.raises(KeyboardInterrupt):
                journaled_pass(journal, "repair", make_large_state(), crash_at)
            assert checkpoint_encodings(journal)[-1] == "zlib+json-changes"
            latest = journal.latest_checkpoint("run")
            assert latest is not None and latest[0] == crash_at - 1
            resumed, second, _ = journaled_pass(journal, "repair", RunState.restore(latest[1]))
            assert resumed.verification == expected.verification and resumed.outline == expected.outline
            # Steps 1 to `crash_at` asked one request each before the crash; none is asked again
            # (the reply of the step in flight at the crash comes back from the cache).
            assert len(second.requests) == len(reference.requests) - crash_at


def test_a_runaway_repair_reply_is_refused_before_it_is_read_word_by_word() -> None:
    passages = ["The tariffs on imports protect our manufactures and raise revenue for the debt."]
    flood = "<thought>restate</thought><action>" + "The tariffs protect manufactures. " * 30_000 + "</action>"
    refusal = read_rewrite(flood, ["textid1"], passages, "Why tariffs?", None)
    assert refusal == "the rewrite is 1,019,999 characters long: write one sentence"


def test_a_repair_that_pastes_its_passage_is_refused() -> None:
    # As the embedded model repaired one sentence: with five sentences of its passage, word for word.
    passage = (
        "Such an event would be at once fatal to the further progress of the silver movement. "
        "Bimetallism is the desired end, and the true friends of silver will be careful not to overrun "
        "the goal and bring in silver monometallism."
    )
    pasted = f"<action>{passage.lower()} \\cite{{textid4}}</action>"
    refusal = read_rewrite(pasted, ["textid4"], [passage], "Gold or silver?", None)
    assert isinstance(refusal, str) and "copies its passage word for word" in refusal
    own = "<action>Bimetallism was the aim, and a silver-only standard would halt the silver movement \\cite{textid4}.</action>"
    assert read_rewrite(own, ["textid4"], [passage], "Gold or silver?", None).text.startswith("Bimetallism")
