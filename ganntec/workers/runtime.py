"""Engine worker processes: the loop they share, and the two placements.

Placement `single`: the four engines in one process (`EngineWorker`, the in-process driver).
Placement `per-engine`: one process per engine (`OrderWorker`, `RiskWorker`,
`MatchingWorker`, `PositionWorker`), linked by rings, as DESIGN §3 draws it.

Rings of an instance (all 128-byte records, one producer and one consumer each):
  cmd.0             admin commands (the supervisor's, source 0)
  cmd.<i>           client commands of edge i (source i, 1..edges); a command's records are
                    published in one batch and carry the command's edge sequence in source_seq
  reports.<i>       every record a client is told, in journal order, for edge i (1..edges):
                    each edge process reads its own copy (each ring has one consumer)
  per-engine only, re-created at every start of the engines:
  order.risk        the sequenced (journaled) stream
  risk.matching.0   orders, cancels and amends for matching
  matching.0.order  matching's results, to be sequenced
  risk.position     settled records for position
The order engine's inputs (cmd.* and matching.0.order) share doorbell 1, so it sleeps on one
semaphore and any of them wakes it.

Every worker runs `Worker.run`: turns until a stop is asked and its work is done; after a
turn that did nothing it waits on its inputs (the configured strategy) for at most a quarter
heartbeat; its heartbeat (CLOCK_MONOTONIC ns) is the consumer heartbeat of its first input
ring, beaten every turn and while it waits for room downstream (waiting for a consumer is
alive). Signals only set a flag. Under systemd with `WatchdogSec=` the same beat sends the
watchdog's WATCHDOG=1 when one is due (every half interval; ganntec/sdnotify.py says why from
here and under which condition), so a loop that freezes stops pinging.

Durability: only the journal writer's process (the single worker, or the order worker)
forwards anything, and only after the turn's frames are written and, in `fsync` mode,
fdatasync'ed (the group commit).

Reports: every publish on a reports ring ends where a journal sequence ends (`publish_turn`), so a
crash leaves each sequence's reports published whole or not at all and recovery knows where
they stopped (`last_reported_seq`). Per-engine, risk publishes `risk.position` the same way
and position pops whole batches (its buffer is the ring's capacity), so the rule carries
through.

Deadlock freedom per-engine (DESIGN §5): the loop order -> risk -> matching -> order holds
rings in a cycle, so one link must never block: risk never waits for room on
`risk.matching.0` (records that do not fit wait, in order, in its own spill list; credits
bound them). Then risk only waits on position, position only on the edge, which always
drains; order only on risk, matching only on order.

Clean stop per-engine: the order worker stops taking commands and ends once every admitted
command's results are sequenced; each other worker ends once its upstream has exited and
its inputs are drained.
"""

from __future__ import annotations

import abc
import os
import signal
import sys
import time

import numpy as np
import posix_ipc

from ganntec import sdnotify
from ganntec.engines import matching, order, position, risk
from ganntec.journal.journal import JournalWriter
from ganntec.logline import Log
from ganntec.shm import records as R
from ganntec.shm import stats as S
from ganntec.shm import wait as W
from ganntec.shm.ring import OBSERVER, Ring
from ganntec.shm.segment import process_alive
from ganntec.shm.table import BALANCE_ROW_DTYPE, DEPTH_ROW_DTYPE, Table
from ganntec.workers.driver import InProcessDriver

RB = R.RECORD_BYTES
ORDER_RISK = "order.risk"
RISK_MATCHING = "risk.matching.0"
MATCHING_ORDER = "matching.0.order"
RISK_POSITION = "risk.position"
INTERNAL_RINGS = (ORDER_RISK, RISK_MATCHING, MATCHING_ORDER, RISK_POSITION)
ORDER_DOORBELL = 1  # cmd.* and matching.0.order: the order engine's inputs
# The ring whose consumer heartbeat is a downstream worker's (order's and single's: cmd.0).
FIRST_INPUT = {"risk": ORDER_RISK, "matching": RISK_MATCHING, "position": RISK_POSITION}
ENGINES = ("order", "risk", "matching", "position")


