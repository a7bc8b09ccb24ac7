"""Hostile inputs: what deepdraft survives, and the large legitimate inputs it must still read.

Prints, in order:

1. **The hostile suite** (``pytest tests/hostile`` once, its JUnit XML counted per test file; each
   parametrised case is one probe):

   * faults injected / survived — ``tests/hostile/test_llm_faults.py``;
   * bad inputs / handled — ``tests/hostile/test_documents.py``, with the peak RSS and the time of
     the worst probe (from the figures the test writes to ``$DEEPDRAFT_HOSTILE_REPORT``);
   * attacks / blocked — ``tests/hostile/test_attacks.py`` and ``tests/hostile/test_injection.py``.

   A file that does not exist is printed as "not present"; a case that was skipped is not counted.
   The target is every case, with no hostile input above 1 GB of memory (the suite runs each one
   under a 1 GiB address-space limit, so a bigger one fails its case; the worst peak is printed).

2. **Large legitimate inputs**, each added with ``deepdraft kb add`` to a new knowledge base in a
   child process without limits, reaped for its own peak RSS: a 2,000-page PDF, a scanned PDF read by
   OCR page by page (when ``tesseract`` is installed), a large spreadsheet, a million-line JSONL
   corpus and a 19 MB Markdown file on one line. Each must be accepted; time and peak RSS are printed.

The inputs are written to a temporary folder (a few hundred MB for the JSONL) and removed after.
No number is asserted anywhere: ``tests/test_bench.py`` checks the counting on a synthetic report.

    .venv/bin/python bench/hostile.py
    .venv/bin/python bench/hostile.py --skip-large            # the suite's figures only (~1-2 min)
    .venv/bin/python bench/hostile.py --skip-suite --jsonl-lines 100000 --ocr-pages 3
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the repository root, for tests.support

HOSTILE = ROOT / "tests" / "hostile"
FIGURES = (
    # (what is counted, the verb for a passed case, the test files)
    ("faults", "injected", "survived", ("test_llm_faults.py",)),
    ("bad inputs", "", "handled", ("test_documents.py",)),
    ("attacks", "", "blocked", ("test_attacks.py", "test_injection.py")),
)
MEMORY_TARGET_MB = 1024


@dataclass
class Counts:
    """Test cases of one file in a JUnit report: run (not skipped), and passed."""

    cases: int = 0
    passed: int = 0


def count_cases(junit_xml: str) -> dict[str, Counts]:
    """Cases and passed cases per test file name (``test_documents.py``) of a pytest JUnit report."""
    counts: dict[str, Counts] = {}
    for case in ElementTree.fromstring(junit_xml).iter("testcase"):
        # classname is the module's dotted path, then the class if any: tests.hostile.test_x[.TestY]
        module = next(
            (part for part in case.get("classname", "").split(".") if part.startswith("test_")), None
        )
        if module is None:
            continue
        outcomes = {child.tag for child in case}
        if "skipped" in outcomes:
            continue
        entry = counts.setdefault(f"{module}.py", Counts())
        entry.cases += 1
        entry.passed += not outcomes & {"failure", "error"}
    return counts


def suite_figures(counts: Mapping[str, Counts], present: set[str]) -> list[dict[str, Any]]:
    """One line per figure: its counts summed over its files, or "not present" for missing files."""
    rows = []
    for what, total_verb, passed_verb, files in FIGURES:
        found = [name for name in files if name in present]
        missing = [name for name in files if name not in present]
        total = sum(counts.get(name, Counts()).cases for name in found)
        passed = sum(counts.get(name, Counts()).passed for name in found)
        rows.append(
            {
                "figure": what,
                "total_verb": total_verb,
                "passed_verb": passed_verb,
                "files": list(files),
                "missing": missing,
                "cases": total if found else None,
                "passed": passed if found else None,
            }
        )
    return rows


def run_suite(work: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Run tests/hostile once; the figures, and the per-probe rows of the document probes."""
    junit, report = work / "hostile.xml", work / "documents.json"
    env = {**os.environ, "DEEPDRAFT_HOSTILE_REPORT": str(report)}
    command = [sys.executable, "-m", "pytest", str(HOSTILE), "-q", "-p", "no:cacheprovider"]
    command += [f"--junitxml={junit}", "-o", "junit_family=xunit2"]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    if not junit.exists():
        raise SystemExit(
            f"pytest wrote no report (exit {done.returncode}):\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
        )
    present = {path.name for path in HOSTILE.glob("test_*.py")}
    figures = suite_figures(count_cases(junit.read_text(encoding="utf-8")), present)
    probes = json.loads(report.read_text(encoding="utf-8")) if report.exists() else []
    return figures, probes


