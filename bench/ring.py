"""Ring benchmark: ganntec's SPSC shared-memory ring against the usual Python IPC transports.

    python bench/ring.py            # default sizes, about a minute
    python bench/ring.py --quick    # short run, a few seconds

64-byte records. The producer (or ping-pong client) is pinned to CPU0, the consumer (or server)
to CPU1. Every @njit function is compiled in the parent before it forks the children
(multiprocessing 'fork' context), so the children run inherited machine code.

What is measured:

  ganntec.batched        producer and consumer loops each entirely inside one @njit call:
                         claim up to a batch, write the slots, publish once; peek what is
                         there up to a batch, verify every record's sequence, release once
  ganntec.python_batch   Ring.push / Ring.pop of 64 records per Python call
  ganntec.python_single  Ring.push / Ring.pop of one record per Python call; plus
                         `ganntec.python_push_pop_ns`: one push + one pop in one process
  ganntec (latency)      ping-pong over two rings, both spin loops inside @njit, rdtsc stamps
  ganntec.python         the same ping-pong through Ring.push / Ring.pop from Python
  peers                  multiprocessing.Queue, multiprocessing.Pipe, faster-fifo, pyzmq
                         PUSH/PULL over ipc://, each with its natural blocking receive (a
                         spinning receive in a pinned process starves the transport's helper
                         thread: see /work/shared/notes/ipc-measurements.md, section 3)

Throughput = messages / (producer's start stamp -> consumer has them all), both stamps from
time.perf_counter_ns (CLOCK_MONOTONIC, shared by the processes). Latency is one-way = round
trip / 2, with the first 10% of round trips dropped as warm-up. `ganntec.ring_bytes` is the
size of the batched ring's /dev/shm file.

Cross-core figures depend on where the hypervisor runs the two vCPUs, which can change between
and during runs: on the 2-vCPU AMD VM a bare cache-line hand-off took 35-55 ns or ~270 ns, and
batched throughput (~450 vs ~90 M/s) and ring latency (0.06 vs 0.34 us) moved with it. So the
run is bracketed by that hand-off probe, and the CPU load of other processes is measured; both
are printed and put in the JSON `host` object.

The last line printed is one JSON object with every figure and the ratios against each peer.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import multiprocessing
import multiprocessing.connection
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass

import numpy as np

# Importing ganntec first points numba's cache at ganntec's layout-keyed directory; it must
# happen before the @njit decorators below run.
from ganntec.shm.atomics import cpu_pause, load_acquire, rdtsc, store_release
from ganntec.shm.ring import (
    SLOTS_OFFSET,
    Ring,
    claim,
    head_position,
    peek,
    publish,
    release,
    ring_bytes,
    tail_position,
)
from ganntec.shm.segment import SHM_DIR, segment_name
from ganntec.shm.wait import tsc_per_ns

from benchlib import BaseReport, BenchFailure, CpuMeter, cpu_model

import numba
from numba import njit

SLOT_BYTES = 64
WORDS = SLOT_BYTES // 8
PY_BATCH = 64
PY_CYCLE = 4096  # the Python producers push from a block of this many numbered records
PAYLOAD = bytes(SLOT_BYTES)
PRODUCER_CPU, CONSUMER_CPU = 0, 1
BARRIER_TIMEOUT_S = 60.0
WARMUP_FRACTION = 0.1
CTX = multiprocessing.get_context("fork")


def slot_words(ring):
    """The ring's slots as a (capacity, 8) int64 array over the shared memory (no copy)."""
    return ring.slots_view().view(np.int64)


# --- compiled loops -----------------------------------------------------------------------
# Only int-address ring functions are called inside the loops (they inline); the slot views
# are arguments of the outer function and merely indexed, which costs no NRT refcounting.
@njit(cache=True, nogil=True)
def produce_batched(base, slots, n, batch):
    """Write records 0..n-1 (word w of record s holds s + w), publishing once per claim."""
    mask = slots.shape[0] - 1
    sent = 0
    while sent < n:
        k = claim(base, min(batch, n - sent))
        if k == 0:
            cpu_pause()
            continue
        pos = head_position(base)
        for i in range(k):
            row = (pos + i) & mask
            seq = sent + i
            for w in range(WORDS):
                slots[row, w] = seq + w
        publish(base, k)
        sent += k
    return sent


@njit(cache=True, nogil=True)
def consume_batched(base, slots, n, batch):
    """Read n records, taking whatever is readable up to `batch` per release; returns how
    many records had a wrong first or last word."""
    mask = slots.shape[0] - 1
    got = 0
    bad = 0
    while got < n:
        k = peek(base, min(batch, n - got))
        if k == 0:
            cpu_pause()
            continue
        pos = tail_position(base)
        for i in range(k):
            row = (pos + i) & mask
            seq = got + i
            if slots[row, 0] != seq or slots[row, WORDS - 1] != seq + WORDS - 1:
                bad += 1
        release(base, k)
        got += k
    return bad


@njit(cache=True, nogil=True)
def pingpong_client(out_base, out_slots, in_base, in_slots, ticks):
    """Send record i, spin until it comes back; ticks[i] = round trip in TSC ticks.
    Returns how many echoes carried the wrong sequence."""
    out_mask = out_slots.shape[0] - 1
    in_mask = in_slots.shape[0] - 1
    bad = 0
    for i in range(ticks.shape[0]):
        t0 = rdtsc()
        while claim(out_base, 1) == 0:
            cpu_pause()
        row = head_position(out_base) & out_mask
        for w in range(WORDS):
            out_slots[row, w] = i + w
        publish(out_base, 1)
        while peek(in_base, 1) == 0:
            cpu_pause()
        if in_slots[tail_position(in_base) & in_mask, 0] != i:
            bad += 1
        release(in_base, 1)
        ticks[i] = rdtsc() - t0
    return bad


