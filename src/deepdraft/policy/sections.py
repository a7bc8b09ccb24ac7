"""Commands on one part of a finished report: deepen it, write it again, or check its citations again.

A report is where the user's work starts. These commands let the user point at one node of a
finished run's outline (`deepdraft deepen RUN 3`, `rewrite RUN 3.2`, `recheck RUN [3.2]`) and
continue the same run with WARP's own public steps:

- **deepen**: the extend-plan action aimed at that node (`WarpPolicy.split`, with the number of
  subsections and the user's instructions when given), then a search and a write for each new
  subsection (`WarpPolicy.draft_all`);
- **rewrite**: the node's text is set aside, and the node is searched for and written again (the
  user's instructions in both prompts); if no new text can be had, the earlier text is put back;
- **recheck**: no policy action at all;
- **add-source**: a rewrite whose evidence holds the passages of a document the user just added to
  the run's knowledge base (the runner adds it and finds them, `run/sources`): they are registered
  when the command begins and shown to the writer first (`RunState.pinned_evidence`);
- **refresh**: a rewrite of several nodes in turn — those the runner found out of date after the
  knowledge base changed (`run/refresh`), each with the reason the user is told.
- **ask** (`deepdraft ask --into-report`): a new top-level section is added at the end, titled
  with the user's follow-up question, and written with that question's answer (`policy/asks.py`:
  the run's evidence and a fresh search of its KB).

Then the runner re-runs the finishing passes over what changed (`verify_scope`): verification of
the changed nodes (the others keep their results) and, after deepen and rewrite, the synthesis,
whose summary and conclusion speak for the whole report. A recheck verifies its nodes (with repair)
whatever the run's settings say, and leaves the synthesis as it is; so does an answer added as a
section, which verification checks as the settings say.

Resuming: `begin` applies the command to the state and journals it as a step of its own, so from
then on every checkpoint carries the command (`RunState.continuation`) and how far it got
(`Continuation.stage`: "split" → "draft" → "finish" → "done"; for an answer, "answer" → "finish").
A stage changes inside the step that completes it, or where doing it again is harmless (drafting a
draft with nothing left to write), so a resumed command takes up exactly where the killed one
stopped, like a research run does.

The command's policy actions are bounded by `Continuation.max_steps` (the run's step count when it
began plus its allowance); a budget that runs out ends the command with what it has, said in
`Continuation.outcome`, and the finishing passes still run.
"""

from __future__ import annotations

from dataclasses import dataclass

from deepdraft.core.citations import cited_keys
from deepdraft.core.evidence import Passage
from deepdraft.core.outline import MAX_DEPTH, WRITTEN_FROM_EVIDENCE, Located, Outline, parse_position
from deepdraft.core.state import Command, Continuation, RunState, SetAside
from deepdraft.errors import CommandRefused, LLMBudgetExhausted, SectionNotFound, UserError
from deepdraft.policy.asks import Asker, checked_question
from deepdraft.policy.calls import FinishingCalls, PromptsShrunk, StepBudgetSpent
from deepdraft.policy.warp import WarpPolicy
from deepdraft.protocol.action_prompts import count_ranges
from deepdraft.protocol.actions import SUBSECTIONS_RANGE, Action, ExtendPlan
from deepdraft.protocol.exchange import Attempt
from deepdraft.settings import ResearchSettings

FINISHING = ("verify", "synthesis")
"""The finishing passes a command that changes text runs again."""
QUESTION_TITLE_CHARS = 120
"""A follow-up question longer than this is shortened in its section's heading (the section's plan
keeps it whole)."""
SECTION_PATTERN = r"^(?:section-)?[1-9][0-9]{0,3}(?:\.[1-9][0-9]{0,3}){0,2}$"
"""A section as an interface accepts it: as the report numbers it ("3.2") or by position
("section-3.2"), at most three levels; the REST API and the MCP tools check it before anything else."""
MAX_INSTRUCTIONS = 2000
"""The most characters of instructions a command takes (they go into every prompt of the command)."""


@dataclass(frozen=True)
class Stale:
    """A written node `deepdraft refresh` writes again, and why (one line for the user)."""

    position: str
    """Where it is ("section-3.2")."""
    reason: str

    def describe(self) -> str:
        return f"{self.position.removeprefix('section-')}: {self.reason}"


