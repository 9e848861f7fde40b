"""The edge's own measurements into its metrics (metrics.EdgeMetrics): HTTP requests by route
pattern, and the business events of the report stream it applies."""

from __future__ import annotations

import time

from aiohttp import web

from ganntec.edge.appkeys import METRICS
from ganntec.shm import records as R
from ganntec.shm.records import RecordType

T = RecordType


def _route(request: web.Request) -> str:
    # The route's pattern ("/api/v3/order", "/ws/{streams:.*}"), never the raw path: bounded labels.
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


@web.middleware
async def http_metrics(request: web.Request, handler):
    """Outermost: every answer counted by route, method and status; handling time observed for
    everything but WebSocket upgrades (their handler lasts the connection's life)."""
    m = request.app[METRICS]
    t0 = time.perf_counter()
    # (a bound child per label set, kept: labels() costs ~2 us a call in multiprocess mode)
    status = 500
    try:
        resp = await handler(request)
        status = resp.status
        return resp
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        route = _route(request)
        children = m.children
        count = children.get((route, request.method, status))
        if count is None:
            count = children[(route, request.method, status)] = m.http_requests.labels(route, request.method,
                                                                                         str(status))
        count.inc()
        if status != 101:
            seconds = children.get(route)
            if seconds is None:
                seconds = children[route] = m.http_seconds.labels(route)
            seconds.observe(time.perf_counter() - t0)


def event_counter(m, symbol_names: list[str]):
    """A state listener: orders accepted/rejected, refusals by reason, trades and their quantity
    by symbol (the reports applied are the reports ring's consumer position)."""
    reason_names = {int(r): r.name for r in R.Reason}
    accepted, rejected = m.orders.labels("accepted"), m.orders.labels("rejected")
    trades = [m.trades.labels(n) for n in symbol_names]
    lots = [m.traded_base.labels(n) for n in symbol_names]

    def on_record(r) -> None:
        t = r.type
        if t == T.FILL:
            if r.symbol_id < len(trades):
                trades[r.symbol_id].inc()
                lots[r.symbol_id].inc(r.qty_lot)
        elif t == T.ORDER_ACCEPTED:
            accepted.inc()
        elif t == T.ORDER_REJECTED:
            rejected.inc()
            m.rejects.labels(reason_names.get(r.reason, str(r.reason))).inc()
        elif t == T.CANCEL_REJECTED:
            m.rejects.labels(reason_names.get(r.reason, str(r.reason))).inc()
    return on_record
