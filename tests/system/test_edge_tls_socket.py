"""The edge over TLS 1.3: REST and WebSocket streams through a real TLS socket (in-process
engines), a TLS 1.2-only client refused at the handshake, and `ganntec run` with the pair."""

from __future__ import annotations

import asyncio
import re
import ssl
import subprocess
import sys

import aiohttp
import orjson
from aiohttp import web
from edge_harness import EdgeHarness
from test_edge_run import CONFIG
from test_runtime import Server

from ganntec.edge.tls import self_signed, server_context


def trusting(cert: str, max_version: ssl.TLSVersion | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=cert)
    if max_version is not None:
        ctx.maximum_version = max_version
    return ctx


def test_rest_and_streams_over_tls13_and_a_tls12_client_refused(tmp_path):
    cert, key = self_signed(str(tmp_path))
    h = EdgeHarness()

    async def go():
        runner = web.AppRunner(h.app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_context(cert, key))
        await site.start()
        port = runner.addresses[0][1]
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=trusting(cert))
            version = writer.get_extra_info("ssl_object").version()
            writer.close()
            try:
                await asyncio.open_connection("127.0.0.1", port, ssl=trusting(cert, ssl.TLSVersion.TLSv1_2))
                old = "accepted"
            except (ssl.SSLError, ConnectionError) as exc:  # the server's alert, or its reset
                old = type(exc).__name__
            async with aiohttp.ClientSession() as session:
                async with session.get(f"https://127.0.0.1:{port}/api/v3/ping", ssl=trusting(cert)) as r:
                    ping = (r.status, await r.json())
                try:
                    async with session.get(f"http://127.0.0.1:{port}/api/v3/ping") as r:
                        plain = r.status
                except aiohttp.ClientError:
                    plain = "refused"
                async with session.ws_connect(f"wss://127.0.0.1:{port}/ws/btcusdt@trade", ssl=trusting(cert)) as ws:
                    await ws.send_str('{"method": "LIST_SUBSCRIPTIONS", "id": 1}')
                    listed = orjson.loads((await asyncio.wait_for(ws.receive(), 10)).data)
            return version, old, ping, plain, listed
        finally:
            await runner.cleanup()

    version, old, ping, plain, listed = asyncio.run(go())
    assert version == "TLSv1.3"
    assert old != "accepted"
    assert ping == (200, {})
    assert plain != 200  # plain HTTP on the TLS port gets no answer
    assert listed == {"result": ["btcusdt@trade"], "id": 1}


def test_ganntec_run_serves_https(tmp_path, instance):
    cert, key = self_signed(str(tmp_path / "tls"))
    s = Server(tmp_path, instance)
    s.cfg_path.write_text(CONFIG.format(instance=instance).replace(
        "[edge]\nport = 0", f'[edge]\nport = 0\ntls_cert = "{cert}"\ntls_key = "{key}"'))
    try:
        s.start()
        line = s.wait_for("listening on https://")
        assert "wss://" in line and "TLS 1.3" in line
        port = int(re.search(r"https://[0-9.]+:(\d+)", line).group(1))

        async def ping():
            async with aiohttp.ClientSession() as session, \
                    session.get(f"https://127.0.0.1:{port}/api/v3/time", ssl=trusting(cert)) as r:
                return r.status, await r.json()

        status, body = asyncio.run(ping())
        assert status == 200 and body["serverTime"] > 0
        # the admin port speaks TLS 1.3 with the same pair: `ganntec admin --cacert` logs in
        admin_url = re.search(r"admin API (https://[0-9.]+:\d+)/admin/v1", line).group(1)
        login = subprocess.run([sys.executable, "-m", "ganntec.cli", "admin", "--url", admin_url, "--cacert", cert,
                                "--token-file", str(tmp_path / "token.json"), "login", "--user", "admin",
                                "--password-stdin"], input=(s.data / "admin-initial-password").read_text(),
                               capture_output=True, text=True, timeout=120)
        assert login.returncode == 0, login.stderr
        untrusted = subprocess.run([sys.executable, "-m", "ganntec.cli", "admin", "--url", admin_url,
                                    "--token-file", str(tmp_path / "token2.json"), "login", "--user", "admin",
                                    "--password-stdin"], input="x" * 12, capture_output=True, text=True, timeout=120)
        assert untrusted.returncode == 3, untrusted.stderr  # a certificate it does not trust: no connection
        assert s.stop() == 0
    finally:
        s.kill()
