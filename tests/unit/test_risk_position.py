"""Risk (checks, holds, fees, settlement, admin) and position (P&L) through the whole
in-process exchange, with hand-computed figures."""

from __future__ import annotations

import pytest

from ganntec.engines.risk import fee_of
from ganntec.engines.symbols import Asset, Symbol
from ganntec.exchange import Exchange
from ganntec.shm import records as R
from ganntec.shm.records import OrderType as OT
from ganntec.shm.records import Permission, Reason, RecordType, Side, TimeInForce

BTC, USDT = Asset(0, "BTC", 8), Asset(1, "USDT", 8)
SYM = Symbol(0, "BTCUSDT", BTC, USDT, tick_size="0.01", step_size="0.001", min_price="0.01", max_price="1000000",
             min_qty="0.001", max_qty="1000", maker_fee="0.001", taker_fee="0.002", bid_multiplier_up="100",
             bid_multiplier_down="0.01", ask_multiplier_up="100", ask_multiplier_down="0.01")


@pytest.fixture
def ex():
    e = Exchange([SYM], max_accounts=16)
    for acc in (1, 2, 3):
        e.open_account(acc)
    e.deposit(1, "USDT", "10000")
    e.deposit(2, "BTC", "5")
    return e


def of_type(out, rtype):
    return [R.view(r) for r in out if int(r["type"]) == rtype]


def reasons(out):
    return [int(v["reason"]) for v in of_type(out, RecordType.ORDER_REJECTED)]


def limit(ex, acc, side, price, qty, tif=TimeInForce.GTC, ts=0):
    return ex.submit(ex.limit_orders(acc, side, [price], [qty], tif=tif, ts_ns=ts))


def test_limit_buy_locks_price_times_qty_and_cancel_releases(ex):
    out = limit(ex, 1, Side.BUY, "100", "2")
    assert ex.balance(1, "USDT") == ("9800.00000000", "200.00000000")
    oid = int(of_type(out, RecordType.ORDER_ACCEPTED)[0]["order_id"])
    out = ex.submit(ex.cancels(1, oid))
    assert of_type(out, RecordType.ORDER_CANCELED) and ex.balance(1, "USDT") == ("10000.00000000", "0.00000000")
    assert ex.conservation_errors() == []


def test_fill_below_limit_returns_the_difference_and_charges_fees_in_received_asset(ex):
    limit(ex, 2, Side.SELL, "90", "1")                  # maker sells 1 BTC at 90
    out = limit(ex, 1, Side.BUY, "100", "1.5")          # taker buys: 1 @ 90, 0.5 rests at 100
    fill = of_type(out, RecordType.FILL)[0]
    # taker (buyer) pays 0.2% of 1 BTC received; maker (seller) 0.1% of 90 USDT received
    assert (int(fill["taker_fee_minor"]), int(fill["maker_fee_minor"])) == (200000, 9000000)
    assert ex.balance(1, "USDT") == ("9860.00000000", "50.00000000")   # 10000 - 90 - 50 resting
    assert ex.balance(1, "BTC") == ("0.99800000", "0.00000000")
    assert ex.balance(2, "USDT") == ("89.91000000", "0.00000000")
    assert ex.balance(2, "BTC") == ("4.00000000", "0.00000000")
    assert ex.balance(0, "BTC") == ("0.00200000", "0.00000000") and ex.balance(0, "USDT") == ("0.09000000", "0.00000000")
    assert ex.conservation_errors() == []


@pytest.mark.parametrize("setup, kw, reason", [
    (lambda e: None, dict(acc=9), Reason.UNKNOWN_ACCOUNT),
    (lambda e: e.submit(_admin(RecordType.KILL_ACCOUNT, account_id=1)), dict(acc=1), Reason.ACCOUNT_DISABLED),
    (lambda e: e.open_account(4, permissions=Permission.READ), dict(acc=4), Reason.NO_TRADE_PERMISSION),
    (lambda e: e.submit(_admin(RecordType.HALT_SYMBOL, symbol_id=0)), dict(acc=1), Reason.MARKET_CLOSED),
    (lambda e: None, dict(acc=3), Reason.INSUFFICIENT_BALANCE),
    (lambda e: None, dict(acc=1, qty="101"), Reason.INSUFFICIENT_BALANCE),
])
def test_pre_trade_rejections(ex, setup, kw, reason):
    setup(ex)
    out = limit(ex, kw.get("acc"), Side.BUY, "100", kw.get("qty", "1"))
    assert reasons(out) == [reason]
    assert ex.conservation_errors() == []


