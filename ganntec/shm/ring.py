"""Single-producer single-consumer ring of fixed-size slots in a shared-memory segment.

Layout (bytes). Each side's line is written only by that side; the other side reads it only
when its cached copy says the ring is full (producer) or empty (consumer).

    offset  size  field                 written by
    ------  ----  --------------------  -----------------------------------------------
         0    64  common header         creator (segment.py; magic stored last)
        64     8  capacity              creator: slots, a power of two
        72     8  slot_bytes            creator: a multiple of 64
        80     8  mask                  creator: capacity - 1
        88     8  slots_offset          creator: SLOTS_OFFSET
        96     8  doorbell              creator: 0 = the ring's own data semaphore; k >= 1 =
                                        the instance's semaphore `doorbell.<k>`, shared by
                                        every ring with the same k
       104    24  reserved
       128     8  head                  producer: slots published (free-running), release
       136     8  cached_tail           producer: its last read of tail
       144     8  producer_pid          producer on attach (compare-exchange: one producer)
       152     8  producer_heartbeat_ns  producer's runtime
       160     8  publishes             producer: batches published
       168     8  full_claims           producer: claims that found fewer free slots than asked
       176    16  reserved
       192     8  tail                  consumer: slots consumed (free-running), release
       200     8  cached_head           consumer: its last read of head
       208     8  consumer_pid          consumer on attach (compare-exchange: one consumer)
       216     8  consumer_heartbeat_ns  consumer's runtime
       224     8  releases              consumer: batches released
       232     8  empty_peeks           consumer: peeks that found fewer records than asked
       240    16  reserved
       256     8  consumer_sleeping     consumer sets before blocking; producer claims it
       264     8  producer_sleeping     producer sets before blocking; consumer claims it
       272     8  data_posts            producer: wake-ups posted to a sleeping consumer
       280     8  space_posts           consumer: wake-ups posted to a sleeping producer
       288    32  reserved
       320     -  slots                 capacity x slot_bytes; slot i holds position p with
                                        p & mask == i

Memory is exactly SLOTS_OFFSET + capacity x slot_bytes; nothing is allocated per record.

Protocol. Producer: `n = claim(base, want)`; write slots at positions head .. head+n-1;
`publish(base, n)` (one release store of head per batch). Consumer: `n = peek(base, want)`;
read slots at positions tail .. tail+n-1; `release(base, n)` (one release store of tail). The
other side's counter is read with an acquire load only when the cached copy runs out. A
command spanning several records (records.FLAG_CONTINUED) is always published in one batch.

Doorbell: a consumer that reads several rings (the order engine: commands and results) can
only sleep on one semaphore, so those rings are created with one doorbell number and their
producers post the shared `doorbell.<k>` semaphore instead of the ring's own. The sleep/wake
handshake is per ring as ever (wait.py); a shared post at worst wakes the consumer early,
and it re-checks every ring. Doorbells outlive their rings (a ring is re-created on restart
while the others stay): whoever made the instance unlinks them (`unlink_doorbells`).

All compiled functions take the segment's base *address* (an int), never arrays: see
atomics.py for why. They are small enough that LLVM inlines them into the caller's loop.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import posix_ipc
from numba import njit

from ganntec.shm.atomics import (
    copy_bytes,
    exchange_seqcst,
    fence_seqcst,
    load_acquire,
    load_relaxed,
    py_compare_exchange,
    py_load_acquire,
    py_store_relaxed,
    store_relaxed,
    store_release,
)
from ganntec.shm.segment import Outcome, Segment, SegmentError, magic_of, process_alive, process_start_cs, segment_name

RING_MAGIC = magic_of(b"GNTCRING")
RING_LAYOUT_VERSION = 2  # 2: the doorbell field

OFF_CAPACITY = 64
OFF_SLOT_BYTES = 72
OFF_MASK = 80
OFF_SLOTS_OFFSET = 88
OFF_DOORBELL = 96
OFF_HEAD = 128
OFF_CACHED_TAIL = 136
OFF_PRODUCER_PID = 144
OFF_PRODUCER_HEARTBEAT_NS = 152
OFF_PUBLISHES = 160
OFF_FULL_CLAIMS = 168
OFF_TAIL = 192
OFF_CACHED_HEAD = 200
OFF_CONSUMER_PID = 208
OFF_CONSUMER_HEARTBEAT_NS = 216
OFF_RELEASES = 224
OFF_EMPTY_PEEKS = 232
OFF_CONSUMER_SLEEPING = 256
OFF_PRODUCER_SLEEPING = 264
OFF_DATA_POSTS = 272
OFF_SPACE_POSTS = 280
SLOTS_OFFSET = 320

CACHE_LINE = 64

# The header drawn above as a dtype (tests check the drawing against it; inspect reads it).
RING_HEADER_DTYPE = np.dtype(
    {
        "names": [
            "capacity", "slot_bytes", "mask", "slots_offset", "doorbell",
            "head", "cached_tail", "producer_pid", "producer_heartbeat_ns", "publishes", "full_claims",
            "tail", "cached_head", "consumer_pid", "consumer_heartbeat_ns", "releases", "empty_peeks",
            "consumer_sleeping", "producer_sleeping", "data_posts", "space_posts",
        ],
        "formats": ["<i8"] * 21,
        "offsets": [
            OFF_CAPACITY, OFF_SLOT_BYTES, OFF_MASK, OFF_SLOTS_OFFSET, OFF_DOORBELL,
            OFF_HEAD, OFF_CACHED_TAIL, OFF_PRODUCER_PID, OFF_PRODUCER_HEARTBEAT_NS, OFF_PUBLISHES, OFF_FULL_CLAIMS,
            OFF_TAIL, OFF_CACHED_HEAD, OFF_CONSUMER_PID, OFF_CONSUMER_HEARTBEAT_NS, OFF_RELEASES, OFF_EMPTY_PEEKS,
            OFF_CONSUMER_SLEEPING, OFF_PRODUCER_SLEEPING, OFF_DATA_POSTS, OFF_SPACE_POSTS,
        ],
        "itemsize": SLOTS_OFFSET,
    }
)


def ring_bytes(capacity: int, slot_bytes: int) -> int:
    return SLOTS_OFFSET + capacity * slot_bytes


# --- compiled protocol (producer side) ----------------------------------------------------
@njit(cache=True, nogil=True)
def claim(base, want):
    """Producer: how many of `want` slots are free now (0..want), starting at `head_position`."""
    head = load_relaxed(base + OFF_HEAD)
    cap = load_relaxed(base + OFF_CAPACITY)
    free = cap - (head - load_relaxed(base + OFF_CACHED_TAIL))
    if free < want:
        tail = load_acquire(base + OFF_TAIL)
        store_relaxed(base + OFF_CACHED_TAIL, tail)
        free = cap - (head - tail)
        if free < want:
            store_relaxed(base + OFF_FULL_CLAIMS, load_relaxed(base + OFF_FULL_CLAIMS) + 1)
            return free
    return want


@njit(cache=True, nogil=True)
def head_position(base):
    """Producer: the position the next claimed slot will get (its own counter)."""
    return load_relaxed(base + OFF_HEAD)


@njit(cache=True, nogil=True)
def slot_address(base, position):
    """Address of the slot that holds `position`."""
    return (
        base
        + SLOTS_OFFSET
        + (position & load_relaxed(base + OFF_MASK)) * load_relaxed(base + OFF_SLOT_BYTES)
    )


@njit(cache=True, nogil=True)
def publish(base, n):
    """Producer: make `n` written slots visible (one release store)."""
    store_release(base + OFF_HEAD, load_relaxed(base + OFF_HEAD) + n)
    store_relaxed(base + OFF_PUBLISHES, load_relaxed(base + OFF_PUBLISHES) + 1)


@njit(cache=True, nogil=True)
def publish_wake(base, n):
    """Producer under spin-block: publish, then claim a sleeping consumer's flag.

    Returns 1 if the consumer was asleep: the caller must post the ring's data semaphore.
    The seq_cst fence orders our head store before the flag load, pairing with the
    consumer's flag store + fence + head re-check, so one of the two always sees the other.
    """
    publish(base, n)
    fence_seqcst()
    if load_relaxed(base + OFF_CONSUMER_SLEEPING) != 0:
        if exchange_seqcst(base + OFF_CONSUMER_SLEEPING, 0) != 0:
            store_relaxed(base + OFF_DATA_POSTS, load_relaxed(base + OFF_DATA_POSTS) + 1)
            return 1
    return 0


# --- compiled protocol (consumer side) ----------------------------------------------------
@njit(cache=True, nogil=True)
def peek(base, want):
    """Consumer: how many records (0..want) are readable now, starting at `tail_position`."""
    tail = load_relaxed(base + OFF_TAIL)
    avail = load_relaxed(base + OFF_CACHED_HEAD) - tail
    if avail < want:
        head = load_acquire(base + OFF_HEAD)
        store_relaxed(base + OFF_CACHED_HEAD, head)
        avail = head - tail
        if avail < want:
            store_relaxed(base + OFF_EMPTY_PEEKS, load_relaxed(base + OFF_EMPTY_PEEKS) + 1)
            return avail
    return want


@njit(cache=True, nogil=True)
def tail_position(base):
    """Consumer: the position of the next record to read (its own counter)."""
    return load_relaxed(base + OFF_TAIL)


@njit(cache=True, nogil=True)
def release(base, n):
    """Consumer: hand `n` read slots back to the producer (one release store)."""
    store_release(base + OFF_TAIL, load_relaxed(base + OFF_TAIL) + n)
    store_relaxed(base + OFF_RELEASES, load_relaxed(base + OFF_RELEASES) + 1)


@njit(cache=True, nogil=True)
def release_wake(base, n):
    """Consumer under spin-block: release, then claim a sleeping producer's flag (1 = post)."""
    release(base, n)
    fence_seqcst()
    if load_relaxed(base + OFF_PRODUCER_SLEEPING) != 0:
        if exchange_seqcst(base + OFF_PRODUCER_SLEEPING, 0) != 0:
            store_relaxed(base + OFF_SPACE_POSTS, load_relaxed(base + OFF_SPACE_POSTS) + 1)
            return 1
    return 0


