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

Cost, in calls: one per batch of unclear sentences, plus one per repaired sentence and at most one
per re-cite; a report whose sentences are close paraphrases of their passages needs few.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import Any, Literal

from deepdraft.core.citations import CITE, cited_keys, normalise_citations
from deepdraft.core.evidence import EvidenceRegistry
from deepdraft.core.state import RunState
from deepdraft.core.tokens import count_tokens as estimate_tokens
from deepdraft.core.tokens import head_tail
from deepdraft.core.verification import Remedy, SentenceCheck, Verification, VerificationProgress
from deepdraft.errors import LLMBudgetExhausted, LLMContextOverflow
from deepdraft.events import (
    ActionFinished,
    ActionStarted,
    EventSink,
    StateChanges,
    StepRecord,
    VerificationFinished,
)
from deepdraft.ports import LLM, ChatRequest, ChatResult, ReplyShape
from deepdraft.protocol import prompts
from deepdraft.protocol.actions import language_problem, split_reply
from deepdraft.protocol.attach import SENTENCE, cite_sentence, content_words
from deepdraft.protocol.grammar import reply_shape
from deepdraft.protocol.json_reply import find_json
from deepdraft.settings import OutputSettings, ResearchSettings

PHASE = "verify"

SUPPORTED_SHARE = 0.75
"""Share of a sentence's content words that must occur in its passages to pass without a call..."""
SUPPORTED_MIN_SHARED = 3
"""... and at least this many of them (a three-word sentence proves little)."""
UNSUPPORTED_SHARE = 0.2
"""Below this share, with at most one shared word, a sentence is unsupported without a call."""
REWRITE_SHARE = 0.5
"""Share a repaired sentence must reach: it was written from the passages, so it should echo them."""
JUDGE_MAX_CLAIMS = 8
JUDGE_PROMPT_TOKENS = 1800
"""Judge prompts are packed up to this size (or the model's limit, if smaller)."""
JUDGE_TRIES = 2
"""An unreadable judge answer is asked once more; then its claims stay unverified."""
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

# Figures: at least two digits or a decimal ("1890", "45%", "3.5"); single digits are too often
# written out in words ("three") for their absence from a passage to mean anything.
_NUMBER = re.compile(r"\d[\d,]*(?:\.\d+)?")
_NEGATION = re.compile(r"\b(?:not|no|never|neither|nor|none|without|cannot)\b|n't|不|没有|未|无|非", re.I)
# What opens a line without being part of the claim: indentation, a list marker, a quote mark.
_PREFIX = re.compile(r"^\s*(?:(?:[-*+]|\d{1,3}[.)])\s+|>\s*)?")
_BARE_MARKER = re.compile(r"^[ \t]*(?:[-*+]|\d{1,3}[.)]|>)[ \t]*$", re.MULTILINE)
_LEADING_CITATIONS = re.compile(r"\s*(?:\\cite\{[^{}]*\}[ \t]*)+")
_SPACE_BEFORE_PUNCT = re.compile(r"\s+([.,;:!?。，；：！？])")


# ---- sentences and word overlap (pure) ---------------------------------------------------------


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """Character spans of the sentences of `text`, with `attach.py`'s splitter.

    Three repairs to its cuts: citations placed after a full stop ("… rose. \\cite{textid2} Next …")
    belong to the sentence before them, as do the rest of a decimal ("3." + "5 percent") and of an
    initial or abbreviation ("U." + "S." + " tariffs", "e." + "g. …").
    """
    spans: list[tuple[int, int]] = []
    for match in SENTENCE.finditer(text):
        start, end = match.span()
        if not match.group().strip():
            continue
        if spans:
            lead = _LEADING_CITATIONS.match(text, start, end)
            if lead:
                spans[-1] = (spans[-1][0], lead.end())
                start = lead.end()
                if not text[start:end].strip():
                    continue
            before = text[spans[-1][0] : spans[-1][1]].rstrip()
            decimal = re.search(r"\d\.$", before) is not None and text[start:end][:1].isdigit()
            initial = re.search(r"(?:^|[\s(.])[A-Za-z]\.$", before) is not None and not lead
            if decimal or initial:
                spans[-1] = (spans[-1][0], end)
                continue
        spans.append((start, end))
    return spans


