"""Amending an order of a working OCO list through the whole in-process exchange, as Binance's
Order Amend Keep Priority does it: quantity down only, and both legs take the new quantity (a
list's legs share one); the leg keeps its place (or its stop), the list's one hold shrinks to
what its hungrier leg then needs. Refusals (a new price, a quantity not below the total, nothing
left to trade) change nothing. A new client order id moves with the amended leg. Then the
amended legs fill, trigger and expire as any leg does; balances, holds and credits exact."""

from __future__ import annotations

import pytest

from ganntec.engines.hashmap import lookup
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
GTC, IOC = TimeInForce.GTC, TimeInForce.IOC


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
    return ex.submit(ex.orders(TAKER, Side.BUY, price, qty, tif=IOC))


def events(out):
    """(type, reason, order id, qty_lot) of each order event and refusal, fills left out."""
    return [(RecordType(int(r["type"])).name, Reason(int(r["reason"])).name, int(R.view(r)["order_id"]),
             int(R.view(r)["qty_lot"]))
            for r in out if RecordType.ORDER_ACCEPTED <= int(r["type"]) <= RecordType.CANCEL_REJECTED
            and int(r["type"]) != RecordType.FILL]


def legs(out):
    ids = [e[2] for e in events(out) if e[0] == "ORDER_ACCEPTED"]
    assert len(ids) == 2
    return ids


def sell_oco(ex, qty=200, stop_leg=None, **limit_leg):
    """SELL 2 BTC: LIMIT_MAKER at 110 above, STOP_LOSS_LIMIT 90 (limit 89) below."""
    below = stop_leg or dict(order_type=OT.STOP_LOSS_LIMIT, price_tick=89, stop_price_tick=90, time_in_force=GTC)
    return legs(ex.submit(ex.oco(OWNER, Side.SELL, qty, dict(order_type=OT.LIMIT_MAKER, price_tick=110, **limit_leg),
                                 below)))


def amend(ex, order_id, qty=0, price=0, cid=b""):
    return ex.submit(ex.amends(OWNER, order_id, new_qty_lot=qty, new_price_tick=price, new_client_order_id=cid))


def held(ex, order_id):
    """The risk hold of an open order, in minor units."""
    risk = ex.driver.risk
    return int(risk.holds[lookup(risk.hold_keys, risk.hold_vals, order_id)]["held_minor"])


def sound(ex):
    assert ex.conservation_errors() == [] and ex.driver.order.in_flight == 0


def test_qty_down_on_the_limit_leg_cuts_both_keeps_priority_then_a_fill_expires_the_stop_leg(ex):
    ex.submit(ex.orders(MAKER, Side.SELL, 110, 100))   # ahead of the leg at 110
    above, below = sell_oco(ex)
    ex.submit(ex.orders(MAKER, Side.SELL, 110, 100))   # behind it
    out = amend(ex, above, qty=120)
    assert events(out) == [("ORDER_AMENDED", "NONE", above, 120), ("ORDER_AMENDED", "NONE", below, 120)]
    assert int(out[-1]["flags"]) & R.FLAG_END
    m = ex.driver.matching
    assert ex.book(0, Side.SELL).tolist() == [[110, 320, 3]] and m.open_orders(0, Side.SELL)[1] == above
    assert [m.order(i)["qty_lot"] for i in (above, below)] == [120, 120] and m.order(below)["stop_price_tick"] == 90
    assert ex.balance(OWNER, "BTC") == ("8.80000000", "1.20000000")   # one hold, 1.2 BTC, on the limit leg
    assert (held(ex, above), held(ex, below)) == (120_000_000, 0)
    sound(ex)
    out = ex.submit(ex.orders(TAKER, Side.BUY, 110, 220, tif=IOC))   # the maker ahead, then the whole leg
    assert ("ORDER_EXPIRED", "LIST_OTHER_LEG", below, 120) in events(out)
    assert m.order(above) is None and m.order(below) is None
    assert ex.balance(OWNER, "BTC") == ("8.80000000", "0.00000000")
    assert ex.balance(OWNER, "USDT") == ("100132.00000000", "0.00000000")   # 1.2 BTC at 110
    sound(ex)


