"""A columnar book of unified accounts (RISK_MODEL.md §3): a price move re-evaluates only the
accounts holding the moved key, with numpy.

Per price key the book keeps the entries on it (collateral, loans, perps), sorted by table
and by a price-independent size so tier lookups are a few binary searches
(:mod:`monitor.accounts.vector_margin`), and the accounts holding it, for the per-account sums.
Each entry's term of its account's adjusted equity, MM and gross notional is kept;
an account's figures are the sums of its entries' terms taken in the account's own
entry order, starting from 0.0, as :func:`monitor.models.margin.evaluate_account` adds them, so
they are equal to the scalar figures bit for bit. Statuses are an int8 array (codes of
:data:`monitor.models.margin.STATUSES`).
"""

from __future__ import annotations

import copy
import functools
import itertools
import math
import operator
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from monitor.accounts.columns import MODELS, AccountColumns, FloatArray, IntArray, cluster_order
from monitor.accounts.vector_margin import (
    ModelLines,
    collateral_equity_usd,
    perp_mm_usd,
    status_codes,
)
from monitor.risk_params import RiskParams

__all__ = ["AccountBook", "AccountFigures", "StatusChanges"]

_BYBIT = MODELS.index("bybit-uta")
_HYPERLIQUID = MODELS.index("hyperliquid")
#: Sets of keys moved together whose accounts a book keeps (a spiral moves a few sets).
_KEY_SETS_KEPT = 4


@dataclass(frozen=True)
class StatusChanges:
    """Accounts whose status changed in a move, with the status codes before and after."""

    accounts: IntArray
    before: npt.NDArray[np.int8]
    after: npt.NDArray[np.int8]