@njit(cache=True, nogil=True)
def pingpong_server(in_base, in_slots, out_base, out_slots, iters):
    """Echo `iters` records from the in-ring to the out-ring, spinning for each."""
    in_mask = in_slots.shape[0] - 1
    out_mask = out_slots.shape[0] - 1
    for _ in range(iters):
        while peek(in_base, 1) == 0:
            cpu_pause()
        while claim(out_base, 1) == 0:
            cpu_pause()
        src = tail_position(in_base) & in_mask
        dst = head_position(out_base) & out_mask
        for w in range(WORDS):
            out_slots[dst, w] = in_slots[src, w]
        publish(out_base, 1)
        release(in_base, 1)
    return iters


@njit(cache=True, nogil=True)
def handoff_client(ping, pong, ticks):
    """Bare cache-line ping-pong, the floor under any cross-core hand-off: store i to the
    `ping` line, spin until the other side stores it to the `pong` line."""
    for i in range(1, ticks.shape[0] + 1):
        t0 = rdtsc()
        store_release(ping, i)
        while load_acquire(pong) != i:
            cpu_pause()
        ticks[i - 1] = rdtsc() - t0


@njit(cache=True, nogil=True)
def handoff_server(ping, pong, iters):
    for i in range(1, iters + 1):
        while load_acquire(ping) != i:
            cpu_pause()
        store_release(pong, i)


HOT_LOOPS = (produce_batched, consume_batched, pingpong_client, pingpong_server)


# --- child processes ----------------------------------------------------------------------
def _child_main(cpu, role, args, barrier, conn):
    try:
        os.sched_setaffinity(0, {cpu})
        conn.send((True, role(barrier, *args)))
    except BaseException as exc:  # report anything, KeyboardInterrupt included, then exit
        conn.send((False, f"{role.__name__}: {type(exc).__name__}: {exc}"))
    finally:
        conn.close()


def run_children(roles, timeout_s):
    """Run each (cpu, role, args) as `role(barrier, *args)` in a forked child pinned to `cpu`.

    Every role does its setup, waits on the shared barrier, then runs its timed part and
    returns a small picklable result. Returns the results in order. On a child error, or if
    they have not all finished within `timeout_s`, kills every child and raises BenchFailure.
    """
    barrier = CTX.Barrier(len(roles))
    procs, conns = [], []
    try:
        for cpu, role, args in roles:
            recv, send = CTX.Pipe(duplex=False)
            proc = CTX.Process(target=_child_main, args=(cpu, role, args, barrier, send), daemon=True)
            proc.start()
            send.close()  # the child holds the only write end: its death reads as EOF
            procs.append(proc)
            conns.append(recv)
        results = [None] * len(roles)
        pending = {conn: i for i, conn in enumerate(conns)}
        deadline = time.monotonic() + timeout_s
        while pending:
            ready = multiprocessing.connection.wait(list(pending), max(0.0, deadline - time.monotonic()))
            if not ready:
                names = ", ".join(roles[i][1].__name__ for i in pending.values())
                raise BenchFailure(f"timed out after {timeout_s:.0f} s waiting for {names}; killed")
            for conn in ready:
                i = pending.pop(conn)
                try:
                    ok, value = conn.recv()
                except EOFError:
                    procs[i].join(1.0)
                    raise BenchFailure(f"{roles[i][1].__name__} died (exit code {procs[i].exitcode})") from None
                if not ok:
                    raise BenchFailure(value)
                results[i] = value
        for proc in procs:
            proc.join(max(1.0, deadline - time.monotonic()))
            if proc.is_alive():
                raise BenchFailure(f"child {proc.pid} did not exit after reporting; killed")
        return results
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.kill()
                proc.join(5.0)
        for conn in conns:
            conn.close()


