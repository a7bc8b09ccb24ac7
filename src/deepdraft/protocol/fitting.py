"""Fitting a prompt into the model's context: how much draft and evidence it can show.

Budgets (settings) normally keep prompts small. This is the guard for small context windows and
for servers that report an overflow: a prompt over the limit is rendered again with less — first a
more condensed draft, then shorter evidence passages, and only then fewer passages (the lowest
ranked go first) — until it fits or nothing is left to shrink.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

MIN_DRAFT_BUDGET = 200
MIN_PASSAGE_CUT = 60  # shorter passages stop being evidence worth citing
MAX_PASSAGE_CUT = 400  # where cutting starts when passages are shown whole


@dataclass(frozen=True)
class Fit:
    """How much of the draft and the evidence a prompt shows."""

    draft: int  # token budget of the condensed draft
    passages: int  # how many evidence passages, best first
    passage_tokens: int | None  # each passage cut to about this many tokens (None: whole)


def fit_prompt(
    render: Callable[[Fit], str],
    fit: Fit,
    *,
    limit: int | None,
    count: Callable[[str], int],
    shrink_draft: bool = True,
) -> str:
    """`render(fit)`, shrinking `fit` while the prompt has more than `limit` tokens."""
    prompt = render(fit)
    while limit is not None:
        excess = count(prompt) - limit
        if excess <= 0:
            break
        if shrink_draft and fit.draft > MIN_DRAFT_BUDGET:
            fit = replace(fit, draft=max(MIN_DRAFT_BUDGET, fit.draft - excess))
        elif fit.passages and (fit.passage_tokens or MAX_PASSAGE_CUT) > MIN_PASSAGE_CUT:
            per_passage = (fit.passage_tokens or MAX_PASSAGE_CUT) - excess // fit.passages - 1
            fit = replace(fit, passage_tokens=max(MIN_PASSAGE_CUT, per_passage))
        elif fit.passages > 1:
            fit = replace(fit, passages=fit.passages - 1)
        else:
            break  # nothing left to shrink; the server will say if it is too long
        prompt = render(fit)
    return prompt


MIN_PROMPT_LIMIT = 600
"""Below this no useful prompt fits; a server refusing one this small is a real error."""


class ContextWindow:
    """How many tokens a prompt may have, learned downwards when a server refuses one as too long.

    `limit` starts as the model's context minus room for the reply (None: unknown, no fitting). The
    token count is an estimate unless the model's own tokenizer is given, so a server may still
    refuse a prompt; then every later prompt is fitted under three quarters of the refused one.
    A refusal of a prompt no smaller than one refused before, with no prompt accepted in between,
    means shrinking does not help: `refused` says so and the caller lets the error through.
    """

    def __init__(self, limit: int | None, count: Callable[[str], int]) -> None:
        self.limit = limit
        self.count = count
        self._refused_since_accepted: int | None = None

    def fit(
        self, render: Callable[[Fit], str], draft: int | None, passages: int, passage_tokens: int | None
    ) -> str:
        """`render` at the largest `Fit` under the limit; `draft` None keeps the draft as rendered."""
        return fit_prompt(
            render,
            Fit(draft or 0, passages, passage_tokens),
            limit=self.limit,
            count=self.count,
            shrink_draft=draft is not None,
        )

    def accepted(self) -> None:
        self._refused_since_accepted = None

    def refused(self, prompt: str) -> bool:
        """A server refused `prompt` as too long: shrink the limit; False when that cannot help."""
        size = self.count(prompt)
        last = self._refused_since_accepted
        if size <= MIN_PROMPT_LIMIT or (last is not None and size >= last):
            return False
        self._refused_since_accepted = size
        self.limit = max(MIN_PROMPT_LIMIT, size * 3 // 4)
        return True