def test_account_open_order_limit_and_unkill(ex):
    ex.open_account(1, max_open_orders=1)
    limit(ex, 1, Side.BUY, "1", "1")
    assert reasons(limit(ex, 1, Side.BUY, "1", "1")) == [Reason.TOO_MANY_OPEN_ORDERS]
    ex.submit(_admin(RecordType.KILL_ACCOUNT, account_id=2))
    assert reasons(limit(ex, 2, Side.SELL, "100", "1")) == [Reason.ACCOUNT_DISABLED]
    ex.submit(_admin(RecordType.UNKILL_ACCOUNT, account_id=2))
    assert reasons(limit(ex, 2, Side.SELL, "100", "1")) == []


def test_market_buy_by_quantity_cannot_overspend(ex):
    ex.deposit(3, "USDT", "150")
    limit(ex, 2, Side.SELL, "100", "1")
    limit(ex, 2, Side.SELL, "200", "1")
    out = ex.submit(ex.orders(3, Side.BUY, 0, 2000, OT.MARKET))   # wants 2 BTC, holds all 150 USDT
    fills = of_type(out, RecordType.FILL)
    assert [int(f["qty_lot"]) for f in fills] == [1000, 250]        # 1 @ 100, then 0.25 @ 200 = 150
    assert of_type(out, RecordType.ORDER_EXPIRED)                   # 1.75 BTC unfilled: out of funds
    assert ex.balance(3, "USDT") == ("0.00000000", "0.00000000")
    assert ex.conservation_errors() == []


def test_market_sell_by_quote_is_capped_by_base_and_reports_by_quote(ex):
    limit(ex, 1, Side.BUY, "100", "10")
    ex.deposit(3, "BTC", "0.5")
    out = ex.submit(ex.orders(3, Side.SELL, 0, 0, OT.MARKET, quote_qty_minor=USDT.to_minor("q", "30")))
    acc = of_type(out, RecordType.ORDER_ACCEPTED)[0]
    assert int(acc["qty_lot"]) == 0                                  # the cap is not the order's
    assert [int(f["qty_lot"]) for f in of_type(out, RecordType.FILL)] == [300]
    assert int(of_type(out, RecordType.FILL)[0]["flags"]) & R.FLAG_TAKER_DONE   # quote spent: filled
    assert not of_type(out, RecordType.ORDER_EXPIRED)
    assert ex.balance(3, "BTC") == ("0.20000000", "0.00000000")
    assert ex.conservation_errors() == []


def test_amend_up_locks_more_or_is_refused(ex):
    oid = int(of_type(limit(ex, 1, Side.BUY, "100", "10"), RecordType.ORDER_ACCEPTED)[0]["order_id"])
    amend = R.empty(RecordType.AMEND)
    amend["account_id"], amend["order_id"], amend["new_price_tick"] = 1, oid, SYM.price_to_tick("p", "1000.01")
    out = ex.submit(amend)   # needs 10000.1, owns 10000: refused, hold unchanged
    assert [int(v["reason"]) for v in of_type(out, RecordType.CANCEL_REJECTED)] == [Reason.INSUFFICIENT_BALANCE]
    assert ex.balance(1, "USDT") == ("9000.00000000", "1000.00000000")
    amend["new_price_tick"] = SYM.price_to_tick("p", "500")
    out = ex.submit(amend)
    assert of_type(out, RecordType.ORDER_AMENDED) and ex.balance(1, "USDT") == ("5000.00000000", "5000.00000000")
    amend["new_price_tick"], amend["new_qty_lot"] = 0, 2000
    out = ex.submit(amend)
    assert of_type(out, RecordType.ORDER_AMENDED) and ex.balance(1, "USDT") == ("9000.00000000", "1000.00000000")
    assert ex.conservation_errors() == []


def test_credit_debit_rules(ex):
    out = ex.submit(_admin(RecordType.DEBIT, account_id=1, asset_id=1, amount_minor=USDT.to_minor("a", "10001")))
    assert int(of_type(out, RecordType.DEBIT)[0]["reason"]) == Reason.INVALID_AMOUNT
    out = ex.submit(_admin(RecordType.CREDIT, account_id=1, asset_id=7, amount_minor=1))
    assert int(of_type(out, RecordType.CREDIT)[0]["reason"]) == Reason.UNKNOWN_ASSET
    out = ex.submit(_admin(RecordType.CREDIT, account_id=1, asset_id=1, amount_minor=(1 << 62)))
    assert int(of_type(out, RecordType.CREDIT)[0]["reason"]) == Reason.INVALID_AMOUNT  # would overflow
    ex.submit(_admin(RecordType.DEBIT, account_id=1, asset_id=1, amount_minor=USDT.to_minor("a", "1")))
    assert ex.balance(1, "USDT") == ("9999.00000000", "0.00000000")
    assert ex.conservation_errors() == []


