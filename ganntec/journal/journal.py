"""The journal: append-only segment files of CRC32C-checked frames of records (layout in
`ganntec.journal.format`).

    w = JournalWriter(directory, durability="fsync")   # opens, truncating a torn tail
    w.append(records)        # (n, 128) uint8 or any 128-byte record dtype, seqs w.next_seq ..
    w.close()
    for batch in JournalReader(directory).batches(from_seq=1): ...   # (k, 128) uint8 arrays

Durability. `fsync`: every append is one write and one fdatasync (group commit: the caller
appends a whole batch, then forwards it), so after a power loss at most the frame being
written is missing or torn. `os`: the write reaches the page cache only, which survives any
process crash but not the host's. A new segment is fsynced with its directory before its
first frame in both modes (a rolled segment must not vanish with the directory entry).

Damage. Reading checks every frame it reads (opening for writing reads the newest segment):
length, CRC, and that its sequences follow the previous frame's. In the newest segment, damage that no valid frame
follows is a torn tail: the reader stops there and the writer truncates it (the frame held
only unacknowledged records). Damage anywhere else — a valid frame after it, or in an older
segment — is `JournalCorrupt`, naming the file, offset and the sequence expected there;
nothing starts on a corrupt journal.

Rolled segments can be archived (`archive_rolled`): gzip-compressed to `.journal.gz` beside
them and read back transparently; the newest segment is never archived.
"""

from __future__ import annotations

import fcntl
import gzip
import mmap
import os
import re
import struct
from dataclasses import dataclass
from typing import Callable, Iterator

import crc32c
import numpy as np

from ganntec.journal.format import (ARCHIVE_SUFFIX, FILE_HEADER_BYTES, FILE_HEADER_DTYPE, FRAME_CRC_FROM,
                                    FRAME_HEADER_BYTES, FRAME_HEADER_DTYPE, HEADER_CRC_SPAN, LAYOUT_VERSION, MAGIC,
                                    MAX_FRAME_RECORDS, RECORD_SEQ_OFFSET, SUFFIX, frame_bytes, segment_name)
from ganntec.shm.records import RECORD_BYTES

# The frame header as two structs (what the CRC covers, and what precedes it), built from the
# drawn dtype's fields so the two can never disagree (checked below).
_FRAME_LEAD = struct.Struct("<II")  # frame_bytes, crc
_FRAME_AFTER_CRC = struct.Struct(f"<qI{FRAME_HEADER_BYTES - FRAME_CRC_FROM - 12}x")  # first_seq, count, reserved
assert (_FRAME_LEAD.size == FRAME_CRC_FROM and FRAME_HEADER_DTYPE.fields["first_seq"][1] == FRAME_CRC_FROM
        and FRAME_HEADER_DTYPE.fields["count"][1] == FRAME_CRC_FROM + 8
        and _FRAME_LEAD.size + _FRAME_AFTER_CRC.size == FRAME_HEADER_BYTES)
SMALL_APPEND = 64  # records: sequence check in Python ints up to this many

DURABILITY_MODES = ("fsync", "os")
DEFAULT_SEGMENT_BYTES = 256 << 20
_NAME = re.compile(r"^(\d{20})(\.journal|\.journal\.gz)$")


class JournalBusy(Exception):
    """Another process holds the journal open for writing."""


class JournalCorrupt(Exception):
    """A journal that must not be used: damage before its tail, or a file that is no segment."""

    def __init__(self, path: str, offset: int, seq: int, reason: str):
        super().__init__(f"journal corrupt: {path} at offset {offset} (sequence {seq} expected there): {reason}")
        self.path, self.offset, self.seq, self.reason = path, offset, seq, reason


@dataclass(frozen=True)
class Segment:
    path: str
    first_seq: int
    archived: bool


