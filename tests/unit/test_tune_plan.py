"""ganntec tune against fake /proc and /sys trees (tests/fixtures/tune/hosts.py): the plan's
text (golden), check's exit codes 0/1/2, apply writing exactly the expected files (truncating)
and undo restoring them, a re-apply after a crash keeping the first originals, the refusals of
apply, the CPU partition's errors, emit's files (checked with systemd-tmpfiles), snapshot, and
the conftest guard against writes to the real /proc and /sys."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from ganntec.config import load, parse as parse_config, worker_cpus
from ganntec.tuning import apply as A
from ganntec.tuning import cli, emit, snapshot
from ganntec.tuning.cpus import PartitionError, partition
from ganntec.tuning.host import Host, Unreadable, host_for
from ganntec.tuning.plan import build
from ganntec.tuning.settings import check_all, exit_code

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "tune"
_spec = importlib.util.spec_from_file_location("tune_hosts", FIXTURES / "hosts.py")
hosts = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(hosts)
ONLINE16 = set(range(16))


def tree_hashes(root: Path) -> dict[str, str]:
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and not p.is_symlink():
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@pytest.fixture
def synth(tmp_path):
    root = hosts.synthetic_16c(tmp_path / "root")
    cfg_path = tmp_path / "ganntec.toml"
    cfg_path.write_text(hosts.config_text())
    return root, str(cfg_path)


def run(argv, capsys, euid=None):
    args = cli.build_parser().parse_args(argv)
    if euid is not None:
        args.euid = euid
    code = cli.run(args)
    out, err = capsys.readouterr()
    return code, out, err


def test_worker_cpus_is_what_the_supervisor_pins():
    cfg = parse_config(hosts.config_text(), cpus_available=ONLINE16)
    assert worker_cpus(cfg) == {"order": 15, "risk": 14, "matching": 13, "position": 12}
    single = parse_config(hosts.config_text(cpus="0-3", placement="single"), cpus_available=ONLINE16)
    assert worker_cpus(single) == {"engines": 3}
    assert worker_cpus(load(None)) == {}  # the demo: runtime.cpus = "auto"
    wrap = parse_config(hosts.config_text(cpus="4-5"), cpus_available=ONLINE16)
    assert worker_cpus(wrap) == {"order": 5, "risk": 4, "matching": 5, "position": 4}


def test_plan_golden_synthetic(synth, capsys):
    root, cfg = synth
    code, out, _ = run(["plan", "--root", str(root), "--config", cfg], capsys)
    assert code == 0
    assert out == (FIXTURES / "plan-16c.txt").read_text()


PLAN_THIS_VM = """\
CPUs: online 0-1; hot none (runtime.cpus = "auto": no worker is pinned, nothing to isolate); nic none; housekeeping 0-1

ok          proc.cmdline                       readable  # the boot parameters
change      vm.swappiness                      60 -> 10 (write 10 to /proc/sys/vm/swappiness)  # latency-performance: swap less; hot memory is mlocked anyway
ok          kernel.numa_balancing              0  # network-latency: no NUMA balancing page faults on the hot path
change      kernel.timer_migration             1 -> 0 (write 0 to /proc/sys/kernel/timer_migration)  # network-latency: timers stay on the CPU that armed them
ok          kernel.nmi_watchdog                0  # network-latency: no periodic NMI on every CPU
change      vm.stat_interval                   1 -> 10 (write 10 to /proc/sys/vm/stat_interval)  # network-latency: vmstat work every 10 s, not every second
change      kernel.hung_task_timeout_secs      120 -> 600 (write 600 to /proc/sys/kernel/hung_task_timeout_secs)  # network-latency: fewer hung-task scans
change      net.ipv4.tcp_fastopen              1 -> 3 (write 3 to /proc/sys/net/ipv4/tcp_fastopen)  # network-latency: TCP Fast Open as client and server
change      net.core.busy_read                 0 -> 50 (write 50 to /proc/sys/net/core/busy_read)  # network-latency, net.rst: sockets busy-poll 50 us before sleeping (tuning.busy_poll_us)
change      net.core.busy_poll                 0 -> 50 (write 50 to /proc/sys/net/core/busy_poll)  # network-latency, net.rst: poll/select/epoll busy-poll too
change      thp.enabled                        madvise -> never (write never to /sys/kernel/mm/transparent_hugepage/enabled)  # network-latency, transhuge.rst: no khugepaged, no huge-page faults
change      thp.defrag                         madvise -> never (write never to /sys/kernel/mm/transparent_hugepage/defrag)  # transhuge.rst: no allocation stalls in direct compaction
n/a         cpu0.governor                      (sys/devices/system/cpu/cpu0/cpufreq/scaling_governor: no such file)  # latency-performance: full clock, no frequency ramp-up
n/a         cpu1.governor                      (sys/devices/system/cpu/cpu1/cpufreq/scaling_governor: no such file)  # latency-performance: full clock, no frequency ramp-up
ok          shm.size                           24105 MiB (24097 MiB free)  # tmpfs.rst: /dev/shm holds the rings (their bytes as ganntec deploy emit counts them)
manual      rlimit.memlock                     8388608 -> >= 79691776 (raise the limit: LimitMEMLOCK=76M in the unit (ganntec deploy emit), or ulimit -l 77824 for a shell)  # mlock(2): the rings are locked; LimitMEMLOCK= from ganntec deploy emit
reboot      boot.skew_tick                     (absent) -> 1 (add skew_tick=1 to the kernel command line and reboot)  # network-latency: per-CPU ticks offset, less jiffies lock contention

