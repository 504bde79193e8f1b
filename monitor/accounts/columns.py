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
from operator import attrgetter
from typing import Any, Literal, Protocol

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
    "PlainAccount",
    "PlainBalance",
    "PlainPerp",
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


class PlainBalance(Protocol):
    """A balance's checked fields (``monitor.accounts.lines``), read-only."""

    @property
    def asset(self) -> str: ...
    @property
    def amount(self) -> float: ...
    @property
    def price_key(self) -> str: ...
    @property
    def loan_mmr(self) -> float | None: ...


class PlainPerp(Protocol):
    """A perp's checked fields, read-only."""

    @property
    def symbol(self) -> str: ...
    @property
    def qty(self) -> float: ...
    @property
    def entry_price(self) -> float: ...
    @property
    def price_key(self) -> str: ...
    @property
    def mmr(self) -> float | None: ...
    @property
    def cum(self) -> float | None: ...


class PlainAccount(Protocol):
    """An account without a collateral-rate override, its fields checked, read-only."""

    @property
    def account_id(self) -> str: ...
    @property
    def venue(self) -> str: ...
    @property
    def model(self) -> str: ...
    @property
    def balances(self) -> Sequence[PlainBalance]: ...
    @property
    def perps(self) -> Sequence[PlainPerp]: ...


_ACCOUNT_ID, _VENUE, _MODEL = attrgetter("account_id"), attrgetter("venue"), attrgetter("model")
_BALANCES, _PERPS = attrgetter("balances"), attrgetter("perps")
_ASSET, _AMOUNT, _LOAN_MMR = attrgetter("asset"), attrgetter("amount"), attrgetter("loan_mmr")
_SYMBOL, _QTY, _ENTRY_PRICE = attrgetter("symbol"), attrgetter("qty"), attrgetter("entry_price")
_PRICE_KEY, _MMR, _CUM = attrgetter("price_key"), attrgetter("mmr"), attrgetter("cum")
_MODEL_CODE = {m: i for i, m in enumerate(MODELS)}


@dataclass(frozen=True)
class _Entries:
    """Entry columns of some accounts, in entry order (see :class:`AccountColumns`)."""

    key: npt.NDArray[np.int32]
    is_perp: npt.NDArray[np.bool_]
    asset: npt.NDArray[np.int32]
    qty: FloatArray
    entry_px: FloatArray
    loan: FloatArray
    table: npt.NDArray[np.int32]


def _first_seen(keys: npt.NDArray[Any]) -> tuple[IntArray, IntArray]:
    """(index of the first row of each distinct row of ``keys``, in order of that first row;
    each row's number in that order). Rows of a 2-D array are told apart by their bytes
    (each row one opaque value: far faster than ``np.unique(axis=0)``), so equal numbers with
    different bits (0.0 and -0.0) count as two rows."""
    if keys.ndim == 2:
        rows = np.ascontiguousarray(keys)
        keys = rows.view(np.dtype((np.void, rows.dtype.itemsize * rows.shape[1]))).reshape(-1)
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    order = np.argsort(first)
    rank = np.empty_like(order)
    rank[order] = np.arange(order.shape[0])
    return first[order], rank[inverse.reshape(-1)]


#: Stands for an absent MMR or cum (both are ≥ 0 when given) in :meth:`_PlainEntries.tables`.
_ABSENT = -1.0


