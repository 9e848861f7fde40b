"""`ganntec run` as real processes: start, trade through the rings, stop cleanly; and the crash
matrix: kill -9 the engine worker (and, separately, the supervisor) under a steady command
load; afterwards every acknowledged command is in the journal exactly once, nothing is applied
twice, the whole journal replays with every record verified, and money is conserved.

The client here plays an edge: it publishes NEW_ORDER commands with its own increasing edge
sequence (source 1) and counts one acknowledged when a report carries that sequence; after a
restart it sends every unacknowledged command again (the order engine drops those already
journaled). Waits are for conditions, each with a deadline; kills happen after a random number
of acknowledgements, not at a time."""

from __future__ import annotations

import os
import random
import re
import select
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from ganntec.config import load
from ganntec.journal.journal import JournalReader
from ganntec.shm import records as R
from ganntec.shm import wait as W
from ganntec.shm.records import OrderType, RecordType, Side, TimeInForce
from ganntec.shm.ring import Ring
from ganntec.shm.segment import SegmentError, list_segments, remove_stale
from ganntec.workers.supervisor import replayer_factory

TRIALS = int(os.environ.get("GANNTEC_CRASH_TRIALS", "20"))

CONFIG = """
[instance]
name = "{instance}"
[journal]
durability = "{durability}"
segment_bytes = {segment_bytes}
[runtime]
placement = "{placement}"
heartbeat_ms = {heartbeat_ms}
snapshot_every = 300
ring_capacity = 4096
max_in_flight = 1024
[edge]
enabled = false
[[assets]]
name = "BTC"
precision = 8
[[assets]]
name = "USDT"
precision = 8
[[symbols]]
name = "BTCUSDT"
base = "BTC"
quote = "USDT"
tick_size = "0.01"
step_size = "0.001"
min_price = "0.01"
max_price = "100000"
min_qty = "0.001"
max_qty = "1000"
max_num_orders = 100000
[[accounts]]
id = 1
balances = {{ USDT = "100000000", BTC = "100000" }}
[[accounts]]
id = 2
balances = {{ USDT = "100000000", BTC = "100000" }}
"""


