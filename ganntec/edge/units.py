"""Exact decimal strings at the edge: Binance parameters in, integer units out; integer units
in, Binance's decimal strings out. No float is ever made.

Parsing (rest-api.md "General API Information", errors.md):
  not a plain decimal ("1e3", "-1", " 1", "0x10")  -> -1100 with the legal range
  more decimals than the asset carries              -> -1111 "Parameter '%s' has too much precision."
  not a multiple of tick / step                     -> -1013 "Filter failure: PRICE_FILTER" / "LOT_SIZE"
  beyond int64                                      -> -1108 "Parameter '%s' overflowed."
Formatting: prices and quantities with at least 8 decimals ("50000.00000000"), as Binance
prints them; more only when the tick or step is finer."""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal

from ganntec.edge import errors as E
from ganntec.engines.symbols import Asset, Symbol

DECIMAL_RANGE = "^([0-9]{1,20})(\\.[0-9]{1,20})?$"  # Binance's pattern in its -1100 messages
_DECIMAL_RE = re.compile(DECIMAL_RANGE)
INT64_MAX = (1 << 63) - 1
MIN_DECIMALS = 8


def _split(param: str, raw: str) -> tuple[int, int]:
    """`raw` as (digits, decimals): "12.340" -> (12340, 3)."""
    m = _DECIMAL_RE.fullmatch(raw)
    if not m:
        raise E.illegal_chars(param, DECIMAL_RANGE)
    whole, frac = m.group(1), (m.group(2) or ".")[1:]
    return int(whole + frac), len(frac)


def parse_units(param: str, raw: str, unit_digits: int, unit_scale: int, max_decimals: int, filter_name: str) -> int:
    """The number of units of size `unit_digits` x 10**-unit_scale in `raw`, exactly.
    `max_decimals`: the precision beyond which the value is refused (-1111)."""
    digits, decimals = _split(param, raw)
    while decimals > 0 and digits % 10 == 0:  # "1.500" carries no more precision than "1.5"
        digits //= 10
        decimals -= 1
    if decimals > max_decimals:
        raise E.too_much_precision(param)
    # value = digits x 10**-decimals; units = value / (unit_digits x 10**-unit_scale)
    if decimals <= unit_scale:
        num, den = digits * 10 ** (unit_scale - decimals), unit_digits
    else:
        num, den = digits, unit_digits * 10 ** (decimals - unit_scale)
    if num % den:
        raise E.filter_failure(filter_name)
    units = num // den
    if units > INT64_MAX:
        raise E.param_overflow(param)
    return units


def _digits_scale(step: str) -> tuple[int, int]:
    t = Decimal(step).normalize().as_tuple()
    digits = int("".join(map(str, t.digits)))
    return (digits * 10 ** t.exponent, 0) if t.exponent > 0 else (digits, -t.exponent)


def format_units(units: int, unit_digits: int, unit_scale: int, decimals: int) -> str:
    """units x unit_digits x 10**-unit_scale with exactly `decimals` decimals (>= unit_scale)."""
    v = units * unit_digits * 10 ** (decimals - unit_scale)
    sign = "-" if v < 0 else ""
    s = str(abs(v)).rjust(decimals + 1, "0")
    return f"{sign}{s[:-decimals]}.{s[-decimals:]}" if decimals else f"{sign}{s}"


@dataclass(frozen=True)
class AssetUnits:
    """An asset's minor units as Binance amounts ("0.00150000")."""

    asset: Asset

    @property
    def name(self) -> str:
        return self.asset.name

    def fmt(self, minor: int) -> str:
        return format_units(minor, 1, self.asset.precision, max(MIN_DECIMALS, self.asset.precision))

    def parse(self, param: str, raw: str) -> int:
        p = self.asset.precision
        return parse_units(param, raw, 1, p, p, "NOTIONAL")


class SymbolUnits:
    """One symbol's ticks and lots as Binance decimal strings, both ways."""

    def __init__(self, symbol: Symbol):
        self.symbol = symbol
        self.name = symbol.name
        self.symbol_id = symbol.symbol_id
        self.base, self.quote = AssetUnits(symbol.base), AssetUnits(symbol.quote)
        self._tick = _digits_scale(symbol.tick_size)
        self._step = _digits_scale(symbol.step_size)
        self._price_decimals = max(MIN_DECIMALS, self._tick[1])
        self._qty_decimals = max(MIN_DECIMALS, self._step[1])

    # --- in ---------------------------------------------------------------------------------
    def price_tick(self, param: str, raw: str) -> int:
        return parse_units(param, raw, *self._tick, self.symbol.quote.precision, "PRICE_FILTER")

    def qty_lot(self, param: str, raw: str, market: bool = False) -> int:
        return parse_units(param, raw, *self._step, self.symbol.base.precision,
                           "MARKET_LOT_SIZE" if market else "LOT_SIZE")

    def quote_minor(self, param: str, raw: str) -> int:
        return self.quote.parse(param, raw)

    # --- out --------------------------------------------------------------------------------
    def price(self, tick: int) -> str:
        return format_units(tick, *self._tick, self._price_decimals)

    def qty(self, lot: int) -> str:
        return format_units(lot, *self._step, self._qty_decimals)

    def quote_amount(self, minor: int) -> str:
        return self.quote.fmt(minor)