def claim_text(sentence: str) -> str:
    """The sentence without its citations, list marker and surrounding space."""
    text = CITE.sub(" ", sentence)
    text = _PREFIX.sub("", text, count=1)
    return _SPACE_BEFORE_PUNCT.sub(r"\1", " ".join(text.split()))


def _figures(text: str) -> frozenset[str]:
    found = set()
    for match in _NUMBER.finditer(text):
        number = match.group().replace(",", "").rstrip(".")
        if len(number.replace(".", "")) >= 2 or "." in number:
            found.add(number)
    return frozenset(found)


@dataclass(frozen=True)
class TextFeatures:
    """What word overlap compares in a text: its content words, its figures, whether it negates.

    A passage's features are derived once per pass (`Verifier` keeps them by text): re-citing weighs
    a sentence against every passage of the run, and re-deriving them per pair dominated the pass.
    """

    words: frozenset[str]
    figures: frozenset[str]
    negated: bool

    @classmethod
    def of(cls, text: str) -> TextFeatures:
        negated = _NEGATION.search(text) is not None
        return cls(frozenset(content_words(text)), _figures(text), negated)


@dataclass(frozen=True)
class Lexical:
    """What word overlap alone says about a claim and its passages."""

    verdict: Literal["supported", "unsupported", "unclear"]
    share: float
    reason: str


def lexical_support(
    claim: str, passages: Sequence[str], features: Callable[[str], TextFeatures] = TextFeatures.of
) -> Lexical:
    """Judge `claim` against `passages` by word overlap (see the module docstring).

    `features` derives a passage's features; a caller judging many claims passes a cached one.
    """
    return lexical_verdict(TextFeatures.of(claim), [features(text) for text in passages])


def lexical_verdict(claim: TextFeatures, passages: Sequence[TextFeatures]) -> Lexical:
    """`lexical_support` from features. The passages count as one text: a word, figure or negation
    found in any of them is found (none of the three can span two passages)."""
    words = claim.words
    if not words:
        return Lexical("unclear", 0.0, "the sentence has no content words to compare")
    if not passages:
        return Lexical("unsupported", 0.0, "it cites no passage the run has seen")
    if len(passages) == 1:
        shared = len(words & passages[0].words)
    else:
        shared = sum(1 for word in words if any(word in passage.words for passage in passages))
    share = shared / len(words)
    missing = sorted(n for n in claim.figures if not any(n in passage.figures for passage in passages))
    if missing:
        return Lexical(
            "unsupported", share, f"the figure(s) {', '.join(missing)} appear in none of its passages"
        )
    if shared <= 1 and share < UNSUPPORTED_SHARE:
        return Lexical("unsupported", share, f"it shares almost no words with its passages ({share:.0%})")
    negated = claim.negated and not any(passage.negated for passage in passages)
    if share >= SUPPORTED_SHARE and shared >= SUPPORTED_MIN_SHARED and not negated:
        return Lexical("supported", share, f"{share:.0%} of its content words are in its passages")
    return Lexical("unclear", share, f"{share:.0%} of its content words are in its passages")


