"""Matching engine, hand-computed: every order type, TIF, STP mode, cancel/amend path, reject
and expire reason of the spec in `ganntec/engines/matching.py`, with concrete values.

Each test runs twice: against the engine and against the reference model
(tests/reference/matching_model.py), so the numbers below check both.

Symbols: BTCUSDT (id 0): tick 0.01 USDT, step 0.00001 BTC, 8 decimals each, so one tick x one
lot = 0.0000001 USDT = 10 minor units; tick 10000 is 100.00 USDT. XYZEUR (id 1): tick 0.5 EUR,
step 1 XYZ, EUR in cents: one tick x one lot = 50 cents.
"""

from __future__ import annotations

import numpy as np
import pytest

from ganntec.engines.symbols import Asset, Symbol, symbol_table
from ganntec.shm import records
from ganntec.shm.records import (
    FLAG_END,
    FLAG_MAKER_DONE,
    FLAG_QTY_CAP,
    FLAG_SELF_TRADE,
    FLAG_TAKER_DONE,
    RECORD_DTYPE,
    SOURCE_MATCHING,
    CancelRestriction,
    OrderStatus,
    OrderType,
    Reason,
    RecordType,
    Side,
    StpMode,
    TimeInForce,
)
from reference.matching_model import MatchingModel, amend, batch, cancel, cancel_all, decode, new_order

BUY, SELL = Side.BUY, Side.SELL
LIMIT, MARKET, LIMIT_MAKER = OrderType.LIMIT, OrderType.MARKET, OrderType.LIMIT_MAKER
GTC, IOC, FOK = TimeInForce.GTC, TimeInForce.IOC, TimeInForce.FOK
BTC, USDT = Asset(0, "BTC", 8), Asset(1, "USDT", 8)
XYZ, EUR = Asset(2, "XYZ", 0), Asset(3, "EUR", 2)
MAX_TICK_0, MAX_LOT_0 = 100_000_000, 900_000_000  # 1000000.00 USDT, 9000 BTC
MAX_TICK_1, MAX_LOT_1 = 200_000, 1_000_000  # 100000 EUR, 1000000 XYZ


def symbols(stp0: StpMode, stp1: StpMode) -> list[Symbol]:
    return [
        Symbol(0, "BTCUSDT", BTC, USDT, "0.01", "0.00001", "0.01", "1000000", "0.00001", "9000", default_stp=stp0),
        Symbol(1, "XYZEUR", XYZ, EUR, "0.5", "1", "0.5", "100000", "1", "1000000", default_stp=stp1),
    ]


class Market:
    """One engine (or the model) plus checks every result must pass whatever the test."""

    def __init__(self, kind: str, stp0=StpMode.EXPIRE_MAKER, stp1=StpMode.NONE, max_orders=1024, max_levels=64,
                 shard=0):
        syms = symbols(stp0, stp1)
        if kind == "engine":
            from ganntec.engines.matching import MatchingEngine

            self.impl = MatchingEngine(symbol_table(syms), max_orders=max_orders, max_levels=max_levels, shard=shard)
        else:
            self.impl = MatchingModel(syms, shard=shard, max_orders=max_orders, max_levels=max_levels)
        self.shard = shard

    def run(self, cmd: np.ndarray) -> list[dict]:
        """One command's results, decoded; checks the headers every result must carry."""
        out = self.impl.process(cmd)
        assert out.dtype == RECORD_DTYPE and out.dtype.itemsize == 128
        rows = decode(out)
        assert rows, "a command always has at least one result"
        first = records.view(cmd[:1])
        cause = records.cause_of(int(first["source"]), int(first["source_seq"]))
        for i, r in enumerate(rows):
            assert r["source"] == SOURCE_MATCHING | self.shard and r["seq"] == 0, r
            assert r["source_seq"] == cause, (i, r)  # names the command that caused it
            assert r["ts_ns"] == int(records.view(cmd)["ts_ns"]), r
            assert bool(r["flags"] & FLAG_END) == (i == len(rows) - 1), (i, r)
            if r["type"] == "BOOK_UPDATE":
                assert r["account_id"] == 0
            if r["type"] not in ("ORDER_ACCEPTED", "ORDER_REJECTED") and "client_order_id" in r:
                assert r["client_order_id"] == b"", r  # only the NEW's own results carry it
        return rows

    def levels(self, symbol_id: int, side: int) -> list[list[int]]:
        return self.impl.levels(symbol_id, side).tolist()

    def open_orders(self, symbol_id: int, side: int) -> list[int]:
        return self.impl.open_orders(symbol_id, side)


@pytest.fixture(params=["engine", "model"])
def market(request):
    if request.param == "engine":
        pytest.importorskip("ganntec.engines.matching")

    def make(**kw) -> Market:
        return Market(request.param, **kw)

    return make


def expect(rows: list[dict], *want: tuple[str, dict]) -> None:
    """rows are exactly these types, in order, with (at least) these field values."""
    got_types = [r["type"] for r in rows]
    assert got_types == [t for t, _ in want], f"types {got_types}"
    for i, (r, (t, fields)) in enumerate(zip(rows, want)):
        wrong = {k: (r[k], v) for k, v in fields.items() if r[k] != (v.name if k == "reason" else v)}
        assert not wrong, f"result {i} ({t}): field: (got, want) {wrong}"


def limit(seq, acct, side, price, qty, sym=0, tif=GTC, stp=StpMode.DEFAULT, **kw):
    return new_order(seq, acct, sym, side, LIMIT, tif, price=price, qty=qty, stp=stp, **kw)


def market_order(seq, acct, side, qty=0, quote=0, sym=0, stp=StpMode.DEFAULT, otype=MARKET, stop=0):
    return new_order(seq, acct, sym, side, otype, GTC, qty=qty, quote=quote, stp=stp, stop=stop)


# --- limit orders ---------------------------------------------------------------------------
def test_a_resting_limit_order_its_id_is_the_new_orders_seq(market):
    m = market()
    rows = m.run(limit(7, 1, BUY, 10000, 5, cid=b"my-id_1", ts_ns=123))
    expect(rows,
           ("ORDER_ACCEPTED", dict(order_id=7, account_id=1, symbol_id=0, price_tick=10000, qty_lot=5,
                                   executed_qty_lot=0, cum_quote_minor=0, client_order_id=b"my-id_1", side=BUY,
                                   order_type=LIMIT, time_in_force=GTC, status=OrderStatus.NEW, reason=Reason.NONE,
                                   flags=0)),
           ("BOOK_UPDATE", dict(book_update_id=1, price_tick=10000, level_qty_lot=5, level_orders=1, side=BUY,
                                symbol_id=0, flags=FLAG_END)))
    assert m.levels(0, BUY) == [[10000, 5, 1]] and m.levels(0, SELL) == []
    assert m.open_orders(0, BUY) == [7] and m.open_orders(0, SELL) == []
    assert m.impl.order(7) is not None and m.impl.order(8) is None


def test_results_carry_the_shard_in_source(market):
    m = market(shard=3)
    rows = m.run(limit(1, 1, SELL, 10000, 1))
    assert {r["source"] for r in rows} == {SOURCE_MATCHING | 3}


