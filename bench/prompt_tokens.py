"""Prompt tokens of one WARP report: deepdraft's condensed draft vs the reference's whole draft.

What is measured
    Every prompt of one fixed, synthetic WARP trajectory is rendered twice and its tokens counted:

    * deepdraft: the real `deepdraft.protocol.prompts` templates, filled the way
      `deepdraft.policy.warp` fills them — search shows
      `Outline.condensed_view(search_budget_tokens, focus=target)`, write the same with
      `draft_budget_tokens`, extend shows
      `Outline.condensed_view(report_budget_tokens, focus=None)`, with the default `ResearchSettings`;
    * baseline: the same templates, but the draft is inlined WHOLE — every written node's full text
      on one line (`# Section-i [title]: [OK] content`, spec §2.6) — which is what the reference
      implementation does in every search, write and extend prompt, since its abbreviation never
      runs (spec §2.6 and §7.8 item 3).

    Only the draft rendering differs; the surrounding template text, the question, the instruction
    line and the evidence blocks are identical in both. Tokens are deepdraft's own estimate
    (`deepdraft.core.tokens.count_tokens`, which errs on the high side of BPE tokenizers); no tokenizer is
    loaded or downloaded.

Why
    The reference's prompts grow with the report, so its total prompt cost grows quadratically with
    the number of written nodes (≈1.1 M prompt tokens for an average report). deepdraft condenses
    the draft to a fixed budget so the cost per written node stays flat. Target: deepdraft's total
    is at most one third of the baseline's.

The trajectory
    The paper's average shape (Table 4: ≈40 writes, ≈9 expansions): 7 top-level sections, 9
    expansions of 2–5 children each (level-1 nodes, and every third one a level-2 node once one
    exists), 40 written nodes of ≈500 tokens of seeded pseudo-text, 10 evidence passages of ≈300
    tokens per write, 20 for the initial plan. The WARP order is followed exactly: search(outline) →
    init-plan → for each empty node in document order: search, write → once all are written:
    extend → ... → a final extend that stops (nop). That is 1 + 1 + 2 × 40 + 10 prompts.

    The linearity check repeats the construction for 10, 20, 40 and 80 written nodes, scaling
    sections and expansions in proportion (sections kept within the protocol's 3–12).

Run:  .venv/bin/python bench/prompt_tokens.py [--json]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import pairwise
from statistics import mean
from typing import Any

from deepdraft.core.evidence import EvidenceRegistry, Passage, Source, render_evidence
from deepdraft.core.outline import Outline, empty_outline_view
from deepdraft.core.tokens import count_tokens
from deepdraft.protocol import prompts
from deepdraft.settings import ResearchSettings

SEED = 20260206
NODE_TOKENS = 500
PASSAGE_TOKENS = 300
OUTLINE_PASSAGES = 20
NODE_PASSAGES = 10
TARGET_RATIO = 1 / 3
REFERENCE_MEASURED = 1_100_000  # prompt tokens the reference's own code used on such a trajectory
SCALES = (10, 20, 40, 80)
ACTIONS = ("search", "init-plan", "write", "extend")

QUESTION = (
    "Write a research report on solid-state lithium batteries: which electrolyte families are "
    "closest to commercial use, what limits their lifetime and manufacturing, and what the next "
    "five years are likely to bring."
)
_WORDS = """
    battery cell electrolyte sulfide oxide polymer interface lithium anode cathode dendrite
    conductivity stability voltage capacity cycle degradation pressure stack density energy
    manufacturing cost yield coating layer thickness temperature moisture air processing scale
    pilot line vendor automotive consumer grid storage safety thermal runaway separator binder
    solvent slurry sintering densification grain boundary impedance resistance diffusion ion
    transport mechanism evidence study report result measurement laboratory industrial commercial
    market forecast roadmap investment policy regulation supply chain material precursor
    abundance recycling lifecycle emission analysis comparison tradeoff advantage limitation
    challenge solution approach strategy design architecture prototype validation benchmark
    standard metric performance efficiency reliability durability failure mode crack void contact
    the a of and in to for with on by from that which while although because however therefore
    remains shows suggests indicates reaches exceeds improves reduces limits enables requires
    significantly substantially markedly notably typically largely partly recently currently
