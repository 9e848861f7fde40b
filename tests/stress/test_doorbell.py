"""One consumer, several rings, one doorbell: producers in other processes publish on random
rings at random moments; the consumer sleeps in `wait_for_any` (spin-block with no spin
budget, so it really blocks on the shared semaphore) and must see every record, never hang
waiting for one that is already there. A hang fails through the deadline."""

from __future__ import annotations

import multiprocessing as mp
import random
import time

import numpy as np
import pytest

from ganntec.shm import wait as wt
from ganntec.shm.atomics import py_load_acquire
from ganntec.shm.ring import OFF_CONSUMER_SLEEPING, Ring, unlink_doorbells

RINGS = 3
PER_PRODUCER = 3000
DEADLINE_S = 120.0


def _until_consumer_sleeps(instance: str) -> None:
    """Halfway, a spin-block consumer must be seen asleep: every producer holds back until the
    consumer's sleep flags are up on every ring at once, which it does only on its way into the
    semaphore (with one ring still holding data it takes them down again and goes on)."""
    rings = [Ring.attach(instance, f"in.{k}") for k in range(RINGS)]
    deadline = time.monotonic() + 30
    try:
        while not all(py_load_acquire(r.address + OFF_CONSUMER_SLEEPING) for r in rings):
            assert time.monotonic() < deadline, "the consumer never went to sleep"
    finally:
        for r in rings:
            r.close(unlink=False)


def _produce(instance: str, name: str, seed: int, start: mp.Event, await_sleep: bool) -> None:
    ring = Ring.attach(instance, name, role="producer")
    rnd = random.Random(seed)
    wait = wt.make("spin-block", spin_us=0, yields=0)
    start.wait(30)
    sent = 0
    try:
        while sent < PER_PRODUCER:
            if await_sleep and sent >= PER_PRODUCER // 2:
                _until_consumer_sleeps(instance)
                await_sleep = False
            k = min(rnd.randint(1, 8), PER_PRODUCER - sent)
            batch = np.zeros((k, 128), np.uint8)
            batch.view(np.int64)[:, 0] = np.arange(sent, sent + k)
            ring.push_all(batch, wait, 30)
            sent += k
            if rnd.random() < 0.3:  # sometimes let the consumer fall asleep
                wait.wait_for_space(ring, ring.capacity, 0.002)
    finally:
        ring.close(unlink=False)


@pytest.mark.parametrize("strategy", ["spin-block", "spin-yield", "busy-spin"])
def test_wait_for_any_sees_every_record_of_every_ring(instance, strategy):
    names = [f"in.{k}" for k in range(RINGS)]
    rings = [Ring.create(instance, n, 16, lock_memory=False, doorbell=1) for n in names]
    ctx = mp.get_context("fork")
    start = ctx.Event()
    procs = [ctx.Process(target=_produce, args=(instance, n, k, start, strategy == "spin-block"))
             for k, n in enumerate(names)]
    consumers = [Ring.attach(instance, n, role="consumer") for n in names]
    wait = wt.make(strategy, **({"spin_us": 0, "yields": 0} if strategy == "spin-block" else {}))
    try:
        for p in procs:
            p.start()
        start.set()
        got = [0] * RINGS
        out = np.zeros((16, 128), np.uint8)
        deadline = time.monotonic() + DEADLINE_S
        while sum(got) < RINGS * PER_PRODUCER:
            assert time.monotonic() < deadline, f"stuck at {got}"
            moved = 0
            for k, ring in enumerate(consumers):
                n = ring.pop(out)
                seqs = out[:n].view(np.int64)[:, 0]
                assert np.array_equal(seqs, np.arange(got[k], got[k] + n)), f"ring {k}: out of order"
                got[k] += n
                moved += n
            if not moved:
                wait.wait_for_any(consumers, 5.0)
        for p in procs:
            p.join(30)
            assert p.exitcode == 0
        if strategy == "spin-block":
            assert wait.sleeps > 0  # the shared semaphore really was slept on
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join()
        for r in consumers:
            r.close(unlink=False)
        for r in rings:
            r.close(unlink=True)
        unlink_doorbells(instance, [1])


def test_spin_block_refuses_rings_without_one_doorbell(instance):
    a = Ring.create(instance, "a", 16, lock_memory=False, doorbell=1)
    b = Ring.create(instance, "b", 16, lock_memory=False)
    try:
        with pytest.raises(ValueError, match="one shared doorbell"):
            wt.make("spin-block", spin_us=0, yields=0).wait_for_any([a, b], 0.01)
        # a doorbell survives its rings until the instance's creator unlinks it
        a.close(unlink=True)
        c = Ring.create(instance, "c", 16, lock_memory=False, doorbell=1)
        assert c.doorbell == 1
        c.close(unlink=True)
    finally:
        a.close(unlink=True)
        b.close(unlink=True)
        unlink_doorbells(instance, [1])