def test_limit_takes_at_the_makers_price_then_rests_its_remainder(market):
    m = market()
    m.run(limit(1, 1, SELL, 10000, 5))
    m.run(limit(2, 1, SELL, 10002, 3))
    rows = m.run(limit(3, 2, BUY, 10001, 7))
    expect(rows,
           ("ORDER_ACCEPTED", dict(order_id=3, account_id=2, price_tick=10001, qty_lot=7)),
           # 100.00 USDT x 0.00005 BTC = 0.005 USDT = 500000 minor
           ("FILL", dict(account_id=2, trade_id=1, price_tick=10000, qty_lot=5, quote_qty_minor=500_000,
                         maker_order_id=1, taker_order_id=3, maker_account_id=1, taker_side=BUY,
                         taker_order_type=LIMIT, maker_leaves_qty_lot=0, taker_leaves_qty_lot=2,
                         maker_fee_minor=0, taker_fee_minor=0, flags=FLAG_MAKER_DONE)),
           ("BOOK_UPDATE", dict(book_update_id=3, price_tick=10000, level_qty_lot=0, level_orders=0, side=SELL)),
           ("BOOK_UPDATE", dict(book_update_id=4, price_tick=10001, level_qty_lot=2, level_orders=1, side=BUY)))
    assert m.levels(0, BUY) == [[10001, 2, 1]] and m.levels(0, SELL) == [[10002, 3, 1]]


def test_price_then_time_priority(market):
    m = market()
    m.run(limit(1, 1, SELL, 10001, 1))
    m.run(limit(2, 2, SELL, 10001, 2))
    m.run(limit(3, 3, SELL, 10000, 1))
    m.run(limit(4, 1, SELL, 10001, 1))
    assert m.levels(0, SELL) == [[10000, 1, 1], [10001, 4, 3]]
    assert m.open_orders(0, SELL) == [3, 1, 2, 4]
    rows = m.run(limit(5, 9, BUY, 10001, 3))
    fills = [r for r in rows if r["type"] == "FILL"]
    assert [(f["maker_order_id"], f["price_tick"], f["qty_lot"], f["quote_qty_minor"], f["taker_leaves_qty_lot"],
             f["maker_leaves_qty_lot"], f["trade_id"], f["flags"] & ~FLAG_END) for f in fills] == [
        (3, 10000, 1, 100_000, 2, 0, 1, FLAG_MAKER_DONE),
        (1, 10001, 1, 100_010, 1, 0, 2, FLAG_MAKER_DONE),
        (2, 10001, 1, 100_010, 0, 1, 3, FLAG_TAKER_DONE),
    ]
    expect(rows[-2:], ("BOOK_UPDATE", dict(price_tick=10000, level_qty_lot=0, level_orders=0, side=SELL)),
           ("BOOK_UPDATE", dict(price_tick=10001, level_qty_lot=2, level_orders=2, side=SELL)))
    assert m.open_orders(0, SELL) == [2, 4]


def test_ioc_remainder_expires(market):
    m = market()
    m.run(limit(1, 1, SELL, 10000, 2))
    rows = m.run(limit(2, 2, BUY, 10001, 5, tif=IOC))
    expect(rows,
           ("ORDER_ACCEPTED", dict(order_id=2, time_in_force=IOC)),
           ("FILL", dict(qty_lot=2, quote_qty_minor=200_000, taker_leaves_qty_lot=3, flags=FLAG_MAKER_DONE)),
           ("ORDER_EXPIRED", dict(order_id=2, reason=Reason.IOC_UNFILLED, status=OrderStatus.EXPIRED, price_tick=10001,
                                  qty_lot=5, executed_qty_lot=2, cum_quote_minor=200_000, time_in_force=IOC,
                                  account_id=2)),
           ("BOOK_UPDATE", dict(price_tick=10000, level_qty_lot=0, side=SELL)))
    assert m.levels(0, BUY) == [] and m.levels(0, SELL) == []


def test_ioc_that_does_not_cross_expires_untouched(market):
    m = market()
    m.run(limit(1, 1, SELL, 10000, 2))
    expect(m.run(limit(2, 2, BUY, 9999, 1, tif=IOC)),
           ("ORDER_ACCEPTED", dict(order_id=2)),
           ("ORDER_EXPIRED", dict(reason=Reason.IOC_UNFILLED, executed_qty_lot=0, status=OrderStatus.EXPIRED)))
    assert m.levels(0, SELL) == [[10000, 2, 1]]


def test_fok_fills_completely_or_not_at_all(market):
    m = market()
    m.run(limit(1, 1, SELL, 10000, 2))
    m.run(limit(2, 2, SELL, 10001, 2))
    for seq, price, qty in ((3, 10001, 5), (4, 10000, 3)):  # 4 available, 2 at or under 100.00
        expect(m.run(limit(seq, 3, BUY, price, qty, tif=FOK)),
               ("ORDER_ACCEPTED", dict(order_id=seq, time_in_force=FOK)),
               ("ORDER_EXPIRED", dict(order_id=seq, reason=Reason.FOK_UNFILLED, status=OrderStatus.EXPIRED,
                                      executed_qty_lot=0, qty_lot=qty)))
    assert m.levels(0, SELL) == [[10000, 2, 1], [10001, 2, 1]]
    expect(m.run(limit(5, 3, BUY, 10001, 4, tif=FOK)),
           ("ORDER_ACCEPTED", dict(order_id=5)),
           ("FILL", dict(maker_order_id=1, qty_lot=2, taker_leaves_qty_lot=2, flags=FLAG_MAKER_DONE)),
           ("FILL", dict(maker_order_id=2, qty_lot=2, taker_leaves_qty_lot=0, flags=FLAG_MAKER_DONE | FLAG_TAKER_DONE)),
           ("BOOK_UPDATE", dict(price_tick=10000, level_qty_lot=0)),
           ("BOOK_UPDATE", dict(price_tick=10001, level_qty_lot=0)))


@pytest.mark.parametrize("stp, fills", [
    (StpMode.NONE, True),  # counts its own maker too (and trades with it)
    (StpMode.EXPIRE_MAKER, True),  # skips its own maker: the other one is enough
    (StpMode.EXPIRE_TAKER, False),  # counting stops at its own maker
    (StpMode.EXPIRE_BOTH, False),
    (StpMode.DECREMENT, False),
])
def test_fok_counts_under_self_trade_prevention(market, stp, fills):
    m = market()
    m.run(limit(1, 1, SELL, 10000, 2))
    m.run(limit(2, 2, SELL, 10000, 2))
    rows = m.run(limit(3, 1, BUY, 10000, 2, tif=FOK, stp=stp))
    if not fills:
        expect(rows, ("ORDER_ACCEPTED", {}), ("ORDER_EXPIRED", dict(order_id=3, reason=Reason.FOK_UNFILLED)))
    elif stp == StpMode.NONE:
        expect(rows, ("ORDER_ACCEPTED", {}),
               ("FILL", dict(maker_order_id=1, qty_lot=2, flags=FLAG_SELF_TRADE | FLAG_MAKER_DONE | FLAG_TAKER_DONE)),
               ("BOOK_UPDATE", dict(level_qty_lot=2, level_orders=1)))
    else:
        expect(rows, ("ORDER_ACCEPTED", {}),
               ("TRADE_PREVENTED", dict(prevented_match_id=1, maker_order_id=1, taker_order_id=3,
                                        maker_prevented_lot=2, taker_prevented_lot=0)),
               ("ORDER_EXPIRED", dict(order_id=1, reason=Reason.SELF_TRADE_PREVENTED,
                                      status=OrderStatus.EXPIRED_IN_MATCH)),
               ("FILL", dict(maker_order_id=2, qty_lot=2, flags=FLAG_MAKER_DONE | FLAG_TAKER_DONE)),
               ("BOOK_UPDATE", dict(level_qty_lot=0, level_orders=0)))


