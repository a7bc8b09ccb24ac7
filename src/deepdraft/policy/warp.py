"""WARP, the Writing-As-Reasoning Policy: one agent that drafts a report and deepens it as it goes.

The loop, as in AgentCPM-Report (arXiv 2602.06540):

1. search for background on the whole question, then **plan** a sparse outline: a title and
   3–12 top-level sections, each with a one-line plan;
2. **draft**: for every node without text, in document order, search with keywords chosen for
   that node (the model sees the question, the node's plan and the draft so far), then write the
   node from that fresh evidence, citing only it;
3. **deepen**: once every node has text, read the whole draft and either split one childless
   level-1 or level-2 node into 2–7 subsections — which sends the loop back to step 2 for the new,
   empty nodes — or stop;
4. stop when the model says so (`nop`), after `max_expansions` deepening decisions, or after
   `max_steps` actions. Whatever stops the run, the report is complete: nodes never written keep
   a visible note.

Each action is one LLM call with a fresh prompt built from the state; nothing is carried between
calls except the state itself. A reply that breaks the protocol is asked again with the reason
(at most `max_retries` times). A node whose text keeps being refused gets one fresh search and
another round of tries, then is left with a note, and the loop moves on.

The policy does no I/O of its own: it talks to an `LLM` and a `Retriever` and reports every step
as an event; the runner journals the checkpoint each `ActionFinished` event carries.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

from deepdraft.core.evidence import render_evidence, select_passages
from deepdraft.core.outline import NodeSpec, Outline, empty_outline_view
from deepdraft.core.state import RunState
from deepdraft.core.tokens import count_tokens as estimate_tokens
from deepdraft.errors import LLMBudgetExhausted, LLMContextOverflow, RunFailed
from deepdraft.events import (
    ActionFinished,
    ActionStarted,
    Event,
    EventSink,
    EvidenceAdded,
    NodeSkipped,
    NodeWritten,
    OutlineChanged,
    OutlineReviewed,
    StepRecord,
    ignore,
)
from deepdraft.ports import LLM, ChatRequest, ChatResult, ReplyShape, Retriever
from deepdraft.protocol import prompts
from deepdraft.protocol.actions import (
    NO_CITATIONS,
    SECTIONS_RANGE,
    SUBSECTIONS_RANGE,
    Action,
    ExtendPlan,
    InitPlan,
    Nop,
    PlannedNode,
    Refused,
    Search,
    Write,
    parse,
    validate_extend_plan,
    validate_init_plan,
    validate_search,
    validate_write,
)
from deepdraft.protocol.attach import attach_citations
from deepdraft.protocol.fitting import Fit, fit_prompt
from deepdraft.protocol.grammar import ShapeName, reply_shape
from deepdraft.settings import ResearchSettings

MIN_PROMPT_LIMIT = 600  # below this no useful prompt fits; a server refusing it is a real error
MUST_DEEPEN = "must-deepen"  # a stop refused because the run collects training data (force_expansions)


@dataclass(frozen=True)
class Exchange:
    """One call to the model and what came of it."""

    action: str
    target: str
    prompt: str
    result: ChatResult
    outcome: Action | Refused
    started_at: float


ROLES = {"init-plan": "planner", "extend-plan": "planner", "write": "writer"}

ReviewOutline = Callable[[Outline], Outline | None]
"""Plan review: shown the first outline, returns the user's edited outline, or None to keep it."""


