"""The journal: round trips, rolling and archives, torn tails truncated at every byte offset,
corruption reported with file, offset and sequence, and fsync mode surviving the loss of every
byte it did not sync."""

from __future__ import annotations

import gzip
import os

import numpy as np
import pytest

from ganntec.journal import format as F
from ganntec.journal.journal import (JournalCorrupt, JournalReader, JournalTail, JournalWriter, archive_rolled,
                                     list_segments)
from ganntec.shm import records as R

RB = R.RECORD_BYTES


def recs(first: int, n: int, salt: int = 0) -> np.ndarray:
    """n records with sequences first.. and payload bytes that differ per record."""
    a = np.zeros(n, R.RECORD_DTYPE)
    a["type"] = int(R.RecordType.NEW_ORDER)
    a["seq"] = np.arange(first, first + n)
    a["account_id"] = (np.arange(n) * 7 + salt) % 1000
    raw = a.view(np.uint8).reshape(n, RB).copy()
    raw[:, 40:] = (np.arange(n)[:, None] * 31 + np.arange(RB - 40)[None, :] + salt) % 251
    return raw


def read_all(d) -> np.ndarray:
    return JournalReader(str(d)).records()


class SyncLog:
    """An fsync stand-in that remembers, per file, how many bytes were durable at each sync."""

    def __init__(self):
        self.durable: dict[str, int] = {}

    def __call__(self, fd: int):
        path = os.readlink(f"/proc/self/fd/{fd}")
        self.durable[path] = os.fstat(fd).st_size
        os.fdatasync(fd)


def test_layout_drawings_match_dtypes():
    from test_layout_drawings import _drawn_sections, _fields, _type_code

    for name, dtype in (("FILE_HEADER", F.FILE_HEADER_DTYPE), ("FRAME_HEADER", F.FRAME_HEADER_DTYPE)):
        drawn = _drawn_sections(F.__doc__)[name]
        fields = _fields(dtype)
        assert [(o, s, n) for o, s, _, n in drawn if n != "(reserved)"] == [(o, s, n) for o, s, n, _ in fields]
        assert [t for _, _, t, n in drawn if n != "(reserved)"] == [_type_code(dt) for *_, dt in fields]
        assert sum(s for _, s, _, _ in drawn) == dtype.itemsize


@pytest.mark.parametrize("durability", ["fsync", "os"])
def test_round_trip_in_batches_and_reopen(tmp_path, durability):
    d = str(tmp_path / "j")
    batches = [recs(1, 5), recs(6, 1), recs(7, 300)]
    with JournalWriter(d, durability) as w:
        for b in batches:
            w.append(b)
        assert w.next_seq == 307
    with JournalWriter(d, durability) as w:  # reopening continues where it ended
        assert w.next_seq == 307 and w.truncated is None
        w.append(recs(307, 2))
    got = read_all(d)
    assert np.array_equal(got, np.concatenate(batches + [recs(307, 2)]))
    assert np.array_equal(JournalReader(d).records(from_seq=100), got[99:])
    assert len(JournalReader(d).records(from_seq=400)) == 0


def test_structured_records_are_accepted_and_sequences_must_run_on(tmp_path):
    d = str(tmp_path / "j")
    with JournalWriter(d) as w:
        w.append(recs(1, 3).view(R.RECORD_DTYPE).reshape(-1))
        with pytest.raises(ValueError, match=r"records\[1\].seq=9 \(journal expects 5"):
            bad = recs(4, 3)
            bad.view(R.RECORD_DTYPE)["seq"][1] = 9
            w.append(bad)
        assert w.next_seq == 4  # nothing of the refused batch was written
        with pytest.raises(ValueError, match="128-byte records"):
            w.append(np.zeros((2, 64), np.uint8))
    assert len(read_all(d)) == 3


