"""The embedded model on this machine: load time, prefill and decode speed, and one quick report.

What is measured
    * load: seconds to open the cached GGUF with llama.cpp;
    * prefill: prompt tokens per second, from a ~1,000-token prompt answered with one token;
    * decode: generated tokens per second over 128 tokens (no grammar, no stop);
    * a `quick` research report on the demo corpus with a fixed seed, through the real runner:
      wall time, actions, prompt and output tokens, refused replies, nodes written.

Needs `deepdraft setup` (the model and the demo corpus) and the `local` extra.
Usage: python bench/embedded.py [--model NAME] [--skip-report] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from typing import Any

from deepdraft.config import load_settings
from deepdraft.llm.embedded import load_embedded
from deepdraft.ports import ChatRequest
from deepdraft.run import runner
from deepdraft.run.runs import Runs

QUESTION = "How did presidents argue about tariffs?"
FILLER = (
    "The tariff question divided the country for most of its history: duties on imports raised "
    "revenue for the federal government, protected young manufactures, and burdened farmers who sold "
    "abroad and bought at home. "
)


def speeds(model: str | None) -> dict[str, Any]:
    started = time.perf_counter()
    llm = load_embedded(model, seed=1)
    load_s = time.perf_counter() - started

    prompt = "Summarise in one word.\n" + FILLER * 28
    prompt_tokens = llm.count_tokens(prompt)
    started = time.perf_counter()
    llm.complete(ChatRequest.user(prompt, max_tokens=1))
    prefill_s = time.perf_counter() - started

    started = time.perf_counter()
    result = llm.complete(
        ChatRequest.user("Write a long essay about the history of tariffs.", max_tokens=128, temperature=0.7)
    )
    decode_s = time.perf_counter() - started
    return {
        "model": llm.model_name,
        "context_window": llm.context_window,
        "load_s": round(load_s, 2),
        "prefill_tokens": prompt_tokens,
        "prefill_tok_per_s": round(prompt_tokens / prefill_s, 1),
        "decode_tokens": result.usage.completion_tokens,
        "decode_tok_per_s": round(result.usage.completion_tokens / decode_s, 1),
    }


def quick_report(model: str | None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as home:
        os.environ["DEEPDRAFT_HOME"] = home
        settings = load_settings(flags={"llm": {"model": model}, "research": {"depth": "quick", "seed": 7}})
        started = time.perf_counter()
        report = runner.start(QUESTION, settings)
        seconds = time.perf_counter() - started
        with Runs.open() as runs:
            steps = runs.steps(report.run_id)
    manifest = report.manifest
    return {
        "wall_min": round(seconds / 60, 2),
        "actions": manifest["steps"],
        "refused": sum(not step.valid for step in steps),
        "prompt_tokens": manifest["tokens"]["prompt"],
        "output_tokens": manifest["tokens"]["completion"],
        "nodes": manifest["report"]["nodes"],
        "unwritten": len(manifest["report"]["unwritten"]),
        "sources_cited": manifest["report"]["sources_cited"],
        "stop_reason": manifest["report"]["stop_reason"],
        "report_words": len(report.markdown.split()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--skip-report", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    summary = {"speed": speeds(args.model)}
    if not args.skip_report:
        summary["quick_report"] = quick_report(args.model)
    if args.json:
        print(json.dumps(summary, indent=2))
        return
    speed = summary["speed"]
    print(
        f"{speed['model']}: load {speed['load_s']} s; prefill {speed['prefill_tok_per_s']} tok/s "
        f"({speed['prefill_tokens']} tokens); decode {speed['decode_tok_per_s']} tok/s; "
        f"context {speed['context_window']}"
    )
    if "quick_report" in summary:
        quick = summary["quick_report"]
        print(
            f"quick report: {quick['wall_min']} min, {quick['actions']} actions "
            f"({quick['refused']} refused), {quick['prompt_tokens']:,} prompt + "
            f"{quick['output_tokens']:,} output tokens, {quick['nodes']} nodes "
            f"({quick['unwritten']} unwritten), {quick['sources_cited']} sources cited, "
            f"{quick['report_words']} words; stopped: {quick['stop_reason']}"
        )


if __name__ == "__main__":
    main()
