"""Binance Spot trading and account endpoints (rest-api.md "Trading endpoints", "Account
endpoints"): parameters to command records, results to Binance's JSON.

  POST   /api/v3/order          new order (every single-order type), ACK / RESULT / FULL
  POST   /api/v3/order/test     the same checks, nothing sent
  GET    /api/v3/order          query by orderId or origClientOrderId
  DELETE /api/v3/order          cancel (cancelRestrictions, newClientOrderId)
  GET    /api/v3/openOrders     one symbol or all
  DELETE /api/v3/openOrders     cancel every open order on a symbol
  GET    /api/v3/allOrders      the orders the edge knows (open and recently ended)
  GET    /api/v3/myTrades       the account's trades on a symbol
  GET    /api/v3/account        balances (free, locked) and commission rates
  POST / PUT / DELETE /api/v3/userDataStream   listen keys (listenkeys.py)

Parameter checks that need no engine state happen here with Binance's codes; everything else
(filters, balances, duplicates, STP, ...) is the engines' refusal, mapped by
records.REASON_ERRORS."""

from __future__ import annotations

import base64
import re
import secrets
from decimal import Decimal

import numpy as np
from aiohttp import web

from ganntec.edge import auth as A
from ganntec.edge import listenkeys
from ganntec.edge.appkeys import CLOCK_MS, CONFIG, GATEWAY, HISTORY, KEYS, STATE, SYMBOLS, SYMBOLS_BY_ID
from ganntec.edge import errors as E
from ganntec.edge.limits import LIMITS, ORDER_OPERATIONS, ORDER_VERDICT
from ganntec.edge.state import BASE_ASSET, STOP_TYPES, EdgeState, Extras, Order, Waiter
from ganntec.edge.units import AssetUnits, SymbolUnits
from ganntec.shm import records as R
from ganntec.shm.records import OrderType, RecordType, RespType, Side, StpMode, TimeInForce

NEEDS_TIF = frozenset((OrderType.LIMIT, OrderType.STOP_LOSS_LIMIT, OrderType.TAKE_PROFIT_LIMIT))
NEEDS_PRICE = NEEDS_TIF | {OrderType.LIMIT_MAKER}
MARKET_LIKE = frozenset((OrderType.MARKET, OrderType.STOP_LOSS, OrderType.TAKE_PROFIT))
MAX_LIMIT = 1000


def new_client_order_id() -> str:
    """What Binance makes when the client sends none: 22 characters (128 random bits; letters,
    digits, '-' and '_', all within the client order id pattern)."""
    return base64.urlsafe_b64encode(secrets.token_bytes(16)).decode("ascii")[:22]


# --- parameters ---------------------------------------------------------------------------------
def _enum(params: dict, name: str, enum_cls, error, mandatory: bool = True, exclude=()):
    raw = params.get(name)
    if raw is None or raw == "":
        if mandatory:
            raise E.mandatory_param(name)
        return None
    try:
        value = enum_cls[raw]
    except KeyError:
        raise error() from None
    if value in exclude:
        raise error()
    return value


def symbol_of(app: web.Application, params: dict, mandatory: bool = True) -> SymbolUnits | None:

    raw = params.get("symbol")
    if not raw:
        if mandatory:
            raise E.mandatory_param("symbol")
        return None
    units = app[SYMBOLS].get(raw)
    if units is None:
        raise E.bad_symbol()
    return units


def long_param(params, name: str, default: int | None = None, lo: int = 0, hi: int = (1 << 63) - 1) -> int | None:
    raw = params.get(name)
    if raw is None or raw == "":
        return default
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 20:
        raise E.illegal_chars(name, "^[0-9]{1,20}$")
    v = int(raw)
    if v > hi:
        raise E.param_above(name, str(hi)) if hi < (1 << 63) - 1 else E.param_overflow(name)
    if v < lo:
        raise E.invalid_param(name)
    return v


def _limit(params: dict, default: int = 500, hi: int = MAX_LIMIT) -> int:
    return long_param(params, "limit", default, 1, hi)


def _client_id(params: dict, name: str) -> str | None:
    raw = params.get(name)
    if raw is None:
        return None
    if raw == "":
        raise E.empty_new_client_id() if name == "newClientOrderId" else E.empty_orig_client_id()
    try:
        R.encode_client_id(name, raw)
    except ValueError:
        raise E.illegal_chars(name, "^[a-zA-Z0-9-_.:/]{1,36}$") from None
    return raw


