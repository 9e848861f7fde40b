"""The supervisor behind `ganntec run`: segments, recovery, the engine workers, their
health, snapshots, shutdown.

Start (the same path after a crash): remove the segments a dead instance left, create the
rings (cmd.0 for admin, cmd.i and reports.i for edge i = 1..N), open the journal for writing (one
writer: a lock; a torn tail is cut), recover the engines (newest fitting snapshot + the
journal after it, every record verified), finish the replay (results the crash kept from the
journal are sequenced now), fund the configured accounts on a first start, then fork the
engine workers, which inherit the warm compiled code and the recovered engines: one process
(placement single) or one per engine with fresh rings between them (per-engine; runtime.py).

Health: a worker is alive while its heartbeat (its first input ring's consumer heartbeat) is
fresher than `runtime.heartbeat_ms`, not merely while its pid exists. When any engine worker
exits or goes stale, every engine worker is killed, and the engines are recovered by replay
and started again; the command and report rings and whoever uses them stay up. Reports lost
with the workers (journaled, not yet published) are published from the replay: the last
sequence on each reports ring says where that ring stopped.

Edges: `edge.processes` edge processes share one port (SO_REUSEPORT; port 0 is resolved here
once and held, so all bind the same one), each with its command ring cmd.<i> and its reports
ring reports.<i>. One that dies is started again after the engines recover (its projection
is rebuilt from the journal up to where they stand); the others stay up.

Snapshots: between health checks the supervisor tails the journal with its own replayer and
writes a snapshot every `runtime.snapshot_every` records; the workers never pause for one.
With `journal.archive`, segments the journal writer has rolled past are gzipped there too.

Signals only record: SIGTERM or SIGINT asks for a clean stop (each worker finishes what it
owes, journaled and reported, then everything is unlinked); a second SIGINT forces the exit.

systemd (`Type=notify`, `WatchdogSec=`; ganntec/sdnotify.py has the design): with
$NOTIFY_SOCKET set, READY=1 goes out from the health loop once start-up is done and seen done:
every engine worker has beaten twice since its fork (a whole turn of its loop), and every edge
process listens on its port(s) (its sockets, read from /proc through psutil; if they cannot be
read, READY does not wait for the edges). Until then the loop looks every 20 ms and the
snapshotter (whose first poll replays the journal) waits. STOPPING=1 when the stop begins,
STATUS= while starting, on restarts and on a failed start. The workers ping the watchdog from
their loops, with the interval this process (WATCHDOG_PID) hands them. Without
$NOTIFY_SOCKET none of this runs.
"""

from __future__ import annotations

import ctypes
import os
import resource
import signal
import socket
import sys
import time
from dataclasses import dataclass

import numpy as np
import psutil

from ganntec import sdnotify
from ganntec.config import Config, worker_cpus
from ganntec.edge import keys as edge_keys
from ganntec.edge.vault import MASTER_KEY_ENV, Vault, create_master_key, load_master_key
from ganntec.edge.server import ADMIN_EDGE, edge_main
from ganntec.edge.shared import EdgeShared
from ganntec.history.projector import history_main
from ganntec.journal.journal import JournalTail, JournalWriter, archive_rolled
from ganntec.journal.replay import Replayer
from ganntec.journal.snapshot import recover, save
from ganntec.logline import Log
from ganntec.metrics import SupervisorMetrics, timed_sync
from ganntec.shm import stats
from ganntec.shm import records as R
from ganntec.shm import wait as W
from ganntec.shm.records import RecordType
from ganntec.shm.ring import Ring, unlink_doorbells
from ganntec.shm.segment import remove_stale
from ganntec.workers.runtime import (
    ENGINES,
    FIRST_INPUT,
    INTERNAL_RINGS,
    MATCHING_ORDER,
    ORDER_DOORBELL,
    cmd_ring,
    last_reported_seq,
    make_tables,
    publish_turn,
    reports_ring,
    warm_publishers,
    warm_up,
    worker_main,
)