Needs a reboot (boot parameters are checked and printed, never applied); add to the kernel command line:
  skew_tick=1
9 to change, 1 check-only to fix by hand, 1 boot parameters, 4 ok, 2 n/a, 0 unsupported or unreadable
"""


def test_plan_golden_this_vm(tmp_path, capsys):
    root = hosts.this_vm(tmp_path / "vm")
    code, out, _ = run(["plan", "--root", str(root)], capsys)
    assert (code, out) == (0, PLAN_THIS_VM)
    # with its virtio NIC named: the NIC's IRQs (virtio2-*) found through the device link
    code, out, _ = run(["check", "--root", str(root), "--nic", "eth0", "--nic-cpus", "0"], capsys)
    assert code == 2  # no ethtool on that machine: the NIC's coalescing cannot be checked
    for irq in (37, 38, 39):
        assert re.search(rf"\ndrift +irq\.{irq}\.affinity +0-1 -> 0  # RH RT guide: virtio2-", out)
    assert re.search(r"\ndrift +irq\.36\.affinity +0-1 -> 1  # cpu-isolation.rst: virtio1-req.0 off", out)
    assert "UNSUPPORTED eth0.coalesce.rx-usecs" in out


def test_check_exit_codes_and_apply_undo(synth, capsys):
    root, cfg = synth
    before_bytes = {p: (root / p).read_bytes() for p in tree_hashes(root)}
    assert run(["check", "--root", str(root), "--config", cfg], capsys)[0] == 1
    before = tree_hashes(root)
    code, out, _ = run(["apply", "--root", str(root), "--config", cfg], capsys)
    assert code == 0
    assert out.count("\nchanged  ") + out.startswith("changed  ") == 60
    after = tree_hashes(root)
    changed = {p for p in set(before) | set(after) if before.get(p) != after.get(p)}
    expected = {
        "proc/sys/vm/swappiness": "10\n", "proc/sys/kernel/numa_balancing": "0\n",
        "proc/sys/kernel/timer_migration": "0\n", "proc/sys/kernel/nmi_watchdog": "0\n",
        "proc/sys/vm/stat_interval": "10\n", "proc/sys/kernel/hung_task_timeout_secs": "600\n",
        "proc/sys/net/ipv4/tcp_fastopen": "3\n", "proc/sys/net/core/busy_read": "50\n",
        "proc/sys/net/core/busy_poll": "50\n",
        "sys/kernel/mm/transparent_hugepage/enabled": "never\n",
        "sys/kernel/mm/transparent_hugepage/defrag": "never\n",
        "sys/devices/virtual/workqueue/cpumask": "ff9\n",
        "sys/bus/workqueue/devices/writeback/cpumask": "ff9\n",
        "proc/irq/default_smp_affinity": "ff9\n",
        "etc/default/irqbalance": hosts.IRQBALANCE + "IRQBALANCE_BANNED_CPULIST=12-15\n"
                                  + 'IRQBALANCE_ARGS="' + " ".join(f"--banirq={n}" for n in range(121, 130)) + '"\n',  # the NIC's
        ".ganntec-tune/ethtool/eth0.c": hosts.IXGBE_C.replace("Adaptive RX: on", "Adaptive RX: off").replace(
            "rx-usecs:\t1", "rx-usecs:\t0"),
        ".ganntec-tune/ethtool/eth0.g": hosts.IXGBE_G.replace("settings:\nRX:\t\t\t512", "settings:\nRX:\t\t\t1024"),
        ".ganntec-tune/commands.log": "ethtool -C eth0 adaptive-rx off\nethtool -C eth0 rx-usecs 0\n"
                                      "ethtool -G eth0 rx 1024\n",
    }
    expected.update({f"sys/devices/system/cpu/cpu{c}/cpufreq/scaling_governor": "performance\n" for c in range(16)})
    expected.update({f"sys/devices/system/cpu/cpu{c}/power/pm_qos_resume_latency_us": "n/a\n" for c in range(12, 16)})
    expected.update({f"proc/irq/{i}/smp_affinity_list": "0,3-11\n" for i in (8, 9, 16, 120)})
    expected.update({f"proc/irq/{i}/smp_affinity_list": "1-2\n" for i in range(121, 130)})
    expected.update({f"sys/class/net/eth0/queues/tx-{q}/xps_cpus": f"{format(0x101 << q, 'x')}\n" for q in range(8)})
    assert changed == set(expected) | {A.UNDO_FILE}
    for rel, text in expected.items():
        assert (root / rel).read_text() == text, rel
    assert run(["check", "--root", str(root), "--config", cfg], capsys)[0] == 0

    # one value drifts: 1, and apply changes only that one
    (root / "proc/sys/vm/swappiness").write_text("30\n")
    assert run(["check", "--root", str(root), "--config", cfg], capsys)[0] == 1
    code, out, _ = run(["apply", "--root", str(root), "--config", cfg], capsys)
    assert code == 0 and "changed  vm.swappiness: 30 -> 10" in out and out.count("changed") == 1

    code, out, _ = run(["undo", "--root", str(root)], capsys)
    assert code == 0 and out.count("restored ") == 60
    restored = tree_hashes(root)
    for rel, data in before_bytes.items():
        if rel.startswith("sys/kernel/mm/transparent_hugepage/"):
            # sysfs semantics: writing the saved choice selects it; a plain file then holds just that word
            assert (root / rel).read_text() == "madvise\n"
        elif not rel.startswith(".ganntec-tune/"):
            assert (root / rel).read_bytes() == data, rel
    assert (root / ".ganntec-tune/ethtool/eth0.c").read_text() == hosts.IXGBE_C
    assert (root / ".ganntec-tune/ethtool/eth0.g").read_text() == hosts.IXGBE_G
    assert (root / ".ganntec-tune/commands.log").read_text().splitlines()[3:] == [
        "ethtool -G eth0 rx 512", "ethtool -C eth0 rx-usecs 1", "ethtool -C eth0 adaptive-rx on"]
    assert A.UNDO_FILE not in restored
    assert run(["undo", "--root", str(root)], capsys)[:2] == (0, f"nothing to undo (no /{A.UNDO_FILE})\n")


def test_reapply_after_a_crash_keeps_the_first_originals(synth, capsys):
    root, cfg_path = synth
    host = host_for(root)
    cfg = parse_config(Path(cfg_path).read_text(), cpus_available=ONLINE16)
    plan = build(cfg, partition(cfg, host), host, "eth0")
    results = check_all(list(plan.settings), host)

    class Crash(Exception):
        pass

    calls = []

    def say(line):
        calls.append(line)
        if len(calls) == 3:
            raise Crash  # dies after two changes, the undo file already written
    with pytest.raises(Crash):
        A.apply(results, host, say)
    assert (root / "proc/sys/vm/swappiness").read_text() == "10\n"
    saved = {e["key"]: e for e in A.load_undo(host)}
    assert saved["vm.swappiness"] == {"key": "vm.swappiness", "path": "proc/sys/vm/swappiness", "write": "60\n"}
    # the operator changes a value by hand, then applies again: the undo keeps the first original
    (root / "proc/sys/vm/swappiness").write_text("20\n")
    again = check_all(list(plan.settings), host)
    assert A.apply(again, host, lambda line: None) == 0
    assert {e["key"]: e for e in A.load_undo(host)}["vm.swappiness"]["write"] == "60\n"
    assert A.undo(host, lambda line: None) == 0
    assert (root / "proc/sys/vm/swappiness").read_text() == "60\n"


def test_irq_eio_is_reported_not_fatal(synth, capsys):
    root, cfg_path = synth
    cfg = parse_config(Path(cfg_path).read_text(), cpus_available=ONLINE16)

    class ManagedIrqHost(Host):
        def write(self, rel, text):
            if rel == "proc/irq/120/smp_affinity_list":
                raise OSError(5, "Input/output error")
            super().write(rel, text)

    host = ManagedIrqHost(root, host_for(root).runner)
    results = check_all(list(build(cfg, partition(cfg, host), host, "eth0").settings), host)
    lines = []
    assert A.apply(results, host, lines.append) == 0
    assert any(line.startswith("kept     irq.120.affinity: the kernel refused") for line in lines)
    assert "irq.120.affinity" not in {e["key"] for e in A.load_undo(host)}
    assert (root / "proc/irq/120/smp_affinity_list").read_text() == "0-15\n"


def test_broken_host_exits_2(tmp_path, capsys):
    root = hosts.broken(tmp_path / "broken")
    cfg = tmp_path / "c.toml"
    cfg.write_text(hosts.config_text())
    code, out, _ = run(["check", "--root", str(root), "--config", str(cfg)], capsys)
    assert code == 2
    assert "UNSUPPORTED proc.cmdline                       (proc/cmdline: no such file)" in out
    assert "UNREADABLE  thp.enabled                        (sys/kernel/mm/transparent_hugepage/enabled: a directory where a file belongs)" in out
    assert "n/a         thp.defrag" in out  # THP compiled out is not drift and not an error
    assert "UNSUPPORTED eth0.present                       (sys/class/net/eth0/queues: no such directory)" in out
    assert "UNSUPPORTED boot.nohz_full" in out  # the boot parameters cannot be read either

    # a file the host refuses to read (root reads mode-000 files, so the reader is injected)
    class Denied(Host):
        def _open_read(self, path):
            if path.name == "swappiness":
                raise PermissionError(13, "Permission denied")
            return super()._open_read(path)

    host = Denied(root, host_for(root).runner)
    with pytest.raises(Unreadable, match="permission denied"):
        host.read("proc/sys/vm/swappiness")
    cfgv = parse_config(cfg.read_text(), cpus_available=ONLINE16)
    results = {r.setting.key: r for r in check_all(list(build(cfgv, partition(cfgv, host), host, "eth0").settings), host)}
    assert results["vm.swappiness"].status == "unreadable"
    assert exit_code(list(results.values())) == 2


def test_apply_refusals(synth, tmp_path, capsys, monkeypatch):
    root, cfg = synth
    before = tree_hashes(root)
    code, _, err = run(["apply", "--config", cfg], capsys)
    assert code == 2 and "--root=<missing> (apply writes" in err
    monkeypatch.delenv(A.ALLOW_ENV, raising=False)
    code, _, err = run(["apply", "--root", "/"], capsys, euid=lambda: 0)
    assert code == 2 and f"needs {A.ALLOW_ENV}=1" in err
    monkeypatch.setenv(A.ALLOW_ENV, "1")
    code, _, err = run(["apply", "--root", "/"], capsys, euid=lambda: 1000)
    assert code == 2 and "needs root; euid is 1000" in err
    code, _, err = run(["undo"], capsys)
    assert code == 2 and "--root=<missing> (undo writes" in err
    code, _, err = run(["undo", "--root", "/"], capsys, euid=lambda: 1000)
    assert code == 2 and "undo on the real machine needs root" in err
    assert tree_hashes(root) == before


def test_partition_errors(tmp_path, capsys):
    root = hosts.synthetic_16c(tmp_path / "root")
    cases = [
        (hosts.config_text(cpus="0-15", tuning='housekeeping_cpus = "12"\n'),
         "tuning.housekeeping_cpus='12' (CPUs 12 are hot or nic CPUs)"),
        (hosts.config_text(cpus="0-15", tuning='nic = "eth0"\nnic_cpus = "14-20"\n'),
         "tuning.nic_cpus='14-20' (CPUs 16-20 are not online: sys/devices/system/cpu/online is 0-15)"),
        (hosts.config_text(cpus="0-3", tuning='nic = "eth0"\nnic_cpus = "4-15"\n'),
         "tuning.housekeeping_cpus='' (no housekeeping CPU left: online 0-15, hot 0-3, nic 4-15; the kernel "
         "needs at least one)"),
        (hosts.config_text(cpus="0-31"), "runtime.cpus='0-31' (CPUs [16, 17,"),
        (hosts.config_text(tuning='nic = "a/b"\nbusy_poll_us = -1\nextra = 1\n'), "tuning.extra=1 (unknown field)"),
    ]
    for text, problem in cases:
        cfg = tmp_path / "c.toml"
        cfg.write_text(text)
        code, _, err = run(["check", "--root", str(root), "--config", str(cfg)], capsys)
        assert code == 2 and problem in err, err
    cfg.write_text(hosts.config_text())
    code, _, err = run(["check", "--root", str(root), "--config", str(cfg), "--nic", "x" * 16], capsys)
    assert code == 2 and "--nic='xxxxxxxxxxxxxxxx' (an interface name" in err
    with pytest.raises(PartitionError, match="--nic-cpus='1' \\(CPUs 1 run spinning workers\\)"):
        c = parse_config(hosts.config_text(cpus="0-1", placement="per-engine", tuning='nic = "eth0"\n'),
                         cpus_available=ONLINE16)
        partition(c, host_for(root), "1")


def test_emit_files_and_systemd_tmpfiles(synth, tmp_path, capsys):
    root, cfg = synth
    out = tmp_path / "etc"
    out.mkdir()
    code, text, _ = run(["emit", "--root", str(root), "--config", cfg, "--out", str(out)], capsys)
    assert code == 0 and text.count("wrote ") == 6
    assert (out / "kernel-cmdline.txt").read_text() == (
        "isolcpus=managed_irq,12-15 nohz_full=12-15 rcu_nocbs=12-15 irqaffinity=0,3-11 skew_tick=1\n")
    irqbalance = (out / "default/irqbalance").read_text()
    assert "\nIRQBALANCE_BANNED_CPULIST=12-15\n" in irqbalance  # the hot CPUs; the NIC's IRQs stay pinned:
    assert irqbalance.endswith("\nIRQBALANCE_ARGS=\"" + " ".join(f"--banirq={n}" for n in range(121, 130)) + "\"\n")
    assert (out / "systemd/system.conf.d/ganntec-affinity.conf").read_text().endswith("[Manager]\nCPUAffinity=0,3-11\n")
    tuned = (out / "tuned/ganntec/tuned.conf").read_text()
    assert "include=cpu-partitioning\n\n[variables]\nisolated_cores=12-15\n\n[sysctl]\n" in tuned
    assert "net.core.busy_read=50\n" in tuned
    sysctl = (out / "sysctl.d/60-ganntec.conf").read_text()
    assert "vm.swappiness = 10\n" in sysctl and "kernel.timer_migration = 0\n" in sysctl
    tmpfiles = (out / "tmpfiles.d/ganntec-tune.conf").read_text()
    assert tmpfiles.endswith("w /sys/kernel/mm/transparent_hugepage/enabled - - - - never\n"
                             "w /sys/kernel/mm/transparent_hugepage/defrag - - - - never\n"
                             "w /sys/devices/virtual/workqueue/cpumask - - - - ff9\n"
                             "w /sys/bus/workqueue/devices/writeback/cpumask - - - - ff9\n")
    # systemd-tmpfiles applies the file to a fake root (its files emptied first: a `w` line
    # writes from offset 0 without truncating, ops-facts 3.3)
    tool = shutil.which("systemd-tmpfiles")
    assert tool, "systemd-tmpfiles is part of the machine image (.ci/run installs systemd)"
    fake = tmp_path / "fake"
    for rel in ("sys/kernel/mm/transparent_hugepage/enabled", "sys/kernel/mm/transparent_hugepage/defrag",
                "sys/devices/virtual/workqueue/cpumask", "sys/bus/workqueue/devices/writeback/cpumask"):
        (fake / rel).parent.mkdir(parents=True, exist_ok=True)
        (fake / rel).write_text("")
    (fake / "etc/tmpfiles.d").mkdir(parents=True)
    shutil.copy(out / "tmpfiles.d/ganntec-tune.conf", fake / "etc/tmpfiles.d/")
    done = subprocess.run([tool, f"--root={fake}", "--create", "ganntec-tune.conf"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert (fake / "sys/kernel/mm/transparent_hugepage/enabled").read_text().strip() == "never"
    assert (fake / "sys/devices/virtual/workqueue/cpumask").read_text().strip() == "ff9"


def test_emit_without_hot_cpus(tmp_path):
    root = hosts.this_vm(tmp_path / "vm")
    cfg = load(None)
    part = partition(cfg, host_for(root))
    files = emit.render(cfg, part)
    assert set(files) == {"sysctl.d/60-ganntec.conf", "tmpfiles.d/ganntec-tune.conf", "kernel-cmdline.txt",
                          "tuned/ganntec/tuned.conf"}
    assert files["kernel-cmdline.txt"] == "skew_tick=1\n"
    assert "include=network-latency\n" in files["tuned/ganntec/tuned.conf"]


def test_snapshot_copies_a_tree_read_only(synth, tmp_path):
    root, _ = synth
    before = tree_hashes(root)
    out = tmp_path / "snap"
    snap = snapshot.take(host_for(root), out)
    assert tree_hashes(root) == before
    assert not snap.skipped
    for rel in ("proc/cmdline", "proc/interrupts", "proc/irq/121/smp_affinity_list", "proc/sys/vm/swappiness",
                "sys/devices/system/cpu/cpu3/cpufreq/scaling_governor", "etc/default/irqbalance",
                "sys/class/net/eth0/queues/tx-7/xps_cpus", "sys/class/net/eth0/device/msi_irqs/129",
                ".ganntec-tune/ethtool/eth0.c", ".ganntec-tune/ethtool/eth0.l"):
        assert (out / rel).read_bytes() == (root / rel).read_bytes(), rel
    assert (out / ".ganntec-tune/statvfs/dev/shm").read_text() == f"1 {4096 * 4194304} {4096 * 4194000}\n"
    # unreadable files are skipped and listed
    (root / "proc/sys/vm/swappiness").unlink()
    (root / "proc/sys/vm/swappiness").mkdir()
    snap = snapshot.take(host_for(root), tmp_path / "snap2")
    assert snap.skipped == ["proc/sys/vm/swappiness (a directory where a file belongs)"]


def test_guard_refuses_writes_to_the_real_proc_and_sys(tmp_path):
    from conftest import LiveWriteRefused

    for attempt in (lambda: open("/proc/sys/vm/swappiness", "w"),
                    lambda: open("/sys/kernel/mm/transparent_hugepage/enabled", "a"),
                    lambda: Path("/proc/sys/vm/swappiness").write_text("60\n"),
                    lambda: os.open("/proc/sys/vm/swappiness", os.O_WRONLY),
                    lambda: Host(Path("/")).write("proc/sys/vm/swappiness", "60\n")):
        with pytest.raises(LiveWriteRefused, match="tests must never write the real"):
            attempt()
    link = tmp_path / "sneaky"
    link.symlink_to("/proc/sys/vm")
    with pytest.raises(LiveWriteRefused):
        open(link / "swappiness", "r+")
    assert open("/proc/sys/vm/swappiness").read().strip().isdigit()  # reads stay allowed
    (tmp_path / "ok").write_text("x")  # and writes elsewhere


def test_banirq_keeps_irqbalance_s_other_options(tmp_path):
    """IRQBALANCE_ARGS: the plan's --banirq options replace the old ones, every other option stays."""
    from ganntec.tuning.host import host_for
    from ganntec.tuning.settings import DRIFT, OK, IrqbalanceBanIrqSetting

    (tmp_path / "etc/default").mkdir(parents=True)
    f = tmp_path / "etc/default/irqbalance"
    f.write_text('#ENABLED=1\nIRQBALANCE_ARGS="--policyscript=/usr/local/bin/pin --banirq=5"\n')
    host = host_for(str(tmp_path))
    s = IrqbalanceBanIrqSetting("irqbalance", "irqbalance.banirq", "--banirq=40 --banirq=41", "the NIC's IRQs")
    r = s.check(host, {})
    assert (r.status, r.current) == (DRIFT, "--banirq=5")
    s.apply(host)
    assert f.read_text() == '#ENABLED=1\nIRQBALANCE_ARGS="--policyscript=/usr/local/bin/pin --banirq=40 --banirq=41"\n'
    assert s.check(host, {}).status == OK


def test_check_only_settings_refuse_to_apply(tmp_path):
    from ganntec.tuning.host import host_for
    from ganntec.tuning.settings import ApplyError, ShmSetting

    s = ShmSetting("shm", "shm.size", ">= 2 MiB", "the rings", check_only=True, need=2 << 20)
    with pytest.raises(ApplyError, match="shm.size is check-only: remount /dev/shm with size >= 2M"):
        s.apply(host_for(str(tmp_path)))
    with pytest.raises(ApplyError, match="check-only"):
        s.undo_entry("x")
