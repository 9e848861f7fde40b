"""Shared fixtures. Compiled code caches into the temp dir (never the home directory), and every
test that makes segments gets its own instance name and leaves no /dev/shm/ganntec.* behind."""

from __future__ import annotations

import os
import tempfile
import uuid

# Before anything imports ganntec: keep numba's cache inside the temp dir, shared by the test
# run and the child processes it starts (they inherit the environment).
os.environ.setdefault("GANNTEC_NUMBA_CACHE_DIR", os.path.join(tempfile.gettempdir(), f"ganntec-test-numba-{os.getuid()}"))

import pytest  # noqa: E402

from ganntec.shm import segment as _segment  # noqa: E402


@pytest.fixture
def instance():
    """A fresh instance name; afterwards every segment and semaphore of it must be gone."""
    name = "t" + uuid.uuid4().hex[:12]
    yield name
    leftovers = _segment.list_segments(name) + _segment.list_semaphores(name)
    for seg in _segment.list_segments(name):
        try:
            import posix_ipc

            posix_ipc.unlink_shared_memory(seg)
        except Exception:
            pass
    for sem in _segment.list_semaphores(name):
        try:
            import posix_ipc

            posix_ipc.unlink_semaphore(sem)
        except Exception:
            pass
    assert not leftovers, f"test left shared memory behind: {leftovers}"


# --- guard: no test writes the real /proc or /sys ---------------------------------------------
# This machine (and CI) lets root write sysctls, /sys and IRQ affinity, and it is shared: a
# tuning test that wrote there would retune the host. Every open for writing, appending,
# truncating or creating of a path under /proc or /sys fails the test; reads stay allowed
# (psutil reads /proc). pathlib's write_text/write_bytes go through io.open.

import builtins  # noqa: E402
import io  # noqa: E402

_LIVE_API = ("/proc", "/sys")
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC


class LiveWriteRefused(PermissionError):
    """A test tried to write the real /proc or /sys."""


def _live_api_path(file) -> str | None:
    """The resolved path when `file` names something under /proc or /sys, else None. Called
    only for opens that write (few), so resolving symlinks and `..` each time is affordable."""
    if isinstance(file, int):
        return None
    try:
        real = os.path.realpath(os.fsdecode(os.fspath(file)))
    except TypeError:
        return None
    return real if real in _LIVE_API or real.startswith(("/proc/", "/sys/")) else None


def _refuse(path: str, how: str):
    raise LiveWriteRefused(f"test tried to open {path} for writing ({how}): tests must never write the real "
                           f"/proc or /sys (use a fake root under tmp_path)")


_real_open, _real_io_open, _real_os_open = builtins.open, io.open, os.open


def _guarded_open(file, mode="r", *args, **kwargs):
    if any(c in mode for c in "wax+"):
        path = _live_api_path(file)
        if path:
            _refuse(path, f"mode {mode!r}")
    return _real_io_open(file, mode, *args, **kwargs)


def _guarded_os_open(path, flags, *args, **kwargs):
    if flags & _WRITE_FLAGS:
        live = _live_api_path(path)
        if live:
            _refuse(live, f"flags {flags:#o}")
    return _real_os_open(path, flags, *args, **kwargs)


@pytest.fixture(autouse=True, scope="session")
def _no_live_proc_sys_writes():
    """Session-wide: wrap builtins.open, io.open and os.open (see LiveWriteRefused)."""
    builtins.open = io.open = _guarded_open
    os.open = _guarded_os_open
    try:
        yield
    finally:
        builtins.open, io.open, os.open = _real_open, _real_io_open, _real_os_open
