"""Edge benchmark: signed Binance new-order requests through `ganntec run`'s HTTP edge against a
bare aiohttp handler, and market-data fan-out to WebSocket subscribers.

    python bench/edge.py            # 5 runs of 20,000 + 10,000 orders per system, 2,000 trades; ~2-3 min
    python bench/edge.py --quick    # 3 runs of 3,000 + 2,000, 300 trades; well under a minute

Systems, all on loopback, each server in its own process, in the same run:
  ganntec   `python -m ganntec.cli run --config <tmp toml> --data-dir <tmp> --port 0` started for
            real (journal.durability "os", placement "single", a unique instance name, ten
            accounts funded with 10^9 USDT and 10^7 BTC, BTCUSDT with max_num_orders 100,000);
            the edge's port is read from its "listening on http://" log line, the API keys from
            <data-dir>/demo-accounts.json. Processes: the supervisor, the engine worker, the edge
            (uvloop, aiohttp), the history process (SQLite; its CPU is counted too). Stopped with SIGTERM and waited for; its /dev/shm entries checked.
  aiohttp   the peer: a bare aiohttp app in one process (uvloop, AppRunner without access log,
            TCPSite on 127.0.0.1 port 0), whose POST /api/v3/order reads the body and answers
            200 with a fixed order JSON of the shape ganntec answers (ACK or RESULT), serialised
            by orjson, with no checks at all.

The load generator is one process (multiprocessing spawn) running uvloop and one aiohttp
ClientSession; the same code, the same requests and the same process drive both systems.
Request i is POST /api/v3/order with a urlencoded body, signed as Binance requires (HMAC-SHA256
of the body with `timestamp` in it, by ganntec.edge.auth.sign, `signature` appended, key in
X-MBX-APIKEY; signed when sent): a LIMIT GTC order for 0.001 BTC with a unique newClientOrderId,
BUY for even i (accounts 1, 3, 5, 7), SELL for odd i (2, 4, 6, 8), prices from a seeded
generator (bids 99.95-100.04, asks 99.96-100.05), so orders rest and about half cross (each
cross fills one resting order; the book stays a few levels deep), newOrderRespType RESULT
(--resp-type ACK for the shorter answer). Every answer must be HTTP 200 with a JSON body; any
other status, a timeout or a connection error is counted and makes the run invalid.

What is measured:
  <system>.new_order.throughput_per_s
            closed loop, as fast as the server answers: K connections (--connections, 16), each
            sends its next request when its previous answer is in; requests / (first send ..
            last answer) over a fixed number of requests, after a warm-up on the same
            connections. Runs alternate ganntec, aiohttp, ...; the median of --reps runs.
  <system>.new_order.latency_p{50,90,99,999}_us
            open loop at half of that system's median max rate: requests dispatched on a fixed
            schedule (a pacer on the event loop wakes every <= 1 ms and sends what is due, each
            request its own task, up to 64 connections), never waiting for answers. Latency =
            answer read - the moment the request was handed to aiohttp (time.perf_counter_ns in
            the generator); how late the pacer sent is reported beside it (send_lag_p99_us). The
            median of each percentile over --reps runs. These runs follow the closed-loop ones, so
            ganntec's state (its edge keeps up to 200,000 ended orders) is bigger than in them.
  <system>.new_order.low_rate_latency_p{50,99}_us
            the same, paced at the market-data trade rate (--trade-rate): nearly one request at a
            time with the processes idle between, so the wake-ups of this host are the floor of
            any latency figure here.
  ganntec.market_data.latency_p{50,90,99,999}_us
            100 WebSocket subscribers (--subscribers) to ws://.../ws/btcusdt@trade, in one
            process of their own (uvloop, a minimal RFC 6455 client on asyncio.Protocol: each
            received chunk stamped with time.time_ns() in data_received, frames parsed there,
            JSON parsed after the run; every connection's subscription confirmed by a
            LIST_SUBSCRIPTIONS answer before trading starts). The book is emptied first (DELETE
            /api/v3/openOrders for accounts 1-8, then GET /api/v3/depth must show only what is
            placed next); account 9 rests N sells of 0.001 at 100.00; then a trader (the
            generator process) sends N crossing BUYs of 0.001 at 100.00 from account 10 paced at
            --trade-rate (newOrderRespType FULL: its one fill's tradeId names the trade), taking
            time.time_ns() just before each request is handed to aiohttp. Latency = a
            subscriber's receive time of trade t - the send time of the order that made t, over
            every subscriber and trade (all clocks are this host's CLOCK_REALTIME). Also per
            trade: the first and the last subscriber to get it, and the order's HTTP round trip.
            A subscriber missing a trade, or a trade in a wrong order, makes the run invalid.
  CPU       user + system seconds of every process in each timed window (psutil), per request.

Targets (printed beside the figures, met or MISSED): ganntec >= 70% of the bare handler's
requests/s; new-order p99 <= 2 ms at half of the max rate; market data p99 <= 1 ms to 100
subscribers. On a 2-core host the generator, the servers and ganntec's processes share the
cores: the per-process CPU table shows which of them is the bottleneck. When the generator is
~100% busy (against the bare handler it is, here), that system's orders/s is the generator's
limit, so ganntec/aiohttp is an upper bound. Absolute figures move with other load on the
machine (printed), ratios less.

The last line printed is one JSON object with every figure and the ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import multiprocessing
import os
import platform
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np
import orjson
import psutil

BENCH = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, BENCH)

from ganntec.edge.auth import API_KEY_HEADER, sign  # noqa: E402
from ganntec.edge.errors import JSON_CONTENT_TYPE  # noqa: E402
from ganntec.shm.segment import SHM_DIR, remove_stale  # noqa: E402

from benchlib import BaseReport, BenchFailure, CpuMeter, cpu_model  # noqa: E402

CTX = multiprocessing.get_context("spawn")
HOST = "127.0.0.1"
SYMBOL = "BTCUSDT"
STREAM = "btcusdt@trade"
TRADER_ACCOUNTS = range(1, 9)       # the new-order load: even i -> BUY from 1, 3, 5, 7; odd -> SELL from 2, 4, 6, 8
MAKER_ACCOUNT, TAKER_ACCOUNT = 9, 10  # market data: resting sells, crossing buys
OPEN_POOL = 64                      # connections the open-loop generator may use
REQUEST_TIMEOUT_S = 10.0
START_TIMEOUT_S = 180.0             # `ganntec run` to its edge listening (numba compiles on a cold cache)
STOP_TIMEOUT_S = 60.0
PACER_TICK_S = 0.001                # uvloop timers have 1 ms resolution
TARGET_RATIO, TARGET_P99_US, TARGET_MD_P99_US = 0.70, 2000.0, 1000.0

CONFIG = """
[instance]
name = "{instance}"
[journal]
durability = "os"
[runtime]
placement = "single"
[edge]
port = 0
admin_port = 0
[security]
demo_keys = true
# the load comes from one IP and a few accounts, far above Binance's per-IP and per-account limits
[limits]
request_weight_per_minute = 2000000000
raw_requests_per_5m = 2000000000
orders_per_10s = 2000000000
orders_per_day = 2000000000
ws_connections_per_5m = 1000000
max_connections_per_ip = 100000
[[assets]]
name = "BTC"
precision = 8
[[assets]]
name = "USDT"
precision = 8
[[symbols]]
name = "BTCUSDT"
base = "BTC"
quote = "USDT"
tick_size = "0.01"
step_size = "0.001"
min_price = "0.01"
max_price = "100000"
min_qty = "0.001"
max_qty = "1000"
max_num_orders = 100000
"""
ACCOUNT = """[[accounts]]
id = {id}
balances = {{ USDT = "1000000000", BTC = "10000000" }}
"""


def config_text(instance: str) -> str:
    return CONFIG.format(instance=instance) + "".join(ACCOUNT.format(id=a) for a in range(1, 11))


def sizes(quick: bool) -> dict:
    if quick:
        return {"requests": 3_000, "open_requests": 2_000, "low_requests": 300, "warmup": 500, "reps": 3,
                "trades": 300, "trade_rate": 100}
    return {"requests": 20_000, "open_requests": 10_000, "low_requests": 2_000, "warmup": 2_000, "reps": 5,
            "trades": 2_000, "trade_rate": 200}


def percentiles_us(ns) -> dict:
    a = np.asarray(ns, dtype=np.float64) / 1000.0
    if not len(a):
        return {"p50": 0.0, "p90": 0.0, "p99": 0.0, "p999": 0.0}
    p50, p90, p99, p999 = np.percentile(a, [50, 90, 99, 99.9]).tolist()
    return {"p50": p50, "p90": p90, "p99": p99, "p999": p999}


def cpu_seconds(pids: dict) -> dict:
    """user + system CPU seconds so far of each named process (None: it is gone)."""
    out = {}
    for name, pid in pids.items():
        try:
            t = psutil.Process(pid).cpu_times()
            out[name] = t.user + t.system
        except psutil.Error:
            out[name] = None
    return out


def cpu_delta(a: dict, b: dict) -> dict:
    return {k: b[k] - a[k] for k in a if a[k] is not None and b.get(k) is not None}


# --- the load generator (runs in a spawned job process) ------------------------------------------
class Orders:
    """The new-order stream: request i as (body, headers), signed at the moment it is made."""

    def __init__(self, keys: dict, resp_type: str, tag: str, seed: int = 7):
        self.keys = {a: (k["api_key"], k["api_secret"]) for a, k in keys.items()}
        self.headers = {a: {API_KEY_HEADER: k, "Content-Type": "application/x-www-form-urlencoded"}
                        for a, (k, _s) in self.keys.items()}
        self.resp_type, self.tag = resp_type, tag
        rng = random.Random(seed)
        self.offsets = [rng.randrange(10) for _ in range(4096)]

    def request(self, i: int) -> tuple[bytes, dict]:
        buy = i % 2 == 0
        account = TRADER_ACCOUNTS[i % 8]
        cents = 9995 + self.offsets[i % 4096] + (0 if buy else 1)  # bids 99.95-100.04, asks 99.96-100.05
        payload = (f"symbol={SYMBOL}&side={'BUY' if buy else 'SELL'}&type=LIMIT&timeInForce=GTC&quantity=0.001"
                   f"&price={cents // 100}.{cents % 100:02d}&newClientOrderId={self.tag}-{i}"
                   f"&newOrderRespType={self.resp_type}&timestamp={time.time_ns() // 1_000_000}")
        return f"{payload}&signature={sign(self.keys[account][1], payload)}".encode(), self.headers[account]


class Tally:
    """Answers of one run: errors (with a few samples) and order statuses."""

    def __init__(self):
        self.errors = 0
        self.samples: list[str] = []
        self.statuses: dict[str, int] = {}

    def bad(self, what: str) -> None:
        self.errors += 1
        if len(self.samples) < 5:
            self.samples.append(what[:300])

    def check(self, status: int, body: bytes) -> None:
        if status != 200:
            self.bad(f"HTTP {status}: {body[:200]!r}")
            return
        try:
            d = orjson.loads(body)
        except orjson.JSONDecodeError:
            self.bad(f"HTTP 200 with a body that is not JSON: {body[:200]!r}")
            return
        st = d.get("status", "ACK") if isinstance(d, dict) else "?"
        self.statuses[st] = self.statuses.get(st, 0) + 1


async def _post(session, body: bytes, headers: dict, tally: Tally) -> None:
    import aiohttp

    try:
        async with session.post("/api/v3/order", data=body, headers=headers) as resp:
            tally.check(resp.status, await resp.read())
    except (aiohttp.ClientError, TimeoutError) as exc:
        tally.bad(f"{type(exc).__name__}: {exc}")


async def _closed(session, orders: Orders, first: int, n: int, conns: int, tally: Tally) -> None:
    """Requests first .. first+n-1 over `conns` connections, each sending when its answer is in."""
    todo = iter(range(first, first + n))

    async def connection():
        for i in todo:  # shared: each connection takes the next request
            body, headers = orders.request(i)
            await _post(session, body, headers, tally)

    await asyncio.gather(*(connection() for _ in range(conns)))


async def _paced(session, orders: Orders, first: int, n: int, rate: float, tally: Tally):
    """Requests first .. first+n-1 at `rate` per second on a fixed schedule (open loop).
    Returns (latency ns, send lag ns) per request."""
    lat = np.zeros(n, np.int64)
    lag = np.zeros(n, np.int64)
    tasks = set()

    async def one(k: int, due: int):
        body, headers = orders.request(first + k)
        t0 = time.perf_counter_ns()
        lag[k] = t0 - due
        await _post(session, body, headers, tally)
        lat[k] = time.perf_counter_ns() - t0

    start = time.perf_counter_ns() + 1_000_000
    sent = 0
    while sent < n:
        now = time.perf_counter_ns()
        due = min(n, max(0, int((now - start) * rate / 1e9) + 1))
        while sent < due:
            t = asyncio.create_task(one(sent, start + int(sent * 1e9 / rate)))
            tasks.add(t)
            t.add_done_callback(tasks.discard)
            sent += 1
        if sent < n:
            wait = (start + sent * 1e9 / rate - time.perf_counter_ns()) / 1e9
            await asyncio.sleep(max(wait, PACER_TICK_S))
    await _finish(tasks, tally)
    return lat, lag


async def _finish(tasks: set, tally: Tally) -> None:
    """Wait for the requests still out (each has its own timeout); any left is an error."""
    if tasks:
        _, pending = await asyncio.wait(list(tasks), timeout=REQUEST_TIMEOUT_S + 5)
        for t in pending:
            t.cancel()
            tally.bad("a request still unanswered after the request timeout")


def _session(base_url: str, limit: int):
    import aiohttp

    return aiohttp.ClientSession(base_url, connector=aiohttp.TCPConnector(limit=limit),
                                 timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S))


async def _load(base_url, keys, resp_type, tag, n, warmup, conns, rate, watch):
    orders = Orders(keys, resp_type, tag)
    limit = conns if rate is None else max(conns, OPEN_POOL)
    async with _session(base_url, limit) as session:
        warm = Tally()
        await _closed(session, orders, 0, warmup, conns, warm)  # opens the connections, warms both ends
        if warm.errors:
            return {"warmup_failed": True, "errors": warm.errors, "samples": ["warm-up: " + s for s in warm.samples]}
        tally = Tally()
        me = psutil.Process()
        cpu0, own0 = cpu_seconds(watch), me.cpu_times()
        t0 = time.perf_counter_ns()
        lat = lag = None
        if rate is None:
            await _closed(session, orders, warmup, n, conns, tally)
        else:
            lat, lag = await _paced(session, orders, warmup, n, rate, tally)
        dt = time.perf_counter_ns() - t0
        own1, cpu1 = me.cpu_times(), cpu_seconds(watch)
    cpu = {"generator": own1.user + own1.system - own0.user - own0.system, **cpu_delta(cpu0, cpu1)}
    out = {"n": n, "seconds": dt / 1e9, "rate": n * 1e9 / dt, "errors": tally.errors, "samples": tally.samples,
           "statuses": tally.statuses, "cpu": cpu}
    if lat is not None:
        out["latency_us"] = percentiles_us(lat)
        out["send_lag_us"] = percentiles_us(lag)
        out["target_rate"] = rate
    return out


def load_run(base_url, keys, resp_type, tag, n, warmup, conns, rate=None, watch=None) -> dict:
    """One measurement: `warmup` requests closed loop, then `n` closed loop (rate None) or
    paced at `rate`/s."""
    import uvloop

    return uvloop.run(_load(base_url, keys, resp_type, tag, n, warmup, conns, rate, watch or {}))


def _signed_query(key: dict, **params) -> tuple[str, dict]:
    params["timestamp"] = time.time_ns() // 1_000_000
    payload = "&".join(f"{k}={v}" for k, v in params.items())
    return f"{payload}&signature={sign(key['api_secret'], payload)}", {API_KEY_HEADER: key["api_key"]}


async def _prepare_book(base_url, keys, n, tag):
    """Cancel every open order of the new-order accounts, rest n sells of 0.001 at 100.00 from
    the maker account, and check the book is exactly that."""
    async with _session(base_url, 16) as session:
        for account in TRADER_ACCOUNTS:
            query, headers = _signed_query(keys[account], symbol=SYMBOL)
            async with session.delete(f"/api/v3/openOrders?{query}", headers=headers) as resp:
                body = await resp.read()
                # -2011: nothing to cancel
                if resp.status != 200 and not (resp.status == 400 and b"-2011" in body):
                    raise BenchFailure(f"DELETE /api/v3/openOrders for account {account}: HTTP {resp.status} {body[:200]!r}")
        tally = Tally()
        key = keys[MAKER_ACCOUNT]
        headers = {API_KEY_HEADER: key["api_key"], "Content-Type": "application/x-www-form-urlencoded"}
        todo = iter(range(n))

        async def connection():
            for i in todo:
                payload = (f"symbol={SYMBOL}&side=SELL&type=LIMIT&timeInForce=GTC&quantity=0.001&price=100.00"
                           f"&newClientOrderId={tag}-{i}&newOrderRespType=ACK&timestamp={time.time_ns() // 1_000_000}")
                await _post(session, f"{payload}&signature={sign(key['api_secret'], payload)}".encode(), headers, tally)

        await asyncio.gather(*(connection() for _ in range(16)))
        if tally.errors:
            raise BenchFailure(f"resting the maker's sells: {tally.errors} errors, e.g. {tally.samples[0]}")
        async with session.get(f"/api/v3/depth?symbol={SYMBOL}&limit=5") as resp:
            depth = orjson.loads(await resp.read())
        want = {"bids": [], "asks": [["100.00000000", f"{n * 0.001:.8f}"]]}
        if {"bids": depth.get("bids"), "asks": depth.get("asks")} != want:
            raise BenchFailure(f"book after cancelling everything and resting {n} sells: {depth}, expected {want}")


def prepare_book(base_url, keys, n, tag) -> None:
    import uvloop

    uvloop.run(_prepare_book(base_url, keys, n, tag))


async def _cross(base_url, key, n, rate, tag, watch):
    """n crossing BUYs of 0.001 at 100.00, paced at `rate`/s; per trade id, the wall-clock ns at
    which its order was handed to aiohttp."""
    import aiohttp

    headers = {API_KEY_HEADER: key["api_key"], "Content-Type": "application/x-www-form-urlencoded"}
    trade_ids = np.full(n, -1, np.int64)
    sent_ns = np.zeros(n, np.int64)
    http_ns = np.zeros(n, np.int64)
    tally = Tally()
    async with _session(base_url, 16) as session:
        for _ in range(16):  # open a few connections before the first trade
            async with session.get("/api/v3/ping") as resp:
                await resp.read()
        tasks = set()

        async def one(i):
            payload = (f"symbol={SYMBOL}&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.001&price=100.00"
                       f"&newClientOrderId={tag}-{i}&newOrderRespType=FULL&timestamp={time.time_ns() // 1_000_000}")
            body = f"{payload}&signature={sign(key['api_secret'], payload)}".encode()
            t0 = time.perf_counter_ns()
            sent_ns[i] = time.time_ns()
            try:
                async with session.post("/api/v3/order", data=body, headers=headers) as resp:
                    raw = await resp.read()
                    http_ns[i] = time.perf_counter_ns() - t0
                    if resp.status != 200:
                        tally.bad(f"HTTP {resp.status}: {raw[:200]!r}")
                        return
                    d = orjson.loads(raw)
                    if d.get("status") != "FILLED" or len(d.get("fills", ())) != 1:
                        tally.bad(f"the crossing order did not fill against exactly one order: {raw[:300]!r}")
                        return
                    trade_ids[i] = d["fills"][0]["tradeId"]
            except (aiohttp.ClientError, TimeoutError) as exc:
                tally.bad(f"{type(exc).__name__}: {exc}")

        cpu0 = cpu_seconds(watch)
        me = psutil.Process()
        own0 = me.cpu_times()
        start = time.perf_counter_ns() + 1_000_000
        sent = 0
        while sent < n:
            due = min(n, max(0, int((time.perf_counter_ns() - start) * rate / 1e9) + 1))
            while sent < due:
                t = asyncio.create_task(one(sent))
                tasks.add(t)
                t.add_done_callback(tasks.discard)
                sent += 1
            if sent < n:
                await asyncio.sleep(max((start + sent * 1e9 / rate - time.perf_counter_ns()) / 1e9, PACER_TICK_S))
        await _finish(tasks, tally)
        own1, cpu1 = me.cpu_times(), cpu_seconds(watch)
    cpu = {"trader": own1.user + own1.system - own0.user - own0.system, **cpu_delta(cpu0, cpu1)}
    return {"trade_ids": trade_ids, "sent_ns": sent_ns, "http_us": percentiles_us(http_ns[http_ns > 0]),
            "errors": tally.errors, "samples": tally.samples, "cpu": cpu,
            "seconds": (time.perf_counter_ns() - start) / 1e9}


def cross(base_url, key, n, rate, tag, watch) -> dict:
    import uvloop

    return uvloop.run(_cross(base_url, key, n, rate, tag, watch))


# --- the market-data subscribers (a spawned process of their own) ---------------------------------
class Subscriber(asyncio.Protocol):
    """A minimal WebSocket client (RFC 6455): the upgrade, unmasked server frames, masked
    client frames (pong, one LIST_SUBSCRIPTIONS); every received chunk is stamped with
    time.time_ns() before anything else is done with it."""

    LIST = b'{"method":"LIST_SUBSCRIPTIONS","id":1}'

    def __init__(self, path: str, want: int, loop):
        self.path, self.want = path, want
        self.buf = bytearray()
        self.upgraded = False
        self.ready = loop.create_future()   # the server confirmed the subscription
        self.done = loop.create_future()    # `want` trade events are in, or the connection ended
        self.trades: list[tuple[int, bytes]] = []
        self.problem: str | None = None
        self.transport = None

    def connection_made(self, transport):
        self.transport = transport
        key = base64.b64encode(os.urandom(16)).decode()
        transport.write(f"GET {self.path} HTTP/1.1\r\nHost: {HOST}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())

    def _send(self, opcode: int, payload: bytes) -> None:
        # masked with a zero key (allowed: the key is any 32 bits), payloads here are < 126 bytes
        self.transport.write(bytes((0x80 | opcode, 0x80 | len(payload))) + b"\0\0\0\0" + payload)

    def _end(self, problem: str | None) -> None:
        if problem and not self.problem:
            self.problem = problem
        for fut in (self.ready, self.done):
            if not fut.done():
                fut.set_result(None)

    def data_received(self, data: bytes) -> None:
        now = time.time_ns()
        buf = self.buf
        buf += data
        if not self.upgraded:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(buf[:end])
            del buf[:end + 4]
            if not head.startswith(b"HTTP/1.1 101"):
                self._end(f"upgrade refused: {head[:100]!r}")
                return
            self.upgraded = True
            self._send(0x1, self.LIST)
        pos, size = 0, len(buf)
        while size - pos >= 2:
            b0, b1 = buf[pos], buf[pos + 1]
            length, hdr = b1 & 0x7F, 2
            if length == 126:
                if size - pos < 4:
                    break
                length, hdr = int.from_bytes(buf[pos + 2:pos + 4], "big"), 4
            elif length == 127:
                if size - pos < 10:
                    break
                length, hdr = int.from_bytes(buf[pos + 2:pos + 10], "big"), 10
            if size - pos < hdr + length:
                break
            payload = bytes(buf[pos + hdr:pos + hdr + length])
            pos += hdr + length
            opcode = b0 & 0x0F
            if not b0 & 0x80:
                self._end("a fragmented frame")
            elif opcode == 0x1:
                if payload.startswith(b'{"e":"trade"'):
                    self.trades.append((now, payload))
                    if len(self.trades) == self.want and not self.done.done():
                        self.done.set_result(None)
                elif payload == b'{"result":["btcusdt@trade"],"id":1}':
                    if not self.ready.done():
                        self.ready.set_result(None)
                else:
                    self._end(f"unexpected message {payload[:100]!r}")
            elif opcode == 0x9:
                self._send(0xA, payload)
            elif opcode == 0x8:
                self._end(f"closed by the server: {payload[:100]!r}")
        del buf[:pos]

    def connection_lost(self, exc):
        if not self.done.done():
            self._end(f"connection lost after {len(self.trades)} trades ({exc})")


async def _subscribe(conn, port, n_subs, want, timeout_s):
    loop = asyncio.get_running_loop()
    subs = []
    try:
        for _ in range(n_subs):
            sub = Subscriber(f"/ws/{STREAM}", want, loop)
            await asyncio.wait_for(loop.create_connection(lambda s=sub: s, HOST, port), 10)
            subs.append(sub)
        await asyncio.wait_for(asyncio.gather(*(s.ready for s in subs)), 30)
        problems = [s.problem for s in subs if s.problem]
        if problems:
            raise BenchFailure(f"{len(problems)} subscribers failed to subscribe, e.g. {problems[0]}")
        conn.send(("ready", os.getpid()))
        try:
            await asyncio.wait_for(asyncio.gather(*(s.done for s in subs)), timeout_s)
        except TimeoutError:
            pass
    finally:
        for s in subs:
            if s.transport is not None:
                s.transport.abort()
    ids = np.full((n_subs, want), -1, np.int64)
    ns = np.zeros((n_subs, want), np.int64)
    problems = []
    for k, s in enumerate(subs):
        for j, (t, payload) in enumerate(s.trades[:want]):
            ids[k, j] = orjson.loads(payload)["t"]
            ns[k, j] = t
        if s.problem:
            problems.append(s.problem)
        elif len(s.trades) < want:
            problems.append(f"{len(s.trades)} of {want} trades within {timeout_s:.0f} s")
    return {"trade_ids": ids, "recv_ns": ns, "problems": problems}


def _subscribers_main(conn, port, n_subs, want, timeout_s):
    import uvloop

    try:
        conn.send(("ok", uvloop.run(_subscribe(conn, port, n_subs, want, timeout_s))))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent
        conn.send(("error", f"subscribers: {type(exc).__name__}: {exc}"))
    finally:
        conn.close()


# --- the peer: a bare aiohttp handler -------------------------------------------------------------
def fixed_answer(resp_type: str) -> dict:
    """An order answer of the shape ganntec's POST /api/v3/order gives (trading.py)."""
    d = {"symbol": SYMBOL, "orderId": 12345, "orderListId": -1, "clientOrderId": "bench-12345",
         "transactTime": 1_700_000_000_000}
    if resp_type == "ACK":
        return d
    d.update({"price": "100.00000000", "origQty": "0.00100000", "executedQty": "0.00000000",
              "origQuoteOrderQty": "0.00000000", "cummulativeQuoteQty": "0.00000000", "status": "NEW",
              "timeInForce": "GTC", "type": "LIMIT", "side": "BUY", "workingTime": 1_700_000_000_000,
              "selfTradePreventionMode": "EXPIRE_MAKER"})
    return d


