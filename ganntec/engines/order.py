"""Order engine: the sequencer. It merges results and client commands into one total order,
stamps each record with the global sequence and a timestamp, validates new orders against the
symbol's Binance filters, and counts credits.

Inputs of one `step`: results from matching (always drained first, so the loop order -> risk
-> matching -> order cannot deadlock) and client/admin commands (admitted while fewer than
`max_in_flight` commands are in flight). Output: the sequenced stream, which is what the journal
stores and what risk consumes.

Per record:
  seq    global sequence, +1 per output record; a NEW_ORDER's seq is its order id.
  ts_ns  max(previous ts_ns, the record's own ts_ns): the edge stamps receive time, so time is
         an input; the order engine never reads a clock and its stamps never go backwards.

Client commands (header `source` = edge id >= 1) carry the edge's own sequence in source_seq:
one at or below the last journaled for that edge is a duplicate (a retry after a restart) and
is dropped, never applied twice. A source above max_edges has no dedup slot, so its commands
are refused (UNSUPPORTED_COMBINATION). Admin commands (source 0) are deduplicated the same way
when they are numbered (the admin plane's, on cmd.0); unnumbered ones (source_seq 0: a first
start's funding) are not.
A multi-record command is checked by its first record's source_seq and remembered by the
highest of its records' (the edge gives every record of a command the same one).

Replay (`replay` mode, set by the replay driver): the journal holds this engine's output, so
a refused command is there as its refusal (ORDER_REJECTED, CANCEL_REJECTED, an ORDER_LIST or
EXT with its reason set; each record alone). Fed back, such a record is sequenced as it
stands (its edge sequence remembered); every other record is processed as it was live and,
the state being the same, comes out the same bytes. Live, a refusal from a client is refused.

NEW_ORDER validation, in this order (first failure wins; the command becomes ORDER_REJECTED
with the reason, order_id = its seq, carrying the NEW's fields, FLAG_END):
  UNKNOWN_SYMBOL                symbol_id not configured
  UNSUPPORTED_COMBINATION       side / type / time-in-force / STP value out of range; a field
                                the type needs is missing or one it forbids is set (price for
                                MARKET, quote for anything but MARKET, stop for non-stops);
                                an iceberg on anything but LIMIT GTC or LIMIT_MAKER; a
                                trailing delta on anything but a stop type; a stop type with
                                neither stop price nor trailing delta
  FILTER_PRICE                  PRICE_FILTER: min_price <= price (and stop price) <= max_price
  FILTER_TRAILING_DELTA         TRAILING_DELTA: the delta within the symbol's range for stops
                                that trigger on a rise (STOP_LOSS* BUY, TAKE_PROFIT* SELL:
                                "above") or on a fall (the others: "below")
  FILTER_ICEBERG_PARTS          ICEBERG_PARTS: min_qty <= iceberg qty < qty and
                                ceil(qty / iceberg qty) <= the symbol's iceberg_parts
  FILTER_LOT_SIZE               LOT_SIZE: min_qty <= qty <= max_qty (limit-priced types)
  FILTER_MARKET_LOT_SIZE        MARKET_LOT_SIZE for MARKET / STOP_LOSS / TAKE_PROFIT quantities
  FILTER_MIN_NOTIONAL / FILTER_NOTIONAL
                                price x qty (MARKET: the last trade price, skipped before any
                                trade; MARKET by quote: the quote amount) within min/max notional
  FILTER_PERCENT_PRICE_BY_SIDE  limit price within [last x down, last x up] of its side's
                                multipliers (skipped before the symbol's first trade). Binance
                                uses a weighted average price; we use the last trade price.
  FILTER_MAX_NUM_ORDERS         the account already has max_num_orders open orders on the symbol
Orders that are not MARKET count as open from ORDER_ACCEPTED until a result ends them (a FILL
with FLAG_MAKER_DONE / FLAG_TAKER_DONE, ORDER_EXPIRED, ORDER_CANCELED).

Client order ids: a NEW_ORDER whose client_order_id (per account) belongs to an open order is
rejected with DUPLICATE_ORDER. CANCEL and AMEND with order_id 0 name their target by
orig_client_order_id; the order engine fills in the order id (or refuses with CANCEL_REJECTED,
UNKNOWN_ORDER, without a round trip). An id is free again once its order ends.

Multi-record commands: a command is its first record plus every record after it while the
previous one has FLAG_CONTINUED. The order engine takes a command whole or not at all (an
incomplete one at the end of the input waits for the rest); the edge sequence of its first
record deduplicates it. Each record gets its own seq. A command whose shape is not one of
those below has every record refused (UNSUPPORTED_COMBINATION), FLAG_END on the last.

CANCEL_REPLACE (CANCEL payload with replace_mode, FLAG_CONTINUED) + NEW_ORDER (the new order,
same account and symbol): Binance evaluates the new order's filters before anything happens,
so a leg failing them makes the CANCEL_REPLACE a CANCEL_REJECTED (NOT_ATTEMPTED) and the leg
its ORDER_REJECTED (the filter's reason, FLAG_END): nothing is cancelled. MAX_NUM_ORDERS counts
the order being replaced as gone under STOP_ON_FAILURE. Otherwise the pair goes on with the
leg marked FLAG_DEFERRED: risk passes both to matching untouched, matching cancels (or fails
to), then either refuses the leg (ORDER_REJECTED, NOT_ATTEMPTED: the cancel failed under
STOP_ON_FAILURE) or hands it back as a plain NEW_ORDER among its results. The order engine
sequences that returned NEW_ORDER like any result; its seq is the new order's id, and its
client order id is checked now (the cancelled order's id is free again). From there it is an
ordinary new order: risk funds it with the balance the cancel released, matching runs it.
One credit covers both trips.

ORDER_LIST (list_type OCO, FLAG_CONTINUED) + two NEW_ORDER legs (the first FLAG_CONTINUED):
Binance's one-cancels-the-other list, the "above" order first, then the "below" one. Same
account, symbol, side and quantity; for a SELL the above leg is LIMIT_MAKER / TAKE_PROFIT /
TAKE_PROFIT_LIMIT and the below leg STOP_LOSS / STOP_LOSS_LIMIT, for a BUY the other way round
(else UNSUPPORTED_COMBINATION; OTO and OTOCO lists too). Then, first failure wins: each leg
passes the filters of a new order (the above leg first; MAX_NUM_ORDERS counting both); the
prices are ordered (ORDER_LIST_INVALID): above > last trade price > below, comparing the limit
price of LIMIT_MAKER / TAKE_PROFIT_LIMIT and the stop price of the others (a trailing leg with
no stop price is left out; so is the last price before the first trade); the legs' client
order ids are free and differ, and a listClientOrderId is not that of a list still open (one
with a leg not yet ended): else DUPLICATE_ORDER. On any failure the ORDER_LIST record keeps its
type with the reason set and both legs become ORDER_REJECTED with that reason, FLAG_END on the
second; nothing reaches matching. The list id is the ORDER_LIST record's seq; each leg's order
id is its own seq.

AMEND (FLAG_CONTINUED) + EXT (ext_kind NEW_CLIENT_ORDER_ID, text1): Binance's amend with
newClientOrderId. The new id must be set and free (the order's own current id is fine), else
both records are refused (DUPLICATE_ORDER; the EXT keeps its type, reason set). The order
takes the id when its ORDER_AMENDED (which carries it) is sequenced. An AMEND of an OCO leg is
checked like any other (matching applies the list's rules): a leg that takes a new id stays in
its list, which knows its legs by order id, and the other leg's ORDER_AMENDED carries no id.

Credits: NEW_ORDER, CANCEL, CANCEL_ALL, AMEND, CANCEL_REPLACE and ORDER_LIST forwarded -> +1
in flight; a result with FLAG_END -> -1. An EXT on its own is refused with
UNSUPPORTED_COMBINATION; a
CANCEL / AMEND / CANCEL_ALL / CANCEL_REPLACE / ORDER_LIST for an unknown symbol is refused with
UNKNOWN_SYMBOL without a round trip.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ganntec.engines.events import cancel_reject_in_place, reject_new_in_place
from ganntec.engines.hashmap import capacity_for, hm_del, hm_find, hm_get, hm_put
from ganntec.engines.mem import ld_i32, ld_i64, ld_u8, ld_u16, ld_u32, st_i64, st_u16
from ganntec.engines.symbols import SYMBOL_DTYPE, own_table
from ganntec.shm import records as R
from ganntec.shm.atomics import copy_bytes


def _off(dtype, name):
    return dtype.fields[name][1]


RB = R.RECORD_BYTES
H_TYPE, H_FLAGS, H_SOURCE, H_REASON, H_SEQ, H_TS, H_SRCSEQ, H_ACC, H_SYM = (
    _off(R.RECORD_DTYPE, n) for n in ("type", "flags", "source", "reason", "seq", "ts_ns", "source_seq",
                                      "account_id", "symbol_id"))
N_PRICE, N_QTY, N_QUOTE, N_STOP, N_ICE, N_TRAIL, N_SIDE, N_TYPE, N_TIF, N_STP, N_CID = (
    _off(R.NEW_ORDER_DTYPE, n) for n in ("price_tick", "qty_lot", "quote_qty_minor", "stop_price_tick",
                                         "iceberg_qty_lot", "trailing_delta_bips", "side", "order_type",
                                         "time_in_force", "stp_mode", "client_order_id"))
EV_ORDER, EV_PRICE, EV_QTY, EV_STOP, EV_CID, EV_SIDE, EV_TYPE, EV_TIF, EV_STATUS = (
    _off(R.ORDER_EVENT_DTYPE, n) for n in ("order_id", "price_tick", "qty_lot", "stop_price_tick", "client_order_id",
                                           "side", "order_type", "time_in_force", "status"))
F_PRICE, F_MACC, F_TTYPE, F_MAKER, F_TAKER = (_off(R.FILL_DTYPE, n) for n in (
    "price_tick", "maker_account_id", "taker_order_type", "maker_order_id", "taker_order_id"))
S = {n: _off(SYMBOL_DTYPE, n) for n in SYMBOL_DTYPE.names}
S_MINP, S_MAXP, S_MINQ, S_MAXQ = S["min_price_tick"], S["max_price_tick"], S["min_qty_lot"], S["max_qty_lot"]
S_MMINQ, S_MMAXQ, S_MINN, S_MAXN = S["market_min_qty_lot"], S["market_max_qty_lot"], S["min_notional_minor"], S["max_notional_minor"]
S_QPL, S_MAXORD, S_ICEPARTS = S["quote_per_tick_lot"], S["max_num_orders"], S["iceberg_parts"]
S_BUP, S_BDN, S_AUP, S_ADN = S["bid_multiplier_up_e8"], S["bid_multiplier_down_e8"], S["ask_multiplier_up_e8"], S["ask_multiplier_down_e8"]
S_TMINA, S_TMAXA, S_TMINB, S_TMAXB = (S[n] for n in ("min_trailing_above_bips", "max_trailing_above_bips",
                                                     "min_trailing_below_bips", "max_trailing_below_bips"))
SB = SYMBOL_DTYPE.itemsize
CID_BYTES = R.CLIENT_ID_BYTES
E8 = 100_000_000

T = R.RecordType
T_NEW, T_CANCEL, T_CANCEL_ALL, T_AMEND = int(T.NEW_ORDER), int(T.CANCEL), int(T.CANCEL_ALL), int(T.AMEND)
T_REPLACE, T_LIST, T_EXT = int(T.CANCEL_REPLACE), int(T.ORDER_LIST), int(T.EXT)
X_KIND, X_TEXT1 = _off(R.EXT_DTYPE, "ext_kind"), _off(R.EXT_DTYPE, "text1")
EXT_NEW_CID = int(R.ExtKind.NEW_CLIENT_ORDER_ID)
LIST_OCO = int(R.ListType.OCO)
L_TYPE, L_CID = _off(R.ORDER_LIST_DTYPE, "list_type"), _off(R.ORDER_LIST_DTYPE, "list_client_order_id")
T_ACCEPTED, T_REJECTED, T_FILL, T_EXPIRED, T_CANCELED, T_CANCEL_REJ = (int(t) for t in (
    T.ORDER_ACCEPTED, T.ORDER_REJECTED, T.FILL, T.ORDER_EXPIRED, T.ORDER_CANCELED, T.CANCEL_REJECTED))
T_AMENDED = int(T.ORDER_AMENDED)
FIRST_ADMIN, FIRST_RESULT = int(T.CREDIT), int(T.ORDER_ACCEPTED)
OT = R.OrderType
LIMIT, MARKET, LIMIT_MAKER = int(OT.LIMIT), int(OT.MARKET), int(OT.LIMIT_MAKER)
STOP_LOSS, STOP_LOSS_LIMIT, TAKE_PROFIT, TAKE_PROFIT_LIMIT = (int(OT.STOP_LOSS), int(OT.STOP_LOSS_LIMIT),
                                                              int(OT.TAKE_PROFIT), int(OT.TAKE_PROFIT_LIMIT))
BUY, SELL = int(R.Side.BUY), int(R.Side.SELL)
GTC, FOK = int(R.TimeInForce.GTC), int(R.TimeInForce.FOK)
MAX_STP = int(R.StpMode.DECREMENT)
ST_REJECTED = int(R.OrderStatus.REJECTED)
FLAG_MAKER_DONE, FLAG_TAKER_DONE, FLAG_END = R.FLAG_MAKER_DONE, R.FLAG_TAKER_DONE, R.FLAG_END
FLAG_CONTINUED, FLAG_DEFERRED, FLAG_RESULT = R.FLAG_CONTINUED, R.FLAG_DEFERRED, R.FLAG_RESULT
STOP_ON_FAILURE, ALLOW_FAILURE = int(R.ReplaceMode.STOP_ON_FAILURE), int(R.ReplaceMode.ALLOW_FAILURE)
MAX_COMMAND_RECORDS = 4  # the longest command shape (an OCO list: header + 2 legs) and room
RS = R.Reason
RS_SYMBOL, RS_COMBO, RS_PRICE, RS_LOT, RS_MLOT = (int(r) for r in (
    RS.UNKNOWN_SYMBOL, RS.UNSUPPORTED_COMBINATION, RS.FILTER_PRICE, RS.FILTER_LOT_SIZE, RS.FILTER_MARKET_LOT_SIZE))
RS_MINN, RS_NOTIONAL, RS_PCT, RS_MAXORD, RS_ICE = (int(r) for r in (
    RS.FILTER_MIN_NOTIONAL, RS.FILTER_NOTIONAL, RS.FILTER_PERCENT_PRICE_BY_SIDE, RS.FILTER_MAX_NUM_ORDERS,
    RS.FILTER_ICEBERG_PARTS))
RS_TRAIL = int(RS.FILTER_TRAILING_DELTA)

# Control block slots (int64).
(C_SYM, C_NSYM, C_LAST, C_EDGE, C_NEDGE, C_OKEYS, C_OVALS, C_OMASK, C_SEQ, C_TS, C_INFLIGHT, C_MAXFLIGHT,
 C_DUPES, C_OUT, C_OUTN, C_CKEYS, C_CVALS, C_CMASK, C_IKEYS, C_IVALS, C_IMASK, C_ENT, C_EFREE, C_NEFREE,
 C_LKEYS, C_LVALS, C_LMASK, C_REPLAY) = range(28)
C_SLOTS = 28
# Slots a snapshot does not carry: addresses of this process's arrays and of the output, and
# the replay mode (the loader's).
LOCAL_SLOTS = (C_SYM, C_LAST, C_EDGE, C_OKEYS, C_OVALS, C_CKEYS, C_CVALS, C_IKEYS, C_IVALS, C_ENT, C_EFREE, C_LKEYS,
               C_LVALS, C_OUT, C_REPLAY)
# listClientOrderIds share the client id map in their own namespace (account | LIST_IDS),
# keyed by the list id (the ORDER_LIST record's seq: never an order id). An open list's legs
# map to it (C_LKEYS) until both have ended.
LIST_IDS = 1 << 40
# Client order ids of open orders: entry = order_id, account, then the 36 id bytes as 4 x int64
# + 1 x int64 holding the last 4 bytes. Looked up by a 64-bit hash of (account, id), verified
# against the stored bytes, and found again by order id when the order ends.
ENTRY_WORDS = 7
C_ID_ORDER, C_ID_CANCEL, C_ID_AMEND = N_CID, _off(R.CANCEL_DTYPE, "orig_client_order_id"), _off(R.AMEND_DTYPE, "orig_client_order_id")
CX_ORDER = _off(R.CANCEL_DTYPE, "order_id")
CX_MODE = _off(R.CANCEL_DTYPE, "replace_mode")
RS_DUP, RS_UNKNOWN, RS_FULL = int(RS.DUPLICATE_ORDER), int(RS.UNKNOWN_ORDER), int(RS.BOOK_FULL)
RS_NOT_ATTEMPTED, RS_LIST_PRICES = int(RS.NOT_ATTEMPTED), int(RS.ORDER_LIST_INVALID)
SYMBOL_BITS = 20  # open-order counts are keyed by account << 20 | symbol


@njit(cache=True, nogil=True)
def _g(C, k):
    return ld_i64(C + 8 * k)


@njit(cache=True, nogil=True)
def _s(C, k, v):
    st_i64(C + 8 * k, v)


@njit(cache=True, nogil=True)
def _is_stop(t):
    return t == STOP_LOSS or t == STOP_LOSS_LIMIT or t == TAKE_PROFIT or t == TAKE_PROFIT_LIMIT


@njit(cache=True, nogil=True)
def _open_key(account, symbol):
    return ((account << SYMBOL_BITS) | symbol) + 1


@njit(cache=True, nogil=True)
def _open_add(C, account, symbol, delta):
    keys, vals, mask = _g(C, C_OKEYS), _g(C, C_OVALS), _g(C, C_OMASK)
    key = _open_key(account, symbol)
    n = hm_get(keys, vals, mask, key, 0) + delta
    if n > 0:
        hm_put(keys, vals, mask, key, n)
    else:
        hm_del(keys, vals, mask, key)


@njit(cache=True, nogil=True)
def _cid_hash(account, a):
    """64-bit hash of (account, 36 id bytes at a); positive (0 marks empty map slots)."""
    h = account * -7046029254386353131 + 0x2545F4914F6CDD1D
    for k in range(4):
        h = (h ^ ld_i64(a + 8 * k)) * 0x100000001B3
        h ^= h >> 29
    h = (h ^ ld_u32(a + 32)) * 0x100000001B3
    h ^= h >> 31
    return (h & 0x7FFFFFFFFFFFFFFF) | 1


@njit(cache=True, nogil=True)
def _cid_empty(a):
    return ld_i64(a) == 0 and ld_i64(a + 8) == 0 and ld_i64(a + 16) == 0 and ld_i64(a + 24) == 0 and ld_u32(a + 32) == 0


@njit(cache=True, nogil=True)
def _cid_same(e, account, a):
    if ld_i64(e + 8) != account:
        return False
    for k in range(4):
        if ld_i64(e + 16 + 8 * k) != ld_i64(a + 8 * k):
            return False
    return ld_i64(e + 48) == ld_u32(a + 32)


@njit(cache=True, nogil=True)
def _cid_find(C, account, a):
    """Entry address of (account, id), 0 if absent; -1 if another id has the same hash."""
    j = hm_find(_g(C, C_CKEYS), _g(C, C_CMASK), _cid_hash(account, a))
    if j < 0:
        return 0
    e = _g(C, C_ENT) + 8 * ENTRY_WORDS * ld_i64(_g(C, C_CVALS) + 8 * j)
    return e if _cid_same(e, account, a) else -1


@njit(cache=True, nogil=True)
def _cid_add(C, account, a, order_id):
    """Remember an open order's client id. Returns a reject reason, or 0."""
    found = _cid_find(C, account, a)
    if found != 0:
        return RS_DUP
    n = _g(C, C_NEFREE)
    if n == 0:
        return RS_FULL
    n -= 1
    _s(C, C_NEFREE, n)
    idx = ld_i64(_g(C, C_EFREE) + 8 * n)
    e = _g(C, C_ENT) + 8 * ENTRY_WORDS * idx
    st_i64(e, order_id)
    st_i64(e + 8, account)
    for k in range(4):
        st_i64(e + 16 + 8 * k, ld_i64(a + 8 * k))
    st_i64(e + 48, ld_u32(a + 32))
    hm_put(_g(C, C_CKEYS), _g(C, C_CVALS), _g(C, C_CMASK), _cid_hash(account, a), idx)
    hm_put(_g(C, C_IKEYS), _g(C, C_IVALS), _g(C, C_IMASK), order_id, idx)
    return 0