def new_order_command(params: dict, u: SymbolUnits, account: int) -> tuple[np.ndarray, Extras, RespType, str]:
    """POST /api/v3/order's parameters as one NEW_ORDER record (source fields unset)."""
    side = _enum(params, "side", Side, E.invalid_side)
    otype = _enum(params, "type", OrderType, E.invalid_order_type)
    tif = _enum(params, "timeInForce", TimeInForce, E.invalid_tif, mandatory=False)
    if otype in NEEDS_TIF and tif is None:
        raise E.mandatory_param("timeInForce")
    if otype not in NEEDS_TIF and tif is not None:
        raise E.param_not_required("timeInForce")
    rec = {"account_id": account, "symbol_id": u.symbol_id, "side": int(side), "order_type": int(otype),
           "time_in_force": int(tif or TimeInForce.GTC)}  # packed once at the end (R.pack)
    qty, quote = params.get("quantity"), params.get("quoteOrderQty")
    if otype == OrderType.MARKET:
        if qty and quote:
            raise E.param_not_required("quoteOrderQty")
        if not qty and not quote:
            raise E.either_param("quantity", "quoteOrderQty")
        if quote:
            rec["quote_qty_minor"] = u.quote_minor("quoteOrderQty", quote)
    else:
        if quote:
            raise E.param_not_required("quoteOrderQty")
        if not qty:
            raise E.mandatory_param("quantity")
    if qty:
        rec["qty_lot"] = u.qty_lot("quantity", qty, market=otype in MARKET_LIKE)
    price = params.get("price")
    if otype in NEEDS_PRICE:
        if not price:
            raise E.mandatory_param("price")
        rec["price_tick"] = u.price_tick("price", price)
    elif price:
        raise E.param_not_required("price")
    stop, trailing = params.get("stopPrice"), params.get("trailingDelta")
    if otype in STOP_TYPES:
        if not stop and not trailing:
            raise E.either_param("stopPrice", "trailingDelta")
        if stop:
            rec["stop_price_tick"] = u.price_tick("stopPrice", stop)
        if trailing:
            rec["trailing_delta_bips"] = long_param(params, "trailingDelta", hi=(1 << 31) - 1)
    elif stop:
        raise E.param_not_required("stopPrice")
    elif trailing:
        raise E.param_not_required("trailingDelta")
    iceberg = params.get("icebergQty")
    if iceberg:
        rec["iceberg_qty_lot"] = u.qty_lot("icebergQty", iceberg)
    stp = _enum(params, "selfTradePreventionMode", StpMode, lambda: E.invalid_param("selfTradePreventionMode"),
                mandatory=False, exclude=(StpMode.DEFAULT,))
    rec["stp_mode"] = int(stp or StpMode.DEFAULT)
    resp = _enum(params, "newOrderRespType", RespType, lambda: E.invalid_param("newOrderRespType"),
                 mandatory=False, exclude=(RespType.DEFAULT,))
    if resp is None:
        resp = RespType.FULL if otype in (OrderType.LIMIT, OrderType.MARKET) else RespType.ACK
    rec["resp_type"] = int(resp)
    cid = _client_id(params, "newClientOrderId") or new_client_order_id()
    rec["client_order_id"] = cid.encode("ascii")
    extras = Extras(rec.get("quote_qty_minor", 0), rec.get("iceberg_qty_lot", 0), rec.get("trailing_delta_bips", 0),
                    rec["stp_mode"])
    return R.pack(RecordType.NEW_ORDER, **rec), extras, resp, cid


# --- JSON ---------------------------------------------------------------------------------------
def _ms(ts_ns: int) -> int:
    return ts_ns // 1_000_000


def _stp_name(o: Order, u: SymbolUnits) -> str:
    mode = o.stp_mode or int(u.symbol.default_stp)
    return StpMode(mode).name


def order_fields(o: Order, u: SymbolUnits) -> dict:
    """The fields every order response shares (rest-api.md "Query order")."""
    d = {
        "symbol": u.name, "orderId": o.order_id, "orderListId": o.list_id, "clientOrderId": o.client_order_id,
        "price": u.price(o.price_tick), "origQty": u.qty(o.qty_lot), "executedQty": u.qty(o.executed_lot),
        "cummulativeQuoteQty": u.quote_amount(o.cum_quote_minor), "status": R.OrderStatus(o.status).name,
        "timeInForce": TimeInForce(o.time_in_force).name, "type": OrderType(o.order_type).name,
        "side": Side(o.side).name,
    }
    if o.order_type in STOP_TYPES:
        d["stopPrice"] = u.price(o.stop_price_tick)
    if o.trailing_delta_bips:
        d["trailingDelta"] = o.trailing_delta_bips
    if o.iceberg_lot:
        d["icebergQty"] = u.qty(o.iceberg_lot)
    return d


def order_json(o: Order, u: SymbolUnits) -> dict:
    d = order_fields(o, u)
    d.update({"time": _ms(o.time_ns), "updateTime": _ms(o.update_ns), "isWorking": o.working_ns >= 0,
              "workingTime": _ms(o.working_ns) if o.working_ns >= 0 else -1,
              "origQuoteOrderQty": u.quote_amount(o.quote_qty_minor), "selfTradePreventionMode": _stp_name(o, u)})
    return d


def _commission_asset(u: SymbolUnits, which: int) -> str:
    return u.base.name if which == BASE_ASSET else u.quote.name


