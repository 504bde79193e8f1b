"""A columnar book of unified accounts (RISK_MODEL.md §3): a price move re-evaluates only the
accounts holding the moved key, with numpy.

Per price key the book keeps the entries on it (collateral, loans, perps), sorted by table
and by a price-independent size so tier lookups are a few binary searches
(:mod:`monitor.columnar_margin`), and the accounts holding it, for the per-account sums.
Each entry's contribution to its account's adjusted equity, MM and gross notional is kept;
an account's figures are the sums of its entries' contributions taken in the account's own
entry order, starting from 0.0, as :func:`monitor.margin.evaluate_account` adds them, so
they are equal to the scalar figures bit for bit. Statuses are an int8 array (codes of
:data:`monitor.columnar_margin.STATUSES`).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from monitor.account_columns import MODELS, AccountColumns, FloatArray, IntArray
from monitor.columnar_margin import (
    ModelLines,
    collateral_equity_usd,
    perp_mm_usd,
    status_codes,
)
from monitor.risk_params import RiskParams

__all__ = ["AccountBook", "AccountFigures", "StatusChanges"]

_BYBIT = MODELS.index("bybit-uta")
_HYPERLIQUID = MODELS.index("hyperliquid")


@dataclass(frozen=True)
class StatusChanges:
    """Accounts whose status changed in a move, with the status codes before and after."""

    accounts: IntArray
    before: npt.NDArray[np.int8]
    after: npt.NDArray[np.int8]


@dataclass(frozen=True)
class AccountFigures:
    """Figures of some accounts, as :class:`monitor.margin.AccountResult` has them; NaN
    stands for None (no MM: no ratio; no positive equity: no leverage or Bybit MM rate)."""

    accounts: IntArray
    adjusted_equity_usd: FloatArray
    maintenance_margin_usd: FloatArray
    gross_notional_usd: FloatArray
    uni_mmr: FloatArray
    venue_ratio: FloatArray
    status: npt.NDArray[np.int8]
    backstop: npt.NDArray[np.bool_]
    effective_leverage: FloatArray


def _as_python() -> np.errstate:
    """Python floats overflow to inf and give nan without a word where numpy would warn;
    the book follows the scalar maths, so it silences those warnings where it computes."""
    return np.errstate(over="ignore", invalid="ignore", divide="ignore")


class _Rows:
    """Accounts (by falling entry count) whose sums a move recomputes: step r adds entry r
    of the first ``active[r]`` accounts, so each sum runs in the account's entry order."""

    def __init__(self, accounts: IntArray, entry_start: IntArray) -> None:
        counts = entry_start[accounts + 1] - entry_start[accounts]
        order = np.argsort(-counts, kind="stable")
        self.accounts = accounts[order]
        self.starts = entry_start[self.accounts]
        top = int(counts.max()) if counts.size else 0
        self.active = [int(np.count_nonzero(counts > r)) for r in range(top)]

    def sums(self, contrib: FloatArray) -> FloatArray:
        """Σ contributions per account, left to right from 0.0 (equity, MM, gross)."""
        total = np.zeros((self.accounts.shape[0], contrib.shape[1]), dtype=np.float64)
        for r, n in enumerate(self.active):
            total[:n] += contrib[self.starts[:n] + r]
        return total


class _KeyEntries:
    """The entries on one price key, grouped and sorted for the vectorised maths."""

    def __init__(self, cols: AccountColumns, entries: IntArray, entry_account: IntArray) -> None:
        balance = entries[~cols.entry_is_perp[entries]]
        amount = cols.qty[balance]
        coll = balance[amount > 0]
        coll = coll[np.lexsort((cols.qty[coll], cols.entry_table[coll]))]
        self.coll, self.coll_amount = coll, cols.qty[coll]
        self.coll_segments = _segments(cols.entry_table[coll])
        loan = balance[~(amount > 0)]  # the scalar ``else`` branch: loans and zero balances
        self.loan, self.loan_amount, self.loan_mmr = loan, cols.qty[loan], cols.loan_mmr[loan]
        perp = entries[cols.entry_is_perp[entries]]
        perp = perp[np.lexsort((np.abs(cols.qty[perp]), cols.entry_table[perp]))]
        self.perp, self.perp_qty = perp, cols.qty[perp]
        self.perp_abs_qty, self.perp_entry_px = np.abs(self.perp_qty), cols.entry_price_usd[perp]
        self.perp_segments = _segments(cols.entry_table[perp])
        self.rows = _Rows(np.unique(entry_account[entries]), cols.entry_start)

    def contributions(self, cols: AccountColumns, price: float, contrib: FloatArray) -> None:
        """Write each entry's (equity, MM, gross) at ``price`` (RISK_MODEL §3, the terms of
        ``monitor.margin._figures``): collateral min(tiered, value); a loan its value, MM
        loan × loan MMR and gross loan; a perp its PnL qty × (px − entry), bracket MM and
        notional |qty| × px."""
        eq = np.empty_like(self.coll_amount)
        for table, lo, hi in self.coll_segments:
            eq[lo:hi] = collateral_equity_usd(self.coll_amount[lo:hi], price, cols.collateral_tables[table])
        contrib[self.coll] = np.stack([eq, np.zeros_like(eq), np.zeros_like(eq)], axis=1)
        loan_usd = -self.loan_amount * price
        contrib[self.loan] = np.stack([self.loan_amount * price, loan_usd * self.loan_mmr, loan_usd], axis=1)
        notional = self.perp_abs_qty * price
        mm = np.empty_like(notional)
        for table, lo, hi in self.perp_segments:
            mm[lo:hi] = perp_mm_usd(self.perp_abs_qty[lo:hi], notional[lo:hi], cols.step_tables[table])
        contrib[self.perp] = np.stack([self.perp_qty * (price - self.perp_entry_px), mm, notional], axis=1)


