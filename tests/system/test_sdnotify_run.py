"""`ganntec run` under a fake systemd: $NOTIFY_SOCKET names a datagram socket this test reads
(with SO_PASSCRED, so each datagram says which process sent it) and $WATCHDOG_USEC asks for
watchdog pings. READY=1 comes from the supervisor once the engines are recovered and warm and
every worker has turned (and, with the edge, once the edges listen); WATCHDOG=1 comes from the
engine workers' own loops, keeps coming, and stops when a loop is frozen (SIGSTOP), also from
the live workers when the one frozen cannot be replaced (per-engine: the heartbeat gate);
STOPPING=1 when the stop begins. Every wait is for a datagram or a log line, with a deadline;
the silences are bounded waits for an absence."""

from __future__ import annotations

import itertools
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

import psutil
import pytest
from test_edge_run import CONFIG as EDGE_CONFIG
from test_runtime import Server, worker_pids

WATCHDOG_USEC = 2_000_000  # WatchdogSec=2: pings due every 1 s
INTERVAL_S = WATCHDOG_USEC / 1e6
PERIOD_S = INTERVAL_S / 2
HEARTBEAT_MS = 1000  # the workers' idle waits are a quarter of it: a beat (and a due ping) at least every 0.25 s
CRED = struct.Struct("3i")


class FakeSystemd:
    """Reads $NOTIFY_SOCKET on a thread: every datagram with its sender's pid and arrival time."""

    def __init__(self, address):
        self.address = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.bind(address)
        self.sock.settimeout(0.2)  # only so that the thread sees `closed`
        self.got: list[tuple[float, int, bytes]] = []  # (monotonic, pid, datagram)
        self.changed = threading.Condition()
        self.closed = False
        self.marks = 0
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        while not self.closed:
            try:
                data, anc, _, _ = self.sock.recvmsg(8192, socket.CMSG_SPACE(CRED.size))
            except OSError:  # the timeout (TimeoutError) too
                continue
            pid = next((CRED.unpack(d)[0] for level, kind, d in anc
                        if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS), 0)
            with self.changed:
                self.got.append((time.monotonic(), pid, data))
                self.changed.notify_all()

    def mark(self) -> int:
        """Queue a datagram of our own and return its index: whatever another process sent
        before this call is ahead of it in the socket's one queue, so before it here."""
        self.marks += 1
        token = f"X-TEST-MARK={self.marks}".encode()
        with self.changed:
            start = len(self.got)
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.sendto(token, self.address)
        return self.wait(lambda pid, data: data == token, after=start, timeout=10)

    def wait(self, pred, after: int = 0, timeout: float = 60.0) -> int:
        """Index of the first datagram from index `after` on with pred(pid, data)."""
        deadline = time.monotonic() + timeout
        with self.changed:
            i = after
            while True:
                while i < len(self.got):
                    if pred(self.got[i][1], self.got[i][2]):
                        return i
                    i += 1
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no such datagram within {timeout} s; got {self.summary(after)}")
                self.changed.wait(left)

    def silence(self, pred, after: int, quiet_s: float, within_s: float) -> int:
        """Wait (at most `within_s`) for a stretch of `quiet_s` with no datagram matching pred
        after index `after`; returns the index where that silence began."""
        deadline = time.monotonic() + within_s
        with self.changed:
            while True:
                hits = [i for i in range(after, len(self.got)) if pred(self.got[i][1], self.got[i][2])]
                last_t = self.got[hits[-1]][0] if hits else self.got[after - 1][0] if after else 0.0
                quiet_until = last_t + quiet_s
                now = time.monotonic()
                if now >= quiet_until:
                    return hits[-1] + 1 if hits else after
                if now >= deadline:
                    raise AssertionError(f"no {quiet_s} s of silence within {within_s} s; got {self.summary(after)}")
                self.changed.wait(min(quiet_until, deadline) - now)

    def messages(self, after: int = 0) -> list[tuple[float, int, bytes]]:
        with self.changed:
            return list(self.got[after:])

    def summary(self, after: int = 0) -> list:
        t0 = self.got[0][0] if self.got else 0
        return [(round(t - t0, 3), p, d[:80]) for t, p, d in self.messages(after)]

    def close(self):
        self.closed = True
        self.thread.join(5)
        self.sock.close()


