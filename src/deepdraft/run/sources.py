"""`deepdraft add-source`: a document added to a finished run's knowledge base, and its passages for
the section it is meant for.

The document goes where the run's own searches look, through the KB's ordinary ingestion
(`KnowledgeBase.add`, the code `deepdraft kb add` runs):

* a named knowledge base (`--kb NAME`): the file is added to it, as `kb add` would;
* a folder of documents (`--kb PATH`): the folder *is* the knowledge base (its index is brought up
  to date from it whenever it is opened), so the file is copied into it — never over a different
  file of the same name;
* a URL, when the run's settings allow the web: the page is fetched as web search fetches pages
  (same address checks and limits, recorded in the run's egress audit) and kept as a one-record
  JSONL file whose document is cited by its URL: in the run folder's `sources/` for a named KB, in
  the folder itself for a folder KB.

Adding is idempotent: a file whose bytes the KB already holds is skipped by the ingestion, so a
command run again after a kill (or the same file added twice) never makes a second document.

`pinned_passages` then picks the document's passages that best match the section (searched within
that document only); the command registers them and shows them to the writer first.
"""

from __future__ import annotations

import filecmp
import hashlib
import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deepdraft.core.evidence import Passage
from deepdraft.core.state import RunState
from deepdraft.egress import EgressLog
from deepdraft.errors import KnowledgeBaseError, UserError
from deepdraft.ports import Retriever
from deepdraft.retrieval.documents.limits import DocumentLimits
from deepdraft.run.wiring import resolve_kb
from deepdraft.settings import Settings

_URL = re.compile(r"^[a-z][a-z0-9+.-]*://", re.IGNORECASE)


@dataclass(frozen=True)
class AddedSource:
    """A document added for a command: the run's KB, opened with it, and its documents there."""

    kb: Retriever
    """The run's knowledge base as the command searches it (the new document included)."""
    doc_ids: tuple[str, ...]
    """The KB documents the file or page gave (one, unless the file holds several)."""
    titles: tuple[str, ...]


def add_source(
    run_id: str,
    kb_ref: str | None,
    source: str,
    settings: Settings,
    folder: Path,
    egress: EgressLog,
    section: str,
) -> AddedSource:
    """Add the file or URL `source` to the run's knowledge base `kb_ref` (as the journal recorded
    it); `UserError` in one line when it cannot be. `folder` is the run folder; a fetched page is
    recorded in `egress`."""
    if kb_ref is None:
        raise UserError(
            f"run {run_id} searched no knowledge base of its own (it was a --web-only run or was given a "
            "retriever object), so there is none to add a document to"
        )
    named = kb_ref.startswith("kb:")
    corpus = None if named else Path(kb_ref)
    if corpus is not None and not corpus.is_dir():
        raise UserError(
            f"run {run_id} searched the corpus file {corpus}; add the document to that file, or start a "
            "run on a named knowledge base (deepdraft kb add) to add documents with add-source"
        )
    copied = False
    if _URL.match(source):
        where = corpus if corpus is not None else folder / "sources"
        file = _fetch_page(run_id, source, settings, where, egress, section)
    else:
        file = _checked_file(source)
        if corpus is not None:
            file, copied = _copy_into(file, corpus)
    if named:
        _add_to_named_kb(kb_ref.removeprefix("kb:"), file, settings)
    kb, _ = resolve_kb(kb_ref, settings)  # a folder KB takes the copied file in as it opens
    listing = list(getattr(kb, "documents", list)())
    doc_ids = _documents_of(listing, file, source if _URL.match(source) else None)
    if not doc_ids:
        if copied:  # not left in the user's folder of documents, where it would block a mended copy
            file.unlink(missing_ok=True)
        raise KnowledgeBaseError(f"{source} gave no readable document for the knowledge base of run {run_id}")
    titles = {row["doc_id"]: str(row.get("title") or row["doc_id"]) for row in listing}
    return AddedSource(kb, tuple(doc_ids), tuple(titles[doc_id] for doc_id in doc_ids))


def _checked_file(source: str) -> Path:
    path = Path(source).expanduser()
    if not path.exists():
        raise UserError(f"no file {path} (add-source takes a file or, when the run allows the web, a URL)")
    if path.is_dir():
        raise UserError(f"{path} is a folder; add-source adds one document (deepdraft kb add adds folders)")
    return path.absolute()


