"""Request security (ganntec.edge.auth) against binance-spot-api-docs rest-api.md: the documented
HMAC vectors byte for byte, query/body/mixed signing, every refusal with Binance's code, text and
HTTP status, the timing edges, and a request built the way ccxt's binance sign() builds it."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from urllib.parse import quote, urlencode

import pytest
import yarl
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from ganntec.edge import auth as A
from ganntec.edge import errors as E
from ganntec.edge.errors import BinanceError

# rest-api.md "SIGNED Endpoint Examples for POST /api/v3/order" > "HMAC Keys"
DOC_KEY = "vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duEh8A"
DOC_SECRET = "NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j"
DOC_PAYLOAD = ("symbol=LTCBTC&side=BUY&type=LIMIT&timeInForce=GTC&quantity=1&price=0.1"
               "&recvWindow=5000&timestamp=1499827319559")
DOC_SIG = "c8db56825ae71d6d79447849e617115f4a920fa2acdcab2b053c4b2838bd6b71"
DOC_PAYLOAD_UTF8 = ("symbol=%EF%BC%91%EF%BC%92%EF%BC%93%EF%BC%94%EF%BC%95%EF%BC%96&side=BUY&type=LIMIT"
                    "&timeInForce=GTC&quantity=1&price=0.1&recvWindow=5000&timestamp=1499827319559")
DOC_SIG_UTF8 = "e1353ec6b14d888f1164ae9af8228a3dbd508bc82eb867db8ab6046442f33ef3"
# "Example 3: Mixed query string and request body" of the same section before Binance's commit
# f83a5bf ("Clarified documentation on how to compute signature"): no '&' between GTC and quantity.
DOC_MIXED_QUERY = "symbol=LTCBTC&side=BUY&type=LIMIT&timeInForce=GTC"
DOC_MIXED_BODY = "quantity=1&price=0.1&recvWindow=5000&timestamp=1499827319559"
DOC_SIG_MIXED = "0fd168b8ddb4876a0358a8d14d0c9f3da0e9b20c5d52b2a00fcf7d1c602f9a77"
DOC_TS = 1499827319559

READER = A.ApiKey("readerKey", "readerSecret", account_id=2, permissions={"USER_DATA", "USER_STREAM"})
KEYS = A.KeyStore([A.ApiKey(DOC_KEY, DOC_SECRET, account_id=1), READER])
HDR = {"X-MBX-APIKEY": DOC_KEY}
NOW_MS = 1_700_000_000_123


def auth(method="POST", query="", body="", headers=HDR, now_ms=DOC_TS, need="TRADE", keys=KEYS):
    return A.authenticate(method, query, body, headers, keys, now_ms, need)


def refused(**kw) -> tuple[int, int, str]:
    with pytest.raises(BinanceError) as exc:
        auth(**kw)
    return exc.value.http_status, exc.value.code, exc.value.msg


def signed(params: str, secret: str = DOC_SECRET) -> str:
    return f"{params}&signature={A.sign(secret, params)}"


DOC_PARAMS = {"symbol": "LTCBTC", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC", "quantity": "1",
              "price": "0.1", "recvWindow": "5000", "timestamp": "1499827319559"}


# --- the documented vectors ------------------------------------------------------------------

def test_doc_vectors_byte_for_byte():
    assert A.sign(DOC_SECRET, DOC_PAYLOAD) == DOC_SIG
    assert A.sign(DOC_SECRET, DOC_PAYLOAD_UTF8) == DOC_SIG_UTF8
    assert A.sign(DOC_SECRET, DOC_MIXED_QUERY + DOC_MIXED_BODY) == DOC_SIG_MIXED
    # and openssl's way, independent of the module
    assert hmac.new(DOC_SECRET.encode(), DOC_PAYLOAD.encode(), hashlib.sha256).hexdigest() == DOC_SIG


def test_doc_request_as_query_string():
    key, params = auth(query=f"{DOC_PAYLOAD}&signature={DOC_SIG}")
    assert key.account_id == 1 and params == DOC_PARAMS


def test_doc_request_as_body():
    key, params = auth(body=f"{DOC_PAYLOAD}&signature={DOC_SIG}")
    assert key.api_key == DOC_KEY and params == DOC_PARAMS


def test_doc_request_mixed_query_and_body():
    _, params = auth(query=DOC_MIXED_QUERY, body=f"{DOC_MIXED_BODY}&signature={DOC_SIG_MIXED}")
    assert params == DOC_PARAMS
    # signature in the query string, the rest in the body: same payload, same signature
    _, params = auth(query=f"{DOC_MIXED_QUERY}&signature={DOC_SIG_MIXED}", body=DOC_MIXED_BODY)
    assert params == DOC_PARAMS
    # the same split signed as if joined with '&' is a different payload
    assert refused(query=DOC_MIXED_QUERY, body=f"{DOC_MIXED_BODY}&signature={DOC_SIG}")[1] == -1022


def test_doc_request_non_ascii_symbol_is_decoded():
    _, params = auth(query=f"{DOC_PAYLOAD_UTF8}&signature={DOC_SIG_UTF8}")
    assert params["symbol"] == "１２３４５６"


def test_hmac_signature_is_case_insensitive():
    _, params = auth(query=f"{DOC_PAYLOAD}&signature={DOC_SIG.upper()}")
    assert params == DOC_PARAMS


def test_signature_anywhere_in_the_query():
    head, tail = DOC_PAYLOAD.split("&quantity=")
    _, params = auth(query=f"{head}&signature={DOC_SIG}&quantity={tail}")
    assert params == DOC_PARAMS


def test_get_reads_only_the_query_string():
    assert auth(method="GET", query=f"{DOC_PAYLOAD}&signature={DOC_SIG}", body="junk=1")[1] == DOC_PARAMS
    assert refused(method="GET", body=f"{DOC_PAYLOAD}&signature={DOC_SIG}") == (
        400, -1102, "Mandatory parameter 'signature' was not sent, was empty/null, or malformed.")


def test_query_string_wins_over_body():
    # rest-api.md "General Information on Endpoints": sent in both -> the query string's value
    query = "symbol=LTCBTC&timestamp=1499827319559"
    body = "symbol=BNBBTC&quantity=2"
    _, params = auth(query=query, body=f"{body}&signature={A.sign(DOC_SECRET, query + body)}")
    assert params == {"symbol": "LTCBTC", "quantity": "2", "timestamp": "1499827319559"}


# --- the ccxt way ---------------------------------------------------------------------------

def ccxt_binance_sign(method: str, params: dict, api_key: str, secret: str, nonce: int, recv_window=10000):
    """ccxt python binance.py sign() for api 'private' (4.5.x): timestamp first, the params,
    recvWindow (options default 10000) last; urllib urlencode with quote; signature appended;
    GET/DELETE in the URL, POST/PUT in a form body; the key in X-MBX-APIKEY."""
    extended = {"timestamp": nonce, **params}
    if recv_window is not None:
        extended["recvWindow"] = recv_window
    query = urlencode({k: ("true" if v is True else "false" if v is False else v) for k, v in extended.items()},
                      quote_via=quote)
    query += "&signature=" + hmac.new(secret.encode(), query.encode(), hashlib.sha256).hexdigest()
    headers = {"X-MBX-APIKEY": api_key}
    if method in ("GET", "DELETE"):
        return query, "", headers
    headers["Content-Type"] = "application/x-www-form-urlencoded"
    return "", query, headers


ORDER = {"symbol": "BTCUSDT", "type": "LIMIT", "side": "BUY", "quantity": "0.001", "price": "30000.01",
         "timeInForce": "GTC", "newClientOrderId": "x-R4BD3S82 a/b:c"}


@pytest.mark.parametrize("method", ["POST", "PUT", "GET", "DELETE"])
def test_ccxt_signed_request_is_accepted(method):
    query, body, headers = ccxt_binance_sign(method, ORDER, DOC_KEY, DOC_SECRET, NOW_MS - 250)
    key, params = auth(method=method, query=query, body=body, headers=headers, now_ms=NOW_MS)
    assert key.account_id == 1
    assert params == {"timestamp": str(NOW_MS - 250), **ORDER, "recvWindow": "10000"}


def test_ccxt_request_through_aiohttp_raw_query_string():
    """Wired the way routes will wire it: raw query string, body as received."""

    async def handler(request: web.Request) -> web.Response:
        body = (await request.read()).decode()
        key, params = A.authenticate(request.method, request.rel_url.raw_query_string, body,
                                     request.headers, KEYS, NOW_MS, "TRADE")
        return E.json_response({"account": key.account_id, "params": params})

    app = web.Application(middlewares=[E.binance_errors])
    app.router.add_route("*", "/api/v3/order", handler)

    async def go():
        out = []
        async with TestClient(TestServer(app)) as client:
            for method in ("GET", "POST", "DELETE"):
                query, body, headers = ccxt_binance_sign(method, ORDER, DOC_KEY, DOC_SECRET, NOW_MS)
                # ccxt's async transport sends yarl.URL(url, encoded=True): the signed bytes as they are
                url = yarl.URL(str(client.make_url("/api/v3/order")) + ("?" + query if query else ""), encoded=True)
                resp = await client.session.request(method, url, data=body or None, headers=headers)
                out.append((resp.status, await resp.json(content_type=None)))
            resp = await client.post("/api/v3/order", data=f"{DOC_PAYLOAD}&signature=0", headers=HDR)
            out.append((resp.status, await resp.json(content_type=None)))
        return out

    results = asyncio.run(go())
    for status, body in results[:3]:
        assert status == 200 and body == {"account": 1, "params": {"timestamp": str(NOW_MS), **ORDER,
                                                                   "recvWindow": "10000"}}
    assert results[3] == (400, {"code": -1022, "msg": "Signature for this request is not valid."})


# --- refusals -------------------------------------------------------------------------------

BAD_KEY_FMT = (401, -2014, "API-key format invalid.")
REJECTED = (401, -2015, "Invalid API-key, IP, or permissions for action.")


@pytest.mark.parametrize("headers", [{}, {"X-MBX-APIKEY": ""}, {"Content-Type": "x"}])
def test_missing_api_key(headers):
    assert refused(query=f"{DOC_PAYLOAD}&signature={DOC_SIG}", headers=headers) == BAD_KEY_FMT


def test_header_name_is_case_insensitive():
    assert auth(query=f"{DOC_PAYLOAD}&signature={DOC_SIG}", headers={"x-mbx-apikey": DOC_KEY})[1] == DOC_PARAMS


def test_unknown_api_key_and_missing_permission():
    assert refused(query=f"{DOC_PAYLOAD}&signature={DOC_SIG}", headers={"X-MBX-APIKEY": "nope"}) == REJECTED
    q = signed("symbol=LTCBTC&timestamp=1499827319559", READER.secret)
    assert refused(query=q, headers={"X-MBX-APIKEY": READER.api_key}, need="TRADE") == REJECTED
    assert auth(query=q, headers={"X-MBX-APIKEY": READER.api_key}, need="USER_DATA")[0] is KEYS.get("readerKey")


def test_bad_signature():
    bad = (400, -1022, "Signature for this request is not valid.")
    assert refused(query=f"{DOC_PAYLOAD}&signature={DOC_SIG[:-1]}0") == bad
    assert refused(query=f"{DOC_PAYLOAD}&signature={DOC_SIG[:-2]}") == bad
    assert refused(query=f"{DOC_PAYLOAD}&signature=\u00e9\u00e9") == bad
    assert refused(query=signed(DOC_PAYLOAD, "anotherSecret")) == bad
    # one altered parameter after signing
    assert refused(query=f"{DOC_PAYLOAD.replace('price=0.1', 'price=0.2')}&signature={DOC_SIG}") == bad


@pytest.mark.parametrize("query, param", [
    (DOC_PAYLOAD, "signature"),
    (f"{DOC_PAYLOAD}&signature=", "signature"),
    ("symbol=LTCBTC&recvWindow=5000", "timestamp"),
    ("symbol=LTCBTC&timestamp=", "timestamp"),
    ("symbol=LTCBTC&timestamp=14998273195.59", "timestamp"),
    ("symbol=LTCBTC&timestamp=-1499827319559", "timestamp"),
    ("symbol=LTCBTC&timestamp=1499827319559&recvWindow=abc", "recvWindow"),
    ("symbol=LTCBTC&timestamp=1499827319559&recvWindow=", "recvWindow"),
    ("symbol=LTCBTC&timestamp=1499827319559&recvWindow=-5", "recvWindow"),
])
def test_mandatory_or_malformed(query, param):
    q = query if "signature" in query or param == "signature" else signed(query)
    msg = f"Mandatory parameter '{param}' was not sent, was empty/null, or malformed."
    assert refused(query=q) == (400, -1102, msg)


@pytest.mark.parametrize("query, body", [
    ("symbol=LTCBTC&symbol=BNBBTC&timestamp=1499827319559", ""),
    ("", "timestamp=1499827319559&quantity=1&quantity=2"),
    ("timestamp=1499827319559&signature=a&signature=b", ""),
])
def test_duplicate_parameter(query, body):
    assert refused(query=query, body=body) == (400, -1101, "Duplicate values for a parameter detected.")


@pytest.mark.parametrize("window", ["60001", "60000.001", "99999999"])
def test_recv_window_above_max(window):
    q = signed(f"symbol=LTCBTC&timestamp={DOC_TS}&recvWindow={window}")
    assert refused(query=q) == (400, -1102, "'recvWindow' contains unexpected value. Cannot be greater than 60000.")


def test_recv_window_precision():
    q = signed(f"symbol=LTCBTC&timestamp={DOC_TS}&recvWindow=5000.0001")
    assert refused(query=q) == (400, -1111, "Parameter 'recvWindow' has too much precision.")
    assert auth(query=signed(f"timestamp={DOC_TS - 60000}&recvWindow=60000.000"))[1]["recvWindow"] == "60000.000"


# --- timing: "Timing security" pseudo-code --------------------------------------------------

OUTSIDE = (400, -1021, "Timestamp for this request is outside of the recvWindow.")
AHEAD = (400, -1021, "Timestamp for this request was 1000ms ahead of the server's time.")


def at(ts, window=None, now_ms=NOW_MS):
    q = f"symbol=LTCBTC&timestamp={ts}" + (f"&recvWindow={window}" if window is not None else "")
    return dict(query=signed(q), now_ms=now_ms)


def test_default_window_boundary():
    assert auth(**at(NOW_MS - 5000))[1]["timestamp"] == str(NOW_MS - 5000)  # serverTime - timestamp == 5000
    assert refused(**at(NOW_MS - 5001)) == OUTSIDE                           # 1 ms past


def test_explicit_window_boundary():
    assert auth(**at(NOW_MS - 60000, 60000))
    assert refused(**at(NOW_MS - 60001, 60000)) == OUTSIDE
    assert auth(**at(NOW_MS - 100, 100))
    assert refused(**at(NOW_MS - 101, 100)) == OUTSIDE
    assert auth(**at(NOW_MS, 0)) and refused(**at(NOW_MS - 1, 0)) == OUTSIDE


def test_ahead_of_server_time():
    assert auth(**at(NOW_MS + 999))       # timestamp < serverTime + 1 second
    assert refused(**at(NOW_MS + 1000)) == AHEAD
    assert refused(**at(NOW_MS + 10**6)) == AHEAD


def test_microseconds():
    now_us = NOW_MS * 1000
    assert auth(**at(now_us - 5_000_000))                  # microsecond timestamp, default window
    assert refused(**at(now_us - 5_000_001)) == OUTSIDE    # 1 microsecond past
    assert auth(**at(now_us - 5_000_346, "5000.346"))      # window with microseconds
    assert refused(**at(now_us - 5_000_347, "5000.346")) == OUTSIDE
    assert auth(**at(now_us + 999_999)) and refused(**at(now_us + 1_000_000)) == AHEAD
    assert auth(**at(NOW_MS - 5000, "5000.5")) and refused(**at(NOW_MS - 5001, "5000.5")) == OUTSIDE


def test_signature_is_checked_before_timing():
    # a stale request with a wrong signature reports the signature
    assert refused(query=f"symbol=LTCBTC&timestamp={NOW_MS - 10**6}&signature=00", now_ms=NOW_MS)[1] == -1022


# --- USER_STREAM, key store ---------------------------------------------------------------

def test_user_stream_needs_only_the_key():
    key, params = auth(method="POST", need="USER_STREAM")
    assert key.account_id == 1 and params == {}
    assert auth(method="PUT", body="listenKey=abc", need="USER_STREAM")[1] == {"listenKey": "abc"}
    assert refused(headers={}, need="USER_STREAM") == BAD_KEY_FMT
    only_data = A.KeyStore([A.ApiKey("k", "s", 3, {"USER_DATA"})])
    assert refused(headers={"X-MBX-APIKEY": "k"}, need="USER_STREAM", keys=only_data) == REJECTED


def test_key_store_and_api_key():
    assert len(KEYS) == 2 and DOC_KEY in KEYS and KEYS.get("nope") is None
    assert KEYS.get(DOC_KEY).permissions == frozenset(A.SECURITY_TYPES)
    assert DOC_SECRET not in repr(KEYS.get(DOC_KEY))
    with pytest.raises(ValueError):
        A.KeyStore([A.ApiKey("a", "s", 1), A.ApiKey("a", "t", 2)])
    with pytest.raises(ValueError):
        A.ApiKey("a", "s", 1, {"WITHDRAW"})
    with pytest.raises(ValueError):
        A.ApiKey("a", "", 1)
    with pytest.raises(ValueError):
        auth(need="NONE")
