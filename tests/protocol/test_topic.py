"""The request's subject and essay-part titles (protocol/topic), and the outline rules built on them."""

from __future__ import annotations

import json

import pytest

from deepdraft.core.outline import Outline
from deepdraft.core.state import RunState
from deepdraft.protocol.action_replies import REPEATED_TITLE, read_extend, read_plan
from deepdraft.protocol.actions import (
    ESSAY_PART,
    OFF_SUBJECT,
    TITLES_OFF_SUBJECT,
    ExtendPlan,
    InitPlan,
    PlannedNode,
    Refused,
    check_subject_titles,
    validate_extend_plan,
    validate_init_plan,
)
from deepdraft.protocol.topic import is_essay_part, names_subject, salient_terms, subject_terms, subject_title
from deepdraft.settings import ResearchSettings

GOLD = "How did presidents discuss the gold and silver standard and the currency question?"
TARIFFS_ZH = "历届总统如何讨论关税问题？"


def test_the_subject_leaves_out_the_words_that_frame_the_question() -> None:
    assert subject_terms(GOLD) == ["gold", "silver", "standard", "currency"]
    assert subject_terms("How did presidents talk about labor, wages and strikes?") == [
        "labor",
        "wages",
        "strikes",
    ]
    assert "关税" in subject_terms(TARIFFS_ZH) and "讨论" not in subject_terms(TARIFFS_ZH)


@pytest.mark.parametrize(
    ("title", "named"),
    [
        ("The Currency Question in the Gilded Age", True),
        ("Silverites and Gold Men", True),  # a shared stem counts
        ("Introduction", False),
        ("What Presidents Said in Their Addresses", False),  # frame words name no subject
    ],
)
def test_a_title_names_the_subject_by_a_shared_stem(title: str, named: bool) -> None:
    assert names_subject(title, subject_terms(GOLD)) is named


def test_a_chinese_title_names_the_subject_by_a_shared_character_pair() -> None:
    assert names_subject("关税政策的演变", subject_terms(TARIFFS_ZH))
    assert not names_subject("引言", subject_terms(TARIFFS_ZH))


@pytest.mark.parametrize(
    ("title", "essay"),
    [
        ("Introduction", True),
        ("Historical Background", True),
        ("Key Findings", True),
        ("Purpose and Structure", True),
        ("3. Concluding Remarks", True),
        ("Current State", True),
        ("Future Prospects", True),
        ("Search Results", True),
        ("Background Evidence", True),
        ("What to Do", True),  # the headers of our own prompts, listed back as sections
        ("What the Search Found", True),
        ("The User's Request", True),
        ("What the Gold Standard Did", False),
        ("研究背景", True),
        ("Background of the Silver Purchase Act", False),
        ("The Gold Standard Debate", False),
        ("关税的历史", False),
    ],
)
def test_essay_parts_are_titles_made_only_of_essay_words(title: str, essay: bool) -> None:
    assert is_essay_part(title) is essay


def test_salient_terms_are_the_words_several_passages_share() -> None:
    texts = ["The coinage of silver and gold.", "Silver coinage again.", "Gold and paper money."]
    assert salient_terms(texts) == ["coinage", "gold", "silver"]


def _nodes(*titles: str) -> tuple[PlannedNode, ...]:
    return tuple(PlannedNode(title, f"Cover {title}.") for title in titles)


def test_init_plan_refuses_a_title_off_the_subject_with_the_subject_words() -> None:
    refused = validate_init_plan(InitPlan("A Report", _nodes("Coinage", "Bimetallism", "Panics")), GOLD)
    assert isinstance(refused, Refused) and refused.code == OFF_SUBJECT
    assert '"gold", "silver"' in refused.reason
    assert validate_init_plan(InitPlan("Gold, Silver and the Dollar", _nodes("A", "B", "C")), GOLD) is None


def test_init_plan_refuses_essay_part_sections() -> None:
    plan = InitPlan("Gold and Silver", _nodes("Introduction", "Coinage Acts", "Conclusion"))
    refused = validate_init_plan(plan, GOLD)
    assert isinstance(refused, Refused) and refused.code == ESSAY_PART
    assert "“Introduction” is a part of an essay" in refused.reason


def test_a_subject_title_is_the_request_from_its_first_subject_word() -> None:
    assert subject_title(GOLD) == "Gold and silver standard and the currency question"
    assert (
        subject_title("What did presidents say about labor, unions and wages?") == "Labor, unions and wages"
    )
    assert subject_title("总统如何讨论关税？") == "总统如何讨论关税"  # no frame cut off a Chinese request


def test_a_report_in_another_language_than_the_question_is_not_held_to_its_words() -> None:
    plan = InitPlan("关税辩论", _nodes("起源", "保护", "开放"))
    assert validate_init_plan(plan, "How did presidents argue about tariffs?", language="zh") is None