async def _peer(conn, resp_type):
    from aiohttp import web

    answer = fixed_answer(resp_type)

    async def new_order(request):
        await request.read()
        return web.Response(body=orjson.dumps(answer), headers={"Content-Type": JSON_CONTENT_TYPE})

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    app = web.Application()
    app.router.add_post("/api/v3/order", new_order)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, HOST, 0, reuse_port=True)
        await site.start()
        conn.send(("ok", runner.addresses[0][1]))
        await stop.wait()
    finally:
        await runner.cleanup()


def _peer_main(conn, resp_type):
    import uvloop

    try:
        uvloop.run(_peer(conn, resp_type))
    except BaseException as exc:  # noqa: BLE001
        conn.send(("error", f"peer: {type(exc).__name__}: {exc}"))


# --- processes ----------------------------------------------------------------------------------
def _job_main(conn):
    """A job process: runs module functions by name until told to stop."""
    while True:
        try:
            msg = conn.recv()
        except EOFError:
            return
        if msg is None:
            return
        name, kwargs = msg
        try:
            conn.send(("ok", globals()[name](**kwargs)))
        except BaseException as exc:  # noqa: BLE001
            conn.send(("error", f"{name}: {type(exc).__name__}: {exc}"))


def _recv(conn, proc, timeout_s: float, what: str):
    if not conn.poll(timeout_s):
        raise BenchFailure(f"{what}: no answer within {timeout_s:.0f} s")
    try:
        status, value = conn.recv()
    except EOFError:
        proc.join(1)
        raise BenchFailure(f"{what}: the process died (exit code {proc.exitcode})") from None
    if status == "error":
        raise BenchFailure(value)
    return status, value


