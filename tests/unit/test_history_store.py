"""ganntec.history.store: the SQLite projection of the journal, built from the records of real
engines (an in-process driver on the demo config, no mocks). Its orders are EdgeState's, its
trades the engines' FILLs, its candles and 24-hour tickers SymbolStats'; re-applying, reopening
and catching up from a journal all give the same tables."""

from __future__ import annotations

import random

import numpy as np
import pytest
from history_flow import (
    BTCUSDT,
    ETHBTC,
    ETHUSDT,
    HOUR,
    MAKE,
    MIDS,
    N_SYMBOLS,
    QUOTE_PER_TICK_LOT,
    T0,
    Flow,
    fill,
    fills,
    klines_by_definition,
    reference,
)

from ganntec.edge import stats as S
from ganntec.history.store import HistoryStore, TradeRow, catch_up
from ganntec.journal.journal import JournalWriter
from ganntec.shm import records as R
from ganntec.shm.records import OrderStatus, OrderType, Side, StpMode, TimeInForce


def scripted() -> Flow:
    """Rests, partial and full fills, a cancel, a MARKET by quote, a self-trade, an OCO whose
    limit leg fills (its stop leg expires), a refused OCO, an OCO canceled by CANCEL_ALL,
    minutes and days apart."""
    f = Flow()
    p = MIDS[BTCUSDT][0]
    bid = f.new(1, Side.BUY, p, 100)
    f.new(2, Side.SELL, p, 40, dt_ns=20 * 10**9)                      # partial: bid 40/100
    f.new(3, Side.SELL, p + 10, 50, dt_ns=50 * 10**9)                 # rests
    low = f.new(1, Side.BUY, p - 5, 30)
    f.cancel(1, low, dt_ns=3 * 60 * 10**9)
    f.new(2, Side.SELL, 0, 60, order_type=OrderType.MARKET, dt_ns=10**9)   # fills the bid
    f.new(1, Side.BUY, 0, 0, order_type=OrderType.MARKET,
          quote=50 * (p + 10) * QUOTE_PER_TICK_LOT[BTCUSDT])          # the whole ask
    f.new(3, Side.SELL, p + 20, 10, stp=StpMode.NONE, dt_ns=2 * HOUR)
    f.new(3, Side.BUY, p + 20, 10, stp=StpMode.NONE)                  # a self-trade
    f.oco(1, Side.SELL, 20, {"order_type": OrderType.LIMIT_MAKER, "price_tick": p + 100},
          {"order_type": OrderType.STOP_LOSS_LIMIT, "price_tick": p - 200, "stop_price_tick": p - 150,
           "time_in_force": TimeInForce.GTC})
    f.new(2, Side.BUY, p + 100, 20, tif=TimeInForce.IOC, dt_ns=90 * 10**9)   # fills the limit leg
    f.oco(1, Side.SELL, 5, {"order_type": OrderType.LIMIT_MAKER, "price_tick": p + 300},   # refused: notional
          {"order_type": OrderType.STOP_LOSS, "stop_price_tick": p - 300}, dt_ns=25 * HOUR)
    f.oco(1, Side.SELL, 50, {"order_type": OrderType.LIMIT_MAKER, "price_tick": p + 300},
          {"order_type": OrderType.STOP_LOSS, "stop_price_tick": p - 300})
    f.new(3, Side.BUY, MIDS[ETHUSDT][0], 30, symbol=ETHUSDT)
    f.new(2, Side.SELL, MIDS[ETHUSDT][0] - 1, 50, symbol=ETHUSDT, dt_ns=7 * 60 * 10**9)
    f.new(2, Side.SELL, p + 50, 10, dt_ns=10**9)
    f.new(3, Side.BUY, p + 50, 10, tif=TimeInForce.FOK, dt_ns=10**9)
    f.cancel_all(1, dt_ns=10**9)
    assert bid in {oid for oid, _, _ in f.placed}
    return f


