"""Seqlock tables: the drawn layout, round trips, attach outcomes, the writer role, lifecycle."""

from __future__ import annotations

import multiprocessing as mp
import os
import re
import stat

import numpy as np
import pytest
from numba import njit

from ganntec.shm import table as tbl
from ganntec.shm.segment import OFF_LAYOUT_VERSION, OFF_MAGIC, Outcome, SegmentError, list_segments, segment_name
from ganntec.shm.table import (
    BALANCE_ROW_DTYPE,
    DEPTH_LEVELS,
    DEPTH_ROW_DTYPE,
    KINDS,
    POSITION_ROW_DTYPE,
    ROWS_OFFSET,
    SEQ_BYTES,
    TABLE_HEADER_DTYPE,
    Table,
    read_row,
    row_begin,
    row_bytes_for,
    row_end,
    row_seq,
)

FORK = mp.get_context("fork")
_ROW = re.compile(r"^\s+(\d+)\s+(\d+|-)\s+(\S+(?: \S+)?)(?:\s{2,}(.*))?$")


def drawn(marker: str) -> list[tuple[int, int | None, str, str]]:
    """(offset, size or None for '-', field, comment) of the table drawn after `marker`."""
    lines = tbl.__doc__.splitlines()
    start = next(k for k, line in enumerate(lines) if marker in line)
    head = next(k for k in range(start, len(lines)) if lines[k].split()[:3] == ["offset", "size", "field"])
    assert set(lines[head + 1].replace(" ", "")) == {"-"}
    out = []
    for line in lines[head + 2:]:
        if not line.strip():
            break
        m = _ROW.match(line)
        if m:  # lines that do not match continue the previous comment
            out.append((int(m[1]), None if m[2] == "-" else int(m[2]), m[3], m[4] or ""))
    return out


@pytest.mark.parametrize(
    "marker,dtype",
    [("(TABLE_HEADER_DTYPE)", TABLE_HEADER_DTYPE), ("(DEPTH_ROW_DTYPE,", DEPTH_ROW_DTYPE),
     ("(BALANCE_ROW_DTYPE,", BALANCE_ROW_DTYPE), ("(POSITION_ROW_DTYPE,", POSITION_ROW_DTYPE)],
)
def test_drawn_layout_matches_dtype(marker, dtype):
    entries = drawn(marker)
    *sized, (end_offset, end_size, end_name, end_comment) = entries
    assert end_size is None and end_offset == dtype.itemsize, "the drawing ends where the dtype ends"
    at = 0
    for offset, size, field, _ in sized:
        assert offset == at, f"{field} drawn at {offset}, previous entry ends at {at}"
        at = offset + size
        if field in ("reserved", "common header"):
            continue
        sub, real_offset = dtype.fields[field][:2]
        assert (real_offset, sub.itemsize) == (offset, size), field
    assert at == end_offset
    assert {f for _, _, f, _ in sized} - {"reserved", "common header"} == set(dtype.names)
    if dtype is not TABLE_HEADER_DTYPE:
        assert f"row_bytes {row_bytes_for(dtype.itemsize)}" in end_comment


def test_drawn_row_frame_and_constants():
    assert [e[:3] for e in drawn("Row i (")] == [(0, SEQ_BYTES, "seq"), (SEQ_BYTES, None, "payload")]
    assert ROWS_OFFSET % 64 == 0 and tbl.OFF_WRITER_PID % 64 == 0, "constants and writer fields on their own lines"
    assert DEPTH_ROW_DTYPE.fields["bid_price_tick"][0].shape == (DEPTH_LEVELS,)


@pytest.mark.parametrize("dtype", list(KINDS.values()))
def test_row_dtypes_are_aligned_integers(dtype):
    for name in dtype.names:
        sub, off = dtype.fields[name][:2]
        assert sub.base.kind in "iu" and off % sub.base.alignment == 0, name
    assert row_bytes_for(dtype.itemsize) % 64 == 0
    assert dtype.itemsize % 8 == 0


def _depth_row(symbol, v):
    r = np.zeros((), DEPTH_ROW_DTYPE)
    r["symbol_id"], r["n_bids"], r["n_asks"], r["update_id"], r["last_seq"] = symbol, 3, 2, v, v * 10
    r["bid_price_tick"][:3] = [100 - v, 99 - v, 98 - v]
    r["ask_qty_lot"][:2] = [v, 2 * v]
    return r


