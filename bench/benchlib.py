"""What every benchmark shares: its failure type, the report base that records figures and
failures, and the host facts printed beside the figures (CPU model, load from other processes
and the hypervisor)."""

from __future__ import annotations

import os
import platform
import sys
import time


class BenchFailure(Exception):
    """A measurement failed (child error, hang, corrupt records, wrong book); the run goes on
    without it."""


class BaseReport:
    """Figures and failures of one benchmark run."""

    def __init__(self):
        self.figures: dict[str, float] = {}
        self.failures: list[dict] = []
        self.skipped: dict[str, str] = {}  # systems not measured (e.g. a peer not installed): name -> why

    def attempt(self, what, fn, *args):
        """Run one measurement; a BenchFailure is recorded and the run goes on."""
        print(f"  {what} ...", file=sys.stderr, flush=True)
        try:
            return fn(*args)
        except BenchFailure as exc:
            self.failures.append({"what": what, "error": str(exc)})
            print(f"  {what} FAILED: {exc}", file=sys.stderr, flush=True)
            return None


class CpuMeter:
    """CPU used on the host outside this benchmark's processes, and time stolen by the
    hypervisor, in cores averaged since the meter was made. Other load slows every figure;
    spin figures assume an idle host: with 2 cores, any other runnable process preempts one
    side of a spinning pair."""

    def __init__(self):
        self.start = self._sample()

    @staticmethod
    def _sample():
        fields = [int(x) for x in open("/proc/stat").readline().split()[1:]]
        user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
        own = os.times()
        tick = os.sysconf("SC_CLK_TCK")
        busy = (user + nice + system + irq + softirq) / tick
        return time.monotonic(), busy, steal / tick, own.user + own.system + own.children_user + own.children_system

    def cores(self):
        (w0, b0, s0, o0), (w1, b1, s1, o1) = self.start, self._sample()
        wall = max(w1 - w0, 1e-9)
        return max(0.0, ((b1 - b0) - (o1 - o0)) / wall), (s1 - s0) / wall


def cpu_model():
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()