def beat_ring_name(engine: str) -> str:
    """The ring whose consumer heartbeat is `engine`'s ("engines": placement single)."""
    return cmd_ring(0) if engine in ("engines", "order") else FIRST_INPUT[engine]


def cmd_ring(source: int) -> str:
    return f"cmd.{source}"


def reports_ring(edge: int) -> str:
    return f"reports.{edge}"


def reports_rings(sources: int) -> list[str]:
    """The report rings of an instance with `sources` command rings (admin + one per edge)."""
    return [reports_ring(e) for e in range(1, sources)]


def last_reported_seq(reports: Ring) -> int:
    """The journal sequence of the last record published on `reports` (0: none yet)."""
    head = reports.published()
    if head == 0:
        return 0
    slot = reports.slots_view()[(head - 1) & reports.mask]
    return int(slot.view(R.RECORD_DTYPE)[0]["seq"])


def publish_turn(ring: Ring, records: np.ndarray, wait, beat=None, give_up=None) -> int:
    """Publish `records` (in journal order) in batches that each end where a journal sequence
    ends: a crash leaves every sequence's records published whole or not at all. `beat()` is
    called while waiting for room; once `give_up()` says so, the rest is not published.
    Returns the records not published (0 unless given up)."""
    raw = np.ascontiguousarray(records).view(np.uint8).reshape(-1, RB)
    seqs = raw.view(R.RECORD_DTYPE).reshape(-1)["seq"]
    pos, n, cap = 0, len(raw), ring.capacity
    while pos < n:
        k = n - pos
        if k > cap:
            k = cap
            while k > 0 and seqs[pos + k - 1] == seqs[pos + k]:
                k -= 1
            if k == 0:
                raise RuntimeError(f"one journal sequence made more records than ring {ring.name} holds ({cap})")
        room = 0
        while room < k:  # room for all k first: one publish, never a part of a sequence's records
            try:
                room = wait.wait_for_space(ring, k, 0.05)
            except posix_ipc.SignalError:
                pass  # woken by a signal: the pass still publishes before the loop stops
            if room < k:
                if beat is not None:
                    beat()
                if give_up is not None and give_up():
                    return n - pos
        if ring.push(raw[pos:pos + k]) != k:
            raise RuntimeError(f"ring {ring.name}: room for a batch vanished (a second producer?)")
        pos += k


class Inbox:
    """Records popped from a ring that the engine has not taken yet (the start of a
    multi-record command waits here for its rest)."""

    def __init__(self, rows: int):
        self.buf = np.zeros((rows, RB), np.uint8)
        self.n = 0
        self.address = self.buf.ctypes.data
        self.last_seq = 0  # the header seq of the last record taken (sequenced inputs)

    def fill(self, ring: Ring) -> int:
        got = ring.pop(self.buf[self.n:]) if self.n < len(self.buf) else 0
        self.n += got
        return got

    def take(self, used: int) -> None:
        if used:
            self.last_seq = int(self.buf[used - 1, 8:16].view(np.int64)[0])
            self.buf[:self.n - used] = self.buf[used:self.n]
            self.n -= used

    def has_command(self) -> bool:
        """A whole command is waiting (not merely the start of one)."""
        return self.n > 0 and order.command_records(self.address, self.n) > 0


DEPTH_TABLE, BALANCES_TABLE = "depth", "balances"


def make_tables(instance: str, processes: list[str], n_symbols: int, balance_rows: int,
                lock_memory: bool = False) -> list[Table]:
    """Every table the processes attach to as writers: `stats.<process>` for each of
    `processes` (shm/stats.py), `depth` (a row per symbol) and `balances` (max_accounts x
    assets rows). Whoever forks the processes makes them first (the supervisor; the pipeline
    benchmark) and unlinks them at the end (Table.close)."""
    made: list[Table] = []
    try:
        made += [S.create(instance, p, lock_memory) for p in processes]
        made.append(Table.create(instance, DEPTH_TABLE, DEPTH_ROW_DTYPE, n_symbols, lock_memory=lock_memory))
        made.append(Table.create(instance, BALANCES_TABLE, BALANCE_ROW_DTYPE, balance_rows, lock_memory=lock_memory))
    except BaseException:
        for t in made:
            t.close()
        raise
    return made


