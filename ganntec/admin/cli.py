"""`ganntec admin ...`: administer a running instance over its admin port, and manage the admin
users file locally.

    ganntec admin login --user admin [--password-stdin]
    ganntec admin accounts list | show ID | create ID [--perm trade,read,user_stream]
    ganntec admin accounts suspend|resume|kill|unkill ID
    ganntec admin accounts credit|debit ID --asset USDT --amount 100.5 [--reference R]
    ganntec admin accounts limits ID [--max-open-orders N] [--max-order-notional DEC] ...
    ganntec admin keys list ACCOUNT | create ACCOUNT [--kind hmac|ed25519] ... | rotate KEY_ID | revoke KEY_ID
    ganntec admin symbols halt|resume SYMBOL
    ganntec admin logout
    ganntec admin users add|passwd|remove NAME | users list   (--users-file PATH | --data-dir DIR; no server)

Server options (before or after the command): --url (default $GANNTEC_ADMIN_URL, else
http://127.0.0.1:8081), --cacert PATH (trust a self-signed certificate), --token-file PATH
(default $GANNTEC_ADMIN_TOKEN_FILE, else under $XDG_STATE_HOME), --timeout S; every command
takes --json (the server's answer as one JSON document).

Exit codes: 0 done, 1 the server refused (`ganntec admin: <code>: <msg>` on stderr), 2 usage or
configuration (`field=value (reason)`), 3 no answer from the server."""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
import time
from decimal import Decimal, InvalidOperation

from ganntec import subcommand
from ganntec.admin import auth
from ganntec.admin.client import (
    DEFAULT_TIMEOUT_S,
    DEFAULT_URL,
    AdminClient,
    ConnectFailed,
    NotLoggedIn,
    ServerRefused,
    TokenFileError,
    default_token_file,
    normalize_url,
)
from ganntec.edge.accounts import PERMISSION_NAMES

PERMISSIONS = tuple(name for name, _ in PERMISSION_NAMES)
DEFAULT_PERMISSIONS = "trade,read,user_stream"
KEY_KINDS = {"hmac": "HMAC_SHA256", "ed25519": "ED25519"}
ACCOUNT_ACTIONS = ("suspend", "resume", "kill", "unkill")
# flag -> (body field, kind): "int" >= 0, "dec" >= 0, "fee" any sign (a maker rebate is negative)
LIMIT_FLAGS = {
    "--max-open-orders": ("max_open_orders", "int"),
    "--max-order-notional": ("max_order_notional", "dec"),
    "--daily-loss-limit": ("daily_loss_limit", "dec"),
    "--maker-fee": ("maker_fee", "fee"),
    "--taker-fee": ("taker_fee", "fee"),
    "--orders-per-10s": ("orders_per_10s", "int"),
    "--orders-per-day": ("orders_per_day", "int"),
}
PREFIX = "ganntec admin"


class UsageError(Exception):
    """A `field=value (reason)` problem with the command line or local files: exit 2."""


# --- argument checks ----------------------------------------------------------------------

def _decimal(flag: str, text: str, *, positive: bool = False, signed: bool = False) -> str:
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise UsageError(f"{flag}={text!r} (not a decimal)") from None
    if not value.is_finite():
        raise UsageError(f"{flag}={text!r} (not a finite decimal)")
    if positive and value <= 0:
        raise UsageError(f"{flag}={text!r} (must be > 0)")
    if not signed and value < 0:
        raise UsageError(f"{flag}={text!r} (must be >= 0)")
    return format(value, "f")  # plain notation: "1e3" goes as "1000"


def _int(flag: str, text: str) -> int:
    try:
        value = int(text, 10)
    except ValueError:
        raise UsageError(f"{flag}={text!r} (not an integer)") from None
    if value < 0:
        raise UsageError(f"{flag}={text!r} (must be >= 0)")
    return value