def _commission(u: SymbolUnits, which: int, minor: int) -> str:
    return (u.base if which == BASE_ASSET else u.quote).fmt(minor)


def new_order_response(o: Order, u: SymbolUnits, resp: RespType, records: list, transact_ns: int) -> dict:
    d = {"symbol": u.name, "orderId": o.order_id, "orderListId": o.list_id, "clientOrderId": o.client_order_id,
         "transactTime": _ms(transact_ns)}
    if resp == RespType.ACK:
        return d
    f = order_fields(o, u)
    d.update({k: f[k] for k in ("price", "origQty", "executedQty")})
    d["origQuoteOrderQty"] = u.quote_amount(o.quote_qty_minor)
    d.update({k: f[k] for k in f if k in ("cummulativeQuoteQty", "status", "timeInForce", "type", "side",
                                           "stopPrice", "trailingDelta", "icebergQty")})
    d["workingTime"] = _ms(o.working_ns) if o.working_ns >= 0 else -1
    d["selfTradePreventionMode"] = _stp_name(o, u)
    if resp == RespType.FULL:
        fills = []
        for r in records:
            if r.type == RecordType.FILL and r.taker_order_id == o.order_id:
                which = BASE_ASSET if r.taker_side == Side.BUY else -2
                fills.append({"price": u.price(r.price_tick), "qty": u.qty(r.qty_lot),
                              "commission": _commission(u, which, r.taker_fee_minor),
                              "commissionAsset": _commission_asset(u, which), "tradeId": r.trade_id})
        d["fills"] = fills
    return d


def cancel_json(o: Order, u: SymbolUnits, cancel_cid: str, transact_ns: int) -> dict:
    f = order_fields(o, u)
    d = {"symbol": u.name, "origClientOrderId": o.client_order_id, "orderId": o.order_id, "orderListId": o.list_id,
         "clientOrderId": cancel_cid, "transactTime": _ms(transact_ns)}
    for k in ("price", "origQty", "executedQty"):
        d[k] = f[k]
    d["origQuoteOrderQty"] = u.quote_amount(o.quote_qty_minor)
    for k in ("cummulativeQuoteQty", "status", "timeInForce", "type", "side", "stopPrice", "trailingDelta",
              "icebergQty"):
        if k in f:
            d[k] = f[k]
    d["selfTradePreventionMode"] = _stp_name(o, u)
    return d


def refusal(r) -> E.BinanceError:
    code, msg = R.REASON_ERRORS.get(R.Reason(r.reason), (-1000, "An unknown error occurred while processing the request."))
    return E.engine_refusal(code, msg)


# --- handlers -----------------------------------------------------------------------------------
async def _auth(request: web.Request, need: str) -> tuple[A.ApiKey, dict]:

    body = ""
    if request.can_read_body:
        try:  # Binance's parameters are ASCII; a body in another encoding or charset is refused, not a 500
            body = (await request.read()).decode("utf-8")
        except UnicodeDecodeError:
            raise E.BinanceError(400, -1100, "Illegal characters found in a parameter.") from None
    return A.authenticate(request.method, request.rel_url.raw_query_string, body, request.headers,
                          request.app[KEYS], request.app[CLOCK_MS](), need, request.remote)


def _state(app: web.Application) -> EdgeState:
    return app[STATE]


def _gateway(app: web.Application):
    gw = app[GATEWAY]
    if gw is None:
        raise E.BinanceError(503, -1016, "This service is no longer available.")
    return gw


async def new_order(app: web.Application, key: A.ApiKey, params: dict):
    u = symbol_of(app, params)
    rec, extras, resp, cid = new_order_command(params, u, key.account_id)
    state = _state(app)

    records = await _gateway(app).submit(rec, lambda w: state.expect_new(key.account_id, cid, w), extras)
    head = records[0]
    if head.type != RecordType.ORDER_ACCEPTED:
        raise refusal(head)
    o = state.orders[head.order_id]
    return (new_order_response(o, u, resp, records, head.ts_ns))


async def test_order(app: web.Application, key: A.ApiKey, params: dict):
    u = symbol_of(app, params)
    new_order_command(params, u, key.account_id)
    return ({})


def _find_order(app: web.Application, params: dict, account: int, u: SymbolUnits, missing) -> Order:
    oid = long_param(params, "orderId")
    cid = _client_id(params, "origClientOrderId")
    if oid is None and cid is None:
        raise E.either_param("orderId", "origClientOrderId")
    state = _state(app)
    o = state.orders.get(oid) if oid is not None else state.order_by_client_id(account, cid)
    if o is None or o.account_id != account or o.symbol_id != u.symbol_id:
        raise missing()
    if oid is not None and cid is not None and o.client_order_id != cid:
        raise missing()
    return o


async def query_order(app: web.Application, key: A.ApiKey, params: dict):
    u = symbol_of(app, params)
    return (order_json(_find_order(app, params, key.account_id, u, E.no_such_order), u))


