"""Read-only view of Ganntec's shared-memory segments (live or left over by a dead instance).

Like Aeron's AeronStat: it only maps segments, reads them through the layout modules, and
never writes a counter or takes a ring role, so it is safe against a running instance.
"""

from __future__ import annotations

import mmap
from dataclasses import asdict, dataclass, field

import numpy as np
import posix_ipc

from ganntec.shm.ring import RING_HEADER_DTYPE, RING_MAGIC, SLOTS_OFFSET
from ganntec.shm.segment import COMMON_HEADER_DTYPE, Outcome, list_segments, probe
from ganntec.shm.table import ROWS_OFFSET, TABLE_HEADER_DTYPE, TABLE_MAGIC


@dataclass
class SegmentView:
    name: str
    state: str
    size_bytes: int
    kind: str
    layout_version: int
    creator_pid: int
    ring: dict = field(default_factory=dict)
    table: dict = field(default_factory=dict)


def _kind(magic: int) -> str:
    if magic == 0:
        return "-"
    raw = int(magic).to_bytes(8, "little", signed=True)
    return raw.decode("ascii", "replace")


def _read(name: str, size: int) -> bytes:
    shm = posix_ipc.SharedMemory(name, flags=0)
    try:
        mm = mmap.mmap(shm.fd, size, prot=mmap.PROT_READ)
    finally:
        shm.close_fd()
    try:
        return bytes(mm[:size])
    finally:
        mm.close()


def view(name: str) -> SegmentView:
    info = probe(name)
    state = "live" if info.outcome is Outcome.LIVE_OTHER_INSTANCE else info.outcome.value
    out = SegmentView(name, state, info.size, _kind(info.magic), info.layout_version, info.creator_pid)
    if info.magic == RING_MAGIC and info.size >= SLOTS_OFFSET:
        h = np.frombuffer(_read(name, SLOTS_OFFSET), dtype=RING_HEADER_DTYPE, count=1)[0]
        ring = {k: int(h[k]) for k in RING_HEADER_DTYPE.names}
        ring["fill"] = ring["head"] - ring["tail"]
        out.ring = ring
    elif info.magic == TABLE_MAGIC and info.size >= ROWS_OFFSET:
        h = np.frombuffer(_read(name, ROWS_OFFSET), dtype=TABLE_HEADER_DTYPE, count=1)[0]
        out.table = {k: (h[k].decode("ascii") if k == "kind" else int(h[k])) for k in TABLE_HEADER_DTYPE.names}
    return out


def snapshot(instance: str | None = None) -> list[dict]:
    """Every segment of `instance` (or of all instances) as plain dicts."""
    return [asdict(view(n)) for n in list_segments(instance)]


def _beat_age(beat_ns: int, now_ns: int | None) -> str:
    """How old a heartbeat (CLOCK_MONOTONIC ns) is, or '-' if never beaten."""
    if not beat_ns or now_ns is None:
        return "-"
    return f"{max(0, now_ns - beat_ns) / 1e6:.0f}ms"


def format_table(rows: list[dict], now_ns: int | None = None) -> str:
    """The segments as a table; with `now_ns` (CLOCK_MONOTONIC, the caller's clock: this
    module reads none), each ring's producer and consumer heartbeat ages too: a worker's
    heartbeat is its first input ring's consumer heartbeat."""
    if not rows:
        return "no ganntec segments"
    lines = [f"{'segment':<40} {'state':<16} {'kind':<9} {'bytes':>12} {'pid':>8}  details"]
    for r in rows:
        ring, table = r["ring"], r["table"]
        extra = ""
        if table:
            extra = f"table {table['kind']}: rows={table['rows']} row_bytes={table['row_bytes']} writes={table['writes']} writer={table['writer_pid']}"
        if ring:
            extra = (f"cap={ring['capacity']} slot={ring['slot_bytes']} head={ring['head']} tail={ring['tail']} "
                     f"fill={ring['fill']} prod={ring['producer_pid']} cons={ring['consumer_pid']}")
            if now_ns is not None:
                extra += (f" prod_beat={_beat_age(ring['producer_heartbeat_ns'], now_ns)}"
                          f" cons_beat={_beat_age(ring['consumer_heartbeat_ns'], now_ns)}")
            if ring.get("doorbell"):
                extra += f" doorbell={ring['doorbell']}"
        lines.append(f"{r['name']:<40} {r['state']:<16} {r['kind']:<9} {r['size_bytes']:>12} {r['creator_pid']:>8}  {extra}")
    return "\n".join(lines)


__all__ = ["snapshot", "format_table", "view", "COMMON_HEADER_DTYPE"]