@njit(cache=True, nogil=True)
def _cid_end(C, order_id):
    """An order ended: forget its client id (if it had one)."""
    ikeys, ivals, imask = _g(C, C_IKEYS), _g(C, C_IVALS), _g(C, C_IMASK)
    idx = hm_get(ikeys, ivals, imask, order_id, -1)
    if idx < 0:
        return
    hm_del(ikeys, ivals, imask, order_id)
    e = _g(C, C_ENT) + 8 * ENTRY_WORDS * idx
    # Rebuild the id bytes' hash from the entry: the words are stored in order.
    h = _cid_hash(ld_i64(e + 8), e + 16)
    hm_del(_g(C, C_CKEYS), _g(C, C_CVALS), _g(C, C_CMASK), h)
    n = _g(C, C_NEFREE)
    st_i64(_g(C, C_EFREE) + 8 * n, idx)
    _s(C, C_NEFREE, n + 1)


@njit(cache=True, nogil=True)
def _order_end(C, order_id):
    """An order ended: its client id is free; the last leg of an OCO frees the list's id.
    (The legs of list L are L + 1 and L + 2.)"""
    _cid_end(C, order_id)
    lkeys, lvals, lmask = _g(C, C_LKEYS), _g(C, C_LVALS), _g(C, C_LMASK)
    lst = hm_get(lkeys, lvals, lmask, order_id, 0)
    if lst == 0:
        return
    hm_del(lkeys, lvals, lmask, order_id)
    if hm_get(lkeys, lvals, lmask, 2 * lst + 3 - order_id, 0) == 0:
        _cid_end(C, lst)


