"""Unified accounts as columns (structure of arrays) for :class:`monitor.account_book.AccountBook`.

An account's balances and perps are its *entries*, stored contiguously in the account's own
order (balances, then perps), as :func:`monitor.margin.evaluate_account` walks them. Each
entry carries the table that prices it: a :class:`CollateralTable` for a balance (account
override, else venue table, else the unlisted rate: :func:`monitor.margin.collateral_tiers`)
and a :class:`StepTable` for a perp (explicit MMR, Hyperliquid margin table, venue tier
table or bracket table, in the order of ``monitor.margin._perp_mm``). Tables are shared:
one per distinct tier tuple.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from monitor.margin import (
    Account,
    Bracket,
    Perp,
    collateral_tiers,
    hyperliquid_margin_table,
)
from monitor.risk_params import CollateralTiers, PerpTierTable, RiskParams

__all__ = [
    "MODELS",
    "AccountColumns",
    "CollateralTable",
    "ColumnsBuilder",
    "FloatArray",
    "IntArray",
    "StepTable",
    "cluster_order",
]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

#: Account models in code order: ``AccountColumns.model`` holds the index into this tuple.
MODELS: tuple[Literal["binance-pm", "bybit-uta", "okx-mc", "hyperliquid"], ...] = (
    "binance-pm", "bybit-uta", "okx-mc", "hyperliquid")


@dataclass(frozen=True)
class CollateralTable:
    """Tiered collateral rate (RISK_MODEL §3): the amount above ``floors[j]`` takes
    ``rates[j]``; ``prefix_usd[j]`` is the value credited below ``floors[j]``, summed tier by
    tier from 0.0 as :func:`monitor.margin.tiered_collateral_value_usd` does. ``basis_qty``:
    floors in coin units (Bybit, OKX), else USD value (Binance)."""

    basis_qty: bool
    floors: FloatArray
    rates: FloatArray
    prefix_usd: FloatArray

    @classmethod
    def from_tiers(cls, tiers: CollateralTiers) -> CollateralTable:
        """Σ_(i<j) (floor_(i+1) − floor_i) × rate_i as the prefix of tier j (§3)."""
        prefix = [0.0]
        total = 0.0
        for (floor, rate), (cap, _) in itertools.pairwise(tiers.tiers):
            total += (cap - floor) * rate
            prefix.append(total)
        return cls(
            basis_qty=tiers.basis == "qty",
            floors=np.array([f for f, _ in tiers.tiers], dtype=np.float64),
            rates=np.array([r for _, r in tiers.tiers], dtype=np.float64),
            prefix_usd=np.array(prefix, dtype=np.float64),
        )


@dataclass(frozen=True)
class StepTable:
    """A perp MM table as steps: tier j holds sizes in (bounds[j−1], bounds[j]] and
    MM = notional × rates[j] − deductions_usd[j] (RISK_MODEL §3). Binance brackets and
    Hyperliquid margin tiers: bounds are the floors above the first, deduction = ``cum``;
    Bybit risk limits and OKX position tiers: bounds are the caps below the last
    (``basis_qty`` for OKX's coin caps); an explicit MMR is one step."""

    basis_qty: bool
    bounds: FloatArray
    rates: FloatArray
    deductions_usd: FloatArray

    @classmethod
    def from_brackets(cls, brackets: Sequence[Bracket]) -> StepTable:
        """cum_n = cum_(n−1) + floor_n × (MMR_n − MMR_(n−1)) (Binance USDⓈ-M brackets, §3)."""
        cum = [0.0]
        total = 0.0
        for prev, tier in itertools.pairwise(brackets):
            total += tier.floor_usd * (tier.mmr_ratio - prev.mmr_ratio)
            cum.append(total)
        return cls(
            basis_qty=False,
            bounds=np.array([b.floor_usd for b in brackets[1:]], dtype=np.float64),
            rates=np.array([b.mmr_ratio for b in brackets], dtype=np.float64),
            deductions_usd=np.array(cum, dtype=np.float64),
        )

    @classmethod
    def from_tier_table(cls, table: PerpTierTable) -> StepTable:
        """Bybit risk limits / OKX position tiers: the first tier whose cap holds the size."""
        return cls(
            basis_qty=table.basis == "qty",
            bounds=np.array([t.cap for t in table.tiers[:-1]], dtype=np.float64),
            rates=np.array([t.mmr_ratio for t in table.tiers], dtype=np.float64),
            deductions_usd=np.array([t.mm_deduction_usd for t in table.tiers], dtype=np.float64),
        )

    @classmethod
    def explicit(cls, mmr: float, cum_usd: float) -> StepTable:
        """A perp's own MMR and cum: MM = notional × MMR − cum (§3)."""
        return cls(basis_qty=False, bounds=np.empty(0, dtype=np.float64),
                   rates=np.array([mmr], dtype=np.float64),
                   deductions_usd=np.array([cum_usd], dtype=np.float64))


@dataclass(frozen=True)
class AccountColumns:
    """Accounts as arrays. Entry e of account a lies in ``entry_start[a]:entry_start[a+1]``;
    ``entry_is_perp`` tells a perp (``qty``, ``entry_price_usd``) from a balance (``qty`` is
    the amount, ``loan_mmr`` its margin-loan MMR). ``entry_table`` indexes
    ``collateral_tables`` for balances and ``step_tables`` for perps. ``entry_asset``
    indexes ``assets`` (a perp's symbol for perps)."""

    ids: Sequence[str]
    venues: Sequence[str]
    model: npt.NDArray[np.int8]
    entry_start: IntArray
    entry_key: npt.NDArray[np.int32]
    entry_is_perp: npt.NDArray[np.bool_]
    entry_asset: npt.NDArray[np.int32]
    qty: FloatArray
    entry_price_usd: FloatArray
    loan_mmr: FloatArray
    entry_table: npt.NDArray[np.int32]
    keys: Sequence[str]
    assets: Sequence[str]
    collateral_tables: Sequence[CollateralTable]
    step_tables: Sequence[StepTable]

    @property
    def n_accounts(self) -> int:
        """Number of accounts."""
        return int(self.model.shape[0])

    def permuted(self, order: IntArray) -> AccountColumns:
        """The same accounts in the order ``order`` (new position i holds account order[i]),
        each with its entries in its own order."""
        counts = np.diff(self.entry_start)[order]
        start = np.zeros(order.shape[0] + 1, dtype=np.int64)
        np.cumsum(counts, out=start[1:])
        entries = np.repeat(self.entry_start[:-1][order] - start[:-1], counts) + np.arange(start[-1])
        return dataclasses.replace(
            self, ids=[self.ids[i] for i in order.tolist()], venues=[self.venues[i] for i in order.tolist()],
            model=self.model[order], entry_start=start, entry_key=self.entry_key[entries],
            entry_is_perp=self.entry_is_perp[entries], entry_asset=self.entry_asset[entries],
            qty=self.qty[entries], entry_price_usd=self.entry_price_usd[entries],
            loan_mmr=self.loan_mmr[entries], entry_table=self.entry_table[entries],
        )


#: Keys that :func:`cluster_order` tells apart (one bit each in a uint64).
_CLUSTER_KEYS = 64


def cluster_order(columns: AccountColumns) -> IntArray:
    """Accounts ordered by the set of price keys they hold (stable; a bit per key, the
    first 64 keys), so the accounts holding one key lie in a few runs and a move gathers
    their entries from neighbouring memory rather than one cache line per account."""
    key = columns.entry_key.astype(np.uint64)
    bits = np.where(key < _CLUSTER_KEYS, np.left_shift(np.uint64(1), key % np.uint64(_CLUSTER_KEYS)), np.uint64(0))
    held = np.zeros(columns.n_accounts, dtype=np.uint64)
    nonempty = np.flatnonzero(np.diff(columns.entry_start) > 0)
    if nonempty.size:
        held[nonempty] = np.bitwise_or.reduceat(bits, columns.entry_start[nonempty])
    order: IntArray = np.argsort(held, kind="stable")
    return order


class ColumnsBuilder:
    """Turns :class:`Account` models into :class:`AccountColumns`, sharing identical tables."""

    def __init__(self, params: RiskParams) -> None:
        self._params = params
        self._keys: dict[str, int] = {}
        self._assets: dict[str, int] = {}
        self._coll: dict[object, int] = {}
        self._steps: dict[object, int] = {}
        self._venue_tables: dict[tuple[str, str], int] = {}
        self.collateral_tables: list[CollateralTable] = []
        self.step_tables: list[StepTable] = []

    def _collateral_table(self, tiers: CollateralTiers) -> int:
        ident = (tiers.basis, tiers.tiers)
        if ident not in self._coll:
            self._coll[ident] = len(self.collateral_tables)
            self.collateral_tables.append(CollateralTable.from_tiers(tiers))
        return self._coll[ident]

    def balance_table(self, asset: str, account: Account) -> int:
        """The collateral table of a balance (:func:`monitor.margin.collateral_tiers`)."""
        if account.collateral_rates and asset in account.collateral_rates:
            return self._collateral_table(account.collateral_rates[asset])
        known = self._venue_tables.get((account.model, asset))
        if known is None:
            venue = self._params.unified.venue(account.model)
            known = self._collateral_table(collateral_tiers(asset, account, venue))
            self._venue_tables[(account.model, asset)] = known
        return known

    def _step_table(self, ident: object, make: Callable[[], StepTable]) -> int:
        if ident not in self._steps:
            self._steps[ident] = len(self.step_tables)
            self.step_tables.append(make())
        return self._steps[ident]

    def perp_table(self, perp: Perp, account: Account) -> int:
        """The step table of a perp, chosen as ``monitor.margin._perp_mm`` chooses (§3)."""
        if perp.mmr is not None:
            mmr, cum = perp.mmr, perp.cum or 0.0
            return self._step_table(("explicit", mmr, cum), lambda: StepTable.explicit(mmr, cum))
        return self._step_table((account.model, perp.symbol), lambda: self._venue_step_table(perp, account))

    def _venue_step_table(self, perp: Perp, account: Account) -> StepTable:
        if account.model == "hyperliquid":
            return StepTable.from_brackets(hyperliquid_margin_table(perp.symbol, self._params.unified.hyperliquid))
        venue = self._params.unified.venue(account.model)
        tiers = venue.perp_table(perp.symbol)
        if tiers is not None:
            return StepTable.from_tier_table(tiers)
        return StepTable.from_brackets(venue.perp_brackets.get(perp.symbol, venue.default_perp_brackets))

    def build(self, accounts: Iterable[Account]) -> AccountColumns:
        """Columns of ``accounts`` in their order."""
        ids: list[str] = []
        venues: list[str] = []
        model: list[int] = []
        start = [0]
        key: list[int] = []
        is_perp: list[bool] = []
        asset: list[int] = []
        qty: list[float] = []
        entry_px: list[float] = []
        loan: list[float] = []
        table: list[int] = []
        for acct in accounts:
            venue = self._params.unified.venue(acct.model)
            ids.append(acct.account_id)
            venues.append(acct.venue)
            model.append(MODELS.index(acct.model))
            for b in acct.balances:
                key.append(self._keys.setdefault(b.price_key, len(self._keys)))
                is_perp.append(False)
                asset.append(self._assets.setdefault(b.asset, len(self._assets)))
                qty.append(b.amount)
                entry_px.append(0.0)
                loan.append(b.loan_mmr if b.loan_mmr is not None else venue.margin_loan_mmr_ratio)
                table.append(self.balance_table(b.asset, acct))
            for p in acct.perps:
                key.append(self._keys.setdefault(p.price_key, len(self._keys)))
                is_perp.append(True)
                asset.append(self._assets.setdefault(p.symbol, len(self._assets)))
                qty.append(p.qty)
                entry_px.append(p.entry_price)
                loan.append(0.0)
                table.append(self.perp_table(p, acct))
            start.append(len(key))
        return AccountColumns(
            ids=ids, venues=venues,
            model=np.array(model, dtype=np.int8), entry_start=np.array(start, dtype=np.int64),
            entry_key=np.array(key, dtype=np.int32), entry_is_perp=np.array(is_perp, dtype=np.bool_),
            entry_asset=np.array(asset, dtype=np.int32), qty=np.array(qty, dtype=np.float64),
            entry_price_usd=np.array(entry_px, dtype=np.float64), loan_mmr=np.array(loan, dtype=np.float64),
            entry_table=np.array(table, dtype=np.int32), keys=list(self._keys), assets=list(self._assets),
            collateral_tables=list(self.collateral_tables), step_tables=list(self.step_tables),
        )
