"""Record layouts: every message on a ring and in the journal is one 128-byte record.

Why 128 bytes: a record must carry a 36-character `clientOrderId` (Binance's limit) from the
edge to the journal and back, next to a 40-byte common header (type, flags, source, reason,
sequence, timestamp, source sequence, account, symbol) and the order's integer fields
(price, quantity, quote quantity, stop price, iceberg quantity, trailing delta, enums): that
is 40 + 88 bytes. 64 bytes cannot hold it; 128 is two cache lines, and copying one costs a few
ns (a 64-byte copy measured 2.2 ns). A command too big for one record (cancel-replace, an OCO
list, an amend with a new client id) spans consecutive records: every record but the last
has FLAG_CONTINUED, and the producer publishes them in one batch.

Units are in the names: `_tick` prices (symbol tick size), `_lot` quantities (symbol step
size), `_minor` amounts (an asset's smallest unit), `_ns` nanoseconds, `_e8` rates x 1e8.
All int64 unless drawn otherwise; strings are ASCII, NUL-padded; reserved bytes are zero.

Each record type has a full 128-byte dtype (header + its payload); engines view the same slots
through the dtype of the type they dispatch on. `RECORD_DTYPE` has the header only.

[HEADER] every record, bytes 0-39
    offset  size  type  field                    meaning
         0     2  u2    type                     record type (RecordType)
         2     2  u2    flags                    FLAG_* bits
         4     2  u2    source                   edge id 1.., matching shard 0x8000|k, admin 0
         6     2  u2    reason                   Reason code; 0 = none
         8     8  i8    seq                      global sequence, stamped by the order engine (0 before)
        16     8  i8    ts_ns                    order engine's stamp (data for engines, never a clock read)
        24     8  i8    source_seq               producer's own sequence (edge: idempotency key);
                                                 matching's results: cause_of(command's source, source_seq)
        32     4  u4    account_id               account
        36     4  u4    symbol_id                symbol

[NEW_ORDER] payload, bytes 40-127
        40     8  i8    price_tick               limit price; 0 for MARKET
        48     8  i8    qty_lot                  base quantity; 0 when quote_qty_minor is used
        56     8  i8    quote_qty_minor          MARKET by quote amount (quoteOrderQty)
        64     8  i8    stop_price_tick          trigger price of STOP_LOSS*/TAKE_PROFIT*
        72     8  i8    iceberg_qty_lot          visible quantity; 0 = not an iceberg
        80     4  i4    trailing_delta_bips      trailingDelta; 0 = none
        84     1  u1    side                     Side
        85     1  u1    order_type               OrderType
        86     1  u1    time_in_force            TimeInForce
        87     1  u1    stp_mode                 StpMode
        88    36  S36   client_order_id          newClientOrderId, NUL-padded
       124     1  u1    resp_type                RespType
       125     3  -     (reserved)               zero

[CANCEL] payload, bytes 40-127
        40     8  i8    order_id                 target order id; 0 = by orig_client_order_id
        48    36  S36   orig_client_order_id     target's client order id
        84    36  S36   new_client_order_id      the cancel's own id (newClientOrderId)
       120     1  u1    cancel_restrictions      CancelRestriction
       121     1  u1    replace_mode             ReplaceMode (CANCEL_REPLACE only)
       122     6  -     (reserved)               zero

[AMEND] payload, bytes 40-127
        40     8  i8    order_id                 target order id; 0 = by orig_client_order_id
        48     8  i8    new_price_tick           0 = unchanged (a change loses priority)
        56     8  i8    new_qty_lot              0 = unchanged (down keeps priority, up loses it)
        64    36  S36   orig_client_order_id     target's client order id
       100    28  -     (reserved)               zero

[ORDER_LIST] payload, bytes 40-127
        40     1  u1    list_type                ListType
        41     7  -     (reserved)               zero
        48    36  S36   list_client_order_id     listClientOrderId
        84    44  -     (reserved)               zero

[EXT] payload, bytes 40-127
        40     1  u1    ext_kind                 ExtKind: what text1/text2 are
        41     7  -     (reserved)               zero
        48    36  S36   text1
        84    36  S36   text2
       120     8  -     (reserved)               zero

[ORDER_EVENT] payload, bytes 40-127
        40     8  i8    order_id                 the order (sequence of its NEW command)
        48     8  i8    price_tick               limit price
        56     8  i8    qty_lot                  order quantity now
        64     8  i8    executed_qty_lot         cumulative filled
        72     8  i8    cum_quote_minor          cumulative quote amount
        80     8  i8    stop_price_tick          trigger price
        88    36  S36   client_order_id          the NEW's id on ACCEPTED/REJECTED (AMENDED: a new
                                                 one); a CANCEL's own id on its CANCELED or
                                                 CANCEL_REJECTED; else empty
       124     1  u1    side                     Side
       125     1  u1    order_type               OrderType
       126     1  u1    time_in_force            TimeInForce
       127     1  u1    status                   OrderStatus after this event

[FILL] payload, bytes 40-127
        40     8  i8    trade_id                 per-symbol trade id
        48     8  i8    price_tick               execution price
        56     8  i8    qty_lot                  executed base quantity
        64     8  i8    quote_qty_minor          price x qty in quote minor units (exact)
        72     8  i8    maker_order_id
        80     8  i8    taker_order_id
        88     8  i8    maker_fee_minor          in the maker's received asset (set by risk)
        96     8  i8    taker_fee_minor          in the taker's received asset (set by risk)
       104     4  u4    maker_account_id         taker account = header account_id
       108     1  u1    taker_side               Side of the taker
       109     1  u1    taker_order_type         OrderType of the taker
       110     2  -     (reserved)               zero
       112     8  i8    maker_leaves_qty_lot     maker's remaining quantity (0 = filled)
       120     8  i8    taker_leaves_qty_lot     taker's remaining quantity

[PREVENTED] payload, bytes 40-127 (a self-trade prevented: Binance's "prevented match")
        40     8  i8    prevented_match_id       per-symbol, from 1
        48     8  i8    price_tick               the maker's price
        56     8  i8    taker_prevented_lot      taker quantity taken off by STP (0: none, or
                                                 a taker defined by quote amount)
        64     8  i8    maker_prevented_lot      maker quantity taken off by STP
        72     8  i8    maker_order_id
        80     8  i8    taker_order_id
        88     4  u4    maker_account_id         = the taker's account (header account_id)
        92     1  u1    taker_side               Side of the taker
        93     1  u1    stp_mode                 StpMode applied (the taker's)
        94     2  -     (reserved)               zero
        96     8  i8    maker_leaves_qty_lot     maker's remaining quantity after it
       104     8  i8    taker_leaves_qty_lot     taker's remaining quantity after it
       112    16  -     (reserved)               zero

[BOOK_UPDATE] payload, bytes 40-127
        40     8  i8    book_update_id           per-symbol, +1 per change
        48     8  i8    price_tick               level price
        56     8  i8    level_qty_lot            total visible quantity now; 0 = level gone
        64     8  i8    level_orders             orders resting at the level
        72     1  u1    side                     Side of the level
        73    55  -     (reserved)               zero

[BALANCE] payload, bytes 40-127
        40     4  u4    asset_id                 asset
        44     4  -     (reserved)               zero
        48     8  i8    free_minor               free balance now
        56     8  i8    locked_minor             locked (held) balance now
        64     8  i8    delta_minor              change that caused this record
        72    56  -     (reserved)               zero

[TRANSFER] payload, bytes 40-127
        40     8  i8    amount_minor             credit or debit amount, > 0
        48     4  u4    asset_id                 asset
        52     4  -     (reserved)               zero
        56    36  S36   reference                operator's transfer reference
        92     4  -     (reserved)               zero
        96    32  S32   actor                    who ordered it (admin user; empty: the config)

[ACCOUNT] payload, bytes 40-127
        40     4  u4    permissions              Permission bits
        44     4  u4    max_open_orders          0 = symbol default
        48     4  i4    maker_fee_e8             rate x 1e8; -1 = symbol default
        52     4  i4    taker_fee_e8             rate x 1e8; -1 = symbol default
        56     8  i8    max_order_notional_minor 0 = no cap (quote minor units)
        64     8  i8    daily_loss_limit_minor   0 = none; tripping it kills the account
        72     4  u4    orders_per_10s           order rate limit (edge); 0 = the instance's
        76     4  u4    orders_per_day           order rate limit (edge); 0 = the instance's
        80    16  -     (reserved)               zero
        96    32  S32   actor                    who ordered it

[KEY] payload, bytes 40-127
        40     8  i8    key_id                   API key id (its vault entry: edge/vault.py)
        48     4  u4    permissions              Permission bits
        52     4  -     (reserved)               zero
        56     8  i8    expires_ns               0 = never
        64    32  u1x32 key_sha256               SHA-256 of the API key string
        96    32  S32   actor                    who ordered it

[ADMIN] payload, bytes 40-127 (admin commands with no other payload)
        40     1  u1    admin_flags              ADMIN_SUSPEND: KILL/UNKILL_ACCOUNT also (un)suspend
        41    55  -     (reserved)               zero
        96    32  S32   actor                    who ordered it

[AUDIT] payload, bytes 40-127 (an admin API call that changes nothing: a read, a login)
        40    56  S56   call                     "GET /admin/v1/accounts/7", "login", ... (cut at 56)
        96    32  S32   actor                    who made it

Record types by payload:
  NEW_ORDER    NEW_ORDER (also the new leg of CANCEL_REPLACE and each leg of ORDER_LIST)
  CANCEL       CANCEL, CANCEL_REPLACE (FLAG_CONTINUED, then a NEW_ORDER record)
  AMEND        AMEND (a following EXT record, if any, carries the new client order id)
  ORDER_LIST   ORDER_LIST (FLAG_CONTINUED, then its NEW_ORDER legs)
  EXT          EXT: text that did not fit in the record before it
  ORDER_EVENT  ORDER_ACCEPTED, ORDER_REJECTED, ORDER_EXPIRED, ORDER_CANCELED, ORDER_AMENDED,
               ORDER_TRIGGERED, CANCEL_REJECTED
  FILL         FILL
  BOOK_UPDATE  BOOK_UPDATE
  BALANCE      BALANCE
  PREVENTED    TRADE_PREVENTED
  TRANSFER     CREDIT, DEBIT
  ACCOUNT      ACCOUNT_OPEN, ACCOUNT_LIMITS
  KEY          KEY_ADD, KEY_REVOKE
  ADMIN        HALT_SYMBOL, RESUME_SYMBOL, KILL_ACCOUNT, UNKILL_ACCOUNT
  AUDIT        ADMIN_AUDIT (journaled, applied by no engine)
  (header)     CANCEL_ALL
Every admin record names its actor at bytes 96-127: the journal is the audit trail.
"""

