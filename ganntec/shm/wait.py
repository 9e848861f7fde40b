"""Wait strategies for ring consumers (waiting for data) and producers (waiting for space).

Named by mechanism, as in the LMAX Disruptor:

  busy-spin   spin inside compiled code with PAUSE, never leave the CPU. Lowest latency
              (0.17-0.39 us to see a record on this host); burns a whole core.
  spin-yield  spin for a budget, then `sched_yield` between checks. Gives the core to other
              runnable work on it, still no kernel sleep.
  spin-block  spin for a budget, yield a few times, then sleep on the ring's POSIX semaphore
              (posix-ipc). Costs ~45-110 us to wake on this VM, but frees the core.

Rule for choosing (what `auto` does):
  * busy-spin only when every spinning process has a core of its own that nothing else
    needs: processes placed <= isolated cores;
  * spin-yield when there is a core per process but those cores are shared with the OS;
  * spin-block otherwise: fewer cores than processes (e.g. this 2-core host running the
    engines plus a test runner). Spinning there starves the very process being waited for.

Several rings, one consumer (`wait_for_any`, the order engine's commands and results): the
spin phases check every ring; spin-block arms each ring's flag, re-checks them all, then
sleeps on the semaphore they share (the ring's doorbell, ring.py).

Sleep/wake handshake (no lost wake-up): the sleeper stores its `*_sleeping` flag with a
seq_cst exchange, re-checks the counter, and only then blocks; the waker publishes its counter,
fences (seq_cst), and posts only if it wins the flag back with an exchange. One of the two
always sees the other's store, and each sleep gets at most one post.
"""

from __future__ import annotations

import abc
import os
import time
from pathlib import Path

import numpy as np
import posix_ipc
from numba import njit

from ganntec.shm.atomics import cpu_pause, exchange_seqcst, load_acquire, load_relaxed, rdtsc
from ganntec.shm.ring import (
    OFF_CAPACITY,
    OFF_CONSUMER_SLEEPING,
    OFF_HEAD,
    OFF_PRODUCER_SLEEPING,
    OFF_TAIL,
    Ring,
)


# --- compiled spin loops ------------------------------------------------------------------
@njit(cache=True, nogil=True)
def spin_until_readable(base, n, max_cycles):
    """Consumer: spin until >= n records are readable or `max_cycles` TSC ticks pass."""
    tail = load_relaxed(base + OFF_TAIL)
    start = rdtsc()
    while True:
        avail = load_acquire(base + OFF_HEAD) - tail
        if avail >= n or rdtsc() - start > max_cycles:
            return avail
        cpu_pause()


@njit(cache=True, nogil=True)
def spin_until_writable(base, n, max_cycles):
    """Producer: spin until >= n slots are free or `max_cycles` TSC ticks pass."""
    head = load_relaxed(base + OFF_HEAD)
    cap = load_relaxed(base + OFF_CAPACITY)
    start = rdtsc()
    while True:
        free = cap - (head - load_acquire(base + OFF_TAIL))
        if free >= n or rdtsc() - start > max_cycles:
            return free
        cpu_pause()


@njit(cache=True, nogil=True)
def spin_until_any_readable(bases, max_cycles):
    """Consumer of several rings (base addresses in an int64 array): spin until any has a
    record or `max_cycles` TSC ticks pass. Returns the records readable over all."""
    start = rdtsc()
    while True:
        total = 0
        for b in bases:
            total += load_acquire(b + OFF_HEAD) - load_relaxed(b + OFF_TAIL)
        if total > 0 or rdtsc() - start > max_cycles:
            return total
        cpu_pause()


@njit(cache=True, nogil=True)
def _readable(base):
    return load_acquire(base + OFF_HEAD) - load_relaxed(base + OFF_TAIL)


@njit(cache=True, nogil=True)
def _writable(base):
    return load_relaxed(base + OFF_CAPACITY) - (load_relaxed(base + OFF_HEAD) - load_acquire(base + OFF_TAIL))


@njit(cache=True, nogil=True)
def _arm_sleep(base, flag_offset, for_space, n):
    """Set our sleeping flag (seq_cst), re-check. Returns the count found if >= n (flag
    withdrawn), else -1: the caller may block, the other side will see the flag."""
    exchange_seqcst(base + flag_offset, 1)
    if for_space:
        have = load_relaxed(base + OFF_CAPACITY) - (load_relaxed(base + OFF_HEAD) - load_acquire(base + OFF_TAIL))
    else:
        have = load_acquire(base + OFF_HEAD) - load_relaxed(base + OFF_TAIL)
    if have >= n:
        # If the other side already claimed the flag its post is on the way: that only makes
        # one later sleep return early, and every wait re-checks before trusting a wake.
        exchange_seqcst(base + flag_offset, 0)
        return have
    return -1


