"""Binance-style rate limits shared by every edge process of an instance: fixed-window counters
per IP and per account, and escalating IP bans, in an int64 array the caller maps (a view of
shared memory). Every process that maps the same words sees the same counts; nothing is locked.

The table lives in ANY int64 array of at least `RateTable.words_needed(capacity)` words (8-byte
aligned): `RateTable.init(array, capacity)` formats it, `RateTable(array)` attaches to a formatted
one. Offsets below are in int64 words from the start of that array.

Header (HEADER_WORDS words):

    word  words  field              meaning
    ----  -----  -----------------  ---------------------------------------------------------
       0      1  magic              "GNTCRATE"; stored last by init (release)
       1      1  layout_version     LAYOUT_VERSION
       2      1  capacity           hashed slots, a power of two
       3      1  probe_limit        slots one key may probe, 1..capacity
       4      1  slot_words         SLOT_WORDS
       5      1  kinds              len(KINDS)
       6      2  reserved           zero
       8      8  interval_ms        interval_ms[k] of kind k (KINDS order), MAX_KINDS entries
      16      1  overflows          operations routed to the overflow slot (statistics)
      17      7  reserved           zero
      24      -  slots              capacity + 1 slots of SLOT_WORDS; slot `capacity` is the
                                    overflow slot

Slot s at word HEADER_WORDS + s * SLOT_WORDS (two 64-byte lines; lookups and adds touch the first):

    word  words  field              meaning
    ----  -----  -----------------  ---------------------------------------------------------
       0      1  key                0: empty; > 0: the key that claimed it; OVERFLOW_KEY in the
                                    overflow slot
       1      1  request_weight     counter of REQUEST_WEIGHT  (per IP, 1 MINUTE)
       2      1  raw_requests       counter of RAW_REQUESTS    (per IP, 5 MINUTE)
       3      1  orders_10s         counter of ORDERS          (per account, 10 SECOND)
       4      1  orders_1d          counter of ORDERS          (per account, 1 DAY)
       5      1  ws_connections     counter of CONNECTIONS     (per IP, 5 MINUTE; attempts)
       6      1  refusals           counter of 429s answered to the IP (1 MINUTE: ban policy)
       7      1  ban                ban word of the IP
       8      1  claimed_ms         when the key claimed the slot (0: a claim of an empty slot
                                    in progress)
       9      7  reserved           zero
      16      -  end                SLOT_WORDS

Counter word (one per kind; all zero = empty):

    bits   field     meaning
    -----  --------  ----------------------------------------------------------------------
    63-63  zero
    32-62  window    (now_ms // interval_ms) mod 2**31; compared modulo 2**31
     0-31  count     weight added in that window, saturating at COUNT_MAX

Ban word:

    bits   field            meaning
    -----  ---------------  ---------------------------------------------------------------
    63-63  zero
    44-62  offenses         bans so far; forgotten 3 days after the last ban ended
     0-43  banned_until_ms  end of the last ban (wall-clock ms); kept after it ends

Protocol. Every shared word is read with an acquire load and changed with a seq_cst
compare-exchange (`overflows`: fetch-add) from atomics.py; nothing is stored plainly after init.
- Windows are fixed and aligned to the interval, as Binance's (rest-api.md "LIMITS"): an add
  whose window is newer than the stored one replaces the count; one whose window is *older*
  (another process's clock a few ms behind, across a boundary) counts in the newer window.
- Slots: open addressing, linear probing from a hash of the key over at most `probe_limit`
  slots. A lookup scans for the key and stops at the first empty slot: a key word goes 0 -> key
  (compare-exchange) and never back to 0. An absent key then claims the first slot that is
  - empty: compare-exchange of the key word 0 -> key, then of claimed_ms 0 -> now. Until the
    second, the slot is not reclaimable, so a claim is never taken before its first count (a
    process killed between the two leaks that one slot); or
  - reclaimable: every counter stale (window ended, or count 0), ban clean (none, or offenses
    forgotten) and claimed at least CLAIM_GRACE_MS ago. Compare-exchange of claimed_ms old ->
    now (one reclaimer wins), then of the key word old key -> new key. The old key's stale
    counters restart at the new key's first add; the ban word's stale end is harmless.
  After adding, an operation re-checks that its slot still holds its key and that no earlier
  probe slot does; if not, it adds again where the key is now: a race over-counts, never loses.
  (The one exception: two processes first-claiming the same key at the same instant while their
  clocks straddle a window boundary may leave one operation in an abandoned duplicate slot.)
- Full table (no slot holding the key, empty or reclaimable within `probe_limit`): the operation
  counts against the shared overflow slot (index `capacity`) and `overflows` is incremented. All
  keys that overflow share its counters, so their combined traffic is limited as one client: the
  limits still hold, never raise, never corrupt. The overflow slot is never banned (it would ban
  unrelated clients); keys <= 0 also go there.
- Bans: see REFUSALS_BEFORE_BAN below. Only the refusal that takes the IP's refusal count from
  REFUSALS_BEFORE_BAN to one more bans it, so concurrent processes ban once.

Limits (defaults of `Limits`) are Binance's published values, binance-spot-api-docs at
a5e0bc3d: web-socket-api.md lines 1538-1563 (the exchangeInfo example: REQUEST_WEIGHT 6000 per
1 MINUTE, ORDERS 50 per 10 SECOND, ORDERS 160000 per 1 DAY, CONNECTIONS 300 per 5 MINUTE) and
enums.md lines 157-166 (RAW_REQUESTS 61000 per 5 MINUTE; the REST exchangeInfo example in
rest-api.md lists no limits). web-socket-streams.md line 63 / web-socket-api.md line 389: "300
connections per attempt every 5 minutes per IP".
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from hashlib import blake2b
from typing import NamedTuple

import numpy as np
from numba import njit

from ganntec.shm.atomics import (
    compare_exchange_seqcst,
    fetch_add_seqcst,
    load_acquire,
    store_relaxed,
    store_release,
)


class Kind(NamedTuple):
    name: str             # the slot field of its counter
    rate_limit_type: str  # Binance's rateLimitType
    interval: str         # SECOND, MINUTE, DAY
    interval_num: int
    keyed_by: str         # "ip" or "account"

    @property
    def interval_ms(self) -> int:
        return self.interval_num * _INTERVAL_UNIT_MS[self.interval]

    @property
    def header_suffix(self) -> str:
        """(intervalNum)(intervalLetter), as in X-MBX-USED-WEIGHT-1M."""
        return f"{self.interval_num}{self.interval[0]}"


_INTERVAL_UNIT_MS = {"SECOND": 1_000, "MINUTE": 60_000, "HOUR": 3_600_000, "DAY": 86_400_000}

# The kinds of counter, one word per slot each, in slot order. To add one: append it, give it a
# Limits field of its name, redraw the slot and bump LAYOUT_VERSION.
KINDS = (
    Kind("request_weight", "REQUEST_WEIGHT", "MINUTE", 1, "ip"),
    Kind("raw_requests", "RAW_REQUESTS", "MINUTE", 5, "ip"),
    Kind("orders_10s", "ORDERS", "SECOND", 10, "account"),
    Kind("orders_1d", "ORDERS", "DAY", 1, "account"),
    Kind("ws_connections", "CONNECTIONS", "MINUTE", 5, "ip"),
    Kind("refusals", "REFUSALS", "MINUTE", 1, "ip"),  # ours: the ban policy's window
)
REQUEST_WEIGHT, RAW_REQUESTS, ORDERS_10S, ORDERS_1D, WS_CONNECTIONS, REFUSALS = range(6)
N_KINDS = len(KINDS)
INTERVALS_MS = tuple(k.interval_ms for k in KINDS)

# rest-api.md "LIMITS" > "IP Limits" (lines 159-161): "Repeatedly violating rate limits and/or
# failing to back off after receiving 429s will result in an automated IP ban (HTTP status 418).
# IP bans are tracked and scale in duration for repeat offenders, from 2 minutes to 3 days."
# "A Retry-After header is sent with a 418 or 429 responses and will give the number of seconds
# required to wait, in the case of a 429, to prevent a ban, or, in the case of a 418, until the
# ban is over." Binance publishes no threshold; ours: more than REFUSALS_BEFORE_BAN 429s to one
# IP within one REFUSALS window (1 minute, fixed) bans it for BAN_MIN_MS, doubling per offense
# (2, 4, 8, ... minutes) up to BAN_MAX_MS; offenses are forgotten once the IP has been clean
# (not banned) for OFFENSES_FORGOTTEN_AFTER_MS.
REFUSALS_BEFORE_BAN = 10
BAN_MIN_MS = 2 * 60_000
BAN_MAX_MS = 3 * 86_400_000
OFFENSES_FORGOTTEN_AFTER_MS = 3 * 86_400_000

# Layout (see the drawing). Header words:
H_MAGIC, H_LAYOUT_VERSION, H_CAPACITY, H_PROBE_LIMIT, H_SLOT_WORDS, H_KINDS = range(6)
H_INTERVAL_MS = 8
MAX_KINDS = 8
H_OVERFLOWS = H_INTERVAL_MS + MAX_KINDS
HEADER_WORDS = 24
# Slot words, derived from KINDS:
SLOT_KEY = 0
SLOT_COUNTERS = 1  # counter of kind k at SLOT_COUNTERS + k
SLOT_BAN = SLOT_COUNTERS + N_KINDS
SLOT_CLAIMED_MS = SLOT_BAN + 1
SLOT_WORDS = (SLOT_CLAIMED_MS + 1 + 7) // 8 * 8  # whole cache lines
# Counter word:
WINDOW_SHIFT = 32
WINDOW_BITS = 31
WINDOW_MASK = (1 << WINDOW_BITS) - 1
COUNT_BITS = 32
COUNT_MAX = (1 << COUNT_BITS) - 1
# Ban word:
BAN_UNTIL_BITS = 44
BAN_UNTIL_MASK = (1 << BAN_UNTIL_BITS) - 1
OFFENSES_SHIFT = BAN_UNTIL_BITS
OFFENSES_BITS = 63 - BAN_UNTIL_BITS
OFFENSES_MAX = 255

MAGIC = int.from_bytes(b"GNTCRATE", "little")
LAYOUT_VERSION = 1
OVERFLOW_KEY = -1
DEFAULT_PROBE_LIMIT = 32
# A claim is not reclaimed for this long: covers the claim-to-first-count instant, a process
# descheduled in between, and the edges' clock skew; the shortest window, so it delays nothing.
CLAIM_GRACE_MS = 10_000
_RETRIES = 4  # re-evaluations of one contended slot, and re-adds after a lost claim race

# Keys: IP keys in [1, 2**62), account keys in [2**62, 2**63): one table, disjoint key spaces.
IP_KEY_MASK = (1 << 62) - 1
ACCOUNT_KEY_BIT = 1 << 62
IPV6_PREFIX_BITS = 64  # one IPv6 client holds a /64; keying single addresses lets it rotate

assert N_KINDS <= MAX_KINDS and SLOT_WORDS % 8 == 0 and H_OVERFLOWS < HEADER_WORDS
assert max(INTERVALS_MS) <= 1 << 40 and OFFENSES_MAX < 1 << OFFENSES_BITS


def ip_key(ip: str, ipv6_prefix_bits: int = IPV6_PREFIX_BITS) -> int:
    """A stable key in [1, 2**62) for an IP address (text or ipaddress object). An IPv4-mapped
    IPv6 address keys as its IPv4 address; other IPv6 addresses key by their first
    `ipv6_prefix_bits` bits (scope ids ignored). Raises ValueError for text that is no address."""
    addr = ipaddress.ip_address(ip)
    if addr.version == 6 and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    if addr.version == 4:
        data = b"4" + addr.packed
    else:
        if not 0 < ipv6_prefix_bits <= 128:
            raise ValueError(f"ipv6_prefix_bits={ipv6_prefix_bits} (1..128)")
        prefix = int(addr) >> (128 - ipv6_prefix_bits) << (128 - ipv6_prefix_bits)
        data = b"6" + prefix.to_bytes(16, "big") + bytes([ipv6_prefix_bits])
    h = int.from_bytes(blake2b(data, digest_size=8, person=b"ganntec.ip").digest(), "little") & IP_KEY_MASK
    return h or 1


def account_key(account_id: int) -> int:
    """The key of an account id (0 <= account_id < 2**62 - 1), never equal to an IP key."""
    if not 0 <= account_id < ACCOUNT_KEY_BIT - 1:
        raise ValueError(f"account_id={account_id}")
    return ACCOUNT_KEY_BIT | (account_id + 1)


def window_end_ms(kind: int, now_ms: int) -> int:
    """When the window of `kind` containing now_ms ends."""
    iv = INTERVALS_MS[kind]
    return (now_ms // iv + 1) * iv


def retry_after_s(kind: int, now_ms: int) -> int:
    """Seconds until the current window of `kind` ends (ceil, >= 1): a 429's Retry-After."""
    return _seconds_until(window_end_ms(kind, now_ms), now_ms)


