"""Admin authentication: the admin users file, password hashes, JWTs and the IP allow-list.

Pure: time is an argument (`now_s`, `now_ms`), so every decision here is testable with a fixed
clock. The one exception is the `now_ms=None` default of `AdminUsers.add` and `initial_admin`,
which stamps `created_ms` (informational only) from the wall clock for callers without one.

Users file `<data_dir>/admin-users.json`, mode 0600, replaced atomically:
    {"version": 1, "users": [{"name": ..., "scrypt": "<salt b64>$<n>$<r>$<p>$<hash b64>",
                              "created_ms": ...}]}

Tokens are HS256 JWTs signed with a key derived from the instance's master key
(`derive_signing_key`): a restart keeps issued tokens valid and there is no second secret file.
An access token lives 15 minutes, a refresh token 8 hours; a refresh token works once."""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import os
import re
import secrets
import string
import tempfile
import time

import jwt

from ganntec.edge.auth import address_in, parse_network  # (parse_network: admin/cli.py uses it from here)

USERS_FILE = "admin-users.json"
INITIAL_PASSWORD_FILE = "admin-initial-password"
USERS_VERSION = 1
NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,32}$")
MIN_PASSWORD_LEN = 12
INITIAL_PASSWORD_LEN = 24

# scrypt at n=2**14, r=8, p=1 (16 MiB, tens of milliseconds): the parameters recommended for
# interactive logins. Admin logins are rare and typed by people, so a few tens of milliseconds
# per attempt is unnoticed, while an offline guesser pays the same memory-hard cost per guess.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
SALT_BYTES, HASH_BYTES = 16, 32
# Verification reads the parameters from the stored hash; these bounds keep a damaged or hostile
# users file from asking for gigabytes.
_MAX_N, _MAX_R, _MAX_P = 2**20, 32, 16

ACCESS_TTL_S = 900
REFRESH_TTL_S = 8 * 3600
JWT_ALGORITHM = "HS256"
JWT_KEY_INFO = b"ganntec admin jwt"
MAX_USED_REFRESH = 100_000  # outstanding used refresh tokens remembered (each for at most 8 h)

# Hashed for unknown names so that `check` costs the same whether or not the name exists.
_DUMMY_HASH = (f"{base64.b64encode(bytes(SALT_BYTES)).decode()}${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}$"
               f"{base64.b64encode(bytes(HASH_BYTES)).decode()}")

class AdminAuthError(Exception):
    """A refused token: `code` is the API's error slug (token_expired, invalid_token, ...)."""

    def __init__(self, code: str, msg: str):
        super().__init__(f"{code}: {msg}")
        self.code = code
        self.msg = msg


class AdminUsersError(ValueError):
    """A refused change to the users file or an unreadable one, as `field=value (reason)`."""


class AllowListError(ValueError):
    """One or more `field[i]=value (reason)` problems, all reported at once."""

    def __init__(self, problems: list[str]):
        super().__init__("; ".join(problems))
        self.problems = problems


# --- passwords --------------------------------------------------------------------------------

def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    # maxmem: scrypt needs about 128*r*(n+p) bytes; OpenSSL's default cap (32 MiB) would refuse
    # the larger parameters a future upgrade may store.
    return hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, dklen=HASH_BYTES,
                          maxmem=128 * r * (n + p) + (1 << 20))


def hash_password(password: str, salt: bytes | None = None) -> str:
    """`<salt b64>$<n>$<r>$<p>$<hash b64>` of the password (a random 16-byte salt unless given)."""
    salt = secrets.token_bytes(SALT_BYTES) if salt is None else salt
    digest = _scrypt(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    return (f"{base64.b64encode(salt).decode()}${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}$"
            f"{base64.b64encode(digest).decode()}")


def verify_password(stored: str, password: str) -> bool:
    """Whether the password matches the stored hash (constant-time comparison of the digests).
    A malformed stored hash matches nothing."""
    try:
        salt_b64, n_s, r_s, p_s, digest_b64 = stored.split("$")
        n, r, p = int(n_s), int(r_s), int(p_s)
        salt = base64.b64decode(salt_b64, validate=True)
        want = base64.b64decode(digest_b64, validate=True)
    except (AttributeError, ValueError):
        return False
    if not (2 <= n <= _MAX_N and n & (n - 1) == 0 and 1 <= r <= _MAX_R and 1 <= p <= _MAX_P) or not want:
        return False
    got = hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, dklen=len(want),
                         maxmem=128 * r * (n + p) + (1 << 20))
    return hmac.compare_digest(got, want)


def check_password(password: str) -> None:
    """AdminUsersError unless the password is long enough for an admin user."""
    if not isinstance(password, str) or len(password) < MIN_PASSWORD_LEN:
        # never echo the password itself
        raise AdminUsersError(f"password (at least {MIN_PASSWORD_LEN} characters)")