class Rings:
    """The rings of one measurement: the parent creates them and unlinks them on exit."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.made = []

    def create(self, name, capacity):
        ring = Ring.create(self.cfg.instance, name, capacity, SLOT_BYTES, lock_memory=self.cfg.lock_memory)
        self.made.append(ring)
        return ring

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        while self.made:
            self.made.pop().close(unlink=True)


def _one_way_us(round_trips_ns):
    """p50/p99/p99.9 of round trip / 2 in µs, warm-up dropped."""
    rt = np.asarray(round_trips_ns, dtype=np.float64)[int(len(round_trips_ns) * WARMUP_FRACTION):]
    p50, p99, p999 = np.percentile(rt / 2.0 / 1000.0, [50, 99, 99.9])
    return {"p50": float(p50), "p99": float(p99), "p999": float(p999), "samples": int(len(rt))}


# --- ganntec roles (run in the children) ---------------------------------------------------
def ring_producer_njit(barrier, instance, name, n, batch):
    with Ring.attach(instance, name, role="producer") as ring:
        slots = slot_words(ring)
        barrier.wait(BARRIER_TIMEOUT_S)
        t0 = time.perf_counter_ns()
        produce_batched(ring.address, slots, n, batch)
        return {"t0": t0}


def ring_consumer_njit(barrier, instance, name, n, batch):
    with Ring.attach(instance, name, role="consumer") as ring:
        slots = slot_words(ring)
        barrier.wait(BARRIER_TIMEOUT_S)
        bad = consume_batched(ring.address, slots, n, batch)
        t1 = time.perf_counter_ns()
        st = ring.stats()  # the producer is done: its counters are final too
        return {"t1": t1, "bad": int(bad), "releases": st.releases, "full_claims": st.full_claims,
                "empty_peeks": st.empty_peeks}


def ring_producer_python(barrier, instance, name, n, batch):
    """Push n records, `batch` per call; record s carries s % PY_CYCLE in word 0."""
    with Ring.attach(instance, name, role="producer") as ring:
        src = np.zeros((PY_CYCLE, WORDS), dtype=np.int64)
        src[:, 0] = np.arange(PY_CYCLE)
        barrier.wait(BARRIER_TIMEOUT_S)
        t0 = time.perf_counter_ns()
        sent = 0
        while sent < n:
            off = sent & (PY_CYCLE - 1)
            sent += ring.push(src[off : off + min(batch, n - sent)])
        return {"t0": t0}


def ring_consumer_python(barrier, instance, name, n, batch):
    """Pop up to `batch` per call; check the first and last record of every pop."""
    with Ring.attach(instance, name, role="consumer") as ring:
        out = np.empty((batch, WORDS), dtype=np.int64)
        barrier.wait(BARRIER_TIMEOUT_S)
        got = bad = 0
        while got < n:
            k = ring.pop(out)
            if k:
                if out[0, 0] != got & (PY_CYCLE - 1) or out[k - 1, 0] != (got + k - 1) & (PY_CYCLE - 1):
                    bad += 1
                got += k
        return {"t1": time.perf_counter_ns(), "bad": bad}


def ring_push_pop_python(barrier, instance, name, n, chunks):
    """One process: push one record, pop it, n times; ns per push + pop, median over chunks."""
    with Ring.attach(instance, name) as ring:
        rec = np.zeros((1, WORDS), dtype=np.int64)
        out = np.empty((1, WORDS), dtype=np.int64)
        per = n // chunks
        barrier.wait(BARRIER_TIMEOUT_S)
        costs = []
        for _ in range(chunks):
            t0 = time.perf_counter_ns()
            for i in range(per):
                rec[0, 0] = i
                ring.push(rec)
                ring.pop(out)
            costs.append((time.perf_counter_ns() - t0) / per)
        if out[0, 0] != per - 1:
            raise BenchFailure(f"popped record {out[0, 0]}, expected {per - 1}")
        return {"ns": statistics.median(costs)}


def ring_client_njit(barrier, instance, out_name, in_name, iters, ticks_per_ns):
    with Ring.attach(instance, out_name, role="producer") as out, Ring.attach(instance, in_name, role="consumer") as inn:
        ticks = np.zeros(iters, dtype=np.int64)
        out_slots, in_slots = slot_words(out), slot_words(inn)
        barrier.wait(BARRIER_TIMEOUT_S)
        bad = pingpong_client(out.address, out_slots, inn.address, in_slots, ticks)
        if bad:
            raise BenchFailure(f"{bad} echoes carried the wrong sequence")
        return _one_way_us(ticks / ticks_per_ns)


def ring_server_njit(barrier, instance, in_name, out_name, iters):
    with Ring.attach(instance, in_name, role="consumer") as inn, Ring.attach(instance, out_name, role="producer") as out:
        in_slots, out_slots = slot_words(inn), slot_words(out)
        barrier.wait(BARRIER_TIMEOUT_S)
        pingpong_server(inn.address, in_slots, out.address, out_slots, iters)
        return {}


def ring_client_python(barrier, instance, out_name, in_name, iters):
    with Ring.attach(instance, out_name, role="producer") as out, Ring.attach(instance, in_name, role="consumer") as inn:
        rec = np.zeros((1, WORDS), dtype=np.int64)
        back = np.empty((1, WORDS), dtype=np.int64)
        rts = np.zeros(iters, dtype=np.int64)
        barrier.wait(BARRIER_TIMEOUT_S)
        bad = 0
        for i in range(iters):
            rec[0, 0] = i
            t0 = time.perf_counter_ns()
            while out.push(rec) == 0:
                pass
            while inn.pop(back) == 0:
                pass
            rts[i] = time.perf_counter_ns() - t0
            bad += back[0, 0] != i
        if bad:
            raise BenchFailure(f"{bad} echoes carried the wrong sequence")
        return _one_way_us(rts)


def ring_server_python(barrier, instance, in_name, out_name, iters):
    with Ring.attach(instance, in_name, role="consumer") as inn, Ring.attach(instance, out_name, role="producer") as out:
        buf = np.empty((1, WORDS), dtype=np.int64)
        barrier.wait(BARRIER_TIMEOUT_S)
        for _ in range(iters):
            while inn.pop(buf) == 0:
                pass
            while out.push(buf) == 0:
                pass
        return {}


def handoff_client_role(barrier, instance, name, iters, ticks_per_ns):
    """Uses the first two slots of a ring as two bare cache lines (no ring protocol)."""
    with Ring.attach(instance, name) as ring:
        ticks = np.zeros(iters, dtype=np.int64)
        barrier.wait(BARRIER_TIMEOUT_S)
        handoff_client(ring.address + SLOTS_OFFSET, ring.address + SLOTS_OFFSET + SLOT_BYTES, ticks)
        return _one_way_us(ticks / ticks_per_ns)


def handoff_server_role(barrier, instance, name, iters):
    with Ring.attach(instance, name) as ring:
        barrier.wait(BARRIER_TIMEOUT_S)
        handoff_server(ring.address + SLOTS_OFFSET, ring.address + SLOTS_OFFSET + SLOT_BYTES, iters)
        return {}


# --- peers --------------------------------------------------------------------------------
# A Peer says how to make, open, use and close one transport; the four peer_* roles below
# drive every peer the same way. Every receive blocks (see the module docstring).
class Peer:
    name = "peer"
    module = None  # the package it needs beyond the standard library (the `bench` extra)

    def endpoints(self, tmpdir):
        """Two one-way channels made in the parent and inherited by both children (throughput
        uses the first, the ping-pong one per direction)."""
        raise NotImplementedError

    def send(self, end, msg):
        raise NotImplementedError

    def recv_count(self, end):
        """Block for at least one message; return how many were received."""
        raise NotImplementedError

    # zmq sockets must be made in the child, after fork; the others are inherited as-is.
    def open(self, end, sending):
        return end

    def close(self, sock):
        pass


class MpQueue(Peer):
    name = "multiprocessing.queue"

    def endpoints(self, tmpdir):
        return CTX.Queue(), CTX.Queue()

    def send(self, q, msg):
        q.put(msg)

    def recv_count(self, q):
        q.get()
        return 1


class MpPipe(Peer):
    name = "multiprocessing.pipe"

    def endpoints(self, tmpdir):
        return CTX.Pipe(duplex=False), CTX.Pipe(duplex=False)

    def open(self, end, sending):
        recv, send = end
        return send if sending else recv

    def send(self, conn, msg):
        conn.send_bytes(msg)

    def recv_count(self, conn):
        conn.recv_bytes()
        return 1


class FasterFifo(Peer):
    name = "faster_fifo"
    module = "faster_fifo"

    def endpoints(self, tmpdir):
        import faster_fifo

        return faster_fifo.Queue(max_size_bytes=4 << 20), faster_fifo.Queue(max_size_bytes=4 << 20)

    def send(self, q, msg):
        q.put(msg)

    def recv_count(self, q):
        return len(q.get_many(timeout=BARRIER_TIMEOUT_S, max_messages_to_get=4096))


class PyZmq(Peer):
    """PUSH/PULL over ipc://. The receiver binds; the sender connects once the socket file
    exists (connecting earlier costs a 100 ms reconnect interval)."""

    name = "pyzmq"
    module = "zmq"

    def endpoints(self, tmpdir):
        return os.path.join(tmpdir, "a.sock"), os.path.join(tmpdir, "b.sock")

    def open(self, path, sending):
        import zmq

        ctx = zmq.Context()
        if sending:
            sock = ctx.socket(zmq.PUSH)
            deadline = time.monotonic() + BARRIER_TIMEOUT_S
            while not os.path.exists(path):
                if time.monotonic() > deadline:
                    raise BenchFailure(f"no receiver bound {path}")
                time.sleep(0.001)
            sock.connect(f"ipc://{path}")
        else:
            sock = ctx.socket(zmq.PULL)
            sock.bind(f"ipc://{path}")
        sock.setsockopt(zmq.LINGER, 1000)
        return sock

    def send(self, sock, msg):
        sock.send(msg)

    def recv_count(self, sock):
        sock.recv()
        return 1

    def close(self, sock):
        ctx = sock.context
        sock.close()
        ctx.term()


PEERS = (MpQueue(), MpPipe(), FasterFifo(), PyZmq())


def peer_producer(barrier, peer, end, n):
    sock = peer.open(end, sending=True)
    try:
        barrier.wait(BARRIER_TIMEOUT_S)
        t0 = time.perf_counter_ns()
        for _ in range(n):
            peer.send(sock, PAYLOAD)
        return {"t0": t0}
    finally:
        peer.close(sock)


def peer_consumer(barrier, peer, end, n):
    sock = peer.open(end, sending=False)
    try:
        barrier.wait(BARRIER_TIMEOUT_S)
        got = 0
        while got < n:
            got += peer.recv_count(sock)
        return {"t1": time.perf_counter_ns(), "bad": got - n}
    finally:
        peer.close(sock)


def peer_client(barrier, peer, out_end, in_end, iters):
    out = peer.open(out_end, sending=True)
    inn = peer.open(in_end, sending=False)
    try:
        rts = np.zeros(iters, dtype=np.int64)
        barrier.wait(BARRIER_TIMEOUT_S)
        for i in range(iters):
            t0 = time.perf_counter_ns()
            peer.send(out, PAYLOAD)
            peer.recv_count(inn)
            rts[i] = time.perf_counter_ns() - t0
        return _one_way_us(rts)
    finally:
        peer.close(out)
        peer.close(inn)


def peer_server(barrier, peer, in_end, out_end, iters):
    inn = peer.open(in_end, sending=False)
    out = peer.open(out_end, sending=True)
    try:
        barrier.wait(BARRIER_TIMEOUT_S)
        for _ in range(iters):
            peer.recv_count(inn)
            peer.send(out, PAYLOAD)
        return {}
    finally:
        peer.close(inn)
        peer.close(out)


# --- measurements (parent) -----------------------------------------------------------------

@dataclass(frozen=True)
class Config:
    instance: str
    lock_memory: bool
    timeout_s: float
    reps: int
    capacity: int
    batch: int
    sweep: tuple  # ((capacity, batch), ...) tried before the main batched runs; may be empty
    sweep_reps: int
    batched_n: int
    python_batch_n: int
    python_single_n: int
    push_pop_n: int
    njit_latency_iters: int
    python_latency_iters: int
    peer_n: int
    peer_latency_iters: int


def sizes(quick: bool) -> dict:
    if quick:
        return dict(reps=3, sweep=(), sweep_reps=0, batched_n=5_000_000, python_batch_n=1_000_000,
                    python_single_n=100_000, push_pop_n=100_000, njit_latency_iters=100_000,
                    python_latency_iters=20_000, peer_n=50_000, peer_latency_iters=5_000)
    sweep = tuple((cap, b) for cap in (1024, 8192, 65536) for b in (64, 256, 1024) if b <= cap // 4)
    return dict(reps=5, sweep=sweep, sweep_reps=3, batched_n=50_000_000, python_batch_n=10_000_000,
                python_single_n=1_000_000, push_pop_n=1_000_000, njit_latency_iters=1_000_000,
                python_latency_iters=200_000, peer_n=500_000, peer_latency_iters=50_000)


def throughput(n, producer, consumer):
    if consumer.get("bad"):
        raise BenchFailure(f"consumer found {consumer['bad']} bad records of {n}")
    return n * 1e9 / (consumer["t1"] - producer["t0"])


@dataclass(frozen=True)
class BatchedRun:
    rate: float                 # records/s
    records_per_release: float  # how far behind the consumer ran (batch = always a full one)
    full_claims: int            # producer found fewer free slots than it asked for
    empty_peeks: int            # consumer found fewer records than it asked for
    background_cores: float     # other CPU load on the host during the run


def measure_batched(cfg, capacity, batch, n):
    """One producer/consumer run of the whole-@njit loops on a fresh ring."""
    meter = CpuMeter()
    with Rings(cfg) as rings:
        rings.create("batched", capacity)
        args = (cfg.instance, "batched", n, batch)
        p, c = run_children([(PRODUCER_CPU, ring_producer_njit, args), (CONSUMER_CPU, ring_consumer_njit, args)], cfg.timeout_s)
    return BatchedRun(throughput(n, p, c), n / c["releases"], c["full_claims"], c["empty_peeks"], meter.cores()[0])


def ring_file_bytes(cfg, capacity):
    """Size of a ring's /dev/shm file: the whole segment, as the kernel holds it."""
    with Rings(cfg) as rings:
        rings.create("size", capacity)
        return os.stat(SHM_DIR / segment_name(cfg.instance, "size").lstrip("/")).st_size


