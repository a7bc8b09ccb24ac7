"""Command-line options that several commands share, declared once so their names and help agree.

Each command module (`app`, `kb`, `serve`, `eval`, `train`) imports what it needs
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
    """Give `command` the judge options, declared here once, as its one `judge: JudgeOptions` parameter.

    Typer makes a command-line option of every parameter in a command's signature, so the signature
    typer reads has the six judge parameters in place of `judge` (where the command lists `judge`,
    there they appear in --help); on a call they are gathered back into one `JudgeOptions`.
    """
    signature = inspect.signature(command, eval_str=True)
    parameters: list[inspect.Parameter] = []
    for parameter in signature.parameters.values():  # typer passes every value by keyword
        if parameter.name != "judge":
            parameters.append(parameter.replace(kind=inspect.Parameter.KEYWORD_ONLY))
            continue
        parameters += [
            inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=option)
            for name, option, _ in _JUDGE_PARAMETERS
        ]
    if len(parameters) == len(signature.parameters):
        raise TypeError(f"{command.__name__} has no `judge` parameter to replace")

    @functools.wraps(command)
    def call(**kwargs: Any) -> Any:
        given = {field: kwargs.pop(name, None) for name, _, field in _JUDGE_PARAMETERS}
        return command(judge=JudgeOptions(**given), **kwargs)

    call.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
    call.__annotations__ = {p.name: p.annotation for p in parameters} | {
        "return": signature.return_annotation
    }
    return call  # type: ignore[return-value]
