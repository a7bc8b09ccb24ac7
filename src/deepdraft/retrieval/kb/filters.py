"""Document filters: glob patterns tested against a document's id and location.

Used by `--only`/`--exclude` at search time and by `kb remove`. Globs are compiled to regexes here
(not `fnmatch`) so that `*` stays within one path segment while `**` crosses them.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable


def glob_regex(pattern: str) -> re.Pattern[str]:
    """A glob as a regex: `*` and `?` stay within one path segment, `**` crosses them, ``[...]`` sets."""
    out: list[str] = []
    i, size = 0, len(pattern)
    while i < size:
        char = pattern[i]
        if pattern.startswith("**", i):
            i += 2
            if pattern.startswith("/", i):  # "**/" also matches no folder at all
                out.append("(?:.*/)?")
                i += 1
            else:
                out.append(".*")
            continue
        if char == "*":
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif char == "[" and (close := pattern.find("]", i + 2)) > 0:
            body = pattern[i + 1 : close]
            negate = body.startswith("!")
            members = (body[1:] if negate else body).replace("\\", "\\\\").replace("^", "\\^")
            out.append("[" + ("^" if negate else "") + members + "]")
            i = close
        else:
            out.append(re.escape(char))
        i += 1
    return re.compile("".join(out) + r"\Z", re.DOTALL)


class DocumentMatcher:
    """Tests a document (its id and location) against glob patterns.

    A pattern matches the whole id or location; a pattern without ``/`` also matches the last path
    segment, so ``*.pdf`` finds every PDF wherever it lives (as in .gitignore). ``~`` is expanded.
    """

    def __init__(self, patterns: Iterable[str]) -> None:
        self.patterns = [os.path.expanduser(p) for p in patterns if p]
        self._anchored = [glob_regex(p) for p in self.patterns]
        self._basename = [glob_regex(p) for p in self.patterns if "/" not in p]

    def __bool__(self) -> bool:
        return bool(self.patterns)

    def matches(self, doc_id: str, location: str) -> bool:
        for value in (doc_id, location):
            if any(regex.match(value) for regex in self._anchored):
                return True
            name = value.rstrip("/").rsplit("/", 1)[-1]
            if any(regex.match(name) for regex in self._basename):
                return True
        return False
