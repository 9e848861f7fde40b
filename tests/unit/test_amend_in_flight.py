"""Amends in flight, in the live pipeline's order of events (driven through the engines' Python
APIs as `live_pipeline` does): results of an order sequenced between an AMEND and matching's
answer to it never leave its hold short of what matching can still spend. Risk counts the
order's amends in flight; while any is, settlements only pay fills (nothing released), and the
advance lock covers fills at the old price before the amend lands. After the last answer the
hold is exactly what the order needs."""

from __future__ import annotations

import numpy as np
import pytest

from ganntec.engines.hashmap import lookup
from ganntec.engines.matching import MatchingEngine
from ganntec.engines.order import OrderEngine
from ganntec.engines.risk import RiskEngine
from ganntec.engines.symbols import Asset, Symbol, symbol_table
from ganntec.exchange import Exchange
from ganntec.shm import records as R
from ganntec.shm.records import RecordType, Side, TimeInForce

BTC, USDT = Asset(0, "BTC", 8), Asset(1, "USDT", 8)
SYM = Symbol(0, "BTCUSDT", BTC, USDT, tick_size="1", step_size="0.01", min_price="1", max_price="1000000",
             min_qty="0.01", max_qty="1000", maker_fee="0", taker_fee="0", bid_multiplier_up="100",
             bid_multiplier_down="0.01", ask_multiplier_up="100", ask_multiplier_down="0.01")
OWNER, MAKER, TAKER = 1, 2, 3
IOC = TimeInForce.IOC
USDT_0, BTC_0 = 10**13, 10 * 10**8
QPL, BPL = 10**6, 10**6  # 1 USDT tick x 0.01 BTC lot = 0.01 USDT; 0.01 BTC


class Live:
    """The three engines with their queues driven by hand; every step checks the money."""

    def __init__(self):
        table = symbol_table([SYM])
        self.order, self.risk = OrderEngine(table, max_in_flight=64), RiskEngine(table, 2, 8)
        self.matching = MatchingEngine(table, 64, 64)
        assert int(self.risk.symbols["quote_per_tick_lot"][0]) == QPL and int(self.risk.symbols["base_per_lot"][0]) == BPL
        for acc in (OWNER, MAKER, TAKER):
            r = [R.empty(t) for t in (RecordType.ACCOUNT_OPEN, RecordType.CREDIT, RecordType.CREDIT)]
            for x in r:
                x["account_id"] = acc
            r[0]["permissions"], r[0]["maker_fee_e8"], r[0]["taker_fee_e8"] = 3, -1, -1
            r[1]["asset_id"], r[1]["amount_minor"], r[2]["asset_id"], r[2]["amount_minor"] = 0, BTC_0, 1, USDT_0
            self.through(r)

    def to_matching(self, cmds=(), results=()):
        """Sequence results then commands; risk takes them; returns what risk sends matching."""
        out = self.order.process(results, cmds)[0]
        a = self.risk.process(out)[0]
        self.sound()
        return a

    def matched(self, *commands):
        """Matching takes the commands (risk's output) in order; their results go round."""
        results = self.matching.process(R.concat(list(commands)))
        self.to_matching(results=results)
        return results

    def through(self, cmds):
        return self.matched(self.to_matching(cmds))

    def held(self, order_id):
        return int(self.risk.holds[lookup(self.risk.hold_keys, self.risk.hold_vals, order_id)]["held_minor"])

    def sound(self):
        risk = self.risk
        assert (risk.balances >= 0).all(), risk.balances
        assert risk.hold_errors() == [] and risk.conservation_errors() == []
        for slot in risk.hold_vals[risk.hold_keys != 0]:
            h = risk.holds[slot]
            o = self.matching.order(int(h["order_id"]))
            if o is not None:
                need = o["leaves_lot"] * (BPL if o["side"] == Side.SELL else o["price_tick"] * QPL)
                assert int(h["held_minor"]) >= need, (o, h)

    def place(self, side, price, qty):
        out = self.through([Exchange.orders(OWNER, side, price, qty)])
        return int(R.view(out[:1])["order_id"])

    def amend(self, order_id, qty=0, price=0):
        return self.to_matching([Exchange.amends(OWNER, order_id, new_qty_lot=qty, new_price_tick=price)])

    def balance(self, asset):
        return self.risk.balances[OWNER, asset].tolist()


@pytest.fixture
def live():
    return Live()


