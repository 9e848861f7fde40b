"""The segment every edge process of an instance shares (`/ganntec.<instance>.edge`): what
must look the same whichever process a client's connection lands on. The supervisor creates
it before it forks the edges; each edge attaches it.

    offset              size  type  field
         0                64  -     common segment header (segment.py)
        64                 8  i8    accounts: slots in listen_expiry_ms (config engine.max_accounts)
        72                56  -     reserved, zero
       128      8 * accounts  i8    listen_expiry_ms[account]: its listen key is valid before this
                                    (wall-clock ms; 0: none), listenkeys.py

Writes are plain aligned int64 stores: a keepalive on one edge and an expiry check on another
race only to the later of two deadlines, which each writer computes from its own clock."""

from __future__ import annotations

import numpy as np

from ganntec.shm.segment import COMMON_HEADER_BYTES, Segment, SegmentError, magic_of

NAME = "edge"
MAGIC = magic_of(b"GNTCEDGE")
LAYOUT_VERSION = 1
OFF_ACCOUNTS = COMMON_HEADER_BYTES
HEADER_BYTES = 128


class EdgeShared:
    def __init__(self, segment: Segment):
        self.segment = segment
        accounts = int(segment.view(np.int64, OFF_ACCOUNTS, 1)[0])
        self.listen_expiry_ms = segment.view(np.int64, HEADER_BYTES, accounts)

    @classmethod
    def create(cls, instance: str, accounts: int) -> "EdgeShared":
        def init(seg: Segment) -> None:
            seg.view(np.int64, OFF_ACCOUNTS, 1)[0] = accounts
        return cls(Segment.create(instance, NAME, magic=MAGIC, layout_version=LAYOUT_VERSION,
                                  header_bytes=HEADER_BYTES, total_bytes=HEADER_BYTES + 8 * accounts, init=init,
                                  lock_memory=False))

    @classmethod
    def attach(cls, instance: str) -> "EdgeShared":
        outcome, seg = Segment.attach(instance, NAME, magic=MAGIC, layout_version=LAYOUT_VERSION,
                                      min_header_bytes=HEADER_BYTES)
        if seg is None:
            raise SegmentError(outcome, f"segment {NAME} of instance {instance!r}: {outcome.value}")
        return cls(seg)

    def close(self, unlink: bool | None = None) -> None:
        self.listen_expiry_ms = None
        self.segment.close(unlink=unlink)
