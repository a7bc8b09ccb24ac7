"""Which extractor reads a file: the table from file suffix to format and extractor.

An extractor takes the file's bytes and returns `Extracted`: either one flat text (DOCX, EPUB, HTML,
Markdown, plain text) or the text of each numbered page (PDF pages, PPTX slides, XLSX sheets), plus
a title and a URL when the file names them. It raises `Unreadable` with one line for the user when
the file cannot be used. Assembling a `Document` (ids, page offsets, hashes) is `corpus.py`'s job;
each family of formats is read in its own module under `formats/`.

The text is Markdown-ish on purpose: headings a format marks as such (DOCX heading styles, slide
titles, sheet names, HTML ``<h1>``–``<h6>``) become ``#`` lines, so the chunker can keep the heading
path of every passage without knowing any format. Body lines that would read as Markdown headings or
code fences are escaped with a backslash, so that a paragraph starting with "#" stays a paragraph.

Trade-offs shared by every format (each format's own are in its module):

* The parsers (pypdf, python-docx, python-pptx, openpyxl, trafilatura) are the optional
  ``documents`` extra and are imported only when a file of their format is read; without them that
  format fails with the install command, and text formats still work.
* Every zip-based format (DOCX, PPTX, XLSX, EPUB) is inflated once through `verify_archive` before
  its library opens it, so an archive bomb is refused after at most the limits' worth of counting,
  and every format's text is bounded by `DocumentLimits.max_document_chars`, counted as it is
  extracted so that extraction stops at the limit instead of finishing first (see `limits.py`).
* XML entity expansion ("billion laughs") needs no guard of ours: python-docx and python-pptx
  parse with ``resolve_entities=False``, openpyxl likewise (and with defusedxml when installed),
  `xml.etree` runs on expat, which refuses entity amplification since 2.4, libxml2 (lxml) refuses it
  too, and lxml's HTML parser (EPUB chapters, HTML) never expands declared entities. None of them
  loads external entities. `tests/retrieval/test_archive_limits.py` keeps that true.
"""

from __future__ import annotations

from deepdraft.retrieval.documents.formats.extracted import Extractor
from deepdraft.retrieval.documents.formats.markup import extract_epub, extract_html
from deepdraft.retrieval.documents.formats.office import extract_docx, extract_pptx, extract_xlsx
from deepdraft.retrieval.documents.formats.pdf import extract_pdf
from deepdraft.retrieval.documents.formats.text import extract_text

# Suffix → (format name, extractor). JSONL is not here: it holds many documents and is streamed.
EXTRACTORS: dict[str, tuple[str, Extractor]] = {
    ".pdf": ("pdf", extract_pdf),
    ".docx": ("docx", extract_docx),
    ".pptx": ("pptx", extract_pptx),
    ".xlsx": ("xlsx", extract_xlsx),
    ".xlsm": ("xlsx", extract_xlsx),
    ".epub": ("epub", extract_epub),
    ".html": ("html", extract_html),
    ".htm": ("html", extract_html),
    ".xhtml": ("html", extract_html),
    ".md": ("markdown", extract_text),
    ".markdown": ("markdown", extract_text),
    ".txt": ("text", extract_text),
    ".text": ("text", extract_text),
    ".rst": ("text", extract_text),
}

CONVERT_HINTS: dict[str, str] = {
    ".doc": "save it as .docx",
    ".ppt": "save it as .pptx",
    ".xls": "save it as .xlsx",
    ".odt": "save it as .docx or PDF",
    ".odp": "save it as .pptx or PDF",
    ".ods": "save it as .xlsx",
    ".rtf": "save it as .docx or PDF",
    ".mobi": "convert it to EPUB",
    ".azw3": "convert it to EPUB",
}
"""For formats people often have: what to do instead (shown with "unsupported format")."""
