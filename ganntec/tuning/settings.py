"""The declarative units of the tuning plan: one Setting per tunable, each with the value it
wants, the reason beside it, how to read it, how to change it and what restores it.

Kinds: sysctl and sysfs files (THP, workqueue cpumasks, cpufreq governor, PM QoS, RPS/XPS, IRQ
affinity), the irqbalance config, NIC parameters through ethtool, and check-only items
(/dev/shm size, RLIMIT_MEMLOCK, the boot parameters in /proc/cmdline, which need a reboot and
are never applied).

Statuses, and what `ganntec tune check` makes of them:

  ok           the host has the wanted value
  drift        it has another value                                     -> exit 1
  n/a          an optional kernel or driver feature is absent (no cpufreq driver, THP or a
               sysctl compiled out, no xps_cpus, ethtool `n/a`, no irqbalance): nothing to tune
  unsupported  a required item is absent: /proc/cmdline, /dev/shm, the configured NIC, its
               IRQs' affinity files, the ethtool program when a NIC is configured  -> exit 2
  unreadable   present but not readable or not parseable                 -> exit 2

A required item is one the operator's config names (the NIC, its queues and IRQs) or one the
plan cannot be judged without; everything a kernel may simply lack is optional.
"""

from __future__ import annotations

import abc
import re
from dataclasses import dataclass

from ganntec.cpulist import parse_cpulist, parse_cpumask
from ganntec.tuning import parse
from ganntec.tuning.host import Host, HostError, Missing

OK, DRIFT, NA, UNSUPPORTED, UNREADABLE = "ok", "drift", "n/a", "unsupported", "unreadable"
MIB = 1 << 20


class NotApplicable(Exception):
    """The feature is absent in a way that is never required (a driver's `n/a`)."""


class Unsupported(Exception):
    """The feature cannot be checked at all here (no ethtool program)."""


class ApplyError(Exception):
    """A change the host refused."""


@dataclass(frozen=True)
class Reading:
    """What a setting found: `shown` for people, `restore` what writes the original back."""

    shown: str
    restore: str


@dataclass(frozen=True)
class Result:
    setting: "Setting"
    status: str
    current: str | None = None
    restore: str | None = None
    detail: str = ""  # why n/a / unsupported / unreadable

    def as_json(self) -> dict:
        s = self.setting
        return {"key": s.key, "kind": s.kind, **s.target(), "current": self.current, "want": s.want,
                "status": self.status, "reason": s.reason, "reboot": s.reboot, "detail": self.detail}


@dataclass(frozen=True)
class Setting(abc.ABC):
    """Base: `read` gives a Reading; `matches`, `apply`, `undo_entry` per kind. A check-only
    kind (a probe, a boot parameter, a limit the unit sets) keeps the base apply/undo_entry,
    which refuse: apply.py never calls them for `check_only` settings."""

    kind: str
    key: str
    want: str
    reason: str
    required: bool = False
    reboot: bool = False  # a boot parameter: checked and printed, never applied
    check_only: bool = False

    @abc.abstractmethod
    def target(self) -> dict:
        """Where the value lives, for --json: {"path": ...} or {"cmd": [...]}."""

    @abc.abstractmethod
    def read(self, host: Host, cache: dict) -> Reading:
        """The current value (raises Missing, HostError, NotApplicable, Unsupported, ValueError)."""

    def matches(self, current: str) -> bool:
        return current == self.want

    @abc.abstractmethod
    def action(self) -> str:
        """What plan prints as the change (or the manual step) that gets `want`."""

    def apply(self, host: Host) -> None:
        raise ApplyError(f"{self.key} is check-only: {self.action()}")

    def undo_entry(self, restore: str) -> dict:
        raise ApplyError(f"{self.key} is check-only: nothing to restore")

    def check(self, host: Host, cache: dict) -> Result:
        try:
            reading = self.read(host, cache)
        except Missing as exc:
            return Result(self, UNSUPPORTED if self.required else NA, detail=f"{exc.rel}: {exc.why}")
        except HostError as exc:
            return Result(self, UNREADABLE, detail=f"{exc.rel}: {exc.why}")
        except NotApplicable as exc:
            return Result(self, NA, detail=str(exc))
        except Unsupported as exc:
            return Result(self, UNSUPPORTED, detail=str(exc))
        except ValueError as exc:  # parse.ParseError and the cpulist parsers
            return Result(self, UNREADABLE, detail=str(exc))
        status = OK if self.matches(reading.shown) else DRIFT
        return Result(self, status, reading.shown, reading.restore)