def _seconds_until(until_ms: int, now_ms: int) -> int:
    return max(1, -(-(until_ms - now_ms) // 1000))


# ---------------------------------------------------------------------------------------------
# Compiled table operations. Arguments: the table's base address and scalars only.


@njit(cache=True, nogil=True)
def _hdr(base, word):
    return load_acquire(base + 8 * word)


@njit(cache=True, nogil=True)
def _word(base, slot, word):
    """Address of `word` of `slot`."""
    return base + 8 * (HEADER_WORDS + slot * SLOT_WORDS + word)


@njit(cache=True, nogil=True)
def _home(key, mask):
    """First probe slot: murmur3's 64-bit finalizer, so sequential account keys spread too."""
    h = np.uint64(key)
    h ^= h >> np.uint64(33)
    h *= np.uint64(0xFF51AFD7ED558CCD)
    h ^= h >> np.uint64(33)
    h *= np.uint64(0xC4CEB9FE1A85EC53)
    h ^= h >> np.uint64(33)
    return np.int64(h & np.uint64(mask))


@njit(cache=True, nogil=True)
def _window(now_ms, interval_ms):
    return (now_ms // interval_ms) & WINDOW_MASK


@njit(cache=True, nogil=True)
def _age(tag, window):
    """Windows from `window` to `tag`, modulo 2**31 (negative: tag is older)."""
    d = (tag - window) & WINDOW_MASK
    if d > WINDOW_MASK >> 1:
        d -= WINDOW_MASK + 1
    return d


@njit(cache=True, nogil=True)
def _count_now(word, window):
    """The count of a counter word as seen in `window`: 0 if its window ended."""
    count = word & COUNT_MAX
    if count == 0 or _age(word >> WINDOW_SHIFT, window) < 0:
        return 0
    return count


@njit(cache=True, nogil=True)
def _reclaimable(base, slot, now_ms, kinds):
    """The claimed_ms of `slot` if it may be reclaimed (every counter stale, ban clean, claimed
    CLAIM_GRACE_MS ago), else 0."""
    claimed = load_acquire(_word(base, slot, SLOT_CLAIMED_MS))
    if claimed == 0 or now_ms < claimed + CLAIM_GRACE_MS:
        return 0
    for k in range(kinds):
        w = load_acquire(_word(base, slot, SLOT_COUNTERS + k))
        if _count_now(w, _window(now_ms, _hdr(base, H_INTERVAL_MS + k))) != 0:
            return 0
    ban = load_acquire(_word(base, slot, SLOT_BAN))
    if ban != 0 and now_ms < (ban & BAN_UNTIL_MASK) + OFFENSES_FORGOTTEN_AFTER_MS:
        return 0
    return claimed


@njit(cache=True, nogil=True)
def _locate(base, key, now_ms, claim):
    """The slot of `key`. Absent: with `claim`, claims the first empty or reclaimable probe slot;
    without, returns -1 if there is one. No slot to be had: the overflow slot (`capacity`)."""
    cap = _hdr(base, H_CAPACITY)
    if key <= 0:
        return cap
    probe = _hdr(base, H_PROBE_LIMIT)
    kinds = _hdr(base, H_KINDS)
    mask = cap - 1
    home = _home(key, mask)
    for p in range(probe):  # find
        s = (home + p) & mask
        k = load_acquire(_word(base, s, SLOT_KEY))
        if k == key:
            return s
        if k == 0:
            break
    stamp = max(now_ms, 1)
    for p in range(probe):  # claim
        s = (home + p) & mask
        addr = _word(base, s, SLOT_KEY)
        claimed_addr = _word(base, s, SLOT_CLAIMED_MS)
        k = load_acquire(addr)
        for _ in range(_RETRIES):
            if k == key:
                return s
            if k == 0:
                if not claim:
                    return -1
                k = compare_exchange_seqcst(addr, 0, key)
                if k == 0:
                    compare_exchange_seqcst(claimed_addr, 0, stamp)
                    return s
                continue
            claimed = _reclaimable(base, s, now_ms, kinds)
            if claimed == 0:
                break
            if not claim:
                return -1
            if compare_exchange_seqcst(claimed_addr, claimed, stamp) != claimed:
                break  # another process is reclaiming it
            found = compare_exchange_seqcst(addr, k, key)
            if found == k or found == key:
                return s
            k = found
    if claim:
        fetch_add_seqcst(base + 8 * H_OVERFLOWS, 1)
    return cap


@njit(cache=True, nogil=True)
def _kept(base, key, slot):
    """After an add at `slot`: it still holds `key` and no earlier probe slot does."""
    cap = _hdr(base, H_CAPACITY)
    if slot == cap:
        return True
    if load_acquire(_word(base, slot, SLOT_KEY)) != key:
        return False
    mask = cap - 1
    s = _home(key, mask)
    while s != slot:
        if load_acquire(_word(base, s, SLOT_KEY)) == key:
            return False
        s = (s + 1) & mask
    return True


@njit(cache=True, nogil=True)
def _add_at(base, slot, kind, weight, now_ms):
    """Add `weight` to the current window of counter `kind` of `slot`; the count after."""
    window = _window(now_ms, _hdr(base, H_INTERVAL_MS + kind))
    weight = min(max(weight, 0), COUNT_MAX)
    addr = _word(base, slot, SLOT_COUNTERS + kind)
    old = load_acquire(addr)
    while True:
        count = old & COUNT_MAX
        tag = old >> WINDOW_SHIFT
        if count == 0 or _age(tag, window) < 0:
            count = 0
            tag = window
        count = min(count + weight, COUNT_MAX)
        found = compare_exchange_seqcst(addr, old, (tag << WINDOW_SHIFT) | count)
        if found == old:
            return count
        old = found


@njit(cache=True, nogil=True)
def _peek_at(base, slot, kind, now_ms):
    window = _window(now_ms, _hdr(base, H_INTERVAL_MS + kind))
    return _count_now(load_acquire(_word(base, slot, SLOT_COUNTERS + kind)), window)


@njit(cache=True, nogil=True)
def _banned_until_at(base, slot, now_ms):
    until = load_acquire(_word(base, slot, SLOT_BAN)) & BAN_UNTIL_MASK
    return until if until > now_ms else 0


@njit(cache=True, nogil=True)
def _ban(base, slot, now_ms):
    """Ban the IP of `slot` from now_ms (unless it is banned already); its banned_until_ms."""
    addr = _word(base, slot, SLOT_BAN)
    old = load_acquire(addr)
    while True:
        until = old & BAN_UNTIL_MASK
        if until > now_ms:
            return until
        offenses = old >> OFFENSES_SHIFT
        if now_ms >= until + OFFENSES_FORGOTTEN_AFTER_MS:
            offenses = 0
        offenses = min(offenses + 1, OFFENSES_MAX)
        duration = BAN_MAX_MS
        if offenses <= 24:
            duration = min(BAN_MIN_MS << (offenses - 1), BAN_MAX_MS)
        until = min(now_ms + duration, BAN_UNTIL_MASK)
        found = compare_exchange_seqcst(addr, old, (offenses << OFFENSES_SHIFT) | until)
        if found == old:
            return until
        old = found


@njit(cache=True, nogil=True)
def _refuse_at(base, slot, now_ms, refusals_before_ban):
    """Count a 429 to the IP of `slot`; ban it on the refusal past the threshold. Returns
    banned_until_ms, 0 if not banned."""
    if slot == _hdr(base, H_CAPACITY):
        return 0
    n = _add_at(base, slot, REFUSALS, 1, now_ms)
    if n == refusals_before_ban + 1:
        return _ban(base, slot, now_ms)
    return _banned_until_at(base, slot, now_ms)


@njit(cache=True, nogil=True)
def _valid_kind(base, kind):
    return 0 <= kind < _hdr(base, H_KINDS)


@njit(cache=True, nogil=True)
def rt_init(base, capacity, probe_limit, n_words):
    """Format `n_words` words at `base`: zero, header, overflow slot; the magic last (release)."""
    for i in range(n_words):
        store_relaxed(base + 8 * i, 0)
    store_relaxed(base + 8 * H_LAYOUT_VERSION, LAYOUT_VERSION)
    store_relaxed(base + 8 * H_CAPACITY, capacity)
    store_relaxed(base + 8 * H_PROBE_LIMIT, probe_limit)
    store_relaxed(base + 8 * H_SLOT_WORDS, SLOT_WORDS)
    store_relaxed(base + 8 * H_KINDS, N_KINDS)
    for k in range(N_KINDS):
        store_relaxed(base + 8 * (H_INTERVAL_MS + k), INTERVALS_MS[k])
    store_relaxed(_word(base, capacity, SLOT_KEY), OVERFLOW_KEY)
    store_release(base + 8 * H_MAGIC, MAGIC)


@njit(cache=True, nogil=True)
def rt_header(base):
    """(magic, layout_version, capacity, probe_limit, slot_words, kinds)."""
    return (_hdr(base, H_MAGIC), _hdr(base, H_LAYOUT_VERSION), _hdr(base, H_CAPACITY),
            _hdr(base, H_PROBE_LIMIT), _hdr(base, H_SLOT_WORDS), _hdr(base, H_KINDS))


@njit(cache=True, nogil=True)
def rt_word(base, index):
    """Word `index` of the table, acquire load (tests, inspector)."""
    return load_acquire(base + 8 * index)


@njit(cache=True, nogil=True)
def rt_slot_of(base, key, now_ms, claim):
    return _locate(base, key, now_ms, claim)


@njit(cache=True, nogil=True)
def rt_add(base, kind, key, weight, now_ms):
    """Add `weight` to (kind, key)'s current window; the count in that window after."""
    if not _valid_kind(base, kind):
        return 0
    count = 0
    for _ in range(_RETRIES):
        slot = _locate(base, key, now_ms, True)
        count = _add_at(base, slot, kind, weight, now_ms)
        if _kept(base, key, slot):
            break
    return count


@njit(cache=True, nogil=True)
def rt_peek(base, kind, key, now_ms):
    if not _valid_kind(base, kind):
        return 0
    slot = _locate(base, key, now_ms, False)
    return 0 if slot < 0 else _peek_at(base, slot, kind, now_ms)


@njit(cache=True, nogil=True)
def rt_note_refusal(base, key, now_ms, refusals_before_ban):
    slot = _locate(base, key, now_ms, True)
    return _refuse_at(base, slot, now_ms, refusals_before_ban)


@njit(cache=True, nogil=True)
def rt_banned_until(base, key, now_ms):
    slot = _locate(base, key, now_ms, False)
    if slot < 0 or slot == _hdr(base, H_CAPACITY):
        return 0
    return _banned_until_at(base, slot, now_ms)


@njit(cache=True, nogil=True)
def rt_offenses(base, key, now_ms):
    """Bans of `key` that still count (forgotten after OFFENSES_FORGOTTEN_AFTER_MS clean)."""
    slot = _locate(base, key, now_ms, False)
    if slot < 0 or slot == _hdr(base, H_CAPACITY):
        return 0
    ban = load_acquire(_word(base, slot, SLOT_BAN))
    if now_ms >= (ban & BAN_UNTIL_MASK) + OFFENSES_FORGOTTEN_AFTER_MS:
        return 0
    return ban >> OFFENSES_SHIFT


@njit(cache=True, nogil=True)
def _end(now_ms, interval_ms):
    return (now_ms // interval_ms + 1) * interval_ms


@njit(cache=True, nogil=True)
def rt_request(base, key, weight, now_ms, limit_weight, limit_raw, refusals_before_ban):
    """One request from IP `key`: (status, used_weight, raw_requests, until_ms, limit_kind).
    418 while banned (nothing counted); else adds `weight` and one raw request; over a limit:
    429 (refusal noted, which may ban: 418). until_ms: when the client may retry."""
    slot = _locate(base, key, now_ms, True)
    until = 0
    if slot != _hdr(base, H_CAPACITY):
        until = _banned_until_at(base, slot, now_ms)
    if until != 0:
        return 418, _peek_at(base, slot, REQUEST_WEIGHT, now_ms), _peek_at(base, slot, RAW_REQUESTS, now_ms), until, -1
    used = raw = 0
    for _ in range(_RETRIES):
        used = _add_at(base, slot, REQUEST_WEIGHT, weight, now_ms)
        raw = _add_at(base, slot, RAW_REQUESTS, 1, now_ms)
        if _kept(base, key, slot):
            break
        slot = _locate(base, key, now_ms, True)
    kind = -1
    if used > limit_weight:
        kind = REQUEST_WEIGHT
        until = _end(now_ms, _hdr(base, H_INTERVAL_MS + REQUEST_WEIGHT))
    if raw > limit_raw:
        end = _end(now_ms, _hdr(base, H_INTERVAL_MS + RAW_REQUESTS))
        if end > until:
            kind = RAW_REQUESTS
            until = end
    if kind < 0:
        return 200, used, raw, 0, -1
    banned = _refuse_at(base, slot, now_ms, refusals_before_ban)
    if banned != 0:
        return 418, used, raw, banned, kind
    return 429, used, raw, until, kind


@njit(cache=True, nogil=True)
def rt_order(base, key, now_ms, limit_10s, limit_1d):
    """One new order of account `key`: (status, orders_10s, orders_1d, until_ms, limit_kind).
    An order refused by the 10-second limit does not count towards the day."""
    orders_10s = orders_1d = 0
    slot = _hdr(base, H_CAPACITY)
    for _ in range(_RETRIES):
        slot = _locate(base, key, now_ms, True)
        orders_10s = _add_at(base, slot, ORDERS_10S, 1, now_ms)
        if orders_10s > limit_10s:
            orders_1d = _peek_at(base, slot, ORDERS_1D, now_ms)
        else:
            orders_1d = _add_at(base, slot, ORDERS_1D, 1, now_ms)
        if _kept(base, key, slot):
            break
    if orders_10s > limit_10s:
        return 429, orders_10s, orders_1d, _end(now_ms, _hdr(base, H_INTERVAL_MS + ORDERS_10S)), ORDERS_10S
    if orders_1d > limit_1d:
        return 429, orders_10s, orders_1d, _end(now_ms, _hdr(base, H_INTERVAL_MS + ORDERS_1D)), ORDERS_1D
    return 200, orders_10s, orders_1d, 0, -1


@njit(cache=True, nogil=True)
def rt_connection(base, key, now_ms, limit, refusals_before_ban):
    """One WebSocket connection attempt from IP `key`: (status, attempts, until_ms, limit_kind).
    418 while banned; over the limit 429 (refusal noted, which may ban: 418)."""
    slot = _locate(base, key, now_ms, True)
    if slot != _hdr(base, H_CAPACITY):
        until = _banned_until_at(base, slot, now_ms)
        if until != 0:
            return 418, _peek_at(base, slot, WS_CONNECTIONS, now_ms), until, -1
    n = 0
    for _ in range(_RETRIES):
        n = _add_at(base, slot, WS_CONNECTIONS, 1, now_ms)
        if _kept(base, key, slot):
            break
        slot = _locate(base, key, now_ms, True)
    if n <= limit:
        return 200, n, 0, -1
    banned = _refuse_at(base, slot, now_ms, refusals_before_ban)
    if banned != 0:
        return 418, n, banned, WS_CONNECTIONS
    return 429, n, _end(now_ms, _hdr(base, H_INTERVAL_MS + WS_CONNECTIONS)), WS_CONNECTIONS


# ---------------------------------------------------------------------------------------------
# Python API


def _check_array(array: np.ndarray) -> int:
    if not isinstance(array, np.ndarray) or array.dtype != np.int64 or array.ndim != 1:
        raise ValueError("a rate table needs a 1-D native int64 array")
    if not array.flags.c_contiguous or not array.flags.writeable:
        raise ValueError("a rate table needs a contiguous, writeable array")
    base = array.ctypes.data
    if base % 8:
        raise ValueError("a rate table needs 8-byte aligned words")
    return base


class RateTable:
    """The counters of one instance over an int64 array (see the module's drawing).

    Times are the caller's wall clock in ms (`now_ms`); keys come from ip_key / account_key.
    Every method is one compiled call; none raises for a full table (see the overflow slot)."""

    def __init__(self, array: np.ndarray):
        base = _check_array(array)
        if len(array) < HEADER_WORDS:
            raise ValueError("array shorter than a rate table header")
        magic, version, capacity, probe_limit, slot_words, kinds = rt_header(base)
        if magic != MAGIC:
            raise ValueError("not an initialised rate table (magic)")
        if version != LAYOUT_VERSION or slot_words != SLOT_WORDS or kinds != N_KINDS:
            raise ValueError(f"rate table layout {version}/{slot_words}/{kinds}, "
                             f"this code {LAYOUT_VERSION}/{SLOT_WORDS}/{N_KINDS}")
        if tuple(rt_word(base, H_INTERVAL_MS + k) for k in range(N_KINDS)) != INTERVALS_MS:
            raise ValueError("rate table intervals differ from this code's KINDS")
        if len(array) < self.words_needed(capacity):
            raise ValueError(f"array of {len(array)} words; the table needs {self.words_needed(capacity)}")
        self.array = array  # keeps the mapping alive while _base is used
        self._base = base
        self.capacity = capacity
        self.probe_limit = probe_limit
        self.overflow_slot = capacity

    @staticmethod
    def words_needed(capacity: int) -> int:
        """int64 words of a table of `capacity` slots (a power of two), header included."""
        if capacity < 1 or capacity & (capacity - 1):
            raise ValueError(f"capacity={capacity} (a power of two)")
        return HEADER_WORDS + (capacity + 1) * SLOT_WORDS

    @classmethod
    def init(cls, array: np.ndarray, capacity: int, probe_limit: int | None = None) -> RateTable:
        """Format `array` (before any other process uses it) and attach to it."""
        n = cls.words_needed(capacity)
        base = _check_array(array)
        if len(array) < n:
            raise ValueError(f"array of {len(array)} words; the table needs {n}")
        probe_limit = min(capacity, DEFAULT_PROBE_LIMIT) if probe_limit is None else probe_limit
        if not 1 <= probe_limit <= capacity:
            raise ValueError(f"probe_limit={probe_limit} (1..capacity)")
        rt_init(base, capacity, probe_limit, n)
        return cls(array)

    @property
    def address(self) -> int:
        """Base address, for compiled callers of the rt_* functions."""
        return self._base

    def add(self, kind: int, key: int, weight: int, now_ms: int) -> int:
        """Add `weight` to (kind, key)'s window containing now_ms; the count in it after."""
        if not 0 <= kind < N_KINDS:
            raise ValueError(f"kind={kind}")
        return rt_add(self._base, kind, key, weight, now_ms)

    def peek(self, kind: int, key: int, now_ms: int) -> int:
        """The count of (kind, key)'s window containing now_ms (0 if it rolled)."""
        if not 0 <= kind < N_KINDS:
            raise ValueError(f"kind={kind}")
        return rt_peek(self._base, kind, key, now_ms)

    def slot_of(self, key: int, now_ms: int, claim: bool = True) -> int:
        """The slot of `key` (claiming one if `claim`); `overflow_slot` when the table has none
        for it; -1 if absent and not claimed."""
        return rt_slot_of(self._base, key, now_ms, claim)

    def note_refusal(self, ip_key: int, now_ms: int, refusals_before_ban: int = REFUSALS_BEFORE_BAN) -> int:
        """Count a 429 answered to `ip_key`; bans it on the refusal past the threshold. Returns
        its banned_until_ms, 0 if not banned. (Limiter's checks call it themselves.)"""
        return rt_note_refusal(self._base, ip_key, now_ms, refusals_before_ban)

    def banned_until(self, ip_key: int, now_ms: int) -> int:
        """End of `ip_key`'s ban (ms), 0 if not banned at now_ms."""
        return rt_banned_until(self._base, ip_key, now_ms)

    def offenses(self, ip_key: int, now_ms: int) -> int:
        return rt_offenses(self._base, ip_key, now_ms)

    @property
    def overflows(self) -> int:
        return rt_word(self._base, H_OVERFLOWS)

    def slot_keys(self) -> list[int]:
        """Key word of every hashed slot (0: empty), in slot order."""
        return [rt_word(self._base, HEADER_WORDS + s * SLOT_WORDS + SLOT_KEY) for s in range(self.capacity)]


@dataclass(frozen=True, slots=True)
class Limits:
    """The configured limits; defaults are Binance's (module docstring for the sources)."""

    request_weight: int = 6_000      # REQUEST_WEIGHT per IP per 1 MINUTE
    raw_requests: int = 61_000       # RAW_REQUESTS per IP per 5 MINUTE
    orders_10s: int = 50             # ORDERS per account per 10 SECOND
    orders_1d: int = 160_000         # ORDERS per account per 1 DAY
    ws_connections: int = 300        # CONNECTIONS (attempts) per IP per 5 MINUTE
    refusals_before_ban: int = REFUSALS_BEFORE_BAN

    def limit(self, kind: int) -> int:
        return self.refusals_before_ban if kind == REFUSALS else getattr(self, KINDS[kind].name)

    def rate_limits(self) -> list[dict]:
        """exchangeInfo's `rateLimits` entries (REFUSALS is ours, not advertised)."""
        return [{"rateLimitType": k.rate_limit_type, "interval": k.interval, "intervalNum": k.interval_num,
                 "limit": self.limit(i)} for i, k in enumerate(KINDS) if i != REFUSALS]


@dataclass(frozen=True, slots=True)
class Verdict:
    allowed: bool
    status: int             # 200, 429 (over a limit), 418 (IP banned)
    used_weight: int        # REQUEST_WEIGHT in the current minute (X-MBX-USED-WEIGHT-1M); 0 if not a request
    orders_10s: int         # X-MBX-ORDER-COUNT-10S; 0 if not an order
    orders_1d: int          # X-MBX-ORDER-COUNT-1D; 0 if not an order
    retry_after_s: int      # Retry-After for 429/418; 0 when allowed
    limit_kind: int = -1    # the kind whose limit refused it (KINDS index); -1 when allowed or banned
    banned_until_ms: int = 0
    ws_connections: int = 0  # connection attempts in the window; 0 if not a connection


class Limiter:
    """The edge's checks over a RateTable. Each check is one compiled call that counts the
    request and decides; a 429 it returns has already been noted as a refusal (do not call
    note_refusal again), and may have become the 418 that bans the IP."""

    def __init__(self, table: RateTable, limits: Limits = Limits()):
        self.table = table
        self.limits = limits

    def check_request(self, ip_key: int, weight: int, now_ms: int) -> Verdict:
        lim = self.limits
        status, used, _raw, until, kind = rt_request(self.table.address, ip_key, weight, now_ms, lim.request_weight,
                                                     lim.raw_requests, lim.refusals_before_ban)
        if status == 200:
            return Verdict(True, 200, used, 0, 0, 0)
        return Verdict(False, status, used, 0, 0, _seconds_until(until, now_ms), kind,
                       until if status == 418 else 0)

    def check_order(self, account_key: int, now_ms: int,
                    per_account_overrides: Mapping[int, Limits] | None = None) -> Verdict:
        """Count one new order; `per_account_overrides` maps account keys to their own Limits."""
        lim = self.limits
        if per_account_overrides:
            lim = per_account_overrides.get(account_key, lim)
        status, n10, n1d, until, kind = rt_order(self.table.address, account_key, now_ms, lim.orders_10s, lim.orders_1d)
        if status == 200:
            return Verdict(True, 200, 0, n10, n1d, 0)
        return Verdict(False, status, 0, n10, n1d, _seconds_until(until, now_ms), kind)

    def check_connection(self, ip_key: int, now_ms: int) -> Verdict:
        """Count one WebSocket connection attempt (its REQUEST_WEIGHT is check_request's)."""
        lim = self.limits
        status, n, until, kind = rt_connection(self.table.address, ip_key, now_ms, lim.ws_connections,
                                               lim.refusals_before_ban)
        if status == 200:
            return Verdict(True, 200, 0, 0, 0, 0, ws_connections=n)
        return Verdict(False, status, 0, 0, 0, _seconds_until(until, now_ms), kind,
                       until if status == 418 else 0, ws_connections=n)
