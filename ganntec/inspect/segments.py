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
from ganntec.shm import stats as S
from ganntec.shm.table import KINDS, ROWS_OFFSET, SEQ_BYTES, TABLE_HEADER_DTYPE, TABLE_MAGIC


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
        rows = table_rows(name, info.size, out.table)
        if rows is not None and out.table["kind"] == "stats":
            out.table["stages"] = {bytes(r["name"]).rstrip(b"\0").decode("ascii", "replace"): S.summary(r)
                                   for r in rows}
        elif rows is not None and out.table["kind"] == "depth":
            out.table["books"] = [_book(r) for r in rows if r["update_id"] or r["n_bids"] or r["n_asks"]]
        elif rows is not None and out.table["kind"] == "balances":
            out.table["balances"] = [{k: int(r[k]) for k in rows.dtype.names} for r in rows
                                     if r["free_minor"] or r["locked_minor"]]
    return out


def _book(row) -> dict:
    """A depth row as plain data: the best levels per side, [price_tick, qty_lot] each."""
    nb, na = int(row["n_bids"]), int(row["n_asks"])
    return {"symbol_id": int(row["symbol_id"]), "update_id": int(row["update_id"]), "last_seq": int(row["last_seq"]),
            "last_price_tick": int(row["last_price_tick"]),
            "bids": [[int(p), int(q)] for p, q in zip(row["bid_price_tick"][:nb], row["bid_qty_lot"][:nb])],
            "asks": [[int(p), int(q)] for p, q in zip(row["ask_price_tick"][:na], row["ask_qty_lot"][:na])]}


def table_rows(name: str, size: int, header: dict) -> np.ndarray | None:
    """A known kind's rows, read without waiting: two copies of the segment; a row counts only
    where its seq is even and the same in both (no write began in between, so the first copy
    of it is whole). Rows being written, or left odd by a dead writer, come back zeroed. None
    for an unknown kind or a short segment."""
    dtype = KINDS.get(header["kind"]) or (S.STATS_ROW_DTYPE if header["kind"] == "stats" else None)
    n, rb = header["rows"], header["row_bytes"]
    if dtype is None or dtype.itemsize != header["payload_bytes"] or size < ROWS_OFFSET + n * rb:
        return None
    end = ROWS_OFFSET + n * rb
    first, second = _read(name, end), _read(name, end)
    out = np.zeros(n, dtype)
    for i in range(n):
        at = ROWS_OFFSET + i * rb
        s1 = int.from_bytes(first[at:at + SEQ_BYTES], "little", signed=True)
        s2 = int.from_bytes(second[at:at + SEQ_BYTES], "little", signed=True)
        if s1 == s2 and s1 % 2 == 0:
            out[i] = np.frombuffer(first, dtype, count=1, offset=at + SEQ_BYTES)[0]
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
        for role, part in _parties(row):
            procs0[(row["name"], role)] = _process(part[f"{role}_pid"])
    if gap_s <= 0:
        for row in first:
            for role, part in _parties(row):
                part[role] = procs0[(row["name"], role)]
        return first
    sleep(gap_s)
    t1 = clock_ns()
    dt = max(t1 - t0, 1) / 1e9
    before = {row["name"]: row for row in first}
    out = snapshot(instance, name_filter)
    for row in out:
        for role, part in _parties(row):
            now_p, then_p = _process(part[f"{role}_pid"]), procs0.get((row["name"], role), {})
            if "cpu_s" in now_p and then_p.get("pid") == now_p["pid"] and "cpu_s" in then_p:
                now_p["cpu_percent"] = round(100 * (now_p["cpu_s"] - then_p["cpu_s"]) / dt, 1)
            part[role] = now_p
        r, old = row["ring"], before.get(row["name"], {}).get("ring")
        if r and old:
            r["rates"] = {"published_per_s": (r["head"] - old["head"]) / dt,
                          "consumed_per_s": (r["tail"] - old["tail"]) / dt,
                          "full_claims_per_s": (r["full_claims"] - old["full_claims"]) / dt,
                          "empty_peeks_per_s": (r["empty_peeks"] - old["empty_peeks"]) / dt,
                          "interval_s": dt}
    return out


def _parties(row: dict):
    """(role, the dict holding `<role>_pid`) of a segment's processes: a ring's producer and
    consumer, a table's writer."""
    if row["ring"]:
        return [("producer", row["ring"]), ("consumer", row["ring"])]
    if row["table"]:
        return [("writer", row["table"])]
    return []


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


def format_table(rows: list[dict], now_ns: int | None = None, account: int | None = None) -> str:
    """The segments as a table; with `now_ns` (CLOCK_MONOTONIC, the caller's clock: this
    module reads none), each ring's producer and consumer heartbeat ages too: a worker's
    heartbeat is its first input ring's consumer heartbeat."""
    if not rows:
        return "no ganntec segments"
    lines = [f"{'segment':<40} {'state':<16} {'kind':<9} {'layout':>6} {'bytes':>12} {'pid':>8}  details"]
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
        lines.append(f"{r['name']:<40} {r['state']:<16} {r['kind']:<9} {'v' + str(r['layout_version']):>6} "
                     f"{r['size_bytes']:>12} {r['creator_pid']:>8}  {extra}")
    blocks = [b for b in (format_processes(rows, now_ns), format_books(rows), format_balances(rows, account)) if b]
    return "\n\n".join(["\n".join(lines), *blocks])


