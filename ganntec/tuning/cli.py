"""`ganntec tune`: check, plan, apply and undo the host, kernel and NIC settings a co-located
low-latency host needs, derived from the engine's CPU plan (see tuning/README.md).

    ganntec tune check    [--config C] [--root /] [--nic eth0] [--nic-cpus 1] [--json]
    ganntec tune plan     [--config C] [--root /] ...
    ganntec tune apply    --root / [--config C] ...     (live: root and GANNTEC_TUNE_ALLOW_LIVE=1)
    ganntec tune undo     --root /
    ganntec tune emit     --out DIR [--config C] [--root /]
    ganntec tune snapshot --out DIR [--root /]

check exit codes: 0 every applicable setting matches; 1 drift; 2 a required item is
unsupported (no /proc/cmdline or /dev/shm, the configured NIC or its IRQ affinity files absent,
no ethtool program while a NIC is configured) or anything is unreadable. An optional feature
the kernel or driver lacks (cpufreq on a VM, THP, a sysctl, xps_cpus, ethtool `n/a`,
irqbalance not installed) is `n/a`: never drift, never an error. Configuration problems exit 2
as `field=value (reason)`.

Every /proc, /sys, /etc and /dev path is read under --root (default /). Under any other root
no command reaches a real NIC: `ethtool` reads come from the tree's .ganntec-tune/ethtool/
captures (`snapshot` makes them) and changes are logged to .ganntec-tune/commands.log.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path

from ganntec import subcommand

PREFIX = "ganntec tune"


def _context(args: argparse.Namespace):
    """(host, cfg, partition) or raise _Fail with the problems."""
    from ganntec.config import ConfigError, check_tuning, load
    from ganntec.tuning.cpus import PartitionError, online_cpus, partition
    from ganntec.tuning.host import host_for

    host = host_for(args.root or "/", _euid(args))
    try:
        online = set(online_cpus(host))
        cfg = load(args.config, cpus_available=online)
        if args.nic is not None:
            cfg = dataclasses.replace(cfg, tuning=dataclasses.replace(cfg.tuning, nic=args.nic))
            problems: list[str] = []
            check_tuning(cfg.tuning, problems)
            if problems:
                raise ConfigError([p.replace("tuning.nic=", "--nic=") for p in problems])
        part = partition(cfg, host, args.nic_cpus)
    except (ConfigError, PartitionError) as exc:
        raise _Fail(exc.problems) from None
    return host, cfg, part


class _Fail(Exception):
    def __init__(self, problems: list[str]):
        super().__init__("; ".join(problems))
        self.problems = problems


def _euid(args: argparse.Namespace):
    """The effective-uid function (tests set args.euid to act as another user)."""
    return getattr(args, "euid", None) or os.geteuid


def _results(args: argparse.Namespace):
    from ganntec.tuning.plan import build
    from ganntec.tuning.settings import check_all

    host, cfg, part = _context(args)
    plan = build(cfg, part, host, cfg.tuning.nic)
    return host, cfg, part, plan, check_all(list(plan.settings), host)


def format_line(r, planning: bool) -> str:
    """One setting, as check (status) or plan (what would be done) prints it."""
    from ganntec.tuning.settings import DRIFT, NA, OK

    s = r.setting
    if r.status == DRIFT:
        word = ("reboot" if s.reboot else "manual" if s.check_only else "change") if planning else "drift"
        tail = f"{r.current} -> {s.want}"
        if planning:
            tail += f" ({s.action()})"
    elif r.status == OK:
        word, tail = "ok", r.current or ""
    else:
        word = r.status if r.status == NA else r.status.upper()
        tail = f"({r.detail})"
    return f"{word:<11} {s.key:<34} {tail}  # {s.reason}"


def _reboot_block(results) -> list[str]:
    from ganntec.tuning.settings import DRIFT, CmdlineSetting

    wanted = [r.setting for r in results if isinstance(r.setting, CmdlineSetting) and r.status == DRIFT]
    if not wanted:
        return ["Needs a reboot: nothing (the boot parameters match)"]
    return ["Needs a reboot (boot parameters are checked and printed, never applied); add to the kernel command line:",
            "  " + " ".join(s.fragment() for s in wanted)]


def _summary(results) -> str:
    from ganntec.tuning.settings import DRIFT, NA, OK

    n = {k: 0 for k in ("change", "manual", "reboot", OK, NA, "problem")}
    for r in results:
        s = r.setting
        if r.status == DRIFT:
            n["reboot" if s.reboot else "manual" if s.check_only else "change"] += 1
        elif r.status in (OK, NA):
            n[r.status] += 1
        else:
            n["problem"] += 1
    return (f"{n['change']} to change, {n['manual']} check-only to fix by hand, {n['reboot']} boot parameters, "
            f"{n['ok']} ok, {n['n/a']} n/a, {n['problem']} unsupported or unreadable")


def _cmd_check(args: argparse.Namespace) -> int:
    from ganntec.tuning.settings import exit_code

    _, _, part, plan, results = _results(args)
    code = exit_code(results)
    if args.json:
        print(json.dumps([r.as_json() for r in results], indent=1))
        return code
    for note in plan.notes:
        print(note)
    for r in results:
        print(format_line(r, planning=False))
    print(f"exit {code}: " + {0: "every applicable setting matches", 1: "drift",
                              2: "unsupported or unreadable items"}[code])
    return code


def _cmd_plan(args: argparse.Namespace) -> int:
    _, _, part, plan, results = _results(args)
    for note in plan.notes:
        print(note)
    print()
    for r in results:
        print(format_line(r, planning=True))
    print()
    for line in _reboot_block(results):
        print(line)
    print(_summary(results))
    return 0


def _authorized(args: argparse.Namespace, what: str):
    from ganntec.tuning.apply import Refused, authorize
    from ganntec.tuning.host import host_for

    host = host_for(args.root or "/", _euid(args))
    try:
        authorize(args.root, host, os.environ, what)
    except Refused as exc:
        raise _Fail([str(exc)]) from None
    return host


def _cmd_apply(args: argparse.Namespace) -> int:
    from ganntec.tuning.apply import UndoFileError, apply
    from ganntec.tuning.settings import DRIFT

    _authorized(args, "apply")
    host, _, part, plan, results = _results(args)
    for note in plan.notes:
        print(note)
    try:
        code = apply(results, host)
    except UndoFileError as exc:
        raise _Fail([f"undo file={exc} (fix or remove it: it holds the values from before the first apply)"]) from None
    for r in results:
        if r.status == DRIFT and r.setting.check_only and not r.setting.reboot:
            print(f"by hand  {r.setting.key}: {r.current}, want {r.setting.want}: {r.setting.action()}")
    for line in _reboot_block(results):
        print(line)
    return code


def _cmd_undo(args: argparse.Namespace) -> int:
    from ganntec.tuning.apply import UndoFileError, undo

    host = _authorized(args, "undo")
    try:
        return undo(host)
    except UndoFileError as exc:
        raise _Fail([f"undo file={exc}"]) from None


def _cmd_emit(args: argparse.Namespace) -> int:
    from ganntec.tuning.emit import emit

    from ganntec.tuning.plan import nic_irq_list

    host, cfg, part = _context(args)
    nic = cfg.tuning.nic
    try:
        paths = emit(cfg, part, args.out, args.config, nic_irq_list(host, nic) if nic and part.nic else ())
    except ValueError as exc:
        raise _Fail([str(exc)]) from None
    for p in paths:
        print(f"wrote {p}")
    print("then copy them under /etc (same relative paths), add kernel-cmdline.txt to the boot loader and reboot")
    return 0


def _cmd_snapshot(args: argparse.Namespace) -> int:
    from ganntec.tuning.host import host_for
    from ganntec.tuning.snapshot import take

    out = Path(args.out).resolve()
    root = Path(args.root or "/").resolve()
    for api in ("proc", "sys"):
        if out == root / api or (root / api) in out.parents:
            raise _Fail([f"--out={args.out} (inside {root / api}: a snapshot is written outside the root's /{api})"])
    snap = take(host_for(root), out)
    print(f"copied {len(snap.copied)} files and outputs into {out}")
    for line in snap.skipped:
        print(f"skipped {line}")
    return 0


def _common(p: argparse.ArgumentParser, root_help: str) -> None:
    p.add_argument("--root", help=root_help)
    p.add_argument("--config", help="the TOML config the engine runs with (default: the demo config)")
    p.add_argument("--nic", help="the market-data NIC (overrides tuning.nic)")
    p.add_argument("--nic-cpus", help="cpulist for the NIC's queue IRQs (overrides tuning.nic_cpus)")


def _build(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="tune_command", required=True)
    read_root = "prefix for every /proc, /sys, /etc, /dev path (default /): a fake tree in tests"
    ch = sub.add_parser("check", help="current vs recommended; exit 0 match, 1 drift, 2 unsupported/unreadable",
                        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    _common(ch, read_root)
    ch.add_argument("--json", action="store_true", help="a JSON list: key, kind, path or cmd, current, want, "
                                                         "status, reason, reboot, detail")
    ch.set_defaults(tune_handler=_cmd_check)
    pl = sub.add_parser("plan", help="what apply would change, and what needs a reboot")
    _common(pl, read_root)
    pl.set_defaults(tune_handler=_cmd_plan)
    ap = sub.add_parser("apply", help="change the runtime settings (saves originals for undo)")
    _common(ap, "required: the root to change (/ also needs root and GANNTEC_TUNE_ALLOW_LIVE=1)")
    ap.set_defaults(tune_handler=_cmd_apply)
    un = sub.add_parser("undo", help="restore the values saved by apply")
    un.add_argument("--root", help="required: as for apply")
    un.set_defaults(tune_handler=_cmd_undo)
    em = sub.add_parser("emit", help="write sysctl.d, tmpfiles.d, irqbalance, TuneD profile, systemd drop-in, "
                                     "kernel-cmdline.txt")
    _common(em, read_root + "; its online CPUs are the plan's")
    em.add_argument("--out", required=True, help="directory to write into (paths as under /etc)")
    em.set_defaults(tune_handler=_cmd_emit)
    sn = sub.add_parser("snapshot", help="copy what the tool reads (read-only) into a fixture tree")
    sn.add_argument("--root", help="the tree to copy from (default /)")
    sn.add_argument("--out", required=True, help="the fixture tree to write")
    sn.set_defaults(tune_handler=_cmd_snapshot)


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add `tune` to the `ganntec` command's subparsers; it dispatches through `func=run`."""
    return subcommand.add(subparsers, "tune", "host, kernel and NIC tuning (check, plan, apply, undo, emit)",
                          __doc__, _build, run)


def build_parser() -> argparse.ArgumentParser:
    return subcommand.standalone(PREFIX, __doc__, _build)


def run(args: argparse.Namespace) -> int:
    """Run a parsed `ganntec tune` command; the exit code (2 for any problem before it acts)."""
    try:
        return args.tune_handler(args)
    except _Fail as exc:
        for problem in exc.problems:
            print(f"{PREFIX} {args.tune_command}: {problem}", file=sys.stderr)
        return 2


def main(argv: list[str] | None = None) -> int:
    """`ganntec tune` with these arguments (those after `tune`)."""
    return subcommand.main(build_parser(), run, argv)