def fsync_dir(directory: str) -> None:
    """Make a directory's entries (a created, renamed or removed file) durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def list_segments(directory: str) -> list[Segment]:
    """The journal's segments, oldest first. A segment present both plain and archived (an
    archive interrupted after its rename) is read plain."""
    found: dict[int, Segment] = {}
    for name in os.listdir(directory):
        m = _NAME.match(name)
        if not m:
            continue
        first, archived = int(m.group(1)), m.group(2) == ARCHIVE_SUFFIX
        if first in found and archived:
            continue
        found[first] = Segment(os.path.join(directory, name), first, archived)
    return [found[k] for k in sorted(found)]


def _crc(*parts) -> int:
    value = 0
    for p in parts:
        value = crc32c.crc32c(p, value=value)
    return value


def _file_header(first_seq: int, record_bytes: int) -> bytes:
    h = np.zeros(1, FILE_HEADER_DTYPE)
    h["magic"], h["version"], h["record_bytes"], h["first_seq"] = MAGIC, LAYOUT_VERSION, record_bytes, first_seq
    raw = bytearray(h.tobytes())
    h["header_crc"] = _crc(bytes(raw[:HEADER_CRC_SPAN]))
    return h.tobytes()


def _u4(buf, offset: int) -> int:
    return int.from_bytes(buf[offset:offset + 4], "little")


def _i8(buf, offset: int) -> int:
    return int.from_bytes(buf[offset:offset + 8], "little", signed=True)


@dataclass
class _Scan:
    """Where a segment's valid frames end and why."""
    frames: list[tuple[int, int, int]]  # (offset, first_seq, count)
    end: int                            # offset after the last valid frame
    next_seq: int                       # sequence after the last valid frame
    damage: str | None                  # why the scan stopped before the end of the data


def _frame_problem(buf, off: int, size: int, expect_seq: int, record_bytes: int) -> tuple[str | None, int, int]:
    """(problem or None, first_seq, count) of the frame at off."""
    if size - off < FRAME_HEADER_BYTES:
        return f"{size - off} bytes where a frame header needs {FRAME_HEADER_BYTES}", 0, 0
    fb, crc, first, count = _u4(buf, off), _u4(buf, off + 4), _i8(buf, off + 8), _u4(buf, off + 16)
    if not 1 <= count <= MAX_FRAME_RECORDS or fb != frame_bytes(count, record_bytes):
        return f"frame length {fb} does not fit its record count {count}", first, count
    if off + fb > size:
        return f"frame of {fb} bytes runs past the end of the data ({size - off} bytes left)", first, count
    if _crc(buf[off + FRAME_CRC_FROM:off + fb]) != crc:
        return "frame checksum mismatch", first, count
    if first != expect_seq:
        return f"frame starts at sequence {first}", first, count
    return None, first, count


def _valid_frame_after(buf, start: int, size: int, expect_seq: int, record_bytes: int) -> bool:
    """Does a whole, checksummed frame with a later sequence start anywhere after `start`?
    Candidates are found vectorised (length field consistent with the count field, sequence
    ahead), then checked in full."""
    n = size - start - FRAME_HEADER_BYTES + 1
    if n <= 0:
        return False
    raw = np.frombuffer(buf, np.uint8)
    fb = np.ndarray((n,), "<u4", buffer=raw, offset=start, strides=(1,))
    first = np.ndarray((n,), "<i8", buffer=raw, offset=start + 8, strides=(1,))
    count = np.ndarray((n,), "<u4", buffer=raw, offset=start + 16, strides=(1,))
    ok = ((count >= 1) & (count <= MAX_FRAME_RECORDS) & (fb == FRAME_HEADER_BYTES + count.astype(np.int64) * record_bytes)
          & (first > expect_seq) & (np.arange(n) + fb.astype(np.int64) <= size - start))
    for rel in np.flatnonzero(ok):
        off = start + int(rel)
        if _crc(buf[off + FRAME_CRC_FROM:off + int(fb[rel])]) == _u4(buf, off + 4):
            return True
    return False


