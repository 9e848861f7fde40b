"""numba caching: a layout constant imported by compiled code never goes stale in the cache,
the cache directory is configurable, and a warm start really hits the cache."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import ganntec
from ganntec import jit

PROBE = textwrap.dedent(
    """
    from numba import njit
    from ganntec.shm.records import RECORD_LAYOUT_VERSION

    @njit(cache=True)
    def layout_version():
        return RECORD_LAYOUT_VERSION
    """
)
RUN = "import ganntec, ganntec.engines._probe as p; v = p.layout_version(); print(v, p.layout_version.stats.cache_hits.most_common(1) != [], ganntec.NUMBA_CACHE_DIR)"


def _copy_package(tmp_path: Path) -> Path:
    root = tmp_path / "src"
    shutil.copytree(Path(ganntec.__file__).parent, root / "ganntec", ignore=shutil.ignore_patterns("__pycache__"))
    (root / "ganntec" / "engines" / "_probe.py").write_text(PROBE)
    return root


def _run(root: Path, cache: Path) -> tuple[int, bool, str]:
    env = dict(os.environ, PYTHONPATH=str(root), GANNTEC_NUMBA_CACHE_DIR=str(cache))
    out = subprocess.run([sys.executable, "-c", RUN], env=env, cwd=root, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    value, hit, directory = out.stdout.split()
    return int(value), hit == "True", directory


def test_changed_layout_constant_is_recompiled(tmp_path):
    root = _copy_package(tmp_path)
    cache = tmp_path / "cache"
    v1, hit1, dir1 = _run(root, cache)
    v2, hit2, dir2 = _run(root, cache)
    assert (v1, hit1) == (1, False) and (v2, hit2) == (1, True) and dir1 == dir2  # warm start hits
    records = root / "ganntec" / "shm" / "records.py"
    records.write_text(records.read_text().replace("RECORD_LAYOUT_VERSION = 1", "RECORD_LAYOUT_VERSION = 2"))
    v3, hit3, dir3 = _run(root, cache)
    assert (v3, hit3) == (2, False), "a stale cached constant survived a layout change"
    assert dir3 != dir1 and Path(dir3).parent == cache
    assert not (root / "ganntec" / "engines" / "__pycache__").exists() or not any(
        p.suffix == ".nbi" for p in (root / "ganntec" / "engines" / "__pycache__").iterdir()
    ), "cache written beside the source instead of the configured directory"


def test_cache_base_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("GANNTEC_NUMBA_CACHE_DIR", str(tmp_path / "a"))
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "b"))
    assert jit.default_cache_base() == tmp_path / "a"
    monkeypatch.delenv("GANNTEC_NUMBA_CACHE_DIR")
    assert jit.default_cache_base() == tmp_path / "b"
    monkeypatch.delenv("NUMBA_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert jit.default_cache_base() == tmp_path / "x" / "ganntec" / "numba"


def test_package_import_points_numba_at_the_keyed_directory():
    import numba

    assert len(jit.layout_fingerprint()) == 16
    assert numba.config.CACHE_DIR == str(ganntec.NUMBA_CACHE_DIR)
    assert Path(ganntec.NUMBA_CACHE_DIR).name.startswith("layout-")
