"""One columnar book of the global stage's unified accounts, with each account's evaluation
memory (RISK_MODEL §3): the piece of
:class:`monitor.stages.global_risk.account_book.BookWatch` that holds accounts.

A part is built from the accounts' checked JSON documents through the line decoder of
:mod:`monitor.accounts.lines` into an :class:`monitor.accounts.book.AccountBook`, its accounts
numbered in account-id order. Per account it remembers the last evaluation as the scalar
watch (:class:`monitor.accounts.watch.AccountWatch`) does: figures, status, the prices of
its keys then, and the slack below which a move cannot change its status
(:func:`monitor.accounts.watch.status_slack_usd`). An account replaced or deleted after the
build is no longer *live* there. Pure: no I/O, no clock.
"""

from __future__ import annotations

import bisect
import heapq
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from monitor.accounts.book import AccountBook, AccountFigures
from monitor.accounts.columns import MODELS, AccountColumns, ColumnsBuilder, FloatArray, IntArray, concatenated
from monitor.accounts.lines import AccountLines
from monitor.config import EngineConfig
from monitor.models.margin import STATUS_RANK, Account, AccountResult, evaluate_account
from monitor.risk_params import RiskParams

__all__ = ["BookPart", "Evaluation", "PartMemory", "key_pairs", "slack_usd", "status_lines"]

BoolArray = npt.NDArray[np.bool_]
_LIQUIDATION = STATUS_RANK["liquidation"]


