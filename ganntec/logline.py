"""One log line per write(2). The supervisor and its children (engine workers, edges, history)
share stdout; a pipe keeps each write of up to PIPE_BUF (4096) bytes whole, while print() may
split a line into several writes and let another process's line land inside it (two edge
processes starting together did)."""

from __future__ import annotations

import io
import os
import sys


def say(msg: str, prefix: str = "ganntec: ", stream=None) -> None:
    stream = stream or sys.stdout
    line = f"{prefix}{msg}\n"
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
