"""Log lines go out whole: one write(2) each, so processes sharing stdout never split a line;
their text and JSON forms; bursts of one failure."""

from __future__ import annotations

import io
import os

from ganntec.logline import Log


def say(msg: str, stream) -> None:
    Log("supervisor", fmt="text", stream=stream).say(msg)


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


def test_json_lines_carry_level_component_pid_and_fields():
    import orjson

    from ganntec.logline import Log

    out = io.StringIO()
    log = Log("edge 2", fmt="json", stream=out, clock_ns=lambda: 1_796_540_211_123_456_789)
    log.say("listening", port=8080)
    log.error("broken")
    first, second = (orjson.loads(line) for line in out.getvalue().splitlines())
    assert first == {"ts": "2026-12-06T06:56:51.123Z", "level": "info", "component": "edge 2", "pid": os.getpid(),
                     "msg": "listening", "port": 8080}
    assert second["level"] == "error" and second["msg"] == "broken"


def test_text_lines_stay_as_they_were():
    from ganntec.logline import Log

    out = io.StringIO()
    Log("edge 1", fmt="text", stream=out).say("listening on http://x")
    Log("edge 1", fmt="text", stream=out).error("ValueError: no")
    assert out.getvalue().splitlines() == ["ganntec: listening on http://x", "ganntec edge 1: ValueError: no"]


def test_a_burst_of_the_same_failure_is_one_line_and_then_a_count():
    from ganntec.logline import Burst

    lines = []
    burst = Burst(lambda msg, level, **f: lines.append((msg, level, f)), window_s=10)
    for t in (0.0, 1.0, 2.0, 9.9):
        burst(("ValueError", "POST /api/v3/order"), "unhandled error in POST /api/v3/order", t)
    burst(("KeyError", "GET /x"), "another", 3.0)  # a different failure: its own line
    burst(("ValueError", "POST /api/v3/order"), "unhandled error in POST /api/v3/order", 12.0)
    burst(("ValueError", "POST /api/v3/order"), "unhandled error in POST /api/v3/order", 30.0)
    assert [(m, f.get("repeats")) for m, _, f in lines] == [
        ("unhandled error in POST /api/v3/order", None), ("another", None),
        ("unhandled error in POST /api/v3/order (and 3 more like it in the 12 s before)", 3),
        ("unhandled error in POST /api/v3/order", None)]
    assert {level for _, level, _ in lines} == {"error"}


def test_logging_records_go_through_the_log():
    import logging

    import orjson

    from ganntec.logline import Handler, Log

    out = io.StringIO()
    logger = logging.getLogger("ganntec.test.logline")
    handler = Handler(Log("edge 1", fmt="json", stream=out))
    logger.addHandler(handler)
    logger.propagate = False
    try:
        try:
            raise ValueError("boom")
        except ValueError as exc:
            logger.error("unhandled error in %s", "GET /x", exc_info=exc)
    finally:
        logger.removeHandler(handler)
    line = orjson.loads(out.getvalue())
    assert line["level"] == "error" and line["component"] == "edge 1" and line["logger"] == "ganntec.test.logline"
    assert line["msg"].startswith("unhandled error in GET /x\nTraceback") and "ValueError: boom" in line["msg"]
