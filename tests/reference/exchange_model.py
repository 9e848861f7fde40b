"""Reference model of the whole exchange: the order engine (sequence, time, edge dedup, Binance
filters, client order ids, cancel-replace, OCO lists), risk (accounts, balances, holds, pre-trade
checks, fees, settlement, admin, daily loss limit) and positions, written from the module
docstrings of `ganntec/engines/{order,risk,matching,position}.py`, `ganntec/workers/driver.py` and
`ganntec/shm/records.py`, and from nothing else of the engines. The matching step is the
independent `MatchingModel` of `reference.matching_model`.

It is deliberately naive: balances, holds, prices, quantities, fees and P&L are
`decimal.Decimal` values in real units (BTC, USDT, ...), computed in a context that traps
inexact operations; the only roundings are the ones the spec names (fees floored to the
received asset's minor unit, the entry value a partial close removes truncated toward zero,
a sell by quote holding whole lots) and a trailing buy's cap price (below). Integers (ticks,
lots, minor units) appear only where records are read and written. Commands in, the records a
client is told out (the edge stream), in the order of DESIGN's loop (driver docstring): sequence
-> risk -> matching -> sequence each result -> risk settles it -> position -> edge, one command
and all its results at a time (a cancel-replace's new order, back from matching, goes round
again: sequenced, funded, matched).

Where the spec leaves room, the model takes the engine's documented behaviour or the readings
below (the differential test reports any difference):
  * A record from a source above max_edges is refused like a multi-record command: a NEW_ORDER
    becomes ORDER_REJECTED, an ORDER_LIST or EXT keeps its type (reason set), anything else
    becomes CANCEL_REJECTED carrying the int64 at offset 40 (the order id of a CANCEL / AMEND),
    all UNSUPPORTED_COMBINATION. A lone CANCEL_REPLACE / ORDER_LIST / EXT from an edge (no
    FLAG_CONTINUED) is a CANCEL_REJECTED the same way.
  * The notional filter prices a STOP_LOSS / TAKE_PROFIT (market when triggered) at its stop
    price; MARKET by quantity, and a trailing STOP_LOSS / TAKE_PROFIT without a stop price, at
    the last trade price (skipped before any trade). MARKET orders are not held to
    MAX_NUM_ORDERS (they never count as open). A negative trailing delta is
    UNSUPPORTED_COMBINATION.
  * An order rejected by the order engine never reaches risk's checks (a filter failure wins
    over, e.g., MARKET_CLOSED); risk's own rejections go to matching and come back as its echo
    (re-sequenced, FLAG_END added to the command's last record only: the refused cancel of a
    cancel-replace and a refused OCO's header and first leg keep FLAG_CONTINUED to the edge).
  * The account's max order notional is in the order's quote asset's minor units.
  * A credit or debit for an account beyond max_accounts is INVALID_AMOUNT; an unknown asset is
    checked first. The 2**62 overflow bound applies to the account's free + locked and to the
    asset's total ever credited.
  * CANCEL and CANCEL_ALL need the TRADE permission; an AMEND also an active account and a
    trading symbol (then "needs more and it is not free" refuses it, INSUFFICIENT_BALANCE).
    What an AMEND needs is the worst case while it is in flight (the order may fill as it is
    before it lands): a SELL max(leaves, new leaves), a limit BUY new price x new leaves +
    min(leaves, new leaves) x max(0, limit - new price); its hold (an OCO leg: its list's) is
    raised to that. In this order the answer comes within the amend's own command, so no other
    amend of the order is ever in flight (the engine's rule for one is not modelled) and no
    result of another command lands before it. ORDER_AMENDED and a CANCEL_REJECTED sequenced
    from matching (FLAG_RESULT) settle the order's hold; a CANCEL_REJECTED the order engine
    made settles nothing.
  * What STP takes off an order (TRADE_PREVENTED) is released at once; a killed account's open
    orders are all cancelled (CANCELED_BY_ADMIN), whether an admin or its daily loss killed it.
  * A STOP_LOSS / TAKE_PROFIT BUY holds stop x qty, its quote cap, and needs that cap (less what
    it spent) to the end: an AMEND of one locks nothing (matching refuses it, or cuts an OCO
    leg's cap with its quantity: below). A trailing one caps at min(max price, ref x (1 + delta
    / 1e4)) with that price rounded down to a whole tick, ref its stop price, else the price of
    the last fill risk settled on the symbol, else (no trade yet) all free quote, as MARKET.
  * Cancel-replace: trip 1 checks the new order's filters only (its client order id waits for
    trip 2), MAX_NUM_ORDERS counting the replaced order as gone under STOP_ON_FAILURE whatever
    the target; a failure there makes the cancel CANCEL_REJECTED (NOT_ATTEMPTED, flags 0, the
    order id as sent: 0 when named by origClientOrderId) and the leg its ORDER_REJECTED. Its
    trip-2 NEW_ORDER is an ordinary new order (not filtered again; DUPLICATE_ORDER if its client
    id is taken then).
  * OCO: the order engine checks the shape (header + two NEW_ORDER legs, same account, symbol,
    side and quantity, leg types by side, list type OCO), then each leg's filters (above first;
    the below leg counting the above one for MAX_NUM_ORDERS), then the price relationship,
    then the legs' client order ids (free, different), then the listClientOrderId. Risk checks
    each leg as a new order that comes with one more (TOO_MANY_OPEN_ORDERS counts both), then
    funds: max of the legs' needs, each computed from the same free balance (a leg needing 0
    refuses the list). While both legs work they share that one hold: it is what the hungrier
    leg needs, also after STP takes quantity off a leg. An AMEND of a leg is Binance's keep-
    priority amend, a quantity cut applied to both legs by matching (a new price or a quantity
    not below the total is refused); risk locks first what the amend would need beyond what the
    list holds (as for any order, the in-flight worst case above; a market-like buy nothing) or
    refuses it (INSUFFICIENT_BALANCE). Each leg's ORDER_AMENDED cuts that leg's
    quantity and leaves by the same amount (what STP took stays taken) and a market-like buy's
    cap to (cap // old lots) x new lots in quote minor units; after it, and after a leg's
    CANCEL_REJECTED, the list keeps what its hungrier leg needs. A leg that activates (its first
    fill, its ORDER_TRIGGERED) takes the whole hold and keeps what it needs (a market-like buy:
    its own cap); a leg that ends while the other works leaves its share to the other, which
    matching ends right after.
  * The daily P&L applies a fill's buyer first, then its seller; the position rows apply the
    taker first, then the maker (different only for a self-trade that closes part of a position).
  * BALANCE records: one per (account, asset) a record changed, with the header of that record;
    for a FILL these are the buyer's and the seller's base and quote and the fee account's asset
    of each nonzero fee. A daily-loss KILL_ACCOUNT follows the FILL that tripped it, before that
    fill's BALANCEs. An OCO leg's activation by a fill releases (BALANCE) right after the FILL,
    the buyer's side before the seller's, each before its own payment; by a trigger, right after
    the ORDER_TRIGGERED. An accepted OCO's BALANCE carries the ORDER_LIST's header.
Not modelled (the differential sends none): AMEND + EXT (an amend's new client order id), and a
FLAG_CONTINUED chain of more than four records (the spec makes it one refused command; the order
engine takes at most four records as one command).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from decimal import ROUND_FLOOR, Context, Decimal, DivisionByZero, Inexact, InvalidOperation, Overflow, localcontext

import numpy as np

from ganntec.engines.symbols import Asset, Symbol
from ganntec.shm import records
from ganntec.shm.records import (
    FLAG_CONTINUED,
    FLAG_DEFERRED,
    FLAG_END,
    FLAG_MAKER_DONE,
    FLAG_QTY_CAP,
    FLAG_TAKER_DONE,
    HEADER_FIELDS,
    RECORD_DTYPE,
    ListType,
    OrderStatus,
    OrderType,
    Permission,
    Reason,
    RecordType,
    ReplaceMode,
    Side,
    StpMode,
    TimeInForce,
)
from reference.matching_model import MatchingModel

_EXACT = Context(prec=80, traps=[Inexact, InvalidOperation, DivisionByZero, Overflow])
_ROUNDING = Context(prec=80)  # for the spec's roundings only
_ZERO = Decimal(0)
MAX_BALANCE_MINOR = 1 << 62  # risk: balances (and credited totals) stay within this
DAY_NS = 86_400_000_000_000

_MARKET_LIKE = (OrderType.MARKET, OrderType.STOP_LOSS, OrderType.TAKE_PROFIT)
_STOPS = (OrderType.STOP_LOSS, OrderType.STOP_LOSS_LIMIT, OrderType.TAKE_PROFIT, OrderType.TAKE_PROFIT_LIMIT)
_STOP_LOSSES = (OrderType.STOP_LOSS, OrderType.STOP_LOSS_LIMIT)
# OCO legs: the take-profit kind (above a SELL's last price, below a BUY's) and the stop-loss kind
_PROFIT_LEGS = (OrderType.LIMIT_MAKER, OrderType.TAKE_PROFIT, OrderType.TAKE_PROFIT_LIMIT)
_ADMIN = range(int(RecordType.CREDIT), int(RecordType.ORDER_ACCEPTED))
_HEADER = [name for name, _ in HEADER_FIELDS]

NEVER_OPENED, ACTIVE, KILLED = "never opened", "active", "killed"


def _units(minor: int, asset: Asset) -> Decimal:
    return Decimal(int(minor)).scaleb(-asset.precision)


def _minor(amount: Decimal, asset: Asset) -> int:
    minor = amount.scaleb(asset.precision)
    if minor != minor.to_integral_value():
        raise ArithmeticError(f"{amount} {asset.name} is finer than its minor unit")
    return int(minor)


def _floor_minor(amount: Decimal, asset: Asset) -> Decimal:
    return amount.quantize(Decimal(1).scaleb(-asset.precision), rounding=ROUND_FLOOR, context=_ROUNDING)


def _rate_e8(e8: int) -> Decimal:
    return Decimal(int(e8)).scaleb(-8)


def _floor_to(amount: Decimal, unit: Decimal) -> Decimal:
    """The largest whole multiple of `unit` at or below `amount`."""
    return (amount / unit).to_integral_value(rounding=ROUND_FLOOR, context=_ROUNDING) * unit


@dataclass(frozen=True)
class _Rules:
    """One symbol's rules in real units."""

    base: Asset
    quote: Asset
    tick: Decimal
    step: Decimal
    min_price: Decimal
    max_price: Decimal
    min_qty: Decimal
    max_qty: Decimal
    market_min_qty: Decimal
    market_max_qty: Decimal
    min_notional: Decimal
    max_notional: Decimal
    max_num_orders: int
    maker_fee: Decimal
    taker_fee: Decimal
    bands: dict  # Side -> (down, up) multipliers of PERCENT_PRICE_BY_SIDE
    iceberg_parts: int
    trailing: dict  # rises (a stop that triggers on a rise) -> (min, max) TRAILING_DELTA in bips

    @classmethod
    def of(cls, s: Symbol) -> _Rules:
        max_price, max_qty = Decimal(s.max_price), Decimal(s.max_qty)
        return cls(
            base=s.base, quote=s.quote, tick=Decimal(s.tick_size), step=Decimal(s.step_size),
            min_price=Decimal(s.min_price), max_price=max_price, min_qty=Decimal(s.min_qty), max_qty=max_qty,
            market_min_qty=Decimal(s.market_min_qty or s.min_qty),
            market_max_qty=Decimal(s.market_max_qty or s.max_qty),
            min_notional=Decimal(s.min_notional),
            # "0: no cap beyond max price x max qty"
            max_notional=Decimal(s.max_notional) if Decimal(s.max_notional) > 0 else max_price * max_qty,
            max_num_orders=s.max_num_orders, maker_fee=Decimal(s.maker_fee), taker_fee=Decimal(s.taker_fee),
            bands={Side.BUY: (Decimal(s.bid_multiplier_down), Decimal(s.bid_multiplier_up)),
                   Side.SELL: (Decimal(s.ask_multiplier_down), Decimal(s.ask_multiplier_up))},
            iceberg_parts=s.iceberg_parts,
            trailing={True: (s.min_trailing_above_delta, s.max_trailing_above_delta),
                      False: (s.min_trailing_below_delta, s.max_trailing_below_delta)},
        )

    def price(self, tick: int) -> Decimal:
        return Decimal(int(tick)) * self.tick

    def qty(self, lots: int) -> Decimal:
        return Decimal(int(lots)) * self.step

    def lots(self, qty: Decimal) -> int:
        n = qty / self.step
        assert n == n.to_integral_value(), qty
        return int(n)

    def ticks(self, price: Decimal) -> int:
        n = price / self.tick
        assert n == n.to_integral_value(), price
        return int(n)