# --- market orders --------------------------------------------------------------------------
def test_market_by_quantity_walks_the_book(market):
    m = market()
    m.run(limit(1, 1, SELL, 10000, 2))
    m.run(limit(2, 2, SELL, 10003, 2))
    expect(m.run(market_order(3, 3, BUY, qty=3)),
           ("ORDER_ACCEPTED", dict(order_id=3, price_tick=0, qty_lot=3, order_type=MARKET)),
           ("FILL", dict(price_tick=10000, qty_lot=2, taker_leaves_qty_lot=1, taker_order_type=MARKET,
                         flags=FLAG_MAKER_DONE)),
           ("FILL", dict(price_tick=10003, qty_lot=1, quote_qty_minor=100_030, taker_leaves_qty_lot=0,
                         maker_leaves_qty_lot=1, flags=FLAG_TAKER_DONE)),
           ("BOOK_UPDATE", dict(price_tick=10000, level_qty_lot=0)),
           ("BOOK_UPDATE", dict(price_tick=10003, level_qty_lot=1, level_orders=1)))
    expect(m.run(market_order(4, 3, BUY, qty=5)),
           ("ORDER_ACCEPTED", {}),
           ("FILL", dict(qty_lot=1, taker_leaves_qty_lot=4, flags=FLAG_MAKER_DONE)),
           ("ORDER_EXPIRED", dict(order_id=4, reason=Reason.IOC_UNFILLED, status=OrderStatus.EXPIRED, qty_lot=5,
                                  executed_qty_lot=1, cum_quote_minor=100_030)),
           ("BOOK_UPDATE", dict(price_tick=10003, level_qty_lot=0)))


def test_market_against_an_empty_book_expires(market):
    m = market()
    expect(m.run(market_order(1, 1, SELL, qty=1)),
           ("ORDER_ACCEPTED", dict(order_id=1)),
           ("ORDER_EXPIRED", dict(reason=Reason.IOC_UNFILLED, executed_qty_lot=0, status=OrderStatus.EXPIRED)))
    expect(m.run(market_order(2, 1, BUY, quote=1_000_000)),
           ("ORDER_ACCEPTED", dict(qty_lot=0)), ("ORDER_EXPIRED", dict(reason=Reason.IOC_UNFILLED)))


def test_market_buy_by_quote_takes_whole_affordable_lots(market):
    m = market()
    m.run(limit(1, 1, SELL, 10000, 3))  # one lot: 100000 minor
    m.run(limit(2, 2, SELL, 10001, 5))  # one lot: 100010 minor
    # 450000: 3 lots at 100.00 (300000), then 150000 // 100010 = 1 lot, 49990 left: not a lot
    expect(m.run(market_order(3, 3, BUY, quote=450_000)),
           ("ORDER_ACCEPTED", dict(order_id=3, qty_lot=0)),
           ("FILL", dict(maker_order_id=1, qty_lot=3, quote_qty_minor=300_000, taker_leaves_qty_lot=0,
                         flags=FLAG_MAKER_DONE)),
           ("FILL", dict(maker_order_id=2, qty_lot=1, quote_qty_minor=100_010, taker_leaves_qty_lot=0,
                         maker_leaves_qty_lot=4, flags=0)),
           ("ORDER_EXPIRED", dict(order_id=3, reason=Reason.IOC_UNFILLED, status=OrderStatus.EXPIRED, qty_lot=0,
                                  executed_qty_lot=4, cum_quote_minor=400_010)),
           ("BOOK_UPDATE", dict(price_tick=10000, level_qty_lot=0)),
           ("BOOK_UPDATE", dict(price_tick=10001, level_qty_lot=4)))
    # exactly 4 lots' worth: ends spent, without ORDER_EXPIRED
    expect(m.run(market_order(4, 3, BUY, quote=400_040)),
           ("ORDER_ACCEPTED", {}),
           ("FILL", dict(qty_lot=4, quote_qty_minor=400_040, flags=FLAG_MAKER_DONE | FLAG_TAKER_DONE)),
           ("BOOK_UPDATE", dict(level_qty_lot=0)))
    m.run(limit(5, 1, SELL, 10000, 1))
    expect(m.run(market_order(6, 3, BUY, quote=99_999)),  # not one lot
           ("ORDER_ACCEPTED", {}), ("ORDER_EXPIRED", dict(executed_qty_lot=0, reason=Reason.IOC_UNFILLED)))


def test_market_sell_by_quote(market):
    m = market()
    m.run(limit(1, 1, BUY, 200, 2, sym=1))  # 100 EUR: one lot 10000 cents
    m.run(limit(2, 2, BUY, 199, 5, sym=1))  # 99.5 EUR: one lot 9950 cents
    expect(m.run(market_order(3, 3, SELL, quote=25_000, sym=1)),
           ("ORDER_ACCEPTED", dict(symbol_id=1)),
           ("FILL", dict(symbol_id=1, trade_id=1, price_tick=200, qty_lot=2, quote_qty_minor=20_000,
                         taker_side=SELL, flags=FLAG_MAKER_DONE)),
           ("ORDER_EXPIRED", dict(reason=Reason.IOC_UNFILLED, executed_qty_lot=2, cum_quote_minor=20_000)),
           ("BOOK_UPDATE", dict(symbol_id=1, book_update_id=3, price_tick=200, level_qty_lot=0, side=BUY)))


def test_market_by_quantity_with_a_quote_cap(market):
    m = market()
    m.run(limit(1, 1, SELL, 10000, 3))
    m.run(limit(2, 2, SELL, 10001, 3))
    # 5 lots wanted, 450000 to spend: 3 at 100.00, then the quote allows 1 more: cap reached
    expect(m.run(market_order(3, 3, BUY, qty=5, quote=450_000)),
           ("ORDER_ACCEPTED", dict(qty_lot=5)),
           ("FILL", dict(qty_lot=3, taker_leaves_qty_lot=2, flags=FLAG_MAKER_DONE)),
           ("FILL", dict(qty_lot=1, taker_leaves_qty_lot=1, maker_leaves_qty_lot=2, flags=0)),
           ("ORDER_EXPIRED", dict(reason=Reason.IOC_UNFILLED, qty_lot=5, executed_qty_lot=4, cum_quote_minor=400_010)),
           ("BOOK_UPDATE", {}), ("BOOK_UPDATE", {}))


def test_market_sell_by_quote_with_a_quantity_cap(market):
    m = market()
    m.run(limit(1, 1, BUY, 200, 2, sym=1))
    m.run(limit(2, 2, BUY, 199, 5, sym=1))
    capped = market_order(3, 3, SELL, qty=3, quote=29_950, sym=1)
    capped["flags"] = FLAG_QTY_CAP
    # 2 lots at 100 EUR (20000), then one at 99.5 (9950): the quote is spent exactly
    expect(m.run(capped),
           ("ORDER_ACCEPTED", dict(qty_lot=0)),
           ("FILL", dict(qty_lot=2, taker_leaves_qty_lot=0, flags=FLAG_MAKER_DONE)),
           ("FILL", dict(qty_lot=1, quote_qty_minor=9_950, taker_leaves_qty_lot=0, flags=FLAG_TAKER_DONE)),
           ("BOOK_UPDATE", dict(price_tick=200, level_qty_lot=0)),
           ("BOOK_UPDATE", dict(price_tick=199, level_qty_lot=4)))
    capped = market_order(4, 3, SELL, qty=1, quote=20_000, sym=1)
    capped["flags"] = FLAG_QTY_CAP
    # the cap (1 lot) binds before the quote is spent
    expect(m.run(capped),
           ("ORDER_ACCEPTED", dict(qty_lot=0)),
           ("FILL", dict(qty_lot=1, quote_qty_minor=9_950, flags=0)),
           ("ORDER_EXPIRED", dict(reason=Reason.IOC_UNFILLED, qty_lot=0, executed_qty_lot=1, cum_quote_minor=9_950)),
           ("BOOK_UPDATE", dict(price_tick=199, level_qty_lot=3)))


