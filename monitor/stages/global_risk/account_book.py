"""Unified accounts of the global stage on columnar books (RISK_MODEL §3), with the outputs
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

Each account is kept as its checked JSON document, not as a model. The accounts live in
two parts (:class:`monitor.stages.global_risk.account_part.BookPart`): the main book, and
a side book of the accounts added or replaced since the main one was built, rebuilt at
the next evaluation after a change (it is small). Once the side holds more than
``side_share`` of the main book (at least ``side_min`` accounts), or a spiral needs one
book of every account, both are merged into a new main book. Accounts whose price keys
are not all priced wait outside. Pure: no I/O, no clock.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import orjson

from monitor.accounts.watch import AlertLatches, ResultColumns, account_alert, account_document
from monitor.config import EngineConfig
from monitor.models.cascade import ACCOUNTS_SHOWN, AccountSet
from monitor.models.margin import STATUS_RANK, Account, AccountResult, evaluate_account, liquidate_account
from monitor.protocol import Alert
from monitor.stages.global_risk.account_part import BookPart, Evaluation, status_lines
from monitor.stages.spiral import BookAccounts

__all__ = ["BookWatch"]

_LIQUIDATION = STATUS_RANK["liquidation"]
_REDUCE_ONLY = STATUS_RANK["reduce_only"]


class _Waiting:
    """Accounts whose prices were not looked at yet, those waiting for some keys, and those
    whose keys are all priced but are in no book yet."""

    def __init__(self) -> None:
        self.unchecked: dict[str, frozenset[str]] = {}
        self.missing: dict[str, set[str]] = {}
        self.by_key: dict[str, set[str]] = {}
        self.ready: set[str] = set()

    def add(self, aid: str, keys: frozenset[str]) -> None:
        self.unchecked[aid] = keys

    def drop(self, aid: str) -> None:
        self.unchecked.pop(aid, None)
        self.ready.discard(aid)
        for key in self.missing.pop(aid, ()):
            self.by_key[key].discard(aid)

    def check(self, prices: Mapping[str, float]) -> None:
        """Accounts whose keys are now all priced become ready."""
        for aid, keys in self.unchecked.items():
            missing = {k for k in keys if k not in prices}
            if missing:
                self.missing[aid] = missing
                for key in missing:
                    self.by_key.setdefault(key, set()).add(aid)
            else:
                self.ready.add(aid)
        self.unchecked.clear()
        for key in [k for k in self.by_key if k in prices]:
            for aid in self.by_key.pop(key):
                waits = self.missing[aid]
                waits.discard(key)
                if not waits:
                    del self.missing[aid]
                    self.ready.add(aid)


class BookWatch:
    """The accounts of stage 2 on columnar books: latest evaluations, status sets, latches."""

    def __init__(self, config: EngineConfig, side_min: int = 4_096, side_share: float = 0.01) -> None:
        self.config = config
        self.config_hash = config.config_hash
        self.params = config.risk
        self.side_min = side_min
        self.side_share = side_share
        #: Each account as its checked JSON document (models are built only when needed).
        self.accounts: dict[str, bytes] = {}
        #: USD of the forced-sell lists of accounts that reached liquidation, per asset.
        self.forced_sell_usd: dict[str, float] = {}
        self._stressed: set[str] = set()
        self._liquidating: set[str] = set()
        self.latches = AlertLatches()
        self._lines = status_lines(config)
        self.main: BookPart | None = None
        self.side: BookPart | None = None
        self._waiting = _Waiting()
        #: Accounts added or replaced since a part was last built (their memory starts afresh).
        self._fresh: set[str] = set()
        #: Whether every part must be built from the documents (after a restore: no books).
        self._whole = False

    def __getstate__(self) -> dict[str, Any]:
        """A checkpoint holds the accounts and their evaluations, not the books (see
        :meth:`BookPart.__getstate__`): they are rebuilt at the next evaluation."""
        return {**self.__dict__, "_whole": self._whole or self.main is not None or self.side is not None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def _parts(self) -> list[BookPart]:
        return [p for p in (self.main, self.side) if p is not None]

    # -- status sets ---------------------------------------------------------------------
    def stressed(self) -> list[str]:
        return sorted(self._stressed)

    def liquidating(self) -> list[str]:
        return sorted(self._liquidating)

    def _account_set(self, names: set[str], stressed: bool) -> AccountSet:
        """How many, and the first ids (each part's rows are in id order: no sort)."""
        if not names:
            return AccountSet(0, [])
        firsts = [p.first(p.mem.stressed if stressed else p.mem.liquidating, ACCOUNTS_SHOWN) for p in self._parts()]
        return AccountSet(len(names), list(itertools.islice(heapq.merge(*firsts), ACCOUNTS_SHOWN)))

    def stressed_set(self) -> AccountSet:
        """The accounts at or below the margin-call line (RISK_MODEL §6 stage 6)."""
        return self._account_set(self._stressed, True)

    def liquidating_set(self) -> AccountSet:
        """The accounts in liquidation (RISK_MODEL §6 stage 7)."""
        return self._account_set(self._liquidating, False)

    # -- accounts ------------------------------------------------------------------------
    def upsert(self, raw: Mapping[str, Any], now_ms: int) -> frozenset[str] | None:
        """Add, replace or delete a unified account; its price keys (None: deleted). Balances
        without a price key get one. The books follow at the next evaluation."""
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
        self._waiting.add(aid, keys)
        self._fresh.add(aid)
        return keys

    def account(self, aid: str) -> Account:
        """One account's model, from its document."""
        return Account.model_validate(orjson.loads(self.accounts[aid]))

    def _forget(self, aid: str) -> None:
        """An account replaced or deleted: its evaluation is gone, its book row dead."""
        self._waiting.drop(aid)
        for part in self._parts():
            part.forget(aid)

    def _rebuild(self, prices: Mapping[str, float], whole: bool) -> None:
        """A side book of the accounts ready since the main one; or (``whole``, or the side
        grown past its share) one main book of every priced account. Memory carried."""
        self._waiting.check(prices)
        main, side, ready = self.main, self.side, self._waiting.ready
        size = len(main) if main is not None else 0
        dead = main.dead if main is not None else 0
        apart = (len(side) if side is not None else 0) + len(ready) + dead
        whole = whole or self._whole or main is None or apart > max(self.side_min, self.side_share * size)
        if self._whole or main is None:  # no books (a restore) or none yet: from the documents
            self._decode_all(prices)
        elif ready or (side is not None and side.dead):  # the side first, then (whole) a merge
            live = [] if side is None else [a for r, a in enumerate(side.ids) if side.mem.live[r]]
            ids = sorted({*live, *ready})
            self.side = BookPart.decoded(ids, self.accounts, prices, self.params) if ids else None
            if self.side is not None and side is not None:
                self.side.carry_from(side, self._fresh)
            self._mirror(self.side)
            ready.clear()
        if whole and self.main is not None and (self.side is not None or self.main.dead):
            self.main = BookPart.merged(self._parts(), prices, self.params)  # None: no account left
            self._mirror(self.main)
            self.side = None
        self._fresh.clear()
        self._whole = False

    def _decode_all(self, prices: Mapping[str, float]) -> None:
        """One main book of every priced account, from the documents."""
        waiting, old = self._waiting, self._parts()
        ids = sorted(a for a in self.accounts if a not in waiting.missing)
        waiting.ready.clear()
        part = BookPart.decoded(ids, self.accounts, prices, self.params) if ids else None
        if part is not None:
            for previous in old:
                part.carry_from(previous, self._fresh)
        self._mirror(part)
        self.main, self.side = part, None

    def _mirror(self, part: BookPart | None) -> None:
        if part is not None:
            part.mirror(self._stressed, self._liquidating, self.latches.rank)

    # -- evaluation ----------------------------------------------------------------------
    def evaluate(
        self, ts: int, changed: set[str], prices: Mapping[str, float], out: list[Alert]
    ) -> tuple[bool, float]:
        """Re-evaluate the accounts on moved keys; alert escalations. (sets changed, leverage jump)"""
        self._rebuild(prices, whole=False)
        done = [(part, ev) for part in self._parts() if (ev := part.evaluate(changed, prices)) is not None]
        for _, _, part, row, rank in heapq.merge(*(_acting(part, ev) for part, ev in done)):
            self._act(ts, part, row, rank, prices, out)
        for part, ev in done:
            part.remember(ev, self._lines)
        sets_changed = any(bool(ev.flips.any()) for _, ev in done)
        return sets_changed, max([0.0, *(ev.jump for _, ev in done)])

    def _act(self, ts: int, part: BookPart, row: int, rank: int, prices: Mapping[str, float],
             out: list[Alert]) -> None:
        """Status sets and latch of one account; an alert on escalation (the reference's steps)."""
        m = part.mem
        aid = part.ids[row]
        for names, flags, inside in ((self._stressed, m.stressed, rank > 0),
                                     (self._liquidating, m.liquidating, rank == _LIQUIDATION)):
            (names.add if inside else names.discard)(aid)
            flags[row] = inside
        if rank == 0:
            self.latches.release(aid)
            m.latch[row] = 0
            return
        if rank <= self.latches.get(aid):
            return
        self.latches.set(aid, rank)
        m.latch[row] = rank
        account = self.account(aid)
        result = evaluate_account(account, prices, self.params, part.previous(row, account), with_forced_sells=False)
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
        """Every priced account on one book, numbered in account-id order, for a spiral
        (:func:`monitor.stages.spiral.run_spiral_on_book` moves the book; the next evaluation
        moves it back to the prices of the day). None: no account is priced."""
        self._rebuild(prices, whole=True)
        main = self.main
        if main is None or main.book is None:
            return None
        ids, account = main.ids, self.account
        return BookAccounts(main.book, lambda i: account(ids[i]))

    # -- results -------------------------------------------------------------------------
    def result_columns(self) -> ResultColumns:
        """The latest evaluation of each evaluated account (for snapshots and metrics)."""
        names: list[str] = []
        parts = []
        for part in self._parts():
            m = part.mem
            rows = np.flatnonzero(m.done)
            own, codes = part.venues
            code_of = [_code(names, v) for v in own]
            venue = np.array(code_of, dtype=np.int64)[codes[rows]] if own else np.zeros(0, np.int64)
            parts.append((venue, m.status[rows], m.equity[rows], m.mm[rows], m.lev[rows]))
        if not parts:
            return ResultColumns([], np.zeros(0, np.int64), np.zeros(0, np.int8), *(np.zeros(0) for _ in range(3)))
        venue, status, equity, mm, lev = (np.concatenate(cols) for cols in zip(*parts, strict=True))
        return ResultColumns(venue_names=names, venue_code=venue, status=status.astype(np.int8),
                             adjusted_equity_usd=equity, maintenance_margin_usd=mm, effective_leverage=lev)

    def result(self, aid: str) -> AccountResult | None:
        """The latest evaluation of one account (None: not evaluated yet)."""
        if aid in self._fresh:
            return None
        for part in self._parts():
            row = part.row(aid)
            if row is not None:
                return part.previous(row, self.account(aid))
        return None

    def restore_alert_latches(self, latches: Mapping[str, int]) -> None:
        """Reinstate exported latches of known accounts (see
        :meth:`monitor.accounts.watch.AlertLatches.restore`), on the books' rows too."""
        self.latches.restore(latches, self.accounts)
        for part in self._parts():
            part.mirror((), (), {a: k for a, k in latches.items() if self.latches.get(a) == k})


def _code(names: list[str], venue: str) -> int:
    if venue not in names:
        names.append(venue)
    return names.index(venue)


def _acting(part: BookPart, ev: Evaluation) -> Iterator[tuple[str, int, BookPart, int, int]]:
    """The accounts of an evaluation that act, in id order, for merging across parts."""
    for i in ev.acting.tolist():
        row = int(ev.rows[i])
        yield part.ids[row], id(part), part, row, int(ev.rank[i])