class PassageIndex:
    """The run's passages with their features, and which passages hold each content word.

    Built once per pass, when the first sentence is re-cited (the evidence no longer changes then).
    """

    def __init__(self, registry: EvidenceRegistry, features: Callable[[str], TextFeatures]) -> None:
        self.registry, self.size = registry, len(registry.items)
        self.keys = list(registry.items)
        self.features = [features(item.text) for item in registry.items.values()]
        self.holding: dict[str, list[int]] = {}
        for position, passage in enumerate(self.features):
            for word in passage.words:
                self.holding.setdefault(word, []).append(position)

    def describes(self, registry: EvidenceRegistry) -> bool:
        return registry is self.registry and len(registry.items) == self.size

    def best(self, claim: TextFeatures, exclude: Sequence[str], count: int) -> list[tuple[Lexical, str]]:
        """The `count` passages, other than `exclude`, holding the largest share of the claim's
        content words (ties in the run's order), each with what word overlap says of it.

        Only passages sharing a content word with the claim are weighed: any other shares none, so
        it ranks below every passage that does, and word overlap finds it unsupported — re-citing
        could never choose it. (A claim without content words shares nothing with any passage:
        then all rank alike, in the run's order.)
        """
        shared: dict[int, int] = {}
        for word in claim.words:
            for position in self.holding.get(word, ()):
                shared[position] = shared.get(position, 0) + 1
        order: Iterable[int] = (
            sorted(shared, key=lambda position: (-shared[position], position))
            if claim.words
            else range(len(self.keys))
        )
        chosen = islice((p for p in order if self.keys[p] not in exclude), count)
        return [(lexical_verdict(claim, [self.features[p]]), self.keys[p]) for p in chosen]


# ---- the judge's answer (pure) -------------------------------------------------------------------

_YES = {"yes", "y", "true", "supported", "support", "1"}
_NO = {"no", "n", "false", "unsupported", "not supported", "0"}
_LISTED = re.compile(r"^\s*(?:claim\s*)?(\d{1,2})\s*[.):\-]?\s*[:\-]?\s*\**(yes|no)\b", re.I | re.M)
_FENCE = re.compile(r"```[a-zA-Z]*\s*\n?(.*?)\n?\s*```", re.S)


def verdict_schema(count: int) -> dict[str, Any]:
    """JSON schema of the judge's answer: one yes/no per numbered claim, `count` of them."""
    item = {
        "type": "object",
        "properties": {
            "claim": {"type": "integer", "minimum": 1, "maximum": count},
            "supported": {"type": "string", "enum": ["yes", "no"]},
        },
        "required": ["claim", "supported"],
        "additionalProperties": False,
    }
    return {
        "type": "object",
        "properties": {"verdicts": {"type": "array", "items": item, "minItems": count, "maxItems": count}},
        "required": ["verdicts"],
        "additionalProperties": False,
    }


def verdict_shape(count: int) -> ReplyShape:
    """The same answer as a GBNF grammar (llama.cpp, the embedded model) and a schema."""
    item = (
        r'"{" ws "\"claim\"" ws ":" ws [1-9] [0-9]? ws "," ws "\"supported\"" ws ":" ws '
        r'( "\"yes\"" | "\"no\"" ) ws "}"'
    )
    repeat = f'( ws "," ws item ){{{count - 1}}}' if count > 1 else ""
    grammar = (
        f'root ::= ws "{{" ws "\\"verdicts\\"" ws ":" ws "[" ws item {repeat} ws "]" ws "}}" ws\n'
        f"item ::= {item}\n"
        "ws ::= [ \\t\\n]{0,8}\n"
    )
    return ReplyShape(grammar, verdict_schema(count))


def _yes_no(value: object) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str | int):
        word = str(value).strip().strip(".!").lower()
        if word in _YES:
            return True
        if word in _NO:
            return False
    return None


def parse_verdicts(raw: str, count: int) -> dict[int, bool] | str:
    """Claim number → supported, for claims 1..`count`; or why the answer cannot be used."""
    body = split_reply(raw).body or ""
    fenced = _FENCE.search(body)
    if fenced:
        body = fenced.group(1)
    verdicts: dict[int, bool] = {}
    data = find_json(body, (dict, list))
    entries: list[object] = []
    if isinstance(data, dict):
        found = next((data[k] for k in ("verdicts", "claims", "answers", "results") if k in data), None)
        entries = found if isinstance(found, list) else []
    elif isinstance(data, list):
        entries = data
    for position, entry in enumerate(entries, start=1):
        number, value = position, entry
        if isinstance(entry, dict):
            number_value = next((entry[k] for k in ("claim", "item", "id", "number") if k in entry), position)
            number = number_value if isinstance(number_value, int) else _as_int(number_value, position)
            value = next((entry[k] for k in ("supported", "verdict", "answer") if k in entry), None)
        verdict = _yes_no(value)
        if verdict is not None and 1 <= number <= count:
            verdicts.setdefault(number, verdict)
    if not verdicts:  # a plain list, "1. yes / 2. no", as small models write without a grammar
        for match in _LISTED.finditer(body):
            number = int(match.group(1))
            if 1 <= number <= count:
                verdicts.setdefault(number, match.group(2).lower() == "yes")
    missing = [n for n in range(1, count + 1) if n not in verdicts]
    if missing:
        return (
            f'answer with only the JSON object {{"verdicts": [...]}} holding a "yes" or "no" for each of '
            f"the {count} claims; claim(s) {', '.join(map(str, missing))} had no readable verdict"
        )
    return verdicts