@pytest.mark.parametrize("amount, rate, fee", [(10 ** 8, 10 ** 5, 10 ** 5), (999, 10 ** 5, 0), ((1 << 62) - 1, 10 ** 8, (1 << 62) - 1),
                                               (123456789, 123456, 123456789 * 123456 // 10 ** 8)])
def test_fee_is_floored_exactly_without_overflow(amount, rate, fee):
    assert fee_of(amount, rate) == fee == amount * rate // 10 ** 8


def test_positions_track_entry_realized_pnl_and_flips(ex):
    ex.deposit(3, "USDT", "100000")
    ex.deposit(3, "BTC", "5")
    limit(ex, 2, Side.SELL, "100", "2")
    limit(ex, 3, Side.BUY, "100", "2")        # 3 long 2 @ 100
    limit(ex, 1, Side.BUY, "130", "3")        # bid for 3 @ 130
    limit(ex, 3, Side.SELL, "130", "3")       # 3 sells 3: closes 2 (+60), opens short 1 @ 130
    pos = {int(p["account_id"]): p for p in ex.positions()}
    qpl = int(ex.table["quote_per_tick_lot"][0])
    p3 = pos[3]
    assert int(p3["net_qty_lot"]) == -1000
    assert int(p3["realized_pnl_quote_minor"]) == USDT.to_minor("pnl", "60")
    assert int(p3["entry_value_quote_minor"]) == -1000 * 13000 * qpl
    assert int(p3["volume_qty_lot"]) == 5000
    assert int(pos[2]["net_qty_lot"]) == -2000 and int(pos[1]["net_qty_lot"]) == 3000


def _admin(rtype, **fields):
    r = R.empty(rtype)
    for k, v in fields.items():
        r[k] = v
    return r


def test_daily_loss_limit_kills_the_account_and_resets_each_day():
    day = 86_400_000_000_000
    e = Exchange([SYM], max_accounts=16, loss_asset="USDT")
    for acc in (1, 2):
        e.open_account(acc, daily_loss_limit="25" if acc == 1 else None)
        e.deposit(acc, "USDT", "100000")
        e.deposit(acc, "BTC", "10")
    limit(e, 2, Side.SELL, "100", "1", ts=day)
    limit(e, 1, Side.BUY, "100", "1", ts=day)        # 1 long 1 @ 100 (fee in BTC: not in the loss asset)
    limit(e, 2, Side.BUY, "90", "1", ts=day)
    out = limit(e, 1, Side.SELL, "90", "1", ts=day)  # closes at 90: -10, and 0.18 USDT taker fee
    assert not of_type(out, RecordType.KILL_ACCOUNT)
    assert int(e.driver.risk.accounts[1]["day_pnl_minor"]) == -USDT.to_minor("p", "10.18")
    limit(e, 2, Side.SELL, "100", "2", ts=2 * day)    # next day: the count starts again
    limit(e, 1, Side.BUY, "100", "2", ts=2 * day)
    limit(e, 2, Side.BUY, "88", "2", ts=2 * day)
    out = limit(e, 1, Side.SELL, "88", "2", ts=2 * day)   # -24 - 0.352 fee = -24.352: still within 25
    assert not of_type(out, RecordType.KILL_ACCOUNT)
    limit(e, 2, Side.SELL, "100", "1", ts=2 * day)
    limit(e, 1, Side.BUY, "100", "1", ts=2 * day)
    limit(e, 2, Side.BUY, "99", "1", ts=2 * day)
    out = limit(e, 1, Side.SELL, "99", "1", ts=2 * day)   # -1 more: over 25
    kill = of_type(out, RecordType.KILL_ACCOUNT)
    assert [(int(k["account_id"]), int(k["reason"])) for k in kill] == [(1, Reason.DAILY_LOSS_LIMIT)]
    assert reasons(limit(e, 1, Side.BUY, "1", "1", ts=2 * day)) == [Reason.ACCOUNT_DISABLED]
    e.submit(_admin(RecordType.UNKILL_ACCOUNT, account_id=1))
    assert reasons(limit(e, 1, Side.BUY, "1", "1", ts=3 * day)) == []
    assert e.conservation_errors() == []


def test_bad_integrator_input_is_a_clear_error(ex):
    with pytest.raises(ValueError, match=r"asset='DOGE' \(one of BTC, USDT\)"):
        ex.deposit(1, "DOGE", "1")
    with pytest.raises(ValueError, match=r"amount=0\.000000001 \(finer than USDT's 8 decimals\)"):
        ex.deposit(1, "USDT", "0.000000001")
    with pytest.raises(ValueError, match=r"price=100\.005 \(not a multiple of BTCUSDT's tick size 0\.01\)"):
        ex.limit_orders(1, Side.BUY, ["100.005"], ["1"])
    with pytest.raises(ValueError, match=r"qty=-1 \(must not be negative\)"):
        ex.limit_orders(1, Side.BUY, ["100"], ["-1"])
    with pytest.raises(ValueError, match=r"price='abc' \(not a decimal number\)"):
        ex.limit_orders(1, Side.BUY, ["abc"], ["1"])
    with pytest.raises(ValueError, match=r"symbol='ETHUSDT'"):
        ex.limit_orders(1, Side.BUY, ["1"], ["1"], symbol="ETHUSDT")
    assert ex.conservation_errors() == []


def test_kill_switch_cancels_every_open_order_of_the_account_on_every_symbol():
    eth = Asset(2, "ETH", 8)
    e = Exchange([SYM, Symbol(1, "ETHUSDT", eth, USDT, tick_size="0.01", step_size="0.001", min_price="0.01",
                              max_price="1000000", min_qty="0.001", max_qty="1000")], max_accounts=16)
    for acc in (1, 2):
        e.open_account(acc)
        e.deposit(acc, "USDT", "10000")
        e.deposit(acc, "BTC", "5")
    limit(e, 1, Side.BUY, "100", "1")
    limit(e, 2, Side.BUY, "99", "1")                               # another account's order stays
    e.submit(e.orders(1, Side.BUY, 20_000, 1000, symbol_id=1))       # ETH bid at 200
    stop = e.orders(1, Side.SELL, 0, 1000, OT.STOP_LOSS, tif=0)
    stop["stop_price_tick"] = 5000
    e.submit(stop)
    out = e.submit(_admin(RecordType.KILL_ACCOUNT, account_id=1))
    cancels = of_type(out, RecordType.ORDER_CANCELED)
    assert len(cancels) == 3 and {int(c["reason"]) for c in cancels} == {Reason.CANCELED_BY_ADMIN}
    assert {int(c["symbol_id"]) for c in cancels} == {0, 1}
    assert not any(int(r["flags"]) & R.FLAG_END for r in out if int(r["type"]) == RecordType.ORDER_CANCELED)
    assert e.balance(1, "USDT") == ("10000.00000000", "0.00000000") and e.balance(1, "BTC") == ("5.00000000", "0.00000000")
    assert [list(r) for r in e.book(0, Side.BUY)] == [[9900, 1000, 1]]
    assert e.driver.order.in_flight == 0 and e.driver.order.open_orders(1, 0) == 0
    assert e.conservation_errors() == []
    # nothing to cancel: the kill still applies, and emits no cancel
    out = e.submit(_admin(RecordType.KILL_ACCOUNT, account_id=1))
    assert not of_type(out, RecordType.ORDER_CANCELED) and e.driver.order.in_flight == 0


def test_daily_loss_kill_cancels_resting_orders():
    e = Exchange([SYM], max_accounts=16, loss_asset="USDT")
    for acc in (1, 2):
        e.open_account(acc, daily_loss_limit="5" if acc == 1 else None)
        e.deposit(acc, "USDT", "100000")
        e.deposit(acc, "BTC", "10")
    limit(e, 1, Side.BUY, "50", "1")                  # resting, far from the market
    limit(e, 2, Side.SELL, "100", "1")
    limit(e, 1, Side.BUY, "100", "1")
    limit(e, 2, Side.BUY, "90", "1")
    out = limit(e, 1, Side.SELL, "90", "1")           # -10: over the limit of 5
    assert [int(k["reason"]) for k in of_type(out, RecordType.KILL_ACCOUNT)] == [Reason.DAILY_LOSS_LIMIT]
    assert [int(c["reason"]) for c in of_type(out, RecordType.ORDER_CANCELED)] == [Reason.CANCELED_BY_ADMIN]
    assert len(e.book(0, Side.BUY)) == 0 and e.driver.order.in_flight == 0 and e.conservation_errors() == []


def test_quantity_self_trade_prevention_takes_off_is_released_at_once(ex):
    limit(ex, 1, Side.BUY, "100", "5")                                        # holds 500 USDT
    ex.deposit(1, "BTC", "2")
    r = ex.limit_orders(1, Side.SELL, ["100"], ["2"])
    r["stp_mode"] = R.StpMode.DECREMENT
    out = ex.submit(r)                                                        # 2 prevented on both sides
    prevented = of_type(out, RecordType.TRADE_PREVENTED)
    assert [(int(p["taker_prevented_lot"]), int(p["maker_prevented_lot"])) for p in prevented] == [(2000, 2000)]
    assert ex.balance(1, "USDT") == ("9700.00000000", "300.00000000")       # the bid needs 3 x 100 now
    assert ex.balance(1, "BTC") == ("2.00000000", "0.00000000")
    assert ex.conservation_errors() == []


def test_risk_refuses_orders_beyond_its_hold_capacity_instead_of_overwriting():
    e = Exchange([SYM], max_accounts=4, max_orders=2)
    e.open_account(1)
    e.deposit(1, "USDT", "1000")
    assert reasons(limit(e, 1, Side.BUY, "1", "1")) == [] and reasons(limit(e, 1, Side.BUY, "2", "1")) == []
    assert reasons(limit(e, 1, Side.BUY, "3", "1")) == [Reason.BOOK_FULL]
    assert e.balance(1, "USDT") == ("997.00000000", "3.00000000") and e.conservation_errors() == []


def test_account_fee_rates_and_caps_are_checked():
    e = Exchange([SYM], max_accounts=4)
    e.open_account(1)
    for field, value in (("taker_fee_e8", 100_000_001), ("maker_fee_e8", -2), ("max_order_notional_minor", -1)):
        r = _admin(RecordType.ACCOUNT_LIMITS, account_id=1, maker_fee_e8=-1, taker_fee_e8=-1)
        r[field] = value
        assert [int(x["reason"]) for x in e.submit(r)] == [Reason.INVALID_PARAMETER]
    assert int(e.driver.risk.accounts[1]["taker_fee_e8"]) == -1    # nothing changed
    refused = _admin(RecordType.ACCOUNT_OPEN, account_id=2, taker_fee_e8=200_000_000, maker_fee_e8=-1)
    assert [int(x["reason"]) for x in e.submit(refused)] == [Reason.INVALID_PARAMETER]
    assert int(e.driver.risk.accounts[2]["status"]) == 0            # not opened


def test_cancels_need_the_trade_permission_amends_an_active_account_and_symbol(ex):
    oid = int(of_type(limit(ex, 1, Side.BUY, "100", "1"), RecordType.ORDER_ACCEPTED)[0]["order_id"])
    amend = _admin(RecordType.AMEND, account_id=1, order_id=oid, new_qty_lot=500)
    ex.submit(_admin(RecordType.HALT_SYMBOL))
    assert [int(v["reason"]) for v in of_type(ex.submit(amend), RecordType.CANCEL_REJECTED)] == [Reason.MARKET_CLOSED]
    ex.submit(_admin(RecordType.RESUME_SYMBOL))
    ex.open_account(1, permissions=Permission.READ)       # reopened without TRADE
    for cmd in (ex.cancels(1, oid), amend):
        assert [int(v["reason"]) for v in of_type(ex.submit(cmd), RecordType.CANCEL_REJECTED)] == [Reason.NO_TRADE_PERMISSION]
    ex.open_account(1)
    ex.submit(_admin(RecordType.KILL_ACCOUNT, account_id=1))   # the kill cancels it: place another
    ex.submit(_admin(RecordType.UNKILL_ACCOUNT, account_id=1))
    oid = int(of_type(limit(ex, 1, Side.BUY, "100", "1"), RecordType.ORDER_ACCEPTED)[0]["order_id"])
    ex.driver.risk.accounts[1]["status"] = 2  # killed, as if by a kill the engine has not yet told matching about
    amend["order_id"] = oid
    assert [int(v["reason"]) for v in of_type(ex.submit(amend), RecordType.CANCEL_REJECTED)] == [Reason.ACCOUNT_DISABLED]
    assert of_type(ex.submit(ex.cancels(1, oid)), RecordType.ORDER_CANCELED)   # a killed account may cancel
    assert ex.conservation_errors() == []


def test_closing_part_of_a_short_rounds_the_entry_removed_toward_zero():
    xyz, eur = Asset(0, "XYZ", 0), Asset(1, "EUR", 2)
    sym = Symbol(0, "XYZEUR", xyz, eur, tick_size="0.01", step_size="1", min_price="0.01", max_price="1000",
                 min_qty="1", max_qty="1000", maker_fee="0", taker_fee="0", bid_multiplier_up="100",
                 bid_multiplier_down="0.01", ask_multiplier_up="100", ask_multiplier_down="0.01")
    e = Exchange([sym], max_accounts=4)
    for acc in (1, 2):
        e.open_account(acc)
        e.deposit(acc, "EUR", "1000")
        e.deposit(acc, "XYZ", "10")
    for price, qty in (("1.00", "1"), ("1.01", "2")):       # account 1 short 3, entry -3.02
        e.submit(e.limit_orders(2, Side.BUY, [price], [qty]))
        e.submit(e.limit_orders(1, Side.SELL, [price], [qty]))
    e.submit(e.limit_orders(2, Side.SELL, ["1.00"], ["1"]))
    e.submit(e.limit_orders(1, Side.BUY, ["1.00"], ["1"]))   # buys back 1: removes 3.02 / 3 -> 1.00 (not 1.01)
    row = [p for p in e.positions() if int(p["account_id"]) == 1][0]
    assert (int(row["net_qty_lot"]), int(row["entry_value_quote_minor"]), int(row["realized_pnl_quote_minor"])) == (
        -2, -202, 0)


def test_an_order_engine_refusal_does_not_release_what_an_amend_at_matching_locked():
    """Live pipeline order (results come back after later commands): risk used to settle an
    order's hold on any CANCEL_REJECTED naming it, also one the order engine made itself for a
    later command, and so released what an amend still at matching had locked: the amended order
    then bought with less held than it spent (locked went negative)."""
    from ganntec.engines.matching import MatchingEngine
    from ganntec.engines.order import OrderEngine
    from ganntec.engines.risk import RiskEngine
    from ganntec.engines.symbols import symbol_table

    table = symbol_table([SYM])
    order, risk, matching = OrderEngine(table, max_in_flight=64), RiskEngine(table, 2, 4), MatchingEngine(table, 64, 64)

    def to_matching(cmds=(), results=()):
        return risk.process(order.process(results, cmds)[0])[0]

    def through(cmds):
        results = matching.process(to_matching(cmds))
        assert len(to_matching(results=results)) == 0
        return results

    for acc, asset, amount in ((1, USDT, "10000"), (2, BTC, "5")):
        through([_admin(RecordType.ACCOUNT_OPEN, account_id=acc, permissions=3, maker_fee_e8=0, taker_fee_e8=0),
                 _admin(RecordType.CREDIT, account_id=acc, asset_id=asset.asset_id, amount_minor=asset.to_minor("a", amount))])
    accepted = of_type(through(Exchange.orders(1, Side.BUY, 10_000, 1_000)), RecordType.ORDER_ACCEPTED)   # 1 BTC at 100
    oid = int(accepted[0]["order_id"])
    assert risk.balances[1, 1].tolist() == [9_900 * 10**8, 100 * 10**8]
    at_matching = to_matching(Exchange.amends(1, oid, new_price_tick=12_000))   # to 120: 20 more locked
    assert risk.balances[1, 1].tolist() == [9_880 * 10**8, 120 * 10**8]
    refused = order.process((), Exchange.amends(1, oid, new_price_tick=13_000, symbol_id=7))[0]
    assert [(int(r["type"]), int(r["reason"]), int(R.view(r)["order_id"])) for r in refused] == [
        (RecordType.CANCEL_REJECTED, Reason.UNKNOWN_SYMBOL, oid)]   # the order engine's own refusal
    assert len(risk.process(refused)[0]) == 0
    assert risk.balances[1, 1].tolist() == [9_880 * 10**8, 120 * 10**8]   # the amend at matching keeps its 20
    amended = of_type(matching.process(at_matching), RecordType.ORDER_AMENDED)
    assert len(to_matching(results=R.concat(amended))) == 0   # ORDER_AMENDED at 120
    through(Exchange.orders(2, Side.SELL, 12_000, 1_000, tif=TimeInForce.IOC))   # it buys 1 BTC at 120
    assert risk.balances[1].tolist() == [[1 * 10**8, 0], [9_880 * 10**8, 0]]
    assert risk.conservation_errors() == [] and risk.hold_errors() == []
