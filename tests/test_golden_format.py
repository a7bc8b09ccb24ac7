"""Replies written exactly as the published AgentCPM-Report model writes them drive a whole run.

The model puts each tag on its own line, pretty-prints some JSON, cites several keys in one
`\\cite{}` and answers in the question's language. These transcripts follow that format (the
texts are ours); no repair or fallback may be needed for them: every reply must validate first time.
"""

from __future__ import annotations

import json

from deepdraft.core.state import RunState
from deepdraft.events import ActionFinished, Event
from deepdraft.export.report import render_markdown
from deepdraft.llm.scripted import ScriptedLLM
from deepdraft.policy.warp import WarpPolicy
from deepdraft.settings import ResearchSettings
from tests.support.scenario import SOTU_LIKE, WordOverlapRetriever


def act(thought: str, action: dict[str, object] | str, pretty: bool = False) -> str:
    body = (
        action
        if isinstance(action, str)
        else json.dumps(action, ensure_ascii=False, indent=2 if pretty else None)
    )
    return f"<thought>\n{thought}\n</thought>\n<action>\n{body}\n</action>"


def run(question: str, replies: list[str]) -> tuple[RunState, list[Event]]:
    events: list[Event] = []
    llm = ScriptedLLM(replies)
    state = WarpPolicy(llm, WordOverlapRetriever(SOTU_LIKE), ResearchSettings(), events.append).run(
        RunState(question=question)
    )
    assert llm.remaining == 0
    return state, events


def test_english_transcript_in_the_published_format() -> None:
    search = act(
        "Tariff history across the addresses.",
        {"name": "search", "keywords": ["tariffs", "history of tariffs"]},
    )
    plan = act(
        "Three periods structure the answer.",
        {
            "name": "init-plan",
            "title": "Presidents and the Tariff",
            "sections": [
                {"title": "Revenue and Protection", "plan": "Early arguments for duties."},
                {"title": "Reform and Retaliation", "plan": "Reform movements and the depression."},
                {"title": "Toward Open Markets", "plan": "Negotiated reductions after the war."},
            ],
        },
        pretty=True,
    )
    # Each part says something of its own: a part repeating another's sentences is asked again.
    sides = [
        ("Early presidents defended duties as revenue", "critics pointed to the burden on farmers"),
        ("Reformers asked for lower duties on imports", "others feared for the mills of the North"),
        ("Later leaders argued for open markets abroad", "some still wanted shelter for new industry"),
        ("The debt made duties a source of federal income", "planters counted what the duties cost them"),
        ("Protection for manufactures was a national aim", "farm states answered that it raised prices"),
    ]
    writes = [
        act(
            "textid1 and textid2 give the two sides.",
            f"{first} \\cite{{textid1}}, while {second} \\cite{{textid2, textid1}}.",
        )
        for first, second in sides
    ]
    extend = act(
        "The first section is thin; split it.",
        {
            "name": "extend-plan",
            "position": "section-1",
            "subsections": [
                {"title": "Revenue", "plan": "Duties and the debt."},
                {"title": "Protection", "plan": "Manufactures."},
            ],
        },
    )
    nop = act("The report answers the question.", {"name": "nop"})
    state, events = run(
        "How did presidents argue about tariffs?",
        [
            search,
            plan,
            search,
            writes[0],
            search,
            writes[1],
            search,
            writes[2],
            extend,
            search,
            writes[3],
            search,
            writes[4],
            nop,
        ],
    )
    assert all(e.record.valid for e in events if isinstance(e, ActionFinished))
    assert state.outline is not None and state.outline.count() == 5
    markdown = render_markdown(state.outline, state.registry).markdown
    assert "### 1.1 Revenue" in markdown and "[1, 2]" in markdown and "## References" in markdown


def test_chinese_transcript_in_the_published_format() -> None:
    search = act("检索关税相关的演讲。", {"name": "search", "keywords": ["tariffs", "关税 历史"]})
    plan = act(
        "按时间顺序组织报告。",
        {
            "name": "init-plan",
            "title": "美国总统的关税论争",
            "sections": [
                {"title": "财政与保护", "plan": "早期关于关税收入与产业保护的论点。"},
                {"title": "改革与报复", "plan": "改革运动与大萧条时期的贸易壁垒。"},
                {"title": "走向开放", "plan": "战后通过谈判降低关税。"},
            ],
        },
    )
    write = act(
        "textid1 说明收入作用，textid2 说明农民负担。",
        "早期总统把关税视为联邦财政收入和保护本国制造业的重要手段 \\cite{textid1}，"
        "而批评者则强调高关税加重了南方农民的负担 \\cite{textid2}。",
    )
    nop = act("报告已经完整。", {"name": "nop"})
    state, events = run(
        "美国总统们是如何讨论关税问题的？", [search, plan, search, write, search, write, search, write, nop]
    )
    assert all(e.record.valid for e in events if isinstance(e, ActionFinished))
    markdown = render_markdown(state.outline, state.registry).markdown  # type: ignore[arg-type]
    assert markdown.startswith("# 美国总统的关税论争") and "## 1 财政与保护" in markdown
