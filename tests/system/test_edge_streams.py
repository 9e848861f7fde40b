"""The market streams over a real socket, against real in-process engines: the documented
snapshot + diff-depth procedure rebuilds the book exactly over a random order flow; live
SUBSCRIBE / LIST / UNSUBSCRIBE; trade, aggTrade, bookTicker, kline and ticker events; a client
that does not read is disconnected while the others keep receiving; ccxt pro's watch methods."""

from __future__ import annotations

import asyncio
import random

import aiohttp
import orjson
import pytest
from edge_harness import T0_MS, EdgeHarness, Loopback, signed

from ganntec.edge.streams import STREAMS_KEY
from ganntec.shm.records import Side


async def next_json(ws, timeout=10.0):
    msg = await asyncio.wait_for(ws.receive(), timeout)
    assert msg.type == aiohttp.WSMsgType.TEXT, msg
    return orjson.loads(msg.data)


async def place(client, account, **params):
    params.setdefault("symbol", "BTCUSDT")
    return await signed(client, "POST", "/api/v3/order", account, T0_MS, body=True, **params)



@pytest.mark.parametrize("seed", [1, 2, 3])
def test_snapshot_plus_diff_depth_rebuilds_the_book_exactly(seed):
    h = EdgeHarness()
    rnd = random.Random(seed)

    async def flow(lb: Loopback, n: int):
        for _ in range(n):
            account = rnd.choice([1, 2, 3])
            side = rnd.choice(["BUY", "SELL"])
            kind = rnd.random()
            price = str(50000 + rnd.randint(-20, 20))
            qty = f"0.{rnd.randint(1, 30):03d}"
            if kind < 0.75:
                await place(lb.session, account, side=side, type="LIMIT", timeInForce="GTC", quantity=qty, price=price)
            elif kind < 0.9:
                await place(lb.session, account, side=side, type="MARKET", quantity=qty)
            else:
                opened = h.state.open_orders(account)
                if opened:
                    await signed(lb.session, "DELETE", "/api/v3/order", account, T0_MS, symbol="BTCUSDT",
                                 orderId=str(rnd.choice(opened).order_id))

    async def go():
        async with Loopback(h) as lb:
            await flow(lb, 40)  # a book exists before the client connects
            async with lb.session.ws_connect("/ws/btcusdt@depth@100ms") as ws:
                await flow(lb, 30)  # events the snapshot will make stale
                r = await lb.session.get("/api/v3/depth?symbol=BTCUSDT&limit=5000")
                snap = await r.json()
                await flow(lb, 60)
                book = {"b": {p: q for p, q in snap["bids"]}, "a": {p: q for p, q in snap["asks"]}}
                last = snap["lastUpdateId"]
                final_id = int(h.state.books[0].last_update_id)
                first = True
                while last < final_id:
                    ev = await next_json(ws)
                    assert ev["e"] == "depthUpdate" and ev["s"] == "BTCUSDT"
                    if ev["u"] <= snap["lastUpdateId"]:
                        continue  # older than the snapshot: dropped, as documented
                    if first:
                        assert ev["U"] <= snap["lastUpdateId"] + 1 <= ev["u"]
                        first = False
                    else:
                        assert ev["U"] == last + 1  # no gap
                    for side in ("b", "a"):
                        for p, q in ev[side]:
                            if float(q) == 0:
                                book[side].pop(p, None)
                            else:
                                book[side][p] = q
                    last = ev["u"]
                return book

    book = asyncio.run(go())
    u = h.app[STREAMS_KEY].units[0]
    for side, key in ((Side.BUY, "b"), (Side.SELL, "a")):
        want = {u.price(int(p)): u.qty(int(q)) for p, q, _ in h.driver.matching.levels(0, side)}
        assert book[key] == want


