"""numba compilation settings shared by every compiled module.

Every @njit in Ganntec uses `cache=True` (cold compile of a module's functions takes seconds,
a warm start ~0.2 s). numba keys its cache by the *file* of each function and the hash of that
file only: a layout constant imported from another module stays stale in the cache after the
constant changes (measured: a cached function kept returning SLOT_BYTES=64 after it became 128).
So the cache directory itself is keyed by a fingerprint of every module that compiled code may
import constants from (all of `ganntec/shm` and `ganntec/engines`, plus the numba version):
change any layout and every compiled function is rebuilt.

The base directory is, in order: `configure_cache(base)`, `$GANNTEC_NUMBA_CACHE_DIR`,
`$NUMBA_CACHE_DIR`, then `$XDG_CACHE_HOME/ganntec/numba` (or `~/.cache/ganntec/numba`). Point
it at a writable place for read-only installs.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent
# Modules whose constants compiled code may read: they key the cache directory.
_LAYOUT_DIRS = ("shm", "engines")


def layout_fingerprint() -> str:
    """Short hash of every compiled/layout module's source and the numba version."""
    import numba

    h = hashlib.sha256(numba.__version__.encode())
    for sub in _LAYOUT_DIRS:
        for path in sorted((_PACKAGE_DIR / sub).glob("*.py")):
            h.update(path.name.encode())
            h.update(path.read_bytes())
    return h.hexdigest()[:16]


def default_cache_base() -> Path:
    for var in ("GANNTEC_NUMBA_CACHE_DIR", "NUMBA_CACHE_DIR"):
        value = os.environ.get(var)
        if value:
            return Path(value)
    xdg = os.environ.get("XDG_CACHE_HOME")
    root = Path(xdg) if xdg else Path.home() / ".cache"
    return root / "ganntec" / "numba"


def configure_cache(base: str | os.PathLike | None = None) -> Path:
    """Point numba's cache at `<base>/layout-<fingerprint>`; returns that directory.

    Must run before any Ganntec module with compiled functions is imported (the package's
    `__init__` does it), because numba fixes a function's cache location when it is decorated.
    """
    import numba

    directory = (Path(base) if base is not None else default_cache_base()) / f"layout-{layout_fingerprint()}"
    numba.config.CACHE_DIR = str(directory)
    return directory