def _fits(table: Table, rows: int) -> None:
    if len(table) != rows:
        raise RuntimeError(f"table {table.name} has {len(table)} rows, the engine needs {rows} (made from another config)")


TABLE_REFRESH_NS = 10_000_000  # a busy worker copies its state into the tables this often
SIDE_BEAT_NS = 1_000_000  # (each is a compiled call: once a turn cost ~0.6 us, at small turns ~50 ns a command)


class StateTables:
    """The read-mostly tables of DESIGN §3 that a worker writes between batches: `depth`
    (matching's books, row = symbol) and `balances` (risk's, row = account x assets + asset).
    The supervisor makes them; the worker attaches as their one writer and writes every row
    from its recovered state. Then the worker's loop copies what changed from the engine's
    state at most every TABLE_REFRESH_NS (an idle wait ends when a copy is due, and the stop
    makes a last one): the rows trail the engines by at most that. From the state, not from
    the records: scanning every batch's records for BOOK_UPDATE and BALANCE cost ~100 ns per
    command in the single placement (the buffers are past L2); a copy costs ~1.6 ns per
    balance row (3 us for 2,000) and ~0.2 us per symbol, once per 10 ms at most. Readers
    (`ganntec inspect`) never wait on them."""

    def __init__(self, instance: str, matching_engine=None, risk_engine=None, lock_memory: bool = False):
        self.depth = self.balances = None
        try:
            if matching_engine is not None:
                self.depth = Table.attach(instance, DEPTH_TABLE, DEPTH_ROW_DTYPE, writer=True, lock_memory=lock_memory)
                _fits(self.depth, len(matching_engine.symbols))  # the compiled writers trust row indices
                self.e = matching_engine.control.ctypes.data
            if risk_engine is not None:
                self.balances = Table.attach(instance, BALANCES_TABLE, BALANCE_ROW_DTYPE, writer=True,
                                             lock_memory=lock_memory)
                _fits(self.balances, risk_engine.balances.shape[0] * risk_engine.balances.shape[1])
                self.k = risk_engine.control.ctypes.data
        except BaseException:
            self.close()
            raise
        self.dirty = True  # the recovered state is not in the rows yet
        self.due_ns = 0

    def refresh(self, seq: int, now_ns: int = 0) -> None:
        """Copy what changed in the engines' state into the rows, stamped `seq` (the last
        sequence that state includes). Only between batches (no command half applied). The
        worker's loop calls it when `dirty` and `due_ns` has passed (Worker.run, wait_s)."""
        if self.depth is not None:
            matching.publish_depth(self.e, self.depth.address, seq)
        if self.balances is not None:
            risk.publish_balances(self.k, self.balances.address, seq)
        self.dirty = False
        self.due_ns = now_ns + TABLE_REFRESH_NS

    def beat(self, now_ns: int) -> None:
        for t in (self.depth, self.balances):
            if t is not None:
                t.heartbeat(now_ns)

    def close(self) -> None:
        for t in (self.depth, self.balances):
            if t is not None:
                t.close(unlink=False)
        self.depth = self.balances = None


