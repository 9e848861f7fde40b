"""POSIX shared-memory segments: naming, creation, attachment, staleness, locking, unlink.

Every Ganntec segment starts with this 64-byte common header; the kind-specific layout
(ring, table) follows it and is drawn in its own module.

    offset  size  field               written by / when
    ------  ----  ------------------  ---------------------------------------------------
         0     8  magic               creator, LAST, with release: the ready flag
         8     4  layout_version      creator, before magic
        12     4  header_bytes        creator: bytes before the kind's payload (slots, rows)
        16     8  total_bytes         creator: the whole segment
        24     8  creator_pid         creator
        32     8  creator_start_cs    creator's process start time, centiseconds since epoch
                                      (pid + start time identify a process; pids get reused)
        40     8  created_ns          creator, CLOCK_REALTIME (for operators only)
        48    16  reserved            zero
        64        kind-specific header

Names are `/ganntec.<instance>.<name>`, created with O_CREAT|O_EXCL and mode 0600. A name
that already exists is never silently reused: `create` reports whether a live process owns it
(another instance is running) or it is the leftover of a dead one (stale: `remove_stale`
clears it after an operator decides). Attaching returns a named outcome instead of guessing.
Segments are pre-faulted and mlocked so the hot path never page-faults.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import enum
import errno
import mmap
import os
import re
import resource
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import posix_ipc
import psutil

from ganntec.shm.atomics import py_load_acquire, py_store_release

# --- common header layout (offsets in bytes) ---------------------------------------------
OFF_MAGIC = 0
OFF_LAYOUT_VERSION = 8
OFF_HEADER_BYTES = 12
OFF_TOTAL_BYTES = 16
OFF_CREATOR_PID = 24
OFF_CREATOR_START_CS = 32
OFF_CREATED_NS = 40
COMMON_HEADER_BYTES = 64

COMMON_HEADER_DTYPE = np.dtype(
    {
        "names": ["magic", "layout_version", "header_bytes", "total_bytes", "creator_pid",
                  "creator_start_cs", "created_ns"],
        "formats": ["<i8", "<u4", "<u4", "<i8", "<i8", "<i8", "<i8"],
        "offsets": [OFF_MAGIC, OFF_LAYOUT_VERSION, OFF_HEADER_BYTES, OFF_TOTAL_BYTES,
                    OFF_CREATOR_PID, OFF_CREATOR_START_CS, OFF_CREATED_NS],
        "itemsize": COMMON_HEADER_BYTES,
    }
)

PAGE_BYTES = mmap.PAGESIZE
SHM_DIR = Path("/dev/shm")
PREFIX = "ganntec"
_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,48}$")


def magic_of(tag: bytes) -> int:
    """An 8-byte ASCII tag as the int64 magic stored at offset 0."""
    if len(tag) != 8 or tag[7] >= 0x80:
        raise ValueError(f"magic tag={tag!r} (must be 8 ASCII bytes)")
    return int.from_bytes(tag, "little")


class SegmentError(Exception):
    """A segment could not be created or attached; `outcome` says why."""

    def __init__(self, outcome: "Outcome", message: str):
        super().__init__(message)
        self.outcome = outcome


class Outcome(enum.Enum):
    READY = "ready"
    MISSING = "missing"
    NOT_INITIALISED = "not initialised"          # magic not yet stored (creator mid-way or died)
    WRONG_KIND = "wrong kind"                    # magic belongs to another segment kind
    VERSION_MISMATCH = "version mismatch"
    TOO_SHORT = "too short"
    STALE = "stale"                              # creator process is gone
    LIVE_OTHER_INSTANCE = "live other instance"  # name taken by a live process


def validate_name(field: str, value: str) -> str:
    if not _NAME_RE.fullmatch(value):
        raise ValueError(f"{field}={value!r} (use 1-48 of A-Z a-z 0-9 _ -)")
    return value


def segment_name(instance: str, name: str) -> str:
    """The POSIX name `/ganntec.<instance>.<name>`."""
    validate_name("instance", instance)
    if not re.match(r"^[A-Za-z0-9_.-]{1,96}$", name) or name.startswith("."):
        raise ValueError(f"segment name={name!r} (use A-Z a-z 0-9 _ - .)")
    return f"/{PREFIX}.{instance}.{name}"


def process_start_cs(pid: int) -> int:
    """Start time of `pid` in centiseconds since the epoch, or -1 if there is no such process."""
    try:
        return int(round(psutil.Process(pid).create_time() * 100))
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return -1
    except psutil.AccessDenied:  # exists, but not ours to inspect: treat as alive, unknown start
        return 0


def process_alive(pid: int, start_cs: int) -> bool:
    """True if the process that had `pid` and started at `start_cs` is still running."""
    if pid <= 0:
        return False
    now = process_start_cs(pid)
    if now < 0:
        return False
    try:
        if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
            return False
    except psutil.Error:
        return False
    return now == 0 or start_cs == 0 or abs(now - start_cs) <= 1


# --- memory locking ----------------------------------------------------------------------
_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.mlock.argtypes = (ctypes.c_void_p, ctypes.c_size_t)
_libc.munlock.argtypes = (ctypes.c_void_p, ctypes.c_size_t)


def _libc_mlock(address: int, nbytes: int) -> int:
    """mlock(2); returns 0 or the errno."""
    if _libc.mlock(ctypes.c_void_p(address), ctypes.c_size_t(nbytes)) != 0:
        return ctypes.get_errno()
    return 0


def locked_bytes(proc_status: Path = Path("/proc/self/status")) -> int:
    """Bytes this process already has locked (VmLck), 0 if unknown."""
    try:
        for line in proc_status.read_text().splitlines():
            if line.startswith("VmLck:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def memlock_error(name: str, nbytes: int, err: int, already_locked: int, limit: int) -> str:
    """The operator-facing message when mlock fails: what was needed and how to raise it."""
    need = already_locked + nbytes
    lim = "unlimited" if limit == resource.RLIM_INFINITY else f"{limit} bytes"
    kib = -(-need // 1024)
    return (
        f"mlock of segment {name} failed ({errno.errorcode.get(err, err)}): it needs {nbytes} bytes "
        f"locked, {already_locked} are already locked, RLIMIT_MEMLOCK is {lim}; at least {need} "
        f"bytes are needed. Raise it with `ulimit -l {kib}` (KiB) in the launching shell, "
        f"LimitMEMLOCK={need} in the systemd unit, or a memlock line in /etc/security/limits.conf; "
        f"or start with lock_memory=false (the hot path may then page-fault)."
    )


# --- the segment object ------------------------------------------------------------------
@dataclass
class SegmentInfo:
    """What `probe` finds in an existing segment without trusting it."""

    name: str
    outcome: Outcome
    size: int
    magic: int = 0
    layout_version: int = 0
    creator_pid: int = 0
    creator_start_cs: int = 0


class Segment:
    """One mapped segment. `address` is the base for the atomics; `bytes` a uint8 view."""

    def __init__(self, name: str, mm: mmap.mmap, owner: bool):
        self.name = name
        self._mm = mm
        self.owner = owner
        self.size = len(mm)
        self.bytes = np.frombuffer(mm, dtype=np.uint8)
        self.address = int(self.bytes.ctypes.data)
        self.locked = False
        self.closed = False

    # header access (Python side; compiled code uses the address + offsets)
    @property
    def header(self) -> np.ndarray:
        return self.bytes[:COMMON_HEADER_BYTES].view(COMMON_HEADER_DTYPE)[0]

    @property
    def magic(self) -> int:
        return int(py_load_acquire(self.address + OFF_MAGIC))

    def view(self, dtype, offset: int, count: int) -> np.ndarray:
        """A typed array over `count` items of `dtype` at byte `offset`."""
        dtype = np.dtype(dtype)
        end = offset + dtype.itemsize * count
        if end > self.size:
            raise ValueError(f"view of {count}x{dtype.itemsize} bytes at {offset} exceeds segment of {self.size}")
        return self.bytes[offset:end].view(dtype)

    # lifecycle --------------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        instance: str,
        name: str,
        *,
        magic: int,
        layout_version: int,
        header_bytes: int,
        total_bytes: int,
        init: Callable[["Segment"], None] | None = None,
        lock_memory: bool = True,
        mlock: Callable[[int, int], int] = _libc_mlock,
    ) -> "Segment":
        """Create, fill the header, run `init`, pre-fault, mlock, then publish `magic` last."""
        full = segment_name(instance, name)
        if total_bytes < header_bytes or header_bytes < COMMON_HEADER_BYTES:
            raise ValueError(f"total_bytes={total_bytes} header_bytes={header_bytes} (inconsistent)")
        try:
            shm = posix_ipc.SharedMemory(full, flags=posix_ipc.O_CREX, mode=0o600, size=total_bytes)
        except posix_ipc.ExistentialError:
            info = probe(full)
            if info.outcome is Outcome.LIVE_OTHER_INSTANCE:
                raise SegmentError(
                    Outcome.LIVE_OTHER_INSTANCE,
                    f"segment {full} exists and its creator pid {info.creator_pid} is alive: "
                    f"instance {instance!r} is already running (choose another instance name)",
                ) from None
            raise SegmentError(
                Outcome.STALE,
                f"segment {full} exists ({info.outcome.value}, creator pid {info.creator_pid} is gone): "
                f"a leftover of a dead instance; inspect it with `ganntec inspect --instance {instance}` "
                f"and remove it with `ganntec clean --instance {instance}`",
            ) from None
        try:
            os.fchmod(shm.fd, 0o600)  # umask cannot widen it, but be explicit
            mm = mmap.mmap(shm.fd, total_bytes)
        except BaseException:
            shm.unlink()
            shm.close_fd()
            raise
        shm.close_fd()
        seg = cls(full, mm, owner=True)
        try:
            hdr = seg.bytes[:COMMON_HEADER_BYTES].view(COMMON_HEADER_DTYPE)
            hdr["layout_version"] = layout_version
            hdr["header_bytes"] = header_bytes
            hdr["total_bytes"] = total_bytes
            hdr["creator_pid"] = os.getpid()
            hdr["creator_start_cs"] = process_start_cs(os.getpid())
            hdr["created_ns"] = time.time_ns()
            if init is not None:
                init(seg)
            seg._prefault()
            if lock_memory:
                seg.lock(mlock)
            py_store_release(seg.address + OFF_MAGIC, magic)  # the ready flag, last
        except BaseException:
            seg.close(unlink=True)
            raise
        return seg

    @classmethod
    def attach(
        cls,
        instance: str,
        name: str,
        *,
        magic: int,
        layout_version: int,
        min_header_bytes: int = COMMON_HEADER_BYTES,
        allow_stale: bool = False,
        lock_memory: bool = False,
        mlock: Callable[[int, int], int] = _libc_mlock,
    ) -> tuple[Outcome, "Segment | None"]:
        """Map an existing segment. Returns (outcome, segment or None).

        The segment is returned only for READY, or for STALE when `allow_stale` (post-mortem
        inspection). Every other outcome returns None and leaves nothing mapped.
        """
        full = segment_name(instance, name)
        try:
            shm = posix_ipc.SharedMemory(full, flags=0)
        except posix_ipc.ExistentialError:
            return Outcome.MISSING, None
        try:
            size = shm.size
            if size < COMMON_HEADER_BYTES:
                return Outcome.TOO_SHORT, None
            mm = mmap.mmap(shm.fd, size)
        finally:
            shm.close_fd()
        seg = cls(full, mm, owner=False)
        outcome = seg._check(magic, layout_version, min_header_bytes)
        if outcome is Outcome.READY and not process_alive(int(seg.header["creator_pid"]), int(seg.header["creator_start_cs"])):
            outcome = Outcome.STALE
        if outcome is Outcome.READY or (outcome is Outcome.STALE and allow_stale):
            if lock_memory and outcome is Outcome.READY:
                try:
                    seg.lock(mlock)
                except BaseException:
                    seg.close(unlink=False)
                    raise
            return outcome, seg
        seg.close(unlink=False)
        return outcome, None

    def _check(self, magic: int, layout_version: int, min_header_bytes: int) -> Outcome:
        found = self.magic
        if found == 0:
            return Outcome.NOT_INITIALISED
        if found != magic:
            return Outcome.WRONG_KIND
        hdr = self.header
        if int(hdr["layout_version"]) != layout_version:
            return Outcome.VERSION_MISMATCH
        if int(hdr["header_bytes"]) < min_header_bytes or int(hdr["total_bytes"]) > self.size:
            return Outcome.TOO_SHORT
        return Outcome.READY

    def _prefault(self) -> None:
        # Touch every page so tmpfs allocates them now, not on the first hot-path write.
        self.bytes[::PAGE_BYTES] = self.bytes[::PAGE_BYTES]

    def lock(self, mlock: Callable[[int, int], int] = _libc_mlock) -> None:
        err = mlock(self.address, self.size)
        if err:
            soft, _ = resource.getrlimit(resource.RLIMIT_MEMLOCK)
            raise MemoryError(memlock_error(self.name, self.size, err, locked_bytes(), soft))
        self.locked = True

    def close(self, unlink: bool | None = None) -> None:
        """Unmap; unlink too if `unlink` (default: if this process created it)."""
        if self.closed:
            return
        self.closed = True
        if unlink if unlink is not None else self.owner:
            try:
                posix_ipc.unlink_shared_memory(self.name)
            except posix_ipc.ExistentialError:
                pass
        self.bytes = None  # drop our view before closing the map
        try:
            self._mm.close()
        except BufferError:
            # Someone still holds a view; the mapping lives until the last view dies.
            pass

    def __enter__(self) -> "Segment":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Segment({self.name!r}, {self.size} bytes, owner={self.owner})"


def probe(full_name: str) -> SegmentInfo:
    """Read an existing segment's common header without trusting it (for create and inspect)."""
    try:
        shm = posix_ipc.SharedMemory(full_name, flags=0)
    except posix_ipc.ExistentialError:
        return SegmentInfo(full_name, Outcome.MISSING, 0)
    try:
        size = shm.size
        if size < COMMON_HEADER_BYTES:
            return SegmentInfo(full_name, Outcome.TOO_SHORT, size)
        mm = mmap.mmap(shm.fd, COMMON_HEADER_BYTES, prot=mmap.PROT_READ)
    finally:
        shm.close_fd()
    try:
        raw = np.frombuffer(mm, dtype=COMMON_HEADER_DTYPE, count=1)[0].copy()
    finally:
        mm.close()
    pid, start = int(raw["creator_pid"]), int(raw["creator_start_cs"])
    if process_alive(pid, start):
        outcome = Outcome.LIVE_OTHER_INSTANCE
    elif int(raw["magic"]) == 0:
        outcome = Outcome.NOT_INITIALISED
    else:
        outcome = Outcome.STALE
    return SegmentInfo(full_name, outcome, size, int(raw["magic"]), int(raw["layout_version"]), pid, start)


