"""What the edge knows: a projection of the report stream (orders, balances, books, trades),
and the commands it has sent that still wait for their results.

The projection is a pure function of the records applied, in journal order: it reads no clock
and no engine memory. An edge process builds it by replaying the journal (server.bootstrap),
then takes the reports ring's records whose sequence is above that replay's (`floor`).

Which results answer which command (results from matching carry matching's source, not the
edge's, so the edge matches them by content, in the order the engines made them):
  NEW_ORDER     the ORDER_ACCEPTED / ORDER_REJECTED of the same (account, client order id);
                the edge always sends a client order id (it makes one when the client did not)
  CANCEL        ORDER_CANCELED / CANCEL_REJECTED carrying the CANCEL's own client order id
                (matching echoes it; the edge always sends one)
  CANCEL_ALL    the first ORDER_CANCELED (CANCELED_BY_USER, no client order id) of the account
                on the symbol, or a CANCEL_REJECTED with order id 0 and no client order id
  AMEND         ORDER_AMENDED of the order, or a CANCEL_REJECTED of it with no client order id
  CANCEL_REPLACE  its cancel's result (the cancel's own id; that one record answers it), then
                its new order's results (by the new order's client order id)
  any command   refused before matching (by the order engine or risk): its refusal keeps the
                command's source and edge sequence, so it is found exactly by them (every
                record of a refused multi-record command, up to the one with FLAG_END)
Waiters of one key are answered first in, first out (one edge ring keeps its commands in order).
With several edge processes every edge sees every result; a matching result names the command
that caused it (records.cause_of), so one caused by another edge's command answers none here.
The result that answers a command opens it; every later record from the same source belongs
to it until the one with FLAG_END (matching emits one command's results together), so a
NEW's fills and its expiry arrive with it.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ganntec.edge.accounts import ADMIN_TYPES, Directory
from ganntec.edge.stats import SymbolStats
from ganntec.shm import records as R
from ganntec.shm.records import OrderStatus, RecordType, Side

T = RecordType
_DECODE = R.record_tuples()
RB = R.RECORD_BYTES
OPEN_STATUSES = (OrderStatus.NEW, OrderStatus.PARTIALLY_FILLED)
ENDED = frozenset((OrderStatus.FILLED, OrderStatus.CANCELED, OrderStatus.REJECTED, OrderStatus.EXPIRED,
                   OrderStatus.EXPIRED_IN_MATCH))
STOP_TYPES = frozenset((R.OrderType.STOP_LOSS, R.OrderType.STOP_LOSS_LIMIT, R.OrderType.TAKE_PROFIT,
                        R.OrderType.TAKE_PROFIT_LIMIT))


def decode(raw: bytes | memoryview, offset: int = 0):
    """One 128-byte record as a namedtuple of its type's fields."""
    rtype = int.from_bytes(raw[offset:offset + 2], "little")
    st, cls = _DECODE[rtype]
    return cls._make(st.unpack_from(raw, offset))


def cid_text(raw: bytes) -> str:
    return raw.rstrip(b"\0").decode("ascii")


@dataclass(slots=True)
class Order:
    order_id: int
    account_id: int
    symbol_id: int
    side: int
    order_type: int
    time_in_force: int
    price_tick: int
    qty_lot: int
    stop_price_tick: int
    client_order_id: str
    time_ns: int
    status: int = OrderStatus.NEW
    executed_lot: int = 0
    cum_quote_minor: int = 0
    update_ns: int = 0
    working_ns: int = -1  # when it entered the book (a stop: when it triggered)
    # what the NEW_ORDER said that no result carries
    quote_qty_minor: int = 0
    iceberg_lot: int = 0
    trailing_delta_bips: int = 0
    stp_mode: int = 0
    prevented_lot: int = 0
    list_id: int = -1  # the order list it belongs to (an OCO leg), else -1

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES


@dataclass(slots=True)
class OrderList:
    """An OCO: its id is its ORDER_LIST record's sequence; its legs' ids follow it."""

    list_id: int
    account_id: int
    symbol_id: int
    list_client_order_id: str
    order_ids: list
    time_ns: int


@dataclass(slots=True)
class Trade:
    trade_id: int
    symbol_id: int
    price_tick: int
    qty_lot: int
    quote_minor: int
    ts_ns: int
    buyer_is_maker: bool


