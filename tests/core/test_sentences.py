"""The one sentence splitter (`deepdraft.core.sentences`) and every caller's use of it.

Callers: citation attaching and verification (prose, a line break ends a sentence), the export's
per-sentence keys and FACT's statements (prose, only a new block ends one at a line break), and
chunking (the plain rules, no abbreviations or citations: its cuts decide a KB's passages).
"""

from __future__ import annotations

import pytest

from deepdraft.core.sentences import sentence_ends, sentence_spans, sentences
from deepdraft.eval.fact import sentences as fact_sentences
from deepdraft.export.document import split_sentences
from deepdraft.policy.finishing import verify
from deepdraft.protocol import attach
from deepdraft.retrieval.documents import chunking

# ---- where a sentence ends ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("One. Two! Three? Four", ["One.", "Two!", "Three?", "Four"]),
        ("Wait... what?! Yes.", ["Wait...", "what?!", "Yes."]),
        ('He said "stop." Then left.', ['He said "stop."', "Then left."]),
        ("(As noted.) Next one.", ["(As noted.)", "Next one."]),
        # decimals, versions and domain names: no space follows the full stop
        ("Growth was 3.5 percent. Python 3.11.7 runs on example.com today.", None),
        # abbreviations and initials
        ("The U.S. economy grew. See e.g. the tables. Dr. Smith agreed, i.e. mostly.", None),
        ("Apples, pears, etc. were sold. Fig. 3 shows it. See p. 4 and pp. 5-6.", None),
        ("Smith et al. found it. J. R. R. Tolkien wrote. Plan B. Done.", None),
    ],
)
def test_latin_sentences_end_at_stops_followed_by_space(text: str, expected: list[str] | None) -> None:
    expected = (
        expected
        or {
            "Growth was 3.5 percent. Python 3.11.7 runs on example.com today.": [
                "Growth was 3.5 percent.",
                "Python 3.11.7 runs on example.com today.",
            ],
            "The U.S. economy grew. See e.g. the tables. Dr. Smith agreed, i.e. mostly.": [
                "The U.S. economy grew.",
                "See e.g. the tables.",
                "Dr. Smith agreed, i.e. mostly.",
            ],
            "Apples, pears, etc. were sold. Fig. 3 shows it. See p. 4 and pp. 5-6.": [
                "Apples, pears, etc. were sold.",
                "Fig. 3 shows it.",
                "See p. 4 and pp. 5-6.",
            ],
            "Smith et al. found it. J. R. R. Tolkien wrote. Plan B. Done.": [
                "Smith et al. found it.",
                "J. R. R. Tolkien wrote.",
                "Plan B. Done.",  # a one-letter word before a stop reads as an initial: kept together
            ],
        }[text]
    )
    assert sentences(text) == expected


def test_cjk_sentences_end_at_their_own_stops_with_no_space_after() -> None:
    assert sentences("关税上升了。农民反对！为什么？因为价格“太高。”Then English. 最后") == [
        "关税上升了。",
        "农民反对！",
        "为什么？",
        "因为价格“太高。”",
        "Then English.",
        "最后",
    ]
    assert sentences("日本語の文です。次の文」です。한국어 문장입니다. 끝") == [
        "日本語の文です。",
        "次の文」です。",
        "한국어 문장입니다.",
        "끝",
    ]


def test_citations_after_a_stop_belong_to_the_sentence_before() -> None:
    text = (
        "Tariffs rose. \\cite{textid1} \\cite{textid2} Farmers objected [2]. Prices fell. [3, p. 4] "
        "Trade grew [1, pp. 2–3]. The U.S. \\cite{textid4} New sentence.\n\\cite{textid5}\n甲说了。\\cite{textid6}乙"
    )
    assert sentences(text) == [
        "Tariffs rose. \\cite{textid1} \\cite{textid2}",
        "Farmers objected [2].",
        "Prices fell. [3, p. 4]",  # the full stop inside "p. 4" ends nothing
        "Trade grew [1, pp. 2–3].",
        "The U.S. \\cite{textid4}",  # a citation ends a sentence even after initials
        "New sentence.\n\\cite{textid5}",
        "甲说了。\\cite{textid6}",
        "乙",
    ]


