"""A scripted judge for the eval tests: valid, deterministic answers to every eval prompt.

It reads what each metric's prompt shows (criteria, numbered statements, key point, two reports)
and answers from that alone, so it works as a `FunctionLLM` and behind the fake OpenAI server, in
any order and from any thread. Replies come wrapped the way real models wrap them (code fences,
prose, trailing commas) to exercise the tolerant parser.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from deepdraft.ports import ChatRequest

DATA = Path(__file__).resolve().parents[1] / "data" / "eval" / "benchmarks"


def race_scores(criterion: str) -> tuple[float, float]:
    """(target, reference) score the scripted judge gives a criterion."""
    return 3.0 + len(criterion) % 5, 6.5


def supported(statement: str, passage: str) -> bool:
    """The scripted FACT verdict: some word of 5+ letters of the statement occurs in the passage."""
    words = {w.lower() for w in re.findall(r"[A-Za-z]{5,}", statement)}
    return bool(words & {w.lower() for w in re.findall(r"[A-Za-z]{5,}", passage)})


def answer(prompt: str) -> str:
    if "<article_1>" in prompt:
        dims: dict[str, list[dict[str, Any]]] = {}
        current = ""
        for line in prompt.splitlines():
            if line.startswith("### "):
                current = line[4:].strip()
                dims[current] = []
            elif line.startswith("- criterion: ") and current:
                criterion = line.removeprefix("- criterion: ")
                target, reference = race_scores(criterion)
                dims[current].append(
                    {
                        "criterion": criterion,
                        "analysis": "compared",
                        "article_1_score": target,
                        "article_2_score": reference,
                    }
                )
        body = json.dumps(dims, ensure_ascii=False)
        return f"Here is my evaluation:\n```json\n{body[:-1]},}}\n```\nDone."  # a trailing comma
    if "## Statements that cite it" in prompt:
        passage = prompt.split("## Source passage\n", 1)[1].split("\n\n## Statements", 1)[0]
        block = prompt.split("## Statements that cite it\n", 1)[1].split("\n\n## What to do", 1)[0]
        labels = []
        for line in block.splitlines():
            number, statement = line.split(". ", 1)
            verdict = "supported" if supported(statement, passage) else "unsupported"
            labels.append({"statement": int(number), "label": verdict})
        return json.dumps({"labels": labels})
    if "<report_a>" in prompt:
        a = prompt.split("<report_a>\n", 1)[1].split("\n</report_a>", 1)[0]
        b = prompt.split("<report_b>\n", 1)[1].split("\n</report_b>", 1)[0]
        preferred = "a" if len(a) > len(b) else "b"  # this judge likes longer reports
        dims = ("instruction_following", "comprehensiveness", "completeness", "writing_quality")
        return json.dumps(
            {d: {"preferred": preferred, "explanation": "longer", "gap_score": 2} for d in dims}
        )
    if "## Key point\n" in prompt:
        point = prompt.split("## Key point\n", 1)[1].split("\n\n", 1)[0]
        report = prompt.split("<report>\n", 1)[1].split("\n</report>", 1)[0]
        label = "Supported" if supported(point, report) else "Omitted"
        return f'<think>checking</think>{{"label": "{label}", "justification": "scripted"}}'
    if "## Criterion: " in prompt:
        criterion = prompt.split("## Criterion: ", 1)[1].split("\n", 1)[0]
        return json.dumps({"rating": 4 + len(criterion) % 4, "justification": "scripted"})
    raise AssertionError(f"not an eval prompt: {prompt[:120]}")


def respond(request: ChatRequest) -> str:
    """For `FunctionLLM`: answers the metric's prompt (the first user message, also on a retry)."""
    return answer(next(m.content for m in request.messages if m.role == "user"))


def server_responder(body: dict[str, Any], index: int) -> str:
    """For `FakeOpenAIServer`."""
    return answer(next(m["content"] for m in body["messages"] if m["role"] == "user"))
