"""The systemd units in deploy/ checked with systemd's own tools, without a systemd manager
(never start one in tests: ops-facts 4.3):

- `systemd-analyze verify --man=no --recursive-errors=yes` on every unit, alone and with the
  drop-in `ganntec deploy emit` writes (verify reads `<unit>.d/` beside the unit). verify needs
  the ExecStart= binary to exist: the shipped units run `/usr/bin/env ganntec ...`, so it
  checks /usr/bin/env, and the `ganntec` arguments are checked here against the CLI parser;
- `systemd-analyze security --offline=yes --threshold=N`, N the tightest each unit passes;
- `systemd-sysusers --root` and `systemd-tmpfiles --root --create` in a fake root;
- the syscall filter against every syscall a real `ganntec run` makes (strace).

systemd-analyze missing is a failure, not a skip: CI (.ci/run) installs systemd if needed.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from ganntec import deploy
from ganntec.config import DEMO_TOML, load
from ganntec.cpulist import format_cpulist

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
UNITS = sorted((DEPLOY / "systemd").iterdir())
SERVICES = [u for u in UNITS if u.suffix == ".service"]

# Exposure x 10 as `systemd-analyze security --offline=yes` (systemd 252) scores each unit, and
# the gate: the tightest threshold it passes. Units without network must stay <= 20 (2.0);
# the supervisor serves the edge (AF_INET, no PrivateNetwork=) and forks JIT processes that
# notify (NotifyAccess=all), so its gate is looser.
MEASURED = {"ganntec.service": 16, "ganntec-clean@.service": 5}
NO_NETWORK_GATE = 20


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is missing: install systemd's tools (`apt-get install -y systemd`; .ci/run does "
                    f"it when they are missing). These checks must not pass by being skipped.")
    return path


def run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, encoding="utf-8", errors="replace",
                          timeout=60, check=False)


def keys(unit: Path) -> dict[str, list[str]]:
    """Every `Key=value` of a unit file (all sections), values in order."""
    out: dict[str, list[str]] = {}
    for line in unit.read_text().splitlines():
        if line and not line.startswith(("#", ";", "[")):
            k, _, v = line.partition("=")
            out.setdefault(k.strip(), []).append(v.strip())
    return out


@pytest.fixture
def unit_dir(tmp_path) -> Path:
    """A copy of deploy/systemd/ (verify and security read drop-ins beside the units)."""
    d = tmp_path / "units"
    shutil.copytree(DEPLOY / "systemd", d)
    return d


def verify(units: list[Path], cwd: Path) -> subprocess.CompletedProcess:
    return run([tool("systemd-analyze"), "verify", "--man=no", "--recursive-errors=yes", *map(str, units)], cwd)


# --- verify -----------------------------------------------------------------------------------

def test_every_unit_verifies_cleanly(unit_dir, tmp_path):
    units = sorted(unit_dir.iterdir())
    assert [u.name for u in units] == ["ganntec-clean@.service", "ganntec.service", "ganntec.target"]
    r = verify(units, tmp_path)
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "")


def test_verify_fails_on_what_it_should(unit_dir, tmp_path):
    """The checker is live: a misspelt key and a missing ExecStart= binary each fail it."""
    svc = unit_dir / "ganntec.service"
    text = svc.read_text()
    svc.write_text(text.replace("LimitMEMLOCK=", "LimitMEMLOK="))
    r = verify([svc], tmp_path)
    assert r.returncode != 0 and "Unknown key 'LimitMEMLOK'" in r.stderr
    svc.write_text(text.replace("ExecStart=/usr/bin/env ganntec", f"ExecStart={tmp_path}/no-such-ganntec"))
    r = verify([svc], tmp_path)
    assert r.returncode != 0 and "is not executable" in r.stderr


def test_verify_with_an_exec_start_pointing_at_this_python(unit_dir, tmp_path):
    """The form an install without /usr/bin/env on PATH would use: an absolute interpreter."""
    svc = unit_dir / "ganntec.service"
    svc.write_text(svc.read_text().replace("ExecStart=/usr/bin/env ganntec", f"ExecStart={sys.executable} -m ganntec.cli"))
    r = verify([svc, unit_dir / "ganntec.target"], tmp_path)
    assert (r.returncode, r.stderr) == (0, "")


def test_the_emitted_dropin_verifies_and_keeps_the_exposure(unit_dir, tmp_path):
    demo = load(None)
    cfg = dataclasses.replace(demo, runtime=dataclasses.replace(demo.runtime, cpus="0-3", placement="per-engine"),
                              edge=dataclasses.replace(demo.edge, processes=2))
    (dropin,) = deploy.emit(cfg, unit_dir, source="/etc/ganntec/ganntec.toml")
    assert dropin == unit_dir / "ganntec.service.d" / "10-plan.conf"
    r = verify([unit_dir / "ganntec.service", unit_dir / "ganntec.target"], tmp_path)
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "")
    # the drop-in is read: a typo in it fails verify
    dropin.write_text(dropin.read_text().replace("CPUAffinity=0-3", "CPUAffinty=0-3"))
    r = verify([unit_dir / "ganntec.service"], tmp_path)
    assert r.returncode != 0 and "10-plan.conf" in r.stderr and "CPUAffinty" in r.stderr
    dropin.write_text(dropin.read_text().replace("CPUAffinty=0-3", "CPUAffinity=0-3"))
    assert exposure(unit_dir / "ganntec.service", tmp_path) == MEASURED["ganntec.service"]


@pytest.mark.parametrize("unit", [u.name for u in UNITS if "ExecStart" in u.read_text()])
def test_exec_start_is_a_ganntec_command_line_the_cli_accepts(unit):
    """verify only checks /usr/bin/env exists; the arguments after `ganntec` are checked here."""
    from ganntec.cli import build_parser

    (cmd,) = keys(DEPLOY / "systemd" / unit)["ExecStart"]
    argv = cmd.replace("%i", "demo").split()
    assert argv[:2] == ["/usr/bin/env", "ganntec"]
    args = build_parser().parse_args(argv[2:])
    assert callable(args.func)


# --- security ---------------------------------------------------------------------------------

def exposure(unit: Path, cwd: Path) -> int:
    """The unit's overall exposure x 10, as printed by `systemd-analyze security --offline=yes`."""
    r = run([tool("systemd-analyze"), "security", "--offline=yes", str(unit)], cwd)
    m = re.search(r"Overall exposure level for \S+: (\d+)\.(\d)", r.stdout)
    assert m, r.stdout + r.stderr
    return int(m[1]) * 10 + int(m[2])


