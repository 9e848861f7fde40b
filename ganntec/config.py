"""The configuration: one TOML file, read with `tomllib`, validated whole before anything is
created. Every error names the field, its value and why: `symbols[1].tick_size=0 (must be > 0)`.
Unknown fields are errors too (a typo must not silently fall back to a default).

Sections and defaults (`ganntec run` without --config uses DEMO_TOML below):

  [instance]
    name            "ganntec"          shared-memory namespace: /dev/shm/ganntec.<name>.*
    data_dir        "./ganntec-data"   journal, snapshots, history (relative to the working dir)
  [journal]
    durability      "fsync"            fsync (group commit, survives power loss) | os (process crash)
    segment_bytes   268435456          a segment rolls past this size
    archive         true               gzip rolled segments
  [runtime]
    placement       "auto"             single (all engines in one process) | per-engine | auto:
                                       per-engine with a CPU for each engine and edge process
    cpus            "auto"             CPU plan: a cpulist ("0-3,6") or auto (the process's affinity)
    wait            "auto"             busy-spin | spin-yield | spin-block | auto (by cores and processes)
    max_in_flight   4096               client commands admitted before their results are back
    ring_capacity   65536              records per ring (a power of two, >= max_in_flight)
    snapshot_every  1000000            journal records between snapshots
    heartbeat_ms    1000               a worker whose heartbeat is older is dead
    lock_memory     "auto"             mlock every shared segment in every process: required (refuse
                                       to start without; systemd's READY=1 comes after), auto (lock
                                       when RLIMIT_MEMLOCK allows, else say so and run unlocked), off
  [engine]
    max_accounts    1024
    max_orders      65536              open orders (all symbols)
    max_levels      4096               price levels per book side
    fee_account     0                  account that receives every fee
    loss_asset      ""                 asset the daily loss limit is counted in ("" = none)
  [edge]
    host            "127.0.0.1"
    port            8080               REST and WebSocket
    enabled         true               start the edge (false: clients use the rings cmd.<i> and reports.<i>)
    processes       1                  edge processes sharing the port (SO_REUSEPORT), each with its rings
    admin_host      "127.0.0.1"
    admin_port      8081
    tls_cert        ""                 PEM certificate chain; with tls_key, the port speaks TLS 1.3
    tls_key         ""                 only (https://, wss://); `ganntec tls self-signed` makes a pair
  [security]
    master_key_file ""                 the key vault's master key (32 bytes, base64, mode 0600); "" =
                                       <data_dir>/master.key, made at the first start; the environment's
                                       GANNTEC_MASTER_KEY (base64 or hex) wins over the file
    demo_keys       false              first start: an API key per configured account, handed out in
                                       <data_dir>/demo-accounts.json (plaintext: for demos only)
    admin_allow_ips ["127.0.0.1/32", "::1/128"]  who may reach the admin port (IPs, CIDR networks)
    admin_users_file ""                admin logins (scrypt hashes); "" = <data_dir>/admin-users.json; a
                                       first start makes user "admin", its password in
                                       <data_dir>/admin-initial-password (0600)
  [limits]          Binance's rate limits (exchangeInfo rateLimits), held across edge processes
    request_weight_per_minute 6000     REQUEST_WEIGHT per IP per minute
    raw_requests_per_5m   61000        RAW_REQUESTS per IP per 5 minutes
    orders_per_10s        50           ORDERS per account per 10 s (an account may have its own)
    orders_per_day        160000       ORDERS per account per day (an account may have its own)
    ws_connections_per_5m 300          WebSocket connection attempts per IP per 5 minutes
    ws_messages_per_s     5            messages a market stream client may send per second
    refusals_before_ban   10           429s an IP may ignore within a minute before a 418 ban
    max_connections_per_ip 200         open connections per IP (REST keep-alive and WebSockets)
    max_body_bytes        65536        request body
    max_header_bytes      8190         one request line or header line
    max_ws_frame_bytes    65536        one incoming WebSocket message
    idle_timeout_s        60           a REST connection with no request closes after it
  [tuning]          `ganntec tune` (ganntec/tuning): the host's NIC and CPU roles beside the CPU plan
    nic             ""                 the market-data NIC (e.g. "eth0"); "" = no NIC settings
    nic_cpus        ""                 cpulist that takes the NIC's queue interrupts ("" = none)
    housekeeping_cpus ""               cpulist for the OS, IRQs, workqueues; "" = online - hot - nic
    busy_poll_us    50                 net.core.busy_read/busy_poll (0 = leave them)
    coalesce        true               NIC: adaptive-rx off, rx-usecs = rx_usecs
    rx_usecs        0                  NIC interrupt coalescing delay (0: interrupt at once)
    rx_ring         0                  NIC RX ring entries (0 = leave: size from drop counters)
    tx_ring         0                  NIC TX ring entries (0 = leave)
    combined_channels 0                NIC combined queues (0 = leave)
  [[assets]]        name, precision (decimals of the minor unit, 0..18); id = position
  [[symbols]]       name, base, quote, tick_size, step_size, min_price, max_price, min_qty,
                    max_qty, and optionally every other `engines.symbols.Symbol` field (fees,
                    notional, PERCENT_PRICE_BY_SIDE, ICEBERG_PARTS, TRAILING_DELTA, max_num_orders,
                    default_stp); id = position
  [[accounts]]      id, balances = { ASSET = "decimal", ... } credited at first start
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field, fields
from typing import Any

from ganntec.cpulist import parse_cpulist
from ganntec.engines.symbols import Asset, Symbol, symbol_table
from ganntec.shm.records import StpMode
from ganntec.shm.segment import validate_name

PLACEMENTS = ("auto", "single", "per-engine")
WAITS = ("auto", "busy-spin", "spin-yield", "spin-block")
DURABILITIES = ("fsync", "os")
LOCK_MEMORY = ("auto", "required", "off")


class ConfigError(ValueError):
    """One or more `field=value (reason)` problems, all reported at once."""

    def __init__(self, problems: list[str]):
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class InstanceConfig:
    name: str = "ganntec"
    data_dir: str = "./ganntec-data"


@dataclass(frozen=True)
class JournalConfig:
    durability: str = "fsync"
    segment_bytes: int = 256 << 20
    archive: bool = True


@dataclass(frozen=True)
class RuntimeConfig:
    placement: str = "auto"
    cpus: str = "auto"
    wait: str = "auto"
    max_in_flight: int = 4096
    ring_capacity: int = 65536
    snapshot_every: int = 1_000_000
    heartbeat_ms: int = 1000
    lock_memory: str = "auto"


@dataclass(frozen=True)
class EngineConfig:
    max_accounts: int = 1024
    max_orders: int = 65536
    max_levels: int = 4096
    fee_account: int = 0
    loss_asset: str = ""


@dataclass(frozen=True)
class EdgeConfig:
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 8080
    processes: int = 1
    admin_host: str = "127.0.0.1"
    admin_port: int = 8081
    tls_cert: str = ""  # PEM certificate chain; with tls_key: TLS 1.3 only on the edge's port
    tls_key: str = ""   # PEM private key


@dataclass(frozen=True)
class SecurityConfig:
    master_key_file: str = ""
    demo_keys: bool = False
    admin_allow_ips: tuple[str, ...] = ("127.0.0.1/32", "::1/128")
    admin_users_file: str = ""

    def master_key_path(self, data_dir: str) -> str:
        return self.master_key_file or os.path.join(os.path.abspath(data_dir), "master.key")

    def users_path(self, data_dir: str) -> str:
        return self.admin_users_file or os.path.join(os.path.abspath(data_dir), "admin-users.json")


@dataclass(frozen=True)
class LimitsConfig:
    request_weight_per_minute: int = 6000
    raw_requests_per_5m: int = 61000
    orders_per_10s: int = 50
    orders_per_day: int = 160000
    ws_connections_per_5m: int = 300
    ws_messages_per_s: int = 5
    refusals_before_ban: int = 10
    max_connections_per_ip: int = 200
    max_body_bytes: int = 65536
    max_header_bytes: int = 8190
    max_ws_frame_bytes: int = 65536
    idle_timeout_s: int = 60


@dataclass(frozen=True)
class TuningConfig:
    nic: str = ""
    nic_cpus: str = ""
    housekeeping_cpus: str = ""
    busy_poll_us: int = 50
    coalesce: bool = True
    rx_usecs: int = 0
    rx_ring: int = 0
    tx_ring: int = 0
    combined_channels: int = 0


@dataclass(frozen=True)
class AccountConfig:
    id: int
    balances: dict[str, str]


@dataclass(frozen=True)
class Config:
    instance: InstanceConfig = field(default_factory=InstanceConfig)
    journal: JournalConfig = field(default_factory=JournalConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    edge: EdgeConfig = field(default_factory=EdgeConfig)
    security: SecurityConfig = field(default_factory=SecurityConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    tuning: TuningConfig = field(default_factory=TuningConfig)
    assets: tuple[Asset, ...] = ()
    symbols: tuple[Symbol, ...] = ()
    accounts: tuple[AccountConfig, ...] = ()

    def asset(self, name: str) -> Asset:
        return next(a for a in self.assets if a.name == name)

    def symbol_rows(self):
        return symbol_table(list(self.symbols))

    def cpu_plan(self) -> set[int]:
        if self.runtime.cpus == "auto":
            return set(os.sched_getaffinity(0))
        return parse_cpulist(self.runtime.cpus)

    def placement(self) -> str:
        """`runtime.placement`, with `auto` resolved: one process per engine only when the
        CPU plan has a core for each engine and each edge process; else all engines in one
        process. With fewer cores the per-engine pipeline pays a semaphore wake-up (45-110 us
        here) at nearly every hop, and the in-process driver is faster (bench/pipeline.py)."""
        if self.runtime.placement != "auto":
            return self.runtime.placement
        return "per-engine" if len(self.cpu_plan()) >= 4 + self.edge.processes else "single"


def worker_cpus(cfg: Config) -> dict[str, int]:
    """The CPU each engine worker process is pinned to: {} when `runtime.cpus` is auto (nothing is
    pinned). Workers take the plan's CPUs from the last one down, wrapping round when there are
    more workers than CPUs. The supervisor pins by this and `ganntec tune` isolates by it."""
    if cfg.runtime.cpus == "auto":
        return {}
    from ganntec.workers.runtime import ENGINES  # numba-heavy: only when a plan is pinned

    cpus = sorted(cfg.cpu_plan())
    engines = ("engines",) if cfg.placement() == "single" else ENGINES
    return {engine: cpus[-1 - k % len(cpus)] for k, engine in enumerate(engines)}


SECTIONS = {"instance": InstanceConfig, "journal": JournalConfig, "runtime": RuntimeConfig,
            "engine": EngineConfig, "edge": EdgeConfig, "security": SecurityConfig, "limits": LimitsConfig,
            "tuning": TuningConfig}
_SYMBOL_FIELDS = {f.name: f for f in fields(Symbol)}
_SYMBOL_REQUIRED = ("name", "base", "quote", "tick_size", "step_size", "min_price", "max_price", "min_qty", "max_qty")


def _kind_ok(value, default) -> bool:
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, int):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(default, tuple):  # a TOML array of strings
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    return isinstance(value, type(default))


def _section(name: str, cls, table, problems: list[str]):
    if not isinstance(table, dict):
        problems.append(f"{name}={table!r} (must be a table)")
        return cls()
    known = {f.name: f for f in fields(cls)}
    values = {}
    for key, value in table.items():
        if key not in known:
            problems.append(f"{name}.{key}={value!r} (unknown field)")
            continue
        default = known[key].default
        if not _kind_ok(value, default):
            kind = "an array of strings" if isinstance(default, tuple) else type(default).__name__
            problems.append(f"{name}.{key}={value!r} (must be {kind})")
            continue
        values[key] = tuple(value) if isinstance(default, tuple) else value
    return cls(**values)


def _check_security(sec: SecurityConfig, lim: LimitsConfig, problems: list[str]) -> None:
    from ganntec.admin.auth import AllowList, AllowListError

    try:
        AllowList(list(sec.admin_allow_ips), "security.admin_allow_ips")
    except AllowListError as exc:
        problems.extend(exc.problems)
    for f in fields(lim):
        v = getattr(lim, f.name)
        lo = 0 if f.name == "refusals_before_ban" else 1
        if not lo <= v <= (1 << 31) - 1:
            problems.append(f"limits.{f.name}={v} ({lo} .. 2**31 - 1)")
    if lim.max_header_bytes < 1024:
        problems.append(f"limits.max_header_bytes={lim.max_header_bytes} (at least 1024)")
    if lim.max_body_bytes < 1024:
        problems.append(f"limits.max_body_bytes={lim.max_body_bytes} (at least 1024)")


def check_tuning(tu: TuningConfig, problems: list[str]) -> None:
    if tu.nic and (len(tu.nic) > 15 or tu.nic in (".", "..") or any(ch in tu.nic for ch in "/: \t\n")):
        problems.append(f"tuning.nic={tu.nic!r} (an interface name: at most 15 characters, no '/', ':' or space)")
    for key in ("nic_cpus", "housekeeping_cpus"):
        value = getattr(tu, key)
        if value:
            try:
                parse_cpulist(value)
            except ValueError as exc:
                problems.append(f"tuning.{key}={value!r} ({exc})")
    for key, hi in (("busy_poll_us", 1_000_000), ("rx_usecs", 1_000_000), ("rx_ring", 1 << 20),
                    ("tx_ring", 1 << 20), ("combined_channels", 4096)):
        v = getattr(tu, key)
        if not 0 <= v <= hi:
            problems.append(f"tuning.{key}={v} (0 .. {hi})")
    if (tu.nic_cpus or tu.rx_ring or tu.tx_ring or tu.combined_channels) and not tu.nic:
        problems.append("tuning.nic='' (nic_cpus, rings and channels need the NIC they are for)")


def _check_sections(c: dict[str, Any], problems: list[str], cpus_available: set[int] | None = None) -> None:
    inst, jr, rt, eng, edge = c["instance"], c["journal"], c["runtime"], c["engine"], c["edge"]
    _check_security(c["security"], c["limits"], problems)
    check_tuning(c["tuning"], problems)
    try:
        validate_name("instance.name", inst.name)
    except ValueError as exc:
        problems.append(str(exc))
    if not inst.data_dir:
        problems.append("instance.data_dir='' (must name a directory)")
    if jr.durability not in DURABILITIES:
        problems.append(f"journal.durability={jr.durability!r} (one of {', '.join(DURABILITIES)})")
    if jr.segment_bytes < 1 << 20:
        problems.append(f"journal.segment_bytes={jr.segment_bytes} (at least 1 MiB)")
    if rt.placement not in PLACEMENTS:
        problems.append(f"runtime.placement={rt.placement!r} (one of {', '.join(PLACEMENTS)})")
    if rt.wait not in WAITS:
        problems.append(f"runtime.wait={rt.wait!r} (one of {', '.join(WAITS)})")
    if rt.lock_memory not in LOCK_MEMORY:
        problems.append(f"runtime.lock_memory={rt.lock_memory!r} (one of {', '.join(LOCK_MEMORY)})")
    if rt.cpus != "auto":
        try:
            cpus = parse_cpulist(rt.cpus)
            if not cpus:
                problems.append(f"runtime.cpus={rt.cpus!r} (no CPU)")
            elif cpus_available is not None:  # a plan for another host (ganntec tune --root)
                if not cpus <= cpus_available:
                    problems.append(f"runtime.cpus={rt.cpus!r} (CPUs {sorted(cpus - cpus_available)} "
                                    f"are not online on the tuned host)")
            elif not cpus <= set(os.sched_getaffinity(0)):
                problems.append(f"runtime.cpus={rt.cpus!r} (CPUs {sorted(cpus - set(os.sched_getaffinity(0)))} "
                                f"are not available to this process)")
        except ValueError as exc:
            problems.append(f"runtime.cpus={rt.cpus!r} ({exc})")
    cap = rt.ring_capacity
    if cap < 16 or cap & (cap - 1):
        problems.append(f"runtime.ring_capacity={cap} (a power of two >= 16)")
    if not 1 <= rt.max_in_flight <= cap:
        problems.append(f"runtime.max_in_flight={rt.max_in_flight} (1 .. ring_capacity {cap})")
    if rt.snapshot_every < 1:
        problems.append(f"runtime.snapshot_every={rt.snapshot_every} (must be >= 1)")
    if rt.heartbeat_ms < 10:
        problems.append(f"runtime.heartbeat_ms={rt.heartbeat_ms} (at least 10)")
    for key, lo, hi in (("max_accounts", 1, 1 << 24), ("max_orders", 16, 1 << 26), ("max_levels", 16, 1 << 24)):
        v = getattr(eng, key)
        if not lo <= v <= hi:
            problems.append(f"engine.{key}={v} ({lo} .. {hi})")
    if not 0 <= eng.fee_account < eng.max_accounts:
        problems.append(f"engine.fee_account={eng.fee_account} (0 .. max_accounts - 1 = {eng.max_accounts - 1})")
    for key in ("port", "admin_port"):
        v = getattr(edge, key)
        if not 0 <= v <= 65535:
            problems.append(f"edge.{key}={v} (0 .. 65535)")
    if edge.port == edge.admin_port and edge.port != 0:
        problems.append(f"edge.admin_port={edge.admin_port} (must differ from edge.port)")
    if not 1 <= edge.processes <= 64:
        problems.append(f"edge.processes={edge.processes} (1 .. 64)")
    if bool(edge.tls_cert) != bool(edge.tls_key):
        problems.append(f"edge.tls_cert={edge.tls_cert!r} edge.tls_key={edge.tls_key!r} (both, or neither)")
    elif edge.tls_cert:
        unreadable = [key for key in ("tls_cert", "tls_key")
                      if not os.path.isfile(getattr(edge, key)) or not os.access(getattr(edge, key), os.R_OK)]
        problems.extend(f"edge.{key}={getattr(edge, key)} (no readable file there)" for key in unreadable)
        if not unreadable:
            import ssl

            from ganntec.edge.tls import server_context
            try:
                server_context(edge.tls_cert, edge.tls_key)
            except (ssl.SSLError, ValueError) as exc:
                problems.append(f"edge.tls_cert={edge.tls_cert} (with edge.tls_key: {exc})")


def _unknown_field(where: str, table: dict, allowed: set[str], problems: list[str]) -> bool:
    """Report the first field of `table` outside `allowed`; True if there was one."""
    extra = sorted(set(table) - allowed)
    if extra:
        problems.append(f"{where}.{extra[0]}={table[extra[0]]!r} (unknown field)")
    return bool(extra)


def _assets(raw, problems: list[str]) -> tuple[Asset, ...]:
    out, seen = [], set()
    for i, a in enumerate(raw):
        where = f"assets[{i}]"
        if not isinstance(a, dict):
            problems.append(f"{where}={a!r} (must be a table)")
            continue
        _unknown_field(where, a, {"name", "precision"}, problems)
        name, precision = a.get("name"), a.get("precision")
        if not isinstance(name, str) or not name.isalnum() or not name.isupper() or len(name) > 16:
            problems.append(f"{where}.name={name!r} (upper-case letters and digits, at most 16)")
            continue
        if name in seen:
            problems.append(f"{where}.name={name!r} (listed twice)")
            continue
        if not isinstance(precision, int) or isinstance(precision, bool) or not 0 <= precision <= 18:
            problems.append(f"{where}.precision={precision!r} (an integer 0 .. 18)")
            continue
        seen.add(name)
        out.append(Asset(len(out), name, precision))
    return tuple(out)


def _symbols(raw, assets: tuple[Asset, ...], problems: list[str]) -> tuple[Symbol, ...]:
    by_name = {a.name: a for a in assets}
    out, seen = [], set()
    for i, s in enumerate(raw):
        where = f"symbols[{i}]"
        if not isinstance(s, dict):
            problems.append(f"{where}={s!r} (must be a table)")
            continue
        missing = [k for k in _SYMBOL_REQUIRED if k not in s]
        if missing:
            problems.append(f"{where}.{missing[0]}=<missing> (required)")
            continue
        bad = False
        kw: dict[str, Any] = {}
        for key, value in s.items():
            if key in ("base", "quote"):
                if value not in by_name:
                    problems.append(f"{where}.{key}={value!r} (not a configured asset)")
                    bad = True
                else:
                    kw[key] = by_name[value]
                continue
            f = _SYMBOL_FIELDS.get(key)
            if f is None or key == "symbol_id":
                problems.append(f"{where}.{key}={value!r} (unknown field)")
                bad = True
                continue
            if key == "default_stp":
                try:
                    kw[key] = StpMode[str(value).upper()]
                except KeyError:
                    problems.append(f"{where}.default_stp={value!r} (one of "
                                    f"{', '.join(m.name for m in StpMode if m != StpMode.DEFAULT)})")
                    bad = True
                continue
            want_int = f.type in ("int", int)
            if want_int and (not isinstance(value, int) or isinstance(value, bool)):
                problems.append(f"{where}.{key}={value!r} (must be an integer)")
                bad = True
            elif not want_int and key != "name" and not isinstance(value, str):
                problems.append(f"{where}.{key}={value!r} (a decimal string, e.g. \"0.01\": floats are not exact)")
                bad = True
            else:
                kw[key] = value
        if bad:
            continue
        name = kw["name"]
        if not isinstance(name, str) or not name.isalnum() or not name.isupper() or len(name) > 20:
            problems.append(f"{where}.name={name!r} (upper-case letters and digits, at most 20)")
            continue
        if name in seen:
            problems.append(f"{where}.name={name!r} (listed twice)")
            continue
        if kw["base"] == kw["quote"]:
            problems.append(f"{where}.quote={s['quote']!r} (same asset as base)")
            continue
        try:
            sym = Symbol(symbol_id=len(out), **kw)
            sym.row()  # every derived integer, overflow bounds included
        except (ValueError, TypeError) as exc:
            problems.append(f"{where}: {exc}")
            continue
        seen.add(name)
        out.append(sym)
    return tuple(out)


def _accounts(raw, assets: tuple[Asset, ...], eng: EngineConfig, problems: list[str]) -> tuple[AccountConfig, ...]:
    by_name = {a.name: a for a in assets}
    out, seen = [], set()
    for i, a in enumerate(raw):
        where = f"accounts[{i}]"
        if not isinstance(a, dict):
            problems.append(f"{where}={a!r} (must be a table)")
            continue
        if _unknown_field(where, a, {"id", "balances"}, problems):
            continue
        acc_id = a.get("id")
        if not isinstance(acc_id, int) or isinstance(acc_id, bool) or not 0 <= acc_id < eng.max_accounts:
            problems.append(f"{where}.id={acc_id!r} (an integer 0 .. engine.max_accounts - 1 = {eng.max_accounts - 1})")
            continue
        if acc_id in seen:
            problems.append(f"{where}.id={acc_id} (listed twice)")
            continue
        balances = a.get("balances", {})
        if not isinstance(balances, dict):
            problems.append(f"{where}.balances={balances!r} (a table of ASSET = \"amount\")")
            continue
        ok = True
        for asset, amount in balances.items():
            if asset not in by_name:
                problems.append(f"{where}.balances.{asset}={amount!r} (not a configured asset)")
                ok = False
                continue
            if not isinstance(amount, str):
                problems.append(f"{where}.balances.{asset}={amount!r} (a decimal string: floats are not exact)")
                ok = False
                continue
            try:
                minor = by_name[asset].to_minor(f"{where}.balances.{asset}", amount)
            except ValueError as exc:
                problems.append(str(exc))
                ok = False
                continue
            if not 0 < minor < 1 << 62:
                problems.append(f"{where}.balances.{asset}={amount} (must be > 0 and below 2**62 minor units)")
                ok = False
        if ok:
            seen.add(acc_id)
            out.append(AccountConfig(acc_id, dict(balances)))
    # The risk engine keeps every asset's total (all accounts) below 2**62 minor units too, and
    # refuses a credit past it: a first start must not silently fund only some accounts.
    totals: dict[str, int] = {}
    for acc in out:
        for asset, amount in acc.balances.items():
            totals[asset] = totals.get(asset, 0) + by_name[asset].to_minor(asset, amount)
    for asset, total in totals.items():
        if total >= 1 << 62:
            problems.append(f"accounts.balances.{asset}={by_name[asset].from_minor(total)} (the total over all "
                            f"accounts must stay below 2**62 minor units, {by_name[asset].from_minor((1 << 62) - 1)})")
    return tuple(out)


def parse(text: str, source: str = "<config>", cpus_available: set[int] | None = None) -> Config:
    """Parse and validate a whole config; raises ConfigError listing every problem.

    `runtime.cpus` must be CPUs this process may run on, or, given `cpus_available`, CPUs of
    that set (`ganntec tune` plans for the host under its --root)."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{source}: not valid TOML ({exc})"]) from None
    problems: list[str] = []
    for key in raw:
        if key not in SECTIONS and key not in ("assets", "symbols", "accounts"):
            problems.append(f"{key}={raw[key]!r} (unknown section)")
    sections = {name: _section(name, cls, raw.get(name, {}), problems) for name, cls in SECTIONS.items()}
    _check_sections(sections, problems, cpus_available)
    lists = {}
    for key in ("assets", "symbols", "accounts"):
        value = raw.get(key, [])
        if not isinstance(value, list):
            problems.append(f"{key}={value!r} (must be an array of tables: [[{key}]])")
            value = []
        lists[key] = value
    assets = _assets(lists["assets"], problems)
    symbols = _symbols(lists["symbols"], assets, problems)
    accounts = _accounts(lists["accounts"], assets, sections["engine"], problems)
    if not symbols and not problems:
        problems.append("symbols=[] (at least one [[symbols]] table)")
    eng = sections["engine"]
    if eng.loss_asset and eng.loss_asset not in {a.name for a in assets}:
        problems.append(f"engine.loss_asset={eng.loss_asset!r} (not a configured asset)")
    if problems:
        raise ConfigError(problems)
    return Config(assets=assets, symbols=symbols, accounts=accounts, **sections)