from __future__ import annotations

import collections
import enum
import re
import struct

import numpy as np

RECORD_BYTES = 128
HEADER_BYTES = 40
RECORD_LAYOUT_VERSION = 1
CLIENT_ID_BYTES = 36

# Field lists in offset order; (None, n) is n reserved bytes. Offsets accumulate from 0
# (header) or 40 (payload); tests check them against the drawing above.
HEADER_FIELDS = [
    ("type", "<u2"), ("flags", "<u2"), ("source", "<u2"), ("reason", "<u2"),
    ("seq", "<i8"), ("ts_ns", "<i8"), ("source_seq", "<i8"),
    ("account_id", "<u4"), ("symbol_id", "<u4"),
]

PAYLOAD_FIELDS = {
    "NEW_ORDER": [
        ("price_tick", "<i8"), ("qty_lot", "<i8"), ("quote_qty_minor", "<i8"), ("stop_price_tick", "<i8"),
        ("iceberg_qty_lot", "<i8"), ("trailing_delta_bips", "<i4"),
        ("side", "u1"), ("order_type", "u1"), ("time_in_force", "u1"), ("stp_mode", "u1"),
        ("client_order_id", "S36"), ("resp_type", "u1"), (None, 3),
    ],
    "CANCEL": [
        ("order_id", "<i8"), ("orig_client_order_id", "S36"), ("new_client_order_id", "S36"),
        ("cancel_restrictions", "u1"), ("replace_mode", "u1"), (None, 6),
    ],
    "AMEND": [
        ("order_id", "<i8"), ("new_price_tick", "<i8"), ("new_qty_lot", "<i8"),
        ("orig_client_order_id", "S36"), (None, 28),
    ],
    "ORDER_LIST": [("list_type", "u1"), (None, 7), ("list_client_order_id", "S36"), (None, 44)],
    "EXT": [("ext_kind", "u1"), (None, 7), ("text1", "S36"), ("text2", "S36"), (None, 8)],
    "ORDER_EVENT": [
        ("order_id", "<i8"), ("price_tick", "<i8"), ("qty_lot", "<i8"), ("executed_qty_lot", "<i8"),
        ("cum_quote_minor", "<i8"), ("stop_price_tick", "<i8"), ("client_order_id", "S36"),
        ("side", "u1"), ("order_type", "u1"), ("time_in_force", "u1"), ("status", "u1"),
    ],
    "FILL": [
        ("trade_id", "<i8"), ("price_tick", "<i8"), ("qty_lot", "<i8"), ("quote_qty_minor", "<i8"),
        ("maker_order_id", "<i8"), ("taker_order_id", "<i8"), ("maker_fee_minor", "<i8"),
        ("taker_fee_minor", "<i8"), ("maker_account_id", "<u4"), ("taker_side", "u1"), ("taker_order_type", "u1"),
        (None, 2),
        ("maker_leaves_qty_lot", "<i8"), ("taker_leaves_qty_lot", "<i8"),
    ],
    "PREVENTED": [
        ("prevented_match_id", "<i8"), ("price_tick", "<i8"), ("taker_prevented_lot", "<i8"),
        ("maker_prevented_lot", "<i8"), ("maker_order_id", "<i8"), ("taker_order_id", "<i8"),
        ("maker_account_id", "<u4"), ("taker_side", "u1"), ("stp_mode", "u1"), (None, 2),
        ("maker_leaves_qty_lot", "<i8"), ("taker_leaves_qty_lot", "<i8"), (None, 16),
    ],
    "BOOK_UPDATE": [
        ("book_update_id", "<i8"), ("price_tick", "<i8"), ("level_qty_lot", "<i8"), ("level_orders", "<i8"),
        ("side", "u1"), (None, 55),
    ],
    "BALANCE": [
        ("asset_id", "<u4"), (None, 4), ("free_minor", "<i8"), ("locked_minor", "<i8"), ("delta_minor", "<i8"),
        (None, 56),
    ],
    "TRANSFER": [("amount_minor", "<i8"), ("asset_id", "<u4"), (None, 4), ("reference", "S36"), (None, 4),
                 ("actor", "S32")],
    "ACCOUNT": [
        ("permissions", "<u4"), ("max_open_orders", "<u4"), ("maker_fee_e8", "<i4"), ("taker_fee_e8", "<i4"),
        ("max_order_notional_minor", "<i8"), ("daily_loss_limit_minor", "<i8"),
        ("orders_per_10s", "<u4"), ("orders_per_day", "<u4"), (None, 16), ("actor", "S32"),
    ],
    "KEY": [
        ("key_id", "<i8"), ("permissions", "<u4"), (None, 4), ("expires_ns", "<i8"),
        ("key_sha256", ("u1", (32,))), ("actor", "S32"),
    ],
    "ADMIN": [("admin_flags", "u1"), (None, 55), ("actor", "S32")],
    "AUDIT": [("call", "S56"), ("actor", "S32")],
}


