"""SPSC ring in one process: protocol, wrap-around, roles, stats, wake flags, memory size,
and guards on the compiled code (atomic loads, no NRT refcounting in hot functions)."""

from __future__ import annotations

import multiprocessing as mp
import re

import numpy as np
import pytest

from ganntec.shm import ring as rg
from ganntec.shm import wait as wt
from ganntec.shm.records import NEW_ORDER_DTYPE, RecordType, empty
from ganntec.shm.ring import Ring
from ganntec.shm.segment import Outcome, SegmentError


def _rows(start, n, words=8):
    out = np.zeros((n, words), np.int64)
    out[:, 0] = np.arange(start, start + n)
    out[:, words - 1] = -out[:, 0]
    return out


@pytest.fixture
def pair(instance):
    prod = Ring.create(instance, "r", 8, 64, role=rg.PRODUCER)
    cons = Ring.attach(instance, "r", rg.CONSUMER)
    yield prod, cons
    cons.close()
    prod.close()


def test_memory_is_header_plus_slots(instance):
    with Ring.create(instance, "big", 1024, 128) as r:
        assert r.segment.size == rg.SLOTS_OFFSET + 1024 * 128 == rg.ring_bytes(1024, 128)


@pytest.mark.parametrize("capacity, slot", [(3, 64), (0, 64), (8, 96), (8, 32)])
def test_bad_geometry_is_refused(instance, capacity, slot):
    with pytest.raises(ValueError, match="capacity=|slot_bytes="):
        Ring.create(instance, "bad", capacity, slot)


def test_push_pop_wraps_in_order(pair):
    prod, cons = pair
    out = np.zeros((8, 8), np.int64)
    expect = 0
    for batch in [1, 3, 8, 5, 7, 2, 8, 8, 1]:
        assert prod.push(_rows(expect, batch)) == batch
        got = cons.pop(out)
        assert got == batch
        assert list(out[:got, 0]) == list(range(expect, expect + batch))
        assert list(out[:got, 7]) == [-x for x in range(expect, expect + batch)]
        expect += batch
    s = prod.stats()
    assert (s.head, s.tail, s.fill) == (expect, expect, 0)


def test_full_ring_pushes_only_what_fits(pair):
    prod, cons = pair
    assert prod.push(_rows(0, 12)) == 8
    assert prod.push(_rows(8, 1)) == 0
    assert prod.stats().full_claims >= 1
    out = np.zeros((3, 8), np.int64)
    assert cons.pop(out) == 3
    assert prod.push(_rows(8, 5)) == 3
    assert cons.readable() == 8


def test_empty_ring_pops_nothing(pair):
    _, cons = pair
    assert cons.pop(np.zeros((4, 8), np.int64)) == 0
    assert cons.stats().empty_peeks >= 1


def test_records_of_the_wrong_size_are_refused(pair):
    prod, _ = pair
    with pytest.raises(ValueError, match="rows of 64 bytes"):
        prod.push(np.zeros((2, 4), np.int64))


def test_128_byte_records_round_trip(instance):
    with Ring.create(instance, "cmd", 16, 128) as r:
        recs = empty(RecordType.NEW_ORDER, 5)
        recs["price_tick"] = np.arange(5) * 100
        recs["client_order_id"] = [b"abc-%d" % i for i in range(5)]
        assert r.push(recs) == 5
        out = np.zeros(5, NEW_ORDER_DTYPE)
        assert r.pop(out) == 5
        assert out.tobytes() == recs.tobytes()
        assert r.slots_view(NEW_ORDER_DTYPE).shape == (16,)


def _try_attach(instance, role, conn):
    try:
        Ring.attach(instance, "r", role).close()
        conn.send("attached")
    except SegmentError as err:
        conn.send(err.outcome.value)


def _attach_from_child(instance, role):
    ctx = mp.get_context("fork")
    parent, child = ctx.Pipe()
    p = ctx.Process(target=_try_attach, args=(instance, role, child))
    p.start()
    try:
        assert parent.poll(60), "child did not answer"
        return parent.recv()
    finally:
        p.join(30)
        if p.is_alive():
            p.kill()


def test_one_producer_one_consumer(pair, instance):
    prod, cons = pair
    assert _attach_from_child(instance, rg.PRODUCER) == Outcome.LIVE_OTHER_INSTANCE.value
    assert _attach_from_child(instance, rg.CONSUMER) == Outcome.LIVE_OTHER_INSTANCE.value
    cons.close()  # gives the role back
    assert _attach_from_child(instance, rg.CONSUMER) == "attached"
    assert prod.stats().consumer_pid == 0


def test_attach_missing_ring_names_the_outcome(instance):
    with pytest.raises(SegmentError) as err:
        Ring.attach(instance, "nope", rg.CONSUMER)
    assert err.value.outcome is Outcome.MISSING


