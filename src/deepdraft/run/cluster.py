"""A batch's runs as Ray tasks (`deepdraft batch --ray auto|ADDRESS`), durable off the workers.

What runs where:

* The driver (the `deepdraft batch` process) keeps the batch's state, bounds the runs in flight
  with its `RunPool`, and owns the workspace: `DEEPDRAFT_HOME`, its journal and its run folders.
* A **journal actor**, pinned to the driver's node, is the only writer of the driver's journal for
  the tasks: a worker's runner opens the journal through `journal_elsewhere`, so every step,
  checkpoint, event, egress record and cached LLM reply of a run is written on the driver's node
  the moment it happens. A worker that dies loses at most the LLM call it was waiting for: Ray
  runs the task again (on any node), the runner finds the run in the journal and resumes it from
  its last checkpoint — `runner.resume`, as after a local crash.
* A **budget actor** holds the batch's one `Budget`: `--rpm` and `--max-tokens-total` hold across
  every node. Its `admit` only books a slot; the waiting is done by the worker that asked.
* Each **task** drives one line's run with `runner.start`/`runner.resume` and returns the files
  of its run folder (report, manifest, exports); the driver writes them into its own
  `DEEPDRAFT_HOME/runs/<id>/`, so `runs`, `show`, `export` and `resume` work on them as on
  local runs. A worker uses the driver's `DEEPDRAFT_HOME` where that folder exists on its node
  (shared storage: knowledge bases by name), else a scratch folder of its own (then give `kb` as
  a path every node can read).

Every node needs deepdraft (with the `ray` extra) installed and the LLM endpoint reachable.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from deepdraft.config import home_dir
from deepdraft.errors import (
    ConfigError,
    DeepdraftError,
    LLMBudgetExhausted,
    RunAlreadyFinished,
    RunCancelled,
    RunFailed,
)
from deepdraft.events import EventSink
from deepdraft.fsutil import atomic_write_bytes
from deepdraft.llm.limits import Budget
from deepdraft.run import runner
from deepdraft.run.pool import RunOrder
from deepdraft.run.runs import journal_elsewhere, restore_report, run_exists, run_folder
from deepdraft.settings import Settings
from deepdraft.store.journal import Journal

__all__ = ["TASK_CPUS", "TASK_RETRIES", "RayDriver"]

TASK_CPUS = 0.25
"""CPU a run reserves on its node: a run mostly waits on the endpoint, so four share a core."""
TASK_RETRIES = 3
"""How many times Ray starts a line's task again after its worker or node died."""
_POLL_S = 0.5  # how often a waiting driver thread looks for a Ctrl-C


# ---- the actors ------------------------------------------------------------------------------------


