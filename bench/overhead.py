"""deepdraft's own overhead: a complete WARP run with a zero-latency LLM over a 100k-passage corpus.

What is measured
    A synthetic corpus of N passages (default 100,000, deterministic pseudo-text) is written as a
    JSONL file and added to a real knowledge base (`retrieval.kb`, BM25 only, as `kb add` builds it).
    Then one complete research run goes through the real runner — journal in SQLite, LLM cache,
    checkpoints, events, report — with a model that answers instantly from the prompt (the paper's
    average report shape: 7 sections, 9 deepening steps, about 40 written nodes). Since the model
    costs nothing, the wall time is deepdraft's own overhead per report, and the profile says where
    it goes.

    Where the time goes: a first run times each component — the functions named in `COMPONENTS`
    are wrapped with a timer. A component's time is its own: time spent in another component it
    calls counts there, so the rows add up, and "unaccounted" is the rest of the run's wall time
    (the glue between components). The timers cost a few microseconds per call, so a second,
    untimed run gives the headline wall time. `--cprofile N` profiles a third run with cProfile
    and prints its N most expensive functions, for digging further.

Usage: python bench/overhead.py [--passages 100000] [--json] [--cprofile N]
"""

from __future__ import annotations

import argparse
import cProfile
import importlib
import json
import os
import pstats
import random
import resource
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from deepdraft.llm.scripted import FunctionLLM
from deepdraft.policy.finishing.synthesis import LENGTH_BOUNDS
from deepdraft.ports import ChatRequest
from deepdraft.retrieval.kb.store import KnowledgeBase
from deepdraft.run import runner
from deepdraft.settings import Settings

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, for tests.support
from tests.support.request_kinds import evidence_keys, outline_positions, recognise
from tests.support.scenario import listed_keys

TOPICS = ["tariffs", "debt", "immigration", "war", "banking", "railroads", "labor", "currency"]
WORDS = [f"w{i}" for i in range(5000)]


def write_corpus(path: Path, passages: int) -> None:
    rng = random.Random(7)
    with path.open("w", encoding="utf-8") as out:
        for i in range(passages):
            words = rng.choices(WORDS, k=110) + rng.choices(TOPICS, k=10)
            rng.shuffle(words)
            record = {"id": f"p{i}", "title": f"Passage {i}", "contents": " ".join(words)}
            out.write(json.dumps(record) + "\n")


class PaperShapedModel:
    """Instant, valid replies: 7 sections, then 9 splits (level 1 first, then level 2), then nop."""

    sections = 7
    expansions = 9

    def __call__(self, request: ChatRequest) -> str:
        # The kind comes from the request's reply shape, never from the prompt's wording.
        prompt = request.messages[-1].content
        recognised = recognise(request)
        kind = recognised.kind
        if kind == "search":
            topic = TOPICS[len(prompt) % len(TOPICS)]
            return _act({"name": "search", "keywords": [topic, f"{topic} w{len(prompt) % 5000}"]})
        if kind == "init-plan":
            sections = [
                {"title": f"Section {i}", "plan": f"Cover {TOPICS[i % 8]}."} for i in range(self.sections)
            ]
            return _act({"name": "init-plan", "title": "A synthetic report", "sections": sections})
        if kind == "verify":  # verification: all backed
            verdicts = [{"claim": n, "supported": "yes"} for n in range(1, recognised.count + 1)]
            return json.dumps({"verdicts": verdicts})
        if kind == "repair":  # a sentence to repair: drop it (random words back nothing)
            return "<thought>the passages do not say this</thought><action></action>"
        if kind in ("summary", "conclusion"):  # synthesis: the shortest allowed text, citing a listed key
            keys = listed_keys(prompt)
            rng = random.Random(len(prompt))
            body = f"{' '.join(rng.choices(WORDS, k=LENGTH_BOUNDS[kind][0]))} \\cite{{{keys[0]}}}."
            return f"<thought>summing up</thought><action>{body}</action>"
        if kind == "write":
            keys = evidence_keys(prompt)
            rng = random.Random(len(prompt))
            body = " ".join(f"{' '.join(rng.choices(WORDS, k=30))} \\cite{{{key}}}." for key in keys[:6])
            return f"<thought>{recognised.target}</thought><action>{body}</action>"
        assert kind == "extend-plan", kind
        positions = outline_positions(prompt)
        done = sum(1 for p in positions if any(q.startswith(p + ".") for q in positions) and p.count(".") < 2)
        if done >= self.expansions:
            return _act({"name": "nop"})
        splittable = [
            p for p in positions if p.count(".") < 2 and not any(q.startswith(p + ".") for q in positions)
        ]
        # Split level-1 nodes first, then level-2 ones, so the outline reaches three levels.
        splittable.sort(key=lambda p: (p.count(".") if done < self.sections else -p.count("."), p))
        children = [{"title": f"Part {i}", "plan": "Go deeper."} for i in range(1, 5 if done % 2 else 4)]
        return _act({"name": "extend-plan", "position": f"section-{splittable[0]}", "subsections": children})


