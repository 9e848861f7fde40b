"""The segment every edge process of an instance shares (`/ganntec.<instance>.edge`): what
must look the same whichever process a client's connection lands on. The supervisor creates
it before it forks the edges; each edge attaches it.

    offset              size  type  field
         0                64  -     common segment header (segment.py)
        64                 8  i8    accounts: slots in listen_expiry_ms (config engine.max_accounts)
        72                 8  i8    rate_slots: hashed slots of the rate table (a power of two)
        80                 8  i8    rate_offset: where the rate table starts (a multiple of 64)
        88                40  -     reserved, zero
       128      8 * accounts  i8    listen_expiry_ms[account]: its listen key is valid before this
                                    (wall-clock ms; 0: none), listenkeys.py
  rate_offset   8 * words(slots) i8 the rate table (ratelimit.py draws it): request weight,
                                    orders, connection attempts and bans, per IP and account

listen_expiry_ms writes are plain aligned int64 stores: a keepalive on one edge and an expiry
check on another race only to the later of two deadlines, which each writer computes from its
own clock. The rate table's words are only ever changed by compare-exchange (ratelimit.py)."""

from __future__ import annotations

import numpy as np

from ganntec.edge.ratelimit import RateTable
from ganntec.shm.segment import COMMON_HEADER_BYTES, Segment, SegmentError, magic_of

NAME = "edge"
MAGIC = magic_of(b"GNTCEDGE")
LAYOUT_VERSION = 2
OFF_ACCOUNTS = COMMON_HEADER_BYTES
OFF_RATE_SLOTS = OFF_ACCOUNTS + 8
OFF_RATE_OFFSET = OFF_RATE_SLOTS + 8
HEADER_BYTES = 128
RATE_SLOTS = 1 << 15  # IPs and accounts counted at once (a slot idle for a day is reused)


class EdgeShared:
    def __init__(self, segment: Segment):
        self.segment = segment
        accounts, rate_slots, rate_offset = (int(v) for v in segment.view(np.int64, OFF_ACCOUNTS, 3))
        self.listen_expiry_ms = segment.view(np.int64, HEADER_BYTES, accounts)
        self.rate_table = RateTable(segment.view(np.int64, rate_offset, RateTable.words_needed(rate_slots)))

    @classmethod
    def create(cls, instance: str, accounts: int, rate_slots: int = RATE_SLOTS, lock_memory: bool = False) -> "EdgeShared":
        rate_offset = (HEADER_BYTES + 8 * accounts + 63) // 64 * 64
        words = RateTable.words_needed(rate_slots)

        def init(seg: Segment) -> None:
            seg.view(np.int64, OFF_ACCOUNTS, 3)[:] = (accounts, rate_slots, rate_offset)
            RateTable.init(seg.view(np.int64, rate_offset, words), rate_slots)
        return cls(Segment.create(instance, NAME, magic=MAGIC, layout_version=LAYOUT_VERSION,
                                  header_bytes=HEADER_BYTES, total_bytes=rate_offset + 8 * words, init=init,
                                  lock_memory=lock_memory))

    @classmethod
    def attach(cls, instance: str, lock_memory: bool = False) -> "EdgeShared":
        outcome, seg = Segment.attach(instance, NAME, magic=MAGIC, layout_version=LAYOUT_VERSION,
                                      min_header_bytes=HEADER_BYTES, lock_memory=lock_memory)
        if seg is None:
            raise SegmentError(outcome, f"segment {NAME} of instance {instance!r}: {outcome.value}")
        return cls(seg)

    def close(self, unlink: bool | None = None) -> None:
        self.listen_expiry_ms = self.rate_table = None
        self.segment.close(unlink=unlink)