@njit(cache=True, nogil=True)
def readable(base):
    """Records published and not yet released (any process may ask; acquire loads)."""
    return load_acquire(base + OFF_HEAD) - load_acquire(base + OFF_TAIL)


# --- whole-batch copies (the Python wrappers' engines) ------------------------------------
@njit(cache=True, nogil=True)
def push_copy(base, src_address, n, wake):
    """Copy up to `n` records from `src_address` into the ring, publish once.

    Returns pushed * 2 + post (post = 1 when a sleeping consumer must be woken).
    """
    k = claim(base, n)
    if k == 0:
        return 0
    slot = load_relaxed(base + OFF_SLOT_BYTES)
    pos = head_position(base)
    for i in range(k):
        copy_bytes(slot_address(base, pos + i), src_address + i * slot, slot)
    if wake:
        return k * 2 + publish_wake(base, k)
    publish(base, k)
    return k * 2


@njit(cache=True, nogil=True)
def pop_copy(base, dst_address, n, wake):
    """Copy up to `n` records out of the ring to `dst_address`, release once.

    Returns popped * 2 + post (post = 1 when a sleeping producer must be woken).
    """
    k = peek(base, n)
    if k == 0:
        return 0
    slot = load_relaxed(base + OFF_SLOT_BYTES)
    pos = tail_position(base)
    for i in range(k):
        copy_bytes(dst_address + i * slot, slot_address(base, pos + i), slot)
    if wake:
        return k * 2 + release_wake(base, k)
    release(base, k)
    return k * 2