def test_every_service_has_a_gate():
    assert sorted(u.name for u in SERVICES) == sorted(MEASURED)


@pytest.mark.parametrize("name", sorted(MEASURED))
def test_security_exposure_is_gated_at_the_tightest_threshold(name, unit_dir, tmp_path):
    unit = unit_dir / name
    gate = MEASURED[name]
    r = run([tool("systemd-analyze"), "security", "--offline=yes", f"--threshold={gate}", str(unit)], tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr
    score = exposure(unit, tmp_path)
    assert score <= gate
    if score < gate:
        pytest.fail(f"{name} now scores {score / 10} (better than {gate / 10}): tighten MEASURED to {score}")
    no_network = keys(unit).get("PrivateNetwork") == ["yes"]
    if no_network:
        assert gate <= NO_NETWORK_GATE
    r = run([tool("systemd-analyze"), "security", "--offline=yes", f"--threshold={gate - 1}", str(unit)], tmp_path)
    assert r.returncode != 0  # the gate is the tightest: one point less fails


def test_the_gate_catches_a_regression(unit_dir, tmp_path):
    svc = unit_dir / "ganntec.service"
    svc.write_text(svc.read_text().replace("ProtectSystem=strict", "ProtectSystem=no"))
    r = run([tool("systemd-analyze"), "security", "--offline=yes", f"--threshold={MEASURED['ganntec.service']}",
             str(svc)], tmp_path)
    assert r.returncode != 0


# --- the decisions written in the units ---------------------------------------------------------

def test_the_supervisor_unit_keeps_the_architecture_decisions():
    k = keys(DEPLOY / "systemd" / "ganntec.service")
    one = {key: v[-1] for key, v in k.items()}
    assert one["Type"] == "notify" and one["NotifyAccess"] == "all" and int(one["WatchdogSec"]) > 0
    assert one["KillMode"] == "mixed" and one["KillSignal"] == "SIGTERM" and one["Restart"] == "on-failure"
    assert one["User"] == one["Group"] == "ganntec" and one["RemoveIPC"] == "no"
    assert one["StateDirectory"] == one["CacheDirectory"] == one["ConfigurationDirectory"] == "ganntec"
    assert "NUMBA_CACHE_DIR=%C/ganntec/numba" in one["Environment"].split()
    assert "GANNTEC_NUMBA_CACHE_DIR=%C/ganntec/numba" in one["Environment"].split()
    assert one["PartOf"] == "ganntec.target" and one["CapabilityBoundingSet"] == ""
    assert one["RestrictAddressFamilies"].split() == ["AF_UNIX", "AF_INET", "AF_INET6"]
    assert one["ExecStart"] == "/usr/bin/env ganntec run --config /etc/ganntec/ganntec.toml --log-format json"
    for unit in UNITS:  # never on any Ganntec unit (all JIT-compile; all share the segments' user)
        k = keys(unit)
        assert "DynamicUser" not in k and "MemoryDenyWriteExecute" not in k and "CPUSchedulingPolicy" not in k
        if unit.suffix == ".service":
            assert k["RemoveIPC"] == ["no"] and k["User"] == ["ganntec"] and k["RestrictRealtime"] == ["yes"]
    target = keys(DEPLOY / "systemd" / "ganntec.target")
    assert target["Wants"] == ["ganntec.service"] and target["WantedBy"] == ["multi-user.target"]


# --- sysusers.d and tmpfiles.d in a fake root ----------------------------------------------------

def test_sysusers_and_tmpfiles_in_a_fake_root(tmp_path):
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)  # sysusers needs /etc to lock passwd in
    r = run([tool("systemd-sysusers"), f"--root={root}", str(DEPLOY / "sysusers.d" / "ganntec.conf")], tmp_path)
    assert r.returncode == 0, r.stderr
    (entry,) = [line for line in (root / "etc" / "passwd").read_text().splitlines() if line.startswith("ganntec:")]
    _, _, uid, gid, _, home, shell = entry.split(":")
    assert 0 < int(uid) < 1000 and gid == uid  # a system user: logind's RemoveIPC= skips it
    assert (home, shell) == ("/var/lib/ganntec", "/usr/sbin/nologin")
    assert f"ganntec:x:{gid}:" in (root / "etc" / "group").read_text()

    r = run([tool("systemd-tmpfiles"), f"--root={root}", "--create", str(DEPLOY / "tmpfiles.d" / "ganntec.conf")],
            tmp_path)
    assert r.returncode == 0, r.stderr
    found = {}
    for rel in ("var/lib/ganntec", "var/cache/ganntec", "etc/ganntec"):
        st = (root / rel).stat()
        found[rel] = (oct(st.st_mode & 0o7777), st.st_uid, st.st_gid)
    assert found == {"var/lib/ganntec": ("0o750", int(uid), int(gid)),
                     "var/cache/ganntec": ("0o750", int(uid), int(gid)),
                     "etc/ganntec": ("0o755", 0, 0)}
    # the unit gives the same modes to the directories it manages (it re-applies them at start)
    one = {key: v[-1] for key, v in keys(DEPLOY / "systemd" / "ganntec.service").items()}
    assert (one["StateDirectoryMode"], one["CacheDirectoryMode"]) == ("0750", "0750")
    assert "ConfigurationDirectoryMode" not in one  # default 0755, as tmpfiles makes it


