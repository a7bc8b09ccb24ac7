"""Command-line options that several commands share, declared once so their names and help agree.

Each command module (`app`, `batch`, `kb`, `serve`, `eval`, `train`) imports what it needs
from here; options that belong to one command stay with that command.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from deepdraft.settings import Depth, PolicyName, ReferencesStyle

ConfigOption = Annotated[
    Path | None, typer.Option("--config", help="TOML settings file (default: DEEPDRAFT_HOME/config.toml).")
]
BaseUrlOption = Annotated[
    str | None,
    typer.Option(
        "--base-url", help="OpenAI-compatible endpoint, e.g. http://localhost:8000/v1 [env: OPENAI_BASE_URL]"
    ),
]
ModelOption = Annotated[
    str | None, typer.Option("--model", help="Model name on that endpoint [env: DEEPDRAFT_MODEL]")
]
ApiKeyOption = Annotated[
    str | None, typer.Option("--api-key", help="API key, if the endpoint needs one [env: OPENAI_API_KEY]")
]
KbOption = Annotated[
    str | None,
    typer.Option("--kb", help="A knowledge base name, or a folder of .txt/.md files or a .jsonl corpus."),
]
RayOption = Annotated[
    str | None,
    typer.Option(
        "--ray",
        help="Run the reports on Ray: 'auto' starts a local Ray, an address joins a cluster "
        "(needs the ray extra; see docs/scale.md).",
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
OnlyOption = Annotated[
    list[str] | None,
    typer.Option("--only", help="Search only documents matching this glob (repeatable)."),
]
ExcludeOption = Annotated[
    list[str] | None,
    typer.Option("--exclude", help="Never search documents matching this glob (repeatable)."),
]
JudgeUrlOption = Annotated[
    str | None,
    typer.Option(
        "--judge-base-url", help="OpenAI-compatible endpoint of the judge (default: embedded model)."
    ),
]
JudgeModelOption = Annotated[
    str | None, typer.Option("--judge-model", help="Judge model name at that endpoint.")
]
JudgeKeyOption = Annotated[str | None, typer.Option("--judge-api-key", help="API key of the judge endpoint.")]
JudgeConcurrencyOption = Annotated[
    int | None, typer.Option("--judge-concurrency", help="Parallel judge calls (default 4; embedded: 1).")
]
JudgePriceInOption = Annotated[
    float | None, typer.Option("--judge-price-in", help="USD per million prompt tokens, for the cost line.")
]
JudgePriceOutOption = Annotated[
    float | None, typer.Option("--judge-price-out", help="USD per million completion tokens.")
]


@dataclass(frozen=True)
class JudgeOptions:
    """The judge options of a `deepdraft eval` command, as given (None: the default)."""

    base_url: str | None = None
    model: str | None = None
    api_key: str | None = None
    concurrency: int | None = None
    price_in: float | None = None
    price_out: float | None = None


NO_JUDGE_OPTIONS = JudgeOptions()
"""The default of a command's `judge` parameter (typer never passes it: see `with_judge_options`)."""

# (command-line parameter, its option, the JudgeOptions field it fills), in --help order.
_JUDGE_PARAMETERS: tuple[tuple[str, Any, str], ...] = (
    ("judge_base_url", JudgeUrlOption, "base_url"),
    ("judge_model", JudgeModelOption, "model"),
    ("judge_api_key", JudgeKeyOption, "api_key"),
    ("judge_concurrency", JudgeConcurrencyOption, "concurrency"),
    ("price_in", JudgePriceInOption, "price_in"),
    ("price_out", JudgePriceOutOption, "price_out"),
)

Command = TypeVar("Command", bound=Callable[..., Any])


def with_judge_options(command: Command) -> Command:
    """Give `command` the judge options, declared here once, as its one `judge: JudgeOptions` parameter."""
    return _gathered(command, "judge", _JUDGE_PARAMETERS, JudgeOptions)


# ---- research options: `deepdraft research`, and `deepdraft batch` where they are every line's default --

