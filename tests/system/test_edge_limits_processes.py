"""Rate limits hold across two edge processes sharing the port: the counters live in the edge
segment, so weight spent through one process is counted by the other, and an account's order
count too. The clock is the wall clock here: a window may roll over between two requests, so a
run that straddles a window boundary is recognised by its own headers and repeated."""

from __future__ import annotations

import asyncio
import json
import socket
import time
import urllib.parse

import pytest
from test_edge_processes import one_session_per_edge, wait_for_edges
from test_edge_run import CONFIG
from test_runtime import Server

from ganntec.edge import auth as A

LIMITS = "[limits]\nrequest_weight_per_minute = 100\norders_per_10s = 3\n"


@pytest.fixture
def server(tmp_path, instance):
    s = Server(tmp_path, instance)
    cfg = CONFIG.format(instance=instance).replace("[edge]\nport = 0", "[edge]\nport = 0\nprocesses = 2")
    s.cfg_path.write_text(cfg.replace("[[assets]]", LIMITS + "[[assets]]", 1))
    yield s
    s.kill()


async def _get(session, path: str):
    async with session.http.get(f"http://127.0.0.1:{session.port}{path}") as r:
        return r.status, r.headers, await r.json()


async def _order(session):
    params = dict(symbol="BTCUSDT", side="BUY", type="LIMIT", timeInForce="GTC", quantity="0.01", price="100",
                  timestamp=str(time.time_ns() // 1_000_000))
    query = urllib.parse.urlencode(params)
    query += "&signature=" + A.sign(session.key["api_secret"], query)
    async with session.http.post(f"http://127.0.0.1:{session.port}/api/v3/order?{query}",
                                 headers={"X-MBX-APIKEY": session.key["api_key"]}) as r:
        return r.status, int(r.headers.get("X-MBX-ORDER-COUNT-10S", "0")), (await r.json()).get("code")


def one_window(counts: list[int]) -> bool:
    """The counts a run reported never fell back (no window rolled over during it)."""
    return all(b >= a for a, b in zip(counts, counts[1:]))


def test_weight_and_order_limits_hold_across_two_edge_processes(server):
    server.start()
    up = wait_for_edges(server)
    port = up[1][1]
    key = json.loads((server.data / "demo-accounts.json").read_text())[0]

    async def scenario():
        pids = {e: pid for e, (pid, _) in up.items()}
        sessions = await one_session_per_edge(port, pids, key)  # (its pings weigh 1 each)
        try:
            for _ in range(3):  # orders_per_10s = 3, alternating processes (first: they weigh 1 each)
                orders = [await _order(sessions[edge]) for edge in (1, 2, 1, 2)]
                if one_window([n for _, n, _ in orders if n]):
                    break
            for _ in range(3):  # exchangeInfo weighs 20: alternate the processes until one refuses
                weights = [await _get(sessions[edge], "/api/v3/exchangeInfo") for edge in (1, 2, 1, 2, 1, 2)]
                if one_window([int(h["X-MBX-USED-WEIGHT-1M"]) for _, h, _ in weights]):
                    break
            return weights, orders
        finally:
            for s in sessions.values():
                await s.close()

    weights, orders = asyncio.run(scenario())
    used = [int(h["X-MBX-USED-WEIGHT-1M"]) for _, h, _ in weights]
    # each process reports the shared count: +20 per request whichever process served the last one
    assert all(b - a == 20 for a, b in zip(used, used[1:])), weights
    assert [s for s, _, _ in weights] == [429 if u > 100 else 200 for u in used], weights
    assert weights[-1][0] == 429 and weights[-1][2]["code"] == -1003
    assert orders == [(200, 1, None), (200, 2, None), (200, 3, None), (429, 4, -1015)], orders


@pytest.fixture
def small_server(tmp_path, instance):
    s = Server(tmp_path, instance)
    limits = "[limits]\nmax_header_bytes = 2048\nidle_timeout_s = 1\n"
    s.cfg_path.write_text(CONFIG.format(instance=instance).replace("[[assets]]", limits + "[[assets]]", 1))
    yield s
    s.kill()


def test_header_lines_beyond_the_limit_are_refused_and_idle_connections_closed(small_server):
    small_server.start()
    port = wait_for_edges(small_server, want=(1,))[1][1]

    def ask(header_bytes: int, close: bool = True) -> tuple[bytes, socket.socket]:
        sock = socket.create_connection(("127.0.0.1", port), timeout=60)
        sock.sendall(b"GET /api/v3/ping HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * header_bytes
                     + (b"\r\nConnection: close" if close else b"") + b"\r\n\r\n")
        return sock.recv(65536), sock

    status, sock = ask(1500)
    sock.close()
    assert status.startswith(b"HTTP/1.1 200")
    status, sock = ask(4000)
    sock.close()
    assert status.split()[1] in (b"400", b"431")  # aiohttp's parser: "Got more than 2048 bytes"
    # a keep-alive connection that sends nothing more is closed by the server (limits.idle_timeout_s)
    status, sock = ask(10, close=False)
    with sock:
        assert status.startswith(b"HTTP/1.1 200")
        assert sock.recv(1) == b""  # the server's close (the 60 s socket timeout would raise instead)
