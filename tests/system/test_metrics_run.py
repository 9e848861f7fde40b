"""/metrics through `ganntec run`: every process's metrics merged on the admin port, checked by
promtool (Debian's `prometheus` package, unpacked, never installed or started) and read back
with prometheus_client's parser: after N orders the counters say N."""

from __future__ import annotations

import asyncio
import glob
import json
import os
import re
import shutil
import subprocess
import time
import urllib.parse

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families
from test_edge_run import edge_port, server  # noqa: F401 - server: ganntec run with the edge's test config
from test_runtime import Server

from ganntec.edge import auth as A

REPO = __import__("pathlib").Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def promtool(tmp_path_factory) -> str:
    """promtool from PATH, or unpacked from Debian's package into a temporary directory (about
    19 MB; `apt-get update` first on a machine without package lists)."""
    found = shutil.which("promtool")
    if found:
        return found
    where = tmp_path_factory.mktemp("promtool")
    for attempt in range(2):
        got = subprocess.run(["apt-get", "download", "prometheus"], cwd=where, capture_output=True, text=True)
        if got.returncode == 0:
            break
        if attempt == 0:
            subprocess.run(["apt-get", "update"], capture_output=True, text=True)
    else:
        pytest.fail(f"promtool: `apt-get download prometheus` failed: {got.stderr.strip()}")
    deb = glob.glob(str(where / "prometheus_*.deb"))[0]
    subprocess.run(["dpkg-deb", "-x", deb, str(where / "x")], check=True)
    return str(where / "x" / "usr" / "bin" / "promtool")


def admin_base(server: Server) -> str:
    line = server.wait_for("admin API http://")
    return re.search(r"admin API (http://[0-9.]+:\d+)/admin/v1", line).group(1)


async def place(port: int, key: dict, n: int) -> list[int]:
    out = []
    async with aiohttp.ClientSession() as session:
        for i in range(n):
            params = dict(symbol="BTCUSDT", side="BUY", type="LIMIT", timeInForce="GTC", quantity="0.01",
                          price=str(100 + i), timestamp=str(time.time_ns() // 1_000_000))
            q = urllib.parse.urlencode(params)
            q += "&signature=" + A.sign(key["api_secret"], q)
            async with session.post(f"http://127.0.0.1:{port}/api/v3/order?{q}",
                                    headers={"X-MBX-APIKEY": key["api_key"]}) as r:
                out.append(r.status)
    return out


async def scrape_async(base: str) -> str:
    async with aiohttp.ClientSession() as session, session.get(f"{base}/metrics") as r:
        assert r.status == 200 and r.headers["Content-Type"].startswith("text/plain")
        return await r.text()


def scrape(base: str) -> str:
    return asyncio.run(scrape_async(base))


def samples(text: str) -> dict:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}


def test_metrics_of_every_process_pass_promtool_and_count_what_happened(server, promtool):
    server.start()
    port = edge_port(server)
    base = admin_base(server)
    key = json.loads((server.data / "demo-accounts.json").read_text())[0]
    assert asyncio.run(place(port, key, 5)) == [200] * 5

    text = scrape(base)
    lint = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    got = samples(text)
    assert got[("ganntec_orders_total", (("result", "accepted"),))] == 5
    assert got[("ganntec_http_requests_total", (("method", "POST"), ("route", "/api/v3/order"), ("status", "200")))] == 5
    assert got[("ganntec_engine_round_trip_seconds_count", ())] >= 5
    assert got[("ganntec_ring_records_published_total", (("ring", "cmd.1"),))] >= 5
    assert ("ganntec_ring_fill_ratio", (("ring", "reports.1"),)) in got
    assert got[("ganntec_journal_size_bytes", ())] > 0
    # the stats tables: each client order popped once by the sequencer; its reports read by the edge
    stage = {dict(labels)["stage"]: v for (name, labels), v in got.items() if name == "ganntec_stage_latency_seconds_count"}
    assert stage["order"] == 5 and stage["edge"] >= 5
    assert got[("ganntec_journal_last_sequence", ())] > 0
    assert got[("ganntec_recovery_duration_seconds_count", ())] == 1
    assert {dict(labels)["process"] for (name, labels) in got if name == "ganntec_process_heartbeat_age_seconds"} >= {
        "supervisor", "edge.1"}
    assert os.listdir(server.data / "metrics")  # the processes' own files, merged at the scrape
    assert key["api_secret"] not in text and key["api_key"] not in text

    # the dashboard shows only what /metrics exports (after a WebSocket API request and a stream)
    async def websockets():
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(f"http://127.0.0.1:{port}/ws-api/v3") as api:
                await api.send_str('{"id": 1, "method": "ping"}')
                assert json.loads((await api.receive()).data)["status"] == 200
                async with session.ws_connect(f"http://127.0.0.1:{port}/ws/btcusdt@trade") as stream:
                    await stream.send_str('{"method": "LIST_SUBSCRIPTIONS", "id": 1}')
                    await stream.receive()
                    return await scrape_async(base)
    exported = {name for name, _ in samples(asyncio.run(websockets()))}
    dashboard = json.loads((REPO / "deploy" / "grafana" / "ganntec.json").read_text())
    used = {m for p in dashboard["panels"] for t in p["targets"] for m in re.findall(r"ganntec_[a-z0-9_]+", t["expr"])}
    assert used and used <= exported, sorted(used - exported)
