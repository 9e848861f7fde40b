"""Trailing-delta stops: the scenarios of Binance's trailing-stop FAQ replayed trade by trade
in the matching engine, tracking on every fill of a sweep, cancel / cancel-all / amend, and
through the whole exchange the TRAILING_DELTA filter and the hold of a trailing market buy."""

from __future__ import annotations

import pytest

from ganntec.engines.matching import MatchingEngine
from ganntec.engines.symbols import Asset, Symbol, symbol_table
from ganntec.exchange import Exchange
from ganntec.shm import records as R
from ganntec.shm.records import OrderType as OT
from ganntec.shm.records import Reason, RecordType, Side, StpMode, TimeInForce

BTC, USDT = Asset(0, "BTC", 8), Asset(1, "USDT", 8)
SYM = Symbol(0, "BTCUSDT", BTC, USDT, tick_size="0.5", step_size="0.001", min_price="0.5", max_price="1000000",
             min_qty="0.001", max_qty="9000", maker_fee="0", taker_fee="0", bid_multiplier_up="100",
             bid_multiplier_down="0.01", ask_multiplier_up="100", ask_multiplier_down="0.01",
             max_trailing_above_delta=1500, max_trailing_below_delta=1500)
TRADER, OTHER, STOPPER = 1, 2, 3


class Market:
    """One matching engine; `trade(price)` makes one trade there between two other accounts."""

    def __init__(self):
        self.engine = MatchingEngine(symbol_table([SYM]))
        self.seq = 0

    def new(self, acc, side, price, qty, otype=OT.LIMIT, tif=TimeInForce.GTC, stop=0, trail=0):
        self.seq += 1
        r = R.empty(RecordType.NEW_ORDER)
        r["seq"], r["account_id"], r["side"], r["price_tick"], r["qty_lot"] = self.seq, acc, side, price, qty
        r["order_type"], r["time_in_force"], r["stop_price_tick"] = otype, tif, stop
        r["trailing_delta_bips"], r["stp_mode"] = trail, StpMode.NONE
        return self.types(self.engine.process(r))

    def trade(self, tick):
        self.new(TRADER, Side.SELL, tick, 1)
        return self.new(OTHER, Side.BUY, tick, 1, tif=TimeInForce.IOC)

    @staticmethod
    def types(out):
        return [RecordType(int(r["type"])).name for r in out]


def tick(price):
    return SYM.price_to_tick("price", price)


def replay(side, otype, limit, stop, delta, before, path):
    """Place a trailing stop after a trade at `before`, then trade along `path`; returns the
    index in `path` of the trade that triggered it (None if none did)."""
    m = Market()
    m.trade(tick(before))
    placed = m.new(STOPPER, side, tick(limit) if limit else 0, 10, otype, stop=tick(stop) if stop else 0, trail=delta)
    assert placed == ["ORDER_ACCEPTED"]
    for i, price in enumerate(path):
        if "ORDER_TRIGGERED" in m.trade(tick(price)):
            return i
    return None


# The FAQ's scenarios A-E (prices in USDT): the trade at which each triggers.
def test_scenario_a_stop_loss_limit_buy():
    path = ["37000", "44000", "46000", "42000", "44099.5", "44100"]
    assert replay(Side.BUY, OT.STOP_LOSS_LIMIT, "45000", "44000", 500, "40000", path) == 5


def test_scenario_b_stop_loss_limit_sell():
    path = ["41500", "39000", "37000", "41000", "36900.5", "36900"]
    assert replay(Side.SELL, OT.STOP_LOSS_LIMIT, "38000", "39000", 1000, "40000", path) == 5


def test_scenario_c_take_profit_limit_buy():
    path = ["42000", "38000", "37000", "39000", "38000", "40144.5", "40145"]
    assert replay(Side.BUY, OT.TAKE_PROFIT_LIMIT, "38500", "38000", 850, "40000", path) == 6


