"""The API-key vault: the key MATERIAL of every account's API keys, in `<data_dir>/keys.vault`,
beside the journal, read by every edge process; HMAC secrets are encrypted at rest.

Two stores, two jobs:

* The journal decides WHICH keys exist and are active (KEY_ADD / KEY_REVOKE records, handled
  elsewhere, carrying key_id, account_id, permission bits and the SHA-256 of the api_key). It is
  append-only, replayed and copied around (backups, audits, replicas), so it must never carry a
  secret: nothing written there can be taken back. Validity, ordering and revocation are decided
  there, once, like every other state change.
* The vault holds the MATERIAL: the HMAC-SHA256 secret (sealed with AES-256-GCM under a master key
  kept outside the data directory) or the Ed25519 public key (not secret). It can be rewritten, so a
  secret can be re-sealed or dropped later, and losing it loses no history.

A key authenticates only when both agree: the journal says key_id is active for account A with
sha256(api_key) = H, and the vault entry key_id has account A and an api_key hashing to H. So a
vault entry written just before a crash (vault first, journal second) stays inert, and a revoked
key needs only a journal record. The AES-GCM AAD binds each sealed secret to its entry (key_id,
account_id, api_key), so someone who can write the file cannot move a secret to another entry.

File format (orjson, mode 0600; writes atomic and serialised across processes by an flock on
`keys.vault.lock`):

    {"version": 1, "entries": [{"key_id": 1, "account_id": 0, "api_key": "<64 [A-Za-z0-9]>",
      "kind": "HMAC_SHA256" | "ED25519", "permissions": ["TRADE", "READ", "USER_STREAM"],
      "ips": ["10.0.0.0/24", "192.0.2.7"], "label": "...", "created_ms": 1700000000000,
      "sealed": "<base64 nonce(12) || ciphertext || tag(16)>"      (HMAC_SHA256 only)
      "public_key": "-----BEGIN PUBLIC KEY-----\\n..."}]}           (ED25519 only)

Entries are never removed, so key_id = max + 1 never reuses an id.

Ed25519 request signatures follow binance-spot-api-docs rest-api.md "SIGNED Endpoint Examples for
POST /api/v3/order" > "Ed25519 Keys": the payload is the one HMAC signs (query string + body as
sent, without `signature`), the signature is the standard base64 of the 64-byte Ed25519 signature,
case-sensitive. Nothing is kept at module level: the parsed public key is cached on its entry."""

from __future__ import annotations

import base64
import binascii
import fcntl
import hashlib
import ipaddress
import os
import re
import secrets
import stat
import string
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import orjson
from cryptography.exceptions import InvalidSignature, InvalidTag, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ganntec.edge.accounts import PERMISSION_NAMES
from ganntec.edge.auth import ED25519, HMAC_SHA256, address_in, parse_network

__all__ = [
    "FILE_NAME", "LOCK_NAME", "VERSION", "MASTER_KEY_ENV", "KINDS", "HMAC_SHA256", "ED25519", "PERMISSIONS",
    "VaultError", "VaultEntry", "Vault", "load_master_key", "create_master_key", "api_key_sha256",
    "normalise_ips", "load_ed25519_public", "verify_ed25519", "sign_ed25519",
]

FILE_NAME = "keys.vault"
LOCK_NAME = FILE_NAME + ".lock"
VERSION = 1
MASTER_KEY_ENV = "GANNTEC_MASTER_KEY"
KINDS = (HMAC_SHA256, ED25519)  # (the names auth.ApiKey signs with)
PERMISSIONS = tuple(name for name, _ in PERMISSION_NAMES)  # canonical order, also the stored order
MAX_LABEL = 64

_ALPHABET = string.ascii_letters + string.digits
_TOKEN_RE = re.compile(r"[A-Za-z0-9]{64}")
_HEX64_RE = re.compile(r"[0-9a-fA-F]{64}")
_NONCE = 12   # 96-bit GCM nonce, random per seal: 2^-32 collision odds only after ~2^32 seals
_TAG = 16
_MAX_PEM = 4096
_FIELDS = ("key_id", "account_id", "api_key", "kind", "permissions", "ips", "label", "created_ms")


class VaultError(ValueError):
    """A vault or master-key problem, as `field=value (reason)`; never carries key bytes."""


def _token() -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(64))


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


# --- master key -----------------------------------------------------------------------------------

