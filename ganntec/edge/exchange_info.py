"""`GET /api/v3/exchangeInfo` from the Config (rest-api.md "Exchange information"; filter
objects from filters.md "Symbol filters"; rate limiters and permissions from enums.md).

Decimal fields are strings with 8 decimals as Binance prints them ("0.01000000"), more only
when the config is finer; every value is derived with Decimal from the config's strings."""

from __future__ import annotations

import re
from decimal import Context, Decimal

import orjson

from ganntec.config import Config
from ganntec.edge import errors as E
from ganntec.edge.limits import EdgeLimits
from ganntec.engines.symbols import Symbol
from ganntec.shm.records import StpMode


# The order types the order engine accepts (records.OrderType), in Binance's listing order.
ORDER_TYPES = ("LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS", "STOP_LOSS_LIMIT", "TAKE_PROFIT", "TAKE_PROFIT_LIMIT")
STP_MODES = tuple(m.name for m in StpMode if m != StpMode.DEFAULT)
PERMISSIONS = ("SPOT",)  # every configured symbol is spot-only
KNOWN_PERMISSIONS = ("SPOT", "MARGIN", "LEVERAGED") + tuple(f"TRD_GRP_{i:03d}" for i in range(2, 235))
SYMBOL_STATUSES = ("TRADING", "HALT", "BREAK")

# Binance's validation patterns, quoted in its -1100 messages.
SYMBOL_RANGE = "^[A-Z0-9-_.]{1,20}$"
SYMBOLS_RANGE = '^\\[("[A-Z0-9-_.]{1,20}"(,"[A-Z0-9-_.]{1,20}"){0,}){0,1}\\]$'
_SYMBOL_RE = re.compile(SYMBOL_RANGE)
_SYMBOLS_RE = re.compile(SYMBOLS_RANGE)
PARAMS = ("symbol", "symbols", "permissions", "showPermissionSets", "symbolStatus")

_CTX = Context(prec=80)  # wide enough that quantizing any config value is exact
_E8 = Decimal("1E-8")


def fmt_amount(value: str | Decimal) -> str:
    """A price/quantity/notional as Binance prints it: at least 8 decimals, never an exponent."""
    d = Decimal(value)
    if d.as_tuple().exponent >= -8:
        d = d.quantize(_E8, context=_CTX)
    return format(d, "f")


def fmt_multiplier(value: str | Decimal) -> str:
    """A PERCENT_PRICE_BY_SIDE multiplier: Binance prints these trimmed ("5", "0.2")."""
    return format(Decimal(value).normalize(_CTX), "f")


def symbol_filters(s: Symbol) -> list[dict]:
    row = s.row()
    price = {"filterType": "PRICE_FILTER", "minPrice": fmt_amount(s.min_price),
             "maxPrice": fmt_amount(s.max_price), "tickSize": fmt_amount(s.tick_size)}
    lot = {"filterType": "LOT_SIZE", "minQty": fmt_amount(s.min_qty),
           "maxQty": fmt_amount(s.max_qty), "stepSize": fmt_amount(s.step_size)}
    out = [price, lot]
    if s.iceberg_parts > 0:
        out.append({"filterType": "ICEBERG_PARTS", "limit": s.iceberg_parts})
    out.append({"filterType": "MARKET_LOT_SIZE", "minQty": fmt_amount(s.market_min_qty or s.min_qty),
                "maxQty": fmt_amount(s.market_max_qty or s.max_qty), "stepSize": fmt_amount(s.step_size)})
    out.append({"filterType": "TRAILING_DELTA",
                "minTrailingAboveDelta": s.min_trailing_above_delta, "maxTrailingAboveDelta": s.max_trailing_above_delta,
                "minTrailingBelowDelta": s.min_trailing_below_delta, "maxTrailingBelowDelta": s.max_trailing_below_delta})
    # The engine measures against the last trade price: Binance's avgPriceMins 0 means exactly that.
    out.append({"filterType": "PERCENT_PRICE_BY_SIDE",
                "bidMultiplierUp": fmt_multiplier(s.bid_multiplier_up), "bidMultiplierDown": fmt_multiplier(s.bid_multiplier_down),
                "askMultiplierUp": fmt_multiplier(s.ask_multiplier_up), "askMultiplierDown": fmt_multiplier(s.ask_multiplier_down),
                "avgPriceMins": 0})
    # max_notional "0" means "max price x max qty": publish the cap the engine actually applies.
    # The engine checks both bounds on MARKET orders too (at the last price).
    max_notional = s.quote.from_minor(int(row["max_notional_minor"]))
    out.append({"filterType": "NOTIONAL", "minNotional": fmt_amount(s.min_notional), "applyMinToMarket": True,
                "maxNotional": fmt_amount(max_notional), "applyMaxToMarket": True, "avgPriceMins": 0})
    out.append({"filterType": "MAX_NUM_ORDERS", "maxNumOrders": s.max_num_orders})
    return out


