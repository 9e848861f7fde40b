"""The edge's shared rate-limit table (edge/ratelimit.py): its drawing matches its constants,
windows roll exactly at interval boundaries, slots are claimed and reclaimed, a full table
falls back to the overflow slot, bans escalate and are forgotten, and a random sequence of adds
agrees with a plain dict. Time is the `now_ms` argument; nothing sleeps."""

from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ganntec.edge import ratelimit as R
from ganntec.edge.ratelimit import (
    ORDERS_1D,
    ORDERS_10S,
    RAW_REQUESTS,
    REFUSALS,
    REQUEST_WEIGHT,
    WS_CONNECTIONS,
    Limiter,
    Limits,
    RateTable,
    account_key,
    ip_key,
    retry_after_s,
)

DAY_MS = 86_400_000
MIN_MS = 60_000
T0 = (1_700_000_000_000 // DAY_MS + 1) * DAY_MS  # aligned to every interval


def table(capacity: int = 64, probe_limit: int | None = None) -> RateTable:
    return RateTable.init(np.zeros(RateTable.words_needed(capacity), np.int64), capacity, probe_limit)


def ips(n: int) -> list[int]:
    return [ip_key(f"10.0.{i // 256}.{i % 256}") for i in range(n)]


# ----------------------------------------------------------------------------- layout


def _drawn_sections() -> dict[str, list[tuple]]:
    sections: dict[str, list] = {}
    current = None
    for line in R.__doc__.splitlines():
        head = re.match(r"^(Header|Slot|Counter word|Ban word)\b", line)
        if head:
            current = sections.setdefault(head.group(1), [])
            continue
        words = re.match(r"^\s+(\d+)\s+(\d+|-)\s+([a-z_][a-z0-9_]*)\s", line)
        bits = re.match(r"^\s+(\d+)-(\d+)\s+([a-z_][a-z0-9_]*)", line)
        if current is None or not (words or bits):
            continue
        if bits:
            current.append((int(bits.group(1)), int(bits.group(2)), bits.group(3)))
        else:
            current.append((int(words.group(1)), words.group(2), words.group(3)))
    return sections


def _covered(rows, end_field):
    """Rows cover words 0.. with no gap or overlap; returns {field: word}."""
    at = {}
    pos = 0
    for word, n, name in rows:
        assert word == pos, f"gap or overlap at word {word} ({name})"
        at.setdefault(name, word)
        if name == end_field:
            break
        pos += int(n)
    return at


def test_drawing_matches_the_constants():
    drawn = _drawn_sections()
    header = _covered(drawn["Header"], "slots")
    assert header["magic"] == R.H_MAGIC and header["layout_version"] == R.H_LAYOUT_VERSION
    assert header["capacity"] == R.H_CAPACITY and header["probe_limit"] == R.H_PROBE_LIMIT
    assert header["slot_words"] == R.H_SLOT_WORDS and header["kinds"] == R.H_KINDS
    assert header["interval_ms"] == R.H_INTERVAL_MS and header["overflows"] == R.H_OVERFLOWS
    assert header["slots"] == R.HEADER_WORDS
    assert [n for w, n, name in drawn["Header"] if name == "interval_ms"] == [str(R.MAX_KINDS)]

    slot = _covered(drawn["Slot"], "end")
    assert slot["key"] == R.SLOT_KEY and slot["ban"] == R.SLOT_BAN and slot["end"] == R.SLOT_WORDS
    assert slot["claimed_ms"] == R.SLOT_CLAIMED_MS
    for k, kind in enumerate(R.KINDS):
        assert slot[kind.name] == R.SLOT_COUNTERS + k
    assert [name for _, _, name in drawn["Slot"]] == ["key", *(k.name for k in R.KINDS), "ban", "claimed_ms",
                                                      "reserved", "end"]

    counter = {name: (lo, hi) for lo, hi, name in drawn["Counter word"]}
    assert counter["window"] == (R.WINDOW_SHIFT, R.WINDOW_SHIFT + R.WINDOW_BITS - 1)
    assert counter["count"] == (0, R.COUNT_BITS - 1) and R.COUNT_MAX == 2**R.COUNT_BITS - 1
    ban = {name: (lo, hi) for lo, hi, name in drawn["Ban word"]}
    assert ban["banned_until_ms"] == (0, R.BAN_UNTIL_BITS - 1)
    assert ban["offenses"] == (R.OFFENSES_SHIFT, R.OFFENSES_SHIFT + R.OFFENSES_BITS - 1) == (44, 62)


def test_kinds_and_limits_match_binance():
    assert [(k.rate_limit_type, k.interval_num, k.interval) for k in R.KINDS] == [
        ("REQUEST_WEIGHT", 1, "MINUTE"), ("RAW_REQUESTS", 5, "MINUTE"), ("ORDERS", 10, "SECOND"),
        ("ORDERS", 1, "DAY"), ("CONNECTIONS", 5, "MINUTE"), ("REFUSALS", 1, "MINUTE")]
    assert R.INTERVALS_MS == (60_000, 300_000, 10_000, DAY_MS, 300_000, 60_000)
    limits = Limits()
    assert {(r["rateLimitType"], r["intervalNum"], r["interval"]): r["limit"] for r in limits.rate_limits()} == {
        ("REQUEST_WEIGHT", 1, "MINUTE"): 6000, ("RAW_REQUESTS", 5, "MINUTE"): 61000,
        ("ORDERS", 10, "SECOND"): 50, ("ORDERS", 1, "DAY"): 160000, ("CONNECTIONS", 5, "MINUTE"): 300}
    assert limits.limit(REFUSALS) == R.REFUSALS_BEFORE_BAN == 10
    assert [k.header_suffix for k in R.KINDS[:4]] == ["1M", "5M", "10S", "1D"]


# ----------------------------------------------------------------------------- format, attach


def test_words_needed_and_capacity():
    assert RateTable.words_needed(16) == R.HEADER_WORDS + 17 * R.SLOT_WORDS
    for bad in (0, 3, 12, -4):
        with pytest.raises(ValueError):
            RateTable.words_needed(bad)
    with pytest.raises(ValueError):
        RateTable.init(np.zeros(RateTable.words_needed(8) - 1, np.int64), 8)
    with pytest.raises(ValueError):
        RateTable.init(np.zeros(RateTable.words_needed(8), np.int64), 8, probe_limit=9)
    with pytest.raises(ValueError):
        RateTable.init(np.zeros(RateTable.words_needed(8), np.int32), 8)


def test_attach_inside_a_larger_array_sees_the_same_counts():
    n = RateTable.words_needed(8)
    segment = np.full(16 + n + 16, 7, np.int64)  # the integrator's segment: other data around it
    view = segment[16:16 + n]
    with pytest.raises(ValueError, match="magic"):
        RateTable(view)
    made = RateTable.init(view, 8)
    other = RateTable(segment[16:16 + n])
    assert (other.capacity, other.probe_limit, other.overflow_slot) == (8, 8, 8)
    k = ip_key("192.0.2.1")
    assert made.add(REQUEST_WEIGHT, k, 5, T0) == 5
    assert other.add(REQUEST_WEIGHT, k, 2, T0) == 7 and made.peek(REQUEST_WEIGHT, k, T0) == 7
    assert (segment[:16] == 7).all() and (segment[16 + n:] == 7).all()
    with pytest.raises(ValueError):
        RateTable(segment[16:16 + n - 1])
    with pytest.raises(ValueError):
        made.add(R.N_KINDS, k, 1, T0)


# ----------------------------------------------------------------------------- windows


@pytest.mark.parametrize("kind", range(R.N_KINDS))
def test_windows_roll_exactly_at_interval_boundaries(kind):
    t, iv, k = table(), R.INTERVALS_MS[kind], ip_key("198.51.100.7")
    assert t.peek(kind, k, T0) == 0
    assert t.add(kind, k, 1, T0) == 1
    assert t.add(kind, k, 2, T0 + iv - 1) == 3
    assert t.peek(kind, k, T0 + iv - 1) == 3
    assert t.peek(kind, k, T0 + iv) == 0
    assert t.add(kind, k, 4, T0 + iv) == 4
    assert t.peek(kind, k, T0 + 2 * iv - 1) == 4
    assert t.add(kind, k, 5, T0 + 5 * iv + iv // 2) == 5  # several windows later


def test_a_late_clock_counts_in_the_newer_window():
    # Another edge process's clock a few ms behind, across a boundary: never a reset backwards.
    t, k = table(), ip_key("198.51.100.8")
    assert t.add(REQUEST_WEIGHT, k, 3, T0 + MIN_MS) == 3
    assert t.add(REQUEST_WEIGHT, k, 2, T0 + MIN_MS - 2) == 5
    assert t.peek(REQUEST_WEIGHT, k, T0 + MIN_MS - 2) == 5
    assert t.peek(REQUEST_WEIGHT, k, T0 + 2 * MIN_MS) == 0


def test_counts_per_key_and_kind_are_independent():
    t = table()
    a, b, acct = ip_key("203.0.113.1"), ip_key("203.0.113.2"), account_key(1)
    assert t.add(REQUEST_WEIGHT, a, 10, T0) == 10
    assert t.add(REQUEST_WEIGHT, b, 1, T0) == 1
    assert t.add(RAW_REQUESTS, a, 1, T0) == 1
    assert t.add(ORDERS_10S, acct, 1, T0) == 1
    assert t.add(REQUEST_WEIGHT, a, 10, T0 + 1) == 20
    assert [t.peek(REQUEST_WEIGHT, x, T0) for x in (a, b, acct)] == [20, 1, 0]
    assert [t.peek(kind, acct, T0) for kind in range(R.N_KINDS)] == [0, 0, 1, 0, 0, 0]


def test_counts_saturate_and_negative_weights_add_nothing():
    t, k = table(), ip_key("203.0.113.3")
    assert t.add(REQUEST_WEIGHT, k, R.COUNT_MAX + 10, T0) == R.COUNT_MAX
    assert t.add(REQUEST_WEIGHT, k, 1, T0) == R.COUNT_MAX
    assert t.add(RAW_REQUESTS, k, -5, T0) == 0
    assert t.add(RAW_REQUESTS, k, 2, T0) == 2


def test_small_clock_values_work():
    t, k = table(), account_key(0)
    assert t.add(ORDERS_10S, k, 1, 0) == 1
    assert t.add(ORDERS_10S, k, 1, 9_999) == 2
    assert t.add(ORDERS_10S, k, 1, 10_000) == 1


# ----------------------------------------------------------------------------- slots


def test_slots_are_claimed_once_and_reclaimed_when_idle():
    t = table(capacity=4)
    keys = ips(5)
    slots = []
    for k in keys[:4]:
        slots.append(t.slot_of(k, T0))
        t.add(REQUEST_WEIGHT, k, 1, T0)
    assert sorted(slots) == [0, 1, 2, 3] and sorted(t.slot_keys()) == sorted(keys[:4])
    assert [t.slot_of(k, T0) for k in keys[:4]] == slots  # found again, not claimed twice
    # Full and all live: the fifth key overflows.
    assert t.slot_of(keys[4], T0 + MIN_MS - 1) == t.overflow_slot
    assert t.slot_of(keys[4], T0 + MIN_MS - 1, claim=False) == t.overflow_slot
    # A minute later every REQUEST_WEIGHT window has ended: the fifth key reclaims a slot.
    t.add(REQUEST_WEIGHT, keys[0], 1, T0 + MIN_MS)  # keys[0] stays live
    assert t.slot_of(keys[4], T0 + MIN_MS, claim=False) == -1
    s = t.slot_of(keys[4], T0 + MIN_MS)
    assert 0 <= s < 4 and s != slots[0]
    evicted = keys[slots.index(s)]
    assert evicted not in t.slot_keys() and keys[0] in t.slot_keys()
    assert t.peek(REQUEST_WEIGHT, keys[4], T0 + MIN_MS) == 0  # the old key's stale count is not inherited
    assert t.add(REQUEST_WEIGHT, keys[4], 3, T0 + MIN_MS) == 3
    assert t.peek(REQUEST_WEIGHT, evicted, T0 + MIN_MS) == 0


def test_a_fresh_claim_is_kept_for_its_grace_period():
    t = table(capacity=1)
    first, second = ip_key("192.0.2.60"), ip_key("192.0.2.61")
    assert t.slot_of(first, T0) == 0  # claimed, nothing counted yet
    assert t.slot_of(second, T0 + R.CLAIM_GRACE_MS - 1) == t.overflow_slot
    assert t.slot_of(second, T0 + R.CLAIM_GRACE_MS) == 0
    assert t.slot_keys() == [second]
    # An empty slot's claim not yet stamped (its process killed in between) is never taken.
    t.array[R.HEADER_WORDS + R.SLOT_CLAIMED_MS] = 0
    assert t.slot_of(first, T0 + DAY_MS) == t.overflow_slot


def test_a_slot_with_a_live_day_counter_is_not_reclaimed():
    t = table(capacity=2)
    acct, ip, newcomer = account_key(7), ip_key("192.0.2.50"), ip_key("192.0.2.51")
    t.add(ORDERS_1D, acct, 1, T0)
    t.add(REQUEST_WEIGHT, ip, 1, T0)
    later = T0 + 2 * MIN_MS
    s = t.slot_of(newcomer, later)
    assert s == t.slot_keys().index(newcomer) and acct in t.slot_keys() and ip not in t.slot_keys()
    assert t.peek(ORDERS_1D, acct, later) == 1
    t.add(REQUEST_WEIGHT, newcomer, 1, later)
    assert t.slot_of(ip_key("192.0.2.53"), later) == t.overflow_slot
    assert t.slot_of(ip_key("192.0.2.53"), T0 + DAY_MS) != t.overflow_slot


def test_the_probe_limit_bounds_the_search():
    t = table(capacity=64, probe_limit=1)
    first = account_key(0)
    home = R._home(first, 63)
    twin = next(account_key(i) for i in range(1, 100_000) if R._home(account_key(i), 63) == home)
    assert t.slot_of(first, T0) == home
    assert t.add(REQUEST_WEIGHT, first, 1, T0) == 1
    assert t.slot_of(twin, T0) == t.overflow_slot


def test_a_full_table_fails_safe_into_the_shared_overflow_slot():
    t = table(capacity=2)
    keys = ips(10)
    for k in keys:
        t.add(REQUEST_WEIGHT, k, 1, T0)
    claimed = t.slot_keys()
    assert len(set(claimed)) == 2 and set(claimed) <= set(keys)
    overflowed = [k for k in keys if k not in claimed]
    assert len(overflowed) == 8
    # The eight overflowed keys share one counter: limited together, never lost.
    assert [t.peek(REQUEST_WEIGHT, k, T0) for k in overflowed] == [8] * 8
    assert t.add(REQUEST_WEIGHT, overflowed[0], 5, T0) == 13
    assert all(t.peek(REQUEST_WEIGHT, k, T0) == 1 for k in claimed)
    assert t.overflows >= 9
    # Keys that are no key go there too; nothing raises, no slot changes.
    assert t.add(REQUEST_WEIGHT, 0, 1, T0) == 14 and t.add(REQUEST_WEIGHT, -5, 1, T0) == 15
    assert t.slot_keys() == claimed
    # The overflow slot is never banned: that would ban unrelated clients.
    for _ in range(50):
        assert t.note_refusal(overflowed[0], T0) == 0
    assert t.banned_until(overflowed[1], T0) == 0
    verdict = Limiter(t, Limits(request_weight=1)).check_request(overflowed[2], 1, T0)
    assert (verdict.status, verdict.used_weight) == (429, 16)


# ----------------------------------------------------------------------------- bans


def _offend(t: RateTable, k: int, now_ms: int) -> int:
    """REFUSALS_BEFORE_BAN + 1 refusals at now_ms; the ban's end."""
    for _ in range(R.REFUSALS_BEFORE_BAN):
        assert t.note_refusal(k, now_ms) == 0
    return t.note_refusal(k, now_ms)


def _next_minute(ms: int) -> int:
    return (ms // MIN_MS + 1) * MIN_MS


def test_the_refusal_past_the_threshold_bans_for_two_minutes():
    t, k = table(), ip_key("192.0.2.9")
    until = _offend(t, k, T0 + 5)
    assert until == T0 + 5 + 2 * MIN_MS
    assert t.banned_until(k, T0 + 5) == until and t.banned_until(k, until - 1) == until
    assert t.banned_until(k, until) == 0
    for _ in range(30):  # more refusals in the same window do not extend it
        assert t.note_refusal(k, T0 + 6) == until
    assert t.offenses(k, T0 + 6) == 1
    # Refusals spread over windows never reach the threshold.
    other = ip_key("192.0.2.10")
    for minute in range(5):
        for _ in range(R.REFUSALS_BEFORE_BAN):
            assert t.note_refusal(other, T0 + minute * MIN_MS) == 0
    assert t.banned_until(other, T0 + 5 * MIN_MS) == 0


def test_bans_escalate_doubling_capped_at_three_days():
    t, k = table(), ip_key("2001:db8::1")
    now = T0
    minutes = []
    for _ in range(15):
        until = _offend(t, k, now)
        minutes.append((until - now) // MIN_MS)
        now = _next_minute(until)
    assert minutes == [2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 4320, 4320, 4320]
    assert R.BAN_MAX_MS == 4320 * MIN_MS
    assert t.offenses(k, now) == 15


def test_offenses_are_forgotten_after_three_clean_days():
    t = table()
    kept, forgotten = ip_key("192.0.2.20"), ip_key("192.0.2.21")
    for k in (kept, forgotten):
        until = _offend(t, k, T0)
        until = _offend(t, k, _next_minute(until))
        assert until - _next_minute(T0 + 2 * MIN_MS) == 4 * MIN_MS
    clean_from = until
    # 3 days clean less 1 ms: still a repeat offender.
    now = clean_from + R.OFFENSES_FORGOTTEN_AFTER_MS - 1
    assert t.offenses(kept, now) == 2
    assert _offend(t, kept, now) - now == 8 * MIN_MS
    # Exactly 3 days clean: forgotten, back to 2 minutes.
    now = clean_from + R.OFFENSES_FORGOTTEN_AFTER_MS
    assert t.offenses(forgotten, now) == 0
    assert _offend(t, forgotten, now) - now == 2 * MIN_MS
    assert t.offenses(forgotten, now) == 1


def test_a_remembered_offender_keeps_its_slot():
    t = table(capacity=1)
    k = ip_key("192.0.2.30")
    until = _offend(t, k, T0)
    newcomer = ip_key("192.0.2.31")
    assert t.slot_of(newcomer, until + DAY_MS) == t.overflow_slot  # counters idle, ban remembered
    assert t.slot_of(newcomer, until + R.OFFENSES_FORGOTTEN_AFTER_MS) == 0
    assert t.banned_until(newcomer, until + R.OFFENSES_FORGOTTEN_AFTER_MS) == 0


# ----------------------------------------------------------------------------- retry-after


def test_retry_after_is_the_rest_of_the_window_in_whole_seconds():
    assert retry_after_s(REQUEST_WEIGHT, T0) == 60
    assert retry_after_s(REQUEST_WEIGHT, T0 + 1) == 60
    assert retry_after_s(REQUEST_WEIGHT, T0 + 58_999) == 2
    assert retry_after_s(REQUEST_WEIGHT, T0 + 59_000) == 1
    assert retry_after_s(REQUEST_WEIGHT, T0 + 59_999) == 1
    assert retry_after_s(ORDERS_10S, T0 + 9_500) == 1
    assert retry_after_s(RAW_REQUESTS, T0 + MIN_MS) == 240
    assert retry_after_s(ORDERS_1D, T0) == 86_400
    assert R.window_end_ms(ORDERS_10S, T0 + 9_500) == T0 + 10_000


# ----------------------------------------------------------------------------- keys


def test_ip_keys_are_stable_nonzero_and_fold_ipv4_mapped_addresses():
    v4 = ip_key("192.0.2.1")
    assert v4 == ip_key("192.0.2.1") == 0x15AE0CD79236DF86  # pinned: edges of any version agree
    assert ip_key("::ffff:192.0.2.1") == ip_key("::FFFF:c000:0201") == v4
    v6 = ip_key("2001:db8::1")
    assert v6 == ip_key("2001:0DB8:0000:0000:0000:0000:0000:0001") == 0x302150565769B240
    assert ip_key("2001:db8::ffff:1") == v6  # same /64
    assert ip_key("fe80::1%eth0") == ip_key("fe80::1")
    assert ip_key("2001:db8:0:1::1") != v6
    assert ip_key("2001:db8::1", 128) != ip_key("2001:db8::2", 128)
    keys = {ip_key(f"198.51.100.{i}") for i in range(256)} | {ip_key(f"2001:db8:{i:x}::1") for i in range(256)}
    assert len(keys) == 512
    assert all(0 < x < 2**62 for x in keys | {v4, v6, ip_key("0.0.0.0"), ip_key("::")})
    with pytest.raises(ValueError):
        ip_key("not an address")


def test_account_keys_never_meet_ip_keys():
    assert account_key(0) == 2**62 + 1 and account_key(41) == 2**62 + 42
    assert all(2**62 <= account_key(i) < 2**63 for i in (0, 1, 2**62 - 2))
    with pytest.raises(ValueError):
        account_key(-1)
    with pytest.raises(ValueError):
        account_key(2**62 - 1)


# ----------------------------------------------------------------------------- verdicts


def test_check_request_counts_and_refuses_with_retry_after():
    lim = Limiter(table(), Limits(request_weight=10, raw_requests=1000))
    k = ip_key("192.0.2.40")
    v = lim.check_request(k, 6, T0 + 1_500)
    assert v == R.Verdict(True, 200, 6, 0, 0, 0)
    v = lim.check_request(k, 6, T0 + 1_500)
    assert (v.allowed, v.status, v.used_weight, v.retry_after_s, v.limit_kind) == (False, 429, 12, 59, REQUEST_WEIGHT)
    assert v.banned_until_ms == 0
    v = lim.check_request(k, 1, T0 + MIN_MS)  # next window
    assert (v.allowed, v.used_weight) == (True, 1)


def test_check_request_raw_requests_limit():
    lim = Limiter(table(), Limits(raw_requests=3))
    k = ip_key("192.0.2.41")
    assert [lim.check_request(k, 0, T0).status for _ in range(4)] == [200, 200, 200, 429]
    v = lim.check_request(k, 0, T0 + MIN_MS)  # raw requests count over 5 minutes
    assert (v.status, v.limit_kind, v.retry_after_s) == (429, RAW_REQUESTS, 240)


def test_check_request_bans_an_ip_that_keeps_going():
    t = table()
    lim = Limiter(t, Limits(request_weight=1, refusals_before_ban=2))
    k = ip_key("192.0.2.42")
    statuses = [lim.check_request(k, 1, T0).status for _ in range(4)]
    assert statuses == [200, 429, 429, 418]
    banned = lim.check_request(k, 1, T0 + 1_000)
    assert (banned.allowed, banned.status, banned.banned_until_ms, banned.retry_after_s) == \
        (False, 418, T0 + 2 * MIN_MS, 119)
    assert banned.used_weight == 4  # banned requests are not counted
    assert t.banned_until(k, T0) == T0 + 2 * MIN_MS
    assert lim.check_request(k, 1, T0 + 2 * MIN_MS).status == 200


def test_check_order_counts_ten_seconds_and_the_day():
    lim = Limiter(table(), Limits(orders_10s=2, orders_1d=3))
    a = account_key(5)
    v = [lim.check_order(a, T0) for _ in range(3)]
    assert [(x.status, x.orders_10s, x.orders_1d) for x in v] == [(200, 1, 1), (200, 2, 2), (429, 3, 2)]
    assert (v[2].limit_kind, v[2].retry_after_s, v[2].used_weight) == (ORDERS_10S, 10, 0)
    v = lim.check_order(a, T0 + 10_000)
    assert (v.allowed, v.orders_10s, v.orders_1d) == (True, 1, 3)
    v = lim.check_order(a, T0 + 10_001)
    assert (v.status, v.orders_10s, v.orders_1d, v.limit_kind, v.retry_after_s) == (429, 2, 4, ORDERS_1D, 86_390)


def test_check_order_per_account_overrides():
    lim = Limiter(table())
    strict, other = account_key(1), account_key(2)
    overrides = {strict: Limits(orders_10s=1)}
    assert lim.check_order(strict, T0, overrides).allowed
    assert not lim.check_order(strict, T0, overrides).allowed
    assert all(lim.check_order(other, T0, overrides).allowed for _ in range(50))
    assert not lim.check_order(other, T0, overrides).allowed  # Binance's 50 per 10 s


def test_check_connection_limits_attempts():
    lim = Limiter(table(), Limits(ws_connections=2))
    k = ip_key("192.0.2.43")
    v = [lim.check_connection(k, T0) for _ in range(3)]
    assert [(x.status, x.ws_connections) for x in v] == [(200, 1), (200, 2), (429, 3)]
    assert (v[2].limit_kind, v[2].retry_after_s) == (WS_CONNECTIONS, 300)


# ----------------------------------------------------------------------------- model


KEYS = tuple(ips(6)) + tuple(account_key(i) for i in range(4))
op = st.tuples(
    st.sampled_from(["add", "add", "peek"]),
    st.integers(0, R.N_KINDS - 1),
    st.integers(0, len(KEYS) - 1),
    st.one_of(st.integers(0, 50), st.integers(0, 2**33)),
    st.one_of(st.just(0), st.integers(0, 3_000), st.integers(0, 2 * DAY_MS)),
)


@settings(max_examples=200, deadline=None)
@given(start=st.integers(0, 2**42), ops=st.lists(op, max_size=80))
def test_random_adds_agree_with_a_dict(start, ops):
    t = table(capacity=64)
    model: dict[tuple[int, int], tuple[int, int]] = {}
    now = start
    for name, kind, i, weight, dt in ops:
        now += dt
        window = now // R.INTERVALS_MS[kind]
        w, count = model.get((kind, KEYS[i]), (window, 0))
        if w != window:
            count = 0
        if name == "add":
            count = min(count + weight, R.COUNT_MAX)
            model[(kind, KEYS[i])] = (window, count)
            assert t.add(kind, KEYS[i], weight, now) == count
        else:
            assert t.peek(kind, KEYS[i], now) == count
    assert t.overflows == 0