# --- records ----------------------------------------------------------------------------------
def _make(rtype: RecordType, like: np.ndarray, **fields) -> np.ndarray:
    """A record of `rtype` with the header of the record `like`, then `fields` set."""
    rec = records.empty(rtype)
    src = records.as_records(like)
    for name in _HEADER:
        rec[name] = src[name]
    rec["type"] = int(rtype)
    for name, value in fields.items():
        rec[name] = value
    return rec.view(RECORD_DTYPE)


def _clone(rec: np.ndarray, **fields) -> np.ndarray:
    """A byte copy of a record, then `fields` (of its own type) set."""
    out = records.concat([rec])
    typed = out.view(records.dtype_of(int(out["type"][0])))
    for name, value in fields.items():
        typed[name] = value
    return out


def _rejected(new: np.ndarray, reason: Reason) -> np.ndarray:
    """The ORDER_REJECTED of a stamped NEW_ORDER: its header, order id = its seq, its fields."""
    n = records.view(new)
    return _make(RecordType.ORDER_REJECTED, new, reason=int(reason), order_id=int(n["seq"]),
                 price_tick=int(n["price_tick"]), qty_lot=int(n["qty_lot"]), stop_price_tick=int(n["stop_price_tick"]),
                 client_order_id=bytes(n["client_order_id"]), side=int(n["side"]), order_type=int(n["order_type"]),
                 time_in_force=int(n["time_in_force"]), status=int(OrderStatus.REJECTED))


def _refused(cmd: np.ndarray, reason: Reason) -> np.ndarray:
    """CANCEL_REJECTED for a command the order engine refuses: the target order id (offset 40 of
    CANCEL and AMEND) stays, the rest of the payload is empty."""
    target = int(records.as_records(cmd).view(np.uint8)[40:48].view(np.int64)[0])
    return _make(RecordType.CANCEL_REJECTED, cmd, flags=FLAG_END, reason=int(reason), order_id=target)


# --- state ------------------------------------------------------------------------------------
@dataclass
class _Account:
    status: str = NEVER_OPENED
    permissions: int = 0
    max_open_orders: int = 0  # account-wide; 0 = none
    open_orders: int = 0  # orders risk holds funds for, MARKET excluded
    maker_fee: Decimal | None = None  # None: the symbol's
    taker_fee: Decimal | None = None
    max_order_notional_minor: int = 0  # 0 = none
    daily_loss_limit: Decimal = _ZERO  # in the loss asset; 0 = none
    day: int = 0
    day_pnl: Decimal = _ZERO


@dataclass
class _Hold:
    """What risk locked for one order, and what it knows of the order."""

    account: int
    symbol: int
    asset: Asset
    side: int
    order_type: int
    held: Decimal
    limit: Decimal | None  # limit price of a limit-priced order
    stop: Decimal
    qty: Decimal  # total quantity (the cap of a sell by quote)
    leaves: Decimal
    cap_left: Decimal | None  # a market-like buy: the quote it may still spend
    link: int = 0  # an OCO leg: the other leg's order id while both work (the two share `held`)

    def need(self) -> Decimal:
        """What the order still needs locked."""
        if self.side == Side.SELL:
            return self.leaves
        return self.limit * self.leaves if self.limit is not None else self.cap_left


