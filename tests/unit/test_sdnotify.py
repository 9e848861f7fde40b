"""ganntec/sdnotify.py against a fake notify socket (an AF_UNIX datagram socket this test binds,
at a path or an abstract name): the exact bytes of each message, nothing without
$NOTIFY_SOCKET, nothing ever raised or blocking, a forked child's own socket, WATCHDOG_USEC and
WATCHDOG_PID, and the hot loop's Pinger (period, the peers' heartbeat gate)."""

from __future__ import annotations

import os
import socket
import struct
import threading
import time
import uuid

import pytest

from ganntec import sdnotify
from ganntec.shm import wait as W
from ganntec.shm.ring import Ring
from ganntec.workers.runtime import Worker, peers_beating

CRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


class FakeSystemd:
    """The receiving end of $NOTIFY_SOCKET; learns each sender's pid (SO_PASSCRED)."""

    def __init__(self, address):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.bind(address)

    def recv(self, timeout: float = 5.0) -> tuple[int, bytes]:
        """(sender pid, datagram); waits at most `timeout` (socket.timeout past it)."""
        self.sock.settimeout(timeout)
        data, anc, _, _ = self.sock.recvmsg(8192, socket.CMSG_SPACE(CRED.size))
        pid = next(CRED.unpack(d)[0] for level, kind, d in anc
                   if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS)
        return pid, data

    def nothing_queued(self) -> bool:
        self.sock.setblocking(False)
        try:
            self.sock.recv(8192)
        except BlockingIOError:
            return True
        return False

    def close(self):
        self.sock.close()


@pytest.fixture
def fake(tmp_path):
    path = str(tmp_path / "notify")
    f = FakeSystemd(path)
    yield path, f
    f.close()


@pytest.fixture
def fake_abstract():
    name = f"ganntec-test-notify-{uuid.uuid4().hex}"
    f = FakeSystemd(b"\0" + name.encode())
    yield "@" + name, f
    f.close()


def test_address_forms():
    assert sdnotify.address(None) is None and sdnotify.address("") is None
    assert sdnotify.address("/run/systemd/notify") == "/run/systemd/notify"
    assert sdnotify.address("@foo/bar") == b"\0foo/bar"
    for bad in ("@", "run/notify", "vsock:2:1234"):
        with pytest.raises(ValueError, match="NOTIFY_SOCKET"):
            sdnotify.address(bad)


@pytest.mark.parametrize("which", ["path", "abstract"])
def test_messages_exact_bytes(which, fake, fake_abstract):
    name, f = fake if which == "path" else fake_abstract
    n = sdnotify.Notifier({"NOTIFY_SOCKET": name})
    assert n.enabled and n.problem is None
    assert n.ready()
    assert n.ready(status="running: engines=12")
    assert n.stopping()
    assert n.stopping("stopping: edges first")
    assert n.status("two\nlines\r\nhere")
    assert n.watchdog()
    me = os.getpid()
    got = [f.recv() for _ in range(6)]
    assert got == [(me, b"READY=1"), (me, b"READY=1\nSTATUS=running: engines=12"), (me, b"STOPPING=1"),
                   (me, b"STOPPING=1\nSTATUS=stopping: edges first"), (me, b"STATUS=two lines here"),
                   (me, b"WATCHDOG=1")]
    assert (n.sent, n.failed) == (6, 0)
    n.close()


def test_a_long_status_is_cut_to_fit(fake):
    name, f = fake
    n = sdnotify.Notifier({"NOTIFY_SOCKET": name})
    assert n.status("x" * 10_000)
    _, data = f.recv()
    assert data.startswith(b"STATUS=xxx") and data.endswith(b"...")
    assert len(data) == len("STATUS=") + sdnotify.MAX_STATUS
    assert not n.send(b"A=" + b"y" * sdnotify.MAX_DATAGRAM)  # too long for systemd: refused, counted
    assert n.failed == 1 and "bytes" in n.last_error


def test_no_notify_socket_is_a_no_op(fake):
    _, f = fake
    n = sdnotify.Notifier({})
    assert not n.enabled and n.problem is None
    assert not n.ready("x") and not n.stopping() and not n.status("x") and not n.watchdog()
    assert (n.sent, n.failed, n._sock) == (0, 0, None)  # not even a socket made
    assert f.nothing_queued()


def test_an_unusable_address_turns_it_off_with_the_reason():
    n = sdnotify.Notifier({"NOTIFY_SOCKET": "vsock:2:9"})
    assert not n.enabled and "vsock:2:9" in n.problem
    assert not n.ready() and n.failed == 0


