"""Prometheus metrics (prometheus-client), served at `/metrics` on the admin port.

Processes: every process of an instance records into prometheus-client's multiprocess files
under `<data-dir>/metrics/` (`prepare` empties it and sets PROMETHEUS_MULTIPROC_DIR before
anything imports prometheus_client, so the forked edges, engine workers and the supervisor all
write their own `*_<pid>.db`); edge process 1 merges them at each scrape and adds what it reads
live: ring positions and fill from the shared segments, the journal's size on disk, the edge
segment's rate table overflow. Without the variable (tests, integrators) every metric lives in
the registry its owner was given.

Names follow Prometheus conventions (`_total` counters, `_seconds`, `_bytes`, base units);
labels are bounded: route patterns (never raw paths), reason names, ring names, symbols.
No metric ever carries a key, a secret, an account's balance or an address."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable

ENV = "PROMETHEUS_MULTIPROC_DIR"
DIR_NAME = "metrics"
# Seconds: a loopback request is ~0.1-5 ms; the engine round trip and fsync ~0.05-50 ms.
# limits.py's refusals: (limit, HTTP status)
RATE_LIMIT_LABELS = (("request_weight", "429"), ("raw_requests", "429"), ("orders_10s", "429"), ("orders_1d", "429"),
                     ("ws_connections", "429"), ("connections_per_ip", "429"), ("ban", "418"))
LATENCY_BUCKETS_S = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


def prepare(data_dir: str, environ=os.environ) -> str:
    """Empty `<data_dir>/metrics` (an earlier run's files would be summed in) and point
    prometheus-client's multiprocess mode at it. Call before prometheus_client is imported."""
    path = os.path.join(os.path.abspath(data_dir), DIR_NAME)
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path, mode=0o700, exist_ok=True)
    environ[ENV] = path
    return path


def multiprocess_dir(environ=os.environ) -> str | None:
    return environ.get(ENV) or None


class EdgeMetrics:
    """What an edge process records: HTTP and WebSocket traffic, rate-limit refusals, the
    engines' round trip; the admin edge also counts the business events it applies."""

    def __init__(self, registry=None):
        from prometheus_client import Counter, Gauge, Histogram

        kw = {"registry": registry}
        self.http_requests = Counter("ganntec_http_requests_total", "HTTP requests answered by the edge",
                                     ("route", "method", "status"), **kw)
        self.http_seconds = Histogram("ganntec_http_request_duration_seconds",
                                      "HTTP request handling time in the edge, received to answered",
                                      ("route",), buckets=LATENCY_BUCKETS_S, **kw)
        self.ws_connections = Gauge("ganntec_websocket_connections", "Open WebSocket connections",
                                    ("endpoint",), multiprocess_mode="livesum", **kw)
        self.ws_messages = Counter("ganntec_websocket_messages_received_total",
                                   "Messages received from WebSocket clients", ("endpoint",), **kw)
        self.ws_api_requests = Counter("ganntec_websocket_api_requests_total", "WebSocket API requests answered",
                                       ("method", "status"), **kw)
        self.ws_api_seconds = Histogram("ganntec_websocket_api_request_duration_seconds",
                                        "WebSocket API request handling time in the edge", ("method",),
                                        buckets=LATENCY_BUCKETS_S, **kw)
        self.rate_limited = Counter("ganntec_rate_limit_refusals_total",
                                    "Requests refused by a rate or connection limit", ("limit", "status"), **kw)
        self.round_trip = Histogram("ganntec_engine_round_trip_seconds",
                                    "Edge to engines and back: a command published on the edge's ring until "
                                    "the report that answers it is applied", buckets=LATENCY_BUCKETS_S, **kw)
        self.orders = Counter("ganntec_orders_total", "Orders the engines accepted or rejected", ("result",), **kw)
        self.rejects = Counter("ganntec_rejects_total", "Commands the engines refused, by reason", ("reason",), **kw)
        self.trades = Counter("ganntec_trades_total", "Trades, by symbol", ("symbol",), **kw)
        self.traded_base = Counter("ganntec_traded_quantity_lots_total", "Traded base quantity, in lots",
                                   ("symbol",), **kw)
        self.children: dict = {}  # bound label children by label values (observe.py)
        # Known label sets start at 0, so a dashboard's series exist before the first event.
        for limit, status in RATE_LIMIT_LABELS:
            self.rate_limited.labels(limit, status)
        for result in ("accepted", "rejected"):
            self.orders.labels(result)
        from ganntec.shm.records import Reason
        for reason in Reason:
            if reason != Reason.NONE:
                self.rejects.labels(reason.name)


class SupervisorMetrics:
    def __init__(self, registry=None):
        from prometheus_client import Counter, Histogram

        kw = {"registry": registry}
        self.recoveries = Counter("ganntec_recoveries_total", "Engine recoveries after a worker failed (restarts)",
                                  ("cause",), **kw)
        self.edge_restarts = Counter("ganntec_edge_restarts_total", "Edge or history processes started again",
                                     ("process",), **kw)
        self.fsync_seconds = Histogram("ganntec_journal_fsync_seconds", "Journal fdatasync latency (group commits)",
                                       buckets=LATENCY_BUCKETS_S, **kw)


def timed_sync(sync: Callable[[int], None], histogram) -> Callable[[int], None]:
    """The journal writer's sync, observed (the writer takes its sync as an argument)."""
    import time

    def timed(fd: int) -> None:
        t0 = time.perf_counter()
        sync(fd)
        histogram.observe(time.perf_counter() - t0)
    return timed


