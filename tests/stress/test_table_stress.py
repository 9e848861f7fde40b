"""Seqlock tables under contention: a writer process rewrites rows from @njit code in a tight
loop while a reader process reads them, compiled and through the Python API. No read may return
a torn row. A control phase copies rows *without* the seqlock and must see torn rows: it proves
the writer really overlapped the reads and that the check can see a tear.

Every payload word of row i at version v is v * (2k + 1) + i (k = word index), so one word gives
v and every other word must agree; a row mixing two versions, or another row, fails the check.
"""

from __future__ import annotations

import ctypes
import multiprocessing as mp
import traceback

import numpy as np
import pytest
from numba import njit

from ganntec.shm.atomics import copy_bytes, load_relaxed, py_store_release
from ganntec.shm.table import KINDS, ROWS_OFFSET, SEQ_BYTES, Table, payload_address, read_row, row_begin, row_end

FORK = mp.get_context("fork")
NAME = "stress"
ROWS = 3
COMPILED_READS = 2_000_000
PY_READS = 20_000
READ_ALLS = 5_000
MIN_ADVANCES = 1_000  # compiled reads go on (up to 4x) until the writer was seen this often
RAW_READS_MAX = 200_000_000 # the control phase stops earlier, once it has seen RAW_TEARS_WANTED
RAW_TEARS_WANTED = 100