def _cancel_restrictions(params: dict) -> int:
    raw = params.get("cancelRestrictions")
    if raw is None:
        return int(R.CancelRestriction.NONE)
    if raw not in ("ONLY_NEW", "ONLY_PARTIALLY_FILLED"):
        raise E.invalid_cancel_restrictions()
    return int(R.CancelRestriction[raw])


async def cancel_order(app: web.Application, key: A.ApiKey, params: dict):
    u = symbol_of(app, params)
    o = _find_order(app, params, key.account_id, u, E.unknown_order_cancel)
    restrictions = _cancel_restrictions(params)
    cancel_cid = _client_id(params, "newClientOrderId") or new_client_order_id()
    if not o.is_open:
        raise E.unknown_order_cancel()
    rec = R.empty(RecordType.CANCEL)
    rec["account_id"], rec["symbol_id"], rec["order_id"] = key.account_id, u.symbol_id, o.order_id
    rec["new_client_order_id"] = cancel_cid.encode("ascii")
    rec["cancel_restrictions"] = restrictions
    state = _state(app)
    records = await _gateway(app).submit(rec, lambda w: state.expect_cancel(key.account_id, cancel_cid, w))
    head = records[0]
    if head.type != RecordType.ORDER_CANCELED:
        raise refusal(head)
    return (cancel_json(o, u, cancel_cid, head.ts_ns))


async def cancel_open_orders(app: web.Application, key: A.ApiKey, params: dict):
    u = symbol_of(app, params)
    rec = R.empty(RecordType.CANCEL_ALL)
    rec["account_id"], rec["symbol_id"] = key.account_id, u.symbol_id
    state = _state(app)
    records = await _gateway(app).submit(rec, lambda w: state.expect_cancel_all(key.account_id, u.symbol_id, w))
    if records[0].type != RecordType.ORDER_CANCELED:
        raise refusal(records[0])
    out = []
    for r in records:
        if r.type == RecordType.ORDER_CANCELED and r.account_id == key.account_id and r.symbol_id == u.symbol_id:
            o = state.orders.get(r.order_id)
            if o is not None:
                out.append(cancel_json(o, u, new_client_order_id(), r.ts_ns))
    return (out)


async def open_orders(app: web.Application, key: A.ApiKey, params: dict):
    u = symbol_of(app, params, mandatory=False)
    by_id = app[SYMBOLS_BY_ID]
    orders = _state(app).open_orders(key.account_id, u.symbol_id if u else None)
    return ([order_json(o, by_id[o.symbol_id]) for o in orders])


def _time_range(params: dict) -> tuple[int, int]:
    start, end = long_param(params, "startTime"), long_param(params, "endTime")
    if start is not None and end is not None and end < start:
        raise E.bad_combo()
    return ((start or 0) * 1_000_000, (end + 1) * 1_000_000 if end is not None else 1 << 62)


async def all_orders(app: web.Application, key: A.ApiKey, params: dict):
    """The account's orders on the symbol: the history store's (every order since the journal
    began) joined with the edge's own (fresher: the store follows the journal by polls)."""
    u = symbol_of(app, params)
    from_id, limit = long_param(params, "orderId"), _limit(params)
    t0, t1 = _time_range(params)
    known = {o.order_id: o for o in _state(app).orders.values()
             if o.account_id == key.account_id and o.symbol_id == u.symbol_id
             and (from_id is None or o.order_id >= from_id) and t0 <= o.time_ns < t1}
    store = app[HISTORY]()
    if store is not None:
        for o in store.orders(key.account_id, u.symbol_id, from_id, t0, t1, limit):
            known.setdefault(o.order_id, o)
    orders = [known[i] for i in sorted(known)]
    orders = orders[:limit] if from_id is not None else orders[-limit:]
    return [order_json(o, u) for o in orders]


async def my_trades(app: web.Application, key: A.ApiKey, params: dict):
    """The account's trades on the symbol, from the history store and the edge, as allOrders."""
    u = symbol_of(app, params)
    order_id, from_id, limit = long_param(params, "orderId"), long_param(params, "fromId"), _limit(params)
    t0, t1 = _time_range(params)
    own = _state(app).own_trades.get((key.account_id, u.symbol_id), ())
    known = {(t.trade.trade_id, t.is_maker): t for t in own if (order_id is None or t.order_id == order_id)
             and (from_id is None or t.trade.trade_id >= from_id) and t0 <= t.trade.ts_ns < t1}
    store = app[HISTORY]()
    if store is not None:
        for t in store.account_trades(key.account_id, u.symbol_id, order_id, from_id, t0, t1, limit):
            known.setdefault((t.trade.trade_id, t.is_maker), t)
    rows = [known[k] for k in sorted(known, key=lambda k: (k[0], k[1]))]  # a self-trade: taker first
    rows = rows[:limit] if from_id is not None else rows[-limit:]
    return [{
        "symbol": u.name, "id": t.trade.trade_id, "orderId": t.order_id, "orderListId": -1,
        "price": u.price(t.trade.price_tick), "qty": u.qty(t.trade.qty_lot), "quoteQty": u.quote_amount(t.trade.quote_minor),
        "commission": _commission(u, t.commission_asset_id, t.commission_minor),
        "commissionAsset": _commission_asset(u, t.commission_asset_id), "time": _ms(t.trade.ts_ns),
        "isBuyer": t.is_buyer, "isMaker": t.is_maker, "isBestMatch": True} for t in rows]


