"""Archive bombs and text bombs: refused in one line naming the limit, in bounded memory and time.

The hostile files are built by `tests.support.archive_bombs` (about 1 MB each, in a second or two).
Each is ingested into a fresh knowledge base in a child process that runs under resource limits
(`RLIMIT_AS` 1.5 GB of address space, `RLIMIT_CPU` 60 s): a bomb that got through would kill it
(SIGKILL, SIGXCPU) or raise MemoryError, and the test would see the child die rather than a refusal.
Nothing here measures time. The limits' logic (`verify_archive`, the text budget, JSONL records) is
also tested in-process with small limits, where each case takes milliseconds.
"""

from __future__ import annotations

import io
import json
import os
import resource
import subprocess
import sys
import zipfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from deepdraft.config import load_settings
from deepdraft.errors import ConfigError
from deepdraft.retrieval.documents.archive import MAX_MEMBERS, ArchiveRefused, BrokenArchive, verify_archive
from deepdraft.retrieval.documents.chunking import MAX_HEADING_CHARS, chunk_document
from deepdraft.retrieval.documents.corpus import read_documents
from deepdraft.retrieval.documents.limits import DocumentLimits
from deepdraft.retrieval.documents.values import Document, Failure
from deepdraft.settings import RetrievalSettings
from tests.support import archive_bombs as bombs
from tests.support.archive_bombs import MiB, Payload, deflated, write_bomb, write_sample, write_zip
from tests.support.documents import make_document_folder, write_pdf

ADDRESS_SPACE = 1536 * MiB
CPU_SECONDS = 60

# The child: add one or more files to a new KB with the given [retrieval] settings and report.
CHILD = """
import json, resource, sqlite3, sys
from pathlib import Path
from deepdraft.retrieval.kb.store import KnowledgeBase
from deepdraft.retrieval.documents.limits import DocumentLimits
from deepdraft.settings import RetrievalSettings

folder, overrides, files = Path(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3:]
with KnowledgeBase.create(folder) as kb:
    result = kb.add(files, limits=DocumentLimits.from_settings(RetrievalSettings(**overrides)))
with sqlite3.connect(folder / "kb.sqlite") as db:
    (chars,) = db.execute("SELECT coalesce(sum(chars), 0) FROM documents").fetchone()
print(json.dumps({
    "failures": [failure.reason for failure in result.failures],
    "documents": result.documents_added,
    "chars": chars,
    "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
}))
"""


def _limit_resources() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))
    resource.setrlimit(resource.RLIMIT_CPU, (CPU_SECONDS, CPU_SECONDS))


def ingest_under_limits(folder: Path, *files: Path, **retrieval: Any) -> dict[str, Any]:
    """What adding `files` to a KB in `folder` reported, in a child process under the limits."""
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}  # no per-thread arenas
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(folder), json.dumps(retrieval), *map(str, files)],
        capture_output=True,
        text=True,
        env=env,
        preexec_fn=_limit_resources,
        check=False,
    )
    # A negative code is the signal that killed it: SIGKILL (9) or SIGXCPU (24) at the limits.
    assert done.returncode == 0, f"the ingesting process died ({done.returncode}): {done.stderr[-3000:]}"
    report: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return report


def refused(report: dict[str, Any], setting: str) -> str:
    """The one refusal of `report`, checked to be one line that names `setting`."""
    assert report["documents"] == 0, report
    (reason,) = report["failures"]
    assert "\n" not in reason
    assert reason.endswith(f"(set retrieval.{setting} to read it)"), reason
    return str(reason)


# -- the bombs --------------------------------------------------------------------------------------

# What each bomb trips first with the default limits. One-letter paragraphs are refused by their
# element count before the ratio floor is reached; a spreadsheet's sheets are streamed, so there
# the ratio refuses them.
BOMBS = [
    (doc_format, kind, setting)
    for doc_format in bombs.FORMATS
    for kind, setting in (
        ("zeros", "max_compression_ratio"),
        ("lying", "max_compression_ratio"),
        ("tiny_paragraphs", "max_compression_ratio" if doc_format == "xlsx" else "max_xml_elements"),
    )
]


