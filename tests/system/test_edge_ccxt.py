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
