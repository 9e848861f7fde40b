"""The engine worker publishes reports in batches that end where a journal sequence ends, so
the last sequence on the reports ring tells recovery exactly what is missing."""

from __future__ import annotations

import threading

import numpy as np

from ganntec.shm import records as R
from ganntec.shm import wait as W
from ganntec.shm.ring import Ring
from ganntec.workers.runtime import last_reported_seq, publish_turn


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
