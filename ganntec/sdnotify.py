"""sd_notify(3) for `ganntec run` under systemd (`Type=notify`, `WatchdogSec=`): READY,
STOPPING, STATUS and watchdog pings, each one datagram to the socket `$NOTIFY_SOCKET` names.

The protocol is one datagram of newline-separated `KEY=value` lines to an AF_UNIX SOCK_DGRAM
socket; `$NOTIFY_SOCKET` is a path (`/run/systemd/notify`) or, with a leading `@`, a name in
the abstract namespace. That is all of it, so it is written here rather than linked from
libsystemd. Other address forms (`vsock:...`, relative paths) are not ours: the notifier is
then off and says why (`Notifier.problem`).

Never in the caller's way: without `$NOTIFY_SOCKET` every call is a no-op that returns False;
a failed send (no listener, a full queue) is counted in `failed` with its reason in
`last_error` and returns False; nothing here raises. The socket (SOCK_CLOEXEC, non-blocking,
connected to the address so that a full receive queue can be waited for) is made once per
process at the first send, made again in a forked child (the parent's copy is closed there),
and again after a failed send (systemd re-executed: a new socket at the same address). A
watchdog ping never waits: the receiver's queue full (`net.unix.max_dgram_qlen` datagrams,
10 by default), it is counted and the next one goes half an interval later. READY, STOPPING
and STATUS wait up to `wait_s` (1 s) for room, as libsystemd's blocking send would, but bounded.

Who sends what in `ganntec run` (workers/supervisor.py, workers/runtime.py):

- READY=1 (with STATUS=) comes from the supervisor, the unit's main process, once start-up is
  done: the engines recovered and their code compiled and loaded (warm), the segments created
  and pre-faulted (`ganntec run` creates them with lock_memory=False today; were mlock asked,
  its failure would raise inside start(), before READY), the workers forked *and* each seen
  to have turned (two heartbeats since its fork: rings attached, one whole loop turn done, so
  whatever compiled code its loop calls is loaded), and, with the edge on, every edge process
  listening on its port(s). If start-up fails, READY never comes (a STATUS= says why) and
  the process exits: systemd sees a failed start.
- STOPPING=1 when a stop is asked (SIGTERM/SIGINT; the signal handler only records it: the
  supervisor's loop sends it as it begins the stop). STATUS= lines follow restarts.
- WATCHDOG=1 from the engine workers' hot loops themselves, never from a side thread or the
  supervisor: a loop that freezes (SIGSTOP, an endless loop in a step, a deadlock) stops
  pinging. `Pinger.tick(now_ns)` is called where the loop already read the clock for its
  heartbeat (runtime.Worker.beat: every turn, and while waiting for room downstream, which is
  alive back-pressure), so the cost is one integer compare per beat and a send every half
  interval. (DESIGN §2 "engines read no clock" is about the compiled steps; the driver loop
  around them reads it for the heartbeat already.) Pings are therefore at most half an
  interval plus the longest stretch between two beats apart (an idle wait lasts at most a
  quarter of `runtime.heartbeat_ms`). A worker pings at its first beat, before READY: harmless
  (a ping only resets systemd's timer), and the ping goes out before that beat's heartbeat is
  stored, so with placement single the worker's first ping always precedes READY.

WATCHDOG_USEC / WATCHDOG_PID. systemd sets both for the main process; sd_watchdog_enabled(3)
says a process whose pid is not WATCHDOG_PID must not ping (a child that merely inherited
the environment). `watchdog_interval_s` follows that rule. The engine workers are forked
children and *must* ping (the unit has NotifyAccess=all so systemd accepts their datagrams),
so they never read WATCHDOG_PID: the supervisor, which is WATCHDOG_PID, reads the interval once
and hands it to each worker through the fork (worker_main's `watchdog_s`). Edge and history
processes are given nothing and never ping.

One watchdog, several hot loops. systemd's watchdog is per unit: any ping resets it, so with
per-engine placement three live workers could hide a frozen fourth. Two things prevent that:
(1) the supervisor checks each worker's heartbeat and restarts the engines when one is older
than `runtime.heartbeat_ms` (set WatchdogSec well above it), and (2) a worker pings only while
every engine worker of the instance has a fresh heartbeat (`Pinger(healthy=...)`, the same
test the supervisor applies, read from the rings' heartbeat words in shared memory, checked
only when a ping is due). So a ping means "the whole pipeline is turning": if a worker freezes
and the supervisor cannot replace it (itself frozen or wedged), all pings stop and systemd
acts. With placement single there is one hot loop, and its pings are the whole story.
Choose WatchdogSec above `runtime.heartbeat_ms` plus the time a recovery by replay takes: while
the supervisor replaces the workers nobody pings.

Not covered by the watchdog: the supervisor's own loop (it never pings; if it dies the workers
die with it, PR_SET_PDEATHSIG, and systemd sees the main process exit; if it hangs while the
workers run, trading goes on without restarts or snapshots), and the edge and history
processes (the supervisor restarts them when they exit; a wedged edge event loop is not seen).
"""

