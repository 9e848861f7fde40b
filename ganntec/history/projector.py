"""The history process: keeps `<data-dir>/history.sqlite` (store.py) up with the journal, off
the hot path. At start it catches up by replaying the journal (whatever the store has is
skipped), then follows the journal's tail: every poll, the frames written since, replayed
through its own engines, their reports written in one transaction.

It reads the journal only (never a ring), so it neither slows nor waits for the engines; if it
dies the supervisor starts it again and it catches up by itself. Signals only record: SIGTERM
or SIGINT ends it after the transaction in progress."""

from __future__ import annotations

import os
import signal
import sys
import time

from ganntec.history.store import HistoryStore, catch_up
from ganntec.journal.journal import JournalTail
from ganntec.logline import Log

FILE_NAME = "history.sqlite"
POLL_S = 0.05


def store_path(data_dir: str) -> str:
    return os.path.join(os.path.abspath(data_dir), FILE_NAME)


class Projector:
    def __init__(self, path: str, journal_dir: str, make_replayer, log=print):
        self.path, self.journal_dir, self.make_replayer, self.log = path, journal_dir, make_replayer, log
        self.stop = False

    def _on_signal(self, signum, frame):
        self.stop = True

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGINT})
        t0 = time.monotonic()
        with HistoryStore(self.path) as store:
            before = store.last_seq
            rp, next_seq = catch_up(store, self.make_replayer, self.journal_dir)
            self.log(f"history (pid {os.getpid()}) at sequence {store.last_seq} in {self.path} "
                     f"({store.last_seq - before} sequences added in {time.monotonic() - t0:.2f} s); following the journal")
            tail = JournalTail(self.journal_dir, next_seq)
            while not self.stop:
                new = tail.poll()
                if len(new):
                    store.apply(rp.feed(new), new)
                else:
                    time.sleep(POLL_S)  # the journal has no wake-up; a poll costs one stat
        return 0


# The history is off the hot path: on a host with fewer CPUs than busy processes, the engines
# and the edges get the CPU first (it catches up when they idle). Measured on 2 CPUs: 50 us of
# CPU per order, a fifth of the edge's.
HISTORY_NICE = 10


def history_main(data_dir: str, journal_dir: str, make_replayer) -> int:
    """Body of the forked history process."""
    os.nice(HISTORY_NICE)
    try:
        return Projector(store_path(data_dir), journal_dir, make_replayer,
                         log=Log("history").say).run()
    except Exception as exc:  # noqa: BLE001 - the supervisor sees the exit and starts it again
        Log("history", stream=sys.stderr).error(f"{type(exc).__name__}: {exc}")
        return 1
