"""Replay rebuilds the engines from a journal and verifies every record of it.

Journals come from the exchange differential's streams (every command kind it draws), run two
ways: the in-process driver (canonical order: a command's results right after it) and a
simulated live pipeline where the order engine, matching and the queues between them take
random steps, so results land after later commands, as in the multi-process runtime. Replay
must reproduce each journal byte for byte (and the edge stream), and leave engines that go
on exactly as the originals."""

from __future__ import annotations

import random

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ganntec.engines.matching import MatchingEngine
from ganntec.engines.order import OrderEngine
from ganntec.engines.position import PositionEngine
from ganntec.engines.risk import RiskEngine
from ganntec.engines.symbols import symbol_table
from ganntec.exchange import Exchange
from ganntec.journal.replay import Replayer, ReplayMismatch
from ganntec.shm import records as R
from ganntec.shm.records import RecordType, Side
from test_exchange_differential import FEE_ACCOUNT, LOSS_ASSET, MAX_ACCOUNTS, MAX_ORDERS, streams

SETTINGS = dict(deadline=None, max_examples=40,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example])


def params(s) -> dict:
    return dict(symbols=symbol_table(s.symbols), n_assets=1 + max(max(x.base.asset_id, x.quote.asset_id) for x in s.symbols),
                max_accounts=MAX_ACCOUNTS, max_orders=MAX_ORDERS, max_levels=s.max_levels, fee_account=FEE_ACCOUNT,
                loss_asset=LOSS_ASSET.asset_id if s.daily_loss else -1)


def raw(recs) -> np.ndarray:
    return R.as_records(recs).view(np.uint8).reshape(-1, R.RECORD_BYTES)


def same_state(a, b, s) -> None:
    """Two sets of engines hold the same exchange: balances, books, open orders, positions,
    sequence and in-flight count."""
    assert np.array_equal(a.risk.balances, b.risk.balances)
    for sym in range(len(s.symbols)):
        for side in (Side.BUY, Side.SELL):
            assert np.array_equal(a.matching.levels(sym, side), b.matching.levels(sym, side))
            assert a.matching.open_orders(sym, side) == b.matching.open_orders(sym, side)
    assert np.array_equal(a.position.rows, b.position.rows)
    assert a.order.seq == b.order.seq


class Engines:
    """The four engines as the live runtime holds them (one per worker)."""

    def __init__(self, s, max_in_flight: int):
        p = params(s)
        self.order = OrderEngine(p["symbols"], max_in_flight=max_in_flight, max_open_orders=MAX_ORDERS)
        self.risk = RiskEngine(p["symbols"], p["n_assets"], MAX_ACCOUNTS, MAX_ORDERS, FEE_ACCOUNT, p["loss_asset"])
        self.matching = MatchingEngine(p["symbols"], MAX_ORDERS, s.max_levels)
        self.position = PositionEngine(p["symbols"], max_positions=MAX_ORDERS)


def live_pipeline(s, rnd: random.Random, max_in_flight: int = 4, check=None):
    """The multi-process pipeline's order of events, simulated: each turn either the order
    engine sequences some results then some commands (risk and position follow at once), or
    matching takes some whole commands from risk; `check(engines)` after each order engine
    step. Returns (journal, edge, engines)."""
    e = Engines(s, max_in_flight)
    cmds = raw(s.commands)
    pos = 0
    to_match = np.zeros((0, R.RECORD_BYTES), np.uint8)
    results = np.zeros((0, R.RECORD_BYTES), np.uint8)
    journal, edge = [], []
    while pos < len(cmds) or len(to_match) or len(results):
        if rnd.random() < 0.5:
            k_res, k_cmd = rnd.randint(0, len(results)), rnd.randint(0, min(8, len(cmds) - pos))
            out, used_r, used_c = e.order.process(results[:k_res], cmds[pos:pos + k_cmd])
            results, pos = results[used_r:], pos + used_c
            if len(out):
                journal.append(out)
                a, b = e.risk.process(out)
                to_match = np.concatenate([to_match, raw(a)])
                edge.append(e.position.process(b))
            if check is not None:
                check(e)
        elif len(to_match):
            bounds = R.command_bounds(to_match)
            take = bounds[rnd.randint(1, len(bounds) - 1)]
            results = np.concatenate([results, raw(e.matching.process(to_match[:take]))])
            to_match = to_match[take:]
    assert not e.matching.pending and e.order.in_flight == 0
    return R.concat(journal), R.concat(edge), e


