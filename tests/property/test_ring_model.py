"""Property: any interleaving of pushes and pops on one ring behaves like a bounded FIFO."""

from __future__ import annotations

import collections
import uuid

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from ganntec.shm.ring import Ring
from ganntec.shm.segment import list_segments

ops = st.lists(st.tuples(st.sampled_from(["push", "pop"]), st.integers(0, 20)), max_size=60)


@settings(max_examples=60, deadline=None)
@given(capacity_log2=st.integers(1, 5), ops=ops)
def test_ring_is_a_bounded_fifo(capacity_log2, ops):
    capacity = 1 << capacity_log2
    instance = "p" + uuid.uuid4().hex[:12]
    model: collections.deque[int] = collections.deque()
    counter = 0
    with Ring.create(instance, "fifo", capacity, 64, lock_memory=False) as ring:
        for op, n in ops:
            if op == "push":
                rows = np.zeros((n, 8), np.int64)
                rows[:, 0] = np.arange(counter, counter + n)
                pushed = ring.push(rows)
                assert pushed == min(n, capacity - len(model))
                model.extend(range(counter, counter + pushed))
                counter += pushed
            else:
                out = np.zeros((n, 8), np.int64)
                got = ring.pop(out)
                assert got == min(n, len(model))
                assert list(out[:got, 0]) == [model.popleft() for _ in range(got)]
            assert ring.readable() == len(model)
    assert list_segments(instance) == []


@given(st.sets(st.integers(0, 200)))
def test_cpulist_round_trip(cpus):
    from ganntec.cpulist import format_cpulist, parse_cpulist

    assert parse_cpulist(format_cpulist(cpus)) == cpus
