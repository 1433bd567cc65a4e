"""Progress of long operations, for a person at a terminal.

The first start of the embedded PostgreSQL (initdb) takes seconds with no output of
its own; so do migrations and benchmark steps. At a terminal `step` shows what is
going on with a ticking clock and ends the line with how long it took; elsewhere (a
pipe, a log file) it writes the one plain line it always wrote and nothing that
redraws, so logs stay clean.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Iterator
from typing import TextIO

from pgrealtime.util.logs import is_terminal

TICK_SECONDS = 0.5
_CLEAR_LINE = "\r\x1b[K"


@contextlib.contextmanager
def step(what: str, stream: TextIO | None = None) -> Iterator[None]:
    """`what …  3 s` redrawn while the block runs, then `what … done in 3.2 s` (or
    `failed after`) at a terminal; elsewhere just `what` before the block."""
    stream = sys.stderr if stream is None else stream
    if not is_terminal(stream):
        print(what, file=stream, flush=True)
        yield
        return
    started = time.monotonic()
    finished = threading.Event()

    def tick() -> None:
        while not finished.wait(TICK_SECONDS):
            elapsed = time.monotonic() - started
            stream.write(f"{_CLEAR_LINE}{what} …  {elapsed:.0f} s")
            stream.flush()

    stream.write(f"{what} …")
    stream.flush()
    ticker = threading.Thread(target=tick, name="progress", daemon=True)
    ticker.start()
    outcome = "failed after"
    try:
        yield
        outcome = "done in"
    finally:
        finished.set()
        ticker.join()
        elapsed = time.monotonic() - started
        stream.write(f"{_CLEAR_LINE}{what} … {outcome} {elapsed:.1f} s\n")
        stream.flush()


def note(text: str, stream: TextIO | None = None) -> None:
    """One line of progress, at a terminal only (a long run's steps)."""
    stream = sys.stderr if stream is None else stream
    if is_terminal(stream):
        print(text, file=stream, flush=True)