@pytest.mark.parametrize(("doc_format", "kind", "setting"), BOMBS)
def test_archive_bomb_is_refused_in_one_line_within_the_limits(
    tmp_path: Path, doc_format: str, kind: str, setting: str
) -> None:
    main = bombs.MAIN_PART[doc_format]
    if kind == "tiny_paragraphs":
        payload = bombs.tiny_paragraphs(
            doc_format, write_sample(doc_format, tmp_path / f"sample.{doc_format}")
        )
        bomb = write_bomb(tmp_path / f"bomb.{doc_format}", doc_format, payload)
    else:
        # "lying": the header says the 1 GiB part is its original, harmless size.
        declared = 4096 if kind == "lying" else None
        bomb = write_bomb(tmp_path / f"bomb.{doc_format}", doc_format, bombs.zeros(), declared_size=declared)
    assert bomb.stat().st_size < 1.1 * MiB
    with zipfile.ZipFile(bomb) as archive:
        assert (archive.getinfo(main).file_size == 4096) == (kind == "lying")

    refused(ingest_under_limits(tmp_path / "kb", bomb), setting)


def test_xml_below_the_ratio_floor_is_bounded_by_its_elements(tmp_path: Path) -> None:
    # 40 MiB of one-letter paragraphs: under the 50 MB ratio floor, yet millions of XML elements.
    files = []
    for doc_format in ("docx", "epub"):
        sample = write_sample(doc_format, tmp_path / f"sample.{doc_format}")
        payload = bombs.tiny_paragraphs(doc_format, sample, total=40 * MiB)
        files.append(write_bomb(tmp_path / f"bomb.{doc_format}", doc_format, payload))

    report = ingest_under_limits(tmp_path / "kb", *files)

    assert report["documents"] == 0 and len(report["failures"]) == 2
    for reason in report["failures"]:
        assert reason == (
            "archive holds more than 2,000,000 XML elements (set retrieval.max_xml_elements to read it)"
        )


def test_each_archive_limit_is_named_and_raised_by_its_setting(tmp_path: Path) -> None:
    bomb = write_bomb(tmp_path / "zeros.docx", "docx", bombs.zeros())
    no_ratio = {"max_compression_ratio": 1_000_000}

    member = refused(ingest_under_limits(tmp_path / "a", bomb, **no_ratio), "max_unpacked_member_mb")
    assert member.startswith("archive member word/document.xml unpacks to more than 256 MB")
    total = refused(
        ingest_under_limits(
            tmp_path / "b", bomb, max_unpacked_mb=100, max_unpacked_member_mb=100, **no_ratio
        ),
        "max_unpacked_mb",
    )
    assert total.startswith("archive unpacks to more than 100 MB")
    ratio = refused(
        ingest_under_limits(tmp_path / "c", bomb, max_compression_ratio=20), "max_compression_ratio"
    )
    assert ratio.startswith("archive unpacks to more than 20 times its size past 50 MB")


def test_entity_expansion_is_never_performed(tmp_path: Path) -> None:
    # A "billion laughs" DTD in the main part of each format, its last entity referenced in the text.
    doctype, reference = bombs.laughs()
    units = {
        "docx": b"<w:p><w:r><w:t>%s</w:t></w:r></w:p>",
        "pptx": b"<a:p><a:r><a:t>%s</a:t></a:r></a:p>",
        "xlsx": b'<row><c t="inlineStr"><is><t>%s</t></is></c></row>',
        "epub": b"<p>%s</p>",
    }
    files = []
    for doc_format, unit in units.items():
        sample = write_sample(doc_format, tmp_path / f"sample.{doc_format}")
        payload = bombs.repeated(doc_format, sample, unit % reference, 1, doctype=doctype)
        files.append(write_bomb(tmp_path / f"laughs.{doc_format}", doc_format, payload))

    report = ingest_under_limits(tmp_path / "kb", *files)

    # Refused as malformed or read without the expansion (40 GB of "haha"), but alive either way.
    assert report["chars"] < 10_000, report
    assert all("\n" not in reason for reason in report["failures"])


