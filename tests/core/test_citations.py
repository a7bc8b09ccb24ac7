"""Malformed citation commands, as models write them, are repaired or dropped (issue 18)."""

from __future__ import annotations

import pytest

from deepdraft.core.citations import cited_keys, normalise_citations, repair_cite_commands


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("Rose \\citetextid1.", "Rose \\cite{textid1}.", id="no-braces"),
        pytest.param(
            "Rose \\citetextid1\\citetextid2.", "Rose \\cite{textid1}\\cite{textid2}.", id="two-glued"
        ),
        pytest.param("Rose \\cite textid1, textid2.", "Rose \\cite{textid1, textid2}.", id="space-no-braces"),
        pytest.param("Rose \\cite:textid1.", "Rose \\cite{textid1}.", id="colon"),
        pytest.param("Rose \\cite[textid1].", "Rose \\cite{textid1}.", id="square-brackets"),
        pytest.param("Rose \\cite(textid1).", "Rose \\cite{textid1}.", id="parentheses"),
        pytest.param("Rose \\cite{textid1.", "Rose \\cite{textid1}.", id="unclosed"),
        pytest.param(
            "Rose \\cite{textid1, textid3 and fell",
            "Rose \\cite{textid1, textid3} and fell",
            id="unclosed-list",
        ),
        pytest.param("Rose \\citep{textid1}.", "Rose \\cite{textid1}.", id="natbib-citep"),
        pytest.param("Rose \\citet{textid2}.", "Rose \\cite{textid2}.", id="natbib-citet"),
        pytest.param("Rose \\cite[p. 4]{textid1}.", "Rose \\cite{textid1}.", id="optional-argument"),
        pytest.param("Rose \\\\cite{textid1}.", "Rose \\cite{textid1}.", id="doubled-backslash"),
        pytest.param("Rose cite{textid1}.", "Rose \\cite{textid1}.", id="no-backslash"),
        pytest.param("Rose \\cite.", "Rose.", id="bare-command-dropped"),
        pytest.param("Rose \\cite[see above].", "Rose.", id="no-key-dropped"),
        # Left as they are: well-formed (an empty or unknown one is validation's to refuse) or not a cite.
        pytest.param("Rose \\cite{textid1}.", "Rose \\cite{textid1}.", id="well-formed"),
        pytest.param("Rose \\cite{}.", "Rose \\cite{}.", id="empty-kept-for-validation"),
        pytest.param("Rose \\cite{smith2020}.", "Rose \\cite{smith2020}.", id="unknown-kept-for-validation"),
        pytest.param("He \\cited it.", "He \\cited it.", id="another-command"),
    ],
)
def test_malformed_citation_commands_are_repaired(text: str, expected: str) -> None:
    assert repair_cite_commands(text) == expected
    assert normalise_citations(text) == expected


def test_a_repaired_command_counts_as_one_citation() -> None:
    assert cited_keys(normalise_citations("A \\citetextid1 and B \\cite[textid2, textid3].")) == [
        ["textid1"],
        ["textid2", "textid3"],
    ]


def test_a_passage_named_by_its_key_as_a_subject_becomes_a_cited_source() -> None:
    text = (
        "No silver country has gold in circulation.\n\n"
        "Bibkey:textid7 discusses how the government can pay its debts. It shows more.\n\n"
        "[textid2] provides evidence that the ratio was 25.35 per cent."
    )
    assert normalise_citations(text) == (
        "No silver country has gold in circulation.\n\n"
        "One source discusses how the government can pay its debts \\cite{textid7}. It shows more.\n\n"
        "One source provides evidence that the ratio was 25.35 per cent \\cite{textid2}."
    )
    # Citations inside a sentence, or two cited subjects, are left as they are.
    kept = "Also \\cite{textid4} notes it. \\cite{textid1} and \\cite{textid3} show much."
    assert normalise_citations(kept) == kept


def test_a_passage_named_as_the_passage_from_its_key_becomes_a_cited_source() -> None:
    # As the embedded model wrote a part and a conclusion: the passage, not the subject, as subject.
    text = "Gold left. The passage from textid6 mentions the dangers of bimetallism. This source [textid3]: shows it."
    assert normalise_citations(text) == (
        "Gold left. One source mentions the dangers of bimetallism \\cite{textid6}. One source shows it \\cite{textid3}."
    )
    kept = "Much is said in the text \\cite{textid4} about gold. Texts of that year are lost."
    assert normalise_citations(kept) == kept