@dataclass(frozen=True)
class AccountFigures:
    """Figures of some accounts, as :class:`monitor.models.margin.AccountResult` has them; NaN
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


def _checked_price(key: str, price: float) -> float:
    if not (math.isfinite(price) and price > 0):
        raise ValueError(f"price of {key!r} must be finite and positive, got {price!r}")
    return float(price)


class _Rows:
    """Accounts whose sums a move recomputes, grouped by entry count: a group of accounts
    with c entries gathers its (accounts × c) block and adds the columns left to right, so
    each sum runs in the account's entry order. Also the accounts' model codes."""

    def __init__(self, accounts: IntArray, columns: AccountColumns) -> None:
        start = columns.entry_start
        counts = start[accounts + 1] - start[accounts]
        order = np.argsort(-counts, kind="stable")
        self.accounts = accounts[order]
        self.starts = start[self.accounts]
        self.model = columns.model[self.accounts]
        same = self.model.size > 0 and int(self.model.min()) == int(self.model.max())
        self.single_model = int(self.model[0]) if same else None
        counts = counts[order]
        cuts = [0, *(np.flatnonzero(np.diff(counts)) + 1).tolist(), int(counts.shape[0])]
        self.groups = [(int(counts[lo]), lo, hi) for lo, hi in itertools.pairwise(cuts) if hi > lo]
        self._blocks: list[npt.NDArray[np.integer] | slice] | None = None  # made on the first ``sums``

    def _block(self, count: int, lo: int, hi: int) -> npt.NDArray[np.integer] | slice:
        """Entry indices of a group, account by account: neighbours in memory are gathered
        together (int32 while the entries fit: half the memory kept). A group whose entries
        are one run in memory (accounts in a row, as a book of all its accounts often has)
        is that run: a view, nothing gathered."""
        first = int(self.starts[lo]) if hi > lo else 0
        if np.array_equal(self.starts[lo:hi], first + count * np.arange(hi - lo)):
            return slice(first, first + count * (hi - lo))
        block = np.repeat(self.starts[lo:hi], count)
        block += np.tile(np.arange(count), hi - lo)
        small = block.size == 0 or int(block.max()) < np.iinfo(np.int32).max
        return block.astype(np.int32) if small else block

    def sums(self, parts: list[FloatArray]) -> list[FloatArray]:
        """Σ of each per-entry array per account, left to right from 0.0."""
        totals = [np.zeros(self.accounts.shape[0], dtype=np.float64) for _ in parts]
        if self._blocks is None:
            self._blocks = [self._block(count, lo, hi) for count, lo, hi in self.groups]
        for (count, lo, hi), block in zip(self.groups, self._blocks, strict=True):
            if count == 0:
                continue
            for part, total in zip(parts, totals, strict=True):
                values = part[block].reshape(hi - lo, count)
                run = total[lo:hi]
                for r in range(count):
                    run += values[:, r]
        return totals


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
        held = entry_account[entries]  # ascending: ``entries`` are, and accounts own runs of them
        self.rows = _Rows(held[np.r_[True, held[1:] != held[:-1]]] if held.size else held, cols)
        #: Whether a move of this key changes MM and gross (loans or perps on it).
        self.moves_mm = bool(loan.size or perp.size)

    def contributions(self, cols: AccountColumns, price: float, parts: tuple[FloatArray, ...]) -> None:
        """Write each entry's equity, MM and gross at ``price`` into ``parts`` (RISK_MODEL §3,
        the terms of ``monitor.models.margin._figures``): collateral min(tiered, value); a loan its
        value, MM loan × loan MMR and gross loan; a perp its PnL qty × (px − entry),
        bracket MM and notional |qty| × px."""
        equity, mm, gross = parts
        eq = np.empty_like(self.coll_amount)
        for table, lo, hi in self.coll_segments:
            eq[lo:hi] = collateral_equity_usd(self.coll_amount[lo:hi], price, cols.collateral_tables[table])
        equity[self.coll] = eq
        if self.loan.size:
            loan_usd = -self.loan_amount * price
            equity[self.loan] = self.loan_amount * price
            mm[self.loan] = loan_usd * self.loan_mmr
            gross[self.loan] = loan_usd
        if self.perp.size:
            notional = self.perp_abs_qty * price
            perp_mm = np.empty_like(notional)
            for table, lo, hi in self.perp_segments:
                perp_mm[lo:hi] = perp_mm_usd(self.perp_abs_qty[lo:hi], notional[lo:hi], cols.step_tables[table])
            equity[self.perp] = self.perp_qty * (price - self.perp_entry_px)
            mm[self.perp] = perp_mm
            gross[self.perp] = notional


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
    ``figures``. Accounts are numbered as in the columns given; inside, the book keeps
    them clustered by the keys they hold (:func:`monitor.accounts.columns.cluster_order`):
    ``columns`` are in that order, row r being account ``order[r]``.
    """

    def __init__(self, columns: AccountColumns, prices: Mapping[str, float], params: RiskParams) -> None:
        self.order = cluster_order(columns)
        self._row_of = np.empty_like(self.order)
        self._row_of[self.order] = np.arange(self.order.shape[0])
        columns = columns.permuted(self.order)
        self.columns = columns
        self._lines = ModelLines.from_params(params)
        missing = [k for k in columns.keys if k not in prices]
        if missing:
            raise KeyError(f"no price for {missing[0]!r}")
        self.prices = np.array([_checked_price(k, prices[k]) for k in columns.keys], dtype=np.float64)
        counts = np.diff(columns.entry_start)
        self.entry_account = np.repeat(np.arange(columns.n_accounts, dtype=np.int64), counts)
        order = np.argsort(columns.entry_key, kind="stable")
        cuts = np.searchsorted(columns.entry_key[order], np.arange(len(columns.keys) + 1))
        self._by_key = [_KeyEntries(columns, order[cuts[k]:cuts[k + 1]], self.entry_account)
                        for k in range(len(columns.keys))]
        self._key_index = {k: i for i, k in enumerate(columns.keys)}
        #: The accounts holding any of several keys, by the keys (moves of several keys recur).
        self._rows_of_keys: dict[tuple[int, ...], _Rows] = {}
        self._all_rows: _Rows | None = None
        n_entries, n_accounts = columns.qty.shape[0], columns.n_accounts
        #: Each entry's term of its account's adjusted equity, MM and gross notional (USD).
        self.parts = tuple(np.zeros(n_entries, dtype=np.float64) for _ in range(3))
        #: Each row's adjusted equity, MM and gross notional (USD).
        self.totals = tuple(np.zeros(n_accounts, dtype=np.float64) for _ in range(3))
        self._status = np.zeros(n_accounts, dtype=np.int8)
        everyone = _Rows(np.arange(n_accounts, dtype=np.int64), columns)
        self._evaluate(list(range(len(columns.keys))), everyone)

    def copy(self) -> AccountBook:
        """A book whose prices, figures and statuses move apart from this one's; the columns
        and the indexes, which no move changes, are shared (the id order and venue codes
        are made first, and the accounts of each set of moved keys are found once for
        both). A book's figures depend on its prices only, so a copy moved to some prices
        equals this book moved there."""
        _ = self.rows_by_id, self.venue_codes
        other = copy.copy(self)
        other.prices = self.prices.copy()
        other.parts = tuple(part.copy() for part in self.parts)
        other.totals = tuple(total.copy() for total in self.totals)
        other._status = self._status.copy()
        return other

    def rows_in_status(self, code: int) -> IntArray:
        """The rows of ``columns`` whose status code is ``code`` (ascending rows)."""
        return np.flatnonzero(self._status == code)

    def rows_of(self, accounts: IntArray) -> IntArray:
        """The rows of ``columns`` holding some accounts."""
        rows: IntArray = self._row_of[accounts]
        return rows

    @functools.cached_property
    def venue_codes(self) -> tuple[list[str], IntArray]:
        """The venues of the accounts, and each row's venue as an index into them."""
        names = list(dict.fromkeys(self.columns.venues))
        codes = np.zeros(self.columns.n_accounts, dtype=np.int64)
        if len(names) > 1:
            venues = np.array(self.columns.venues, dtype=object)
            for code, name in enumerate(names[1:], start=1):
                codes[venues == name] = code
        return names, codes

    @functools.cached_property
    def rows_by_id(self) -> tuple[IntArray, bool]:
        """The rows in the order of their account ids (as ``sorted`` orders the strings),
        and whether no id repeats."""
        ids = self.columns.ids
        numbered = list(map(ids.__getitem__, self._row_of.tolist()))  # by account number
        if all(map(operator.lt, numbered, numbered[1:])):  # numbered in id order (a global stage's book)
            return self._row_of.copy(), True
        order = sorted(range(len(ids)), key=ids.__getitem__)
        in_order = [ids[i] for i in order]
        unique = not any(map(operator.eq, in_order, in_order[1:]))
        return np.array(order, dtype=np.int64), unique

    def holders(self, key: str) -> IntArray:
        """The accounts holding a price key (ascending)."""
        return np.sort(self.order[self._by_key[self._key_index[key]].rows.accounts])

    def _evaluate(self, keys: list[int], rows: _Rows) -> StatusChanges:
        """Terms of the keys' entries, sums of the rows' accounts, their statuses; the sums
        of MM and gross only when a key has loans or perps (collateral moves only equity)."""
        acc = rows.accounts
        with _as_python():
            for k in keys:
                self._by_key[k].contributions(self.columns, float(self.prices[k]), self.parts)
            moved = 3 if any(self._by_key[k].moves_mm for k in keys) else 1
            sums = rows.sums(list(self.parts[:moved]))
            for total, new in zip(self.totals, sums, strict=False):
                total[acc] = new
            equity, mm = sums[0], sums[1] if moved == 3 else self.totals[1][acc]
            ratio = np.divide(equity, mm, out=np.full_like(equity, np.nan), where=mm > 0)
            after = status_codes(ratio, equity, rows.model, self._lines, rows.single_model)
        before = self._status[acc]
        self._status[acc] = after
        changed = np.flatnonzero(before != after)
        return StatusChanges(self.order[acc[changed]], before[changed], after[changed])

    def move(self, prices: Mapping[str, float]) -> StatusChanges:
        """Set new prices of some keys; re-evaluate the accounts holding them (RISK_MODEL §3).
        A key no account holds is ignored; a price that is not finite and positive raises
        ValueError before anything moves."""
        index, current = self._key_index, self.prices.tolist()  # Python floats: no numpy scalars
        # only a price that differs is checked: an equal one is the valid price already held
        new = {i: _checked_price(k, px) for k, px in prices.items()
               if (i := index.get(k)) is not None and px != current[i]}
        keys = sorted(k for k, px in new.items() if px != current[k])
        for k in keys:
            self.prices[k] = new[k]
        if not keys:
            return StatusChanges(np.empty(0, np.int64), np.empty(0, np.int8), np.empty(0, np.int8))
        if len(keys) == 1:
            return self._evaluate(keys, self._by_key[keys[0]].rows)
        rows = self._rows_of_keys.get(tuple(keys))
        if rows is None:
            held = np.zeros(self.columns.n_accounts, dtype=np.bool_)  # a mask: no sort or hash
            for k in keys:
                held[self._by_key[k].rows.accounts] = True
            if len(self._rows_of_keys) >= _KEY_SETS_KEPT:
                self._rows_of_keys.clear()
            if held.all():  # sets of keys every account holds share one
                rows = self._all_rows = self._all_rows or _Rows(np.flatnonzero(held), self.columns)
            else:
                rows = _Rows(np.flatnonzero(held), self.columns)
            self._rows_of_keys[tuple(keys)] = rows
        return self._evaluate(keys, rows)

    def figures(self, accounts: IntArray | None = None) -> AccountFigures:
        """Figures of ``accounts`` (all by default) at the current prices (RISK_MODEL §3):
        uniMMR = adjusted equity / MM; Bybit's account MM rate MM / equity as its venue
        ratio; Hyperliquid's backstop below 2/3 of MM; effective leverage gross / equity."""
        ext = np.arange(self.columns.n_accounts, dtype=np.int64) if accounts is None else accounts
        acc = self._row_of[ext]
        equity, mm, gross = (total[acc] for total in self.totals)
        model = self.columns.model[acc]
        with _as_python():
            ratio = np.divide(equity, mm, out=np.full_like(equity, np.nan), where=mm > 0)
            mm_rate = np.divide(mm, equity, out=np.full_like(equity, np.nan), where=equity > 0)
            leverage = np.divide(gross, equity, out=np.full_like(equity, np.nan), where=equity > 0)
        return AccountFigures(
            accounts=ext, adjusted_equity_usd=equity, maintenance_margin_usd=mm, gross_notional_usd=gross,
            uni_mmr=ratio, venue_ratio=np.where(model == _BYBIT, mm_rate, ratio), status=self._status[acc],
            backstop=(model == _HYPERLIQUID) & (ratio < self._lines.backstop_ratio),
            effective_leverage=leverage,
        )
