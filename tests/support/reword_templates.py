"""Reword every prompt template, run pytest, put the templates back: which tests read the wording?

Fakes and tests should recognise a request by its structure (its reply shape, see
request_kinds.py) and read only the prompt's data, so that rewording a template breaks only the
tests about that template (tests/test_prompts.py, the golden request sequences, the prompt-token
bench). This script checks that claim: it rewrites the instruction prose of each
`src/deepdraft/protocol/prompts/*.jinja` — headings, sentences, the role line — while keeping what
is protocol or data: the `{{ placeholders }}` and `{% tags %}`, the answer-format example lines
(`<thought>…`, `<action>…`, JSON), citation keys and `\\cite{…}` forms. Then it runs pytest with the
given arguments and restores the templates byte for byte, whatever happens.

    python -m tests.support.reword_templates -- tests/test_verify.py -q -m "not slow"
    python -m tests.support.reword_templates --show       # print the reworded templates only
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

TEMPLATES = Path(__file__).resolve().parents[2] / "src" / "deepdraft" / "protocol" / "prompts"

# Whole words swapped in prose (outside placeholders, tags and examples); case follows the original.
SWAPS = {
    "report": "write-up",
    "request": "query",
    "passages": "excerpts",
    "passage": "excerpt",
    "evidence": "material",
    "claims": "assertions",
    "claim": "assertion",
    "write": "compose",
    "answer": "respond",
    "section": "chapter",
    "sections": "chapters",
    "between": "from",
    "only": "solely",
    "each": "every",
    "team": "group",
    "user": "client",
    "previous": "last",
    "rejected": "turned down",
    "used": "accepted",
    "format": "layout",
}
_PROTECTED = re.compile(r"\{\{.*?\}\}|\{%.*?%\}|\\cite\{[^}]*\}|textid\d+|<[^>]*>")
_WORD = re.compile(r"[A-Za-z]+")


def _swap(word: re.Match[str]) -> str:
    text = word.group()
    new = SWAPS.get(text.lower())
    if new is None:
        return text
    return new.capitalize() if text[0].isupper() else new


def _reword_prose(text: str) -> str:
    """Swap words in `text`, leaving placeholders, tags, citations and angle-bracket spans alone."""
    out, last = [], 0
    for kept in _PROTECTED.finditer(text):
        out.append(_WORD.sub(_swap, text[last : kept.start()]))
        out.append(kept.group())
        last = kept.end()
    out.append(_WORD.sub(_swap, text[last:]))
    return "".join(out)


def _is_example(line: str) -> bool:
    """Answer-format lines show the protocol's exact form: they stay as they are."""
    body = re.sub(r"^\{%.*?%\}", "", line).lstrip()
    return body.startswith(("<thought>", "<action>", "{", '"')) or "</action>" in body


def reword(template: str) -> str:
    lines = []
    for line in template.split("\n"):
        if not line.strip() or _is_example(line) or re.fullmatch(r"\s*\{%.*?%\}\s*", line):
            lines.append(line)
        elif line.startswith("## "):
            lines.append("## In short — " + _reword_prose(line[3:]))
        else:
            prefix = re.match(r"^(\{%.*?%\})*", line).group()  # type: ignore[union-attr]
            rest = line[len(prefix) :]
            lead = "Please note: " if rest[:1].isalpha() else ""
            lines.append(prefix + lead + _reword_prose(rest))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--show", action="store_true", help="print the reworded templates, run nothing")
    parser.add_argument("pytest_args", nargs="*", help="arguments for pytest (after --)")
    args = parser.parse_args(argv)
    originals = {path: path.read_bytes() for path in sorted(TEMPLATES.glob("*.jinja"))}
    reworded = {path: reword(data.decode("utf-8")) for path, data in originals.items()}
    if args.show:
        for path, text in reworded.items():
            print(f"===== {path.name}\n{text}")
        return 0
    try:
        for path, text in reworded.items():
            path.write_text(text, encoding="utf-8")
        return subprocess.run([sys.executable, "-m", "pytest", *args.pytest_args], check=False).returncode
    finally:
        for path, data in originals.items():
            path.write_bytes(data)


if __name__ == "__main__":
    sys.exit(main())