# -- what must still be read ------------------------------------------------------------------------


def test_repetitive_spreadsheet_below_the_floor_is_read(tmp_path: Path) -> None:
    # 40 MiB of identical rows packs hundreds to one: below the floor, that ratio is no bomb.
    row = b'<row><c t="inlineStr"><is><t>pending</t></is></c><c><v>0</v></c><c><v>0</v></c></row>'
    payload = bombs.repeated("xlsx", write_sample("xlsx", tmp_path / "sample.xlsx"), row, 40 * MiB)
    sheet = write_bomb(tmp_path / "ledger.xlsx", "xlsx", payload)
    assert payload.size > 100 * sheet.stat().st_size

    report = ingest_under_limits(tmp_path / "kb", sheet)

    assert (report["documents"], report["failures"]) == (1, [])


def test_long_docx_is_read_within_the_cpu_limit(tmp_path: Path) -> None:
    # 100,000 short paragraphs: python-docx took a millisecond to resolve each paragraph's style.
    payload = bombs.repeated(
        "docx",
        write_sample("docx", tmp_path / "sample.docx"),
        b"<w:p><w:r><w:t>A line.</w:t></w:r></w:p>",
        100_000 * 41,
    )
    report = ingest_under_limits(tmp_path / "kb", write_bomb(tmp_path / "long.docx", "docx", payload))

    assert (report["documents"], report["failures"]) == (1, [])
    assert report["chars"] > 100_000 * len("A line.")


def test_2000_page_pdf_is_read(tmp_path: Path) -> None:
    line = "Daily readings of the ablation stakes, snow pits and meltwater gauges continued all summer. "
    pdf = write_pdf(tmp_path / "survey.pdf", [f"Page {n}. " + line * 30 for n in range(1, 2001)])

    (doc,) = read_documents(pdf, max_bytes=200 * MiB)

    assert isinstance(doc, Document), doc
    assert len(doc.pages) == 2000 and len(doc.text) > 2000 * 30 * len(line)


# -- the guard, in-process with small limits --------------------------------------------------------

SMALL = DocumentLimits(
    max_unpacked_bytes=4 * MiB,
    max_member_bytes=2 * MiB,
    max_compression_ratio=100,
    ratio_floor_bytes=1 * MiB,
    max_xml_elements=1000,
)


