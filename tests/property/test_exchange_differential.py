"""Differential: the whole exchange (`Exchange.submit`) against the reference model
(`reference.exchange_model.ExchangeModel`, pure Python, Decimal amounts), on generated streams.

Each example is a setup (accounts 0..4 opened or not, with permissions, account-wide open order
limits, max order notional caps, fee overrides and daily loss limits; deposits) and a stream over
two symbols of different tick/step/precision, fees, default STP and filter bounds that the
generated orders hit (PRICE, LOT_SIZE, MARKET_LOT_SIZE, MIN_NOTIONAL / NOTIONAL, PERCENT_PRICE_BY_SIDE,
MAX_NUM_ORDERS, ICEBERG_PARTS, TRAILING_DELTA): every order type (LIMIT GTC/IOC/FOK, MARKET by
quantity and by quote, LIMIT_MAKER, STOP_LOSS(_LIMIT), TAKE_PROFIT(_LIMIT), trailing stops with and
without a stop price, icebergs) and STP mode, malformed orders, client order ids (fresh,
duplicate, reused), cancels and amends by id and by origClientOrderId (own, foreign, unknown,
restricted, unknown symbol), cancel-replaces (both modes, the same targets, any new order: its
filters failing, its client id the replaced order's or another open order's; malformed ones),
OCO lists (every leg type either side, trailing legs, prices either side of the last trade
price, client and list client ids fresh, taken or reused; malformed ones) and amends of their
working legs (quantity cuts of both legs, and the refused ones: a new price, a quantity not
below the total, nothing left), cancel-all, credits
and debits (good and bad), account open / limits, kill / unkill, halt / resume, key records,
bogus command types, edge retries (dropped) and sources without a dedup slot, time going back
and days passing. The model runs the stream first (the generator picks targets from its state);
then a fresh engine runs it one command at a time, and after every command the client stream
(every record field; BALANCE records compared as a set per record that caused them) and all
balances must equal the model's, and no command may be left in flight; at the end the books,
open orders and positions.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, field

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ganntec.engines.symbols import Asset, Symbol
from ganntec.exchange import Exchange
from ganntec.shm import records
from ganntec.shm.records import (
    FLAG_CONTINUED,
    RECORD_DTYPE,
    CancelRestriction,
    ListType,
    OrderType,
    Permission,
    RecordType,
    ReplaceMode,
    Side,
    StpMode,
    TimeInForce,
)
from reference.exchange_model import DAY_NS, KILLED, MAX_BALANCE_MINOR, ExchangeModel
from reference.matching_model import decode

BTC, USDT, ETH = Asset(0, "BTC", 8), Asset(1, "USDT", 4), Asset(2, "ETH", 3)
# Capacities stay above what a stream can open: running out of them (BOOK_FULL) has unit tests.
MAX_ACCOUNTS, MAX_ORDERS, FEE_ACCOUNT = 8, 1024, 0
LOSS_ASSET = USDT


def make_symbols(stp0: StpMode, stp1: StpMode) -> list[Symbol]:
    # One tick x one lot: 0.5 x 0.001 = 5 USDT minor units; 0.000001 x 0.01 = 1 BTC minor unit,
    # so position averages do not divide evenly. Filter bounds sit inside the generated ranges
    # (TRAILING_DELTA too: TRAIL_BIPS has deltas either side of each bound).
    return [
        Symbol(0, "BTCUSDT", BTC, USDT, tick_size="0.5", step_size="0.001", min_price="98", max_price="102.5",
               min_qty="0.002", max_qty="0.012", market_min_qty="0.001", market_max_qty="0.008", min_notional="0.15",
               max_notional="1.2", max_num_orders=3, maker_fee="0.001", taker_fee="0.0015", bid_multiplier_up="1.03",
               bid_multiplier_down="0.97", ask_multiplier_up="1.04", ask_multiplier_down="0.98", default_stp=stp0,
               iceberg_parts=3, min_trailing_above_delta=40, max_trailing_above_delta=200,
               min_trailing_below_delta=60, max_trailing_below_delta=250),
        Symbol(1, "ETHBTC", ETH, BTC, tick_size="0.000001", step_size="0.01", min_price="0.049996",
               max_price="0.050005", min_qty="0.01", max_qty="0.1", market_min_qty="0.02", market_max_qty="0.08",
               min_notional="0.00099994", max_notional="0.005", maker_fee="0", taker_fee="0.00075",
               bid_multiplier_up="1.0001", bid_multiplier_down="0.9999", ask_multiplier_up="1.00008",
               ask_multiplier_down="0.99992", default_stp=stp1, iceberg_parts=10,
               min_trailing_above_delta=1, max_trailing_above_delta=2, min_trailing_below_delta=1,
               max_trailing_below_delta=3),
    ]


LOW_TICK = {0: 196, 1: 49996}  # the lowest price the filter allows; ten prices from there
QUOTE_STEP = {0: 1000, 1: 50000}  # MARKET by quote: multiples of about a lot's worth (quote minor units)
BAD_SYMBOL, BAD_ASSET = 7, 3
ACCOUNTS = (0, 1, 2, 3, 4)  # set up before the stream; 0 is the fee account
DEPOSITS = {BTC.asset_id: (0, 400_000, 5_000_000, 20_000_000), USDT.asset_id: (0, 3_000, 50_000, 200_000),
            ETH.asset_id: (0, 50, 1_000, 4_000)}  # minor units
STOP_MARKETS = (OrderType.STOP_LOSS, OrderType.TAKE_PROFIT)
STOPS = (OrderType.STOP_LOSS, OrderType.STOP_LOSS_LIMIT, OrderType.TAKE_PROFIT, OrderType.TAKE_PROFIT_LIMIT)
# Trailing deltas (bips): a tick is about 50 bips of BTCUSDT's prices and 0.2 of ETHBTC's, so these
# fire on moves of one to three ticks (100 from 100.0 exactly on 101.0) or five to fifteen. The
# last fails TRAILING_DELTA either way; so do BTCUSDT's first for the stops that trigger on a fall
# and ETHBTC's third for those that trigger on a rise. A trailing buy's cap price, ref x (1 +
# delta), falls between ticks, on one, past the max price.
TRAIL_BIPS = {0: (49, 100, 150, 300), 1: (1, 2, 3, 5)}

# --- abstract commands -------------------------------------------------------------------------
# Every field of an abstract command is drawn from a list of options (repeats weigh), so that
# hypothesis (which shrinks toward the first option) and a seeded PRNG (long busy streams) draw
# the same commands:
# ("new", source, replay, account, symbol, side, type, tif, price offset, aggressive, qty, by quote,
#  quote k, stop offset, stp, iceberg, client id kind, mangle, trailing: None or (delta index, no stop price))
# ("replace", source, replay, target, pick, own, account, symbol, restriction, by client id, mode,
#  malformed, then the new order's fields as for "new" from side on): a cancel-replace whose new
#  order gets the cancel's account and symbol
# ("oco", source, replay, account, symbol, side, profit type, loss type, profit gap, loss gap, limit
#  gap, qty, stp, tif, loss leg trailing, profit leg trailing, above / below / list client id kinds,
#  malformed): the legs sit the gaps (ticks) either side of the last trade price
# ("cancel", source, replay, target, pick, own, account, symbol, restriction, by client id)
# ("amend", source, replay, target, pick, own, account, symbol, new price offset or None, qty kind, k,
#  by client id)
# ("amend_leg", ...as "amend", the target a working OCO leg, else any open order; the new price
#  mostly none or the leg's own, so that cuts go through)
# ("cancel_all", source, replay, account, symbol), ("bogus", source, replay, record type)
# ("credit" / "debit", account, asset, amount kind, k)
# ("open" / "limits", account, permissions, max open orders, maker fee e8, taker fee e8, cap, loss limit)
# ("kill" / "unkill" / "key", account), ("halt" / "resume", symbol)
# A client command comes from an edge (1, 2), the admin source (0) or a source without a dedup slot
# (65); replay k > 0 repeats the edge's k-th last source_seq, so the command must be dropped.
SOURCES = [1] * 16 + [2] * 12 + [0, 65]
REPLAYS = [0] * 20 + [1, 2]
# 5 is opened only by the stream, 9 is beyond max_accounts; the fee account trades now and then
TRADERS = [0, 5, 9] + [1, 2, 3, 4] * 5
ANY_ACCOUNTS = [0, 1, 2, 3, 4, 5, 9]
SYMBOL_IDS = [0, 0, 1, 1, 1, BAD_SYMBOL]
ASSET_IDS = [0, 1, 2, 0, 1, 2, BAD_ASSET]
OFFSETS = list(range(10)) * 3 + [-1, 10]  # -1 and 10 are just outside the price filter
QTYS = list(range(2, 10)) * 5 + [1, 10, 11, 12, 13]  # the ends hit LOT_SIZE, MARKET_LOT_SIZE, NOTIONAL
ORDER_TYPES = [OrderType.LIMIT] * 8 + [OrderType.MARKET] * 3 + [
    OrderType.LIMIT_MAKER, OrderType.STOP_LOSS, OrderType.STOP_LOSS_LIMIT, OrderType.TAKE_PROFIT,
    OrderType.TAKE_PROFIT_LIMIT]
TIFS = [TimeInForce.GTC] * 3 + [TimeInForce.IOC, TimeInForce.FOK]
ICEBERGS = [0] * 16 + [1, 2, 3, 4]  # slice lots of a GTC LIMIT or LIMIT_MAKER
CID_KINDS = ["", "", "", "fresh", "fresh", "fresh", "fresh", "fresh", "fresh", "dup", "reuse"]
MANGLES = [None] * 250 + ["side", "type", "tif", "stp", "trailing", "neg_qty", "price_on_market", "quote",
                          "no_stop", "stop_on_limit", "symbol", "neg_iceberg", "qty_and_quote", "iceberg_on_ioc",
                          "neg_trailing"]
# (index into TRAIL_BIPS, without a stop price): applies to stop types
TRAILS = [None] * 9 + [(k, bare) for k in (0, 1, 1, 2) for bare in (False, True)] + [(3, False)]
# cancel-replace: the new order's client id: none, fresh, the replaced order's (free again once it
# is cancelled), one an open order has
REPLACE_CIDS = ["", "fresh", "fresh", "target", "target", "dup"]
REPLACE_MANGLES = [None] * 45 + ["mode", "leg_type", "leg_account", "symbol", "alone"]
# OCO legs: the take-profit kind and the stop-loss kind (a SELL puts profit above, a BUY below)
PROFIT_TYPES = [OrderType.LIMIT_MAKER] * 2 + [OrderType.TAKE_PROFIT, OrderType.TAKE_PROFIT_LIMIT]
LOSS_TYPES = [OrderType.STOP_LOSS, OrderType.STOP_LOSS_LIMIT]
OCO_GAPS = [1] * 5 + [2] * 3 + [3, 4, 0, -1]  # ticks from the last price; 0 and -1 break the relationship
LIMIT_GAPS = [0, 1, 1, 2, -1]  # a stop-limit leg's limit from its stop (the losing way); a take-profit-limit's stop
OCO_QTYS = list(range(2, 9)) * 3 + [1, 9, 13]  # both legs'; the ends fail (MARKET_)LOT_SIZE or NOTIONAL
OCO_TIFS = [TimeInForce.GTC] * 4 + [TimeInForce.IOC, TimeInForce.FOK]
LOSS_TRAILS = [None] * 14 + [(k, bare) for k in (0, 1, 2) for bare in (False, True)] + [(3, True)]
PROFIT_TRAILS = [None] * 12 + [(0, False), (1, False), (1, True), (2, False)]
OCO_CIDS = ["", "", "fresh", "fresh", "fresh", "fresh", "fresh", "dup"]
LIST_CIDS = ["", "", "fresh", "fresh", "fresh", "fresh", "open", "old"]
OCO_MANGLES = [None] * 70 + ["oto", "side", "qty", "types", "swap", "account", "short", "long", "symbol", "market"]
TARGETS = ["open", "open", "open", "any", "unknown"]  # an open order, any order ever sent, none
OWN = [True] * 3 + [False]  # as the target's own account and symbol, or as any
AMEND_QTY = [None, "down", "down", "up", "same", "bad"]
LEG_AMEND_PRICES = [None] * 6 + ["own"] * 3 + [0, 5, 10]  # "own": the leg's price (no change; 0 for a stop market)
LEG_AMEND_QTY = [None] + ["down"] * 6 + ["up", "same", "bad", "bad"]
AMOUNTS = ["deposit"] * 6 + ["unit", "zero", "negative", "free", "free+1", "huge", "over"]
SETTINGS = [
    [int(Permission.TRADE | Permission.READ)] * 19 + [int(Permission.READ)],
    [0] * 8 + [2, 3],  # max open orders
    # maker, taker fee e8 (-1: the symbol's); 25% and 100% fees make losses big enough for the daily limit
    [-1, -1, -1, 0, 2500, 250_000, 100_000_000], [-1, -1, -1, 0, 2500, 250_000, 100_000_000],
    [0] * 10 + [8_000, 200_000],  # max order notional (quote minor units)
    [0, 0, 2_503, 20_011],  # daily loss limit (USDT minor units)
]
TIME_STEPS = [0, 1, 1, 1, 1000, -5] * 3 + [DAY_NS]
ORDER_FIELDS = [[Side.BUY, Side.SELL], ORDER_TYPES, TIFS, OFFSETS, [False, True], QTYS, [False, True],
                list(range(14)), OFFSETS, list(StpMode), ICEBERGS]  # side .. iceberg of "new"
FIELDS = {
    "new": [["new"], SOURCES, REPLAYS, TRADERS, [0, 1], *ORDER_FIELDS, CID_KINDS, MANGLES, TRAILS],
    "replace": [["replace"], SOURCES, REPLAYS, TARGETS, list(range(41)), OWN, ANY_ACCOUNTS, SYMBOL_IDS,
                list(CancelRestriction), [False, True], list(ReplaceMode), REPLACE_MANGLES, *ORDER_FIELDS,
                REPLACE_CIDS, MANGLES, TRAILS],
    "oco": [["oco"], SOURCES, REPLAYS, TRADERS, [0, 1], [Side.BUY, Side.SELL], PROFIT_TYPES, LOSS_TYPES, OCO_GAPS,
            OCO_GAPS, LIMIT_GAPS, OCO_QTYS, list(StpMode), OCO_TIFS, LOSS_TRAILS, PROFIT_TRAILS, OCO_CIDS,
            OCO_CIDS * 2 + ["same"], LIST_CIDS, OCO_MANGLES],
    "cancel": [["cancel"], SOURCES, REPLAYS, TARGETS, list(range(41)), OWN, ANY_ACCOUNTS, SYMBOL_IDS,
               list(CancelRestriction), [False, True]],
    "amend": [["amend"], SOURCES, REPLAYS, TARGETS, list(range(41)), OWN, ANY_ACCOUNTS, SYMBOL_IDS, [None] + OFFSETS,
              AMEND_QTY, list(range(8)), [False, True]],
    "amend_leg": [["amend_leg"], SOURCES, REPLAYS, ["leg"] * 9 + ["open"], list(range(41)), [True] * 9 + [False],
                  ANY_ACCOUNTS, SYMBOL_IDS, LEG_AMEND_PRICES, LEG_AMEND_QTY, list(range(8)), [False] * 3 + [True]],
    "cancel_all": [["cancel_all"], SOURCES, REPLAYS, ANY_ACCOUNTS, SYMBOL_IDS],
    "bogus": [["bogus"], SOURCES, REPLAYS, [99, int(RecordType.FILL)]],
    **{kind: [[kind], ANY_ACCOUNTS, ASSET_IDS, AMOUNTS, [1, 2, 3]] for kind in ("credit", "debit")},
    **{kind: [[kind], ANY_ACCOUNTS, *SETTINGS] for kind in ("open", "limits")},
    **{kind: [[kind], ANY_ACCOUNTS] for kind in ("kill", "key")},
    "unkill": [["unkill"], ["killed"] * 7 + ANY_ACCOUNTS],  # "killed": one the model has killed
    "halt": [["halt"], SYMBOL_IDS],
    "resume": [["resume"], ["halted"] * 6 + SYMBOL_IDS],  # "halted": one the model has halted
}
KINDS = ["new"] * 40 + ["cancel"] * 6 + ["amend"] * 6 + ["amend_leg"] * 4 + ["replace"] * 5 + ["oco"] * 6 + [
    "cancel_all", "credit", "credit", "debit", "open", "limits", "kill", "halt", "key", "bogus"] + [
    "unkill", "resume"] * 3
# Setup per account: opened or not (the fee account is often not), settings, deposit of each asset.
SETUP = [[[True, False] if a == FEE_ACCOUNT else [True], *SETTINGS, *[[0, 1, 2, 2, 3, 3]] * len(DEPOSITS)]
         for a in ACCOUNTS]


def drawn(options: list[list]):
    return st.tuples(*(st.sampled_from(o) for o in options))


def rolled(rnd: random.Random, options: list[list]) -> tuple:
    return tuple(rnd.choice(o) for o in options)


BY_KIND = {kind: drawn(options) for kind, options in FIELDS.items()}
# (st.one_of is far from uniform: pick the kind explicitly to keep new orders the majority)
abstract_cmds = st.tuples(st.sampled_from(TIME_STEPS), st.sampled_from(KINDS).flatmap(BY_KIND.__getitem__))
setups = st.tuples(*map(drawn, SETUP))


def rolled_run(seed: int, n: int) -> tuple[tuple, list]:
    """(setup, abstract commands) from a seeded PRNG: a long stream that keeps books busy."""
    rnd = random.Random(seed)
    setup = tuple(rolled(rnd, options) for options in SETUP)
    return setup, [(rnd.choice(TIME_STEPS), rolled(rnd, FIELDS[rnd.choice(KINDS)])) for _ in range(n)]


@dataclass
class Stream:
    """Abstract commands made concrete against the model's state, with what the model said."""

    symbols: list[Symbol]
    max_levels: int
    daily_loss: bool
    model: ExchangeModel
    commands: list[np.ndarray] = field(default_factory=list)
    edges: list[np.ndarray] = field(default_factory=list)  # the model's client stream, per command
    balances: list[np.ndarray] = field(default_factory=list)  # the model's balances after each command


