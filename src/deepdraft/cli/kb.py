"""`deepdraft kb ...`: add documents to named knowledge bases, list, inspect, search and remove them.

Every command prints for people by default and JSON with ``--json``. Problems with single files are
one line each while ingestion goes on; `kb add` exits non-zero only when nothing usable was added and
something failed. Mistakes (an unknown KB, a bad name, a KB busy with another writer) are
`KnowledgeBaseError`s, which the main CLI prints as one line.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from deepdraft.cli.options import ConfigOption, ExcludeOption, JsonOption, OnlyOption
from deepdraft.config import load_settings
from deepdraft.errors import KnowledgeBaseError
from deepdraft.retrieval.documents.limits import DocumentLimits
from deepdraft.retrieval.index.hybrid import SearchMode
from deepdraft.retrieval.kb import names as kbs
from deepdraft.retrieval.kb.store import SEARCH_MODES
from deepdraft.retrieval.kb.values import IngestNote
from deepdraft.settings import Settings

kb_app = typer.Typer(
    name="kb",
    help="Knowledge bases: add your documents (PDF, DOCX, PPTX, XLSX, EPUB, HTML, Markdown, text, JSONL).",
    no_args_is_help=True,
    add_completion=False,
)
console = Console()
errors = Console(stderr=True)

NameOption = Annotated[str, typer.Option("--kb", help="The knowledge base to add to.")]
WaitOption = Annotated[
    bool, typer.Option("--wait", help="Wait for another process writing the KB instead of failing.")
]


EngineOption = Annotated[
    str | None,
    typer.Option("--engine", help="Where a new KB lives: embedded (default) or postgres ([kb] engine)."),
]
DsnOption = Annotated[
    str | None,
    typer.Option(
        "--dsn",
        help="The Postgres database: postgresql://user@host:port/dbname ([kb] dsn, DEEPDRAFT_KB_DSN; "
        "leave the password to PGPASSWORD or ~/.pgpass).",
    ),
]


@kb_app.command("add")
def add(
    paths: Annotated[list[str], typer.Argument(help="Files, folders (read recursively) or glob patterns.")],
    name: NameOption = kbs.DEFAULT_KB,
    embed: Annotated[
        bool,
        typer.Option(
            "--embed", help="Also build dense vectors with the built-in MiniLM model (slow on CPU)."
        ),
    ] = False,
    embed_base_url: Annotated[
        str | None,
        typer.Option(
            "--embed-base-url", help="Build dense vectors with this OpenAI-compatible /embeddings endpoint."
        ),
    ] = None,
    embed_model: Annotated[
        str | None, typer.Option("--embed-model", help="Embedding model name at --embed-base-url.")
    ] = None,
    prune: Annotated[
        bool,
        typer.Option("--prune", help="Also remove documents whose files were deleted from these folders."),
    ] = False,
    wait: WaitOption = False,
    engine: EngineOption = None,
    dsn: DsnOption = None,
    as_json: JsonOption = False,
    config: ConfigOption = None,
) -> None:
    """Add documents to a knowledge base (unchanged files are skipped; changed ones replaced)."""
    settings = _settings(
        config,
        embedding={
            "enabled": True if (embed or embed_base_url) else None,
            "base_url": embed_base_url,
            "model": embed_model,
        },
        kb={"engine": engine or ("postgres" if dsn else None), "dsn": dsn},  # a --dsn alone means postgres
    )
    kbs.validate_kb_name(name)
    show = _Notes(quiet=as_json)
    if settings.kb.dsn:
        kbs.use_dsn(settings.kb.dsn)
    # A new KB goes to the configured engine; an existing one stays where it is (unless --engine differs).
    asked = engine is not None or dsn is not None
    new_engine = settings.kb.engine if asked or not kbs.kb_exists(name) else None
    with kbs.create_kb(name, settings.retrieval, engine=new_engine, dsn=settings.kb.dsn) as kb:
        result = kb.add(
            paths,
            progress=show,
            embedding=settings.embedding if settings.embedding.enabled else None,
            max_bytes=int(settings.retrieval.max_file_mb * 1024 * 1024),
            limits=DocumentLimits.from_settings(settings.retrieval),
            ocr=settings.retrieval.ocr,
            prune=prune,
            wait=wait,
        )
        documents = kb.document_count()
    nothing_usable = result.failures and not (
        result.documents_added + result.documents_updated + result.documents_unchanged
    )
    if as_json:
        typer.echo(json.dumps({"kb": name, **result.to_dict(), "documents": documents}, indent=2))
    else:
        colour = "red" if nothing_usable else "green"
        console.print(
            f"[{colour}]{escape(result.summary())}[/{colour}] — knowledge base {escape(name)!r} now holds "
            f"{documents} document{'' if documents == 1 else 's'} ({result.seconds:.1f} s)",
            highlight=False,
            soft_wrap=True,
        )
        if documents and result.changed:
            console.print(
                f'search it with: deepdraft kb search {name} "..."  or: deepdraft research "..." --kb {name}',
                markup=False,
                highlight=False,
                soft_wrap=True,
            )
    if nothing_usable:
        raise typer.Exit(KnowledgeBaseError.exit_code)


@kb_app.command("copy")
def copy(
    name: Annotated[str, typer.Argument(help="The knowledge base to copy.")],
    to: Annotated[str, typer.Option("--to", help="The engine to copy it onto: postgres or embedded.")],
    target: Annotated[
        str | None, typer.Option("--as", help="The copy's name (default: NAME-postgres or NAME-embedded).")
    ] = None,
    dsn: DsnOption = None,
    as_json: JsonOption = False,
    config: ConfigOption = None,
) -> None:
    """Copy a knowledge base onto the other engine, vectors included (nothing is read or embedded again)."""
    from deepdraft.retrieval.kb.copying import copy_kb

    if to not in ("postgres", "embedded"):
        raise KnowledgeBaseError(f"unknown engine {to!r}: use postgres or embedded")
    settings = _settings(config, kb={"dsn": dsn})
    if settings.kb.dsn:
        kbs.use_dsn(settings.kb.dsn)
    kbs.validate_kb_name(name)
    copied = copy_kb(name, "postgres" if to == "postgres" else "embedded", target=target, dsn=settings.kb.dsn)
    with kbs.open_kb(copied) as kb:
        documents = kb.document_count()
    if as_json:
        typer.echo(json.dumps({"kb": copied, "engine": to, "documents": documents}, indent=2))
    else:
        console.print(
            f"[green]copied[/green] {escape(name)!r} to {escape(copied)!r} on the {to} engine "
            f"({documents} document{'' if documents == 1 else 's'})",
            highlight=False,
            soft_wrap=True,
        )


@kb_app.command("list")
def list_(as_json: JsonOption = False) -> None:
    """List the knowledge bases of this workspace."""
    rows: list[dict[str, Any]] = []
    for name in kbs.list_kbs():
        try:
            with kbs.open_kb(name) as kb:
                info = kb.info()
            rows.append(
                {
                    "name": name,
                    "engine": kbs.kb_engine(name),
                    "documents": info.documents,
                    "chunks": info.chunks,
                    "size_bytes": info.size_bytes,
                    "embedder": info.embedder,
                    "updated": info.updated,
                    "error": None,
                }
            )
        except KnowledgeBaseError as exc:  # one unreadable KB must not hide the others
            rows.append({"name": name, "error": str(exc)})
    if as_json:
        typer.echo(json.dumps(rows, indent=2, ensure_ascii=False))
        return
    if not rows:
        console.print("no knowledge bases yet — create one with: deepdraft kb add PATH... [--kb NAME]")
        return
    console.print(
        f"{'knowledge base':<20} {'documents':>9} {'passages':>9} {'size':>9}  search",
        markup=False,
        highlight=False,
    )
    for row in rows:
        if row["error"]:
            console.print(f"{row['name']:<20} [red]unreadable[/red]: {escape(row['error'])}", highlight=False)
            continue
        embedder = f"hybrid ({row['embedder']})" if row["embedder"] else "BM25"
        console.print(
            f"{row['name']:<20} {row['documents']:>9} {row['chunks']:>9} "
            f"{_size(row['size_bytes']):>9}  {embedder}",
            markup=False,
            highlight=False,
        )


@kb_app.command("info")
def info(
    name: Annotated[str, typer.Argument(help="The knowledge base.")],
    documents: Annotated[bool, typer.Option("--documents", help="Also list every document.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Show a knowledge base: documents, chunks, pages, size, formats, embedder, last failures."""
    with kbs.open_kb(name) as kb:
        summary = kb.info()
        listed = list(kb.documents()) if documents else []
    if as_json:
        data: dict[str, Any] = {"name": name, **summary.to_dict()}
        if documents:
            data["document_list"] = listed
        typer.echo(json.dumps(data, indent=2, ensure_ascii=False))
        return
    formats = ", ".join(f"{fmt} {count}" for fmt, count in summary.formats.items()) or "-"
    lines = [
        f"knowledge base {name!r} at {summary.path}",
        f"documents  {summary.documents} ({formats})",
        f"chunks     {summary.chunks} ({summary.chunking['chunk_tokens']} tokens, "
        f"{summary.chunking['chunk_overlap']} overlap)",
        f"pages      {summary.pages}",
        f"size       {_size(summary.size_bytes)}",
        "search     BM25"
        + (f" + dense ({summary.embedder}, {summary.dimension}-d)" if summary.embedder else ""),
        f"format     version {summary.format_version}, revision {summary.revision}, "
        f"updated {summary.updated}",
    ]
    for line in lines:
        console.print(line, markup=False, highlight=False, soft_wrap=True)
    if summary.failures:
        console.print(f"failed in the last add ({len(summary.failures)}):", style="yellow")
        for failure in summary.failures:
            console.print(
                f"  {failure['location']}: {failure['reason']}", markup=False, highlight=False, soft_wrap=True
            )
    for doc in listed:
        pages = f", {doc['pages']} pages" if doc["pages"] else ""
        chunks = f"{doc['chunks']} chunk{'' if doc['chunks'] == 1 else 's'}"
        console.print(
            f"  {doc['doc_id']}  [{doc['format']}{pages}, {chunks}]  {doc['title']}",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )


