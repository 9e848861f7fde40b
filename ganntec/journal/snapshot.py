"""Snapshots: every engine's state arrays, and what is in flight between them, as of one
journal sequence, made by the replayer off the hot path (`ganntec.journal.replay`).

A snapshot is one uncompressed `.npz` file, `<seq, 20 digits>.snapshot.npz` in the snapshot
directory, written to a temporary name, fsynced and renamed, so a snapshot that exists is
complete. It holds, as arrays named `<engine>.<attribute>`:
  * each engine's public numpy attributes, its control block included; the control slots that
    hold this process's addresses (each engine's LOCAL_SLOTS) are not restored; structured
    arrays as their raw bytes, with their dtype (names, offsets) beside them to check;
  * `driver.state`, `driver.a` (records risk made that matching has not taken) and `driver.q`
    (results matching made that the journal has not shown yet);
  * `meta`: layout version, the last sequence included, records replayed.
Restoring needs engines built with the same configuration: every array must match in shape
and dtype, and the symbol tables byte for byte, or the snapshot is refused
(`SnapshotMismatch`) and recovery uses an older one or the whole journal.

Recovery (`recover`): the newest snapshot that restores, then the journal after its sequence,
replayed and verified; then the caller finishes the replay and goes live.
"""

from __future__ import annotations

import os
import re
import zipfile

import numpy as np

from ganntec.engines import matching, order, position, risk
from ganntec.journal.journal import JournalReader, fsync_dir
from ganntec.journal.replay import DS_QN, DS_QPOS, Replayer
from ganntec.shm import records as R
from ganntec.workers.driver import DS_A

SNAPSHOT_VERSION = 1
SUFFIX = ".snapshot.npz"
_NAME = re.compile(r"^(\d{20})\.snapshot\.npz$")
ENGINES = {"order": order, "risk": risk, "matching": matching, "position": position}


class SnapshotMismatch(Exception):
    """A snapshot that does not fit these engines (another configuration or layout)."""


def _arrays_of(engine) -> dict[str, np.ndarray]:
    return {k: v for k, v in vars(engine).items() if isinstance(v, np.ndarray) and not k.startswith("_")}


def snapshot_arrays(rp: Replayer) -> dict[str, np.ndarray]:
    """Everything a snapshot holds, by name (control blocks with their local slots zeroed, so
    two snapshots of the same state are byte-identical whatever process made them)."""
    out: dict[str, np.ndarray] = {}
    for name, module in ENGINES.items():
        for attr, arr in _arrays_of(getattr(rp, name)).items():
            if attr == "control":
                arr = arr.copy()
                arr[list(module.LOCAL_SLOTS)] = 0
            if arr.dtype.names:  # structured rows as raw bytes (.npz drops bytes between fields)
                out[f"{name}.{attr}.dtype"] = np.array(repr(arr.dtype))
                arr = arr.view(np.uint8).reshape(len(arr), arr.dtype.itemsize)
            out[f"{name}.{attr}"] = arr
    n_a = int(rp.state[DS_A])
    qpos, qn = int(rp.state[DS_QPOS]), int(rp.state[DS_QN])
    state = rp.state.copy()
    state[DS_QPOS], state[DS_QN] = 0, qn - qpos  # where in m_buf the results sit is not state
    out["driver.state"] = state
    out["driver.a"] = rp._a[:n_a]
    out["driver.q"] = rp._m[qpos:qn]
    out["meta"] = np.array([SNAPSHOT_VERSION, rp.order.seq, rp.replayed], np.int64)
    return out


def snapshot_name(seq: int) -> str:
    return f"{seq:020d}{SUFFIX}"


def save(rp: Replayer, directory: str) -> str:
    """Write the replayer's state as a snapshot (atomically); returns its path."""
    if not rp.order.replay:
        raise ValueError("snapshots are made by a replayer that has not finished")
    os.makedirs(directory, exist_ok=True)
    seq = rp.order.seq
    path = os.path.join(directory, snapshot_name(seq))
    tmp = path + ".tmp"
    with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as f:
        np.savez(f, **snapshot_arrays(rp))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(directory)
    return path


