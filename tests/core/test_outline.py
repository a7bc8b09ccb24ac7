"""Tests of the outline tree: positions, stable ids, document order and the prompt views."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deepdraft.core.outline import (
    MAX_DEPTH,
    Located,
    Node,
    Outline,
    empty_outline_view,
    format_position,
    parse_position,
)
from deepdraft.core.tokens import count_tokens

MARKER = "[OK] (written)"


def _sample() -> Outline:
    """Title; three sections; section 2 has two subsections; section 2.1 has one child."""
    outline = Outline.create(
        "Solid-State Batteries", [("Background", "why"), ("Families", "compare"), ("Outlook", "next")]
    )
    outline.add_children("section-2", [("Oxides", "oxide plan"), ("Sulfides", "sulfide plan")])
    outline.add_children("section-2.1", [("Garnets", "garnet plan"), ("Perovskites", "perovskite plan")])
    return outline


def _reference_walk(nodes: list[Node], prefix: tuple[int, ...] = ()) -> Iterator[tuple[str, Node]]:
    """Document order written independently of `Outline.walk`: node, then its children, then next."""
    for i, node in enumerate(nodes, start=1):
        numbers = (*prefix, i)
        yield "section-" + ".".join(map(str, numbers)), node
        yield from _reference_walk(node.children, numbers)


# ---- positions ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("section-2.1", (2, 1)),
        ("Section 2.1", (2, 1)),
        ("SECTION-3", (3,)),
        ("section_1.2.3", (1, 2, 3)),
        ("2.1", (2, 1)),
        ("  section-4  ", (4,)),
        ("12", (12,)),
    ],
)
def test_parse_position_accepts_the_forms_models_write(text: str, expected: tuple[int, ...]) -> None:
    assert parse_position(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "section-",
        "section-0",
        "section-1.0",
        "1..2",
        "1.",
        ".1",
        "-1",
        "section-x",
        "outline",
        "chapter-1",
        "1.a",
    ],
)
def test_parse_position_rejects_anything_else(text: str) -> None:
    assert parse_position(text) is None


def test_parse_position_does_not_raise_on_an_absurdly_long_number() -> None:
    assert parse_position("section-" + "1" * 5000) is None


def test_format_position_round_trips() -> None:
    assert format_position((2, 1)) == "section-2.1"
    assert parse_position(format_position((3, 4, 5))) == (3, 4, 5)


# ---- building ------------------------------------------------------------------------------------


def test_create_gives_sequential_ids_and_strips_text() -> None:
    outline = Outline.create("T", [("  A ", " plan a\n"), ("B", "plan b"), ("C", "plan c")])
    assert [n.id for n in outline.sections] == ["n1", "n2", "n3"]
    assert outline.sections[0].title == "A"
    assert outline.sections[0].plan == "plan a"
    assert outline.next_id == 4
    assert all(not n.written and not n.settled and n.children == [] for n in outline.sections)


def test_add_children_returns_the_new_nodes_located() -> None:
    outline = Outline.create("T", [("A", "a"), ("B", "b"), ("C", "c")])
    added = outline.add_children("section-2", [("B1", "b1"), ("B2", "b2"), ("B3", "b3")])
    assert [(loc.position, loc.node.title, loc.node.id, loc.level) for loc in added] == [
        ("section-2.1", "B1", "n4", 2),
        ("section-2.2", "B2", "n5", 2),
        ("section-2.3", "B3", "n6", 2),
    ]
    assert outline.sections[1].children[0] is added[0].node


def test_add_children_accepts_loose_position_forms() -> None:
    outline = Outline.create("T", [("A", "a"), ("B", "b"), ("C", "c")])
    added = outline.add_children("Section 3", [("C1", "x"), ("C2", "y")])
    assert [loc.position for loc in added] == ["section-3.1", "section-3.2"]


def test_add_children_refuses_unknown_nodes_level_three_and_split_nodes() -> None:
    outline = _sample()
    with pytest.raises(KeyError):
        outline.add_children("section-9", [("X", "x"), ("Y", "y")])
    with pytest.raises(ValueError, match="at most 3"):
        outline.add_children("section-2.1.1", [("X", "x"), ("Y", "y")])
    with pytest.raises(ValueError, match="already has subsections"):
        outline.add_children("section-2", [("X", "x"), ("Y", "y")])
    assert outline.count() == 7  # nothing was added by the refused calls


def test_add_tree_nests_and_numbers_in_creation_order() -> None:
    outline = Outline(title="T")
    outline.add_tree(None, [("A", "a", []), ("B", "b", [("B1", "b1", [("B1a", "x", [])]), ("B2", "b2", [])])])
    assert [(loc.position, loc.node.title, loc.node.id) for loc in outline.walk()] == [
        ("section-1", "A", "n1"),
        ("section-2", "B", "n2"),
        ("section-2.1", "B1", "n3"),
        ("section-2.1.1", "B1a", "n4"),
        ("section-2.2", "B2", "n5"),
    ]
    # A tree added later continues the numbering of ids and appends after the existing sections.
    outline.add_tree(None, [("C", "c", [])])
    assert outline.find("section-3").node.id == "n6"  # type: ignore[union-attr]


# ---- reading -------------------------------------------------------------------------------------


def test_walk_is_document_order_with_levels() -> None:
    outline = _sample()
    assert [(loc.position, loc.node.title, loc.level) for loc in outline.walk()] == [
        ("section-1", "Background", 1),
        ("section-2", "Families", 1),
        ("section-2.1", "Oxides", 2),
        ("section-2.1.1", "Garnets", 3),
        ("section-2.1.2", "Perovskites", 3),
        ("section-2.2", "Sulfides", 2),
        ("section-3", "Outlook", 1),
    ]
    assert outline.count() == 7


def test_find_returns_the_canonical_position() -> None:
    outline = _sample()
    found = outline.find("2.1.2")
    assert found is not None
    assert found.position == "section-2.1.2"
    assert found.node.title == "Perovskites"
    assert found.level == 3


@pytest.mark.parametrize(
    "position", ["section-4", "section-1.1", "section-2.3", "section-2.1.3", "section-2.1.1.1", "x"]
)
def test_find_returns_none_for_missing_positions(position: str) -> None:
    assert _sample().find(position) is None


def test_find_id_locates_a_node_wherever_it_is() -> None:
    outline = _sample()
    garnets = outline.find("section-2.1.1")
    assert garnets is not None
    assert outline.find_id(garnets.node.id) == garnets
    assert outline.find_id("n999") is None


def test_first_pending_writes_parents_before_children_and_skips_given_up_nodes() -> None:
    outline = _sample()
    order = []
    while (pending := outline.first_pending()) is not None:
        order.append(pending.position)
        if pending.position == "section-2.1.2":
            pending.node.note = "no evidence"  # given up on: settled without content
        else:
            pending.node.content = f"text of {pending.position}"
    assert order == [loc.position for loc in outline.walk()]
    assert outline.find("section-2.1.2").node.settled  # type: ignore[union-attr]
    assert not outline.find("section-2.1.2").node.written  # type: ignore[union-attr]


def test_first_pending_after_a_split_is_the_first_new_child() -> None:
    outline = Outline.create("T", [("A", "a"), ("B", "b"), ("C", "c")])
    for section in outline.sections:
        section.content = "done"
    assert outline.first_pending() is None
    outline.add_children("section-2", [("B1", "x"), ("B2", "y")])
    pending = outline.first_pending()
    assert pending is not None
    assert (pending.position, pending.node.title) == ("section-2.1", "B1")


def test_outline_survives_a_json_round_trip_with_its_ids() -> None:
    outline = _sample()
    outline.sections[0].content = "written"
    outline.sections[2].note = "skipped"
    restored = Outline.model_validate_json(outline.model_dump_json())
    assert restored == outline
    assert [loc.node.id for loc in restored.walk()] == [loc.node.id for loc in outline.walk()]
    # The id counter travels too, so a node added after a resume gets a fresh id.
    added = restored.add_children("section-1", [("X", "x"), ("Y", "y")])
    ids = [loc.node.id for loc in restored.walk()]
    assert len(ids) == len(set(ids))
    assert added[0].node.id == f"n{outline.next_id}"


# ---- random trees ------------------------------------------------------------------------------


@st.composite
def _trees(draw: st.DrawFn) -> tuple[Outline, list[tuple[str, list[tuple[Node, str, str]]]]]:
    """An outline grown by `add_children`, with a record of every node's id and position per step."""
    outline = Outline.create("T", [(f"S{i}", f"plan {i}") for i in range(draw(st.integers(1, 6)))])
    history: list[tuple[str, list[tuple[Node, str, str]]]] = []
    for _ in range(draw(st.integers(0, 8))):
        leaves = [loc for loc in outline.walk() if loc.level < MAX_DEPTH and not loc.node.children]
        if not leaves:
            break
        target = draw(st.sampled_from(leaves))
        before = [(loc.node, loc.node.id, loc.position) for loc in outline.walk()]
        outline.add_children(target.position, [(f"C{k}", f"p{k}") for k in range(draw(st.integers(1, 4)))])
        history.append((target.position, before))
    for loc in outline.walk():
        state = draw(st.sampled_from(["empty", "written", "noted"]))
        if state == "written":
            loc.node.content = f"text {loc.node.id}"
        elif state == "noted":
            loc.node.note = "gave up"
    return outline, history


