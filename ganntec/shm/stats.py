"""Per-process statistics tables: latency histograms, the journal's position, the process's
heartbeat, all in shared memory where `ganntec inspect` and `/metrics` read them (live, or
after the process died: post-mortem).

Every process of an instance owns one seqlock table (table.py) named `stats.<process>`:
`stats.supervisor`, `stats.engines` (placement single) or `stats.order`, `stats.risk`,
`stats.matching`, `stats.position` (per-engine), and `stats.edge.<i>`. The supervisor creates
them (it owns every segment's lifetime); each process attaches as the table's one writer, so
the table header's writer_pid and writer_heartbeat_ns are that process's pid and heartbeat.

Row (STATS_ROW_DTYPE, kind "stats"), one per stage the process measures:

    offset  size  field        meaning
    ------  ----  -----------  ---------------------------------------------------------------
         0    16  name         ASCII stage name, NUL padded ("order", "journal", ...)
        16     8  count        values observed
        24     8  sum_ns       their sum, ns
        32     8  max_ns       the largest, ns
        40     8  gauge_a      a level beside the histogram (journal: last sequence journaled;
                               supervisor: the sequence recovery reached)
        48     8  gauge_b      (journal: bytes appended since the process started)
        56     8  reserved     zero
        64   320  bucket_ns    int64 x BUCKETS: bucket k counts values v with bit_length(v) == k,
                               i.e. 2^(k-1) <= v < 2^k ns (bucket 0: v <= 0), the last bucket
                               also everything larger
       384     -  end          row_bytes 448 (with the seq word, 7 cache lines)

Row 0 of every table is `process`: gauge_a how the process waits for work (an index into
WAITS: busy-spin, spin-yield, spin-block for engine workers; event-loop for edges; sleep for the
supervisor), gauge_b the CPU it is pinned to (-1: not pinned); no histogram.

Stages, from the records' one stamp: a client command's `ts_ns` is the edge's receive time
(CLOCK_REALTIME; the order engine keeps it, never moving it backwards), so each process that
handles a client command measures *edge receive -> here*:
    order     the sequencer popped it (the single placement's one worker too)
    risk      risk popped the sequenced record
    matching  matching popped it
    position  position popped risk's output for it
    edge      an edge read its report (the whole round trip but the answer's write)
Successive stages' differences are the hops (order->risk = risk - order). Only records whose
source is an edge (1..MAX_EDGE_SOURCE) are measured: matching's results and admin commands
carry other stamps. Other rows:
    journal   each group commit's duration (write + fdatasync in `fsync` mode), ns; gauge_a the
              last sequence journaled, gauge_b bytes appended
    recovery  each recovery's duration; gauge_a the sequence it reached (supervisor)

Counters are read consistently per row (the seqlock); histograms only grow while a process
lives. A restarted process starts its rows from zero again (Prometheus sees a counter reset).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ganntec.engines.mem import bit_length, ld_i64, ld_u16, st_i64
from ganntec.shm.table import Table, payload_address, row_begin, row_end

BUCKETS = 40  # 2^39 ns = 550 s: larger values share the last bucket
HIST_FIRST_BOUND = 10  # exported histograms start at 2^10 ns (~1 us): finer bounds only add series
MAX_EDGE_SOURCE = 0x7FFF  # sources 1..this are edges; matching shards are 0x8000 | k, admin 0
STATS_ROW_DTYPE = np.dtype(
    {
        "names": ["name", "count", "sum_ns", "max_ns", "gauge_a", "gauge_b", "bucket_ns"],
        "formats": ["S16", "<i8", "<i8", "<i8", "<i8", "<i8", ("<i8", (BUCKETS,))],
        "offsets": [0, 16, 24, 32, 40, 48, 64],
        "itemsize": 384,
    }
)
OFF_COUNT, OFF_SUM, OFF_MAX, OFF_GAUGE_A, OFF_GAUGE_B, OFF_BUCKETS = 16, 24, 32, 40, 48, 64
# Record header fields read here (records.py draws them).
REC_SOURCE, REC_TS_NS, REC_BYTES = 4, 16, 128

PROCESS_ROW = "process"  # every table's row 0: gauge_a its wait (WAITS index), gauge_b its pinned CPU or -1
WAITS = ("none", "busy-spin", "spin-yield", "spin-block", "event-loop", "sleep")
STAGE_ROWS = {
    "supervisor": (PROCESS_ROW, "recovery"),
    "engines": (PROCESS_ROW, "order", "journal"),
    "order": (PROCESS_ROW, "order", "journal"),
    "risk": (PROCESS_ROW, "risk"),
    "matching": (PROCESS_ROW, "matching"),
    "position": (PROCESS_ROW, "position"),
    "edge": (PROCESS_ROW, "edge"),
}
STAGE_ORDER = ("order", "risk", "matching", "position", "edge")  # the path a command takes


def table_name(process: str) -> str:
    return f"stats.{process}"


def rows_of(process: str) -> tuple[str, ...]:
    """The stage rows of `process` ("edge.2" has the rows of "edge")."""
    return STAGE_ROWS[process.split(".", 1)[0]]


# --- compiled writers (addresses only: no array arguments, no NRT calls) -------------------
@njit(cache=True, nogil=True)
def _add(p, v):
    """Count one value into the row payload at p (between row_begin and row_end)."""
    if v < 0:
        v = 0
    k = bit_length(v)
    if k > BUCKETS - 1:
        k = BUCKETS - 1
    st_i64(p + OFF_COUNT, ld_i64(p + OFF_COUNT) + 1)
    st_i64(p + OFF_SUM, ld_i64(p + OFF_SUM) + v)
    if v > ld_i64(p + OFF_MAX):
        st_i64(p + OFF_MAX, v)
    b = p + OFF_BUCKETS + 8 * k
    st_i64(b, ld_i64(b) + 1)


@njit(cache=True, nogil=True)
def observe_records(base, row, records, n, now_ns):
    """Count `now_ns - ts_ns` of every edge command among the n records at `records` into
    row `row` (one seqlock write for the batch). Returns how many were counted."""
    counted = 0
    for i in range(n):
        src = ld_u16(records + i * REC_BYTES + REC_SOURCE)
        if src >= 1 and src <= MAX_EDGE_SOURCE:
            counted += 1
    if counted == 0:
        return 0
    row_begin(base, row)
    p = payload_address(base, row)
    for i in range(n):
        r = records + i * REC_BYTES
        src = ld_u16(r + REC_SOURCE)
        if src >= 1 and src <= MAX_EDGE_SOURCE:
            _add(p, now_ns - ld_i64(r + REC_TS_NS))
    row_end(base, row)
    return counted


@njit(cache=True, nogil=True)
def observe(base, row, value_ns, gauge_a, gauge_b):
    """Count one value (skipped when < 0) and set the row's two gauges."""
    row_begin(base, row)
    p = payload_address(base, row)
    if value_ns >= 0:
        _add(p, value_ns)
    st_i64(p + OFF_GAUGE_A, gauge_a)
    st_i64(p + OFF_GAUGE_B, gauge_b)
    row_end(base, row)