class JobProcess:
    """A spawned process that runs the generator's jobs; killed on a timeout."""

    def __init__(self):
        self.conn, child = CTX.Pipe()
        self.proc = CTX.Process(target=_job_main, args=(child,), daemon=True)
        self.proc.start()
        child.close()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def call(self, name: str, timeout_s: float, **kwargs):
        if not self.proc.is_alive():
            raise BenchFailure(f"{name}: the generator process is gone")
        self.conn.send((name, kwargs))
        if not self.conn.poll(timeout_s):
            self.proc.kill()
            raise BenchFailure(f"{name}: no answer within {timeout_s:.0f} s; the generator process was killed")
        return _recv(self.conn, self.proc, 0, name)[1]

    def close(self) -> None:
        if self.proc.is_alive():
            try:
                self.conn.send(None)
            except OSError:
                pass
            self.proc.join(10)
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join(10)
        self.conn.close()


class Peer:
    """The bare aiohttp server in a spawned process."""

    def __init__(self, resp_type: str):
        self.conn, child = CTX.Pipe()
        self.proc = CTX.Process(target=_peer_main, args=(child, resp_type), daemon=True)
        self.proc.start()
        child.close()
        self.port = _recv(self.conn, self.proc, 60, "starting the aiohttp peer")[1]

    def stop(self) -> None:
        if self.proc.is_alive():
            os.kill(self.proc.pid, signal.SIGTERM)
            self.proc.join(10)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(10)
        self.conn.close()


