"""ccxt's binance class, unchanged but for its URLs, against the edge on a real socket: it
loads the markets with the right precision and limits, reads the server time, and maps
Binance's error bodies to its exception classes."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import ccxt.async_support as ccxt
import pytest
from aiohttp import web

from ganntec import config as C
from ganntec.edge.app import make_app

NOW_MS = 1_700_000_000_123


async def with_client(fn):
    """Serve the demo config on a free loopback port; run fn(ccxt binance pointed at it)."""
    runner = web.AppRunner(make_app(C.load(), clock_ms=lambda: NOW_MS))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    ex = ccxt.binance({"options": {"fetchMarkets": {"types": ["spot"]}, "fetchCurrencies": False}})
    for key in ("public", "private"):
        ex.urls["api"][key] = f"http://127.0.0.1:{port}/api/v3"
    try:
        return await fn(ex)
    finally:
        await ex.close()
        await runner.cleanup()


def test_ccxt_loads_markets_and_time():
    async def go(ex):
        return await ex.load_markets(), await ex.fetch_time()

    markets, now = asyncio.run(with_client(go))
    assert now == NOW_MS
    cfg = {s.name: s for s in C.load().symbols}
    assert {m["id"] for m in markets.values()} == set(cfg)
    for m in markets.values():
        s = cfg[m["id"]]
        assert (m["base"], m["quote"], m["spot"], m["active"]) == (s.base.name, s.quote.name, True, True)
        # ccxt holds floats; each is the float nearest the configured decimal
        assert m["precision"]["price"] == float(Decimal(s.tick_size))
        assert m["precision"]["amount"] == float(Decimal(s.step_size))
        assert m["limits"]["price"] == {"min": float(Decimal(s.min_price)), "max": float(Decimal(s.max_price))}
        assert m["limits"]["amount"] == {"min": float(Decimal(s.min_qty)), "max": float(Decimal(s.max_qty))}
        assert m["limits"]["cost"]["min"] == float(Decimal(s.min_notional))


def test_ccxt_maps_binance_errors_to_its_exceptions():
    async def go(ex):
        await ex.public_get_exchangeinfo({"symbol": "NOPE"})

    with pytest.raises(ccxt.BadSymbol, match="Invalid symbol"):
        asyncio.run(with_client(go))


# --- trading with ccxt's binance class over the real engines (in-process) -----------------------
from edge_harness import KEYS, EdgeHarness, ccxt_binance, serve  # noqa: E402


async def with_trader(fn, h: EdgeHarness | None = None):
    """ccxt clients for accounts 1 and 2 against the edge over in-process engines."""
    h = h or EdgeHarness()
    import time

    h.app[CLOCK_MS_KEY] = lambda: time.time_ns() // 1_000_000  # ccxt signs with its own clock
    h.gateway.clock_ns = time.time_ns
    runner, port = await serve(h.app)
    clients = [ccxt_binance(port, *KEYS[acc]) for acc in (1, 2)]
    try:
        for ex in clients:
            await ex.load_markets()
        return await fn(*clients)
    finally:
        for ex in clients:
            await ex.close()
        await runner.cleanup()


from ganntec.edge.appkeys import CLOCK_MS as CLOCK_MS_KEY  # noqa: E402


def test_ccxt_trades_every_order_type_and_reads_it_back():
    async def go(a, b):
        out = {}
        out["limit"] = await a.create_order("BTC/USDT", "limit", "sell", 0.5, 50000)
        out["maker"] = await a.create_order("BTC/USDT", "limit", "sell", 0.1, 50010, {"postOnly": True})
        out["stop_limit"] = await a.create_order("BTC/USDT", "limit", "sell", 0.1, 40000,
                                                 {"stopLossPrice": 45000})
        out["market"] = await b.create_order("BTC/USDT", "market", "buy", 0.2)
        out["market_quote"] = await b.create_order("BTC/USDT", "market", "buy", None, None,
                                                   {"quoteOrderQty": "5000"})
        out["ioc"] = await b.create_order("BTC/USDT", "limit", "buy", 1, 50000, {"timeInForce": "IOC"})
        out["fetched"] = await a.fetch_order(out["limit"]["id"], "BTC/USDT")
        out["open"] = await a.fetch_open_orders("BTC/USDT")
        out["canceled"] = await a.cancel_order(out["maker"]["id"], "BTC/USDT")
        out["closed"] = await a.fetch_closed_orders("BTC/USDT")
        out["all"] = await a.fetch_orders("BTC/USDT")
        out["my_trades"] = await b.fetch_my_trades("BTC/USDT")
        out["balance"] = await b.fetch_balance()
        out["book"] = await a.fetch_order_book("BTC/USDT")
        out["trades"] = await a.fetch_trades("BTC/USDT")
        out["ohlcv"] = await a.fetch_ohlcv("BTC/USDT", "1m")
        out["ticker"] = await a.fetch_ticker("BTC/USDT")
        return out

    out = asyncio.run(with_trader(go))
    assert out["limit"]["status"] == "open" and out["limit"]["type"] == "limit"
    assert out["maker"]["status"] == "open"
    assert out["stop_limit"]["status"] == "open" and out["stop_limit"]["triggerPrice"] == 45000
    assert out["market"]["status"] == "closed" and out["market"]["filled"] == 0.2 and out["market"]["cost"] == 10000
    assert out["market"]["fee"] == {"currency": "BTC", "cost": 0.0002}
    # 5000 USDT buys 0.1 BTC at 50000, the rest of the 0.5 ask
    assert out["market_quote"]["status"] == "closed" and out["market_quote"]["filled"] == 0.1
    assert out["ioc"]["status"] == "expired" and out["ioc"]["filled"] == 0.2  # IOC remainder expired
    assert out["fetched"]["filled"] == 0.5 and out["fetched"]["status"] == "closed"
    assert {o["id"] for o in out["open"]} == {out["maker"]["id"], out["stop_limit"]["id"]}
    assert out["canceled"]["status"] == "canceled"
    assert {o["id"] for o in out["closed"]} == {out["limit"]["id"]}
    assert len(out["all"]) == 3
    assert [t["amount"] for t in out["my_trades"]] == [0.2, 0.1, 0.2]
    assert out["balance"]["BTC"]["total"] == 10 + 0.5 * 0.999
    assert out["book"]["asks"] == [] and out["book"]["bids"] == []
    assert [t["amount"] for t in out["trades"]] == [0.2, 0.1, 0.2]
    assert out["ohlcv"][-1][5] == 0.5 and out["ohlcv"][-1][4] == 50000
    assert out["ticker"]["last"] == 50000 and out["ticker"]["baseVolume"] == 0.5


def test_ccxt_maps_trading_errors_to_its_exceptions():
    async def go(a, b):
        errors = {}
        for name, call in (
                ("funds", lambda: b.create_order("BTC/USDT", "limit", "buy", 100, 50000)),
                ("filter", lambda: b.create_order("BTC/USDT", "limit", "buy", 0.001, 2000000)),
                ("cancel", lambda: a.cancel_order("424242", "BTC/USDT")),
                ("fetch", lambda: a.fetch_order("424242", "BTC/USDT")),
                ("post_only", lambda: None)):
            if name == "post_only":
                await a.create_order("BTC/USDT", "limit", "sell", 0.1, 50000)
                call = lambda: b.create_order("BTC/USDT", "limit", "buy", 0.1, 50000, {"postOnly": True})  # noqa: E731
            try:
                await call()
                errors[name] = None
            except ccxt.BaseError as exc:
                errors[name] = type(exc)
        return errors

    errors = asyncio.run(with_trader(go))
    assert issubclass(errors["funds"], ccxt.InsufficientFunds)
    assert issubclass(errors["filter"], ccxt.InvalidOrder)
    assert issubclass(errors["cancel"], ccxt.OrderNotFound)
    assert issubclass(errors["fetch"], ccxt.OrderNotFound)
    assert issubclass(errors["post_only"], ccxt.InvalidOrder)