def test_failures_are_counted_never_raised(tmp_path):
    n = sdnotify.Notifier({"NOTIFY_SOCKET": str(tmp_path / "nobody")})
    assert not n.ready("x") and not n.watchdog()
    assert n.failed == 2 and "FileNotFoundError" in n.last_error and str(tmp_path) in n.last_error
    m = sdnotify.Notifier({"NOTIFY_SOCKET": f"@ganntec-test-nobody-{uuid.uuid4().hex}"})
    assert not m.watchdog() and m.failed == 1 and "ConnectionRefusedError" in m.last_error


def test_a_full_queue_never_blocks_a_ping(fake):
    """Nobody reads: the queue fills (net.unix.max_dgram_qlen); pings fail at once, counted."""
    name, f = fake
    n = sdnotify.Notifier({"NOTIFY_SOCKET": name})
    t0 = time.monotonic()
    results = [n.watchdog() for _ in range(2000)]
    assert time.monotonic() - t0 < 5
    assert results[0] and not results[-1]
    assert n.failed > 0 and n.sent + n.failed == 2000 and "BlockingIOError" in n.last_error
    # READY waits for room, but only as long as it is told.
    t0 = time.monotonic()
    assert not n.ready("x", wait_s=0.05)
    assert 0.04 <= time.monotonic() - t0 < 2
    f.recv()  # room for one again
    assert n.ready("y", wait_s=0.05)


def test_a_new_receiver_at_the_same_address_is_found_again(tmp_path):
    path = str(tmp_path / "notify")
    first = FakeSystemd(path)
    n = sdnotify.Notifier({"NOTIFY_SOCKET": path})
    assert n.watchdog() and first.recv()[1] == b"WATCHDOG=1"
    first.close()  # systemd re-executed: its socket is made again
    os.unlink(path)
    second = FakeSystemd(path)
    try:
        assert not n.watchdog()  # the old peer is gone: counted, and the socket dropped
        assert n.watchdog() and second.recv()[1] == b"WATCHDOG=1"
    finally:
        second.close()


def test_a_forked_child_sends_from_its_own_socket(fake):
    name, f = fake
    n = sdnotify.Notifier({"NOTIFY_SOCKET": name})
    assert n.watchdog()
    parent_fd = n._sock.fileno()
    assert f.recv() == (os.getpid(), b"WATCHDOG=1")
    pid = os.fork()
    if pid == 0:  # the child: the inherited notifier makes its own socket (the parent's is closed here)
        ok = n.status("child") and n._sock.fileno() != -1 and n._pid == os.getpid()
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert f.recv() == (pid, b"STATUS=child")
    assert n._sock.fileno() == parent_fd and n.watchdog()  # the parent's socket untouched
    assert f.recv() == (os.getpid(), b"WATCHDOG=1")


def test_the_socket_is_close_on_exec(fake):
    name, _ = fake
    n = sdnotify.Notifier({"NOTIFY_SOCKET": name})
    n.watchdog()
    assert not os.get_inheritable(n._sock.fileno())
    assert n._sock.getblocking() is False


@pytest.mark.parametrize("env,pid,expect", [
    ({}, 10, None),
    ({"WATCHDOG_USEC": "2000000"}, 10, 2.0),
    ({"WATCHDOG_USEC": "250000", "WATCHDOG_PID": "10"}, 10, 0.25),
    ({"WATCHDOG_USEC": "250000", "WATCHDOG_PID": "11"}, 10, None),  # a child that inherited it
    ({"WATCHDOG_USEC": "250000", "WATCHDOG_PID": "x"}, 10, None),
    ({"WATCHDOG_USEC": "0"}, 10, None),
    ({"WATCHDOG_USEC": "-5"}, 10, None),
    ({"WATCHDOG_USEC": "1.5"}, 10, None),
    ({"WATCHDOG_USEC": ""}, 10, None),
])
def test_watchdog_interval(env, pid, expect):
    assert sdnotify.watchdog_interval_s(env, pid) == expect


