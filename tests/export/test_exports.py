"""Every export format, produced from one real run and checked by parsing it back.

The run: the scripted WARP model (`tests/support/scenario.py`, verification and synthesis on) over a
real on-disk corpus indexed by the real BM25 index, with every format requested. Each file is then
read back with an independent parser: `html.parser`, `pypdf`, `python-docx`, `jsonschema` against
the committed docs/report.schema.json, `bibtexparser`. Copies of the files are kept in
tests/output/exports/ (git-ignored) for a human to open.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import bibtexparser
import docx
import jsonschema
import pypdf
import pytest

from deepdraft.config import ENVIRONMENT, load_settings
from deepdraft.core.evidence import EvidenceRegistry, Passage, Source
from deepdraft.core.outline import Outline
from deepdraft.core.state import RunState
from deepdraft.egress import public_endpoint
from deepdraft.errors import ConfigError, UserError
from deepdraft.export import FORMATS, export, render
from deepdraft.export import bibtex as bibtex_export
from deepdraft.export import html as html_export
from deepdraft.export import pdf as pdf_export
from deepdraft.export.document import ReportDocument, build_document
from deepdraft.llm.scripted import FunctionLLM
from deepdraft.run import runner
from deepdraft.run.manifest import scrub_settings, wall_time
from deepdraft.run.runs import Runs
from tests.conftest import SPEECHES
from tests.support.scenario import ScenarioModel

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((ROOT / "docs" / "report.schema.json").read_text(encoding="utf-8"))
SAVED = ROOT / "tests" / "output" / "exports"
QUESTION = "How did presidents argue about tariffs?"


@dataclass(frozen=True)
class Finished:
    home: Path
    report: runner.Report
    folder: Path

    def file(self, fmt: str) -> Path:
        return self.report.exports[fmt]


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Finished]:
    home = tmp_path_factory.mktemp("home")
    corpus = tmp_path_factory.mktemp("corpus")
    for name, text in SPEECHES.items():
        (corpus / name).write_text(text + "\n", encoding="utf-8")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DEEPDRAFT_HOME", str(home))
        for variable, _, _ in ENVIRONMENT:
            patch.delenv(variable, raising=False)
        settings = load_settings(flags={"output": {"formats": list(FORMATS)}})
        report = runner.start(
            QUESTION, settings, kb=str(corpus), llm=FunctionLLM(ScenarioModel(expansions=1))
        )
    folder = home / "runs" / report.run_id
    SAVED.mkdir(parents=True, exist_ok=True)
    for path in report.exports.values():
        shutil.copy(path, SAVED / path.name)
    yield Finished(home, report, folder)


@pytest.fixture
def at_home(finished: Finished, monkeypatch: pytest.MonkeyPatch) -> Finished:
    """The finished run's workspace as this test's DEEPDRAFT_HOME (for journal reads)."""
    monkeypatch.setenv("DEEPDRAFT_HOME", str(finished.home))
    return finished


def _document(at_home: Finished, **kwargs: Any) -> ReportDocument:
    with Runs.open() as runs:
        return runs.report_document(at_home.report.run_id, **kwargs)


# ---- the run writes every format -----------------------------------------------------------------


def test_the_run_writes_every_requested_format_and_the_manifest(finished: Finished) -> None:
    report = finished.report
    assert report.problems == []
    assert set(report.exports) == set(FORMATS)
    assert {path.name for path in report.exports.values() if path.parent == finished.folder} >= {
        "report.md",
        "report.html",
        "report.pdf",
        "report.docx",
        "report.json",
        "report.bib",
        "report.csl.json",
    }
    manifest = json.loads((finished.folder / "manifest.json").read_text(encoding="utf-8"))
    assert manifest == report.manifest
    with _journal(finished.home) as journal:
        steps = journal.steps(report.run_id)
    counted = sum(manifest["actions"].values())
    assert counted == len(steps) and manifest["actions"]["search"] == sum(s.action == "search" for s in steps)
    assert manifest["tokens"]["prompt"] > 0 and manifest["wall_seconds"] > 0 and manifest["sessions"] == 1
    assert manifest["kb"]["fingerprint"] and manifest["kb"]["ref"]
    # Every KB document is listed with its location and content hash (they were listed empty).
    listed = manifest["kb"]["documents"]
    assert sorted(Path(doc["location"]).name for doc in listed) == sorted(SPEECHES)
    assert all(doc["doc_id"] and len(doc["hash"]) >= 16 for doc in listed)
    assert manifest["verification"]["checked"] > 0  # the verification pass ran, and its figures are here
    assert manifest["settings"]["llm"]["api_key"] is None


def _journal(home: Path) -> Any:
    from deepdraft.store.journal import Journal

    return Journal(home / "journal.sqlite")


def test_markdown_citations_and_references_agree(finished: Finished) -> None:
    markdown = finished.file("md").read_text(encoding="utf-8")
    body, tail = markdown.split("\n## References\n")
    cited = {int(n) for mark in re.findall(r"\[([\d, ]+)\]", body) for n in mark.split(", ")}
    entries = [int(n) for n in re.findall(r"^\[(\d+)\] ", tail, flags=re.MULTILINE)]
    assert cited == set(entries) and entries == list(range(1, len(entries) + 1))
    assert markdown.startswith("# A report on tariffs\n\n## Executive summary\n")
    assert "\n## Conclusion\n" in body
    assert "<summary>About this report</summary>" in tail and "\\cite" not in markdown


# ---- HTML ---------------------------------------------------------------------------------------


class _Anchors(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.links: list[tuple[str, dict[str, str]]] = []
        self.tags: list[str] = []
        self.sources: list[str] = []
        self.stack: list[str] = []
        self.in_nav = False
        self.toc: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value or "" for name, value in attrs}
        self.tags.append(tag)
        if "id" in values:
            self.ids.add(values["id"])
        if tag == "nav":
            self.in_nav = True
        if tag == "a" and "href" in values:
            self.links.append((values["href"], values))
            if self.in_nav:
                self.toc.append(values["href"])
        self.sources += [values[name] for name in ("src", "srcset") if name in values]

    def handle_endtag(self, tag: str) -> None:
        if tag == "nav":
            self.in_nav = False


def test_html_is_self_contained_and_every_link_resolves(finished: Finished) -> None:
    page = finished.file("html").read_text(encoding="utf-8")
    parsed = _Anchors()
    parsed.feed(page)
    internal = [href for href, _ in parsed.links if href.startswith("#")]
    assert internal and all(href[1:] in parsed.ids for href in internal)
    citations = [attrs for href, attrs in parsed.links if href.startswith("#ref-") and attrs.get("id")]
    document_refs = {f"ref-{entry.number}" for entry in finished.report.references}
    assert {
        attrs["href"][1:] for attrs in citations
    } == document_refs  # every source cited, every cite listed
    back_links = [href for href, _ in parsed.links if href.startswith("#cite-")]
    assert sorted(back_links) == sorted(f"#{attrs['id']}" for attrs in citations)
    assert parsed.toc[0] == "#summary" and "#section-1" in parsed.toc and "#references" in parsed.toc
    assert all(href[1:] in parsed.ids for href in parsed.toc)
    # Self-contained: no scripts, no stylesheets or images to fetch.
    assert "script" not in parsed.tags and "link" not in parsed.tags and parsed.sources == []
    assert "<details" in page and "About this report" in page and "<title>A report on tariffs</title>" in page


def test_html_escapes_model_written_markup() -> None:
    document = _small_document(
        content="Beware <script>alert(1)</script> and [x](javascript:alert(1)) \\cite{textid1}."
    )
    page = html_export.render(document)
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert 'href="javascript:' not in page  # left as text, never made a link


# ---- PDF ----------------------------------------------------------------------------------------


def test_pdf_opens_and_holds_the_title_and_references(finished: Finished) -> None:
    reader = pypdf.PdfReader(finished.file("pdf"))
    text = "\n".join(page.extract_text() for page in reader.pages)
    assert "A report on tariffs" in text and "References" in text
    assert len(reader.pages) >= 2


def test_a_missing_weasyprint_library_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    real_import = builtins.__import__

    def broken(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "weasyprint":
            raise OSError(
                "cannot load library 'libpango-1.0-0': libpango-1.0-0.so: cannot open shared object file"
            )
        return real_import(name, *args, **kwargs)

    monkeypatch.delitem(sys.modules, "weasyprint", raising=False)
    monkeypatch.setattr(builtins, "__import__", broken)
    with pytest.raises(UserError, match=r"WeasyPrint's system libraries .*apt install libpango-1.0-0"):
        pdf_export.render(_small_document())


# ---- DOCX ---------------------------------------------------------------------------------------


def test_docx_has_real_headings_a_toc_field_and_references(finished: Finished) -> None:
    word = docx.Document(str(finished.file("docx")))
    headings = [
        (p.style.name, p.text) for p in word.paragraphs if p.style.name.startswith(("Heading", "Title"))
    ]
    assert ("Title", "A report on tariffs") in headings
    assert ("Heading 1", "Executive summary") in headings and ("Heading 1", "References") in headings
    assert any(style == "Heading 2" and text.startswith("1.1 ") for style, text in headings)
    xml = word.element.xml
    assert 'TOC \\o "1-3" \\h \\z \\u' in xml
    assert word.settings.element.xml.count("updateFields") == 1
    texts = [p.text for p in word.paragraphs]
    after = texts[texts.index("References") + 1 :]
    for entry in finished.report.references:
        assert any(line.startswith(f"[{entry.number}] ") for line in after)


# ---- JSON ---------------------------------------------------------------------------------------


def test_json_validates_against_the_committed_schema(finished: Finished) -> None:
    data = json.loads(finished.file("json").read_text(encoding="utf-8"))
    jsonschema.validate(data, SCHEMA, cls=jsonschema.Draft202012Validator)
    numbers = {entry["number"] for entry in data["references"]}

    def sections(tree: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for node in tree:
            yield node
            yield from sections(node["children"])

    cited = {n for node in sections(data["outline"]) for s in node["sentences"] for n in s["references"]}
    assert cited | {n for s in data["summary"]["sentences"] for n in s["references"]} == numbers
    evidence = {item["key"]: item for item in data["evidence"]}
    for entry in data["references"]:
        for passage in entry["passages"]:
            assert evidence[passage["key"]]["text"] == passage["text"] and evidence[passage["key"]]["cited"]
    assert data["verification"]["sentences"] and data["manifest"]["run_id"] == data["run_id"]


def test_the_schema_rejects_undeclared_keys(finished: Finished) -> None:
    data = json.loads(finished.file("json").read_text(encoding="utf-8"))
    with pytest.raises(jsonschema.ValidationError, match="Additional properties"):
        jsonschema.validate({**data, "extra": 1}, SCHEMA, cls=jsonschema.Draft202012Validator)
    data["outline"][0]["surprise"] = True
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(data, SCHEMA, cls=jsonschema.Draft202012Validator)


# ---- BibTeX and CSL -----------------------------------------------------------------------------


def test_bibtex_parses_with_one_entry_per_reference(finished: Finished) -> None:
    library = bibtexparser.parse_string(finished.file("bibtex").read_text(encoding="utf-8"))
    assert library.failed_blocks == []
    keys = [entry.key for entry in library.entries]
    assert len(keys) == len(set(keys)) == len(finished.report.references)
    assert all(entry.entry_type == "misc" and "address-" in entry["note"] for entry in library.entries)
    csl = json.loads(finished.file("csl").read_text(encoding="utf-8"))
    assert [item["id"] for item in csl] == keys
    assert all(item["type"] == "document" and item["source"] for item in csl)


def test_bibtex_escapes_latex_and_keeps_keys_unique() -> None:
    registry = EvidenceRegistry()
    registry.register(Passage("p1", Source("d1", "Costs & 50% of R_D {draft} #1 ~ $x^2$", "/a_b.md")))
    registry.register(Passage("p2", Source("d2", "Costs & 50% of R_D {draft} #1 ~ $x^2$", "/other.md")))
    registry.register(Passage("p3", Source("d3", "关税", "https://example.org/a b{c}")))
    document = _small_document(registry=registry, content="A \\cite{textid1, textid2}. B \\cite{textid3}.")
    text = bibtex_export.render(document)
    library = bibtexparser.parse_string(text)
    assert library.failed_blocks == [] and len({e.key for e in library.entries}) == 3
    first = library.entries[0]
    assert first["title"] == r"{Costs \& 50\% of R\_D \{draft\} \#1 \~{} \$x\^{}2\$}"
    assert first["note"] == r"/a\_b.md"
    online = library.entries[2]
    assert online.entry_type == "online" and online["url"] == "https://example.org/a%20b%7Bc%7D"
    assert online.key.startswith("source-")
    assert bibtex_export.citation_keys(document) == bibtex_export.citation_keys(document)  # stable


# ---- export from the journal, the CLI ---------------------------------------------------------------


def test_a_finished_run_is_rebuilt_from_the_journal(at_home: Finished) -> None:
    document = _document(at_home)
    assert document.markdown == at_home.file("md").read_text(encoding="utf-8")
    assert document.manifest == at_home.report.manifest


def test_author_date_export_sorts_references_and_cites_by_label(at_home: Finished) -> None:
    document = _document(at_home, style="author-date")
    markdown = render(document, "md").decode()
    labels = [entry.label for entry in document.references]
    assert labels == sorted(labels, key=str.casefold)
    body = markdown.split("## References")[0]
    assert all(f"({label}" in body or f"; {label}" in body for label in labels)
    assert not re.search(r"\[\d+\]", body)


def _cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`python -m deepdraft ARGS` in a real process, on the finished run's workspace."""
    environment = {k: v for k, v in os.environ.items() if k not in {v for v, _, _ in ENVIRONMENT}}
    return subprocess.run(
        [sys.executable, "-m", "deepdraft", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**environment, "DEEPDRAFT_HOME": str(home), "COLUMNS": "200"},
        stdin=subprocess.DEVNULL,
    )