def test_create_write_read_attach_round_trip(instance):
    with Table.create(instance, "depth.0", DEPTH_ROW_DTYPE, 4, writer=True) as t:
        assert (t.kind, t.rows, t.row_bytes, t.payload_bytes) == ("depth", 4, 704, 680)
        assert (t.read_all() == np.zeros(4, DEPTH_ROW_DTYPE)).all(), "rows start zeroed"
        t.write(1, _depth_row(7, 5))
        got = t.read(1)
        assert got == _depth_row(7, 5)[()] and got.dtype == DEPTH_ROW_DTYPE
        got["update_id"] = 99  # a copy, not a view of the table
        assert t.read(1)["update_id"] == 5
        assert list(t.seqs()) == [0, 2, 0, 0] and t.writes == 1
        t.heartbeat(123)
        hdr = t.segment.view(TABLE_HEADER_DTYPE, 0, 1)[0]
        assert (hdr["writer_pid"], hdr["writer_heartbeat_ns"], hdr["writes"]) == (os.getpid(), 123, 1)

        reader = Table.attach(instance, "depth.0")
        try:
            assert reader.dtype == DEPTH_ROW_DTYPE and reader.kind == "depth" and not reader.writer
            t.write_many([3, 0], np.stack([_depth_row(9, 1), _depth_row(8, 2)]))
            rows = reader.read_all()
            assert list(rows["symbol_id"]) == [8, 7, 0, 9] and list(reader.seqs()) == [2, 2, 0, 2]
            with pytest.raises(PermissionError):
                reader.write(0, _depth_row(1, 1))
        finally:
            reader.close()
        assert list_segments(instance) == [segment_name(instance, "depth.0")], "a reader's close keeps it"
    assert list_segments(instance) == [], "the creator's close unlinks"


def test_tuple_rows_and_wrong_input(instance):
    with Table.create(instance, "bal", BALANCE_ROW_DTYPE, 3, writer=True, lock_memory=False) as t:
        t.write(2, (11, 2, 1_000, 250, 42))
        assert t.read(2).tolist() == (11, 2, 1_000, 250, 42)
        with pytest.raises(IndexError):
            t.write(3, (0, 0, 0, 0, 0))
        with pytest.raises(IndexError):
            t.read(-1)
        with pytest.raises(IndexError):
            t.write_many([0, 3], np.zeros(2, BALANCE_ROW_DTYPE))
        with pytest.raises(ValueError):
            t.write(0, np.zeros((), POSITION_ROW_DTYPE))  # another dtype is never cast silently
        with pytest.raises(ValueError):
            t.write_many([0, 1], np.zeros(3, BALANCE_ROW_DTYPE))
        with pytest.raises(ValueError):
            Table.create(instance, "x", BALANCE_ROW_DTYPE, 1, kind="depth")


def test_mode_0600_and_existing_name(instance):
    with Table.create(instance, "pos", POSITION_ROW_DTYPE, 2):
        path = "/dev/shm" + segment_name(instance, "pos")
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        with pytest.raises(SegmentError) as err:
            Table.create(instance, "pos", POSITION_ROW_DTYPE, 2)
        assert err.value.outcome is Outcome.LIVE_OTHER_INSTANCE


def test_attach_outcomes(instance):
    with pytest.raises(SegmentError) as err:
        Table.attach(instance, "nothing")
    assert err.value.outcome is Outcome.MISSING

    custom = np.dtype([("a", "<i8"), ("b", "<i8")])
    with Table.create(instance, "c", custom, 2, kind="custom"), Table.create(instance, "p", POSITION_ROW_DTYPE, 2) as p:
        with pytest.raises(SegmentError) as err:
            Table.attach(instance, "p", BALANCE_ROW_DTYPE)
        assert err.value.outcome is Outcome.WRONG_KIND
        with pytest.raises(SegmentError) as err:
            Table.attach(instance, "p", kind="depth")
        assert err.value.outcome is Outcome.WRONG_KIND
        with pytest.raises(SegmentError) as err:
            Table.attach(instance, "c", np.dtype([("a", "<i8"), ("b", "<i4")]))  # same kind, other layout
        assert err.value.outcome is Outcome.VERSION_MISMATCH
        with Table.attach(instance, "c", custom) as c, Table.attach(instance, "c") as raw:
            assert c.dtype == custom and raw.dtype == np.dtype("V16")

        # A table written by an older layout of a known kind, and by another table format.
        p.segment.view("<i8", tbl.OFF_ROW_FINGERPRINT, 1)[0] += 1
        with pytest.raises(SegmentError) as err:
            Table.attach(instance, "p")
        assert err.value.outcome is Outcome.VERSION_MISMATCH
        p.segment.view("<i8", tbl.OFF_ROW_FINGERPRINT, 1)[0] -= 1
        p.segment.view("<u4", OFF_LAYOUT_VERSION, 1)[0] += 1
        with pytest.raises(SegmentError) as err:
            Table.attach(instance, "p", POSITION_ROW_DTYPE)
        assert err.value.outcome is Outcome.VERSION_MISMATCH
        p.segment.view("<i8", OFF_MAGIC, 1)[0] = 1
        with pytest.raises(SegmentError) as err:
            Table.attach(instance, "p")
        assert err.value.outcome is Outcome.WRONG_KIND


