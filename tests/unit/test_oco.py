"""OCO order lists through the whole in-process exchange: validation (shape, prices, filters,
client ids), one hold for the pair, activation by a fill or a trigger expiring the other leg,
cancel of one leg cancelling both, cancel-all, balances and credits exact. (Amending a leg:
test_oco_amend.py.)"""

from __future__ import annotations

import pytest

from ganntec.engines.symbols import Asset, Symbol
from ganntec.exchange import Exchange
from ganntec.shm import records as R
from ganntec.shm.records import OrderType as OT
from ganntec.shm.records import Reason, RecordType, Side, StpMode, TimeInForce

BTC, USDT = Asset(0, "BTC", 8), Asset(1, "USDT", 8)
SYM = Symbol(0, "BTCUSDT", BTC, USDT, tick_size="1", step_size="0.01", min_price="1", max_price="1000000",
             min_qty="0.01", max_qty="1000", maker_fee="0", taker_fee="0", bid_multiplier_up="100",
             bid_multiplier_down="0.01", ask_multiplier_up="100", ask_multiplier_down="0.01")
OWNER, MAKER, TAKER = 1, 2, 3
GTC = TimeInForce.GTC


@pytest.fixture
def ex():
    e = Exchange([SYM], max_accounts=8)
    for acc in (OWNER, MAKER, TAKER):
        e.open_account(acc)
        e.deposit(acc, "USDT", "100000")
        e.deposit(acc, "BTC", "10")
    trade(e, 100)   # last trade price 100
    return e


def trade(ex, price, qty=100):
    ex.submit(ex.orders(MAKER, Side.SELL, price, qty))
    return ex.submit(ex.orders(TAKER, Side.BUY, price, qty, tif=TimeInForce.IOC))


def events(out):
    return [(RecordType(int(r["type"])).name, Reason(int(r["reason"])).name, int(R.view(r)["order_id"]))
            for r in out if RecordType.ORDER_ACCEPTED <= int(r["type"]) <= RecordType.CANCEL_REJECTED
            and int(r["type"]) != RecordType.FILL]


def sell_oco(ex, limit=110, stop=90, stop_limit=89, qty=200, **kw):
    return ex.submit(ex.oco(OWNER, Side.SELL, qty, dict(order_type=OT.LIMIT_MAKER, price_tick=limit, **kw),
                            dict(order_type=OT.STOP_LOSS_LIMIT, price_tick=stop_limit, stop_price_tick=stop,
                                 time_in_force=GTC)))


def legs(out):
    ids = [e[2] for e in events(out) if e[0] == "ORDER_ACCEPTED"]
    assert len(ids) == 2
    return ids


def test_sell_oco_enters_with_one_hold_and_a_fill_expires_the_stop_leg(ex):
    out = sell_oco(ex)
    above, below = legs(out)
    assert ex.balance(OWNER, "BTC") == ("8.00000000", "2.00000000")   # 2 BTC once, not twice
    assert [r[:2] for r in ex.book(0, Side.SELL).tolist()] == [[110, 200]]
    out = ex.submit(ex.orders(TAKER, Side.BUY, 110, 50, tif=TimeInForce.IOC))   # partial fill of the limit leg
    assert events(out)[-1] == ("ORDER_EXPIRED", "LIST_OTHER_LEG", below)
    assert ex.balance(OWNER, "BTC") == ("8.00000000", "1.50000000")
    assert ex.driver.matching.order(above)["leaves_lot"] == 150 and ex.driver.matching.order(below) is None
    assert "ORDER_TRIGGERED" not in [e[0] for e in events(trade(ex, 80))]   # the stop leg is gone for good
    assert ex.driver.matching.order(above) is not None
    assert ex.conservation_errors() == [] and ex.driver.order.in_flight == 0


