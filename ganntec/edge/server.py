"""The edge process: forked by the supervisor after recovery, it serves the Binance dialect on
`edge.host:port` (uvloop, SO_REUSEPORT) and reaches the engines through the rings.

Its projection starts from a replay of the journal up to the sequence of the recovered engines
it inherits through the fork (every report they made, applied as the live stream would
have delivered it), then follows its `reports.<source>` ring. It stays up while the supervisor restarts the engines: commands wait in its
ring, and the reports the stopped engines owed are republished. Its edge sequence starts
above both what the order engine journaled and what still waits in its ring (a restarted
edge must not reuse the sequence of a command its predecessor sent).

Signals only record: SIGTERM/SIGINT set the stop event; the server then closes its sockets,
its rings and its eventfd registration."""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import sys
import time

import numpy as np

from ganntec.config import Config
from ganntec.edge.app import make_app
from ganntec.edge.gateway import RingGateway
from ganntec.edge.keys import KeyRing, listen_secret
from ganntec.edge.shared import EdgeShared
from ganntec.edge.state import EdgeState
from ganntec.edge.tls import server_context
from ganntec.edge.appkeys import METRICS_REGISTRY
from ganntec.edge.vault import Vault
from ganntec.metrics import LiveCollector
from ganntec.shm.stats import StatsWriter
from ganntec.history.projector import store_path
from ganntec.journal.journal import JournalReader
from ganntec.logline import Log, route_logging
from ganntec.shm import records as R
from ganntec.shm.ring import Ring
from ganntec.workers.runtime import cmd_ring


def bootstrap(state: EdgeState, make_replayer, journal_dir: str, upto_seq: int) -> int:
    """Build the projection from the journal: replay it (up to `upto_seq`, where the engines
    the edge was forked with stand) through fresh engines and apply every report they make,
    exactly as the live stream would have delivered them. Returns the records replayed."""
    replayed = 0
    if upto_seq:
        rp = make_replayer()
        for batch in JournalReader(journal_dir).batches():
            seqs = batch.view(R.RECORD_DTYPE).reshape(-1)["seq"]
            take = int(np.searchsorted(seqs, upto_seq, side="right"))
            if take:
                state.remember_commands(batch[:take])
                state.apply(rp.feed(batch[:take]), notify=False)
                replayed += take
            if take < len(batch):
                break
    state.seq = state.floor = upto_seq
    return replayed


# The projection holds up to hundreds of thousands of small objects (orders, trades) that live
# long: a full collection that scans them all paused the edge for 150 ms (bench/edge.py). They
# are frozen out of the collector's scans after the start and then every minute, and young
# collections run less often; refcounting still frees them when they are dropped.
GC_FREEZE_EVERY_S = 60
GC_THRESHOLDS = (50_000, 20, 20)


def settle_garbage_collector() -> None:
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def last_queued_source_seq(instance: str, source: int) -> int:
    """The edge sequence of the last command ever published on cmd.<source> (0: none)."""
    ring = Ring.attach(instance, cmd_ring(source))
    try:
        head = ring.stats().head
        if head == 0:
            return 0
        return int(ring.slots_view(R.RECORD_DTYPE)[(head - 1) & ring.mask]["source_seq"])
    finally:
        ring.close(unlink=False)


ADMIN_EDGE = 1  # the edge process that serves the admin port (and alone writes cmd.0)