class JournalService:
    """The driver's journal, served to the workers (a Ray actor on the driver's node)."""

    def __init__(self, path: str) -> None:
        self.journal = Journal(Path(path))

    def call(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[str, Any]:
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return "ok", getattr(self.journal, name)(*args, **kwargs)
        except DeepdraftError as exc:  # handed back as is: the worker's runner reacts to its type
            return "error", exc


class BudgetService:
    """The batch's one budget, for every node (a Ray actor)."""

    def __init__(self, max_tokens_total: int | None, requests_per_minute: float | None, spent: int) -> None:
        self.budget = Budget(
            max_tokens_total=max_tokens_total, requests_per_minute=requests_per_minute, spent_tokens=spent
        )

    def admit(self) -> tuple[str, float]:
        """("", seconds to wait before the request), or (why not, 0) once the tokens are spent."""
        try:
            self.budget.check()
        except LLMBudgetExhausted as exc:
            return str(exc), 0.0
        return "", self.budget.reserve()

    def spend(self, tokens: int) -> None:
        self.budget.spend(tokens)

    def exhausted(self) -> bool:
        return self.budget.exhausted


# ---- what a worker sees ----------------------------------------------------------------------------


class _DriverJournal:
    """The journal of the driver, seen from a worker: each method call is one call of the actor."""

    def __init__(self, actor: Any) -> None:
        self._actor = actor

    def __getattr__(self, name: str) -> Callable[..., Any]:
        if name.startswith("_"):
            raise AttributeError(name)
        import ray

        def call(*args: Any, **kwargs: Any) -> Any:
            status, value = ray.get(self._actor.call.remote(name, args, kwargs))
            if status == "error":
                raise value
            return value

        return call

    def close(self) -> None:
        """Nothing to close here: the actor keeps the connection."""

    def __enter__(self) -> _DriverJournal:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


class _ClusterBudget:
    """The batch's budget actor as a `Limiter` for the runs of a worker."""

    def __init__(self, actor: Any) -> None:
        self._actor = actor

    def admit(self) -> None:
        import ray

        refusal, delay = ray.get(self._actor.admit.remote())
        if refusal:
            raise LLMBudgetExhausted(refusal)
        if delay > 0:
            time.sleep(delay)

    def spend(self, tokens: int) -> None:
        import ray

        ray.get(self._actor.spend.remote(tokens))


@dataclass
class _TaskResult:
    files: dict[str, bytes] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    error: DeepdraftError | None = None


def _drive_line(order: RunOrder, home: str, journal: Any, budget: Any) -> _TaskResult:
    """The body of a line's Ray task: start or resume its run, journaled on the driver."""
    workspace = home if Path(home).is_dir() else tempfile.mkdtemp(prefix="deepdraft-worker-")
    previous = os.environ.get("DEEPDRAFT_HOME")
    os.environ["DEEPDRAFT_HOME"] = workspace
    try:
        with journal_elsewhere(lambda: cast(Journal, _DriverJournal(journal))):
            limiter = _ClusterBudget(budget) if budget is not None else None
            try:
                if run_exists(order.run_id):  # a retry after a dead worker, or an earlier attempt
                    problems = runner.resume(order.run_id, order.settings, budget=limiter).problems
                else:
                    problems = runner.start(
                        order.question, order.settings, kb=order.kb, run_id=order.run_id, budget=limiter
                    ).problems
            except RunAlreadyFinished:
                # A worker that finished the run died before its files came back: the report is
                # read from the journal, not written by driving the run again.
                restore_report(order.run_id)
                problems = []
            except DeepdraftError as exc:
                return _TaskResult(error=exc)
        folder = run_folder(order.run_id)
        files = {
            path.name: path.read_bytes()
            for path in folder.iterdir()
            if path.is_file() and path.name != "lock"
        }
        return _TaskResult(files, problems)
    finally:
        if previous is None:
            os.environ.pop("DEEPDRAFT_HOME", None)
        else:
            os.environ["DEEPDRAFT_HOME"] = previous


# ---- the driver's side -----------------------------------------------------------------------------


_ADDRESS = re.compile(r"(?:ray://)?(?P<host>\[[0-9a-fA-F:]+\]|[^:/\s]+):(?P<port>\d{1,5})")


def _check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Fail at once, in one line, when `address` is not HOST:PORT or nothing listens there."""
    match = _ADDRESS.fullmatch(address)
    if match is None:
        raise ConfigError(f"--ray takes 'auto' or the HOST:PORT of a Ray head node, not {address!r}")
    host, port = match["host"].strip("[]"), int(match["port"])
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            pass
    except OSError as exc:
        raise ConfigError(
            f"cannot reach the Ray cluster at {address} ({exc.strerror or exc}); start one with "
            "`ray start --head`, or use --ray auto for a Ray on this machine"
        ) from None


def offered_workspace() -> str:
    """The workspace path a worker uses if it exists on its node: the driver's `DEEPDRAFT_HOME`."""
    return str(home_dir())


class RayDriver:
    """Drives a batch's runs as Ray tasks (see the module docstring); use `RayDriver.connect`."""

    def __init__(self, journal: Any, budget: Any, cancel: threading.Event) -> None:
        import ray

        self._journal, self._budget, self.cancel = journal, budget, cancel
        self._task = ray.remote(_drive_line).options(
            num_cpus=TASK_CPUS, max_retries=TASK_RETRIES, retry_exceptions=False
        )

    @classmethod
    @contextmanager
    def connect(
        cls, address: str, settings: Settings, *, spent: int = 0, cancel: threading.Event
    ) -> Iterator[RayDriver]:
        """Start a local Ray ("auto") or join the cluster at `address`, for the length of the block.

        A Ray this process already started (tests, a notebook) is used as it is and left running.
        """
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage reports from a CLI tool
        try:
            import ray
            from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
        except ImportError:
            raise ConfigError('--ray needs Ray: pip install -c constraints.txt -e ".[ray]"') from None
        started = not ray.is_initialized()
        if started:
            if address != "auto":
                _check_reachable(address)  # Ray itself retries an unreachable address for minutes
            try:
                ray.init(
                    address=None if address == "auto" else address,
                    include_dashboard=False,
                    logging_level=logging.WARNING,
                    log_to_driver=False,
                )
            except (ConnectionError, ValueError, RuntimeError) as exc:
                raise ConfigError(f"cannot join the Ray cluster at {address}: {exc}") from None
        try:
            here = NodeAffinitySchedulingStrategy(node_id=ray.get_runtime_context().get_node_id(), soft=False)
            journal: Any = (
                ray.remote(JournalService)
                .options(num_cpus=0, scheduling_strategy=here)
                .remote(str(home_dir() / "journal.sqlite"))
            )
            budget: Any = None
            if settings.llm.max_tokens_total or settings.llm.requests_per_minute:
                budget = (
                    ray.remote(BudgetService)
                    .options(num_cpus=0, scheduling_strategy=here)
                    .remote(settings.llm.max_tokens_total, settings.llm.requests_per_minute, spent)
                )
            try:
                yield cls(journal, budget, cancel)
            finally:
                ray.kill(journal)
                if budget is not None:
                    ray.kill(budget)
        finally:
            if started:
                ray.shutdown()

    def drive(self, order: RunOrder, on_event: EventSink) -> list[str]:
        """Run the line's task and wait for it; its run folder is then written in this workspace."""
        import ray
        from ray.exceptions import RayError

        ref = self._task.remote(order, offered_workspace(), self._journal, self._budget)
        while not ray.wait([ref], timeout=_POLL_S)[0]:
            if self.cancel.is_set():
                # The worker is stopped at once; every finished step is already in the journal.
                ray.cancel(ref, force=True)
                raise RunCancelled(f"run {order.run_id} was stopped; the same batch command continues it")
        try:
            result: _TaskResult = ray.get(ref)
        except RayError as exc:
            raise RunFailed(f"the Ray task of run {order.run_id} failed: {exc}") from None
        if result.error is not None:
            raise result.error
        folder = run_folder(order.run_id)
        folder.mkdir(parents=True, exist_ok=True)
        for name, data in result.files.items():
            atomic_write_bytes(folder / name, data)
        # The worker recorded where it wrote the report; from now on it is read here.
        with runner.open_journal() as journal:
            journal.update_run(order.run_id, report_path=str(folder / "report.md"))
        return result.problems

    def exhausted(self) -> bool:
        if self._budget is None:
            return False
        import ray

        return bool(ray.get(self._budget.exhausted.remote()))
