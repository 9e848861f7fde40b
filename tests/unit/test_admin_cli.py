"""`ganntec admin ...` (ganntec/admin/cli.py, client.py) against a small fake admin API: an
aiohttp app on 127.0.0.1 port 0 in a thread, with canned accounts and the real TokenIssuer
under a clock the test moves. The fake is for the CLI only; the real routes are elsewhere.

Covered: login writes the token file (0600, keyed by URL); an expired access token is refreshed
once and the request resent; --json prints one parsable document; exit codes 1 (refused),
2 (usage), 3 (no connection); https with --cacert; the local `users` commands."""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import socket
import stat
import sys
import threading

import pytest
from aiohttp import web

from ganntec.admin import auth as A
from ganntec.admin.cli import add_parser, main
from ganntec.admin.client import AdminClient, default_token_file

NOW = 1_700_000_000
PASSWORD = "correct horse battery"


class FakeAdmin:
    """Canned answers for some endpoints of the admin API contract."""

    def __init__(self):
        self.now = NOW
        self.issuer = A.TokenIssuer(A.derive_signing_key(b"k" * 32))
        self.refreshes = 0
        self.always_expired = False
        self.requests: list[tuple[str, str, object]] = []
        self.accounts = {"1": {"account_id": "1", "status": "ACTIVE", "permissions": ["TRADE", "READ"],
                                "limits": {"max_open_orders": 200}, "keys": 1}}

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._record])
        p = "/admin/v1"
        app.router.add_post(f"{p}/login", self.login)
        app.router.add_post(f"{p}/refresh", self.refresh)
        app.router.add_get(f"{p}/accounts", self.list_accounts)
        app.router.add_post(f"{p}/accounts", self.create_account)
        app.router.add_get(p + "/accounts/{id}", self.show_account)
        app.router.add_post(p + "/accounts/{id}/{action:suspend|resume|kill|unkill}", self.account_action)
        app.router.add_post(p + "/accounts/{id}/{direction:credit|debit}", self.move)
        app.router.add_put(p + "/accounts/{id}/limits", self.limits)
        app.router.add_post(p + "/accounts/{id}/keys", self.create_key)
        app.router.add_delete(p + "/keys/{key_id}", self.revoke_key)
        app.router.add_post(p + "/symbols/{symbol}/{action:halt|resume}", self.symbol)
        return app

    @web.middleware
    async def _record(self, request, handler):
        body = await request.json() if request.can_read_body else None
        self.requests.append((request.method, request.path, body))
        return await handler(request)

    @staticmethod
    def _error(status: int, code: str, msg: str) -> web.Response:
        return web.json_response({"code": code, "msg": msg}, status=status)

    def _auth(self, request) -> web.Response | None:
        if self.always_expired:
            return self._error(401, "token_expired", "access token expired")
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        try:
            self.issuer.verify_access(token if scheme == "Bearer" else None, self.now)
        except A.AdminAuthError as exc:
            return self._error(401, exc.code, exc.msg)
        return None

    async def login(self, request):
        body = await request.json()
        if body != {"username": "admin", "password": PASSWORD}:
            return self._error(401, "bad_credentials", "wrong user name or password")
        return web.json_response(self.issuer.issue("admin", self.now))

    async def refresh(self, request):
        self.refreshes += 1
        try:
            return web.json_response(self.issuer.refresh((await request.json())["refresh_token"], self.now))
        except A.AdminAuthError as exc:
            return self._error(401, exc.code, exc.msg)

    async def list_accounts(self, request):
        return self._auth(request) or web.json_response({"accounts": list(self.accounts.values())})

    async def create_account(self, request):
        if denied := self._auth(request):
            return denied
        body = await request.json()
        account = str(body["account_id"])
        if account in self.accounts:
            return self._error(409, "account_exists", f"account {account} exists")
        self.accounts[account] = {"account_id": body["account_id"], "status": "ACTIVE",
                                  "permissions": body["permissions"], "limits": {}, "keys": 0}
        return web.json_response(self.accounts[account])

    def _account(self, request) -> dict | web.Response:
        account = self.accounts.get(request.match_info["id"])
        return account if account else self._error(404, "unknown_account", f"no account {request.match_info['id']}")

    async def show_account(self, request):
        if denied := self._auth(request):
            return denied
        account = self._account(request)
        if isinstance(account, web.Response):
            return account
        return web.json_response({**account, "balances": [{"asset": "USDT", "free": "100.5", "locked": "0"}]})

    async def account_action(self, request):
        if denied := self._auth(request):
            return denied
        account = self._account(request)
        if isinstance(account, web.Response):
            return account
        account["status"] = {"suspend": "SUSPENDED", "kill": "KILLED"}.get(request.match_info["action"], "ACTIVE")
        return web.json_response(account)

    async def move(self, request):
        if denied := self._auth(request):
            return denied
        body = await request.json()
        return web.json_response({"account_id": request.match_info["id"], "asset": body["asset"],
                                  "free": body["amount"], "locked": "0"})

    async def limits(self, request):
        if denied := self._auth(request):
            return denied
        account = self._account(request)
        if isinstance(account, web.Response):
            return account
        account["limits"].update(await request.json())
        return web.json_response(account)

    async def create_key(self, request):
        if denied := self._auth(request):
            return denied
        body = await request.json()
        doc = {"key_id": "k7", "api_key": "AK" + "x" * 30, "kind": body["kind"], "permissions": body["permissions"],
               "ips": body["ips"], "label": body.get("label"), "created_ms": NOW * 1000, "status": "ACTIVE"}
        if body["kind"] == "HMAC_SHA256":
            doc["secret"] = "S" * 40
        return web.json_response(doc)

    async def revoke_key(self, request):
        return self._auth(request) or web.json_response({"key_id": request.match_info["key_id"], "status": "REVOKED"})

    async def symbol(self, request):
        if denied := self._auth(request):
            return denied
        status = "HALTED" if request.match_info["action"] == "halt" else "TRADING"
        return web.json_response({"symbol": request.match_info["symbol"], "status": status})


