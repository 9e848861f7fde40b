"""The Binance WebSocket API (web-socket-api.md) on `/ws-api/v3`: requests
{"id", "method", "params"} in, responses {"id", "status", "result" | "error", "rateLimits"} out,
user data events {"subscriptionId", "event"} pushed.

Methods: ping, time, exchangeInfo, depth, trades.recent, klines, avgPrice, ticker.24hr,
ticker.price, ticker.book; order.place, order.test, order.status, order.cancel,
openOrders.status, openOrders.cancelAll, allOrders, myTrades, account.status (the same
operations as REST, trading.py and market.py); userDataStream.subscribe.signature,
userDataStream.unsubscribe, session.subscriptions; the deprecated listen-key methods
userDataStream.start, userDataStream.ping, userDataStream.stop (listenkeys.py).

Requests of one connection run concurrently (responses carry their id), and each leaves for the
engines in the order it arrived: a request's command is stamped and pushed before its first
wait. Responses and events share the connection's bounded send queue (streams.Connection):
a client that does not read is disconnected."""

from __future__ import annotations

import asyncio
import time

import orjson
from aiohttp import WSCloseCode, WSMsgType, web

from ganntec.edge import auth as A
from ganntec.edge import errors as E
from ganntec.edge import market, trading
from ganntec.edge.appkeys import CLOCK_MS, CONFIG, ERROR_BURST, KEYS, METRICS
from ganntec.edge.exchange_info import query_exchange_info
from ganntec.edge.limits import LIMITS, ORDER_OPERATIONS, ws_api_weight
from ganntec.edge.streams import Connection, websocket
from ganntec.edge.userdata import USER_STREAMS

# method -> (security type, operation of trading.OPERATIONS)
TRADING = {
    "order.place": "new_order", "order.test": "test_order", "order.status": "query_order",
    "order.cancel": "cancel_order", "openOrders.status": "open_orders", "openOrders.cancelAll": "cancel_open_orders",
    "allOrders": "all_orders", "myTrades": "my_trades", "account.status": "account",
    "order.cancelReplace": "cancel_replace", "order.amend.keepPriority": "amend_keep_priority",
    "orderList.place.oco": "new_oco", "orderList.cancel": "cancel_order_list", "orderList.status": "query_order_list",
    "openOrderLists.status": "open_order_lists",
}
MARKET = {"depth": "depth", "trades.recent": "trades", "trades.historical": "historicalTrades", "trades.aggregate": "aggTrades", "klines": "klines",
          "avgPrice": "avgPrice", "ticker.24hr": "ticker.24hr", "ticker.price": "ticker.price",
          "ticker.book": "ticker.book"}
# method -> operation of trading.OPERATIONS authorized by `apiKey` alone ("This request does not
# require `signature`"). ping and stop answer "result": {}: the docs' examples show "response": {},
# but "Response format" makes `result` mandatory in every successful response.
LISTEN_KEY = {"userDataStream.start": "start_user_stream", "userDataStream.ping": "keepalive_user_stream",
              "userDataStream.stop": "close_user_stream"}
MAX_SUBSCRIPTIONS = 1000
KNOWN_METHODS = frozenset([*TRADING, *MARKET, *LISTEN_KEY, "ping", "time", "exchangeInfo",
                           "userDataStream.subscribe.signature", "userDataStream.unsubscribe",
                           "session.subscriptions"])


