"""Tests of the WARP action protocol: the tolerant parser, the validators and citation clean-up."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deepdraft.core.citations import cited_keys, normalise_citations
from deepdraft.core.language import cjk_share, is_chinese
from deepdraft.core.outline import Outline
from deepdraft.protocol.actions import (
    ExtendPlan,
    InitPlan,
    Nop,
    PlannedNode,
    Refused,
    Search,
    Write,
    language_problem,
    parse,
    parse_full_plan,
    split_reply,
    validate_extend_plan,
    validate_full_plan,
    validate_init_plan,
    validate_search,
    validate_write,
)

EN = "How do solid-state batteries compare with lithium-ion batteries?"
ZH = "固态电池与锂离子电池相比有哪些优势和挑战？"
KEYS = ["textid1", "textid2", "textid3", "textid10"]
LONG_EN = "Sulfide electrolytes reach room-temperature conductivities comparable to liquid ones"
LONG_ZH = "硫化物固态电解质在室温下的离子电导率已经接近液态电解质，但其在潮湿空气中的稳定性仍然较差"


def _reply(action: Any, thought: str = "I reason first.") -> str:
    body = action if isinstance(action, str) else json.dumps(action, ensure_ascii=False)
    return f"<thought>{thought}</thought>\n<action>{body}</action>"


def _sections(n: int, prefix: str = "Part") -> list[dict[str, str]]:
    return [
        {"title": f"{prefix} {i}", "plan": f"What {prefix.lower()} {i} covers in depth"} for i in range(n)
    ]


def _nodes(n: int, prefix: str = "Part") -> tuple[PlannedNode, ...]:
    return tuple(PlannedNode(s["title"], s["plan"]) for s in _sections(n, prefix))


def _outline() -> Outline:
    """section-1 (split into 1.1, 1.2; 1.1 split into 1.1.1, 1.1.2), section-2, section-3."""
    outline = Outline.create("Report", [("Background", "a"), ("Families", "b"), ("Outlook", "c")])
    outline.add_children("section-1", [("History", "h"), ("Terms", "t")])
    outline.add_children("section-1.1", [("Early", "e"), ("Late", "l")])
    return outline


def _write(text: str, question: str = EN, keys: list[str] = KEYS) -> Refused | None:
    action = parse(_reply(text), {"write"})
    assert isinstance(action, Write)
    return validate_write(action, question, keys)


# ---- canonical replies -----------------------------------------------------------------------------


def test_parse_search() -> None:
    raw = _reply({"name": "search", "keywords": ["sulfide electrolyte stability", " 固态电池 "]})
    assert parse(raw, {"search"}) == Search(("sulfide electrolyte stability", "固态电池"))


def test_parse_init_plan() -> None:
    raw = _reply({"name": "init-plan", "title": " Solid-State Batteries ", "sections": _sections(3)})
    action = parse(raw, {"init-plan"})
    assert action == InitPlan("Solid-State Batteries", _nodes(3))


def test_parse_extend_plan() -> None:
    raw = _reply({"name": "extend-plan", "position": "section-2", "subsections": _sections(2, "Sub")})
    assert parse(raw, {"extend-plan", "nop"}) == ExtendPlan("section-2", _nodes(2, "Sub"))


def test_parse_nop() -> None:
    assert parse(_reply({"name": "nop"}), {"extend-plan", "nop"}) == Nop()


def test_parse_write_keeps_raw_markdown() -> None:
    text = "## Heading\n\nC# is used \\cite{textid1}; see also #42 and a table:\n\n| a | b |\n|---|---|"
    assert parse(_reply(text), {"write"}) == Write(text)


def test_split_reply_separates_thought_and_body() -> None:
    reply = split_reply('<think>hidden</think><thought> plan it </thought><action> {"name": "nop"} </action>')
    assert reply.thought == "plan it"
    assert reply.body == '{"name": "nop"}'


# ---- tolerance ---------------------------------------------------------------------------------------

NOP = {"extend-plan", "nop"}


@pytest.mark.parametrize(
    "raw",
    [
        '<action>{"name": "nop"}</action>',  # no thought
        '<think>Let me think {"name": "search"}</think><thought>t</thought><action>{"name": "nop"}</action>',
        '<thought>t</thought><action>```json\n{"name": "nop"}\n```</action>',
        '<thought>t</thought><action>```\n{"name": "nop"}\n```</action>',
        '<thought>t</thought><action>{"name": "nop",}</action>',  # trailing comma
        '<thought>t</thought><action>{"name": "nop"}',  # missing closing tag
        '<thought>t</thought>\n{"name": "nop"}',  # no action tags at all
        '<thought>t</thought><action>Here is my action: {"name": "nop"} Done.</action>',
        '<THOUGHT>t</THOUGHT><ACTION>{"name": "nop"}</ACTION>',
        '<thought>t<action>{"name": "nop"}</action>',  # unclosed thought
        '<action>{"name": "nop"}</action><action>{"name": "extend-plan"}</action>',  # first one counts
        '<action>[{"name": "nop"}]</action>',  # the object inside a list
    ],
)
def test_parser_tolerates_what_models_send(raw: str) -> None:
    assert parse(raw, NOP) == Nop()


def test_trailing_commas_inside_lists_are_tolerated() -> None:
    raw = '<action>{"name": "search", "keywords": ["a", "b",],}</action>'
    assert parse(raw, {"search"}) == Search(("a", "b"))


def test_newlines_inside_json_strings_are_tolerated() -> None:
    raw = '<action>{"name": "search", "keywords": ["line one\nline two"]}</action>'
    assert parse(raw, {"search"}) == Search(("line one\nline two",))


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        ("", "no <action>"),
        ("<thought>only a thought</thought>", "no <action>"),
        ("<action>   </action>", "no <action>"),
        ('<think>never closed <action>{"name": "nop"}</action>', "no <action>"),
        ("<action>nop</action>", "JSON object"),
        ("<action>{'name': 'nop'}</action>", "not valid JSON"),
        ('<action>{"name": "nop"</action>', "JSON object"),
        ('<action>{"name": "search", "keywords": [' + "1" * 5000 + "]}</action>", "not valid JSON"),
        ('<action>{"a": ' + "[" * 50_000 + "]" * 50_000 + "}</action>", "not valid JSON"),
    ],
)
def test_unusable_replies_are_refused_with_a_reason(raw: str, fragment: str) -> None:
    refused = parse(raw, NOP)
    assert isinstance(refused, Refused)
    assert fragment in refused.reason


@pytest.mark.parametrize(
    ("data", "expected", "fragment"),
    [
        ({"name": "search", "keywords": ["x"]}, NOP, '"extend-plan" or "nop"'),
        ({"name": "write"}, {"search"}, '"search", not "write"'),
        ({"keywords": ["x"]}, {"search"}, "not null"),
        ({"name": ["search"], "keywords": ["x"]}, {"search"}, 'not ["search"]'),
        ({"name": {"a": 1}}, NOP, "not {"),
        ({"name": 3}, NOP, "not 3"),
    ],
)
def test_wrong_action_names_are_refused(data: dict[str, Any], expected: set[str], fragment: str) -> None:
    refused = parse(_reply(data), expected)  # type: ignore[arg-type]
    assert isinstance(refused, Refused)
    assert fragment in refused.reason


# ---- exact key sets ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected", "fragment"),
    [
        (
            {"name": "search", "keywords": ["a"], "reason": "x"},
            {"search"},
            "keywords, name (got keywords, name, reason)",
        ),
        ({"name": "search"}, {"search"}, "keywords, name (got name)"),
        ({"name": "search", "query": "a"}, {"search"}, "keywords, name (got name, query)"),
        ({"name": "nop", "why": "done"}, NOP, '"nop" takes exactly the keys name (got name, why)'),
        ({"name": "init-plan", "sections": _sections(3)}, {"init-plan"}, "name, sections, title"),
        (
            {"name": "init-plan", "title": "T", "sections": _sections(3), "language": "en"},
            {"init-plan"},
            "got language, name, sections, title",
        ),
        ({"name": "extend-plan", "position": "section-1"}, NOP, "name, position, subsections"),
        (
            {"name": "extend-plan", "position": "section-1", "subsections": _sections(2), "nop": False},
            NOP,
            "got name, nop, position, subsections",
        ),
    ],
)
def test_exact_key_sets_are_enforced(data: dict[str, Any], expected: set[str], fragment: str) -> None:
    refused = parse(_reply(data), expected)  # type: ignore[arg-type]
    assert isinstance(refused, Refused)
    assert fragment in refused.reason


@pytest.mark.parametrize(
    "section",
    [
        {"title": "A"},
        {"plan": "p"},
        {"title": "A", "plan": "p", "subsections": []},  # no nesting in the WARP init-plan
        {"title": "A", "plan": "p", "extra": 1},
        "just a string",
    ],
)
def test_every_section_has_exactly_title_and_plan(section: Any) -> None:
    data = {"name": "init-plan", "title": "T", "sections": [*_sections(2), section]}
    refused = parse(_reply(data), {"init-plan"})
    assert isinstance(refused, Refused)
    assert '"plan", "title"' in refused.reason


@pytest.mark.parametrize(
    ("data", "expected", "fragment"),
    [
        ({"name": "search", "keywords": "one keyword"}, {"search"}, "list of strings"),
        ({"name": "search", "keywords": ["a", 3]}, {"search"}, "list of strings"),
        (
            {"name": "init-plan", "title": 7, "sections": _sections(3)},
            {"init-plan"},
            '"title" must be a string',
        ),
        ({"name": "init-plan", "title": "T", "sections": {"a": 1}}, {"init-plan"}, "must be a list"),
        (
            {"name": "init-plan", "title": "T", "sections": [{"title": 1, "plan": "p"}]},
            {"init-plan"},
            "strings",
        ),
        (
            {"name": "extend-plan", "position": 2, "subsections": _sections(2)},
            NOP,
            '"position" must be a string',
        ),
    ],
)
def test_wrong_value_types_are_refused(data: dict[str, Any], expected: set[str], fragment: str) -> None:
    refused = parse(_reply(data), expected)  # type: ignore[arg-type]
    assert isinstance(refused, Refused)
    assert fragment in refused.reason


# ---- search --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("count", [1, 3, 5])
def test_one_to_five_keywords_pass(count: int) -> None:
    assert validate_search(Search(tuple(f"keyword {i}" for i in range(count)))) is None


def test_more_than_five_keywords_are_refused() -> None:
    refused = validate_search(Search(tuple(f"keyword {i}" for i in range(6))))
    assert isinstance(refused, Refused)
    assert "6" in refused.reason and "5" in refused.reason


@pytest.mark.parametrize("keywords", [[], [""], ["ok", "   "]])
def test_empty_keywords_are_refused(keywords: list[str]) -> None:
    action = parse(_reply({"name": "search", "keywords": keywords}), {"search"})
    assert isinstance(action, Search)
    refused = validate_search(action)
    assert isinstance(refused, Refused)
    assert "non-empty" in refused.reason


# ---- init-plan -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("count", "ok"), [(2, False), (3, True), (7, True), (12, True), (13, False), (0, False)]
)
def test_three_to_twelve_sections(count: int, ok: bool) -> None:
    refused = validate_init_plan(InitPlan("Solid-state batteries", _nodes(count)), EN)
    if ok:
        assert refused is None
    else:
        assert isinstance(refused, Refused)
        assert f"between 3 and 12 sections (got {count})" in refused.reason


def test_init_plan_needs_a_title_and_non_empty_sections() -> None:
    assert isinstance(validate_init_plan(InitPlan("", _nodes(3)), EN), Refused)
    blank_plan = (*_nodes(2), PlannedNode("Title", ""))
    refused = validate_init_plan(InitPlan("T", blank_plan), EN)
    assert isinstance(refused, Refused)
    assert "non-empty title and plan" in refused.reason


def test_init_plan_language_must_follow_the_question() -> None:
    chinese = tuple(
        PlannedNode(f"第{i}部分：电解质", "比较氧化物、硫化物和聚合物电解质的性能") for i in range(3)
    )
    assert validate_init_plan(InitPlan("固态电池综述", chinese), ZH) is None
    refused = validate_init_plan(InitPlan("固态电池综述", chinese), EN)
    assert isinstance(refused, Refused)
    assert "title" in refused.reason
    refused = validate_init_plan(InitPlan("Solid-state batteries", chinese), EN)
    assert isinstance(refused, Refused)
    assert "第0部分" in refused.reason  # names the offending section
    assert isinstance(validate_init_plan(InitPlan("Solid-state batteries", _nodes(3)), ZH), Refused)


# ---- extend-plan ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("position", ["section-2", "section-3", "section-1.2", "Section 2", "2", "1.2"])
def test_extend_a_level_one_or_two_node_without_children(position: str) -> None:
    assert validate_extend_plan(ExtendPlan(position, _nodes(2)), _outline(), EN) is None


@pytest.mark.parametrize(
    ("position", "fragment"),
    [
        ("section-1.1.1", "only level-1 and level-2"),
        ("section-1.1.1.1", "only level-1 and level-2"),
        ("section-4", "there is no section-4"),
        ("section-1.3", "there is no section-1.3"),
        ("section-2.1", "there is no section-2.1"),
        ("section-1", "already has subsections"),
        ("section-1.1", "already has subsections"),
        ("outline", "must look like"),
        ("section-0", "must look like"),
        ("", "must look like"),
        ("section-" + "9" * 5000, "must look like"),
    ],
)
def test_extend_refused_positions(position: str, fragment: str) -> None:
    refused = validate_extend_plan(ExtendPlan(position, _nodes(2)), _outline(), EN)
    assert isinstance(refused, Refused)
    assert fragment in refused.reason


@pytest.mark.parametrize(
    ("count", "ok"), [(0, False), (1, False), (2, True), (5, True), (7, True), (8, False)]
)
def test_two_to_seven_subsections(count: int, ok: bool) -> None:
    refused = validate_extend_plan(ExtendPlan("section-2", _nodes(count)), _outline(), EN)
    if ok:
        assert refused is None
    else:
        assert isinstance(refused, Refused)
        assert f"between 2 and 7 subsections (got {count})" in refused.reason


def test_extend_subsections_follow_the_language_of_the_question() -> None:
    chinese = (PlannedNode("氧化物", "介绍氧化物电解质"), PlannedNode("硫化物", "介绍硫化物电解质"))
    assert validate_extend_plan(ExtendPlan("section-2", chinese), _outline(), ZH) is None
    assert isinstance(validate_extend_plan(ExtendPlan("section-2", chinese), _outline(), EN), Refused)


# ---- write ---------------------------------------------------------------------------------------------


def test_a_canonical_write_passes() -> None:
    assert (
        _write(f"{LONG_EN} \\cite{{textid3}}, but they react with moist air \\cite{{textid1, textid3}}.")
        is None
    )


def test_write_must_be_longer_than_fifty_characters() -> None:
    cite = " \\cite{textid1}"
    exactly_50 = "x" * (50 - len(cite)) + cite
    assert len(exactly_50) == 50
    refused = _write(exactly_50)
    assert isinstance(refused, Refused)
    assert "too short (50 characters)" in refused.reason
    assert _write("x" + exactly_50) is None


@pytest.mark.parametrize(("count", "ok"), [(0, False), (1, True), (12, True), (13, False)])
def test_one_to_twelve_citations(count: int, ok: bool) -> None:
    text = LONG_EN + "".join(f" claim {i} \\cite{{textid1}}." for i in range(count))
    refused = _write(text)
    if ok:
        assert refused is None
    else:
        assert isinstance(refused, Refused)
        assert f"(found {count})" in refused.reason


def test_several_keys_in_one_cite_count_as_one_citation() -> None:
    text = LONG_EN + "".join(f" claim {i} \\cite{{textid1, textid2, textid3}}." for i in range(12))
    assert _write(text) is None


def test_only_keys_of_the_current_evidence_may_be_cited() -> None:
    refused = _write(f"{LONG_EN} \\cite{{textid1, textid7}} and \\cite{{textid42}}.")
    assert isinstance(refused, Refused)
    # The allowed keys are listed in numeric order, then the offending ones.
    assert "(textid1, textid2, textid3, textid10)" in refused.reason
    assert "not textid42, textid7" in refused.reason


def test_with_no_evidence_every_citation_is_refused() -> None:
    refused = _write(f"{LONG_EN} \\cite{{textid1}}.", keys=[])
    assert isinstance(refused, Refused)
    assert "(none)" in refused.reason


def test_an_empty_cite_is_refused() -> None:
    refused = _write(f"{LONG_EN} \\cite{{}} and \\cite{{textid1}}.")
    assert isinstance(refused, Refused)
    assert "holds no evidence key" in refused.reason


def test_hash_signs_and_headings_are_allowed_in_written_text() -> None:
    text = f"### Languages\n\n{LONG_EN} in C# and F# tooling \\cite{{textid2}}; issue #12 is #1.\n\n# Summary\nok."
    assert _write(text) is None


def test_the_word_bibkey_is_allowed_after_normalisation() -> None:
    assert _write(f"{LONG_EN} (bibkey:textid1).") is None


# ---- language --------------------------------------------------------------------------------------------


def test_english_text_quoting_a_chinese_name_passes() -> None:
    text = f"The report by 宁德时代 (CATL) on {LONG_EN} \\cite{{textid1}}."
    assert 0 < cjk_share(text) < 0.30
    assert _write(text) is None


def test_chinese_text_with_english_terms_passes() -> None:
    text = f"{LONG_ZH}，Toyota 与 Samsung SDI 正在推进 sulfide 路线 \\cite{{textid1}}。"
    assert 0.30 < cjk_share(text) < 1
    assert _write(text, ZH) is None


def test_chinese_text_for_an_english_question_is_refused() -> None:
    refused = _write(f"{LONG_ZH} \\cite{{textid1}}。")
    assert isinstance(refused, Refused)
    assert "not in Chinese" in refused.reason


def test_english_text_for_a_chinese_question_is_refused() -> None:
    refused = _write(f"{LONG_EN}, which matters \\cite{{textid1}}.", ZH)
    assert isinstance(refused, Refused)
    assert "write in Chinese" in refused.reason


def test_cjk_share_counts_cjk_characters_against_letters_and_ignores_citations() -> None:
    assert cjk_share("") == 0.0
    assert cjk_share("123 !?, \\cite{textid1}") == 0.0
    assert cjk_share("中文") == 1.0
    assert cjk_share("中文 ab \\cite{textid12345}") == pytest.approx(2 / 4)  # 中, 文 against a, b
    assert cjk_share("中文 2024，。！") == 1.0
    assert cjk_share("What is 量子计算 used for in practice?") == pytest.approx(4 / (4 + 23))


def test_names_in_another_script_do_not_count() -> None:
    # A capital inside a word (PyTorch, CATL), or a capital first letter mid-sentence, marks a name.
    assert cjk_share("用PyTorch训练") == 1.0
    assert cjk_share("在 Kubernetes 上部署 Serving") == 1.0
    # A capitalised word that opens a sentence is running text, in either script's punctuation.
    assert cjk_share("中文。The end") == pytest.approx(2 / (2 + 6))
    assert cjk_share("The 中文") == pytest.approx(2 / (2 + 3))


def test_language_rule_threshold_is_thirty_percent() -> None:
    at_threshold = "中文字 a b c d e f g"  # 3 CJK characters, 7 letters: exactly 30 %, passes either way
    assert cjk_share(at_threshold) == pytest.approx(0.30)
    assert language_problem(at_threshold, EN) is None
    assert language_problem(at_threshold, ZH) is None
    assert language_problem("中文字 a b c d e f", EN) is not None  # 33 %
    assert language_problem("中文字 a b c d e f g h", ZH) is not None  # 27 %
    assert language_problem("plain english", EN) is None
    assert language_problem("中文", ZH) is None


def test_question_language() -> None:
    assert is_chinese(ZH)
    assert not is_chinese(EN)
    assert not is_chinese("What did 鲁迅 write about modern China?")
    # A few CJK characters in an English question do not make it Chinese: letters are counted.
    assert not is_chinese("What is 量子计算 used for in practice?")
    assert is_chinese("请比较固态电池和锂电池")
    # Chinese questions full of English names are still Chinese.
    assert is_chinese("PyTorch 与 TensorFlow 的性能对比")
    assert is_chinese("在 Kubernetes 上部署 TensorFlow Serving 与 PyTorch TorchServe 的最佳实践是什么？")


# ---- citations in prose ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("A \\cite{textid3}.", "A \\cite{textid3}."),
        ("A \\cite{bibkey:textid3}.", "A \\cite{textid3}."),
        ("A \\cite{bibkey: textid3, bibkey:textid4}.", "A \\cite{textid3, textid4}."),
        ("A \\cite{TextID3}.", "A \\cite{textid3}."),
        ("A [textid3].", "A \\cite{textid3}."),
        ("A [textid3, textid4].", "A \\cite{textid3, textid4}."),
        ("A (textid3, textid4).", "A \\cite{textid3, textid4}."),
        ("A (textid3; textid4).", "A \\cite{textid3, textid4}."),
        ("A （textid3，textid4）。", "A \\cite{textid3, textid4}。"),
        ("A 【textid3】。", "A \\cite{textid3}。"),
        ("A <textid18>, <textid11>.", "A \\cite{textid18}, \\cite{textid11}."),
        ("as textid3 shows", "as \\cite{textid3} shows"),
        ("see bibkey:textid3.", "see \\cite{textid3}."),
        ("A [bibkey:textid3]", "A \\cite{textid3}"),
        ("A \\cite{textid1} and [textid2]", "A \\cite{textid1} and \\cite{textid2}"),
        # Left alone: not keys.
        (
            "A [1] and (see below) and textid and mytextid3 and textid3a.",
            "A [1] and (see below) and textid and mytextid3 and textid3a.",
        ),
        ("A \\cite{smith2020}.", "A \\cite{smith2020}."),
    ],
)
def test_normalise_citations(text: str, expected: str) -> None:
    assert normalise_citations(text) == expected


def test_parse_write_normalises_citations() -> None:
    action = parse(_reply(f"{LONG_EN} [textid1], and (textid2, textid3)."), {"write"})
    assert isinstance(action, Write)
    assert cited_keys(action.text) == [["textid1"], ["textid2", "textid3"]]
    assert validate_write(action, EN, KEYS) is None


def test_parse_write_repairs_a_malformed_cite_command() -> None:
    # Before, `\\citetextid1` counted as no citation: deepdraft attached its own and the report kept both.
    action = parse(_reply(f"{LONG_EN} \\citetextid1, and \\cite[textid2]."), {"write"})
    assert isinstance(action, Write)
    assert "\\citetextid1" not in action.text
    assert cited_keys(action.text) == [["textid1"], ["textid2"]]
    assert validate_write(action, EN, KEYS) is None


def test_cited_keys() -> None:
    assert cited_keys("a \\cite{textid1, bibkey:textid2} b \\cite{} c \\cite{textid3}") == [
        ["textid1", "textid2"],
        [],
        ["textid3"],
    ]


# ---- the plan-then-write baseline's outline ----------------------------------------------------------


def test_parse_full_plan_accepts_nested_subsections() -> None:
    data = {
        "name": "init-plan",
        "title": "Batteries compared",
        "sections": [
            {
                "title": "A",
                "plan": "a",
                "subsections": [{"title": "A1", "plan": "x"}, {"title": "A2", "plan": "y"}],
            },
            {"title": "B", "plan": "b"},
            {"title": "C", "plan": "c"},
        ],
    }
    action = parse_full_plan(_reply(data))
    assert isinstance(action, InitPlan)
    assert action.sections[0].children == (PlannedNode("A1", "x"), PlannedNode("A2", "y"))
    assert validate_full_plan(action, EN) is None


def test_parse_full_plan_refuses_other_actions() -> None:
    assert isinstance(parse_full_plan(_reply({"name": "nop"})), Refused)
    assert isinstance(parse_full_plan("no action"), Refused)


def _deep(levels: int) -> PlannedNode:
    node = PlannedNode("leaf", "p")
    for _ in range(levels - 1):
        node = PlannedNode("inner", "p", (node, PlannedNode("sibling", "p")))
    return node


def test_full_plan_depth_and_counts() -> None:
    sections = lambda first: (first, PlannedNode("B", "b"), PlannedNode("C", "c"))  # noqa: E731
    assert validate_full_plan(InitPlan("Batteries", sections(_deep(3))), EN) is None
    refused = validate_full_plan(InitPlan("Batteries", sections(_deep(4))), EN)
    assert isinstance(refused, Refused)
    assert "at most 3 levels" in refused.reason
    lonely = PlannedNode("A", "a", (PlannedNode("only child", "x"),))
    refused = validate_full_plan(InitPlan("Batteries", sections(lonely)), EN)
    assert isinstance(refused, Refused)
    assert "between 2 and 7 subsections" in refused.reason
    assert isinstance(validate_full_plan(InitPlan("Batteries", _nodes(2)), EN), Refused)


# ---- fuzz: the parser and the validators are total functions ----------------------------------------

KINDS: dict[str, type] = {
    "search": Search,
    "init-plan": InitPlan,
    "extend-plan": ExtendPlan,
    "nop": Nop,
    "write": Write,
}
EXPECTED_SETS: list[frozenset[str]] = [
    frozenset({"search"}),
    frozenset({"init-plan"}),
    frozenset({"extend-plan", "nop"}),
    frozenset({"nop"}),
    frozenset({"write"}),
]
QUESTIONS = st.sampled_from([EN, ZH, "", "Compare 北京 and 上海", "比较 PyTorch 和 JAX"]) | st.text(
    max_size=30
)


def _check_outcome(outcome: object, expected: frozenset[str]) -> None:
    if isinstance(outcome, Refused):
        assert isinstance(outcome.reason, str) and outcome.reason.strip()
    else:
        assert isinstance(outcome, tuple(KINDS[name] for name in expected)), outcome


def _check_validators(outcome: object, question: str) -> None:
    """Every validator returns None or a Refused with a reason, whatever it is given."""
    results: list[object] = []
    if isinstance(outcome, Search):
        results.append(validate_search(outcome))
    elif isinstance(outcome, InitPlan):
        results += [validate_init_plan(outcome, question), validate_full_plan(outcome, question)]
    elif isinstance(outcome, ExtendPlan):
        results.append(validate_extend_plan(outcome, _outline(), question))
        results.append(validate_extend_plan(outcome, Outline(title="empty"), question))
    elif isinstance(outcome, Write):
        results += [validate_write(outcome, question, KEYS), validate_write(outcome, question, [])]
    for result in results:
        assert result is None or (isinstance(result, Refused) and result.reason.strip())


_FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_FUZZ
@given(st.text(), st.sampled_from(EXPECTED_SETS), QUESTIONS)
def test_parse_never_raises_on_arbitrary_text(raw: str, expected: frozenset[str], question: str) -> None:
    outcome = parse(raw, expected)  # type: ignore[arg-type]
    _check_outcome(outcome, expected)
    _check_validators(outcome, question)
    full = parse_full_plan(raw)
    assert isinstance(full, InitPlan | Refused)
    _check_validators(full, question)


_TAGS = st.sampled_from(
    ["<thought>", "</thought>", "<action>", "</action>", "<think>", "</think>", "```", "```json\n", "{", "}", "[", "]",
     ",", '"name"', ":", '"search"', '"nop"', '"init-plan"', '"extend-plan"', '"keywords"', '"sections"',
     '"subsections"', '"position"', '"title"', '"plan"', "\\cite{", "textid1", "bibkey:", "\n", " ", "固态", "é", "\x00"]
)  # fmt: skip


@_FUZZ
@given(
    st.lists(_TAGS | st.text(max_size=5), max_size=40).map("".join), st.sampled_from(EXPECTED_SETS), QUESTIONS
)
def test_parse_never_raises_on_protocol_shaped_noise(
    raw: str, expected: frozenset[str], question: str
) -> None:
    outcome = parse(raw, expected)  # type: ignore[arg-type]
    _check_outcome(outcome, expected)
    _check_validators(outcome, question)


_JSON_LEAVES = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
_JSON = st.recursive(
    _JSON_LEAVES,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
_TEXTS = st.sampled_from(
    ["", " ", "Title", "固态电池", "Plan of the part", "Ünïcödé ✓", "中文 and English"]
) | st.text(max_size=15)
_NODE = st.fixed_dictionaries({"title": _TEXTS, "plan": _TEXTS}) | st.dictionaries(
    st.sampled_from(["title", "plan", "subsections", "extra"]), _JSON | _TEXTS, max_size=4
)
_POSITIONS = st.sampled_from(
    [
        "section-1",
        "section-2",
        "section-1.2",
        "section-1.1",
        "section-1.1.1",
        "2",
        "Section 3",
        "section-0",
        "section-9",
    ]
) | st.text(max_size=10)


def _actions() -> st.SearchStrategy[dict[str, Any]]:
    """JSON objects shaped like the protocol's actions, often right, often slightly wrong."""
    return st.one_of(
        st.fixed_dictionaries({"name": st.just("search"), "keywords": st.lists(_TEXTS, max_size=7)}),
        st.fixed_dictionaries(
            {"name": st.just("init-plan"), "title": _TEXTS, "sections": st.lists(_NODE, max_size=14)}
        ),
        st.fixed_dictionaries(
            {
                "name": st.just("extend-plan"),
                "position": _POSITIONS,
                "subsections": st.lists(_NODE, max_size=9),
            }
        ),
        st.just({"name": "nop"}),
        st.dictionaries(
            st.sampled_from(["name", "keywords", "title", "sections", "position", "subsections", "x"]),
            _JSON,
            max_size=4,
        ),
    ).flatmap(
        lambda data: st.one_of(
            st.just(data),
            st.dictionaries(st.sampled_from(["extra", "name", "reason"]), _JSON, max_size=2).map(
                lambda e: {**data, **e}
            ),
        )
    )


