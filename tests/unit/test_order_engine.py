"""Order engine: sequencing, timestamps, dedup, credits, and every NEW_ORDER filter."""

from __future__ import annotations

import pytest

from ganntec.engines.order import OrderEngine
from ganntec.engines.symbols import Asset, Symbol, symbol_table
from ganntec.shm import records as R
from ganntec.shm.records import OrderType as OT
from ganntec.shm.records import Reason, RecordType, Side, TimeInForce

BTC, USDT = Asset(0, "BTC", 8), Asset(1, "USDT", 8)
SYM = Symbol(0, "BTCUSDT", BTC, USDT, tick_size="0.01", step_size="0.001", min_price="1", max_price="100000",
             min_qty="0.001", max_qty="100", market_max_qty="10", min_notional="10", max_notional="500000",
             max_num_orders=2, bid_multiplier_up="1.5", bid_multiplier_down="0.5", ask_multiplier_up="2",
             ask_multiplier_down="0.8")
TABLE = symbol_table([SYM])


def new(price="100", qty="1", side=Side.BUY, otype=OT.LIMIT, tif=TimeInForce.GTC, stop="0", quote=0,
        account=1, source=1, source_seq=1, ts=1000, symbol=0, iceberg="0"):
    r = R.empty(RecordType.NEW_ORDER)
    r["source"], r["source_seq"], r["ts_ns"], r["account_id"], r["symbol_id"] = source, source_seq, ts, account, symbol
    r["side"], r["order_type"], r["time_in_force"] = side, otype, tif
    r["price_tick"] = SYM.price_to_tick("price", price)
    r["qty_lot"] = SYM.qty_to_lot("qty", qty)
    r["stop_price_tick"] = SYM.price_to_tick("stop", stop)
    r["quote_qty_minor"] = quote
    r["iceberg_qty_lot"] = SYM.qty_to_lot("iceberg", iceberg)
    r["client_order_id"] = b"cid-%d" % source_seq
    return r


def result(rtype, flags=0, **fields):
    r = R.empty(rtype)
    r["flags"] = flags
    for k, v in fields.items():
        r[k] = v
    return r


def one(oe, rec):
    out, _, used = oe.process(commands=rec)
    assert used == 1
    return R.view(out[0]) if len(out) else None


def test_valid_order_is_stamped_and_its_seq_is_the_order_id():
    oe = OrderEngine(TABLE)
    out, _, _ = oe.process(commands=R.concat([new(source_seq=1, ts=50), new(source_seq=2, ts=40)]))
    assert [(int(r["type"]), int(r["seq"]), int(r["ts_ns"])) for r in out] == [(1, 1, 50), (1, 2, 50)]  # ts never goes back
    assert oe.in_flight == 2 and oe.seq == 2


def test_commands_from_an_edge_without_a_dedup_slot_are_refused():
    oe = OrderEngine(TABLE, max_edges=2)
    v = one(oe, new(source=3))
    assert (int(v["type"]), int(v["reason"])) == (RecordType.ORDER_REJECTED, Reason.UNSUPPORTED_COMBINATION)
    assert oe.in_flight == 0


def test_duplicate_edge_sequence_is_dropped_not_applied_twice():
    oe = OrderEngine(TABLE)
    out, _, used = oe.process(commands=R.concat([new(source_seq=7), new(source_seq=7), new(source_seq=6),
                                                 new(source=2, source_seq=7)]))
    assert used == 4 and len(out) == 2 and oe.duplicates == 2