# --- files ------------------------------------------------------------------------------------

FORMATS = ("text", "bracketed", "cpulist", "cpumask")


@dataclass(frozen=True)
class FileSetting(Setting):
    """A one-value /proc or /sys file. `fmt`: text, bracketed (`a [b] c`), cpulist, cpumask
    (compared as CPU sets). `want` is what gets written (with a newline, truncating)."""

    path: str = ""
    fmt: str = "text"

    def target(self) -> dict:
        return {"path": "/" + self.path}

    def read(self, host: Host, cache: dict) -> Reading:
        text = host.read(self.path).strip()
        if self.fmt == "bracketed":
            choice, _ = parse.bracketed(text)
            return Reading(choice, choice)
        if self.fmt == "cpulist":
            parse_cpulist(text)
        elif self.fmt == "cpumask":
            parse_cpumask(text)
        return Reading(text, text)

    def matches(self, current: str) -> bool:
        if self.fmt == "cpulist":
            return parse_cpulist(current) == parse_cpulist(self.want)
        if self.fmt == "cpumask":
            return parse_cpumask(current) == parse_cpumask(self.want)
        return current == self.want

    def action(self) -> str:
        return f"write {self.want} to /{self.path}"

    def apply(self, host: Host) -> None:
        host.write(self.path, self.want + "\n")

    def undo_entry(self, restore: str) -> dict:
        return {"path": self.path, "write": restore + "\n"}


def sysctl(key: str, want: int | str, reason: str) -> FileSetting:
    return FileSetting("sysctl", key, str(want), reason, path="proc/sys/" + key.replace(".", "/"))


# --- irqbalance -------------------------------------------------------------------------------

BANNED = "IRQBALANCE_BANNED_CPULIST"
ARGS = "IRQBALANCE_ARGS"


@dataclass(frozen=True)
class IrqbalanceSetting(Setting):
    """`IRQBALANCE_BANNED_CPULIST=` in irqbalance's environment file; absent file = no irqbalance."""

    path: str = "etc/default/irqbalance"
    var = BANNED

    def target(self) -> dict:
        return {"path": "/" + self.path}

    def _current(self, text: str) -> str:
        value = ""
        for line in text.splitlines():
            m = re.fullmatch(rf"\s*(?:export\s+)?{self.var}=(.*)", line)
            if m:
                value = m[1].strip().strip("\"'")
        return value

    def _shown(self, value: str) -> str:
        parse_cpulist(value)
        return value or "(unset)"

    def _new_value(self, old: str) -> str:
        return self.want

    def read(self, host: Host, cache: dict) -> Reading:
        text = host.read(self.path)
        return Reading(self._shown(self._current(text)), text)

    def matches(self, current: str) -> bool:
        return current != "(unset)" and parse_cpulist(current) == parse_cpulist(self.want)

    def action(self) -> str:
        return f"set {self.var}={self.want} in /{self.path} (restart irqbalance to use it)"

    def apply(self, host: Host) -> None:
        text = host.read(self.path)
        lines = text.splitlines()
        line = f"{self.var}={self._new_value(self._current(text))}"
        pattern = re.compile(rf"\s*(?:export\s+)?{self.var}=")
        if any(pattern.match(x) for x in lines):
            lines = [line if pattern.match(x) else x for x in lines]
        else:
            lines.append(line)
        host.write(self.path, "\n".join(lines) + "\n")

    def undo_entry(self, restore: str) -> dict:
        return {"path": self.path, "write": restore}