def _scan(buf, size: int, expect_seq: int, record_bytes: int, start: int = FILE_HEADER_BYTES) -> _Scan:
    frames = []
    off, seq = start, expect_seq
    while off < size:
        problem, first, count = _frame_problem(buf, off, size, seq, record_bytes)
        if problem is not None:
            return _Scan(frames, off, seq, problem)
        frames.append((off, first, count))
        off += frame_bytes(count, record_bytes)
        seq += count
    return _Scan(frames, off, seq, None)


def _header_problem(buf, size: int, first_seq: int) -> str | None:
    if size < FILE_HEADER_BYTES:
        return f"{size} bytes where the segment header needs {FILE_HEADER_BYTES}"
    h = np.frombuffer(buf[:FILE_HEADER_BYTES], FILE_HEADER_DTYPE)[0]
    if bytes(h["magic"]) != MAGIC:
        return f"magic {bytes(h['magic'])!r} is not {MAGIC!r}"
    if _crc(buf[:HEADER_CRC_SPAN]) != int(h["header_crc"]):
        return "segment header checksum mismatch"
    if int(h["version"]) != LAYOUT_VERSION:
        return f"layout version {int(h['version'])} (this build reads {LAYOUT_VERSION})"
    if int(h["record_bytes"]) != RECORD_BYTES:
        return f"record size {int(h['record_bytes'])} (this build uses {RECORD_BYTES})"
    if int(h["first_seq"]) != first_seq:
        return f"header says first sequence {int(h['first_seq'])}, the file name {first_seq}"
    return None


class _Mapped:
    """A segment's bytes: mapped plain files, decompressed archives."""

    def __init__(self, seg: Segment):
        self.buf: object = b""
        self._mm = None
        if seg.archived:
            with gzip.open(seg.path, "rb") as f:
                self.buf = f.read()
        else:
            with open(seg.path, "rb") as f:
                if os.fstat(f.fileno()).st_size:
                    self._mm = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
                    self.buf = self._mm
        self.size = len(self.buf)

    def close(self):
        if self._mm is not None:
            self._mm.close()


def _verified(seg: Segment, m: _Mapped, expect_seq: int, newest: bool) -> _Scan:
    """Scan one segment; raise JournalCorrupt for anything but a torn tail of the newest one."""
    problem = _header_problem(m.buf, m.size, seg.first_seq)
    if problem is not None:
        if newest and not _valid_frame_after(m.buf, 0, m.size, expect_seq - 1, RECORD_BYTES):
            return _Scan([], 0, expect_seq, problem)  # a segment torn while it was created
        raise JournalCorrupt(seg.path, 0, expect_seq, problem)
    if seg.first_seq != expect_seq:
        raise JournalCorrupt(seg.path, 0, expect_seq, f"segment starts at sequence {seg.first_seq}")
    scan = _scan(m.buf, m.size, expect_seq, RECORD_BYTES)
    if scan.damage is not None:
        if not newest or seg.archived or _valid_frame_after(m.buf, scan.end, m.size, scan.next_seq - 1, RECORD_BYTES):
            raise JournalCorrupt(seg.path, scan.end, scan.next_seq, scan.damage)
    return scan


