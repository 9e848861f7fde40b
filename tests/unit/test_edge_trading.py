"""The edge's trading, account and market endpoints over real in-process engines: Binance's
response shapes and exact decimal strings, its error codes, and the engines' state behind them."""

from __future__ import annotations

import pytest
from edge_harness import T0_MS, EdgeHarness, run, signed

from ganntec.shm import records as R

SYM = "BTCUSDT"


@pytest.fixture
def h():
    return EdgeHarness()


def order(client, account, now=T0_MS, **params):
    params.setdefault("symbol", SYM)
    return signed(client, "POST", "/api/v3/order", account, now, body=True, **params)


def test_limit_then_market_full_response_fills_and_balances(h):
    async def go(c):
        s1, sell = await order(c, 1, side="SELL", type="LIMIT", timeInForce="GTC", quantity="0.50000", price="50000.01",
                               newClientOrderId="maker-1")
        s2, buy = await order(c, 2, side="BUY", type="MARKET", quantity="0.2")
        s3, acct = await signed(c, "GET", "/api/v3/account", 2, T0_MS)
        s4, q = await signed(c, "GET", "/api/v3/order", 1, T0_MS, symbol=SYM, origClientOrderId="maker-1")
        return (s1, sell), (s2, buy), (s3, acct), (s4, q)

    (s1, sell), (s2, buy), (s3, acct), (s4, q) = run(h, go)
    assert s1 == 200 and sell["status"] == "NEW" and sell["clientOrderId"] == "maker-1"
    assert (sell["price"], sell["origQty"], sell["executedQty"]) == ("50000.01000000", "0.50000000", "0.00000000")
    assert sell["fills"] == [] and sell["transactTime"] == T0_MS and sell["orderListId"] == -1
    assert s2 == 200 and buy["status"] == "FILLED" and buy["type"] == "MARKET" and buy["side"] == "BUY"
    assert buy["executedQty"] == "0.20000000" and buy["cummulativeQuoteQty"] == "10000.00200000"
    # taker fee 0.1% of what the buyer receives (base)
    assert buy["fills"] == [{"price": "50000.01000000", "qty": "0.20000000", "commission": "0.00020000",
                             "commissionAsset": "BTC", "tradeId": 1}]
    bal = {b["asset"]: (b["free"], b["locked"]) for b in acct["balances"]}
    assert bal["BTC"] == ("10.19980000", "0.00000000")
    assert bal["USDT"] == ("989999.99800000", "0.00000000")
    risk = h.driver.risk.balances
    assert int(risk[2, h.cfg.asset("BTC").asset_id, 0]) == 1019980000
    assert s4 == 200 and q["status"] == "PARTIALLY_FILLED" and q["executedQty"] == "0.20000000"
    assert q["isWorking"] is True and q["time"] == T0_MS and q["origQuoteOrderQty"] == "0.00000000"


def test_response_types_ack_result_and_defaults(h):
    async def go(c):
        _, ack = await order(c, 1, side="BUY", type="LIMIT", timeInForce="GTC", quantity="0.1", price="100",
                             newOrderRespType="ACK")
        _, result = await order(c, 1, side="BUY", type="LIMIT", timeInForce="GTC", quantity="0.1", price="100",
                                newOrderRespType="RESULT")
        _, maker = await order(c, 1, side="BUY", type="LIMIT_MAKER", quantity="0.1", price="100")
        _, stop = await order(c, 1, side="SELL", type="STOP_LOSS_LIMIT", timeInForce="GTC", quantity="0.1",
                              price="90", stopPrice="95", newOrderRespType="RESULT")
        return ack, result, maker, stop

    ack, result, maker, stop = run(h, go)
    assert set(ack) == {"symbol", "orderId", "orderListId", "clientOrderId", "transactTime"}
    assert "fills" not in result and result["status"] == "NEW" and result["workingTime"] == T0_MS
    assert set(maker) == set(ack)  # LIMIT_MAKER defaults to ACK
    assert stop["stopPrice"] == "95.00000000" and stop["workingTime"] == -1  # a stop works once triggered
    assert len(ack["clientOrderId"]) == 22  # made by the edge when the client sends none