def format_books(rows: list[dict], levels: int = 1) -> str:
    """Top of each book from the depth table (integers: price in ticks, quantity in lots)."""
    books = [b for r in rows if r["table"].get("kind") == "depth" for b in r["table"].get("books", ())]
    if not books:
        return ""
    lines = [f"{'symbol':>6} {'update_id':>10} {'bid qty_lot':>14} {'bid price_tick':>15} {'ask price_tick':>15} "
             f"{'ask qty_lot':>14} {'levels':>9} {'last_price_tick':>16}"]
    for b in books:
        for i in range(max(1, min(levels, max(len(b["bids"]), len(b["asks"]))))):
            bid = b["bids"][i] if i < len(b["bids"]) else ["", ""]
            ask = b["asks"][i] if i < len(b["asks"]) else ["", ""]
            head = (f"{b['symbol_id']:>6} {b['update_id']:>10}" if i == 0 else " " * 17)
            tail = f" {len(b['bids'])}/{len(b['asks']):<6} {b['last_price_tick']:>16}" if i == 0 else ""
            lines.append(f"{head} {bid[1]!s:>14} {bid[0]!s:>15} {ask[0]!s:>15} {ask[1]!s:>14}{tail}")
    return "\n".join(lines)


def format_balances(rows: list[dict], account: int | None) -> str:
    """One account's balances from the balances table (minor units), when `account` is given."""
    if account is None:
        return ""
    found = [b for r in rows if r["table"].get("kind") == "balances" for b in r["table"].get("balances", ())
             if b["account_id"] == account]
    if not found:
        return f"account {account}: no balance"
    lines = [f"account {account}", f"{'asset_id':>8} {'free_minor':>22} {'locked_minor':>22} {'last_seq':>10}"]
    lines += [f"{b['asset_id']:>8} {b['free_minor']:>22} {b['locked_minor']:>22} {b['last_seq']:>10}" for b in found]
    return "\n".join(lines)


def _dur(ns: int) -> str:
    if ns < 10_000:
        return f"{ns / 1e3:.1f}us"
    if ns < 10_000_000:
        return f"{ns / 1e3:.0f}us"
    return f"{ns / 1e6:.0f}ms"


def _process_name(segment: str) -> str:
    """/ganntec.<instance>.stats.edge.1 -> edge.1"""
    return segment.split(".stats.", 1)[-1]


def process_rows(rows: list[dict]) -> list[dict]:
    """Each process of the instance from its stats table (shm/stats.py), in pipeline order:
    name, pid, state (alive with CPU share over the sample / dead / no writer), heartbeat
    stamp, wait strategy, pinned CPU, and its stages as (name, summary, other text)."""
    stats = [r for r in rows if r["table"].get("kind") == "stats"]
    order = {name: i for i, name in enumerate(("supervisor", "engines") + S.STAGE_ORDER)}
    stats.sort(key=lambda r: (order.get(_process_name(r["name"]).split(".")[0], 99), r["name"]))
    out = []
    for r in stats:
        t = r["table"]
        p = t.get("writer") or {}
        if t["writer_pid"] <= 0:
            state = "no writer"
        elif p and not p.get("alive"):
            state = "dead"
        else:
            state = "alive" + (f" {p['cpu_percent']:.0f}%cpu" if "cpu_percent" in p else "")
        stages = dict(t.get("stages", {}))
        proc = stages.pop(S.PROCESS_ROW, None)
        wait, cpu = "-", "-"
        if proc is not None:
            wait = S.WAITS[proc["gauge_a"]] if 0 <= proc["gauge_a"] < len(S.WAITS) else "?"
            cpu = str(proc["gauge_b"]) if proc["gauge_b"] >= 0 else "-"
        listed = []
        for stage, st in stages.items():
            other = ""
            if stage == "journal":
                other = f"last_seq={st['gauge_a']} records={st['gauge_b']} (timed: group commits)"
            elif stage == "recovery":
                other = f"recovered_to_seq={st['gauge_a']}"
            listed.append((stage, st, other))
        out.append({"name": _process_name(r["name"]), "pid": t["writer_pid"], "state": state,
                    "beat_ns": t["writer_heartbeat_ns"], "wait": wait, "cpu": cpu, "stages": listed})
    return out


def format_processes(rows: list[dict], now_ns: int | None = None) -> str:
    """`process_rows` as text: per stage the edge-receive-to-here latency (count, p50 and p99
    as bucket bounds, max); the journal's position and group-commit times; recovery."""
    procs = process_rows(rows)
    if not procs:
        return ""
    lines = [f"{'process':<12} {'pid':>8} {'state':<14} {'beat':>8} {'wait':<10} {'cpu':>3}  {'stage':<9} "
             f"{'count':>10} {'p50':>8} {'p99':>8} {'max':>8}  other"]
    for p in procs:
        head = f"{p['name']:<12} {p['pid']:>8} {p['state']:<14} {_beat_age(p['beat_ns'], now_ns):>8} {p['wait']:<10} {p['cpu']:>3}"
        for i, (stage, st, other) in enumerate(p["stages"]):
            lead = head if i == 0 else " " * len(head)
            lines.append(f"{lead}  {stage:<9} {st['count']:>10} {_dur(st['p50_ns']):>8} {_dur(st['p99_ns']):>8} "
                         f"{_dur(st['max_ns']):>8}  {other}".rstrip())
        if not p["stages"]:
            lines.append(head)
    return "\n".join(lines)


__all__ = ["snapshot", "sample", "format_table", "format_processes", "process_rows", "format_books", "format_balances", "view", "COMMON_HEADER_DTYPE"]
