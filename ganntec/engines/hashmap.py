"""Open-addressing int64 -> int64 hash map over two numpy arrays, for compiled engine code.

Keys are positive int64 (0 marks an empty slot); capacity is a power of two kept at least
twice the live entries by the owner, so probes stay short. Deletion shifts later entries of
the probe run back (no tombstones), so lookups stay exact under any churn. Every function takes
the arrays' base addresses (ints) and the mask: no NRT refcounting, and they inline.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ganntec.engines.mem import ld_i64, st_i64

_FIB = -7046029254386353131  # 2**64 / golden ratio, as a signed int64 (products wrap)


@njit(cache=True, nogil=True)
def hm_slot(key, mask):
    return ((key * _FIB) >> 17) & mask


@njit(cache=True, nogil=True)
def hm_find(keys, mask, key):
    """Slot holding `key`, or -1."""
    j = hm_slot(key, mask)
    while True:
        k = ld_i64(keys + 8 * j)
        if k == key:
            return j
        if k == 0:
            return -1
        j = (j + 1) & mask


@njit(cache=True, nogil=True)
def hm_get(keys, vals, mask, key, default):
    j = hm_find(keys, mask, key)
    return default if j < 0 else ld_i64(vals + 8 * j)


@njit(cache=True, nogil=True)
def hm_put(keys, vals, mask, key, val):
    """Insert or overwrite."""
    j = hm_slot(key, mask)
    while True:
        k = ld_i64(keys + 8 * j)
        if k == key or k == 0:
            break
        j = (j + 1) & mask
    st_i64(keys + 8 * j, key)
    st_i64(vals + 8 * j, val)


@njit(cache=True, nogil=True)
def hm_del(keys, vals, mask, key):
    """Remove `key` if present; returns 1 if it was."""
    hole = hm_find(keys, mask, key)
    if hole < 0:
        return 0
    j = (hole + 1) & mask
    while True:
        k = ld_i64(keys + 8 * j)
        if k == 0:
            break
        home = hm_slot(k, mask)
        if ((j - home) & mask) >= ((j - hole) & mask):
            st_i64(keys + 8 * hole, k)
            st_i64(vals + 8 * hole, ld_i64(vals + 8 * j))
            hole = j
        j = (j + 1) & mask
    st_i64(keys + 8 * hole, 0)
    return 1


def capacity_for(entries: int) -> int:
    """Power-of-two slot count for up to `entries` live keys (load factor <= 1/2)."""
    cap = 2
    while cap < 2 * max(entries, 1):
        cap <<= 1
    return cap


def lookup(keys: np.ndarray, vals: np.ndarray, key: int):
    """Python-side lookup (tools, tests): the value or None."""
    mask = len(keys) - 1
    j = ((key * _FIB) % (1 << 64)) >> 17 & mask
    while keys[j] != 0:
        if keys[j] == key:
            return int(vals[j])
        j = (j + 1) & mask
    return None
