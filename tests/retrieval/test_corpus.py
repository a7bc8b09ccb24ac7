"""Reading corpora: folders, single files, encodings, JSONL, and the errors a user can hit."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from deepdraft.errors import KnowledgeBaseError
from deepdraft.retrieval.corpus import Document, corpus_stamp, decode_text, iter_documents


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
    assert doc == Document("only.md", "Only", str(file.absolute()), "# Only\n\nWindows line ends.\n")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("naïve café 中文".encode(), "naïve café 中文"),
        ("\ufeffwith bom".encode(), "with bom"),
        ("utf16 le ü".encode("utf-16"), "utf16 le ü"),
        (b"\xfe\xff" + "utf16 be ü".encode("utf-16-be"), "utf16 be ü"),
        ("smart “quotes” – cp1252".encode("cp1252"), "smart “quotes” – cp1252"),
        (b"undefined in cp1252: \x81\x8d", "undefined in cp1252: \x81\x8d"),  # latin-1 takes anything
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


def test_empty_folder_names_supported_types(tmp_path: Path) -> None:
    write(tmp_path / "sheet.csv", "a,b")
    with pytest.raises(KnowledgeBaseError, match=r"\.txt, \.md, \.markdown"):
        iter_documents(tmp_path)


def test_unsupported_single_file(tmp_path: Path) -> None:
    with pytest.raises(KnowledgeBaseError, match="supported types"):
        iter_documents(write(tmp_path / "paper.pdf", b"%PDF-1.4"))


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


def test_jsonl_is_streamed(tmp_path: Path) -> None:
    file = write(tmp_path / "c.jsonl", '{"id": 1, "text": "first"}\nthis line is broken\n')
    documents = iter_documents(file)
    assert next(documents).text == "first"  # the bad line has not been read yet
    with pytest.raises(KnowledgeBaseError, match=r"c\.jsonl:2"):
        next(documents)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("[1, 2]", "expected a JSON object"),
        ('{"id": "a"}', '"contents" or "text"'),
        ('{"id": "a", "text": 5}', '"contents" or "text"'),
        ('{"id": [1], "text": "t"}', '"id" must be'),
        ('{"id": "a", "text": "t", "url": 3}', '"url" must be'),
    ],
)
def test_jsonl_bad_lines_name_file_and_line(tmp_path: Path, line: str, message: str) -> None:
    file = write(tmp_path / "bad.jsonl", '{"id": "ok", "text": "fine"}\n\n' + line + "\n")
    with pytest.raises(KnowledgeBaseError, match=r"bad\.jsonl:3") as raised:
        list(iter_documents(file))
    assert message in str(raised.value)


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
