"""Matching engine: stop orders, output-space suspension (resume gives identical bytes),
capacity limits, and the order-id hash under churn."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ganntec.engines.matching import MatchingEngine
from ganntec.engines.symbols import Asset, Symbol, symbol_table
from ganntec.shm import records as R
from ganntec.shm.records import OrderType as OT
from ganntec.shm.records import Reason, RecordType, Side, TimeInForce

BTC, USDT = Asset(0, "BTC", 8), Asset(1, "USDT", 8)
SYMBOLS = symbol_table([Symbol(0, "BTCUSDT", BTC, USDT, tick_size="0.01", step_size="0.00001", min_price="0.01",
                               max_price="1000000", min_qty="0.00001", max_qty="9000")])


def new(seq, acc, side, price, qty, otype=OT.LIMIT, tif=TimeInForce.GTC, stop=0, stp=R.StpMode.NONE, quote=0):
    r = R.empty(RecordType.NEW_ORDER)
    r["seq"], r["ts_ns"], r["account_id"], r["side"], r["price_tick"], r["qty_lot"] = seq, seq * 10, acc, side, price, qty
    r["order_type"], r["time_in_force"], r["stop_price_tick"], r["stp_mode"], r["quote_qty_minor"] = otype, tif, stop, stp, quote
    return r


def cancel(acc, order_id):
    r = R.empty(RecordType.CANCEL)
    r["account_id"], r["order_id"] = acc, order_id
    return r


def cancel_all(acc):
    r = R.empty(RecordType.CANCEL_ALL)
    r["account_id"] = acc
    return r


def amend(acc, order_id, price=0, qty=0):
    r = R.empty(RecordType.AMEND)
    r["account_id"], r["order_id"], r["new_price_tick"], r["new_qty_lot"] = acc, order_id, price, qty
    return r


def kinds(out):
    return [(RecordType(R.view(r)["type"]).name, int(R.view(r)["reason"])) for r in out]


def events(out, rtype):
    return [R.view(r) for r in out if int(r["type"]) == rtype]


@pytest.fixture
def eng():
    e = MatchingEngine(SYMBOLS, max_orders=1024, max_levels=64)
    e.process(R.concat([new(1, 1, Side.SELL, 100, 5), new(2, 2, Side.BUY, 100, 1)]))  # last price 100
    return e


def test_stop_waits_then_fires_on_the_last_price(eng):
    out = eng.process(new(3, 3, Side.SELL, 0, 2, OT.STOP_LOSS, stop=99))
    assert kinds(out) == [("ORDER_ACCEPTED", 0)]  # no market data for a waiting stop
    assert eng.open_orders(0, Side.SELL) == [1]
    out = eng.process(R.concat([new(4, 4, Side.BUY, 98, 3), new(5, 5, Side.SELL, 98, 1)]))
    trig = events(out, RecordType.ORDER_TRIGGERED)
    assert [int(t["order_id"]) for t in trig] == [3]
    fills = events(out, RecordType.FILL)
    assert [(int(f["taker_order_id"]), int(f["price_tick"]), int(f["qty_lot"])) for f in fills] == [(5, 98, 1), (3, 98, 2)]
    assert kinds(out)[-1] == ("BOOK_UPDATE", 0) and eng.levels(0, Side.BUY).tolist() == []


@pytest.mark.parametrize("side, otype, stop", [(Side.BUY, OT.STOP_LOSS, 100), (Side.SELL, OT.STOP_LOSS, 100),
                                              (Side.BUY, OT.TAKE_PROFIT, 100), (Side.SELL, OT.TAKE_PROFIT_LIMIT, 99)])
def test_stop_that_would_trigger_now_is_rejected(eng, side, otype, stop):
    out = eng.process(new(3, 3, side, 101, 1, otype, stop=stop))
    assert kinds(out) == [("ORDER_REJECTED", Reason.WOULD_TRIGGER)]


def test_stop_limit_rests_with_its_limit_after_triggering(eng):
    eng.process(new(3, 3, Side.BUY, 103, 10, OT.STOP_LOSS_LIMIT, stop=102))   # rises to 102 -> buy at <= 103
    out = eng.process(R.concat([new(4, 4, Side.SELL, 102, 1), new(5, 5, Side.BUY, 102, 5)]))  # 4 @100, 1 @102
    assert [int(f["price_tick"]) for f in events(out, RecordType.FILL)] == [100, 102]
    assert [int(t["order_id"]) for t in events(out, RecordType.ORDER_TRIGGERED)] == [3]
    o = eng.order(3)
    assert o is not None and (o["price_tick"], o["leaves_lot"], o["book"]) == (103, 10, 0)  # resting bid
    assert eng.open_orders(0, Side.BUY) == [3] and eng.levels(0, Side.BUY).tolist() == [[103, 10, 1]]


def test_stops_cascade_and_cancel_all_reaches_waiting_stops(eng):
    eng.process(R.concat([new(3, 3, Side.BUY, 97, 1), new(4, 3, Side.BUY, 96, 1)]))
    eng.process(R.concat([new(5, 6, Side.SELL, 0, 1, OT.STOP_LOSS, stop=99),
                          new(6, 6, Side.SELL, 0, 1, OT.STOP_LOSS, stop=97),
                          new(7, 6, Side.SELL, 0, 1, OT.TAKE_PROFIT, stop=200)]))
    out = eng.process(R.concat([new(8, 7, Side.BUY, 98, 1), new(9, 8, Side.SELL, 98, 1)]))  # last 98
    assert [int(t["order_id"]) for t in events(out, RecordType.ORDER_TRIGGERED)] == [5, 6]  # 5 sells at 97 -> fires 6
    out = eng.process(cancel_all(6))
    assert [(int(e["order_id"]), int(e["status"])) for e in events(out, RecordType.ORDER_CANCELED)] == [(7, 4)]
    assert not events(out, RecordType.BOOK_UPDATE)


def test_waiting_stop_can_be_canceled_not_amended(eng):
    eng.process(new(3, 3, Side.SELL, 0, 2, OT.STOP_LOSS, stop=90))
    assert kinds(eng.process(amend(3, 3, qty=1))) == [("CANCEL_REJECTED", Reason.UNSUPPORTED_COMBINATION)]
    assert kinds(eng.process(cancel(3, 3))) == [("ORDER_CANCELED", Reason.CANCELED_BY_USER)]
    assert eng.order(3) is None


def _sweep_stream(makers=300):
    cmds = [new(i + 1, 1 + i % 7, Side.SELL, 100 + i % 8, 1 + i % 3) for i in range(makers)]
    cmds.append(new(makers + 1, 99, Side.BUY, 0, 10 ** 6, OT.MARKET))
    # Every book stays within 8 levels, so a max_levels=8 engine behaves the same.
    cmds += [new(makers + 2 + i, 5, Side.SELL, 0, 1, OT.STOP_LOSS, stop=50 + i % 8) for i in range(20)]
    cmds += [new(makers + 30 + i, 2, Side.BUY, 90 - i % 7, 2) for i in range(20)]
    cmds.append(new(makers + 55, 4, Side.BUY, 55, 3))
    cmds.append(new(makers + 60, 3, Side.SELL, 0, 1000, OT.MARKET))  # down to 55: fires the stops at 55..57
    cmds.append(cancel_all(2))
    return R.concat(cmds)


def test_suspended_commands_resume_to_identical_bytes():
    cmds = _sweep_stream()
    big = MatchingEngine(SYMBOLS, max_orders=1024, max_levels=64)
    reference = big.process(cmds)
    small = MatchingEngine(SYMBOLS, max_orders=1024, max_levels=8)
    out = np.zeros((small.min_out_capacity, 128), np.uint8)
    parts, pos, suspensions = [], 0, 0
    while pos < len(cmds) or small.pending:
        used, made = small.process_into(cmds[pos:], out)
        parts.append(out[:made].copy())
        pos += used
        suspensions += small.pending
    assert suspensions > 3  # the 300-maker sweep cannot fit in 32 output records
    assert len(events(reference, RecordType.ORDER_TRIGGERED)) == 6  # 2 stops at each of 55, 56, 57
    assert R.concat(parts).tobytes() == reference.tobytes()


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(1, 40), min_size=1, max_size=30))
def test_any_batch_split_gives_the_same_bytes(splits):
    cmds = _sweep_stream(120)
    whole = MatchingEngine(SYMBOLS, max_orders=1024, max_levels=64).process(cmds)
    eng = MatchingEngine(SYMBOLS, max_orders=1024, max_levels=64)
    parts, pos = [], 0
    for k in splits * (len(cmds) // sum(splits) + 1):
        if pos >= len(cmds):
            break
        parts.append(eng.process(cmds[pos:pos + k]))
        pos += k
    assert R.concat(parts).tobytes() == whole.tobytes()


def test_capacity_limits_are_rejections_not_corruption():
    eng = MatchingEngine(SYMBOLS, max_orders=4, max_levels=2)
    out = eng.process(R.concat([new(i + 1, 1, Side.BUY, 100 - i, 1) for i in range(3)]))
    expired = events(out, RecordType.ORDER_EXPIRED)
    assert [(int(e["order_id"]), int(e["reason"])) for e in expired] == [(3, Reason.BOOK_FULL)]  # 2 levels max
    out = eng.process(R.concat([new(10 + i, 1, Side.BUY, 100, 1) for i in range(3)]))
    assert kinds(out)[-1] == ("ORDER_REJECTED", Reason.BOOK_FULL)  # 4 order slots max
    assert eng.levels(0, Side.BUY).tolist() == [[100, 3, 3], [99, 1, 1]]


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(1, 300)), max_size=400))
def test_order_id_map_under_churn(ops):
    """Random places and cancels: the engine's id lookup agrees with a dict at every step."""
    eng = MatchingEngine(SYMBOLS, max_orders=512, max_levels=512)
    live: dict[int, int] = {}
    seq = 0
    for place, x in ops:
        if place or not live:
            seq += 1
            eng.process(new(seq * 1000 + x, 1, Side.BUY, x, 1))
            live[seq * 1000 + x] = x
        else:
            oid = sorted(live)[x % len(live)]
            out = eng.process(cancel(1, oid))
            assert kinds(out)[0] == ("ORDER_CANCELED", Reason.CANCELED_BY_USER)
            del live[oid]
        for oid, price in live.items():
            assert eng.order(oid)["price_tick"] == price
    assert sorted(eng.open_orders(0, Side.BUY)) == sorted(live)


