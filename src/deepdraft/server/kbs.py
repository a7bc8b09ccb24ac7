"""Knowledge bases over HTTP: list them, upload documents into one, follow the ingestion job.

Searching a KB is `deepdraft.retrieval.kb.lookup`'s, shared with the MCP server.

Uploads are the one place a client writes files on the server, so they are fenced in:

* a file's name must be a plain name — no folders, no leading dot, no control characters; a name
  that tries to climb out (``../x``, ``/etc/x``, ``a\\b``) is refused, not "cleaned", so the user
  learns that the file was not stored under the name they gave;
* only document types deepdraft can read are accepted (an allow-list of suffixes);
* each file and the whole request have size limits, counted while the bytes arrive;
* files land in ``DEEPDRAFT_HOME/uploads/<kb>/`` only, written to a temporary name and renamed,
  so a broken upload never leaves half a file that the next ingestion would index.

Ingesting runs as a job in a background thread (one at a time per server: ingestion is CPU-bound
and the KB store lets only one writer in anyway); clients poll the job for progress.
"""

from __future__ import annotations

import contextlib
import filecmp
import itertools
import os
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from deepdraft.config import home_dir
from deepdraft.errors import DeepdraftError, KnowledgeBaseError, UserError
from deepdraft.retrieval.documents.limits import DocumentLimits
from deepdraft.retrieval.kb import names as kbs
from deepdraft.settings import Settings

ALLOWED_SUFFIXES = frozenset(
    {
        ".txt",
        ".md",
        ".markdown",
        ".rst",
        ".jsonl",
        ".pdf",
        ".docx",
        ".pptx",
        ".xlsx",
        ".html",
        ".htm",
        ".epub",
    }
)
MAX_FILE_BYTES = 50 * 1024 * 1024
MAX_REQUEST_BYTES = 200 * 1024 * 1024
CHUNK = 1024 * 1024
_UNSAFE = re.compile(r"[\x00-\x1f\x7f/\\:]")


class UploadRejected(UserError):
    """An uploaded file was refused (name, type or size); the message says which and why."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def uploads_dir(kb: str) -> Path:
    return home_dir() / "uploads" / kbs.validate_kb_name(kb)


def safe_filename(name: str | None) -> str:
    """`name` if it is a plain file name of an allowed type; `UploadRejected` otherwise."""
    if not name or name != name.strip() or len(name) > 200:
        raise UploadRejected(f"file name {name!r}: give a plain name of at most 200 characters")
    if _UNSAFE.search(name) or name.startswith(".") or name in ("..", "."):
        raise UploadRejected(
            f"file name {name!r} is not allowed: no folders, no leading dot, no control characters"
        )
    suffix = Path(name).suffix.lower()
    if suffix not in ALLOWED_SUFFIXES:
        allowed = " ".join(sorted(ALLOWED_SUFFIXES))
        raise UploadRejected(f"{name}: file type {suffix or '(none)'} is not accepted (allowed: {allowed})")
    return name


def store_upload(
    kb: str, filename: str | None, read: Callable[[int], bytes], max_bytes: int = MAX_FILE_BYTES
) -> Path:
    """Stream one uploaded file into the KB's upload folder; returns where it now is."""
    return store_file(uploads_dir(kb), filename, read, max_bytes)


def store_file(
    folder: Path,
    filename: str | None,
    read: Callable[[int], bytes],
    max_bytes: int = MAX_FILE_BYTES,
    *,
    replace: bool = True,
) -> Path:
    """Stream one uploaded file into `folder` under its checked name; returns where it now is.

    `replace=False`: a file of that name already there is kept — an upload of the same bytes is
    taken as that file (sent again), different bytes are refused (409) rather than written over."""
    name = safe_filename(filename)
    folder.mkdir(parents=True, exist_ok=True)
    target = (folder / name).resolve()
    if target.parent != folder.resolve():  # belt and braces: the name check already rules this out
        raise UploadRejected(f"file name {name!r} is not allowed")
    partial = folder / f".{name}.{os.getpid()}.{threading.get_ident()}.part"
    size = 0
    try:
        with partial.open("wb") as out:
            while chunk := read(CHUNK):
                size += len(chunk)
                if size > max_bytes:
                    raise UploadRejected(
                        f"{name} is larger than the limit of {max_bytes // (1024 * 1024)} MB", status=413
                    )
                out.write(chunk)
        if size == 0:
            raise UploadRejected(f"{name} is empty")
        if not replace and target.exists():
            if filecmp.cmp(partial, target, shallow=False):
                return target
            raise UploadRejected(
                f"a different file named {name} was added before; rename your file and send it again",
                status=409,
            )
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return target


