"""Spending limits: the token cap ends a run gracefully; the rate limit waits instead of failing."""

from __future__ import annotations

import pytest

from deepdraft.core.state import RunState
from deepdraft.errors import LLMBudgetExhausted
from deepdraft.export.report import render_markdown
from deepdraft.llm.limits import LimitedLLM, format_duration
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
