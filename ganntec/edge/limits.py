"""Binance's rate limits and connection hygiene at the edge, over the counters every edge
process shares (ratelimit.py, in the `edge` segment): a client is limited the same whichever
process its connection lands on.

- REQUEST_WEIGHT and RAW_REQUESTS per IP: every REST request and WebSocket API request counts
  its endpoint's weight (rest-api.md "**Weight:**" of each endpoint; `rest_weight`,
  `ws_api_weight`); every REST answer carries X-MBX-USED-WEIGHT-1M, every WebSocket API answer
  a `rateLimits` array. Over the limit: 429 and -1003 with Retry-After; an IP that keeps
  sending after its 429s is banned: 418, 2 minutes doubling per offense up to 3 days.
- ORDERS per account per 10 s and per day ("Unfilled Order Count" of the endpoints placing
  orders): X-MBX-ORDER-COUNT-10S / -1D on their answers; over: 429 -1015. An account's own
  limits (admin API, ACCOUNT_LIMITS) replace the instance's.
- CONNECTIONS: WebSocket connection attempts per IP per 5 minutes (429 -1034 before the
  upgrade); concurrent connections per IP in one edge process (`limits.max_connections_per_ip`;
  429 -1034, the connection closed).
- Sizes: request body (413), request line and header lines (aiohttp's parser, 400), incoming
  WebSocket messages (closed with 1009), idle keep-alive connections closed after
  `limits.idle_timeout_s`; market stream clients may send `ws_messages_per_s` messages a
  second (web-socket-streams.md "WebSocket Limits": beyond, disconnected, close code 1008).

Time is the app's clock (an input); a missing table (tests of other things) disables the
shared limits, not the size limits."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

from aiohttp import web

from ganntec.config import LimitsConfig
from ganntec.edge import errors as E
from ganntec.edge import ratelimit as RL

USED_WEIGHT_HEADER = "X-MBX-USED-WEIGHT-1M"
ORDER_COUNT_HEADERS = ("X-MBX-ORDER-COUNT-10S", "X-MBX-ORDER-COUNT-1D")
WS_PATHS = ("/ws", "/stream", "/ws-api/v3")


def _count(raw: str | None) -> int:
    """How many symbols a `symbols=["A","B"]` parameter names (0: none)."""
    if not raw:
        return 0
    return raw.count(",") + 1


def _ticker_weight(query: Mapping[str, str], one: int, all_: int, many: Callable[[int], int]) -> int:
    if "symbol" in query:
        return one
    if "symbols" in query:
        return many(_count(query.get("symbols")))
    return all_


def _depth_weight(query: Mapping[str, str]) -> int:
    raw = query.get("limit", "100")
    limit = int(raw) if raw.isascii() and raw.isdigit() and len(raw) <= 20 else 100
    return 5 if limit <= 100 else 25 if limit <= 500 else 50 if limit <= 1000 else 250


def _24hr_weight(n: int) -> int:
    return 2 if n <= 20 else 40 if n <= 100 else 80


# (method, path) -> weight, or a function of the query (rest-api.md, each endpoint's "Weight").
REST_WEIGHTS: dict[tuple[str, str], int | Callable[[Mapping[str, str]], int]] = {
    ("GET", "/api/v3/ping"): 1, ("GET", "/api/v3/time"): 1, ("GET", "/api/v3/exchangeInfo"): 20,
    ("GET", "/api/v3/depth"): _depth_weight, ("GET", "/api/v3/trades"): 25, ("GET", "/api/v3/historicalTrades"): 25,
    ("GET", "/api/v3/aggTrades"): 4, ("GET", "/api/v3/klines"): 2, ("GET", "/api/v3/uiKlines"): 2,
    ("GET", "/api/v3/avgPrice"): 2,
    ("GET", "/api/v3/ticker/24hr"): lambda q: _ticker_weight(q, 2, 80, _24hr_weight),
    ("GET", "/api/v3/ticker/price"): lambda q: _ticker_weight(q, 2, 4, lambda n: 4),
    ("GET", "/api/v3/ticker/bookTicker"): lambda q: _ticker_weight(q, 2, 4, lambda n: 4),
    ("POST", "/api/v3/order"): 1, ("GET", "/api/v3/order"): 4, ("DELETE", "/api/v3/order"): 1,
    ("POST", "/api/v3/order/test"): lambda q: 20 if q.get("computeCommissionRates") == "true" else 1,
    ("POST", "/api/v3/order/cancelReplace"): 1, ("PUT", "/api/v3/order/amend/keepPriority"): 4,
    ("GET", "/api/v3/openOrders"): lambda q: 6 if "symbol" in q else 80, ("DELETE", "/api/v3/openOrders"): 1,
    ("GET", "/api/v3/allOrders"): 20, ("GET", "/api/v3/myTrades"): lambda q: 5 if "orderId" in q else 20,
    ("GET", "/api/v3/account"): 20,
    ("POST", "/api/v3/orderList/oco"): 1, ("DELETE", "/api/v3/orderList"): 1, ("GET", "/api/v3/orderList"): 4,
    ("GET", "/api/v3/openOrderList"): 6,
    ("POST", "/api/v3/userDataStream"): 2, ("PUT", "/api/v3/userDataStream"): 2, ("DELETE", "/api/v3/userDataStream"): 2,
}
WS_CONNECT_WEIGHT = 2  # web-socket-api.md: "Each connection ... costs 2 weight" (the REST weight of the upgrade)
# WebSocket API method -> the REST endpoint it mirrors (the same weight).
WS_API_ENDPOINTS = {
    "ping": ("GET", "/api/v3/ping"), "time": ("GET", "/api/v3/time"), "exchangeInfo": ("GET", "/api/v3/exchangeInfo"),
    "depth": ("GET", "/api/v3/depth"), "trades.recent": ("GET", "/api/v3/trades"),
    "trades.historical": ("GET", "/api/v3/historicalTrades"), "trades.aggregate": ("GET", "/api/v3/aggTrades"),
    "klines": ("GET", "/api/v3/klines"), "avgPrice": ("GET", "/api/v3/avgPrice"),
    "ticker.24hr": ("GET", "/api/v3/ticker/24hr"), "ticker.price": ("GET", "/api/v3/ticker/price"),
    "ticker.book": ("GET", "/api/v3/ticker/bookTicker"),
    "order.place": ("POST", "/api/v3/order"), "order.test": ("POST", "/api/v3/order/test"),
    "order.status": ("GET", "/api/v3/order"), "order.cancel": ("DELETE", "/api/v3/order"),
    "order.cancelReplace": ("POST", "/api/v3/order/cancelReplace"),
    "order.amend.keepPriority": ("PUT", "/api/v3/order/amend/keepPriority"),
    "openOrders.status": ("GET", "/api/v3/openOrders"), "openOrders.cancelAll": ("DELETE", "/api/v3/openOrders"),
    "allOrders": ("GET", "/api/v3/allOrders"), "myTrades": ("GET", "/api/v3/myTrades"),
    "account.status": ("GET", "/api/v3/account"), "orderList.place.oco": ("POST", "/api/v3/orderList/oco"),
    "orderList.cancel": ("DELETE", "/api/v3/orderList"), "orderList.status": ("GET", "/api/v3/orderList"),
    "openOrderLists.status": ("GET", "/api/v3/openOrderList"),
    "userDataStream.start": ("POST", "/api/v3/userDataStream"), "userDataStream.ping": ("PUT", "/api/v3/userDataStream"),
    "userDataStream.stop": ("DELETE", "/api/v3/userDataStream"),
}
IP_KEYS_KEPT = 65536  # addresses whose key is remembered (then forgotten all at once)
PRUNE_EVERY = 4096  # connections admitted between sweeps of every IP's closed transports
DEFAULT_WEIGHT = 1  # a path with no documented weight (an unknown one: its 404 still counts)
# Operations placing orders -> their "Unfilled Order Count" (trading.OPERATIONS names).
ORDER_OPERATIONS = {"new_order": 1, "cancel_replace": 1, "new_oco": 2}


def rest_weight(method: str, path: str, query: Mapping[str, str]) -> int:
    w = REST_WEIGHTS.get((method, path), DEFAULT_WEIGHT)
    return w(query) if callable(w) else w


def ws_api_weight(method: str, params: Mapping) -> int:
    endpoint = WS_API_ENDPOINTS.get(method)
    if endpoint is None:
        return DEFAULT_WEIGHT
    query = {k: (str(v).lower() if isinstance(v, bool) else str(v)) for k, v in params.items()} if isinstance(
        params, Mapping) else {}
    if method == "ticker.24hr" and isinstance(params.get("symbols"), list):
        query["symbols"] = ",".join(map(str, params["symbols"])) or ""
    return rest_weight(*endpoint, query)


def _interval_text(kind: RL.Kind) -> str:
    return f"{kind.interval_num} {kind.interval}"


class EdgeLimits:
    """The app's view of the shared rate table: one call per request, per order, per connection.
    `account_limits(account)` -> (orders per 10 s, per day) of an account, 0 for the instance's."""

    def __init__(self, table: RL.RateTable | None, cfg: LimitsConfig, clock_ms: Callable[[], int],
                 account_limits: Callable[[int], tuple[int, int]] = lambda account: (0, 0),
                 on_refusal: Callable[[str, int], None] = lambda limit, status: None):
        self.limiter = RL.Limiter(table, self.limits_of(cfg)) if table is not None else None
        self.cfg, self.clock_ms, self.account_limits = cfg, clock_ms, account_limits
        self.on_refusal = on_refusal  # (limit name, HTTP status): metrics
        self._per_account: dict[tuple[int, int], RL.Limits] = {}
        self._connections: dict[int, dict[int, object]] = {}  # ip key -> id -> this process's open transports
        self._admitted = 0
        self._ip_keys: dict[str, int] = {}  # address text -> its key (hashing one costs ~3 us)

    def _key(self, ip: str) -> int:
        key = self._ip_keys.get(ip)
        if key is None:
            if len(self._ip_keys) >= IP_KEYS_KEPT:
                self._ip_keys.clear()
            key = self._ip_keys[ip] = _key(ip)
        return key

    @staticmethod
    def limits_of(cfg: LimitsConfig) -> RL.Limits:
        return RL.Limits(request_weight=cfg.request_weight_per_minute, raw_requests=cfg.raw_requests_per_5m,
                         orders_10s=cfg.orders_per_10s, orders_1d=cfg.orders_per_day,
                         ws_connections=cfg.ws_connections_per_5m, refusals_before_ban=cfg.refusals_before_ban)

    def request(self, ip: str | None, weight: int) -> RL.Verdict | None:
        """Count a request's weight for its IP; raise its 429/418 when refused."""
        if self.limiter is None or ip is None:
            return None
        now = self.clock_ms()
        v = self.limiter.check_request(self._key(ip), weight, now)
        if not v.allowed:
            raise self._refusal(v)
        return v

    def order(self, account: int, count: int = 1) -> RL.Verdict | None:
        """Count `count` new orders of an account; raise 429 -1015 when over its limits."""
        if self.limiter is None:
            return None
        per_10s, per_day = self.account_limits(account)
        key = RL.account_key(account)
        overrides = None
        if per_10s or per_day:
            pair = (per_10s or self.cfg.orders_per_10s, per_day or self.cfg.orders_per_day)
            lim = self._per_account.get(pair)
            if lim is None:
                lim = self._per_account[pair] = dataclasses.replace(self.limiter.limits, orders_10s=pair[0],
                                                                    orders_1d=pair[1])
            overrides = {key: lim}
        now = self.clock_ms()
        v = None
        for _ in range(count):
            v = self.limiter.check_order(key, now, overrides)
            if not v.allowed:
                lim = overrides[key] if overrides else self.limiter.limits
                kind = RL.KINDS[v.limit_kind]
                self.on_refusal(kind.name, 429)
                err = E.BinanceError(429, -1015, f"Too many new orders; current limit is {lim.limit(v.limit_kind)} "
                                                 f"orders per {_interval_text(kind)}.")
                err.headers = {"Retry-After": str(v.retry_after_s), **order_headers(v)}
                raise err
        return v

    def connection(self, ip: str | None) -> None:
        """Count a WebSocket connection attempt; raise 429 -1034 (or 418) when refused."""
        if self.limiter is None or ip is None:
            return
        now = self.clock_ms()
        v = self.limiter.check_connection(self._key(ip), now)
        if not v.allowed:
            if v.status == 418:
                raise self._refusal(v)
            self.on_refusal("ws_connections", 429)
            err = E.BinanceError(429, -1034, f"Too many connection attempts from IP; current limit is "
                                             f"{self.cfg.ws_connections_per_5m} per '5 MINUTE'.")
            err.headers = {"Retry-After": str(v.retry_after_s)}
            raise err

    def open_connection(self, ip: str | None, transport) -> None:
        """Admit a transport (a TCP connection) of `ip`; raise 429 -1034 when the IP already holds
        `max_connections_per_ip` open ones in this process. Transports are held by id (uvloop's
        TLS transports take no weak reference) and dropped once closing: the IP's own when it
        connects again, everyone's every PRUNE_EVERY admissions."""
        if ip is None or transport is None:
            return
        live = self._connections.setdefault(self._key(ip), {})
        if live.get(id(transport)) is transport:
            return
        for tid in [tid for tid, t in live.items() if t.is_closing()]:
            del live[tid]
        if len(live) >= self.cfg.max_connections_per_ip:
            self.on_refusal("connections_per_ip", 429)
            err = E.BinanceError(429, -1034, f"Too many concurrent connections; current limit is "
                                             f"'{self.cfg.max_connections_per_ip}'.")
            err.headers = {"Connection": "close"}
            raise err
        live[id(transport)] = transport
        self._admitted += 1
        if self._admitted % PRUNE_EVERY == 0:
            for key in list(self._connections):
                open_ = {tid: t for tid, t in self._connections[key].items() if not t.is_closing()}
                if open_:
                    self._connections[key] = open_
                else:
                    del self._connections[key]

    def _refusal(self, v: RL.Verdict) -> E.BinanceError:
        lim = self.limiter.limits
        self.on_refusal("ban" if v.status == 418 else RL.KINDS[v.limit_kind].name, v.status)
        if v.status == 418:
            err = E.BinanceError(418, -1003, f"Way too much request weight used; IP banned until {v.banned_until_ms}. "
                                              "Please use WebSocket Streams for live updates to avoid bans.")
        else:
            kind = RL.KINDS[v.limit_kind]
            err = E.BinanceError(429, -1003, f"Too much request weight used; current limit is "
                                              f"{lim.limit(v.limit_kind)} request weight per {_interval_text(kind)}. "
                                              "Please use WebSocket Streams for live updates to avoid polling the API.")
        err.headers = {"Retry-After": str(v.retry_after_s), USED_WEIGHT_HEADER: str(v.used_weight)}
        return err

    def ws_rate_limits(self, request_verdict: RL.Verdict | None, order_verdict: RL.Verdict | None = None) -> list:
        """A WebSocket API answer's `rateLimits` (web-socket-api.md "Rate limits")."""
        out = []
        if request_verdict is not None:
            out.append({"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1,
                        "limit": self.cfg.request_weight_per_minute, "count": request_verdict.used_weight})
        if order_verdict is not None:
            out.append({"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10,
                        "limit": self.cfg.orders_per_10s, "count": order_verdict.orders_10s})
            out.append({"rateLimitType": "ORDERS", "interval": "DAY", "intervalNum": 1,
                        "limit": self.cfg.orders_per_day, "count": order_verdict.orders_1d})
        return out


