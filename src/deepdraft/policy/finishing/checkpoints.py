"""Verification's checkpoints after its first: only what a step changed (`StateChanges`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from deepdraft.core.state import RunState
from deepdraft.events import StateChanges


class PassCheckpoints:
    """The checkpoints of verification steps, after the first: only what changed since the last.

    Until its decisions are applied, a verification step changes the state's counters, the
    verification's figures and progress, and the checks of the sentences it decided — never the
    outline or the evidence, the bulk of the state (node texts stay as written until the end).
    Writing the whole state at each of hundreds of steps was most of the pass's time and of the
    journal's size. So once one whole checkpoint of the pass is journaled by this process, each
    later step's is `StateChanges`: the small fields that differ, and each sentence check that does.
    """

    _BULK = frozenset({"outline", "registry", "verification", "verification_progress"})

    def __init__(self) -> None:
        self._last: _Seen | None = None
        self._offered: _Seen | None = None

    def checkpoint(self, state: RunState, step: int) -> dict[str, Any] | StateChanges:
        """The checkpoint of `step` for the journal; `recorded` says it was written."""
        seen = self._offered = self._see(state, step)
        last = self._last
        if seen is None or last is None or not seen.continues(last):
            return state.snapshot()
        assert state.verification is not None
        values = {
            pointer: value
            for pointer, value in seen.fields.items()
            if pointer not in last.fields or last.fields[pointer] != value
        }
        for index, (now, before) in enumerate(zip(seen.checks, last.checks, strict=True)):
            if now != before:
                check = state.verification.sentences[index]
                values[f"/verification/sentences/{index}"] = check.model_dump(mode="json")
        return StateChanges(last.step, values)

    def recorded(self) -> None:
        self._last, self._offered = self._offered, None

    def _see(self, state: RunState, step: int) -> _Seen | None:
        verification, progress = state.verification, state.verification_progress
        if verification is None or progress is None:
            return None
        fields = {
            f"/{name}": value
            for name, value in state.model_dump(mode="json", exclude=set(self._BULK)).items()
        }
        for name, value in verification.model_dump(mode="json", exclude={"sentences"}).items():
            fields[f"/verification/{name}"] = value
        for name, value in progress.model_dump(mode="json", exclude={"spans"}).items():
            fields[f"/verification_progress/{name}"] = value
        # A check's field values, as they are now: a changed field holds a new value (every
        # field is a string or a list that is never changed in place), so comparing these tuples
        # finds the checks a step changed.
        checks = [tuple(vars(check).values()) for check in verification.sentences]
        return _Seen(step, fields, checks, (state.outline, state.registry, progress.spans))


@dataclass(frozen=True)
class _Seen:
    """What `PassCheckpoints` compares between two steps."""

    step: int
    fields: dict[str, Any]
    checks: list[tuple[object, ...]]
    bulk: tuple[object, ...]
    """The parts a verification step leaves alone, by identity: a new object means a whole checkpoint."""

    def continues(self, last: _Seen) -> bool:
        return len(self.checks) == len(last.checks) and all(
            now is before for now, before in zip(self.bulk, last.bulk, strict=True)
        )
