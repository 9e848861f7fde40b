"""The engine worker: the four engines in one process (the `single` placement), fed by the
command rings, journaling before anything leaves it.

Rings of an instance (all 128-byte records, one producer and one consumer each):
  cmd.0         admin commands (the supervisor's, source 0)
  cmd.<i>       client commands of edge i (source i, 1..edges); a command's records are
                published in one batch and carry the command's edge sequence in source_seq
  reports       every record a client is told (the driver's edge stream), in journal order

The loop, per turn: pop what each command ring holds (whole commands; an incomplete one
waits), run it through the compiled in-process driver (a frame of journal records per driver
pass), make the turn durable (`fsync` mode: one fdatasync, the group commit), and only then
publish the turn's reports, in batches that end where a journal sequence ends (a crash leaves
every sequence's reports published whole or not at all, so recovery can tell exactly where the
reports stopped: `last_reported_seq`). The heartbeat (CLOCK_MONOTONIC
ns) is the consumer heartbeat of `cmd.0`. Idle, it waits on `cmd.1` (or `cmd.0` with no
edges) with the configured strategy, at most a quarter heartbeat, so the admin ring and a
stop request are seen within that.

Signals only set a flag; the loop finishes its turn (journaled and reported) and returns.
"""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import posix_ipc

from ganntec.journal.journal import JournalWriter
from ganntec.shm import records as R
from ganntec.shm import wait as W
from ganntec.shm.ring import Ring
from ganntec.workers.driver import InProcessDriver

RB = R.RECORD_BYTES
REPORTS = "reports"


def cmd_ring(source: int) -> str:
    return f"cmd.{source}"


def last_reported_seq(reports: Ring) -> int:
    """The journal sequence of the last record published on `reports` (0: none yet)."""
    head = reports.stats().head
    if head == 0:
        return 0
    slot = reports.slots_view()[(head - 1) & reports.mask]
    return int(slot.view(R.RECORD_DTYPE)[0]["seq"])


def publish_turn(reports: Ring, records: np.ndarray, wait) -> None:
    """Publish `records` (in journal order) in batches that each end where a journal sequence
    ends: a crash leaves every sequence's reports published whole or not at all."""
    raw = np.ascontiguousarray(records).view(np.uint8).reshape(-1, RB)
    seqs = raw.view(R.RECORD_DTYPE).reshape(-1)["seq"]
    pos, n, cap = 0, len(raw), reports.capacity
    while pos < n:
        k = n - pos
        if k > cap:
            k = cap
            while k > 0 and seqs[pos + k - 1] == seqs[pos + k]:
                k -= 1
            if k == 0:
                raise RuntimeError(f"one journal sequence made more reports than the reports ring holds ({cap})")
        room = 0
        while room < k:  # room for all k first: one publish, never a part of a sequence's reports
            try:
                room = wait.wait_for_space(reports, k, 0.05)
            except posix_ipc.SignalError:
                pass  # woken by a signal: the pass still publishes before the loop stops
        if reports.push(raw[pos:pos + k]) != k:
            raise RuntimeError("reports ring: room for a batch vanished (a second producer?)")
        pos += k


class EngineWorker:
    """One turn at a time: commands in, journal, reports out."""

    def __init__(self, driver: InProcessDriver, journal: JournalWriter, cmd_rings: list[Ring], reports: Ring,
                 wait, heartbeat_ms: int, batch: int = 4096):
        self.driver, self.journal, self.rings, self.reports = driver, journal, cmd_rings, reports
        self.wait = wait
        self.idle_timeout_s = heartbeat_ms / 4000
        self.stop = False
        self.batch = batch
        # Per ring: records popped and not yet taken by the driver (an incomplete command).
        self.staged = [np.zeros((batch, RB), np.uint8) for _ in cmd_rings]
        self.n_staged = [0] * len(cmd_rings)
        self.commands = 0  # command records taken

    def _on_signal(self, signum, frame):
        self.stop = True

    def turn(self) -> bool:
        """Pop, drive, journal, report. Returns True if anything happened."""
        busy = False
        reports = []
        for k, ring in enumerate(self.rings):
            buf, n = self.staged[k], self.n_staged[k]
            if n < self.batch:
                n += ring.pop(buf[n:])
            pos = 0
            while pos < n or not self.driver.idle:
                used, nj, ne = self.driver.advance(buf.ctypes.data + pos * RB, n - pos)
                self.journal.append(self.driver.journal_buffer[:nj], sync=False)  # a frame per pass
                if ne:
                    reports.append(self.driver.edge_buffer[:ne].copy())
                pos += used
                if used == 0 and self.driver.idle:
                    break  # an incomplete command: the rest comes with a later pop
            if pos:
                busy = True
                self.commands += pos
                buf[:n - pos] = buf[pos:n]
            self.n_staged[k] = n - pos
        self.journal.sync()  # one group commit per turn (fsync mode), before anything is told
        for r in reports:
            publish_turn(self.reports, r, self.wait)
        self.rings[0].heartbeat(time.monotonic_ns())
        return busy

    def run(self) -> None:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        idle_ring = self.rings[1] if len(self.rings) > 1 else self.rings[0]
        while not self.stop:
            if not self.turn():
                try:
                    self.wait.wait_for_data(idle_ring, 1, self.idle_timeout_s)
                except posix_ipc.SignalError:
                    pass  # a signal woke the wait: the loop looks at the stop flag
        self.journal.close()


def worker_main(driver: InProcessDriver, journal: JournalWriter, instance: str, sources: int, wait_name: str,
                waiters: int, heartbeat_ms: int, cpu: int | None) -> int:
    """Body of the forked engine worker: attach as consumer of the command rings and producer
    of the reports ring, then loop until told to stop."""
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    rings = [Ring.attach(instance, cmd_ring(s), role="consumer") for s in range(sources)]
    reports = Ring.attach(instance, REPORTS, role="producer")
    rings[0].heartbeat(time.monotonic_ns())
    try:
        EngineWorker(driver, journal, rings, reports, W.make(wait_name, processes=waiters), heartbeat_ms).run()
    finally:
        for r in rings + [reports]:
            r.close(unlink=False)
    return 0
