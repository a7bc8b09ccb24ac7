"""CSL-JSON export: the cited sources as an array of CSL items (Zotero, Pandoc, citeproc read it).

Items are in References order, and their ids are the BibTeX keys, so a document can cite the same
source by the same key in either format. A source with a URL is a `webpage`; a local file is a
`document` whose path goes in `source`.
"""

from __future__ import annotations

import json
from typing import Any

from deepdraft.export.bibtex import citation_keys
from deepdraft.export.document import ReportDocument


def render(document: ReportDocument) -> str:
    return json.dumps(items(document), indent=2, ensure_ascii=False) + "\n"


def items(document: ReportDocument) -> list[dict[str, Any]]:
    keys = citation_keys(document)
    out: list[dict[str, Any]] = []
    for entry in document.references:
        item: dict[str, Any] = {
            "id": keys[entry.doc_id],
            "type": "webpage" if entry.url else "document",
            "title": " ".join(entry.title.split()) or entry.location,
        }
        if entry.url:
            item["URL"] = entry.url
        else:
            item["source"] = entry.location
        if entry.year and entry.year[:4].isdigit():
            item["issued"] = {"date-parts": [[int(entry.year[:4])]]}
        if entry.pages:
            item["note"] = "pages cited: " + ", ".join(str(page) for page in entry.pages)
        out.append(item)
    return out