class JournalReader:
    """Reads a journal directory in sequence order, verifying as it goes. `torn` names the
    newest segment's torn tail (path, offset, why) once the reader has reached it."""

    def __init__(self, directory: str):
        self.directory = directory
        self.torn: tuple[str, int, str] | None = None
        self.next_seq = 1  # after a full pass: the sequence the journal would append next

    def batches(self, from_seq: int = 1) -> Iterator[np.ndarray]:
        """Record arrays ((k, RECORD_BYTES) uint8, copies) of every record with seq >= from_seq."""
        segs = list_segments(self.directory)
        expect = segs[0].first_seq if segs else 1
        for i, seg in enumerate(segs):
            newest = i == len(segs) - 1
            if not newest and segs[i + 1].first_seq <= from_seq:
                # Skipped whole: its successor's name fixes where it ends; it is checked when read.
                expect = segs[i + 1].first_seq
                continue
            m = _Mapped(seg)
            try:
                scan = _verified(seg, m, expect, newest)
                raw = np.frombuffer(m.buf, np.uint8) if m.size else np.zeros(0, np.uint8)
                for off, first, count in scan.frames:
                    last = first + count - 1
                    if last < from_seq:
                        continue
                    skip = max(0, from_seq - first)
                    start = off + FRAME_HEADER_BYTES + skip * RECORD_BYTES
                    yield raw[start:off + frame_bytes(count)].reshape(count - skip, RECORD_BYTES).copy()
                expect = scan.next_seq
                if scan.damage is not None:
                    self.torn = (seg.path, scan.end, scan.damage)
                del raw
            finally:
                m.close()
        self.next_seq = expect

    def records(self, from_seq: int = 1) -> np.ndarray:
        """Every record from `from_seq` in one array."""
        parts = list(self.batches(from_seq))
        return np.concatenate(parts) if parts else np.zeros((0, RECORD_BYTES), np.uint8)


class JournalTail:
    """Follows a journal while it is written (the supervisor's snapshotter): each `poll()`
    returns the records appended since the last poll, verifying only the new frames (it
    remembers the segment and offset it stopped at). An incomplete frame at the newest
    segment's end is the writer mid-append: left for the next poll. A bad frame followed by
    a good one, or a bad end of a segment the writer has rolled past, is JournalCorrupt."""

    def __init__(self, directory: str, from_seq: int = 1):
        self.directory = directory
        self.next_seq = from_seq  # the next record poll() returns
        self._first: int | None = None  # the segment read (its first_seq), where in it, and
        self._off = FILE_HEADER_BYTES    # the sequence of the frame there
        self._seg_seq = from_seq

    def _locate(self, segs: list[Segment]) -> Segment | None:
        if self._first is not None:
            for seg in segs:
                if seg.first_seq == self._first:
                    return seg
            raise JournalCorrupt(self.directory, self._off, self.next_seq,
                                 f"segment {self._first} vanished while it was being read")
        for i, seg in enumerate(segs):  # the segment holding next_seq, read from its start
            if i == len(segs) - 1 or segs[i + 1].first_seq > self.next_seq:
                self._first, self._off = seg.first_seq, -1
                return seg
        return None

    def poll(self) -> np.ndarray:
        """Records ((k, RECORD_BYTES) uint8) appended since the last poll (seq >= next_seq)."""
        parts = []
        while True:
            segs = list_segments(self.directory)
            seg = self._locate(segs)
            if seg is None:
                break
            newer = [x for x in segs if x.first_seq > seg.first_seq]
            m = _Mapped(seg)
            try:
                if self._off < 0:  # a segment new to us: its header, then frames from its first sequence
                    problem = _header_problem(m.buf, m.size, seg.first_seq)
                    if problem is not None:
                        if not newer and m.size < FILE_HEADER_BYTES:
                            break  # being created
                        raise JournalCorrupt(seg.path, 0, seg.first_seq, problem)
                    self._off, expect = FILE_HEADER_BYTES, seg.first_seq
                    self._seg_seq = seg.first_seq
                else:
                    expect = self._seg_seq
                scan = _scan(m.buf, m.size, expect, RECORD_BYTES, self._off)
                raw = np.frombuffer(m.buf, np.uint8) if m.size else np.zeros(0, np.uint8)
                for off, first, count in scan.frames:
                    skip = max(0, self.next_seq - first)
                    if skip < count:
                        start = off + FRAME_HEADER_BYTES + skip * RECORD_BYTES
                        parts.append(raw[start:off + frame_bytes(count)].reshape(count - skip, RECORD_BYTES).copy())
                del raw
                self._off, self._seg_seq = scan.end, scan.next_seq
                self.next_seq = max(self.next_seq, scan.next_seq)
                if scan.damage is not None and (newer or _valid_frame_after(m.buf, scan.end, m.size, scan.next_seq - 1,
                                                                             RECORD_BYTES)):
                    raise JournalCorrupt(seg.path, scan.end, scan.next_seq, scan.damage)
            finally:
                m.close()
            if not newer or newer[0].first_seq != self._seg_seq:
                if newer:  # rolled, but the next segment does not start where this one ends
                    raise JournalCorrupt(newer[0].path, 0, self._seg_seq,
                                         f"segment starts at sequence {newer[0].first_seq}")
                break
            self._first, self._off = newer[0].first_seq, -1  # on to the segment the writer rolled to
        return np.concatenate(parts) if parts else np.zeros((0, RECORD_BYTES), np.uint8)