def _invoke(*args: str) -> Any:
    """The CLI in this process (fast); errors surface as `result.exception`."""
    from typer.testing import CliRunner

    from deepdraft.cli.app import app

    return CliRunner().invoke(app, list(args))


def test_cli_export_writes_and_overwrites_and_applies_a_template(at_home: Finished, tmp_path: Path) -> None:
    target = tmp_path / "out.html"
    target.write_text("old", encoding="utf-8")
    result = _invoke("export", at_home.report.run_id[:12], "--format", "html", "-o", str(target))
    assert result.exit_code == 0, result.output
    assert target.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert [p.name for p in tmp_path.iterdir()] == ["out.html"]  # no temporary file left behind

    result = _invoke("export", at_home.report.run_id, "--format", "bibtex")  # default: the run folder
    assert result.exit_code == 0 and (at_home.folder / "report.bib").is_file()

    template = tmp_path / "brief.md.j2"
    template.write_text(
        "# {{ title | upper }}\n\n{{ summary }}\n{% for s in sections if s.level == 1 %}"
        "- {{ s.number }} {{ s.title }}\n{% endfor %}\n{% for r in references %}{{ r.line }}\n{% endfor %}",
        encoding="utf-8",
    )
    out = tmp_path / "brief.md"
    result = _invoke("export", at_home.report.run_id, "-f", "md", "--template", str(template), "-o", str(out))
    assert result.exit_code == 0, result.output
    brief = out.read_text(encoding="utf-8")
    assert brief.startswith("# A REPORT ON TARIFFS\n\n") and "- 1 Part early\n- 2 Part middle\n" in brief
    assert "\n[1] Address of " in brief

    broken = tmp_path / "broken.j2"
    broken.write_text("# {{ title }}\n\n{{ sections | lenght }}\n", encoding="utf-8")
    result = _invoke("export", at_home.report.run_id, "--template", str(broken))
    assert isinstance(result.exception, ConfigError) and "line 3" in str(result.exception)


