"""Position engine: per account and symbol, net position, entry value, realized P&L, fees,
volume, from the settled FILLs risk forwards. Every record it consumes goes on to the edge.

    POSITION_DTYPE (one row per (account, symbol) that ever traded)
    field                     unit / meaning
    account_id, symbol_id
    net_qty_lot               signed: > 0 long, < 0 short
    entry_value_quote_minor   signed value of the open position at its entry prices (same sign
                              as net); average entry price = entry_value / (net x quote_per_tick_lot)
    realized_pnl_quote_minor  closed P&L
    fees_base_minor, fees_quote_minor   fees paid, in the asset each was charged in
    volume_qty_lot            traded quantity, both sides
    last_price_tick           the symbol's last trade price when this row last changed
Unrealized P&L = net x last price x quote_per_tick_lot - entry_value (see `unrealized`).

Closing part of a position realizes sign(net) x (qty x price x qpl) - entry_value x qty / |net|,
the entry value removed pro rata (rounded toward zero: the remainder stays in the open part, so
nothing is lost). Exact while |net| < 2**31 lots, which `step` checks: a larger position sets
the row's overflow flag instead of computing a wrong number.

State layouts (engine-private; snapshots store these arrays):

    [POSITION_DTYPE] 80 bytes
    offset  size  type  field
         0     8  i8    account_id
         8     8  i8    symbol_id
        16     8  i8    net_qty_lot
        24     8  i8    entry_value_quote_minor
        32     8  i8    realized_pnl_quote_minor
        40     8  i8    fees_base_minor
        48     8  i8    fees_quote_minor
        56     8  i8    volume_qty_lot
        64     8  i8    last_price_tick
        72     8  i8    overflow
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ganntec.engines.hashmap import capacity_for, hm_get, hm_put
from ganntec.engines.mem import ld_i64, ld_u8, ld_u16, ld_u32, st_i64
from ganntec.engines.symbols import SYMBOL_DTYPE, own_table
from ganntec.shm import records as R
from ganntec.shm.atomics import copy_bytes

POSITION_DTYPE = np.dtype(
    {
        "names": ["account_id", "symbol_id", "net_qty_lot", "entry_value_quote_minor", "realized_pnl_quote_minor",
                  "fees_base_minor", "fees_quote_minor", "volume_qty_lot", "last_price_tick", "overflow"],
        "formats": ["<i8"] * 10,
        "offsets": [8 * i for i in range(10)],
        "itemsize": 80,
    }
)
PB = POSITION_DTYPE.itemsize
P_ACC, P_SYM, P_NET, P_ENTRY, P_REAL, P_FEEB, P_FEEQ, P_VOL, P_LAST, P_OVF = (
    POSITION_DTYPE.fields[n][1] for n in POSITION_DTYPE.names)
RB = R.RECORD_BYTES
_F = {n: R.FILL_DTYPE.fields[n][1] for n in R.FILL_DTYPE.names}
H_TYPE, H_ACC, H_SYM = _F["type"], _F["account_id"], _F["symbol_id"]
F_PRICE, F_QTY, F_MFEE, F_TFEE, F_MACC, F_TSIDE = (_F[n] for n in (
    "price_tick", "qty_lot", "maker_fee_minor", "taker_fee_minor", "maker_account_id", "taker_side"))
S_QPL = SYMBOL_DTYPE.fields["quote_per_tick_lot"][1]
SB = SYMBOL_DTYPE.itemsize
T_FILL = int(R.RecordType.FILL)
BUY = int(R.Side.BUY)
LIMIT_31 = 1 << 31

(P_CSYM, P_CROWS, P_CNROWS, P_CMAX, P_CKEYS, P_CVALS, P_CMASK, P_COUT, P_COUTN) = range(9)
P_SLOTS = 10
# Slots a snapshot does not carry: addresses of this process's arrays and of the output.
LOCAL_SLOTS = (P_CSYM, P_CROWS, P_CKEYS, P_CVALS, P_COUT)


@njit(cache=True, nogil=True)
def _g(P, k):
    return ld_i64(P + 8 * k)


@njit(cache=True, nogil=True)
def _s(P, k, v):
    st_i64(P + 8 * k, v)


@njit(cache=True, nogil=True)
def row_for(rows, n_rows_address, max_rows, keys, vals, mask, account, symbol):
    """Address of the (account, symbol) row in a POSITION_DTYPE table, created on first use;
    0 if the table is full. The row count lives at n_rows_address."""
    key = ((account << 20) | symbol) + 1
    r = hm_get(keys, vals, mask, key, -1)
    if r < 0:
        r = ld_i64(n_rows_address)
        if r == max_rows:
            return 0
        st_i64(n_rows_address, r + 1)
        hm_put(keys, vals, mask, key, r)
        a = rows + r * PB
        st_i64(a + P_ACC, account)
        st_i64(a + P_SYM, symbol)
        return a
    return rows + r * PB


@njit(cache=True, nogil=True)
def _row(P, account, symbol):
    return row_for(_g(P, P_CROWS), P + 8 * P_CNROWS, _g(P, P_CMAX), _g(P, P_CKEYS), _g(P, P_CVALS),
                   _g(P, P_CMASK), account, symbol)


@njit(cache=True, nogil=True)
def _trade(p, buy, lots, price, qpl, fee, fee_in_base):
    """Apply one side of a fill (lots at price) to the row at p."""
    net, entry = ld_i64(p + P_NET), ld_i64(p + P_ENTRY)
    value = lots * price * qpl
    st_i64(p + P_VOL, ld_i64(p + P_VOL) + lots)
    fee_at = P_FEEB if fee_in_base else P_FEEQ
    st_i64(p + fee_at, ld_i64(p + fee_at) + fee)
    st_i64(p + P_LAST, price)
    if net == 0 or (net > 0) == buy:  # opening or adding
        st_i64(p + P_NET, net + (lots if buy else -lots))
        st_i64(p + P_ENTRY, entry + (value if buy else -value))
        return
    size = net if net > 0 else -net
    if size >= LIMIT_31:
        st_i64(p + P_OVF, 1)
        return
    closed = min(lots, size)
    # entry x closed / size rounded toward zero (on the magnitude: // floors negatives toward
    # -inf); exact, the second product < 2**62 since size < 2**31.
    mag = entry if entry >= 0 else -entry
    removed = (mag // size) * closed + ((mag % size) * closed) // size
    if entry < 0:
        removed = -removed
    closed_value = closed * price * qpl
    st_i64(p + P_REAL, ld_i64(p + P_REAL) + (closed_value if net > 0 else -closed_value) - removed)
    entry -= removed
    if lots > size:  # flipped: the rest opens the other way at this price
        rest_value = value - closed_value
        entry = rest_value if buy else -rest_value
    st_i64(p + P_ENTRY, entry)
    st_i64(p + P_NET, net + (lots if buy else -lots))


@njit(cache=True, nogil=True)
def step(control, in_address, n_in, out_address, out_cap):
    """Apply settled records; copy each to the output (the edge's stream)."""
    return run(control.ctypes.data, in_address, n_in, out_address, out_cap)


@njit(cache=True, nogil=True)
def run(P, in_address, n_in, out_address, out_cap):
    """`step` on the control block's address (compiled drivers call this: no NRT)."""
    i = 0
    n = 0
    while i < n_in and n < out_cap:
        c = in_address + i * RB
        copy_bytes(out_address + n * RB, c, RB)
        n += 1
        i += 1
        if ld_u16(c + H_TYPE) != T_FILL:
            continue
        sym = ld_u32(c + H_SYM)
        lots, price = ld_i64(c + F_QTY), ld_i64(c + F_PRICE)
        qpl = ld_i64(_g(P, P_CSYM) + sym * SB + S_QPL)
        taker_buys = ld_u8(c + F_TSIDE) == BUY
        tp = _row(P, ld_u32(c + H_ACC), sym)
        mp = _row(P, ld_u32(c + F_MACC), sym)
        # The buyer pays its fee in base, the seller in quote.
        if tp != 0:
            _trade(tp, taker_buys, lots, price, qpl, ld_i64(c + F_TFEE), taker_buys)
        if mp != 0:
            _trade(mp, not taker_buys, lots, price, qpl, ld_i64(c + F_MFEE), not taker_buys)
    return i, n


class PositionEngine:
    def __init__(self, symbols: np.ndarray, max_positions: int = 1 << 16):
        self.symbols = own_table(symbols)
        self.rows = np.zeros(max_positions, POSITION_DTYPE)
        cap = capacity_for(max_positions)
        self.keys = np.zeros(cap, np.int64)
        self.vals = np.zeros(cap, np.int64)
        p = np.zeros(P_SLOTS, np.int64)
        p[P_CSYM], p[P_CROWS], p[P_CMAX] = self.symbols.ctypes.data, self.rows.ctypes.data, max_positions
        p[P_CKEYS], p[P_CVALS], p[P_CMASK] = self.keys.ctypes.data, self.vals.ctypes.data, cap - 1
        self.control = p

    @property
    def positions(self) -> np.ndarray:
        return self.rows[: int(self.control[P_CNROWS])]

    def process(self, records) -> np.ndarray:
        recs = R.as_records(records)
        out = np.zeros((len(recs), RB), np.uint8)
        used, made = step(self.control, recs.ctypes.data, len(recs), out.ctypes.data, len(out))
        return out[:made].view(R.RECORD_DTYPE).reshape(-1)

    def unrealized(self, last_price_tick: np.ndarray) -> np.ndarray:
        """Unrealized P&L per position row against each symbol's last trade price."""
        pos = self.positions
        qpl = self.symbols["quote_per_tick_lot"][pos["symbol_id"]]
        return pos["net_qty_lot"] * last_price_tick[pos["symbol_id"]] * qpl - pos["entry_value_quote_minor"]
