"""Exports: one `ReportDocument`, many formats.

    export(document, "html", path)       write one format (atomically: a temporary file, then rename)
    FORMATS                              format → file name suffix

Each format lives in its own module with a `render(document)` that returns text or bytes, so
nothing is written until the whole file exists, and a failed export never leaves half a file or
clobbers a good one. Modules with heavy or optional dependencies (WeasyPrint, python-docx) are
imported only when their format is asked for.
"""

from __future__ import annotations

from pathlib import Path

from deepdraft.errors import ConfigError, UserError
from deepdraft.export.document import ReportDocument
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


__all__ = ["FORMATS", "default_name", "export", "render", "write_atomically"]
