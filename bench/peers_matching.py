"""The Python matching engines a user could pick instead of ganntec, driven by bench/matching.py.

Each peer gets the same command stream (a numpy array of OPS_DTYPE rows, see matching.py; a row
is kind, side, account, seq, order_id, price, qty). In `prepare` (not timed) it builds its book
from the fill commands and turns the timed commands into its own API objects and calls (order
objects, command structs), as ganntec's records are built before its timed region; `run` (timed)
makes the calls; `book` reads the book back as (side, price, order_id, leaves) rows in priority
order, bids best first, then asks best first.

  liquibook 2.0.1        C++ book behind SWIG. `liquibook_book_OrderBook` with a Python
                         OrderListener: the book finds an order by the order object's own price,
                         so the listener must accept every order (`on_accept`: SimpleOrder
                         ignores a replace before that) and apply every replace to the object
                         (`on_replace`), or the next cancel/replace of a moved order is
                         rejected as not found (a Python callback per accept, replace, fill
                         and cancel). IOC goes to `add(order, oc_immediate_or_cancel)` (the
                         order's own flag is ignored). Moves are `replace(order, 0, new_price)`.
                         `DepthOrderBook` is not used: its depth bookkeeping breaks after a
                         partly filled order is moved.
  matching-engine 0.1.1  pure Python (sortedcontainers + msgspec). No amend: a move is a cancel
                         plus a new GTC order with the same id for the remaining quantity. It
                         declares Python >= 3.12 and has two `type X = ...` statements; on 3.11
                         an import hook rewrites them to plain assignments as the modules load
                         (the installed files are left as they are). Not in the `bench` extra:
                         pip refuses it on 3.11 unless told to ignore requires-python, so install
                         it with  pip install --ignore-requires-python 'matching-engine>=0.1.1'
  order-matching 0.12.0  pure Python, float prices and sizes, no IOC and no amend: IOC is
                         place + match + cancel of any rest, a move is cancel + place. Every
                         command scans and re-sorts every resting order, so it runs a shorter
                         prefix of the stream. Needs its [polars] extra to import.

Every peer runs with self-trade prevention off (ganntec's commands say STP NONE), so all of them
do plain price-time matching and must end with the same book.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import re
import sys
from datetime import datetime, timedelta

GTC, IOC, CANCEL, MOVE = 1, 2, 3, 4  # OPS_DTYPE `kind`
BUY, SELL = 1, 2                     # OPS_DTYPE `side` (ganntec's Side values)


class Peer:
    name = "peer"     # the package's name on PyPI: the system name in the JSON figures
    module = "peer"   # what it imports as
    install = ""      # how to install it when it is missing
    how = ""          # one line for the table
    slow = False      # runs a short prefix of the stream, once

    def missing(self) -> str | None:
        """Why the peer cannot run here, or None."""
        if importlib.util.find_spec(self.module) is None:
            return f"{self.module} is not installed ({self.install})"
        return None

    def prepare(self, fill, ops):
        """A fresh book holding the fill commands, and the timed commands in the peer's API."""
        raise NotImplementedError

    def run(self, state) -> None:
        raise NotImplementedError

    def book(self, state) -> list[tuple[int, int, int, int]]:
        raise NotImplementedError


# --- liquibook ----------------------------------------------------------------------------
class Liquibook(Peer):
    name = "liquibook"
    module = "liquibook"
    install = "pip install -e '.[bench]'"
    how = "C++ OrderBook via SWIG + Python OrderListener; move = replace(order, 0, price)"

    def prepare(self, fill, ops):
        import liquibook

        class Listener(liquibook.OrderListener):
            """Every callback is pure virtual in C++, so each must exist. Accept and replace
            matter: SimpleOrder.replace changes the order's price only once the order was
            accepted. Rejects are counted: there should be none."""

            def __init__(self):
                liquibook.OrderListener.__init__(self)
                self.rejects = 0

            def on_accept(self, order):
                order.accept()

            def on_reject(self, order, reason):
                self.rejects += 1

            def on_fill(self, order, matched_order, qty, cost):
                pass

            def on_cancel(self, order):
                pass

            def on_cancel_reject(self, order, reason):
                self.rejects += 1

            def on_replace(self, order, size_delta, new_price):
                order.replace(size_delta, new_price)

            def on_replace_reject(self, order, reason):
                self.rejects += 1

        book = liquibook.liquibook_book_OrderBook()
        listener = Listener()
        book.set_order_listener(listener)
        orders = {}  # our order id -> its SimpleOrder
        ioc = liquibook.oc_immediate_or_cancel

        def calls(rows):
            out = []
            for kind, side, _account, _seq, oid, price, qty in rows.tolist():
                if kind == GTC or kind == IOC:
                    order = orders[oid] = liquibook.SimpleOrder(side == BUY, price, qty)
                    out.append((book.add, (order, ioc) if kind == IOC else (order,)))
                elif kind == CANCEL:
                    out.append((book.cancel, (orders[oid],)))
                else:
                    out.append((book.replace, (orders[oid], 0, price)))
            return out

        for fn, args in calls(fill):
            fn(*args)
        timed = calls(ops)
        ids = {order.order_id_: oid for oid, order in orders.items()}
        return {"book": book, "listener": listener, "calls": timed, "ids": ids}

    def run(self, state):
        for fn, args in state["calls"]:
            fn(*args)

    def book(self, state):
        if state["listener"].rejects:
            raise RuntimeError(f"{state['listener'].rejects} commands rejected")
        ids = state["ids"]
        rows = []
        for side, levels in ((BUY, state["book"].bids()), (SELL, state["book"].asks())):
            rows += [(side, key.price(), ids[t.ptr().order_id_], t.open_qty()) for key, t in levels.items()]
        return rows


