"""The report outline: a tree of at most three levels that grows while the report is written.

Each node has a stable id (it never changes, whatever is added around it) and a position derived
from where it sits (`section-2.1`: second section, its first subsection). A node carries a plan (what
to write) and, once written, its content. A node the policy had to give up on keeps a `note`
saying why, so the reader sees the gap instead of losing it.

Also here: the one-line-per-node views of the outline that prompts show the model. Their format
(`# Section-2 [Title]: [OK] text` / `[PLAN] plan`, four spaces of indent per level) is the one the
published AgentCPM-Report weights were trained on. The *condensed* view keeps prompts inside a
token budget: nodes near the one being worked on are shown in full, the others are cut to their
head and tail, and, only if still too long, shortened further (farthest first) down to a marker.

Pure data and pure operations: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache

from pydantic import BaseModel, Field

from deepdraft.core.tokens import count_tokens, head_tail

MAX_DEPTH = 3
NodeSpec = tuple[str, str, Sequence["NodeSpec"]]
"""A node to add: title, plan and the specs of its children."""
POSITION_PREFIX = "section-"
# Bounded digit runs: int() refuses strings of more than 4300 digits, and a position is never that.
_POSITION = re.compile(r"^\s*(?:section[-\s_]*)?(\d{1,9}(?:\.\d{1,9})*)\s*$", re.IGNORECASE)


WRITTEN_FROM_EVIDENCE = "quoted from its evidence by deepdraft"
"""How the note of a node starts whose text deepdraft quoted from its passages (every draft refused)."""


class Node(BaseModel):
    id: str
    title: str
    plan: str
    content: str | None = None
    note: str | None = None
    """Why the node was left without content (shown to readers); on a node with content, how
    deepdraft wrote it when the model could not (it starts with `WRITTEN_FROM_EVIDENCE`)."""
    children: list[Node] = Field(default_factory=list)

    @property
    def written(self) -> bool:
        return self.content is not None

    @property
    def settled(self) -> bool:
        """Written, or given up on: either way the drafting pass moves past it."""
        return self.content is not None or self.note is not None


@dataclass(frozen=True)
class Located:
    """A node together with where it is: `section-2.1` is at level 2."""

    position: str
    node: Node

    @property
    def level(self) -> int:
        return self.position.count(".") + 1


def parse_position(text: str) -> tuple[int, ...] | None:
    """`section-2.1`, `Section 2.1` and `2.1` all mean (2, 1); anything else is None."""
    match = _POSITION.match(text)
    if not match:
        return None
    numbers = tuple(int(part) for part in match.group(1).split("."))
    return numbers if all(n >= 1 for n in numbers) else None


def format_position(numbers: Sequence[int]) -> str:
    return POSITION_PREFIX + ".".join(str(n) for n in numbers)


class Outline(BaseModel):
    title: str
    sections: list[Node] = Field(default_factory=list)
    next_id: int = 1

    # ---- building and editing -------------------------------------------------------------

    @classmethod
    def create(cls, title: str, sections: Sequence[tuple[str, str]]) -> Outline:
        outline = cls(title=title)
        outline.sections = [outline._new_node(t, p) for t, p in sections]
        return outline

    def _new_node(self, title: str, plan: str) -> Node:
        node = Node(id=f"n{self.next_id}", title=title.strip(), plan=plan.strip())
        self.next_id += 1
        return node

    def add_children(self, position: str, subsections: Sequence[tuple[str, str]]) -> list[Located]:
        """Give a childless node of level 1 or 2 new subsections; returns them, located."""
        target = self.find(position)
        if target is None:
            raise KeyError(f"no node at {position}")
        if target.level >= MAX_DEPTH:
            raise ValueError(
                f"{target.position} is at level {target.level}; the outline has at most {MAX_DEPTH}"
            )
        if target.node.children:
            raise ValueError(f"{target.position} already has subsections")
        target.node.children = [self._new_node(t, p) for t, p in subsections]
        prefix = target.position
        return [Located(f"{prefix}.{i}", child) for i, child in enumerate(target.node.children, start=1)]

    def add_tree(self, parent: Node | None, spec: Sequence[NodeSpec]) -> None:
        """Append (title, plan, children) triples under `parent` (None: top level), recursively."""
        siblings = self.sections if parent is None else parent.children
        for title, plan, children in spec:
            node = self._new_node(title, plan)
            siblings.append(node)
            self.add_tree(node, children)

    # ---- reading -----------------------------------------------------------------------------

    def walk(self) -> Iterator[Located]:
        """Every node in document order: a section, then its subsections, then the next section."""

        def visit(nodes: list[Node], prefix: tuple[int, ...]) -> Iterator[Located]:
            for index, node in enumerate(nodes, start=1):
                numbers = (*prefix, index)
                yield Located(format_position(numbers), node)
                yield from visit(node.children, numbers)

        return visit(self.sections, ())

    def find(self, position: str) -> Located | None:
        numbers = parse_position(position)
        if numbers is None or len(numbers) > MAX_DEPTH:
            return None
        nodes, node = self.sections, None
        for number in numbers:
            if number > len(nodes):
                return None
            node = nodes[number - 1]
            nodes = node.children
        return Located(format_position(numbers), node) if node is not None else None

    def find_id(self, node_id: str) -> Located | None:
        return next((located for located in self.walk() if located.node.id == node_id), None)

    def first_pending(self) -> Located | None:
        """The first node in document order that is neither written nor given up on."""
        return next((located for located in self.walk() if not located.node.settled), None)

    def count(self) -> int:
        return sum(1 for _ in self.walk())

    def splittable(self) -> list[str]:
        """The positions a deepening step may split: nodes without subsections above the deepest level."""
        return [
            found.position for found in self.walk() if not found.node.children and found.level < MAX_DEPTH
        ]

    # ---- views for prompts --------------------------------------------------------------------

    def prompt_view(self, body: Callable[[Located], str] | None = None) -> str:
        """One line per node, in the format the WARP model reads.

        `body` renders what follows the title; by default the whole content of written nodes.
        """
        body = body or _full_body
        lines = [f"# Title: [OK] {self.title}"]
        for located in self.walk():
            indent = " " * 4 * (located.level - 1)
            label = located.position.replace(POSITION_PREFIX, "Section-", 1)
            lines.append(f"{indent}{'#' * located.level} {label} [{located.node.title}]: {body(located)}")
        return "\n".join(lines)

    def condensed_view(self, budget_tokens: int, focus: str | None = None) -> str:
        """The outline with drafted text, shortened to about `budget_tokens` tokens.

        With a `focus` position, the nodes around it (its ancestors, its previous sibling and the
        node just before it in document order) keep their full text; every other written node is
        cut to its first 100 and last 50 tokens. While the view is still over budget, the other
        nodes are cut harder, farthest from the focus first, down to a marker; only then are the
        nodes around the focus cut. Without a focus every node starts in full and the longest are
        cut first, so a draft that fits the budget is shown whole.
        """
        located = list(self.walk())
        near = _neighbourhood(located, focus)
        written = [item for item in located if item.node.written]
        # Without a focus (the deepening view) the whole draft is shown when it fits; with one,
        # only the nodes around it start in full.
        focused = any(item.position == focus for item in located)  # a focus elsewhere is none
        in_full = near if focused else {item.position for item in written}
        levels = {item.position: (0 if item.position in in_full else 1) for item in written}
        costs = {item.position: _tokens(_condensed_body(item, levels[item.position])) for item in written}
        skeleton = count_tokens(self.prompt_view(lambda item: "" if item.node.written else _full_body(item)))
        total = skeleton + sum(costs.values())

        index = {item.position: i for i, item in enumerate(located)}
        if focus in index:
            order = sorted(written, key=lambda item: -abs(index[item.position] - index[focus]))
        else:
            order = sorted(written, key=lambda item: -costs[item.position])
        # Nodes away from the focus are cut down to the marker before any node near it is cut.
        far = [item for item in order if item.position not in near]
        close = [item for item in order if item.position in near]
        for group in (far, close):
            for level in range(1, len(_CUTS) + 2):
                for item in group:
                    if total <= budget_tokens:
                        break
                    if levels[item.position] < level:
                        cost = _tokens(_condensed_body(item, level))
                        if cost < costs[item.position]:  # a short text can be smaller than its cut
                            levels[item.position] = level
                            total += cost - costs[item.position]
                            costs[item.position] = cost
        # Cutting one long node can free more room than was needed: give it back, nearest first.
        for item in reversed(order):
            for level in range(0 if item.position in in_full else 1, levels[item.position]):
                cost = _tokens(_condensed_body(item, level))
                if total + cost - costs[item.position] <= budget_tokens:
                    levels[item.position] = level
                    total += cost - costs[item.position]
                    costs[item.position] = cost
                    break
        return self.prompt_view(lambda item: _condensed_body(item, levels.get(item.position, 0)))


def empty_outline_view() -> str:
    return "There is no survey."


# How hard a written node is cut, per level: (head tokens, tail tokens); past the list, a marker.
_CUTS: tuple[tuple[int, int], ...] = ((100, 50), (40, 20), (12, 6))


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _full_body(located: Located) -> str:
    node = located.node
    if node.content is not None:
        return f"[OK] {_one_line(node.content)}"
    return f"[PLAN] {_one_line(node.plan)}"


def _condensed_body(located: Located, level: int) -> str:
    node = located.node
    if node.content is None or level == 0:
        return _full_body(located)
    return _cut_body(node.content, level)


# Every prompt of a run condenses the same drafts again, at the same levels: remembering the cuts
# and their sizes saves most of the work of building a prompt (a few MB at most).
@lru_cache(maxsize=1024)
def _cut_body(content: str, level: int) -> str:
    if level > len(_CUTS):
        return "[OK] (written)"
    head, tail = _CUTS[level - 1]
    return f"[OK] {_one_line(head_tail(content, head, tail))}"


@lru_cache(maxsize=1024)
def _tokens(body: str) -> int:
    return count_tokens(body)


def _neighbourhood(located: list[Located], focus: str | None) -> set[str]:
    """Positions shown in full around the focus: ancestors, previous sibling, previous node."""
    if focus is None:
        return set()
    positions = [item.position for item in located]
    if focus not in positions:
        return set()
    near = {focus}
    numbers = parse_position(focus) or ()
    for depth in range(1, len(numbers)):
        near.add(format_position(numbers[:depth]))
    if numbers and numbers[-1] > 1:
        near.add(format_position((*numbers[:-1], numbers[-1] - 1)))
    index = positions.index(focus)
    if index > 0:
        near.add(positions[index - 1])
    return near