def _act(action: dict[str, Any]) -> str:
    return f"<thought>next</thought><action>{json.dumps(action)}</action>"


# Component → the functions whose own time it is ("module:function" or "module:Class.method").
COMPONENTS: dict[str, tuple[str, ...]] = {
    "retrieval (KB search)": ("deepdraft.retrieval.kb.store:KnowledgeBase.search",),
    "prompt fitting: condensed drafts": ("deepdraft.core.outline:Outline.condensed_view",),
    "prompt fitting: the rest": ("deepdraft.policy.warp:WarpPolicy._fit",),
    "reply parsing + validation": tuple(
        f"deepdraft.protocol.action_replies:read_{kind}" for kind in ("search", "plan", "write", "extend")
    ),
    "policy loop: the rest": ("deepdraft.policy.warp:WarpPolicy.run",),
    "LLM cache lookups": ("deepdraft.llm.cache:CachingLLM.complete",),
    "model replies (fake; counts tokens)": ("deepdraft.llm.scripted:FunctionLLM.complete",),
    "state snapshots": ("deepdraft.core.state:RunState.snapshot",),
    "checkpoint changes (verification)": (
        "deepdraft.policy.finishing.checkpoints:PassCheckpoints.checkpoint",
    ),
    "checkpoint encoding (JSON + zlib)": ("deepdraft.store.checkpoints:encode_state",),
    "journal writes (SQLite)": tuple(
        f"deepdraft.store.journal:Journal.{name}"
        for name in ("record_step", "append_event", "update_run", "create_run")
    ),
    "journal opening": ("deepdraft.run.runner:open_journal",),
    "verification: re-citing": ("deepdraft.policy.finishing.verify:Verifier._recite",),
    "verification: the rest": ("deepdraft.policy.finishing.verify:Verifier.run",),
    "synthesis": ("deepdraft.policy.finishing.synthesis:Synthesizer.run",),
    "report: journal reads": (
        "deepdraft.store.journal:Journal.steps",
        "deepdraft.store.journal:Journal.events",
    ),
    "report: manifest": ("deepdraft.run.manifest:build_manifest",),
    "report: rendering + exports": ("deepdraft.export:render", "deepdraft.export:export"),
    "report: the rest (manifest.json, files)": ("deepdraft.run.runner:_write_report",),
}