class Session:
    """One WebSocket API connection: its send queue and its user data subscriptions."""

    def __init__(self, app: web.Application, conn: Connection, ip: str | None = None):
        self.app, self.conn, self.ip = app, conn, ip  # ip: the client's, for keys restricted to networks
        self.order_verdict = None  # the ORDERS counts of the request being answered
        self.subscriptions: dict[int, tuple[int, object]] = {}  # id -> (account, sink)
        self.next_subscription = 0

    def reply(self, req_id, status: int, body: dict, rate_limits: list | None = None) -> None:
        self.conn.send(orjson.dumps({"id": req_id, "status": status, **body, "rateLimits": rate_limits or []}))

    def _terminated(self, subscription_ids: list[int], now_ms: int) -> None:
        for sid in subscription_ids:
            self.conn.send(orjson.dumps({"subscriptionId": sid,
                                         "event": {"e": "eventStreamTerminated", "E": now_ms}}))

    def close(self) -> None:
        streams = self.app[USER_STREAMS]
        for account, sink in self.subscriptions.values():
            streams.remove(account, sink)
        self.subscriptions.clear()

    async def handle(self, req_id, method: str, params: dict) -> None:
        """One request: its weight counted for the connection's IP (limits.py), then the call;
        the answer carries the counts ("rateLimits"). A 429/418 says when to retry in
        error.data; a ban also ends the connection ("you will be disconnected")."""
        lim = self.app[LIMITS]
        weight = verdict = None
        self.order_verdict = None
        t0 = time.perf_counter()
        status = 200
        try:
            weight = verdict = lim.request(self.ip, ws_api_weight(method, params))
            result = await self._call(method, params)
        except E.BinanceError as exc:
            if exc.code == -1003 or (exc.http_status == 429 and exc.code == -1015):
                now = self.app[CLOCK_MS]()
                retry_s = int((exc.headers or {}).get("Retry-After", "1"))
                exc.data = {"serverTime": now, "retryAfter": now + retry_s * 1000}
            status = exc.http_status
            self.reply(req_id, exc.http_status, {"error": exc.body()},  # cancelReplace's "data" inside
                       lim.ws_rate_limits(weight, self.order_verdict))
            if exc.http_status == 418:
                await self.conn.ws.close(code=WSCloseCode.POLICY_VIOLATION, message=b"IP banned")
        except Exception as exc:  # noqa: BLE001 - a bug: answered, never a request left without one
            E.log_unexpected(exc, f"WebSocket API {method}", self.app.get(ERROR_BURST))
            status = 500
            self.reply(req_id, 500, {"error": E.unknown_error().body()}, lim.ws_rate_limits(verdict, self.order_verdict))
        else:
            self.reply(req_id, 200, {"result": result}, lim.ws_rate_limits(verdict, self.order_verdict))
        finally:
            metrics = self.app[METRICS]
            name = method if method in KNOWN_METHODS else "other"  # bounded labels
            metrics.ws_api_requests.labels(name, str(status)).inc()
            metrics.ws_api_seconds.labels(name).observe(time.perf_counter() - t0)

    async def _call(self, method: str, params: dict):
        app = self.app
        now_ms = app[CLOCK_MS]()
        if method == "ping":
            return {}
        if method == "time":
            return {"serverTime": now_ms}
        if method == "exchangeInfo":
            _, text = A.authenticate_ws(_listed(params), app[KEYS], now_ms, "NONE")
            return query_exchange_info(app[CONFIG], now_ms, text)
        if method in MARKET:
            _, text = A.authenticate_ws(_listed(params), app[KEYS], now_ms, "NONE")  # ticker.*'s `symbols` array
            return market.QUERIES[MARKET[method]](app, text)
        if method in TRADING:
            need, fn = trading.OPERATIONS[TRADING[method]]
            key, text = A.authenticate_ws(params, app[KEYS], now_ms, need, ip=self.ip)
            for name in ("timestamp", "recvWindow"):
                text.pop(name, None)
            await trading.caught_up(app, key, need)
            orders = ORDER_OPERATIONS.get(TRADING[method], 0)
            if orders:
                self.order_verdict = app[LIMITS].order(key.account_id, orders)
            return await fn(app, key, text)
        if method in LISTEN_KEY:
            need, fn = trading.OPERATIONS[LISTEN_KEY[method]]
            key, text = A.authenticate_ws(params, app[KEYS], now_ms, need, signed=False, ip=self.ip)
            return await fn(app, key, text)
        if method == "userDataStream.subscribe.signature":
            key, _ = A.authenticate_ws(params, app[KEYS], now_ms, "USER_STREAM", ip=self.ip)
            if len(self.subscriptions) >= MAX_SUBSCRIPTIONS:
                raise E.BinanceError(400, -2042, "Maximum subscription ID reached for this connection.")
            sid = self.next_subscription
            self.next_subscription += 1

            def sink(event: dict, sid=sid) -> None:
                self.conn.send(orjson.dumps({"subscriptionId": sid, "event": event}))
            app[USER_STREAMS].add(key.account_id, sink)
            self.subscriptions[sid] = (key.account_id, sink)
            return {"subscriptionId": sid}
        if method == "userDataStream.unsubscribe":
            raw = params.get("subscriptionId")
            if raw is None:
                ended = sorted(self.subscriptions)
            elif not isinstance(raw, int) or isinstance(raw, bool) or raw not in self.subscriptions:
                raise E.BinanceError(400, -2036, "User Data Stream subscription not active.")
            else:
                ended = [raw]
            for sid in ended:
                account, sink = self.subscriptions.pop(sid)
                app[USER_STREAMS].remove(account, sink)
            # user-data-stream.md "Event Stream Terminated": each ended subscription says so,
            # after the answer to the unsubscribe (sent when this returns)
            asyncio.get_running_loop().call_soon(self._terminated, ended, now_ms)
            return {}
        if method == "session.subscriptions":
            return [{"subscriptionId": sid} for sid in sorted(self.subscriptions)]
        raise E.BinanceError(400, -1020, "This operation is not supported.")


def _listed(params: dict) -> dict:
    """Array parameters (exchangeInfo's `symbols` / `permissions`, the tickers' `symbols`) as the
    JSON text REST takes."""
    return {k: (orjson.dumps(v).decode() if isinstance(v, list) else v) for k, v in params.items()}


def _request(text: str):
    """(id, method, params) of one request, or an error body."""
    try:
        msg = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None, None, {"error": {"code": -1135, "msg": "Invalid JSON Request"}}
    if not isinstance(msg, dict):
        return None, None, {"error": {"code": -1135, "msg": "Invalid JSON Request"}}
    req_id, method, params = msg.get("id"), msg.get("method"), msg.get("params", {})
    if not isinstance(method, str) or not method:
        return req_id, None, {"error": {"code": -1102, "msg": "Mandatory parameter 'method' was not sent, was "
                                                             "empty/null, or malformed."}}
    if not isinstance(params, dict):
        return req_id, None, {"error": {"code": -1135, "msg": "JSON sent for parameter 'params' is not valid"}}
    return req_id, method, params


async def ws_api(request: web.Request) -> web.WebSocketResponse:
    ws = websocket(request.app[CONFIG].limits.max_ws_frame_bytes)
    await ws.prepare(request)
    conn = Connection(ws, combined=False, transport=request.transport)
    conn.open()
    session = Session(request.app, conn, request.remote)
    tasks: set[asyncio.Task] = set()
    metrics = request.app[METRICS]
    open_gauge, received = metrics.ws_connections.labels("ws-api"), metrics.ws_messages.labels("ws-api")
    open_gauge.inc()
    try:
        async for msg in ws:
            received.inc()
            if msg.type != WSMsgType.TEXT:
                continue
            req_id, method, params_or_error = _request(msg.data)
            if method is None:
                session.reply(req_id, 400, params_or_error)
                continue
            task = asyncio.create_task(session.handle(req_id, method, params_or_error))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
    finally:
        open_gauge.dec()
        session.close()
        for task in tasks:
            task.cancel()
    return ws


def add_routes(app: web.Application) -> None:
    app.router.add_get("/ws-api/v3", ws_api)