def _key(ip: str) -> int:
    try:
        return RL.ip_key(ip)
    except ValueError:  # not an address (a unix socket's peer): one shared key
        return 1


def order_headers(v: RL.Verdict) -> dict[str, str]:
    return {ORDER_COUNT_HEADERS[0]: str(v.orders_10s), ORDER_COUNT_HEADERS[1]: str(v.orders_1d)}


LIMITS = web.AppKey("limits", EdgeLimits)
# request key: the order count a handler recorded (typed where aiohttp has RequestKey, >= 3.12)
ORDER_VERDICT = web.RequestKey("order_verdict", object) if hasattr(web, "RequestKey") else "order_verdict"


def is_ws_path(path: str) -> bool:
    return path in WS_PATHS or path.startswith("/ws/")


@web.middleware
async def rate_limits(request: web.Request, handler):
    """Outermost: counts the request (and a WebSocket attempt), refuses over a limit, and puts
    the usage headers on every answer, errors included."""
    lim = request.app[LIMITS]
    try:
        lim.open_connection(request.remote, request.transport)
        ws = is_ws_path(request.path)
        if ws:
            lim.connection(request.remote)
        weight = WS_CONNECT_WEIGHT if ws else rest_weight(request.method, request.path, request.query)
        verdict = lim.request(request.remote, weight)
    except E.BinanceError as exc:
        resp = E.error_response(exc)
        if exc.code == -1034 and "concurrent" in exc.msg:
            resp.force_close()
        return resp
    resp = await handler(request)
    if not resp.prepared:  # (a WebSocket's answer went out with its handshake)
        if verdict is not None:
            resp.headers[USED_WEIGHT_HEADER] = str(verdict.used_weight)
        order = request.get(ORDER_VERDICT)
        if order is not None:
            resp.headers.update(order_headers(order))
    return resp


__all__ = ["EdgeLimits", "LIMITS", "rate_limits", "rest_weight", "ws_api_weight", "ORDER_OPERATIONS",
           "ORDER_VERDICT", "order_headers"]