from __future__ import annotations

import os
import select
import socket
import time
from collections.abc import Callable, Mapping

NOTIFY_SOCKET = "NOTIFY_SOCKET"
WATCHDOG_USEC = "WATCHDOG_USEC"
WATCHDOG_PID = "WATCHDOG_PID"
# systemd reads one datagram into a buffer of this size (NOTIFY_BUFFER_MAX = PIPE_BUF) and drops
# longer ones whole: STATUS texts are cut to fit.
MAX_DATAGRAM = 4096
MAX_STATUS = 1024
WAIT_S = 1.0  # how long READY, STOPPING and STATUS wait for room in a full receive queue
WATCHDOG_MESSAGE = b"WATCHDOG=1"
# A ping held back because a peer's heartbeat is stale is looked at again this soon (not a
# whole period later: the peer may be back at its next beat).
RETRY_NS = 10_000_000


def address(value: str | None) -> str | bytes | None:
    """The socket address `$NOTIFY_SOCKET` names: a path (str), or an abstract name (bytes,
    leading NUL) for `@name`. None when unset or empty. ValueError for any other form."""
    if not value:
        return None
    if value.startswith("/"):
        return value
    if value.startswith("@") and len(value) > 1:
        return b"\0" + value[1:].encode("utf-8", "surrogateescape")
    raise ValueError(f"{NOTIFY_SOCKET}={value!r} (a path starting with '/', or '@name' for an abstract socket)")


def one_line(text: str) -> str:
    """A STATUS value: one line (a newline would start another assignment), of bounded length."""
    text = " ".join(str(text).splitlines())
    return text if len(text) <= MAX_STATUS else text[:MAX_STATUS - 3] + "..."


