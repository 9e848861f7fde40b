"""Log lines go out whole: one write(2) each, so processes sharing stdout never split a line."""

from __future__ import annotations

import io
import os

from ganntec.logline import say


def test_a_line_is_one_write(tmp_path):
    path = tmp_path / "out"
    with open(path, "w") as f:
        say("x" * 3000, stream=f)
        say("edge 2 listening", stream=f)
    assert path.read_text().splitlines() == ["ganntec: " + "x" * 3000, "ganntec: edge 2 listening"]


def test_forked_writers_never_interleave_lines(tmp_path):
    path = tmp_path / "shared"
    with open(path, "w") as f:
        pids = []
        for k in range(4):
            pid = os.fork()
            if pid == 0:
                try:
                    for i in range(200):
                        say(f"writer {k} line {i} " + "y" * 300, stream=f)
                finally:
                    os._exit(0)
            pids.append(pid)
        for pid in pids:
            os.waitpid(pid, 0)
    lines = path.read_text().splitlines()
    assert len(lines) == 800
    assert all(line.startswith("ganntec: writer ") and line.endswith("y" * 300) for line in lines)


def test_a_stream_without_a_file_gets_the_line_too():
    buf = io.StringIO()
    say("captured", stream=buf)
    assert buf.getvalue() == "ganntec: captured\n"
