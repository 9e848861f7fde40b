"""The API keys an edge accepts: the journal's grants joined with the vault's key material.

Which keys exist, for which account and with which permissions is journaled (KEY_ADD /
KEY_REVOKE, ordered with trading, replayed, audited: accounts.Directory); what a request is
checked against (an HMAC secret, sealed at rest, or an Ed25519 public key) is in the vault
(vault.py), written before the KEY_ADD is sent. Every edge process applies the same records, so
a revocation takes effect in each as it applies the record: before it answers anything the
revoking command's answer depends on.

`KeyRing.get` answers from a table re-derived only when the directory's version moves (a
grant, a revocation, an account opened, suspended or resumed): a request costs one dict
lookup. A key is accepted when its grant is active, its vault entry names the same account
and hashes to the journaled SHA-256 (a vault edited behind the journal's back grants
nothing), and its account is open and not suspended; its security types are the key's
permissions within the account's.

Config accounts get one key each at the instance's first start (`config_keys`). With
`security.demo_keys` those are also handed out in `<data-dir>/demo-accounts.json` (mode 0600,
plaintext: for demos; production keys are issued by the admin API, whose answer shows a
secret once)."""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Callable, Iterator

import numpy as np
import orjson

from ganntec.edge.accounts import Directory, permission_names
from ganntec.edge.auth import ED25519, HMAC_SHA256, ApiKey
from ganntec.edge.vault import Vault, VaultError, api_key_sha256, load_ed25519_public
from ganntec.shm import records as R
from ganntec.shm.records import Permission, RecordType

HANDOUT_FILE = "demo-accounts.json"
CONFIG_ACTOR = "config"
# Permission bit -> the Binance security type it opens (rest-api.md "Request Security").
SECURITY_OF = ((Permission.TRADE, "TRADE"), (Permission.READ, "USER_DATA"), (Permission.USER_STREAM, "USER_STREAM"))
ALL_PERMISSIONS = int(Permission.TRADE | Permission.READ | Permission.USER_STREAM)


def security_types(bits: int) -> frozenset[str]:
    return frozenset(name for bit, name in SECURITY_OF if bits & bit)


def listen_secret(master_key: bytes) -> bytes:
    """The server-side secret an Ed25519 key's listen key is made from (it has no shared secret)."""
    return hmac.new(master_key, b"ganntec listen keys", hashlib.sha256).digest()


class KeyRing:
    def __init__(self, directory: Directory, vault: Vault, listen_secret_bytes: bytes,
                 log: Callable[[str], None] = print):
        self.directory, self.vault, self.log = directory, vault, log
        self._listen = listen_secret_bytes
        self._entries: dict = {}    # key_id -> VaultEntry
        self._material: dict[int, ApiKey] = {}  # key_id -> ApiKey as last derived (secret opened once)
        self._by_api_key: dict[str, ApiKey] = {}
        self._seen = -1
        self._refused: set[int] = set()  # grants already reported unusable

    @property
    def version(self) -> int:
        return self.directory.version

    def get(self, api_key: str) -> ApiKey | None:
        if self._seen != self.directory.version:
            self._sync()
        return self._by_api_key.get(api_key)

    def __iter__(self) -> Iterator[ApiKey]:
        if self._seen != self.directory.version:
            self._sync()
        return iter(list(self._by_api_key.values()))

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def entry(self, key_id: int):
        """The vault entry of a key (public fields), re-reading the vault if it is new."""
        if key_id not in self._entries:
            self._reload()
        return self._entries.get(key_id)

    def _reload(self) -> None:
        try:
            for e in self.vault.entries():
                self._entries.setdefault(e.key_id, e)
        except VaultError as exc:
            self.log(f"key vault: {exc}")

    def _sync(self) -> None:
        d = self.directory
        grants = [g for g in d.keys.values() if g.active]
        if any(g.key_id not in self._entries for g in grants):
            self._reload()
        table: dict[str, ApiKey] = {}
        for g in grants:
            acc = d.accounts.get(g.account_id)
            if acc is None or acc.suspended:
                continue
            key = self._key(g)
            if key is None:
                continue
            perms = security_types(g.permissions & acc.permissions)
            if perms != key.permissions:
                key = ApiKey(key.api_key, key.secret, key.account_id, perms, key.key_id, key.kind, key.networks,
                             key.public_key, key.expires_ms)
            table[key.api_key] = key
        self._by_api_key = table
        self._seen = d.version

    def _key(self, g) -> ApiKey | None:
        cached = self._material.get(g.key_id)
        if cached is not None:
            return cached
        e = self._entries.get(g.key_id)
        why = None
        if e is None:
            why = "no vault entry"
        elif e.account_id != g.account_id or api_key_sha256(e.api_key) != g.key_sha256:
            why = "the vault entry does not match the journal's grant"
        if why is None:
            try:
                networks = e.networks
                expires_ms = g.expires_ns // 1_000_000
                if e.kind == ED25519:
                    secret = hmac.new(self._listen, e.api_key.encode(), hashlib.sha256).hexdigest()
                    key = ApiKey(e.api_key, secret, g.account_id, security_types(g.permissions), g.key_id, ED25519,
                                 networks, load_ed25519_public(e.public_key), expires_ms)
                else:
                    key = ApiKey(e.api_key, self.vault.open_secret(e), g.account_id, security_types(g.permissions),
                                 g.key_id, HMAC_SHA256, networks, None, expires_ms)
            except (VaultError, ValueError) as exc:
                why = str(exc)
        if why is not None:
            if g.key_id not in self._refused:
                self._refused.add(g.key_id)
                self.log(f"API key id {g.key_id} of account {g.account_id} is not usable: {why}")
            return None
        self._material[g.key_id] = key
        return key


def key_record(rtype: RecordType, account_id: int, key_id: int, permissions: int, api_key: str, actor: str,
               expires_ns: int = 0) -> np.ndarray:
    r = R.empty(rtype)
    r["account_id"], r["key_id"], r["permissions"], r["expires_ns"] = account_id, key_id, permissions, expires_ns
    if api_key:
        r["key_sha256"] = np.frombuffer(api_key_sha256(api_key), np.uint8)
    r["actor"] = actor.encode("ascii")
    return r


def config_keys(vault: Vault, data_dir: str, account_ids, handout: bool, now_ms: int) -> tuple[list[np.ndarray], str]:
    """A first start's key for each configured account: vault entries and their KEY_ADD records
    (journaled with the funding); with `handout`, the keys also written to demo-accounts.json.
    Returns (records, the handout's path or "")."""
    recs, rows = [], []
    for account in account_ids:
        entry, secret = vault.add_hmac(account, permission_names(ALL_PERMISSIONS), [], CONFIG_ACTOR, now_ms)
        recs.append(key_record(RecordType.KEY_ADD, account, entry["key_id"], ALL_PERMISSIONS, entry["api_key"],
                               CONFIG_ACTOR))
        rows.append({"account": account, "api_key": entry["api_key"], "api_secret": secret})
    path = ""
    if handout and rows:
        path = os.path.join(os.path.abspath(data_dir), HANDOUT_FILE)
        tmp = f"{path}.tmp.{os.getpid()}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, orjson.dumps(rows, option=orjson.OPT_INDENT_2) + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    return recs, path


def handout(data_dir: str) -> tuple[str, list[dict]]:
    """The demo handout (path, rows) if there is one."""
    path = os.path.join(os.path.abspath(data_dir), HANDOUT_FILE)
    try:
        with open(path, "rb") as f:
            return path, orjson.loads(f.read())
    except FileNotFoundError:
        return path, []