class Notifier:
    """Sends sd_notify messages to `$NOTIFY_SOCKET` (read from `environ` once, here)."""

    def __init__(self, environ: Mapping[str, str] | None = None):
        env = os.environ if environ is None else environ
        self.socket_name = env.get(NOTIFY_SOCKET, "")
        self.problem: str | None = None  # why the notifier is off although NOTIFY_SOCKET is set
        try:
            self.address = address(self.socket_name)
        except ValueError as exc:
            self.address, self.problem = None, str(exc)
        self.sent = 0
        self.failed = 0
        self.last_error: str | None = None
        self._sock: socket.socket | None = None
        self._pid = 0

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def _socket(self) -> socket.socket:
        if self._sock is not None and self._pid != os.getpid():
            self.close()  # the parent's, inherited through fork: ours to close, not to use
        if self._sock is None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK)
            try:
                sock.connect(self.address)
            except BaseException:
                sock.close()
                raise
            self._sock, self._pid = sock, os.getpid()
        return self._sock

    def send(self, message: str | bytes, wait_s: float = 0.0) -> bool:
        """One datagram; if the receiver's queue is full, wait up to `wait_s` for room. True if
        it was sent; False when off or failed (counted, with the reason; never raised)."""
        if self.address is None:
            return False
        try:
            data = message if isinstance(message, bytes) else message.encode("utf-8", "replace")
            if len(data) > MAX_DATAGRAM:
                raise ValueError(f"{len(data)} bytes (systemd takes at most {MAX_DATAGRAM})")
            deadline = None
            while True:
                sock = self._socket()
                try:
                    sock.send(data)
                    break
                except BlockingIOError:
                    if deadline is None:
                        deadline = time.monotonic() + wait_s
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise BlockingIOError(f"the receiver's queue is full (waited {wait_s:g} s)") from None
                    select.select([], [sock], [], left)  # connected: writable once the receiver has room
        except Exception as exc:  # noqa: BLE001 - a notification must never stop its sender
            if isinstance(exc, OSError) and not isinstance(exc, BlockingIOError):
                self.close()  # the receiver is gone or new: connect afresh next time
            self.failed += 1
            self.last_error = f"{NOTIFY_SOCKET}={self.socket_name}: {type(exc).__name__}: {exc}"
            return False
        self.sent += 1
        return True

    def ready(self, status: str | None = None, wait_s: float = WAIT_S) -> bool:
        return self.send("READY=1" if status is None else f"READY=1\nSTATUS={one_line(status)}", wait_s)

    def stopping(self, status: str | None = None, wait_s: float = WAIT_S) -> bool:
        return self.send("STOPPING=1" if status is None else f"STOPPING=1\nSTATUS={one_line(status)}", wait_s)

    def status(self, text: str, wait_s: float = WAIT_S) -> bool:
        return self.send(f"STATUS={one_line(text)}", wait_s)

    def watchdog(self) -> bool:
        """WATCHDOG=1, never waiting (a hot loop calls it)."""
        return self.send(WATCHDOG_MESSAGE)

    def close(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            except OSError:
                pass
            self._sock = None


def watchdog_setting(environ: Mapping[str, str] | None = None, pid: int | None = None) -> tuple[float | None, str]:
    """(the watchdog interval in seconds, or None; why), by sd_watchdog_enabled(3)'s rules:
    WATCHDOG_USEC a positive integer, and WATCHDOG_PID, when set, this process (`pid`,
    default os.getpid())."""
    env = os.environ if environ is None else environ
    usec = env.get(WATCHDOG_USEC, "")
    if not usec:
        return None, f"{WATCHDOG_USEC} not set"
    try:
        n = int(usec, 10)
    except ValueError:
        return None, f"{WATCHDOG_USEC}={usec!r} is not an integer"
    if n <= 0:
        return None, f"{WATCHDOG_USEC}={usec!r} is not positive"
    owner = env.get(WATCHDOG_PID, "")
    if owner:
        me = os.getpid() if pid is None else pid
        try:
            owner_pid = int(owner, 10)
        except ValueError:
            return None, f"{WATCHDOG_PID}={owner!r} is not a pid"
        if owner_pid != me:
            return None, f"{WATCHDOG_PID}={owner_pid} is another process (this is {me}): the watchdog is not ours"
    return n / 1e6, f"{WATCHDOG_USEC}={n}"


def watchdog_interval_s(environ: Mapping[str, str] | None = None, pid: int | None = None) -> float | None:
    """WatchdogSec in seconds if this process (`pid`) is to ping, else None (see watchdog_setting)."""
    return watchdog_setting(environ, pid)[0]


class Pinger:
    """WATCHDOG=1 from a hot loop: at most every half interval, when the loop's clock reading
    says one is due. `healthy(now_ns)`, if given, must agree first (else the ping is held and
    looked at again RETRY_NS later). `warn(text)` hears of the first failed send, once."""

    __slots__ = ("healthy", "held", "next_ns", "notifier", "period_ns", "warn", "warned")

    def __init__(self, notifier: Notifier, interval_s: float, healthy: Callable[[int], bool] | None = None,
                 warn: Callable[[str], None] | None = None):
        self.notifier = notifier
        self.period_ns = max(int(interval_s * 1e9) // 2, 1)
        self.next_ns = 0  # the first tick pings
        self.healthy = healthy
        self.held = 0  # pings not sent because a peer was stale
        self.warn = warn
        self.warned = False

    def tick(self, now_ns: int) -> None:
        if now_ns < self.next_ns:
            return
        if self.healthy is not None and not self.healthy(now_ns):
            self.held += 1
            self.next_ns = now_ns + min(self.period_ns, RETRY_NS)
            return
        self.next_ns = now_ns + self.period_ns
        if not self.notifier.watchdog() and not self.warned and self.warn is not None:
            self.warned = True
            try:
                self.warn(f"systemd watchdog ping failed ({self.notifier.last_error}); pinging on, failures counted")
            except Exception:  # noqa: BLE001, S110 - nor a warning stops the loop
                pass


# --- the process's default notifier (os.environ), for callers that do not keep their own ----
_default: Notifier | None = None


def default() -> Notifier:
    global _default
    if _default is None:
        _default = Notifier()
    return _default


def ready(status: str | None = None) -> bool:
    return default().ready(status)


def stopping(status: str | None = None) -> bool:
    return default().stopping(status)


def status(text: str) -> bool:
    return default().status(text)


def watchdog() -> bool:
    return default().watchdog()
