"""The edge app over real in-process engines (a DriverGateway), for tests: signed Binance
requests in, responses out, and the engines to compare against. Time is a settable input."""

from __future__ import annotations

import asyncio
import urllib.parse

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from ganntec import config as C
from ganntec.edge.app import make_app
from ganntec.edge.auth import ApiKey, KeyStore, sign
from ganntec.edge.gateway import DriverGateway
from ganntec.edge.state import EdgeState
from ganntec.workers.supervisor import funding_records, replayer_factory

T0_MS = 1_700_000_000_000
KEYS = {1: ("key-account-1", "secret-1"), 2: ("key-account-2", "secret-2"), 3: ("key-account-3", "secret-3")}


def still_clock_config():
    """The demo config for a harness whose clock stands still unless a test moves it: a stream
    client's messages all fall in one second, so their per-second limit is lifted."""
    import dataclasses

    cfg = C.load()
    return dataclasses.replace(cfg, limits=dataclasses.replace(cfg.limits, ws_messages_per_s=1_000_000))


class EdgeHarness:
    def __init__(self, cfg=None, rate_table=None):
        self.cfg = cfg or still_clock_config()
        self.now_ms = T0_MS
        self.driver = replayer_factory(self.cfg)()
        self.driver.order.replay = False
        self.state = EdgeState(len(self.cfg.symbols))
        journal, edge = self.driver.run(funding_records(self.cfg))
        self.journal = [journal]
        self.state.apply(edge)
        self.gateway = DriverGateway(self.state, self.driver, clock_ns=lambda: self.now_ms * 1_000_000)
        self.keys = KeyStore([ApiKey(k, s, acc) for acc, (k, s) in KEYS.items()])
        self.app = make_app(self.cfg, clock_ms=lambda: self.now_ms, keys=self.keys, state=self.state,
                            gateway=self.gateway, rate_table=rate_table)

    def journal_records(self):
        from ganntec.shm import records as R

        return R.concat(self.journal + self.gateway.journal)


async def signed(client: TestClient, method: str, path: str, account: int, now_ms: int, body: bool = False,
                 **params) -> tuple[int, object]:
    """A request signed as Binance documents (HMAC-SHA256 over the query, or the body)."""
    key, secret = KEYS[account]
    params.setdefault("timestamp", str(now_ms))
    payload = urllib.parse.urlencode(params)
    payload += "&signature=" + sign(secret, payload)
    headers = {"X-MBX-APIKEY": key}
    if body:
        headers["Content-Type"] = "application/x-www-form-urlencoded"
        resp = await client.request(method, path, data=payload, headers=headers)
    else:
        resp = await client.request(method, f"{path}?{payload}", headers=headers)
    return resp.status, await resp.json()


def run(h: EdgeHarness, scenario):
    """Run `await scenario(client)` against the harness's app on a test server."""
    async def go():
        async with TestClient(TestServer(h.app)) as client:
            return await scenario(client)
    return asyncio.run(go())


class Loopback:
    """The harness app on a real port, with an aiohttp client session."""

    def __init__(self, h: EdgeHarness):
        self.h = h

    async def __aenter__(self):
        self.runner, self.port = await serve(self.h.app)
        self.session = aiohttp.ClientSession(f"http://127.0.0.1:{self.port}")
        return self

    async def __aexit__(self, *exc):
        await self.session.close()
        await self.runner.cleanup()


async def serve(app: web.Application):
    """The app on a real loopback socket (for ccxt): (runner, port)."""
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, runner.addresses[0][1]


def ccxt_binance(port: int, api_key: str | None = None, secret: str | None = None):
    """ccxt's async binance class, unchanged but for its URLs, kept to spot (no margin or
    wallet endpoints exist here)."""
    import ccxt.async_support as ccxt

    creds = {"apiKey": api_key, "secret": secret} if api_key else {}
    ex = ccxt.binance({**creds, "options": {"fetchMarkets": {"types": ["spot"]}, "fetchCurrencies": False,
                                            "fetchMargins": False}})
    for key in ("public", "private"):
        ex.urls["api"][key] = f"http://127.0.0.1:{port}/api/v3"
    return ex


def ccxt_pro_binance(port: int, api_key: str | None = None, secret: str | None = None):
    """ccxt.pro's binance class: REST as ccxt_binance, market streams on /ws, the WebSocket API
    on /ws-api/v3."""
    import ccxt.pro as ccxtpro

    creds = {"apiKey": api_key, "secret": secret} if api_key else {}
    ex = ccxtpro.binance({**creds, "options": {"fetchMarkets": {"types": ["spot"]}, "fetchCurrencies": False,
                                               "fetchMargins": False}})
    for key in ("public", "private"):
        ex.urls["api"][key] = f"http://127.0.0.1:{port}/api/v3"
    ex.urls["api"]["ws"]["spot"] = f"ws://127.0.0.1:{port}/ws"
    ex.urls["api"]["ws"]["ws-api"]["spot"] = f"ws://127.0.0.1:{port}/ws-api/v3"
    return ex