class Worker(abc.ABC):
    """The loop of every engine process: turns, heartbeat, idle waits, stop on a signal."""

    def __init__(self, inputs: list[Ring], wait, heartbeat_ms: int):
        self.inputs, self.wait = inputs, wait
        self.idle_timeout_s = heartbeat_ms / 4000
        self.stop = False
        self.pinger: sdnotify.Pinger | None = None  # systemd's watchdog, when it is on
        self.stats: S.StatsWriter | None = None  # stats.<process>: latency, journal, heartbeat
        self.stage = -1  # this worker's stage row in it
        self.tables: StateTables | None = None  # depth / balances it writes, if any
        self.journaled = 0  # records this process journaled (the journal writer's worker)
        self.side_beat_ns = 0

    def _on_signal(self, signum, frame):
        self.stop = True

    def beat(self) -> int:
        now = time.monotonic_ns()
        pinger = self.pinger
        if pinger is not None and now >= pinger.next_ns:  # a ping due: every half WatchdogSec
            pinger.tick(now)  # before the heartbeat: the supervisor's READY (it waits for one) comes after
        self.inputs[0].heartbeat(now)
        if now >= self.side_beat_ns:  # the stats and state tables' heartbeats: a ms is resolution enough
            self.side_beat_ns = now + SIDE_BEAT_NS
            if self.stats is not None:
                self.stats.beat(now)
            if self.tables is not None:
                self.tables.beat(now)
        return now

    def applied_seq(self) -> int:
        """The last journal sequence the engine's state includes (the state tables' stamp)."""
        return 0

    def wait_s(self) -> float:
        """How long an idle wait may last: a quarter heartbeat, or until the state tables'
        next refresh is due (they then trail an idle engine by at most TABLE_REFRESH_NS)."""
        t = self.tables
        if t is None or not t.dirty:
            return self.idle_timeout_s
        return min(self.idle_timeout_s, max(0, t.due_ns - time.monotonic_ns()) / 1e9)

    def observe(self, inbox: "Inbox", got: int) -> None:
        """Count the edge-receive-to-here latency of the `got` records just popped into
        `inbox` (one clock read per pop; stats.py says what is measured)."""
        if got and self.stats is not None:
            S.observe_records(self.stats.base, self.stage, inbox.address + (inbox.n - got) * RB, got, time.time_ns())

    def commit(self, journal: JournalWriter, records: int) -> None:
        """The turn's group commit (one fdatasync in `fsync` mode), timed into the journal row
        with the journal's position, when the turn journaled anything."""
        if not records or self.stats is None:
            journal.sync()
            return
        t0 = time.monotonic_ns()
        journal.sync()
        self.journaled += records
        S.observe(self.stats.base, self.stats.row("journal"), time.monotonic_ns() - t0, journal.next_seq - 1,
                  self.journaled)

    @abc.abstractmethod
    def turn(self) -> bool:
        """One pass over the inputs. Returns True if anything happened."""

    def finished(self) -> bool:
        """Once a stop is asked: may the loop end now (nothing owed downstream)?"""
        return True

    def idle_wait(self) -> None:
        self.wait.wait_for_any(self.inputs, self.wait_s())

    def push(self, ring: Ring, records: np.ndarray) -> None:
        """Every record, in order (any split), waiting for room: back-pressure, never a drop."""
        pos, n = 0, len(records)
        while True:
            pos += ring.push(records[pos:])
            if pos == n:
                return
            try:
                self.wait.wait_for_space(ring, 1, 0.05)
            except posix_ipc.SignalError:
                pass
            self.beat()

    def publish(self, ring: Ring, records: np.ndarray) -> None:
        """Publish in whole sequences. Stopping, with nobody left to read the ring, what does
        not fit is not waited for (the journal has it)."""
        lost = publish_turn(ring, records, self.wait, self.beat, lambda: self.stop and reader_gone(ring))
        if lost:
            Log("worker", stream=sys.stderr).say(f"stopping with {lost} records for {ring.name} undelivered (no "
                                                  f"reader; they are in the journal)", "warning")

    def publish_reports(self, rings: list[Ring], records: np.ndarray) -> None:
        """The same records to every edge's reports ring (the slowest edge sets the pace)."""
        for ring in rings:
            self.publish(ring, records)

    def close(self) -> None:
        """After the loop (the journal writer closes its journal here)."""

    def run(self) -> None:
        """Turns until `stop` is set (a signal handler, or another thread) and `finished()`."""
        while True:
            busy = self.turn()
            now = self.beat()
            tables = self.tables
            if tables is not None:  # a copy into the state tables at most every TABLE_REFRESH_NS
                tables.dirty |= busy
                if tables.dirty and now >= tables.due_ns:
                    tables.refresh(self.applied_seq(), now)
            if self.stop and self.finished():
                break
            if not busy:
                try:
                    self.idle_wait()
                except posix_ipc.SignalError:
                    pass  # a signal woke the wait: the loop looks at the stop flag
        if self.tables is not None:
            self.tables.refresh(self.applied_seq())  # the final state, for whoever inspects it after
        self.close()


def upstream_gone(ring: Ring) -> bool:
    """The ring's producer has exited (closed its end, or died)."""
    pid = ring.stats().producer_pid
    return pid == 0 or not process_alive(pid, 0)