"""
VOCABULARY = tuple(_WORDS.split())


# ---- deterministic synthetic content ------------------------------------------------------------


def pseudo_text(rng: random.Random, tokens: int, cite_keys: list[str] | None = None) -> str:
    """Sentences of seeded random words, about `tokens` tokens long, citing `cite_keys` now and then."""
    sentences: list[str] = []
    total = 0
    while True:
        words = rng.choices(VOCABULARY, k=rng.randint(12, 24))
        sentence = " ".join(words).capitalize()
        if cite_keys and rng.random() < 0.5:
            sentence += " \\cite{" + ", ".join(rng.sample(cite_keys, k=rng.randint(1, 2))) + "}"
        sentence += "."
        cost = count_tokens(sentence)
        if sentences and total + cost / 2 > tokens:  # the text is closer to `tokens` without it
            return " ".join(sentences)
        sentences.append(sentence)
        total += cost


def title_and_plan(rng: random.Random) -> tuple[str, str]:
    title = " ".join(rng.choices(VOCABULARY[:60], k=rng.randint(2, 4))).title()
    return title, pseudo_text(rng, 30)


def fetch(rng: random.Random, registry: EvidenceRegistry, count: int) -> list[str]:
    """A search's result: `count` new passages of about PASSAGE_TOKENS tokens, registered."""
    keys = []
    for _ in range(count):
        number = len(registry.items) + 1
        source = Source(doc_id=f"doc{number}", title=f"Document {number}", location=f"corpus/doc{number}.pdf")
        keys.append(registry.register(Passage(text=pseudo_text(rng, PASSAGE_TOKENS), source=source)))
    return keys


# ---- the trajectory -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Shape:
    """How big the report gets: written nodes, top-level sections, expansions."""

    nodes: int
    sections: int
    expansions: int

    @classmethod
    def scaled(cls, nodes: int) -> Shape:
        """The paper's average (40 nodes, 7 sections, 9 expansions) scaled to `nodes`."""
        sections = min(12, max(3, round(7 * nodes / 40)))
        return cls(nodes, sections, round(9 * nodes / 40))


@dataclass(frozen=True)
class Step:
    """One prompt of the trajectory. `outline` is live: render it before asking for the next step."""

    action: str
    target: str
    outline: Outline | None
    evidence: str = ""


def child_counts(shape: Shape, rng: random.Random) -> list[int]:
    """Children per expansion: 2–5 each, summing to the nodes the sections leave over."""
    extra = shape.nodes - shape.sections
    if not 2 * shape.expansions <= extra <= 5 * shape.expansions:
        raise ValueError(f"{shape} cannot be built from expansions of 2-5 children")
    counts = [2] * shape.expansions
    for _ in range(extra - 2 * shape.expansions):
        counts[rng.choice([i for i, c in enumerate(counts) if c < 5])] += 1
    return counts


def expansion_target(outline: Outline, index: int, rng: random.Random) -> str:
    """A childless level-1 node; every third expansion a level-2 node, once one exists."""
    childless = [item for item in outline.walk() if not item.node.children and item.level <= 2]
    level_two = [item for item in childless if item.level == 2]
    level_one = [item for item in childless if item.level == 1]
    candidates = level_two if (index % 3 == 2 and level_two) or not level_one else level_one
    return rng.choice(candidates).position


def trajectory(shape: Shape, seed: int = SEED) -> Iterator[Step]:
    """The WARP order: search(outline), init-plan, (search, write)*, extend, ..., extend (nop)."""
    rng = random.Random(seed)
    registry = EvidenceRegistry()
    yield Step("search", "outline", None)
    keys = fetch(rng, registry, OUTLINE_PASSAGES)
    yield Step("init-plan", "outline", None, render_evidence(registry, keys))
    outline = Outline.create(
        "Solid-State Lithium Batteries", [title_and_plan(rng) for _ in range(shape.sections)]
    )
    counts = child_counts(shape, rng)
    for expansion in range(shape.expansions + 1):
        while (pending := outline.first_pending()) is not None:
            yield Step("search", pending.position, outline)
            keys = fetch(rng, registry, NODE_PASSAGES)
            yield Step("write", pending.position, outline, render_evidence(registry, keys))
            pending.node.content = pseudo_text(rng, NODE_TOKENS, keys)
        yield Step("extend", "outline", outline)  # the last one is the nop that stops the run
        if expansion < shape.expansions:
            target = expansion_target(outline, expansion, rng)
            outline.add_children(target, [title_and_plan(rng) for _ in range(counts[expansion])])


# ---- the two renderers ------------------------------------------------------------------------------

DraftView = Callable[[Outline, str | None, int], str]
"""(outline, focus, budget) -> the draft as a prompt shows it."""


def deepdraft_view(outline: Outline, focus: str | None, budget: int) -> str:
    return outline.condensed_view(budget, focus=focus)


def whole_draft_view(outline: Outline, focus: str | None, budget: int) -> str:
    """The reference's rendering: every node on one line, written nodes with their full text."""
    lines = [f"# Title: [OK] {outline.title}"]
    for item in outline.walk():
        node = item.node
        body = f"[OK] {node.content}" if node.content is not None else f"[PLAN] {node.plan}"
        label = item.position.replace("section-", "Section-", 1)
        indent = " " * 4 * (item.level - 1)
        lines.append(f"{indent}{'#' * item.level} {label} [{node.title}]: {' '.join(body.split())}")
    return "\n".join(lines)


