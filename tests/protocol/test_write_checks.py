"""A node's text checked against the passages it cites before it is accepted (protocol/write_checks)."""

from __future__ import annotations

from deepdraft.core.evidence import Passage, Source
from deepdraft.core.state import RunState
from deepdraft.protocol.action_replies import UNGROUNDED, read_write
from deepdraft.protocol.actions import Refused, Write
from deepdraft.protocol.write_checks import (
    before_protocol_tags,
    pasted_sentences,
    sentence_faults,
    without_broken_start,
    without_debris,
    without_own_title,
)
from deepdraft.settings import ResearchSettings

QUESTION = "How did presidents discuss the gold and silver standard?"
COINAGE = (
    "The coinage of silver at the ratio of sixteen to one was urged upon the Congress in 1878, "
    "and the Treasury bought silver bullion every month under the law passed that year."
)
PANIC = "The panic shook confidence in the currency, and gold flowed out of the Treasury through the winter."
SILVER = "Under the law of that year the Treasury bought silver bullion every month \\cite{textid1}."
DRAIN = "The panic drained gold from the Treasury over the winter \\cite{textid2}."


def test_numbering_left_without_text_is_removed_and_lists_are_kept() -> None:
    text = (
        "1.2. Background: silver was coined.\nGold left the Treasury. 3.\n3.\nIt ended 3.4.5.\n1. one\n2. two"
    )
    assert (
        without_debris(text)
        == "Background: silver was coined.\nGold left the Treasury.\nIt ended\n1. one\n2. two"
    )


def test_a_name_or_number_no_cited_passage_holds_is_a_fault() -> None:
    evidence = {"textid1": COINAGE}
    good = "Silver was bought every month under the law of 1878 \\cite{textid1}."
    assert sentence_faults(good, evidence) == []
    (fault,) = sentence_faults(
        "The Congress bought silver in 1890 under pressure from Bryan \\cite{textid1}.", evidence
    )
    assert "1890, Bryan" in fault.problem and fault.droppable


def test_a_sentence_sharing_nothing_with_its_passage_is_a_fault() -> None:
    (fault,) = sentence_faults("Railroads crossed the prairie quickly \\cite{textid1}.", {"textid1": COINAGE})
    assert "says little that its cited passage says" in fault.problem and fault.droppable


def test_a_pasted_passage_is_a_fault_whether_cited_or_not() -> None:
    pasted = COINAGE.split(",")[0] + " \\cite{textid1}."
    (fault,) = sentence_faults(pasted, {"textid1": COINAGE})
    assert "copies its passage word for word" in fault.problem and fault.droppable
    uncited = COINAGE.split(",")[0] + "."
    assert sentence_faults(uncited, {"textid1": COINAGE}) == []  # only cited sentences are checked...
    (fault,) = pasted_sentences(f"Silver was coined. {uncited}", {"textid1": COINAGE})
    assert "copies a passage word for word" in fault.problem  # ... and uncited ones for pasting


def test_uncited_pasted_sentences_are_left_out_without_asking_again() -> None:
    pasted = PANIC.split(",")[1].strip().capitalize()  # "And gold flowed out of the Treasury..."
    raw = f"<action>{SILVER} {PANIC} {DRAIN}</action>"
    written = read_write(raw, _state(), ResearchSettings(max_retries=1), refused=0)
    assert isinstance(written, Write) and written.text == f"{SILVER} {DRAIN}"
    assert pasted not in written.text


def test_with_every_sentence_cited_an_uncited_one_is_cited_from_its_evidence_or_left_out() -> None:
    # The model cited two sentences and left two uncited: one recasts the panic passage's words,
    # the other is a claim of its own that no passage holds.
    recast = "Confidence in the currency was shaken by the panic, and gold left the Treasury."
    own = "Economists later agreed that bimetallism was doomed from the start."
    raw = f"<action>{SILVER} {recast} {own} {DRAIN}</action>"
    research = ResearchSettings(max_retries=1, cite_every_sentence=True)
    written = read_write(raw, _state(), research, refused=0)
    assert isinstance(written, Write)
    assert written.text == (
        f"{SILVER} Confidence in the currency was shaken by the panic, and gold left the Treasury "
        f"\\cite{{textid2}}. {DRAIN}"
    )
    assert written.sentences_cited == 1 and not written.citations_attached
    # Without the setting the uncited sentences stay as the model wrote them.
    kept = read_write(raw, _state(), ResearchSettings(max_retries=1), refused=0)
    assert isinstance(kept, Write) and own in kept.text and kept.sentences_cited == 0


def _state() -> RunState:
    state = RunState(question=QUESTION)
    for text in (COINAGE, PANIC):
        state.evidence.append(state.registry.register(Passage(text, Source("d", "Address", "/d"))))
    return state


