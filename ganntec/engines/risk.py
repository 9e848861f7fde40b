"""Risk engine: accounts, balances, holds, pre-trade checks, fees, settlement, admin.

It consumes the sequenced stream (order engine output) and writes two streams:
  to matching  the commands it lets through (NEW_ORDER, CANCEL, CANCEL_ALL, AMEND,
               CANCEL_REPLACE with its FLAG_DEFERRED leg, unchecked and unfunded) and its own
               rejections (ORDER_REJECTED / CANCEL_REJECTED), which matching echoes back so
               every forwarded command returns to the order engine and is journaled;
  to position  every result and admin record of the stream, settled: FILLs with their fees
               set, admin records with a reason when refused, and a BALANCE record (free and
               locked after the change) for every account and asset a record changed.
Nothing the edge sees bypasses the journal: risk's own rejections reach position only as the
echo that comes back through the order engine.

Balances are int64 minor units per (account, asset): free and locked. An order's hold is the
amount it locks when risk accepts it:
  BUY LIMIT-priced (LIMIT, LIMIT_MAKER, *_LIMIT)  price x qty x quote_per_tick_lot of quote
  BUY MARKET by quote                              the quote amount
  BUY MARKET by quantity                           all free quote, passed to matching as a quote
                                                   cap so the order can never spend more
  BUY STOP_LOSS / TAKE_PROFIT                      stop price x qty x qpl, passed as the cap; a
                                                   trailing one: min(max price, ref x (1 + delta
                                                   / 1e4)) x qty x qpl, ref = its stop price or
                                                   else the last trade price (none yet: all free
                                                   quote, as for MARKET)
  SELL by quantity (every type)                    qty x base_per_lot of base
  SELL MARKET by quote                             all free base, passed as a quantity cap
A fill spends the hold (a limit buy filled below its limit gets the difference back at once);
quantity self-trade prevention takes off (TRADE_PREVENTED) is released at once;
the end of an order (FLAG_MAKER_DONE / FLAG_TAKER_DONE fill, ORDER_EXPIRED, ORDER_CANCELED, a
matching ORDER_REJECTED) releases what is left.

Amends. Live, results of an order can be sequenced between an AMEND and matching's answer to
it, so risk counts per hold the AMENDs it forwarded that matching has not answered yet: +1 when
it forwards one naming the order's account and symbol; -1 on the answer, ORDER_AMENDED (an OCO
cut: the amended leg's, the first of the pair) or matching's CANCEL_REJECTED of the amend
(FLAG_RESULT); risk's own refusals never count. Before forwarding, the hold (an OCO leg: what
its list holds) is raised to cover the worst case while the amend is in flight, the extra
locked (refused with INSUFFICIENT_BALANCE if it is not free): the order may fill as it is
before the amend lands, then as amended. A SELL needs max(leaves, new leaves) lots; a limit
BUY new price x new leaves + min(leaves, new leaves) x max(0, price - new price) (x qpl), or,
with another amend of it still in flight, what it holds plus new price x new leaves (risk has
not seen the prices the earlier ones set; what they may spend the hold covers already); a
market-like buy keeps its cap. While its count is above 0 a hold only pays what fills spend
(a limit buy filled below its current limit still gets the difference back): no settlement
releases anything down to the current requirement, not STP's, not an OCO leg's activation (a
market-like buy still cuts to its cap), not an answer that leaves the count above 0. The
answer that brings it to 0 settles the hold to what the order then needs; the order's end
releases it all. (In-process, the driver's canonical order, the answer follows its AMEND in
the same command: only the bigger advance lock and its release on the answer show.) A
CANCEL_REJECTED settles only as a result, FLAG_RESULT: one the order engine made itself answers
no command risk forwarded.

An OCO list locks once: what its hungrier leg needs (each leg's need as in the table), all on
that leg's hold, none on the other's, while both work. When one activates (its first fill, its
trigger) it takes the whole hold, cut to what it needs (a market-like buy: its own cap, which
it then spends as any market-like buy); when one ends otherwise its hold passes to the other.
While both work the list keeps max(what each leg needs now) and releases anything above it
(only when no amend of either leg is in flight: the list's count is the sum of its legs'):
after STP takes quantity off a leg (the other may still need it all), after an amend's
CANCEL_REJECTED (matching takes only quantity cuts of a working leg: whatever an AMEND locked
for more comes back), and after a cut, which matching applies to both legs: each leg's
ORDER_AMENDED cuts that leg's quantity and leaves by the same amount (what STP took stays
taken) and a market-like buy's cap to (cap // old quantity) x new quantity, as matching does,
then the list settles.

Fees are charged in the asset received, at the maker or taker rate (account override, else the
symbol's), rounded down: floor(received x rate_e8 / 1e8), computed without overflow. They go to
the fee account. Conservation holds after every record: per asset, the sum over all accounts
(fee account included) of free + locked equals credits minus debits.

A cancel-replace's new order is funded on its second trip: matching hands it back after the
cancel, the order engine sequences it, and risk sees it as a NEW_ORDER after the cancel's
release, so it can use what the cancelled order held (and nothing a fill took first).

Cancels (CANCEL, CANCEL_ALL, the cancel of a CANCEL_REPLACE) need the TRADE permission
(NO_TRADE_PERMISSION; a killed account may still cancel). An AMEND, which can add exposure,
also needs the account active (ACCOUNT_DISABLED) and the symbol trading (MARKET_CLOSED). An
AMEND of a market-like buy (a waiting STOP_LOSS / TAKE_PROFIT) leaves its cap as it is:
matching refuses it (an OCO leg's: above). Refusals become CANCEL_REJECTED, echoed by matching.

Pre-trade checks on NEW_ORDER, first failure wins: UNKNOWN_ACCOUNT (never opened),
ACCOUNT_DISABLED (killed), NO_TRADE_PERMISSION, MARKET_CLOSED (symbol halted),
TOO_MANY_OPEN_ORDERS (account-wide limit), ORDER_NOTIONAL_CAP (account's max order notional,
limit-priced orders), INSUFFICIENT_BALANCE.

Admin: CREDIT / DEBIT (amount > 0, asset configured, a debit only from free balance, no
overflow; else INVALID_AMOUNT / UNKNOWN_ASSET), ACCOUNT_OPEN (active, permissions, limits, fee
overrides), ACCOUNT_LIMITS (limits and fees only; both refuse a fee rate outside -1 (the
symbol's) .. 1e8 (100%) or a negative cap with INVALID_PARAMETER, changing nothing), KILL_ACCOUNT / UNKILL_ACCOUNT (a killed
account can cancel but not place), HALT_SYMBOL / RESUME_SYMBOL (cancels still allowed). Key
records are passed on for the edge.

Daily loss limit: when configured with a loss asset (e.g. USDT), risk keeps each account's
realized P&L on symbols quoted in that asset (average cost, the position engine's arithmetic)
minus the fees it paid in it, per UTC day of the fills' stamped ts_ns. When a day's loss exceeds
the account's daily_loss_limit_minor the account is killed (no new orders; cancels still go) and
a KILL_ACCOUNT record with reason DAILY_LOSS_LIMIT goes to the edge. UNKILL_ACCOUNT re-enables it.

Kill switch: a killed account (KILL_ACCOUNT, or the daily loss limit) also loses its open
orders: risk sends the KILL_ACCOUNT on to matching, which cancels them all (CANCELED_BY_ADMIN);
the cancels come back as results and release the holds.

State layouts (engine-private; snapshots store these arrays):

    [ACCOUNT_STATE_DTYPE] 80 bytes
    offset  size  type  field
         0     8  i8    status
         8     8  i8    permissions
        16     8  i8    max_open_orders
        24     8  i8    open_orders
        32     8  i8    maker_fee_e8
        40     8  i8    taker_fee_e8
        48     8  i8    max_order_notional_minor
        56     8  i8    daily_loss_limit_minor
        64     8  i8    day
        72     8  i8    day_pnl_minor

    [HOLD_DTYPE] 72 bytes
    offset  size  type  field
         0     8  i8    order_id
         8     8  i8    held_minor
        16     8  i8    price_tick
        24     8  i8    qty_lot
        32     8  i8    leaves_lot
        40     4  i4    account_id
        44     4  i4    symbol_id
        48     4  i4    asset_id
        52     1  u1    side
        53     1  u1    order_type
        54     2  u2    amends_in_flight  AMENDs of it forwarded to matching and not yet answered
        56     8  i8    link_order_id     the other leg of its OCO list while both work, else 0
        64     8  i8    need_minor        an OCO leg: what it alone would lock at qty_lot (for a
                                          market-like buy, the quote cap matching has); else 0
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ganntec.engines.events import cancel_reject_in_place, reject_new_in_place
from ganntec.engines.hashmap import capacity_for, hm_del, hm_get, hm_put
from ganntec.engines.mem import (ld_i32, ld_i64, ld_u8, ld_u16, ld_u32, slot_give, slot_take, st_i32, st_i64, st_u8,
                                 st_u16, st_u32, zero_bytes)
from ganntec.engines.position import P_REAL, POSITION_DTYPE, _trade, row_for
from ganntec.engines.symbols import SYMBOL_DTYPE, own_table
from ganntec.shm import records as R
from ganntec.shm import table as tables
from ganntec.shm.atomics import copy_bytes


def _off(dtype, name):
    return dtype.fields[name][1]


ACCOUNT_STATE_DTYPE = np.dtype(
    {
        "names": ["status", "permissions", "max_open_orders", "open_orders", "maker_fee_e8", "taker_fee_e8",
                  "max_order_notional_minor", "daily_loss_limit_minor", "day", "day_pnl_minor"],
        "formats": ["<i8"] * 10,
        "offsets": [8 * i for i in range(10)],
        "itemsize": 80,
    }
)
HOLD_DTYPE = np.dtype(
    {
        "names": ["order_id", "held_minor", "price_tick", "qty_lot", "leaves_lot", "account_id", "symbol_id",
                  "asset_id", "side", "order_type", "amends_in_flight", "link_order_id", "need_minor"],
        "formats": ["<i8"] * 5 + ["<i4"] * 3 + ["u1", "u1", "<u2", "<i8", "<i8"],
        "offsets": [0, 8, 16, 24, 32, 40, 44, 48, 52, 53, 54, 56, 64],
        "itemsize": 72,
    }
)
ACCOUNT_NONE, ACCOUNT_ACTIVE, ACCOUNT_KILLED = 0, 1, 2
A_STATUS, A_PERM, A_MAXOPEN, A_OPEN, A_MAKER, A_TAKER, A_CAP, A_LOSS, A_DAY, A_DAYPNL = (
    _off(ACCOUNT_STATE_DTYPE, n) for n in ACCOUNT_STATE_DTYPE.names)
AB = ACCOUNT_STATE_DTYPE.itemsize
HO_ID, HO_HELD, HO_PRICE, HO_QTY, HO_LEAVES, HO_ACC, HO_SYM, HO_ASSET, HO_SIDE, HO_TYPE, HO_FLIGHT, HO_LINK, HO_NEED = (
    _off(HOLD_DTYPE, n) for n in HOLD_DTYPE.names)
HB = HOLD_DTYPE.itemsize

RB = R.RECORD_BYTES
H_TYPE, H_FLAGS, H_REASON, H_SEQ, H_TS, H_ACC, H_SYM = (_off(R.RECORD_DTYPE, n) for n in (
    "type", "flags", "reason", "seq", "ts_ns", "account_id", "symbol_id"))
N_TRAIL = _off(R.NEW_ORDER_DTYPE, "trailing_delta_bips")
N_PRICE, N_QTY, N_QUOTE, N_STOP, N_SIDE, N_TYPE, N_CID, N_TIF = (_off(R.NEW_ORDER_DTYPE, n) for n in (
    "price_tick", "qty_lot", "quote_qty_minor", "stop_price_tick", "side", "order_type", "client_order_id",
    "time_in_force"))
AM_ORDER, AM_PRICE, AM_QTY = (_off(R.AMEND_DTYPE, n) for n in ("order_id", "new_price_tick", "new_qty_lot"))
EV_ORDER, EV_PRICE, EV_QTY, EV_EXEC, EV_STOP, EV_SIDE, EV_TYPE, EV_TIF, EV_STATUS = (
    _off(R.ORDER_EVENT_DTYPE, n) for n in ("order_id", "price_tick", "qty_lot", "executed_qty_lot",
                                           "stop_price_tick", "side", "order_type", "time_in_force", "status"))
F_PRICE, F_QTY, F_QUOTE, F_MAKER, F_TAKER, F_MFEE, F_TFEE, F_MACC, F_TSIDE = (_off(R.FILL_DTYPE, n) for n in (
    "price_tick", "qty_lot", "quote_qty_minor", "maker_order_id", "taker_order_id", "maker_fee_minor",
    "taker_fee_minor", "maker_account_id", "taker_side"))
BA_ASSET, BA_FREE, BA_LOCKED, BA_DELTA = (_off(R.BALANCE_DTYPE, n) for n in (
    "asset_id", "free_minor", "locked_minor", "delta_minor"))
TR_AMOUNT, TR_ASSET = _off(R.TRANSFER_DTYPE, "amount_minor"), _off(R.TRANSFER_DTYPE, "asset_id")
AC_PERM, AC_MAXOPEN, AC_MAKER, AC_TAKER, AC_CAP, AC_LOSS = (_off(R.ACCOUNT_DTYPE, n) for n in (
    "permissions", "max_open_orders", "maker_fee_e8", "taker_fee_e8", "max_order_notional_minor",
    "daily_loss_limit_minor"))
S_MAXP = _off(SYMBOL_DTYPE, "max_price_tick")
S_BASE, S_QUOTE, S_QPL, S_BPL, S_MAKER, S_TAKER = (_off(SYMBOL_DTYPE, n) for n in (
    "base_asset_id", "quote_asset_id", "quote_per_tick_lot", "base_per_lot", "maker_fee_e8", "taker_fee_e8"))
SB = SYMBOL_DTYPE.itemsize

T = R.RecordType
T_NEW, T_CANCEL, T_CANCEL_ALL, T_AMEND = int(T.NEW_ORDER), int(T.CANCEL), int(T.CANCEL_ALL), int(T.AMEND)
T_REPLACE, T_LIST, T_TRIGGERED = int(T.CANCEL_REPLACE), int(T.ORDER_LIST), int(T.ORDER_TRIGGERED)
T_PREVENTED, T_EXT = int(T.TRADE_PREVENTED), int(T.EXT)
P_MAKER, P_TAKER, P_MAKER_LOTS, P_TAKER_LOTS = (_off(R.PREVENTED_DTYPE, n) for n in (
    "maker_order_id", "taker_order_id", "maker_prevented_lot", "taker_prevented_lot"))
T_CREDIT, T_DEBIT, T_HALT, T_RESUME, T_KILL, T_UNKILL = (int(t) for t in (
    T.CREDIT, T.DEBIT, T.HALT_SYMBOL, T.RESUME_SYMBOL, T.KILL_ACCOUNT, T.UNKILL_ACCOUNT))
T_OPEN, T_LIMITS = int(T.ACCOUNT_OPEN), int(T.ACCOUNT_LIMITS)
T_REJECTED, T_FILL, T_EXPIRED, T_CANCELED, T_AMENDED, T_CANCEL_REJ, T_BALANCE = (int(t) for t in (
    T.ORDER_REJECTED, T.FILL, T.ORDER_EXPIRED, T.ORDER_CANCELED, T.ORDER_AMENDED, T.CANCEL_REJECTED, T.BALANCE))
OT = R.OrderType
MARKET, STOP_LOSS, TAKE_PROFIT = int(OT.MARKET), int(OT.STOP_LOSS), int(OT.TAKE_PROFIT)
BUY, SELL = int(R.Side.BUY), int(R.Side.SELL)
ST_REJECTED = int(R.OrderStatus.REJECTED)
PERM_TRADE = int(R.Permission.TRADE)
FLAG_MAKER_DONE, FLAG_TAKER_DONE, FLAG_QTY_CAP = R.FLAG_MAKER_DONE, R.FLAG_TAKER_DONE, R.FLAG_QTY_CAP
FLAG_DEFERRED, FLAG_CONTINUED, FLAG_RESULT = R.FLAG_DEFERRED, R.FLAG_CONTINUED, R.FLAG_RESULT
RS = R.Reason
RS_FUNDS, RS_NOACC, RS_DISABLED, RS_PERM, RS_CLOSED, RS_TOOMANY, RS_CAP, RS_AMOUNT, RS_ASSET, RS_SYMBOL, RS_LOSS = (
    int(r) for r in (RS.INSUFFICIENT_BALANCE, RS.UNKNOWN_ACCOUNT, RS.ACCOUNT_DISABLED, RS.NO_TRADE_PERMISSION,
                     RS.MARKET_CLOSED, RS.TOO_MANY_OPEN_ORDERS, RS.ORDER_NOTIONAL_CAP, RS.INVALID_AMOUNT,
                     RS.UNKNOWN_ASSET, RS.UNKNOWN_SYMBOL, RS.DAILY_LOSS_LIMIT))
RS_PARAM, RS_NOT_ATTEMPTED, RS_FULL = int(RS.INVALID_PARAMETER), int(RS.NOT_ATTEMPTED), int(RS.BOOK_FULL)
# matching's refusals of an AMEND (its refusals of a cancel: UNKNOWN_ORDER, CANCEL_RESTRICTED)
RS_UNKNOWN, RS_UNSUPPORTED, RS_QTY_UP, RS_WOULD_MATCH = (int(r) for r in (
    RS.UNKNOWN_ORDER, RS.UNSUPPORTED_COMBINATION, RS.AMEND_QTY_INCREASE, RS.WOULD_MATCH))
E8 = 100_000_000
MAX_BALANCE = (1 << 62)  # balances stay below this, so sums of two never overflow
SYMBOL_TRADING, SYMBOL_HALTED = 1, 2

(K_SYM, K_NSYM, K_SYMST, K_ACC, K_NACC, K_BAL, K_NASSET, K_TOT, K_HOLD, K_HFREE, K_NHFREE, K_HKEYS, K_HVALS,
 K_HMASK, K_FEEACC, K_A, K_NA, K_B, K_NB, K_LOSSASSET, K_PROWS, K_PNROWS, K_PMAX, K_PKEYS, K_PVALS,
 K_PMASK, K_LAST) = range(27)
K_SLOTS = 27
# Slots a snapshot does not carry: addresses of this process's arrays and of the outputs.
LOCAL_SLOTS = (K_SYM, K_SYMST, K_ACC, K_BAL, K_TOT, K_HOLD, K_HFREE, K_HKEYS, K_HVALS, K_PROWS, K_PKEYS, K_PVALS,
               K_LAST, K_A, K_B)
BIPS = 10_000
DAY_NS = 86_400_000_000_000


@njit(cache=True, nogil=True)
def _g(K, k):
    return ld_i64(K + 8 * k)


@njit(cache=True, nogil=True)
def _s(K, k, v):
    st_i64(K + 8 * k, v)


@njit(cache=True, nogil=True)
def _acc(K, account):
    return _g(K, K_ACC) + account * AB


@njit(cache=True, nogil=True)
def _bal(K, account, asset):
    """Address of (free, locked) for account and asset."""
    return _g(K, K_BAL) + 16 * (account * _g(K, K_NASSET) + asset)


@njit(cache=True, nogil=True)
def _sym(K, symbol):
    return _g(K, K_SYM) + symbol * SB


@njit(cache=True, nogil=True)
def fee_of(amount, rate_e8):
    """floor(amount x rate_e8 / 1e8) without overflow (amount < 2**62, 0 <= rate_e8 <= 1e8)."""
    return (amount // E8) * rate_e8 + ((amount % E8) * rate_e8) // E8


# --- outputs ---------------------------------------------------------------------------------
@njit(cache=True, nogil=True)
def _append(K, buf, count, src):
    """Copy the record at src to the end of output stream (buf, count slots); its address."""
    n = _g(K, count)
    a = _g(K, buf) + n * RB
    copy_bytes(a, src, RB)
    _s(K, count, n + 1)
    return a


@njit(cache=True, nogil=True)
def _to_a(K, src):
    return _append(K, K_A, K_NA, src)


@njit(cache=True, nogil=True)
def _to_b(K, src):
    return _append(K, K_B, K_NB, src)


@njit(cache=True, nogil=True)
def _balance_record(K, src, account, asset, delta):
    """BALANCE for (account, asset), with the header of the record that changed it."""
    n = _g(K, K_NB)
    a = _g(K, K_B) + n * RB
    copy_bytes(a, src, 40)
    zero_bytes(a + 40, RB - 40)
    st_u16(a + H_TYPE, T_BALANCE)
    st_u16(a + H_FLAGS, 0)
    st_u16(a + H_REASON, 0)
    st_u32(a + H_ACC, account)
    b = _bal(K, account, asset)
    st_u32(a + BA_ASSET, asset)
    st_i64(a + BA_FREE, ld_i64(b))
    st_i64(a + BA_LOCKED, ld_i64(b + 8))
    st_i64(a + BA_DELTA, delta)
    _s(K, K_NB, n + 1)


# --- holds -----------------------------------------------------------------------------------
@njit(cache=True, nogil=True)
def _hold_of(K, order_id):
    if order_id <= 0:  # (a CANCEL_ALL's refusal names order 0: the map's empty-slot key)
        return -1
    return hm_get(_g(K, K_HKEYS), _g(K, K_HVALS), _g(K, K_HMASK), order_id, -1)


@njit(cache=True, nogil=True)
def _ha(K, h):
    return _g(K, K_HOLD) + h * HB


@njit(cache=True, nogil=True)
def _lock(K, account, asset, amount):
    b = _bal(K, account, asset)
    st_i64(b, ld_i64(b) - amount)
    st_i64(b + 8, ld_i64(b + 8) + amount)


@njit(cache=True, nogil=True)
def _requirement(K, ha):
    """What the order still needs locked: buys at their limit, sells by quantity."""
    qty_left = ld_i64(ha + HO_LEAVES)
    sym = ld_i32(ha + HO_SYM)
    if ld_u8(ha + HO_SIDE) == SELL:
        return qty_left * ld_i64(_sym(K, sym) + S_BPL)
    price = ld_i64(ha + HO_PRICE)
    if price == 0:  # market buys: their cap is whatever is held
        return ld_i64(ha + HO_HELD)
    return price * qty_left * ld_i64(_sym(K, sym) + S_QPL)


@njit(cache=True, nogil=True)
def _shrink_hold(K, ha, to_amount):
    """Release what the hold has above `to_amount` back to free."""
    extra = ld_i64(ha + HO_HELD) - to_amount
    if extra > 0:
        _lock(K, ld_i32(ha + HO_ACC), ld_i32(ha + HO_ASSET), -extra)
        st_i64(ha + HO_HELD, to_amount)
        return True
    return False


@njit(cache=True, nogil=True)
def _leg_need(K, ha):
    """What an OCO leg alone needs now (its own hold is 0 or the whole list's): a market-like
    buy its quote cap, anything else its requirement."""
    if ld_u8(ha + HO_SIDE) == BUY and ld_i64(ha + HO_PRICE) == 0:
        return ld_i64(ha + HO_NEED)
    return _requirement(K, ha)


@njit(cache=True, nogil=True)
def _list_settle(K, src, ha):
    """The working OCO list of leg ha keeps what its hungrier leg needs now, all on one leg (an
    amend may have locked some on the other), and releases the rest; BALANCE if any moved."""
    h = _hold_of(K, ld_i64(ha + HO_LINK))
    if h < 0:
        return
    sa = _ha(K, h)
    need = max(_leg_need(K, ha), _leg_need(K, sa))
    holder, other = (ha, sa) if ld_i64(ha + HO_HELD) >= ld_i64(sa + HO_HELD) else (sa, ha)
    st_i64(holder + HO_HELD, ld_i64(holder + HO_HELD) + ld_i64(other + HO_HELD))  # same account, asset
    st_i64(other + HO_HELD, 0)
    if ld_u16(ha + HO_FLIGHT) + ld_u16(sa + HO_FLIGHT) > 0:
        return  # an amend of the list still at matching may need what it locked
    if _shrink_hold(K, holder, need):
        _balance_record(K, src, ld_i32(holder + HO_ACC), ld_i32(holder + HO_ASSET), 0)


@njit(cache=True, nogil=True)
def _move_held(src, dst):
    """All of an OCO leg's hold to its sibling (same account and asset: both stay locked); the
    pair is no longer linked."""
    st_i64(dst + HO_HELD, ld_i64(dst + HO_HELD) + ld_i64(src + HO_HELD))
    st_i64(src + HO_HELD, 0)
    st_i64(src + HO_LINK, 0)
    st_i64(dst + HO_LINK, 0)


@njit(cache=True, nogil=True)
def _take_over(K, src, ha):
    """An OCO leg activated (its first fill, or its trigger): the list's hold becomes all its
    own, cut to what it needs (a market-like buy: its own cap, which is all it may spend and,
    from here on, what it holds); the other leg, which matching is ending, keeps nothing."""
    link = ld_i64(ha + HO_LINK)
    if link == 0:
        return
    st_i64(ha + HO_LINK, 0)
    h = _hold_of(K, link)
    if h >= 0:
        _move_held(_ha(K, h), ha)
    if ld_u16(ha + HO_FLIGHT) > 0 and not (ld_u8(ha + HO_SIDE) == BUY and ld_i64(ha + HO_PRICE) == 0):
        return  # its amend still at matching may need what it locked (a market-like buy's cap: never more)
    if _shrink_hold(K, ha, _leg_need(K, ha)):  # (_requirement would keep all it holds)
        _balance_record(K, src, ld_i32(ha + HO_ACC), ld_i32(ha + HO_ASSET), 0)


@njit(cache=True, nogil=True)
def _release(K, src, order_id):
    """An order ended: free its remaining hold (an OCO leg whose other leg still works passes
    it to that leg) and forget it; BALANCE if anything moved."""
    h = _hold_of(K, order_id)
    if h < 0:
        return
    ha = _ha(K, h)
    acc, asset = ld_i32(ha + HO_ACC), ld_i32(ha + HO_ASSET)
    link = ld_i64(ha + HO_LINK)
    if link != 0:
        other = _hold_of(K, link)
        if other >= 0:
            _move_held(ha, _ha(K, other))
    moved = _shrink_hold(K, ha, 0)
    if ld_u8(ha + HO_TYPE) != MARKET:
        aa = _acc(K, acc)
        st_i64(aa + A_OPEN, ld_i64(aa + A_OPEN) - 1)
    hm_del(_g(K, K_HKEYS), _g(K, K_HVALS), _g(K, K_HMASK), order_id)
    slot_give(_g(K, K_HFREE), K + 8 * K_NHFREE, h)
    if moved:
        _balance_record(K, src, acc, asset, 0)


# --- commands --------------------------------------------------------------------------------
@njit(cache=True, nogil=True)
def _reject_new(K, c, reason):
    """ORDER_REJECTED for the NEW_ORDER at c, sent to matching to be echoed."""
    reject_new_in_place(_to_a(K, c), reason)


@njit(cache=True, nogil=True)
def _check(K, c, orders):
    """Pre-trade checks of a NEW_ORDER at c that comes with `orders` - 1 more (an OCO's legs)."""
    acc, sym = ld_u32(c + H_ACC), ld_u32(c + H_SYM)
    if acc >= _g(K, K_NACC) or ld_i64(_acc(K, acc) + A_STATUS) == ACCOUNT_NONE:
        return RS_NOACC
    aa = _acc(K, acc)
    if ld_i64(aa + A_STATUS) == ACCOUNT_KILLED:
        return RS_DISABLED
    if ld_i64(aa + A_PERM) & PERM_TRADE == 0:
        return RS_PERM
    if ld_i64(_g(K, K_SYMST) + 8 * sym) == SYMBOL_HALTED:
        return RS_CLOSED
    maxopen = ld_i64(aa + A_MAXOPEN)
    if ld_u8(c + N_TYPE) != MARKET and maxopen > 0 and ld_i64(aa + A_OPEN) + orders > maxopen:
        return RS_TOOMANY
    price = ld_i64(c + N_PRICE)
    cap = ld_i64(aa + A_CAP)
    if cap > 0 and price > 0 and price * ld_i64(c + N_QTY) * ld_i64(_sym(K, sym) + S_QPL) > cap:
        return RS_CAP
    return 0


@njit(cache=True, nogil=True)
def _need(K, c, free):
    """What a NEW_ORDER at c must lock, given `free` of the asset it pays with: (amount,
    hold price, quote cap, quantity cap) — see the table in the module docstring."""
    sym, t, side = ld_u32(c + H_SYM), ld_u8(c + N_TYPE), ld_u8(c + N_SIDE)
    s = _sym(K, sym)
    qpl, bpl = ld_i64(s + S_QPL), ld_i64(s + S_BPL)
    price, qty, quote, stop = ld_i64(c + N_PRICE), ld_i64(c + N_QTY), ld_i64(c + N_QUOTE), ld_i64(c + N_STOP)
    market_like = t == MARKET or t == STOP_LOSS or t == TAKE_PROFIT
    if side == SELL:
        if qty > 0:
            return qty * bpl, 0, quote, qty
        return (free // bpl) * bpl, 0, quote, free // bpl
    if not market_like:
        return price * qty * qpl, price, quote, qty
    if quote > 0:
        return quote, 0, quote, qty
    # A market buy by quantity spends at most its cap: all free quote for MARKET, the stop
    # price (a trailing stop: its reference price moved by the delta) for stops.
    ref = stop if stop > 0 else ld_i64(_g(K, K_LAST) + 8 * sym)
    trail = ld_i32(c + N_TRAIL)
    if t == MARKET or ref == 0:
        return free, 0, free, qty
    cap_price = ref if trail == 0 else min(ld_i64(s + S_MAXP), ref * (BIPS + trail) // BIPS)
    amount = cap_price * qty * qpl
    return amount, 0, amount, qty


@njit(cache=True, nogil=True)
def _open_hold(K, c, held, hold_price, cap_quote, cap_qty, link, need):
    """Record the hold of the order at c (its amount already locked), count it open, and
    forward it to matching with the caps risk gives it. An OCO leg has a link and its own need."""
    acc, sym, t, side = ld_u32(c + H_ACC), ld_u32(c + H_SYM), ld_u8(c + N_TYPE), ld_u8(c + N_SIDE)
    h = slot_take(_g(K, K_HFREE), K + 8 * K_NHFREE)
    ha = _ha(K, h)
    oid = ld_i64(c + H_SEQ)
    st_i64(ha + HO_ID, oid)
    st_i64(ha + HO_HELD, held)
    st_i64(ha + HO_PRICE, hold_price)
    st_i64(ha + HO_QTY, cap_qty)
    st_i64(ha + HO_LEAVES, cap_qty)
    st_i32(ha + HO_ACC, acc)
    st_i32(ha + HO_SYM, sym)
    st_i32(ha + HO_ASSET, ld_u32(_sym(K, sym) + (S_QUOTE if side == BUY else S_BASE)))
    st_u8(ha + HO_SIDE, side)
    st_u8(ha + HO_TYPE, t)
    st_u16(ha + HO_FLIGHT, 0)
    st_i64(ha + HO_LINK, link)
    st_i64(ha + HO_NEED, need)
    hm_put(_g(K, K_HKEYS), _g(K, K_HVALS), _g(K, K_HMASK), oid, h)
    if t != MARKET:
        aa = _acc(K, acc)
        st_i64(aa + A_OPEN, ld_i64(aa + A_OPEN) + 1)
    a = _to_a(K, c)
    st_i64(a + N_QUOTE, cap_quote)
    st_i64(a + N_QTY, cap_qty)
    if cap_qty != ld_i64(c + N_QTY):
        st_u16(a + H_FLAGS, ld_u16(a + H_FLAGS) | FLAG_QTY_CAP)


@njit(cache=True, nogil=True)
def _new_order(K, c):
    reason = _check(K, c, 1)
    if reason:
        _reject_new(K, c, reason)
        return
    acc, sym = ld_u32(c + H_ACC), ld_u32(c + H_SYM)
    asset = ld_u32(_sym(K, sym) + (S_QUOTE if ld_u8(c + N_SIDE) == BUY else S_BASE))
    free = ld_i64(_bal(K, acc, asset))
    amount, hold_price, cap_quote, cap_qty = _need(K, c, free)
    if amount <= 0 or amount > free:
        _reject_new(K, c, RS_FUNDS)
        return
    if _g(K, K_NHFREE) == 0:  # every hold slot is taken: the engine's order capacity
        _reject_new(K, c, RS_FULL)
        return
    _lock(K, acc, asset, amount)
    _open_hold(K, c, amount, hold_price, cap_quote, cap_qty, 0, 0)
    _balance_record(K, c, acc, asset, 0)


@njit(cache=True, nogil=True)
def _order_list(K, c):
    """An OCO: the header at c, its legs at c + RB and c + 2 RB (same account, symbol, side,
    quantity: the order engine checked). Both legs pass the checks or both are refused. The
    list locks once, what the hungrier leg needs: that leg's hold has it all, the other's
    none; each names the other (link) until one of them activates or ends."""
    above, below = c + RB, c + 2 * RB
    reason = _check(K, above, 2)
    if reason == 0:
        reason = _check(K, below, 2)
    acc, sym = ld_u32(c + H_ACC), ld_u32(c + H_SYM)
    asset = ld_u32(_sym(K, sym) + (S_QUOTE if ld_u8(above + N_SIDE) == BUY else S_BASE))
    free = ld_i64(_bal(K, acc, asset)) if reason == 0 else 0  # (an unknown account has no balance row)
    need_a, price_a, quote_a, qty_a = _need(K, above, free)
    need_b, price_b, quote_b, qty_b = _need(K, below, free)
    amount = max(need_a, need_b)
    if reason == 0 and (min(need_a, need_b) <= 0 or amount > free):
        reason = RS_FUNDS
    if reason == 0 and _g(K, K_NHFREE) < 2:
        reason = RS_FULL
    if reason:  # to matching, which echoes all three back
        a = _to_a(K, c)
        st_u16(a + H_REASON, reason)
        for leg in (above, below):
            _reject_new(K, leg, reason)
        return
    _lock(K, acc, asset, amount)
    _to_a(K, c)
    _open_hold(K, above, amount if need_a >= need_b else 0, price_a, quote_a, qty_a, ld_i64(below + H_SEQ), need_a)
    _open_hold(K, below, 0 if need_a >= need_b else amount, price_b, quote_b, qty_b, ld_i64(above + H_SEQ), need_b)
    _balance_record(K, c, acc, asset, 0)


@njit(cache=True, nogil=True)
def _refuse(K, c, reason):
    """The CANCEL / CANCEL_ALL / AMEND / CANCEL_REPLACE at c becomes CANCEL_REJECTED (the target
    order id stays at offset 40), sent to matching to be echoed."""
    cancel_reject_in_place(_to_a(K, c), reason)


@njit(cache=True, nogil=True)
def _may_cancel(K, c):
    """Cancelling needs the TRADE permission (a killed account may cancel); 0 or a reason."""
    acc = ld_u32(c + H_ACC)
    if acc < _g(K, K_NACC):
        aa = _acc(K, acc)
        if ld_i64(aa + A_STATUS) != ACCOUNT_NONE and ld_i64(aa + A_PERM) & PERM_TRADE == 0:
            return RS_PERM
    return 0


@njit(cache=True, nogil=True)
def _amend(K, c):
    acc = ld_u32(c + H_ACC)
    reason = _may_cancel(K, c)
    if reason == 0 and acc < _g(K, K_NACC) and ld_i64(_acc(K, acc) + A_STATUS) == ACCOUNT_KILLED:
        reason = RS_DISABLED  # an amend can add exposure: as a new order would
    if reason == 0 and ld_u32(c + H_SYM) < _g(K, K_NSYM) and ld_i64(_g(K, K_SYMST) + 8 * ld_u32(c + H_SYM)) == SYMBOL_HALTED:
        reason = RS_CLOSED
    if reason:
        _refuse(K, c, reason)
        return
    h = _hold_of(K, ld_i64(c + AM_ORDER))
    if h >= 0 and ld_i32(_ha(K, h) + HO_ACC) == acc:
        ha = _ha(K, h)
        hs = _hold_of(K, ld_i64(ha + HO_LINK)) if ld_i64(ha + HO_LINK) != 0 else -1
        # An OCO leg has what its list holds (on either leg). Matching takes only a cut, which
        # needs no more; but it may already see the leg on its own (its list activated by a
        # command still in flight), so anything more is locked first.
        have, flying = ld_i64(ha + HO_HELD), ld_u16(ha + HO_FLIGHT)
        if hs >= 0:
            have += ld_i64(_ha(K, hs) + HO_HELD)
            flying += ld_u16(_ha(K, hs) + HO_FLIGHT)
        qty, leaves, price = ld_i64(ha + HO_QTY), ld_i64(ha + HO_LEAVES), ld_i64(ha + HO_PRICE)
        new_qty = ld_i64(c + AM_QTY) if ld_i64(c + AM_QTY) > 0 else qty
        new_price = ld_i64(c + AM_PRICE) if ld_i64(c + AM_PRICE) > 0 else price
        new_leaves = new_qty - (qty - leaves)
        # (a market-like buy, a waiting stop, keeps its cap: matching refuses the amend, or for
        # an OCO leg cuts the cap with the quantity; the hold follows on ORDER_AMENDED)
        if new_leaves > 0 and not (ld_u8(ha + HO_SIDE) == BUY and price == 0):
            # Until matching answers, the order may still fill as it is: the hold covers that
            # and then the amended order (see the module docstring).
            s = _sym(K, ld_i32(ha + HO_SYM))
            if ld_u8(ha + HO_SIDE) == SELL:
                need = max(leaves, new_leaves) * ld_i64(s + S_BPL)
            elif flying > 0:  # what the amends before it may still spend is not known here
                need = have + new_price * new_leaves * ld_i64(s + S_QPL)
            else:
                need = (new_price * new_leaves + min(leaves, new_leaves) * max(0, price - new_price)) * ld_i64(s + S_QPL)
            extra = need - have
            if extra > 0:
                asset = ld_i32(ha + HO_ASSET)
                if ld_i64(_bal(K, acc, asset)) < extra:
                    _refuse(K, c, RS_FUNDS)
                    return
                _lock(K, acc, asset, extra)
                st_i64(ha + HO_HELD, ld_i64(ha + HO_HELD) + extra)
                _balance_record(K, c, acc, asset, 0)
        if ld_u32(c + H_SYM) == ld_i32(ha + HO_SYM):  # (else matching knows no such order)
            st_u16(ha + HO_FLIGHT, ld_u16(ha + HO_FLIGHT) + 1)  # until matching's answer
    _to_a(K, c)


@njit(cache=True, nogil=True)
def _replace(K, c):
    """CANCEL_REPLACE at c and its FLAG_DEFERRED leg: both on to matching, unless the account
    may not cancel (then the cancel is refused and the leg not attempted)."""
    reason = _may_cancel(K, c)
    if reason == 0:
        _to_a(K, c)
        _to_a(K, c + RB)
        return
    _refuse(K, c, reason)
    leg = _to_a(K, c + RB)
    reject_new_in_place(leg, RS_NOT_ATTEMPTED)
    st_u16(leg + H_FLAGS, ld_u16(leg + H_FLAGS) & ~FLAG_DEFERRED)


# --- results ---------------------------------------------------------------------------------
@njit(cache=True, nogil=True)
def _settle_side(K, src, account, order_id, lots, pay_asset, pay, get_asset, get, fee, price, qpl):
    """One side of a fill: spend `pay` of its hold, receive `get` minus `fee`."""
    h = _hold_of(K, order_id)
    b = _bal(K, account, pay_asset)
    if h < 0:  # every order risk let through has a hold; never lose conservation if not
        st_i64(b, ld_i64(b) - pay)
    else:
        ha = _ha(K, h)
        _take_over(K, src, ha)
        st_i64(b + 8, ld_i64(b + 8) - pay)
        st_i64(ha + HO_HELD, ld_i64(ha + HO_HELD) - pay)
        st_i64(ha + HO_LEAVES, ld_i64(ha + HO_LEAVES) - lots)
        limit = ld_i64(ha + HO_PRICE)
        if limit > price:  # a limit buy filled below its limit: the difference comes back now
            _shrink_hold(K, ha, ld_i64(ha + HO_HELD) - (limit - price) * lots * qpl)
    g = _bal(K, account, get_asset)
    st_i64(g, ld_i64(g) + get - fee)
    fa = _bal(K, _g(K, K_FEEACC), get_asset)
    st_i64(fa, ld_i64(fa) + fee)


@njit(cache=True, nogil=True)
def _rate(K, account, sym, maker):
    aa = _acc(K, account)
    r = ld_i64(aa + (A_MAKER if maker else A_TAKER))
    if r >= 0:
        return r
    return ld_i64(_sym(K, sym) + (S_MAKER if maker else S_TAKER))


@njit(cache=True, nogil=True)
def _fill(K, f):
    a = _to_b(K, f)
    taker, sym = ld_u32(f + H_ACC), ld_u32(f + H_SYM)
    maker = ld_u32(f + F_MACC)
    s = _sym(K, sym)
    qpl, bpl = ld_i64(s + S_QPL), ld_i64(s + S_BPL)
    base_asset, quote_asset = ld_u32(s + S_BASE), ld_u32(s + S_QUOTE)
    lots, price, quote = ld_i64(f + F_QTY), ld_i64(f + F_PRICE), ld_i64(f + F_QUOTE)
    st_i64(_g(K, K_LAST) + 8 * sym, price)
    base = lots * bpl
    taker_buys = ld_u8(f + F_TSIDE) == BUY
    m_fee = fee_of(quote if taker_buys else base, _rate(K, maker, sym, True))
    t_fee = fee_of(base if taker_buys else quote, _rate(K, taker, sym, False))
    st_i64(a + F_MFEE, m_fee)
    st_i64(a + F_TFEE, t_fee)
    buyer, buyer_order, buyer_fee = (taker, ld_i64(f + F_TAKER), t_fee) if taker_buys else (maker, ld_i64(f + F_MAKER), m_fee)
    seller, seller_order, seller_fee = (maker, ld_i64(f + F_MAKER), m_fee) if taker_buys else (taker, ld_i64(f + F_TAKER), t_fee)
    _settle_side(K, f, buyer, buyer_order, lots, quote_asset, quote, base_asset, base, buyer_fee, price, qpl)
    _settle_side(K, f, seller, seller_order, lots, base_asset, base, quote_asset, quote, seller_fee, price, qpl)
    if quote_asset == _g(K, K_LOSSASSET):
        _daily_pnl(K, f, buyer, sym, True, lots, price, qpl, buyer_fee, True)
        _daily_pnl(K, f, seller, sym, False, lots, price, qpl, seller_fee, False)
    flags = ld_u16(f + H_FLAGS)
    if flags & FLAG_MAKER_DONE:
        _release(K, f, ld_i64(f + F_MAKER))
    if flags & FLAG_TAKER_DONE:
        _release(K, f, ld_i64(f + F_TAKER))
    _balance_record(K, f, buyer, base_asset, 0)
    _balance_record(K, f, buyer, quote_asset, 0)
    if seller != buyer:
        _balance_record(K, f, seller, base_asset, 0)
        _balance_record(K, f, seller, quote_asset, 0)
    fee_acc = _g(K, K_FEEACC)
    if fee_acc != buyer and fee_acc != seller:  # the fees it received (buyer's in base, seller's in quote)
        if buyer_fee > 0:
            _balance_record(K, f, fee_acc, base_asset, 0)
        if seller_fee > 0:
            _balance_record(K, f, fee_acc, quote_asset, 0)


@njit(cache=True, nogil=True)
def _pnl_row(K, account, sym):
    """Risk's own (account, symbol) position row for P&L, created on first use (0 if full)."""
    return row_for(_g(K, K_PROWS), K + 8 * K_PNROWS, _g(K, K_PMAX), _g(K, K_PKEYS), _g(K, K_PVALS),
                   _g(K, K_PMASK), account, sym)


@njit(cache=True, nogil=True)
def _daily_pnl(K, f, account, sym, buy, lots, price, qpl, fee, fee_in_base):
    """Realized P&L (minus fees paid in the loss asset) of the account's current day; crossing
    the daily loss limit kills the account and tells the edge (KILL_ACCOUNT, DAILY_LOSS_LIMIT).
    The day is the fill's stamped ts_ns // 1 day (UTC days)."""
    p = _pnl_row(K, account, sym)
    if p == 0:
        return
    before = ld_i64(p + P_REAL)
    _trade(p, buy, lots, price, qpl, fee, fee_in_base)
    delta = ld_i64(p + P_REAL) - before - (0 if fee_in_base else fee)
    aa = _acc(K, account)
    day = ld_i64(f + H_TS) // DAY_NS
    if ld_i64(aa + A_DAY) != day:
        st_i64(aa + A_DAY, day)
        st_i64(aa + A_DAYPNL, 0)
    pnl = ld_i64(aa + A_DAYPNL) + delta
    st_i64(aa + A_DAYPNL, pnl)
    limit = ld_i64(aa + A_LOSS)
    if limit > 0 and pnl < -limit and ld_i64(aa + A_STATUS) == ACCOUNT_ACTIVE:
        st_i64(aa + A_STATUS, ACCOUNT_KILLED)
        n = _g(K, K_NB)
        a = _g(K, K_B) + n * RB
        copy_bytes(a, f, 40)
        zero_bytes(a + 40, RB - 40)
        st_u16(a + H_TYPE, T_KILL)
        st_u16(a + H_FLAGS, 0)
        st_u16(a + H_REASON, RS_LOSS)
        st_u32(a + H_ACC, account)
        _s(K, K_NB, n + 1)
        _to_a(K, a)  # matching cancels the account's open orders


@njit(cache=True, nogil=True)
def _prevented(K, p):
    """TRADE_PREVENTED: what STP took off each order no longer needs holding."""
    for order_id, lots in ((ld_i64(p + P_MAKER), ld_i64(p + P_MAKER_LOTS)), (ld_i64(p + P_TAKER), ld_i64(p + P_TAKER_LOTS))):
        h = _hold_of(K, order_id)
        if h >= 0 and lots > 0:
            ha = _ha(K, h)
            st_i64(ha + HO_LEAVES, ld_i64(ha + HO_LEAVES) - lots)
            if ld_i64(ha + HO_LINK) != 0:  # the other leg may still need all the list holds
                _list_settle(K, p, ha)
            elif ld_u16(ha + HO_FLIGHT) == 0 and _shrink_hold(K, ha, _requirement(K, ha)):
                _balance_record(K, p, ld_i32(ha + HO_ACC), ld_i32(ha + HO_ASSET), 0)


@njit(cache=True, nogil=True)
def _answers_amend(K, e, ha):
    """Whether ORDER_AMENDED / CANCEL_REJECTED (FLAG_RESULT) at e is matching's answer to an
    AMEND of the order at ha: a cut pair's first ORDER_AMENDED (its legs' quantities still equal:
    the second follows the first), matching's refusal of an amend (not of a cancel, nor risk's
    own refusal echoed)."""
    if ld_u32(e + H_ACC) != ld_i32(ha + HO_ACC) or ld_u32(e + H_SYM) != ld_i32(ha + HO_SYM):
        return False
    if ld_u16(e + H_TYPE) == T_AMENDED:
        if ld_i64(ha + HO_LINK) == 0:
            return True
        h = _hold_of(K, ld_i64(ha + HO_LINK))
        return h < 0 or ld_i64(_ha(K, h) + HO_QTY) == ld_i64(ha + HO_QTY)
    r = ld_u16(e + H_REASON)
    return r == RS_UNKNOWN or r == RS_UNSUPPORTED or r == RS_QTY_UP or r == RS_AMOUNT or r == RS_WOULD_MATCH


@njit(cache=True, nogil=True)
def _settle_hold(K, e):
    """ORDER_AMENDED / CANCEL_REJECTED: the hold shrinks to what the order needs now, unless
    an amend of it is still at matching (then it keeps all: that amend's advance lock)."""
    h = _hold_of(K, ld_i64(e + EV_ORDER))
    if h < 0:
        return
    ha = _ha(K, h)
    if ld_u16(ha + HO_FLIGHT) > 0 and _answers_amend(K, e, ha):
        st_u16(ha + HO_FLIGHT, ld_u16(ha + HO_FLIGHT) - 1)
    if ld_i64(ha + HO_LINK) != 0:
        if ld_u16(e + H_TYPE) == T_AMENDED:  # a quantity cut (matching cuts the other leg next)
            qty, new_qty = ld_i64(ha + HO_QTY), ld_i64(e + EV_QTY)
            st_i64(ha + HO_LEAVES, ld_i64(ha + HO_LEAVES) - (qty - new_qty))  # STP's part stays taken
            st_i64(ha + HO_NEED, (ld_i64(ha + HO_NEED) // qty) * new_qty)  # matching cuts a cap alike
            st_i64(ha + HO_QTY, new_qty)
        _list_settle(K, e, ha)
        return
    if ld_u16(e + H_TYPE) == T_AMENDED:
        st_i64(ha + HO_PRICE, ld_i64(e + EV_PRICE) if ld_i64(ha + HO_PRICE) > 0 else 0)
        st_i64(ha + HO_QTY, ld_i64(e + EV_QTY))
        st_i64(ha + HO_LEAVES, ld_i64(e + EV_QTY) - ld_i64(e + EV_EXEC))
    if ld_u16(ha + HO_FLIGHT) == 0 and _shrink_hold(K, ha, _requirement(K, ha)):
        _balance_record(K, e, ld_i32(ha + HO_ACC), ld_i32(ha + HO_ASSET), 0)


# --- admin -----------------------------------------------------------------------------------
@njit(cache=True, nogil=True)
def _transfer(K, c, credit):
    a = _to_b(K, c)
    acc, asset, amount = ld_u32(c + H_ACC), ld_u32(c + TR_ASSET), ld_i64(c + TR_AMOUNT)
    if asset >= _g(K, K_NASSET):
        st_u16(a + H_REASON, RS_ASSET)
        return
    if acc >= _g(K, K_NACC) or amount <= 0:
        st_u16(a + H_REASON, RS_AMOUNT)
        return
    b = _bal(K, acc, asset)
    tot = _g(K, K_TOT) + 16 * asset + (0 if credit else 8)
    if credit:
        if amount > MAX_BALANCE - ld_i64(b) - ld_i64(b + 8) or amount > MAX_BALANCE - ld_i64(tot):
            st_u16(a + H_REASON, RS_AMOUNT)
            return
        st_i64(b, ld_i64(b) + amount)
    else:
        if amount > ld_i64(b):
            st_u16(a + H_REASON, RS_AMOUNT)
            return
        st_i64(b, ld_i64(b) - amount)
    st_i64(tot, ld_i64(tot) + amount)
    _balance_record(K, c, acc, asset, amount if credit else -amount)


@njit(cache=True, nogil=True)
def _account(K, c, t):
    a = _to_b(K, c)
    acc = ld_u32(c + H_ACC)
    if acc >= _g(K, K_NACC):
        st_u16(a + H_REASON, RS_NOACC)
        return
    aa = _acc(K, acc)
    if t != T_OPEN and ld_i64(aa + A_STATUS) == ACCOUNT_NONE:
        st_u16(a + H_REASON, RS_NOACC)
        return
    if t == T_OPEN or t == T_LIMITS:
        fees_ok = True
        for rate in (ld_i32(c + AC_MAKER), ld_i32(c + AC_TAKER)):
            if rate < -1 or rate > E8:  # -1: the symbol's rate; else 0 .. 100%
                fees_ok = False
        if not fees_ok or ld_i64(c + AC_CAP) < 0 or ld_i64(c + AC_LOSS) < 0:
            st_u16(a + H_REASON, RS_PARAM)
            return
    if t == T_OPEN:
        st_i64(aa + A_STATUS, ACCOUNT_ACTIVE)
    if t == T_OPEN or t == T_LIMITS:
        if t == T_OPEN:
            st_i64(aa + A_PERM, ld_u32(c + AC_PERM))
        st_i64(aa + A_MAXOPEN, ld_u32(c + AC_MAXOPEN))
        st_i64(aa + A_MAKER, ld_i32(c + AC_MAKER))
        st_i64(aa + A_TAKER, ld_i32(c + AC_TAKER))
        st_i64(aa + A_CAP, ld_i64(c + AC_CAP))
        st_i64(aa + A_LOSS, ld_i64(c + AC_LOSS))
    elif t == T_KILL:
        st_i64(aa + A_STATUS, ACCOUNT_KILLED)
        _to_a(K, c)  # matching cancels the account's open orders
    elif t == T_UNKILL:
        st_i64(aa + A_STATUS, ACCOUNT_ACTIVE)


@njit(cache=True, nogil=True)
def _record(K, c):
    t = ld_u16(c + H_TYPE)
    if t == T_LIST and ld_u16(c + H_REASON) == 0:
        _order_list(K, c)
    elif t == T_NEW:
        if ld_u16(c + H_FLAGS) & FLAG_DEFERRED:
            _to_a(K, c)  # a cancel-replace's new order: funded when it comes back after the cancel
        else:
            _new_order(K, c)
    elif t == T_REPLACE and ld_u16(c + H_FLAGS) & FLAG_CONTINUED:
        _replace(K, c)
    elif t == T_CANCEL or t == T_CANCEL_ALL:
        reason = _may_cancel(K, c)
        if reason:
            _refuse(K, c, reason)
        else:
            _to_a(K, c)
    elif t == T_EXT and ld_u16(c + H_REASON) == 0:
        _to_a(K, c)  # (an EXT the order engine refused goes on to the edge with its command)
    elif t == T_AMEND:
        _amend(K, c)
    elif t == T_FILL:
        _fill(K, c)
    elif t == T_CREDIT or t == T_DEBIT:
        _transfer(K, c, t == T_CREDIT)
    elif t == T_OPEN or t == T_LIMITS or t == T_KILL or t == T_UNKILL:
        _account(K, c, t)
    elif t == T_HALT or t == T_RESUME:
        a = _to_b(K, c)
        sym = ld_u32(c + H_SYM)
        if sym < _g(K, K_NSYM):
            st_i64(_g(K, K_SYMST) + 8 * sym, SYMBOL_HALTED if t == T_HALT else SYMBOL_TRADING)
        else:
            st_u16(a + H_REASON, RS_SYMBOL)
    else:
        _to_b(K, c)  # results and everything else go on to position
        if t == T_EXPIRED or t == T_CANCELED or t == T_REJECTED:
            _release(K, c, ld_i64(c + EV_ORDER))
        elif t == T_AMENDED or (t == T_CANCEL_REJ and ld_u16(c + H_FLAGS) & FLAG_RESULT):
            # (the order engine's refusal of a later command is no answer to an amend still at
            # matching: settling then would release what that amend locked)
            _settle_hold(K, c)
        elif t == T_PREVENTED:
            _prevented(K, c)
        elif t == T_TRIGGERED:
            h = _hold_of(K, ld_i64(c + EV_ORDER))
            if h >= 0:
                _take_over(K, c, _ha(K, h))


OUT_A_PER_RECORD = 2   # the most matching-bound records one input can produce (a fill that
                       # trips two daily loss limits: two KILL_ACCOUNTs); an OCO's 3 records give 3
OUT_B_PER_RECORD = 14  # the most position-bound records one input can produce (a fill: 1 + 4
                       # balances + 2 of the fee account + 2 releases + 2 OCO take-overs + 2
                       # daily-loss kills)


@njit(cache=True, nogil=True)
def step(control, in_address, n_in, a_address, a_cap, b_address, b_cap):
    """Apply up to n_in sequenced records. Returns (consumed, to-matching count, to-position count)."""
    return run(control.ctypes.data, in_address, n_in, a_address, a_cap, b_address, b_cap)


@njit(cache=True, nogil=True)
def run(K, in_address, n_in, a_address, a_cap, b_address, b_cap):
    """`step` on the control block's address (compiled drivers call this: no NRT)."""
    _s(K, K_A, a_address)
    _s(K, K_NA, 0)
    _s(K, K_B, b_address)
    _s(K, K_NB, 0)
    i = 0
    while i < n_in and _g(K, K_NA) + OUT_A_PER_RECORD <= a_cap and _g(K, K_NB) + OUT_B_PER_RECORD <= b_cap:
        c = in_address + i * RB
        n = 1
        t = ld_u16(c + H_TYPE)
        if t == T_LIST and ld_u16(c + H_REASON) == 0:
            n = 3  # an OCO and its legs, taken together
        elif t == T_REPLACE and ld_u16(c + H_FLAGS) & FLAG_CONTINUED:
            n = 2  # a cancel-replace and its new order
        if n > 1 and (i + n > n_in or _g(K, K_NA) + n > a_cap):
            break
        _record(K, c)
        i += n
    return i, _g(K, K_NA), _g(K, K_NB)


# --- the balances table (DESIGN §3: read-mostly state in shared memory) ---------------------
# Risk's worker copies the balances into a seqlock table (shm/table.py BALANCE_ROW_DTYPE, row =
# account x assets + asset) between batches, for the inspector and other readers. A side
# channel: records and state are the same without it.
_BR = tables.BALANCE_ROW_DTYPE
BR_ACCOUNT, BR_ASSET, BR_FREE, BR_LOCKED, BR_SEQ = (_off(_BR, n) for n in (
    "account_id", "asset_id", "free_minor", "locked_minor", "last_seq"))


@njit(cache=True, nogil=True)
def _write_balance(base, row, account, asset, free, locked, seq):
    tables.row_begin(base, row)
    p = tables.payload_address(base, row)
    st_u32(p + BR_ACCOUNT, account)
    st_u32(p + BR_ASSET, asset)
    st_i64(p + BR_FREE, free)
    st_i64(p + BR_LOCKED, locked)
    st_i64(p + BR_SEQ, seq)
    tables.row_end(base, row)


@njit(cache=True, nogil=True)
def publish_balances(K, base, seq):
    """Every (account, asset) row that differs from the state, stamped `seq` (the last
    sequence the state includes); call between batches. Returns rows written."""
    na, written = _g(K, K_NASSET), 0
    for account in range(_g(K, K_NACC)):
        for asset in range(na):
            b, row = _bal(K, account, asset), account * na + asset
            p = tables.payload_address(base, row)  # (this process is the row's one writer)
            free, locked = ld_i64(b), ld_i64(b + 8)
            if ld_i64(p + BR_FREE) == free and ld_i64(p + BR_LOCKED) == locked and ld_u32(p + BR_ACCOUNT) == account:
                continue
            _write_balance(base, row, account, asset, free, locked, seq)
            written += 1
    return written


class RiskEngine:
    """Risk state (numpy arrays) and Python entry points over the compiled `step`."""

    def __init__(self, symbols: np.ndarray, n_assets: int, max_accounts: int = 1024, max_orders: int = 1 << 16,
                 fee_account: int = 0, loss_asset: int = -1, max_positions: int = 1 << 16):
        symbols = np.ascontiguousarray(symbols, dtype=SYMBOL_DTYPE)
        if max(int(symbols["base_asset_id"].max()), int(symbols["quote_asset_id"].max())) >= n_assets:
            raise ValueError(f"n_assets={n_assets} (a symbol names an asset id beyond it)")
        if not 0 <= fee_account < max_accounts:
            raise ValueError(f"fee_account={fee_account} (0 .. max_accounts-1)")
        self.symbols = own_table(symbols)
        self.symbol_status = np.full(len(symbols), SYMBOL_TRADING, np.int64)
        self.last_price = np.zeros(len(symbols), np.int64)  # last trade price_tick, per symbol
        self.accounts = np.zeros(max_accounts, ACCOUNT_STATE_DTYPE)
        self.accounts["maker_fee_e8"] = -1
        self.accounts["taker_fee_e8"] = -1
        self.balances = np.zeros((max_accounts, n_assets, 2), np.int64)  # free, locked
        self.totals = np.zeros((n_assets, 2), np.int64)                   # credited, debited
        self.holds = np.zeros(max_orders, HOLD_DTYPE)
        self.hold_free = np.arange(max_orders - 1, -1, -1, dtype=np.int32)
        cap = capacity_for(max_orders)
        self.hold_keys = np.zeros(cap, np.int64)
        self.hold_vals = np.zeros(cap, np.int64)
        k = np.zeros(K_SLOTS, np.int64)
        k[K_SYM], k[K_NSYM], k[K_SYMST] = self.symbols.ctypes.data, len(symbols), self.symbol_status.ctypes.data
        k[K_LAST] = self.last_price.ctypes.data
        k[K_ACC], k[K_NACC] = self.accounts.ctypes.data, max_accounts
        k[K_BAL], k[K_NASSET], k[K_TOT] = self.balances.ctypes.data, n_assets, self.totals.ctypes.data
        k[K_HOLD], k[K_HFREE], k[K_NHFREE] = self.holds.ctypes.data, self.hold_free.ctypes.data, max_orders
        k[K_HKEYS], k[K_HVALS], k[K_HMASK] = self.hold_keys.ctypes.data, self.hold_vals.ctypes.data, cap - 1
        k[K_FEEACC] = fee_account
        if not -1 <= loss_asset < n_assets:
            raise ValueError(f"loss_asset={loss_asset} (-1 for none, or an asset id)")
        k[K_LOSSASSET] = loss_asset
        self.pnl_rows = np.zeros(max_positions, POSITION_DTYPE)
        pcap = capacity_for(max_positions)
        self.pnl_keys, self.pnl_vals = np.zeros(pcap, np.int64), np.zeros(pcap, np.int64)
        k[K_PROWS], k[K_PMAX] = self.pnl_rows.ctypes.data, max_positions
        k[K_PKEYS], k[K_PVALS], k[K_PMASK] = self.pnl_keys.ctypes.data, self.pnl_vals.ctypes.data, pcap - 1
        self.control = k
        self.max_orders = max_orders

    def process(self, records) -> tuple[np.ndarray, np.ndarray]:
        """Apply sequenced records; returns (records for matching, records for position)."""
        recs = R.as_records(records)
        a_parts, b_parts, pos = [], [], 0
        a = np.zeros((max(len(recs), 1) * OUT_A_PER_RECORD + 3, RB), np.uint8)
        b = np.zeros((max(len(recs), 1) * OUT_B_PER_RECORD, RB), np.uint8)
        while pos < len(recs):
            used, na, nb = step(self.control, recs.ctypes.data + pos * RB, len(recs) - pos,
                                a.ctypes.data, len(a), b.ctypes.data, len(b))
            a_parts.append(a[:na].copy())
            b_parts.append(b[:nb].copy())
            pos += used
        return R.concat(a_parts), R.concat(b_parts)

    # checks (tests, tools) ----------------------------------------------------------------------
    def conservation_errors(self) -> list[str]:
        """Assets whose account total differs from credits minus debits (empty when sound)."""
        held = self.balances.sum(axis=(0, 2))
        want = self.totals[:, 0] - self.totals[:, 1]
        return [f"asset {i}: accounts hold {int(held[i])}, credits - debits = {int(want[i])}"
                for i in range(len(held)) if held[i] != want[i]]

    def hold_errors(self) -> list[str]:
        """(account, asset) whose locked balance differs from the sum of its orders' holds."""
        live = self.hold_keys != 0
        slots = self.hold_vals[live]
        sums = np.zeros_like(self.balances[:, :, 1])
        np.add.at(sums, (self.holds["account_id"][slots], self.holds["asset_id"][slots]), self.holds["held_minor"][slots])
        bad = np.argwhere(sums != self.balances[:, :, 1])
        return [f"account {a} asset {s}: locked {int(self.balances[a, s, 1])}, holds {int(sums[a, s])}" for a, s in bad]
