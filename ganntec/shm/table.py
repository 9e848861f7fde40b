"""Seqlock tables: fixed rows of one numpy dtype in a shared-memory segment, one writer,
lock-free readers; a reader never returns a torn row.

They carry the read-mostly state of DESIGN §3 (depth per symbol, balances, positions): the
engine that owns the state writes rows, the edge and the inspector read them without a round
trip. Layout (bytes). The constants line is written once; the writer line only by the writer,
so statistics and heartbeats never invalidate the line readers load `row_bytes` from.

Segment (TABLE_HEADER_DTYPE):

    offset  size  field                written by
    ------  ----  -------------------  ----------------------------------------------------
         0    64  common header        creator (segment.py; magic stored last)
        64     8  rows                 creator: row count
        72     8  row_bytes            creator: SEQ_BYTES + payload_bytes, rounded up to 64
        80     8  payload_bytes        creator: the row dtype's itemsize
        88     8  row_fingerprint      creator: hash of the row dtype's names, formats, offsets
        96    16  kind                 creator: ASCII name of the row kind ("depth", ...)
       112    16  reserved
       128     8  writer_pid           writer on claim (compare-exchange: one writer)
       136     8  writer_start_cs      writer after claiming (pid + start time name a process)
       144     8  writer_heartbeat_ns  writer's runtime
       152     8  writes               writer: rows written (relaxed; statistics)
       160    32  reserved
       192     -  rows                 rows x row_bytes; row i at ROWS_OFFSET + i x row_bytes

Row i (each starts on its own cache line):

    offset  size  field                written by
    ------  ----  -------------------  ----------------------------------------------------
         0     8  seq                  writer: odd while the row is being written, even when
                                       stable; +2 per write
         8     -  payload              writer: payload_bytes of the row dtype, zero padded

Protocol. Writer: `row_begin` (seq |= 1, relaxed, then a release fence so the odd seq is seen
before any payload store), store the payload, `row_end` (seq + 1, release: the payload is seen
before the even seq). Reader: s1 = acquire load of seq; if odd, retry; copy the payload; acquire
fence; s2 = relaxed load of seq; the copy is whole iff s1 == s2. `row_begin` uses `seq | 1`, not
`seq + 1`, so a writer that takes over from one that died mid-write (row left odd) still makes
the row even again, at a value no reader saw before.

Readers retry a bounded number of times (`read_row` returns -1). The Python wrappers then ask
whether the writer is alive: a dead writer mid-write is reported as Outcome.STALE (the row stays
unreadable until a new writer rewrites it); a live one that keeps the row busy too long raises
TimeoutError.

Row dtypes (payload offsets; integer units in the names: prices in ticks, quantities in lots,
money in an asset's minor units).

Depth per symbol, K = DEPTH_LEVELS levels per side, best first (DEPTH_ROW_DTYPE, kind "depth"):

    offset  size  field                meaning
    ------  ----  -------------------  ----------------------------------------------------
         0     4  symbol_id
         4     4  n_bids               valid levels in bid_* (0..DEPTH_LEVELS)
         8     4  n_asks               valid levels in ask_*
        12     4  reserved
        16     8  update_id            book update id (Binance lastUpdateId)
        24     8  last_seq             journal sequence of the last input applied
        32     8  last_price_tick      last trade price (unrealized P&L of positions uses it)
        40   160  bid_price_tick       int64 x 20
       200   160  bid_qty_lot          int64 x 20
       360   160  ask_price_tick       int64 x 20
       520   160  ask_qty_lot          int64 x 20
       680     -  end                  row_bytes 704

Balance per account and asset (BALANCE_ROW_DTYPE, kind "balances"):

    offset  size  field                meaning
    ------  ----  -------------------  ----------------------------------------------------
         0     4  account_id
         4     4  asset_id
         8     8  free_minor           available, in the asset's minor units
        16     8  locked_minor         held by open orders
        24     8  last_seq             journal sequence of the last input applied
        32     -  end                  row_bytes 64

Position per account and symbol (POSITION_ROW_DTYPE, kind "positions"):

    offset  size  field                meaning
    ------  ----  -------------------  ----------------------------------------------------
         0     4  account_id
         4     4  symbol_id
         8     8  net_qty_lot          > 0 long, < 0 short
        16     8  cost_basis_quote_minor  what the open quantity cost, signed like net_qty:
                                       average entry = cost_basis / net_qty, an exact
                                       rational (no rounded price is stored)
        24     8  realized_pnl_quote_minor
        32     8  fees_quote_minor     fees charged on this symbol's fills
        40     8  volume_qty_lot       base quantity traded, both sides
        48     8  last_seq             journal sequence of the last input applied
        56     -  end                  row_bytes 64 (one cache line)

Money is in quote minor units because that is what settlement moves between balances: realized
P&L then adds up exactly with the balances table. Unrealized P&L is net_qty x the depth row's
last_price_tick (converted by the symbol's tick and lot sizes) minus cost_basis, at the reader.

All compiled functions take the segment's base *address* (an int), never arrays (atomics.py
says why). Engines write from @njit code with `row_begin(base, i)`, field stores into
`table.rows_view()`, `row_end(base, i)`, or with `write_row(base, i, src_address)`; compiled
readers call `read_row(base, i, dst_address, spins)`. Compiled writers trust `i`; the Python
wrappers check it.
"""