def draft_for(step: Step, view: DraftView, settings: ResearchSettings) -> str | None:
    """The draft as `step`'s prompt shows it; None for init-plan, which shows only evidence."""
    if step.action == "init-plan":
        return None
    if step.outline is None:
        return empty_outline_view()
    if step.action == "extend":
        return view(step.outline, None, settings.report_budget_tokens)
    if step.action == "search":
        return view(step.outline, step.target, settings.search_budget_tokens)
    return view(step.outline, step.target, settings.draft_budget_tokens)


BOUNDS = {"min_sections": 3, "max_sections": 12, "min_subsections": 2, "max_subsections": 7}


def render_prompt(step: Step, draft: str | None) -> str:
    """The prompt deepdraft's WARP policy sends for `step`, showing `draft` as the report so far."""
    if step.action == "init-plan":
        return prompts.render("init_plan", question=QUESTION, evidence=step.evidence, **BOUNDS)
    assert draft is not None
    if step.action == "extend":
        return prompts.render("extend_plan", question=QUESTION, outline=draft, **BOUNDS)
    instruction = prompts.instruction(step.target)
    if step.action == "search":
        return prompts.render("search", question=QUESTION, outline=draft, instruction=instruction)
    node = step.outline.find(step.target) if step.outline is not None else None
    assert node is not None
    return prompts.render(
        "write",
        question=QUESTION,
        outline=draft,
        instruction=instruction,
        evidence=step.evidence,
        title=node.node.title,
        plan=node.node.plan,
    )


# ---- measuring ------------------------------------------------------------------------------------


@dataclass
class Tally:
    """Prompts of one kind: whole-prompt tokens and, within them, the draft's tokens, per renderer."""

    prompts: int = 0
    deepdraft: int = 0
    baseline: int = 0
    deepdraft_draft: int = 0
    baseline_draft: int = 0
    deepdraft_max: int = 0
    baseline_max: int = 0

    def add(self, ours: tuple[int, int], theirs: tuple[int, int]) -> None:
        self.prompts += 1
        self.deepdraft += ours[0]
        self.baseline += theirs[0]
        self.deepdraft_draft += ours[1]
        self.baseline_draft += theirs[1]
        self.deepdraft_max = max(self.deepdraft_max, ours[0])
        self.baseline_max = max(self.baseline_max, theirs[0])

    def as_dict(self) -> dict[str, int | float]:
        return {
            "prompts": self.prompts,
            "deepdraft_tokens": self.deepdraft,
            "baseline_tokens": self.baseline,
            "ratio": round(self.deepdraft / self.baseline, 4),
            "deepdraft_max_prompt": self.deepdraft_max,
            "baseline_max_prompt": self.baseline_max,
            "deepdraft_draft_tokens": self.deepdraft_draft,
            "baseline_draft_tokens": self.baseline_draft,
            "shared_tokens": self.deepdraft - self.deepdraft_draft,
        }


@dataclass
class Measurement:
    shape: Shape
    by_action: dict[str, Tally] = field(default_factory=lambda: {a: Tally() for a in ACTIONS})
    total: Tally = field(default_factory=Tally)
    node_tokens: list[int] = field(default_factory=list)
    passage_tokens: list[int] = field(default_factory=list)


def prompt_cost(step: Step, view: DraftView, settings: ResearchSettings) -> tuple[int, int]:
    """(tokens of the whole prompt, tokens of the draft shown in it)."""
    draft = draft_for(step, view, settings)
    return count_tokens(render_prompt(step, draft)), count_tokens(draft or "")


