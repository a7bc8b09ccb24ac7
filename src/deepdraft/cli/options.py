"""Command-line options that several commands share, declared once so their names and help agree.

Each command module (`app`, `kb`, `serve`, `eval`, `train`) imports what it needs
from here; options that belong to one command stay with that command.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

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
