"""WARP with `research.write_by_passage`: one write action, one short plain-text request per passage."""

from __future__ import annotations

from deepdraft.config import load_settings
from deepdraft.core.citations import cited_keys
from deepdraft.core.evidence import Passage, Source
from deepdraft.core.outline import Outline
from deepdraft.core.state import RunState
from deepdraft.events import ActionFinished, Event
from deepdraft.llm.scripted import FunctionLLM
from deepdraft.policy.warp import PASSAGE_BREAK, WarpPolicy, find_evidence, passages_to_write
from deepdraft.protocol.passage_write import REPLY_TOKENS
from tests.support.scenario import SOTU_LIKE, ScenarioModel, WordOverlapRetriever, classify

QUESTION = "How did presidents argue about tariffs?"


def test_each_part_is_one_write_action_made_of_one_request_per_passage() -> None:
    research = load_settings(flags={"research": {"depth": "quick", "seed": 3}}).research
    assert research.write_by_passage
    llm, events = FunctionLLM(ScenarioModel(expansions=0)), list[Event]()
    state = WarpPolicy(llm, WordOverlapRetriever(SOTU_LIKE), research, on_event=events.append).run(
        RunState(question=QUESTION)
    )
    writes = [e.record for e in events if isinstance(e, ActionFinished) and e.record.action == "write"]
    passages = [r for r in llm.requests if classify(r)[0] == "write-passage"]
    assert writes and not [r for r in llm.requests if classify(r)[0] == "write"]
    # The journal row of a write shows every prompt its passages were asked with, and its reply
    # is the part as put together; each passage request is plain text, short, and tagged after
    # its write's step and its key, so a resumed run replays it from the cache.
    asked = [r.messages[-1].content for r in passages]
    assert PASSAGE_BREAK.join(asked) == PASSAGE_BREAK.join(row.prompt for row in writes)
    assert {r.tag.rsplit("-", 1)[0] for r in passages} == {f"step-{row.step}" for row in writes}
    assert all(r.reply_shape is None and r.max_tokens == REPLY_TOKENS for r in passages)
    assert len({r.seed for r in passages}) == len(passages)
    assert state.outline is not None
    for located in state.outline.walk():
        paragraphs = located.node.content.split("\n\n")
        # A paragraph per passage, every sentence cited to that passage only, the frame taken off.
        assert len(paragraphs) >= 2
        for paragraph in paragraphs:
            assert len({key for group in cited_keys(paragraph) for key in group}) == 1
            assert not paragraph.startswith("The source states")
    assert len(writes) == len(list(state.outline.walk()))  # one action a part, however many passages


def tariff_state() -> RunState:
    state = RunState(question=QUESTION)
    texts = [
        ("A 1790", "The tariffs on imports protect our manufactures."),
        ("A 1832", "High tariffs burden the farmer."),
        ("A 1850", "The railways crossed the continent."),  # names no subject word
        ("A 1890", "The tariffs act brought protection to industry."),
        ("A 1930", "Tariffs deepened the depression."),
    ]
    keys = [
        state.registry.register(Passage(text, Source(f"d{i}", title, f"{title}.txt"), 0.5))
        for i, (title, text) in enumerate(texts)
    ]
    state.outline = Outline(title="Tariffs")
    state.outline.add_tree(None, [("Early tariffs", "", []), ("Late tariffs", "", [])])
    state.outline.sections[0].content = f"Protection came first \\cite{{{keys[0]}}}."
    state.target, state.evidence = "section-2", keys
    return state


def test_a_part_leaves_out_passages_another_part_cites_and_those_off_the_subject() -> None:
    state = tariff_state()
    assert passages_to_write(state) == [state.evidence[1], state.evidence[3], state.evidence[4]]


def test_with_too_few_left_the_others_fill_in_up_to_the_fewest() -> None:
    state = tariff_state()
    state.evidence = state.evidence[:3]  # the cited one, one on the subject, one off it
    assert passages_to_write(state) == [state.evidence[1], state.evidence[0]]


def test_a_part_whose_passages_all_come_back_empty_is_asked_again_with_that_reason() -> None:
    from deepdraft.core.outline import WRITTEN_FROM_EVIDENCE
    from deepdraft.ports import ChatRequest
    from deepdraft.protocol.passage_write import NOTHING_KEPT

    scenario = ScenarioModel(expansions=0)

    def off_the_subject(request: ChatRequest) -> str:
        if classify(request)[0] == "write-passage":
            return "The weather was mild and the harvest came in early that year."
        return scenario(request)

    research = load_settings(flags={"research": {"depth": "quick"}}).research
    events = list[Event]()
    state = WarpPolicy(
        FunctionLLM(off_the_subject), WordOverlapRetriever(SOTU_LIKE), research, on_event=events.append
    ).run(RunState(question=QUESTION))
    writes = [e.record for e in events if isinstance(e, ActionFinished) and e.record.action == "write"]
    assert writes and all(not row.valid and row.reason == NOTHING_KEPT for row in writes)
    # Every try refused, even after a fresh search: the part is quoted from its passages, with a note.
    assert state.outline is not None
    assert all(
        (located.node.note or "").startswith(WRITTEN_FROM_EVIDENCE) for located in state.outline.walk()
    )


class _RankedRetriever:
    """Every query finds the same passages, in the order given."""

    def __init__(self, passages: list[Passage]) -> None:
        self.passages = passages

    def search(self, query: str, k: int) -> list[Passage]:
        return self.passages[:k]

    def fingerprint(self) -> str:
        return "ranked"


