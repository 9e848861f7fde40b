"""Whole-exchange properties on random command streams (every command kind: cancel-replace,
trailing stops, OCO lists and the kill switch included): conservation per asset, locked equals
the sum of holds, no negative balance, an uncrossed book, risk and matching agree on which
orders are open, and the journal and client stream are the same bytes whatever the batching."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from ganntec.engines.symbols import Asset, Symbol
from ganntec.exchange import Exchange
from ganntec.shm import records as R
from ganntec.shm.records import OrderType as OT
from ganntec.shm.records import RecordType, Side, StpMode, TimeInForce

BTC, USDT, ETH = Asset(0, "BTC", 8), Asset(1, "USDT", 6), Asset(2, "ETH", 8)
SYMBOLS = [
    Symbol(0, "BTCUSDT", BTC, USDT, tick_size="0.5", step_size="0.01", min_price="0.5", max_price="100000",
           min_qty="0.01", max_qty="50", maker_fee="0.001", taker_fee="0.0015", bid_multiplier_up="1000",
           bid_multiplier_down="0.001", ask_multiplier_up="1000", ask_multiplier_down="0.001"),
    Symbol(1, "ETHBTC", ETH, BTC, tick_size="0.0001", step_size="0.1", min_price="0.0001", max_price="10",
           min_qty="0.1", max_qty="100", maker_fee="0", taker_fee="0.00075", bid_multiplier_up="1000",
           bid_multiplier_down="0.001", ask_multiplier_up="1000", ask_multiplier_down="0.001"),
]
ACCOUNTS = (1, 2, 3, 4)

command = st.tuples(
    st.sampled_from(["limit", "limit", "limit", "ioc", "fok", "maker", "market", "market_quote", "stop", "cancel",
                     "amend", "cancel_all", "iceberg", "replace", "replace", "trail", "oco", "oco", "kill"]),
    st.sampled_from(ACCOUNTS), st.sampled_from([Side.BUY, Side.SELL]), st.integers(0, 1),
    st.integers(90, 110), st.integers(1, 40), st.integers(1, 60), st.sampled_from(list(StpMode)),
)


def build(cmds) -> np.ndarray:
    out = []
    for ts, (kind, acc, side, sym, price, qty, ref, stp) in enumerate(cmds):
        if kind == "kill":  # the kill switch (cancels everything of the account), then back on
            for rtype in (RecordType.KILL_ACCOUNT, RecordType.UNKILL_ACCOUNT):
                r = R.empty(rtype)
                r["account_id"], r["ts_ns"] = acc, ts
                out.append(r)
            continue
        if kind == "oco":  # take profit above, stop loss below (a SELL), or the other way round
            profit = dict(order_type=OT.LIMIT_MAKER, price_tick=price + (4 if side == Side.SELL else -4),
                          client_order_id=b"c%d" % ts)
            loss = dict(order_type=OT.STOP_LOSS_LIMIT, time_in_force=TimeInForce.GTC,
                        stop_price_tick=price + (-4 if side == Side.SELL else 4),
                        price_tick=price + (-5 if side == Side.SELL else 5))
            if ref % 3 == 0:
                loss = dict(order_type=OT.STOP_LOSS, stop_price_tick=loss["stop_price_tick"],
                            trailing_delta_bips=100 * (1 + ref % 5))
            above, below = (profit, loss) if side == Side.SELL else (loss, profit)
            out.append(Exchange.oco(acc, side, qty, above, below, sym, ts, stp, list_client_order_id=b"l%d" % (ts % 5)))
            continue
        if kind in ("cancel", "amend", "cancel_all"):
            rtype = {"cancel": RecordType.CANCEL, "amend": RecordType.AMEND, "cancel_all": RecordType.CANCEL_ALL}[kind]
            r = R.empty(rtype)
            r["account_id"], r["symbol_id"], r["ts_ns"] = acc, sym, ts
            if kind != "cancel_all":
                if ref % 4 == 0:  # by client order id (the order engine resolves it)
                    r["orig_client_order_id"] = b"c%d" % (ref // 4)
                else:
                    r["order_id"] = ref
            if kind == "amend":
                r["new_price_tick"] = price if ref % 2 else 0
                r["new_qty_lot"] = qty if ref % 3 else 0
            out.append(r)
            continue
        otype = {"limit": OT.LIMIT, "iceberg": OT.LIMIT, "ioc": OT.LIMIT, "fok": OT.LIMIT, "maker": OT.LIMIT_MAKER, "market": OT.MARKET,
                 "market_quote": OT.MARKET, "stop": OT.STOP_LOSS_LIMIT, "replace": OT.LIMIT,
                 "trail": (OT.STOP_LOSS, OT.TAKE_PROFIT, OT.STOP_LOSS_LIMIT, OT.TAKE_PROFIT_LIMIT)[ref % 4]}[kind]
        tif = {"ioc": TimeInForce.IOC, "fok": TimeInForce.FOK}.get(kind, TimeInForce.GTC)
        r = Exchange.orders(acc, side, 0 if otype == OT.MARKET else price, 0 if kind == "market_quote" else qty,
                            otype, sym, 0 if otype in (OT.MARKET, OT.LIMIT_MAKER) else tif, ts, stp,
                            quote_qty_minor=qty * price * 50 if kind == "market_quote" else 0)
        r["client_order_id"] = b"c%d" % ts
        if kind == "iceberg":
            r["qty_lot"] = qty + 10
            r["iceberg_qty_lot"] = max(1, (qty + 10) // 5)
        if otype == OT.STOP_LOSS_LIMIT and kind == "stop":
            r["stop_price_tick"] = price + (3 if side == Side.BUY else -3)
        if kind == "trail":  # 1-3% trailing, with a stop price now and then
            r["trailing_delta_bips"] = 100 * (1 + ref % 3)
            r["stop_price_tick"] = 0 if ref % 2 else price
            if otype in (OT.STOP_LOSS, OT.TAKE_PROFIT):
                r["price_tick"], r["time_in_force"] = 0, 0
        if kind == "replace":  # cancel an order (by id, or by client id) and place this limit instead
            mode = R.ReplaceMode.ALLOW_FAILURE if ref % 2 else R.ReplaceMode.STOP_ON_FAILURE
            r = Exchange.cancel_replaces(ref if ref % 4 else 0, r, mode,
                                         cancel_orig_client_order_id=b"" if ref % 4 else b"c%d" % (ref // 4))
        out.append(r)
    return R.concat(out)


def fresh() -> Exchange:
    ex = Exchange(SYMBOLS, max_accounts=8, max_orders=4096, max_levels=256)
    for acc in ACCOUNTS:
        ex.open_account(acc)
        ex.deposit(acc, "USDT", "50000")
        ex.deposit(acc, "BTC", "20")
        ex.deposit(acc, "ETH", "500")
    return ex


def check_invariants(ex: Exchange) -> None:
    assert ex.conservation_errors() == []
    bal = ex.balances()
    assert (bal >= 0).all(), "negative balance"
    m = ex.driver.matching
    open_ids = set()
    for sym in range(len(SYMBOLS)):
        bids, asks = m.levels(sym, Side.BUY), m.levels(sym, Side.SELL)
        if len(bids) and len(asks):
            assert bids[0, 0] < asks[0, 0], "crossed book"
        assert (np.diff(bids[:, 0]) < 0).all() and (np.diff(asks[:, 0]) > 0).all()
        for side in (Side.BUY, Side.SELL):
            ids = m.open_orders(sym, side)
            assert sum(m.order(i)["visible_lot"] for i in ids) == int(m.levels(sym, side)[:, 1].sum())
            open_ids |= set(ids)
    stop_ids = {int(m.orders[int(v)]["order_id"]) for k, v in zip(m.hash_keys, m.hash_vals) if k != 0}
    risk_ids = {int(k) for k in ex.driver.risk.hold_keys if k != 0}
    assert open_ids <= stop_ids and risk_ids == stop_ids, "risk holds and matching's open orders disagree"


@settings(max_examples=40, deadline=None)
@given(st.lists(command, min_size=1, max_size=80))
def test_invariants_hold_after_every_command(cmds):
    ex = fresh()
    stream = build(cmds)
    bounds = R.command_bounds(stream)
    for start, end in zip(bounds, bounds[1:]):
        ex.submit(stream[start:end])
        check_invariants(ex)


@settings(max_examples=30, deadline=None)
@given(st.lists(command, min_size=1, max_size=120), st.lists(st.integers(1, 50), min_size=1, max_size=10))
def test_same_bytes_whatever_the_batching(cmds, splits):
    stream = build(cmds)
    whole = fresh()
    edge_whole = whole.submit(stream)
    split = fresh()
    bounds = R.command_bounds(stream)
    parts, c = [], 0
    for k in splits * (len(stream) // sum(splits) + 1):
        if c >= len(bounds) - 1:
            break
        parts.append(split.submit(stream[bounds[c]:bounds[min(c + k, len(bounds) - 1)]]))  # k whole commands
        c += k
    assert R.concat(parts).tobytes() == edge_whole.tobytes()
    assert R.concat(split.journal).tobytes() == R.concat(whole.journal).tobytes()
    again = fresh()
    assert again.submit(stream).tobytes() == edge_whole.tobytes()
    check_invariants(whole)


def test_a_sweep_larger_than_the_buffers_gives_the_same_bytes():
    """200 makers swept by one order: with small engine buffers matching suspends many times
    and the driver resumes it; journal and client stream equal those of roomy buffers."""
    makers = Exchange.orders(np.arange(200) % 3 + 1, Side.SELL, 100 + np.arange(200) % 3, 1)
    makers["client_order_id"] = [b"m%d" % i for i in range(200)]
    taker = Exchange.orders(4, Side.BUY, 0, 500, OT.MARKET)
    streams = []
    for levels in (4, 256):
        ex = Exchange(SYMBOLS, max_accounts=8, max_orders=1024, max_levels=levels)
        for acc in ACCOUNTS:
            ex.open_account(acc)
            ex.deposit(acc, "USDT", "50000")
            ex.deposit(acc, "BTC", "20")
        out = ex.submit(R.concat([makers, taker]))
        assert sum(int(r["type"]) == RecordType.FILL for r in out) == 200
        assert ex.conservation_errors() == []
        streams.append((out.tobytes(), R.concat(ex.journal).tobytes()))
    assert streams[0] == streams[1]