def measure_python_throughput(cfg, batch, n):
    with Rings(cfg) as rings:
        rings.create("pythru", cfg.capacity)
        args = (cfg.instance, "pythru", n, batch)
        p, c = run_children([(PRODUCER_CPU, ring_producer_python, args), (CONSUMER_CPU, ring_consumer_python, args)], cfg.timeout_s)
        return throughput(n, p, c)


def measure_push_pop(cfg):
    with Rings(cfg) as rings:
        rings.create("pushpop", 64)
        (r,) = run_children([(PRODUCER_CPU, ring_push_pop_python, (cfg.instance, "pushpop", cfg.push_pop_n, 5))], cfg.timeout_s)
        return r["ns"]


def measure_ring_latency(cfg, compiled):
    with Rings(cfg) as rings:
        rings.create("ping", 64)
        rings.create("pong", 64)
        if compiled:
            iters = cfg.njit_latency_iters
            client = (PRODUCER_CPU, ring_client_njit, (cfg.instance, "ping", "pong", iters, tsc_per_ns()))
            server = (CONSUMER_CPU, ring_server_njit, (cfg.instance, "ping", "pong", iters))
        else:
            iters = cfg.python_latency_iters
            client = (PRODUCER_CPU, ring_client_python, (cfg.instance, "ping", "pong", iters))
            server = (CONSUMER_CPU, ring_server_python, (cfg.instance, "ping", "pong", iters))
        return run_children([client, server], cfg.timeout_s)[0]