def randomized(seed: int, n: int) -> Flow:
    """Limit / market / cancel / cancel-all / OCO commands, random accounts, symbols and gaps."""
    rnd = random.Random(seed)
    f = Flow()
    for _ in range(n):
        kind = rnd.choice(["limit"] * 6 + ["market"] * 2 + ["cancel"] * 2 + ["cancel_all", "oco"])
        acc, sym = rnd.randint(1, 3), rnd.choice([BTCUSDT, BTCUSDT, ETHUSDT, ETHBTC])
        side = rnd.choice([Side.BUY, Side.SELL])
        mid, lo, hi = MIDS[sym]
        lots = rnd.randint(lo, hi)
        dt_ns = rnd.choice([10**6, 10**9, 30 * 10**9, 5 * 60 * 10**9, 3 * HOUR, 20 * HOUR])
        if kind == "limit":
            f.new(acc, side, mid + rnd.randint(-2, 2), lots, sym,
                  tif=rnd.choice([TimeInForce.GTC, TimeInForce.GTC, TimeInForce.IOC, TimeInForce.FOK]),
                  stp=rnd.choice(list(StpMode)), dt_ns=dt_ns)
        elif kind == "market":
            quote = lots * mid * QUOTE_PER_TICK_LOT[sym] if rnd.random() < 0.5 else 0
            f.new(acc, side, 0, 0 if quote else lots, sym, OrderType.MARKET, 0, stp=rnd.choice(list(StpMode)),
                  quote=quote, dt_ns=dt_ns)
        elif kind == "cancel" and f.placed:
            oid, oacc, osym = rnd.choice(f.placed)
            f.cancel(oacc, oid, osym, dt_ns=dt_ns)
        elif kind == "cancel_all":
            f.cancel_all(acc, sym, dt_ns=dt_ns)
        else:
            up, down = (5, -5) if side == Side.SELL else (-5, 5)
            limit = {"order_type": OrderType.LIMIT_MAKER, "price_tick": mid + up}
            stop = {"order_type": OrderType.STOP_LOSS_LIMIT, "price_tick": mid + down, "stop_price_tick": mid + down,
                    "time_in_force": TimeInForce.GTC}
            f.oco(acc, side, lots, *((limit, stop) if side == Side.SELL else (stop, limit)), symbol=sym, dt_ns=dt_ns)
    return f


def dump(store: HistoryStore) -> dict:
    db = store.db
    return {"last_seq": store.last_seq,
            "orders": db.execute("SELECT * FROM orders ORDER BY order_id").fetchall(),
            "trades": db.execute("SELECT * FROM trades ORDER BY symbol_id, trade_id").fetchall(),
            "candles": db.execute("SELECT * FROM candles_1m ORDER BY symbol_id, open_ms").fetchall()}


