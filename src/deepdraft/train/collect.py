"""`train collect`: a teacher model runs WARP over a query set; the run journals are the trajectories.

Each query becomes one ordinary deepdraft run (same policy, prompts, validation and journal as
`deepdraft research`), so what the student later learns from is byte for byte what a policy sees.
Three settings differ from research, all recorded in the run's settings:

- forced deepening (spec §2.10): `force_expansions = N` refuses `nop` until N deepening steps were
  taken, and `max_expansions = N + 1` leaves one free decision after them. So the run passes
  through drafts D_0 … D_N, and *each* of them was followed by a deepening decision whose exact
  prompt is in the journal — pruning can relabel any of them as "stop here";
- the finishing passes (verification, synthesis) are off: they are not policy actions;
- every action is asked of the teacher: a preset's searches from the plan and writes put together
  passage by passage (the quick preset's) are off.

The drafts are not stored a second time: `decision_points` reads them back from the checkpoints
(the state after the write that completed each draft).

Collection runs queries concurrently through a `RunPool` (the teacher is usually a server that
batches requests; the pool's one budget makes a token cap or a request rate hold for the whole
collection) and is resumable: `collection.jsonl` in the output folder maps each query to its
run id, written *before* the run starts, so a killed collection loses nothing. On the next call a
finished run is skipped, an interrupted or failed one is resumed from its last checkpoint through
`runner.resume` (the LLM cache replays any reply already paid for), and a new query is started.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deepdraft.core.state import RunState
from deepdraft.errors import DeepdraftError, UserError
from deepdraft.events import StepRecord, ignore
from deepdraft.export.report import assemble_markdown, render_markdown
from deepdraft.ports import LLM, Retriever
from deepdraft.run import runner, wiring
from deepdraft.run.drivers import RunDriver, open_driver
from deepdraft.run.pool import RunOrder, RunPool
from deepdraft.run.runs import Runs, get_run, run_exists, tokens_spent
from deepdraft.settings import Settings
from deepdraft.train.queries import Query, load_queries, write_queries

__all__ = [
    "CollectOutcome",
    "DecisionPoint",
    "collect",
    "collection_settings",
    "decision_points",
    "draft_markdown",
    "policy_steps",
    "read_collection",
]

MANIFEST = "collection.jsonl"
QUERIES = "queries.jsonl"
DEFAULT_FORCED_EXPANSIONS = 12  # the paper's deepening cap (spec §2.1)


@dataclass(frozen=True)
class CollectOutcome:
    query_id: str
    run_id: str
    status: str
    """"finished" (now or earlier), "failed" (with `error`)."""
    error: str = ""
    skipped: bool = False
    """True when the run had already finished before this call."""


def collection_settings(base: Settings, force_expansions: int | None) -> Settings:
    """`base` adjusted for trajectory collection (see the module docstring)."""
    # The teacher answers every action itself: a search or write deepdraft put together (the quick
    # preset's `plan_searches`, `write_by_passage`) is no reply a student could learn from.
    research: dict[str, Any] = {
        "force_expansions": force_expansions,
        "plan_searches": False,
        "write_by_passage": False,
    }
    if force_expansions is not None:
        research["max_expansions"] = force_expansions + 1
    return base.model_copy(
        update={
            "research": base.research.model_copy(update=research),
            "output": base.output.model_copy(update={"verify": False, "synthesis": False}),
        }
    )


def read_collection(folder: Path) -> dict[str, str]:
    """query id → run id, from a collection folder's manifest (the last line per query wins)."""
    path = folder / MANIFEST
    runs: dict[str, str] = {}
    if not path.is_file():
        return runs
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            runs[str(row["query_id"])] = str(row["run_id"])
        except (ValueError, KeyError, TypeError) as exc:
            raise UserError(f"{path}:{number}: not a collection manifest line ({exc})") from exc
    return runs


def collection_queries(folder: Path) -> list[Query]:
    """The query set a collection was made from (copied into its folder by `collect`)."""
    path = folder / QUERIES
    if not path.is_file():
        raise UserError(f"{folder} is not a collection folder (no {QUERIES}); run `deepdraft train collect`")
    return load_queries(path)