def _build(fields_groups) -> np.dtype:
    names, formats, offsets = [], [], []
    off = 0
    for fields in fields_groups:
        for name, fmt in fields:
            if name is None:
                off += fmt
                continue
            dt = np.dtype(fmt)
            names.append(name)
            formats.append(dt)
            offsets.append(off)
            off += dt.itemsize
    return np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": RECORD_BYTES})


RECORD_DTYPE = _build([HEADER_FIELDS])  # header only: what every consumer reads first
DTYPES: dict[str, np.dtype] = {name: _build([HEADER_FIELDS, fields]) for name, fields in PAYLOAD_FIELDS.items()}
NEW_ORDER_DTYPE = DTYPES["NEW_ORDER"]
CANCEL_DTYPE = DTYPES["CANCEL"]
AMEND_DTYPE = DTYPES["AMEND"]
ORDER_LIST_DTYPE = DTYPES["ORDER_LIST"]
EXT_DTYPE = DTYPES["EXT"]
ORDER_EVENT_DTYPE = DTYPES["ORDER_EVENT"]
FILL_DTYPE = DTYPES["FILL"]
BOOK_UPDATE_DTYPE = DTYPES["BOOK_UPDATE"]
BALANCE_DTYPE = DTYPES["BALANCE"]
PREVENTED_DTYPE = DTYPES["PREVENTED"]
TRANSFER_DTYPE = DTYPES["TRANSFER"]
ACCOUNT_DTYPE = DTYPES["ACCOUNT"]
KEY_DTYPE = DTYPES["KEY"]
ADMIN_DTYPE = DTYPES["ADMIN"]
AUDIT_DTYPE = DTYPES["AUDIT"]