@dataclass(slots=True)
class AggTrade:
    """Binance's aggregate trade: the fills of one taker order at one price."""

    agg_id: int
    price_tick: int
    qty_lot: int
    first_trade_id: int
    last_trade_id: int
    ts_ns: int
    buyer_is_maker: bool
    taker_order_id: int


@dataclass(slots=True)
class OwnTrade:
    trade: Trade
    order_id: int
    is_buyer: bool
    is_maker: bool
    commission_minor: int
    commission_asset_id: int


@dataclass
class Book:
    bids: dict[int, int] = field(default_factory=dict)  # price_tick -> visible qty_lot
    asks: dict[int, int] = field(default_factory=dict)
    last_update_id: int = 0

    def side(self, side: int) -> dict[int, int]:
        return self.bids if side == Side.BUY else self.asks

    def best(self, side: int) -> tuple[int, int]:
        """(price_tick, qty_lot) of the side's best level; (0, 0) when it is empty."""
        top = self.top(side, 1)
        return top[0] if top else (0, 0)

    def top(self, side: int, limit: int) -> list[tuple[int, int]]:
        levels = self.side(side)
        if not levels:
            return []
        if limit == 1:
            best = max(levels) if side == Side.BUY else min(levels)
            return [(best, levels[best])]
        prices = sorted(levels, reverse=(side == Side.BUY))[:limit]
        return [(p, levels[p]) for p in prices]


@dataclass
class Extras:
    """A NEW_ORDER's fields that its results do not carry."""

    quote_qty_minor: int = 0
    iceberg_lot: int = 0
    trailing_delta_bips: int = 0
    stp_mode: int = 0
    list_leg: int = 0          # 1 or 2: the first or second leg of an order list (its id - list_leg)
    list_client_order_id: str = ""


class Waiter:
    """A command that waits for its results; `done(records)` is called once, with the records
    from the one that answered it to the one with FLAG_END."""

    __slots__ = ("done", "records", "extras", "source", "source_seq", "taken", "single")

    def __init__(self, done: Callable[[list], None], extras: Extras | None = None, source: int = 0,
                 source_seq: int = 0, single: bool = False):
        self.done, self.records, self.extras = done, [], extras
        self.source, self.source_seq = source, source_seq  # the command's (edge, edge sequence)
        self.taken = False
        self.single = single  # answered by the one record that names it (a cancel-replace's cancel)