def ping(pid_set):
    return lambda pid, data: data == b"WATCHDOG=1" and pid in pid_set


@pytest.fixture
def systemd(tmp_path, monkeypatch):
    """A fake notify socket, named in the environment `ganntec run` inherits."""
    path = str(tmp_path / "notify")
    fake = FakeSystemd(path)
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    monkeypatch.setenv("WATCHDOG_USEC", str(WATCHDOG_USEC))
    monkeypatch.delenv("WATCHDOG_PID", raising=False)  # systemd would name the supervisor; it is not known yet
    yield fake
    fake.close()


def wait_stopped(pid: int, timeout: float = 10.0) -> None:
    """Until `pid` is in the stopped state (a SIGSTOP takes effect at its next return to user space)."""
    deadline = time.monotonic() + timeout
    while psutil.Process(pid).status() != psutil.STATUS_STOPPED:
        assert time.monotonic() < deadline, f"{pid} not stopped within {timeout} s"
        time.sleep(0.002)


def line_index(server: Server, text: str) -> int:
    with server.changed:
        return next(i for i, line in enumerate(server.lines) if text in line)


def steady_pings(fake: FakeSystemd, pids: set[int], after: int, count: int = 3) -> None:
    """`count` pings from every pid, none more than the watchdog interval after the previous."""
    for pid in pids:
        i = after
        for _ in range(count):
            i = fake.wait(ping({pid}), after=i, timeout=30) + 1
    for pid in pids:
        times = [t for t, p, d in fake.messages(after) if p == pid and d == b"WATCHDOG=1"]
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert gaps and max(gaps) < INTERVAL_S, (pid, gaps)
        assert min(gaps) > PERIOD_S * 0.9, (pid, gaps)  # no more often than every half interval


@pytest.mark.parametrize("placement", ["single", "per-engine"])
def test_ready_after_warm_up_watchdog_from_the_hot_loops_stopping(tmp_path, instance, systemd, placement):
    server = Server(tmp_path, instance, heartbeat_ms=HEARTBEAT_MS, placement=placement)
    frozen: list[int] = []
    try:
        server.start()
        sup = server.proc.pid
        ready = systemd.wait(lambda pid, data: data.startswith(b"READY=1"), timeout=120)
        _, rpid, rdata = systemd.messages(ready)[0]
        workers = worker_pids(server)
        assert rpid == sup
        status = rdata.decode().split("\n", 1)[1]
        assert status.startswith(f"STATUS=running: placement {placement}, engine workers ")
        assert f"engine workers {' '.join(f'{e}={p}' for e, p in workers.items())}," in status
        # READY after the recovery and the start, in the supervisor's own (ordered) log ...
        server.wait_for("told systemd READY=1", after=0)
        assert line_index(server, "recovered to sequence") < line_index(server, "running: placement") \
            < line_index(server, "told systemd READY=1")
        # ... once, and before it only the supervisor's STATUS and the workers' pings.
        before = systemd.messages()[:ready]
        assert {(p, d) for _, p, d in before if p == sup} == {(sup, b"STATUS=starting: recovering the engines")}
        assert {d for _, p, d in before if p != sup} <= {b"WATCHDOG=1"}
        assert {p for _, p, _ in before} <= {sup, *workers.values()}
        if placement == "single":  # its first beat pings before the supervisor can see it: it turned before READY
            assert any(p == workers["engines"] for _, p, _ in before), systemd.summary()

        # Pings from every worker's loop, every half interval, never from the supervisor.
        steady_pings(systemd, set(workers.values()), after=ready + 1)
        assert not any(d == b"WATCHDOG=1" for _, p, d in systemd.messages() if p == sup)

        # A frozen loop, and a supervisor that cannot replace it (frozen too): every ping stops
        # (per-engine: the live workers' too, once the frozen one's heartbeat is stale).
        victim = workers["engines" if placement == "single" else "risk"]
        for pid in (sup, victim):
            frozen.append(pid)
            os.kill(pid, signal.SIGSTOP)
            wait_stopped(pid)
        mark = systemd.mark()
        quiet_from = systemd.silence(ping(set(workers.values())), after=mark + 1, quiet_s=3 * PERIOD_S,
                                     within_s=HEARTBEAT_MS / 1000 + 3 * PERIOD_S + 15)
        assert not [p for _, p, d in systemd.messages(mark) if p == victim and d == b"WATCHDOG=1"]
        if placement == "per-engine":  # the others went on until the gate closed, then stopped
            assert {p for _, p, d in systemd.messages(quiet_from) if d == b"WATCHDOG=1"} == set()
        for pid in (victim, sup):
            os.kill(pid, signal.SIGCONT)
            frozen.remove(pid)
        mark = systemd.mark()
        systemd.wait(lambda pid, data: data == b"WATCHDOG=1" and pid not in (sup, os.getpid()), after=mark,
                     timeout=30)  # pings again (the same workers, or replaced ones)

        # A frozen loop with the supervisor alive: replaced; the new workers ping, the old one never again.
        mark_log = len(server.lines)
        workers = worker_pids(server)
        victim = workers["engines" if placement == "single" else "matching"]
        os.kill(victim, signal.SIGSTOP)
        wait_stopped(victim)
        mark = systemd.mark()
        assert "heartbeat" in server.wait_for("recovering by replay", after=mark_log)
        server.wait_for("engine workers restarted", after=mark_log)
        new = worker_pids(server)
        assert victim not in new.values()
        systemd.wait(lambda pid, data: pid == sup and data.startswith(b"STATUS=restarting the engines: "), after=mark)
        steady_pings(systemd, set(new.values()), after=mark + 1, count=2)
        assert not [p for _, p, d in systemd.messages(mark) if p == victim]

        mark = systemd.mark()
        assert server.stop() == 0
        assert "stopped cleanly" in server.lines[-1]
        stopping = systemd.wait(lambda pid, data: data.startswith(b"STOPPING=1"), after=mark, timeout=10)
        assert systemd.messages(stopping)[0][1] == sup
        assert sum(d.startswith(b"READY=1") for _, _, d in systemd.messages()) == 1
    finally:
        for pid in frozen:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        server.kill()