@njit(cache=True, nogil=True)
def validate_new(C, c, replacing):
    """Reason code for a NEW_ORDER record at address c, 0 if it passes every filter.
    `replacing` (0 or 1): open orders about to be cancelled for it (MAX_NUM_ORDERS)."""
    sym = ld_u32(c + H_SYM)
    if sym >= _g(C, C_NSYM):
        return RS_SYMBOL
    s = _g(C, C_SYM) + sym * SB
    side, t, tif, stp = ld_u8(c + N_SIDE), ld_u8(c + N_TYPE), ld_u8(c + N_TIF), ld_u8(c + N_STP)
    price, qty, quote, stop = ld_i64(c + N_PRICE), ld_i64(c + N_QTY), ld_i64(c + N_QUOTE), ld_i64(c + N_STOP)
    if side != BUY and side != SELL or t < LIMIT or t > LIMIT_MAKER or stp > MAX_STP:
        return RS_COMBO
    ice, trail = ld_i64(c + N_ICE), ld_i32(c + N_TRAIL)
    if ice < 0 or trail < 0 or (trail > 0 and not _is_stop(t)):
        return RS_COMBO
    if ice > 0 and not (t == LIMIT_MAKER or (t == LIMIT and tif == GTC)):
        return RS_COMBO
    market_like = t == MARKET or t == STOP_LOSS or t == TAKE_PROFIT
    if market_like:
        if price != 0 or (t != MARKET and quote != 0) or (qty > 0) == (quote > 0) or qty < 0 or quote < 0:
            return RS_COMBO
    else:
        if price <= 0 or qty <= 0 or quote != 0:
            return RS_COMBO
        if t == LIMIT_MAKER:
            if tif != 0 and tif != GTC:
                return RS_COMBO
        elif tif < GTC or tif > FOK:
            return RS_COMBO
    if stop < 0 or _is_stop(t) != (stop > 0 or trail > 0):
        return RS_COMBO
    minp, maxp = ld_i64(s + S_MINP), ld_i64(s + S_MAXP)
    if not market_like and (price < minp or price > maxp):
        return RS_PRICE
    if stop > 0 and (stop < minp or stop > maxp):
        return RS_PRICE
    if trail > 0:
        rises = (side == BUY) == (t == STOP_LOSS or t == STOP_LOSS_LIMIT)
        lo, hi = ld_u16(s + (S_TMINA if rises else S_TMINB)), ld_u16(s + (S_TMAXA if rises else S_TMAXB))
        if trail < lo or trail > hi:
            return RS_TRAIL
    if ice > 0:
        parts = ld_u8(s + S_ICEPARTS)
        if ice >= qty or ice < ld_i64(s + S_MINQ) or (qty + ice - 1) // ice > parts:
            return RS_ICE
    if qty > 0:
        if market_like:
            if qty < ld_i64(s + S_MMINQ) or qty > ld_i64(s + S_MMAXQ):
                return RS_MLOT
        elif qty < ld_i64(s + S_MINQ) or qty > ld_i64(s + S_MAXQ):
            return RS_LOT
    last = ld_i64(_g(C, C_LAST) + 8 * sym)
    ref = price if not market_like else (stop if stop > 0 else last)
    # Bounded by the symbol's validation: max price x max qty x qpl < 2**62, so no overflow.
    notional = quote if quote > 0 else (ref * qty * ld_i64(s + S_QPL) if ref > 0 else -1)
    if notional >= 0:
        if notional < ld_i64(s + S_MINN):
            return RS_MINN
        if notional > ld_i64(s + S_MAXN):
            return RS_NOTIONAL
    if not market_like and last > 0:
        up = ld_i64(s + (S_BUP if side == BUY else S_AUP))
        down = ld_i64(s + (S_BDN if side == BUY else S_ADN))
        # price <= last x up / 1e8, exactly: both sides < 2**63 (prices < 2**33, rates < 2**30).
        if price * E8 > last * up or price * E8 < last * down:
            return RS_PCT
    if t != MARKET:
        keys, vals, mask = _g(C, C_OKEYS), _g(C, C_OVALS), _g(C, C_OMASK)
        if hm_get(keys, vals, mask, _open_key(ld_u32(c + H_ACC), sym), 0) - replacing >= ld_i64(s + S_MAXORD):
            return RS_MAXORD
    return 0


