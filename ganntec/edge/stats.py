"""Per-symbol trade statistics the edge keeps from the fills it sees: one-minute candles (every
kline interval is made from them) for the last `keep_minutes` (older ones are in the history
store), and the trades of the last 24 hours (ticker/24hr, avgPrice). Integers only (ticks, lots,
quote minor units); times are the trades' engine stamps, and the query time is an input.

Kline buckets open at multiples of the interval since the epoch (UTC), weeks on Mondays, months
on the 1st, as Binance's do; an interval without trades repeats the previous close with zero
volume (Binance's klines are continuous). `klines` makes them from any `MinuteRows` (memory, the
history store, or the two spliced), so every source gives the same candles."""

from __future__ import annotations

import bisect
import collections
import dataclasses
import datetime as dt
import operator
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

MINUTE_MS = 60_000
DAY_MS = 1440 * MINUTE_MS
WINDOW_NS = DAY_MS * 1_000_000
MONDAY_OFFSET_MS = 4 * DAY_MS  # 1970-01-01 was a Thursday; 1970-01-05 a Monday
INTERVALS_MS = {"1m": MINUTE_MS, "3m": 3 * MINUTE_MS, "5m": 5 * MINUTE_MS, "15m": 15 * MINUTE_MS,
                "30m": 30 * MINUTE_MS, "1h": 60 * MINUTE_MS, "2h": 120 * MINUTE_MS, "4h": 240 * MINUTE_MS,
                "6h": 360 * MINUTE_MS, "8h": 480 * MINUTE_MS, "12h": 720 * MINUTE_MS, "1d": DAY_MS,
                "3d": 3 * DAY_MS, "1w": 7 * DAY_MS, "1M": 0}
INTERVALS = tuple(INTERVALS_MS)
KEEP_MINUTES = 1500  # 25 hours: every 24-hour or today's-candle query is answered from memory
# Later than any trade, early enough for datetime (1M buckets) and SQLite integers: open-ended
# ranges end here, and query times beyond it are cut to it.
FOREVER_MS = 253_370_764_800_000  # 9999-01-01


@dataclass(slots=True)
class Candle:
    open_ms: int
    open_tick: int
    high_tick: int
    low_tick: int
    close_tick: int
    volume_lot: int = 0
    quote_minor: int = 0
    trades: int = 0
    taker_buy_lot: int = 0
    taker_buy_quote_minor: int = 0

    def add(self, price: int, qty: int, quote: int, taker_buys: bool) -> None:
        self.high_tick = max(self.high_tick, price)
        self.low_tick = min(self.low_tick, price)
        self.close_tick = price
        self.volume_lot += qty
        self.quote_minor += quote
        self.trades += 1
        if taker_buys:
            self.taker_buy_lot += qty
            self.taker_buy_quote_minor += quote

    def merge(self, c: Candle) -> None:
        self.high_tick = max(self.high_tick, c.high_tick)
        self.low_tick = min(self.low_tick, c.low_tick)
        self.close_tick = c.close_tick
        self.volume_lot += c.volume_lot
        self.quote_minor += c.quote_minor
        self.trades += c.trades
        self.taker_buy_lot += c.taker_buy_lot
        self.taker_buy_quote_minor += c.taker_buy_quote_minor


def bucket_start(interval: str, t_ms: int) -> int:
    if interval == "1M":
        d = dt.datetime.fromtimestamp(t_ms / 1000, dt.UTC)
        return int(dt.datetime(d.year, d.month, 1, tzinfo=dt.UTC).timestamp()) * 1000
    step = INTERVALS_MS[interval]
    if interval == "1w":
        return (t_ms - MONDAY_OFFSET_MS) // step * step + MONDAY_OFFSET_MS
    return t_ms // step * step


def next_bucket(interval: str, start_ms: int) -> int:
    if interval == "1M":
        d = dt.datetime.fromtimestamp(start_ms / 1000, dt.UTC)
        y, m = (d.year + 1, 1) if d.month == 12 else (d.year, d.month + 1)
        return int(dt.datetime(y, m, 1, tzinfo=dt.UTC).timestamp()) * 1000
    return start_ms + INTERVALS_MS[interval]


@dataclass(slots=True, frozen=True)
class Ticker24h:
    """Rolling 24 hours of one symbol's trades (those with ts_ns > now - 24 h; none later is left
    out, so a trade stamped a little after the caller's clock is in), from memory
    (SymbolStats.ticker_24h) or the history store (HistoryStore.ticker_24h). Without trades:
    every tick/volume/time 0, ids -1."""

    open_tick: int
    high_tick: int
    low_tick: int
    last_tick: int
    last_qty_lot: int
    volume_lot: int
    quote_minor: int
    first_trade_id: int
    last_trade_id: int
    count: int
    first_ts_ns: int
    last_ts_ns: int
    prev_close_tick: int  # the last trade at or before the window's start (0: none)


