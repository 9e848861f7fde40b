"""ganntec.edge.state: the edge's projection of the report stream, built from the records of real
engines (an in-process driver on the demo config, no mocks): orders, balances, books, trades,
own trades; waiters answered by content; the bootstrap floor; and the key property, that the
projection built from a replay of the journal equals the one built from the live stream."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ganntec import config as C
from ganntec.edge.state import (
    BASE_ASSET,
    QUOTE_ASSET,
    AggTrade,
    EdgeState,
    Extras,
    Trade,
    Waiter,
    decode,
)
from ganntec.engines import matching
from ganntec.exchange import Exchange
from ganntec.shm import records as R
from ganntec.shm.records import (
    OrderStatus,
    OrderType,
    Reason,
    RecordType,
    Side,
    StpMode,
    TimeInForce,
)
from ganntec.workers.supervisor import funding_records, replayer_factory

T = RecordType
CFG = C.load()
N_SYMBOLS = len(CFG.symbols)
MAKE = replayer_factory(CFG)
BTCUSDT, ETHUSDT, ETHBTC = 0, 1, 2
P = 5_000_000  # 50000.00 on BTCUSDT (tick 0.01)
# BTCUSDT: one tick x one lot = 0.01 x 0.00001 USDT = 10 USDT minor units; one lot = 1000 BTC minor units
QPL, BPL = 10, 1000
T0 = 1_700_000_000_000_000_000
QUOTE_PER_TICK_LOT = [int(q) for q in CFG.symbol_rows()["quote_per_tick_lot"]]


def records_of(edge: np.ndarray) -> list:
    raw = R.as_records(edge).view(np.uint8).reshape(-1, R.RECORD_BYTES)
    return [decode(row.tobytes()) for row in raw]


class Answer:
    """A waiter's `done`: records every call."""

    def __init__(self):
        self.calls: list[list] = []

    def __call__(self, recs):
        self.calls.append(list(recs))

    @property
    def records(self) -> list:
        assert len(self.calls) == 1, f"done called {len(self.calls)} times"
        return self.calls[0]

    @property
    def head(self):
        return self.records[0]


