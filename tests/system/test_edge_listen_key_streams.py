"""Listen-key user data streams over a real socket against real in-process engines:
`/ws/<listenKey>` gets its account's executionReport and outboundAccountPosition events (each
once, in order) and nobody else's; `/stream?streams=<listenKey>/...` wraps them beside market
streams; expiry sends `listenKeyExpired` and then nothing, a keepalive in time prevents it, a
DELETE ends the stream without it; ccxt's REST methods for listen keys work unchanged.

ccxt pro cannot be made to use a listen key for spot (its authenticate() subscribes on the
WebSocket API with userDataStream.subscribe.signature for spot, whatever the options), so the
streams are read with plain aiohttp WebSocket clients.

Nothing is timed: a connection's messages up to a marker (the reply to LIST_SUBSCRIPTIONS, sent
after the REST calls returned with every event already queued) are all it got."""

from __future__ import annotations

import asyncio

import aiohttp
import orjson
import pytest
from edge_harness import KEYS, T0_MS, EdgeHarness, Loopback, ccxt_binance, serve, signed

from ganntec.edge.appkeys import CLOCK_MS, LISTEN_KEYS
from ganntec.edge.userdata import USER_STREAMS

HOUR_MS = 60 * 60 * 1000
PATH = "/api/v3/userDataStream"


async def next_json(ws, timeout=10.0):
    msg = await asyncio.wait_for(ws.receive(), timeout)
    assert msg.type == aiohttp.WSMsgType.TEXT, msg
    return orjson.loads(msg.data)


async def until_marker(ws, marker: int) -> tuple[list, list]:
    """(every message the connection got before the marker, its subscriptions)."""
    await ws.send_str(orjson.dumps({"method": "LIST_SUBSCRIPTIONS", "id": marker}).decode())
    before = []
    while True:
        msg = await next_json(ws)
        if msg.get("id") == marker and "result" in msg:
            return before, msg["result"]
        before.append(msg)


class Edge(Loopback):
    """The harness app on a real port, an HTTP session, and the listen-key requests."""

    async def user_stream(self, method: str, account: int, **params):
        async with self.session.request(method, PATH, data=params,
                                        headers={"X-MBX-APIKEY": KEYS[account][0]}) as r:
            return r.status, await r.json()

    async def start(self, account: int) -> str:
        status, body = await self.user_stream("POST", account)
        assert status == 200, body
        return body["listenKey"]

    async def order(self, account: int, **params):
        status, body = await signed(self.session, "POST", "/api/v3/order", account, self.h.now_ms, body=True,
                                    symbol="BTCUSDT", **params)
        assert status == 200, body
        return body


def test_each_account_hears_its_own_events_raw_on_ws_and_wrapped_on_stream():
    h = EdgeHarness()

    async def go():
        async with Edge(h) as e:
            lk1, lk2 = await e.start(1), await e.start(2)
            async with e.session.ws_connect(f"/ws/{lk1}") as raw1, \
                    e.session.ws_connect(f"/ws/{lk2}") as raw2, \
                    e.session.ws_connect(f"/stream?streams={lk1}/btcusdt@trade") as combined1:
                await e.order(1, side="SELL", type="LIMIT", timeInForce="GTC", quantity="1", price="50000",
                              newClientOrderId="lk-1")
                await e.order(3, side="BUY", type="MARKET", quantity="0.25")
                return (lk1, await until_marker(raw1, 1), await until_marker(raw2, 2),
                        await until_marker(combined1, 3))

    lk1, (raw1, subs1), (raw2, subs2), (combined1, subs_c) = asyncio.run(go())
    kinds = [(ev["e"], ev.get("x"), ev.get("X")) for ev in raw1]
    # per batch of reports: the order events, then the balances they changed
    assert kinds == [("executionReport", "NEW", "NEW"), ("outboundAccountPosition", None, None),
                     ("executionReport", "TRADE", "PARTIALLY_FILLED"), ("outboundAccountPosition", None, None)]
    assert raw1[0]["c"] == "lk-1" and raw1[0]["q"] == "1.00000000" and raw1[0]["p"] == "50000.00000000"
    assert {b["a"]: b["l"] for b in raw1[1]["B"]} == {"BTC": "1.00000000"}
    assert (raw1[2]["l"], raw1[2]["L"], raw1[2]["m"], raw1[2]["N"]) == ("0.25000000", "50000.00000000", True, "USDT")
    assert raw2 == []  # account 2 traded nothing
    assert subs1 == [lk1] and len(subs2) == 1 and subs2 != subs1
    user = [m for m in combined1 if m["stream"] == lk1]
    assert [m["data"] for m in user] == raw1  # the same events, each once, in the same order
    trades = [m["data"] for m in combined1 if m["stream"] == "btcusdt@trade"]
    assert [(t["e"], t["q"]) for t in trades] == [("trade", "0.25000000")]
    assert sorted(subs_c) == sorted([lk1, "btcusdt@trade"])