@pytest.mark.parametrize("params, code, msg", [
    ({"side": "BUY", "type": "LIMIT", "quantity": "1", "price": "1"}, -1102,
     "Mandatory parameter 'timeInForce' was not sent, was empty/null, or malformed."),
    ({"side": "BUY", "type": "MARKET", "quantity": "1", "timeInForce": "GTC"}, -1106,
     "Parameter 'timeInForce' sent when not required."),
    ({"side": "BUY", "type": "MARKET"}, -1102, "Param 'quantity' or 'quoteOrderQty' must be sent, but both were empty/null!"),
    ({"side": "BUY", "type": "MARKET", "quantity": "1", "price": "1"}, -1106, "Parameter 'price' sent when not required."),
    ({"side": "UP", "type": "LIMIT"}, -1117, "Invalid side."),
    ({"side": "BUY", "type": "PEGGED"}, -1116, "Invalid orderType."),
    ({"side": "BUY", "type": "LIMIT", "timeInForce": "GTD", "quantity": "1", "price": "1"}, -1115, "Invalid timeInForce."),
    ({"side": "BUY", "type": "LIMIT", "timeInForce": "GTC", "quantity": "1", "price": "1.001"}, -1013,
     "Filter failure: PRICE_FILTER"),
    ({"side": "BUY", "type": "LIMIT", "timeInForce": "GTC", "quantity": "0.000001", "price": "1"}, -1013,
     "Filter failure: LOT_SIZE"),
    ({"side": "BUY", "type": "LIMIT", "timeInForce": "GTC", "quantity": "1e3", "price": "1"}, -1100,
     "Illegal characters found in parameter 'quantity'; legal range is '^([0-9]{1,20})(\\.[0-9]{1,20})?$'."),
    ({"side": "BUY", "type": "LIMIT", "timeInForce": "GTC", "quantity": "1000", "price": "50000"}, -2010,
     "Account has insufficient balance for requested action."),
    ({"side": "BUY", "type": "LIMIT", "timeInForce": "GTC", "quantity": "1", "price": "0.01"}, -1013,
     "Filter failure: NOTIONAL"),
    ({"side": "BUY", "type": "LIMIT", "timeInForce": "GTC", "quantity": "1", "price": "1", "newClientOrderId": ""},
     -1118, "New client order ID was empty."),
    ({"side": "BUY", "type": "STOP_LOSS", "quantity": "1"}, -1102,
     "Param 'stopPrice' or 'trailingDelta' must be sent, but both were empty/null!"),
    ({"side": "BUY", "type": "LIMIT", "timeInForce": "GTC", "quantity": "1", "price": "1", "symbol": "NOPE"}, -1121,
     "Invalid symbol."),
])
def test_order_refusals_have_binance_codes_and_change_nothing(h, params, code, msg):
    before = (h.driver.risk.balances.copy(), h.driver.order.seq)

    async def go(c):
        return await order(c, 2, **params)

    status, body = run(h, go)
    assert (status, body) == (400, {"code": code, "msg": msg})
    assert (h.driver.risk.balances == before[0]).all()
    assert h.state.open_orders(2) == []


def test_duplicate_client_order_id_of_an_open_order(h):
    async def go(c):
        first = await order(c, 1, side="BUY", type="LIMIT", timeInForce="GTC", quantity="0.1", price="100",
                            newClientOrderId="same")
        again = await order(c, 1, side="BUY", type="LIMIT", timeInForce="GTC", quantity="0.1", price="100",
                            newClientOrderId="same")
        return first, again

    first, again = run(h, go)
    assert first[0] == 200
    assert again == (400, {"code": -2010, "msg": "Duplicate order sent."})


