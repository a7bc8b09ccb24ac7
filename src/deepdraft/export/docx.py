"""DOCX export: a Word document with real heading styles, a table of contents and References.

Sections use Word's built-in "Heading 1–3" styles (so Word's navigation pane, outline view and
TOC work), and a genuine TOC field (`TOC \\o "1-3" \\h \\z \\u`) sits after the title. python-docx
cannot lay out pages, so the field holds a one-line placeholder and the document asks Word to
update fields when it is opened (`w:updateFields`); LibreOffice updates it from Tools ▸ Update.

Bodies are Markdown; they are converted block by block through markdown-it-py's token stream:
paragraphs with bold, italic, strikethrough, inline code and line breaks; bullet and numbered
lists (nested up to three levels); block quotes; code blocks in a monospaced font; tables; and
inner headings one level below their section. Citations are text (`[3, p. 12]`): Word has no
notion of a link to a References entry that survives editing as well as plain text does.
"""

from __future__ import annotations

import io
from typing import Any

from docx import Document as new_document
from docx.document import Document
from docx.oxml import OxmlElement
from docx.oxml.ns import qn
from docx.shared import Pt
from docx.text.paragraph import Paragraph
from markdown_it import MarkdownIt
from markdown_it.token import Token

from deepdraft.export.document import ReportDocument, Section
from deepdraft.export.facts import readable_facts

TOC_INSTRUCTION = ' TOC \\o "1-3" \\h \\z \\u '
_MONOSPACE = "Courier New"
_MAX_HEADING = 9


def render(document: ReportDocument) -> bytes:
    word = new_document()
    labels = document.rendered.labels
    properties = word.core_properties
    properties.title = document.title
    properties.subject = document.question
    properties.comments = f"Written by deepdraft {document.manifest.get('deepdraft', '')}".strip()
    properties.language = document.language

    word.add_heading(document.title, level=0)
    question = word.add_paragraph()
    question.add_run(f"{labels.question}: ").bold = True
    question.add_run(document.question).italic = True
    contents = word.add_paragraph()
    contents.add_run(labels.contents).bold = True
    _add_toc(word)

    writer = _MarkdownWriter(word)
    if document.summary:
        word.add_heading(labels.summary, level=1)
        writer.write(document.summary.markdown, base_level=1)
    for section in document.sections:
        _add_section(word, writer, section)
    if document.conclusion:
        word.add_heading(labels.conclusion, level=1)
        writer.write(document.conclusion.markdown, base_level=1)
    if document.references:
        word.add_heading(labels.references, level=1)
        for entry in document.references:
            paragraph = word.add_paragraph()
            paragraph.paragraph_format.left_indent = Pt(24)
            paragraph.paragraph_format.first_line_indent = Pt(-24)
            paragraph.add_run(entry.line.removeprefix("- ").replace("`", ""))
    manifest = document.readers_manifest()
    if manifest:
        word.add_heading(labels.about, level=1)
        for name, value in readable_facts(manifest):
            paragraph = word.add_paragraph()
            paragraph.add_run(f"{name}: ").bold = True
            paragraph.add_run(value)
        if document.constraints:
            table = word.add_table(rows=0, cols=4)
            table.style = "Table Grid"
            for check in document.constraints:
                cells = table.add_row().cells
                values = (
                    check.get("name"),
                    check.get("requirement"),
                    check.get("satisfied"),
                    check.get("detail"),
                )
                for cell, field in zip(cells, values, strict=True):
                    cell.text = ("✓" if field else "✗") if isinstance(field, bool) else str(field or "")

    buffer = io.BytesIO()
    word.save(buffer)
    return buffer.getvalue()


def _add_section(word: Document, writer: _MarkdownWriter, section: Section) -> None:
    word.add_heading(f"{section.number} {section.title}", level=min(_MAX_HEADING, section.level))
    writer.write(section.markdown, base_level=section.level)
    for child in section.children:
        _add_section(word, writer, child)


