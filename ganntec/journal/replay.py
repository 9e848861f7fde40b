"""Replay: the engines rebuilt from a journal, every record verified on the way.

The journal is the order engine's output: client and admin commands as sequenced (a refused
one as its refusal) and matching's results, in the one total order the live pipeline chose,
results of a command possibly after later commands. Replay feeds that order back:

  * a command record goes into the order engine (in replay mode, see `engines.order`), which
    sequences it again; then risk, position, and risk's records for matching wait in a_buf;
  * a result record (FLAG_RESULT) is not taken from the journal: matching is re-run on
    what risk gave it, its next result goes through the order engine, and the record that
    comes out must equal the journaled one byte for byte (seq and timestamp included).

So every record of the journal is re-derived by the same engines from the same state, and a
difference is a determinism bug: `ReplayMismatch`, loud, naming the sequence and the fields.
Matching never runs ahead of the journal: it only sees what commands already replayed made.

After the journal's last record, matching may hold results the crashed pipeline never
journaled (or never made). `finish()` sequences them the live way (drive) and returns them as
new journal records, then the order engine leaves replay mode: recovery is replay, then live.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ganntec.engines import matching, order, risk
from ganntec.engines.mem import ld_i64, ld_u16, move_bytes, st_i64
from ganntec.shm import records as R
from ganntec.workers.driver import DS_A, RISK_FANOUT, InProcessDriver, _pipe, settle

RB = R.RECORD_BYTES
DS_QPOS, DS_QN = 2, 3  # matching's results made and not yet matched to the journal: m_buf[qpos:qn]
OK, MISMATCH, MISSING_RESULT, NOT_TAKEN, A_FULL = 0, 1, 2, 3, 4
H_FLAGS = R.RECORD_DTYPE.fields["flags"][1]
FLAG_RESULT = R.FLAG_RESULT


@njit(cache=True, nogil=True)
def _same(a, b, n):
    """n records at a and b byte-equal? (8 bytes at a time; records are 128 bytes)"""
    for k in range(n * RB // 8):
        if ld_i64(a + 8 * k) != ld_i64(b + 8 * k):
            return False
    return True


@njit(cache=True, nogil=True)
def _settle(rc, pc, seq_buf, ns, a_buf, a_rows, n_a, b_buf, ed, ne):
    """The driver's settle on ns verified records, risk's records for matching appended after
    the n_a already waiting. Returns (records waiting for matching, edge records), or
    (-1, ne) if a_buf could overflow (more in flight than max_in_flight allows)."""
    if n_a + ns * risk.OUT_A_PER_RECORD > a_rows:
        return -1, ne
    na, ne = settle(rc, pc, seq_buf, ns, a_buf + n_a * RB, a_rows - n_a, b_buf, ed, ne)
    return n_a + na, ne


@njit(cache=True, nogil=True)
def replay_run(oc, rc, mc, pc, ds, jr, n_jr, seq_buf, a_buf, a_rows, b_buf, m_buf, m_cap, ed, ed_cap):
    """Replay journal records jr[0:n_jr]. Returns (records consumed, edge records written,
    status). On a status other than OK, jr[consumed] is the record that failed and
    seq_buf[0] holds what the engines made in its place (MISMATCH)."""
    i = 0
    ne = 0
    worst = order.MAX_COMMAND_RECORDS * RISK_FANOUT
    while i < n_jr and ne + worst <= ed_cap:
        j = jr + i * RB
        if ld_u16(j + H_FLAGS) & FLAG_RESULT:
            qpos, qn = ld_i64(ds + 8 * DS_QPOS), ld_i64(ds + 8 * DS_QN)
            while qpos == qn:  # matching's next results, from what risk has given it so far
                n_a = ld_i64(ds + 8 * DS_A)
                if n_a == 0 and matching._g(mc, matching.E_PEND) == matching.PEND_NONE:
                    return i, ne, MISSING_RESULT
                used, nm = matching.run(mc, a_buf, n_a, m_buf, m_cap)
                move_bytes(a_buf, a_buf + used * RB, (n_a - used) * RB)
                st_i64(ds + 8 * DS_A, n_a - used)
                qpos, qn = 0, nm
                st_i64(ds + 8 * DS_QPOS, 0)
                st_i64(ds + 8 * DS_QN, nm)
            _, _, ns = order.run(oc, m_buf + qpos * RB, 1, 0, 0, seq_buf, 1)
            if ns != 1 or not _same(seq_buf, j, 1):
                return i, ne, MISMATCH
            st_i64(ds + 8 * DS_QPOS, qpos + 1)
            n = 1
        else:
            n = order.command_records(j, n_jr - i)
            if n == 0:
                break  # the rest of this command comes with the next call
            _, used, ns = order.run(oc, 0, 0, j, n, seq_buf, n)
            if used != n or ns != n:
                return i, ne, NOT_TAKEN
            if not _same(seq_buf, j, n):
                return i, ne, MISMATCH
        n_a, ne = _settle(rc, pc, seq_buf, n, a_buf, a_rows, ld_i64(ds + 8 * DS_A), b_buf, ed, ne)
        if n_a < 0:
            return i, ne, A_FULL
        st_i64(ds + 8 * DS_A, n_a)
        i += n
    return i, ne, OK


@njit(cache=True, nogil=True)
def finish_run(oc, rc, mc, pc, ds, seq_buf, a_buf, a_rows, b_buf, m_buf, jr, jr_cap, ed, ed_cap):
    """Sequence, live, the results matching made that the journal does not have yet (the
    rest of m_buf). Returns (journal records, edge records)."""
    qpos, qn = ld_i64(ds + 8 * DS_QPOS), ld_i64(ds + 8 * DS_QN)
    nj, ne = 0, 0
    while qpos < qn and nj < jr_cap and ne + RISK_FANOUT <= ed_cap:
        n_a = ld_i64(ds + 8 * DS_A)
        nj, ne, made, _ = _pipe(oc, rc, pc, m_buf + qpos * RB, 1, 0, 0, seq_buf, a_buf + n_a * RB, a_rows - n_a,
                                b_buf, jr, nj, ed, ne)
        st_i64(ds + 8 * DS_A, n_a + made)
        qpos += 1
    st_i64(ds + 8 * DS_QPOS, qpos)
    return nj, ne


class ReplayMismatch(Exception):
    """Replay made something other than the journal: a determinism bug (or a journal from
    other engines or another config)."""


class Replayer(InProcessDriver):
    """The four engines of an InProcessDriver, fed from a journal.

        rp = Replayer(symbols, n_assets, ..., max_in_flight=...)
        edge = rp.feed(journal_records)      # verified; raises ReplayMismatch
        new_journal, edge = rp.finish()      # results the journal lacked; order engine live

    `max_in_flight` bounds the commands the journal may hold ahead of their results (the live
    pipeline's credit limit); records risk made for matching wait for them in a_buf."""

    def __init__(self, symbols: np.ndarray, n_assets: int, max_accounts: int = 1024, max_orders: int = 1 << 16,
                 max_levels: int = 4096, fee_account: int = 0, loss_asset: int = -1, max_in_flight: int = 4096,
                 chunk: int = 4096):
        super().__init__(symbols, n_assets, max_accounts, max_orders, max_levels, fee_account, loss_asset, chunk)
        self.order.replay = True
        m_cap = self.matching.min_out_capacity
        # Commands in flight, each waiting with up to OUT_A_PER_RECORD x MAX_COMMAND_RECORDS
        # records, plus what one drive pass adds (as InProcessDriver sizes it).
        rows = (max_in_flight + m_cap + 1) * (risk.OUT_A_PER_RECORD + 2) * order.MAX_COMMAND_RECORDS
        self._a = np.zeros((rows, RB), np.uint8)
        self._carry = np.zeros((0, RB), np.uint8)  # the start of a command the last feed ended in
        self.replayed = 0  # journal records verified

    def _args(self):
        return (self.order.control.ctypes.data, self.risk.control.ctypes.data, self.matching.control.ctypes.data,
                self.position.control.ctypes.data, self.state.ctypes.data)

    def feed(self, journal, keep_edge: bool = True) -> np.ndarray:
        """Replay journal records (the next ones after those fed before); returns the edge
        records they make (none with keep_edge=False: a snapshotter needs only the state). A
        command split across calls waits for the rest of it."""
        if not self.order.replay:
            raise RuntimeError("replay is finished: the engines are live")
        jr = R.as_records(journal)
        if len(self._carry):
            jr = R.as_records([self._carry, jr])
        base = jr.ctypes.data
        pos, edge = 0, []
        while pos < len(jr):
            used, ne, status = replay_run(*self._args(), base + pos * RB, len(jr) - pos, self._seq.ctypes.data,
                                          self._a.ctypes.data, len(self._a), self._b.ctypes.data,
                                          self._m.ctypes.data, len(self._m), self._ed.ctypes.data, len(self._ed))
            if keep_edge:
                edge.append(self._ed[:ne].copy())
            pos += used
            self.replayed += used
            if status != OK:
                raise ReplayMismatch(self._explain(status, jr[pos]))
            if used == 0:
                break  # an incomplete command at the end: kept for the next call
        self._carry = jr[pos:].view(np.uint8).reshape(-1, RB).copy()
        return R.concat(edge)

    def _explain(self, status: int, want: np.ndarray) -> str:
        seq = int(want["seq"])
        if status == MISSING_RESULT:
            return (f"journal seq {seq} is a result ({R.RecordType(int(want['type'])).name}) that matching did not "
                    f"make: matching had nothing left")
        if status == NOT_TAKEN:
            return f"journal seq {seq}: the order engine did not take the command again (a duplicate edge sequence?)"
        if status == A_FULL:
            return (f"journal seq {seq}: more commands ahead of their results than max_in_flight allows "
                    f"(buffer of {len(self._a)} records full)")
        got, exp = R.view(self._seq[0].view(R.RECORD_DTYPE)), R.view(want)
        if got.dtype != exp.dtype:
            detail = f"type: journal {R.RecordType(int(want['type'])).name} replay {R.RecordType(int(got['type'])).name}"
        else:
            diffs = [k for k in exp.dtype.names if np.any(got[k] != exp[k])]
            detail = ", ".join(f"{k}: journal {exp[k]!r} replay {got[k]!r}" for k in diffs) or "reserved bytes differ"
        return f"journal seq {seq} ({R.RecordType(int(want['type'])).name}) replays differently: {detail}"

    @property
    def pending_results(self) -> int:
        """Results matching made that the journal has not (yet) shown."""
        return int(self.state[DS_QN] - self.state[DS_QPOS])

    def finish(self) -> tuple[np.ndarray, np.ndarray]:
        """End replay (a command cut off at the journal's end was never acknowledged: it is
        dropped): sequence, live, every result matching still owes (those made and not
        journaled first, then whatever is waiting for matching). Returns (new journal
        records, edge records); the order engine is live afterwards."""
        journal, edge = [], []
        self._carry = self._carry[:0]
        while self.pending_results:
            nj, ne = finish_run(*self._args(), self._seq.ctypes.data, self._a.ctypes.data, len(self._a),
                                self._b.ctypes.data, self._m.ctypes.data, self._jr.ctypes.data, len(self._jr),
                                self._ed.ctypes.data, len(self._ed))
            journal.append(self._jr[:nj].copy())
            edge.append(self._ed[:ne].copy())
        self.order.replay = False
        self.state[DS_QPOS] = self.state[DS_QN] = 0
        while not self.idle:
            _, nj, ne = self.advance(0, 0)
            journal.append(self._jr[:nj].copy())
            edge.append(self._ed[:ne].copy())
        return R.concat(journal), R.concat(edge)
