"""Pipeline benchmark: commands in -> reports out through the running engine, journal included;
replay and recovery rates.

    python bench/pipeline.py            # 1,000,000 commands per mode
    python bench/pipeline.py --quick    # 200,000

Workload: bench/matching.py's exchange-core mix (1,000 funded accounts, ~1,000 resting orders,
82% moves, ~5% trading), as client commands with client order ids, edge source 1 and
increasing edge sequences.

What is measured, each mode in fresh processes, for both placements and both durabilities:
  ganntec.<placement>.<os|fsync>
                      a client process pushes commands into the cmd.1 ring and pops reports;
                      `single`: one worker (all four engines, pinned to the other CPU) pops,
                      drives the engines, appends each turn to the journal (os: page cache;
                      fsync: one fdatasync per turn, group commit) and only then publishes the
                      turn's reports; `per-engine`: four worker processes (order journals and
                      forwards, risk, matching, position) linked by rings, as `ganntec run`
                      starts them, left to the scheduler on this 2-core host. Throughput =
                      commands / (first push .. the report of a final sentinel command), as
                      fast as the pipeline takes them, so their latency is queueing.
  ganntec.<placement>.<os|fsync>.open_loop
                      20,000 commands paced at 10,000/s (one per tick, open loop): the latency
                      of a pipeline that keeps up. Latency = a report's arrival minus its
                      command's push time (the client stamps ts_ns with CLOCK_MONOTONIC; the
                      order engine keeps the max), over the reports that carry their command's
                      edge sequence (new orders' lock BALANCE, refusals).
  ganntec.replay      the journal of the single os run, read and replayed with every record
                      verified (records/s).
  ganntec.recovery    a snapshot, then a tail of >= 1,000,000 journal records: restore + replay
                      + finish, seconds.
Peers: none run here; the targets of issue 3/7 are the yardstick (>= 2 M commands/s with os,
>= 1 M with fsync, replay >= 1 M records/s, recovery <= 2 s), printed with the figures, and
the per-engine / single ratio.
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
import psutil

BENCH = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, BENCH)

from ganntec.journal.journal import JournalReader, JournalWriter  # noqa: E402
from ganntec.journal.replay import Replayer  # noqa: E402
from ganntec.journal.snapshot import recover, save  # noqa: E402
from ganntec.engines.symbols import symbol_table  # noqa: E402
from ganntec.shm import records as R  # noqa: E402
from ganntec.shm import wait as W  # noqa: E402
from ganntec.shm.ring import Ring  # noqa: E402
from ganntec.shm.ring import unlink_doorbells  # noqa: E402
from ganntec.workers.runtime import (  # noqa: E402
    ENGINES,
    INTERNAL_RINGS,
    MATCHING_ORDER,
    ORDER_DOORBELL,
    reports_ring,
    cmd_ring,
    make_tables,
    worker_main,
)

import matching as M  # noqa: E402  (the workload)
from benchlib import BaseReport, BenchFailure, CpuMeter, cpu_model  # noqa: E402

CTX = multiprocessing.get_context("fork")
RB = R.RECORD_BYTES
RING_CAPACITY = 1 << 16
MAX_IN_FLIGHT = 4096  # the config default
LOW_RATE, LOW_RATE_COMMANDS = 10_000, 20_000  # the open-loop latency runs
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


def _worker(engine, instance, journal_dir, durability, ready, cpu, waiters):
    """One engine process as `ganntec run` forks it (fresh engines: the run starts empty)."""
    rp = make_replayer()
    rp.finish()
    writer = JournalWriter(journal_dir, durability) if engine in ("engines", "order") else None
    ready.set()
    worker_main(engine, rp, writer, instance, 2, "auto", waiters, 1000, cpu, MAX_IN_FLIGHT)


def pipeline_run(placement: str, durability: str, setup: np.ndarray, timed: np.ndarray, tmp: str,
                 cpus: tuple[int, int], rate: float | None = None) -> dict:
    """One run of a placement; the client is this (forked) process. `rate`: open loop, that
    many commands/s (latency at a load the pipeline keeps up with), else as fast as it takes."""
    instance = f"bench{os.getpid()}"
    jdir = os.path.join(tmp, f"journal-{placement}-{durability}-{rate or 'max'}")
    engines = ("engines",) if placement == "single" else ENGINES
    waiters = len(engines) + 1
    rings = [Ring.create(instance, cmd_ring(s), RING_CAPACITY, lock_memory=False, doorbell=ORDER_DOORBELL)
             for s in range(2)]
    rings.append(Ring.create(instance, reports_ring(1), RING_CAPACITY, lock_memory=False))
    if placement != "single":
        rings += [Ring.create(instance, name, RING_CAPACITY, lock_memory=False,
                              doorbell=ORDER_DOORBELL if name == MATCHING_ORDER else 0) for name in INTERNAL_RINGS]
    ep = engine_params()  # the workers' stats, depth and balances tables, as the supervisor makes them
    tables = make_tables(instance, list(engines), len(ep["symbols"]), ep["max_accounts"] * ep["n_assets"])
    procs = []
    os.sync()  # no dirty pages of an earlier run's journal being written back during this one
    try:
        os.sched_setaffinity(0, {cpus[0]})
        for engine in engines:  # single: pinned to the other CPU; per-engine: 4 on 2 CPUs, the scheduler places them
            ready = CTX.Event()
            procs.append(CTX.Process(target=_worker, args=(engine, instance, jdir, durability, ready,
                                                           cpus[1] if placement == "single" else None, waiters)))
            procs[-1].start()
            if not ready.wait(120):
                raise BenchFailure(f"{engine} worker did not start")
        cmd = Ring.attach(instance, cmd_ring(1), role="producer")
        rep = Ring.attach(instance, reports_ring(1), role="consumer")
        wait = W.make("auto", processes=waiters)
        out = np.zeros((RING_CAPACITY, RB), np.uint8)
        # setup: funding and the starting book, not timed
        _pump(cmd, rep, setup, out, wait, None)
        lat = np.zeros(len(timed), np.int64)
        cpu0 = _cpu_seconds(procs)
        t0 = time.perf_counter_ns()
        n_reports = _pump(cmd, rep, timed, out, wait, lat, rate)
        dt = time.perf_counter_ns() - t0
        cpu = {e: (b - a) * 1e9 / (len(timed) - 1) for e, a, b in zip(("client",) + engines, cpu0, _cpu_seconds(procs))}
        cmd.close(unlink=False)
        rep.close(unlink=False)
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.join(60)
            if proc.is_alive():
                proc.kill()
                proc.join()
        for r in rings:
            r.close(unlink=True)
        for t in tables:
            t.close(unlink=True)
        unlink_doorbells(instance, [ORDER_DOORBELL])
    journal_bytes = sum(e.stat().st_size for e in os.scandir(jdir) if e.is_file())
    lat = lat[lat > 0]
    p50, p90, p99, p999 = (np.percentile(lat, [50, 90, 99, 99.9]) / 1000).tolist() if len(lat) else [0] * 4
    return {"rate": (len(timed) - 1) * 1e9 / dt, "reports": n_reports, "p50_us": p50, "p90_us": p90, "p99_us": p99,
            "p999_us": p999, "journal_dir": jdir, "cpu_ns_per_command": cpu,
            "journal_bytes": journal_bytes}


def _cpu_seconds(procs) -> list[float]:
    """CPU seconds (user + system) so far: this process (the client), then each worker."""
    me = os.times()
    out = [me.user + me.system]
    for p in procs:
        t = psutil.Process(p.pid).cpu_times()
        out.append(t.user + t.system)
    return out


def _pump(cmd, rep, recs, out, wait, lat, rate=None) -> int:
    """Push every command (stamping ts_ns with the push time) while popping reports, until the
    report of the last command is in; with `rate`, one command at each 1/rate s tick (open
    loop). Returns reports received."""
    n = len(recs)
    start = time.monotonic_ns()
    pos = 0
    got = 0
    last_seq = int(recs["source_seq"][-1])
    first_seq = int(recs["source_seq"][0])
    done = False
    while not done:
        pushed = 0
        if pos < n:
            k = min(PUSH_BATCH, n - pos)
            if rate:  # the commands whose tick has come
                k = min(k, int((time.monotonic_ns() - start) * rate / 1e9) + 1 - pos)
            if k > 0:
                batch = recs[pos:pos + k]
                batch["ts_ns"] = time.monotonic_ns()
                pushed = cmd.push(batch)
                pos += pushed
        m = rep.pop(out)
        if m:
            got += m
            now = time.monotonic_ns()
            rs = out[:m].view(R.RECORD_DTYPE).reshape(-1)
            if lat is not None:
                mine = rs[(rs["source"] == 1) & (rs["source_seq"] >= first_seq)]
                lat[mine["source_seq"] - first_seq] = now - mine["ts_ns"]
            done = done or bool(((rs["source"] == 1) & (rs["source_seq"] == last_seq)).any())
        elif pos >= n or (not pushed and not rate):
            # nothing to do until reports come (the command ring is full, or all are sent):
            # sleep on the reports ring, never spin a core the workers need
            wait.wait_for_data(rep, 1, 0.05)
        elif rate:
            wait.wait_for_data(rep, 1, max(0.0, (start + (pos + 1) * 1e9 / rate - time.monotonic_ns()) / 1e9))
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
    m = min(LOW_RATE_COMMANDS, len(timed) - 1)
    paced = R.concat([timed[:m], sentinel(int(timed["source_seq"][m - 1]) + 1)])
    with tempfile.TemporaryDirectory(prefix="ganntec-pipeline-") as tmp:
        runs = {}
        for placement in ("single", "per-engine"):
            for durability in ("os", "fsync"):
                runs[f"{placement}.{durability}"] = rep.attempt(
                    f"{placement} placement, {durability}", in_child, pipeline_run, placement, durability, setup,
                    timed, tmp, pair)
            for durability in ("os", "fsync"):
                runs[f"{placement}.{durability}.open_loop"] = rep.attempt(
                    f"{placement} placement, {durability}, {LOW_RATE:,} commands/s", in_child, pipeline_run,
                    placement, durability, setup, paced, tmp, pair, LOW_RATE)
        rr = rec = None
        if runs.get("single.os"):
            rr = rep.attempt("replay", in_child, replay_rate, runs["single.os"]["journal_dir"])
            rec = rep.attempt("recovery", in_child, recovery_time, runs["single.os"]["journal_dir"], tmp, 1_000_000)
    load, steal = meter.cores()
    f = rep.figures
    for name, r in runs.items():
        if r:
            f[f"ganntec.{name}.throughput_per_s"] = r["rate"]
            for k in ("p50", "p90", "p99", "p999"):
                f[f"ganntec.{name}.latency_{k}_us"] = r[f"{k}_us"]
    if rr:
        f["ganntec.replay.throughput_per_s"] = rr["rate"]
        f["ganntec.journal.read_per_s"] = rr["read_rate"]
    if rec:
        f["ganntec.recovery.tail_records"] = rec["tail"]
        f["ganntec.recovery.seconds"] = rec["seconds"]
    print(f"\npipeline benchmark{' (--quick)' if args.quick else ''}: {n:,} commands of the exchange-core mix "
          f"(bench/matching.py); the client on CPU {pair[0]}, the single worker on CPU {pair[1]}, the four "
          f"per-engine workers unpinned")
    print(f"host: {len(cpus)} CPUs ({cpu_model()}), Python {platform.python_version()}; background load "
          f"{load:.2f} cores, steal {steal:.2f} cores\n")
    print(f"{'system':36} {'commands/s':>12} {'p50 us':>9} {'p90 us':>9} {'p99 us':>9} {'p99.9 us':>9}")
    for name, r in runs.items():
        if r:
            print(f"{'ganntec.' + name:36} {r['rate'] / 1e6:11.3f}M {r['p50_us']:9.1f} {r['p90_us']:9.1f} "
                  f"{r['p99_us']:9.1f} {r['p999_us']:9.1f}")
    print(f"(open_loop: {m:,} commands paced at {LOW_RATE:,}/s; the others as fast as the pipeline takes them, so "
          f"their latency is queueing)")
    print("\nCPU time per command (ns, user + system) by process, in the as-fast-as-it-goes runs:")
    for name, r in runs.items():
        if r and "open_loop" not in name:
            cpu = r["cpu_ns_per_command"]
            print(f"  {'ganntec.' + name:34} " + "  ".join(f"{k} {v:5.0f}" for k, v in cpu.items())
                  + f"  (sum {sum(cpu.values()):.0f}; wall {1e9 / r['rate']:.0f} per command on {len(cpus)} CPUs)")
    print("\njournal written (setup included) at the measured rate; fsync mode is bounded by how fast this disk "
          "makes that much durable:")
    for name, r in runs.items():
        if r and "open_loop" not in name:
            per_cmd = r["journal_bytes"] / (len(setup) + len(timed))
            print(f"  {'ganntec.' + name:34} {per_cmd:5.0f} B/command, {per_cmd * r['rate'] / 1e6:6.0f} MB/s")
            f[f"ganntec.{name}.journal_bytes_per_command"] = per_cmd
            for k, v in r["cpu_ns_per_command"].items():
                f[f"ganntec.{name}.cpu_ns_per_command.{k}"] = v
    single, multi = f.get("ganntec.single.os.throughput_per_s", 0), f.get("ganntec.per-engine.os.throughput_per_s", 0)
    if single and multi:
        print(f"per-engine / single throughput (os): {multi / single:.2f}")
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
                          "ganntec.replay.throughput_per_s/target_1M": f.get("ganntec.replay.throughput_per_s", 0) / 1e6,
                          "ganntec.per-engine.os/ganntec.single.os": multi / single if single else 0}}))
    return 1 if rep.failures else 0


if __name__ == "__main__":
    sys.exit(main())