from __future__ import annotations

import hashlib
import os
import re

import numpy as np
from numba import njit

from ganntec.shm.atomics import (
    compare_exchange_seqcst,
    copy_bytes,
    cpu_pause,
    fence_acquire,
    fence_release,
    load_acquire,
    load_relaxed,
    py_load_relaxed,
    py_store_relaxed,
    store_relaxed,
    store_release,
)
from ganntec.shm.segment import Outcome, Segment, SegmentError, magic_of, process_alive, process_start_cs, segment_name

TABLE_MAGIC = magic_of(b"GNTCTABL")
TABLE_LAYOUT_VERSION = 1

OFF_ROWS = 64
OFF_ROW_BYTES = 72
OFF_PAYLOAD_BYTES = 80
OFF_ROW_FINGERPRINT = 88
OFF_KIND = 96
KIND_BYTES = 16
OFF_WRITER_PID = 128
OFF_WRITER_START_CS = 136
OFF_WRITER_HEARTBEAT_NS = 144
OFF_WRITES = 152
ROWS_OFFSET = 192

SEQ_BYTES = 8
CACHE_LINE = 64
DEFAULT_SPINS = 1 << 14      # tries per compiled read before Python checks the writer is alive
DEFAULT_MAX_ROUNDS = 10_000  # Python rounds (each after a liveness check) before TimeoutError

TABLE_HEADER_DTYPE = np.dtype(
    {
        "names": ["rows", "row_bytes", "payload_bytes", "row_fingerprint", "kind",
                  "writer_pid", "writer_start_cs", "writer_heartbeat_ns", "writes"],
        "formats": ["<i8", "<i8", "<i8", "<i8", f"S{KIND_BYTES}", "<i8", "<i8", "<i8", "<i8"],
        "offsets": [OFF_ROWS, OFF_ROW_BYTES, OFF_PAYLOAD_BYTES, OFF_ROW_FINGERPRINT, OFF_KIND,
                    OFF_WRITER_PID, OFF_WRITER_START_CS, OFF_WRITER_HEARTBEAT_NS, OFF_WRITES],
        "itemsize": ROWS_OFFSET,
    }
)

DEPTH_LEVELS = 20
_LEVELS = ("<i8", (DEPTH_LEVELS,))
DEPTH_ROW_DTYPE = np.dtype(
    {
        "names": ["symbol_id", "n_bids", "n_asks", "update_id", "last_seq", "last_price_tick",
                  "bid_price_tick", "bid_qty_lot", "ask_price_tick", "ask_qty_lot"],
        "formats": ["<u4", "<u4", "<u4", "<i8", "<i8", "<i8", _LEVELS, _LEVELS, _LEVELS, _LEVELS],
        "offsets": [0, 4, 8, 16, 24, 32, 40, 200, 360, 520],
        "itemsize": 680,
    }
)
BALANCE_ROW_DTYPE = np.dtype(
    {
        "names": ["account_id", "asset_id", "free_minor", "locked_minor", "last_seq"],
        "formats": ["<u4", "<u4", "<i8", "<i8", "<i8"],
        "offsets": [0, 4, 8, 16, 24],
        "itemsize": 32,
    }
)
POSITION_ROW_DTYPE = np.dtype(
    {
        "names": ["account_id", "symbol_id", "net_qty_lot", "cost_basis_quote_minor",
                  "realized_pnl_quote_minor", "fees_quote_minor", "volume_qty_lot", "last_seq"],
        "formats": ["<u4", "<u4", "<i8", "<i8", "<i8", "<i8", "<i8", "<i8"],
        "offsets": [0, 4, 8, 16, 24, 32, 40, 48],
        "itemsize": 56,
    }
)
KINDS = {"depth": DEPTH_ROW_DTYPE, "balances": BALANCE_ROW_DTYPE, "positions": POSITION_ROW_DTYPE}
_KIND_RE = re.compile(r"^[a-z0-9_-]{1,16}$")