BAD = (
    "<action>In 1896 the orator Bryan demanded free silver \\cite{textid1}. "
    "Railroads crossed the prairie quickly \\cite{textid2}. "
    "The panic drained gold from the Treasury over the winter \\cite{textid2}.</action>"
)


def test_a_write_mostly_at_fault_is_asked_again_with_the_reason() -> None:
    refused = read_write(BAD, _state(), ResearchSettings(max_retries=1), refused=0)
    assert isinstance(refused, Refused) and refused.code == UNGROUNDED
    assert "1896, Bryan" in refused.reason and "own words" in refused.reason


def test_on_the_last_try_the_unsupported_sentences_are_dropped() -> None:
    written = read_write(BAD, _state(), ResearchSettings(max_retries=1), refused=1)
    assert isinstance(written, Write)
    assert written.text == "The panic drained gold from the Treasury over the winter \\cite{textid2}."


def test_a_long_write_keeps_its_sound_sentences_rather_than_being_asked_again() -> None:
    # Two faults of five cited sentences ask again, unless what is left once they are gone still
    # holds half the words the part aims for: a re-ask of a long write came back short.
    weak = "The Treasury silver purchases changed prices across markets \\cite{textid1}."  # 2 of 7 words
    raw = BAD.replace("<action>", f"<action>{SILVER} {weak} ")
    kept = f"{SILVER} {DRAIN}"  # what is kept is held to the stricter floor: `weak` goes too
    assert len(kept.split()) == 25
    asks_again = read_write(raw, _state(), ResearchSettings(max_retries=1, node_words=60), refused=0)
    assert isinstance(asks_again, Refused) and asks_again.code == UNGROUNDED
    written = read_write(raw, _state(), ResearchSettings(max_retries=1, node_words=48), refused=0)
    assert isinstance(written, Write) and written.text == kept
    # Without a word aim (the standard preset), much at fault is asked again whatever is left.
    assert isinstance(read_write(raw, _state(), ResearchSettings(max_retries=1), refused=0), Refused)
    # On the last try the usual floor applies: only the sentences at fault are dropped.
    last = read_write(raw, _state(), ResearchSettings(max_retries=1, node_words=60), refused=1)
    assert isinstance(last, Write) and last.text == f"{SILVER} {weak} {DRAIN}"


def test_a_first_line_repeating_the_title_is_cut_and_a_title_alone_is_no_part() -> None:
    title = "Gold and silver standard: The Fall of Bimetallism"
    body = "The fall of bimetallism contracted the currency \\cite{textid1}."
    for heading in (title, f"## {title}", f"**{title}:**"):
        assert without_own_title(f"{heading}\n\n{body}", title) == body
    assert without_own_title(f"{title}: {body}", title) == body  # the title as the text's opening
    assert without_debris(f"{title}: <p>{body}") == f"{title}:\n\n{body}"  # HTML is no Markdown
    # A sentence that begins with the title's words is the part's text, not its title.
    sentence = "Gold and silver standard: the fall of bimetallism came in 1873."
    assert without_own_title(sentence, title) == sentence
    state = _state()
    from deepdraft.core.outline import Outline

    state.outline = Outline(title="Gold and silver")
    state.outline.add_tree(None, [(title, "p", []), ("Coinage", "p", []), ("Panic", "p", [])])
    state.target = "section-1"
    alone = read_write(
        f"<action>{title}</action>", state, ResearchSettings(attach_citations_after=0), refused=0
    )
    assert isinstance(alone, Refused) and "too short" in alone.reason


def test_a_list_begun_on_the_line_of_the_sentence_before_it_gets_lines_of_its_own() -> None:
    # As a quick run's summary began its list: "… question \cite{textid1}.1. There was …".
    glued = "Presidents argued over gold \\cite{textid1}.1. There was no silver country.\n2. Gold left."
    assert without_debris(glued) == (
        "Presidents argued over gold \\cite{textid1}.\n\n1. There was no silver country.\n2. Gold left."
    )
    assert without_debris("It rose 2.1. The rest fell.") == "It rose 2.1. The rest fell."


def test_debris_is_cut_without_asking_again() -> None:
    raw = "<action>The panic drained gold from the Treasury over the winter \\cite{textid2}.\n3.4.5.</action>"
    written = read_write(raw, _state(), ResearchSettings(max_retries=1), refused=0)
    assert isinstance(written, Write) and "3.4" not in written.text


