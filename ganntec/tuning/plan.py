"""The tuning plan: which Settings a config asks of a host, derived from its CPU partition
(hot / nic / housekeeping, tuning/cpus.py) and what the host has (its IRQs, the NIC's queues).

Values follow TuneD's latency-performance, network-latency and cpu-partitioning profiles and
the kernel's cpu-isolation guide (../shared/notes/ops-facts.md section 1); each Setting carries
its reason. Isolation items (workqueue masks, IRQ affinity, irqbalance, PM QoS, isolcpus /
nohz_full / rcu_nocbs / irqaffinity) appear only when there are hot CPUs or NIC CPUs; NIC items
only when a NIC is configured.

NIC IRQs: the IRQ numbers in `sys/class/net/<nic>/device/msi_irqs` when the device lists them
(PCI NICs), else the IRQs whose handler names begin with the NIC's name (`eth0-TxRx-3`) or,
for virtio, with the virtio device the NIC's `device` link points to (`virtio2-input.0`).
"""

from __future__ import annotations

from dataclasses import dataclass

from ganntec.config import Config
from ganntec.cpulist import format_cpulist, format_cpumask
from ganntec.tuning import parse
from ganntec.tuning.cpus import Partition
from ganntec.tuning.host import Host, HostError
from ganntec.tuning.settings import (MIB, CmdlineSetting, EthtoolSetting, FileSetting, IrqbalanceBanIrqSetting,
                                     IrqbalanceSetting, MemlockSetting, ProbeSetting, Setting, ShmSetting, sysctl)

THP = "sys/kernel/mm/transparent_hugepage"
CPU = "sys/devices/system/cpu"
WORKQUEUE_MASKS = (("workqueue.cpumask", "sys/devices/virtual/workqueue/cpumask",
                    "cpu-partitioning: unbound workqueues run on housekeeping CPUs only"),
                   ("workqueue.writeback.cpumask", "sys/bus/workqueue/devices/writeback/cpumask",
                    "cpu-partitioning, RHEL tuning guide: writeback flushers on housekeeping CPUs"))
DMA_LATENCY_NOTE = ("/dev/cpu_dma_latency caps C-states only while a process holds it open (TuneD "
                    "force_latency); a one-shot tool cannot, so hold it in a long-running unit")


@dataclass(frozen=True)
class Plan:
    settings: tuple[Setting, ...]
    notes: tuple[str, ...]


def sysctl_settings(cfg: Config) -> list[Setting]:
    out = [
        sysctl("vm.swappiness", 10, "latency-performance: swap less; hot memory is mlocked anyway"),
        sysctl("kernel.numa_balancing", 0, "network-latency: no NUMA balancing page faults on the hot path"),
        sysctl("kernel.timer_migration", 0, "network-latency: timers stay on the CPU that armed them"),
        sysctl("kernel.nmi_watchdog", 0, "network-latency: no periodic NMI on every CPU"),
        sysctl("vm.stat_interval", 10, "network-latency: vmstat work every 10 s, not every second"),
        sysctl("kernel.hung_task_timeout_secs", 600, "network-latency: fewer hung-task scans"),
        sysctl("net.ipv4.tcp_fastopen", 3, "network-latency: TCP Fast Open as client and server"),
    ]
    us = cfg.tuning.busy_poll_us
    if us:
        out += [sysctl("net.core.busy_read", us, f"network-latency, net.rst: sockets busy-poll {us} us before "
                                                 "sleeping (tuning.busy_poll_us)"),
                sysctl("net.core.busy_poll", us, "network-latency, net.rst: poll/select/epoll busy-poll too")]
    return out


def _cpu_settings(part: Partition, host: Host) -> list[Setting]:
    out: list[Setting] = [
        FileSetting("sysfs", "thp.enabled", "never", "network-latency, transhuge.rst: no khugepaged, no "
                    "huge-page faults", path=f"{THP}/enabled", fmt="bracketed"),
        FileSetting("sysfs", "thp.defrag", "never", "transhuge.rst: no allocation stalls in direct compaction",
                    path=f"{THP}/defrag", fmt="bracketed"),
    ]
    if part.hot:
        mask = format_cpumask(part.housekeeping)
        out += [FileSetting("sysfs", key, mask, why, path=path, fmt="cpumask") for key, path, why in WORKQUEUE_MASKS]
    for c in sorted(part.online):
        out.append(FileSetting("sysfs", f"cpu{c}.governor", "performance",
                               "latency-performance: full clock, no frequency ramp-up",
                               path=f"{CPU}/cpu{c}/cpufreq/scaling_governor"))
    for c in sorted(part.hot):
        out.append(FileSetting("sysfs", f"cpu{c}.pm_qos_resume_latency_us", "n/a",
                               "TuneD pm_qos_resume_latency_us: this hot CPU never enters a C-state that "
                               "costs a wake-up", path=f"{CPU}/cpu{c}/power/pm_qos_resume_latency_us"))
    return out


