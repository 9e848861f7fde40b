"""The `ganntec` command."""

from __future__ import annotations

import argparse
import os
import dataclasses
import subprocess
import sys
import time
from pathlib import Path

import orjson

REPO_ROOT = Path(__file__).resolve().parents[1]


def _cmd_run(args: argparse.Namespace) -> int:
    from ganntec.config import ConfigError, load
    from ganntec.edge.vault import VaultError
    from ganntec.journal.journal import JournalBusy, JournalCorrupt
    from ganntec.journal.replay import ReplayMismatch
    from ganntec.shm.segment import SegmentError
    from ganntec.workers.supervisor import Supervisor

    try:
        cfg = load(args.config, args.data_dir)
        for flag, field in (("--port", "port"), ("--admin-port", "admin_port")):
            value = getattr(args, field)
            if value is not None:
                if not 0 <= value <= 65535:
                    raise ConfigError([f"{flag}={value} (0 .. 65535)"])
                cfg = dataclasses.replace(cfg, edge=dataclasses.replace(cfg.edge, **{field: value}))
        if cfg.edge.port == cfg.edge.admin_port and cfg.edge.port != 0:
            raise ConfigError([f"--admin-port={cfg.edge.admin_port} (must differ from the edge's port)"])
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"ganntec run: {problem}", file=sys.stderr)
        return 2
    from ganntec.logline import FORMAT_ENV
    from ganntec.metrics import prepare
    if args.log_format is not None:
        os.environ[FORMAT_ENV] = args.log_format  # the processes it forks inherit it
    prepare(cfg.instance.data_dir)  # every process it forks records metrics under <data-dir>/metrics
    try:
        return Supervisor(cfg).run()
    except VaultError as exc:  # the master key's file or variable: a configuration problem
        print(f"ganntec run: {exc}", file=sys.stderr)
        return 2
    except (JournalBusy, JournalCorrupt, ReplayMismatch, SegmentError) as exc:
        print(f"ganntec run: {exc}", file=sys.stderr)
        return 1


def _run_bench(name: str, extra: list[str]) -> int:
    script = REPO_ROOT / "bench" / f"{name}.py"
    if not script.is_file():
        print(f"ganntec: bench={name!r} (no {script}; benchmarks run from a source checkout)", file=sys.stderr)
        return 2
    return subprocess.call([sys.executable, str(script), *extra])


def _cmd_bench(args: argparse.Namespace) -> int:
    return _run_bench(args.name, ["--quick"] if args.quick else [])


def _cmd_inspect(args: argparse.Namespace) -> int:
    from ganntec.inspect.segments import format_table, sample

    for flag in ("rates", "watch"):
        value = getattr(args, flag)
        if value is not None and not 0 < value <= 3600:
            print(f"ganntec inspect: --{flag}={value} (seconds, > 0 and <= 3600)", file=sys.stderr)
            return 2
    gap = args.watch or args.rates or 0.0
    if args.watch and not args.json and sys.stdout.isatty():
        return _watch_live(args, gap)
    try:
        while True:
            rows = sample(args.instance, gap, args.name or "")
            if args.json:
                sys.stdout.buffer.write(orjson.dumps(rows) + b"\n")
                sys.stdout.flush()
            else:
                if args.watch:
                    print("\x1b[H\x1b[2J", end="")  # a terminal's clear screen: the view refreshes in place
                print(format_table(rows, time.monotonic_ns(), args.account), flush=True)
            if not args.watch:
                return 0
    except KeyboardInterrupt:
        return 0


def _watch_live(args: argparse.Namespace, gap: float) -> int:
    """--watch on a terminal: rich tables redrawn in place (inspect/live.py)."""
    from rich.live import Live

    from ganntec.inspect.live import render
    from ganntec.inspect.segments import sample

    try:
        with Live(render([]), auto_refresh=False, screen=False) as live:
            while True:
                rows = sample(args.instance, gap, args.name or "")
                live.update(render(rows, time.monotonic_ns(), args.account), refresh=True)
    except KeyboardInterrupt:
        return 0