@njit(cache=True, nogil=True)
def _stamp(C, src):
    """Copy the record at src to the output, stamped; returns its output address."""
    n = _g(C, C_OUTN)
    a = _g(C, C_OUT) + n * RB
    copy_bytes(a, src, RB)
    seq = _g(C, C_SEQ) + 1
    _s(C, C_SEQ, seq)
    ts = max(_g(C, C_TS), ld_i64(src + H_TS))
    _s(C, C_TS, ts)
    st_i64(a + H_SEQ, seq)
    st_i64(a + H_TS, ts)
    _s(C, C_OUTN, n + 1)
    return a


@njit(cache=True, nogil=True)
def _reject_new(C, a, reason):
    """The stamped NEW_ORDER at a becomes its ORDER_REJECTED, the last result of its command."""
    reject_new_in_place(a, reason)
    st_u16(a + H_FLAGS, FLAG_END)


@njit(cache=True, nogil=True)
def _refuse(C, a, reason):
    """Turn a stamped CANCEL / AMEND / CANCEL_ALL / other command into CANCEL_REJECTED, the
    last result of its command."""
    cancel_reject_in_place(a, reason)
    st_u16(a + H_FLAGS, FLAG_END)


@njit(cache=True, nogil=True)
def _result(C, r):
    """Sequence one result from matching, marked FLAG_RESULT, and learn from it."""
    a = _stamp(C, r)
    _learn(C, a)
    st_u16(a + H_FLAGS, ld_u16(a + H_FLAGS) | FLAG_RESULT)


