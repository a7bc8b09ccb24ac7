"""A batch's runs on a Ray cluster (`deepdraft batch --ray auto|ADDRESS`), durable off the workers.

What runs where:

* The driver (the `deepdraft batch` process) keeps the batch's state, bounds the runs in flight
  with its `RunPool`, and owns the workspace: `DEEPDRAFT_HOME`, its journal and its run folders.
* **Line workers** drive the runs: long-lived Ray actors, each a process that drives up to
  `RUNS_PER_WORKER` runs at once in threads (a run mostly waits on the endpoint, as in a local
  batch). They are started when the driver connects, while the batch is still being prepared,
  and each takes lines as soon as it is up: a batch pays for starting a few processes and
  importing deepdraft in them once, not for a process per run in flight. Where the Ray outlives
  the batch, the next batch of the same process finds them up (`KEEP_WORKERS_S`). A worker
  drives a line with `runner.start`/`runner.resume` and returns the files of its run folder
  (report, manifest, exports); the driver writes them into its own `DEEPDRAFT_HOME/runs/<id>/`,
  so `runs`, `show`, `export` and `resume` work on them as on local runs.
* A **driver-node actor** (`DriverNodeService`), pinned to the driver's node, is the only writer
  of the driver's journal for the workers: a worker's runner opens the journal through
  `journal_elsewhere`, so every step, checkpoint, event, egress record and cached LLM reply of a
  run is written on the driver's node the moment it happens. A worker process that dies loses at
  most the LLM calls it was waiting for: Ray starts the worker again (on any node) and calls it
  again for each of its lines, which find their runs in the journal and resume them from their
  last checkpoint (`runner.resume`, as after a local crash).
* The same actor ships a knowledge base to a worker that cannot see it (no shared storage): a
  snapshot of the KB folder or of a corpus's index, put once in Ray's object store, up to
  `kb.ship_max_mb` (see `retrieval.kb.snapshot`).
* A **budget actor** holds the batch's one `Budget`: `--rpm` and `--max-tokens-total` hold across
  every node. Its `admit` only books a slot; the waiting is done by the worker that asked.

A worker uses the driver's `DEEPDRAFT_HOME` where that folder exists on its node (shared storage),
else a scratch folder of its own. Every node needs deepdraft (with the `ray` extra) installed and
the LLM endpoint reachable.
"""

from __future__ import annotations

import logging
import os
import queue
import re
import shutil
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from deepdraft.config import home_dir
from deepdraft.errors import (
    ConfigError,
    DeepdraftError,
    KnowledgeBaseError,
    LLMBudgetExhausted,
    RunAlreadyFinished,
    RunCancelled,
    RunFailed,
)
from deepdraft.events import EventSink
from deepdraft.fsutil import atomic_write_bytes
from deepdraft.llm.limits import Budget
from deepdraft.run import runner, wiring
from deepdraft.run.pool import RunOrder
from deepdraft.run.runs import journal_elsewhere, restore_report, run_exists, run_folder
from deepdraft.settings import Settings
from deepdraft.store.journal import Journal

if TYPE_CHECKING:
    from deepdraft.retrieval.kb.store import KnowledgeBase

__all__ = ["RUNS_PER_WORKER", "TASK_CPUS", "TASK_RETRIES", "RayDriver"]

TASK_CPUS = 0.125
"""CPU a run reserves on its node: a run mostly waits on the endpoint, so eight share a core."""
RUNS_PER_WORKER = 8
"""Runs one worker process drives at once (threads): one core's worth of runs, by `TASK_CPUS`.
Each process is one more that a fresh Ray must start before its lines begin (a second one took
0.3 s more on a 2-CPU Ray), and its threads share one core anyway (the GIL), as a local batch's do."""
TASK_RETRIES = 3
"""How many times Ray gives a line to its worker again after that worker's process or node died."""
_POLL_S = 0.5  # how often a waiting driver thread looks for a Ctrl-C
_CLOSE_S = 10.0  # how long the workers get to clear their scratch folders at the end
_WARM_MODULES = (  # what every run imports on its first action; a worker imports it while it starts
    "deepdraft.llm.openai_compat",
    "deepdraft.retrieval.kb.names",
    "deepdraft.retrieval.kb.folder",
    "deepdraft.export.document",
    "deepdraft.run.manifest",
)


