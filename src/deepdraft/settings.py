"""Settings: one validated tree of value classes, the same whatever their source.

Unknown keys are errors everywhere (a typo in `config.toml` must not be silently ignored). Where the
values come from — `config.toml`, the environment, flags — is `deepdraft.config`'s job; this module
only says what the settings are and what their defaults and presets are, so the policies and the
adapters can take their section without reading any file.

Privacy rule: `llm.base_url` is the only way text leaves the machine. An API key on its own never
selects a hosted service.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

PolicyName = Literal["warp", "plan-write", "single-pass"]
Depth = Literal["quick", "standard", "deep"]
ExportFormat = Literal["md", "html", "pdf", "docx", "json", "bibtex", "csl"]
ReferencesStyle = Literal["numbered", "author-date"]

# What each depth changes, section by section. "quick" is sized for a small model on a laptop CPU
# (about 35 prompt tokens/s): few, short prompts and two deepening steps, about 20 actions.
DEPTH_PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "quick": {
        "research": {
            # ~20 s an action on 2 cores once writes are mended rather than asked again: the run
            # ends within about 12 minutes with verification and synthesis.
            "max_steps": 26,
            # A small model writes two or three sentences a part: the second deepening adds the
            # parts that give the report its length (one gave about 230 words over six parts).
            "max_expansions": 2,
            "force_expansions": 2,
            "max_retries": 1,  # each re-ask costs a minute on a CPU: fall back sooner
            "max_sections": 4,
            "max_subsections": 3,
            "outline_evidence": 6,
            # A part is written one passage at a time, each shown as the excerpt that names the
            # subject (about 4 s a passage on 2 cores, against 7-9 s shown whole): eight passages
            # a part rather than six is the length that excerpting paid for.
            "node_evidence": 8,
            # Each query's first 20 hits (the default) rather than 8: a part written passage by
            # passage wants passages no other part cites, and once three parts were written the first
            # 8 hits of a subsection's queries were mostly cited already (measured: 1-2 fresh of the
            # 6 shown to each of four subsections, which then wrote 25-71 words).
            "hits_per_keyword": 20,
            "passage_tokens": 110,
            "attach_citations_after": 0,
            "cite_every_sentence": True,
            "write_by_passage": True,
            "plan_searches": True,
            "node_words": 180,
            "write_notes_chars": 300,
            "subject_titles": 0.8,
            "search_budget_tokens": 300,
            "draft_budget_tokens": 500,
            "report_budget_tokens": 900,
        },
        "llm": {"max_tokens": 480},
        "output": {
            # A small model's rewrite of an unsupported sentence was refused in 19 of 23 tries over
            # seven smoke runs (it pasted its passage or left it), each a call of about 20 s: the
            # sentence is cited to a passage that supports it instead, else removed.
            "verify_policy": "recite",
            # ... and as a judge it passes nearly every sentence it is shown (22 of 25 in three
            # smoke runs, one sharing 12% of its words with its passage): verified again from the
            # same drafts, nine smoke runs kept 33-89% of their cited sentences with at least half
            # their words in their passages; with this floor, all of them.
            "judge_floor": 0.5,
        },
    },
    "standard": {},
    "deep": {
        "research": {
            "max_steps": 220,
            "max_expansions": 12,
            "node_evidence": 14,
            "draft_budget_tokens": 4000,
            "report_budget_tokens": 8000,
        },
    },
}


def http_url_or_none(value: str | None) -> str | None:
    """An http(s) URL without its trailing slash; None for an empty value."""
    if value is None or value == "":
        return None
    if not value.startswith(("http://", "https://")):
        raise ValueError(f"must start with http:// or https:// (got {value!r})")
    return value.rstrip("/")


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*([hms])", re.IGNORECASE)
_SECONDS_PER = {"h": 3600.0, "m": 60.0, "s": 1.0}


def duration_seconds(value: object) -> object:
    """A duration as seconds: a number, or text such as "90s", "30m", "2h", "1h30m" or "600".

    Anything else is left for the field's own validation to refuse (a bool, a list…); text that is
    no duration raises ValueError with an example of what is meant.
    """
    if isinstance(value, bool):  # TOML's `true` is no duration, though Python counts it as 1
        raise ValueError(f"give a duration such as 90s, 30m or 2h (got {value!r})")
    if not isinstance(value, str):
        return value
    text = value.strip().lower()
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        pass
    parts = _DURATION_PART.findall(text)
    if not parts or _DURATION_PART.sub("", text).strip():
        raise ValueError(
            f"give a duration such as 90s, 30m, 2h or 1h30m, or a number of seconds (got {value!r})"
        )
    return sum(float(amount) * _SECONDS_PER[unit.lower()] for amount, unit in parts)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class LLMSettings(_Section):
    base_url: str | None = None
    """OpenAI-compatible endpoint, e.g. http://localhost:8000/v1. None: no remote LLM."""
    model: str | None = None
    api_key: str | None = None
    planner_model: str | None = None
    """Model for the outline decisions (init-plan, extend-plan), if not `model`."""
    writer_model: str | None = None
    """Model for writing sections, if not `model`."""
    temperature: float = Field(0.7, ge=0.0, le=2.0)
    top_p: float = Field(0.8, gt=0.0, le=1.0)
    max_tokens: int = Field(2048, ge=16)
    context_window: int = Field(32768, ge=2048)
    """Tokens the model accepts; prompts are condensed to fit inside it."""
    timeout_s: float = Field(300.0, gt=0)
    max_retries: int = Field(3, ge=0, le=10)
    """How often a failed request is sent again: no connection, a timeout, HTTP 429 or 5xx, or a
    reply that is no chat completion (an HTML page, cut-off JSON, no choices, no text)."""
    retry_backoff_s: float = Field(0.5, ge=0, le=60)
    """The wait before the first retry; it doubles with each one (at most 8 s), unless the server
    asks for a pause of its own (Retry-After, up to a minute)."""
    constrain: Literal["auto", "grammar", "json", "off"] = "auto"
    """How replies are constrained: a GBNF grammar (llama.cpp servers; "auto" tries it and stops if
    the server refuses), a JSON envelope (OpenAI structured outputs, Ollama), or not at all."""
    max_tokens_total: int | None = Field(None, ge=1)
    """Cap on prompt + output tokens per run, resumes included (the journal counts what was spent);
    when spent the report is finished from what exists."""
    requests_per_minute: float | None = Field(None, gt=0)
    """Rate limit for paid endpoints: requests wait rather than fail."""
    extra_body: dict[str, Any] = Field(default_factory=dict)
    """Extra JSON fields for every request, e.g. {"chat_template_kwargs": {"enable_thinking": false}}."""
    cache: bool = True
    """Keep every reply in the run journal so a resumed or replayed run costs nothing."""

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        return http_url_or_none(value)