@njit(cache=True, nogil=True)
def _push_array(base, records, n, wake):
    return push_copy(base, records.ctypes.data, n, wake)


@njit(cache=True, nogil=True)
def _pop_array(base, out, n, wake):
    return pop_copy(base, out.ctypes.data, n, wake)


# --- Python side -------------------------------------------------------------------------
@dataclass(frozen=True)
class RingStats:
    capacity: int
    slot_bytes: int
    head: int
    tail: int
    fill: int
    publishes: int
    releases: int
    full_claims: int
    empty_peeks: int
    data_posts: int
    space_posts: int
    producer_pid: int
    consumer_pid: int
    producer_heartbeat_ns: int
    consumer_heartbeat_ns: int


PRODUCER = "producer"
CONSUMER = "consumer"
OBSERVER = "observer"
_ROLE_PID = {PRODUCER: OFF_PRODUCER_PID, CONSUMER: OFF_CONSUMER_PID}


class Ring:
    """A mapped ring plus its two wake semaphores (`data`: consumer sleeps; `space`: producer).

    Python wrappers: `push(records)`, `pop(out)` (non-blocking, whole batches, one publish),
    and the blocking `push_all`/`pop_into` that take a wait strategy (wait.py). Compiled code
    uses `ring.address` with the functions above and `ring.slots_view(dtype)`.
    """

    def __init__(self, segment: Segment, data_sem, space_sem, role: str):
        self.segment = segment
        self.name = segment.name
        self.address = segment.address
        hdr = segment.view(RING_HEADER_DTYPE, 0, 1)[0]
        self.capacity = int(hdr["capacity"])
        self.slot_bytes = int(hdr["slot_bytes"])
        self.mask = self.capacity - 1
        self.doorbell = int(hdr["doorbell"])
        self.data_sem = data_sem
        self.space_sem = space_sem
        # A consumer that waits in an event loop instead of on the semaphore: an eventfd (this
        # process's number for it, inherited through fork) that the producer's wake-up writes.
        self.wake_fd: int | None = None
        self.role = role
        self._closed = False

    # construction -------------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        instance: str,
        name: str,
        capacity: int,
        slot_bytes: int = 128,
        *,
        role: str = OBSERVER,
        lock_memory: bool = True,
        doorbell: int = 0,
        **segment_kw,
    ) -> "Ring":
        if doorbell < 0:
            raise ValueError(f"doorbell={doorbell} (0: the ring's own semaphore, or a doorbell number >= 1)")
        if capacity < 2 or capacity & (capacity - 1):
            raise ValueError(f"capacity={capacity} (must be a power of two >= 2)")
        if slot_bytes < 64 or slot_bytes % CACHE_LINE:
            raise ValueError(f"slot_bytes={slot_bytes} (must be a positive multiple of {CACHE_LINE})")

        def init(seg: Segment) -> None:
            hdr = seg.view(RING_HEADER_DTYPE, 0, 1)
            hdr["capacity"] = capacity
            hdr["slot_bytes"] = slot_bytes
            hdr["mask"] = capacity - 1
            hdr["slots_offset"] = SLOTS_OFFSET
            hdr["doorbell"] = doorbell

        seg = Segment.create(
            instance, name, magic=RING_MAGIC, layout_version=RING_LAYOUT_VERSION,
            header_bytes=SLOTS_OFFSET, total_bytes=ring_bytes(capacity, slot_bytes),
            init=init, lock_memory=lock_memory, **segment_kw,
        )
        try:
            data_sem = _create_semaphore(instance, name + ".data") if doorbell == 0 else _open_doorbell(instance, doorbell)
            try:
                space_sem = _create_semaphore(instance, name + ".space")
            except BaseException:
                _drop_semaphore(data_sem, unlink=doorbell == 0)
                raise
        except BaseException:
            seg.close(unlink=True)
            raise
        ring = cls(seg, data_sem, space_sem, OBSERVER)
        if role != OBSERVER:
            ring.take_role(role)
        return ring

    @classmethod
    def attach(
        cls,
        instance: str,
        name: str,
        role: str = OBSERVER,
        *,
        allow_stale: bool = False,
        lock_memory: bool = False,
    ) -> "Ring":
        """Attach to an existing ring; raises SegmentError with the named outcome if not READY."""
        outcome, seg = Segment.attach(
            instance, name, magic=RING_MAGIC, layout_version=RING_LAYOUT_VERSION,
            min_header_bytes=SLOTS_OFFSET, allow_stale=allow_stale, lock_memory=lock_memory,
        )
        if seg is None:
            raise SegmentError(outcome, f"ring {segment_name(instance, name)}: {outcome.value}")
        hdr = seg.view(RING_HEADER_DTYPE, 0, 1)[0]
        if seg.size < ring_bytes(int(hdr["capacity"]), int(hdr["slot_bytes"])):
            seg.close(unlink=False)
            raise SegmentError(Outcome.TOO_SHORT, f"ring {seg.name}: shorter than its capacity x slot size")
        doorbell = int(hdr["doorbell"])
        try:
            data_sem = posix_ipc.Semaphore(segment_name(instance, name + ".data" if doorbell == 0 else _doorbell_name(doorbell)))
            space_sem = posix_ipc.Semaphore(segment_name(instance, name + ".space"))
        except posix_ipc.ExistentialError:
            seg.close(unlink=False)
            raise SegmentError(Outcome.NOT_INITIALISED, f"ring {seg.name}: its semaphores are missing") from None
        ring = cls(seg, data_sem, space_sem, OBSERVER)
        if role != OBSERVER:
            try:
                ring.take_role(role)
            except BaseException:
                ring.close()
                raise
        return ring

    def take_role(self, role: str) -> None:
        """Become the ring's one producer or one consumer (refused while a live one holds it)."""
        if role not in _ROLE_PID:
            raise ValueError(f"role={role!r} (producer, consumer or observer)")
        addr = self.address + _ROLE_PID[role]
        me = os.getpid()
        for _ in range(3):
            found = int(py_compare_exchange(addr, 0, me))
            if found in (0, me):
                self.role = role
                return
            if process_alive(found, 0):
                raise SegmentError(Outcome.LIVE_OTHER_INSTANCE, f"ring {self.name}: {role} role held by live pid {found}")
            # The holder died: take the role over from it.
            if int(py_compare_exchange(addr, found, me)) == found:
                self.role = role
                return
        raise SegmentError(Outcome.LIVE_OTHER_INSTANCE, f"ring {self.name}: {role} role is contended")

    # Python wrappers ------------------------------------------------------------------------
    def _check_records(self, records: np.ndarray) -> None:
        # One record per first-axis row: a structured array of slot_bytes items, or 2-D raw words.
        if not records.flags.c_contiguous or records.ndim == 0 or records.nbytes != len(records) * self.slot_bytes:
            raise ValueError(
                f"records shape={records.shape} dtype={records.dtype} contiguous={records.flags.c_contiguous} "
                f"(ring {self.name} takes C-contiguous rows of {self.slot_bytes} bytes)"
            )

    def push(self, records: np.ndarray, wake: bool = True) -> int:
        """Push as many of `records` as fit now, in one batch; returns how many."""
        self._check_records(records)
        r = int(_push_array(self.address, records, len(records), wake))
        if r & 1:
            if self.wake_fd is None:
                self.data_sem.release()
            else:
                os.eventfd_write(self.wake_fd, 1)
        return r >> 1

    def pop(self, out: np.ndarray, wake: bool = True) -> int:
        """Pop up to len(out) records into `out` in one batch; returns how many."""
        self._check_records(out)
        r = int(_pop_array(self.address, out, len(out), wake))
        if r & 1:
            self.space_sem.release()
        return r >> 1

    def push_all(self, records: np.ndarray, wait, timeout_s: float | None = None) -> int:
        """Push every record, waiting for space with `wait` (a WaitStrategy). Returns len(records)."""
        done = 0
        n = len(records)
        while done < n:
            done += self.push(records[done:])
            if done < n:
                wait.wait_for_space(self, 1, timeout_s)
        return n

    def pop_into(self, out: np.ndarray, wait, timeout_s: float | None = None) -> int:
        """Wait (with `wait`) until at least one record is readable, then pop up to len(out)."""
        got = self.pop(out)
        while got == 0:
            if wait.wait_for_data(self, 1, timeout_s) == 0:
                return 0
            got = self.pop(out)
        return got

    def readable(self) -> int:
        return int(readable(self.address))

    def slots_view(self, dtype=None) -> np.ndarray:
        """The slot area as `capacity` records of `dtype` (default: a capacity x slot_bytes
        uint8 matrix; `.view(np.int64)` of it gives 8-byte words)."""
        if dtype is None:
            raw = self.segment.view(np.uint8, SLOTS_OFFSET, self.capacity * self.slot_bytes)
            return raw.reshape(self.capacity, self.slot_bytes)
        dtype = np.dtype(dtype)
        if dtype.itemsize != self.slot_bytes:
            raise ValueError(f"dtype itemsize={dtype.itemsize} (ring slots are {self.slot_bytes} bytes)")
        return self.segment.view(dtype, SLOTS_OFFSET, self.capacity)

    def heartbeat(self, now_ns: int) -> None:
        """Record this side's liveness (the runtime calls it; engines never read clocks)."""
        off = OFF_PRODUCER_HEARTBEAT_NS if self.role == PRODUCER else OFF_CONSUMER_HEARTBEAT_NS
        py_store_relaxed(self.address + off, now_ns)

    def published(self) -> int:
        """Records ever published on the ring (an acquire load of its head; any process may ask)."""
        return int(py_load_acquire(self.address + OFF_HEAD))

    def stats(self) -> RingStats:
        # The counters through acquire loads (tail first, so fill is never negative); the
        # statistics are monotonic and only ever displayed.
        tail = int(py_load_acquire(self.address + OFF_TAIL))
        head = int(py_load_acquire(self.address + OFF_HEAD))
        h = self.segment.view(RING_HEADER_DTYPE, 0, 1)[0].copy()
        return RingStats(
            capacity=int(h["capacity"]), slot_bytes=int(h["slot_bytes"]), head=head, tail=tail,
            fill=head - tail, publishes=int(h["publishes"]), releases=int(h["releases"]),
            full_claims=int(h["full_claims"]), empty_peeks=int(h["empty_peeks"]),
            data_posts=int(h["data_posts"]), space_posts=int(h["space_posts"]),
            producer_pid=int(h["producer_pid"]), consumer_pid=int(h["consumer_pid"]),
            producer_heartbeat_ns=int(h["producer_heartbeat_ns"]),
            consumer_heartbeat_ns=int(h["consumer_heartbeat_ns"]),
        )

    # teardown -----------------------------------------------------------------------------
    def close(self, unlink: bool | None = None) -> None:
        """Give up our role, unmap; the creator (or `unlink=True`) also unlinks everything."""
        if self._closed:
            return
        self._closed = True
        if self.role in _ROLE_PID and self.segment.bytes is not None:
            py_compare_exchange(self.address + _ROLE_PID[self.role], os.getpid(), 0)
        do_unlink = self.segment.owner if unlink is None else unlink
        _drop_semaphore(self.data_sem, unlink=do_unlink and self.doorbell == 0)
        _drop_semaphore(self.space_sem, unlink=do_unlink)
        self.segment.close(unlink=do_unlink)

    def __enter__(self) -> "Ring":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _create_semaphore(instance: str, name: str):
    try:
        return posix_ipc.Semaphore(segment_name(instance, name), flags=posix_ipc.O_CREX, mode=0o600, initial_value=0)
    except posix_ipc.ExistentialError:
        raise SegmentError(Outcome.STALE, f"semaphore {segment_name(instance, name)} already exists (stale or live instance)") from None