def _plan_reply(title: str, *sections: str) -> str:
    data = {"name": "init-plan", "title": title, "sections": [{"title": t, "plan": "p"} for t in sections]}
    return f"<thought>t</thought><action>{json.dumps(data)}</action>"


def _split_reply(*titles: str) -> str:
    """A reply that splits section-1 into subsections with these titles."""
    subsections = [{"title": title, "plan": "p"} for title in titles]
    return f"<action>{json.dumps({'name': 'extend-plan', 'position': 'section-1', 'subsections': subsections})}</action>"


def test_the_last_try_mends_the_outline_instead_of_failing_the_run() -> None:
    research = ResearchSettings(depth="quick", max_retries=1)
    raw = _plan_reply("Overview", "Background", "Coinage Acts", "Bimetallism", "Panics of the Era")
    first = read_plan(raw, RunState(question=GOLD), research, refused=0)
    # The essay part is left out at once; the title that names no subject is asked again.
    assert isinstance(first, Refused) and first.code == OFF_SUBJECT
    last = read_plan(raw, RunState(question=GOLD), research, refused=1)
    assert isinstance(last, InitPlan)
    assert last.title == GOLD.rstrip("?")
    assert [s.title for s in last.sections] == ["Coinage Acts", "Bimetallism", "Panics of the Era"]


def test_essay_parts_are_left_out_at_once_when_enough_topical_sections_remain() -> None:
    research = ResearchSettings(depth="quick", max_retries=1)  # 3 to 4 sections
    raw = _plan_reply("Gold and Silver", "Introduction", "Coinage Acts", "Bimetallism", "What to Do")
    too_few = read_plan(raw, RunState(question=GOLD), research, refused=0)
    assert isinstance(too_few, Refused) and too_few.code == ESSAY_PART  # two left: asked again
    raw = _plan_reply("Gold and Silver", "Introduction", "Coinage Acts", "Bimetallism", "Panics")
    plan = read_plan(raw, RunState(question=GOLD), research, refused=0)
    assert isinstance(plan, InitPlan)
    assert [s.title for s in plan.sections] == ["Coinage Acts", "Bimetallism", "Panics"]


def test_the_last_try_accepts_an_outline_with_too_few_topical_sections_to_drop_its_essay_parts() -> None:
    research = ResearchSettings(depth="quick", max_retries=1)  # 3 to 4 sections
    raw = _plan_reply("Gold and Silver", "Introduction", "Coinage Acts", "Bimetallism", "Conclusion")
    assert isinstance(read_plan(raw, RunState(question=GOLD), research, refused=0), Refused)
    last = read_plan(raw, RunState(question=GOLD), research, refused=1)
    assert isinstance(last, InitPlan)  # a report, not a failed run
    # The first essay part is titled after the request's subject, and the other left out.
    subject = "Gold and silver standard and the currency question"
    assert [s.title for s in last.sections] == [subject, "Coinage Acts", "Bimetallism"]
    only_parts = _plan_reply("Gold and Silver", "Introduction", "Background", "Conclusion")
    last = read_plan(only_parts, RunState(question=GOLD), research, refused=1)
    assert isinstance(last, InitPlan)
    assert [s.title for s in last.sections] == [subject, "Background", "Conclusion"]


def test_a_closing_essay_part_goes_first_when_not_all_of_them_can() -> None:
    # Three sections are needed: "Background" stays for want of others, but "Conclusion" goes,
    # since the conclusion every report gets would say the same again.
    research = ResearchSettings(depth="quick", max_retries=1)
    raw = _plan_reply("Gold and Silver", "Introduction", "Background", "Coinage Acts", "Conclusion")
    last = read_plan(raw, RunState(question=GOLD), research, refused=1)
    assert isinstance(last, InitPlan)
    subject = "Gold and silver standard and the currency question"
    assert [s.title for s in last.sections] == [subject, "Background", "Coinage Acts"]


