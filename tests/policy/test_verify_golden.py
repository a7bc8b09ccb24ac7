"""Verification decides exactly as it did before its speed-ups: same requests, verdicts and rewrites.

A synthetic report (`tests.support.verification_scenario`: many passages, sentences of every
kind) is verified under each policy by a fact-checker whose answers depend only on the prompt.
Everything the pass produces — every request (by hash), every sentence's verdict, reason and
final text, the rewritten node texts — is compared with `data/verify_golden.json`. Its decisions
were first pinned with the code of f8e2dce, before passage features were cached and re-cite
candidates pre-filtered; it was regenerated at 057f156 (same decisions under the old fact-checker)
when the fact-checker stopped hashing the template's wording, and at 7d4c3f5 when the grammar's
strings stopped allowing "<" (the repair requests' hashes only).
Regenerate it only for an intended change of behaviour:
``python -m tests.policy.test_verify_golden > tests/data/verify_golden.json``.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from deepdraft.llm.scripted import FunctionLLM
from deepdraft.policy.finishing.verify import Verifier
from deepdraft.settings import OutputSettings, ResearchSettings
from tests.support.verification_scenario import FactChecker, make_state

GOLDEN = Path(__file__).resolve().parents[1] / "data" / "verify_golden.json"


def outcome(policy: str, budget: int | None = None) -> dict[str, Any]:
    llm = FunctionLLM(FactChecker(budget))
    state = Verifier(llm, ResearchSettings(), OutputSettings(verify_policy=policy), lambda event: None).run(
        make_state()
    )
    assert state.verification is not None and state.outline is not None
    return {
        "requests": [
            hashlib.sha256(json.dumps(r.to_dict(), sort_keys=True).encode("utf-8")).hexdigest()[:16]
            for r in llm.requests
        ],
        "verification": state.verification.model_dump(mode="json"),
        "nodes": {
            located.position: [located.node.content, located.node.note] for located in state.outline.walk()
        },
        "finishing_steps": state.finishing_steps,
    }


CASES = {"repair": ("repair", None), "recite": ("recite", None), "remove": ("remove", None),
         "repair-out-of-budget": ("repair", 2)}  # fmt: skip


def generate() -> dict[str, Any]:
    return {name: outcome(policy, budget) for name, (policy, budget) in CASES.items()}


@pytest.mark.parametrize("name", list(CASES))
def test_verification_decides_as_before(name: str) -> None:
    expected = json.loads(GOLDEN.read_text(encoding="utf-8"))[name]
    policy, budget = CASES[name]
    assert outcome(policy, budget) == expected


def test_the_scenario_reaches_every_verdict_and_remedy() -> None:
    golden = json.loads(GOLDEN.read_text(encoding="utf-8"))
    verdicts = {c["verdict"] for case in golden.values() for c in case["verification"]["sentences"]}
    assert verdicts == {"supported", "repaired", "recited", "removed", "unverified"}
    reasons = " ".join(c["reason"] for c in golden["recite"]["verification"]["sentences"])
    assert "(lexical:" in reasons and "(judge:" in reasons and "no other passage" in reasons
    reasons = " ".join(c["reason"] for c in golden["repair"]["verification"]["sentences"])
    assert all(words in reasons for words in ("re-written", "did not cite", "does not follow", "unreadable"))


if __name__ == "__main__":
    json.dump(generate(), sys.stdout, indent=1, sort_keys=True)
    sys.stdout.write("\n")