def replay(s, journal, rnd: random.Random | None = None) -> tuple[Replayer, np.ndarray]:
    """Replay a journal, in random pieces (cut anywhere, even inside a command) if rnd."""
    rp = Replayer(**params(s), max_in_flight=64)
    jr = raw(journal)
    edge, pos = [], 0
    while pos < len(jr):
        k = len(jr) - pos if rnd is None else rnd.randint(1, 40)
        edge.append(rp.feed(jr[pos:pos + k]))
        pos += k
    return rp, R.concat(edge)


@settings(**SETTINGS)
@given(s=streams(60), seed=st.integers(0, 2**32 - 1))
def test_replay_of_the_in_process_journal_is_exact_and_goes_on_like_the_original(s, seed):
    rnd = random.Random(seed)
    split = rnd.randint(0, len(s.commands))
    ex = Exchange(s.symbols, max_accounts=MAX_ACCOUNTS, max_orders=MAX_ORDERS, max_levels=s.max_levels,
                  fee_account=FEE_ACCOUNT, loss_asset=LOSS_ASSET.name if s.daily_loss else None)
    edges = [ex.submit(c) for c in s.commands]
    head = R.concat(ex.journal[:split])
    rp, edge = replay(s, head, rnd)
    assert np.array_equal(raw(edge), raw(edges[:split]))
    more_journal, more_edge = rp.finish()
    assert len(more_journal) == 0 and len(more_edge) == 0  # every result was journaled
    if split < len(s.commands):  # live again: the same journal and edge stream
        journal, edge = rp.run(s.commands[split:])
        assert np.array_equal(raw(journal), raw(ex.journal[split:]))
        assert np.array_equal(raw(edge), raw(edges[split:]))
    same_state(rp, ex.driver, s)


@settings(**SETTINGS)
@given(s=streams(60), seed=st.integers(0, 2**32 - 1))
def test_replay_of_an_interleaved_live_journal_is_exact(s, seed):
    rnd = random.Random(seed)
    journal, edge, live = live_pipeline(s, rnd)
    rp, replayed_edge = replay(s, journal, rnd)
    assert np.array_equal(raw(replayed_edge), raw(edge))
    assert rp.pending_results == 0
    more_journal, _ = rp.finish()
    assert len(more_journal) == 0
    same_state(rp, live, s)


@settings(**SETTINGS)
@given(s=streams(60), seed=st.integers(0, 2**32 - 1))
def test_a_journal_cut_by_a_crash_is_finished_by_replay_into_a_valid_journal(s, seed):
    """A crash leaves commands journaled without (all) their results. Replay, then finish,
    sequences what matching owes; the journal with those records replays cleanly again."""
    rnd = random.Random(seed)
    journal, _, _ = live_pipeline(s, rnd)
    jr = raw(journal)
    starts = R.command_bounds(jr)[:-1] or [0]
    cut = rnd.choice(starts + [len(jr)])
    rp, _ = replay(s, jr[:cut])
    more, _ = rp.finish()
    rp2, _ = replay(s, np.concatenate([jr[:cut], raw(more)]))
    again, _ = rp2.finish()
    assert len(again) == 0
    same_state(rp2, rp, s)


def _canonical(s):
    ex = Exchange(s.symbols, max_accounts=MAX_ACCOUNTS, max_orders=MAX_ORDERS, max_levels=s.max_levels,
                  fee_account=FEE_ACCOUNT, loss_asset=LOSS_ASSET.name if s.daily_loss else None)
    for c in s.commands:
        ex.submit(c)
    return R.concat(ex.journal)


