"""Report quality on the demo corpus: write reports for a question set and score them judge-free.

For each question (and each policy asked for) a report is written through the real runner with the
configured model (the embedded one by default), exported as the JSON export, and scored by a
scorer script such as `shared/quality/score.py` (it takes QUESTIONS.jsonl CORPUS.jsonl
QID=REPORT.json... and prints one JSON line per report). What is printed, per run and as medians:
wall time (model load, verification and synthesis included), actions, refused replies, and the
scorer's proxies (words, topic precision, era coverage, documents cited, support, copying...).

Runs are sequential on purpose: timings are only comparable on an otherwise idle machine.

Usage:
  python bench/quality.py QUESTIONS.jsonl CORPUS.jsonl --scorer score.py --ids dev-01,dev-05,dev-09
      [--policy warp,plan-write] [--kb demo] [--depth quick] [--seed 1] [--out DIR] [--json]
Re-running with the same --out skips runs whose report JSON is already there (a long measurement
can be interrupted and continued).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from deepdraft.config import load_settings
from deepdraft.export import export
from deepdraft.run import runner
from deepdraft.run.runs import Runs

# The scorer's fields shown in the table, in order; medians are taken over the runs.
SHOWN = [
    "words",
    "sections",
    "subsections",
    "titles_on_question",
    "generic_titles",
    "fragments",
    "topic_precision",
    "era_coverage",
    "distinct_docs",
    "support_ge_half",
    "unsupported_numbers",
    "unsupported_names",
    "copied_share",
    "duplicate_sentences",
    "unwritten",
]


def questions(path: Path, ids: list[str] | None) -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if ids is None:
        return rows
    by_id = {row["id"]: row for row in rows}
    missing = [qid for qid in ids if qid not in by_id]
    if missing:
        raise SystemExit(f"not in {path}: {', '.join(missing)}")
    return [by_id[qid] for qid in ids]


def write_report(question: str, policy: str, args: argparse.Namespace, report_json: Path) -> dict[str, Any]:
    """One run through the runner; its timings and counts, and its JSON export at `report_json`."""
    flags = {"research": {"depth": args.depth, "seed": args.seed, "policy": policy}}
    settings = load_settings(flags=flags)
    started = time.perf_counter()
    report = runner.start(question, settings, kb=args.kb)
    seconds = time.perf_counter() - started
    with Runs.open() as runs:
        steps = runs.steps(report.run_id)
        export(runs.report_document(report.run_id), "json", report_json)
    manifest = report.manifest
    return {
        "run_id": report.run_id,
        "minutes": round(seconds / 60, 2),
        "actions": manifest["steps"],
        "refused": sum(not step.valid for step in steps),
        "calls": len(steps),
        "attached": manifest["report"].get("citations_attached", {}).get("sections", 0),
        "stop_reason": manifest["report"]["stop_reason"],
    }


def score(args: argparse.Namespace, reports: dict[str, Path]) -> dict[str, dict[str, Any]]:
    """The scorer's line for each report, by the key used in `reports` (QID or QID@policy)."""
    keys = list(reports)
    pairs = [f"{key.split('@')[0]}={reports[key]}" for key in keys]
    completed = subprocess.run(
        [sys.executable, str(args.scorer), str(args.questions), str(args.corpus), *pairs],
        check=True,
        capture_output=True,
        text=True,
    )
    lines = [json.loads(line) for line in completed.stdout.splitlines() if line.strip()]
    return dict(zip(keys, lines, strict=True))


def median(values: list[Any]) -> Any:
    numbers = [v for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
    if not numbers:
        return "-"
    return round(statistics.median(numbers), 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("questions", type=Path)
    parser.add_argument("corpus", type=Path)
    parser.add_argument("--scorer", type=Path, required=True)
    parser.add_argument("--ids", default=None, help="comma-separated question ids (default: all)")
    parser.add_argument("--policy", default="warp", help="comma-separated: warp, plan-write, single-pass")
    parser.add_argument("--kb", default="demo")
    parser.add_argument("--depth", default="quick")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("quality-runs"))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    args.out.mkdir(parents=True, exist_ok=True)
    chosen = questions(args.questions, args.ids.split(",") if args.ids else None)
    policies = args.policy.split(",")
    runs_file = args.out / "runs.jsonl"
    done = {}
    if runs_file.exists():
        for line in runs_file.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            done[row["key"]] = row
    reports: dict[str, Path] = {}
    for policy in policies:
        for question in chosen:
            key = f"{question['id']}@{policy}"
            report_json = args.out / f"{question['id']}.{policy}.json"
            reports[key] = report_json
            if key in done and report_json.exists():
                continue
            row = {"key": key, **write_report(question["question"], policy, args, report_json)}
            done[key] = row
            with runs_file.open("a", encoding="utf-8") as sink:
                sink.write(json.dumps(row) + "\n")
            print(f"{key}: {row['minutes']} min, {row['actions']} actions", file=sys.stderr, flush=True)

    scores = score(args, reports)
    table = {key: {**done[key], **scores[key]} for key in reports}
    if args.json:
        print(json.dumps(table, indent=2))
        return
    columns = ["minutes", "actions", "calls", "refused", "attached", *SHOWN]
    print("run\t" + "\t".join(columns))
    for key, row in table.items():
        print(key + "\t" + "\t".join(str(row.get(column, "-")) for column in columns))
    for policy in policies:
        rows = [row for key, row in table.items() if key.endswith("@" + policy)]
        print(f"median {policy}\t" + "\t".join(str(median([r.get(c) for r in rows])) for c in columns))


if __name__ == "__main__":
    main()
