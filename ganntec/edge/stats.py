"""Per-symbol trade statistics the edge keeps from the fills it sees: one-minute candles (every
kline interval is made from them) and the trades of the last 24 hours (ticker/24hr, avgPrice).
Integers only (ticks, lots, quote minor units); times are the trades' engine stamps, and the
query time is an input.

Kline buckets open at multiples of the interval since the epoch (UTC), weeks on Mondays, months
on the 1st, as Binance's do; an interval without trades repeats the previous close with zero
volume (Binance's klines are continuous)."""

from __future__ import annotations

import bisect
import collections
import datetime as dt
from dataclasses import dataclass

MINUTE_MS = 60_000
DAY_MS = 1440 * MINUTE_MS
WINDOW_NS = DAY_MS * 1_000_000
MONDAY_OFFSET_MS = 4 * DAY_MS  # 1970-01-01 was a Thursday; 1970-01-05 a Monday
INTERVALS_MS = {"1m": MINUTE_MS, "3m": 3 * MINUTE_MS, "5m": 5 * MINUTE_MS, "15m": 15 * MINUTE_MS,
                "30m": 30 * MINUTE_MS, "1h": 60 * MINUTE_MS, "2h": 120 * MINUTE_MS, "4h": 240 * MINUTE_MS,
                "6h": 360 * MINUTE_MS, "8h": 480 * MINUTE_MS, "12h": 720 * MINUTE_MS, "1d": DAY_MS,
                "3d": 3 * DAY_MS, "1w": 7 * DAY_MS, "1M": 0}
INTERVALS = tuple(INTERVALS_MS)


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

    def merge(self, c: "Candle") -> None:
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
        d = dt.datetime.fromtimestamp(t_ms / 1000, dt.timezone.utc)
        return int(dt.datetime(d.year, d.month, 1, tzinfo=dt.timezone.utc).timestamp()) * 1000
    step = INTERVALS_MS[interval]
    if interval == "1w":
        return (t_ms - MONDAY_OFFSET_MS) // step * step + MONDAY_OFFSET_MS
    return t_ms // step * step


def next_bucket(interval: str, start_ms: int) -> int:
    if interval == "1M":
        d = dt.datetime.fromtimestamp(start_ms / 1000, dt.timezone.utc)
        y, m = (d.year + 1, 1) if d.month == 12 else (d.year, d.month + 1)
        return int(dt.datetime(y, m, 1, tzinfo=dt.timezone.utc).timestamp()) * 1000
    return start_ms + INTERVALS_MS[interval]


class SymbolStats:
    def __init__(self):
        self.minutes: list[Candle] = []  # one per minute with trades, in time order
        self.window: collections.deque = collections.deque()  # (ts_ns, price, qty, quote, trade_id)
        self.before_window_tick = 0  # the last price that left the window (prevClosePrice)

    def on_trade(self, ts_ns: int, price: int, qty: int, quote: int, taker_buys: bool, trade_id: int) -> None:
        t_ms = ts_ns // 1_000_000
        start = t_ms // MINUTE_MS * MINUTE_MS
        if self.minutes and self.minutes[-1].open_ms >= start:  # stamps never go backwards
            self.minutes[-1].add(price, qty, quote, taker_buys)
        else:
            c = Candle(start, price, price, price, price)
            c.add(price, qty, quote, taker_buys)
            self.minutes.append(c)
        self.window.append((ts_ns, price, qty, quote, trade_id))
        while self.window and self.window[0][0] <= ts_ns - WINDOW_NS:
            self.before_window_tick = self.window.popleft()[1]

    def klines(self, interval: str, start_ms: int | None, end_ms: int | None, limit: int) -> list[Candle]:
        """Continuous candles of `interval` overlapping [start_ms, end_ms]: the first `limit`
        from start_ms if it is given, else the last `limit` up to end_ms."""
        mins = self.minutes
        if not mins:
            return []
        lo = 0 if start_ms is None else bisect.bisect_left(mins, bucket_start(interval, start_ms), key=lambda c: c.open_ms)
        hi = len(mins) if end_ms is None else bisect.bisect_right(mins, end_ms, key=lambda c: c.open_ms)
        merged: list[Candle] = []
        for c in mins[lo:hi]:
            b = bucket_start(interval, c.open_ms)
            if merged and merged[-1].open_ms == b:
                merged[-1].merge(c)
            else:
                merged.append(Candle(b, c.open_tick, c.high_tick, c.low_tick, c.close_tick, c.volume_lot,
                                     c.quote_minor, c.trades, c.taker_buy_lot, c.taker_buy_quote_minor))
        out: list[Candle] = []
        for c in merged:  # fill the quiet intervals between traded ones
            while out and next_bucket(interval, out[-1].open_ms) < c.open_ms:
                p = out[-1].close_tick
                out.append(Candle(next_bucket(interval, out[-1].open_ms), p, p, p, p))
            out.append(c)
        return out[:limit] if start_ms is not None else out[-limit:]

    def last_24h(self, now_ns: int) -> list[tuple]:
        return [t for t in self.window if t[0] > now_ns - WINDOW_NS]