def list_segments(instance: str | None = None, shm_dir: Path = SHM_DIR) -> list[str]:
    """POSIX names of Ganntec segments (of one instance, or all) present in `shm_dir`."""
    prefix = f"{PREFIX}.{instance}." if instance else f"{PREFIX}."
    if not shm_dir.is_dir():
        return []
    return sorted("/" + p.name for p in shm_dir.iterdir() if p.name.startswith(prefix) and not p.name.startswith("sem."))


def remove_stale(instance: str, shm_dir: Path = SHM_DIR) -> list[str]:
    """Unlink every segment of `instance` whose creator is dead; returns the names removed.

    Refuses (SegmentError) if any segment of the instance still has a live creator.
    """
    names = list_segments(instance, shm_dir)
    infos = [probe(n) for n in names]
    live = [i for i in infos if i.outcome is Outcome.LIVE_OTHER_INSTANCE]
    if live:
        raise SegmentError(
            Outcome.LIVE_OTHER_INSTANCE,
            f"instance {instance!r} is alive (segment {live[0].name}, pid {live[0].creator_pid}); stop it first",
        )
    removed = []
    for info in infos:
        try:
            posix_ipc.unlink_shared_memory(info.name)
            removed.append(info.name)
        except posix_ipc.ExistentialError:
            pass
    for sem in list_semaphores(instance, shm_dir):
        try:
            posix_ipc.unlink_semaphore(sem)
            removed.append(sem)
        except posix_ipc.ExistentialError:
            pass
    return removed


def list_semaphores(instance: str | None = None, shm_dir: Path = SHM_DIR) -> list[str]:
    """POSIX names of Ganntec semaphores (Linux keeps them as `sem.<name>` in /dev/shm)."""
    prefix = f"sem.{PREFIX}.{instance}." if instance else f"sem.{PREFIX}."
    if not shm_dir.is_dir():
        return []
    return sorted("/" + p.name[4:] for p in shm_dir.iterdir() if p.name.startswith(prefix))
