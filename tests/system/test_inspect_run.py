"""`ganntec inspect --json` of a running instance (its rings' rates, the workers' processes
alive with their CPU) and of the same instance killed: the segments are left, stale, their
parties dead; `ganntec clean` then removes them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import orjson
import psutil
from test_runtime import Server

from ganntec.shm.segment import list_segments


def inspect_json(instance: str, *args: str) -> list[dict]:
    out = subprocess.run([sys.executable, "-m", "ganntec.cli", "inspect", "--instance", instance, "--json", *args],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return orjson.loads(out.stdout)


def test_inspect_a_running_instance_then_its_leftovers(tmp_path, instance):
    s = Server(tmp_path, instance)
    try:
        s.start()
        rows = inspect_json(instance, "--rates", "0.3")
        rings = {r["name"].split(".", 2)[-1]: r for r in rows if r["ring"]}
        assert {"cmd.0", "cmd.1", "reports.1"} <= set(rings)
        assert all(r["state"] == "live" for r in rows)
        worker = rings["cmd.1"]["ring"]["consumer"]  # the engine worker reads the command ring
        assert worker["alive"] and worker["pid"] > 0 and "cpu_percent" in worker
        assert "rates" in rings["cmd.1"]["ring"] and rings["cmd.1"]["ring"]["rates"]["interval_s"] > 0
        only = inspect_json(instance, "--name", "reports")
        assert only and all("reports" in r["name"] for r in only)
        # killed: every process of the instance at once, no cleanup
        tree = [s.proc.pid] + [c.pid for c in psutil.Process(s.proc.pid).children(recursive=True)]
        for pid in tree:
            os.kill(pid, signal.SIGKILL)
        s.proc.wait(60)
        for pid in tree:
            try:
                psutil.Process(pid).wait(60)
            except psutil.NoSuchProcess:
                pass
        left = inspect_json(instance)
        assert left and all(r["state"] == "stale" for r in left)
        dead = {r["name"].split(".", 2)[-1]: r["ring"]["consumer"] for r in left if r["ring"]}
        assert dead["cmd.1"]["pid"] == worker["pid"] and not dead["cmd.1"]["alive"]
        subprocess.run([sys.executable, "-m", "ganntec.cli", "clean", "--instance", instance], check=True,
                       capture_output=True, timeout=120)
        assert list_segments(instance) == []
    finally:
        s.kill()
