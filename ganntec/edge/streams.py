"""Binance market streams (web-socket-streams.md): `/ws/<stream>[/<stream>...]` (raw payloads)
and `/stream?streams=<a>/<b>` (combined: {"stream", "data"}), live SUBSCRIBE / UNSUBSCRIBE /
LIST_SUBSCRIPTIONS / SET_PROPERTY / GET_PROPERTY.

Streams (symbol in lower case): <s>@trade, <s>@aggTrade, <s>@depth and <s>@depth@100ms (diff
depth with U/u: the book update ids the matching engine numbers, +1 per level change, so the
documented snapshot + diff procedure rebuilds the book exactly), <s>@depth5|10|20[@100ms]
(partial book), <s>@bookTicker, <s>@kline_<interval>, <s>@miniTicker, <s>@ticker; and a listen
key given in the URL: its account's user data events (listenkeys.py).

Events are made once per batch of reports the edge applies (at most one depth, ticker, kline
or partial-book event per symbol per batch; one event per trade): as soon as the engines
report, not on Binance's 100 ms / 1000 ms clock. A candle is announced open ("x": false) with
each batch that trades in it and closed ("x": true, its final state) once its interval ends:
by a timer (KLINE_CLOSE_CHECK_S), or by the next batch if that comes first. Each event is
serialised once, whatever the number of subscribers.

Sending: an event is serialised and framed (RFC 6455, unmasked, uncompressed: compression is
never negotiated) once, and the same bytes are written to each subscriber's transport at once,
with no task or queue per connection (aiohttp writes its own uncompressed frames whole and at
once too, so frames never interleave).

Back-pressure: what a connection's transport holds unsent is bounded (SEND_BUFFER_BYTES beyond
the kernel's socket buffer); a connection over it (a client that does not read) is
disconnected at once (the TCP connection is aborted, as Binance drops such clients), never
waited for, so a slow client never slows the engines or the other clients (DESIGN §7).
"""

from __future__ import annotations

import asyncio
import collections
import re

import orjson
from aiohttp import WSCloseCode, WSMsgType, web

from ganntec.edge.appkeys import (
    CLOCK_MS,
    CONFIG,
    METRICS,
    LISTEN_KEYS,
    STATE,
    STREAMS_KEY,
    SYMBOLS_BY_ID,
)
from ganntec.edge.market import candles as candles_of
from ganntec.edge.market import ticker_row
from ganntec.edge.stats import INTERVALS, bucket_start, next_bucket
from ganntec.edge.tasks import periodic
from ganntec.shm.records import RecordType, Side

KLINE_CLOSE_CHECK_S = 0.25  # how late a candle's final event may be
SEND_BUFFER_BYTES = 4 << 20  # unsent bytes one slow connection may hold before it is closed
MAX_STREAMS = 1024           # per connection (web-socket-streams.md)
_STREAM_RE = re.compile(r"^([a-z0-9_.-]{1,20})@(trade|aggTrade|bookTicker|miniTicker|ticker|depth(?:5|10|20)?"
                        r"(?:@100ms|@1000ms)?|kline_[0-9a-zA-Z]{2,3})$")
LISTEN_KEY_LENGTH = 64
METHODS = ("SUBSCRIBE", "UNSUBSCRIBE", "LIST_SUBSCRIPTIONS", "SET_PROPERTY", "GET_PROPERTY")


def text_frame(payload: bytes) -> bytes:
    """A final, unmasked, uncompressed WebSocket text frame (RFC 6455 5.2), as a server sends it."""
    n = len(payload)
    if n < 126:
        return bytes((0x81, n)) + payload
    if n < 1 << 16:
        return b"\x81\x7e" + n.to_bytes(2, "big") + payload
    return b"\x81\x7f" + n.to_bytes(8, "big") + payload


def websocket(max_msg_bytes: int, **kw) -> web.WebSocketResponse:
    """The edge's WebSocket responses: never compressed (frames are shared bytes, see above); a
    ping every 20 s (web-socket-streams.md); an incoming message above `max_msg_bytes`
    (limits.max_ws_frame_bytes) closes the connection with 1009."""
    return web.WebSocketResponse(heartbeat=20.0, max_msg_size=max_msg_bytes, compress=False, **kw)