def list_snapshots(directory: str) -> list[tuple[int, str]]:
    """(seq, path) of every complete snapshot, newest first."""
    if not os.path.isdir(directory):
        return []
    found = [(int(m.group(1)), os.path.join(directory, name))
             for name in os.listdir(directory) if (m := _NAME.match(name))]
    return sorted(found, reverse=True)


def restore(rp: Replayer, path: str) -> int:
    """Load the snapshot at `path` into a freshly made replayer (same configuration); returns
    the last sequence it includes. Raises SnapshotMismatch, leaving `rp` unusable, if the
    snapshot does not fit."""
    try:
        with np.load(path, allow_pickle=False) as z:
            saved = {k: z[k] for k in z.files}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise SnapshotMismatch(f"snapshot {path}: unreadable ({exc})") from None
    meta = saved.get("meta")
    if meta is None or len(meta) != 3 or int(meta[0]) != SNAPSHOT_VERSION:
        raise SnapshotMismatch(f"snapshot {path}: version {None if meta is None else int(meta[0])} "
                               f"(this build reads {SNAPSHOT_VERSION})")
    want = snapshot_arrays(rp)
    missing = sorted(set(want) - set(saved) - {"driver.a", "driver.q"})
    if missing:
        raise SnapshotMismatch(f"snapshot {path}: no {missing[0]}")
    for name, arr in want.items():
        if name in ("driver.a", "driver.q", "meta"):
            continue
        got = saved[name]
        if name.endswith(".dtype"):
            if str(got) != str(arr):
                raise SnapshotMismatch(f"snapshot {path}: {name} is {got} (these engines: {arr})")
            continue
        if got.shape != arr.shape or got.dtype != arr.dtype:
            raise SnapshotMismatch(f"snapshot {path}: {name} is {got.dtype}{list(got.shape)}, these engines have "
                                   f"{arr.dtype}{list(arr.shape)} (another configuration)")
        if name.endswith(".symbols") and got.tobytes() != arr.tobytes():
            raise SnapshotMismatch(f"snapshot {path}: {name} differ from the configured symbols")
    for name, module in ENGINES.items():
        engine = getattr(rp, name)
        for attr, arr in _arrays_of(engine).items():
            src = saved[f"{name}.{attr}"]
            if attr == "control":
                local = list(module.LOCAL_SLOTS)
                keep = arr[local].copy()
                arr[:] = src
                arr[local] = keep
            else:
                assert arr.flags.c_contiguous, f"{name}.{attr}"
                arr.view(np.uint8).reshape(-1)[:] = src.view(np.uint8).reshape(-1)  # raw bytes, padding too
    a, q = saved["driver.a"], saved["driver.q"]
    if len(a) > len(rp._a) or len(q) > len(rp._m):
        raise SnapshotMismatch(f"snapshot {path}: {len(a)} records for matching, {len(q)} results in flight "
                               f"(these engines' buffers hold {len(rp._a)}, {len(rp._m)})")
    rp._a[:len(a)] = a
    rp._m[:len(q)] = q
    rp.state[:] = saved["driver.state"]
    rp.state[DS_A], rp.state[DS_QPOS], rp.state[DS_QN] = len(a), 0, len(q)
    rp.replayed = int(meta[2])
    return int(meta[1])


def recover(rp_factory, journal_dir: str, snapshot_dir: str, max_seq: int | None = None) -> tuple[Replayer, int, np.ndarray]:
    """The engines as of the journal's end: the newest snapshot that restores (and includes
    no sequence past `max_seq`: the caller needs the edge records after it), then the journal
    after it, verified. `rp_factory()` makes a fresh Replayer of the configuration. Returns
    (replayer, snapshot sequence or 0, edge records the tail made); the caller finishes the
    replayer to go live."""
    rp, base = None, 0
    for seq, path in list_snapshots(snapshot_dir):
        if max_seq is not None and seq > max_seq:
            continue
        candidate = rp_factory()
        try:
            base = restore(candidate, path)
        except SnapshotMismatch:
            continue  # an older snapshot, or the whole journal, will do
        rp = candidate
        break
    if rp is None:
        rp, base = rp_factory(), 0
    edge = [rp.feed(batch) for batch in JournalReader(journal_dir).batches(from_seq=base + 1)]
    return rp, base, R.concat(edge)
