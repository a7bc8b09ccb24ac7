"""WARP, the Writing-As-Reasoning Policy: one agent that drafts a report and deepens it as it goes.

The loop, as in AgentCPM-Report (arXiv 2602.06540), written out in `WarpPolicy.research`:

1. search for background on the whole question, then **plan** a sparse outline: a title and
   3–12 top-level sections, each with a one-line plan;
2. **draft**: for every node without text, in document order, search with keywords chosen for
   that node (the model sees the question, the node's plan and the draft so far), then write the
   node from that fresh evidence, citing only it (for a small model, `plan_searches`: the node's
   title and plan are the keywords, no model call; `write_by_passage`: one short request per
   passage, the replies held to their passages and put together as the one write);
3. **deepen**: once every node has text, read the whole draft and either split one childless
   level-1 or level-2 node into 2–7 subsections — which sends the loop back to step 2 for the new,
   empty nodes — or stop;
4. stop when the model says so (`nop`), after `max_expansions` deepening decisions, or after
   `max_steps` actions. Whatever stops the run, the report is complete: nodes never written keep
   a visible note.

Each action is one exchange on the engine (`protocol/exchange.py`): a fresh prompt built from the
state (`protocol/action_prompts.py`), the reply read and validated (`protocol/action_replies.py`),
re-asked with the reason at most `max_retries` times. A node whose text keeps being refused gets
one fresh search and another round of tries, then is left with a note, and the loop moves on.

Resuming: every try is journaled with a checkpoint of the state, and the loop starts from
whatever the state says. The outline and its first node without text say where drafting stands;
one explicit field, `state.phase`, says what the outline cannot: whether the current node (or,
before there is an outline, the question) was already searched ("search" → "write"/"plan"),
whether the draft is complete and deepening is next ("extend"), or the run is over ("done"). The
turn of the current exchange (refusals so far and the last reason) is in the state too, so a run
stopped between two tries re-asks exactly what it would have asked.

The policy does no I/O of its own: it talks to an `LLM` and a `Retriever` and reports every step
as an event; the runner journals the checkpoint each `ActionFinished` event carries.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Mapping
from functools import partial
from typing import Any, Protocol

from deepdraft.core.citations import cited_keys
from deepdraft.core.evidence import Passage, fingerprint, select_passages
from deepdraft.core.outline import WRITTEN_FROM_EVIDENCE, Outline
from deepdraft.core.state import RunState
from deepdraft.core.tokens import count_tokens as estimate_tokens
from deepdraft.errors import LLMBudgetExhausted, RunFailed
from deepdraft.events import (
    EventSink,
    EvidenceAdded,
    NodeSkipped,
    NodeWritten,
    OutlineChanged,
    OutlineReviewed,
    ignore,
)
from deepdraft.policy.calls import ActionCalls, PromptsShrunk, StepBudgetSpent
from deepdraft.ports import LLM, ChatRequest, ChatResult, Retriever, Usage
from deepdraft.protocol import action_prompts as ask
from deepdraft.protocol import action_replies as reply
from deepdraft.protocol.actions import (
    SUBSECTIONS_RANGE,
    Action,
    ExtendPlan,
    InitPlan,
    Nop,
    Refused,
    Search,
    Write,
)
from deepdraft.protocol.attach import extract_from_evidence
from deepdraft.protocol.exchange import Attempt
from deepdraft.protocol.fitting import ContextWindow, Fit
from deepdraft.protocol.grammar import ShapeName, reply_shape
from deepdraft.protocol.passage_write import (
    NOTHING_KEPT,
    PassageReport,
    nothing_kept,
    passage_paragraph,
    passage_prompt,
    write_reply,
)
from deepdraft.protocol.passage_write import REPLY_TOKENS as PASSAGE_REPLY_TOKENS
from deepdraft.protocol.prompts import TemplateName
from deepdraft.protocol.topic import names_subject, subject_excerpt, subject_terms, subject_title
from deepdraft.settings import ResearchSettings

MUST_DEEPEN = "must-deepen"  # a stop refused before `force_expansions` deepening steps were taken
PASSAGE_BREAK = "\n\n-----\n\n"
"""Between the prompts of a part written passage by passage, as the journal shows them."""
PASSAGE_SEED_STRIDE = 1000
"""A passage's seed is its write's plus this many times its place: no two passages of a run's
writes share one (a run takes far fewer than this many steps)."""

ReviewOutline = Callable[[Outline], Outline | None]
"""Plan review: shown the first outline, returns the user's edited outline, or None to keep it."""
LengthHint = Callable[[RunState, ResearchSettings], str]
"""Guidance toward the requested length in a write prompt (see `action_prompts.node_length`)."""


