"""Unified accounts as columns (structure of arrays) for :class:`monitor.accounts.book.AccountBook`.

An account's balances and perps are its *entries*, stored contiguously in the account's own
order (balances, then perps), as :func:`monitor.models.margin.evaluate_account` walks them. Each
entry carries the table that prices it: a :class:`CollateralTable` for a balance (account
override, else venue table, else the unlisted rate: :func:`monitor.models.margin.collateral_tiers`)
and a :class:`StepTable` for a perp (explicit MMR, Hyperliquid margin table, venue tier
table or bracket table, in the order of ``monitor.models.margin._perp_mm``). Tables are shared:
one per distinct tier tuple.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from monitor.models.margin import Account, Bracket, hyperliquid_margin_table
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
    "concatenated",
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
    tier from 0.0 as :func:`monitor.models.margin.tiered_collateral_value_usd` does. ``basis_qty``:
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
    """Turns accounts into :class:`AccountColumns`, sharing identical tables: whole
    :class:`Account` models (``add``, ``build``) or an account's checked fields one entry at a
    time (``start_account``, ``add_balance``, ``add_perp``: the JSON decoder of
    :mod:`monitor.accounts.lines`); ``columns`` gives what was added, in order."""

    def __init__(self, params: RiskParams) -> None:
        self._params = params
        self._keys: dict[str, int] = {}
        self._assets: dict[str, int] = {}
        self._coll: dict[object, int] = {}
        self._steps: dict[object, int] = {}
        self._venue_tables: dict[tuple[str, str], int] = {}
        self._loan_mmr = {m: params.unified.venue(m).margin_loan_mmr_ratio for m in MODELS}
        self.collateral_tables: list[CollateralTable] = []
        self.step_tables: list[StepTable] = []
        self._ids: list[str] = []
        self._venues: list[str] = []
        self._model: list[int] = []
        self._start = [0]
        self._key: list[int] = []
        self._is_perp: list[bool] = []
        self._asset: list[int] = []
        self._qty: list[float] = []
        self._entry_px: list[float] = []
        self._loan: list[float] = []
        self._table: list[int] = []

    def _collateral_table(self, tiers: CollateralTiers) -> int:
        ident = (tiers.basis, tiers.tiers)
        if ident not in self._coll:
            self._coll[ident] = len(self.collateral_tables)
            self.collateral_tables.append(CollateralTable.from_tiers(tiers))
        return self._coll[ident]

    def venue_balance_table(self, model: str, asset: str) -> int:
        """The collateral table of a balance without an account override: the venue table,
        else the unlisted rate (:func:`monitor.models.margin.collateral_tiers`)."""
        known = self._venue_tables.get((model, asset))
        if known is None:
            venue = self._params.unified.venue(model)
            rates = venue.collateral_rates.get(asset)
            known = self._collateral_table(rates if rates is not None else CollateralTiers(
                basis="usd", tiers=((0.0, venue.unlisted_collateral_rate),)))
            self._venue_tables[(model, asset)] = known
        return known

    def balance_table(self, asset: str, account: Account) -> int:
        """The collateral table of a balance (:func:`monitor.models.margin.collateral_tiers`)."""
        if account.collateral_rates and asset in account.collateral_rates:
            return self._collateral_table(account.collateral_rates[asset])
        return self.venue_balance_table(account.model, asset)

    def _step_table(self, ident: object, make: Callable[[], StepTable]) -> int:
        if ident not in self._steps:
            self._steps[ident] = len(self.step_tables)
            self.step_tables.append(make())
        return self._steps[ident]

    def perp_table(self, model: str, symbol: str, mmr: float | None, cum: float | None) -> int:
        """The step table of a perp, chosen as ``monitor.models.margin._perp_mm`` chooses (§3)."""
        if mmr is not None:
            cum_usd = cum or 0.0
            return self._step_table(("explicit", mmr, cum_usd), lambda: StepTable.explicit(mmr, cum_usd))
        return self._step_table((model, symbol), lambda: self._venue_step_table(model, symbol))

    def _venue_step_table(self, model: str, symbol: str) -> StepTable:
        if model == "hyperliquid":
            return StepTable.from_brackets(hyperliquid_margin_table(symbol, self._params.unified.hyperliquid))
        venue = self._params.unified.venue(model)
        tiers = venue.perp_table(symbol)
        if tiers is not None:
            return StepTable.from_tier_table(tiers)
        return StepTable.from_brackets(venue.perp_brackets.get(symbol, venue.default_perp_brackets))

    def start_account(self, account_id: str, venue: str, model: str) -> None:
        """Begin an account; its entries follow (balances, then perps)."""
        if len(self._ids) > 0:
            self._start.append(len(self._key))
        self._ids.append(account_id)
        self._venues.append(venue)
        self._model.append(MODELS.index(model))

    def add_balance(self, asset: str, amount: float, price_key: str, loan_mmr: float | None, table: int) -> None:
        """A balance of the current account; no loan MMR: the venue's (RISK_MODEL §3)."""
        self._key.append(self._keys.setdefault(price_key, len(self._keys)))
        self._is_perp.append(False)
        self._asset.append(self._assets.setdefault(asset, len(self._assets)))
        self._qty.append(amount)
        self._entry_px.append(0.0)
        self._loan.append(loan_mmr if loan_mmr is not None else self._loan_mmr[MODELS[self._model[-1]]])
        self._table.append(table)

    def add_perp(self, symbol: str, qty: float, entry_price: float, price_key: str, table: int) -> None:
        """A perp of the current account."""
        self._key.append(self._keys.setdefault(price_key, len(self._keys)))
        self._is_perp.append(True)
        self._asset.append(self._assets.setdefault(symbol, len(self._assets)))
        self._qty.append(qty)
        self._entry_px.append(entry_price)
        self._loan.append(0.0)
        self._table.append(table)

    def add(self, acct: Account) -> None:
        """One validated account model."""
        self.start_account(acct.account_id, acct.venue, acct.model)
        for b in acct.balances:
            self.add_balance(b.asset, b.amount, b.price_key, b.loan_mmr, self.balance_table(b.asset, acct))
        for p in acct.perps:
            self.add_perp(p.symbol, p.qty, p.entry_price, p.price_key,
                          self.perp_table(acct.model, p.symbol, p.mmr, p.cum))

    def columns(self) -> AccountColumns:
        """Columns of the accounts added so far, in their order."""
        start = [*self._start, len(self._key)] if self._ids else [0]
        return AccountColumns(
            ids=list(self._ids), venues=list(self._venues),
            model=np.array(self._model, dtype=np.int8), entry_start=np.array(start, dtype=np.int64),
            entry_key=np.array(self._key, dtype=np.int32), entry_is_perp=np.array(self._is_perp, dtype=np.bool_),
            entry_asset=np.array(self._asset, dtype=np.int32), qty=np.array(self._qty, dtype=np.float64),
            entry_price_usd=np.array(self._entry_px, dtype=np.float64),
            loan_mmr=np.array(self._loan, dtype=np.float64),
            entry_table=np.array(self._table, dtype=np.int32), keys=list(self._keys), assets=list(self._assets),
            collateral_tables=list(self.collateral_tables), step_tables=list(self.step_tables),
        )

    def build(self, accounts: Iterable[Account]) -> AccountColumns:
        """Columns of ``accounts`` in their order (after any added before)."""
        for acct in accounts:
            self.add(acct)
        return self.columns()


