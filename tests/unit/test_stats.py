"""Stats tables (shm/stats.py): the drawing against the dtype, the compiled writers' counting
(which records are measured, buckets, sum, max, gauges), quantiles, and the read-only view
`ganntec inspect` takes of them."""

from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from numba import njit

from ganntec.engines.mem import bit_length
from ganntec.inspect.segments import format_processes, sample
from ganntec.shm import records as R
from ganntec.shm import stats as S
from ganntec.shm.table import row_bytes_for

ROW = re.compile(r"^\s+(\d+)\s+(\d+|-)\s+(\w+)\s", re.M)


def test_drawing_matches_the_row_dtype():
    drawn = {m.group(3): (int(m.group(1)), m.group(2)) for m in ROW.finditer(S.__doc__)}
    for name, (dt, off) in S.STATS_ROW_DTYPE.fields.items():
        assert drawn[name] == (off, str(dt.itemsize)), name
    assert drawn["end"][0] == S.STATS_ROW_DTYPE.itemsize
    assert f"row_bytes {row_bytes_for(S.STATS_ROW_DTYPE.itemsize)}" in S.__doc__
    assert (S.OFF_COUNT, S.OFF_SUM, S.OFF_MAX, S.OFF_GAUGE_A, S.OFF_GAUGE_B, S.OFF_BUCKETS) == tuple(
        S.STATS_ROW_DTYPE.fields[n][1] for n in ("count", "sum_ns", "max_ns", "gauge_a", "gauge_b", "bucket_ns"))
    assert (S.REC_SOURCE, S.REC_TS_NS, S.REC_BYTES) == (R.RECORD_DTYPE.fields["source"][1],
                                                        R.RECORD_DTYPE.fields["ts_ns"][1], R.RECORD_BYTES)


def _records(pairs) -> np.ndarray:
    """(source, ts_ns) records."""
    out = R.concat([R.empty(R.RecordType.NEW_ORDER) for _ in pairs])
    for i, (source, ts) in enumerate(pairs):
        out[i]["source"], out[i]["ts_ns"] = source, ts
    return out


@pytest.fixture
def writer(instance):
    table = S.create(instance, "order")
    w = S.StatsWriter(instance, "order")
    yield w
    w.close()
    table.close(unlink=True)


def test_only_edge_commands_are_measured_into_their_buckets(writer):
    now = 10_000_000
    # edges 1 and 0x7fff count; admin (0) and matching's results (0x8000 | k) do not
    recs = _records([(1, now - 1), (2, now - 1000), (0x7FFF, now - 1024), (0, now - 5), (0x8000, now - 7),
                     (1, now + 50)])  # a stamp after now (another clock's step) counts as 0
    raw = np.ascontiguousarray(recs).view(np.uint8)
    counted = S.observe_records(writer.base, writer.row("order"), raw.ctypes.data, len(recs), now)
    assert counted == 4
    row = writer.table.read(writer.row("order"))
    assert (int(row["count"]), int(row["sum_ns"]), int(row["max_ns"])) == (4, 1 + 1000 + 1024, 1024)
    b = row["bucket_ns"]
    # bucket k: bit_length(v) == k: 0 -> 0, 1 -> 1, 1000 -> 10, 1024 -> 11
    assert {k: int(c) for k, c in enumerate(b) if c} == {0: 1, 1: 1, 10: 1, 11: 1}
    # nothing measurable: the row is not even rewritten
    writes = writer.table.writes
    assert S.observe_records(writer.base, 0, raw.ctypes.data + 3 * R.RECORD_BYTES, 2, now) == 0
    assert writer.table.writes == writes


def test_huge_values_share_the_last_bucket_and_gauges_are_set(writer):
    j = writer.row("journal")
    S.observe(writer.base, j, 1 << 50, 77, 3)
    S.observe(writer.base, j, -1, 78, 4)  # gauges only
    row = writer.table.read(j)
    assert int(row["bucket_ns"][S.BUCKETS - 1]) == 1 and int(row["count"]) == 1
    assert (int(row["gauge_a"]), int(row["gauge_b"])) == (78, 4)


def test_quantiles_are_bucket_upper_bounds_capped_by_the_max():
    b = np.zeros(S.BUCKETS, np.int64)
    assert S.quantile_ns(b, 0.5) == 0
    b[10] = 99  # 512..1023 ns
    b[20] = 1   # ~0.5..1 ms
    assert S.quantile_ns(b, 0.5) == 1023 and S.quantile_ns(b, 0.99) == 1023 and S.quantile_ns(b, 1.0) == (1 << 20) - 1
    row = np.zeros(1, S.STATS_ROW_DTYPE)[0]
    row["bucket_ns"], row["count"], row["sum_ns"], row["max_ns"] = b, 100, 123_456, 700_000
    s = S.summary(row)
    assert (s["p50_ns"], s["p99_ns"], s["max_ns"], s["mean_ns"]) == (1023, 1023, 700_000, 1234)
    assert s["cumulative"][-1] == 100


def test_a_restarted_writer_counts_from_zero_and_inspect_reads_the_rows(writer, instance):
    writer.describe("spin-yield", 3)
    recs = np.ascontiguousarray(_records([(1, 5)] * 3)).view(np.uint8)
    S.observe_records(writer.base, writer.row("order"), recs.ctypes.data, 3, 100)
    rows = sample(instance, name_filter=".stats.")
    (t,) = [r["table"] for r in rows]
    assert t["stages"]["order"]["count"] == 3 and t["writer"]["alive"]
    assert t["stages"]["process"]["gauge_a"] == S.WAITS.index("spin-yield") and t["stages"]["process"]["gauge_b"] == 3
    assert re.search(r"^order\s+\d+\s+alive.*spin-yield\s+3\s+order\s+3\s", format_processes(rows), re.M)
    writer.close()
    again = S.StatsWriter(instance, "order")  # the worker restarted
    try:
        assert int(again.table.read(again.row("order"))["count"]) == 0
        assert list(again.rows) == ["process", "order", "journal"]
    finally:
        again.close()


def test_the_live_view_draws_the_same_rows(writer, instance):
    """inspect --watch on a terminal (inspect/live.py): the process with its wait, CPU and stage."""
    from rich.console import Console

    from ganntec.inspect.live import render

    writer.describe("busy-spin", 1)
    recs = np.ascontiguousarray(_records([(1, 5)] * 2)).view(np.uint8)
    S.observe_records(writer.base, writer.row("order"), recs.ctypes.data, 2, 1000)
    console = Console(record=True, width=200, file=open("/dev/null", "w"))
    console.print(render(sample(instance), 0))
    text = console.export_text()
    assert re.search(r"order\s.*\balive\b.*busy-spin\s.*\b1\b.*order\s.*\b2\b", text), text
    assert "stats.order" in text and "no ganntec segments" not in text
    console.file.close()


@njit(cache=True)
def _bits(v):
    return bit_length(v)


@given(st.integers(min_value=0, max_value=(1 << 63) - 1))
def test_bit_length_is_pythons(v):
    assert _bits(v) == v.bit_length()
