"""The history store: a projection of the journal into SQLite (WAL mode) that outlives the
edge's in-memory one: orders, trades (with both sides' fees) and one-minute candles, from
which allOrders, myTrades, historicalTrades, klines and 24-hour tickers are served.

    store = HistoryStore(path)                       # opens or creates; resumes at store.last_seq
    store.apply(rp.feed(batch), batch)               # report-stream records, one transaction
    rp, next_seq = catch_up(store, make_replayer, journal_dir)   # up to the journal's end

Order state is computed by ONE piece of code, `ganntec.edge.state.EdgeState`: the store applies
the same records to an internal EdgeState and writes the orders each record touched, as they
stand just after that record. Trades and candles come from FILL records.

Idempotence. Every report record carries the journal sequence it derives from; `meta.last_seq`
is the highest one in the store, written in the same transaction as the rows. Records at or
below it are skipped, so applying a batch again (after a crash between the commit and whatever
the caller does next) changes nothing. One journal record's report records always come out of
one replayer feed together, so a batch never holds part of a sequence.

Resuming. A reopened store loads its open orders into the internal EdgeState, so later records
(fills, cancels, expiries) update them. `catch_up` replays the journal from its start through
fresh engines (engine state is not in the store) and writes only what is above `last_seq`.

Integers only: ticks, lots, minor units, nanoseconds (milliseconds for candle opens). Time
ranges are [start, end): start inclusive, end exclusive, as the edge's own queries take them.
"""

from __future__ import annotations

import collections
import operator
import os
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, fields

import numpy as np

from ganntec.edge import stats as S
from ganntec.edge.state import (
    BASE_ASSET,
    OPEN_STATUSES,
    QUOTE_ASSET,
    Book,
    EdgeState,
    Order,
    OwnTrade,
    Trade,
    decode,
)
from ganntec.edge.stats import Ticker24h
from ganntec.journal.journal import JournalReader
from ganntec.shm import records as R
from ganntec.shm.records import RecordType, Side

T = RecordType
RB = R.RECORD_BYTES
SCHEMA_VERSION = 1

ORDER_COLUMNS = tuple(f.name for f in fields(Order))
_ORDER_ROW = operator.attrgetter(*ORDER_COLUMNS)
_ORDER_EVENTS = frozenset((int(T.ORDER_ACCEPTED), int(T.ORDER_EXPIRED), int(T.ORDER_CANCELED), int(T.ORDER_AMENDED),
                           int(T.ORDER_TRIGGERED)))
_RESULTS = (int(T.ORDER_ACCEPTED), int(T.ORDER_REJECTED))

TRADE_COLUMNS = ("symbol_id", "trade_id", "price_tick", "qty_lot", "quote_minor", "ts_ns", "taker_side",
                 "taker_order_id", "maker_order_id", "taker_account_id", "maker_account_id", "taker_fee_minor",
                 "maker_fee_minor")