def list_kbs() -> list[dict[str, Any]]:
    """Every KB with what is known of it cheaply (its name and, when readable, its size)."""
    result = []
    for name in kbs.list_kbs():
        entry: dict[str, Any] = {"name": name, "documents": None}
        # A KB being rebuilt or damaged is still listed; searching it will say why.
        with contextlib.suppress(DeepdraftError):
            entry.update(_describe(name))
        result.append(entry)
    return result


def _describe(name: str) -> dict[str, Any]:
    with kbs.open_kb(name) as store:
        info = store.info()
    return {"documents": info.documents, "passages": info.chunks}


# ---- ingestion jobs ----------------------------------------------------------------------------

JobStatus = Literal["queued", "running", "done", "failed"]


@dataclass
class IngestJob:
    id: str
    kb: str
    files: list[str]
    status: JobStatus = "queued"
    message: str = ""
    progress: list[str] = field(default_factory=list)
    summary: dict[str, Any] | None = None
    created_at: float = field(default_factory=time.time)
    finished_at: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kb": self.kb,
            "files": self.files,
            "status": self.status,
            "message": self.message,
            "progress": self.progress[-50:],
            "summary": self.summary,
            "created_at": self.created_at,
            "finished_at": self.finished_at,
        }


class IngestQueue:
    """Runs ingestion jobs one after the other in a background thread and remembers their outcome."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="deepdraft-ingest")
        self._jobs: dict[str, IngestJob] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def submit(self, kb: str, files: list[Path]) -> IngestJob:
        job = IngestJob(
            id=f"ingest-{int(time.time())}-{next(self._ids)}", kb=kb, files=[f.name for f in files]
        )
        with self._lock:
            self._jobs[job.id] = job
        self._pool.submit(self._run, job, files)
        return job

    def get(self, job_id: str) -> IngestJob:
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None:
            raise KnowledgeBaseError(f"no ingestion job {job_id!r} (jobs are kept until the server stops)")
        return job

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _run(self, job: IngestJob, files: list[Path]) -> None:
        job.status = "running"
        try:
            job.summary = ingest(job.kb, files, self.settings, job.progress.append)
            job.status, job.message = "done", str(job.summary.get("message", "indexed"))
        except DeepdraftError as exc:
            job.status, job.message = "failed", str(exc)
        except Exception as exc:  # a bug: report it on the job rather than lose it in a thread
            job.status, job.message = "failed", f"{type(exc).__name__}: {exc}"
        finally:
            job.finished_at = time.time()


def ingest(kb: str, files: list[Path], settings: Settings, say: Callable[[str], None]) -> dict[str, Any]:
    """Add the uploaded files to KB `kb` (created on first use); returns what the store reports.

    The store refuses a second writer at once (`KnowledgeBaseError`) instead of waiting: the job
    fails with that message and the files stay in the upload folder for the next try.
    """
    embedding = settings.embedding if settings.embedding.enabled else None
    say(f"adding {len(files)} file(s) to {kb}")
    # A new KB goes to the configured engine (`[kb] engine`), as with `kb add`; an existing one stays.
    engine = None if kbs.kb_exists(kb) else settings.kb.engine
    with kbs.create_kb(kb, settings.retrieval, engine=engine, dsn=settings.kb.dsn) as store:
        result = store.add(
            files,
            progress=lambda note: say(f"{note.kind}: {Path(note.location).name} {note.detail}".rstrip()),
            embedding=embedding,
            max_bytes=MAX_FILE_BYTES,
            ocr=settings.retrieval.ocr,
            limits=DocumentLimits.from_settings(settings.retrieval),
        )
    return {"message": result.summary(), **result.to_dict()}
