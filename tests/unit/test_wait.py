"""The `auto` rule and strategy construction (sysfs read through an injected root)."""

from __future__ import annotations

import pytest

from ganntec.shm import wait as wt


def _fake_sys(tmp_path, isolated="", nohz=""):
    d = tmp_path / "sys/devices/system/cpu"
    d.mkdir(parents=True)
    (d / "isolated").write_text(isolated + "\n")
    (d / "nohz_full").write_text((nohz or "(null)") + "\n")
    return tmp_path


def test_isolated_cpus_read_from_root(tmp_path):
    root = _fake_sys(tmp_path, isolated="2-3", nohz="4")
    assert wt.isolated_cpus(root) == {2, 3, 4}
    assert wt.isolated_cpus(tmp_path / "missing") == set()


@pytest.mark.parametrize(
    "processes, cpus, isolated, expect",
    [
        (2, {0, 1, 2, 3}, {2, 3}, "busy-spin"),     # each spinner gets an isolated core
        (3, {0, 1, 2, 3}, {2, 3}, "spin-yield"),    # a core each, but shared with the OS
        (2, {0, 1}, set(), "spin-yield"),
        (3, {0, 1}, set(), "spin-block"),           # this host: engines + test runner
        (5, {0, 1, 2, 3}, {0, 1, 2, 3}, "spin-block"),
        (2, {0, 1}, {5, 6}, "spin-yield"),          # isolated CPUs outside our affinity don't count
    ],
)
def test_auto_rule(processes, cpus, isolated, expect):
    assert wt.choose(processes, cpus, isolated) == expect


def test_make_by_name():
    assert isinstance(wt.make("spin-block", spin_us=1), wt.SpinBlock)
    assert isinstance(wt.make("busy-spin"), wt.BusySpin)
    assert wt.make("auto", processes=64).name == "spin-block"
    with pytest.raises(ValueError, match="wait='nap'"):
        wt.make("nap")
    with pytest.raises(ValueError, match="processes=0"):
        wt.choose(0, {0})


def test_tsc_calibration_in_a_cold_process(tmp_path):
    """Regression: the first rdtsc call loads compiled code (ms); calibration must not include it."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, GANNTEC_NUMBA_CACHE_DIR=str(tmp_path))
    code = "from ganntec.shm.wait import tsc_per_ns; print(tsc_per_ns())"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert float(out.stdout) > 0.1  # any x86-64 TSC ticks faster than 100 MHz