def test_a_part_written_by_passage_is_shown_passages_no_other_part_cites() -> None:
    # The passage the first part cites names both subject words, so it ranks first for the second
    # part too: written passage by passage it would be left out anyway, so its place goes to a
    # passage that part can use.
    state = RunState(question="How did presidents argue about tariffs and trade?")
    texts = [
        "Tariffs shape the trade of the nation.",
        "High tariffs burden the farmer.",
        "The tariffs act brought protection to industry.",
        "Tariffs deepened the depression.",
    ]
    passages = [Passage(text, Source(f"d{i}", f"A {i}", f"a{i}.txt"), 0.5) for i, text in enumerate(texts)]
    cited = state.registry.register(passages[0])
    state.outline = Outline(title="Tariffs")
    state.outline.add_tree(None, [("Early tariffs", "", []), ("Late tariffs", "", [])])
    state.outline.sections[0].content = f"Protection came first \\cite{{{cited}}}."
    state.target = "section-2"
    retriever = _RankedRetriever(passages)
    by_passage = load_settings(flags={"research": {"depth": "quick"}}).research
    assert by_passage.write_by_passage
    assert [p.text for p in find_evidence(retriever, state, ["tariffs"], by_passage, 3)] == texts[1:]
    # Written in one go, a part may see what one other part cites (cited twice, it is held back).
    whole = load_settings(flags={"research": {"depth": "standard"}}).research
    assert not whole.write_by_passage
    assert texts[0] in [p.text for p in find_evidence(retriever, state, ["tariffs"], whole, 3)]
    # With nothing else found, the cited passage fills the place rather than leave it empty.
    alone = _RankedRetriever(passages[:2])
    assert [p.text for p in find_evidence(alone, state, ["tariffs"], by_passage, 3)] == [texts[1], texts[0]]


def test_a_part_searched_again_after_refused_drafts_is_shown_other_passages() -> None:
    # The planned search asks the same queries again, which find the same passages: those the
    # refused drafts were shown give way to others, and come back only when nothing else is found.
    state = tariff_state()
    refused_on = [state.evidence[1], state.evidence[3]]
    passages = [state.registry[key] for key in (*refused_on, state.evidence[4])]
    state.evidence, state.researched_again = list(refused_on), True
    research = load_settings(flags={"research": {"depth": "quick"}}).research
    assert [p.text for p in find_evidence(_RankedRetriever(passages), state, ["tariffs"], research, 1)] == [
        passages[2].text
    ]
    assert len(find_evidence(_RankedRetriever(passages), state, ["tariffs"], research, 3)) == 3
    state.researched_again = False  # the first search of a part holds nothing back for this
    assert [p.text for p in find_evidence(_RankedRetriever(passages), state, ["tariffs"], research, 1)] == [
        passages[0].text
    ]


FILLER = "The harbours were dredged and the lighthouses of the coast were lit again that season."


def test_a_long_passage_is_shown_around_the_subject_and_the_fact_checker_sees_the_same() -> None:
    # Cut to the quick preset's 110 tokens, a passage used to lose whatever came after its start:
    # here the subject is in the middle of each passage, among sentences about something else.
    from deepdraft.policy.finishing.verify import Verifier
    from deepdraft.protocol.topic import subject_excerpt
    from deepdraft.settings import OutputSettings

    long_texts = [(title, " ".join([FILLER] * 8 + [text] + [FILLER] * 8)) for title, text in SOTU_LIKE]
    research = load_settings(flags={"research": {"depth": "quick", "seed": 3}}).research
    assert research.passage_tokens is not None
    llm = FunctionLLM(ScenarioModel(expansions=0))
    state = WarpPolicy(llm, WordOverlapRetriever(long_texts), research).run(RunState(question=QUESTION))
    excerpts = {text: subject_excerpt(text, QUESTION, research.passage_tokens) for _, text in long_texts}
    assert all(excerpt.startswith("... ") and excerpt.endswith(" ...") for excerpt in excerpts.values())
    asked = [r.messages[-1].content for r in llm.requests if classify(r)[0] == "write-passage"]
    assert asked and not [prompt for prompt in asked if any(text in prompt for text in excerpts)]
    shown = [excerpt for excerpt in excerpts.values() if any(excerpt in prompt for prompt in asked)]
    assert shown and all("tariff" in excerpt.lower() for excerpt in shown)
    # The sentences written from an excerpt are held to it, and kept.
    assert state.outline is not None and all(located.node.content for located in state.outline.walk())

    # The fact-checker, asked about a sentence word overlap leaves unclear, is shown that excerpt.
    checked_state = RunState(question=QUESTION)
    passage = long_texts[0][1]
    key = checked_state.registry.register(Passage(passage, Source("d1", "A 1790", "a.txt"), 0.5))
    checked_state.outline = Outline(title="Tariffs")
    checked_state.outline.add_tree(None, [("Early tariffs", "", [])])
    unclear = "The tariffs protect manufactures, which some called unfair to farmers"
    checked_state.outline.sections[0].content = f"{unclear} \\cite{{{key}}}."
    judge = FunctionLLM(lambda request: '{"verdicts": [{"claim": 1, "supported": "yes"}]}')
    Verifier(judge, research, OutputSettings(verify_policy="remove"), [].append).run(checked_state)
    [checked] = [r.messages[-1].content for r in judge.requests]
    assert excerpts[passage] in checked and passage not in checked