@given(_trees())
def test_positions_from_walk_are_unique_and_find_returns_the_walked_node(tree: tuple[Outline, list]) -> None:
    outline, _ = tree
    walked = list(outline.walk())
    positions = [loc.position for loc in walked]
    assert len(positions) == len(set(positions))
    ids = [loc.node.id for loc in walked]
    assert len(ids) == len(set(ids))
    assert all(int(i.removeprefix("n")) < outline.next_id for i in ids)
    for loc in walked:
        assert 1 <= loc.level <= MAX_DEPTH
        found = outline.find(loc.position)
        assert found is not None
        assert found.node is loc.node
        assert found.position == loc.position
        assert outline.find_id(loc.node.id) == loc
    # walk() is document order: compare with an independent traversal.
    assert [(p, id(n)) for p, n in _reference_walk(outline.sections)] == [
        (loc.position, id(loc.node)) for loc in walked
    ]


@given(_trees())
def test_ids_and_positions_never_change_when_children_are_added_elsewhere(tree: tuple[Outline, list]) -> None:
    outline, history = tree
    now = {id(loc.node): (loc.node.id, loc.position) for loc in outline.walk()}
    for _, before in history:
        for node, node_id, position in before:
            assert node.id == node_id
            assert now[id(node)] == (node_id, position)


