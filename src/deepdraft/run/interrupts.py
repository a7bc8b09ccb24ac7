"""Ctrl-C during a run: it stops the run resumably, and it is never lost.

Python turns SIGINT into a KeyboardInterrupt raised wherever the main thread is at that instant.
Usually that is inside an LLM call, and the run stops there. But it can also land where the
exception cannot get out: in a finalizer (an object's ``__del__``, or a generator the garbage
collector closes — the HTTP stack has both), where Python can only print "Exception ignored" and
carry on; or in a library that catches everything. The run would then go on as if the key had
never been pressed, and finish.

So, for the length of a run, `ctrl_c_recorded` installs a SIGINT handler that does two things: it
raises KeyboardInterrupt at once, as Python's own handler does, and it records that Ctrl-C was
pressed. The runner looks at the record before every action and before writing the report, and
stops there if the exception got lost: a run stops no later than before its next action, marked
interrupted, resumable. A second Ctrl-C raises again at once, wherever the run is.

The handler is installed only in the main thread (the only one Python delivers signals to) and
only over Python's default handler. A run in a server's worker thread is stopped with its `cancel`
event instead; a program that installed its own handler keeps it; and a process started with
SIGINT ignored — a background job of a shell script, which must survive a Ctrl-C meant for the
foreground — keeps ignoring it, as every program does.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

__all__ = ["ctrl_c_recorded"]


@contextmanager
def ctrl_c_recorded() -> Iterator[threading.Event]:
    """An event set by every Ctrl-C while inside; each Ctrl-C also raises KeyboardInterrupt.

    Where the handler cannot or must not be replaced (see the module docstring) the event is
    never set and SIGINT keeps whatever handling it had.
    """
    pressed = threading.Event()
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    ):
        yield pressed
        return

    def on_ctrl_c(signum: int, frame: FrameType | None) -> None:
        pressed.set()
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, on_ctrl_c)
    try:
        yield pressed
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