PolicyOption = Annotated[
    PolicyName | None, typer.Option("--policy", help="warp (default), plan-write or single-pass.")
]
DepthOption = Annotated[
    Depth | None,
    typer.Option("--depth", help="quick (small model, ~15 actions), standard (default) or deep."),
]
SeedOption = Annotated[int | None, typer.Option("--seed", help="Base sampling seed, for reproducible runs.")]
MaxTokensTotalOption = Annotated[
    int | None,
    typer.Option(
        "--max-tokens-total",
        help="Token cap, resumes included (a batch: for all its runs together); when spent, reports are "
        "finished as they are.",
    ),
]
MaxTimeOption = Annotated[
    str | None,
    typer.Option(
        "--max-time",
        help="Time budget of a run, e.g. 90s, 30m, 2h (resumes included; a batch: each run's); when spent, "
        "the report is finished.",
    ),
]
RpmOption = Annotated[
    float | None, typer.Option("--rpm", help="Most LLM requests per minute (a batch: all its runs together).")
]
LanguageOption = Annotated[
    str | None,
    typer.Option("--language", help="Report language (default: the question's), e.g. English, zh."),
]
LengthOption = Annotated[int | None, typer.Option("--length", help="Target length of the report in words.")]
PlannerModelOption = Annotated[
    str | None, typer.Option("--planner-model", help="Model for outline decisions (default: --model).")
]
WriterModelOption = Annotated[
    str | None, typer.Option("--writer-model", help="Model for writing sections (default: --model).")
]
MaxStepsOption = Annotated[
    int | None, typer.Option("--max-steps", help="Most LLM actions in the run (default 140).")
]
MaxExpansionsOption = Annotated[
    int | None, typer.Option("--max-expansions", help="Most deepening decisions (default 12).")
]
WebOption = Annotated[
    bool | None, typer.Option("--web/--no-web", help="Search the web too (off by default).")
]
WebOnlyOption = Annotated[
    bool | None, typer.Option("--web-only", help="Search the web and no knowledge base.")
]
EmbedUrlOption = Annotated[
    str | None,
    typer.Option("--embed-base-url", help="OpenAI-compatible /embeddings endpoint for --kb PATH."),
]
EmbedModelOption = Annotated[
    str | None, typer.Option("--embed-model", help="Embedding model name at --embed-base-url.")
]
VerifyOption = Annotated[
    bool | None,
    typer.Option("--verify/--no-verify", help="Check each cited sentence against its sources (on)."),
]
SynthesisOption = Annotated[
    bool | None, typer.Option("--synthesis/--no-synthesis", help="Add a summary and a conclusion (on).")
]
FormatOption = Annotated[
    list[str] | None,  # typer cannot take a list of Literals; settings validate the names
    typer.Option("--format", "-f", help="Also export as md, html, pdf, docx, json, bibtex or csl."),
]
ReferencesStyleOption = Annotated[
    ReferencesStyle | None, typer.Option("--references-style", help="numbered (default) or author-date.")
]
TemplateOption = Annotated[
    Path | None, typer.Option("--template", help="A Jinja2 template for the final Markdown.")
]


@dataclass(frozen=True)
class ResearchOptions:
    """The research options of a command, as given (None: the configured default)."""

    base_url: str | None = None
    model: str | None = None
    api_key: str | None = None
    policy: PolicyName | None = None
    depth: Depth | None = None
    seed: int | None = None
    max_tokens_total: int | None = None
    max_time: str | None = None
    rpm: float | None = None
    language: str | None = None
    length: int | None = None
    planner_model: str | None = None
    writer_model: str | None = None
    max_steps: int | None = None
    max_expansions: int | None = None
    only: list[str] | None = None
    exclude: list[str] | None = None
    web: bool | None = None
    web_only: bool | None = None
    embed_base_url: str | None = None
    embed_model: str | None = None
    verify: bool | None = None
    synthesis: bool | None = None
    formats: list[str] | None = None
    references_style: ReferencesStyle | None = None
    template: Path | None = None

    def flags(self) -> dict[str, dict[str, Any]]:
        """The options as `config.load_settings` takes flags (None and empty lists: not given)."""
        return {
            "llm": {
                "base_url": self.base_url,
                "model": self.model,
                "api_key": self.api_key,
                "max_tokens_total": self.max_tokens_total,
                "requests_per_minute": self.rpm,
                "planner_model": self.planner_model,
                "writer_model": self.writer_model,
            },
            "research": {
                "policy": self.policy,
                "depth": self.depth,
                "seed": self.seed,
                "language": self.language,
                "length_words": self.length,
                "max_steps": self.max_steps,
                "max_expansions": self.max_expansions,
                "max_time": self.max_time,
            },
            "retrieval": {"only": self.only or None, "exclude": self.exclude or None},
            "embedding": {
                "base_url": self.embed_base_url,
                "model": self.embed_model,
                "enabled": True if self.embed_base_url else None,
            },
            "web": {"enabled": True if self.web_only else self.web, "only": self.web_only},
            "output": {
                "verify": self.verify,
                "synthesis": self.synthesis,
                "formats": self.formats or None,
                "references_style": self.references_style,
                "template": self.template,
            },
        }


