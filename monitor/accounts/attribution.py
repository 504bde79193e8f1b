"""Per-asset equity of columnar accounts and the asset driving each account's change
(``equity_by_asset_usd`` and ``driving_asset`` of :func:`monitor.models.margin.evaluate_account`).

An account's balances of one asset share a *slot*; slots are ordered by account, then by
asset name as Python sorts strings, so "the first of the largest" is the scalar
``max(sorted(...), key=...)``. Sums over a slot's balances run in entry order from 0.0,
as the scalar dictionary updates do.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from monitor.accounts.book import AccountBook
from monitor.accounts.columns import FloatArray, IntArray

__all__ = ["AssetSlots"]


class AssetSlots:
    """The (account, asset) slots of a book's balances and the sums over them."""

    def __init__(self, book: AccountBook) -> None:
        columns, entry_account = book.columns, book.entry_account
        self._columns, self._order = columns, book.order
        names = sorted(range(len(columns.assets)), key=lambda a: columns.assets[a])
        name_rank = np.empty(max(len(names), 1), dtype=np.int64)
        name_rank[names] = np.arange(len(names))
        self._by_rank = np.array(names, dtype=np.int64)
        balances = np.flatnonzero(~columns.entry_is_perp)
        width = max(len(names), 1)
        pair = entry_account[balances] * width + name_rank[columns.entry_asset[balances]]
        uniq, entry_slot = np.unique(pair, return_inverse=True)
        self._slot_row: IntArray = uniq // width
        #: The account of each slot (numbered as the book's callers number them).
        self.slot_account: IntArray = book.order[self._slot_row]
        self.slot_asset: IntArray = self._by_rank[uniq % width]
        order = np.argsort(entry_slot, kind="stable")
        in_order = entry_slot[order]
        rank = np.arange(order.shape[0]) - np.searchsorted(in_order, in_order, side="left")
        self._steps = [(balances[order[rank == r]], in_order[rank == r])
                       for r in range(int(rank.max()) + 1 if rank.size else 0)]

    @property
    def n_slots(self) -> int:
        """Number of (account, asset) slots."""
        return int(self.slot_account.shape[0])

    def equity_usd(self, book: AccountBook) -> FloatArray:
        """Σ equity_asset over each slot's balances (``equity_by_asset_usd``, RISK_MODEL §3)."""
        out = np.zeros(self.n_slots, dtype=np.float64)
        for entries, slots in self._steps:
            out[slots] = out[slots] + book.parts[0][entries]
        return out

    def haircut_usd(self, book: AccountBook) -> tuple[FloatArray, npt.NDArray[np.bool_]]:
        """Σ (balance × price − equity_asset) over each slot's positive balances, the value the
        collateral rate takes off (RISK_MODEL §3), and which slots hold a positive balance."""
        cols = self._columns
        out = np.zeros(self.n_slots, dtype=np.float64)
        held = np.zeros(self.n_slots, dtype=np.bool_)
        for entries, slots in self._steps:
            amount = cols.qty[entries]
            positive = amount > 0
            value = amount * book.prices[cols.entry_key[entries]]
            out[slots] = np.where(positive, (out[slots] + value) - book.parts[0][entries], out[slots])
            held[slots] |= positive
        return out, held

    def driving_asset(self, previous_usd: FloatArray, current_usd: FloatArray,
                      haircut_usd: FloatArray, held: npt.NDArray[np.bool_]) -> IntArray:
        """Asset id per account (−1: none): the largest equity drop since ``previous_usd``
        among assets with equity on either side, else the largest haircut
        (:func:`monitor.models.margin.evaluate_account`'s ``driving_asset``)."""
        drop = previous_usd - current_usd
        mask = ((current_usd > 0) | (previous_usd > 0)) & (drop > 0)
        slot = self._first_max(drop, mask)
        fallback = self._first_max(haircut_usd, held)
        slot = np.where(slot >= 0, slot, fallback)
        by_row = np.full(slot.shape, -1, dtype=np.int64)
        by_row[slot >= 0] = self.slot_asset[slot[slot >= 0]]
        out: IntArray = np.empty_like(by_row)
        out[self._order] = by_row
        return out

    def _first_max(self, values: FloatArray, mask: npt.NDArray[np.bool_]) -> IntArray:
        """Per book row, the first masked slot holding the row's largest masked value."""
        n = self._columns.n_accounts
        out: IntArray = np.full(n, -1, dtype=np.int64)
        picked = np.flatnonzero(mask)
        if picked.size == 0:
            return out
        acct = self._slot_row[picked]
        starts = np.flatnonzero(np.r_[True, acct[1:] != acct[:-1]])
        best = np.maximum.reduceat(values[picked], starts)
        top = picked[values[picked] == np.repeat(best, np.diff(np.r_[starts, picked.size]))]
        top_acct = self._slot_row[top]
        first = top[np.r_[True, top_acct[1:] != top_acct[:-1]]]
        out[self._slot_row[first]] = first
        return out
