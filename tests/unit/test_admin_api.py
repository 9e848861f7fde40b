"""The admin API over real in-process engines, and the refusal matrix of the trading API's
security: every case answered with Binance's exact code, and nothing changed by a refusal."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from admin_harness import AdminHarness, run  # noqa: E402

from ganntec.shm import records as R  # noqa: E402
from ganntec.shm.records import RecordType  # noqa: E402

ORDER = dict(symbol="BTCUSDT", side="BUY", type="LIMIT", timeInForce="GTC", quantity="0.001", price="20000")


@pytest.fixture
def h(tmp_path):
    return AdminHarness(str(tmp_path))


async def _key(c, account=1, **body):
    status, key = await c.call("POST", f"/accounts/{account}/keys", body)
    assert status == 200, key
    return key


def _balances(h, account):
    return dict(h.state.account_balances(account))


# --- the refusal matrix ---------------------------------------------------------------------
def test_refusal_matrix(h):
    async def scenario(c):
        key = await _key(c)
        now = h.now_ms
        assert (await c.signed("GET", "/api/v3/account", key))[0] == 200
        before = _balances(h, 1)
        cases = {}
        # bad signature
        bad = {**key, "secret": "x" * 64}
        cases["bad signature"] = await c.signed("POST", "/api/v3/order", bad, **ORDER)
        # stale and future timestamps
        cases["stale timestamp"] = await c.signed("POST", "/api/v3/order", key, timestamp_ms=now - 5001, **ORDER)
        cases["future timestamp"] = await c.signed("POST", "/api/v3/order", key, timestamp_ms=now + 1000, **ORDER)
        # a request replayed after its recvWindow: the same bytes, later
        h.now_ms = now + 60_001
        cases["replayed outside the window"] = await c.signed("POST", "/api/v3/order", key, timestamp_ms=now,
                                                              recvWindow="60000", **ORDER)
        h.now_ms = now
        # a key without TRADE placing an order
        reader = await _key(c, permissions=["READ"])
        cases["no trade permission"] = await c.signed("POST", "/api/v3/order", reader, **ORDER)
        # a key restricted to a network the client is not in
        fenced = await _key(c, ips=["10.0.0.0/8"])
        cases["non-allowed IP"] = await c.signed("POST", "/api/v3/order", fenced, **ORDER)
        # revoked
        status, _ = await c.call("DELETE", f"/keys/{key['key_id']}")
        assert status == 200
        cases["revoked key"] = await c.signed("POST", "/api/v3/order", key, **ORDER)
        assert _balances(h, 1) == before  # nothing changed by any refusal
        return cases

    cases = run(h, scenario)
    want = {"bad signature": (400, -1022), "stale timestamp": (400, -1021), "future timestamp": (400, -1021),
            "replayed outside the window": (400, -1021), "no trade permission": (401, -2015),
            "non-allowed IP": (401, -2015), "revoked key": (401, -2015)}
    got = {name: (status, body["code"]) for name, (status, body) in cases.items()}
    assert got == want


def test_rotation_keeps_the_old_key_until_it_is_revoked(h):
    async def scenario(c):
        old = await _key(c, label="bot")
        status, new = await c.call("POST", f"/keys/{old['key_id']}/rotate")
        assert status == 200 and new["key_id"] != old["key_id"] and new["label"] == "bot" and new["secret"]
        both = [(await c.signed("GET", "/api/v3/account", k))[0] for k in (old, new)]
        await c.call("DELETE", f"/keys/{old['key_id']}")
        after = [(await c.signed("GET", "/api/v3/account", k)) for k in (old, new)]
        status, listed = await c.call("GET", "/accounts/1/keys")
        return both, after, listed

    both, after, listed = run(h, scenario)
    assert both == [200, 200]
    assert after[0] == (401, {"code": -2015, "msg": "Invalid API-key, IP, or permissions for action."})
    assert after[1][0] == 200
    assert [(k["status"], "secret" in k) for k in listed["keys"]] == [("REVOKED", False), ("ACTIVE", False)]


def test_ed25519_keys_sign_as_binance_documents(h):
    private = Ed25519PrivateKey.generate()
    pem = private.public_key().public_bytes(serialization.Encoding.PEM,
                                            serialization.PublicFormat.SubjectPublicKeyInfo).decode()

    async def scenario(c):
        key = await _key(c, kind="ED25519", public_key=pem, permissions=["TRADE", "READ"])
        placed = await c.signed("POST", "/api/v3/order", key, ed25519_private=private, **ORDER)
        hmac_signed = await c.signed("GET", "/api/v3/account", {**key, "secret": "anything"})
        other = Ed25519PrivateKey.generate()
        wrong_key = await c.signed("GET", "/api/v3/account", key, ed25519_private=other)
        return key, placed, hmac_signed, wrong_key

    key, placed, hmac_signed, wrong_key = run(h, scenario)
    assert "secret" not in key and key["kind"] == "ED25519"
    assert placed[0] == 200 and placed[1]["status"] == "NEW"
    assert hmac_signed[1]["code"] == -1022 and wrong_key[1]["code"] == -1022


def test_admin_plane_refusals(tmp_path):
    h = AdminHarness(str(tmp_path))

    async def scenario(c):
        no_token = await c.call("GET", "/accounts", token=None)
        garbage = await c.call("GET", "/accounts", token="not.a.jwt")
        h.now_ms += 15 * 60 * 1000  # the access token's life
        expired = await c.call("GET", "/accounts")
        wrong = await c.admin.post("/admin/v1/login", json={"username": "ops", "password": "wrong password!"})
        return no_token, garbage, expired, (wrong.status, await wrong.json())

    no_token, garbage, expired, wrong = run(h, scenario)
    assert no_token == (401, {"code": "missing_token", "msg": "Authorization: Bearer <access token> is required"})
    assert garbage[0] == 401 and garbage[1]["code"] == "invalid_token"
    assert expired[0] == 401 and expired[1]["code"] == "token_expired"
    assert wrong[0] == 401 and wrong[1]["code"] == "bad_credentials"

    (tmp_path / "fenced").mkdir()
    fenced = AdminHarness(str(tmp_path / "fenced"), allow=["10.0.0.0/8"])

    async def outside(c):
        resp = await c.admin.post("/admin/v1/login", json={"username": "ops", "password": "correct horse battery"})
        return resp.status, await resp.json()

    status, body = run(fenced, outside, login=False)
    assert status == 403 and body["code"] == "ip_not_allowed"


def test_refresh_gives_a_new_pair_once(h):
    async def scenario(c):
        resp = await c.admin.post("/admin/v1/login", json={"username": "ops", "password": "correct horse battery"})
        pair = await resp.json()
        first = await c.admin.post("/admin/v1/refresh", json={"refresh_token": pair["refresh_token"]})
        again = await c.admin.post("/admin/v1/refresh", json={"refresh_token": pair["refresh_token"]})
        new = (await first.json())["access_token"]
        return first.status, again.status, await c.call("GET", "/accounts", token=new)

    first, again, listed = run(h, scenario)
    assert (first, again, listed[0]) == (200, 401, 200)


# --- accounts, money, symbols ---------------------------------------------------------------
def test_accounts_money_and_audit(h):
    async def scenario(c):
        out = {}
        out["create"] = await c.call("POST", "/accounts", {"account_id": 9, "permissions": ["TRADE", "READ"]})
        out["again"] = await c.call("POST", "/accounts", {"account_id": 9})
        out["credit"] = await c.call("POST", "/accounts/9/credit", {"asset": "USDT", "amount": "1000.00000001",
                                                                     "reference": "wire 42"})
        out["debit"] = await c.call("POST", "/accounts/9/debit", {"asset": "USDT", "amount": "0.00000001"})
        out["overdraw"] = await c.call("POST", "/accounts/9/debit", {"asset": "USDT", "amount": "1000.00000001"})
        out["too fine"] = await c.call("POST", "/accounts/9/credit", {"asset": "USDT", "amount": "0.000000001"})
        out["unknown"] = await c.call("POST", "/accounts/55/credit", {"asset": "USDT", "amount": "1"})
        out["limits"] = await c.call("PUT", "/accounts/9/limits", {"max_open_orders": 3, "taker_fee": "0.0015",
                                                                     "orders_per_10s": 20})
        out["bad fee"] = await c.call("PUT", "/accounts/9/limits", {"maker_fee": "1.5"})
        out["show"] = await c.call("GET", "/accounts/9")
        out["audit"] = await c.call("GET", "/audit?limit=20")
        return out

    out = run(h, scenario)
    assert out["create"][0] == 200 and out["create"][1]["status"] == "ACTIVE"
    assert out["again"][0] == 409 and out["again"][1]["code"] == "account_exists"
    assert out["credit"] == (200, {"account_id": 9, "asset": "USDT", "free": "1000.00000001", "locked": "0.00000000"})
    assert out["debit"][1]["free"] == "1000.00000000"
    assert out["overdraw"][0] == 409 and out["overdraw"][1]["code"] == "invalid_amount"
    assert out["too fine"][0] == 400 and "8 decimals" in out["too fine"][1]["msg"]
    assert out["unknown"][0] == 404
    limits = out["limits"][1]["limits"]
    assert (limits["max_open_orders"], limits["taker_fee"], limits["maker_fee"], limits["orders_per_10s"]) == (
        3, "0.0015", None, 20)
    assert out["bad fee"][0] == 400
    assert out["show"][1]["balances"][-1] == {"asset": "USDT", "free": "1000.00000000", "locked": "0.00000000"}
    audit = out["audit"][1]["audit"]
    assert [(a["type"], a["actor"], a["refused"]) for a in audit if a["type"] != "ADMIN_AUDIT"][-4:] == [
        ("CREDIT", "ops", None), ("DEBIT", "ops", None), ("DEBIT", "ops", "INVALID_AMOUNT"),
        ("ACCOUNT_LIMITS", "ops", None)]
    assert [a["call"] for a in audit if a["type"] == "ADMIN_AUDIT"][-3:] == [  # reads are journaled too
        "PUT /admin/v1/accounts/9/limits 400 bad_request", "GET /admin/v1/accounts/9", "GET /admin/v1/audit?limit=20"]
    # the journal is the audit trail: every admin record names who made it
    journal = h.journal_records()
    raw = journal.view(np.uint8).reshape(-1, R.RECORD_BYTES)  # (a structured copy would drop the payload)
    admin = R.as_records(raw[(journal["source"] == R.SOURCE_ADMIN) & (journal["source_seq"] > 0)])
    types = [int(t) for t in admin["type"]]
    # the login, two reads, and the changes refused before they were commands: the second create
    # (409), the credit too fine (400), the unknown account (404), the bad fee (400)
    assert types.count(int(RecordType.ADMIN_AUDIT)) == 3 + 4
    assert len(admin) == 5 + 7  # open, credit, debit, the refused debit, limits; the audits
    calls = [bytes(R.view(admin[i:i + 1])["call"]).rstrip(b"\0").decode() for i in range(len(admin))
             if types[i] == int(RecordType.ADMIN_AUDIT)]
    assert "POST /admin/v1/accounts 409 account_exists" in calls and "login from 127.0.0.1" in calls
    assert {bytes(R.view(admin[i:i + 1])["actor"]).rstrip(b"\0") for i in range(len(admin))} == {b"ops"}


def test_suspend_kill_and_halt(h):
    async def scenario(c):
        key = await _key(c)
        out = {"placed": await c.signed("POST", "/api/v3/order", key, **ORDER)}
        out["suspend"] = await c.call("POST", "/accounts/1/suspend")
        out["while suspended"] = await c.signed("GET", "/api/v3/account", key)
        out["resume"] = await c.call("POST", "/accounts/1/resume")
        out["after resume"] = await c.signed("GET", "/api/v3/openOrders", key)
        out["kill"] = await c.call("POST", "/accounts/1/kill")
        out["while killed"] = await c.signed("POST", "/api/v3/order", key, **ORDER)
        out["unkill"] = await c.call("POST", "/accounts/1/unkill")
        out["halt"] = await c.call("POST", "/symbols/BTCUSDT/halt")
        out["while halted"] = await c.signed("POST", "/api/v3/order", key, **ORDER)
        out["resume symbol"] = await c.call("POST", "/symbols/BTCUSDT/resume")
        out["after"] = await c.signed("POST", "/api/v3/order", key, **ORDER)
        out["unknown symbol"] = await c.call("POST", "/symbols/NOPE/halt")
        return out

    out = run(h, scenario)
    assert out["placed"][0] == 200
    assert out["suspend"][1]["status"] == "SUSPENDED"
    assert out["while suspended"][1]["code"] == -2015
    assert out["resume"][1]["status"] == "ACTIVE"
    assert out["after resume"] == (200, [])  # the suspension cancelled its open order
    assert out["kill"][1]["status"] == "KILLED"
    assert out["while killed"][1]["code"] == -2010
    assert out["unkill"][1]["status"] == "ACTIVE"
    assert out["halt"][1] == {"symbol": "BTCUSDT", "status": "HALTED"}
    assert out["while halted"][1] == {"code": -2010, "msg": "Market is closed."}
    assert out["after"][0] == 200
    assert out["unknown symbol"][0] == 404


def test_vault_and_journal_hold_no_plaintext_secret(h, tmp_path):
    async def scenario(c):
        return [await _key(c, account=a) for a in (1, 2, 3)]

    keys = run(h, scenario)
    vault = (tmp_path / "keys.vault").read_bytes()
    journal = h.journal_records().tobytes()
    for k in keys:
        assert k["secret"].encode() not in vault and k["secret"].encode() not in journal
        assert k["api_key"].encode() in vault  # the public half is there, the secret sealed
    assert not any(k["secret"] in line for k in keys for line in h.log)


def test_key_records_are_journaled_with_the_api_keys_hash(h):
    async def scenario(c):
        return await _key(c, permissions=["READ", "USER_STREAM"])

    key = run(h, scenario)
    journal = h.journal_records()
    adds = R.as_records(journal.view(np.uint8).reshape(-1, R.RECORD_BYTES)[journal["type"] == int(RecordType.KEY_ADD)])
    assert len(adds) == 1
    r = R.view(adds[:1])
    from ganntec.edge.vault import api_key_sha256
    assert bytes(r["key_sha256"]) == api_key_sha256(key["api_key"])
    assert int(r["permissions"]) == int(R.Permission.READ | R.Permission.USER_STREAM)
    assert int(r["account_id"]) == 1 and int(r["key_id"]) == key["key_id"]



def test_ccxt_trades_with_an_ed25519_key_the_admin_api_issued(h):
    """ccxt signs with Ed25519 when its secret is the PEM private key (binance.sign)."""
    import time

    from aiohttp import web
    from edge_harness import ccxt_binance

    private = Ed25519PrivateKey.generate()
    private_pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption()).decode()
    pem = private.public_key().public_bytes(serialization.Encoding.PEM,
                                            serialization.PublicFormat.SubjectPublicKeyInfo).decode()

    async def scenario(c):
        key = await _key(c, kind="ED25519", public_key=pem)
        runner = web.AppRunner(h.app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        ex = ccxt_binance(runner.addresses[0][1], key["api_key"], private_pem)
        try:
            await ex.load_markets()
            # ccxt stamps each request with the wall clock: the app's clock is set to it (an input)
            h.now_ms = time.time_ns() // 1_000_000
            order = await ex.create_order("BTC/USDT", "limit", "buy", 0.001, 20000)
            h.now_ms = time.time_ns() // 1_000_000
            return order, await ex.fetch_balance()
        finally:
            await ex.close()
            await runner.cleanup()

    order, balance = run(h, scenario)
    assert order["status"] == "open" and balance["USDT"]["used"] == 20.0


def test_metrics_count_what_happened(h):
    """/metrics on the admin port: Prometheus text, no token needed (the allow-list applies);
    after N orders the counters say N (prometheus_client's parser reads it back)."""
    from prometheus_client.parser import text_string_to_metric_families

    async def scenario(c):
        key = await _key(c)
        for i in range(3):
            assert (await c.signed("POST", "/api/v3/order", key, **ORDER, newClientOrderId=f"m{i}"))[0] == 200
        refused = await c.signed("POST", "/api/v3/order", key, **{**ORDER, "quantity": "1000"})  # 20M USDT: risk refuses
        resp = await c.admin.get("/metrics")
        return refused, resp.status, resp.headers["Content-Type"], await resp.text()

    refused, status, ctype, text = run(h, scenario)
    assert refused[0] == 400 and status == 200 and ctype.startswith("text/plain")
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in text_string_to_metric_families(text) for s in f.samples}
    assert samples[("ganntec_orders_total", (("result", "accepted"),))] == 3
    assert samples[("ganntec_orders_total", (("result", "rejected"),))] == 1
    assert samples[("ganntec_rejects_total", (("reason", "INSUFFICIENT_BALANCE"),))] == 1
    assert samples[("ganntec_http_requests_total", (("method", "POST"), ("route", "/api/v3/order"),
                                                    ("status", "200")))] == 3
    assert samples[("ganntec_http_request_duration_seconds_count", (("route", "/api/v3/order"),))] == 4
    assert ("ganntec_engine_round_trip_seconds_count", ()) in samples  # (the in-process driver answers at once)
    assert all(k not in text for k in ("secret", "api_key"))  # nothing of a key, ever
