"""Unified accounts of the global stage on a columnar book (RISK_MODEL §3), with the outputs
of :class:`monitor.accounts.watch.AccountWatch`, its scalar reference, to the last digit.

A price move re-evaluates, with numpy, the accounts holding a moved key
(:class:`monitor.accounts.book.AccountBook`). As in the reference, an account whose prices
have moved less than its slack since its last evaluation
(:func:`monitor.accounts.watch.status_slack_usd`: its status provably holds) keeps that
evaluation, so leverage jumps and figures are the reference's. Only the accounts whose
status sets or alert latch change are then taken one by one, in account-id order: an
alert carries the scalar :func:`monitor.models.margin.evaluate_account` result (driving
asset, per-asset equity against the previous evaluation) and, in liquidation, the forced
sells of :func:`monitor.models.margin.liquidate_account`.

Accounts whose price keys are not all priced wait outside the book. The book is rebuilt
when accounts are added, replaced or deleted — at the next evaluation, once for all the
changes since — and the accounts that did not change keep their evaluation memory.
Pure: no I/O, no clock.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from monitor.accounts.book import AccountBook
from monitor.accounts.columns import MODELS, AccountColumns, ColumnsBuilder, FloatArray, IntArray
from monitor.accounts.lines import AccountLines
from monitor.accounts.watch import AlertLatches, ResultColumns, account_alert, account_document
from monitor.config import EngineConfig
from monitor.models.cascade import ACCOUNTS_SHOWN, AccountSet
from monitor.models.margin import STATUS_RANK, Account, AccountResult, evaluate_account, liquidate_account
from monitor.protocol import Alert
from monitor.stages.spiral import BookAccounts

__all__ = ["BookWatch"]

BoolArray = npt.NDArray[np.bool_]
_LIQUIDATION = STATUS_RANK["liquidation"]
_REDUCE_ONLY = STATUS_RANK["reduce_only"]


@dataclass
class _Memory:
    """Per book account (ids sorted): its last evaluation, its prices then (one per
    account-key pair, the pairs of row r in ``pair_start[r]:pair_start[r+1]`` in the order of
    :func:`monitor.accounts.watch.price_key_units`), and whether it is in the stressed and liquidating sets and
    the highest status rank alerted (mirrors of the watch's sets and latches)."""

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
    def fresh(cls, columns: AccountColumns) -> _Memory:
        n = columns.n_accounts
        pair_start, pair_key, pair_units = key_pairs(columns)

        def floats(size: int) -> FloatArray:
            return np.zeros(size, dtype=np.float64)

        return cls(
            done=np.zeros(n, dtype=np.bool_), status=np.zeros(n, dtype=np.int8), equity=floats(n),
            mm=floats(n), gross=floats(n), lev=floats(n), slack=floats(n), stressed=np.zeros(n, dtype=np.bool_),
            liquidating=np.zeros(n, dtype=np.bool_), latch=np.zeros(n, dtype=np.int8),
            pair_start=pair_start, pair_key=pair_key, pair_units=pair_units, seen=floats(pair_key.shape[0]),
        )

    def pairs_of(self, rows: IntArray) -> IntArray:
        """Indices of the account-key pairs of ``rows``, row by row."""
        start = self.pair_start[rows]
        counts = self.pair_start[rows + 1] - start
        offsets = np.cumsum(counts) - counts
        return np.repeat(start - offsets, counts) + np.arange(int(counts.sum()), dtype=np.int64)

    def carry(self, old: _Memory, new_rows: IntArray, old_rows: IntArray) -> None:
        """Take the evaluations of accounts unchanged by a rebuild (same pairs, same order)."""
        for f in fields(self):
            if f.name.startswith("pair_") or f.name in ("seen", "stressed", "liquidating", "latch"):
                continue
            getattr(self, f.name)[new_rows] = getattr(old, f.name)[old_rows]
        self.seen[self.pairs_of(new_rows)] = old.seen[old.pairs_of(old_rows)]

    def moved_usd(self, rows: IntArray, prices: FloatArray) -> FloatArray:
        """Σ units × |price − price at the last evaluation| per row, added left to right over
        its keys from 0.0 as ``sum`` adds (the reference's skip test, RISK_MODEL §3)."""
        start = self.pair_start[rows]
        count = self.pair_start[rows + 1] - start
        order = np.argsort(-count, kind="stable")
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


def _thresholds(config: EngineConfig) -> tuple[FloatArray, ...]:
    """Each model's margin-call, reduce-only and liquidation ratios (``MODELS`` order)."""
    venues = [config.risk.unified.venue(m) for m in MODELS]
    return tuple(np.array([getattr(v, name) for v in venues], dtype=np.float64)
                 for name in ("margin_call_ratio", "reduce_only_ratio", "liquidation_ratio"))


def slack_usd(equity: FloatArray, mm: FloatArray, model: IntArray, lines: tuple[FloatArray, ...]) -> FloatArray:
    """:func:`monitor.accounts.watch.status_slack_usd` of many accounts: |E|, and with MM > 0
    the least |E − t·MM| / (1 + t) over the model's lines t."""
    slack = np.abs(equity)
    priced = mm > 0
    with np.errstate(over="ignore", invalid="ignore"):
        for line in lines:
            t = line[model]
            slack = np.where(priced, np.fmin(slack, np.abs(equity - t * mm) / (1.0 + t)), slack)
    return slack


class BookWatch:
    """The accounts of stage 2 on a columnar book: latest evaluations, status sets, latches."""

    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        self.config_hash = config.config_hash
        self.params = config.risk
        #: Each account as its checked JSON document (models are built only when needed).
        self.accounts: dict[str, bytes] = {}
        #: USD of the forced-sell lists of accounts that reached liquidation, per asset.
        self.forced_sell_usd: dict[str, float] = {}
        self._stressed: set[str] = set()
        self._liquidating: set[str] = set()
        self.latches = AlertLatches()
        self._lines = _thresholds(config)
        self._book: AccountBook | None = None
        #: The book's accounts by number (sorted ids), their key numbers, their memory.
        self._ids: list[str] = []
        self._key_index: dict[str, int] = {}
        self._venues: tuple[list[str], IntArray] = ([], np.zeros(0, dtype=np.int64))
        self._mem: _Memory | None = None
        #: Accounts added or replaced since the book was built (their memory starts afresh).
        self._fresh: set[str] = set()
        self._dirty = False
        #: Accounts whose prices were not looked at yet (their keys), the keys each account
        #: still waits for, and the accounts waiting for each key.
        self._unchecked: dict[str, frozenset[str]] = {}
        self._missing: dict[str, set[str]] = {}
        self._waiting: dict[str, set[str]] = {}

    def __getstate__(self) -> dict[str, Any]:
        """A checkpoint holds the accounts and their evaluations, not the book: it is rebuilt
        from them at the prices of the next evaluation (it depends on nothing else)."""
        state = dict(self.__dict__)
        state["_book"] = None
        state["_dirty"] = self._dirty or bool(self._ids)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def stressed(self) -> list[str]:
        return sorted(self._stressed)

    def liquidating(self) -> list[str]:
        return sorted(self._liquidating)

    def _account_set(self, names: set[str], flags: BoolArray | None) -> AccountSet:
        """How many, and the first ids: the book's rows are in id order (no sort)."""
        if flags is None or not names:
            return AccountSet(len(names), sorted(names)[:ACCOUNTS_SHOWN])
        first = np.flatnonzero(flags)[:ACCOUNTS_SHOWN].tolist()
        return AccountSet(len(names), [self._ids[r] for r in first])

    def stressed_set(self) -> AccountSet:
        """The accounts at or below the margin-call line (RISK_MODEL §6 stage 6)."""
        return self._account_set(self._stressed, None if self._mem is None else self._mem.stressed)

    def liquidating_set(self) -> AccountSet:
        """The accounts in liquidation (RISK_MODEL §6 stage 7)."""
        return self._account_set(self._liquidating, None if self._mem is None else self._mem.liquidating)

    # -- accounts ------------------------------------------------------------------------
    def _row(self, aid: str) -> int | None:
        i = bisect.bisect_left(self._ids, aid)
        return i if i < len(self._ids) and self._ids[i] == aid else None

    def upsert(self, raw: Mapping[str, Any], now_ms: int) -> frozenset[str] | None:
        """Add, replace or delete a unified account; its price keys (None: deleted). Balances
        without a price key get one. The book follows at the next evaluation."""
        aid = str(raw["account_id"])
        if self.accounts.pop(aid, None) is not None:
            self._forget(aid)
        self._stressed.discard(aid)
        self._liquidating.discard(aid)
        self.latches.release(aid)
        if raw.get("delete"):
            return None
        doc, keys = account_document(raw, now_ms, self.config)
        self.accounts[aid] = doc
        self._unchecked[aid] = keys
        self._fresh.add(aid)
        return keys

    def account(self, aid: str) -> Account:
        """One account's model, from its document."""
        return Account.model_validate(orjson.loads(self.accounts[aid]))

    def _forget(self, aid: str) -> None:
        """An account replaced or deleted: its evaluation is gone, its book row stale."""
        self._dirty = True
        self._unchecked.pop(aid, None)
        for key in self._missing.pop(aid, ()):
            self._waiting[key].discard(aid)
        row = self._row(aid)
        if row is not None and self._mem is not None:
            m = self._mem
            m.done[row] = m.stressed[row] = m.liquidating[row] = False
            m.latch[row] = 0

    def _check_prices(self, prices: Mapping[str, float]) -> None:
        """Accounts whose keys are all priced join the book (at its next build)."""
        for aid, keys in self._unchecked.items():
            missing = {k for k in keys if k not in prices}
            if missing:
                self._missing[aid] = missing
                for key in missing:
                    self._waiting.setdefault(key, set()).add(aid)
            else:
                self._dirty = True
        self._unchecked.clear()
        for key in [k for k in self._waiting if k in prices]:
            for aid in self._waiting.pop(key):
                waits = self._missing[aid]
                waits.discard(key)
                if not waits:
                    del self._missing[aid]
                    self._dirty = True

    def _rebuild(self, prices: Mapping[str, float]) -> None:
        """The book of every priced account; unchanged accounts keep their memory."""
        ids = sorted(a for a in self.accounts if a not in self._missing)
        old_ids, old_mem = self._ids, self._mem
        self._dirty = False
        self._ids, self._book, self._mem = ids, None, None
        fresh, self._fresh = self._fresh, set()
        if not ids:
            return
        lines = AccountLines(ColumnsBuilder(self.params), lambda obj, _: Account.model_validate(obj))
        for i, aid in enumerate(ids):
            doc = self.accounts[aid]
            lines.add(orjson.loads(doc), i, doc)
        columns = lines.columns()
        del lines  # its entry lists: the columns hold the accounts now
        self._key_index = {k: i for i, k in enumerate(columns.keys)}
        self._book = AccountBook(columns, {k: prices[k] for k in columns.keys}, self.params)
        names = list(dict.fromkeys(columns.venues))
        code_of = {v: i for i, v in enumerate(names)}
        self._venues = names, np.array([code_of[v] for v in columns.venues], dtype=np.int64)
        mem = self._mem = _Memory.fresh(columns)
        if old_mem is not None:
            old_row = {aid: i for i, aid in enumerate(old_ids)}
            kept = [(r, old_row[a]) for r, a in enumerate(ids) if a in old_row and a not in fresh]
            if kept:
                new_rows, old_rows = (np.array(x, dtype=np.int64) for x in zip(*kept, strict=True))
                mem.carry(old_mem, new_rows, old_rows)
        for members, flags in ((self._stressed, mem.stressed), (self._liquidating, mem.liquidating)):
            flags[self._rows([*members])] = True
        latched = self.latches.rank  # a latch restored for an account still waiting for prices stays out
        mem.latch[self._rows([*latched])] = [rank for a, rank in latched.items() if self._row(a) is not None]

    def _rows(self, ids: list[str]) -> IntArray:
        """Book rows of those of ``ids`` in the book, in their order."""
        rows = [row for row in map(self._row, ids) if row is not None]
        return np.array(rows, dtype=np.int64)

    # -- evaluation ----------------------------------------------------------------------
    def _todo(self, changed: set[str]) -> IntArray:
        """The book's accounts holding a changed key (ascending: account-id order)."""
        book = self._book
        assert book is not None
        keys = sorted(k for k in changed if k in self._key_index)
        if len(keys) == 1:
            return book.holders(keys[0])
        held = np.zeros(len(self._ids), dtype=np.bool_)
        for key in keys:
            held[book.holders(key)] = True
        return np.flatnonzero(held)

    def evaluate(
        self, ts: int, changed: set[str], prices: Mapping[str, float], out: list[Alert]
    ) -> tuple[bool, float]:
        """Re-evaluate the accounts on moved keys; alert escalations. (sets changed, leverage jump)"""
        self._check_prices(prices)
        if self._dirty:
            self._rebuild(prices)
        book, m = self._book, self._mem
        if book is None or m is None:
            return False, 0.0
        book.move({k: prices[k] for k in book.columns.keys})
        rows = self._todo(changed)
        if rows.size == 0:
            return False, 0.0
        rows = rows[~m.done[rows] | ~(m.moved_usd(rows, book.prices) < m.slack[rows])]
        fig = book.figures(rows)
        rank = fig.status
        flip_s = (rank > 0) != m.stressed[rows]
        flip_l = (rank == _LIQUIDATION) != m.liquidating[rows]
        latch = m.latch[rows]
        had = m.done[rows] & ~np.isnan(fig.effective_leverage) & ~np.isnan(m.lev[rows])
        jump = max(0.0, float(np.max(fig.effective_leverage[had] - m.lev[rows][had]))) if had.any() else 0.0
        acting = flip_s | flip_l | ((rank == 0) & (latch > 0)) | (rank > latch)
        for i in np.flatnonzero(acting).tolist():
            self._act(ts, int(rows[i]), int(rank[i]), prices, out)
        self._remember(rows, fig.adjusted_equity_usd, fig.maintenance_margin_usd, fig.gross_notional_usd,
                       fig.effective_leverage, rank, book.prices)
        return bool(flip_s.any() or flip_l.any()), jump

    def _remember(self, rows: IntArray, equity: FloatArray, mm: FloatArray, gross: FloatArray, lev: FloatArray,
                  rank: npt.NDArray[np.int8], prices: FloatArray) -> None:
        """The evaluation of ``rows`` becomes their last one (their prices now, their slack)."""
        m = self._mem
        assert m is not None and self._book is not None
        m.done[rows] = True
        m.status[rows] = rank
        m.equity[rows], m.mm[rows], m.gross[rows], m.lev[rows] = equity, mm, gross, lev
        model = self._book.columns.model[self._book.rows_of(rows)].astype(np.int64)
        m.slack[rows] = slack_usd(equity, mm, model, self._lines)
        pairs = m.pairs_of(rows)
        m.seen[pairs] = prices[m.pair_key[pairs]]

    def _previous(self, row: int, account: Account) -> AccountResult | None:
        """The account's last evaluation, again (the same prices give the same figures)."""
        m = self._mem
        assert m is not None
        if not m.done[row]:
            return None
        keys = list(self._key_index)
        lo, hi = int(m.pair_start[row]), int(m.pair_start[row + 1])
        seen = {keys[int(m.pair_key[j])]: float(m.seen[j]) for j in range(lo, hi)}
        return evaluate_account(account, seen, self.params, with_forced_sells=False)

    def _act(self, ts: int, row: int, rank: int, prices: Mapping[str, float], out: list[Alert]) -> None:
        """Status sets and latch of one account; an alert on escalation (the reference's steps)."""
        m = self._mem
        assert m is not None
        aid = self._ids[row]
        for names, flags, inside in ((self._stressed, m.stressed, rank > 0),
                                     (self._liquidating, m.liquidating, rank == _LIQUIDATION)):
            (names.add if inside else names.discard)(aid)
            flags[row] = inside
        latched = self.latches.get(aid)
        if rank == 0:
            self.latches.release(aid)
            m.latch[row] = 0
            return
        if rank <= latched:
            return
        self.latches.set(aid, rank)
        m.latch[row] = rank
        account = self.account(aid)
        result = evaluate_account(account, prices, self.params, self._previous(row, account), with_forced_sells=False)
        if rank == _LIQUIDATION:
            _, sells, uncovered = liquidate_account(account, prices, self.params)
            for sell in sells:
                if sell.side == "sell":
                    self.forced_sell_usd[sell.asset] = self.forced_sell_usd.get(sell.asset, 0.0) + sell.usd
            result = result.model_copy(update={"forced_sells": tuple(sells), "uncovered_shortfall_usd": uncovered})
            out.append(account_alert(ts, result, "unified_liquidation", "critical", account, prices,
                                     self.config_hash))
        else:
            severity = "high" if rank == _REDUCE_ONLY else "warning"
            out.append(account_alert(ts, result, "margin_call", severity, account, prices, self.config_hash))

    def on_book(self, prices: Mapping[str, float]) -> BookAccounts | None:
        """The priced accounts on their book, numbered in account-id order, for a spiral
        (:func:`monitor.stages.spiral.run_spiral_on_book` moves the book; the next evaluation
        moves it back to the prices of the day). None: no account is priced."""
        self._check_prices(prices)
        if self._dirty:
            self._rebuild(prices)
        if self._book is None:
            return None
        ids, account = self._ids, self.account
        return BookAccounts(self._book, lambda i: account(ids[i]))

    # -- results -------------------------------------------------------------------------
    def result_columns(self) -> ResultColumns:
        """The latest evaluation of each evaluated account (for snapshots and metrics)."""
        m = self._mem
        if m is None:
            return ResultColumns([], np.zeros(0, np.int8), *(np.zeros(0) for _ in range(3)))
        rows = np.flatnonzero(m.done)
        names, codes = self._venues
        return ResultColumns(
            venue=[names[c] for c in codes[rows].tolist()], status=m.status[rows],
            adjusted_equity_usd=m.equity[rows], maintenance_margin_usd=m.mm[rows],
            effective_leverage=m.lev[rows],
        )

    def result(self, aid: str) -> AccountResult | None:
        """The latest evaluation of one account (None: not evaluated yet)."""
        row = self._row(aid)
        if row is None or aid not in self.accounts or aid in self._fresh:
            return None
        return self._previous(row, self.account(aid))

    def restore_alert_latches(self, latches: Mapping[str, int]) -> None:
        """Reinstate exported latches of known accounts (see
        :meth:`monitor.accounts.watch.AlertLatches.restore`); the book's mirror follows."""
        self.latches.restore(latches, self.accounts)
        self._dirty = True