@njit(cache=True, nogil=True)
def _engine_write(base, view, i, v):
    # What an engine does: mark the row busy, store fields in place, publish.
    row_begin(base, i)
    r = view[i]
    r.symbol_id = i
    r.update_id = v
    for k in range(r.bid_price_tick.shape[0]):
        r.bid_price_tick[k] = v + k
    row_end(base, i)


@njit(cache=True, nogil=True)
def _engine_read(base, i, out):
    got = read_row(base, i, out.ctypes.data, 100)
    return got, out[0].update_id + out[0].bid_price_tick[DEPTH_LEVELS - 1]


def test_compiled_writer_and_reader(instance):
    with Table.create(instance, "depth.1", DEPTH_ROW_DTYPE, 3, writer=True, lock_memory=False) as t:
        view = t.rows_view()
        _engine_write(t.address, view, 2, 40)
        assert row_seq(t.address, 2) == 2
        out = np.zeros(1, DEPTH_ROW_DTYPE)
        assert _engine_read(t.address, 2, out) == (0, 40 + 40 + DEPTH_LEVELS - 1)
        assert t.read(2)["symbol_id"] == 2 and list(t.read(2)["bid_price_tick"][:3]) == [40, 41, 42]
        del view


def test_busy_row_with_live_writer_is_bounded(instance):
    with Table.create(instance, "b", BALANCE_ROW_DTYPE, 2, writer=True, lock_memory=False) as t:
        row_begin(t.address, 1)  # this (live) process is mid-write of row 1
        out = np.zeros(1, BALANCE_ROW_DTYPE)
        assert read_row(t.address, 1, out.ctypes.data, 50) == -1
        t.spins, t.max_rounds = 50, 3
        with pytest.raises(TimeoutError):
            t.read(1)
        with pytest.raises(TimeoutError):
            t.read_all()
        row_end(t.address, 1)
        assert list(t.seqs()) == [0, 2] and t.read_all()["free_minor"].tolist() == [0, 0]


def _join_all(procs):
    for p in procs:
        if p.pid is not None:  # started
            if p.is_alive():
                p.kill()
            p.join()


def _die_mid_write(instance):
    t = Table.attach(instance, "pos", writer=True)
    t.write(0, (1, 2, 3, 4, 5, 6, 7, 8))
    row_begin(t.address, 1)
    os._exit(0)  # dies holding the role, row 1 odd


@pytest.mark.timeout(60)
def test_writer_death_mid_write_is_stale_until_taken_over(instance):
    with Table.create(instance, "pos", POSITION_ROW_DTYPE, 2, lock_memory=False) as t:
        child = FORK.Process(target=_die_mid_write, args=(instance,))
        try:
            child.start()
            child.join(30)
            assert child.exitcode == 0
        finally:
            _join_all([child])
        t.spins = 100
        assert t.read(0).tolist() == (1, 2, 3, 4, 5, 6, 7, 8)
        assert list(t.seqs()) == [2, 1] and not t.writer_alive()
        with pytest.raises(SegmentError) as err:
            t.read(1)
        assert err.value.outcome is Outcome.STALE and str(child.pid) in str(err.value)
        with pytest.raises(SegmentError):
            t.read_all()

        t.take_writer()  # from the dead writer
        assert t.writer_identity()[0] == os.getpid()
        t.write(1, (9, 9, 9, 9, 9, 9, 9, 9))
        assert list(t.seqs()) == [2, 2], "even again, and past every value readers saw"
        assert t.read_all()["account_id"].tolist() == [1, 9]


def _hold_writer(instance, conn):
    t = Table.attach(instance, "w", writer=True)
    conn.send("held")
    conn.recv()
    t.close()
    conn.send("released")


@pytest.mark.timeout(60)
def test_one_live_writer(instance):
    with Table.create(instance, "w", BALANCE_ROW_DTYPE, 1, lock_memory=False) as t:
        ours, theirs = FORK.Pipe()
        child = FORK.Process(target=_hold_writer, args=(instance, theirs))
        try:
            child.start()
            assert ours.poll(30) and ours.recv() == "held"
            assert t.writer_alive()
            with pytest.raises(SegmentError) as err:
                t.take_writer()
            assert err.value.outcome is Outcome.LIVE_OTHER_INSTANCE
            ours.send("go")
            assert ours.poll(30) and ours.recv() == "released"
            assert t.writer_identity() == (0, 0), "close gives the role back"
            t.take_writer()
            t.write(0, (1, 1, 1, 1, 1))
        finally:
            _join_all([child])
