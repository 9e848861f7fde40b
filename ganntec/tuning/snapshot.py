"""`ganntec tune snapshot --out DIR`: a fixture tree of the files the tool reads, taken read-only.

It copies, from under --root (default `/`), the boot parameters, /proc/interrupts and every
IRQ's affinity, the sysctls and sysfs files of the plan, the CPU lists, each NIC's queues
and device IRQ list (the `device` link is kept as a link: only its target's name is used),
irqbalance's environment file (the only file taken from /etc), and this process's limits. It
also records `ethtool -c/-g/-l` of each NIC into `.ganntec-tune/ethtool/NIC.{c,g,l}` (a
failure as `rc=N` and its message) and the size of /dev/shm into `.ganntec-tune/statvfs/dev/shm`,
which the recording runner and Host.statvfs answer from on a fake root. Nothing is written
under the root; unreadable files are skipped and listed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ganntec.config import TuningConfig
from ganntec.tuning.host import STATE_DIR, Host, HostError
from ganntec.tuning.plan import CPU, THP, WORKQUEUE_MASKS, sysctl_settings

CPU_FILES = ("online", "possible", "present", "isolated", "nohz_full", "cpuidle/current_driver")


@dataclass
class Snapshot:
    copied: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # "path (why)"


def _wanted(host: Host) -> list[str]:
    """Every file to copy, relative to the root (directories listed through the host)."""
    from ganntec.config import Config

    files = ["proc/cmdline", "proc/interrupts", "proc/self/limits", "proc/irq/default_smp_affinity",
             f"{THP}/enabled", f"{THP}/defrag", "etc/default/irqbalance"]
    files += [s.path for s in sysctl_settings(Config(tuning=TuningConfig(busy_poll_us=50)))]
    files += [path for _, path, _ in WORKQUEUE_MASKS]
    files += [f"{CPU}/{name}" for name in CPU_FILES]

    def listing(rel: str) -> list[str]:
        try:
            return host.listdir(rel)
        except HostError:
            return []

    for irq in listing("proc/irq"):
        if irq.isdigit():
            files += [f"proc/irq/{irq}/{n}" for n in ("smp_affinity", "smp_affinity_list", "effective_affinity_list")]
    for cpu in listing(CPU):
        if cpu.startswith("cpu") and cpu[3:].isdigit():
            files += [f"{CPU}/{cpu}/cpufreq/scaling_governor", f"{CPU}/{cpu}/power/pm_qos_resume_latency_us"]
    for nic in listing("sys/class/net"):
        base = f"sys/class/net/{nic}"
        for q in listing(f"{base}/queues"):
            files.append(f"{base}/queues/{q}/{'rps_cpus' if q.startswith('rx-') else 'xps_cpus'}")
        files += [f"{base}/device/msi_irqs/{n}" for n in listing(f"{base}/device/msi_irqs")]
    return files


def take(host: Host, out: Path, runner_nics: list[str] | None = None) -> Snapshot:
    """Copy what the tool reads from `host` into the tree `out`."""
    snap = Snapshot()
    out.mkdir(parents=True, exist_ok=True)

    def put(rel: str, text: str) -> None:
        dest = out / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        with open(dest, "w", encoding="utf-8") as f:
            f.write(text)

    for rel in _wanted(host):
        if rel.rsplit("/", 2)[-2] == "msi_irqs":  # only the names matter (the entries are directories on some kernels)
            put(rel, "")
            snap.copied.append(rel)
            continue
        try:
            text = host.read(rel)
        except HostError as exc:
            if host.exists(rel):  # missing files stay missing in the copy: "not on this kernel"
                snap.skipped.append(f"{rel} ({exc.why})")
            continue
        put(rel, text)
        snap.copied.append(rel)
    nics = host.listdir("sys/class/net") if runner_nics is None else runner_nics
    for nic in nics:
        link = host.readlink(f"sys/class/net/{nic}/device")
        dest = out / f"sys/class/net/{nic}/device"
        if link and not dest.exists():
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(link, dest)  # dangling in the copy: the plan reads only the target's name
            snap.copied.append(f"sys/class/net/{nic}/device -> {link}")
        for op in "cgl":
            rc, stdout, stderr = host.run(["ethtool", f"-{op}", nic])
            if rc == 127:
                snap.skipped.append(f"ethtool -{op} {nic} ({stderr.strip() or 'not installed'})")
                continue
            put(f"{STATE_DIR}/ethtool/{nic}.{op}", stdout if rc == 0 else f"rc={rc}\n{stderr}")
            snap.copied.append(f"ethtool -{op} {nic}")
    try:
        size, avail = host.statvfs("dev/shm")
        put(f"{STATE_DIR}/statvfs/dev/shm", f"1 {size} {avail}\n")  # frsize 1: bytes
        snap.copied.append("statvfs dev/shm")
    except HostError as exc:
        snap.skipped.append(f"dev/shm ({exc.why})")
    return snap