def test_bad_settings_are_refused(tmp_path):
    with pytest.raises(ValueError, match=r"durability=disk \(one of fsync, os\)"):
        JournalWriter(str(tmp_path / "j"), durability="disk")
    with pytest.raises(ValueError, match="segment_bytes=100"):
        JournalWriter(str(tmp_path / "j"), segment_bytes=100)


def test_segments_roll_and_archive_and_read_back(tmp_path):
    d = str(tmp_path / "j")
    seg_bytes = F.FILE_HEADER_BYTES + 2 * F.frame_bytes(6)
    with JournalWriter(d, "os", segment_bytes=seg_bytes) as w:
        for first in range(1, 61, 6):
            w.append(recs(first, 6))
    segs = list_segments(d)
    assert [s.first_seq for s in segs] == [1, 13, 25, 37, 49]  # two 6-record frames fit in each
    assert all(os.stat(s.path).st_mode & 0o777 == 0o600 for s in segs)
    want = np.concatenate([recs(f, 6) for f in range(1, 61, 6)])
    made = archive_rolled(d)
    assert len(made) == 4 and all(m.endswith(".journal.gz") for m in made)
    assert [s.archived for s in list_segments(d)] == [True] * 4 + [False]
    assert np.array_equal(read_all(d), want)
    assert np.array_equal(JournalReader(d).records(from_seq=30), want[29:])
    with JournalWriter(d, "os", segment_bytes=seg_bytes) as w:  # appending after archives
        w.append(recs(61, 3))
    assert np.array_equal(read_all(d)[-3:], recs(61, 3))


def test_an_interrupted_archive_reads_the_plain_copy(tmp_path):
    d = str(tmp_path / "j")
    with JournalWriter(d, "os", segment_bytes=F.FILE_HEADER_BYTES + F.frame_bytes(4)) as w:
        for first in range(1, 13, 4):
            w.append(recs(first, 4))
    plain = list_segments(d)[0].path
    with open(plain, "rb") as f, gzip.open(plain[:-len(F.SUFFIX)] + F.ARCHIVE_SUFFIX, "wb") as g:
        g.write(f.read())  # renamed into place, plain not yet removed
    assert list_segments(d)[0].archived is False
    assert np.array_equal(read_all(d), np.concatenate([recs(f, 4) for f in range(1, 13, 4)]))


def _journal_with_tail(tmp_path) -> tuple[str, str, int, np.ndarray]:
    """A journal of three frames; returns (dir, newest segment, offset of the last frame, all records)."""
    d = str(tmp_path / "j")
    with JournalWriter(d, "os") as w:
        w.append(recs(1, 4))
        w.append(recs(5, 3))
        w.append(recs(8, 2))
    path = list_segments(d)[-1].path
    last = F.FILE_HEADER_BYTES + F.frame_bytes(4) + F.frame_bytes(3)
    return d, path, last, np.concatenate([recs(1, 4), recs(5, 3), recs(8, 2)])


def test_a_torn_tail_at_every_byte_offset_of_the_last_frame_is_truncated(tmp_path):
    d, path, last, want = _journal_with_tail(tmp_path)
    full = open(path, "rb").read()
    assert len(full) == last + F.frame_bytes(2)
    for cut in range(last, len(full)):
        with open(path, "wb") as f:
            f.write(full[:cut])
        reader = JournalReader(d)
        assert np.array_equal(reader.records(), want[:7]), cut
        assert (reader.torn is None) == (cut == last), cut
        with JournalWriter(d, "os") as w:  # opening cuts the torn bytes and goes on from 8
            assert w.next_seq == 8
            assert (w.truncated is not None) == (cut > last)
            w.append(recs(8, 2))
        assert open(path, "rb").read() == full, cut


