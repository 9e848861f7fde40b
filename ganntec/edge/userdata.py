"""User data events (user-data-stream.md) for the accounts someone subscribed to: an
executionReport per order event, an outboundAccountPosition per batch of balance changes, a
balanceUpdate per admin credit or debit. Made from the report stream as the edge applies it,
so they come in journal order, each once: after an engine restart the supervisor republishes
only what no publish reached, and the projection skips what it has (state.py).

Two ways in: the WebSocket API's `userDataStream.subscribe.signature` (wsapi.py), what Binance
keeps and ccxt uses; and listen keys on `/ws/<listenKey>` and `/stream?streams=<listenKey>`
(listenkeys.py), which Binance retired for spot (CHANGELOG 2026-01-21) but many bots still use.
Both register sinks here, so the events are made once whichever way they leave."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable

from aiohttp import web

from ganntec.edge.appkeys import CONFIG, STATE, SYMBOLS_BY_ID
from ganntec.edge.state import Order
from ganntec.edge.units import AssetUnits, SymbolUnits
from ganntec.shm import records as R
from ganntec.shm.records import OrderStatus, OrderType, RecordType, Side, StpMode, TimeInForce

USER_STREAMS = web.AppKey("user_streams", object)

# execution type ("x") of each order event
EXECUTION_TYPES = {RecordType.ORDER_ACCEPTED: "NEW", RecordType.ORDER_CANCELED: "CANCELED",
                   RecordType.ORDER_EXPIRED: "EXPIRED", RecordType.ORDER_AMENDED: "REPLACED",
                   RecordType.ORDER_TRIGGERED: "NEW", RecordType.FILL: "TRADE"}


def execution_report(u: SymbolUnits, o: Order, x: str, r, *, last_lot: int = 0, last_tick: int = 0,
                     last_quote: int = 0, commission: str = "0", commission_asset: str | None = None,
                     trade_id: int = -1, maker: bool = False, cid: str | None = None, orig_cid: str = "") -> dict:
    ms = r.ts_ns // 1_000_000
    ev = {"e": "executionReport", "E": ms, "s": u.name, "c": cid if cid is not None else o.client_order_id,
          "S": Side(o.side).name, "o": OrderType(o.order_type).name, "f": TimeInForce(o.time_in_force).name,
          "q": u.qty(o.qty_lot), "p": u.price(o.price_tick), "P": u.price(o.stop_price_tick), "F": u.qty(o.iceberg_lot),
          "g": o.list_id, "C": orig_cid, "x": x, "X": OrderStatus(o.status).name, "r": "NONE", "i": o.order_id,
          "l": u.qty(last_lot), "z": u.qty(o.executed_lot), "L": u.price(last_tick), "n": commission,
          "N": commission_asset, "T": ms, "t": trade_id, "I": r.seq, "w": o.is_open and o.working_ns >= 0,
          "m": maker, "M": False, "O": o.time_ns // 1_000_000, "Z": u.quote_amount(o.cum_quote_minor),
          "Y": u.quote_amount(last_quote), "Q": u.quote_amount(o.quote_qty_minor),
          "V": StpMode(o.stp_mode or int(u.symbol.default_stp)).name}
    if o.working_ns >= 0:
        ev["W"] = o.working_ns // 1_000_000
    if o.status == OrderStatus.EXPIRED_IN_MATCH:
        ev["x"] = "TRADE_PREVENTION"
    return ev


class UserStreams:
    """Who listens to which account, and the events made for them."""

    def __init__(self, app: web.Application):
        self.state = app[STATE]
        self.units: list[SymbolUnits] = app[SYMBOLS_BY_ID]
        self.assets = [AssetUnits(a) for a in app[CONFIG].assets]
        self.sinks: dict[int, set[Callable[[dict], None]]] = collections.defaultdict(set)
        self._positions: dict[int, dict[int, tuple[int, int]]] = {}
        self._position_ms: dict[int, int] = {}
        self._watchers: list = []
        self.state.listeners.append(self.on_record)
        self.state.batch_listeners.append(self.flush)

    def add(self, account: int, sink: Callable[[dict], None]) -> None:
        self.sinks[account].add(sink)
        for fut in self._watchers:
            if not fut.done():
                fut.set_result(None)
        self._watchers.clear()

    async def until_subscribed(self) -> None:
        """Wait until some account has a subscriber (tests wait on it instead of sleeping)."""
        if self.sinks:
            return
        fut = asyncio.get_running_loop().create_future()
        self._watchers.append(fut)
        await fut

    def remove(self, account: int, sink: Callable[[dict], None]) -> None:
        sinks = self.sinks.get(account)
        if sinks is not None:
            sinks.discard(sink)
            if not sinks:
                del self.sinks[account]

    def _emit(self, account: int, ev: dict) -> None:
        for sink in list(self.sinks.get(account, ())):
            sink(ev)

    def on_record(self, r) -> None:
        if not self.sinks:
            return
        t = r.type
        if t == RecordType.BALANCE:
            if r.account_id in self.sinks:
                self._positions.setdefault(r.account_id, {})[r.asset_id] = (r.free_minor, r.locked_minor)
                self._position_ms[r.account_id] = r.ts_ns // 1_000_000
                if r.source == R.SOURCE_ADMIN and r.delta_minor:  # a credit or debit
                    a = self.assets[r.asset_id]
                    self._emit(r.account_id, {"e": "balanceUpdate", "E": r.ts_ns // 1_000_000, "a": a.name,
                                              "d": a.fmt(r.delta_minor), "T": r.ts_ns // 1_000_000})
        elif t == RecordType.FILL:
            self._fill(r)
        elif t in EXECUTION_TYPES:
            o = self.state.orders.get(r.order_id)
            if o is None or o.account_id not in self.sinks:
                return
            cid, orig = None, ""
            if t == RecordType.ORDER_CANCELED:
                own = R.decode_client_id(r.client_order_id)
                cid, orig = (own or o.client_order_id), o.client_order_id
            self._emit(o.account_id, execution_report(self.units[o.symbol_id], o, EXECUTION_TYPES[t], r, cid=cid,
                                                      orig_cid=orig))

    def _fill(self, r) -> None:
        u = self.units[r.symbol_id]
        taker_buys = r.taker_side == Side.BUY
        for oid, maker, fee, buys in ((r.taker_order_id, False, r.taker_fee_minor, taker_buys),
                                      (r.maker_order_id, True, r.maker_fee_minor, not taker_buys)):
            o = self.state.orders.get(oid)
            if o is None or o.account_id not in self.sinks:
                continue
            asset = u.base if buys else u.quote  # the fee is in what this side receives
            self._emit(o.account_id, execution_report(
                u, o, "TRADE", r, last_lot=r.qty_lot, last_tick=r.price_tick, last_quote=r.quote_qty_minor,
                commission=asset.fmt(fee), commission_asset=asset.name, trade_id=r.trade_id, maker=maker))

    def flush(self) -> None:
        for account, assets in self._positions.items():
            self._emit(account, {"e": "outboundAccountPosition", "E": self._position_ms[account],
                                 "u": self._position_ms[account],
                                 "B": [{"a": self.assets[a].name, "f": self.assets[a].fmt(f), "l": self.assets[a].fmt(lk)}
                                       for a, (f, lk) in sorted(assets.items())]})
        self._positions.clear()


def setup(app: web.Application) -> None:
    app[USER_STREAMS] = UserStreams(app)