@given(_trees())
def test_first_pending_is_the_first_unsettled_node_in_document_order(tree: tuple[Outline, list]) -> None:
    outline, _ = tree
    expected = next(
        ((p, n) for p, n in _reference_walk(outline.sections) if n.content is None and n.note is None), None
    )
    pending = outline.first_pending()
    if expected is None:
        assert pending is None
    else:
        assert pending is not None
        assert (pending.position, pending.node) == (expected[0], expected[1])
        assert pending.node is expected[1]


# ---- prompt views ------------------------------------------------------------------------------


def test_prompt_view_format() -> None:
    outline = _sample()
    outline.sections[0].content = "Line one.\n\nLine   two with C# and #tags."
    outline.find("section-2.1").node.content = "Oxides are stable."  # type: ignore[union-attr]
    assert outline.prompt_view() == "\n".join(
        [
            "# Title: [OK] Solid-State Batteries",
            "# Section-1 [Background]: [OK] Line one. Line two with C# and #tags.",
            "# Section-2 [Families]: [PLAN] compare",
            "    ## Section-2.1 [Oxides]: [OK] Oxides are stable.",
            "        ### Section-2.1.1 [Garnets]: [PLAN] garnet plan",
            "        ### Section-2.1.2 [Perovskites]: [PLAN] perovskite plan",
            "    ## Section-2.2 [Sulfides]: [PLAN] sulfide plan",
            "# Section-3 [Outlook]: [PLAN] next",
        ]
    )


def test_prompt_view_with_a_custom_body() -> None:
    outline = Outline.create("T", [("A", "a"), ("B", "b"), ("C", "c")])
    view = outline.prompt_view(lambda loc: loc.node.id)
    assert view.splitlines()[1:] == ["# Section-1 [A]: n1", "# Section-2 [B]: n2", "# Section-3 [C]: n3"]