# --- header values -------------------------------------------------------------------------
FLAG_CONTINUED = 0x0001  # the next record belongs to the same command
FLAG_REPLAY = 0x0002     # produced while recovering from the journal
FLAG_SELF_TRADE = 0x0004  # FILL between two orders of one account (STP mode NONE)
FLAG_MAKER_DONE = 0x0008  # FILL that completed the maker order
FLAG_TAKER_DONE = 0x0010  # FILL that completed the taker order (nothing left to trade or spend)
FLAG_END = 0x0020         # the last result of one command (credits: the command is done)
FLAG_QTY_CAP = 0x0040     # NEW_ORDER: qty_lot is a cap risk added; the order is defined by its quote
FLAG_DEFERRED = 0x0080    # NEW_ORDER leg of a CANCEL_REPLACE on its way to the cancel: not an order
                          # yet; matching hands it back (flag cleared) when the cancel is done
FLAG_RESULT = 0x0100      # sequenced from matching's results (an echo or a returned leg keeps its
                          # producer's source): the journal tells results from commands by it

SOURCE_ADMIN = 0
ADMIN_SUSPEND = 0x01  # ADMIN payload's admin_flags: the kill (unkill) also (un)suspends the account
ACTOR_BYTES = 32
SOURCE_MATCHING = 0x8000  # | shard index
# A matching result's source_seq names the command that caused it: (its source << 48) | its
# source_seq, so each edge process knows its own commands' results among everyone's reports.
CAUSE_SOURCE_SHIFT = 48
CAUSE_SEQ_MASK = (1 << CAUSE_SOURCE_SHIFT) - 1


