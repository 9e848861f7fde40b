"""Binance Spot market data endpoints served from the edge's projection (rest-api.md "Market
Data endpoints"): depth, trades, aggTrades, klines, avgPrice, ticker/24hr, ticker/price,
ticker/bookTicker. Public: no key. Trades and aggTrades hold the most recent 1000 per symbol;
klines every minute since the journal began; ticker/24hr the last 24 hours.

`limit` above the maximum is cut to it, as Binance documents for depth ("If limit > 5000, only
5000 entries will be returned"); below 1 or not a number is refused."""

from __future__ import annotations

from decimal import Context, Decimal

import orjson
from aiohttp import web

from ganntec.edge import errors as E
from ganntec.edge import stats as S
from ganntec.edge.appkeys import CLOCK_MS, HISTORY, STATE, SYMBOLS, SYMBOLS_BY_ID
from ganntec.edge.exchange_info import SYMBOL_RANGE, SYMBOLS_RANGE
from ganntec.edge.stats import INTERVALS, next_bucket
from ganntec.edge.trading import long_param, symbol_of
from ganntec.shm.records import Side

MAX_DEPTH = 5000
MAX_TRADES = 1000
AVG_PRICE_MINS = 5
_CTX = Context(prec=60)


def _symbols(app: web.Application, query) -> list:
    """`symbol` (one), `symbols` (a JSON list) or neither (all), for the ticker endpoints."""
    one, many = query.get("symbol"), query.get("symbols")
    if one is not None and many is not None:
        raise E.bad_combo()
    if many is not None:
        try:
            names = orjson.loads(many)
        except orjson.JSONDecodeError:
            raise E.illegal_chars("symbols", SYMBOLS_RANGE) from None
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise E.illegal_chars("symbols", SYMBOLS_RANGE)
        out = []
        for n in names:
            u = app[SYMBOLS].get(n)
            if u is None:
                raise E.bad_symbol()
            out.append(u)
        return out
    if one is not None:
        if one == "":
            raise E.illegal_chars("symbol", SYMBOL_RANGE)
        return [symbol_of(app, query)]
    return list(app[SYMBOLS_BY_ID])


def _limit(query, default: int, maximum: int) -> int:
    raw = query.get("limit")
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 20 or int(raw) < 1:
        raise E.invalid_param("limit")
    return min(int(raw), maximum)


def depth(app: web.Application, query):
    u = symbol_of(app, query)
    limit = _limit(query, 100, MAX_DEPTH)
    book = app[STATE].books[u.symbol_id]
    return ({
        "lastUpdateId": book.last_update_id,
        "bids": [[u.price(p), u.qty(q)] for p, q in book.top(Side.BUY, limit)],
        "asks": [[u.price(p), u.qty(q)] for p, q in book.top(Side.SELL, limit)],
    })


def trades(app: web.Application, query):
    u = symbol_of(app, query)
    limit = _limit(query, 500, MAX_TRADES)
    recent = list(app[STATE].trades[u.symbol_id])[-limit:]
    return ([{"id": t.trade_id, "price": u.price(t.price_tick), "qty": u.qty(t.qty_lot),
                             "quoteQty": u.quote_amount(t.quote_minor), "time": t.ts_ns // 1_000_000,
                             "isBuyerMaker": t.buyer_is_maker, "isBestMatch": True} for t in recent])


