"""`runtime.lock_memory` with real processes and a real RLIMIT_MEMLOCK. The child runs without
CAP_IPC_LOCK (setpriv drops it from the bounding set before exec, so even root's child is bound
by the limit) and with a 1 MiB limit, below what the rings need:
- "required": the start fails, the error says what to raise, and the fake systemd never hears
  READY=1 (the supervisor reports READY only after every segment is mapped and locked);
- "auto": it runs unlocked and says why;
and with the capability kept, "required" runs with its memory locked (VmLck of the supervisor)."""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys

import pytest
from test_runtime import CONFIG
from test_sdnotify_run import FakeSystemd

LIMIT = 1 << 20

pytestmark = pytest.mark.skipif(shutil.which("setpriv") is None, reason="setpriv (util-linux) is needed")


def _config(tmp_path, instance: str, mode: str):
    text = CONFIG.format(instance=instance, durability="os", segment_bytes=1 << 28, heartbeat_ms=1000,
                         placement="single")
    text = text.replace("heartbeat_ms = 1000\n", f"heartbeat_ms = 1000\nlock_memory = \"{mode}\"\n")
    path = tmp_path / "ganntec.toml"
    path.write_text(text)
    return path


def _low_limit():
    resource.setrlimit(resource.RLIMIT_MEMLOCK, (LIMIT, LIMIT))


def _run(tmp_path, instance, mode, drop_cap: bool, notify: str):
    cmd = [sys.executable, "-m", "ganntec.cli", "run", "--config", str(_config(tmp_path, instance, mode)),
           "--data-dir", str(tmp_path / "data")]
    if drop_cap:
        cmd = ["setpriv", "--bounding-set=-ipc_lock", "--inh-caps=-ipc_lock", "--"] + cmd
    env = dict(os.environ, NOTIFY_SOCKET=notify)
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            preexec_fn=_low_limit if drop_cap else None)


def _until(proc, text: str) -> list[str]:
    """Log lines up to the first containing `text` (the child's own timeouts bound the read)."""
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if text in line:
            return lines
    raise AssertionError(f"{text!r} never logged:\n{''.join(lines)}")


def _stop(proc) -> None:
    proc.terminate()
    try:
        proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()


def test_required_with_a_low_limit_refuses_to_start_and_never_reports_ready(tmp_path, instance):
    fake = FakeSystemd(str(tmp_path / "notify"))
    try:
        proc = _run(tmp_path, instance, "required", True, fake.address)
        out, _ = proc.communicate(timeout=300)
        assert proc.returncode != 0, out
        assert "mlock of segment" in out and "LimitMEMLOCK=" in out and "RLIMIT_MEMLOCK is 1048576 bytes" in out, out
        assert fake.mark() >= 0  # every datagram the dead process sent is in by now
        assert not any(b"READY=1" in data for _, _, data in fake.got)
    finally:
        fake.close()


def test_auto_with_a_low_limit_runs_unlocked_and_says_why(tmp_path, instance):
    fake = FakeSystemd(str(tmp_path / "notify"))
    proc = _run(tmp_path, instance, "auto", True, fake.address)
    try:
        lines = _until(proc, "running")
        text = "".join(lines)
        assert "not locking the shared segments: RLIMIT_MEMLOCK is 1048576 bytes" in text, text
        assert "shared memory not locked" in lines[-1]
    finally:
        _stop(proc)
        fake.close()


def test_required_with_the_capability_locks_every_segment(tmp_path, instance):
    fake = FakeSystemd(str(tmp_path / "notify"))
    proc = _run(tmp_path, instance, "required", False, fake.address)
    try:
        lines = _until(proc, "running")
        assert "shared memory locked" in lines[-1]
        fake.wait(lambda pid, data: b"READY=1" in data, timeout=120)
        with open(f"/proc/{proc.pid}/status") as f:
            locked_kib = next(int(line.split()[1]) for line in f if line.startswith("VmLck:"))
        assert locked_kib * 1024 >= 3 * 4096 * 128  # at least cmd.0, cmd.1 and reports.1's slots
    finally:
        _stop(proc)
        fake.close()
