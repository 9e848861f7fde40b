"""Each layout module draws its binary layout at its top; the drawing must match the dtypes."""

from __future__ import annotations

import re

import numpy as np
import pytest

from ganntec.shm import records, ring, segment

ROW3 = re.compile(r"^\s+(\d+)\s+(\d+)\s+(\S+)\s+([a-z_][a-z0-9_]*|\(reserved\))(?=\s|$)")
ROW2 = re.compile(r"^\s+(\d+)\s+(\d+|-)\s+([a-z_][a-z0-9_ ]*?)\s{2,}")


def _records_sections() -> dict[str, list[tuple[int, int, str, str]]]:
    sections: dict[str, list] = {}
    current = None
    for line in records.__doc__.splitlines():
        head = re.match(r"^\[([A-Z_]+)\]", line)
        if head:
            current = sections.setdefault(head.group(1), [])
            continue
        m = ROW3.match(line)
        if m and current is not None:
            current.append((int(m.group(1)), int(m.group(2)), m.group(3), m.group(4)))
    return sections


def _fields(dtype: np.dtype) -> list[tuple[int, int, str, np.dtype]]:
    return sorted((off, dt.itemsize, name, dt) for name, (dt, off) in dtype.fields.items())


def _type_code(dt: np.dtype) -> str:
    if dt.subdtype is not None:
        base, shape = dt.subdtype
        return f"{base.kind}{base.itemsize}x{shape[0]}"
    return f"{dt.kind}{dt.itemsize}"


def test_every_payload_is_drawn():
    sections = _records_sections()
    assert set(sections) == {"HEADER", *records.PAYLOAD_FIELDS}


@pytest.mark.parametrize("name", ["HEADER", *records.PAYLOAD_FIELDS])
def test_record_drawing_matches_dtype(name):
    drawn = _records_sections()[name]
    dtype = records.RECORD_DTYPE if name == "HEADER" else records.DTYPES[name]
    start, end = (0, records.HEADER_BYTES) if name == "HEADER" else (records.HEADER_BYTES, records.RECORD_BYTES)
    fields = [f for f in _fields(dtype) if start <= f[0] < end]
    drawn_fields = [d for d in drawn if d[3] != "(reserved)"]
    assert [(o, s, n) for o, s, _, n in drawn_fields] == [(o, s, n) for o, s, n, _ in fields]
    assert [t for *_, t, _ in drawn_fields] == [_type_code(dt) for *_, dt in fields]
    # The drawing covers the whole range with no gap or overlap, reserved bytes included.
    pos = start
    for off, size, _, _ in drawn:
        assert off == pos, f"{name}: gap or overlap at {off}"
        pos += size
    assert pos == end


def test_every_record_is_128_bytes_and_type_has_a_dtype():
    assert records.RECORD_DTYPE.itemsize == records.RECORD_BYTES == 128
    for t in records.RecordType:
        assert records.dtype_of(t).itemsize == 128
        assert records.empty(t)["type"][0] == t


def test_client_order_id_survives_a_record():
    cid = "x" * 18 + "ABC.:/_-0123456789"
    assert len(cid) == 36
    rec = records.empty(records.RecordType.NEW_ORDER)
    rec["client_order_id"] = records.encode_client_id("newClientOrderId", cid)
    raw = rec.tobytes()
    back = np.frombuffer(raw, dtype=records.NEW_ORDER_DTYPE)
    assert records.decode_client_id(back["client_order_id"][0]) == cid


@pytest.mark.parametrize("bad", ["", "x" * 37, "a b", "é", "a,b"])
def test_client_order_id_rule(bad):
    with pytest.raises(ValueError, match="newClientOrderId="):
        records.encode_client_id("newClientOrderId", bad)


def _drawn_offsets(doc: str) -> dict[str, tuple[int, int]]:
    out = {}
    for line in doc.splitlines():
        m = ROW2.match(line)
        if m and m.group(2) != "-":
            name = m.group(3).strip().replace(" ", "_")
            out[name] = (int(m.group(1)), int(m.group(2)))
    return out


def test_ring_drawing_matches_header_dtype():
    drawn = _drawn_offsets(ring.__doc__)
    for name, (dt, off) in ring.RING_HEADER_DTYPE.fields.items():
        assert drawn[name] == (off, dt.itemsize), name
    assert drawn["common_header"] == (0, segment.COMMON_HEADER_BYTES)
    assert re.search(rf"^\s+{ring.SLOTS_OFFSET}\s+-\s+slots\s", ring.__doc__, re.M)
    # Each side's counters live on their own cache line.
    assert ring.OFF_HEAD // 64 != ring.OFF_TAIL // 64
    assert ring.OFF_CONSUMER_SLEEPING // 64 not in (ring.OFF_HEAD // 64, ring.OFF_TAIL // 64)
    assert ring.SLOTS_OFFSET % 64 == 0
    assert ring.RING_HEADER_DTYPE.itemsize == ring.SLOTS_OFFSET


def test_segment_drawing_matches_common_header():
    drawn = _drawn_offsets(segment.__doc__)
    for name, (dt, off) in segment.COMMON_HEADER_DTYPE.fields.items():
        assert drawn[name] == (off, dt.itemsize), name
    assert segment.COMMON_HEADER_DTYPE.itemsize == segment.COMMON_HEADER_BYTES == 64


def test_symbol_rules_drawing_matches_dtype():
    from ganntec.engines import symbols

    drawn = []
    for line in symbols.__doc__.splitlines():
        m = ROW3.match(line)
        if m:
            drawn.append((int(m.group(1)), int(m.group(2)), m.group(3), m.group(4)))
    fields = _fields(symbols.SYMBOL_DTYPE)
    assert [(o, s, n) for o, s, _, n in drawn if n != "(reserved)"] == [(o, s, n) for o, s, n, _ in fields]
    assert [t for _, _, t, n in drawn if n != "(reserved)"] == [_type_code(dt) for *_, dt in fields]
    assert sum(s for _, s, _, _ in drawn) == symbols.SYMBOL_DTYPE.itemsize


def _drawn_sections(doc: str) -> dict[str, list[tuple[int, int, str, str]]]:
    sections: dict[str, list] = {}
    current = None
    for line in doc.splitlines():
        head = re.match(r"^\s*\[([A-Z_]+)\] (\d+) bytes", line)
        if head:
            current = sections.setdefault(head.group(1), [])
            continue
        m = ROW3.match(line)
        if m and current is not None:
            current.append((int(m.group(1)), int(m.group(2)), m.group(3), m.group(4)))
    return sections


@pytest.mark.parametrize("module, name", [("matching", "ORDER_DTYPE"), ("matching", "LEVEL_DTYPE"),
                                          ("risk", "ACCOUNT_STATE_DTYPE"), ("risk", "HOLD_DTYPE"),
                                          ("position", "POSITION_DTYPE")])
def test_engine_state_drawings_match_their_dtypes(module, name):
    import importlib

    mod = importlib.import_module(f"ganntec.engines.{module}")
    dtype = getattr(mod, name)
    drawn = _drawn_sections(mod.__doc__)[name]
    fields = _fields(dtype)
    assert [(o, s, n) for o, s, _, n in drawn if n != "(reserved)"] == [(o, s, n) for o, s, n, _ in fields]
    assert [t for _, _, t, n in drawn if n != "(reserved)"] == [_type_code(dt) for *_, dt in fields]
    assert sum(s for _, s, _, _ in drawn) == dtype.itemsize