def test_scenario_d_take_profit_limit_sell():
    path = ["41500", "39000", "42000", "45000", "44000", "46500", "43013", "43012.5"]
    assert replay(Side.SELL, OT.TAKE_PROFIT_LIMIT, "41000", "42000", 750, "40000", path) == 7


def test_scenario_e_no_stop_price_tracks_from_the_last_trade():
    path = ["42000", "39500", "45500", "42315.5", "42315"]
    assert replay(Side.SELL, OT.STOP_LOSS_LIMIT, "39000", None, 700, "40000", path) == 4
    # Without any trade yet, the first trade is the reference.
    m = Market()
    assert m.new(STOPPER, Side.SELL, 0, 10, OT.STOP_LOSS, trail=1000) == ["ORDER_ACCEPTED"]
    assert "ORDER_TRIGGERED" not in m.trade(tick("100"))
    assert "ORDER_TRIGGERED" in m.trade(tick("90"))


def test_every_fill_of_a_sweep_counts_not_only_the_last_price():
    """A sell sweep 104 -> 103.5 -> 102 through a TAKE_PROFIT SELL at 103 (1%): the first fill
    meets the stop (tracking from 104), the last is 1.9% below: it fires in that command."""
    m = Market()
    m.trade(tick("100"))
    assert m.new(STOPPER, Side.SELL, 0, 5, OT.TAKE_PROFIT, stop=tick("103"), trail=100) == ["ORDER_ACCEPTED"]
    for price in ("104", "103.5", "102", "90"):
        m.new(TRADER, Side.BUY, tick(price), 1)
    out = m.new(OTHER, Side.SELL, tick("102"), 3, tif=TimeInForce.IOC)
    assert out.count("FILL") == 4 and "ORDER_TRIGGERED" in out   # its own market sell hits 90
    assert m.engine.order(3) is None


def test_would_trigger_cancel_cancel_all_and_amend():
    m = Market()
    m.trade(tick("100"))
    out = m.engine.process(_stop(m, Side.BUY, OT.STOP_LOSS, stop="99", trail=100))
    assert (Market.types(out), int(out[0]["reason"])) == (["ORDER_REJECTED"], Reason.WOULD_TRIGGER)
    m.engine.process(_stop(m, Side.BUY, OT.STOP_LOSS, stop=None, trail=100))
    trailing = m.seq
    m.engine.process(_stop(m, Side.SELL, OT.STOP_LOSS, stop="90", trail=100))
    amend = R.empty(RecordType.AMEND)
    amend["account_id"], amend["order_id"], amend["new_qty_lot"] = STOPPER, trailing, 1
    out = m.engine.process(amend)
    assert (Market.types(out), int(out[0]["reason"])) == (["CANCEL_REJECTED"], Reason.UNSUPPORTED_COMBINATION)
    cancel = R.empty(RecordType.CANCEL)
    cancel["account_id"], cancel["order_id"] = STOPPER, trailing
    assert Market.types(m.engine.process(cancel)) == ["ORDER_CANCELED"]
    m.engine.process(_stop(m, Side.SELL, OT.TAKE_PROFIT, stop=None, trail=200))
    everything = R.empty(RecordType.CANCEL_ALL)
    everything["account_id"] = STOPPER
    out = m.engine.process(everything)
    assert [int(R.view(r)["order_id"]) for r in out] == [m.seq - 1, m.seq]   # arrival order
    assert "ORDER_TRIGGERED" not in m.trade(tick("50"))   # nothing left to fire


def _stop(m, side, otype, stop, trail):
    m.seq += 1
    r = R.empty(RecordType.NEW_ORDER)
    r["seq"], r["account_id"], r["side"], r["qty_lot"], r["order_type"] = m.seq, STOPPER, side, 1, otype
    r["stop_price_tick"], r["trailing_delta_bips"] = tick(stop) if stop else 0, trail
    return r