def test_subscribe_list_unsubscribe_and_events():
    h = EdgeHarness()

    async def go():
        async with Loopback(h) as lb:
            async with lb.session.ws_connect("/stream?streams=btcusdt@trade") as ws:
                await ws.send_str(orjson.dumps({"method": "SUBSCRIBE", "params": [
                    "btcusdt@aggTrade", "btcusdt@bookTicker", "btcusdt@kline_1m", "btcusdt@ticker",
                    "btcusdt@miniTicker", "btcusdt@depth5"], "id": 1}).decode())
                assert await next_json(ws) == {"result": None, "id": 1}
                await ws.send_str('{"method": "LIST_SUBSCRIPTIONS", "id": "abc"}')
                listed = await next_json(ws)
                await ws.send_str('{"method": "SUBSCRIBE", "params": ["nope@trade"], "id": 2}')
                bad = await next_json(ws)
                await ws.send_str('{"method": "FOO", "id": 3}')
                unknown = await next_json(ws)
                await ws.send_str("{not json")
                broken = await next_json(ws)
                await place(lb.session, 1, side="SELL", type="LIMIT", timeInForce="GTC", quantity="1", price="50000")
                await place(lb.session, 2, side="BUY", type="MARKET", quantity="0.25")
                events = {}
                while len(events) < 7:
                    ev = await next_json(ws)
                    events.setdefault(ev["stream"], ev["data"])
                await ws.send_str('{"method": "UNSUBSCRIBE", "params": ["btcusdt@trade"], "id": 4}')
                assert await next_json(ws) == {"result": None, "id": 4}
                await ws.send_str('{"method": "LIST_SUBSCRIPTIONS", "id": 5}')
                after = await next_json(ws)
                return listed, bad, unknown, broken, events, after

    listed, bad, unknown, broken, ev, after = asyncio.run(go())
    assert listed == {"result": sorted(["btcusdt@trade", "btcusdt@aggTrade", "btcusdt@bookTicker", "btcusdt@kline_1m",
                                        "btcusdt@ticker", "btcusdt@miniTicker", "btcusdt@depth5"]), "id": "abc"}
    assert bad["error"]["code"] == 2 and bad["id"] == 2
    assert unknown["error"]["code"] == 2 and "unknown variant FOO" in unknown["error"]["msg"]
    assert broken["error"]["code"] == 3
    t = ev["btcusdt@trade"]
    assert (t["e"], t["s"], t["t"], t["p"], t["q"], t["m"]) == ("trade", "BTCUSDT", 1, "50000.00000000", "0.25000000",
                                                                False)
    assert ev["btcusdt@aggTrade"]["a"] == 1 and ev["btcusdt@aggTrade"]["q"] == "0.25000000"
    assert ev["btcusdt@bookTicker"]["a"] == "50000.00000000"
    k = ev["btcusdt@kline_1m"]["k"]
    assert (k["i"], k["o"], k["v"], k["n"], k["t"]) == ("1m", "50000.00000000", "0.25000000", 1, T0_MS // 60000 * 60000)
    assert ev["btcusdt@ticker"]["c"] == "50000.00000000" and ev["btcusdt@ticker"]["n"] == 1
    assert ev["btcusdt@miniTicker"]["v"] == "0.25000000"
    assert ev["btcusdt@depth5"]["asks"][0] == ["50000.00000000", "1.00000000"]
    assert "btcusdt@trade" not in after["result"]


def test_a_client_that_does_not_read_is_disconnected_and_others_keep_receiving(monkeypatch):
    """The slow client is a real socket nobody reads: its kernel buffers fill, then what the
    edge holds for it, and the edge closes it; the engines and the other client never wait."""
    import ganntec.edge.streams as S

    monkeypatch.setattr(S, "SEND_BUFFER_BYTES", 64 * 1024)
    h = EdgeHarness()
    streams = "/".join(f"btcusdt@depth{n}{s}" for n in (5, 10, 20) for s in ("", "@100ms", "@1000ms"))

    async def go():
        async with Loopback(h) as lb:
            for i in range(20):  # a deep book: every depth event is large
                await place(lb.session, 1, side="SELL", type="LIMIT", timeInForce="GTC", quantity="1",
                            price=str(50001 + i))
                await place(lb.session, 3, side="BUY", type="LIMIT", timeInForce="GTC", quantity="1",
                            price=str(49999 - i))
            slow = await lb.session.ws_connect(f"/ws/{streams}")  # never read from here on
            fast = await lb.session.ws_connect("/ws/btcusdt@trade")
            hub = h.app[STREAMS_KEY]
            slow_conn = next(c for c in hub.subscribers["btcusdt@depth20"])
            orders = 0
            while not slow_conn.overflowed and orders < 5000:  # each trades and changes the book
                await place(lb.session, 2, side="BUY", type="LIMIT", timeInForce="IOC", quantity="0.001",
                            price="50020")
                orders += 1
            ids = [(await next_json(fast))["t"] for _ in range(orders)]  # the other client has them all
            closed = await asyncio.wait_for(_closed(slow), 10)
            return slow_conn.overflowed, orders, ids, closed

    overflowed, orders, ids, closed = asyncio.run(go())
    assert overflowed, f"no overflow after {orders} orders"
    assert ids == list(range(1, orders + 1))
    assert closed


async def _closed(ws) -> bool:
    """Read what the client left unread until the connection ends (the edge aborted it)."""
    while True:
        msg = await ws.receive()
        if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING,
                        aiohttp.WSMsgType.ERROR):
            return True


