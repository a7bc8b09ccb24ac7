"""Reading corpora: which files paths name, documents per file, encodings, JSONL, and user errors."""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path

import pytest

from deepdraft.errors import KnowledgeBaseError
from deepdraft.retrieval.documents.corpus import (
    corpus_stamp,
    decode_text,
    discover,
    iter_documents,
    read_documents,
)
from deepdraft.retrieval.documents.values import Document, Failure, Page
from tests.support.documents import EXPECTED_FAILURES, make_document_folder

MB = 1024 * 1024


def write(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def test_folder_is_read_recursively_in_sorted_order_skipping_hidden(tmp_path: Path) -> None:
    write(tmp_path / "b.md", "# Bee title\n\nBody of b.")
    write(tmp_path / "a.txt", "plain a")
    write(tmp_path / "nested" / "deeper" / "c.markdown", "text c")
    write(tmp_path / "nested" / "notes.MD", "upper-case suffix")
    write(tmp_path / ".hidden.md", "secret")
    write(tmp_path / ".git" / "config.md", "git internals")
    write(tmp_path / "image.png", b"\x89PNG\r\n")
    write(tmp_path / "data.json", "{}")

    docs = list(iter_documents(tmp_path))

    assert [d.doc_id for d in docs] == ["a.txt", "b.md", "nested/deeper/c.markdown", "nested/notes.MD"]
    assert [d.title for d in docs] == ["a", "Bee title", "c", "notes"]
    assert docs[0].location == str((tmp_path / "a.txt").absolute())
    assert docs[1].text == "# Bee title\n\nBody of b."


def test_title_ignores_headings_inside_code_fences_and_deeper_levels(tmp_path: Path) -> None:
    write(tmp_path / "doc.md", "## Section\n\n```python\n# not a title\n```\n\n# Real Title #\n\ntext")
    (doc,) = iter_documents(tmp_path)
    assert doc.title == "Real Title"


def test_single_text_file(tmp_path: Path) -> None:
    file = write(tmp_path / "only.md", "# Only\r\n\r\nWindows line ends.\r\n")
    (doc,) = iter_documents(file)
    assert (doc.doc_id, doc.title, doc.location, doc.text) == (
        "only.md",
        "Only",
        str(file.absolute()),
        "# Only\n\nWindows line ends.\n",
    )
    assert (doc.format, doc.pages) == ("markdown", ())
    assert doc.content_hash == hashlib.sha256(file.read_bytes()).hexdigest()


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("naïve café 中文".encode(), "naïve café 中文"),
        ("\ufeffwith bom".encode(), "with bom"),
        ("utf16 le ü".encode("utf-16"), "utf16 le ü"),
        (b"\xfe\xff" + "utf16 be ü".encode("utf-16-be"), "utf16 be ü"),
        ("smart “quotes” – cp1252".encode("cp1252"), "smart “quotes” – cp1252"),
        (b"undefined in cp1252: \x81", "undefined in cp1252: \x81"),  # latin-1 takes anything
        ("Le café servait des crêpes à Noël.".encode("latin-1"), "Le café servait des crêpes à Noël."),
        ("黄河流经九个省区，最后注入渤海。".encode("gb18030"), "黄河流经九个省区，最后注入渤海。"),
        (
            "こんにちは、世界。今日はいい天気ですね。".encode("shift_jis"),
            "こんにちは、世界。今日はいい天気ですね。",
        ),
        ("utf16 without a BOM".encode("utf-16-le"), "utf16 without a BOM"),
        (b"one\r\ntwo\rthree", "one\ntwo\nthree"),
    ],
)
def test_decoding_fallbacks(raw: bytes, expected: str) -> None:
    assert decode_text(raw) == expected


def test_binary_and_empty_files_are_skipped_and_reported(tmp_path: Path) -> None:
    write(tmp_path / "good.txt", "fine")
    write(tmp_path / "binary.txt", b"PK\x03\x04\x00\x00\x00binary zip")
    write(tmp_path / "empty.md", "  \n\n")
    skipped: list[str] = []

    docs = list(iter_documents(tmp_path, skipped))

    assert [d.doc_id for d in docs] == ["good.txt"]
    assert len(skipped) == 2
    assert any("binary.txt" in s and "binary" in s for s in skipped)
    assert any("empty.md" in s and "empty" in s for s in skipped)


