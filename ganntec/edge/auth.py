"""Binance request security for the REST edge: API keys, HMAC-SHA256 signatures and timing
(binance-spot-api-docs rest-api.md "Request Security", "SIGNED Endpoint security", "Timing
security", "SIGNED Endpoint Examples for POST /api/v3/order" > "HMAC Keys"; error texts from
errors.md). Pure: the keys and the current time are inputs, nothing is held at module level.

Wiring (for the routes that will use it): pass the *raw* query string
(`request.rel_url.raw_query_string`; aiohttp's `request.query_string` is already decoded and
would not match the client's signature) and the body as received, decoded to str."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from urllib.parse import parse_qsl, unquote_plus

from ganntec.edge import errors as E

__all__ = [
    "API_KEY_HEADER", "SECURITY_TYPES", "SIGNED_TYPES", "DEFAULT_RECV_WINDOW_MS", "MAX_RECV_WINDOW_MS",
    "ApiKey", "KeyStore", "authenticate", "signature_payload", "sign", "timestamp_us", "recv_window_us",
    "check_timing", "ws_param_text", "authenticate_ws",
]

API_KEY_HEADER = "X-MBX-APIKEY"
# rest-api.md "Request Security": TRADE and USER_DATA are SIGNED; USER_STREAM needs only the key
# (its endpoints said "This request does not require `signature`").
SECURITY_TYPES = ("TRADE", "USER_DATA", "USER_STREAM")
SIGNED_TYPES = ("TRADE", "USER_DATA")
DEFAULT_RECV_WINDOW_MS = 5000   # "If recvWindow is not sent, it defaults to 5000 milliseconds."
MAX_RECV_WINDOW_MS = 60000      # "Maximum recvWindow is 60000 milliseconds."
AHEAD_LIMIT_US = 1_000_000      # pseudo-code: timestamp < serverTime + 1 second

# A millisecond timestamp has 13 digits until the year 2286, a microsecond one 16 since 2001:
# from this magnitude on the value is read as microseconds (the docs accept both units but do not
# say how they are told apart).
MICROS_FROM = 10**15
_TIMESTAMP_RE = re.compile(r"^[0-9]{1,20}$")
_RECV_WINDOW_RE = re.compile(r"^[0-9]{1,20}(\.[0-9]+)?$")


HMAC_SHA256, ED25519 = "HMAC_SHA256", "ED25519"


@dataclass(frozen=True)
class ApiKey:
    """One API key: its public name, how requests are signed with it (an HMAC secret, never in
    repr, or an Ed25519 public key), the account it acts for, the security types it may call
    (rest-api.md "Request Security": keys are scoped by type), the networks it may be used from
    (empty: any) and when it expires (ms; 0: never)."""

    api_key: str
    secret: str = field(repr=False)
    account_id: int
    permissions: frozenset[str] = frozenset(SECURITY_TYPES)
    key_id: int = 0
    kind: str = HMAC_SHA256
    networks: tuple = ()  # ipaddress networks
    public_key: object = field(default=None, repr=False)  # Ed25519PublicKey (kind ED25519)
    expires_ms: int = 0

    def __post_init__(self):
        perms = frozenset(self.permissions)
        if not self.api_key:
            raise ValueError("api_key must be non-empty")
        if self.kind == HMAC_SHA256 and not self.secret:
            raise ValueError("an HMAC key needs its secret")
        if self.kind == ED25519 and self.public_key is None:
            raise ValueError("an Ed25519 key needs its public key")
        if self.kind not in (HMAC_SHA256, ED25519):
            raise ValueError(f"kind={self.kind!r} (HMAC_SHA256 or ED25519)")
        if not perms <= set(SECURITY_TYPES):
            raise ValueError(f"unknown permissions {sorted(perms - set(SECURITY_TYPES))}")
        object.__setattr__(self, "permissions", perms)

    def allows(self, ip: str | None) -> bool:
        """May a request from `ip` use this key (its IP restriction)? No address known: only an
        unrestricted key."""
        return not self.networks or address_in(ip, self.networks)


_MAPPED_V4 = ipaddress.ip_network("::ffff:0:0/96")


def parse_network(entry: object) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """An address or a network (host bits clear) as a network, for API keys' IP restrictions
    and the admin allow-list alike; an IPv4-mapped IPv6 entry is the IPv4 network, since
    clients are matched unmapped (address_in). ValueError says why not."""
    if not isinstance(entry, str):
        raise ValueError("not an IP address or network")
    try:
        net = ipaddress.ip_network(entry.strip(), strict=True)
    except ValueError:
        try:
            loose = ipaddress.ip_network(entry.strip(), strict=False)
        except ValueError:
            raise ValueError("not an IP address or network") from None
        raise ValueError(f"host bits set; the network is {loose}") from None
    if net.version == 6 and net.prefixlen >= 96 and net.subnet_of(_MAPPED_V4):
        net = ipaddress.IPv4Network((int(net.network_address) & 0xFFFFFFFF, net.prefixlen - 96))
    return net


def address_in(ip: str | None, networks) -> bool:
    """Is the client address `ip` in one of `networks`? An IPv4-mapped IPv6 address (what a
    dual-stack socket reports for an IPv4 client) is matched as its IPv4 address, an IPv6 zone
    (fe80::1%eth0) is ignored; no address (a Unix socket) or an unparsable one: no."""
    if not isinstance(ip, str):
        return False
    try:
        addr = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return False
    if addr.version == 6 and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return any(addr.version == net.version and addr in net for net in networks)


class KeyStore:
    """A fixed set of keys, by api_key (tests, integrators). A running edge uses keys.KeyRing:
    the same `get`, over the journal's grants and the vault."""

    __slots__ = ("_by_key",)

    def __init__(self, keys: Iterable[ApiKey] = ()):
        by_key: dict[str, ApiKey] = {}
        for k in keys:
            if k.api_key in by_key:
                raise ValueError(f"duplicate api_key {k.api_key!r}")
            by_key[k.api_key] = k
        self._by_key = by_key

    version = 0  # a fixed set never changes (keys.KeyRing's moves)

    def get(self, api_key: str) -> ApiKey | None:
        return self._by_key.get(api_key)

    def __contains__(self, api_key: object) -> bool:
        return api_key in self._by_key

    def __len__(self) -> int:
        return len(self._by_key)

    def __iter__(self) -> Iterator[ApiKey]:
        return iter(self._by_key.values())