class Ganntec:
    """`ganntec run` as a child process, its log lines collected by a reader thread."""

    def __init__(self, tmp: str, instance: str):
        self.instance = instance
        self.cfg = os.path.join(tmp, "ganntec.toml")
        self.data = os.path.join(tmp, "data")
        with open(self.cfg, "w") as f:
            f.write(config_text(instance))
        self.lines: list[str] = []
        self.changed = threading.Condition()
        self.ended = False
        self.proc = None

    def start(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "ganntec.cli", "run", "--config", self.cfg,
                                      "--data-dir", self.data, "--port", "0"],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        threading.Thread(target=self._read, daemon=True).start()
        line = self.wait_for("listening on http://", START_TIMEOUT_S)
        self.port = int(re.search(r"http://[0-9.]+:(\d+)", line).group(1))
        self.pids = {"supervisor": self.proc.pid,
                     "edge": int(re.search(r"\(pid (\d+)\)", line).group(1)),
                     "engines": int(re.search(r"engines=(\d+)", self.wait_for("engine workers:", 10)).group(1)),
                     "history": int(re.search(r"history \(pid (\d+)\)", self.wait_for("history (pid", 30)).group(1))}
        with open(os.path.join(self.data, "demo-accounts.json")) as f:
            self.keys = {k["account"]: k for k in json.load(f)}

    def _read(self):
        for line in self.proc.stdout:
            with self.changed:
                self.lines.append(line.rstrip())
                self.changed.notify_all()
        with self.changed:
            self.ended = True
            self.changed.notify_all()

    def wait_for(self, text: str, timeout_s: float) -> str:
        deadline = time.monotonic() + timeout_s
        with self.changed:
            while True:
                for line in self.lines:
                    if text in line:
                        return line
                left = deadline - time.monotonic()
                if self.ended or left <= 0:
                    why = f"exited ({self.proc.poll()})" if self.ended else f"no {text!r} within {timeout_s:.0f} s"
                    raise BenchFailure(f"ganntec run {why}; its log:\n    " + "\n    ".join(self.lines[-30:]))
                self.changed.wait(left)

    def restarts(self) -> list[str]:
        with self.changed:
            return [ln for ln in self.lines if "restart" in ln or "heartbeat" in ln or "Error" in ln]

    def stop(self) -> list[str]:
        """SIGTERM and wait; returns problems (did not stop cleanly, /dev/shm leftovers)."""
        problems = []
        if self.proc is None:
            return problems
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                problems.append(f"ganntec run did not stop within {STOP_TIMEOUT_S:.0f} s of SIGTERM; killed")
                self.proc.kill()
                self.proc.wait(30)
        if self.proc.returncode != 0 and not problems:
            problems.append(f"ganntec run exited with {self.proc.returncode}")
        for _ in range(50):  # the reader thread takes the last lines
            if self.ended:
                break
            time.sleep(0.02)
        if not any("stopped cleanly" in ln for ln in self.lines[-5:]):
            problems.append("ganntec run did not log 'stopped cleanly': " + " | ".join(self.lines[-5:]))
        left = leftovers(self.instance)
        if left:
            problems.append("left in /dev/shm: " + ", ".join(left))
            try:
                remove_stale(self.instance)
            except Exception as exc:  # noqa: BLE001
                problems.append(f"removing them: {exc}")
        return problems

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)
        try:
            remove_stale(self.instance)
        except Exception:  # noqa: BLE001
            pass