@dataclass(frozen=True)
class IrqbalanceBanIrqSetting(IrqbalanceSetting):
    """The `--banirq=N` options in `IRQBALANCE_ARGS=`: irqbalance leaves these IRQs (the NIC's,
    pinned by hand to the NIC CPUs) where the plan puts them; its other options are kept.
    `want`: the options, space separated."""

    var = ARGS

    @staticmethod
    def _banned(value: str) -> set[str]:
        return {t for t in value.split() if t.startswith("--banirq=")}

    def _shown(self, value: str) -> str:
        return " ".join(sorted(self._banned(value), key=lambda t: int(t.split("=", 1)[1]))) or "(none)"

    def matches(self, current: str) -> bool:
        return self._banned(current) == self._banned(self.want)

    def _new_value(self, old: str) -> str:
        keep = [t for t in old.split() if not t.startswith("--banirq=")]
        return '"' + " ".join(keep + self.want.split()) + '"'

    def action(self) -> str:
        return f"set the --banirq options of {self.var} in /{self.path} (restart irqbalance to use it)"


# --- ethtool ----------------------------------------------------------------------------------

ETHTOOL_READ = {"c": parse.ethtool_coalesce, "g": parse.ethtool_rings, "l": parse.ethtool_channels}


@dataclass(frozen=True)
class EthtoolSetting(Setting):
    """One NIC parameter: read with `ethtool -c/-g/-l NIC`, set with `-C/-G/-L NIC name value`."""

    nic: str = ""
    op: str = "c"  # c coalescing, g rings, l channels
    name: str = ""  # the parameter as ethtool's setter spells it (rx-usecs, adaptive-rx, rx, combined)

    def target(self) -> dict:
        return {"cmd": ["ethtool", f"-{self.op}", self.nic]}

    def read(self, host: Host, cache: dict) -> Reading:
        argv = ["ethtool", f"-{self.op}", self.nic]
        key = tuple(argv)
        if key not in cache:
            cache[key] = host.run(argv)
        rc, out, err = cache[key]
        if rc == 127:
            raise Unsupported(f"{' '.join(argv)}: {err.strip() or 'ethtool is not installed'}")
        try:
            values = ETHTOOL_READ[self.op](out, rc, err)
        except parse.EthtoolUnsupported as exc:
            raise NotApplicable(f"{' '.join(argv)}: {exc}") from None
        if self.op != "c":
            values = values["current"]
        value = values.get(self.name)
        if value is None:
            raise NotApplicable(f"{' '.join(argv)}: {self.name} is n/a for this driver")
        return Reading(value, value)

    def action(self) -> str:
        return f"run ethtool -{self.op.upper()} {self.nic} {self.name} {self.want}"

    def apply(self, host: Host) -> None:
        rc, out, err = host.run(["ethtool", f"-{self.op.upper()}", self.nic, self.name, self.want])
        if rc != 0:
            raise ApplyError(f"ethtool -{self.op.upper()} {self.nic} {self.name} {self.want}: rc {rc} "
                             f"{(err or out).strip()}")

    def undo_entry(self, restore: str) -> dict:
        return {"cmd": ["ethtool", f"-{self.op.upper()}", self.nic, self.name, restore]}


# --- check-only -------------------------------------------------------------------------------

@dataclass(frozen=True)
class ProbeSetting(Setting):
    """A file the plan itself is built from (/proc/interrupts, the NIC's directory): ok when
    it can be read, else the plan is incomplete."""

    path: str = ""
    directory: bool = False

    def target(self) -> dict:
        return {"path": "/" + self.path}

    def read(self, host: Host, cache: dict) -> Reading:
        if self.directory:
            host.listdir(self.path)
        else:
            text = host.read(self.path)
            if self.path == "proc/interrupts":
                parse.interrupts(text)
        return Reading(self.want, "")

    def action(self) -> str:
        return f"make /{self.path} readable (the plan is built from it)"