def measure(shape: Shape, settings: ResearchSettings) -> Measurement:
    result = Measurement(shape)
    outline = None
    for step in trajectory(shape):
        ours = prompt_cost(step, deepdraft_view, settings)
        theirs = prompt_cost(step, whole_draft_view, settings)
        result.by_action[step.action].add(ours, theirs)
        result.total.add(ours, theirs)
        if step.action == "write":
            result.passage_tokens.append(count_tokens(step.evidence) // NODE_PASSAGES)
        outline = step.outline or outline
    assert outline is not None
    result.node_tokens = [count_tokens(item.node.content or "") for item in outline.walk()]
    expected = 2 + 2 * shape.nodes + shape.expansions + 1
    if len(result.node_tokens) != shape.nodes or result.total.prompts != expected:
        raise AssertionError(f"the trajectory does not match {shape}")
    return result


# ---- reporting -------------------------------------------------------------------------------------


def summary(main: Measurement, scales: list[Measurement], settings: ResearchSettings) -> dict[str, Any]:
    per_node = [
        {
            **vars(m.shape),
            "prompts": m.total.prompts,
            "deepdraft_tokens_per_node": round(m.total.deepdraft / m.shape.nodes),
            "baseline_tokens_per_node": round(m.total.baseline / m.shape.nodes),
        }
        for m in scales
    ]
    total = main.total.as_dict()
    return {
        "token_counter": "deepdraft.core.tokens.count_tokens (estimate; no tokenizer loaded)",
        "settings": {
            "search_budget_tokens": settings.search_budget_tokens,
            "draft_budget_tokens": settings.draft_budget_tokens,
            "report_budget_tokens": settings.report_budget_tokens,
        },
        "shape": vars(main.shape),
        "mean_node_tokens": round(mean(main.node_tokens)),
        "mean_passage_tokens": round(mean(main.passage_tokens)),
        "by_action": {action: t.as_dict() for action, t in main.by_action.items()},
        "total": total,
        "target_ratio": round(TARGET_RATIO, 4),
        "meets_target": total["ratio"] <= TARGET_RATIO,
        "reference_measured_tokens": REFERENCE_MEASURED,
        "scaling": per_node,
        "deepdraft_per_node_growth": _growth(per_node, "deepdraft_tokens_per_node"),
        "baseline_per_node_growth": _growth(per_node, "baseline_tokens_per_node"),
    }


def _growth(rows: list[dict[str, int]], key: str) -> dict[str, float]:
    """Per-node cost of each size relative to the previous size."""
    return {f"{a['nodes']}->{b['nodes']}": round(b[key] / a[key], 3) for a, b in pairwise(rows)}


def print_table(data: dict[str, Any]) -> None:
    print("Prompt tokens of one synthetic WARP report (deepdraft.core.tokens.count_tokens estimate)")
    print(
        f"shape: {data['shape']}; nodes of ~{data['mean_node_tokens']} tokens, passages of "
        f"~{data['mean_passage_tokens']}; deepdraft budgets: {data['settings']}"
    )
    print("Both renderers use deepdraft's own templates, question, instruction and evidence blocks;")
    print("only the draft differs: deepdraft condenses it, the baseline inlines the whole draft")
    print("(every written node in full, as the reference implementation does).\n")
    header = (
        f"{'action':<10}{'prompts':>8}{'deepdraft':>12}{'baseline':>12}{'ratio':>7}"
        f"{'max dd':>8}{'max base':>9}{'shared':>10}{'draft dd':>10}{'draft base':>12}"
    )
    print(header)
    print("-" * len(header))
    for name, row in {**data["by_action"], "TOTAL": data["total"]}.items():
        print(
            f"{name:<10}{row['prompts']:>8}{row['deepdraft_tokens']:>12,}{row['baseline_tokens']:>12,}"
            f"{row['ratio']:>7.3f}{row['deepdraft_max_prompt']:>8,}{row['baseline_max_prompt']:>9,}"
            f"{row['shared_tokens']:>10,}{row['deepdraft_draft_tokens']:>10,}{row['baseline_draft_tokens']:>12,}"
        )
    print("(shared: template + question + instruction + evidence, identical in both; draft: the draft only)")
    total = data["total"]
    verdict = "MEETS" if data["meets_target"] else "MISSES"
    print(f"\ndeepdraft / baseline = {total['ratio']:.3f} -> {verdict} the target of <= 1/3")
    print(
        f"baseline total {total['baseline_tokens']:,} "
        f"vs ~{REFERENCE_MEASURED:,} measured with the reference's code\n"
    )
    print("Linearity: total prompt tokens per written node")
    header = f"{'nodes':>6}{'sections':>10}{'expansions':>12}{'prompts':>9}{'deepdraft':>11}{'baseline':>10}"
    print(header)
    print("-" * len(header))
    for row in data["scaling"]:
        print(
            f"{row['nodes']:>6}{row['sections']:>10}{row['expansions']:>12}{row['prompts']:>9}"
            f"{row['deepdraft_tokens_per_node']:>11,}{row['baseline_tokens_per_node']:>10,}"
        )
    print(f"per-node growth, deepdraft: {data['deepdraft_per_node_growth']}")
    print(f"per-node growth, baseline:  {data['baseline_per_node_growth']}")
    print("(80 nodes takes more actions/expansions than the defaults max_steps=140 / max_expansions=12;")
    print(" that row extrapolates the prompt cost only.)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print a machine-readable summary")
    args = parser.parse_args(argv)
    settings = ResearchSettings()
    scales = [measure(Shape.scaled(n), settings) for n in SCALES]
    main_run = next(m for m in scales if m.shape == Shape(40, 7, 9))
    data = summary(main_run, scales, settings)
    if args.json:
        print(json.dumps(data, indent=2, ensure_ascii=False))
    else:
        print_table(data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
