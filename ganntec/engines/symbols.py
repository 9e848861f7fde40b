"""Symbols and assets: decimal config strings in, exact integer parameters out.

Every engine reads a symbol's rules from one row of SYMBOL_DTYPE (integers only). The units:
  price_tick       price / tick_size
  qty_lot          quantity / step_size
  *_minor          an amount in the asset's smallest unit (10**-precision)
  *_e8             a rate x 1e8 (fees, percent-price multipliers)
One tick x one lot is worth exactly `quote_per_tick_lot` quote minor units and one lot is
exactly `base_per_lot` base minor units; a symbol whose sizes do not make those whole numbers
is refused. The largest notional (max price x max quantity x quote_per_tick_lot) must fit in
int64 with room for fee arithmetic, so no product inside an engine can overflow.

    SYMBOL_DTYPE (one row per symbol; symbol_id is the row index)
    offset  size  type  field
         0     4  u4    symbol_id
         4     4  u4    base_asset_id
         8     4  u4    quote_asset_id
        12     4  u4    status                 1 trading, 2 halted
        16     8  i8    min_price_tick
        24     8  i8    max_price_tick
        32     8  i8    min_qty_lot
        40     8  i8    max_qty_lot
        48     8  i8    market_min_qty_lot
        56     8  i8    market_max_qty_lot
        64     8  i8    min_notional_minor
        72     8  i8    max_notional_minor
        80     8  i8    quote_per_tick_lot
        88     8  i8    base_per_lot
        96     8  i8    max_num_orders        per account, open orders on the symbol
       104     8  i8    maker_fee_e8
       112     8  i8    taker_fee_e8
       120     8  i8    bid_multiplier_up_e8  PERCENT_PRICE_BY_SIDE
       128     8  i8    bid_multiplier_down_e8
       136     8  i8    ask_multiplier_up_e8
       144     8  i8    ask_multiplier_down_e8
       152     1  u1    default_stp           StpMode used when an order says DEFAULT
       153     1  u1    iceberg_parts         ICEBERG_PARTS: most slices an iceberg may have
       154     2  u2    min_trailing_above_bips  TRAILING_DELTA for stops that trigger on a rise
       156     2  u2    max_trailing_above_bips  (STOP_LOSS* BUY, TAKE_PROFIT* SELL); 0 = none allowed
       158     2  u2    min_trailing_below_bips  ... on a fall (STOP_LOSS* SELL, TAKE_PROFIT* BUY)
       160     2  u2    max_trailing_below_bips
       162     6  -     (reserved)
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

import numpy as np

from ganntec.shm.records import StpMode

SYMBOL_DTYPE = np.dtype(
    {
        "names": [
            "symbol_id", "base_asset_id", "quote_asset_id", "status",
            "min_price_tick", "max_price_tick", "min_qty_lot", "max_qty_lot",
            "market_min_qty_lot", "market_max_qty_lot", "min_notional_minor", "max_notional_minor",
            "quote_per_tick_lot", "base_per_lot", "max_num_orders", "maker_fee_e8", "taker_fee_e8",
            "bid_multiplier_up_e8", "bid_multiplier_down_e8", "ask_multiplier_up_e8", "ask_multiplier_down_e8",
            "default_stp", "iceberg_parts", "min_trailing_above_bips", "max_trailing_above_bips",
            "min_trailing_below_bips", "max_trailing_below_bips",
        ],
        "formats": ["<u4"] * 4 + ["<i8"] * 17 + ["u1", "u1"] + ["<u2"] * 4,
        "offsets": [0, 4, 8, 12] + [16 + 8 * i for i in range(17)] + [152, 153, 154, 156, 158, 160],
        "itemsize": 168,
    }
)

STATUS_TRADING = 1
STATUS_HALTED = 2

# Keep every notional well inside int64 so fee products (notional x rate_e8 / 1e8) can be
# computed as (notional // 1e8) * rate + ... without overflow: notional < 2**62 / 1e8 * 1e8.
MAX_NOTIONAL_MINOR = 1 << 62


def _decimal(field: str, value) -> Decimal:
    try:
        d = Decimal(str(value))
    except InvalidOperation:
        raise ValueError(f"{field}={value!r} (not a decimal number)") from None
    if not d.is_finite():
        raise ValueError(f"{field}={value!r} (not finite)")
    return d


def _whole(field: str, d: Decimal) -> int:
    if d != d.to_integral_value():
        raise ValueError(f"{field}={d} (must be a whole number of units)")
    return int(d)


@dataclass(frozen=True)
class Asset:
    asset_id: int
    name: str
    precision: int  # decimals of the minor unit: 8 means 1 minor = 0.00000001

    def __post_init__(self):
        if not (0 <= self.precision <= 18):
            raise ValueError(f"asset {self.name}: precision={self.precision} (0..18)")

    def to_minor(self, field: str, value) -> int:
        d = _decimal(field, value).scaleb(self.precision)
        if d != d.to_integral_value():
            raise ValueError(f"{field}={value} (finer than {self.name}'s {self.precision} decimals)")
        return int(d)

    def from_minor(self, minor: int) -> str:
        return format(Decimal(minor).scaleb(-self.precision), "f")


@dataclass(frozen=True)
class Symbol:
    """One symbol's rules as the config states them (decimal strings)."""

    symbol_id: int
    name: str
    base: Asset
    quote: Asset
    tick_size: str
    step_size: str
    min_price: str
    max_price: str
    min_qty: str
    max_qty: str
    min_notional: str = "0"
    max_notional: str = "0"  # 0: no cap beyond max price x max qty
    market_min_qty: str | None = None
    market_max_qty: str | None = None
    max_num_orders: int = 200
    maker_fee: str = "0.001"
    taker_fee: str = "0.001"
    bid_multiplier_up: str = "5"
    bid_multiplier_down: str = "0.2"
    ask_multiplier_up: str = "5"
    ask_multiplier_down: str = "0.2"
    default_stp: StpMode = StpMode.EXPIRE_MAKER
    iceberg_parts: int = 10
    # TRAILING_DELTA in basis points (Binance's defaults); a max of 0 allows no trailing stop
    min_trailing_above_delta: int = 10
    max_trailing_above_delta: int = 2000
    min_trailing_below_delta: int = 10
    max_trailing_below_delta: int = 2000

    # decimal <-> integer -----------------------------------------------------------------
    def price_to_tick(self, field: str, value) -> int:
        return self._units(field, value, self.tick_size, "tick size")

    def qty_to_lot(self, field: str, value) -> int:
        return self._units(field, value, self.step_size, "step size")

    def _units(self, field: str, value, unit: str, what: str) -> int:
        d = _decimal(field, value)
        n = d / Decimal(unit)
        if n != n.to_integral_value():
            raise ValueError(f"{field}={value} (not a multiple of {self.name}'s {what} {unit})")
        if n < 0:
            raise ValueError(f"{field}={value} (must not be negative)")
        return int(n)

    def tick_to_price(self, tick: int) -> str:
        return format(Decimal(tick) * Decimal(self.tick_size), "f")

    def lot_to_qty(self, lot: int) -> str:
        return format(Decimal(lot) * Decimal(self.step_size), "f")

    def row(self) -> np.ndarray:
        """This symbol as one SYMBOL_DTYPE row; raises ValueError naming the bad field."""
        tick, step = _decimal("tick_size", self.tick_size), _decimal("step_size", self.step_size)
        if tick <= 0 or step <= 0:
            raise ValueError(f"symbol {self.name}: tick_size={self.tick_size} step_size={self.step_size} (must be > 0)")
        qpl = _whole(f"symbol {self.name}: tick_size x step_size in {self.quote.name} minor units",
                     (tick * step).scaleb(self.quote.precision))
        bpl = _whole(f"symbol {self.name}: step_size in {self.base.name} minor units", step.scaleb(self.base.precision))
        if qpl < 1 or bpl < 1:
            raise ValueError(f"symbol {self.name}: sizes finer than the assets' minor units")
        r = np.zeros((), SYMBOL_DTYPE)
        r["symbol_id"], r["base_asset_id"], r["quote_asset_id"] = self.symbol_id, self.base.asset_id, self.quote.asset_id
        r["status"] = STATUS_TRADING
        r["min_price_tick"] = max(1, self.price_to_tick("min_price", self.min_price))
        r["max_price_tick"] = self.price_to_tick("max_price", self.max_price)
        r["min_qty_lot"] = max(1, self.qty_to_lot("min_qty", self.min_qty))
        r["max_qty_lot"] = self.qty_to_lot("max_qty", self.max_qty)
        r["market_min_qty_lot"] = max(1, self.qty_to_lot("market_min_qty", self.market_min_qty or self.min_qty))
        r["market_max_qty_lot"] = self.qty_to_lot("market_max_qty", self.market_max_qty or self.max_qty)
        r["min_notional_minor"] = self.quote.to_minor("min_notional", self.min_notional)
        r["quote_per_tick_lot"], r["base_per_lot"] = qpl, bpl
        r["max_num_orders"] = self.max_num_orders
        for name in ("maker_fee", "taker_fee", "bid_multiplier_up", "bid_multiplier_down",
                     "ask_multiplier_up", "ask_multiplier_down"):
            r[f"{name}_e8"] = _whole(f"{name} (8 decimals at most)", _decimal(name, getattr(self, name)).scaleb(8))
        r["default_stp"] = int(self.default_stp)
        if not 0 <= self.iceberg_parts <= 255:
            raise ValueError(f"symbol {self.name}: iceberg_parts={self.iceberg_parts} (0..255; 0 = no icebergs)")
        r["iceberg_parts"] = self.iceberg_parts
        for way in ("above", "below"):
            lo, hi = getattr(self, f"min_trailing_{way}_delta"), getattr(self, f"max_trailing_{way}_delta")
            # < 100%: a sell cannot trail to a price of 0, and delta products stay small
            if not (isinstance(lo, int) and isinstance(hi, int) and 0 <= lo <= hi <= 9999):
                raise ValueError(f"symbol {self.name}: min_trailing_{way}_delta={lo} max_trailing_{way}_delta={hi} "
                                 "(whole basis points, 0 <= min <= max <= 9999)")
            r[f"min_trailing_{way}_bips"], r[f"max_trailing_{way}_bips"] = lo, hi
        if int(r["min_price_tick"]) > int(r["max_price_tick"]) or int(r["min_qty_lot"]) > int(r["max_qty_lot"]):
            raise ValueError(f"symbol {self.name}: min above max (price or quantity)")
        top = int(r["max_price_tick"]) * max(int(r["max_qty_lot"]), int(r["market_max_qty_lot"])) * qpl
        if top >= MAX_NOTIONAL_MINOR:
            raise ValueError(f"symbol {self.name}: max_price x max_qty = {top} quote minor units (must be < 2**62)")
        cap = self.quote.to_minor("max_notional", self.max_notional)
        r["max_notional_minor"] = cap if cap > 0 else top
        return r