def measure_handoff_ns(cfg):
    """One-way p50 of a bare cache-line hand-off between the two CPUs, in ns: how far apart the
    hypervisor has put the two vCPUs right now. Every cross-core figure scales with it, and on
    these VMs it changes between (and during) runs; measured at the start and the end."""
    iters = 200_000
    with Rings(cfg) as rings:
        rings.create("handoff", 64)
        client = (PRODUCER_CPU, handoff_client_role, (cfg.instance, "handoff", iters, tsc_per_ns()))
        server = (CONSUMER_CPU, handoff_server_role, (cfg.instance, "handoff", iters))
        return run_children([client, server], cfg.timeout_s)[0]["p50"] * 1000.0


def measure_peer(cfg, peer):
    """(throughput, latency percentiles) of one peer, each on fresh endpoints."""
    tmpdir = tempfile.mkdtemp(prefix="ganntec-bench-")
    try:
        end = peer.endpoints(tmpdir)[0]
        p, c = run_children([(PRODUCER_CPU, peer_producer, (peer, end, cfg.peer_n)),
                             (CONSUMER_CPU, peer_consumer, (peer, end, cfg.peer_n))], cfg.timeout_s)
        rate = throughput(cfg.peer_n, p, c)
        ping, pong = peer.endpoints(tmpdir)
        lat, _ = run_children([(PRODUCER_CPU, peer_client, (peer, ping, pong, cfg.peer_latency_iters)),
                               (CONSUMER_CPU, peer_server, (peer, ping, pong, cfg.peer_latency_iters))], cfg.timeout_s)
        return rate, lat
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


