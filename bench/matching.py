"""Matching benchmark: ganntec's matching engine against the Python matching engines a user could pick instead.

    python bench/matching.py            # default sizes, about a minute
    python bench/matching.py --quick    # short run, well under a minute

Workload: exchange-core's benchmark mix. One symbol, 1,000 accounts. A fill phase places GTC
orders until each side holds 500, then the timed commands follow, drawn from a seeded numpy
generator (about 9% GTC, 3% IOC, 6% cancel, 82% move, ~5% of commands trading):
  - 12% new orders: GTC when the order's side holds fewer than 500 orders, else IOC (the
    feedback of exchange-core's generator, which keeps the book at ~1,000 orders); GTC prices
    are passive around the last trade price, up to 6,000 ticks away (~750 levels in all);
  - 6% cancels and 82% moves of a uniformly picked resting order; a move shifts the price 1% of
    the way to the last trade price (at least a tick), as exchange-core's does.
Two choices of this generator make the trading share: 2.2% of moves reprice onto the best
opposite price, and IOCs are small (1-2 lots against makers of 5 or more). Every trade empties
an order, taker or maker; with 9% GTC against 6% cancels a stable book leaves room for only ~3%
of commands to empty a resting order, so small IOCs that mostly leave their maker resting are
what lets ~5% of commands trade (6% would need every IOC to leave it).
The generator simulates its own plain-Python price-time book (RefBook) to pick targets and to
know the book every engine must end with; the stream is built once as numpy command records
(ganntec) and converted to each peer's API before its timed region (bench/peers_matching.py).
Self-trade prevention is off (STP NONE), as no peer has ganntec's modes.

What is measured (each in a forked child pinned to one CPU, every system from the same book):
  ganntec.step        the engine's compiled `step` over the whole stream from one @njit loop,
                      results written into one reused output buffer (what a runtime does)
  ganntec.process     MatchingEngine.process from Python in batches of 65,536 commands: it
                      allocates and copies every call's results
  ganntec.step latency  one command per `step` call inside @njit, rdtsc before and after
  ganntec.matching.memory_1m_orders  an engine sized for 1,000,000 orders and 100,000 levels per
                      side holding 1,000,000 resting orders over 100,000 levels: its state
                      arrays (`state_bytes`) and the process's RSS growth
  peers               liquibook, matching-engine, order-matching (see bench/peers_matching.py);
                      the pure-Python ones run a prefix of the stream (order-matching a short one)
Every system's book is compared, order by order, with the reference book at the same point.
  ganntec.driver      all four engines (order, risk, matching, position) in the in-process
                      driver's compiled loop: 1,000 funded accounts, orders carry client order
                      ids and cancels/moves name their target by it; books compared by side,
                      price and quantity (order ids are journal sequence numbers), and
                      conservation checked at the end

The last line printed is one JSON object with every figure and the ratios against each peer.
"""

from __future__ import annotations

import argparse
import bisect
import json
import math
import multiprocessing
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass

import numpy as np

# Importing ganntec first points numba's cache at ganntec's layout-keyed directory; it must
# happen before the @njit decorators below run.
from ganntec.engines.matching import RB, MatchingEngine, step
from ganntec.engines.symbols import Asset, Symbol, symbol_table
from ganntec.shm import records as R
from ganntec.shm.atomics import rdtsc
from ganntec.shm.wait import tsc_per_ns
from ganntec.workers.driver import InProcessDriver

import numba
import psutil
from numba import njit

from benchlib import BaseReport, BenchFailure, CpuMeter, cpu_model
from peers_matching import BUY, CANCEL, GTC, IOC, MOVE, PEERS, SELL

CTX = multiprocessing.get_context("fork")
SYMBOL = Symbol(0, "BTCUSDT", Asset(0, "BTC", 8), Asset(1, "USDT", 8), tick_size="0.01", step_size="0.001",
                min_price="0.01", max_price="10000", min_qty="0.001", max_qty="1000",
                max_num_orders=1_000_000,  # the memory test rests 1,000 orders per account
                # IOCs use limits of 1 tick and 2 x P0 ("any price"): PERCENT_PRICE_BY_SIDE must allow them
                bid_multiplier_up="3", ask_multiplier_down="0.000001")
OUT_RECORDS = 4096  # output buffer of the step loops, reused for every call
PROCESS_BATCH = 65_536  # commands per MatchingEngine.process call
MIB = 1 << 20


# --- workload --------------------------------------------------------------------------------
# One row per command. For a move, `price` is the new price and `qty` the order's remaining
# quantity at that moment (what cancel + new peers re-enter); `side` is always the order's side.
OPS_DTYPE = np.dtype([("kind", "u1"), ("side", "u1"), ("account", "<u4"), ("seq", "<i8"), ("order_id", "<i8"),
                      ("price", "<i8"), ("qty", "<i8")])

P0 = 100_000           # starting price, ticks
HALF_BOOK = 500        # resting orders per side the generator aims for
DEVIATION = 6_000      # how far from the last trade price a GTC order may rest, ticks
ACCOUNTS = 1_000
NEW_SHARE, CANCEL_SHARE = 0.12, 0.06  # the rest are moves
CENTRAL_MOVE_ALPHA = 0.01             # exchange-core's: a move goes 1% of the way to the last trade
AGGRESSIVE_MOVES = 0.022              # moves that reprice onto the best opposite price
IOC_BUY_LIMIT, IOC_SELL_LIMIT = 2 * P0, 1
KIND_NAMES = {GTC: "GTC", IOC: "IOC", CANCEL: "cancel", MOVE: "move"}