def check_name(name: str) -> None:
    """AdminUsersError unless `name` fits NAME_RE."""
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise AdminUsersError(f"name={name!r} (1 to 32 of A-Z a-z 0-9 _ . -)")


def _now_ms(now_ms: int | None) -> int:
    return time.time_ns() // 1_000_000 if now_ms is None else int(now_ms)


def write_private(path: str, data: bytes) -> None:
    """Replace `path` atomically with `data`, mode 0600: a temporary file in the same directory,
    fsynced, renamed over it, then the directory fsynced so the rename survives a crash."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o600)  # mkstemp's 0600 already; explicit against surprises
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


# --- users ------------------------------------------------------------------------------------

class AdminUsers:
    """The admin users file in memory. Changes are kept until `save()`."""

    def __init__(self, path: str, users: list[dict] | None = None):
        self.path = path
        self._users: dict[str, dict] = {u["name"]: dict(u) for u in users or ()}

    @classmethod
    def load(cls, path: str) -> AdminUsers:
        """The users in `path`; none if the file does not exist."""
        try:
            with open(path, "rb") as f:
                doc = json.loads(f.read())
        except FileNotFoundError:
            return cls(path)
        except (OSError, ValueError) as exc:
            raise AdminUsersError(f"{path} (cannot read the admin users file: {exc})") from None
        if not isinstance(doc, dict) or doc.get("version") != USERS_VERSION or not isinstance(doc.get("users"), list):
            raise AdminUsersError(f"{path} (not an admin users file of version {USERS_VERSION})")
        seen = set()
        for i, u in enumerate(doc["users"]):
            if (not isinstance(u, dict) or not isinstance(u.get("name"), str) or not NAME_RE.fullmatch(u["name"])
                    or not isinstance(u.get("scrypt"), str) or u["name"] in seen):
                raise AdminUsersError(f"{path} (users[{i}] is not a valid admin user)")
            seen.add(u["name"])
        return cls(path, doc["users"])

    def names(self) -> list[str]:
        return list(self._users)

    def info(self) -> list[dict]:
        """Name and created_ms of each user (no hashes), for listing."""
        return [{"name": u["name"], "created_ms": u.get("created_ms")} for u in self._users.values()]

    def __contains__(self, name: object) -> bool:
        return name in self._users

    def __len__(self) -> int:
        return len(self._users)

    def add(self, name: str, password: str, now_ms: int | None = None) -> None:
        check_name(name)
        if name in self._users:
            raise AdminUsersError(f"name={name!r} (already an admin user)")
        check_password(password)
        self._users[name] = {"name": name, "scrypt": hash_password(password), "created_ms": _now_ms(now_ms)}

    def set_password(self, name: str, password: str) -> None:
        if name not in self._users:
            raise AdminUsersError(f"name={name!r} (no such admin user)")
        check_password(password)
        self._users[name]["scrypt"] = hash_password(password)

    def remove(self, name: str) -> None:
        if name not in self._users:
            raise AdminUsersError(f"name={name!r} (no such admin user)")
        if len(self._users) == 1:
            # an empty file would lock everyone out and is not replaced by initial_admin
            raise AdminUsersError(f"name={name!r} (the last admin user; add another first)")
        del self._users[name]

    def check(self, name: str, password: str) -> bool:
        """Whether name and password match. An unknown name is hashed against a dummy, so the
        time taken does not tell which names exist."""
        user = self._users.get(name) if isinstance(name, str) else None
        ok = verify_password(user["scrypt"] if user else _DUMMY_HASH, password if isinstance(password, str) else "")
        return ok and user is not None

    def save(self) -> None:
        doc = {"version": USERS_VERSION, "users": list(self._users.values())}
        write_private(self.path, json.dumps(doc, indent=1).encode() + b"\n")


def initial_admin(path: str, now_ms: int | None = None) -> str | None:
    """On a first start (no users file at `path`): create user "admin" with a random
    24-character password, write the password to `<dir>/admin-initial-password` (mode 0600,
    never overwriting one) and the users file. Returns the password file's path, or None when the
    users file exists already."""
    if os.path.exists(path):
        return None
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, mode=0o700, exist_ok=True)
    alphabet = string.ascii_letters + string.digits
    password = "".join(secrets.choice(alphabet) for _ in range(INITIAL_PASSWORD_LEN))
    pw_path = os.path.join(directory, INITIAL_PASSWORD_FILE)
    # The password file first: a crash before the users file leaves a stale password file that
    # the next start refuses loudly, rather than an admin whose password nobody knows.
    try:
        fd = os.open(pw_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise FileExistsError(f"{pw_path} exists but {path} does not (remove the stale password file)") from None
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o600)
            f.write(password.encode() + b"\n")
            f.flush()
            os.fsync(f.fileno())
        users = AdminUsers(path)
        users.add("admin", password, now_ms)
        users.save()
    except BaseException:
        os.unlink(pw_path)
        raise
    return pw_path


# --- tokens -----------------------------------------------------------------------------------

def derive_signing_key(master_key: bytes) -> bytes:
    """The JWT signing key: HKDF-SHA256 of the instance's master key (info "ganntec admin jwt"),
    so it is stable across restarts and unrelated to any other key derived from the master."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    if not isinstance(master_key, bytes) or len(master_key) < 16:
        raise ValueError("master_key (at least 16 bytes)")
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=JWT_KEY_INFO).derive(master_key)


