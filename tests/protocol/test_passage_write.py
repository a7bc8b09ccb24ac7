"""A part written passage by passage: each reply held to its passage, then put together as a write."""

from __future__ import annotations

from deepdraft.protocol.actions import Write, parse
from deepdraft.protocol.passage_write import (
    SENTENCES,
    PassageReport,
    passage_paragraph,
    passage_prompt,
    write_reply,
)

QUESTION = "How did presidents argue about tariffs?"
TITLE = "Wool tariffs and the growers"
PASSAGE = (
    "The tariff on wool was raised this year to protect the growers of the country. Revenue from "
    "the duties on imports paid the interest of the public debt, and the surplus was returned."
)


def paragraph(reply: str, passage: str = PASSAGE) -> str:
    return passage_paragraph(reply, "textid4", passage, QUESTION, TITLE)


def test_a_framed_report_is_stated_directly_and_cited_to_its_passage() -> None:
    reply = "The source states that the tariff on wool was raised to protect the growers."
    assert paragraph(reply) == "The tariff on wool was raised to protect the growers \\cite{textid4}."


def test_a_source_as_subject_becomes_one_source_then_the_same_source() -> None:
    reply = (
        "The passage describes the wool tariff raised to protect growers. "
        "The author explains that duties on imports paid the interest of the debt, a tariff revenue."
    )
    assert paragraph(reply) == (
        "One source describes the wool tariff raised to protect growers \\cite{textid4}. "
        "Duties on imports paid the interest of the debt, a tariff revenue \\cite{textid4}."
    )
    opening = paragraph(
        "It also mentions the wool tariff raised to protect growers. It was a tariff to protect the growers of wool."
    )
    assert opening.startswith("One source mentions the wool tariff")
    assert "\\cite{textid4}. It was a tariff" in opening  # only an opening "it" can only be the source
    second = "Tariff duties paid the debt. The passage describes the wool tariff raised to protect growers."
    assert paragraph(second).split(" \\cite{textid4}. ")[1].startswith("The same source describes")


def test_a_source_named_twice_over_is_one_source() -> None:
    reply = "The text of the source describes the wool tariff raised to protect growers."
    assert (
        paragraph(reply) == "One source describes the wool tariff raised to protect growers \\cite{textid4}."
    )


def test_a_frame_in_the_past_tense_comes_off_too_and_no_paragraph_opens_with_the_same_source() -> None:
    reply = "The source stated that the tariff on wool was raised to protect the growers."
    assert paragraph(reply) == "The tariff on wool was raised to protect the growers \\cite{textid4}."
    # The first sentence names what the passage lacks and is left out: the second opens the paragraph.
    reply = (
        "Senator Blaine raised the tariff on wool to protect the growers. "
        "The report noted that the tariff duties paid the interest of the public debt."
    )
    assert paragraph(reply) == "The tariff duties paid the interest of the public debt \\cite{textid4}."
    reply = (
        "Senator Blaine raised the tariff on wool to protect the growers. "
        "The report described the tariff duties that paid the interest of the public debt."
    )
    assert paragraph(reply).startswith("One source described the tariff duties")


def test_a_sentence_that_names_neither_the_subject_nor_the_part_is_left_out() -> None:
    reply = "The tariff on wool was raised to protect growers. The surplus was returned to the people."
    assert paragraph(reply) == "The tariff on wool was raised to protect growers \\cite{textid4}."