def warm() -> list:
    """Compile (or load from numba's cache) the writers, touching no table: processes forked
    afterwards start warm."""
    from numba import types

    observe_records(0, 0, 0, 0, 0)  # no records: returns before any access
    observe.compile((types.int64,) * 5)
    return [observe_records, observe]


# --- Python side ----------------------------------------------------------------------------
def create(instance: str, process: str, lock_memory: bool = False) -> Table:
    """The supervisor makes `stats.<process>` with its rows named (no writer yet)."""
    names = rows_of(process)
    table = Table.create(instance, table_name(process), STATS_ROW_DTYPE, len(names), kind="stats",
                         lock_memory=lock_memory)
    try:
        rows = np.zeros(len(names), STATS_ROW_DTYPE)
        rows["name"] = [n.encode("ascii") for n in names]
        table.take_writer()
        table.write_many(np.arange(len(names)), rows)
        table.release_writer()
    except BaseException:
        table.close()
        raise
    return table


class StatsWriter:
    """A process's own stats table, attached as its one writer. `row(name)` is the index the
    compiled writers take; `beat(now_ns)` is the process's heartbeat."""

    def __init__(self, instance: str, process: str, lock_memory: bool = False):
        self.table = Table.attach(instance, table_name(process), STATS_ROW_DTYPE, kind="stats", writer=True,
                                  lock_memory=lock_memory)
        self.base = self.table.address
        names = [bytes(n).rstrip(b"\0").decode("ascii") for n in self.table.read_all()["name"]]
        self.rows = {n: i for i, n in enumerate(names)}
        self._reset()

    def _reset(self) -> None:
        """A (re)started process counts from zero: the rows are this process's life."""
        rows = np.zeros(len(self.rows), STATS_ROW_DTYPE)
        rows["name"] = [n.encode("ascii") for n in self.rows]
        self.table.write_many(np.arange(len(rows)), rows)

    def row(self, name: str) -> int:
        return self.rows[name]

    def beat(self, now_ns: int) -> None:
        self.table.heartbeat(now_ns)

    def describe(self, wait: str, cpu: int | None) -> None:
        """The process row: how the process waits for work (WAITS) and the CPU it is pinned to."""
        observe(self.base, self.rows[PROCESS_ROW], -1, WAITS.index(wait), -1 if cpu is None else cpu)

    def close(self) -> None:
        self.table.close()


def quantile_ns(buckets: np.ndarray, q: float) -> int:
    """The upper bound (ns) of the bucket holding the q-quantile (0 if nothing counted)."""
    total = int(buckets.sum())
    if total == 0:
        return 0
    need = q * total
    acc = 0
    for k, c in enumerate(buckets):
        acc += int(c)
        if acc >= need and c:
            return 0 if k == 0 else (1 << k) - 1
    return (1 << (len(buckets) - 1)) - 1


def summary(row) -> dict:
    """One row as plain data: count, mean, p50 and p99 (their buckets' upper bounds, at most
    the max), max (ns) and its gauges."""
    count, top = int(row["count"]), int(row["max_ns"])
    b = np.asarray(row["bucket_ns"])
    return {"count": count, "sum_ns": int(row["sum_ns"]), "mean_ns": int(row["sum_ns"]) // count if count else 0,
            "cumulative": np.cumsum(b).tolist(),
            "p50_ns": min(quantile_ns(b, 0.5), top), "p99_ns": min(quantile_ns(b, 0.99), top), "max_ns": top,
            "gauge_a": int(row["gauge_a"]), "gauge_b": int(row["gauge_b"])}
