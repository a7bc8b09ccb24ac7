"""Running deepdraft on one input in a child process, under resource limits, and what it did.

`kb_add` runs the real CLI (``python -m deepdraft kb add --json``) in a fresh interpreter, reaps
it with ``wait4`` for its own peak RSS and CPU time, and reads its outcome: "accepted" (a document
was added), "refused" (none was, and each reason is in `Probe.messages`), or why the probe itself
failed ("died", "hang"). Used by `tests/hostile/test_documents.py` under the limits and by
`bench/hostile.py` for the large inputs that must still be read.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from deepdraft.config import ENVIRONMENT

ADDRESS_SPACE = 1024 * 1024 * 1024
"""Bytes of address space a probe may map (`RLIMIT_AS`): a hostile input must fit in 1 GiB."""
CPU_SECONDS = 60
"""CPU seconds a probe may use (`RLIMIT_CPU`; SIGXCPU past them)."""
WALL_S = 120.0
"""Seconds a probe may take before it is killed as hung (a blocked read uses no CPU)."""
KB = "hostile"


@dataclass
class Probe:
    """What one input did to one channel."""

    case: str
    channel: str
    outcome: str = ""  # "accepted", "refused", or why the probe failed ("died", "hang", ...)
    messages: list[str] = field(default_factory=list)
    exit: int | None = None
    peak_rss_mb: float = 0.0
    cpu_s: float = 0.0
    seconds: float = 0.0
    log: str = ""


def clean_environment() -> dict[str, str]:
    """This process's environment without a developer's LLM settings, with one BLAS thread."""
    hidden = {name for name, _, _ in ENVIRONMENT}
    env = {name: value for name, value in os.environ.items() if name not in hidden}
    env.update(OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return env


def limit_resources() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))
    resource.setrlimit(resource.RLIMIT_CPU, (CPU_SECONDS, CPU_SECONDS))


def reap(pid: int, deadline: float) -> tuple[int, resource.struct_rusage, bool]:
    """Wait for child `pid` until `deadline`, killing it past that: (exit code, its rusage, hung)."""
    while True:
        done, status, usage = os.wait4(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status), usage, False
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            _, status, usage = os.wait4(pid, 0)
            return os.waitstatus_to_exitcode(status), usage, True
        time.sleep(0.02)


def kb_add(name: str, target: Path, home: Path, *, limited: bool = True, wall_s: float = WALL_S) -> Probe:
    """Add `target` to a new KB in the workspace `home` with the CLI, killed as hung after `wall_s`.

    `limited`: under `ADDRESS_SPACE` and `CPU_SECONDS` (the bench measures large legitimate inputs
    without them).
    """
    probe = Probe(name, "kb-add")
    out_path, err_path = home.parent / "kb-add.out", home.parent / "kb-add.err"
    env = {**clean_environment(), "DEEPDRAFT_HOME": str(home)}
    command: list[str | bytes] = [sys.executable, "-m", "deepdraft", "kb", "add", "--kb", KB, "--json"]
    command.append(os.fsencode(target))
    start = time.monotonic()
    with out_path.open("wb") as out, err_path.open("wb") as err:
        child = subprocess.Popen(
            command,
            stdout=out,
            stderr=err,
            stdin=subprocess.DEVNULL,
            env=env,
            preexec_fn=limit_resources if limited else None,
        )
    probe.exit, usage, hung = reap(child.pid, start + wall_s)
    child.returncode = probe.exit  # reaped here, for its rusage; Popen must not wait for it again
    probe.seconds = round(time.monotonic() - start, 3)
    probe.peak_rss_mb, probe.cpu_s = (
        round(usage.ru_maxrss / 1024, 1),
        round(usage.ru_utime + usage.ru_stime, 3),
    )
    stdout, stderr = out_path.read_text(errors="replace"), err_path.read_text(errors="replace")
    probe.log = stderr
    if hung:
        probe.outcome = "hang"
    elif probe.exit < 0 or probe.exit not in (0, 1, 2):
        probe.outcome = "died"
    elif stdout.strip():
        summary = json.loads(stdout)
        probe.messages = [failure["reason"] for failure in summary["failures"]]
        probe.outcome = "accepted" if summary["documents_added"] else "refused"
    else:  # a mistake in what was asked ("nothing found at ..."): one "error:" line
        probe.messages = [
            line.removeprefix("error: ") for line in stderr.splitlines() if line.startswith("error: ")
        ]
        probe.outcome = "refused"
    return probe