def _copy_into(file: Path, corpus: Path) -> tuple[Path, bool]:
    """`file` in the folder KB `corpus` (copied there unless it already is), and whether this
    copied it; never overwrites."""
    if file.resolve().is_relative_to(corpus.resolve()):
        return file, False
    target = corpus / file.name
    if target.exists():
        if target.is_file() and filecmp.cmp(file, target, shallow=False):
            return target.absolute(), False  # added before (the same command again): nothing to do
        raise UserError(
            f"{target} exists already and differs from {file}; rename your file, or replace the "
            "one in the folder yourself and run deepdraft refresh"
        )
    shutil.copy2(file, target)
    return target.absolute(), True


def _add_to_named_kb(name: str, file: Path, settings: Settings) -> None:
    from deepdraft.retrieval.kb import names as kbs

    retrieval = settings.retrieval
    with kbs.open_kb(name) as kb:
        result = kb.add(
            [file],
            embedding=settings.embedding if settings.embedding.enabled else None,
            max_bytes=int(retrieval.max_file_mb * 1024 * 1024),
            limits=DocumentLimits.from_settings(retrieval),
            ocr=retrieval.ocr,
            wait=True,
        )
    if result.failures and not (
        result.documents_added + result.documents_updated + result.documents_unchanged
    ):
        raise KnowledgeBaseError(
            f"{file} could not be added to knowledge base {name!r}: {result.failures[0].reason}"
        )


def _fetch_page(
    run_id: str, url: str, settings: Settings, where: Path, egress: EgressLog, section: str
) -> Path:
    """The page at `url` as a one-record JSONL file in `where` (its document cited by the URL)."""
    web = settings.web
    if not (web.enabled or web.only):
        raise UserError(
            f"run {run_id} does not use the web (it was started without --web), so deepdraft fetches no "
            f"URL for it; save the page and add the file: deepdraft add-source {run_id} page.html --to "
            f"{section} (or start a run with --web)"
        )
    from deepdraft.retrieval.web.fetch import PageFetcher, PageRefused

    fetcher = PageFetcher(
        allow_private=web.allow_private, max_bytes=web.max_page_bytes, timeout_s=web.timeout_s, egress=egress
    )
    try:
        page = fetcher.fetch(url)
    except PageRefused as exc:
        raise UserError(f"cannot add {url}: {exc}") from exc
    finally:
        fetcher.close()
    if not page.text.strip():
        raise UserError(f"cannot add {url}: the page has no text")
    where.mkdir(parents=True, exist_ok=True)
    slug = re.sub(r"[^A-Za-z0-9]+", "-", url.split("://", 1)[1]).strip("-")[:60]
    file = where / f"{slug}-{hashlib.sha256(url.encode()).hexdigest()[:8]}.jsonl"
    record = {"id": url, "title": page.title or url, "url": url, "text": page.text}
    file.write_text(json.dumps(record, ensure_ascii=False) + "\n", encoding="utf-8")
    return file


def _documents_of(listing: list[dict[str, Any]], file: Path, url: str | None) -> list[str]:
    """The KB documents `file` gave: by location (a page: by its URL, its id), else by the id
    ingestion gives a file added on its own (its name, qualified by its path when taken)."""
    if url is not None:
        return [row["doc_id"] for row in listing if row["doc_id"] == url]
    path = str(file.absolute())
    places = {path, str(file.resolve())}  # a folder KB is indexed from its resolved path
    exact = [row["doc_id"] for row in listing if row["location"] in places]
    if exact:
        return exact
    for candidate in (f"{path}#{file.name}", file.name):
        if any(row["doc_id"] == candidate for row in listing):
            return [candidate]
    return []


def pinned_passages(
    kb: Retriever, added: AddedSource, state: RunState, position: str, count: int
) -> list[Passage]:
    """Up to `count` passages of the added document that best match the node at `position`: searched
    within that document for the node's title and plan, else for the document's own title."""
    assert state.outline is not None
    located = state.outline.find(position)
    assert located is not None
    search: Any = kb.search
    only = [_literal(doc_id) for doc_id in added.doc_ids]
    queries = [f"{located.node.title} {located.node.plan}", *added.titles, state.question]
    for query in queries:
        # The filter's patterns also match a file name anywhere, so the hits are checked by id.
        hits = [p for p in search(query, count * 4, only=only) if p.source.doc_id in added.doc_ids]
        if hits:
            return hits[:count]
    raise KnowledgeBaseError(f"no passage of {', '.join(added.titles)} could be found in the knowledge base")


def _literal(doc_id: str) -> str:
    """`doc_id` as a document filter pattern that matches it literally."""
    return re.sub(r"([*?\[])", r"[\1]", doc_id)
