"""The edge's link to the engines: commands out, reports in.

`RingGateway` (an edge process): commands go on the edge's own ring `cmd.<source>`, one
command per publish; its `reports.<source>` ring is read by the event loop itself, with no
thread: the ring's wake-up is an eventfd (Ring.wake_fd, inherited from the supervisor) that
the loop polls with its sockets. When the loop has emptied the ring it arms the consumer's
sleeping flag; the producer's next publish sees it and writes the eventfd. The loop applies a
batch per turn, so requests run between batches; what it has not popped waits in the ring and
the engines feel the back-pressure (nothing is dropped). A thread beside the loop cost two GIL
hand-offs and a cross-thread wake-up per batch. The loop beats the ring's consumer heartbeat.

`DriverGateway` (tests, integrators): the same EdgeState and commands, run through an
in-process driver (the engines' compiled code, no processes).

Both stamp every command with the edge's source id, its next edge sequence (the order engine
drops one it has journaled already) and the receive time in ns (an input: engines read no
clock)."""

from __future__ import annotations

import abc
import asyncio
import os
import time
from collections.abc import Callable

import numpy as np

from ganntec.edge import errors as E
from ganntec.edge.state import EdgeState, Waiter
from ganntec.shm import records as R
from ganntec.shm.ring import Ring
from ganntec.shm.stats import StatsWriter, observe_records
from ganntec.shm.wait import arm_consumer_sleep
from ganntec.workers.runtime import cmd_ring, last_reported_seq, reports_ring

RB = R.RECORD_BYTES
HEARTBEAT_S = 0.1
REPORT_BATCH = 1024  # records applied per loop turn (~10 ms at most): requests run between


class Gateway(abc.ABC):
    def __init__(self, state: EdgeState, source: int, next_seq: int, clock_ns: Callable[[], int],
                 timeout_s: float = 10.0, admin_next_seq: int = 0):
        self.state, self.source, self.next_seq, self.clock_ns = state, source, next_seq, clock_ns
        state.own_source = source  # its waiters are this edge's commands
        self.timeout_s = timeout_s
        # The admin plane's commands (source 0, cmd.0) go through one edge: the one serving the
        # admin port; 0 = not this one.
        self.admin_next_seq = admin_next_seq
        self.round_trip = None  # a Histogram: publish -> answer applied (set by the app's metrics)

    def _stamp(self, records: np.ndarray, source: int, seq: int) -> np.ndarray:
        # a byte copy: copying a structured array copies its fields only, never its other bytes
        raw = R.as_records(records).view(np.uint8).reshape(-1, RB).copy().view(R.RECORD_DTYPE).reshape(-1)
        raw["source"] = source
        raw["source_seq"] = seq
        raw["ts_ns"] = self.clock_ns()
        return raw

    @staticmethod
    def _answer() -> tuple[asyncio.Future, Callable[[list], None]]:
        """A future for a command's answer and the `done` its waiter calls (once)."""
        fut = asyncio.get_running_loop().create_future()

        def done(recs):
            if not fut.done():
                fut.set_result(recs)
        return fut, done

    async def submit(self, records: np.ndarray, expect: Callable[[Waiter], None], extras=None) -> list:
        """Send one command; return the records that answer it (see state.py). `expect`
        registers the waiter under the command's key before the command leaves."""
        fut, done = self._answer()
        raw = self._stamp(records, self.source, self.next_seq)
        self.next_seq += 1
        expect(Waiter(done, extras, self.source, int(raw["source_seq"][0])))
        return await self._send(raw, fut)

    async def submit_admin(self, records: np.ndarray) -> list:
        """Send one admin command (source 0, the next admin sequence); return its echo (the
        command with its reason), and for an applied credit or debit the BALANCE after it."""
        if not self.admin_next_seq:
            raise RuntimeError("this gateway does not carry the admin plane's commands")
        fut, done = self._answer()
        raw = self._stamp(records, R.SOURCE_ADMIN, self.admin_next_seq)
        self.admin_next_seq += 1
        waiter = Waiter(done, None, R.SOURCE_ADMIN, int(raw["source_seq"][0]))
        self.state.expect_admin(waiter)
        try:
            return await self._send(raw, fut, admin=True)
        finally:
            self.state.forget(waiter)

    async def caught_up(self) -> None:
        """Return once the state has applied every report published so far: an order another
        edge process placed is then known here (read-your-writes across edges)."""

    @abc.abstractmethod
    async def _send(self, raw: np.ndarray, fut, admin: bool = False) -> list:
        """Deliver one stamped command (on the admin ring if `admin`); return its answer
        (`fut`'s result)."""

    def close(self) -> None:
        pass


def _expire(fut: asyncio.Future) -> None:
    if not fut.done():
        fut.set_exception(E.backend_timeout())