def arm_consumer_sleep(ring) -> int:
    """For a consumer that waits elsewhere (an event loop on the ring's wake_fd): set its
    sleeping flag, re-check. Returns the records readable (flag withdrawn), or -1: the
    producer's next publish will post the wake-up."""
    return int(_arm_sleep(ring.address, OFF_CONSUMER_SLEEPING, False, 1))


@njit(cache=True, nogil=True)
def _disarm_sleep(base, flag_offset):
    return exchange_seqcst(base + flag_offset, 0)


# --- TSC calibration ----------------------------------------------------------------------
_TSC_PER_NS: list[float] = []


def tsc_per_ns() -> float:
    """TSC ticks per nanosecond, measured once per process (spin budgets are in ticks)."""
    if not _TSC_PER_NS:
        from ganntec.shm.atomics import py_rdtsc

        py_rdtsc()  # load/compile it first: a cold first call takes ms and would skew the window
        t0, c0 = time.perf_counter_ns(), py_rdtsc()
        while time.perf_counter_ns() - t0 < 2_000_000:
            pass
        t1, c1 = time.perf_counter_ns(), py_rdtsc()
        _TSC_PER_NS.append(max((c1 - c0) / max(t1 - t0, 1), 0.001))
    return _TSC_PER_NS[0]