@dataclass(frozen=True)
class CmdlineSetting(Setting):
    """A kernel boot parameter in /proc/cmdline: `want` is the value (or "" for a flag).
    `needs`: a file whose absence means this kernel ignores the parameter (n/a)."""

    param: str = ""
    needs: str = ""

    def target(self) -> dict:
        return {"path": "/proc/cmdline"}

    def read(self, host: Host, cache: dict) -> Reading:
        params = parse.cmdline_params(host.read("proc/cmdline"))
        if self.needs and not host.exists(self.needs):
            raise NotApplicable(f"/{self.needs} is absent: this kernel ignores {self.param}= "
                                f"(built without its option)")
        values = params.get(self.param)
        if not values:
            return Reading("(absent)", "")
        value = values[-1]
        return Reading("" if value is None else value, "")

    def fragment(self) -> str:
        return f"{self.param}={self.want}" if self.want else self.param

    def matches(self, current: str) -> bool:
        if current == "(absent)":
            return False
        if self.param == "isolcpus":
            flags, cpus = parse.isolcpus(current)
            want_flags, want_cpus = parse.isolcpus(self.want)
            return want_flags <= flags and cpus == want_cpus
        if self.param in ("nohz_full", "rcu_nocbs", "irqaffinity"):
            return parse_cpulist(current) == parse_cpulist(self.want)
        return current == self.want

    def action(self) -> str:
        return f"add {self.fragment()} to the kernel command line and reboot"


@dataclass(frozen=True)
class ShmSetting(Setting):
    """The size of the tmpfs at /dev/shm against the bytes the rings need (check-only)."""

    need: int = 0
    path: str = "dev/shm"

    def target(self) -> dict:
        return {"path": "/" + self.path}

    def read(self, host: Host, cache: dict) -> Reading:
        size, avail = host.statvfs(self.path)
        return Reading(f"{size // MIB} MiB ({avail // MIB} MiB free)", "")

    def matches(self, current: str) -> bool:
        return int(current.split()[0]) * MIB >= self.need

    def action(self) -> str:
        return f"remount /dev/shm with size >= {-(-self.need // MIB)}M (an fstab line for /dev/shm)"


@dataclass(frozen=True)
class MemlockSetting(Setting):
    """The soft RLIMIT_MEMLOCK in `proc/self/limits` (this process; the service gets its own
    from LimitMEMLOCK= in the unit, which `ganntec deploy emit` writes). Check-only."""

    need: int = 0
    path: str = "proc/self/limits"

    def target(self) -> dict:
        return {"path": "/" + self.path}

    def read(self, host: Host, cache: dict) -> Reading:
        for line in host.read(self.path).splitlines():
            if line.startswith("Max locked memory"):
                soft = line[len("Max locked memory"):].split()[0]
                if soft != "unlimited":
                    int(soft)
                return Reading(soft, "")
        raise parse.ParseError(f"{self.path} (no 'Max locked memory' line)")

    def matches(self, current: str) -> bool:
        return current == "unlimited" or int(current) >= self.need

    def action(self) -> str:
        return (f"raise the limit: LimitMEMLOCK={-(-self.need // MIB)}M in the unit (ganntec deploy emit), "
                f"or ulimit -l {self.need // 1024} for a shell")


def check_all(settings: list[Setting], host: Host) -> list[Result]:
    cache: dict = {}  # one `ethtool -c` (etc.) per check, however many settings read it
    return [s.check(host, cache) for s in settings]


def exit_code(results: list[Result]) -> int:
    """0 all applicable match, 1 drift, 2 a required item unsupported or anything unreadable."""
    if any(r.status in (UNSUPPORTED, UNREADABLE) for r in results):
        return 2
    return 1 if any(r.status == DRIFT for r in results) else 0