class WarpPolicy:
    name = "warp"
    plan_template: prompts.TemplateName = "init_plan"
    plan_shape: ShapeName = "init-plan"

    def __init__(
        self,
        llm: LLM,
        retriever: Retriever,
        budgets: ResearchSettings,
        on_event: EventSink = ignore,
        prompt_limit: int | None = None,
        count_tokens: Callable[[str], int] | None = None,
        roles: Mapping[str, LLM] | None = None,
        review_outline: ReviewOutline | None = None,
    ) -> None:
        self.llm = llm
        self.roles = dict(roles or {})
        """Optional models per role: "planner" (init-plan, extend-plan) and "writer" (write)."""
        self.retriever = retriever
        self.budgets = budgets
        self.emit: Callable[[Event], None] = on_event
        self.prompt_limit = prompt_limit
        """Most tokens a prompt may have (the model's context minus room for the reply)."""
        self.count_tokens = count_tokens or estimate_tokens
        """How prompts are measured: the model's own tokenizer when it has one, else an estimate."""
        self._last_prompt_tokens = 0
        self._refused_size = 1 << 62  # size of the last prompt refused as too long
        self.review_outline = review_outline

    def run(self, state: RunState) -> RunState:
        while state.phase != "done":
            if state.step >= self.budgets.max_steps:
                if state.outline is None:
                    raise RunFailed(
                        f"the step budget ({self.budgets.max_steps}) ran out before an outline existed"
                    )
                self._stop(state, f"step budget of {self.budgets.max_steps} actions reached")
                break
            try:
                match state.phase:
                    case "search":
                        self._search(state)
                    case "plan":
                        self._plan(state)
                    case "write":
                        self._write(state)
                    case "extend":
                        self._extend(state)
            except LLMBudgetExhausted as exc:
                if state.outline is None:
                    raise RunFailed(f"{exc} before an outline existed") from exc
                self._stop(state, str(exc))
            except LLMContextOverflow:
                # Shrink later prompts below the one refused; give up when they cannot shrink further.
                refused_size, self._last_prompt_tokens = self._last_prompt_tokens, 0
                if refused_size <= MIN_PROMPT_LIMIT or refused_size >= self._refused_size:
                    raise
                self._refused_size = refused_size
                self.prompt_limit = max(MIN_PROMPT_LIMIT, refused_size * 3 // 4)
        return state

    # ---- the four actions ----------------------------------------------------------------------

    def _search(self, state: RunState) -> None:
        prompt = self._fit(
            lambda fit: prompts.render(
                "search",
                question=state.question,
                outline=self._draft_view(state, fit.draft, focus=state.target),
                instruction=prompts.instruction(state.target),
                feedback=state.feedback,
                language=self.budgets.language or "",
            ),
            self.budgets.search_budget_tokens,
        )
        exchange = self._ask(state, "search", prompt, self._read_search, reply_shape("search"))
        outcome = exchange.outcome
        if isinstance(outcome, Search):
            found = self._retrieve(state, list(outcome.keywords))
            if not found and state.target != "outline":
                outcome = Refused("these keywords matched nothing in the documents; try other, broader ones")
                exchange = replace(exchange, outcome=outcome)
        if isinstance(outcome, Refused):
            if self._may_retry(state, outcome):
                return self._checkpoint(state, exchange)
            # Out of tries: search with the node's own words rather than stall the report.
            if not self._retrieve(state, self._fallback_keywords(state)) and state.target != "outline":
                self._give_up_on_node(state, "no evidence for it was found in the documents")
                return self._checkpoint(state, exchange)
        state.phase = "plan" if state.target == "outline" else "write"
        state.retries, state.feedback = 0, ""
        self._checkpoint(state, exchange)

    def _plan(self, state: RunState) -> None:
        prompt = self._fit(
            lambda fit: prompts.render(
                self.plan_template,
                question=state.question,
                evidence=self._evidence(state, fit),
                feedback=state.feedback,
                language=self.budgets.language or "",
                **self._bounds(),
            ),
            None,
            len(state.evidence),
        )
        exchange = self._ask(
            state, "init-plan", prompt, self._read_plan, reply_shape(self.plan_shape, *self._ranges())
        )
        outcome = exchange.outcome
        if isinstance(outcome, InitPlan):
            state.outline = Outline(title=outcome.title)
            state.outline.add_tree(None, _as_spec(outcome.sections))
            self._offer_for_review(state)
            self.emit(OutlineChanged(state.outline.model_dump(), [n.position for n in state.outline.walk()]))
            self._next_node(state)
        elif isinstance(outcome, Refused) and not self._may_retry(state, outcome):
            if state.researched_again:
                self._checkpoint(state, exchange)
                raise RunFailed(f"the model gave no valid outline after repeated tries: {outcome.reason}")
            self._research_again(state)
        self._checkpoint(state, exchange)

    def _write(self, state: RunState) -> None:
        assert state.outline is not None
        node = state.outline.find(state.target)
        assert node is not None
        prompt = self._fit(
            lambda fit: prompts.render(
                "write",
                question=state.question,
                outline=self._draft_view(state, fit.draft, focus=state.target),
                instruction=prompts.instruction(state.target),
                title=node.node.title,
                plan=node.node.plan,
                length=self._length_hint(state, for_node=True),
                evidence=self._evidence(state, fit),
                feedback=state.feedback,
                language=self.budgets.language or "",
            ),
            self.budgets.draft_budget_tokens,
            len(state.evidence),
        )
        exchange = self._ask(state, "write", prompt, self._read_write, reply_shape("write"))
        outcome = exchange.outcome
        if isinstance(outcome, Write):
            node.node.content = outcome.text.strip()
            self.emit(NodeWritten(node.position, node.node.title, node.node.content))
            self._next_node(state)
        elif isinstance(outcome, Refused) and not self._may_retry(state, outcome):
            if state.researched_again:
                self._give_up_on_node(state, f"every draft was refused ({outcome.reason})")
            else:
                self._research_again(state)
        self._checkpoint(state, exchange)

    def _extend(self, state: RunState) -> None:
        assert state.outline is not None
        prompt = self._fit(
            lambda fit: prompts.render(
                "extend_plan",
                question=state.question,
                length=self._length_hint(state, for_node=False),
                outline=self._draft_view(state, fit.draft, focus=None),
                feedback=state.feedback,
                language=self.budgets.language or "",
                **self._bounds(),
            ),
            self.budgets.report_budget_tokens,
        )
        exchange = self._ask(
            state, "extend-plan", prompt, self._read_extend, reply_shape("extend-plan", *self._ranges())
        )
        outcome = exchange.outcome
        if isinstance(outcome, Nop):
            self._stop(state, "the model judged the report complete")
        else:
            # Every deepening decision spends the budget, a refused one included: a model that
            # keeps failing at this step must not be able to loop here forever. A stop refused by
            # forced deepening is no decision of the model's (its retries are bounded anyway).
            if not (isinstance(outcome, Refused) and outcome.code == MUST_DEEPEN):
                state.expansions += 1
            if isinstance(outcome, ExtendPlan):
                added = state.outline.add_children(outcome.position, _as_pairs(outcome.subsections))
                self.emit(OutlineChanged(state.outline.model_dump(), [n.position for n in added]))
                self._next_node(state)
            elif state.expansions >= self.budgets.max_expansions:
                self._stop(state, f"expansion budget of {self.budgets.max_expansions} reached")
            elif isinstance(outcome, Refused) and not self._may_retry(state, outcome):
                self._stop(state, f"the model gave no valid deepening decision ({outcome.reason})")
        self._checkpoint(state, exchange)

    # ---- what happens between actions ----------------------------------------------------------

    def _offer_for_review(self, state: RunState) -> None:
        """Plan review: the user may edit the first outline before anything is written.

        It happens inside the init-plan step, so the step's checkpoint holds the reviewed outline
        and a resumed run never asks again.
        """
        if self.review_outline is None or state.outline is None:
            return
        edited = self.review_outline(state.outline.model_copy(deep=True))
        if edited is not None:
            state.outline = edited
        self.emit(OutlineReviewed(state.outline.model_dump(), edited=edited is not None))

    def _next_node(self, state: RunState) -> None:
        """Move to the first node without text, or, when the draft is complete, to deepening."""
        assert state.outline is not None
        state.retries, state.feedback, state.researched_again = 0, "", False
        pending = state.outline.first_pending()
        if pending is not None:
            state.target, state.phase = pending.position, "search"
        else:
            self._draft_complete(state)

    def _draft_complete(self, state: RunState) -> None:
        if state.expansions < self.budgets.max_expansions:
            state.target, state.phase = "outline", "extend"
        else:
            self._stop(state, f"expansion budget of {self.budgets.max_expansions} reached")

    def _may_retry(self, state: RunState, refused: Refused) -> bool:
        """Count a refused reply; True while the same action may be asked again with the reason."""
        if state.retries >= self.budgets.max_retries:
            return False
        state.retries += 1
        state.feedback = refused.reason
        return True

    def _research_again(self, state: RunState) -> None:
        """Repeated refusals: search once more for the same target, then try again."""
        state.researched_again, state.retries, state.feedback = True, 0, ""
        state.phase = "search"

    def _give_up_on_node(self, state: RunState, why: str) -> None:
        assert state.outline is not None
        node = state.outline.find(state.target)
        assert node is not None
        node.node.note = why
        self.emit(NodeSkipped(node.position, node.node.title, why))
        self._next_node(state)

    def _stop(self, state: RunState, reason: str) -> None:
        state.phase, state.stop_reason = "done", reason

    def _retrieve(self, state: RunState, keywords: list[str]) -> bool:
        """Search every keyword, keep the best distinct passages as the current evidence."""
        budget = self.budgets.outline_evidence if state.outline is None else self.budgets.node_evidence
        hits = [self.retriever.search(keyword, self.budgets.hits_per_keyword) for keyword in keywords]
        passages = select_passages(hits, budget)
        known = set(state.registry.items)
        state.evidence = [state.registry.register(passage) for passage in passages]
        self.emit(
            EvidenceAdded(
                target=state.target,
                keywords=keywords,
                keys=list(state.evidence),
                new_keys=[key for key in state.evidence if key not in known],
                sources=list(dict.fromkeys(state.registry[key].source.title for key in state.evidence)),
            )
        )
        return bool(passages)

    def _fallback_keywords(self, state: RunState) -> list[str]:
        if state.outline is None or state.target == "outline":
            return [state.question]
        node = state.outline.find(state.target)
        assert node is not None
        return [node.node.title, f"{node.node.title} {node.node.plan}"]

    def _fit(self, render: Callable[[Fit], str], draft: int | None, passages: int = 0) -> str:
        return fit_prompt(
            render,
            Fit(draft or 0, passages, self.budgets.passage_tokens),
            limit=self.prompt_limit,
            count=self.count_tokens,
            shrink_draft=draft is not None,
        )

    def _ranges(self) -> tuple[tuple[int, int], tuple[int, int]]:
        """(sections, subsections) count bounds: the protocol's, narrowed by the settings."""
        return (
            (SECTIONS_RANGE[0], self.budgets.max_sections),
            (SUBSECTIONS_RANGE[0], self.budgets.max_subsections),
        )

    def _bounds(self) -> dict[str, int]:
        (min_sections, max_sections), (min_subsections, max_subsections) = self._ranges()
        return {
            "min_sections": min_sections,
            "max_sections": max_sections,
            "min_subsections": min_subsections,
            "max_subsections": max_subsections,
        }

    def _length_hint(self, state: RunState, *, for_node: bool) -> str:
        """Guidance toward the requested report length, for write and deepening prompts."""
        target = self.budgets.length_words
        if not target or state.outline is None:
            return ""
        if for_node:
            per_node = max(60, target // max(3, state.outline.count()))
            return f"Aim for about {per_node} words in this part (the whole report: about {target} words)."
        written = sum(len((n.node.content or "").split()) for n in state.outline.walk())
        return (
            f"The report has about {written} words; the user asked for about {target}. "
            "Once it is that long, stop unless a part is clearly missing."
        )

    def _evidence(self, state: RunState, fit: Fit) -> str:
        return render_evidence(state.registry, state.evidence[: fit.passages], fit.passage_tokens)

    def _draft_view(self, state: RunState, budget: int, focus: str | None) -> str:
        if state.outline is None:
            return empty_outline_view()
        return state.outline.condensed_view(budget, focus=focus)

    # ---- reading replies -----------------------------------------------------------------------

    def _read_search(self, raw: str, state: RunState) -> Action | Refused:
        action = parse(raw, {"search"})
        if isinstance(action, Search):
            return validate_search(action) or action
        return action

    def _read_plan(self, raw: str, state: RunState) -> Action | Refused:
        action = parse(raw, {"init-plan"})
        if isinstance(action, InitPlan):
            return (
                validate_init_plan(action, state.question, self._ranges()[0], self.budgets.language) or action
            )
        return action

    def _read_write(self, raw: str, state: RunState) -> Action | Refused:
        action = parse(raw, {"write"})
        if not isinstance(action, Write):
            return action
        refused = validate_write(action, state.question, state.evidence, self.budgets.language)
        attach_after = self.budgets.attach_citations_after
        if (
            refused
            and refused.code == NO_CITATIONS
            and attach_after is not None
            and state.retries >= attach_after
        ):
            # A small model that will not cite: place the citations from the evidence it was shown.
            evidence = {key: state.registry[key].text for key in state.evidence}
            attached = attach_citations(action.text, evidence)
            if attached is not None:
                repaired = Write(attached, citations_attached=True)
                return (
                    validate_write(repaired, state.question, state.evidence, self.budgets.language)
                    or repaired
                )
        return refused or action

    def _read_extend(self, raw: str, state: RunState) -> Action | Refused:
        assert state.outline is not None
        action = parse(raw, {"extend-plan", "nop"})
        forced = self.budgets.force_expansions
        if isinstance(action, Nop) and forced is not None and state.expansions < forced:
            # Training-data collection (spec §2.10): the teacher may not stop yet, so that every
            # finer draft exists and pruning can later choose where stopping would have been best.
            return Refused(
                f"do not stop yet: choose one node to split ({forced} deepening steps required)", MUST_DEEPEN
            )
        if isinstance(action, ExtendPlan):
            subsections = self._ranges()[1]
            return (
                validate_extend_plan(
                    action, state.outline, state.question, subsections, self.budgets.language
                )
                or action
            )
        return action

    # ---- talking to the model and recording the step -------------------------------------------

    def _ask(
        self,
        state: RunState,
        action: str,
        prompt: str,
        read: Callable[[str, RunState], Action | Refused],
        shape: ReplyShape,
    ) -> Exchange:
        step = state.step + 1
        self.emit(ActionStarted(step, action, state.target))
        started = time.time()
        seed = None if self.budgets.seed is None else self.budgets.seed + step
        # The tag makes the cache key unique per step, so a resumed run replays this very reply.
        request = ChatRequest.user(prompt, reply_shape=shape, seed=seed, tag=f"step-{step}")
        try:
            result = self.roles.get(ROLES.get(action, ""), self.llm).complete(request)
        except LLMContextOverflow:
            # Prompts are budgeted with an estimate; if the server still finds one too long, the
            # run loop shrinks every later prompt and asks this action again.
            self._last_prompt_tokens = self.count_tokens(prompt)
            raise
        self._refused_size = 1 << 62
        state.step = step
        state.prompt_tokens += result.usage.prompt_tokens
        state.completion_tokens += result.usage.completion_tokens
        return Exchange(action, state.target, prompt, result, read(result.text, state), started)

    def _checkpoint(self, state: RunState, exchange: Exchange) -> None:
        outcome = exchange.outcome
        record = StepRecord(
            step=state.step,
            action=exchange.action,
            target=exchange.target,
            prompt=exchange.prompt,
            reply=exchange.result.text,
            parsed=None if isinstance(outcome, Refused) else _describe(outcome),
            valid=not isinstance(outcome, Refused),
            reason=outcome.reason if isinstance(outcome, Refused) else None,
            prompt_tokens=exchange.result.usage.prompt_tokens,
            completion_tokens=exchange.result.usage.completion_tokens,
            started_at=exchange.started_at,
            finished_at=time.time(),
            cached=exchange.result.cached,
        )
        self.emit(ActionFinished(record, state.snapshot()))


def _as_pairs(nodes: tuple[PlannedNode, ...]) -> list[tuple[str, str]]:
    return [(node.title, node.plan) for node in nodes]


def _as_spec(nodes: tuple[PlannedNode, ...]) -> list[NodeSpec]:
    return [(node.title, node.plan, _as_spec(node.children)) for node in nodes]


def _describe(action: Action) -> dict[str, object]:
    match action:
        case Search(keywords):
            return {"name": "search", "keywords": list(keywords)}
        case InitPlan(title, sections):
            return {"name": "init-plan", "title": title, "sections": _as_spec(sections)}
        case ExtendPlan(position, subsections):
            return {"name": "extend-plan", "position": position, "subsections": _as_pairs(subsections)}
        case Nop():
            return {"name": "nop"}
        case Write(text, citations_attached):
            return {"name": "write", "text": text, "citations_attached": citations_attached}
    raise AssertionError(action)
