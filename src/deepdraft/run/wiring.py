"""Settings wired to components: which LLM, which retriever, which policy, what is audited.

The composition root's parts. `runner` asks here for the objects a run needs and drives them; the
CLI, the server and the evaluation harness ask here too when they need one part on its own (a KB
resolved from `--kb`, the LLM the settings name).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

from deepdraft.config import home_dir
from deepdraft.egress import EgressLog, EndpointMeter, meter_embedder
from deepdraft.errors import ConfigError, KnowledgeBaseError
from deepdraft.llm.metered import MeteredLLM
from deepdraft.policy.plan_write import PlanThenWritePolicy
from deepdraft.policy.single_pass import SinglePassPolicy
from deepdraft.policy.warp import Policy, WarpPolicy
from deepdraft.ports import LLM, Retriever
from deepdraft.settings import Settings
from deepdraft.store.journal import Journal

ReplyCache = Journal
"""A file of cached LLM replies (a journal: its cache table), closed by whoever opens it."""

POLICIES: dict[str, Callable[..., Policy]] = {
    "warp": WarpPolicy,
    "plan-write": PlanThenWritePolicy,
    "single-pass": SinglePassPolicy,
}

NO_LLM_MESSAGE = (
    "no LLM configured and the embedded model is not ready ({why}). Run `deepdraft setup` for the "
    "embedded model, or pass --base-url (an OpenAI-compatible server such as vLLM, llama.cpp, Ollama "
    "or LM Studio, e.g. http://localhost:8000/v1) and --model. deepdraft never sends your text to a "
    "service you did not name."
)


def open_reply_cache(path: Path) -> ReplyCache:
    """The reply cache kept in the SQLite file at `path` (created on first use)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return Journal(path)


def build_llm(settings: Settings) -> LLM:
    """The endpoint the user named, else the embedded model — never a service nobody named."""
    if settings.llm.base_url:
        from deepdraft.llm.openai_compat import OpenAICompatibleLLM

        return OpenAICompatibleLLM.from_settings(settings.llm)
    from deepdraft.llm.embedded import load_embedded

    try:
        return load_embedded(
            settings.llm.model,
            temperature=settings.llm.temperature,
            top_p=settings.llm.top_p,
            max_tokens=settings.llm.max_tokens,
            seed=settings.research.seed or 0,
        )
    except ConfigError as exc:
        raise ConfigError(NO_LLM_MESSAGE.format(why=str(exc).rstrip("."))) from exc


def build_role_llms(settings: Settings) -> dict[str, LLM]:
    """Models chosen for single roles (`--planner-model`, `--writer-model`), on the same endpoint."""
    roles: dict[str, LLM] = {}
    for role, name in (("planner", settings.llm.planner_model), ("writer", settings.llm.writer_model)):
        if name and name != settings.llm.model:
            roles[role] = build_llm(
                settings.model_copy(update={"llm": settings.llm.model_copy(update={"model": name})})
            )
    return roles


def default_kb() -> tuple[str, str]:
    """The KB a run without `--kb` uses, and one line telling the user which and why."""
    from deepdraft.retrieval.kb import names as kbs

    if kbs.kb_has_documents(kbs.DEFAULT_KB):
        return kbs.DEFAULT_KB, f"using knowledge base {kbs.DEFAULT_KB!r}"
    return kbs.DEMO_KB, (
        f"using knowledge base {kbs.DEMO_KB!r} (no documents in {kbs.DEFAULT_KB!r} yet; "
        "add some with: deepdraft kb add PATH)"
    )


_index_copies: dict[str, Path] = {}


def use_index_copy(corpus: str, folder: Path) -> None:
    """Search the corpus at the absolute path `corpus`, which is not on this machine, in `folder`:
    a copy of the index built where it is (a Ray worker's, see `run.cluster`). Process-wide.

    The runs record `corpus` itself, so their references and their resume name the documents
    where they are, not the copy.
    """
    _index_copies[corpus] = folder


def resolve_kb(kb: str | None, settings: Settings) -> tuple[Retriever, str]:
    """The retriever for `--kb`, and how to find it again on resume.

    `kb` is a knowledge-base name or a path (a name wins when both exist). Without one: the KB
    `default` if it has documents, else the bundled `demo` corpus (see `default_kb`). The document
    filters and search mode of `settings.retrieval` apply; they are part of the recorded settings,
    so a resumed run searches exactly as before.
    """
    from deepdraft.retrieval.kb import names as kbs

    if kb is None:
        name, _ = default_kb()
        if name == kbs.DEMO_KB and not kbs.kb_has_documents(name):
            _index_demo_if_present()
        return _open_named_kb(name, settings), f"kb:{name}"
    if kb.startswith("kb:"):
        return _open_named_kb(kb.removeprefix("kb:"), settings), kb
    if kbs.is_kb_name(kb) and kbs.kb_exists(kb):
        return _open_named_kb(kb, settings), f"kb:{kb}"
    path = Path(kb).expanduser()
    copy = _index_copies.get(str(path.resolve()))
    if copy is not None and not path.exists():
        from deepdraft.retrieval.kb.folder import open_folder_index

        return open_folder_index(copy, str(path.resolve()), settings), str(path.resolve())
    if not path.exists():
        raise KnowledgeBaseError(
            f"no knowledge base named {kb!r} and no file or folder {path} "
            "(give a KB name from `deepdraft kb list`, a folder of documents or a .jsonl corpus)"
        )
    return open_corpus(path, settings), str(path.resolve())