class Server:
    """`ganntec run` in a child process, its log lines collected by a reader thread."""

    def __init__(self, tmp_path, instance: str, durability: str = "os", segment_bytes: int = 1 << 28,
                 heartbeat_ms: int = 400, placement: str = "single"):
        self.cfg_path = tmp_path / "ganntec.toml"
        self.cfg_path.write_text(CONFIG.format(instance=instance, durability=durability, segment_bytes=segment_bytes,
                                               heartbeat_ms=heartbeat_ms, placement=placement))
        self.data = tmp_path / "data"
        self.instance = instance
        self.lines: list[str] = []
        self.changed = threading.Condition()  # notified on every log line and at the log's end
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen([sys.executable, "-m", "ganntec.cli", "run", "--config", str(self.cfg_path),
                                      "--data-dir", str(self.data)], stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        self.mark = len(self.lines)
        self.ended = None
        threading.Thread(target=self._read, args=(self.proc,), daemon=True).start()
        self.wait_for("running")

    def _read(self, proc):
        for line in proc.stdout:
            with self.changed:
                self.lines.append(line.rstrip())
                self.changed.notify_all()
        with self.changed:
            self.ended = proc
            self.changed.notify_all()

    def wait_for(self, text: str, after: int | None = None, timeout: float = 120.0) -> str:
        """The first log line from `after` on that contains `text` (waits for it, by condition)."""
        start = self.mark if after is None else after
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                for line in self.lines[start:]:
                    if text in line:
                        return line
                if self.ended is self.proc:
                    raise AssertionError(f"ganntec run exited ({self.proc.wait()}) before {text!r}:\n"
                                         + "\n".join(self.lines))
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no {text!r} within {timeout} s:\n" + "\n".join(self.lines))
                self.changed.wait(left)

    def stop(self, sig=signal.SIGTERM, timeout: float = 60.0) -> int:
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            inspect = subprocess.run([sys.executable, "-m", "ganntec.cli", "inspect"], capture_output=True, text=True)
            raise AssertionError("ganntec run did not stop:\n" + "\n".join(self.lines) + "\n" + inspect.stdout) from None

    def kill(self):
        """After a failure: no process, no segments left (the worker follows its supervisor)."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)
        remove_stale(self.instance)


class Client:
    """An edge stand-in: commands on cmd.1, reports from `reports`."""

    def __init__(self, instance: str):
        self.instance = instance
        self.sent: dict[int, np.ndarray] = {}  # edge seq -> its command
        self.acked: set[int] = set()
        self.next_seq = 1
        self.reports: list[np.ndarray] = []
        self.rnd = random.Random(7)
        self.wait = W.make("spin-block")
        self._attach()

    def _attach(self):
        deadline = time.monotonic() + 60
        while True:
            try:
                self.cmd = Ring.attach(self.instance, "cmd.1", role="producer")
                self.rep = Ring.attach(self.instance, "reports.1", role="consumer")
                return
            except SegmentError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def reattach(self):
        self.cmd.close(unlink=False)
        self.rep.close(unlink=False)
        self._attach()

    def order(self) -> np.ndarray:
        r = R.empty(RecordType.NEW_ORDER)
        n = r.view(R.NEW_ORDER_DTYPE)
        account, side = self.rnd.choice([(1, Side.BUY), (2, Side.SELL)])
        n["source"], n["source_seq"], n["account_id"], n["symbol_id"] = 1, self.next_seq, account, 0
        n["side"], n["order_type"] = side, OrderType.LIMIT
        n["time_in_force"] = self.rnd.choice([TimeInForce.GTC, TimeInForce.IOC])
        n["price_tick"] = 1_000_000 + self.rnd.randint(-20, 20)
        n["qty_lot"] = self.rnd.randint(1, 20)
        self.sent[self.next_seq] = r
        self.next_seq += 1
        return r

    def send_new(self, k: int) -> None:
        batch = R.concat([self.order() for _ in range(k)])
        done = 0
        while done < len(batch):
            done += self.cmd.push(batch[done:])

    def resend_unacked(self) -> None:
        todo = [self.sent[s] for s in sorted(set(self.sent) - self.acked)]
        if todo:
            batch = R.concat(todo)
            done = 0
            while done < len(batch):
                done += self.cmd.push(batch[done:])

    def drain(self) -> int:
        out = np.zeros((4096, R.RECORD_BYTES), np.uint8)
        n = self.rep.pop(out)
        recs = out[:n].view(R.RECORD_DTYPE).reshape(-1)
        self.reports.append(recs.copy())
        mine = recs[(recs["source"] == 1) & (recs["source_seq"] > 0)]
        self.acked.update(int(x) for x in mine["source_seq"])
        return n

    def wait_acked(self, count: int, timeout: float = 60.0) -> None:
        """Drain reports until `count` commands are acknowledged; between drains, wait on the
        reports ring itself (its data semaphore), never on a clock."""
        deadline = time.monotonic() + timeout
        while len(self.acked) < count:
            if not self.drain():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{len(self.acked)} of {count} commands acknowledged within {timeout} s")
                self.wait.wait_for_data(self.rep, 1, min(left, 1.0))

    def wait_for(self, record_type: RecordType, timeout: float = 60.0) -> None:
        """Drain reports until one of `record_type` has come."""
        deadline = time.monotonic() + timeout
        while not any((r["type"] == record_type).any() for r in self.reports):
            if not self.drain():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no {record_type.name} report within {timeout} s")
                self.wait.wait_for_data(self.rep, 1, min(left, 1.0))

    def close(self):
        self.cmd.close(unlink=False)
        self.rep.close(unlink=False)


def worker_pids(server: Server) -> dict[str, int]:
    """The current engine workers' pids by engine, from the supervisor's log (never 0:
    os.kill(0, ...) would signal this test's own process group)."""
    found = {}
    for line in server.lines:
        if m := re.search(r"engine workers(?: restarted)?: ((?:\w+=\d+ ?)+)", line):
            found = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", m.group(1))}
    assert found and min(found.values()) > 0, server.lines
    return found


def worker_pid(server: Server, rnd: random.Random | None = None) -> int:
    """One engine worker's pid (a random one with `rnd`, per-engine)."""
    pids = worker_pids(server)
    return pids[rnd.choice(sorted(pids))] if rnd else next(iter(pids.values()))


def check_journal(server: Server, client: Client) -> None:
    """Every acknowledged command journaled once, none twice; the whole journal replays with
    every record verified; money conserved."""
    cfg = load(str(server.cfg_path), str(server.data))
    journal = JournalReader(str(server.data / "journal")).records().view(R.RECORD_DTYPE).reshape(-1)
    cmds = journal[(journal["source"] == 1) & ((journal["flags"] & R.FLAG_RESULT) == 0)]
    seqs = cmds["source_seq"]
    assert len(seqs) == len(set(seqs.tolist())), "a command was applied twice"
    missing = client.acked - set(seqs.tolist())
    assert not missing, f"acknowledged commands missing from the journal: {sorted(missing)[:10]}"
    rp = replayer_factory(cfg)()
    rp.feed(journal)  # raises ReplayMismatch on any difference
    more, _ = rp.finish()
    assert rp.risk.conservation_errors() == [] and rp.risk.hold_errors() == []
    assert len(journal) > 0


@pytest.mark.parametrize("placement", ["single", "per-engine"])
def test_run_funds_trades_and_stops_cleanly(tmp_path, instance, placement):
    server = Server(tmp_path, instance, placement=placement)
    try:
        server.start()
        assert "funded 2 accounts" in "\n".join(server.lines)
        client = Client(instance)
        client.send_new(50)
        client.wait_acked(50)
        client.wait_for(RecordType.FILL)  # the first acknowledgements come before matching has run
        types = {RecordType(int(t)).name for t in R.concat(client.reports)["type"]}
        assert "FILL" in types and "BALANCE" in types
        client.close()
        assert server.stop() == 0
        assert "stopped cleanly" in server.lines[-1]
        assert list_segments(instance) == []
        check_journal(server, client)
    finally:
        server.kill()


def test_run_refuses_a_bad_config_naming_the_field(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[journal]\ndurability = "disk"\n')
    out = subprocess.run([sys.executable, "-m", "ganntec.cli", "run", "--config", str(bad)], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 2
    assert "journal.durability='disk' (one of fsync, os)" in out.stderr


@pytest.mark.parametrize("placement,durability", [("single", "os"), ("single", "fsync"), ("per-engine", "os"),
                                                   ("per-engine", "fsync")])
def test_crash_matrix_engine_worker(tmp_path, instance, placement, durability):
    """kill -9 an engine process (per-engine: a random one of the four) at a random point."""
    trials = TRIALS if durability == "os" else max(2, TRIALS // 5)
    server = Server(tmp_path, instance, durability, placement=placement)
    rnd = random.Random(durability + placement)
    try:
        server.start()
        client = Client(instance)
        for trial in range(trials):
            client.send_new(rnd.randint(20, 200))
            client.wait_acked(len(client.acked) + rnd.randint(0, 20))  # kill at a random point of the load
            if trial == trials // 2:  # from here on a snapshot exists: recovery starts from it
                server.wait_for("ganntec: snapshot ", after=0)
            pid = worker_pid(server, rnd)
            mark = len(server.lines)
            os.kill(pid, signal.SIGKILL)
            server.wait_for("engine workers restarted", after=mark)
            client.resend_unacked()
            client.wait_acked(client.next_seq - 1)
        client.close()
        assert server.stop() == 0
        check_journal(server, client)
        assert len(client.acked) == client.next_seq - 1
        log = "\n".join(server.lines)
        assert "ganntec: snapshot " in log and re.search(r"recovered to sequence \d+ .*\(snapshot [1-9]\d*,", log), log
    finally:
        server.kill()


@pytest.mark.parametrize("placement", ["single", "per-engine"])
def test_crash_matrix_supervisor(tmp_path, instance, placement):
    """kill -9 the supervisor: the workers die with it; the next `ganntec run` removes the dead
    instance's segments and recovers. Commands journaled but never reported are not
    acknowledged: sent again, they are dropped as duplicates, so nothing is applied twice."""
    server = Server(tmp_path, instance, placement=placement)
    rnd = random.Random(3)
    try:
        server.start()
        client = Client(instance)
        for trial in range(max(2, TRIALS // 7)):
            client.send_new(rnd.randint(20, 200))
            client.wait_acked(len(client.acked) + rnd.randint(0, 20))
            workers = [os.pidfd_open(pid) for pid in worker_pids(server).values()]  # readable once exited
            try:
                server.proc.kill()
                server.proc.wait(30)
                # the workers follow their supervisor (PR_SET_PDEATHSIG)
                for w in workers:
                    assert select.select([w], [], [], 30)[0], "a worker outlived its supervisor"
            finally:
                for w in workers:
                    os.close(w)
            server.start()
            assert "removed" in "\n".join(server.lines[server.mark:])
            client.reattach()
            client.resend_unacked()
        client.close()
        assert server.stop() == 0
        check_journal(server, client)
    finally:
        server.kill()


@pytest.mark.parametrize("placement", ["single", "per-engine"])
def test_a_hung_worker_is_found_by_its_heartbeat_and_replaced(tmp_path, instance, placement):
    """SIGSTOP keeps the pid alive and the heartbeat still: the supervisor must restart it
    (per-engine: one of the four, and the others with it)."""
    server = Server(tmp_path, instance, placement=placement)
    try:
        server.start()
        client = Client(instance)
        client.send_new(30)
        client.wait_acked(30)
        pid = worker_pid(server, random.Random(placement))
        mark = len(server.lines)
        os.kill(pid, signal.SIGSTOP)
        assert "heartbeat" in server.wait_for("recovering by replay", after=mark)
        server.wait_for("engine workers restarted", after=mark)
        client.send_new(30)
        client.wait_acked(60)
        client.close()
        assert server.stop() == 0
        check_journal(server, client)
    finally:
        server.kill()


@pytest.mark.parametrize("placement", ["single", "per-engine"])
def test_a_second_sigint_forces_the_exit(tmp_path, instance, placement):
    # the stopped worker is not replaced meanwhile
    server = Server(tmp_path, instance, heartbeat_ms=10_000, placement=placement)
    try:
        server.start()
        os.kill(worker_pid(server), signal.SIGSTOP)  # a worker that will not stop by itself
        mark = len(server.lines)
        server.proc.send_signal(signal.SIGINT)
        server.wait_for("stopping", after=mark)
        assert server.stop(signal.SIGINT) == 1
        assert "forced exit" in "\n".join(server.lines[mark:])
        assert list_segments(instance) == []
    finally:
        server.kill()


@pytest.mark.soak
@pytest.mark.parametrize("placement", ["single", "per-engine"])
def test_crash_matrix_engine_worker_100_trials(tmp_path, instance, monkeypatch, placement):
    monkeypatch.setattr(sys.modules[__name__], "TRIALS", 100)
    test_crash_matrix_engine_worker(tmp_path, instance, placement, "os")


@pytest.mark.parametrize("placement", ["single", "per-engine"])
def test_a_stalled_reader_stalls_the_pipeline_and_loses_nothing(tmp_path, instance, placement):
    """Back-pressure: while the client reads no reports, the worker waits on the full reports
    ring and the command ring fills until pushes are refused; then everything flows, nothing
    dropped. Small segments make the journal roll and the supervisor archive the rolled ones."""
    server = Server(tmp_path, instance, segment_bytes=1 << 20, placement=placement)
    try:
        server.start()
        client = Client(instance)
        deadline = time.monotonic() + 120
        waiting = np.zeros((0, R.RECORD_BYTES), np.uint8)
        while True:  # push, never read: the worker fills the reports ring, then stops taking commands
            if len(waiting) == 0:
                waiting = R.concat([client.order() for _ in range(256)]).view(np.uint8).reshape(-1, R.RECORD_BYTES)
            pushed = client.cmd.push(waiting)
            waiting = waiting[pushed:]
            if pushed == 0 and client.rep.readable() > 0:
                break  # the command ring is full: the worker waits for room on the reports ring
            assert time.monotonic() < deadline, "the pipeline never stalled"
        while len(waiting):  # the rest goes in as the pipeline drains
            client.drain()
            waiting = waiting[client.cmd.push(waiting):]
        client.wait_acked(len(client.sent), timeout=120)
        assert len(client.acked) == len(client.sent)
        client.close()
        assert server.stop() == 0
        assert "journal: archived" in "\n".join(server.lines)
        check_journal(server, client)
    finally:
        server.kill()


@pytest.mark.parametrize("placement", ["single", "per-engine"])
def test_the_same_command_sent_again_after_a_restart_is_applied_once(tmp_path, instance, placement):
    server = Server(tmp_path, instance, placement=placement)
    try:
        server.start()
        client = Client(instance)
        client.send_new(5)
        client.wait_acked(5)
        mark = len(server.lines)
        os.kill(worker_pid(server), signal.SIGKILL)
        server.wait_for("engine workers restarted", after=mark)
        again = R.concat([client.sent[s] for s in sorted(client.sent)])
        assert client.cmd.push(again) == len(again)  # every one a duplicate now
        client.send_new(1)  # a fresh one, so we know the duplicates went by
        client.wait_acked(6)
        client.close()
        assert server.stop() == 0
        check_journal(server, client)  # each edge sequence journaled once
    finally:
        server.kill()