class JournalWriter:
    """Appends frames to the newest segment, rolling to a new one past `segment_bytes`."""

    def __init__(self, directory: str, durability: str = "fsync", segment_bytes: int = DEFAULT_SEGMENT_BYTES,
                 sync: Callable[[int], None] = os.fdatasync):
        if durability not in DURABILITY_MODES:
            raise ValueError(f"durability={durability} (one of {', '.join(DURABILITY_MODES)})")
        if segment_bytes < FILE_HEADER_BYTES + frame_bytes(1):
            raise ValueError(f"segment_bytes={segment_bytes} (at least {FILE_HEADER_BYTES + frame_bytes(1)})")
        self.directory, self.durability, self.segment_bytes = directory, durability, segment_bytes
        self._sync = sync  # injectable: tests see exactly which bytes were made durable
        os.makedirs(directory, exist_ok=True)
        self._fd = -1
        self._unsynced = False
        # One writer: an exclusive lock on <dir>/.lock for the writer's life (it follows the
        # descriptor into a forked worker; the process that ends holding it frees it).
        self._lock_fd = os.open(os.path.join(directory, ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            raise JournalBusy(f"journal {directory} is open for writing by another process") from None
        self.truncated: tuple[str, int, str] | None = None  # the torn tail cut off at open, if any
        try:
            self._open()
        except BaseException:
            os.close(self._lock_fd)
            raise

    # --- open: verify everything, cut a torn tail, continue the newest segment --------------
    def _open(self):
        reader = JournalReader(self.directory)
        for _ in reader.batches(from_seq=1 << 62):  # verifies every frame, yields nothing
            pass
        self.next_seq = reader.next_seq
        segs = list_segments(self.directory)
        if not segs:
            self._new_segment(self.next_seq)
            return
        newest = segs[-1]
        if newest.archived:  # never written to again: start a fresh segment after it
            self._new_segment(self.next_seq)
            return
        if reader.torn is not None:
            path, offset, why = reader.torn
            self.truncated = reader.torn
            if offset < FILE_HEADER_BYTES:  # its header never made it: make the segment again
                os.unlink(path)
                self._sync_dir()
                self._new_segment(newest.first_seq)
                return
            with open(path, "r+b") as f:
                f.truncate(offset)
                self._sync(f.fileno())
        self._fd = os.open(newest.path, os.O_WRONLY | os.O_APPEND)
        self._size = os.fstat(self._fd).st_size

    def _sync_dir(self):
        fsync_dir(self.directory)

    def _new_segment(self, first_seq: int):
        if self._fd >= 0:
            os.close(self._fd)
        path = os.path.join(self.directory, segment_name(first_seq))
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        header = _file_header(first_seq, RECORD_BYTES)
        _write_all(fd, [header])
        self._sync(fd)
        self._sync_dir()
        self._fd, self._size = fd, len(header)

    # --- append ----------------------------------------------------------------------------
    def append(self, records, sync: bool = True) -> None:
        """Journal `records` (their header seqs must run on from `next_seq`); returns once they
        are as durable as the mode promises. `sync=False` defers the fsync of `fsync` mode to
        `sync()`: several appends, one group commit."""
        raw = _as_raw(records)
        n = len(raw)
        if n == 0:
            return
        seqs = np.ndarray((n,), "<i8", buffer=raw, offset=RECORD_SEQ_OFFSET, strides=(RECORD_BYTES,))
        # small appends (most, live) compare as Python ints: numpy's arange + array_equal cost more
        ok = (seqs.tolist() == list(range(self.next_seq, self.next_seq + n)) if n <= SMALL_APPEND
              else np.array_equal(seqs, np.arange(self.next_seq, self.next_seq + n, dtype=np.int64)))
        if not ok:
            expected = np.arange(self.next_seq, self.next_seq + n, dtype=np.int64)
            bad = int(np.flatnonzero(seqs != expected)[0])
            raise ValueError(f"records[{bad}].seq={int(seqs[bad])} (journal expects {self.next_seq + bad}: "
                             f"sequences run on from the journal's last)")
        pos = 0
        while pos < n:
            count = min(n - pos, MAX_FRAME_RECORDS)
            fb = frame_bytes(count)
            if self._size > FILE_HEADER_BYTES and self._size + fb > self.segment_bytes:
                self._new_segment(self.next_seq)
            body = raw[pos:pos + count]
            covered = _FRAME_AFTER_CRC.pack(self.next_seq, count)  # first_seq, count, reserved zero
            crc = _crc(covered, body)
            hb = _FRAME_LEAD.pack(fb, crc) + covered
            _write_all(self._fd, [hb, body])
            if self.durability == "fsync":
                if sync:
                    self._sync(self._fd)
                else:
                    self._unsynced = True
            self._size += fb
            self.next_seq += count
            pos += count

    def sync(self) -> None:
        """In `fsync` mode, make every append so far durable (one fdatasync)."""
        if self._unsynced and self._fd >= 0:
            self._sync(self._fd)
        self._unsynced = False

    def close(self) -> None:
        if self._fd >= 0:
            if self.durability == "os":
                self._sync(self._fd)  # a clean stop leaves nothing in the page cache alone
            os.close(self._fd)
            self._fd = -1
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    def detach(self) -> None:
        """Close this process's descriptors without syncing: after a fork, the parent lets the
        child be the writer (the lock stays with the child's copy)."""
        for fd in (self._fd, self._lock_fd):
            if fd >= 0:
                os.close(fd)
        self._fd = self._lock_fd = -1

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _as_raw(records) -> np.ndarray:
    a = np.ascontiguousarray(records)
    if a.dtype == np.uint8 and a.ndim == 2 and a.shape[1] == RECORD_BYTES:
        return a
    if a.dtype.itemsize == RECORD_BYTES and a.ndim == 1:
        return a.view(np.uint8).reshape(len(a), RECORD_BYTES)
    raise ValueError(f"records: dtype {a.dtype} shape {a.shape} (want {RECORD_BYTES}-byte records)")


def _write_all(fd: int, parts) -> None:
    views = [memoryview(p).cast("B") for p in parts]
    while views:
        done = os.writev(fd, views)
        while views and done >= len(views[0]):
            done -= len(views[0])
            views.pop(0)
        if views and done:
            views[0] = views[0][done:]


def archive_rolled(directory: str, level: int = 6) -> list[str]:
    """gzip every rolled (not newest) plain segment to `.journal.gz`, atomically (temp file,
    fsync, rename, then the plain file goes). Returns the archives made."""
    segs = list_segments(directory)
    made = []
    for seg in segs[:-1]:
        if seg.archived:
            continue
        target = seg.path[: -len(SUFFIX)] + ARCHIVE_SUFFIX
        tmp = target + ".tmp"
        with open(seg.path, "rb") as src, open(tmp, "wb") as raw:
            with gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=level, mtime=0) as gz:
                while chunk := src.read(1 << 20):
                    gz.write(chunk)
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(tmp, target)
        os.unlink(seg.path)
        made.append(target)
    if made:
        fsync_dir(directory)
    return made
