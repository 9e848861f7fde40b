"""The WebSocket API over a real socket against real in-process engines: Binance's documented
signature example, order entry and queries, refusals with Binance codes, and the user data
stream (executionReport, outboundAccountPosition) in journal order; ccxt pro's watchOrders,
watchBalance and createOrderWs."""

from __future__ import annotations

import asyncio

import orjson
import pytest
from edge_harness import KEYS, T0_MS, EdgeHarness, Loopback, ccxt_pro_binance, serve

from ganntec.edge import auth as A
from ganntec.edge.errors import BinanceError


def test_the_documented_signature_example_verifies():
    """web-socket-api.md "SIGNED request example (HMAC)", its parameters and signature as given."""
    key = A.ApiKey("vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duEh8A",
                   "NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j", 1)
    params = {"symbol": "BTCUSDT", "side": "SELL", "type": "LIMIT", "timeInForce": "GTC", "quantity": "0.01000000",
              "price": "52000.00", "recvWindow": 100, "timestamp": 1645423376532, "apiKey": key.api_key,
              "signature": "aa1b5712c094bc4e57c05a1a5c1fd8d88dcd628338ea863fec7b88e59fe2db24"}
    got, text = A.authenticate_ws(params, A.KeyStore([key]), 1645423376532, "TRADE")
    assert got is key and text["recvWindow"] == "100" and "signature" not in text and "apiKey" not in text
    with pytest.raises(BinanceError, match="Signature for this request is not valid"):
        A.authenticate_ws({**params, "price": "52000.01"}, A.KeyStore([key]), 1645423376532, "TRADE")


def signed_params(account: int, now_ms: int, **params) -> dict:
    key, secret = KEYS[account]
    params = {**params, "apiKey": key, "timestamp": now_ms}
    payload = "&".join(f"{k}={A.ws_param_text(v)}" for k, v in sorted(params.items()))
    return {**params, "signature": A.sign(secret, payload)}


class WsApi:
    def __init__(self, ws):
        self.ws, self.next_id, self.events = ws, 0, []

    async def call(self, method: str, **params):
        self.next_id += 1
        rid = f"r{self.next_id}"
        await self.ws.send_str(orjson.dumps({"id": rid, "method": method, "params": params}).decode())
        while True:
            msg = orjson.loads((await asyncio.wait_for(self.ws.receive(), 10)).data)
            if "event" in msg:
                self.events.append(msg)
            elif msg.get("id") == rid:
                return msg

    async def event(self):
        if self.events:
            return self.events.pop(0)
        msg = orjson.loads((await asyncio.wait_for(self.ws.receive(), 10)).data)
        assert "event" in msg, msg
        return msg


def test_order_entry_queries_refusals_and_user_data_events():
    h = EdgeHarness()

    async def go():
        runner, port = await serve(h.app)
        import aiohttp
        try:
            async with aiohttp.ClientSession() as session:
                async with session.ws_connect(f"http://127.0.0.1:{port}/ws-api/v3") as ws:
                    api = WsApi(ws)
                    out = {"ping": await api.call("ping"), "time": await api.call("time")}
                    out["sub"] = await api.call("userDataStream.subscribe.signature", **signed_params(1, T0_MS))
                    out["place"] = await api.call("order.place", **signed_params(
                        1, T0_MS, symbol="BTCUSDT", side="SELL", type="LIMIT", timeInForce="GTC", quantity="1",
                        price="50000", newClientOrderId="ws-1"))
                    async with session.post(f"http://127.0.0.1:{port}/api/v3/order",
                                            data=_rest_body(2, symbol="BTCUSDT", side="BUY", type="MARKET",
                                                            quantity="0.4"),
                                            headers={"X-MBX-APIKEY": KEYS[2][0]}) as r:
                        assert r.status == 200
                    out["status"] = await api.call("order.status", **signed_params(
                        1, T0_MS, symbol="BTCUSDT", origClientOrderId="ws-1"))
                    out["open"] = await api.call("openOrders.status", **signed_params(1, T0_MS))
                    out["account"] = await api.call("account.status", **signed_params(1, T0_MS))
                    out["cancel"] = await api.call("order.cancel", **signed_params(
                        1, T0_MS, symbol="BTCUSDT", orderId=out["place"]["result"]["orderId"]))
                    out["poor"] = await api.call("order.place", **signed_params(
                        1, T0_MS, symbol="BTCUSDT", side="BUY", type="LIMIT", timeInForce="GTC", quantity="100",
                        price="50000"))
                    out["badsig"] = await api.call("account.status", apiKey=KEYS[1][0], timestamp=T0_MS,
                                                   signature="00")
                    out["nosuch"] = await api.call("order.teleport")
                    out["depth"] = await api.call("depth", symbol="BTCUSDT", limit=5)
                    out["info"] = await api.call("exchangeInfo", symbols=["BTCUSDT"])
                    events = []
                    while len(events) < 6:
                        events.append((await api.event())["event"])
                    out["unsub"] = await api.call("userDataStream.unsubscribe", subscriptionId=0)
                    out["terminated"] = await api.event()  # after the answer, once
                    out["subs"] = await api.call("session.subscriptions")
                    out["unsub_all"] = await api.call("userDataStream.unsubscribe")  # none left: no event
                    out["later"] = api.events
                    return out, events
        finally:
            await runner.cleanup()

    out, events = asyncio.run(go())
    assert out["ping"] == {"id": "r1", "status": 200, "result": {}, "rateLimits": []}
    assert out["time"]["result"] == {"serverTime": T0_MS}
    assert out["sub"]["result"] == {"subscriptionId": 0}
    place = out["place"]["result"]
    assert place["clientOrderId"] == "ws-1" and place["status"] == "NEW" and place["price"] == "50000.00000000"
    assert out["status"]["result"]["executedQty"] == "0.40000000"
    assert [o["clientOrderId"] for o in out["open"]["result"]] == ["ws-1"]
    bal = {b["asset"]: b for b in out["account"]["result"]["balances"]}
    assert bal["BTC"]["locked"] == "0.60000000"
    assert out["cancel"]["result"]["status"] == "CANCELED"
    assert out["poor"]["status"] == 400 and out["poor"]["error"]["code"] == -2010
    assert out["badsig"]["error"] == {"code": -1022, "msg": "Signature for this request is not valid."}
    assert out["nosuch"]["error"]["code"] == -1020
    assert out["depth"]["result"]["bids"] == [] and out["info"]["result"]["symbols"][0]["symbol"] == "BTCUSDT"
    kinds = [(e["e"], e.get("x"), e.get("X")) for e in events]
    # per batch of reports: the order events, then the balances they changed
    assert kinds == [("executionReport", "NEW", "NEW"), ("outboundAccountPosition", None, None),
                     ("executionReport", "TRADE", "PARTIALLY_FILLED"), ("outboundAccountPosition", None, None),
                     ("executionReport", "CANCELED", "CANCELED"), ("outboundAccountPosition", None, None)]
    assert {b["a"]: b["l"] for b in events[1]["B"]} == {"BTC": "1.00000000"}
    trade = events[2]
    assert (trade["l"], trade["L"], trade["m"], trade["N"], trade["n"], trade["c"]) == (
        "0.40000000", "50000.00000000", True, "USDT", "20.00000000", "ws-1")
    assert events[4]["C"] == "ws-1" and events[4]["c"] != "ws-1"
    assert out["unsub"]["result"] == {} and out["subs"]["result"] == []
    assert out["terminated"] == {"subscriptionId": 0, "event": {"e": "eventStreamTerminated", "E": T0_MS}}
    assert out["unsub_all"]["result"] == {} and out["later"] == []


