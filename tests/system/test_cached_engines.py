"""The engines as a new process loads them from numba's on-disk cache give the same bytes as
compiled in this one. (A recursive @njit function compiles fine and then crashes the next
process that loads it from the cache: that is how a real runtime process starts.)"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

# Every command kind that takes a different path through the engines: OCO (fill, trigger,
# cancel), cancel-replace, trailing stops, icebergs, market orders, cancel-all.
SCRIPT = r"""
import hashlib
from ganntec.engines.symbols import Asset, Symbol
from ganntec.exchange import Exchange
from ganntec.shm import records as R
from ganntec.shm.records import OrderType as OT, Side, TimeInForce as TIF

sym = Symbol(0, "BTCUSDT", Asset(0, "BTC", 8), Asset(1, "USDT", 8), tick_size="1", step_size="0.01",
             min_price="1", max_price="1000000", min_qty="0.01", max_qty="1000")
ex = Exchange([sym], max_accounts=8)
for acc in (1, 2, 3):
    ex.open_account(acc)
    ex.deposit(acc, "USDT", "100000")
    ex.deposit(acc, "BTC", "10")
out = [ex.submit(ex.orders(2, Side.SELL, 100, 100)), ex.submit(ex.orders(3, Side.BUY, 100, 100, tif=TIF.IOC))]
out.append(ex.submit(ex.oco(1, Side.SELL, 200, dict(order_type=OT.LIMIT_MAKER, price_tick=110),
                            dict(order_type=OT.STOP_LOSS_LIMIT, price_tick=89, stop_price_tick=90, time_in_force=TIF.GTC))))
out.append(ex.submit(ex.orders(3, Side.BUY, 110, 50, tif=TIF.IOC)))
out.append(ex.submit(ex.oco(1, Side.BUY, 100, dict(order_type=OT.STOP_LOSS, stop_price_tick=120),
                            dict(order_type=OT.LIMIT_MAKER, price_tick=95))))
trail = ex.orders(1, Side.SELL, 0, 100, OT.STOP_LOSS, tif=0)
trail["trailing_delta_bips"] = 500
out.append(ex.submit(trail))
ice = ex.orders(2, Side.BUY, 98, 300)
ice["iceberg_qty_lot"] = 100
out.append(ex.submit(ice))
out.append(ex.submit(ex.cancel_replaces(0, ex.orders(2, Side.BUY, 97, 100), R.ReplaceMode.ALLOW_FAILURE)))
out.append(ex.submit(ex.orders(3, Side.SELL, 0, 500, OT.MARKET, tif=0)))
cancel_all = R.empty(R.RecordType.CANCEL_ALL)
cancel_all["account_id"] = 1
out.append(ex.submit(cancel_all))
assert ex.conservation_errors() == [], ex.conservation_errors()
print(hashlib.sha256(R.concat(out).tobytes() + R.concat(ex.journal).tobytes()).hexdigest())
"""


def test_a_new_process_loading_the_cache_gives_the_same_bytes():
    here = {}
    exec(compile(SCRIPT.replace("print(", "here['digest'] = ("), "<script>", "exec"), {"here": here})
    # This process compiled (and cached) every engine function; the children load them.
    for _ in range(2):
        child = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300,
                               env=dict(os.environ))
        assert child.returncode == 0, child.stderr[-2000:]
        assert child.stdout.strip() == here["digest"]
    assert len(here["digest"]) == len(hashlib.sha256().hexdigest())