class Builder:
    """Turns abstract commands into records, against the model's state, and runs them on it."""

    def __init__(self, s: Stream):
        self.s, self.model = s, s.model
        self.ts = 0
        self.source_seq = {1: 0, 2: 0}
        self.n_cids = 0
        self.list_cids: list[tuple[int, bytes]] = []  # (account, listClientOrderId) ever sent

    def add(self, cmd: np.ndarray, dt: int = 1) -> None:
        """The command, stamped dt after the last (dt < 0: a stamp that went back), through the model."""
        if dt >= 0:
            self.ts += dt
        cmd["ts_ns"] = max(0, self.ts + min(dt, 0))
        self.s.commands.append(cmd)
        self.s.edges.append(self.model.submit(cmd))
        self.s.balances.append(self.model.balances())

    def client(self, cmd: np.ndarray, source: int, replay: int) -> np.ndarray:
        cmd["source"] = source
        if source in self.source_seq:
            if replay:  # the last source_seq again, or the one before
                cmd["source_seq"] = self.source_seq[source] + 1 - replay
            else:
                self.source_seq[source] += 1
                cmd["source_seq"] = self.source_seq[source]
        return cmd

    # --- setup and admin -----------------------------------------------------------------------
    def setup(self, setup: tuple) -> None:
        for account, (opened, *rest) in zip(ACCOUNTS, setup):
            settings_, deposits = rest[: len(SETTINGS)], rest[len(SETTINGS) :]
            if opened:
                self.add(account_record(RecordType.ACCOUNT_OPEN, account, settings_))
            for asset_id, k in zip(DEPOSITS, deposits):
                if DEPOSITS[asset_id][k]:
                    self.add(transfer(RecordType.CREDIT, account, asset_id, DEPOSITS[asset_id][k]))

    def admin(self, a: tuple) -> np.ndarray:
        kind = a[0]
        if kind in ("credit", "debit"):
            _, account, asset_id, amount_kind, k = a
            free = self.model.free_of(account, asset_id) if account < MAX_ACCOUNTS and asset_id < 3 else 0
            room = MAX_BALANCE_MINOR - self.model.credited[asset_id]  # what credits may still add to the asset
            amount = {"deposit": DEPOSITS.get(asset_id, (0, 7, 70, 700))[k], "unit": 1, "zero": 0, "negative": -5,
                      "free": free, "free+1": free + 1, "huge": room + 1 - k, "over": room + k}[amount_kind]
            return transfer(RecordType.CREDIT if kind == "credit" else RecordType.DEBIT, account, asset_id, amount)
        if kind in ("open", "limits"):
            rtype = RecordType.ACCOUNT_OPEN if kind == "open" else RecordType.ACCOUNT_LIMITS
            return account_record(rtype, a[1], a[2:])
        if kind == "key":
            rec = records.empty(RecordType.KEY_ADD)
            rec["account_id"], rec["key_id"], rec["permissions"] = a[1], 1000 + a[1], int(Permission.TRADE)
            rec["key_sha256"] = np.arange(32, dtype=np.uint8)
            return rec.view(RECORD_DTYPE)
        rtype = {"kill": RecordType.KILL_ACCOUNT, "unkill": RecordType.UNKILL_ACCOUNT, "halt": RecordType.HALT_SYMBOL,
                 "resume": RecordType.RESUME_SYMBOL}[kind]
        rec = records.empty(rtype)
        if kind in ("kill", "unkill"):
            killed = [i for i, acc in enumerate(self.model.accounts) if acc.status == KILLED]
            rec["account_id"] = (killed or [1])[0] if a[1] == "killed" else a[1]
        else:
            rec["symbol_id"] = min(self.model.halted, default=0) if a[1] == "halted" else a[1]
        return rec

    # --- client commands ---------------------------------------------------------------------------
    def new_order(self, a: tuple, cid: bytes | None = None) -> np.ndarray:
        (_, source, replay, account, sym, side, otype, tif, p, aggressive, qty, by_quote, quote_k, stop_p, stp, ice,
         cid_kind, mangle, trail) = a
        if aggressive:  # a price on the side that crosses, so that books trade
            p = 9 - p // 2 if side == Side.BUY else p // 2
        market = otype in (OrderType.MARKET, *STOP_MARKETS)
        rec = records.empty(RecordType.NEW_ORDER)
        rec["account_id"], rec["symbol_id"], rec["side"], rec["order_type"] = account, sym, side, otype
        rec["stp_mode"] = stp
        rec["time_in_force"] = 0 if market else (tif if otype != OrderType.LIMIT_MAKER or tif == TimeInForce.GTC else 0)
        rec["price_tick"] = 0 if market else LOW_TICK[sym] + p
        if otype == OrderType.MARKET and by_quote:
            rec["quote_qty_minor"] = max(1, quote_k * QUOTE_STEP[sym] + 7 * p)
        else:
            rec["qty_lot"] = qty
        rec["stop_price_tick"] = LOW_TICK[sym] + stop_p if otype in STOPS else 0
        if otype in STOPS and trail:  # a trailing stop, with its stop price or without
            rec["trailing_delta_bips"] = TRAIL_BIPS[sym][trail[0]]
            if trail[1]:
                rec["stop_price_tick"] = 0
        if otype == OrderType.LIMIT_MAKER or (otype == OrderType.LIMIT and tif == TimeInForce.GTC):
            rec["iceberg_qty_lot"] = ice
        rec["client_order_id"] = self.client_id(account, cid_kind) if cid is None else cid
        if mangle:
            mangle_order(rec, mangle)
        return self.client(rec.view(RECORD_DTYPE), source, replay)

    def replace(self, a: tuple) -> np.ndarray:
        """CANCEL_REPLACE (the cancel, FLAG_CONTINUED) + the new order, its account and symbol the
        cancel's."""
        _, source, replay, target, pick, own, account, sym, restriction, by_cid, mode, malformed = a[:12]
        order_id, account, sym, cid = self.target(target, pick, own, account, sym)
        leg_fields, (cid_kind, mangle, trail) = a[12:-3], a[-3:]
        leg_cid = cid if cid_kind == "target" else self.client_id(account, cid_kind)
        leg = self.new_order(("new", source, replay, account, sym if sym in LOW_TICK else 0, *leg_fields, "", mangle,
                              trail), cid=leg_cid)
        if sym not in LOW_TICK:  # (a target's symbol the exchange does not have)
            leg["symbol_id"] = sym
        head = records.empty(RecordType.CANCEL_REPLACE)
        head["account_id"], head["symbol_id"], head["flags"] = account, sym, FLAG_CONTINUED
        head["cancel_restrictions"], head["replace_mode"] = restriction, mode
        if by_cid:
            head["orig_client_order_id"] = cid or b"nope"
        else:
            head["order_id"] = order_id
        if malformed == "mode":
            head["replace_mode"] = 3
        elif malformed == "leg_type":  # the second record is no order
            leg["type"] = RecordType.CANCEL
        elif malformed == "leg_account":
            leg["account_id"] = account + 1
        elif malformed == "symbol":
            head["symbol_id"] = leg["symbol_id"] = BAD_SYMBOL
        elif malformed == "alone":  # a cancel-replace without its new order
            head["flags"] = 0
            return self.client(head.view(RECORD_DTYPE), source, replay)
        return self.client(records.concat([head, leg]), source, replay)

    def oco(self, a: tuple) -> np.ndarray:
        """ORDER_LIST (OCO) + its above and below legs, placed around the last trade price."""
        (_, source, replay, account, sym, side, profit_type, loss_type, profit_gap, loss_gap, limit_gap, qty, stp, tif,
         loss_trail, profit_trail, cid_a, cid_b, list_cid, malformed) = a
        last = self.model.sequencer.last.get(sym)
        ref = LOW_TICK[sym] + 5 if last is None else self.model.rules[sym].ticks(last)
        up = 1 if side == Side.SELL else -1  # the way the profit leg sits from the last price
        profit = dict(order_type=profit_type, price=ref + up * profit_gap)
        if profit_type != OrderType.LIMIT_MAKER:
            profit["stop"] = profit["price"] - (up * limit_gap if profit_type == OrderType.TAKE_PROFIT_LIMIT else 0)
            if profit_type == OrderType.TAKE_PROFIT:
                profit["price"] = 0
            profit["trail"] = profit_trail
        loss = dict(order_type=loss_type, stop=ref - up * loss_gap, trail=loss_trail)
        loss["price"] = loss["stop"] - up * limit_gap if loss_type == OrderType.STOP_LOSS_LIMIT else 0
        if malformed == "types":
            profit = dict(loss, order_type=OrderType.STOP_LOSS, price=0)
        elif malformed == "market":
            profit = dict(order_type=OrderType.MARKET, price=0)
        above, below = (profit, loss) if side == Side.SELL else (loss, profit)
        legs = []
        for leg, cid_kind in ((above, cid_a), (below, cid_b)):
            rec = records.empty(RecordType.NEW_ORDER)
            rec["account_id"], rec["symbol_id"], rec["side"], rec["qty_lot"] = account, sym, side, qty
            rec["order_type"], rec["price_tick"], rec["stp_mode"] = leg["order_type"], leg["price"], stp
            rec["stop_price_tick"] = leg.get("stop", 0)
            if leg["order_type"] in (OrderType.STOP_LOSS_LIMIT, OrderType.TAKE_PROFIT_LIMIT):
                rec["time_in_force"] = tif
            if leg.get("trail"):
                rec["trailing_delta_bips"] = TRAIL_BIPS[sym][leg["trail"][0]]
                if leg["trail"][1]:
                    rec["stop_price_tick"] = 0
            rec["client_order_id"] = legs[0]["client_order_id"] if cid_kind == "same" else self.client_id(account,
                                                                                                          cid_kind)
            legs.append(rec)
        head = records.empty(RecordType.ORDER_LIST)
        head["account_id"], head["symbol_id"], head["list_type"] = account, sym, ListType.OCO
        head["list_client_order_id"] = self.list_client_id(account, list_cid)
        if malformed == "oto":
            head["list_type"] = ListType.OTO
        elif malformed == "side":
            legs[1]["side"] = Side.BUY if side == Side.SELL else Side.SELL
        elif malformed == "qty":
            legs[1]["qty_lot"] = qty + 1
        elif malformed == "swap":
            legs.reverse()
        elif malformed == "account":
            legs[1]["account_id"] = account + 1
        elif malformed == "short":  # one leg only
            legs.pop()
        elif malformed == "long":  # three legs
            legs.append(records.concat([legs[1]]))
        elif malformed == "symbol":
            for rec in [head, *legs]:
                rec["symbol_id"] = BAD_SYMBOL
        parts = [head, *legs]
        for rec in parts[:-1]:
            rec["flags"] = FLAG_CONTINUED
        return self.client(records.concat(parts), source, replay)

    def list_client_id(self, account: int, kind: str) -> bytes:
        if kind == "open":  # the listClientOrderId of a list still open
            mine = [cid for (acc, cid) in self.model.sequencer.lists if acc == account]
            if mine:
                return mine[0]
        elif kind == "old":  # one used before (its list may have ended)
            mine = [cid for acc, cid in self.list_cids if acc == account]
            if mine:
                return mine[0]
        elif not kind:
            return b""
        self.n_cids += 1
        self.list_cids.append((account, b"L%d" % self.n_cids))
        return self.list_cids[-1][1]

    def client_id(self, account: int, kind: str) -> bytes:
        if kind == "dup":
            mine = [cid for oid, acc, _, cid in self.model.new_orders if acc == account and cid and self.is_open(oid)]
            if mine:
                return mine[-1]
        elif kind == "reuse":
            mine = [cid for _, acc, _, cid in self.model.new_orders if acc == account and cid]
            if mine:
                return mine[0]
        elif not kind:
            return b""
        self.n_cids += 1
        return b"c%d" % self.n_cids

    def is_open(self, order_id: int) -> bool:
        return self.model.matching.order(order_id) is not None

    def cancel_or_amend(self, a: tuple) -> np.ndarray:
        kind, source, replay, target, pick, own, account, sym = a[:8]
        order_id, account, sym, cid = self.target(target, pick, own, account, sym)
        by_cid = a[-1]
        if kind == "cancel":
            rec = records.empty(RecordType.CANCEL)
            rec["cancel_restrictions"] = a[8]
        else:
            new_price, qty_kind, k = a[8:11]
            rec = records.empty(RecordType.AMEND)
            if new_price == "own":
                o = self.model.matching.order(order_id)
                rec["new_price_tick"] = 0 if o is None else o["price_tick"]
            else:
                rec["new_price_tick"] = 0 if new_price is None else LOW_TICK.get(sym, 1) + new_price
            rec["new_qty_lot"] = amend_qty(self.model.matching.order(order_id), qty_kind, k)
        rec["account_id"], rec["symbol_id"] = account, sym
        if by_cid:
            rec["orig_client_order_id"] = cid or b"nope"
        else:
            rec["order_id"] = order_id
        return self.client(rec.view(RECORD_DTYPE), source, replay)

    def target(self, target, pick, own, account, sym) -> tuple[int, int, int, bytes]:
        """(order id, account, symbol, client id) for a cancel or amend."""
        issued = self.model.new_orders
        if target == "leg":  # a leg of a working OCO (both legs work), else any open order
            legs = [x for x in issued if x[0] in self.model.holds and self.model.holds[x[0]].link]
            if legs:
                oid, o_account, o_sym, cid = legs[-1 - pick % len(legs)]
                return (oid, o_account, o_sym, cid) if own else (oid, account, sym, cid)
            target = "open"
        if target == "open":
            open_ids = sorted(oid for oid, *_ in issued if self.is_open(oid))
            candidates = [x for x in issued if x[0] in open_ids]
        else:
            candidates = list(issued)
        if target == "unknown" or not candidates:
            return 1_000_000 + pick, account, sym, b""
        oid, o_account, o_sym, cid = candidates[-1 - pick % len(candidates)]
        return (oid, o_account, o_sym, cid) if own else (oid, account, sym, cid)

    def build(self, abstract) -> None:
        for dt, a in abstract:
            kind = a[0]
            if kind == "new":
                cmd = self.new_order(a)
            elif kind == "replace":
                cmd = self.replace(a)
            elif kind == "oco":
                cmd = self.oco(a)
            elif kind in ("cancel", "amend", "amend_leg"):
                cmd = self.cancel_or_amend(a)
            elif kind == "cancel_all":
                rec = records.empty(RecordType.CANCEL_ALL)
                rec["account_id"], rec["symbol_id"] = a[3], a[4]
                cmd = self.client(rec, a[1], a[2])
            elif kind == "bogus":
                rec = np.zeros(1, RECORD_DTYPE)
                rec["type"], rec["account_id"] = a[3], 1
                cmd = self.client(rec, a[1], a[2])
            else:
                cmd = self.admin(a)
            self.add(cmd, dt)