@st.composite
def _near_miss_replies(draw: st.DrawFn) -> str:
    body = json.dumps(draw(_actions() | _JSON), ensure_ascii=draw(st.booleans()))
    if draw(st.booleans()):
        body = body.replace("}", ",}").replace("]", ",]")  # trailing commas
    if draw(st.booleans()):
        body = f"```{draw(st.sampled_from(['', 'json', 'JSON']))}\n{body}\n```"
    if draw(st.booleans()):
        body = draw(st.text(max_size=10)) + body + draw(st.text(max_size=10))
    thought = draw(
        st.sampled_from(["", "<thought>why</thought>", "<thought>unclosed ", "<thought>思考</thought>\n"])
    )
    think = draw(st.sampled_from(["", '<think>hidden {"name": "nop"}</think>', "<think>never closed "]))
    open_tag = draw(st.sampled_from(["<action>", "<ACTION>", "", "<action><action>"]))
    close_tag = draw(st.sampled_from(["</action>", "", "</action></action>", "</action><action>{}</action>"]))
    return think + thought + open_tag + body + close_tag


@_FUZZ
@given(_near_miss_replies(), st.sampled_from(EXPECTED_SETS), QUESTIONS)
def test_parse_never_raises_on_near_miss_replies(raw: str, expected: frozenset[str], question: str) -> None:
    outcome = parse(raw, expected)  # type: ignore[arg-type]
    _check_outcome(outcome, expected)
    _check_validators(outcome, question)
    full = parse_full_plan(raw)
    assert isinstance(full, InitPlan | Refused)
    _check_validators(full, question)


