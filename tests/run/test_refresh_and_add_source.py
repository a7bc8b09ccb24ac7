"""`add-source` and `refresh` on a finished run, driven in-process on a scripted model and a real
knowledge base on disk (a named KB of the speeches, changed between the run and the command).

The command line, kill -9 and resume are in tests/cli/test_cli_refresh.py.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from deepdraft.errors import UserError
from deepdraft.llm.scripted import FunctionLLM
from deepdraft.policy.sections import SectionCommand
from deepdraft.ports import ChatRequest
from deepdraft.retrieval.kb import names as kbs
from deepdraft.run import runner, versions
from deepdraft.run.runs import Runs
from deepdraft.settings import RetrievalSettings, Settings
from tests.conftest import SPEECHES
from tests.run.test_sections import QUESTION, Model, journal_rows, references_of, sections_of
from tests.support.scenario import evidence_keys, recognise
from tests.support.web_server import FakeWeb, html_page

KB = "speeches"
MIDDLE_NOTES = (
    "# Notes on the middle years\n\nIn the middle decades presidents sought a middle course between "
    "protection and free trade.\n"
)


class CitingAll(Model):
    """The scenario model, whose writes cite every passage they are shown (not only the first two),
    so that a passage shown to the writer ends up in the References."""

    def __call__(self, request: ChatRequest) -> str:
        reply = super().__call__(request)
        if recognise(request).kind != "write":
            return reply
        shown = evidence_keys(request.messages[-1].content)
        return re.sub(r"\\cite\{[^}]*\}", lambda _: "\\cite{" + ", ".join(shown) + "}", reply)


def citing(markdown: str, number: str) -> list[str]:
    """The sections (as numbered in the report, in its order) whose text cites source [number]:
    taken from the report itself, since which passages a search shows depends on the whole
    report (documents it cites nowhere yet come first)."""
    cites = re.compile(rf"\[(?:\d+, )*{number}(?:, \d+)*\]")
    return [section for section, text in sections_of(markdown).items() if cites.search(text)]


def settings(*, verify: bool = False, synthesis: bool = False) -> Settings:
    return Settings.model_validate({"output": {"verify": verify, "synthesis": synthesis}})


@pytest.fixture
def speeches(tmp_path: Path) -> Path:
    """The named KB `speeches`, made from a folder of the five speeches (returned)."""
    folder = tmp_path / "speeches"
    folder.mkdir()
    for name, text in SPEECHES.items():
        (folder / name).write_text(text + "\n", encoding="utf-8")
    with kbs.create_kb(KB, RetrievalSettings()) as kb:
        kb.add([folder])
    return folder


def finished_run(config: Settings | None = None) -> runner.Report:
    return runner.start(QUESTION, config or settings(), kb=KB, llm=FunctionLLM(Model()))


def add_to_kb(path: Path) -> None:
    with kbs.open_kb(KB) as kb:
        kb.add([path])


def kb_documents() -> list[str]:
    with kbs.open_kb(KB) as kb:
        return [row["doc_id"] for row in kb.documents()]


def report_versions(run_id: str) -> list[str]:
    with Runs.open() as runs:
        folder = Path(runs.get(run_id).report_path or "").parent
    return [version.kind for version in versions.list_versions(folder)]


# ---- refresh -------------------------------------------------------------------------------------


def test_refresh_writes_again_the_section_a_new_document_now_ranks_for(
    speeches: Path, tmp_path: Path
) -> None:
    first = finished_run(settings(verify=True, synthesis=True))
    before = journal_rows(first.run_id)
    notes = tmp_path / "middle-notes.md"
    notes.write_text(MIDDLE_NOTES, encoding="utf-8")
    add_to_kb(notes)

    findings = runner.find_stale(first.run_id, settings())
    assert findings.changes.describe() == "1 document added"
    assert [stale.describe() for stale in findings.stale] == [
        "2: a new passage ranks in its top results (middle-notes.md, added)"
    ]

    model = CitingAll()
    report = runner.run_command(
        first.run_id, SectionCommand("refresh", None), settings(), llm=FunctionLLM(model)
    )
    old, new = sections_of(first.markdown), sections_of(report.markdown)
    assert new["2"] != old["2"]
    assert {n: t for n, t in new.items() if n != "2"} == {n: t for n, t in old.items() if n != "2"}
    # The new passage was shown to the writer, cited, and its source took the next free number.
    write = next(r for r in model.requests if recognise(r).kind == "write")
    assert recognise(write).target == "section-2" and "middle course" in write.messages[-1].content
    old_refs, new_refs = references_of(first.markdown), references_of(report.markdown)
    assert {title: new_refs[title] for title in old_refs} == old_refs
    assert new_refs["Notes on the middle years"] == str(len(old_refs) + 1)
    assert report_versions(first.run_id)[-1] == "refresh"

    # One journal, numbered on; every step of the command directed; its start says what and why.
    rows = journal_rows(first.run_id)
    assert rows[: len(before)] == before
    added = rows[len(before) :]
    assert all(directed == 1 for *_, directed in added)
    assert [(action, target) for _, action, target, _ in added][:3] == [
        ("refresh", "report"),
        ("search", "section-2"),
        ("write", "section-2"),
    ]
    with Runs.open() as runs:
        start = next(step for step in runs.steps(first.run_id) if step.action == "refresh")
    assert start.parsed is not None and start.parsed["sections"] == [
        {"position": "section-2", "reason": "a new passage ranks in its top results (middle-notes.md, added)"}
    ]

    # The report now stands on the KB as it is: nothing more to refresh, and no new version.
    with pytest.raises(
        UserError, match=r"nothing to refresh: the knowledge base of run \S+ is as its report saw it"
    ):
        runner.run_command(
            first.run_id, SectionCommand("refresh", None), settings(), llm=FunctionLLM(Model())
        )
    assert report_versions(first.run_id)[-1] == "refresh"


def test_refresh_finds_the_sections_citing_a_removed_document(speeches: Path) -> None:
    first = finished_run()
    with kbs.open_kb(KB) as kb:
        kb.remove(["address-1790.md"])
    findings = runner.find_stale(first.run_id, settings())
    assert findings.changes.describe() == "1 document removed"
    number = references_of(first.markdown)["Address of 1790"]
    touched = citing(first.markdown, number)
    assert touched  # the scripted run cites the address somewhere
    assert [stale.describe() for stale in findings.stale] == [
        f"{section}: a cited passage (source [{number}], address-1790.md) was removed" for section in touched
    ]
    report = runner.run_command(
        first.run_id, SectionCommand("refresh", None), settings(), llm=FunctionLLM(Model())
    )
    new = sections_of(report.markdown)
    assert "Address of 1790" not in report.markdown.split("## References")[1]
    assert all(new[section] != sections_of(first.markdown)[section] for section in touched)
    # Untouched sections keep their text and their sources' numbers.
    old = sections_of(first.markdown)
    assert {n: t for n, t in new.items() if n not in touched} == {
        n: t for n, t in old.items() if n not in touched
    }


def test_refresh_finds_the_sections_citing_a_changed_passage(speeches: Path) -> None:
    first = finished_run()
    (speeches / "address-1930.md").write_text(
        "# Address of 1930\n\nRetaliation abroad closed foreign markets to our farmers.\n", encoding="utf-8"
    )
    add_to_kb(speeches)
    findings = runner.find_stale(first.run_id, settings())
    assert findings.changes.describe() == "1 document changed"
    number = references_of(first.markdown)["Address of 1930"]
    reason = f"a cited passage (source [{number}], address-1930.md) changed"
    touched = citing(first.markdown, number)
    assert len(touched) >= 2  # several sections to write again, in document order
    assert [stale.describe() for stale in findings.stale] == [f"{section}: {reason}" for section in touched]

    model = Model()
    runner.run_command(first.run_id, SectionCommand("refresh", None), settings(), llm=FunctionLLM(model))
    assert [(recognise(r).kind, recognise(r).target) for r in model.requests] == [
        (kind, f"section-{section}") for section in touched for kind in ("search", "write")
    ]  # in document order; the run's settings hold (no verification, no synthesis)


def test_a_change_in_passages_no_section_cites_or_would_be_shown_refreshes_nothing(
    speeches: Path, tmp_path: Path
) -> None:
    # A long document: a passage on tariffs, then an appendix of several passages on other things.
    filler = " ".join(f"The harbour lights were counted again on night {word}." for word in WORDS)
    long_doc = tmp_path / "long" / "almanac.md"
    long_doc.parent.mkdir()
    long_doc.write_text(
        f"# Almanac\n\nPresidents argued that tariffs protect industry.\n\n## Appendix\n\n{filler}\n\nThe end.\n",
        encoding="utf-8",
    )
    add_to_kb(long_doc)
    first = finished_run()
    assert "Almanac" in references_of(first.markdown)  # its first passage is cited, and stays as it was
    steps = len(journal_rows(first.run_id))
    long_doc.write_text(
        long_doc.read_text(encoding="utf-8").replace("The end.", "The very end."), encoding="utf-8"
    )
    add_to_kb(long_doc)
    findings = runner.find_stale(first.run_id, settings())
    assert findings.changes.describe() == "1 document changed" and findings.stale == []
    with pytest.raises(UserError, match=r"changed \(1 document changed\), but no section cites what changed"):
        runner.run_command(
            first.run_id, SectionCommand("refresh", None), settings(), llm=FunctionLLM(Model())
        )
    assert len(journal_rows(first.run_id)) == steps and report_versions(first.run_id) == ["research"]


WORDS = [
    f"{a}{b}"
    for a in ("alpha", "beta", "gamma", "delta", "omega")
    for b in ("one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
]


def test_refresh_with_nothing_changed_says_so_and_writes_no_version(speeches: Path) -> None:
    first = finished_run()
    steps = len(journal_rows(first.run_id))
    findings = runner.find_stale(first.run_id, settings())
    assert not findings.changes and findings.stale == []
    assert runner.nothing_to_refresh(first.run_id, findings) == (
        f"nothing to refresh: the knowledge base of run {first.run_id} is as its report saw it"
    )
    with pytest.raises(UserError, match="nothing to refresh"):
        runner.run_command(
            first.run_id, SectionCommand("refresh", None), settings(), llm=FunctionLLM(Model())
        )
    with pytest.raises(UserError, match="refresh looks at the whole report; it takes no section"):
        runner.run_command(first.run_id, SectionCommand("refresh", "2"), settings(), llm=FunctionLLM(Model()))
    assert len(journal_rows(first.run_id)) == steps and report_versions(first.run_id) == ["research"]


# ---- add-source ----------------------------------------------------------------------------------


def test_add_source_adds_the_document_and_writes_the_section_with_its_passages(
    speeches: Path, tmp_path: Path
) -> None:
    first = finished_run()
    before = journal_rows(first.run_id)
    notes = tmp_path / "late-notes.md"
    notes.write_text(
        "# Late notes\n\nThe late tariff debates turned on reciprocity treaties.\n", encoding="utf-8"
    )
    model = CitingAll()
    command = SectionCommand("add-source", "3", instructions="use the notes", source=str(notes))
    report = runner.run_command(first.run_id, command, settings(), llm=FunctionLLM(model))

    assert kb_documents().count("late-notes.md") == 1
    write = next(r for r in model.requests if recognise(r).kind == "write")
    assert recognise(write).target == "section-3" and "reciprocity treaties" in write.messages[-1].content
    old, new = sections_of(first.markdown), sections_of(report.markdown)
    assert new["3"] != old["3"]
    assert {n: t for n, t in new.items() if n != "3"} == {n: t for n, t in old.items() if n != "3"}
    old_refs, new_refs = references_of(first.markdown), references_of(report.markdown)
    assert {title: new_refs[title] for title in old_refs} == old_refs
    assert new_refs["Late notes"] == str(len(old_refs) + 1) and report.command_outcome == ""
    assert report_versions(first.run_id) == ["research", "add-source"]

    rows = journal_rows(first.run_id)
    assert rows[: len(before)] == before and all(directed == 1 for *_, directed in rows[len(before) :])
    with Runs.open() as runs:
        start = next(step for step in runs.steps(first.run_id) if step.action == "add-source")
    assert start.target == "section-3" and start.parsed is not None
    assert start.parsed["source"] == str(notes) and start.parsed["instructions"] == "use the notes"

    # The same file again: the KB holds it once, and the section is written with it again.
    runner.run_command(first.run_id, command, settings(), llm=FunctionLLM(Model()))
    assert kb_documents().count("late-notes.md") == 1 and len(kb_documents()) == len(SPEECHES) + 1


def test_add_source_to_a_run_on_a_folder_copies_the_file_into_it(corpus_dir: Path, tmp_path: Path) -> None:
    first = runner.start(QUESTION, settings(), kb=str(corpus_dir), llm=FunctionLLM(Model()))
    notes = tmp_path / "elsewhere" / "late-notes.md"
    notes.parent.mkdir()
    notes.write_text(
        "# Late notes\n\nThe late tariff debates turned on reciprocity treaties.\n", encoding="utf-8"
    )
    report = runner.run_command(
        first.run_id,
        SectionCommand("add-source", "2", source=str(notes)),
        settings(),
        llm=FunctionLLM(CitingAll()),
    )
    assert (corpus_dir / "late-notes.md").read_bytes() == notes.read_bytes()
    assert "Late notes" in references_of(report.markdown)

    # A different file of the same name is never written over.
    notes.write_text("# Other notes\n\nSomething else.\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"late-notes\.md exists already and differs from"):
        runner.run_command(
            first.run_id,
            SectionCommand("add-source", "2", source=str(notes)),
            settings(),
            llm=FunctionLLM(Model()),
        )

    # A file already in the folder (a subfolder, say) is taken where it is.
    inside = corpus_dir / "more" / "early-notes.md"
    inside.parent.mkdir()
    inside.write_text("# Early notes\n\nThe early tariff of 1789 raised revenue.\n", encoding="utf-8")
    report = runner.run_command(
        first.run_id,
        SectionCommand("add-source", "1", source=str(inside)),
        settings(),
        llm=FunctionLLM(CitingAll()),
    )
    assert "Early notes" in references_of(report.markdown)
    assert sorted(p.name for p in corpus_dir.rglob("*notes.md")) == ["early-notes.md", "late-notes.md"]


@pytest.mark.parametrize(
    ("source", "section", "message"),
    [
        (
            "https://example.org/tariffs.html",
            "3",
            r"run \S+ does not use the web \(it was started without --web\), so deepdraft fetches no URL "
            r"for it; save the page and add the file: deepdraft add-source \S+ page\.html --to 3",
        ),
        ("{tmp}/no-such-file.pdf", "3", r"no file \S+/no-such-file\.pdf \(add-source takes a file"),
        ("{tmp}", "3", r"is a folder; add-source adds one document"),
        ("{tmp}/notes.md", None, r"add-source needs the section to write with it: --to 3\.2"),
        ("{tmp}/notes.md", "7", r"has no section 7"),
        (" ", "3", r"add-source needs a file to add \(or, when the run uses the web, a URL\)"),
    ],
)
def test_add_source_refuses_in_one_line(
    speeches: Path, tmp_path: Path, source: str, section: str | None, message: str
) -> None:
    (tmp_path / "notes.md").write_text("# Notes\n\nTariff notes.\n", encoding="utf-8")
    first = finished_run()
    steps = len(journal_rows(first.run_id))
    command = SectionCommand("add-source", section, source=source.format(tmp=tmp_path))
    with pytest.raises(UserError, match=message) as refused:
        runner.run_command(first.run_id, command, settings(), llm=FunctionLLM(Model()))
    assert "\n" not in str(refused.value)
    assert len(journal_rows(first.run_id)) == steps and sorted(kb_documents()) == sorted(SPEECHES)
    with Runs.open() as runs:
        assert runs.egress(first.run_id) == []  # nothing was fetched


def test_a_hand_edit_of_the_section_is_kept_and_refused_without_force(speeches: Path, tmp_path: Path) -> None:
    first = finished_run()
    report_md = Path(first.path or "")
    text = sections_of(first.markdown)["2"]
    report_md.write_text(
        first.markdown.replace(text, "My own words about the middle part."), encoding="utf-8"
    )
    notes = tmp_path / "middle-notes.md"
    notes.write_text(MIDDLE_NOTES, encoding="utf-8")
    add_to_kb(notes)
    with pytest.raises(UserError, match="--force"):
        runner.run_command(
            first.run_id, SectionCommand("refresh", None), settings(), llm=FunctionLLM(Model())
        )
    assert "My own words" in report_md.read_text(encoding="utf-8")
    runner.run_command(
        first.run_id, SectionCommand("refresh", None), settings(), llm=FunctionLLM(Model()), force=True
    )
    assert report_versions(first.run_id)[-2:] == ["hand-edit", "refresh"]
    assert re.search(r"My own words", report_md.read_text(encoding="utf-8")) is None


def test_add_source_fetches_a_url_when_the_run_uses_the_web(speeches: Path) -> None:
    page = "The late tariff debates turned on reciprocity treaties, the page says."
    with FakeWeb() as web:
        web.pages["/reciprocity"] = html_page("Reciprocity and tariffs", page)
        config = Settings.model_validate(
            {
                "output": {"verify": False, "synthesis": False},
                "web": {"enabled": True, "searxng_url": web.base_url, "allow_private": True, "timeout_s": 5},
            }
        )
        first = runner.start(QUESTION, config, kb=KB, llm=FunctionLLM(Model()))
        # The manifest of a run that searched the web too lists its knowledge base's documents, so
        # refresh can compare: nothing changed yet.
        assert runner.find_stale(first.run_id, settings()).stale == []
        url = web.url("/reciprocity")
        model = CitingAll()
        report = runner.run_command(
            first.run_id, SectionCommand("add-source", "3", source=url), settings(), llm=FunctionLLM(model)
        )
    assert url in kb_documents()  # the page's document is cited by its address
    write = next(r for r in model.requests if recognise(r).kind == "write")
    assert "reciprocity treaties" in write.messages[-1].content
    assert f"— <{url}>" in report.markdown.split("## References")[1]
    with Runs.open() as runs:
        fetched = [record.detail for record in runs.egress(first.run_id) if record.kind == "page-fetch"]
    assert url in fetched  # the fetch is in the run's egress audit


def test_a_rewrite_checkpointed_before_add_source_and_refresh_existed_is_read_and_resumed_alike() -> None:
    from deepdraft.core.state import RunState

    older = {
        "question": QUESTION,
        "continuation": {
            "command": "rewrite",
            "node_id": "n3",
            "position": "section-3",
            "instructions": "",
            "max_steps": 40,
            "stage": "draft",
            "earlier_text": "The earlier text.",
            "earlier_note": None,
            "outcome": "",
        },
    }
    command = RunState.restore(older).continuation
    assert command is not None and command.rewrites == [] and command.pinned == []
    assert [(item.node_id, item.earlier_text) for item in command.set_aside()] == [
        ("n3", "The earlier text.")
    ]


def test_a_refresh_the_step_budget_ends_keeps_the_earlier_text_of_what_it_did_not_reach(
    speeches: Path,
) -> None:
    first = finished_run()
    (speeches / "address-1930.md").write_text(
        "# Address of 1930\n\nRetaliation abroad closed foreign markets to our farmers.\n", encoding="utf-8"
    )
    add_to_kb(speeches)
    report = runner.run_command(
        first.run_id, SectionCommand("refresh", None, max_steps=2), settings(), llm=FunctionLLM(CitingAll())
    )
    first_stale, *rest = citing(first.markdown, references_of(first.markdown)["Address of 1930"])
    assert report.command_outcome == (
        f"the command's step budget ran out; the earlier text of {', '.join(rest)} stays"
    )
    old, new = sections_of(first.markdown), sections_of(report.markdown)
    assert new[first_stale] != old[first_stale] and report.unwritten == []
    assert all(new[section] == old[section] for section in rest)
