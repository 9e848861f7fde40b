"""Result records engines write in place of the command that caused them."""

from __future__ import annotations

from numba import njit

from ganntec.engines.mem import ld_i64, ld_u8, st_i64, st_u8, st_u16, zero_bytes
from ganntec.shm import records as R


def _off(dtype, name):
    return dtype.fields[name][1]


RB = R.RECORD_BYTES
H_TYPE, H_REASON, H_SEQ = (_off(R.RECORD_DTYPE, n) for n in ("type", "reason", "seq"))
N_PRICE, N_QTY, N_STOP, N_SIDE, N_TYPE, N_TIF, N_CID = (_off(R.NEW_ORDER_DTYPE, n) for n in (
    "price_tick", "qty_lot", "stop_price_tick", "side", "order_type", "time_in_force", "client_order_id"))
EV_ORDER, EV_PRICE, EV_QTY, EV_STOP, EV_CID, EV_SIDE, EV_TYPE, EV_TIF, EV_STATUS = (
    _off(R.ORDER_EVENT_DTYPE, n) for n in ("order_id", "price_tick", "qty_lot", "stop_price_tick", "client_order_id",
                                           "side", "order_type", "time_in_force", "status"))
CID_BYTES = R.CLIENT_ID_BYTES
T_REJECTED, T_CANCEL_REJ = int(R.RecordType.ORDER_REJECTED), int(R.RecordType.CANCEL_REJECTED)
ST_REJECTED = int(R.OrderStatus.REJECTED)
# The client order id sits at the same offset in both layouts, so it stays where it is.
assert N_CID == EV_CID


@njit(cache=True, nogil=True)
def cancel_reject_in_place(a, reason):
    """Turn the CANCEL / CANCEL_ALL / AMEND / CANCEL_REPLACE record at address a into its
    CANCEL_REJECTED (same header and flags; the target order id stays at offset 40, where every
    one of those layouts has it)."""
    zero_bytes(a + 48, RB - 48)
    st_u16(a + H_TYPE, T_CANCEL_REJ)
    st_u16(a + H_REASON, reason)


@njit(cache=True, nogil=True)
def reject_new_in_place(a, reason):
    """Turn the NEW_ORDER record at address a into its ORDER_REJECTED (same header; order_id =
    the record's seq; the order's fields and client order id kept)."""
    price, qty, stop = ld_i64(a + N_PRICE), ld_i64(a + N_QTY), ld_i64(a + N_STOP)
    side, t, tif = ld_u8(a + N_SIDE), ld_u8(a + N_TYPE), ld_u8(a + N_TIF)
    zero_bytes(a + 40, EV_CID - 40)
    zero_bytes(a + EV_CID + CID_BYTES, RB - EV_CID - CID_BYTES)
    st_u16(a + H_TYPE, T_REJECTED)
    st_u16(a + H_REASON, reason)
    st_i64(a + EV_ORDER, ld_i64(a + H_SEQ))
    st_i64(a + EV_PRICE, price)
    st_i64(a + EV_QTY, qty)
    st_i64(a + EV_STOP, stop)
    st_u8(a + EV_SIDE, side)
    st_u8(a + EV_TYPE, t)
    st_u8(a + EV_TIF, tif)
    st_u8(a + EV_STATUS, ST_REJECTED)
