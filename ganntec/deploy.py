"""`ganntec deploy emit`: the systemd drop-in that a config's CPU plan and rings call for.

    ganntec deploy emit --config /etc/ganntec/ganntec.toml --out /etc/systemd/system

writes `<out>/ganntec.service.d/10-plan.conf` beside the shipped units (deploy/systemd/):

- `CPUAffinity=` the plan's CPUs (`runtime.cpus`); none when it is `auto` (the plan is then
  whatever CPUs systemd gives the service);
- `LimitMEMLOCK=` every shared-memory segment the supervisor makes, page-rounded: cmd.0 (admin)
  and cmd.i / reports.i per edge process (ring_capacity x 128-byte slots + the ring header
  each), the four rings between the engines when the placement is per-engine (`auto` with
  `runtime.cpus = "auto"` depends on the host, so it counts them), and the edge segment; plus
  a quarter of headroom, in MiB. Each process locks the segments it maps; the supervisor maps
  them all, so the total bounds every process.

No `Environment=` is needed: the unit itself sets the numba cache directory.

Run it on the target host: loading the config checks `runtime.cpus` against the CPUs the
emitting process may use. Errors are `field=value (reason)`, exit code 2.
"""

from __future__ import annotations

import argparse
import mmap
import os
import re
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

from ganntec import subcommand
from ganntec.config import PLACEMENTS, Config
from ganntec.cpulist import format_cpulist, parse_cpulist
from ganntec.shm.records import RECORD_BYTES

UNIT = "ganntec.service"
DROPIN = f"{UNIT}.d/10-plan.conf"
SLOT_BYTES = RECORD_BYTES  # the supervisor's rings hold one record per slot
HEADROOM_NUM, HEADROOM_DEN = 5, 4  # 25 % above what the segments need
MIB = 1 << 20
PREFIX = "ganntec deploy emit"


class DeployError(ValueError):
    """One or more `field=value (reason)` problems."""

    def __init__(self, problems: list[str]):
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class Plan:
    """What the drop-in is derived from."""

    cpus: frozenset[int] | None  # None: runtime.cpus = "auto"
    placement: str  # single | per-engine (resolved), or "auto" when it depends on the host
    rings: tuple[str, ...]
    ring_bytes: int  # one ring, page-rounded
    segments: tuple[tuple[str, int], ...]  # other segments: (name, page-rounded bytes)
    locked_bytes: int
    memlock_mib: int