def _rate(fee: str) -> str:
    return format(Decimal(fee).quantize(Decimal("1E-8")), "f")


async def account(app: web.Application, key: A.ApiKey, params: dict):
    omit = params.get("omitZeroBalances", "false")
    if omit not in ("true", "false"):
        raise E.invalid_param("omitZeroBalances")
    cfg = app[CONFIG]
    state = _state(app)
    held = state.account_balances(key.account_id)
    balances = []
    for asset in cfg.assets:
        free, locked = held.get(asset.asset_id, (0, 0))
        if omit == "true" and free == 0 and locked == 0:
            continue
        units = AssetUnits(asset)
        balances.append({"asset": asset.name, "free": units.fmt(free), "locked": units.fmt(locked)})
    sym = cfg.symbols[0] if cfg.symbols else None
    maker, taker = (sym.maker_fee, sym.taker_fee) if sym else ("0", "0")
    return ({
        "makerCommission": int(Decimal(maker) * 10000), "takerCommission": int(Decimal(taker) * 10000),
        "buyerCommission": 0, "sellerCommission": 0,
        "commissionRates": {"maker": _rate(maker), "taker": _rate(taker), "buyer": _rate("0"), "seller": _rate("0")},
        "canTrade": "TRADE" in key.permissions, "canWithdraw": False, "canDeposit": False, "brokered": False,
        "requireSelfTradePrevention": False, "preventSor": False,
        "updateTime": _ms(state.balance_update_ns.get(key.account_id, 0)), "accountType": "SPOT",
        "balances": balances, "permissions": ["SPOT"], "uid": key.account_id,
    })


async def cancel_replace(app: web.Application, key: A.ApiKey, params: dict):
    """rest-api.md "Cancel an Existing Order and Send a New Order": one CANCEL_REPLACE command
    (the engines evaluate the new order's filters first, then cancel, then place)."""
    u = symbol_of(app, params)
    mode = params.get("cancelReplaceMode")
    if not mode:
        raise E.mandatory_param("cancelReplaceMode")
    if mode not in ("STOP_ON_FAILURE", "ALLOW_FAILURE"):
        raise E.invalid_param("cancelReplaceMode")
    target = {"orderId": params.get("cancelOrderId"), "origClientOrderId": params.get("cancelOrigClientOrderId")}
    if target["orderId"] is None and target["origClientOrderId"] is None:
        raise E.either_param("cancelOrderId", "cancelOrigClientOrderId")
    cancel_cid = _client_id(params, "cancelNewClientOrderId") or new_client_order_id()
    restrictions = _cancel_restrictions(params)
    leg, extras, resp, cid = new_order_command(params, u, key.account_id)
    state = _state(app)
    try:
        o = _find_order(app, {k: v for k, v in target.items() if v is not None}, key.account_id, u,
                        E.unknown_order_cancel)
        order_id = o.order_id
    except E.BinanceError:
        # Not one of the account's orders: no order has id -1, so matching refuses the cancel
        # (UNKNOWN_ORDER) in journal order and the mode decides about the new order.
        o, order_id = None, -1
    head = R.empty(RecordType.CANCEL_REPLACE)
    head["account_id"], head["symbol_id"], head["order_id"] = key.account_id, u.symbol_id, order_id
    head["new_client_order_id"] = cancel_cid.encode("ascii")
    head["cancel_restrictions"], head["replace_mode"] = restrictions, int(R.ReplaceMode[mode])
    head["flags"] = R.FLAG_CONTINUED
    parts: dict = {}

    def expect(w: Waiter) -> None:
        answer = w.done

        def cancel_done(recs):
            parts["cancel"] = recs[0]

        def new_done(recs):
            state.forget(w)
            answer([parts["cancel"]] + recs if "cancel" in parts else recs)

        def refused(recs):
            # A refusal found by the command's edge sequence: the whole command before matching,
            # or its new order when the order engine sequences it after the cancel (a client
            # order id that is taken by then): the cancel's result, if any, still belongs to the
            # answer, and the parts' waiters are done.
            cancel_w.taken = new_w.taken = True
            answer([parts["cancel"]] + recs if "cancel" in parts else recs)
        w.done = refused
        cancel_w, new_w = Waiter(cancel_done, single=True), Waiter(new_done, extras)
        state.expect_refusal(w)
        state.expect_cancel(key.account_id, cancel_cid, cancel_w)
        state.expect_new(key.account_id, cid, new_w)

    records = await _gateway(app).submit(R.concat([head, leg]), expect, extras)
    cancel_rec = next((r for r in records if r.type in (RecordType.ORDER_CANCELED, RecordType.CANCEL_REJECTED)), None)
    new_rec = next((r for r in records if r.type in (RecordType.ORDER_ACCEPTED, RecordType.ORDER_REJECTED)), None)
    if cancel_rec is None or cancel_rec.type == RecordType.CANCEL_REJECTED:
        not_attempted = cancel_rec is None or cancel_rec.reason == R.Reason.NOT_ATTEMPTED
        cancel_result = "NOT_ATTEMPTED" if not_attempted else "FAILURE"
        cancel_body = None if not_attempted else refusal(cancel_rec).body()
    else:
        cancel_result = "SUCCESS"
        cancel_body = cancel_json(state.orders.get(cancel_rec.order_id) or o, u, cancel_cid, cancel_rec.ts_ns)
    if new_rec is None or (new_rec.type == RecordType.ORDER_REJECTED and new_rec.reason == R.Reason.NOT_ATTEMPTED):
        new_result, new_body = "NOT_ATTEMPTED", None
    elif new_rec.type == RecordType.ORDER_REJECTED:
        new_result, new_body = "FAILURE", refusal(new_rec).body()
    else:
        new_result = "SUCCESS"
        new_body = new_order_response(state.orders[new_rec.order_id], u, resp, records, new_rec.ts_ns)
    out = {"cancelResult": cancel_result, "newOrderResult": new_result, "cancelResponse": cancel_body,
           "newOrderResponse": new_body}
    if cancel_result == new_result == "SUCCESS":
        return out
    if "SUCCESS" in (cancel_result, new_result):
        raise E.BinanceError(409, -2021, "Order cancel-replace partially failed.", out)
    raise E.BinanceError(400, -2022, "Order cancel-replace failed.", out)


