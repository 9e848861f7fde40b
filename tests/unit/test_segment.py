"""Segment lifecycle: exclusive creation, 0600, ready flag, named attach outcomes, staleness,
unlink on close, and the operator-facing mlock error."""

from __future__ import annotations

import errno
import multiprocessing as mp
import os
import stat

import numpy as np
import posix_ipc
import pytest

from ganntec.shm import segment as sg
from ganntec.shm.segment import Outcome, Segment, SegmentError

MAGIC = sg.magic_of(b"GNTCTEST")
OTHER_MAGIC = sg.magic_of(b"GNTCOTHR")


def _create(instance, name="seg", size=8192, **kw):
    return Segment.create(instance, name, magic=MAGIC, layout_version=3, header_bytes=64, total_bytes=size, **kw)


def _attach(instance, name="seg", **kw):
    kw.setdefault("magic", MAGIC)
    kw.setdefault("layout_version", 3)
    return Segment.attach(instance, name, **kw)


def test_name_is_namespaced_and_validated():
    assert sg.segment_name("prod", "order.risk") == "/ganntec.prod.order.risk"
    with pytest.raises(ValueError, match="instance="):
        sg.segment_name("bad/name", "x")
    with pytest.raises(ValueError, match="segment name="):
        sg.segment_name("ok", "../x")


def test_create_is_0600_ready_and_unlinked_on_close(instance):
    seg = _create(instance)
    path = sg.SHM_DIR / f"ganntec.{instance}.seg"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert seg.magic == MAGIC
    hdr = seg.header
    assert (int(hdr["layout_version"]), int(hdr["total_bytes"]), int(hdr["creator_pid"])) == (3, 8192, os.getpid())
    assert seg.locked
    seg.close()
    assert not path.exists()


def test_double_create_is_refused_as_live(instance):
    with _create(instance):
        with pytest.raises(SegmentError) as err:
            _create(instance)
        assert err.value.outcome is Outcome.LIVE_OTHER_INSTANCE
        assert "already running" in str(err.value)


def test_attach_outcomes(instance):
    assert _attach(instance) == (Outcome.MISSING, None)
    with _create(instance):
        outcome, seg = _attach(instance)
        assert outcome is Outcome.READY and seg is not None and not seg.owner
        seg.close()  # an attacher never unlinks by default
        assert _attach(instance, layout_version=4) == (Outcome.VERSION_MISMATCH, None)
        assert _attach(instance, magic=OTHER_MAGIC) == (Outcome.WRONG_KIND, None)
        assert _attach(instance, min_header_bytes=128) == (Outcome.TOO_SHORT, None)


def test_magic_is_the_ready_flag(instance):
    seen = {}

    def init(seg):
        # While the creator fills the header, an attacher sees "not initialised".
        seen["outcome"], _ = _attach(instance)

    with _create(instance, init=init):
        pass
    assert seen["outcome"] is Outcome.NOT_INITIALISED


def test_too_short_segment(instance):
    name = sg.segment_name(instance, "short")
    shm = posix_ipc.SharedMemory(name, flags=posix_ipc.O_CREX, mode=0o600, size=16)
    shm.close_fd()
    try:
        assert _attach(instance, "short") == (Outcome.TOO_SHORT, None)
    finally:
        posix_ipc.unlink_shared_memory(name)


def _create_and_die(instance, conn):
    seg = _create(instance)
    seg.bytes[100] = 42
    conn.send(os.getpid())
    os._exit(0)  # killed: no close, no unlink


def test_leftovers_of_a_dead_process_are_stale_never_reused(instance):
    ctx = mp.get_context("fork")
    parent, child = ctx.Pipe()
    p = ctx.Process(target=_create_and_die, args=(instance, child))
    p.start()
    dead_pid = parent.recv()
    p.join(30)
    assert p.exitcode == 0
    # Attaching says stale; post-mortem tools may still read it.
    assert _attach(instance) == (Outcome.STALE, None)
    outcome, seg = _attach(instance, allow_stale=True)
    assert outcome is Outcome.STALE and seg.bytes[100] == 42
    seg.close()
    info = sg.probe(sg.segment_name(instance, "seg"))
    assert info.outcome is Outcome.STALE and info.creator_pid == dead_pid
    # Creating over it is refused with a message saying what to do.
    with pytest.raises(SegmentError) as err:
        _create(instance)
    assert err.value.outcome is Outcome.STALE and "ganntec clean" in str(err.value)
    assert sg.remove_stale(instance) == [sg.segment_name(instance, "seg")]
    with _create(instance):
        pass


def test_remove_stale_refuses_a_live_instance(instance):
    with _create(instance):
        with pytest.raises(SegmentError) as err:
            sg.remove_stale(instance)
        assert err.value.outcome is Outcome.LIVE_OTHER_INSTANCE


def test_list_segments(instance):
    with _create(instance, "a"), _create(instance, "b"):
        assert sg.list_segments(instance) == [sg.segment_name(instance, "a"), sg.segment_name(instance, "b")]


def test_mlock_failure_says_what_was_needed_and_how_to_raise_it(instance):
    def failing_mlock(address, nbytes):
        return errno.ENOMEM

    with pytest.raises(MemoryError) as err:
        _create(instance, size=1 << 20, mlock=failing_mlock)
    msg = str(err.value)
    assert "1048576 bytes" in msg and "RLIMIT_MEMLOCK" in msg and "ulimit -l" in msg and "LimitMEMLOCK=" in msg
    # Nothing half-created is left behind.
    assert sg.list_segments(instance) == []


def test_memlock_message_counts_already_locked():
    msg = sg.memlock_error("/ganntec.x.r", 4096, errno.EPERM, already_locked=8192, limit=8192)
    assert "at least 12288 bytes" in msg and "ulimit -l 12" in msg and "EPERM" in msg


def test_views_are_typed_and_bounded(instance):
    with _create(instance) as seg:
        v = seg.view(np.int64, 64, 10)
        v[:] = 7
        assert seg.bytes[64] == 7
        with pytest.raises(ValueError, match="exceeds segment"):
            seg.view(np.int64, 8000, 100)
