"""Listen keys (listenkeys.py) as Binance documented them before retiring them: POST / PUT /
DELETE /api/v3/userDataStream and userDataStream.start / ping / stop, their responses and error
codes, validity by the app's clock, and the same key in every edge process."""

from __future__ import annotations

import numpy as np
import orjson
import pytest
from edge_harness import KEYS, T0_MS, EdgeHarness, run

from ganntec.edge.app import make_app
from ganntec.edge.appkeys import LISTEN_EXPIRY_MS, LISTEN_KEYS
from ganntec.edge.auth import ApiKey, KeyStore, sign
from ganntec.edge.errors import BinanceError
from ganntec.edge.listenkeys import VALIDITY_MS

PATH = "/api/v3/userDataStream"
HOUR_MS = 60 * 60 * 1000


@pytest.fixture
def h():
    return EdgeHarness()


def listen_key(account: int) -> str:
    return sign(KEYS[account][1], "listenKey")


async def rest(client, method: str, account: int | None, body: bool = True, headers=None, **params):
    """A USER_STREAM request: the API key header, no signature (parameters in the form body, as
    ccxt sends them, or in the query string)."""
    headers = dict(headers if headers is not None else {"X-MBX-APIKEY": KEYS[account][0]})
    if body:
        headers["Content-Type"] = "application/x-www-form-urlencoded"
        resp = await client.request(method, PATH, data="&".join(f"{k}={v}" for k, v in params.items()),
                                    headers=headers)
    else:
        resp = await client.request(method, PATH, params=params, headers=headers)
    return resp.status, await resp.json()


def test_post_returns_the_accounts_key_and_extends_it_put_extends_delete_closes(h):
    expiry = h.app[LISTEN_EXPIRY_MS]

    async def go(c):
        out = {"first": await rest(c, "POST", 1)}
        h.now_ms += 10 * 60 * 1000
        out["again"] = await rest(c, "POST", 1)
        out["after_again"] = int(expiry[1])
        out["other"] = await rest(c, "POST", 2)
        h.now_ms += 20 * 60 * 1000
        out["put"] = await rest(c, "PUT", 1, listenKey=listen_key(1))
        out["after_put"] = int(expiry[1])
        out["put_query"] = await rest(c, "PUT", 1, body=False, listenKey=listen_key(1))
        out["delete"] = await rest(c, "DELETE", 1, listenKey=listen_key(1))
        out["after_delete"] = int(expiry[1])
        out["put_deleted"] = await rest(c, "PUT", 1, listenKey=listen_key(1))
        out["delete_deleted"] = await rest(c, "DELETE", 1, listenKey=listen_key(1))
        out["revived"] = await rest(c, "POST", 1)
        return out

    out = run(h, go)
    lk = out["first"][1]["listenKey"]
    assert out["first"] == (200, {"listenKey": listen_key(1)}) and len(lk) == 64 and lk.isalnum()
    assert out["again"] == out["first"]                  # the account's active key, extended
    assert out["after_again"] == T0_MS + 10 * 60 * 1000 + VALIDITY_MS == T0_MS + 70 * 60 * 1000
    assert out["other"][1]["listenKey"] == listen_key(2) != lk
    assert out["put"] == (200, {}) and out["after_put"] == T0_MS + 30 * 60 * 1000 + HOUR_MS
    assert out["put_query"] == (200, {})
    assert out["delete"] == (200, {}) and out["after_delete"] == 0
    gone = (400, {"code": -1125, "msg": "This listenKey does not exist."})
    assert out["put_deleted"] == gone and out["delete_deleted"] == gone
    assert out["revived"] == out["first"]  # the same key again: it is the account's