def iceberg(seq, acc, side, price, qty, ice):
    r = new(seq, acc, side, price, qty)
    r["iceberg_qty_lot"] = ice
    return r


def test_iceberg_shows_one_slice_and_refreshes_at_the_back():
    eng = MatchingEngine(SYMBOLS, max_orders=64, max_levels=16)
    out = eng.process(R.concat([iceberg(1, 1, Side.SELL, 100, 10, 3), new(2, 2, Side.SELL, 100, 4)]))
    assert eng.levels(0, Side.SELL).tolist() == [[100, 7, 2]]          # 3 visible + 4
    assert [int(v["level_qty_lot"]) for v in events(out, RecordType.BOOK_UPDATE)] == [3, 7]
    out = eng.process(new(3, 3, Side.BUY, 100, 3))                      # takes the slice
    assert eng.open_orders(0, Side.SELL) == [2, 1]                     # refreshed behind order 2
    assert eng.levels(0, Side.SELL).tolist() == [[100, 7, 2]] and eng.order(1)["leaves_lot"] == 7
    out = eng.process(new(4, 3, Side.BUY, 100, 11))                     # 4 from order 2, then 3+3+1 of 1
    fills = events(out, RecordType.FILL)
    assert [(int(f["maker_order_id"]), int(f["qty_lot"])) for f in fills] == [(2, 4), (1, 3), (1, 3), (1, 1)]
    assert int(fills[-1]["flags"]) & R.FLAG_MAKER_DONE and eng.levels(0, Side.SELL).tolist() == []
    assert len(events(out, RecordType.BOOK_UPDATE)) == 1                # one level, reported once


def test_iceberg_counts_fully_for_fok_and_amend_down_trims_the_slice():
    eng = MatchingEngine(SYMBOLS, max_orders=64, max_levels=16)
    eng.process(iceberg(1, 1, Side.SELL, 100, 10, 4))
    out = eng.process(new(2, 2, Side.BUY, 100, 10, tif=TimeInForce.FOK))
    assert sum(int(f["qty_lot"]) for f in events(out, RecordType.FILL)) == 10
    eng.process(iceberg(3, 1, Side.SELL, 101, 10, 4))
    eng.process(amend(1, 3, qty=2))
    assert eng.levels(0, Side.SELL).tolist() == [[101, 2, 1]] and eng.order(3)["visible_lot"] == 2