def zip_of(**members: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    return buffer.getvalue()


def noise(size: int) -> bytes:
    """Bytes that do not compress (and hold no ``<``), so no ratio applies to them."""
    return bytes(byte for byte in os.urandom(size * 2) if byte != ord("<"))[:size]


def refusal(data: bytes, limits: DocumentLimits = SMALL, **options: Any) -> str:
    with pytest.raises(ArchiveRefused) as caught:
        verify_archive(data, limits, **options)
    return str(caught.value)


def test_one_member_over_its_limit_is_refused() -> None:
    assert refusal(zip_of(small=noise(1000), big=noise(3 * MiB))) == (
        "archive member big unpacks to more than 2 MB (set retrieval.max_unpacked_member_mb to read it)"
    )


def test_all_members_together_over_their_limit_are_refused() -> None:
    parts = {f"part{n}": noise(int(1.5 * MiB)) for n in range(3)}
    assert (
        refusal(zip_of(**parts))
        == "archive unpacks to more than 4 MB (set retrieval.max_unpacked_mb to read it)"
    )


def test_compression_ratio_counts_only_past_the_floor() -> None:
    below = zip_of(zeros=bytes(MiB - 1))  # a thousand to one, but under the 1 MB floor
    verify_archive(below, SMALL)
    assert refusal(zip_of(zeros=bytes(2 * MiB - 1))).startswith(
        "archive unpacks to more than 100 times its size past 1 MB, as zip bombs do"
    )


def test_the_size_counted_is_the_size_inflated_not_the_declared_one(tmp_path: Path) -> None:
    zeros = deflated(Payload(unit=bytes(MiB), count=3))
    lying = write_zip(tmp_path / "lying.zip", [("part.xml", zeros, 10)]).read_bytes()
    no_ratio = DocumentLimits(max_member_bytes=2 * MiB, max_compression_ratio=10**9)
    assert refusal(lying, no_ratio).startswith("archive member part.xml unpacks to more than 2 MB")
    # Within the limits, a member that holds more than it declares is a broken archive.
    with pytest.raises(BrokenArchive, match=r"part.xml: its header says 10 bytes, it holds 3,145,728"):
        verify_archive(lying, DocumentLimits(max_compression_ratio=10**9))


@pytest.mark.parametrize("declared", [4096, 50 * MiB])
def test_an_epub_chapter_is_bounded_by_what_it_holds_whatever_it_declares(
    tmp_path: Path, declared: int
) -> None:
    # 3 MiB of text under a header that says 4 KiB (or 50 MiB): the chapter's true size decides.
    text = deflated(Payload(unit=b"<p>Storm log.</p>", count=3 * MiB // 17, prefix=b"<html><body>"))
    book = write_bomb(tmp_path / "lying.epub", "epub", text, declared_size=declared)
    limits = DocumentLimits(max_member_bytes=2 * MiB, max_compression_ratio=10**9, max_xml_elements=10**7)

    (refusal,) = read_documents(book, max_bytes=MiB, limits=limits)
    assert isinstance(refusal, Failure)
    assert refusal.reason == (
        "archive member OEBPS/text/ch1.xhtml unpacks to more than 2 MB "
        "(set retrieval.max_unpacked_member_mb to read it)"
    )
    # Within the limits, a chapter that holds other than it declares is broken, never cut to the header.
    (broken,) = read_documents(book, max_bytes=MiB, limits=replace(limits, max_member_bytes=4 * MiB))
    assert isinstance(broken, Failure)
    assert broken.reason.startswith("not a valid .epub file (OEBPS/text/ch1.xhtml: its header says")


def test_xml_elements_are_counted_in_markup_parts_unless_streamed() -> None:
    markup = b"<?xml version='1.0'?><body>" + b"<p>x</p>" * 2000 + b"</body>"
    assert refusal(zip_of(**{"any/name.bin": markup})) == (
        "archive holds more than 1,000 XML elements (set retrieval.max_xml_elements to read it)"
    )
    verify_archive(zip_of(**{"xl/worksheets/sheet1.xml": markup}), SMALL, streamed=lambda n: "sheets" in n)
    verify_archive(zip_of(image=b"\x89PNG" + b"<" * 5000), SMALL)  # not markup: never parsed


def test_archive_of_too_many_entries_is_refused_before_it_is_parsed() -> None:
    directory = b"PK\x01\x02" * (MAX_MEMBERS + 1)
    assert refusal(directory) == f"archive of more than {MAX_MEMBERS:,} files: not a document"


def test_broken_archives_say_what_is_wrong() -> None:
    with pytest.raises(BrokenArchive, match="not a zip archive"):
        verify_archive(b"PK but not really", SMALL)
    data = bytearray(zip_of(part=b"hello world " * 100))
    data[40:50] = b"\xff" * 10  # inside the packed data
    with pytest.raises(BrokenArchive, match=r"^part: "):
        verify_archive(bytes(data), SMALL)


# -- text --------------------------------------------------------------------------------------------

TEXT_LIMIT = DocumentLimits(max_document_chars=40)
TOO_MUCH_TEXT = "more than 40 characters of text (set retrieval.max_document_chars to read it)"


@pytest.fixture(scope="module")
def samples(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_document_folder(tmp_path_factory.mktemp("documents"))


@pytest.mark.parametrize("key", ["pdf", "docx", "pptx", "xlsx", "epub", "html", "markdown", "text_utf8"])
def test_every_format_is_bounded_by_its_text(samples: dict[str, Path], key: str) -> None:
    file = samples[key]
    (item,) = read_documents(file, max_bytes=MiB, limits=TEXT_LIMIT)
    assert item == Failure(str(file), TOO_MUCH_TEXT)
    (read,) = read_documents(file, max_bytes=MiB)
    assert isinstance(read, Document)


def test_jsonl_text_bound_applies_to_each_record_not_the_file(tmp_path: Path) -> None:
    records = [{"id": f"r{n}", "contents": f"Record {n} about glaciers."} for n in range(500)]
    records[10]["contents"] = "x" * 41
    lines = [json.dumps(record) for record in records]
    lines[20] = json.dumps({"id": "huge", "contents": "y" * (2 * MiB)})  # past the line bound, skipped
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")

    items = list(read_documents(corpus, max_bytes=1000, limits=TEXT_LIMIT))  # JSONL: no max_bytes

    failures = [item for item in items if isinstance(item, Failure)]
    assert failures == [Failure(f"{corpus}:11", TOO_MUCH_TEXT), Failure(f"{corpus}:21", TOO_MUCH_TEXT)]
    documents = [item for item in items if isinstance(item, Document)]
    assert len(documents) == 498 and documents[-1].doc_id == "r499"
    assert sum(len(doc.text) for doc in documents) > TEXT_LIMIT.max_document_chars


def test_an_endless_heading_is_shortened_in_every_chunk(tmp_path: Path) -> None:
    # 60,000 paragraphs in a slide's title box: one heading of 120,000 characters.
    payload = bombs.tiny_paragraphs("pptx", write_sample("pptx", tmp_path / "sample.pptx"), total=60_000 * 35)
    (doc,) = read_documents(write_bomb(tmp_path / "title.pptx", "pptx", payload), max_bytes=MiB)
    assert isinstance(doc, Document)

    chunks = chunk_document(doc, 220, 40)

    assert len(doc.text) > 100_000 and len(doc.title) <= MAX_HEADING_CHARS
    assert all(len(heading) <= MAX_HEADING_CHARS for chunk in chunks for heading in chunk.headings)
    assert chunks[0].headings[0].startswith("x x x") and chunks[0].headings[0].endswith("…")


# -- settings ----------------------------------------------------------------------------------------


def test_defaults_are_the_settings_defaults() -> None:
    assert DocumentLimits() == DocumentLimits.from_settings(RetrievalSettings())
    raised = DocumentLimits.from_settings(RetrievalSettings(max_unpacked_mb=2048, max_document_chars=10**8))
    assert (raised.max_unpacked_bytes, raised.max_document_chars) == (2048 * MiB, 10**8)


@pytest.mark.parametrize(
    ("retrieval", "message"),
    [
        (
            {"max_unpacked_member_mb": 600},
            "max_unpacked_member_mb (600) must not be larger than max_unpacked_mb (512)",
        ),
        ({"max_compression_ratio": 0.5}, "retrieval.max_compression_ratio"),
        ({"max_document_chars": 10}, "retrieval.max_document_chars"),
        ({"max_xml_elements": 0}, "retrieval.max_xml_elements"),
    ],
)
def test_limit_settings_are_validated(retrieval: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_settings(flags={"retrieval": retrieval}, environ={})


def test_the_bomb_writer_writes_valid_archives(tmp_path: Path) -> None:
    # The bombs are only as good as their writer: what it packs reads back, CRC and all.
    packed = deflated(Payload(unit=b"ab", count=3, prefix=b"<", suffix=b">"))
    archive = write_zip(tmp_path / "small.zip", [("part", packed, packed.size)])
    with zipfile.ZipFile(archive) as written:
        assert written.testzip() is None and written.read("part") == b"<ababab>"
