"""`research --review-outline` in a terminal: show the first outline, offer to edit it in $EDITOR.

The live progress display is paused while the user decides, and resumed after. Without a terminal
(a pipe, CI) there is nobody to ask, so the outline is kept as proposed and a line says so.
"""

from __future__ import annotations

import sys

import click
import typer
from rich.console import Console

from deepdraft.cli.progress import Progress, outline_tree
from deepdraft.core.outline import Outline
from deepdraft.policy.review import edit_in_form
from deepdraft.policy.warp import ReviewOutline


def terminal_review(console: Console, question: str, progress: Progress) -> ReviewOutline:
    """The plan-review hook for the CLI."""

    def review(outline: Outline) -> Outline | None:
        if not sys.stdin.isatty():
            console.print("plan review: no terminal to ask in; keeping the proposed outline")
            return None
        live = progress.live
        if live is not None:
            live.stop()
        try:
            console.print(outline_tree(outline))
            for position, node in enumerate(outline.sections, start=1):
                console.print(f"  {position}. {node.title}: {node.plan}", markup=False, highlight=False)
            if not typer.confirm("Edit the outline before writing?", default=False):
                return None
            return edit_in_form(
                question,
                outline,
                edit=lambda text: click.edit(text, extension=".txt", require_save=True),
                complain=lambda reason: typer.confirm(f"{reason}. Edit again?", default=True),
            )
        finally:
            if live is not None:
                live.start()

    return review
