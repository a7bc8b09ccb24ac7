"""`deepdraft kb ...` end to end: a real process on real files of every format."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from deepdraft.retrieval.kb.lock import write_lock
from deepdraft.retrieval.kb.names import kb_dir, kb_has_documents
from tests.support.documents import EXPECTED_FAILURES, PDF_PAGES, make_document_folder


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "deepdraft", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=dict(os.environ, COLUMNS="200"),
        stdin=subprocess.DEVNULL,
    )


def test_add_search_info_list_and_remove(tmp_path: Path) -> None:
    files = make_document_folder(tmp_path / "docs")
    good = len(files) - len(EXPECTED_FAILURES)

    added = cli("kb", "add", str(tmp_path / "docs"), str(tmp_path / "missing.pdf"), "--kb", "work")
    assert added.returncode == 0, added.stderr
    failed_lines = [line for line in added.stderr.splitlines() if line.startswith("failed")]
    assert len(failed_lines) == len(EXPECTED_FAILURES) + 1  # one line per bad file, the missing path too
    assert any("missing.pdf: not found" in line for line in failed_lines)
    assert f"added {good} documents (" in added.stdout and f"{len(failed_lines)} failed" in added.stdout
    assert f"added    {files['pdf']} (1 document, " in added.stdout

    again = cli("kb", "add", str(tmp_path / "docs"), "--kb", "work", "--json")
    summary = json.loads(again.stdout)
    assert again.returncode == 0 and not summary["changed"]
    assert summary["documents_unchanged"] == good and summary["documents"] == good

    found = cli("kb", "search", "work", "outlet glaciers retreated forty metres", "--k", "2", "--json")
    hits = json.loads(found.stdout)
    assert hits[0]["doc_id"] == "glacier-survey.pdf" and hits[0]["page"] == 2 and hits[0]["rank"] == 1
    assert "forty metres" in " ".join(hits[0]["text"].split())
    shown = cli("kb", "search", "work", "varroa mites")
    assert shown.returncode == 0 and "1. Beekeeping Notes" in shown.stdout
    assert "§ Beekeeping Notes › Pests" in shown.stdout and str(files["markdown"]) in shown.stdout
    paged = cli("kb", "search", "work", PDF_PAGES[2], "--k", "1")
    assert f"{files['pdf']}, p. 3" in paged.stdout

    info = json.loads(cli("kb", "info", "work", "--json", "--documents").stdout)
    assert info["documents"] == good and info["formats"]["pdf"] == 2
    assert len(info["failures"]) == len(EXPECTED_FAILURES) and len(info["document_list"]) == good
    listed = json.loads(cli("kb", "list", "--json").stdout)
    assert [(row["name"], row["documents"]) for row in listed] == [("work", good)]
    table = cli("kb", "list").stdout.splitlines()
    assert table[0].split() == ["knowledge", "base", "documents", "passages", "size", "search"]
    assert table[1].split()[:2] == ["work", str(good)] and table[1].rstrip().endswith("BM25")

    removed = cli("kb", "remove", "work", "*.pdf", "--json")
    assert json.loads(removed.stdout)["removed"] == ["glacier-survey.pdf", "restricted.pdf"]
    refused = cli("kb", "remove", "work")  # no terminal to confirm on
    assert refused.returncode == 2 and refused.stderr.strip() == (
        "error: deleting knowledge base 'work' needs confirmation: pass --yes"
    )
    assert cli("kb", "remove", "work", "--yes").returncode == 0
    assert not kb_dir("work").exists()


def test_nothing_usable_exits_non_zero_and_mistakes_are_one_line(tmp_path: Path) -> None:
    (tmp_path / "blob.txt").write_bytes(bytes(range(256)))
    bad = cli("kb", "add", str(tmp_path / "blob.txt"), str(tmp_path / "nope"), "--kb", "work")
    assert bad.returncode == 2
    assert "added 0 documents (0 chunks), 0 unchanged, 2 failed" in bad.stdout
    assert len(bad.stderr.strip().splitlines()) == 2

    for args, message in [
        (("kb", "info", "nothing"), "error: no knowledge base named 'nothing'"),
        (("kb", "add", str(tmp_path), "--kb", "../x"), "error: invalid knowledge base name '../x'"),
        (("kb", "search", "work", "q", "--mode", "magic"), "error: unknown search mode 'magic'"),
    ]:
        result = cli(*args)
        assert result.returncode == 2 and result.stderr.startswith(message), result.stderr
        assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


def test_a_second_writer_is_refused_cleanly(tmp_path: Path) -> None:
    (tmp_path / "a.md").write_text("# A\n\nSome text about rivers.\n")
    assert cli("kb", "add", str(tmp_path / "a.md"), "--kb", "work").returncode == 0
    (tmp_path / "b.md").write_text("# B\n\nMore text about lakes.\n")
    with write_lock(kb_dir("work"), "work"):
        busy = cli("kb", "add", str(tmp_path / "b.md"), "--kb", "work")
    assert busy.returncode == 2 and busy.stderr.strip() == (
        f"error: knowledge base 'work' is being written by another process (pid {os.getpid()}); "
        "try again when it finishes"
    )
    assert cli("kb", "add", str(tmp_path / "b.md"), "--kb", "work").returncode == 0
    assert kb_has_documents("work")