def test_folder_with_only_unusable_files_raises_after_reading(tmp_path: Path) -> None:
    write(tmp_path / "binary.txt", b"\x00\x01")
    with pytest.raises(KnowledgeBaseError, match="no readable documents"):
        list(iter_documents(tmp_path))


def test_missing_path_raises_immediately(tmp_path: Path) -> None:
    with pytest.raises(KnowledgeBaseError, match="not found"):
        iter_documents(tmp_path / "nope")


def test_binary_control_characters_without_nul_are_binary() -> None:
    assert decode_text(bytes(range(1, 32)) * 40) is None


def test_empty_folder_names_supported_types(tmp_path: Path) -> None:
    write(tmp_path / "sheet.csv", "a,b")
    with pytest.raises(
        KnowledgeBaseError, match=r"no supported documents in this folder \(looked for .*\.pdf"
    ):
        iter_documents(tmp_path)


def test_unsupported_single_file(tmp_path: Path) -> None:
    with pytest.raises(KnowledgeBaseError, match=r"unsupported format \.xyz"):
        iter_documents(write(tmp_path / "paper.xyz", b"data"))
    with pytest.raises(KnowledgeBaseError, match=r"unsupported format \.doc \(save it as \.docx\)"):
        iter_documents(write(tmp_path / "memo.doc", b"data"))


def test_on_the_fly_corpus_reads_every_format_and_reports_the_rest(tmp_path: Path) -> None:
    files = make_document_folder(tmp_path / "docs")
    skipped: list[str] = []

    docs = list(iter_documents(tmp_path / "docs", skipped))

    good = {key for key in files if key not in EXPECTED_FAILURES}
    assert sorted(d.location for d in docs if d.format != "html") == sorted(
        str(files[key]) for key in good if key != "html"
    )
    assert {d.format for d in docs} == {"pdf", "docx", "pptx", "xlsx", "epub", "html", "markdown", "text"}
    assert "中文/长江.txt" in {d.doc_id for d in docs}  # ids relative to the corpus folder
    assert len(skipped) == len(EXPECTED_FAILURES)
    for key, reason in EXPECTED_FAILURES.items():
        assert any(
            note == f"{files[key]}: {reason}" or note.startswith(f"{files[key]}: {reason}")
            for note in skipped
        )


def test_jsonl_fields(tmp_path: Path) -> None:
    lines = [
        {"id": "w1", "contents": '"Aaron"\nAaron is a prophet.'},  # UltraRAG: title on the first line
        {"id": 7, "text": "Body only.", "title": "Given title", "url": "https://example.org/7"},
        {"id": "w3", "contents": "One line without a title."},
        {"text": "No id here.\nSecond line."},
        {"id": "w5", "contents": "x" * 250 + "\nfirst line too long to be a title"},
    ]
    file = write(tmp_path / "corpus.jsonl", "\n".join(json.dumps(x) for x in lines) + "\n\n")

    docs = list(iter_documents(file))

    assert [d.doc_id for d in docs] == ["w1", "7", "w3", "corpus:4", "w5"]
    assert [d.title for d in docs] == ["Aaron", "Given title", "w3", "corpus:4", "w5"]
    assert docs[0].text == '"Aaron"\nAaron is a prophet.'
    assert docs[1].location == "https://example.org/7"
    assert docs[2].location == str(file.absolute())


