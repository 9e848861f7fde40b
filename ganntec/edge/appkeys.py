"""The typed keys of the edge's aiohttp application (one place, so route modules and the app
factory share them without importing each other)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from aiohttp import web

from ganntec.config import Config
from ganntec.edge.auth import KeyStore
from ganntec.edge.units import SymbolUnits

CONFIG = web.AppKey("config", Config)
CLOCK_MS = web.AppKey("clock_ms", Callable[[], int])
KEYS = web.AppKey("keys", KeyStore)
SYMBOLS = web.AppKey("symbols", dict[str, SymbolUnits])        # by name
SYMBOLS_BY_ID = web.AppKey("symbols_by_id", list[SymbolUnits])  # by symbol_id
STATE = web.AppKey("state", object)      # edge.state.EdgeState
GATEWAY = web.AppKey("gateway", object)  # edge.gateway.Gateway
HISTORY = web.AppKey("history", Callable[[], object])  # () -> history.store.HistoryStore reader, or None
STREAMS_KEY = web.AppKey("streams", object)  # edge.streams.StreamHub
# Each account's listen key validity, ms since the epoch (0: none): may be a view of shared memory,
# so a keepalive on one edge process extends the streams another one serves.
LISTEN_EXPIRY_MS = web.AppKey("listen_expiry_ms", np.ndarray)
LISTEN_KEYS = web.AppKey("listen_keys", object)  # edge.listenkeys.ListenKeys
METRICS = web.AppKey("metrics", object)  # metrics.EdgeMetrics
ERROR_BURST = web.AppKey("error_burst", object)  # logline.Burst of unexpected errors
METRICS_REGISTRY = web.AppKey("metrics_registry", object)  # its registry (None: multiprocess files)