class ResearchSettings(_Section):
    depth: Depth = "standard"
    """A preset for the budgets below (see DEPTH_PRESETS); explicit settings win over it."""
    policy: PolicyName = "warp"
    max_steps: int = Field(140, ge=1, le=10_000)
    """Upper bound on LLM actions in one run."""
    max_time: float | None = Field(None, gt=0)
    """Wall-time budget of a run, in seconds ("90s", "30m", "2h" are read too): once spent, no
    model call is started and the report is finished from what exists. It counts the time the run
    was being driven, summed over its resumes (not the time it lay stopped); None: no limit."""
    max_expansions: int = Field(12, ge=0, le=100)
    """Upper bound on deepening decisions (each failed extend-plan counts too)."""
    max_retries: int = Field(3, ge=0, le=10)
    """How often an invalid action is re-asked with the reason before falling back."""
    outline_evidence: int = Field(20, ge=1, le=200)
    node_evidence: int = Field(10, ge=1, le=100)
    hits_per_keyword: int = Field(20, ge=1, le=500)
    search_budget_tokens: int = Field(1500, ge=200)
    """Size of the condensed draft in search prompts: keywords need the gist, not the prose."""
    draft_budget_tokens: int = Field(2500, ge=200)
    """Size of the condensed draft in write prompts (full text near the node being written)."""
    report_budget_tokens: int = Field(5000, ge=200)
    """Size of the condensed report shown to the extend-plan decision."""
    passage_tokens: int | None = Field(None, ge=20)
    """Cut each evidence passage in prompts to about this many tokens (None: whole passages)."""
    max_sections: int = Field(12, ge=3, le=12)
    """Most top-level sections an outline may have (the protocol allows 3–12)."""
    max_subsections: int = Field(7, ge=2, le=7)
    """Most subsections one deepening step may add (the protocol allows 2–7)."""
    language: str | None = None
    """The report's language (e.g. "English", "zh"); None: the language of the question."""
    length_words: int | None = Field(None, ge=100, le=200_000)
    """A target length for the whole report, in words; None: as long as the research needs."""
    node_words: int | None = Field(None, ge=30, le=5_000)
    """Words to aim for in each part when no `length_words` is asked; None: no guidance. The quick
    preset sets it: a small model left to itself writes two or three sentences a part."""
    write_notes_chars: int | None = Field(None, ge=0, le=100_000)
    """Most characters of the writer's notes (the `<thought>` before a part's text) where the
    backend takes a grammar; None: no bound. The quick preset bounds them: a small model restated
    its passages there at length, once for all 480 tokens of its reply, cutting off the text."""
    subject_titles: float | None = Field(None, ge=0, le=1)
    """Least share of an outline's section titles (and of a split's subsections) that name the
    request's subject words; an outline below it is asked for once more, then (like a split at
    once) mended: the subject's first words go before the titles that do not name it.
    None: no such rule. The quick preset sets it: a small model titles sections after one speech
    or one person ("George W Bush: The First President"), and the section's search follows."""
    attach_citations_after: int | None = Field(1, ge=0, le=10)
    """After this many re-asks of a write with no citations at all, cite it from the evidence by
    word overlap (sentences with no support are dropped); None: never (the write is re-asked)."""
    write_by_passage: bool = False
    """Write each part one passage at a time: a short prompt per passage of its evidence, whose
    reply's sentences that hold up against the passage become a paragraph cited to it
    (`protocol/passage_write.py`). The quick preset sets it: shown six passages at once, a 1.5B
    model wrote 35-77 words a part, often about none of them; shown one at a time, it reported
    each (380-490 words from the same six, 130-200 kept once held to their passages)."""
    plan_searches: bool = False
    """Search without asking the model: a part's title and the sentences of its plan are the
    keywords (before there is an outline, the request). Still one journaled search step. The quick
    preset sets it: on 2 cores each search the model chose cost 13-20 s, about a fifth of a run,
    and 154 of the 184 words of its keywords over three smoke runs were the part's title, plan or
    request, the rest mostly words that find nothing in particular ("challenges faced",
    "historical records")."""
    cite_every_sentence: bool = False
    """Hold every sentence of a write to a citation: one the model left uncited beside cited ones
    is cited from the passage it shares most words with (and then verified like any), or dropped
    when none shares enough. The quick preset sets it: a small model's uncited sentences are rarely
    analysis; in nine smoke runs they were 0-15 a report, mostly passage words recast without a
    citation, and a few claims of its own that verification never saw."""
    seed: int | None = None
    """Base seed for sampling; each action asks with seed + step, so a retry is a new sample."""
    force_expansions: int | None = Field(None, ge=1, le=100)
    """Refuse `nop` until this many deepening steps were taken (while the step budget allows
    one); None: the model decides. For training-data collection (spec §2.10), so a teacher's
    trajectory passes through ever finer drafts; and in the quick preset, whose two steps give
    the report most of its length: a small model judged 200- and 280-word reports complete with
    ten of their actions left (two of three smoke runs)."""

    @field_validator("max_time", mode="before")
    @classmethod
    def _duration(cls, value: object) -> object:
        return duration_seconds(value)


