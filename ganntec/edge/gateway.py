"""The edge's link to the engines: commands out, reports in.

`RingGateway` (an edge process): commands go on the edge's own ring `cmd.<source>`, one
command per publish; a reader thread waits on its `reports.<source>` ring (the configured wait
strategy, off the event loop), copies what it pops and hands each batch to the event loop,
which applies it to the EdgeState in order. The thread beats the ring's consumer heartbeat.
At most `MAX_BATCHES_QUEUED` batches wait for the loop: beyond that the thread stops
popping, the ring fills and the engines feel the back-pressure (nothing is dropped).

`DriverGateway` (tests, integrators): the same EdgeState and commands, run through an
in-process driver (the engines' compiled code, no processes).

Both stamp every command with the edge's source id, its next edge sequence (the order engine
drops one it has journaled already) and the receive time in ns (an input: engines read no
clock)."""

from __future__ import annotations

import abc
import asyncio
import threading
import time
from collections.abc import Callable

import numpy as np
import posix_ipc

from ganntec.edge import errors as E
from ganntec.edge.state import EdgeState, Waiter
from ganntec.shm import records as R
from ganntec.shm.ring import Ring
from ganntec.workers.runtime import last_reported_seq, reports_ring

RB = R.RECORD_BYTES
MAX_BATCHES_QUEUED = 64
REPORT_BATCH = 4096


class Gateway(abc.ABC):
    def __init__(self, state: EdgeState, source: int, next_seq: int, clock_ns: Callable[[], int],
                 timeout_s: float = 10.0):
        self.state, self.source, self.next_seq, self.clock_ns = state, source, next_seq, clock_ns
        state.own_source = source  # its waiters are this edge's commands
        self.timeout_s = timeout_s

    def _stamp(self, records: np.ndarray) -> np.ndarray:
        # a byte copy: copying a structured array copies its fields only, never its other bytes
        raw = R.as_records(records).view(np.uint8).reshape(-1, RB).copy().view(R.RECORD_DTYPE).reshape(-1)
        raw["source"] = self.source
        raw["source_seq"] = self.next_seq
        raw["ts_ns"] = self.clock_ns()
        self.next_seq += 1
        return raw

    async def submit(self, records: np.ndarray, expect: Callable[[Waiter], None], extras=None) -> list:
        """Send one command; return the records that answer it (see state.py). `expect`
        registers the waiter under the command's key before the command leaves."""
        loop = asyncio.get_running_loop()
        fut = loop.create_future()

        def done(recs):
            if not fut.done():
                fut.set_result(recs)

        raw = self._stamp(records)
        expect(Waiter(done, extras, self.source, int(raw["source_seq"][0])))
        return await self._send(raw, fut)

    async def caught_up(self) -> None:
        """Return once the state has applied every report published so far: an order another
        edge process placed is then known here (read-your-writes across edges)."""

    @abc.abstractmethod
    async def _send(self, raw: np.ndarray, fut) -> list:
        """Deliver one stamped command; return its answer (`fut`'s result)."""

    def close(self) -> None:
        pass


class RingGateway(Gateway):
    def __init__(self, state: EdgeState, instance: str, source: int, next_seq: int, wait, loop,
                 clock_ns: Callable[[], int] = time.time_ns, timeout_s: float = 10.0, edges: int = 1):
        super().__init__(state, source, next_seq, clock_ns, timeout_s)
        self.wait, self.loop = wait, loop
        self.cmd = Ring.attach(instance, f"cmd.{source}", role="producer")
        self.all_reports: list[Ring] = []  # every edge's reports ring, read-only, for caught_up
        try:
            self.reports = Ring.attach(instance, reports_ring(source), role="consumer")
            self.all_reports.append(self.reports)
            for e in range(1, edges + 1):
                if e != source:
                    self.all_reports.append(Ring.attach(instance, reports_ring(e)))
        except BaseException:
            self._close_rings()
            raise
        self._stop = False
        self._catching_up: list[tuple[int, asyncio.Future]] = []  # (journal sequence, caught_up's future)
        self._room = threading.Semaphore(MAX_BATCHES_QUEUED)
        self.reader = threading.Thread(target=self._read, name="ganntec-edge-reports", daemon=True)
        self.reader.start()

    def _apply(self, batch: np.ndarray) -> None:
        try:
            self.state.apply(batch)
        finally:
            self._room.release()
        if self._catching_up:
            waiting = []
            for target, fut in self._catching_up:
                if target > self.state.seq:
                    waiting.append((target, fut))
                elif not fut.done():
                    fut.set_result(None)
            self._catching_up = waiting

    async def caught_up(self) -> None:
        # The engines publish a turn's reports on one edge's ring after another: what any ring
        # has, this edge's will have. (A slot's sequence read while the producer may reuse it
        # can only be newer: waiting for it is still right.)
        if len(self.all_reports) == 1:  # one edge: its answers come after their reports are in
            return
        target = max(last_reported_seq(r) for r in self.all_reports)
        if target <= self.state.seq:
            return
        fut = self.loop.create_future()
        self._catching_up.append((target, fut))
        try:
            await asyncio.wait_for(fut, self.timeout_s)
        except asyncio.TimeoutError:
            raise E.backend_timeout() from None

    def _read(self) -> None:
        buf = np.zeros((REPORT_BATCH, RB), np.uint8)
        while not self._stop:
            self.reports.heartbeat(time.monotonic_ns())
            try:
                if not self.wait.wait_for_data(self.reports, 1, 0.1):
                    continue
            except posix_ipc.SignalError:
                continue
            while not self._room.acquire(timeout=0.1):
                self.reports.heartbeat(time.monotonic_ns())
                if self._stop:
                    return
            got = self.reports.pop(buf)
            if not got:
                self._room.release()
                continue
            try:
                self.loop.call_soon_threadsafe(self._apply, buf[:got].copy())
            except RuntimeError:  # the loop is closed: the edge is stopping
                return

    async def _send(self, raw: np.ndarray, fut) -> list:
        deadline = time.monotonic() + self.timeout_s
        pause = 0.0005
        while self.cmd.push(raw) == 0:  # the whole command in one publish, or nothing yet
            if time.monotonic() > deadline:
                raise E.backend_timeout()
            await asyncio.sleep(pause)  # the engines are behind or recovering: back off
            pause = min(pause * 2, 0.05)
        try:
            return await asyncio.wait_for(fut, max(deadline - time.monotonic(), 0.001))
        except asyncio.TimeoutError:
            raise E.backend_timeout() from None

    def close(self) -> None:
        self._stop = True
        self.reader.join(5)
        self._close_rings()

    def _close_rings(self) -> None:
        self.cmd.close(unlink=False)
        for ring in self.all_reports:
            ring.close(unlink=False)


class DriverGateway(Gateway):
    """Commands run at once through an in-process driver; its reports are applied before the
    answer is awaited, so each call returns with the state up to date."""

    def __init__(self, state: EdgeState, driver, clock_ns: Callable[[], int], source: int = 1):
        super().__init__(state, source, int(driver.order.edge_last_seq[source]) + 1, clock_ns)
        self.driver = driver
        self.journal: list[np.ndarray] = []

    async def _send(self, raw: np.ndarray, fut) -> list:
        journal, edge = self.driver.run(raw)
        self.journal.append(journal)
        self.state.apply(edge)
        if not fut.done():
            raise AssertionError("a command's results did not answer it (state.py correlation)")
        return fut.result()