@njit(cache=True, nogil=True)
def _learn(C, a):
    """What a sequenced result at a tells: credits, last price, open counts, client ids."""
    t, flags = ld_u16(a + H_TYPE), ld_u16(a + H_FLAGS)
    acc, sym = ld_u32(a + H_ACC), ld_u32(a + H_SYM)
    if t == T_NEW:
        # The new order of a CANCEL_REPLACE, back from its cancel: an order from this seq on.
        if not _cid_empty(a + N_CID):
            reason = _cid_add(C, acc, a + N_CID, ld_i64(a + H_SEQ))
            if reason:
                _reject_new(C, a, reason)
                _s(C, C_INFLIGHT, _g(C, C_INFLIGHT) - 1)
        return
    if flags & FLAG_END:
        _s(C, C_INFLIGHT, _g(C, C_INFLIGHT) - 1)
    if t == T_FILL:
        st_i64(_g(C, C_LAST) + 8 * sym, ld_i64(a + F_PRICE))
        if flags & FLAG_MAKER_DONE:
            _open_add(C, ld_u32(a + F_MACC), sym, -1)
            _order_end(C, ld_i64(a + F_MAKER))
        if flags & FLAG_TAKER_DONE:
            if ld_u8(a + F_TTYPE) != MARKET:
                _open_add(C, acc, sym, -1)
            _order_end(C, ld_i64(a + F_TAKER))
    elif t == T_ACCEPTED and ld_u8(a + EV_TYPE) != MARKET:
        _open_add(C, acc, sym, 1)
    elif t == T_AMENDED and not _cid_empty(a + EV_CID):
        # the amend gave the order a new client order id (checked when it was sequenced; one
        # another order took since is lost rather than shared)
        _cid_end(C, ld_i64(a + EV_ORDER))
        _cid_add(C, acc, a + EV_CID, ld_i64(a + EV_ORDER))
    elif t == T_EXPIRED or t == T_CANCELED or t == T_REJECTED:
        if t != T_REJECTED and ld_u8(a + EV_TYPE) != MARKET:
            _open_add(C, acc, sym, -1)
        _order_end(C, ld_i64(a + EV_ORDER))


