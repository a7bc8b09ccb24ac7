"""Writing a part one passage at a time: the writer for a small model (`research.write_by_passage`).

Shown a part's six passages at once and asked for a paragraph on each, a 1.5B model wrote two to
four sentences in all (35-77 words a part over one smoke run), often about none of them: of the
write in one recorded step, three of four sentences named figures no passage held. Shown one
passage at a time with a short prompt, the same model reported what each one said (380-490
words from the same six passages, in about the minute the whole write took), so the part is
built from those reports: one paragraph per passage, every sentence cited to it.

What the model hands back is held to its passage here, sentence by sentence, before the part's
text is read like any write (`action_replies.read_write`):

- a sentence cut off by the token limit is left out, and at most `SENTENCES` are kept (a list's
  marks are taken off: each paragraph is prose);
- the frame a small model puts around a report ("The source states that ...") is taken off, and
  a source as the sentence's subject (or "it" reporting, at a paragraph's start) becomes "One
  source" (the citation says which);
- a sentence that names no subject word of the request that its passage names too is left out
  (the part's words count where the passage names none of the request's): the model reports
  whatever its passage says, a State of the Union passage says many things, and a subject word
  the passage lacks was taken from the prompt;
- a sentence with a number or name the passage lacks, with under `SUPPORT` of its content words
  in the passage, or copying `COPIED_RUN` words of it is left out (`write_checks`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from deepdraft.core.citations import CITE_WITH_SPACE, CITED_SUBJECT
from deepdraft.core.evidence import evidence_entry
from deepdraft.core.sentences import sentence_spans
from deepdraft.protocol import prompts
from deepdraft.protocol.topic import names_subject, subject_terms, subject_title
from deepdraft.protocol.write_checks import sentence_faults, without_sentences

SENTENCES = 2
"""Most sentences kept from one passage's reply (the prompt asks for one or two)."""
REPLY_TOKENS = 80
"""Most tokens of one passage's reply: two short sentences, and a little room. (At 120, the three
parts of a smoke run took 10 s longer each and kept the same words: a reply cut off at 80 was
nearly always in a third sentence, past the `SENTENCES` kept.)"""
SUPPORT = 0.5
"""Least share of a sentence's content words found in its passage: the quick preset's judge
floor (`output.judge_floor`), so verification keeps what is kept here."""
_SOURCE_NOUN = (
    r"(?:source(?:\s+text)?|passage|text|excerpt|document|address|speech|author|speaker|writer|report)"
)
_VERB = (  # present or past: "states", "stated"
    r"(?:also\s+)?(?:stat(?:es?|ed)|says?|said|not(?:es?|ed)|mention(?:s|ed)?|argu(?:es?|ed)|explain(?:s|ed)?|"
    r"report(?:s|ed)?|suggest(?:s|ed)?|emphasi[sz](?:es?|ed)|stress(?:es|ed)?|highlight(?:s|ed)?|"
    r"indicat(?:es?|ed)|add(?:s|ed)?|describ(?:es?|ed)|discuss(?:es|ed)?|propos(?:es?|ed)|urg(?:es?|ed)|"
    r"claim(?:s|ed)?|points?\s+out|pointed\s+out|underscor(?:es?|ed)|acknowledg(?:es?|ed)|assert(?:s|ed)?|"
    r"warn(?:s|ed)?|calls?\s+for|called\s+for|outlin(?:es?|ed)|focus(?:es|ed)?\s+on)"
)
_FRAME_THAT = re.compile(
    rf"^(?:(?:the|this)\s+{_SOURCE_NOUN}|it|he|she|they)\s+{_VERB}\s+that\s+", re.IGNORECASE
)
_FRAME_STATING = re.compile(  # "The source discusses the tariff, stating that ..."
    rf"^(?:the|this)\s+{_SOURCE_NOUN}\s+{_VERB}\b[^.;]{{0,160}}?,?\s+(?:by\s+)?(?:stating|saying|noting|"
    r"mentioning|arguing|explaining|emphasi[sz]ing|suggesting|highlighting|pointing\s+out)\s+that\s+",
    re.IGNORECASE,
)
_ACCORDING = re.compile(rf"^according\s+to\s+(?:the|this)\s+{_SOURCE_NOUN},\s*", re.IGNORECASE)
_SOURCE_SUBJECT = re.compile(  # "The text of the source ...": the whole phrase is the source
    rf"^(?:the|this)\s+{_SOURCE_NOUN}(?:\s+(?:of|from|in)\s+(?:the|this)\s+{_SOURCE_NOUN})?\b", re.IGNORECASE
)
_PRONOUN_REPORTING = re.compile(rf"^(?:it|they)\s+(?={_VERB}\b)", re.IGNORECASE)
_LIST_MARK = re.compile(r"^(?:[-*•]|\d{1,2}[.)])\s+")  # a reply written as a list
_FINISHED = re.compile(r"[.!?。！？][\"'”’)\]]*$")


def subject_of(question: str) -> str:
    """What the prompt asks about: the request from its first subject word on, in the request's
    own case ("tariffs", not "Tariffs")."""
    title = subject_title(question)
    lowered = title[:1].lower() + title[1:]
    return lowered if lowered in question else title


