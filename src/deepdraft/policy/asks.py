"""A follow-up question on a finished run: evidence for it, then an answer citing that evidence.

`deepdraft ask RUN "QUESTION"` answers from what the run already gathered and from a fresh search
of its knowledge base, without changing the report; with `--into-report` the answer becomes a new
top-level section (see `policy/sections.py`, command "ask").

Two journal steps at least, both on the state's `AskProgress`:

1. **begin** (no LLM call): the run's own passages that share the question's words (those the
   report cites first) and the knowledge base's best hits for the question are chosen, the new
   ones registered under the run's next keys, and the choice is journaled. A resumed ask shows
   the model these very passages, even if the KB changed in between.
2. **answer**: one exchange, re-asked with the reason while a reply is refused (no `<action>`,
   out of the length bounds, no citation, a key that was not shown, looping text, the wrong
   language). Each try is a step; the last one holds the answer, or why there is none.

The steps are finishing records (tagged ``finish-N``, see `policy/calls.py`): an answer is not a
policy action, so the run's `max_steps` does not refuse it; the run's token budget does.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from deepdraft.core.citations import cited_keys, normalise_citations
from deepdraft.core.evidence import Passage, render_evidence, select_passages
from deepdraft.core.language import wants_chinese
from deepdraft.core.state import AskProgress, RunState
from deepdraft.core.tokens import count_tokens as estimate_tokens
from deepdraft.errors import LLMContextOverflow, UserError
from deepdraft.events import EventSink
from deepdraft.policy.calls import FinishingCalls, journal_step
from deepdraft.policy.finishing.terms import count_words
from deepdraft.ports import LLM, ChatRequest, ChatResult, Retriever
from deepdraft.protocol import prompts
from deepdraft.protocol.actions import Refused, language_problem, repetition, split_reply
from deepdraft.protocol.attach import attach_citations, content_words
from deepdraft.protocol.exchange import Attempt, Turn
from deepdraft.protocol.fitting import Fit, fit_prompt
from deepdraft.protocol.grammar import reply_shape
from deepdraft.protocol.write_checks import before_loop, without_debris
from deepdraft.settings import ResearchSettings

MAX_QUESTION_CHARS = 2000
"""The longest follow-up question taken: a question, not a document to paste into a prompt."""
TASK = "a follow-up question"
"""What the prompt says the user has; fakes tell an ask from other free-text requests by it."""
ANSWER_WORDS = (30, 400)
"""Words of an English answer; Chinese answers count characters, twice these bounds."""
ACTION = "ask"
"""The journal's name for an ask's steps."""


def checked_question(question: str) -> str:
    """The question without surrounding blanks; `UserError` when it is empty or too long."""
    question = question.strip()
    if not question:
        raise UserError("the question is empty")
    if len(question) > MAX_QUESTION_CHARS:
        raise UserError(
            f"the question is too long ({len(question):,} characters; at most {MAX_QUESTION_CHARS:,})"
        )
    return question


def report_passages(state: RunState, question: str) -> list[Passage]:
    """The run's own passages that share words with `question`, most shared first; among equals,
    those the report cites come first (their sources already have numbers in it)."""
    wanted = content_words(question)
    if not wanted:
        return []
    cited: dict[str, None] = {}
    if state.outline is not None:
        texts = [state.summary, *(item.node.content or "" for item in state.outline.walk()), state.conclusion]
        for text in texts:
            cited.update((key, None) for group in cited_keys(text) for key in group)
    scored = []
    for order, (key, item) in enumerate(state.registry.items.items()):
        shared = len(wanted & content_words(item.text))
        if shared:
            scored.append((-shared, key not in cited, order, Passage(item.text, item.source)))
    return [passage for *_, passage in sorted(scored, key=lambda entry: entry[:3])]


def read_answer(
    raw: str,
    allowed: list[str],
    question: str,
    language: str | None,
    attach_from: dict[str, str] | None = None,
) -> str | Refused:
    """The answer in the model's reply, validated; or why it was refused."""
    body = split_reply(raw).body
    if body is None:
        return Refused("the reply has no <action>…</action> block")
    text = without_debris(normalise_citations(body.strip().strip("`").strip()))
    if repetition(text) and (start := before_loop(text)):
        text = start
    low, high = ANSWER_WORDS
    chinese = wants_chinese(question, language)
    low, high = (low * 2, high * 2) if chinese else (low, high)
    words = count_words(text)
    if not low <= words <= high:
        unit = "characters" if chinese else "words"
        return Refused(f"answer in {low} to {high} {unit} (this has {words})")
    if not any(cited_keys(text)) and attach_from:
        text = attach_citations(text, attach_from) or text
    cited = [key for group in cited_keys(text) for key in group]
    if not cited:
        return Refused("cite the passages the answer rests on, like \\cite{" + allowed[0] + "}")
    unknown = sorted(set(cited) - set(allowed))
    if unknown:
        return Refused(f"cite only the keys listed; not {', '.join(unknown)}")
    if any(not group for group in cited_keys(text)):
        return Refused("a \\cite{} holds no key")
    if problem := repetition(text) or language_problem(text, question, language):
        return Refused(problem)
    return text