@dataclass
class _Position:
    """Net position (signed base), entry value (signed quote), realized P&L, fees, volume."""

    net: Decimal = _ZERO
    entry: Decimal = _ZERO
    realized: Decimal = _ZERO
    fees_base: Decimal = _ZERO
    fees_quote: Decimal = _ZERO
    volume: Decimal = _ZERO
    last: Decimal = _ZERO

    def trade(self, buy: bool, qty: Decimal, price: Decimal, fee: Decimal, fee_in_base: bool, quote: Asset) -> Decimal:
        """One side of a fill; returns the P&L it realized."""
        value = qty * price
        self.volume += qty
        if fee_in_base:
            self.fees_base += fee
        else:
            self.fees_quote += fee
        self.last = price
        if self.net == 0 or (self.net > 0) == buy:
            self.net += qty if buy else -qty
            self.entry += value if buy else -value
            return _ZERO
        size = abs(self.net)
        closed = min(qty, size)
        # entry x closed / size, rounded toward zero to the quote's minor unit (Decimal's // truncates)
        removed = ((self.entry * closed).scaleb(quote.precision) // size).scaleb(-quote.precision)
        closed_value = closed * price
        realized = (closed_value if self.net > 0 else -closed_value) - removed
        self.realized += realized
        self.entry -= removed
        if qty > size:  # flipped: the rest opens the other way at this price
            self.entry = (value - closed_value) if buy else -(value - closed_value)
        self.net += qty if buy else -qty
        return realized


class _Sequencer:
    """The order engine: one total order, stamps, edge dedup, filters, client order ids."""

    def __init__(self, rules: dict[int, _Rules], max_edges: int):
        self.rules, self.max_edges = rules, max_edges
        self.seq, self.ts = 0, 0
        self.edge_seq: Counter = Counter()  # source -> last source_seq taken
        self.last: dict[int, Decimal] = {}  # symbol -> last trade price
        self.open: Counter = Counter()  # (account, symbol) -> open orders (MARKET excluded)
        self.cids: dict[tuple[int, bytes], int] = {}  # (account, client id) of open orders -> order id
        self.cid_of: dict[int, tuple[int, bytes]] = {}
        self.lists: dict[tuple[int, bytes], int] = {}  # (account, listClientOrderId) of open lists -> list id
        self.list_of: dict[int, int] = {}  # a working leg of such a list -> the list's id
        self.list_legs: dict[int, set[int]] = {}  # list id -> its legs not yet ended
        self.list_key: dict[int, tuple[int, bytes]] = {}

    def _stamp(self, rec: np.ndarray) -> np.ndarray:
        """A copy with the next sequence number and max(time so far, its own ts_ns)."""
        self.seq += 1
        self.ts = max(self.ts, int(rec["ts_ns"][0]))
        out = records.concat([rec])  # (any type, even one that does not exist: header only)
        out["seq"], out["ts_ns"] = self.seq, self.ts
        return out

    def command(self, cmd: np.ndarray) -> list[np.ndarray] | None:
        """The sequenced records of one command (or what they became), None for a dropped
        duplicate. A command is a record and those after it while the previous one has
        FLAG_CONTINUED; every record gets its own seq."""
        recs = records.as_records(cmd)
        h = recs[0]  # the header: the type may be one that does not exist
        source, rtype = int(h["source"]), int(h["type"])
        if source > self.max_edges:  # no dedup slot: a retry could apply twice
            return self._refuse_all([self._stamp(recs[j : j + 1]) for j in range(len(recs))],
                                    Reason.UNSUPPORTED_COMBINATION)
        if source > 0 or int(h["source_seq"]) > 0:  # the edge sequence of a command's first record
            # deduplicates it (admin commands only when numbered)
            if int(h["source_seq"]) <= self.edge_seq[source]:
                return None
            self.edge_seq[source] = int(h["source_seq"])
        out = [self._stamp(recs[j : j + 1]) for j in range(len(recs))]
        if len(out) > 1:
            return self._multi(out)
        rec = out[0]
        if rtype in _ADMIN:
            return [rec]
        if rtype not in (RecordType.NEW_ORDER, RecordType.CANCEL, RecordType.CANCEL_ALL, RecordType.AMEND):
            return [_refused(rec, Reason.UNSUPPORTED_COMBINATION)]
        c = records.view(rec)
        account = int(c["account_id"])
        if rtype == RecordType.NEW_ORDER:
            reason = self._validate(c)
            cid = bytes(c["client_order_id"])
            if reason == Reason.NONE and cid:
                if (account, cid) in self.cids:
                    reason = Reason.DUPLICATE_ORDER
                else:
                    self._take_id(account, cid, self.seq)
            return [rec if reason == Reason.NONE else _clone(_rejected(rec, reason), flags=FLAG_END)]
        if int(c["symbol_id"]) not in self.rules:
            return [_refused(rec, Reason.UNKNOWN_SYMBOL)]
        if rtype != RecordType.CANCEL_ALL and int(c["order_id"]) == 0:  # by origClientOrderId
            order_id = self.cids.get((account, bytes(c["orig_client_order_id"])))
            if order_id is None:
                return [_refused(rec, Reason.UNKNOWN_ORDER)]
            return [_clone(rec, order_id=order_id)]
        return [rec]

    def _take_id(self, account: int, cid: bytes, order_id: int) -> None:
        self.cids[(account, cid)] = order_id
        self.cid_of[order_id] = (account, cid)

    @staticmethod
    def _refuse_all(out: list[np.ndarray], reason: Reason) -> list[np.ndarray]:
        """Every record of a refused command becomes its rejection (a list header or an EXT
        keeps its type, the reason set); FLAG_END on the last."""
        done = []
        for j, rec in enumerate(out):
            rtype = int(rec["type"][0])
            if rtype == RecordType.NEW_ORDER:
                rec = _rejected(rec, reason)
            elif rtype in (RecordType.ORDER_LIST, RecordType.EXT):
                rec = _clone(rec, reason=int(reason))
            else:
                rec = _refused(rec, reason)
            done.append(_clone(rec, flags=FLAG_END if j == len(out) - 1 else 0))
        return done

    def _multi(self, out: list[np.ndarray]) -> list[np.ndarray]:
        """A command of several records: CANCEL_REPLACE + NEW_ORDER, or ORDER_LIST + two legs."""
        rtype, n = int(out[0]["type"][0]), len(out)
        if not ((rtype == RecordType.CANCEL_REPLACE and n == 2) or (rtype == RecordType.ORDER_LIST and n == 3)
                or (rtype == RecordType.AMEND and n == 2)):
            return self._refuse_all(out, Reason.UNSUPPORTED_COMBINATION)
        if int(out[0]["symbol_id"][0]) not in self.rules:
            return self._refuse_all(out, Reason.UNKNOWN_SYMBOL)
        if rtype == RecordType.CANCEL_REPLACE:
            return self._cancel_replace(*out)
        if rtype == RecordType.ORDER_LIST:
            return self._order_list(*out)
        raise NotImplementedError("AMEND + EXT (a new client order id) is not modelled")

    def _cancel_replace(self, head: np.ndarray, leg: np.ndarray) -> list[np.ndarray]:
        """Trip 1: the new order's filters first (a failure: nothing is attempted), then the
        cancel goes on with its leg deferred; the leg comes back as a result (`result`)."""
        h, n = records.view(head), records.view(leg)
        account, mode = int(h["account_id"]), int(h["replace_mode"])
        if (int(n["type"]) != RecordType.NEW_ORDER or int(n["account_id"]) != account
                or int(n["symbol_id"]) != int(h["symbol_id"]) or mode not in set(ReplaceMode)):
            return self._refuse_all([head, leg], Reason.UNSUPPORTED_COMBINATION)
        # STOP_ON_FAILURE: the order being replaced counts as gone for MAX_NUM_ORDERS
        reason = self._validate(n, -1 if mode == ReplaceMode.STOP_ON_FAILURE else 0)
        if reason != Reason.NONE:
            return [_clone(_refused(head, Reason.NOT_ATTEMPTED), flags=0),
                    _clone(_rejected(leg, reason), flags=FLAG_END)]
        if int(h["order_id"]) == 0:  # by origClientOrderId; unknown: matching reports the failed cancel
            order_id = self.cids.get((account, bytes(h["orig_client_order_id"])))
            if order_id is not None:
                head = _clone(head, order_id=order_id)
        return [head, _clone(leg, flags=FLAG_DEFERRED)]

    def _order_list(self, head: np.ndarray, above: np.ndarray, below: np.ndarray) -> list[np.ndarray]:
        reason = self._oco_reason(head, above, below)
        if reason != Reason.NONE:
            return [_clone(head, reason=int(reason), flags=0), _clone(_rejected(above, reason), flags=0),
                    _clone(_rejected(below, reason), flags=FLAG_END)]
        account, list_id = int(head["account_id"][0]), int(head["seq"][0])
        legs = [int(leg["seq"][0]) for leg in (above, below)]
        for leg, order_id in zip((above, below), legs):
            cid = bytes(records.view(leg)["client_order_id"])
            if cid:
                self._take_id(account, cid, order_id)
        list_cid = bytes(records.view(head)["list_client_order_id"])
        if list_cid:
            self.lists[(account, list_cid)] = list_id
            self.list_key[list_id] = (account, list_cid)
            self.list_legs[list_id] = set(legs)
            for order_id in legs:
                self.list_of[order_id] = list_id
        return [head, above, below]

    def _oco_reason(self, head: np.ndarray, above: np.ndarray, below: np.ndarray) -> Reason:
        """Shape, each leg's filters (MAX_NUM_ORDERS counting both), the price relationship,
        then client order ids: the first failure."""
        combo = Reason.UNSUPPORTED_COMBINATION
        h = records.view(head)
        account, symbol = int(h["account_id"]), int(h["symbol_id"])
        for leg in (above, below):
            if (int(leg["type"][0]) != RecordType.NEW_ORDER or int(leg["account_id"][0]) != account
                    or int(leg["symbol_id"][0]) != symbol):
                return combo
        a, b = records.view(above), records.view(below)
        if (int(h["list_type"]) != ListType.OCO or int(a["side"]) != int(b["side"])
                or int(a["qty_lot"]) != int(b["qty_lot"])):
            return combo
        # a SELL: take profit above, stop loss below; a BUY the other way round
        profit, loss = (a, b) if int(a["side"]) == Side.SELL else (b, a)
        if int(profit["order_type"]) not in _PROFIT_LEGS or int(loss["order_type"]) not in _STOP_LOSSES:
            return combo
        reason = self._validate(a)
        if reason == Reason.NONE:
            reason = self._validate(b, 1)  # room for both legs
        if reason != Reason.NONE:
            return reason
        r = self.rules[symbol]

        def placed_at(leg) -> Decimal | None:
            """A leg's price in the relationship: the limit of LIMIT_MAKER / TAKE_PROFIT_LIMIT,
            else the stop price (none for a trailing leg without one)."""
            if int(leg["order_type"]) in (OrderType.LIMIT_MAKER, OrderType.TAKE_PROFIT_LIMIT):
                return r.price(leg["price_tick"])
            return r.price(leg["stop_price_tick"]) if int(leg["stop_price_tick"]) else None

        hi, lo, last = placed_at(a), placed_at(b), self.last.get(symbol)
        if ((hi is not None and lo is not None and hi <= lo)
                or (last is not None and ((hi is not None and hi <= last) or (lo is not None and lo >= last)))):
            return Reason.ORDER_LIST_INVALID
        ca, cb = bytes(a["client_order_id"]), bytes(b["client_order_id"])
        if any(cid and (account, cid) in self.cids for cid in (ca, cb)) or (ca and ca == cb):
            return Reason.DUPLICATE_ORDER
        list_cid = bytes(h["list_client_order_id"])
        if list_cid and (account, list_cid) in self.lists:
            return Reason.DUPLICATE_ORDER  # the id of a list still open
        return Reason.NONE

    def _validate(self, n, extra: int = 0) -> Reason:
        """NEW_ORDER filters in the spec's order; the first failure wins. `extra`: open orders
        to count beyond the account's (an OCO's other leg: 1; the order a cancel-replace
        replaces under STOP_ON_FAILURE: -1)."""
        r = self.rules.get(int(n["symbol_id"]))
        if r is None:
            return Reason.UNKNOWN_SYMBOL
        side, otype, tif, stp = int(n["side"]), int(n["order_type"]), int(n["time_in_force"]), int(n["stp_mode"])
        price_t, qty_l, quote_m = int(n["price_tick"]), int(n["qty_lot"]), int(n["quote_qty_minor"])
        stop_t, ice_l, trail = int(n["stop_price_tick"]), int(n["iceberg_qty_lot"]), int(n["trailing_delta_bips"])
        combo = Reason.UNSUPPORTED_COMBINATION
        if side not in (Side.BUY, Side.SELL) or otype not in set(OrderType) or stp not in set(StpMode):
            return combo
        if (trail != 0 and otype not in _STOPS) or trail < 0 or ice_l < 0:
            return combo
        if ice_l > 0 and not (otype == OrderType.LIMIT_MAKER or (otype == OrderType.LIMIT and tif == TimeInForce.GTC)):
            return combo
        market_like = otype in _MARKET_LIKE
        if market_like:
            if price_t != 0 or (otype != OrderType.MARKET and quote_m != 0) or qty_l < 0 or quote_m < 0:
                return combo
            if (qty_l > 0) == (quote_m > 0):  # exactly one of quantity and quote
                return combo
        else:
            if price_t <= 0 or qty_l <= 0 or quote_m != 0:
                return combo
            allowed = (0, TimeInForce.GTC) if otype == OrderType.LIMIT_MAKER else tuple(TimeInForce)
            if tif not in allowed:
                return combo
        # a stop type needs a stop price or a trailing delta (or both); no other type has either
        if stop_t < 0 or (otype in _STOPS) != (stop_t > 0 or trail > 0):
            return combo
        price, qty, stop, ice = r.price(price_t), r.qty(qty_l), r.price(stop_t), r.qty(ice_l)
        if not market_like and not r.min_price <= price <= r.max_price:
            return Reason.FILTER_PRICE
        if stop_t > 0 and not r.min_price <= stop <= r.max_price:
            return Reason.FILTER_PRICE
        if trail > 0:
            # "above" for the stops that trigger on a rise: STOP_LOSS* BUY, TAKE_PROFIT* SELL
            rises = (side == Side.BUY) == (otype in _STOP_LOSSES)
            low, high = r.trailing[rises]
            if not low <= trail <= high:
                return Reason.FILTER_TRAILING_DELTA
        if ice_l > 0:
            whole, part = divmod(qty, ice)
            if not r.min_qty <= ice < qty or whole + (1 if part else 0) > r.iceberg_parts:
                return Reason.FILTER_ICEBERG_PARTS
        if qty_l > 0:
            if market_like and not r.market_min_qty <= qty <= r.market_max_qty:
                return Reason.FILTER_MARKET_LOT_SIZE
            if not market_like and not r.min_qty <= qty <= r.max_qty:
                return Reason.FILTER_LOT_SIZE
        last = self.last.get(int(n["symbol_id"]))
        reference = price if not market_like else (stop if stop_t > 0 else last)
        notional = _units(quote_m, r.quote) if quote_m > 0 else (None if reference is None else reference * qty)
        if notional is not None:
            if notional < r.min_notional:
                return Reason.FILTER_MIN_NOTIONAL
            if notional > r.max_notional:
                return Reason.FILTER_NOTIONAL
        if not market_like and last is not None:
            down, up = r.bands[side]
            if not last * down <= price <= last * up:
                return Reason.FILTER_PERCENT_PRICE_BY_SIDE
        if (otype != OrderType.MARKET
                and self.open[(int(n["account_id"]), int(n["symbol_id"]))] + extra >= r.max_num_orders):
            return Reason.FILTER_MAX_NUM_ORDERS
        return Reason.NONE

    def result(self, res: np.ndarray) -> np.ndarray:
        """Sequence a result from matching and learn from it: last price, open orders, ids."""
        rec = self._stamp(res)
        rec["flags"] |= records.FLAG_RESULT
        v = records.view(rec)
        rtype, flags = int(v["type"]), int(v["flags"])
        account, symbol = int(v["account_id"]), int(v["symbol_id"])
        if rtype == RecordType.NEW_ORDER:
            # a cancel-replace's new order, back from its cancel: an order from this seq on, whose
            # client order id is checked now (the cancelled order's is free again)
            cid = bytes(v["client_order_id"])
            if cid:
                if (account, cid) in self.cids:
                    return _clone(_rejected(rec, Reason.DUPLICATE_ORDER), flags=FLAG_END | records.FLAG_RESULT)
                self._take_id(account, cid, self.seq)
            return rec
        if rtype == RecordType.FILL:
            self.last[symbol] = self.rules[symbol].price(v["price_tick"])
            if flags & FLAG_MAKER_DONE:
                self.open[(int(v["maker_account_id"]), symbol)] -= 1
                self._end(int(v["maker_order_id"]))
            if flags & FLAG_TAKER_DONE:
                if int(v["taker_order_type"]) != OrderType.MARKET:
                    self.open[(account, symbol)] -= 1
                self._end(int(v["taker_order_id"]))
        elif rtype == RecordType.ORDER_ACCEPTED and int(v["order_type"]) != OrderType.MARKET:
            self.open[(account, symbol)] += 1
        elif rtype in (RecordType.ORDER_EXPIRED, RecordType.ORDER_CANCELED, RecordType.ORDER_REJECTED):
            if rtype != RecordType.ORDER_REJECTED and int(v["order_type"]) != OrderType.MARKET:
                self.open[(account, symbol)] -= 1
            self._end(int(v["order_id"]))
        return rec

    def _end(self, order_id: int) -> None:
        """An order ended: its client order id is free again, and so is its list's
        listClientOrderId once both legs have ended."""
        key = self.cid_of.pop(order_id, None)
        if key is not None:
            del self.cids[key]
        list_id = self.list_of.pop(order_id, None)
        if list_id is not None:
            self.list_legs[list_id].discard(order_id)
            if not self.list_legs[list_id]:
                del self.list_legs[list_id]
                del self.lists[self.list_key.pop(list_id)]


class ExchangeModel:
    """Same commands in, same client stream out as `ganntec.exchange.Exchange.submit`."""

    def __init__(self, symbols: list[Symbol], max_accounts: int = 1024, max_orders: int = 1 << 16,
                 max_levels: int = 4096, fee_account: int = 0, loss_asset: int | None = None, max_edges: int = 64):
        self.rules = {s.symbol_id: _Rules.of(s) for s in symbols}
        assets = {a.asset_id: a for s in symbols for a in (s.base, s.quote)}
        self.assets = [assets[i] for i in sorted(assets)]
        self.max_accounts, self.fee_account = max_accounts, fee_account
        self.loss_asset = None if loss_asset is None else self.assets[loss_asset]
        self.sequencer = _Sequencer(self.rules, max_edges)
        self.matching = MatchingModel(symbols, max_orders=max_orders, max_levels=max_levels)
        self.accounts = [_Account() for _ in range(max_accounts)]
        self.free = {(a, s.asset_id): _ZERO for a in range(max_accounts) for s in self.assets}
        self.locked = dict(self.free)
        self.credited = Counter()  # asset id -> minor units ever credited
        self.halted: set[int] = set()
        self.holds: dict[int, _Hold] = {}  # by order id
        self.risk_last: dict[int, Decimal] = {}  # symbol -> risk's last trade price (a trailing buy's cap)
        self.daily: dict[tuple[int, int], _Position] = {}  # risk's own rows for the daily P&L
        self.positions: dict[tuple[int, int], _Position] = {}  # the position engine's rows
        self.new_orders: list[tuple[int, int, int, bytes]] = []  # (order id, account, symbol, client id)

    # --- queries ------------------------------------------------------------------------------
    def balances(self) -> np.ndarray:
        """int64 (accounts, assets, 2): free and locked in minor units, like `Exchange.balances`."""
        out = np.zeros((self.max_accounts, len(self.assets), 2), np.int64)
        for (account, asset_id), free in self.free.items():
            asset = self.assets[asset_id]
            out[account, asset_id] = _minor(free, asset), _minor(self.locked[(account, asset_id)], asset)
        return out

    def position_rows(self) -> dict[tuple[int, int], tuple[int, ...]]:
        """(account, symbol) -> (net lots, entry value, realized P&L, base fees, quote fees, volume
        lots, last price tick), integers as in POSITION_DTYPE."""
        out = {}
        for (account, symbol), p in self.positions.items():
            r = self.rules[symbol]
            out[(account, symbol)] = (r.lots(p.net), _minor(p.entry, r.quote), _minor(p.realized, r.quote),
                                      _minor(p.fees_base, r.base), _minor(p.fees_quote, r.quote), r.lots(p.volume),
                                      r.ticks(p.last))
        return out

    def free_of(self, account: int, asset_id: int) -> int:
        return _minor(self.free[(account, asset_id)], self.assets[asset_id])

    # --- the loop -----------------------------------------------------------------------------
    def submit(self, commands) -> np.ndarray:
        """Every command through the exchange, one at a time; the records clients are told."""
        cmds = records.as_records(commands)
        edge: list[np.ndarray] = []
        with localcontext(_EXACT):
            i = 0
            while i < len(cmds):
                n = 1  # a command: a record and those after it while the one before has FLAG_CONTINUED
                while i + n < len(cmds) and int(cmds[i + n - 1]["flags"]) & FLAG_CONTINUED:
                    n += 1
                out = self.sequencer.command(cmds[i : i + n])
                cmd, i = cmds[i : i + n], i + n
                if out is None:
                    continue
                head = int(cmd[0]["type"])
                for k in range(n):  # the orders it sent: a NEW_ORDER, an OCO's legs
                    if int(cmd[k]["type"]) == RecordType.NEW_ORDER and head in (RecordType.NEW_ORDER,
                                                                                  RecordType.ORDER_LIST):
                        self._sent(out[k], cmd[k : k + 1])
                start = len(edge)
                to_matching = self._risk_command(out, edge)
                while to_matching:  # risk also sends matching what it makes of results (a kill, a replace's order)
                    results = self.matching.process(to_matching.pop(0))
                    for k in range(len(results)):
                        rec = self.sequencer.result(results[k : k + 1])
                        if int(results[k]["type"]) == RecordType.NEW_ORDER:  # a cancel-replace's new order
                            self._sent(rec, results[k : k + 1])
                        to_matching += self._risk(rec, edge)
                self._position(edge[start:])
        return records.concat(edge)

    def _sent(self, rec: np.ndarray, new: np.ndarray) -> None:
        n = records.view(new)
        self.new_orders.append((int(rec["seq"][0]), int(n["account_id"]), int(n["symbol_id"]),
                                bytes(n["client_order_id"])))

    # --- risk ---------------------------------------------------------------------------------
    def _risk_command(self, out: list[np.ndarray], edge: list) -> list[np.ndarray]:
        """Risk on a sequenced command; a cancel-replace and an OCO are taken whole. Returns the
        batches for matching."""
        head = out[0]
        rtype, flags = int(head["type"][0]), int(head["flags"][0])
        if rtype == RecordType.CANCEL_REPLACE and flags & FLAG_CONTINUED:
            return self._replace(*out)
        if rtype == RecordType.ORDER_LIST and int(head["reason"][0]) == 0:
            return self._order_list(*out, edge)
        batches = []
        for rec in out:
            batches += self._risk(rec, edge)
        return batches

    def _risk(self, rec: np.ndarray, edge: list) -> list[np.ndarray]:
        """Apply one sequenced record; returns what goes on to matching, appends what goes to the edge."""
        rtype = int(rec["type"][0])
        if rtype == RecordType.NEW_ORDER:
            return [self._new_order(rec, edge)]
        if rtype in (RecordType.CANCEL, RecordType.CANCEL_ALL):
            if self._may_not_trade(int(rec["account_id"][0])):
                return [_make(RecordType.CANCEL_REJECTED, rec, reason=int(Reason.NO_TRADE_PERMISSION),
                              order_id=int(records.view(rec)["order_id"]) if rtype == RecordType.CANCEL else 0)]
            return [rec]
        if rtype == RecordType.AMEND:
            return [self._amend(rec, edge)]
        if rtype == RecordType.FILL:
            return self._fill(rec, edge)
        elif rtype in (RecordType.CREDIT, RecordType.DEBIT):
            self._transfer(rec, edge)
        elif rtype in (RecordType.ACCOUNT_OPEN, RecordType.ACCOUNT_LIMITS, RecordType.KILL_ACCOUNT,
                       RecordType.UNKILL_ACCOUNT):
            return self._account_admin(rec, edge)
        elif rtype in (RecordType.HALT_SYMBOL, RecordType.RESUME_SYMBOL):
            symbol = int(rec["symbol_id"][0])
            if symbol not in self.rules:
                edge.append(_clone(rec, reason=int(Reason.UNKNOWN_SYMBOL)))
                return []
            (self.halted.add if rtype == RecordType.HALT_SYMBOL else self.halted.discard)(symbol)
            edge.append(rec)
        else:  # results (and key records, refused lists) go on to the edge
            edge.append(rec)
            is_event = records.PAYLOAD_OF[RecordType(rtype)] == "ORDER_EVENT"
            order_id = int(records.view(rec)["order_id"]) if is_event else 0
            if rtype in (RecordType.ORDER_EXPIRED, RecordType.ORDER_CANCELED, RecordType.ORDER_REJECTED):
                released = self._release(order_id)
                if released is not None:
                    edge.append(self._balance(rec, released.account, released.asset))
            elif rtype == RecordType.ORDER_AMENDED or (rtype == RecordType.CANCEL_REJECTED
                                                       and int(rec["flags"][0]) & records.FLAG_RESULT):
                self._settle_hold(rec, order_id, edge)  # (the order engine's own refusals answer no amend)
            elif rtype == RecordType.TRADE_PREVENTED:
                self._prevented(rec, edge)
            elif rtype == RecordType.ORDER_TRIGGERED:
                self._take_over(order_id, rec, edge)  # an OCO leg activated
        return []

    def _prevented(self, rec: np.ndarray, edge: list) -> None:
        """What STP took off an order is no longer held (a buy at its limit, a sell by quantity)."""
        p = records.view(rec)
        for order_id, lots in ((int(p["maker_order_id"]), int(p["maker_prevented_lot"])),
                               (int(p["taker_order_id"]), int(p["taker_prevented_lot"]))):
            hold = self.holds.get(order_id)
            if hold is None or lots == 0:
                continue
            hold.leaves -= self.rules[hold.symbol].qty(lots)
            self._fit(hold, rec, edge)

    def _check(self, rec: np.ndarray, orders: int = 1) -> Reason:
        """Pre-trade checks of a NEW_ORDER that comes with `orders` - 1 more (an OCO's other leg)."""
        n = records.view(rec)
        account_id, symbol = int(n["account_id"]), int(n["symbol_id"])
        r = self.rules[symbol]
        acc = self.accounts[account_id] if account_id < self.max_accounts else _Account()
        if acc.status == NEVER_OPENED:
            return Reason.UNKNOWN_ACCOUNT
        if acc.status == KILLED:
            return Reason.ACCOUNT_DISABLED
        if not acc.permissions & Permission.TRADE:
            return Reason.NO_TRADE_PERMISSION
        if symbol in self.halted:
            return Reason.MARKET_CLOSED
        otype = int(n["order_type"])
        if otype != OrderType.MARKET and acc.max_open_orders and acc.open_orders + orders > acc.max_open_orders:
            return Reason.TOO_MANY_OPEN_ORDERS
        if (acc.max_order_notional_minor > 0 and otype not in _MARKET_LIKE
                and r.price(n["price_tick"]) * r.qty(n["qty_lot"]) > _units(acc.max_order_notional_minor, r.quote)):
            return Reason.ORDER_NOTIONAL_CAP
        return Reason.NONE

    def _need(self, rec: np.ndarray, free: Decimal) -> tuple[Decimal, Decimal, Decimal]:
        """What a NEW_ORDER must lock given `free` of the asset it pays with, and the caps it
        goes to matching with: (amount, quote cap, quantity cap)."""
        n = records.view(rec)
        r = self.rules[int(n["symbol_id"])]
        otype, side = int(n["order_type"]), int(n["side"])
        price, qty, stop = r.price(n["price_tick"]), r.qty(n["qty_lot"]), r.price(n["stop_price_tick"])
        quote = _units(n["quote_qty_minor"], r.quote)
        if side == Side.SELL:
            if qty > 0:
                return qty, quote, qty
            whole = _floor_to(free, r.step)  # by quote: all free base in whole lots, as a cap
            return whole, quote, whole
        if otype not in _MARKET_LIKE:
            return price * qty, quote, qty
        if quote > 0:
            return quote, quote, qty
        # a market buy by quantity: a cap it can never exceed, all free quote for MARKET; for a
        # stop its stop price, a trailing one's reference price (its stop price, else the last
        # trade price risk knows) moved by the delta (the cap price rounded down to a tick, at
        # most the max price); with no reference price yet all free quote
        ref = stop if int(n["stop_price_tick"]) else self.risk_last.get(int(n["symbol_id"]))
        if otype == OrderType.MARKET or ref is None:
            return free, free, qty
        trail = int(n["trailing_delta_bips"])
        if trail:
            ref = min(r.max_price, _floor_to(ref * (1 + Decimal(trail).scaleb(-4)), r.tick))
        return ref * qty, ref * qty, qty

    def _new_order(self, rec: np.ndarray, edge: list) -> np.ndarray:
        """Pre-trade checks, then the hold; returns the NEW for matching (caps added) or its
        ORDER_REJECTED (echoed by matching)."""
        reason = self._check(rec)
        if reason != Reason.NONE:
            return _rejected(rec, reason)
        n = records.view(rec)
        account_id, r = int(n["account_id"]), self.rules[int(n["symbol_id"])]
        asset = r.quote if int(n["side"]) == Side.BUY else r.base
        amount, cap_quote, cap_qty = self._need(rec, self.free[(account_id, asset.asset_id)])
        if amount <= 0 or amount > self.free[(account_id, asset.asset_id)]:
            return _rejected(rec, Reason.INSUFFICIENT_BALANCE)
        self._lock(account_id, asset, amount)
        out = self._open_hold(rec, amount, cap_quote, cap_qty)
        edge.append(self._balance(rec, account_id, asset))
        return out

    def _open_hold(self, rec: np.ndarray, held: Decimal, cap_quote: Decimal, cap_qty: Decimal,
                   link: int = 0) -> np.ndarray:
        """Record the hold of an accepted NEW_ORDER (what it locked: `held`), count it open;
        the NEW for matching with its caps."""
        n = records.view(rec)
        account_id, symbol = int(n["account_id"]), int(n["symbol_id"])
        r = self.rules[symbol]
        otype, side = int(n["order_type"]), int(n["side"])
        limit_priced = otype not in _MARKET_LIKE
        self.holds[int(n["seq"])] = _Hold(
            account=account_id, symbol=symbol, asset=r.quote if side == Side.BUY else r.base, side=side,
            order_type=otype, held=held, limit=r.price(n["price_tick"]) if limit_priced else None,
            stop=r.price(n["stop_price_tick"]), qty=cap_qty, leaves=cap_qty,
            cap_left=cap_quote if side == Side.BUY and not limit_priced else None, link=link)
        if otype != OrderType.MARKET:
            self.accounts[account_id].open_orders += 1
        flags = int(n["flags"]) | (FLAG_QTY_CAP if cap_qty != r.qty(n["qty_lot"]) else 0)
        return _clone(rec, flags=flags, quote_qty_minor=_minor(cap_quote, r.quote), qty_lot=r.lots(cap_qty))

    def _order_list(self, head: np.ndarray, above: np.ndarray, below: np.ndarray, edge: list) -> list[np.ndarray]:
        """An OCO: both legs pass the checks (each counting both) or both are refused. The list
        locks once, what the hungrier leg needs; the two legs share that hold while both work."""
        reason = self._check(above, 2)
        if reason == Reason.NONE:
            reason = self._check(below, 2)
        h = records.view(head)
        account_id, r = int(h["account_id"]), self.rules[int(h["symbol_id"])]
        asset = r.quote if int(records.view(above)["side"]) == Side.BUY else r.base
        if reason == Reason.NONE:
            free = self.free[(account_id, asset.asset_id)]
            need_a, need_b = self._need(above, free), self._need(below, free)
            amount = max(need_a[0], need_b[0])
            if min(need_a[0], need_b[0]) <= 0 or amount > free:
                reason = Reason.INSUFFICIENT_BALANCE
        if reason != Reason.NONE:  # to matching, which echoes all three
            return [records.concat([_clone(head, reason=int(reason)), _rejected(above, reason),
                                    _rejected(below, reason)])]
        self._lock(account_id, asset, amount)
        legs = [self._open_hold(above, amount if need_a[0] >= need_b[0] else _ZERO, *need_a[1:],
                                link=int(below["seq"][0])),
                self._open_hold(below, _ZERO if need_a[0] >= need_b[0] else amount, *need_b[1:],
                                link=int(above["seq"][0]))]
        edge.append(self._balance(head, account_id, asset))
        return [records.concat([head, *legs])]

    def _replace(self, head: np.ndarray, leg: np.ndarray) -> list[np.ndarray]:
        """A cancel-replace's first trip: both on to matching, the leg unfunded (it comes back
        after the cancel as a NEW_ORDER); an account that may not cancel has the cancel refused
        and the leg not attempted."""
        if self._may_not_trade(int(head["account_id"][0])):
            refused = _make(RecordType.CANCEL_REJECTED, head, reason=int(Reason.NO_TRADE_PERMISSION),
                            order_id=int(records.view(head)["order_id"]))
            not_tried = _clone(_rejected(leg, Reason.NOT_ATTEMPTED), flags=int(leg["flags"][0]) & ~FLAG_DEFERRED)
            return [refused, not_tried]
        return [head, leg]

    def _may_not_trade(self, account: int) -> bool:
        """An opened account without the TRADE permission may neither place nor cancel."""
        acc = self.accounts[account] if account < self.max_accounts else None
        return acc is not None and acc.status != NEVER_OPENED and not acc.permissions & Permission.TRADE

    def _amend(self, rec: np.ndarray, edge: list) -> np.ndarray:
        """Lock what the order needs beyond its hold while the amend is in flight, or refuse
        (INSUFFICIENT_BALANCE)."""
        a = records.view(rec)
        account, symbol = int(a["account_id"]), int(a["symbol_id"])
        refuse = None
        if self._may_not_trade(account):
            refuse = Reason.NO_TRADE_PERMISSION
        elif account < self.max_accounts and self.accounts[account].status == KILLED:
            refuse = Reason.ACCOUNT_DISABLED   # an amend can add exposure, as a new order would
        elif symbol in self.halted:
            refuse = Reason.MARKET_CLOSED
        if refuse is not None:
            return _make(RecordType.CANCEL_REJECTED, rec, reason=int(refuse), order_id=int(a["order_id"]))
        hold = self.holds.get(int(a["order_id"]))
        if hold is None or hold.account != account:
            return rec  # matching answers (UNKNOWN_ORDER)
        if hold.side == Side.BUY and hold.limit is None:
            return rec  # a waiting stop-market buy keeps its cap: matching refuses the amend or cuts a leg
        r = self.rules[hold.symbol]
        new_qty = r.qty(a["new_qty_lot"]) if int(a["new_qty_lot"]) > 0 else hold.qty
        new_leaves = new_qty - (hold.qty - hold.leaves)
        if new_leaves <= 0:
            return rec  # matching refuses it (nothing left to trade)
        # until matching answers, the order may still fill as it is (at its limit): then as amended
        if hold.side == Side.SELL:
            need = max(hold.leaves, new_leaves)
        else:
            new_price = r.price(a["new_price_tick"]) if int(a["new_price_tick"]) > 0 else hold.limit
            need = new_price * new_leaves + min(hold.leaves, new_leaves) * max(_ZERO, hold.limit - new_price)
        sibling = self.holds.get(hold.link) if hold.link else None
        extra = need - hold.held - (sibling.held if sibling is not None else _ZERO)  # a leg: what its list holds
        if extra > 0:
            if self.free[(hold.account, hold.asset.asset_id)] < extra:
                return _make(RecordType.CANCEL_REJECTED, rec, reason=int(Reason.INSUFFICIENT_BALANCE),
                             order_id=int(a["order_id"]))
            self._lock(hold.account, hold.asset, extra)
            hold.held += extra
            edge.append(self._balance(rec, hold.account, hold.asset))
        return rec

    def _lock(self, account: int, asset: Asset, amount: Decimal) -> None:
        self.free[(account, asset.asset_id)] -= amount
        self.locked[(account, asset.asset_id)] += amount

    def _release(self, order_id: int) -> _Hold | None:
        """The order ended: what is left of its hold goes back to free (an OCO leg whose other
        leg still works leaves it to that leg). Returns the hold if that moved anything."""
        hold = self.holds.pop(order_id, None)
        if hold is None:
            return None
        sibling = self.holds.get(hold.link) if hold.link else None
        if sibling is not None:
            sibling.held, hold.held, sibling.link = sibling.held + hold.held, _ZERO, 0
        if hold.order_type != OrderType.MARKET:
            self.accounts[hold.account].open_orders -= 1
        if hold.held <= 0:
            return None
        self._lock(hold.account, hold.asset, -hold.held)
        return hold

    def _take_over(self, order_id: int, src: np.ndarray, edge: list) -> None:
        """An OCO leg activated (its first fill, its trigger): the list's hold becomes all its
        own, cut to what it needs (BALANCE if that releases anything)."""
        hold = self.holds.get(order_id)
        if hold is None or not hold.link:
            return
        sibling = self.holds.get(hold.link)
        hold.link = 0
        if sibling is not None:
            hold.held, sibling.held, sibling.link = hold.held + sibling.held, _ZERO, 0
        self._fit(hold, src, edge)

    def _fit(self, hold: _Hold, src: np.ndarray, edge: list) -> None:
        """The hold keeps what its order needs, the rest goes back to free (BALANCE if any); the
        legs of an OCO while both work keep what the hungrier of them needs, between them."""
        sibling = self.holds.get(hold.link) if hold.link else None
        need, have = hold.need(), hold.held
        if sibling is not None:
            need, have = max(need, sibling.need()), have + sibling.held
            hold.held, sibling.held = have, _ZERO  # (which leg holds it changes nothing)
        extra = have - need
        if extra > 0:
            hold.held -= extra
            self._lock(hold.account, hold.asset, -extra)
            edge.append(self._balance(src, hold.account, hold.asset))

    def _settle_hold(self, src: np.ndarray, order_id: int, edge: list) -> None:
        """After ORDER_AMENDED or CANCEL_REJECTED the hold is what the order then needs."""
        hold = self.holds.get(order_id)
        if hold is None:
            return
        e = records.view(src)
        r = self.rules[hold.symbol]
        if int(e["type"]) == RecordType.ORDER_AMENDED and hold.link:
            # a working leg's quantity cut (the other leg's ORDER_AMENDED comes next): what STP
            # took stays taken; a market-like buy's cap is cut per lot in minor units, as matching's
            new_qty = r.qty(e["qty_lot"])
            if hold.cap_left is not None:
                per_lot = _minor(hold.cap_left, r.quote) // r.lots(hold.qty)
                hold.cap_left = _units(per_lot * int(e["qty_lot"]), r.quote)
            hold.leaves -= hold.qty - new_qty
            hold.qty = new_qty
        elif int(e["type"]) == RecordType.ORDER_AMENDED:
            if hold.limit is not None:
                hold.limit = r.price(e["price_tick"])
            hold.qty = r.qty(e["qty_lot"])
            hold.leaves = hold.qty - r.qty(e["executed_qty_lot"])
        self._fit(hold, src, edge)

    def _rate(self, account: int, symbol: int, maker: bool) -> Decimal:
        acc, r = self.accounts[account], self.rules[symbol]
        own = acc.maker_fee if maker else acc.taker_fee
        if own is not None:
            return own
        return r.maker_fee if maker else r.taker_fee

    def _fill(self, rec: np.ndarray, edge: list) -> list[np.ndarray]:
        f = records.view(rec)
        symbol, taker, maker = int(f["symbol_id"]), int(f["account_id"]), int(f["maker_account_id"])
        r = self.rules[symbol]
        qty, price = r.qty(f["qty_lot"]), r.price(f["price_tick"])
        self.risk_last[symbol] = price
        quote = price * qty
        assert quote == _units(f["quote_qty_minor"], r.quote), "matching's quote amount is not price x qty"
        taker_buys = int(f["taker_side"]) == Side.BUY
        # each side pays its fee in what it receives: the buyer base, the seller quote
        maker_fee = _floor_minor((quote if taker_buys else qty) * self._rate(maker, symbol, True),
                                 r.quote if taker_buys else r.base)
        taker_fee = _floor_minor((qty if taker_buys else quote) * self._rate(taker, symbol, False),
                                 r.base if taker_buys else r.quote)
        edge.append(_clone(rec, maker_fee_minor=_minor(maker_fee, r.quote if taker_buys else r.base),
                           taker_fee_minor=_minor(taker_fee, r.base if taker_buys else r.quote)))
        maker_order, taker_order = int(f["maker_order_id"]), int(f["taker_order_id"])
        taker_part, maker_part = (taker, taker_order, taker_fee), (maker, maker_order, maker_fee)
        (buyer, buyer_order, buyer_fee), (seller, seller_order, seller_fee) = (
            (taker_part, maker_part) if taker_buys else (maker_part, taker_part))
        self._settle_side(rec, edge, buyer, buyer_order, qty, price, r.quote, quote, r.base, qty, buyer_fee)
        self._settle_side(rec, edge, seller, seller_order, qty, price, r.base, qty, r.quote, quote, seller_fee)
        kills = []
        if self.loss_asset is not None and r.quote == self.loss_asset:
            for account, buy, fee in ((buyer, True, buyer_fee), (seller, False, seller_fee)):
                kills += self._daily_pnl(rec, account, symbol, buy, qty, price, fee, edge)
        # (what a release moves is the buyer's or the seller's: among the balances below)
        if int(f["flags"]) & FLAG_MAKER_DONE:
            self._release(maker_order)
        if int(f["flags"]) & FLAG_TAKER_DONE:
            self._release(taker_order)
        changed = {(a, asset.asset_id) for a in (buyer, seller) for asset in (r.base, r.quote)}
        changed |= {(self.fee_account, asset.asset_id) for fee, asset in ((buyer_fee, r.base), (seller_fee, r.quote))
                    if fee > 0}
        edge.extend(self._balance(rec, a, self.assets[asset_id]) for a, asset_id in sorted(changed))
        return kills  # to matching: it cancels a killed account's orders

    def _settle_side(self, rec: np.ndarray, edge: list, account: int, order_id: int, qty: Decimal, price: Decimal,
                     pay_asset: Asset, pay: Decimal, get_asset: Asset, get: Decimal, fee: Decimal) -> None:
        """One side of a fill: an OCO leg's first fill activates it; then `pay` comes out of its
        hold, `get` minus the fee goes to free and the fee to the fee account."""
        self._take_over(order_id, rec, edge)
        hold = self.holds[order_id]
        self.locked[(account, pay_asset.asset_id)] -= pay
        hold.held -= pay
        hold.leaves -= qty
        if hold.cap_left is not None:
            hold.cap_left -= pay
        if hold.side == Side.BUY and hold.limit is not None and hold.limit > price:
            # a limit buy filled below its limit: the difference comes back now
            self._lock(account, pay_asset, -(hold.limit - price) * qty)
            hold.held -= (hold.limit - price) * qty
        self.free[(account, get_asset.asset_id)] += get - fee
        self.free[(self.fee_account, get_asset.asset_id)] += fee

    def _daily_pnl(self, fill: np.ndarray, account: int, symbol: int, buy: bool, qty: Decimal, price: Decimal,
                   fee: Decimal, edge: list) -> list[np.ndarray]:
        """Realized P&L minus fees paid in the loss asset (the seller's), per UTC day of the fill;
        a day's loss beyond the limit kills the account and tells the edge."""
        row = self.daily.setdefault((account, symbol), _Position())
        pnl = row.trade(buy, qty, price, fee, buy, self.loss_asset) - (_ZERO if buy else fee)
        acc = self.accounts[account]
        day = int(fill["ts_ns"][0]) // DAY_NS
        if acc.day != day:
            acc.day, acc.day_pnl = day, _ZERO
        acc.day_pnl += pnl
        if acc.daily_loss_limit > 0 and acc.day_pnl < -acc.daily_loss_limit and acc.status == ACTIVE:
            acc.status = KILLED
            kill = _make(RecordType.KILL_ACCOUNT, fill, flags=0, reason=int(Reason.DAILY_LOSS_LIMIT), account_id=account)
            edge.append(kill)
            return [kill]
        return []

    # --- admin --------------------------------------------------------------------------------
    def _transfer(self, rec: np.ndarray, edge: list) -> None:
        t = records.view(rec)
        account, asset_id, amount_minor = int(t["account_id"]), int(t["asset_id"]), int(t["amount_minor"])
        credit = int(t["type"]) == RecordType.CREDIT
        if asset_id >= len(self.assets):
            edge.append(_clone(rec, reason=int(Reason.UNKNOWN_ASSET)))
            return
        asset = self.assets[asset_id]
        amount = _units(amount_minor, asset)
        key = (account, asset_id)
        if account >= self.max_accounts or amount <= 0:
            refused = True
        elif credit:
            limit = _units(MAX_BALANCE_MINOR, asset)
            refused = (self.free[key] + self.locked[key] + amount > limit
                       or _units(self.credited[asset_id], asset) + amount > limit)
        else:
            refused = amount > self.free[key]  # a debit only from free balance
        if refused:
            edge.append(_clone(rec, reason=int(Reason.INVALID_AMOUNT)))
            return
        self.free[key] += amount if credit else -amount
        if credit:
            self.credited[asset_id] += amount_minor
        edge.append(rec)
        edge.append(self._balance(rec, account, asset, amount_minor if credit else -amount_minor))

    def _account_admin(self, rec: np.ndarray, edge: list) -> list[np.ndarray]:
        a = records.view(rec)
        rtype, account = int(a["type"]), int(a["account_id"])
        acc = self.accounts[account] if account < self.max_accounts else None
        if acc is None or (rtype != RecordType.ACCOUNT_OPEN and acc.status == NEVER_OPENED):
            edge.append(_clone(rec, reason=int(Reason.UNKNOWN_ACCOUNT)))
            return []
        if rtype in (RecordType.ACCOUNT_OPEN, RecordType.ACCOUNT_LIMITS) and (
                any(not -1 <= int(a[f]) <= 100_000_000 for f in ("maker_fee_e8", "taker_fee_e8"))
                or int(a["max_order_notional_minor"]) < 0 or int(a["daily_loss_limit_minor"]) < 0):
            edge.append(_clone(rec, reason=int(Reason.INVALID_PARAMETER)))  # a fee over 100%: nothing changes
            return []
        if rtype == RecordType.ACCOUNT_OPEN:
            acc.status, acc.permissions = ACTIVE, int(a["permissions"])
        if rtype in (RecordType.ACCOUNT_OPEN, RecordType.ACCOUNT_LIMITS):
            acc.max_open_orders = int(a["max_open_orders"])
            acc.maker_fee = _rate_e8(a["maker_fee_e8"]) if int(a["maker_fee_e8"]) >= 0 else None
            acc.taker_fee = _rate_e8(a["taker_fee_e8"]) if int(a["taker_fee_e8"]) >= 0 else None
            acc.max_order_notional_minor = int(a["max_order_notional_minor"])
            acc.daily_loss_limit = (_ZERO if self.loss_asset is None
                                    else _units(max(0, int(a["daily_loss_limit_minor"])), self.loss_asset))
        elif rtype == RecordType.KILL_ACCOUNT:
            acc.status = KILLED
            edge.append(rec)
            return [rec]  # to matching: it cancels the account's open orders
        else:
            acc.status = ACTIVE
        edge.append(rec)
        return []

    def _balance(self, src: np.ndarray, account: int, asset: Asset, delta_minor: int = 0) -> np.ndarray:
        key = (account, asset.asset_id)
        return _make(RecordType.BALANCE, src, flags=0, reason=0, account_id=account, asset_id=asset.asset_id,
                     free_minor=_minor(self.free[key], asset), locked_minor=_minor(self.locked[key], asset),
                     delta_minor=delta_minor)

    # --- position -----------------------------------------------------------------------------
    def _position(self, edge: list) -> None:
        """The position engine: both sides of every settled fill, the taker first."""
        for rec in edge:
            if int(rec["type"][0]) != RecordType.FILL:
                continue
            f = records.view(rec)
            symbol = int(f["symbol_id"])
            r = self.rules[symbol]
            qty, price = r.qty(f["qty_lot"]), r.price(f["price_tick"])
            taker_buys = int(f["taker_side"]) == Side.BUY
            taker_fee = _units(f["taker_fee_minor"], r.base if taker_buys else r.quote)
            maker_fee = _units(f["maker_fee_minor"], r.quote if taker_buys else r.base)
            for account, buy, fee in ((int(f["account_id"]), taker_buys, taker_fee),
                                      (int(f["maker_account_id"]), not taker_buys, maker_fee)):
                self.positions.setdefault((account, symbol), _Position()).trade(buy, qty, price, fee, buy, r.quote)