def test_ready_waits_for_the_edges_to_listen(tmp_path, instance, systemd):
    server = Server(tmp_path, instance, heartbeat_ms=HEARTBEAT_MS)
    server.cfg_path.write_text(EDGE_CONFIG.format(instance=instance).replace("[edge]\nport = 0",
                                                                            "[edge]\nport = 0\nprocesses = 2"))
    try:
        server.start()
        ready = systemd.wait(lambda pid, data: data.startswith(b"READY=1"), timeout=120)
        status = systemd.messages(ready)[0][2].decode()
        port = int(re.search(r"edge on 127\.0\.0\.1:(\d+)", status).group(1))
        # READY came: the edges are listening (the supervisor holds the port bound, not
        # listening, until then a connection is refused), the admin port too.
        with socket.create_connection(("127.0.0.1", port), timeout=10):
            pass
        admin = int(re.search(r"admin API http://127\.0\.0\.1:(\d+)", server.wait_for("admin API http://")).group(1))
        with socket.create_connection(("127.0.0.1", admin), timeout=10):
            pass
        for e in (1, 2):
            server.wait_for(f"edge {e} (pid ")
        workers = set(worker_pids(server).values())
        steady_pings(systemd, workers, after=ready + 1, count=2)
        # the edges and the history process never ping: only the engine workers' loops
        assert {p for _, p, d in systemd.messages() if d == b"WATCHDOG=1"} <= workers
        mark = systemd.mark()
        assert server.stop() == 0
        systemd.wait(lambda pid, data: data.startswith(b"STOPPING=1"), after=mark, timeout=10)
    finally:
        server.kill()


def test_no_ready_when_the_start_fails(tmp_path, instance, systemd):
    """The start fails (the journal's directory is a file): a STATUS says why, READY never comes."""
    server = Server(tmp_path, instance)  # its config; started by hand: it never logs "running"
    server.data.mkdir()
    (server.data / "journal").write_text("not a directory")
    out = subprocess.run([sys.executable, "-m", "ganntec.cli", "run", "--config", str(server.cfg_path),
                          "--data-dir", str(server.data)], capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode != 0 and "FileExistsError" in out.stderr, out.stderr
    failed = systemd.wait(lambda pid, data: data.startswith(b"STATUS=start failed: "), timeout=10)
    assert b"FileExistsError" in systemd.messages(failed)[0][2]
    assert not [d for _, _, d in systemd.messages() if d.startswith(b"READY=1")]
