"""Claim-level citation verification: does each cited sentence say what its passages say?

Runs once the policy has stopped. Every written node is split into sentences; each sentence that
cites evidence is checked against the passages it cites, and one that is not supported is dealt
with as `output.verify_policy` says:

- ``repair``: re-written from its own passages (one LLM call; the rewrite must cite only those
  passages and is itself checked for word overlap with them), else re-cited, else removed;
- ``recite``: cited instead to another passage of the run's evidence that supports it, else removed;
- ``remove``: deleted.

Deciding support, cheapest first:

1. Word overlap (`attach.py`'s content words; Chinese by character bigrams). A sentence whose
   content words nearly all occur in its passages, with no figure or negation the passages lack,
   is supported without a call; one that shares (almost) nothing with them, or states a number
   that none of them contains, is unsupported without a call. Overlap is not entailment, so the
   thresholds are strict on the "supported" side: a wrongly passed claim is worse than a call.
   Under `output.judge_floor` of its words in its passages, a sentence is unsupported too: a small
   model as judge passes nearly every sentence it is shown, however loosely it follows its passage.
2. Otherwise an LLM judge, through the same `LLM` port as the policy, several claims per request
   (packed up to a prompt budget, each passage shown once), answering a strict JSON schema with a
   yes/no per claim. The reply is parsed tolerantly (code fences, text around the JSON, a plain
   "1. yes" list); an unreadable one is asked once more with the reason, after which its claims
   are marked "unverified" — never silently counted as supported.

Nothing is written into the report until every sentence is decided: node texts stay as written,
decisions accumulate in the state, and are applied together at the end. Every LLM exchange is a
journal step with its checkpoint, so a run killed mid-verification resumes where it stopped, and
re-asks the very prompts (with the same tags) that the LLM cache already answered. After the
pass's first, a step's checkpoint holds only what the step changed (`PassCheckpoints`). When the LLM
budget runs out, sentences not yet judged stay as written, marked "unverified", and sentences
already found unsupported are removed (which costs nothing).

A command on a finished report (`policy/sections.py`) verifies only what it changed: the
`scope` names those nodes, and the earlier results of the others are kept as they are.

Cost, in calls: one per batch of unclear sentences, plus one per repaired sentence and at most one
per re-cite; a report whose sentences are close paraphrases of their passages needs few.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any

from deepdraft.core.citations import cited_keys
from deepdraft.core.evidence import EvidenceRegistry, evidence_entry
from deepdraft.core.outline import WRITTEN_FROM_EVIDENCE
from deepdraft.core.sentences import sentence_spans
from deepdraft.core.state import RunState
from deepdraft.core.tokens import count_tokens as estimate_tokens
from deepdraft.core.verification import Remedy, SentenceCheck, Verification, VerificationProgress
from deepdraft.errors import LLMBudgetExhausted, LLMContextOverflow
from deepdraft.events import EventSink, VerificationFinished
from deepdraft.policy.calls import FinishingCalls
from deepdraft.policy.finishing.checkpoints import PassCheckpoints
from deepdraft.policy.finishing.lexical import (
    PREFIX,
    PassageIndex,
    TextFeatures,
    claim_text,
    lexical_support,
)
from deepdraft.policy.finishing.rewrite import Rewrite, read_rewrite, rewrite_node
from deepdraft.policy.finishing.verdicts import JUDGE_TRIES, parse_verdicts, verdict_schema, verdict_shape
from deepdraft.ports import LLM, ChatRequest, ChatResult
from deepdraft.protocol import prompts
from deepdraft.protocol.actions import Refused
from deepdraft.protocol.attach import cite_sentence, content_words, extract_from_evidence
from deepdraft.protocol.exchange import Attempt, Turn
from deepdraft.protocol.grammar import reply_shape
from deepdraft.protocol.topic import subject_excerpt
from deepdraft.settings import OutputSettings, ResearchSettings

PHASE = "verify"

JUDGE_MAX_CLAIMS = 8
JUDGE_PROMPT_TOKENS = 1800
"""Judge prompts are packed up to this size (or the model's limit, if smaller)."""
RECITE_CANDIDATES = 3
"""Passages of the registry shown to the judge when looking for a new citation."""

REMEDIES: dict[str, tuple[Remedy, ...]] = {
    "repair": ("repair", "recite", "remove"),
    "recite": ("recite", "remove"),
    "remove": ("remove",),
}

EMPTIED_NOTE = (
    "every cited claim of this part failed verification against its sources and was removed "
    "(see the verification results)"
)


# ---- the pass ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Claim:
    index: int
    text: str
    keys: tuple[str, ...]


class Verifier:
    def __init__(
        self,
        llm: LLM,
        research: ResearchSettings,
        output: OutputSettings,
        on_event: EventSink,
        prompt_limit: int | None = None,
        count_tokens: Callable[[str], int] | None = None,
        scope: Collection[str] | None = None,
    ) -> None:
        """`scope`: the ids of the nodes to check (a command on a finished run checks what it
        changed); the other nodes keep the results of their earlier check. None: every node."""
        self.research, self.output = research, output
        self.scope = None if scope is None else frozenset(scope)
        self.calls = FinishingCalls(llm, on_event, research.seed)
        self.emit = on_event
        self.count_tokens = count_tokens or estimate_tokens
        self.budget = min(JUDGE_PROMPT_TOKENS, prompt_limit or JUDGE_PROMPT_TOKENS)
        self._features: dict[str, TextFeatures] = {}
        self._index: PassageIndex | None = None
        self._checkpoints = PassCheckpoints()

    def run(self, state: RunState) -> RunState:
        if PHASE in state.finished_phases or state.outline is None:
            return state
        if state.verification is None or state.verification_progress is None:
            self._start(state)
        assert state.verification is not None and state.verification_progress is not None
        progress = state.verification_progress
        try:
            while progress.pending:
                self._judge_pending(state, state.verification, progress)
            while progress.unsupported:
                self._remedy(state, state.verification, progress)
        except LLMBudgetExhausted as exc:
            self._out_of_budget(state.verification, progress, str(exc))
        self._apply(state, state.verification, progress)
        return state

    # ---- deciding ------------------------------------------------------------------------------

    def _start(self, state: RunState) -> None:
        """Split every written node and settle what word overlap can settle (no calls)."""
        assert state.outline is not None
        verification, progress = Verification(), VerificationProgress(spans=[])
        if self.scope is not None and state.verification is not None:
            # The earlier results of the nodes outside the scope stand; their spans are never used
            # (`_apply` rewrites only the nodes in the scope).
            earlier = state.verification
            verification = earlier.model_copy(
                update={"sentences": [c for c in earlier.sentences if c.node_id not in self.scope]}, deep=True
            )
            progress.spans = [(0, 0)] * len(verification.sentences)
        for located in state.outline.walk():
            content = located.node.content
            if not content or (self.scope is not None and located.node.id not in self.scope):
                continue
            for start, end in sentence_spans(content):
                sentence = content[start:end]
                keys = list(dict.fromkeys(key for group in cited_keys(sentence) for key in group))
                claim = claim_text(sentence)
                if not keys or not content_words(claim) or sentence.lstrip().startswith("#"):
                    continue  # no claim to check: uncited text, a bare citation, a heading
                lexical = lexical_support(
                    claim, _passages(state.registry, keys), self._passage_features, self.output.judge_floor
                )
                index = len(verification.sentences)
                verification.sentences.append(
                    SentenceCheck(
                        node_id=located.node.id,
                        position=located.position,
                        sentence=PREFIX.sub("", sentence.strip(), count=1),
                        keys=keys,
                        verdict="supported" if lexical.verdict == "supported" else "unverified",
                        final_text=PREFIX.sub("", sentence.strip(), count=1),
                        reason=lexical.reason,
                        method="judge" if lexical.verdict == "unclear" else "lexical",
                    )
                )
                progress.spans.append((start, end))
                if lexical.verdict == "unclear":
                    progress.pending.append(index)
                elif lexical.verdict == "unsupported":
                    progress.unsupported.append(index)
        state.verification, state.verification_progress = verification, progress

    def _judge_pending(
        self, state: RunState, verification: Verification, progress: VerificationProgress
    ) -> None:
        """Ask the judge about the next batch of unclear sentences."""

        def batch(feedback: str) -> tuple[list[_Claim], str]:
            claims: list[_Claim] = []
            prompt = ""
            for index in progress.pending[:JUDGE_MAX_CLAIMS]:
                check = verification.sentences[index]
                trial = [*claims, _Claim(index, claim_text(check.sentence), tuple(check.keys))]
                rendered = self._judge_prompt(state, trial, feedback)
                if claims and self.count_tokens(rendered) > self.budget:
                    break
                claims, prompt = trial, rendered
            return claims, prompt

        def decide(claims: Sequence[_Claim], verdicts: dict[int, bool] | str) -> None:
            for number, claim in enumerate(claims, start=1):
                check = verification.sentences[claim.index]
                progress.pending.remove(claim.index)
                if isinstance(verdicts, str):
                    check.verdict, check.reason = (
                        "unverified",
                        f"the judge's answer was unreadable: {verdicts}",
                    )
                elif verdicts[number]:
                    check.verdict, check.reason = "supported", "the judge found it supported by its passages"
                else:
                    check.reason = "the judge found it not supported by its passages"
                    progress.unsupported.append(claim.index)

        self._ask_judge(state, verification, progress, batch, decide)

    def _ask_judge(
        self,
        state: RunState,
        verification: Verification,
        progress: VerificationProgress,
        batch: Callable[[str], tuple[list[_Claim], str]],
        decide: Callable[[Sequence[_Claim], dict[int, bool] | str], None],
    ) -> None:
        """Ask the judge about the claims `batch` packs (given the last refusal's reason) until it
        answers readably or its tries are spent; `decide` applies the verdicts, or why there are
        none, before the exchange is journaled (so a resume never asks the question again)."""
        claims = batch(progress.feedback)[0]
        target = verification.sentences[claims[0].index].position

        # The claims each request packed, by the turn's feedback: `settle` applies the verdicts to
        # the progress before the exchange is journaled, and packing again after that would give
        # the next claims, not the ones the judge answered.
        packed: dict[str, list[_Claim]] = {}

        def request(turn: Turn) -> ChatRequest:
            claims, prompt = batch(turn.feedback)
            packed[turn.feedback] = claims
            count = len(claims)
            return self.calls.request(
                state,
                prompt,
                shape=verdict_shape(count),
                schema=verdict_schema(count),
                max_tokens=48 + 24 * count,
                temperature=0.0,
            )

        def read(result: ChatResult, turn: Turn) -> dict[int, bool] | Refused:
            verdicts = parse_verdicts(result.text, len(packed[turn.feedback]))
            return verdicts if isinstance(verdicts, dict) else Refused(verdicts)

        def settle(attempt: Attempt[dict[int, bool]]) -> None:
            outcome = attempt.outcome
            decide(packed[attempt.turn.feedback], outcome.reason if isinstance(outcome, Refused) else outcome)

        def parsed(attempt: Attempt[dict[int, bool]]) -> dict[str, Any] | None:
            if not isinstance(verdicts := attempt.outcome, dict):
                return None
            claims = packed[attempt.turn.feedback]
            return {
                "claims": [verification.sentences[c.index].sentence for c in claims],
                "keys": [list(c.keys) for c in claims],
                "supported": [verdicts[n] for n in range(1, len(claims) + 1)],
            }

        try:
            self._exchange(
                state, verification, progress, "verify", target, request, read, JUDGE_TRIES, settle, parsed
            )
        except LLMContextOverflow:
            if len(claims) > 1:  # ask again with fewer claims per prompt
                self.budget = max(200, self.count_tokens(batch(progress.feedback)[1]) * 2 // 3)
                return
            decide(claims, "the claim and its passages do not fit in the model's context")

    def _exchange(
        self,
        state: RunState,
        verification: Verification,
        progress: VerificationProgress,
        action: str,
        target: str,
        request: Callable[[Turn], ChatRequest],
        read: Callable[[ChatResult, Turn], Any],
        tries: int,
        settle: Callable[[Attempt[Any]], None],
        parsed: Callable[[Attempt[Any]], dict[str, Any] | None],
    ) -> None:
        def keep(attempt: Attempt[Any], turn: Turn | None) -> None:
            self._tally(verification, attempt.result)
            progress.failures, progress.feedback = (turn.refused, turn.feedback) if turn else (0, "")

        self.calls.exchange(
            state,
            action,
            target,
            request,
            read,
            tries=tries,
            start=Turn(progress.failures, progress.feedback),
            keep=keep,
            settle=settle,
            parsed=parsed,
            changes=self._checkpoints,
        )

    def _judge_prompt(self, state: RunState, claims: Sequence[_Claim], feedback: str) -> str:
        keys = list(dict.fromkeys(key for claim in claims for key in claim.keys if key in state.registry))
        cut = self.research.passage_tokens

        def passage(key: str) -> str:
            # The part of a long passage that names the request's subject: what a part written
            # passage by passage was written from.
            return subject_excerpt(state.registry[key].text, state.question, cut)

        return prompts.render(
            "verify",
            passages="\n\n".join(evidence_entry(key, passage(key)) for key in keys),
            claims="\n".join(
                f"{number}. {claim.text} [cites: {', '.join(claim.keys)}]"
                for number, claim in enumerate(claims, start=1)
            ),
            count=len(claims),
            feedback=feedback,
        )

    # ---- remedies --------------------------------------------------------------------------------

    def _remedy(self, state: RunState, verification: Verification, progress: VerificationProgress) -> None:
        """Apply the next remedy to the first unsupported sentence; move on when it is settled."""
        index = progress.unsupported[0]
        check = verification.sentences[index]
        chain = REMEDIES[self.output.verify_policy]
        if _is_table_row(check.sentence):
            chain = tuple(r for r in chain if r != "repair") or ("remove",)  # prose would break the table
        remedy = progress.remedy if progress.remedy in chain else chain[0]

        def conclude(settled: bool) -> None:
            """Record how the remedy went: the sentence is settled, or the next remedy is tried."""
            if settled:
                progress.unsupported.pop(0)
                progress.remedy = None
            else:
                progress.remedy = chain[chain.index(remedy) + 1]

        if remedy == "repair":
            self._repair(state, verification, progress, check, conclude)
        elif remedy == "recite":
            self._recite(state, verification, progress, index, conclude)
        else:
            check.verdict, check.final_text = "removed", ""
            check.reason += "; removed"
            conclude(True)

    def _repair(
        self,
        state: RunState,
        verification: Verification,
        progress: VerificationProgress,
        check: SentenceCheck,
        conclude: Callable[[bool], None],
    ) -> None:
        """Re-write the sentence from its own passages (one try: a refused rewrite goes on to the
        next remedy)."""
        passages = _passages(state.registry, check.keys)
        prompt = prompts.render(
            "repair",
            question=state.question,
            sentence=claim_text(check.sentence),
            citation="\\cite{" + ", ".join(check.keys) + "}",
            passages="\n\n".join(
                evidence_entry(k, state.registry[k].text) for k in check.keys if k in state.registry
            ),
            language=self.research.language or "",
        )

        def read(result: ChatResult, turn: Turn) -> Rewrite | Refused:
            rewrite = read_rewrite(
                result.text,
                check.keys,
                passages,
                state.question,
                self.research.language,
                self._passage_features,
            )
            return rewrite if isinstance(rewrite, Rewrite) else Refused(rewrite)

        def settle(attempt: Attempt[Rewrite]) -> None:
            if isinstance(rewrite := attempt.outcome, Rewrite):
                check.verdict, check.final_text = "repaired", rewrite.text
                check.reason += (
                    f"; re-written from its passages ({rewrite.share:.0%} of its words are in them)"
                )
            else:
                check.reason += f"; the repair was refused ({rewrite.reason})"
            conclude(isinstance(rewrite, Rewrite))

        def parsed(attempt: Attempt[Rewrite]) -> dict[str, Any] | None:
            rewrite = attempt.outcome
            return (
                {"sentence": check.sentence, "rewrite": rewrite.text}
                if isinstance(rewrite, Rewrite)
                else None
            )

        try:
            self._exchange(
                state,
                verification,
                progress,
                "repair",
                check.position,
                lambda turn: self.calls.request(state, prompt, shape=reply_shape("write")),
                read,
                1,
                settle,
                parsed,
            )
        except LLMContextOverflow:
            check.reason += "; too long to repair in the model's context"
            conclude(False)

    def _recite(
        self,
        state: RunState,
        verification: Verification,
        progress: VerificationProgress,
        index: int,
        conclude: Callable[[bool], None],
    ) -> None:
        """Cite another passage of the run that supports the sentence, if word overlap or the judge
        finds one."""
        check = verification.sentences[index]
        claim = claim_text(check.sentence)
        if self._index is None or not self._index.describes(state.registry):
            self._index = PassageIndex(state.registry, self._passage_features)
        floor = self.output.judge_floor  # a passage below it is no candidate: the judge would pass it
        ranked = self._index.best(TextFeatures.of(claim), check.keys, RECITE_CANDIDATES, floor)
        if ranked and ranked[0][0].verdict == "supported":
            return conclude(self._recited(check, ranked[0][1], "lexical", ranked[0][0].reason))
        candidates = [key for lexical, key in ranked[:RECITE_CANDIDATES] if lexical.verdict == "unclear"]
        if not candidates:
            check.reason += "; no other passage of the run shares its words"
            return conclude(False)
        # One claim per candidate passage, all about this sentence (`index` names the sentence).
        claims = [_Claim(index, claim, (key,)) for key in candidates]

        def decide(claims: Sequence[_Claim], verdicts: dict[int, bool] | str) -> None:
            if isinstance(verdicts, str):
                check.reason += "; the judge's answer about other passages was unreadable"
                return conclude(False)
            supporting = next((key for n, key in enumerate(candidates, start=1) if verdicts[n]), None)
            if supporting is None:
                check.reason += f"; the judge found no support in {', '.join(candidates)} either"
                return conclude(False)
            why = f"the judge found it supported by {supporting}"
            conclude(self._recited(check, supporting, "judge", why))

        self._ask_judge(
            state,
            verification,
            progress,
            lambda feedback: (claims, self._judge_prompt(state, claims, feedback)),
            decide,
        )

    def _passage_features(self, text: str) -> TextFeatures:
        features = self._features.get(text)
        if features is None:
            features = self._features[text] = TextFeatures.of(text)
        return features

    @staticmethod
    def _recited(check: SentenceCheck, key: str, how: str, why: str) -> bool:
        check.verdict = "recited"
        check.final_text = cite_sentence(claim_text(check.sentence), key)
        check.reason += f"; now cites {key} ({how}: {why})"
        return True

    def _out_of_budget(self, verification: Verification, progress: VerificationProgress, why: str) -> None:
        """No more calls: what was not judged stays as written; what was found unsupported goes."""
        for index in progress.pending:
            check = verification.sentences[index]
            check.verdict, check.reason = "unverified", f"not judged: {why}"
        for index in progress.unsupported:
            check = verification.sentences[index]
            check.verdict, check.final_text = "removed", ""
            check.reason += f"; removed (no budget left to repair it: {why})"
        progress.pending, progress.unsupported = [], []

    def _tally(self, verification: Verification, result: ChatResult) -> None:
        verification.llm_calls += 1
        verification.prompt_tokens += result.usage.prompt_tokens
        verification.completion_tokens += result.usage.completion_tokens

    # ---- applying --------------------------------------------------------------------------------

    def _apply(self, state: RunState, verification: Verification, progress: VerificationProgress) -> None:
        """Write every decision into the node texts at once, and journal the result."""
        assert state.outline is not None
        by_node: dict[str, list[tuple[tuple[int, int], SentenceCheck]]] = {}
        for span, check in zip(progress.spans, verification.sentences, strict=True):
            if self.scope is None or check.node_id in self.scope:
                by_node.setdefault(check.node_id, []).append((span, check))
        for node_id, decided in by_node.items():
            located = state.outline.find_id(node_id)
            if located is None or located.node.content is None:
                continue
            text = rewrite_node(located.node.content, decided)
            if "\\cite{" in text:
                located.node.content = text
                continue
            # Every cited claim failed. Keeping the least bad one would leave a claim known to be
            # unsupported; keeping only the uncited rest would pass off unsourced text. So the part
            # is quoted from the passages it cited (their sentences closest to its plan, which
            # support themselves), said as such in its note; when none has such a sentence it
            # shows the gap, like a part the policy could not write. The original text stays in
            # the journal's checkpoints either way.
            node = located.node
            cited = {
                key for group in cited_keys(node.content or "") for key in group if key in state.registry
            }
            quoted = extract_from_evidence(
                f"{node.title} {node.plan} {state.question}",
                {key: state.registry[key].text for key in sorted(cited)},
            )
            if quoted is None:
                node.content, node.note = None, EMPTIED_NOTE
            else:
                node.content, node.note = quoted, f"{WRITTEN_FROM_EVIDENCE}: {EMPTIED_NOTE}"
        verification.recount()
        state.verification_progress = None
        state.finished_phases.append(PHASE)
        figures = verification.model_dump(exclude={"sentences"})
        self.emit(VerificationFinished(**figures))
        self.calls.record(state, "verify", "report", parsed=figures)


def _passages(registry: EvidenceRegistry, keys: Sequence[str]) -> list[str]:
    return [registry[key].text for key in keys if key in registry]


def _is_table_row(sentence: str) -> bool:
    return sentence.lstrip().startswith("|")