# ---- the actors on the driver's node ---------------------------------------------------------------


class DriverNodeService:
    """What the workers need of the driver's node, served by one actor pinned there: the driver's
    journal (`call`) and its knowledge bases, shipped to workers that cannot see them (`fetch`).

    One process for both, not one each: a fresh Ray starts actor processes a few at a time (as
    many as it has CPUs), and a batch's first lines wait for the journal and their workers
    (measured with `bench/throughput.py --ray` on a fresh 2-CPU Ray, idle machine: the last run's
    first request came 1.40 s after the start instead of 1.76 s). Threaded, so that a KB being
    packed for one worker does not hold up the journal writes of the runs; the journal serialises
    its own use of the connection.
    """

    def __init__(self, journal_path: str, home: str) -> None:
        os.environ["DEEPDRAFT_HOME"] = home  # this process is the actor's own: KB names resolve here
        self.journal = Journal(Path(journal_path))
        self.corpora = _Shipments()

    def call(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[str, Any]:
        """Journal method `name`: ("ok", its value) or ("error", the DeepdraftError it raised)."""
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return "ok", getattr(self.journal, name)(*args, **kwargs)
        except DeepdraftError as exc:  # handed back as is: the worker's runner reacts to its type
            return "error", exc

    def fetch(self, kb: str, settings: Settings, batch: str) -> ShippedKB:
        return self.corpora.fetch(kb, settings, batch)


SERVICE_THREADS = 8
"""Calls the driver-node actor serves at once (journal writes queue on the journal's own lock)."""


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


@dataclass(frozen=True)
class ShippedKB:
    """A knowledge base as the driver-node actor sends it: a snapshot in the object store, or why not."""

    data: Any = None
    """The `ObjectRef` of the snapshot's bytes (None when refused)."""
    refusal: str = ""


class _Shipments:
    """The driver's knowledge bases, shipped to workers that cannot see them (on the driver-node
    actor). Each KB is snapshotted and put in the object store once per batch, on the first
    worker's request: a batch whose workers share the driver's storage ships nothing."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # two workers asking at once get the one snapshot
        self._batch = ""
        self._shipped: dict[tuple[str, str], ShippedKB] = {}

    def fetch(self, kb: str, settings: Settings, batch: str) -> ShippedKB:
        """KB `kb` ("kb:NAME", or a corpus's absolute path) as `settings` search it, as it is
        when the first worker of `batch` asks (a later batch sees it as it is then)."""
        with self._lock:
            if batch != self._batch:
                self._batch, self._shipped = batch, {}
            key = (kb, settings.retrieval.model_dump_json() + settings.embedding.model_dump_json())
            if key not in self._shipped:
                self._shipped[key] = self._ship(kb, settings)
            return self._shipped[key]

    def _ship(self, kb: str, settings: Settings) -> ShippedKB:
        import ray

        from deepdraft.retrieval.kb import names as kbs
        from deepdraft.retrieval.kb import snapshot

        label, limit_mb = kb.removeprefix("kb:"), settings.kb.ship_max_mb
        if limit_mb == 0:
            return ShippedKB(refusal=_not_sent(label, "is not sent to workers (kb.ship_max_mb is 0)"))
        try:
            if kb.startswith("kb:"):
                folder = kbs.kb_dir(label)
            else:
                # Brought up to date first: the workers search the documents as they are now.
                with cast("KnowledgeBase", wiring.open_corpus(Path(kb), settings)) as index:
                    folder = index.folder
            size_mb = snapshot.size_of(folder) / 2**20
            if size_mb > limit_mb:
                why = f"is {size_mb:,.2f} MB, above the {limit_mb:g} MB a batch sends (kb.ship_max_mb)"
                return ShippedKB(refusal=_not_sent(label, why))
            return ShippedKB(data=ray.put(snapshot.take(folder, label)))
        except DeepdraftError as exc:
            return ShippedKB(refusal=f"the driver cannot send knowledge base {label!r} to a worker: {exc}")


def _not_sent(label: str, why: str) -> str:
    return (
        f"knowledge base {label!r} is not on this worker's node and {why}: put it on shared storage "
        "that every node mounts at the same path, or in PostgreSQL (deepdraft kb add --engine postgres, "
        "with the DSN in every node's config), or raise kb.ship_max_mb"
    )


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
class _LineResult:
    files: dict[str, bytes] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    error: DeepdraftError | None = None


class LineWorker:
    """A worker process that drives batch lines, several at once in threads (a Ray actor).

    Everything a line needs that is the same for every line — the workspace, the driver's journal,
    the imports — is set up once, when the worker starts; a worker may serve several batches of the
    same driver in turn (see `_Crew`). Ray starts it again after its process died (its `__init__`
    runs again) and gives it the lines it was driving once more.
    """

    def __init__(self, home: str, service: Any) -> None:
        import importlib

        self._scratch: list[str] = []
        if Path(home).is_dir():  # the driver's workspace, on storage this node shares
            self.workspace = home
        else:
            self.workspace = self._scratch_folder("deepdraft-worker-")
        os.environ["DEEPDRAFT_HOME"] = self.workspace  # this process is the actor's own
        self._stack = ExitStack()  # held for the worker's life: every run here journals on the driver
        self._stack.enter_context(journal_elsewhere(lambda: cast(Journal, _DriverJournal(service))))
        self._service = service
        self._batch = ""
        self._reached: dict[str, Path] = {}  # KB → where its snapshot was unpacked, this batch
        self._reaching = threading.Lock()
        for module in _WARM_MODULES:
            importlib.import_module(module)

    def _scratch_folder(self, prefix: str) -> str:
        folder = tempfile.mkdtemp(prefix=prefix)
        self._scratch.append(folder)
        return folder

    def ready(self) -> str:
        """Answers once the worker is up."""
        return self.workspace

    def drive(self, order: RunOrder, batch: str, budget: Any) -> _LineResult:
        """Start or resume the line's run, journaled on the driver; the files of its folder.

        `batch` names the driver's batch (a KB sent for an earlier one is not searched in a later
        one); `budget` is its budget actor, if any.
        """
        limiter = _ClusterBudget(budget) if budget is not None else None
        try:
            self._reach(order.kb, order.settings, batch)
            if run_exists(order.run_id):  # a retry after a dead worker, or an earlier attempt
                problems = runner.resume(order.run_id, order.settings, budget=limiter).problems
            else:
                problems = runner.start(
                    order.question, order.settings, kb=order.kb, run_id=order.run_id, budget=limiter
                ).problems
        except RunAlreadyFinished:
            # A worker that finished the run died before its files came back: the report is read
            # from the journal, not written by driving the run again.
            restore_report(order.run_id)
            problems = []
        except DeepdraftError as exc:
            return _LineResult(error=exc)
        folder = run_folder(order.run_id)
        files = {path.name: path.read_bytes() for path in folder.iterdir() if path.is_file()}
        files.pop("lock", None)  # the run's lock is this node's, not part of its folder
        if self._scratch and self.workspace == self._scratch[0]:
            shutil.rmtree(folder, ignore_errors=True)  # on its way to the driver: not kept here too
        return _LineResult(files, problems)

    def _reach(self, kb: str | None, settings: Settings, batch: str) -> None:
        """Make knowledge base `kb` searchable here: as it is when this node sees it, else from a
        snapshot the driver sends (once per worker and batch)."""
        from deepdraft.retrieval.kb import names as kbs

        with self._reaching:
            if batch != self._batch:  # the lines of an earlier batch are done: so are its KBs
                for folder in self._reached.values():
                    shutil.rmtree(folder, ignore_errors=True)
                self._batch, self._reached = batch, {}
            if kb is None:
                return  # the workspace's default KB, or the bundled demo
            name = kb.removeprefix("kb:") if kb.startswith("kb:") else None
            if kb in self._reached or (kbs.kb_exists(name) if name else Path(kb).exists()):
                return
            import ray

            from deepdraft.retrieval.kb import snapshot

            shipped: ShippedKB = ray.get(self._service.fetch.remote(kb, settings, batch))
            if shipped.refusal:
                raise KnowledgeBaseError(shipped.refusal)
            data: bytes = ray.get(shipped.data)
            if name:
                folder = kbs.kb_dir(name)
                snapshot.restore(data, folder)
            else:
                folder = Path(self._scratch_folder("deepdraft-corpus-"))
                snapshot.restore(data, folder / "index")
                wiring.use_index_copy(kb, folder / "index")
            self._reached[kb] = folder

    def close(self) -> None:
        """Remove the scratch folders (the runs' files went back to the driver)."""
        for folder in self._scratch:
            shutil.rmtree(folder, ignore_errors=True)


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


def _as_seen_here(kb: str | None) -> str | None:
    """`kb` as the driver resolves it, for a worker: "kb:NAME" for a KB name, an absolute path
    for a corpus (a worker's current folder is not the driver's)."""
    from deepdraft.retrieval.kb import names as kbs

    if kb is None:
        name, _ = wiring.default_kb()
        return f"kb:{name}" if name == kbs.DEFAULT_KB else None  # the demo: every worker has it
    if kb.startswith("kb:") or (kbs.is_kb_name(kb) and kbs.kb_exists(kb)):
        return f"kb:{kb.removeprefix('kb:')}"
    return str(Path(kb).expanduser().resolve())


class _Workers:
    """The batch's line workers, and which of their run slots are free.

    A worker's slots become free when it is up, so the first lines go to the first workers to
    start; a worker Ray cannot place (the cluster is full) never takes a line.
    """

    def __init__(self, actors: list[tuple[Any, int]]) -> None:
        self.up: list[Any] = []
        """The workers that started (the others are still waiting for room, or could not start)."""
        self._free: queue.Queue[Any] = queue.Queue()
        self._lock = threading.Lock()
        self._starting = len(actors)
        self._slots = 0  # slots of the workers that are up, less those lost with a dead worker
        self._failure = ""
        self._stopped = threading.Event()
        self._watcher = threading.Thread(
            target=self._watch, args=(actors,), name="deepdraft-ray-workers", daemon=True
        )
        self._watcher.start()

    def _watch(self, actors: list[tuple[Any, int]]) -> None:
        import ray
        from ray.exceptions import RayError

        pending = {actor.ready.remote(): (actor, slots) for actor, slots in actors}
        while pending and not self._stopped.is_set():
            done, _ = ray.wait(list(pending), num_returns=1, timeout=_POLL_S)
            for ref in done:
                actor, slots = pending.pop(ref)
                try:
                    ray.get(ref)
                except RayError as exc:  # it cannot start on its node (deepdraft missing, ...)
                    with self._lock:
                        self._failure = self._failure or str(exc).strip().splitlines()[-1]
                        self._starting -= 1
                    continue
                with self._lock:
                    self.up.append(actor)
                    self._slots += slots
                    self._starting -= 1
                for _ in range(slots):
                    self._free.put(actor)

    def take(self, cancel: threading.Event) -> Any:
        """The worker of a free slot, once there is one."""
        while True:
            try:
                return self._free.get(timeout=_POLL_S)
            except queue.Empty:
                if cancel.is_set():
                    raise RunCancelled("the batch was stopped; the same batch command continues it") from None
                with self._lock:
                    if self._starting == 0 and self._slots == 0:
                        raise RunFailed(
                            f"no Ray worker is left to drive the run: {self._failure or 'every one died'}"
                        ) from None

    def give_back(self, worker: Any) -> None:
        self._free.put(worker)

    def lose(self) -> None:
        """A slot whose worker is gone for good (Ray gave up on it, or the batch killed it)."""
        with self._lock:
            self._slots -= 1

    def stop(self) -> None:
        self._stopped.set()
        self._watcher.join()


@dataclass
class _Crew:
    """The actors a batch starts that the next batch of this process may use as they are: the
    driver-node actor, and the line workers with their slots."""

    key: tuple[str, str, str]
    """The Ray they run in (`_this_ray`), the workspace offered to the workers, the driver's
    journal: what they are bound to."""
    service: Any
    """The `DriverNodeService` actor."""
    workers: list[tuple[Any, int]]

    def dismiss(self, up: list[Any] | None = None) -> None:
        """Stop them all, after the workers that are `up` (default: all) cleared their scratch folders."""
        import ray

        # Actors go with the Ray they were started in: once this process has shut it down (a
        # notebook, a test), their handles must not be used — Ray ends a process that sends to a
        # Ray it left (measured: the whole test suite exited when a kept crew expired after the
        # fixture's shutdown).
        if not ray.is_initialized() or _this_ray() != self.key[0]:
            return
        _close_quietly(up if up is not None else [worker for worker, _ in self.workers])
        for actor in [self.service, *(worker for worker, _ in self.workers)]:
            with suppress(Exception):  # already gone, or Ray shut down since
                ray.kill(actor)


KEEP_WORKERS_S = 60.0
"""How long a batch's line workers wait for another batch of the same process before they stop.

Only where the Ray outlives the batch (one this process had started before: a notebook's, a
script's): a batch after another then finds its workers up, with deepdraft imported. Meanwhile
they keep their CPU reservation, as Ray keeps idle workers for a while."""

_kept_lock = threading.Lock()
_kept: tuple[_Crew, threading.Timer] | None = None


def _take_kept(key: tuple[str, str, str]) -> _Crew | None:
    """The crew a finished batch left, if it is bound to `key`; another one is dismissed."""
    global _kept
    with _kept_lock:
        kept, _kept = _kept, None
    if kept is None:
        return None
    crew, timer = kept
    timer.cancel()
    if crew.key == key:
        return crew
    crew.dismiss()  # bound elsewhere, and only in the way of this batch's workers
    return None


def _keep(crew: _Crew) -> None:
    global _kept
    timer = threading.Timer(KEEP_WORKERS_S, _expire, args=(crew,))
    timer.daemon = True
    with _kept_lock:
        previous, _kept = _kept, (crew, timer)
    if previous is not None:
        previous[1].cancel()
        previous[0].dismiss()
    timer.start()


def _expire(crew: _Crew) -> None:
    global _kept
    with _kept_lock:
        if _kept is None or _kept[0] is not crew:
            return  # taken by a batch meanwhile
        _kept = None
    crew.dismiss()


class RayDriver:
    """Drives a batch's runs on line workers (see the module docstring); use `RayDriver.connect`."""

    def __init__(self, workers: _Workers, budget: Any, cancel: threading.Event) -> None:
        self._workers, self._budget, self.cancel = workers, budget, cancel
        self._batch = uuid.uuid4().hex

    @classmethod
    @contextmanager
    def connect(
        cls, address: str, settings: Settings, *, slots: int, spent: int = 0, cancel: threading.Event
    ) -> Iterator[RayDriver]:
        """Start a local Ray ("auto") or join the cluster at `address`, and start workers for
        `slots` runs at once, for the length of the block.

        A Ray this process already started (tests, a notebook) is used as it is and left running,
        and the workers are kept for the next batch a while (`KEEP_WORKERS_S`).
        """
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage reports from a CLI tool
        try:
            import ray
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
            except Exception as exc:  # Ray raises bare Exceptions too (a local node that did not start)
                where = "start a local Ray" if address == "auto" else f"join the Ray cluster at {address}"
                first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise ConfigError(f"cannot {where}: {first_line}") from None
        crew: _Crew | None = None
        budget: Any = None
        workers: _Workers | None = None
        finished = False
        try:
            crew = _crew_for(slots)
            if settings.llm.max_tokens_total or settings.llm.requests_per_minute:
                budget = (
                    ray.remote(BudgetService)
                    .options(**_on_driver_node())
                    .remote(settings.llm.max_tokens_total, settings.llm.requests_per_minute, spent)
                )
            workers = _Workers(crew.workers)
            yield cls(workers, budget, cancel)
            finished = not cancel.is_set()  # a stopped batch killed its workers
        finally:
            if workers is not None:
                workers.stop()
            if budget is not None:
                ray.kill(budget)
            if crew is not None and workers is not None and finished and not started:
                # Kept as they are up; one still waiting for room in the cluster would only hold it.
                for worker, _ in crew.workers:
                    if worker not in workers.up:
                        ray.kill(worker)
                _keep(replace(crew, workers=[w for w in crew.workers if w[0] in workers.up]))
            elif crew is not None:
                crew.dismiss(workers.up if workers is not None else [])
            if started:
                ray.shutdown()

    def drive(self, order: RunOrder, on_event: EventSink) -> list[str]:
        """Drive the line on a free worker and wait; its run folder is then written in this workspace."""
        import ray
        from ray.exceptions import RayActorError, RayError

        order = RunOrder(order.run_id, order.question, _as_seen_here(order.kb), order.settings)
        worker = self._workers.take(self.cancel)
        ref = worker.drive.remote(order, self._batch, self._budget)
        lost = False
        try:
            while not ray.wait([ref], timeout=_POLL_S)[0]:
                if self.cancel.is_set():
                    # The worker is stopped at once (with the other lines it drives: the whole
                    # batch is stopping); every finished step is already in the journal.
                    ray.kill(worker, no_restart=True)
                    raise RunCancelled(f"run {order.run_id} was stopped; the same batch command continues it")
            try:
                result: _LineResult = ray.get(ref)
            except RayError as exc:
                if self.cancel.is_set():
                    raise RunCancelled(
                        f"run {order.run_id} was stopped; the same batch command continues it"
                    ) from None
                lost = isinstance(exc, RayActorError)
                raise RunFailed(f"the Ray worker of run {order.run_id} failed: {exc}") from None
        finally:
            if lost or self.cancel.is_set():
                self._workers.lose()
            else:
                self._workers.give_back(worker)
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


def _on_driver_node() -> dict[str, Any]:
    """Actor options: on the driver's node (its storage), reserving no CPU (they mostly wait)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = NodeAffinitySchedulingStrategy(node_id=ray.get_runtime_context().get_node_id(), soft=False)
    return {"num_cpus": 0, "scheduling_strategy": here}


def _this_ray() -> str:
    """The Ray this process is connected to: its job on its driver's node. The job alone does not
    tell: a Ray started again in the same process numbers its first job as the last one's (a kept
    crew of the earlier Ray was then taken for this one's, and the batch waited for workers that
    no longer existed)."""
    import ray

    context = ray.get_runtime_context()
    return f"{context.get_job_id()}@{context.get_node_id()}"


def _crew_for(slots: int) -> _Crew:
    """The driver-node actor and line workers for `slots` runs: those a batch of this process
    left, as far as they go, and new ones for the rest (they start now, in the background)."""
    import ray

    workspace, journal_path = offered_workspace(), str(home_dir() / "journal.sqlite")
    key = (_this_ray(), workspace, journal_path)
    crew = _take_kept(key)
    if crew is None:
        service = (
            ray.remote(DriverNodeService)
            .options(max_concurrency=SERVICE_THREADS, **_on_driver_node())
            .remote(journal_path, str(home_dir()))
        )
        crew = _Crew(key, service, [])
    workers: list[tuple[Any, int]] = []
    have = 0
    for worker, runs in crew.workers:
        if have < slots:
            workers.append((worker, runs))
            have += runs
        else:  # more than this batch needs
            with suppress(Exception):
                ray.kill(worker)
    while have < slots:
        runs = min(RUNS_PER_WORKER, slots - have)
        worker = (
            ray.remote(LineWorker)
            .options(
                num_cpus=TASK_CPUS * runs,
                max_concurrency=runs,
                max_restarts=-1,  # a worker is started again as long as lines need it
                max_task_retries=TASK_RETRIES,
                scheduling_strategy="SPREAD",
            )
            .remote(workspace, crew.service)
        )
        workers.append((worker, runs))
        have += runs
    return replace(crew, workers=workers)


def _close_quietly(workers: list[Any]) -> None:
    """Ask the workers to clear their scratch folders; one that is gone or stuck is not waited for."""
    import ray
    from ray.exceptions import RayError

    refs = [worker.close.options(max_task_retries=0).remote() for worker in workers]
    with suppress(RayError):
        ray.wait(refs, num_returns=len(refs), timeout=_CLOSE_S)