def test_watchdog_pid_defaults_to_this_process_and_says_why():
    me = os.getpid()
    assert sdnotify.watchdog_interval_s({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": str(me)}) == 1.0
    interval, why = sdnotify.watchdog_setting({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": str(me + 1)})
    assert interval is None and "another process" in why and str(me + 1) in why
    assert sdnotify.watchdog_setting({"WATCHDOG_USEC": "abc"}) == (None, "WATCHDOG_USEC='abc' is not an integer")


def test_pinger_pings_every_half_interval(fake):
    name, f = fake
    n = sdnotify.Notifier({"NOTIFY_SOCKET": name})
    p = sdnotify.Pinger(n, 2.0)  # WatchdogSec 2 s: a ping per second at most
    s = 1_000_000_000
    for now in (5 * s, 5 * s + 1, 6 * s - 1, 6 * s, 6 * s + s // 2, 7 * s):
        p.tick(now)
    assert n.sent == 3  # at 5 s (the first tick), 6 s, 7 s
    assert [f.recv()[1] for _ in range(3)] == [b"WATCHDOG=1"] * 3
    assert f.nothing_queued()


def test_pinger_holds_while_a_peer_is_stale_and_retries_soon(fake):
    name, f = fake
    n = sdnotify.Notifier({"NOTIFY_SOCKET": name})
    healthy = [False]
    p = sdnotify.Pinger(n, 2.0, healthy=lambda now: healthy[0])
    p.tick(100)
    assert n.sent == 0 and p.held == 1 and p.next_ns == 100 + sdnotify.RETRY_NS
    p.tick(100 + sdnotify.RETRY_NS - 1)
    assert p.held == 1
    healthy[0] = True
    p.tick(100 + sdnotify.RETRY_NS)
    assert n.sent == 1 and f.recv()[1] == b"WATCHDOG=1"


def test_pinger_warns_once_of_failures(tmp_path):
    n = sdnotify.Notifier({"NOTIFY_SOCKET": str(tmp_path / "nobody")})
    heard = []
    p = sdnotify.Pinger(n, 1.0, warn=heard.append)
    for k in range(5):
        p.tick(k * 1_000_000_000)
    assert n.failed == 5 and len(heard) == 1 and "FileNotFoundError" in heard[0]


def test_peers_beating_reads_the_heartbeat_words(instance):
    """The gate a per-engine worker puts on its pings: every other worker's heartbeat fresh."""
    rings = [Ring.create(instance, name, 8, lock_memory=False) for name in ("a", "b")]
    try:
        beats = [Ring.attach(instance, name, role="consumer") for name in ("a", "b")]
        healthy = peers_beating(rings, stale_ns=1000)
        beats[0].heartbeat(10_000)
        beats[1].heartbeat(10_500)
        assert healthy(11_000)
        assert not healthy(11_001)  # a's beat is 1001 ns old
        beats[0].heartbeat(11_000)
        assert healthy(11_500)
        assert peers_beating([], 1)(10**18)
        for b in beats:
            b.close(unlink=False)
    finally:
        for r in rings:
            r.close(unlink=True)


def test_module_functions_use_the_process_environment(fake, monkeypatch):
    name, f = fake
    monkeypatch.setenv("NOTIFY_SOCKET", name)
    monkeypatch.setattr(sdnotify, "_default", None)
    assert sdnotify.ready("up") and sdnotify.status("s") and sdnotify.watchdog() and sdnotify.stopping()
    assert [f.recv()[1] for _ in range(4)] == [b"READY=1\nSTATUS=up", b"STATUS=s", b"WATCHDOG=1", b"STOPPING=1"]
    sdnotify.default().close()
    monkeypatch.setattr(sdnotify, "_default", None)
    monkeypatch.delenv("NOTIFY_SOCKET")
    assert not sdnotify.ready()


def test_the_pings_come_from_the_loop_itself(instance, fake):
    """A worker's loop (runtime.Worker.run) in a thread of this process: it pings while it turns;
    while one of its turns hangs the process lives on (this thread, the receiver) but no ping
    comes; released, it pings again. A side-thread pinger would have gone on."""
    name, f = fake

    class Hanging(Worker):
        def __init__(self, ring):
            super().__init__([ring], W.make("spin-block"), heartbeat_ms=40)  # idle waits of 10 ms
            self.go = threading.Event()
            self.go.set()
            self.hung = threading.Event()

        def turn(self) -> bool:
            if not self.go.is_set():  # a step that does not return
                self.hung.set()
                self.go.wait()
            return False

    ring = Ring.create(instance, "cmd.0", 8, lock_memory=False, role="consumer")
    worker = Hanging(ring)
    worker.pinger = sdnotify.Pinger(sdnotify.Notifier({"NOTIFY_SOCKET": name}), 0.1)  # a ping per 50 ms
    loop = threading.Thread(target=worker.run, daemon=True)
    loop.start()
    try:
        for _ in range(3):
            assert f.recv(timeout=5) == (os.getpid(), b"WATCHDOG=1")
        worker.go.clear()
        assert worker.hung.wait(5)
        while not f.nothing_queued():  # what it sent before it hung
            pass
        with pytest.raises(socket.timeout):
            f.recv(timeout=0.3)  # six periods without a ping
        beat = ring.stats().consumer_heartbeat_ns
        worker.go.set()
        assert f.recv(timeout=5)[1] == b"WATCHDOG=1"
        assert f.recv(timeout=5)[1] == b"WATCHDOG=1"  # a ping goes before its beat's heartbeat store
        assert ring.stats().consumer_heartbeat_ns > beat
    finally:
        worker.stop = True
        worker.go.set()
        loop.join(5)
        ring.close(unlink=True)
    assert not loop.is_alive()