class LiveCollector:
    """Metrics read at scrape time from what every process shares: rings (positions, fill,
    capacity, consumer heartbeat age), the journal on disk, the rate table."""

    def __init__(self, instance: str, journal_dir: str | None, rate_table=None,
                 clock_ns: Callable[[], int] | None = None):
        import time

        self.instance, self.journal_dir, self.rate_table = instance, journal_dir, rate_table
        self.clock_ns = clock_ns or time.monotonic_ns

    def describe(self):
        return []

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        from ganntec.inspect.segments import snapshot  # read-only: never takes a ring role

        produced = CounterMetricFamily("ganntec_ring_records_published", "Records a ring's producer has published",
                                       labels=("ring",))
        consumed = CounterMetricFamily("ganntec_ring_records_consumed", "Records a ring's consumer has taken",
                                       labels=("ring",))
        fill = GaugeMetricFamily("ganntec_ring_fill_ratio", "Records waiting in a ring over its capacity",
                                 labels=("ring",))
        capacity = GaugeMetricFamily("ganntec_ring_capacity_records", "A ring's capacity in records",
                                     labels=("ring",))
        beat = GaugeMetricFamily("ganntec_ring_consumer_heartbeat_age_seconds",
                                 "Since a ring's consumer last beat its heartbeat", labels=("ring",))
        now = self.clock_ns()
        for row in snapshot(self.instance):
            r = row["ring"]
            if not r:
                continue
            ring = row["name"].split(".", 2)[-1]  # /ganntec.<instance>.cmd.1 -> cmd.1
            produced.add_metric([ring], r["head"])
            consumed.add_metric([ring], r["tail"])
            fill.add_metric([ring], (r["head"] - r["tail"]) / r["capacity"])
            capacity.add_metric([ring], r["capacity"])
            if r["consumer_heartbeat_ns"]:
                beat.add_metric([ring], max(0, now - r["consumer_heartbeat_ns"]) / 1e9)
        yield from (produced, consumed, fill, capacity, beat)
        yield from self._stats(snapshot(self.instance, ".stats."), now)
        if self.journal_dir:
            size = GaugeMetricFamily("ganntec_journal_size_bytes", "Bytes of journal segments on disk "
                                     "(archived ones compressed)")
            total = 0
            try:
                for entry in os.scandir(self.journal_dir):
                    if entry.is_file() and not entry.name.startswith("."):
                        total += entry.stat().st_size
            except FileNotFoundError:
                pass
            size.add_metric([], total)
            yield size
        if self.rate_table is not None:
            over = CounterMetricFamily("ganntec_rate_table_overflows", "Rate-limit operations counted in the shared "
                                       "overflow slot (the table was full)")
            over.add_metric([], self.rate_table.overflows)
            yield over


    @staticmethod
    def _stats(rows, now: int):
        """Every process's stats table (shm/stats.py): stage latencies as histograms (bucket
        bounds 2^k ns), the journal's last sequence, recoveries, each process's heartbeat."""
        from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily

        from ganntec.shm import stats as S

        stage = HistogramMetricFamily("ganntec_stage_latency_seconds",
                                      "Edge receive of a client command to this stage (order, risk, matching, "
                                      "position: popped by that engine; edge: its report read by the edge)",
                                      labels=("stage", "process"))
        recovery = HistogramMetricFamily("ganntec_recovery_duration_seconds",
                                         "Engine recoveries (snapshot load and journal replay) by the supervisor")
        last_seq = GaugeMetricFamily("ganntec_journal_last_sequence", "The last sequence number journaled")
        beat = GaugeMetricFamily("ganntec_process_heartbeat_age_seconds", "Since a process last beat its heartbeat",
                                 labels=("process",))
        for row in rows:
            t = row["table"]
            if t.get("kind") != "stats":
                continue
            process = row["name"].split(".stats.", 1)[-1]
            if t["writer_heartbeat_ns"]:
                beat.add_metric([process], max(0, now - t["writer_heartbeat_ns"]) / 1e9)
            for name, st in t.get("stages", {}).items():
                if name == S.PROCESS_ROW:
                    continue
                if name == "journal":
                    last_seq.add_metric([], st["gauge_a"])
                    continue
                buckets = [(repr((1 << k) / 1e9), c) for k, c in zip(range(S.HIST_FIRST_BOUND, S.BUCKETS),
                                                                      st["cumulative"][S.HIST_FIRST_BOUND:])]
                buckets.append(("+Inf", st["count"]))
                total = st["sum_ns"] / 1e9
                if name == "recovery":
                    recovery.add_metric([], buckets, total)
                else:
                    stage.add_metric([name, process], buckets, total)
        yield from (stage, recovery, last_seq, beat)


def render(registry=None, extra=()) -> tuple[bytes, str]:
    """The exposition (text format) of `registry`, or of every process's files in multiprocess
    mode, plus `extra` collectors. Returns (body, content type)."""
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector

    path = multiprocess_dir()
    if path is not None:
        out = CollectorRegistry()
        MultiProcessCollector(out, path=path)
    else:
        out = CollectorRegistry()
        if registry is not None:
            out.register(_Forward(registry))
    for c in extra:
        out.register(c)
    return generate_latest(out), CONTENT_TYPE_LATEST


class _Forward:
    """A registry's metrics inside another registry (single-process mode)."""

    def __init__(self, registry):
        self.registry = registry

    def describe(self):
        return []

    def collect(self):
        yield from self.registry.collect()
