"""Pipeline benchmark: commands in -> reports out through the running engine, journal included;
replay and recovery rates.

    python bench/pipeline.py            # 1,000,000 commands per mode
    python bench/pipeline.py --quick    # 200,000

Workload: bench/matching.py's exchange-core mix (1,000 funded accounts, ~1,000 resting orders,
82% moves, ~5% trading), as client commands with client order ids, edge source 1 and
increasing edge sequences.

What is measured, each mode in fresh processes:
  ganntec.single.<os|fsync>  the `single` placement (all four engines in one worker process,
                      as `ganntec run` starts it on 2 cores): a client process pushes commands
                      into the cmd.1 ring and pops reports; the worker pops, drives the engines,
                      appends each turn to the journal (os: page cache; fsync: one fdatasync per
                      turn, group commit) and only then publishes the turn's reports. Throughput
                      = commands / (first push .. the report of a final sentinel command).
                      Latency = a report's arrival minus its command's push time (the client
                      stamps ts_ns with CLOCK_MONOTONIC; the order engine keeps the max), over
                      the reports that carry their command's edge sequence (new orders' lock
                      BALANCE, refusals).
  ganntec.replay      the journal of the os run, read and replayed with every record verified
                      (records/s).
  ganntec.recovery    a snapshot, then a tail of >= 1,000,000 journal records: restore + replay
                      + finish, seconds.
Peers: none run here; the targets of issue 3/7 are the yardstick (>= 2 M commands/s with os,
>= 1 M with fsync, replay >= 1 M records/s, recovery <= 2 s), printed with the figures. One
process per engine is not built yet, so there is no multi-process row.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import sys
import tempfile
import time

import numpy as np

BENCH = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, BENCH)

from ganntec.journal.journal import JournalReader, JournalWriter  # noqa: E402
from ganntec.journal.replay import Replayer  # noqa: E402
from ganntec.journal.snapshot import recover, save  # noqa: E402
from ganntec.engines.symbols import symbol_table  # noqa: E402
from ganntec.shm import records as R  # noqa: E402
from ganntec.shm import wait as W  # noqa: E402
from ganntec.shm.ring import Ring  # noqa: E402
from ganntec.workers.runtime import REPORTS, EngineWorker, cmd_ring  # noqa: E402

import matching as M  # noqa: E402  (the workload)
from benchlib import BaseReport, BenchFailure, CpuMeter, cpu_model  # noqa: E402

CTX = multiprocessing.get_context("fork")
RB = R.RECORD_BYTES
RING_CAPACITY = 1 << 16
PUSH_BATCH = 512


def engine_params():
    return dict(symbols=symbol_table([M.SYMBOL]), n_assets=2, max_accounts=M.ACCOUNTS + 1, max_orders=1 << 16,
                max_levels=4096, fee_account=M.FEE_ACCOUNT)


def make_replayer() -> Replayer:
    return Replayer(**engine_params(), max_in_flight=RING_CAPACITY)


def sentinel(seq: int) -> np.ndarray:
    """A command the order engine refuses at once (unknown symbol): its ORDER_REJECTED carries
    the edge sequence, and reports come in journal order, so when it is back, so is every
    report of the commands before it."""
    r = R.empty(R.RecordType.NEW_ORDER)
    r["source"], r["source_seq"], r["symbol_id"] = 1, seq, 999
    return r


def client_commands(wl) -> tuple[np.ndarray, np.ndarray]:
    """(setup commands, timed commands) as edge-1 client commands, each ending in a sentinel."""
    def own(recs):  # a byte copy: `.copy()` of a header-dtype view would drop the payloads
        return R.concat([recs])

    setup = own(M.driver_setup_records())
    fill = own(M.driver_records(wl.fill))
    timed = own(M.driver_records(wl.ops))
    fill["source"] = timed["source"] = 1
    fill["source_seq"] = np.arange(1, len(fill) + 1)
    first = len(fill) + 2
    timed["source_seq"] = np.arange(first, first + len(timed))
    return (R.concat([setup, fill, sentinel(len(fill) + 1)]),
            R.concat([timed, sentinel(first + len(timed))]))


def _worker(instance, journal_dir, durability, ready, cpu):
    os.sched_setaffinity(0, {cpu})
    rp = make_replayer()
    rp.finish()
    writer = JournalWriter(journal_dir, durability)
    rings = [Ring.attach(instance, cmd_ring(s), role="consumer") for s in range(2)]
    reports = Ring.attach(instance, REPORTS, role="producer")
    worker = EngineWorker(rp, writer, rings, reports, W.make("auto", processes=3), heartbeat_ms=1000)
    ready.set()
    worker.run()
    for r in rings + [reports]:
        r.close(unlink=False)


def single_run(durability: str, setup: np.ndarray, timed: np.ndarray, tmp: str, cpus: tuple[int, int]) -> dict:
    """One run of the single placement; the client is this (forked) process."""
    instance = f"bench{os.getpid()}"
    jdir = os.path.join(tmp, f"journal-{durability}")
    rings = [Ring.create(instance, cmd_ring(s), RING_CAPACITY, lock_memory=False) for s in range(2)]
    reports = Ring.create(instance, REPORTS, RING_CAPACITY, lock_memory=False)
    ready = CTX.Event()
    proc = CTX.Process(target=_worker, args=(instance, jdir, durability, ready, cpus[1]))
    proc.start()
    try:
        os.sched_setaffinity(0, {cpus[0]})
        if not ready.wait(120):
            raise BenchFailure("worker did not start")
        cmd = Ring.attach(instance, cmd_ring(1), role="producer")
        rep = Ring.attach(instance, REPORTS, role="consumer")
        wait = W.make("auto", processes=3)
        out = np.zeros((RING_CAPACITY, RB), np.uint8)
        # setup: funding and the starting book, not timed
        _pump(cmd, rep, setup, out, wait, None)
        lat = np.zeros(len(timed), np.int64)
        t0 = time.perf_counter_ns()
        n_reports = _pump(cmd, rep, timed, out, wait, lat)
        dt = time.perf_counter_ns() - t0
        cmd.close(unlink=False)
        rep.close(unlink=False)
    finally:
        proc.terminate()
        proc.join(60)
        for r in rings + [reports]:
            r.close(unlink=True)
    lat = lat[lat > 0]
    p50, p90, p99, p999 = (np.percentile(lat, [50, 90, 99, 99.9]) / 1000).tolist() if len(lat) else [0] * 4
    return {"rate": (len(timed) - 1) * 1e9 / dt, "reports": n_reports, "p50_us": p50, "p90_us": p90, "p99_us": p99,
            "p999_us": p999, "journal_dir": jdir}


def _pump(cmd, rep, recs, out, wait, lat) -> int:
    """Push every command (stamping ts_ns with the push time) while popping reports, until the
    report of the last command is in. Returns reports received."""
    n = len(recs)
    pos = 0
    got = 0
    last_seq = int(recs["source_seq"][-1])
    first_seq = int(recs["source_seq"][0])
    done = False
    while not done:
        if pos < n:
            k = min(PUSH_BATCH, n - pos)
            batch = recs[pos:pos + k]
            batch["ts_ns"] = time.monotonic_ns()
            pos += cmd.push(batch)
        m = rep.pop(out)
        if m:
            got += m
            now = time.monotonic_ns()
            rs = out[:m].view(R.RECORD_DTYPE).reshape(-1)
            if lat is not None:
                mine = rs[(rs["source"] == 1) & (rs["source_seq"] >= first_seq)]
                lat[mine["source_seq"] - first_seq] = now - mine["ts_ns"]
            done = done or bool(((rs["source"] == 1) & (rs["source_seq"] == last_seq)).any())
        elif pos >= n:
            wait.wait_for_data(rep, 1, 0.05)
    return got


def replay_rate(journal_dir: str) -> dict:
    reader = JournalReader(journal_dir)
    recs = reader.records()
    rp = make_replayer()
    t0 = time.perf_counter_ns()
    rp.feed(recs, keep_edge=False)
    dt = time.perf_counter_ns() - t0
    t1 = time.perf_counter_ns()
    n = sum(len(b) for b in JournalReader(journal_dir).batches())
    read_dt = time.perf_counter_ns() - t1
    return {"records": len(recs), "rate": len(recs) * 1e9 / dt, "read_rate": n * 1e9 / read_dt}


def recovery_time(journal_dir: str, tmp: str, tail_records: int) -> dict:
    """Snapshot at (journal end - tail_records), then time recover + finish."""
    recs = JournalReader(journal_dir).records()
    cut = max(0, len(recs) - tail_records)
    # a command boundary at or before cut
    bounds = R.command_bounds(recs[:cut + 1]) if cut else [0]
    cut = bounds[-2] if len(bounds) > 1 else 0
    rp = make_replayer()
    rp.feed(recs[:cut])
    sdir = os.path.join(tmp, "snapshots")
    save(rp, sdir)
    t0 = time.perf_counter_ns()
    rp2, base, _ = recover(make_replayer, journal_dir, sdir)
    rp2.finish()
    dt = time.perf_counter_ns() - t0
    return {"seconds": dt / 1e9, "tail": len(recs) - cut, "snapshot_seq": base}


def in_child(fn, *args, timeout=900):
    parent, child = CTX.Pipe()

    def main():
        try:
            child.send(("ok", fn(*args)))
        except BaseException as exc:  # noqa: BLE001
            child.send(("error", f"{type(exc).__name__}: {exc}"))

    p = CTX.Process(target=main)
    p.start()
    if not parent.poll(timeout):
        p.kill()
        raise BenchFailure(f"{fn.__name__} timed out")
    status, value = parent.recv()
    p.join()
    if status != "ok":
        raise BenchFailure(value)
    return value


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--commands", type=int)
    args = ap.parse_args(argv)
    n = args.commands or (200_000 if args.quick else 1_000_000)
    cpus = sorted(os.sched_getaffinity(0))
    pair = (cpus[0], cpus[-1])
    meter = CpuMeter()
    rep = BaseReport()
    print(f"  workload: {n:,} commands ...", file=sys.stderr, flush=True)
    wl = M.generate(n, 1, {n})
    setup, timed = client_commands(wl)
    # compile everything once here; the forked children inherit it warm
    live = make_replayer()
    live.finish()
    journal, _ = live.run(setup[:1])
    rp = make_replayer()
    rp.feed(journal)  # compiles replay_run and everything it calls
    rp.finish()
    with tempfile.TemporaryDirectory(prefix="ganntec-pipeline-") as tmp:
        runs = {}
        for durability in ("os", "fsync"):
            runs[durability] = rep.attempt(f"single placement, {durability}", in_child, single_run, durability, setup,
                                           timed, tmp, pair)
        rr = rec = None
        if runs.get("os"):
            rr = rep.attempt("replay", in_child, replay_rate, runs["os"]["journal_dir"])
            rec = rep.attempt("recovery", in_child, recovery_time, runs["os"]["journal_dir"], tmp, 1_000_000)
    load, steal = meter.cores()
    f = rep.figures
    for d, r in runs.items():
        if r:
            f[f"ganntec.single.{d}.throughput_per_s"] = r["rate"]
            for k in ("p50", "p90", "p99", "p999"):
                f[f"ganntec.single.{d}.latency_{k}_us"] = r[f"{k}_us"]
    if rr:
        f["ganntec.replay.throughput_per_s"] = rr["rate"]
        f["ganntec.journal.read_per_s"] = rr["read_rate"]
    if rec:
        f["ganntec.recovery.tail_records"] = rec["tail"]
        f["ganntec.recovery.seconds"] = rec["seconds"]
    print(f"\npipeline benchmark{' (--quick)' if args.quick else ''}: {n:,} commands of the exchange-core mix "
          f"(bench/matching.py), client and worker pinned to CPUs {pair[0]} and {pair[1]}")
    print(f"host: {len(cpus)} CPUs ({cpu_model()}), Python {platform.python_version()}; background load "
          f"{load:.2f} cores, steal {steal:.2f} cores\n")
    print(f"{'system':24} {'commands/s':>12} {'p50 us':>9} {'p90 us':>9} {'p99 us':>9} {'p99.9 us':>9}")
    for d, r in runs.items():
        if r:
            print(f"{'ganntec.single.' + d:24} {r['rate'] / 1e6:11.2f}M {r['p50_us']:9.1f} {r['p90_us']:9.1f} "
                  f"{r['p99_us']:9.1f} {r['p999_us']:9.1f}")
    if rr:
        print(f"\nreplay: {rr['records']:,} journal records, {rr['rate'] / 1e6:.2f} M records/s verified "
              f"(reading alone {rr['read_rate'] / 1e6:.1f} M records/s)")
    if rec:
        print(f"recovery: snapshot at {rec['snapshot_seq']:,}, tail of {rec['tail']:,} records: {rec['seconds']:.2f} s")
    targets = [
        ("single placement, os >= 2 M commands/s", f.get("ganntec.single.os.throughput_per_s", 0) >= 2e6),
        ("single placement, fsync >= 1 M commands/s", f.get("ganntec.single.fsync.throughput_per_s", 0) >= 1e6),
        ("replay >= 1 M records/s", f.get("ganntec.replay.throughput_per_s", 0) >= 1e6),
        ("recovery of a >= 1 M-record tail <= 2 s", rec is not None and rec["tail"] >= 1_000_000 and rec["seconds"] <= 2),
    ]
    print("\ntargets")
    for what, met in targets:
        print(f"  [{'met' if met else 'MISSED'}] {what}")
    for failure in rep.failures:
        print(f"  FAILED {failure['what']}: {failure['error']}")
    print(json.dumps({"bench": "pipeline", "host": {"cpus": len(cpus), "python": platform.python_version(),
                                                    "cpu_model": cpu_model(), "background_load_cores": load},
                      "figures": f, "ratios": {
                          "ganntec.single.os.throughput_per_s/target_2M": f.get("ganntec.single.os.throughput_per_s", 0) / 2e6,
                          "ganntec.single.fsync.throughput_per_s/target_1M": f.get("ganntec.single.fsync.throughput_per_s", 0) / 1e6,
                          "ganntec.replay.throughput_per_s/target_1M": f.get("ganntec.replay.throughput_per_s", 0) / 1e6}}))
    return 1 if rep.failures else 0


if __name__ == "__main__":
    sys.exit(main())
