"""Snapshots: a snapshot plus the journal after it gives the same engines, byte for byte, as
replaying the whole journal; recovery takes the newest snapshot that fits and falls back when
none does."""

from __future__ import annotations

import os
import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ganntec.journal.journal import JournalWriter
from ganntec.journal.replay import Replayer
from ganntec.journal.snapshot import (SnapshotMismatch, list_snapshots, recover, restore, save, snapshot_arrays,
                                      snapshot_name)
from ganntec.shm import records as R
from test_exchange_differential import streams
from test_replay import SETTINGS, live_pipeline, params, raw


def same_arrays(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
        assert a[k].tobytes() == b[k].tobytes(), k


def full_replay(s, journal) -> tuple[Replayer, np.ndarray]:
    rp = Replayer(**params(s), max_in_flight=64)
    return rp, rp.feed(journal)


@settings(**SETTINGS)
@given(s=streams(60), seed=st.integers(0, 2**32 - 1))
def test_snapshot_plus_tail_equals_full_replay_byte_for_byte(s, seed, tmp_path_factory):
    rnd = random.Random(seed)
    journal, _, _ = live_pipeline(s, rnd)
    jr = raw(journal)
    rp_full, edge_full = full_replay(s, jr)
    k = rnd.randint(0, len(jr))  # anywhere, even inside a command (it waits for the rest)
    rp1 = Replayer(**params(s), max_in_flight=64)
    edge_head = rp1.feed(jr[:k])
    d = str(tmp_path_factory.mktemp("snap"))
    path = save(rp1, d)
    seq = rp1.order.seq
    assert os.path.basename(path) == snapshot_name(seq) and list_snapshots(d) == [(seq, path)]
    rp2 = Replayer(**params(s), max_in_flight=64)
    assert restore(rp2, path) == seq
    same_arrays(snapshot_arrays(rp2), snapshot_arrays(rp1))
    tail = jr[journal["seq"] > seq]
    edge_tail = rp2.feed(tail)
    same_arrays(snapshot_arrays(rp2), snapshot_arrays(rp_full))
    assert np.array_equal(raw(R.concat([edge_head, edge_tail])), raw(edge_full))
    more2, _ = rp2.finish()
    more_full, _ = rp_full.finish()
    assert np.array_equal(raw(more2), raw(more_full))


@settings(**dict(SETTINGS, max_examples=15))
@given(s=streams(60), seed=st.integers(0, 2**32 - 1))
def test_recover_takes_the_newest_snapshot_that_fits_then_the_journal(s, seed, tmp_path_factory):
    rnd = random.Random(seed)
    journal, _, _ = live_pipeline(s, rnd)
    jr = raw(journal)
    root = tmp_path_factory.mktemp("rec")
    jdir, sdir = str(root / "journal"), str(root / "snapshots")
    with JournalWriter(jdir, "os") as w:
        w.append(jr)
    rp_full, _ = full_replay(s, jr)
    cuts = sorted(rnd.sample(range(len(jr) + 1), min(3, len(jr) + 1)))
    for k in cuts:
        rp = Replayer(**params(s), max_in_flight=64)
        rp.feed(jr[:k])
        save(rp, sdir)
    newest_seq, newest = list_snapshots(sdir)[0]
    with open(newest, "r+b") as f:  # the newest is damaged: recovery uses the one before
        f.truncate(100)
    rp, base, _ = recover(lambda: Replayer(**params(s), max_in_flight=64), jdir, sdir)
    older = [q for q, _ in list_snapshots(sdir)[1:]]
    assert base == (older[0] if older else 0)
    same_arrays(snapshot_arrays(rp), snapshot_arrays(rp_full))


def _tiny_stream():
    from hypothesis import find

    return find(streams(10), lambda s: len(s.commands) >= 5)


def test_a_snapshot_of_another_configuration_is_refused(tmp_path):
    s = _tiny_stream()
    rp = Replayer(**params(s), max_in_flight=64)
    path = save(rp, str(tmp_path))
    other = dict(params(s), max_orders=params(s)["max_orders"] * 2)
    with pytest.raises(SnapshotMismatch, match="another configuration"):
        restore(Replayer(**other, max_in_flight=64), path)
    syms = params(s)["symbols"].copy()
    syms["maker_fee_e8"] += 1
    with pytest.raises(SnapshotMismatch, match="differ from the configured symbols"):
        restore(Replayer(**dict(params(s), symbols=syms), max_in_flight=64), path)
    with open(path, "wb") as f:
        f.write(b"not a zip")
    with pytest.raises(SnapshotMismatch, match="unreadable"):
        restore(Replayer(**params(s), max_in_flight=64), path)


def test_only_a_replayer_in_replay_makes_snapshots(tmp_path):
    s = _tiny_stream()
    rp = Replayer(**params(s), max_in_flight=64)
    rp.finish()
    with pytest.raises(ValueError, match="not finished"):
        save(rp, str(tmp_path))
    (tmp_path / "junk.snapshot.npz.tmp").write_bytes(b"half written")
    assert list_snapshots(str(tmp_path)) == []
