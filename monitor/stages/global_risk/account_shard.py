"""One account shard of a sharded global stage: its own unified accounts, every price.

A shard reads the whole ordered log the global stage reads (stage-1 signal records,
positions, accounts) but keeps only the accounts :func:`monitor.stages.global_risk.shards.shard_of`
gives it. It applies the price signals, evaluates its accounts on the accounts' clock every
reader shares, emits their alerts (the same alerts, with the same ids, as one global stage)
and reports each evaluation for the aggregation stage. Positions are read for the derived
price keys they register, as the global stage registers them. Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

from pydantic import ValidationError

from monitor.config import EngineConfig
from monitor.models.loops.lending import checked_position
from monitor.protocol import Alert, PriceSignal, SignalPayload
from monitor.stages.global_risk.account_book import BookWatch
from monitor.stages.global_risk.ordered import AccountCadence, OrderedStage
from monitor.stages.global_risk.price_book import PriceBook
from monitor.stages.global_risk.shards import AccountReport, ShardFigures, ShardStep, shard_of, venue_figures

__all__ = ["AccountShard"]


class AccountShard(OrderedStage):
    """Shard ``shard`` of ``shards``: its accounts on a columnar book, every price."""

    def __init__(self, config: EngineConfig, partitions: int, shard: int, shards: int) -> None:
        super().__init__(partitions)
        if not 0 <= shard < shards:
            raise ValueError(f"shard {shard} is not one of {shards}")
        self.shard, self.shards = shard, shards
        self.config_hash = config.config_hash
        self._aave = config.risk.aave_v3
        self.price_book = PriceBook(config.ingest.quote_prices_usd)
        self.watch = BookWatch(config)
        self.cadence = AccountCadence(config.signals.account_eval_interval_ms)
        self._reports: list[AccountReport] = []
        #: An account of this shard was loaded or deleted since the last report / step.
        self._sets_touched = False
        self._figures_due = False

    @property
    def prices(self) -> dict[str, float]:
        return self.price_book.prices

    def owns(self, account_id: str) -> bool:
        return shard_of(account_id, self.shards) == self.shard

    # -- inputs --------------------------------------------------------------------------
    def upsert_position(self, raw: Mapping[str, Any]) -> None:
        """A position's derived price keys, registered as the global stage registers them
        (a record the global stage refuses registers nothing here either)."""
        if raw.get("delete"):
            return
        try:
            keys = checked_position(raw, self._aave).price_keys()
        except ValidationError:
            return  # the global stage dead-letters it
        self.price_book.register_derived(keys)

    def upsert_account(self, raw: Mapping[str, Any]) -> bool:
        """Add, replace or delete an account of this shard (the clock hears of every shard's).
        Whether the account is this shard's."""
        aid = str(raw["account_id"])
        self.heard_of_account(deleted=bool(raw.get("delete")))  # before it is checked, as on every reader
        if not self.owns(aid):
            return False
        self._sets_touched = self._figures_due = True
        keys = self.watch.upsert(raw, self.now_ms)
        if keys is not None:
            self.price_book.add_keys(keys)
        return True

    def heard_of_account(self, deleted: bool) -> None:
        """An account record read, this shard's or another's: the accounts' clock hears of
        every one but a deletion (:meth:`AccountCadence.loaded`)."""
        if not deleted:
            self.cadence.loaded()
            self.wake(self.cadence)

    # -- signals -------------------------------------------------------------------------
    def _apply(self, ts: int, asset: str, kind: str, p: SignalPayload, changed: set[str],
               out: list[Alert]) -> None:
        """Prices only (the aggregation stage takes the other signals)."""
        if kind == "price":
            self.price_book.apply(cast(PriceSignal, p), changed)

    def _evaluate(self, ts: int, changed: set[str], out: list[Alert]) -> None:
        self.price_book.take_changed(changed)
        self.cadence.moved(changed)
        if self.cadence.due(ts):
            self._evaluate_accounts(ts, out)

    def _finish_run(self, out: list[Alert]) -> None:
        if self.cadence.pending:
            self._evaluate_accounts(self.now_ms, out)

    def _evaluate_accounts(self, ts: int, out: list[Alert]) -> None:
        watch = self.watch
        sets_changed, jump = watch.evaluate(ts, self.cadence.take(ts), self.prices, out)
        touched = sets_changed or self._sets_touched
        self._sets_touched = False
        self._reports.append(AccountReport(
            self.shard, ts, sets_changed, jump,
            watch.stressed_set() if touched else None, watch.liquidating_set() if touched else None,
            self.figures(),
        ))

    # -- outputs -------------------------------------------------------------------------
    def take_step(self, offset: int, alerts: int) -> ShardStep | None:
        """What this shard made of log record ``offset`` (it sent ``alerts`` alerts for it):
        its evaluations, and its figures after one of its accounts was loaded or deleted;
        None when there is nothing to say."""
        reports, self._reports = self._reports, []
        figures = self.figures() if self._figures_due else None
        self._figures_due = False
        if not reports and figures is None and not alerts:
            return None
        return ShardStep(offset, tuple(reports), figures, alerts)

    def figures(self) -> ShardFigures:
        """Accounts held, forced sells of the alerts by asset, the venues' figures."""
        forced = tuple(sorted(self.watch.forced_sell_usd.items()))
        return ShardFigures(len(self.watch.accounts), forced, venue_figures(self.watch.result_columns()))