def leftovers(instance: str) -> list[str]:
    prefix = f"ganntec.{instance}."
    return sorted(p.name for p in SHM_DIR.iterdir() if p.name.startswith(prefix) or p.name.startswith("sem." + prefix))


# --- measurements -------------------------------------------------------------------------------
class Report(BaseReport):
    def __init__(self):
        super().__init__()
        self.runs: dict[str, list[dict]] = {}   # "<system>.closed" / "<system>.open" -> runs
        self.market: dict | None = None
        self.invalid: list[str] = []


def load_once(rep: Report, gen: JobProcess, system: str, url: str, keys: dict, args, sz: dict, kind: str,
              tag: str, n: int, rate: float | None, watch: dict) -> dict:
    """One generator run; kind: closed (max rate), open (paced at half of it), low (paced at the
    market-data trade rate)."""
    timeout = 60 + (n + sz["warmup"]) / (min(rate, 200) if rate else 200)
    r = gen.call("load_run", timeout, base_url=url, keys=keys, resp_type=args.resp_type, tag=tag, n=n,
                 warmup=sz["warmup"], conns=args.connections, rate=rate, watch=watch)
    if not r.get("warmup_failed"):
        rep.runs.setdefault(f"{system}.{kind}", []).append(r)
    if r["errors"]:
        raise BenchFailure(f"{system}: {r['errors']} requests failed, e.g. {r['samples'][0]}")
    return r