def test_qty_down_on_the_stop_leg_then_its_trigger_sells_the_new_quantity(ex):
    above, below = sell_oco(ex)
    out = amend(ex, below, qty=150)
    assert events(out) == [("ORDER_AMENDED", "NONE", below, 150), ("ORDER_AMENDED", "NONE", above, 150)]
    assert ex.book(0, Side.SELL).tolist() == [[110, 150, 1]]
    assert ex.balance(OWNER, "BTC") == ("8.50000000", "1.50000000")
    sound(ex)
    ex.submit(ex.orders(MAKER, Side.BUY, 89, 500))
    ev = events(trade(ex, 90))
    i = ev.index(("ORDER_TRIGGERED", "NONE", below, 150))
    assert ev[i + 1] == ("ORDER_EXPIRED", "LIST_OTHER_LEG", above, 150)
    assert ex.balance(OWNER, "BTC") == ("8.50000000", "0.00000000")
    assert ex.balance(OWNER, "USDT") == ("100133.50000000", "0.00000000")   # 1.5 BTC at 89
    assert len(ex.book(0, Side.SELL)) == 0
    sound(ex)


def test_buy_oco_stop_market_leg_cap_shrinks_with_the_quantity_then_spends_exactly_it(ex):
    out = ex.submit(ex.oco(OWNER, Side.BUY, 100, dict(order_type=OT.STOP_LOSS, stop_price_tick=115),
                           dict(order_type=OT.LIMIT_MAKER, price_tick=90)))
    above, below = legs(out)
    assert ex.balance(OWNER, "USDT") == ("99885.00000000", "115.00000000")   # the stop leg's cap: 115 x 1 BTC
    out = amend(ex, below, qty=40)
    assert events(out) == [("ORDER_AMENDED", "NONE", below, 40), ("ORDER_AMENDED", "NONE", above, 40)]
    m = ex.driver.matching
    assert m.order(above)["quote_left_minor"] == 46 * 10**8   # 115 x 0.4 BTC, as risk now holds
    assert ex.balance(OWNER, "USDT") == ("99954.00000000", "46.00000000")
    assert held(ex, above) + held(ex, below) == 46 * 10**8
    sound(ex)
    ex.submit(ex.orders(MAKER, Side.SELL, 115, 200))
    ev = events(ex.submit(ex.orders(TAKER, Side.BUY, 115, 100, tif=IOC)))   # last 115: the stop fires
    assert ("ORDER_TRIGGERED", "NONE", above, 40) in ev and ("ORDER_EXPIRED", "LIST_OTHER_LEG", below, 40) in ev
    assert ex.balance(OWNER, "USDT") == ("99954.00000000", "0.00000000")   # spent its 46 exactly
    assert ex.balance(OWNER, "BTC") == ("10.40000000", "0.00000000")
    sound(ex)


def test_buy_oco_hold_follows_the_hungrier_leg(ex):
    out = ex.submit(ex.oco(OWNER, Side.BUY, 100, dict(order_type=OT.STOP_LOSS_LIMIT, price_tick=120,
                                                       stop_price_tick=115, time_in_force=GTC),
                           dict(order_type=OT.LIMIT_MAKER, price_tick=90)))
    above, below = legs(out)
    assert ex.balance(OWNER, "USDT") == ("99880.00000000", "120.00000000")
    amend(ex, above, qty=25)
    assert ex.balance(OWNER, "USDT") == ("99970.00000000", "30.00000000")   # max(120, 90) x 0.25 BTC
    sound(ex)
    ex.submit(ex.orders(TAKER, Side.SELL, 90, 25, tif=IOC))   # fills the limit leg: the stop leg expires
    assert ex.balance(OWNER, "USDT") == ("99977.50000000", "0.00000000")
    assert ex.balance(OWNER, "BTC") == ("10.25000000", "0.00000000")
    sound(ex)