def test_cancel_by_client_id_then_unknown_and_query_of_missing(h):
    async def go(c):
        await order(c, 1, side="BUY", type="LIMIT", timeInForce="GTC", quantity="0.1", price="100", newClientOrderId="c1")
        cancel = await signed(c, "DELETE", "/api/v3/order", 1, T0_MS, symbol=SYM, origClientOrderId="c1",
                              newClientOrderId="my-cancel")
        again = await signed(c, "DELETE", "/api/v3/order", 1, T0_MS, symbol=SYM, origClientOrderId="c1")
        other = await signed(c, "DELETE", "/api/v3/order", 2, T0_MS, symbol=SYM, orderId=str(cancel[1]["orderId"]))
        neither = await signed(c, "DELETE", "/api/v3/order", 1, T0_MS, symbol=SYM)
        missing = await signed(c, "GET", "/api/v3/order", 1, T0_MS, symbol=SYM, orderId="987654")
        query = await signed(c, "GET", "/api/v3/order", 1, T0_MS, symbol=SYM, origClientOrderId="c1")
        return cancel, again, other, neither, missing, query

    cancel, again, other, neither, missing, query = run(h, go)
    assert cancel[0] == 200 and cancel[1]["status"] == "CANCELED"
    assert cancel[1]["origClientOrderId"] == "c1" and cancel[1]["clientOrderId"] == "my-cancel"
    assert again == (400, {"code": -2011, "msg": "Unknown order sent."})
    assert other == (400, {"code": -2011, "msg": "Unknown order sent."})  # another account's order
    assert neither == (400, {"code": -1102, "msg": "Param 'orderId' or 'origClientOrderId' must be sent, but both "
                                                   "were empty/null!"})
    assert missing == (400, {"code": -2013, "msg": "Order does not exist."})
    assert query[1]["status"] == "CANCELED"


def test_open_orders_cancel_all_and_all_orders(h):
    async def go(c):
        for p in ("100", "101", "102"):
            await order(c, 1, side="BUY", type="LIMIT", timeInForce="GTC", quantity="0.1", price=p)
        await order(c, 1, symbol="ETHUSDT", side="BUY", type="LIMIT", timeInForce="GTC", quantity="1", price="10")
        opened = await signed(c, "GET", "/api/v3/openOrders", 1, T0_MS)
        opened_btc = await signed(c, "GET", "/api/v3/openOrders", 1, T0_MS, symbol=SYM)
        canceled = await signed(c, "DELETE", "/api/v3/openOrders", 1, T0_MS, symbol=SYM)
        none_left = await signed(c, "DELETE", "/api/v3/openOrders", 1, T0_MS, symbol=SYM)
        every = await signed(c, "GET", "/api/v3/allOrders", 1, T0_MS, symbol=SYM)
        return opened, opened_btc, canceled, none_left, every

    opened, opened_btc, canceled, none_left, every = run(h, go)
    assert len(opened[1]) == 4 and len(opened_btc[1]) == 3
    assert canceled[0] == 200 and sorted(o["price"] for o in canceled[1]) == ["100.00000000", "101.00000000", "102.00000000"]
    assert all(o["status"] == "CANCELED" for o in canceled[1])
    assert none_left == (400, {"code": -2011, "msg": "Unknown order sent."})
    assert [o["status"] for o in every[1]] == ["CANCELED"] * 3
    assert h.state.open_orders(1, 0) == [] and len(h.state.open_orders(1)) == 1


