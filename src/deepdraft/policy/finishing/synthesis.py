"""The final synthesis pass: an executive summary, a conclusion, and a check of the question's terms.

Runs after the policy has stopped (and after verification, so it builds on checked text):

1. **Summary and conclusion.** The model sees the question and the condensed report — the same
   view the deepening decision reads, with each node's `\\cite{textidN}` keys — and writes Markdown
   that may cite only keys the sections cite (no new evidence can enter this way). A reply is
   validated: citations present and all among those keys, the language rule of `actions.py`,
   length bounds, no looping text. A refused reply is asked again with the reason, a bounded number
   of times; a part that still fails is left out with a note — never written by deepdraft itself.
2. **Constraints.** Explicit requirements in the question are found by rules (English and Chinese
   regular expressions for length, language, format and section counts) and, only when the
   question has words that announce them ("must cover", "include", "包括" …), by one LLM extraction
   with a JSON schema for required items and the audience. Each is checked: lengths by counting
   words (Chinese: characters), language by script, format by Markdown structure, required items by
   their words in the headings and text and, when that fails, by an LLM judge (which also judges the
   audience). Every result is a `ConstraintCheck` with the evidence for it.

   What is fixed: only what is cheap and honest to fix. A required item the report misses is named
   in a "Not covered" line at the end of the conclusion; a report that is too short or too long is
   left as it is, and the check says so. Padding a report or cutting it after the fact would
   trade a visible failure for a hidden one.

Every LLM exchange is journaled as a step with its checkpoint (see `policy/calls.py`), so an
interrupted pass resumes where it stopped and replays paid replies from the cache. When the LLM
budget runs out, the parts not yet written are omitted with a note and the checks that need the
judge are recorded as not checked.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from deepdraft.core.citations import CITE, cited_keys, normalise_citations
from deepdraft.core.language import wants_chinese
from deepdraft.core.sentences import sentence_spans
from deepdraft.core.state import RunState
from deepdraft.core.tokens import count_tokens as estimate_tokens
from deepdraft.core.verification import ConstraintCheck, SynthesisProgress
from deepdraft.errors import LLMBudgetExhausted, LLMContextOverflow
from deepdraft.events import EventSink, SynthesisFinished
from deepdraft.policy.calls import FinishingCalls
from deepdraft.policy.finishing.terms import (
    MAX_ITEMS,
    Terms,
    count_words,
    find_terms,
    grounded_items,
    item_found,
    needs_extraction,
    rule_checks,
)
from deepdraft.policy.finishing.verdicts import JUDGE_TRIES, parse_verdicts, verdict_schema, verdict_shape
from deepdraft.ports import LLM, ChatRequest, ChatResult
from deepdraft.protocol import prompts
from deepdraft.protocol.actions import Refused, language_problem, repetition, shares_run, split_reply
from deepdraft.protocol.attach import attach_citations, content_words
from deepdraft.protocol.exchange import Attempt, Turn
from deepdraft.protocol.fitting import Fit, fit_prompt
from deepdraft.protocol.grammar import reply_shape
from deepdraft.protocol.json_reply import find_json
from deepdraft.protocol.write_checks import before_loop, without_debris, without_repeats
from deepdraft.settings import ResearchSettings

PHASE = "synthesis"
PART_TRIES = 3
"""Drafts of the summary (and of the conclusion) before it is left out."""
LENGTH_BOUNDS = {"summary": (40, 300), "conclusion": (40, 350)}
"""Words for an English text; Chinese texts count characters, twice these bounds."""
_MAX_CHARS_PER_UNIT = 40
"""A reply longer than this many characters per allowed word is too long whatever its words."""
PART_NAMES = {"summary": "executive summary", "conclusion": "conclusion"}
EXTRACTION_SCHEMA = {
    "type": "object",
    "properties": {
        "required_items": {"type": "array", "items": {"type": "string"}, "maxItems": MAX_ITEMS},
        "audience": {"type": "string"},
    },
    "required": ["required_items", "audience"],
    "additionalProperties": False,
}

_HEADING_LINE = re.compile(
    r"^\s*(?:#{1,6}\s+.*|\*\*[^*\n]{1,40}\*\*:?|[^\n]{0,30}(?:summary|conclusion|摘要|结论|总结)[:：]?)\s*$",
    re.I,
)


# ---- counting and reading text (pure) -------------------------------------------------------------


def sections_keys(state: RunState) -> list[str]:
    """Keys the written sections cite, in order of first citation (the only ones a summary may cite)."""
    assert state.outline is not None
    keys: dict[str, None] = {}
    for located in state.outline.walk():
        for group in cited_keys(located.node.content or ""):
            keys.update((key, None) for key in group if key in state.registry)
    return list(keys)


def read_part(
    raw: str,
    part: str,
    allowed: Sequence[str],
    question: str,
    language: str | None,
    attach_from: Mapping[str, str] | None = None,
    instructions: str = "",
) -> str | tuple[None, str]:
    """The summary or conclusion in the model's reply, validated; or (None, why it was refused).

    `attach_from` (key → passage text): when the text cites nothing, cite each sentence from the
    passage it overlaps most, dropping sentences that match none (see `attach.py`) — what a write
    gets from a small model that will not cite. `instructions`: what the prompt asked (see
    `instructions_of`), which the text must not restate.
    """
    body = split_reply(raw).body
    if body is None:
        return None, "the reply has no <action>…</action> block"
    chinese = wants_chinese(question, language)
    low, high = LENGTH_BOUNDS[part]
    low, high = (low * 2, high * 2) if chinese else (low, high)
    unit = "characters" if chinese else "words"
    if len(body) > high * _MAX_CHARS_PER_UNIT:  # refused before a runaway reply is read word by word
        return None, f"write between {low} and {high} {unit} (this has {len(body):,} characters)"
    # Numbering left without text and a last sentence cut off by the token limit are never content.
    text = without_debris(normalise_citations(body.strip().strip("`").strip()))
    lines = text.splitlines()
    if lines and _HEADING_LINE.match(lines[0]) and len(lines) > 1:
        text = "\n".join(lines[1:]).strip()  # the heading is the renderer's job
    if repetition(text) and (start := before_loop(text)):
        text = start  # what came before a loop is kept; it is then held to the bounds as a whole
    # A sentence said twice is said once: a quick run's conclusion was one paragraph, then "In
    # conclusion, …" and the same four sentences again.
    text = without_repeats(without_scaffolding(text), ())
    if instructions and shares_run(text, instructions, INSTRUCTION_RUN):
        name = PART_NAMES.get(part, part)
        return None, f"write the {name} itself, about the findings; do not restate these instructions"
    words = count_words(text)
    if not low <= words <= high:
        return None, f"write between {low} and {high} {unit} (this has {words})"
    cited = [key for group in cited_keys(text) for key in group]
    if not cited and attach_from:
        text = attach_citations(text, attach_from) or text
        cited = [key for group in cited_keys(text) for key in group]
    if not cited:
        return None, "back the findings with the sections' citations, like \\cite{" + allowed[0] + "}"
    unknown = sorted(set(cited) - set(allowed))
    if unknown:
        return None, f"cite only keys the report's sections cite; not {', '.join(unknown)}"
    if any(not group for group in cited_keys(text)):
        return None, "a \\cite{} holds no key"
    if problem := repetition(text) or language_problem(text, question, language):
        return None, problem
    return text


# What a small model writes about the part rather than in it. Asked for a summary, the embedded
# model wrote "The executive summary should begin with a clear statement that answers the user's
# request directly. This could be something like "<the statement>". Next, the report should
# provide the main findings ..." (a quick run's summary opened with the first two), or listed its
# findings after "The main findings behind these answers are supported by:" as lines of section
# names and keys ("- Section-1: <textid8>, <textid9>"), which the report printed.
_ABOUT_THE_PART = re.compile(
    r"\bexecutive\s+summary\b|\b(?:the|this)\s+(?:summary|conclusion|report)\s+"
    r"(?:should|must|needs?\s+to|could|would)\b|^\W*this\s+could\s+include\b",
    re.IGNORECASE,
)
# 'This could be something like "X"', 'The first sentence of the executive summary is: "X"': X is
# the text itself (a sentence about the part that quotes none goes, `_ABOUT_THE_PART`).
_QUOTED_EXAMPLE = re.compile(
    r"(?:^|(?<=[.!?]\s))[^\"“\n.!?]*?(?:\b(?:this|it)\s+(?:could|might|would|can)\s+(?:be|read)\s+(?:something\s+)?like|"
    r"\b(?:executive\s+summary|(?:the|this)\s+summary)\b[^\"“\n.!?]*?(?:\bis|\breads|:))\s*:?\s*[\"“]\s*"
    r"([^\"”]+?)\s*[\"”]",
    re.IGNORECASE,
)
_SECTION_NAME = re.compile(r"\b(?:section|part)[-\s]?\d+(?:\.\d+)*", re.IGNORECASE)
_LIST_MARK = re.compile(r"^\s*(?:[-*+•]|\d{1,2}[.)])\s+")


def without_scaffolding(text: str) -> str:
    """`text` without what was written about the part instead of in it (`_ABOUT_THE_PART`): a
    sentence on what the summary or report should do goes, the text it quotes as an example
    stays; a line that introduces a list (ending in ":") goes, and so does a line of nothing but
    section names, citations and list marks. The findings themselves are left as written."""
    lines = []
    for line in text.split("\n"):
        mark = _LIST_MARK.match(line)
        body = _QUOTED_EXAMPLE.sub(r"\1", line[mark.end() :] if mark else line).rstrip()
        if body.endswith((":", "：")) or (body and _bare(_SECTION_NAME.sub("", CITE.sub("", body)))):
            continue
        sentences = [body[start:end].strip() for start, end in sentence_spans(body)]
        kept = [sentence for sentence in sentences if not _ABOUT_THE_PART.search(sentence)]
        if sentences and not kept:
            continue
        lines.append(
            (mark.group(0) if mark else "") + (" ".join(kept) if len(kept) < len(sentences) else body)
        )
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def _bare(text: str) -> bool:
    """Whether `text` says nothing: under two words of two letters or more, and no two Chinese
    characters together (Chinese has no spaces between its words)."""
    return len(_WORD.findall(text)) < 2 and not _HAN_PAIR.search(text)


_WORD = re.compile(r"[^\W\d_]{2,}")
_HAN_PAIR = re.compile(r"[\u4e00-\u9fff]{2}")


INSTRUCTION_RUN = 6
"""A run of this many words of the instructions in a summary is the instructions restated (a small
model asked for a summary sometimes describes what a summary should be)."""


def instructions_of(prompt: str) -> str:
    """The "What to do" paragraph of a rendered prompt, which a reply must not restate."""
    _, _, rest = prompt.partition("## What to do")
    return rest.split("\n## ", 1)[0]


# ---- the pass -------------------------------------------------------------------------------------


class Synthesizer:
    def __init__(
        self,
        llm: LLM,
        research: ResearchSettings,
        on_event: EventSink,
        prompt_limit: int | None = None,
        count_tokens: Callable[[str], int] | None = None,
    ) -> None:
        self.research = research
        self.calls = FinishingCalls(llm, on_event, research.seed)
        self.emit = on_event
        self.prompt_limit = prompt_limit
        self.count_tokens = count_tokens or estimate_tokens

    def run(self, state: RunState) -> RunState:
        if PHASE in state.finished_phases or state.outline is None:
            return state
        progress = state.synthesis_progress = state.synthesis_progress or SynthesisProgress()
        allowed = sections_keys(state)
        terms = find_terms(state.question, self.research)
        try:
            while progress.part in ("summary", "conclusion"):
                self._write_part(state, progress, allowed)
            while progress.part == "extract":
                self._extract(state, progress)
            while progress.part == "judge":
                self._judge(state, progress, terms)
        except LLMBudgetExhausted as exc:
            self._out_of_budget(state, progress, str(exc))
        self._finish(state, progress, terms)
        return state

    # ---- summary and conclusion -----------------------------------------------------------------

    def _write_part(self, state: RunState, progress: SynthesisProgress, allowed: list[str]) -> None:
        assert state.outline is not None
        outline, part = state.outline, progress.part
        if not allowed:
            self._give_up_part(state, progress, "the report's sections cite nothing to build it on")
            return
        low, high = LENGTH_BOUNDS[part]
        if wants_chinese(state.question, self.research.language):
            low, high = low * 2, high * 2
        # As many drafts as an action gets (quick: 2), at most PART_TRIES: the summary is a
        # nicety, and on a CPU each refused draft costs half a minute.
        tries = min(PART_TRIES, self.research.max_retries + 1)

        asked = {"instructions": ""}

        def request(turn: Turn) -> ChatRequest:
            prompt = self._fit(
                lambda fit: prompts.render(
                    "synthesis",
                    part=part,
                    part_name=PART_NAMES[part],
                    question=state.question,
                    report=outline.condensed_view(fit.draft),
                    min_words=low,
                    max_words=high,
                    keys=", ".join(allowed),
                    feedback=turn.feedback,
                    language=self.research.language or "",
                )
            )
            asked["instructions"] = instructions_of(prompt)
            return self.calls.request(state, prompt, shape=reply_shape("write"))

        def read(result: ChatResult, turn: Turn) -> str | Refused:
            attach_after = self.research.attach_citations_after
            attach_from = (
                {key: state.registry[key].text for key in allowed}
                if attach_after is not None and turn.refused >= attach_after
                else None
            )
            text = read_part(
                result.text,
                part,
                allowed,
                state.question,
                self.research.language,
                attach_from,
                asked["instructions"],
            )
            return text if isinstance(text, str) else Refused(text[1])

        def settle(attempt: Attempt[str]) -> None:
            if isinstance(attempt.outcome, str):
                setattr(state, part, attempt.outcome)
                self._next_part(progress)
            else:
                why = f"{tries} drafts were refused, the last because: {attempt.outcome.reason}"
                self._give_up_part(state, progress, why)

        try:
            self.calls.exchange(
                state,
                part,
                "report",
                request,
                read,
                tries=tries,
                start=Turn(progress.tries, progress.feedback),
                keep=lambda attempt, turn: self._keep_turn(progress, turn),
                settle=settle,
                parsed=lambda attempt: (
                    {"text": attempt.outcome} if isinstance(attempt.outcome, str) else None
                ),
            )
        except LLMContextOverflow:
            self._give_up_part(state, progress, "the report does not fit in the model's context")

    def _give_up_part(self, state: RunState, progress: SynthesisProgress, why: str) -> None:
        name = PART_NAMES.get(progress.part, progress.part)
        state.synthesis_notes.append(f"The {name} was left out: {why}.")
        self._next_part(progress)

    def _next_part(self, progress: SynthesisProgress) -> None:
        progress.tries, progress.feedback = 0, ""
        progress.part = "conclusion" if progress.part == "summary" else "extract"

    @staticmethod
    def _keep_turn(progress: SynthesisProgress, turn: Turn | None) -> None:
        if turn is not None:  # asked again, with the reason
            progress.tries, progress.feedback = turn.refused, turn.feedback

    def _fit(self, render: Callable[[Fit], str]) -> str:
        fit = Fit(self.research.report_budget_tokens, 0, None)
        return fit_prompt(render, fit, limit=self.prompt_limit, count=self.count_tokens)

    # ---- constraints ----------------------------------------------------------------------------

    def _extract(self, state: RunState, progress: SynthesisProgress) -> None:
        """Required items and audience: one LLM extraction when the question announces them."""
        if not needs_extraction(state.question):
            progress.part, progress.required_items = "judge", []
            return

        def request(turn: Turn) -> ChatRequest:
            prompt = prompts.render(
                "constraints", task="extract", question=state.question, feedback=turn.feedback
            )
            return self.calls.request(
                state, prompt, schema=EXTRACTION_SCHEMA, max_tokens=300, temperature=0.0
            )

        def read(result: ChatResult, turn: Turn) -> dict[str, Any] | Refused:
            data = find_json(split_reply(result.text).body or "", (dict,))
            if isinstance(data, dict) and isinstance(data.get("required_items"), list):
                return data
            return Refused('answer with only the JSON object {"required_items": [...], "audience": "..."}')

        def settle(attempt: Attempt[dict[str, Any]]) -> None:
            if isinstance(data := attempt.outcome, dict):
                progress.required_items = grounded_items(data["required_items"], state.question)
                audience = data.get("audience")
                if isinstance(audience, str) and content_words(audience) & content_words(state.question):
                    progress.audience = " ".join(audience.split())
            progress.part, progress.tries, progress.feedback = "judge", 0, ""

        self.calls.exchange(
            state,
            "constraints",
            "question",
            request,
            read,
            tries=JUDGE_TRIES,
            start=Turn(progress.tries, progress.feedback),
            keep=lambda attempt, turn: self._keep_turn(progress, turn),
            settle=settle,
            parsed=lambda attempt: (
                None
                if attempt.refusal
                else {"required_items": progress.required_items, "audience": progress.audience}
            ),
        )

    def _judge(self, state: RunState, progress: SynthesisProgress, terms: Terms) -> None:
        """Ask the judge about what words alone could not settle (missing items, the audience)."""
        assert state.outline is not None
        outline = state.outline
        statements = self._statements(state, progress, terms)
        if not statements:
            progress.part = "done"
            return
        claims = "\n".join(f"{n}. {text}" for n, text in enumerate(statements, start=1))

        def request(turn: Turn) -> ChatRequest:
            prompt = self._fit(
                lambda fit: prompts.render(
                    "constraints",
                    task="judge",
                    question=state.question,
                    report=_with_summary(state, outline.condensed_view(fit.draft)),
                    claims=claims,
                    count=len(statements),
                    feedback=turn.feedback,
                )
            )
            count = len(statements)
            shape, schema = verdict_shape(count), verdict_schema(count)
            return self.calls.request(
                state, prompt, shape=shape, schema=schema, max_tokens=48 + 24 * count, temperature=0.0
            )

        def read(result: ChatResult, turn: Turn) -> dict[int, bool] | Refused:
            verdicts = parse_verdicts(result.text, len(statements))
            return verdicts if isinstance(verdicts, dict) else Refused(verdicts)

        def settle(attempt: Attempt[dict[int, bool]]) -> None:
            progress.part = "done"
            if isinstance(verdicts := attempt.outcome, dict):
                progress.verdicts = [verdicts[n] for n in range(1, len(statements) + 1)]
            else:
                progress.unjudged = f"the judge's answer was unreadable ({verdicts.reason})"

        try:
            self.calls.exchange(
                state,
                "constraints",
                "report",
                request,
                read,
                tries=JUDGE_TRIES,
                start=Turn(progress.tries, progress.feedback),
                keep=lambda attempt, turn: self._keep_turn(progress, turn),
                settle=settle,
                parsed=lambda attempt: (
                    None if attempt.refusal else {"statements": statements, "verdicts": progress.verdicts}
                ),
            )
        except LLMContextOverflow:
            progress.part, progress.unjudged = "done", "the report does not fit in the model's context"

    def _statements(self, state: RunState, progress: SynthesisProgress, terms: Terms) -> list[str]:
        """What the judge is asked, in order: missing items, then the audience."""
        statements = [f"The report covers {item}." for item in self._missing_items(state, progress, terms)]
        if audience := self._audience(progress, terms):
            statements.append(f"The report is written so that {audience} can follow and use it.")
        return statements

    def _items(self, progress: SynthesisProgress, terms: Terms) -> list[str]:
        return progress.required_items if progress.required_items else list(terms.items)

    def _audience(self, progress: SynthesisProgress, terms: Terms) -> str:
        return terms.audience or progress.audience

    def _missing_items(self, state: RunState, progress: SynthesisProgress, terms: Terms) -> list[str]:
        headings, text = _report_text(state)
        return [item for item in self._items(progress, terms) if item_found(item, headings, text) is None]

    def _out_of_budget(self, state: RunState, progress: SynthesisProgress, why: str) -> None:
        while progress.part in ("summary", "conclusion"):
            self._give_up_part(state, progress, f"no LLM budget was left ({why})")
        progress.part, progress.unjudged = "done", f"no LLM budget was left ({why})"

    # ---- results ----------------------------------------------------------------------------------

    def _finish(self, state: RunState, progress: SynthesisProgress, terms: Terms) -> None:
        assert state.outline is not None
        checks = rule_checks(terms, state.question, _report_text(state)[1], len(state.outline.sections))
        headings, text = _report_text(state)
        asked = self._missing_items(state, progress, terms)  # what the judge was asked about, in order
        verdicts = progress.verdicts or []
        unjudged = progress.unjudged or "the judge was not asked"
        uncovered: list[str] = []
        for item in self._items(progress, terms):
            where = item_found(item, headings, text)
            detail = where or ""
            if where is None and item in asked and asked.index(item) < len(verdicts):
                if verdicts[asked.index(item)]:
                    where = detail = "its words are not all in the report, but the judge found it covered"
                else:
                    detail = "neither its words nor the judge found it in the report"
            elif where is None:
                detail = f"its words are not all in the report, and it could not be judged: {unjudged}"
            if where is None:
                uncovered.append(item)
                detail += "; named in the conclusion's “Not covered” line"
            checks.append(
                ConstraintCheck(
                    name="required item", requirement=item, satisfied=where is not None, detail=detail
                )
            )
        if audience := self._audience(progress, terms):
            if len(asked) < len(verdicts):
                ok, detail = verdicts[len(asked)], "judged by the LLM on the condensed report"
            else:
                ok, detail = False, f"could not be checked: {unjudged}"
            checks.append(ConstraintCheck(name="audience", requirement=audience, satisfied=ok, detail=detail))
        if uncovered:
            chinese = wants_chinese(state.question, self.research.language)
            line = (
                ("**未涵盖：**" + "；".join(uncovered) + "。")
                if chinese
                else "**Not covered:** " + "; ".join(uncovered) + "."
            )
            state.conclusion = f"{state.conclusion.rstrip()}\n\n{line}".strip()
        state.constraints = checks
        state.synthesis_progress = None
        state.finished_phases.append(PHASE)
        unmet = [check.requirement for check in checks if not check.satisfied]
        self.emit(SynthesisFinished(bool(state.summary), bool(state.conclusion), len(checks), unmet))
        self.calls.record(
            state,
            "synthesis",
            "report",
            parsed={
                "summary": bool(state.summary),
                "conclusion": bool(state.conclusion),
                "constraints": [check.model_dump() for check in checks],
                "notes": list(state.synthesis_notes),
            },
        )


def _report_text(state: RunState) -> tuple[list[str], str]:
    """The report's headings, and its prose: summary, sections and conclusion (what a length counts)."""
    assert state.outline is not None
    headings = [state.outline.title] + [located.node.title for located in state.outline.walk()]
    parts = [
        state.summary,
        *(located.node.content or "" for located in state.outline.walk()),
        state.conclusion,
    ]
    return headings, "\n\n".join(part for part in parts if part)


def _with_summary(state: RunState, view: str) -> str:
    return f"Executive summary: {' '.join(state.summary.split())}\n{view}" if state.summary else view
