"""One real research run with the embedded model in-process — the README's main job, as a new user runs it.

This is the slowest test of the suite (a few minutes on two cores): a `quick` run with a fixed seed
on the demo corpus, with no `--base-url`, so the model runs inside the `deepdraft research`
process exactly as on a fresh machine. (Serving the same model over HTTP is covered by one short
request in tests/server/test_serve_model.py.) Its assertions read the model's own replies from the
run journal, not the rendered report, so no later repair step could make them pass by construction.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from deepdraft.core.citations import cited_keys
from deepdraft.protocol.action_prompts import PLANNED_SEARCH
from deepdraft.run.runs import Runs

pytestmark = [pytest.mark.slow, pytest.mark.embedded]

QUESTION = "How did presidents argue about tariffs?"


def require_embedded_setup() -> None:
    """In CI the model must be there (`.ci/run` runs `deepdraft setup`); elsewhere, say what is missing."""
    from deepdraft.llm import embedded_models as models
    from deepdraft.run import demo

    try:
        import llama_cpp  # noqa: F401

        models.resolve_model(None)
        assert demo.demo_corpus_path().is_file(), "the demo corpus is missing"
    except Exception as exc:
        message = f"embedded model or demo corpus not set up ({exc}); run `deepdraft setup`"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


@pytest.mark.timeout(900)
def test_quick_research_with_the_embedded_model_in_process(tmp_path: Path) -> None:
    require_embedded_setup()
    output = tmp_path / "report.md"
    started = time.monotonic()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "deepdraft",
            "research",
            QUESTION,
            "--depth",
            "quick",
            "--seed",
            "7",
            "--max-steps",  # about 35 s an action on two cores, plus verification and synthesis
            "11",  # (4-6 calls): keeps the run within ten minutes
            "--output",
            str(output),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    minutes = (time.monotonic() - started) / 60
    assert result.returncode == 0, result.stderr
    print(f"quick embedded run: {minutes:.1f} min")  # shown with -s; the bench records timings

    with Runs.open() as runs:
        [run] = runs.all()
        state = runs.state(run.id)
        steps = runs.steps(run.id)
    assert state is not None and state.outline is not None
    # The embedded model answered, with no server named.
    assert run.model == "qwen2.5-coder-1.5b" and run.settings.llm.base_url is None

    # The structure: a title and at least three top-level sections, most of them written.
    outline = state.outline
    assert outline.title.strip()
    assert len(outline.sections) >= 3
    written = [s for s in outline.sections if s.content]
    assert len(written) >= 2, [s.note for s in outline.sections]

    # Citations, read from the accepted write replies as journaled: every key cited was in the
    # evidence shown for that very write (the prompt lists it), and the key is known. A whole write
    # the model left uncited is accepted only with citations deepdraft placed itself (the quick
    # preset's `attach_citations_after = 0`), flagged as such in the journal and counted in the
    # manifest; every other accepted write carries the model's own citations.
    # With the quick preset the model writes each part passage by passage (one passage shown per
    # request, plain sentences back), and deepdraft cites each paragraph to its passage.
    accepted_writes = [s for s in steps if s.action == "write" and s.valid]
    assert accepted_writes
    # The quick preset's searches are deepdraft's own (a part's title and plan): no model call.
    searches = [s for s in steps if s.action == "search"]
    assert searches and all(s.prompt == PLANNED_SEARCH and s.completion_tokens == 0 for s in searches)
    seen = set(state.registry.items)
    attached: set[str | None] = set()
    for step in accepted_writes:
        assert step.parsed is not None
        keys = {key for group in cited_keys(step.parsed["text"]) for key in group}
        shown = set(re.findall(r"^bibkey:(textid\d+)$", step.prompt, flags=re.MULTILINE))
        assert keys, f"{step.target}: the accepted text cites nothing"
        assert keys <= shown <= seen, f"{step.target}: cites evidence it was not shown: {keys - shown}"
        if run.settings.research.write_by_passage:
            for paragraph in step.parsed["text"].split("\n\n"):
                assert len({key for group in cited_keys(paragraph) for key in group}) == 1, paragraph
            continue
        model_cited = "\\cite" in step.reply or re.search(r"textid\d+", step.reply) is not None
        if step.parsed.get("citations_attached") or step.parsed.get("sentences_cited"):
            attached.add(step.target)  # deepdraft cited all of it, or what the model left uncited
        else:
            attached.discard(step.target)  # the manifest counts a part's last accepted write
            assert model_cited, f"{step.target}: the model cited nothing and no citations were attached"

    # The report: [n] citations that all resolve to References entries naming demo documents.
    report = output.read_text(encoding="utf-8")
    assert report.startswith("# ")
    body, references = report.split("\n## References\n")
    cited = {
        int(number)
        for group in re.findall(r"\[(\d[^\]]*)\]", body)  # [1], [1, 2], [1, p. 3; 2]
        for number in re.findall(r"\d+", re.sub(r"pp?\. [\d, –-]+", "", group))
    }
    listed = {int(n) for n in re.findall(r"^\[(\d+)\] ", references, flags=re.MULTILINE)}
    assert cited and cited == listed
    assert "State of the Union" in references

    # The finishing passes ran for real: the manifest counts the checked sentences.
    manifest = json.loads(
        (Path(os.environ["DEEPDRAFT_HOME"]) / "runs" / run.id / "manifest.json").read_text(encoding="utf-8")
    )
    placed = manifest["report"].get("citations_attached", {"sections": 0})
    assert placed["sections"] == len(attached), placed
    verification = manifest["verification"]
    assert verification["checked"] >= 1, verification
    assert verification["checked"] == sum(
        verification[verdict] for verdict in ("supported", "repaired", "recited", "removed", "unverified")
    )
