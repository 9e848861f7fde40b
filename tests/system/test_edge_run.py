"""`ganntec run` with its edge, as real processes, driven by ccxt's binance class: trade over
REST, kill -9 the engine worker and keep trading through the same edge (nothing lost, nothing
twice), stop cleanly, start again on the same data (same keys, same orders and trades)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import stat
import time

import aiohttp
import orjson
import pytest
from edge_harness import ccxt_binance

from ganntec.edge import auth as A
from test_runtime import Server

CONFIG = """
[instance]
name = "{instance}"
[journal]
durability = "os"
[runtime]
placement = "single"
heartbeat_ms = 1000
ring_capacity = 4096
max_in_flight = 1024
[edge]
port = 0
admin_port = 0
[security]
demo_keys = true
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
[[accounts]]
id = 1
balances = {{ USDT = "100000", BTC = "10" }}
[[accounts]]
id = 2
balances = {{ USDT = "100000", BTC = "10" }}
"""


def edge_port(server: Server) -> int:
    line = server.wait_for("listening on http://")
    return int(re.search(r"http://[0-9.]+:(\d+)", line).group(1))


async def with_clients(port: int, keys: list[dict], fn):
    exs = [ccxt_binance(port, k["api_key"], k["api_secret"]) for k in keys]
    try:
        for ex in exs:
            await ex.load_markets()
        return await fn(*exs)
    finally:
        for ex in exs:
            await ex.close()


async def historical_trades(port: int, want: int, timeout_s: float = 60.0) -> list:
    """GET historicalTrades until it shows `want` trades (the history process lags the journal by
    a poll); fails after the deadline."""
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as session:
        while True:
            async with session.get(f"http://127.0.0.1:{port}/api/v3/historicalTrades?symbol=BTCUSDT") as r:
                rows = await r.json() if r.status == 200 else []
            if len(rows) >= want:
                return rows
            assert time.monotonic() < deadline, f"historicalTrades has {rows} after {timeout_s} s"
            await asyncio.sleep(0.05)


def current_worker(server: Server) -> int:
    """The engine worker's pid now (a stale heartbeat under load may have restarted it)."""
    with server.changed:
        line = [ln for ln in server.lines if "engines=" in ln][-1]
    return int(re.search(r"engines=(\d+)", line).group(1))


def ws_signed(key: dict) -> dict:
    params = {"apiKey": key["api_key"], "timestamp": time.time_ns() // 1_000_000}
    payload = "&".join(f"{k}={v}" for k, v in sorted(params.items()))
    return {**params, "signature": A.sign(key["api_secret"], payload)}


@pytest.fixture
def server(tmp_path, instance):
    s = Server(tmp_path, instance)
    s.cfg_path.write_text(CONFIG.format(instance=instance))
    yield s
    s.kill()


def test_ccxt_trades_through_ganntec_run_across_an_engine_crash_and_a_restart(server):
    server.start()
    port = edge_port(server)
    keys_file = server.data / "demo-accounts.json"
    assert stat.S_IMODE(os.stat(keys_file).st_mode) == 0o600
    keys = json.loads(keys_file.read_text())
    assert [k["account"] for k in keys] == [1, 2] and all(len(k["api_key"]) == 64 for k in keys)
    assert keys[0]["api_key"] in "\n".join(server.lines)  # printed for the operator

    async def scenario():
        # account 1's user data stream, subscribed on the WebSocket API for the whole scenario
        session = aiohttp.ClientSession()
        ws = await session.ws_connect(f"http://127.0.0.1:{port}/ws-api/v3")
        await ws.send_str(orjson.dumps({"id": 1, "method": "userDataStream.subscribe.signature",
                                        "params": ws_signed(keys[0])}).decode())
        assert orjson.loads((await ws.receive()).data)["result"] == {"subscriptionId": 0}

        async def before_crash(a, b):
            sell = await a.create_order("BTC/USDT", "limit", "sell", 1, 100)
            buy = await b.create_order("BTC/USDT", "market", "buy", 0.4)
            return sell, buy

        sell, buy = await with_clients(port, keys, before_crash)
        assert sell["status"] == "open" and buy["filled"] == 0.4
        mark = len(server.lines)
        os.kill(current_worker(server), signal.SIGKILL)
        await asyncio.to_thread(server.wait_for, "engine workers restarted", mark)

        async def after_crash(a, b):
            buy2 = await b.create_order("BTC/USDT", "market", "buy", 0.1)
            return (buy2, await a.fetch_order(sell["id"], "BTC/USDT"), await b.fetch_my_trades("BTC/USDT"),
                    await b.fetch_balance(), await a.fetch_open_orders("BTC/USDT"))

        result = await with_clients(port, keys, after_crash)
        reports = []
        while len([r for r in reports if r["x"] == "TRADE"]) < 2:
            msg = orjson.loads((await asyncio.wait_for(ws.receive(), 30)).data)
            if msg["event"]["e"] == "executionReport":
                reports.append(msg["event"])
        await ws.close()
        await session.close()
        return sell, result, reports

    sell, (buy2, order, trades, balance, open_orders), reports = asyncio.run(scenario())
    # account 1's order events across the crash: each once, in order
    assert [(r["x"], r["l"], r["t"]) for r in reports] == [("NEW", "0.00000000", -1), ("TRADE", "0.40000000", 1),
                                                          ("TRADE", "0.10000000", 2)]
    assert buy2["filled"] == 0.1 and order["filled"] == 0.5 and order["status"] == "open"
    assert [(t["amount"], t["price"]) for t in trades] == [(0.4, 100), (0.1, 100)]
    assert balance["BTC"]["total"] == pytest.approx(10 + 0.5 * 0.999)
    assert balance["USDT"]["total"] == 100000 - 50
    assert [o["id"] for o in open_orders] == [sell["id"]]

    history = asyncio.run(historical_trades(port, want=2))  # the history process follows the journal
    assert [(t["id"], t["qty"]) for t in history] == [(1, "0.40000000"), (2, "0.10000000")]

    assert server.stop() == 0
    assert "stopped cleanly" in server.lines[-1]
    assert (server.data / "history.sqlite").exists()

    server.start()  # a new edge on the same data: same keys, same orders and trades
    port = edge_port(server)
    assert json.loads(keys_file.read_text()) == keys

    async def after_restart(a, b):
        return await a.fetch_order(sell["id"], "BTC/USDT"), await b.fetch_my_trades("BTC/USDT")

    order2, trades2 = asyncio.run(with_clients(port, keys, after_restart))
    assert order2["filled"] == 0.5 and order2["clientOrderId"] == sell["clientOrderId"]
    assert [t["id"] for t in trades2] == [t["id"] for t in trades]
    assert asyncio.run(historical_trades(port, want=2)) == history  # the store survived, nothing twice
    assert server.stop() == 0
