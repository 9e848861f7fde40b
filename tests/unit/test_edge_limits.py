"""Rate limits and connection hygiene at the edge (limits.py) over real in-process engines and
a rate table in ordinary memory; time is the harness clock. (Across processes: the rate table's
own stress test and tests/system/test_edge_limits_processes.py.)"""

from __future__ import annotations

import asyncio
import dataclasses

import aiohttp
import numpy as np
import orjson
import pytest
from aiohttp import WSMsgType
from aiohttp.test_utils import TestClient, TestServer
from edge_harness import KEYS, T0_MS, EdgeHarness, Loopback, run, signed

from ganntec import config as C
from ganntec.edge import auth as A
from ganntec.edge.ratelimit import RateTable

ORDER = dict(symbol="BTCUSDT", side="BUY", type="LIMIT", timeInForce="GTC", quantity="0.001", price="20000")


def harness(**limits) -> EdgeHarness:
    cfg = C.load()
    cfg = dataclasses.replace(cfg, limits=dataclasses.replace(cfg.limits, **limits))
    table = RateTable.init(np.zeros(RateTable.words_needed(1024), np.int64), 1024)
    return EdgeHarness(cfg, rate_table=table)


async def get(c, path: str):
    resp = await c.get(path)
    return resp.status, resp.headers, await resp.json()


def test_request_weight_headers_429_then_418_ban_then_release():
    h = harness(request_weight_per_minute=100, refusals_before_ban=2)
    h.now_ms = T0_MS - T0_MS % 60_000 + 1_000  # 1 s into a minute

    async def go(c):
        seen = [await get(c, "/api/v3/exchangeInfo") for _ in range(5)]  # weight 20 each: 100
        over = [await get(c, "/api/v3/ping") for _ in range(3)]          # 429, 429, then banned
        h.now_ms += 60_000
        still = await get(c, "/api/v3/ping")                              # banned for 2 minutes
        h.now_ms += 2 * 60_000
        free = await get(c, "/api/v3/ping")
        return seen, over, still, free

    seen, over, still, free = run(h, go)
    assert [int(hd["X-MBX-USED-WEIGHT-1M"]) for _, hd, _ in seen] == [20, 40, 60, 80, 100]
    (s1, h1, b1), (s2, _, _), (s3, h3, b3) = over
    assert (s1, b1["code"], h1["Retry-After"]) == (429, -1003, "59")  # until the minute ends
    assert b1["msg"] == ("Too much request weight used; current limit is 100 request weight per 1 MINUTE. "
                         "Please use WebSocket Streams for live updates to avoid polling the API.")
    assert s2 == 429
    assert s3 == 418 and b3["code"] == -1003 and b3["msg"].startswith("Way too much request weight used; IP banned")
    assert h3["Retry-After"] == "120"
    assert still[0] == 418 and int(still[1]["Retry-After"]) == 60
    assert free[0] == 200


def test_orders_per_10s_refuse_with_1015_and_change_nothing():
    h = harness(orders_per_10s=3)
    h.now_ms = T0_MS - T0_MS % 10_000

    async def go(c):
        placed = []
        for i in range(3):
            resp = await c.post(_signed_path(h, **ORDER, newClientOrderId=f"o{i}"), headers=_key(1))
            placed.append((resp.status, resp.headers.get("X-MBX-ORDER-COUNT-10S"), resp.headers.get("X-MBX-ORDER-COUNT-1D")))
        books = dict(h.state.books[0].bids)
        resp = await c.post(_signed_path(h, **ORDER, newClientOrderId="o3"), headers=_key(1))
        refused = (resp.status, resp.headers.get("Retry-After"), await resp.json())
        after = dict(h.state.books[0].bids)
        other = await signed(c, "POST", "/api/v3/order", 2, h.now_ms, **ORDER)  # another account's own count
        h.now_ms += 10_000
        later = await signed(c, "POST", "/api/v3/order", 1, h.now_ms, **ORDER)
        return placed, refused, books, after, other, later

    placed, refused, books, after, other, later = run(h, go)
    assert placed == [(200, "1", "1"), (200, "2", "2"), (200, "3", "3")]
    assert refused == (429, "10", {"code": -1015, "msg": "Too many new orders; current limit is 3 orders per 10 SECOND."})
    assert books == after
    assert other[0] == 200 and later[0] == 200


