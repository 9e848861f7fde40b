"""Ganntec: a spot-market trading engine for one co-located Linux host."""

from ganntec.jit import configure_cache as _configure_cache

__version__ = "0.1.0"

NUMBA_CACHE_DIR = _configure_cache()