@pytest.mark.parametrize("where", ["frame header", "record", "checksum"])
def test_a_flipped_bit_before_the_tail_is_reported_with_file_offset_and_sequence(tmp_path, where):
    d, path, last, _ = _journal_with_tail(tmp_path)
    second = F.FILE_HEADER_BYTES + F.frame_bytes(4)  # the frame holding sequences 5..7
    at = {"frame header": second + 9, "record": second + F.FRAME_HEADER_BYTES + 200, "checksum": second + 5}[where]
    data = bytearray(open(path, "rb").read())
    data[at] ^= 0x10
    open(path, "wb").write(bytes(data))
    for attempt in (lambda: read_all(d), lambda: JournalWriter(d, "os")):
        with pytest.raises(JournalCorrupt) as e:
            attempt()
        assert e.value.path == path and e.value.offset == second and e.value.seq == 5
        assert path in str(e.value) and f"offset {second}" in str(e.value) and "sequence 5" in str(e.value)
    assert open(path, "rb").read() == bytes(data)  # nothing was truncated or rewritten


def test_damage_in_a_rolled_segment_is_corruption_even_at_its_end(tmp_path):
    d = str(tmp_path / "j")
    with JournalWriter(d, "os", segment_bytes=F.FILE_HEADER_BYTES + F.frame_bytes(4)) as w:
        w.append(recs(1, 4))
        w.append(recs(5, 4))
    first = list_segments(d)[0].path
    data = bytearray(open(first, "rb").read())
    data[-1] ^= 1
    open(first, "wb").write(bytes(data))
    with pytest.raises(JournalCorrupt, match="checksum"):
        read_all(d)
    # Reading from a later segment skips the damaged one unread; a writer only opens the newest.
    assert np.array_equal(JournalReader(d).records(from_seq=5), recs(5, 4))


def test_a_segment_header_is_checked(tmp_path):
    d, path, _, _ = _journal_with_tail(tmp_path)
    data = bytearray(open(path, "rb").read())
    data[3] ^= 1  # magic
    open(path, "wb").write(bytes(data))
    with pytest.raises(JournalCorrupt, match="magic") as e:
        read_all(d)
    assert e.value.offset == 0 and e.value.seq == 1
    os.rename(path, os.path.join(d, F.segment_name(2)))  # valid header, wrong name
    data[3] ^= 1
    open(os.path.join(d, F.segment_name(2)), "wb").write(bytes(data))
    with pytest.raises(JournalCorrupt, match="file name 2"):
        read_all(d)


def test_a_new_segment_torn_in_its_header_is_made_again(tmp_path):
    d = str(tmp_path / "j")
    with JournalWriter(d, "os", segment_bytes=F.FILE_HEADER_BYTES + F.frame_bytes(4)) as w:
        w.append(recs(1, 4))
        w.append(recs(5, 4))
    newest = list_segments(d)[-1].path
    full = open(newest, "rb").read()
    open(newest, "wb").write(full[:F.FILE_HEADER_BYTES - 10])
    with JournalWriter(d, "os", segment_bytes=F.FILE_HEADER_BYTES + F.frame_bytes(4)) as w:
        assert w.next_seq == 5 and w.truncated is not None
        w.append(recs(5, 4))
    assert open(newest, "rb").read() == full


def test_fsync_mode_survives_losing_every_byte_it_did_not_sync(tmp_path):
    """A power loss keeps what was synced and may leave anything — nothing, zeros, garbage, part
    of the next frame — after it. Every appended batch returned after its sync, so every batch
    the writer acknowledged must survive, and the journal must open and go on."""
    d = str(tmp_path / "j")
    log = SyncLog()
    acked = []
    with JournalWriter(d, "fsync", sync=log) as w:
        for first, n in ((1, 3), (4, 5), (9, 2)):
            w.append(recs(first, n))
            acked.append(recs(first, n))
    path = list_segments(d)[-1].path
    synced = open(path, "rb").read()
    assert log.durable[path] == len(synced)  # every acknowledged byte had been synced
    in_flight = bytearray(F.frame_bytes(4))  # the next frame, being written when the power went
    nxt = recs(11, 4).tobytes()
    in_flight[F.FRAME_HEADER_BYTES:] = nxt
    rng = np.random.default_rng(7)
    afters = [b"", bytes(100), bytes(in_flight[:77]), bytes(in_flight), rng.integers(0, 256, 600, np.uint8).tobytes(),
              bytes(len(in_flight) - 4096 % len(in_flight)) + bytes(in_flight[-100:])]
    for after in afters:
        open(path, "wb").write(synced + after)
        assert np.array_equal(read_all(d), np.concatenate(acked))
        with JournalWriter(d, "fsync") as w:
            assert w.next_seq == 11
            w.append(recs(11, 4))
        assert np.array_equal(read_all(d), np.concatenate(acked + [recs(11, 4)]))