async def serve(cfg: Config, engines, make_replayer, journal_dir: str, master_key: bytes, source: int, wake_fd: int,
                port: int, log=print, admin_port: int | None = None, lock_memory: bool = False) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    t0 = time.monotonic()
    state = EdgeState(len(cfg.symbols))
    replayed = bootstrap(state, make_replayer, journal_dir, int(engines.order.seq))
    settle_garbage_collector()
    instance = cfg.instance.name
    next_seq = max(int(engines.order.edge_last_seq[source]), last_queued_source_seq(instance, source)) + 1
    admin = source == ADMIN_EDGE
    admin_seq = (max(int(engines.order.edge_last_seq[R.SOURCE_ADMIN]), last_queued_source_seq(instance, R.SOURCE_ADMIN))
                 + 1) if admin else 0
    vault = Vault(cfg.instance.data_dir, master_key)
    keys = KeyRing(state.directory, vault, listen_secret(master_key), log=log)
    shared = EdgeShared.attach(instance, lock_memory)
    stats = None
    try:
        stats = StatsWriter(instance, f"edge.{source}", lock_memory)  # the supervisor made it
        stats.describe("event-loop", None)
        gateway = RingGateway(state, instance, source, next_seq, wake_fd, loop, edges=cfg.edge.processes,
                              on_fatal=lambda exc: stop.set(), admin_next_seq=admin_seq, stats=stats,
                              lock_memory=lock_memory)
    except BaseException:
        shared.close(unlink=False)
        if stats is not None:
            stats.close()
        raise
    app = make_app(cfg, keys=keys, state=state, gateway=gateway, history_path=store_path(cfg.instance.data_dir),
                   listen_expiry_ms=shared.listen_expiry_ms, rate_table=shared.rate_table, count_events=admin)
    from aiohttp import web

    lim = cfg.limits  # request line and header sizes (aiohttp answers 400 beyond), idle keep-alive
    runners = [web.AppRunner(app, access_log=None, handle_signals=False, max_line_size=lim.max_header_bytes,
                             max_field_size=lim.max_header_bytes, keepalive_timeout=lim.idle_timeout_s)]
    if admin:
        live = LiveCollector(instance, journal_dir, shared.rate_table)
        runners.append(web.AppRunner(admin_app(cfg, state, gateway, vault, keys, master_key, log,
                                               app[METRICS_REGISTRY], (live,)), access_log=None, handle_signals=False))
    try:
        tls = server_context(cfg.edge.tls_cert, cfg.edge.tls_key) if cfg.edge.tls_cert else None
        for runner in runners:
            await runner.setup()
        site = web.TCPSite(runners[0], cfg.edge.host, port, reuse_port=True, ssl_context=tls)
        await site.start()
        host, bound = runners[0].addresses[0][:2]
        http, ws = ("https", "wss") if tls else ("http", "ws")
        admin_text = ""
        if admin:
            await web.TCPSite(runners[1], cfg.edge.admin_host, cfg.edge.admin_port if admin_port is None else admin_port,
                              reuse_port=True, ssl_context=tls).start()
            admin_host, admin_bound = runners[1].addresses[0][:2]
            admin_text = f"; admin API {http}://{admin_host}:{admin_bound}/admin/v1"
        log(f"edge {source} (pid {os.getpid()}) listening on {http}://{host}:{bound} "
            f"(REST /api/v3, streams {ws}://{host}:{bound}/ws and /stream, WebSocket API {ws}://{host}:{bound}/ws-api/v3"
            f"{', TLS 1.3' if tls else ''}{admin_text}; "
            f"state at sequence {state.seq} from {replayed} journal records replayed, "
            f"{len(state.orders)} orders, {time.monotonic() - t0:.2f} s)")
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), GC_FREEZE_EVERY_S)
            except asyncio.TimeoutError:
                gc.freeze()  # what survived so far is not scanned again by full collections
    finally:
        for runner in reversed(runners):
            await runner.cleanup()
        gateway.close()
        shared.close(unlink=False)
        stats.close()
    if gateway.failed is not None:
        raise gateway.failed


def admin_app(cfg: Config, state, gateway, vault, keys, master_key: bytes, log, metrics_registry=None, live=()):
    from ganntec.admin.api import make_admin_app
    from ganntec.admin.auth import AdminUsers, TokenIssuer, derive_signing_key
    from ganntec.edge.app import wall_clock_ms

    users_path = cfg.security.users_path(cfg.instance.data_dir)
    return make_admin_app(cfg, state, gateway, vault, keys, TokenIssuer(derive_signing_key(master_key)),
                          lambda: AdminUsers.load(users_path), wall_clock_ms, log, metrics_registry=metrics_registry,
                          live_metrics=live)


def edge_main(cfg: Config, engines, make_replayer, journal_dir: str, master_key: bytes, source: int, wake_fd: int,
              port: int, admin_port: int | None = None, lock_memory: bool = False) -> int:
    """Body of the forked edge process. `wake_fd`: the eventfd its reports ring's producer
    writes (the supervisor made it before the fork)."""
    import uvloop

    log = Log(f"edge {source}")
    route_logging(Log(f"edge {source}", stream=sys.stderr))  # aiohttp's and the edge's error reports
    try:
        uvloop.run(serve(cfg, engines, make_replayer, journal_dir, master_key, source, wake_fd, port,
                         log=log.say, admin_port=admin_port, lock_memory=lock_memory))
    except Exception as exc:  # noqa: BLE001 - the supervisor sees the exit and restarts
        Log(f"edge {source}", stream=sys.stderr).error(f"{type(exc).__name__}: {exc}")
        return 1
    return 0