def test_stop_leg_trigger_expires_the_limit_leg_and_trades(ex):
    _, below = legs(sell_oco(ex))
    ex.submit(ex.orders(MAKER, Side.BUY, 89, 500))   # bids the stop-limit can sell into
    out = trade(ex, 90)
    ev = events(out)
    assert ("ORDER_TRIGGERED", "NONE", below) in ev
    assert ev[ev.index(("ORDER_TRIGGERED", "NONE", below)) + 1][:2] == ("ORDER_EXPIRED", "LIST_OTHER_LEG")
    assert len(ex.book(0, Side.SELL)) == 0
    assert ex.balance(OWNER, "BTC") == ("8.00000000", "0.00000000")
    assert ex.balance(OWNER, "USDT") == ("100178.00000000", "0.00000000")   # sold 2 at 89
    assert ex.conservation_errors() == []


def test_buy_oco_locks_what_the_hungrier_leg_needs_and_releases_on_cancel(ex):
    out = ex.submit(ex.oco(OWNER, Side.BUY, 100, dict(order_type=OT.STOP_LOSS_LIMIT, price_tick=120,
                                                       stop_price_tick=115, time_in_force=GTC),
                           dict(order_type=OT.LIMIT_MAKER, price_tick=90)))
    above, below = legs(out)
    assert ex.balance(OWNER, "USDT") == ("99880.00000000", "120.00000000")   # max(120, 90) x 1 BTC
    out = ex.submit(ex.cancels(OWNER, below))   # cancelling one leg cancels the list
    assert events(out) == [("ORDER_CANCELED", "CANCELED_BY_USER", below), ("ORDER_CANCELED", "CANCELED_BY_USER", above)]
    assert ex.balance(OWNER, "USDT") == ("100000.00000000", "0.00000000")
    assert ex.conservation_errors() == [] and ex.driver.order.in_flight == 0


def test_buy_oco_limit_fill_keeps_only_what_the_limit_leg_needs(ex):
    legs(ex.submit(ex.oco(OWNER, Side.BUY, 100, dict(order_type=OT.STOP_LOSS_LIMIT, price_tick=120,
                                                      stop_price_tick=115, time_in_force=GTC),
                          dict(order_type=OT.LIMIT_MAKER, price_tick=90))))
    ex.submit(ex.orders(TAKER, Side.SELL, 90, 40, tif=TimeInForce.IOC))
    assert ex.balance(OWNER, "USDT") == ("99910.00000000", "54.00000000")   # 0.6 BTC left at 90
    assert ex.balance(OWNER, "BTC") == ("10.40000000", "0.00000000")
    assert ex.conservation_errors() == []


def test_cancel_all(ex):
    above, below = legs(sell_oco(ex))
    everything = R.empty(RecordType.CANCEL_ALL)
    everything["account_id"] = OWNER
    assert sorted(e[2] for e in events(ex.submit(everything))) == [above, below]
    assert ex.balance(OWNER, "BTC") == ("10.00000000", "0.00000000") and ex.driver.order.in_flight == 0


@pytest.mark.parametrize("limit, stop, reason", [
    (95, 90, "ORDER_LIST_INVALID"),    # the limit leg must be above the last price (100)
    (110, 105, "ORDER_LIST_INVALID"),  # the stop leg below it
    (110, 2_000_000, "FILTER_PRICE"),
])
def test_price_relationships_and_filters_refuse_both_legs(ex, limit, stop, reason):
    out = sell_oco(ex, limit=limit, stop=stop)
    assert [e[:2] for e in events(out)] == [("ORDER_REJECTED", reason)] * 2
    assert ex.balance(OWNER, "BTC") == ("10.00000000", "0.00000000") and ex.driver.order.in_flight == 0


