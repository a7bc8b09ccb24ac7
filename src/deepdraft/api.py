"""The Python API: the same engine the CLI drives, for programs and notebooks.

    import deepdraft
    report = deepdraft.research("How did presidents argue about tariffs?", kb="~/sotu",
                                base_url="http://localhost:8000/v1", model="agentcpm-report")
    print(report.markdown)

`llm` and `kb` also take objects (any `LLM` / `Retriever`), which is how tests and other programs
plug in their own model or search engine. The async twins run the same engine in a worker thread.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from deepdraft.config import load_settings
from deepdraft.events import EventSink, ignore
from deepdraft.ports import LLM, Retriever
from deepdraft.run import runner


def research(
    question: str,
    kb: str | Path | Retriever | None = None,  # a KB name, a folder or .jsonl, or any Retriever
    llm: LLM | None = None,
    *,
    base_url: str | None = None,
    model: str | None = None,
    api_key: str | None = None,
    policy: str | None = None,
    max_steps: int | None = None,
    max_expansions: int | None = None,
    output: str | Path | None = None,
    config: str | Path | None = None,
    on_event: EventSink = ignore,
) -> runner.Report:
    """Research `question` and return the report (also written to the run folder or `output`)."""
    settings = load_settings(
        Path(config) if config else None,
        flags={
            "llm": {"base_url": base_url, "model": model, "api_key": api_key},
            "research": {"policy": policy, "max_steps": max_steps, "max_expansions": max_expansions},
        },
    )
    retriever = None if kb is None or isinstance(kb, str | Path) else kb
    kb_ref = str(kb) if isinstance(kb, str | Path) else None
    return runner.start(
        question,
        settings,
        kb=kb_ref,
        llm=llm,
        retriever=retriever,
        output=Path(output) if output else None,
        on_event=on_event,
    )


def resume(
    run_id: str,
    llm: LLM | None = None,
    retriever: Retriever | None = None,
    *,
    base_url: str | None = None,
    model: str | None = None,
    api_key: str | None = None,
    on_event: EventSink = ignore,
) -> runner.Report:
    """Continue an interrupted run from its last checkpoint.

    A finished run raises `deepdraft.errors.RunAlreadyFinished` (its report is already written;
    `deepdraft export` writes it again in any format).
    """
    settings = load_settings(flags={"llm": {"base_url": base_url, "model": model, "api_key": api_key}})
    return runner.resume(run_id, settings, llm=llm, retriever=retriever, on_event=on_event)


async def aresearch(question: str, *args: Any, **kwargs: Any) -> runner.Report:
    return await asyncio.to_thread(research, question, *args, **kwargs)


async def aresume(run_id: str, *args: Any, **kwargs: Any) -> runner.Report:
    return await asyncio.to_thread(resume, run_id, *args, **kwargs)
