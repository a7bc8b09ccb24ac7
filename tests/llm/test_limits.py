"""Spending limits: the token cap ends a run gracefully; the rate limit waits instead of failing."""

from __future__ import annotations

import pytest

from deepdraft.core.state import RunState
from deepdraft.errors import LLMBudgetExhausted
from deepdraft.export.report import render_markdown
from deepdraft.llm.limits import Budget, LimitedLLM, format_duration
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


def test_a_reply_replayed_on_resume_counts_as_the_step_it_becomes() -> None:
    # Replayed from the run's cache: paid for by the session that stopped before journaling it,
    # so the journaled steps a resume starts from (`spent_tokens`) do not hold it yet.
    llm = LimitedLLM(Fixed(cached=True), max_tokens_total=10_000, spent_tokens=500)
    llm.complete(ChatRequest.user("q"))
    assert llm.tokens_used == 600


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
    first, second = LimitedLLM(Fixed(), budget), LimitedLLM(Fixed(), budget)
    first.complete(ChatRequest.user("q"))
    second.complete(ChatRequest.user("q"))
    assert slept == []
    first.complete(ChatRequest.user("q"))  # the third request of the minute, whichever run asks it
    assert slept == [60.0]
    assert budget.tokens_used == 300 and budget.exhausted
    with pytest.raises(LLMBudgetExhausted):
        second.complete(ChatRequest.user("q"))


def test_a_budget_starts_from_what_earlier_sessions_spent() -> None:
    llm = LimitedLLM(Fixed(), Budget(max_tokens_total=250, spent_tokens=200))
    llm.complete(ChatRequest.user("q"))
    with pytest.raises(LLMBudgetExhausted, match="300 used"):
        llm.complete(ChatRequest.user("q"))


def test_the_time_budget_refuses_calls_once_spent() -> None:
    now = [100.0]
    llm = LimitedLLM(Fixed(), max_time_s=90, spent_seconds=30, clock=lambda: now[0])
    llm.complete(ChatRequest.user("q"))
    now[0] += 59  # 30 s in earlier sessions and 59 s in this one
    llm.complete(ChatRequest.user("q"))
    now[0] += 1
    with pytest.raises(LLMBudgetExhausted, match=r"^the time budget of 1m 30s is spent \(1m 30s used\)$"):
        llm.complete(ChatRequest.user("q"))


def test_role_models_share_the_runs_budget_and_earlier_spending_counts() -> None:
    main, planner = Fixed(), Fixed()
    llm = LimitedLLM(main, max_tokens_total=450, spent_tokens=200)
    role = llm.sharing(planner)
    role.complete(ChatRequest.user("q"))
    llm.complete(ChatRequest.user("q"))
    assert llm.tokens_used == role.tokens_used == 400
    role.complete(ChatRequest.user("q"))
    with pytest.raises(LLMBudgetExhausted, match="500 used"):
        llm.complete(ChatRequest.user("q"))
    assert (main.calls, planner.calls) == (1, 2)


@pytest.mark.parametrize(
    ("seconds", "shown"), [(45, "45s"), (60, "1m"), (725, "12m 5s"), (7200, "2h"), (7380, "2h 3m")]
)
def test_durations_read_as_people_write_them(seconds: float, shown: str) -> None:
    assert format_duration(seconds) == shown


def test_a_run_in_a_pool_is_held_to_its_own_budget_and_to_the_shared_one() -> None:
    shared = Budget(max_tokens_total=1_000)
    first = LimitedLLM(Fixed(), Budget(max_tokens_total=250), shared)
    planner = first.sharing(Fixed())  # the first run's role model: both budgets, as its main model
    second = LimitedLLM(Fixed(), Budget(max_tokens_total=10_000, spent_tokens=400), shared)
    first.complete(ChatRequest.user("q"))
    planner.complete(ChatRequest.user("q"))
    planner.complete(ChatRequest.user("q"))
    with pytest.raises(LLMBudgetExhausted, match="token budget of 250 is spent"):
        first.complete(ChatRequest.user("q"))
    assert first.tokens_used == 300 and shared.tokens_used == 300
    for _ in range(7):
        second.complete(ChatRequest.user("q"))
    with pytest.raises(LLMBudgetExhausted, match="token budget of 1,000 is spent"):
        second.complete(ChatRequest.user("q"))
    assert second.tokens_used == 1_100  # its own 400 from earlier sessions, and this session's 700