def test_wake_flag_is_claimed_once(pair):
    prod, cons = pair
    base = prod.address
    # Consumer arms its sleep on an empty ring: the producer's publish must claim the flag.
    assert wt._arm_sleep(base, rg.OFF_CONSUMER_SLEEPING, False, 1) == -1
    assert rg.publish_wake(base, 0) == 1
    assert rg.publish_wake(base, 0) == 0  # claimed: no second post for the same sleep
    assert prod.stats().data_posts == 1
    # Arming with data present withdraws the flag at once.
    assert prod.push(_rows(0, 2)) == 2
    assert wt._arm_sleep(base, rg.OFF_CONSUMER_SLEEPING, False, 1) == 2
    assert prod.segment.view(rg.RING_HEADER_DTYPE, 0, 1)[0]["consumer_sleeping"] == 0
    assert rg.publish_wake(base, 0) == 0


def test_blocking_wrappers_move_everything(pair):
    prod, cons = pair
    strategy = wt.SpinBlock(spin_us=1, yields=1)
    assert prod.push_all(_rows(0, 8), strategy) == 8
    out = np.zeros((8, 8), np.int64)
    assert cons.pop_into(out, strategy) == 8
    # Nothing to read: a bounded wait returns 0 instead of hanging.
    assert cons.pop_into(out, strategy, timeout_s=0.0) == 0


def test_heartbeats_land_on_each_side(pair):
    prod, cons = pair
    prod.heartbeat(111)
    cons.heartbeat(222)
    s = prod.stats()
    assert (s.producer_heartbeat_ns, s.consumer_heartbeat_ns) == (111, 222)


# --- guards on the generated code ----------------------------------------------------------
# numba returns nothing to inspect for code loaded from its cache, so the guards compile the
# hot functions afresh in a child process with an empty cache directory and report on them.
_GUARD_SCRIPT = r"""
import re, sys, json
import numpy as np
from numba import typeof
from ganntec.shm import ring as rg, wait as wt
b = np.int64(0)
sigs = {
    "claim": (rg.claim, (b, b)), "peek": (rg.peek, (b, b)), "publish": (rg.publish, (b, b)),
    "release": (rg.release, (b, b)), "publish_wake": (rg.publish_wake, (b, b)),
    "release_wake": (rg.release_wake, (b, b)), "push_copy": (rg.push_copy, (b, b, b, True)),
    "pop_copy": (rg.pop_copy, (b, b, b, True)), "spin_until_readable": (wt.spin_until_readable, (b, b, b)),
    "spin_until_writable": (wt.spin_until_writable, (b, b, b)),
}
from numba import njit


@njit
def _array_helper(a):
    return a[0]


@njit
def _control(a):  # the pattern the rules forbid: a small array-taking helper
    return _array_helper(a[1:]) + 1


sigs["control"] = (_control, (np.zeros(3, np.int64),))
report = {}
for name, (fn, args) in sigs.items():
    sig = tuple(typeof(a) for a in args)
    fn.compile(sig)
    report[name] = {"llvm": fn.inspect_llvm(sig), "asm": fn.inspect_asm(sig)}
json.dump(report, sys.stdout)
"""


@pytest.fixture(scope="module")
def codegen(tmp_path_factory):
    import json
    import os
    import subprocess
    import sys

    env = dict(os.environ, GANNTEC_NUMBA_CACHE_DIR=str(tmp_path_factory.mktemp("numba-cold")))
    out = subprocess.run([sys.executable, "-c", _GUARD_SCRIPT], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert all(r["asm"].count("\n") > 10 for r in report.values()), "nothing compiled to inspect"
    return report


@pytest.mark.parametrize("name", ["claim", "peek", "spin_until_readable", "spin_until_writable", "push_copy", "pop_copy"])
def test_hot_functions_load_the_other_side_with_acquire(codegen, name):
    assert re.search(r"load atomic i64, (i64\*|ptr) .*acquire", codegen[name]["llvm"])


@pytest.mark.parametrize("name", ["publish", "release", "publish_wake", "release_wake", "push_copy", "pop_copy"])
def test_publishes_are_release_stores(codegen, name):
    assert re.search(r"store atomic i64 .* release", codegen[name]["llvm"])


def test_wake_paths_fence_before_reading_the_flag(codegen):
    for name in ("publish_wake", "release_wake"):
        assert "fence seq_cst" in codegen[name]["llvm"]


def test_spin_loops_pause_and_reload_inside_the_loop(codegen):
    for name in ("spin_until_readable", "spin_until_writable"):
        asm = codegen[name]["asm"]
        assert "pause" in asm
        # A hoisted load compiles to a label that jumps to itself.
        assert not re.search(r"^(\.LBB\d+_\d+):\s*\n\s+jmp\s+\1\s*$", asm, re.M)


@pytest.mark.parametrize("name", ["claim", "peek", "publish", "release", "publish_wake", "release_wake",
                                  "push_copy", "pop_copy", "spin_until_readable", "spin_until_writable"])
def test_hot_functions_have_no_refcounting(codegen, name):
    assert "NRT_decref" in codegen["control"]["asm"], "the detector must see the forbidden pattern"
    asm = codegen[name]["asm"]
    assert "NRT_incref" not in asm and "NRT_decref" not in asm