def compile_all(cfg):
    """Compile every @njit function the children call, with the children's argument types."""
    with Rings(cfg) as rings:
        a, b = rings.create("warm-a", 64), rings.create("warm-b", 64)
        sa, sb = slot_words(a), slot_words(b)
        produce_batched(a.address, sa, 48, 16)
        if consume_batched(a.address, sa, 48, 16):
            raise BenchFailure("warm-up: corrupt records in a single-process round")
        pingpong_client(a.address, sa, b.address, sb, np.zeros(0, dtype=np.int64))
        pingpong_server(a.address, sa, b.address, sb, 0)
        handoff_client(a.address, b.address, np.zeros(0, dtype=np.int64))
        handoff_server(a.address, b.address, 0)
        rec = np.zeros((PY_BATCH, WORDS), dtype=np.int64)
        a.push(rec)
        a.pop(rec)
        Ring.attach(cfg.instance, "warm-a", role="producer").close()  # attach and close use compiled helpers too
        tsc_per_ns()
        del sa, sb  # drop the slot views before the rings unmap


def nrt_calls_in_hot_loops():
    """Names of hot loops whose compiled body references numba's runtime (NRT refcounting or
    allocation). numba cannot show the assembly of cached code, so each loop is compiled
    again here, uncached, with the signature the benchmark used."""
    found = []
    for fn in HOT_LOOPS:
        for sig in fn.signatures:
            fresh = njit(nogil=True)(fn.py_func)
            fresh.compile(sig)
            lines = fresh.inspect_asm(sig).splitlines()
            # The function itself; the CPython wrapper after it unboxes arrays through NRT.
            start = next(i for i, line in enumerate(lines) if line.startswith("_ZN") and line.endswith(":"))
            end = next(i for i in range(start, len(lines)) if lines[i].startswith(".Lfunc_end"))
            if any("NRT_" in line for line in lines[start:end]):
                found.append(fn.__name__)
    return found


# --- report --------------------------------------------------------------------------------
class Report(BaseReport):
    def __init__(self):
        super().__init__()
        self.sweep_rows: list[tuple] = []
        self.batched_runs: list[BatchedRun] = []
        self.samples: dict[str, int] = {}  # latency samples kept, per system
        self.handoff_ns: dict[str, float | None] = {}  # bare cache-line hand-off at start/end

    def latency(self, system, lat):
        if lat is not None:
            for p in ("p50", "p99", "p999"):
                self.figures[f"{system}.latency_{p}_us"] = lat[p]
            self.samples[system] = lat["samples"]


def run(cfg: Config, rep: Report) -> None:
    f = rep.figures
    rep.handoff_ns["start"] = rep.attempt("cache-line hand-off (placement probe)", measure_handoff_ns, cfg)
    for cap, batch in cfg.sweep:
        runs = [rep.attempt(f"batched sweep: capacity {cap}, batch {batch}", measure_batched, cfg, cap, batch, cfg.batched_n)
                for _ in range(cfg.sweep_reps)]
        rates = [r.rate for r in runs if r is not None]
        if rates:
            bg = max(r.background_cores for r in runs if r is not None)
            rep.sweep_rows.append((cap, batch, statistics.median(rates), min(rates), max(rates), bg))

    runs = [rep.attempt(f"ganntec.batched run {i + 1}/{cfg.reps}", measure_batched, cfg, cfg.capacity, cfg.batch, cfg.batched_n)
            for i in range(cfg.reps)]
    rep.batched_runs = [r for r in runs if r is not None]
    if rep.batched_runs:
        rates = [r.rate for r in rep.batched_runs]
        f["ganntec.batched.throughput_per_s"] = statistics.median(rates)
        f["ganntec.batched.throughput_min_per_s"] = min(rates)
        f["ganntec.batched.throughput_max_per_s"] = max(rates)
    size = rep.attempt("ring memory", ring_file_bytes, cfg, cfg.capacity)
    if size is not None:
        f["ganntec.ring_bytes"] = size

    for system, batch, n in (("ganntec.python_batch", PY_BATCH, cfg.python_batch_n),
                             ("ganntec.python_single", 1, cfg.python_single_n)):
        rate = rep.attempt(system, measure_python_throughput, cfg, batch, n)
        if rate is not None:
            f[f"{system}.throughput_per_s"] = rate
    ns = rep.attempt("ganntec.python_push_pop", measure_push_pop, cfg)
    if ns is not None:
        f["ganntec.python_push_pop_ns"] = ns

    rep.latency("ganntec", rep.attempt("ganntec latency (spin in @njit)", measure_ring_latency, cfg, True))
    rep.latency("ganntec.python", rep.attempt("ganntec.python latency", measure_ring_latency, cfg, False))

    for peer in PEERS:
        if peer.module and importlib.util.find_spec(peer.module) is None:
            rep.skipped[peer.name] = f"{peer.module} is not installed (pip install -e '.[bench]')"
            continue
        got = rep.attempt(peer.name, measure_peer, cfg, peer)
        if got is not None:
            f[f"{peer.name}.throughput_per_s"] = got[0]
            rep.latency(peer.name, got[1])
    rep.handoff_ns["end"] = rep.attempt("cache-line hand-off (placement probe)", measure_handoff_ns, cfg)