def _as_int(value: object, default: int) -> int:
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return default


# ---- asking and recording, shared by the finishing passes ---------------------------------------


class FinishingCalls:
    """Asks the LLM for a finishing pass and journals every exchange as a step with its checkpoint.

    Steps are numbered after the policy's (`state.step + state.finishing_steps`) and tagged by that
    number, so a resumed run asks the same requests and the LLM cache answers the paid ones. They
    do not count as policy actions: `max_steps` never refuses them.
    """

    def __init__(self, llm: LLM, emit: EventSink, seed: int | None) -> None:
        self.llm, self.emit, self.seed = llm, emit, seed

    def ask(
        self,
        state: RunState,
        action: str,
        target: str,
        prompt: str,
        *,
        shape: ReplyShape | None = None,
        schema: dict[str, Any] | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
    ) -> tuple[ChatResult, float]:
        step = state.step + state.finishing_steps + 1
        self.emit(ActionStarted(step, action, target))
        started = time.time()
        request = ChatRequest.user(
            prompt,
            reply_shape=shape,
            json_schema=schema,
            max_tokens=max_tokens,
            temperature=temperature,
            seed=None if self.seed is None else self.seed + step,
            tag=f"finish-{step}",
        )
        result = self.llm.complete(request)
        state.finishing_steps += 1
        state.prompt_tokens += result.usage.prompt_tokens
        state.completion_tokens += result.usage.completion_tokens
        return result, started

    def record(
        self,
        state: RunState,
        action: str,
        target: str,
        *,
        prompt: str = "",
        result: ChatResult | None = None,
        parsed: dict[str, Any] | None = None,
        reason: str | None = None,
        started: float | None = None,
        changes: PassCheckpoints | None = None,
    ) -> None:
        """Journal the last exchange (or, with no `result`, a decision made without a call).

        The checkpoint is the whole state, unless `changes` can tell what changed since the
        previous one.
        """
        if result is None:
            state.finishing_steps += 1
        now = time.time()
        record = StepRecord(
            step=state.step + state.finishing_steps,
            action=action,
            target=target,
            prompt=prompt,
            reply=result.text if result else "",
            parsed=parsed,
            valid=reason is None,
            reason=reason,
            prompt_tokens=result.usage.prompt_tokens if result else 0,
            completion_tokens=result.usage.completion_tokens if result else 0,
            started_at=started or now,
            finished_at=now,
            cached=result.cached if result else False,
        )
        if changes is None:
            self.emit(ActionFinished(record, state.snapshot()))
        else:
            self.emit(ActionFinished(record, changes.checkpoint(state, record.step)))
            changes.recorded()


