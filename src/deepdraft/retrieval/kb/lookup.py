"""A quick look-up in a named knowledge base, and a found passage as plain JSON data.

Both the REST API (`GET /api/kbs/{kb}/search`) and the MCP tool `search_kb` answer with these,
so the two interfaces describe a passage the same way.
"""

from __future__ import annotations

from typing import Any

from deepdraft.core.evidence import Passage
from deepdraft.errors import UserError
from deepdraft.retrieval.kb import names as kbs


def search(kb: str, query: str, k: int) -> list[Passage]:
    """The `k` best passages of the knowledge base named `kb` for `query`, best first."""
    if not query.strip():
        raise UserError("the search query is empty")
    with kbs.open_kb(kbs.validate_kb_name(kb)) as store:
        return store.search(query, k)


def passage_json(passage: Passage) -> dict[str, Any]:
    """A found passage as JSON data: its text, where it is, and its score."""
    return {
        "text": passage.text,
        "title": passage.source.title,
        "location": passage.source.location,
        "doc_id": passage.source.doc_id,
        "page": passage.source.page,
        "score": passage.score,
    }