def account_record(rtype: RecordType, account: int, settings_: tuple) -> np.ndarray:
    permissions, max_open, maker_e8, taker_e8, cap, loss = settings_
    rec = records.empty(rtype)
    rec["account_id"], rec["permissions"], rec["max_open_orders"] = account, permissions, max_open
    rec["maker_fee_e8"], rec["taker_fee_e8"] = maker_e8, taker_e8
    rec["max_order_notional_minor"], rec["daily_loss_limit_minor"] = cap, loss
    return rec.view(RECORD_DTYPE)


def transfer(rtype: RecordType, account: int, asset_id: int, amount: int) -> np.ndarray:
    rec = records.empty(rtype)
    rec["account_id"], rec["asset_id"], rec["amount_minor"] = account, asset_id, amount
    rec["reference"] = b"ref"
    return rec.view(RECORD_DTYPE)


def mangle_order(rec: np.ndarray, how: str) -> None:
    """One way a NEW_ORDER can be malformed (UNSUPPORTED_COMBINATION or UNKNOWN_SYMBOL)."""
    if how == "side":
        rec["side"] = 3
    elif how == "type":
        rec["order_type"] = 8
    elif how == "tif":
        rec["time_in_force"] = 4
    elif how == "stp":
        rec["stp_mode"] = 6
    elif how == "trailing":  # a trailing delta on an order that is no stop
        rec["trailing_delta_bips"] = 100
        if int(rec["order_type"][0]) in (OrderType.STOP_LOSS, OrderType.STOP_LOSS_LIMIT, OrderType.TAKE_PROFIT,
                                         OrderType.TAKE_PROFIT_LIMIT):
            rec["order_type"] = OrderType.LIMIT
    elif how == "neg_qty":
        rec["qty_lot"] = -int(rec["qty_lot"][0]) or -1
    elif how == "price_on_market":
        rec["price_tick"] = int(rec["price_tick"][0]) or 197
    elif how == "quote":
        rec["quote_qty_minor"] = 5_000
    elif how == "qty_and_quote":
        rec["qty_lot"], rec["quote_qty_minor"] = max(1, int(rec["qty_lot"][0])), 5_000
    elif how == "no_stop":
        rec["stop_price_tick"] = 0
    elif how == "stop_on_limit":
        rec["stop_price_tick"] = int(rec["stop_price_tick"][0]) or 198
    elif how == "symbol":
        rec["symbol_id"] = BAD_SYMBOL
    elif how == "neg_iceberg":
        rec["iceberg_qty_lot"] = -2
    elif how == "iceberg_on_ioc":
        rec["time_in_force"], rec["iceberg_qty_lot"] = TimeInForce.IOC, 1
    elif how == "neg_trailing":
        rec["trailing_delta_bips"] = -5


