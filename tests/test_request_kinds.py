"""The test fakes recognise each request by its structure, so a reworded template changes nothing.

`tests/support/request_kinds.py` reads a request's kind from its reply shape or schema (over HTTP:
its grammar or response_format) and, for free text, from the prompt's protocol data. A full run
with every template reworded must ask the same kinds of request in the same order, in-process and
over HTTP; a fake that keyed on a phrase of a template would fail here.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from deepdraft.config import load_settings
from deepdraft.llm.scripted import FunctionLLM
from deepdraft.protocol import prompts
from deepdraft.run import runner
from tests.support.openai_server import FakeOpenAIServer
from tests.support.reword_templates import reword
from tests.support.scenario import ScenarioModel, as_responder, classify, classify_body

QUESTION = "How did presidents argue about tariffs?"
# Every kind of the protocol: the policy's actions, then verification, repair and synthesis. The
# quick preset re-cites an unsupported sentence rather than have it rewritten: here it is
# rewritten, so that the repair request is asked too.
EXPECTED_KINDS = {"search", "init-plan", "write", "extend-plan", "repair", "summary", "conclusion"}
# The quick preset searches with each part's own title and plan (no request) and writes each part
# passage by passage; the sentences kept from the fake's replies hold up against their passages,
# so nothing is left to repair.
PASSAGE_KINDS = {"init-plan", "write-passage", "extend-plan", "summary", "conclusion"}
FLAGS = {"research": {"depth": "quick"}, "output": {"verify_policy": "repair"}}
WHOLE_WRITES = {
    # ... and here the model chooses the keywords and writes each part whole, as in `standard`.
    "research": {"depth": "quick", "write_by_passage": False, "plan_searches": False},
    "output": {"verify_policy": "repair"},
}


@pytest.fixture
def reworded_templates(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    original = prompts._load
    prompts._environment.cache_clear()
    monkeypatch.setattr(prompts, "_load", lambda name: reword(original(name)))
    yield
    prompts._environment.cache_clear()


def kinds_in_process(corpus_dir: Path, run_id: str, flags: dict[str, Any] = FLAGS) -> list[tuple[str, str]]:
    llm = FunctionLLM(ScenarioModel(expansions=1))
    settings = load_settings(flags=flags)
    report = runner.start(QUESTION, settings, kb=str(corpus_dir), llm=llm, run_id=run_id)
    assert "This summary gathers" in report.markdown and "This conclusion gathers" in report.markdown
    return [classify(request) for request in llm.requests]


def test_the_fake_recognises_the_same_requests_when_every_template_is_reworded(
    corpus_dir: Path, request: pytest.FixtureRequest
) -> None:
    as_written = kinds_in_process(corpus_dir, "as-written")
    assert {kind for kind, _ in as_written} == PASSAGE_KINDS
    whole = kinds_in_process(corpus_dir, "whole-writes", WHOLE_WRITES)
    assert {kind for kind, _ in whole} == EXPECTED_KINDS
    request.getfixturevalue("reworded_templates")
    assert "Please note: " in prompts.render("verify", passages="", claims="", count=1)
    assert kinds_in_process(corpus_dir, "reworded") == as_written
    assert kinds_in_process(corpus_dir, "reworded-whole-writes", WHOLE_WRITES) == whole


def test_over_http_the_grammar_tells_the_same_kinds(corpus_dir: Path, reworded_templates: None) -> None:
    as_written = kinds_in_process(corpus_dir, "in-process")
    with FakeOpenAIServer(as_responder(ScenarioModel(expansions=1))) as server:
        flags = {**FLAGS, "llm": {"base_url": server.base_url, "model": "m"}}
        runner.start(QUESTION, load_settings(flags=flags), kb=str(corpus_dir), run_id="http")
        bodies = server.requests
    # Every request but a passage's constrains its reply with a grammar; a passage's is plain text.
    assert all(("grammar" in body) != (classify_body(body)[0] == "write-passage") for body in bodies)
    assert [classify_body(body) for body in bodies] == as_written