# --- the syscall filter against a real `ganntec run` ---------------------------------------------

def _expand(group: str) -> set[str]:
    out = run([tool("systemd-analyze"), "syscall-filter", group], Path("/")).stdout
    names: set[str] = set()
    for line in out.splitlines()[1:]:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        names |= _expand(line) if line.startswith("@") else {line}
    return names


def _allowed(unit: Path) -> set[str]:
    allowed: set[str] | None = None
    for value in keys(unit)["SystemCallFilter"]:
        deny = value.startswith("~")
        names = set().union(*(_expand(n) if n.startswith("@") else {n} for n in value.lstrip("~").split()))
        if deny:
            allowed = (allowed if allowed is not None else set()) - names
        else:
            allowed = (allowed or set()) | names
    assert allowed
    return allowed


# SQLite (the history process) fchown()s its journal and WAL files only when it runs as root
# (robust_fchown: geteuid() == 0); the unit runs as ganntec, and SystemCallErrorNumber=EPERM
# would make the call fail harmlessly (SQLite ignores its result) instead of killing.
TOLERATED = {"fchown"}


def test_the_syscall_filter_allows_everything_ganntec_run_does(instance, tmp_path):
    """`ganntec run` (per-engine, pinned, one edge, history) under `strace -f -c`: a start, REST
    and WebSocket traffic, a signed order, a clean stop on SIGTERM; every syscall it made must
    pass the supervisor unit's SystemCallFilter=."""
    strace = shutil.which("strace")
    if strace is None:
        pytest.skip("strace is not installed (apt-get install -y strace)")
    allowed = _allowed(DEPLOY / "systemd" / "ganntec.service")
    keys_ = keys(DEPLOY / "systemd" / "ganntec.service")
    assert keys_["SystemCallErrorNumber"] == ["EPERM"]
    cpus = format_cpulist(os.sched_getaffinity(0))
    config = DEMO_TOML.replace('name = "demo"', f'name = "{instance}"').replace(
        'placement = "auto"', f'placement = "per-engine"\ncpus = "{cpus}"').replace(
        "port = 8080", "port = 0").replace("admin_port = 8081", "admin_port = 0").replace(
        'data_dir = "./ganntec-data"', f'data_dir = "{tmp_path / "data"}"')
    (tmp_path / "c.toml").write_text(config)
    summary, log = tmp_path / "strace.txt", tmp_path / "run.log"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    # as under the unit: a notify socket (READY, STATUS, the workers' watchdog pings) and a watchdog
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify"))
    notify.setblocking(False)
    env.update(NOTIFY_SOCKET=str(tmp_path / "notify"), WATCHDOG_USEC="2000000")
    with open(log, "w") as out:
        proc = subprocess.Popen([strace, "-f", "-qq", "-c", "-o", str(summary), sys.executable, "-m", "ganntec.cli",
                                 "run", "--config", str(tmp_path / "c.toml")], stdout=out, stderr=subprocess.STDOUT,
                                cwd=tmp_path, env=env)
    try:
        deadline = time.monotonic() + 300
        while "listening on http" not in log.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        text = log.read_text()
        port = re.search(r"listening on http://127\.0\.0\.1:(\d+) ", text)[1]
        base = f"http://127.0.0.1:{port}"
        for path in ("/api/v3/time", "/api/v3/exchangeInfo", "/api/v3/depth?symbol=BTCUSDT"):
            assert urllib.request.urlopen(base + path, timeout=10).status == 200
        key, secret = re.search(r"account 1: api_key (\S+) api_secret (\S+)", text).groups()
        _signed_order(base, key, secret)
        _websocket(port)
    finally:
        # the supervisor is the child of strace; stop it the way systemd does (SIGTERM to it)
        supervisor = _child_of(proc.pid)
        if supervisor:
            os.kill(supervisor, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        notify.close()
    assert "stopped cleanly" in log.read_text(), log.read_text()[-2000:]
    used = {line.split()[-1] for line in summary.read_text().splitlines()[2:]
            if line.strip() and not line.startswith(("-", "100.00")) and line.split()[-1] != "total"}
    assert len(used) > 30, summary.read_text()
    denied = used - allowed - TOLERATED
    assert not denied, f"ganntec run made syscalls the unit's SystemCallFilter= denies: {sorted(denied)}"


def _child_of(pid: int) -> int | None:
    import psutil

    try:
        kids = psutil.Process(pid).children()
    except psutil.Error:
        return None
    return kids[0].pid if kids else None


def _signed_order(base: str, key: str, secret: str) -> None:
    import hashlib
    import hmac
    import urllib.parse

    q = urllib.parse.urlencode({"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC",
                                "quantity": "0.01", "price": "1000", "timestamp": int(time.time() * 1000)})
    sig = hmac.new(secret.encode(), q.encode(), hashlib.sha256).hexdigest()
    req = urllib.request.Request(f"{base}/api/v3/order?{q}&signature={sig}", method="POST",
                                 headers={"X-MBX-APIKEY": key})
    assert json.loads(urllib.request.urlopen(req, timeout=10).read())["status"] == "NEW"


def _websocket(port: str) -> None:
    import asyncio

    import aiohttp

    async def go():
        async with aiohttp.ClientSession() as s, s.ws_connect(f"ws://127.0.0.1:{port}/ws/btcusdt@depth") as ws:
            await asyncio.sleep(0.3)
            await ws.close()
    asyncio.run(go())