@pytest.mark.parametrize("kw, reason", [
    (dict(symbol=3), Reason.UNKNOWN_SYMBOL),
    (dict(side=0), Reason.UNSUPPORTED_COMBINATION),
    (dict(otype=OT.MARKET, price="0", qty="1", quote=5), Reason.UNSUPPORTED_COMBINATION),  # qty and quote
    (dict(otype=OT.MARKET, price="100"), Reason.UNSUPPORTED_COMBINATION),                  # price on MARKET
    (dict(otype=OT.LIMIT, tif=0), Reason.UNSUPPORTED_COMBINATION),
    (dict(otype=OT.STOP_LOSS_LIMIT), Reason.UNSUPPORTED_COMBINATION),                      # no stop price
    (dict(stop="90"), Reason.UNSUPPORTED_COMBINATION),                                     # stop on LIMIT
    (dict(price="0.5"), Reason.FILTER_PRICE),
    (dict(price="100001"), Reason.FILTER_PRICE),
    (dict(otype=OT.STOP_LOSS_LIMIT, stop="0.5"), Reason.FILTER_PRICE),
    (dict(qty="101"), Reason.FILTER_LOT_SIZE),
    (dict(otype=OT.MARKET, price="0", qty="11"), Reason.FILTER_MARKET_LOT_SIZE),
    (dict(price="9.99", qty="1"), Reason.FILTER_MIN_NOTIONAL),                             # 9.99 < 10
    (dict(price="100000", qty="6"), Reason.FILTER_NOTIONAL),                               # 600000 > 500000
    (dict(otype=OT.MARKET, price="0", qty="0", quote=10 ** 9 - 1), Reason.FILTER_MIN_NOTIONAL),  # 9.99999999 quote
    (dict(iceberg="0.5", tif=TimeInForce.IOC), Reason.UNSUPPORTED_COMBINATION),            # icebergs are GTC
    (dict(iceberg="1"), Reason.FILTER_ICEBERG_PARTS),                                      # not below qty
    (dict(iceberg="0.099"), Reason.FILTER_ICEBERG_PARTS),                                  # 11 parts > 10
])
def test_filters_reject_with_the_binance_reason(kw, reason):
    oe = OrderEngine(TABLE)
    v = one(oe, new(**kw))
    assert (RecordType(int(v["type"])), int(v["reason"])) == (RecordType.ORDER_REJECTED, reason)
    assert int(v["order_id"]) == int(v["seq"]) == 1 and int(v["flags"]) & R.FLAG_END
    assert R.decode_client_id(v["client_order_id"]) == "cid-1" and int(v["status"]) == R.OrderStatus.REJECTED
    assert oe.in_flight == 0  # no round trip for a rejection


def test_iceberg_within_parts_passes():
    assert int(one(OrderEngine(TABLE), new(iceberg="0.1"))["type"]) == RecordType.NEW_ORDER  # 10 parts


def test_exact_minimum_notional_passes():
    assert int(one(OrderEngine(TABLE), new(price="10", qty="1"))["type"]) == RecordType.NEW_ORDER


def test_percent_price_by_side_uses_the_last_trade_price():
    oe = OrderEngine(TABLE)
    assert int(one(oe, new(price="1000"))["type"]) == RecordType.NEW_ORDER  # no trade yet: not checked
    oe.process(results=result(RecordType.FILL, price_tick=SYM.price_to_tick("p", "100")))
    cases = [("150", Side.BUY, True), ("150.01", Side.BUY, False), ("50", Side.BUY, True), ("49.99", Side.BUY, False),
             ("200", Side.SELL, True), ("200.01", Side.SELL, False), ("80", Side.SELL, True), ("79.99", Side.SELL, False)]
    for i, (price, side, ok) in enumerate(cases):
        v = one(oe, new(price=price, side=side, source_seq=10 + i, account=100 + i))
        assert (int(v["type"]) == RecordType.NEW_ORDER) == ok, (price, side)
        if not ok:
            assert int(v["reason"]) == Reason.FILTER_PERCENT_PRICE_BY_SIDE


def test_max_num_orders_counts_open_orders_from_results():
    oe = OrderEngine(TABLE)
    acc = dict(account_id=5)
    oe.process(results=R.concat([result(RecordType.ORDER_ACCEPTED, order_type=OT.LIMIT, order_id=1, **acc),
                                 result(RecordType.ORDER_ACCEPTED, order_type=OT.LIMIT, order_id=2, **acc),
                                 result(RecordType.ORDER_ACCEPTED, order_type=OT.MARKET, order_id=3, **acc)]))
    assert oe.open_orders(5, 0) == 2
    assert int(one(oe, new(account=5))["reason"]) == Reason.FILTER_MAX_NUM_ORDERS
    assert int(one(oe, new(account=5, otype=OT.MARKET, price="0", source_seq=2))["type"]) == RecordType.NEW_ORDER
    # Order 1 filled as a maker, order 2 canceled: both slots free again.
    oe.process(results=R.concat([result(RecordType.FILL, R.FLAG_MAKER_DONE, maker_account_id=5, account_id=9,
                                        taker_order_type=OT.MARKET, price_tick=10000),
                                 result(RecordType.ORDER_CANCELED, order_type=OT.LIMIT, order_id=2, **acc)]))
    assert oe.open_orders(5, 0) == 0 and oe.open_orders(9, 0) == 0
    assert int(one(oe, new(account=5, source_seq=3))["type"]) == RecordType.NEW_ORDER