def test_os_mode_syncs_only_on_close(tmp_path):
    d = str(tmp_path / "j")
    log = SyncLog()
    w = JournalWriter(d, "os", sync=log)
    path = list_segments(d)[-1].path
    header_only = log.durable[path]
    w.append(recs(1, 10))
    assert log.durable[path] == header_only  # written, not synced
    w.close()
    assert log.durable[path] == os.path.getsize(path)


def test_big_appends_split_into_frames(tmp_path, monkeypatch):
    import ganntec.journal.journal as J

    monkeypatch.setattr(J, "MAX_FRAME_RECORDS", 7)
    d = str(tmp_path / "j")
    with JournalWriter(d, "os") as w:
        w.append(recs(1, 20))
    path = list_segments(d)[-1].path
    assert os.path.getsize(path) == F.FILE_HEADER_BYTES + 2 * F.frame_bytes(7) + F.frame_bytes(6)
    assert np.array_equal(read_all(d), recs(1, 20))


def test_deferred_sync_is_one_group_commit(tmp_path):
    d = str(tmp_path / "j")
    log = SyncLog()
    with JournalWriter(d, "fsync", sync=log) as w:
        path = list_segments(d)[-1].path
        header_only = log.durable[path]
        w.append(recs(1, 3), sync=False)
        w.append(recs(4, 2), sync=False)
        assert log.durable[path] == header_only  # written, not yet durable
        w.sync()
        assert log.durable[path] == os.path.getsize(path)
    assert np.array_equal(read_all(d), np.concatenate([recs(1, 3), recs(4, 2)]))


def test_a_tail_returns_each_record_once_across_appends_rolls_and_archives(tmp_path):
    d = str(tmp_path / "j")
    seg_bytes = F.FILE_HEADER_BYTES + 2 * F.frame_bytes(6)
    tail, late = JournalTail(d, from_seq=1), JournalTail(d, from_seq=10)
    got, got_late = [], []
    with JournalWriter(d, "os", segment_bytes=seg_bytes) as w:
        assert len(tail.poll()) == 0  # nothing written yet
        for first in range(1, 61, 6):
            w.append(recs(first, 6), sync=False)
            got.append(tail.poll())
            if first in (19, 43):
                archive_rolled(d)  # archived between polls: read from the archive
            if first % 12 == 7:
                got_late.append(late.poll())
        got_late.append(late.poll())
    want = np.concatenate([recs(f, 6) for f in range(1, 61, 6)])
    assert np.array_equal(np.concatenate(got), want) and tail.next_seq == 61
    assert np.array_equal(np.concatenate(got_late), want[9:])
    assert len(tail.poll()) == 0


def test_a_tail_waits_for_a_frame_being_written_and_reports_damage(tmp_path):
    d, path, last, want = _journal_with_tail(tmp_path)
    full = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(full[:last + 7])  # the writer mid-append
    tail = JournalTail(d)
    assert np.array_equal(tail.poll(), want[:7])
    with open(path, "wb") as f:
        f.write(full)
    assert np.array_equal(tail.poll(), want[7:])
    data = bytearray(full)
    data[F.FILE_HEADER_BYTES + 9] ^= 0x10  # a bit flipped in an early frame: a new tail finds it
    open(path, "wb").write(bytes(data))
    with pytest.raises(JournalCorrupt) as e:
        JournalTail(d).poll()
    assert e.value.path == path and e.value.offset == F.FILE_HEADER_BYTES