def load(path: str | None = None, data_dir: str | None = None, cpus_available: set[int] | None = None) -> Config:
    """The config at `path` (DEMO_TOML when None), with `data_dir` overriding instance.data_dir;
    `cpus_available` as in parse()."""
    if path is None:
        text, source = DEMO_TOML, "<demo config>"
    else:
        try:
            with open(path, encoding="utf-8") as f:
                text, source = f.read(), path
        except OSError as exc:
            raise ConfigError([f"config={path} ({exc.strerror})"]) from None
    cfg = parse(text, source, cpus_available)
    if data_dir is not None:
        if not data_dir:
            raise ConfigError(["data_dir='' (must name a directory)"])
        cfg = dataclasses.replace(cfg, instance=InstanceConfig(cfg.instance.name, data_dir))
    return cfg


DEMO_TOML = """\
# Ganntec demo: three symbols, funded demo accounts, data under ./ganntec-data.
[instance]
name = "demo"
data_dir = "./ganntec-data"

[journal]
durability = "fsync"

[runtime]
placement = "auto"
wait = "auto"

[engine]
max_accounts = 1024
max_orders = 65536
fee_account = 0

[edge]
host = "127.0.0.1"
port = 8080
admin_port = 8081

[security]
demo_keys = true

[[assets]]
name = "BTC"
precision = 8

[[assets]]
name = "ETH"
precision = 8

[[assets]]
name = "USDT"
precision = 8

[[symbols]]
name = "BTCUSDT"
base = "BTC"
quote = "USDT"
tick_size = "0.01"
step_size = "0.00001"
min_price = "0.01"
max_price = "1000000"
min_qty = "0.00001"
max_qty = "9000"
min_notional = "5"

[[symbols]]
name = "ETHUSDT"
base = "ETH"
quote = "USDT"
tick_size = "0.01"
step_size = "0.0001"
min_price = "0.01"
max_price = "1000000"
min_qty = "0.0001"
max_qty = "9000"
min_notional = "5"

[[symbols]]
name = "ETHBTC"
base = "ETH"
quote = "BTC"
tick_size = "0.00001"
step_size = "0.001"
min_price = "0.00001"
max_price = "1000"
min_qty = "0.001"
max_qty = "100000"
min_notional = "0.0001"

[[accounts]]
id = 1
balances = { USDT = "1000000", BTC = "10", ETH = "100" }

[[accounts]]
id = 2
balances = { USDT = "1000000", BTC = "10", ETH = "100" }

[[accounts]]
id = 3
balances = { USDT = "1000000", BTC = "10", ETH = "100" }
"""