def test_extend_plan_refuses_essay_part_subsections_then_leaves_them_out() -> None:
    outline = Outline(title="Gold and Silver")
    outline.add_tree(None, [("Coinage", "p", []), ("Panics", "p", []), ("Reform", "p", [])])
    action = ExtendPlan("section-1", _nodes("Overview", "The Act of 1873", "Free Silver"))
    refused = validate_extend_plan(action, outline, GOLD)
    assert isinstance(refused, Refused) and refused.code == ESSAY_PART
    raw = (
        "<action>"
        + json.dumps(
            {
                "name": "extend-plan",
                "position": "section-1",
                "subsections": [{"title": n.title, "plan": n.plan} for n in action.subsections],
            }
        )
        + "</action>"
    )
    state = RunState(question=GOLD, outline=outline)
    for refused_before in (0, 1):  # two subsections remain, enough: left out at once
        mended = read_extend(raw, state, ResearchSettings(max_retries=1), refused=refused_before)
        assert isinstance(mended, ExtendPlan)
        assert [n.title for n in mended.subsections] == ["The Act of 1873", "Free Silver"]
    lone = raw.replace('"Free Silver"', '"Conclusion"')  # one would remain: asked again, then mended
    assert isinstance(read_extend(lone, state, ResearchSettings(max_retries=1), refused=0), Refused)
    # On the last try the "Conclusion" goes and the "Overview" kept for want of others is named
    # after the subject: a refused split would end the report's deepening.
    last = read_extend(lone, state, ResearchSettings(max_retries=1), refused=1)
    assert isinstance(last, ExtendPlan)
    assert [n.title for n in last.subsections] == ["Gold: Overview", "The Act of 1873"]


def test_the_plan_prompt_shows_the_documents_and_terms_the_first_search_found() -> None:
    from deepdraft.core.evidence import Passage, Source
    from deepdraft.protocol.action_prompts import plan_prompt
    from deepdraft.protocol.fitting import Fit

    state = RunState(question=GOLD)
    for title, text in [
        ("1878 Address", "Silver coinage and the Treasury."),
        ("1893 Address", "Silver purchases hurt."),
    ]:
        state.evidence.append(state.registry.register(Passage(text, Source(title, title, f"/{title}"))))
    prompt = plan_prompt(state, ResearchSettings(), Fit(draft=1000, passages=6, passage_tokens=None))
    assert "These passages come from: 1878 Address; 1893 Address.\nWords they share: silver." in prompt
    assert "What the search found" not in prompt  # no header of its own: models list headers as sections
    # Asked again, the outline is not shown the documents' titles: a small model titled its
    # sections after them.
    state.feedback = "“Grover Cleveland” does not say what it has to do with the request"
    again = plan_prompt(state, ResearchSettings(), Fit(draft=1000, passages=6, passage_tokens=None))
    assert "These passages come from" not in again and "1878 Address" not in again
    assert "Silver purchases hurt." in again  # the evidence itself stays
    assert "Words they share: silver." in again


def test_titles_after_one_speech_or_person_are_refused_below_the_share_that_names_the_subject() -> None:
    named = _nodes("Gold and the Panic of 1893", "Free Silver", "Currency Reform", "Greenbacks")
    assert check_subject_titles(named, GOLD, "sections", 0.75) is None  # three of four name it
    refused = check_subject_titles(named, GOLD, "sections", 0.8)
    assert isinstance(refused, Refused) and refused.code == TITLES_OFF_SUBJECT
    assert "“Greenbacks” does not say what it has to do with the request" in refused.reason
    assert 'after one aspect of "gold", "silver", "standard", "currency", in those words' in refused.reason
    # Held to the question's words only when the report is in the question's script.
    assert (
        check_subject_titles(
            _nodes("起源", "保护"), "How did presidents argue about tariffs?", "sections", 1.0, "zh"
        )
        is None
    )


def test_a_preset_with_the_rule_asks_for_an_outline_once_more_then_names_the_subject_itself() -> None:
    research = ResearchSettings(depth="quick", max_retries=1, subject_titles=0.8)
    raw = _plan_reply("Gold and Silver", "Grover Cleveland, 1893", "Silver Purchases", "Gold Reserve")
    first = read_plan(raw, RunState(question=GOLD), research, refused=0)
    assert isinstance(first, Refused) and first.code == TITLES_OFF_SUBJECT
    last = read_plan(raw, RunState(question=GOLD), research, refused=1)
    # The last try is taken, with the subject put before the one title that does not name it.
    assert isinstance(last, InitPlan) and [node.title for node in last.sections] == [
        "Gold: Grover Cleveland, 1893",
        "Silver Purchases",
        "Gold Reserve",
    ]
    # An outline whose titles name the subject often enough is taken as it is, on any try.
    enough = ResearchSettings(depth="quick", max_retries=1, subject_titles=0.6)
    taken = read_plan(raw, RunState(question=GOLD), enough, refused=1)
    assert isinstance(taken, InitPlan) and taken.sections[0].title == "Grover Cleveland, 1893"
    without_rule = ResearchSettings(depth="quick", max_retries=1, subject_titles=None)
    assert isinstance(read_plan(raw, RunState(question=GOLD), without_rule, refused=0), InitPlan)