def test_a_second_reply_block_written_into_the_text_is_cut_off() -> None:
    # As a 1.5B model wrote it: the text closed with a misspelt tag, then notes and a new block.
    raw = (
        f"<thought>notes</thought><action>{SILVER}< /action>\nfrom textid2\n\n<thought>\n"
        f"The passage from textid2 discusses the panic.\n<action>\n{DRAIN}"
    )
    written = read_write(raw, _state(), ResearchSettings(max_retries=1), refused=0)
    assert isinstance(written, Write) and written.text == SILVER
    assert before_protocol_tags(f"{SILVER}\n<Thought>more notes") == SILVER
    assert before_protocol_tags("Tariffs rose where x <t and y > 2.") == "Tariffs rose where x <t and y > 2."


def test_the_end_of_a_sentence_begun_in_the_notes_is_not_the_start_of_the_text() -> None:
    # The notes bound closed the thought mid-sentence; the model finished the sentence as its text.
    raw = f"<thought>textid1 says that the Treasury bought</thought><action>silver every month. {DRAIN}</action>"
    written = read_write(raw, _state(), ResearchSettings(max_retries=1), refused=0)
    assert isinstance(written, Write) and written.text == DRAIN
    assert without_broken_start(DRAIN) == DRAIN
    assert without_broken_start("- silver every month") == "- silver every month"  # a list item
    assert without_broken_start("历史上关税很高。") == "历史上关税很高。"  # no case to go by
    # A piece of a sentence and nothing else is no part: refused as too short, so asked again.
    assert without_broken_start("reliable supplies of energy \\cite{textid1}.") == ""
    fragment = "<thought>the Treasury bought</thought><action>silver every month \\cite{textid1}.</action>"
    refused = read_write(fragment, _state(), ResearchSettings(max_retries=1), refused=0)
    assert isinstance(refused, Refused) and "too short" in refused.reason


def test_a_last_sentence_cut_off_by_the_token_limit_is_removed() -> None:
    assert without_debris("Gold rose \\cite{textid1}. Silver fell and the") == "Gold rose \\cite{textid1}."
    assert without_debris("It was 3.5 percent of the whole") == "It was 3.5 percent of the whole"  # no stop
    assert without_debris("Gold rose.\n1. one\n2. two") == "Gold rose.\n1. one\n2. two"  # a list item
    assert without_debris("历史上关税很高。后来降低了") == "历史上关税很高。"


def test_no_re_ask_when_the_step_budget_would_leave_later_parts_unwritten() -> None:
    from deepdraft.core.outline import Outline

    state = _state()
    state.outline = Outline(title="Gold and silver")
    state.outline.add_tree(None, [(f"Part {i}", "p", []) for i in range(4)])
    research = ResearchSettings(max_retries=1, max_steps=22)
    state.step = 5  # three parts still to search and write after this one: room for a re-ask
    assert isinstance(read_write(BAD, state, research, refused=0), Refused)
    state.step = 15  # 7 steps left: a re-ask would eat into them
    written = read_write(BAD, state, research, refused=0)
    assert isinstance(written, Write) and written.text.startswith("The panic drained gold")


def _written(state: RunState, position: str, text: str) -> None:
    from deepdraft.core.outline import Outline

    if state.outline is None:
        state.outline = Outline(title="Gold and silver")
        state.outline.add_tree(None, [(f"Part {i}", "p", []) for i in range(3)])
    located = state.outline.find(position)
    assert located is not None
    located.node.content = text


def test_a_sentence_another_part_already_says_is_left_out() -> None:
    state = _state()
    _written(state, "section-1", f"Silver was urged upon the Congress. {SILVER}")
    state.target = "section-2"
    written = read_write(f"<action>{SILVER} {DRAIN}</action>", state, ResearchSettings(), refused=0)
    assert isinstance(written, Write) and written.text == DRAIN


def test_a_sentence_said_twice_within_a_part_is_said_once() -> None:
    state = _state()
    state.target = "section-1"
    written = read_write(
        f"<action>{DRAIN} {SILVER}\n\n{DRAIN}</action>", state, ResearchSettings(), refused=0
    )
    assert isinstance(written, Write) and written.text == f"{DRAIN} {SILVER}"


def test_a_part_made_only_of_repeats_is_kept_rather_than_emptied() -> None:
    state = _state()
    _written(state, "section-1", DRAIN)
    state.target = "section-2"
    written = read_write(f"<action>{DRAIN}</action>", state, ResearchSettings(), refused=0)
    assert isinstance(written, Write) and written.text == DRAIN


def test_a_text_that_loops_keeps_what_came_before_the_loop() -> None:
    loop = "Gold and silver circulated together in the coinage. " * 4
    raw = f"<action>{SILVER} {DRAIN} {loop}Gold and silver circ</action>"
    written = read_write(raw, _state(), ResearchSettings(), refused=0)
    assert isinstance(written, Write)
    assert written.text == f"{SILVER} {DRAIN} Gold and silver circulated together in the coinage."