def cause_of(source: int, source_seq: int) -> int:
    """The cause a command record names; one that is itself a result (an echo) passes its own on."""
    if source >= SOURCE_MATCHING:
        return source_seq
    return (source << CAUSE_SOURCE_SHIFT) | (source_seq & CAUSE_SEQ_MASK)


def cause_source(result_source_seq: int) -> int:
    return result_source_seq >> CAUSE_SOURCE_SHIFT


class RecordType(enum.IntEnum):
    # client commands (edge -> order engine)
    NEW_ORDER = 1
    CANCEL = 2
    CANCEL_ALL = 3
    AMEND = 4
    CANCEL_REPLACE = 5
    ORDER_LIST = 6
    EXT = 15
    # admin commands
    CREDIT = 32
    DEBIT = 33
    HALT_SYMBOL = 34
    RESUME_SYMBOL = 35
    KILL_ACCOUNT = 36
    UNKILL_ACCOUNT = 37
    KEY_ADD = 38
    KEY_REVOKE = 39
    ACCOUNT_OPEN = 40
    ACCOUNT_LIMITS = 41
    ADMIN_AUDIT = 42     # an admin API call that changes nothing, journaled for the audit trail
    # results (risk / matching -> order engine -> downstream)
    ORDER_ACCEPTED = 64
    ORDER_REJECTED = 65
    FILL = 66
    ORDER_EXPIRED = 67
    ORDER_CANCELED = 68
    ORDER_AMENDED = 69
    ORDER_TRIGGERED = 70
    CANCEL_REJECTED = 71
    BOOK_UPDATE = 72
    BALANCE = 73
    TRADE_PREVENTED = 74


PAYLOAD_OF: dict[RecordType, str | None] = {
    RecordType.NEW_ORDER: "NEW_ORDER",
    RecordType.CANCEL: "CANCEL",
    RecordType.CANCEL_ALL: None,
    RecordType.AMEND: "AMEND",
    RecordType.CANCEL_REPLACE: "CANCEL",
    RecordType.ORDER_LIST: "ORDER_LIST",
    RecordType.EXT: "EXT",
    RecordType.CREDIT: "TRANSFER",
    RecordType.DEBIT: "TRANSFER",
    RecordType.HALT_SYMBOL: "ADMIN",
    RecordType.RESUME_SYMBOL: "ADMIN",
    RecordType.KILL_ACCOUNT: "ADMIN",
    RecordType.UNKILL_ACCOUNT: "ADMIN",
    RecordType.KEY_ADD: "KEY",
    RecordType.KEY_REVOKE: "KEY",
    RecordType.ACCOUNT_OPEN: "ACCOUNT",
    RecordType.ACCOUNT_LIMITS: "ACCOUNT",
    RecordType.ADMIN_AUDIT: "AUDIT",
    RecordType.ORDER_ACCEPTED: "ORDER_EVENT",
    RecordType.ORDER_REJECTED: "ORDER_EVENT",
    RecordType.FILL: "FILL",
    RecordType.ORDER_EXPIRED: "ORDER_EVENT",
    RecordType.ORDER_CANCELED: "ORDER_EVENT",
    RecordType.ORDER_AMENDED: "ORDER_EVENT",
    RecordType.ORDER_TRIGGERED: "ORDER_EVENT",
    RecordType.CANCEL_REJECTED: "ORDER_EVENT",
    RecordType.BOOK_UPDATE: "BOOK_UPDATE",
    RecordType.BALANCE: "BALANCE",
    RecordType.TRADE_PREVENTED: "PREVENTED",
}


def dtype_of(record_type: int) -> np.dtype:
    """The full 128-byte dtype for a record type."""
    payload = PAYLOAD_OF[RecordType(record_type)]
    return RECORD_DTYPE if payload is None else DTYPES[payload]


# --- enumerations carried in records (0 is never a valid value: unset fields are caught) ----
class Side(enum.IntEnum):
    BUY = 1
    SELL = 2


class OrderType(enum.IntEnum):
    LIMIT = 1
    MARKET = 2
    STOP_LOSS = 3
    STOP_LOSS_LIMIT = 4
    TAKE_PROFIT = 5
    TAKE_PROFIT_LIMIT = 6
    LIMIT_MAKER = 7


