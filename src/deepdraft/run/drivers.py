"""Who drives the runs of a pool: this process's threads (`LocalDriver`) or a Ray cluster.

`batch`, `eval run` and `train collect` describe each run as a `RunOrder` and hand it to the
driver `open_driver` gives them; they never see which one it is.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

from deepdraft.errors import RunAlreadyFinished, UserError
from deepdraft.events import EventSink
from deepdraft.ports import LLM, Retriever
from deepdraft.run import runner
from deepdraft.run.pool import RunOrder, RunPool
from deepdraft.run.runs import restore_report, run_exists
from deepdraft.settings import Settings

__all__ = ["LocalDriver", "RunDriver", "open_driver"]


class RunDriver(Protocol):
    """Drives the runs of a batch: in this process (`LocalDriver`) or on a Ray cluster (`run.cluster`)."""

    def drive(self, order: RunOrder, on_event: EventSink) -> list[str]:
        """Start the run, or continue it if the journal has it; return the formats it could not write.

        On return the run's folder in this workspace holds its report. Raises `RunCancelled` when
        the batch was stopped, another `DeepdraftError` when the run failed.
        """
        ...

    def exhausted(self) -> bool:
        """True once the batch's token budget is spent."""
        ...


class LocalDriver:
    """Runs driven by this process's threads, spending from the pool's budget."""

    def __init__(
        self,
        pool: RunPool,
        llm: LLM | None,
        cancel: threading.Event,
        retriever: Retriever | None = None,
    ) -> None:
        self.pool, self.llm, self.cancel, self.retriever = pool, llm, cancel, retriever

    def drive(self, order: RunOrder, on_event: EventSink) -> list[str]:
        if run_exists(order.run_id):  # an earlier call's run, or this call's failed attempt
            try:
                report = runner.resume(
                    order.run_id,
                    order.settings,
                    llm=self.llm,
                    retriever=self.retriever,
                    on_event=on_event,
                    cancel=self.cancel,
                    budget=self.pool.budget,
                )
            except RunAlreadyFinished:  # finished by a call that stopped before recording it
                restore_report(order.run_id)
                return []
        else:
            report = runner.start(
                order.question,
                order.settings,
                kb=order.kb,
                llm=self.llm,
                retriever=self.retriever,
                on_event=on_event,
                run_id=order.run_id,
                cancel=self.cancel,
                budget=self.pool.budget,
            )
        return report.problems

    def exhausted(self) -> bool:
        return self.pool.exhausted


@contextmanager
def open_driver(
    pool: RunPool,
    settings: Settings,
    *,
    ray: str | None = None,
    llm: LLM | None = None,
    retriever: Retriever | None = None,
    spent: int = 0,
    cancel: threading.Event | None = None,
) -> Iterator[RunDriver]:
    """The driver for the runs of `pool`: local threads, or Ray when `ray` is "auto" or an address.

    `llm` and `retriever` replace what the settings name (tests, a teacher object); on Ray every
    run builds its own on its worker, so they cannot be given there. `spent`: tokens the work
    already used in earlier sessions (the Ray budget actor starts from them, as the pool does).
    """
    cancel = cancel or threading.Event()
    if ray is None:
        yield LocalDriver(pool, llm, cancel, retriever)
        return
    if llm is not None or retriever is not None:
        raise UserError(
            "on Ray every run builds its LLM and opens its knowledge base on its worker: "
            "name an endpoint (--base-url) and a KB (--kb NAME or PATH)"
        )
    from deepdraft.run.cluster import RayDriver

    with RayDriver.connect(ray, settings, slots=pool.size, spent=spent, cancel=cancel) as driver:
        yield driver