# --- LIMIT_MAKER ----------------------------------------------------------------------------
def test_limit_maker_rests_or_is_rejected_when_it_would_take(market):
    m = market()
    m.run(limit(1, 1, SELL, 10001, 1))
    expect(m.run(new_order(2, 2, 0, BUY, LIMIT_MAKER, price=10000, qty=1)),
           ("ORDER_ACCEPTED", dict(order_type=LIMIT_MAKER)), ("BOOK_UPDATE", dict(price_tick=10000, side=BUY)))
    for seq, acct in ((3, 2), (4, 1)):  # crossing another account's order, or its own
        expect(m.run(new_order(seq, acct, 0, BUY, LIMIT_MAKER, price=10001, qty=1, cid=b"pm")),
               ("ORDER_REJECTED", dict(order_id=seq, reason=Reason.WOULD_MATCH, status=OrderStatus.REJECTED,
                                       client_order_id=b"pm", price_tick=10001, qty_lot=1, order_type=LIMIT_MAKER)))
    assert m.levels(0, SELL) == [[10001, 1, 1]] and m.levels(0, BUY) == [[10000, 1, 1]]


# --- self-trade prevention ------------------------------------------------------------------
def _stp_book(m):
    m.run(limit(1, 1, SELL, 10000, 3))
    m.run(limit(2, 2, SELL, 10000, 2))


def test_stp_none_trades_with_itself_and_flags_it(market):
    m = market()
    _stp_book(m)
    expect(m.run(limit(3, 1, BUY, 10000, 4, stp=StpMode.NONE)),
           ("ORDER_ACCEPTED", {}),
           ("FILL", dict(maker_order_id=1, maker_account_id=1, account_id=1, qty_lot=3, taker_leaves_qty_lot=1,
                         flags=FLAG_SELF_TRADE | FLAG_MAKER_DONE)),
           ("FILL", dict(maker_order_id=2, maker_account_id=2, qty_lot=1, maker_leaves_qty_lot=1,
                         flags=FLAG_TAKER_DONE)),
           ("BOOK_UPDATE", dict(level_qty_lot=1, level_orders=1)))


def test_stp_expire_taker(market):
    m = market()
    _stp_book(m)
    expect(m.run(limit(3, 1, BUY, 10000, 4, stp=StpMode.EXPIRE_TAKER)),
           ("ORDER_ACCEPTED", {}),
           ("TRADE_PREVENTED", dict(prevented_match_id=1, price_tick=10000, maker_order_id=1, taker_order_id=3,
                                    maker_account_id=1, taker_side=BUY, stp_mode=StpMode.EXPIRE_TAKER,
                                    taker_prevented_lot=4, maker_prevented_lot=0, maker_leaves_qty_lot=3,
                                    taker_leaves_qty_lot=0)),
           ("ORDER_EXPIRED", dict(order_id=3, reason=Reason.SELF_TRADE_PREVENTED, status=OrderStatus.EXPIRED_IN_MATCH,
                                  qty_lot=4, executed_qty_lot=0)))
    assert m.levels(0, SELL) == [[10000, 5, 2]] and m.levels(0, BUY) == []  # a stopped taker never rests


@pytest.mark.parametrize("stp, default", [(StpMode.EXPIRE_MAKER, StpMode.NONE),
                                          (StpMode.DEFAULT, StpMode.EXPIRE_MAKER)])
def test_stp_expire_maker_and_default(market, stp, default):
    m = market(stp0=default)
    _stp_book(m)
    expect(m.run(limit(3, 1, BUY, 10000, 4, stp=stp)),
           ("ORDER_ACCEPTED", {}),
           ("TRADE_PREVENTED", dict(stp_mode=StpMode.EXPIRE_MAKER, taker_prevented_lot=0, maker_prevented_lot=3,
                                    maker_leaves_qty_lot=0, taker_leaves_qty_lot=4)),
           ("ORDER_EXPIRED", dict(order_id=1, account_id=1, reason=Reason.SELF_TRADE_PREVENTED,
                                  status=OrderStatus.EXPIRED_IN_MATCH, qty_lot=3, side=SELL)),
           ("FILL", dict(maker_order_id=2, qty_lot=2, taker_leaves_qty_lot=2, flags=FLAG_MAKER_DONE)),
           ("BOOK_UPDATE", dict(price_tick=10000, side=SELL, level_qty_lot=0, level_orders=0)),
           ("BOOK_UPDATE", dict(price_tick=10000, side=BUY, level_qty_lot=2, level_orders=1)))


def test_stp_expire_both_maker_first(market):
    m = market()
    _stp_book(m)
    expect(m.run(limit(3, 1, BUY, 10000, 4, stp=StpMode.EXPIRE_BOTH)),
           ("ORDER_ACCEPTED", {}),
           ("TRADE_PREVENTED", dict(taker_prevented_lot=4, maker_prevented_lot=3, maker_leaves_qty_lot=0,
                                    taker_leaves_qty_lot=0)),
           ("ORDER_EXPIRED", dict(order_id=1, reason=Reason.SELF_TRADE_PREVENTED)),
           ("ORDER_EXPIRED", dict(order_id=3, reason=Reason.SELF_TRADE_PREVENTED, status=OrderStatus.EXPIRED_IN_MATCH)),
           ("BOOK_UPDATE", dict(level_qty_lot=2, level_orders=1)))
    assert m.levels(0, BUY) == []


@pytest.mark.parametrize("stp, default", [(StpMode.DECREMENT, StpMode.NONE), (StpMode.DEFAULT, StpMode.DECREMENT)])
def test_stp_decrement_maker_smaller(market, stp, default):
    m = market(stp0=default)
    _stp_book(m)
    # both lose 3 without a trade: the maker reaches 0 and expires, the taker goes on with 1
    expect(m.run(limit(3, 1, BUY, 10000, 4, stp=stp)),
           ("ORDER_ACCEPTED", {}),
           ("TRADE_PREVENTED", dict(stp_mode=StpMode.DECREMENT, taker_prevented_lot=3, maker_prevented_lot=3,
                                    maker_leaves_qty_lot=0, taker_leaves_qty_lot=1)),
           ("ORDER_EXPIRED", dict(order_id=1, reason=Reason.SELF_TRADE_PREVENTED, status=OrderStatus.EXPIRED_IN_MATCH,
                                  qty_lot=3, executed_qty_lot=0)),
           ("FILL", dict(maker_order_id=2, qty_lot=1, taker_leaves_qty_lot=0, maker_leaves_qty_lot=1,
                         flags=FLAG_TAKER_DONE)),
           ("BOOK_UPDATE", dict(level_qty_lot=1, level_orders=1)))


def test_stp_decrement_taker_smaller_and_equal(market):
    m = market()
    m.run(limit(1, 1, SELL, 10000, 3))
    expect(m.run(limit(2, 1, BUY, 10000, 2, stp=StpMode.DECREMENT)),
           ("ORDER_ACCEPTED", {}),
           ("TRADE_PREVENTED", dict(prevented_match_id=1, taker_prevented_lot=2, maker_prevented_lot=2,
                                    maker_leaves_qty_lot=1, taker_leaves_qty_lot=0)),
           ("ORDER_EXPIRED", dict(order_id=2, reason=Reason.SELF_TRADE_PREVENTED, qty_lot=2, executed_qty_lot=0)),
           ("BOOK_UPDATE", dict(level_qty_lot=1, level_orders=1)))
    # the maker keeps its total: qty_lot is the original quantity in every later event
    expect(m.run(cancel(3, 1, 0, 1)), ("ORDER_CANCELED", dict(order_id=1, qty_lot=3, executed_qty_lot=0)),
           ("BOOK_UPDATE", dict(level_qty_lot=0)))
    m.run(limit(4, 1, SELL, 10000, 2))
    expect(m.run(limit(5, 1, BUY, 10000, 2, stp=StpMode.DECREMENT)),
           ("ORDER_ACCEPTED", {}),
           ("TRADE_PREVENTED", dict(prevented_match_id=2, maker_leaves_qty_lot=0, taker_leaves_qty_lot=0)),
           ("ORDER_EXPIRED", dict(order_id=4)),  # both reach zero: the maker's first
           ("ORDER_EXPIRED", dict(order_id=5)),
           ("BOOK_UPDATE", dict(level_qty_lot=0)))