# --- matching-engine ----------------------------------------------------------------------
class _TypeAliasLoader(importlib.machinery.SourceFileLoader):
    """Compiles a module with its `type X = ...` lines (3.12 syntax) made plain assignments.
    Always compiles from source and never writes bytecode, so nothing installed changes."""

    def get_code(self, fullname):
        source = self.get_data(self.path)
        source = re.sub(rb"(?m)^type (\w+) = ", rb"\1 = ", source)
        return compile(source, self.path, "exec", dont_inherit=True)


class _TypeAliasFinder(importlib.abc.MetaPathFinder):
    MODULES = ("matching_engine.domain", "matching_engine.events")

    def find_spec(self, fullname, path, target=None):
        if fullname not in self.MODULES:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is not None:
            spec.loader = _TypeAliasLoader(fullname, spec.origin)
        return spec


def allow_matching_engine_import():
    """Install the import hook (once) on Pythons without the `type` statement."""
    if sys.version_info < (3, 12) and not any(isinstance(f, _TypeAliasFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _TypeAliasFinder())


class MatchingEnginePeer(Peer):
    name = "matching-engine"
    module = "matching_engine"
    install = "pip install --ignore-requires-python 'matching-engine>=0.1.1'"
    how = "pure Python; move = cancel + new GTC for the remaining qty"

    def prepare(self, fill, ops):
        allow_matching_engine_import()
        from matching_engine.domain import (CancelOrder, NewOrder, OrderType, SelfTradePrevention,
                                            SequencedCommand, Side, TimeInForce)
        from matching_engine.engine import MatchingEngine

        sides = {BUY: Side.BUY, SELL: Side.SELL}
        tifs = {GTC: TimeInForce.GTC, IOC: TimeInForce.IOC}
        engine = MatchingEngine()
        seq = 0

        def commands(rows):
            nonlocal seq
            out = []
            for kind, side, acct, _seq, oid, price, qty in rows.tolist():
                if kind != GTC and kind != IOC:
                    seq += 1
                    out.append(SequencedCommand(seq, seq, CancelOrder(oid, acct)))
                if kind != CANCEL:
                    seq += 1
                    tif = tifs[kind] if kind != MOVE else TimeInForce.GTC
                    out.append(SequencedCommand(seq, seq, NewOrder(oid, acct, sides[side], price, qty, OrderType.LIMIT,
                                                                   tif, False, SelfTradePrevention.NONE)))
            return out

        for sc in commands(fill):
            engine.process(sc)
        return {"engine": engine, "commands": commands(ops)}

    def run(self, state):
        process = state["engine"].process
        for sc in state["commands"]:
            process(sc)

    def book(self, state):
        from matching_engine.domain import Side

        book = state["engine"].book
        return [(BUY if e.side is Side.BUY else SELL, e.price, e.order_id, e.qty)
                for side in (Side.BUY, Side.SELL) for e in book.entries(side)]


# --- order-matching -----------------------------------------------------------------------
class OrderMatching(Peer):
    name = "order-matching"
    module = "order_matching"
    install = "pip install -e '.[bench]'  (order-matching[polars])"
    slow = True
    how = "pure Python, float prices; IOC = place + match + cancel rest; move = cancel + place"

    def missing(self):
        why = super().missing()
        if why is None and importlib.util.find_spec("polars") is None:
            why = "order-matching needs its [polars] extra (pip install -e '.[bench]')"
        return why

    def prepare(self, fill, ops):
        from loguru import logger
        from order_matching.enums import Side
        from order_matching.matching_engine import MatchingEngine
        from order_matching.order import LimitOrder
        from order_matching.orders import Orders

        logger.disable("order_matching")  # it logs every place/match at DEBUG to stderr by default
        engine = MatchingEngine(seed=1)
        sides = {BUY: Side.BUY, SELL: Side.SELL}
        t0 = datetime(2026, 1, 1)
        seq = 0

        def place(orders, ts):
            engine.place(orders)
            engine.match(timestamp=ts)

        def place_ioc(orders, ts, oid):
            place(orders, ts)
            if engine.unprocessed_orders.find_order_by_id(oid) is not None:
                engine.cancel_order(oid)

        def move(oid, orders, ts):
            engine.cancel_order(oid)
            place(orders, ts)

        def calls(rows):
            nonlocal seq
            out = []
            for kind, side, acct, _seq, oid, price, qty in rows.tolist():
                if kind == CANCEL:
                    out.append((engine.cancel_order, (str(oid),)))
                    continue
                seq += 1  # time priority is by timestamp: one microsecond per order placed
                ts = t0 + timedelta(microseconds=seq)
                orders = Orders([LimitOrder(side=sides[side], price=float(price), size=float(qty), timestamp=ts,
                                            order_id=str(oid), trader_id=str(acct))])
                if kind == GTC:
                    out.append((place, (orders, ts)))
                elif kind == IOC:
                    out.append((place_ioc, (orders, ts, str(oid))))
                else:
                    out.append((move, (str(oid), orders, ts)))
            return out

        for fn, args in calls(fill):
            fn(*args)
        return {"engine": engine, "calls": calls(ops)}

    def run(self, state):
        for fn, args in state["calls"]:
            fn(*args)

    def book(self, state):
        ob = state["engine"].unprocessed_orders
        rows = []
        for side, levels, best_first in ((BUY, ob.bids, True), (SELL, ob.offers, False)):
            for price in sorted(levels, reverse=best_first):
                rows += [(side, int(price), int(o.order_id), int(o.size)) for o in levels[price]]
        return rows


PEERS = (Liquibook(), MatchingEnginePeer(), OrderMatching())