def ratios(figures):
    """ganntec against each peer; every key reads as the division it is."""
    out = {}
    pairs = [("ganntec.batched.throughput_per_s", "{p}.throughput_per_s", False),
             ("ganntec.python_single.throughput_per_s", "{p}.throughput_per_s", False),
             ("ganntec.latency_p50_us", "{p}.latency_p50_us", True),
             ("ganntec.python.latency_p50_us", "{p}.latency_p50_us", True)]
    for peer in PEERS:
        for ours, theirs, lower_is_better in pairs:
            theirs = theirs.format(p=peer.name)
            if ours in figures and theirs in figures:
                num, den = (theirs, ours) if lower_is_better else (ours, theirs)
                out[f"{num}/{den}"] = figures[num] / figures[den]
    return out


def targets(cfg, figures, nrt_loops):
    """(met: True / False / None = not measured, description, measured) per target of the issue."""
    f = figures.get
    batched, zmq, lat, push_pop, size = (f(k) for k in ("ganntec.batched.throughput_per_s", "pyzmq.throughput_per_s",
                                                         "ganntec.latency_p50_us", "ganntec.python_push_pop_ns",
                                                         "ganntec.ring_bytes"))
    expected = SLOTS_OFFSET + cfg.capacity * SLOT_BYTES
    times_zmq = None if batched is None or zmq is None else batched / zmq

    def row(value, ok, what, shown):
        return (None if value is None else ok(value)), what, ("not measured" if value is None else shown(value))

    return [
        row(batched, lambda v: v >= 100e6, "batched throughput >= 100 M records/s (median)", lambda v: f"{v / 1e6:.1f} M/s"),
        row(times_zmq, lambda v: v >= 100, "batched throughput >= 100x pyzmq", lambda v: f"{v:.0f}x"),
        row(lat, lambda v: v <= 0.25, "one-way latency p50, spin in @njit <= 0.25 us", lambda v: f"{v:.3f} us"),
        row(push_pop, lambda v: v <= 1500, "one record pushed + popped from Python <= 1.5 us", lambda v: f"{v / 1000:.2f} us"),
        row(size, lambda v: v == expected == ring_bytes(cfg.capacity, SLOT_BYTES),
            f"ring memory == SLOTS_OFFSET + capacity x 64 = {SLOTS_OFFSET} + {cfg.capacity} x 64 = {expected} bytes",
            lambda v: f"{v} bytes (/dev/shm file)"),
        row(nrt_loops, lambda v: not v, "nothing allocated per record: no NRT calls in the compiled hot loops",
            lambda v: "NRT in " + ", ".join(v) if v else "none"),
    ]


TARGET_MARK = {True: "met", False: "MISSED", None: "not measured"}


def _rate(x):
    return f"{x / 1e6:9.2f} M" if x >= 1e6 else f"{x / 1e3:9.1f} k"


def print_report(cfg, rep, host, nrt_loops, quick):
    f = rep.figures
    print(f"\nring benchmark{' (--quick)' if quick else ''}: {SLOT_BYTES}-byte records; producer/client pinned to "
          f"CPU{PRODUCER_CPU}, consumer/server to CPU{CONSUMER_CPU}")
    print(f"host: {host['cpus']} CPUs ({host['cpu_model']}), Python {host['python']}, numba {host['numba']}, "
          f"TSC {host['tsc_per_ns']:.3f} ticks/ns; during the run: background load {host['background_load_cores']:.2f} "
          f"cores, hypervisor steal {host['steal_cores']:.2f} cores")
    start, end = (host[f"cacheline_handoff_{k}_ns"] for k in ("start", "end"))
    print("placement: bare cache-line hand-off CPU0 -> CPU1, one-way p50: "
          + " -> ".join("failed" if v is None else f"{v:.0f} ns" for v in (start, end)) + " (start -> end of run)")

    if rep.sweep_rows:
        print(f"\nbatched sweep (whole loops in @njit; {cfg.sweep_reps} runs of {cfg.batched_n:,} records each)")
        print(f"{'capacity':>9} {'batch':>6} {'ring bytes':>11} {'median/s':>12} {'min/s':>12} {'max/s':>12} "
              f"{'max bg load':>12}")
        for cap, batch, med, lo, hi, bg in rep.sweep_rows:
            mark = "  <- default" if (cap, batch) == (cfg.capacity, cfg.batch) else ""
            print(f"{cap:>9} {batch:>6} {ring_bytes(cap, SLOT_BYTES):>11,} {_rate(med):>12} {_rate(lo):>12} "
                  f"{_rate(hi):>12} {bg:>12.2f}{mark}")

    zmq = f.get("pyzmq.throughput_per_s")
    print(f"\nthroughput ({SLOT_BYTES}-byte messages, producer start -> consumer has all)")
    print(f"{'system':<24} {'messages/s':>13} {'ns/msg':>9} {'x pyzmq':>8}  how")
    rows = [("ganntec.batched", f"whole loops in @njit, capacity {cfg.capacity}, batch <= {cfg.batch}; "
                                f"median of {cfg.reps} runs of {cfg.batched_n:,}"),
            ("ganntec.python_batch", f"Ring.push / Ring.pop, {PY_BATCH} records per Python call, {cfg.python_batch_n:,}"),
            ("ganntec.python_single", f"Ring.push / Ring.pop, 1 record per Python call, {cfg.python_single_n:,}"),
            ("multiprocessing.queue", f"put / get, {cfg.peer_n:,}"),
            ("multiprocessing.pipe", f"send_bytes / recv_bytes, {cfg.peer_n:,}"),
            ("faster_fifo", f"put / get_many (<= 4096), {cfg.peer_n:,}"),
            ("pyzmq", f"PUSH / PULL over ipc://, send / recv, {cfg.peer_n:,}")]
    for system, how in rows:
        rate = f.get(f"{system}.throughput_per_s")
        if rate is None:
            print(f"{system:<24} {'skipped' if system in rep.skipped else 'FAILED':>13}")
            continue
        times = f"{rate / zmq:8.1f}" if zmq else f"{'-':>8}"
        print(f"{system:<24} {_rate(rate):>13} {1e9 / rate:9.1f} {times}  {how}")
    if "ganntec.python_push_pop_ns" in f:
        print(f"ganntec.python_push_pop: {f['ganntec.python_push_pop_ns']:.0f} ns for one Ring.push + one Ring.pop "
              f"of 1 record in one process (median of 5 x {cfg.push_pop_n // 5:,})")
    if rep.batched_runs:
        print(f"\nganntec.batched runs {'msgs/s':>12} {'records/release':>16} {'full claims':>12} {'empty peeks':>12} "
              f"{'bg load':>8}")
        for i, r in enumerate(rep.batched_runs, 1):
            print(f"{i:>20} {_rate(r.rate):>12} {r.records_per_release:>16.0f} {r.full_claims:>12} {r.empty_peeks:>12} "
                  f"{r.background_cores:>8.2f}")

    print("\none-way latency (ping-pong, round trip / 2, first 10% dropped), us")
    print(f"{'system':<24} {'p50':>9} {'p99':>9} {'p99.9':>9} {'samples':>9}  wait")
    waits = [("ganntec", "spin, both loops inside @njit, rdtsc stamps"),
             ("ganntec.python", "spin in Python: Ring.push / Ring.pop"),
             ("multiprocessing.queue", "block: get()"),
             ("multiprocessing.pipe", "block: recv_bytes()"),
             ("faster_fifo", "block: get_many()"),
             ("pyzmq", "block: recv()")]
    for system, wait in waits:
        if f"{system}.latency_p50_us" not in f:
            print(f"{system:<24} {'skipped' if system in rep.skipped else 'FAILED':>9}")
            continue
        p50, p99, p999 = (f[f"{system}.latency_{p}_us"] for p in ("p50", "p99", "p999"))
        print(f"{system:<24} {p50:9.3f} {p99:9.3f} {p999:9.3f} {rep.samples[system]:>9}  {wait}")

    print("\ntargets")
    for met, what, measured in targets(cfg, f, nrt_loops):
        print(f"  [{TARGET_MARK[met]}] {what}: {measured}")
    for failure in rep.failures:
        print(f"  [FAILED] {failure['what']}: {failure['error']}")
    for name, why in rep.skipped.items():
        print(f"  [skipped] {name}: {why}")


