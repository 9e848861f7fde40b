"""The integrator API: a whole exchange in-process over numpy command arrays.

    ex = Exchange([Symbol(...)])
    ex.open_account(1); ex.deposit(1, "USDT", "1000")
    out = ex.submit(ex.limit_orders(account=1, side=BUY, price=["100.5"], qty=["2"]))

It runs the same compiled engine steps as the live runtime, through the in-process driver, so
results are exactly what a client of the full exchange would get for the same commands. Time is
an input: give commands `ts_ns` (the default is 0); nothing reads a clock.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

from ganntec.engines import risk as risk_engine
from ganntec.engines.symbols import Asset, Symbol, symbol_table
from ganntec.shm import records as R
from ganntec.shm.records import OrderType, Permission, RecordType, Side, StpMode, TimeInForce
from ganntec.workers.driver import InProcessDriver


class Exchange:
    def __init__(self, symbols: Sequence[Symbol], max_accounts: int = 1024, max_orders: int = 1 << 16,
                 max_levels: int = 4096, fee_account: int = 0, loss_asset: str | None = None):
        if not symbols:
            raise ValueError("symbols=[] (at least one symbol)")
        self.symbols = list(symbols)
        assets: dict[int, Asset] = {}
        for s in self.symbols:
            for a in (s.base, s.quote):
                if assets.setdefault(a.asset_id, a) != a:
                    raise ValueError(f"asset id {a.asset_id} names two assets: {assets[a.asset_id].name}, {a.name}")
        self.assets = [assets[i] for i in sorted(assets)]
        if [a.asset_id for a in self.assets] != list(range(len(self.assets))):
            raise ValueError(f"asset ids={[a.asset_id for a in self.assets]} (must be 0..n-1)")
        self._asset_by_name = {a.name: a for a in self.assets}
        self._symbol_by_name = {s.name: s for s in self.symbols}
        self.table = symbol_table(self.symbols)
        loss = -1 if loss_asset is None else self._asset(loss_asset).asset_id
        self.driver = InProcessDriver(self.table, len(self.assets), max_accounts, max_orders, max_levels, fee_account,
                                      loss)
        self.journal: list[np.ndarray] = []

    # --- commands ---------------------------------------------------------------------------------
    def submit(self, commands) -> np.ndarray:
        """Run command records (arrays or a list of arrays); returns every record a client
        would be told (RECORD_DTYPE; `records.view(r)` types one). The sequenced records go to
        `self.journal`."""
        journal, edge = self.driver.run(commands)
        self.journal.append(journal)
        return edge

    def open_account(self, account_id: int, permissions: int = Permission.TRADE | Permission.READ,
                     max_open_orders: int = 0, daily_loss_limit: str | None = None, ts_ns: int = 0) -> np.ndarray:
        """Open (or reopen) an account; `daily_loss_limit` is in the exchange's loss asset."""
        r = R.empty(RecordType.ACCOUNT_OPEN)
        r["account_id"], r["permissions"], r["max_open_orders"], r["ts_ns"] = account_id, permissions, max_open_orders, ts_ns
        if daily_loss_limit is not None:
            loss = self.driver.risk.control[risk_engine.K_LOSSASSET]
            if loss < 0:
                raise ValueError("daily_loss_limit needs Exchange(loss_asset=...)")
            r["daily_loss_limit_minor"] = self.assets[int(loss)].to_minor("daily_loss_limit", daily_loss_limit)
        r["maker_fee_e8"] = r["taker_fee_e8"] = -1
        return self.submit(r)

    def deposit(self, account_id: int, asset: str, amount: str, ts_ns: int = 0) -> np.ndarray:
        r = R.empty(RecordType.CREDIT)
        a = self._asset(asset)
        r["account_id"], r["asset_id"], r["ts_ns"] = account_id, a.asset_id, ts_ns
        r["amount_minor"] = a.to_minor("amount", amount)
        return self.submit(r)

    def _asset(self, name: str) -> Asset:
        try:
            return self._asset_by_name[name]
        except KeyError:
            raise ValueError(f"asset={name!r} (one of {', '.join(self._asset_by_name)})") from None

    def _symbol(self, symbol: str | int) -> Symbol:
        if isinstance(symbol, str):
            if symbol not in self._symbol_by_name:
                raise ValueError(f"symbol={symbol!r} (one of {', '.join(self._symbol_by_name)})")
            return self._symbol_by_name[symbol]
        return self.symbols[symbol]

    def limit_orders(self, account, side, price: Iterable, qty: Iterable, symbol: str | int = 0,
                     tif: int = TimeInForce.GTC, ts_ns=0, stp: int = StpMode.DEFAULT) -> np.ndarray:
        """NEW_ORDER LIMIT records from decimal strings (vectorised over price/qty)."""
        sym = self._symbol(symbol)
        ticks = [sym.price_to_tick("price", p) for p in price]
        lots = [sym.qty_to_lot("qty", q) for q in qty]
        return self.orders(account, side, ticks, lots, OrderType.LIMIT, sym.symbol_id, tif, ts_ns, stp)

    @staticmethod
    def orders(account, side, price_tick, qty_lot, order_type=OrderType.LIMIT, symbol_id=0,
               tif=TimeInForce.GTC, ts_ns=0, stp=StpMode.DEFAULT, quote_qty_minor=0) -> np.ndarray:
        """NEW_ORDER records from integer arrays (broadcast like numpy)."""
        fields = np.broadcast_arrays(np.asarray(account), np.asarray(side), np.asarray(price_tick),
                                     np.asarray(qty_lot), np.asarray(order_type), np.asarray(symbol_id),
                                     np.asarray(tif), np.asarray(ts_ns), np.asarray(stp), np.asarray(quote_qty_minor))
        n = fields[0].size
        r = R.empty(RecordType.NEW_ORDER, n)
        names = ("account_id", "side", "price_tick", "qty_lot", "order_type", "symbol_id", "time_in_force", "ts_ns",
                 "stp_mode", "quote_qty_minor")
        for name, values in zip(names, fields):
            r[name] = values.reshape(-1)
        market = r["order_type"] == OrderType.MARKET
        r["time_in_force"][market] = 0
        return r

    @staticmethod
    def cancels(account, order_id, symbol_id=0, ts_ns=0) -> np.ndarray:
        fields = np.broadcast_arrays(np.asarray(account), np.asarray(order_id), np.asarray(symbol_id), np.asarray(ts_ns))
        r = R.empty(RecordType.CANCEL, fields[0].size)
        for name, values in zip(("account_id", "order_id", "symbol_id", "ts_ns"), fields):
            r[name] = values.reshape(-1)
        return r

    @staticmethod
    def cancel_replaces(cancel_order_id, new_orders: np.ndarray, mode=R.ReplaceMode.STOP_ON_FAILURE,
                        cancel_restrictions=R.CancelRestriction.NONE, cancel_orig_client_order_id=b"") -> np.ndarray:
        """CANCEL_REPLACE commands: for each NEW_ORDER record in `new_orders` (from `orders`),
        cancel `cancel_order_id` (0 = the order whose client id is `cancel_orig_client_order_id`)
        and place that order. Arguments broadcast; two records per command, in order."""
        # a byte copy: copying a structured array copies its fields only, not its reserved bytes
        legs = R.as_records(new_orders).view(np.uint8).reshape(-1, R.RECORD_BYTES).copy()
        legs = legs.view(R.NEW_ORDER_DTYPE).reshape(-1)
        fields = np.broadcast_arrays(np.asarray(cancel_order_id), np.asarray(cancel_orig_client_order_id),
                                     np.asarray(mode), np.asarray(cancel_restrictions),
                                     legs["account_id"], legs["symbol_id"], legs["ts_ns"])
        n = len(legs)
        heads = R.empty(RecordType.CANCEL_REPLACE, n)
        for name, values in zip(("order_id", "orig_client_order_id", "replace_mode", "cancel_restrictions",
                                 "account_id", "symbol_id", "ts_ns"), fields):
            heads[name] = values.reshape(-1)
        heads["flags"] = R.FLAG_CONTINUED
        out = np.zeros((2 * n, R.RECORD_BYTES), np.uint8)
        out[0::2] = heads.view(np.uint8).reshape(n, R.RECORD_BYTES)
        out[1::2] = legs.view(np.uint8).reshape(n, R.RECORD_BYTES)
        return out.view(R.RECORD_DTYPE).reshape(-1)

    @staticmethod
    def amends(account, order_id, new_qty_lot=0, new_price_tick=0, symbol_id=0, ts_ns=0,
               new_client_order_id=b"", orig_client_order_id=b"") -> np.ndarray:
        """One AMEND command (order 0 = by `orig_client_order_id`); with `new_client_order_id`
        the order takes that id (an EXT record follows the AMEND). A working OCO leg takes only
        a lower `new_qty_lot`, which both its list's legs take (Binance's keep-priority amend)."""
        r = R.empty(RecordType.AMEND)
        r["account_id"], r["order_id"], r["symbol_id"], r["ts_ns"] = account, order_id, symbol_id, ts_ns
        r["new_qty_lot"], r["new_price_tick"], r["orig_client_order_id"] = new_qty_lot, new_price_tick, orig_client_order_id
        if not new_client_order_id:
            return r.view(R.RECORD_DTYPE)
        r["flags"] = R.FLAG_CONTINUED
        ext = R.empty(RecordType.EXT)
        ext["account_id"], ext["symbol_id"], ext["ts_ns"] = account, symbol_id, ts_ns
        ext["ext_kind"], ext["text1"] = R.ExtKind.NEW_CLIENT_ORDER_ID, new_client_order_id
        return R.concat([r, ext])

    @staticmethod
    def oco(account, side, qty_lot, above: dict, below: dict, symbol_id=0, ts_ns=0, stp=StpMode.DEFAULT,
            list_client_order_id=b"") -> np.ndarray:
        """One OCO command (three records): `above` and `below` give each leg's order_type and
        any of price_tick, stop_price_tick, trailing_delta_bips, time_in_force, iceberg_qty_lot,
        client_order_id. SELL: above = LIMIT_MAKER / TAKE_PROFIT(_LIMIT), below = STOP_LOSS(_LIMIT);
        BUY: the other way round."""
        head = R.empty(RecordType.ORDER_LIST)
        head["account_id"], head["symbol_id"], head["ts_ns"], head["flags"] = account, symbol_id, ts_ns, R.FLAG_CONTINUED
        head["list_type"], head["list_client_order_id"] = R.ListType.OCO, list_client_order_id
        legs = R.empty(RecordType.NEW_ORDER, 2)
        for k, leg in enumerate((above, below)):
            legs[k]["account_id"], legs[k]["symbol_id"], legs[k]["ts_ns"] = account, symbol_id, ts_ns
            legs[k]["side"], legs[k]["qty_lot"], legs[k]["stp_mode"] = side, qty_lot, stp
            for name, value in leg.items():
                legs[k][name] = value
        legs[0]["flags"] = R.FLAG_CONTINUED
        return R.concat([head, legs])

    # --- state ----------------------------------------------------------------------------------
    def balances(self) -> np.ndarray:
        """int64 (accounts, assets, 2): free and locked, minor units."""
        return self.driver.risk.balances.copy()

    def balance(self, account_id: int, asset: str) -> tuple[str, str]:
        """(free, locked) as exact decimal strings."""
        a = self._asset(asset)
        free, locked = self.driver.risk.balances[account_id, a.asset_id]
        return a.from_minor(int(free)), a.from_minor(int(locked))

    def positions(self) -> np.ndarray:
        return self.driver.position.positions.copy()

    def book(self, symbol: str | int = 0, side: int = Side.BUY) -> np.ndarray:
        """int64 (levels, 3): price_tick, qty_lot, orders; best first."""
        return self.driver.matching.levels(self._symbol(symbol).symbol_id, side)

    def conservation_errors(self) -> list[str]:
        return self.driver.risk.conservation_errors() + self.driver.risk.hold_errors()