class Asker:
    """Takes a follow-up question from its evidence to its answer, one journaled step at a time."""

    def __init__(
        self,
        llm: LLM,
        retriever: Retriever,
        research: ResearchSettings,
        emit: EventSink,
        prompt_limit: int | None = None,
        count_tokens: Callable[[str], int] | None = None,
    ) -> None:
        self.retriever, self.research = retriever, research
        self.calls = FinishingCalls(llm, emit, research.seed)
        self.prompt_limit = prompt_limit
        self.count_tokens = count_tokens or estimate_tokens

    def begin(self, state: RunState, question: str, *, into: str | None = None) -> AskProgress:
        """Choose the evidence for `question` and journal the choice (the ask's first step)."""
        budget = self.research.node_evidence
        fresh = self.retriever.search(question, self.research.hits_per_keyword)
        chosen = select_passages([report_passages(state, question), fresh], budget)
        keys = list(dict.fromkeys(state.registry.register(passage) for passage in chosen))
        state.ask = AskProgress(
            question=question,
            keys=keys,
            begun_at_step=journal_step(state) + 1,
            asked_at=time.time(),
            into=into,
        )
        if not keys:
            state.ask.note = "neither the run's evidence nor its knowledge base has passages on it"
        parsed = {"question": question, "keys": keys, "into": into}
        self.calls.record(state, ACTION, into or "report", parsed=parsed)
        return state.ask

    def run(self, state: RunState) -> AskProgress:
        """Ask until the answer is read or every try was refused (`AskProgress.done`)."""
        ask = state.ask
        assert ask is not None
        while not ask.done:
            self._answer(state, ask)
        return ask

    def _answer(self, state: RunState, ask: AskProgress) -> None:
        assert state.outline is not None
        outline, language = state.outline, self.research.language
        low, high = ANSWER_WORDS
        if wants_chinese(ask.question, language):
            low, high = low * 2, high * 2
        target = ask.into or "report"
        shown = {"keys": list(ask.keys)}  # what the last prompt showed, once fitted into the window

        def render(fit: Fit, feedback: str) -> str:
            return prompts.render(
                "ask",
                task=TASK,
                request=state.question,
                report=outline.condensed_view(fit.draft),
                question=ask.question,
                evidence=render_evidence(state.registry, ask.keys[: fit.passages], fit.passage_tokens),
                keys=", ".join(ask.keys[: fit.passages]),
                min_words=low,
                max_words=high,
                feedback=feedback,
                language=language or "",
            )

        def request(turn: Turn) -> ChatRequest:
            fit = Fit(self.research.search_budget_tokens, len(ask.keys), self.research.passage_tokens)
            prompt = fit_prompt(
                lambda fit: render(fit, turn.feedback), fit, limit=self.prompt_limit, count=self.count_tokens
            )
            shown["keys"] = [key for key in ask.keys if f"bibkey:{key}\n" in prompt]
            return self.calls.request(state, prompt, shape=reply_shape("write"))

        def read(result: ChatResult, turn: Turn) -> str | Refused:
            after = self.research.attach_citations_after
            attach_from = (
                {key: state.registry[key].text for key in shown["keys"]}
                if after is not None and turn.refused >= after
                else None
            )
            return read_answer(result.text, shown["keys"], ask.question, language, attach_from)

        def keep(attempt: Attempt[str], turn: Turn | None) -> None:
            if turn is not None:  # asked again next, with the reason
                ask.tries, ask.feedback = turn.refused, turn.feedback

        def settle(attempt: Attempt[str]) -> None:
            if isinstance(attempt.outcome, str):
                ask.answer = attempt.outcome
            else:
                ask.note = f"{tries} replies were refused, the last because: {attempt.outcome.reason}"

        tries = self.research.max_retries + 1
        try:
            self.calls.exchange(
                state,
                ACTION,
                target,
                request,
                read,
                tries=tries,
                start=Turn(ask.tries, ask.feedback),
                keep=keep,
                settle=settle,
                parsed=lambda attempt: (
                    {"answer": attempt.outcome} if isinstance(attempt.outcome, str) else None
                ),
            )
        except LLMContextOverflow:
            ask.note = "the question and its passages do not fit in the model's context"
            self.calls.record(state, ACTION, target, parsed={"note": ask.note})


__all__ = [
    "ACTION",
    "MAX_QUESTION_CHARS",
    "TASK",
    "Asker",
    "checked_question",
    "read_answer",
    "report_passages",
]