def test_an_amend_that_would_need_more_than_the_list_holds_locks_it_until_refused(ex):
    out = ex.submit(ex.oco(OWNER, Side.BUY, 100, dict(order_type=OT.STOP_LOSS_LIMIT, price_tick=120,
                                                       stop_price_tick=115, time_in_force=GTC),
                           dict(order_type=OT.LIMIT_MAKER, price_tick=90)))
    above, below = legs(out)
    # within what the list holds (120): nothing moves; beyond it the extra is locked first (matching
    # might see the leg on its own by then) and comes back with the refusal
    for price, balances in ((100, 0), (130, 2)):
        out = amend(ex, below, price=price)
        assert events(out) == [("CANCEL_REJECTED", "UNSUPPORTED_COMBINATION", below, 0)]
        assert sum(int(r["type"]) == RecordType.BALANCE for r in out) == balances
        assert ex.balance(OWNER, "USDT") == ("99880.00000000", "120.00000000")
        assert held(ex, above) + held(ex, below) == 120 * 10**8
        sound(ex)
    poor = amend(ex, below, qty=10**7)   # 100000 BTC at 90: more than the account has
    assert events(poor) == [("CANCEL_REJECTED", "INSUFFICIENT_BALANCE", below, 0)]
    sound(ex)


@pytest.mark.parametrize("leg, qty, price, reason", [
    ("above", 200, 0, "AMEND_QTY_INCREASE"),   # the same quantity: would change nothing
    ("above", 250, 0, "AMEND_QTY_INCREASE"),   # up
    ("below", 0, 0, "AMEND_QTY_INCREASE"),     # quantity unchanged (0), nothing else
    ("above", 150, 111, "UNSUPPORTED_COMBINATION"),   # a new price: keep-priority amends quantity only
    ("below", 150, 88, "UNSUPPORTED_COMBINATION"),    # the stop leg's limit price
    ("below", 0, 88, "UNSUPPORTED_COMBINATION"),      # (the price is looked at first)
    ("above", -5, 0, "INVALID_AMOUNT"),        # nothing left to trade
])
def test_refusals_change_nothing(ex, leg, qty, price, reason):
    above, below = sell_oco(ex)
    target = above if leg == "above" else below
    assert events(amend(ex, target, qty=qty, price=price)) == [("CANCEL_REJECTED", reason, target, 0)]
    m = ex.driver.matching
    assert [m.order(i)["qty_lot"] for i in (above, below)] == [200, 200]
    assert ex.book(0, Side.SELL).tolist() == [[110, 200, 1]]
    assert ex.balance(OWNER, "BTC") == ("8.00000000", "2.00000000") and held(ex, above) == 2 * 10**8
    sound(ex)


def test_its_own_price_is_no_change_and_a_trailing_stop_leg_can_be_cut(ex):
    above, below = sell_oco(ex, stop_leg=dict(order_type=OT.STOP_LOSS, trailing_delta_bips=500))   # 5% below 100
    assert events(amend(ex, above, qty=120, price=110))[0] == ("ORDER_AMENDED", "NONE", above, 120)
    assert events(amend(ex, below, qty=100))[0] == ("ORDER_AMENDED", "NONE", below, 100)
    assert ex.balance(OWNER, "BTC") == ("9.00000000", "1.00000000")
    ex.submit(ex.orders(MAKER, Side.BUY, 94, 500))
    ev = events(trade(ex, 95))   # 95 <= 100 x 0.95: the trailing leg fires, sells 1 BTC into the bid
    assert ("ORDER_TRIGGERED", "NONE", below, 100) in ev and ("ORDER_EXPIRED", "LIST_OTHER_LEG", above, 100) in ev
    assert ex.balance(OWNER, "BTC") == ("9.00000000", "0.00000000")
    assert ex.balance(OWNER, "USDT") == ("100094.00000000", "0.00000000")
    sound(ex)


def test_an_iceberg_leg_shows_at_most_what_is_left(ex):
    above, below = sell_oco(ex, iceberg_qty_lot=50)
    assert ex.book(0, Side.SELL).tolist() == [[110, 50, 1]]
    amend(ex, below, qty=30)
    assert ex.book(0, Side.SELL).tolist() == [[110, 30, 1]]
    assert ex.driver.matching.order(above)["leaves_lot"] == 30
    sound(ex)


