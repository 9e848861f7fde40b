"""Where the matching step's time goes: a sampled, function-level profile of `python
bench/matching.py`'s workload through the compiled step loop.

    python bench/profile_matching.py               # 200,000 commands, about 10 s of samples
    python bench/profile_matching.py --seconds 30
    python bench/profile_matching.py --driver      # all four engines in the in-process driver

perf cannot name numba's code (it lives in anonymous JIT memory), so the child compiles the
engine afresh in a temporary numba cache (the IR of cached code cannot be listed), writes the
address of every compiled function to /tmp/perf-<pid>.map (perf's JIT symbol map, removed
afterwards) and runs the stream through `run_stream` again and again under `perf record -e
cpu-clock`. Functions LLVM inlined count in their caller (`run` holds the dispatch, the hash
map, the loads and stores of small helpers). Printed: each function's share of the samples taken
while the loops ran and its CPU time per command (samples x 100 us / commands; self time,
not children), beside the loop's own measured ns per command.
Needs `perf` (linux-tools) with software events allowed (perf_event_paranoid <= 2).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
SAMPLE_HZ = 10_000


def demangle(name: str) -> str:
    """`_ZN7ganntec7engines8matching6_amendB4v173B40...` -> `matching._amend` (numba's
    Itanium-style names: length-prefixed parts; `B...` parts are numba's ABI tags)."""
    m = re.match(r"(?:cfunc\.)?_ZN(?:7cpython)?", name)
    if not m:
        return name
    parts, s = [], name[m.end():]
    while (d := re.match(r"\d+", s)) is not None:
        n = int(d.group())
        parts.append(s[d.end():d.end() + n])
        s = s[d.end() + n:]
    if not parts:
        return name
    return ".".join(parts[-2:])


def child(args) -> int:
    """Compile fresh, write the perf map, loop the stream for `args.seconds`, report the rate."""
    sys.path.insert(0, BENCH)
    import matching as B  # compiles into GANNTEC_NUMBA_CACHE_DIR (a fresh directory)

    from ganntec.workers import driver

    wl = B.generate(args.commands, args.seed, {args.commands})
    if args.driver:
        recs = B.driver_records(wl.ops)
        fill = B.driver_records(wl.fill)
        B.ganntec_driver_run(wl, fill, recs)  # compiles everything the loop calls
        lib = next(iter(driver.drive.overloads.values())).library
    else:
        recs = B.command_records(wl.ops)
        B.ganntec_step_run(wl, recs)
        lib = next(iter(B.run_stream.overloads.values())).library
    names = re.findall(r'^define [^@]*@"?([^"(]+)"?\(', lib.get_llvm_str(), re.M)
    spans = sorted((lib.get_pointer_to_function(n), n) for n in names)
    with open(f"/tmp/perf-{os.getpid()}.map", "w") as f:
        for (addr, name), nxt in zip(spans, [a for a, _ in spans[1:]] + [spans[-1][0] + 65536]):
            f.write(f"{addr:x} {nxt - addr:x} {demangle(name)}\n")
    done, busy_ns = 0, 0
    start = time.clock_gettime(time.CLOCK_MONOTONIC)
    deadline = time.monotonic() + args.seconds
    while time.monotonic() < deadline:
        if args.driver:
            rate = B.ganntec_driver_run(wl, fill, recs)["rate"]
            busy_ns += len(recs) * 1e9 / rate
        else:
            eng = B.loaded_engine(wl)
            out = B.out_buffer(eng)
            t0 = time.perf_counter_ns()
            B.run_stream(eng.control, recs.ctypes.data, len(recs), out.ctypes.data, len(out))
            busy_ns += time.perf_counter_ns() - t0
        done += len(recs)
    with open(args.result, "w") as f:
        json.dump({"pid": os.getpid(), "window": [start, time.clock_gettime(time.CLOCK_MONOTONIC)], "commands": done, "ns_per_cmd": busy_ns / done,
                   "mix": {B.KIND_NAMES[k]: float((wl.ops["kind"] == k).mean()) for k in B.KIND_NAMES}}, f)
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=10.0, help="seconds of sampled step loops (default 10)")
    ap.add_argument("--commands", type=int, default=200_000, help="commands in the stream (default 200,000)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--cpu", type=int, default=1, help="CPU the child is pinned to (default 1)")
    ap.add_argument("--top", type=int, default=25, help="functions printed (default 25)")
    ap.add_argument("--driver", action="store_true", help="profile the in-process driver (all four engines)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return child(args)
    if shutil.which("perf") is None:
        print("perf is not installed (apt-get install linux-perf)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="ganntec-profile-") as tmp:
        data, result = os.path.join(tmp, "perf.data"), os.path.join(tmp, "result.json")
        env = dict(os.environ, GANNTEC_NUMBA_CACHE_DIR=os.path.join(tmp, "numba"))
        cmd = ["perf", "record", "-q", "-k", "CLOCK_MONOTONIC", "-e", "cpu-clock", "-F", str(SAMPLE_HZ), "-o", data, "--",
               "taskset", "-c", str(args.cpu), sys.executable, os.path.abspath(__file__), "--child",
               "--result", result, "--seconds", str(args.seconds), "--commands", str(args.commands),
               "--seed", str(args.seed)] + (["--driver"] if args.driver else [])
        print(f"  compiling afresh and sampling {args.seconds:g} s of step loops ...", file=sys.stderr, flush=True)
        subprocess.run(cmd, env=env, check=True)
        res = json.load(open(result))
        try:
            report = subprocess.run(["perf", "report", "-i", data, "--stdio", "--no-children", "--sort", "sym", "-n",
                                     "--pid", str(res["pid"]), "-q", "-t", "\t",
                                     "--time", "{:.6f},{:.6f}".format(*res["window"])],
                                    capture_output=True, text=True, check=True).stdout
        finally:
            os.unlink(f"/tmp/perf-{res['pid']}.map")
    rows = []  # (samples, symbol) in the window
    for line in report.splitlines():
        cols = [c.strip() for c in line.split("\t")]
        if len(cols) >= 3 and cols[0].endswith("%") and cols[1].isdigit():
            rows.append((int(cols[1]), cols[2].split("] ", 1)[-1].strip()))
    total = sum(p for p, _ in rows) or 1
    compiled = sum(p for p, sym in rows if "." in sym and not sym.startswith("_"))
    ns_per_sample = 1e9 / SAMPLE_HZ / res["commands"]  # a sample stands for 1/SAMPLE_HZ s of CPU
    what = "the driver's compiled loop (four engines)" if args.driver else "run_stream (the matching step)"
    print(f"\nprofile: {res['commands']:,} commands through {what}, "
          f"{res['ns_per_cmd']:.0f} ns/cmd; mix " + ", ".join(f"{k} {v:.1%}" for k, v in res["mix"].items()))
    print(f"samples while the loops ran: {compiled / total:.1%} in compiled engine code, the rest in libc "
          f"(memmove/memset the engine calls) and Python between passes\n")
    print(f"{'function (self time)':40} {'share':>7} {'ns/cmd':>7}")
    for pct, sym in sorted(rows, reverse=True)[:args.top]:
        print(f"{sym:40} {pct / total:7.1%} {pct * ns_per_sample:7.1f}")
    print(json.dumps({"bench": "profile_matching", "driver": args.driver, "ns_per_cmd": res["ns_per_cmd"],
                      "self_ns_per_cmd": {sym: p * ns_per_sample for p, sym in sorted(rows, reverse=True)[:args.top]}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