@kb_app.command("remove")
def remove(
    name: Annotated[str, typer.Argument(help="The knowledge base.")],
    docs: Annotated[
        list[str] | None,
        typer.Argument(help="Documents to remove (doc ids, paths, URLs or globs); none: the whole KB."),
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask before deleting a whole KB.")] = False,
    wait: WaitOption = False,
    as_json: JsonOption = False,
) -> None:
    """Remove documents from a knowledge base, or the whole knowledge base."""
    if docs:
        with kbs.open_kb(name) as kb:
            removed = kb.remove(docs, wait=wait)
            left = kb.document_count()
        if as_json:
            typer.echo(json.dumps({"kb": name, "removed": removed, "documents": left}, indent=2))
            return
        for doc_id in removed:
            console.print(f"removed {doc_id}", markup=False, highlight=False, soft_wrap=True)
        console.print(
            f"{len(removed)} removed; knowledge base {name!r} now holds {left} documents", markup=False
        )
        return
    if not kbs.kb_exists(name) and not kbs.kb_dir(name).is_dir():
        kbs.open_kb(name)  # raises the usual "no knowledge base named ..." message
    if not yes:
        if not sys.stdin.isatty():
            raise KnowledgeBaseError(f"deleting knowledge base {name!r} needs confirmation: pass --yes")
        count = _document_count(name)
        if not typer.confirm(f"delete knowledge base {name!r} ({count} documents)?", default=False):
            raise typer.Exit(1)
    kbs.remove_kb(name, wait=wait)
    if as_json:
        typer.echo(json.dumps({"kb": name, "deleted": True}))
    else:
        console.print(f"deleted knowledge base {name!r}", markup=False)


@kb_app.command("search")
def search(
    name: Annotated[str, typer.Argument(help="The knowledge base.")],
    query: Annotated[str, typer.Argument(help="What to look for.")],
    k: Annotated[int, typer.Option("--k", "-k", min=1, max=1000, help="How many passages.")] = 5,
    mode: Annotated[str | None, typer.Option("--mode", help="hybrid (default), bm25 or dense.")] = None,
    only: OnlyOption = None,
    exclude: ExcludeOption = None,
    as_json: JsonOption = False,
    config: ConfigOption = None,
) -> None:
    """Search a knowledge base and print the best passages."""
    settings = _settings(config)
    chosen = _mode(mode or settings.retrieval.mode)
    with kbs.open_kb(
        name,
        only=only or settings.retrieval.only,
        exclude=exclude or settings.retrieval.exclude,
        mode=chosen,
        embedding=settings.embedding,
    ) as kb:
        passages = kb.search(query, k)
    rows = [
        {
            "rank": rank,
            "score": round(passage.score, 6),
            "doc_id": passage.source.doc_id,
            "title": passage.source.title,
            "location": passage.source.location,
            "page": passage.source.page,
            "headings": list(passage.source.headings),
            "start": passage.source.start,
            "end": passage.source.end,
            "text": passage.text,
        }
        for rank, passage in enumerate(passages, start=1)
    ]
    if as_json:
        typer.echo(json.dumps(rows, indent=2, ensure_ascii=False))
        return
    if not rows:
        console.print(f"no passage of {name!r} matches {query!r}", markup=False, highlight=False)
        return
    for rank, passage in enumerate(passages, start=1):
        source = passage.source
        where = source.location + (f", p. {source.page}" if source.page is not None else "")
        console.print(
            f"[bold]{rank}.[/bold] {escape(source.title)}  [dim]({passage.score:.3f})[/dim]",
            highlight=False,
            soft_wrap=True,
        )
        console.print(f"   {where}", markup=False, highlight=False, soft_wrap=True)
        if source.headings:
            console.print(
                f"   § {' › '.join(source.headings)}", markup=False, highlight=False, soft_wrap=True
            )
        console.print(f"   {_snippet(passage.text)}", markup=False, highlight=False, soft_wrap=True)


# ---- helpers ------------------------------------------------------------------------------------------


class _Notes:
    """Prints `add`'s progress: one line per added, updated, removed or failed file."""

    def __init__(self, *, quiet: bool) -> None:
        self.quiet = quiet

    def __call__(self, note: IngestNote) -> None:
        if note.kind == "failed":  # always, on stderr: even --json users must see what was skipped
            errors.print(
                f"[yellow]failed[/yellow]  {escape(note.location)}: {escape(note.detail)}",
                highlight=False,
                soft_wrap=True,
            )
        elif self.quiet or note.kind == "unchanged":
            return
        elif note.kind == "indexing":
            console.print(f"[dim]{escape(note.detail)}[/dim]", highlight=False, soft_wrap=True)
        else:
            detail = f" ({escape(note.detail)})" if note.detail else ""
            console.print(f"{note.kind:<8} {escape(note.location)}{detail}", highlight=False, soft_wrap=True)


def _settings(config: Path | None, **flags: dict[str, Any]) -> Settings:
    return load_settings(config, flags=flags)


def _mode(value: str) -> SearchMode:
    for mode in SEARCH_MODES:
        if mode == value:
            return mode
    raise KnowledgeBaseError(f"unknown search mode {value!r}: use {', '.join(SEARCH_MODES)}")


def _document_count(name: str) -> int:
    try:
        with kbs.open_kb(name) as kb:
            return kb.document_count()
    except KnowledgeBaseError:
        return 0


def _snippet(text: str, limit: int = 240) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"


def _size(size: int) -> str:
    return f"{size / 1e9:.2f} GB" if size >= 1e9 else f"{size / 1e6:.1f} MB"
