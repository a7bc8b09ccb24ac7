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