# --- cancel ---------------------------------------------------------------------------------
def test_cancel_own_order(market):
    m = market()
    m.run(limit(1, 1, SELL, 10000, 3, cid=b"orig"))
    m.run(limit(2, 2, BUY, 10000, 1))
    expect(m.run(cancel(3, 1, 0, 1)),
           ("ORDER_CANCELED", dict(order_id=1, account_id=1, reason=Reason.CANCELED_BY_USER,
                                   status=OrderStatus.CANCELED, price_tick=10000, qty_lot=3, executed_qty_lot=1,
                                   cum_quote_minor=100_000, side=SELL, client_order_id=b"")),
           ("BOOK_UPDATE", dict(price_tick=10000, level_qty_lot=0, level_orders=0, side=SELL)))
    assert m.levels(0, SELL) == []


@pytest.mark.parametrize("acct, sym, order_id", [(1, 0, 999), (2, 0, 1), (1, 1, 1)],
                         ids=["unknown id", "another account's", "another symbol"])
def test_cancel_rejected_unknown_order(market, acct, sym, order_id):
    m = market()
    m.run(limit(1, 1, SELL, 10000, 3))
    expect(m.run(cancel(2, acct, sym, order_id)),
           ("CANCEL_REJECTED", dict(order_id=order_id, reason=Reason.UNKNOWN_ORDER, account_id=acct, symbol_id=sym,
                                    price_tick=0, qty_lot=0, status=0)))
    assert m.levels(0, SELL) == [[10000, 3, 1]]


def test_cancel_of_a_finished_order_is_unknown(market):
    m = market()
    m.run(limit(1, 1, SELL, 10000, 1))
    m.run(limit(2, 2, BUY, 10000, 1))
    expect(m.run(cancel(3, 1, 0, 1)), ("CANCEL_REJECTED", dict(order_id=1, reason=Reason.UNKNOWN_ORDER)))


@pytest.mark.parametrize("restriction, partially_filled, allowed", [
    (CancelRestriction.ONLY_NEW, False, True),
    (CancelRestriction.ONLY_NEW, True, False),
    (CancelRestriction.ONLY_PARTIALLY_FILLED, False, False),
    (CancelRestriction.ONLY_PARTIALLY_FILLED, True, True),
])
def test_cancel_restrictions(market, restriction, partially_filled, allowed):
    m = market()
    m.run(limit(1, 1, SELL, 10000, 3))
    if partially_filled:
        m.run(limit(2, 2, BUY, 10000, 1))
    rows = m.run(cancel(3, 1, 0, 1, restriction))
    if allowed:
        expect(rows, ("ORDER_CANCELED", dict(order_id=1)), ("BOOK_UPDATE", dict(level_qty_lot=0)))
    else:
        expect(rows, ("CANCEL_REJECTED", dict(order_id=1, reason=Reason.CANCEL_RESTRICTED)))
        assert m.open_orders(0, SELL) == [1]


def test_cancel_all_bids_best_first_then_asks(market):
    m = market()
    m.run(limit(1, 1, BUY, 9999, 1))
    m.run(limit(2, 1, BUY, 10000, 2))
    m.run(limit(3, 1, BUY, 10000, 3))
    m.run(limit(4, 1, SELL, 10002, 4))
    m.run(limit(5, 1, SELL, 10001, 5))
    m.run(limit(6, 2, BUY, 10000, 6))
    m.run(limit(7, 1, SELL, 10001, 1, sym=1))
    rows = m.run(cancel_all(8, 1, 0))
    expect(rows,
           ("ORDER_CANCELED", dict(order_id=2, qty_lot=2)), ("ORDER_CANCELED", dict(order_id=3)),
           ("ORDER_CANCELED", dict(order_id=1)), ("ORDER_CANCELED", dict(order_id=5)),
           ("ORDER_CANCELED", dict(order_id=4, reason=Reason.CANCELED_BY_USER, status=OrderStatus.CANCELED)),
           ("BOOK_UPDATE", dict(price_tick=10000, side=BUY, level_qty_lot=6, level_orders=1)),
           ("BOOK_UPDATE", dict(price_tick=9999, side=BUY, level_qty_lot=0)),
           ("BOOK_UPDATE", dict(price_tick=10001, side=SELL, level_qty_lot=0)),
           ("BOOK_UPDATE", dict(price_tick=10002, side=SELL, level_qty_lot=0)))
    assert m.open_orders(0, BUY) == [6] and m.open_orders(1, SELL) == [7]
    expect(m.run(cancel_all(9, 1, 0)), ("CANCEL_REJECTED", dict(order_id=0, reason=Reason.UNKNOWN_ORDER)))


# --- amend ----------------------------------------------------------------------------------
def test_amend_quantity_down_keeps_priority_up_loses_it(market):
    m = market()
    m.run(limit(1, 1, BUY, 10000, 5))
    m.run(limit(2, 2, BUY, 10000, 3))
    expect(m.run(amend(3, 1, 0, 1, qty=2)),
           ("ORDER_AMENDED", dict(order_id=1, qty_lot=2, price_tick=10000, status=OrderStatus.NEW, reason=Reason.NONE)),
           ("BOOK_UPDATE", dict(level_qty_lot=5, level_orders=2)))
    assert m.open_orders(0, BUY) == [1, 2]
    expect(m.run(amend(4, 1, 0, 1, qty=6)),
           ("ORDER_AMENDED", dict(order_id=1, qty_lot=6)), ("BOOK_UPDATE", dict(level_qty_lot=9, level_orders=2)))
    assert m.open_orders(0, BUY) == [2, 1]


def test_amend_of_a_partially_filled_order(market):
    m = market()
    m.run(limit(1, 1, BUY, 10000, 5))
    m.run(limit(2, 2, SELL, 10000, 1))
    expect(m.run(amend(3, 1, 0, 1, qty=3)),  # total 3, 1 executed: 2 left
           ("ORDER_AMENDED", dict(qty_lot=3, executed_qty_lot=1, status=OrderStatus.PARTIALLY_FILLED)),
           ("BOOK_UPDATE", dict(level_qty_lot=2)))
    for qty in (1, -1):  # not above what is executed
        expect(m.run(amend(4, 1, 0, 1, qty=qty)),
               ("CANCEL_REJECTED", dict(order_id=1, reason=Reason.INVALID_AMOUNT)))
    assert m.levels(0, BUY) == [[10000, 2, 1]]


def test_amend_price_loses_priority_and_may_take(market):
    m = market()
    m.run(limit(1, 1, BUY, 10000, 5))
    m.run(limit(2, 2, BUY, 10000, 1))
    m.run(limit(3, 3, SELL, 10002, 2))
    expect(m.run(amend(4, 1, 0, 1, price=10002)),
           ("ORDER_AMENDED", dict(order_id=1, price_tick=10002, qty_lot=5)),
           ("FILL", dict(maker_order_id=3, taker_order_id=1, price_tick=10002, qty_lot=2, taker_leaves_qty_lot=3,
                         taker_side=BUY, flags=FLAG_MAKER_DONE)),
           ("BOOK_UPDATE", dict(price_tick=10000, side=BUY, level_qty_lot=1, level_orders=1)),
           ("BOOK_UPDATE", dict(price_tick=10002, side=SELL, level_qty_lot=0)),
           ("BOOK_UPDATE", dict(price_tick=10002, side=BUY, level_qty_lot=3, level_orders=1)))
    assert m.levels(0, BUY) == [[10002, 3, 1], [10000, 1, 1]]