class RetrievalSettings(_Section):
    chunk_tokens: int = Field(220, ge=32, le=4000)
    chunk_overlap: int = Field(40, ge=0, le=1000)
    mode: Literal["hybrid", "bm25", "dense"] = "hybrid"
    """How a KB is searched. "hybrid" fuses BM25 and dense ranks when the KB has vectors, and is
    plain BM25 when it has none."""
    only: list[str] = Field(default_factory=list)
    """Glob patterns: search only documents whose path, URL or id matches one of them."""
    exclude: list[str] = Field(default_factory=list)
    """Glob patterns: never search documents whose path, URL or id matches one of them."""
    max_file_mb: float = Field(200.0, gt=0)
    """Files larger than this are skipped at ingestion, with a message."""
    max_unpacked_mb: float = Field(512.0, gt=0)
    """A DOCX, PPTX, XLSX or EPUB (a zip archive) whose parts inflate to more than this in all is
    refused: counted as they inflate, whatever the archive declares."""
    max_unpacked_member_mb: float = Field(256.0, gt=0)
    """An archive one of whose parts inflates to more than this is refused."""
    max_compression_ratio: float = Field(100.0, ge=1)
    """An archive that inflates to more than this many times its own size is refused as a zip bomb,
    once it has inflated past `compression_ratio_floor_mb` (below that, any ratio is fine)."""
    compression_ratio_floor_mb: float = Field(50.0, ge=0)
    """Inflated size below which an archive may have any compression ratio (repetitive data packs well)."""
    max_xml_elements: int = Field(2_000_000, ge=1_000)
    """An archive whose XML parts (parsed whole into memory) hold more elements than this is refused;
    spreadsheet sheets, which are streamed, do not count."""
    max_document_chars: int = Field(20_000_000, ge=1_000)
    """A document (a JSONL record) with more characters of text than this is refused."""
    ocr: bool = True
    """OCR pages without a text layer with Tesseract, when it is installed."""

    @model_validator(mode="after")
    def _overlap_smaller(self) -> RetrievalSettings:
        # After the fields, so a default overlap is checked against a chunk size set lower.
        if self.chunk_overlap >= self.chunk_tokens:
            overlap, chunk = self.chunk_overlap, self.chunk_tokens
            raise ValueError(f"chunk_overlap ({overlap}) must be smaller than chunk_tokens ({chunk})")
        return self

    @model_validator(mode="after")
    def _member_within_archive(self) -> RetrievalSettings:
        if self.max_unpacked_member_mb > self.max_unpacked_mb:
            member, total = self.max_unpacked_member_mb, self.max_unpacked_mb
            raise ValueError(
                f"max_unpacked_member_mb ({member:g}) must not be larger than max_unpacked_mb ({total:g})"
            )
        return self