def test_ccxt_pro_watches_book_trades_ohlcv_and_ticker():
    from edge_harness import ccxt_pro_binance

    h = EdgeHarness()

    async def go():
        async with Loopback(h) as lb:
            ex = ccxt_pro_binance(lb.port)
            try:
                await ex.load_markets()
                await place(lb.session, 1, side="SELL", type="LIMIT", timeInForce="GTC", quantity="1", price="50000")
                book_task = asyncio.create_task(ex.watch_order_book("BTC/USDT"))
                trades_task = asyncio.create_task(ex.watch_trades("BTC/USDT"))
                ohlcv_task = asyncio.create_task(ex.watch_ohlcv("BTC/USDT", "1m"))
                ticker_task = asyncio.create_task(ex.watch_ticker("BTC/USDT"))
                # the trades must come after all four subscriptions, or they are not theirs
                await asyncio.wait_for(h.app[STREAMS_KEY].until(lambda hub: len(hub.subscribers) >= 4), 10)
                await place(lb.session, 3, side="BUY", type="LIMIT", timeInForce="GTC", quantity="0.5", price="49000")
                await place(lb.session, 2, side="BUY", type="MARKET", quantity="0.25")
                book = await asyncio.wait_for(book_task, 10)
                for _ in range(10):  # the first snapshot may predate the last update: watch until it shows
                    if book["asks"] and book["asks"][0][1] == 0.75 and book["bids"]:
                        break
                    book = await asyncio.wait_for(ex.watch_order_book("BTC/USDT"), 10)
                trades = await asyncio.wait_for(trades_task, 10)
                ohlcv = await asyncio.wait_for(ohlcv_task, 10)
                ticker = await asyncio.wait_for(ticker_task, 10)
                return book, trades, ohlcv, ticker
            finally:
                await ex.close()

    book, trades, ohlcv, ticker = asyncio.run(go())
    assert book["asks"][0] == [50000.0, 0.75] and book["bids"][0] == [49000.0, 0.5]
    assert [(t["price"], t["amount"], t["side"]) for t in trades] == [(50000.0, 0.25, "buy")]
    assert ohlcv[-1][1:6] == [50000.0, 50000.0, 50000.0, 50000.0, 0.25]
    assert ticker["last"] == 50000.0 and ticker["baseVolume"] == 0.25


def test_a_candle_is_announced_open_with_each_trade_and_closed_when_its_interval_ends():
    h = EdgeHarness()
    minute = T0_MS // 60_000 * 60_000

    async def go():
        async with Loopback(h) as lb, lb.session.ws_connect("/ws/btcusdt@kline_1m") as ws:
            hub = h.app[STREAMS_KEY]

            async def trade(price: str, qty: str) -> None:
                for account, params in ((1, dict(side="SELL", type="LIMIT", timeInForce="GTC", price=price)),
                                        (2, dict(side="BUY", type="MARKET"))):
                    status, _ = await signed(lb.session, "POST", "/api/v3/order", account, h.now_ms, body=True,
                                             symbol="BTCUSDT", quantity=qty, **params)
                    assert status == 200

            async def events() -> list:  # what came before a LIST_SUBSCRIPTIONS answer
                await ws.send_str('{"method": "LIST_SUBSCRIPTIONS", "id": 9}')
                got = []
                while (ev := await next_json(ws)).get("id") != 9:
                    got.append(ev["k"])
                return got

            await trade("50000", "0.25")
            await trade("50100", "0.5")
            opened = await events()
            h.now_ms = minute + 60_000 - 1
            hub.close_klines(h.now_ms)  # not over yet: nothing
            early = await events()
            h.now_ms = minute + 60_000
            hub.close_klines(h.now_ms)
            closed = await events()
            hub.close_klines(h.now_ms + 5_000)  # once only
            again = await events()
            h.now_ms = minute + 2 * 60_000 + 10  # the next trade comes a minute later, before any timer
            await trade("49900", "0.1")
            later = await events()
            return opened, early, closed, again, later

    opened, early, closed, again, later = asyncio.run(go())
    assert [(k["t"], k["x"], k["c"], k["v"], k["n"]) for k in opened] == [
        (minute, False, "50000.00000000", "0.25000000", 1), (minute, False, "50100.00000000", "0.75000000", 2)]
    assert early == [] and again == []
    assert [(k["t"], k["T"], k["x"], k["o"], k["h"], k["c"], k["v"], k["n"]) for k in closed] == [
        (minute, minute + 59_999, True, "50000.00000000", "50100.00000000", "50100.00000000", "0.75000000", 2)]
    assert [(k["t"], k["x"], k["o"], k["c"], k["n"]) for k in later] == [
        (minute + 120_000, False, "49900.00000000", "49900.00000000", 1)]