def test_a_text_that_is_only_a_loop_is_asked_again() -> None:
    raw = "<action>" + "Gold rose again \\cite{textid1}. " * 6 + "</action>"
    refused = read_write(raw, _state(), ResearchSettings(), refused=0)
    assert isinstance(refused, Refused) and "repeats itself" in refused.reason


def test_too_many_citations_are_merged_where_sentences_cite_the_same_passage() -> None:
    # Seven sentences a paragraph, each true to the passage and each cited: fourteen in all.
    facts = (
        "The Treasury bought silver bullion every month",
        "Silver was coined at the ratio of sixteen to one",
        "The Congress passed the silver law in 1878",
        "The coinage of silver was urged upon the Congress",
        "The law fixed how much silver the mints coined",
        "The Treasury coined the silver bullion it bought",
        "The law of 1878 made the Treasury buy bullion every month",
    )
    first = " ".join(f"{fact} \\cite{{textid1}}." for fact in facts)
    panic = (
        "The panic shook confidence in the currency",
        "Gold flowed out of the Treasury",
        "The flow went on through the winter",
        "Confidence in the currency was shaken",
        "The Treasury lost gold in the panic",
        "The winter of the panic drained the Treasury",
        "The currency itself was in doubt during the panic",
    )
    second = " ".join(f"{fact} \\cite{{textid2}}." for fact in panic)
    raw = f"<action>{first}\n\n{second}</action>"
    written = read_write(raw, _state(), ResearchSettings(max_retries=1), refused=1)
    assert isinstance(written, Write)
    assert written.text.count("\\cite{") == 2  # once after each paragraph's run
    assert written.text.split("\n\n")[0].endswith("bullion every month \\cite{textid1}.")


def test_keys_of_passages_the_part_was_not_shown_are_dropped_where_citations_may_be_placed() -> None:
    raw = f"<action>{SILVER.replace('textid1', 'textid1, textid9')} {DRAIN.replace('textid2', 'textid7')}</action>"
    state = _state()
    written = read_write(raw, state, ResearchSettings(attach_citations_after=0), refused=0)
    assert isinstance(written, Write)
    assert "textid9" not in written.text and "textid7" not in written.text
    assert written.text.startswith(SILVER)
    # Where the model must cite on its own, it is asked again instead.
    refused = read_write(raw, state, ResearchSettings(attach_citations_after=1), refused=0)
    assert isinstance(refused, Refused) and "not textid7, textid9" in refused.reason


def test_a_plan_keeps_only_what_the_evidence_or_the_request_names() -> None:
    from deepdraft.protocol.write_checks import without_unfounded

    known = f"{QUESTION}\n{COINAGE}\n{PANIC}"
    plan = (
        "Trace the silver purchases the Congress urged in 1878. "
        "Follow the story from Andrew Johnson in 1867 to the Smoot-Hawley tariff of 1930. "
        "Explain what the panic did to the Treasury."
    )
    assert without_unfounded(plan, known) == (
        "Trace the silver purchases the Congress urged in 1878. Explain what the panic did to the Treasury."
    )
    assert without_unfounded("Cover Andrew Johnson in 1867.", known) == ""


def test_an_outline_s_plans_lose_what_no_passage_names_and_an_emptied_plan_becomes_its_title() -> None:
    import json

    from deepdraft.protocol.action_replies import read_plan
    from deepdraft.protocol.actions import InitPlan

    sections = [
        {"title": "Silver purchases", "plan": "The law of 1878. The Bland act of 1899 and Bryan."},
        {"title": "The panic", "plan": "What the panic did to the Treasury."},
        {"title": "Johnson and silver", "plan": "Andrew Johnson in 1867."},
    ]
    data = {"name": "init-plan", "title": "Gold and silver standard", "sections": sections}
    plan = read_plan(f"<action>{json.dumps(data)}</action>", _state(), ResearchSettings(depth="quick"))
    assert isinstance(plan, InitPlan)
    assert [node.plan for node in plan.sections] == [
        "The law of 1878.",
        "What the panic did to the Treasury.",
        "Johnson and silver",
    ]


def test_a_part_quoted_from_its_evidence_takes_whole_sentences_only() -> None:
    from deepdraft.protocol.attach import extract_from_evidence

    # Cut from a longer speech: it begins and ends with pieces of sentences about commerce.
    passage = (
        "to deal with commerce in its broadest sense, including labor and the business corporations. "
        "The Department of Commerce and Labor should gather the labor laws of every State. "
        "Its bureau should report upon the wages paid in the manufacturing towns and on the "
        "strikes that closed them, and upon the commerce of the"
    )
    quoted = extract_from_evidence("labor laws wages strikes commerce", {"textid1": passage})
    assert (
        quoted
        == "The Department of Commerce and Labor should gather the labor laws of every State \\cite{textid1}."
    )