def own_table(symbols) -> np.ndarray:
    """An engine's own copy of a symbol table, byte for byte (numpy's `.copy()` of a structured
    array copies the fields and leaves the reserved bytes undefined; engine state must not
    differ between two engines made from the same config)."""
    src = np.ascontiguousarray(symbols, dtype=SYMBOL_DTYPE)
    out = np.zeros(len(src), SYMBOL_DTYPE)
    out.view(np.uint8)[:] = src.view(np.uint8)
    return out


def symbol_table(symbols: list[Symbol]) -> np.ndarray:
    """SYMBOL_DTYPE rows indexed by symbol_id (ids must be 0..n-1, each once)."""
    table = np.zeros(len(symbols), SYMBOL_DTYPE)
    for s in symbols:
        if not 0 <= s.symbol_id < len(symbols) or table[s.symbol_id]["quote_per_tick_lot"] != 0:
            raise ValueError(f"symbol {s.name}: symbol_id={s.symbol_id} (ids must be 0..{len(symbols) - 1}, unique)")
        # As bytes: numpy's structured assignment leaves the reserved bytes undefined, and the
        # table is state that snapshots compare byte for byte.
        table.view(np.uint8).reshape(len(symbols), -1)[s.symbol_id] = s.row().reshape(1).view(np.uint8)
    return table