class RingGateway(Gateway):
    def __init__(self, state: EdgeState, instance: str, source: int, next_seq: int, wake_fd: int, loop,
                 clock_ns: Callable[[], int] = time.time_ns, timeout_s: float = 10.0, edges: int = 1,
                 on_fatal: Callable[[BaseException], None] | None = None, admin_next_seq: int = 0,
                 stats: StatsWriter | None = None, lock_memory: bool = False):
        super().__init__(state, source, next_seq, clock_ns, timeout_s, admin_next_seq)
        self.loop, self.wake_fd, self.on_fatal = loop, wake_fd, on_fatal
        self.stats = stats  # stats.edge.<source> (shm/stats.py): report latency, heartbeat
        lock = {"lock_memory": lock_memory}  # (the rings this process moves records through)
        self.cmd = Ring.attach(instance, cmd_ring(source), role="producer", **lock)
        self.admin_cmd: Ring | None = None
        self.all_reports: list[Ring] = []  # every edge's reports ring, read-only, for caught_up
        try:
            if admin_next_seq:
                self.admin_cmd = Ring.attach(instance, cmd_ring(R.SOURCE_ADMIN), role="producer", **lock)
            self.reports = Ring.attach(instance, reports_ring(source), role="consumer", **lock)
            self.all_reports.append(self.reports)
            for e in range(1, edges + 1):
                if e != source:
                    self.all_reports.append(Ring.attach(instance, reports_ring(e)))
        except BaseException:
            self._close_rings()
            raise
        self.buf = np.zeros((REPORT_BATCH, RB), np.uint8)
        self._catching_up: list[tuple[int, asyncio.Future]] = []  # (journal sequence, caught_up's future)
        self._draining = False
        self.failed: BaseException | None = None
        loop.add_reader(wake_fd, self._on_wake)
        self._beat_handle = None
        self._beat()
        self._schedule_drain()  # what the ring holds already

    def _beat(self) -> None:
        now = time.monotonic_ns()
        self.reports.heartbeat(now)
        if self.stats is not None:
            self.stats.beat(now)
        self._beat_handle = self.loop.call_later(HEARTBEAT_S, self._beat)

    def _on_wake(self) -> None:
        try:
            os.eventfd_read(self.wake_fd)
        except BlockingIOError:  # read by an earlier wake already
            pass
        self._schedule_drain()

    def _schedule_drain(self) -> None:
        if not self._draining:
            self._draining = True
            self.loop.call_soon(self._drain)

    def _drain(self) -> None:
        """Apply one batch of what the ring holds, then come back (requests run in between)
        until it is empty; then arm the consumer's sleeping flag, so that the producer's next
        publish writes the eventfd."""
        self._draining = False
        if self.failed is not None:
            return
        try:
            got = self.reports.pop(self.buf)
            if got:
                if self.stats is not None:  # edge receive -> its report here, per client command's records
                    observe_records(self.stats.base, self.stats.row("edge"), self.buf.ctypes.data, got, self.clock_ns())
                self.state.apply(self.buf[:got])
                self._answer_caught_up()
                self._schedule_drain()
            elif arm_consumer_sleep(self.reports) >= 0:  # published meanwhile
                self._schedule_drain()
        except BaseException as exc:  # a broken invariant: the edge stops (the supervisor restarts it)
            self.failed = exc
            if self.on_fatal is not None:
                self.on_fatal(exc)
            else:
                raise

    def _answer_caught_up(self) -> None:
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
        await self._within(fut, self.timeout_s)

    async def _send(self, raw: np.ndarray, fut, admin: bool = False) -> list:
        deadline = time.monotonic() + self.timeout_s
        pause = 0.0005
        ring = self.admin_cmd if admin else self.cmd
        while ring.push(raw) == 0:  # the whole command in one publish, or nothing yet
            if time.monotonic() > deadline:
                raise E.backend_timeout()
            await asyncio.sleep(pause)  # the engines are behind or recovering: back off
            pause = min(pause * 2, 0.05)
        t0 = time.perf_counter()
        out = await self._within(fut, max(deadline - time.monotonic(), 0.001))
        if self.round_trip is not None:
            self.round_trip.observe(time.perf_counter() - t0)
        return out

    async def _within(self, fut: asyncio.Future, timeout_s: float):
        """fut's result, or backend_timeout after timeout_s: one timer on the future itself
        (asyncio.wait_for wraps it in another task per request)."""
        timer = self.loop.call_later(timeout_s, _expire, fut)
        try:
            return await fut
        finally:
            timer.cancel()

    def close(self) -> None:
        self.loop.remove_reader(self.wake_fd)
        if self._beat_handle is not None:
            self._beat_handle.cancel()
        self._close_rings()

    def _close_rings(self) -> None:
        self.cmd.close(unlink=False)
        if self.admin_cmd is not None:
            self.admin_cmd.close(unlink=False)
        for ring in self.all_reports:
            ring.close(unlink=False)


class DriverGateway(Gateway):
    """Commands run at once through an in-process driver; its reports are applied before the
    answer is awaited, so each call returns with the state up to date."""

    def __init__(self, state: EdgeState, driver, clock_ns: Callable[[], int], source: int = 1):
        super().__init__(state, source, int(driver.order.edge_last_seq[source]) + 1, clock_ns,
                         admin_next_seq=int(driver.order.edge_last_seq[R.SOURCE_ADMIN]) + 1)
        self.driver = driver
        self.journal: list[np.ndarray] = []

    async def _send(self, raw: np.ndarray, fut, admin: bool = False) -> list:
        journal, edge = self.driver.run(raw)
        self.journal.append(journal)
        self.state.apply(edge)
        if not fut.done():
            raise AssertionError("a command's results did not answer it (state.py correlation)")
        return fut.result()
