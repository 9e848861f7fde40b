"""The edge's aiohttp application: Binance Spot REST. The general endpoints (rest-api.md
"General endpoints": Test connectivity, Check server time, Exchange information) are here;
market data in market.py, trading and account in trading.py. Time is an input (`clock_ms`), so
tests run with a fixed clock; the engines are reached through a Gateway (gateway.py) and
known through an EdgeState (state.py), both given to the factory."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
from aiohttp import web

from ganntec.config import Config
from ganntec.edge import errors as E
from ganntec.edge import listenkeys, market, streams, trading, userdata, wsapi
from ganntec.edge.appkeys import (CLOCK_MS, CONFIG, ERROR_BURST, GATEWAY, HISTORY, KEYS, LISTEN_EXPIRY_MS, METRICS,
                                  METRICS_REGISTRY, STATE, SYMBOLS, SYMBOLS_BY_ID)
from ganntec.edge.auth import KeyStore
from ganntec.edge.exchange_info import query_exchange_info
from ganntec.edge.limits import LIMITS, EdgeLimits, rate_limits
from ganntec.edge.observe import event_counter, http_metrics
from ganntec.metrics import EdgeMetrics, multiprocess_dir
from ganntec.edge.state import EdgeState
from ganntec.edge.units import SymbolUnits

__all__ = ["make_app", "wall_clock_ms", "CONFIG", "CLOCK_MS", "KEYS", "STATE", "GATEWAY", "SYMBOLS", "SYMBOLS_BY_ID"]


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


def history_reader(path: str | None) -> Callable[[], object]:
    """() -> a read-only HistoryStore on `path`, opened on first use (the history process makes
    the file), or None while there is none."""
    opened: list = []

    def get():
        if not opened and path is not None:
            import sqlite3

            from ganntec.history.store import HistoryStore
            try:
                opened.append(HistoryStore.reader(path))
            except sqlite3.OperationalError:
                return None
        return opened[0] if opened else None
    return get


def make_app(cfg: Config, clock_ms: Callable[[], int] = wall_clock_ms, keys: KeyStore | None = None,
             state: EdgeState | None = None, gateway=None, history_path: str | None = None,
             listen_expiry_ms: np.ndarray | None = None, rate_table=None, count_events: bool = True) -> web.Application:
    """The edge's app. Without a gateway the trading endpoints answer -1007 (no backend);
    without a state the market endpoints show empty books. `listen_expiry_ms`: each account's
    listen key validity (int64 ms, indexed by account id; listenkeys.py), shared by the edge
    processes so a keepalive on one extends the streams of all; by default this app's own.
    `rate_table`: the rate limit counters (ratelimit.RateTable; the edge segment's, shared by
    the edge processes); without one, no rate limit is applied (size limits still are).
    `count_events`: this process counts the business events it applies (orders, rejects,
    trades) in its metrics; with several edges only one does, or each would count them all."""
    if listen_expiry_ms is None:
        listen_expiry_ms = np.zeros(cfg.engine.max_accounts, np.int64)
    if listen_expiry_ms.dtype != np.int64 or listen_expiry_ms.ndim != 1:
        raise ValueError(f"listen_expiry_ms must be a 1-d int64 array, not {listen_expiry_ms.dtype} "
                         f"{listen_expiry_ms.shape}")
    app = web.Application(middlewares=[http_metrics, rate_limits, E.binance_errors],
                          client_max_size=cfg.limits.max_body_bytes)
    registry = None
    if multiprocess_dir() is None:  # each app its own registry (tests); else every process's files
        from prometheus_client import CollectorRegistry
        registry = CollectorRegistry()
    app[METRICS_REGISTRY] = registry
    app[ERROR_BURST] = E.error_burst()
    app[METRICS] = metrics = EdgeMetrics(registry)
    app[CONFIG] = cfg
    app[CLOCK_MS] = clock_ms
    app[KEYS] = keys if keys is not None else KeyStore()
    app[STATE] = state if state is not None else EdgeState(len(cfg.symbols))
    app[GATEWAY] = gateway
    app[HISTORY] = history_reader(history_path)
    app[LISTEN_EXPIRY_MS] = listen_expiry_ms
    directory = app[STATE].directory

    def account_limits(account: int) -> tuple[int, int]:
        acc = directory.account(account)
        return (acc.orders_per_10s, acc.orders_per_day) if acc is not None else (0, 0)
    app[LIMITS] = EdgeLimits(rate_table, cfg.limits, clock_ms, account_limits,
                             on_refusal=lambda limit, status: metrics.rate_limited.labels(limit, str(status)).inc())
    if gateway is not None:
        gateway.round_trip = metrics.round_trip
    if count_events:
        app[STATE].listeners.append(event_counter(metrics, [s.name for s in cfg.symbols]))
    units = [SymbolUnits(s) for s in cfg.symbols]
    app[SYMBOLS] = {u.name: u for u in units}
    app[SYMBOLS_BY_ID] = units
    app.router.add_get("/api/v3/ping", ping)
    app.router.add_get("/api/v3/time", server_time)
    app.router.add_get("/api/v3/exchangeInfo", exchange_info)
    market.add_routes(app)
    trading.add_routes(app)
    streams.add_routes(app)
    userdata.setup(app)
    listenkeys.setup(app)
    wsapi.add_routes(app)
    return app