class RefBook:
    """A plain Python price-time book: per side a sorted list of level keys (best first: -price
    for bids) and per key a dict of order ids (insertion order = time priority)."""

    def __init__(self):
        self.keys = {BUY: [], SELL: []}
        self.levels = {BUY: {}, SELL: {}}
        self.orders = {}  # id -> [side, price, leaves, account]
        self.count = {BUY: 0, SELL: 0}
        self.live = []    # resting ids, for O(1) uniform picks (swap-remove)
        self.pos = {}
        self.fills = 0

    def _rest(self, oid, side, price, leaves, account):
        key = -price if side == BUY else price
        level = self.levels[side].get(key)
        if level is None:
            level = self.levels[side][key] = {}
            bisect.insort(self.keys[side], key)
        level[oid] = None
        self.orders[oid] = [side, price, leaves, account]
        self.count[side] += 1
        self.pos[oid] = len(self.live)
        self.live.append(oid)

    def _unlink(self, oid):
        order = self.orders.pop(oid)
        side, price = order[0], order[1]
        key = -price if side == BUY else price
        level = self.levels[side][key]
        del level[oid]
        if not level:
            del self.levels[side][key]
            keys = self.keys[side]
            del keys[bisect.bisect_left(keys, key)]
        self.count[side] -= 1
        i = self.pos.pop(oid)
        last = self.live.pop()
        if last != oid:
            self.live[i] = last
            self.pos[last] = i
        return order

    def new(self, oid, account, side, price, qty, tif):
        """Match, then rest a GTC remainder. Returns the last trade price, or None."""
        opp = SELL if side == BUY else BUY
        keys, levels = self.keys[opp], self.levels[opp]
        limit = price if side == BUY else -price
        last = None
        while qty and keys and keys[0] <= limit:
            maker_id = next(iter(levels[keys[0]]))
            maker = self.orders[maker_id]
            fill = min(qty, maker[2])
            qty -= fill
            maker[2] -= fill
            last = maker[1]
            self.fills += 1
            if maker[2] == 0:
                self._unlink(maker_id)
        if qty and tif == GTC:
            self._rest(oid, side, price, qty, account)
        return last

    def cancel(self, oid):
        self._unlink(oid)

    def move(self, oid, price):
        side, _, leaves, account = self._unlink(oid)
        return self.new(oid, account, side, price, leaves, GTC)

    def best(self, side):
        keys = self.keys[side]
        return abs(keys[0]) if keys else None

    def snapshot(self):
        """(side, price, order_id, leaves) in priority order: bids best first, then asks."""
        return [(side, abs(key), oid, self.orders[oid][2])
                for side in (BUY, SELL) for key in self.keys[side] for oid in self.levels[side][key]]


@dataclass
class Workload:
    fill: np.ndarray            # OPS_DTYPE: the GTC orders that build the starting book
    ops: np.ndarray             # OPS_DTYPE: the timed commands
    books: dict                 # prefix length of `ops` -> reference snapshot after it
    fills: int                  # maker fills the timed commands cause
    trading: int                # timed commands that trade
    book_orders: np.ndarray     # resting orders, sampled every 100 commands
    book_levels: np.ndarray     # price levels (both sides), sampled every 100 commands
    seed: int


def generate(n: int, seed: int, checkpoints: set[int]) -> Workload:
    rng = np.random.default_rng(seed)
    book = RefBook()
    rows = []
    last_price = P0
    seq = 0
    fills_at_start = 0
    trading = 0
    books, orders_seen, levels_seen = {}, [], []
    draws = iter(())
    filling = True
    i = 0
    while i < n:
        u = next(draws, None)
        if u is None:  # uniforms in blocks: one numpy call per 64k commands, not per draw
            draws = iter(rng.random((65536, 13)).tolist())
            continue
        if filling and book.count[BUY] >= HALF_BOOK and book.count[SELL] >= HALF_BOOK:
            filling = False
            fills_at_start = book.fills
            fill_rows, rows = rows, []
        side = BUY if u[0] < 0.5 else SELL
        q = 0.0 if filling else u[1]
        if filling and book.count[side] >= HALF_BOOK:
            side = SELL if side == BUY else BUY
        seq += 1
        account = int(u[2] * ACCOUNTS)
        new = q < NEW_SHARE or not book.live  # nothing rests: only a new order makes sense
        if new and book.count[side] < HALF_BOOK:
            kind, oid = GTC, seq
            qty = 5 + int(u[3] * 6) * int(u[4] * 6) * int(u[5] * 6)
            dev = 1 + int(u[6] ** 2 * DEVIATION)
            p = int((int(u[7] * dev) + int(u[8] * dev) + int(u[9] * dev) + int(u[10] * dev)) / 2 - dev)
            if (p > 0) != (side == SELL):  # passive: bids at or below the last trade, asks at or above
                p = -p
            price = min(max(last_price + p, 1), 2 * P0)
            traded = book.new(oid, account, side, price, qty, GTC)
        elif new:
            # 1-2 lots against makers of >= 5: most IOCs trade without emptying a resting order.
            kind, oid = IOC, seq
            qty = 1 + int(u[3] * 2) * int(u[4] * 2) * int(u[5] * 2)
            price = IOC_BUY_LIMIT if side == BUY else IOC_SELL_LIMIT
            traded = book.new(oid, account, side, price, qty, IOC)
        else:
            oid = book.live[int(u[11] * len(book.live))]
            side, prev, qty, account = book.orders[oid]
            if q < NEW_SHARE + CANCEL_SHARE:
                kind, price = CANCEL, prev
                book.cancel(oid)
                traded = None
            else:
                kind = MOVE
                opposite = book.best(SELL if side == BUY else BUY)
                if u[12] < AGGRESSIVE_MOVES and opposite is not None:
                    price = opposite
                elif prev == last_price:
                    price = prev + (1 if u[6] < 0.5 else -1)
                else:
                    step_ticks = (last_price - prev) * CENTRAL_MOVE_ALPHA
                    price = prev + (math.floor(step_ticks) if prev > last_price else math.ceil(step_ticks))
                traded = book.move(oid, price)
        rows.append((kind, side, account, seq, oid, price, qty))
        if traded is not None:
            last_price = traded
        if not filling:
            trading += traded is not None
            i += 1
            if i in checkpoints:
                books[i] = book.snapshot()
            if i % 100 == 0:
                orders_seen.append(len(book.orders))
                levels_seen.append(len(book.keys[BUY]) + len(book.keys[SELL]))
    return Workload(fill=np.array(fill_rows, OPS_DTYPE), ops=np.array(rows, OPS_DTYPE), books=books,
                    fills=book.fills - fills_at_start, trading=trading,
                    book_orders=np.array(orders_seen), book_levels=np.array(levels_seen), seed=seed)


