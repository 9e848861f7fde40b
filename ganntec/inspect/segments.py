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


def snapshot(instance: str | None = None, name_filter: str = "") -> list[dict]:
    """Every segment of `instance` (or of all instances) as plain dicts; `name_filter`: only
    names containing it."""
    return [asdict(view(n)) for n in list_segments(instance) if name_filter in n]


def _process(pid: int) -> dict:
    """A ring party's process: alive, and its CPU seconds so far (psutil; never signalled)."""
    import psutil

    if pid <= 0:
        return {"pid": pid, "alive": False}
    try:
        p = psutil.Process(pid)
        t = p.cpu_times()
        return {"pid": pid, "alive": p.is_running() and p.status() != psutil.STATUS_ZOMBIE,
                "cpu_s": t.user + t.system, "name": p.name()}
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return {"pid": pid, "alive": False}


def sample(instance: str | None = None, gap_s: float = 0.0, name_filter: str = "",
           sleep=None, clock_ns=None) -> list[dict]:
    """`snapshot` with, for each ring, its producer's and consumer's process (alive, CPU) and,
    when `gap_s` > 0, rates between two reads `gap_s` apart: records published and consumed
    per second, stalls (full claims, empty peeks) per second, each party's CPU share. Time is
    an input (`sleep`, `clock_ns`: the CLI's; tests give their own)."""
    import time

    sleep = sleep or time.sleep
    clock_ns = clock_ns or time.monotonic_ns
    t0 = clock_ns()
    first = snapshot(instance, name_filter)
    procs0 = {}
    for row in first:
        r = row["ring"]
        if r:
            for role in ("producer", "consumer"):
                procs0[(row["name"], role)] = _process(r[f"{role}_pid"])
    if gap_s <= 0:
        for row in first:
            if row["ring"]:
                for role in ("producer", "consumer"):
                    row["ring"][role] = procs0[(row["name"], role)]
        return first
    sleep(gap_s)
    t1 = clock_ns()
    dt = max(t1 - t0, 1) / 1e9
    before = {row["name"]: row for row in first}
    out = snapshot(instance, name_filter)
    for row in out:
        r, old = row["ring"], before.get(row["name"], {}).get("ring")
        if not r:
            continue
        for role in ("producer", "consumer"):
            now_p, then_p = _process(r[f"{role}_pid"]), procs0.get((row["name"], role), {})
            if "cpu_s" in now_p and then_p.get("pid") == now_p["pid"] and "cpu_s" in then_p:
                now_p["cpu_percent"] = round(100 * (now_p["cpu_s"] - then_p["cpu_s"]) / dt, 1)
            r[role] = now_p
        if old:
            r["rates"] = {"published_per_s": (r["head"] - old["head"]) / dt,
                          "consumed_per_s": (r["tail"] - old["tail"]) / dt,
                          "full_claims_per_s": (r["full_claims"] - old["full_claims"]) / dt,
                          "empty_peeks_per_s": (r["empty_peeks"] - old["empty_peeks"]) / dt,
                          "interval_s": dt}
    return out


def _beat_age(beat_ns: int, now_ns: int | None) -> str:
    """How old a heartbeat (CLOCK_MONOTONIC ns) is, or '-' if never beaten."""
    if not beat_ns or now_ns is None:
        return "-"
    return f"{max(0, now_ns - beat_ns) / 1e6:.0f}ms"


def _party(p: dict | None) -> str:
    """A ring party's process as table text: (dead), or its CPU share over the sample."""
    if not p or p.get("pid", 0) <= 0:
        return ""
    if not p.get("alive"):
        return "(dead)"
    return f"({p['cpu_percent']:.0f}%cpu)" if "cpu_percent" in p else ""


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
                     f"fill={ring['fill']} prod={ring['producer_pid']}{_party(ring.get('producer'))} "
                     f"cons={ring['consumer_pid']}{_party(ring.get('consumer'))}")
            if ring.get("rates"):
                rt = ring["rates"]
                extra += (f" in/s={rt['published_per_s']:.0f} out/s={rt['consumed_per_s']:.0f}"
                          f" full/s={rt['full_claims_per_s']:.0f}")
            if now_ns is not None:
                extra += (f" prod_beat={_beat_age(ring['producer_heartbeat_ns'], now_ns)}"
                          f" cons_beat={_beat_age(ring['consumer_heartbeat_ns'], now_ns)}")
            if ring.get("doorbell"):
                extra += f" doorbell={ring['doorbell']}"
        lines.append(f"{r['name']:<40} {r['state']:<16} {r['kind']:<9} {r['size_bytes']:>12} {r['creator_pid']:>8}  {extra}")
    return "\n".join(lines)


__all__ = ["snapshot", "sample", "format_table", "view", "COMMON_HEADER_DTYPE"]
