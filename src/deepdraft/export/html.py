"""HTML export: one self-contained, styled file with clickable citations.

Everything is inline (CSS, no scripts, no fonts, no images), so the file opens the same anywhere,
offline, and can be mailed or archived on its own. Layout: title and question, a table of
contents, the summary, the numbered sections, the conclusion, the References, and the manifest in
a collapsed `<details>`. Each citation links to its References entry (`#ref-3`) and each entry
links back to every place that cites it.

Citation marks are drawn here, not parsed out of Markdown: bodies are rendered from their raw
`\\cite{key}` form with a private-use placeholder per citation, converted by markdown-it-py, and
the placeholders then become links. So a literal "[3]" the model wrote is never mistaken for a
citation, and a citation inside emphasis or a list item still becomes a link.

Model-written Markdown is untrusted: raw HTML in it is escaped (markdown-it's `html` option is
off), `javascript:` links are refused by markdown-it's link validation, and images are disabled,
because an image would be an external resource (and a tracking pixel).

The same HTML feeds the PDF export; the `@page` rules below only matter there.
"""

from __future__ import annotations

import html
import json
import re

from markdown_it import MarkdownIt

from deepdraft.export.document import ReportDocument, Section
from deepdraft.export.facts import readable_facts
from deepdraft.export.report import Citation

_PLACEHOLDER = re.compile("\ue000(\\d+)\ue001")

_CSS = """
:root { --ink: #1d1f23; --muted: #5c6370; --rule: #d9dce1; --accent: #1f5fae; --paper: #fff; }
* { box-sizing: border-box; }
html { -webkit-text-size-adjust: 100%; }
body {
  margin: 0; background: var(--paper); color: var(--ink);
  font-family: "Charter", "Iowan Old Style", "Palatino Linotype", "Georgia", "Noto Serif",
    "Noto Serif CJK SC", "Source Han Serif SC", "Songti SC", "SimSun", serif;
  font-size: 1.0625rem; line-height: 1.65;
}
main { max-width: 46rem; margin: 0 auto; padding: 2.5rem 1.25rem 4rem; }
:lang(zh) body, body:lang(zh) {
  font-family: "Noto Sans CJK SC", "Source Han Sans SC", "PingFang SC", "Hiragino Sans GB",
    "Microsoft YaHei", "WenQuanYi Micro Hei", "Helvetica Neue", Arial, sans-serif;
  line-height: 1.8;
}
h1, h2, h3, h4, h5, h6 { line-height: 1.3; font-weight: 600; margin: 2rem 0 0.75rem; }
h1 { font-size: 2rem; margin-top: 0; }
h2 { font-size: 1.5rem; border-bottom: 1px solid var(--rule); padding-bottom: 0.25rem; }
h3 { font-size: 1.25rem; } h4 { font-size: 1.1rem; } h5, h6 { font-size: 1rem; }
p, ul, ol, blockquote, table, pre { margin: 0 0 1rem; }
a { color: var(--accent); text-decoration: none; }
a:hover, a:focus { text-decoration: underline; }
.question { color: var(--muted); font-style: italic; }
nav.toc {
  border: 1px solid var(--rule); border-radius: 6px; padding: 0.75rem 1.25rem; margin: 1.5rem 0 2rem;
}
nav.toc h2 { font-size: 1rem; border: 0; margin: 0 0 0.5rem; padding: 0; }
nav.toc ol { margin: 0; padding-left: 1.25rem; list-style: none; }
nav.toc > ol { padding-left: 0; }
nav.toc li { margin: 0.15rem 0; }
.cite { font-size: 0.92em; white-space: nowrap; }
.cite a { font-variant-numeric: tabular-nums; }
ol.references { padding-left: 0; list-style: none; }
ol.references li { margin: 0 0 0.6rem; padding-left: 2.5rem; text-indent: -2.5rem; }
ol.references li:target { background: #fff6d6; }
.ref-number { display: inline-block; min-width: 2.5rem; text-indent: 0; color: var(--muted); }
.backlinks { font-size: 0.85em; margin-left: 0.35rem; }
.location { word-break: break-all; }
.unwritten { color: var(--muted); }
blockquote { border-left: 3px solid var(--rule); margin-left: 0; padding-left: 1rem; color: var(--muted); }
code, pre { font-family: "SFMono-Regular", "DejaVu Sans Mono", Menlo, Consolas, monospace; font-size: 0.9em; }
pre { background: #f6f7f9; padding: 0.75rem; overflow-x: auto; border-radius: 4px; white-space: pre-wrap; }
table { border-collapse: collapse; width: 100%; }
th, td { border: 1px solid var(--rule); padding: 0.35rem 0.5rem; text-align: left; vertical-align: top; }
details.about {
  margin-top: 3rem; border-top: 1px solid var(--rule); padding-top: 1rem; color: var(--muted);
}
details.about summary { cursor: pointer; font-weight: 600; }
details.about dl {
  display: grid; grid-template-columns: max-content 1fr; gap: 0.2rem 1rem; font-size: 0.92em;
}
details.about dt { font-weight: 600; } details.about dd { margin: 0; }
@page {
  size: A4; margin: 2cm 2cm 2.2cm;
  @bottom-center { content: counter(page); color: #888; font-size: 9pt; }
}
@media print {
  main { max-width: none; padding: 0; }
  body { font-size: 11pt; }
  a { color: inherit; }
  h2, h3, h4 { break-after: avoid; }
  details.about { break-before: page; }
}
"""