def _page_round(n: int) -> int:
    return -(-n // mmap.PAGESIZE) * mmap.PAGESIZE


def _edge_segment_bytes(accounts: int) -> int:
    """Size of the edge processes' shared segment (ganntec/edge/shared.py, EdgeShared.create)."""
    from ganntec.edge.ratelimit import RateTable
    from ganntec.edge.shared import HEADER_BYTES, RATE_SLOTS

    rate_offset = (HEADER_BYTES + 8 * accounts + 63) // 64 * 64
    return rate_offset + 8 * RateTable.words_needed(RATE_SLOTS)


def _check(cfg: Config) -> frozenset[int] | None:
    """The plan's CPUs (None for auto); DeployError lists every problem."""
    rt, problems = cfg.runtime, []
    cpus = None
    if rt.cpus != "auto":
        try:
            cpus = frozenset(parse_cpulist(rt.cpus))
            if not cpus:
                problems.append(f"runtime.cpus={rt.cpus!r} (no CPU)")
        except ValueError as exc:  # "cpulist='x' (bad part 'x')": keep the reason
            why = re.search(r"\((.*)\)$", str(exc))
            problems.append(f"runtime.cpus={rt.cpus!r} ({why[1] if why else exc})")
    if rt.placement not in PLACEMENTS:
        problems.append(f"runtime.placement={rt.placement!r} (one of {', '.join(PLACEMENTS)})")
    cap = rt.ring_capacity
    if cap < 16 or cap & (cap - 1):
        problems.append(f"runtime.ring_capacity={cap} (a power of two >= 16)")
    if not 1 <= cfg.edge.processes <= 64:
        problems.append(f"edge.processes={cfg.edge.processes} (1 .. 64)")
    if not 1 <= cfg.engine.max_accounts <= 1 << 24:
        problems.append(f"engine.max_accounts={cfg.engine.max_accounts} (1 .. {1 << 24})")
    if problems:
        raise DeployError(problems)
    return cpus


def plan(cfg: Config) -> Plan:
    """The CPU plan and the locked-memory budget of `cfg`."""
    from ganntec.shm.ring import ring_bytes
    from ganntec.workers.runtime import INTERNAL_RINGS, cmd_ring, reports_ring

    cpus = _check(cfg)
    rt = cfg.runtime
    if rt.placement == "auto" and cpus is None:
        placement = "auto"  # decided on the host at each start: count the larger (per-engine)
    else:
        placement = cfg.placement()
    sources = 1 + cfg.edge.processes
    rings = [cmd_ring(s) for s in range(sources)] + [reports_ring(e) for e in range(1, sources)]
    if placement != "single":
        rings += list(INTERNAL_RINGS)
    one = _page_round(ring_bytes(rt.ring_capacity, SLOT_BYTES))
    segments = []
    if cfg.edge.enabled:
        segments.append(("edge", _page_round(_edge_segment_bytes(cfg.engine.max_accounts))))
    locked = one * len(rings) + sum(size for _, size in segments)
    mib = -(-locked * HEADROOM_NUM // (HEADROOM_DEN * MIB))  # ceil(locked x 5/4 / MiB)
    return Plan(cpus, placement, tuple(rings), one, tuple(segments), locked, mib)


def _comment(text: str, indent: str = "") -> list[str]:
    """`text` as `#` comment lines of at most 96 characters."""
    return textwrap.wrap(text, 96, initial_indent="# " + indent, subsequent_indent="# " + indent,
                         break_long_words=False, break_on_hyphens=False)


def render(cfg: Config, source: str | None = None) -> dict[str, str]:
    """The files to write, by path relative to the output directory."""
    p = plan(cfg)
    rt = cfg.runtime
    made_from = f" from {source}" if source else ""
    out = _comment(f"Generated by `ganntec deploy emit`{made_from}. Do not edit: change the config, emit "
                   "again, then `systemctl daemon-reload` and `systemctl restart ganntec.target`.")
    out.append("#")
    if p.cpus is None:
        out += _comment('CPU plan: runtime.cpus = "auto", so no CPUAffinity= here: the service runs on the '
                        "CPUs systemd gives it (CPUAffinity= in /etc/systemd/system.conf), and those are "
                        "the plan.")
    else:
        out += _comment(f'CPU plan: runtime.cpus = "{rt.cpus}", CPUs {format_cpulist(p.cpus)}. The supervisor '
                        "and every process it forks run on them; it pins each engine worker to one of them.")
    if p.placement == "auto":
        how = ('runtime.placement = "auto" with automatic CPUs, decided at each start (the memory below is '
               "sized for per-engine)")
    elif rt.placement == "auto":
        how = f'runtime.placement = "auto", {p.placement} with these CPUs'
    else:
        how = f'runtime.placement = "{rt.placement}"'
    if cfg.edge.enabled:
        edges = f"{cfg.edge.processes} edge process{'es' if cfg.edge.processes != 1 else ''}"
    else:
        edges = "edge disabled (its command and reports rings stay)"
    out += _comment(f"Placement: {how}; {edges}.")
    out.append("#")
    out += _comment("Locked memory, page-rounded (each process locks the segments it maps; the supervisor "
                    "maps them all):")
    out += _comment(f"{len(p.rings)} rings x {p.ring_bytes} bytes ({rt.ring_capacity} slots x {SLOT_BYTES} "
                    f"bytes + header): {' '.join(p.rings)}", "  ")
    for name, size in p.segments:
        out += _comment(f"segment {name}: {size} bytes", "  ")
    out += _comment(f"total {p.locked_bytes} bytes; LimitMEMLOCK= has 25 % more, in MiB.", "  ")
    out.append("[Service]")
    if p.cpus is not None:
        out += ["CPUAffinity=", f"CPUAffinity={format_cpulist(p.cpus)}"]
    out.append(f"LimitMEMLOCK={p.memlock_mib}M")
    return {DROPIN: "\n".join(out) + "\n"}


def emit(cfg: Config, out_dir: str | os.PathLike, source: str | None = None) -> list[Path]:
    """Write the drop-ins for `cfg` under `out_dir` (e.g. /etc/systemd/system); their paths."""
    files = render(cfg, source)
    root = Path(out_dir)
    if not root.is_dir():
        why = "not a directory" if root.exists() else "no such directory"
        raise DeployError([f"--out={out_dir} ({why})"])
    written = []
    for rel, text in files.items():
        path = root / rel
        try:
            path.parent.mkdir(mode=0o755, exist_ok=True)
            tmp = path.with_name(f".{path.name}.tmp")
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(text)
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        except OSError as exc:
            raise DeployError([f"--out={out_dir} (cannot write {rel}: {exc.strerror or exc})"]) from None
        written.append(path)
    return written


# --- command line -------------------------------------------------------------------------

def _cmd_emit(args: argparse.Namespace) -> int:
    from ganntec.config import ConfigError, load

    try:
        cfg = load(args.config)
        paths = emit(cfg, args.out, source=args.config)
    except (ConfigError, DeployError) as exc:
        for problem in exc.problems:
            print(f"{PREFIX}: {problem}", file=sys.stderr)
        return 2
    for path in paths:
        print(f"wrote {path}")
    print("then: systemctl daemon-reload && systemctl restart ganntec.target")
    return 0


def _build(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="deploy_command", required=True)
    em = sub.add_parser("emit", help="write the systemd drop-in for a config's CPU plan and rings",
                        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    em.add_argument("--config", required=True, help="the TOML config the service runs with")
    em.add_argument("--out", required=True,
                    help="directory that gets ganntec.service.d/10-plan.conf (e.g. /etc/systemd/system)")
    em.set_defaults(deploy_handler=_cmd_emit)


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add `deploy` to the `ganntec` command's subparsers; it dispatches through `func=run`."""
    return subcommand.add(subparsers, "deploy", "systemd deployment helpers (ganntec deploy emit)", __doc__,
                          _build, run)


def build_parser() -> argparse.ArgumentParser:
    return subcommand.standalone("ganntec deploy", __doc__, _build)


def run(args: argparse.Namespace) -> int:
    """Run a parsed `ganntec deploy` command; the exit code."""
    return args.deploy_handler(args)


def main(argv: list[str] | None = None) -> int:
    """`ganntec deploy` with these arguments (those after `deploy`)."""
    return subcommand.main(build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
