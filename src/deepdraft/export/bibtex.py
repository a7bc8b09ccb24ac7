"""BibTeX export: one entry per cited source, in References order.

A source with a URL is `@online` (biblatex) with `url`; a local file is `@misc` with
`howpublished = {Local file}` and its path in `note`. Pages cited go in `note` too (`pages` would
claim the source *spans* those pages). Years are written only when the source's metadata has one.

Keys are stable and unique: a slug of the title, the year if known, and four to twelve hex digits
of a hash of the document id, e.g. `annualmessage1790-3f2a`. The same document gets the same key
in every report, whatever else is cited, so a bibliography merged from several reports has no
duplicates. Field values are LaTeX-escaped; titles are double-braced so BibTeX styles keep their
capitalisation. URLs are not escaped (the url field is verbatim) but braces, backslashes and blanks
in them are percent-encoded, since they would unbalance the entry.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

from deepdraft.export.document import ReferenceEntry, ReportDocument

_LATEX_SPECIALS = {
    "\\": r"\textbackslash{}",
    "{": r"\{",
    "}": r"\}",
    "$": r"\$",
    "&": r"\&",
    "%": r"\%",
    "#": r"\#",
    "_": r"\_",
    "^": r"\^{}",
    "~": r"\~{}",
}
_LATEX = re.compile("|".join(re.escape(char) for char in _LATEX_SPECIALS))
_URL_UNSAFE = {"{": "%7B", "}": "%7D", "\\": "%5C", " ": "%20", "\t": "%09", "\n": "%0A"}
_SLUG_WORDS = 3
_SLUG_CHARS = 24


def render(document: ReportDocument) -> str:
    keys = citation_keys(document)
    return "\n".join(_entry(entry, keys[entry.doc_id]) for entry in document.references)


def citation_keys(document: ReportDocument) -> dict[str, str]:
    """doc_id → BibTeX key, for every cited source (see the module docstring)."""
    keys: dict[str, str] = {}
    taken: set[str] = set()
    for entry in document.references:
        digest = hashlib.sha1(entry.doc_id.encode("utf-8")).hexdigest()
        base = _slug(entry.title or entry.location) + (entry.year or "")[:4]
        length = 4
        key = f"{base}-{digest[:length]}"
        while key in taken:  # a hash prefix shared by two documents: lengthen it for this one
            length += 2
            key = f"{base}-{digest[:length]}"
        taken.add(key)
        keys[entry.doc_id] = key
    return keys


def escape_latex(text: str) -> str:
    return _LATEX.sub(lambda match: _LATEX_SPECIALS[match.group(0)], " ".join(text.split()))


def _entry(entry: ReferenceEntry, key: str) -> str:
    fields: list[tuple[str, str]] = [("title", "{" + escape_latex(entry.title or entry.location) + "}")]
    notes = []
    if entry.url:
        kind = "online"
        url = "".join(_URL_UNSAFE.get(char, char) for char in entry.url)
        fields.append(("url", url))
    else:
        kind = "misc"
        fields.append(("howpublished", "Local file"))
        notes.append(escape_latex(entry.location))
    if entry.year and entry.year[:4].isdigit():
        fields.append(("year", entry.year[:4]))
    if entry.pages:
        label = "p." if len(entry.pages) == 1 else "pp."
        notes.append(f"{label}~" + ", ".join(str(page) for page in entry.pages) + " cited")
    if notes:
        fields.append(("note", "; ".join(notes)))
    body = ",\n".join(f"  {name} = {{{value}}}" for name, value in fields)
    return f"@{kind}{{{key},\n{body}\n}}\n"


def _slug(text: str) -> str:
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    words = re.findall(r"[a-z0-9]+", ascii_text.lower())[:_SLUG_WORDS]
    slug = "".join(words)[:_SLUG_CHARS]
    return slug or "source"