def _key(account: int) -> dict:
    return {"X-MBX-APIKEY": KEYS[account][0]}


def _signed_path(h, **params) -> str:
    import urllib.parse
    params["timestamp"] = str(h.now_ms)
    q = urllib.parse.urlencode(params)
    return f"/api/v3/order?{q}&signature={A.sign(KEYS[1][1], q)}"


def test_ws_api_answers_carry_rate_limits_and_refuse_with_retry_after():
    h = harness(request_weight_per_minute=30, refusals_before_ban=5)
    h.now_ms = T0_MS - T0_MS % 60_000

    async def go():
        async with Loopback(h) as lb:
            ws = await lb.session.ws_connect("/ws-api/v3")  # costs 2
            answers = []
            for i in range(3):  # exchangeInfo: 20; the second is over 30
                await ws.send_str(orjson.dumps({"id": i, "method": "exchangeInfo", "params": {"symbol": "BTCUSDT"}}).decode())
                answers.append(orjson.loads((await ws.receive()).data))
            await ws.close()
            return answers

    first, second, third = asyncio.run(go())
    assert first["status"] == 200 and first["rateLimits"] == [
        {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 30, "count": 22}]
    assert second["status"] == 429 and second["error"]["code"] == -1003
    assert second["error"]["data"] == {"serverTime": h.now_ms, "retryAfter": h.now_ms + 60_000}
    assert third["status"] == 429


def test_market_stream_clients_may_send_5_messages_a_second():
    h = harness(ws_messages_per_s=5)

    async def go():
        async with Loopback(h) as lb:
            ws = await lb.session.ws_connect("/ws")
            for i in range(5):
                await ws.send_str(orjson.dumps({"method": "LIST_SUBSCRIPTIONS", "id": i}).decode())
                assert orjson.loads((await ws.receive()).data) == {"result": [], "id": i}
            h.now_ms += 1000  # a new second: 5 more
            for i in range(5):
                await ws.send_str(orjson.dumps({"method": "LIST_SUBSCRIPTIONS", "id": i}).decode())
                await ws.receive()
            await ws.send_str(orjson.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 99}).decode())  # the 6th
            msg = await ws.receive()
            return msg.type, ws.close_code

    kind, code = asyncio.run(go())
    assert kind in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.CLOSING) and code == 1008


def test_body_and_frame_size_limits():
    h = harness(max_body_bytes=2048, max_ws_frame_bytes=1024)

    async def go():
        async with Loopback(h) as lb:
            resp = await lb.session.post("/api/v3/order", data=b"a=" + b"x" * 4096, headers={
                "Content-Type": "application/x-www-form-urlencoded", **_key(1)})
            body = (resp.status, await resp.json())
            ws = await lb.session.ws_connect("/ws-api/v3")
            await ws.send_str("x" * 2048)
            msg = await ws.receive()
            return body, msg.type, ws.close_code

    body, kind, code = asyncio.run(go())
    assert body == (413, {"code": -1000, "msg": "Request body too large; current limit is 2048 bytes."})
    assert kind in (WSMsgType.CLOSE, WSMsgType.CLOSED) and code == 1009