CANDLE_COLUMNS = ("symbol_id", "open_ms", "open_tick", "high_tick", "low_tick", "close_tick", "volume_lot",
                  "quote_minor", "trades", "taker_buy_lot", "taker_buy_quote_minor")

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS orders (
    order_id INTEGER PRIMARY KEY, account_id INTEGER NOT NULL, symbol_id INTEGER NOT NULL,
    side INTEGER NOT NULL, order_type INTEGER NOT NULL, time_in_force INTEGER NOT NULL,
    price_tick INTEGER NOT NULL, qty_lot INTEGER NOT NULL, stop_price_tick INTEGER NOT NULL,
    client_order_id TEXT NOT NULL, time_ns INTEGER NOT NULL, status INTEGER NOT NULL,
    executed_lot INTEGER NOT NULL, cum_quote_minor INTEGER NOT NULL, update_ns INTEGER NOT NULL,
    working_ns INTEGER NOT NULL, quote_qty_minor INTEGER NOT NULL, iceberg_lot INTEGER NOT NULL,
    trailing_delta_bips INTEGER NOT NULL, stp_mode INTEGER NOT NULL, prevented_lot INTEGER NOT NULL,
    list_id INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS orders_by_account ON orders (account_id, symbol_id, order_id);
CREATE INDEX IF NOT EXISTS orders_open ON orders (status)
    WHERE status IN ({", ".join(str(int(s)) for s in OPEN_STATUSES)});
CREATE TABLE IF NOT EXISTS trades (
    symbol_id INTEGER NOT NULL, trade_id INTEGER NOT NULL, price_tick INTEGER NOT NULL, qty_lot INTEGER NOT NULL,
    quote_minor INTEGER NOT NULL, ts_ns INTEGER NOT NULL, taker_side INTEGER NOT NULL,
    taker_order_id INTEGER NOT NULL, maker_order_id INTEGER NOT NULL, taker_account_id INTEGER NOT NULL,
    maker_account_id INTEGER NOT NULL, taker_fee_minor INTEGER NOT NULL, maker_fee_minor INTEGER NOT NULL,
    PRIMARY KEY (symbol_id, trade_id)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS trades_by_taker ON trades (taker_account_id, symbol_id, trade_id);
CREATE INDEX IF NOT EXISTS trades_by_maker ON trades (maker_account_id, symbol_id, trade_id);
CREATE INDEX IF NOT EXISTS trades_by_time ON trades (symbol_id, ts_ns);
CREATE TABLE IF NOT EXISTS candles_1m (
    symbol_id INTEGER NOT NULL, open_ms INTEGER NOT NULL, open_tick INTEGER NOT NULL, high_tick INTEGER NOT NULL,
    low_tick INTEGER NOT NULL, close_tick INTEGER NOT NULL, volume_lot INTEGER NOT NULL,
    quote_minor INTEGER NOT NULL, trades INTEGER NOT NULL, taker_buy_lot INTEGER NOT NULL,
    taker_buy_quote_minor INTEGER NOT NULL,
    PRIMARY KEY (symbol_id, open_ms)) WITHOUT ROWID;
"""


@dataclass(slots=True, frozen=True)
class TradeRow:
    """One row of `trades`: a FILL, both sides."""

    symbol_id: int
    trade_id: int
    price_tick: int
    qty_lot: int
    quote_minor: int
    ts_ns: int
    taker_side: int
    taker_order_id: int
    maker_order_id: int
    taker_account_id: int
    maker_account_id: int
    taker_fee_minor: int
    maker_fee_minor: int

    def trade(self) -> Trade:
        """As the edge's public trade (historicalTrades, trades streams)."""
        return Trade(self.trade_id, self.symbol_id, self.price_tick, self.qty_lot, self.quote_minor, self.ts_ns,
                     self.taker_side != Side.BUY)

    def side_of(self, maker: bool) -> OwnTrade:
        """One side's own trade (myTrades): its order, buyer/maker flags, and its fee in the asset it
        received (a buyer receives base, a seller quote: BASE_ASSET / QUOTE_ASSET)."""
        taker_buys = self.taker_side == Side.BUY
        buyer = taker_buys != maker
        return OwnTrade(self.trade(), self.maker_order_id if maker else self.taker_order_id, buyer, maker,
                        self.maker_fee_minor if maker else self.taker_fee_minor, BASE_ASSET if buyer else QUOTE_ASSET)


class HistoryStore:
    @classmethod
    def reader(cls, path: str | os.PathLike) -> HistoryStore:
        """A read-only view for queries (the edge's): no schema made, no projection loaded;
        `apply` is not for it. Raises sqlite3.OperationalError while the file does not exist."""
        self = cls.__new__(cls)
        self.path = os.fspath(path)
        self.db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, isolation_level=None)
        self.last_seq = self._meta("last_seq")
        return self

    def __init__(self, path: str | os.PathLike, keep_closed: int = 1024):
        self.path = os.fspath(path)
        self.db = sqlite3.connect(self.path, isolation_level=None)  # transactions are explicit
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("PRAGMA foreign_keys=OFF")
        self.db.executescript(_SCHEMA)
        self.db.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (SCHEMA_VERSION,))
        self.db.execute("INSERT OR IGNORE INTO meta VALUES ('last_seq', 0)")
        version = self._meta("schema_version")
        if version != SCHEMA_VERSION:
            raise RuntimeError(f"{self.path}: history schema version {version}, this code reads {SCHEMA_VERSION}")
        self.keep_closed = keep_closed
        self._load()

    # --- state -----------------------------------------------------------------------------
    def _meta(self, key: str) -> int:
        return int(self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()[0])

    def _load(self) -> None:
        """The internal projection as the database leaves it: its open orders (what later records
        can still change) and each symbol's newest candle (the only one a later trade can change)."""
        self.last_seq = self._meta("last_seq")
        # no trades / own trades kept: the store has them; books and balances are small
        st = EdgeState(0, keep_closed=self.keep_closed, keep_trades=1, keep_own_trades=1)
        st.books, st.stats = _AutoList(Book), _AutoList(S.SymbolStats)
        st.trades, st.agg_trades = _AutoList(_one), _AutoList(_one)
        st.agg_count, st.last_trade = _AutoList(0), _AutoList(None)
        st.listeners.append(self._on_record)
        open_ = ", ".join(str(int(s)) for s in OPEN_STATUSES)
        for row in self.db.execute(f"SELECT {', '.join(ORDER_COLUMNS)} FROM orders WHERE status IN ({open_})"):
            o = Order(*row)
            st.orders[o.order_id] = o
            st.open_by_account[o.account_id][o.order_id] = o
            if o.client_order_id:
                st.by_client_id[(o.account_id, o.client_order_id)] = o.order_id
        self.state = st
        self._candle: dict[int, S.Candle] = {}
        for row in self.db.execute(f"SELECT {', '.join(CANDLE_COLUMNS)} FROM candles_1m c WHERE open_ms = "
                                   "(SELECT MAX(open_ms) FROM candles_1m WHERE symbol_id = c.symbol_id)"):
            self._candle[row[0]] = S.Candle(*row[1:])
        self._dirty_orders: dict[int, tuple] = {}
        self._new_trades: list[tuple] = []
        self._dirty_candles: dict[tuple[int, int], S.Candle] = {}
        self._seen = 0

    def close(self) -> None:
        self.db.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # --- applying ----------------------------------------------------------------------------
    def apply(self, edge_records, journal_records=None) -> int:
        """Apply report-stream records (RECORD_DTYPE or (n, 128) bytes, journal order) in one
        transaction; those at or below `last_seq` are skipped. `journal_records` (the journal
        records that made them) go to EdgeState.remember_commands first: what results do not
        carry (iceberg, quote amount, STP mode, list legs). Returns the records applied."""
        if journal_records is not None and len(journal_records):
            self.state.remember_commands(journal_records)
        raw = np.ascontiguousarray(edge_records).view(np.uint8).reshape(-1, RB)
        if not len(raw):
            return 0
        recs = raw.view(R.RECORD_DTYPE).reshape(-1)
        old = recs["seq"] <= self.last_seq
        if old.any():
            # their results are in: the extras remembered for those orders will never be taken
            for i in np.flatnonzero(old & np.isin(recs["type"], _RESULTS)):
                self.state.forget_command(decode(raw[i].tobytes()).order_id)
            raw = raw[~old]
        if not len(raw):
            return 0
        self._seen = self.last_seq
        try:
            self.state.apply(raw)
            self.db.execute("BEGIN")
            if self._dirty_orders:
                self.db.executemany(f"INSERT OR REPLACE INTO orders ({', '.join(ORDER_COLUMNS)}) VALUES "
                                    f"({', '.join('?' * len(ORDER_COLUMNS))})", self._dirty_orders.values())
            if self._new_trades:
                self.db.executemany(f"INSERT OR REPLACE INTO trades ({', '.join(TRADE_COLUMNS)}) VALUES "
                                    f"({', '.join('?' * len(TRADE_COLUMNS))})", self._new_trades)
            if self._dirty_candles:
                self.db.executemany(f"INSERT OR REPLACE INTO candles_1m ({', '.join(CANDLE_COLUMNS)}) VALUES "
                                    f"({', '.join('?' * len(CANDLE_COLUMNS))})",
                                    [(sid, c.open_ms, c.open_tick, c.high_tick, c.low_tick, c.close_tick, c.volume_lot,
                                      c.quote_minor, c.trades, c.taker_buy_lot, c.taker_buy_quote_minor)
                                     for (sid, _), c in self._dirty_candles.items()])
            self.db.execute("UPDATE meta SET value = ? WHERE key = 'last_seq'", (self._seen,))
            self.db.execute("COMMIT")
        except BaseException:
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
            extras = self.state.remembered
            self._load()  # the projection as the database has it (commands remembered are kept)
            self.state.remembered = extras
            raise
        self.last_seq = self._seen
        self._dirty_orders, self._new_trades, self._dirty_candles = {}, [], {}
        for s in self.state.stats.values():  # the store keeps the candles; the internal stats grow
            s.minutes.clear()
            s.window.clear()
        return len(raw)

    def _on_record(self, r) -> None:
        """After EdgeState applied `r`: the rows it changed, as they stand now."""
        self._seen = max(self._seen, r.seq)
        t = r.type
        if t in _ORDER_EVENTS:
            self._touch(r.order_id)
        elif t == T.FILL:
            self._touch(r.taker_order_id)
            self._touch(r.maker_order_id)
            self._new_trades.append((r.symbol_id, r.trade_id, r.price_tick, r.qty_lot, r.quote_qty_minor, r.ts_ns,
                                     r.taker_side, r.taker_order_id, r.maker_order_id, r.account_id,
                                     r.maker_account_id, r.taker_fee_minor, r.maker_fee_minor))
            self._on_trade(r.symbol_id, r.ts_ns, r.price_tick, r.qty_lot, r.quote_qty_minor, r.taker_side == Side.BUY)
        elif t == T.TRADE_PREVENTED:
            self._touch(r.taker_order_id)
            self._touch(r.maker_order_id)

    def _touch(self, order_id: int) -> None:
        o = self.state.orders.get(order_id)
        if o is not None:
            self._dirty_orders[order_id] = _ORDER_ROW(o)

    def _on_trade(self, sid: int, ts_ns: int, price: int, qty: int, quote: int, taker_buys: bool) -> None:
        """SymbolStats.on_trade's one-minute candles (a stamp that went backwards joins the newest)."""
        start = ts_ns // 1_000_000 // S.MINUTE_MS * S.MINUTE_MS
        c = self._candle.get(sid)
        if c is None or c.open_ms < start:
            c = self._candle[sid] = S.Candle(start, price, price, price, price)
        c.add(price, qty, quote, taker_buys)
        self._dirty_candles[(sid, c.open_ms)] = c

    # --- queries -----------------------------------------------------------------------------
    def orders(self, account_id: int, symbol_id: int, from_order_id: int | None = None, start_ns: int | None = None,
               end_ns: int | None = None, limit: int = 500) -> list[Order]:
        """allOrders: the account's orders on the symbol (placed in [start_ns, end_ns)), by order id;
        from `from_order_id` the first `limit`, else the latest `limit`."""
        where, args = ["account_id = ?", "symbol_id = ?"], [account_id, symbol_id]
        _range(where, args, "order_id", from_order_id, None)
        _range(where, args, "time_ns", start_ns, end_ns)
        order = "ASC" if from_order_id is not None else "DESC"
        rows = self.db.execute(f"SELECT {', '.join(ORDER_COLUMNS)} FROM orders WHERE {' AND '.join(where)} "
                               f"ORDER BY order_id {order} LIMIT ?", (*args, limit)).fetchall()
        if order == "DESC":
            rows.reverse()
        return [Order(*row) for row in rows]

    def order(self, order_id: int) -> Order | None:
        row = self.db.execute(f"SELECT {', '.join(ORDER_COLUMNS)} FROM orders WHERE order_id = ?",
                              (order_id,)).fetchone()
        return Order(*row) if row is not None else None

    def account_trades(self, account_id: int, symbol_id: int, order_id: int | None = None,
                       from_trade_id: int | None = None, start_ns: int | None = None, end_ns: int | None = None,
                       limit: int = 500) -> list[OwnTrade]:
        """myTrades: the account's sides of trades on the symbol (a self-trade is two: taker first),
        by trade id; from `from_trade_id` the first `limit`, else the latest `limit`."""
        asc = from_trade_id is not None
        out = []
        for maker in (False, True):
            who = "maker" if maker else "taker"
            where, args = [f"{who}_account_id = ?", "symbol_id = ?"], [account_id, symbol_id]
            if order_id is not None:
                where.append(f"{who}_order_id = ?")
                args.append(order_id)
            _range(where, args, "trade_id", from_trade_id, None)
            _range(where, args, "ts_ns", start_ns, end_ns)
            rows = self.db.execute(f"SELECT {', '.join(TRADE_COLUMNS)} FROM trades WHERE {' AND '.join(where)} "
                                   f"ORDER BY trade_id {'ASC' if asc else 'DESC'} LIMIT ?", (*args, limit))
            out.extend((row[1], maker, TradeRow(*row)) for row in rows)
        out.sort(key=lambda x: (x[0], x[1]))
        out = out[:limit] if asc else out[-limit:]
        return [row.side_of(maker) for _, maker, row in out]

    def trade_rows(self, symbol_id: int, from_trade_id: int | None = None, limit: int = 500) -> list[TradeRow]:
        """The symbol's trades by id, both sides: from `from_trade_id` the first `limit`, else the latest."""
        where, args = ["symbol_id = ?"], [symbol_id]
        _range(where, args, "trade_id", from_trade_id, None)
        asc = from_trade_id is not None
        rows = self.db.execute(f"SELECT {', '.join(TRADE_COLUMNS)} FROM trades WHERE {' AND '.join(where)} "
                               f"ORDER BY trade_id {'ASC' if asc else 'DESC'} LIMIT ?", (*args, limit)).fetchall()
        if not asc:
            rows.reverse()
        return [TradeRow(*row) for row in rows]

    def trades(self, symbol_id: int, from_trade_id: int | None = None, limit: int = 500) -> list[Trade]:
        """historicalTrades: public trades (the edge's Trade) by id."""
        return [row.trade() for row in self.trade_rows(symbol_id, from_trade_id, limit)]

    def minute_rows(self, symbol_id: int) -> StoredMinutes:
        """The symbol's one-minute candles, as stats.MinuteRows (klines are made from them)."""
        return StoredMinutes(self.db, symbol_id)

    def candles(self, symbol_id: int, interval: str, start_ms: int | None = None, end_ms: int | None = None,
                limit: int = 500) -> list[S.Candle]:
        """klines, exactly as SymbolStats.klines makes them from the same trades (stats.klines):
        continuous candles of `interval` (quiet ones repeat the previous close) whose one-minute
        rows open in [bucket_start(start_ms), end_ms]; the first `limit` from start_ms, else the last `limit`."""
        if interval not in S.INTERVALS_MS:
            raise ValueError(f"interval {interval!r} (one of {', '.join(S.INTERVALS)})")
        return S.klines(self.minute_rows(symbol_id), interval, start_ms, end_ms, limit)

    def ticker_24h(self, symbol_id: int, now_ns: int) -> Ticker24h:
        """The symbol's trades with ts_ns > now_ns - 24 h, as SymbolStats.ticker_24h makes them."""
        since = now_ns - S.WINDOW_NS
        agg = self.db.execute("SELECT COUNT(*), MAX(price_tick), MIN(price_tick), SUM(qty_lot), SUM(quote_minor), "
                              "MIN(trade_id), MAX(trade_id) FROM trades WHERE symbol_id = ? AND ts_ns > ?",
                              (symbol_id, since)).fetchone()
        before = self.db.execute("SELECT price_tick FROM trades WHERE symbol_id = ? AND ts_ns <= ? "
                                 "ORDER BY ts_ns DESC, trade_id DESC LIMIT 1", (symbol_id, since)).fetchone()
        prev = before[0] if before is not None else 0
        count = agg[0]
        if not count:
            return Ticker24h(0, 0, 0, 0, 0, 0, 0, -1, -1, 0, 0, 0, prev)
        first = self.db.execute("SELECT price_tick, ts_ns FROM trades WHERE symbol_id = ? AND trade_id = ?",
                                (symbol_id, agg[5])).fetchone()
        last = self.db.execute("SELECT price_tick, qty_lot, ts_ns FROM trades WHERE symbol_id = ? AND trade_id = ?",
                               (symbol_id, agg[6])).fetchone()
        return Ticker24h(first[0], agg[1], agg[2], last[0], last[1], agg[3], agg[4], agg[5], agg[6], count, first[1],
                         last[2], prev)

    def ticker_24h_as_of(self, symbol_id: int, now_ns: int) -> tuple[Ticker24h, int]:
        """ticker_24h and the symbol's last trade id in the store (-1: none), from one snapshot (a
        read transaction: the history process may commit between two statements otherwise)."""
        self.db.execute("BEGIN")
        try:
            ticker = self.ticker_24h(symbol_id, now_ns)
            last = self.db.execute("SELECT MAX(trade_id) FROM trades WHERE symbol_id = ?", (symbol_id,)).fetchone()[0]
        finally:
            self.db.execute("COMMIT")
        return ticker, -1 if last is None else last

    def counts(self) -> dict[str, int]:
        return {t: self.db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
                for t in ("orders", "trades", "candles_1m")}


