"""ganntec.edge.units: Binance decimal strings <-> integer ticks, lots and minor units, exactly,
with Binance's error codes and messages for every refusal (demo config symbols)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ganntec import config as C
from ganntec.edge.errors import BinanceError
from ganntec.edge.units import (
    DECIMAL_RANGE,
    INT64_MAX,
    AssetUnits,
    SymbolUnits,
    format_units,
)
from ganntec.engines.symbols import Asset, Symbol

CFG = C.load()
BTCUSDT, ETHUSDT, ETHBTC = CFG.symbols  # ticks 0.01 / 0.01 / 0.00001, steps 0.00001 / 0.0001 / 0.001
U = {s.name: SymbolUnits(s) for s in CFG.symbols}
BTC = U["BTCUSDT"]


def refusal(fn, *args, **kw) -> tuple[int, int, str]:
    with pytest.raises(BinanceError) as info:
        fn(*args, **kw)
    e = info.value
    return e.http_status, e.code, e.msg


def illegal(param: str) -> tuple[int, int, str]:
    return 400, -1100, f"Illegal characters found in parameter '{param}'; legal range is '{DECIMAL_RANGE}'."


# --- the demo symbols --------------------------------------------------------------------------
def test_demo_symbols_are_what_these_tests_assume():
    assert [(s.name, s.tick_size, s.step_size, s.base.precision, s.quote.precision) for s in CFG.symbols] == [
        ("BTCUSDT", "0.01", "0.00001", 8, 8), ("ETHUSDT", "0.01", "0.0001", 8, 8), ("ETHBTC", "0.00001", "0.001", 8, 8)]
    assert DECIMAL_RANGE == "^([0-9]{1,20})(\\.[0-9]{1,20})?$"
    assert (BTC.name, BTC.symbol_id, BTC.base.name, BTC.quote.name) == ("BTCUSDT", 0, "BTC", "USDT")


# --- parsing -----------------------------------------------------------------------------------
@pytest.mark.parametrize("raw, ticks", [
    ("50000.10", 5_000_010), ("50000.1", 5_000_010), ("50000", 5_000_000), ("50000.10000000", 5_000_010),
    ("0.01", 1), ("0", 0), ("0.00", 0), ("00000.01", 1), ("1000000", 100_000_000),
    ("1.0000000000", 100),        # trailing zeros beyond the asset's 8 decimals carry no precision
    ("12345678901234567.89", 1_234_567_890_123_456_789),
])
def test_price_tick_btcusdt(raw, ticks):
    assert BTC.price_tick("price", raw) == ticks


@pytest.mark.parametrize("raw, lots", [
    ("0.00100000", 100), ("0.001", 100), ("0.00001", 1), ("1", 100_000), ("9000", 900_000_000), ("0", 0),
    ("2.50000", 250_000),
])
def test_qty_lot_btcusdt(raw, lots):
    assert BTC.qty_lot("quantity", raw) == lots
    assert BTC.qty_lot("quantity", raw, market=True) == lots


def test_other_demo_symbols():
    eth, ethbtc = U["ETHUSDT"], U["ETHBTC"]
    assert eth.price_tick("price", "3000.55") == 300_055
    assert eth.qty_lot("quantity", "0.0100") == 100
    assert ethbtc.price_tick("price", "0.05000000") == 5_000
    assert ethbtc.price_tick("price", "0.00001") == 1
    assert ethbtc.qty_lot("quantity", "1.5") == 1_500
    assert ethbtc.quote_minor("quoteOrderQty", "0.0001") == 10_000


@pytest.mark.parametrize("raw, minor", [
    ("12.5", 1_250_000_000), ("0.00000001", 1), ("0", 0), ("100.00000000", 10_000_000_000),
    ("92233720368.54775807", INT64_MAX),   # the largest amount of an 8-decimal asset
])
def test_quote_minor(raw, minor):
    assert BTC.quote_minor("quoteOrderQty", raw) == minor


# --- refusals ----------------------------------------------------------------------------------
@pytest.mark.parametrize("raw", ["1e3", "-1", " 1", "1 ", "", "1.", ".5", "0x10", "1,5", "+1", "1.2.3", "NaN",
                                 "inf", "١", "1_000", "123456789012345678901", "1.123456789012345678901"])
def test_malformed_is_1100(raw):
    assert refusal(BTC.price_tick, "price", raw) == illegal("price")
    assert refusal(BTC.qty_lot, "quantity", raw) == illegal("quantity")
    assert refusal(BTC.qty_lot, "quantity", raw, market=True) == illegal("quantity")
    assert refusal(BTC.quote_minor, "quoteOrderQty", raw) == illegal("quoteOrderQty")


@pytest.mark.parametrize("raw", ["1\n", "50000.10\n"])
def test_trailing_newline_is_1100(raw):
    assert refusal(BTC.price_tick, "price", raw) == illegal("price")


@pytest.mark.parametrize("fn, param, raw", [
    (BTC.price_tick, "price", "0.000000001"),
    (BTC.price_tick, "price", "50000.123456789"),
    (BTC.qty_lot, "quantity", "0.000000001"),
    (BTC.quote_minor, "quoteOrderQty", "1.000000001"),
    (U["ETHBTC"].price_tick, "stopPrice", "0.000000005"),
])
def test_too_much_precision_is_1111(fn, param, raw):
    assert refusal(fn, param, raw) == (400, -1111, f"Parameter '{param}' has too much precision.")


def test_precision_is_checked_after_trailing_zeros_go():
    # 9 decimals of which the last is 0: 8 significant ones, fine for an 8-decimal asset
    assert BTC.quote_minor("quoteOrderQty", "0.000000010") == 1
    assert refusal(BTC.price_tick, "price", "0.000000011")[1] == -1111


@pytest.mark.parametrize("raw", ["50000.001", "0.005", "0.00000001", "1.23456789"])
def test_price_off_tick_is_price_filter(raw):
    assert refusal(BTC.price_tick, "price", raw) == (400, -1013, "Filter failure: PRICE_FILTER")


@pytest.mark.parametrize("raw", ["0.000001", "0.00001001", "1.000015"])
def test_qty_off_step_is_lot_size(raw):
    assert refusal(BTC.qty_lot, "quantity", raw) == (400, -1013, "Filter failure: LOT_SIZE")
    assert refusal(BTC.qty_lot, "quantity", raw, market=True) == (400, -1013, "Filter failure: MARKET_LOT_SIZE")


def test_off_step_on_other_symbols():
    assert refusal(U["ETHUSDT"].qty_lot, "quantity", "0.00001")[1:] == (-1013, "Filter failure: LOT_SIZE")
    assert refusal(U["ETHBTC"].qty_lot, "quantity", "0.0005")[1:] == (-1013, "Filter failure: LOT_SIZE")
    assert refusal(U["ETHBTC"].price_tick, "price", "0.000015")[1:] == (-1013, "Filter failure: PRICE_FILTER")


@pytest.mark.parametrize("fn, param, raw", [
    (BTC.qty_lot, "quantity", "99999999999999999999"),           # 1e25 lots
    (BTC.price_tick, "price", "99999999999999999999"),           # 1e22 ticks
    (BTC.price_tick, "price", "92233720368547758.08"),           # INT64_MAX + 1 ticks
    (BTC.quote_minor, "quoteOrderQty", "92233720368.54775808"),  # INT64_MAX + 1 minor units
])
def test_beyond_int64_overflows(fn, param, raw):
    assert refusal(fn, param, raw) == (400, -1108, f"Parameter '{param}' overflowed.")


def test_int64_boundary_exact():
    assert BTC.price_tick("price", "92233720368547758.07") == INT64_MAX
    assert BTC.qty_lot("quantity", "92233720368547.75807") == INT64_MAX
    assert refusal(BTC.qty_lot, "quantity", "92233720368547.75808")[1] == -1108


# --- formatting --------------------------------------------------------------------------------
def test_format_prices_and_quantities():
    assert BTC.price(5_000_010) == "50000.10000000"
    assert BTC.price(0) == "0.00000000"
    assert BTC.price(1) == "0.01000000"
    assert BTC.qty(100) == "0.00100000"
    assert BTC.qty(1) == "0.00001000"
    assert BTC.qty(900_000_000) == "9000.00000000"
    assert BTC.quote_amount(1_250_000_000) == "12.50000000"
    assert BTC.quote_amount(1) == "0.00000001"
    assert U["ETHBTC"].price(5_000) == "0.05000000"
    assert U["ETHBTC"].qty(1_500) == "1.50000000"
    assert BTC.price(INT64_MAX) == "92233720368547758.07000000"


def _symbol(tick: str, step: str, base_p: int = 8, quote_p: int = 8) -> Symbol:
    return Symbol(0, "XY", Asset(0, "X", base_p), Asset(1, "Y", quote_p), tick, step, tick, "1000", step, "1000")


def test_finer_than_8_decimals_prints_more():
    u = SymbolUnits(_symbol("0.0000000001", "0.000000000001", 18, 18))
    assert u.price(1) == "0.0000000001"
    assert u.price(12_345) == "0.0000012345"
    assert u.qty(1) == "0.000000000001"
    assert u.price_tick("price", "0.0000012345") == 12_345
    assert u.qty_lot("quantity", "1") == 10 ** 12
    assert u.quote_amount(1) == "0.000000000000000001"


def test_coarse_and_non_power_of_ten_sizes():
    u = SymbolUnits(_symbol("10", "0.5"))
    assert u.price_tick("price", "120") == 12
    assert u.price(12) == "120.00000000"
    assert refusal(u.price_tick, "price", "125")[1:] == (-1013, "Filter failure: PRICE_FILTER")
    assert u.qty_lot("quantity", "2.5") == 5
    assert u.qty(5) == "2.50000000"
    assert refusal(u.qty_lot, "quantity", "2.25")[1:] == (-1013, "Filter failure: LOT_SIZE")
    u = SymbolUnits(_symbol("0.05", "0.25"))
    assert u.price_tick("price", "1.15") == 23
    assert u.price(23) == "1.15000000"
    assert refusal(u.price_tick, "price", "1.12")[1] == -1013
    assert u.qty_lot("quantity", "0.75") == 3


@pytest.mark.parametrize("args, text", [
    ((-5, 1, 2, 8), "-0.05000000"),
    ((-5_000_010, 1, 2, 8), "-50000.10000000"),
    ((-1, 1, 8, 8), "-0.00000001"),
    ((-7, 1, 0, 0), "-7"),
    ((7, 1, 0, 0), "7"),
    ((0, 1, 0, 0), "0"),
    ((-12_345, 10, 0, 0), "-123450"),
    ((0, 1, 2, 8), "0.00000000"),
    ((7, 5, 2, 2), "0.35"),
    ((123, 1, 2, 2), "1.23"),
])
def test_format_units(args, text):
    assert format_units(*args) == text


# --- assets ------------------------------------------------------------------------------------
def test_asset_units_precision_0():
    a = AssetUnits(Asset(0, "X", 0))
    assert a.name == "X"
    assert a.fmt(5) == "5.00000000"
    assert a.fmt(0) == "0.00000000"
    assert a.fmt(-3) == "-3.00000000"
    assert a.parse("amount", "5") == 5
    assert a.parse("amount", "5.000") == 5
    assert refusal(a.parse, "amount", "5.5") == (400, -1111, "Parameter 'amount' has too much precision.")


def test_asset_units_precision_8():
    a = AssetUnits(Asset(0, "X", 8))
    assert a.fmt(150_000) == "0.00150000"
    assert a.fmt(100_000_000) == "1.00000000"
    assert a.fmt(1) == "0.00000001"
    assert a.fmt(-150_000) == "-0.00150000"
    assert a.fmt(INT64_MAX) == "92233720368.54775807"
    assert a.parse("amount", "0.0015") == 150_000


def test_asset_units_precision_18():
    a = AssetUnits(Asset(0, "X", 18))
    assert a.fmt(1) == "0.000000000000000001"
    assert a.fmt(10 ** 18) == "1.000000000000000000"
    assert a.fmt(15 * 10 ** 14) == "0.001500000000000000"
    assert a.fmt(0) == "0.000000000000000000"
    assert a.fmt(-1) == "-0.000000000000000001"
    assert a.parse("amount", "0.000000000000000001") == 1
    assert a.parse("amount", "9.223372036854775807") == INT64_MAX
    assert refusal(a.parse, "amount", "9.223372036854775808")[1] == -1108


# --- properties --------------------------------------------------------------------------------
UNITS = st.sampled_from(list(U.values()))
COUNTS = st.integers(min_value=0, max_value=INT64_MAX)


@given(UNITS, COUNTS)
def test_price_round_trips(u, t):
    text = u.price(t)
    assert len(text.partition(".")[2]) >= 8
    assert u.price_tick("price", text) == t


@given(UNITS, COUNTS)
def test_qty_round_trips(u, lots):
    assert u.qty_lot("quantity", u.qty(lots)) == lots
    assert u.qty_lot("quantity", u.qty(lots), market=True) == lots


@given(UNITS, COUNTS)
def test_quote_round_trips(u, minor):
    assert u.quote_minor("quoteOrderQty", u.quote_amount(minor)) == minor


@given(UNITS, st.integers(min_value=0, max_value=10 ** 10 - 1), st.text("0123456789", max_size=10))
def test_price_parse_agrees_with_decimal(u, whole, frac):
    """Parsing agrees with the config's Decimal arithmetic (Symbol.price_to_tick) and refuses
    exactly when the value has more than 8 decimals or is not a whole number of ticks."""
    s = f"{whole}.{frac}" if frac else str(whole)
    significant = len(frac.rstrip("0"))
    units = Decimal(s) / Decimal(u.symbol.tick_size)
    if significant > 8:
        assert refusal(u.price_tick, "price", s)[1] == -1111
    elif units == units.to_integral_value():
        assert u.price_tick("price", s) == u.symbol.price_to_tick("price", s) == int(units)
    else:
        assert refusal(u.price_tick, "price", s) == (400, -1013, "Filter failure: PRICE_FILTER")


@given(UNITS, st.integers(min_value=0, max_value=10 ** 10 - 1), st.text("0123456789", max_size=10))
def test_qty_parse_agrees_with_decimal(u, whole, frac):
    s = f"{whole}.{frac}" if frac else str(whole)
    significant = len(frac.rstrip("0"))
    units = Decimal(s) / Decimal(u.symbol.step_size)
    if significant > 8:
        assert refusal(u.qty_lot, "quantity", s)[1] == -1111
    elif units == units.to_integral_value():
        assert u.qty_lot("quantity", s) == u.symbol.qty_to_lot("quantity", s) == int(units)
    else:
        assert refusal(u.qty_lot, "quantity", s) == (400, -1013, "Filter failure: LOT_SIZE")


def test_no_pattern_accepts_a_trailing_newline():
    """Every Binance pattern is matched whole (a `$` alone also matches before a final newline)."""
    from ganntec.edge import auth
    from ganntec.edge.errors import BinanceError
    from ganntec.shm.records import encode_client_id

    with pytest.raises(ValueError):
        encode_client_id("newClientOrderId", "abc\n")
    for parse, raw in ((auth.timestamp_us, "1700000000000\n"), (auth.recv_window_us, "5000\n")):
        with pytest.raises(BinanceError):
            parse(raw)
