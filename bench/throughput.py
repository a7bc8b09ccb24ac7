"""Throughput of `deepdraft batch` against a continuous-batching server, and what Ray adds.

The server (on loopback, OpenAI-compatible) models a continuous-batching engine such as vLLM with
fixed parameters: at most B = 16 requests are served at once (the others wait in line), and a
request holds its slot for prompt_tokens / 2,000 s of prefill plus completion_tokens / 30 s of
decoding (tokens counted as characters / 4). The replies follow the WARP protocol (the tests'
`ScenarioModel`: 3 sections, one deepening step, 14 requests a report; verification and synthesis
off), so every report takes the same path.

For each N, N reports go through `run_batch` (what `deepdraft batch` runs) with N at once:

    utilisation   busy slot-seconds / (B × wall time) — how well deepdraft keeps the server fed
    reports/h     N / wall time
    overhead      deepdraft's own time per action: a run's wall time less the time its requests
                  spent at the server (waiting and served), divided by its requests

`--ray` then compares the same batch of `--ray-runs` reports driven locally and on Ray (a local
Ray with two CPUs; the ratio of wall times, on a fresh Ray and on one that ran a batch just
before; `--ray-repeat` rounds, medians). The batch starts its line workers when it connects, so
the bench also reports when the last run sent its first request, and the ratio of what follows.
Last, it kills a worker mid-run to time the recovery: from the kill to the moment the server sees
the killed run's request asked again.

`--speedup S` divides the server's service times by S (a quick look; deepdraft's overhead then
weighs S times more in the utilisation).

Usage: python bench/throughput.py [--runs 1,8,16,32] [--speedup 1] [--ray] [--ray-runs 8] [--ray-repeat 1]
       [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, for tests.support
from tests.conftest import SPEECHES
from tests.support.openai_server import FakeOpenAIServer, Reply
from tests.support.scenario import ScenarioModel, as_responder

from deepdraft.config import load_settings
from deepdraft.run.batch import BatchLine, run_batch

SLOTS = 16
PREFILL_TOKENS_S = 2_000.0
DECODE_TOKENS_S = 30.0
REQUESTS_PER_REPORT = 14
_TAG = re.compile(r"\(report (\d+)\)")


@dataclass
class Served:
    report: int
    arrived: float
    started: float
    ended: float
    body: str


@dataclass
class BatchingServer:
    """The responder of the loopback server: B slots, prefill and decode at fixed speeds."""

    speedup: float = 1.0
    slots: threading.Semaphore = field(default_factory=lambda: threading.BoundedSemaphore(SLOTS))
    served: list[Served] = field(default_factory=list)
    busy: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)
    arrivals: list[tuple[float, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.answer = as_responder(ScenarioModel(expansions=1))

    def __call__(self, body: dict[str, Any], index: int) -> str | Reply:
        arrived = time.monotonic()
        text = json.dumps(body["messages"], ensure_ascii=False)
        with self.lock:
            self.arrivals.append((arrived, text))
        reply = self.answer(body, index)
        seconds = (len(text) / 4 / PREFILL_TOKENS_S + len(reply) / 4 / DECODE_TOKENS_S) / self.speedup
        with self.slots:
            started = time.monotonic()
            time.sleep(seconds)
            ended = time.monotonic()
        tag = _TAG.search(text)
        with self.lock:
            self.busy += ended - started
            self.served.append(Served(int(tag.group(1)) if tag else -1, arrived, started, ended, text))
        return reply


def lines(count: int) -> list[BatchLine]:
    return [
        BatchLine(number, f"r{number}", f"How did presidents argue about tariffs? (report {number})")
        for number in range(1, count + 1)
    ]


def one_batch(
    count: int, concurrency: int, corpus: Path, folder: Path, speedup: float, ray: str | None = None
) -> dict[str, Any]:
    """`count` reports, `concurrency` at once, against a fresh batching server; the figures."""
    server_model = BatchingServer(speedup)
    with FakeOpenAIServer(server_model) as server:
        settings = load_settings(
            flags={
                "llm": {"base_url": server.base_url, "model": "fake-model"},
                "output": {"verify": False, "synthesis": False},
            }
        )
        started = time.monotonic()
        outcome = run_batch(
            lines(count), settings, folder, concurrency=concurrency, default_kb=str(corpus), ray=ray
        )
        wall = time.monotonic() - started
    firsts = [
        min(served.arrived for served in server_model.served if served.report == number) - started
        for number in range(1, count + 1)
    ]
    failed = [line.id for line in outcome.lines if line.status != "finished"]
    if failed:
        raise SystemExit(f"reports failed: {failed}")
    overheads = []
    for state in outcome.lines:
        number = int(state.id.removeprefix("r"))
        at_server = [s.ended - s.arrived for s in server_model.served if s.report == number]
        overheads.append((state.seconds - sum(at_server)) / max(1, len(at_server)))
    return {
        "reports": count,
        "concurrency": concurrency,
        "requests": len(server_model.served),
        "wall_s": round(wall, 2),
        "utilisation": round(server_model.busy / (SLOTS * wall), 4),
        "reports_per_hour": round(count / wall * 3600, 1),
        "overhead_per_action_ms": round(1000 * statistics.median(overheads), 1),
        "first_request_s": round(max(firsts), 2),
    }


def ray_figures(corpus: Path, root: Path, runs: int, speedup: float, repeat: int = 1) -> dict[str, Any]:
    """Local, then Ray cold (a fresh Ray) and warm (the same Ray again), `repeat` times; medians."""
    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    rounds = []
    for number in range(repeat):
        local = one_batch(runs, runs, corpus, root / f"ray-local-{number}", speedup)
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        try:
            cold = one_batch(runs, runs, corpus, root / f"ray-cold-{number}", speedup, ray="auto")
            warm = one_batch(runs, runs, corpus, root / f"ray-warm-{number}", speedup, ray="auto")
        finally:
            ray.shutdown()
        rounds.append((local, cold, warm))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        recovery = _recovery(corpus, root / "ray-kill", speedup)
    finally:
        ray.shutdown()

    def median(values: list[float]) -> float:
        return round(statistics.median(values), 3)

    # Once every run has sent its first request, what is left is the steady state.
    return {
        "runs": runs,
        "repeat": repeat,
        "local_wall_s": median([local["wall_s"] for local, _, _ in rounds]),
        "ray_cold_wall_s": median([cold["wall_s"] for _, cold, _ in rounds]),
        "ray_warm_wall_s": median([warm["wall_s"] for _, _, warm in rounds]),
        "ratio_cold": median([cold["wall_s"] / local["wall_s"] for local, cold, _ in rounds]),
        "ratio_warm": median([warm["wall_s"] / local["wall_s"] for local, _, warm in rounds]),
        "ratios_cold": [round(cold["wall_s"] / local["wall_s"], 3) for local, cold, _ in rounds],
        "ratios_warm": [round(warm["wall_s"] / local["wall_s"], 3) for local, _, warm in rounds],
        "local_first_request_s": median([local["first_request_s"] for local, _, _ in rounds]),
        "ray_cold_first_request_s": median([cold["first_request_s"] for _, cold, _ in rounds]),
        "ray_warm_first_request_s": median([warm["first_request_s"] for _, _, warm in rounds]),
        "ratio_after_start": median(
            [
                (warm["wall_s"] - warm["first_request_s"]) / (local["wall_s"] - local["first_request_s"])
                for local, _, warm in rounds
            ]
        ),
        "recovery_s": recovery,
    }


def _recovery(corpus: Path, folder: Path, speedup: float) -> float:
    """Seconds from a worker's SIGKILL to its run's request arriving again at the server."""
    server_model = BatchingServer(speedup)
    kill: dict[str, Any] = {}

    def kill_during(body: dict[str, Any], index: int) -> None:
        if index == REQUESTS_PER_REPORT // 2 and not kill:
            for entry in Path("/proc").iterdir():
                if entry.name.isdigit():
                    try:
                        title = (entry / "cmdline").read_bytes()
                    except OSError:
                        continue
                    if title.startswith(b"ray::LineWorker"):
                        kill["text"] = json.dumps(body["messages"], ensure_ascii=False)
                        kill["at"] = time.monotonic()
                        os.kill(int(entry.name), signal.SIGKILL)
                        return

    with FakeOpenAIServer(server_model, on_request=kill_during) as server:
        settings = load_settings(
            flags={
                "llm": {"base_url": server.base_url, "model": "fake-model"},
                "output": {"verify": False, "synthesis": False},
            }
        )
        run_batch(lines(1), settings, folder, concurrency=1, default_kb=str(corpus), ray="auto")
    # The killed request itself is still recorded (the server answers the closed socket); the
    # one after it is the retried task asking again.
    again = [at for at, text in server_model.arrivals if text == kill.get("text") and at > kill["at"]]
    return round(again[1] - kill["at"], 2) if len(again) > 1 else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", default="1,8,16,32", help="Comma-separated N (reports at once).")
    parser.add_argument("--speedup", type=float, default=1.0, help="Divide the server's service times.")
    parser.add_argument("--ray", action="store_true", help="Also time the Ray path and its recovery.")
    parser.add_argument("--ray-runs", type=int, default=8, help="Reports in the Ray comparison.")
    parser.add_argument("--ray-repeat", type=int, default=1, help="Rounds of the Ray comparison (medians).")
    parser.add_argument("--json", action="store_true", help="Print the figures as JSON.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="deepdraft-throughput-") as tmp:
        root = Path(tmp)
        os.environ["DEEPDRAFT_HOME"] = str(root / "home")
        corpus = root / "corpus"
        corpus.mkdir()
        for name, text in SPEECHES.items():
            (corpus / name).write_text(text + "\n", encoding="utf-8")
        rows = [
            one_batch(n, n, corpus, root / f"batch-{n}", args.speedup)
            for n in (int(part) for part in args.runs.split(","))
        ]
        summary: dict[str, Any] = {"slots": SLOTS, "speedup": args.speedup, "batches": rows}
        if args.ray:
            summary["ray"] = ray_figures(corpus, root, args.ray_runs, args.speedup, args.ray_repeat)
    if args.json:
        print(json.dumps(summary, indent=2))
        return
    print(f"server: {SLOTS} slots, prefill {PREFILL_TOKENS_S:,.0f} tok/s, decode {DECODE_TOKENS_S:.0f} tok/s "
          f"per sequence (service times / {args.speedup:g})")  # fmt: skip
    print(f"{'N':>4} {'wall s':>8} {'utilisation':>12} {'reports/h':>10} {'overhead/action':>16}")
    for row in rows:
        print(f"{row['reports']:>4} {row['wall_s']:>8.1f} {row['utilisation']:>11.1%} "
              f"{row['reports_per_hour']:>10.1f} {row['overhead_per_action_ms']:>13.1f} ms")  # fmt: skip
    if "ray" in summary:
        figures = summary["ray"]
        print(f"Ray, {figures['runs']} reports (medians of {figures['repeat']}): "
              f"local {figures['local_wall_s']} s, "
              f"Ray cold {figures['ray_cold_wall_s']} s (×{figures['ratio_cold']}), "
              f"warm {figures['ray_warm_wall_s']} s (×{figures['ratio_warm']}); every run started "
              f"after {figures['local_first_request_s']} s locally, {figures['ray_cold_first_request_s']} s "
              f"and {figures['ray_warm_first_request_s']} s on Ray; "
              f"from there ×{figures['ratio_after_start']}; "
              f"recovery after a killed worker {figures['recovery_s']} s")  # fmt: skip


if __name__ == "__main__":
    main()