class PassCheckpoints:
    """The checkpoints of verification steps, after the first: only what changed since the last.

    Until its decisions are applied, a verification step changes the state's counters, the
    verification's figures and progress, and the checks of the sentences it decided — never the
    outline or the evidence, the bulk of the state (node texts stay as written until the end).
    Writing the whole state at each of hundreds of steps was most of the pass's time and of the
    journal's size. So once one whole checkpoint of the pass is journaled by this process, each
    later step's is `StateChanges`: the small fields that differ, and each sentence check that does.
    """

    _BULK = frozenset({"outline", "registry", "verification", "verification_progress"})

    def __init__(self) -> None:
        self._last: _Seen | None = None
        self._offered: _Seen | None = None

    def checkpoint(self, state: RunState, step: int) -> dict[str, Any] | StateChanges:
        """The checkpoint of `step` for the journal; `recorded` says it was written."""
        seen = self._offered = self._see(state, step)
        last = self._last
        if seen is None or last is None or not seen.continues(last):
            return state.snapshot()
        assert state.verification is not None
        values = {
            pointer: value
            for pointer, value in seen.fields.items()
            if pointer not in last.fields or last.fields[pointer] != value
        }
        for index, (now, before) in enumerate(zip(seen.checks, last.checks, strict=True)):
            if now != before:
                check = state.verification.sentences[index]
                values[f"/verification/sentences/{index}"] = check.model_dump(mode="json")
        return StateChanges(last.step, values)

    def recorded(self) -> None:
        self._last, self._offered = self._offered, None

    def _see(self, state: RunState, step: int) -> _Seen | None:
        verification, progress = state.verification, state.verification_progress
        if verification is None or progress is None:
            return None
        fields = {
            f"/{name}": value
            for name, value in state.model_dump(mode="json", exclude=set(self._BULK)).items()
        }
        for name, value in verification.model_dump(mode="json", exclude={"sentences"}).items():
            fields[f"/verification/{name}"] = value
        for name, value in progress.model_dump(mode="json", exclude={"spans"}).items():
            fields[f"/verification_progress/{name}"] = value
        # A check's field values, as they are now: a changed field holds a new value (every
        # field is a string or a list that is never changed in place), so comparing these tuples
        # finds the checks a step changed.
        checks = [tuple(vars(check).values()) for check in verification.sentences]
        return _Seen(step, fields, checks, (state.outline, state.registry, progress.spans))


@dataclass(frozen=True)
class _Seen:
    """What `PassCheckpoints` compares between two steps."""

    step: int
    fields: dict[str, Any]
    checks: list[tuple[object, ...]]
    bulk: tuple[object, ...]
    """The parts a verification step leaves alone, by identity: a new object means a whole checkpoint."""

    def continues(self, last: _Seen) -> bool:
        return len(self.checks) == len(last.checks) and all(
            now is before for now, before in zip(self.bulk, last.bulk, strict=True)
        )