# --- through the whole exchange -------------------------------------------------------------
@pytest.fixture
def ex():
    e = Exchange([SYM], max_accounts=8)
    for acc in (TRADER, OTHER, STOPPER):
        e.open_account(acc)
        e.deposit(acc, "USDT", "1000000")
        e.deposit(acc, "BTC", "10")
    return e


def submit_stop(ex, side, otype, trail, stop=0, qty=1000, price=0):
    r = ex.orders(STOPPER, side, price, qty, otype, tif=TimeInForce.GTC if price else 0)
    r["stop_price_tick"], r["trailing_delta_bips"] = stop, trail
    out = ex.submit(r)
    return [(RecordType(int(x["type"])).name, Reason(int(x["reason"])).name) for x in out
            if int(x["type"]) in (RecordType.ORDER_ACCEPTED, RecordType.ORDER_REJECTED)][0]


def test_trailing_delta_filter_and_combinations(ex):
    # STOP_LOSS BUY triggers on a rise: the "above" range; a SELL: the "below" range.
    assert submit_stop(ex, Side.BUY, OT.STOP_LOSS, 9) == ("ORDER_REJECTED", "FILTER_TRAILING_DELTA")
    assert submit_stop(ex, Side.SELL, OT.STOP_LOSS, 1501) == ("ORDER_REJECTED", "FILTER_TRAILING_DELTA")
    assert submit_stop(ex, Side.SELL, OT.STOP_LOSS, 1500) == ("ORDER_ACCEPTED", "NONE")
    assert submit_stop(ex, Side.BUY, OT.LIMIT, 100, price=tick("10")) == ("ORDER_REJECTED", "UNSUPPORTED_COMBINATION")
    assert submit_stop(ex, Side.BUY, OT.STOP_LOSS, 0) == ("ORDER_REJECTED", "UNSUPPORTED_COMBINATION")
    assert submit_stop(ex, Side.BUY, OT.STOP_LOSS, -5) == ("ORDER_REJECTED", "UNSUPPORTED_COMBINATION")
    assert ex.conservation_errors() == []


def test_trailing_market_buy_holds_its_reference_moved_by_the_delta(ex):
    ex.submit(ex.orders(TRADER, Side.SELL, tick("100"), 1000))
    ex.submit(ex.orders(OTHER, Side.BUY, tick("100"), 1000, tif=TimeInForce.IOC))   # last trade: 100
    # 1 BTC trailing 10% from the last price: holds 110 USDT (its cap once it fires)
    assert submit_stop(ex, Side.BUY, OT.STOP_LOSS, 1000) == ("ORDER_ACCEPTED", "NONE")
    assert ex.balance(STOPPER, "USDT") == ("999890.00000000", "110.00000000")
    # with a stop price, the reference is the stop price: 120 x 1.05
    assert submit_stop(ex, Side.BUY, OT.STOP_LOSS, 500, stop=tick("120")) == ("ORDER_ACCEPTED", "NONE")
    assert ex.balance(STOPPER, "USDT") == ("999764.00000000", "236.00000000")
    # it fires on a rise of 10% from the lowest price (100 -> 90 -> 99) and buys at the ask
    ex.submit(ex.orders(TRADER, Side.SELL, tick("90"), 1000))
    ex.submit(ex.orders(OTHER, Side.BUY, tick("90"), 1000, tif=TimeInForce.IOC))
    ex.submit(ex.orders(TRADER, Side.SELL, tick("99"), 3000))
    out = ex.submit(ex.orders(OTHER, Side.BUY, tick("99"), 1000, tif=TimeInForce.IOC))
    types = [RecordType(int(x["type"])).name for x in out]
    assert "ORDER_TRIGGERED" in types and ex.balance(STOPPER, "BTC") == ("11.00000000", "0.00000000")
    assert ex.balance(STOPPER, "USDT") == ("999775.00000000", "126.00000000")   # paid 99, 11 back
    assert ex.conservation_errors() == []