def measure_market(rep: Report, gen: JobProcess, g: Ganntec, args, sz: dict) -> dict:
    url = f"http://{HOST}:{g.port}"
    n = sz["trades"]
    gen.call("prepare_book", 120 + n / 50, base_url=url, keys=g.keys, n=n, tag="mk")
    conn, child = CTX.Pipe()
    timeout = 30 + 3 * n / sz["trade_rate"]
    subs = CTX.Process(target=_subscribers_main, args=(child, g.port, args.subscribers, n, timeout), daemon=True)
    subs.start()
    child.close()
    got = None
    try:
        _recv(conn, subs, 120, f"{args.subscribers} subscribers connecting")
        watch = {**g.pids, "subscribers": subs.pid}
        trader = gen.call("cross", timeout + 30, base_url=url, key=g.keys[TAKER_ACCOUNT], n=n,
                          rate=sz["trade_rate"], tag="tk", watch=watch)
        if trader["errors"]:  # the subscribers would wait for trades that never come
            raise BenchFailure(f"market data: the trader's crossing orders: {trader['errors']} failed, "
                               f"e.g. {trader['samples'][0]}")
        got = _recv(conn, subs, timeout + 60, "subscribers' results")[1]
    finally:
        subs.join(10 if got is not None else 0)  # done: it exits by itself; else it is stopped now
        if subs.is_alive():
            subs.kill()
            subs.join(10)
        conn.close()
    problems = list(got["problems"])
    sent = dict(zip(trader["trade_ids"].tolist(), trader["sent_ns"].tolist()))
    sent.pop(-1, None)
    ids, recv = got["trade_ids"], got["recv_ns"]
    valid = ids >= 0
    known = np.vectorize(lambda t: t in sent, otypes=[bool])(ids) & valid if ids.size else valid
    if (valid & ~known).any():
        problems.append(f"{int((valid & ~known).sum())} trade events of trades no crossing order made")
    for k in range(len(ids)):
        row = ids[k][valid[k]]
        if len(row) > 1 and (np.diff(row) <= 0).any():
            problems.append(f"subscriber {k}: trade ids out of order or repeated")
            break
    send = np.vectorize(lambda t: sent.get(t, 0), otypes=[np.int64])(ids) if ids.size else ids
    ok = known & (send > 0)
    lat = np.where(ok, recv - send, 0)
    samples = lat[ok]
    # per trade: the first and the last subscriber (only trades every subscriber got)
    complete = ok.all(axis=0)
    first = lat[:, complete].min(axis=0) if complete.any() else np.zeros(0)
    last = lat[:, complete].max(axis=0) if complete.any() else np.zeros(0)
    rep.market = {"subscribers": args.subscribers, "trades": n, "rate": sz["trade_rate"],
                  "latency_us": percentiles_us(samples), "first_us": percentiles_us(first),
                  "last_us": percentiles_us(last), "http_us": trader["http_us"], "samples": len(samples),
                  "expected": args.subscribers * n, "problems": problems, "cpu": trader["cpu"],
                  "seconds": trader["seconds"], "negative": int((samples < 0).sum())}
    if problems:
        raise BenchFailure("market data: " + "; ".join(problems[:3]))
    return rep.market


def run(rep: Report, args, sz: dict, tmp: str) -> None:
    instance = f"benchedge{os.getpid()}"
    gen = peer = g = None
    try:
        print("  starting ganntec run, the aiohttp peer and the load generator ...", file=sys.stderr, flush=True)
        gen = JobProcess()
        peer = Peer(args.resp_type)
        g = Ganntec(tmp, instance)
        g.start()
        systems = {"ganntec": (f"http://{HOST}:{g.port}", g.pids),
                   "aiohttp": (f"http://{HOST}:{peer.port}", {"server": peer.proc.pid})}
        best: dict[str, list[float]] = {s: [] for s in systems}
        for rep_i in range(sz["reps"]):
            for system, (url, pids) in systems.items():
                r = rep.attempt(f"{system} new orders, closed loop, {args.connections} connections (run {rep_i + 1})",
                                load_once, rep, gen, system, url, g.keys, args, sz, "closed", f"c{rep_i}",
                                sz["requests"], None, pids)
                if r:
                    best[system].append(r["rate"])
        for rep_i in range(sz["reps"]):
            for system, (url, pids) in systems.items():
                if not best[system]:
                    continue
                rate = statistics.median(best[system]) / 2
                rep.attempt(f"{system} new orders, open loop at {rate:,.0f}/s (run {rep_i + 1})", load_once, rep, gen,
                            system, url, g.keys, args, sz, "open", f"o{rep_i}", sz["open_requests"], rate, pids)
        for system, (url, pids) in systems.items():  # the floor: one request at a time, the host idle between
            rep.attempt(f"{system} new orders, open loop at {sz['trade_rate']}/s", load_once, rep, gen, system, url,
                        g.keys, args, sz, "low", "l", sz["low_requests"], sz["trade_rate"], pids)
        if args.subscribers:
            rep.attempt(f"market data: {args.subscribers} subscribers, {sz['trades']} trades at {sz['trade_rate']}/s",
                        measure_market, rep, gen, g, args, sz)
        trouble = g.restarts()
        if trouble:
            rep.failures.append({"what": "ganntec run", "error": "during the run: " + " | ".join(trouble[:3])})
    finally:
        if gen is not None:
            gen.close()
        if peer is not None:
            peer.stop()
        if g is not None:
            for problem in g.stop():
                rep.failures.append({"what": "stopping ganntec run", "error": problem})
            g.kill()