def test_jsonl_is_streamed_not_loaded(tmp_path: Path) -> None:
    """The second record is written only after the first one was read: a reader that loads the file
    first would wait forever (the pipe's writer waits for the reader's go-ahead)."""
    pipe = tmp_path / "live.jsonl"
    os.mkfifo(pipe)
    first_read = threading.Event()

    def writer() -> None:
        with pipe.open("w", encoding="utf-8") as handle:
            handle.write('{"id": 1, "text": "first"}\n')
            handle.flush()
            first_read.wait(10)
            handle.write('{"id": 2, "text": "second"}\n')

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    documents = read_documents(pipe, max_bytes=MB)
    first = next(documents)
    assert isinstance(first, Document) and first.text == "first"
    first_read.set()
    rest = list(documents)
    thread.join(10)
    assert [d.text for d in rest if isinstance(d, Document)] == ["second"]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("this line is broken", "not a JSON line"),
        ("[1, 2]", "expected a JSON object, got list"),
        ('{"id": "a"}', 'needs a string "contents" or "text" field'),
        ('{"id": "a", "text": 5}', 'needs a string "contents" or "text" field'),
        ('{"id": "a", "text": "  "}', 'empty "text"'),
        ('{"id": [1], "text": "t"}', '"id" must be a string or a number'),
        ('{"id": "a", "text": "t", "url": 3}', '"url" must be a string'),
        ('{"id": "a", "text": "t", "title": 3}', '"title" must be a string'),
        ('{"id": "a", "text": "t", "x": ' + "[" * 100_000 + "]" * 100_000 + "}", "not a JSON line (nested"),
        ('{"id": "a", "text": "half \\ud800 a pair"}', "not Unicode text (a lone surrogate escape"),
        ('{"id": "\\udfff", "text": "t"}', "not Unicode text (a lone surrogate escape"),
    ],
)
def test_jsonl_bad_line_is_a_failure_and_reading_goes_on(tmp_path: Path, line: str, message: str) -> None:
    file = write(
        tmp_path / "bad.jsonl",
        '{"id": "ok", "text": "fine"}\n\n' + line + '\n{"id": "after", "text": "more"}\n',
    )

    items = list(read_documents(file, max_bytes=MB))

    assert [type(item) for item in items] == [Document, Failure, Document]
    assert items[1] == Failure(f"{file}:3", items[1].reason)
    assert items[1].reason.startswith(message)
    assert [d.doc_id for d in items if isinstance(d, Document)] == ["ok", "after"]


def test_jsonl_escaped_surrogate_pairs_are_one_character(tmp_path: Path) -> None:
    file = write(tmp_path / "emoji.jsonl", '{"id": "e", "text": "snow \\ud83c\\udf28 cloud"}\n')
    (doc,) = read_documents(file, max_bytes=MB)
    assert isinstance(doc, Document) and doc.text == "snow \U0001f328 cloud"


def test_jsonl_failures_become_skipped_notes_on_the_fly(tmp_path: Path) -> None:
    file = write(tmp_path / "c.jsonl", '{"id": 1, "text": "first"}\nnot json\n')
    skipped: list[str] = []
    assert [d.text for d in iter_documents(file, skipped)] == ["first"]
    assert skipped == [f"{file.absolute()}:2: not a JSON line (Expecting value at column 1)"]


def test_jsonl_of_garbage_is_abandoned_early(tmp_path: Path) -> None:
    file = write(tmp_path / "notes.jsonl", "plain prose, not JSON\n" * 1000)
    items = list(read_documents(file, max_bytes=MB))
    assert len(items) == 21  # 20 lines, then the verdict; not a thousand failures
    assert items[-1] == Failure(str(file), "not a JSONL corpus: its first 20 records are unusable")


def test_jsonl_hash_is_per_record_and_size_limit_does_not_apply(tmp_path: Path) -> None:
    lines = [json.dumps({"id": f"p{i}", "contents": f'"Title {i}"\n' + "word " * 50}) for i in range(50)]
    file = write(tmp_path / "big.jsonl", "\n".join(lines) + "\n")
    docs = [d for d in read_documents(file, max_bytes=1024) if isinstance(d, Document)]
    assert len(docs) == 50 and file.stat().st_size > 1024
    assert docs[3].content_hash == hashlib.sha256(lines[3].encode()).hexdigest()
    assert (docs[3].title, docs[3].format, docs[3].pages) == ("Title 3", "jsonl", ())
    assert len({d.content_hash for d in docs}) == 50


def test_empty_jsonl_is_a_failure(tmp_path: Path) -> None:
    file = write(tmp_path / "none.jsonl", "\n\n")
    assert list(read_documents(file, max_bytes=MB)) == [Failure(str(file), "empty file")]


# -- discover -------------------------------------------------------------------------------------------


