"""The workers' publishing rules: reports in batches that end where a journal sequence ends
(so the last sequence on the reports ring tells recovery exactly what is missing), and risk
never waiting on matching's ring."""

from __future__ import annotations

import threading

import numpy as np

from ganntec.engines.order import OrderEngine
from ganntec.engines.symbols import Asset, Symbol, symbol_table
from ganntec.exchange import Exchange
from ganntec.journal.journal import JournalWriter
from ganntec.shm import records as R
from ganntec.shm import wait as W
from ganntec.shm.records import Side
from ganntec.shm.ring import Ring
from ganntec.workers.driver import InProcessDriver
from ganntec.workers.runtime import (
    MATCHING_ORDER,
    ORDER_RISK,
    RISK_MATCHING,
    RISK_POSITION,
    OrderWorker,
    RiskWorker,
    last_reported_seq,
    publish_turn,
    warm_up,
)

BTC, USDT = Asset(0, "BTC", 8), Asset(1, "USDT", 8)
SYM = Symbol(0, "BTCUSDT", BTC, USDT, tick_size="0.01", step_size="0.001", min_price="0.01", max_price="1000000",
             min_qty="0.001", max_qty="1000")


def test_batches_end_at_sequence_boundaries_and_keep_order(instance):
    seqs = [1] * 3 + [2] * 4 + [3] * 3 + [4] * 8
    recs = R.empty(R.RecordType.BALANCE, len(seqs))
    recs["seq"] = seqs
    recs["source_seq"] = np.arange(len(seqs))
    with Ring.create(instance, "reports", 8, role="producer", lock_memory=False) as ring, \
            Ring.attach(instance, "reports", role="consumer") as cons:
        assert last_reported_seq(ring) == 0
        got, batches = [], []
        out = np.zeros((8, R.RECORD_BYTES), np.uint8)
        done = threading.Event()

        def consume():
            wait = W.make("spin-block")
            while len(got) < len(seqs):
                n = cons.pop_into(out, wait, 5.0)
                rs = out[:n].view(R.RECORD_DTYPE).reshape(-1)
                batches.append(rs["seq"].tolist())
                got.extend(rs["source_seq"].tolist())
            done.set()

        t = threading.Thread(target=consume)
        t.start()
        publish_turn(ring, recs, W.make("spin-block"))
        assert done.wait(30)
        t.join()
        assert got == list(range(len(seqs)))
        assert ring.stats().publishes == 3  # [1 1 1 2 2 2 2], [3 3 3], [4 x 8]
        assert last_reported_seq(ring) == 4


def test_risk_never_waits_for_room_on_matchings_ring(instance):
    """Deadlock freedom of the per-engine cycle rests on risk: records for a full matching ring
    wait in its spill list, in order, and the turn returns; later turns hand them over."""
    ex = Exchange([SYM], max_accounts=16)
    ex.open_account(1)
    ex.deposit(1, "USDT", "100000")
    seq, _, _ = ex.driver.order.process(commands=ex.limit_orders(1, Side.BUY, [100 + k for k in range(10)], [1] * 10))
    rings = {name: Ring.create(instance, name, cap, lock_memory=False)
             for name, cap in ((ORDER_RISK, 16), (RISK_MATCHING, 2), (RISK_POSITION, 64))}
    ends = [Ring.attach(instance, ORDER_RISK, role="producer"), Ring.attach(instance, ORDER_RISK, role="consumer"),
            Ring.attach(instance, RISK_MATCHING, role="producer"), Ring.attach(instance, RISK_MATCHING, role="consumer"),
            Ring.attach(instance, RISK_POSITION, role="producer"), Ring.attach(instance, RISK_POSITION, role="consumer")]
    try:
        worker = RiskWorker(ex.driver.risk, ends[1], ends[2], ends[4], W.make("spin-block"), 400)
        assert ends[0].push(np.ascontiguousarray(seq)) == 10
        turned = threading.Thread(target=worker.turn)
        turned.start()
        turned.join(30)
        assert not turned.is_alive(), "risk waited for room on matching's ring"
        assert ends[3].readable() == 2 and sum(len(s) for s in worker.spill) == 8
        out, got = np.zeros((2, R.RECORD_BYTES), np.uint8), []
        for _ in range(5):
            n = ends[3].pop(out)
            got += out[:n].view(R.RECORD_DTYPE).reshape(-1)["seq"].tolist()
            worker.turn()
        assert got == seq["seq"].tolist()[:10] and not worker.spill  # every order, in order
        assert ends[5].readable() > 0  # the settled side went on meanwhile
    finally:
        for r in ends:
            r.close(unlink=False)
        for r in rings.values():
            r.close(unlink=True)


def test_warm_up_compiles_every_entry_a_worker_calls_without_changing_state():
    d = InProcessDriver(symbol_table([SYM]), 2)
    before = [e.control.copy() for e in (d.order, d.risk, d.matching, d.position)]
    for dispatcher in warm_up(d):
        assert dispatcher.signatures, dispatcher  # compiled (or loaded) for the workers to inherit
    assert d.order.seq == 0 and not d.matching.pending
    for e, b in zip((d.order, d.risk, d.matching, d.position), before):
        moved = np.flatnonzero(e.control != b)
        assert len(moved) <= 4, (type(e).__name__, moved)  # at most the call's scratch slots (output address...)


def test_out_of_credits_the_order_worker_waits_for_results_only(instance, tmp_path):
    """Commands it may not admit must not wake it (it would spin on them)."""
    ex = Exchange([SYM], max_accounts=16)  # builds the commands
    engine = OrderEngine(symbol_table([SYM]), max_in_flight=1)
    names = ["cmd.0", "cmd.1", MATCHING_ORDER, ORDER_RISK]
    rings = [Ring.create(instance, n, 16, lock_memory=False) for n in names]
    ends = [Ring.attach(instance, n, role="consumer" if n != ORDER_RISK else "producer") for n in names]
    feed = Ring.attach(instance, "cmd.1", role="producer")
    try:
        with JournalWriter(str(tmp_path / "j"), "os") as journal:
            worker = OrderWorker(engine, journal, ends[:2], ends[2], ends[3], W.make("spin-yield"), 400)
            assert worker.waiting_on() == [ends[2], ends[0], ends[1]]
            feed.push(np.ascontiguousarray(ex.limit_orders(1, Side.BUY, [100, 101], [1, 1])))
            assert worker.turn()  # admits one: the credit is used
            assert engine.in_flight == 1 and worker.cmds[1].n == 1  # the other waits in its inbox
            assert worker.waiting_on() == [ends[2]]
            assert not worker.turn()
    finally:
        for r in ends + [feed]:
            r.close(unlink=False)
        for r in rings:
            r.close(unlink=True)
