"""Cancel-replace through the whole in-process exchange: Binance's outcomes (both succeed, the
cancel fails with STOP_ON_FAILURE / ALLOW_FAILURE, the new order fails), filters before
anything, the new order funded by what the cancel released, client order ids, credits."""

from __future__ import annotations

import numpy as np
import pytest

from ganntec.engines.symbols import Asset, Symbol
from ganntec.exchange import Exchange
from ganntec.shm import records as R
from ganntec.shm.records import CancelRestriction, Reason, RecordType, ReplaceMode, Side

BTC, USDT = Asset(0, "BTC", 8), Asset(1, "USDT", 8)
SYM = Symbol(0, "BTCUSDT", BTC, USDT, tick_size="0.01", step_size="0.001", min_price="0.01", max_price="1000000",
             min_qty="0.001", max_qty="1000", maker_fee="0", taker_fee="0", bid_multiplier_up="100",
             bid_multiplier_down="0.01", ask_multiplier_up="100", ask_multiplier_down="0.01")
STOP, ALLOW = ReplaceMode.STOP_ON_FAILURE, ReplaceMode.ALLOW_FAILURE


@pytest.fixture
def ex():
    e = Exchange([SYM], max_accounts=8)
    for acc in (1, 2):
        e.open_account(acc)
    e.deposit(1, "USDT", "1000")   # exactly enough for 10 BTC at 100
    e.deposit(2, "BTC", "5")
    return e


def buy(ex, price, qty, cid=b""):
    r = ex.limit_orders(1, Side.BUY, [price], [qty])
    r["client_order_id"] = cid
    return r


def brief(out):
    """(type, reason) per record that is not a BALANCE or BOOK_UPDATE."""
    return [(RecordType(int(r["type"])).name, Reason(int(r["reason"])).name) for r in out
            if int(r["type"]) not in (RecordType.BALANCE, RecordType.BOOK_UPDATE)]


def of_type(out, rtype):
    # (never index structured records with a mask: numpy's copy can drop their padding bytes)
    return [R.view(r) for r in out if int(r["type"]) == rtype]


def order_id(out, rtype=RecordType.ORDER_ACCEPTED):
    return int(of_type(out, rtype)[-1]["order_id"])


def ends(out):
    return [i for i, r in enumerate(out) if int(r["flags"]) & R.FLAG_END]


def test_both_succeed_and_the_new_order_uses_the_funds_the_cancel_released(ex):
    old = order_id(ex.submit(buy(ex, "100", "10")))
    assert ex.balance(1, "USDT") == ("0.00000000", "1000.00000000")
    out = ex.submit(ex.cancel_replaces(old, buy(ex, "50", "19")))
    assert brief(out) == [("ORDER_CANCELED", "CANCELED_BY_USER"), ("ORDER_ACCEPTED", "NONE")]
    new = of_type(out, RecordType.ORDER_ACCEPTED)[0]
    journal = R.concat(ex.journal)
    # The new order's id is the seq at which it came back from the cancel: a NEW_ORDER record there.
    back = [r for r in journal if int(r["seq"]) == int(new["order_id"])][0]
    assert int(back["type"]) == RecordType.NEW_ORDER and not int(back["flags"]) & R.FLAG_DEFERRED
    assert ex.balance(1, "USDT") == ("50.00000000", "950.00000000")
    assert [o[:2] for o in ex.book(0, Side.BUY).tolist()] == [[5000, 19000]]
    assert ex.driver.order.in_flight == 0 and ex.conservation_errors() == []


def test_the_new_order_trades_like_any_new_order(ex):
    old = order_id(ex.submit(buy(ex, "100", "1")))
    ex.submit(ex.orders(2, Side.SELL, 10500, 2000))   # 2 BTC offered at 105
    out = ex.submit(ex.cancel_replaces(old, buy(ex, "105", "1.5")))
    fills = of_type(out, RecordType.FILL)
    assert [(int(f["price_tick"]), int(f["qty_lot"])) for f in fills] == [(10500, 1500)]
    assert ex.balance(1, "BTC") == ("1.50000000", "0.00000000")
    assert ex.balance(1, "USDT") == ("842.50000000", "0.00000000")
    assert ex.conservation_errors() == []


def test_failed_cancel_stops_the_new_order_under_stop_on_failure(ex):
    out = ex.submit(ex.cancel_replaces(999, buy(ex, "50", "1"), mode=STOP))
    assert brief(out) == [("CANCEL_REJECTED", "UNKNOWN_ORDER"), ("ORDER_REJECTED", "NOT_ATTEMPTED")]
    assert ends(out) == [len(out) - 1] and len(ex.book(0, Side.BUY)) == 0
    assert ex.balance(1, "USDT") == ("1000.00000000", "0.00000000") and ex.driver.order.in_flight == 0


def test_failed_cancel_still_places_the_new_order_under_allow_failure(ex):
    out = ex.submit(ex.cancel_replaces(999, buy(ex, "50", "1"), mode=ALLOW))
    assert brief(out) == [("CANCEL_REJECTED", "UNKNOWN_ORDER"), ("ORDER_ACCEPTED", "NONE")]
    assert ex.balance(1, "USDT") == ("950.00000000", "50.00000000") and ex.driver.order.in_flight == 0