def symbol_info(s: Symbol, show_permission_sets: bool = True) -> dict:
    trailing = s.max_trailing_above_delta > 0 or s.max_trailing_below_delta > 0
    return {
        "symbol": s.name,
        "status": "TRADING",
        "baseAsset": s.base.name,
        "baseAssetPrecision": s.base.precision,
        "quoteAsset": s.quote.name,
        "quotePrecision": s.quote.precision,
        "quoteAssetPrecision": s.quote.precision,
        # fees are charged in the received asset's minor units
        "baseCommissionPrecision": s.base.precision,
        "quoteCommissionPrecision": s.quote.precision,
        "orderTypes": list(ORDER_TYPES),
        "icebergAllowed": s.iceberg_parts > 0,
        "ocoAllowed": True,    # order engine: ORDER_LIST with list_type OCO
        "otoAllowed": False,   # OTO/OTOCO lists are refused (UNSUPPORTED_COMBINATION)
        "opoAllowed": False,
        "quoteOrderQtyMarketAllowed": True,
        "allowTrailingStop": trailing,
        "cancelReplaceAllowed": True,
        "amendAllowed": True,
        "pegInstructionsAllowed": False,
        "isSpotTradingAllowed": True,
        "isMarginTradingAllowed": False,
        "filters": symbol_filters(s),
        "permissions": [],  # Binance now leaves this empty; permissionSets carries them
        "permissionSets": [list(PERMISSIONS)] if show_permission_sets else [],
        "defaultSelfTradePreventionMode": s.default_stp.name,
        "allowedSelfTradePreventionModes": list(STP_MODES),
    }


def exchange_info(cfg: Config, server_time_ms: int, symbols: list[str] | None = None,
                  show_permission_sets: bool = True) -> dict:
    """The exchangeInfo body; `symbols` (names, in the caller's order) selects, None = all.
    An unknown name raises BinanceError -1121."""
    by_name = {s.name: s for s in cfg.symbols}
    if symbols is None:
        chosen = list(cfg.symbols)
    else:
        if any(n not in by_name for n in symbols):
            raise E.bad_symbol()
        chosen = [by_name[n] for n in dict.fromkeys(symbols)]
    return {
        "timezone": "UTC",
        "serverTime": server_time_ms,
        "rateLimits": EdgeLimits.limits_of(cfg.limits).rate_limits(),  # what the edge enforces
        "exchangeFilters": [],
        "symbols": [symbol_info(s, show_permission_sets) for s in chosen],
    }


def _json_list(param: str, raw: str) -> list:
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise E.invalid_param(param) from None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise E.invalid_param(param)
    return value


def query_exchange_info(cfg: Config, server_time_ms: int, query) -> dict:
    """exchangeInfo for a request's query (a MultiDict), validated the way Binance does:
    duplicates -1101, bad characters -1100, unknown names -1121, symbol/symbols/permissions/
    symbolStatus combined -1128, parameters not read -1104."""
    if len(set(query.keys())) != len(query):
        raise E.duplicate_param()
    symbol, symbols_raw = query.get("symbol"), query.get("symbols")
    permissions_raw, status = query.get("permissions"), query.get("symbolStatus")
    show_raw = query.get("showPermissionSets")
    read = sum(p in query for p in PARAMS)
    if read != len(query):
        raise E.unread_params(read, len(query))
    if sum(v is not None for v in (symbol, symbols_raw, permissions_raw, status)) > 1:
        raise E.bad_combo()
    names = None
    if symbol is not None:
        if not _SYMBOL_RE.fullmatch(symbol):
            raise E.illegal_chars("symbol", SYMBOL_RANGE)
        names = [symbol]
    elif symbols_raw is not None:
        if not _SYMBOLS_RE.fullmatch(symbols_raw):
            raise E.illegal_chars("symbols", SYMBOLS_RANGE)
        names = orjson.loads(symbols_raw)
    elif permissions_raw is not None:
        perms = _json_list("permissions", permissions_raw) if permissions_raw.startswith("[") else [permissions_raw]
        if not perms or any(p not in KNOWN_PERMISSIONS for p in perms):
            raise E.invalid_param("permissions")
        names = [s.name for s in cfg.symbols] if set(perms) & set(PERMISSIONS) else []
    elif status is not None:
        if status not in SYMBOL_STATUSES:
            raise E.bad_symbol_status()
        names = [s.name for s in cfg.symbols] if status == "TRADING" else []  # every symbol trades
    show = True
    if show_raw is not None:
        if show_raw not in ("true", "false"):
            raise E.invalid_param("showPermissionSets")
        show = show_raw == "true"
    return exchange_info(cfg, server_time_ms, names, show)