def test_empty_outline_view() -> None:
    assert empty_outline_view() == "There is no survey."


def _word(tag: str, i: int) -> str:
    """A one-token word (no digits, which the estimate counts one by one): tag + i in letters."""
    letters = ""
    while True:
        i, rest = divmod(i, 26)
        letters = chr(ord("a") + rest) + letters
        if i == 0:
            return tag + letters


def _long(tag: str, words: int) -> str:
    return " ".join(_word(tag, i) for i in range(words))


def _tag(node_id: str) -> str:
    return _word("n", int(node_id[1:])) + "w"


def _lines_by_position(view: str) -> dict[str, str]:
    lines = {}
    for line in view.splitlines()[1:]:
        label = line.strip().split(" ", 2)[1]  # "Section-2.1"
        lines["section-" + label.removeprefix("Section-")] = line
    return lines


def test_condensed_view_equals_prompt_view_when_everything_is_short() -> None:
    outline = _sample()
    for loc in outline.walk():
        loc.node.content = f"Short text for {loc.node.title}."
    assert outline.condensed_view(10_000) == outline.prompt_view()
    assert outline.condensed_view(10_000, focus="section-3") == outline.prompt_view()


def test_condensed_view_keeps_the_focus_neighbourhood_in_full_and_cuts_the_rest() -> None:
    outline = Outline.create("T", [(f"S{i}", f"plan {i}") for i in range(1, 6)])
    outline.add_children("section-3", [("A", "a"), ("B", "b")])
    for loc in outline.walk():
        loc.node.content = _long(_tag(loc.node.id), 300)
    outline.find("section-3.2").node.content = None  # type: ignore[union-attr]
    view = outline.condensed_view(100_000, focus="section-3.2")
    lines = _lines_by_position(view)
    full = _lines_by_position(outline.prompt_view())
    # Ancestor, previous sibling (= previous node here) in full; the focus shows its plan.
    assert lines["section-3"] == full["section-3"]
    assert lines["section-3.1"] == full["section-3.1"]
    assert lines["section-3.2"].endswith("[PLAN] b")
    # Every other written node is cut to head … tail (100 + 50 tokens of the estimate).
    for position in ("section-1", "section-2", "section-4", "section-5"):
        tag = _tag(outline.find(position).node.id)  # type: ignore[union-attr]
        assert f" ... {_word(tag, 250)} " in lines[position]
        assert f"{_word(tag, 99)} ... " in lines[position]
        assert f"{_word(tag, 100)} " not in lines[position]


def test_condensed_view_previous_node_in_document_order_is_near() -> None:
    outline = Outline.create("T", [(f"S{i}", f"plan {i}") for i in range(1, 4)])
    outline.add_children("section-1", [("A", "a"), ("B", "b")])
    for loc in outline.walk():
        loc.node.content = _long(_tag(loc.node.id), 300)
    outline.sections[1].content = None
    lines = _lines_by_position(outline.condensed_view(100_000, focus="section-2"))
    full = _lines_by_position(outline.prompt_view())
    assert lines["section-1"] == full["section-1"]  # previous sibling
    assert lines["section-1.2"] == full["section-1.2"]  # previous node in document order
    assert lines["section-1.1"] != full["section-1.1"]
    assert " ... " in lines["section-3"]


def test_condensed_view_cuts_far_nodes_to_markers_before_touching_the_previous_node() -> None:
    outline = Outline.create("T", [(f"S{i}", f"plan {i}") for i in range(1, 7)])
    for section in outline.sections[:5]:
        section.content = _long(section.id + "w", 400)
    full = _lines_by_position(outline.prompt_view())
    budget = count_tokens(outline.prompt_view(lambda loc: full_or_marker(loc, {"section-5"}))) + 10
    lines = _lines_by_position(outline.condensed_view(budget, focus="section-6"))
    assert lines["section-5"] == full["section-5"]
    assert count_tokens(outline.condensed_view(budget, focus="section-6")) <= budget


