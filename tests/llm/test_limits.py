"""Spending limits: the token cap ends a run gracefully; the rate limit waits instead of failing."""

from __future__ import annotations

import pytest

from deepdraft.core.state import RunState
from deepdraft.errors import LLMBudgetExhausted
from deepdraft.export.report import render_markdown
from deepdraft.llm.limits import Budget, LimitedLLM
from deepdraft.llm.scripted import FunctionLLM
from deepdraft.policy.warp import WarpPolicy
from deepdraft.ports import ChatRequest, ChatResult, Usage
from deepdraft.settings import ResearchSettings
from tests.support.scenario import SOTU_LIKE, ScenarioModel, WordOverlapRetriever


class Fixed:
    model_name = "fixed"

    def __init__(self, cached: bool = False) -> None:
        self.calls = 0
        self.cached = cached

    def complete(self, request: ChatRequest) -> ChatResult:
        self.calls += 1
        return ChatResult("ok", Usage(60, 40), cached=self.cached)


def test_token_cap_refuses_calls_once_spent() -> None:
    llm = LimitedLLM(Fixed(), max_tokens_total=250)
    for _ in range(3):
        llm.complete(ChatRequest.user("q"))
    assert llm.tokens_used == 300
    with pytest.raises(LLMBudgetExhausted, match="250"):
        llm.complete(ChatRequest.user("q"))


def test_replayed_replies_cost_nothing() -> None:
    llm = LimitedLLM(Fixed(cached=True), max_tokens_total=10)
    for _ in range(5):
        llm.complete(ChatRequest.user("q"))
    assert llm.tokens_used == 0


def test_rate_limit_waits_for_the_window() -> None:
    now = [0.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    llm = LimitedLLM(Fixed(), requests_per_minute=2, clock=lambda: now[0], sleep=sleep)
    llm.complete(ChatRequest.user("q"))
    now[0] += 10
    llm.complete(ChatRequest.user("q"))
    llm.complete(ChatRequest.user("q"))  # third in the same minute: waits until the first is a minute old
    assert slept == [50.0]
    now[0] += 61
    llm.complete(ChatRequest.user("q"))
    assert slept == [50.0]


def test_a_spent_budget_finishes_the_report_instead_of_failing() -> None:
    llm = LimitedLLM(FunctionLLM(ScenarioModel(expansions=2)), max_tokens_total=1500)
    state = WarpPolicy(llm, WordOverlapRetriever(SOTU_LIKE), ResearchSettings()).run(
        RunState(question="How did presidents argue about tariffs?")
    )
    assert state.phase == "done" and "token budget" in state.stop_reason
    assert state.outline is not None
    markdown = render_markdown(
        state.outline, state.registry, stop_note=f"run stopped: {state.stop_reason}"
    ).markdown
    assert "*Not written — run stopped: the token budget of 1,500 is spent" in markdown


def test_one_budget_holds_for_every_model_that_shares_it() -> None:
    now = [0.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    budget = Budget(max_tokens_total=250, requests_per_minute=2, clock=lambda: now[0], sleep=sleep)
    first, second = LimitedLLM(Fixed(), budget=budget), LimitedLLM(Fixed(), budget=budget)
    first.complete(ChatRequest.user("q"))
    second.complete(ChatRequest.user("q"))
    assert slept == []
    first.complete(ChatRequest.user("q"))  # the third request of the minute, whichever run asks it
    assert slept == [60.0]
    assert budget.tokens_used == 300 and budget.exhausted
    with pytest.raises(LLMBudgetExhausted):
        second.complete(ChatRequest.user("q"))


def test_a_budget_starts_from_what_earlier_sessions_spent() -> None:
    llm = LimitedLLM(Fixed(), budget=Budget(max_tokens_total=250, spent=200))
    llm.complete(ChatRequest.user("q"))
    with pytest.raises(LLMBudgetExhausted, match="300 used"):
        llm.complete(ChatRequest.user("q"))
