"""Demo engines driven in process as an edge drives them, and what their report records make: an
EdgeState fed them (the edge's projection) and a HistoryStore fed them (the history process's),
for tests of the two and of the edge serving from both."""

from __future__ import annotations

import bisect

import numpy as np

from ganntec import config as C
from ganntec.edge import stats as S
from ganntec.edge.state import EdgeState, decode
from ganntec.exchange import Exchange
from ganntec.history.store import HistoryStore
from ganntec.shm import records as R
from ganntec.shm.records import OrderType, RecordType, StpMode, TimeInForce
from ganntec.workers.supervisor import funding_records, replayer_factory

T = RecordType
CFG = C.load()
N_SYMBOLS = len(CFG.symbols)
MAKE = replayer_factory(CFG)
BTCUSDT, ETHUSDT, ETHBTC = 0, 1, 2
MIDS = {BTCUSDT: (5_000_000, 10, 60), ETHUSDT: (300_000, 17, 120), ETHBTC: (5_000, 2, 20)}
QUOTE_PER_TICK_LOT = [int(q) for q in CFG.symbol_rows()["quote_per_tick_lot"]]
T0 = 1_700_000_000_000_000_000
HOUR = 3_600 * 10**9


def records_of(edge) -> list:
    raw = R.as_records(edge).view(np.uint8).reshape(-1, R.RECORD_BYTES)
    return [decode(row.tobytes()) for row in raw]


class Flow:
    """The demo exchange driven as an edge drives it (source 1, increasing source_seq and ts_ns);
    keeps each command's (journal, edge) records."""

    def __init__(self):
        self.drv = MAKE()
        self.drv.order.replay = False
        self.steps: list[tuple[np.ndarray, np.ndarray]] = []
        self.source_seq, self.ts = 0, T0
        self.placed: list[tuple[int, int, int]] = []  # (order id, account, symbol)
        self.steps.append(self.drv.run(funding_records(CFG)))

    def send(self, cmds, cid: str = "", dt_ns: int = 1_000_000) -> np.ndarray:
        self.source_seq += 1
        self.ts += dt_ns
        cmds["source"], cmds["source_seq"], cmds["ts_ns"] = 1, self.source_seq, self.ts
        if cid:
            cmds["client_order_id"] = cid.encode()
        journal, edge = self.drv.run(cmds)
        self.steps.append((journal, edge))
        return journal

    def new(self, acc, side, price, qty, symbol=BTCUSDT, order_type=OrderType.LIMIT, tif=TimeInForce.GTC,
            stp=StpMode.DEFAULT, quote=0, dt_ns=1_000_000) -> int:
        journal = self.send(Exchange.orders(acc, side, price, qty, order_type, symbol, tif, 0, stp, quote),
                            f"c{self.source_seq + 1}", dt_ns)
        oid = int(journal[0]["seq"])
        self.placed.append((oid, acc, symbol))
        return oid

    def cancel(self, acc, oid, symbol=BTCUSDT, dt_ns=1_000_000) -> None:
        cmd = Exchange.cancels(acc, oid, symbol)
        cmd["new_client_order_id"] = f"x{self.source_seq + 1}".encode()
        self.send(cmd, dt_ns=dt_ns)

    def cancel_all(self, acc, symbol=BTCUSDT, dt_ns=1_000_000) -> None:
        r = R.empty(T.CANCEL_ALL)
        r["account_id"], r["symbol_id"] = acc, symbol
        self.send(r, dt_ns=dt_ns)

    def oco(self, acc, side, qty, above: dict, below: dict, symbol=BTCUSDT, dt_ns=1_000_000) -> int:
        n = self.source_seq + 1
        above, below = dict(above, client_order_id=f"a{n}".encode()), dict(below, client_order_id=f"b{n}".encode())
        journal = self.send(Exchange.oco(acc, side, qty, above, below, symbol, list_client_order_id=f"L{n}".encode()),
                            dt_ns=dt_ns)
        return int(journal[0]["seq"])

    def journal(self, upto: int | None = None) -> np.ndarray:
        return R.concat([j for j, _ in self.steps[:upto]])

    def edge(self, upto: int | None = None) -> np.ndarray:
        return R.concat([e for _, e in self.steps[:upto]])


EVERY_MINUTE = 1 << 40  # keep_minutes of a memory that never drops a candle (a reference)


def projection(keep_minutes: int = EVERY_MINUTE) -> EdgeState:
    """An empty EdgeState whose per-symbol stats keep `keep_minutes` of one-minute candles."""
    st = EdgeState(N_SYMBOLS)
    st.stats = [S.SymbolStats(keep_minutes) for _ in range(N_SYMBOLS)]
    return st


def feed(st: EdgeState, steps) -> EdgeState:
    """`st` fed exactly what the store is fed (as the edge's bootstrap does)."""
    for journal, edge in steps:
        st.remember_commands(journal)
        st.apply(edge, notify=False)
    return st


def reference(f: Flow, upto: int | None = None) -> EdgeState:
    """The projection of `f`'s first `upto` steps by an edge that keeps every minute."""
    return feed(projection(), f.steps[:upto])


def fill(f: Flow, store: HistoryStore, lo: int = 0, hi: int | None = None) -> None:
    for journal, edge in f.steps[lo:hi]:
        store.apply(edge, journal)


def fills(f: Flow) -> list:
    return [r for r in records_of(f.edge()) if r.type == T.FILL]


def klines_by_definition(minutes: list[S.Candle], interval: str, start_ms: int | None, end_ms: int | None,
                         limit: int) -> list[S.Candle]:
    """What stats.klines must give, from its definition and nothing it uses but the bucket
    arithmetic: the one-minute candles opening in [bucket_start(start_ms), end_ms] merged by
    bucket; every bucket from the first traded to the last, a quiet one repeating the close of
    the traded one before it; the first `limit` of them from start_ms, else the last `limit`."""
    lo = S.bucket_start(interval, start_ms) if start_ms is not None else None
    merged: dict[int, S.Candle] = {}
    for m in minutes:
        if (lo is None or m.open_ms >= lo) and (end_ms is None or m.open_ms <= end_ms):
            b = S.bucket_start(interval, m.open_ms)
            if b in merged:
                merged[b].merge(m)
            else:
                merged[b] = S.Candle(b, m.open_tick, m.high_tick, m.low_tick, m.close_tick, m.volume_lot,
                                     m.quote_minor, m.trades, m.taker_buy_lot, m.taker_buy_quote_minor)
    if not merged or limit <= 0:
        return []
    traded = sorted(merged)

    def candle(b: int) -> S.Candle:
        if b in merged:
            return merged[b]
        p = merged[traded[bisect.bisect_left(traded, b) - 1]].close_tick
        return S.Candle(b, p, p, p, p)

    out = []
    if start_ms is not None:
        b = traded[0]
        while b <= traded[-1] and len(out) < limit:
            out.append(candle(b))
            b = S.next_bucket(interval, b)
        return out
    b = traded[-1]
    while b >= traded[0] and len(out) < limit:
        out.append(candle(b))
        b = S.bucket_start(interval, b - 1)
    return out[::-1]