class TimeInForce(enum.IntEnum):
    GTC = 1
    IOC = 2
    FOK = 3


class StpMode(enum.IntEnum):
    DEFAULT = 0  # the symbol's default mode
    NONE = 1
    EXPIRE_TAKER = 2
    EXPIRE_MAKER = 3
    EXPIRE_BOTH = 4
    DECREMENT = 5


class RespType(enum.IntEnum):
    DEFAULT = 0  # Binance: FULL for LIMIT/MARKET, ACK otherwise
    ACK = 1
    RESULT = 2
    FULL = 3


class OrderStatus(enum.IntEnum):
    NEW = 1
    PARTIALLY_FILLED = 2
    FILLED = 3
    CANCELED = 4
    PENDING_CANCEL = 5
    REJECTED = 6
    EXPIRED = 7
    EXPIRED_IN_MATCH = 8  # expired by self-trade prevention


class CancelRestriction(enum.IntEnum):
    NONE = 0
    ONLY_NEW = 1
    ONLY_PARTIALLY_FILLED = 2


class ReplaceMode(enum.IntEnum):
    STOP_ON_FAILURE = 1
    ALLOW_FAILURE = 2


class ListType(enum.IntEnum):
    OCO = 1
    OTO = 2
    OTOCO = 3


class ExtKind(enum.IntEnum):
    NEW_CLIENT_ORDER_ID = 1  # text1: the amend's newClientOrderId


class Permission(enum.IntFlag):
    TRADE = 0x1        # place, amend, cancel orders
    READ = 0x2         # account, orders, trades
    USER_STREAM = 0x4  # user data stream
    ADMIN = 0x8        # admin plane (operators only)


class Reason(enum.IntEnum):
    """Why a command was rejected or an order ended; carried in the header's `reason`."""

    NONE = 0
    INSUFFICIENT_BALANCE = 1
    UNKNOWN_ORDER = 2
    DUPLICATE_ORDER = 3
    UNKNOWN_SYMBOL = 4
    MARKET_CLOSED = 5
    ACCOUNT_DISABLED = 6
    NO_TRADE_PERMISSION = 7
    UNKNOWN_ACCOUNT = 8
    FILTER_PRICE = 9
    FILTER_LOT_SIZE = 10
    FILTER_MARKET_LOT_SIZE = 11
    FILTER_NOTIONAL = 12
    FILTER_MIN_NOTIONAL = 13
    FILTER_MAX_NUM_ORDERS = 14
    FILTER_PERCENT_PRICE_BY_SIDE = 15
    FILTER_ICEBERG_PARTS = 16
    WOULD_MATCH = 17            # LIMIT_MAKER that would take
    WOULD_TRIGGER = 18          # stop whose trigger is already crossed
    OVERFLOW = 19               # price x quantity beyond int64: refused, never wrapped
    UNSUPPORTED_COMBINATION = 20
    NO_LIQUIDITY = 21           # MARKET against an empty side
    IOC_UNFILLED = 22           # IOC/MARKET remainder expired
    FOK_UNFILLED = 23           # FOK could not fill entirely
    SELF_TRADE_PREVENTED = 24   # expired by STP
    CANCELED_BY_USER = 25
    CANCELED_BY_ADMIN = 26      # kill switch, halt
    AMEND_QTY_INCREASE = 27     # not allowed by keep-priority amend
    CANCEL_RESTRICTED = 28      # cancelRestrictions not met
    ORDER_LIST_INVALID = 29     # price relationship of an OCO is wrong
    DAILY_LOSS_LIMIT = 30       # the account tripped its daily loss limit
    ORDER_NOTIONAL_CAP = 31     # above the account's max order notional
    TOO_MANY_OPEN_ORDERS = 32   # account-wide open order limit
    INVALID_AMOUNT = 33         # admin credit/debit of <= 0 or beyond the balance
    UNKNOWN_ASSET = 34
    BOOK_FULL = 35              # the engine's configured order/level capacity is reached
    NOT_ATTEMPTED = 36          # cancel-replace: this part was not tried (the other part failed)
    FILTER_TRAILING_DELTA = 37
    LIST_OTHER_LEG = 38         # OCO: expired because the other order of its list activated or ended
    INVALID_PARAMETER = 39      # an admin command's value is out of its range (a fee rate > 100%)