def leftovers(instance):
    """/dev/shm entries (segments and semaphores) still named after this run's instance."""
    prefix = f"ganntec.{instance}."
    return sorted(p.name for p in SHM_DIR.iterdir() if p.name.startswith(prefix) or p.name.startswith("sem." + prefix))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="short run (well under a minute)")
    ap.add_argument("--capacity", type=int, default=8192, help="ring slots for ganntec.batched (default 8192)")
    ap.add_argument("--batch", type=int, default=256, help="records per claim/peek for ganntec.batched (default 256)")
    ap.add_argument("--reps", type=int, help="ganntec.batched runs (default 5; --quick 3)")
    ap.add_argument("--timeout", type=float, help="seconds before a measurement's children are killed (default 120; --quick 30)")
    ap.add_argument("--no-lock-memory", action="store_true", help="do not mlock the rings (for a low RLIMIT_MEMLOCK)")
    args = ap.parse_args(argv)
    if len(os.sched_getaffinity(0) & {PRODUCER_CPU, CONSUMER_CPU}) < 2:
        ap.error(f"needs CPUs {PRODUCER_CPU} and {CONSUMER_CPU} in this process's affinity mask")

    sz = sizes(args.quick)
    if args.reps is not None:
        sz["reps"] = args.reps
    cfg = Config(instance=f"bench{os.getpid()}", lock_memory=not args.no_lock_memory,
                 timeout_s=args.timeout or (30.0 if args.quick else 120.0),
                 capacity=args.capacity, batch=args.batch, **sz)
    rep = Report()
    meter = CpuMeter()
    print("compiling in the parent ...", file=sys.stderr, flush=True)
    compile_all(cfg)
    run(cfg, rep)
    print("checking the compiled hot loops for NRT calls ...", file=sys.stderr, flush=True)
    nrt_loops = nrt_calls_in_hot_loops()
    left = leftovers(cfg.instance)  # every measurement closed and unlinked its rings
    if left:
        rep.failures.append({"what": "cleanup", "error": "left in /dev/shm: " + ", ".join(left)})
    background, steal = meter.cores()
    host = {"cpus": os.cpu_count(), "python": platform.python_version(), "cpu_model": cpu_model(),
            "numba": numba.__version__, "tsc_per_ns": tsc_per_ns(),
            "background_load_cores": background, "steal_cores": steal,
            "cacheline_handoff_start_ns": rep.handoff_ns["start"], "cacheline_handoff_end_ns": rep.handoff_ns["end"]}
    print_report(cfg, rep, host, nrt_loops, args.quick)
    result = {"bench": "ring", "host": host, "figures": rep.figures, "ratios": ratios(rep.figures)}
    if rep.failures:
        result["failures"] = rep.failures
    if rep.skipped:
        result["skipped"] = rep.skipped
    print(json.dumps(result))
    return 1 if rep.failures else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # children killed and rings unlinked on the way out
        print("interrupted", file=sys.stderr)
        sys.exit(130)