@settings(**dict(SETTINGS, max_examples=25))
@given(s=streams(60), seed=st.integers(0, 2**32 - 1))
def test_a_changed_journal_record_is_a_loud_mismatch_naming_seq_and_field(s, seed):
    journal = _canonical(s)
    fills = np.flatnonzero(journal["type"] == int(RecordType.FILL))
    if not len(fills):
        return
    k = int(fills[random.Random(seed).randrange(len(fills))])
    bad = raw(journal).copy()
    fill = bad[k].view(R.FILL_DTYPE)
    fill["price_tick"] += 1
    with pytest.raises(ReplayMismatch, match=rf"journal seq {int(journal[k]['seq'])} \(FILL\) replays "
                                             rf"differently: price_tick"):
        replay(s, bad)


def test_a_result_matching_never_made_is_a_mismatch():
    from test_exchange_differential import make_symbols
    from ganntec.shm.records import StpMode

    symbols = make_symbols(StpMode.NONE, StpMode.NONE)

    class S:
        pass

    s = S()
    s.symbols, s.max_levels, s.daily_loss = symbols, 64, False
    rec = R.empty(RecordType.ORDER_CANCELED)
    rec["seq"], rec["source"], rec["flags"] = 1, R.SOURCE_MATCHING, R.FLAG_RESULT | R.FLAG_END
    with pytest.raises(ReplayMismatch, match="journal seq 1 is a result \\(ORDER_CANCELED\\) that matching did not make"):
        replay(s, rec.reshape(-1))


def funding_errors(e) -> list[str]:
    """What is wrong with risk's money while commands and results are in flight: a negative
    free or locked balance or hold, locked differing from the sum of holds, or an order open at
    matching whose hold (an OCO leg's, while risk links the legs: its list's) is less than
    matching may still spend at its price (a fill in flight is not yet taken off the hold, so
    the hold may only be bigger)."""
    from ganntec.engines.hashmap import lookup

    risk = e.risk
    errors = [f"negative balance {a}" for a in np.argwhere(risk.balances < 0).tolist()]
    errors += risk.hold_errors() + risk.conservation_errors()
    qpl, bpl = risk.symbols["quote_per_tick_lot"], risk.symbols["base_per_lot"]
    for slot in risk.hold_vals[risk.hold_keys != 0]:
        h = risk.holds[slot]
        have, oid = int(h["held_minor"]), int(h["order_id"])
        if have < 0:
            errors.append(f"order {oid}: hold {have}")
        o = e.matching.order(oid)
        if o is None:
            continue  # not at matching yet, or ended there (the result is in flight)
        if int(h["link_order_id"]):
            sib = lookup(risk.hold_keys, risk.hold_vals, int(h["link_order_id"]))
            have += int(risk.holds[sib]["held_minor"]) if sib is not None else 0
        sym = o["symbol_id"]
        if o["side"] == Side.SELL:
            need = o["leaves_lot"] * int(bpl[sym])
        elif o["price_tick"] > 0:
            need = o["price_tick"] * o["leaves_lot"] * int(qpl[sym])
        else:
            need = o["quote_left_minor"]
        if need > have:
            errors.append(f"order {oid}: risk holds {have}, matching may spend {need}")
    return errors


@settings(**{**SETTINGS, "max_examples": 80})
@given(s=streams(300, busy=True), seed=st.integers(0, 2**32 - 1), max_in_flight=st.sampled_from([4, 16]))
def test_live_interleavings_keep_every_order_funded(s, seed, max_in_flight):
    """Results sequenced between an AMEND and its answer (an OCO leg activating, another amend
    of the order, fills at the old price) never leave a hold short of what matching can still
    spend, nor a balance negative; after every order engine step."""
    def check(e):
        errors = funding_errors(e)
        assert not errors, errors

    live_pipeline(s, random.Random(seed), max_in_flight, check=check)
