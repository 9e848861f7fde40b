"""The admin API: its own aiohttp application on `edge.admin_host:admin_port`, served by edge
process 1 beside the trading port.

Every change is an admin command on cmd.0 (source 0, numbered: the order engine drops a
repeat), journaled with the admin user who made it (`actor`, records.py) and ordered with
trading; the answer is the engine's echo of it (a reason when refused), so what an
administrator is told is what the journal says. Reads come from the edge's projection
(accounts.Directory, EdgeState balances) and the key vault's public fields, never a secret;
each read, and each login, is journaled too, as an ADMIN_AUDIT record (it changes nothing), so
every call is in the journal with who made it.

In front of everything: the IP allow-list (403 ip_not_allowed), then a JWT access token
(Authorization: Bearer; 401 missing_token / invalid_token / token_expired) for every route but
login and refresh. Errors are {"code": "<slug>", "msg": "..."}. Amounts are exact decimal
strings converted with each asset's precision; rates (fees) are decimals with up to 8 places.
Time is an input (`clock_ms`): tokens expire by it, tests fix it."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal, InvalidOperation

import numpy as np
import orjson
from aiohttp import web

from ganntec.admin.auth import AdminAuthError, AdminUsers, AllowList, TokenIssuer
from ganntec.config import Config
from ganntec.edge.accounts import Account, Directory, permission_bits, permission_names
from ganntec.edge.keys import key_record
from ganntec.edge.vault import ED25519, HMAC_SHA256, Vault, VaultError
from ganntec.shm import records as R
from ganntec.shm.records import Permission, Reason, RecordType

PREFIX = "/admin/v1"
E8 = 100_000_000
MAX_BODY_BYTES = 64 * 1024
ALL_PERMISSIONS = int(Permission.TRADE | Permission.READ | Permission.USER_STREAM)

CONFIG = web.AppKey("admin_config", Config)
CLOCK_MS = web.AppKey("admin_clock_ms", Callable[[], int])
GATEWAY = web.AppKey("admin_gateway", object)   # edge.gateway.Gateway carrying admin commands
STATE = web.AppKey("admin_state", object)       # edge.state.EdgeState
VAULT = web.AppKey("admin_vault", Vault)
KEYRING = web.AppKey("admin_keyring", object)   # edge.keys.KeyRing (vault entries by key id)
USERS = web.AppKey("admin_users", Callable[[], AdminUsers])  # re-read per login: the CLI edits the file
TOKENS = web.AppKey("admin_tokens", TokenIssuer)
ALLOW = web.AppKey("admin_allow", AllowList)
LOG = web.AppKey("admin_log", Callable[[str], None])
METRICS_REGISTRY = web.AppKey("admin_metrics_registry", object)  # None: the multiprocess files
METRICS_LIVE = web.AppKey("admin_metrics_live", tuple)
# request key: the authenticated admin's name (typed where aiohttp has RequestKey, >= 3.12)
USER = web.RequestKey("admin_user", str) if hasattr(web, "RequestKey") else "admin_user"
SUBMITTED = web.RequestKey("admin_submitted", bool) if hasattr(web, "RequestKey") else "admin_submitted"


class AdminError(Exception):
    def __init__(self, status: int, code: str, msg: str):
        super().__init__(msg)
        self.status, self.code, self.msg = status, code, msg


def _json(body, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


def _bad(field: str, value, why: str) -> AdminError:
    return AdminError(400, "bad_request", f"{field}={value!r} ({why})")


# --- middleware: allow-list, token, errors ---------------------------------------------------
OPEN_ROUTES = (f"{PREFIX}/login", f"{PREFIX}/refresh")
METRICS_PATH = "/metrics"  # Prometheus scrapes it: the allow-list applies, no token, not journaled


@web.middleware
async def guard(request: web.Request, handler):
    app = request.app
    try:
        if not app[ALLOW].allows(request.remote):
            raise AdminError(403, "ip_not_allowed", f"{request.remote} is not in security.admin_allow_ips")
        if request.path not in OPEN_ROUTES and request.path != METRICS_PATH:
            auth = request.headers.get("Authorization", "")
            scheme, _, token = auth.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise AdminError(401, "missing_token", "Authorization: Bearer <access token> is required")
            try:
                request[USER] = app[TOKENS].verify_access(token.strip(), app[CLOCK_MS]() // 1000)
            except AdminAuthError as exc:
                raise AdminError(401, exc.code, str(exc.msg)) from None
            app[LOG](f"admin {request[USER]} {request.method} {request.path}")
            if request.method == "GET":  # a change is journaled as its command; a read as this
                await audit_call(request, request[USER], f"{request.method} {request.path_qs}")
        return await handler(request)
    except AdminError as exc:
        if request.get(USER) and request.method != "GET" and not request.get(SUBMITTED):
            # an admin's change refused before it became a command: journaled as the attempt
            await audit_call(request, request[USER], f"{request.method} {request.path} {exc.status} {exc.code}")
        return _json({"code": exc.code, "msg": exc.msg}, exc.status)
    except web.HTTPException as exc:
        if exc.status >= 400:
            return _json({"code": exc.reason.lower().replace(" ", "_"), "msg": exc.reason}, exc.status)
        raise


async def audit_call(request: web.Request, actor: str, call: str) -> None:
    """Journal an admin API call that changes nothing (a read, a login) with who made it, so the
    journal holds every call; it answers after the engines have sequenced it."""
    gw = request.app[GATEWAY]
    if gw is None:
        return
    r = R.empty(RecordType.ADMIN_AUDIT)
    r["call"] = call.encode("ascii", "replace")[:56]
    r["actor"] = actor.encode("ascii", "replace")[:32]
    await gw.submit_admin(r)


async def _body(request: web.Request) -> dict:
    if not request.can_read_body:
        return {}
    raw = await request.read()
    try:
        body = orjson.loads(raw) if raw else {}
    except orjson.JSONDecodeError:
        raise AdminError(400, "bad_request", "the body is not JSON") from None
    if not isinstance(body, dict):
        raise AdminError(400, "bad_request", "the body must be a JSON object")
    return body


def _known(body: dict, allowed: tuple[str, ...]) -> None:
    extra = sorted(set(body) - set(allowed))
    if extra:
        raise _bad(extra[0], body[extra[0]], f"unknown field; one of {', '.join(allowed)}")


# --- login ---------------------------------------------------------------------------------
async def login(request: web.Request) -> web.Response:
    body = await _body(request)
    name, password = body.get("username"), body.get("password")
    if not isinstance(name, str) or not isinstance(password, str):
        raise AdminError(400, "bad_request", "username and password (strings) are required")
    app = request.app
    if not app[USERS]().check(name, password):
        app[LOG](f"admin login refused for {name!r} from {request.remote}")
        await audit_call(request, name, f"login refused from {request.remote}")
        raise AdminError(401, "bad_credentials", "wrong username or password")
    app[LOG](f"admin {name} logged in from {request.remote}")
    await audit_call(request, name, f"login from {request.remote}")
    return _json(app[TOKENS].issue(name, app[CLOCK_MS]() // 1000))


async def refresh(request: web.Request) -> web.Response:
    body = await _body(request)
    token = body.get("refresh_token")
    if not isinstance(token, str):
        raise AdminError(400, "bad_request", "refresh_token (a string) is required")
    try:
        return _json(request.app[TOKENS].refresh(token, request.app[CLOCK_MS]() // 1000))
    except AdminAuthError as exc:
        raise AdminError(401, exc.code, str(exc.msg)) from None


# --- commands --------------------------------------------------------------------------------
def _command(rtype: RecordType, actor: str, **fields) -> np.ndarray:
    r = R.empty(rtype)
    for k, v in fields.items():
        r[k] = v
    r["actor"] = actor.encode("ascii")
    return r


async def _submit(request: web.Request, record: np.ndarray) -> list:
    """Send an admin command; its echo (and a transfer's BALANCE), or 409 with the engine's reason."""
    gw = request.app[GATEWAY]
    if gw is None:
        raise AdminError(503, "no_backend", "the engines are not reachable from this process")
    request[SUBMITTED] = True
    out = await gw.submit_admin(record)
    reason = out[0].reason
    if reason:
        name = Reason(reason).name if reason in Reason._value2member_map_ else str(reason)
        raise AdminError(409, name.lower(), f"refused by the engines: {name}")
    return out


def _account_id(request: web.Request) -> int:
    raw = request.match_info["account"]
    cfg = request.app[CONFIG]
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 20) or not 0 <= int(raw) < cfg.engine.max_accounts:
        raise _bad("account", raw, f"an account id 0 .. {cfg.engine.max_accounts - 1}")
    return int(raw)


def _directory(request: web.Request) -> Directory:
    return request.app[STATE].directory


def _open_account(request: web.Request, account: int):
    acc = _directory(request).account(account)
    if acc is None:
        raise AdminError(404, "unknown_account", f"account {account} is not open")
    return acc


def _fee_text(e8: int):
    return None if e8 < 0 else format(Decimal(e8).scaleb(-8).normalize(), "f")


def _account_json(request: web.Request, acc, with_balances: bool = False) -> dict:
    app = request.app
    d = _directory(request)
    cfg = app[CONFIG]
    loss = cfg.asset(cfg.engine.loss_asset) if cfg.engine.loss_asset else None
    out = {
        "account_id": acc.account_id, "status": acc.status, "permissions": permission_names(acc.permissions),
        "limits": {
            "max_open_orders": acc.max_open_orders,
            "max_order_notional_minor": acc.max_order_notional_minor,
            "daily_loss_limit": (loss.from_minor(acc.daily_loss_limit_minor) if loss else None),
            "maker_fee": _fee_text(acc.maker_fee_e8), "taker_fee": _fee_text(acc.taker_fee_e8),
            "orders_per_10s": acc.orders_per_10s or cfg.limits.orders_per_10s,
            "orders_per_day": acc.orders_per_day or cfg.limits.orders_per_day,
        },
        "keys": sum(1 for g in d.keys_of(acc.account_id) if g.active),
    }
    if acc.killed and acc.kill_reason:
        out["kill_reason"] = Reason(acc.kill_reason).name
    if with_balances:
        out["balances"] = _balances(request, acc.account_id)
    return out


def _balances(request: web.Request, account: int) -> list[dict]:
    cfg = request.app[CONFIG]
    rows = request.app[STATE].account_balances(account)
    return [{"asset": cfg.assets[a].name, "free": cfg.assets[a].from_minor(free), "locked": cfg.assets[a].from_minor(locked)}
            for a, (free, locked) in sorted(rows.items())]


async def list_accounts(request: web.Request) -> web.Response:
    d = _directory(request)
    return _json({"accounts": [_account_json(request, a) for _, a in sorted(d.accounts.items())]})


async def show_account(request: web.Request) -> web.Response:
    return _json(_account_json(request, _open_account(request, _account_id(request)), with_balances=True))


def _permissions(value, field: str = "permissions") -> int:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _bad(field, value, "a list of TRADE, READ, USER_STREAM")
    try:
        return permission_bits(value)
    except ValueError as exc:
        raise _bad(field, value, str(exc)) from None


def _int_field(body: dict, name: str, lo: int, hi: int, default: int) -> int:
    v = body.get(name, default)
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
        raise _bad(name, v, f"an integer {lo} .. {hi}")
    return v


def _fee_e8(body: dict, name: str, default: int) -> int:
    if name not in body:
        return default
    v = body[name]
    if v is None:
        return -1  # the symbol's own rate
    try:
        d = Decimal(v) if isinstance(v, str) else None
    except InvalidOperation:
        d = None
    if d is None or not d.is_finite() or d < 0 or d > 1 or d.scaleb(8) != d.scaleb(8).to_integral_value():
        raise _bad(name, v, "a decimal string rate 0 .. 1 with at most 8 decimals, or null for the symbol's")
    return int(d.scaleb(8))


LIMIT_FIELDS = ("max_open_orders", "max_order_notional", "max_order_notional_minor", "daily_loss_limit", "maker_fee",
                "taker_fee", "orders_per_10s", "orders_per_day")


def _limits(request: web.Request, body: dict, acc=None) -> dict:
    """ACCOUNT payload fields from a limits object; unspecified ones keep the account's values."""
    _known(body, LIMIT_FIELDS)
    cfg = request.app[CONFIG]
    cur = acc or Account(-1)  # a new account starts from the defaults
    out = {
        "max_open_orders": _int_field(body, "max_open_orders", 0, (1 << 32) - 1, cur.max_open_orders),
        "max_order_notional_minor": _int_field(body, "max_order_notional_minor", 0, (1 << 62),
                                               cur.max_order_notional_minor),
        "maker_fee_e8": _fee_e8(body, "maker_fee", cur.maker_fee_e8),
        "taker_fee_e8": _fee_e8(body, "taker_fee", cur.taker_fee_e8),
        "orders_per_10s": _int_field(body, "orders_per_10s", 0, (1 << 31) - 1, cur.orders_per_10s),
        "orders_per_day": _int_field(body, "orders_per_day", 0, (1 << 31) - 1, cur.orders_per_day),
        "daily_loss_limit_minor": cur.daily_loss_limit_minor,
    }
    if "max_order_notional" in body:  # a decimal in quote units: exact only when every quote asset has
        v = body["max_order_notional"]  # the same precision (the engine compares quote minor units)
        quotes = {s.quote.precision: s.quote for s in cfg.symbols}
        if len(quotes) != 1:
            raise _bad("max_order_notional", v, "the quote assets differ in precision: give max_order_notional_minor")
        if v is None:
            out["max_order_notional_minor"] = 0
        else:
            try:
                minor = next(iter(quotes.values())).to_minor("max_order_notional", v if isinstance(v, str) else "x")
            except ValueError as exc:
                raise AdminError(400, "bad_request", str(exc)) from None
            if not 0 <= minor < 1 << 62:
                raise _bad("max_order_notional", v, "0 .. 2**62 minor units")
            out["max_order_notional_minor"] = minor
    if "daily_loss_limit" in body:
        v = body["daily_loss_limit"]
        if not cfg.engine.loss_asset:
            raise _bad("daily_loss_limit", v, "engine.loss_asset is not configured: no loss is counted")
        if v is None:
            out["daily_loss_limit_minor"] = 0
        else:
            try:
                minor = cfg.asset(cfg.engine.loss_asset).to_minor("daily_loss_limit", v if isinstance(v, str) else "x")
            except ValueError as exc:
                raise AdminError(400, "bad_request", str(exc)) from None
            if not 0 <= minor < 1 << 62:
                raise _bad("daily_loss_limit", v, "0 .. 2**62 minor units")
            out["daily_loss_limit_minor"] = minor
    return out


async def create_account(request: web.Request) -> web.Response:
    body = await _body(request)
    _known(body, ("account_id", "permissions", "limits"))
    cfg = request.app[CONFIG]
    account = body.get("account_id")
    if not isinstance(account, int) or isinstance(account, bool) or not 0 <= account < cfg.engine.max_accounts:
        raise _bad("account_id", account, f"an account id 0 .. {cfg.engine.max_accounts - 1}")
    if _directory(request).account(account) is not None:
        raise AdminError(409, "account_exists", f"account {account} is open already (resume, unkill or limits)")
    perms = _permissions(body.get("permissions", permission_names(ALL_PERMISSIONS)))
    limits = body.get("limits", {})
    if not isinstance(limits, dict):
        raise _bad("limits", limits, "an object")
    fields = _limits(request, limits)
    await _submit(request, _command(RecordType.ACCOUNT_OPEN, request[USER], account_id=account, permissions=perms,
                                    **fields))
    return _json(_account_json(request, _open_account(request, account)))


async def set_limits(request: web.Request) -> web.Response:
    account = _account_id(request)
    acc = _open_account(request, account)
    fields = _limits(request, await _body(request), acc)
    await _submit(request, _command(RecordType.ACCOUNT_LIMITS, request[USER], account_id=account, **fields))
    return _json(_account_json(request, _open_account(request, account)))


def _status_change(rtype: RecordType, suspend: bool, must: Callable, why: str):
    async def handler(request: web.Request) -> web.Response:
        account = _account_id(request)
        acc = _open_account(request, account)
        if not must(acc):
            raise AdminError(409, "wrong_status", f"account {account} is {acc.status}: {why}")
        await _submit(request, _command(rtype, request[USER], account_id=account,
                                        admin_flags=R.ADMIN_SUSPEND if suspend else 0))
        return _json(_account_json(request, _open_account(request, account)))
    return handler


def _transfer(rtype: RecordType):
    async def handler(request: web.Request) -> web.Response:
        account = _account_id(request)
        _open_account(request, account)
        body = await _body(request)
        _known(body, ("asset", "amount", "reference"))
        cfg = request.app[CONFIG]
        names = {a.name: a for a in cfg.assets}
        asset = names.get(body.get("asset"))
        if asset is None:
            raise _bad("asset", body.get("asset"), f"one of {', '.join(names)}")
        amount = body.get("amount")
        try:
            minor = asset.to_minor("amount", amount if isinstance(amount, str) else "x")
        except ValueError as exc:
            raise AdminError(400, "bad_request", str(exc)) from None
        if not 0 < minor < 1 << 62:
            raise _bad("amount", amount, "must be > 0 and below 2**62 minor units")
        reference = body.get("reference", "")
        if not isinstance(reference, str) or len(reference) > 36 or not reference.isascii():
            raise _bad("reference", reference, "ASCII text of at most 36 characters")
        out = await _submit(request, _command(rtype, request[USER], account_id=account, asset_id=asset.asset_id,
                                              amount_minor=minor, reference=reference.encode("ascii")))
        bal = out[-1]
        return _json({"account_id": account, "asset": asset.name, "free": asset.from_minor(bal.free_minor),
                      "locked": asset.from_minor(bal.locked_minor)})
    return handler


async def account_balances(request: web.Request) -> web.Response:
    account = _account_id(request)
    _open_account(request, account)
    return _json({"balances": _balances(request, account)})


# --- keys ----------------------------------------------------------------------------------
def _key_json(request: web.Request, grant) -> dict:
    entry = request.app[KEYRING].entry(grant.key_id)
    out = {"key_id": grant.key_id, "account_id": grant.account_id, "status": "ACTIVE" if grant.active else "REVOKED",
           "permissions": permission_names(grant.permissions), "granted_by": grant.actor}
    if entry is not None:
        out.update({"api_key": entry.api_key, "kind": entry.kind, "ips": list(entry.ips), "label": entry.label,
                    "created_ms": entry.created_ms})
    return out


async def list_keys(request: web.Request) -> web.Response:
    account = _account_id(request)
    _open_account(request, account)
    grants = sorted(_directory(request).keys_of(account), key=lambda g: g.key_id)
    return _json({"keys": [_key_json(request, g) for g in grants]})


async def _grant(request: web.Request, account: int, entry: dict, bits: int, secret: str | None) -> web.Response:
    await _submit(request, key_record(RecordType.KEY_ADD, account, entry["key_id"], bits, entry["api_key"],
                                      request[USER]))
    out = _key_json(request, _directory(request).keys[entry["key_id"]])
    if secret is not None:
        out["secret"] = secret  # shown once: the vault keeps it sealed, no API returns it again
    return _json(out)


async def create_key(request: web.Request) -> web.Response:
    account = _account_id(request)
    _open_account(request, account)
    body = await _body(request)
    _known(body, ("kind", "public_key", "permissions", "ips", "label"))
    kind = body.get("kind", HMAC_SHA256)
    if kind not in (HMAC_SHA256, ED25519):
        raise _bad("kind", kind, f"{HMAC_SHA256} or {ED25519}")
    bits = _permissions(body.get("permissions", permission_names(ALL_PERMISSIONS)))
    ips = body.get("ips", [])
    label = body.get("label", "")
    if not isinstance(label, str) or len(label) > 64:
        raise _bad("label", label, "text of at most 64 characters")
    vault, now = request.app[VAULT], request.app[CLOCK_MS]()
    names = permission_names(bits)
    try:
        if kind == HMAC_SHA256:
            if "public_key" in body:
                raise _bad("public_key", "...", "only for ED25519 keys")
            entry, secret = vault.add_hmac(account, names, ips, label, now)
        else:
            pem = body.get("public_key")
            if not isinstance(pem, str):
                raise _bad("public_key", pem, "the Ed25519 public key, PEM")
            entry, secret = vault.add_ed25519(account, pem, names, ips, label, now), None
    except VaultError as exc:
        raise AdminError(400, "bad_request", str(exc)) from None
    return await _grant(request, account, entry, bits, secret)


def _key_id(request: web.Request):
    raw = request.match_info["key_id"]
    grant = _directory(request).keys.get(int(raw)) if raw.isascii() and raw.isdigit() and len(raw) <= 20 else None
    if grant is None:
        raise AdminError(404, "unknown_key", f"no key with id {raw}")
    return grant


async def rotate_key(request: web.Request) -> web.Response:
    grant = _key_id(request)
    if not grant.active:
        raise AdminError(409, "key_revoked", f"key {grant.key_id} is revoked: create a new one")
    body = await _body(request)
    _known(body, ("public_key",))
    try:
        made = request.app[VAULT].copy_for_rotation(grant.key_id, request.app[CLOCK_MS](), body.get("public_key"))
    except VaultError as exc:
        raise AdminError(400, "bad_request", str(exc)) from None
    entry, secret = made if isinstance(made, tuple) else (made, None)
    return await _grant(request, grant.account_id, entry, grant.permissions, secret)


async def revoke_key(request: web.Request) -> web.Response:
    grant = _key_id(request)
    if not grant.active:
        raise AdminError(409, "key_revoked", f"key {grant.key_id} is revoked already")
    await _submit(request, key_record(RecordType.KEY_REVOKE, grant.account_id, grant.key_id, 0, "", request[USER]))
    return _json({"key_id": grant.key_id, "account_id": grant.account_id, "status": "REVOKED"})


# --- symbols and audit ---------------------------------------------------------------------
def _symbol_change(rtype: RecordType):
    async def handler(request: web.Request) -> web.Response:
        name = request.match_info["symbol"]
        symbol = next((s for s in request.app[CONFIG].symbols if s.name == name), None)
        if symbol is None:
            raise AdminError(404, "unknown_symbol", f"no symbol {name!r}")
        await _submit(request, _command(rtype, request[USER], symbol_id=symbol.symbol_id))
        halted = symbol.symbol_id in _directory(request).halted
        return _json({"symbol": name, "status": "HALTED" if halted else "TRADING"})
    return handler


async def list_symbols(request: web.Request) -> web.Response:
    halted = _directory(request).halted
    return _json({"symbols": [{"symbol": s.name, "status": "HALTED" if s.symbol_id in halted else "TRADING"}
                              for s in request.app[CONFIG].symbols]})


async def audit(request: web.Request) -> web.Response:
    raw = request.query.get("limit", "100")
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 20) or not 1 <= int(raw) <= 10_000:
        raise _bad("limit", raw, "1 .. 10000")
    entries = list(_directory(request).audit)[-int(raw):]
    return _json({"audit": [{"seq": e.seq, "ts_ns": e.ts_ns, "type": e.type, "actor": e.actor or "(config)",
                             "account_id": e.account_id, "symbol_id": e.symbol_id,
                             "refused": Reason(e.reason).name if e.reason else None, **e.detail} for e in entries]})