def _permissions(values: list[str] | None) -> list[str]:
    """--perm trade,read (repeatable, any case) as ["TRADE", "READ"], in the order given."""
    text = ",".join(values) if values else DEFAULT_PERMISSIONS
    perms: list[str] = []
    for part in text.split(","):
        perm = part.strip().upper()
        if perm not in PERMISSIONS:
            raise UsageError(f"--perm={text!r} (unknown permission {part.strip()!r}; "
                             f"one of {', '.join(p.lower() for p in PERMISSIONS)})")
        if perm not in perms:
            perms.append(perm)
    return perms


def _ips(values: list[str] | None) -> list[str]:
    ips = []
    for text in values or ():
        for part in text.split(","):
            try:
                auth.parse_network(part.strip())
            except ValueError as exc:
                raise UsageError(f"--ip={part.strip()!r} ({exc})") from None
            ips.append(part.strip())
    return ips


def _public_key(path: str) -> str:
    """The PEM text of an Ed25519 public key file."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    try:
        with open(path, "rb") as f:
            pem = f.read()
    except OSError as exc:
        raise UsageError(f"--public-key-file={path} (cannot read: {exc.strerror or exc})") from None
    try:
        key = load_pem_public_key(pem)
    except (ValueError, TypeError):
        key = None
    if not isinstance(key, Ed25519PublicKey):
        raise UsageError(f"--public-key-file={path} (not an Ed25519 public key in PEM)")
    return pem.decode("ascii")


def _password(args: argparse.Namespace, *, confirm: bool, env: bool) -> str:
    """--password-stdin (one line), else $GANNTEC_ADMIN_PASSWORD when `env`, else a prompt
    (twice when `confirm`)."""
    if getattr(args, "password_stdin", False):
        password = sys.stdin.readline().removesuffix("\n").removesuffix("\r")
        if not password:
            raise UsageError("--password-stdin (no password on stdin)")
        return password
    if env and os.environ.get("GANNTEC_ADMIN_PASSWORD"):
        return os.environ["GANNTEC_ADMIN_PASSWORD"]
    password = getpass.getpass("password: ")
    if confirm and getpass.getpass("password again: ") != password:
        raise UsageError("password (the two entries differ)")
    return password


def _opt(args: argparse.Namespace, name: str, default=None):
    # server options are SUPPRESSed where not given, so they may come before or after the command
    return getattr(args, name, default)


def _client(args: argparse.Namespace) -> AdminClient:
    url = _opt(args, "url") or os.environ.get("GANNTEC_ADMIN_URL") or DEFAULT_URL
    cacert = _opt(args, "cacert")
    token_file = _opt(args, "token_file") or default_token_file()
    timeout = _opt(args, "timeout", DEFAULT_TIMEOUT_S)
    if not timeout > 0:
        raise UsageError(f"--timeout={timeout} (must be > 0)")
    try:
        normalized = normalize_url(url)
    except ValueError as exc:
        raise UsageError(f"--url={url!r} ({exc})") from None
    if cacert and not normalized.startswith("https:"):
        raise UsageError(f"--cacert={cacert} (only for https:// URLs; --url={normalized})")
    try:
        return AdminClient(normalized, cafile=cacert, token_file=token_file, timeout=timeout)
    except OSError as exc:  # a missing CA file, or one without a certificate (ssl.SSLError)
        raise UsageError(f"--cacert={cacert} ({getattr(exc, 'strerror', None) or exc})") from None


def _users_path(args: argparse.Namespace) -> str:
    if args.users_file:
        return args.users_file
    return os.path.join(args.data_dir, auth.USERS_FILE)


# --- output -------------------------------------------------------------------------------

def _dump(doc) -> None:
    sys.stdout.write(json.dumps(doc) + "\n")


def _table(headers: list[str], rows: list[list]) -> str:
    cells = [[str(c) for c in headers]] + [["-" if c is None or c == "" else str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells)


def _join(values) -> str:
    return ",".join(str(v) for v in values) if isinstance(values, list) and values else "-"


def _limits_text(limits) -> str:
    if not isinstance(limits, dict) or not limits:
        return "-"
    return " ".join(f"{k}={v}" for k, v in limits.items())


def _account_text(doc: dict) -> str:
    lines = [f"account      {doc.get('account_id', '-')}", f"status       {doc.get('status', '-')}",
             f"permissions  {_join(doc.get('permissions'))}", f"keys         {doc.get('keys', '-')}",
             f"limits       {_limits_text(doc.get('limits'))}"]
    balances = doc.get("balances")
    if isinstance(balances, list):
        lines.append("balances" if balances else "balances     -")
        if balances:
            lines.append(_balances_text(balances))
    return "\n".join(lines)


def _balances_text(balances: list) -> str:
    return _table(["ASSET", "FREE", "LOCKED"], [[b.get("asset"), b.get("free"), b.get("locked")] for b in balances])


def _val(value) -> str:
    if isinstance(value, list):
        return _join(value)
    return "-" if value is None or value == "" else str(value)


def _key_text(doc: dict) -> str:
    lines = [f"{k:<12} {_val(doc[k])}" for k in ("key_id", "api_key", "kind", "permissions", "ips", "label", "status")
             if k in doc]
    if doc.get("secret"):
        lines.append(f"{'secret':<12} {doc['secret']}")
    return "\n".join(lines)


# --- commands: server -----------------------------------------------------------------------

def _cmd_login(args: argparse.Namespace) -> int:
    client = _client(args)
    password = _password(args, confirm=False, env=True)
    tokens = client.login(args.user, password)
    # --json: the answer without the tokens themselves (they are in the token file, mode 0600)
    summary = {"url": client.url, "user": args.user, "token_file": client.store.path,
               **{k: tokens[k] for k in ("token_type", "expires_in", "refresh_expires_in") if k in tokens}}
    if _opt(args, "json"):
        _dump(summary)
    else:
        print(f"logged in to {client.url} as {args.user} (tokens in {client.store.path}; access token valid "
              f"{tokens.get('expires_in', '?')} s, refreshed automatically)")
    return 0


def _cmd_logout(args: argparse.Namespace) -> int:
    client = _client(args)
    dropped = client.logout()
    if _opt(args, "json"):
        _dump({"url": client.url, "logged_out": dropped})
    else:
        print(f"logged out of {client.url}" if dropped else f"not logged in to {client.url}")
    return 0


def _show(args: argparse.Namespace, doc: dict, text) -> int:
    if _opt(args, "json"):
        _dump(doc)
    else:
        print(text(doc))
    return 0


def _cmd_accounts_list(args: argparse.Namespace) -> int:
    return _show(args, _client(args).accounts(), lambda d: _table(
        ["ACCOUNT", "STATUS", "PERMISSIONS", "KEYS"],
        [[a.get("account_id"), a.get("status"), _join(a.get("permissions")), a.get("keys")]
         for a in d.get("accounts", [])]))


def _cmd_accounts_show(args: argparse.Namespace) -> int:
    return _show(args, _client(args).account(args.account), _account_text)


def _cmd_accounts_create(args: argparse.Namespace) -> int:
    perms = _permissions(args.perm)
    account = _int("account", args.account)  # the API takes the id as a JSON integer
    return _show(args, _client(args).create_account(account, perms), _account_text)


def _cmd_accounts_action(args: argparse.Namespace) -> int:
    return _show(args, _client(args).account_action(args.account, args.action),
                 lambda d: f"{d.get('account_id', args.account)} {d.get('status', '-')}")


def _cmd_accounts_move(args: argparse.Namespace) -> int:
    amount = _decimal("--amount", args.amount, positive=True)
    return _show(args, _client(args).move(args.account, args.direction, args.asset, amount, args.reference),
                 lambda d: f"{d.get('account_id', args.account)} {d.get('asset', args.asset)} "
                           f"free={d.get('free', '-')} locked={d.get('locked', '-')}")


def _cmd_accounts_limits(args: argparse.Namespace) -> int:
    limits: dict = {}
    for flag, (field, kind) in LIMIT_FLAGS.items():
        text = getattr(args, field)
        if text is None:
            continue
        limits[field] = _int(flag, text) if kind == "int" else _decimal(flag, text, signed=kind == "fee")
    if not limits:
        raise UsageError(f"accounts limits {args.account} (no limit given: {', '.join(LIMIT_FLAGS)})")
    return _show(args, _client(args).set_limits(args.account, limits),
                 lambda d: f"{d.get('account_id', args.account)} limits {_limits_text(d.get('limits'))}")


def _cmd_accounts_balances(args: argparse.Namespace) -> int:
    return _show(args, _client(args).balances(args.account), lambda d: _balances_text(d.get("balances", [])))


def _cmd_keys_list(args: argparse.Namespace) -> int:
    return _show(args, _client(args).keys(args.account), lambda d: _table(
        ["KEY_ID", "API_KEY", "KIND", "STATUS", "PERMISSIONS", "IPS", "LABEL"],
        [[k.get("key_id"), k.get("api_key"), k.get("kind"), k.get("status"), _join(k.get("permissions")),
          _join(k.get("ips")), k.get("label")] for k in d.get("keys", [])]))


def _secret_notice(doc: dict) -> None:
    if doc.get("secret"):
        print(f"{PREFIX}: the secret is shown once; store it now", file=sys.stderr)


def _cmd_keys_create(args: argparse.Namespace) -> int:
    kind = KEY_KINDS[args.kind]
    public_key = None
    if kind == "ED25519":
        if not args.public_key_file:
            raise UsageError("--kind=ed25519 (needs --public-key-file PEM)")
        public_key = _public_key(args.public_key_file)
    elif args.public_key_file:
        raise UsageError(f"--public-key-file={args.public_key_file} (only with --kind=ed25519)")
    perms, ips = _permissions(args.perm), _ips(args.ip)
    doc = _client(args).create_key(args.account, kind, perms, ips, args.label, public_key)
    _secret_notice(doc)
    return _show(args, doc, _key_text)


def _cmd_keys_rotate(args: argparse.Namespace) -> int:
    public_key = _public_key(args.public_key_file) if args.public_key_file else None
    doc = _client(args).rotate_key(args.key_id, public_key)
    _secret_notice(doc)
    return _show(args, doc, _key_text)


def _cmd_keys_revoke(args: argparse.Namespace) -> int:
    return _show(args, _client(args).revoke_key(args.key_id),
                 lambda d: f"{d.get('key_id', args.key_id)} {d.get('status', '-')}")


def _cmd_symbols(args: argparse.Namespace) -> int:
    symbol = args.symbol.upper()
    return _show(args, _client(args).symbol_action(symbol, args.action),
                 lambda d: f"{d.get('symbol', symbol)} {d.get('status', '-')}")


# --- commands: local users file -------------------------------------------------------------

def _load_users(args: argparse.Namespace) -> auth.AdminUsers:
    path = _users_path(args)
    try:
        return auth.AdminUsers.load(path)
    except auth.AdminUsersError as exc:
        raise UsageError(f"--users-file={exc}") from None


def _save_users(users: auth.AdminUsers) -> None:
    try:
        os.makedirs(os.path.dirname(os.path.abspath(users.path)), mode=0o700, exist_ok=True)
        users.save()
    except OSError as exc:
        raise UsageError(f"--users-file={users.path} (cannot write: {exc.strerror or exc})") from None


def _users_change(args: argparse.Namespace, verb: str) -> int:
    users = _load_users(args)
    try:
        if verb == "add":
            auth.check_name(args.name)  # before the prompt, not after it
            if args.name in users:
                raise auth.AdminUsersError(f"name={args.name!r} (already an admin user)")
            users.add(args.name, _password(args, confirm=True, env=False), time.time_ns() // 1_000_000)
        elif verb == "passwd":
            if args.name not in users:
                raise auth.AdminUsersError(f"name={args.name!r} (no such admin user)")
            users.set_password(args.name, _password(args, confirm=True, env=False))
        else:
            users.remove(args.name)
    except auth.AdminUsersError as exc:
        raise UsageError(str(exc)) from None
    _save_users(users)
    done = {"add": "added", "passwd": "password_changed", "remove": "removed"}[verb]
    if _opt(args, "json"):
        _dump({"users_file": users.path, "name": args.name, done: True})
    else:
        print(f"{done.replace('_', ' ')}: admin user {args.name} in {users.path}")
    return 0


def _cmd_users_add(args: argparse.Namespace) -> int:
    return _users_change(args, "add")


def _cmd_users_passwd(args: argparse.Namespace) -> int:
    return _users_change(args, "passwd")


def _cmd_users_remove(args: argparse.Namespace) -> int:
    return _users_change(args, "remove")


def _cmd_users_list(args: argparse.Namespace) -> int:
    users = _load_users(args)
    info = users.info()
    return _show(args, {"users_file": users.path, "users": info},
                 lambda d: _table(["NAME", "CREATED_MS"], [[u["name"], u["created_ms"]] for u in info]))


# --- parser ---------------------------------------------------------------------------------

def _server_options() -> argparse.ArgumentParser:
    opts = argparse.ArgumentParser(add_help=False, argument_default=argparse.SUPPRESS)
    opts.add_argument("--url", help=f"the admin API (default $GANNTEC_ADMIN_URL, else {DEFAULT_URL})")
    opts.add_argument("--cacert", metavar="PATH", help="trust this certificate (PEM) for https, e.g. a self-signed one")
    opts.add_argument("--token-file", metavar="PATH",
                      help="token cache (default $GANNTEC_ADMIN_TOKEN_FILE, else $XDG_STATE_HOME/ganntec/admin-token.json)")
    opts.add_argument("--timeout", type=float, metavar="S", help=f"per request (default {DEFAULT_TIMEOUT_S:g})")
    opts.add_argument("--json", action="store_true", help="print the server's answer as one JSON document")
    return opts


def _local_options() -> argparse.ArgumentParser:
    opts = argparse.ArgumentParser(add_help=False, argument_default=argparse.SUPPRESS)
    opts.add_argument("--json", action="store_true", help="print the result as one JSON document")
    where = opts.add_mutually_exclusive_group(required=True)
    where.add_argument("--users-file", metavar="PATH", default=None, help="the admin users file")
    where.add_argument("--data-dir", metavar="DIR", default=None, help=f"the instance's data dir (its {auth.USERS_FILE})")
    return opts


def _build(parser: argparse.ArgumentParser) -> None:
    server = _server_options()
    local = _local_options()
    groups = parser.add_subparsers(dest="admin_group", required=True, metavar="COMMAND")

    def leaf(sub, name: str, handler, help_: str, parents=(server,), **defaults) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, parents=list(parents))
        p.set_defaults(admin_handler=handler, **defaults)
        return p

    login = leaf(groups, "login", _cmd_login, "log in; the tokens go to the token file")
    login.add_argument("--user", required=True, help="admin user name")
    login.add_argument("--password-stdin", action="store_true",
                       help="read the password from stdin (else $GANNTEC_ADMIN_PASSWORD, else a prompt)")
    leaf(groups, "logout", _cmd_logout, "forget this URL's tokens")

    accounts = groups.add_parser("accounts", help="trading accounts").add_subparsers(
        dest="admin_cmd", required=True, metavar="ACTION")
    leaf(accounts, "list", _cmd_accounts_list, "all accounts")
    leaf(accounts, "show", _cmd_accounts_show, "one account with its balances").add_argument("account")
    create = leaf(accounts, "create", _cmd_accounts_create, "a new account")
    create.add_argument("account")
    create.add_argument("--perm", action="append", metavar="LIST",
                        help=f"comma-separated of trade, read, user_stream (default {DEFAULT_PERMISSIONS})")
    for action in ACCOUNT_ACTIONS:
        leaf(accounts, action, _cmd_accounts_action, f"{action} an account", action=action).add_argument("account")
    for direction in ("credit", "debit"):
        move = leaf(accounts, direction, _cmd_accounts_move, f"{direction} an asset", direction=direction)
        move.add_argument("account")
        move.add_argument("--asset", required=True)
        move.add_argument("--amount", required=True, metavar="DEC", help="a decimal > 0")
        move.add_argument("--reference", help="recorded with the movement")
    limits = leaf(accounts, "limits", _cmd_accounts_limits, "change an account's limits and fees")
    limits.add_argument("account")
    for flag, (field, kind) in LIMIT_FLAGS.items():
        limits.add_argument(flag, dest=field, metavar="N" if kind == "int" else "DEC")
    leaf(accounts, "balances", _cmd_accounts_balances, "an account's balances").add_argument("account")

    keys = groups.add_parser("keys", help="API keys").add_subparsers(dest="admin_cmd", required=True, metavar="ACTION")
    leaf(keys, "list", _cmd_keys_list, "an account's keys (never secrets)").add_argument("account")
    kcreate = leaf(keys, "create", _cmd_keys_create, "a new key (an HMAC secret is shown once)")
    kcreate.add_argument("account")
    kcreate.add_argument("--kind", choices=sorted(KEY_KINDS), default="hmac")
    kcreate.add_argument("--public-key-file", metavar="PEM", help="the Ed25519 public key (--kind ed25519)")
    kcreate.add_argument("--perm", action="append", metavar="LIST",
                         help=f"comma-separated of trade, read, user_stream (default {DEFAULT_PERMISSIONS})")
    kcreate.add_argument("--ip", action="append", metavar="CIDR", help="allowed client address or network (repeatable)")
    kcreate.add_argument("--label")
    rotate = leaf(keys, "rotate", _cmd_keys_rotate, "replace a key (same account and permissions)")
    rotate.add_argument("key_id")
    rotate.add_argument("--public-key-file", metavar="PEM", help="the new Ed25519 public key (Ed25519 keys)")
    leaf(keys, "revoke", _cmd_keys_revoke, "revoke a key").add_argument("key_id")

    symbols = groups.add_parser("symbols", help="trading in a symbol").add_subparsers(
        dest="admin_cmd", required=True, metavar="ACTION")
    for action in ("halt", "resume"):
        leaf(symbols, action, _cmd_symbols, f"{action} trading", action=action).add_argument("symbol")

    users = groups.add_parser("users", help="admin users (the local users file; no server)").add_subparsers(
        dest="admin_cmd", required=True, metavar="ACTION")
    for name, handler, help_ in (("add", _cmd_users_add, "add an admin user"),
                                 ("passwd", _cmd_users_passwd, "change an admin user's password"),
                                 ("remove", _cmd_users_remove, "remove an admin user")):
        p = leaf(users, name, handler, help_, parents=(local,))
        p.add_argument("name")
        if name != "remove":
            p.add_argument("--password-stdin", action="store_true", help="read the password from stdin (else a prompt)")
    leaf(users, "list", _cmd_users_list, "the admin users", parents=(local,))


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add `admin` to the `ganntec` command's subparsers; it dispatches through `func=run`."""
    return subcommand.add(subparsers, "admin", "administer a running instance (admin port) and its admin users",
                          __doc__, _build, run, parents=(_server_options(),))


def build_parser() -> argparse.ArgumentParser:
    return subcommand.standalone(PREFIX, __doc__, _build, parents=(_server_options(),))


def run(args: argparse.Namespace) -> int:
    """Run a parsed `ganntec admin` command; the exit code."""
    try:
        return args.admin_handler(args)
    except UsageError as exc:
        print(f"{PREFIX}: {exc}", file=sys.stderr)
        return 2
    except (NotLoggedIn, TokenFileError) as exc:
        print(f"{PREFIX}: {exc}", file=sys.stderr)
        return 2
    except ServerRefused as exc:
        print(f"{PREFIX}: {exc.code}: {exc.msg}", file=sys.stderr)
        return 1
    except ConnectFailed as exc:
        print(f"{PREFIX}: {exc}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130


def main(argv: list[str] | None = None) -> int:
    """`ganntec admin` with these arguments (those after `admin`)."""
    return subcommand.main(build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