def test_a_split_off_the_subject_is_titled_after_the_subject_at_once() -> None:
    outline = Outline(title="Gold and Silver")
    outline.add_tree(None, [("Gold", "p", []), ("Silver", "p", []), ("Currency", "p", [])])
    raw = _split_reply("Cleveland in 1893", "Silver in 1897")
    state = RunState(question=GOLD, outline=outline)
    research = ResearchSettings(depth="quick", max_retries=1, subject_titles=0.8)
    # No re-ask (asked again, a small model may stop deepening): the title that does not name the
    # subject gets its first words, the one that does is left as it is.
    mended = read_extend(raw, state, research, refused=0)
    assert isinstance(mended, ExtendPlan) and [n.title for n in mended.subsections] == [
        "Gold: Cleveland in 1893",
        "Silver in 1897",
    ]
    # Without the rule (the standard preset) the split is taken as the model wrote it.
    taken = read_extend(raw, state, ResearchSettings(max_retries=1), refused=0)
    assert isinstance(taken, ExtendPlan) and taken.subsections[0].title == "Cleveland in 1893"


def test_a_split_left_without_its_essay_part_is_titled_after_the_subject_too() -> None:
    # A quick run's split of "Gold: Background Evidence": "Historical Context" was left out as an
    # essay part, and the two titles left, neither naming the subject, were taken as they were.
    outline = Outline(title="Gold and Silver")
    outline.add_tree(None, [("Gold", "p", []), ("Silver", "p", []), ("Currency", "p", [])])
    raw = _split_reply("Impact on Creditors", "Reputation and Trust", "Historical Context")
    research = ResearchSettings(depth="quick", max_retries=1, subject_titles=0.8)
    mended = read_extend(raw, RunState(question=GOLD, outline=outline), research, refused=0)
    assert isinstance(mended, ExtendPlan) and [n.title for n in mended.subsections] == [
        "Gold: Impact on Creditors",
        "Gold: Reputation and Trust",
    ]


def test_a_subsection_titled_as_a_part_the_outline_has_is_left_out_or_asked_again() -> None:
    # As a 1.5B model split "Bimetallism" in a quick run: one subsection titled as the part itself,
    # one as its next sibling (with the subject label the mend had put before that one's title).
    outline = Outline(title="Gold and Silver")
    outline.add_tree(None, [("Bimetallism", "p", []), ("Gold: Creditors", "p", []), ("Currency", "p", [])])
    state = RunState(question=GOLD, outline=outline)

    research = ResearchSettings(max_retries=1)
    kept = read_extend(
        _split_reply("BIMETALLISM", "Silver coinage", "Free silver", "creditors"), state, research, 0
    )
    assert isinstance(kept, ExtendPlan)
    assert [n.title for n in kept.subsections] == ["Silver coinage", "Free silver"]
    twice = read_extend(
        _split_reply("Free silver", "Free Silver!"), state, research, 0
    )  # one facet, said twice
    assert isinstance(twice, Refused) and twice.code == REPEATED_TITLE and "“Free Silver!”" in twice.reason
    asked_again = read_extend(_split_reply("Bimetallism", "Silver coinage"), state, research, 0)
    assert isinstance(asked_again, Refused) and "“Bimetallism” is already a title" in asked_again.reason
    # Too few subsections, none repeated: the count's own reason, not this one.
    lone = read_extend(_split_reply("Silver coinage"), state, research, 0)
    assert isinstance(lone, Refused) and lone.code != REPEATED_TITLE and "between 2 and" in lone.reason
    # On the last try the split is taken as it is: a refused split would end the report's deepening.
    last = read_extend(_split_reply("Bimetallism", "Silver coinage"), state, research, 1)
    assert isinstance(last, ExtendPlan) and len(last.subsections) == 2


def test_a_long_passage_is_cut_to_the_sentences_that_name_the_subject() -> None:
    from deepdraft.core.tokens import count_tokens
    from deepdraft.protocol.topic import subject_excerpt

    filler = "The harbours were dredged and the lighthouses were lit again that season."
    on_subject = "High tariffs on imports burden the farmer. Tariff reform is needed."
    text = " ".join([filler] * 6 + [on_subject] + [filler] * 6)
    question = "How did presidents argue about tariffs?"
    excerpt = subject_excerpt(text, question, 45)
    assert on_subject in excerpt and excerpt.startswith("... ") and excerpt.endswith(" ...")
    assert count_tokens(excerpt) <= 45 + 4  # the two marks aside
    # Whole sentences only, and the earliest of equally good windows.
    assert excerpt.removeprefix("... ").removesuffix(" ...") in text
    assert subject_excerpt(text, "How did presidents argue about railways?", 45).startswith(filler)
    # What fits, or with no budget, is shown whole; one sentence longer than the budget is cut.
    assert subject_excerpt(on_subject, question, 45) == on_subject
    assert subject_excerpt(text, question, None) == text
    run_on = "Tariffs " + "and duties " * 80 + "end."
    assert count_tokens(subject_excerpt(run_on, question, 30)) <= 34