async def amend_keep_priority(app: web.Application, key: A.ApiKey, params: dict):
    """rest-api.md "Order Amend Keep Priority": the quantity down only, the order keeps its place
    and takes a new client order id (one is made if none is sent)."""
    u = symbol_of(app, params)
    raw = params.get("newQty")
    if not raw:
        raise E.mandatory_param("newQty")
    new_qty = u.qty_lot("newQty", raw)
    o = _find_order(app, params, key.account_id, u, E.unknown_order_cancel)
    new_cid = _client_id(params, "newClientOrderId") or new_client_order_id()
    if not o.is_open:
        raise E.unknown_order_cancel()
    if new_qty == 0:
        raise E.invalid_param("newQty")
    if new_qty >= o.qty_lot:
        raise E.engine_refusal(-2038, "Order amend (quantity increase) is not supported." if new_qty > o.qty_lot
                               else "The requested action would change no state; rejecting")
    orig_cid = o.client_order_id
    rec = R.empty(RecordType.AMEND)
    rec["account_id"], rec["symbol_id"], rec["order_id"], rec["new_qty_lot"] = key.account_id, u.symbol_id, \
        o.order_id, new_qty
    rec["flags"] = R.FLAG_CONTINUED
    ext = R.empty(RecordType.EXT)
    ext["account_id"], ext["symbol_id"] = key.account_id, u.symbol_id
    ext["ext_kind"], ext["text1"] = int(R.ExtKind.NEW_CLIENT_ORDER_ID), new_cid.encode("ascii")
    state = _state(app)
    records = await _gateway(app).submit(R.concat([rec, ext]), lambda w: state.expect_amend(key.account_id,
                                                                                            o.order_id, w))
    head = records[0]
    if head.type != RecordType.ORDER_AMENDED:
        raise refusal(head)
    o = state.orders[o.order_id]
    f = order_fields(o, u)
    return {"transactTime": _ms(head.ts_ns), "executionId": head.seq, "amendedOrder": {
        "symbol": u.name, "orderId": o.order_id, "orderListId": -1, "origClientOrderId": orig_cid,
        "clientOrderId": o.client_order_id, "price": f["price"], "qty": f["origQty"], "executedQty": f["executedQty"],
        "preventedQty": u.qty(o.prevented_lot), "quoteOrderQty": u.quote_amount(o.quote_qty_minor),
        "cumulativeQuoteQty": f["cummulativeQuoteQty"], "status": f["status"], "timeInForce": f["timeInForce"],
        "type": f["type"], "side": f["side"], "workingTime": _ms(o.working_ns) if o.working_ns >= 0 else -1,
        "selfTradePreventionMode": _stp_name(o, u)}}


LIST_LEG_PARAMS = ("Type", "Price", "StopPrice", "TrailingDelta", "TimeInForce", "IcebergQty", "ClientOrderId")


def _leg_name(pos: str, param: str) -> str:
    """A single order's parameter as an OCO leg's ("price" -> "abovePrice")."""
    if param in ("quantity", "side", "symbol", "selfTradePreventionMode", "newOrderRespType"):
        return param
    if param == "newClientOrderId":
        return pos + "ClientOrderId"
    return pos + param[0].upper() + param[1:]


