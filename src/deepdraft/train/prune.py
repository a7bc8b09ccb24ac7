"""`train prune`: cut every trajectory at its best draft — the paper's "optimal stopping" fix (spec §5.2).

A forced-deepening trajectory passes through drafts D_0 … D_N (see `collect.decision_points`). Each
is scored with the report-level scorer (`rewards.ChecklistScorer`: the query's weighted checklist,
judged through the LLM port, cached); i* = argmax, the *earliest* draft on a tie (a shorter report
that scores the same is the better place to stop). The decision asked at D_{i*} is relabelled as
terminate (`nop`) and every step after it is dropped; the decisions before it stay "extend".

Results go to `pruned.jsonl` in the collection folder, one line per run, appended as each run is
done: a rerun skips runs already pruned (delete the file to re-score). A run whose drafts could not
all be scored (judge failures) is reported and left out rather than cut at a guess.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from deepdraft.errors import UserError
from deepdraft.run.runs import Runs
from deepdraft.train.collect import collection_queries, decision_points, draft_markdown, read_collection
from deepdraft.train.rewards import ReportScorer

__all__ = ["PRUNED", "PruneResult", "prune", "read_pruned"]

PRUNED = "pruned.jsonl"


@dataclass(frozen=True)
class PruneResult:
    query_id: str
    run_id: str
    scores: list[float] = field(default_factory=list)
    """The score of each draft D_0 … D_N."""
    best: int = -1
    """i*: the draft the trajectory stops at."""
    cut_step: int = 0
    """The journal step relabelled as terminate; later steps are dropped."""
    decision_steps: list[int] = field(default_factory=list)
    """The journal step of each draft's decision (same order as `scores`)."""
    total_steps: int = 0
    failure: str = ""

    @property
    def ok(self) -> bool:
        return not self.failure

    @property
    def drafts_dropped(self) -> int:
        return len(self.scores) - 1 - self.best if self.ok else 0

    @property
    def steps_dropped(self) -> int:
        return self.total_steps - self.cut_step if self.ok else 0

    def as_row(self) -> dict[str, object]:
        return asdict(self)


def read_pruned(folder: Path) -> dict[str, PruneResult]:
    """run id → its pruning result, for the runs already pruned (failures are not kept)."""
    path = folder / PRUNED
    results: dict[str, PruneResult] = {}
    if not path.is_file():
        return results
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            result = PruneResult(**json.loads(line))
        except (ValueError, TypeError) as exc:
            raise UserError(f"{path}:{number}: not a pruning record ({exc})") from exc
        if result.ok:
            results[result.run_id] = result
    return results


def prune(
    folder: Path,
    scorer: ReportScorer,
    on_done: Callable[[PruneResult], None] = lambda result: None,
) -> list[PruneResult]:
    """Score and cut every finished run of a collection; returns this call's results and the earlier ones."""
    queries = {q.id: q for q in collection_queries(folder)}
    done = read_pruned(folder)
    results: list[PruneResult] = []
    with Runs.open() as runs:
        for query_id, run_id in read_collection(folder).items():
            if run_id in done:
                results.append(done[run_id])
                continue
            query = queries.get(query_id)
            if query is None:
                raise UserError(
                    f"{folder}: run {run_id} names query {query_id}, which is not in its query set"
                )
            record = runs.get(run_id)
            if record.recorded_status != "finished":
                result = PruneResult(
                    query_id, run_id, failure=f"the run is {record.recorded_status}; collect it first"
                )
            else:
                points = decision_points(runs, run_id)
                if not points:
                    result = PruneResult(
                        query_id,
                        run_id,
                        failure="no deepening decision in the run (collect with forced deepening)",
                    )
                else:
                    scores = [scorer.score(query, draft_markdown(p.state)) for p in points]
                    steps = [p.step for p in points]
                    if any(s is None for s in scores):
                        failed = [str(i) for i, s in enumerate(scores) if s is None]
                        result = PruneResult(
                            query_id, run_id, failure=f"the judge failed on draft(s) {', '.join(failed)}"
                        )
                    else:
                        known = [float(s) for s in scores if s is not None]
                        best = max(range(len(known)), key=lambda i: (known[i], -i))
                        result = PruneResult(query_id, run_id, known, best, steps[best], steps, record.steps)
            if result.ok:
                with (folder / PRUNED).open("a", encoding="utf-8") as handle:
                    handle.write(json.dumps(result.as_row(), ensure_ascii=False) + "\n")
            on_done(result)
            results.append(result)
    return results