# --- the report ---------------------------------------------------------------------------------
def median_of(runs: list[dict], *path) -> float:
    vals = []
    for r in runs:
        v = r
        for p in path:
            v = v[p]
        vals.append(v)
    return statistics.median(vals)


def collect(rep: Report) -> None:
    f = rep.figures
    for system in ("ganntec", "aiohttp"):
        closed = [r for r in rep.runs.get(f"{system}.closed", []) if not r["errors"]]
        opened = [r for r in rep.runs.get(f"{system}.open", []) if not r["errors"]]
        errors = sum(r["errors"] for key in ("closed", "open", "low") for r in rep.runs.get(f"{system}.{key}", []))
        if closed:
            f[f"{system}.new_order.throughput_per_s"] = median_of(closed, "rate")
            for proc in closed[0]["cpu"]:
                f[f"{system}.new_order.cpu_us_per_request.{proc}"] = statistics.median(
                    r["cpu"].get(proc, 0) * 1e6 / r["n"] for r in closed)
        if opened:
            f[f"{system}.new_order.open_loop_rate_per_s"] = median_of(opened, "target_rate")
            for k in ("p50", "p90", "p99", "p999"):
                f[f"{system}.new_order.latency_{k}_us"] = median_of(opened, "latency_us", k)
            f[f"{system}.new_order.send_lag_p99_us"] = median_of(opened, "send_lag_us", "p99")
        low = [r for r in rep.runs.get(f"{system}.low", []) if not r["errors"]]
        if low:
            f[f"{system}.new_order.low_rate_per_s"] = low[0]["target_rate"]
            for k in ("p50", "p99"):
                f[f"{system}.new_order.low_rate_latency_{k}_us"] = low[0]["latency_us"][k]
        if any(rep.runs.get(f"{system}.{kind}") for kind in ("closed", "open", "low")):
            f[f"{system}.new_order.errors"] = errors
    m = rep.market
    if m and not m["problems"]:
        for k in ("p50", "p90", "p99", "p999"):
            f[f"ganntec.market_data.latency_{k}_us"] = m["latency_us"][k]
        for k in ("p50", "p99"):
            f[f"ganntec.market_data.first_subscriber_latency_{k}_us"] = m["first_us"][k]
            f[f"ganntec.market_data.last_subscriber_latency_{k}_us"] = m["last_us"][k]
            f[f"ganntec.market_data.order_http_latency_{k}_us"] = m["http_us"][k]
        f["ganntec.market_data.subscribers"] = m["subscribers"]
        f["ganntec.market_data.trades"] = m["trades"]
        f["ganntec.market_data.trades_per_s"] = m["rate"]
        for proc, sec in m["cpu"].items():
            f[f"ganntec.market_data.cpu_us_per_trade.{proc}"] = sec * 1e6 / m["trades"]


def ratios(f: dict) -> dict:
    out = {}
    g, a = f.get("ganntec.new_order.throughput_per_s"), f.get("aiohttp.new_order.throughput_per_s")
    if g and a:
        out["ganntec.new_order/aiohttp.new_order"] = g / a
    for k in ("p50", "p99"):
        gk, ak = f.get(f"ganntec.new_order.latency_{k}_us"), f.get(f"aiohttp.new_order.latency_{k}_us")
        if gk and ak:
            out[f"ganntec.new_order.latency_{k}_us/aiohttp.new_order.latency_{k}_us"] = gk / ak
    if "ganntec.new_order.latency_p99_us" in f:
        out["ganntec.new_order.latency_p99_us/target_2000us"] = f["ganntec.new_order.latency_p99_us"] / TARGET_P99_US
    if "ganntec.market_data.latency_p99_us" in f:
        out["ganntec.market_data.latency_p99_us/target_1000us"] = f["ganntec.market_data.latency_p99_us"] / TARGET_MD_P99_US
    return out


def targets(f: dict, r: dict) -> list:
    def row(value, ok, what, shown):
        return (None if value is None else ok(value)), what, ("not measured" if value is None else shown(value))

    return [
        row(r.get("ganntec.new_order/aiohttp.new_order"), lambda v: v >= TARGET_RATIO,
            "ganntec new orders/s >= 70% of the bare aiohttp handler's", lambda v: f"{v:.0%}"),
        row(f.get("ganntec.new_order.latency_p99_us"), lambda v: v <= TARGET_P99_US,
            "new-order p99 <= 2 ms at half of the max rate",
            lambda v: f"{v / 1000:.2f} ms at {f.get('ganntec.new_order.open_loop_rate_per_s', 0):,.0f}/s"),
        row(f.get("ganntec.market_data.latency_p99_us"), lambda v: v <= TARGET_MD_P99_US,
            "market data p99 <= 1 ms to 100 subscribers (order sent -> trade event received)",
            lambda v: f"{v / 1000:.2f} ms to {f.get('ganntec.market_data.subscribers', 0):.0f} subscribers"),
    ]


TARGET_MARK = {True: "met", False: "MISSED", None: "not measured"}