def _open_named_kb(name: str, settings: Settings) -> Retriever:
    from deepdraft.retrieval.kb import names as kbs

    retrieval = settings.retrieval
    return kbs.open_kb(
        name,
        only=retrieval.only,
        exclude=retrieval.exclude,
        mode=retrieval.mode,
        embedding=settings.embedding,
    )


def _index_demo_if_present() -> None:
    """A new workspace indexes the demo corpus that `deepdraft setup` left in the shared cache."""
    from deepdraft.run import demo

    if demo.demo_corpus_path().is_file():
        demo.ensure_demo_kb()


def open_corpus(path: Path, settings: Settings) -> Retriever:
    """A folder or file of documents as a KB built on the fly, kept under ``DEEPDRAFT_HOME/indexes``.

    The KB is brought up to date on every call (unchanged files cost a hash; deleted files are
    pruned) and rebuilt when the chunking settings changed. With `settings.embedding` enabled it
    also holds dense vectors; each embedder gets its own cached KB.
    """
    from deepdraft.retrieval.kb.folder import open_folder_kb

    path = path.expanduser()
    if not path.exists():
        raise KnowledgeBaseError(f"knowledge base not found: {path} (give a folder of documents or a .jsonl)")
    return open_folder_kb(path.resolve(), home_dir() / "indexes", settings)


def meter_kb_embedders(retriever: Retriever, egress: EgressLog) -> None:
    """Audit the embedding endpoint of every searched KB whose queries are embedded by a server, and
    the database of every KB that lives on a Postgres server (its queries go there)."""
    for part in getattr(retriever, "parts", (retriever,)):  # a `CombinedRetriever` holds the KB and the web
        endpoint_embedder = getattr(part, "endpoint_embedder", None)
        embedder = endpoint_embedder() if callable(endpoint_embedder) else None
        if embedder is not None:
            meter_embedder(egress, embedder)
        database_endpoint = getattr(part, "database_endpoint", None)  # a KB on a Postgres server
        database = database_endpoint() if callable(database_endpoint) else None
        if database is not None:
            label = getattr(part, "label", "")
            meter = egress.endpoint("kb-database", database, f"searches of knowledge base {label!r}")
            if meter is not None:
                part.meter_searches(meter)  # type: ignore[union-attr]  # the KB that has database_endpoint


def with_web(retriever: Retriever | None, settings: Settings, egress: EgressLog) -> Retriever:
    """`retriever` with web search added when `settings.web` asks for it; `web.only`: the web alone.

    The web modules are imported only when the web is on: a run without it never loads them.
    """
    web = settings.web
    if not (web.enabled or web.only):
        if retriever is None:  # pragma: no cover - callers open a KB whenever the web is off
            raise KnowledgeBaseError("no knowledge base to search")
        return retriever
    from deepdraft.retrieval.web.search import web_retriever

    searcher = web_retriever(settings, egress=egress, cache_dir=home_dir() / "web-cache")
    if web.only or retriever is None:
        return searcher
    from deepdraft.retrieval.combined import CombinedRetriever

    return CombinedRetriever(retriever, searcher)


def audit_endpoints(
    log: EgressLog, settings: Settings, llm: LLM, roles: Mapping[str, LLM]
) -> tuple[LLM, dict[str, LLM]]:
    """Record the session's remote LLM and embedding endpoints; the LLMs, metered where remote.

    An LLM object without a `base_url` (the embedded model, a scripted one) sends nothing anywhere.
    Models for single roles on the same endpoint share its record. The embedding endpoint is
    recorded as configured; its requests are counted by an embedder given the meter
    (`meter_embedder`, which shares this record when the endpoint is the same).
    """
    meters: dict[str, EndpointMeter | None] = {}

    def metered(model: LLM) -> LLM:
        base_url = getattr(model, "base_url", None)
        if not isinstance(base_url, str) or not base_url:
            return model
        if base_url not in meters:
            meters[base_url] = log.endpoint("llm", base_url, f"chat completions, model {model.model_name}")
        meter = meters[base_url]
        return model if meter is None else MeteredLLM(model, meter)

    if settings.embedding.base_url:
        detail = f"embeddings, model {settings.embedding.model or '(default)'}"
        log.endpoint("embeddings", settings.embedding.base_url, detail)
    return metered(llm), {role: metered(model) for role, model in roles.items()}