class Served:
    """An aiohttp app served on 127.0.0.1, any free port, by a loop in a thread."""

    def __init__(self, app: web.Application, ssl_context=None):
        self.loop = asyncio.new_event_loop()
        self.runner = web.AppRunner(app)
        self.loop.run_until_complete(self.runner.setup())
        site = web.TCPSite(self.runner, "127.0.0.1", 0, ssl_context=ssl_context)
        self.loop.run_until_complete(site.start())
        self.port = self.runner.addresses[0][1]
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.run_until_complete(self.runner.cleanup())
        self.loop.close()


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """Nothing from the real environment; the token file inside tmp_path."""
    for name in ("GANNTEC_ADMIN_URL", "GANNTEC_ADMIN_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("GANNTEC_ADMIN_TOKEN_FILE", str(tmp_path / "state" / "admin-token.json"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr("getpass.getpass", lambda prompt="": pytest.fail("prompted for a password"))


@pytest.fixture
def fake():
    admin = FakeAdmin()
    served = Served(admin.app())
    admin.url = f"http://127.0.0.1:{served.port}"
    yield admin
    served.close()


def _stdin(monkeypatch, text: str) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(text))


def _login(fake, monkeypatch, capsys) -> None:
    _stdin(monkeypatch, PASSWORD + "\n")
    assert main(["--url", fake.url, "login", "--user", "admin", "--password-stdin"]) == 0
    capsys.readouterr()


def _tokens(tmp_path) -> dict:
    return json.loads((tmp_path / "state" / "admin-token.json").read_text())["servers"]


