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

import pytest
from edge_harness import ccxt_binance
from test_runtime import Server

CONFIG = """
[instance]
name = "{instance}"
[journal]
durability = "os"
[runtime]
placement = "single"
heartbeat_ms = 400
ring_capacity = 4096
max_in_flight = 1024
[edge]
port = 0
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

    async def before_crash(a, b):
        sell = await a.create_order("BTC/USDT", "limit", "sell", 1, 100)
        buy = await b.create_order("BTC/USDT", "market", "buy", 0.4)
        return sell, buy

    sell, buy = asyncio.run(with_clients(port, keys, before_crash))
    assert sell["status"] == "open" and buy["filled"] == 0.4

    worker = int(re.search(r"engines=(\d+)", server.wait_for("engine workers: engines=")).group(1))
    mark = len(server.lines)
    os.kill(worker, signal.SIGKILL)
    server.wait_for("engine workers restarted", after=mark)

    async def after_crash(a, b):
        buy2 = await b.create_order("BTC/USDT", "market", "buy", 0.1)
        return (buy2, await a.fetch_order(sell["id"], "BTC/USDT"), await b.fetch_my_trades("BTC/USDT"),
                await b.fetch_balance(), await a.fetch_open_orders("BTC/USDT"))

    buy2, order, trades, balance, open_orders = asyncio.run(with_clients(port, keys, after_crash))
    assert buy2["filled"] == 0.1 and order["filled"] == 0.5 and order["status"] == "open"
    assert [(t["amount"], t["price"]) for t in trades] == [(0.4, 100), (0.1, 100)]
    assert balance["BTC"]["total"] == pytest.approx(10 + 0.5 * 0.999)
    assert balance["USDT"]["total"] == 100000 - 50
    assert [o["id"] for o in open_orders] == [sell["id"]]

    assert server.stop() == 0
    assert "stopped cleanly" in server.lines[-1]

    server.start()  # a new edge on the same data: same keys, same orders and trades
    port = edge_port(server)
    assert json.loads(keys_file.read_text()) == keys

    async def after_restart(a, b):
        return await a.fetch_order(sell["id"], "BTC/USDT"), await b.fetch_my_trades("BTC/USDT")

    order2, trades2 = asyncio.run(with_clients(port, keys, after_restart))
    assert order2["filled"] == 0.5 and order2["clientOrderId"] == sell["clientOrderId"]
    assert [t["id"] for t in trades2] == [t["id"] for t in trades]
    assert server.stop() == 0