def command_records(ops: np.ndarray) -> np.ndarray:
    """ganntec's 128-byte command records for `ops`: NEW_ORDER (LIMIT GTC/IOC, STP NONE; the
    header seq is the order id), CANCEL, AMEND (new price, quantity unchanged)."""
    recs = np.zeros(len(ops), R.RECORD_DTYPE)
    kind = ops["kind"]
    new, cancel, move = np.isin(kind, (GTC, IOC)), kind == CANCEL, kind == MOVE
    recs["type"] = np.select([new, cancel], [int(R.RecordType.NEW_ORDER), int(R.RecordType.CANCEL)],
                             int(R.RecordType.AMEND))
    recs["seq"] = ops["seq"]
    recs["ts_ns"] = ops["seq"]
    recs["account_id"] = ops["account"]
    recs["symbol_id"] = SYMBOL.symbol_id
    n = recs.view(R.NEW_ORDER_DTYPE)
    n["price_tick"][new] = ops["price"][new]
    n["qty_lot"][new] = ops["qty"][new]
    n["side"][new] = ops["side"][new]
    n["order_type"][new] = int(R.OrderType.LIMIT)
    n["time_in_force"][new] = np.where(kind[new] == GTC, int(R.TimeInForce.GTC), int(R.TimeInForce.IOC))
    n["stp_mode"][new] = int(R.StpMode.NONE)
    recs.view(R.CANCEL_DTYPE)["order_id"][cancel] = ops["order_id"][cancel]
    a = recs.view(R.AMEND_DTYPE)
    a["order_id"][move] = ops["order_id"][move]
    a["new_price_tick"][move] = ops["price"][move]
    return recs


# --- ganntec ---------------------------------------------------------------------------------
@njit(cache=True, nogil=True)
def run_stream(control, base, n, out, out_cap):
    """Every command at `base` through `step`, the results overwriting `out` on each call.
    Returns the results written. A command whose results did not fit is resumed by the next
    call; the caller finishes one left pending at the very end."""
    pos = 0
    made = 0
    while pos < n:
        used, k = step(control, base + pos * RB, n - pos, out, out_cap)
        pos += used
        made += k
    return made


@njit(cache=True, nogil=True)
def time_each(control, base, n, out, out_cap, ticks):
    """One command per `step` call; ticks[i] = TSC ticks of call i. No command of this workload
    makes more than a few hundred results and `out_cap` is thousands, so none is left pending
    half done (the caller checks the last one)."""
    for i in range(n):
        t0 = rdtsc()
        step(control, base + i * RB, 1, out, out_cap)
        ticks[i] = rdtsc() - t0


@njit(cache=True, nogil=True)
def rdtsc_overhead(ticks):
    """Ticks of two back-to-back rdtsc: what every latency sample includes beyond the step."""
    for i in range(ticks.shape[0]):
        t0 = rdtsc()
        ticks[i] = rdtsc() - t0


def new_engine(max_orders=1 << 16, max_levels=4096):
    return MatchingEngine(symbol_table([SYMBOL]), max_orders=max_orders, max_levels=max_levels, shard=0)


def loaded_engine(wl):
    """A fresh engine holding the starting book; raises if any fill command was refused."""
    eng = new_engine()
    out = eng.process(command_records(wl.fill))
    refused = np.isin(out["type"], (int(R.RecordType.ORDER_REJECTED), int(R.RecordType.CANCEL_REJECTED)))
    if refused.any():
        raise BenchFailure(f"ganntec refused {int(refused.sum())} fill commands")
    return eng


def ganntec_book(eng):
    rows = []
    for side in (BUY, SELL):
        for oid in eng.open_orders(SYMBOL.symbol_id, side):
            o = eng.order(oid)
            rows.append((side, o["price_tick"], oid, o["leaves_lot"]))
    return rows


def out_buffer(eng):
    return np.zeros((max(OUT_RECORDS, eng.min_out_capacity), RB), np.uint8)


def finish_pending(eng, out):
    empty = np.zeros((0, RB), np.uint8)
    while eng.pending:
        eng.process_into(empty, out)