def test_what_stp_took_stays_taken_and_the_hold_covers_the_other_leg(ex):
    above, below = sell_oco(ex)
    # the owner's own buy meets its limit leg: DECREMENT takes 0.5 BTC off it, no trade
    ex.submit(ex.orders(OWNER, Side.BUY, 110, 50, tif=IOC, stp=StpMode.DECREMENT))
    m = ex.driver.matching
    assert m.order(above)["leaves_lot"] == 150 and m.order(below)["leaves_lot"] == 200
    assert ex.balance(OWNER, "BTC") == ("8.00000000", "2.00000000")   # the stop leg may still sell 2
    sound(ex)
    assert events(amend(ex, below, qty=50)) == [("CANCEL_REJECTED", "INVALID_AMOUNT", below, 0)]   # limit leg: 0
    out = amend(ex, below, qty=60)
    assert events(out) == [("ORDER_AMENDED", "NONE", below, 60), ("ORDER_AMENDED", "NONE", above, 60)]
    assert m.order(above)["leaves_lot"] == 10 and m.order(below)["leaves_lot"] == 60
    assert ex.book(0, Side.SELL).tolist() == [[110, 10, 1]]
    assert ex.balance(OWNER, "BTC") == ("9.40000000", "0.60000000")   # max(0.1, 0.6)
    sound(ex)
    ex.submit(ex.orders(MAKER, Side.BUY, 89, 500))
    trade(ex, 90)
    assert m.order(above) is None and m.order(below) is None
    assert ex.balance(OWNER, "BTC") == ("9.40000000", "0.00000000")
    assert ex.balance(OWNER, "USDT") == ("100053.40000000", "0.00000000")   # 0.6 BTC at 89
    sound(ex)


def test_a_new_client_order_id_moves_with_the_amended_leg(ex):
    above, below = sell_oco(ex, client_order_id=b"tp")
    out = amend(ex, above, qty=150, cid=b"tp2")
    amended = [R.view(r) for r in out if int(r["type"]) == RecordType.ORDER_AMENDED]
    assert [(int(a["order_id"]), bytes(a["client_order_id"])) for a in amended] == [(above, b"tp2"), (below, b"")]
    assert int(out[-1]["flags"]) & R.FLAG_END and ex.driver.order.in_flight == 0
    # the old id is free, the new one names the leg; the stop leg's id ("") is untouched
    by_old = ex.submit(ex.amends(OWNER, 0, new_qty_lot=140, orig_client_order_id=b"tp"))
    assert events(by_old) == [("CANCEL_REJECTED", "UNKNOWN_ORDER", 0, 0)]
    taken = ex.submit(ex.amends(OWNER, below, new_qty_lot=140, new_client_order_id=b"tp2"))
    assert [e[:2] for e in events(taken)] == [("CANCEL_REJECTED", "DUPLICATE_ORDER")]
    place = ex.orders(OWNER, Side.SELL, 130, 1)
    place["client_order_id"] = b"tp"
    assert events(ex.submit(place))[0][:2] == ("ORDER_ACCEPTED", "NONE")
    cancel = R.empty(RecordType.CANCEL)
    cancel["account_id"], cancel["orig_client_order_id"] = OWNER, b"tp2"
    assert [e[:3] for e in events(ex.submit(cancel))] == [("ORDER_CANCELED", "CANCELED_BY_USER", above),
                                                           ("ORDER_CANCELED", "CANCELED_BY_USER", below)]
    assert ex.balance(OWNER, "BTC") == ("9.99000000", "0.01000000")   # only the 0.01 at 130 is left
    sound(ex)