# --- strategies ---------------------------------------------------------------------------
class WaitStrategy(abc.ABC):
    """Base: `wait_for_data`/`wait_for_space` return the count available (>= n), or what is
    available (possibly < n, 0) once `timeout_s` passes. `None` waits without limit."""

    name = "abstract"

    def wait_for_data(self, ring: Ring, n: int = 1, timeout_s: float | None = None) -> int:
        return self._wait(ring, n, timeout_s, for_space=False)

    def wait_for_space(self, ring: Ring, n: int = 1, timeout_s: float | None = None) -> int:
        return self._wait(ring, n, timeout_s, for_space=True)

    def wait_for_any(self, rings: list[Ring], timeout_s: float | None = None) -> int:
        """Wait until any of `rings` (one consumer reading them all) has a record; returns the
        records readable over all of them (0 once `timeout_s` passes). spin-block needs the
        rings to share a doorbell (ring.py): it sleeps on that one semaphore."""
        if len(rings) == 1:
            return self.wait_for_data(rings[0], 1, timeout_s)
        bases = np.array([r.address for r in rings], np.int64)
        return self._wait_any(rings, bases, timeout_s)

    @abc.abstractmethod
    def _wait_any(self, rings: list[Ring], bases: np.ndarray, timeout_s: float | None) -> int:
        """Wait until any ring (base addresses `bases`) has a record or the timeout passes."""

    @abc.abstractmethod
    def _wait(self, ring: Ring, n: int, timeout_s: float | None, for_space: bool) -> int:
        """Wait until `n` records (or free slots) are there or the timeout passes."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def _deadline(timeout_s: float | None) -> float | None:
    return None if timeout_s is None else time.monotonic() + timeout_s


def _remaining(deadline: float | None) -> float | None:
    return None if deadline is None else deadline - time.monotonic()


class BusySpin(WaitStrategy):
    """Spin in compiled code; return to Python every `slice_us` to honour the timeout."""

    name = "busy-spin"

    def __init__(self, slice_us: float = 1000.0):
        self.slice_cycles = int(slice_us * 1000 * tsc_per_ns())

    def _wait(self, ring, n, timeout_s, for_space):
        spin = spin_until_writable if for_space else spin_until_readable
        deadline = _deadline(timeout_s)
        while True:
            have = spin(ring.address, n, self.slice_cycles)
            if have >= n:
                return have
            left = _remaining(deadline)
            if left is not None and left <= 0:
                return have

    def _wait_any(self, rings, bases, timeout_s):
        deadline = _deadline(timeout_s)
        while True:
            have = spin_until_any_readable(bases, self.slice_cycles)
            left = _remaining(deadline)
            if have or (left is not None and left <= 0):
                return have


class SpinYield(WaitStrategy):
    """Spin for `spin_us`, then `sched_yield` between checks."""

    name = "spin-yield"

    def __init__(self, spin_us: float = 20.0):
        self.spin_cycles = int(spin_us * 1000 * tsc_per_ns())

    def _wait(self, ring, n, timeout_s, for_space):
        spin = spin_until_writable if for_space else spin_until_readable
        check = _writable if for_space else _readable
        deadline = _deadline(timeout_s)
        have = spin(ring.address, n, self.spin_cycles)
        while have < n:
            left = _remaining(deadline)
            if left is not None and left <= 0:
                break
            os.sched_yield()
            have = check(ring.address)
        return have

    def _wait_any(self, rings, bases, timeout_s):
        deadline = _deadline(timeout_s)
        have = spin_until_any_readable(bases, self.spin_cycles)
        while not have:
            left = _remaining(deadline)
            if left is not None and left <= 0:
                break
            os.sched_yield()
            have = spin_until_any_readable(bases, 0)
        return have


class SpinBlock(WaitStrategy):
    """Spin for `spin_us`, yield `yields` times, then block on the ring's semaphore.

    Producers paired with a spin-block consumer must publish with the waking calls
    (`Ring.push`/`Ring.pop` do by default; compiled loops use `publish_wake`/`release_wake`
    and post the semaphore when they return 1).
    """

    name = "spin-block"

    def __init__(self, spin_us: float = 20.0, yields: int = 50, block_slice_s: float | None = None):
        self.spin_cycles = int(spin_us * 1000 * tsc_per_ns())
        self.yields = yields
        self.block_slice_s = block_slice_s
        self.sleeps = 0
        self.wakes = 0

    def _wait(self, ring, n, timeout_s, for_space):
        spin = spin_until_writable if for_space else spin_until_readable
        check = _writable if for_space else _readable
        base = ring.address
        have = spin(base, n, self.spin_cycles)
        if have >= n:
            return have
        for _ in range(self.yields):
            os.sched_yield()
            have = check(base)
            if have >= n:
                return have
        flag = OFF_PRODUCER_SLEEPING if for_space else OFF_CONSUMER_SLEEPING
        sem = ring.space_sem if for_space else ring.data_sem
        deadline = _deadline(timeout_s)
        while True:
            have = _arm_sleep(base, flag, for_space, n)
            if have >= n:
                return have
            left = _remaining(deadline)
            if left is not None and left <= 0:
                _disarm_sleep(base, flag)
                return check(base)
            if self.block_slice_s is not None:
                left = self.block_slice_s if left is None else min(left, self.block_slice_s)
            self.sleeps += 1
            try:
                sem.acquire(left)
                self.wakes += 1
            except posix_ipc.BusyError:
                _disarm_sleep(base, flag)
            have = check(base)
            if have >= n:
                return have

    def _wait_any(self, rings, bases, timeout_s):
        doorbells = {r.doorbell for r in rings}
        if len(doorbells) != 1 or 0 in doorbells:
            raise ValueError(f"spin-block waits on several rings only through one shared doorbell "
                             f"(rings {[r.name for r in rings]} have doorbells {sorted(doorbells)})")
        have = spin_until_any_readable(bases, self.spin_cycles)
        if have:
            return have
        for _ in range(self.yields):
            os.sched_yield()
            have = spin_until_any_readable(bases, 0)
            if have:
                return have
        sem = rings[0].data_sem
        deadline = _deadline(timeout_s)
        while True:
            armed = 0
            for b in bases:  # every ring's flag up, each re-checked after (no lost wake-up)
                if _arm_sleep(b, OFF_CONSUMER_SLEEPING, False, 1) >= 1:
                    break
                armed += 1
            if armed == len(bases):
                left = _remaining(deadline)
                if left is not None and left <= 0:
                    left = -1.0
                elif self.block_slice_s is not None:
                    left = self.block_slice_s if left is None else min(left, self.block_slice_s)
                if left is None or left > 0:
                    self.sleeps += 1
                    try:
                        sem.acquire(left)
                        self.wakes += 1
                    except posix_ipc.BusyError:
                        pass
            for b in bases[:armed]:
                _disarm_sleep(b, OFF_CONSUMER_SLEEPING)
            have = spin_until_any_readable(bases, 0)
            left = _remaining(deadline)
            if have or (left is not None and left <= 0):
                return have


STRATEGIES = {"busy-spin": BusySpin, "spin-yield": SpinYield, "spin-block": SpinBlock}


def isolated_cpus(root: Path = Path("/")) -> set[int]:
    """CPUs the kernel keeps free of other tasks (isolcpus / nohz_full), read under `root`."""
    from ganntec.cpulist import parse_cpulist

    found: set[int] = set()
    for rel in ("sys/devices/system/cpu/isolated", "sys/devices/system/cpu/nohz_full"):
        try:
            text = (root / rel).read_text().strip()
        except OSError:
            continue
        if text and text != "(null)":
            found |= parse_cpulist(text)
    return found


def choose(processes: int, cpus: set[int] | None = None, isolated: set[int] | None = None) -> str:
    """The `auto` rule: the strategy name for `processes` waiting processes on `cpus`."""
    if processes < 1:
        raise ValueError(f"processes={processes} (must be >= 1)")
    cpus = set(os.sched_getaffinity(0)) if cpus is None else set(cpus)
    isolated = (isolated_cpus() if isolated is None else set(isolated)) & cpus
    if processes <= len(isolated):
        return "busy-spin"
    if processes <= len(cpus):
        return "spin-yield"
    return "spin-block"


def make(name: str, processes: int = 1, **kw) -> WaitStrategy:
    """A strategy by name; `auto` applies `choose(processes)`."""
    if name == "auto":
        name = choose(processes)
    try:
        return STRATEGIES[name](**kw)
    except KeyError:
        raise ValueError(f"wait={name!r} (one of auto, {', '.join(STRATEGIES)})") from None