def test_credits_hold_back_commands_until_results_end_them():
    oe = OrderEngine(TABLE, max_in_flight=2)
    cmds = R.concat([new(source_seq=i + 1) for i in range(5)])
    out, _, used = oe.process(commands=cmds)
    assert used == 2 and oe.in_flight == 2
    # A result without FLAG_END returns nothing; one with it returns a credit.
    out, used_r, used = oe.process(results=R.concat([result(RecordType.ORDER_ACCEPTED, order_type=OT.LIMIT),
                                                     result(RecordType.BOOK_UPDATE, R.FLAG_END)]),
                                   commands=cmds[2:])
    assert used_r == 2 and used == 1 and oe.in_flight == 2
    assert [int(r["seq"]) for r in out] == [3, 4, 5]  # results first, then the admitted command


def test_admin_commands_are_sequenced_without_a_round_trip():
    oe = OrderEngine(TABLE)
    credit = R.empty(RecordType.CREDIT)
    credit["amount_minor"], credit["ts_ns"] = 100, 7
    v = one(oe, credit)
    assert int(v["type"]) == RecordType.CREDIT and int(v["seq"]) == 1 and oe.in_flight == 0


def test_cancel_for_unknown_symbol_and_unsupported_commands_are_refused():
    oe = OrderEngine(TABLE)
    c = R.empty(RecordType.CANCEL)
    c["symbol_id"], c["order_id"], c["source"], c["source_seq"] = 9, 44, 1, 1
    v = one(oe, c)
    assert (int(v["type"]), int(v["reason"]), int(v["order_id"])) == (RecordType.CANCEL_REJECTED, Reason.UNKNOWN_SYMBOL, 44)
    cr = R.empty(RecordType.CANCEL_REPLACE)
    cr["source"], cr["source_seq"] = 1, 2
    assert int(one(oe, cr)["reason"]) == Reason.UNSUPPORTED_COMBINATION
    assert oe.in_flight == 0


def test_client_order_ids_are_unique_among_open_orders_and_resolve_cancels():
    oe = OrderEngine(TABLE)
    first = one(oe, new(source_seq=1))
    dup = new(source_seq=2)
    dup["client_order_id"] = b"cid-1"
    assert int(one(oe, dup)["reason"]) == Reason.DUPLICATE_ORDER
    other_account = new(source_seq=3, account=2)
    other_account["client_order_id"] = b"cid-1"
    assert int(one(oe, other_account)["type"]) == RecordType.NEW_ORDER   # ids are per account
    cancel = R.empty(RecordType.CANCEL)
    cancel["account_id"], cancel["orig_client_order_id"], cancel["source"], cancel["source_seq"] = 1, b"cid-1", 1, 4
    v = one(oe, cancel)
    assert (int(v["type"]), int(v["order_id"])) == (RecordType.CANCEL, int(first["seq"]))
    cancel["orig_client_order_id"], cancel["source_seq"] = b"nope", 5
    v = one(oe, cancel)
    assert (int(v["type"]), int(v["reason"])) == (RecordType.CANCEL_REJECTED, Reason.UNKNOWN_ORDER)
    # Once the order ends, its id can be used again.
    oe.process(results=result(RecordType.ORDER_CANCELED, order_id=int(first["seq"]), order_type=OT.LIMIT, account_id=1))
    dup["source_seq"] = 6
    assert int(one(oe, dup)["type"]) == RecordType.NEW_ORDER