def test_an_amended_list_frees_its_ids_when_it_ends(ex):
    def listed(limit=110):
        return legs(ex.submit(ex.oco(OWNER, Side.SELL, 100, dict(order_type=OT.LIMIT_MAKER, price_tick=limit),
                                     dict(order_type=OT.STOP_LOSS, stop_price_tick=90), list_client_order_id=b"L")))
    above, below = listed()
    amend(ex, below, qty=60, cid=b"sl")
    assert [e[:2] for e in events(ex.submit(ex.oco(OWNER, Side.SELL, 100, dict(order_type=OT.LIMIT_MAKER,
                                                                               price_tick=120),
                                                   dict(order_type=OT.STOP_LOSS, stop_price_tick=90),
                                                   list_client_order_id=b"L")))] == [("ORDER_REJECTED",
                                                                                       "DUPLICATE_ORDER")] * 2
    ex.submit(ex.orders(TAKER, Side.BUY, 110, 60, tif=IOC))   # fills the limit leg: the list is done
    listed(limit=120)   # its list id is free again (last trade: 110)
    place = ex.orders(OWNER, Side.SELL, 130, 1)
    place["client_order_id"] = b"sl"   # and the amended stop leg's id
    assert events(ex.submit(place))[0][:2] == ("ORDER_ACCEPTED", "NONE")
    sound(ex)


def test_live_an_amend_that_reaches_an_activated_leg_stays_funded():
    """Live pipeline order: the owner's amend passes risk while the trade that triggers its leg
    is still coming back from matching, so matching takes it as an ordinary amend (quantity up).
    Risk locked the extra first, and the leg's ORDER_TRIGGERED, while that amend is in flight,
    cuts nothing: the amended order sells all it has locked."""
    from ganntec.engines.matching import MatchingEngine
    from ganntec.engines.order import OrderEngine
    from ganntec.engines.risk import RiskEngine
    from ganntec.engines.symbols import symbol_table

    table = symbol_table([SYM])
    order, risk, matching = OrderEngine(table, max_in_flight=64), RiskEngine(table, 2, 8), MatchingEngine(table, 64, 64)

    def to_matching(cmds=(), results=()):
        return risk.process(order.process(results, cmds)[0])[0]

    def through(cmds):
        results = matching.process(to_matching(cmds))
        to_matching(results=results)
        return results

    for acc in (OWNER, MAKER, TAKER):
        r = [R.empty(t) for t in (RecordType.ACCOUNT_OPEN, RecordType.CREDIT, RecordType.CREDIT)]
        for x in r:
            x["account_id"] = acc
        r[0]["permissions"], r[0]["maker_fee_e8"], r[0]["taker_fee_e8"] = 3, -1, -1
        r[1]["asset_id"], r[1]["amount_minor"], r[2]["asset_id"], r[2]["amount_minor"] = 0, 10 * 10**8, 1, 10**13
        through(r)
    through([Exchange.orders(MAKER, Side.SELL, 100, 100), Exchange.orders(TAKER, Side.BUY, 100, 100, tif=IOC)])
    out = through(Exchange.oco(OWNER, Side.SELL, 200, dict(order_type=OT.LIMIT_MAKER, price_tick=110),
                               dict(order_type=OT.STOP_LOSS_LIMIT, price_tick=89, stop_price_tick=90, time_in_force=GTC)))
    _, below = legs(out)
    trade_at_90 = to_matching([Exchange.orders(MAKER, Side.SELL, 90, 100), Exchange.orders(TAKER, Side.BUY, 90, 100, tif=IOC)])
    amend_of_leg = to_matching(Exchange.amends(OWNER, below, new_qty_lot=500))   # risk: a working leg; 3 BTC more locked
    assert risk.balances[OWNER, 0].tolist() == [5 * 10**8, 5 * 10**8]
    to_matching(results=matching.process(R.concat([trade_at_90, amend_of_leg])))   # triggered (rests at 89), then amended
    assert matching.order(below)["leaves_lot"] == 500
    through(Exchange.orders(TAKER, Side.BUY, 89, 500, tif=IOC))   # the amended leg sells 5 BTC
    assert risk.balances[OWNER, 0].tolist() == [5 * 10**8, 0]
    assert risk.hold_errors() == [] and risk.conservation_errors() == []