@njit(cache=True, nogil=True)
def command_records(c, n_avail):
    """Records in the command starting at c (its FLAG_CONTINUED chain, at most
    MAX_COMMAND_RECORDS), or 0 if the chain runs past the n_avail records there."""
    n = 1
    while ld_u16(c + (n - 1) * RB + H_FLAGS) & FLAG_CONTINUED and n < MAX_COMMAND_RECORDS:
        if n == n_avail:
            return 0
        n += 1
    return n


@njit(cache=True, nogil=True)
def _refuse_command(C, a, n, reason):
    """Every stamped record of a command becomes its rejection; FLAG_END on the last."""
    for j in range(n):
        r = a + j * RB
        t = ld_u16(r + H_TYPE)
        if t == T_NEW:
            reject_new_in_place(r, reason)
        elif t == T_LIST or t == T_EXT:
            st_u16(r + H_REASON, reason)  # a refused list or EXT keeps its record, reason set
        else:
            _refuse(C, r, reason)
        st_u16(r + H_FLAGS, FLAG_END if j == n - 1 else 0)


@njit(cache=True, nogil=True)
def _list_price(leg):
    """The price an OCO leg is placed at: the limit of LIMIT_MAKER / TAKE_PROFIT_LIMIT, else
    the stop price (0 for a trailing leg without one)."""
    t = ld_u8(leg + N_TYPE)
    return ld_i64(leg + N_PRICE) if t == LIMIT_MAKER or t == TAKE_PROFIT_LIMIT else ld_i64(leg + N_STOP)


@njit(cache=True, nogil=True)
def _profit_type(t):
    return t == LIMIT_MAKER or t == TAKE_PROFIT or t == TAKE_PROFIT_LIMIT


@njit(cache=True, nogil=True)
def _oco_reason(C, a, acc):
    """Why the stamped OCO at a (header, above leg, below leg) is refused; 0 if it is not."""
    above, below = a + RB, a + 2 * RB
    side = ld_u8(above + N_SIDE)
    ta, tb = ld_u8(above + N_TYPE), ld_u8(below + N_TYPE)
    for leg in (above, below):
        if ld_u16(leg + H_TYPE) != T_NEW or ld_u32(leg + H_ACC) != acc or ld_u32(leg + H_SYM) != ld_u32(a + H_SYM):
            return RS_COMBO
    if (ld_u8(a + L_TYPE) != LIST_OCO or ld_u8(below + N_SIDE) != side
            or ld_i64(above + N_QTY) != ld_i64(below + N_QTY)):
        return RS_COMBO
    # SELL: take profit above, stop loss below; BUY: stop loss above, take profit below.
    profit, loss = (ta, tb) if side == SELL else (tb, ta)
    if not _profit_type(profit) or not (loss == STOP_LOSS or loss == STOP_LOSS_LIMIT):
        return RS_COMBO
    reason = validate_new(C, above, 0)
    if reason == 0:
        reason = validate_new(C, below, -1)  # room for both in MAX_NUM_ORDERS
    if reason:
        return reason
    hi, lo = _list_price(above), _list_price(below)
    last = ld_i64(_g(C, C_LAST) + 8 * ld_u32(a + H_SYM))
    if (hi > 0 and lo > 0 and hi <= lo) or (last > 0 and ((hi > 0 and hi <= last) or (lo > 0 and lo >= last))):
        return RS_LIST_PRICES
    ca, cb = above + N_CID, below + N_CID
    for cid in (ca, cb):
        if not _cid_empty(cid) and _cid_find(C, acc, cid) != 0:
            return RS_DUP
    if not _cid_empty(ca) and _cid_same_bytes(ca, cb):
        return RS_DUP
    if not _cid_empty(a + L_CID) and _cid_find(C, acc | LIST_IDS, a + L_CID) != 0:
        return RS_DUP  # listClientOrderId of a list still open
    return 0


@njit(cache=True, nogil=True)
def _cid_same_bytes(a, b):
    for k in range(4):
        if ld_i64(a + 8 * k) != ld_i64(b + 8 * k):
            return False
    return ld_u32(a + 32) == ld_u32(b + 32)


@njit(cache=True, nogil=True)
def _order_list(C, a, acc):
    reason = _oco_reason(C, a, acc)
    if reason:
        st_u16(a + H_REASON, reason)
        st_u16(a + H_FLAGS, 0)
        for j in (1, 2):
            reject_new_in_place(a + j * RB, reason)
            st_u16(a + j * RB + H_FLAGS, FLAG_END if j == 2 else 0)
        return
    for j in (1, 2):
        leg = a + j * RB
        if not _cid_empty(leg + N_CID):
            _cid_add(C, acc, leg + N_CID, ld_i64(leg + H_SEQ))
    if not _cid_empty(a + L_CID):
        lst = ld_i64(a + H_SEQ)
        _cid_add(C, acc | LIST_IDS, a + L_CID, lst)
        for j in (1, 2):
            hm_put(_g(C, C_LKEYS), _g(C, C_LVALS), _g(C, C_LMASK), lst + j, lst)
    _s(C, C_INFLIGHT, _g(C, C_INFLIGHT) + 1)


