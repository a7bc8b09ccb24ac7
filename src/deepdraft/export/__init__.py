"""Exports: one `ReportDocument`, many formats.

    export(document, "html", path)       write one format (atomically: a temporary file, then rename)
    FORMATS                              format → file name suffix
    load_run_document(run_id)            the document of a finished run, rebuilt from the journal

Each format lives in its own module with a `render(document)` that returns text or bytes, so
nothing is written until the whole file exists, and a failed export never leaves half a file or
clobbers a good one. Modules with heavy or optional dependencies (WeasyPrint, python-docx) are
imported only when their format is asked for.
"""

from __future__ import annotations

import json as _json  # aliased: `json` here names this package's JSON exporter
from pathlib import Path
from typing import Any, cast

from deepdraft.errors import ConfigError, StoreError, UserError
from deepdraft.export.document import ReportDocument, build_document
from deepdraft.export.report import STYLES, CitationStyle
from deepdraft.fsutil import atomic_write_bytes

FORMATS: dict[str, str] = {
    "md": ".md",
    "html": ".html",
    "pdf": ".pdf",
    "docx": ".docx",
    "json": ".json",
    "bibtex": ".bib",
    "csl": ".csl.json",
}


def render(document: ReportDocument, fmt: str, *, template: Path | None = None) -> bytes:
    """The file's content. `template` (a Jinja2 file) applies to Markdown only."""
    if fmt == "md":
        from deepdraft.export import markdown

        return markdown.render(document, template).encode("utf-8")
    if fmt == "html":
        from deepdraft.export import html

        return html.render(document).encode("utf-8")
    if fmt == "pdf":
        from deepdraft.export import pdf

        return pdf.render(document)
    if fmt == "docx":
        from deepdraft.export import docx

        return docx.render(document)
    if fmt == "json":
        from deepdraft.export import json as json_export

        return json_export.render(document).encode("utf-8")
    if fmt == "bibtex":
        from deepdraft.export import bibtex

        return bibtex.render(document).encode("utf-8")
    if fmt == "csl":
        from deepdraft.export import csl

        return csl.render(document).encode("utf-8")
    raise ConfigError(f"unknown export format {fmt!r}; use one of {', '.join(FORMATS)}")


def export(document: ReportDocument, fmt: str, path: Path, *, template: Path | None = None) -> Path:
    """Render `document` as `fmt` into `path`, replacing any file there atomically."""
    write_atomically(path, render(document, fmt, template=template))
    return path


def default_name(fmt: str) -> str:
    """The file name a format gets in a run folder: report.html, report.bib, …"""
    return "report" + FORMATS[fmt]


def write_atomically(path: Path, content: bytes) -> None:
    """Write `content` to `path` (creating its folder) so readers see the old or the new file.

    `deepdraft.fsutil.atomic_write_bytes` does the work; this adds the user-facing errors.
    """
    path = path.expanduser()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, content)
    except IsADirectoryError as exc:
        raise UserError(f"cannot write {path}: it is a folder; give a file name") from exc
    except OSError as exc:
        raise UserError(f"cannot write {path}: {exc.strerror or exc}") from exc


def load_run_document(run_id: str, *, style: CitationStyle | None = None) -> ReportDocument:
    """The document of a finished run, from the journal's last checkpoint and its manifest.

    The manifest written when the run finished (`manifest.json` in the run folder) is used when it
    is there; otherwise one is rebuilt from the journal, without the KB's document list (that
    needs the knowledge base itself). `style` overrides the references style the run used.
    """
    from deepdraft.core.state import RunState
    from deepdraft.run import runner
    from deepdraft.run.manifest import build_manifest

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
    from deepdraft.run import runner

    return "interrupted" if recorded == "running" and not runner.is_active(run_id) else recorded


def _stored_manifest(path: Path) -> dict[str, Any] | None:
    try:
        data = _json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


__all__ = ["FORMATS", "default_name", "export", "load_run_document", "render", "write_atomically"]