def print_suite(figures: list[dict[str, Any]], probes: list[dict[str, Any]]) -> None:
    print("The hostile suite (tests/hostile)")
    for row in figures:
        label = f"  {' '.join(filter(None, (row['figure'], row['total_verb'])))} / {row['passed_verb']}:"
        if row["cases"] is None:
            print(f"{label:<34} not present ({', '.join(row['files'])})")
            continue
        note = f"  ({', '.join(row['missing'])} not present)" if row["missing"] else ""
        print(f"{label:<34} {row['cases']} / {row['passed']}{note}")
        if row["figure"] == "bad inputs" and probes:
            worst = max(probes, key=lambda probe: probe["peak_rss_mb"])
            slowest = max(probes, key=lambda probe: probe["seconds"])
            print(
                f"{'':<36}worst peak RSS {worst['peak_rss_mb']:.0f} MB ({worst['channel']} {worst['case']})"
            )
            print(f"{'':<36}longest {slowest['seconds']:.1f} s ({slowest['channel']} {slowest['case']})")
            met = "met" if worst["peak_rss_mb"] < MEMORY_TARGET_MB else "NOT met"
            print(f"{'':<36}no hostile input above {MEMORY_TARGET_MB} MB: {met}")


# -- large legitimate inputs -----------------------------------------------------------------------


def write_long_pdf(folder: Path, pages: int) -> Path:
    from tests.support.documents import write_pdf

    line = "Daily readings of the ablation stakes, snow pits and meltwater gauges continued all summer. "
    return write_pdf(folder / "survey.pdf", [f"Page {n}. " + line * 30 for n in range(1, pages + 1)])