PR_SET_PDEATHSIG = 1
# An edge that exits this soon after its start, this many times in a row, is not restarted
# again (a bug or a bad environment, not a crash recovery can cure): the supervisor stops.
EDGE_QUICK_FAILURE_S = 10
EDGE_QUICK_FAILURES = 3
STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}
# Until READY=1 is sent, the health loop looks this often whether start-up is done.
READY_POLL_S = 0.02


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
        self.tail: JournalTail | None = None
        self.saved_seq = 0

    def poll(self) -> str | None:
        if self.rp is None:
            self.rp, self.saved_seq, _ = recover(self.make, self.paths.journal, self.paths.snapshots)
            self.tail = JournalTail(self.paths.journal, self.rp.order.seq + 1)
        new = self.tail.poll()  # only the frames written since the last poll are read
        if len(new):
            self.rp.feed(new, keep_edge=False)
        if self.rp.order.seq - self.saved_seq >= self.every:
            self.saved_seq = self.rp.order.seq
            return save(self.rp, self.paths.snapshots)
        return None


class Supervisor:
    def __init__(self, cfg: Config, log=None, environ=None):
        self.cfg = cfg
        self.paths = Paths.of(cfg)
        self.log = log or Log("supervisor").say
        self.metrics = SupervisorMetrics()  # multiprocess files under <data-dir>/metrics (metrics.prepare)
        for cause in ("worker", "edge"):
            self.metrics.recoveries.labels(cause)  # series exist at 0 before the first event
        for process in ("edge", "history"):
            self.metrics.edge_restarts.labels(process)
        self.instance = cfg.instance.name
        self.sources = 1 + cfg.edge.processes  # admin + one ring per edge process
        self.placement = cfg.placement()
        self.engines = ("engines",) if self.placement == "single" else ENGINES
        self.rings: list[Ring] = []
        self.reports: list[Ring] = []  # reports.1 .. reports.N
        self.internal: dict[str, Ring] = {}  # per-engine: the rings between engines
        self.pids: dict[str, int] = {}  # engine -> pid of its live process
        self.report_floor = 0  # reports of sequences up to here belong to an earlier run
        self.stop_requests = 0
        self.restarts = 0
        self.children: dict[str, int] = {}  # "edge <i>" / "history" -> pid
        self.edge_started: dict[int, float] = {}  # edge source -> monotonic start
        self.edge_quick_failures: dict[int, int] = {}
        self.port_holds: list[socket.socket] = []  # keep resolved ports 0 ours
        self.port, self.admin_port = cfg.edge.port, cfg.edge.admin_port
        self.edge_shared: EdgeShared | None = None  # what every edge process sees the same
        self.report_wake_fds: list[int] = []  # per reports ring: the eventfd its edge's loop polls
        self.master_key = b""  # the key vault's (security.master_key_file or GANNTEC_MASTER_KEY)
        self.snapshotter = Snapshotter(cfg, self.paths)
        self.wait_name = cfg.runtime.wait
        # Processes that want a CPU, for `auto`: the engine workers, the supervisor (snapshots), edges.
        self.waiters = len(self.engines) + 1 + cfg.edge.processes
        # systemd: READY/STOPPING/STATUS from here; the watchdog interval for the workers' pings.
        self.notify = sdnotify.Notifier(environ)
        self.watchdog_s, self.watchdog_why = (sdnotify.watchdog_setting(environ) if self.notify.enabled
                                              else (None, f"{sdnotify.NOTIFY_SOCKET} not set"))
        self.ready_sent = not self.notify.enabled  # nobody to tell: nothing to wait for
        self.edge_sockets_unseen = ""  # why the edges' listening sockets cannot be looked at
        self.recovered_seq = 0
        self.tables: list = []  # stats.<process> (shm/stats.py), depth, balances: ours to unlink
        self.stats: stats.StatsWriter | None = None  # stats.supervisor: heartbeat, recoveries
        self.lock_memory = False  # mlock the segments (runtime.lock_memory, decided at the start)
        self.first_beats: dict[str, int] = {}  # engine -> the first heartbeat seen since its fork

    # --- signals: record only ------------------------------------------------------------
    def _on_signal(self, signum, frame):
        self.stop_requests += 1

    # --- start ---------------------------------------------------------------------------
    def start(self) -> None:
        if self.notify.problem:
            self.log(f"systemd notification off: {self.notify.problem}")
        elif self.notify.enabled:
            watchdog = (f"watchdog: each engine worker's loop pings every {self.watchdog_s / 2:g} s "
                        f"(WatchdogSec {self.watchdog_s:g} s)" if self.watchdog_s
                        else f"no watchdog ({self.watchdog_why})")
            self.log(f"systemd: notifying {self.notify.socket_name}; READY=1 once the workers beat and the edges "
                     f"listen; {watchdog}")
            self.notify.status("starting: recovering the engines")
        self.lock_memory = self._memory_lock()
        removed = remove_stale(self.instance)
        if removed:
            self.log(f"removed {len(removed)} segments a dead instance {self.instance!r} left: {', '.join(removed)}")
        cap = self.cfg.runtime.ring_capacity
        try:
            processes = ["supervisor", *self.engines] + [f"edge.{e}" for e in range(1, self.sources)
                                                         if self.cfg.edge.enabled]
            lock = self.lock_memory
            self.tables = make_tables(self.instance, processes, len(self.cfg.symbols),
                                            self.cfg.engine.max_accounts * len(self.cfg.assets), lock)
            self.stats = stats.StatsWriter(self.instance, "supervisor")
            self.stats.describe("sleep", None)
            self.stats.beat(time.monotonic_ns())
            warm_publishers()  # every process's stats and table writers: forked processes start warm
            for s in range(self.sources):
                self.rings.append(Ring.create(self.instance, cmd_ring(s), cap, lock_memory=lock,
                                              doorbell=ORDER_DOORBELL))
            for e in range(1, self.sources):
                self.reports.append(Ring.create(self.instance, reports_ring(e), cap, lock_memory=lock))
            if self.cfg.edge.enabled:  # edges wait in their event loop (gateway.py); ring clients on semaphores
                self.report_wake_fds = [os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC) for _ in self.reports]
                for ring, fd in zip(self.reports, self.report_wake_fds):
                    ring.wake_fd = fd
            os.makedirs(self.paths.journal, exist_ok=True)
            if self.cfg.edge.enabled:
                self.master_key = self._master_key()
                self._first_admin()
                self._hold_ports()
                self.edge_shared = EdgeShared.create(self.instance, self.cfg.engine.max_accounts, lock_memory=lock)
            self.log("loading the compiled engines (the first start after an install compiles them: a minute or "
                     "two; numba caches them for later starts)")
            rp = self._start_engines(first=True)
            if self.cfg.edge.enabled:
                for e in range(1, self.sources):
                    self._start_edge(rp, e)
                self._start_history()
        except BaseException:
            self._kill_children()
            self._kill_workers()
            self._unlink()
            raise

    def _start_engines(self, first: bool) -> Replayer:
        cfg = self.cfg
        writer = JournalWriter(self.paths.journal, cfg.journal.durability, cfg.journal.segment_bytes,
                               sync=timed_sync(os.fdatasync, self.metrics.fsync_seconds))  # (timed in the worker)
        try:
            if writer.truncated:
                path, offset, why = writer.truncated
                self.log(f"journal: cut a torn tail at {path} offset {offset} ({why})")
            floor = None if first else max(min(last_reported_seq(r) for r in self.reports), self.report_floor)
            t0 = time.monotonic()
            rp, base, edge = recover(replayer_factory(cfg), self.paths.journal, self.paths.snapshots, max_seq=floor)
            more_journal, more_edge = rp.finish()
            writer.append(more_journal)
            self.recovered_seq = int(rp.order.seq)
            stats.observe(self.stats.base, self.stats.row("recovery"), int((time.monotonic() - t0) * 1e9),
                          self.recovered_seq, 0)
            self.log(f"recovered to sequence {rp.order.seq} in {time.monotonic() - t0:.2f} s "
                     f"(snapshot {base or 'none'}, {rp.replayed} journal records replayed, "
                     f"{len(more_journal)} results sequenced now)", seq=int(rp.order.seq))
            wait = W.make(self.wait_name, processes=self.waiters)
            if first:
                if rp.order.seq == 0 and len(cfg.accounts):
                    funding = funding_records(cfg)
                    if cfg.edge.enabled:  # an API key per configured account, journaled with its funding
                        keys, handout = edge_keys.config_keys(Vault(cfg.instance.data_dir, self.master_key),
                                                              cfg.instance.data_dir, [a.id for a in cfg.accounts],
                                                              cfg.security.demo_keys, time.time_ns() // 1_000_000)
                        funding = R.concat([funding, *keys])
                    journal, fund_edge = rp.run(funding)
                    refused = journal[journal["reason"] != 0]
                    if len(refused):  # the config is checked against this; a refusal is a bug
                        r = R.view(refused[0])
                        raise RuntimeError(f"funding refused: {R.RecordType(int(r['type'])).name} of account "
                                           f"{int(r['account_id'])} ({R.Reason(int(r['reason'])).name})")
                    writer.append(journal)
                    for ring in self.reports:
                        publish_turn(ring, fund_edge, wait)
                    self.log(f"funded {len(cfg.accounts)} accounts")
                self.report_floor = rp.order.seq
            else:
                lost = R.as_records(edge)
                lost = lost[lost["seq"] > floor] if len(lost) else lost
                out = R.concat([lost, more_edge])
                for ring in self.reports:  # each ring what it lacks (a crash may fall between them)
                    owed = out[out["seq"] > last_reported_seq(ring)] if len(out) else out
                    if len(owed):
                        publish_turn(ring, owed.view(np.uint8).reshape(-1, R.RECORD_BYTES), wait)
                        self.log(f"published on {ring.name} {len(owed)} reports the stopped workers had not")
            if self.placement == "per-engine":
                warm_up(rp)  # the workers' own entry points, compiled here once: they start warm
                self._make_internal_rings()
        except BaseException:
            writer.close()
            raise
        self.forked_ns = time.monotonic_ns()
        self.first_beats = {}
        pins = worker_cpus(self.cfg)  # {} when runtime.cpus is auto; ganntec tune isolates these CPUs
        try:
            for engine in self.engines:  # pinned from the plan's last CPU down
                self.pids[engine] = self._fork_worker(engine, rp, writer, pins.get(engine))
        finally:
            writer.detach()  # the sequencing worker writes the journal now
        return rp

    def _memory_lock(self) -> bool:
        """runtime.lock_memory: required locks (a too-low limit then stops the start, before
        systemd hears READY=1); auto locks when this process may lock what the segments need
        (CAP_IPC_LOCK, or RLIMIT_MEMLOCK at least deploy's count), else says so; off never."""
        mode = self.cfg.runtime.lock_memory
        if mode != "auto":
            return mode == "required"
        from ganntec.deploy import plan

        need = plan(self.cfg).locked_bytes
        soft, _ = resource.getrlimit(resource.RLIMIT_MEMLOCK)
        if _may_lock_any() or soft == resource.RLIM_INFINITY or soft >= need:
            return True
        self.log(f"memory: not locking the shared segments: RLIMIT_MEMLOCK is {soft} bytes, they need about {need} "
                 f"(runtime.lock_memory = \"auto\"); raise it (`ulimit -l`, LimitMEMLOCK= from ganntec deploy emit) "
                 f"or set \"required\" to refuse to run unlocked")
        return False

    def _make_internal_rings(self) -> None:
        """Fresh rings between the engines (whatever the old ones held is in the journal)."""
        for ring in self.internal.values():
            ring.close(unlink=True)
        self.internal = {}
        cap = self.cfg.runtime.ring_capacity
        for name in INTERNAL_RINGS:
            bell = ORDER_DOORBELL if name == MATCHING_ORDER else 0
            self.internal[name] = Ring.create(self.instance, name, cap, lock_memory=self.lock_memory, doorbell=bell)

    def _fork(self, what: str, body) -> int:
        """Fork a child that dies with the supervisor and runs `body()` (its exit code).

        A stop asked while the child starts must reach the child's handler, not the copy of
        ours it inherits: the child starts with the stop signals blocked and unblocks them once
        its own handling is in place (a pending one is delivered then)."""
        sys.stdout.flush()
        sys.stderr.flush()
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        pid = os.fork()
        if pid:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            return pid
        code = 1
        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
            if os.getppid() == 1:
                os._exit(1)
            for hold in self.port_holds:
                hold.close()
            self.notify.close()  # the supervisor's socket (a worker that notifies makes its own)
            if self.edge_shared is not None:
                self.edge_shared.close(unlink=False)
            for r in self.rings + self.reports + list(self.internal.values()):
                r.close(unlink=False)  # the child attaches afresh, with its roles
            code = body()
        except BaseException as exc:  # noqa: BLE001 - report, then exit without unwinding the parent's state
            Log(what, stream=sys.stderr).error(f"{type(exc).__name__}: {exc}")
        finally:
            os._exit(code)

    def _fork_worker(self, engine: str, rp: Replayer, writer: JournalWriter, cpu: int | None) -> int:
        def body() -> int:
            writes = engine in ("engines", "order")
            if not writes:
                writer.detach()
            return worker_main(engine, rp, writer if writes else None, self.instance, self.sources, self.wait_name,
                               self.waiters, self.cfg.runtime.heartbeat_ms, cpu, self.cfg.runtime.max_in_flight,
                               self.report_wake_fds, watchdog_s=self.watchdog_s,
                               notify_socket=self.notify.socket_name, lock_memory=self.lock_memory)
        return self._fork(f"{engine} worker", body)

    # --- the edges --------------------------------------------------------------------------
    def _hold_ports(self) -> None:
        """Every edge binds the same port, and a restarted edge 1 the same admin port: port 0
        becomes a free port here, held by a bound (never listening, so never handed
        connections) SO_REUSEPORT socket until the stop."""
        if not self.port:
            self.port = self._hold(self.cfg.edge.host)
        if not self.admin_port:
            self.admin_port = self._hold(self.cfg.edge.admin_host)

    def _hold(self, host: str) -> int:
        hold = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        hold.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        hold.bind((host, 0))
        self.port_holds.append(hold)
        return hold.getsockname()[1]

    def _master_key(self) -> bytes:
        """The vault's master key: GANNTEC_MASTER_KEY, else the configured file; the default
        file (<data_dir>/master.key) is made on the first start, a configured one never is."""
        sec, data = self.cfg.security, self.cfg.instance.data_dir
        path = sec.master_key_path(data)
        if MASTER_KEY_ENV not in os.environ and not sec.master_key_file and not os.path.exists(path):
            os.makedirs(os.path.dirname(path), exist_ok=True)
            create_master_key(path)
            self.log(f"made the key vault's master key {path} (mode 0600; keep it apart from backups of the data "
                     f"directory, or set {MASTER_KEY_ENV})")
        return load_master_key(path, os.environ)  # a VaultError names the field: `ganntec run` prints it

    def _first_admin(self) -> None:
        from ganntec.admin.auth import initial_admin

        users = self.cfg.security.users_path(self.cfg.instance.data_dir)
        made = initial_admin(users)
        if made:
            self.log(f"admin user 'admin' created in {users}; its password is in {made} (mode 0600): log in with "
                     f"`ganntec admin login --user admin`, then change it or delete that file")

    def _start_edge(self, rp: Replayer, source: int) -> None:
        """Fork edge `source` (it stays up while the engines restart)."""
        def body() -> int:
            for sig in STOP_SIGNALS:
                signal.signal(sig, signal.SIG_DFL)  # until the edge's event loop handles them
            signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
            return edge_main(self.cfg, rp, replayer_factory(self.cfg), self.paths.journal, self.master_key,
                             source, self.report_wake_fds[source - 1], self.port, self.admin_port,
                             lock_memory=self.lock_memory)
        self.children[f"edge {source}"] = self._fork(f"edge {source}", body)
        self.edge_started[source] = time.monotonic()

    def _discard_unread(self, name: str) -> None:
        """Empty a dead edge's reports ring: its successor's projection is rebuilt from the
        journal, and a full ring would block the republishing of what the workers owed."""
        with Ring.attach(self.instance, name, role="consumer") as r:  # taken over from the dead
            scratch = np.zeros((min(r.capacity, 4096), R.RECORD_BYTES), np.uint8)
            while r.pop(scratch):
                pass

    def _edge_failed(self, source: int) -> bool:
        """Count a failure of edge `source`; True once it failed too often too quickly."""
        quick = time.monotonic() - self.edge_started.get(source, 0.0) < EDGE_QUICK_FAILURE_S
        self.edge_quick_failures[source] = self.edge_quick_failures.get(source, 0) + 1 if quick else 0
        return self.edge_quick_failures[source] >= EDGE_QUICK_FAILURES

    # --- the history process ----------------------------------------------------------------
    def _start_history(self) -> None:
        """Fork the history process (it follows the journal on its own; see history/projector.py)."""
        def body() -> int:
            return history_main(self.cfg.instance.data_dir, self.paths.journal, replayer_factory(self.cfg))
        self.children["history"] = self._fork("history", body)

    # --- children (edges, history) by name ---------------------------------------------------
    def _kill_child(self, name: str) -> None:
        """SIGKILL the child `name` and reap it."""
        pid = self.children.pop(name, 0)
        if pid:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)

    def _kill_children(self) -> None:
        for name in list(self.children):
            self._kill_child(name)

    def _stop_child(self, name: str) -> None:
        """SIGTERM the child `name`; kill it if it has not exited in 10 s."""
        pid = self.children.get(name, 0)
        if not pid:
            return
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and self.stop_requests < 2:
            if os.waitpid(pid, os.WNOHANG)[0]:
                del self.children[name]
                return
            time.sleep(0.01)
        self._kill_child(name)

    def _exited(self, name: str) -> str | None:
        """Why the child `name` is gone (reaped now), or None while it runs."""
        pid = self.children.get(name, 0)
        if not pid:
            return None
        done, status = os.waitpid(pid, os.WNOHANG)
        if not done:
            return None
        del self.children[name]
        return f"{name} {pid} exited ({_describe(status)})"

    # --- health --------------------------------------------------------------------------
    def _beat_ring(self, engine: str) -> Ring:
        """The ring whose consumer heartbeat is this engine's (its first input)."""
        return self.rings[0] if engine in ("engines", "order") else self.internal[FIRST_INPUT[engine]]

    def _worker_state(self) -> str | None:
        """None while every engine worker is healthy, else which is not and why."""
        for engine, wpid in list(self.pids.items()):
            pid, status = os.waitpid(wpid, os.WNOHANG)
            if pid:
                del self.pids[engine]
                return f"{engine} worker {wpid} exited ({_describe(status)})"
        for engine, wpid in self.pids.items():
            # A worker that never beat (hung before its first turn) is as old as its fork.
            beat = max(self._beat_ring(engine).stats().consumer_heartbeat_ns, self.forked_ns)
            age_ms = (time.monotonic_ns() - beat) / 1e6
            if age_ms > self.cfg.runtime.heartbeat_ms:
                return f"{engine} worker {wpid} heartbeat {age_ms:.0f} ms old"
        return None

    # --- systemd readiness ----------------------------------------------------------------
    def _awaiting(self) -> str | None:
        """None once start-up is done, else what is still awaited. Done: every engine worker
        has beaten twice since its fork (the second beat follows a whole turn of its loop:
        whatever its compiled code needed is loaded), and every edge listens on its port(s)."""
        for engine, wpid in self.pids.items():
            beat = self._beat_ring(engine).stats().consumer_heartbeat_ns
            if beat < self.forked_ns or self.first_beats.setdefault(engine, beat) == beat:
                return f"the {engine} worker {wpid} to turn"
        if self.cfg.edge.enabled and not self.edge_sockets_unseen:
            for e in range(1, self.sources):
                pid = self.children.get(f"edge {e}", 0)
                ports = {self.port} | ({self.admin_port} if e == ADMIN_EDGE else set())
                try:
                    listening = {c.laddr.port for c in psutil.Process(pid).net_connections("tcp")
                                 if c.status == psutil.CONN_LISTEN} if pid else set()
                except psutil.AccessDenied as exc:
                    self.edge_sockets_unseen = f"{type(exc).__name__}: {exc}"
                    self.log(f"cannot see edge {e}'s sockets ({self.edge_sockets_unseen}): READY=1 does not wait for "
                             f"the edges to listen")
                    return None
                except psutil.Error:
                    listening = set()  # gone: the health loop starts it again
                if not ports <= listening:
                    return f"edge {e} to listen on port {', '.join(map(str, sorted(ports - listening)))}"
        return None

    def _running_status(self) -> str:
        edge = f"; edge on {self.cfg.edge.host}:{self.port}" if self.cfg.edge.enabled else ""
        return (f"running: placement {self.placement}, engine workers {self._pid_list()}, recovered to sequence "
                f"{self.recovered_seq}, {self.restarts} restarts{edge}")

    def _ready_if_up(self) -> None:
        """READY=1 (with STATUS=) once start-up is done; once."""
        if self._awaiting() is not None:
            return
        self.ready_sent = True
        if self.notify.ready(self._running_status()):
            self.log("told systemd READY=1")
        else:
            self.log(f"systemd: READY=1 not sent ({self.notify.last_error})")

    def _kill_workers(self) -> None:
        for pid in self.pids.values():
            os.kill(pid, signal.SIGKILL)
        for pid in self.pids.values():
            os.waitpid(pid, 0)
        self.pids = {}

    def _restart(self, why: str) -> None:
        self.log(f"{why}: stopping the engines, recovering by replay")
        self.notify.status(f"restarting the engines: {why}")
        self._kill_workers()
        self.restarts += 1
        self.metrics.recoveries.labels("worker").inc()
        self._start_engines(first=False)
        self.log(f"engine workers restarted: {self._pid_list()}")
        self.notify.status(self._running_status())

    def _pid_list(self) -> str:
        return " ".join(f"{engine}={pid}" for engine, pid in self.pids.items())

    # --- run -----------------------------------------------------------------------------
    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        try:
            self.start()
        except BaseException as exc:
            self.notify.status(f"start failed: {type(exc).__name__}: {exc}")
            raise
        rings = self.rings + self.reports + list(self.internal.values())
        self.log(f"instance {self.instance!r} running: placement {self.placement}, engine workers: {self._pid_list()}; "
                 f"journal {self.paths.journal} ({self.cfg.journal.durability}), rings "
                 f"{', '.join(r.name for r in rings)}; shared memory {'locked' if self.lock_memory else 'not locked'}")
        if self.cfg.edge.enabled:
            path, rows = edge_keys.handout(self.cfg.instance.data_dir)
            if self.cfg.security.demo_keys and rows:
                self.log(f"demo accounts and their API keys (security.demo_keys; also in {path}, mode 0600):")
                for k in rows:
                    self.log(f"  account {k['account']}: api_key {k['api_key']} api_secret {k['api_secret']}")
        else:
            self.log("edge disabled (edge.enabled = false): clients use the command rings cmd.<i> and reports.<i>")
        tick = self.cfg.runtime.heartbeat_ms / 4000
        code = 0
        try:
            while self.stop_requests == 0:
                if not self.ready_sent:
                    self._ready_if_up()
                time.sleep(tick if self.ready_sent else min(tick, READY_POLL_S))
                self.stats.beat(time.monotonic_ns())
                why = self._worker_state()
                if why and self.stop_requests == 0:
                    self._restart(why)
                    continue
                why = self._exited("history")
                if why and self.stop_requests == 0:
                    self.log(f"{why}: starting it again (it catches up from the journal)")
                    self.metrics.edge_restarts.labels("history").inc()
                    self._start_history()
                dead = {e: why for e in range(1, self.sources) if (why := self._exited(f"edge {e}"))}
                if dead and self.stop_requests == 0:
                    failing = [e for e in dead if self._edge_failed(e)]
                    if failing:
                        self.log(f"{dead[failing[0]]}: edge {failing[0]} failed {EDGE_QUICK_FAILURES} times within "
                                 f"{EDGE_QUICK_FAILURE_S} s of its start; stopping (see its error above)")
                        code = 1
                        break
                    self.log(f"{'; '.join(dead.values())}: restarting the engines and edge "
                             f"{', '.join(map(str, dead))} (its state is rebuilt by recovery)")
                    self._kill_workers()
                    self.restarts += 1
                    self.metrics.recoveries.labels("edge").inc()
                    self.metrics.edge_restarts.labels("edge").inc(len(dead))
                    for e in dead:
                        self._discard_unread(reports_ring(e))
                    self.notify.status(f"restarting the engines and edge {', '.join(map(str, dead))}")
                    rp = self._start_engines(first=False)
                    for e in dead:
                        self._start_edge(rp, e)
                    self.notify.status(self._running_status())
                    continue
                made = self.snapshotter.poll() if self.ready_sent else None  # its first poll replays: after READY
                if made:
                    self.log(f"snapshot {made}", seq=self.snapshotter.saved_seq)
                if self.cfg.journal.archive:
                    for archive in archive_rolled(self.paths.journal):
                        self.log(f"journal: archived {archive}")
            code = self._stop() or code
        finally:
            self._kill_children()
            self._kill_workers()
            self._unlink()
        return code

    def _stop(self) -> int:
        """SIGTERM every worker; each finishes what it owes (see runtime.py) and exits."""
        self.log("stopping")
        self.notify.stopping("stopping: the edges first, then the engines finish what they owe")
        for e in range(1, self.sources):  # clients first: no new commands while the engines finish
            self._stop_child(f"edge {e}")
        self._stop_child("history")
        for pid in self.pids.values():
            os.kill(pid, signal.SIGTERM)
        while self.pids:
            for engine, wpid in list(self.pids.items()):
                pid, status = os.waitpid(wpid, os.WNOHANG)
                if pid:
                    del self.pids[engine]
            if self.pids and self.stop_requests > 1:  # a second SIGINT: no more waiting
                self._kill_workers()
                self.log("forced exit")
                return 1
            if self.pids:
                time.sleep(0.01)
        self.log("stopped cleanly")
        return 0

    def _unlink(self) -> None:
        for r in self.rings + self.reports + list(self.internal.values()):
            r.close(unlink=True)
        self.rings, self.reports, self.internal = [], [], {}
        for hold in self.port_holds:
            hold.close()
        self.port_holds = []
        if self.edge_shared is not None:
            self.edge_shared.close(unlink=True)
            self.edge_shared = None
        for fd in self.report_wake_fds:
            os.close(fd)
        self.report_wake_fds = []
        if self.stats is not None:
            self.stats.close()
            self.stats = None
        for table in self.tables:
            table.close(unlink=True)
        self.tables = []
        unlink_doorbells(self.instance, [ORDER_DOORBELL])


CAP_IPC_LOCK = 14  # linux/capability.h: mlock beyond RLIMIT_MEMLOCK


def _may_lock_any() -> bool:
    """This process holds CAP_IPC_LOCK (root usually does; a unit's User= does not)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) >> CAP_IPC_LOCK & 1)
    except OSError:
        pass
    return False


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exit code {os.WEXITSTATUS(status)}"