def render(document: ReportDocument) -> str:
    """The whole report as one HTML document (a string)."""
    return _Renderer(document).render()


class _Renderer:
    def __init__(self, document: ReportDocument) -> None:
        self.document = document
        self.labels = document.rendered.labels
        bibliography = document.rendered.bibliography
        assert bibliography is not None
        self.bibliography = bibliography
        self.markdown = MarkdownIt("commonmark", {"html": False}).enable(["table", "strikethrough"])
        self.markdown.disable("image")
        self.backlinks: dict[int, list[str]] = {}

    def render(self) -> str:
        document = self.document
        parts = [
            f"<header><h1>{_text(document.title)}</h1>",
            f'<p class="question">{_text(self.labels.question)}: {_text(document.question)}</p></header>',
            self._toc(),
        ]
        if document.summary:
            parts.append(self._block("summary", self.labels.summary, document.summary.source))
        parts += [self._section(section) for section in document.sections]
        if document.conclusion:
            parts.append(self._block("conclusion", self.labels.conclusion, document.conclusion.source))
        parts.append(self._references())
        parts.append(self._about())
        body = "\n".join(part for part in parts if part)
        version = document.manifest.get("deepdraft", "")
        return (
            "<!DOCTYPE html>\n"
            f'<html lang="{document.language}">\n<head>\n<meta charset="utf-8">\n'
            '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f'<meta name="generator" content="deepdraft {_attr(str(version))}">\n'
            f"<title>{_text(document.title)}</title>\n<style>{_CSS}</style>\n</head>\n"
            f"<body>\n<main>\n<article>\n{body}\n</article>\n</main>\n</body>\n</html>\n"
        )

    # ---- parts -----------------------------------------------------------------------------------

    def _toc(self) -> str:
        document = self.document
        items = []
        if document.summary:
            items.append(_toc_item("summary", self.labels.summary))
        items += [self._toc_section(section) for section in document.sections]
        if document.conclusion:
            items.append(_toc_item("conclusion", self.labels.conclusion))
        if document.references:
            items.append(_toc_item("references", self.labels.references))
        return (
            '<nav class="toc" aria-labelledby="toc-title">'
            f'<h2 id="toc-title">{_text(self.labels.contents)}</h2><ol>{"".join(items)}</ol></nav>'
        )

    def _toc_section(self, section: Section) -> str:
        children = "".join(self._toc_section(child) for child in section.children)
        nested = f"<ol>{children}</ol>" if children else ""
        return _toc_item(section.position, f"{section.number} {section.title}", nested)

    def _block(self, anchor: str, heading: str, source: str) -> str:
        return f'<section id="{anchor}"><h2>{_text(heading)}</h2>\n{self._prose(source)}</section>'

    def _section(self, section: Section) -> str:
        level = min(6, section.level + 1)
        heading = (
            f'<h{level}><span class="number">{_text(section.number)}</span> {_text(section.title)}</h{level}>'
        )
        if section.written:
            body = self._prose(section.source)
        else:
            body = f'<div class="unwritten">{self.markdown.render(section.markdown)}</div>'
        children = "\n".join(self._section(child) for child in section.children)
        return f'<section id="{_attr(section.position)}">{heading}\n{body}{children}</section>'

    def _prose(self, source: str) -> str:
        """Markdown with `\\cite{}`s → HTML with citation links."""
        citations: list[Citation] = []

        def placeholder(citation: Citation) -> str:
            citations.append(citation)
            return f"\ue000{len(citations) - 1}\ue001"

        rendered = self.markdown.render(self.bibliography.resolve(source, mark=placeholder))
        return _PLACEHOLDER.sub(lambda match: self._citation(citations[int(match.group(1))]), rendered)

    def _citation(self, citation: Citation) -> str:
        pieces = []
        for reference, pages in citation.refs:
            uses = self.backlinks.setdefault(reference.number, [])
            anchor = f"cite-{reference.number}-{len(uses) + 1}"
            uses.append(anchor)
            text = reference.label if self.bibliography.style == "author-date" else str(reference.number)
            page_text = ""
            if pages:
                label = "p." if len(pages) == 1 else "pp."
                page_text = f", {label} {', '.join(str(page) for page in pages)}"
            pieces.append(
                f'<a id="{anchor}" href="#ref-{reference.number}" role="doc-noteref">{_text(text)}</a>'
                f"{_text(page_text)}"
            )
        if self.bibliography.style == "author-date":
            return f'<span class="cite">({"; ".join(pieces)})</span>'
        joiner = "; " if any(pages for _, pages in citation.refs) else ", "
        return f'<span class="cite">[{joiner.join(pieces)}]</span>'

    def _references(self) -> str:
        if not self.document.references:
            return ""
        style = self.bibliography.style
        items = []
        for entry, reference in zip(self.document.references, self.document.rendered.references, strict=True):
            number = "" if style == "author-date" else f'<span class="ref-number">[{entry.number}]</span>'
            if entry.url:
                where = f'<a class="location" href="{_attr(entry.url)}">{_text(entry.url)}</a>'
            else:
                where = f'<code class="location">{_text(entry.location)}</code>'
            title = _text(" ".join(entry.title.split()) or entry.location)
            if style == "author-date":
                lead = f"{_text(reference.name)} ({_text(reference.year)})."
                title_part = (
                    "" if " ".join(entry.title.split()).rstrip(".") in ("", reference.name) else f" {title}."
                )
                text = f"{lead}{title_part} {where}"
            else:
                text = f"{title} — {where}"
            if entry.pages:
                label = "p." if len(entry.pages) == 1 else "pp."
                text += f", {label} {', '.join(str(page) for page in entry.pages)}"
            back = "".join(
                f' <a href="#{anchor}" aria-label="back to citation {i}">↩{"" if i == 1 else i}</a>'
                for i, anchor in enumerate(self.backlinks.get(entry.number, []), start=1)
            )
            items.append(
                f'<li id="ref-{entry.number}">{number}{text}<span class="backlinks">{back}</span></li>'
            )
        return (
            f'<section id="references"><h2>{_text(self.labels.references)}</h2>'
            f'<ol class="references">{"".join(items)}</ol></section>'
        )

    def _about(self) -> str:
        manifest = self.document.readers_manifest()
        if not manifest:
            return ""
        facts = "".join(
            f"<dt>{_text(name)}</dt><dd>{_text(value)}</dd>" for name, value in readable_facts(manifest)
        )
        constraints = ""
        if self.document.constraints:
            rows = "".join(
                "<tr>"
                + "".join(f"<td>{_text(str(check.get(name) or ''))}</td>" for name in ("name", "requirement"))
                + f"<td>{'✓' if check.get('satisfied') else '✗'}</td>"
                + f"<td>{_text(str(check.get('detail') or ''))}</td></tr>"
                for check in self.document.constraints
            )
            constraints = f"<table><tbody>{rows}</tbody></table>"
        data = json.dumps(manifest, indent=2, ensure_ascii=False)
        return (
            f'<details class="about" id="about"><summary>{_text(self.labels.about)}</summary>'
            f"<dl>{facts}</dl>{constraints}<pre>{_text(data)}</pre></details>"
        )


def _toc_item(anchor: str, label: str, nested: str = "") -> str:
    return f'<li><a href="#{_attr(anchor)}">{_text(label)}</a>{nested}</li>'


def _text(value: str) -> str:
    return html.escape(value, quote=False)


def _attr(value: str) -> str:
    return html.escape(value, quote=True)