def write_scanned_pdf(folder: Path, pages: int) -> Path:
    """A PDF of `pages` pictures of text (no text layer), as a scanner makes them."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=40)
    images = []
    for number in range(1, pages + 1):
        image = Image.new("L", (1700, 2200), color=255)
        draw = ImageDraw.Draw(image)
        for row in range(20):
            draw.text(
                (120, 150 + 95 * row),
                f"Page {number}, line {row + 1}: the glacier survey notes.",
                fill=0,
                font=font,
            )
        images.append(image)
    path = folder / "scanned.pdf"
    images[0].save(path, format="PDF", resolution=200, save_all=True, append_images=images[1:])
    return path


def write_spreadsheet(folder: Path, rows: int) -> Path:
    import openpyxl

    book = openpyxl.Workbook(write_only=True)
    sheet = book.create_sheet("Readings")
    sheet.append(["station", "date", "depth_cm", "density", "temperature", "notes"])
    stations = [f"S{n:03d}" for n in range(40)]
    rng = random.Random(7)
    for row in range(rows):
        sheet.append(
            [
                rng.choice(stations),
                f"2025-{1 + row % 12:02d}-{1 + row % 28:02d}",
                rng.randint(10, 400),
                round(rng.uniform(0.1, 0.6), 3),
                round(rng.uniform(-30, 5), 1),
                rng.choice(["fresh snow", "wind crust", "depth hoar", "melt layer"]),
            ]
        )
    path = folder / "readings.xlsx"
    book.save(path)
    return path


def write_jsonl(folder: Path, lines: int) -> Path:
    rng = random.Random(11)
    words = [
        "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(3, 9)))
        for _ in range(5000)
    ]
    path = folder / "records.jsonl"
    with path.open("w", encoding="utf-8") as out:
        for number in range(lines):
            text = " ".join(rng.choices(words, k=25)) + "."
            out.write(json.dumps({"id": f"r{number}", "contents": text}) + "\n")
    return path


def write_one_line(folder: Path, megabytes: int) -> Path:
    path = folder / "one-line.md"
    path.write_bytes(b"word " * (megabytes * 1024 * 1024 // 5))
    return path


def large_inputs(work: Path, args: argparse.Namespace) -> list[dict[str, Any]]:
    from tests.support.probes import kb_add

    inputs: list[tuple[str, Callable[[Path], Path]]] = [
        (f"{args.pdf_pages:,}-page PDF", lambda folder: write_long_pdf(folder, args.pdf_pages)),
        (f"{args.sheet_rows:,}-row spreadsheet", lambda folder: write_spreadsheet(folder, args.sheet_rows)),
        (f"{args.jsonl_lines:,}-line JSONL", lambda folder: write_jsonl(folder, args.jsonl_lines)),
        ("19 MB Markdown on one line", lambda folder: write_one_line(folder, 19)),
    ]
    if shutil.which("tesseract"):
        inputs.insert(
            1, (f"{args.ocr_pages}-page scanned PDF (OCR)", lambda f: write_scanned_pdf(f, args.ocr_pages))
        )
    else:
        print("  (no tesseract on PATH: the scanned PDF is skipped)")
    rows = []
    for number, (name, write) in enumerate(inputs):
        folder = work / f"large-{number}"
        folder.mkdir()
        started = time.monotonic()
        path = write(folder)
        written_s = time.monotonic() - started
        probe = kb_add(name, path, folder / "home", limited=False, wall_s=args.wall_s)
        row = {
            **{key: value for key, value in asdict(probe).items() if key not in ("log", "channel")},
            "size_mb": round(path.stat().st_size / 1024 / 1024, 1),
            "written_s": round(written_s, 1),
        }
        rows.append(row)
        reason = f"  {probe.messages[0]}" if probe.messages else ""
        print(
            f"  {name:<34} {row['size_mb']:>7.1f} MB  {probe.outcome:<9} {probe.seconds:>7.1f} s  "
            f"peak RSS {probe.peak_rss_mb:>6.0f} MB{reason}",
            flush=True,
        )
        shutil.rmtree(folder)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--skip-suite", action="store_true", help="do not run tests/hostile")
    parser.add_argument("--skip-large", action="store_true", help="do not add the large legitimate inputs")
    parser.add_argument("--pdf-pages", type=int, default=2000)
    parser.add_argument("--ocr-pages", type=int, default=10)
    parser.add_argument("--sheet-rows", type=int, default=100_000)
    parser.add_argument("--jsonl-lines", type=int, default=1_000_000)
    parser.add_argument("--wall-s", type=float, default=3600.0, help="seconds one large input may take")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the text")
    args = parser.parse_args()
    summary: dict[str, Any] = {}
    quiet = args.json
    stdout = sys.stdout
    with tempfile.TemporaryDirectory(prefix="deepdraft-hostile-") as temporary:
        work = Path(temporary)
        if quiet:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - the text goes nowhere; the JSON is printed last
        try:
            if not args.skip_suite:
                figures, probes = run_suite(work)
                summary["suite"] = figures
                summary["document_probes"] = probes
                print_suite(figures, probes)
            if not args.skip_large:
                print("Large legitimate inputs (kb add, no limits)")
                summary["large"] = large_inputs(work, args)
        finally:
            if quiet:
                sys.stdout.close()
                sys.stdout = stdout
    if quiet:
        print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