class Policy(Protocol):
    """What the runner needs of a policy: its name, and a run from any state to a finished one."""

    name: str

    def run(self, state: RunState) -> RunState: ...


class WarpPolicy:
    """The WARP loop (`research`) and its public steps, which the baselines compose differently."""

    name = "warp"

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
        force_expansions: int | None = None,
    ) -> None:
        self.llm, self.retriever, self.budgets, self.emit = llm, retriever, budgets, on_event
        self.roles = dict(roles or {})
        """Optional models per role: "planner" (init-plan, extend-plan) and "writer" (write)."""
        self.window = ContextWindow(prompt_limit, count_tokens or estimate_tokens)
        self.review_outline = review_outline
        self.force_expansions = force_expansions
        """Refuse `nop` until this many deepening steps (see `ResearchSettings.force_expansions`)."""
        self.calls = ActionCalls(llm, self.roles, budgets, self.window, on_event)

    @property
    def prompt_limit(self) -> int | None:
        """Most tokens a prompt may have (the model's context minus room for the reply)."""
        return self.window.limit

    def run(self, state: RunState) -> RunState:
        return self.guarded(state, self.research)

    def research(self, state: RunState) -> None:
        """The algorithm. It starts wherever the state says the run stopped (see the module doc)."""
        self.open(state)  # background search → the first, sparse outline
        while state.phase != "done":
            self.draft_all(state)  # search → write each node without text, in document order
            self.deepen(state)  # split one node (more empty nodes to draft) or stop

    def guarded(self, state: RunState, research: Callable[[RunState], None]) -> RunState:
        """Run `research` until it ends or a budget does; a spent budget still yields a report."""
        while state.phase != "done":
            try:
                research(state)
            except PromptsShrunk:
                continue  # the same action is asked again, smaller
            except StepBudgetSpent:
                limit = self.budgets.max_steps
                if state.outline is None:
                    raise RunFailed(f"the step budget ({limit}) ran out before an outline existed") from None
                self.stop(state, f"step budget of {limit} actions reached")
            except LLMBudgetExhausted as exc:
                if state.outline is None:
                    raise RunFailed(f"{exc} before an outline existed") from exc
                self.stop(state, str(exc))
        return state

    # ---- the steps -------------------------------------------------------------------------------

    def open(self, state: RunState, *, full: bool = False) -> None:
        """Search for the whole question, then plan; a plan refused every time gets one new search.

        `full`: plan the whole outline at once, nested (the plan-then-write baseline).
        """
        while state.outline is None:
            if state.phase == "search":
                self.search(state)
            self.plan(state, full=full)

    def draft_all(self, state: RunState, length: LengthHint = ask.node_length) -> None:
        assert state.outline is not None
        while (node := state.outline.first_pending()) is not None:
            self.draft(state, node.position, length)

    def draft(self, state: RunState, position: str, length: LengthHint = ask.node_length) -> None:
        """Search for one node without text, then write it; until it is written or given up."""
        assert state.outline is not None
        located = state.outline.find(position)
        assert located is not None and state.target == position
        while not located.node.settled:
            if state.phase == "search":
                self.search(state)  # a node nothing can be found for is given up here
            else:
                self.write(state, length)  # refused every time: one fresh search, then a note

    def search(self, state: RunState) -> None:
        budget = self.budgets.search_budget_tokens

        def settle(attempt: Attempt[Action]) -> None:
            # Out of tries: search with the node's own words rather than stall the report.
            fallback = ask.plan_keywords(state)
            if attempt.refusal and not self._retrieve(state, fallback) and state.target != "outline":
                return self._give_up(state, "no evidence for it was found in the documents")
            state.phase = "plan" if state.target == "outline" else "write"
            state.retries, state.feedback = 0, ""

        # With `plan_searches` the keywords are decided here, not asked: a journaled step all the
        # same, so the run reads, resumes and counts its steps as one whose model chose them.
        planned = ask.plan_keywords(state) if self.budgets.plan_searches else None

        def prompt() -> str:
            if planned is not None:
                return ask.PLANNED_SEARCH
            return self._fit(lambda fit: ask.search_prompt(state, self.budgets, fit), budget)

        self.calls.act(
            state,
            "search",
            prompt,
            reply_shape("search"),
            lambda raw: self._searched(state, reply.read_search(raw)),
            settle,
            compose=None
            if planned is None
            else lambda request, llm: ChatResult(ask.planned_search_reply(planned), Usage()),
        )

    def plan(self, state: RunState, *, full: bool = False) -> None:
        template: TemplateName = "full_plan" if full else "init_plan"
        shape: ShapeName = "full-plan" if full else "init-plan"
        sections, subsections = ask.count_ranges(self.budgets)

        def settle(attempt: Attempt[Action]) -> None:
            if isinstance(attempt.outcome, InitPlan):
                state.outline = Outline(title=attempt.outcome.title)
                state.outline.add_tree(None, reply.as_spec(attempt.outcome.sections))
                self._offer_for_review(state)
                self._outline_changed(state, list(state.outline.walk()))
                self._advance(state)
            elif not state.researched_again:
                self._research_again(state)

        attempt = self.calls.act(
            state,
            "init-plan",
            lambda: self._fit(lambda fit: ask.plan_prompt(state, self.budgets, fit, template), None, state),
            reply_shape(shape, sections, subsections),
            lambda raw: reply.read_plan(raw, state, self.budgets, full=full, refused=state.retries),
            settle,
        )
        if attempt.refusal and state.outline is None and state.phase == "plan":
            raise RunFailed(f"the model gave no valid outline after repeated tries: {attempt.refusal.reason}")

    def write(self, state: RunState, length_hint: LengthHint = ask.node_length) -> None:
        assert state.outline is not None
        located = state.outline.find(state.target)
        assert located is not None
        budget = self.budgets.draft_budget_tokens
        length = length_hint(state, self.budgets)

        def settle(attempt: Attempt[Action]) -> None:
            if isinstance(attempt.outcome, Write):
                located.node.content = attempt.outcome.text.strip()
                self.emit(NodeWritten(located.position, located.node.title, located.node.content))
                self._advance(state)
            elif attempt.refusal and state.researched_again:
                self._write_from_evidence(state, f"every draft was refused ({attempt.refusal.reason})")
            else:
                self._research_again(state)

        by_passage = self.budgets.write_by_passage

        def prompt() -> str:
            if by_passage:  # one short prompt per passage (`protocol/passage_write.py`), all journaled
                return PASSAGE_BREAK.join(prompt for _, _, prompt in self._passage_prompts(state))
            return self._fit(lambda fit: ask.write_prompt(state, self.budgets, fit, length), budget, state)

        self.calls.act(
            state,
            "write",
            prompt,
            reply_shape("write", notes=self.budgets.write_notes_chars),
            # A part put together from nothing says why, not that the reply had no text block.
            lambda raw: (
                Refused(NOTHING_KEPT)
                if by_passage and nothing_kept(raw)
                else reply.read_write(raw, state, self.budgets, state.retries)
            ),
            settle,
            compose=partial(self._write_by_passage, state) if by_passage else None,
        )

    def _passage_prompts(self, state: RunState) -> list[tuple[str, str, str]]:
        """The passages of a part written passage by passage, each as (key, what is shown of it,
        its prompt). What is shown is what the passage's sentences are held to: the excerpt the
        fact-checker is shown too (`topic.subject_excerpt`)."""
        language, instructions = self.budgets.language, state.user_instructions()
        shown = {
            key: subject_excerpt(state.registry[key].text, state.question, self.budgets.passage_tokens)
            for key in passages_to_write(state)
        }
        return [
            (key, text, passage_prompt(state.question, key, text, language, instructions))
            for key, text in shown.items()
        ]

    def _write_by_passage(self, state: RunState, request: ChatRequest, llm: LLM) -> ChatResult:
        """A write put together from one reply per passage, each held to its passage, as the
        reply `read_write` reads (`passage_write.write_reply`)."""
        assert state.outline is not None
        located = state.outline.find(state.target)
        assert located is not None
        reports: list[PassageReport] = []
        usage, cached = Usage(), True
        for index, (key, shown, prompt) in enumerate(self._passage_prompts(state), start=1):
            result = llm.complete(
                ChatRequest.user(
                    prompt,
                    max_tokens=PASSAGE_REPLY_TOKENS,
                    # Each passage gets its own sample and its own cache entry, so a resumed run
                    # replays exactly these replies.
                    seed=None if request.seed is None else request.seed + PASSAGE_SEED_STRIDE * index,
                    tag=f"{request.tag}-{key}",
                )
            )
            usage, cached = usage + result.usage, cached and result.cached
            text = passage_paragraph(result.text, key, shown, state.question, located.node.title)
            reports.append(PassageReport(key, result.text, text))
        return ChatResult(write_reply(reports), usage, cached=cached)

    def deepen(self, state: RunState) -> None:
        """Split one childless node into subsections (more empty nodes to draft), or stop."""
        assert state.outline is not None
        outline, limit = state.outline, self.budgets.max_expansions
        if state.expansions >= limit:
            return self.stop(state, f"expansion budget of {limit} reached")
        # Each new subsection takes a search and a write: a split the step budget cannot research
        # would leave its last parts "Not written" (measured: a quick run split a part into three
        # with four actions left). The split is held to what the actions left can write.
        affordable = (self.budgets.max_steps - state.step - 1) // 2
        if affordable < SUBSECTIONS_RANGE[0]:
            return self.stop(state, f"too few of the {self.budgets.max_steps} actions left to deepen again")
        budgets = self.budgets.model_copy(
            update={"max_subsections": min(self.budgets.max_subsections, affordable)}
        )
        state.target, state.phase = "outline", "extend"
        budget = self.budgets.report_budget_tokens

        def settle(attempt: Attempt[Action]) -> None:
            outcome = attempt.outcome
            if isinstance(outcome, Nop):
                self.stop(state, "the model judged the report complete")
            elif isinstance(outcome, ExtendPlan):
                self._outline_changed(
                    state, outline.add_children(outcome.position, reply.as_pairs(outcome.subsections))
                )
                self._advance(state)
            elif attempt.refusal is not None:
                self.stop(state, f"the model gave no valid deepening decision ({attempt.refusal.reason})")

        # A deepening the settings require is the only reply a grammar lets through: asked to
        # split, a quick run's model answered "stop" to both tries, in one of three smoke runs,
        # and its report lost the second deepening's parts.
        splittable = tuple(outline.splittable())
        required = self.force_expansions is not None and state.expansions < self.force_expansions
        shape = reply_shape(
            "extend-plan", *ask.count_ranges(budgets), positions=splittable, may_stop=not required
        )
        self.calls.act(
            state,
            "extend-plan",
            lambda: self._fit(lambda fit: ask.extend_prompt(state, budgets, fit), budget),
            shape,
            lambda raw: self._deepening(state, reply.read_extend(raw, state, budgets, state.retries)),
            settle,
        )

    def split(
        self, state: RunState, subsections: tuple[int, int], then: Callable[[Attempt[Action]], None]
    ) -> None:
        """Split the node at `state.target`, which the user chose, into `subsections` (low, high)
        parts: the extend-plan action aimed at one node (`deepdraft deepen`, see `sections`).

        A split the user asked for is not the model's deepening decision, so it spends no
        expansion; `then` is told the final attempt, before its checkpoint is journaled.
        """
        assert state.outline is not None
        outline, budget = state.outline, self.budgets.report_budget_tokens

        def settle(attempt: Attempt[Action]) -> None:
            if isinstance(attempt.outcome, ExtendPlan):
                added = outline.add_children(
                    attempt.outcome.position, reply.as_pairs(attempt.outcome.subsections)
                )
                self._outline_changed(state, added)
                self._advance(state)
            else:
                state.retries, state.feedback = 0, ""
            then(attempt)

        self.calls.act(
            state,
            "extend-plan",
            lambda: self._fit(lambda fit: ask.split_prompt(state, self.budgets, fit, subsections), budget),
            reply_shape(
                "extend-plan", ask.count_ranges(self.budgets)[0], subsections, positions=(state.target,)
            ),
            lambda raw: reply.read_split(raw, state, self.budgets, subsections, state.retries),
            settle,
        )

    def stop(self, state: RunState, reason: str) -> None:
        state.phase, state.stop_reason = "done", reason

    # ---- what happens between the steps ----------------------------------------------------------

    def _searched(self, state: RunState, outcome: Action | Refused) -> Action | Refused:
        """Valid keywords are searched at once; keywords finding nothing for a node are refused."""
        found = isinstance(outcome, Search) and self._retrieve(state, list(outcome.keywords))
        if isinstance(outcome, Search) and not found and state.target != "outline":
            return Refused(ask.NOTHING_FOUND)
        return outcome

    def _deepening(self, state: RunState, outcome: Action | Refused) -> Action | Refused:
        """An accepted split spends the expansion budget; a refused reply does not, so it gets the
        re-asks every action gets (`max_retries`). A model that keeps failing cannot loop here: when
        the re-asks are spent, the deepening stops (`deepen`'s settle). Counting refused replies
        ended the quick preset's second deepening at its first refused reply, with no re-ask, in
        10 of 15 measured runs (two or three parts never written)."""
        forced = self.force_expansions
        outline = state.outline
        if (
            isinstance(outcome, Nop)
            and forced is not None
            and state.expansions < forced
            and outline is not None
            and outline.splittable()  # else the grammar allows nothing but the stop
        ):
            # Not yet: a teacher's trajectory must pass through every finer draft (pruning later
            # chooses where stopping would have been best), and a quick report gets its length.
            return Refused(ask.must_deepen(forced), MUST_DEEPEN)
        if isinstance(outcome, ExtendPlan):
            state.expansions += 1
        return outcome

    def _offer_for_review(self, state: RunState) -> None:
        """Plan review (a UI hook): inside the init-plan step, so its checkpoint holds the reviewed
        outline and a resumed run never asks again."""
        if self.review_outline is None or state.outline is None:
            return
        edited = self.review_outline(state.outline.model_copy(deep=True))
        if edited is not None:
            state.outline = edited
        self.emit(OutlineReviewed(state.outline.model_dump(), edited=edited is not None))

    def _outline_changed(self, state: RunState, added: list[Any]) -> None:
        assert state.outline is not None
        self.emit(OutlineChanged(state.outline.model_dump(), [located.position for located in added]))

    def _advance(self, state: RunState) -> None:
        """On to the first node without text, or, when the draft is complete, to deepening."""
        assert state.outline is not None
        state.retries, state.feedback, state.researched_again = 0, "", False
        pending = state.outline.first_pending()
        if pending is not None:
            state.target, state.phase = pending.position, "search"
        else:
            state.target, state.phase = "outline", "extend"

    def _research_again(self, state: RunState) -> None:
        """Repeated refusals: search once more for the same target, then try again."""
        state.researched_again, state.retries, state.feedback = True, 0, ""
        state.phase = "search"

    def _give_up(self, state: RunState, why: str) -> None:
        assert state.outline is not None
        located = state.outline.find(state.target)
        assert located is not None
        located.node.note = why
        self.emit(NodeSkipped(located.position, located.node.title, why))
        self._advance(state)

    def _write_from_evidence(self, state: RunState, why: str) -> None:
        """The node's text quoted from its evidence (`attach.extract_from_evidence`), with a note
        saying so, rather than a part left empty; given up when even that finds nothing."""
        assert state.outline is not None
        located = state.outline.find(state.target)
        assert located is not None
        node = located.node
        evidence = {key: state.registry[key].text for key in state.evidence}
        text = extract_from_evidence(f"{node.title} {node.plan} {state.question}", evidence)
        if text is None:
            return self._give_up(state, why)
        node.content, node.note = text, f"{WRITTEN_FROM_EVIDENCE}: {why}"
        self.emit(NodeWritten(located.position, node.title, text))
        self._advance(state)

    def _retrieve(self, state: RunState, keywords: list[str]) -> bool:
        """Search every keyword, keep the best distinct passages as the current evidence.

        A small model's keywords are often vague ("economic impact"), so each is searched together
        with the request's subject words it lacks, and the node's own title is searched too; the
        passages that name the subject come first, those of documents the report cites nowhere yet
        before the others. The evidence is spread over documents, and a passage already cited in
        two parts (written passage by passage: in another part) is offered again only when nothing
        else is found, as is one shown to the part's refused drafts when it is searched again.
        """
        budget = self.budgets.outline_evidence if state.outline is None else self.budgets.node_evidence
        # Passages the user added for this node (`deepdraft add-source`) come first, whatever the
        # keywords find; the search fills the rest of the evidence budget.
        pinned = state.pinned_evidence()
        passages = find_evidence(self.retriever, state, keywords, self.budgets, budget - len(pinned))
        known = set(state.registry.items)
        found = [state.registry.register(passage) for passage in passages]
        state.evidence = list(dict.fromkeys([*pinned, *found]))
        keys = list(state.evidence)
        self.emit(
            EvidenceAdded(
                target=state.target,
                keywords=keywords,
                keys=keys,
                new_keys=[key for key in keys if key not in known],
                sources=list(dict.fromkeys(state.registry[key].source.title for key in keys)),
            )
        )
        return bool(keys)

    def _fit(self, render: Callable[[Fit], str], draft: int | None, shown: RunState | None = None) -> str:
        """`render` fitted into the window; `shown`: the state whose evidence the prompt shows."""
        passages = len(shown.evidence) if shown is not None else 0
        return self.window.fit(render, draft, passages, self.budgets.passage_tokens)


