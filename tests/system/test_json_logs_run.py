"""`ganntec run --log-format json` (here through GANNTEC_LOG_FORMAT, which the CLI flag sets):
every line on stdout and stderr is one JSON object with ts, level, component and pid, from the
supervisor and from the processes it forks."""

from __future__ import annotations

import orjson
import pytest
from test_edge_run import server  # noqa: F401 - ganntec run with the edge's test config


@pytest.fixture
def json_server(monkeypatch, server):  # noqa: F811 - test_edge_run's, started with JSON logs
    monkeypatch.setenv("GANNTEC_LOG_FORMAT", "json")  # the child ganntec run inherits it
    return server


def test_every_line_is_a_json_object_naming_its_process(json_server):
    server = json_server
    server.start()
    server.wait_for('"component":"edge 1"')
    server.wait_for('"component":"history"')
    assert server.stop() == 0
    lines = [orjson.loads(line) for line in server.lines if line.strip()]
    assert lines and all({"ts", "level", "component", "pid", "msg"} <= set(line) for line in lines)
    by = {}
    for line in lines:
        by.setdefault(line["component"], set()).add(line["pid"])
    assert {"supervisor", "edge 1", "history"} <= set(by)
    assert len(by["supervisor"]) == 1 and by["supervisor"].isdisjoint(by["edge 1"])
    assert any("listening on http://" in line["msg"] for line in lines if line["component"] == "edge 1")
    recovered = [line for line in lines if line["msg"].startswith("recovered to sequence")]
    assert recovered and all(isinstance(line["seq"], int) for line in recovered)  # the sequence, as a field