def sign(secret: str, payload: str) -> str:
    """HMAC-SHA256 of the payload with the secret, lowercase hex ("HMAC Keys", Step 2)."""
    return hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()


def _is_signature(segment: str) -> bool:
    return unquote_plus(segment.partition("=")[0]) == "signature"


def signature_payload(query_string: str, body: str) -> str:
    """What the client signed: "the query string concatenated without separator to the HTTP body"
    ("HMAC Keys"), each as sent (still percent-encoded), with the `signature` parameter itself
    taken out of whichever of the two carries it ("SIGNED Endpoint security": it may be sent in
    the query string or the request body)."""
    q = "&".join(s for s in query_string.split("&") if not _is_signature(s))
    b = "&".join(s for s in body.split("&") if not _is_signature(s))
    return q + b


def _parse(raw: str) -> dict[str, str]:
    if not raw:
        return {}
    if "%" in raw or "+" in raw:
        pairs = parse_qsl(raw, keep_blank_values=True)
    else:  # nothing to decode (what clients send for plain parameters): a plain split
        pairs = [(p[0], p[2]) for p in (part.partition("=") for part in raw.split("&") if part)]
    out = dict(pairs)
    if len(out) != len(pairs):  # the same name twice in one part
        raise E.duplicate_param()
    return out


def timestamp_us(raw: str | None) -> int:
    """`timestamp` in microseconds; it may be sent in milliseconds or microseconds (rest-api.md
    "General API Information", "Timing security")."""
    if not raw:
        raise E.mandatory_param("timestamp")
    if not _TIMESTAMP_RE.fullmatch(raw):
        raise E.mandatory_param("timestamp")  # -1102 covers "malformed"
    ts = int(raw)
    return ts if ts >= MICROS_FROM else ts * 1000


def recv_window_us(raw: str | None) -> int:
    """`recvWindow` in microseconds: milliseconds with up to three decimals, default 5000,
    at most 60000 ("Timing security")."""
    if raw is None:
        return DEFAULT_RECV_WINDOW_MS * 1000
    m = _RECV_WINDOW_RE.fullmatch(raw)
    if not m:
        raise E.mandatory_param("recvWindow")
    if m.group(1) and len(m.group(1)) - 1 > 3:
        raise E.too_much_precision("recvWindow")
    us = Decimal(raw) * 1000  # exact: at most three decimals
    if us > MAX_RECV_WINDOW_MS * 1000:
        raise E.param_above("recvWindow", str(MAX_RECV_WINDOW_MS))
    return int(us)


def check_timing(ts_us: int, window_us: int, now_ms: int) -> None:
    """The documented check ("Timing security" pseudo-code), to the microsecond:
    accept iff timestamp < serverTime + 1 second and serverTime - timestamp <= recvWindow.
    Binance repeats the second half just before the Matching Engine; callers may too."""
    server_us = now_ms * 1000
    if ts_us >= server_us + AHEAD_LIMIT_US:
        raise E.timestamp_ahead()
    if server_us - ts_us > window_us:
        raise E.timestamp_outside_window()


