"""Markdown export: the default layout, or the user's Jinja2 template.

Without a template the document's own Markdown is written (`report.assemble_markdown`). A template
gets the parts and lays them out itself; the variables are documented in docs/exports.md:

    title, question, language, style, summary, conclusion   strings ("" when absent)
    sections     list of {number, position, level, title, heading, body, written}, document order
    references   list of {number, label, line, title, location, url, year, pages}
    labels       {summary, conclusion, references, about, question, contents}: headings in the
                 report's language
    manifest     the manifest (KB documents cut to the cited ones)
    about        the default collapsed "About this report" block
    markdown     the whole default rendering, for templates that only add a frame around it

Undefined variables are errors (StrictUndefined): a typo in a template fails loudly with the line
it is on, instead of leaving a silent blank in the report. The template is trusted input (the
user's own file), so it runs in an ordinary, not a sandboxed, Jinja environment.
"""

from __future__ import annotations

import traceback
from dataclasses import asdict
from pathlib import Path
from typing import Any

from deepdraft.errors import ConfigError
from deepdraft.export.document import ReportDocument
from deepdraft.export.report import about_markdown


def render(document: ReportDocument, template: Path | None = None) -> str:
    if template is None:
        return document.markdown
    return render_template(template, template_variables(document))


def template_variables(document: ReportDocument) -> dict[str, Any]:
    manifest = document.readers_manifest()
    labels = asdict(document.rendered.labels)
    return {
        "title": document.title,
        "question": document.question,
        "language": document.language,
        "style": document.style,
        "summary": document.summary.markdown if document.summary else "",
        "conclusion": document.conclusion.markdown if document.conclusion else "",
        "sections": [
            {
                "number": section.number,
                "position": section.position,
                "level": section.level,
                "title": section.title,
                "heading": section.heading,
                "body": section.markdown,
                "written": section.written,
            }
            for section in document.walk()
        ],
        "references": [
            {
                "number": entry.number,
                "label": entry.label,
                "line": entry.line,
                "title": entry.title,
                "location": entry.location,
                "url": entry.url,
                "year": entry.year,
                "pages": list(entry.pages),
            }
            for entry in document.references
        ],
        "labels": labels,
        "manifest": manifest,
        "about": about_markdown(manifest, document.rendered.labels) if manifest else "",
        "markdown": document.markdown,
    }


def render_template(path: Path, variables: dict[str, Any]) -> str:
    """Render the Jinja2 template at `path`; any problem is a `ConfigError` naming file and line."""
    import jinja2

    path = path.expanduser()
    if not path.is_file():
        raise ConfigError(f"report template not found: {path}")
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(path.parent)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,  # the output is Markdown, not HTML
    )
    try:
        template = environment.get_template(path.name)
    except UnicodeDecodeError as exc:
        raise ConfigError(f"report template {path} is not UTF-8 text ({exc.reason})") from exc
    except jinja2.TemplateSyntaxError as exc:
        raise ConfigError(f"report template {path}, line {exc.lineno}: {exc.message}") from exc
    try:
        text = template.render(**variables)
    except jinja2.TemplateError as exc:
        line = _template_line(exc, path)
        where = f", line {line}" if line else ""
        raise ConfigError(f"report template {path}{where}: {exc}") from exc
    return text if text.endswith("\n") else text + "\n"


def _template_line(exc: BaseException, path: Path) -> int | None:
    """The template line an error was raised on: Jinja maps its frames back to the template file."""
    resolved = str(path.resolve())
    lines = [
        frame.lineno
        for frame in traceback.extract_tb(exc.__traceback__)
        if frame.filename and Path(frame.filename).resolve().as_posix() == Path(resolved).as_posix()
    ]
    return lines[-1] if lines else None