def nic_irqs(host: Host, nic: str, table: dict) -> set[int]:
    """The IRQs of `nic` (see the module doc)."""
    base = f"sys/class/net/{nic}/device"
    try:
        return {int(n) for n in host.listdir(f"{base}/msi_irqs") if n.isdigit()}
    except HostError:
        pass
    prefixes = [nic]
    link = host.readlink(base)
    if link and link.rstrip("/").rsplit("/", 1)[-1].startswith("virtio"):
        prefixes.append(link.rstrip("/").rsplit("/", 1)[-1])
    return {irq for irq, row in table.items() if isinstance(irq, int) and any(
        name == p or name.startswith((f"{p}-", f"{p}_", f"{p}@")) for name in row.names for p in prefixes)}


def _irq_settings(part: Partition, host: Host, nic: str) -> list[Setting]:
    out: list[Setting] = [ProbeSetting("probe", "proc.interrupts", "readable",
                                       "the IRQ list the affinity plan is built from", required=True,
                                       check_only=True, path="proc/interrupts")]
    try:
        _, table = parse.interrupts(host.read("proc/interrupts"))
    except (HostError, ValueError):
        return out  # the probe reports why
    hk = format_cpulist(part.housekeeping)
    if part.hot:
        out.append(FileSetting("irq", "irq.default_smp_affinity", format_cpumask(part.housekeeping),
                               "cpu-isolation.rst: new IRQs start on housekeeping CPUs",
                               path="proc/irq/default_smp_affinity", fmt="cpumask"))
    ours = nic_irqs(host, nic, table) if nic else set()
    nic_cpus = format_cpulist(part.nic)
    for irq in sorted(k for k in table if isinstance(k, int)):
        path = f"proc/irq/{irq}/smp_affinity_list"
        if not host.exists(path):
            continue  # no affinity to set (the timer, a cascade)
        names = ", ".join(table[irq].names) or "?"
        if irq in ours and part.nic:
            out.append(FileSetting("irq", f"irq.{irq}.affinity", nic_cpus,
                                   f"RH RT guide: {names} (the NIC's IRQ) on the NIC CPUs", required=True,
                                   path=path, fmt="cpulist"))
        else:
            out.append(FileSetting("irq", f"irq.{irq}.affinity", hk,
                                   f"cpu-isolation.rst: {names} off the hot and NIC CPUs",
                                   required=irq in ours, path=path, fmt="cpulist"))
    return out


def nic_irq_list(host: Host, nic: str) -> list[int]:
    """The NIC's IRQs, sorted ([] when /proc/interrupts cannot be read: its probe says why)."""
    try:
        _, table = parse.interrupts(host.read("proc/interrupts"))
    except (HostError, ValueError):
        return []
    return sorted(nic_irqs(host, nic, table))


def _nic_settings(cfg: Config, part: Partition, host: Host, nic: str) -> list[Setting]:
    tu = cfg.tuning
    base = f"sys/class/net/{nic}"
    out: list[Setting] = [ProbeSetting("probe", f"{nic}.present", "present", "the configured NIC (tuning.nic)",
                                       required=True, check_only=True, path=f"{base}/queues", directory=True)]
    try:
        queues = host.listdir(f"{base}/queues")
    except HostError:
        return out  # the probe reports why
    rx = sorted((q for q in queues if q.startswith("rx-")), key=lambda q: int(q[3:]))
    tx = sorted((q for q in queues if q.startswith("tx-")), key=lambda q: int(q[3:]))
    for q in rx:
        out.append(FileSetting("rps", f"{nic}.{q}.rps_cpus", "0",
                               "scaling.rst: no RPS, so one CPU handles a queue end to end",
                               path=f"{base}/queues/{q}/rps_cpus", fmt="cpumask"))
    if len(tx) > 1:  # with one TX queue XPS has no effect (scaling.rst)
        for i, q in enumerate(tx):
            mine = {c for c in part.online if c % len(tx) == i}
            out.append(FileSetting("xps", f"{nic}.{q}.xps_cpus", format_cpumask(mine),
                                   "scaling.rst: each CPU sends on its own TX queue",
                                   path=f"{base}/queues/{q}/xps_cpus", fmt="cpumask"))
    if tu.coalesce:
        out += [EthtoolSetting("ethtool", f"{nic}.coalesce.adaptive-rx", "off",
                               "RH network determinism: a fixed interrupt rate, no adaptive delay",
                               required=False, nic=nic, op="c", name="adaptive-rx"),
                EthtoolSetting("ethtool", f"{nic}.coalesce.rx-usecs", str(tu.rx_usecs),
                               "RH network determinism: interrupt without delay (tuning.rx_usecs)",
                               nic=nic, op="c", name="rx-usecs")]
    for value, op, name, why in ((tu.rx_ring, "g", "rx", "tuning.rx_ring: size rings from drop counters"),
                                 (tu.tx_ring, "g", "tx", "tuning.tx_ring"),
                                 (tu.combined_channels, "l", "combined",
                                  "tuning.combined_channels: RSS queues (with one per CPU, RPS is redundant)")):
        if value:
            out.append(EthtoolSetting("ethtool", f"{nic}.{'rings' if op == 'g' else 'channels'}.{name}", str(value),
                                      why, nic=nic, op=op, name=name))
    return out