def _api_key(headers: Mapping[str, str], keys, need: str, ip: str | None, now_ms: int) -> ApiKey:
    # Header names are case-insensitive (aiohttp's CIMultiDict already is; a plain dict is not).
    values = [v for k, v in headers.items() if k.lower() == "x-mbx-apikey"]
    if len(values) != 1 or not values[0]:
        raise E.bad_api_key_format()  # errors.md -2014 BAD_API_KEY_FMT
    return _usable(keys.get(values[0]), need, ip, now_ms)


def _usable(key: ApiKey | None, need: str, ip: str | None, now_ms: int) -> ApiKey:
    # errors.md -2015 REJECTED_MBX_KEY: "Invalid API-key, IP, or permissions for action." One
    # answer for all four, so a caller cannot tell a revoked key from a wrong IP.
    if key is None or need not in key.permissions or not key.allows(ip) or (key.expires_ms and now_ms >= key.expires_ms):
        raise E.rejected_api_key()
    return key


def authenticate(method: str, query_string: str, body: str, headers: Mapping[str, str], keys,
                 now_ms: int, need: str, ip: str | None = None) -> tuple[ApiKey, dict[str, str]]:
    """Authorize one REST request for an endpoint of security type `need`; return its key and its
    parameters (name -> decoded value, `signature` removed), or raise BinanceError.

    `query_string` and `body` are as received (percent-encoded). The body is read only for
    POST/PUT/DELETE: "For GET endpoints, parameters must be sent as a query string" (rest-api.md
    "General Information on Endpoints"); the same section says a parameter sent in both is taken
    from the query string, so only a name repeated within one part is a duplicate (-1101).

    Order: key (-2014/-2015: unknown, revoked, expired, without the permission, or not from
    one of its networks: `ip` is the client's address), duplicates (-1101), signature and
    timestamp present (-1102), recvWindow (-1102/-1111), signature (-1022), timing (-1021)."""
    if need not in SECURITY_TYPES:
        raise ValueError(f"unknown security type {need!r}")
    key = _api_key(headers, keys, need, ip, now_ms)
    if method.upper() == "GET":
        body = ""
    params = _parse(body)
    params.update(_parse(query_string))  # the query string wins
    signature = params.pop("signature", None)
    if need not in SIGNED_TYPES:
        return key, params
    _verify(key, signature, signature_payload(query_string, body), params, now_ms)
    return key, params


def _verify(key: ApiKey, signature: str | None, payload: str, params: Mapping[str, str], now_ms: int) -> None:
    """The checks of a signed request after its key, in Binance's order: signature and
    timestamp present (-1102), recvWindow (-1102/-1111), signature (-1022), timing (-1021)."""
    if not signature:
        raise E.mandatory_param("signature")
    ts_us = timestamp_us(params.get("timestamp"))
    window_us = recv_window_us(params.get("recvWindow"))
    if not signature_ok(key, payload, signature):
        raise E.bad_signature()
    check_timing(ts_us, window_us, now_ms)


def signature_ok(key: ApiKey, payload: str, signature: str) -> bool:
    if key.kind == ED25519:
        # Ed25519 signatures are base64 (case-sensitive), of the same payload ("SIGNED Endpoint
        # Examples" > "Ed25519 Keys"); the client percent-encodes it, the parser decoded it.
        from ganntec.edge.vault import verify_ed25519
        return verify_ed25519(key.public_key, payload, signature)
    # HMAC signatures "are not case-sensitive" ("Signature Case Sensitivity"); compare in constant
    # time so response timing does not reveal how much of a forged signature was right.
    return hmac.compare_digest(signature.lower().encode(), sign(key.secret, payload).encode())


def ws_param_text(value) -> str:
    """A WebSocket API parameter as text, the way it is signed and then read: JSON true/false as
    "true"/"false", numbers as written, strings as they are."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float, str)):
        return str(value)
    raise E.invalid_param("params")


def authenticate_ws(params: Mapping[str, object], keys, now_ms: int, need: str,
                    signed: bool = True, ip: str | None = None) -> tuple[ApiKey | None, dict]:
    """Authorize one WebSocket API request (web-socket-api.md "SIGNED request security"): the
    key is the `apiKey` parameter; the signature is HMAC-SHA256 over every other parameter but
    `signature`, sorted by name, as `name=value` joined by `&`. Returns the key (None for
    security type NONE) and the parameters as text, without apiKey and signature.
    `signed=False`: the key alone (the listen-key methods, "This request does not require
    `signature`")."""
    text = {k: ws_param_text(v) for k, v in params.items()}
    if need == "NONE":
        return None, text
    if need not in SECURITY_TYPES:
        raise ValueError(f"unknown security type {need!r}")
    api_key = text.pop("apiKey", None)
    if not api_key:
        raise E.mandatory_param("apiKey")
    key = _usable(keys.get(api_key), need, ip, now_ms)
    signature = text.pop("signature", None)
    if not signed:
        return key, text
    payload = "&".join(f"{k}={v}" for k, v in sorted({**text, "apiKey": api_key}.items()))
    _verify(key, signature, payload, text, now_ms)
    return key, text
