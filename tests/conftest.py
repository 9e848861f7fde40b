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
