"""Reference model of the matching engine, written from the spec in the docstring of
`ganntec/engines/matching.py` and from nothing else of that module.

It is deliberately naive so that it is easy to believe: prices, quantities and quote amounts
are `decimal.Decimal` values in real units (tick x tick_size, lot x step_size, quote asset
units) computed in a context that traps any inexact operation, so every number the model
outputs is exact by construction rather than by the integer identities the engine relies on
(e.g. it never uses `quote_per_tick_lot`). A book is a plain list of orders kept sorted by
(price, arrival); matching walks it from the front. Results are built as the same 128-byte
records the engine writes, so a test can compare the two record by record.

Where the spec leaves room, the model takes the readings below (the engine's author should
confirm them; the differential tests report any difference):
  * ORDER_REJECTED (WOULD_MATCH, WOULD_TRIGGER, BOOK_FULL) carries the NEW's client_order_id
    like ORDER_ACCEPTED; a CANCEL's ORDER_CANCELED and CANCEL_REJECTED carry the CANCEL's
    new_client_order_id (the spec says so); every other result has an empty client_order_id
    (CANCEL_ALL's ORDER_CANCELED, an OCO's other leg canceled with it, amend refusals).
  * CANCEL_REJECTED carries only the command's order_id (every other payload field 0, status
    0), also when the order exists and is the account's (CANCEL_RESTRICTED, INVALID_AMOUNT,
    WOULD_MATCH, UNSUPPORTED_COMBINATION): it reports on the command, not on the order.
  * Header account_id: the order's for order events (a triggered stop's results carry the
    stop's account, not the command's), the taker's for fills, the command's for
    CANCEL_REJECTED, 0 for BOOK_UPDATE (market data of no order).
  * BOOK_UPDATE only for a level whose (quantity, orders) differs from before the command: a
    level that was touched but ends as it began (an iceberg slice refreshed to the same size,
    a level made and emptied within the command) gets none.
  * DECREMENT reduces the orders' remaining quantity but not their total `qty_lot`, which
    stays "the original total" in every later event, and nothing gives the decremented part
    back: an amend's new total must exceed executed + decremented (else INVALID_AMOUNT; the
    spec's "> executed" would leave an order with nothing to trade), and the new remainder is
    new total - executed - decremented, whether or not the order re-enters its level.
  * A taker is out of quantity when a budget it has is spent: quantity (leaves 0), or quote
    (not one lot affordable at the current maker's price). Matching stops there, before
    self-trade prevention looks at that maker; a sell by quote stops at the first maker where
    one lot is not affordable even if a lower bid would be. A taker defined by its quote is
    done only when that quote is exactly 0 (also when a DECREMENT took it there: then it
    expires, SELF_TRADE_PREVENTED, as "both reached zero").
  * Icebergs: a match (fill or DECREMENT) works on the maker's visible slice; a slice used up
    is refreshed, min(slice, left), at the back of the level; an amend down trims the slice
    to what is left; an amend that re-enters the order starts a fresh slice. FOK's pre-check
    counts an iceberg's whole remainder.
  * Stops: waiting stops use order slots (max_orders) and sit in two stop books per symbol
    (falls, rises) of max_levels stop prices each; one at a new stop price in a full stop book
    is accepted, then expires with BOOK_FULL. Checks of a NEW run in this order: LIMIT_MAKER
    crossing (WOULD_MATCH), stop already triggered (WOULD_TRIGGER), no free slot (BOOK_FULL).
    A triggered stop keeps its order type (STOP_LOSS, ...) in its events and as the FILL's
    taker_order_type. After each trade-capable command the stops are looked at again from
    the top after every fired stop.
  * MARKET ignores time_in_force. An amend that changes neither price nor quantity keeps
    priority and reports ORDER_AMENDED without BOOK_UPDATE. The checks of an amend run in
    this order: unknown order, waiting stop (UNSUPPORTED_COMBINATION), quantity
    (INVALID_AMOUNT), LIMIT_MAKER crossing (WOULD_MATCH).
  * An amend of a working OCO leg checks, in this order: a price other than the leg's
    (UNSUPPORTED_COMBINATION), a quantity not below the leg's total (AMEND_QTY_INCREASE), a
    quantity at or below what either leg executed or had decremented (INVALID_AMOUNT). The legs
    share the quantity they had at entry, so "both legs take the new total" cuts each by the
    same amount. A market-like buy leg's quote cap (what risk gave it) is cut in the spec's
    integer units: quote minor units per lot, floored, times the new lots.
  * An AMEND followed by an EXT (FLAG_CONTINUED): the EXT's text1 is the amended order's new
    client order id, on its ORDER_AMENDED (not the other leg's); the EXT ends the command and
    has no result of its own.
  * An input record that is not a command (a rejection risk made) goes out byte for byte
    with FLAG_END added, unless it has FLAG_CONTINUED (a refused list's header and first leg, a
    refused cancel-replace's cancel: the command's last record ends it).
  * Trailing stops take an order slot but no stop price level (max_levels does not apply).
    Their events report the NEW's stop price (0 if none). A trailing stop's condition is
    looked at trade by trade: the trade that starts its tracking (by its stop price) sets the
    reference and nothing more. One that fired runs (in arrival order) once no static stop
    is due, also when it fired before a static stop became due in the same command.
  * Cancel-replace: the leg handed back is the input record byte for byte but for
    FLAG_DEFERRED (its own seq, source_seq, client_order_id). ORDER_REJECTED (NOT_ATTEMPTED) reports the leg as a
    rejected NEW: order_id = the leg's seq, its client_order_id, its account.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Context, Decimal, DivisionByZero, Inexact, InvalidOperation, Overflow, localcontext

import numpy as np

from ganntec.engines.symbols import Symbol
from ganntec.shm import records
from ganntec.shm.records import (
    FLAG_CONTINUED,
    FLAG_DEFERRED,
    FLAG_END,
    FLAG_MAKER_DONE,
    FLAG_SELF_TRADE,
    FLAG_QTY_CAP,
    FLAG_TAKER_DONE,
    RECORD_DTYPE,
    SOURCE_MATCHING,
    CancelRestriction,
    ExtKind,
    OrderStatus,
    OrderType,
    Reason,
    RecordType,
    ReplaceMode,
    Side,
    StpMode,
    TimeInForce,
)

# Exact arithmetic or an exception: no result of the model is ever rounded.
_EXACT = Context(prec=80, traps=[Inexact, InvalidOperation, DivisionByZero, Overflow])
_ZERO = Decimal(0)


@dataclass(frozen=True)
class _Rules:
    tick: Decimal
    step: Decimal
    quote_precision: int
    default_stp: StpMode

    def price(self, tick: int) -> Decimal:
        return Decimal(int(tick)) * self.tick

    def qty(self, lots: int) -> Decimal:
        return Decimal(int(lots)) * self.step

    def ticks(self, price: Decimal) -> int:
        return _integral(price / self.tick)

    def lots(self, qty: Decimal) -> int:
        return _integral(qty / self.step)

    def quote(self, minor: int) -> Decimal:
        return Decimal(int(minor)).scaleb(-self.quote_precision)

    def minor(self, quote: Decimal) -> int:
        return _integral(quote.scaleb(self.quote_precision))


def _integral(d: Decimal) -> int:
    if d != d.to_integral_value():
        raise ArithmeticError(f"{d} is not a whole number of units")
    return int(d)


_MARKETS = (OrderType.MARKET, OrderType.STOP_LOSS, OrderType.TAKE_PROFIT)
_STOPS = (OrderType.STOP_LOSS, OrderType.STOP_LOSS_LIMIT, OrderType.TAKE_PROFIT, OrderType.TAKE_PROFIT_LIMIT)
_FOK_TYPES = (OrderType.LIMIT, OrderType.STOP_LOSS_LIMIT, OrderType.TAKE_PROFIT_LIMIT)


@dataclass(eq=False)
class _Order:
    order_id: int
    account_id: int
    symbol_id: int
    side: int
    order_type: int
    tif: int
    stp: StpMode  # effective mode (DEFAULT already replaced by the symbol's)
    price: Decimal  # 0 for MARKET
    qty: Decimal  # total: the NEW's quantity or the last amended total (0 when defined by quote)
    leaves: Decimal | None  # quantity it may still trade (by quote: its cap, None if it has none)
    executed: Decimal = _ZERO
    cum_quote: Decimal = _ZERO
    decremented: Decimal = _ZERO  # removed by STP DECREMENT, never traded
    stop_price: Decimal = _ZERO
    stop_price_tick: int = 0
    by_quote: bool = False  # a market order defined by its quote amount
    quote_left: Decimal | None = None  # quote it may still spend or receive; None = no limit
    arrival: int = 0  # when it last entered its level or the stop book: time priority
    waiting: bool = False  # a stop not triggered yet
    iceberg: Decimal = _ZERO  # slice size of an iceberg; 0 = not one
    visible: Decimal = _ZERO  # an iceberg's current slice (what the book shows and trades)
    trailing_delta: int = 0  # bips; > 0 = a trailing stop
    trail_ref: Decimal | None = None  # a trailing stop's lowest (buy) / highest (sell) price since
    #                                   it started tracking; None = not tracking yet
    fired: bool = False  # a trailing stop that has moved its delta: it runs when stops fire
    link: int = 0  # an OCO leg: the other leg's order id while both work

    @property
    def shown(self) -> Decimal:
        """What the book shows, and what a taker can trade before the next refresh."""
        return self.visible if self.iceberg else self.leaves

    @property
    def is_market(self) -> bool:
        return self.order_type in _MARKETS

    @property
    def falls(self) -> bool:
        """A stop that triggers when the last price falls to its stop price."""
        stop_loss = self.order_type in (OrderType.STOP_LOSS, OrderType.STOP_LOSS_LIMIT)
        return stop_loss == (self.side == Side.SELL)

    def status(self) -> OrderStatus:
        return OrderStatus.NEW if self.executed == 0 else OrderStatus.PARTIALLY_FILLED


class MatchingModel:
    """Same commands in, same result records out as `MatchingEngine` (see module docstring)."""

    def __init__(self, symbols: list[Symbol], shard: int = 0, max_orders: int | None = None,
                 max_levels: int | None = None):
        # capacities as the engine's: open orders (resting and waiting stops) in all, price
        # levels per (symbol, side)
        self._max_orders, self._max_levels = max_orders, max_levels
        self._rules = {
            s.symbol_id: _Rules(Decimal(s.tick_size), Decimal(s.step_size), s.quote.precision, StpMode(s.default_stp))
            for s in symbols
        }
        self._source = SOURCE_MATCHING | shard
        self._books: dict[tuple[int, int], list[_Order]] = {
            (sid, side): [] for sid in self._rules for side in (Side.BUY, Side.SELL)
        }
        self._stops: dict[int, list[_Order]] = {sid: [] for sid in self._rules}  # in arrival order
        self._trailing: dict[int, list[_Order]] = {sid: [] for sid in self._rules}  # in arrival order
        self._open: dict[int, _Order] = {}  # resting orders and waiting stops
        self._last: dict[int, Decimal | None] = {sid: None for sid in self._rules}  # last trade price
        self._trade_id = {sid: 0 for sid in self._rules}
        self._prevented_id = {sid: 0 for sid in self._rules}
        self._book_update_id = {sid: 0 for sid in self._rules}
        self._arrival = 0
        self._replace_stopped = False  # the last CANCEL_REPLACE failed under STOP_ON_FAILURE
        # per-command state
        self._out: list[np.ndarray] = []
        self._hdr: dict = {}
        self._touched: dict[tuple[int, Decimal], tuple[Decimal, int]] = {}

    # --- queries ---------------------------------------------------------------------------
    def levels(self, symbol_id: int, side: int) -> np.ndarray:
        """(n, 3) int64: price_tick, qty_lot, orders; best first."""
        with localcontext(_EXACT):
            return self._levels(symbol_id, side)

    def _levels(self, symbol_id: int, side: int) -> np.ndarray:
        r = self._rules[symbol_id]
        rows: list[list[int]] = []
        for o in self._books[(symbol_id, side)]:
            if rows and rows[-1][0] == r.ticks(o.price):
                rows[-1][1] += r.lots(o.shown)
                rows[-1][2] += 1
            else:
                rows.append([r.ticks(o.price), r.lots(o.shown), 1])
        return np.array(rows, dtype=np.int64).reshape(-1, 3)

    def open_orders(self, symbol_id: int, side: int) -> list[int]:
        return [o.order_id for o in self._books[(symbol_id, side)]]

    def oco_legs(self) -> list[int]:
        """Ids of the legs of working OCO lists (both legs still linked), ascending."""
        return sorted(o.order_id for o in self._open.values() if o.link)

    def waiting_stops(self, symbol_id: int) -> list[int]:
        """Ids of the symbol's untriggered stops: static ones in the order they would fire (and
        be canceled), then the trailing ones in arrival order."""
        return [o.order_id for o in self._stop_book(symbol_id) + self._trailing[symbol_id]]

    def order(self, order_id: int) -> dict | None:
        """An open order's (or waiting stop's) fields, in the model's names, or None."""
        o = self._open.get(order_id)
        if o is None:
            return None
        r = self._rules[o.symbol_id]
        with localcontext(_EXACT):
            return {
                "order_id": o.order_id, "account_id": o.account_id, "symbol_id": o.symbol_id, "side": o.side,
                "order_type": o.order_type, "time_in_force": o.tif, "price_tick": r.ticks(o.price),
                "stop_price_tick": o.stop_price_tick, "waiting": o.waiting,
                "trailing_delta_bips": o.trailing_delta,
                "trail_ref_tick": 0 if o.trail_ref is None else r.ticks(o.trail_ref),
                "qty_lot": r.lots(o.qty), "leaves_qty_lot": 0 if o.leaves is None else r.lots(o.leaves),
                "visible_qty_lot": r.lots(o.shown) if o.leaves is not None else 0,
                "executed_qty_lot": r.lots(o.executed),
                "decremented_qty_lot": r.lots(o.decremented), "cum_quote_minor": r.minor(o.cum_quote),
                "status": int(o.status()),
            }

    # --- commands --------------------------------------------------------------------------
    def process(self, commands: np.ndarray) -> np.ndarray:
        cmds = records.as_records(commands)
        out: list[np.ndarray] = []
        with localcontext(_EXACT):
            skip = 0
            for i in range(len(cmds)):
                if skip:  # the legs of an OCO, taken with its header; an amend's EXT
                    skip -= 1
                    continue
                rtype = int(cmds[i]["type"])
                rec = records.view(cmds[i : i + 1])
                self._out, self._touched = [], {}
                self._hdr = {"ts_ns": int(rec["ts_ns"]), "account_id": int(rec["account_id"]),
                             "symbol_id": int(rec["symbol_id"]),
                             "cause": records.cause_of(int(rec["source"]), int(rec["source_seq"]))}
                flags = int(rec["flags"])
                if rtype == RecordType.NEW_ORDER and flags & FLAG_DEFERRED:
                    # the new leg of a CANCEL_REPLACE, not an order yet
                    if self._replace_stopped:
                        self._order_event(RecordType.ORDER_REJECTED, self._order_from(rec), OrderStatus.REJECTED,
                                          Reason.NOT_ATTEMPTED, bytes(rec["client_order_id"]))
                    else:
                        # back to the order engine (and risk), which send it again as a NEW_ORDER
                        copy = records.concat([cmds[i : i + 1]])
                        copy["flags"] = flags & ~FLAG_DEFERRED
                        out.append(copy)
                        continue
                elif rtype == RecordType.NEW_ORDER:
                    self._new_order(rec)
                elif rtype == RecordType.ORDER_LIST and int(rec["reason"]) == 0:
                    self._order_list(records.view(cmds[i + 1 : i + 2]), records.view(cmds[i + 2 : i + 3]))
                    skip, flags = 2, 0  # its second leg ends the command
                elif rtype == RecordType.CANCEL:
                    self._cancel(rec)
                elif rtype == RecordType.CANCEL_REPLACE:
                    canceled = self._cancel(rec)
                    self._replace_stopped = not canceled and int(rec["replace_mode"]) == ReplaceMode.STOP_ON_FAILURE
                elif rtype == RecordType.CANCEL_ALL:
                    self._cancel_all()
                elif rtype == RecordType.AMEND:
                    cid = b""
                    if flags & FLAG_CONTINUED and i + 1 < len(cmds) and int(cmds[i + 1]["type"]) == RecordType.EXT:
                        # its EXT carries the new client order id and ends the command
                        cid = bytes(records.view(cmds[i + 1 : i + 2])["text1"])
                        skip, flags = 1, 0
                    self._amend(rec, cid)
                elif rtype == RecordType.KILL_ACCOUNT:
                    self._kill()
                    self._book_updates()
                    out.extend(self._out)  # no FLAG_END: a kill is no client's command
                    continue
                else:
                    # a rejection risk made (or any other record): back to the order engine as is
                    copy = records.concat([cmds[i : i + 1]])
                    if not flags & FLAG_CONTINUED:  # (an input record with FLAG_CONTINUED ends none)
                        copy["flags"] |= FLAG_END
                    out.append(copy)
                    continue
                # Stops can only trigger when a trade moved the last price, so looking after
                # every command is the same as looking after "every command that can trade".
                self._fire_stops(self._hdr["symbol_id"])
                self._book_updates()
                if not flags & FLAG_CONTINUED:  # (a CANCEL_REPLACE: its leg ends the command)
                    self._out[-1]["flags"] |= FLAG_END
                out.extend(self._out)
        return _join(out)

    def _entry_reject(self, o: _Order) -> Reason | None:
        """Why `o` cannot enter as it is: a LIMIT_MAKER that would take, a stop already triggered."""
        if o.order_type == OrderType.LIMIT_MAKER:
            best = self._best(o.symbol_id, _opposite(o.side))
            if best is not None and _crosses(o, best.price):
                return Reason.WOULD_MATCH
        # (a trailing stop without a stop price has no condition to meet at entry)
        if o.order_type in _STOPS and o.stop_price_tick and self._triggered(o):
            return Reason.WOULD_TRIGGER
        return None

    def _new_order(self, rec) -> None:
        o = self._order_from(rec)
        cid = bytes(rec["client_order_id"])
        reason = self._entry_reject(o)
        if reason is None and self._max_orders is not None and len(self._open) >= self._max_orders:
            reason = Reason.BOOK_FULL
        if reason is not None:
            self._order_event(RecordType.ORDER_REJECTED, o, OrderStatus.REJECTED, reason, cid)
            return
        self._order_event(RecordType.ORDER_ACCEPTED, o, OrderStatus.NEW, Reason.NONE, cid)
        if o.trailing_delta:
            self._trail(o)
        elif o.order_type in _STOPS:
            self._wait(o)
        else:
            self._run_taker(o)

    def _order_list(self, above_rec, below_rec) -> None:
        """An OCO: both legs enter (and name each other) or both are refused, with the first
        reason found; a leg that could not rest (capacity) takes the other with it."""
        legs = [(self._order_from(rec), rec) for rec in (above_rec, below_rec)]
        reason = self._entry_reject(legs[0][0]) or self._entry_reject(legs[1][0])
        if reason is None and self._max_orders is not None and len(self._open) + 2 > self._max_orders:
            reason = Reason.BOOK_FULL
        if reason is not None:
            for o, rec in legs:
                self._order_event(RecordType.ORDER_REJECTED, o, OrderStatus.REJECTED, reason,
                                  bytes(rec["client_order_id"]))
            return
        for _, rec in legs:
            self._new_order(rec)
        above, below = (self._open.get(o.order_id) for o, _ in legs)
        if above is not None and below is not None:
            above.link, below.link = below.order_id, above.order_id
        elif above is not None or below is not None:
            survivor = above if above is not None else below
            self._remove(survivor)
            self._order_event(RecordType.ORDER_EXPIRED, survivor, OrderStatus.EXPIRED, Reason.LIST_OTHER_LEG)

    def _end_sibling(self, o: _Order, rtype: RecordType, status: OrderStatus, reason: Reason) -> None:
        """An OCO leg activated or ended: the other leg, if it still works, ends too."""
        sibling = self._open.get(o.link) if o.link else None
        o.link = 0
        if sibling is not None:
            sibling.link = 0
            self._remove(sibling)
            self._order_event(rtype, sibling, status, reason)

    def _order_from(self, rec) -> _Order:
        """The order a NEW_ORDER record describes."""
        sid = self._hdr["symbol_id"]
        r = self._rules[sid]
        otype = int(rec["order_type"])
        stp = StpMode(int(rec["stp_mode"]))
        o = _Order(
            order_id=int(rec["seq"]), account_id=self._hdr["account_id"], symbol_id=sid, side=int(rec["side"]),
            order_type=otype, tif=int(rec["time_in_force"]),
            stp=r.default_stp if stp == StpMode.DEFAULT else stp,
            price=r.price(rec["price_tick"]), qty=r.qty(rec["qty_lot"]), leaves=r.qty(rec["qty_lot"]),
            stop_price=r.price(rec["stop_price_tick"]), stop_price_tick=int(rec["stop_price_tick"]),
            iceberg=r.qty(rec["iceberg_qty_lot"]),
        )
        if otype in _MARKETS and int(rec["quote_qty_minor"]) > 0:
            # by quote (qty 0, or qty a cap risk added: FLAG_QTY_CAP), or by qty with a quote cap
            o.quote_left = r.quote(rec["quote_qty_minor"])
            o.by_quote = int(rec["qty_lot"]) == 0 or bool(int(rec["flags"]) & FLAG_QTY_CAP)
            if o.by_quote:
                o.qty = _ZERO
                o.leaves = r.qty(rec["qty_lot"]) if int(rec["qty_lot"]) else None
        if otype in _STOPS:
            o.trailing_delta = int(rec["trailing_delta_bips"])
        return o

    def _wait(self, o: _Order) -> None:
        """A stop joins its stop book: those that trigger on a fall, or those on a rise; each
        holds up to max_levels stop prices, like a side of the order book."""
        same_way = [x for x in self._stops[o.symbol_id] if x.falls == o.falls]
        if (self._max_levels is not None and all(x.stop_price != o.stop_price for x in same_way)
                and len({x.stop_price for x in same_way}) >= self._max_levels):
            self._order_event(RecordType.ORDER_EXPIRED, o, OrderStatus.EXPIRED, Reason.BOOK_FULL)
            return
        self._arrival += 1
        o.arrival, o.waiting = self._arrival, True
        self._stops[o.symbol_id].append(o)
        self._open[o.order_id] = o

    def _trail(self, o: _Order) -> None:
        """A trailing stop joins its symbol's trailing list. Without a stop price it tracks from
        now on: from the last trade price, or from the next trade if there is none."""
        o.waiting = True
        if not o.stop_price_tick:
            o.trail_ref = self._last[o.symbol_id]
        self._trailing[o.symbol_id].append(o)
        self._open[o.order_id] = o

    def _run_taker(self, o: _Order) -> None:
        if o.order_type in _FOK_TYPES and o.tif == TimeInForce.FOK and self._fok_fillable(o) < o.leaves:
            self._order_event(RecordType.ORDER_EXPIRED, o, OrderStatus.EXPIRED, Reason.FOK_UNFILLED)
            return
        self._take_then_rest(o)

    def _fok_fillable(self, o: _Order) -> Decimal:
        fillable = _ZERO
        for m in self._books[(o.symbol_id, _opposite(o.side))]:
            if not _crosses(o, m.price) or fillable >= o.leaves:
                break
            if m.account_id == o.account_id and o.stp != StpMode.NONE:
                if o.stp == StpMode.EXPIRE_MAKER:
                    continue
                break
            fillable += m.leaves
        return fillable

    def _take_then_rest(self, o: _Order) -> None:
        """Match `o` as a taker; then it rests (GTC limit), expires, or is done."""
        r = self._rules[o.symbol_id]
        book = self._books[(o.symbol_id, _opposite(o.side))]
        while book and _crosses(o, book[0].price):
            m = book[0]
            can_take = self._taker_can_take(o, m.price)
            if can_take == 0:
                break
            if m.account_id == o.account_id and o.stp != StpMode.NONE:
                taker_left = Decimal(0) if o.by_quote else o.leaves
                if o.stp == StpMode.EXPIRE_TAKER:
                    self._prevented(o, m, taker_left, Decimal(0))
                    self._expire_stp(o)
                    return
                if o.stp == StpMode.EXPIRE_MAKER:
                    self._prevented(o, m, Decimal(0), m.leaves)
                    self._remove(m)
                    self._expire_stp(m)
                    continue
                if o.stp == StpMode.EXPIRE_BOTH:
                    self._prevented(o, m, taker_left, m.leaves)
                    self._remove(m)
                    self._expire_stp(m)
                    self._expire_stp(o)
                    return
                # DECREMENT: like a trade, it works on the maker's visible slice
                cut = min(m.shown, can_take)
                self._prevented(o, m, Decimal(0) if o.by_quote else cut, cut)
                self._touch(m)
                self._reduce_maker(m, cut)
                m.decremented += cut
                self._reduce_taker(o, cut, m.price)
                o.decremented += cut
                if m.leaves == 0:
                    self._remove(m)
                    self._expire_stp(m)
                else:
                    self._refresh_slice(m)
                if self._taker_spent(o):
                    self._expire_stp(o)
                    return
                continue
            qty = min(m.shown, can_take)
            quote = m.price * qty
            self._touch(m)
            self._reduce_maker(m, qty)
            m.executed += qty
            m.cum_quote += quote
            self._reduce_taker(o, qty, m.price)
            o.executed += qty
            o.cum_quote += quote
            self._trade_id[o.symbol_id] += 1
            self._last[o.symbol_id] = m.price
            self._follow(o.symbol_id, m.price)
            flags = FLAG_SELF_TRADE if m.account_id == o.account_id else 0
            flags |= FLAG_MAKER_DONE if m.leaves == 0 else 0
            flags |= FLAG_TAKER_DONE if self._taker_spent(o) else 0
            self._emit(
                RecordType.FILL, flags=flags, account_id=o.account_id,
                trade_id=self._trade_id[o.symbol_id], price_tick=r.ticks(m.price), qty_lot=r.lots(qty),
                quote_qty_minor=r.minor(quote), maker_order_id=m.order_id, taker_order_id=o.order_id,
                maker_account_id=m.account_id, taker_side=o.side, taker_order_type=o.order_type,
                maker_leaves_qty_lot=r.lots(m.leaves), taker_leaves_qty_lot=0 if o.by_quote else r.lots(o.leaves),
            )
            self._end_sibling(m, RecordType.ORDER_EXPIRED, OrderStatus.EXPIRED, Reason.LIST_OTHER_LEG)
            if m.leaves == 0:
                self._remove(m)
            else:
                self._refresh_slice(m)
        if self._taker_spent(o):
            return
        if o.is_market or (o.tif != TimeInForce.GTC and o.order_type != OrderType.LIMIT_MAKER):
            # a FOK that passed its check always fills: only IOC and MARKET get here (a
            # LIMIT_MAKER rests whatever its time_in_force: the order engine lets 0 through)
            assert o.is_market or o.tif == TimeInForce.IOC
            self._order_event(RecordType.ORDER_EXPIRED, o, OrderStatus.EXPIRED, Reason.IOC_UNFILLED)
        else:
            self._rest(o)

    def _taker_can_take(self, o: _Order, price: Decimal) -> Decimal:
        """The quantity the taker could still trade at `price` (whole lots): what every one of
        its budgets (quantity, quote) allows."""
        can = []
        if o.leaves is not None:
            can.append(o.leaves)
        if o.quote_left is not None:
            step = self._rules[o.symbol_id].step
            can.append((o.quote_left // (price * step)) * step)
        return min(can)

    @staticmethod
    def _reduce_maker(m: _Order, qty: Decimal) -> None:
        m.leaves -= qty
        if m.iceberg:
            m.visible -= qty

    def _refresh_slice(self, m: _Order) -> None:
        """An iceberg whose slice is gone shows the next one, at the back of its level."""
        if m.iceberg and m.visible == 0:
            book = self._books[(m.symbol_id, m.side)]
            book.remove(m)
            self._enter_level(m, book)

    def _reduce_taker(self, o: _Order, qty: Decimal, price: Decimal) -> None:
        if o.leaves is not None:
            o.leaves -= qty
        if o.quote_left is not None:
            o.quote_left -= price * qty

    @staticmethod
    def _taker_spent(o: _Order) -> bool:
        return o.quote_left == 0 if o.by_quote else o.leaves == 0

    # --- stops -----------------------------------------------------------------------------
    def _triggered(self, o: _Order) -> bool:
        last = self._last[o.symbol_id]
        return last is not None and self._met(o, last)

    @staticmethod
    def _met(o: _Order, price: Decimal) -> bool:
        """Does `price` meet the stop's condition?"""
        return price <= o.stop_price if o.falls else price >= o.stop_price

    def _follow(self, symbol_id: int, price: Decimal) -> None:
        """Every trade (each fill) moves the symbol's trailing stops: one starts tracking at the
        first trade meeting its stop price (at once without one); a tracking one fires when the
        price has moved its delta from the lowest (buy) or highest (sell) price since."""
        for o in self._trailing[symbol_id]:
            if o.fired:
                continue
            if o.trail_ref is None:
                if not o.stop_price_tick or self._met(o, price):
                    o.trail_ref = price
                continue
            delta = Decimal(o.trailing_delta).scaleb(-4)  # bips as a fraction, exactly
            if o.side == Side.BUY:
                o.fired = price >= o.trail_ref * (1 + delta)
                o.trail_ref = min(o.trail_ref, price)
            else:
                o.fired = price <= o.trail_ref * (1 - delta)
                o.trail_ref = max(o.trail_ref, price)

    def _stop_book(self, symbol_id: int) -> list[_Order]:
        """Waiting stops in firing order: on a fall, highest stop first; then on a rise, lowest
        first; FIFO within one stop price."""
        waiting = self._stops[symbol_id]
        falls = sorted((o for o in waiting if o.falls), key=lambda o: (-o.stop_price, o.arrival))
        rises = sorted((o for o in waiting if not o.falls), key=lambda o: (o.stop_price, o.arrival))
        return falls + rises

    def _fire_stops(self, symbol_id: int) -> None:
        # one at a time: each may move the last price, so look again from the top after each
        while True:
            o = next((x for x in self._stop_book(symbol_id) if self._triggered(x)), None)
            if o is None:  # fired trailing stops run after the static stops that are due
                o = next((x for x in self._trailing[symbol_id] if x.fired), None)
            if o is None:
                return
            self._remove(o)
            o.waiting = False
            self._order_event(RecordType.ORDER_TRIGGERED, o, OrderStatus.NEW, Reason.NONE)
            self._end_sibling(o, RecordType.ORDER_EXPIRED, OrderStatus.EXPIRED, Reason.LIST_OTHER_LEG)
            self._run_taker(o)

    # --- cancel and amend ------------------------------------------------------------------
    def _cancel(self, rec) -> bool:
        """CANCEL (or the cancel of a CANCEL_REPLACE): True if the order was canceled."""
        o = self._own_open_order(int(rec["order_id"]))
        cancel_id = bytes(rec["new_client_order_id"])
        if o is None:
            self._reject_command(int(rec["order_id"]), Reason.UNKNOWN_ORDER, cancel_id)
            return False
        restriction = int(rec["cancel_restrictions"])
        if (restriction == CancelRestriction.ONLY_NEW and o.executed != 0) or (
            restriction == CancelRestriction.ONLY_PARTIALLY_FILLED and o.executed == 0
        ):
            self._reject_command(o.order_id, Reason.CANCEL_RESTRICTED, cancel_id)
            return False
        self._remove(o)
        self._order_event(RecordType.ORDER_CANCELED, o, OrderStatus.CANCELED, Reason.CANCELED_BY_USER, cancel_id)
        self._end_sibling(o, RecordType.ORDER_CANCELED, OrderStatus.CANCELED, Reason.CANCELED_BY_USER)
        return True

    def _cancel_all(self) -> None:
        sid, acct = self._hdr["symbol_id"], self._hdr["account_id"]
        mine = [o for side in (Side.BUY, Side.SELL) for o in self._books[(sid, side)] if o.account_id == acct]
        mine += [o for o in self._stop_book(sid) + self._trailing[sid] if o.account_id == acct]
        if not mine:
            self._reject_command(0, Reason.UNKNOWN_ORDER)
            return
        for o in mine:  # (an OCO leg's other leg is the account's too: it is in the list)
            o.link = 0
        for o in mine:
            self._remove(o)
            self._order_event(RecordType.ORDER_CANCELED, o, OrderStatus.CANCELED, Reason.CANCELED_BY_USER)

    def _kill(self) -> None:
        """Risk killed the account: its open orders on every symbol, each as CANCEL_ALL orders
        them, cancelled by the admin."""
        acct = self._hdr["account_id"]
        for sid in sorted(self._rules):
            mine = [o for side in (Side.BUY, Side.SELL) for o in self._books[(sid, side)] if o.account_id == acct]
            mine += [o for o in self._stop_book(sid) + self._trailing[sid] if o.account_id == acct]
            for o in mine:
                o.link = 0
            for o in mine:
                self._remove(o)
                self._order_event(RecordType.ORDER_CANCELED, o, OrderStatus.CANCELED, Reason.CANCELED_BY_ADMIN)

    def _amend(self, rec, cid: bytes = b"") -> None:
        o = self._own_open_order(int(rec["order_id"]))
        if o is None:
            self._reject_command(int(rec["order_id"]), Reason.UNKNOWN_ORDER)
            return
        if o.link:
            self._amend_leg(o, rec, cid)
            return
        if o.waiting:
            self._reject_command(o.order_id, Reason.UNSUPPORTED_COMBINATION)
            return
        r = self._rules[o.symbol_id]
        new_qty = r.qty(rec["new_qty_lot"]) if int(rec["new_qty_lot"]) != 0 else o.qty
        new_price = r.price(rec["new_price_tick"]) if int(rec["new_price_tick"]) != 0 else o.price
        if new_qty <= o.executed + o.decremented:
            self._reject_command(o.order_id, Reason.INVALID_AMOUNT)
            return
        if o.order_type == OrderType.LIMIT_MAKER:
            best = self._best(o.symbol_id, _opposite(o.side))
            if best is not None and _crosses(_Probe(o.side, o.order_type, new_price), best.price):
                self._reject_command(o.order_id, Reason.WOULD_MATCH)
                return
        new_leaves = new_qty - o.executed - o.decremented
        if new_price == o.price and new_qty <= o.qty:
            # quantity down (or nothing) at the same price: keeps its place
            self._touch(o)
            o.qty, o.leaves = new_qty, new_leaves
            o.visible = min(o.visible, new_leaves)  # (an iceberg's slice shrinks with it)
            self._order_event(RecordType.ORDER_AMENDED, o, o.status(), Reason.NONE, cid)
            return
        self._remove(o)
        o.qty, o.leaves, o.price = new_qty, new_leaves, new_price
        self._order_event(RecordType.ORDER_AMENDED, o, o.status(), Reason.NONE, cid)
        self._take_then_rest(o)

    def _amend_leg(self, o: _Order, rec, cid: bytes) -> None:
        """Binance's Order Amend Keep Priority on an order of a working OCO: its quantity only,
        down only, and the other leg takes the same quantity (a list's legs share one)."""
        r = self._rules[o.symbol_id]
        if int(rec["new_price_tick"]) != 0 and r.price(rec["new_price_tick"]) != o.price:
            self._reject_command(o.order_id, Reason.UNSUPPORTED_COMBINATION)
            return
        new_qty = r.qty(rec["new_qty_lot"])
        if int(rec["new_qty_lot"]) == 0 or new_qty >= o.qty:
            self._reject_command(o.order_id, Reason.AMEND_QTY_INCREASE)
            return
        other = self._open[o.link]
        if any(new_qty <= x.executed + x.decremented for x in (o, other)):
            self._reject_command(o.order_id, Reason.INVALID_AMOUNT)
            return
        for x, x_cid in ((o, cid), (other, b"")):
            if not x.waiting:
                self._touch(x)  # it keeps its place: only the level's quantity changes
            if x.quote_left is not None:
                # a market-like buy's quote cap, per lot (in minor units, floored) x the new quantity
                lots = r.lots(x.qty)
                x.quote_left = r.quote(r.minor(x.quote_left) // lots * r.lots(new_qty))
            x.leaves -= x.qty - new_qty
            x.qty = new_qty
            x.visible = min(x.visible, x.leaves)
            self._order_event(RecordType.ORDER_AMENDED, x, x.status(), Reason.NONE, x_cid)

    # --- book ------------------------------------------------------------------------------
    def _best(self, symbol_id: int, side: int) -> _Order | None:
        book = self._books[(symbol_id, side)]
        return book[0] if book else None

    def _own_open_order(self, order_id: int) -> _Order | None:
        o = self._open.get(order_id)
        if o is None or o.account_id != self._hdr["account_id"] or o.symbol_id != self._hdr["symbol_id"]:
            return None
        return o

    def _level_state(self, symbol_id: int, side: int, price: Decimal) -> tuple[Decimal, int]:
        at = [o for o in self._books[(symbol_id, side)] if o.price == price]
        return sum((o.shown for o in at), _ZERO), len(at)

    def _touch(self, o: _Order) -> None:
        """Remember the state of `o`'s level before this command first changes it."""
        key = (o.symbol_id, o.side, o.price)
        if key not in self._touched:
            self._touched[key] = self._level_state(o.symbol_id, o.side, o.price)

    def _rest(self, o: _Order) -> None:
        book = self._books[(o.symbol_id, o.side)]
        if (self._max_levels is not None and all(x.price != o.price for x in book)
                and len({x.price for x in book}) >= self._max_levels):
            self._order_event(RecordType.ORDER_EXPIRED, o, OrderStatus.EXPIRED, Reason.BOOK_FULL)
            return
        self._touch(o)
        self._enter_level(o, book)
        self._open[o.order_id] = o

    def _enter_level(self, o: _Order, book: list[_Order]) -> None:
        """At the back of its level, with a fresh slice if an iceberg."""
        if o.iceberg:
            o.visible = min(o.iceberg, o.leaves)
        self._arrival += 1
        o.arrival = self._arrival
        book.append(o)
        book.sort(key=(lambda x: (-x.price, x.arrival)) if o.side == Side.BUY else (lambda x: (x.price, x.arrival)))

    def _remove(self, o: _Order) -> None:
        """Take an open order out of its book (or the stop book, or the trailing list)."""
        del self._open[o.order_id]
        if o.waiting:
            (self._trailing if o.trailing_delta else self._stops)[o.symbol_id].remove(o)
            return
        self._touch(o)
        self._books[(o.symbol_id, o.side)].remove(o)

    def _book_updates(self) -> None:
        for (sid, side, price), before in self._touched.items():
            after = self._level_state(sid, side, price)
            if after == before:
                continue
            r = self._rules[sid]
            self._book_update_id[sid] += 1
            self._emit(RecordType.BOOK_UPDATE, account_id=0, book_update_id=self._book_update_id[sid],
                       price_tick=r.ticks(price), level_qty_lot=r.lots(after[0]), level_orders=after[1], side=side,
                       symbol_id=sid)

    # --- results ---------------------------------------------------------------------------
    def _prevented(self, o: _Order, m: _Order, taker_qty: Decimal, maker_qty: Decimal) -> None:
        """A prevented match: STP takes taker_qty off the taker and maker_qty off the maker."""
        r = self._rules[o.symbol_id]
        self._prevented_id[o.symbol_id] += 1
        self._emit(
            RecordType.TRADE_PREVENTED, account_id=o.account_id, prevented_match_id=self._prevented_id[o.symbol_id],
            price_tick=r.ticks(m.price), taker_prevented_lot=r.lots(taker_qty), maker_prevented_lot=r.lots(maker_qty),
            maker_order_id=m.order_id, taker_order_id=o.order_id, maker_account_id=m.account_id, taker_side=o.side,
            stp_mode=o.stp, maker_leaves_qty_lot=r.lots(m.leaves - maker_qty),
            taker_leaves_qty_lot=0 if o.by_quote else r.lots(o.leaves - taker_qty),
        )

    def _expire_stp(self, o: _Order) -> None:
        self._order_event(RecordType.ORDER_EXPIRED, o, OrderStatus.EXPIRED_IN_MATCH, Reason.SELF_TRADE_PREVENTED)
        self._end_sibling(o, RecordType.ORDER_EXPIRED, OrderStatus.EXPIRED, Reason.LIST_OTHER_LEG)

    def _reject_command(self, order_id: int, reason: Reason, cid: bytes = b"") -> None:
        self._emit(RecordType.CANCEL_REJECTED, reason=reason, order_id=order_id, client_order_id=cid)

    def _order_event(self, rtype: RecordType, o: _Order, status: OrderStatus, reason: Reason, cid: bytes = b"") -> None:
        r = self._rules[o.symbol_id]
        self._emit(
            rtype, reason=reason, account_id=o.account_id, symbol_id=o.symbol_id, order_id=o.order_id,
            price_tick=r.ticks(o.price),
            qty_lot=r.lots(o.qty), executed_qty_lot=r.lots(o.executed), cum_quote_minor=r.minor(o.cum_quote),
            stop_price_tick=o.stop_price_tick, client_order_id=cid, side=o.side, order_type=o.order_type,
            time_in_force=o.tif, status=status,
        )

    def _emit(self, rtype: RecordType, *, reason: int = 0, flags: int = 0, account_id: int | None = None,
              symbol_id: int | None = None,
              **payload) -> None:
        rec = records.empty(rtype)
        rec["flags"], rec["source"], rec["reason"] = flags, self._source, int(reason)
        rec["seq"], rec["ts_ns"], rec["source_seq"] = 0, self._hdr["ts_ns"], self._hdr["cause"]
        rec["account_id"] = self._hdr["account_id"] if account_id is None else account_id
        rec["symbol_id"] = self._hdr["symbol_id"] if symbol_id is None else symbol_id
        for name, value in payload.items():
            rec[name] = value
        self._out.append(rec.view(RECORD_DTYPE))


@dataclass(frozen=True)
class _Probe:
    """What `_crosses` needs of an order: an amend asks about a price the order does not have yet."""

    side: int
    order_type: int
    price: Decimal

    @property
    def is_market(self) -> bool:
        return False


def _opposite(side: int) -> int:
    return Side.SELL if side == Side.BUY else Side.BUY


def _crosses(o, maker_price: Decimal) -> bool:
    """Would the taker `o` trade at `maker_price`?"""
    if o.is_market:
        return True
    return maker_price <= o.price if o.side == Side.BUY else maker_price >= o.price


# --- commands and results as tests write and read them ------------------------------------
def new_order(seq: int, account: int, symbol: int, side: int, order_type: int = OrderType.LIMIT,
              tif: int = TimeInForce.GTC, price: int = 0, qty: int = 0, quote: int = 0, stop: int = 0,
              stp: int = StpMode.DEFAULT, cid: bytes = b"", ts_ns: int | None = None, iceberg: int = 0,
              trailing: int = 0) -> np.ndarray:
    """A NEW_ORDER as the order engine forwards it: `seq` is the order id."""
    rec = records.empty(RecordType.NEW_ORDER)
    rec["seq"], rec["ts_ns"] = seq, seq * 1000 if ts_ns is None else ts_ns
    rec["account_id"], rec["symbol_id"] = account, symbol
    rec["side"], rec["order_type"], rec["time_in_force"], rec["stp_mode"] = side, order_type, tif, stp
    rec["price_tick"], rec["qty_lot"], rec["quote_qty_minor"], rec["stop_price_tick"] = price, qty, quote, stop
    rec["client_order_id"], rec["iceberg_qty_lot"], rec["trailing_delta_bips"] = cid, iceberg, trailing
    return rec.view(RECORD_DTYPE)


def cancel(seq: int, account: int, symbol: int, order_id: int,
           restriction: int = CancelRestriction.NONE) -> np.ndarray:
    rec = records.empty(RecordType.CANCEL)
    rec["seq"], rec["ts_ns"], rec["account_id"], rec["symbol_id"] = seq, seq * 1000, account, symbol
    rec["order_id"], rec["cancel_restrictions"] = order_id, restriction
    return rec.view(RECORD_DTYPE)


def cancel_replace(seq: int, account: int, symbol: int, order_id: int, mode: int, leg: np.ndarray,
                   restriction: int = CancelRestriction.NONE) -> np.ndarray:
    """CANCEL_REPLACE as risk forwards it: the cancel (FLAG_CONTINUED), then the new order's
    leg (a NEW_ORDER flagged FLAG_DEFERRED; its own seq, same account and symbol)."""
    rec = records.empty(RecordType.CANCEL_REPLACE)
    rec["flags"], rec["seq"], rec["ts_ns"], rec["account_id"], rec["symbol_id"] = (
        FLAG_CONTINUED, seq, seq * 1000, account, symbol)
    rec["order_id"], rec["cancel_restrictions"], rec["replace_mode"] = order_id, restriction, mode
    leg = records.concat([leg])
    leg["flags"] |= FLAG_DEFERRED
    return _join([rec, leg])


def cancel_all(seq: int, account: int, symbol: int) -> np.ndarray:
    rec = records.empty(RecordType.CANCEL_ALL)
    rec["seq"], rec["ts_ns"], rec["account_id"], rec["symbol_id"] = seq, seq * 1000, account, symbol
    return rec


def amend(seq: int, account: int, symbol: int, order_id: int, price: int = 0, qty: int = 0,
          cid: bytes = b"") -> np.ndarray:
    """An AMEND; with `cid`, followed by its EXT (the new client order id, seq + 1)."""
    rec = records.empty(RecordType.AMEND)
    rec["seq"], rec["ts_ns"], rec["account_id"], rec["symbol_id"] = seq, seq * 1000, account, symbol
    rec["order_id"], rec["new_price_tick"], rec["new_qty_lot"] = order_id, price, qty
    if not cid:
        return rec.view(RECORD_DTYPE)
    rec["flags"] = FLAG_CONTINUED
    ext = records.empty(RecordType.EXT)
    ext["seq"], ext["ts_ns"], ext["account_id"], ext["symbol_id"] = seq + 1, seq * 1000, account, symbol
    ext["ext_kind"], ext["text1"] = ExtKind.NEW_CLIENT_ORDER_ID, cid
    return _join([rec, ext])


def batch(*cmds: np.ndarray) -> np.ndarray:
    """Commands (any 128-byte record arrays) as one RECORD_DTYPE array."""
    return _join(cmds)


def _join(arrays) -> np.ndarray:
    # a byte copy: np.concatenate of structured arrays packs the dtype, dropping every byte
    # outside the named fields (a RECORD_DTYPE view would keep only the header)
    return records.concat(list(arrays))


def decode(out: np.ndarray) -> list[dict]:
    """Every result as a dict of all its named fields (type and reason by name)."""
    rows = []
    hdr = records.as_records(out)
    for i in range(len(hdr)):
        rec = records.view(hdr[i : i + 1])
        row = {}
        for name in rec.dtype.names:
            v = rec[name]  # (a KEY record's digest is an array: a tuple here)
            row[name] = bytes(v) if isinstance(v, bytes) else tuple(v.tolist()) if isinstance(v, np.ndarray) else int(v)
        row["type"] = RecordType(row["type"]).name
        row["reason"] = Reason(row["reason"]).name
        rows.append(row)
    return rows


def diff_results(got: np.ndarray, want: np.ndarray, context: int = 3) -> str | None:
    """None when equal field by field; else a readable account of the first difference."""
    g, w = decode(got), decode(want)
    for i in range(max(len(g), len(w))):
        a = g[i] if i < len(g) else None
        b = w[i] if i < len(w) else None
        if a == b:
            continue
        lines = [f"results differ at index {i} (engine {len(g)} results, model {len(w)}):"]
        for j in range(max(0, i - context), i):
            lines.append(f"  [{j}] same  {_brief(g[j])}")
        if a is None or b is None or a["type"] != b["type"]:
            lines.append(f"  [{i}] engine {_brief(a)}")
            lines.append(f"  [{i}] model  {_brief(b)}")
        else:
            lines.append(f"  [{i}] {a['type']}: " + ", ".join(
                f"{k}: engine {a[k]!r} model {b[k]!r}" for k in a if a[k] != b[k]))
            lines.append(f"       engine {_brief(a)}")
        for j in range(i + 1, min(i + 1 + context, max(len(g), len(w)))):
            lines.append(f"  [{j}] engine {_brief(g[j]) if j < len(g) else '-'}")
            lines.append(f"  [{j}] model  {_brief(w[j]) if j < len(w) else '-'}")
        return "\n".join(lines)
    return None


_BRIEF_SKIP = {"seq", "source", "maker_fee_minor", "taker_fee_minor", "stop_price_tick"}


def _brief(row: dict | None) -> str:
    if row is None:
        return "(none)"
    return " ".join(f"{k}={v!r}" if isinstance(v, bytes) else f"{k}={v}" for k, v in row.items()
                    if k not in _BRIEF_SKIP and (v or k in ("type",)))