class ComponentTimer:
    """Own time per component: a component's time less the time of the components it calls."""

    def __init__(self) -> None:
        self.seconds = dict.fromkeys(COMPONENTS, 0.0)
        self._inner: list[float] = []  # per open call: time spent in components it called

    def timed(self, name: str, function: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            self._inner.append(0.0)
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                elapsed = time.perf_counter() - started
                self.seconds[name] += elapsed - self._inner.pop()
                if self._inner:
                    self._inner[-1] += elapsed

        return call

    @contextmanager
    def installed(self) -> Iterator[None]:
        """Wrap every function of `COMPONENTS` for the duration (a missing one is an error: the
        table must not quietly lose a component when code moves)."""
        undo: list[tuple[object, str, object]] = []
        try:
            for name, targets in COMPONENTS.items():
                for target in targets:
                    module_name, _, path = target.partition(":")
                    owner: object = importlib.import_module(module_name)
                    *owners, attribute = path.split(".")
                    for part in owners:
                        owner = getattr(owner, part)
                    original = vars(owner)[attribute]
                    undo.append((owner, attribute, original))
                    setattr(owner, attribute, self.timed(name, original))
            yield
        finally:
            for owner, attribute, original in reversed(undo):
                setattr(owner, attribute, original)


def one_run(kb_path: Path, home: Path, question: str) -> tuple[runner.Report, float]:
    os.environ["DEEPDRAFT_HOME"] = str(home)
    with KnowledgeBase.open(kb_path) as retriever:
        started = time.perf_counter()
        report = runner.start(question, Settings(), llm=FunctionLLM(PaperShapedModel()), retriever=retriever)
        return report, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--passages", type=int, default=100_000)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--cprofile", type=int, default=0, metavar="N", help="also print cProfile's top N")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        corpus = root / "corpus.jsonl"
        write_corpus(corpus, args.passages)
        started = time.perf_counter()
        with KnowledgeBase.create(root / "kb", Settings().retrieval) as kb:
            kb.add([corpus])
        build_s = time.perf_counter() - started

        question = "How did the arguments about tariffs and the public debt change?"
        timer = ComponentTimer()
        with timer.installed():
            report, timed_s = one_run(root / "kb", root / "home-timed", question)
        report, wall_s = one_run(root / "kb", root / "home", question)
        if args.cprofile:
            profiler = cProfile.Profile()
            profiler.enable()
            one_run(root / "kb", root / "home-profiled", question)
            profiler.disable()

        profile = {name: round(seconds, 3) for name, seconds in timer.seconds.items()}
        profile["unaccounted"] = round(timed_s - sum(timer.seconds.values()), 3)
        summary = {
            "passages": args.passages,
            "index_build_s": round(build_s, 2),
            "run_wall_s": round(wall_s, 3),
            "steps": report.manifest["steps"],
            "nodes": report.manifest["report"]["nodes"],
            "expansions": report.manifest["expansions"],
            "ms_per_step": round(1000 * wall_s / report.manifest["steps"], 2),
            "journal_mb": round((root / "home" / "journal.sqlite").stat().st_size / 1e6, 2),
            "report_words": len(report.markdown.split()),
            "max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "timed_run_s": round(timed_s, 3),
            "profile_s": profile,
        }
    if args.json:
        print(json.dumps(summary, indent=2))
        return
    print(f"corpus: {summary['passages']:,} passages; knowledge base built in {summary['index_build_s']} s")
    print(
        f"one complete WARP run with an instant model: {summary['run_wall_s']} s wall "
        f"({summary['steps']} actions, {summary['nodes']} nodes, {summary['expansions']} expansions; "
        f"{summary['ms_per_step']} ms per action)"
    )
    print(f"journal on disk: {summary['journal_mb']} MB; peak RSS {summary['max_rss_mb']} MB")
    print(f"\nwhere the time goes (own time per component, timed run: {summary['timed_run_s']} s):")
    for name, seconds in summary["profile_s"].items():
        share = 100 * seconds / summary["timed_run_s"]
        print(f"  {name:40s} {seconds:8.3f} s  {share:5.1f} %")
    if args.cprofile:
        print(f"\nthe {args.cprofile} most expensive functions (cProfile, cumulative time):")
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(args.cprofile)


if __name__ == "__main__":
    main()