def _add_toc(word: Document) -> None:
    """A TOC field Word fills in when the document is opened."""
    paragraph = word.add_paragraph()
    begin = OxmlElement("w:fldChar")
    begin.set(qn("w:fldCharType"), "begin")
    begin.set(qn("w:dirty"), "true")
    instruction = OxmlElement("w:instrText")
    instruction.set(qn("xml:space"), "preserve")
    instruction.text = TOC_INSTRUCTION
    separate = OxmlElement("w:fldChar")
    separate.set(qn("w:fldCharType"), "separate")
    end = OxmlElement("w:fldChar")
    end.set(qn("w:fldCharType"), "end")
    paragraph.add_run()._r.append(begin)
    paragraph.add_run()._r.append(instruction)
    paragraph.add_run()._r.append(separate)
    paragraph.add_run("The table of contents appears when the fields are updated (Word does it on opening).")
    paragraph.add_run()._r.append(end)
    settings = word.settings.element
    update = OxmlElement("w:updateFields")
    update.set(qn("w:val"), "true")
    settings.append(update)


class _MarkdownWriter:
    """Appends Markdown blocks to a Word document."""

    def __init__(self, word: Document) -> None:
        self.word = word
        self.parser = MarkdownIt("commonmark", {"html": False}).enable(["table", "strikethrough"])
        self.parser.disable("image")

    def write(self, markdown: str, base_level: int) -> None:
        tokens = self.parser.parse(markdown)
        lists: list[str] = []
        quote = 0
        index = 0
        while index < len(tokens):
            token = tokens[index]
            if token.type in ("bullet_list_open", "ordered_list_open"):
                lists.append("List Bullet" if token.type == "bullet_list_open" else "List Number")
            elif token.type in ("bullet_list_close", "ordered_list_close"):
                lists.pop()
            elif token.type == "blockquote_open":
                quote += 1
            elif token.type == "blockquote_close":
                quote -= 1
            elif token.type == "heading_open":
                level = min(_MAX_HEADING, max(base_level + 1, int(token.tag[1:]) - 1))
                paragraph = self.word.add_heading(level=level)
                self._inline(paragraph, tokens[index + 1])
                index += 2
            elif token.type == "paragraph_open":
                paragraph = self.word.add_paragraph(style=self._paragraph_style(lists, quote))
                self._inline(paragraph, tokens[index + 1])
                index += 2
            elif token.type in ("fence", "code_block"):
                self._code(token.content)
            elif token.type == "table_open":
                index = self._table(tokens, index)
            index += 1

    def _paragraph_style(self, lists: list[str], quote: int) -> str | None:
        if lists:
            depth = min(len(lists), 3)
            return lists[-1] if depth == 1 else f"{lists[-1]} {depth}"
        return "Quote" if quote else None

    def _inline(self, paragraph: Paragraph, token: Token) -> None:
        bold = italic = strike = False
        for child in token.children or []:
            kind = child.type
            if kind == "strong_open":
                bold = True
            elif kind == "strong_close":
                bold = False
            elif kind == "em_open":
                italic = True
            elif kind == "em_close":
                italic = False
            elif kind == "s_open":
                strike = True
            elif kind == "s_close":
                strike = False
            elif kind == "softbreak":
                paragraph.add_run(" ")
            elif kind == "hardbreak":
                paragraph.add_run().add_break()
            elif kind in ("text", "code_inline"):
                run = paragraph.add_run(child.content)
                run.bold, run.italic, run.font.strike = bold or None, italic or None, strike or None
                if kind == "code_inline":
                    run.font.name = _MONOSPACE

    def _code(self, text: str) -> None:
        paragraph = self.word.add_paragraph()
        for number, line in enumerate(text.rstrip("\n").split("\n")):
            if number:
                paragraph.add_run().add_break()
            run = paragraph.add_run(line)
            run.font.name = _MONOSPACE
            run.font.size = Pt(9)

    def _table(self, tokens: list[Token], start: int) -> int:
        """Add the table that opens at `start`; returns the index of its closing token."""
        rows: list[list[Token]] = []
        index = start
        while tokens[index].type != "table_close":
            token = tokens[index]
            if token.type == "tr_open":
                rows.append([])
            elif token.type == "inline" and rows:
                rows[-1].append(token)
            index += 1
        columns = max((len(row) for row in rows), default=0)
        if columns:
            table: Any = self.word.add_table(rows=len(rows), cols=columns)
            table.style = "Table Grid"
            for r, row in enumerate(rows):
                for c, cell in enumerate(row):
                    paragraph = table.cell(r, c).paragraphs[0]
                    self._inline(paragraph, cell)
        return index