def test_amend_rejections(market):
    m = market()
    m.run(new_order(1, 1, 0, BUY, LIMIT_MAKER, price=10000, qty=2))
    m.run(limit(2, 2, SELL, 10001, 1))
    expect(m.run(amend(3, 1, 0, 1, price=10001)), ("CANCEL_REJECTED", dict(order_id=1, reason=Reason.WOULD_MATCH)))
    expect(m.run(amend(4, 2, 0, 1, qty=1)), ("CANCEL_REJECTED", dict(order_id=1, reason=Reason.UNKNOWN_ORDER)))
    expect(m.run(amend(5, 1, 0, 77, qty=1)), ("CANCEL_REJECTED", dict(order_id=77, reason=Reason.UNKNOWN_ORDER)))
    assert m.levels(0, BUY) == [[10000, 2, 1]]
    expect(m.run(amend(6, 1, 0, 1, price=9999)),  # a LIMIT_MAKER may move where it does not cross
           ("ORDER_AMENDED", dict(price_tick=9999, order_type=LIMIT_MAKER)),
           ("BOOK_UPDATE", dict(price_tick=10000, level_qty_lot=0)), ("BOOK_UPDATE", dict(price_tick=9999)))


# --- icebergs -------------------------------------------------------------------------------
def test_iceberg_shows_a_slice_and_refreshes_it_at_the_back(market):
    m = market()
    expect(m.run(limit(1, 1, SELL, 10000, 10, iceberg=3)), ("ORDER_ACCEPTED", dict(qty_lot=10)),
           ("BOOK_UPDATE", dict(level_qty_lot=3, level_orders=1)))
    m.run(limit(2, 2, SELL, 10000, 4))
    assert m.levels(0, SELL) == [[10000, 7, 2]]
    # the slice goes: the next one (3) joins behind order 2; the level shows 7 again, unchanged
    expect(m.run(limit(3, 3, BUY, 10000, 3)), ("ORDER_ACCEPTED", {}),
           ("FILL", dict(maker_order_id=1, qty_lot=3, maker_leaves_qty_lot=7, flags=FLAG_TAKER_DONE | FLAG_END)))
    assert m.open_orders(0, SELL) == [2, 1] and m.levels(0, SELL) == [[10000, 7, 2]]
    rows = m.run(limit(4, 3, BUY, 10000, 11))
    assert [(f["maker_order_id"], f["qty_lot"], f["maker_leaves_qty_lot"], f["flags"] & ~FLAG_END)
            for f in rows if f["type"] == "FILL"] == [
        (2, 4, 0, FLAG_MAKER_DONE), (1, 3, 4, 0), (1, 3, 1, 0), (1, 1, 0, FLAG_MAKER_DONE | FLAG_TAKER_DONE)]
    expect(rows[-1:], ("BOOK_UPDATE", dict(level_qty_lot=0, level_orders=0)))


def test_fok_counts_an_icebergs_hidden_quantity(market):
    m = market()
    m.run(limit(1, 1, SELL, 10000, 10, iceberg=4))
    rows = m.run(limit(2, 2, BUY, 10000, 10, tif=FOK))
    assert [f["qty_lot"] for f in rows if f["type"] == "FILL"] == [4, 4, 2]


def test_iceberg_amends_trim_or_renew_the_slice(market):
    m = market()
    m.run(limit(1, 1, SELL, 10000, 10, iceberg=4))
    m.run(limit(2, 2, BUY, 10000, 3))  # 1 of the slice left, 7 in all
    assert m.levels(0, SELL) == [[10000, 1, 1]]
    m.run(amend(3, 1, 0, 1, price=10001))  # re-enters its new level with a fresh slice
    assert m.levels(0, SELL) == [[10001, 4, 1]]
    m.run(amend(4, 1, 0, 1, qty=5))  # 3 executed: 2 left, the slice shrinks to them
    assert m.levels(0, SELL) == [[10001, 2, 1]]


def test_decrement_works_on_an_icebergs_slice(market):
    m = market()
    m.run(limit(1, 1, SELL, 10000, 10, iceberg=3))
    # slice 3 taken (refreshed: 3 more), then 2 of the next: the taker reaches zero
    expect(m.run(limit(2, 1, BUY, 10000, 5, stp=StpMode.DECREMENT)),
           ("ORDER_ACCEPTED", {}),
           ("TRADE_PREVENTED", dict(prevented_match_id=1, maker_prevented_lot=3, taker_leaves_qty_lot=2)),
           ("TRADE_PREVENTED", dict(prevented_match_id=2, maker_prevented_lot=2, maker_leaves_qty_lot=5,
                                    taker_leaves_qty_lot=0)),
           ("ORDER_EXPIRED", dict(order_id=2, reason=Reason.SELF_TRADE_PREVENTED, executed_qty_lot=0)),
           ("BOOK_UPDATE", dict(level_qty_lot=1, level_orders=1)))


# --- extremes and id sequences --------------------------------------------------------------
def test_largest_price_times_largest_quantity(market):
    m = market()
    m.run(limit(1, 1, SELL, MAX_TICK_0, MAX_LOT_0))
    rows = m.run(limit(2, 2, BUY, MAX_TICK_0, MAX_LOT_0))
    # 1000000 USDT x 9000 BTC = 9e9 USDT = 9e17 minor
    expect(rows, ("ORDER_ACCEPTED", {}),
           ("FILL", dict(price_tick=MAX_TICK_0, qty_lot=MAX_LOT_0, quote_qty_minor=900_000_000_000_000_000)),
           ("BOOK_UPDATE", dict(price_tick=MAX_TICK_0, level_qty_lot=0)))
    m.run(limit(3, 1, SELL, MAX_TICK_1, MAX_LOT_1, sym=1))
    rows = m.run(market_order(4, 2, BUY, qty=MAX_LOT_1, sym=1))
    assert rows[1]["quote_qty_minor"] == 200_000 * 1_000_000 * 50  # 100000 EUR x 1e6 = 1e11 EUR in cents


def test_smallest_tick_and_lot(market):
    m = market()
    m.run(limit(1, 1, SELL, 1, 1))
    m.run(limit(2, 1, SELL, 1, 1, sym=1))
    assert m.run(limit(3, 2, BUY, 1, 1))[1]["quote_qty_minor"] == 10  # 0.01 x 0.00001 = 1e-7 USDT
    assert m.run(limit(4, 2, BUY, 1, 1, sym=1))[1]["quote_qty_minor"] == 50  # 0.5 EUR


def test_far_apart_prices_share_one_book(market):
    m = market()
    for seq, price in enumerate((5, MAX_TICK_0, 10000, 1, MAX_TICK_0 - 1), start=1):
        m.run(limit(seq, 1, SELL, price, seq))
    assert m.levels(0, SELL) == [[1, 4, 1], [5, 1, 1], [10000, 3, 1], [MAX_TICK_0 - 1, 5, 1], [MAX_TICK_0, 2, 1]]
    expect(m.run(market_order(6, 2, BUY, qty=15))[-5:], *[("BOOK_UPDATE", dict(level_qty_lot=0))] * 5)