def amend_qty(o: dict | None, qty_kind: str | None, k: int) -> int:
    if qty_kind is None:
        return 0
    if o is None:
        return 1 + k
    total, used = o["qty_lot"], o["executed_qty_lot"] + o["decremented_qty_lot"]
    if qty_kind == "down":
        return max(1, total - 1 - k % max(1, total - 1))  # sometimes at or below what is used
    if qty_kind == "up":
        return total + 1 + k
    if qty_kind == "same":
        return total
    return max(1, used - k % 2)  # "bad": at or just below what is used


def build_stream(stps, max_levels, daily_loss, setup, abstract) -> Stream:
    symbols = make_symbols(*stps)
    model = ExchangeModel(symbols, max_accounts=MAX_ACCOUNTS, max_orders=MAX_ORDERS, max_levels=max_levels,
                          fee_account=FEE_ACCOUNT, loss_asset=LOSS_ASSET.asset_id if daily_loss else None)
    s = Stream(symbols, max_levels, daily_loss, model)
    b = Builder(s)
    b.setup(setup)
    b.build(abstract)
    return s


def streams(max_commands: int, busy: bool = False):
    """Streams; now and then max_levels=2, so that GTC remainders and stops expire with BOOK_FULL."""
    stp = st.sampled_from([m for m in StpMode if m != StpMode.DEFAULT])
    config = (st.tuples(stp, stp), st.sampled_from([64, 64, 64, 2]), st.booleans())
    if busy:
        # a seed, not st.randoms() (which records every draw); shrinking the length gives prefixes
        runs = st.tuples(st.integers(0, 2**64 - 1), st.integers(max_commands // 2, max_commands)).map(
            lambda t: rolled_run(*t))
        return st.builds(lambda stps, levels, loss, run: build_stream(stps, levels, loss, *run), *config, runs)
    return st.builds(build_stream, *config, setups,
                     st.lists(abstract_cmds, min_size=max_commands // 2, max_size=max_commands))


# --- comparing ---------------------------------------------------------------------------------
def client_view(recs: np.ndarray) -> list:
    """Records as dicts of every field, each run of BALANCE records as one set: the spec asks for
    a BALANCE per (account, asset) a record changed, not for an order among them."""
    out: list = []
    for row in decode(recs):
        if row["type"] == "BALANCE":
            if not out or not isinstance(out[-1], frozenset):
                out.append(frozenset())
            out[-1] = out[-1] | {tuple(row.items())}
        else:
            out.append(row)
    return out


def diff_views(got: list, want: list) -> str | None:
    for i in range(max(len(got), len(want))):
        g = got[i] if i < len(got) else None
        w = want[i] if i < len(want) else None
        if g == w:
            continue
        lines = [f"client records differ at {i} (engine {len(got)}, model {len(want)}):"]
        lines += [f"  [{j}] same   {brief(got[j])}" for j in range(max(0, i - 3), i)]
        if isinstance(g, dict) and isinstance(w, dict) and g["type"] == w["type"]:
            lines.append(f"  [{i}] {g['type']}: " + ", ".join(f"{k}: engine {g[k]!r} model {w[k]!r}"
                                                             for k in g if g[k] != w[k]))
        lines.append(f"  [{i}] engine {brief(g)}")
        lines.append(f"  [{i}] model  {brief(w)}")
        return "\n".join(lines)
    return None


def brief(x) -> str:
    if x is None:
        return "(none)"
    if isinstance(x, frozenset):
        return "BALANCE " + "; ".join(sorted(f"acct={d['account_id']} asset={d['asset_id']} free={d['free_minor']} "
                                             f"locked={d['locked_minor']} delta={d['delta_minor']}"
                                             for d in map(dict, x)))
    return " ".join(f"{k}={v!r}" if isinstance(v, bytes) else f"{k}={v}" for k, v in x.items()
                    if v or k == "type")


def describe(s: Stream) -> str:
    """The stream, one command a line (nonzero fields), for a failure message."""
    lines = [f"symbols default_stp={[StpMode(x.default_stp).name for x in s.symbols]} max_levels={s.max_levels} "
             f"daily_loss={s.daily_loss}"]
    for i, cmd in enumerate(s.commands):
        for k in range(len(cmd)):  # (a cancel-replace, an OCO: one line per record)
            t = int(cmd["type"][k])
            head = f"  [{i}] " if k == 0 else "       + "
            if t in set(RecordType):
                lines.append(head + brief(decode(cmd[k : k + 1])[0]))
            else:
                lines.append(head + f"type={t} source={int(cmd['source'][k])}")
    return "\n".join(lines)


def position_rows(ex: Exchange) -> dict:
    return {(int(p["account_id"]), int(p["symbol_id"])): (int(p["net_qty_lot"]), int(p["entry_value_quote_minor"]),
                                                          int(p["realized_pnl_quote_minor"]), int(p["fees_base_minor"]),
                                                          int(p["fees_quote_minor"]), int(p["volume_qty_lot"]),
                                                          int(p["last_price_tick"]))
            for p in ex.positions()}


def check_stream(s: Stream) -> None:
    ex = Exchange(s.symbols, max_accounts=MAX_ACCOUNTS, max_orders=MAX_ORDERS, max_levels=s.max_levels,
                  fee_account=FEE_ACCOUNT, loss_asset=LOSS_ASSET.name if s.daily_loss else None)
    for i, cmd in enumerate(s.commands):
        got = ex.submit(cmd)
        want = s.edges[i]
        problem = diff_views(client_view(got), client_view(want))
        assert problem is None, f"command {i}: {problem}\ncommands:\n{describe(s)}"
        assert ex.driver.order.in_flight == 0, f"command {i} left in flight (a FLAG_END missing)\n{describe(s)}"
        bad = np.argwhere((ex.balances() != s.balances[i]).any(axis=2))
        assert not len(bad), (f"after command {i}, balances (free, locked) differ: " + ", ".join(
            f"acct {a} asset {k}: engine {ex.balances()[a, k].tolist()} model {s.balances[i][a, k].tolist()}"
            for a, k in bad) + f"\ncommands:\n{describe(s)}")
    m = s.model.matching
    for sym in range(len(s.symbols)):
        for side in (Side.BUY, Side.SELL):
            assert ex.book(sym, side).tolist() == m.levels(sym, side).tolist(), f"book {sym} {side}\n{describe(s)}"
            assert ex.driver.matching.open_orders(sym, side) == m.open_orders(sym, side), describe(s)
        for oid in m.waiting_stops(sym):  # the engine lists no stop book, but must know each one
            o = ex.driver.matching.order(oid)
            assert o is not None and o["stop_price_tick"] == m.order(oid)["stop_price_tick"], (oid, describe(s))
    got, want = position_rows(ex), s.model.position_rows()
    differ = [(k, got.get(k), want.get(k)) for k in sorted(set(got) | set(want)) if got.get(k) != want.get(k)]
    assert not differ, f"positions (account, symbol): engine, model: {differ}\n{describe(s)}"
    assert ex.conservation_errors() == []


COMMON = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                    HealthCheck.large_base_example])
EXAMPLES = int(os.environ.get("GANNTEC_EXCHANGE_EXAMPLES", "400"))  # busy-market test: a third
SOAK_EXAMPLES = int(os.environ.get("GANNTEC_EXCHANGE_SOAK_EXAMPLES", "2000"))


@settings(max_examples=EXAMPLES, **COMMON)
@given(s=streams(100))
def test_exchange_matches_model(s):
    check_stream(s)


@settings(max_examples=max(1, EXAMPLES // 3), **COMMON)
@given(s=streams(400, busy=True))
def test_exchange_matches_model_busy_market(s):
    check_stream(s)


@pytest.mark.soak
@settings(max_examples=SOAK_EXAMPLES, **COMMON)
@given(s=st.one_of(streams(300), streams(2000, busy=True)))
def test_exchange_matches_model_soak(s):
    check_stream(s)