def join_tickers(stored: Ticker24h, newer: list[tuple]) -> Ticker24h:
    """`stored` (the history store's 24 hours, over the trades it has) extended by the window's
    trades it does not have yet: `newer`, memory's (ts_ns, price, qty, quote, trade_id) after the
    store's last trade id, in order."""
    if not newer:
        return stored
    first, last = newer[0], newer[-1]
    high, low = max(t[1] for t in newer), min(t[1] for t in newer)
    volume, quote = sum(t[2] for t in newer), sum(t[3] for t in newer)
    if not stored.count:
        return Ticker24h(first[1], high, low, last[1], last[2], volume, quote, first[4], last[4], len(newer),
                         first[0], last[0], stored.prev_close_tick)
    return Ticker24h(stored.open_tick, max(stored.high_tick, high), min(stored.low_tick, low), last[1], last[2],
                     stored.volume_lot + volume, stored.quote_minor + quote, stored.first_trade_id, last[4],
                     stored.count + len(newer), stored.first_ts_ns, last[0], stored.prev_close_tick)


class MinuteRows(Protocol):
    """One-minute candles of one symbol by open time (ms); ranges are [lo_ms, hi_ms)."""

    def minutes_in(self, lo_ms: int, hi_ms: int) -> Iterable[Candle]:
        """Those opening in the range, in time order."""

    def first_minute(self, lo_ms: int, hi_ms: int) -> Candle | None:
        """The first opening in the range."""

    def last_minute_before(self, hi_ms: int) -> Candle | None:
        """The last opening before hi_ms."""


def continuous(interval: str, minutes: Iterable[Candle]) -> list[Candle]:
    """Candles of `interval` from one-minute candles in time order: those of one bucket merged
    into a new candle (the rows are not changed), and between two traded buckets one candle per
    quiet bucket, repeating the previous close without volume."""
    out: list[Candle] = []
    for c in minutes:
        b = bucket_start(interval, c.open_ms)
        if out and out[-1].open_ms == b:
            out[-1].merge(c)
            continue
        while out and (quiet := next_bucket(interval, out[-1].open_ms)) < b:
            p = out[-1].close_tick
            out.append(Candle(quiet, p, p, p, p))
        out.append(dataclasses.replace(c, open_ms=b))
    return out


def klines(rows: MinuteRows, interval: str, start_ms: int | None, end_ms: int | None, limit: int) -> list[Candle]:
    """Continuous candles of `interval` made from the one-minute `rows` opening in
    [bucket_start(start_ms), end_ms]: the first `limit` from start_ms if it is given, else the
    last `limit` up to end_ms. Reads the rows of those candles only, and one more beyond them
    (whose close or open bounds the quiet buckets at that end)."""
    if limit <= 0:
        return []
    end = FOREVER_MS if end_ms is None else min(end_ms + 1, FOREVER_MS)
    if start_ms is not None:
        first = rows.first_minute(bucket_start(interval, min(start_ms, FOREVER_MS)), end)
        if first is None:
            return []
        hi = bucket_start(interval, first.open_ms)
        for _ in range(limit):  # the end of the `limit` buckets from the first traded one
            hi = next_bucket(interval, hi)
        picked = list(rows.minutes_in(first.open_ms, min(hi, end)))
        after = rows.first_minute(hi, end)
        if after is not None:  # a later trade: the quiet buckets up to it are candles too
            picked.append(after)
        return continuous(interval, picked)[:limit]
    last = rows.last_minute_before(end)
    if last is None:
        return []
    lo = bucket_start(interval, last.open_ms)
    for _ in range(limit - 1):  # the first of the last `limit` buckets
        lo = bucket_start(interval, lo - 1)
    before = rows.last_minute_before(lo)  # its close fills the quiet buckets before the first traded one
    picked = [before] if before is not None else []
    picked.extend(rows.minutes_in(lo, end))
    return continuous(interval, picked)[-limit:]


_OPEN_MS = operator.attrgetter("open_ms")