def ganntec_step_run(wl, recs):
    """One timed pass of the whole stream through the compiled step loop."""
    eng = loaded_engine(wl)
    out = out_buffer(eng)
    t0 = time.perf_counter_ns()
    run_stream(eng.control, recs.ctypes.data, len(recs), out.ctypes.data, len(out))
    dt = time.perf_counter_ns() - t0
    finish_pending(eng, out)
    return {"rate": len(recs) * 1e9 / dt, "book": book_diff(ganntec_book(eng), wl.books[len(wl.ops)])}


# --- all four engines: the in-process driver --------------------------------------------------
FEE_ACCOUNT = ACCOUNTS  # the fee account is not one of the traders


def driver_setup_records() -> np.ndarray:
    """Open every trading account and fund it far beyond what the stream can spend."""
    opens = R.empty(R.RecordType.ACCOUNT_OPEN, ACCOUNTS)
    opens["account_id"] = np.arange(ACCOUNTS)
    opens["permissions"] = int(R.Permission.TRADE | R.Permission.READ)
    opens["maker_fee_e8"] = opens["taker_fee_e8"] = -1
    credits = []
    for asset, amount in ((SYMBOL.base, "1000"), (SYMBOL.quote, "1000000")):  # supply totals stay < 2**62
        c = R.empty(R.RecordType.CREDIT, ACCOUNTS)
        c["account_id"], c["asset_id"], c["amount_minor"] = np.arange(ACCOUNTS), asset.asset_id, asset.to_minor("a", amount)
        credits.append(c)
    return R.concat([opens, *credits])


def driver_records(ops: np.ndarray) -> np.ndarray:
    """`command_records` for the whole exchange: order ids are the order engine's sequence
    numbers, which a client cannot know in advance, so every order carries a client order id
    ("o<workload id>") and cancels and moves name their target by it."""
    recs = command_records(ops)
    ids = np.char.add(b"o", ops["seq"].astype("S19"))
    targets = np.char.add(b"o", ops["order_id"].astype("S19"))
    new = np.isin(ops["kind"], (GTC, IOC))
    recs["seq"] = 0
    recs.view(R.NEW_ORDER_DTYPE)["client_order_id"][new] = ids[new]
    cancel, move = ops["kind"] == CANCEL, ops["kind"] == MOVE
    recs.view(R.CANCEL_DTYPE)["order_id"][cancel] = 0
    recs.view(R.CANCEL_DTYPE)["orig_client_order_id"][cancel] = targets[cancel]
    recs.view(R.AMEND_DTYPE)["order_id"][move] = 0
    recs.view(R.AMEND_DTYPE)["orig_client_order_id"][move] = targets[move]
    return recs


def ganntec_driver_run(wl, fill, timed):
    """All four engines (order, risk, matching, position) through the compiled driver loop,
    journal and client records written into reused buffers."""
    drv = InProcessDriver(symbol_table([SYMBOL]), n_assets=2, max_accounts=ACCOUNTS + 1, max_orders=1 << 16,
                          max_levels=4096, fee_account=FEE_ACCOUNT)
    for stage in (driver_setup_records(), fill):
        _, edge = drv.run(stage)
        refused = np.isin(edge["type"], (int(R.RecordType.ORDER_REJECTED), int(R.RecordType.CANCEL_REJECTED)))
        if refused.any():
            raise BenchFailure(f"the driver refused {int(refused.sum())} setup/fill commands")
    base, n, pos = timed.ctypes.data, len(timed), 0
    t0 = time.perf_counter_ns()
    while pos < n or not drv.idle:
        used, _, _ = drv.advance(base + pos * RB, n - pos)
        pos += used
    dt = time.perf_counter_ns() - t0
    # Order ids differ from the reference's (they are journal sequence numbers): compare the
    # books by side, price and quantity, in priority order.
    got = [(side, price, leaves) for side, price, _, leaves in ganntec_book(drv.matching)]
    want = [(side, price, leaves) for side, price, _, leaves in wl.books[len(wl.ops)]]
    return {"rate": n * 1e9 / dt, "book": book_diff(got, want),
            "conservation": drv.risk.conservation_errors() + drv.risk.hold_errors()}


def ganntec_process_run(wl, recs):
    """MatchingEngine.process over the stream in PROCESS_BATCH-command calls; also counts what
    it produced."""
    eng = loaded_engine(wl)
    fills = refused = 0
    dt = 0
    for start in range(0, len(recs), PROCESS_BATCH):
        t0 = time.perf_counter_ns()
        out = eng.process(recs[start:start + PROCESS_BATCH])
        dt += time.perf_counter_ns() - t0
        fills += int((out["type"] == int(R.RecordType.FILL)).sum())
        refused += int(np.isin(out["type"], (int(R.RecordType.ORDER_REJECTED), int(R.RecordType.CANCEL_REJECTED))).sum())
    return {"rate": len(recs) * 1e9 / dt, "book": book_diff(ganntec_book(eng), wl.books[len(wl.ops)]),
            "fills": fills, "refused": refused}


