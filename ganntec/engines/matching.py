"""Matching engine: price-time priority order books as a numba batch step.

`step` consumes validated, funded commands (records from risk) and writes result records. It
reads nothing but its state and its input: same input -> same output bytes, in any batch split
(a command whose results do not fit in the output space left is resumed on the next call).

Books. Each (symbol, side) keeps its active price levels in a sorted array, best price last,
so any price in the symbol's range works without a dense array over the range; a level holds a
FIFO doubly-linked list of orders from a fixed pool. Order ids map to pool slots through an
open-addressing hash table.

Commands (input, by header `type`; `seq` of a NEW_ORDER is its order id; `ts_ns` is copied to
every result the command causes; account_id/symbol_id from the header):
  NEW_ORDER   LIMIT (GTC/IOC/FOK), MARKET (by qty_lot, or by quote_qty_minor when qty_lot == 0),
              LIMIT_MAKER, STOP_LOSS / TAKE_PROFIT (a MARKET when triggered) and
              STOP_LOSS_LIMIT / TAKE_PROFIT_LIMIT (a LIMIT with its TIF when triggered).
              LIMIT and LIMIT_MAKER may be icebergs (iceberg_qty_lot > 0): the book shows one
              slice of that size; when a slice is filled the next one (of what is left) goes to
              the back of its level. Level quantities and BOOK_UPDATEs count visible slices; a
              taker (and FOK's pre-check) can trade the hidden rest as the slices refresh.
              A stop type with trailing_delta_bips > 0 is a trailing stop (below).
  CANCEL      order_id of an open order of the same account and symbol; cancel_restrictions.
              Its ORDER_CANCELED (or CANCEL_REJECTED) carries the CANCEL's new_client_order_id
              in client_order_id, so a client learns which cancel it answers (Binance's
              executionReport "c"); CANCEL_ALL's and the kill switch's carry none.
  CANCEL_ALL  every open order of the account on the symbol.
  AMEND       (an EXT may follow: FLAG_CONTINUED; its text1 is the order's new client order id,
              carried in ORDER_AMENDED; the EXT itself has no result)
              order_id; new_price_tick (0 = unchanged), new_qty_lot (0 = unchanged; the new
              *total* quantity, must be > executed). Quantity down at the same price keeps
              priority; a price change or a quantity up re-enters the order at the back of its
              new level, where it may trade as a taker. Quantity self-trade prevention took
              (DECREMENT) stays taken: leaves = new total - executed - prevented, which must be
              > 0 (else CANCEL_REJECTED, INVALID_AMOUNT). An OCO leg has stricter rules (ORDER_LIST).

  CANCEL_REPLACE  (FLAG_CONTINUED) a CANCEL with replace_mode, then its NEW_ORDER leg flagged
              FLAG_DEFERRED (not an order yet; risk has not funded it). The cancel runs as a
              CANCEL (its ORDER_CANCELED or CANCEL_REJECTED, its BOOK_UPDATEs, no FLAG_END).
              Then the leg: if the cancel failed under STOP_ON_FAILURE it becomes ORDER_REJECTED
              (NOT_ATTEMPTED, FLAG_END); otherwise it is copied to the output with FLAG_DEFERRED
              cleared and no FLAG_END, for the order engine to sequence (its new seq is the
              order id) and risk to fund; it comes back here as an ordinary NEW_ORDER.

  ORDER_LIST  (reason 0, FLAG_CONTINUED) an OCO, taken with its two NEW_ORDER legs (above,
              below; risk funded them as a pair). Both legs enter (ORDER_ACCEPTED each; a
              LIMIT_MAKER leg rests, stop legs wait) or both are ORDER_REJECTED with the first
              reason (WOULD_MATCH, WOULD_TRIGGER, BOOK_FULL). While both work each names the
              other; when one activates — trades (a partial fill too) or triggers — the other
              is ORDER_EXPIRED (LIST_OTHER_LEG) right after that FILL / ORDER_TRIGGERED, and
              when one ends any other way (expired, filled) so does the other. CANCEL of one
              leg cancels both (ORDER_CANCELED each); CANCEL_ALL takes each in its own place.
              AMEND of a working leg (resting or waiting, trailing too) is Binance's Order
              Amend Keep Priority: new_qty_lot below the leg's total, and since a list's legs
              share one quantity both legs take it (ORDER_AMENDED for the leg, with its new
              client order id if any, then ORDER_AMENDED for the other leg). Each keeps its
              place and its stop; what executed or STP took stays taken; a market-like buy's
              quote cap becomes (cap // old total) x new total, as risk's hold does. Refused
              (CANCEL_REJECTED): a new price (new_price_tick not 0 nor the leg's price:
              UNSUPPORTED_COMBINATION, keep-priority changes quantity only), a quantity not
              below the total (0, same, up: AMEND_QTY_INCREASE, Binance's -2038), a leg left
              with nothing to trade (INVALID_AMOUNT). A refused list (the order
              engine's or risk's reason in the header) is echoed, all three records.

  KILL_ACCOUNT  risk killed the account (admin, or its daily loss limit): every open order
              of it on every symbol is ORDER_CANCELED (CANCELED_BY_ADMIN), symbol by symbol
              as CANCEL_ALL orders them. No FLAG_END: it is no client's command.

Any other input record (a rejection risk made: ORDER_REJECTED, CANCEL_REJECTED) is copied to
the output unchanged but for FLAG_END, so every command the order engine forwarded comes back.

Results, in this order for one command:
  ORDER_ACCEPTED  a NEW_ORDER entered matching (status NEW), before its fills. Carries the
                  NEW's client_order_id (so do ORDER_REJECTED and an ORDER_AMENDED that
                  changed it; a CANCEL's ORDER_CANCELED / CANCEL_REJECTED carry the cancel's
                  own id; no other result does), price,
                  qty_lot (0 for MARKET by quote), side, type, tif.
  ORDER_REJECTED  LIMIT_MAKER that would take (reason WOULD_MATCH), or no free order slot in
                  the engine (BOOK_FULL); nothing else happens. A GTC remainder that cannot
                  rest because its book is at capacity expires with BOOK_FULL.
  FILL            one per maker touched: price = the maker's price; qty_lot; quote_qty_minor =
                  price x qty x quote_per_tick_lot; maker/taker order ids; maker_account_id
                  (the taker's account is header.account_id); taker_side; taker_order_type;
                  maker and taker leaves (taker leaves are 0 for MARKET by quote); fees 0 (risk
                  sets them); trade_id per symbol from 1. Flags: FLAG_SELF_TRADE when both
                  accounts are the same, FLAG_MAKER_DONE when the maker is filled,
                  FLAG_TAKER_DONE when the taker has nothing left (leaves 0, or for MARKET by
                  quote its quote exactly spent).
  ORDER_EXPIRED   the taker's remainder of IOC or MARKET (reason IOC_UNFILLED, status EXPIRED),
                  a FOK that cannot fill completely (reason FOK_UNFILLED, no fills at all), or
                  an order removed by self-trade prevention (reason SELF_TRADE_PREVENTED, status
                  EXPIRED_IN_MATCH) — taker and/or maker.
  TRADE_PREVENTED a self-trade STP stopped (Binance's prevented match), before the
                  ORDER_EXPIRED it causes: prevented_match_id (per symbol, from 1), the maker's
                  price, maker and taker order ids, the quantity taken off each side (EXPIRE_TAKER:
                  the taker's remainder; EXPIRE_MAKER: the maker's; EXPIRE_BOTH: both; DECREMENT:
                  the smaller visible quantity, from both; a taker defined by quote counts 0),
                  the leaves after it, the STP mode.
  ORDER_CANCELED  after CANCEL / CANCEL_ALL (reason CANCELED_BY_USER, status CANCELED), one per
                  order, in book priority order (bids best first, then asks best first).
  CANCEL_REJECTED the command could not apply: unknown id or another account's order
                  (UNKNOWN_ORDER), CANCEL_ALL with no open order (UNKNOWN_ORDER, order_id 0),
                  restrictions not met (CANCEL_RESTRICTED), an amend that would leave
                  nothing to trade (INVALID_AMOUNT), LIMIT_MAKER amended onto a crossing price (WOULD_MATCH),
                  an OCO leg's amend that is not a quantity cut (above).
  ORDER_AMENDED   the order after an amend (qty_lot = new total, price_tick = new price),
                  before any fills of the re-entered order; an OCO leg's amend gives two
                  (the leg, then the other leg).
  BOOK_UPDATE     after the command, one per price level whose state (visible quantity,
                  order count) differs from before the command, in the order the levels were
                  first touched: price, level qty (0 = level gone), orders at
                  the level, side, book_update_id (per symbol, +1 per record, from 1).
The last result of every command carries FLAG_END (a command always has at least one result;
an input record with FLAG_CONTINUED ends none, nor does a cancel-replace leg handed back);
the order engine counts them to return credits.
Order events carry order_id, price_tick, qty_lot (original total), executed_qty_lot,
cum_quote_minor, stop_price_tick, side, order_type, time_in_force and status after the event. Result headers:
seq 0 (the order engine stamps it), source SOURCE_MATCHING | shard, source_seq = the cause: the
command's (source << 48) | its source_seq (records.cause_of; pending work, e.g. stops fired,
keeps its command's), ts_ns of the command, account_id of the order (taker for fills).

Stops trigger on the symbol's last trade price: STOP_LOSS* BUY and TAKE_PROFIT* SELL when
last >= stop_price_tick, STOP_LOSS* SELL and TAKE_PROFIT* BUY when last <= stop_price_tick.
A stop is ORDER_ACCEPTED and waits (no BOOK_UPDATE); one that would trigger at once (there is a
last price and it already satisfies the condition) is ORDER_REJECTED with WOULD_TRIGGER. After
every command that can trade, the symbol's stops are fired one at a time — the book of stops
that trigger on a fall first (highest stop first), then those that trigger on a rise (lowest
first), FIFO within a stop price — each emitting ORDER_TRIGGERED (status NEW) and then running
as a taker (FOK pre-check included), which can move the price and fire more. CANCEL and
CANCEL_ALL reach waiting stops (CANCEL_ALL takes them after the bids and asks, in stop-book
order); AMEND of a waiting stop is refused (CANCEL_REJECTED, UNSUPPORTED_COMBINATION) unless it
is an OCO leg (ORDER_LIST above).

Trailing stops (Binance's trailing-stop FAQ) wait in their symbol's trailing list, in arrival
order, and follow every trade of the symbol (each fill, not only a command's last price). One
with a stop price starts tracking at the first trade that meets its stop condition (the static
rule above; one already met at entry is WOULD_TRIGGER); one without tracks from entry, from the
last trade price (or from the next trade if there is none). Tracking keeps the lowest price
for buys and the highest for sells; a buy fires at a trade >= lowest x (1 + delta / 1e4), a
sell at a trade <= highest x (1 - delta / 1e4), compared exactly in integers. Fired trailing
stops run after the static stops that are due, in arrival order, like them (ORDER_TRIGGERED,
then a taker). CANCEL reaches them, CANCEL_ALL takes them last (arrival order), AMEND is
refused (UNSUPPORTED_COMBINATION) unless it is an OCO leg's.

Self-trade prevention applies when taker and maker have the same account; the taker's mode
(DEFAULT -> the symbol's default_stp) decides: NONE trades; EXPIRE_TAKER expires the taker's
remainder and stops; EXPIRE_MAKER expires that maker and goes on; EXPIRE_BOTH expires both and
stops; DECREMENT reduces both by the smaller remaining quantity without a trade, expiring
whichever reaches zero (both if equal) and goes on while the taker has quantity. When both
expire, the maker's ORDER_EXPIRED comes first. A resting order never matches another resting
order, and a taker whose matching STP stopped never rests (its remainder expires).

MARKET by quote: at each level it takes min(maker qty, quote_left // (price x
quote_per_tick_lot)) lots and stops when not one more lot is affordable. A market-like order
with both qty_lot and quote_qty_minor (risk caps market buys by quantity with the quote it
holds; a MARKET sell by quote gets a quantity cap, flagged FLAG_QTY_CAP) takes lots while
both allow and is done when its defining budget is (the quantity, or the quote when the
quantity is a cap, which results then report as qty_lot 0). It ends without an
ORDER_EXPIRED only when quote_left reaches exactly 0; otherwise its remainder expires with
IOC_UNFILLED. MARKET by quantity ends without ORDER_EXPIRED only when fully filled.

FOK is checked before any fill: walking the crossing makers in priority order, it counts the
quantity it would trade — makers of other accounts, plus same-account makers only under STP
NONE; under EXPIRE_MAKER same-account makers are skipped; under EXPIRE_TAKER, EXPIRE_BOTH and
DECREMENT counting stops at the first same-account maker. If that count is below the order's
quantity the order expires (FOK_UNFILLED) with no fills and no other effect.

Python API (tests, tools, integrators; the compiled `step` is what runtimes call):
    eng = MatchingEngine(symbol_table, max_orders=..., max_levels=..., shard=0)
    out = eng.process(commands)     # 128-byte records (an array, or a list of arrays) in ->
                                    # RECORD_DTYPE results out; records.view(out[i]) types one
    eng.levels(symbol_id, side)     # int64 (n, 3): price_tick, qty_lot, orders; best first
    eng.open_orders(symbol_id, side)  # order ids in priority order
    eng.order(order_id)             # dict of an open order, or None

State layouts (engine-private; snapshots store these arrays):

    [ORDER_DTYPE] 128 bytes
    offset  size  type  field
         0     8  i8    order_id
         8     8  i8    price_tick
        16     8  i8    qty_lot
        24     8  i8    leaves_lot
        32     8  i8    executed_lot
        40     8  i8    cum_quote_minor
        48     8  i8    quote_left_minor
        56     4  i4    prev
        60     4  i4    next
        64     4  i4    level
        68     4  u4    account_id
        72     4  u4    symbol_id
        76     1  u1    side
        77     1  u1    order_type
        78     1  u1    time_in_force
        79     1  u1    stp_mode
        80     4  i4    book
        84     1  u1    qty_is_cap
        85     1  u1    trail_fired
        86     2  u2    trailing_delta_bips
        88     8  i8    stop_price_tick
        96     8  i8    visible_lot
       104     8  i8    iceberg_lot
       112     8  i8    trail_ref_tick
       120     8  i8    link_order_id

    [LEVEL_DTYPE] 48 bytes
    offset  size  type  field
         0     8  i8    price_tick
         8     8  i8    qty_lot
        16     8  i8    orders
        24     4  i4    head
        28     4  i4    tail
        32     8  i8    epoch          command that last touched it (-1: created, untouched)
        40     8  i8    touch_index    its entry in that command's touched-level list
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ganntec.engines.hashmap import capacity_for, hm_del, hm_get, hm_put, lookup
from ganntec.engines.mem import (ld_i32, ld_i64, ld_u8, ld_u16, ld_u32, move_bytes, slot_give, slot_take, st_i32,
                                 st_i64, st_u8, st_u16,
                                 st_u32, zero_bytes)
from ganntec.engines.symbols import SYMBOL_DTYPE, own_table
from ganntec.shm import records as R
from ganntec.shm import table as tables
from ganntec.shm.atomics import copy_bytes

# --- engine-private state layouts ----------------------------------------------------------
ORDER_DTYPE = np.dtype(
    {
        "names": ["order_id", "price_tick", "qty_lot", "leaves_lot", "executed_lot", "cum_quote_minor",
                  "quote_left_minor", "prev", "next", "level", "account_id", "symbol_id",
                  "side", "order_type", "time_in_force", "stp_mode", "book", "qty_is_cap", "trail_fired",
                  "trailing_delta_bips", "stop_price_tick", "visible_lot", "iceberg_lot", "trail_ref_tick",
                  "link_order_id"],
        "formats": ["<i8"] * 7 + ["<i4"] * 3 + ["<u4"] * 2 + ["u1"] * 4 + ["<i4", "u1", "u1", "<u2"] + ["<i8"] * 5,
        "offsets": [0, 8, 16, 24, 32, 40, 48, 56, 60, 64, 68, 72, 76, 77, 78, 79, 80, 84, 85, 86, 88, 96, 104, 112,
                    120],
        "itemsize": 128,
    }
)
LEVEL_DTYPE = np.dtype(
    {
        "names": ["price_tick", "qty_lot", "orders", "head", "tail", "epoch", "touch_index"],
        "formats": ["<i8", "<i8", "<i8", "<i4", "<i4", "<i8", "<i8"],
        "offsets": [0, 8, 16, 24, 28, 32, 40],
        "itemsize": 48,
    }
)


def _off(dtype: np.dtype, name: str) -> int:
    return dtype.fields[name][1]


OB = ORDER_DTYPE.itemsize
O_ID, O_PRICE, O_QTY, O_LEAVES, O_EXEC, O_CUMQ, O_QLEFT = (_off(ORDER_DTYPE, n) for n in (
    "order_id", "price_tick", "qty_lot", "leaves_lot", "executed_lot", "cum_quote_minor", "quote_left_minor"))
O_PREV, O_NEXT, O_LEVEL, O_ACC, O_SYM = (_off(ORDER_DTYPE, n) for n in ("prev", "next", "level", "account_id", "symbol_id"))
O_SIDE, O_TYPE, O_TIF, O_STP = (_off(ORDER_DTYPE, n) for n in ("side", "order_type", "time_in_force", "stp_mode"))
O_BOOK, O_CAP, O_STOP = _off(ORDER_DTYPE, "book"), _off(ORDER_DTYPE, "qty_is_cap"), _off(ORDER_DTYPE, "stop_price_tick")
O_VIS, O_ICE = _off(ORDER_DTYPE, "visible_lot"), _off(ORDER_DTYPE, "iceberg_lot")
O_FIRED, O_TRAIL, O_REF, O_LINK = (_off(ORDER_DTYPE, n) for n in (
    "trail_fired", "trailing_delta_bips", "trail_ref_tick", "link_order_id"))
BOOK_TRAILING = -2  # `book` of a trailing stop: in its symbol's trailing list, not a book
LB = LEVEL_DTYPE.itemsize
L_PRICE, L_QTY, L_COUNT, L_HEAD, L_TAIL, L_EPOCH, L_TIDX = (_off(LEVEL_DTYPE, n) for n in (
    "price_tick", "qty_lot", "orders", "head", "tail", "epoch", "touch_index"))
SB = SYMBOL_DTYPE.itemsize
S_QPL = _off(SYMBOL_DTYPE, "quote_per_tick_lot")
S_STP = _off(SYMBOL_DTYPE, "default_stp")

# Record field offsets (from the one layout module).
RB = R.RECORD_BYTES
H_TYPE, H_FLAGS, H_SOURCE, H_REASON, H_SEQ, H_TS, H_SRCSEQ, H_ACC, H_SYM = (
    _off(R.RECORD_DTYPE, n) for n in ("type", "flags", "source", "reason", "seq", "ts_ns", "source_seq",
                                      "account_id", "symbol_id"))
N_TRAIL = _off(R.NEW_ORDER_DTYPE, "trailing_delta_bips")
N_PRICE, N_QTY, N_QUOTE, N_STOP, N_ICE, N_SIDE, N_TYPE, N_TIF, N_STP, N_CID = (_off(R.NEW_ORDER_DTYPE, n) for n in (
    "price_tick", "qty_lot", "quote_qty_minor", "stop_price_tick", "iceberg_qty_lot", "side", "order_type",
    "time_in_force", "stp_mode", "client_order_id"))
C_ORDER, C_RESTRICT = _off(R.CANCEL_DTYPE, "order_id"), _off(R.CANCEL_DTYPE, "cancel_restrictions")
C_MODE = _off(R.CANCEL_DTYPE, "replace_mode")
C_NEWCID = _off(R.CANCEL_DTYPE, "new_client_order_id")
A_ORDER, A_PRICE, A_QTY = (_off(R.AMEND_DTYPE, n) for n in ("order_id", "new_price_tick", "new_qty_lot"))
E_ORDER, E_PRICE, E_QTY, E_EXEC, E_CUMQ, E_STOP, E_CID, E_SIDE, E_TYPE, E_TIF, E_STATUS = (
    _off(R.ORDER_EVENT_DTYPE, n) for n in ("order_id", "price_tick", "qty_lot", "executed_qty_lot", "cum_quote_minor",
                                           "stop_price_tick", "client_order_id", "side", "order_type",
                                           "time_in_force", "status"))
F_TRADE, F_PRICE, F_QTY, F_QUOTE, F_MAKER, F_TAKER, F_MACC, F_TSIDE, F_TTYPE, F_MLEAVES, F_TLEAVES = (
    _off(R.FILL_DTYPE, n) for n in ("trade_id", "price_tick", "qty_lot", "quote_qty_minor", "maker_order_id",
                                    "taker_order_id", "maker_account_id", "taker_side", "taker_order_type",
                                    "maker_leaves_qty_lot", "taker_leaves_qty_lot"))
B_ID, B_PRICE, B_QTY, B_ORDERS, B_SIDE = (_off(R.BOOK_UPDATE_DTYPE, n) for n in (
    "book_update_id", "price_tick", "level_qty_lot", "level_orders", "side"))
CID_BYTES = R.CLIENT_ID_BYTES

# Enum values as plain ints (compile-time constants).
BUY, SELL = int(R.Side.BUY), int(R.Side.SELL)
LIMIT, MARKET, LIMIT_MAKER = int(R.OrderType.LIMIT), int(R.OrderType.MARKET), int(R.OrderType.LIMIT_MAKER)
STOP_LOSS, STOP_LOSS_LIMIT = int(R.OrderType.STOP_LOSS), int(R.OrderType.STOP_LOSS_LIMIT)
TAKE_PROFIT, TAKE_PROFIT_LIMIT = int(R.OrderType.TAKE_PROFIT), int(R.OrderType.TAKE_PROFIT_LIMIT)
GTC, IOC, FOK = int(R.TimeInForce.GTC), int(R.TimeInForce.IOC), int(R.TimeInForce.FOK)
STP_NONE, STP_TAKER, STP_MAKER, STP_BOTH, STP_DECR = (int(R.StpMode.NONE), int(R.StpMode.EXPIRE_TAKER),
                                                      int(R.StpMode.EXPIRE_MAKER), int(R.StpMode.EXPIRE_BOTH),
                                                      int(R.StpMode.DECREMENT))
T_NEW, T_CANCEL, T_CANCEL_ALL, T_AMEND = (int(R.RecordType.NEW_ORDER), int(R.RecordType.CANCEL),
                                          int(R.RecordType.CANCEL_ALL), int(R.RecordType.AMEND))
T_ACCEPTED, T_REJECTED, T_FILL, T_EXPIRED, T_CANCELED, T_AMENDED, T_CANCEL_REJ, T_BOOK, T_TRIGGERED = (int(t) for t in (
    R.RecordType.ORDER_ACCEPTED, R.RecordType.ORDER_REJECTED, R.RecordType.FILL, R.RecordType.ORDER_EXPIRED,
    R.RecordType.ORDER_CANCELED, R.RecordType.ORDER_AMENDED, R.RecordType.CANCEL_REJECTED, R.RecordType.BOOK_UPDATE,
    R.RecordType.ORDER_TRIGGERED))
ST_NEW, ST_PARTIAL, ST_FILLED, ST_CANCELED, ST_REJECTED, ST_EXPIRED, ST_EXP_MATCH = (int(s) for s in (
    R.OrderStatus.NEW, R.OrderStatus.PARTIALLY_FILLED, R.OrderStatus.FILLED, R.OrderStatus.CANCELED,
    R.OrderStatus.REJECTED, R.OrderStatus.EXPIRED, R.OrderStatus.EXPIRED_IN_MATCH))
RS_UNKNOWN, RS_WOULD_MATCH, RS_IOC, RS_FOK, RS_STP, RS_USER, RS_RESTRICT, RS_AMOUNT, RS_FULL = (int(r) for r in (
    R.Reason.UNKNOWN_ORDER, R.Reason.WOULD_MATCH, R.Reason.IOC_UNFILLED, R.Reason.FOK_UNFILLED,
    R.Reason.SELF_TRADE_PREVENTED, R.Reason.CANCELED_BY_USER, R.Reason.CANCEL_RESTRICTED, R.Reason.INVALID_AMOUNT,
    R.Reason.BOOK_FULL))
RS_WOULD_TRIGGER, RS_UNSUPPORTED = int(R.Reason.WOULD_TRIGGER), int(R.Reason.UNSUPPORTED_COMBINATION)
RS_QTY_UP = int(R.Reason.AMEND_QTY_INCREASE)
ONLY_NEW, ONLY_PARTIAL = int(R.CancelRestriction.ONLY_NEW), int(R.CancelRestriction.ONLY_PARTIALLY_FILLED)
FLAG_SELF_TRADE, FLAG_MAKER_DONE, FLAG_TAKER_DONE, FLAG_END, FLAG_QTY_CAP = (
    R.FLAG_SELF_TRADE, R.FLAG_MAKER_DONE, R.FLAG_TAKER_DONE, R.FLAG_END, R.FLAG_QTY_CAP)
FLAG_CONTINUED, FLAG_DEFERRED = R.FLAG_CONTINUED, R.FLAG_DEFERRED
T_REPLACE, T_LIST = int(R.RecordType.CANCEL_REPLACE), int(R.RecordType.ORDER_LIST)
RS_LIST_LEG, RS_ADMIN = int(R.Reason.LIST_OTHER_LEG), int(R.Reason.CANCELED_BY_ADMIN)
T_KILL, T_PREVENTED, T_EXT = int(R.RecordType.KILL_ACCOUNT), int(R.RecordType.TRADE_PREVENTED), int(R.RecordType.EXT)
X_TEXT1 = _off(R.EXT_DTYPE, "text1")
P_ID, P_PRICE, P_TAKER_LOTS, P_MAKER_LOTS, P_MAKER, P_TAKER, P_MACC, P_SIDE, P_STP, P_MLEAVES, P_TLEAVES = (
    _off(R.PREVENTED_DTYPE, n) for n in ("prevented_match_id", "price_tick", "taker_prevented_lot",
                                          "maker_prevented_lot", "maker_order_id", "taker_order_id",
                                          "maker_account_id", "taker_side", "stp_mode", "maker_leaves_qty_lot",
                                          "taker_leaves_qty_lot"))
STOP_ON_FAILURE = int(R.ReplaceMode.STOP_ON_FAILURE)
RS_NOT_ATTEMPTED = int(R.Reason.NOT_ATTEMPTED)
SOURCE_MATCHING = R.SOURCE_MATCHING
CAUSE_SHIFT, CAUSE_MASK = R.CAUSE_SOURCE_SHIFT, R.CAUSE_SEQ_MASK

# --- the control block: one int64 array whose slots hold every base address and counter ----
(E_SYM, E_ORD, E_MAXORD, E_OFREE, E_NOFREE, E_LVL, E_LFREE, E_NLFREE, E_BKEYS, E_BLVL, E_BN, E_BCAP,
 E_HKEYS, E_HVALS, E_HMASK, E_SYMST, E_TBOOK, E_TPRICE, E_TCAP, E_NT, E_EPOCH, E_CAUSE, E_OUT, E_OUTCAP,
 E_OUTN, E_TS, E_SHARD, E_PEND, E_PSLOT, E_PACC, E_PSYM, E_PFOUND, E_NSYM, E_MAXLVL, E_TQTY, E_TCNT,
 E_REPLACE, E_TLVL) = range(38)
E_SLOTS = 40
# Slots a snapshot does not carry: addresses of this process's arrays and of the output.
LOCAL_SLOTS = (E_SYM, E_ORD, E_OFREE, E_LVL, E_LFREE, E_BKEYS, E_BLVL, E_BN, E_HKEYS, E_HVALS, E_SYMST, E_TBOOK,
               E_TPRICE, E_TQTY, E_TCNT, E_TLVL, E_OUT)
PEND_NONE, PEND_TAKER, PEND_CANCEL_ALL, PEND_TRIGGERS, PEND_KILL = 0, 1, 2, 3, 4
# E_REPLACE between a CANCEL_REPLACE and its leg: what to do with the leg.
REPLACE_NONE, REPLACE_GO, REPLACE_STOP = 0, 1, 2
MIN_FREE = 8  # output records a step wants free before it starts a command
# Per-symbol counters in sym_state (int64 x SYMST_WORDS per symbol).
SS_TRADE, SS_BOOKID, SS_LAST, SS_TRAIL_HEAD, SS_TRAIL_TAIL, SS_TRAIL_N, SS_PREVENTED, SYMST_WORDS = range(7 + 1)
BIPS = 10_000
RUN_DONE, RUN_SUSPENDED, RUN_STP_STOP = 0, 1, 2


@njit(cache=True, nogil=True)
def _g(E, k):
    return ld_i64(E + 8 * k)


@njit(cache=True, nogil=True)
def _s(E, k, v):
    st_i64(E + 8 * k, v)


@njit(cache=True, nogil=True)
def _oa(E, i):
    return _g(E, E_ORD) + i * OB


@njit(cache=True, nogil=True)
def _la(E, lv):
    return _g(E, E_LVL) + lv * LB


# --- order id -> pool slot ----------------------------------------------------------------
@njit(cache=True, nogil=True)
def _h_get(E, key):
    return hm_get(_g(E, E_HKEYS), _g(E, E_HVALS), _g(E, E_HMASK), key, -1)


@njit(cache=True, nogil=True)
def _h_put(E, key, val):
    hm_put(_g(E, E_HKEYS), _g(E, E_HVALS), _g(E, E_HMASK), key, val)


@njit(cache=True, nogil=True)
def _h_del(E, key):
    hm_del(_g(E, E_HKEYS), _g(E, E_HVALS), _g(E, E_HMASK), key)


# --- pools ------------------------------------------------------------------------------
@njit(cache=True, nogil=True)
def _order_alloc(E):
    return slot_take(_g(E, E_OFREE), E + 8 * E_NOFREE)


@njit(cache=True, nogil=True)
def _order_free(E, i):
    slot_give(_g(E, E_OFREE), E + 8 * E_NOFREE, i)


@njit(cache=True, nogil=True)
def _level_alloc(E):
    return slot_take(_g(E, E_LFREE), E + 8 * E_NLFREE)


@njit(cache=True, nogil=True)
def _level_free(E, lv):
    slot_give(_g(E, E_LFREE), E + 8 * E_NLFREE, lv)


# --- books: per (symbol, side) a sorted key array, best last ------------------------------
@njit(cache=True, nogil=True)
def _key(b, price):
    # Even books sort ascending (best = highest: bids, stops that trigger on a fall), odd
    # books descending (best = lowest: asks, stops that trigger on a rise). Best is last.
    return price if (b & 1) == 0 else -price


@njit(cache=True, nogil=True)
def _bk(E, b):
    return _g(E, E_BKEYS) + 8 * b * _g(E, E_BCAP)


@njit(cache=True, nogil=True)
def _bl(E, b):
    return _g(E, E_BLVL) + 4 * b * _g(E, E_BCAP)


@njit(cache=True, nogil=True)
def _bn(E, b):
    return ld_i64(_g(E, E_BN) + 8 * b)


@njit(cache=True, nogil=True)
def _lower_bound(E, b, key):
    """First position whose key is >= key. Branch-free: the halving always runs log2(n) steps
    and the comparison feeds arithmetic, not a jump (a mispredicted jump per step cost more
    than the whole search's loads)."""
    keys = _bk(E, b)
    first, length = 0, _bn(E, b)
    while length > 0:
        half = length >> 1
        # Below key: skip past the probe (for an even length this keeps the probe, which
        # is below key and so never the answer).
        first += (length - half) * int(ld_i64(keys + 8 * (first + half)) < key)
        length = half
    return first


@njit(cache=True, nogil=True)
def _find_level(E, b, price):
    """Level index at `price` in book b, or -1."""
    key = _key(b, price)
    pos = _lower_bound(E, b, key)
    if pos < _bn(E, b) and ld_i64(_bk(E, b) + 8 * pos) == key:
        return ld_i32(_bl(E, b) + 4 * pos)
    return -1


@njit(cache=True, nogil=True)
def _get_level(E, b, price):
    """Level index at `price`, created (empty, untouched) if missing; -1 if the book is full."""
    key = _key(b, price)
    keys, lvls, n = _bk(E, b), _bl(E, b), _bn(E, b)
    pos = _lower_bound(E, b, key)
    if pos < n and ld_i64(keys + 8 * pos) == key:
        return ld_i32(lvls + 4 * pos)
    if n == _g(E, E_BCAP) or _g(E, E_NLFREE) == 0:
        return -1
    # Open a gap at pos (best is last, so new levels near the top move little).
    move_bytes(keys + 8 * (pos + 1), keys + 8 * pos, 8 * (n - pos))
    move_bytes(lvls + 4 * (pos + 1), lvls + 4 * pos, 4 * (n - pos))
    lv = _level_alloc(E)
    st_i64(keys + 8 * pos, key)
    st_i32(lvls + 4 * pos, lv)
    st_i64(_g(E, E_BN) + 8 * b, n + 1)
    la = _la(E, lv)
    st_i64(la + L_PRICE, price)
    st_i64(la + L_QTY, 0)
    st_i64(la + L_COUNT, 0)
    st_i32(la + L_HEAD, -1)
    st_i32(la + L_TAIL, -1)
    st_i64(la + L_EPOCH, -1)  # new: `_touch` must check the list for a level it replaced
    return lv


@njit(cache=True, nogil=True)
def _rekey_level(E, b, lv, price):
    """Move level lv of book b to `price`, which has no level in b, keeping lv: the sorted
    arrays shift only between the old and the new position, and a move usually goes a few
    levels (one short memmove, where dropping and creating a level moved everything above
    each position). Returns False, changing nothing, if `price` has a level. The caller
    resets the level's contents."""
    keys, lvls, n = _bk(E, b), _bl(E, b), _bn(E, b)
    old_key, new_key = _key(b, ld_i64(_la(E, lv) + L_PRICE)), _key(b, price)
    pos = _lower_bound(E, b, old_key)
    if new_key > old_key:
        j = pos + 1  # first position above pos whose key is >= new_key
        while j < n and ld_i64(keys + 8 * j) < new_key:
            j += 1
        if j < n and ld_i64(keys + 8 * j) == new_key:
            return False
        move_bytes(keys + 8 * pos, keys + 8 * (pos + 1), 8 * (j - 1 - pos))
        move_bytes(lvls + 4 * pos, lvls + 4 * (pos + 1), 4 * (j - 1 - pos))
        j -= 1
    else:
        j = pos  # first position whose key is >= new_key
        while j > 0 and ld_i64(keys + 8 * (j - 1)) >= new_key:
            j -= 1
        if ld_i64(keys + 8 * j) == new_key and j < pos:
            return False
        move_bytes(keys + 8 * (j + 1), keys + 8 * j, 8 * (pos - j))
        move_bytes(lvls + 4 * (j + 1), lvls + 4 * j, 4 * (pos - j))
    st_i64(keys + 8 * j, new_key)
    st_i32(lvls + 4 * j, lv)
    st_i64(_la(E, lv) + L_PRICE, price)
    return True


@njit(cache=True, nogil=True)
def _drop_level(E, b, lv):
    """Remove an empty level from book b and free it (its touched-list entry, if this command
    touched it, now reports the price gone)."""
    if ld_i64(_la(E, lv) + L_EPOCH) == _g(E, E_EPOCH):
        st_i64(_g(E, E_TLVL) + 8 * ld_i64(_la(E, lv) + L_TIDX), -1)
    keys, lvls, n = _bk(E, b), _bl(E, b), _bn(E, b)
    pos = _lower_bound(E, b, _key(b, ld_i64(_la(E, lv) + L_PRICE)))
    move_bytes(keys + 8 * pos, keys + 8 * (pos + 1), 8 * (n - 1 - pos))
    move_bytes(lvls + 4 * pos, lvls + 4 * (pos + 1), 4 * (n - 1 - pos))
    st_i64(_g(E, E_BN) + 8 * b, n - 1)
    _level_free(E, lv)


@njit(cache=True, nogil=True)
def _touch(E, b, lv):
    """Remember, before its first change in this command, that level lv of book b is about to
    change, with its state then (once per price), and where the level is: the report reads it
    without a search. Stop books (b >= 2 x symbols) are not market data. Callers touch before
    they modify the level."""
    if b >= 2 * _g(E, E_NSYM):
        return
    la = _la(E, lv)
    epoch = _g(E, E_EPOCH)
    seen = ld_i64(la + L_EPOCH)
    if seen == epoch:
        return
    st_i64(la + L_EPOCH, epoch)
    price = ld_i64(la + L_PRICE)
    nt = _g(E, E_NT)
    tb, tp = _g(E, E_TBOOK), _g(E, E_TPRICE)
    if seen == -1:  # a level created in this command may replace one already listed
        for j in range(nt):
            if ld_i64(tb + 8 * j) == b and ld_i64(tp + 8 * j) == price:
                st_i64(_g(E, E_TLVL) + 8 * j, lv)
                st_i64(la + L_TIDX, j)
                return
    st_i64(la + L_TIDX, nt)
    st_i64(_g(E, E_TLVL) + 8 * nt, lv)
    st_i64(tb + 8 * nt, b)
    st_i64(tp + 8 * nt, price)
    st_i64(_g(E, E_TQTY) + 8 * nt, ld_i64(la + L_QTY))
    st_i64(_g(E, E_TCNT) + 8 * nt, ld_i64(la + L_COUNT))
    _s(E, E_NT, nt + 1)


@njit(cache=True, nogil=True)
def _append(E, b, lv, oi):
    """Put order oi at the back of level lv of book b."""
    la, oa = _la(E, lv), _oa(E, oi)
    st_i32(oa + O_BOOK, b)
    tail = ld_i32(la + L_TAIL)
    st_i32(oa + O_PREV, tail)
    st_i32(oa + O_NEXT, -1)
    st_i32(oa + O_LEVEL, lv)
    if tail < 0:
        st_i32(la + L_HEAD, oi)
    else:
        st_i32(_oa(E, tail) + O_NEXT, oi)
    st_i32(la + L_TAIL, oi)
    # The book shows an iceberg's current slice only; everything else shows all it has left.
    leaves, ice = ld_i64(oa + O_LEAVES), ld_i64(oa + O_ICE)
    visible = min(ice, leaves) if ice > 0 else leaves
    st_i64(oa + O_VIS, visible)
    st_i64(la + L_QTY, ld_i64(la + L_QTY) + visible)
    st_i64(la + L_COUNT, ld_i64(la + L_COUNT) + 1)


@njit(cache=True, nogil=True)
def _unlink(E, oi):
    """Take order oi out of its level (dropping the level if it empties; touches it) or out of
    its symbol's trailing list."""
    oa = _oa(E, oi)
    if ld_i32(oa + O_BOOK) == BOOK_TRAILING:
        _trail_remove(E, oi)
        return
    lv = ld_i32(oa + O_LEVEL)
    la = _la(E, lv)
    b = ld_i32(oa + O_BOOK)
    _touch(E, b, lv)
    prev, nxt = ld_i32(oa + O_PREV), ld_i32(oa + O_NEXT)
    if prev < 0:
        st_i32(la + L_HEAD, nxt)
    else:
        st_i32(_oa(E, prev) + O_NEXT, nxt)
    if nxt < 0:
        st_i32(la + L_TAIL, prev)
    else:
        st_i32(_oa(E, nxt) + O_PREV, prev)
    st_i32(oa + O_LEVEL, -1)
    st_i64(la + L_QTY, ld_i64(la + L_QTY) - ld_i64(oa + O_VIS))
    count = ld_i64(la + L_COUNT) - 1
    st_i64(la + L_COUNT, count)
    if count == 0:
        _drop_level(E, b, lv)


@njit(cache=True, nogil=True)
def _sst(E, sym):
    """Address of the symbol's counters (SS_* words)."""
    return _g(E, E_SYMST) + 8 * sym * SYMST_WORDS


@njit(cache=True, nogil=True)
def _trail_add(E, oi):
    """Put trailing stop oi at the back of its symbol's trailing list."""
    oa = _oa(E, oi)
    sst = _sst(E, ld_u32(oa + O_SYM))
    tail = ld_i64(sst + 8 * SS_TRAIL_TAIL)
    st_i32(oa + O_BOOK, BOOK_TRAILING)
    st_i32(oa + O_PREV, tail)
    st_i32(oa + O_NEXT, -1)
    if tail < 0:
        st_i64(sst + 8 * SS_TRAIL_HEAD, oi)
    else:
        st_i32(_oa(E, tail) + O_NEXT, oi)
    st_i64(sst + 8 * SS_TRAIL_TAIL, oi)
    st_i64(sst + 8 * SS_TRAIL_N, ld_i64(sst + 8 * SS_TRAIL_N) + 1)


@njit(cache=True, nogil=True)
def _trail_remove(E, oi):
    oa = _oa(E, oi)
    sst = _sst(E, ld_u32(oa + O_SYM))
    prev, nxt = ld_i32(oa + O_PREV), ld_i32(oa + O_NEXT)
    if prev < 0:
        st_i64(sst + 8 * SS_TRAIL_HEAD, nxt)
    else:
        st_i32(_oa(E, prev) + O_NEXT, nxt)
    if nxt < 0:
        st_i64(sst + 8 * SS_TRAIL_TAIL, prev)
    else:
        st_i32(_oa(E, nxt) + O_PREV, prev)
    st_i32(oa + O_BOOK, -1)
    st_i64(sst + 8 * SS_TRAIL_N, ld_i64(sst + 8 * SS_TRAIL_N) - 1)


@njit(cache=True, nogil=True)
def _trail_trade(E, sym, price):
    """A trade at `price`: each waiting trailing stop of the symbol starts tracking (its stop
    condition is met, or it has no stop price), follows the best price since, or fires when
    the price moved its delta against it: buys on a rise from the lowest price, sells on a fall
    from the highest (exactly: price x 1e4 >= low x (1e4 + delta), price x 1e4 <= high x
    (1e4 - delta)). A fired stop only gets a mark here; `_triggers` runs it."""
    oi = ld_i64(_sst(E, sym) + 8 * SS_TRAIL_HEAD)
    while oi >= 0:
        oa = _oa(E, oi)
        if ld_u8(oa + O_FIRED) == 0:
            ref = ld_i64(oa + O_REF)
            stop = ld_i64(oa + O_STOP)
            if ref == 0:
                if stop == 0 or _triggered(E, _stop_book(E, sym, ld_u8(oa + O_SIDE), ld_u8(oa + O_TYPE)), stop, price):
                    st_i64(oa + O_REF, price)
            else:
                delta = ld_u16(oa + O_TRAIL)
                if ld_u8(oa + O_SIDE) == BUY:
                    if price * BIPS >= ref * (BIPS + delta):
                        st_u8(oa + O_FIRED, 1)
                    elif price < ref:
                        st_i64(oa + O_REF, price)
                elif price * BIPS <= ref * (BIPS - delta):
                    st_u8(oa + O_FIRED, 1)
                elif price > ref:
                    st_i64(oa + O_REF, price)
        oi = ld_i32(oa + O_NEXT)


@njit(cache=True, nogil=True)
def _requeue(E, oi):
    """An iceberg whose slice ran out shows its next slice at the back of its level."""
    _unlink(E, oi)
    b = ld_i32(_oa(E, oi) + O_BOOK)
    lv = _get_level(E, b, ld_i64(_oa(E, oi) + O_PRICE))  # room: its own level was just freed
    _touch(E, b, lv)
    _append(E, b, lv, oi)


@njit(cache=True, nogil=True)
def _release(E, oi):
    """Forget order oi; an OCO leg takes its working sibling with it."""
    _end_sibling(E, oi, T_EXPIRED, RS_LIST_LEG, ST_EXPIRED)
    _forget(E, oi)


@njit(cache=True, nogil=True)
def _forget(E, oi):
    """Id map and pool slot. (Not `_release`: numba's cache cannot load recursive functions.)"""
    _h_del(E, ld_i64(_oa(E, oi) + O_ID))
    _order_free(E, oi)


@njit(cache=True, nogil=True)
def _end_sibling(E, oi, rtype, reason, status):
    """If oi is an OCO leg whose other leg still works, end that leg (out of its book, the
    event, forgotten). The link is cut both ways first."""
    oa = _oa(E, oi)
    link = ld_i64(oa + O_LINK)
    if link == 0:
        return
    st_i64(oa + O_LINK, 0)
    sib = _h_get(E, link)
    if sib < 0:
        return
    sa = _oa(E, sib)
    st_i64(sa + O_LINK, 0)
    if ld_i32(sa + O_LEVEL) >= 0 or ld_i32(sa + O_BOOK) == BOOK_TRAILING:
        _unlink(E, sib)
    _emit_order(E, rtype, sib, reason, status)
    _forget(E, sib)  # its link is cut: nothing more to end


# --- output ------------------------------------------------------------------------------
@njit(cache=True, nogil=True)
def _emit(E, rtype, account, symbol, reason, flags):
    """Start the next output record; returns its address (payload zeroed)."""
    n = _g(E, E_OUTN)
    a = _g(E, E_OUT) + n * RB
    zero_bytes(a, RB)
    _s(E, E_OUTN, n + 1)
    st_u16(a + H_TYPE, rtype)
    st_u16(a + H_FLAGS, flags)
    st_u16(a + H_SOURCE, SOURCE_MATCHING | _g(E, E_SHARD))
    st_u16(a + H_REASON, reason)
    st_i64(a + H_TS, _g(E, E_TS))
    st_i64(a + H_SRCSEQ, _g(E, E_CAUSE))
    st_u32(a + H_ACC, account)
    st_u32(a + H_SYM, symbol)
    return a


@njit(cache=True, nogil=True)
def _emit_order(E, rtype, oi, reason, status):
    oa = _oa(E, oi)
    a = _emit(E, rtype, ld_u32(oa + O_ACC), ld_u32(oa + O_SYM), reason, 0)
    st_i64(a + E_ORDER, ld_i64(oa + O_ID))
    st_i64(a + E_PRICE, ld_i64(oa + O_PRICE))
    st_i64(a + E_QTY, 0 if ld_u8(oa + O_CAP) else ld_i64(oa + O_QTY))  # a risk cap is not the order's
    st_i64(a + E_EXEC, ld_i64(oa + O_EXEC))
    st_i64(a + E_CUMQ, ld_i64(oa + O_CUMQ))
    st_i64(a + E_STOP, ld_i64(oa + O_STOP))
    st_u8(a + E_SIDE, ld_u8(oa + O_SIDE))
    st_u8(a + E_TYPE, ld_u8(oa + O_TYPE))
    st_u8(a + E_TIF, ld_u8(oa + O_TIF))
    st_u8(a + E_STATUS, status)
    return a
    return a


@njit(cache=True, nogil=True)
def _emit_cancel_reject(E, account, symbol, order_id, reason):
    a = _emit(E, T_CANCEL_REJ, account, symbol, reason, 0)
    st_i64(a + E_ORDER, order_id)
    return a


@njit(cache=True, nogil=True)
def _emit_book_updates(E):
    """One BOOK_UPDATE per level this command changed, in first-touch order (a level that
    ends as it began, in quantity and order count, is not reported)."""
    tb, tp = _g(E, E_TBOOK), _g(E, E_TPRICE)
    for j in range(_g(E, E_NT)):
        b, price = ld_i64(tb + 8 * j), ld_i64(tp + 8 * j)
        sym, side = b >> 1, (b & 1) + 1
        lv = ld_i64(_g(E, E_TLVL) + 8 * j)  # -1: the level went
        qty = ld_i64(_la(E, lv) + L_QTY) if lv >= 0 else 0
        count = ld_i64(_la(E, lv) + L_COUNT) if lv >= 0 else 0
        if qty == ld_i64(_g(E, E_TQTY) + 8 * j) and count == ld_i64(_g(E, E_TCNT) + 8 * j):
            continue
        st_ptr = _g(E, E_SYMST) + 8 * (sym * SYMST_WORDS + SS_BOOKID)
        uid = ld_i64(st_ptr) + 1
        st_i64(st_ptr, uid)
        a = _emit(E, T_BOOK, 0, sym, 0, 0)
        st_i64(a + B_ID, uid)
        st_i64(a + B_PRICE, price)
        if lv >= 0:
            st_i64(a + B_QTY, ld_i64(_la(E, lv) + L_QTY))
            st_i64(a + B_ORDERS, ld_i64(_la(E, lv) + L_COUNT))
        st_u8(a + B_SIDE, side)
    _s(E, E_NT, 0)


@njit(cache=True, nogil=True)
def _room(E, extra):
    """True if `extra` more records plus the pending book updates (and their slack) still fit."""
    return _g(E, E_OUTN) + extra + _g(E, E_NT) + 2 <= _g(E, E_OUTCAP)


# --- matching ------------------------------------------------------------------------------
@njit(cache=True, nogil=True)
def _status_of(oa):
    if ld_i64(oa + O_EXEC) == 0:
        return ST_NEW
    return ST_PARTIAL


@njit(cache=True, nogil=True)
def _market_like(otype):
    return otype == MARKET or otype == STOP_LOSS or otype == TAKE_PROFIT


@njit(cache=True, nogil=True)
def _is_stop(otype):
    return otype == STOP_LOSS or otype == STOP_LOSS_LIMIT or otype == TAKE_PROFIT or otype == TAKE_PROFIT_LIMIT


@njit(cache=True, nogil=True)
def _stop_book(E, sym, side, otype):
    """Stops that trigger on a rise (buy stop-loss, sell take-profit) sit in the odd stop book
    (lowest stop first); those that trigger on a fall in the even one (highest first)."""
    rises = (side == BUY) == (otype == STOP_LOSS or otype == STOP_LOSS_LIMIT)
    return 2 * _g(E, E_NSYM) + sym * 2 + (1 if rises else 0)


@njit(cache=True, nogil=True)
def _crosses(side, limit, maker_price, is_market):
    if is_market:
        return True
    return maker_price <= limit if side == BUY else maker_price >= limit


# A taker has up to two budgets: leaves (when qty_lot > 0) and a quote budget (quote_left >= 0;
# -1 = none): MARKET by quote, or a cap risk sets on market buys by quantity.
@njit(cache=True, nogil=True)
def _taker_lots(E, ta, price, qpl):
    """Lots the taker can still take at `price`: the smaller of its budgets."""
    lots = ld_i64(ta + O_LEAVES) if ld_i64(ta + O_QTY) > 0 else (1 << 62)
    qleft = ld_i64(ta + O_QLEFT)
    if qleft >= 0:
        lots = min(lots, qleft // (price * qpl))
    return lots


@njit(cache=True, nogil=True)
def _consume(E, ta, lots, quote):
    if ld_i64(ta + O_QTY) > 0:
        st_i64(ta + O_LEAVES, ld_i64(ta + O_LEAVES) - lots)
    if ld_i64(ta + O_QLEFT) >= 0:
        st_i64(ta + O_QLEFT, ld_i64(ta + O_QLEFT) - quote)


@njit(cache=True, nogil=True)
def _defined_by_qty(ta):
    return ld_i64(ta + O_QTY) > 0 and ld_u8(ta + O_CAP) == 0


@njit(cache=True, nogil=True)
def _taker_left(ta):
    """What the taker has left of its defining budget (quantity, or quote for MARKET by quote)."""
    return ld_i64(ta + O_LEAVES) if _defined_by_qty(ta) else ld_i64(ta + O_QLEFT)


@njit(cache=True, nogil=True)
def _take(E, ta, lots, price, qpl):
    """Book `lots` at `price` against the taker's budgets; returns the quote amount."""
    quote = lots * price * qpl
    st_i64(ta + O_EXEC, ld_i64(ta + O_EXEC) + lots)
    st_i64(ta + O_CUMQ, ld_i64(ta + O_CUMQ) + quote)
    _consume(E, ta, lots, quote)
    return quote


@njit(cache=True, nogil=True)
def _fok_fillable(E, ti):
    """FOK pre-check: the quantity STP lets it trade covers the whole order."""
    ta = _oa(E, ti)
    side = ld_u8(ta + O_SIDE)
    sym = ld_u32(ta + O_SYM)
    acc = ld_u32(ta + O_ACC)
    stp = ld_u8(ta + O_STP)
    need = ld_i64(ta + O_LEAVES)
    limit = ld_i64(ta + O_PRICE)
    ob = sym * 2 + (2 - side)  # opposite book
    lvls = _bl(E, ob)
    got = 0
    pos = _bn(E, ob) - 1
    while pos >= 0:
        la = _la(E, ld_i32(lvls + 4 * pos))
        if not _crosses(side, limit, ld_i64(la + L_PRICE), False):
            return False
        mi = ld_i32(la + L_HEAD)
        while mi >= 0:
            ma = _oa(E, mi)
            if ld_u32(ma + O_ACC) == acc and stp != STP_NONE:
                if stp != STP_MAKER:
                    return False
            else:
                got += ld_i64(ma + O_LEAVES)
                if got >= need:
                    return True
            mi = ld_i32(ma + O_NEXT)
        pos -= 1
    return False


@njit(cache=True, nogil=True)
def _expire(E, oi, reason, status):
    """Emit the order's end and forget it (it must not be in a level)."""
    _emit_order(E, T_EXPIRED, oi, reason, status)
    _release(E, oi)


@njit(cache=True, nogil=True)
def _match(E, ti):
    """Trade taker ti against the opposite book. RUN_DONE when it can trade no more,
    RUN_SUSPENDED when the output is full (call again), RUN_STP_STOP when STP ends it."""
    ta = _oa(E, ti)
    side = ld_u8(ta + O_SIDE)
    sym = ld_u32(ta + O_SYM)
    acc = ld_u32(ta + O_ACC)
    stp = ld_u8(ta + O_STP)
    is_market = _market_like(ld_u8(ta + O_TYPE))
    limit = ld_i64(ta + O_PRICE)
    qpl = ld_i64(_g(E, E_SYM) + sym * SB + S_QPL)
    ob = sym * 2 + (2 - side)
    sst = _g(E, E_SYMST) + 8 * sym * SYMST_WORDS
    while True:
        n = _bn(E, ob)
        if n == 0:
            return RUN_DONE
        lv = ld_i32(_bl(E, ob) + 4 * (n - 1))
        la = _la(E, lv)
        price = ld_i64(la + L_PRICE)
        if not _crosses(side, limit, price, is_market):
            return RUN_DONE
        lots = _taker_lots(E, ta, price, qpl)
        if lots <= 0:
            return RUN_DONE
        if not _room(E, 5):  # a fill, a maker's OCO sibling ending, and the levels they touch
            return RUN_SUSPENDED
        mi = ld_i32(la + L_HEAD)
        ma = _oa(E, mi)
        m_leaves = ld_i64(ma + O_LEAVES)
        m_vis = ld_i64(ma + O_VIS)
        self_trade = ld_u32(ma + O_ACC) == acc
        if self_trade and stp != STP_NONE:
            t_left = ld_i64(ta + O_LEAVES) if _defined_by_qty(ta) else 0
            if stp == STP_TAKER:
                _prevented(E, ta, ma, price, t_left, 0)
                return RUN_STP_STOP
            if stp == STP_DECR:
                d = min(lots, m_vis)
                _prevented(E, ta, ma, price, d if _defined_by_qty(ta) else 0, d)
                _touch(E, ob, lv)
                st_i64(la + L_QTY, ld_i64(la + L_QTY) - d)
                st_i64(ma + O_LEAVES, m_leaves - d)
                st_i64(ma + O_VIS, m_vis - d)
                _consume(E, ta, d, d * price * qpl)
                if m_leaves - d == 0:
                    _unlink(E, mi)
                    _expire(E, mi, RS_STP, ST_EXP_MATCH)
                elif m_vis - d == 0:
                    _requeue(E, mi)
                if _taker_left(ta) == 0:
                    return RUN_STP_STOP
                continue
            # EXPIRE_MAKER and EXPIRE_BOTH remove this maker.
            _prevented(E, ta, ma, price, t_left if stp == STP_BOTH else 0, m_leaves)
            _unlink(E, mi)
            _expire(E, mi, RS_STP, ST_EXP_MATCH)
            if stp == STP_BOTH:
                return RUN_STP_STOP
            continue
        q = min(lots, m_vis)
        st_i64(ma + O_LEAVES, m_leaves - q)
        st_i64(ma + O_VIS, m_vis - q)
        st_i64(ma + O_EXEC, ld_i64(ma + O_EXEC) + q)
        quote = _take(E, ta, q, price, qpl)
        st_i64(ma + O_CUMQ, ld_i64(ma + O_CUMQ) + quote)
        _touch(E, ob, lv)
        st_i64(la + L_QTY, ld_i64(la + L_QTY) - q)
        trade_id = ld_i64(sst + 8 * SS_TRADE) + 1
        st_i64(sst + 8 * SS_TRADE, trade_id)
        st_i64(sst + 8 * SS_LAST, price)
        if ld_i64(sst + 8 * SS_TRAIL_N) > 0:
            _trail_trade(E, sym, price)
        taker_left = _taker_left(ta)
        flags = (FLAG_SELF_TRADE if self_trade else 0) | (FLAG_MAKER_DONE if m_leaves == q else 0)
        a = _emit(E, T_FILL, acc, sym, 0, flags | (FLAG_TAKER_DONE if taker_left == 0 else 0))
        st_i64(a + F_TRADE, trade_id)
        st_i64(a + F_PRICE, price)
        st_i64(a + F_QTY, q)
        st_i64(a + F_QUOTE, quote)
        st_i64(a + F_MAKER, ld_i64(ma + O_ID))
        st_i64(a + F_TAKER, ld_i64(ta + O_ID))
        st_u32(a + F_MACC, ld_u32(ma + O_ACC))
        st_u8(a + F_TSIDE, side)
        st_u8(a + F_TTYPE, ld_u8(ta + O_TYPE))
        st_i64(a + F_MLEAVES, m_leaves - q)
        if _defined_by_qty(ta):
            st_i64(a + F_TLEAVES, taker_left)
        if ld_i64(ma + O_LINK) != 0:  # an OCO leg traded: the other leg expires
            _end_sibling(E, mi, T_EXPIRED, RS_LIST_LEG, ST_EXPIRED)
        if m_leaves == q:
            # The maker is filled: take it off the book (its qty is already out of the level).
            _unlink(E, mi)
            _release(E, mi)
        elif m_vis == q:
            _requeue(E, mi)


@njit(cache=True, nogil=True)
def _prevented(E, ta, ma, price, taker_lots, maker_lots):
    """TRADE_PREVENTED: a self-trade STP stopped, with the quantities it takes off each side
    (their leaves as they will be after it)."""
    sym = ld_u32(ta + O_SYM)
    sst = _sst(E, sym)
    pid = ld_i64(sst + 8 * SS_PREVENTED) + 1
    st_i64(sst + 8 * SS_PREVENTED, pid)
    a = _emit(E, T_PREVENTED, ld_u32(ta + O_ACC), sym, 0, 0)
    st_i64(a + P_ID, pid)
    st_i64(a + P_PRICE, price)
    st_i64(a + P_TAKER_LOTS, taker_lots)
    st_i64(a + P_MAKER_LOTS, maker_lots)
    st_i64(a + P_MAKER, ld_i64(ma + O_ID))
    st_i64(a + P_TAKER, ld_i64(ta + O_ID))
    st_u32(a + P_MACC, ld_u32(ma + O_ACC))
    st_u8(a + P_SIDE, ld_u8(ta + O_SIDE))
    st_u8(a + P_STP, ld_u8(ta + O_STP))
    st_i64(a + P_MLEAVES, ld_i64(ma + O_LEAVES) - maker_lots)
    if _defined_by_qty(ta):
        st_i64(a + P_TLEAVES, ld_i64(ta + O_LEAVES) - taker_lots)


@njit(cache=True, nogil=True)
def _finish_taker(E, ti, run):
    """After matching ends: STP-expire, rest, expire the remainder, or forget a filled order."""
    ta = _oa(E, ti)
    if run == RUN_STP_STOP:
        _expire(E, ti, RS_STP, ST_EXP_MATCH)
        return
    if _taker_left(ta) == 0:
        _release(E, ti)  # filled: its fills said so
        return
    otype = ld_u8(ta + O_TYPE)
    limit_like = otype == LIMIT or otype == STOP_LOSS_LIMIT or otype == TAKE_PROFIT_LIMIT
    if not (otype == LIMIT_MAKER or (limit_like and ld_u8(ta + O_TIF) == GTC)):
        _expire(E, ti, RS_IOC, ST_EXPIRED)
        return
    side = ld_u8(ta + O_SIDE)
    sym = ld_u32(ta + O_SYM)
    b = sym * 2 + side - 1
    lv = _get_level(E, b, ld_i64(ta + O_PRICE))
    if lv < 0:  # the book is at its configured capacity: refuse to rest rather than lose it
        _expire(E, ti, RS_FULL, ST_EXPIRED)
        return
    _touch(E, b, lv)
    _append(E, b, lv, ti)


@njit(cache=True, nogil=True)
def _would_take(E, sym, side, price):
    ob = sym * 2 + (2 - side)
    n = _bn(E, ob)
    if n == 0:
        return False
    best = ld_i64(_la(E, ld_i32(_bl(E, ob) + 4 * (n - 1))) + L_PRICE)
    return _crosses(side, price, best, False)


@njit(cache=True, nogil=True)
def _reject_new(E, c, reason):
    """ORDER_REJECTED for the NEW_ORDER record at c (its order id is the record's seq)."""
    otype = ld_u8(c + N_TYPE)
    a = _emit(E, T_REJECTED, ld_u32(c + H_ACC), ld_u32(c + H_SYM), reason, 0)
    st_i64(a + E_ORDER, ld_i64(c + H_SEQ))
    st_i64(a + E_PRICE, ld_i64(c + N_PRICE) if otype != MARKET else 0)
    st_i64(a + E_QTY, 0 if ld_u16(c + H_FLAGS) & FLAG_QTY_CAP else ld_i64(c + N_QTY))
    copy_bytes(a + E_CID, c + N_CID, CID_BYTES)
    st_u8(a + E_SIDE, ld_u8(c + N_SIDE))
    st_u8(a + E_TYPE, otype)
    st_i64(a + E_STOP, ld_i64(c + N_STOP) if _is_stop(otype) else 0)
    st_u8(a + E_TIF, ld_u8(c + N_TIF))
    st_u8(a + E_STATUS, ST_REJECTED)


@njit(cache=True, nogil=True)
def _entry_reject(E, c):
    """Why the NEW_ORDER at c cannot enter as it is (LIMIT_MAKER that would take, a stop
    already triggered), or 0."""
    sym, otype, side = ld_u32(c + H_SYM), ld_u8(c + N_TYPE), ld_u8(c + N_SIDE)
    stop = ld_i64(c + N_STOP) if _is_stop(otype) else 0
    last = ld_i64(_sst(E, sym) + 8 * SS_LAST)
    if otype == LIMIT_MAKER and _would_take(E, sym, side, ld_i64(c + N_PRICE)):
        return RS_WOULD_MATCH
    if stop > 0 and last > 0 and _triggered(E, _stop_book(E, sym, side, otype), stop, last):
        return RS_WOULD_TRIGGER
    return 0


@njit(cache=True, nogil=True)
def _order_list(E, c):
    """An OCO: header at c, legs at c + RB (above) and c + 2 RB (below). Both enter or
    neither (each leg is ORDER_REJECTED with the first reason found); then each names the
    other (link) until one activates or ends. Legs never trade on entry."""
    above, below = c + RB, c + 2 * RB
    reason = _entry_reject(E, above)
    if reason == 0:
        reason = _entry_reject(E, below)
    if reason == 0 and _g(E, E_NOFREE) < 2:
        reason = RS_FULL
    if reason:
        _reject_new(E, above, reason)
        _reject_new(E, below, reason)
        return
    _new_order(E, above)
    _new_order(E, below)
    ia, ib = _h_get(E, ld_i64(above + H_SEQ)), _h_get(E, ld_i64(below + H_SEQ))
    if ia >= 0 and ib >= 0:
        st_i64(_oa(E, ia) + O_LINK, ld_i64(below + H_SEQ))
        st_i64(_oa(E, ib) + O_LINK, ld_i64(above + H_SEQ))
    elif ia >= 0 or ib >= 0:  # the other could not rest (capacity): a list is both or nothing
        left = ia if ia >= 0 else ib
        if ld_i32(_oa(E, left) + O_LEVEL) >= 0 or ld_i32(_oa(E, left) + O_BOOK) == BOOK_TRAILING:
            _unlink(E, left)
        _expire(E, left, RS_LIST_LEG, ST_EXPIRED)


@njit(cache=True, nogil=True)
def _new_order(E, c):
    """A NEW_ORDER record at address c. Returns 1 if matching suspended."""
    acc, sym = ld_u32(c + H_ACC), ld_u32(c + H_SYM)
    otype, side = ld_u8(c + N_TYPE), ld_u8(c + N_SIDE)
    price = ld_i64(c + N_PRICE) if otype != MARKET else 0
    stop = ld_i64(c + N_STOP) if _is_stop(otype) else 0
    last = ld_i64(_g(E, E_SYMST) + 8 * (sym * SYMST_WORDS + SS_LAST))
    reject = _entry_reject(E, c)
    if reject == 0 and _g(E, E_NOFREE) == 0:
        reject = RS_FULL
    if reject:
        _reject_new(E, c, reject)
        return 0
    ti = _order_alloc(E)
    ta = _oa(E, ti)
    oid = ld_i64(c + H_SEQ)
    st_i64(ta + O_ID, oid)
    st_i64(ta + O_PRICE, price)
    qty = ld_i64(c + N_QTY)
    st_i64(ta + O_QTY, qty)
    st_i64(ta + O_LEAVES, qty)
    st_i64(ta + O_EXEC, 0)
    st_i64(ta + O_CUMQ, 0)
    quote = ld_i64(c + N_QUOTE)
    st_i64(ta + O_QLEFT, quote if (_market_like(otype) and quote > 0) else -1)
    st_i64(ta + O_STOP, stop)
    trail = ld_i32(c + N_TRAIL) if _is_stop(otype) else 0
    st_u16(ta + O_TRAIL, trail)
    st_u8(ta + O_FIRED, 0)
    st_i64(ta + O_REF, last if stop == 0 else 0)  # no stop price: it tracks from now on
    st_i64(ta + O_LINK, 0)
    st_i64(ta + O_ICE, ld_i64(c + N_ICE) if (otype == LIMIT or otype == LIMIT_MAKER) else 0)
    st_i64(ta + O_VIS, 0)
    st_i32(ta + O_LEVEL, -1)
    st_i32(ta + O_BOOK, -1)
    st_u8(ta + O_CAP, 1 if (ld_u16(c + H_FLAGS) & FLAG_QTY_CAP) and quote > 0 else 0)
    st_u32(ta + O_ACC, acc)
    st_u32(ta + O_SYM, sym)
    st_u8(ta + O_SIDE, side)
    st_u8(ta + O_TYPE, otype)
    tif = ld_u8(c + N_TIF)
    st_u8(ta + O_TIF, tif)
    stp = ld_u8(c + N_STP)
    st_u8(ta + O_STP, stp if stp != 0 else ld_u8(_g(E, E_SYM) + sym * SB + S_STP))
    _h_put(E, oid, ti)
    a = _emit_order(E, T_ACCEPTED, ti, 0, ST_NEW)
    copy_bytes(a + E_CID, c + N_CID, CID_BYTES)
    if trail > 0:  # waits in its symbol's trailing list, following trades
        _trail_add(E, ti)
        return 0
    if stop > 0:  # waits in its stop book for the last trade price
        b = _stop_book(E, sym, side, otype)
        lv = _get_level(E, b, stop)
        if lv < 0:
            _expire(E, ti, RS_FULL, ST_EXPIRED)
        else:
            _append(E, b, lv, ti)
        return 0
    if otype == LIMIT_MAKER:
        _finish_taker(E, ti, RUN_DONE)
        return 0
    return _start_taker(E, ti)


@njit(cache=True, nogil=True)
def _start_taker(E, ti):
    """FOK pre-check, then match. Returns 1 if matching suspended."""
    ta = _oa(E, ti)
    if ld_u8(ta + O_TIF) == FOK and not _market_like(ld_u8(ta + O_TYPE)) and not _fok_fillable(E, ti):
        _expire(E, ti, RS_FOK, ST_EXPIRED)
        return 0
    return _run_taker(E, ti)


@njit(cache=True, nogil=True)
def _triggered(E, b, stop, last):
    """Would a stop at `stop` in stop book b fire at last trade price `last`?"""
    return last >= stop if (b & 1) == 1 else last <= stop


@njit(cache=True, nogil=True)
def _triggers(E, sym):
    """Fire the symbol's stops that the last trade price has reached, one at a time (falling-
    trigger book first, best stop first, FIFO), each running as a taker that may move the price
    further. Returns 1 if the output filled (resume later)."""
    sst = _g(E, E_SYMST) + 8 * (sym * SYMST_WORDS + SS_LAST)
    while True:
        last = ld_i64(sst)
        if last == 0:
            return 0
        fired = -1
        for k in range(2):
            b = 2 * _g(E, E_NSYM) + sym * 2 + k
            n = _bn(E, b)
            if n > 0:
                la = _la(E, ld_i32(_bl(E, b) + 4 * (n - 1)))
                if _triggered(E, b, ld_i64(la + L_PRICE), last):
                    fired = ld_i32(la + L_HEAD)
                    break
        if fired < 0 and ld_i64(_sst(E, sym) + 8 * SS_TRAIL_N) > 0:
            oi = ld_i64(_sst(E, sym) + 8 * SS_TRAIL_HEAD)
            while oi >= 0 and fired < 0:
                if ld_u8(_oa(E, oi) + O_FIRED):
                    fired = oi
                oi = ld_i32(_oa(E, oi) + O_NEXT)
        if fired < 0:
            return 0
        if not _room(E, 6):
            _s(E, E_PEND, PEND_TRIGGERS)
            _s(E, E_PSYM, sym)
            return 1
        _unlink(E, fired)
        _emit_order(E, T_TRIGGERED, fired, 0, ST_NEW)
        _end_sibling(E, fired, T_EXPIRED, RS_LIST_LEG, ST_EXPIRED)
        if _start_taker(E, fired):
            return 1


@njit(cache=True, nogil=True)
def _run_taker(E, ti):
    run = _match(E, ti)
    if run == RUN_SUSPENDED:
        _s(E, E_PEND, PEND_TAKER)
        _s(E, E_PSLOT, ti)
        _s(E, E_PSYM, ld_u32(_oa(E, ti) + O_SYM))
        return 1
    _finish_taker(E, ti, run)
    return 0


@njit(cache=True, nogil=True)
def _lookup(E, acc, sym, order_id):
    """Pool slot of an open order of this account and symbol, or -1."""
    if order_id <= 0:
        return -1
    oi = _h_get(E, order_id)
    if oi < 0:
        return -1
    oa = _oa(E, oi)
    if ld_u32(oa + O_ACC) != acc or ld_u32(oa + O_SYM) != sym:
        return -1
    return oi


@njit(cache=True, nogil=True)
def _cancel(E, c):
    acc, sym = ld_u32(c + H_ACC), ld_u32(c + H_SYM)
    order_id = ld_i64(c + C_ORDER)
    oi = _lookup(E, acc, sym, order_id)
    if oi < 0:
        a = _emit_cancel_reject(E, acc, sym, order_id, RS_UNKNOWN)
        copy_bytes(a + E_CID, c + C_NEWCID, CID_BYTES)  # the cancel's own id
        return False
    oa = _oa(E, oi)
    restrict = ld_u8(c + C_RESTRICT)
    executed = ld_i64(oa + O_EXEC)
    if (restrict == ONLY_NEW and executed != 0) or (restrict == ONLY_PARTIAL and executed == 0):
        a = _emit_cancel_reject(E, acc, sym, order_id, RS_RESTRICT)
        copy_bytes(a + E_CID, c + C_NEWCID, CID_BYTES)
        return False
    _unlink(E, oi)
    a = _emit_order(E, T_CANCELED, oi, RS_USER, ST_CANCELED)
    copy_bytes(a + E_CID, c + C_NEWCID, CID_BYTES)
    _end_sibling(E, oi, T_CANCELED, RS_USER, ST_CANCELED)  # cancelling a leg cancels its list
    _release(E, oi)
    return True


@njit(cache=True, nogil=True)
def _cut_link(E, oi):
    link = ld_i64(_oa(E, oi) + O_LINK)
    if link != 0:
        st_i64(_oa(E, oi) + O_LINK, 0)
        sib = _h_get(E, link)
        if sib >= 0:
            st_i64(_oa(E, sib) + O_LINK, 0)


@njit(cache=True, nogil=True)
def _cancel_one(E, oi, reason):
    _unlink(E, oi)  # may drop its level: the levels below it in a scan are unaffected
    _emit_order(E, T_CANCELED, oi, reason, ST_CANCELED)
    _cut_link(E, oi)  # an OCO sibling is the same account's: the scan takes it in its place
    _release(E, oi)
    _s(E, E_PFOUND, 1)


@njit(cache=True, nogil=True)
def _cancel_account(E, acc, sym, reason, kind):
    """Cancel the account's open orders on the symbol: bids then asks best first, then waiting
    stops (stop books, then trailing stops in arrival order). Returns 1 if the output filled
    up: pending `kind` here, resumed later (cancelled orders are already gone)."""
    nsym = _g(E, E_NSYM)
    for b in (sym * 2, sym * 2 + 1, 2 * nsym + sym * 2, 2 * nsym + sym * 2 + 1):
        pos = _bn(E, b) - 1
        while pos >= 0:
            if _cancel_chain(E, ld_i32(_la(E, ld_i32(_bl(E, b) + 4 * pos)) + L_HEAD), acc, sym, reason, kind):
                return 1
            pos -= 1
    return _cancel_chain(E, ld_i64(_sst(E, sym) + 8 * SS_TRAIL_HEAD), acc, sym, reason, kind)


@njit(cache=True, nogil=True)
def _cancel_chain(E, oi, acc, sym, reason, kind):
    """Cancel the account's orders along the chain of orders from oi (a level's FIFO or the
    trailing list). Returns 1 if the output filled up (pending `kind`)."""
    while oi >= 0:
        nxt = ld_i32(_oa(E, oi) + O_NEXT)
        if ld_u32(_oa(E, oi) + O_ACC) == acc:
            if not _room(E, 3):
                _pend(E, kind, acc, sym)
                return 1
            _cancel_one(E, oi, reason)
        oi = nxt
    return 0


@njit(cache=True, nogil=True)
def _pend(E, kind, acc, sym):
    _s(E, E_PEND, kind)
    _s(E, E_PACC, acc)
    _s(E, E_PSYM, sym)


@njit(cache=True, nogil=True)
def _cancel_all(E, acc, sym):
    """CANCEL_ALL: every open order of the account on the symbol, or CANCEL_REJECTED
    (UNKNOWN_ORDER) if it has none. Returns 1 if suspended."""
    if _cancel_account(E, acc, sym, RS_USER, PEND_CANCEL_ALL):
        return 1
    if _g(E, E_PFOUND) == 0:
        _emit_cancel_reject(E, acc, sym, 0, RS_UNKNOWN)
    return 0


@njit(cache=True, nogil=True)
def _kill(E, acc, first_symbol):
    """KILL_ACCOUNT: every open order of the account on every symbol from first_symbol on
    (CANCELED_BY_ADMIN). Returns 1 if suspended."""
    for sym in range(first_symbol, _g(E, E_NSYM)):
        if _cancel_account(E, acc, sym, RS_ADMIN, PEND_KILL):
            return 1
    return 0


@njit(cache=True, nogil=True)
def _amended(E, c, oi):
    """ORDER_AMENDED for the AMEND at c; with a new client order id when an EXT follows."""
    a = _emit_order(E, T_AMENDED, oi, 0, _status_of(_oa(E, oi)))
    if ld_u16(c + H_FLAGS) & FLAG_CONTINUED:
        copy_bytes(a + E_CID, c + RB + X_TEXT1, CID_BYTES)


@njit(cache=True, nogil=True)
def _cut_leg(E, oi, new_qty):
    """An OCO leg's total becomes new_qty (< its total) in place: what it executed or STP took
    stays taken; a resting leg keeps its place (its slice trimmed), a waiting one its stop; a
    market-like buy's quote cap shrinks to its per-lot cap x new_qty, as risk's hold does."""
    oa = _oa(E, oi)
    qty = ld_i64(oa + O_QTY)
    leaves = new_qty - (qty - ld_i64(oa + O_LEAVES))
    lv = ld_i32(oa + O_LEVEL)
    if lv >= 0:  # in a price level or a stop book level (a trailing stop has none)
        la = _la(E, lv)
        _touch(E, ld_i32(oa + O_BOOK), lv)
        visible = min(ld_i64(oa + O_VIS), leaves)
        st_i64(la + L_QTY, ld_i64(la + L_QTY) - (ld_i64(oa + O_VIS) - visible))
        st_i64(oa + O_VIS, visible)
    qleft = ld_i64(oa + O_QLEFT)
    if qleft > 0:
        st_i64(oa + O_QLEFT, (qleft // qty) * new_qty)
    st_i64(oa + O_QTY, new_qty)
    st_i64(oa + O_LEAVES, leaves)


@njit(cache=True, nogil=True)
def _amend_leg(E, c, oi):
    """AMEND of a working OCO leg: Binance's keep-priority amend, quantity down only, and both
    legs take the new quantity (a list's legs share one). Price change: UNSUPPORTED_COMBINATION;
    quantity not below the total (0 = unchanged too): AMEND_QTY_INCREASE; a leg left with
    nothing to trade: INVALID_AMOUNT. Else ORDER_AMENDED for the leg, then for the other."""
    acc, sym = ld_u32(c + H_ACC), ld_u32(c + H_SYM)
    oa = _oa(E, oi)
    order_id = ld_i64(oa + O_ID)
    new_price, new_qty = ld_i64(c + A_PRICE), ld_i64(c + A_QTY)
    if new_price != 0 and new_price != ld_i64(oa + O_PRICE):
        _emit_cancel_reject(E, acc, sym, order_id, RS_UNSUPPORTED)
        return
    if new_qty == 0 or new_qty >= ld_i64(oa + O_QTY):
        _emit_cancel_reject(E, acc, sym, order_id, RS_QTY_UP)
        return
    sib = _h_get(E, ld_i64(oa + O_LINK))  # linked: it works
    sa = _oa(E, sib)
    for xa in (oa, sa):  # what STP took off a leg (DECREMENT) stays taken
        if new_qty - (ld_i64(xa + O_QTY) - ld_i64(xa + O_LEAVES)) <= 0:
            _emit_cancel_reject(E, acc, sym, order_id, RS_AMOUNT)
            return
    _cut_leg(E, oi, new_qty)
    _amended(E, c, oi)
    _cut_leg(E, sib, new_qty)
    _emit_order(E, T_AMENDED, sib, 0, _status_of(sa))


@njit(cache=True, nogil=True)
def _amend(E, c):
    acc, sym = ld_u32(c + H_ACC), ld_u32(c + H_SYM)
    order_id = ld_i64(c + A_ORDER)
    oi = _lookup(E, acc, sym, order_id)
    if oi < 0:
        _emit_cancel_reject(E, acc, sym, order_id, RS_UNKNOWN)
        return 0
    oa = _oa(E, oi)
    if ld_i64(oa + O_LINK) != 0:
        _amend_leg(E, c, oi)
        return 0
    if ld_i32(oa + O_BOOK) >= 2 * _g(E, E_NSYM) or ld_i32(oa + O_BOOK) == BOOK_TRAILING:  # a waiting stop
        _emit_cancel_reject(E, acc, sym, order_id, RS_UNSUPPORTED)
        return 0
    price, qty, executed = ld_i64(oa + O_PRICE), ld_i64(oa + O_QTY), ld_i64(oa + O_EXEC)
    new_price = ld_i64(c + A_PRICE) if ld_i64(c + A_PRICE) != 0 else price
    new_qty = ld_i64(c + A_QTY) if ld_i64(c + A_QTY) != 0 else qty
    # What self-trade prevention took (DECREMENT) stays taken: leaves = total - executed - prevented.
    prevented = qty - executed - ld_i64(oa + O_LEAVES)
    new_leaves = new_qty - executed - prevented
    if new_leaves <= 0:
        _emit_cancel_reject(E, acc, sym, order_id, RS_AMOUNT)
        return 0
    side = ld_u8(oa + O_SIDE)
    if new_price == price and new_qty <= qty:
        # Quantity down (or unchanged) in place: priority kept.
        delta = qty - new_qty
        if delta > 0:
            lv = ld_i32(oa + O_LEVEL)
            la = _la(E, lv)
            _touch(E, sym * 2 + side - 1, lv)
            leaves = new_leaves
            visible = min(ld_i64(oa + O_VIS), leaves)
            st_i64(la + L_QTY, ld_i64(la + L_QTY) - (ld_i64(oa + O_VIS) - visible))
            st_i64(oa + O_QTY, new_qty)
            st_i64(oa + O_LEAVES, leaves)
            st_i64(oa + O_VIS, visible)
        _amended(E, c, oi)
        return 0
    takes = _would_take(E, sym, side, new_price)
    if ld_u8(oa + O_TYPE) == LIMIT_MAKER and takes:
        _emit_cancel_reject(E, acc, sym, order_id, RS_WOULD_MATCH)
        return 0
    lv = ld_i32(oa + O_LEVEL)
    la = _la(E, lv)
    b = ld_i32(oa + O_BOOK)
    if not takes and ld_i64(la + L_COUNT) == 1:
        # Alone at its price and resting again at a free one: the level moves with it (the
        # book shows the old price gone and the new one added, as after unlink and rest).
        _touch(E, b, lv)
        if _rekey_level(E, b, lv, new_price):
            st_i64(_g(E, E_TLVL) + 8 * ld_i64(la + L_TIDX), -1)
            st_i64(la + L_QTY, 0)
            st_i64(la + L_COUNT, 0)
            st_i32(la + L_HEAD, -1)
            st_i32(la + L_TAIL, -1)
            st_i64(la + L_EPOCH, -1)
            st_i64(oa + O_PRICE, new_price)
            st_i64(oa + O_QTY, new_qty)
            st_i64(oa + O_LEAVES, new_leaves)
            _touch(E, b, lv)
            _append(E, b, lv, oi)
            _amended(E, c, oi)
            return 0
    _unlink(E, oi)
    st_i64(oa + O_PRICE, new_price)
    st_i64(oa + O_QTY, new_qty)
    st_i64(oa + O_LEAVES, new_leaves)
    _amended(E, c, oi)
    return _run_taker(E, oi)


@njit(cache=True, nogil=True)
def _resume(E):
    """Finish a command that filled the output last time. Returns 1 if still pending."""
    kind = _g(E, E_PEND)
    _s(E, E_PEND, PEND_NONE)
    if kind == PEND_CANCEL_ALL:
        if _cancel_all(E, _g(E, E_PACC), _g(E, E_PSYM)):
            return 1
    elif kind == PEND_KILL:
        if _kill(E, _g(E, E_PACC), _g(E, E_PSYM)):
            return 1
    else:
        if kind == PEND_TAKER and _run_taker(E, _g(E, E_PSLOT)):
            return 1
        if _triggers(E, _g(E, E_PSYM)):
            return 1
    _emit_book_updates(E)
    return 0


@njit(cache=True, nogil=True)
def _end_command(E):
    """Mark the last result written as the command's last (FLAG_END)."""
    n = _g(E, E_OUTN)
    if n > 0:
        a = _g(E, E_OUT) + (n - 1) * RB
        st_u16(a + H_FLAGS, ld_u16(a + H_FLAGS) | FLAG_END)


@njit(cache=True, nogil=True)
def step(control, in_address, n_in, out_address, out_cap):
    """Process up to `n_in` command records at `in_address`; write results at `out_address`.

    Returns (commands consumed, results written). A command that fills the output is
    consumed but left pending in the state: call again (with n_in = 0 or more input) until
    `pending(control)` is 0. `out_cap` must be at least `MatchingEngine.min_out_capacity`.
    """
    return run(control.ctypes.data, in_address, n_in, out_address, out_cap)


@njit(cache=True, nogil=True)
def run(E, in_address, n_in, out_address, out_cap):
    """`step` on the control block's address (compiled drivers call this: no NRT)."""
    _s(E, E_OUT, out_address)
    _s(E, E_OUTCAP, out_cap)
    _s(E, E_OUTN, 0)
    kind = _g(E, E_PEND)
    if kind != PEND_NONE:
        if _resume(E):
            return 0, _g(E, E_OUTN)
        if kind != PEND_KILL:  # a kill is no client's command: it ends none
            _end_command(E)
    i = 0
    while i < n_in and _g(E, E_OUTN) + MIN_FREE <= out_cap:
        c = in_address + i * RB
        t = ld_u16(c + H_TYPE)
        is_list = t == T_LIST and ld_u16(c + H_REASON) == 0
        if is_list and i + 3 > n_in:
            break  # an OCO is taken with both legs
        if ld_u16(c + H_FLAGS) & FLAG_CONTINUED and i + 2 > n_in:
            break  # taken with the next record of its command, which may end it (an EXT)
        # An EXT is read with the record before it and ends its command: consumed together, so
        # no output-room check falls between them (the EXT has no result to carry FLAG_END).
        with_ext = (not is_list and (ld_u16(c + H_FLAGS) & FLAG_CONTINUED) != 0
                    and ld_u16(c + RB + H_TYPE) == T_EXT)
        i += 3 if is_list else (2 if with_ext else 1)
        _s(E, E_TS, ld_i64(c + H_TS))
        src = ld_u16(c + H_SOURCE)
        if src >= SOURCE_MATCHING:  # an echoed result names its cause already (records.cause_of)
            _s(E, E_CAUSE, ld_i64(c + H_SRCSEQ))
        else:
            _s(E, E_CAUSE, (np.int64(src) << CAUSE_SHIFT) | (ld_i64(c + H_SRCSEQ) & CAUSE_MASK))
        _s(E, E_EPOCH, _g(E, E_EPOCH) + 1)
        _s(E, E_NT, 0)
        _s(E, E_PFOUND, 0)
        sym = ld_u32(c + H_SYM)
        suspended = 0
        ends = ld_u16(c + H_FLAGS) & FLAG_CONTINUED == 0 or with_ext
        if is_list:
            _order_list(E, c)
            ends = True
        elif t == T_NEW and ld_u16(c + H_FLAGS) & FLAG_DEFERRED:
            if _g(E, E_REPLACE) == REPLACE_STOP:
                _reject_new(E, c, RS_NOT_ATTEMPTED)
            else:  # back to the order engine, then risk, which funds it after the cancel
                a = _g(E, E_OUT) + _g(E, E_OUTN) * RB
                copy_bytes(a, c, RB)
                st_u16(a + H_FLAGS, ld_u16(c + H_FLAGS) & ~FLAG_DEFERRED)
                _s(E, E_OUTN, _g(E, E_OUTN) + 1)
                ends = False
            _s(E, E_REPLACE, REPLACE_NONE)
        elif t == T_NEW:
            suspended = _new_order(E, c) or _triggers(E, sym)
        elif t == T_CANCEL:
            _cancel(E, c)
        elif t == T_REPLACE:
            done = _cancel(E, c)
            _s(E, E_REPLACE, REPLACE_GO if done or ld_u8(c + C_MODE) != STOP_ON_FAILURE else REPLACE_STOP)
        elif t == T_AMEND:
            suspended = _amend(E, c) or _triggers(E, sym)
        elif t == T_CANCEL_ALL:
            suspended = _cancel_all(E, ld_u32(c + H_ACC), sym)
        elif t == T_KILL:
            suspended = _kill(E, ld_u32(c + H_ACC), 0)
            ends = False
        elif t == T_EXT:
            pass  # (one that follows no record: nothing to do)
        else:  # a rejection made upstream (risk): echoed so the order engine sees it end
            a = _g(E, E_OUT) + _g(E, E_OUTN) * RB
            copy_bytes(a, c, RB)
            _s(E, E_OUTN, _g(E, E_OUTN) + 1)
        if suspended:
            break
        _emit_book_updates(E)
        if ends:
            _end_command(E)
    return i, _g(E, E_OUTN)


# --- the depth table (DESIGN §3: read-mostly state in shared memory) -------------------------
# Matching's worker copies each symbol's best levels into a seqlock table (shm/table.py
# DEPTH_ROW_DTYPE, row = symbol id) between batches, for the inspector and other readers. A
# side channel: the engine's records and state are the same with or without it.
_DR = tables.DEPTH_ROW_DTYPE
D_SYMBOL, D_NBIDS, D_NASKS, D_UPDATE, D_LAST_SEQ, D_LAST_PRICE = (_off(_DR, n) for n in (
    "symbol_id", "n_bids", "n_asks", "update_id", "last_seq", "last_price_tick"))
D_BIDP, D_BIDQ, D_ASKP, D_ASKQ = (_off(_DR, n) for n in ("bid_price_tick", "bid_qty_lot", "ask_price_tick",
                                                          "ask_qty_lot"))
DEPTH_LEVELS = tables.DEPTH_LEVELS


@njit(cache=True, nogil=True)
def _write_depth(E, base, sym, seq):
    tables.row_begin(base, sym)
    p = tables.payload_address(base, sym)
    st_u32(p + D_SYMBOL, sym)
    for side in range(2):  # book 2*sym: bids (best = highest, last); 2*sym+1: asks
        b = 2 * sym + side
        nb = _bn(E, b)
        k = nb if nb < DEPTH_LEVELS else DEPTH_LEVELS
        prices, qtys = (p + D_BIDP, p + D_BIDQ) if side == 0 else (p + D_ASKP, p + D_ASKQ)
        keys, lvls = _bk(E, b), _bl(E, b)
        for j in range(DEPTH_LEVELS):
            if j < k:
                pos = nb - 1 - j
                key = ld_i64(keys + 8 * pos)
                st_i64(prices + 8 * j, key if side == 0 else -key)
                st_i64(qtys + 8 * j, ld_i64(_la(E, ld_i32(lvls + 4 * pos)) + L_QTY))
            else:
                st_i64(prices + 8 * j, 0)
                st_i64(qtys + 8 * j, 0)
        st_u32(p + (D_NBIDS if side == 0 else D_NASKS), k)
    st = _sst(E, sym)
    st_i64(p + D_UPDATE, ld_i64(st + 8 * SS_BOOKID))
    st_i64(p + D_LAST_PRICE, ld_i64(st + 8 * SS_LAST))
    st_i64(p + D_LAST_SEQ, seq)
    tables.row_end(base, sym)


@njit(cache=True, nogil=True)
def publish_depth(E, base, seq):
    """Every symbol whose book moved since its row was written (its book update id differs),
    stamped `seq` (the last sequence the state includes); call between batches, never while
    a command is pending. Returns rows written."""
    written = 0
    for sym in range(_g(E, E_NSYM)):
        p = tables.payload_address(base, sym)  # (this process is the row's one writer)
        st = _sst(E, sym)
        if (ld_i64(p + D_UPDATE) == ld_i64(st + 8 * SS_BOOKID) and ld_i64(p + D_LAST_PRICE) == ld_i64(st + 8 * SS_LAST)
                and ld_u32(p + D_SYMBOL) == sym and seq != 0):
            continue
        _write_depth(E, base, sym, seq)
        written += 1
    return written


# --- Python side ---------------------------------------------------------------------------
class MatchingEngine:
    """The matching state (numpy arrays) plus Python entry points over the compiled `step`."""

    def __init__(self, symbols: np.ndarray, max_orders: int = 1 << 16, max_levels: int = 4096, shard: int = 0):
        symbols = np.ascontiguousarray(symbols, dtype=SYMBOL_DTYPE)
        if len(symbols) == 0:
            raise ValueError("symbols=[] (at least one symbol)")
        if not (1 <= max_orders < (1 << 31)) or not (1 <= max_levels < (1 << 31)):
            raise ValueError(f"max_orders={max_orders} max_levels={max_levels} (1 .. 2**31-1)")
        if not 0 <= shard < 0x8000:
            raise ValueError(f"shard={shard} (0 .. 32767)")
        n_books = 4 * len(symbols)  # per symbol: bids, asks, and two stop books
        self.symbols = own_table(symbols)
        self.max_orders, self.max_levels, self.shard = max_orders, max_levels, shard
        self.orders = np.zeros(max_orders, ORDER_DTYPE)
        self.order_free = np.arange(max_orders - 1, -1, -1, dtype=np.int32)  # slot 0 is used first
        n_level_slots = min(max_levels * n_books, max_orders) + 1
        self.level_pool = np.zeros(n_level_slots, LEVEL_DTYPE)
        self.level_free = np.arange(n_level_slots - 1, -1, -1, dtype=np.int32)
        self.book_keys = np.zeros((n_books, max_levels), np.int64)
        self.book_levels = np.zeros((n_books, max_levels), np.int32)
        self.book_count = np.zeros(n_books, np.int64)
        hcap = capacity_for(max_orders)
        self.hash_keys = np.zeros(hcap, np.int64)
        self.hash_vals = np.zeros(hcap, np.int64)
        self.symbol_state = np.zeros((len(symbols), SYMST_WORDS), np.int64)
        self.symbol_state[:, SS_TRAIL_HEAD] = self.symbol_state[:, SS_TRAIL_TAIL] = -1  # empty trailing lists
        self.min_out_capacity = 2 * max_levels + 16
        self.touched_book = np.zeros(self.min_out_capacity, np.int64)
        self.touched_price = np.zeros(self.min_out_capacity, np.int64)
        self.touched_qty = np.zeros(self.min_out_capacity, np.int64)
        self.touched_count = np.zeros(self.min_out_capacity, np.int64)
        self.touched_level = np.zeros(self.min_out_capacity, np.int64)
        c = np.zeros(E_SLOTS, np.int64)
        c[E_SYM] = self.symbols.ctypes.data
        c[E_NSYM] = len(symbols)
        c[E_ORD], c[E_MAXORD] = self.orders.ctypes.data, max_orders
        c[E_OFREE], c[E_NOFREE] = self.order_free.ctypes.data, max_orders
        c[E_LVL], c[E_MAXLVL] = self.level_pool.ctypes.data, n_level_slots
        c[E_LFREE], c[E_NLFREE] = self.level_free.ctypes.data, n_level_slots
        c[E_BKEYS], c[E_BLVL], c[E_BN] = self.book_keys.ctypes.data, self.book_levels.ctypes.data, self.book_count.ctypes.data
        c[E_BCAP] = max_levels
        c[E_HKEYS], c[E_HVALS], c[E_HMASK] = self.hash_keys.ctypes.data, self.hash_vals.ctypes.data, hcap - 1
        c[E_SYMST] = self.symbol_state.ctypes.data
        c[E_TBOOK], c[E_TPRICE], c[E_TCAP] = self.touched_book.ctypes.data, self.touched_price.ctypes.data, self.min_out_capacity
        c[E_TQTY], c[E_TCNT] = self.touched_qty.ctypes.data, self.touched_count.ctypes.data
        c[E_TLVL] = self.touched_level.ctypes.data
        c[E_SHARD] = shard
        self.control = c
        # Raw bytes: numpy skips the padding of structured dtypes when it copies them.
        self._out = np.zeros((max(self.min_out_capacity, 4096), RB), np.uint8)

    @property
    def state_bytes(self) -> int:
        """Memory held by the engine's state arrays."""
        return sum(a.nbytes for a in (self.symbols, self.orders, self.order_free, self.level_pool, self.level_free,
                                      self.book_keys, self.book_levels, self.book_count, self.hash_keys,
                                      self.hash_vals, self.symbol_state, self.touched_book, self.touched_price,
                                      self.touched_qty, self.touched_count, self.touched_level,
                                      self.control))

    @property
    def pending(self) -> bool:
        return bool(self.control[E_PEND] != PEND_NONE)

    def process_into(self, commands: np.ndarray, out: np.ndarray) -> tuple[int, int]:
        """One compiled step: (commands consumed, results written into `out`)."""
        if commands.nbytes != len(commands) * RB or out.nbytes != len(out) * RB or len(out) < self.min_out_capacity:
            raise ValueError(f"commands/out must be rows of {RB} bytes and len(out) >= {self.min_out_capacity}")
        if not (commands.flags.c_contiguous and out.flags.c_contiguous):
            raise ValueError("commands and out must be C-contiguous")
        return step(self.control, commands.ctypes.data, len(commands), out.ctypes.data, len(out))

    def process(self, commands: np.ndarray) -> np.ndarray:
        """Every result of `commands`, in order, as RECORD_DTYPE records."""
        commands = R.as_records(commands)
        parts = []
        pos, n = 0, len(commands)
        base, out = commands.ctypes.data, self._out
        while pos < n or self.pending:
            used, made = step(self.control, base + pos * RB, n - pos, out.ctypes.data, len(out))
            parts.append(out[:made].copy())  # a byte copy (see _out)
            pos += used
        return R.concat(parts)

    # read-only views ------------------------------------------------------------------------
    def _book(self, symbol_id: int, side: int) -> int:
        if not 0 <= symbol_id < len(self.symbols) or side not in (BUY, SELL):
            raise ValueError(f"symbol_id={symbol_id} side={side}")
        return symbol_id * 2 + side - 1

    def levels(self, symbol_id: int, side: int) -> np.ndarray:
        """int64 (n, 3): price_tick, qty_lot, orders per level, best first."""
        b = self._book(symbol_id, side)
        n = int(self.book_count[b])
        pool = self.level_pool[self.book_levels[b, :n][::-1]]
        return np.stack([pool["price_tick"], pool["qty_lot"], pool["orders"]], axis=1).astype(np.int64)

    def open_orders(self, symbol_id: int, side: int) -> list[int]:
        """Order ids in priority order: best price first, then arrival."""
        b = self._book(symbol_id, side)
        ids = []
        for pos in range(int(self.book_count[b]) - 1, -1, -1):
            oi = int(self.level_pool[int(self.book_levels[b, pos])]["head"])
            while oi >= 0:
                ids.append(int(self.orders[oi]["order_id"]))
                oi = int(self.orders[oi]["next"])
        return ids

    def order(self, order_id: int) -> dict | None:
        """An open order's fields, or None."""
        slot = lookup(self.hash_keys, self.hash_vals, order_id) if order_id > 0 else None
        if slot is None:
            return None
        rec = self.orders[slot]
        return {name: int(rec[name]) for name in ORDER_DTYPE.names}