def reader_gone(ring: Ring) -> bool:
    """The ring's consumer has detached (or died)."""
    pid = ring.stats().consumer_pid
    return pid == 0 or not process_alive(pid, 0)


# --- placement single -------------------------------------------------------------------------
class EngineWorker(Worker):
    """The four engines in one process: per turn, pop what each command ring holds (whole
    commands), run it through the compiled driver (a journal frame per driver pass), make
    the turn durable (one fdatasync in `fsync` mode), then publish the turn's reports."""

    def __init__(self, driver: InProcessDriver, journal: JournalWriter, cmd_rings: list[Ring], reports: list[Ring],
                 wait, heartbeat_ms: int, batch: int = 4096):
        super().__init__(cmd_rings, wait, heartbeat_ms)
        self.driver, self.journal, self.rings, self.reports = driver, journal, cmd_rings, reports
        self.inboxes = [Inbox(batch) for _ in cmd_rings]
        self.commands = 0  # command records taken

    def turn(self) -> bool:
        busy = False
        reports = []
        journaled = 0
        for inbox, ring in zip(self.inboxes, self.rings):
            self.observe(inbox, inbox.fill(ring))
            pos = 0
            while pos < inbox.n or not self.driver.idle:
                used, nj, ne = self.driver.advance(inbox.address + pos * RB, inbox.n - pos)
                self.journal.append(self.driver.journal_buffer[:nj], sync=False)  # a frame per pass
                journaled += nj
                if ne:
                    reports.append(self.driver.edge_buffer[:ne].copy())
                pos += used
                if used == 0 and self.driver.idle:
                    break  # an incomplete command: the rest comes with a later pop
            if pos:
                busy = True
                self.commands += pos
                inbox.take(pos)
        self.commit(self.journal, journaled)  # one group commit per turn (fsync mode), before anything is told
        for r in reports:
            self.publish_reports(self.reports, r)
        return busy

    def applied_seq(self) -> int:
        return int(self.driver.order.seq)

    def close(self) -> None:
        self.journal.close()


# --- placement per-engine ---------------------------------------------------------------------
class OrderWorker(Worker):
    """The sequencer: matching's results first, then client and admin commands while credits
    last; each pass a journal frame; one group commit per turn; then forward to risk."""

    def __init__(self, engine: order.OrderEngine, journal: JournalWriter, cmd_rings: list[Ring], results: Ring,
                 out: Ring, wait, heartbeat_ms: int, batch: int = 4096):
        super().__init__(cmd_rings + [results], wait, heartbeat_ms)
        self.engine, self.journal, self.rings, self.results, self.out = engine, journal, cmd_rings, results, out
        self.res = Inbox(batch)
        self.cmds = [Inbox(batch) for _ in cmd_rings]
        # One turn sequences at most every result and command held: each in one place.
        self.seq = np.zeros((batch * (1 + len(cmd_rings)), RB), np.uint8)

    def turn(self) -> bool:
        got = self.res.fill(self.results)
        if not self.stop:  # stopping: no new commands, only the results owed
            for inbox, ring in zip(self.cmds, self.rings):
                k = inbox.fill(ring)
                self.observe(inbox, k)
                got += k
        oc, ns = self.engine.control.ctypes.data, 0
        for inbox in self.cmds:
            while self.res.n or inbox.n:
                used_r, used_c, made = order.run(oc, self.res.address, self.res.n, inbox.address, inbox.n,
                                                 self.seq.ctypes.data + ns * RB, len(self.seq) - ns)
                self.res.take(used_r)
                inbox.take(used_c)
                if made:
                    self.journal.append(self.seq[ns:ns + made], sync=False)  # a frame per pass
                    ns += made
                if used_r == 0 and used_c == 0:
                    break  # out of credits, or the start of a command waits for its rest
        if ns:
            self.commit(self.journal, ns)  # the group commit, before anything goes downstream
            self.push(self.out, self.seq[:ns])
        return bool(got or ns)

    def waiting_on(self) -> list[Ring]:
        """The inputs that can make progress: out of credits (or stopping), commands waiting in
        a ring cannot, and waking for them would spin (it did: a core lost on a 2-core host)."""
        admit = not self.stop and self.engine.in_flight < self.engine.max_in_flight
        return [self.results] + [r for r, box in zip(self.rings, self.cmds) if admit and box.n < len(box.buf)]

    def idle_wait(self) -> None:
        self.wait.wait_for_any(self.waiting_on(), self.wait_s())

    def finished(self) -> bool:
        return self.engine.in_flight == 0 and self.res.n == 0 and self.results.readable() == 0

    def close(self) -> None:
        self.journal.close()