def boot_settings(part: Partition) -> list[Setting]:
    out: list[Setting] = []
    if part.hot:
        hot, hk = format_cpulist(part.hot), format_cpulist(part.housekeeping)
        out += [
            CmdlineSetting("cmdline", "boot.isolcpus", f"managed_irq,{hot}",
                           "cpu-isolation.rst: managed IRQs kept off the hot CPUs", reboot=True, check_only=True, required=True,
                           param="isolcpus"),
            CmdlineSetting("cmdline", "boot.nohz_full", hot,
                           "cpu-isolation.rst: no scheduler tick on a CPU that runs one spinning worker",
                           reboot=True, check_only=True, required=True, param="nohz_full", needs=f"{CPU}/nohz_full"),
            CmdlineSetting("cmdline", "boot.rcu_nocbs", hot, "kernel-parameters.txt: RCU callbacks run off the "
                           "hot CPUs", reboot=True, check_only=True, required=True, param="rcu_nocbs"),
            CmdlineSetting("cmdline", "boot.irqaffinity", hk, "cpu-isolation.rst: the default IRQ affinity is "
                           "the housekeeping CPUs", reboot=True, check_only=True, required=True, param="irqaffinity"),
        ]
    out.append(CmdlineSetting("cmdline", "boot.skew_tick", "1", "network-latency: per-CPU ticks offset, less "
                              "jiffies lock contention", reboot=True, check_only=True, required=True, param="skew_tick"))
    return out


def build(cfg: Config, part: Partition, host: Host, nic: str = "") -> Plan:
    """Every Setting for `cfg` on `host`, in the order check and plan print them."""
    from ganntec.deploy import plan as deploy_plan

    memory = deploy_plan(cfg)
    settings: list[Setting] = [ProbeSetting("probe", "proc.cmdline", "readable", "the boot parameters",
                                            required=True, check_only=True, path="proc/cmdline")]
    settings += sysctl_settings(cfg)
    settings += _cpu_settings(part, host)
    if part.hot or part.nic:
        settings += _irq_settings(part, host, nic)
    if part.hot:
        settings.append(IrqbalanceSetting("irqbalance", "irqbalance.banned", format_cpulist(part.hot),
                                          "cpu-partitioning, irqbalance(1): irqbalance never moves IRQs "
                                          "onto the hot CPUs"))
    ours = nic_irq_list(host, nic) if nic and part.nic else []
    if ours:
        settings.append(IrqbalanceBanIrqSetting("irqbalance", "irqbalance.banirq",
                                                " ".join(f"--banirq={n}" for n in ours),
                                                "irqbalance(1), ops-facts 1.3: irqbalance leaves the NIC's IRQs "
                                                "on the NIC CPUs they are pinned to"))
    if nic:
        settings += _nic_settings(cfg, part, host, nic)
    settings += [
        ShmSetting("shm", "shm.size", f">= {-(-memory.locked_bytes // MIB)} MiB",
                   "tmpfs.rst: /dev/shm holds the rings (their bytes as ganntec deploy emit counts them)",
                   required=True, check_only=True, need=memory.locked_bytes),
        MemlockSetting("rlimit", "rlimit.memlock", f">= {memory.memlock_mib * MIB}",
                       "mlock(2): the rings are locked; LimitMEMLOCK= from ganntec deploy emit",
                       required=True, check_only=True, need=memory.memlock_mib * MIB),
    ]
    settings += boot_settings(part)
    notes = [part.describe()]
    if part.hot:
        notes.append(DMA_LATENCY_NOTE)
    return Plan(tuple(settings), tuple(notes))