def agg_trades(app: web.Application, query):
    """rest-api.md "Compressed/Aggregate trades list": the edge keeps the recent ones."""
    u = symbol_of(app, query)
    limit = _limit(query, 500, MAX_TRADES)
    q = query
    from_id = long_param(q, "fromId")
    start, end = long_param(q, "startTime"), long_param(q, "endTime")
    if start is not None and end is not None and end < start:
        raise E.bad_combo()
    rows = [a for a in app[STATE].agg_trades[u.symbol_id]
            if (from_id is None or a.agg_id >= from_id)
            and (start is None or a.ts_ns >= start * 1_000_000) and (end is None or a.ts_ns <= end * 1_000_000 + 999_999)]
    rows = rows[:limit] if from_id is not None or start is not None else rows[-limit:]
    return ([{"a": a.agg_id, "p": u.price(a.price_tick), "q": u.qty(a.qty_lot), "f": a.first_trade_id,
                             "l": a.last_trade_id, "T": a.ts_ns // 1_000_000, "m": a.buyer_is_maker, "M": True}
                            for a in rows])


def _ratio(num: Decimal, den: Decimal, places: int) -> str:
    if den == 0:
        return format(Decimal(0).quantize(Decimal(1).scaleb(-places)), "f")
    return format((num / den).quantize(Decimal(1).scaleb(-places), context=_CTX), "f")


def _price_dec(u, tick: int) -> Decimal:
    return Decimal(tick) * Decimal(u.symbol.tick_size)


def ticker_row(state, u, now_ns: int, kind: str = "FULL") -> dict:
    """One symbol's rolling 24-hour statistics as rest-api.md "24hr ticker" prints them (the
    streams' ticker events are made from the same row), from the edge's 24-hour window."""
    return ticker_json(u, state.stats[u.symbol_id].ticker_24h(now_ns), state.books[u.symbol_id], now_ns, kind)


def ticker_json(u, t: S.Ticker24h, book, now_ns: int, kind: str = "FULL") -> dict:
    """`t` (from memory or the history store) and the book's best levels as the 24hr ticker."""
    bid, ask = book.best(Side.BUY), book.best(Side.SELL)
    if t.count:
        times = (t.first_ts_ns // 1_000_000, t.last_ts_ns // 1_000_000)
    else:
        times = (now_ns // 1_000_000 - 86_400_000, now_ns // 1_000_000)
    row = {"symbol": u.name, "openPrice": u.price(t.open_tick), "highPrice": u.price(t.high_tick),
           "lowPrice": u.price(t.low_tick), "lastPrice": u.price(t.last_tick), "volume": u.qty(t.volume_lot),
           "quoteVolume": u.quote_amount(t.quote_minor), "openTime": times[0], "closeTime": times[1],
           "firstId": t.first_trade_id, "lastId": t.last_trade_id, "count": t.count}
    if kind != "FULL":
        return row
    open_t, last_t = t.open_tick, t.last_tick
    volume_dec = Decimal(t.volume_lot) * Decimal(u.symbol.step_size)
    quote_dec = Decimal(t.quote_minor).scaleb(-u.symbol.quote.precision)
    change = _price_dec(u, last_t) - _price_dec(u, open_t)
    return {"symbol": u.name,
            "priceChange": u.price(last_t - open_t) if last_t >= open_t else "-" + u.price(open_t - last_t),
            "priceChangePercent": _ratio(change * 100, _price_dec(u, open_t), 3),
            "weightedAvgPrice": _ratio(quote_dec, volume_dec, 8),
            "prevClosePrice": u.price(t.prev_close_tick),
            "lastPrice": row["lastPrice"], "lastQty": u.qty(t.last_qty_lot),
            "bidPrice": u.price(bid[0]), "bidQty": u.qty(bid[1]),
            "askPrice": u.price(ask[0]), "askQty": u.qty(ask[1]),
            **{k: row[k] for k in ("openPrice", "highPrice", "lowPrice", "volume", "quoteVolume", "openTime",
                                   "closeTime", "firstId", "lastId", "count")}}


def ticker_of(app: web.Application, u, now_ns: int) -> S.Ticker24h:
    """The 24 hours the history store has, joined with the trades the edge has applied and the
    store not yet (it follows the journal a poll behind); without a store, the edge's window.
    The streams' ticker events use the edge's window alone (per batch, no SQLite)."""
    memory = app[STATE].stats[u.symbol_id]
    store = app[HISTORY]()
    if store is None:
        return memory.ticker_24h(now_ns)
    stored, last_id = store.ticker_24h_as_of(u.symbol_id, now_ns)
    return S.join_tickers(stored, [t for t in memory.last_24h(now_ns) if t[4] > last_id])


def ticker_24hr(app: web.Application, query):
    """rest-api.md "24hr ticker price change statistics" (type FULL, or MINI), from the history
    store and the edge's newer trades (ticker_of)."""
    kind = query.get("type", "FULL")
    if kind not in ("FULL", "MINI"):
        raise E.BinanceError(400, -1139, "Invalid ticker type.")
    state, now_ns = app[STATE], app[CLOCK_MS]() * 1_000_000
    return _one_or_list(query, [ticker_json(u, ticker_of(app, u, now_ns), state.books[u.symbol_id], now_ns, kind)
                                for u in _symbols(app, query)])


def avg_price(app: web.Application, query):
    """rest-api.md "Current average price": volume-weighted over the last 5 minutes."""
    u = symbol_of(app, query)
    state, now_ns = app[STATE], app[CLOCK_MS]() * 1_000_000
    recent = [t for t in state.stats[u.symbol_id].last_24h(now_ns) if t[0] > now_ns - AVG_PRICE_MINS * 60 * 10**9]
    vol = Decimal(sum(t[2] for t in recent)) * Decimal(u.symbol.step_size)
    quote = Decimal(sum(t[3] for t in recent)).scaleb(-u.symbol.quote.precision)
    last = recent[-1][0] // 1_000_000 if recent else now_ns // 1_000_000
    return ({"mins": AVG_PRICE_MINS, "price": _ratio(quote, vol, 8), "closeTime": last})


def klines(app: web.Application, query):
    """rest-api.md "Kline/Candlestick data" (UTC; timeZone 0 only)."""
    u = symbol_of(app, query)
    interval = query.get("interval")
    if not interval:
        raise E.mandatory_param("interval")
    if interval not in INTERVALS:
        raise E.BinanceError(400, -1120, "Invalid interval.")
    tz = query.get("timeZone", "0")
    if tz not in ("0", "+0", "-0", "0:00", "+00:00", "-00:00"):
        raise E.invalid_param("timeZone")
    limit = _limit(query, 500, MAX_TRADES)
    start, end = long_param(query, "startTime"), long_param(query, "endTime")
    if start is not None and end is not None and end < start:
        raise E.bad_combo()
    out = []
    for c in candles(app, u.symbol_id, interval, start, end, limit):
        close_ms = next_bucket(interval, c.open_ms) - 1
        out.append([c.open_ms, u.price(c.open_tick), u.price(c.high_tick), u.price(c.low_tick), u.price(c.close_tick),
                    u.qty(c.volume_lot), close_ms, u.quote_amount(c.quote_minor), c.trades, u.qty(c.taker_buy_lot),
                    u.quote_amount(c.taker_buy_quote_minor), "0"])
    return (out)


def candles(app: web.Application, symbol_id: int, interval: str, start_ms: int | None, end_ms: int | None,
            limit: int) -> list[S.Candle]:
    """stats.klines from the edge's one-minute candles, and from the history store's for the
    minutes the edge no longer keeps (the store is only read for a range reaching before them).
    Without a store, what the edge keeps: the query is answered, if shorter."""
    memory = app[STATE].stats[symbol_id]
    rows = memory
    if memory.kept_from_ms is not None:
        store = app[HISTORY]()
        if store is not None:
            rows = S.Spliced(store.minute_rows(symbol_id), memory)
    return S.klines(rows, interval, start_ms, end_ms, limit)


def historical_trades(app: web.Application, query):
    """rest-api.md "Old trade lookup": trades by id from the history store (the whole journal's,
    not only the recent ones the edge keeps)."""
    u = symbol_of(app, query)
    limit = _limit(query, 500, MAX_TRADES)
    from_id = long_param(query, "fromId")
    store = app[HISTORY]()
    if store is None:
        raise E.BinanceError(503, -1016, "This service is no longer available.")
    rows = store.trades(u.symbol_id, from_id, limit)
    return [{"id": t.trade_id, "price": u.price(t.price_tick), "qty": u.qty(t.qty_lot),
             "quoteQty": u.quote_amount(t.quote_minor), "time": t.ts_ns // 1_000_000,
             "isBuyerMaker": t.buyer_is_maker, "isBestMatch": True} for t in rows]


def _one_or_list(query, rows: list):
    return rows[0] if query.get("symbol") is not None else rows


def ticker_price(app: web.Application, query):
    state = app[STATE]
    rows = []
    for u in _symbols(app, query):
        last = state.last_trade[u.symbol_id]
        rows.append({"symbol": u.name, "price": u.price(last.price_tick if last else 0)})
    return _one_or_list(query, rows)


def book_ticker(app: web.Application, query):
    state = app[STATE]
    rows = []
    for u in _symbols(app, query):
        book = state.books[u.symbol_id]
        bid, ask = book.best(Side.BUY), book.best(Side.SELL)
        rows.append({"symbol": u.name, "bidPrice": u.price(bid[0]), "bidQty": u.qty(bid[1]),
                     "askPrice": u.price(ask[0]), "askQty": u.qty(ask[1])})
    return _one_or_list(query, rows)


# Each public query: a function of (app, query mapping); REST (here) and the WebSocket API
# (wsapi.py) both call these.
QUERIES = {"depth": depth, "trades": trades, "historicalTrades": historical_trades, "aggTrades": agg_trades, "klines": klines, "avgPrice": avg_price,
           "ticker.24hr": ticker_24hr, "ticker.price": ticker_price, "ticker.book": book_ticker}
REST_ROUTES = (("/api/v3/depth", "depth"), ("/api/v3/trades", "trades"), ("/api/v3/historicalTrades", "historicalTrades"), ("/api/v3/aggTrades", "aggTrades"),
               ("/api/v3/klines", "klines"), ("/api/v3/avgPrice", "avgPrice"), ("/api/v3/ticker/24hr", "ticker.24hr"),
               ("/api/v3/ticker/price", "ticker.price"), ("/api/v3/ticker/bookTicker", "ticker.book"))


def _rest(name: str):
    fn = QUERIES[name]

    async def handler(request: web.Request) -> web.Response:
        return E.json_response(fn(request.app, request.query))
    handler.__name__ = name
    return handler


def add_routes(app: web.Application) -> None:
    for path, name in REST_ROUTES:
        app.router.add_get(path, _rest(name))