@dataclass(frozen=True)
class SectionCommand:
    """What the user asked: a command, the node it is about, and its options."""

    command: Command
    section: str | None
    """The node as the user named it ("3.2", "section-3.2"); None: the whole report (recheck)."""
    into: int | None = None
    """deepen: exactly this many subsections (None: the run's bounds)."""
    instructions: str = ""
    max_steps: int | None = None
    """How many policy actions the command may take (None: the run's `max_steps`)."""
    source: str = ""
    """add-source: the file or URL the user added, as given."""
    pinned: tuple[Passage, ...] = ()
    """add-source: the added document's passages for the node (the runner finds them)."""
    stale: tuple[Stale, ...] = ()
    """refresh: the nodes to write again (the runner finds them)."""
    question: str = ""
    """ask: the follow-up question whose answer becomes a new section."""

    def describe(self) -> str:
        """The command as the user would type it, for messages."""
        if self.command == "ask":
            return "ask --into-report"
        return f"{self.command} {self.section or ''}".strip()


def check(state: RunState | None, command: SectionCommand, run_id: str) -> Located | None:
    """The node `command` is about (None: the whole report); `UserError` when it cannot apply
    (`SectionNotFound` for a section the outline lacks, `CommandRefused` for one that cannot take
    the command)."""
    if state is None or state.outline is None:
        raise CommandRefused(f"run {run_id} has no outline to work on")
    low, high = SUBSECTIONS_RANGE
    if command.into is not None and not low <= command.into <= high:
        raise UserError(f"--into must be between {low} and {high} (got {command.into})")
    if command.max_steps is not None and command.max_steps < 1:
        raise UserError(f"--max-steps must be at least 1 (got {command.max_steps})")
    if len(command.instructions) > MAX_INSTRUCTIONS:
        raise UserError(
            f"--instructions may be at most {MAX_INSTRUCTIONS} characters (got {len(command.instructions)})"
        )
    if command.command == "refresh":
        if command.section is not None:
            raise UserError("refresh looks at the whole report; it takes no section")
        for stale in command.stale:  # found on this outline by the runner: a bug if not
            assert state.outline.find(stale.position) is not None, stale
        return None
    if command.command == "add-source" and not command.source.strip():
        raise UserError("add-source needs a file to add (or, when the run uses the web, a URL)")
    if command.command == "ask":
        checked_question(command.question)
        if command.section is not None:
            raise UserError("an answer goes into a new section of its own; ask names no section")
        return None
    if command.section is None:
        if command.command == "add-source":
            raise UserError(
                f"add-source needs the section to write with it: --to 3.2 (see: deepdraft show {run_id})"
            )
        if command.command != "recheck":
            raise UserError(
                f"{command.command} needs a section, e.g. 3 or 3.2 (see: deepdraft show {run_id})"
            )
        return None
    located = locate(state.outline, command.section, run_id)
    name = located.position.removeprefix("section-")
    if command.command == "deepen":
        if located.level >= MAX_DEPTH:
            raise CommandRefused(
                f"section {name} is at level {MAX_DEPTH}, the deepest an outline goes; deepen its parent"
            )
        if located.node.children:
            raise CommandRefused(
                f"section {name} already has subsections ({name}.1–{name}.{len(located.node.children)}); "
                f"deepen one of them, e.g. {name}.1"
            )
    return located


def locate(outline: Outline, section: str, run_id: str) -> Located:
    """The node the user named as the report numbers it ("3.2") or by position ("section-3.2");
    `UserError` for a name that is not a section number, `SectionNotFound` for one the outline lacks."""
    numbers = parse_position(section)
    if numbers is None:
        raise UserError(
            f'"{section}" is not a section number; use one as the report prints it, e.g. 3 or 3.2'
        )
    located = outline.find(section) if len(numbers) <= MAX_DEPTH else None
    if located is None:
        last = len(outline.sections)
        raise SectionNotFound(
            f"run {run_id} has no section {'.'.join(map(str, numbers))} (its sections are 1–{last}; "
            f"see: deepdraft show {run_id})"
        )
    return located