_CANDLE_SELECT = f"SELECT {', '.join(CANDLE_COLUMNS[1:])} FROM candles_1m WHERE symbol_id = ? AND "


class StoredMinutes:
    """stats.MinuteRows over `candles_1m` for one symbol."""

    def __init__(self, db: sqlite3.Connection, symbol_id: int):
        self.db, self.symbol_id = db, symbol_id

    def minutes_in(self, lo_ms: int, hi_ms: int) -> list[S.Candle]:
        return [S.Candle(*row) for row in self.db.execute(
            _CANDLE_SELECT + "open_ms >= ? AND open_ms < ? ORDER BY open_ms", (self.symbol_id, lo_ms, hi_ms))]

    def first_minute(self, lo_ms: int, hi_ms: int) -> S.Candle | None:
        row = self.db.execute(_CANDLE_SELECT + "open_ms >= ? AND open_ms < ? ORDER BY open_ms LIMIT 1",
                              (self.symbol_id, lo_ms, hi_ms)).fetchone()
        return S.Candle(*row) if row is not None else None

    def last_minute_before(self, hi_ms: int) -> S.Candle | None:
        row = self.db.execute(_CANDLE_SELECT + "open_ms < ? ORDER BY open_ms DESC LIMIT 1",
                              (self.symbol_id, hi_ms)).fetchone()
        return S.Candle(*row) if row is not None else None


