"""Journal file layout: segment files of checksummed frames of 128-byte records.

A journal is a directory of segment files named by the first sequence they hold,
`<first_seq, 20 digits>.journal` (a rolled segment may be archived as `.journal.gz`). A segment
is a file header, then frames. A frame is one group commit: the records of one write (and, in
`fsync` mode, one fsync), length-prefixed and covered by one CRC32C. Per-record checksums
would cost a library call per record (0.8 us measured, a whole 1 M records/s budget); one per
frame costs ~1 ns per record at the library's 17 GB/s, and nothing is lost by it: a frame is
written before any record in it is acknowledged, so a frame torn by a crash holds only
unacknowledged records, and it is dropped whole.

Every record's header `seq` is its global sequence; the records of a journal are consecutive
(each frame's first_seq is the previous frame's last + 1), which the reader checks.

[FILE_HEADER] 64 bytes, at offset 0 of every segment
    offset  size  type  field
         0     8  S8    magic           b"GNTCJRNL"
         8     4  u4    version         LAYOUT_VERSION
        12     4  u4    record_bytes    bytes per record (128)
        16     8  i8    first_seq       sequence of the segment's first record
        24     4  u4    header_crc      CRC32C of bytes 0-23
        28    36  -     (reserved)      zero

[FRAME_HEADER] 32 bytes, then count x record_bytes of records
    offset  size  type  field
         0     4  u4    frame_bytes     32 + count x record_bytes: the length prefix
         4     4  u4    crc             CRC32C of bytes 8 .. frame_bytes (header rest + records)
         8     8  i8    first_seq       sequence of the frame's first record
        16     4  u4    count           records in the frame, 1 .. MAX_FRAME_RECORDS
        20    12  -     (reserved)      zero
"""

from __future__ import annotations

import numpy as np

from ganntec.shm.records import RECORD_BYTES, RECORD_DTYPE

MAGIC = b"GNTCJRNL"
LAYOUT_VERSION = 1
SUFFIX = ".journal"
ARCHIVE_SUFFIX = ".journal.gz"
MAX_FRAME_RECORDS = 1 << 16  # 8 MiB of records: bigger appends are split into several frames

FILE_HEADER_DTYPE = np.dtype(
    {
        "names": ["magic", "version", "record_bytes", "first_seq", "header_crc"],
        "formats": ["S8", "<u4", "<u4", "<i8", "<u4"],
        "offsets": [0, 8, 12, 16, 24],
        "itemsize": 64,
    }
)
FRAME_HEADER_DTYPE = np.dtype(
    {
        "names": ["frame_bytes", "crc", "first_seq", "count"],
        "formats": ["<u4", "<u4", "<i8", "<u4"],
        "offsets": [0, 4, 8, 16],
        "itemsize": 32,
    }
)
FILE_HEADER_BYTES = FILE_HEADER_DTYPE.itemsize
FRAME_HEADER_BYTES = FRAME_HEADER_DTYPE.itemsize
HEADER_CRC_SPAN = FILE_HEADER_DTYPE.fields["header_crc"][1]  # the file header's CRC covers the bytes before it
FRAME_CRC_FROM = FRAME_HEADER_DTYPE.fields["first_seq"][1]  # a frame's CRC covers everything after the crc field
RECORD_SEQ_OFFSET = RECORD_DTYPE.fields["seq"][1]


def segment_name(first_seq: int) -> str:
    return f"{first_seq:020d}{SUFFIX}"


def frame_bytes(count: int, record_bytes: int = RECORD_BYTES) -> int:
    return FRAME_HEADER_BYTES + count * record_bytes