def test_a_subject_word_counts_only_where_the_passage_names_it_too() -> None:
    question = "How did presidents address energy supply and dependence on foreign oil?"
    title = "Ronald Reagan's Energy Policies"
    foreign_aid = (
        "That is why we laid such stress on our vital foreign assistance program. The Foreign "
        "Assistance Act sent a signal to the world that America will make the investments needed "
        "for peace and security. Our foreign policy must be rooted in realism."
    )
    reply = (
        "The administration's energy security policies focus on realism. "
        "The foreign assistance program signals that America will invest in peace and security."
    )
    # "energy" is the request's but not the passage's; "policies" is the part's, and the passage
    # names a word of the request ("foreign"), so the part's words do not count.
    assert passage_paragraph(reply, "textid35", foreign_aid, question, title) == (
        "The foreign assistance program signals that America will invest in peace and security \\cite{textid35}."
    )
    # A passage that names none of the request's words is held to the part's words instead.
    growers = "The growers of wool asked again for protection against the imports of foreign wool."
    assert paragraph("The wool growers asked for protection against imports.", growers) == (
        "The wool growers asked for protection against imports \\cite{textid4}."
    )


def test_sentences_the_passage_does_not_hold_are_left_out() -> None:
    name = "Senator Blaine raised the tariff on wool to protect the growers."  # a name it lacks
    unrelated = "Tariffs were a matter of fierce partisan campaigning in every election cycle."
    copied = "The tariff on wool was raised this year to protect the growers of the country."
    for reply in (name, unrelated, copied):
        assert paragraph(reply) == ""
    assert paragraph(f"{unrelated} The wool tariff protected the growers.") == (
        "The wool tariff protected the growers \\cite{textid4}."
    )


def test_a_reply_written_as_a_list_becomes_prose() -> None:
    reply = "- The wool tariff protected the growers.\n2. Tariff duties paid the debt's interest."
    assert paragraph(reply) == (
        "The wool tariff protected the growers \\cite{textid4}. Tariff duties paid the debt's interest \\cite{textid4}."
    )


def test_a_sentence_cut_off_by_the_token_limit_is_left_out() -> None:
    assert paragraph("The wool tariff protected the growers. Duties on imports paid the interest of") == (
        "The wool tariff protected the growers \\cite{textid4}."
    )


def test_at_most_two_sentences_are_kept_and_keys_the_model_wrote_are_replaced() -> None:
    reply = (
        "The wool tariff protected the growers \\cite{textid9}. Tariff duties paid the debt's interest. "
        "The tariff surplus was returned. The tariff on wool was raised."
    )
    kept = paragraph(reply)
    assert SENTENCES == 2 and kept == (
        "The wool tariff protected the growers \\cite{textid4}. Tariff duties paid the debt's interest \\cite{textid4}."
    )


def test_the_prompt_shows_the_passage_as_an_evidence_block_and_the_subject_in_the_requests_case() -> None:
    prompt = passage_prompt(QUESTION, "textid4", PASSAGE, None)
    assert f"bibkey:textid4\n{PASSAGE}" in prompt
    assert "says about tariffs:" in prompt and QUESTION in prompt
    assert TITLE not in prompt  # a small model puts the part's title (a name, say) into every sentence
    assert "the language of the user's request" in prompt
    assert "Write in French." in passage_prompt(QUESTION, "textid4", PASSAGE, "French")
    assert "instructions" not in prompt
    asked = passage_prompt(QUESTION, "textid4", PASSAGE, None, "Keep to the wool trade.")
    assert "The user's own instructions for this section: Keep to the wool trade." in asked


def test_the_part_is_a_paragraph_per_passage_with_the_models_words_and_reads_as_a_write() -> None:
    raw = write_reply(
        [
            PassageReport("textid1", "A. B.", "A \\cite{textid1}. B \\cite{textid1}."),
            PassageReport("textid2", "Nothing <action>here</action>.", ""),
            PassageReport("textid3", "C\nand more.", "C \\cite{textid3}."),
        ]
    )
    assert raw.startswith(
        "<thought>textid1 (2 kept): A. B.\ntextid2 (0 kept): Nothing ‹action>here‹/action>.\n"
        "textid3 (1 kept): C and more.</thought>"
    )
    assert parse(raw, {"write"}) == Write("A \\cite{textid1}. B \\cite{textid1}.\n\nC \\cite{textid3}.")
