"""Shared pieces of the training tests: a forced-deepening teacher, a scripted judge, a small KB."""

from __future__ import annotations

import json
import re
from pathlib import Path

from deepdraft.ports import ChatRequest
from tests.support.scenario import ScenarioModel, _reply, classify, outline_positions

DATA = Path(__file__).parent.parent / "data" / "train"

KB_TEXTS = {
    "japan-ageing.md": "# Ageing in Japan\n\nJapan's elderly population will keep rising until about 2040; "
    "people over 65 hold most household savings and spend on health care, food and travel.",
    "elderly-consumption.md": "# Elderly consumption\n\nConsumption potential of older people: clothing, "
    "food, housing and transport markets adapt to an ageing population in Japan.",
    "investors.md": "# Value investors\n\nWarren Buffett and Charlie Munger buy wonderful businesses at fair "
    "prices; Duan Yongping follows the same investment philosophy of long holding periods.",
    "sovereign-funds.md": "# Sovereign wealth funds\n\nThe wealthiest governments invest through sovereign "
    "wealth funds in equities, bonds, real estate and infrastructure across the world.",
    "history.md": "# History of research\n\nHistory shows how research on ageing, investment and government "
    "funds developed; each section of a report builds on this history.",
}


def write_kb(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in KB_TEXTS.items():
        (folder / name).write_text(text + "\n", encoding="utf-8")
    return folder


class ForcedTeacher(ScenarioModel):
    """The scripted WARP teacher; told it may not stop yet, it splits the first free section."""

    def __call__(self, request: ChatRequest) -> str:
        prompt = request.messages[-1].content
        kind, _ = classify(request)
        if kind == "extend-plan" and "do not stop yet" in prompt:
            positions = outline_positions(prompt)
            top = [p for p in positions if "." not in p]
            free = [p for p in top if not any(q.startswith(p + ".") for q in positions)]
            subsections = [
                {"title": f"Forced {i} of {free[0]}", "plan": f"Deeper, point {i}."} for i in (1, 2)
            ]
            return _reply(
                "forced",
                {"name": "extend-plan", "position": f"section-{free[0]}", "subsections": subsections},
            )
        return super().__call__(request)


def written_parts(report: str) -> int:
    return report.count("This part (")


def scripted_judge(best_parts: int = 7):
    """Judge replies: a report scores highest with `best_parts` written parts; rubrics give 4/5."""

    def respond(request: ChatRequest) -> str:
        prompt = request.messages[-1].content
        if "Score the research report below" in prompt:
            criteria = len(re.findall(r"^\d+\. \[", prompt, flags=re.MULTILINE))
            parts = written_parts(prompt)
            score = max(0, 10 - abs(parts - best_parts))
            return json.dumps({"scores": [{"id": n, "score": score} for n in range(1, criteria + 1)]})
        if '"guidance"' in prompt:
            return json.dumps(
                {"major_errors": [], "minor_errors": ["x"], "guidance": 5, "hierarchy": 4, "coherence": 3}
            )
        if '"relevance"' in prompt:
            return json.dumps(
                {
                    "major_errors": [],
                    "minor_errors": [],
                    "relevance": 5,
                    "coverage": 4,
                    "depth": 3,
                    "novelty": 2,
                }
            )
        if '"claims"' in prompt:
            return json.dumps(
                {"claims": [{"claim": "a", "supported": True}, {"claim": "b", "supported": False}]}
            )
        raise AssertionError(prompt[:200])

    return respond