# Binance error code and message for each rejection reason (the edge turns these into
# {"code": ..., "msg": ...}); ending reasons (IOC_UNFILLED, ...) are not errors.
REASON_ERRORS: dict[Reason, tuple[int, str]] = {
    Reason.INSUFFICIENT_BALANCE: (-2010, "Account has insufficient balance for requested action."),
    Reason.UNKNOWN_ORDER: (-2011, "Unknown order sent."),
    Reason.DUPLICATE_ORDER: (-2010, "Duplicate order sent."),
    Reason.UNKNOWN_SYMBOL: (-1121, "Invalid symbol."),
    Reason.MARKET_CLOSED: (-2010, "Market is closed."),
    Reason.ACCOUNT_DISABLED: (-2010, "This action is disabled on this account."),
    Reason.NO_TRADE_PERMISSION: (-2010, "This account may not place or cancel orders."),
    Reason.UNKNOWN_ACCOUNT: (-2010, "This action is disabled on this account."),
    Reason.FILTER_PRICE: (-1013, "Filter failure: PRICE_FILTER"),
    Reason.FILTER_LOT_SIZE: (-1013, "Filter failure: LOT_SIZE"),
    Reason.FILTER_MARKET_LOT_SIZE: (-1013, "Filter failure: MARKET_LOT_SIZE"),
    Reason.FILTER_NOTIONAL: (-1013, "Filter failure: NOTIONAL"),
    # exchangeInfo advertises one NOTIONAL filter (min and max), so both ends fail by its name
    Reason.FILTER_MIN_NOTIONAL: (-1013, "Filter failure: NOTIONAL"),
    Reason.FILTER_MAX_NUM_ORDERS: (-1013, "Filter failure: MAX_NUM_ORDERS"),
    Reason.FILTER_PERCENT_PRICE_BY_SIDE: (-1013, "Filter failure: PERCENT_PRICE_BY_SIDE"),
    Reason.FILTER_ICEBERG_PARTS: (-1013, "Filter failure: ICEBERG_PARTS"),
    Reason.FILTER_TRAILING_DELTA: (-1013, "Filter failure: TRAILING_DELTA"),
    Reason.WOULD_MATCH: (-2010, "Order would immediately match and take."),
    Reason.WOULD_TRIGGER: (-2010, "Order would trigger immediately."),
    Reason.OVERFLOW: (-1013, "Filter failure: NOTIONAL"),
    Reason.UNSUPPORTED_COMBINATION: (-1014, "Unsupported order combination."),
    Reason.NO_LIQUIDITY: (-2010, "Order book liquidity is less than LOT_SIZE filter minimum quantity."),
    Reason.AMEND_QTY_INCREASE: (-2038, "Order amend (quantity increase) is not supported."),
    Reason.CANCEL_RESTRICTED: (-2011, "Order was not canceled due to cancel restrictions."),
    Reason.ORDER_LIST_INVALID: (-1106, "The relationship of the prices for the orders is not correct."),
    Reason.DAILY_LOSS_LIMIT: (-2010, "This action is disabled on this account."),
    Reason.ORDER_NOTIONAL_CAP: (-1013, "Filter failure: NOTIONAL"),
    Reason.TOO_MANY_OPEN_ORDERS: (-1015, "Too many new orders."),
    Reason.INVALID_AMOUNT: (-1102, "Amount must be positive and within the balance."),
    Reason.UNKNOWN_ASSET: (-1121, "Invalid asset."),
    Reason.BOOK_FULL: (-1015, "Too many new orders."),
    Reason.INVALID_PARAMETER: (-1130, "Invalid data sent for a parameter."),
}


# --- Python helpers (edge, tests, tools; never on an engine's hot path) --------------------
_CLIENT_ID_RE = re.compile(r"^[\.A-Z\:/a-z0-9_-]{1,36}$")


def encode_client_id(field: str, value: str) -> bytes:
    """Binance's client order id rule (`^[.A-Z:/a-z0-9_-]{1,36}$`) -> NUL-padded bytes."""
    if not isinstance(value, str) or not _CLIENT_ID_RE.fullmatch(value):
        raise ValueError(f"{field}={value!r} (must match ^[\\.A-Z\\:/a-z0-9_-]{{1,36}}$)")
    return value.encode("ascii")


def decode_client_id(raw: bytes) -> str:
    """The inverse of `encode_client_id` (numpy already strips the NUL padding)."""
    return bytes(raw).rstrip(b"\0").decode("ascii")


def concat(arrays) -> np.ndarray:
    """Records of any types, in order, as one RECORD_DTYPE array (a byte copy).

    `np.concatenate` is not this: numpy's dtype promotion drops the padding of structured
    dtypes, which shrinks 128-byte records to their packed field sizes.
    """
    raw = [np.ascontiguousarray(a).view(np.uint8).reshape(-1, RECORD_BYTES) for a in arrays]
    out = np.concatenate(raw) if raw else np.zeros((0, RECORD_BYTES), np.uint8)
    return out.view(RECORD_DTYPE).reshape(-1)