class Connection:
    """One WebSocket client: its subscriptions, and frames written straight to its transport."""

    def __init__(self, ws: web.WebSocketResponse, combined: bool, transport, limit: int | None = None):
        self.ws, self.combined, self.transport = ws, combined, transport
        self.limit = limit or SEND_BUFFER_BYTES
        self.streams: set[str] = set()
        self.pending: list[bytes] | None = []  # frames made before the handshake went out
        self.overflowed = False

    def open(self) -> None:
        """The handshake is sent: what waited goes out, later frames at once."""
        pending, self.pending = self.pending, None
        for frame in pending:
            self.send_frame(frame)

    def send(self, payload: bytes) -> None:
        """One JSON text message to this client alone."""
        self.send_frame(text_frame(payload))

    def send_frame(self, frame: bytes) -> None:
        if self.overflowed:
            return
        if self.pending is not None:
            self.pending.append(frame)
            return
        t = self.transport
        if t is None or t.is_closing():
            return
        if t.get_write_buffer_size() + len(frame) > self.limit:
            # Disconnect at once (as Binance does): a graceful close would wait for the client to
            # read everything before it, which is what it does not do.
            self.overflowed = True
            t.abort()
            return
        t.write(frame)


def looks_like_listen_key(name: str) -> bool:
    """A stream name that is a listen key (64 letters and digits; market streams have an '@')."""
    return len(name) == LISTEN_KEY_LENGTH and name.isascii() and name.isalnum()


