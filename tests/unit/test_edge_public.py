"""The edge's public endpoints (ping, time, exchangeInfo) against the demo config: Binance's
field names, exact decimal strings, symbol selection and Binance's error bodies."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from urllib.parse import quote

import pytest
from aiohttp.test_utils import TestClient, TestServer

from ganntec import config as C
from ganntec.edge.app import make_app
from ganntec.edge.exchange_info import exchange_info, fmt_amount, fmt_multiplier

CFG = C.load()
NOW_MS = 1_700_000_000_123


def call(path: str, cfg=CFG):
    """GET `path` on a fresh app with a fixed clock -> (status, content type, JSON body or text)."""

    async def go():
        async with TestClient(TestServer(make_app(cfg, clock_ms=lambda: NOW_MS))) as client:
            resp = await client.get(path)
            ctype = resp.headers.get("Content-Type", "")
            body = await resp.json(content_type=None) if ctype.startswith("application/json") else await resp.text()
            return resp.status, ctype, body

    return asyncio.run(go())


def by_type(entry: dict) -> dict[str, dict]:
    return {f["filterType"]: f for f in entry["filters"]}


def test_ping_and_time():
    assert call("/api/v3/ping")[::2] == (200, {})
    status, ctype, body = call("/api/v3/time")
    assert (status, body) == (200, {"serverTime": NOW_MS})
    assert ctype == "application/json;charset=UTF-8"


def test_ping_with_a_parameter_is_unread():
    assert call("/api/v3/ping?x=1")[::2] == (
        400, {"code": -1104, "msg": "Not all sent parameters were read; read '0' parameter(s) but was sent '1'."})


def test_unknown_path_is_a_plain_404():
    status, ctype, _ = call("/api/v3/nope")
    assert status == 404 and not ctype.startswith("application/json")


def test_exchange_info_demo():
    status, _, body = call("/api/v3/exchangeInfo")
    assert status == 200
    assert body["timezone"] == "UTC" and body["serverTime"] == NOW_MS and body["exchangeFilters"] == []
    assert {r["rateLimitType"] for r in body["rateLimits"]} == {"REQUEST_WEIGHT", "ORDERS", "RAW_REQUESTS", "CONNECTIONS"}
    assert all(set(r) == {"rateLimitType", "interval", "intervalNum", "limit"} for r in body["rateLimits"])
    assert [s["symbol"] for s in body["symbols"]] == ["BTCUSDT", "ETHUSDT", "ETHBTC"]
    btc = body["symbols"][0]
    assert {k: btc[k] for k in ("status", "baseAsset", "quoteAsset", "baseAssetPrecision", "quotePrecision",
                                 "quoteAssetPrecision", "baseCommissionPrecision", "quoteCommissionPrecision")} == {
        "status": "TRADING", "baseAsset": "BTC", "quoteAsset": "USDT", "baseAssetPrecision": 8, "quotePrecision": 8,
        "quoteAssetPrecision": 8, "baseCommissionPrecision": 8, "quoteCommissionPrecision": 8}
    assert btc["orderTypes"] == ["LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS", "STOP_LOSS_LIMIT",
                                 "TAKE_PROFIT", "TAKE_PROFIT_LIMIT"]
    assert (btc["icebergAllowed"], btc["ocoAllowed"], btc["otoAllowed"], btc["isSpotTradingAllowed"],
            btc["isMarginTradingAllowed"], btc["quoteOrderQtyMarketAllowed"]) == (True, True, False, True, False, True)
    assert btc["permissions"] == [] and btc["permissionSets"] == [["SPOT"]]
    assert btc["defaultSelfTradePreventionMode"] == "EXPIRE_MAKER"
    assert btc["allowedSelfTradePreventionModes"] == ["NONE", "EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH", "DECREMENT"]
    f = by_type(btc)
    assert f["PRICE_FILTER"] == {"filterType": "PRICE_FILTER", "minPrice": "0.01000000",
                                 "maxPrice": "1000000.00000000", "tickSize": "0.01000000"}
    assert f["LOT_SIZE"] == {"filterType": "LOT_SIZE", "minQty": "0.00001000", "maxQty": "9000.00000000",
                             "stepSize": "0.00001000"}
    assert f["MARKET_LOT_SIZE"] == {**f["LOT_SIZE"], "filterType": "MARKET_LOT_SIZE"}
    # max_notional unset: the engine's cap, max price x max qty = 1e6 x 9000
    assert f["NOTIONAL"] == {"filterType": "NOTIONAL", "minNotional": "5.00000000", "applyMinToMarket": True,
                             "maxNotional": "9000000000.00000000", "applyMaxToMarket": True, "avgPriceMins": 0}
    assert f["PERCENT_PRICE_BY_SIDE"] == {"filterType": "PERCENT_PRICE_BY_SIDE", "bidMultiplierUp": "5",
                                          "bidMultiplierDown": "0.2", "askMultiplierUp": "5",
                                          "askMultiplierDown": "0.2", "avgPriceMins": 0}
    assert f["ICEBERG_PARTS"] == {"filterType": "ICEBERG_PARTS", "limit": 10}
    assert f["MAX_NUM_ORDERS"] == {"filterType": "MAX_NUM_ORDERS", "maxNumOrders": 200}
    assert f["TRAILING_DELTA"] == {"filterType": "TRAILING_DELTA", "minTrailingAboveDelta": 10,
                                   "maxTrailingAboveDelta": 2000, "minTrailingBelowDelta": 10,
                                   "maxTrailingBelowDelta": 2000}
    ethbtc = by_type(body["symbols"][2])
    assert ethbtc["PRICE_FILTER"]["tickSize"] == "0.00001000" and ethbtc["LOT_SIZE"]["stepSize"] == "0.00100000"
    assert ethbtc["NOTIONAL"]["minNotional"] == "0.00010000"


def test_symbol_and_symbols_select():
    status, _, body = call("/api/v3/exchangeInfo?symbol=ETHBTC")
    assert status == 200 and [s["symbol"] for s in body["symbols"]] == ["ETHBTC"]
    for raw in ('["ETHBTC","BTCUSDT"]', quote('["ETHBTC","BTCUSDT"]')):
        status, _, body = call("/api/v3/exchangeInfo?symbols=" + raw)
        assert status == 200 and [s["symbol"] for s in body["symbols"]] == ["ETHBTC", "BTCUSDT"]


@pytest.mark.parametrize("query", ["symbol=XRPUSDT", 'symbols=["BTCUSDT","XRPUSDT"]'])
def test_unknown_symbol(query):
    status, ctype, body = call("/api/v3/exchangeInfo?" + query)
    assert (status, body) == (400, {"code": -1121, "msg": "Invalid symbol."})
    assert ctype == "application/json;charset=UTF-8"


@pytest.mark.parametrize("query, code, msg", [
    ('symbol=BTCUSDT&symbols=["ETHUSDT"]', -1128, "Combination of optional parameters invalid."),
    ("symbol=BTCUSDT&symbol=ETHUSDT", -1101, "Duplicate values for a parameter detected."),
    ("symbol=btcusdt", -1100, "Illegal characters found in parameter 'symbol'; legal range is '^[A-Z0-9-_.]{1,20}$'."),
    ("symbols=BTCUSDT", -1100, "Illegal characters found in parameter 'symbols'; legal range is "
                               "'^\\[(\"[A-Z0-9-_.]{1,20}\"(,\"[A-Z0-9-_.]{1,20}\"){0,}){0,1}\\]$'."),
    ("BTCUSDT", -1104, "Not all sent parameters were read; read '0' parameter(s) but was sent '1'."),
    ("symbol=BTCUSDT&foo=1", -1104, "Not all sent parameters were read; read '1' parameter(s) but was sent '2'."),
    ("symbolStatus=OPEN", -1122, "Invalid symbolStatus."),
    ("symbolStatus=TRADING&symbol=BTCUSDT", -1128, "Combination of optional parameters invalid."),
])
def test_parameter_errors(query, code, msg):
    assert call("/api/v3/exchangeInfo?" + query)[::2] == (400, {"code": code, "msg": msg})


def test_status_permissions_and_permission_sets():
    assert len(call("/api/v3/exchangeInfo?symbolStatus=TRADING")[2]["symbols"]) == 3
    assert call("/api/v3/exchangeInfo?symbolStatus=HALT")[2]["symbols"] == []
    assert len(call("/api/v3/exchangeInfo?permissions=SPOT")[2]["symbols"]) == 3
    assert call('/api/v3/exchangeInfo?permissions=["MARGIN"]')[2]["symbols"] == []
    body = call("/api/v3/exchangeInfo?showPermissionSets=false")[2]
    assert all(s["permissionSets"] == [] for s in body["symbols"])


FIELDS = {  # filter field -> Symbol attribute it publishes
    ("PRICE_FILTER", "minPrice"): "min_price", ("PRICE_FILTER", "maxPrice"): "max_price",
    ("PRICE_FILTER", "tickSize"): "tick_size", ("LOT_SIZE", "minQty"): "min_qty",
    ("LOT_SIZE", "maxQty"): "max_qty", ("LOT_SIZE", "stepSize"): "step_size",
    ("MARKET_LOT_SIZE", "stepSize"): "step_size", ("NOTIONAL", "minNotional"): "min_notional",
    ("PERCENT_PRICE_BY_SIDE", "bidMultiplierUp"): "bid_multiplier_up",
    ("PERCENT_PRICE_BY_SIDE", "bidMultiplierDown"): "bid_multiplier_down",
    ("PERCENT_PRICE_BY_SIDE", "askMultiplierUp"): "ask_multiplier_up",
    ("PERCENT_PRICE_BY_SIDE", "askMultiplierDown"): "ask_multiplier_down",
}


@pytest.mark.parametrize("sym", CFG.symbols, ids=lambda s: s.name)
def test_filters_parse_back_exactly(sym):
    f = by_type(exchange_info(CFG, NOW_MS, [sym.name])["symbols"][0])
    for (ftype, key), attr in FIELDS.items():
        assert Decimal(f[ftype][key]) == Decimal(getattr(sym, attr)), (ftype, key)
    assert Decimal(f["MARKET_LOT_SIZE"]["minQty"]) == Decimal(sym.market_min_qty or sym.min_qty)
    assert Decimal(f["MARKET_LOT_SIZE"]["maxQty"]) == Decimal(sym.market_max_qty or sym.max_qty)
    assert Decimal(f["NOTIONAL"]["maxNotional"]) == Decimal(sym.max_price) * Decimal(sym.max_qty)


CUSTOM = C.DEMO_TOML.replace('min_notional = "5"\n', 'min_notional = "5"\nmax_notional = "123456.7"\n'
                             'bid_multiplier_up = "1.25"\nask_multiplier_down = "0.75"\niceberg_parts = 0\n'
                             'max_trailing_above_delta = 0\nmax_trailing_below_delta = 0\n'
                             'min_trailing_above_delta = 0\nmin_trailing_below_delta = 0\n'
                             'default_stp = "none"\n', 1)


def test_configured_values_are_published():
    btc = exchange_info(C.parse(CUSTOM), NOW_MS, ["BTCUSDT"])["symbols"][0]
    f = by_type(btc)
    assert f["NOTIONAL"]["maxNotional"] == "123456.70000000"
    assert (f["PERCENT_PRICE_BY_SIDE"]["bidMultiplierUp"], f["PERCENT_PRICE_BY_SIDE"]["askMultiplierDown"]) == ("1.25", "0.75")
    assert "ICEBERG_PARTS" not in f and btc["icebergAllowed"] is False
    assert btc["allowTrailingStop"] is False and btc["defaultSelfTradePreventionMode"] == "NONE"


@pytest.mark.parametrize("raw, amount, multiplier", [
    ("0.01", "0.01000000", "0.01"), ("1000000", "1000000.00000000", "1000000"), ("5", "5.00000000", "5"),
    ("0.000000001", "0.000000001", "0.000000001"), ("0.20", "0.20000000", "0.2"), ("1E+2", "100.00000000", "100"),
])
def test_decimal_formats(raw, amount, multiplier):
    assert fmt_amount(raw) == amount and fmt_multiplier(raw) == multiplier
    assert Decimal(fmt_amount(raw)) == Decimal(raw) == Decimal(fmt_multiplier(raw))