class EmbeddingSettings(_Section):
    enabled: bool = False
    """Build dense vectors when documents are added (BM25 is always built)."""
    base_url: str | None = None
    """An OpenAI-compatible /embeddings endpoint; None: the in-package MiniLM model."""
    model: str | None = None
    api_key: str | None = None
    batch_size: int = Field(32, ge=1, le=4096)

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        return http_url_or_none(value)


class KBSettings(_Section):
    engine: Literal["embedded", "postgres"] = "embedded"
    """Where `kb add` creates a new KB: "embedded" (SQLite + files in the workspace) or "postgres"."""
    dsn: str | None = None
    """The Postgres database of the "postgres" engine (postgresql://user@host:port/dbname); its
    password is better left to PGPASSWORD or ~/.pgpass. Never recorded with its password."""
    pool_size: int = Field(4, ge=1, le=100)
    """Connections each process keeps open to that database."""
    ship_max_mb: float = Field(256.0, ge=0)
    """The largest KB `batch --ray` sends to workers whose nodes cannot see it (a snapshot of the
    KB or of a corpus's index, as a Ray object); 0 sends none. Above it: shared storage or Postgres."""

    @field_validator("dsn")
    @classmethod
    def _dsn(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if not (value.startswith(("postgresql://", "postgres://")) or "=" in value):
            raise ValueError(
                "must be a postgresql:// URL or 'host=... dbname=...' (the password is not shown)"
            )
        return value

    @model_validator(mode="after")
    def _engine_has_dsn(self) -> KBSettings:
        if self.engine == "postgres" and not self.dsn:
            raise ValueError("engine 'postgres' needs a dsn (postgresql://user@host:port/dbname)")
        return self


class WebSettings(_Section):
    enabled: bool = False
    """Search the web too. Off by default: nothing leaves the machine unless asked."""
    only: bool = False
    """Search the web and no knowledge base."""
    provider: Literal["searxng", "tavily", "brave"] = "searxng"
    searxng_url: str | None = None
    """Base URL of a SearXNG instance with the JSON format enabled, e.g. http://localhost:8888."""

    @field_validator("searxng_url")
    @classmethod
    def _searxng_url(cls, value: str | None) -> str | None:
        return http_url_or_none(value)

    # Tavily and Brave read their API keys from TAVILY_API_KEY / BRAVE_API_KEY only: never stored.
    results_per_query: int = Field(5, ge=1, le=50)
    fetch_pages: bool = True
    """Fetch and extract each result's page (else only the search snippet is evidence)."""
    allow_private: bool = False
    """Allow fetching pages on loopback and private networks (off: such URLs are refused)."""
    max_page_bytes: int = Field(3_000_000, ge=1_000)
    timeout_s: float = Field(20.0, gt=0)


_MARKDOWN_ONLY: list[ExportFormat] = ["md"]


class OutputSettings(_Section):
    verify: bool = True
    """Check every cited sentence against its passages after the run (claim-level verification)."""
    verify_policy: Literal["repair", "recite", "remove"] = "repair"
    """What happens to an unsupported sentence: re-written from its evidence (falling back to
    re-citing, then removal), re-cited to a supporting passage (else removed), or removed."""
    judge_floor: float = Field(0.0, ge=0.0, le=1.0)
    """Share of a cited sentence's content words that must occur in its passages before the judge
    is asked about it; below it the sentence is unsupported without a call (0: the judge decides
    every sentence word overlap leaves unclear)."""
    synthesis: bool = True
    """Write an executive summary and a conclusion from the finished sections."""
    formats: list[ExportFormat] = Field(default_factory=lambda: _MARKDOWN_ONLY.copy())
    """Files written next to the report when a run finishes (Markdown is always written)."""
    references_style: ReferencesStyle = "numbered"
    template: Path | None = None
    """A Jinja2 template for the final Markdown document (see docs/exports.md)."""


class Settings(_Section):
    llm: LLMSettings = Field(default_factory=LLMSettings)
    research: ResearchSettings = Field(default_factory=ResearchSettings)
    retrieval: RetrievalSettings = Field(default_factory=RetrievalSettings)
    embedding: EmbeddingSettings = Field(default_factory=EmbeddingSettings)
    web: WebSettings = Field(default_factory=WebSettings)
    output: OutputSettings = Field(default_factory=OutputSettings)
    kb: KBSettings = Field(default_factory=KBSettings)

    def with_default_depth(self, depth: Depth) -> Settings:
        """These settings with `depth`'s preset, unless a depth was chosen explicitly."""
        if "depth" in self.research.model_fields_set:
            return self
        data = self.model_dump(exclude_unset=True)
        data.setdefault("research", {})["depth"] = depth
        fill_preset(data, depth)
        return Settings.model_validate(data)

    def public_dict(self) -> dict[str, Any]:
        """Settings as recorded in journals and manifests: secrets removed."""
        data = self.model_dump()
        data["llm"]["api_key"] = "***" if self.llm.api_key else None
        data["embedding"]["api_key"] = "***" if self.embedding.api_key else None
        data["kb"]["dsn"] = _dsn_without_secrets(self.kb.dsn)
        data["output"]["template"] = str(self.output.template) if self.output.template else None
        return data


def _dsn_without_secrets(dsn: str | None) -> str | None:
    if dsn is None:
        return None
    from deepdraft.egress import public_dsn

    return public_dsn(dsn)


def fill_preset(data: dict[str, dict[str, Any]], depth: str) -> None:
    """A depth preset fills in only what no source set explicitly."""
    for section, values in DEPTH_PRESETS.get(depth, {}).items():
        for key, value in values.items():
            data.setdefault(section, {}).setdefault(key, value)
