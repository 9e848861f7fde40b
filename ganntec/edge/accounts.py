"""What the admin records say, as the edge needs it: accounts (status, permissions, limits),
API key grants, halted symbols, and the audit trail of admin commands.

A projection like the rest of EdgeState (state.py calls `apply` for each admin record in
journal order): it reads no clock, and every edge process builds the same one. Which API keys
an edge accepts follows from it (keys.py): a KEY_ADD grants a vault entry, a KEY_REVOKE ends
it, a suspended account's keys are refused; `version` changes whenever that answer may change,
so the key ring re-derives its table only then.

Refused admin commands (reason set; the echo keeps the command's header) change nothing. A
KILL_ACCOUNT the risk engine made itself (the daily loss limit) carries matching's source and
the reason DAILY_LOSS_LIMIT: it is applied (it is no refusal)."""

from __future__ import annotations

import collections
from dataclasses import dataclass

from ganntec.shm import records as R
from ganntec.shm.records import Permission, RecordType

T = RecordType
ADMIN_TYPES = frozenset(int(t) for t in (T.CREDIT, T.DEBIT, T.HALT_SYMBOL, T.RESUME_SYMBOL, T.KILL_ACCOUNT,
                                         T.UNKILL_ACCOUNT, T.KEY_ADD, T.KEY_REVOKE, T.ACCOUNT_OPEN,
                                         T.ACCOUNT_LIMITS, T.ADMIN_AUDIT))
KEEP_AUDIT = 10_000  # admin commands remembered for GET /admin/v1/audit (the journal keeps all)


def actor_text(raw: bytes) -> str:
    return raw.rstrip(b"\0").decode("ascii", "replace")


@dataclass(slots=True)
class Account:
    account_id: int
    killed: bool = False
    suspended: bool = False
    permissions: int = 0
    max_open_orders: int = 0
    maker_fee_e8: int = -1
    taker_fee_e8: int = -1
    max_order_notional_minor: int = 0
    daily_loss_limit_minor: int = 0
    orders_per_10s: int = 0   # 0: the instance's limit
    orders_per_day: int = 0
    kill_reason: int = 0

    @property
    def status(self) -> str:
        return "SUSPENDED" if self.suspended else "KILLED" if self.killed else "ACTIVE"


@dataclass(slots=True)
class KeyGrant:
    key_id: int
    account_id: int
    permissions: int
    expires_ns: int
    key_sha256: bytes
    granted_seq: int
    actor: str
    revoked_seq: int = 0

    @property
    def active(self) -> bool:
        return self.revoked_seq == 0


@dataclass(slots=True, frozen=True)
class AuditEntry:
    seq: int
    ts_ns: int
    type: str
    actor: str
    account_id: int
    symbol_id: int
    reason: int
    detail: dict


class Directory:
    def __init__(self):
        self.accounts: dict[int, Account] = {}
        self.keys: dict[int, KeyGrant] = {}
        self.halted: set[int] = set()
        self.audit: collections.deque[AuditEntry] = collections.deque(maxlen=KEEP_AUDIT)
        self.version = 0  # +1 whenever which keys are accepted may have changed

    def account(self, account_id: int) -> Account | None:
        return self.accounts.get(account_id)

    def keys_of(self, account_id: int) -> list[KeyGrant]:
        return [g for g in self.keys.values() if g.account_id == account_id]

    def apply(self, r) -> None:
        """One admin record (a namedtuple from state.decode)."""
        t = r.type
        by_admin = r.source < R.SOURCE_MATCHING
        if by_admin:
            self.audit.append(AuditEntry(r.seq, r.ts_ns, T(t).name, actor_text(r.actor), r.account_id, r.symbol_id,
                                         r.reason, _detail(r)))
        if r.reason and by_admin:
            return  # refused: nothing changed
        if t == T.ACCOUNT_OPEN or t == T.ACCOUNT_LIMITS:
            acc = self.accounts.get(r.account_id)
            if acc is None:
                acc = self.accounts[r.account_id] = Account(r.account_id)
            if t == T.ACCOUNT_OPEN:
                acc.killed = acc.suspended = False
                acc.permissions = r.permissions
            acc.max_open_orders, acc.maker_fee_e8, acc.taker_fee_e8 = r.max_open_orders, r.maker_fee_e8, r.taker_fee_e8
            acc.max_order_notional_minor, acc.daily_loss_limit_minor = r.max_order_notional_minor, r.daily_loss_limit_minor
            acc.orders_per_10s, acc.orders_per_day = r.orders_per_10s, r.orders_per_day
            self.version += 1
        elif t == T.KILL_ACCOUNT or t == T.UNKILL_ACCOUNT:
            acc = self.accounts.get(r.account_id)
            if acc is None:
                return
            acc.killed = t == T.KILL_ACCOUNT
            acc.kill_reason = r.reason if acc.killed else 0
            if by_admin and r.admin_flags & R.ADMIN_SUSPEND:
                acc.suspended = acc.killed
                self.version += 1
        elif t == T.HALT_SYMBOL:
            self.halted.add(r.symbol_id)
        elif t == T.RESUME_SYMBOL:
            self.halted.discard(r.symbol_id)
        elif t == T.KEY_ADD:
            self.keys[r.key_id] = KeyGrant(r.key_id, r.account_id, r.permissions, r.expires_ns, bytes(r.key_sha256),
                                           r.seq, actor_text(r.actor))
            self.version += 1
        elif t == T.KEY_REVOKE:
            grant = self.keys.get(r.key_id)
            if grant is not None and grant.account_id == r.account_id and grant.active:
                grant.revoked_seq = r.seq
                self.version += 1


def _detail(r) -> dict:
    t = r.type
    if t == T.ADMIN_AUDIT:
        return {"call": actor_text(r.call)}
    if t == T.CREDIT or t == T.DEBIT:
        return {"asset_id": r.asset_id, "amount_minor": r.amount_minor, "reference": actor_text(r.reference)}
    if t == T.KEY_ADD or t == T.KEY_REVOKE:
        return {"key_id": r.key_id, "permissions": permission_names(r.permissions)} if t == T.KEY_ADD else {
            "key_id": r.key_id}
    if t == T.ACCOUNT_OPEN or t == T.ACCOUNT_LIMITS:
        return {"permissions": permission_names(r.permissions), "max_open_orders": r.max_open_orders,
                "maker_fee_e8": r.maker_fee_e8, "taker_fee_e8": r.taker_fee_e8,
                "max_order_notional_minor": r.max_order_notional_minor,
                "daily_loss_limit_minor": r.daily_loss_limit_minor, "orders_per_10s": r.orders_per_10s,
                "orders_per_day": r.orders_per_day}
    if t == T.KILL_ACCOUNT or t == T.UNKILL_ACCOUNT:
        return {"suspend": bool(r.admin_flags & R.ADMIN_SUSPEND)}
    return {}


PERMISSION_NAMES = (("TRADE", Permission.TRADE), ("READ", Permission.READ), ("USER_STREAM", Permission.USER_STREAM))


def permission_names(bits: int) -> list[str]:
    return [name for name, bit in PERMISSION_NAMES if bits & bit]


def permission_bits(names) -> int:
    """["TRADE", "READ", ...] -> Permission bits; raises ValueError naming an unknown one."""
    known = dict(PERMISSION_NAMES)
    bits = 0
    for n in names:
        if n not in known:
            raise ValueError(f"unknown permission {n!r} (one of {', '.join(known)})")
        bits |= int(known[n])
    return bits