def passage_prompt(
    question: str, key: str, passage: str, language: str | None, instructions: str = ""
) -> str:
    """The prompt for the passage `key`, shown as an evidence block (`bibkey:KEY`, then its text)
    like every passage the protocol shows; `instructions`: the user's own for this part (a command
    on a finished run, e.g. `deepdraft rewrite --instructions`).

    The part's title is not shown: the passage was found for it already, and a small model shown
    "Jimmy Carter's Oil Supply Policy" put that name into its sentences on passages that never name
    him (in one smoke run 30 of 47 passages kept nothing, 22 of them for that name)."""
    return prompts.render(
        "write_passage",
        question=question,
        passage=evidence_entry(key, passage),
        subject=subject_of(question),
        language=language or "",
        instructions=instructions,
    )


def passage_paragraph(reply: str, key: str, passage: str, question: str, title: str) -> str:
    """The sentences of `reply` that hold up against `passage`, each cited to `key`; "" for none."""
    terms = subject_words_of(passage, question, title)
    kept: list[str] = []
    text = reply.strip().strip('"“”').strip()
    for start, end in sentence_spans(text):
        if len(kept) == SENTENCES:
            break
        # Keys the model wrote itself go: the passage's own citation is placed below.
        sentence = _LIST_MARK.sub("", " ".join(CITE_WITH_SPACE.sub("", text[start:end]).split()))
        if not _FINISHED.search(sentence):
            continue  # cut off by the token limit
        sentence = _unframed(sentence, first=not kept)
        if len(sentence.split()) < 4 or not names_subject(sentence, terms):
            continue
        kept.append(_cited(sentence, key))
    paragraph = " ".join(kept)
    faults = sentence_faults(paragraph, {key: passage}, min_support=SUPPORT)
    paragraph = without_sentences(paragraph, faults) if faults else paragraph
    # "The same source" follows a sentence that the checks may have just left out.
    return re.sub(r"^The same source\b", CITED_SUBJECT, paragraph)


def subject_words_of(passage: str, question: str, title: str) -> list[str]:
    """The subject words a sentence on `passage` must name one of: the request's that the passage
    names too (the part's, when it names none of the request's).

    A subject word the passage lacks came from the prompt, not the passage: a small model asked
    about "energy supply and dependence on foreign oil" wrote "The administration's energy security
    policies focus on realism" of a passage on foreign aid that never names energy. Counting the
    part's words too let "policy" carry a sentence on trade into "Ronald Reagan's Energy Policies"."""
    named = [term for term in subject_terms(question) if names_subject(passage, [term])]
    return named or [term for term in subject_terms(title) if names_subject(passage, [term])]


def _unframed(sentence: str, *, first: bool) -> str:
    """`sentence` without the frame of a report on a source: "The source states that X" gives X;
    "The passage discusses X" gives "One source discusses X" ("The same source ..." after the
    paragraph's first sentence)."""
    for frame in (_FRAME_THAT, _FRAME_STATING, _ACCORDING):
        if match := frame.match(sentence):
            rest = sentence[match.end() :]
            return rest[:1].upper() + rest[1:]
    if first and (match := _PRONOUN_REPORTING.match(sentence)):
        # "It also mentions X" opening a paragraph: "it" can only be the source.
        return f"{CITED_SUBJECT} " + re.sub(r"^also\s+", "", sentence[match.end() :])
    return _SOURCE_SUBJECT.sub(CITED_SUBJECT if first else "The same source", sentence, count=1)


def _cited(sentence: str, key: str) -> str:
    """`sentence` with `\\cite{key}` before its final punctuation."""
    match = _FINISHED.search(sentence)
    assert match is not None
    return f"{sentence[: match.start()].rstrip()} \\cite{{{key}}}{sentence[match.start() :]}"


@dataclass(frozen=True)
class PassageReport:
    """What the model said of one passage, and the paragraph kept from it ("" for nothing)."""

    key: str
    reply: str
    paragraph: str


NOTHING_KEPT = "no passage gave a sentence on the subject that held up against it"
"""Why a part written passage by passage is asked again when every paragraph came back empty."""


def nothing_kept(reply: str) -> bool:
    """Whether `reply` (as `write_reply` puts it together) holds no paragraph at all."""
    body = reply.partition("<action>")[2].rpartition("</action>")[0]
    return not body.strip()


def write_reply(reports: list[PassageReport]) -> str:
    """The part put together as a write's reply: in the thought, each passage's key, how many
    sentences were kept and the model's own words (so the journal shows what it said); then one
    paragraph per passage that kept a sentence, in the order given."""
    notes = "\n".join(
        f"{report.key} ({len(list(sentence_spans(report.paragraph)))} kept): "
        # The notes may not close the thought early: a "<" of the model's becomes a look-alike.
        + " ".join(report.reply.split()).replace("<", "‹")
        for report in reports
    )
    body = "\n\n".join(report.paragraph for report in reports if report.paragraph)
    return f"<thought>{notes}</thought>\n<action>{body}</action>"