class EdgeState:
    def __init__(self, n_symbols: int, keep_closed: int = 200_000, keep_trades: int = 1000,
                 keep_own_trades: int = 100_000):
        self.seq = 0    # the last sequence applied
        self.floor = 0  # records at or below it are skipped (the bootstrap has them)
        self.orders: dict[int, Order] = {}
        self.open_by_account: dict[int, dict[int, Order]] = collections.defaultdict(dict)
        self.by_client_id: dict[tuple[int, str], int] = {}
        self.closed: collections.deque[int] = collections.deque()
        self.keep_closed = keep_closed
        self.balances: dict[tuple[int, int], tuple[int, int]] = {}
        self.balance_update_ns: dict[int, int] = {}
        self.books = [Book() for _ in range(n_symbols)]
        self.trades = [collections.deque(maxlen=keep_trades) for _ in range(n_symbols)]
        self.stats = [SymbolStats() for _ in range(n_symbols)]
        self.agg_trades = [collections.deque(maxlen=keep_trades) for _ in range(n_symbols)]
        self.agg_count = [0] * n_symbols
        self.last_trade = [None] * n_symbols  # Trade, per symbol
        self.own_trades: dict[tuple[int, int], collections.deque] = collections.defaultdict(
            lambda: collections.deque(maxlen=keep_own_trades))
        self._extras: dict[int, Extras] = {}  # order id -> a journaled NEW's extras (bootstrap)
        self._leg_extras: dict[tuple[int, str], Extras] = {}  # (account, cid) -> a live list leg's
        self._journal_list: tuple | None = None  # the ORDER_LIST a journaled leg follows
        self.lists: dict[int, OrderList] = {}
        self.waiting_new: dict[tuple[int, str], collections.deque[Waiter]] = collections.defaultdict(collections.deque)
        self.waiting_cancel: dict[tuple[int, int], collections.deque[Waiter]] = collections.defaultdict(
            collections.deque)
        self.waiting_cancel_all: dict[tuple[int, int], collections.deque[Waiter]] = collections.defaultdict(
            collections.deque)
        self.waiting_amend: dict[tuple[int, int], collections.deque[Waiter]] = collections.defaultdict(
            collections.deque)
        self.by_source_seq: dict[tuple[int, int], Waiter] = {}
        self._open_cmd: dict[int, Waiter] = {}  # source -> the command its results answer now
        # The edge whose commands the waiters are (its gateway sets it; None: every result may
        # answer, one client). Results another edge process caused answer none of ours.
        self.own_source: int | None = None
        self._foreign = False  # the record being applied is a result of another edge's command
        self.directory = Directory()  # accounts, key grants, halted symbols, audit (admin records)
        # An admin command's waiter after its echo, until its BALANCE (a credit or debit applied)
        self._admin_open: dict[int, Waiter] = {}
        self.listeners: list[Callable] = []  # called with each decoded record after it is applied
        self.batch_listeners: list[Callable] = []  # called after each applied batch (events go out)

    # --- waiting --------------------------------------------------------------------------
    def expect_new(self, account: int, cid: str, waiter: Waiter) -> None:
        self._expect(self.waiting_new, (account, cid), waiter)

    def expect_cancel(self, account: int, cancel_cid: str, waiter: Waiter) -> None:
        """A CANCEL, known by its own new_client_order_id (matching echoes it)."""
        self._expect(self.waiting_cancel, (account, cancel_cid), waiter)

    def expect_cancel_all(self, account: int, symbol_id: int, waiter: Waiter) -> None:
        self._expect(self.waiting_cancel_all, (account, symbol_id), waiter)

    def expect_amend(self, account: int, order_id: int, waiter: Waiter) -> None:
        """An AMEND: its ORDER_AMENDED, or a CANCEL_REJECTED of that order carrying no client id
        (a cancel's carries the cancel's own)."""
        self._expect(self.waiting_amend, (account, order_id), waiter)

    def expect_refusal(self, waiter: Waiter) -> None:
        """Only a refusal before matching, found by the command's edge sequence (the parts of a
        cancel-replace are expected under their own keys)."""
        self.by_source_seq[(waiter.source, waiter.source_seq)] = waiter

    def expect_admin(self, waiter: Waiter) -> None:
        """An admin command (source 0 on cmd.0): answered by its own echo, found exactly by its
        admin sequence; an applied CREDIT/DEBIT also by the BALANCE that follows it."""
        self.by_source_seq[(waiter.source, waiter.source_seq)] = waiter

    def forget(self, waiter: Waiter) -> None:
        self.by_source_seq.pop((waiter.source, waiter.source_seq), None)

    def _expect(self, queues: dict, key, waiter: Waiter) -> None:
        queues[key].append(waiter)
        if waiter.source_seq:
            self.by_source_seq[(waiter.source, waiter.source_seq)] = waiter

    def _take(self, queues: dict, key) -> Waiter | None:
        if self._foreign:
            return None
        q = queues.get(key)
        w = None
        while q and w is None:
            w = q.popleft()
            if w.taken:  # answered already by its edge sequence (a refusal)
                w = None
        if q is not None and not q:
            del queues[key]
        if w is not None:
            w.taken = True
            self.by_source_seq.pop((w.source, w.source_seq), None)
        return w

    def _refusal_waiter(self, r) -> Waiter | None:
        """The waiter of a command refused before matching: the refusal keeps the command's
        header (source = the edge, source_seq = its edge sequence), so it is found exactly."""
        if r.source >= R.SOURCE_MATCHING:
            return None
        w = self.by_source_seq.pop((r.source, r.source_seq), None)
        if w is not None:
            w.taken = True
        return w

    # --- queries --------------------------------------------------------------------------
    def order_by_client_id(self, account: int, cid: str) -> Order | None:
        oid = self.by_client_id.get((account, cid))
        return self.orders.get(oid) if oid is not None else None

    def open_orders(self, account: int, symbol_id: int | None = None) -> list[Order]:
        orders = self.open_by_account.get(account, {}).values()
        return [o for o in orders if symbol_id is None or o.symbol_id == symbol_id]

    def account_balances(self, account: int) -> dict[int, tuple[int, int]]:
        return {asset: v for (acc, asset), v in self.balances.items() if acc == account}

    # --- applying records -----------------------------------------------------------------
    def apply(self, records: np.ndarray, notify: bool = True) -> None:
        """Apply records (RECORD_DTYPE or (n, 128) bytes) in journal order. Records at or
        below the bootstrap's sequence are in already (reports published before the edge
        started); the reports ring never repeats a record otherwise (the supervisor
        republishes only what no publish reached)."""
        raw = np.ascontiguousarray(records).view(np.uint8).reshape(-1, RB)
        if not len(raw):
            return
        buf = raw.tobytes()
        listeners = self.listeners if notify else ()
        floor, own = self.floor, self.own_source
        for i in range(len(raw)):
            r = decode(buf, i * RB)
            if r.seq <= floor:
                continue
            self.seq = r.seq
            self._foreign = (own is not None and r.source >= R.SOURCE_MATCHING
                             and r.source_seq >> R.CAUSE_SOURCE_SHIFT != own)
            handler = _HANDLERS.get(r.type)
            if handler is not None:
                handler(self, r)
            self._collect(r)
            for fn in listeners:
                fn(r)
        if notify:
            for fn in self.batch_listeners:
                fn()

    def remember_commands(self, journal: np.ndarray) -> None:
        """Journaled NEW_ORDERs and ORDER_LISTs (a replay's input): what their results will not
        say (iceberg quantity, quote amount, trailing delta, STP mode, the list of a leg), kept
        for their ORDER_ACCEPTED."""
        raw = np.ascontiguousarray(journal).view(np.uint8).reshape(-1, RB)
        types = raw.view(R.RECORD_DTYPE).reshape(-1)["type"]
        for i in np.flatnonzero((types == int(T.NEW_ORDER)) | (types == int(T.ORDER_LIST))):
            r = decode(raw[i].tobytes())
            if r.type == T.ORDER_LIST:
                self._journal_list = (r.seq, cid_text(r.list_client_order_id)) if r.reason == 0 else None
            else:
                self._on_new(r)

    @property
    def remembered(self) -> dict[int, Extras]:
        """What `remember_commands` keeps for orders whose ORDER_ACCEPTED has not come yet."""
        return self._extras

    @remembered.setter
    def remembered(self, extras: dict[int, Extras]) -> None:
        self._extras = extras

    def forget_command(self, order_id: int) -> None:
        """Its results are in elsewhere (a history store resuming): drop what was kept for it."""
        self._extras.pop(order_id, None)

    def expect_leg(self, account: int, cid: str, extras: Extras) -> None:
        """A live list's other leg: its extras, for its ORDER_ACCEPTED (no waiter: the list's
        first leg's waiter collects it)."""
        self._leg_extras[(account, cid)] = extras

    def _collect(self, r) -> None:
        w = self._open_cmd.get(r.source)
        if w is None:
            return
        w.records.append(r)
        if r.flags & R.FLAG_END:
            del self._open_cmd[r.source]
            w.done(w.records)

    def _answer(self, r, w: Waiter | None) -> None:
        if w is None:
            return
        if w.single:
            w.done([r])
            return
        if r.source in self._open_cmd:  # a command without FLAG_END (never a client's) was open
            del self._open_cmd[r.source]
        self._open_cmd[r.source] = w

    def _on_new(self, r) -> None:  # a journaled command (bootstrap): remember what results lack
        if r.flags & R.FLAG_DEFERRED:
            return
        ex = Extras(r.quote_qty_minor, r.iceberg_qty_lot, r.trailing_delta_bips, r.stp_mode)
        jl = self._journal_list
        if jl is not None and 0 < r.seq - jl[0] <= 2:
            ex.list_leg, ex.list_client_order_id = r.seq - jl[0], jl[1]
        self._extras[r.seq] = ex

    def _on_accepted(self, r) -> None:
        cid = cid_text(r.client_order_id)
        inside = r.source in self._open_cmd  # a list's second leg: its first leg's waiter has it
        w = self._take(self.waiting_new, (r.account_id, cid)) if cid and not inside else None
        ex = ((w.extras if w is not None else None) or self._leg_extras.pop((r.account_id, cid), None)
              or self._extras.pop(r.order_id, None) or Extras())
        o = Order(r.order_id, r.account_id, r.symbol_id, r.side, r.order_type, r.time_in_force, r.price_tick,
                  r.qty_lot, r.stop_price_tick, cid, r.ts_ns, r.status, r.executed_qty_lot, r.cum_quote_minor,
                  r.ts_ns, -1 if r.order_type in STOP_TYPES else r.ts_ns, ex.quote_qty_minor, ex.iceberg_lot,
                  ex.trailing_delta_bips, ex.stp_mode)
        self.orders[o.order_id] = o
        if ex.list_leg:
            o.list_id = o.order_id - ex.list_leg
            lst = self.lists.get(o.list_id)
            if lst is None:
                lst = self.lists[o.list_id] = OrderList(o.list_id, o.account_id, o.symbol_id, ex.list_client_order_id,
                                                        [], r.ts_ns)
            lst.order_ids.append(o.order_id)
        if cid:
            self.by_client_id[(o.account_id, cid)] = o.order_id
        self.open_by_account[o.account_id][o.order_id] = o
        self._answer(r, w)

    def _on_rejected(self, r) -> None:
        self._extras.pop(r.order_id, None)
        self._leg_extras.pop((r.account_id, cid_text(r.client_order_id)), None)
        if r.source in self._open_cmd:  # a later record of a refused multi-record command
            return
        cid = cid_text(r.client_order_id)
        w = self._refusal_waiter(r)
        if w is None and cid:
            w = self._take(self.waiting_new, (r.account_id, cid))
        self._answer(r, w)

    def _on_event(self, r) -> None:
        """ORDER_EXPIRED / CANCELED / AMENDED / TRIGGERED: the order's state after it."""
        o = self.orders.get(r.order_id)
        if o is not None:
            o.status, o.executed_lot, o.cum_quote_minor = r.status, r.executed_qty_lot, r.cum_quote_minor
            o.price_tick, o.qty_lot, o.update_ns = r.price_tick, r.qty_lot, r.ts_ns
            if r.type == T.ORDER_TRIGGERED:
                o.working_ns = r.ts_ns
            elif r.type == T.ORDER_AMENDED and r.client_order_id.rstrip(b"\0"):
                self.by_client_id.pop((o.account_id, o.client_order_id), None)
                o.client_order_id = cid_text(r.client_order_id)
                self.by_client_id[(o.account_id, o.client_order_id)] = o.order_id
            if o.status in ENDED:
                self._ended(o)
        if r.type == T.ORDER_AMENDED and r.source not in self._open_cmd:
            self._answer(r, self._take(self.waiting_amend, (r.account_id, r.order_id)))
        if r.type == T.ORDER_CANCELED and r.source not in self._open_cmd:
            cid = cid_text(r.client_order_id)
            if cid:  # a CANCEL's: its own id
                self._answer(r, self._take(self.waiting_cancel, (r.account_id, cid)))
            elif r.reason == R.Reason.CANCELED_BY_USER:  # a CANCEL_ALL's first
                self._answer(r, self._take(self.waiting_cancel_all, (r.account_id, r.symbol_id)))

    def _on_cancel_rejected(self, r) -> None:
        if r.source in self._open_cmd:
            return
        w = self._refusal_waiter(r)
        cid = cid_text(r.client_order_id)
        if w is None and cid:
            w = self._take(self.waiting_cancel, (r.account_id, cid))
        elif w is None and r.order_id == 0:
            w = self._take(self.waiting_cancel_all, (r.account_id, r.symbol_id))
        elif w is None:
            w = self._take(self.waiting_amend, (r.account_id, r.order_id))
        self._answer(r, w)

    def _ended(self, o: Order) -> None:
        self.open_by_account.get(o.account_id, {}).pop(o.order_id, None)
        self.closed.append(o.order_id)
        while len(self.closed) > self.keep_closed:
            old = self.orders.pop(self.closed.popleft(), None)
            if old is not None and old.list_id >= 0:
                self.lists.pop(old.list_id, None)
            if old is not None and self.by_client_id.get((old.account_id, old.client_order_id)) == old.order_id:
                del self.by_client_id[(old.account_id, old.client_order_id)]

    def _on_fill(self, r) -> None:
        taker_buys = r.taker_side == Side.BUY
        trade = Trade(r.trade_id, r.symbol_id, r.price_tick, r.qty_lot, r.quote_qty_minor, r.ts_ns, not taker_buys)
        self.trades[r.symbol_id].append(trade)
        self.last_trade[r.symbol_id] = trade
        self.stats[r.symbol_id].on_trade(r.ts_ns, r.price_tick, r.qty_lot, r.quote_qty_minor, taker_buys, r.trade_id)
        aggs = self.agg_trades[r.symbol_id]
        last = aggs[-1] if aggs else None
        if last is not None and last.taker_order_id == r.taker_order_id and last.price_tick == r.price_tick \
                and last.last_trade_id == r.trade_id - 1:
            last.qty_lot += r.qty_lot
            last.last_trade_id = r.trade_id
        else:
            self.agg_count[r.symbol_id] += 1
            aggs.append(AggTrade(self.agg_count[r.symbol_id], r.price_tick, r.qty_lot, r.trade_id, r.trade_id,
                                 r.ts_ns, not taker_buys, r.taker_order_id))
        for oid, leaves, done_flag in ((r.taker_order_id, r.taker_leaves_qty_lot, R.FLAG_TAKER_DONE),
                                       (r.maker_order_id, r.maker_leaves_qty_lot, R.FLAG_MAKER_DONE)):
            o = self.orders.get(oid)
            if o is None:
                continue
            o.executed_lot += r.qty_lot
            o.cum_quote_minor += r.quote_qty_minor
            o.update_ns = r.ts_ns
            if o.working_ns < 0:
                o.working_ns = r.ts_ns
            o.status = OrderStatus.FILLED if r.flags & done_flag else OrderStatus.PARTIALLY_FILLED
            if o.status == OrderStatus.FILLED:
                self._ended(o)
        # each side's fee is in what it receives: the buyer gets base, the seller quote
        self.own_trades[(r.account_id, r.symbol_id)].append(
            OwnTrade(trade, r.taker_order_id, taker_buys, False, r.taker_fee_minor, -1 if taker_buys else -2))
        self.own_trades[(r.maker_account_id, r.symbol_id)].append(
            OwnTrade(trade, r.maker_order_id, not taker_buys, True, r.maker_fee_minor, -2 if taker_buys else -1))

    def _on_prevented(self, r) -> None:
        for oid, lots in ((r.taker_order_id, r.taker_prevented_lot), (r.maker_order_id, r.maker_prevented_lot)):
            o = self.orders.get(oid)
            if o is not None:
                o.prevented_lot += lots

    def _on_book(self, r) -> None:
        book = self.books[r.symbol_id]
        levels = book.side(r.side)
        if r.level_qty_lot:
            levels[r.price_tick] = r.level_qty_lot
        else:
            levels.pop(r.price_tick, None)
        book.last_update_id = r.book_update_id

    def _on_balance(self, r) -> None:
        self.balances[(r.account_id, r.asset_id)] = (r.free_minor, r.locked_minor)
        self.balance_update_ns[r.account_id] = r.ts_ns
        if self._admin_open and r.source == R.SOURCE_ADMIN:
            w = self._admin_open.pop(r.source_seq, None)
            if w is not None:
                w.records.append(r)
                w.done(w.records)

    def _on_admin(self, r) -> None:
        self.directory.apply(r)
        if r.source >= R.SOURCE_MATCHING:
            return
        w = self.by_source_seq.pop((r.source, r.source_seq), None)
        if w is None:
            return
        w.taken = True
        w.records.append(r)
        if r.reason == 0 and r.type in (T.CREDIT, T.DEBIT):
            self._admin_open[r.source_seq] = w  # its BALANCE comes next (same header)
        else:
            w.done(w.records)


# commission_asset_id -1 / -2: the symbol's base / quote (resolved by whoever formats it)
BASE_ASSET, QUOTE_ASSET = -1, -2

_HANDLERS = {
    int(T.NEW_ORDER): EdgeState._on_new,
    int(T.ORDER_ACCEPTED): EdgeState._on_accepted,
    int(T.ORDER_REJECTED): EdgeState._on_rejected,
    int(T.ORDER_EXPIRED): EdgeState._on_event,
    int(T.ORDER_CANCELED): EdgeState._on_event,
    int(T.ORDER_AMENDED): EdgeState._on_event,
    int(T.ORDER_TRIGGERED): EdgeState._on_event,
    int(T.CANCEL_REJECTED): EdgeState._on_cancel_rejected,
    int(T.FILL): EdgeState._on_fill,
    int(T.TRADE_PREVENTED): EdgeState._on_prevented,
    int(T.BOOK_UPDATE): EdgeState._on_book,
    int(T.BALANCE): EdgeState._on_balance,
    **{t: EdgeState._on_admin for t in ADMIN_TYPES},
}