def row_bytes_for(payload_bytes: int) -> int:
    return -(-(SEQ_BYTES + payload_bytes) // CACHE_LINE) * CACHE_LINE


def table_bytes(rows: int, payload_bytes: int) -> int:
    return ROWS_OFFSET + rows * row_bytes_for(payload_bytes)


def row_fingerprint(dtype) -> int:
    """int64 hash of a row dtype's fields (name, base format, shape, offset) and itemsize."""
    dtype = np.dtype(dtype)
    fields = [(n, dtype.fields[n][0].base.str, dtype.fields[n][0].shape, dtype.fields[n][1]) for n in dtype.names or ()]
    text = repr((fields, dtype.itemsize, None if dtype.names else dtype.str))
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little", signed=True)


def _check_row_dtype(dtype: np.dtype) -> None:
    if dtype.hasobject or dtype.itemsize == 0:
        raise ValueError(f"row dtype {dtype} (must be plain data of nonzero size)")
    for name in dtype.names or ():
        sub, off = dtype.fields[name][:2]
        if off % sub.base.alignment:
            raise ValueError(f"row dtype field {name!r} at offset {off} is not aligned to {sub.base.alignment}")


def _same_fields(a: np.dtype, b: np.dtype) -> bool:
    if a.names is None or b.names is None:
        return a == b
    return a.names == b.names and all(a.fields[n][0] == b.fields[n][0] for n in a.names)


# --- compiled protocol ---------------------------------------------------------------------
@njit(cache=True, nogil=True)
def row_address(base, i):
    """Address of row i (its seq word); the payload starts SEQ_BYTES later."""
    return base + ROWS_OFFSET + i * load_relaxed(base + OFF_ROW_BYTES)


@njit(cache=True, nogil=True)
def payload_address(base, i):
    return row_address(base, i) + SEQ_BYTES


@njit(cache=True, nogil=True)
def row_begin(base, i):
    """Writer: mark row i busy (odd) before storing its payload."""
    seq = row_address(base, i)
    store_relaxed(seq, load_relaxed(seq) | 1)
    fence_release()  # the odd seq is visible before any payload store that follows


@njit(cache=True, nogil=True)
def row_end(base, i):
    """Writer: publish row i (even seq, release: every payload store is visible first)."""
    seq = row_address(base, i)
    store_release(seq, load_relaxed(seq) + 1)
    store_relaxed(base + OFF_WRITES, load_relaxed(base + OFF_WRITES) + 1)


@njit(cache=True, nogil=True)
def write_row(base, i, src_address):
    """Writer: copy one payload from `src_address` into row i."""
    row_begin(base, i)
    copy_bytes(payload_address(base, i), src_address, load_relaxed(base + OFF_PAYLOAD_BYTES))
    row_end(base, i)


@njit(cache=True, nogil=True)
def write_rows(base, index_address, src_address, n):
    """Writer: row index_address[k] (int64) <- payload k of `src_address`, for k < n."""
    size = load_relaxed(base + OFF_PAYLOAD_BYTES)
    for k in range(n):
        write_row(base, load_relaxed(index_address + 8 * k), src_address + k * size)


@njit(cache=True, nogil=True)
def row_seq(base, i):
    """Row i's sequence word (acquire): even and unchanged means the row did not change."""
    return load_acquire(row_address(base, i))


@njit(cache=True, nogil=True)
def read_row(base, i, dst_address, spins):
    """Copy a consistent row i to `dst_address`; returns the retries it took, or -1 if the row
    stayed busy for `spins` tries (a writer mid-write, or dead mid-write: ask the Python side)."""
    seq = row_address(base, i)
    size = load_relaxed(base + OFF_PAYLOAD_BYTES)
    for k in range(spins):
        s1 = load_acquire(seq)
        if s1 & 1 == 0:
            copy_bytes(dst_address, seq + SEQ_BYTES, size)
            fence_acquire()  # the copy's loads complete before seq is read again
            if load_relaxed(seq) == s1:
                return k
        cpu_pause()
    return -1


@njit(cache=True, nogil=True)
def read_rows(base, first, n, dst_address, spins):
    """Read rows first..first+n-1 (each consistent on its own) into consecutive payloads.

    Returns the total retries, or -(k + 1) if row first+k stayed busy (rows before it are read).
    """
    size = load_relaxed(base + OFF_PAYLOAD_BYTES)
    retries = 0
    for k in range(n):
        r = read_row(base, first + k, dst_address + k * size, spins)
        if r < 0:
            return -(k + 1)
        retries += r
    return retries


@njit(cache=True, nogil=True)
def _claim(address, expected, pid):
    return compare_exchange_seqcst(address, expected, pid)


# --- Python side ---------------------------------------------------------------------------
class Table:
    """A mapped seqlock table. `read`/`read_all` from anywhere; `write`/`write_many` only after
    `take_writer` (one writer per table). Compiled code uses `table.address` with the functions
    above and `table.rows_view()`."""

    def __init__(self, segment: Segment, dtype: np.dtype):
        self.segment = segment
        self.name = segment.name
        self.address = segment.address
        hdr = segment.view(TABLE_HEADER_DTYPE, 0, 1)[0]
        self.rows = int(hdr["rows"])
        self.row_bytes = int(hdr["row_bytes"])
        self.payload_bytes = int(hdr["payload_bytes"])
        self.kind = bytes(hdr["kind"]).decode("ascii", "replace")
        self.dtype = dtype
        self.writer = False
        self.spins = DEFAULT_SPINS
        self.max_rounds = DEFAULT_MAX_ROUNDS
        self._closed = False

    # construction -------------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        instance: str,
        name: str,
        row_dtype,
        rows: int,
        *,
        kind: str | None = None,
        writer: bool = False,
        lock_memory: bool = True,
        **segment_kw,
    ) -> "Table":
        """Create a table of `rows` zeroed rows (seq 0). `kind` names the row layout; it is
        found from KINDS when omitted, else "custom"."""
        dtype = np.dtype(row_dtype)
        _check_row_dtype(dtype)
        if kind is None:
            kind = next((k for k, d in KINDS.items() if d == dtype), "custom")
        if not _KIND_RE.fullmatch(kind):
            raise ValueError(f"kind={kind!r} (1-16 of a-z 0-9 _ -)")
        if kind in KINDS and KINDS[kind] != dtype:
            raise ValueError(f"kind={kind!r} takes {KINDS[kind]}, not {dtype}")
        if rows < 1:
            raise ValueError(f"rows={rows} (must be >= 1)")

        def init(seg: Segment) -> None:
            hdr = seg.view(TABLE_HEADER_DTYPE, 0, 1)
            hdr["rows"] = rows
            hdr["row_bytes"] = row_bytes_for(dtype.itemsize)
            hdr["payload_bytes"] = dtype.itemsize
            hdr["row_fingerprint"] = row_fingerprint(dtype)
            hdr["kind"] = kind.encode("ascii")

        seg = Segment.create(
            instance, name, magic=TABLE_MAGIC, layout_version=TABLE_LAYOUT_VERSION,
            header_bytes=ROWS_OFFSET, total_bytes=table_bytes(rows, dtype.itemsize),
            init=init, lock_memory=lock_memory, **segment_kw,
        )
        return cls(seg, dtype)._as_writer(writer)

    @classmethod
    def attach(
        cls,
        instance: str,
        name: str,
        row_dtype=None,
        *,
        kind: str | None = None,
        writer: bool = False,
        allow_stale: bool = False,
        lock_memory: bool = False,
    ) -> "Table":
        """Attach to an existing table; raises SegmentError with the named outcome if it is not
        READY, holds another kind of row (WRONG_KIND), or rows of the same kind laid out
        differently from `row_dtype` (VERSION_MISMATCH). Without `row_dtype`, a known kind
        gets its KINDS dtype and a custom one raw bytes."""
        outcome, seg = Segment.attach(
            instance, name, magic=TABLE_MAGIC, layout_version=TABLE_LAYOUT_VERSION,
            min_header_bytes=ROWS_OFFSET, allow_stale=allow_stale, lock_memory=lock_memory,
        )
        full = segment_name(instance, name)
        if seg is None:
            raise SegmentError(outcome, f"table {full}: {outcome.value}")
        try:
            hdr = seg.view(TABLE_HEADER_DTYPE, 0, 1)[0]
            found_kind = bytes(hdr["kind"]).decode("ascii", "replace")
            payload = int(hdr["payload_bytes"])
            if int(hdr["row_bytes"]) != row_bytes_for(payload) or seg.size < table_bytes(int(hdr["rows"]), payload):
                raise SegmentError(Outcome.TOO_SHORT, f"table {full}: shorter than its rows x row size")
            if row_dtype is not None:
                dtype = np.dtype(row_dtype)
                want_kind = kind or next((k for k, d in KINDS.items() if d == dtype), None)
            else:
                want_kind = kind
                dtype = KINDS.get(found_kind, np.dtype((np.void, payload)))
            if want_kind is not None and want_kind != found_kind:
                raise SegmentError(Outcome.WRONG_KIND, f"table {full} holds {found_kind!r} rows, not {want_kind!r}")
            if (row_dtype is not None or found_kind in KINDS) and row_fingerprint(dtype) != int(hdr["row_fingerprint"]):
                raise SegmentError(
                    Outcome.VERSION_MISMATCH,
                    f"table {full}: its {found_kind!r} rows ({payload} bytes) are laid out differently "
                    f"from {dtype} ({dtype.itemsize} bytes); writer and reader run different versions",
                )
        except BaseException:
            seg.close(unlink=False)
            raise
        return cls(seg, dtype)._as_writer(writer)

    # the writer role ----------------------------------------------------------------------
    def _as_writer(self, writer: bool) -> "Table":
        if writer:
            try:
                self.take_writer()
            except BaseException:
                self.close()
                raise
        return self

    def writer_identity(self) -> tuple[int, int]:
        return int(py_load_relaxed(self.address + OFF_WRITER_PID)), int(py_load_relaxed(self.address + OFF_WRITER_START_CS))

    def writer_alive(self) -> bool:
        return process_alive(*self.writer_identity())

    def take_writer(self) -> None:
        """Become the table's one writer (refused while a live process holds the role)."""
        addr = self.address + OFF_WRITER_PID
        me = os.getpid()
        expected = 0
        for _ in range(3):
            found = int(_claim(addr, expected, me))
            if found == expected or found == me:
                py_store_relaxed(self.address + OFF_WRITER_START_CS, process_start_cs(me))
                self.writer = True
                return
            if process_alive(found, int(py_load_relaxed(self.address + OFF_WRITER_START_CS))):
                raise SegmentError(Outcome.LIVE_OTHER_INSTANCE, f"table {self.name}: writer role held by live pid {found}")
            expected = found  # the holder died: take the role over (its odd rows get rewritten)
        raise SegmentError(Outcome.LIVE_OTHER_INSTANCE, f"table {self.name}: writer role is contended")

    def release_writer(self) -> None:
        """Give the writer role up (another process may take it without a takeover)."""
        if self.writer and self.segment.bytes is not None:
            if int(_claim(self.address + OFF_WRITER_PID, os.getpid(), 0)) == os.getpid():
                py_store_relaxed(self.address + OFF_WRITER_START_CS, 0)
            self.writer = False

    def heartbeat(self, now_ns: int) -> None:
        """The writer's liveness stamp (the runtime calls it; engines never read clocks)."""
        py_store_relaxed(self.address + OFF_WRITER_HEARTBEAT_NS, now_ns)

    # Python wrappers ------------------------------------------------------------------------
    def _index(self, i) -> int:
        i = int(i)
        if not 0 <= i < self.rows:
            raise IndexError(f"row {i} (table {self.name} has {self.rows})")
        return i

    def _payload(self, rows, n: int) -> np.ndarray:
        # Arrays and records must have the row dtype's fields (numpy casts structured dtypes
        # field by position, silently; padding may differ, e.g. after np.stack); tuples convert.
        if isinstance(rows, (np.ndarray, np.void)) and not _same_fields(rows.dtype, self.dtype):
            raise ValueError(f"rows dtype={rows.dtype} (table {self.name} holds {self.dtype})")
        arr = np.ascontiguousarray(np.asarray(rows, dtype=self.dtype).reshape(-1))
        if len(arr) != n:
            raise ValueError(f"{len(arr)} rows given, {n} expected")
        return arr

    def write(self, i, row) -> None:
        """Writer: store one row (a record, tuple or 0-d array of the row dtype)."""
        self._need_writer()
        src = self._payload(row, 1)
        write_row(self.address, self._index(i), src.ctypes.data)

    def write_many(self, indices, rows) -> None:
        """Writer: store rows[k] into row indices[k]; each row is published on its own."""
        self._need_writer()
        idx = np.ascontiguousarray(indices, dtype=np.int64)
        if idx.ndim != 1 or (len(idx) and (idx.min() < 0 or idx.max() >= self.rows)):
            raise IndexError(f"indices {idx!r} (table {self.name} has {self.rows} rows)")
        src = self._payload(rows, len(idx))
        write_rows(self.address, idx.ctypes.data, src.ctypes.data, len(idx))

    def read(self, i):
        """A consistent copy of row i (a numpy record)."""
        out = np.zeros(1, self.dtype)
        self._read_into(self._index(i), out.ctypes.data)
        return out[0]

    def read_all(self) -> np.ndarray:
        """Every row, each consistent on its own (rows may come from different moments)."""
        out = np.zeros(self.rows, self.dtype)
        dst = out.ctypes.data
        first = 0
        while first < self.rows:
            r = int(read_rows(self.address, first, self.rows - first, dst + first * self.payload_bytes, self.spins))
            if r >= 0:
                break
            busy = first - r - 1
            self._read_into(busy, dst + busy * self.payload_bytes)
            first = busy + 1
        return out

    def _read_into(self, i: int, dst: int) -> int:
        for _ in range(self.max_rounds):
            r = int(read_row(self.address, i, dst, self.spins))
            if r >= 0:
                return r
            if not self.writer_alive():
                r = int(read_row(self.address, i, dst, self.spins))  # it may have finished, then exited
                if r >= 0:
                    return r
                pid, _ = self.writer_identity()
                raise SegmentError(
                    Outcome.STALE,
                    f"table {self.name} row {i}: writer pid {pid} died mid-write; the row is unreadable "
                    f"until a new writer rewrites it",
                )
        raise TimeoutError(f"table {self.name} row {i}: busy for {self.max_rounds} x {self.spins} tries with a live writer")

    def rows_view(self) -> np.ndarray:
        """The payloads in place, as `rows` records of the row dtype (strided by row_bytes).

        For compiled writers between `row_begin` and `row_end`; readers must use `read_row`."""
        return np.ndarray((self.rows,), self.dtype, buffer=self.segment.bytes, offset=ROWS_OFFSET + SEQ_BYTES, strides=(self.row_bytes,))

    def seqs(self) -> np.ndarray:
        """A snapshot of every row's seq word (for inspection: odd = busy or left torn)."""
        return np.ndarray((self.rows,), "<i8", buffer=self.segment.bytes, offset=ROWS_OFFSET, strides=(self.row_bytes,)).copy()

    @property
    def writes(self) -> int:
        return int(py_load_relaxed(self.address + OFF_WRITES))

    def __len__(self) -> int:
        return self.rows

    def _need_writer(self) -> None:
        if not self.writer:
            raise PermissionError(f"table {self.name}: call take_writer() first (one writer per table)")

    # teardown -----------------------------------------------------------------------------
    def close(self, unlink: bool | None = None) -> None:
        """Give up the writer role, unmap; the creator (or `unlink=True`) also unlinks."""
        if self._closed:
            return
        self._closed = True
        self.release_writer()
        self.segment.close(unlink=unlink)

    def __enter__(self) -> "Table":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Table({self.name!r}, kind={self.kind!r}, {self.rows} rows x {self.row_bytes} bytes)"


__all__ = [
    "Table", "TABLE_HEADER_DTYPE", "TABLE_MAGIC", "TABLE_LAYOUT_VERSION", "ROWS_OFFSET", "SEQ_BYTES",
    "DEPTH_LEVELS", "DEPTH_ROW_DTYPE", "BALANCE_ROW_DTYPE", "POSITION_ROW_DTYPE", "KINDS",
    "row_address", "payload_address", "row_begin", "row_end", "write_row", "write_rows", "row_seq",
    "read_row", "read_rows", "row_bytes_for", "table_bytes", "row_fingerprint",
]
