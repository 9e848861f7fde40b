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
              LIMIT_MAKER. (Stops, take-profits, icebergs, trailing and lists come later.)
  CANCEL      order_id of an open order of the same account and symbol; cancel_restrictions.
  CANCEL_ALL  every open order of the account on the symbol.
  AMEND       order_id; new_price_tick (0 = unchanged), new_qty_lot (0 = unchanged; the new
              *total* quantity, must be > executed). Quantity down at the same price keeps
              priority; a price change or a quantity up re-enters the order at the back of its
              new level, where it may trade as a taker.

Results, in this order for one command:
  ORDER_ACCEPTED  a NEW_ORDER entered matching (status NEW), before its fills. Carries the
                  NEW's client_order_id (no other result does), price, qty_lot (0 for MARKET
                  by quote), side, type, tif.
  ORDER_REJECTED  LIMIT_MAKER that would take (reason WOULD_MATCH); nothing else happens.
  FILL            one per maker touched: price = the maker's price; qty_lot; quote_qty_minor =
                  price x qty x quote_per_tick_lot; maker/taker order ids; maker_account_id
                  (the taker's account is header.account_id); taker_side; maker and taker
                  leaves (taker leaves are 0 for MARKET by quote); fees 0 (risk sets them);
                  trade_id per symbol from 1; FLAG_SELF_TRADE when both accounts are the same.
  ORDER_EXPIRED   the taker's remainder of IOC or MARKET (reason IOC_UNFILLED, status EXPIRED),
                  a FOK that cannot fill completely (reason FOK_UNFILLED, no fills at all), or
                  an order removed by self-trade prevention (reason SELF_TRADE_PREVENTED, status
                  EXPIRED_IN_MATCH) — taker and/or maker.
  ORDER_CANCELED  after CANCEL / CANCEL_ALL (reason CANCELED_BY_USER, status CANCELED), one per
                  order, in book priority order (bids best first, then asks best first).
  CANCEL_REJECTED the command could not apply: unknown id or another account's order
                  (UNKNOWN_ORDER), CANCEL_ALL with no open order (UNKNOWN_ORDER, order_id 0),
                  restrictions not met (CANCEL_RESTRICTED), amend total <= executed
                  (INVALID_AMOUNT), LIMIT_MAKER amended onto a crossing price (WOULD_MATCH).
  ORDER_AMENDED   the order after an amend (qty_lot = new total, price_tick = new price),
                  before any fills of the re-entered order.
  BOOK_UPDATE     after the command, one per price level whose state changed, in the order
                  the levels were first touched: price, level qty (0 = level gone), orders at
                  the level, side, book_update_id (per symbol, +1 per record, from 1).
Order events carry order_id, price_tick, qty_lot (original total), executed_qty_lot,
cum_quote_minor, side, order_type, time_in_force and status after the event. Result headers:
seq 0 (the order engine stamps it), source SOURCE_MATCHING | shard, source_seq = this engine's
output counter from 1, ts_ns of the command, account_id of the order (taker for fills).

Self-trade prevention applies when taker and maker have the same account; the taker's mode
(DEFAULT -> the symbol's default_stp) decides: NONE trades; EXPIRE_TAKER expires the taker's
remainder and stops; EXPIRE_MAKER expires that maker and goes on; EXPIRE_BOTH expires both and
stops; DECREMENT reduces both by the smaller remaining quantity without a trade, expiring
whichever reaches zero (both if equal) and goes on while the taker has quantity. When both
expire, the maker's ORDER_EXPIRED comes first. A resting order never matches another resting
order, and a taker whose matching STP stopped never rests (its remainder expires).

MARKET by quote: at each level it takes min(maker qty, quote_left // (price x
quote_per_tick_lot)) lots and stops when not one more lot is affordable. It ends without an
ORDER_EXPIRED only when quote_left reaches exactly 0; otherwise its remainder expires with
IOC_UNFILLED. MARKET by quantity ends without ORDER_EXPIRED only when fully filled.

FOK is checked before any fill: walking the crossing makers in priority order, it counts the
quantity it would trade — makers of other accounts, plus same-account makers only under STP
NONE; under EXPIRE_MAKER same-account makers are skipped; under EXPIRE_TAKER, EXPIRE_BOTH and
DECREMENT counting stops at the first same-account maker. If that count is below the order's
quantity the order expires (FOK_UNFILLED) with no fills and no other effect.

Python API (tests, tools, integrators; the compiled `step` is what runtimes call):
    eng = MatchingEngine(symbol_table, max_orders=..., max_levels=..., shard=0)
    out = eng.process(commands)     # 128-byte records in -> RECORD_DTYPE results out
    eng.levels(symbol_id, side)     # int64 (n, 3): price_tick, qty_lot, orders; best first
    eng.open_orders(symbol_id, side)  # order ids in priority order
    eng.order(order_id)             # dict of an open order, or None
"""
