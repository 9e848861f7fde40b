"""The per-engine workers over real rings, each in its own thread (their compiled steps
release the GIL), with rings of 16 slots so every link fills up and back-pressure is on all
the time. Commands are the exchange differential's streams (every command kind, retries,
admin commands on cmd.0, two edges). Afterwards: the journal replays with every record
verified, the reports are exactly replay's edge stream, money and holds add up, every
command is journaled once, and the workers stop cleanly in pipeline order. A deadlock fails
through the deadline."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

from ganntec.journal.journal import JournalReader, JournalWriter
from ganntec.journal.replay import Replayer
from ganntec.shm import records as R
from ganntec.shm import wait as W
from ganntec.shm.ring import Ring, unlink_doorbells
from ganntec.workers import runtime as rt
from ganntec.workers.driver import InProcessDriver

sys.path.insert(0, str(Path(__file__).parents[1] / "property"))
from test_exchange_differential import streams  # noqa: E402
from test_replay import params, raw  # noqa: E402

CAP = 16
DEADLINE_S = 120.0


class Pipeline:
    """Rings (as the supervisor creates them), the four workers, one thread each."""

    def __init__(self, instance: str, s, jdir: Path, wait_name: str, max_in_flight: int):
        self.instance = instance
        names = [rt.cmd_ring(k) for k in range(3)] + [rt.reports_ring(1)] + list(rt.INTERNAL_RINGS)
        bell = {n: rt.ORDER_DOORBELL for n in names if n.startswith("cmd.") or n == rt.MATCHING_ORDER}
        self.owned = [Ring.create(instance, n, CAP, lock_memory=False, doorbell=bell.get(n, 0)) for n in names]
        self.ends: list[Ring] = []
        engines = InProcessDriver(**params(s))
        engines.order.max_in_flight = max_in_flight
        self.engines = engines
        wait = W.make(wait_name)
        hb = 400
        cons, prod = (lambda n: self._end(n, "consumer")), (lambda n: self._end(n, "producer"))
        self.journal = JournalWriter(str(jdir), "os", 1 << 24)
        self.order = rt.OrderWorker(engines.order, self.journal, [cons(rt.cmd_ring(k)) for k in range(3)],
                                    cons(rt.MATCHING_ORDER), prod(rt.ORDER_RISK), wait, hb)
        self.risk = rt.RiskWorker(engines.risk, cons(rt.ORDER_RISK), prod(rt.RISK_MATCHING), prod(rt.RISK_POSITION),
                                  wait, hb)
        self.matching = rt.MatchingWorker(engines.matching, cons(rt.RISK_MATCHING), prod(rt.MATCHING_ORDER), wait, hb)
        self.position = rt.PositionWorker(engines.position, cons(rt.RISK_POSITION), [prod(rt.reports_ring(1))], wait, hb)
        self.workers = [self.order, self.risk, self.matching, self.position]
        self.errors: list[BaseException] = []
        self.threads = [threading.Thread(target=self._run, args=(w,), daemon=True) for w in self.workers]
        self.cmds = [prod(rt.cmd_ring(k)) for k in range(3)]
        self.reports = cons(rt.reports_ring(1))

    def _end(self, name: str, role: str) -> Ring:
        ring = Ring.attach(self.instance, name, role=role)  # one pid holds every role: allowed
        self.ends.append(ring)
        return ring

    def _run(self, worker):
        try:
            worker.run()
        except BaseException as exc:  # noqa: BLE001 - surfaced by the test
            self.errors.append(exc)
        finally:  # as the worker process's exit would: downstream sees its producer gone
            if worker is self.order:
                self.order.out.close(unlink=False)
            elif worker is self.risk:
                self.risk.to_matching.close(unlink=False)
                self.risk.to_position.close(unlink=False)

    def close(self):
        for w in self.workers:
            w.stop = True
        for r in self.ends:
            r.close(unlink=False)
        for r in self.owned:
            r.close(unlink=True)
        unlink_doorbells(self.instance, [rt.ORDER_DOORBELL])
        self.journal.close()


def _route(cmd: np.ndarray) -> int:
    src = int(cmd["source"])
    return src if src in (0, 1, 2) else 1


@settings(deadline=None, max_examples=30,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture])
@given(s=streams(150))
@pytest.mark.parametrize("wait_name", ["spin-block", "spin-yield"])
def test_per_engine_workers_under_constant_back_pressure(instance, tmp_path_factory, wait_name, s):
    jdir = tmp_path_factory.mktemp("journal")
    p = Pipeline(instance, s, jdir, wait_name, max_in_flight=8)
    try:
        for t in p.threads:
            t.start()
        cmds = R.as_records(s.commands)
        bounds = R.command_bounds(cmds)
        got = []
        out = np.zeros((CAP, R.RECORD_BYTES), np.uint8)
        deadline = time.monotonic() + DEADLINE_S

        def drain() -> int:
            n = p.reports.pop(out)
            if n:
                got.append(out[:n].copy())
            return n

        def wait_until(done, what: str) -> None:
            while not done():
                if not drain():
                    W.make(wait_name).wait_for_data(p.reports, 1, 0.05)
                assert time.monotonic() < deadline and not p.errors, p.errors or f"stuck {what}"

        for a, b in zip(bounds[:-1], bounds[1:]):  # a command's records in one publish, as an edge does
            ring, one = p.cmds[_route(cmds[a])], raw(cmds[a:b])
            wait_until(lambda: ring.capacity - ring.readable() >= len(one), "sending")
            assert ring.push(one) == len(one)
        wait_until(lambda: all(r.readable() == 0 for r in p.cmds) and all(i.n == 0 for i in p.order.cmds),
                   "until every command is taken")
        for w in p.workers:  # order finishes what it admitted, then each stage after its upstream
            w.stop = True
        wait_until(lambda: not any(t.is_alive() for t in p.threads) and p.reports.readable() == 0, "stopping")
        assert not p.errors, p.errors
        # Everything the commands rings held was taken (only order's own stop could leave any).
        assert all(r.readable() == 0 for r in p.cmds) and all(i.n == 0 for i in p.order.cmds)
        p.journal.sync()
        journal = JournalReader(str(jdir)).records()
        rp = Replayer(**params(s), max_in_flight=8)
        edge = rp.feed(journal)  # every record verified
        assert np.array_equal(raw(edge), raw(R.concat(got) if got else np.zeros((0, 128), np.uint8)))
        assert p.engines.order.in_flight == 0
        assert rp.risk.conservation_errors() == [] and rp.risk.hold_errors() == []
        jr = R.as_records(journal)
        # Once each: an edge command's records (a refused list's records stand alone, each its
        # own refusal) carry one (source, source_seq) and consecutive sequences; a second
        # application would be a second run of sequences.
        sent = jr[(jr["flags"] & R.FLAG_RESULT == 0) & np.isin(jr["source"], [1, 2])]
        for key in set(zip(sent["source"].tolist(), sent["source_seq"].tolist())):
            seqs = sent["seq"][(sent["source"] == key[0]) & (sent["source_seq"] == key[1])]
            assert seqs[-1] - seqs[0] + 1 == len(seqs) <= 4, f"edge command {key} journaled at sequences {seqs}"
    finally:
        p.close()