def test_trade_and_book_update_ids_count_per_symbol(market):
    m = market()
    got = []
    for cmd in (limit(1, 1, SELL, 10000, 2), limit(2, 1, SELL, 200, 2, sym=1), limit(3, 2, BUY, 10000, 1),
                limit(4, 2, BUY, 200, 1, sym=1), limit(5, 2, BUY, 10000, 1), limit(6, 2, BUY, 201, 3, sym=1)):
        for r in m.run(cmd):
            if r["type"] in ("FILL", "BOOK_UPDATE"):
                got.append((r["symbol_id"], r["type"], r.get("trade_id", r.get("book_update_id"))))
    assert got == [
        (0, "BOOK_UPDATE", 1), (1, "BOOK_UPDATE", 1),
        (0, "FILL", 1), (0, "BOOK_UPDATE", 2), (1, "FILL", 1), (1, "BOOK_UPDATE", 2),
        (0, "FILL", 2), (0, "BOOK_UPDATE", 3),
        (1, "FILL", 2), (1, "BOOK_UPDATE", 3), (1, "BOOK_UPDATE", 4),  # ask 200 gone, bid 201 (2)
    ]


# --- stops ----------------------------------------------------------------------------------
def test_stop_waits_then_triggers_on_the_last_trade_price(market):
    m = market()
    m.run(limit(1, 1, BUY, 9999, 5))
    m.run(limit(2, 2, SELL, 10000, 1))
    # no trade yet, so no last price: it waits (no BOOK_UPDATE)
    expect(m.run(market_order(3, 3, SELL, qty=2, otype=OrderType.STOP_LOSS, stop=10000)),
           ("ORDER_ACCEPTED", dict(order_id=3, order_type=OrderType.STOP_LOSS, stop_price_tick=10000, qty_lot=2)))
    assert m.levels(0, SELL) == [[10000, 1, 1]] and m.impl.order(3) is not None
    expect(m.run(limit(4, 4, BUY, 10000, 1)),
           ("ORDER_ACCEPTED", dict(order_id=4, account_id=4)),
           ("FILL", dict(account_id=4, price_tick=10000, qty_lot=1, flags=FLAG_MAKER_DONE | FLAG_TAKER_DONE)),
           # last = 100.00 <= stop 100.00: the stop is a market sell now, results in its account
           ("ORDER_TRIGGERED", dict(order_id=3, account_id=3, status=OrderStatus.NEW, reason=Reason.NONE,
                                    order_type=OrderType.STOP_LOSS, stop_price_tick=10000, qty_lot=2)),
           ("FILL", dict(account_id=3, taker_order_id=3, maker_order_id=1, price_tick=9999, qty_lot=2,
                         taker_order_type=OrderType.STOP_LOSS, taker_side=SELL, taker_leaves_qty_lot=0,
                         maker_leaves_qty_lot=3, flags=FLAG_TAKER_DONE)),
           ("BOOK_UPDATE", dict(price_tick=10000, side=SELL, level_qty_lot=0)),
           ("BOOK_UPDATE", dict(price_tick=9999, side=BUY, level_qty_lot=3)))
    assert m.impl.order(3) is None


def test_stop_that_would_trigger_at_once_is_rejected(market):
    m = market()
    m.run(limit(1, 1, SELL, 10000, 1))
    m.run(limit(2, 2, BUY, 10000, 1))  # last = 10000
    expect(m.run(market_order(3, 3, SELL, qty=1, otype=OrderType.STOP_LOSS, stop=10000)),
           ("ORDER_REJECTED", dict(order_id=3, reason=Reason.WOULD_TRIGGER, status=OrderStatus.REJECTED)))
    expect(m.run(market_order(4, 3, BUY, qty=1, otype=OrderType.TAKE_PROFIT, stop=10000)),
           ("ORDER_REJECTED", dict(order_id=4, reason=Reason.WOULD_TRIGGER)))
    expect(m.run(market_order(5, 3, SELL, qty=1, otype=OrderType.STOP_LOSS, stop=9999)),  # last above: waits
           ("ORDER_ACCEPTED", dict(order_id=5)))
    expect(m.run(market_order(6, 3, BUY, qty=1, otype=OrderType.STOP_LOSS, stop=10001)), ("ORDER_ACCEPTED", {}))


def test_stops_fire_falls_highest_first_then_rises_lowest_first(market):
    m = market()
    sll, tpl = OrderType.STOP_LOSS_LIMIT, OrderType.TAKE_PROFIT_LIMIT
    # limit prices that rest without trading, so that firing does not move the last price
    stops = [(10, SELL, sll, 10000, 10020), (11, SELL, sll, 10001, 10020), (12, BUY, tpl, 10001, 9980),
             (13, BUY, sll, 9995, 9980), (14, SELL, tpl, 9990, 10020)]
    for seq, side, otype, stop, price in stops:
        expect(m.run(new_order(seq, 5, 0, side, otype, GTC, price=price, qty=1, stop=stop)), ("ORDER_ACCEPTED", {}))
    m.run(limit(20, 1, SELL, 9999, 1))
    rows = m.run(limit(21, 2, BUY, 9999, 1))
    assert [r["order_id"] for r in rows if r["type"] == "ORDER_TRIGGERED"] == [11, 12, 10, 14, 13]
    expect(rows[-3:], ("BOOK_UPDATE", dict(price_tick=9999, side=SELL, level_qty_lot=0)),
           ("BOOK_UPDATE", dict(price_tick=10020, side=SELL, level_qty_lot=3, level_orders=3)),
           ("BOOK_UPDATE", dict(price_tick=9980, side=BUY, level_qty_lot=2, level_orders=2)))
    assert m.open_orders(0, SELL) == [11, 10, 14] and m.open_orders(0, BUY) == [12, 13]


def test_triggered_stop_limit_fok_that_cannot_fill(market):
    m = market()
    m.run(new_order(1, 3, 0, BUY, OrderType.STOP_LOSS_LIMIT, FOK, price=10001, qty=5, stop=10000))
    m.run(limit(2, 1, SELL, 10000, 2))
    rows = m.run(limit(3, 2, BUY, 10000, 1))
    expect(rows[-3:],
           ("ORDER_TRIGGERED", dict(order_id=1, time_in_force=FOK)),
           ("ORDER_EXPIRED", dict(order_id=1, account_id=3, reason=Reason.FOK_UNFILLED, executed_qty_lot=0)),
           ("BOOK_UPDATE", dict(price_tick=10000, level_qty_lot=1)))


def test_cancel_amend_and_cancel_all_of_waiting_stops(market):
    m = market()
    m.run(new_order(1, 1, 0, SELL, OrderType.STOP_LOSS, qty=1, stop=9000))
    m.run(new_order(2, 1, 0, SELL, OrderType.STOP_LOSS, qty=1, stop=9500))
    m.run(new_order(3, 1, 0, BUY, OrderType.TAKE_PROFIT_LIMIT, price=8000, qty=1, stop=9000))
    m.run(limit(4, 1, SELL, 20000, 1))
    expect(m.run(amend(5, 1, 0, 1, qty=2)),
           ("CANCEL_REJECTED", dict(order_id=1, reason=Reason.UNSUPPORTED_COMBINATION)))
    expect(m.run(cancel(6, 1, 0, 1)), ("ORDER_CANCELED", dict(order_id=1, stop_price_tick=9000)))  # no BOOK_UPDATE
    m.run(new_order(7, 1, 0, BUY, OrderType.STOP_LOSS, qty=1, stop=12000))
    rows = m.run(cancel_all(8, 1, 0))
    # book first, then the stop book: falls highest first, FIFO, then rises lowest first
    assert [r["order_id"] for r in rows if r["type"] == "ORDER_CANCELED"] == [4, 2, 3, 7]
    expect(rows[-1:], ("BOOK_UPDATE", dict(price_tick=20000, level_qty_lot=0)))


