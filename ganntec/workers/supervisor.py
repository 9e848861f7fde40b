"""The supervisor behind `ganntec run`: segments, recovery, the engine worker, its health,
snapshots, shutdown.

Start (the same path after a crash): remove the segments a dead instance left, create the
rings (cmd.0 for admin, cmd.1..N for edges, reports), open the journal for writing (one
writer: a lock; a torn tail is cut), recover the engines (newest fitting snapshot + the
journal after it, every record verified), finish the replay (results the crash kept from the
journal are sequenced now), fund the configured accounts on a first start, then fork the
engine worker, which inherits the warm compiled code and the recovered engines.

Health: the worker is alive while its heartbeat (cmd.0's consumer heartbeat) is fresher than
`runtime.heartbeat_ms`, not merely while its pid exists. A worker that exits or goes stale is
killed, and the engines are recovered by replay and started again; the rings and whoever
uses them stay up. Reports lost with the worker (journaled, not yet published) are published
from the replay: the last sequence on the reports ring says where they stopped.

Snapshots: between health checks the supervisor tails the journal with its own replayer and
writes a snapshot every `runtime.snapshot_every` records; the worker never pauses for one.
With `journal.archive`, segments the worker has rolled past are gzipped there too.

Signals only record: SIGTERM or SIGINT asks for a clean stop (the worker finishes its turn,
journaled and reported, then everything is unlinked); a second SIGINT forces the exit.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import time
from dataclasses import dataclass

import numpy as np

from ganntec.config import Config
from ganntec.journal.journal import JournalReader, JournalWriter, archive_rolled
from ganntec.journal.replay import Replayer
from ganntec.journal.snapshot import recover, save
from ganntec.shm import records as R
from ganntec.shm import wait as W
from ganntec.shm.records import RecordType
from ganntec.shm.ring import Ring
from ganntec.shm.segment import remove_stale
from ganntec.workers.runtime import REPORTS, cmd_ring, last_reported_seq, publish_turn, worker_main

PR_SET_PDEATHSIG = 1


@dataclass
class Paths:
    journal: str
    snapshots: str

    @classmethod
    def of(cls, cfg: Config) -> "Paths":
        root = os.path.abspath(cfg.instance.data_dir)
        return cls(os.path.join(root, "journal"), os.path.join(root, "snapshots"))


def replayer_factory(cfg: Config):
    loss = -1 if not cfg.engine.loss_asset else cfg.asset(cfg.engine.loss_asset).asset_id
    table = cfg.symbol_rows()

    def make() -> Replayer:
        return Replayer(table, len(cfg.assets), cfg.engine.max_accounts, cfg.engine.max_orders, cfg.engine.max_levels,
                        cfg.engine.fee_account, loss, max_in_flight=cfg.runtime.max_in_flight)
    return make


def funding_records(cfg: Config) -> np.ndarray:
    """ACCOUNT_OPEN and CREDIT records for the configured accounts (a first start's admin
    commands; journaled like any other)."""
    recs = []
    for acc in cfg.accounts:
        r = R.empty(RecordType.ACCOUNT_OPEN)
        r["account_id"], r["permissions"] = acc.id, int(R.Permission.TRADE | R.Permission.READ | R.Permission.USER_STREAM)
        r["maker_fee_e8"] = r["taker_fee_e8"] = -1
        recs.append(r)
        for name, amount in acc.balances.items():
            asset = cfg.asset(name)
            c = R.empty(RecordType.CREDIT)
            c["account_id"], c["asset_id"], c["amount_minor"] = acc.id, asset.asset_id, asset.to_minor(name, amount)
            recs.append(c)
    return R.concat(recs) if recs else np.zeros(0, R.RECORD_DTYPE)


class Snapshotter:
    """Tails the journal with its own replayer; saves a snapshot every `every` records."""

    def __init__(self, cfg: Config, paths: Paths):
        self.paths, self.every = paths, cfg.runtime.snapshot_every
        self.make = replayer_factory(cfg)
        self.rp: Replayer | None = None
        self.saved_seq = 0

    def poll(self) -> str | None:
        if self.rp is None:
            self.rp, self.saved_seq, _ = recover(self.make, self.paths.journal, self.paths.snapshots)
        for batch in JournalReader(self.paths.journal).batches(from_seq=self.rp.order.seq + 1 + len(self.rp._carry)):
            self.rp.feed(batch, keep_edge=False)
        if self.rp.order.seq - self.saved_seq >= self.every:
            self.saved_seq = self.rp.order.seq
            return save(self.rp, self.paths.snapshots)
        return None


class Supervisor:
    def __init__(self, cfg: Config, log=None):
        self.cfg = cfg
        self.paths = Paths.of(cfg)
        self.log = log or (lambda msg: print(f"ganntec: {msg}", flush=True))
        self.instance = cfg.instance.name
        self.sources = 1 + cfg.edge.processes  # admin + one ring per edge process
        self.rings: list[Ring] = []
        self.reports: Ring | None = None
        self.pid = self.last_pid = 0
        self.report_floor = 0  # reports of sequences up to here belong to an earlier run
        self.stop_requests = 0
        self.restarts = 0
        self.snapshotter = Snapshotter(cfg, self.paths)
        self.wait_name = cfg.runtime.wait
        # Processes that want a CPU, for `auto`: the worker, the supervisor (snapshots), edges.
        self.waiters = 2 + cfg.edge.processes

    # --- signals: record only ------------------------------------------------------------
    def _on_signal(self, signum, frame):
        self.stop_requests += 1

    # --- start ---------------------------------------------------------------------------
    def start(self) -> None:
        removed = remove_stale(self.instance)
        if removed:
            self.log(f"removed {len(removed)} segments a dead instance {self.instance!r} left: {', '.join(removed)}")
        cap = self.cfg.runtime.ring_capacity
        try:
            for s in range(self.sources):
                self.rings.append(Ring.create(self.instance, cmd_ring(s), cap, lock_memory=False))
            self.reports = Ring.create(self.instance, REPORTS, cap, lock_memory=False)
            os.makedirs(self.paths.journal, exist_ok=True)
            self._start_engines(first=True)
        except BaseException:
            self._unlink()
            raise

    def _start_engines(self, first: bool) -> None:
        cfg = self.cfg
        writer = JournalWriter(self.paths.journal, cfg.journal.durability, cfg.journal.segment_bytes)
        try:
            if writer.truncated:
                path, offset, why = writer.truncated
                self.log(f"journal: cut a torn tail at {path} offset {offset} ({why})")
            floor = None if first else max(last_reported_seq(self.reports), self.report_floor)
            t0 = time.monotonic()
            rp, base, edge = recover(replayer_factory(cfg), self.paths.journal, self.paths.snapshots, max_seq=floor)
            more_journal, more_edge = rp.finish()
            writer.append(more_journal)
            self.log(f"recovered to sequence {rp.order.seq} in {time.monotonic() - t0:.2f} s "
                     f"(snapshot {base or 'none'}, {rp.replayed} journal records replayed, "
                     f"{len(more_journal)} results sequenced now)")
            wait = W.make(self.wait_name, processes=self.waiters)
            if first:
                if rp.order.seq == 0 and len(cfg.accounts):
                    journal, fund_edge = rp.run(funding_records(cfg))
                    writer.append(journal)
                    publish_turn(self.reports, R.as_records(fund_edge).view(np.uint8).reshape(-1, R.RECORD_BYTES), wait)
                    self.log(f"funded {len(cfg.accounts)} accounts")
                self.report_floor = rp.order.seq
            else:
                lost = R.as_records(edge)
                lost = lost[lost["seq"] > floor] if len(lost) else lost
                out = R.concat([lost, more_edge])
                if len(out):
                    publish_turn(self.reports, out.view(np.uint8).reshape(-1, R.RECORD_BYTES), wait)
                    self.log(f"published {len(out)} reports the stopped worker had not")
        except BaseException:
            writer.close()
            raise
        self.forked_ns = time.monotonic_ns()
        self.pid = self.last_pid = self._fork_worker(rp, writer)
        writer.detach()  # the worker writes the journal now

    def _fork_worker(self, rp: Replayer, writer: JournalWriter) -> int:
        cpus = sorted(self.cfg.cpu_plan())
        cpu = cpus[-1] if self.cfg.runtime.cpus != "auto" else None
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid:
            return pid
        code = 1
        try:  # the worker: dies with the supervisor; its own signal handlers
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
            if os.getppid() == 1:
                os._exit(1)
            for r in self.rings + [self.reports]:
                r.close(unlink=False)  # attach afresh with roles
            code = worker_main(rp, writer, self.instance, self.sources, self.wait_name, self.waiters,
                               self.cfg.runtime.heartbeat_ms, cpu)
        except BaseException as exc:  # noqa: BLE001 - report, then exit without unwinding the parent's state
            print(f"ganntec worker: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        finally:
            os._exit(code)

    # --- health --------------------------------------------------------------------------
    def _worker_state(self) -> str | None:
        """None while healthy, else why not."""
        pid, status = os.waitpid(self.pid, os.WNOHANG)
        if pid:
            self.pid = 0
            return f"exited ({_describe(status)})"
        # A worker that never beat (hung before its first turn) is as old as its fork.
        beat = max(self.rings[0].stats().consumer_heartbeat_ns, self.forked_ns)
        age_ms = (time.monotonic_ns() - beat) / 1e6
        if age_ms > self.cfg.runtime.heartbeat_ms:
            return f"heartbeat {age_ms:.0f} ms old"
        return None

    def _restart(self, why: str) -> None:
        self.log(f"engine worker {self.last_pid} {why}: recovering by replay")
        if self.pid:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
            self.pid = 0
        self.restarts += 1
        self._start_engines(first=False)
        self.log(f"engine worker restarted (pid {self.pid})")

    # --- run -----------------------------------------------------------------------------
    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        self.start()
        self.log(f"instance {self.instance!r} running: engine worker pid {self.pid} (placement single), "
                 f"journal {self.paths.journal} ({self.cfg.journal.durability}), rings "
                 f"{', '.join(r.name for r in self.rings + [self.reports])}")
        self.log("the Binance-compatible edge comes with issue 4/7; clients use the command rings until then")
        tick = self.cfg.runtime.heartbeat_ms / 4000
        code = 0
        try:
            while self.stop_requests == 0:
                time.sleep(tick)
                why = self._worker_state()
                if why and self.stop_requests == 0:
                    self._restart(why)
                    continue
                made = self.snapshotter.poll()
                if made:
                    self.log(f"snapshot {made}")
                if self.cfg.journal.archive:
                    for archive in archive_rolled(self.paths.journal):
                        self.log(f"journal: archived {archive}")
            code = self._stop()
        finally:
            self._unlink()
        return code

    def _stop(self) -> int:
        self.log("stopping")
        if self.pid:
            os.kill(self.pid, signal.SIGTERM)
            while True:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
                if pid:
                    self.pid = 0
                    break
                if self.stop_requests > 1:  # a second SIGINT: no more waiting
                    os.kill(self.pid, signal.SIGKILL)
                    os.waitpid(self.pid, 0)
                    self.pid = 0
                    self.log("forced exit")
                    return 1
                time.sleep(0.01)
        self.log("stopped cleanly")
        return 0

    def _unlink(self) -> None:
        for r in self.rings + ([self.reports] if self.reports else []):
            r.close(unlink=True)
        self.rings, self.reports = [], None


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exit code {os.WEXITSTATUS(status)}"
