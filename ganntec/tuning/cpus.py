"""The CPU partition the host is tuned for, derived from the engine's CPU plan.

- hot: the CPUs the supervisor pins a spinning engine worker to (`config.worker_cpus`, the same
  function the supervisor pins by). None when `runtime.cpus` is auto (nothing is pinned) or
  the placement is single (one engines process that waits on its rings, not one spinning
  worker per CPU): then there is nothing to isolate and only the generic latency settings apply.
- nic: `tuning.nic_cpus` (or --nic-cpus): the CPUs that take the NIC's queue interrupts.
- housekeeping: `tuning.housekeeping_cpus`, default every online CPU that is neither hot nor nic:
  the OS, other interrupts, unbound workqueues, systemd's default CPUAffinity.

Every named CPU must be online on the tuned host (`sys/devices/system/cpu/online` under the
root), the three roles must not overlap, and at least one housekeeping CPU must remain (the
kernel's cpu-isolation guide). Problems raise PartitionError as `field=value (reason)`.
"""

from __future__ import annotations

from dataclasses import dataclass

from ganntec.config import Config, worker_cpus
from ganntec.cpulist import format_cpulist, parse_cpulist
from ganntec.tuning.host import Host, HostError

ONLINE = "sys/devices/system/cpu/online"


class PartitionError(ValueError):
    """One or more `field=value (reason)` problems with the CPU roles."""

    def __init__(self, problems: list[str]):
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class Partition:
    online: frozenset[int]
    hot: frozenset[int]
    workers: tuple[tuple[str, int], ...]  # (engine, cpu) of each pinned spinning worker
    nic: frozenset[int]
    housekeeping: frozenset[int]
    why_no_hot: str  # "" when there are hot CPUs

    def describe(self) -> str:
        cl = format_cpulist
        hot = (f"hot {cl(self.hot)} ({', '.join(f'{e} on {c}' for e, c in self.workers)})"
               if self.hot else f"hot none ({self.why_no_hot})")
        return (f"CPUs: online {cl(self.online)}; {hot}; nic {cl(self.nic) or 'none'}; "
                f"housekeeping {cl(self.housekeeping)}")


def online_cpus(host: Host) -> frozenset[int]:
    try:
        return frozenset(parse_cpulist(host.read(ONLINE)))
    except HostError as exc:
        raise PartitionError([f"{ONLINE}=<{exc.why}> (the online CPUs are needed for the plan)"]) from None
    except ValueError as exc:
        raise PartitionError([f"{ONLINE} ({exc})"]) from None


def partition(cfg: Config, host: Host, nic_cpus: str | None = None) -> Partition:
    """The CPU roles of `cfg` on `host`; `nic_cpus` overrides tuning.nic_cpus."""
    online = online_cpus(host)
    problems: list[str] = []
    pins = worker_cpus(cfg)
    if cfg.runtime.cpus == "auto":
        why, workers = 'runtime.cpus = "auto": no worker is pinned, nothing to isolate', ()
    elif cfg.placement() == "single":
        why, workers = 'placement is single: no spinning worker per CPU, nothing to isolate', ()
    else:
        why, workers = "", tuple(pins.items())
    hot = frozenset(c for _, c in workers)
    field = "--nic-cpus" if nic_cpus is not None else "tuning.nic_cpus"
    text = cfg.tuning.nic_cpus if nic_cpus is None else nic_cpus
    try:
        nic = frozenset(parse_cpulist(text))
    except ValueError as exc:
        raise PartitionError([f"{field}={text!r} ({exc})"]) from None
    if nic and not cfg.tuning.nic:
        problems.append(f"{field}={text!r} (no NIC named: tuning.nic or --nic)")
    hk_text = cfg.tuning.housekeeping_cpus
    housekeeping = frozenset(parse_cpulist(hk_text)) if hk_text else online - hot - nic
    plan = cfg.cpu_plan() if cfg.runtime.cpus != "auto" else set()
    for name, cpus in (("runtime.cpus", plan), (field, nic), ("tuning.housekeeping_cpus", housekeeping)):
        offline = set(cpus) - online
        if offline:
            value = cfg.runtime.cpus if name == "runtime.cpus" else (text if name == field else hk_text)
            problems.append(f"{name}={value!r} (CPUs {format_cpulist(offline)} are not online: "
                            f"{ONLINE} is {format_cpulist(online)})")
    if hot & nic:
        problems.append(f"{field}={text!r} (CPUs {format_cpulist(hot & nic)} run spinning workers)")
    if housekeeping & (hot | nic):
        problems.append(f"tuning.housekeeping_cpus={hk_text!r} (CPUs {format_cpulist(housekeeping & (hot | nic))} "
                        f"are hot or nic CPUs)")
    if not housekeeping:
        problems.append(f"tuning.housekeeping_cpus={format_cpulist(housekeeping)!r} (no housekeeping CPU left: "
                        f"online {format_cpulist(online)}, hot {format_cpulist(hot) or 'none'}, "
                        f"nic {format_cpulist(nic) or 'none'}; the kernel needs at least one)")
    if problems:
        raise PartitionError(problems)
    return Partition(online, hot, workers, nic, housekeeping, why)