def begin(state: RunState, command: SectionCommand, budgets: ResearchSettings, run_id: str) -> None:
    """Apply `command` to a finished run's state: the continuation it records and where it starts.

    The caller journals the state right after (`SectionSteps.record_start`).
    """
    located = check(state, command, run_id)
    assert state.outline is not None
    allowance = command.max_steps or budgets.max_steps
    continuation = Continuation(
        command=command.command,
        node_id=located.node.id if located else None,
        position=located.position if located else "report",
        into=command.into,
        instructions=command.instructions.strip(),
        max_steps=state.step + allowance,
        stage="finish",
    )
    state.retries, state.feedback, state.researched_again = 0, "", False
    if command.command == "ask":
        question = checked_question(command.question)
        title = (
            question if len(question) <= QUESTION_TITLE_CHARS else question[: QUESTION_TITLE_CHARS - 1] + "…"
        )
        state.outline.add_tree(None, [(title, f"Answer the user's follow-up question: {question}", [])])
        continuation.node_id = state.outline.sections[-1].id
        continuation.position = f"section-{len(state.outline.sections)}"
        continuation.question, continuation.stage = question, "answer"
        set_aside_finishing(state, ("verify",))
    elif command.command == "deepen":
        assert located is not None
        continuation.stage = "split"
        state.target, state.phase = located.position, "extend"
    elif command.command == "rewrite":
        assert located is not None
        continuation.stage = "draft"
        continuation.earlier_text, continuation.earlier_note = located.node.content, located.node.note
        located.node.content, located.node.note = None, None  # kept in the continuation meanwhile
        state.target, state.phase = located.position, "search"
        set_aside_finishing(state, FINISHING)
    elif command.command in ("add-source", "refresh"):
        if command.command == "add-source":
            assert located is not None and command.pinned
            chosen = [(located, "")]
            continuation.source = command.source
            # Registered now, so the command's start step journals them and a resume shows the
            # writer the very same passages, whatever the knowledge base holds by then.
            keys = [state.registry.register(passage) for passage in command.pinned]
            continuation.pinned = list(dict.fromkeys(keys))
        else:
            assert command.stale, "refresh begins only with sections to write again"
            chosen = [(_found(state, stale.position), stale.reason) for stale in command.stale]
        for item, reason in chosen:
            node = item.node
            continuation.rewrites.append(
                SetAside(
                    node_id=node.id,
                    position=item.position,
                    earlier_text=node.content,
                    earlier_note=node.note,
                    reason=reason,
                )
            )
            node.content, node.note = None, None  # kept in the continuation meanwhile
        continuation.stage = "draft"
        state.target, state.phase = chosen[0][0].position, "search"
        set_aside_finishing(state, FINISHING)
    else:
        set_aside_finishing(state, ("verify",))
    state.continuation = continuation


def _found(state: RunState, position: str) -> Located:
    assert state.outline is not None
    located = state.outline.find(position)
    assert located is not None, position
    return located


def set_aside_finishing(state: RunState, passes: tuple[str, ...]) -> None:
    """Make the finishing passes `passes` run again; what they wrote is rewritten by them."""
    state.finished_phases = [name for name in state.finished_phases if name not in passes]
    if "verify" in passes:
        state.verification_progress = None  # the earlier results stay, to be kept outside the scope
    if "synthesis" in passes:
        state.summary, state.conclusion, state.constraints = "", "", []
        state.synthesis_progress, state.synthesis_notes = None, []


def verify_scope(state: RunState) -> set[str] | None:
    """The ids of the nodes the command changed, which verification checks again (None: all)."""
    command = state.continuation
    assert command is not None and state.outline is not None
    if command.command == "refresh":
        return {item.node_id for item in command.rewrites}
    if command.node_id is None:
        return None
    located = state.outline.find_id(command.node_id)
    if located is None:
        return set()
    under = {
        item.node.id for item in state.outline.walk() if item.position.startswith(located.position + ".")
    }
    if command.command == "deepen":
        return under
    if command.command in ("rewrite", "add-source", "ask"):
        return {command.node_id}
    return {command.node_id, *under}


def concluded(state: RunState) -> None:
    """The command is over (the runner writes the report next)."""
    assert state.continuation is not None
    state.continuation.stage = "done"
    state.phase = "done"