def test_a_key_not_kept_alive_expires_after_60_minutes_of_the_clock(h):
    async def go(c):
        await rest(c, "POST", 1)
        h.now_ms = T0_MS + HOUR_MS - 1
        last_moment = await rest(c, "PUT", 1, listenKey=listen_key(1))  # valid until T0 + 2 h - 1 now
        h.now_ms = T0_MS + 2 * HOUR_MS - 2
        still = await rest(c, "PUT", 1, listenKey=listen_key(1))
        h.now_ms += HOUR_MS  # exactly when it ends
        expired = await rest(c, "PUT", 1, listenKey=listen_key(1))
        expired_delete = await rest(c, "DELETE", 1, listenKey=listen_key(1))
        return last_moment, still, expired, expired_delete

    last_moment, still, expired, expired_delete = run(h, go)
    assert last_moment == (200, {}) and still == (200, {})
    assert expired == (400, {"code": -1125, "msg": "This listenKey does not exist."}) == expired_delete


def test_api_key_and_parameter_errors(h):
    lk2 = listen_key(2)

    async def go(c):
        await rest(c, "POST", 2)
        return {
            "no_key": await rest(c, "POST", None, headers={}),
            "empty_key": await rest(c, "POST", None, headers={"X-MBX-APIKEY": ""}),
            "unknown_key": await rest(c, "POST", None, headers={"X-MBX-APIKEY": "no-such-key"}),
            "put_no_listen_key": await rest(c, "PUT", 1),
            "delete_empty_listen_key": await rest(c, "DELETE", 1, listenKey=""),
            "put_unknown": await rest(c, "PUT", 1, listenKey="x" * 64),
            "put_other_accounts": await rest(c, "PUT", 1, listenKey=lk2),
            "delete_other_accounts": await rest(c, "DELETE", 1, listenKey=lk2),
            "unknown_key_put": await rest(c, "PUT", None, headers={"X-MBX-APIKEY": "no-such-key"}, listenKey=lk2),
        }

    out = run(h, go)
    bad_format = (401, {"code": -2014, "msg": "API-key format invalid."})
    rejected = (401, {"code": -2015, "msg": "Invalid API-key, IP, or permissions for action."})
    assert out["no_key"] == bad_format == out["empty_key"]
    assert out["unknown_key"] == rejected == out["unknown_key_put"]
    mandatory = (400, {"code": -1102, "msg": "Mandatory parameter 'listenKey' was not sent, was empty/null, or malformed."})
    assert out["put_no_listen_key"] == mandatory == out["delete_empty_listen_key"]
    gone = (400, {"code": -1125, "msg": "This listenKey does not exist."})
    assert out["put_unknown"] == gone == out["put_other_accounts"] == out["delete_other_accounts"]
    assert int(h.app[LISTEN_EXPIRY_MS][2]) == T0_MS + HOUR_MS  # account 2's key untouched


def test_a_key_without_user_stream_permission_is_rejected():
    h = EdgeHarness()
    h.app = make_app(h.cfg, clock_ms=lambda: T0_MS,
                     keys=KeyStore([ApiKey("trade-only", "s", 1, frozenset({"TRADE", "USER_DATA"}))]))

    async def go(c):
        return await rest(c, "POST", None, headers={"X-MBX-APIKEY": "trade-only"})

    assert run(h, go) == (401, {"code": -2015, "msg": "Invalid API-key, IP, or permissions for action."})


