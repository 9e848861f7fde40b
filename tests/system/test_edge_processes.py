"""`ganntec run` with two edge processes on one port (SO_REUSEPORT): each has its own command
and reports rings and sees every account's state; commands sent through both at once are each
answered with their own results (a matching result names the edge command that caused it);
one edge dies and comes back while the other keeps serving."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import time
import urllib.parse

import aiohttp
import orjson
import psutil
import pytest
from test_edge_run import CONFIG, ws_signed
from test_runtime import Server

from ganntec.edge import auth as A


@pytest.fixture
def server(tmp_path, instance):
    s = Server(tmp_path, instance)
    s.cfg_path.write_text(CONFIG.format(instance=instance).replace("[edge]\nport = 0", "[edge]\nport = 0\nprocesses = 2"))
    yield s
    s.kill()


def edges(server: Server, since: int = 0) -> dict[int, tuple[int, int]]:
    """edge source -> (pid, port), from the 'listening' lines logged after line `since`."""
    found = {}
    with server.changed:
        lines = server.lines[since:]
    for line in lines:
        if m := re.search(r"edge (\d+) \(pid (\d+)\) listening on http://[0-9.]+:(\d+)", line):
            found[int(m.group(1))] = (int(m.group(2)), int(m.group(3)))
    return found


def wait_for_edges(server: Server, since: int = 0, want=(1, 2), timeout_s: float = 120.0) -> dict:
    """The edges in `want` once each has logged its 'listening' line after line `since`."""
    deadline = time.monotonic() + timeout_s
    while not set(want) <= set(found := edges(server, since)):
        assert server.ended is not server.proc, "ganntec run exited:\n" + "\n".join(server.lines)
        assert time.monotonic() < deadline, f"edges up: {found}; log:\n" + "\n".join(server.lines[since:])
        with server.changed:
            server.changed.wait(0.5)
    return found


class Session:
    """One keep-alive connection (so one edge process serves all its requests), signing as
    Binance documents."""

    def __init__(self, port: int, key: dict):
        self.port, self.key = port, key
        with socket.socket() as probe:  # a free local port, so the server side can be found by it
            probe.bind(("127.0.0.1", 0))
            self.local_port = probe.getsockname()[1]
        self.http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(
            limit=1, local_addr=("127.0.0.1", self.local_port)))

    async def open(self) -> "Session":
        async with self.http.get(f"http://127.0.0.1:{self.port}/api/v3/ping") as r:
            assert r.status == 200
        return self

    async def signed(self, method: str, path: str, **params) -> tuple[int, object]:
        params["timestamp"] = str(time.time_ns() // 1_000_000)
        query = urllib.parse.urlencode(params)
        query += "&signature=" + A.sign(self.key["api_secret"], query)
        async with self.http.request(method, f"http://127.0.0.1:{self.port}{path}?{query}",
                                     headers={"X-MBX-APIKEY": self.key["api_key"]}) as r:
            return r.status, await r.json()

    async def close(self) -> None:
        await self.http.close()


def served_by(pids: dict[int, int], port: int) -> dict[int, int]:
    """client local port -> edge source, for the established connections of each edge pid."""
    out = {}
    for source, pid in pids.items():
        for c in psutil.Process(pid).net_connections(kind="tcp"):
            if c.status == psutil.CONN_ESTABLISHED and c.laddr.port == port and c.raddr:
                out[c.raddr.port] = source
    return out


async def one_session_per_edge(port: int, pids: dict[int, int], key: dict) -> dict[int, Session]:
    """Open connections until each edge serves one (the kernel spreads them by hash)."""
    mine: dict[int, Session] = {}
    spare = []
    for _ in range(64):
        s = await Session(port, key).open()
        edge = served_by(pids, port).get(s.local_port)
        if edge is not None and edge not in mine:
            mine[edge] = s
        else:
            spare.append(s)
        if len(mine) == len(pids):
            break
    for s in spare:
        await s.close()
    assert sorted(mine) == sorted(pids), f"connections reached edges {sorted(mine)} of {sorted(pids)}"
    return mine


def test_two_edge_processes_share_the_port_and_answer_their_own_commands(server):
    server.start()
    up = wait_for_edges(server)
    assert sorted(up) == [1, 2] and up[1][1] == up[2][1] and up[1][0] != up[2][0]
    port = up[1][1]
    assert "reports.1" in "\n".join(server.lines) and "reports.2" in "\n".join(server.lines)
    keys = json.loads((server.data / "demo-accounts.json").read_text())

    async def scenario():
        pids = {e: pid for e, (pid, _) in up.items()}
        a = await one_session_per_edge(port, pids, keys[0])  # account 1 on edge 1 and on edge 2
        b = await one_session_per_edge(port, pids, keys[1])
        # account 1's user data, on a WebSocket API connection (whichever edge takes it)
        ws_http = aiohttp.ClientSession()
        ws = await ws_http.ws_connect(f"http://127.0.0.1:{port}/ws-api/v3")
        await ws.send_str(orjson.dumps({"id": 1, "method": "userDataStream.subscribe.signature",
                                        "params": ws_signed(keys[0])}).decode())
        assert orjson.loads((await ws.receive()).data)["result"] == {"subscriptionId": 0}
        try:
            # the same account places orders through both edges at once: each answer is its own
            placed = await asyncio.gather(*[
                a[1 + i % 2].signed("POST", "/api/v3/order", symbol="BTCUSDT", side="SELL", type="LIMIT",
                                    timeInForce="GTC", quantity="0.01", price=f"{200 + i}", newClientOrderId=f"s{i}")
                for i in range(12)])
            assert [(st, o["clientOrderId"], o["price"]) for st, o in placed] == [
                (200, f"s{i}", f"{200 + i}.00000000") for i in range(12)]
            # an order placed through one edge is known to the other at once (it saw the reports)
            for i, (_, o) in enumerate(placed):
                st, q = await a[2 - i % 2].signed("GET", "/api/v3/order", symbol="BTCUSDT", orderId=o["orderId"])
                assert st == 200 and q["clientOrderId"] == f"s{i}" and q["status"] == "NEW"
            # account 2 takes liquidity through both edges at once
            bought = await asyncio.gather(*[
                b[e].signed("POST", "/api/v3/order", symbol="BTCUSDT", side="BUY", type="MARKET",
                            quantity="0.01", newClientOrderId=f"b{e}") for e in (1, 2)])
            assert sorted((o["clientOrderId"], o["status"], o["executedQty"]) for _, o in bought) == [
                ("b1", "FILLED", "0.01000000"), ("b2", "FILLED", "0.01000000")]
            assert sorted(o["fills"][0]["price"] for _, o in bought) == ["200.00000000", "201.00000000"]
            # the same account's cancel-all through both edges at once: one cancels the ten left,
            # the other finds none (-2011); neither takes the other's answer
            both = await asyncio.gather(*[a[e].signed("DELETE", "/api/v3/openOrders", symbol="BTCUSDT")
                                          for e in (1, 2)])
            statuses = sorted(st for st, _ in both)
            assert statuses == [200, 400], both
            canceled = next(body for st, body in both if st == 200)
            refused = next(body for st, body in both if st == 400)
            assert sorted(o["origClientOrderId"] for o in canceled) == sorted(f"s{i}" for i in range(2, 12))
            assert refused["code"] == -2011
            # account 1's user data stream: every event of its orders, through either edge, once
            seen = []
            while len([e for e in seen if e["X"] == "CANCELED"]) < 10:
                msg = orjson.loads((await asyncio.wait_for(ws.receive(), 30)).data)
                if msg["event"]["e"] == "executionReport":
                    seen.append(msg["event"])
            assert sorted(e["c"] for e in seen if e["x"] == "NEW") == sorted(f"s{i}" for i in range(12))
            assert len([e for e in seen if e["x"] == "TRADE"]) == 2
            # a listen key made on one edge is kept alive and closed on the other (shared validity)
            st, made = await a[1].signed("POST", "/api/v3/userDataStream")
            assert st == 200 and len(made["listenKey"]) == 64
            assert await a[2].signed("PUT", "/api/v3/userDataStream", listenKey=made["listenKey"]) == (200, {})
            assert await a[2].signed("DELETE", "/api/v3/userDataStream", listenKey=made["listenKey"]) == (200, {})
            st, gone = await a[1].signed("PUT", "/api/v3/userDataStream", listenKey=made["listenKey"])
            assert (st, gone["code"]) == (400, -1125)
        finally:
            await ws.close()
            await ws_http.close()
            for s in [*a.values(), *b.values()]:
                await s.close()

    asyncio.run(scenario())

    # edge 2 dies: the engines recover, edge 2 starts again; edge 1 serves throughout
    mark = len(server.lines)
    os.kill(up[2][0], signal.SIGKILL)
    back = wait_for_edges(server, mark, want=(2,))
    assert 1 not in back  # edge 1 never stopped
    assert back[2][0] != up[2][0] and back[2][1] == port
    assert psutil.pid_exists(up[1][0]) and psutil.Process(up[1][0]).status() != psutil.STATUS_ZOMBIE

    async def after():
        pids = {1: up[1][0], 2: back[2][0]}
        a = await one_session_per_edge(port, pids, keys[0])
        try:
            out = []
            for e in (1, 2):
                out.append(await a[e].signed("POST", "/api/v3/order", symbol="BTCUSDT", side="SELL", type="LIMIT",
                                             timeInForce="GTC", quantity="0.01", price="300", newClientOrderId=f"r{e}"))
                out.append(await a[3 - e].signed("GET", "/api/v3/openOrders", symbol="BTCUSDT"))
            return out
        finally:
            for s in a.values():
                await s.close()

    (st1, o1), (_, open1), (st2, o2), (_, open2) = asyncio.run(after())
    assert (st1, o1["clientOrderId"], st2, o2["clientOrderId"]) == (200, "r1", 200, "r2")
    assert [o["clientOrderId"] for o in open1] == ["r1"]
    assert sorted(o["clientOrderId"] for o in open2) == ["r1", "r2"]
    assert server.stop() == 0