@njit(cache=True, nogil=True)
def _by_client_id(C, a, acc, id_offset):
    """Fill in the target order id from orig_client_order_id when it is 0; False if unknown."""
    if ld_i64(a + CX_ORDER) != 0:
        return True
    e = _cid_find(C, acc, a + id_offset)
    if e <= 0:
        return False
    st_i64(a + CX_ORDER, ld_i64(e))
    return True


@njit(cache=True, nogil=True)
def _cancel_replace(C, a, acc):
    """The stamped CANCEL_REPLACE at a and its NEW_ORDER leg at a + RB."""
    leg = a + RB
    mode = ld_u8(a + CX_MODE)
    if (ld_u16(leg + H_TYPE) != T_NEW or ld_u32(leg + H_ACC) != acc or ld_u32(leg + H_SYM) != ld_u32(a + H_SYM)
            or (mode != STOP_ON_FAILURE and mode != ALLOW_FAILURE)):
        _refuse_command(C, a, 2, RS_COMBO)
        return
    reason = validate_new(C, leg, 1 if mode == STOP_ON_FAILURE else 0)
    if reason:  # filters come first: nothing is cancelled
        _refuse(C, a, RS_NOT_ATTEMPTED)
        st_u16(a + H_FLAGS, 0)
        _reject_new(C, leg, reason)
        return
    _by_client_id(C, a, acc, C_ID_CANCEL)  # unknown: matching reports the failed cancel
    st_u16(leg + H_FLAGS, FLAG_DEFERRED)
    _s(C, C_INFLIGHT, _g(C, C_INFLIGHT) + 1)


@njit(cache=True, nogil=True)
def _amend_with_id(C, a, acc):
    """AMEND + EXT (NEW_CLIENT_ORDER_ID): the amended order's new client order id must be
    set and not held by another open order of the account (its own is fine)."""
    ext = a + RB
    if ld_u16(ext + H_TYPE) != T_EXT or ld_u8(ext + X_KIND) != EXT_NEW_CID or _cid_empty(ext + X_TEXT1):
        _refuse_command(C, a, 2, RS_COMBO)
        return
    if not _by_client_id(C, a, acc, C_ID_AMEND):
        _refuse_command(C, a, 2, RS_UNKNOWN)
        return
    e = _cid_find(C, acc, ext + X_TEXT1)
    if e != 0 and (e < 0 or ld_i64(e) != ld_i64(a + CX_ORDER)):
        _refuse_command(C, a, 2, RS_DUP)
        return
    _s(C, C_INFLIGHT, _g(C, C_INFLIGHT) + 1)


@njit(cache=True, nogil=True)
def _is_refusal(c):
    t = ld_u16(c + H_TYPE)
    return t == T_REJECTED or t == T_CANCEL_REJ or ((t == T_LIST or t == T_EXT) and ld_u16(c + H_REASON) != 0)


@njit(cache=True, nogil=True)
def _command(C, c, n):
    """Sequence one client or admin command of n records at c."""
    source = ld_u16(c + H_SOURCE)
    t = ld_u16(c + H_TYPE)
    if _g(C, C_REPLAY) and n == 1 and _is_refusal(c):
        # Replay: the journal keeps the refusal this engine made of a command, not the command;
        # it is sequenced again as it stands (every record of a refused command stands alone).
        if 0 < source <= _g(C, C_NEDGE):
            last = _g(C, C_EDGE) + 8 * source
            st_i64(last, max(ld_i64(last), ld_i64(c + H_SRCSEQ)))
        _stamp(C, c)
        return
    if source > _g(C, C_NEDGE):
        # An edge without a dedup slot could have a retry applied twice: refuse its commands.
        a = _stamp(C, c)
        for j in range(1, n):
            _stamp(C, c + j * RB)
        _refuse_command(C, a, n, RS_COMBO)
        return
    if source > 0 or ld_i64(c + H_SRCSEQ) > 0:  # (admin: the admin plane's numbered commands)
        last = _g(C, C_EDGE) + 8 * source
        sseq = ld_i64(c + H_SRCSEQ)
        if sseq <= ld_i64(last):
            _s(C, C_DUPES, _g(C, C_DUPES) + 1)
            return
        for j in range(1, n):  # the command's edge sequence: the highest of its records'
            sseq = max(sseq, ld_i64(c + j * RB + H_SRCSEQ))
        st_i64(last, sseq)
    a = _stamp(C, c)
    for j in range(1, n):
        _stamp(C, c + j * RB)
    acc = ld_u32(a + H_ACC)
    if n > 1:
        if (t == T_REPLACE and n == 2) or (t == T_LIST and n == 3) or (t == T_AMEND and n == 2):
            if ld_u32(a + H_SYM) >= _g(C, C_NSYM):
                _refuse_command(C, a, n, RS_SYMBOL)
            elif t == T_REPLACE:
                _cancel_replace(C, a, acc)
            elif t == T_LIST:
                _order_list(C, a, acc)
            else:
                _amend_with_id(C, a, acc)
        else:
            _refuse_command(C, a, n, RS_COMBO)
        return
    if t == T_NEW:
        reason = validate_new(C, a, 0)
        if reason == 0 and not _cid_empty(a + N_CID):
            reason = _cid_add(C, acc, a + N_CID, ld_i64(a + H_SEQ))
        if reason:
            _reject_new(C, a, reason)
        else:
            _s(C, C_INFLIGHT, _g(C, C_INFLIGHT) + 1)
        return
    if FIRST_ADMIN <= t < FIRST_RESULT:
        return  # admin: applied by risk, no matching round trip
    if t != T_CANCEL and t != T_CANCEL_ALL and t != T_AMEND:
        _refuse(C, a, RS_COMBO)  # a command that needs more records, or no command at all
        return
    if ld_u32(a + H_SYM) >= _g(C, C_NSYM):
        _refuse(C, a, RS_SYMBOL)
        return
    if t != T_CANCEL_ALL and not _by_client_id(C, a, acc, C_ID_CANCEL if t == T_CANCEL else C_ID_AMEND):
        _refuse(C, a, RS_UNKNOWN)
        return
    _s(C, C_INFLIGHT, _g(C, C_INFLIGHT) + 1)