def _segments(table: npt.NDArray[np.int32]) -> list[tuple[int, int, int]]:
    """(table, lo, hi) runs of a sorted table-id array."""
    if table.size == 0:
        return []
    cuts = [0, *(np.flatnonzero(np.diff(table)) + 1).tolist(), int(table.shape[0])]
    return [(int(table[lo]), lo, hi) for lo, hi in itertools.pairwise(cuts)]


class AccountBook:
    """Columns of accounts, their figures at the current prices, and their statuses.

    ``move`` takes new prices and re-evaluates the accounts holding the moved keys; it
    returns the accounts whose status changed. Figures of any accounts come from
    ``figures``.
    """

    def __init__(self, columns: AccountColumns, prices: Mapping[str, float], params: RiskParams) -> None:
        self.columns = columns
        self._lines = ModelLines.from_params(params)
        missing = [k for k in columns.keys if k not in prices]
        if missing:
            raise KeyError(f"no price for {missing[0]!r}")
        self.prices = np.array([prices[k] for k in columns.keys], dtype=np.float64)
        counts = np.diff(columns.entry_start)
        self.entry_account = np.repeat(np.arange(columns.n_accounts, dtype=np.int64), counts)
        order = np.argsort(columns.entry_key, kind="stable")
        cuts = np.searchsorted(columns.entry_key[order], np.arange(len(columns.keys) + 1))
        self._by_key = [_KeyEntries(columns, order[cuts[k]:cuts[k + 1]], self.entry_account)
                        for k in range(len(columns.keys))]
        self._key_index = {k: i for i, k in enumerate(columns.keys)}
        self.contrib = np.zeros((columns.qty.shape[0], 3), dtype=np.float64)
        self._totals = np.zeros((columns.n_accounts, 3), dtype=np.float64)
        self.status = np.zeros(columns.n_accounts, dtype=np.int8)
        self._all = _Rows(np.arange(columns.n_accounts, dtype=np.int64), columns.entry_start)
        self._evaluate(range(len(columns.keys)), self._all)

    def key_id(self, key: str) -> int:
        """Index of a price key in ``columns.keys`` and ``prices``."""
        return self._key_index[key]

    def _evaluate(self, keys: range | list[int], rows: _Rows) -> StatusChanges:
        with _as_python():
            for k in keys:
                self._by_key[k].contributions(self.columns, float(self.prices[k]), self.contrib)
            totals = rows.sums(self.contrib)
            self._totals[rows.accounts] = totals
            equity, mm = totals[:, 0], totals[:, 1]
            ratio = np.divide(equity, mm, out=np.full_like(equity, np.nan), where=mm > 0)
            after = status_codes(ratio, equity, self.columns.model[rows.accounts], self._lines)
        before = self.status[rows.accounts]
        self.status[rows.accounts] = after
        changed = np.flatnonzero(before != after)
        return StatusChanges(rows.accounts[changed], before[changed], after[changed])

    def move(self, prices: Mapping[str, float]) -> StatusChanges:
        """Set new prices of some keys; re-evaluate the accounts holding them (RISK_MODEL §3).
        A key no account holds is ignored."""
        held = ((self._key_index[k], px) for k, px in prices.items() if k in self._key_index)
        keys = sorted({k for k, px in held if px != self.prices[k]})
        for k in keys:
            self.prices[k] = self._price_of(prices, k)
        if not keys:
            return StatusChanges(np.empty(0, np.int64), np.empty(0, np.int8), np.empty(0, np.int8))
        if len(keys) == 1:
            return self._evaluate(keys, self._by_key[keys[0]].rows)
        accounts = np.unique(np.concatenate([self._by_key[k].rows.accounts for k in keys]))
        return self._evaluate(keys, _Rows(accounts, self.columns.entry_start))

    def _price_of(self, prices: Mapping[str, float], key: int) -> float:
        price = float(prices[self.columns.keys[key]])
        if not price > 0 or price == float("inf"):
            raise ValueError(f"price of {self.columns.keys[key]!r} must be finite and positive")
        return price

    def figures(self, accounts: IntArray | None = None) -> AccountFigures:
        """Figures of ``accounts`` (all by default) at the current prices (RISK_MODEL §3):
        uniMMR = adjusted equity / MM; Bybit's account MM rate MM / equity as its venue
        ratio; Hyperliquid's backstop below 2/3 of MM; effective leverage gross / equity."""
        acc = np.arange(self.columns.n_accounts, dtype=np.int64) if accounts is None else accounts
        equity, mm, gross = self._totals[acc, 0], self._totals[acc, 1], self._totals[acc, 2]
        model = self.columns.model[acc]
        with _as_python():
            ratio = np.divide(equity, mm, out=np.full_like(equity, np.nan), where=mm > 0)
            mm_rate = np.divide(mm, equity, out=np.full_like(equity, np.nan), where=equity > 0)
            leverage = np.divide(gross, equity, out=np.full_like(equity, np.nan), where=equity > 0)
        return AccountFigures(
            accounts=acc, adjusted_equity_usd=equity, maintenance_margin_usd=mm, gross_notional_usd=gross,
            uni_mmr=ratio, venue_ratio=np.where(model == _BYBIT, mm_rate, ratio), status=self.status[acc],
            backstop=(model == _HYPERLIQUID) & (ratio < self._lines.backstop_ratio),
            effective_leverage=leverage,
        )
