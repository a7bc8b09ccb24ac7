"""A finished run's report as a `ReportDocument`, rebuilt from the journal and the run folder.

What `deepdraft export` and the server's report formats read. It lives with the runs, not with the
exporters: the exporters render a document and know nothing of journals or run folders.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, cast

from deepdraft.core.state import RunState
from deepdraft.errors import ConfigError, StoreError, UserError
from deepdraft.export.document import ReportDocument, build_document
from deepdraft.export.report import STYLES, CitationStyle
from deepdraft.run import runner
from deepdraft.run.manifest import build_manifest


def load_run_document(run_id: str, *, style: CitationStyle | None = None) -> ReportDocument:
    """The document of a finished run, from the journal's last checkpoint and its manifest.

    The manifest written when the run finished (`manifest.json` in the run folder) is used when it
    is there; otherwise one is rebuilt from the journal, without the KB's document list (that
    needs the knowledge base itself). `style` overrides the references style the run used.
    """
    from deepdraft.run import runner

    with runner.open_journal() as journal:
        record = journal.get_run(run_id)
        if record.status != "finished":
            status = runner_status(record.id, record.status)
            hint = (
                f"; continue it with: deepdraft resume {record.id}"
                if status in ("interrupted", "failed")
                else ""
            )
            raise UserError(
                f"run {record.id} is not finished (it is {status}), so it has no report yet{hint}"
            )
        checkpoint = journal.latest_checkpoint(record.id)
        if checkpoint is None:
            raise StoreError(f"run {record.id} is marked finished but the journal has no checkpoint of it")
        state = RunState.restore(checkpoint[1])
        manifest = _stored_manifest(runner.run_dir(record.id) / "manifest.json")
        if manifest is None:
            stored = record.settings.get("settings", {})
            manifest = build_manifest(
                run_id=record.id,
                question=record.question,
                settings=stored,
                model=str(record.settings.get("model", "")),
                state=state,
                steps=journal.steps(record.id),
                events=journal.events(record.id),
                kb=record.settings.get("kb"),
                fingerprint=record.settings.get("corpus_fingerprint"),
                created_at=record.created_at,
                finished_at=record.updated_at,
            )
    # The recorded settings are read as plain data: a run from an older version may hold keys
    # today's Settings no longer accepts, and an export must still work for it.
    recorded = record.settings.get("settings") or {}
    chosen = style or recorded.get("output", {}).get("references_style") or "numbered"
    if chosen not in STYLES:
        raise ConfigError(f"unknown references style {chosen!r}; use one of {', '.join(STYLES)}")
    language = recorded.get("research", {}).get("language")
    if state.outline is None:
        raise StoreError(f"run {record.id} is marked finished but its last checkpoint has no outline")
    return build_document(
        state, run_id=record.id, manifest=manifest, style=cast(CitationStyle, chosen), language=language
    )


def runner_status(run_id: str, recorded: str) -> str:
    """A run recorded as running whose process is gone is really interrupted."""
    return "interrupted" if recorded == "running" and not runner.is_active(run_id) else recorded


def _stored_manifest(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