class _PlainEntries:
    """The entries of plain accounts in entry order (each account's balances, then its
    perps), each column gathered from the accounts' balances and perps in C-level passes
    and put in place by position (``balance_at``, ``perp_at``)."""

    def __init__(self, accounts: Sequence[PlainAccount]) -> None:
        n = len(accounts)
        balance_lists, perp_lists = list(map(_BALANCES, accounts)), list(map(_PERPS, accounts))
        self.balances: list[PlainBalance] = list(itertools.chain.from_iterable(balance_lists))
        self.perps: list[PlainPerp] = list(itertools.chain.from_iterable(perp_lists))
        n_balances = np.fromiter(map(len, balance_lists), dtype=np.int64, count=n)
        n_perps = np.fromiter(map(len, perp_lists), dtype=np.int64, count=n)
        self.model = np.fromiter(map(_MODEL_CODE.__getitem__, map(_MODEL, accounts)), dtype=np.int8, count=n)
        bounds = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(n_balances + n_perps, out=bounds[1:])
        #: Each account's first entry, counted from the first of these accounts.
        self.first = bounds[:-1]
        self.size = int(bounds[-1])
        before_balances = np.cumsum(n_balances) - n_balances
        before_perps = np.cumsum(n_perps) - n_perps
        self.balance_at = (np.repeat(self.first - before_balances, n_balances)
                           + np.arange(len(self.balances), dtype=np.int64))
        self.perp_at = (np.repeat(self.first + n_balances - before_perps, n_perps)
                        + np.arange(len(self.perps), dtype=np.int64))
        self.is_perp = np.zeros(self.size, dtype=np.bool_)
        self.is_perp[self.perp_at] = True
        self.balance_model = np.repeat(self.model, n_balances)
        self.perp_model = np.repeat(self.model, n_perps)

    def codes(self, index: dict[str, int], of_balance: Callable[[Any], str],
              of_perp: Callable[[Any], str]) -> npt.NDArray[np.int32]:
        """Each entry's name coded by ``index``, new names numbered in order of first entry."""
        out = np.empty(self.size, dtype=np.int32)
        for _ in range(2):  # again once the new names are numbered
            out[self.balance_at] = np.fromiter(map(index.get, map(of_balance, self.balances), itertools.repeat(-1)),
                                               dtype=np.int32, count=len(self.balances))
            out[self.perp_at] = np.fromiter(map(index.get, map(of_perp, self.perps), itertools.repeat(-1)),
                                            dtype=np.int32, count=len(self.perps))
            if out.size == 0 or out.min() >= 0:
                break
            names = np.empty(self.size, dtype=object)
            names[self.balance_at] = np.fromiter(map(of_balance, self.balances), dtype=object,
                                                 count=len(self.balances))
            names[self.perp_at] = np.fromiter(map(of_perp, self.perps), dtype=object, count=len(self.perps))
            for name in dict.fromkeys(names[out < 0].tolist()):
                index.setdefault(name, len(index))
        return out

    def floats(self, of_balance: Callable[[Any], float] | None,
               of_perp: Callable[[Any], float]) -> FloatArray:
        """A number of each entry (0.0 for balances without ``of_balance``)."""
        out = np.zeros(self.size, dtype=np.float64)
        if of_balance is not None:
            out[self.balance_at] = np.fromiter(map(of_balance, self.balances), dtype=np.float64,
                                               count=len(self.balances))
        out[self.perp_at] = np.fromiter(map(of_perp, self.perps), dtype=np.float64, count=len(self.perps))
        return out

    def loan_mmr(self, venue_mmr_by_model: FloatArray) -> FloatArray:
        """A balance's margin-loan MMR, else its venue's (RISK_MODEL §3); 0.0 for perps."""
        out = np.zeros(self.size, dtype=np.float64)
        own = _with_nan(list(map(_LOAN_MMR, self.balances)))
        out[self.balance_at] = np.where(np.isnan(own), venue_mmr_by_model[self.balance_model], own)
        return out

    def tables(self, asset_codes: npt.NDArray[np.int32], balance_table: Callable[[str, str], int],
               perp_table: Callable[[str, str, float | None, float | None], int]) -> npt.NDArray[np.int32]:
        """Each entry's table: the builder's methods called once per distinct input (model and
        asset; model, symbol, MMR and cum), with the first entry's values and in order of first
        entry, so tables are made in the order the entry-by-entry path makes them."""
        out = np.zeros(self.size, dtype=np.int32)
        if self.balances:
            first, rank = _first_seen(_model_and_name(self.balance_model, asset_codes[self.balance_at]))
            made = [balance_table(MODELS[self.balance_model[i]], self.balances[i].asset) for i in first.tolist()]
            out[self.balance_at] = np.array(made, dtype=np.int32)[rank]
        if self.perps:
            key = _model_and_name(self.perp_model, asset_codes[self.perp_at])
            mmr = list(map(_MMR, self.perps))
            if mmr.count(None) < len(mmr):  # without an MMR the table is the venue's (cum unused)
                cum = _with_nan(list(map(_CUM, self.perps)))
                key = np.stack([key.astype(np.float64), _with_nan(mmr), cum], axis=1)
                key[np.isnan(key)] = _ABSENT
            first, rank = _first_seen(key)
            made = [perp_table(MODELS[self.perp_model[i]], p.symbol, p.mmr, p.cum)
                    for i, p in ((i, self.perps[i]) for i in first.tolist())]
            out[self.perp_at] = np.array(made, dtype=np.int32)[rank]
        return out