@njit(cache=True, nogil=True)
def step(control, results_address, n_results, commands_address, n_commands, out_address, out_cap):
    """Sequence every result (up to out_cap), then whole commands while credits last.

    Returns (results consumed, command records consumed, records written)."""
    return run(control.ctypes.data, results_address, n_results, commands_address, n_commands, out_address, out_cap)


@njit(cache=True, nogil=True)
def run(C, results_address, n_results, commands_address, n_commands, out_address, out_cap):
    """`step` on the control block's address (compiled drivers call this: no NRT)."""
    _s(C, C_OUT, out_address)
    _s(C, C_OUTN, 0)
    r = 0
    while r < n_results and _g(C, C_OUTN) < out_cap:
        _result(C, results_address + r * RB)
        r += 1
    k = 0
    while k < n_commands and _g(C, C_INFLIGHT) < _g(C, C_MAXFLIGHT):
        c = commands_address + k * RB
        n = command_records(c, n_commands - k)
        if n == 0 or _g(C, C_OUTN) + n > out_cap:
            break
        _command(C, c, n)
        k += n
    return r, k, _g(C, C_OUTN)


class OrderEngine:
    """Sequencer state (numpy arrays) and Python entry points over the compiled `step`."""

    def __init__(self, symbols: np.ndarray, max_in_flight: int = 1024, max_edges: int = 64,
                 max_open_orders: int = 1 << 16, replay: bool = False):
        symbols = np.ascontiguousarray(symbols, dtype=SYMBOL_DTYPE)
        if len(symbols) >= (1 << SYMBOL_BITS):
            raise ValueError(f"symbols={len(symbols)} (at most {(1 << SYMBOL_BITS) - 1})")
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight={max_in_flight} (must be >= 1)")
        self.symbols = own_table(symbols)
        self.last_price = np.zeros(len(symbols), np.int64)
        self.edge_last_seq = np.zeros(max_edges + 1, np.int64)
        cap = capacity_for(max_open_orders)
        self.open_keys = np.zeros(cap, np.int64)
        self.open_vals = np.zeros(cap, np.int64)
        c = np.zeros(C_SLOTS, np.int64)
        c[C_SYM], c[C_NSYM] = self.symbols.ctypes.data, len(symbols)
        c[C_LAST] = self.last_price.ctypes.data
        c[C_EDGE], c[C_NEDGE] = self.edge_last_seq.ctypes.data, max_edges
        c[C_OKEYS], c[C_OVALS], c[C_OMASK] = self.open_keys.ctypes.data, self.open_vals.ctypes.data, cap - 1
        c[C_MAXFLIGHT] = max_in_flight
        c[C_REPLAY] = int(replay)
        self.cid_keys, self.cid_vals = np.zeros(cap, np.int64), np.zeros(cap, np.int64)
        self.cid_by_order_keys, self.cid_by_order_vals = np.zeros(cap, np.int64), np.zeros(cap, np.int64)
        self.cid_entries = np.zeros((max_open_orders, ENTRY_WORDS), np.int64)
        self.cid_free = np.arange(max_open_orders - 1, -1, -1, dtype=np.int64)
        c[C_CKEYS], c[C_CVALS], c[C_CMASK] = self.cid_keys.ctypes.data, self.cid_vals.ctypes.data, cap - 1
        c[C_IKEYS], c[C_IVALS], c[C_IMASK] = (self.cid_by_order_keys.ctypes.data, self.cid_by_order_vals.ctypes.data,
                                              cap - 1)
        c[C_ENT], c[C_EFREE], c[C_NEFREE] = self.cid_entries.ctypes.data, self.cid_free.ctypes.data, max_open_orders
        self.list_leg_keys, self.list_leg_vals = np.zeros(cap, np.int64), np.zeros(cap, np.int64)
        c[C_LKEYS], c[C_LVALS], c[C_LMASK] = self.list_leg_keys.ctypes.data, self.list_leg_vals.ctypes.data, cap - 1
        self.control = c

    @property
    def seq(self) -> int:
        return int(self.control[C_SEQ])

    @property
    def replay(self) -> bool:
        """Replay mode: the refusals a journal holds are sequenced as they stand (a live
        engine refuses such records: no client sends a refusal)."""
        return bool(self.control[C_REPLAY])

    @replay.setter
    def replay(self, on: bool) -> None:
        self.control[C_REPLAY] = int(on)

    @property
    def in_flight(self) -> int:
        return int(self.control[C_INFLIGHT])

    @property
    def max_in_flight(self) -> int:
        """The credit limit: commands admitted while fewer than this are in flight."""
        return int(self.control[C_MAXFLIGHT])

    @max_in_flight.setter
    def max_in_flight(self, n: int) -> None:
        if n < 1:
            raise ValueError(f"max_in_flight={n} (must be >= 1)")
        self.control[C_MAXFLIGHT] = n

    @property
    def duplicates(self) -> int:
        return int(self.control[C_DUPES])

    def open_orders(self, account_id: int, symbol_id: int) -> int:
        j = hm_find(self.open_keys.ctypes.data, len(self.open_keys) - 1, ((account_id << SYMBOL_BITS) | symbol_id) + 1)
        return 0 if j < 0 else int(self.open_vals[j])

    def process(self, results=(), commands=()) -> tuple[np.ndarray, int, int]:
        """Sequence `results` then `commands` (record arrays or lists of them). Returns (the
        sequenced records, results consumed, commands consumed); commands beyond the credit
        limit stay unconsumed."""
        res = R.as_records(results if len(results) else np.zeros((0, RB), np.uint8))
        cmd = R.as_records(commands if len(commands) else np.zeros((0, RB), np.uint8))
        out = np.zeros((len(res) + len(cmd), RB), np.uint8)
        used_r, used_c, made = step(self.control, res.ctypes.data, len(res), cmd.ctypes.data, len(cmd),
                                    out.ctypes.data, len(out))
        return out[:made].view(R.RECORD_DTYPE).reshape(-1), used_r, used_c