class RiskWorker(Worker):
    """Risk: the sequenced stream in; orders for matching, settled records for position out.
    Never waits for room on the matching ring (see the module doc): a spill list instead."""

    def __init__(self, engine: risk.RiskEngine, inp: Ring, to_matching: Ring, to_position: Ring, wait,
                 heartbeat_ms: int, batch: int = 4096):
        super().__init__([inp], wait, heartbeat_ms)
        self.engine, self.inp, self.to_matching, self.to_position = engine, inp, to_matching, to_position
        self.inbox = Inbox(batch)
        self.a = np.zeros((batch * risk.OUT_A_PER_RECORD + 3, RB), np.uint8)
        self.b = np.zeros((batch * risk.OUT_B_PER_RECORD, RB), np.uint8)
        self.spill: list[np.ndarray] = []

    def _to_matching(self, records: np.ndarray) -> bool:
        """Push what fits now, spill the rest in order. Returns True if anything moved."""
        if not self.spill:
            k = self.to_matching.push(records)
            if k < len(records):
                self.spill.append(records[k:].copy())
            return k > 0
        self.spill.append(records.copy())
        return False

    def _flush_spill(self) -> bool:
        moved = False
        while self.spill:
            head = self.spill[0]
            k = self.to_matching.push(head)
            moved |= k > 0
            if k < len(head):
                self.spill[0] = head[k:]
                break
            self.spill.pop(0)
        return moved

    def turn(self) -> bool:
        busy = self._flush_spill()
        got = self.inbox.fill(self.inp)
        self.observe(self.inbox, got)
        busy |= got > 0
        rc = self.engine.control.ctypes.data
        while self.inbox.n:
            used, na, nb = risk.run(rc, self.inbox.address, self.inbox.n, self.a.ctypes.data, len(self.a),
                                    self.b.ctypes.data, len(self.b))
            if used == 0:
                break  # the start of a multi-record command: its rest comes with a later pop
            self.inbox.take(used)
            busy = True
            if na:
                self._to_matching(self.a[:na])
            if nb:
                self.publish(self.to_position, self.b[:nb])
        return busy

    def applied_seq(self) -> int:
        return self.inbox.last_seq

    def idle_wait(self) -> None:
        if self.spill:  # matching's ring is full: wait for room there (new input waits meanwhile)
            self.wait.wait_for_space(self.to_matching, 1, self.wait_s())
        else:
            super().idle_wait()

    def finished(self) -> bool:
        return not self.spill and self.inbox.n == 0 and upstream_gone(self.inp) and self.inp.readable() == 0


class MatchingWorker(Worker):
    """Matching: orders in, results out to the order engine."""

    def __init__(self, engine: matching.MatchingEngine, inp: Ring, results: Ring, wait, heartbeat_ms: int,
                 batch: int = 4096):
        super().__init__([inp], wait, heartbeat_ms)
        self.engine, self.inp, self.results = engine, inp, results
        self.inbox = Inbox(batch)
        self.m_cap = engine.min_out_capacity
        self.out = np.zeros((max(batch, 2 * self.m_cap), RB), np.uint8)

    def turn(self) -> bool:
        got = self.inbox.fill(self.inp)
        self.observe(self.inbox, got)
        busy = got > 0
        mc, nm = self.engine.control.ctypes.data, 0
        while self.inbox.n or self.engine.pending:
            if len(self.out) - nm < self.m_cap:
                self.push(self.results, self.out[:nm])
                nm = 0
            used, made = matching.run(mc, self.inbox.address, self.inbox.n, self.out.ctypes.data + nm * RB, self.m_cap)
            self.inbox.take(used)
            nm += made
            if used == 0 and made == 0:
                break  # the start of a multi-record command: its rest comes with a later pop
            busy = True
        if nm:
            self.push(self.results, self.out[:nm])
        return busy

    def applied_seq(self) -> int:
        return self.inbox.last_seq

    def finished(self) -> bool:
        return (self.inbox.n == 0 and not self.engine.pending and upstream_gone(self.inp)
                and self.inp.readable() == 0)