# ---- the pass ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Exchange:
    """One call of the pass, held until the decision it led to is in the state."""

    action: str
    target: str
    prompt: str
    result: ChatResult
    started: float
    parsed: dict[str, Any] | None
    reason: str | None


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
    ) -> None:
        self.research, self.output = research, output
        self.calls = FinishingCalls(llm, on_event, research.seed)
        self.emit = on_event
        self.count_tokens = count_tokens or estimate_tokens
        self.budget = min(JUDGE_PROMPT_TOKENS, prompt_limit or JUDGE_PROMPT_TOKENS)
        self._exchange: _Exchange | None = None
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
                self._journal(state)
            while progress.unsupported:
                self._remedy(state, state.verification, progress)
                self._journal(state)
        except LLMBudgetExhausted as exc:
            self._out_of_budget(state.verification, progress, str(exc))
        self._apply(state, state.verification, progress)
        return state

    # ---- deciding ------------------------------------------------------------------------------

    def _start(self, state: RunState) -> None:
        """Split every written node and settle what word overlap can settle (no calls)."""
        assert state.outline is not None
        verification, progress = Verification(), VerificationProgress(spans=[])
        for located in state.outline.walk():
            content = located.node.content
            if not content:
                continue
            for start, end in sentence_spans(content):
                sentence = content[start:end]
                keys = list(dict.fromkeys(key for group in cited_keys(sentence) for key in group))
                claim = claim_text(sentence)
                if not keys or not content_words(claim) or sentence.lstrip().startswith("#"):
                    continue  # no claim to check: uncited text, a bare citation, a heading
                lexical = lexical_support(claim, _passages(state.registry, keys), self._passage_features)
                index = len(verification.sentences)
                verification.sentences.append(
                    SentenceCheck(
                        node_id=located.node.id,
                        position=located.position,
                        sentence=_PREFIX.sub("", sentence.strip(), count=1),
                        keys=keys,
                        verdict="supported" if lexical.verdict == "supported" else "unverified",
                        final_text=_PREFIX.sub("", sentence.strip(), count=1),
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
        claims: list[_Claim] = []
        prompt = ""
        for index in progress.pending[:JUDGE_MAX_CLAIMS]:
            check = verification.sentences[index]
            trial = [*claims, _Claim(index, claim_text(check.sentence), tuple(check.keys))]
            rendered = self._judge_prompt(state, trial, progress.feedback)
            if claims and self.count_tokens(rendered) > self.budget:
                break
            claims, prompt = trial, rendered
        verdicts = self._ask_judge(state, verification, progress, claims, prompt, claims[0].index)
        if verdicts is None:
            return
        for number, claim in enumerate(claims, start=1):
            check = verification.sentences[claim.index]
            progress.pending.remove(claim.index)
            if isinstance(verdicts, str):
                check.verdict, check.reason = "unverified", f"the judge's answer was unreadable: {verdicts}"
            elif verdicts[number]:
                check.verdict, check.reason = "supported", "the judge found it supported by its passages"
            else:
                check.reason = "the judge found it not supported by its passages"
                progress.unsupported.append(claim.index)

    def _ask_judge(
        self,
        state: RunState,
        verification: Verification,
        progress: VerificationProgress,
        claims: Sequence[_Claim],
        prompt: str,
        about: int,
    ) -> dict[int, bool] | str | None:
        """The judge's verdicts; a reason when it stayed unreadable; None to ask again."""
        target = verification.sentences[about].position
        try:
            result, started = self.calls.ask(
                state,
                "verify",
                target,
                prompt,
                shape=verdict_shape(len(claims)),
                schema=verdict_schema(len(claims)),
                max_tokens=48 + 24 * len(claims),
                temperature=0.0,
            )
        except LLMContextOverflow:
            if len(claims) > 1:  # ask again with fewer claims per prompt
                self.budget = max(200, self.count_tokens(prompt) * 2 // 3)
                return None
            return "the claim and its passages do not fit in the model's context"
        self._tally(verification, result)
        verdicts = parse_verdicts(result.text, len(claims))
        parsed: dict[str, Any] | None = None
        if isinstance(verdicts, dict):
            parsed = {
                "claims": [verification.sentences[c.index].sentence for c in claims],
                "keys": [list(c.keys) for c in claims],
                "supported": [verdicts[n] for n in range(1, len(claims) + 1)],
            }
            progress.failures, progress.feedback = 0, ""
        else:
            progress.failures += 1
            progress.feedback = verdicts
        self._exchange = _Exchange(
            "verify",
            target,
            prompt,
            result,
            started,
            parsed,
            None if isinstance(verdicts, dict) else verdicts,
        )
        if isinstance(verdicts, dict):
            return verdicts
        if progress.failures >= JUDGE_TRIES:
            progress.failures, progress.feedback = 0, ""
            return verdicts
        return None

    def _judge_prompt(self, state: RunState, claims: Sequence[_Claim], feedback: str) -> str:
        keys = list(dict.fromkeys(key for claim in claims for key in claim.keys if key in state.registry))
        cut = self.research.passage_tokens

        def passage(key: str) -> str:
            text = state.registry[key].text
            return text if cut is None else head_tail(text, cut, 0)

        return prompts.render(
            "verify",
            passages="\n\n".join(f"bibkey:{key}\n{passage(key)}" for key in keys),
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
        settled = False
        if remedy == "repair":
            settled = self._repair(state, verification, check)
        elif remedy == "recite":
            outcome = self._recite(state, verification, progress, index)
            if outcome is None:
                return  # the judge's answer was unreadable: ask again
            settled = outcome
        else:
            check.verdict, check.final_text = "removed", ""
            check.reason += "; removed"
            settled = True
        if settled:
            progress.unsupported.pop(0)
            progress.remedy = None
        else:
            progress.remedy = chain[chain.index(remedy) + 1]

    def _repair(self, state: RunState, verification: Verification, check: SentenceCheck) -> bool:
        passages = _passages(state.registry, check.keys)
        prompt = prompts.render(
            "repair",
            question=state.question,
            sentence=claim_text(check.sentence),
            citation="\\cite{" + ", ".join(check.keys) + "}",
            passages="\n\n".join(
                f"bibkey:{k}\n{state.registry[k].text}" for k in check.keys if k in state.registry
            ),
            language=self.research.language or "",
        )
        try:
            result, started = self.calls.ask(
                state, "repair", check.position, prompt, shape=reply_shape("write")
            )
        except LLMContextOverflow:
            check.reason += "; too long to repair in the model's context"
            return False
        self._tally(verification, result)
        rewrite = read_rewrite(
            result.text, check.keys, passages, state.question, self.research.language, self._passage_features
        )
        if isinstance(rewrite, Rewrite):
            check.verdict, check.final_text = "repaired", rewrite.text
            check.reason += f"; re-written from its passages ({rewrite.share:.0%} of its words are in them)"
        else:
            check.reason += f"; the repair was refused ({rewrite})"
        accepted = isinstance(rewrite, Rewrite)
        parsed = (
            {"sentence": check.sentence, "rewrite": rewrite.text} if isinstance(rewrite, Rewrite) else None
        )
        self._exchange = _Exchange(
            "repair", check.position, prompt, result, started, parsed, None if accepted else str(rewrite)
        )
        return isinstance(rewrite, Rewrite)

    def _recite(
        self,
        state: RunState,
        verification: Verification,
        progress: VerificationProgress,
        index: int,
    ) -> bool | None:
        """Cite a passage of the run that supports the sentence: True when found, None to ask again."""
        check = verification.sentences[index]
        claim = claim_text(check.sentence)
        if self._index is None or not self._index.describes(state.registry):
            self._index = PassageIndex(state.registry, self._passage_features)
        ranked = self._index.best(TextFeatures.of(claim), check.keys, RECITE_CANDIDATES)
        if ranked and ranked[0][0].verdict == "supported":
            return self._recited(check, ranked[0][1], "lexical", ranked[0][0].reason)
        candidates = [key for lexical, key in ranked[:RECITE_CANDIDATES] if lexical.verdict == "unclear"]
        if not candidates:
            check.reason += "; no other passage of the run shares its words"
            return False
        # One claim per candidate passage, all about this sentence (`index` names the sentence).
        claims = [_Claim(index, claim, (key,)) for key in candidates]
        prompt = self._judge_prompt(state, claims, progress.feedback)
        verdicts = self._ask_judge(state, verification, progress, claims, prompt, index)
        if verdicts is None:
            return None
        if isinstance(verdicts, str):
            check.reason += "; the judge's answer about other passages was unreadable"
            return False
        supporting = next((key for n, key in enumerate(candidates, start=1) if verdicts[n]), None)
        if supporting is None:
            check.reason += f"; the judge found no support in {', '.join(candidates)} either"
            return False
        return self._recited(check, supporting, "judge", f"the judge found it supported by {supporting}")

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

    def _journal(self, state: RunState) -> None:
        """Record the exchange of the decision just made, now that the state holds its outcome.

        Recording it any earlier would checkpoint a state that still has to ask this question,
        and a resume from there would ask it again under a new tag, which the cache cannot answer.
        """
        exchange, self._exchange = self._exchange, None
        if exchange is not None:
            self.calls.record(
                state,
                exchange.action,
                exchange.target,
                prompt=exchange.prompt,
                result=exchange.result,
                parsed=exchange.parsed,
                reason=exchange.reason,
                started=exchange.started,
                changes=self._checkpoints,
            )

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
            by_node.setdefault(check.node_id, []).append((span, check))
        for node_id, decided in by_node.items():
            located = state.outline.find_id(node_id)
            if located is None or located.node.content is None:
                continue
            text = rewrite_node(located.node.content, decided)
            if "\\cite{" in text:
                located.node.content = text
            else:
                # Every cited claim failed. Keeping the least bad one would leave a claim known to be
                # unsupported; keeping only the uncited rest would pass off unsourced text. So the part
                # shows what happened instead, like a part the policy could not write: the gap stays
                # visible, and the original text stays in the journal's checkpoints.
                located.node.content, located.node.note = None, EMPTIED_NOTE
        verification.recount()
        state.verification_progress = None
        state.finished_phases.append(PHASE)
        figures = verification.model_dump(exclude={"sentences"})
        self.emit(VerificationFinished(**figures))
        self.calls.record(state, "verify", "report", parsed=figures)


@dataclass(frozen=True)
class Rewrite:
    text: str
    share: float


def read_rewrite(
    raw: str,
    keys: Sequence[str],
    passages: Sequence[str],
    question: str,
    language: str | None,
    features: Callable[[str], TextFeatures] = TextFeatures.of,
) -> Rewrite | str:
    """A repaired sentence from the model's reply, validated; or why it was refused."""
    body = split_reply(raw).body or ""
    fenced = _FENCE.search(body)
    text = " ".join((fenced.group(1) if fenced else body).split())
    text = normalise_citations(text).strip().strip('"“”')
    # A sentence replaces a sentence: heading or list markers the model copied from a passage
    # ("# Address of 1832 …") would turn the repaired sentence into a heading or a list.
    text = re.sub(r"^(?:#{1,6}\s+|[-*+]\s+|>\s*)+", "", text)
    if not content_words(claim_text(text)) or claim_text(text).strip(".").upper() in {"NONE", "NO SUPPORT"}:
        return "the rewrite is empty: the passages support nothing of it"
    cited = {key for group in cited_keys(text) for key in group}
    if cited - set(keys):
        return f"the rewrite cites {', '.join(sorted(cited - set(keys)))}, which the sentence did not cite"
    if not cited:  # small models drop the citation; the keys are known, so put it back
        text = cite_sentence(text, ", ".join(keys))
    if problem := language_problem(text, question, language):
        return problem
    lexical = lexical_support(claim_text(text), passages, features)
    if lexical.verdict == "unsupported" or lexical.share < REWRITE_SHARE:
        return f"the rewrite does not follow its passages ({lexical.reason})"
    return Rewrite(text, lexical.share)


def rewrite_node(content: str, decided: Sequence[tuple[tuple[int, int], SentenceCheck]]) -> str:
    """`content` with each checked sentence replaced by its final text (removed ones dropped)."""
    pieces: list[str] = []
    last = 0
    for (start, end), check in sorted(decided, key=lambda pair: pair[0]):
        original = content[start:end]
        pieces.append(content[last:start])
        prefix = _PREFIX.match(original)
        lead = prefix.group() if prefix else ""
        trail = original[len(original.rstrip()) :]
        if check.final_text:
            pieces.append(f"{lead}{check.final_text}{trail}")
        else:
            pieces.append(lead.rstrip(" ") + ("\n" if "\n" in trail else ""))
        last = end
    pieces.append(content[last:])
    # Tidy what removals leave behind: list markers with nothing after them, trailing blanks, runs of
    # empty lines, and the single space that separated a removed first sentence from the next one
    # (two or more spaces are indentation, and stay).
    text = _BARE_MARKER.sub("", "".join(pieces))
    text = re.sub(r"[ \t]+\n", "\n", text)
    text = re.sub(r"\n(?: ?\n)+", "\n\n", text)
    lines = text.split("\n")
    return "\n".join(line[1:] if re.match(r" \S", line) else line for line in lines).strip()


def _passages(registry: EvidenceRegistry, keys: Sequence[str]) -> list[str]:
    return [registry[key].text for key in keys if key in registry]


def _is_table_row(sentence: str) -> bool:
    return sentence.lstrip().startswith("|")
