"""An amend that gives the order a new client order id (Binance's newClientOrderId on amend):
the id moves with ORDER_AMENDED, the old one is free, a taken id refuses the amend, and the
EXT record never splits from its AMEND whatever the batching."""

from __future__ import annotations

import pytest

from ganntec.engines.symbols import Asset, Symbol
from ganntec.exchange import Exchange
from ganntec.shm import records as R
from ganntec.shm.records import Reason, RecordType, Side

BTC, USDT = Asset(0, "BTC", 8), Asset(1, "USDT", 8)
SYM = Symbol(0, "BTCUSDT", BTC, USDT, tick_size="1", step_size="0.01", min_price="1", max_price="1000000",
             min_qty="0.01", max_qty="1000", maker_fee="0", taker_fee="0", bid_multiplier_up="100",
             bid_multiplier_down="0.01", ask_multiplier_up="100", ask_multiplier_down="0.01")


@pytest.fixture
def ex():
    e = Exchange([SYM], max_accounts=8)
    e.open_account(1)
    e.deposit(1, "USDT", "100000")
    return e


def place(ex, price, cid):
    r = ex.orders(1, Side.BUY, price, 100)
    r["client_order_id"] = cid
    out = ex.submit(r)
    return int(R.view([x for x in out if int(x["type"]) == RecordType.ORDER_ACCEPTED][0])["order_id"])


def brief(out):
    return [(RecordType(int(r["type"])).name, Reason(int(r["reason"])).name) for r in out
            if int(r["type"]) not in (RecordType.BALANCE, RecordType.BOOK_UPDATE)]


def test_the_order_takes_the_new_id_and_frees_the_old(ex):
    oid = place(ex, 100, b"old")
    out = ex.submit(ex.amends(1, 0, new_qty_lot=50, orig_client_order_id=b"old", new_client_order_id=b"new"))
    amended = [R.view(r) for r in out if int(r["type"]) == RecordType.ORDER_AMENDED]
    assert [(int(a["order_id"]), bytes(a["client_order_id"])) for a in amended] == [(oid, b"new")]
    assert int(out[-1]["flags"]) & R.FLAG_END and ex.driver.order.in_flight == 0
    # cancel by the new id works, by the old one does not; the old id is free for a new order
    assert brief(ex.submit(ex.amends(1, 0, new_qty_lot=40, orig_client_order_id=b"old"))) == [
        ("CANCEL_REJECTED", "UNKNOWN_ORDER")]
    place(ex, 99, b"old")
    cancel = R.empty(RecordType.CANCEL)
    cancel["account_id"], cancel["orig_client_order_id"] = 1, b"new"
    assert brief(ex.submit(cancel)) == [("ORDER_CANCELED", "CANCELED_BY_USER")]


def test_keeping_the_same_id_is_allowed_and_a_taken_id_refuses_the_amend(ex):
    oid = place(ex, 100, b"a")
    place(ex, 99, b"b")
    assert brief(ex.submit(ex.amends(1, oid, new_qty_lot=50, new_client_order_id=b"a"))) == [
        ("ORDER_AMENDED", "NONE")]
    out = ex.submit(ex.amends(1, oid, new_qty_lot=40, new_client_order_id=b"b"))
    assert brief(out) == [("CANCEL_REJECTED", "DUPLICATE_ORDER"), ("EXT", "DUPLICATE_ORDER")]
    assert ex.driver.matching.order(oid)["qty_lot"] == 50 and ex.driver.order.in_flight == 0


def test_a_refused_amend_still_ends_its_command_once(ex):
    oid = place(ex, 100, b"a")
    out = ex.submit(ex.amends(1, oid, new_qty_lot=200_000, new_client_order_id=b"z"))   # 2000 BTC: no funds
    assert brief(out) == [("CANCEL_REJECTED", "INSUFFICIENT_BALANCE")]
    assert sum(bool(int(r["flags"]) & R.FLAG_END) for r in out) == 1 and ex.driver.order.in_flight == 0
    lone = R.empty(RecordType.EXT)
    lone["account_id"], lone["text1"] = 1, b"x"
    assert brief(ex.submit(lone)) == [("CANCEL_REJECTED", "UNSUPPORTED_COMBINATION")]


def test_same_bytes_in_any_batching(ex):
    cmds = [ex.orders(1, Side.BUY, 100 + k, 100) for k in range(4)]
    for k in range(4):
        cmds[k]["client_order_id"] = b"c%d" % k
    cmds += [ex.amends(1, 0, new_qty_lot=50, orig_client_order_id=b"c%d" % k, new_client_order_id=b"n%d" % k)
             for k in range(4)]
    whole = R.concat(cmds)
    outs = []
    for step in (len(whole), 1, 3):
        e = Exchange([SYM], max_accounts=8)
        e.open_account(1)
        e.deposit(1, "USDT", "100000")
        bounds = R.command_bounds(whole)
        parts = [e.submit(whole[bounds[i]:bounds[min(i + step, len(bounds) - 1)]]) for i in range(0, len(bounds) - 1, step)]
        outs.append(R.concat(parts).tobytes())
    assert outs[0] == outs[1] == outs[2]
