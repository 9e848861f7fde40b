"""Host facts every benchmark prints beside its figures: the CPU model, and how much of the
machine other processes (and the hypervisor) took while it ran."""

from __future__ import annotations

import os
import platform
import time


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
