"""The one way several runs are driven at once against one endpoint: a bounded pool and a shared budget.

`deepdraft batch`, the REST server (`serve`), `eval run` and `train collect` all hand their runs to
a `RunPool`. It is a `ThreadPoolExecutor` of `size` workers — a run spends its time waiting on
the endpoint, and a continuous-batching server (vLLM, SGLang) serves the requests of the runs in
flight together, so threads are enough and the indexes are shared — plus one `Budget` that every
run of the pool spends from (`runner.start(..., budget=pool.budget)`): `--rpm` and
`--max-tokens-total` then hold for all the runs together, whatever each run's own settings add.

Nothing here queues or orders work beyond the executor's own first-come queue.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from types import TracebackType
from typing import ParamSpec, TypeVar

from deepdraft.errors import UserError
from deepdraft.llm.limits import Budget
from deepdraft.settings import Settings

__all__ = ["RunOrder", "RunPool", "default_concurrency"]

Params = ParamSpec("Params")
Item = TypeVar("Item")
Result = TypeVar("Result")


def default_concurrency(settings: Settings) -> int:
    """Runs at once when the user names no number: 4 against a server, 1 with the embedded model.

    The embedded model answers one call at a time; a server batches the requests of several runs.
    """
    return 4 if settings.llm.base_url else 1


class RunPool:
    """At most `size` runs driven at once; `budget` (if any) is shared by all of them."""

    def __init__(self, size: int, *, budget: Budget | None = None, name: str = "deepdraft-run") -> None:
        if size < 1:
            raise UserError(f"the number of runs at once must be at least 1 (got {size})")
        self.size = size
        self.budget = budget
        self._executor = ThreadPoolExecutor(max_workers=size, thread_name_prefix=name)

    @classmethod
    def for_settings(
        cls,
        settings: Settings,
        size: int | None = None,
        *,
        name: str = "deepdraft-run",
        spent: int = 0,
        share_tokens: bool = True,
    ) -> RunPool:
        """A pool sized `size` (default: `default_concurrency`) whose budget is `settings.llm`'s limits.

        `spent`: tokens already used by earlier sessions of the same work. `share_tokens=False`
        shares only the request rate (a server: its token cap stays each run's own).
        """
        cap = settings.llm.max_tokens_total if share_tokens else None
        rate = settings.llm.requests_per_minute
        budget = (
            Budget(max_tokens_total=cap, requests_per_minute=rate, spent_tokens=spent)
            if cap or rate
            else None
        )
        return cls(size if size is not None else default_concurrency(settings), budget=budget, name=name)

    @property
    def exhausted(self) -> bool:
        """True once the shared token cap is spent (a new run would stop at its first call)."""
        return self.budget is not None and self.budget.exhausted

    def submit(
        self, work: Callable[Params, Result], /, *args: Params.args, **kwargs: Params.kwargs
    ) -> Future[Result]:
        return self._executor.submit(work, *args, **kwargs)

    def run_all(
        self, work: Callable[[Item], Result], items: Iterable[Item], *, cancel: threading.Event | None = None
    ) -> list[Result]:
        """`work` on every item, `size` at a time; the results in the items' order.

        On Ctrl-C, `cancel` is set (the runs stop before their next action, keeping any reply in
        flight), items not started are dropped, and KeyboardInterrupt is raised once the runs have
        stopped. A bug in `work` is raised after the other items are done.
        """
        futures = [self._executor.submit(work, item) for item in items]
        try:
            for future in futures:
                future.exception()  # wait for each; errors are raised in order below
        except KeyboardInterrupt:
            if cancel is not None:
                cancel.set()
            for future in futures:
                future.cancel()
            for future in futures:
                if not future.cancelled():
                    future.exception()
            raise
        return [future.result() for future in futures]

    def shutdown(self, *, wait: bool = True, cancel_futures: bool = False) -> None:
        self._executor.shutdown(wait=wait, cancel_futures=cancel_futures)

    def __enter__(self) -> RunPool:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.shutdown(wait=True, cancel_futures=kind is not None)


# ---- one run, as a driver is asked to drive it (see `drivers`) -----------------------------------


@dataclass(frozen=True)
class RunOrder:
    """What driving one line's run needs, wherever it is driven."""

    run_id: str
    question: str
    kb: str | None
    settings: Settings