def test_websocket_api_start_ping_stop(h):
    async def go(c):
        async with c.ws_connect("/ws-api/v3") as ws:
            async def call(method, **params):
                await ws.send_str(orjson.dumps({"id": method, "method": method, "params": params}).decode())
                return orjson.loads((await ws.receive()).data)

            key1 = KEYS[1][0]
            out = {"start": await call("userDataStream.start", apiKey=key1)}
            h.now_ms += 30 * 60 * 1000
            out["ping"] = await call("userDataStream.ping", apiKey=key1, listenKey=listen_key(1))
            out["expiry"] = int(h.app[LISTEN_EXPIRY_MS][1])
            out["stop"] = await call("userDataStream.stop", apiKey=key1, listenKey=listen_key(1))
            out["ping_stopped"] = await call("userDataStream.ping", apiKey=key1, listenKey=listen_key(1))
            out["no_api_key"] = await call("userDataStream.start")
            out["unknown_api_key"] = await call("userDataStream.start", apiKey="no-such-key")
            out["no_listen_key"] = await call("userDataStream.ping", apiKey=key1)
            out["other_accounts"] = await call("userDataStream.stop", apiKey=KEYS[2][0], listenKey=listen_key(1))
            return out

    out = run(h, go)
    assert out["start"] == {"id": "userDataStream.start", "status": 200, "result": {"listenKey": listen_key(1)},
                            "rateLimits": []}
    assert out["ping"] == {"id": "userDataStream.ping", "status": 200, "result": {}, "rateLimits": []}
    assert out["expiry"] == T0_MS + 30 * 60 * 1000 + HOUR_MS
    assert out["stop"] == {"id": "userDataStream.stop", "status": 200, "result": {}, "rateLimits": []}
    assert out["ping_stopped"]["status"] == 400
    assert out["ping_stopped"]["error"] == {"code": -1125, "msg": "This listenKey does not exist."}
    assert out["no_api_key"]["error"] == {
        "code": -1102, "msg": "Mandatory parameter 'apiKey' was not sent, was empty/null, or malformed."}
    assert out["unknown_api_key"]["status"] == 401 and out["unknown_api_key"]["error"]["code"] == -2015
    assert out["no_listen_key"]["error"] == {
        "code": -1102, "msg": "Mandatory parameter 'listenKey' was not sent, was empty/null, or malformed."}
    assert out["other_accounts"]["error"]["code"] == -1125


def test_an_unknown_or_expired_listen_key_is_refused_before_the_upgrade(h):
    async def go(c):
        out = {"unknown": await c.get(f"/ws/{'a' * 64}"), "combined": await c.get(f"/stream?streams=btcusdt@trade/{'b' * 64}")}
        await rest(c, "POST", 1)
        h.now_ms += HOUR_MS
        out["expired"] = await c.get(f"/ws/{listen_key(1)}")
        return {k: (r.status, await r.json()) for k, r in out.items()}

    out = run(h, go)
    gone = (400, {"code": -1125, "msg": "This listenKey does not exist."})
    assert out == {"unknown": gone, "combined": gone, "expired": gone}


def test_every_edge_process_computes_the_same_key_and_shares_its_validity():
    """Two apps (two edge processes) with the same KeyStore and one validity array: a key made on
    one is known to the other, and a keepalive on either extends it for both."""
    h = EdgeHarness()
    shared = np.zeros(h.cfg.engine.max_accounts, np.int64)
    now = [T0_MS]
    a, b = (make_app(h.cfg, clock_ms=lambda: now[0], keys=h.keys, listen_expiry_ms=shared) for _ in range(2))
    key1 = h.keys.get(KEYS[1][0])
    lk = a[LISTEN_KEYS].start(key1)
    assert b[LISTEN_KEYS].account_of(lk) == 1
    now[0] += 50 * 60 * 1000
    b[LISTEN_KEYS].keepalive(key1, lk)
    now[0] += 50 * 60 * 1000
    assert a[LISTEN_KEYS].account_of(lk) == 1 and int(shared[1]) == T0_MS + 50 * 60 * 1000 + HOUR_MS
    a[LISTEN_KEYS].close(key1, lk)
    with pytest.raises(BinanceError, match="-1125"):
        b[LISTEN_KEYS].account_of(lk)
    with pytest.raises(ValueError, match="int64"):
        make_app(h.cfg, keys=h.keys, listen_expiry_ms=np.zeros(4, np.int32))


def test_a_new_key_store_is_seen_and_an_accounts_key_comes_from_its_first_api_key():
    """The listen key follows the KeyStore the app holds (keys come as a new store): with a second
    API key for an account, its key is still one, from the first key by api_key."""
    from ganntec.edge.appkeys import KEYS as KEYS_KEY

    h = EdgeHarness()
    listen = h.app[LISTEN_KEYS]
    key1 = h.keys.get(KEYS[1][0])
    lk = listen.start(key1)
    second = ApiKey("another-key-account-1", "another-secret", 1)  # sorts before "key-account-1"
    h.app[KEYS_KEY] = KeyStore([*h.keys, second])  # admitted before the app starts (aiohttp freezes it then)
    assert listen.start(key1) == listen.start(second) == sign("another-secret", "listenKey") != lk
    with pytest.raises(BinanceError, match="-1125"):
        listen.account_of(lk)
