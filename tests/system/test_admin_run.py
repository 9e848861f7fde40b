"""The admin plane through `ganntec run` and `ganntec admin`: the first start's admin user, login,
an account opened, funded and given a key, the key used on both edge processes, then revoked:
refused by both at once. No secret is written in plaintext anywhere under the data directory
or in the log."""

from __future__ import annotations

import asyncio
import json
import os
import re
import stat
import subprocess
import sys

import pytest
from test_edge_processes import one_session_per_edge, wait_for_edges
from test_edge_run import CONFIG
from test_runtime import Server


@pytest.fixture
def server(tmp_path, instance):
    s = Server(tmp_path, instance)
    cfg = CONFIG.format(instance=instance).replace("[edge]\nport = 0", "[edge]\nport = 0\nprocesses = 2")
    s.cfg_path.write_text(cfg.replace("[security]\ndemo_keys = true\n", ""))  # no plaintext handout
    yield s
    s.kill()


def admin_url(server: Server) -> str:
    line = server.wait_for("admin API http://")
    return re.search(r"admin API (http://[0-9.]+:\d+)/admin/v1", line).group(1)


def admin(server: Server, url: str, *args: str, stdin: str | None = None) -> tuple[int, str, str]:
    token_file = str(server.data.parent / "admin-token.json")
    proc = subprocess.run([sys.executable, "-m", "ganntec.cli", "admin", "--url", url, "--token-file", token_file,
                           *args], input=stdin, capture_output=True, text=True, timeout=120)
    return proc.returncode, proc.stdout, proc.stderr


def test_admin_cli_issues_a_key_both_edges_accept_and_a_revocation_both_refuse(server):
    server.start()
    up = wait_for_edges(server)
    port = up[1][1]
    url = admin_url(server)
    pw_file = server.data / "admin-initial-password"
    assert stat.S_IMODE(os.stat(pw_file).st_mode) == 0o600
    assert not (server.data / "demo-accounts.json").exists()

    code, out, err = admin(server, url, "login", "--user", "admin", "--password-stdin", stdin=pw_file.read_text())
    assert code == 0, err
    for args in (("accounts", "create", "5", "--perm", "trade,read"),
                 ("accounts", "credit", "5", "--asset", "USDT", "--amount", "1000.5", "--reference", "wire-1")):
        code, out, err = admin(server, url, *args)
        assert code == 0, err
    code, out, err = admin(server, url, "--json", "keys", "create", "5", "--label", "bot")
    assert code == 0, err
    issued = json.loads(out)
    key = {"api_key": issued["api_key"], "api_secret": issued["secret"]}

    async def scenario():
        pids = {e: pid for e, (pid, _) in up.items()}
        sessions = await one_session_per_edge(port, pids, key)
        try:
            placed = [await sessions[e].signed("POST", "/api/v3/order", symbol="BTCUSDT", side="BUY", type="LIMIT",
                                               timeInForce="GTC", quantity="0.01", price="100", newClientOrderId=f"e{e}")
                      for e in (1, 2)]
            revoked = admin(server, url, "keys", "revoke", str(issued["key_id"]))
            after = [await sessions[e].signed("GET", "/api/v3/account") for e in (1, 2)]
            return placed, revoked, after
        finally:
            for s in sessions.values():
                await s.close()

    placed, revoked, after = asyncio.run(scenario())
    assert [st for st, _ in placed] == [200, 200], placed
    assert revoked[0] == 0, revoked[2]
    assert after == [(401, {"code": -2015, "msg": "Invalid API-key, IP, or permissions for action."})] * 2

    code, out, err = admin(server, url, "--json", "accounts", "show", "5")
    shown = json.loads(out)
    assert code == 0 and shown["status"] == "ACTIVE" and shown["keys"] == 0
    assert {b["asset"]: b["free"] for b in shown["balances"]}["USDT"] == "998.50000000"  # 1000.5 - 2 x 0.01 x 100
    code, out, err = admin(server, url, "--json", "keys", "list", "5")
    assert [k["status"] for k in json.loads(out)["keys"]] == ["REVOKED"] and "secret" not in out

    server.stop()
    secret = issued["secret"].encode()
    for root, _, files in os.walk(server.data):
        for name in files:
            with open(os.path.join(root, name), "rb") as f:
                assert secret not in f.read(), f"the secret is in {name}"
    assert issued["secret"] not in "\n".join(server.lines)