def _range(where: list, args: list, column: str, lo: int | None, hi: int | None) -> None:
    if lo is not None:
        where.append(f"{column} >= ?")
        args.append(lo)
    if hi is not None:
        where.append(f"{column} < ?")
        args.append(hi)


class _AutoList(dict):
    """A per-symbol list indexed by symbol id, grown on first use (the store knows no config)."""

    def __init__(self, default):
        super().__init__()
        self._default = default

    def __missing__(self, key):
        v = self[key] = self._default() if callable(self._default) else self._default
        return v


def _one() -> collections.deque:
    return collections.deque(maxlen=1)


def catch_up(store: HistoryStore, make_replayer: Callable, journal_dir: str, batch_records: int = 65_536):
    """Bring `store` to the journal's end: replay the whole journal through fresh engines (their
    state is not in the store; server.bootstrap does the same) and apply what they report, in
    transactions of about `batch_records` journal records; what the store has is skipped.
    Returns (the replayer, the next journal sequence): a caller that follows the journal keeps
    feeding that replayer from a JournalTail at that sequence."""
    rp = make_replayer()
    reader = JournalReader(journal_dir)
    journal, edge, pending = [], [], 0
    for batch in reader.batches():
        journal.append(batch)
        edge.append(rp.feed(batch))
        pending += len(batch)
        if pending >= batch_records:
            store.apply(R.concat(edge), R.concat(journal))
            journal, edge, pending = [], [], 0
    if pending:
        store.apply(R.concat(edge), R.concat(journal))
    return rp, reader.next_seq