def print_report(rep: Report, args, sz: dict, host: dict) -> None:
    f = rep.figures
    print(f"\nedge benchmark{' (--quick)' if args.quick else ''}: POST /api/v3/order, LIMIT GTC 0.001 BTCUSDT, "
          f"HMAC-signed, newOrderRespType {args.resp_type}; one aiohttp load-generator process; "
          f"{sz['reps']} run(s) per figure, medians")
    print(f"host: {host['cpus']} CPUs ({host['cpu_model']}), Python {host['python']}; during the run: background "
          f"load {host['background_load_cores']:.2f} cores, steal {host['steal_cores']:.2f} cores\n")
    print(f"{'system':20} {'orders/s':>10} {'runs (orders/s)':>24} {'paced at/s':>10} {'p50 us':>8} {'p90 us':>8} "
          f"{'p99 us':>8} {'p99.9 us':>9} {'lag p99':>8} {'errors':>6}")
    for system in ("ganntec", "aiohttp"):
        name = f"{system}.new_order"
        runs = " ".join(f"{r['rate']:,.0f}" for r in rep.runs.get(f"{system}.closed", []))
        if f"{name}.throughput_per_s" not in f:
            print(f"{name:20} {'FAILED':>10} {runs:>24}")
            continue
        lat = [f.get(f"{name}.latency_{k}_us") for k in ("p50", "p90", "p99", "p999")]
        lat_s = (f"{f[name + '.open_loop_rate_per_s']:10,.0f} " + " ".join(f"{v:8.0f}" for v in lat[:3])
                 + f" {lat[3]:9.0f} {f[name + '.send_lag_p99_us']:8.0f}") if lat[0] is not None else f"{'FAILED':>10}"
        print(f"{name:20} {f[name + '.throughput_per_s']:10,.0f} {runs:>24} {lat_s} {f.get(name + '.errors', 0):6.0f}")
    r = ratios(f)
    if "ganntec.new_order/aiohttp.new_order" in r:
        print(f"ganntec.new_order / aiohttp.new_order throughput: {r['ganntec.new_order/aiohttp.new_order']:.2f}")
    print(f"(orders/s: closed loop over {sz['requests']:,} requests on {args.connections} connections after "
          f"{sz['warmup']:,} of warm-up; latency: {sz['open_requests']:,} requests paced at half of the median "
          f"orders/s, from handing the request to aiohttp to its answer read; lag: how late the pacer sent, us)")
    for system in ("ganntec", "aiohttp"):
        runs = rep.runs.get(f"{system}.open", [])
        if runs:
            print(f"{system} open-loop p99 per run, us: " + " ".join(f"{r['latency_us']['p99']:,.0f}" for r in runs))
    before = sz["reps"] * (sz["requests"] + sz["warmup"])
    print(f"(the open-loop runs follow the closed-loop ones: ganntec's edge already holds the state of {before:,} "
          f"orders then, and more with each run)")
    statuses = {}
    for r_ in rep.runs.get("ganntec.closed", []) + rep.runs.get("ganntec.open", []):
        for k, v in r_["statuses"].items():
            statuses[k] = statuses.get(k, 0) + v
    if statuses:
        total = sum(statuses.values())
        print("ganntec's answers: " + ", ".join(f"{k} {v / total:.0%}" for k, v in sorted(statuses.items())))
    low = [(s, f[f"{s}.new_order.low_rate_latency_p50_us"], f[f"{s}.new_order.low_rate_latency_p99_us"])
           for s in ("ganntec", "aiohttp") if f"{s}.new_order.low_rate_latency_p50_us" in f]
    if low:
        print(f"paced at {sz['trade_rate']}/s ({sz['low_requests']:,} requests, nearly one at a time; the floor of this "
              f"host's wake-ups): " + "; ".join(f"{s} p50 {p50:,.0f} us, p99 {p99:,.0f} us" for s, p50, p99 in low))

    print("\nCPU per request (us, user + system) by process, closed loop (median of runs); wall per request beside:")
    for system in ("ganntec", "aiohttp"):
        cpu = {k.rsplit(".", 1)[1]: v for k, v in f.items() if k.startswith(f"{system}.new_order.cpu_us_per_request.")}
        if cpu:
            wall = 1e6 / f[f"{system}.new_order.throughput_per_s"]
            print(f"  {system + '.new_order':20} " + "  ".join(f"{k} {v:6.1f}" for k, v in cpu.items())
                  + f"  (sum {sum(cpu.values()):.1f}; wall {wall:.1f} per request on {host['cpus']} CPUs; "
                  + ", ".join(f"{k} {v / wall:.0%}" for k, v in cpu.items()) + " busy)")

    m = rep.market
    print(f"\nmarket data: {args.subscribers} subscribers to /ws/{STREAM} (one process), "
          f"{sz['trades']:,} trades paced at {sz['trade_rate']}/s; latency = subscriber's receive time - the "
          f"crossing order's send time, us")
    if m:
        print(f"{'':36} {'p50':>9} {'p90':>9} {'p99':>9} {'p99.9':>9} {'samples':>9}")
        for label, key, n in (("ganntec.market_data (all)", "latency_us", m["samples"]),
                              ("  first subscriber per trade", "first_us", None),
                              ("  last subscriber per trade", "last_us", None),
                              ("  the order's HTTP round trip", "http_us", None)):
            p = m[key]
            print(f"{label:36} {p['p50']:9.0f} {p['p90']:9.0f} {p['p99']:9.0f} {p['p999']:9.0f} "
                  f"{'' if n is None else n:>9}")
        print(f"  {m['samples']:,} of {m['expected']:,} (subscriber, trade) events received")
        if m["cpu"]:
            busy = {k: v / m["seconds"] for k, v in m["cpu"].items()}
            print("  CPU busy while trading: " + ", ".join(f"{k} {v:.0%}" for k, v in busy.items()))
        for problem in m["problems"][:5]:
            print(f"  PROBLEM: {problem}")
    else:
        print("  not measured")

    print("\ntargets")
    for met, what, measured in targets(f, r):
        print(f"  [{TARGET_MARK[met]}] {what}: {measured}")
    for failure in rep.failures:
        print(f"  [FAILED] {failure['what']}: {failure['error']}")
    if rep.failures:
        print("  the run is INVALID (see the failures above)")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="short run (under a minute)")
    ap.add_argument("--requests", type=int, help="closed-loop requests per run (default 20,000; --quick 3,000)")
    ap.add_argument("--open-requests", type=int, help="open-loop requests per run (default 10,000; --quick 2,000)")
    ap.add_argument("--reps", type=int, help="runs per system and figure (default 5; --quick 3)")
    ap.add_argument("--connections", type=int, default=16, help="closed-loop connections (default 16)")
    ap.add_argument("--resp-type", choices=("ACK", "RESULT"), default="RESULT", help="newOrderRespType (default RESULT)")
    ap.add_argument("--subscribers", type=int, default=100, help="market-data subscribers (default 100; 0: skip)")
    ap.add_argument("--trades", type=int, help="market-data trades (default 2,000; --quick 300)")
    ap.add_argument("--trade-rate", type=int, help="market-data trades per second (default 200; --quick 100)")
    args = ap.parse_args(argv)
    sz = sizes(args.quick)
    for k in ("requests", "open_requests", "reps", "trades", "trade_rate"):
        if getattr(args, k) is not None:
            sz[k] = getattr(args, k)
    rep = Report()
    meter = CpuMeter()
    with tempfile.TemporaryDirectory(prefix="ganntec-edge-") as tmp:
        try:
            run(rep, args, sz, tmp)
        except BenchFailure as exc:
            rep.failures.append({"what": "setup", "error": str(exc)})
    background, steal = meter.cores()
    collect(rep)
    host = {"cpus": os.cpu_count(), "python": platform.python_version(), "cpu_model": cpu_model(),
            "background_load_cores": background, "steal_cores": steal}
    print_report(rep, args, sz, host)
    result = {"bench": "edge", "host": host, "figures": rep.figures, "ratios": ratios(rep.figures)}
    if rep.failures:
        result["failures"] = rep.failures
    print(json.dumps(result))
    return 1 if rep.failures else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # every process was stopped on the way out (finally blocks)
        print("interrupted", file=sys.stderr)
        sys.exit(130)
