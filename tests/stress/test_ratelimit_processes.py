"""The rate-limit table under several forked processes at once over one shared anonymous mmap:
compiled loops add to the same keys with the same now_ms, released together by a shared
counter. Counts are exact (no lost or doubled update), each key holds one slot, a full table
puts exactly the unplaced keys' traffic in the overflow slot, and a crowd of refusals bans once.

Each child runs at least `min_rounds` and then goes on (up to `max_rounds`) until the children
were seen to interleave MIN_OVERLAPS times: on a busy 2-core machine a fixed number of rounds
may finish before another child gets a CPU. A child saw an interleave when the turn word it
swaps its id into held another child's id. A control phase runs the same loop with a plain
load + store instead of a compare-exchange, and must lose updates.
"""

from __future__ import annotations

import mmap
import multiprocessing as mp
import os
import sys

import numpy as np
import pytest
from numba import njit

from ganntec.edge import ratelimit as R
from ganntec.shm.atomics import (
    cpu_pause,
    exchange_seqcst,
    fetch_add_seqcst,
    load_acquire,
    py_load_acquire,
    store_release,
)

FORK = mp.get_context("fork")
PROCS = 3
# Control words, then the table (at a 128-byte offset).
C_READY, C_RACY, C_TURN, C_OVERLAPS, C_ROUNDS = 0, 1, 2, 3, 4  # C_ROUNDS + i: child i's rounds
CONTROL_WORDS = 16
MIN_OVERLAPS = 1_000
NOW_MS = (1_700_000_000_000 // 86_400_000 + 1) * 86_400_000 + 12_345
KEY0 = R.account_key(0)
SPIN_LIMIT = 1 << 31


@njit(cache=True, nogil=True)
def _start_together(ctl, procs):
    fetch_add_seqcst(ctl + 8 * C_READY, 1)
    spins = 0
    while load_acquire(ctl + 8 * C_READY) < procs:
        cpu_pause()
        spins += 1
        if spins > SPIN_LIMIT:
            return False
    return True


@njit(cache=True, nogil=True)
def _round_done(ctl, me, rounds, min_rounds):
    """Note an interleave if another child took a turn since this one's; True: stop."""
    other = exchange_seqcst(ctl + 8 * C_TURN, me + 1)
    if other != me + 1 and other != 0:
        fetch_add_seqcst(ctl + 8 * C_OVERLAPS, 1)
    return rounds >= min_rounds and load_acquire(ctl + 8 * C_OVERLAPS) >= MIN_OVERLAPS


@njit(cache=True, nogil=True)
def _hammer(base, ctl, procs, me, keys, offset, min_rounds, max_rounds, now_ms):
    """Rounds of weight 1 to each of `keys` keys (starting at key `offset`)."""
    if not _start_together(ctl, procs):
        return 1
    rounds = 0
    while rounds < max_rounds:
        for j in range(keys):
            R.rt_add(base, R.REQUEST_WEIGHT, KEY0 + (j + offset) % keys, 1, now_ms)
        rounds += 1
        if _round_done(ctl, me, rounds, min_rounds):
            break
    store_release(ctl + 8 * (C_ROUNDS + me), rounds)
    return 0


@njit(cache=True, nogil=True)
def _racy(base, ctl, procs, me, keys, offset, min_rounds, max_rounds, now_ms):
    """The control: load + store, no compare-exchange, on one word."""
    if not _start_together(ctl, procs):
        return 1
    addr = ctl + 8 * C_RACY
    rounds = 0
    while rounds < max_rounds:
        store_release(addr, load_acquire(addr) + 1)
        rounds += 1
        if _round_done(ctl, me, rounds, min_rounds):
            break
    store_release(ctl + 8 * (C_ROUNDS + me), rounds)
    return 0


@njit(cache=True, nogil=True)
def _refuse(base, ctl, procs, me, key, n, now_ms):
    if not _start_together(ctl, procs):
        return 1
    for _ in range(n):
        R.rt_note_refusal(base, key, now_ms, R.REFUSALS_BEFORE_BAN)
    return 0


class Shared:
    """Control words and a rate table in one MAP_SHARED anonymous mapping."""

    def __init__(self, capacity: int):
        self.mm = mmap.mmap(-1, (CONTROL_WORDS + R.RateTable.words_needed(capacity)) * 8)
        self.words = np.frombuffer(self.mm, np.int64)
        self.ctl = self.words.ctypes.data
        self.table = R.RateTable.init(self.words[CONTROL_WORDS:], capacity)

    def word(self, i: int) -> int:
        return py_load_acquire(self.ctl + 8 * i)

    def run(self, fn, *args):
        """Fork PROCS children running fn(base, ctl, PROCS, i, *args), child i on CPU i mod n
        (forked children may all stay on the parent's CPU); all must exit 0. Total rounds."""
        cpus = sorted(os.sched_getaffinity(0))
        procs = [FORK.Process(target=_child, daemon=True,
                              args=(cpus[i % len(cpus)], fn, self.table.address, self.ctl, PROCS, i, *args))
                 for i in range(PROCS)]
        try:
            for p in procs:
                p.start()
            for p in procs:
                p.join(100)
            assert [p.exitcode for p in procs] == [0] * PROCS
        finally:
            for p in procs:
                if p.is_alive():
                    p.kill()
                    p.join()
        assert self.word(C_READY) == PROCS
        return sum(self.word(C_ROUNDS + i) for i in range(PROCS))

    def overlapped(self) -> bool:
        return self.word(C_OVERLAPS) >= MIN_OVERLAPS


def _child(cpu, fn, *args):
    os.sched_setaffinity(0, {cpu})
    sys.exit(fn(*args))


@pytest.fixture(scope="module", autouse=True)
def compiled():
    """Compile in the parent, so children only run."""
    s = Shared(8)
    assert _hammer(s.table.address, s.ctl, 1, 0, 1, 0, 1, 1, NOW_MS) == 0
    assert _racy(s.table.address, s.ctl, 1, 0, 1, 0, 1, 1, NOW_MS) == 0
    assert _refuse(s.table.address, s.ctl, 1, 0, R.ip_key("192.0.2.1"), 1, NOW_MS) == 0


@pytest.mark.timeout(120)
def test_control_a_plain_read_modify_write_loses_updates():
    s = Shared(8)
    rounds = s.run(_racy, 1, 0, 1_000_000, 50_000_000, NOW_MS)
    assert s.overlapped(), "the children never ran at once"
    assert s.word(C_RACY) < rounds


@pytest.mark.timeout(120)
def test_one_key_from_every_process_loses_no_update():
    s = Shared(64)
    rounds = s.run(_hammer, 1, 0, 100_000, 20_000_000, NOW_MS)
    assert s.overlapped(), "the children never ran at once"
    t = s.table
    assert t.peek(R.REQUEST_WEIGHT, KEY0, NOW_MS) == rounds
    assert t.slot_keys().count(KEY0) == 1 and t.overflows == 0


@pytest.mark.timeout(120)
def test_many_keys_claimed_at_once_get_one_slot_each():
    keys = 64
    s = Shared(256)
    rounds = s.run(_hammer, keys, 21, 2_000, 200_000, NOW_MS)  # child i starts at key 21 i
    assert s.overlapped(), "the children never ran at once"
    t = s.table
    assert sorted(k for k in t.slot_keys() if k) == [KEY0 + j for j in range(keys)]
    assert [t.peek(R.REQUEST_WEIGHT, KEY0 + j, NOW_MS) for j in range(keys)] == [rounds] * keys
    assert t.overflows == 0


@pytest.mark.timeout(120)
def test_a_full_table_counts_the_rest_in_the_overflow_slot():
    keys, capacity = 32, 8
    s = Shared(capacity)
    rounds = s.run(_hammer, keys, 11, 1_000, 200_000, NOW_MS)
    assert s.overlapped(), "the children never ran at once"
    t = s.table
    claimed = t.slot_keys()
    assert len(set(claimed)) == capacity and all(KEY0 <= k < KEY0 + keys for k in claimed)
    assert [t.peek(R.REQUEST_WEIGHT, k, NOW_MS) for k in claimed] == [rounds] * capacity
    overflow_adds = (keys - capacity) * rounds
    unplaced = next(KEY0 + j for j in range(keys) if KEY0 + j not in claimed)
    assert t.peek(R.REQUEST_WEIGHT, unplaced, NOW_MS) == overflow_adds
    assert t.overflows == overflow_adds


@pytest.mark.timeout(120)
def test_a_crowd_of_refusals_bans_once():
    n = 20_000
    ip = R.ip_key("198.51.100.99")
    s = Shared(16)
    s.run(_refuse, ip, n, NOW_MS)
    t = s.table
    assert t.peek(R.REFUSALS, ip, NOW_MS) == PROCS * n
    assert t.banned_until(ip, NOW_MS) == NOW_MS + R.BAN_MIN_MS
    assert t.offenses(ip, NOW_MS) == 1