def _decode_master(text: str) -> bytes | None:
    """32 key bytes from base64 or 64 hex digits, or None. Hex is tried first: base64 of 32 bytes
    is 44 characters, so a 64-character hex string cannot be one."""
    t = text.strip()
    if _HEX64_RE.fullmatch(t):
        return bytes.fromhex(t)
    try:
        raw = base64.b64decode(t, validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw if len(raw) == 32 else None


def load_master_key(path: str | None, env: Mapping[str, str]) -> bytes:
    """The 32-byte master key: from $GANNTEC_MASTER_KEY (base64 or 64 hex digits) if set, else from
    the file at `path` (base64 + newline), which must be a regular file of this user with no
    group/other permission bits. Raises VaultError; no message ever contains key bytes."""
    if MASTER_KEY_ENV in env:
        key = _decode_master(env[MASTER_KEY_ENV])
        if key is None:
            raise VaultError(f"{MASTER_KEY_ENV}=<hidden> (must be base64 of 32 bytes or 64 hex digits)")
        return key
    if not path:
        raise VaultError(f"vault.master_key_file=<unset> (no file given and {MASTER_KEY_ENV} is not set)")
    name = f"vault.master_key_file={path}"
    try:
        # O_NONBLOCK: a FIFO put in its place must not hang the start; fstat on the open fd, not a
        # stat of the path, so what is checked is what is read.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise VaultError(f"{name} (no such file)") from None
    except OSError as exc:
        raise VaultError(f"{name} ({exc.strerror})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise VaultError(f"{name} (not a regular file)")
        euid = os.geteuid()
        if st.st_uid != euid:
            raise VaultError(f"{name} (owned by uid {st.st_uid}: must be owned by uid {euid}, this process's user)")
        mode = stat.S_IMODE(st.st_mode)
        if mode & 0o077:
            raise VaultError(f"{name} (mode {mode:04o}: must be 0600)")
        data = os.read(fd, 4096)
    finally:
        os.close(fd)
    try:
        key = _decode_master(data.decode("ascii"))
    except UnicodeDecodeError:
        key = None
    if key is None:
        raise VaultError(f"{name} (must hold base64 of 32 bytes and a newline)")
    return key


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def create_master_key(path: str) -> None:
    """Write a new random master key to `path` (mode 0600), for a first start. Refuses to overwrite:
    replacing a master key makes every sealed secret unreadable."""
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, mode=0o700, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        raise VaultError(f"vault.master_key_file={path} (exists: refusing to overwrite a master key)") from None
    except OSError as exc:
        raise VaultError(f"vault.master_key_file={path} ({exc.strerror})") from None
    try:
        os.fchmod(fd, 0o600)  # the umask may have taken bits away; never more than 0600
        os.write(fd, base64.b64encode(os.urandom(32)) + b"\n")  # 45 bytes: one write on a regular file
        os.fsync(fd)
    finally:
        os.close(fd)
    _fsync_dir(parent)


# --- entries --------------------------------------------------------------------------------------

def api_key_sha256(api_key: str) -> bytes:
    """SHA-256 of the api_key text (32 bytes): what a journaled KEY_ADD record carries."""
    if not isinstance(api_key, str):
        raise TypeError("api_key must be str")
    return hashlib.sha256(api_key.encode("utf-8")).digest()


def _normalise_ip(text: object) -> str:
    if not isinstance(text, str):
        raise VaultError(f"ips={text!r} (must be text)")
    try:
        # host bits set ("10.0.0.7/24") are refused rather than guessed; a mapped entry is IPv4
        net = parse_network(text)
    except ValueError as exc:
        raise VaultError(f"ips={text!r} ({exc})") from None
    return str(net.network_address) if net.prefixlen == net.max_prefixlen else str(net)


def normalise_ips(ips: Iterable[str]) -> tuple[str, ...]:
    """IP addresses / CIDR networks in canonical text (a /32 or /128 as the bare address),
    duplicates dropped, order kept. Empty means unrestricted."""
    if isinstance(ips, str):  # one address given bare would otherwise be split into characters
        raise VaultError(f"ips={ips!r} (must be a list)")
    out: list[str] = []
    for ip in ips:
        n = _normalise_ip(ip)
        if n not in out:
            out.append(n)
    return tuple(out)


def _normalise_permissions(permissions: Iterable[str]) -> tuple[str, ...]:
    if isinstance(permissions, str):
        raise VaultError(f"permissions={permissions!r} (must be a list)")
    perms = list(permissions)
    bad = [p for p in perms if p not in PERMISSIONS]
    if bad:
        raise VaultError(f"permissions={bad!r} (each must be one of {', '.join(PERMISSIONS)})")
    if not perms:
        raise VaultError(f"permissions=[] (at least one of {', '.join(PERMISSIONS)})")
    return tuple(p for p in PERMISSIONS if p in perms)


def _aad(key_id: int, account_id: int, api_key: str) -> bytes:
    # Unambiguous: ints are digits and api_key is [A-Za-z0-9]{64}; the prefix separates it from
    # any other use of the master key.
    return f"ganntec.vault.v1|key_id={key_id}|account_id={account_id}|api_key={api_key}".encode("ascii")


@dataclass(frozen=True, repr=False)
class VaultEntry:
    """One key's public fields and material: the HMAC secret still sealed (open it with
    Vault.open_secret), or the Ed25519 public key (parsed once, cached on the entry).
    Validated and normalised on construction; repr shows neither material nor the full api_key."""

    key_id: int
    account_id: int
    api_key: str
    kind: str
    permissions: tuple[str, ...]
    ips: tuple[str, ...]
    label: str
    created_ms: int
    sealed: str | None = None
    public_key: str | None = None
    _public: Ed25519PublicKey | None = field(default=None, init=False, compare=False)
    # `ips` parsed: where the key may be used from (empty: anywhere; auth.address_in matches)
    networks: tuple = field(default=(), init=False, compare=False, repr=False)

    def __post_init__(self):
        who = f"key_id={self.key_id!r}"
        if not _is_int(self.key_id) or self.key_id <= 0:
            raise VaultError(f"{who} (must be an integer > 0)")
        if not _is_int(self.account_id) or self.account_id < 0:
            raise VaultError(f"{who}: account_id={self.account_id!r} (must be an integer >= 0)")
        if not isinstance(self.api_key, str) or not _TOKEN_RE.fullmatch(self.api_key):
            raise VaultError(f"{who}: api_key (must be 64 letters and digits)")
        if self.kind not in KINDS:
            raise VaultError(f"{who}: kind={self.kind!r} (must be one of {', '.join(KINDS)})")
        if not isinstance(self.label, str) or len(self.label) > MAX_LABEL or not self.label.isprintable():
            raise VaultError(f"{who}: label (must be printable text of at most {MAX_LABEL} characters)")
        if not _is_int(self.created_ms) or self.created_ms < 0:
            raise VaultError(f"{who}: created_ms={self.created_ms!r} (must be an integer >= 0)")
        try:
            perms = _normalise_permissions(self.permissions)
            ips = normalise_ips(self.ips)
        except VaultError as exc:
            raise VaultError(f"{who}: {exc}") from None
        object.__setattr__(self, "permissions", perms)
        object.__setattr__(self, "ips", ips)
        object.__setattr__(self, "networks", tuple(ipaddress.ip_network(i) for i in ips))
        if self.kind == HMAC_SHA256:
            if self.public_key is not None:
                raise VaultError(f"{who}: public_key (an HMAC_SHA256 key has none)")
            try:
                blob = base64.b64decode(self.sealed, validate=True) if isinstance(self.sealed, str) else b""
            except (binascii.Error, ValueError):
                blob = b""
            if len(blob) <= _NONCE + _TAG:
                raise VaultError(f"{who}: sealed (must be base64 of nonce, ciphertext and tag)")
        else:
            if self.sealed is not None:
                raise VaultError(f"{who}: sealed (an ED25519 key has no secret)")
            try:
                pub = load_ed25519_public(self.public_key)
            except VaultError as exc:
                raise VaultError(f"{who}: {exc}") from None
            object.__setattr__(self, "_public", pub)
            object.__setattr__(self, "public_key", _public_pem(pub))

    def __repr__(self) -> str:
        return (f"VaultEntry(key_id={self.key_id}, account_id={self.account_id}, "
                f"api_key='{self.api_key[:6]}…', kind={self.kind}, permissions={list(self.permissions)}, "
                f"ips={list(self.ips)}, label={self.label!r}, created_ms={self.created_ms})")

    @property
    def ed25519_public(self) -> Ed25519PublicKey:
        """The parsed public key (ED25519 entries), for verify_ed25519 on every request."""
        if self._public is None:
            raise VaultError(f"vault entry key_id={self.key_id} ({self.kind}: has no public key)")
        return self._public

    @property
    def api_key_sha256(self) -> bytes:
        return api_key_sha256(self.api_key)

    def allows_ip(self, addr: str) -> bool:
        """Whether a client address may use this key (no ips: any). False for an unparsable one."""
        return not self.networks or address_in(addr, self.networks)

    def public_dict(self) -> dict:
        """The entry without its sealed secret: what add_* return and a CLI may print."""
        d = {k: getattr(self, k) for k in _FIELDS}
        d["permissions"] = list(self.permissions)
        d["ips"] = list(self.ips)
        if self.public_key is not None:
            d["public_key"] = self.public_key
        return d

    def to_dict(self) -> dict:
        d = self.public_dict()
        if self.sealed is not None:
            d["sealed"] = self.sealed
        return d

    @classmethod
    def from_dict(cls, d: object) -> VaultEntry:
        if not isinstance(d, dict):
            raise VaultError("entry (must be an object)")
        material = "sealed" if d.get("kind") == HMAC_SHA256 else "public_key"
        missing = [k for k in (*_FIELDS, material) if k not in d]
        extra = sorted(set(d) - {*_FIELDS, "sealed", "public_key"})
        if missing or extra:
            raise VaultError(f"entry key_id={d.get('key_id')!r} (missing {missing}, unknown {extra})")
        for k in ("permissions", "ips"):
            if not isinstance(d[k], list):
                raise VaultError(f"entry key_id={d.get('key_id')!r}: {k} (must be a list)")
        return cls(**{k: d[k] for k in _FIELDS}, sealed=d.get("sealed"), public_key=d.get("public_key"))


# --- Ed25519 --------------------------------------------------------------------------------------

def _public_pem(pub: Ed25519PublicKey) -> str:
    return pub.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode("ascii")


def _key_type(key: object) -> str:
    """A short name for an unwanted key's type, for error messages."""
    from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, rsa, x448, x25519

    for cls, label in ((rsa.RSAPublicKey, "RSA"), (rsa.RSAPrivateKey, "RSA"), (dsa.DSAPublicKey, "DSA"),
                       (dsa.DSAPrivateKey, "DSA"), (ed448.Ed448PublicKey, "Ed448"), (ed448.Ed448PrivateKey, "Ed448"),
                       (x25519.X25519PublicKey, "X25519"), (x448.X448PublicKey, "X448")):
        if isinstance(key, cls):
            return label
    if isinstance(key, ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey):
        return f"EC {key.curve.name}"
    return type(key).__name__


def load_ed25519_public(pem: str | bytes) -> Ed25519PublicKey:
    """Parse a PEM Ed25519 public key (SubjectPublicKeyInfo, as Binance asks for), or raise
    VaultError. A private key is refused by name: it must never be handed to the server. Parsing
    costs tens of microseconds, so callers parse once per entry (VaultEntry.ed25519_public)."""
    if isinstance(pem, bytes):
        try:
            pem = pem.decode("ascii")
        except UnicodeDecodeError:
            raise VaultError("public_key_pem (not PEM text)") from None
    if not isinstance(pem, str) or not pem.strip():
        raise VaultError("public_key_pem (must be PEM text)")
    if len(pem) > _MAX_PEM:
        raise VaultError(f"public_key_pem ({len(pem)} characters: an Ed25519 PEM is about 113)")
    if "PRIVATE KEY-----" in pem:
        raise VaultError("public_key_pem (is a PRIVATE key: give only the public key; keep the private key secret)")
    if pem.count("-----BEGIN ") != 1:
        raise VaultError("public_key_pem (must hold exactly one PEM block, -----BEGIN PUBLIC KEY-----)")
    try:
        key = serialization.load_pem_public_key(pem.encode("ascii"))
    except (ValueError, UnsupportedAlgorithm, UnicodeEncodeError) as exc:
        raise VaultError(f"public_key_pem (not a PEM public key: {exc})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise VaultError(f"public_key_pem (an {_key_type(key)} key: must be Ed25519)")
    return key


def verify_ed25519(public_key: Ed25519PublicKey | str, payload: str, signature_b64: str) -> bool:
    """Whether `signature_b64` (standard base64 of a 64-byte Ed25519 signature, as it reads after
    URL-decoding) signs `payload`. Never raises for client input: a malformed, non-canonical or
    wrong signature is False. A bad `public_key` PEM (server data) raises VaultError.
    The base64 must be canonical (re-encodes to the same text) so one signature has one spelling."""
    pub = public_key if isinstance(public_key, Ed25519PublicKey) else load_ed25519_public(public_key)
    if not isinstance(signature_b64, str) or len(signature_b64) != 88 or not isinstance(payload, str):
        return False
    try:
        sig = base64.b64decode(signature_b64, validate=True)
        data = payload.encode("utf-8")
    except (binascii.Error, ValueError, UnicodeEncodeError):
        return False
    if len(sig) != 64 or base64.b64encode(sig).decode("ascii") != signature_b64:
        return False
    try:
        pub.verify(sig, data)
    except InvalidSignature:
        return False
    return True


def sign_ed25519(private_key: Ed25519PrivateKey | str | bytes, payload: str) -> str:
    """Base64 Ed25519 signature of `payload` (rest-api.md "Ed25519 Keys", Step 2), for tests and
    the CLI; percent-encode it when putting it in a request."""
    key = private_key
    if isinstance(key, str | bytes):
        raw = key.encode("ascii") if isinstance(key, str) else key
        try:
            key = serialization.load_pem_private_key(raw, password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
            raise VaultError(f"private_key_pem (not an unencrypted PEM private key: {exc})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise VaultError(f"private_key_pem (an {_key_type(key)} key: must be Ed25519)")
    return base64.b64encode(key.sign(payload.encode("utf-8"))).decode("ascii")


# --- the vault ------------------------------------------------------------------------------------

class Vault:
    """`<data_dir>/keys.vault` under one master key. Holds no open files and no plaintext: every
    read re-reads the file, every write takes the lock, re-reads, appends and replaces atomically,
    so several processes (and forks) can share it."""

    __slots__ = ("_dir", "_path", "_lock_path", "_aead")

    def __init__(self, data_dir: str, master_key: bytes):
        if not isinstance(master_key, bytes) or len(master_key) != 32:
            raise VaultError("master_key=<hidden> (must be 32 bytes)")
        self._dir = os.path.abspath(data_dir)
        self._path = os.path.join(self._dir, FILE_NAME)
        self._lock_path = os.path.join(self._dir, LOCK_NAME)
        self._aead = AESGCM(master_key)  # the only holder of the key bytes

    def __repr__(self) -> str:
        return f"Vault({self._path!r})"

    @property
    def path(self) -> str:
        return self._path

    # reading

    def entries(self) -> list[VaultEntry]:
        """All entries, re-read from the file (none if it does not exist); secrets stay sealed."""
        return self._read()

    def _read(self) -> list[VaultEntry]:
        name = f"vault={self._path}"
        try:
            with open(self._path, "rb") as f:
                raw = f.read()
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise VaultError(f"{name} ({exc.strerror})") from None
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise VaultError(f"{name} (not JSON: {exc})") from None
        if not isinstance(doc, dict) or doc.get("version") != VERSION or not isinstance(doc.get("entries"), list):
            raise VaultError(f"{name} (must be {{\"version\": {VERSION}, \"entries\": [...]}})")
        if set(doc) != {"version", "entries"}:
            raise VaultError(f"{name} (unknown fields {sorted(set(doc) - {'version', 'entries'})})")
        out: list[VaultEntry] = []
        ids: set[int] = set()
        keys: set[str] = set()
        for i, d in enumerate(doc["entries"]):
            try:
                e = VaultEntry.from_dict(d)
            except VaultError as exc:
                raise VaultError(f"{name} (entry {i}: {exc})") from None
            if e.key_id in ids or e.api_key in keys:
                raise VaultError(f"{name} (entry {i}: key_id={e.key_id} or its api_key appears twice)")
            ids.add(e.key_id)
            keys.add(e.api_key)
            out.append(e)
        return out

    def get(self, key_id: int) -> VaultEntry:
        for e in self._read():
            if e.key_id == key_id:
                return e
        raise VaultError(f"key_id={key_id} (no such key in {self._path})")

    def open_secret(self, entry: VaultEntry) -> str:
        """The HMAC secret of `entry`, decrypted. VaultError if the master key or the entry's
        fields (AAD) do not match what it was sealed with."""
        if entry.kind != HMAC_SHA256 or entry.sealed is None:
            raise VaultError(f"vault entry key_id={entry.key_id} ({entry.kind}: has no secret)")
        blob = base64.b64decode(entry.sealed)  # checked when the entry was built
        try:
            plain = self._aead.decrypt(blob[:_NONCE], blob[_NONCE:],
                                       _aad(entry.key_id, entry.account_id, entry.api_key))
        except InvalidTag:
            raise VaultError(f"vault entry key_id={entry.key_id} (cannot be decrypted with this master key)") from None
        return plain.decode("ascii")

    # writing

    def _seal(self, key_id: int, account_id: int, api_key: str, secret: str) -> str:
        nonce = os.urandom(_NONCE)
        ct = self._aead.encrypt(nonce, secret.encode("ascii"), _aad(key_id, account_id, api_key))
        return base64.b64encode(nonce + ct).decode("ascii")

    def _append(self, make: Callable[[int, str, list[VaultEntry]], VaultEntry]) -> VaultEntry:
        """Under the lock: read, build the new entry from (next key_id, fresh api_key, current
        entries), write everything back. The lock also covers the read, so two processes never
        pick the same key_id."""
        os.makedirs(self._dir, mode=0o700, exist_ok=True)
        lock = os.open(self._lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            current = self._read()
            used = {e.api_key for e in current}
            api_key = _token()
            while api_key in used:  # 62^64 makes this unreachable; cheap to be sure
                api_key = _token()
            entry = make(max((e.key_id for e in current), default=0) + 1, api_key, current)
            self._write([*current, entry])
            return entry
        finally:
            os.close(lock)  # releases the flock

    def _write(self, entries: list[VaultEntry]) -> None:
        data = orjson.dumps({"version": VERSION, "entries": [e.to_dict() for e in entries]},
                            option=orjson.OPT_INDENT_2) + b"\n"
        tmp = self._path + ".tmp"  # one writer at a time (the lock), so one fixed name suffices
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "wb") as f:
            os.fchmod(fd, 0o600)  # a leftover tmp keeps its old mode through O_TRUNC
            f.write(data)
            f.flush()
            os.fsync(fd)
        os.replace(tmp, self._path)
        _fsync_dir(self._dir)  # make the rename itself durable

    def add_hmac(self, account_id: int, permissions: Iterable[str], ips: Iterable[str], label: str,
                 now_ms: int) -> tuple[dict, str]:
        """A new HMAC-SHA256 key: (its public fields, its secret). The secret is returned only
        here; the vault keeps it sealed."""
        perms, nets = _normalise_permissions(permissions), normalise_ips(ips)
        secret = _token()

        def make(key_id: int, api_key: str, _current) -> VaultEntry:
            return VaultEntry(key_id, account_id, api_key, HMAC_SHA256, perms, nets, label, now_ms,
                              sealed=self._seal(key_id, account_id, api_key, secret))

        return self._append(make).public_dict(), secret

    def add_ed25519(self, account_id: int, public_key_pem: str, permissions: Iterable[str], ips: Iterable[str],
                    label: str, now_ms: int) -> dict:
        """A new Ed25519 key for the given PEM public key: its public fields (incl. the api_key)."""
        pem = _public_pem(load_ed25519_public(public_key_pem))
        perms, nets = _normalise_permissions(permissions), normalise_ips(ips)

        def make(key_id: int, api_key: str, _current) -> VaultEntry:
            return VaultEntry(key_id, account_id, api_key, ED25519, perms, nets, label, now_ms, public_key=pem)

        return self._append(make).public_dict()

    def copy_for_rotation(self, key_id: int, now_ms: int,
                          public_key_pem: str | None = None) -> tuple[dict, str] | dict:
        """A successor of key `key_id`: same account, permissions, ips and label, new key_id and
        api_key. HMAC: a new secret, returned like add_hmac. Ed25519: needs the NEW public key
        (the vault never has the private one), returned like add_ed25519. Revoking the old key
        is a journal record, not a vault change."""
        src = self.get(key_id)
        if src.kind == HMAC_SHA256:
            if public_key_pem is not None:
                raise VaultError(f"key_id={key_id} (HMAC_SHA256: rotation takes no public_key_pem)")
            return self.add_hmac(src.account_id, src.permissions, src.ips, src.label, now_ms)
        if public_key_pem is None:
            raise VaultError(f"key_id={key_id} (ED25519: rotation needs the new public_key_pem)")
        new = load_ed25519_public(public_key_pem)
        if _public_pem(new) == src.public_key:
            raise VaultError(f"key_id={key_id} (public_key_pem is the same key: rotation needs a new key pair)")
        return self.add_ed25519(src.account_id, public_key_pem, src.permissions, src.ips, src.label, now_ms)