NO_RESEARCH_OPTIONS = ResearchOptions()
"""The default of a command's `research` parameter (typer never passes it: see `with_research_options`)."""

_RESEARCH_PARAMETERS: tuple[tuple[str, Any, str], ...] = (
    ("base_url", BaseUrlOption, "base_url"),
    ("model", ModelOption, "model"),
    ("api_key", ApiKeyOption, "api_key"),
    ("policy", PolicyOption, "policy"),
    ("depth", DepthOption, "depth"),
    ("seed", SeedOption, "seed"),
    ("max_tokens_total", MaxTokensTotalOption, "max_tokens_total"),
    ("max_time", MaxTimeOption, "max_time"),
    ("rpm", RpmOption, "rpm"),
    ("language", LanguageOption, "language"),
    ("length", LengthOption, "length"),
    ("planner_model", PlannerModelOption, "planner_model"),
    ("writer_model", WriterModelOption, "writer_model"),
    ("max_steps", MaxStepsOption, "max_steps"),
    ("max_expansions", MaxExpansionsOption, "max_expansions"),
    ("only", OnlyOption, "only"),
    ("exclude", ExcludeOption, "exclude"),
    ("web", WebOption, "web"),
    ("web_only", WebOnlyOption, "web_only"),
    ("embed_base_url", EmbedUrlOption, "embed_base_url"),
    ("embed_model", EmbedModelOption, "embed_model"),
    ("verify", VerifyOption, "verify"),
    ("synthesis", SynthesisOption, "synthesis"),
    ("formats", FormatOption, "formats"),
    ("references_style", ReferencesStyleOption, "references_style"),
    ("template", TemplateOption, "template"),
)


def with_research_options(command: Command) -> Command:
    """Give `command` the research options, declared here once, as its one `research: ResearchOptions`."""
    return _gathered(command, "research", _RESEARCH_PARAMETERS, ResearchOptions)


def _gathered(command: Command, name: str, options: tuple[tuple[str, Any, str], ...], value: type) -> Command:
    """`command` with the options `options` in the place of its parameter `name`, gathered into `value`.

    Typer makes a command-line option of every parameter in a command's signature, so the signature
    typer reads has one parameter per option in place of `name` (where the command lists `name`,
    there they appear in --help); on a call they are gathered back into one `value`.
    """
    signature = inspect.signature(command, eval_str=True)
    parameters: list[inspect.Parameter] = []
    for parameter in signature.parameters.values():  # typer passes every value by keyword
        if parameter.name != name:
            parameters.append(parameter.replace(kind=inspect.Parameter.KEYWORD_ONLY))
            continue
        parameters += [
            inspect.Parameter(option, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=annotation)
            for option, annotation, _ in options
        ]
    if len(parameters) == len(signature.parameters):
        raise TypeError(f"{command.__name__} has no `{name}` parameter to replace")

    @functools.wraps(command)
    def call(**kwargs: Any) -> Any:
        given = {field: kwargs.pop(option, None) for option, _, field in options}
        return command(**{name: value(**given)}, **kwargs)

    call.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
    call.__annotations__ = {p.name: p.annotation for p in parameters} | {
        "return": signature.return_annotation
    }
    return call  # type: ignore[return-value]