class TokenIssuer:
    """Issues and verifies the admin API's HS256 tokens.

    Refresh tokens are single-use: the jti of each one used is remembered (with its expiry, after
    which the token is refused anyway) in this object. That memory is per process, which is
    enough because the one process serving the admin port issues and verifies every token; a
    restart forgets it, so a refresh token used before a restart works once more after it."""

    def __init__(self, signing_key: bytes, issuer: str = "ganntec", max_used: int = MAX_USED_REFRESH):
        if not isinstance(signing_key, bytes) or len(signing_key) < 32:
            raise ValueError("signing_key (at least 32 bytes)")
        self._key = signing_key
        self.issuer = issuer
        self._max_used = max_used
        self._used: dict[str, int] = {}  # jti of used refresh tokens -> their exp

    def _token(self, user: str, typ: str, now_s: int, ttl_s: int) -> str:
        claims = {"sub": user, "iat": now_s, "exp": now_s + ttl_s, "iss": self.issuer, "typ": typ,
                  "jti": secrets.token_urlsafe(16)}
        return jwt.encode(claims, self._key, algorithm=JWT_ALGORITHM)

    def issue(self, user: str, now_s: int) -> dict:
        """A new access and refresh token for `user`, issued at `now_s`."""
        now_s = int(now_s)
        return {"access_token": self._token(user, "access", now_s, ACCESS_TTL_S), "token_type": "Bearer",
                "expires_in": ACCESS_TTL_S,
                "refresh_token": self._token(user, "refresh", now_s, REFRESH_TTL_S),
                "refresh_expires_in": REFRESH_TTL_S}

    def _decode(self, token: str, typ: str, now_s: int) -> dict:
        if not isinstance(token, str):
            raise AdminAuthError("invalid_token", "no token")
        try:
            # PyJWT would check exp against time.time(); expiry is checked below against now_s.
            claims = jwt.decode(token, self._key, algorithms=[JWT_ALGORITHM], issuer=self.issuer,
                                options={"require": ["sub", "iat", "exp", "iss", "typ", "jti"],
                                         "verify_exp": False, "verify_iat": False, "verify_nbf": False})
        except jwt.InvalidTokenError as exc:
            raise AdminAuthError("invalid_token", f"token refused ({exc})") from None
        if claims["typ"] != typ:
            raise AdminAuthError("invalid_token", f"typ={claims['typ']!r} (wanted {typ!r})")
        exp = claims["exp"]
        if not isinstance(exp, int) or isinstance(exp, bool) or not isinstance(claims["sub"], str):
            raise AdminAuthError("invalid_token", "token refused (malformed claims)")
        if int(now_s) >= exp:
            raise AdminAuthError("token_expired", f"{typ} token expired")
        return claims

    def verify_access(self, token: str, now_s: int) -> str:
        """The user an access token was issued to, or AdminAuthError (token_expired, invalid_token)."""
        return self._decode(token, "access", now_s)["sub"]

    def refresh(self, refresh_token: str, now_s: int) -> dict:
        """A new token pair for the refresh token's user; the refresh token is spent."""
        now_s = int(now_s)
        claims = self._decode(refresh_token, "refresh", now_s)
        self._used = {j: e for j, e in self._used.items() if e > now_s}  # expired ones are refused anyway
        jti = claims["jti"]
        if jti in self._used:
            raise AdminAuthError("invalid_token", "refresh token already used")
        if len(self._used) >= self._max_used:
            # forgetting a used token would let it be replayed: refuse, a login still works
            raise AdminAuthError("invalid_token", "too many refreshes outstanding; log in again")
        self._used[jti] = claims["exp"]
        return self.issue(claims["sub"], now_s)


# --- IP allow-list ----------------------------------------------------------------------------

class AllowList:
    """The IP addresses and networks allowed to reach the admin port. An IPv4-mapped IPv6 address
    (a dual-stack socket's view of an IPv4 client) counts as its IPv4 address. An empty list
    allows nobody."""

    def __init__(self, entries: list[str], field: str = "admin.allow_ips"):
        problems, nets = [], []
        for i, entry in enumerate(entries):
            try:
                nets.append(parse_network(entry))
            except ValueError as exc:
                problems.append(f"{field}[{i}]={entry!r} ({exc})")
        if problems:
            raise AllowListError(problems)
        self.networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = tuple(nets)

    def allows(self, ip: str | None) -> bool:
        return address_in(ip, self.networks)