def list_json(lst, state: EdgeState, u: SymbolUnits, transact_ns: int | None = None) -> dict:
    """An order list as rest-api.md "Query Order list" shows it."""
    legs = [state.orders.get(i) for i in sorted(lst.order_ids)]
    done = all(o is None or not o.is_open for o in legs)
    return {"orderListId": lst.list_id, "contingencyType": "OCO",
            "listStatusType": "ALL_DONE" if done else "EXEC_STARTED",
            "listOrderStatus": "ALL_DONE" if done else "EXECUTING",
            "listClientOrderId": lst.list_client_order_id,
            "transactionTime": _ms(lst.time_ns if transact_ns is None else transact_ns), "symbol": u.name,
            "orders": [{"symbol": u.name, "orderId": i, "clientOrderId": o.client_order_id if o else ""}
                       for i, o in zip(sorted(lst.order_ids), legs)]}


async def new_oco(app: web.Application, key: A.ApiKey, params: dict):
    """rest-api.md "New Order list - OCO": an above and a below order of one quantity; the
    activation of one expires the other (the engines hold the list rules and check the prices)."""
    u = symbol_of(app, params)
    if not params.get("quantity"):
        raise E.mandatory_param("quantity")
    for name in ("side", "aboveType", "belowType"):
        if not params.get(name):
            raise E.mandatory_param(name)
    list_cid = _client_id(params, "listClientOrderId") or new_client_order_id()
    legs = []
    for pos in ("above", "below"):
        leg_params = {"side": params["side"], "quantity": params["quantity"],
                      "selfTradePreventionMode": params.get("selfTradePreventionMode"),
                      "newOrderRespType": params.get("newOrderRespType")}
        for name in LIST_LEG_PARAMS:
            value = params.get(pos + name)
            if value is not None:
                leg_params[{"Type": "type", "ClientOrderId": "newClientOrderId"}.get(name, name[0].lower() + name[1:])] = value
        try:
            legs.append(new_order_command({k: v for k, v in leg_params.items() if v is not None}, u, key.account_id))
        except E.BinanceError as exc:  # name the leg's own parameter, as the client sent it
            raise E.BinanceError(exc.http_status, exc.code, re.sub(r"'(\w+)'", lambda m: f"'{_leg_name(pos, m[1])}'",
                                                                   exc.msg, count=1)) from None
    head = R.pack(RecordType.ORDER_LIST, account_id=key.account_id, symbol_id=u.symbol_id,
                  list_type=int(R.ListType.OCO), list_client_order_id=list_cid.encode("ascii"),
                  flags=R.FLAG_CONTINUED)
    (above, ex_a, resp, cid_a), (below, ex_b, _, cid_b) = legs
    above["flags"] = R.FLAG_CONTINUED
    ex_a.list_leg, ex_a.list_client_order_id = 1, list_cid
    ex_b.list_leg, ex_b.list_client_order_id = 2, list_cid
    state = _state(app)

    def expect(w: Waiter) -> None:
        state.expect_new(key.account_id, cid_a, w)
        state.expect_leg(key.account_id, cid_b, ex_b)

    records = await _gateway(app).submit(R.concat([head, above, below]), expect, ex_a)
    head_rec = records[0]
    if head_rec.type != RecordType.ORDER_ACCEPTED:
        raise refusal(next((r for r in records if r.reason), head_rec))
    first = state.orders[head_rec.order_id]
    lst = state.lists[first.list_id]
    out = list_json(lst, state, u, head_rec.ts_ns)
    out["orderReports"] = [new_order_response(state.orders[i], u, resp, records, head_rec.ts_ns)
                           for i in sorted(lst.order_ids)]
    return out


def _find_list(app: web.Application, params: dict, account: int, u: SymbolUnits, missing):
    lid = long_param(params, "orderListId")
    cid = params.get("listClientOrderId") or params.get("origClientOrderId")
    if lid is None and not cid:
        raise E.either_param("orderListId", "listClientOrderId")
    state = _state(app)
    if lid is not None:
        lst = state.lists.get(lid)
    else:
        lst = next((x for x in state.lists.values() if x.account_id == account and x.list_client_order_id == cid
                    and any(state.orders.get(i) and state.orders[i].is_open for i in x.order_ids)), None) or next(
            (x for x in reversed(list(state.lists.values())) if x.account_id == account
             and x.list_client_order_id == cid), None)
    if lst is None or lst.account_id != account or (u is not None and lst.symbol_id != u.symbol_id):
        raise missing()
    return lst


async def query_order_list(app: web.Application, key: A.ApiKey, params: dict):
    lst = _find_list(app, params, key.account_id, None, E.no_such_order)
    return list_json(lst, _state(app), app[SYMBOLS_BY_ID][lst.symbol_id])


async def open_order_lists(app: web.Application, key: A.ApiKey, params: dict):
    state = _state(app)
    return [list_json(x, state, app[SYMBOLS_BY_ID][x.symbol_id]) for x in state.lists.values()
            if x.account_id == key.account_id and any(state.orders.get(i) and state.orders[i].is_open
                                                      for i in x.order_ids)]