async def metrics(request: web.Request) -> web.Response:
    from ganntec.metrics import render

    body, content_type = render(request.app[METRICS_REGISTRY], request.app[METRICS_LIVE])
    return web.Response(body=body, headers={"Content-Type": content_type})


def make_admin_app(cfg: Config, state, gateway, vault: Vault, keyring, tokens: TokenIssuer,
                   users: Callable[[], AdminUsers], clock_ms: Callable[[], int], log: Callable[[str], None] = print,
                   allow: AllowList | None = None, metrics_registry=None, live_metrics=()) -> web.Application:
    """`metrics_registry`: the edge app's registry (None: prometheus-client's multiprocess files,
    every process's); `live_metrics`: collectors read at each scrape (metrics.LiveCollector)."""
    app = web.Application(middlewares=[guard], client_max_size=MAX_BODY_BYTES)
    app[CONFIG], app[STATE], app[GATEWAY], app[VAULT], app[KEYRING] = cfg, state, gateway, vault, keyring
    app[TOKENS], app[USERS], app[CLOCK_MS], app[LOG] = tokens, users, clock_ms, log
    app[ALLOW] = allow if allow is not None else AllowList(list(cfg.security.admin_allow_ips),
                                                           "security.admin_allow_ips")
    app[METRICS_REGISTRY], app[METRICS_LIVE] = metrics_registry, tuple(live_metrics)
    r = app.router
    r.add_get(METRICS_PATH, metrics)
    r.add_post(f"{PREFIX}/login", login)
    r.add_post(f"{PREFIX}/refresh", refresh)
    r.add_get(f"{PREFIX}/accounts", list_accounts)
    r.add_post(f"{PREFIX}/accounts", create_account)
    r.add_get(f"{PREFIX}/accounts/{{account}}", show_account)
    r.add_get(f"{PREFIX}/accounts/{{account}}/balances", account_balances)
    r.add_put(f"{PREFIX}/accounts/{{account}}/limits", set_limits)
    r.add_post(f"{PREFIX}/accounts/{{account}}/suspend", _status_change(
        RecordType.KILL_ACCOUNT, True, lambda a: not a.suspended, "suspended already"))
    r.add_post(f"{PREFIX}/accounts/{{account}}/resume", _status_change(
        RecordType.UNKILL_ACCOUNT, True, lambda a: a.suspended, "only a suspended account resumes"))
    r.add_post(f"{PREFIX}/accounts/{{account}}/kill", _status_change(
        RecordType.KILL_ACCOUNT, False, lambda a: not a.killed, "killed already"))
    r.add_post(f"{PREFIX}/accounts/{{account}}/unkill", _status_change(
        RecordType.UNKILL_ACCOUNT, False, lambda a: a.killed and not a.suspended,
        "only a killed (not suspended: resume it) account is unkilled"))
    r.add_post(f"{PREFIX}/accounts/{{account}}/credit", _transfer(RecordType.CREDIT))
    r.add_post(f"{PREFIX}/accounts/{{account}}/debit", _transfer(RecordType.DEBIT))
    r.add_get(f"{PREFIX}/accounts/{{account}}/keys", list_keys)
    r.add_post(f"{PREFIX}/accounts/{{account}}/keys", create_key)
    r.add_post(f"{PREFIX}/keys/{{key_id}}/rotate", rotate_key)
    r.add_delete(f"{PREFIX}/keys/{{key_id}}", revoke_key)
    r.add_get(f"{PREFIX}/symbols", list_symbols)
    r.add_post(f"{PREFIX}/symbols/{{symbol}}/halt", _symbol_change(RecordType.HALT_SYMBOL))
    r.add_post(f"{PREFIX}/symbols/{{symbol}}/resume", _symbol_change(RecordType.RESUME_SYMBOL))
    r.add_get(f"{PREFIX}/audit", audit)
    return app