def key_pairs(columns: AccountColumns) -> tuple[IntArray, IntArray, FloatArray]:
    """:func:`monitor.accounts.watch.price_key_units` of every account, as (account, key)
    pairs: Σ|amount| of balances and Σ|qty| of perps per key, keys in order of first
    appearance, each sum left to right from 0.0 (``ufunc.at`` applies in index order).
    Returns each account's first pair (and the end), the pairs' key numbers, their units."""
    n = columns.n_accounts
    account = np.repeat(np.arange(n, dtype=np.int64), np.diff(columns.entry_start))
    code = account * max(len(columns.keys), 1) + columns.entry_key
    _, first, inverse = np.unique(code, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")  # pairs by first appearance: accounts ascending
    rank = np.empty_like(order)
    rank[order] = np.arange(order.shape[0])
    units = np.zeros(order.shape[0], dtype=np.float64)
    np.add.at(units, rank[inverse.ravel()], np.abs(columns.qty))
    firsts = first[order]
    starts = np.searchsorted(account[firsts], np.arange(n + 1, dtype=np.int64)).astype(np.int64)
    return starts, columns.entry_key[firsts].astype(np.int64), units


def status_lines(config: EngineConfig) -> tuple[FloatArray, ...]:
    """Each model's margin-call, reduce-only and liquidation ratios (``MODELS`` order)."""
    venues = [config.risk.unified.venue(m) for m in MODELS]
    return tuple(np.array([getattr(v, name) for v in venues], dtype=np.float64)
                 for name in ("margin_call_ratio", "reduce_only_ratio", "liquidation_ratio"))


def slack_usd(
    equity: FloatArray, mm: FloatArray, model: npt.NDArray[np.int8], lines: tuple[FloatArray, ...]
) -> FloatArray:
    """:func:`monitor.accounts.watch.status_slack_usd` of many accounts: |E|, and with MM > 0
    the least |E − t·MM| / (1 + t) over the model's lines t."""
    slack = np.abs(equity)
    priced = mm > 0
    with np.errstate(over="ignore", invalid="ignore"):
        for line in lines:
            t = line[model]
            slack = np.where(priced, np.fmin(slack, np.abs(equity - t * mm) / (1.0 + t)), slack)
    return slack


@dataclass
class PartMemory:
    """Per account of a part (ids sorted): whether it is live (not replaced or deleted since
    the build), its last evaluation, its prices then (one per account-key pair, row r's in
    ``pair_start[r]:pair_start[r+1]`` in :func:`monitor.accounts.watch.price_key_units`
    order), and mirrors of the watch's status sets and alert latches."""

    live: BoolArray
    done: BoolArray
    status: npt.NDArray[np.int8]
    equity: FloatArray
    mm: FloatArray
    gross: FloatArray
    lev: FloatArray
    slack: FloatArray
    stressed: BoolArray
    liquidating: BoolArray
    latch: npt.NDArray[np.int8]
    pair_start: IntArray
    pair_key: IntArray
    pair_units: FloatArray
    seen: FloatArray

    @classmethod
    def fresh(cls, columns: AccountColumns) -> PartMemory:
        n = columns.n_accounts
        pair_start, pair_key, pair_units = key_pairs(columns)

        def floats(size: int) -> FloatArray:
            return np.zeros(size, dtype=np.float64)

        def flags() -> BoolArray:
            return np.zeros(n, dtype=np.bool_)

        return cls(
            live=np.ones(n, dtype=np.bool_), done=flags(), status=np.zeros(n, dtype=np.int8), equity=floats(n),
            mm=floats(n), gross=floats(n), lev=floats(n), slack=floats(n), stressed=flags(), liquidating=flags(),
            latch=np.zeros(n, dtype=np.int8), pair_start=pair_start, pair_key=pair_key, pair_units=pair_units,
            seen=floats(pair_key.shape[0]),
        )

    def pairs_of(self, rows: IntArray) -> IntArray:
        """Indices of the account-key pairs of ``rows``, row by row."""
        start = self.pair_start[rows]
        counts = self.pair_start[rows + 1] - start
        offsets = np.cumsum(counts) - counts
        return np.repeat(start - offsets, counts) + np.arange(int(counts.sum()), dtype=np.int64)

    def carry(self, old: PartMemory, new_rows: IntArray, old_rows: IntArray) -> None:
        """Take the evaluations of accounts unchanged since ``old`` (same pairs, same order)."""
        for name in ("done", "status", "equity", "mm", "gross", "lev", "slack"):
            getattr(self, name)[new_rows] = getattr(old, name)[old_rows]
        self.seen[self.pairs_of(new_rows)] = old.seen[old.pairs_of(old_rows)]

    def moved_usd(self, rows: IntArray, prices: FloatArray) -> FloatArray:
        """Σ units × |price − price at the last evaluation| per row, added left to right over
        its keys from 0.0 as ``sum`` adds (the reference's skip test, RISK_MODEL §3)."""
        start = self.pair_start[rows]
        count = self.pair_start[rows + 1] - start
        small = count.size == 0 or int(count.max()) < np.iinfo(np.int16).max
        order = np.argsort(-(count.astype(np.int16) if small else count), kind="stable")  # radix for int16
        start, count = start[order], count[order]
        total = np.zeros(rows.shape[0], dtype=np.float64)
        width = int(count[0]) if count.size else 0
        for j in range(width):
            m = int(np.count_nonzero(count > j))  # a prefix: counts are descending
            pair = start[:m] + j
            total[:m] += self.pair_units[pair] * np.abs(prices[self.pair_key[pair]] - self.seen[pair])
        out = np.empty_like(total)
        out[order] = total
        return out


@dataclass(frozen=True)
class Evaluation:
    """A part's accounts re-evaluated at one event time: their rows (ascending), figures,
    status ranks, which of them enter or leave the stressed and liquidating sets, which
    act (a set or their latch changes), and the largest leverage rise since their last
    evaluation (0 when none rose)."""

    rows: IntArray
    figures: AccountFigures
    rank: npt.NDArray[np.int8]
    flips: BoolArray
    acting: IntArray
    jump: float


class BookPart:
    """Some accounts on one book, numbered in id order, with their evaluation memory."""

    def __init__(self, columns: AccountColumns, prices: Mapping[str, float], params: RiskParams) -> None:
        """A part of the accounts of ``columns`` (ids ascending, each once)."""
        self.ids = list(columns.ids)
        self.params = params
        self.keys = list(columns.keys)
        self.key_index = {k: i for i, k in enumerate(self.keys)}
        self.book: AccountBook | None = AccountBook(columns, {k: prices[k] for k in columns.keys}, params)
        names, codes = self.book.venue_codes  # by book row: taken in id order
        self.venues = names, codes[self.book.rows_of(np.arange(columns.n_accounts))]
        self.model = columns.model  # by id order (the book's own columns are clustered)
        self.mem = PartMemory.fresh(columns)

    @classmethod
    def decoded(cls, ids: list[str], docs: Mapping[str, bytes], prices: Mapping[str, float],
                params: RiskParams) -> BookPart:
        """A part of the accounts ``ids`` (ascending), decoded from their documents."""
        lines = AccountLines(ColumnsBuilder(params), lambda obj, _: Account.model_validate(obj))
        lines.add_lines([docs[aid] for aid in ids], range(len(ids)))
        return cls(lines.columns(), prices, params)

    @classmethod
    def merged(cls, parts: Sequence[BookPart], prices: Mapping[str, float], params: RiskParams) -> BookPart | None:
        """One part of the live accounts of ``parts`` (no id in two), from their books'
        columns (no document decoded), each account with its memory; None: none is live."""
        taken = [part.live_columns() for part in parts]
        offsets = np.cumsum([0, *(c.n_accounts for c, _ in taken)])
        if offsets[-1] == 0:
            return None
        ordered = heapq.merge(*(zip(c.ids, range(int(lo), int(lo) + c.n_accounts), strict=True)
                                for (c, _), lo in zip(taken, offsets, strict=False)))
        order = np.fromiter((i for _, i in ordered), dtype=np.int64, count=int(offsets[-1]))
        part = cls(concatenated([c for c, _ in taken]).permuted(order), prices, params)
        position = np.empty_like(order)
        position[order] = np.arange(order.shape[0])
        for old, (_, rows), lo, hi in zip(parts, taken, offsets[:-1], offsets[1:], strict=True):
            part.mem.carry(old.mem, position[lo:hi], rows)
        return part

    def live_columns(self) -> tuple[AccountColumns, IntArray]:
        """The live accounts' columns in id order, and their rows."""
        assert self.book is not None
        rows = np.flatnonzero(self.mem.live)
        return self.book.columns.permuted(self.book.rows_of(rows)), rows

    def __getstate__(self) -> dict[str, Any]:
        """Checkpointed without the book: a new part is built from the accounts instead."""
        return {**self.__dict__, "book": None}

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def dead(self) -> int:
        """Accounts replaced or deleted since the part was built."""
        return len(self.ids) - int(np.count_nonzero(self.mem.live))

    def row(self, aid: str) -> int | None:
        """The live row of an account, else None."""
        i = bisect.bisect_left(self.ids, aid)
        found = i < len(self.ids) and self.ids[i] == aid and bool(self.mem.live[i])
        return i if found else None

    def rows(self, ids: Collection[str]) -> IntArray:
        """Live rows of those of ``ids`` here."""
        return np.array([r for r in map(self.row, ids) if r is not None], dtype=np.int64)

    def carry_from(self, old: BookPart, fresh: Collection[str]) -> None:
        """Memory of the accounts live in ``old`` and not added or replaced since (``fresh``)."""
        old_row = {aid: i for i, aid in enumerate(old.ids) if old.mem.live[i]}
        kept = [(r, old_row[a]) for r, a in enumerate(self.ids) if a in old_row and a not in fresh]
        if kept:
            new_rows, old_rows = (np.array(x, dtype=np.int64) for x in zip(*kept, strict=True))
            self.mem.carry(old.mem, new_rows, old_rows)

    def mirror(self, stressed: Collection[str], liquidating: Collection[str], latches: Mapping[str, int]) -> None:
        """The watch's sets and latches on this part's rows."""
        m = self.mem
        m.stressed[self.rows(stressed)] = True
        m.liquidating[self.rows(liquidating)] = True
        latched = [(r, rank) for r, rank in ((self.row(a), k) for a, k in latches.items()) if r is not None]
        if latched:
            m.latch[[r for r, _ in latched]] = [k for _, k in latched]

    def forget(self, aid: str) -> bool:
        """An account replaced or deleted: no longer live here (False: it was not)."""
        row = self.row(aid)
        if row is None:
            return False
        m = self.mem
        m.live[row] = m.done[row] = m.stressed[row] = m.liquidating[row] = False
        m.latch[row] = 0
        return True

    def first(self, flags: BoolArray, count: int) -> list[str]:
        """Ids of the first ``count`` rows flagged (rows are in id order)."""
        return [self.ids[r] for r in np.flatnonzero(flags)[:count].tolist()]

    def _todo(self, changed: Collection[str]) -> IntArray:
        """Live accounts holding a changed key (ascending)."""
        assert self.book is not None
        keys = [k for k in changed if k in self.key_index]
        if len(keys) == 1:  # the usual tick: no mask over every account
            rows = self.book.holders(keys[0])
            return rows[self.mem.live[rows]]
        held = np.zeros(len(self.ids), dtype=np.bool_)
        for key in keys:
            held[self.book.holders(key)] = True
        return np.flatnonzero(held & self.mem.live)

    def evaluate(self, changed: Collection[str], prices: Mapping[str, float]) -> Evaluation | None:
        """The book at ``prices``; the live accounts on a changed key whose prices moved at
        least their slack since their last evaluation (or never evaluated), evaluated."""
        book, m = self.book, self.mem
        assert book is not None
        book.move({k: prices[k] for k in book.columns.keys})
        rows = self._todo(changed)
        rows = rows[~m.done[rows] | ~(m.moved_usd(rows, book.prices) < m.slack[rows])]
        if rows.size == 0:
            return None
        fig = book.figures(rows)
        rank = fig.status
        flips = ((rank > 0) != m.stressed[rows]) | ((rank == _LIQUIDATION) != m.liquidating[rows])
        latch = m.latch[rows]
        had = m.done[rows] & ~np.isnan(fig.effective_leverage) & ~np.isnan(m.lev[rows])
        jump = max(0.0, float(np.max(fig.effective_leverage[had] - m.lev[rows][had]))) if had.any() else 0.0
        acting = np.flatnonzero(flips | ((rank == 0) & (latch > 0)) | (rank > latch))
        return Evaluation(rows, fig, rank, flips, acting, jump)

    def remember(self, ev: Evaluation, lines: tuple[FloatArray, ...]) -> None:
        """The evaluation becomes the rows' last one (their prices now, their slack)."""
        m, rows, fig = self.mem, ev.rows, ev.figures
        assert self.book is not None
        m.done[rows] = True
        m.status[rows] = ev.rank
        m.equity[rows], m.mm[rows] = fig.adjusted_equity_usd, fig.maintenance_margin_usd
        m.gross[rows], m.lev[rows] = fig.gross_notional_usd, fig.effective_leverage
        m.slack[rows] = slack_usd(fig.adjusted_equity_usd, fig.maintenance_margin_usd, self.model[rows], lines)
        pairs = m.pairs_of(rows)
        m.seen[pairs] = self.book.prices[m.pair_key[pairs]]

    def previous(self, row: int, account: Account) -> AccountResult | None:
        """An account's last evaluation, again (the same prices give the same figures)."""
        m = self.mem
        if not m.done[row]:
            return None
        keys = self.keys
        lo, hi = int(m.pair_start[row]), int(m.pair_start[row + 1])
        seen = {keys[int(m.pair_key[j])]: float(m.seen[j]) for j in range(lo, hi)}
        return evaluate_account(account, seen, self.params, with_forced_sells=False)