def _table_ident(table: CollateralTable | StepTable) -> tuple[object, ...]:
    return (type(table).__name__, *(v.tobytes() if isinstance(v, np.ndarray) else v
                                    for v in dataclasses.astuple(table)))


def concatenated(parts: Sequence[AccountColumns]) -> AccountColumns:
    """The accounts of several columns one after the other, their keys, assets and tables
    united (equal tables shared), each entry as it was."""
    keys: dict[str, int] = {}
    assets: dict[str, int] = {}
    tables: dict[tuple[object, ...], int] = {}
    coll: list[CollateralTable] = []
    steps: list[StepTable] = []

    def code(index: dict[str, int], name: str) -> int:
        return index.setdefault(name, len(index))

    def table_code(table: CollateralTable | StepTable) -> int:
        ident = _table_ident(table)
        if ident not in tables:
            into: list[Any] = steps if isinstance(table, StepTable) else coll
            tables[ident] = len(into)
            into.append(table)
        return tables[ident]

    key, asset, table, starts = [], [], [], [np.zeros(1, dtype=np.int64)]
    entries = 0
    for c in parts:
        key.append(np.array([code(keys, k) for k in c.keys], dtype=np.int32)[c.entry_key] if c.keys
                   else c.entry_key)
        asset.append(np.array([code(assets, a) for a in c.assets], dtype=np.int32)[c.entry_asset] if c.assets
                     else c.entry_asset)
        coll_of = np.array([table_code(t) for t in c.collateral_tables] or [0], dtype=np.int32)
        step_of = np.array([table_code(t) for t in c.step_tables] or [0], dtype=np.int32)
        table.append(np.where(c.entry_is_perp, step_of[np.minimum(c.entry_table, len(step_of) - 1)],
                              coll_of[np.minimum(c.entry_table, len(coll_of) - 1)]).astype(np.int32))
        starts.append(c.entry_start[1:] - c.entry_start[0] + entries)
        entries += int(c.entry_start[-1] - c.entry_start[0])
    return AccountColumns(
        ids=[i for c in parts for i in c.ids], venues=[v for c in parts for v in c.venues],
        model=np.concatenate([c.model for c in parts]), entry_start=np.concatenate(starts),
        entry_key=np.concatenate(key), entry_is_perp=np.concatenate([c.entry_is_perp for c in parts]),
        entry_asset=np.concatenate(asset), qty=np.concatenate([c.qty for c in parts]),
        entry_price_usd=np.concatenate([c.entry_price_usd for c in parts]),
        loan_mmr=np.concatenate([c.loan_mmr for c in parts]), entry_table=np.concatenate(table),
        keys=list(keys), assets=list(assets), collateral_tables=coll, step_tables=steps,
    )