def test_cli_export_refuses_an_unfinished_run_in_one_line(finished: Finished) -> None:
    with _journal(finished.home) as journal:
        journal.create_run("unfinished-run", "q?", "warp", {"settings": {}})
    result = _cli(finished.home, "export", "unfinished-run", "--format", "md")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        "error: run unfinished-run is not finished (it is created), so it has no report yet"
    ]


def test_template_errors_name_the_line(tmp_path: Path) -> None:
    from deepdraft.export.markdown import render_template

    syntax = tmp_path / "syntax.j2"
    syntax.write_text("# {{ title }}\n{% for s in sections %}\n{{ s.title }}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"syntax.j2, line 3: .*endfor"):
        render_template(syntax, {"title": "T", "sections": []})
    undefined = tmp_path / "undefined.j2"
    undefined.write_text("# {{ title }}\n\n{{ conclusoin }}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"undefined.j2, line 3: 'conclusoin' is undefined"):
        render_template(undefined, {"title": "T"})
    with pytest.raises(ConfigError, match="template not found"):
        render_template(tmp_path / "missing.j2", {})


# ---- CJK ----------------------------------------------------------------------------------------


def _has_cjk_font() -> bool:
    if shutil.which("fc-list") is None:
        return False
    listing = subprocess.run(["fc-list", ":lang=zh"], capture_output=True, text=True, check=False).stdout
    return bool(listing.strip())


def test_a_chinese_report_exports_to_html_and_pdf(tmp_path: Path) -> None:
    registry = EvidenceRegistry()
    registry.register(
        Passage("一七九〇年的咨文谈到关税。", Source("d1", "一七九〇年咨文", "/sotu/1790.md", page=2))
    )
    outline = Outline.create("总统如何讨论关税", [("早期", "a"), ("中期", "b"), ("晚期", "c")])
    for section in outline.sections:
        section.content = "关税既是收入也是保护\\cite{textid1}。"
    state = RunState(question="总统们如何讨论关税？", outline=outline, registry=registry, phase="done")
    document = build_document(state, run_id="zh-run")
    page = export(document, "html", tmp_path / "zh.html").read_text(encoding="utf-8")
    assert '<html lang="zh">' in page and "参考文献" in page and "总统如何讨论关税" in page
    reader = pypdf.PdfReader(export(document, "pdf", tmp_path / "zh.pdf"))
    text = "".join(p.extract_text() for p in reader.pages)
    if not _has_cjk_font():
        pytest.skip("no CJK font installed (fc-list :lang=zh is empty): the PDF is written but shows boxes")
    assert "总统如何讨论关税" in text


# ---- the manifest keeps secrets out ------------------------------------------------------------------


def test_manifest_strips_credentials_from_endpoints_and_masks_keys() -> None:
    assert (
        public_endpoint("https://user:pw@llm.example:8443/v1?api_key=abc#x") == "https://llm.example:8443/v1"
    )
    assert public_endpoint("http://[::1]:8000/v1") == "http://[::1]:8000/v1"
    cleaned = scrub_settings(
        {
            "llm": {
                "base_url": "https://u:p@h/v1",
                "api_key": "sk-1",
                "max_tokens": 10,
                "extra_body": {"auth_token": "t"},
            },
            "embedding": {"base_url": "http://h?key=k", "api_key": None},
            "web": {"searxng_url": None},
        }
    )
    assert cleaned["llm"] == {
        "base_url": "https://h:443/v1",
        "api_key": "***",
        "max_tokens": 10,
        "extra_body": {"auth_token": "***"},
    }
    assert cleaned["embedding"] == {"base_url": "http://h:80/", "api_key": None}


def test_wall_time_sums_every_session_and_skips_the_gaps() -> None:
    @dataclass
    class Event:
        seq: int
        kind: str
        created_at: float

    events = [
        Event(1, "run_started", 100.0),
        Event(2, "action_finished", 130.0),
        Event(3, "run_started", 1000.0),
    ]
    assert wall_time(events, finished_at=1010.0) == (40.0, 2)
    assert wall_time([], finished_at=5.0) == (0.0, 0)


# ---- helpers ------------------------------------------------------------------------------------------


def _small_document(
    registry: EvidenceRegistry | None = None, content: str = "A claim \\cite{textid1}."
) -> ReportDocument:
    if registry is None:
        registry = EvidenceRegistry()
        registry.register(Passage("passage", Source("d1", "Doc", "/d.md")))
    outline = Outline.create("Small", [("One", "a"), ("Two", "b"), ("Three", "c")])
    outline.sections[0].content = content
    return build_document(RunState(question="Small?", outline=outline, registry=registry), run_id="small")


def test_the_readers_manifest_lists_only_cited_documents_and_leaves_the_manifest_alone() -> None:
    from deepdraft.export.facts import for_readers

    documents = [{"doc_id": f"d{i}", "location": f"/kb/{i}.txt", "hash": f"h{i}"} for i in range(1000)]
    manifest = {"run_id": "r", "kb": {"ref": "kb", "documents": documents}, "settings": {"llm": {"x": [1]}}}
    trimmed = for_readers(manifest, ["d7", "d3", "missing"])
    assert trimmed["kb"] == {
        "ref": "kb",
        "documents": [documents[3], documents[7]],
        "documents_listed": "cited only",
    }
    trimmed["kb"]["documents"][0]["hash"] = "changed"
    trimmed["settings"]["llm"]["x"].append(2)
    assert documents[3]["hash"] == "h3" and manifest["settings"] == {"llm": {"x": [1]}}
    assert len(manifest["kb"]["documents"]) == 1000 and "documents_listed" not in manifest["kb"]
    assert for_readers({"run_id": "r", "kb": None}, []) == {"run_id": "r", "kb": None}


def test_the_manifest_and_the_about_block_count_the_citations_deepdraft_placed() -> None:
    from deepdraft.events import StepRecord
    from deepdraft.export.facts import readable_facts
    from deepdraft.run.manifest import build_manifest

    def write(target: str, text: str, attached: bool, cited: int = 0) -> StepRecord:
        parsed = {"name": "write", "text": text, "citations_attached": attached, "sentences_cited": cited}
        return StepRecord(1, "write", "", "", parsed, True, None, 0, 0, 0.0, 0.0, False, target)

    steps = [
        write("section-1", "Tariffs rose \\cite{textid1}. Duties fell \\cite{textid2}.", True),
        write("section-2", "Trade grew \\cite{textid3}.", False),
        # Three sentences the model left uncited beside its own citations, cited by deepdraft; then
        # a later write of section-4 replaced its first, which counts no more.
        write("section-3", "Trade grew \\cite{textid3}. Duties fell \\cite{textid2}.", False, cited=3),
        write("section-4", "Tariffs rose \\cite{textid1}.", True),
        write("section-4", "Tariffs rose \\cite{textid1}.", False),
    ]
    manifest = build_manifest(
        run_id="r", question="q", settings={}, model="m", state=RunState(question="q"), steps=steps
    )
    assert manifest["report"]["citations_attached"] == {"sections": 2, "sentences": 5}
    facts = dict(readable_facts(manifest))
    assert facts["Citations placed by deepdraft"].startswith(
        "5 sentences in 2 sections that the model left uncited"
    )
    unaided = build_manifest(
        run_id="r", question="q", settings={}, model="m", state=RunState(question="q"), steps=steps[1:2]
    )
    assert "citations_attached" not in unaided["report"]


def test_the_about_block_says_when_parts_were_written_passage_by_passage_or_searched_from_the_plan() -> None:
    from deepdraft.export.facts import readable_facts

    def facts(by_passage: bool, planned: bool = False) -> dict[str, str]:
        research = {"depth": "quick", "write_by_passage": by_passage, "plan_searches": planned}
        return dict(readable_facts({"deepdraft": "x", "policy": "warp", "policy_settings": research}))

    assert facts(True)["Writing"].startswith("passage by passage: the model reported each passage")
    assert "excerpt" not in facts(True)["Writing"]
    excerpted = {"depth": "quick", "write_by_passage": True, "passage_tokens": 110}
    about = dict(readable_facts({"deepdraft": "x", "policy": "warp", "policy_settings": excerpted}))
    assert about["Writing"].endswith("the excerpt the fact-checker saw too")
    assert "Writing" not in facts(False)
    assert facts(False, planned=True)["Searching"].startswith("by deepdraft, not the model")
    assert "Searching" not in facts(True)
