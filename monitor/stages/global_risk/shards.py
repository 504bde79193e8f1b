"""Account shards: which shard holds an account, what a shard reports, and the merge.

The unified accounts of a sharded global stage are split by id over a fixed number of
shards (:func:`shard_of`). Each shard (:class:`monitor.stages.global_risk.account_shard.AccountShard`)
reads the whole ordered log, evaluates its own accounts at the event times every reader
agrees on (:class:`monitor.stages.global_risk.ordered.AccountCadence`), emits their alerts
and reports each evaluation (:class:`AccountReport`). The aggregation stage merges the
reports of one evaluation (:class:`ShardedAccounts`) into what one global stage would have
seen: sizes add up, first ids merge in id order, the leverage jump is the largest. Exact,
whatever the shard count; only the snapshots' forced-sell sums are added shard by shard.
"""

from __future__ import annotations

import heapq
import itertools
import zlib
from collections import deque
from dataclasses import dataclass

from monitor.models.cascade import ACCOUNTS_SHOWN, AccountSet
from monitor.models.margin import STATUSES

__all__ = ["AccountReport", "MergedReport", "ShardFigures", "ShardedAccounts", "shard_of"]


def shard_of(account_id: str, shards: int) -> int:
    """The shard of an account: CRC-32 of its id's UTF-8 bytes modulo the shard count
    (the same in every process and on every run, unlike ``hash``)."""
    return zlib.crc32(account_id.encode()) % shards


@dataclass(frozen=True, slots=True)
class ShardFigures:
    """A shard's figures for the snapshots: accounts held, evaluated accounts per status
    code (``STATUSES`` order) and the forced sells of its liquidation alerts, USD by asset."""

    accounts: int
    by_status: tuple[int, ...]
    forced_sell_usd: tuple[tuple[str, float], ...]


@dataclass(frozen=True, slots=True)
class AccountReport:
    """One shard's evaluation of its accounts at ``ts_ms``: whether its status sets changed,
    its largest effective-leverage jump, its sets (None: unchanged since its last report)
    and its figures after the evaluation."""

    shard: int
    ts_ms: int
    sets_changed: bool
    jump: float
    stressed: AccountSet | None
    liquidating: AccountSet | None
    figures: ShardFigures


@dataclass(frozen=True, slots=True)
class MergedReport:
    """One evaluation of every shard's accounts, as one global stage would have made it."""

    ts_ms: int
    sets_changed: bool
    jump: float
    stressed: AccountSet
    liquidating: AccountSet


def merge_sets(sets: list[AccountSet]) -> AccountSet:
    """The union of disjoint account sets: sizes added, first ids merged in id order."""
    first = itertools.islice(heapq.merge(*(s.first for s in sets)), ACCOUNTS_SHOWN)
    return AccountSet(sum(s.size for s in sets), list(first))


class ShardedAccounts:
    """The aggregation side of the shards: their reports queued per evaluation, merged when
    the aggregation stage reaches that evaluation; the latest sets and figures per shard."""

    def __init__(self, shards: int) -> None:
        self.shards = shards
        self._queue: deque[list[AccountReport]] = deque()
        empty = AccountSet(0, [])
        self._stressed = [empty] * shards
        self._liquidating = [empty] * shards
        self._figures = [ShardFigures(0, (0,) * len(STATUSES), ())] * shards

    def put(self, reports: list[AccountReport]) -> None:
        """Every shard's report of one evaluation, one per shard."""
        if sorted(r.shard for r in reports) != list(range(self.shards)) or len({r.ts_ms for r in reports}) != 1:
            raise ValueError(f"an evaluation needs one report per shard at one time, got {reports!r}")
        self._queue.append(sorted(reports, key=lambda r: r.shard))

    def set_figures(self, shard: int, figures: ShardFigures) -> None:
        """A shard's figures after an account was loaded or deleted."""
        self._figures[shard] = figures

    def take(self, ts_ms: int) -> MergedReport:
        """The next evaluation's reports, merged; it must be the evaluation at ``ts_ms``."""
        if not self._queue or self._queue[0][0].ts_ms != ts_ms:
            have = self._queue[0][0].ts_ms if self._queue else None
            raise ValueError(f"the shards have not reported the evaluation at {ts_ms} (next: {have})")
        reports = self._queue.popleft()
        for r in reports:
            if r.stressed is not None:
                self._stressed[r.shard] = r.stressed
            if r.liquidating is not None:
                self._liquidating[r.shard] = r.liquidating
            self._figures[r.shard] = r.figures
        return MergedReport(ts_ms, any(r.sets_changed for r in reports), max(r.jump for r in reports),
                            merge_sets(self._stressed), merge_sets(self._liquidating))

    @property
    def waiting(self) -> int:
        """Evaluations reported but not yet taken."""
        return len(self._queue)

    @property
    def accounts(self) -> int:
        """Accounts held over all shards."""
        return sum(f.accounts for f in self._figures)

    def status_counts(self) -> list[int]:
        """Evaluated accounts per status code, over all shards."""
        return [sum(column) for column in zip(*(f.by_status for f in self._figures), strict=True)]

    def forced_sell_usd(self) -> dict[str, float]:
        """Forced sells of the liquidation alerts, USD by asset: each shard's, added in shard order."""
        total: dict[str, float] = {}
        for f in self._figures:
            for asset, usd in f.forced_sell_usd:
                total[asset] = total.get(asset, 0.0) + usd
        return total
