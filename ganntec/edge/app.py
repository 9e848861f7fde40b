"""The edge's aiohttp application: Binance Spot REST, public engine-independent endpoints
(rest-api.md "General endpoints": Test connectivity, Check server time, Exchange information).
Time is an input (`clock_ms`), so tests run with a fixed clock."""

from __future__ import annotations

import time
from collections.abc import Callable

from aiohttp import web

from ganntec.config import Config
from ganntec.edge import errors as E
from ganntec.edge.exchange_info import query_exchange_info

CONFIG = web.AppKey("config", Config)
CLOCK_MS = web.AppKey("clock_ms", Callable[[], int])


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


def _no_params(request: web.Request) -> None:
    # "Parameters: NONE": Binance reads nothing, so anything sent is unread (-1104).
    if request.query:
        raise E.unread_params(0, len(request.query))


async def ping(request: web.Request) -> web.Response:
    _no_params(request)
    return E.json_response({})


async def server_time(request: web.Request) -> web.Response:
    _no_params(request)
    return E.json_response({"serverTime": request.app[CLOCK_MS]()})


async def exchange_info(request: web.Request) -> web.Response:
    app = request.app
    return E.json_response(query_exchange_info(app[CONFIG], app[CLOCK_MS](), request.query))


def make_app(cfg: Config, clock_ms: Callable[[], int] = wall_clock_ms) -> web.Application:
    app = web.Application(middlewares=[E.binance_errors])
    app[CONFIG] = cfg
    app[CLOCK_MS] = clock_ms
    app.router.add_get("/api/v3/ping", ping)
    app.router.add_get("/api/v3/time", server_time)
    app.router.add_get("/api/v3/exchangeInfo", exchange_info)
    return app