class Flow:
    """The demo exchange driven the way an edge drives it: funded accounts, every command stamped
    source 1 with an increasing source_seq and ts_ns, its edge records applied to `state` (the
    live projection). Order ids are the NEW_ORDER's journal sequence."""

    def __init__(self):
        self.drv = MAKE()
        self.drv.order.replay = False
        self.state = EdgeState(N_SYMBOLS)
        self.journal: list[np.ndarray] = []
        self.edge: list[np.ndarray] = []
        self.source_seq = 0
        self.ts = T0
        self._run(funding_records(CFG))

    def _run(self, cmds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        journal, edge = self.drv.run(cmds)
        self.journal.append(journal)
        self.edge.append(edge)
        self.state.apply(edge)
        return journal, edge

    def send(self, cmds: np.ndarray, cid: str = "") -> tuple[np.ndarray, np.ndarray]:
        self.source_seq += 1
        self.ts += 1_000_000
        cmds["source"], cmds["source_seq"], cmds["ts_ns"] = 1, self.source_seq, self.ts
        if cid:
            cmds["client_order_id"] = cid.encode()
        return self._run(cmds)

    def new(self, account, side, price, qty, cid="", symbol=BTCUSDT, order_type=OrderType.LIMIT,
            tif=TimeInForce.GTC, stp=StpMode.DEFAULT, quote=0, wait=True) -> tuple[int, Answer | None]:
        """One NEW_ORDER -> (order id, its waiter's answer). Like the edge, always with a client
        order id (one is made when none is given)."""
        cid = cid or f"auto{self.source_seq + 1}"
        answer = None
        if wait:
            answer = Answer()
            self.state.expect_new(account, cid, Waiter(answer, Extras(quote, 0, 0, int(stp))))
        journal, _ = self.send(Exchange.orders(account, side, price, qty, order_type, symbol, tif, 0, stp, quote),
                               cid)
        return int(journal[0]["seq"]), answer

    def cancel(self, account, order_id, symbol=BTCUSDT, wait=True, cancel_cid="") -> Answer | None:
        """One CANCEL with its own client order id (like the edge's; matching echoes it)."""
        cancel_cid = cancel_cid or f"cxl{self.source_seq + 1}"
        answer = None
        if wait:
            answer = Answer()
            self.state.expect_cancel(account, cancel_cid, Waiter(answer))
        cmd = Exchange.cancels(account, order_id, symbol)
        cmd["new_client_order_id"] = cancel_cid.encode()
        self.send(cmd)
        return answer

    def cancel_all(self, account, symbol=BTCUSDT, wait=True) -> Answer | None:
        answer = None
        if wait:
            answer = Answer()
            self.state.expect_cancel_all(account, symbol, Waiter(answer))
        r = R.empty(T.CANCEL_ALL)
        r["account_id"], r["symbol_id"] = account, symbol
        self.send(r)
        return answer

    def all_journal(self) -> np.ndarray:
        return R.concat(self.journal)

    def all_edge(self) -> np.ndarray:
        return R.concat(self.edge)


def assert_answer(answer: Answer, first: RecordType):
    recs = answer.records
    assert recs[0].type == first, T(recs[0].type).name
    assert recs[-1].flags & R.FLAG_END
    assert not any(r.flags & R.FLAG_END for r in recs[:-1])


def assert_matches_engines(flow: Flow):
    """The projection's balances and books are the engines' own."""
    state, drv = flow.state, flow.drv
    risk = drv.risk.balances
    for (acc, asset), (free, locked) in state.balances.items():
        assert (free, locked) == (int(risk[acc, asset, 0]), int(risk[acc, asset, 1])), (acc, asset)
    for acc, asset in zip(*np.nonzero(np.any(risk != 0, axis=2))):
        assert (int(acc), int(asset)) in state.balances, (acc, asset)
    for sid in range(N_SYMBOLS):
        book = state.books[sid]
        for side, levels in ((Side.BUY, book.bids), (Side.SELL, book.asks)):
            engine = {int(p): int(q) for p, q, _ in drv.matching.levels(sid, side)}
            assert levels == engine, (sid, side)
            assert all(q > 0 for q in levels.values())
        assert book.last_update_id == int(drv.matching.symbol_state[sid, matching.SS_BOOKID])


# --- orders ---------------------------------------------------------------------------------------
def test_accepted_limit_is_open():
    f = Flow()
    oid, answer = f.new(1, Side.BUY, P, 100, cid="bid-1")
    assert_answer(answer, T.ORDER_ACCEPTED)
    assert answer.head.order_id == oid
    o = f.state.orders[oid]
    assert dataclasses.asdict(o) == {
        "order_id": oid, "account_id": 1, "symbol_id": BTCUSDT, "side": Side.BUY, "order_type": OrderType.LIMIT,
        "time_in_force": TimeInForce.GTC, "price_tick": P, "qty_lot": 100, "stop_price_tick": 0, "client_order_id": "bid-1",
        "time_ns": f.ts, "status": OrderStatus.NEW, "executed_lot": 0, "cum_quote_minor": 0, "update_ns": f.ts, "working_ns": f.ts,
        "quote_qty_minor": 0, "iceberg_lot": 0, "trailing_delta_bips": 0, "stp_mode": 0, "prevented_lot": 0, "list_id": -1}
    assert o.is_open
    assert f.state.open_orders(1) == [o] and f.state.open_orders(1, BTCUSDT) == [o]
    assert f.state.open_orders(1, ETHUSDT) == [] and f.state.open_orders(2) == []
    assert f.state.order_by_client_id(1, "bid-1") is o
    assert f.state.order_by_client_id(2, "bid-1") is None and f.state.order_by_client_id(1, "nope") is None
    assert f.state.books[BTCUSDT].bids == {P: 100} and f.state.books[BTCUSDT].asks == {}
    assert_matches_engines(f)


def test_partial_then_full_fill_on_maker_and_taker():
    f = Flow()
    maker, _ = f.new(1, Side.BUY, P, 100, cid="m")
    t_maker = f.ts
    taker1, a1 = f.new(2, Side.SELL, P, 40, cid="t1")
    assert_answer(a1, T.ORDER_ACCEPTED)
    assert [r.type for r in a1.records if r.type == T.FILL] == [T.FILL]
    m = f.state.orders[maker]
    assert (m.status, m.executed_lot, m.cum_quote_minor, m.update_ns) == (
        OrderStatus.PARTIALLY_FILLED, 40, P * 40 * QPL, f.ts)
    assert (m.time_ns, m.working_ns) == (t_maker, t_maker)
    t1 = f.state.orders[taker1]
    assert (t1.status, t1.executed_lot, t1.cum_quote_minor) == (OrderStatus.FILLED, 40, P * 40 * QPL)
    assert f.state.open_orders(1) == [m] and f.state.open_orders(2) == []
    assert f.state.books[BTCUSDT].bids == {P: 60}

    # a bigger sell: the maker fills, the taker fills partly and rests for the rest
    taker2, a2 = f.new(2, Side.SELL, P, 150, cid="t2")
    assert_answer(a2, T.ORDER_ACCEPTED)
    assert (m.status, m.executed_lot, m.cum_quote_minor) == (OrderStatus.FILLED, 100, P * 100 * QPL)
    assert not m.is_open and f.state.open_orders(1) == []
    t2 = f.state.orders[taker2]
    assert (t2.status, t2.executed_lot, t2.cum_quote_minor, t2.qty_lot) == (
        OrderStatus.PARTIALLY_FILLED, 60, P * 60 * QPL, 150)
    assert f.state.open_orders(2) == [t2]
    assert f.state.books[BTCUSDT].bids == {} and f.state.books[BTCUSDT].asks == {P: 90}
    assert f.state.order_by_client_id(1, "m") is m  # ended orders stay queryable
    assert_matches_engines(f)


def test_cancel():
    f = Flow()
    oid, _ = f.new(1, Side.SELL, P, 100, cid="s")
    f.new(2, Side.BUY, P, 30, cid="b")
    answer = f.cancel(1, oid)
    assert_answer(answer, T.ORDER_CANCELED)
    assert answer.head.order_id == oid and answer.head.reason == Reason.CANCELED_BY_USER
    o = f.state.orders[oid]
    assert (o.status, o.executed_lot, o.cum_quote_minor, o.update_ns) == (
        OrderStatus.CANCELED, 30, P * 30 * QPL, f.ts)
    assert f.state.open_orders(1) == [] and f.state.books[BTCUSDT].asks == {}
    assert f.state.order_by_client_id(1, "s") is o
    assert_matches_engines(f)


def test_market_order_fills_then_expires():
    f = Flow()
    f.new(1, Side.SELL, P, 30, cid="ask")
    oid, answer = f.new(2, Side.BUY, 0, 50, cid="mkt", order_type=OrderType.MARKET, tif=0)
    assert_answer(answer, T.ORDER_ACCEPTED)
    assert [r.type for r in answer.records if r.type in (T.FILL, T.ORDER_EXPIRED)] == [T.FILL, T.ORDER_EXPIRED]
    o = f.state.orders[oid]
    assert (o.order_type, o.status, o.executed_lot, o.cum_quote_minor) == (
        OrderType.MARKET, OrderStatus.EXPIRED, 30, P * 30 * QPL)
    assert f.state.open_orders(2) == []
    assert_matches_engines(f)


# --- balances and books ---------------------------------------------------------------------------
def test_funding_balances():
    f = Flow()
    usdt, btc, eth = (CFG.asset(n).asset_id for n in ("USDT", "BTC", "ETH"))
    for acc in (1, 2, 3):
        assert f.state.account_balances(acc) == {usdt: (10 ** 14, 0), btc: (10 ** 9, 0), eth: (10 ** 10, 0)}
    assert_matches_engines(f)


def test_balances_and_books_after_a_mixed_flow():
    f = Flow()
    a, _ = f.new(1, Side.BUY, P, 100)
    f.new(1, Side.BUY, P - 1, 200)
    f.new(2, Side.SELL, P + 2, 50)
    f.new(3, Side.SELL, P - 1, 150)                  # takes 100 @ P, 50 @ P-1
    f.new(2, Side.BUY, 0, 20, order_type=OrderType.MARKET, tif=0)
    f.new(3, Side.BUY, 0, 0, order_type=OrderType.MARKET, tif=0, quote=10 ** 9)  # 10 USDT
    e1, _ = f.new(1, Side.BUY, 300_000, 200, symbol=ETHUSDT)
    f.new(2, Side.SELL, 300_010, 300, symbol=ETHUSDT)
    f.new(3, Side.SELL, 300_000, 50, symbol=ETHUSDT, tif=TimeInForce.IOC)
    f.new(1, Side.BUY, 5_000, 10, symbol=ETHBTC)
    f.new(2, Side.SELL, 5_001, 10, symbol=ETHBTC)
    f.new(3, Side.SELL, 4_999, 5, symbol=ETHBTC, tif=TimeInForce.FOK)
    f.cancel(1, e1, symbol=ETHUSDT)
    f.cancel(1, a)                                   # filled already: CANCEL_REJECTED
    f.new(1, Side.SELL, P + 5, 20)
    f.new(1, Side.SELL, P + 6, 20)
    f.cancel_all(1)
    f.new(1, Side.BUY, P, 10 ** 7)                   # 100 BTC: insufficient USDT
    assert f.state.balances  # every account and asset has had a BALANCE record
    assert_matches_engines(f)
    for sid in range(N_SYMBOLS):
        assert f.state.books[sid].last_update_id > 0
    assert f.state.books[ETHBTC].bids == {5_000: 5} and f.state.books[ETHBTC].asks == {5_001: 10}
    assert f.state.books[ETHUSDT].bids == {} and f.state.books[ETHUSDT].asks == {300_010: 300}


# --- trades ---------------------------------------------------------------------------------------
def test_trades_agg_trades_and_own_trades():
    f = Flow()
    s1, _ = f.new(1, Side.SELL, P, 10)
    s2, _ = f.new(2, Side.SELL, P, 20)
    s3, _ = f.new(1, Side.SELL, P + 1, 30)
    buy, answer = f.new(3, Side.BUY, P + 1, 60)
    ts_buy = f.ts
    fills = [r for r in answer.records if r.type == T.FILL]
    assert [(r.trade_id, r.price_tick, r.qty_lot, r.maker_order_id) for r in fills] == [
        (1, P, 10, s1), (2, P, 20, s2), (3, P + 1, 30, s3)]
    assert [r.taker_order_id for r in fills] == [buy] * 3
    trades = list(f.state.trades[BTCUSDT])
    assert trades == [Trade(1, BTCUSDT, P, 10, P * 10 * QPL, ts_buy, False),
                      Trade(2, BTCUSDT, P, 20, P * 20 * QPL, ts_buy, False),
                      Trade(3, BTCUSDT, P + 1, 30, (P + 1) * 30 * QPL, ts_buy, False)]
    assert f.state.last_trade[BTCUSDT] == trades[-1]
    # one taker at one price: one aggregate trade
    assert list(f.state.agg_trades[BTCUSDT]) == [AggTrade(1, P, 30, 1, 2, ts_buy, False, buy),
                                                 AggTrade(2, P + 1, 30, 3, 3, ts_buy, False, buy)]

    # a seller takes a bid: the buyer is the maker; another taker at the same price is a new aggregate
    bid, _ = f.new(2, Side.BUY, P + 1, 40)
    sell1, _ = f.new(1, Side.SELL, P + 1, 15)
    ts1 = f.ts
    sell2, _ = f.new(3, Side.SELL, P + 1, 25)
    ts2 = f.ts
    assert list(f.state.agg_trades[BTCUSDT])[2:] == [AggTrade(3, P + 1, 15, 4, 4, ts1, True, sell1),
                                                     AggTrade(4, P + 1, 25, 5, 5, ts2, True, sell2)]
    assert f.state.agg_count[BTCUSDT] == 4
    assert [t.trade_id for t in f.state.trades[BTCUSDT]] == [1, 2, 3, 4, 5]

    # own trades: each side's commission is the FILL's fee, in the asset it receives
    fill_by_trade = {r.trade_id: r for r in records_of(f.all_edge()) if r.type == T.FILL}
    own3 = list(f.state.own_trades[(3, BTCUSDT)])
    assert [(o.trade.trade_id, o.order_id, o.is_buyer, o.is_maker, o.commission_asset_id) for o in own3] == [
        (1, buy, True, False, BASE_ASSET), (2, buy, True, False, BASE_ASSET), (3, buy, True, False, BASE_ASSET),
        (5, sell2, False, False, QUOTE_ASSET)]
    own1 = list(f.state.own_trades[(1, BTCUSDT)])
    assert [(o.trade.trade_id, o.order_id, o.is_buyer, o.is_maker, o.commission_asset_id) for o in own1] == [
        (1, s1, False, True, QUOTE_ASSET), (3, s3, False, True, QUOTE_ASSET), (4, sell1, False, False, QUOTE_ASSET)]
    own2 = list(f.state.own_trades[(2, BTCUSDT)])
    assert [(o.trade.trade_id, o.order_id, o.is_buyer, o.is_maker) for o in own2] == [
        (2, s2, False, True), (4, bid, True, True), (5, bid, True, True)]
    for acc, own in ((1, own1), (2, own2), (3, own3)):
        for o in own:
            r = fill_by_trade[o.trade.trade_id]
            assert o.trade is not None and o.trade == trades_by_id(f)[o.trade.trade_id]
            assert o.commission_minor == (r.maker_fee_minor if o.is_maker else r.taker_fee_minor)
    # the demo fee is 0.1% of what each side receives (base for the buyer, quote for the seller)
    assert [o.commission_minor for o in own3[:3]] == [10 * BPL // 1000, 20 * BPL // 1000, 30 * BPL // 1000]
    assert own1[0].commission_minor == P * 10 * QPL // 1000
    assert all(r.maker_fee_minor > 0 and r.taker_fee_minor > 0 for r in fill_by_trade.values())
    assert_matches_engines(f)


def trades_by_id(f: Flow) -> dict[int, Trade]:
    return {t.trade_id: t for t in f.state.trades[BTCUSDT]}


# --- waiters --------------------------------------------------------------------------------------
def test_waiter_new_resting_and_taking():
    f = Flow()
    _, rest = f.new(1, Side.BUY, P, 100, cid="rest")
    assert_answer(rest, T.ORDER_ACCEPTED)
    assert [T(r.type) for r in rest.records] == [T.ORDER_ACCEPTED, T.BOOK_UPDATE]
    assert R.decode_client_id(rest.head.client_order_id) == "rest"
    oid, take = f.new(2, Side.SELL, P, 100, cid="take")
    assert_answer(take, T.ORDER_ACCEPTED)
    assert take.head.order_id == oid
    types = [T(r.type) for r in take.records]
    assert types[0] == T.ORDER_ACCEPTED and T.FILL in types and types[-1] == T.BOOK_UPDATE
    assert T.BALANCE in types  # the settlement of the fill belongs to the command too


def test_waiter_cancel_and_cancel_rejected():
    f = Flow()
    oid, _ = f.new(1, Side.BUY, P, 100)
    ok = f.cancel(1, oid)
    assert_answer(ok, T.ORDER_CANCELED)
    assert [T(r.type) for r in ok.records] == [T.ORDER_CANCELED, T.BALANCE, T.BOOK_UPDATE]
    again = f.cancel(1, oid)
    assert_answer(again, T.CANCEL_REJECTED)
    assert len(again.records) == 1 and again.head.reason == Reason.UNKNOWN_ORDER and again.head.order_id == oid
    other = f.cancel(2, 999_999)
    assert_answer(other, T.CANCEL_REJECTED)
    assert other.head.order_id == 999_999


def test_waiter_cancel_all():
    f = Flow()
    a, _ = f.new(1, Side.BUY, P, 100)
    b, _ = f.new(1, Side.BUY, P + 1, 100)
    keep, _ = f.new(1, Side.BUY, 300_000, 100, symbol=ETHUSDT)
    answer = f.cancel_all(1)
    assert_answer(answer, T.ORDER_CANCELED)
    canceled = [r.order_id for r in answer.records if r.type == T.ORDER_CANCELED]
    assert sorted(canceled) == sorted([a, b])
    assert all(r.reason == Reason.CANCELED_BY_USER for r in answer.records if r.type == T.ORDER_CANCELED)
    assert f.state.open_orders(1) == [f.state.orders[keep]]
    assert (f.state.orders[a].status, f.state.orders[b].status) == (OrderStatus.CANCELED, OrderStatus.CANCELED)
    none_open = f.cancel_all(1)
    assert_answer(none_open, T.CANCEL_REJECTED)
    assert len(none_open.records) == 1 and none_open.head.order_id == 0
    assert_matches_engines(f)


@pytest.mark.parametrize("price, qty, reason", [
    (P, 10 ** 7, Reason.INSUFFICIENT_BALANCE),     # 100 BTC at 50000 > 1,000,000 USDT
    (P, 10 ** 9, Reason.FILTER_LOT_SIZE),          # 10000 BTC > max_qty 9000
    (P, 1, Reason.FILTER_MIN_NOTIONAL),            # 0.5 USDT < 5
    (200_000_000, 1, Reason.FILTER_PRICE),         # 2,000,000 > max_price
])
def test_waiter_rejected_new(price, qty, reason):
    f = Flow()
    oid, answer = f.new(1, Side.BUY, price, qty, cid="r")
    assert_answer(answer, T.ORDER_REJECTED)
    head = answer.head
    assert (head.reason, head.order_id, head.account_id, R.decode_client_id(head.client_order_id)) == (
        reason, oid, 1, "r")
    assert head.status == OrderStatus.REJECTED
    assert oid not in f.state.orders and f.state.order_by_client_id(1, "r") is None
    assert not f.state.waiting_new
    assert_matches_engines(f)


def test_two_waiters_on_one_key_are_fifo():
    f = Flow()
    first, second = Answer(), Answer()
    f.state.expect_new(1, "same", Waiter(first))
    f.state.expect_new(1, "same", Waiter(second))
    oid1, _ = f.new(1, Side.BUY, P, 100, cid="same", wait=False)
    assert first.calls and not second.calls
    oid2, _ = f.new(1, Side.BUY, P, 100, cid="same", wait=False)  # the id is taken: DUPLICATE_ORDER
    assert_answer(first, T.ORDER_ACCEPTED)
    assert_answer(second, T.ORDER_REJECTED)
    assert (first.head.order_id, second.head.order_id, second.head.reason) == (oid1, oid2, Reason.DUPLICATE_ORDER)

    c1, c2 = Answer(), Answer()
    f.state.expect_cancel(1, "cx", Waiter(c1))
    f.state.expect_cancel(1, "cx", Waiter(c2))
    f.cancel(1, oid1, wait=False, cancel_cid="cx")
    f.cancel(1, oid1, wait=False, cancel_cid="cx")
    assert_answer(c1, T.ORDER_CANCELED)
    assert_answer(c2, T.CANCEL_REJECTED)
    assert not f.state.waiting_new and not f.state.waiting_cancel


def test_unwaited_results_do_not_disturb_a_waiter():
    f = Flow()
    w = Answer()
    f.state.expect_new(1, "mine", Waiter(w))
    wc = Answer()
    f.state.expect_cancel_all(3, ETHBTC, Waiter(wc))
    bid, _ = f.new(2, Side.BUY, P, 100, cid="x", wait=False)
    f.new(1, Side.SELL, P, 40, cid="y", wait=False)           # fills account 1 against account 2
    f.new(3, Side.SELL, P, 30, cid="mine", wait=False)        # account 3's "mine": another key
    f.new(1, Side.BUY, P, 10 ** 7, cid="poor", wait=False)    # rejected
    f.cancel(1, 424_242, wait=False)                          # rejected
    f.cancel(2, bid, wait=False)
    f.cancel_all(3, BTCUSDT, wait=False)                      # nothing open on BTCUSDT: rejected
    f.cancel_all(2, ETHBTC, wait=False)                       # another account
    assert not w.calls and not wc.calls
    oid, _ = f.new(1, Side.BUY, P - 10, 20, cid="mine", wait=False)
    assert_answer(w, T.ORDER_ACCEPTED)
    assert w.head.order_id == oid and w.head.account_id == 1
    assert all(r.seq > oid for r in w.records)
    assert not wc.calls
    f.new(3, Side.BUY, 5_000, 10, symbol=ETHBTC, wait=False)
    f.cancel_all(3, ETHBTC, wait=False)
    assert_answer(wc, T.ORDER_CANCELED)
    assert wc.head.account_id == 3 and wc.head.symbol_id == ETHBTC
    assert len(w.calls) == 1


def test_cancel_all_then_cancel_in_flight_answer_in_order():
    f = Flow()
    a, _ = f.new(1, Side.BUY, P, 100)
    b, _ = f.new(1, Side.BUY, P + 1, 100)
    w_all, w_one = Answer(), Answer()
    # both commands in flight on the one edge ring: CANCEL_ALL first, then a CANCEL of b
    f.state.expect_cancel_all(1, BTCUSDT, Waiter(w_all))
    f.state.expect_cancel(1, "one", Waiter(w_one))
    f.cancel_all(1, wait=False)
    f.cancel(1, b, wait=False, cancel_cid="one")
    assert_answer(w_all, T.ORDER_CANCELED)
    assert sorted(r.order_id for r in w_all.records if r.type == T.ORDER_CANCELED) == [a, b]
    assert_answer(w_one, T.CANCEL_REJECTED)


def test_unwaited_cancel_all_does_not_answer_a_waiting_cancel():
    f = Flow()
    oid, _ = f.new(1, Side.BUY, P, 100)
    w = Answer()
    f.state.expect_cancel(1, "mine", Waiter(w))
    f.cancel_all(1, wait=False)
    assert not w.calls
    f.cancel(1, oid, wait=False, cancel_cid="mine")
    assert_answer(w, T.CANCEL_REJECTED)


# --- floor ----------------------------------------------------------------------------------------
def test_floor_skips_what_the_bootstrap_has():
    f = Flow()
    oid, _ = f.new(1, Side.BUY, P, 100, cid="old")
    mid = int(f.journal[-1]["seq"].max())
    f.new(2, Side.SELL, P, 40, cid="new")
    f.new(3, Side.BUY, P - 1, 20, cid="newer")
    edge = f.all_edge()
    seqs = R.as_records(edge)["seq"]

    above = EdgeState(N_SYMBOLS)
    above.floor = mid
    above.apply(edge)
    only_later = EdgeState(N_SYMBOLS)
    rows = R.as_records(edge).view(np.uint8).reshape(-1, R.RECORD_BYTES)  # bytes: a field copy drops payloads
    only_later.apply(rows[seqs > mid])
    assert above.seq == only_later.seq == int(seqs.max())
    assert snapshot(above) == snapshot(only_later)
    assert oid not in above.orders and above.order_by_client_id(1, "old") is None
    assert above.order_by_client_id(3, "newer") is not None

    # the whole stream again above a floor at its end changes nothing
    full = f.state
    before = snapshot(full)
    full.floor = full.seq
    full.apply(edge)
    assert snapshot(full) == before

    nothing = EdgeState(N_SYMBOLS)
    nothing.floor = int(seqs.max())
    nothing.apply(edge)
    assert (nothing.seq, nothing.orders, nothing.balances, nothing.books[BTCUSDT].bids) == (0, {}, {}, {})


def test_floor_skips_the_records_a_waiter_would_see():
    f = Flow()
    f.new(1, Side.BUY, P, 100, cid="late", wait=False)
    edge = f.edge[-1]
    s = EdgeState(N_SYMBOLS)
    w = Answer()
    s.expect_new(1, "late", Waiter(w))
    s.floor = int(R.as_records(edge)["seq"].max())
    s.apply(edge)
    assert not w.calls and not s.orders
    assert list(s.waiting_new) == [(1, "late")]


# --- determinism: the projection from a replay of the journal is the live one ----------------------
def snapshot(s: EdgeState) -> dict:
    return {
        "seq": s.seq,
        "orders": {k: dataclasses.asdict(o) for k, o in s.orders.items()},
        "open": {acc: sorted(d) for acc, d in s.open_by_account.items() if d},
        "by_client_id": dict(s.by_client_id),
        "closed": list(s.closed),
        "balances": dict(s.balances),
        "balance_update_ns": dict(s.balance_update_ns),
        "books": [(b.bids, b.asks, b.last_update_id) for b in s.books],
        "trades": [list(t) for t in s.trades],
        "agg_trades": [list(t) for t in s.agg_trades],
        "agg_count": list(s.agg_count),
        "last_trade": list(s.last_trade),
        "own_trades": {k: list(v) for k, v in s.own_trades.items() if v},
        "stats": [(st_.minutes, list(st_.window), st_.before_window_tick) for st_ in s.stats],
    }


MIDS = {BTCUSDT: (P, 10, 60), ETHUSDT: (300_000, 17, 120), ETHBTC: (5_000, 2, 20)}  # mid tick, lots range
KINDS = ["limit"] * 6 + ["market"] * 2 + ["cancel"] * 2 + ["cancel_all"]  # weighted towards limit orders
OPS = st.tuples(
    st.sampled_from(KINDS),
    st.integers(1, 3),                                          # account
    st.sampled_from([BTCUSDT, BTCUSDT, ETHBTC, ETHUSDT]),       # symbol
    st.sampled_from([Side.BUY, Side.SELL]),
    st.integers(-2, 2),                                         # price: ticks from the symbol's mid
    st.integers(0, 99),                                         # quantity: within MIDS's lot range
    st.sampled_from([TimeInForce.GTC, TimeInForce.GTC, TimeInForce.IOC, TimeInForce.FOK]),
    st.sampled_from(list(StpMode)),
    st.booleans(),                                              # MARKET by quote amount
    st.integers(0, 1000),                                       # cancel: which placed order
)


def run_flow(f: Flow, ops) -> list[Answer]:
    """Every op as a command with its waiter (as the edge sends them); returns the answers."""
    answers, placed = [], []
    for i, (kind, acc, sym, side, off, q, tif, stp, by_quote, pick) in enumerate(ops):
        mid, lo, hi = MIDS[sym]
        lots = lo + q * (hi - lo) // 99
        cid = f"c{i}"
        if kind in ("limit", "market"):
            a = Answer()
            if kind == "limit":
                f.state.expect_new(acc, cid, Waiter(a, Extras(0, 0, 0, int(stp))))
                journal, _ = f.send(Exchange.orders(acc, side, mid + off, lots, OrderType.LIMIT, sym, tif, 0, stp),
                                    cid)
                placed.append((int(journal[0]["seq"]), sym))
            else:
                quote = lots * mid * QUOTE_PER_TICK_LOT[sym] if by_quote else 0
                f.state.expect_new(acc, cid, Waiter(a, Extras(quote, 0, 0, int(stp))))
                f.send(Exchange.orders(acc, side, 0, 0 if quote else lots, OrderType.MARKET, sym, 0, 0, stp, quote),
                       cid)
        elif kind == "cancel":
            oid, osym = placed[pick % len(placed)] if placed else (10 ** 6, sym)
            a = f.cancel(acc, oid, osym)
        else:
            a = f.cancel_all(acc, sym)
        answers.append(a)
    return answers


@settings(max_examples=25, deadline=None)
@given(st.lists(OPS, min_size=20, max_size=60))
def test_replayed_projection_equals_live(ops):
    live = Flow()
    answers = run_flow(live, ops)
    # the live edge: every command answered exactly once, nothing left waiting
    for a in answers:
        assert len(a.calls) == 1
        assert a.records[-1].flags & R.FLAG_END
        assert a.head.type in (T.ORDER_ACCEPTED, T.ORDER_REJECTED, T.ORDER_CANCELED, T.CANCEL_REJECTED)
    assert not live.state.waiting_new and not live.state.waiting_cancel and not live.state.waiting_cancel_all
    assert not live.state._open_cmd
    assert_matches_engines(live)

    # an edge starting up: the journal replayed through fresh engines, nothing on disk
    journal = live.all_journal()
    rp = MAKE()
    boot = EdgeState(N_SYMBOLS)
    boot.remember_commands(journal)
    replayed = rp.feed(journal)
    boot.apply(replayed, notify=False)
    assert replayed.tobytes() == live.all_edge().tobytes()
    assert rp.pending_results == 0
    more_journal, more_edge = rp.finish()
    assert len(more_journal) == 0 and len(more_edge) == 0
    assert not boot._extras  # every journaled NEW's extras went to its ORDER_ACCEPTED / ORDER_REJECTED

    a, b = snapshot(live.state), snapshot(boot)
    assert a["orders"] == b["orders"]
    assert a["balances"] == b["balances"]
    assert a["books"] == b["books"]
    assert a["trades"] == b["trades"]
    assert a["own_trades"] == b["own_trades"]
    assert a == b
    assert (rp.risk.balances == live.drv.risk.balances).all()