class PositionWorker(Worker):
    """Position: settled records in, the client-facing report stream out. Its inbox holds a
    whole ring, so every pop ends where risk's publishes end: at a sequence boundary."""

    def __init__(self, engine: position.PositionEngine, inp: Ring, reports: list[Ring], wait, heartbeat_ms: int):
        super().__init__([inp], wait, heartbeat_ms)
        self.engine, self.inp, self.reports = engine, inp, reports
        self.inbox = Inbox(inp.capacity)
        self.out = np.zeros((inp.capacity, RB), np.uint8)

    def turn(self) -> bool:
        got = self.inbox.fill(self.inp)
        if not got:
            return False
        self.observe(self.inbox, got)
        used, made = position.run(self.engine.control.ctypes.data, self.inbox.address, self.inbox.n,
                                  self.out.ctypes.data, len(self.out))
        if used != self.inbox.n:
            raise RuntimeError("position: output buffer smaller than its input (a sizing bug)")
        self.inbox.take(used)
        self.publish_reports(self.reports, self.out[:made])
        return True

    def finished(self) -> bool:
        return self.inbox.n == 0 and upstream_gone(self.inp) and self.inp.readable() == 0


# --- process bodies ---------------------------------------------------------------------------
def warm_up(engines: InProcessDriver) -> list:
    """Compile (or load from numba's cache) every compiled entry a worker calls from Python,
    on zero records (no state changes), so workers forked afterwards start warm. Returns the
    dispatchers warmed."""
    scratch = np.zeros((max(engines.matching.min_out_capacity, 1), RB), np.uint8)
    a = scratch.ctypes.data
    order.run(engines.order.control.ctypes.data, a, 0, a, 0, a, 0)
    order.command_records(a, 0)
    risk.run(engines.risk.control.ctypes.data, a, 0, a, 0, a, 0)
    if not engines.matching.pending:
        matching.run(engines.matching.control.ctypes.data, a, 0, a, len(scratch))
    position.run(engines.position.control.ctypes.data, a, 0, a, 0)
    W.spin_until_any_readable(np.zeros(0, np.int64), 0)
    return [order.run, order.command_records, risk.run, matching.run, position.run, W.spin_until_any_readable,
            *warm_publishers()]


def warm_publishers() -> list:
    """The stats and state-table writers every placement's workers call, compiled touching no
    table (forked workers start warm)."""
    from numba import types

    i64 = types.int64
    matching.publish_depth.compile((i64,) * 3)
    risk.publish_balances.compile((i64,) * 3)
    return [*S.warm(), matching.publish_depth, risk.publish_balances]



def _attach(instance: str, names: list[str], role: str, lock_memory: bool = False) -> list[Ring]:
    rings = []
    try:
        for name in names:
            rings.append(Ring.attach(instance, name, role=role, lock_memory=lock_memory))
    except BaseException:
        for r in rings:
            r.close(unlink=False)
        raise
    return rings


def _wake_by_eventfd(rings: list[Ring], fds: list[int] | None) -> None:
    for ring, fd in zip(rings, fds or ()):
        ring.wake_fd = fd


def peers_beating(rings: list[Ring], stale_ns: int):
    """healthy(now_ns) for a Pinger: every ring's consumer heartbeat (another engine worker's)
    is at most `stale_ns` old: the supervisor's test of a live worker."""
    def healthy(now_ns: int) -> bool:
        for ring in rings:
            if now_ns - ring.stats().consumer_heartbeat_ns > stale_ns:
                return False
        return True
    return healthy


