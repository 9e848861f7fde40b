"""The in-process deterministic driver: the four engines in one process, linked by buffers.

For every command, in input order, the compiled loop runs the whole path of DESIGN §3:
order (sequence) -> risk -> matching -> order (sequence the results) -> risk (settle) ->
position -> edge, until the command and every result it caused (stops it fired included) is
through. So a command's results are journaled before the next command is sequenced, which is
the canonical total order: the journal and the edge stream are the same bytes whatever batches
the commands arrive in. The live multi-process runtime reaches the same journal whenever its
rings keep up; replay (3/7) feeds journals through these same engines.

Outputs per call: the journal (every sequenced record) and the edge stream (what clients are
told), both as 128-byte records.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ganntec.engines import matching, order, position, risk
from ganntec.shm import records as R
from ganntec.engines.mem import ld_i64, move_bytes, st_i64
from ganntec.shm.atomics import copy_bytes

RB = R.RECORD_BYTES
RISK_FANOUT = risk.OUT_B_PER_RECORD
DS_A = 0  # driver state: records in a_buf that matching has not taken yet


@njit(cache=True, nogil=True)
def _pipe(oc, rc, pc, res, n_res, cmd, n_cmd, seq_buf, a_buf, a_cap, b_buf, jr, nj, ed, ne):
    """Sequence results then command records, apply risk, then position. Returns (journal
    count, edge count, records for matching written to a_buf, command records consumed)."""
    _, used_c, ns = order.run(oc, res, n_res, cmd, n_cmd, seq_buf, n_res + n_cmd)
    copy_bytes(jr + nj * RB, seq_buf, ns * RB)
    na, ne = settle(rc, pc, seq_buf, ns, a_buf, a_cap, b_buf, ed, ne)
    return nj + ns, ne, na, used_c


@njit(cache=True, nogil=True)
def settle(rc, pc, seq_buf, ns, a_buf, a_cap, b_buf, ed, ne):
    """Risk, then position, on ns sequenced records at seq_buf. Returns (records risk wrote
    to a_buf for matching, edge count after position's records)."""
    used_r, na, nb = risk.run(rc, seq_buf, ns, a_buf, a_cap, b_buf, ns * RISK_FANOUT)
    if used_r != ns:
        raise RuntimeError("driver: risk's output buffer for matching is full (a sizing bug)")
    _, made = position.run(pc, b_buf, nb, ed + ne * RB, nb)
    return na, ne + made


@njit(cache=True, nogil=True)
def drive(oc, rc, mc, pc, ds, cmds, n_cmds, seq_buf, a_buf, a_rows, b_buf, m_buf, m_cap, jr, jr_cap, ed, ed_cap):
    """Run commands through every engine until the buffers are nearly full. Returns
    (command records consumed, journal records, edge records). Work can stay pending — matching
    mid-command, or records risk made for matching (a cancel-replace's returning order) in
    a_buf, counted at ds[DS_A] — call again, with or without more commands, until `idle`."""
    nj = 0
    ne = 0
    i = 0
    worst = m_cap + 1  # the most records one pass can sequence
    while nj + worst <= jr_cap and ne + worst * RISK_FANOUT <= ed_cap:
        n_a = ld_i64(ds + 8 * DS_A)
        if n_a == 0 and matching._g(mc, matching.E_PEND) == matching.PEND_NONE:
            if i >= n_cmds:
                break
            n = order.command_records(cmds + i * RB, n_cmds - i)
            nj, ne, n_a, used = _pipe(oc, rc, pc, 0, 0, cmds + i * RB, n, seq_buf, a_buf, a_rows, b_buf, jr, nj, ed,
                                      ne)
            st_i64(ds + 8 * DS_A, n_a)
            i += used
            continue
        used, nm = matching.run(mc, a_buf, n_a, m_buf, m_cap)
        n_a -= used
        move_bytes(a_buf, a_buf + used * RB, n_a * RB)
        nj, ne, made, _ = _pipe(oc, rc, pc, m_buf, nm, 0, 0, seq_buf, a_buf + n_a * RB, a_rows - n_a, b_buf, jr, nj,
                                ed, ne)
        st_i64(ds + 8 * DS_A, n_a + made)
    return i, nj, ne


class InProcessDriver:
    """The four engines, their buffers, and `run(commands) -> (journal, edge records)`."""

    def __init__(self, symbols: np.ndarray, n_assets: int, max_accounts: int = 1024, max_orders: int = 1 << 16,
                 max_levels: int = 4096, fee_account: int = 0, loss_asset: int = -1, chunk: int = 4096):
        self.order = order.OrderEngine(symbols, max_in_flight=1 << 30, max_open_orders=max_orders)
        self.risk = risk.RiskEngine(symbols, n_assets, max_accounts, max_orders, fee_account, loss_asset)
        self.matching = matching.MatchingEngine(symbols, max_orders, max_levels)
        self.position = position.PositionEngine(symbols, max_positions=max_orders)
        m_cap = self.matching.min_out_capacity
        self.state = np.zeros(4, np.int64)  # DS_A, and slots the replayer uses
        self._m = np.zeros((m_cap, RB), np.uint8)
        self._seq = np.zeros((m_cap + 1, RB), np.uint8)
        # leftovers matching has not taken + what one pass adds (up to OUT_A_PER_RECORD per record)
        self._a = np.zeros(((risk.OUT_A_PER_RECORD + 2) * (m_cap + 1), RB), np.uint8)
        self._b = np.zeros(((m_cap + 1) * RISK_FANOUT, RB), np.uint8)
        self._jr = np.zeros((chunk + m_cap + 1, RB), np.uint8)
        self._ed = np.zeros(((chunk + m_cap + 1) * RISK_FANOUT, RB), np.uint8)

    @property
    def idle(self) -> bool:
        """Nothing left half done: matching is not mid-command and no record waits for it."""
        return not self.matching.pending and self.state[DS_A] == 0

    def _buffers(self) -> tuple:
        """The arrays `drive` reads, by identity: an engine restored from a snapshot may hold a
        new control array."""
        return (self.order.control, self.risk.control, self.matching.control, self.position.control, self.state,
                self._seq, self._a, self._b, self._m, self._jr, self._ed)

    def _addresses(self) -> tuple:
        # `.ctypes.data` costs ~1 us a call (it builds a ctypes object): worked out once per set of
        # arrays, it was a fifth of the engine worker's CPU at small batches (py-spy).
        arrays = self._buffers()
        cached = getattr(self, "_cached", None)
        if cached is None or any(x is not y for x, y in zip(cached[0], arrays)):
            oc, rc, mc, pc, ds, seq, a, b, m, jr, ed = (x.ctypes.data for x in arrays)
            cached = self._cached = (arrays, (oc, rc, mc, pc, ds), (seq, a, len(self._a), b, m, len(self._m), jr,
                                                                    len(self._jr), ed, len(self._ed)))
        return cached

    def advance(self, address: int, n: int) -> tuple[int, int, int]:
        """One compiled `drive` over n command records at `address` (raw, no checks):
        (records consumed, journal records, edge records) in `journal_buffer`/`edge_buffer`."""
        _, (oc, rc, mc, pc, ds), bufs = self._addresses()
        return drive(oc, rc, mc, pc, ds, address, n, *bufs)

    @property
    def journal_buffer(self) -> np.ndarray:
        return self._jr

    @property
    def edge_buffer(self) -> np.ndarray:
        return self._ed

    def run(self, commands) -> tuple[np.ndarray, np.ndarray]:
        """Every command through the engines; returns (journal records, edge records)."""
        cmds = R.as_records(commands)
        if len(cmds) and int(cmds[-1]["flags"]) & R.FLAG_CONTINUED:
            raise ValueError("commands end inside a multi-record command (FLAG_CONTINUED on the last record)")
        journal, edge = [], []
        pos = 0
        while pos < len(cmds) or not self.idle:
            used, nj, ne = self.advance(cmds.ctypes.data + pos * RB, len(cmds) - pos)
            journal.append(self._jr[:nj].copy())
            edge.append(self._ed[:ne].copy())
            pos += used
        return R.concat(journal), R.concat(edge)
