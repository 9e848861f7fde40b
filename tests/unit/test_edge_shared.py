"""The edge processes' shared segment: its drawing matches its offsets, and what one mapping
writes another reads (two edge processes keep one listen-key validity per account)."""

from __future__ import annotations

import re

import pytest

from ganntec.edge import shared as S
from ganntec.shm.segment import SegmentError


def test_drawing_matches_the_offsets():
    rows = {m.group(2): int(m.group(1))
            for m in re.finditer(r"^\s+(\d+)\s+(?:\d+|8 \* accounts)\s+(?:i8|-)\s+(\w+)", S.__doc__, re.M)}
    assert rows["accounts"] == S.OFF_ACCOUNTS
    assert rows["listen_expiry_ms"] == S.HEADER_BYTES


def test_two_mappings_see_one_array(instance):
    made = S.EdgeShared.create(instance, accounts=5)
    try:
        other = S.EdgeShared.attach(instance)
        assert len(other.listen_expiry_ms) == 5 and not other.listen_expiry_ms.any()
        made.listen_expiry_ms[3] = 1_700_000_000_000
        assert other.listen_expiry_ms[3] == 1_700_000_000_000
        other.close(unlink=False)
    finally:
        made.close(unlink=True)
    with pytest.raises(SegmentError, match="missing"):
        S.EdgeShared.attach(instance)
