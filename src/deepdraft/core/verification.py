"""What the finishing passes found: per-sentence citation support and the question's constraints.

Pure data, no I/O. `verify.py` fills `Verification` (one `SentenceCheck` per cited sentence of the
report), `synthesis.py` fills the `ConstraintCheck`s; both live in `RunState`, so they are saved in
every checkpoint and rendered by the report and its exports (the JSON export carries them whole).

The figures of a `Verification` always add up: every checked sentence ends in exactly one verdict,
so ``supported + repaired + recited + removed + unverified == checked``.

The `*Progress` models are bookkeeping for a pass that is under way. They are part of the state so
that a run killed in the middle of a pass resumes exactly where it stopped (and, asking the same
prompts with the same tags, gets the replies it already paid for back from the LLM cache).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

Verdict = Literal["supported", "repaired", "recited", "removed", "unverified"]
"""supported: the cited passages back the sentence as written; repaired: re-written from its
passages; recited: now cites another passage of the run that backs it; removed: deleted, nothing
backs it; unverified: no judgment could be had (the LLM budget ran out, or its answer was unreadable)."""

CheckMethod = Literal["lexical", "judge"]
"""How the support of the sentence as written was decided: word overlap alone, or the LLM judge."""

Remedy = Literal["repair", "recite", "remove"]


class SentenceCheck(BaseModel):
    node_id: str
    position: str
    sentence: str
    """The sentence as the writer wrote it, citations included."""
    keys: list[str]
    """The evidence keys it cited."""
    verdict: Verdict
    final_text: str
    """What the report says now: the sentence, its repair, its re-cited form, or "" when removed."""
    reason: str
    method: CheckMethod


class Verification(BaseModel):
    checked: int = 0
    supported: int = 0
    repaired: int = 0
    recited: int = 0
    removed: int = 0
    unverified: int = 0
    llm_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    sentences: list[SentenceCheck] = Field(default_factory=list)

    def recount(self) -> None:
        """Set the figures from the sentences' verdicts."""
        verdicts = [check.verdict for check in self.sentences]
        self.checked = len(verdicts)
        self.supported = verdicts.count("supported")
        self.repaired = verdicts.count("repaired")
        self.recited = verdicts.count("recited")
        self.removed = verdicts.count("removed")
        self.unverified = verdicts.count("unverified")


class ConstraintCheck(BaseModel):
    name: str
    """length | language | format | sections | audience | required item."""
    requirement: str
    """The requirement in the user's words, e.g. "about 500 words" or "cover immigration"."""
    satisfied: bool
    detail: str


class VerificationProgress(BaseModel):
    """Where an unfinished verification pass stands (indices point into `Verification.sentences`)."""

    spans: list[tuple[int, int]]
    """Each checked sentence's character span in its node's content, which is left untouched
    until every sentence is decided and the decisions are applied together."""
    pending: list[int] = Field(default_factory=list)
    """Sentences waiting for the judge, in report order."""
    unsupported: list[int] = Field(default_factory=list)
    """Sentences found unsupported, waiting for the remedy the policy prescribes."""
    remedy: Remedy | None = None
    """The next remedy to try on `unsupported[0]` (None: the policy's first one)."""
    failures: int = 0
    """Unreadable judge answers in a row for the question being asked now."""
    feedback: str = ""
    """Why the last answer was unreadable; shown to the judge when it is asked again."""


class SynthesisProgress(BaseModel):
    """Where an unfinished synthesis pass stands."""

    part: Literal["summary", "conclusion", "extract", "judge", "done"] = "summary"
    tries: int = 0
    """Refused replies in a row for the current part."""
    feedback: str = ""
    required_items: list[str] | None = None
    """Items the question requires (None until extracted)."""
    audience: str = ""
    verdicts: list[bool] | None = None
    """The judge's answers about the items and audience words could not settle, in order."""
    unjudged: str = ""
    """Why the judge gave no answers (budget, unreadable replies), when it did not."""