def test_every_line_break_ends_a_sentence_or_only_a_new_block_does() -> None:
    text = (
        "# Heading\nA hard-wrapped\nsentence. Another\n\n- item one\n- item two\n1. first\n| a | b |\n> quote"
    )
    assert sentences(text) == [
        "# Heading",
        "A hard-wrapped",
        "sentence.",
        "Another",
        "- item one",
        "- item two",
        "1. first",
        "| a | b |",
        "> quote",
    ]
    assert sentences(text, lines="blocks") == [
        "# Heading",
        "A hard-wrapped\nsentence.",
        "Another",
        "- item one",
        "- item two",
        "1. first",
        "| a | b |\n> quote",
    ]


def test_spans_cover_the_text_between_sentences_and_skip_blank_ones() -> None:
    text = "A one.  B two\n\nC three.\n   \n"
    spans = sentence_spans(text)
    assert [text[a:b] for a, b in spans] == ["A one.", "  B two\n", "C three."]
    assert sentence_spans(text, 7, 13) == [(7, 13)]  # a window of the text
    assert sentence_spans("") == [] and sentence_spans(" \n ") == []


def test_the_plain_rules_ignore_abbreviations_and_citations() -> None:
    text = "Dr. Who. \\cite{a} Next\nline"
    assert list(sentence_ends(text, prose=False)) == [3, 8, 23]
    assert list(sentence_ends(text)) == [18, 23]


# ---- each caller ---------------------------------------------------------------------------------


def test_verification_keeps_trailing_citations_decimals_and_initials_together() -> None:
    text = "Growth was 3.5 percent in the U.S. economy. \\cite{textid1} Imports fell \\cite{textid2}.\n- A list item."
    pieces = [text[s:e].strip() for s, e in verify.sentence_spans(text)]
    assert pieces == [
        "Growth was 3.5 percent in the U.S. economy. \\cite{textid1}",
        "Imports fell \\cite{textid2}.",
        "- A list item.",
    ]


def test_attaching_cites_whole_sentences_not_pieces_of_decimals_or_initials() -> None:
    evidence = {"textid1": "Imports into the U.S. grew 3.5 percent in 1890 under the new tariff schedule."}
    text = "Imports into the U.S. grew 3.5 percent in 1890. Unrelated words about weather patterns."
    assert attach.attach_citations(text, evidence) == (
        "Imports into the U.S. grew 3.5 percent in 1890 \\cite{textid1}."
    )
    assert attach.attach_citations("关税保护了本国的制造业。", {"textid1": "关税保护制造业"}) == (
        "关税保护了本国的制造业 \\cite{textid1}。"
    )


def test_attaching_keeps_the_paragraphs_of_the_text() -> None:
    evidence = {"textid1": "Tariffs on imports protected manufactures and raised revenue for the debt."}
    text = (
        "Tariffs on imports protected manufactures.\n\nAliens landed on Mars.\n\n"
        "Tariffs raised revenue for the debt.\n- Tariffs on imports raised revenue."
    )
    assert attach.attach_citations(text, evidence) == (
        "Tariffs on imports protected manufactures \\cite{textid1}.\n\n"
        "Tariffs raised revenue for the debt \\cite{textid1}.\n- Tariffs on imports raised revenue \\cite{textid1}."
    )


def test_the_export_gives_each_sentence_on_one_line_with_its_citations() -> None:
    assert split_sentences("甲说了\\cite{textid1}。乙也说了！Then English. Done") == [
        "甲说了\\cite{textid1}。",
        "乙也说了！",
        "Then English.",
        "Done",
    ]
    assert split_sentences("A wrapped\nsentence. \\cite{textid2} Next one.\n\n- item") == [
        "A wrapped sentence. \\cite{textid2}",
        "Next one.",
        "- item",
    ]


def test_fact_statements_keep_a_citation_that_follows_the_full_stop() -> None:
    text = "Tariffs rose. [2] Farmers objected \\cite{textid1}. Trade fell!\n\n- A list item [3]\n## Next"
    assert fact_sentences(text) == [
        "Tariffs rose. [2]",
        "Farmers objected \\cite{textid1}.",
        "Trade fell!",
        "- A list item [3]",
        "## Next",
    ]


def test_chunking_cuts_at_the_plain_rules_and_trims_the_pieces() -> None:
    text = "Dr. Who came.  Then\nmore 3.5 here!”  关税。农民"
    pieces = [text[a:b] for a, b in chunking._sentences(text, 0, len(text))]
    assert pieces == ["Dr.", "Who came.", "Then", "more 3.5 here!”", "关税。", "农民"]