def test_discover_walks_folders_sorted_skipping_hidden_and_reporting_unsupported(tmp_path: Path) -> None:
    write(tmp_path / "b.md", "b")
    write(tmp_path / "a" / "deep" / "c.PDF", b"%PDF")
    write(tmp_path / ".hidden" / "d.md", "d")
    write(tmp_path / ".e.md", "e")
    write(tmp_path / "photo.png", b"\x89PNG")
    write(tmp_path / "README", "no suffix")

    files, failures = discover([tmp_path])

    assert files == [tmp_path / "a" / "deep" / "c.PDF", tmp_path / "b.md"]
    assert failures == [
        Failure(str(tmp_path / "README"), failures[0].reason),
        Failure(str(tmp_path / "photo.png"), "unsupported format .png"),
    ]
    assert failures[0].reason.startswith("unsupported format (no file name extension; supported: .docx,")


def test_discover_non_recursive_reads_only_the_top_folder(tmp_path: Path) -> None:
    write(tmp_path / "top.md", "t")
    write(tmp_path / "sub" / "inner.md", "i")
    assert discover([tmp_path], recursive=False) == ([tmp_path / "top.md"], [])


def test_discover_globs_home_and_deduplication(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    one = write(tmp_path / "papers" / "one.md", "1")
    two = write(tmp_path / "papers" / "nested" / "two.md", "2")
    write(tmp_path / "papers" / "three.txt", "3")
    os.symlink(one, tmp_path / "papers" / "alias.md")  # a second name for one.md

    files, failures = discover(
        ["~/papers/*.md", "~/papers/**/*.md", str(one), tmp_path / "papers" / "alias.md"]
    )

    assert failures == []
    assert files == [tmp_path / "papers" / "alias.md", two]  # one.md under the first name it was found


def test_discover_reports_missing_paths_empty_globs_and_empty_folders(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    write(tmp_path / "only-images" / "x.png", b"png")
    os.symlink(tmp_path / "gone.md", tmp_path / "dangling.md")

    files, failures = discover(
        [
            tmp_path / "nope.md",
            str(tmp_path / "*.rst"),
            tmp_path / "empty",
            tmp_path / "only-images",
            tmp_path / "dangling.md",
        ]
    )

    assert files == []
    reasons = {f.location: f.reason for f in failures}
    assert reasons[str(tmp_path / "nope.md")] == "not found"
    assert reasons[str(tmp_path / "*.rst")] == "no files match this pattern"
    assert reasons[str(tmp_path / "empty")].startswith("no supported documents in this folder")
    assert reasons[str(tmp_path / "only-images")].startswith("no supported documents in this folder")
    assert reasons[str(tmp_path / "only-images" / "x.png")] == "unsupported format .png"
    assert reasons[str(tmp_path / "dangling.md")] == "broken link: its target does not exist"


def test_discover_survives_symlink_loops_and_follows_linked_folders(tmp_path: Path) -> None:
    write(tmp_path / "corpus" / "a.md", "a")
    write(tmp_path / "elsewhere" / "b.md", "b")
    os.symlink(tmp_path / "corpus", tmp_path / "corpus" / "loop")  # corpus/loop/loop/loop/...
    os.symlink(tmp_path / "elsewhere", tmp_path / "corpus" / "linked")

    files, failures = discover([tmp_path / "corpus"])

    assert files == [tmp_path / "corpus" / "a.md", tmp_path / "corpus" / "linked" / "b.md"]
    assert failures == []


def test_discover_tells_link_loops_and_special_files_from_broken_links(tmp_path: Path) -> None:
    folder = tmp_path / "corpus"
    write(folder / "a.md", "a")
    os.symlink("self.md", folder / "self.md")  # a link to itself
    os.symlink("/dev/zero", folder / "zeros.txt")  # exists, but reading it never ends
    os.symlink("gone.md", folder / "dangling.md")
    os.mkfifo(folder / "pipe.md")

    walked = discover([folder])
    named = discover([folder / "self.md", folder / "zeros.txt", folder / "dangling.md", folder / "pipe.md"])

    expected = [
        Failure(str(folder / "dangling.md"), "broken link: its target does not exist"),
        Failure(str(folder / "pipe.md"), "not a regular file or folder"),
        Failure(str(folder / "self.md"), "link loop: following this link leads back to it"),
        Failure(str(folder / "zeros.txt"), "not a regular file or folder"),
    ]
    assert walked == ([folder / "a.md"], expected)
    assert named[0] == [] and sorted(named[1], key=lambda failure: failure.location) == expected


def test_discover_refuses_a_path_that_is_not_utf8_in_one_printable_line(tmp_path: Path) -> None:
    folder = tmp_path / "corpus"
    write(folder / "a.md", "a")
    (folder / os.fsdecode(b"caf\xe9.md")).write_text("b", encoding="utf-8")
    (folder / os.fsdecode(b"\xff")).mkdir()
    (folder / os.fsdecode(b"\xff") / "c.md").write_text("c", encoding="utf-8")

    files, failures = discover([folder])

    assert files == [folder / "a.md"]
    reason = "its name is not valid UTF-8: rename it to add it"
    assert failures == [
        Failure(f"{folder}/caf\ufffd.md", reason),
        Failure(f"{folder}/\ufffd/c.md", reason),
    ]
    for failure in failures:
        failure.location.encode("utf-8")  # printable, storable


def test_discover_explicit_hidden_file_is_taken(tmp_path: Path) -> None:
    hidden = write(tmp_path / ".notes.md", "n")
    assert discover([hidden]) == ([hidden], [])


# -- read_documents -------------------------------------------------------------------------------------


def test_doc_id_is_relative_to_root_else_absolute(tmp_path: Path) -> None:
    file = write(tmp_path / "kb" / "sub" / "x.md", "# X\n\nbody")
    (under,) = read_documents(file, max_bytes=MB, root=tmp_path / "kb")
    (outside,) = read_documents(file, max_bytes=MB, root=tmp_path / "other")
    (no_root,) = read_documents(file, max_bytes=MB)
    assert isinstance(under, Document) and isinstance(outside, Document) and isinstance(no_root, Document)
    assert (under.doc_id, outside.doc_id, no_root.doc_id) == ("sub/x.md", file.as_posix(), file.as_posix())
    assert under.title == "X"


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("empty.txt", b"", "empty file"),
        ("blank.md", b"  \n\t\n", "empty file"),
        ("nul.txt", b"text\x00with\x00nuls\x00and\x00more", "binary file, not a document"),
        ("data.xyz", b"whatever", "unsupported format .xyz"),
    ],
)
def test_unusable_files_give_one_failure(tmp_path: Path, name: str, content: bytes, reason: str) -> None:
    file = write(tmp_path / name, content)
    assert list(read_documents(file, max_bytes=MB)) == [Failure(str(file), reason)]