class SectionSteps:
    """A command's policy actions, taken with WARP's steps from wherever its stage stands."""

    def __init__(self, steps: WarpPolicy) -> None:
        self.steps = steps
        self.records = FinishingCalls(steps.llm, steps.emit, steps.budgets.seed)

    def record_start(self, state: RunState) -> None:
        """Journal the command as a step of its own (no LLM call): from here on it is resumable."""
        command = state.continuation
        assert command is not None
        parsed: dict[str, object] = {
            "command": command.command,
            "position": command.position,
            "into": command.into,
            "instructions": command.instructions,
            **({"question": command.question} if command.command == "ask" else {}),
        }
        if command.command == "add-source":
            parsed["source"] = command.source
            parsed["pinned"] = list(command.pinned)
        if command.command == "refresh":
            parsed["sections"] = [
                {"position": item.position, "reason": item.reason} for item in command.rewrites
            ]
        self.records.record(state, command.command, command.position, parsed=parsed)

    def run(self, state: RunState) -> RunState:
        """Take the command's actions up to its finishing passes (`stage` "finish")."""
        command = state.continuation
        assert command is not None
        while command.stage in ("split", "draft", "answer"):
            try:
                if command.stage == "split":
                    self._split(state, command)
                elif command.stage == "answer":
                    self._answer(state, command)
                else:
                    self._draft(state, command)
            except PromptsShrunk:
                continue  # the same action is asked again, smaller
            except StepBudgetSpent:
                self._stopped(state, command, "the command's step budget ran out")
            except LLMBudgetExhausted as exc:
                self._stopped(state, command, str(exc))
        return state

    def _split(self, state: RunState, command: Continuation) -> None:
        bounds = count_ranges(self.steps.budgets)[1]
        subsections = (command.into, command.into) if command.into is not None else bounds

        def then(attempt: Attempt[Action]) -> None:
            if isinstance(attempt.outcome, ExtendPlan):
                command.stage = "draft"
                set_aside_finishing(state, FINISHING)
            else:
                command.stage = "finish"
                reason = attempt.refusal.reason if attempt.refusal else "no valid reply"
                command.outcome = (
                    f"the model gave no valid split of {command.position} ({reason}); nothing changed"
                )

        self.steps.split(state, subsections, then)

    def _draft(self, state: RunState, command: Continuation) -> None:
        """Search for and write every node the command made empty, in document order.

        Only those: a run stopped by a budget may have older nodes without text, which the user did
        not ask about (the policy's own `draft_all` would take them first).
        """
        assert state.outline is not None
        scope = verify_scope(state)
        while True:
            pending = next(
                (
                    item
                    for item in state.outline.walk()
                    if not item.node.settled and (scope is None or item.node.id in scope)
                ),
                None,
            )
            if pending is None:
                break
            if state.target != pending.position:  # the same decision again on a resume: idempotent
                state.target, state.phase = pending.position, "search"
                state.retries, state.feedback, state.researched_again = 0, "", False
            self.steps.draft(state, pending.position)
        self._keep_earlier_unless_rewritten(state, command, "the model could not write it again")
        if command.command == "add-source":
            self._say_if_uncited(state, command)
        command.stage = "finish"

    def _answer(self, state: RunState, command: Continuation) -> None:
        """Answer the follow-up question and make the answer the new section's text."""
        assert state.outline is not None and command.node_id is not None
        steps = self.steps
        asker = Asker(
            steps.llm, steps.retriever, steps.budgets, steps.emit, steps.window.limit, steps.window.count
        )
        ask = state.ask
        if ask is None or ask.into != command.position or ask.question != command.question:
            ask = asker.begin(state, command.question, into=command.position)
        asker.run(state)
        located = state.outline.find_id(command.node_id)
        assert located is not None
        if ask.answer is not None:
            located.node.content, located.node.note = ask.answer, None
        else:
            located.node.note = f"not written: {ask.note}"
            command.outcome = f"no answer could be written ({ask.note})"
        command.stage = "finish"

    def _stopped(self, state: RunState, command: Continuation, why: str) -> None:
        """A budget ended the command: what is still unwritten says so, and the passes still run."""
        assert state.outline is not None
        command.outcome = why
        self._keep_earlier_unless_rewritten(state, command, why)
        scope = verify_scope(state)
        for located in state.outline.walk():
            if not located.node.settled and (scope is None or located.node.id in scope):
                located.node.note = f"not written: {why}"
        command.stage = "finish"

    @staticmethod
    def _keep_earlier_unless_rewritten(state: RunState, command: Continuation, why: str) -> None:
        """A node written again that got no text of the model's own gets its earlier text back."""
        assert state.outline is not None
        kept: list[tuple[str, str]] = []
        for item in command.set_aside():
            located = state.outline.find_id(item.node_id)
            assert located is not None
            node = located.node
            if node.content is not None and not (node.note or "").startswith(WRITTEN_FROM_EVIDENCE):
                continue
            detail = f" ({node.note})" if node.note else ""
            node.content, node.note = item.earlier_text, item.earlier_note
            kept.append((located.position.removeprefix("section-"), detail))
        if not kept or (command.outcome and command.command == "rewrite"):
            return
        if command.command == "rewrite":
            command.outcome = f"{why}{kept[0][1]}; its earlier text stays"
        else:  # several nodes: say which kept their text, also when a budget ended the command
            names = ", ".join(f"{name}{detail}" for name, detail in kept)
            command.outcome = f"{command.outcome or why}; the earlier text of {names} stays"

    @staticmethod
    def _say_if_uncited(state: RunState, command: Continuation) -> None:
        """add-source: the user wants the new document used; say so when the new text cites none
        of its passages (the text is kept: the model may have judged them beside the point)."""
        assert state.outline is not None and command.node_id is not None
        located = state.outline.find_id(command.node_id)
        assert located is not None
        cited = {key for group in cited_keys(located.node.content or "") for key in group}
        if command.outcome or cited & set(command.pinned):
            return
        titles = sorted({state.registry[key].source.title for key in command.pinned if key in state.registry})
        command.outcome = (
            f"the new text of {located.position.removeprefix('section-')} cites nothing from "
            f"{', '.join(titles) or command.source}"
        )


__all__ = [
    "MAX_INSTRUCTIONS",
    "SECTION_PATTERN",
    "SectionCommand",
    "SectionSteps",
    "Stale",
    "begin",
    "check",
    "concluded",
    "locate",
    "set_aside_finishing",
    "verify_scope",
]