class SymbolStats:
    """A symbol's recent one-minute candles (a MinuteRows) and 24-hour trade window."""

    def __init__(self, keep_minutes: int = KEEP_MINUTES):
        self.keep_minutes = keep_minutes
        # one per minute with trades, in time order: those opening at most keep_minutes before the newest
        self.minutes: list[Candle] = []
        # None while no minute was dropped (memory has them all); else the open of the oldest kept,
        # every minute before it being in the history store only
        self.kept_from_ms: int | None = None
        self.window: collections.deque = collections.deque()  # (ts_ns, price, qty, quote, trade_id)
        self.before_window_tick = 0  # the last price that left the window (prevClosePrice)

    def on_trade(self, ts_ns: int, price: int, qty: int, quote: int, taker_buys: bool, trade_id: int) -> None:
        t_ms = ts_ns // 1_000_000
        start = t_ms // MINUTE_MS * MINUTE_MS
        mins = self.minutes
        if mins and mins[-1].open_ms >= start:  # stamps never go backwards
            mins[-1].add(price, qty, quote, taker_buys)
        else:
            c = Candle(start, price, price, price, price)
            c.add(price, qty, quote, taker_buys)
            mins.append(c)
            cutoff = start - self.keep_minutes * MINUTE_MS
            if mins[0].open_ms < cutoff:
                # a list, not a deque, so that lookups bisect in O(log n); this shift of at most
                # keep_minutes pointers happens once per traded minute
                del mins[:bisect.bisect_left(mins, cutoff, key=_OPEN_MS)]
                self.kept_from_ms = mins[0].open_ms
        self.window.append((ts_ns, price, qty, quote, trade_id))
        while self.window and self.window[0][0] <= ts_ns - WINDOW_NS:
            self.before_window_tick = self.window.popleft()[1]

    # --- MinuteRows over what memory keeps ------------------------------------------------------
    def minutes_in(self, lo_ms: int, hi_ms: int) -> list[Candle]:
        mins = self.minutes
        return mins[bisect.bisect_left(mins, lo_ms, key=_OPEN_MS):bisect.bisect_left(mins, hi_ms, key=_OPEN_MS)]

    def first_minute(self, lo_ms: int, hi_ms: int) -> Candle | None:
        i = bisect.bisect_left(self.minutes, lo_ms, key=_OPEN_MS)
        return self.minutes[i] if i < len(self.minutes) and self.minutes[i].open_ms < hi_ms else None

    def last_minute_before(self, hi_ms: int) -> Candle | None:
        i = bisect.bisect_left(self.minutes, hi_ms, key=_OPEN_MS)
        return self.minutes[i - 1] if i else None

    def klines(self, interval: str, start_ms: int | None, end_ms: int | None, limit: int) -> list[Candle]:
        """`klines` from memory alone (what it still keeps)."""
        return klines(self, interval, start_ms, end_ms, limit)

    # --- the 24-hour window ---------------------------------------------------------------------
    def last_24h(self, now_ns: int) -> list[tuple]:
        return [t for t in self.window if t[0] > now_ns - WINDOW_NS]

    def ticker_24h(self, now_ns: int) -> Ticker24h:
        inside = self.last_24h(now_ns)
        # stamps never go backwards: the trades out of the 24 hours at now_ns are the window's oldest
        left = len(self.window) - len(inside)
        prev = self.window[left - 1][1] if left else self.before_window_tick
        if not inside:
            return Ticker24h(0, 0, 0, 0, 0, 0, 0, -1, -1, 0, 0, 0, prev)
        first, last = inside[0], inside[-1]
        return Ticker24h(first[1], max(t[1] for t in inside), min(t[1] for t in inside), last[1], last[2],
                         sum(t[2] for t in inside), sum(t[3] for t in inside), first[4], last[4], len(inside),
                         first[0], last[0], prev)


class Spliced:
    """The one-minute rows of a symbol whose memory (`newer`) dropped its oldest: those before
    the oldest it kept from `older` (the history store), the rest from memory. The store may lag
    memory by a few records, but has every minute memory dropped (unless the history process was
    down), so the seam is memory's first kept minute. `older` is only asked about times before it."""

    def __init__(self, older: MinuteRows, newer: SymbolStats):
        assert newer.kept_from_ms is not None, "memory has every minute: nothing to splice"
        self.older, self.newer, self.seam_ms = older, newer, newer.kept_from_ms

    def minutes_in(self, lo_ms: int, hi_ms: int) -> list[Candle]:
        old = list(self.older.minutes_in(lo_ms, min(hi_ms, self.seam_ms))) if lo_ms < self.seam_ms else []
        return old + self.newer.minutes_in(max(lo_ms, self.seam_ms), hi_ms)

    def first_minute(self, lo_ms: int, hi_ms: int) -> Candle | None:
        if lo_ms < self.seam_ms:
            c = self.older.first_minute(lo_ms, min(hi_ms, self.seam_ms))
            if c is not None:
                return c
        return self.newer.first_minute(max(lo_ms, self.seam_ms), hi_ms)

    def last_minute_before(self, hi_ms: int) -> Candle | None:
        c = self.newer.last_minute_before(hi_ms)  # memory holds rows from the seam on only
        return c if c is not None else self.older.last_minute_before(min(hi_ms, self.seam_ms))