def test_shape_client_ids_and_funds(ex):
    bad = ex.oco(OWNER, Side.SELL, 200, dict(order_type=OT.STOP_LOSS, stop_price_tick=90),   # both stop losses
                 dict(order_type=OT.STOP_LOSS, stop_price_tick=80))
    assert [e[:2] for e in events(ex.submit(bad))] == [("ORDER_REJECTED", "UNSUPPORTED_COMBINATION")] * 2
    same = sell_oco(ex, client_order_id=b"x")
    legs(same)
    dup = sell_oco(ex, client_order_id=b"x")
    assert [e[:2] for e in events(dup)] == [("ORDER_REJECTED", "DUPLICATE_ORDER")] * 2
    poor = sell_oco(ex, qty=100_000)   # 1000 BTC: more than the account has
    assert [e[:2] for e in events(poor)] == [("ORDER_REJECTED", "INSUFFICIENT_BALANCE")] * 2
    last = [r for r in poor if int(r["flags"]) & R.FLAG_END]
    assert len(last) == 1 and ex.driver.order.in_flight == 0 and ex.conservation_errors() == []


def test_limit_maker_leg_that_would_take_refuses_the_list(ex):
    ex.submit(ex.orders(MAKER, Side.BUY, 105, 100))   # a bid above the limit leg's 104
    out = sell_oco(ex, limit=104, stop=90)
    assert [e[:2] for e in events(out)] == [("ORDER_REJECTED", "WOULD_MATCH")] * 2
    assert ex.balance(OWNER, "BTC") == ("10.00000000", "0.00000000") and ex.conservation_errors() == []


def test_list_client_order_id_is_unique_among_open_lists(ex):
    def listed(list_cid, limit=110):
        cmd = ex.oco(OWNER, Side.SELL, 100, dict(order_type=OT.LIMIT_MAKER, price_tick=limit),
                     dict(order_type=OT.STOP_LOSS, stop_price_tick=90), list_client_order_id=list_cid)
        return ex.submit(cmd)
    first = legs(listed(b"L"))
    assert [e[:2] for e in events(listed(b"L"))] == [("ORDER_REJECTED", "DUPLICATE_ORDER")] * 2
    legs(listed(b"other"))
    ex.submit(ex.orders(TAKER, Side.BUY, 110, 100, tif=TimeInForce.IOC))   # fills the first list's limit leg
    assert ex.driver.matching.order(first[0]) is None and ex.driver.matching.order(first[1]) is None
    legs(listed(b"L", limit=120))   # both legs of the first list ended: its id is free (last trade: 110)
    assert ex.driver.order.in_flight == 0 and ex.conservation_errors() == []


def owner_balances(out, asset_id):
    """(record type just before, free, locked) of every BALANCE of the owner's asset, in order."""
    rows, before = [], None
    for r in out:
        t = int(r["type"])
        if t == RecordType.BALANCE:
            b = R.view(r)
            if int(b["account_id"]) == OWNER and int(b["asset_id"]) == asset_id:
                rows.append((before, int(b["free_minor"]), int(b["locked_minor"])))
        else:
            before = RecordType(t).name
    return rows


def test_amend_of_a_working_leg_counts_the_list_hold_once(ex):
    """Risk used to lock what the amended leg would need on top of the list's hold (the leg
    without the hold has 0 of its own), and keep it once matching answered. A cut of either leg
    needs nothing more; an amend that needs more than the list holds locks only the difference
    until matching refuses it. (Leg amends themselves: test_oco_amend.py.)"""
    above, below = legs(sell_oco(ex))   # the list's 2 BTC on the above leg, none on the below one
    out = ex.submit(ex.amends(OWNER, below, new_qty_lot=150))
    assert events(out) == [("ORDER_AMENDED", "NONE", below), ("ORDER_AMENDED", "NONE", above)]
    assert owner_balances(out, BTC.asset_id) == [("ORDER_AMENDED", 850_000_000, 150_000_000)]   # released only
    out = ex.submit(ex.amends(OWNER, below, new_qty_lot=300))   # 3 BTC: 1.5 more, locked until refused
    assert events(out) == [("CANCEL_REJECTED", "AMEND_QTY_INCREASE", below)]
    assert [b[1:] for b in owner_balances(out, BTC.asset_id)] == [(700_000_000, 300_000_000),
                                                                  (850_000_000, 150_000_000)]
    assert ex.balance(OWNER, "BTC") == ("8.50000000", "1.50000000")
    out = ex.submit(ex.amends(OWNER, below, new_qty_lot=100_000))   # 1000 BTC: more than is free
    assert events(out) == [("CANCEL_REJECTED", "INSUFFICIENT_BALANCE", below)]
    assert ex.balance(OWNER, "BTC") == ("8.50000000", "1.50000000") and ex.conservation_errors() == []