def test_cancel_restrictions_apply_to_the_cancel(ex):
    old = order_id(ex.submit(buy(ex, "100", "1")))
    out = ex.submit(ex.cancel_replaces(old, buy(ex, "50", "1"),
                                       cancel_restrictions=CancelRestriction.ONLY_PARTIALLY_FILLED))
    assert brief(out) == [("CANCEL_REJECTED", "CANCEL_RESTRICTED"), ("ORDER_REJECTED", "NOT_ATTEMPTED")]
    assert ex.driver.matching.order(old) is not None


def test_new_order_failing_filters_means_nothing_is_attempted(ex):
    old = order_id(ex.submit(buy(ex, "100", "1")))
    too_small = ex.orders(1, Side.BUY, 5000, 0)
    too_small["qty_lot"] = 0  # LOT_SIZE needs >= 1 lot: refused before the cancel is tried
    too_small["price_tick"] = 20_000_000_000  # and above max price: PRICE_FILTER comes first
    out = ex.submit(ex.cancel_replaces(old, too_small))
    assert brief(out) == [("CANCEL_REJECTED", "NOT_ATTEMPTED"), ("ORDER_REJECTED", "UNSUPPORTED_COMBINATION")]
    out = ex.submit(ex.cancel_replaces(old, ex.orders(1, Side.BUY, 20_000_000_000, 1000)))
    assert brief(out) == [("CANCEL_REJECTED", "NOT_ATTEMPTED"), ("ORDER_REJECTED", "FILTER_PRICE")]
    assert ex.driver.matching.order(old) is not None and ex.driver.order.in_flight == 0


def test_new_order_failing_after_the_cancel_leaves_the_cancel_done(ex):
    old = order_id(ex.submit(buy(ex, "100", "1")))
    out = ex.submit(ex.cancel_replaces(old, buy(ex, "100", "11")))   # 1100 USDT: more than the account has
    assert brief(out) == [("ORDER_CANCELED", "CANCELED_BY_USER"), ("ORDER_REJECTED", "INSUFFICIENT_BALANCE")]
    assert ex.balance(1, "USDT") == ("1000.00000000", "0.00000000") and ex.driver.order.in_flight == 0


def test_client_order_ids_by_orig_id_and_reuse_of_the_cancelled_id(ex):
    ex.submit(buy(ex, "100", "1", b"keep"))
    ex.submit(buy(ex, "90", "1", b"other"))
    # cancel by client id, and take that id over
    out = ex.submit(ex.cancel_replaces(0, buy(ex, "95", "1", b"keep"), cancel_orig_client_order_id=b"keep"))
    assert brief(out) == [("ORDER_CANCELED", "CANCELED_BY_USER"), ("ORDER_ACCEPTED", "NONE")]
    assert of_type(out, RecordType.ORDER_ACCEPTED)[0]["client_order_id"] == b"keep"
    # an id another open order holds
    out = ex.submit(ex.cancel_replaces(0, buy(ex, "80", "1", b"other"), cancel_orig_client_order_id=b"keep"))
    assert brief(out) == [("ORDER_CANCELED", "CANCELED_BY_USER"), ("ORDER_REJECTED", "DUPLICATE_ORDER")]
    assert ex.driver.order.in_flight == 0 and ex.conservation_errors() == []


def test_malformed_commands_are_refused_whole(ex):
    old = order_id(ex.submit(buy(ex, "100", "1")))
    cr = ex.cancel_replaces(old, buy(ex, "50", "1"))
    bad = R.concat([cr[:1], ex.cancels(1, old)])   # a cancel-replace whose second record is no order
    out = ex.submit(bad)
    assert brief(out) == [("CANCEL_REJECTED", "UNSUPPORTED_COMBINATION")] * 2 and ends(out) == [1]
    assert brief(ex.submit(ex.cancel_replaces(old, buy(ex, "50", "1"), mode=7))) == [("CANCEL_REJECTED", "UNSUPPORTED_COMBINATION"),
                                      ("ORDER_REJECTED", "UNSUPPORTED_COMBINATION")]
    assert ex.driver.matching.order(old) is not None
    with pytest.raises(ValueError, match="FLAG_CONTINUED"):
        ex.submit(cr[:1])


def test_same_bytes_whatever_the_batching(ex):
    stream = [buy(ex, "100", "1", b"a"), buy(ex, "99", "1", b"b")]
    for k in range(6):
        leg = buy(ex, str(90 + k), "1", b"n%d" % k)
        target = [b"a", b"b", b"n0", b"zz", b"n1", b"n3"][k]
        stream.append(ex.cancel_replaces(0, leg, mode=ALLOW if k % 2 else STOP, cancel_orig_client_order_id=target))
    stream.append(ex.orders(2, Side.SELL, 9000, 3000))
    whole = R.concat(stream)
    outs = []
    for splits in ([len(whole)], [1] * len(whole), [3, 2, 5, 1, 7]):
        e = Exchange([SYM], max_accounts=8)
        for acc in (1, 2):
            e.open_account(acc)
        e.deposit(1, "USDT", "1000")
        e.deposit(2, "BTC", "5")
        bounds = R.command_bounds(whole)
        c, parts = 0, []
        for k in splits * len(whole):   # k whole commands per call
            if c >= len(bounds) - 1:
                break
            parts.append(e.submit(whole[bounds[c]:bounds[min(c + k, len(bounds) - 1)]]))
            c += k
        outs.append((R.concat(parts).tobytes(), R.concat(e.journal).tobytes()))
        assert e.conservation_errors() == [] and e.driver.order.in_flight == 0
    assert outs[0] == outs[1] == outs[2]
    assert np.frombuffer(outs[0][0], np.uint8).size % R.RECORD_BYTES == 0
