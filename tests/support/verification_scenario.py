"""A synthetic report for verification tests: many passages, sentences of every kind.

Passages are drawn from a small vocabulary, so sentences overlap many of them; sentences are
close copies of their passages, copies of a passage they do not cite, half-supported claims, word
salad, claims with a figure their passages may lack, negations, list items and table rows.
`FactChecker` answers from the prompt's data alone (never its wording), so any run of the same pass
asks and gets the same.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from itertools import pairwise

from deepdraft.core.evidence import EvidenceRegistry, Passage, Source
from deepdraft.core.outline import Outline
from deepdraft.core.state import RunState
from deepdraft.errors import LLMBudgetExhausted
from deepdraft.ports import ChatRequest
from tests.support.scenario import classify

WORDS = (
    "tariff duties revenue farmers industry labor debt bonds banking currency silver gold railroads "
    "immigration harbors canals treaty congress senate mills wages prices surplus deficit reform "
    "commerce exports imports navy army frontier settlers courts statute coinage credit panic "
    "depression recovery shipping markets manufactures protection retaliation grain cotton steel"
)
VOCABULARY = WORDS.split()
YEARS = [str(year) for year in range(1880, 1900)]


def _digest(*parts: str) -> int:
    return int(hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()[:8], 16)


def make_state(seed: int = 11) -> RunState:
    rng = random.Random(seed)
    registry = EvidenceRegistry()
    texts: list[str] = []
    for i in range(60):
        words = rng.sample(VOCABULARY, rng.randint(10, 22))
        if i % 3 == 0:
            words.insert(rng.randrange(len(words)), rng.choice(YEARS))
        if i % 7 == 0:
            words.insert(rng.randrange(len(words)), "not")
        text = " ".join(words).capitalize() + "."
        texts.append(text)
        registry.register(Passage(text, Source(f"doc{i}", f"Address {i}", f"/corpus/{i}.txt")))
    keys = list(registry.items)

    def sentence(kind: int) -> str:
        cited = rng.sample(range(len(keys)), rng.choice((1, 1, 2)))
        own = [w.strip(".").lower() for i in cited for w in texts[i].split()]
        other = texts[rng.randrange(len(texts))].strip(".").lower().split()
        if kind == 0:  # a close copy of its passages
            words = rng.sample(own, min(len(own), rng.randint(5, 9)))
        elif kind == 1:  # a copy of a passage it does not cite
            words = rng.sample(other, min(len(other), rng.randint(5, 9)))
        elif kind == 2:  # half its passages, half anything
            words = rng.sample(own, 3) + rng.sample(VOCABULARY, 3)
        elif kind == 3:  # words from anywhere
            words = rng.sample(VOCABULARY, rng.randint(3, 8))
        elif kind == 4:  # a figure its passages may lack
            words = [*rng.sample(own, 4), rng.choice(YEARS)]
        else:  # a negation
            words = ["never", *rng.sample(own, 5)]
        cite = "\\cite{" + ", ".join(keys[i] for i in cited) + "}"
        return f"{' '.join(words).capitalize()} {cite}."

    outline = Outline.create("Tariffs", [(f"Part {n}", "Cover it.") for n in range(1, 5)])
    for number in range(1, 5):
        outline.add_children(f"section-{number}", [("A", "a"), ("B", "b")])
    for located in outline.walk():
        lines = [" ".join(sentence(rng.randrange(6)) for _ in range(rng.randint(2, 5)))]
        if rng.random() < 0.4:
            lines.append("- " + sentence(rng.randrange(6)))
        if rng.random() < 0.3:
            lines.append(f"| {sentence(rng.randrange(6))} | 12 |")
        if rng.random() < 0.3:
            lines.append("An uncited remark about the period.")
        located.node.content = "\n\n".join(lines)
    return RunState(question="How did presidents argue about tariffs?", outline=outline, registry=registry)


class FactChecker:
    """Answers from the prompt alone; now and then unreadable, refusing or citing the wrong key."""

    def __init__(self, budget: int | None = None) -> None:
        self.budget = budget

    def __call__(self, request: ChatRequest) -> str:
        if self.budget is not None:
            if self.budget == 0:
                raise LLMBudgetExhausted("the scripted token budget is spent")
            self.budget -= 1
        prompt = request.messages[-1].content
        kind, _ = classify(request)
        if kind == "verify":
            # Decided by the data (the numbered claims, and the feedback verify.py gives after an
            # unreadable answer), so a reworded template gets the same answers.
            claims = re.findall(r"^(\d+)\. (.*) \[cites: ([^\]]+)\]$", prompt, flags=re.MULTILINE)
            retried = "had no readable verdict" in prompt
            if _digest(str(retried), *(claim for _, claim, _ in claims)) % (2 if retried else 4) == 0:
                return "Most of them look right to me."
            verdicts = [
                {"claim": int(n), "supported": "yes" if _digest(claim, keys) % 3 == 0 else "no"}
                for n, claim, keys in claims
            ]
            return json.dumps({"verdicts": verdicts})
        if kind == "repair":
            passages = re.findall(r"^bibkey:(textid\d+)\n(.*)$", prompt, flags=re.MULTILINE)
            choice = _digest(_sentence_under_repair(prompt)) % 5
            key, text = passages[0]
            if choice == 0:
                return "<action>NONE</action>"
            if choice == 4:  # words the passages do not have
                return f"<action>Senators quarrelled about weather and poetry \\cite{{{key}}}.</action>"
            if choice == 1:
                return f"<action>{' '.join(text.split()[:8]).rstrip('.')} \\cite{{textid999}}.</action>"
            if choice == 2:  # without a citation: put back from the keys
                return f"<thought>from the passage</thought><action>{' '.join(text.split()[:9])}</action>"
            return f"<action>{' '.join(text.split()[1:10]).rstrip('.')} \\cite{{{key}}}.</action>"
        raise AssertionError(f"unexpected prompt: {prompt[:120]}")


def _sentence_under_repair(prompt: str) -> str:
    """The prompt's line that is a sentence of the report: made of the scenario's words only, and
    not a passage (a passage follows its `bibkey:` line). Found from the data, not the wording."""
    words = {*VOCABULARY, *YEARS, "never", "not"}
    lines = prompt.splitlines()
    passages = {after for before, after in pairwise(lines) if before.startswith("bibkey:")}
    return next(
        line
        for line in lines
        if line.strip() and line not in passages and all(w.strip(".,").lower() in words for w in line.split())
    )