def test_stp_taking_quantity_off_a_working_leg_keeps_what_the_other_leg_needs(ex):
    """Risk used to cut the list's hold to what the decremented limit leg needed: the stop leg,
    still for 2 BTC, then sold more than was held (locked went negative)."""
    legs(sell_oco(ex))   # LIMIT_MAKER 110 / STOP_LOSS_LIMIT 90 (limit 89), 2 BTC
    out = ex.submit(ex.orders(OWNER, Side.BUY, 110, 50, tif=TimeInForce.IOC, stp=StpMode.DECREMENT))
    assert any(int(r["type"]) == RecordType.TRADE_PREVENTED for r in out)   # 0.5 off the limit leg, no trade
    assert ex.balance(OWNER, "BTC") == ("8.00000000", "2.00000000")   # the stop leg still sells 2 BTC
    ex.submit(ex.orders(MAKER, Side.BUY, 89, 500))
    trade(ex, 90)   # the stop leg triggers and sells 2 BTC at 89
    assert ex.balance(OWNER, "BTC") == ("8.00000000", "0.00000000")
    assert ex.conservation_errors() == []


def test_market_buy_leg_that_triggers_keeps_only_its_own_cap(ex):
    """Risk used to leave the whole list's hold (what the stop-limit leg needed) on a take-profit
    market buy that triggered: more than it could ever spend, until it ended."""
    out = ex.submit(ex.oco(OWNER, Side.BUY, 100, dict(order_type=OT.STOP_LOSS_LIMIT, price_tick=150,
                                                       stop_price_tick=110, time_in_force=GTC),
                           dict(order_type=OT.TAKE_PROFIT, stop_price_tick=95)))
    legs(out)
    assert ex.balance(OWNER, "USDT") == ("99850.00000000", "150.00000000")   # the stop-limit leg's need
    ex.submit(ex.orders(MAKER, Side.SELL, 96, 500))   # asks the take-profit leg buys from
    out = trade(ex, 95)   # the last price falls to 95: the take-profit leg triggers, its cap 95 USDT
    usdt = owner_balances(out, USDT.asset_id)
    assert usdt[0] == ("ORDER_TRIGGERED", 9_990_500_000_000, 9_500_000_000)   # cut to its cap at once
    assert usdt[1] == ("FILL", 9_990_500_000_000, 92_000_000)   # 0.98 BTC at 96 spent 94.08 of it
    assert ex.balance(OWNER, "USDT") == ("99905.92000000", "0.00000000")
    assert ex.conservation_errors() == []


def test_list_of_an_account_beyond_the_table_is_refused_without_reading_past_it(ex):
    """Risk used to read the balance row of the list's account before refusing it: an account
    id far beyond max_accounts read unmapped memory (a crash)."""
    out = ex.submit(ex.oco(0xFFFFFFFF, Side.SELL, 100, dict(order_type=OT.LIMIT_MAKER, price_tick=110),
                           dict(order_type=OT.STOP_LOSS, stop_price_tick=90)))
    assert [e[:2] for e in events(out)] == [("ORDER_REJECTED", "UNKNOWN_ACCOUNT")] * 2
    assert ex.driver.order.in_flight == 0 and ex.conservation_errors() == []
