"""The trading app and the admin app over one set of real in-process engines (a DriverGateway),
with a key vault and an admin user in a temporary directory: keys are issued through the admin
API and used on the trading API, as in a running instance. Time is a settable input."""

from __future__ import annotations

import asyncio
import contextlib
import os
import urllib.parse

from aiohttp.test_utils import TestClient, TestServer

from ganntec import config as C
from ganntec.admin.api import make_admin_app
from ganntec.admin.auth import AdminUsers, AllowList, TokenIssuer, derive_signing_key
from ganntec.edge.app import make_app
from ganntec.edge.appkeys import METRICS_REGISTRY
from ganntec.edge.auth import sign
from ganntec.edge.gateway import DriverGateway
from ganntec.edge.keys import KeyRing, listen_secret
from ganntec.edge.state import EdgeState
from ganntec.edge.vault import Vault, sign_ed25519
from ganntec.workers.supervisor import funding_records, replayer_factory

T0_MS = 1_700_000_000_000
ADMIN, PASSWORD = "ops", "correct horse battery"
MASTER_KEY = bytes(range(32))


class AdminHarness:
    def __init__(self, data_dir: str, cfg=None, allow: list[str] | None = None):
        self.cfg = cfg or C.load()
        self.now_ms = T0_MS
        self.log: list[str] = []
        self.driver = replayer_factory(self.cfg)()
        self.driver.order.replay = False
        self.state = EdgeState(len(self.cfg.symbols))
        journal, edge = self.driver.run(funding_records(self.cfg))  # accounts 1..3 opened, funded, no keys
        self.journal = [journal]
        self.state.apply(edge)
        self.gateway = DriverGateway(self.state, self.driver, clock_ns=lambda: self.now_ms * 1_000_000)
        self.vault = Vault(data_dir, MASTER_KEY)
        self.keys = KeyRing(self.state.directory, self.vault, listen_secret(MASTER_KEY), log=self.log.append)
        users = AdminUsers.load(os.path.join(data_dir, "admin-users.json"))
        users.add(ADMIN, PASSWORD, now_ms=T0_MS)
        users.save()
        self.app = make_app(self.cfg, clock_ms=lambda: self.now_ms, keys=self.keys, state=self.state,
                            gateway=self.gateway)
        self.admin_app = make_admin_app(
            self.cfg, self.state, self.gateway, self.vault, self.keys, TokenIssuer(derive_signing_key(MASTER_KEY)),
            lambda: users, lambda: self.now_ms, self.log.append,
            AllowList(allow if allow is not None else ["127.0.0.1/32", "::1/128"]),
            metrics_registry=self.app[METRICS_REGISTRY])

    def journal_records(self):
        from ganntec.shm import records as R

        return R.concat(self.journal + self.gateway.journal)


class Clients:
    """A trading client and an admin client (logged in as ADMIN) on test servers."""

    def __init__(self, h: AdminHarness, trade: TestClient, admin: TestClient, token: str):
        self.h, self.trade, self.admin, self.token = h, trade, admin, token

    async def call(self, method: str, path: str, body=None, token: str | None = "default"):
        headers = {}
        tok = self.token if token == "default" else token
        if tok:
            headers["Authorization"] = f"Bearer {tok}"
        resp = await self.admin.request(method, f"/admin/v1{path}", json=body, headers=headers)
        return resp.status, await resp.json()

    async def signed(self, method: str, path: str, key: dict, timestamp_ms: int | None = None, ed25519_private=None,
                     **params):
        """A Binance-signed request with an issued key (HMAC with its secret, or Ed25519)."""
        params.setdefault("timestamp", str(self.h.now_ms if timestamp_ms is None else timestamp_ms))
        payload = urllib.parse.urlencode(params)
        if ed25519_private is not None:
            sig = urllib.parse.quote(sign_ed25519(ed25519_private, payload), safe="")
        else:
            sig = sign(key["secret"], payload)
        resp = await self.trade.request(method, f"{path}?{payload}&signature={sig}",
                                        headers={"X-MBX-APIKEY": key["api_key"]})
        return resp.status, await resp.json()


@contextlib.asynccontextmanager
async def clients(h: AdminHarness, login: bool = True):
    async with TestClient(TestServer(h.app)) as trade, TestClient(TestServer(h.admin_app)) as admin:
        token = ""
        if login:
            resp = await admin.post("/admin/v1/login", json={"username": ADMIN, "password": PASSWORD})
            assert resp.status == 200, await resp.text()
            token = (await resp.json())["access_token"]
        yield Clients(h, trade, admin, token)


def run(h: AdminHarness, scenario, login: bool = True):
    async def go():
        async with clients(h, login) as c:
            return await scenario(c)
    return asyncio.run(go())