def test_login_writes_a_private_token_file_keyed_by_url(fake, tmp_path, monkeypatch, capsys):
    _stdin(monkeypatch, PASSWORD + "\n")
    assert main(["login", "--url", fake.url + "/", "--user", "admin", "--password-stdin"]) == 0
    assert f"logged in to {fake.url} as admin" in capsys.readouterr().out
    path = tmp_path / "state" / "admin-token.json"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    entry = _tokens(tmp_path)[fake.url]  # the URL without its trailing slash
    assert entry["user"] == "admin"
    assert fake.issuer.verify_access(entry["access_token"], fake.now) == "admin"
    assert PASSWORD not in path.read_text()

    # the password from the environment; --json: the answer without the tokens
    monkeypatch.setenv("GANNTEC_ADMIN_PASSWORD", PASSWORD)
    monkeypatch.setenv("GANNTEC_ADMIN_URL", fake.url)
    assert main(["login", "--user", "admin", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc == {"url": fake.url, "user": "admin", "token_file": str(path), "token_type": "Bearer",
                   "expires_in": 900, "refresh_expires_in": 28800}

    assert main(["accounts", "list"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["ACCOUNT", "STATUS", "PERMISSIONS", "KEYS"] and out[1].split() == ["1", "ACTIVE", "TRADE,READ", "1"]

    assert main(["logout"]) == 0
    assert fake.url not in _tokens(tmp_path)
    assert main(["accounts", "list"]) == 2
    assert "not logged in" in capsys.readouterr().err


def test_an_expired_access_token_is_refreshed_once(fake, tmp_path, monkeypatch, capsys):
    _login(fake, monkeypatch, capsys)
    before = _tokens(tmp_path)[fake.url]
    fake.now += A.ACCESS_TTL_S  # the access token expires exactly now
    assert main(["--url", fake.url, "accounts", "show", "1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["balances"] == [{"asset": "USDT", "free": "100.5", "locked": "0"}]
    assert fake.refreshes == 1
    after = _tokens(tmp_path)[fake.url]
    assert after["refresh_token"] != before["refresh_token"] and after["user"] == "admin"
    assert [r[1] for r in fake.requests[-3:]] == ["/admin/v1/accounts/1", "/admin/v1/refresh", "/admin/v1/accounts/1"]

    assert main(["--url", fake.url, "accounts", "list", "--json"]) == 0  # the new token serves on
    assert fake.refreshes == 1
    capsys.readouterr()

    # a server that keeps answering token_expired: one refresh, one retry, then the refusal
    fake.always_expired = True
    assert main(["--url", fake.url, "accounts", "list"]) == 1
    assert fake.refreshes == 2
    assert capsys.readouterr().err == "ganntec admin: token_expired: access token expired\n"
    fake.always_expired = False

    # the refresh token expired too: log in again
    fake.now += A.REFRESH_TTL_S
    assert main(["--url", fake.url, "accounts", "list"]) == 1
    assert fake.refreshes == 3
    err = capsys.readouterr().err
    assert err.startswith("ganntec admin: token_expired: refresh token expired") and "log in again" in err


def test_a_refresh_done_by_another_invocation_is_picked_up(fake, tmp_path, monkeypatch, capsys):
    _login(fake, monkeypatch, capsys)
    client = AdminClient(fake.url, token_file=str(tmp_path / "state" / "admin-token.json"))
    stale = client.store.get(client.url)
    fake.now += A.ACCESS_TTL_S
    assert main(["--url", fake.url, "accounts", "list"]) == 0  # refreshes, spending stale's refresh token
    assert fake.refreshes == 1
    # this client still holds the stale pair: it takes the new one from the file, no second refresh
    assert client.call("GET", "/accounts")["accounts"][0]["account_id"] == "1"
    assert client._refreshed(stale) == client.store.get(client.url)
    assert fake.refreshes == 1


def test_json_output_is_the_servers_document(fake, monkeypatch, capsys, tmp_path):
    _login(fake, monkeypatch, capsys)
    url = ["--url", fake.url]
    pem = tmp_path / "ed.pem"
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    pem.write_bytes(Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    cases = [
        (["accounts", "create", "12", "--perm", "Trade,read"], ("POST", "/admin/v1/accounts",
                                                                {"account_id": 12, "permissions": ["TRADE", "READ"]})),
        (["accounts", "create", "13"], ("POST", "/admin/v1/accounts",
                                        {"account_id": 13, "permissions": ["TRADE", "READ", "USER_STREAM"]})),
        (["accounts", "suspend", "1"], ("POST", "/admin/v1/accounts/1/suspend", None)),
        (["accounts", "credit", "1", "--asset", "USDT", "--amount", "1e3", "--reference", "wire 7"],
         ("POST", "/admin/v1/accounts/1/credit", {"asset": "USDT", "amount": "1000", "reference": "wire 7"})),
        (["accounts", "limits", "1", "--max-open-orders", "50", "--maker-fee", "-0.0001", "--orders-per-day", "9"],
         ("PUT", "/admin/v1/accounts/1/limits", {"max_open_orders": 50, "maker_fee": "-0.0001", "orders_per_day": 9})),
        (["keys", "create", "1", "--perm", "read", "--ip", "10.0.0.0/8", "--ip", "127.0.0.1", "--label", "bot"],
         ("POST", "/admin/v1/accounts/1/keys", {"kind": "HMAC_SHA256", "permissions": ["READ"],
                                                 "ips": ["10.0.0.0/8", "127.0.0.1"], "label": "bot"})),
        (["keys", "create", "1", "--kind", "ed25519", "--public-key-file", str(pem)],
         ("POST", "/admin/v1/accounts/1/keys", {"kind": "ED25519", "permissions": ["TRADE", "READ", "USER_STREAM"],
                                                 "ips": [], "public_key": pem.read_text()})),
        (["keys", "revoke", "k7"], ("DELETE", "/admin/v1/keys/k7", None)),
        (["symbols", "halt", "btcusdt"], ("POST", "/admin/v1/symbols/BTCUSDT/halt", None)),
    ]
    for argv, sent in cases:
        assert main([*url, *argv, "--json"]) == 0, argv
        out = capsys.readouterr().out
        assert out.count("\n") == 1 and isinstance(json.loads(out), dict), argv  # one document
        assert fake.requests[-1] == sent, argv
    assert json.loads(out) == {"symbol": "BTCUSDT", "status": "HALTED"}

    # the readable forms
    assert main([*url, "accounts", "kill", "1"]) == 0
    assert capsys.readouterr().out == "1 KILLED\n"
    assert main([*url, "keys", "create", "1"]) == 0
    captured = capsys.readouterr()
    assert "secret       " + "S" * 40 in captured.out and "shown once" in captured.err
    assert main([*url, "accounts", "show", "1"]) == 0
    out = capsys.readouterr().out
    assert "status       KILLED" in out and "USDT   100.5  0" in out


def test_exit_codes(fake, tmp_path, monkeypatch, capsys):
    url = ["--url", fake.url]
    _stdin(monkeypatch, "wrong password!!\n")
    assert main([*url, "login", "--user", "admin", "--password-stdin"]) == 1
    assert capsys.readouterr().err == "ganntec admin: bad_credentials: wrong user name or password\n"
    _login(fake, monkeypatch, capsys)

    assert main([*url, "accounts", "show", "NOPE"]) == 1  # the server refused
    assert capsys.readouterr().err == "ganntec admin: unknown_account: no account NOPE\n"
    assert main([*url, "accounts", "create", "1"]) == 1
    assert "ganntec admin: account_exists:" in capsys.readouterr().err
    assert main([*url, "accounts", "create", "A1"]) == 2  # an id is an integer: refused before sending
    assert "account='A1' (not an integer)" in capsys.readouterr().err

    sent = len(fake.requests)
    for argv, err in (
        (["accounts", "credit", "1", "--asset", "USDT", "--amount", "1.2.3"], "--amount='1.2.3' (not a decimal)"),
        (["accounts", "debit", "1", "--asset", "USDT", "--amount", "0"], "--amount='0' (must be > 0)"),
        (["accounts", "debit", "1", "--asset", "USDT", "--amount", "NaN"], "--amount='NaN' (not a finite decimal)"),
        (["accounts", "limits", "1", "--orders-per-10s", "ten"], "--orders-per-10s='ten' (not an integer)"),
        (["accounts", "limits", "1"], "(no limit given:"),
        (["accounts", "create", "B", "--perm", "trade,foo"], "--perm='trade,foo' (unknown permission 'foo'"),
        (["keys", "create", "1", "--ip", "10.0.0.300"], "--ip='10.0.0.300' (not an IP address or network)"),
        (["keys", "create", "1", "--kind", "ed25519"], "--kind=ed25519 (needs --public-key-file PEM)"),
        (["keys", "create", "1", "--kind", "ed25519", "--public-key-file", str(tmp_path / "none.pem")],
         "none.pem (cannot read:"),
        (["--url", "ftp://x", "accounts", "list"], "--url='ftp://x' (http:// or https:// and a host)"),
        (["--cacert", str(tmp_path / "ca.pem"), "accounts", "list"], "(only for https:// URLs"),
    ):
        assert main([*url, *argv]) == 2, argv
        got = capsys.readouterr().err
        assert got.startswith("ganntec admin: ") and err in got, (argv, got)
    assert len(fake.requests) == sent  # refused before anything was sent
    assert main([*url, "accounts", "frobnicate", "1"]) == 2  # argparse's own usage error
    capsys.readouterr()

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    assert main(["--url", f"http://127.0.0.1:{closed}", "accounts", "list"]) == 2  # not logged in there
    assert "not logged in" in capsys.readouterr().err
    _stdin(monkeypatch, PASSWORD + "\n")
    assert main(["--url", f"http://127.0.0.1:{closed}", "login", "--user", "admin", "--password-stdin"]) == 3
    assert capsys.readouterr().err.startswith(f"ganntec admin: cannot connect to http://127.0.0.1:{closed} (")

    (tmp_path / "state" / "admin-token.json").write_text("{not json")
    assert main([*url, "accounts", "list"]) == 2
    assert "--token-file=" in capsys.readouterr().err and len(fake.requests) == sent


def test_https_with_cacert(tmp_path, monkeypatch, capsys):
    from ganntec.edge.tls import self_signed, server_context

    cert, key = self_signed(str(tmp_path / "tls"))
    admin = FakeAdmin()
    served = Served(admin.app(), ssl_context=server_context(cert, key))
    try:
        url = f"https://127.0.0.1:{served.port}"
        _stdin(monkeypatch, PASSWORD + "\n")
        assert main(["--url", url, "login", "--user", "admin", "--password-stdin"]) == 3  # not trusted
        assert "--cacert PATH" in capsys.readouterr().err
        _stdin(monkeypatch, PASSWORD + "\n")
        assert main(["--url", url, "--cacert", cert, "login", "--user", "admin", "--password-stdin"]) == 0
        assert main(["--url", url, "--cacert", cert, "accounts", "list", "--json"]) == 0
        assert json.loads(capsys.readouterr().out.splitlines()[-1])["accounts"][0]["account_id"] == "1"
        assert main(["--url", url, "--cacert", str(tmp_path / "missing.pem"), "accounts", "list"]) == 2
        assert "--cacert=" in capsys.readouterr().err
    finally:
        served.close()


def test_users_add_writes_a_hash(tmp_path, monkeypatch, capsys):
    data = tmp_path / "data"
    _stdin(monkeypatch, PASSWORD + "\n")
    assert main(["users", "add", "alice", "--password-stdin", "--data-dir", str(data)]) == 0
    path = data / A.USERS_FILE
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    doc = json.loads(path.read_text())
    assert doc["users"][0]["name"] == "alice" and doc["users"][0]["scrypt"].split("$")[1:4] == ["16384", "8", "1"]
    assert PASSWORD not in path.read_text()
    assert A.AdminUsers.load(str(path)).check("alice", PASSWORD)
    capsys.readouterr()

    users_file = ["--users-file", str(path)]
    for argv, stdin, err in ((["add", "alice"], PASSWORD, "name='alice' (already an admin user)"),
                             (["add", "bob"], "short", "password (at least 12 characters)"),
                             (["add", "bad name"], PASSWORD, "name='bad name' (1 to 32 of"),
                             (["passwd", "carol"], PASSWORD, "name='carol' (no such admin user)"),
                             (["remove", "alice"], "", "name='alice' (the last admin user; add another first)")):
        _stdin(monkeypatch, stdin + "\n")
        assert main(["users", *argv, "--password-stdin", *users_file] if argv[0] != "remove"
                    else ["users", *argv, *users_file]) == 2, argv
        assert err in capsys.readouterr().err, argv

    _stdin(monkeypatch, "another long password\n")
    assert main(["users", "add", "bob", "--password-stdin", *users_file, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"users_file": str(path), "name": "bob", "added": True}
    _stdin(monkeypatch, "bob's new password\n")
    assert main(["users", "passwd", "bob", "--password-stdin", *users_file]) == 0
    assert main(["users", "remove", "alice", *users_file]) == 0
    assert main(["users", "list", *users_file, "--json"]) == 0
    capsys.readouterr()
    users = A.AdminUsers.load(str(path))
    assert users.names() == ["bob"] and users.check("bob", "bob's new password")
    assert main(["users", "list"]) == 2  # --users-file or --data-dir is required
    assert "--users-file" in capsys.readouterr().err


def test_add_parser_hooks_into_the_ganntec_command(tmp_path, monkeypatch, capsys):
    parser = argparse.ArgumentParser(prog="ganntec")
    sub = parser.add_subparsers(dest="command", required=True)
    add_parser(sub)
    path = tmp_path / A.USERS_FILE
    _stdin(monkeypatch, PASSWORD + "\n")
    args = parser.parse_args(["admin", "users", "add", "root", "--password-stdin", "--users-file", str(path)])
    assert args.func(args) == 0 and A.AdminUsers.load(str(path)).check("root", PASSWORD)
    args = parser.parse_args(["admin", "--json", "users", "list", "--users-file", str(path)])
    capsys.readouterr()
    assert args.func(args) == 0
    assert json.loads(capsys.readouterr().out)["users"][0]["name"] == "root"


def test_default_token_file():
    assert default_token_file({"GANNTEC_ADMIN_TOKEN_FILE": "/x/t.json"}) == "/x/t.json"
    assert default_token_file({"XDG_STATE_HOME": "/state"}) == "/state/ganntec/admin-token.json"
    home = os.path.expanduser("~")
    assert default_token_file({"XDG_STATE_HOME": "relative"}) == f"{home}/.local/state/ganntec/admin-token.json"
    assert default_token_file({}) == f"{home}/.local/state/ganntec/admin-token.json"
