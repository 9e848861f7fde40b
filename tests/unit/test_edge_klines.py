"""Klines and the 24-hour ticker from an edge whose memory keeps only its recent one-minute
candles: what memory dropped comes from the history store, spliced at memory's first kept
minute, and the candles equal those of a memory that keeps every minute; without a store the
edge answers from what it keeps. The ticker stays on memory's 24-hour window and equals the
store's. Synthetic trades for SymbolStats alone; real in-process engines for the endpoints."""

from __future__ import annotations

import asyncio
import dataclasses
import operator

import pytest
from aiohttp.test_utils import TestClient, TestServer
from history_flow import (
    BTCUSDT,
    CFG,
    ETHUSDT,
    HOUR,
    MIDS,
    T0,
    Flow,
    feed,
    fill,
    klines_by_definition,
    projection,
    reference,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ganntec.edge import market
from ganntec.edge import stats as S
from ganntec.edge.app import make_app
from ganntec.edge.appkeys import HISTORY, STATE, SYMBOLS_BY_ID
from ganntec.history.store import HistoryStore
from ganntec.shm import records as R
from ganntec.shm.records import OrderType, Side

KEEP = 90  # minutes the bounded edge keeps
MS = 1_000_000  # ns
MINUTE, DAY = S.MINUTE_MS, S.DAY_MS
T0_MS = T0 // MS
GAPS_NS = [0, MS, 10**9, 20 * 10**9, 60 * 10**9, 7 * 60 * 10**9, 50 * 60 * 10**9, 3 * HOUR, 20 * HOUR, 50 * HOUR]


def moments(points: list[int]):
    """Query times: none, near a given one (a candle's open, the seam), or anywhere around."""
    near = st.builds(operator.add, st.sampled_from(points),
                     st.sampled_from([-DAY, -HOUR // MS, -MINUTE - 1, -MINUTE, -1, 0, 1, MINUTE - 1, MINUTE,
                                      HOUR // MS, DAY]))
    return st.one_of(st.none(), near, st.integers(T0_MS - 40 * DAY, T0_MS + 60 * DAY))


def kline_query(data, points: list[int]) -> tuple[str, int | None, int | None, int]:
    interval = data.draw(st.sampled_from(S.INTERVALS))
    start, end = data.draw(moments(points)), data.draw(moments(points))
    if start is not None and end is not None and end < start:
        start, end = end, start
    limit = data.draw(st.one_of(st.integers(1, 6), st.integers(1, 1000)))
    return interval, start, end, limit


def kept_only(memory: S.SymbolStats) -> S.SymbolStats:
    """A memory that never dropped anything and holds exactly `memory`'s minutes."""
    whole = S.SymbolStats(keep_minutes=1 << 40)
    whole.minutes = list(memory.minutes)
    return whole


class BeforeSeam:
    """The store's stand-in: `rows`, failing any question about a time at or after `seam_ms`
    (memory answers for those), and counting the questions."""

    def __init__(self, rows: S.MinuteRows, seam_ms: int):
        self.rows, self.seam_ms, self.asked = rows, seam_ms, 0

    def _ask(self, hi_ms: int) -> None:
        assert hi_ms <= self.seam_ms
        self.asked += 1

    def minutes_in(self, lo_ms: int, hi_ms: int):
        self._ask(hi_ms)
        return self.rows.minutes_in(lo_ms, hi_ms)

    def first_minute(self, lo_ms: int, hi_ms: int):
        self._ask(hi_ms)
        return self.rows.first_minute(lo_ms, hi_ms)

    def last_minute_before(self, hi_ms: int):
        self._ask(hi_ms)
        return self.rows.last_minute_before(hi_ms)


# --- SymbolStats alone ------------------------------------------------------------------------
TRADES = st.lists(st.tuples(st.sampled_from(GAPS_NS), st.integers(90, 110), st.integers(1, 9), st.booleans()),
                  min_size=1, max_size=200)


@settings(max_examples=200, deadline=None)
@given(TRADES, st.integers(0, 150), st.data())
def test_bounded_memory_spliced_with_everything_equals_unbounded(trades, keep, data):
    bounded, whole = S.SymbolStats(keep_minutes=keep), S.SymbolStats(keep_minutes=1 << 40)
    ts = T0
    for trade_id, (gap, price, qty, taker_buys) in enumerate(trades, 1):
        ts += gap
        for s in (bounded, whole):
            s.on_trade(ts, price, qty, qty * price, taker_buys, trade_id)
        assert len(bounded.minutes) <= keep + 1
        # exactly the minutes opening at most `keep` before the newest are kept
        newest = whole.minutes[-1].open_ms
        assert bounded.minutes == [m for m in whole.minutes if m.open_ms >= newest - keep * MINUTE]
        dropped = len(bounded.minutes) < len(whole.minutes)
        assert bounded.kept_from_ms == (bounded.minutes[0].open_ms if dropped else None)
        assert bounded.window == whole.window and bounded.before_window_tick == whole.before_window_tick
    opens = [m.open_ms for m in whole.minutes]
    seam = bounded.kept_from_ms
    # the store's part: `whole` has every minute, asked only about those memory dropped
    store = BeforeSeam(whole, seam) if seam is not None else None
    rows = S.Spliced(store, bounded) if seam is not None else bounded
    for _ in range(8):
        interval, start, end, limit = kline_query(data, opens + ([seam] if seam else []))
        asked = store.asked if store else 0
        want = klines_by_definition(whole.minutes, interval, start, end, limit)
        assert S.klines(rows, interval, start, end, limit) == whole.klines(interval, start, end, limit) == want, \
            (interval, start, end, limit)
        assert bounded.klines(interval, start, end, limit) == kept_only(bounded).klines(interval, start, end, limit)
        if seam is None or (start is not None and S.bucket_start(interval, start) >= seam):
            assert bounded.klines(interval, start, end, limit) == want  # within memory: no store needed
            assert store is None or store.asked == asked


def test_continuous_merges_fills_and_leaves_rows_alone():
    rows = [S.Candle(0, 10, 12, 9, 11, 3, 30, 2, 1, 10), S.Candle(MINUTE, 11, 11, 8, 8, 1, 8, 1),
            S.Candle(5 * MINUTE, 20, 20, 20, 20, 2, 40, 1, 2, 40)]
    before = [dataclasses.replace(r) for r in rows]
    assert S.continuous("3m", rows) == [S.Candle(0, 10, 12, 8, 8, 4, 38, 3, 1, 10),
                                        S.Candle(3 * MINUTE, 20, 20, 20, 20, 2, 40, 1, 2, 40)]
    assert S.continuous("1m", rows)[2:5] == [S.Candle(2 * MINUTE, 8, 8, 8, 8), S.Candle(3 * MINUTE, 8, 8, 8, 8),
                                             S.Candle(4 * MINUTE, 8, 8, 8, 8)]
    assert rows == before


def test_far_future_query_times_are_answered():
    s = S.SymbolStats()
    s.on_trade(T0, 100, 1, 100, True, 1)
    far = (1 << 63) - 1
    for interval in ("1m", "1M"):
        assert s.klines(interval, far, None, 10) == [] and s.klines(interval, None, far, 1)[0].close_tick == 100


# --- the edge's endpoints over real engines ---------------------------------------------------
GROUPS = st.lists(st.tuples(st.sampled_from(GAPS_NS), st.sampled_from([BTCUSDT, ETHUSDT]), st.integers(0, 20),
                            st.integers(0, 40), st.booleans(), st.integers(1, 2)), min_size=5, max_size=40)


def trade(f: Flow, gap_ns: int, sym: int, offset: int, extra_lots: int, taker_buys: bool, makers: int) -> None:
    """`makers` resting orders one tick apart, then a MARKET taking them all."""
    mid, lots, _ = MIDS[sym]
    lots += extra_lots
    maker_side, step = (Side.SELL, 1) if taker_buys else (Side.BUY, -1)
    for k in range(makers):
        f.new(1, maker_side, mid + offset + k * step, lots, sym, dt_ns=max(gap_ns, MS) if k == 0 else MS)
    f.new(2, Side.BUY if taker_buys else Side.SELL, 0, lots * makers, sym, OrderType.MARKET, 0)


def edge_app(state, store, clock: list[int]):
    app = make_app(CFG, clock_ms=lambda: clock[0], state=state)
    app[HISTORY] = lambda: store
    return app


def klines_json(app, sym: int, interval: str, start: int | None, end: int | None, limit: int) -> list:
    q = {"symbol": CFG.symbols[sym].name, "interval": interval, "limit": str(limit)}
    q.update({k: str(v) for k, v in (("startTime", start), ("endTime", end)) if v is not None})
    return market.klines(app, q)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(GROUPS, st.integers(0, 39), st.data())
def test_edge_klines_from_memory_and_store_equal_unbounded_memory(tmp_path_factory, groups, long_gap_at, data):
    groups = list(groups)
    at = long_gap_at % len(groups)
    groups[at] = (2 * DAY * MS, *groups[at][1:])  # days apart, whatever else was drawn
    f = Flow()
    for g in groups:
        trade(f, *g)
    bounded, whole = projection(KEEP), projection()
    clock = [T0_MS]
    with HistoryStore(tmp_path_factory.mktemp("klines") / "history.sqlite") as store:
        app = edge_app(bounded, store, clock)
        for i, step in enumerate(f.steps):
            feed(bounded, [step])
            feed(whole, [step])
            assert all(len(s.minutes) <= KEEP + 1 for s in bounded.stats)
            if i == len(f.steps) - 1:
                break  # the store one step behind memory, as it may be
            now_ms = max(T0_MS, int(R.as_records(step[1])["ts_ns"].max(initial=0)) // MS)  # the step's time
            clock[0] = now_ms
            for sym in (BTCUSDT, ETHUSDT):  # the store behind: REST joins the trades it lacks from memory
                u = app[SYMBOLS_BY_ID][sym]
                assert market.ticker_24hr(app, {"symbol": u.name}) == market.ticker_json(
                    u, bounded.stats[sym].ticker_24h(now_ms * MS), bounded.books[sym], now_ms * MS)
            fill(f, store, i, i + 1)
            # the 24-hour ticker: memory's and the store's (REST), now and as time passes without trades
            for idle in (0, 1, 5 * HOUR // MS, DAY - 1, DAY, 3 * DAY):
                clock[0] = now_ms + idle
                for sym in (BTCUSDT, ETHUSDT):
                    now_ns = clock[0] * MS
                    stored = store.ticker_24h(sym, now_ns)
                    assert bounded.stats[sym].ticker_24h(now_ns) == stored
                    u = app[SYMBOLS_BY_ID][sym]
                    assert market.ticker_24hr(app, {"symbol": u.name}) == market.ticker_json(
                        u, stored, bounded.books[sym], now_ns)
        assert whole.stats[BTCUSDT].minutes or whole.stats[ETHUSDT].minutes
        reference_app = edge_app(whole, None, clock)
        alone_app = edge_app(bounded, None, clock)  # the history store unavailable
        kept_app = edge_app(projection(), None, clock)
        kept_app[STATE].stats = [kept_only(s) for s in bounded.stats]
        for sym in (BTCUSDT, ETHUSDT):
            seam = bounded.stats[sym].kept_from_ms
            points = [m.open_ms for m in whole.stats[sym].minutes] + ([seam] if seam else []) or [T0_MS]
            for _ in range(6):
                q = kline_query(data, points)
                assert market.candles(app, sym, *q) == klines_by_definition(whole.stats[sym].minutes, *q), (sym, q, seam)
                want = klines_json(reference_app, sym, *q)
                assert klines_json(app, sym, *q) == want
                alone = klines_json(alone_app, sym, *q)
                assert alone == klines_json(kept_app, sym, *q)
                if seam is None or (q[1] is not None and S.bucket_start(q[0], q[1]) >= seam):
                    assert alone == want


def scripted_days() -> Flow:
    """A trade every 7 minutes for three days, BTCUSDT."""
    f = Flow()
    for k in range(3 * 24 * 60 // 7):
        trade(f, 7 * 60 * 10**9, BTCUSDT, k % 13, k % 5, k % 3 == 0, 1 + k % 2)
    return f


def test_rest_klines_read_the_history_file(tmp_path):
    """Through make_app's history reader (a read-only connection to the history process's file),
    over HTTP: the whole three days; without the file, memory's last 90 minutes."""
    f = scripted_days()
    path = tmp_path / "history.sqlite"
    with HistoryStore(path) as store:
        fill(f, store)
    bounded, whole = feed(projection(KEEP), f.steps), reference(f)
    assert bounded.stats[BTCUSDT].kept_from_ms is not None and len(bounded.stats[BTCUSDT].minutes) <= KEEP + 1

    def get(app, path):
        async def go():
            async with TestClient(TestServer(app)) as client:
                r = await client.get(path)
                return r.status, await r.json()
        return asyncio.run(go())

    query = f"/api/v3/klines?symbol=BTCUSDT&interval=1h&startTime={T0_MS}&limit=1000"
    clock = lambda: f.ts // MS
    status, want = get(make_app(CFG, clock_ms=clock, state=whole), query)
    minutes = whole.stats[BTCUSDT].minutes
    hours = (S.bucket_start("1h", minutes[-1].open_ms) - S.bucket_start("1h", minutes[0].open_ms)) // (HOUR // MS)
    assert status == 200 and len(want) == hours + 1 and sum(k[8] for k in want) == sum(m.trades for m in minutes)
    assert get(make_app(CFG, clock_ms=clock, state=bounded, history_path=str(path)), query) == (200, want)
    status, alone = get(make_app(CFG, clock_ms=clock, state=bounded, history_path=str(tmp_path / "none.sqlite")),
                        query)
    assert status == 200 and 1 <= len(alone) <= 3 and alone[-1] == want[-1]
    # the last day's candles and the ticker need no store
    last_day = "/api/v3/klines?symbol=BTCUSDT&interval=15m&limit=4"
    assert get(make_app(CFG, clock_ms=clock, state=bounded), last_day) == get(
        make_app(CFG, clock_ms=clock, state=whole), last_day)


@pytest.mark.parametrize("keep", [0, 1, 1500])
def test_memory_bound_over_days(keep):
    s = S.SymbolStats(keep_minutes=keep)
    for k in range(3 * 1440):
        s.on_trade(T0 + k * 60 * 10**9, 100 + k % 7, 1, 100, True, k + 1)
        assert len(s.minutes) <= keep + 1
    assert s.kept_from_ms == s.minutes[0].open_ms == s.minutes[-1].open_ms - keep * MINUTE
    assert s.ticker_24h(T0 + (3 * 1440 - 1) * 60 * 10**9).count == 1440 == len(s.window)