def test_fills_at_the_old_price_before_a_buy_amend_lands_stay_covered(live):
    """BUY 100 lots at 100, amended to 200 lots at 90 while a sell of 99 lots at 100 is on its
    way to matching: those lots cost the old price, then 101 lots cost the new one. Risk locks
    90 x 200 + 100 x (100 - 90) in advance (new leaves at the new price alone would fall short
    by 9 lots x 10 once the fills are paid)."""
    oid = live.place(Side.BUY, 100, 100)
    assert live.held(oid) == 100 * 100 * QPL
    sell = live.to_matching([Exchange.orders(TAKER, Side.SELL, 100, 99, tif=IOC)])
    amend = live.amend(oid, qty=200, price=90)
    assert live.held(oid) == (90 * 200 + 100 * 10) * QPL
    assert live.balance(1) == [USDT_0 - 19000 * QPL, 19000 * QPL]
    live.matched(sell, amend)   # 99 lots fill at 100, then the amend lands: 101 lots at 90
    assert live.matching.order(oid)["leaves_lot"] == 101
    assert live.balance(1) == [USDT_0 - (9900 + 101 * 90) * QPL, 101 * 90 * QPL]   # settled exactly
    live.through([Exchange.orders(TAKER, Side.SELL, 90, 101, tif=IOC)])
    assert live.balance(1) == [USDT_0 - (9900 + 9090) * QPL, 0]
    assert live.balance(0) == [BTC_0 + 200 * BPL, 0]


def test_a_buy_amend_that_loses_the_race_to_fills_gets_back_what_it_locked(live):
    """The fills end the order before the amend lands: matching answers UNKNOWN_ORDER, the
    advance lock comes back with the order's end."""
    oid = live.place(Side.BUY, 100, 100)
    sell = live.to_matching([Exchange.orders(TAKER, Side.SELL, 100, 100, tif=IOC)])
    amend = live.amend(oid, qty=300, price=95)
    live.matched(sell, amend)
    assert live.balance(1) == [USDT_0 - 10000 * QPL, 0]
    assert live.risk.hold_keys.any() == False  # noqa: E712


@pytest.mark.parametrize("side", [Side.BUY, Side.SELL])
def test_the_first_of_two_amends_in_flight_leaves_the_second_funded(live, side):
    """Two amends of one order in flight (quantity 100 -> 200 -> 300): the first one's answer
    releases nothing while the second is still at matching; the second's settles exactly."""
    asset, unit = (1, 100 * QPL) if side == Side.BUY else (0, BPL)
    oid = live.place(side, 100, 100)
    first = live.amend(oid, qty=200)
    assert live.held(oid) == 200 * unit
    second = live.amend(oid, qty=300)
    # a sell: its most lots; a buy: on top of what it holds (the first may have moved its price)
    assert live.held(oid) == (300 if side == Side.SELL else 500) * unit
    live.matched(first)
    assert live.held(oid) == (300 if side == Side.SELL else 500) * unit   # nothing released
    live.matched(second)
    assert live.held(oid) == 300 * unit and live.balance(asset)[1] == 300 * unit
    live.through([Exchange.orders(TAKER, Side.SELL if side == Side.BUY else Side.BUY, 100, 300, tif=IOC)])
    assert live.balance(asset) == [(USDT_0 if side == Side.BUY else BTC_0) - 300 * unit, 0]


def test_two_amends_in_flight_price_up_then_down_with_fills_between(live):
    """BUY 10 lots at 100, amended to 2 lots at 1000, then to 10 lots at 500, both in flight;
    the first lands, a lot fills at 1000, then the second lands with 9 lots at 500: 5500 spent
    in all. Risk did not see the first one's price when it locked for the second, so that lock
    is the second's whole need on top of what the order held (5000 would fall short by 500)."""
    oid = live.place(Side.BUY, 100, 10)
    first = live.amend(oid, qty=2, price=1000)
    assert live.held(oid) == 2000 * QPL
    second = live.amend(oid, qty=10, price=500)
    assert live.held(oid) == 7000 * QPL
    sell = live.to_matching([Exchange.orders(TAKER, Side.SELL, 1000, 1, tif=IOC)])
    live.matched(first)
    live.matched(sell)           # one lot at 1000
    live.matched(second)         # 9 lots at 500
    assert live.matching.order(oid)["leaves_lot"] == 9
    assert live.balance(1) == [USDT_0 - (1000 + 9 * 500) * QPL, 9 * 500 * QPL]
    live.through([Exchange.orders(TAKER, Side.SELL, 500, 9, tif=IOC)])
    assert live.balance(1) == [USDT_0 - (1000 + 4500) * QPL, 0]


def test_a_refused_cancel_is_no_answer_to_an_amend_in_flight(live):
    """A cancel that matching refuses (CANCEL_RESTRICTED) while an amend is in flight settles
    nothing: the amend's lock stays for it."""
    oid = live.place(Side.SELL, 100, 100)
    amend = live.amend(oid, qty=300)
    cancel = R.empty(RecordType.CANCEL)
    cancel["account_id"], cancel["order_id"], cancel["cancel_restrictions"] = OWNER, oid, 2   # only partially filled
    cancel = live.to_matching([cancel])
    out = live.matched(cancel)
    assert int(out["type"][0]) == RecordType.CANCEL_REJECTED
    assert live.held(oid) == 300 * BPL
    live.matched(amend)
    live.through([Exchange.orders(TAKER, Side.BUY, 100, 300, tif=IOC)])
    assert live.balance(0) == [BTC_0 - 300 * BPL, 0]
    assert np.array_equal(live.risk.balances[OWNER, 1], [USDT_0 + 30000 * QPL, 0])
