"""Logs and progress as a person sees them at a terminal (a real pseudo-terminal) and
as a log collector sees them through a pipe."""

from __future__ import annotations

import os
import pty
import re
import subprocess
import sys
import textwrap

import orjson
import pytest

pytestmark = pytest.mark.pure

LOGGING = textwrap.dedent(
    """
    import logging, sys
    from pgrealtime.util.logs import setup_logging
    setup_logging(sys.argv[1], sys.argv[2])
    log = logging.getLogger("pgrealtime.webhooks.worker")
    log.debug("not shown at info")
    log.info("listener reconnected")
    log.warning("webhook attempt failed", extra={"host": "example.com", "attempt": 2,
                                                  "error": "connection refused"})
    """
)

PROGRESS = textwrap.dedent(
    """
    import time
    from pgrealtime.util.progress import step
    with step("Creating the embedded PostgreSQL"):
        time.sleep(1.2)
    """
)


def at_terminal(code: str, *args: str) -> str:
    """Run `code` with stderr on a pseudo-terminal; what the terminal showed."""
    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-c", code, *args], stderr=slave, stdout=subprocess.DEVNULL
        )
        os.close(slave)
        chunks = []
        while True:
            try:
                data = os.read(master, 4096)
            except OSError:  # EIO: the child closed its side
                break
            if not data:
                break
            chunks.append(data)
        assert proc.wait(timeout=30) == 0
    finally:
        os.close(master)
    return b"".join(chunks).decode()


def through_a_pipe(code: str, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    return done.stderr


def test_short_readable_lines_at_a_terminal() -> None:
    shown = at_terminal(LOGGING, "info", "auto")
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", line) for line in shown.splitlines()]
    assert len(lines) == 2, shown
    assert re.fullmatch(r"\d\d:\d\d:\d\d\.\d{3} INFO  listener reconnected", lines[0])
    assert re.fullmatch(
        r"\d\d:\d\d:\d\d\.\d{3} WARN  webhook attempt failed  logger=pgrealtime\.webhooks"
        r'\.worker host=example\.com attempt=2 error="connection refused"',
        lines[1],
    ), lines[1]
    assert "\x1b[33m" in shown  # the warning stands out


def test_json_lines_when_not_a_terminal() -> None:
    lines = through_a_pipe(LOGGING, "info", "auto").splitlines()
    entries = [orjson.loads(line) for line in lines]
    assert [e["msg"] for e in entries] == ["listener reconnected", "webhook attempt failed"]
    assert entries[1]["level"] == "warning" and entries[1]["host"] == "example.com"
    assert entries[1]["attempt"] == 2 and entries[1]["logger"] == "pgrealtime.webhooks.worker"


def test_json_forced_at_a_terminal_and_level() -> None:
    shown = at_terminal(LOGGING, "warning", "json")
    [line] = shown.splitlines()
    assert orjson.loads(line)["msg"] == "webhook attempt failed"


def test_text_forced_through_a_pipe() -> None:
    [line] = through_a_pipe(LOGGING, "warning", "text").splitlines()
    assert "\x1b[" not in line  # no colours where nobody sees them
    assert line.endswith('attempt=2 error="connection refused"')


def test_progress_ticks_at_a_terminal_only() -> None:
    shown = at_terminal(PROGRESS)
    assert "Creating the embedded PostgreSQL …  1 s" in shown  # redrawn while it runs
    assert re.search(r"Creating the embedded PostgreSQL … done in 1\.\d s\r?\n$", shown)
    assert through_a_pipe(PROGRESS) == "Creating the embedded PostgreSQL\n"