# --- capacity, passthrough, batches -----------------------------------------------------------
def test_book_full(market):
    m = market(max_orders=2, max_levels=1)
    m.run(limit(1, 1, BUY, 10000, 1))
    expect(m.run(limit(2, 1, BUY, 9999, 1)),  # a second level on the bid side
           ("ORDER_ACCEPTED", {}), ("ORDER_EXPIRED", dict(order_id=2, reason=Reason.BOOK_FULL,
                                                          status=OrderStatus.EXPIRED)))
    expect(m.run(limit(3, 1, SELL, 10005, 1)), ("ORDER_ACCEPTED", {}), ("BOOK_UPDATE", {}))
    expect(m.run(limit(4, 2, BUY, 10000, 1, tif=IOC, cid=b"full")),  # two orders open: no slot
           ("ORDER_REJECTED", dict(order_id=4, reason=Reason.BOOK_FULL, status=OrderStatus.REJECTED,
                                   client_order_id=b"full")))
    m.run(cancel(5, 1, 0, 1))
    expect(m.run(limit(6, 2, BUY, 10001, 1)), ("ORDER_ACCEPTED", {}), ("BOOK_UPDATE", {}))


def test_rejections_from_risk_come_back_unchanged_but_for_flag_end(market):
    m = market()
    m.run(limit(1, 1, BUY, 10000, 1))
    rej = records.empty(RecordType.ORDER_REJECTED)
    rej["seq"], rej["ts_ns"], rej["source_seq"], rej["account_id"] = 2, 2000, 55, 4
    rej["reason"], rej["order_id"], rej["client_order_id"], rej["qty_lot"] = Reason.INSUFFICIENT_BALANCE, 2, b"x", 9
    out = m.impl.process(rej)
    expected = rej.copy()
    expected["flags"] |= FLAG_END
    assert out.tobytes() == expected.tobytes()
    # the next command's results name it as their cause, not the passed-through refusal
    nxt = limit(3, 1, BUY, 10000, 1)
    nxt["source"], nxt["source_seq"] = 2, 77
    assert decode(m.impl.process(nxt))[0]["source_seq"] == (2 << 48) | 77


def test_one_batch_or_one_by_one_same_bytes(market):
    cmds = [limit(1, 1, SELL, 10000, 3), limit(2, 2, SELL, 10001, 3), market_order(3, 3, BUY, quote=450_000),
            new_order(4, 1, 0, BUY, OrderType.STOP_LOSS, qty=1, stop=10001), limit(5, 3, BUY, 10001, 3),
            cancel(6, 2, 0, 2), cancel_all(7, 1, 0), amend(8, 3, 0, 5, qty=1)]
    a, b = market(), market()
    one = a.impl.process(batch(*cmds))
    assert b"".join(b.impl.process(c).tobytes() for c in cmds) == one.tobytes()
    assert market().impl.process(list(cmds)).tobytes() == one.tobytes()  # a list of arrays works too


# --- corners the differential test (tests/property/test_matching_differential.py) found wrong --
def test_decrement_that_spends_a_quote_order_exactly_expires_it(market):
    """DECREMENT expires "whichever reaches zero (both if equal)": a MARKET by quote whose
    quote the decrement used up reached zero, so it expires after the maker (else it never
    gets a final result)."""
    m = market()
    m.run(limit(1, 1, BUY, 10000, 1))
    expect(m.run(market_order(2, 1, SELL, quote=100_000, stp=StpMode.DECREMENT)),
           ("ORDER_ACCEPTED", dict(order_id=2)),
           ("TRADE_PREVENTED", dict(taker_prevented_lot=0, maker_prevented_lot=1, taker_leaves_qty_lot=0)),
           ("ORDER_EXPIRED", dict(order_id=1, reason=Reason.SELF_TRADE_PREVENTED)),
           ("ORDER_EXPIRED", dict(order_id=2, reason=Reason.SELF_TRADE_PREVENTED, status=OrderStatus.EXPIRED_IN_MATCH,
                                  qty_lot=0, executed_qty_lot=0)),
           ("BOOK_UPDATE", dict(price_tick=10000, side=BUY, level_qty_lot=0)))


def test_no_book_update_for_a_level_that_ends_as_it_began(market):
    """BOOK_UPDATE is "one per price level whose state changed": a level that appears and
    goes within one command (here: the taker's remainder rests, then a stop it triggered
    takes it) did not change."""
    m = market()
    m.run(limit(1, 1, SELL, 10001, 3))
    m.run(market_order(2, 2, SELL, qty=1, otype=OrderType.STOP_LOSS, stop=10001))
    expect(m.run(limit(3, 3, BUY, 10002, 4)),
           ("ORDER_ACCEPTED", dict(order_id=3)),
           ("FILL", dict(maker_order_id=1, price_tick=10001, qty_lot=3, taker_leaves_qty_lot=1)),
           ("ORDER_TRIGGERED", dict(order_id=2, account_id=2)),
           ("FILL", dict(maker_order_id=3, taker_order_id=2, price_tick=10002, qty_lot=1,
                         flags=FLAG_MAKER_DONE | FLAG_TAKER_DONE)),
           ("BOOK_UPDATE", dict(price_tick=10001, side=SELL, level_qty_lot=0)))


def test_amend_never_leaves_an_empty_order_in_the_book(market):
    """After DECREMENT took 1 of a resting order's 2 lots, an amend to a total of 1 would leave
    nothing to trade (leaves = new total - executed - prevented): INVALID_AMOUNT, never an
    order of 0 at a level of quantity 0."""
    m = market()
    m.run(limit(1, 1, SELL, 10000, 1))
    m.run(limit(2, 1, BUY, 10000, 2, stp=StpMode.DECREMENT))  # order 2 rests with 1 of 2
    assert m.levels(0, BUY) == [[10000, 1, 1]]
    rows = m.run(amend(3, 1, 0, 2, qty=1))
    assert all(level[1] > 0 for level in m.levels(0, BUY)), m.levels(0, BUY)
    expect(rows, ("CANCEL_REJECTED", dict(order_id=2, reason=Reason.INVALID_AMOUNT)))
    rows = m.run(limit(4, 2, SELL, 10000, 1))
    assert all(r["qty_lot"] > 0 for r in rows if r["type"] == "FILL"), rows


@pytest.mark.parametrize("price, qty, leaves", [(10001, 0, 2), (0, 4, 3)], ids=["price", "qty up"])
def test_amend_that_reenters_keeps_what_decrement_took(market, price, qty, leaves):
    """DECREMENT took 1 of 3 (leaves 2, total still 3): moving the order must not give the lot
    back, and a new total of 4 leaves 4 - 1 decremented = 3."""
    m = market()
    m.run(limit(1, 1, SELL, 10000, 3))
    m.run(limit(2, 1, BUY, 10000, 1, stp=StpMode.DECREMENT))
    assert m.levels(0, SELL) == [[10000, 2, 1]]
    rows = m.run(amend(3, 1, 0, 1, price=price, qty=qty))
    expect(rows[:1], ("ORDER_AMENDED", dict(order_id=1, qty_lot=qty or 3, price_tick=price or 10000)))
    assert m.levels(0, SELL) == [[price or 10000, leaves, 1]]


def test_rejected_quote_order_with_a_quantity_cap_reports_qty_0(market):
    """"results then report as qty_lot 0" when the quantity is a cap: ORDER_REJECTED too."""
    m = market(max_orders=1)
    m.run(limit(1, 1, SELL, 10000, 1))
    capped = market_order(2, 3, SELL, qty=2, quote=300_000)
    capped["flags"] = FLAG_QTY_CAP
    expect(m.run(capped), ("ORDER_REJECTED", dict(order_id=2, reason=Reason.BOOK_FULL, qty_lot=0)))