def test_the_next_prompt_condenses_unchanged_drafts_without_cutting_them_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every prompt of a run condenses the outline again; drafts that did not change are not
    re-cut (cutting them was most of the time spent building prompts)."""
    import uuid

    from deepdraft.core import outline as outline_module

    cuts: list[str] = []
    original = outline_module.head_tail

    def counting(text: str, head: int, tail: int) -> str:
        cuts.append(text)
        return original(text, head, tail)

    monkeypatch.setattr(outline_module, "head_tail", counting)
    outline = Outline.create("T", [(f"S{i}", f"plan {i}") for i in range(1, 6)])
    for loc in outline.walk():
        loc.node.content = _long(_tag(loc.node.id) + uuid.uuid4().hex[:6], 300)
    first = outline.condensed_view(600, focus="section-5")
    assert cuts
    cuts.clear()
    assert outline.condensed_view(600, focus="section-5") == first and not cuts
    outline.sections[0].content = _long("changed" + uuid.uuid4().hex[:6], 300)
    outline.condensed_view(600, focus="section-5")
    assert cuts and set(cuts) == {outline.sections[0].content}


def test_condensed_view_without_focus_cuts_the_longest_first() -> None:
    outline = Outline.create("T", [("A", "a"), ("B", "b"), ("C", "c")])
    outline.sections[0].content = _long("a", 40)
    outline.sections[1].content = _long("b", 1000)
    outline.sections[2].content = _long("c", 40)
    view = outline.condensed_view(250)
    lines = _lines_by_position(view)
    assert lines["section-1"].endswith(outline.sections[0].content)
    assert lines["section-3"].endswith(outline.sections[2].content)
    assert " ... " in lines["section-2"]
    assert count_tokens(view) <= 250


def test_condensed_view_without_focus_shows_a_draft_that_fits_whole() -> None:
    # The deepening prompt reads the whole report when the budget allows (it was always cut).
    outline = Outline.create("T", [("A", "a"), ("B", "b"), ("C", "c")])
    for section, tag in zip(outline.sections, "abc", strict=True):
        section.content = _long(tag, 400)
    assert outline.condensed_view(100_000) == outline.prompt_view()
    tight = outline.condensed_view(count_tokens(outline.prompt_view()) - 50)
    assert tight != outline.prompt_view() and " ... " in tight


def test_condensed_view_with_tiny_budget_falls_back_to_markers() -> None:
    outline = _sample()
    for loc in outline.walk():
        loc.node.content = _long("x", 500)
    view = outline.condensed_view(1, focus="section-3")
    assert view == outline.prompt_view(lambda loc: MARKER)
    assert view.count(MARKER) == 7


def test_condensed_view_never_replaces_a_text_by_a_longer_marker() -> None:
    outline = Outline.create("T", [("A", "a"), ("B", "b"), ("C", "c")])
    outline.sections[0].content = "ok"
    outline.sections[1].content = _long("b", 500)
    view = outline.condensed_view(1)
    assert "# Section-1 [A]: [OK] ok" in view.splitlines()


def test_condensed_view_size_stays_roughly_constant_as_nodes_grow() -> None:
    budget = 1500
    sizes = {}
    for words in (200, 400, 800, 1600, 3200, 6400):
        outline = Outline.create("T", [(f"S{i}", f"plan {i}") for i in range(1, 9)])
        outline.add_children("section-3", [("A", "a"), ("B", "b"), ("C", "c")])
        for loc in outline.walk():
            if loc.position != "section-5":
                loc.node.content = _long("w", words) + "."
        for focus in ("section-5", None):
            sizes[words, focus] = count_tokens(outline.condensed_view(budget, focus=focus))
    assert all(size <= budget for size in sizes.values())
    # Once the draft is longer than the budget, the view fills most of it, whatever the length.
    assert all(size >= 0.75 * budget for size in sizes.values()), sizes


# ---- property tests of condensed_view -----------------------------------------------------------

_WORDS = st.sampled_from(
    ["battery", "ion", "solid", "electrolyte", "of", "the", "固态", "电池", "C#", "—", "2024", "x"]
)


@st.composite
def _drafts(draw: st.DrawFn) -> tuple[Outline, str | None, int]:
    outline = Outline.create(
        "Report", [(f"Section {i}", f"plan {i}") for i in range(draw(st.integers(1, 5)))]
    )
    for _ in range(draw(st.integers(0, 4))):
        leaves = [loc for loc in outline.walk() if loc.level < MAX_DEPTH and not loc.node.children]
        if not leaves:
            break
        target = draw(st.sampled_from(leaves))
        outline.add_children(
            target.position, [(f"Sub {k}", f"sub plan {k}") for k in range(draw(st.integers(1, 3)))]
        )
    for loc in outline.walk():
        if draw(st.booleans()):
            n = draw(st.sampled_from([0, 3, 20, 120, 160, 400, 900]))
            loc.node.content = " ".join(draw(st.lists(_WORDS, min_size=n, max_size=n))) or "x"
    positions = [loc.position for loc in outline.walk()]
    focus = draw(st.one_of(st.none(), st.sampled_from(positions)))
    # Budgets between nothing and the whole draft, where the cutting decisions are made.
    budget = draw(st.integers(0, count_tokens(outline.prompt_view()) + 50))
    return outline, focus, budget


def _near(outline: Outline, focus: str | None) -> set[str]:
    """Ancestors, previous sibling and previous node in document order (and the focus itself)."""
    if focus is None:
        return set()
    positions = [loc.position for loc in outline.walk()]
    numbers = parse_position(focus)
    assert numbers is not None
    near = {focus}
    near |= {format_position(numbers[:k]) for k in range(1, len(numbers))}
    if numbers[-1] > 1:
        near.add(format_position((*numbers[:-1], numbers[-1] - 1)))
    if positions.index(focus) > 0:
        near.add(positions[positions.index(focus) - 1])
    return near


def full_or_marker(loc: Located, near: set[str]) -> str:
    node = loc.node
    if node.content is None:
        return "[PLAN] " + " ".join(node.plan.split())
    if loc.position in near:
        return "[OK] " + " ".join(node.content.split())
    return MARKER


_DRAFT_SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_DRAFT_SETTINGS
@given(_drafts())
def test_condensed_view_never_exceeds_the_budget_beyond_the_skeleton(
    draft: tuple[Outline, str | None, int],
) -> None:
    outline, focus, budget = draft
    view = outline.condensed_view(budget, focus=focus)
    skeleton = count_tokens(outline.prompt_view(lambda loc: full_or_marker(loc, set())))
    assert count_tokens(view) <= max(budget, skeleton)
    # Structure is kept: one line per node, plans of unwritten nodes in full, written ones marked.
    full = _lines_by_position(outline.prompt_view())
    lines = _lines_by_position(view)
    assert list(lines) == list(full)
    for loc in outline.walk():
        head = full[loc.position].split(": [", 1)[0]
        assert lines[loc.position].startswith(head + ": [")
        if loc.node.content is None:
            assert lines[loc.position] == full[loc.position]
        else:
            assert lines[loc.position].startswith(head + ": [OK] ")


@_DRAFT_SETTINGS
@given(_drafts())
def test_condensed_view_keeps_the_focus_neighbourhood_when_the_budget_allows(
    draft: tuple[Outline, str | None, int],
) -> None:
    outline, focus, budget = draft
    near = _near(outline, focus)
    needed = count_tokens(outline.prompt_view(lambda loc: full_or_marker(loc, near)))
    view = outline.condensed_view(budget, focus=focus)
    if needed <= budget:
        full = _lines_by_position(outline.prompt_view())
        lines = _lines_by_position(view)
        for position in near:
            assert lines[position] == full[position], position
    if count_tokens(outline.prompt_view()) <= budget and focus is not None:
        # Everything fits: near nodes full, far ones only lose what is beyond head and tail.
        assert count_tokens(view) <= count_tokens(outline.prompt_view())


def test_focus_outside_the_outline_is_treated_as_no_focus() -> None:
    outline = _sample()
    for loc in outline.walk():
        loc.node.content = _long("w", 400)
    assert outline.condensed_view(2000, focus="section-9") == outline.condensed_view(2000)


def test_splittable_nodes_are_those_without_subsections_above_the_deepest_level() -> None:
    outline = Outline(title="T")
    outline.add_tree(None, [("A", "p", [("A1", "p", [("A1x", "p", [])]), ("A2", "p", [])]), ("B", "p", [])])
    # A and A1 are split already; A1x is at level 3, the deepest.
    assert outline.splittable() == ["section-1.2", "section-2"]