def test_websocket_connection_attempts_and_concurrent_connections_per_ip():
    h = harness(ws_connections_per_5m=2, max_connections_per_ip=3)

    async def go():
        async with Loopback(h) as lb:
            url = f"http://127.0.0.1:{lb.port}"
            opened = [await lb.session.ws_connect("/ws") for _ in range(2)]
            third = await lb.session.get("/ws")  # the third attempt in 5 minutes: refused before the upgrade
            refused_ws = (third.status, await third.json())
            # two WebSockets and the keep-alive connection of that request are open: a fourth
            # connection from this IP is refused and closed
            extra = aiohttp.ClientSession(url, connector=aiohttp.TCPConnector(force_close=False))
            try:
                resp = await extra.get("/api/v3/ping")
                refused_conn = (resp.status, await resp.json(), resp.headers.get("Connection"))
            finally:
                await extra.close()
            for ws in opened:
                await ws.close()
            return refused_ws, refused_conn

    refused_ws, refused_conn = asyncio.run(go())
    assert refused_ws == (429, {"code": -1034, "msg": "Too many connection attempts from IP; current limit is 2 per "
                                                      "'5 MINUTE'."})
    assert refused_conn[0] == 429 and refused_conn[1] == {"code": -1034, "msg": "Too many concurrent connections; "
                                                                                 "current limit is '3'."}


@pytest.mark.parametrize("weight_case", [
    ("GET", "/api/v3/depth", {"limit": "5000"}, 250), ("GET", "/api/v3/depth", {}, 5),
    ("GET", "/api/v3/ticker/24hr", {}, 80), ("GET", "/api/v3/ticker/24hr", {"symbol": "X"}, 2),
    ("GET", "/api/v3/openOrders", {}, 80), ("GET", "/api/v3/account", {}, 20), ("POST", "/api/v3/order", {}, 1),
    ("GET", "/api/v3/nothing-here", {}, 1),
])
def test_rest_weights_are_binances(weight_case):
    from ganntec.edge.limits import rest_weight
    method, path, query, weight = weight_case
    assert rest_weight(method, path, query) == weight


def test_exchange_info_advertises_what_is_enforced():
    h = harness(request_weight_per_minute=1234, orders_per_10s=7)

    async def go(c):
        return await get(c, "/api/v3/exchangeInfo")

    _, _, body = run(h, go)
    limits = {(r["rateLimitType"], r["intervalNum"], r["interval"]): r["limit"] for r in body["rateLimits"]}
    assert limits[("REQUEST_WEIGHT", 1, "MINUTE")] == 1234 and limits[("ORDERS", 10, "SECOND")] == 7


def test_no_table_no_rate_limits_but_sizes_still_hold():
    h = EdgeHarness()

    async def go(c):
        return [await get(c, "/api/v3/exchangeInfo") for _ in range(400)]  # 8,000 weight

    assert {s for s, _, _ in run(h, go)} == {200}


__all__ = ["TestClient", "TestServer"]


def test_an_accounts_own_order_limit_replaces_the_instances():
    """ACCOUNT_LIMITS (the admin API's `orders_per_10s`) gives one account its own limit."""
    from ganntec.shm import records as R

    h = harness(orders_per_10s=50)
    h.now_ms = T0_MS - T0_MS % 10_000

    async def go(c):
        r = R.empty(R.RecordType.ACCOUNT_LIMITS)
        r["account_id"], r["maker_fee_e8"], r["taker_fee_e8"], r["orders_per_10s"] = 1, -1, -1, 2
        (echo,) = await h.gateway.submit_admin(r)
        assert echo.reason == 0
        one = [(await signed(c, "POST", "/api/v3/order", 1, h.now_ms, **ORDER))[0] for _ in range(3)]
        two = [(await signed(c, "POST", "/api/v3/order", 2, h.now_ms, **ORDER))[0] for _ in range(3)]
        refused = await signed(c, "POST", "/api/v3/order", 1, h.now_ms, **ORDER)
        return one, two, refused

    one, two, refused = run(h, go)
    assert one == [200, 200, 429] and two == [200, 200, 200]
    assert refused[1] == {"code": -1015, "msg": "Too many new orders; current limit is 2 orders per 10 SECOND."}