def _words(t: Table) -> np.ndarray:
    """Row payloads in place as int64 words (rows x words, strided by row_bytes)."""
    return np.ndarray((t.rows, t.payload_bytes // 8), "<i8", buffer=t.segment.bytes,
                      offset=ROWS_OFFSET + SEQ_BYTES, strides=(t.row_bytes, 8))


@njit(cache=True, nogil=True)
def _write_batch(base, words, v, n):
    rows, nw = words.shape
    for _ in range(n):
        v += 1
        i = v % rows
        row_begin(base, i)
        for k in range(nw):
            words[i, k] = v * (2 * k + 1) + i
        row_end(base, i)
    return v


@njit(cache=True, nogil=True)
def _write_until(base, words, v, stop_address):
    while load_relaxed(stop_address) == 0:
        v = _write_batch(base, words, v, 1024)
    return v


@njit(cache=True, nogil=True)
def _torn(w, i):
    v = w[0] - i
    for k in range(w.shape[0]):
        if w[k] != v * (2 * k + 1) + i:
            return True
    return False


@njit(cache=True, nogil=True)
def _count_torn(words, index):
    torn = 0
    for r in range(words.shape[0]):
        torn += _torn(words[r], index[r])
    return torn


@njit(cache=True, nogil=True)
def _read_loop(base, rows, buf, n, spins, min_advances, max_reads):
    """At least `n` seqlock reads, more (up to `max_reads`) until the rows were seen to advance
    `min_advances` times. Returns (reads, retries, torn, busy, advances, backwards)."""
    dst = buf.ctypes.data
    last = np.zeros(rows, np.int64)
    retries = torn = busy = advances = backwards = 0
    r = 0
    while r < n or (advances < min_advances and r < max_reads):
        i = r % rows
        r += 1
        got = read_row(base, i, dst, spins)
        if got < 0:
            busy += 1
            continue
        retries += got
        if _torn(buf, i):
            torn += 1
            continue
        v = buf[0] - i
        if last[i] != 0 and v > last[i]:
            advances += 1
        elif v < last[i]:
            backwards += 1
        last[i] = v
    return r, retries, torn, busy, advances, backwards


@njit(cache=True, nogil=True)
def _raw_loop(base, rows, buf, n, want):
    """The control: plain copies, no seqlock. Returns (reads, torn)."""
    dst = buf.ctypes.data
    torn = 0
    for r in range(n):
        i = r % rows
        copy_bytes(dst, payload_address(base, i), buf.shape[0] * 8)
        torn += _torn(buf, i)
        if torn >= want:
            return r + 1, torn
    return n, torn


def _writer(instance, v0, stop_address, ready, results):
    try:
        t = Table.attach(instance, NAME, writer=True)
        words = _words(t)
        v = _write_batch(t.address, words, v0, 4096)
        ready.set()
        v = _write_until(t.address, words, v, stop_address)
        results.put(("writer", v - v0))
        del words
        t.close()
    except BaseException:
        results.put(("error", "writer: " + traceback.format_exc()))


def _reader(instance, stop_address, results):
    try:
        t = Table.attach(instance, NAME)
        nw = t.payload_bytes // 8
        buf = np.zeros(nw, np.int64)
        writes_before = t.writes
        reads, retries, torn, busy, advances, backwards = _read_loop(
            t.address, t.rows, buf, COMPILED_READS, 1 << 14, MIN_ADVANCES, 4 * COMPILED_READS)

        index = np.arange(PY_READS) % t.rows
        rows = np.zeros(PY_READS, t.dtype)
        for k in range(PY_READS):
            rows[k] = t.read(index[k])
        py_torn = _count_torn(rows.view(np.int64).reshape(PY_READS, nw), index)
        every = np.arange(t.rows)
        for _ in range(READ_ALLS):
            py_torn += _count_torn(t.read_all().view(np.int64).reshape(t.rows, nw), every)

        raw_reads, raw_torn = _raw_loop(t.address, t.rows, buf, RAW_READS_MAX, RAW_TEARS_WANTED)
        writes_after = t.writes
        results.put(("reader", dict(
            compiled_reads=reads, retries=retries, torn=torn, busy=busy, advances=advances,
            backwards=backwards, py_reads=PY_READS + READ_ALLS * t.rows, py_torn=py_torn,
            raw_reads=raw_reads, raw_torn=raw_torn, writes_during_reads=writes_after - writes_before,
        )))
        t.close()
    except BaseException:
        results.put(("error", "reader: " + traceback.format_exc()))
    finally:
        py_store_release(stop_address, 1)


@pytest.mark.timeout(180)
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_readers_never_see_torn_rows(instance, kind):
    stop = FORK.RawArray(ctypes.c_int64, 1)  # shared with forked children at the same address
    stop_address = ctypes.addressof(stop)
    ready, results = FORK.Event(), FORK.Queue()
    with Table.create(instance, NAME, KINDS[kind], ROWS, lock_memory=False) as t:
        # Compile every kernel here, before forking, and give every row a first version.
        words = _words(t)
        v0 = _write_batch(t.address, words, 0, 3 * ROWS)
        buf = np.zeros(t.payload_bytes // 8, np.int64)
        assert _read_loop(t.address, ROWS, buf, 10, 10, 0, 10)[:4] == (10, 0, 0, 0)
        assert _raw_loop(t.address, ROWS, buf, 10, 1) == (10, 0)
        assert _count_torn(words.copy(), np.arange(ROWS)) == 0
        stop[0] = 1  # compiles _write_until, which then returns at once
        assert _write_until(t.address, words, v0, stop_address) == v0
        stop[0] = 0
        del words

        writer = FORK.Process(target=_writer, args=(instance, v0, stop_address, ready, results))
        reader = FORK.Process(target=_reader, args=(instance, stop_address, results))
        procs = [writer, reader]
        try:
            writer.start()
            assert ready.wait(60), "the writer did not start"
            reader.start()
            got = {}
            while len(got) < 2:
                who, value = results.get(timeout=150)
                assert who != "error", value
                got[who] = value
            for p in procs:
                p.join(30)
                assert p.exitcode == 0
        finally:
            stop[0] = 1
            for p in procs:
                if p.pid is not None:  # started
                    if p.is_alive():
                        p.kill()
                    p.join()
        r = got["reader"]
        print(f"\n{kind}: writer wrote {got['writer']} rows; reader {r}")
        assert r["torn"] == 0 and r["py_torn"] == 0, r
        assert r["backwards"] == 0, r
        assert r["advances"] > 0 and r["writes_during_reads"] > 0, r
        assert r["busy"] < r["compiled_reads"] // 100, r
        assert r["raw_torn"] > 0, f"the control saw no tear: reads did not overlap writes {r}"