def worker_main(engine: str, engines: InProcessDriver, journal: JournalWriter | None, instance: str, sources: int,
                wait_name: str, waiters: int, heartbeat_ms: int, cpu: int | None, max_in_flight: int,
                report_wake_fds: list[int] | None = None, watchdog_s: float | None = None,
                notify_socket: str | None = None, lock_memory: bool = False) -> int:
    """Body of a forked engine process. `engine` is "engines" (placement single: all four)
    or one of ENGINES; `engines` holds the recovered engines, inherited warm through fork.
    `report_wake_fds`: per reports ring, the eventfd its edge waits on (Ring.wake_fd), if any.
    `lock_memory`: mlock the segments it maps (the supervisor's decision, runtime.lock_memory).
    `watchdog_s`: systemd's WatchdogSec, from the supervisor (this process is not
    WATCHDOG_PID, so it does not read it itself): the loop pings `notify_socket` (default
    $NOTIFY_SOCKET) every half of it while every engine worker of the instance beats
    (sdnotify.py)."""
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    wait = W.make(wait_name, processes=waiters)
    cmds = [cmd_ring(s) for s in range(sources)]
    lk = lock_memory
    if engine == "engines":
        ins, outs = _attach(instance, cmds, "consumer", lk), _attach(instance, reports_rings(sources), "producer", lk)
        _wake_by_eventfd(outs, report_wake_fds)
        worker = EngineWorker(engines, journal, ins, outs, wait, heartbeat_ms)
    elif engine == "order":
        engines.order.max_in_flight = max_in_flight
        ins, outs = _attach(instance, cmds + [MATCHING_ORDER], "consumer", lk), _attach(instance, [ORDER_RISK], "producer", lk)
        worker = OrderWorker(engines.order, journal, ins[:-1], ins[-1], outs[0], wait, heartbeat_ms)
    elif engine == "risk":
        ins, outs = _attach(instance, [ORDER_RISK], "consumer", lk), _attach(instance, [RISK_MATCHING, RISK_POSITION],
                                                                         "producer", lk)
        worker = RiskWorker(engines.risk, ins[0], outs[0], outs[1], wait, heartbeat_ms)
    elif engine == "matching":
        ins, outs = _attach(instance, [RISK_MATCHING], "consumer", lk), _attach(instance, [MATCHING_ORDER], "producer", lk)
        worker = MatchingWorker(engines.matching, ins[0], outs[0], wait, heartbeat_ms)
    elif engine == "position":
        ins, outs = _attach(instance, [RISK_POSITION], "consumer", lk), _attach(instance, reports_rings(sources), "producer", lk)
        _wake_by_eventfd(outs, report_wake_fds)
        worker = PositionWorker(engines.position, ins[0], outs, wait, heartbeat_ms)
    else:
        raise ValueError(f"engine={engine!r} (engines, or one of {', '.join(ENGINES)})")
    if engine in ("risk", "matching"):  # the recovered state includes every sequence up to here
        worker.inbox.last_seq = int(engines.order.seq)
    worker.tables = StateTables(instance, engines.matching if engine in ("engines", "matching") else None,
                                engines.risk if engine in ("engines", "risk") else None, lock_memory)
    worker.stats = S.StatsWriter(instance, engine, lock_memory)
    worker.stats.describe(wait.name, cpu)
    worker.stage = worker.stats.row("order" if engine == "engines" else engine)
    if journal is not None and engine in ("engines", "order"):  # where the journal stands before any commit
        S.observe(worker.stats.base, worker.stats.row("journal"), -1, journal.next_seq - 1, 0)
    signal.signal(signal.SIGTERM, worker._on_signal)
    signal.signal(signal.SIGINT, worker._on_signal)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGINT})  # blocked since the fork
    peers: list[Ring] = []
    try:
        if watchdog_s:
            notifier = sdnotify.Notifier(None if notify_socket is None else {sdnotify.NOTIFY_SOCKET: notify_socket})
            if notifier.enabled:
                others = [] if engine == "engines" else [beat_ring_name(e) for e in ENGINES if e != engine]
                peers = _attach(instance, others, OBSERVER)
                worker.pinger = sdnotify.Pinger(
                    notifier, watchdog_s, peers_beating(peers, heartbeat_ms * 1_000_000) if peers else None,
                    warn=lambda text: Log(f"{engine} worker", stream=sys.stderr).say(text, "warning"))
        worker.beat()
        worker.run()
    finally:
        for r in ins + outs + peers:
            r.close(unlink=False)
        worker.stats.close()
        worker.tables.close()
    return 0