def collect(
    queries: Sequence[Query],
    settings: Settings,
    folder: Path,
    *,
    llm: LLM | None = None,
    kb: str | None = None,
    retriever: Retriever | None = None,
    workers: int | None = None,
    on_done: Callable[[CollectOutcome], None] = lambda outcome: None,
    ray: str | None = None,
) -> list[CollectOutcome]:
    """Run (or resume) one WARP run per query; `settings` should come from `collection_settings`.

    `llm`: the teacher (default: the endpoint `settings` name); `kb` or `retriever`: what it
    searches. `workers`: queries at once (default: 4 with a server, 1 with the embedded model).
    A run that fails is reported, not fatal: the others go on. `ray`: run the queries
    on Ray ("auto" or a cluster address, as `deepdraft batch --ray`).
    """
    if workers is not None and workers < 1:
        raise UserError("--workers must be at least 1")
    folder.mkdir(parents=True, exist_ok=True)
    known = read_collection(folder)
    previous = {q.id: q for q in load_queries(folder / QUERIES)} if (folder / QUERIES).is_file() else {}
    for query in queries:
        known_query = previous.get(query.id)
        if known_query is not None and known_query.prompt != query.prompt:
            raise UserError(
                f"query {query.id} asks something else than when {folder} was collected; "
                "give it a new id, or collect it into another folder"
            )
        if known_query is not None and query.checklist is not None:
            previous[query.id] = query  # checklists made after collection began (prune needs them)
    write_queries(folder / QUERIES, [*previous.values(), *(q for q in queries if q.id not in previous)])
    teacher = llm or (wiring.build_llm(settings) if ray is None else None)
    manifest_lock = threading.Lock()
    spent = sum(tokens_spent(run_id) for run_id in known.values())
    pool = RunPool.for_settings(settings, workers, name="collect", spent=spent)

    def register(query: Query) -> str:
        run_id = known.get(query.id)
        if run_id is None:
            run_id = f"train-{runner.new_run_id()}-{_safe(query.id)}"[:80]
            with manifest_lock, (folder / MANIFEST).open("a", encoding="utf-8") as handle:
                handle.write(json.dumps({"query_id": query.id, "run_id": run_id}, ensure_ascii=False) + "\n")
        return run_id

    def one(runs: RunDriver, query: Query) -> CollectOutcome:
        run_id = register(query)
        if run_exists(run_id) and get_run(run_id).recorded_status == "finished":
            return CollectOutcome(query.id, run_id, "finished", skipped=True)
        try:
            runs.drive(RunOrder(run_id, query.prompt, kb, settings), ignore)
        except DeepdraftError as exc:
            return CollectOutcome(query.id, run_id, "failed", error=str(exc))
        return CollectOutcome(query.id, run_id, "finished")

    # Ctrl-C stops every run before its next action (resumable) instead of waiting for them to end.
    cancel = threading.Event()
    with (
        pool,
        open_driver(
            pool, settings, ray=ray, llm=teacher, retriever=retriever, spent=spent, cancel=cancel
        ) as runs,
    ):

        def tracked(query: Query) -> CollectOutcome:
            outcome = one(runs, query)
            on_done(outcome)
            return outcome

        return pool.run_all(tracked, queries, cancel=cancel)


# ---- reading the trajectories back ----------------------------------------------------------------


@dataclass(frozen=True)
class DecisionPoint:
    """A complete draft and the deepening decision that followed it."""

    index: int
    """i of D_i: how many deepening steps the draft had already taken."""
    step: int
    """The journal step of the decision (its first attempt: the prompt carries no feedback)."""
    state: RunState
    """The run's state holding the draft (the checkpoint just before the decision)."""


def decision_points(runs: Runs, run_id: str) -> list[DecisionPoint]:
    """Every draft of a run at which the policy was asked to deepen or stop, in order.

    A decision re-asked after a refused reply is the same decision point; only its first
    attempt counts. A final draft that got no decision (the step or expansion budget ended the
    run) is not a decision point: there is no prompt to label there. Neither is a split the user
    asked for (`deepdraft deepen`): the steps of a command on the finished run are left out.
    """
    steps = policy_steps(runs, run_id)
    points: list[DecisionPoint] = []
    previous = ""
    for record in steps:
        if record.action == "extend-plan" and previous != "extend-plan" and record.step > 1:
            state = runs.state_after(run_id, record.step - 1)
            if state.outline is not None:
                points.append(DecisionPoint(len(points), record.step, state))
        previous = record.action
    return points


def policy_steps(runs: Runs, run_id: str) -> list[StepRecord]:
    """The run's steps that the policy chose: without those of commands the user gave the finished
    run (deepen, rewrite, recheck), whose node the user chose, not the model."""
    return [record for record in runs.steps(run_id) if not record.directed]


def draft_markdown(state: RunState) -> str:
    """A draft as the reader (and the report-level scorer) sees it: Markdown with references."""
    if state.outline is None:
        return ""
    rendered = render_markdown(state.outline, state.registry, "", question=state.question)
    return assemble_markdown(rendered)


def _safe(text: str) -> str:
    """A query id as it may appear in a run id (which names a folder)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "query"