def _doorbell_name(k: int) -> str:
    return f"doorbell.{k}"


def _open_doorbell(instance: str, k: int):
    return posix_ipc.Semaphore(segment_name(instance, _doorbell_name(k)), flags=posix_ipc.O_CREAT, mode=0o600,
                               initial_value=0)


def unlink_doorbells(instance: str, numbers) -> None:
    """Unlink the instance's doorbell semaphores (its creator does, once no ring needs them)."""
    for k in numbers:
        try:
            posix_ipc.unlink_semaphore(segment_name(instance, _doorbell_name(k)))
        except posix_ipc.ExistentialError:
            pass


def _drop_semaphore(sem, unlink: bool) -> None:
    # Unlink before close: closing first leaked the semaphore (measured).
    if unlink:
        try:
            sem.unlink()
        except posix_ipc.ExistentialError:
            pass
    try:
        sem.close()
    except posix_ipc.Error:
        pass


__all__ = [
    "Ring", "RingStats", "RING_HEADER_DTYPE", "RING_MAGIC", "RING_LAYOUT_VERSION", "SLOTS_OFFSET",
    "claim", "head_position", "slot_address", "publish", "publish_wake", "peek", "tail_position",
    "release", "release_wake", "readable", "push_copy", "pop_copy", "ring_bytes",
    "PRODUCER", "CONSUMER", "OBSERVER", "process_start_cs",
]