def ganntec_latency(wl, recs, ticks_per_ns):
    eng = loaded_engine(wl)
    out = out_buffer(eng)
    ticks = np.zeros(len(recs), np.int64)
    time_each(eng.control, recs.ctypes.data, len(recs), out.ctypes.data, len(out), ticks)
    if eng.pending:
        raise BenchFailure("a single command left results pending: latency samples are incomplete")
    base = np.zeros(100_000, np.int64)
    rdtsc_overhead(base)
    ns = ticks / ticks_per_ns
    p50, p90, p99, p999 = np.percentile(ns, [50, 90, 99, 99.9])
    by_kind = {name: tuple(np.percentile(ns[wl.ops["kind"] == kind], [50, 99]))
               for kind, name in KIND_NAMES.items() if (wl.ops["kind"] == kind).any()}
    return {"p50": p50, "p90": p90, "p99": p99, "p999": p999, "max": float(ns.max()), "samples": len(ns),
            "by_kind": by_kind, "rdtsc_ns": float(np.median(base)) / ticks_per_ns,
            "book": book_diff(ganntec_book(eng), wl.books[len(wl.ops)])}


MEM_ORDERS, MEM_LEVELS, MEM_BATCH = 1_000_000, 100_000, 10_000


def ganntec_memory():
    """An engine for 1M orders / 100k levels per side, loaded with 1M resting orders over 100k
    levels (50k a side, 10 orders each), fed in batches so no big input array exists; the RSS
    growth leaves out the output buffer's written pages.
    Levels are created from the far end toward the touch, as a book builds (each new level
    then lands at the best end of the sorted key array)."""
    per_side = MEM_LEVELS // 2
    per_level = MEM_ORDERS // MEM_LEVELS
    batch = R.empty(R.RecordType.NEW_ORDER, MEM_BATCH)
    batch["order_type"], batch["time_in_force"], batch["stp_mode"] = R.OrderType.LIMIT, R.TimeInForce.GTC, R.StpMode.NONE
    proc = psutil.Process()
    rss0 = proc.memory_info().rss
    eng = new_engine(max_orders=MEM_ORDERS, max_levels=MEM_LEVELS)
    rss1 = proc.memory_info().rss
    out = out_buffer(eng)  # min_out_capacity (2 x levels + 16) holds a batch's 2 results per order
    out[:2 * MEM_BATCH + 64] = 0  # the part the batches write, resident now so it can be left out
    out_rss = proc.memory_info().rss - rss1
    t0 = time.perf_counter()
    for start in range(0, MEM_ORDERS, MEM_BATCH):
        k = np.arange(start, start + MEM_BATCH)
        bid = k < MEM_ORDERS // 2
        far_to_near = (k % (MEM_ORDERS // 2)) // per_level
        batch["seq"] = k + 1
        batch["account_id"] = k % ACCOUNTS
        batch["side"] = np.where(bid, BUY, SELL)
        batch["price_tick"] = np.where(bid, P0 - per_side + far_to_near, P0 + per_side - far_to_near)
        batch["qty_lot"] = 1 + k % 7
        used, made = eng.process_into(batch, out)
        if used != MEM_BATCH or eng.pending:
            raise BenchFailure(f"memory load: the batch at {start} was consumed only to {used}")
        if (R.as_records(out[:made])["type"] == int(R.RecordType.ORDER_REJECTED)).any():
            raise BenchFailure(f"memory load: orders rejected in the batch at {start}")
    load_s = time.perf_counter() - t0
    rss = proc.memory_info().rss - rss0 - out_rss
    levels = [eng.levels(SYMBOL.symbol_id, side) for side in (BUY, SELL)]
    resting = sum(int(lv[:, 2].sum()) for lv in levels)
    if sum(map(len, levels)) != MEM_LEVELS or resting != MEM_ORDERS:
        raise BenchFailure(f"memory load: {resting} orders over {sum(map(len, levels))} levels rest, "
                           f"expected {MEM_ORDERS} over {MEM_LEVELS}")
    return {"state_bytes": eng.state_bytes, "rss_bytes": rss, "load_s": load_s}


# --- peers -----------------------------------------------------------------------------------
def peer_run(peer, wl, n):
    """One timed pass of the first n commands through a peer, built from the same fill."""
    state = peer.prepare(wl.fill, wl.ops[:n])
    t0 = time.perf_counter_ns()
    peer.run(state)
    dt = time.perf_counter_ns() - t0
    return {"rate": n * 1e9 / dt, "book": book_diff(peer.book(state), wl.books[n])}


def book_diff(got, want):
    """None when the books are equal, else where they first differ."""
    if got == want:
        return None
    for i, (g, w) in enumerate(zip(got, want, strict=False)):  # equal up to the shorter: a length diff
        if g != w:
            return f"row {i} (side, price, id, leaves): got {g}, reference {w}"
    return f"{len(got)} resting orders, reference {len(want)}"


# --- child processes -------------------------------------------------------------------------
def _child_main(cpu, fn, args, conn):
    try:
        os.sched_setaffinity(0, {cpu})
        conn.send((True, fn(*args)))
    except BaseException as exc:  # report anything, KeyboardInterrupt included, then exit
        conn.send((False, f"{type(exc).__name__}: {exc}"))
    finally:
        conn.close()


def in_child(cfg, fn, *args):
    """fn(*args) in a forked child pinned to cfg.cpu (it inherits the workload and the compiled
    code); returns its result. On an error, or after cfg.timeout_s, kills it and raises."""
    recv, send = CTX.Pipe(duplex=False)
    proc = CTX.Process(target=_child_main, args=(cfg.cpu, fn, args, send), daemon=True)
    proc.start()
    send.close()  # the child holds the only write end: its death reads as EOF
    try:
        if not recv.poll(cfg.timeout_s):
            raise BenchFailure(f"timed out after {cfg.timeout_s:.0f} s; killed")
        try:
            ok, value = recv.recv()
        except EOFError:
            proc.join(1.0)
            raise BenchFailure(f"child died (exit code {proc.exitcode})") from None
        if not ok:
            raise BenchFailure(value)
        proc.join(10.0)
        return value
    finally:
        if proc.is_alive():
            proc.kill()
            proc.join(5.0)
        recv.close()



# --- the run ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Config:
    cpu: int
    timeout_s: float
    seed: int
    n_ops: int        # timed commands (ganntec runs all of them)
    peer_n: int       # prefix the peers run
    slow_peer_n: int  # prefix a peer marked slow (order-matching) runs, once
    reps: int         # timed runs of ganntec.step and of each fast peer


def sizes(quick: bool) -> dict:
    if quick:
        return dict(n_ops=200_000, peer_n=20_000, slow_peer_n=300, reps=3)
    return dict(n_ops=2_000_000, peer_n=500_000, slow_peer_n=3_000, reps=5)


def compile_all(wl):
    """Compile the step loops in the parent, so every child runs inherited machine code."""
    eng = loaded_engine(wl)
    recs = command_records(wl.ops[:64])
    out = out_buffer(eng)
    run_stream(eng.control, recs.ctypes.data, len(recs), out.ctypes.data, len(out))
    time_each(eng.control, recs.ctypes.data, len(recs), out.ctypes.data, len(out), np.zeros(len(recs), np.int64))
    rdtsc_overhead(np.zeros(1, np.int64))
    tsc_per_ns()


class Report(BaseReport):
    def __init__(self):
        super().__init__()
        self.correct: dict[str, bool] = {}   # system -> its book matched the reference
        self.wrong: dict[str, str] = {}      # system -> where its book first differed
        self.commands: dict[str, int] = {}   # system -> commands per timed run
        self.latency: dict | None = None
        self.memory: dict | None = None

    def throughput(self, system, runs, n):
        runs = [r for r in runs if r is not None]
        if not runs:
            return
        rates = [r["rate"] for r in runs]
        self.figures[f"{system}.throughput_per_s"] = statistics.median(rates)
        if len(rates) > 1:
            self.figures[f"{system}.throughput_min_per_s"] = min(rates)
            self.figures[f"{system}.throughput_max_per_s"] = max(rates)
        self.commands[system] = n
        self.check_book(system, runs)

    def check_book(self, system, runs):
        diffs = [r["book"] for r in runs if r["book"] is not None]
        self.correct[system] = self.correct.get(system, True) and not diffs
        if diffs:
            self.wrong[system] = diffs[0]


def run(cfg: Config, wl: Workload, rep: Report) -> None:
    """Rounds of one timed run of each fast system, so that load from other processes, which
    comes and goes on a shared host, falls on all of them alike; then the single runs."""
    f = rep.figures
    recs = command_records(wl.ops)
    peers = []
    for peer in PEERS:
        why = peer.missing()
        if why is None:
            peers.append(peer)
        else:
            rep.skipped[peer.name] = why
    fast = [p for p in peers if not p.slow]
    runs = {name: [] for name in ["ganntec.step"] + [p.name for p in fast]}
    for i in range(cfg.reps):
        runs["ganntec.step"].append(rep.attempt(f"ganntec.step run {i + 1}/{cfg.reps}", in_child, cfg,
                                                ganntec_step_run, wl, recs))
        for peer in fast:
            runs[peer.name].append(rep.attempt(f"{peer.name} run {i + 1}/{cfg.reps} ({cfg.peer_n:,} commands)",
                                               in_child, cfg, peer_run, peer, wl, cfg.peer_n))
    rep.throughput("ganntec.step", runs["ganntec.step"], len(recs))
    for peer in fast:
        rep.throughput(peer.name, runs[peer.name], cfg.peer_n)
    for peer in peers:
        if peer.slow:
            got = rep.attempt(f"{peer.name} ({cfg.slow_peer_n:,} commands)", in_child, cfg, peer_run, peer, wl,
                              cfg.slow_peer_n)
            rep.throughput(peer.name, [got], cfg.slow_peer_n)

    got = rep.attempt("ganntec.process", in_child, cfg, ganntec_process_run, wl, recs)
    if got is not None:
        rep.throughput("ganntec.process", [got], len(recs))
        if got["fills"] != wl.fills or got["refused"]:
            rep.correct["ganntec.process"] = False
            rep.wrong["ganntec.process"] = (f"{got['fills']} FILL records (reference {wl.fills} fills), "
                                            f"{got['refused']} commands refused")

    got = rep.attempt("ganntec.driver", in_child, cfg, ganntec_driver_run, wl, driver_records(wl.fill),
                      driver_records(wl.ops))
    if got is not None:
        rep.throughput("ganntec.driver", [got], len(recs))
        if got["conservation"]:
            rep.correct["ganntec.driver"] = False
            rep.wrong["ganntec.driver"] = "; ".join(got["conservation"][:3])

    lat = rep.attempt("ganntec.step latency", in_child, cfg, ganntec_latency, wl, recs, tsc_per_ns())
    if lat is not None:
        rep.latency = lat
        for p in ("p50", "p90", "p99", "p999"):
            f[f"ganntec.step.latency_{p}_ns"] = lat[p]
        rep.check_book("ganntec.step", [lat])

    mem = rep.attempt("ganntec memory, 1M orders over 100k levels", in_child, cfg, ganntec_memory)
    if mem is not None:
        rep.memory = mem
        f["ganntec.matching.memory_1m_orders_bytes"] = mem["state_bytes"]
        f["ganntec.matching.memory_1m_orders_rss_bytes"] = mem["rss_bytes"]


def fastest_correct_peer(rep):
    rates = {p.name: rep.figures[f"{p.name}.throughput_per_s"] for p in PEERS
             if f"{p.name}.throughput_per_s" in rep.figures and rep.correct.get(p.name)}
    return max(rates, key=rates.get) if rates else None


def ratios(figures):
    """ganntec against each peer; every key reads as the division it is."""
    out = {}
    for ours in ("ganntec.step.throughput_per_s", "ganntec.process.throughput_per_s"):
        for peer in PEERS:
            theirs = f"{peer.name}.throughput_per_s"
            if ours in figures and theirs in figures:
                out[f"{ours}/{theirs}"] = figures[ours] / figures[theirs]
    return out


def targets(rep):
    """(mark, description, measured) per target of the issue."""
    f = rep.figures
    step = f.get("ganntec.step.throughput_per_s")
    best = fastest_correct_peer(rep)
    times = None if step is None or best is None else step / f[f"{best}.throughput_per_s"]
    mem, lat = rep.memory, rep.latency
    drv = f.get("ganntec.driver.throughput_per_s")

    def mark(met):
        return "not measured" if met is None else "met" if met else "MISSED"

    return [
        (mark(None if step is None else step >= 5e6 and rep.correct.get("ganntec.step", False)),
         "matching step alone >= 5 M commands/s, one core (median; book correct)",
         "not measured" if step is None else f"{step / 1e6:.2f} M/s"),
        (mark(None if drv is None else drv >= 2e6 and rep.correct.get("ganntec.driver", False)),
         "all four engines in the in-process driver >= 2 M commands/s (book and conservation correct)",
         "not measured" if drv is None else f"{drv / 1e6:.2f} M/s"),
        (mark(None if times is None else times >= 20), "matching step >= 20x the fastest peer (with a correct book)",
         "no correct peer measured" if times is None else f"{times:.1f}x {best}"),
        (mark(None if lat is None else True), "per-command latency inside the step: p50 and p99 reported",
         "not measured" if lat is None else f"p50 {lat['p50']:.0f} ns, p99 {lat['p99']:.0f} ns"),
        (mark(None if mem is None else max(mem["state_bytes"], mem["rss_bytes"]) <= 256 * MIB),
         "1M resting orders over 100k levels fit in <= 256 MiB (state arrays and RSS growth)",
         "not measured" if mem is None
         else f"state {mem['state_bytes'] / MIB:.1f} MiB, RSS growth {mem['rss_bytes'] / MIB:.1f} MiB"),
    ]


def _rate(x):
    return f"{x / 1e6:.2f} M" if x >= 1e6 else f"{x / 1e3:.1f} k" if x >= 1e4 else f"{x:.0f}"


def _spread(a):
    return f"{a.mean():.0f} (min {a.min()}, max {a.max()})"


def print_report(cfg, wl, rep, host, quick):
    f = rep.figures
    print(f"\nmatching benchmark{' (--quick)' if quick else ''}: one symbol, {ACCOUNTS:,} accounts, "
          f"exchange-core command mix; every measurement in a child pinned to CPU{cfg.cpu}")
    print(f"host: {host['cpus']} CPUs ({host['cpu_model']}), Python {host['python']}, numba {host['numba']}, "
          f"TSC {host['tsc_per_ns']:.3f} ticks/ns; during the run: background load {host['background_load_cores']:.2f} "
          f"cores, hypervisor steal {host['steal_cores']:.2f} cores")
    n = len(wl.ops)
    share = np.bincount(wl.ops["kind"], minlength=5) / n * 100
    print(f"workload (seed {wl.seed}): {len(wl.fill):,} fill commands build the book, then {n:,} timed commands: "
          f"GTC {share[GTC]:.1f}%, IOC {share[IOC]:.1f}%, cancel {share[CANCEL]:.1f}%, move {share[MOVE]:.1f}%; "
          f"{wl.trading / n * 100:.1f}% of them trade ({wl.fills:,} fills)")
    print(f"book during the timed commands: {_spread(wl.book_orders)} resting orders over "
          f"{_spread(wl.book_levels)} price levels")

    best = fastest_correct_peer(rep)
    best_rate = f.get(f"{best}.throughput_per_s") if best else None
    print("\nthroughput, commands/s (median of the runs; each run from the same starting book)")
    print(f"{'system':<18} {'commands':>10} {'median/s':>10} {'min/s':>10} {'max/s':>10} {'ns/cmd':>8} "
          f"{'x fastest':>10} {'book':>5}  how")
    rows = [("ganntec.step", f"compiled step over the whole stream, one @njit loop, {OUT_RECORDS}-record output "
                             f"buffer reused; {cfg.reps} runs"),
            ("ganntec.process", f"MatchingEngine.process from Python, {PROCESS_BATCH:,} commands per call: allocates "
                                "and copies the results"),
            ("ganntec.driver", "order + risk + matching + position, compiled driver loop, journal and client "
                               "records into reused buffers; 1 run")]
    rows += [(p.name, f"{p.how}; {1 if p.slow else cfg.reps} run(s)") for p in PEERS]
    for system, how in rows:
        rate = f.get(f"{system}.throughput_per_s")
        if rate is None:
            state = "skipped" if system in rep.skipped else "FAILED"
            print(f"{system:<18} {state}: {rep.skipped.get(system, 'see the failures below')}")
            continue
        lo = f.get(f"{system}.throughput_min_per_s", rate)
        hi = f.get(f"{system}.throughput_max_per_s", rate)
        times = f"{rate / best_rate:9.1f}x" if best_rate else f"{'-':>10}"
        ok = {True: "ok", False: "WRONG"}[rep.correct[system]]
        print(f"{system:<18} {rep.commands[system]:>10,} {_rate(rate):>10} {_rate(lo):>10} {_rate(hi):>10} "
              f"{1e9 / rate:8.0f} {times} {ok:>5}  {how}")
    if best:
        print(f"(x fastest = against {best}, the fastest peer whose book was correct)")
    for system, where in rep.wrong.items():
        print(f"  {system} book differs from the reference: {where}")

    lat = rep.latency
    if lat is not None:
        print(f"\nlatency inside the step, ns: one command per step call in @njit, rdtsc around it, "
              f"{lat['samples']:,} commands (includes ~{lat['rdtsc_ns']:.0f} ns of rdtsc itself)")
        print(f"{'system':<18} {'p50':>8} {'p90':>8} {'p99':>8} {'p99.9':>8} {'max':>10}")
        print(f"{'ganntec.step':<18} {lat['p50']:8.0f} {lat['p90']:8.0f} {lat['p99']:8.0f} {lat['p999']:8.0f} "
              f"{lat['max']:10.0f}")
        print("by command kind, p50 / p99: " + ", ".join(f"{name} {p50:.0f} / {p99:.0f}"
                                                         for name, (p50, p99) in lat["by_kind"].items()))

    mem = rep.memory
    if mem is not None:
        print(f"\nmemory: engine for {MEM_ORDERS:,} orders and {MEM_LEVELS:,} levels per side, holding "
              f"{MEM_ORDERS:,} resting orders over {MEM_LEVELS:,} levels (loaded in {mem['load_s']:.1f} s): state arrays "
              f"{mem['state_bytes'] / MIB:.1f} MiB, process RSS growth {mem['rss_bytes'] / MIB:.1f} MiB")

    print("\ntargets")
    for mark, what, measured in targets(rep):
        print(f"  [{mark}] {what}: {measured}")
    for failure in rep.failures:
        print(f"  [FAILED] {failure['what']}: {failure['error']}")
    for name, why in rep.skipped.items():
        print(f"  [skipped] {name}: {why}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="short run (well under a minute)")
    ap.add_argument("--cpu", type=int, default=1, help="CPU every measurement is pinned to (default 1)")
    ap.add_argument("--seed", type=int, default=1, help="workload seed (default 1)")
    ap.add_argument("--commands", type=int, help="timed commands (default 2,000,000; --quick 200,000)")
    ap.add_argument("--timeout", type=float, help="seconds before a measurement's child is killed (default 300; --quick 60)")
    args = ap.parse_args(argv)
    if args.cpu not in os.sched_getaffinity(0):
        ap.error(f"CPU {args.cpu} is not in this process's affinity mask")
    if args.commands is not None and args.commands < 1:
        ap.error("--commands must be at least 1")
    sz = sizes(args.quick)
    if args.commands is not None:
        sz["n_ops"] = args.commands
        sz["peer_n"], sz["slow_peer_n"] = min(sz["peer_n"], args.commands), min(sz["slow_peer_n"], args.commands)
    cfg = Config(cpu=args.cpu, timeout_s=args.timeout or (60.0 if args.quick else 300.0), seed=args.seed, **sz)
    meter = CpuMeter()
    print(f"generating {cfg.n_ops:,} commands ...", file=sys.stderr, flush=True)
    wl = generate(cfg.n_ops, cfg.seed, {cfg.n_ops, cfg.peer_n, cfg.slow_peer_n})
    print("compiling in the parent ...", file=sys.stderr, flush=True)
    compile_all(wl)
    rep = Report()
    run(cfg, wl, rep)
    background, steal = meter.cores()
    host = {"cpus": os.cpu_count(), "python": platform.python_version(), "cpu_model": cpu_model(),
            "numba": numba.__version__, "tsc_per_ns": tsc_per_ns(), "pinned_cpu": cfg.cpu,
            "background_load_cores": background, "steal_cores": steal}
    print_report(cfg, wl, rep, host, args.quick)
    n = len(wl.ops)
    result = {"bench": "matching", "host": host, "figures": rep.figures, "ratios": ratios(rep.figures),
              "correct": rep.correct,
              "workload": {"seed": wl.seed, "fill_commands": len(wl.fill), "commands": n,
                           "gtc": float((wl.ops["kind"] == GTC).mean()), "ioc": float((wl.ops["kind"] == IOC).mean()),
                           "cancel": float((wl.ops["kind"] == CANCEL).mean()), "move": float((wl.ops["kind"] == MOVE).mean()),
                           "trading": wl.trading / n, "fills": wl.fills, "book_orders_mean": float(wl.book_orders.mean()),
                           "book_levels_mean": float(wl.book_levels.mean())}}
    if rep.failures:
        result["failures"] = rep.failures
    if rep.skipped:
        result["skipped"] = rep.skipped
    print(json.dumps(result))
    wrong_ganntec = [s for s, ok in rep.correct.items() if s.startswith("ganntec") and not ok]
    return 1 if rep.failures or wrong_ganntec else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # the child is a daemon: it dies with us
        print("interrupted", file=sys.stderr)
        sys.exit(130)
