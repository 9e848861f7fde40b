"""Log lines: one per write(2), as text for a terminal or as JSON for a log pipeline.

The supervisor and its children (engine workers, edges, history) share stdout; a pipe keeps
each write of up to PIPE_BUF (4096) bytes whole, while print() may split a line into several
writes and let another process's line land inside it (two edge processes starting together did).

Format: `ganntec run --log-format json` (or GANNTEC_LOG_FORMAT=json in the environment, which
the forked processes inherit) writes one JSON object per line:
    {"ts": "2026-12-06T09:10:11.123Z", "level": "info", "component": "edge 1", "pid": 4242,
     "msg": "...", ...fields}
`text` (the default) writes `ganntec: <msg>` (with the component for children's lines).

Error bursts: `Burst` turns a stream of the same failure (the same component, kind and place)
into one line when it starts and one summary line with the count when it recurs after its
window, instead of a line per failing request."""

from __future__ import annotations

import io
import logging
import os
import sys
import time
import traceback
from collections.abc import Callable, Mapping

import orjson

FORMAT_ENV = "GANNTEC_LOG_FORMAT"
FORMATS = ("text", "json")
LEVELS = ("debug", "info", "warning", "error")


def write_line(line: str, stream=None) -> None:
    stream = stream or sys.stdout
    stream.flush()  # whatever this process printed before goes first
    try:
        fd = stream.fileno()
    except (AttributeError, io.UnsupportedOperation):  # not a file (a captured stream): no one shares it
        stream.write(line)
        stream.flush()
        return
    data = line.encode()
    while data:
        data = data[os.write(fd, data):]


def log_format(environ: Mapping[str, str] = os.environ) -> str:
    fmt = environ.get(FORMAT_ENV, "text")
    return fmt if fmt in FORMATS else "text"


class Log:
    """One process's logger: its component ("supervisor", "edge 1", "history", "engines"), the
    format, the stream and the wall clock (only for the line's timestamp)."""

    def __init__(self, component: str = "", fmt: str | None = None, stream=None,
                 clock_ns: Callable[[], int] = time.time_ns, environ: Mapping[str, str] = os.environ):
        self.component, self.stream, self.clock_ns = component, stream, clock_ns
        self.fmt = fmt if fmt is not None else log_format(environ)
        if self.fmt not in FORMATS:
            raise ValueError(f"log format={self.fmt!r} (one of {', '.join(FORMATS)})")

    def line(self, msg: str, level: str = "info", **fields) -> str:
        if self.fmt == "json":
            ns = self.clock_ns()
            ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ns // 1_000_000_000)) + f".{ns // 1_000_000 % 1000:03d}Z"
            return orjson.dumps({"ts": ts, "level": level, "component": self.component or "ganntec",
                                 "pid": os.getpid(), "msg": msg, **fields}, default=str).decode() + "\n"
        # text: as it always was (children's messages name their process themselves; the fields are
        # for machines, the message already says them)
        return f"ganntec: {msg}\n" if level in ("info", "debug") else f"ganntec {self.component}: {msg}\n"

    def say(self, msg: str, level: str = "info", **fields) -> None:
        write_line(self.line(msg, level, **fields), self.stream)

    def error(self, msg: str, **fields) -> None:
        self.say(msg, "error", **fields)


class Handler(logging.Handler):
    """A `logging` handler writing through a Log (aiohttp's and the edge's error reports keep the
    process's format and component)."""

    def __init__(self, log: Log):
        super().__init__()
        self.log = log

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        if record.exc_info:
            msg += "\n" + "".join(traceback.format_exception(*record.exc_info)).rstrip()
        self.log.say(msg, record.levelname.lower(), logger=record.name)


def route_logging(log: Log) -> None:
    """Send the `logging` module's records (warnings and up) through `log` in this process."""
    root = logging.getLogger()
    root.handlers[:] = [Handler(log)]
    root.setLevel(logging.WARNING)


class Burst:
    """One line per burst of the same failure: the first occurrence is logged at once; the ones
    within `window_s` after it are counted; the first one after the window logs how many there
    were and starts the next window. Time is an input (`now_s`)."""

    def __init__(self, log: Callable[..., None], window_s: float = 10.0):
        self.log, self.window_s = log, window_s
        self._open: dict[tuple, tuple[float, int]] = {}  # key -> (window start, repeats since)

    def __call__(self, key: tuple, msg: str, now_s: float, **fields) -> bool:
        """Log `msg` for failure `key` unless its burst is already reported; True if a line went out."""
        opened = self._open.get(key)
        if opened is None:
            self._open[key] = (now_s, 0)
            self.log(msg, "error", **fields)
            return True
        start, repeats = opened
        if now_s - start < self.window_s:
            self._open[key] = (start, repeats + 1)
            return False
        self._open[key] = (now_s, 0)
        if repeats:
            self.log(f"{msg} (and {repeats} more like it in the {now_s - start:.0f} s before)", "error",
                     repeats=repeats, **fields)
        else:
            self.log(msg, "error", **fields)
        return True