def test_market_data_depth_trades_agg_klines_tickers(h):
    async def go(c):
        await order(c, 1, side="SELL", type="LIMIT", timeInForce="GTC", quantity="1", price="50000")
        await order(c, 1, side="SELL", type="LIMIT", timeInForce="GTC", quantity="1", price="50001")
        await order(c, 3, side="BUY", type="LIMIT", timeInForce="GTC", quantity="0.5", price="49000")
        await order(c, 2, side="BUY", type="MARKET", quantity="1.5")  # two fills: one aggregate per price
        h.now_ms = T0_MS + 61_000
        await order(c, 2, now=h.now_ms, side="BUY", type="MARKET", quantity="0.1")
        out = {}
        for name, path in (("depth", "depth?symbol=BTCUSDT&limit=5"), ("depth-nosymbol", "depth"),
                           ("trades", "trades?symbol=BTCUSDT"), ("aggTrades", "aggTrades?symbol=BTCUSDT"),
                           ("klines1m", "klines?symbol=BTCUSDT&interval=1m"),
                           ("klines1h", "klines?symbol=BTCUSDT&interval=1h"),
                           ("klines2m", "klines?symbol=BTCUSDT&interval=2m"),
                           ("ticker/24hr", "ticker/24hr?symbol=BTCUSDT"), ("ticker/price", "ticker/price?symbol=BTCUSDT"),
                           ("ticker/bookTicker", "ticker/bookTicker?symbol=BTCUSDT"), ("avgPrice", "avgPrice?symbol=BTCUSDT")):
            r = await c.get(f"/api/v3/{path}")
            out[name] = (r.status, await r.json())
        return out

    out = run(h, go)
    assert out["depth-nosymbol"] == (400, {"code": -1102, "msg": "Mandatory parameter 'symbol' was not sent, "
                                                                 "was empty/null, or malformed."})
    d = out["depth"][1]
    assert d["bids"] == [["49000.00000000", "0.50000000"]] and d["asks"] == [["50001.00000000", "0.40000000"]]
    assert d["lastUpdateId"] == int(h.driver.matching.symbol_state[0, 1])
    trades = out["trades"][1]
    assert [(t["price"], t["qty"], t["isBuyerMaker"]) for t in trades] == [
        ("50000.00000000", "1.00000000", False), ("50001.00000000", "0.50000000", False),
        ("50001.00000000", "0.10000000", False)]
    aggs = out["aggTrades"][1]
    assert [(a["a"], a["p"], a["q"], a["f"], a["l"]) for a in aggs] == [
        (1, "50000.00000000", "1.00000000", 1, 1), (2, "50001.00000000", "0.50000000", 2, 2),
        (3, "50001.00000000", "0.10000000", 3, 3)]
    k1 = out["klines1m"][1]
    assert [k[0] for k in k1] == [T0_MS // 60000 * 60000, T0_MS // 60000 * 60000 + 60000]
    assert k1[0][1:6] == ["50000.00000000", "50001.00000000", "50000.00000000", "50001.00000000", "1.50000000"]
    assert k1[0][8] == 2 and k1[0][6] == k1[0][0] + 59_999
    assert out["klines1h"][1][0][5] == "1.60000000"
    assert out["klines2m"] == (400, {"code": -1120, "msg": "Invalid interval."})
    t24 = out["ticker/24hr"][1]
    assert (t24["openPrice"], t24["lastPrice"], t24["volume"], t24["count"]) == (
        "50000.00000000", "50001.00000000", "1.60000000", 3)
    assert t24["priceChange"] == "1.00000000" and t24["priceChangePercent"] == "0.002"
    assert t24["bidPrice"] == "49000.00000000" and t24["askPrice"] == "50001.00000000"
    assert out["ticker/price"][1] == {"symbol": SYM, "price": "50001.00000000"}
    assert out["ticker/bookTicker"][1]["askQty"] == "0.40000000"
    avg = out["avgPrice"][1]
    assert avg["mins"] == 5 and avg["price"] == "50000.37500000"  # (50000 + 0.5*50001 + 0.1*50001) / 1.6


def test_my_trades_and_test_order_sends_nothing(h):
    async def go(c):
        await order(c, 1, side="SELL", type="LIMIT", timeInForce="GTC", quantity="1", price="100")
        await order(c, 2, side="BUY", type="LIMIT", timeInForce="IOC", quantity="0.3", price="100")
        seq = h.driver.order.seq
        tested = await signed(c, "POST", "/api/v3/order/test", 2, T0_MS, body=True, symbol=SYM, side="BUY",
                              type="LIMIT", timeInForce="GTC", quantity="1", price="100")
        bad_test = await signed(c, "POST", "/api/v3/order/test", 2, T0_MS, body=True, symbol=SYM, side="BUY",
                                type="LIMIT", quantity="1", price="100")
        maker = await signed(c, "GET", "/api/v3/myTrades", 1, T0_MS, symbol=SYM)
        taker = await signed(c, "GET", "/api/v3/myTrades", 2, T0_MS, symbol=SYM)
        return seq, tested, bad_test, maker, taker

    seq, tested, bad_test, maker, taker = run(h, go)
    assert tested == (200, {}) and h.driver.order.seq == seq
    assert bad_test[1]["code"] == -1102
    (m,), (t,) = maker[1], taker[1]
    assert (m["isMaker"], m["isBuyer"], m["commissionAsset"], m["commission"]) == (True, False, "USDT", "0.03000000")
    assert (t["isMaker"], t["isBuyer"], t["commissionAsset"], t["commission"]) == (False, True, "BTC", "0.00030000")
    assert m["id"] == t["id"] == 1 and m["quoteQty"] == "30.00000000"


def test_signed_endpoints_refuse_without_key_or_with_bad_signature(h):
    async def go(c):
        no_key = await c.get("/api/v3/account?timestamp=1")
        bad = await c.get(f"/api/v3/account?timestamp={T0_MS}&signature=00", headers={"X-MBX-APIKEY": "key-account-1"})
        stale = await signed(c, "GET", "/api/v3/account", 1, T0_MS - 60_000)
        return [(r.status, await r.json()) for r in (no_key, bad)] + [stale]

    no_key, bad, stale = run(h, go)
    assert no_key == (401, {"code": -2014, "msg": "API-key format invalid."})
    assert bad == (400, {"code": -1022, "msg": "Signature for this request is not valid."})
    assert stale == (400, {"code": -1021, "msg": "Timestamp for this request is outside of the recvWindow."})


def test_a_stop_triggers_and_reports_its_working_time(h):
    async def go(c):
        await order(c, 1, side="SELL", type="LIMIT", timeInForce="GTC", quantity="1", price="100")
        await order(c, 2, side="BUY", type="LIMIT", timeInForce="GTC", quantity="0.1", price="100")  # last = 100
        _, stop = await order(c, 3, side="BUY", type="STOP_LOSS", quantity="0.1", stopPrice="101")
        await order(c, 1, side="SELL", type="LIMIT", timeInForce="GTC", quantity="1", price="101")
        h.now_ms = T0_MS + 5
        await order(c, 2, now=h.now_ms, side="BUY", type="LIMIT", timeInForce="GTC", quantity="1.1", price="101")  # trades at 101
        return await signed(c, "GET", "/api/v3/order", 3, h.now_ms, symbol=SYM, orderId=str(stop["orderId"]))

    status, q = run(h, go)
    assert status == 200 and q["status"] == "FILLED" and q["type"] == "STOP_LOSS"
    assert q["workingTime"] == T0_MS + 5 and q["stopPrice"] == "101.00000000"


def test_reports_match_the_engines_record_by_record(h):
    """The projection and the engines agree after a mixed flow (open orders, balances, books)."""
    async def go(c):
        for i in range(6):
            await order(c, 1 + i % 3, side="SELL" if i % 2 else "BUY", type="LIMIT", timeInForce="GTC",
                        quantity="0.3", price=str(50000 + (i % 3)))
        await order(c, 2, side="SELL", type="MARKET", quantity="0.4")

    run(h, go)
    for sid in range(len(h.cfg.symbols)):
        for side, levels in ((R.Side.BUY, h.state.books[sid].bids), (R.Side.SELL, h.state.books[sid].asks)):
            assert levels == {int(p): int(q) for p, q, _ in h.driver.matching.levels(sid, side)}
    bal = h.driver.risk.balances
    for (acc, asset), (free, locked) in h.state.balances.items():
        assert (int(bal[acc, asset, 0]), int(bal[acc, asset, 1])) == (free, locked)
    for acc in (1, 2, 3):
        for o in h.state.open_orders(acc):
            m = h.driver.matching.order(o.order_id)
            assert m is not None and m["executed_lot"] == o.executed_lot


def cancel_replace(c, account, **params):
    params.setdefault("symbol", SYM)
    return signed(c, "POST", "/api/v3/order/cancelReplace", account, T0_MS, body=True, **params)


def test_cancel_replace_success_and_each_failure_as_binance_answers(h):
    async def go(c):
        _, first = await order(c, 1, side="BUY", type="LIMIT", timeInForce="GTC", quantity="0.1", price="100",
                               newClientOrderId="first")
        ok = await cancel_replace(c, 1, cancelReplaceMode="STOP_ON_FAILURE", cancelOrigClientOrderId="first",
                                  side="BUY", type="LIMIT", timeInForce="GTC", quantity="0.2", price="101",
                                  newClientOrderId="second", cancelNewClientOrderId="cx1")
        stop = await cancel_replace(c, 1, cancelReplaceMode="STOP_ON_FAILURE", cancelOrderId="999999",
                                    side="BUY", type="LIMIT", timeInForce="GTC", quantity="0.2", price="101")
        allow = await cancel_replace(c, 1, cancelReplaceMode="ALLOW_FAILURE", cancelOrderId="999999",
                                     side="BUY", type="LIMIT", timeInForce="GTC", quantity="0.2", price="102",
                                     newClientOrderId="third")
        bad_tick = await cancel_replace(c, 1, cancelReplaceMode="STOP_ON_FAILURE", cancelOrigClientOrderId="second",
                                        side="BUY", type="LIMIT", timeInForce="GTC", quantity="0.2", price="1.001")
        bad_filter = await cancel_replace(c, 1, cancelReplaceMode="STOP_ON_FAILURE", cancelOrigClientOrderId="second",
                                          side="BUY", type="LIMIT", timeInForce="GTC", quantity="0.001", price="0.01")
        await order(c, 2, side="SELL", type="LIMIT", timeInForce="GTC", quantity="1", price="150")
        new_fails = await cancel_replace(c, 1, cancelReplaceMode="STOP_ON_FAILURE", cancelOrigClientOrderId="third",
                                         side="BUY", type="LIMIT_MAKER", quantity="0.2", price="150")
        missing_mode = await cancel_replace(c, 1, cancelOrderId="1", side="BUY", type="MARKET", quantity="1")
        opened = await signed(c, "GET", "/api/v3/openOrders", 1, T0_MS, symbol=SYM)
        return first, ok, stop, allow, bad_tick, bad_filter, new_fails, missing_mode, opened

    first, ok, stop, allow, bad_tick, bad_filter, new_fails, missing_mode, opened = run(h, go)
    status, body = ok
    assert status == 200 and (body["cancelResult"], body["newOrderResult"]) == ("SUCCESS", "SUCCESS")
    assert body["cancelResponse"]["orderId"] == first["orderId"] and body["cancelResponse"]["status"] == "CANCELED"
    assert body["cancelResponse"]["clientOrderId"] == "cx1" and body["cancelResponse"]["origClientOrderId"] == "first"
    assert body["newOrderResponse"]["clientOrderId"] == "second" and body["newOrderResponse"]["price"] == "101.00000000"
    assert stop == (400, {"code": -2022, "msg": "Order cancel-replace failed.", "data": {
        "cancelResult": "FAILURE", "newOrderResult": "NOT_ATTEMPTED",
        "cancelResponse": {"code": -2011, "msg": "Unknown order sent."}, "newOrderResponse": None}})
    assert allow[0] == 409 and allow[1]["code"] == -2021
    assert (allow[1]["data"]["cancelResult"], allow[1]["data"]["newOrderResult"]) == ("FAILURE", "SUCCESS")
    assert allow[1]["data"]["newOrderResponse"]["clientOrderId"] == "third"
    assert bad_tick == (400, {"code": -1013, "msg": "Filter failure: PRICE_FILTER"})  # refused before anything
    # a filter the engines check first: nothing is cancelled
    assert bad_filter[0] == 400 and bad_filter[1]["code"] == -2022
    assert bad_filter[1]["data"]["newOrderResponse"] == {"code": -1013, "msg": "Filter failure: NOTIONAL"}
    assert bad_filter[1]["data"]["cancelResult"] == "NOT_ATTEMPTED"
    assert new_fails[0] == 409 and new_fails[1]["data"]["cancelResult"] == "SUCCESS"
    assert new_fails[1]["data"]["newOrderResponse"] == {"code": -2010, "msg": "Order would immediately match and take."}
    assert missing_mode[1]["code"] == -1102
    assert sorted(o["clientOrderId"] for o in opened[1]) == ["second"]  # "third" was replaced by the failed maker


def test_amend_keep_priority_reduces_quantity_keeps_place_and_renames(h):
    async def go(c):
        _, a = await order(c, 1, side="SELL", type="LIMIT", timeInForce="GTC", quantity="1", price="100",
                           newClientOrderId="a")
        await order(c, 2, side="SELL", type="LIMIT", timeInForce="GTC", quantity="1", price="100")
        amended = await signed(c, "PUT", "/api/v3/order/amend/keepPriority", 1, T0_MS, body=True, symbol=SYM,
                               origClientOrderId="a", newQty="0.4", newClientOrderId="a2")
        up = await signed(c, "PUT", "/api/v3/order/amend/keepPriority", 1, T0_MS, body=True, symbol=SYM,
                          orderId=str(a["orderId"]), newQty="2")
        same = await signed(c, "PUT", "/api/v3/order/amend/keepPriority", 1, T0_MS, body=True, symbol=SYM,
                            orderId=str(a["orderId"]), newQty="0.4")
        _, buy = await order(c, 3, side="BUY", type="MARKET", quantity="0.5")
        query = await signed(c, "GET", "/api/v3/order", 1, T0_MS, symbol=SYM, origClientOrderId="a2")
        return a, amended, up, same, buy, query

    a, (status, amended), up, same, buy, query = run(h, go)
    assert status == 200 and amended["amendedOrder"]["qty"] == "0.40000000"
    assert (amended["amendedOrder"]["origClientOrderId"], amended["amendedOrder"]["clientOrderId"]) == ("a", "a2")
    assert up == (400, {"code": -2038, "msg": "Order amend (quantity increase) is not supported."})
    assert same[1]["code"] == -2038
    # kept its place: the market buy fills the amended order first, then 0.1 of the next
    assert [f["qty"] for f in buy["fills"]] == ["0.40000000", "0.10000000"]
    assert query[1]["status"] == "FILLED" and query[1]["orderId"] == a["orderId"]


def test_oco_place_query_cancel_and_one_leg_ending_the_other(h):
    async def go(c):
        await order(c, 2, side="SELL", type="LIMIT", timeInForce="GTC", quantity="0.1", price="100")
        await order(c, 3, side="BUY", type="MARKET", quantity="0.1")  # last price 100
        oco = await signed(c, "POST", "/api/v3/orderList/oco", 1, T0_MS, body=True, symbol=SYM, side="SELL",
                           quantity="0.5", aboveType="LIMIT_MAKER", abovePrice="110", belowType="STOP_LOSS_LIMIT",
                           belowPrice="89", belowStopPrice="90", belowTimeInForce="GTC", listClientOrderId="L1",
                           aboveClientOrderId="up", belowClientOrderId="down", newOrderRespType="RESULT")
        bad = await signed(c, "POST", "/api/v3/orderList/oco", 1, T0_MS, body=True, symbol=SYM, side="SELL",
                           quantity="0.5", aboveType="LIMIT_MAKER", abovePrice="90", belowType="STOP_LOSS",
                           belowStopPrice="95")
        missing = await signed(c, "POST", "/api/v3/orderList/oco", 1, T0_MS, body=True, symbol=SYM, side="SELL",
                               quantity="0.5", aboveType="LIMIT_MAKER", belowType="STOP_LOSS", belowStopPrice="95")
        lid = oco[1]["orderListId"]
        opened = await signed(c, "GET", "/api/v3/openOrderList", 1, T0_MS)
        query = await signed(c, "GET", "/api/v3/orderList", 1, T0_MS, orderListId=str(lid))
        one = await signed(c, "GET", "/api/v3/order", 1, T0_MS, symbol=SYM, origClientOrderId="up")
        await order(c, 3, side="BUY", type="LIMIT", timeInForce="GTC", quantity="0.2", price="110")  # the maker trades
        after = await signed(c, "GET", "/api/v3/orderList", 1, T0_MS, listClientOrderId="L1")
        legs = [await signed(c, "GET", "/api/v3/order", 1, T0_MS, symbol=SYM, origClientOrderId=x)
                for x in ("up", "down")]
        oco2 = await signed(c, "POST", "/api/v3/orderList/oco", 1, T0_MS, body=True, symbol=SYM, side="SELL",
                            quantity="0.1", aboveType="LIMIT_MAKER", abovePrice="120", belowType="STOP_LOSS",
                            belowStopPrice="95")
        cancel = await signed(c, "DELETE", "/api/v3/orderList", 1, T0_MS, symbol=SYM,
                              orderListId=str(oco2[1]["orderListId"]))
        return oco, bad, missing, opened, query, one, after, legs, cancel

    oco, bad, missing, opened, query, one, after, legs, cancel = run(h, go)
    status, body = oco
    assert status == 200 and body["contingencyType"] == "OCO" and body["listClientOrderId"] == "L1"
    assert body["listOrderStatus"] == "EXECUTING" and len(body["orderReports"]) == 2
    ids = [o["orderId"] for o in body["orders"]]
    assert body["orderListId"] == ids[0] - 1 and ids[1] == ids[0] + 1
    assert {r["clientOrderId"]: r["type"] for r in body["orderReports"]} == {"up": "LIMIT_MAKER", "down": "STOP_LOSS_LIMIT"}
    assert all(r["orderListId"] == body["orderListId"] for r in body["orderReports"])
    assert bad == (400, {"code": -1106, "msg": "The relationship of the prices for the orders is not correct."})
    assert missing == (400, {"code": -1102, "msg": "Mandatory parameter 'abovePrice' was not sent, was empty/null, "
                                                   "or malformed."})
    assert [x["orderListId"] for x in opened[1]] == [body["orderListId"]]
    assert query[1]["listStatusType"] == "EXEC_STARTED" and one[1]["orderListId"] == body["orderListId"]
    # the maker leg traded (partly): the stop leg expired, the list runs until the maker ends
    assert after[1]["listOrderStatus"] == "EXECUTING"
    assert [x[1]["status"] for x in legs] == ["PARTIALLY_FILLED", "EXPIRED"]
    assert cancel[0] == 200 and [r["status"] for r in cancel[1]["orderReports"]] == ["CANCELED", "CANCELED"]
    assert cancel[1]["listOrderStatus"] == "ALL_DONE"


def test_a_replayed_journal_gives_the_edge_the_same_orders_and_lists(h):
    """What an edge process rebuilds at its start (server.bootstrap) equals what the live one saw."""
    from ganntec.edge.state import EdgeState
    from ganntec.workers.supervisor import replayer_factory

    async def go(c):
        await order(c, 2, side="SELL", type="LIMIT", timeInForce="GTC", quantity="0.1", price="100")
        await order(c, 3, side="BUY", type="MARKET", quantity="0.1")
        await signed(c, "POST", "/api/v3/orderList/oco", 1, T0_MS, body=True, symbol=SYM, side="SELL", quantity="0.5",
                     aboveType="LIMIT_MAKER", abovePrice="110", belowType="STOP_LOSS", belowStopPrice="90",
                     listClientOrderId="L1")
        await order(c, 1, side="BUY", type="LIMIT", timeInForce="GTC", quantity="0.1", price="99", icebergQty="0.01")
        await signed(c, "PUT", "/api/v3/order/amend/keepPriority", 1, T0_MS, body=True, symbol=SYM,
                     orderId=str(max(h.state.orders)), newQty="0.05")
        await order(c, 3, side="BUY", type="LIMIT", timeInForce="GTC", quantity="0.2", price="110")

    run(h, go)
    journal = h.journal_records()
    rebuilt = EdgeState(len(h.cfg.symbols))
    rebuilt.remember_commands(journal)
    rebuilt.apply(replayer_factory(h.cfg)().feed(journal))
    assert rebuilt.orders == h.state.orders
    assert rebuilt.lists == h.state.lists and len(rebuilt.lists) == 1
    assert rebuilt.balances == h.state.balances


def test_all_orders_and_my_trades_join_the_history_store_without_duplicates(h, tmp_path):
    """Orders the edge's memory let go of still come back (from the history store), and what
    both have comes once."""
    from ganntec.edge.appkeys import HISTORY
    from ganntec.history.store import HistoryStore
    from ganntec.workers.supervisor import replayer_factory

    h.state.keep_closed = 1  # the edge keeps one ended order
    stores = []
    h.app[HISTORY] = lambda: stores[0] if stores else None

    async def go(c):
        for p in ("100", "101", "102"):
            _, o = await order(c, 1, side="BUY", type="LIMIT", timeInForce="GTC", quantity="0.1", price=p)
            await signed(c, "DELETE", "/api/v3/order", 1, T0_MS, symbol=SYM, orderId=str(o["orderId"]))
        await order(c, 2, side="SELL", type="LIMIT", timeInForce="GTC", quantity="0.3", price="150")
        await order(c, 1, side="BUY", type="MARKET", quantity="0.1")
        kept = len([o for o in h.state.orders.values() if o.account_id == 1])
        journal = h.journal_records()
        store = HistoryStore(tmp_path / "history.sqlite")
        store.apply(replayer_factory(h.cfg)().feed(journal), journal)
        stores.append(store)
        return (kept, await signed(c, "GET", "/api/v3/allOrders", 1, T0_MS, symbol=SYM),
                await signed(c, "GET", "/api/v3/myTrades", 1, T0_MS, symbol=SYM))

    kept, (_, orders), (_, trades) = run(h, go)
    assert kept < 4
    assert [o["status"] for o in orders] == ["CANCELED", "CANCELED", "CANCELED", "FILLED"]
    assert [o["price"] for o in orders[:3]] == ["100.00000000", "101.00000000", "102.00000000"]
    assert [(t["id"], t["isMaker"], t["qty"]) for t in trades] == [(1, False, "0.10000000")]