def _rest_body(account: int, **params) -> str:
    import urllib.parse

    params["timestamp"] = str(T0_MS)
    q = urllib.parse.urlencode(params)
    return q + "&signature=" + A.sign(KEYS[account][1], q)


def test_ccxt_pro_watch_orders_balance_and_create_order_ws():
    import time

    from ganntec.edge.appkeys import CLOCK_MS
    from ganntec.edge.userdata import USER_STREAMS

    h = EdgeHarness()
    h.app[CLOCK_MS] = lambda: time.time_ns() // 1_000_000  # ccxt signs with its own clock
    h.gateway.clock_ns = time.time_ns

    async def go():
        runner, port = await serve(h.app)
        a = ccxt_pro_binance(port, *KEYS[1])
        b = ccxt_pro_binance(port, *KEYS[2])
        try:
            await a.load_markets()
            await b.load_markets()
            orders_task = asyncio.create_task(a.watch_orders("BTC/USDT"))
            balance_task = asyncio.create_task(a.watch_balance())
            await asyncio.wait_for(h.app[USER_STREAMS].until_subscribed(), 10)
            placed = await a.create_order_ws("BTC/USDT", "limit", "sell", 1, 50000)
            orders = [(o["id"], o["status"]) for o in await asyncio.wait_for(orders_task, 10)]  # ccxt's cache
            balance = dict((await asyncio.wait_for(balance_task, 10))["BTC"])                 # changes later
            # watching before the trade: the task registers at b's first wait, before the fill exists
            after_task = asyncio.create_task(a.watch_orders("BTC/USDT"))
            filled = await b.create_order_ws("BTC/USDT", "market", "buy", 0.25)
            after = [o["filled"] for o in await asyncio.wait_for(after_task, 10)]
            canceled = await a.cancel_order_ws(placed["id"], "BTC/USDT")
            return placed, orders, balance, filled, after, canceled
        finally:
            await a.close()
            await b.close()
            await runner.cleanup()

    placed, orders, balance, filled, after, canceled = asyncio.run(go())
    assert placed["status"] == "open" and placed["price"] == 50000
    assert orders[-1] == (placed["id"], "open")
    assert balance["used"] == 1.0
    assert filled["status"] == "closed" and filled["filled"] == 0.25
    assert after[-1] == 0.25
    assert canceled["status"] == "canceled"


def test_ticker_symbols_as_a_json_array_and_bool_subscription_ids():
    h = EdgeHarness()

    async def go():
        async with Loopback(h) as lb:
            api = WsApi(await lb.session.ws_connect("/ws-api/v3"))
            prices = await api.call("ticker.price", symbols=["BTCUSDT", "ETHUSDT"])
            book = await api.call("ticker.book", symbols=["ETHUSDT"])
            not_an_id = await api.call("userDataStream.unsubscribe", subscriptionId=True)
            return prices, book, not_an_id

    prices, book, not_an_id = asyncio.run(go())
    assert [p["symbol"] for p in prices["result"]] == ["BTCUSDT", "ETHUSDT"]
    assert [b["symbol"] for b in book["result"]] == ["ETHUSDT"]
    assert not_an_id["status"] == 400 and not_an_id["error"]["code"] == -2036