@_FUZZ
@given(_actions(), QUESTIONS)
def test_well_formed_json_actions_parse_to_their_kind_or_a_reason(
    data: dict[str, Any], question: str
) -> None:
    expected = frozenset({"search", "init-plan", "extend-plan", "nop"})
    outcome = parse(_reply(data), expected)  # type: ignore[arg-type]
    _check_outcome(outcome, expected)
    _check_validators(outcome, question)
    if not isinstance(outcome, Refused):
        # Structure accepted means the exact key set was given.
        assert data["name"] in expected
        assert isinstance(outcome, KINDS[data["name"]])


_PROSE = st.lists(
    st.sampled_from(["Sulfides", "conduct", "well", "固态", "电池", "C#", "#", "\\cite{textid1}", "[textid2]", "(textid3, textid4)",
                     "textid10", "\\cite{}", "\\cite{bibkey:textid99}", "bibkey", ".", "，", "\n", "## Heading\n"]) | st.text(max_size=6),
    max_size=60,
).map(" ".join)  # fmt: skip


@_FUZZ
@given(_PROSE, QUESTIONS)
def test_write_validation_never_raises(text: str, question: str) -> None:
    outcome = parse(_reply(text), {"write"})
    assert isinstance(outcome, Write | Refused)
    _check_validators(outcome, question)
    if isinstance(outcome, Write):
        # Normalisation is idempotent, and every cited key is a plain lower-case textidN.
        assert normalise_citations(outcome.text) == outcome.text
        for group in cited_keys(outcome.text):
            assert all(key.startswith("textid") and key[6:].isdigit() for key in group)


def test_a_write_that_repeats_the_worked_example_is_refused_with_what_to_do() -> None:
    from deepdraft.protocol.prompts import WRITE_EXAMPLE_ACTION

    # The example with keys this part was shown: refused as an echo, not for its keys.
    with_shown_keys = WRITE_EXAMPLE_ACTION.replace("textid91", "textid1").replace("textid94", "textid2")
    echoed = validate_write(Write(with_shown_keys.replace("textid97", "textid3")), EN, KEYS)
    assert isinstance(echoed, Refused) and "worked example" in echoed.reason
    # Its own words on the same subject are fine: only a run of the example's words is an echo.
    own = f"{LONG_EN} \\cite{{textid1}}. They react with moist air, so cells are built in dry rooms \\cite{{textid2}}."
    assert validate_write(Write(own), EN, KEYS) is None