def _cmd_clean(args: argparse.Namespace) -> int:
    from ganntec.shm.segment import SegmentError, remove_stale, validate_name

    try:
        validate_name("instance", args.instance)
        removed = remove_stale(args.instance)
    except (ValueError, SegmentError) as exc:
        print(f"ganntec clean: {exc}", file=sys.stderr)
        return 2
    for name in removed:
        print(f"removed {name}")
    if not removed:
        print(f"nothing to remove for instance {args.instance!r}")
    return 0


def _cmd_tls(args: argparse.Namespace) -> int:
    from ganntec.edge.tls import self_signed

    if args.days < 1:
        print(f"ganntec tls self-signed: --days={args.days} (at least 1)", file=sys.stderr)
        return 2
    try:
        cert, key = self_signed(args.out, tuple(args.host or ("127.0.0.1", "localhost")), args.days)
    except (OSError, ValueError) as exc:
        print(f"ganntec tls self-signed: --out={args.out} ({exc})", file=sys.stderr)
        return 2
    print(f"certificate {cert}\nkey         {key} (mode 0600)\nin the config (clients must trust the certificate):\n"
          f"[edge]\ntls_cert = \"{cert}\"\ntls_key = \"{key}\"")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ganntec", description="Ganntec trading engine")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the exchange (the embedded demo config unless --config)")
    run.add_argument("--config", help="TOML config file (default: the demo config, see ganntec.config)")
    run.add_argument("--data-dir", help="journal and snapshots here (overrides instance.data_dir)")
    run.add_argument("--port", type=int, help="the edge's REST/WebSocket port (overrides edge.port; 0 = any free)")
    run.add_argument("--admin-port", type=int, help="the admin API's port (overrides edge.admin_port; 0 = any free)")
    run.add_argument("--log-format", choices=("text", "json"),
                     help="text (default) or JSON lines: ts, level, component, pid, msg (also GANNTEC_LOG_FORMAT)")
    run.set_defaults(func=_cmd_run)

    bench = sub.add_parser("bench", help="run a benchmark from bench/")
    bench.add_argument("name", help="benchmark name, e.g. ring")
    bench.add_argument("--quick", action="store_true")
    bench.set_defaults(func=_cmd_bench)

    insp = sub.add_parser("inspect", help="read-only view of shared-memory segments")
    insp.add_argument("--instance", default=None)
    insp.add_argument("--json", action="store_true")
    insp.add_argument("--rates", type=float, metavar="S", help="read twice S seconds apart: records/s, stalls/s, CPU")
    insp.add_argument("--watch", type=float, metavar="S", help="refresh every S seconds (rates over each S) until ^C")
    insp.add_argument("--name", help="only segments whose name contains this")
    insp.add_argument("--account", type=int, metavar="ID", help="also show this account's balances (balances table)")
    insp.set_defaults(func=_cmd_inspect)

    clean = sub.add_parser("clean", help="remove the segments a dead instance left behind")
    clean.add_argument("--instance", required=True)
    clean.set_defaults(func=_cmd_clean)

    from ganntec.admin.cli import add_parser as add_admin_parser
    add_admin_parser(sub)  # ganntec admin ...: the admin API's client (ganntec/admin/cli.py)
    from ganntec.deploy import add_parser as add_deploy_parser
    add_deploy_parser(sub)  # ganntec deploy emit --config X --out DIR (ganntec/deploy.py)
    from ganntec.tuning.cli import add_parser as add_tune_parser
    add_tune_parser(sub)  # ganntec tune check|plan|apply|undo|emit|snapshot (ganntec/tuning/cli.py)

    tls = sub.add_parser("tls", help="TLS helpers")
    tls_sub = tls.add_subparsers(dest="tls_command", required=True)
    selfsigned = tls_sub.add_parser("self-signed", help="write a self-signed cert.pem and key.pem (tests, demos)")
    selfsigned.add_argument("--out", required=True, help="directory for cert.pem and key.pem (key mode 0600)")
    selfsigned.add_argument("--host", action="append", help="IP address or DNS name it is valid for (repeatable; "
                                                            "default 127.0.0.1 and localhost)")
    selfsigned.add_argument("--days", type=int, default=365)
    selfsigned.set_defaults(func=_cmd_tls)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