def _model_and_name(model: npt.NDArray[np.int8], name: npt.NDArray[np.int32]) -> IntArray:
    """One integer per (model code, name code) pair."""
    return (model.astype(np.int64) << 32) | name.astype(np.int64)


def _with_nan(values: list[float | None]) -> FloatArray:
    """Optional numbers as floats, NaN for None (no per-value Python step when none or all
    are None)."""
    absent = values.count(None)
    if absent == len(values):
        return np.full(len(values), np.nan)
    if absent == 0:
        return np.fromiter(values, dtype=np.float64, count=len(values))
    return np.array(values, dtype=np.float64).reshape(-1)  # None → NaN


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
        #: Entries added in bulk (:meth:`add_plain`), before the ones in the lists below.
        self._parts: list[_Entries] = []
        self._parted = 0
        self._key: list[int] = []
        self._is_perp: list[bool] = []
        self._asset: list[int] = []
        self._qty: list[float] = []
        self._entry_px: list[float] = []
        self._loan: list[float] = []
        self._table: list[int] = []

    def __len__(self) -> int:
        """Accounts added so far."""
        return len(self._ids)

    def fresh(self) -> ColumnsBuilder:
        """An empty builder with the same risk parameters."""
        return ColumnsBuilder(self._params)

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
            self._start.append(self._parted + len(self._key))
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

    def _pending(self) -> _Entries:
        return _Entries(
            key=np.array(self._key, dtype=np.int32), is_perp=np.array(self._is_perp, dtype=np.bool_),
            asset=np.array(self._asset, dtype=np.int32), qty=np.array(self._qty, dtype=np.float64),
            entry_px=np.array(self._entry_px, dtype=np.float64), loan=np.array(self._loan, dtype=np.float64),
            table=np.array(self._table, dtype=np.int32))

    def _add_part(self, part: _Entries) -> None:
        """Entries in bulk, after the ones added one at a time so far."""
        if self._key:
            self._parts.append(self._pending())
            self._parted += len(self._key)
            for column in (self._key, self._is_perp, self._asset, self._qty, self._entry_px, self._loan,
                           self._table):
                column.clear()
        self._parts.append(part)
        self._parted += int(part.key.shape[0])

    def add_plain(self, accounts: Sequence[PlainAccount]) -> None:
        """Plain accounts (no collateral-rate override) in bulk: the same columns, keys, assets
        and tables, in the same order, as :meth:`start_account`, :meth:`add_balance` and
        :meth:`add_perp` give them one entry at a time."""
        if not accounts:
            return
        plain = _PlainEntries(accounts)
        self._start.extend((self._parted + len(self._key) + plain.first).tolist()[0 if self._ids else 1:])
        self._ids.extend(map(_ACCOUNT_ID, accounts))
        self._venues.extend(map(_VENUE, accounts))
        self._model.extend(plain.model.tolist())
        assets = plain.codes(self._assets, _ASSET, _SYMBOL)
        self._add_part(_Entries(
            key=plain.codes(self._keys, _PRICE_KEY, _PRICE_KEY), is_perp=plain.is_perp, asset=assets,
            qty=plain.floats(_AMOUNT, _QTY), entry_px=plain.floats(None, _ENTRY_PRICE),
            loan=plain.loan_mmr(np.array([self._loan_mmr[m] for m in MODELS], dtype=np.float64)),
            table=plain.tables(assets, self.venue_balance_table, self.perp_table)))

    def columns(self) -> AccountColumns:
        """Columns of the accounts added so far, in their order."""
        n_entries = self._parted + len(self._key)
        start = [*self._start, n_entries] if self._ids else [0]
        parts = [*self._parts, self._pending()]

        def joined(name: str) -> Any:
            return np.concatenate([getattr(p, name) for p in parts])

        return AccountColumns(
            ids=list(self._ids), venues=list(self._venues),
            model=np.array(self._model, dtype=np.int8), entry_start=np.array(start, dtype=np.int64),
            entry_key=joined("key"), entry_is_perp=joined("is_perp"), entry_asset=joined("asset"),
            qty=joined("qty"), entry_price_usd=joined("entry_px"), loan_mmr=joined("loan"),
            entry_table=joined("table"), keys=list(self._keys), assets=list(self._assets),
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