def assert_equals_reference(f: Flow, store: HistoryStore) -> None:
    ref = reference(f)
    # orders: every one the projection has, field by field (ref keeps all of them here)
    assert store.counts()["orders"] == len(ref.orders) > 0
    for oid, o in ref.orders.items():
        assert store.order(oid) == o, oid
    for acc in (1, 2, 3):
        for sym in range(N_SYMBOLS):
            mine = sorted((o for o in ref.orders.values() if o.account_id == acc and o.symbol_id == sym),
                          key=lambda o: o.order_id)
            assert store.orders(acc, sym, limit=10**6) == mine
            assert store.orders(acc, sym, limit=3) == mine[-3:]
            if mine:
                mid = mine[len(mine) // 2]
                assert store.orders(acc, sym, from_order_id=mid.order_id, limit=2) == [
                    o for o in mine if o.order_id >= mid.order_id][:2]
                t0 = mid.time_ns
                assert store.orders(acc, sym, start_ns=t0, end_ns=t0 + HOUR, limit=10**6) == [
                    o for o in mine if t0 <= o.time_ns < t0 + HOUR]
            # own trades: EdgeState's (order, buyer/maker, commission and its asset)
            own = list(ref.own_trades.get((acc, sym), ()))
            assert store.account_trades(acc, sym, limit=10**6) == own
            assert store.account_trades(acc, sym, limit=4) == own[-4:]
            if own:
                pick = own[len(own) // 2]
                assert store.account_trades(acc, sym, from_trade_id=pick.trade.trade_id, limit=3) == [
                    t for t in own if t.trade.trade_id >= pick.trade.trade_id][:3]
                assert store.account_trades(acc, sym, order_id=pick.order_id, limit=10**6) == [
                    t for t in own if t.order_id == pick.order_id]
                t0 = pick.trade.ts_ns
                assert store.account_trades(acc, sym, start_ns=t0, end_ns=t0 + 1, limit=10**6) == [
                    t for t in own if t.trade.ts_ns == t0]
    # trades: the engines' FILL records, fees included
    fl = fills(f)
    assert fl and any(r.taker_fee_minor for r in fl) and any(r.maker_fee_minor for r in fl)
    want = {}
    for r in fl:
        want.setdefault(r.symbol_id, []).append(TradeRow(
            r.symbol_id, r.trade_id, r.price_tick, r.qty_lot, r.quote_qty_minor, r.ts_ns, r.taker_side,
            r.taker_order_id, r.maker_order_id, r.account_id, r.maker_account_id, r.taker_fee_minor,
            r.maker_fee_minor))
    for sym in range(N_SYMBOLS):
        rows = want.get(sym, [])
        assert store.trade_rows(sym, from_trade_id=0, limit=10**6) == rows
        assert store.trades(sym, limit=10**6) == list(ref.trades[sym])
        assert store.trades(sym, limit=2) == list(ref.trades[sym])[-2:]
        if rows:
            mid = rows[len(rows) // 2].trade_id
            assert store.trades(sym, from_trade_id=mid, limit=2) == [
                t for t in ref.trades[sym] if t.trade_id >= mid][:2]
        # candles: SymbolStats' klines, every interval, with and without bounds
        stats = ref.stats[sym]
        if not stats.minutes:
            assert store.candles(sym, "1m") == []
            continue
        first, last = stats.minutes[0].open_ms, stats.minutes[-1].open_ms
        for interval in S.INTERVALS:
            for start, end, limit in ((None, None, 500), (None, None, 3), (first + 1, None, 4), (None, last - 1, 2),
                                      (first, last, 1000), (first + 90 * 60_000, None, 2), (None, first - 1, 5)):
                defined = klines_by_definition(stats.minutes, interval, start, end, limit)
                assert store.candles(sym, interval, start, end, limit) == stats.klines(interval, start, end, limit) \
                    == defined, (sym, interval, start, end, limit)
        # the 24-hour ticker, as the edge's ticker_row reads SymbolStats: at the last trade's time,
        # and later (trades leave the 24 hours, prevClosePrice with them), until none is left
        last_ts = stats.window[-1][0]
        for now in (last_ts, last_ts + 1, last_ts + 3 * HOUR, last_ts + 23 * HOUR, last_ts + S.WINDOW_NS):
            assert store.ticker_24h(sym, now) == stats.ticker_24h(now), (sym, now)
        assert store.ticker_24h(sym, last_ts).count == len(stats.last_24h(last_ts)) > 0
        quiet = store.ticker_24h(sym, last_ts + S.WINDOW_NS)
        assert (quiet.count, quiet.first_trade_id, quiet.volume_lot) == (0, -1, 0)
        assert quiet.prev_close_tick == stats.window[-1][1]


# --- tests ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def flow() -> Flow:
    return scripted()


@pytest.fixture(scope="module")
def rflow() -> Flow:
    return randomized(7, 150)


def test_schema_wal_and_empty_store(tmp_path):
    with HistoryStore(tmp_path / "h.db") as s:
        assert s.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert s.db.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
        assert s.last_seq == 0 and s.counts() == {"orders": 0, "trades": 0, "candles_1m": 0}
        assert s.orders(1, 0) == [] and s.account_trades(1, 0) == [] and s.trades(0) == []
        assert s.candles(0, "1h") == [] and s.ticker_24h(0, T0).count == 0
        assert s.apply(np.zeros((0, R.RECORD_BYTES), np.uint8)) == 0
        with pytest.raises(ValueError):
            s.candles(0, "7m")


def test_scripted_flow_equals_edge_state(tmp_path, flow):
    with HistoryStore(tmp_path / "h.db") as s:
        fill(flow, s)
        assert s.last_seq == int(R.as_records(flow.edge())["seq"].max())
        assert_equals_reference(flow, s)
        ref = reference(flow)
        legs = [o for o in ref.orders.values() if o.list_id >= 0]
        assert len(legs) == 4 and all(s.order(o.order_id).list_id == o.list_id for o in legs)
        statuses = {o.status for o in legs}
        assert {OrderStatus.FILLED, OrderStatus.EXPIRED, OrderStatus.CANCELED} <= statuses
        assert any(t.is_buyer for t in s.account_trades(3, BTCUSDT)) and any(
            not t.is_buyer for t in s.account_trades(3, BTCUSDT))


def test_randomized_flow_equals_edge_state(tmp_path, rflow):
    with HistoryStore(tmp_path / "h.db") as s:
        s.apply(rflow.edge(), rflow.journal())  # one transaction for everything
        assert_equals_reference(rflow, s)


def test_reapplying_changes_nothing(tmp_path, flow):
    with HistoryStore(tmp_path / "h.db") as s:
        fill(flow, s)
        before = dump(s)
        assert s.apply(flow.edge(), flow.journal()) == 0
        fill(flow, s)
        assert dump(s) == before
        assert not s.state._extras  # the commands remembered again were answered already


@pytest.mark.parametrize("which", ["flow", "rflow"])
def test_reopen_and_apply_the_rest_equals_one_pass(tmp_path, which, request):
    f = request.getfixturevalue(which)
    with HistoryStore(tmp_path / "one.db") as one:
        fill(f, one)
        want = dump(one)
    for k in (len(f.steps) // 3, len(f.steps) // 2, len(f.steps) - 2):
        path = tmp_path / f"two{k}.db"
        with HistoryStore(path) as s:
            fill(f, s, 0, k)
        with HistoryStore(path) as s:  # open orders come back from the table
            fill(f, s, k - 1)          # one step again: skipped
            assert dump(s) == want
            if which == "flow":
                assert_equals_reference(f, s)


def write_journal(f: Flow, directory, upto: int | None = None, lo: int = 0) -> None:
    with JournalWriter(str(directory), durability="os") as w:
        for journal, _ in f.steps[lo:upto]:
            w.append(journal)


@pytest.mark.parametrize("which", ["flow", "rflow"])
def test_catch_up_fresh_and_half_filled(tmp_path, which, request):
    f = request.getfixturevalue(which)
    jdir = tmp_path / "journal"
    with HistoryStore(tmp_path / "live.db") as live:
        fill(f, live)
        want = dump(live)
    # a journal written up to a point, caught up; then the rest appended and caught up again
    half = len(f.steps) // 2
    write_journal(f, jdir, half)
    with HistoryStore(tmp_path / "tail.db") as s:
        catch_up(s, MAKE, str(jdir))
        with HistoryStore(tmp_path / "half.db") as h:
            fill(f, h, 0, half)
            assert dump(s) == dump(h)
    write_journal(f, jdir, None, half)
    with HistoryStore(tmp_path / "tail.db") as s:
        rp, next_seq = catch_up(s, MAKE, str(jdir))
        assert dump(s) == want
        assert next_seq == int(R.as_records(f.journal())["seq"].max()) + 1 and rp.pending_results == 0
    # a fresh store, in small transactions
    with HistoryStore(tmp_path / "fresh.db") as s:
        catch_up(s, MAKE, str(jdir), batch_records=1)
        assert dump(s) == want
        assert not s.state._extras
    # a store filled live part of the way (not from the journal), then caught up
    with HistoryStore(tmp_path / "part.db") as s:
        fill(f, s, 0, half + 1)
        catch_up(s, MAKE, str(jdir), batch_records=7)
        assert dump(s) == want
        assert not s.state._extras
