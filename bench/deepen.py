"""`deepdraft deepen` on a finished quick report's weakest section: how long it takes, and what it
does to the report's judge-free proxies.

For each question, a quick report is written with the configured model (the embedded one by
default) — or an existing run is taken from a `bench/quality.py --out DIR` folder (`--from DIR`,
its `runs.jsonl`) — and exported as JSON ("before"). Its weakest section is deepened through the
same runner call the CLI makes, timed from the call to the new version (model load, the
extend-plan step, research and writing of the new subsections, and the finishing passes
included), exported again ("after"), and both exports are scored by a scorer such as
`shared/quality/score.py`. Printed: per question the section, minutes, actions and each proxy
before → after; then the median minutes.

The weakest section is chosen by rule, not by a model, so that every run of the bench deepens the
same node: among the nodes `deepen` accepts (not yet split, above the deepest level), the one
with the fewest words written, ties broken by fewer cited sources, then by outline order.

Deepening changes the run (a new report version), so a run taken with `--from` is deepened once:
its "after" export is kept in --out and a second invocation only scores again.

Usage:
  python bench/deepen.py QUESTIONS.jsonl CORPUS.jsonl --scorer score.py --ids dev-01,dev-05,dev-09
      [--from QUALITY_OUT_DIR] [--kb demo] [--depth quick] [--seed 1] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from deepdraft.config import load_settings
from deepdraft.core.outline import MAX_DEPTH
from deepdraft.export import export
from deepdraft.policy.sections import SectionCommand
from deepdraft.run import runner
from deepdraft.run.runs import Runs

# bench/ is on sys.path when this file runs as a script: reuse the quality bench's run and scoring.
from quality import SHOWN, questions, score, write_report


def weakest_section(report: dict[str, Any]) -> dict[str, Any]:
    """The exported node `deepen` will split: the thinnest of those it accepts (see the module text)."""
    candidates: list[tuple[int, int, int, dict[str, Any]]] = []

    def walk(nodes: list[dict[str, Any]]) -> None:
        for node in nodes:
            if node["children"]:
                walk(node["children"])
            elif node["level"] < MAX_DEPTH and node["status"] == "written":
                words = len((node["markdown"] or "").split())
                sources = {ref for sentence in node["sentences"] for ref in sentence["references"]}
                candidates.append((words, len(sources), len(candidates), node))

    walk(report["outline"])
    if not candidates:
        raise SystemExit(f"run {report['run_id']}: no section can be deepened")
    return min(candidates, key=lambda entry: entry[:3])[3]


def export_current(run_id: str, path: Path) -> dict[str, Any]:
    with Runs.open() as runs:
        export(runs.report_document(run_id), "json", path)
    loaded: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return loaded


def deepen(run_id: str, section: str) -> dict[str, Any]:
    """Deepen `section` of `run_id` as `deepdraft deepen RUN SECTION` does; its timing and counts."""
    with Runs.open() as runs:
        steps_before = len(runs.steps(run_id))
    started = time.perf_counter()
    report = runner.run_command(run_id, SectionCommand("deepen", section), load_settings())
    seconds = time.perf_counter() - started
    with Runs.open() as runs:
        steps = runs.steps(run_id)[steps_before:]
    return {
        "minutes": round(seconds / 60, 2),
        "calls": len(steps),
        "refused": sum(not step.valid for step in steps),
        "stop_reason": report.manifest["report"]["stop_reason"],
    }


def earlier_runs(folder: Path) -> dict[str, str]:
    """Question id → run id, from a quality bench's `runs.jsonl` (its WARP runs)."""
    rows = [json.loads(line) for line in (folder / "runs.jsonl").read_text(encoding="utf-8").splitlines()]
    return {row["key"].split("@")[0]: row["run_id"] for row in rows if row["key"].endswith("@warp")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("questions", type=Path)
    parser.add_argument("corpus", type=Path)
    parser.add_argument("--scorer", type=Path, required=True)
    parser.add_argument("--ids", default=None, help="comma-separated question ids (default: all)")
    parser.add_argument("--from", dest="earlier", type=Path, default=None, help="a quality bench's --out")
    parser.add_argument("--kb", default="demo")
    parser.add_argument("--depth", default="quick")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("deepen-runs"))
    args = parser.parse_args()
    args.policy = "warp"

    args.out.mkdir(parents=True, exist_ok=True)
    chosen = questions(args.questions, args.ids.split(",") if args.ids else None)
    known = earlier_runs(args.earlier) if args.earlier else {}
    runs_file = args.out / "deepened.jsonl"
    done = {}
    if runs_file.exists():
        for line in runs_file.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            done[row["id"]] = row

    reports: dict[str, Path] = {}
    for question in chosen:
        qid = question["id"]
        before, after = args.out / f"{qid}.before.json", args.out / f"{qid}.after.json"
        reports[f"{qid}@before"], reports[f"{qid}@after"] = before, after
        if qid in done and after.exists():
            continue
        if qid in known:
            run_id = known[qid]
        else:
            run_id = write_report(question["question"], "warp", args, before)["run_id"]
        node = weakest_section(export_current(run_id, before))
        row = {"id": qid, "run_id": run_id, "section": node["number"], "title": node["title"]}
        row.update(deepen(run_id, node["number"]))
        export_current(run_id, after)
        done[qid] = row
        with runs_file.open("a", encoding="utf-8") as sink:
            sink.write(json.dumps(row) + "\n")
        print(f"{qid}: deepened {row['section']} in {row['minutes']} min", file=sys.stderr, flush=True)

    scores = score(args, reports)
    print("question\tsection\tminutes\tcalls\trefused\t" + "\t".join(SHOWN))
    for question in chosen:
        qid = question["id"]
        row, old, new = done[qid], scores[f"{qid}@before"], scores[f"{qid}@after"]
        changes = [f"{old.get(field, '-')} → {new.get(field, '-')}" for field in SHOWN]
        print(
            f"{qid}\t{row['section']}\t{row['minutes']}\t{row['calls']}\t{row['refused']}\t"
            + "\t".join(changes)
        )
    minutes = [done[question["id"]]["minutes"] for question in chosen]
    print(f"median minutes\t{statistics.median(minutes)}\t(max {max(minutes)}, of {len(minutes)})")


if __name__ == "__main__":
    main()