def test_too_large_file_names_the_limit_and_the_setting(tmp_path: Path) -> None:
    file = write(tmp_path / "huge.txt", "x" * (MB + 1))
    assert list(read_documents(file, max_bytes=MB)) == [
        Failure(str(file), "larger than the 1 MB limit (set retrieval.max_file_mb)")
    ]
    (document,) = read_documents(file, max_bytes=2 * MB)
    assert isinstance(document, Document)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their permissions")
def test_unreadable_file_is_a_failure(tmp_path: Path) -> None:
    file = write(tmp_path / "locked.md", "secret")
    file.chmod(0)
    assert list(read_documents(file, max_bytes=MB)) == [
        Failure(str(file), "cannot read it (Permission denied)")
    ]


def test_page_at_maps_offsets_to_pages() -> None:
    doc = Document("d", "t", "/d.pdf", "one\n\ntwo", pages=(Page(1, 0, 3), Page(4, 5, 8)), format="pdf")
    assert [doc.page_at(i) for i in range(9)] == [1, 1, 1, None, None, 4, 4, 4, None]
    assert Document("d", "t", "/d.md", "text").page_at(0) is None


def test_corpus_stamp_changes_with_content_but_not_without(tmp_path: Path) -> None:
    file = write(tmp_path / "a.md", "alpha")
    first = corpus_stamp(tmp_path)
    assert corpus_stamp(tmp_path) == first
    stat = file.stat()
    file.write_text("omega", encoding="utf-8")  # same size; restore the timestamp too
    os.utime(file, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert corpus_stamp(tmp_path) != first
    second = corpus_stamp(tmp_path)
    write(tmp_path / "b.md", "new file")
    assert corpus_stamp(tmp_path) != second
