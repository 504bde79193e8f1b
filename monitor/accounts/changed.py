"""Accounts of a columnar book that a spiral's liquidation engine has changed (RISK_MODEL.md
§3, §7), kept beside the book rather than in it.

The book's own figures stay those of its accounts as given; an account the engine has
acted on keeps its balances and perp quantities here, as padded (accounts × slots)
matrices in entry order, and is evaluated here at the book's prices each round
(:func:`monitor.accounts.vector_engine.slot_figures`, the scalar maths term by term). Only these
accounts are evaluated: nothing is copied from the rest of the book.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from monitor.accounts.columns import AccountColumns, FloatArray, IntArray
from monitor.accounts.vector_engine import RowLayout, SlotGroups, slot_figures, slot_groups
from monitor.accounts.vector_margin import ModelLines, status_codes

__all__ = ["ChangedAccounts"]


def _widened(matrix: npt.NDArray[np.generic], width: int, pad: float) -> npt.NDArray[np.generic]:
    """``matrix`` with columns of ``pad`` added up to ``width``."""
    if matrix.shape[1] >= width:
        return matrix
    out = np.full((matrix.shape[0], width), pad, dtype=matrix.dtype)
    out[:, :matrix.shape[1]] = matrix
    return out


class ChangedAccounts:
    """Book rows the engine has changed, with their current balances and perp quantities
    (a closed perp at 0). ``member`` tells, per book row, whether it is one of them."""

    def __init__(self, columns: AccountColumns, lines: ModelLines) -> None:
        self.columns, self.lines = columns, lines
        self._place = np.full(columns.n_accounts, -1, dtype=np.int64)
        self.rows: IntArray = np.empty(0, dtype=np.int64)
        self.balance: IntArray = np.empty((0, 0), dtype=np.int64)
        self.perp: IntArray = np.empty((0, 0), dtype=np.int64)
        self.bal: FloatArray = np.empty((0, 0), dtype=np.float64)
        self.p_qty: FloatArray = np.empty((0, 0), dtype=np.float64)
        self._groups: SlotGroups | None = None  # the slots by table, until rows are added

    @property
    def member(self) -> npt.NDArray[np.bool_]:
        """Per book row: whether the engine has changed it."""
        out: npt.NDArray[np.bool_] = self._place >= 0
        return out

    def add(self, rows: IntArray, balance: IntArray, perp: IntArray, bal: FloatArray, p_qty: FloatArray) -> None:
        """New rows (none of them already here) with their entries and values after the engine."""
        if rows.size == 0:
            return
        wb, wp = max(balance.shape[1], self.balance.shape[1]), max(perp.shape[1], self.perp.shape[1])
        self._place[rows] = self.rows.shape[0] + np.arange(rows.shape[0])
        self._groups = None
        self.rows = np.concatenate([self.rows, rows])
        self.balance = np.concatenate([_widened(self.balance, wb, -1), _widened(balance, wb, -1)])
        self.perp = np.concatenate([_widened(self.perp, wp, -1), _widened(perp, wp, -1)])
        self.bal = np.concatenate([_widened(self.bal, wb, 0.0), _widened(bal, wb, 0.0)])
        self.p_qty = np.concatenate([_widened(self.p_qty, wp, 0.0), _widened(p_qty, wp, 0.0)])

    def update(self, rows: IntArray, bal: FloatArray, p_qty: FloatArray) -> None:
        """Rows already here, with their values after the engine (in their layout's widths)."""
        at = self._place[rows]
        self.bal[at, :bal.shape[1]] = bal
        self.p_qty[at, :p_qty.shape[1]] = p_qty

    def evaluate(self, prices: FloatArray) -> tuple[RowLayout, npt.NDArray[np.int8]]:
        """The rows at ``prices`` (per key of the columns) laid out for the engine, and
        their status codes (:func:`monitor.accounts.vector_margin.status_codes`, RISK_MODEL §3:
        the lines applied to adjusted equity / MM)."""
        cols = self.columns
        b_valid, p_valid = self.balance >= 0, self.perp >= 0
        px = np.where(b_valid, prices[cols.entry_key[np.maximum(self.balance, 0)]], 1.0)
        p_px = np.where(p_valid, prices[cols.entry_key[np.maximum(self.perp, 0)]], 1.0)
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            if self._groups is None:
                self._groups = slot_groups(cols, self.balance, self.perp)
            fig = slot_figures(cols, self.balance, self.bal, px, self.perp, self.p_qty, p_px, self._groups)
            ratio = np.divide(fig.equity, fig.mm, out=np.full_like(fig.equity, np.nan), where=fig.mm > 0)
            model = cols.model[self.rows]
            status = status_codes(ratio, fig.equity, model, self.lines)
        layout = RowLayout(rows=self.rows, model=model, balance=self.balance, perp=self.perp, bal=self.bal,
                           px=px, eq_term=fig.eq_term, p_qty=self.p_qty, p_px=p_px, p_mm=fig.p_mm,
                           equity=fig.equity, mm=fig.mm)
        return layout, status