class StreamHub:
    """Subscriptions and the events made from each applied batch of reports."""

    def __init__(self, app: web.Application):
        self.app = app
        self.state = app[STATE]
        self.units = app[SYMBOLS_BY_ID]
        self.by_lower = {u.name.lower(): u for u in self.units}
        self.subscribers: dict[str, set[Connection]] = collections.defaultdict(set)
        self._market_streams = 0              # subscribed names that are not listen keys
        self._trades: list = []
        self._book: dict[int, dict] = {}      # symbol -> {"U", "u", bids{}, asks{}}
        self._traded: set[int] = set()        # symbols with trades in this batch
        self._aggs: dict[int, dict] = {}      # symbol -> {agg_id: AggTrade} touched
        self._watchers: list = []
        # kline stream -> (symbol, interval, open_ms) of the candle announced open ("x": false)
        self._open_klines: dict[str, tuple[int, str, int]] = {}
        self.state.listeners.append(self.on_record)
        self.state.batch_listeners.append(self.flush)

    # --- subscriptions ----------------------------------------------------------------------
    def valid(self, name: str) -> bool:
        m = _STREAM_RE.match(name)
        if not m or m.group(1) not in self.by_lower:
            return False
        kind = m.group(2)
        return not kind.startswith("kline_") or kind[6:] in INTERVALS

    def subscribe(self, conn: Connection, names) -> None:
        for n in names:
            if n not in self.subscribers and not looks_like_listen_key(n):
                self._market_streams += 1
            conn.streams.add(n)
            self.subscribers[n].add(conn)
        for waiter in [w for w in self._watchers if w[0](self)]:
            self._watchers.remove(waiter)
            waiter[1].set_result(None)

    async def until(self, condition) -> None:
        """Wait until `condition(hub)` holds after a subscription (tests and tools wait on it
        instead of sleeping)."""
        if condition(self):
            return
        fut = asyncio.get_running_loop().create_future()
        self._watchers.append((condition, fut))
        await fut

    def unsubscribe(self, conn: Connection, names) -> None:
        for n in names:
            conn.streams.discard(n)
            subs = self.subscribers.get(n)
            if subs is not None:
                subs.discard(conn)
                if not subs:
                    del self.subscribers[n]
                    self._open_klines.pop(n, None)
                    if not looks_like_listen_key(n):
                        self._market_streams -= 1

    # --- events -------------------------------------------------------------------------------
    def on_record(self, r) -> None:
        if not self._market_streams:  # user streams only: no market event to make
            return
        if r.type == RecordType.BOOK_UPDATE:
            d = self._book.get(r.symbol_id)
            if d is None:
                d = self._book[r.symbol_id] = {"U": r.book_update_id, "b": {}, "a": {}}
            d["u"] = r.book_update_id
            (d["b"] if r.side == Side.BUY else d["a"])[r.price_tick] = r.level_qty_lot
        elif r.type == RecordType.FILL:
            self._trades.append(r)
            self._traded.add(r.symbol_id)
            agg = self.state.agg_trades[r.symbol_id][-1]
            self._aggs.setdefault(r.symbol_id, {})[agg.agg_id] = agg

    def publish(self, stream: str, data: dict) -> None:
        subs = self.subscribers.get(stream)
        if not subs:
            return
        raw = combined = None
        for conn in subs:
            if conn.combined:
                if combined is None:
                    combined = text_frame(orjson.dumps({"stream": stream, "data": data}))
                conn.send_frame(combined)
            else:
                if raw is None:
                    raw = text_frame(orjson.dumps(data))
                conn.send_frame(raw)

    def flush(self) -> None:
        if not self._market_streams:
            self._reset()
            return
        for r in self._trades:
            u = self.units[r.symbol_id]
            self.publish(f"{u.name.lower()}@trade", {
                "e": "trade", "E": r.ts_ns // 1_000_000, "s": u.name, "t": r.trade_id, "p": u.price(r.price_tick),
                "q": u.qty(r.qty_lot), "T": r.ts_ns // 1_000_000, "m": r.taker_side == Side.SELL, "M": True})
        for sid, aggs in self._aggs.items():
            u = self.units[sid]
            for a in aggs.values():
                self.publish(f"{u.name.lower()}@aggTrade", {
                    "e": "aggTrade", "E": a.ts_ns // 1_000_000, "s": u.name, "a": a.agg_id, "p": u.price(a.price_tick),
                    "q": u.qty(a.qty_lot), "f": a.first_trade_id, "l": a.last_trade_id, "T": a.ts_ns // 1_000_000,
                    "m": a.buyer_is_maker, "M": True})
        now_ms = self.app[CLOCK_MS]()
        self.close_klines(now_ms)
        for sid, d in self._book.items():
            self._book_events(sid, d, now_ms)
        for sid in self._traded:
            self._trade_stats_events(sid, now_ms)
        self._reset()

    def _reset(self) -> None:
        self._trades, self._book, self._traded, self._aggs = [], {}, set(), {}

    def _book_events(self, sid: int, d: dict, now_ms: int) -> None:
        u = self.units[sid]
        name = u.name.lower()
        diff = {"e": "depthUpdate", "E": now_ms, "s": u.name, "U": d["U"], "u": d["u"],
                "b": [[u.price(p), u.qty(q)] for p, q in d["b"].items()],
                "a": [[u.price(p), u.qty(q)] for p, q in d["a"].items()]}
        for suffix in ("", "@100ms", "@1000ms"):
            self.publish(f"{name}@depth{suffix}", diff)
        book = self.state.books[sid]
        for levels in (5, 10, 20):
            streams = [f"{name}@depth{levels}{s}" for s in ("", "@100ms", "@1000ms")]
            if any(s in self.subscribers for s in streams):
                part = {"lastUpdateId": book.last_update_id,
                        "bids": [[u.price(p), u.qty(q)] for p, q in book.top(Side.BUY, levels)],
                        "asks": [[u.price(p), u.qty(q)] for p, q in book.top(Side.SELL, levels)]}
                for s in streams:
                    self.publish(s, part)
        if f"{name}@bookTicker" in self.subscribers:
            bid, ask = book.best(Side.BUY), book.best(Side.SELL)
            self.publish(f"{name}@bookTicker", {"u": book.last_update_id, "s": u.name, "b": u.price(bid[0]),
                                                "B": u.qty(bid[1]), "a": u.price(ask[0]),
                                                "A": u.qty(ask[1])})

    def _kline_event(self, stream: str, sid: int, interval: str, open_ms: int, now_ms: int, closed: bool) -> None:
        """The candle of `interval` opening at open_ms as it stands; one longer than the edge's
        memory also reads the history store."""
        candles = candles_of(self.app, sid, interval, open_ms, None, 1)
        if not candles:
            return
        c, u = candles[0], self.units[sid]
        self.publish(stream, {"e": "kline", "E": now_ms, "s": u.name, "k": {
            "t": c.open_ms, "T": next_bucket(interval, c.open_ms) - 1, "s": u.name, "i": interval,
            "f": -1, "L": -1, "o": u.price(c.open_tick), "c": u.price(c.close_tick), "h": u.price(c.high_tick),
            "l": u.price(c.low_tick), "v": u.qty(c.volume_lot), "n": c.trades, "x": closed,
            "q": u.quote_amount(c.quote_minor), "V": u.qty(c.taker_buy_lot),
            "Q": u.quote_amount(c.taker_buy_quote_minor), "B": "0"}})

    def close_klines(self, now_ms: int) -> None:
        """The final event ("x": true) of every announced candle whose interval has ended by
        now_ms (the clock is an input: a timer calls this, and every applied batch)."""
        for stream, (sid, interval, open_ms) in list(self._open_klines.items()):
            if now_ms >= next_bucket(interval, open_ms):
                del self._open_klines[stream]
                self._kline_event(stream, sid, interval, open_ms, now_ms, closed=True)

    def _trade_stats_events(self, sid: int, now_ms: int) -> None:
        u = self.units[sid]
        name = u.name.lower()
        stats = self.state.stats[sid]
        for stream in [s for s in self.subscribers if s.startswith(f"{name}@kline_")]:
            interval = stream.split("_", 1)[1]
            open_ms = bucket_start(interval, stats.minutes[-1].open_ms)
            announced = self._open_klines.get(stream)
            if announced is not None and announced[2] < open_ms:  # trades came before the timer
                self._kline_event(stream, sid, interval, announced[2], now_ms, closed=True)
            self._kline_event(stream, sid, interval, open_ms, now_ms, closed=False)
            self._open_klines[stream] = (sid, interval, open_ms)
        if f"{name}@ticker" in self.subscribers or f"{name}@miniTicker" in self.subscribers:
            t = ticker_row(self.state, u, now_ms * 1_000_000)
            self.publish(f"{name}@miniTicker", {
                "e": "24hrMiniTicker", "E": now_ms, "s": u.name, "c": t["lastPrice"], "o": t["openPrice"],
                "h": t["highPrice"], "l": t["lowPrice"], "v": t["volume"], "q": t["quoteVolume"]})
            self.publish(f"{name}@ticker", {
                "e": "24hrTicker", "E": now_ms, "s": u.name, "p": t["priceChange"], "P": t["priceChangePercent"],
                "w": t["weightedAvgPrice"], "x": t["prevClosePrice"], "c": t["lastPrice"], "Q": t["lastQty"],
                "b": t["bidPrice"], "B": t["bidQty"], "a": t["askPrice"], "A": t["askQty"], "o": t["openPrice"],
                "h": t["highPrice"], "l": t["lowPrice"], "v": t["volume"], "q": t["quoteVolume"],
                "O": t["openTime"], "C": t["closeTime"], "F": t["firstId"], "L": t["lastId"], "n": t["count"]})


# --- the WebSocket endpoint ----------------------------------------------------------------------
def _error(code: int, msg: str, req_id=None) -> bytes:
    return orjson.dumps({"error": {"code": code, "msg": msg}, "id": req_id})


def _valid_id(req_id) -> bool:
    if req_id is None:
        return True
    if isinstance(req_id, bool):
        return False
    if isinstance(req_id, int):
        return -(1 << 63) <= req_id < (1 << 63)
    return isinstance(req_id, str) and len(req_id) <= 36 and req_id.isalnum()


def _control(hub: StreamHub, conn: Connection, text: str) -> bytes:
    """One SUBSCRIBE / UNSUBSCRIBE / LIST_SUBSCRIPTIONS / SET_PROPERTY / GET_PROPERTY message."""
    try:
        msg = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        return _error(3, f"Invalid JSON: {exc}")
    if not isinstance(msg, dict):
        return _error(2, "Invalid request: expected an object")
    req_id = msg.get("id")
    if not _valid_id(req_id):
        return _error(2, "Invalid request: request ID must be an unsigned integer")
    method = msg.get("method")
    if method is None:
        return _error(2, "Invalid request: missing field `method`", req_id)
    if method not in METHODS:
        return _error(2, f"Invalid request: unknown variant {method}, expected one of `SUBSCRIBE`, `UNSUBSCRIBE`, "
                         f"`LIST_SUBSCRIPTIONS`, `SET_PROPERTY`, `GET_PROPERTY`", req_id)
    params = msg.get("params", [])
    if method in ("SUBSCRIBE", "UNSUBSCRIBE"):
        if not isinstance(params, list) or not all(isinstance(p, str) for p in params):
            return _error(2, "Invalid request: params must be a list of stream names", req_id)
        bad = [p for p in params if not hub.valid(p)]
        if bad:
            return _error(2, f"Invalid request: invalid stream name {bad[0]}", req_id)
        if method == "SUBSCRIBE":
            if len(conn.streams | set(params)) > MAX_STREAMS:
                return _error(2, f"Invalid request: at most {MAX_STREAMS} streams per connection", req_id)
            hub.subscribe(conn, params)
        else:
            hub.unsubscribe(conn, params)
        return orjson.dumps({"result": None, "id": req_id})
    if method == "LIST_SUBSCRIPTIONS":
        return orjson.dumps({"result": sorted(conn.streams), "id": req_id})
    if not isinstance(params, list) or not params or params[0] != "combined":
        return _error(0, "Unknown property", req_id)
    if method == "GET_PROPERTY":
        return orjson.dumps({"result": conn.combined, "id": req_id})
    if len(params) != 2 or not isinstance(params[1], bool):
        return _error(1, "Invalid value type: expected Boolean", req_id)
    conn.combined = params[1]
    return orjson.dumps({"result": None, "id": req_id})


async def _serve(request: web.Request, names: list[str], combined: bool) -> web.WebSocketResponse:
    hub: StreamHub = request.app[STREAMS_KEY]
    listen = request.app[LISTEN_KEYS]
    user_streams = [n for n in names if looks_like_listen_key(n)]
    for listen_key in user_streams:
        # The docs do not say how an unknown or expired key is answered: the upgrade is refused
        # with Binance's error (400, -1125) rather than a connection that would stay silent.
        listen.account_of(listen_key)
    limits = request.app[CONFIG].limits
    ws = websocket(limits.max_ws_frame_bytes)
    conn = Connection(ws, combined, request.transport)
    clock_ms = request.app[CLOCK_MS]
    second, sent = -1, 0  # messages the client sent in the current second (web-socket-streams.md
    try:                  # "WebSocket Limits": 5 a second; beyond, the connection is dropped)
        # Subscribed before the handshake completes: what happens once the client is connected
        # reaches it (the frames wait in the connection until the handshake is out).
        market = [n for n in names if hub.valid(n)][:MAX_STREAMS]
        hub.subscribe(conn, market)
        listen.attach(conn, user_streams[:MAX_STREAMS - len(conn.streams)])
        await ws.prepare(request)
        conn.open()
        metrics = request.app[METRICS]
        open_gauge, received = metrics.ws_connections.labels("streams"), metrics.ws_messages.labels("streams")
        open_gauge.inc()
        async for msg in ws:
            received.inc()
            now_s = clock_ms() // 1000
            second, sent = (second, sent + 1) if now_s == second else (now_s, 1)
            if sent > limits.ws_messages_per_s:
                await ws.close(code=WSCloseCode.POLICY_VIOLATION,
                               message=f"Too many messages; current limit is '{limits.ws_messages_per_s}' messages "
                                       f"per 'SECOND'".encode())
                break
            if msg.type == WSMsgType.TEXT:
                conn.send(_control(hub, conn, msg.data))
            elif msg.type in (WSMsgType.BINARY,):
                conn.send(_error(3, "Invalid JSON: binary frames are not supported"))
    finally:
        if ws.prepared:
            request.app[METRICS].ws_connections.labels("streams").dec()
        listen.detach(conn)
        hub.unsubscribe(conn, list(conn.streams))
    return ws


async def raw_streams(request: web.Request) -> web.WebSocketResponse:
    """`/ws/<stream>/<stream>...`: raw payloads (a path that names no stream connects with none,
    as the clients that put an index there expect). A stream may be a listen key (listenkeys.py):
    that account's user data events."""
    return await _serve(request, request.match_info.get("streams", "").split("/"), combined=False)


async def combined_streams(request: web.Request) -> web.WebSocketResponse:
    names = request.query.get("streams", "")
    return await _serve(request, [n for n in names.split("/") if n], combined=True)


def add_routes(app: web.Application) -> None:
    app[STREAMS_KEY] = StreamHub(app)
    # a candle's final event goes out when its interval ends, trades or not
    app.cleanup_ctx.append(periodic(KLINE_CLOSE_CHECK_S, lambda a: a[STREAMS_KEY].close_klines(a[CLOCK_MS]())))
    app.router.add_get("/ws", raw_streams)
    app.router.add_get("/ws/{streams:.*}", raw_streams)
    app.router.add_get("/stream", combined_streams)