def test_expiry_sends_listen_key_expired_then_nothing_more():
    h = EdgeHarness()

    async def go():
        async with Edge(h) as e:
            lk = await e.start(1)
            async with e.session.ws_connect(f"/ws/{lk}") as raw, \
                    e.session.ws_connect(f"/stream?streams={lk}/btcusdt@trade") as combined:
                h.now_ms += HOUR_MS  # no keepalive: the key's hour is over
                h.app[LISTEN_KEYS].expire_due()
                expired = await next_json(raw), await next_json(combined)
                await e.order(1, side="SELL", type="LIMIT", timeInForce="GTC", quantity="1", price="50000")
                await e.order(3, side="BUY", type="MARKET", quantity="0.25")
                return lk, expired, await until_marker(raw, 1), await until_marker(combined, 2), dict(
                    h.app[USER_STREAMS].sinks)

    lk, (raw_expired, combined_expired), (raw_after, raw_subs), (combined_after, combined_subs), sinks = \
        asyncio.run(go())
    event = {"e": "listenKeyExpired", "E": T0_MS + HOUR_MS, "listenKey": lk}
    assert raw_expired == event
    assert combined_expired == {"stream": lk, "data": event}
    assert raw_after == [] and raw_subs == []  # still connected, hearing nothing
    assert [m["stream"] for m in combined_after] == ["btcusdt@trade"] and combined_subs == ["btcusdt@trade"]
    assert sinks == {}  # no user events are made for a stream that ended


def test_expiry_found_at_the_next_event_drops_it():
    """The clock passed the key's end with no check in between: the account's next event finds
    it, sends listenKeyExpired instead, and nothing of the order goes out."""
    h = EdgeHarness()

    async def go():
        async with Edge(h) as e:
            lk = await e.start(1)
            async with e.session.ws_connect(f"/ws/{lk}") as raw:
                h.now_ms += HOUR_MS + 1
                await e.order(1, side="SELL", type="LIMIT", timeInForce="GTC", quantity="1", price="50000")
                return lk, await until_marker(raw, 1)

    lk, (got, subs) = asyncio.run(go())
    assert got == [{"e": "listenKeyExpired", "E": T0_MS + HOUR_MS + 1, "listenKey": lk}] and subs == []


def test_a_keepalive_in_time_prevents_expiry():
    h = EdgeHarness()

    async def go():
        async with Edge(h) as e:
            lk = await e.start(1)
            async with e.session.ws_connect(f"/ws/{lk}") as raw:
                h.now_ms += 59 * 60 * 1000
                assert await e.user_stream("PUT", 1, listenKey=lk) == (200, {})
                h.now_ms += 59 * 60 * 1000  # 118 minutes after the POST, 59 after the keepalive
                h.app[LISTEN_KEYS].expire_due()
                await e.order(1, side="SELL", type="LIMIT", timeInForce="GTC", quantity="1", price="50000")
                return await until_marker(raw, 1)

    got, subs = asyncio.run(go())
    assert [ev["e"] for ev in got] == ["executionReport", "outboundAccountPosition"] and len(subs) == 1


def test_delete_ends_the_stream_without_listen_key_expired():
    h = EdgeHarness()

    async def go():
        async with Edge(h) as e:
            lk = await e.start(1)
            async with e.session.ws_connect(f"/ws/{lk}") as raw:
                closed = await e.user_stream("DELETE", 1, listenKey=lk)
                await e.order(1, side="SELL", type="LIMIT", timeInForce="GTC", quantity="1", price="50000")
                return closed, await until_marker(raw, 1)

    closed, (got, subs) = asyncio.run(go())
    assert closed == (200, {}) and got == [] and subs == []


def test_ccxt_rest_methods_make_keep_and_close_a_listen_key():
    """ccxt's implicit publicPost/Put/DeleteUserDataStream (the API key header, the listenKey in
    the form body) against the edge, the key's stream read with a plain WebSocket client."""
    import time

    import ccxt

    h = EdgeHarness()
    h.app[CLOCK_MS] = lambda: time.time_ns() // 1_000_000  # ccxt signs its orders with its own clock
    h.gateway.clock_ns = time.time_ns

    async def go():
        runner, port = await serve(h.app)
        ex = ccxt_binance(port, *KEYS[1])
        try:
            made = await ex.publicPostUserDataStream()
            lk = made["listenKey"]
            async with aiohttp.ClientSession() as session, \
                    session.ws_connect(f"ws://127.0.0.1:{port}/ws/{lk}") as raw:
                kept = await ex.publicPutUserDataStream({"listenKey": lk})
                await ex.load_markets()
                placed = await ex.create_order("BTC/USDT", "limit", "sell", 1, 50000)
                event = await next_json(raw)
                closed = await ex.publicDeleteUserDataStream({"listenKey": lk})
                with pytest.raises(ccxt.ExchangeError, match="-1125"):
                    await ex.publicPutUserDataStream({"listenKey": lk})
                return made, kept, placed, event, closed
        finally:
            await ex.close()
            await runner.cleanup()

    made, kept, placed, event, closed = asyncio.run(go())
    assert len(made["listenKey"]) == 64 and kept == {} and closed == {}
    assert (event["e"], event["i"], event["X"]) == ("executionReport", int(placed["id"]), "NEW")