def as_records(data) -> np.ndarray:
    """A C-contiguous array of 128-byte records from one record array, an (n, 128) byte
    matrix, or a list of record arrays (concatenated)."""
    if isinstance(data, (list, tuple)):
        return concat(data)
    arr = np.ascontiguousarray(data)
    if arr.ndim == 2 and arr.dtype == np.uint8 and arr.shape[1] == RECORD_BYTES:
        return arr.view(RECORD_DTYPE).reshape(-1)
    if arr.dtype.itemsize != RECORD_BYTES or arr.ndim != 1:
        raise ValueError(f"records shape={arr.shape} dtype itemsize={arr.dtype.itemsize} "
                         f"(need 1-D {RECORD_BYTES}-byte records; use records.concat, not np.concatenate)")
    return arr


def command_bounds(records: np.ndarray) -> list[int]:
    """Start index of every command in a record array, then its length: a command is a record
    and those after it while the previous one has FLAG_CONTINUED (`records[b[i]:b[i+1]]`)."""
    flags = np.asarray(as_records(records)["flags"])
    ends = np.flatnonzero((flags & FLAG_CONTINUED) == 0) + 1
    starts = [0] + ends.tolist()
    if starts[-1] != len(flags):
        starts.append(len(flags))  # a trailing incomplete command is one too
    return starts


def view(record: np.ndarray) -> np.void:
    """One record seen through the dtype of its own type."""
    rec = np.ascontiguousarray(record).reshape(-1)[:1]
    return rec.view(np.uint8).view(dtype_of(int(rec.view(RECORD_DTYPE)["type"][0])))[0]


def empty(record_type: int, n: int = 1) -> np.ndarray:
    """`n` zeroed records of the type's dtype with `type` set."""
    out = np.zeros(n, dtype=dtype_of(record_type))
    out["type"] = int(record_type)
    return out


# --- struct decoding (the edge reads records one at a time in Python: a struct unpack of the
# header and payload costs a fraction of numpy's per-field access) ---------------------------
_STRUCT_CODES = {"<i8": "q", "<u4": "I", "<i4": "i", "<u2": "H", "u1": "B", "S36": "36s", "S32": "32s", "S56": "56s"}


def _struct_format(fields) -> tuple[str, list[str]]:
    fmt, names = "<", []
    for name, f in fields:
        if name is None:
            fmt += f"{f}x"
        elif isinstance(f, tuple):  # a sub-array (KEY's key_sha256): raw bytes
            fmt += f"{f[1][0]}s"
            names.append(name)
        else:
            fmt += _STRUCT_CODES[f]
            names.append(name)
    return fmt, names


def record_tuples() -> dict[int, tuple[struct.Struct, type]]:
    """For each record type: a Struct over the whole 128-byte record and a namedtuple class
    with the dtype's field names (header first), built from the field lists above."""
    out = {}
    for rtype, payload in PAYLOAD_OF.items():
        groups = [HEADER_FIELDS] + ([PAYLOAD_FIELDS[payload]] if payload else [])
        fmt, names = _struct_format([f for g in groups for f in g])
        st = struct.Struct(fmt)
        if st.size > RECORD_BYTES:
            raise AssertionError(f"{rtype.name}: struct of {st.size} bytes")
        out[int(rtype)] = (st, collections.namedtuple(f"{rtype.name.title().replace('_', '')}Record", names))
    return out


_PACKERS: dict[int, tuple[struct.Struct, tuple[str, ...], tuple]] = {}


def pack(record_type: int, **fields) -> np.ndarray:
    """One record of `record_type` from field values (every other byte zero), as a 1-element
    RECORD_DTYPE array: one struct pack, far cheaper than setting numpy fields one by one (the
    edge makes one per request)."""
    packer = _PACKERS.get(int(record_type))
    if packer is None:
        st, cls = record_tuples()[int(record_type)]
        codes = re.findall(r"(\d*)([a-zA-Z])", st.format)
        zeros = tuple(b"" if code == "s" else 0 for _, code in codes if code != "x")
        packer = _PACKERS[int(record_type)] = (st, cls._fields, zeros)
    st, names, zeros = packer
    unknown = set(fields) - set(names)
    if unknown:
        raise ValueError(f"{RecordType(record_type).name}: no field {sorted(unknown)}")
    fields["type"] = int(record_type)
    buf = bytearray(RECORD_BYTES)
    st.pack_into(buf, 0, *[fields.get(n, z) for n, z in zip(names, zeros)])
    return np.frombuffer(buf, np.uint8).view(RECORD_DTYPE)
