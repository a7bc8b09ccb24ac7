"""Checkpoints as stored: the whole state or the changes since an earlier one, compressed JSON.

A checkpoint's ``encoding`` column says which: ``zlib+json`` holds the whole state,
``zlib+json-changes`` holds `StateChanges` — the values (by JSON pointer) that changed since an
earlier step's checkpoint. Reading one follows the chain back to a whole state and applies the
changes in order.
"""

from __future__ import annotations

import json
import sqlite3
import zlib
from typing import Any

from deepdraft.errors import StoreError
from deepdraft.events import StateChanges

STATE_ENCODING = "zlib+json"
CHANGES_ENCODING = "zlib+json-changes"


def encode_checkpoint(state: dict[str, Any] | StateChanges) -> tuple[str, bytes]:
    """The encoding and the bytes of a checkpoint (`TypeError`/`ValueError` if it is not JSON data)."""
    if isinstance(state, StateChanges):
        return CHANGES_ENCODING, encode_state({"since": state.since, "set": state.values})
    return STATE_ENCODING, encode_state(state)


def encode_state(state: dict[str, Any]) -> bytes:
    """A checkpoint as stored: compressed JSON. No sort_keys: key order in a state may carry
    meaning (e.g. the order sections were added) and must survive a resume."""
    return zlib.compress(json.dumps(state, ensure_ascii=False).encode("utf-8"))


def set_pointer(document: Any, pointer: str, value: Any) -> None:
    """Replace the part of `document` at the JSON pointer `pointer` (RFC 6901) with `value`.

    The part's parent must exist; a list item must exist too (a changed list is replaced whole).
    """
    if not pointer.startswith("/"):
        raise ValueError("a JSON pointer starts with /")
    *parents, last = (part.replace("~1", "/").replace("~0", "~") for part in pointer[1:].split("/"))
    for part in parents:
        document = document[int(part)] if isinstance(document, list) else document[part]
    if isinstance(document, list):
        document[int(last)] = value
    elif isinstance(document, dict):
        document[last] = value
    else:
        raise TypeError(f"{type(document).__name__} has no parts")


def load_state(conn: sqlite3.Connection, run_id: str, step: int) -> dict[str, Any]:
    """The state after `step`: its checkpoint, or the whole one it builds on with every change
    since applied in order."""
    changes: list[tuple[int, list[tuple[str, Any]]]] = []
    at = step
    while True:
        row = conn.execute(
            "SELECT encoding, state FROM checkpoints WHERE run_id = ? AND step = ?", (run_id, at)
        ).fetchone()
        if row is None:
            raise StoreError(f"run {run_id} has no checkpoint for step {at}")
        if row["encoding"] == STATE_ENCODING:
            state = _decode(run_id, at, row["state"])
            break
        if row["encoding"] != CHANGES_ENCODING:
            raise StoreError(f"run {run_id}, step {at}: unknown checkpoint encoding {row['encoding']!r}")
        delta = _decode(run_id, at, row["state"])
        since, values = delta.get("since"), delta.get("set")
        if not isinstance(since, int) or since >= at or not isinstance(values, dict):
            raise StoreError(f"run {run_id}, step {at}: the checkpoint's changes are malformed")
        changes.append((at, list(values.items())))
        at = since
    for at, values in reversed(changes):
        for pointer, value in values:
            try:
                set_pointer(state, pointer, value)
            except (KeyError, IndexError, TypeError, ValueError) as e:
                raise StoreError(
                    f"run {run_id}, step {at}: the checkpoint changes {pointer!r}, "
                    f"which the state it builds on lacks ({e})"
                ) from e
    return state


def _decode(run_id: str, step: int, blob: bytes) -> dict[str, Any]:
    try:
        state = json.loads(zlib.decompress(blob).decode("utf-8"))
    except (zlib.error, UnicodeDecodeError, ValueError) as e:
        raise StoreError(f"run {run_id}, step {step}: the checkpoint is corrupt: {e}") from e
    if not isinstance(state, dict):
        raise StoreError(f"run {run_id}, step {step}: the checkpoint is not a JSON object")
    return state