async def cancel_order_list(app: web.Application, key: A.ApiKey, params: dict):
    """rest-api.md "Cancel Order list": cancelling one leg cancels the list."""
    u = symbol_of(app, params)
    lst = _find_list(app, params, key.account_id, u, E.unknown_order_cancel)
    state = _state(app)
    leg = next((state.orders[i] for i in sorted(lst.order_ids) if state.orders.get(i) and state.orders[i].is_open), None)
    if leg is None:
        raise E.unknown_order_cancel()
    cancel_cid = _client_id(params, "newClientOrderId") or new_client_order_id()
    rec = R.pack(RecordType.CANCEL, account_id=key.account_id, symbol_id=u.symbol_id, order_id=leg.order_id,
                 new_client_order_id=cancel_cid.encode("ascii"))
    records = await _gateway(app).submit(rec, lambda w: state.expect_cancel(key.account_id, cancel_cid, w))
    if records[0].type != RecordType.ORDER_CANCELED:
        raise refusal(records[0])
    out = list_json(lst, state, u, records[0].ts_ns)
    out["orderReports"] = [cancel_json(state.orders[i], u, cancel_cid, records[0].ts_ns) for i in sorted(lst.order_ids)
                           if i in state.orders]
    return out


# Each operation: its security type and the function of (app, key, params) that does it; REST
# (here) and the WebSocket API (wsapi.py) both call these.
OPERATIONS = {
    "new_order": ("TRADE", new_order),
    "test_order": ("TRADE", test_order),
    "query_order": ("USER_DATA", query_order),
    "cancel_order": ("TRADE", cancel_order),
    "cancel_open_orders": ("TRADE", cancel_open_orders),
    "open_orders": ("USER_DATA", open_orders),
    "all_orders": ("USER_DATA", all_orders),
    "my_trades": ("USER_DATA", my_trades),
    "account": ("USER_DATA", account),
    "cancel_replace": ("TRADE", cancel_replace),
    "amend_keep_priority": ("TRADE", amend_keep_priority),
    "new_oco": ("TRADE", new_oco),
    "cancel_order_list": ("TRADE", cancel_order_list),
    "query_order_list": ("USER_DATA", query_order_list),
    "open_order_lists": ("USER_DATA", open_order_lists),
    **listenkeys.OPERATIONS,
}
REST_ROUTES = (
    ("POST", "/api/v3/order", "new_order"),
    ("POST", "/api/v3/order/test", "test_order"),
    ("GET", "/api/v3/order", "query_order"),
    ("DELETE", "/api/v3/order", "cancel_order"),
    ("GET", "/api/v3/openOrders", "open_orders"),
    ("DELETE", "/api/v3/openOrders", "cancel_open_orders"),
    ("GET", "/api/v3/allOrders", "all_orders"),
    ("GET", "/api/v3/myTrades", "my_trades"),
    ("GET", "/api/v3/account", "account"),
    ("POST", "/api/v3/order/cancelReplace", "cancel_replace"),
    ("PUT", "/api/v3/order/amend/keepPriority", "amend_keep_priority"),
    ("POST", "/api/v3/orderList/oco", "new_oco"),
    ("DELETE", "/api/v3/orderList", "cancel_order_list"),
    ("GET", "/api/v3/orderList", "query_order_list"),
    ("GET", "/api/v3/openOrderList", "open_order_lists"),
    ("POST", "/api/v3/userDataStream", "start_user_stream"),
    ("PUT", "/api/v3/userDataStream", "keepalive_user_stream"),
    ("DELETE", "/api/v3/userDataStream", "close_user_stream"),
)


async def caught_up(app: web.Application, key: A.ApiKey | None = None, need: str = "") -> None:
    """Before an account's operation: the state has every report published so far (an order
    placed through another edge process is known here), and the request's key is still good
    by it: a key revoked (or an account suspended) through another edge process is refused
    here as soon as the admin API has answered the revocation."""
    gateway = app[GATEWAY]
    if gateway is not None:
        await gateway.caught_up()
    if key is not None:
        current = app[KEYS].get(key.api_key)
        if current is None or need not in current.permissions:
            raise E.rejected_api_key()


def _rest(operation: str):
    need, fn = OPERATIONS[operation]

    orders = ORDER_OPERATIONS.get(operation, 0)

    async def handler(request: web.Request) -> web.Response:
        key, params = await _auth(request, need)
        await caught_up(request.app, key, need)
        if orders:  # its "Unfilled Order Count": the account's ORDERS limits (limits.py)
            request[ORDER_VERDICT] = request.app[LIMITS].order(key.account_id, orders)
        return E.json_response(await fn(request.app, key, params))
    handler.__name__ = operation
    return handler


def add_routes(app: web.Application) -> None:
    for method, path, operation in REST_ROUTES:
        app.router.add_route(method, path, _rest(operation))
