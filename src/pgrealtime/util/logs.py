"""Logs: short readable lines at a terminal, one JSON object per line elsewhere.

`--log-format auto` (the default) looks at stderr: a person at a terminal gets
`12:04:31.250 WARN  webhook attempt failed (pending)  host=example.com attempt=2`;
a pipe, a file or journald gets JSON lines, which log collectors parse without rules.
`json` and `text` force one or the other.
"""

from __future__ import annotations

import logging
import socket
import sys
import time
from typing import TextIO

import orjson

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message"}
# Which machine and process wrote a line: with --workers (and several machines) the
# lines of many processes meet in one stream.
_HOST = socket.gethostname()

LOG_FORMATS = ("auto", "json", "text")


def _fields(record: logging.LogRecord) -> dict[str, object]:
    """What the caller passed in `extra=`: the key fields of the line."""
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            "host": _HOST,
            "pid": record.process,
        }
        entry.update(_fields(record))
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


# Short level names, one width; colours only where `color` is on (a terminal).
_LEVELS = {"DEBUG": "DEBUG", "INFO": "INFO ", "WARNING": "WARN ", "ERROR": "ERROR"}
_COLOURS = {"DEBUG": "\x1b[2m", "WARNING": "\x1b[33m", "ERROR": "\x1b[31m", "CRITICAL": "\x1b[31m"}
_RESET = "\x1b[0m"


def _value(value: object) -> str:
    """key=value as a person reads it: bare when it is one plain word, else quoted."""
    text = str(value)
    if text and not any(c.isspace() or c in '"=' for c in text):
        return text
    return orjson.dumps(text).decode()


class TextFormatter(logging.Formatter):
    """`HH:MM:SS.mmm LEVEL message  key=value ...` in local time; the logger's name
    only for warnings and errors (where it says which part to look at)."""

    def __init__(self, color: bool = False) -> None:
        super().__init__()
        self.color = color

    def format(self, record: logging.LogRecord) -> str:
        clock = time.strftime("%H:%M:%S", time.localtime(record.created))
        level = _LEVELS.get(record.levelname, record.levelname[:5])
        if self.color and record.levelname in _COLOURS:
            level = _COLOURS[record.levelname] + level + _RESET
        line = f"{clock}.{int(record.msecs):03d} {level} {record.getMessage()}"
        fields = _fields(record)
        if record.levelno >= logging.WARNING:
            fields = {"logger": record.name, **fields}
        if fields:
            line += "  " + " ".join(f"{k}={_value(v)}" for k, v in fields.items())
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or closed
        return False


def setup_logging(level: str = "info", fmt: str = "auto", stream: TextIO | None = None) -> None:
    """Log to `stream` (stderr): text at a terminal or with fmt='text', else JSON."""
    stream = sys.stderr if stream is None else stream
    handler = logging.StreamHandler(stream)
    terminal = is_terminal(stream)
    if fmt == "text" or (fmt == "auto" and terminal):
        handler.setFormatter(TextFormatter(color=terminal))
    else:
        handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