# ---- what a search asks the retriever ------------------------------------------------------------


def find_evidence(
    retriever: Retriever, state: RunState, keywords: list[str], budgets: ResearchSettings, budget: int
) -> list[Passage]:
    """The passages a search for `state.target` with `keywords` shows the model: up to `budget`,
    chosen from every query's hits (see `WarpPolicy._retrieve`). Also how `deepdraft refresh`
    tells what a written node would be shown now."""
    if budget <= 0:
        return []
    subject = subject_terms(state.question)
    cited = cited_documents(state)
    hits = [
        on_subject_first(retriever.search(query, budgets.hits_per_keyword), subject, cited)
        for query in search_queries(state, keywords)
    ]
    # A part written passage by passage leaves out what another part cites (`passages_to_write`),
    # so those passages would only take its places: shown them, the subsections of three smoke runs
    # had two to four passages of their six left to write from (and kept a sentence from 0-2).
    # Otherwise a passage is held back once two parts cite it.
    held = cited_elsewhere(state) if budgets.write_by_passage else cited_in_parts(state, 2)
    if state.researched_again and state.outline is not None:
        # Searched again because every draft of the part was refused: the same queries find the
        # same passages (in one smoke run a part was drafted three times from the same three
        # passages, the search between them finding those again).
        held |= set(state.evidence) - set(state.pinned_evidence())
    overused = {fingerprint(state.registry[key].text) for key in held if key in state.registry}
    return select_passages(hits, budget, per_document=max(1, budget // 4), avoid=overused)


def passages_to_write(state: RunState) -> list[str]:
    """The evidence a part written passage by passage is written from, in the order shown.

    Every passage is reported in a paragraph of its own, so one that names none of the request's
    subject words gives a paragraph about something else, and one another part cites already gives
    a paragraph that part has; both are left out while `FEWEST_PASSAGES` others remain.
    """
    subject = subject_terms(state.question)
    elsewhere = cited_elsewhere(state)
    keys = list(state.evidence)
    wanted = [
        key
        for key in keys
        if key not in elsewhere and (not subject or names_subject(state.registry[key].text, subject))
    ]
    if len(wanted) >= FEWEST_PASSAGES:
        return wanted
    return [*wanted, *(key for key in keys if key not in wanted)][:FEWEST_PASSAGES]


FEWEST_PASSAGES = 2
"""A part written passage by passage is written from at least this many passages when it has them."""


ANCHOR_TERMS = 3
"""Subject words of the request added to a keyword that lacks them."""


def search_queries(state: RunState, keywords: list[str]) -> list[str]:
    """The retriever queries for `keywords`: the target's own words (the node's title, or before an
    outline the request itself), then each keyword with the request's subject words it lacks."""
    subject = subject_terms(state.question)

    def anchored(text: str) -> str:
        missing = [term for term in subject if not names_subject(text, [term])][:ANCHOR_TERMS]
        return " ".join([text, *missing])

    # The target's own words first: when the evidence budget leaves one passage per query, the
    # query a model cannot get wrong must be among those that contribute.
    own: list[str] = []
    if state.outline is None or state.target == "outline":
        # The request's subject, not its wording: BM25 scores "talk", "did" and "presidents" too,
        # and "How did presidents talk about railroads and their regulation?" found two passages
        # naming a railroad in its first twenty, "Railroads and their regulation" twenty.
        own = [subject_title(state.question)]
    elif (located := state.outline.find(state.target)) is not None:
        own = [anchored(located.node.title)]
    return list(dict.fromkeys([*own, *(anchored(keyword) for keyword in keywords)]))


SUBJECT_WORDS = 2
"""Passages naming this many of the request's subject words rank first (`on_subject_first`)."""


def on_subject_first(hits: list[Passage], subject: list[str], cited: Collection[str] = ()) -> list[Passage]:
    """`hits` with the passages that name two or more of the subject words first, then those that
    name one, then the others; within each group, passages from documents the report does not cite
    yet (`cited`: document ids) come before the others, each in its ranked order.

    A passage that names one subject word often names it in passing ("foreign" in a passage on
    harbour forts, for a request about foreign oil); one that names two is about the subject far
    more often. Over the 17 parts of three recorded quick runs, ranking by it raised the share of
    each part's six passages that name a topic word of the request from 128/150 to 143/150.

    The same few documents rank first for every part of one request (their words are the
    request's), so without the second rule a report cited five documents over seven parts; a
    passage that names the subject from a document not cited yet widens what the report draws on
    (more sources, more of the period) without leaving the subject.
    """

    def rank(passage: Passage) -> tuple[int, bool]:
        named = sum(names_subject(passage.text, [term]) for term in subject) if subject else SUBJECT_WORDS
        return (-min(named, SUBJECT_WORDS), passage.source.doc_id in cited)

    return sorted(hits, key=rank)  # stable: the retriever's order within each group


def cited_documents(state: RunState) -> set[str]:
    """The documents the report's other written parts cite (the target's own text aside)."""
    return {state.registry[key].source.doc_id for key in cited_elsewhere(state) if key in state.registry}


def cited_elsewhere(state: RunState) -> set[str]:
    """The evidence keys the report's other written parts cite (the target's own text aside)."""
    return {key for position, cited in _citations_by_node(state) if position != state.target for key in cited}


def cited_in_parts(state: RunState, parts: int) -> set[str]:
    """Evidence keys cited in at least `parts` written nodes of the outline."""
    counts: dict[str, int] = {}
    for _, cited in _citations_by_node(state):
        for key in cited:
            counts[key] = counts.get(key, 0) + 1
    return {key for key, count in counts.items() if count >= parts and key in state.registry}


def _citations_by_node(state: RunState) -> Iterator[tuple[str, set[str]]]:
    """Each node of the outline (by position) with the keys its text cites."""
    if state.outline is None:
        return
    for located in state.outline.walk():
        yield located.position, {key for group in cited_keys(located.node.content or "") for key in group}
